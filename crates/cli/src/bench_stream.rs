//! `phivault bench stream`: throughput and memory of the segmented streaming AEAD.
//!
//! Measured on one core: everything runs on one thread, in a current-thread tokio
//! runtime, and the temporary file is read and written with blocking calls on that same
//! thread (not on tokio's blocking pool, which would add a second thread). Each round
//! times, over `--size` bytes of plaintext generated chunk by chunk (never held whole):
//!
//! - raw AES-256-GCM (the `aes-gcm` crate the stream uses) sealing and opening 64 KiB
//!   buffers, with no framing, associated data, allocation or I/O: the ceiling;
//! - a [`StreamWriter`] into a sink that discards (`tokio::io::sink`);
//! - a [`StreamWriter`] into a temporary file (not synced: the page cache absorbs it);
//! - a [`StreamReader`] over that file (read back from the page cache).
//!
//! The median round is reported as MB/s (10^6 bytes of plaintext per second), its ratio
//! to the raw AEAD in the same direction, and the process's peak resident set during
//! each operation: the kernel's high-water mark (VmHWM), reset before each operation
//! where Linux allows it (the largest over the rounds is shown). A few MiB for a 1 GiB
//! object shows memory is one segment, not the object.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use phivault_crypto::benchmarks::{Direction, raw_aead_throughput};
use phivault_crypto::stream::{self, StreamReader, StreamWriter};
use phivault_crypto::{Binding, KeyRef, SecretKey};
use phivault_store::TenantId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use uuid::Uuid;

/// Bytes of plaintext the generator hands the writer at a time.
const CHUNK: usize = 64 * 1024;
/// The stream format's segment size limits.
const MIN_SEGMENT: u64 = 16;
const MAX_SEGMENT: u64 = 16 * 1024 * 1024;
/// Tag bytes per segment.
const TAG: u64 = 16;

/// Options of `phivault bench stream`: streaming AEAD throughput and peak memory against
/// raw AES-256-GCM, on one core.
#[derive(clap::Args, Debug, Clone)]
pub struct StreamArgs {
    /// Plaintext bytes per stream: a number with an optional suffix, KiB/MiB/GiB (or
    /// K/M/G) for powers of 1024, KB/MB/GB for powers of 1000.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "BYTES")]
    pub size: u64,
    /// Plaintext bytes per segment (16 B to 16 MiB; same suffixes as --size).
    #[arg(long, default_value = "64KiB", value_parser = parse_segment, value_name = "BYTES")]
    pub segment: u32,
    /// Rounds of every operation (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Parses a byte count such as `1GiB`, `256MiB`, `64k` or `1000000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count such as 1GiB, 256MiB or 65536"))?;
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size suffix `{other}` (use KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_segment(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&n) {
        return Err(format!(
            "a segment is {MIN_SEGMENT} B to {} MiB",
            MAX_SEGMENT >> 20
        ));
    }
    u32::try_from(n).map_err(|_| "segment too large".to_string())
}

/// Runs the benchmark on a thread of its own, in a current-thread runtime, so every
/// figure is one core's whatever runtime the caller is on.
pub async fn run(args: StreamArgs) -> Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.size >= 1, "--size must be at least 1 byte");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-stream".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .build()
                .context("cannot build a current-thread runtime")
                .and_then(|rt| rt.block_on(measure(args)));
            let _ = tx.send(result);
        })
        .context("cannot start the benchmark thread")?;
    rx.await.context("the benchmark thread panicked")?
}

/// The operations, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    RawSeal,
    RawOpen,
    EncryptSink,
    EncryptFile,
    DecryptFile,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::RawSeal,
        Op::RawOpen,
        Op::EncryptSink,
        Op::EncryptFile,
        Op::DecryptFile,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::RawSeal => "raw AES-256-GCM seal",
            Op::RawOpen => "raw AES-256-GCM open",
            Op::EncryptSink => "stream encrypt to sink",
            Op::EncryptFile => "stream encrypt to file",
            Op::DecryptFile => "stream decrypt from file",
        }
    }

    /// The raw operation a framed one is compared with.
    fn baseline(self) -> Op {
        match self {
            Op::RawSeal | Op::EncryptSink | Op::EncryptFile => Op::RawSeal,
            Op::RawOpen | Op::DecryptFile => Op::RawOpen,
        }
    }
}

struct Fixture {
    key: SecretKey,
    key_ref: KeyRef,
    tenant: TenantId,
    object: Uuid,
    size: u64,
    segment: u32,
    file: TempFile,
}

impl Fixture {
    fn binding(&self) -> Binding<'_> {
        Binding {
            tenant: self.tenant,
            kind: "recording",
            object: self.object,
            field: "",
        }
    }

    /// The ciphertext length of a stream of `size` bytes.
    fn sealed_len(&self) -> u64 {
        let segments = self.size.div_ceil(u64::from(self.segment)).max(1);
        stream::HEADER_LEN as u64 + self.size + segments * TAG
    }
}

async fn measure(args: StreamArgs) -> Result<()> {
    let rss_start = Memory::read();
    let f = Fixture {
        key: SecretKey::generate()?,
        key_ref: KeyRef {
            id: Uuid::now_v7(),
            version: 1,
        },
        tenant: TenantId::generate(),
        object: Uuid::now_v7(),
        size: args.size,
        segment: args.segment,
        file: TempFile::new()?,
    };
    println!(
        "phivault bench stream: {} of plaintext ({} bytes) in {}-byte segments, {} round{}, median reported",
        human(f.size),
        f.size,
        f.segment,
        args.rounds,
        if args.rounds == 1 { "" } else { "s" }
    );
    println!(
        "one core: one thread, current-thread tokio runtime, file I/O inline (blocking) on that thread"
    );
    println!("peak RSS: the whole process's resident set during each operation (VmHWM)");
    println!(
        "temporary file: {} ({} bytes sealed; not synced, read back from the page cache)",
        f.file.path.display(),
        f.sealed_len()
    );
    let resettable = Memory::reset_peak();

    // Warm-up: CPU frequency, page faults of the buffers.
    let warm = f.size.min(64 << 20);
    raw_aead_throughput(&f.key, Direction::Seal, warm, CHUNK, |_| {})?;

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Op::ALL.len()];
    let mut peaks = vec![0u64; Op::ALL.len()];
    for round in 1..=args.rounds {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            Memory::reset_peak();
            let pb = bar(&format!("round {round}: {}", op.label()), f.size);
            let elapsed = match op {
                Op::RawSeal => {
                    raw_aead_throughput(&f.key, Direction::Seal, f.size, CHUNK, |n| pb.inc(n))?
                }
                Op::RawOpen => {
                    raw_aead_throughput(&f.key, Direction::Open, f.size, CHUNK, |n| pb.inc(n))?
                }
                Op::EncryptSink => encrypt(&f, tokio::io::sink(), &pb).await?.0,
                Op::EncryptFile => {
                    let file = InlineIo(File::create(&f.file.path)?);
                    let (elapsed, file) = encrypt(&f, file, &pb).await?;
                    drop(file);
                    let written = std::fs::metadata(&f.file.path)?.len();
                    ensure!(
                        written == f.sealed_len(),
                        "wrote {written} bytes, expected {}",
                        f.sealed_len()
                    );
                    elapsed
                }
                Op::DecryptFile => decrypt(&f, &pb).await?,
            };
            pb.finish_and_clear();
            times[i].push(elapsed);
            peaks[i] = peaks[i].max(Memory::read().peak_kib);
        }
    }
    let rss_end = Memory::read();

    let rate = |d: Duration| f.size as f64 / d.as_secs_f64() / 1e6;
    let medians: Vec<f64> = times.into_iter().map(|t| rate(median(t))).collect();
    println!(
        "{:<26} {:>10} {:>8} {:>14}",
        "operation", "MB/s", "vs raw", "peak RSS MiB"
    );
    for (i, op) in Op::ALL.into_iter().enumerate() {
        let base = Op::ALL
            .iter()
            .position(|o| *o == op.baseline())
            .unwrap_or(i);
        println!(
            "{:<26} {:>10.1} {:>8.3} {:>14.1}",
            op.label(),
            medians[i],
            medians[i] / medians[base],
            peaks[i] as f64 / 1024.0
        );
    }
    if !resettable {
        println!(
            "note: the peak could not be reset per operation here; each figure is the process's peak so far"
        );
    }
    println!(
        "process memory: peak RSS {:.1} MiB at start, {:.1} MiB at end; RSS {:.1} MiB at start, {:.1} MiB at end",
        rss_start.peak_kib as f64 / 1024.0,
        rss_end.peak_kib as f64 / 1024.0,
        rss_start.rss_kib as f64 / 1024.0,
        rss_end.rss_kib as f64 / 1024.0
    );
    Ok(())
}

/// Streams `f.size` generated bytes through a [`StreamWriter`] into `sink`.
async fn encrypt<W: AsyncWrite + Unpin>(
    f: &Fixture,
    sink: W,
    pb: &ProgressBar,
) -> Result<(Duration, W)> {
    let mut plain = Plaintext::new();
    let binding = f.binding();
    let start = Instant::now();
    let mut w = StreamWriter::new(sink, &f.key, f.key_ref, &binding, f.segment).await?;
    let mut left = f.size;
    while left > 0 {
        let chunk = plain.next(left);
        w.write(chunk).await?;
        left -= chunk.len() as u64;
        pb.inc(chunk.len() as u64);
    }
    let (sink, len) = w.finish().await?;
    let elapsed = start.elapsed();
    ensure!(
        len == f.size,
        "the writer counted {len} bytes, not {}",
        f.size
    );
    Ok((elapsed, sink))
}

/// Reads the temporary file back through a [`StreamReader`].
async fn decrypt(f: &Fixture, pb: &ProgressBar) -> Result<Duration> {
    let binding = f.binding();
    let start = Instant::now();
    let file = InlineIo(File::open(&f.file.path)?);
    let mut r = StreamReader::new(file, &f.key, f.key_ref, &binding).await?;
    let mut total = 0u64;
    while let Some(chunk) = r.next_chunk().await? {
        total += chunk.len() as u64;
        pb.inc(chunk.len() as u64);
        std::hint::black_box(&chunk);
    }
    let elapsed = start.elapsed();
    if total != f.size {
        bail!("decrypted {total} bytes, expected {}", f.size);
    }
    Ok(elapsed)
}

/// Plaintext made chunk by chunk: one pseudo-random buffer, stamped with the chunk's
/// index so no two chunks are alike. Never more than one chunk in memory.
struct Plaintext {
    buf: Vec<u8>,
    index: u64,
}

impl Plaintext {
    fn new() -> Self {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let buf = (0..CHUNK)
            .map(|_| {
                // xorshift64: filler bytes, not randomness anything relies on.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Plaintext { buf, index: 0 }
    }

    fn next(&mut self, left: u64) -> &[u8] {
        self.index += 1;
        self.buf[..8].copy_from_slice(&self.index.to_le_bytes());
        let n = left.min(CHUNK as u64) as usize;
        &self.buf[..n]
    }
}

/// A file read and written with blocking calls on the runtime's own thread, so the
/// figures are one thread's (`tokio::fs` would hand every call to its blocking pool).
struct InlineIo(File);

impl AsyncRead for InlineIo {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.get_mut().0.read(buf.initialize_unfilled())?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for InlineIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A temporary file path, removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "phivault-bench-stream-{}.pvs",
            Uuid::new_v4().simple()
        ));
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempFile { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Resident memory of this process, from `/proc/self/status` (zero where there is none).
struct Memory {
    /// Peak resident set (VmHWM), KiB.
    peak_kib: u64,
    /// Current resident set (VmRSS), KiB.
    rss_kib: u64,
}

impl Memory {
    fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory {
            peak_kib: field("VmHWM:"),
            rss_kib: field("VmRSS:"),
        }
    }

    /// Resets the peak to the current resident set (Linux 4.0+); false if refused.
    fn reset_peak() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn bar(label: &str, total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "  {prefix:<40} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_segment("64KiB"), Ok(65536));
        assert!(parse_segment("8").is_err());
        assert!(parse_segment("32MiB").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_small_run_completes() {
        run(StreamArgs {
            size: 1 << 20,
            segment: 4096,
            rounds: 1,
        })
        .await
        .unwrap();
    }
}
