//! `phivault bench upload`: recording upload throughput and the server's peak memory.
//!
//! Per run: a fresh data directory (on the filesystem of `--dir`), then
//!
//! 1. **baseline**: the upload's exact bytes written to a file in that data directory
//!    with `write(2)` in 256 KiB chunks and one `fsync` at the end (time to the last
//!    write and time to the end of the `fsync` are both kept);
//! 2. **upload**: this binary started as `phivault serve` on that data directory
//!    (embedded SQLite, or a scratch PostgreSQL database), a tenant, owner, token,
//!    practice, patient, encounter and verbal consent created, and the same bytes sent as
//!    one chunked `POST …/recordings` over loopback until the `201`.
//!
//! The file is a valid WAV (48 kHz, stereo, 16-bit PCM; a header whose lengths match, then
//! a 480 Hz tone under noise from xorshift64*), generated on the fly in 256 KiB chunks and
//! never held whole: once to compute its SHA-256 (the `X-Content-SHA256` header), then again
//! for the baseline and for the upload. Generation costs both sides the same.
//!
//! The server's memory is read from `/proc/<pid>/status`: `VmRSS` (and `VmHWM`) just
//! before the upload, `VmHWM` (the peak resident set since the process started) after it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::bench::BenchBackend;
use crate::bench_auth::{cli_on, start_server_on};

/// `phivault bench upload`.
#[derive(Args, Debug)]
pub struct UploadArgs {
    /// Size of the uploaded WAV file, in MiB (at most the default upload limit, 2048).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Database of the server (the upload itself writes one row).
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    backend: BenchBackend,
    /// Runs (fresh data directory and server each); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Parent of the data directories: the disk measured (default: the system temporary
    /// directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Superuser URL of a PostgreSQL server; a scratch database is created and dropped.
    #[arg(
        long,
        env = "PHIVAULT_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
}

const MIB: u64 = 1024 * 1024;
/// The server's default `PHIVAULT_UPLOAD_LIMIT_BYTES`; the bench server inherits no
/// `PHIVAULT_*` setting, so this is its limit.
const DEFAULT_UPLOAD_LIMIT_MIB: u64 = 2048;
/// Chunk handed to the writer or to the HTTP body: a multiple of the 4-byte frame.
const CHUNK: usize = 256 * 1024;
const RATE: u32 = 48_000;
const CHANNELS: u16 = 2;
const HEADER_LEN: usize = 44;
/// 48 kHz / 480 Hz: one period of the tone is exactly 100 frames.
const TONE_PERIOD: usize = 100;

/// A synthetic WAV file of an exact size, produced chunk by chunk.
struct WavSource {
    total: u64,
    pos: u64,
    rng: u64,
    phase: usize,
    tone: [i16; TONE_PERIOD],
}

impl WavSource {
    /// `total` must be a multiple of 4 and larger than the header.
    fn new(total: u64) -> Self {
        let mut tone = [0i16; TONE_PERIOD];
        for (i, t) in tone.iter_mut().enumerate() {
            let x = (i as f64) * std::f64::consts::TAU / TONE_PERIOD as f64;
            *t = (x.sin() * 8000.0) as i16;
        }
        Self {
            total,
            pos: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            phase: 0,
            tone,
        }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let data_len = (self.total - HEADER_LEN as u64) as u32;
        let block_align = CHANNELS * 2;
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&(data_len + 36).to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
        h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
        h[24..28].copy_from_slice(&RATE.to_le_bytes());
        h[28..32].copy_from_slice(&(RATE * u32::from(block_align)).to_le_bytes());
        h[32..34].copy_from_slice(&block_align.to_le_bytes());
        h[34..36].copy_from_slice(&16u16.to_le_bytes());
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&data_len.to_le_bytes());
        h
    }

    /// The next chunk, `None` at the end.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let left = self.total - self.pos;
        if left == 0 {
            return None;
        }
        let len = left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; len];
        let mut frames = &mut buf[..];
        if self.pos == 0 {
            buf[..HEADER_LEN].copy_from_slice(&self.header());
            frames = &mut buf[HEADER_LEN..];
        }
        for frame in frames.chunks_exact_mut(4) {
            // xorshift64*: cheap, deterministic, noise-like; not for anything secret.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let tone = self.tone[self.phase];
            self.phase = (self.phase + 1) % TONE_PERIOD;
            let left = tone.wrapping_add(((r >> 48) as i16) >> 5);
            let right = tone.wrapping_add(((r >> 32) as i16) >> 5);
            frame[..2].copy_from_slice(&left.to_le_bytes());
            frame[2..].copy_from_slice(&right.to_le_bytes());
        }
        self.pos += len as u64;
        Some(Bytes::from(buf))
    }
}

/// Memory figures of a process, in KiB, from `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User plus system CPU time of a process (all threads), in seconds.
fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based
    // from the state field); Linux reports them in USER_HZ = 100 ticks per second.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The pid of the `phivault serve` child working on `data`: the server guard does not
/// expose its child, so it is found among this process's children by its command line.
fn server_pid(data: &Path) -> Result<u32> {
    let me = std::process::id();
    let needle = data.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&b"serve".as_slice()) && args.contains(&needle) {
            return Ok(pid);
        }
    }
    bail!("cannot find the server process")
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn progress(label: &str, total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "  {prefix:<22} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// SHA-256 of the generated file, and how fast generating and hashing ran.
fn hash_pass(total: u64) -> (String, Duration) {
    let started = Instant::now();
    let mut source = WavSource::new(total);
    let mut hasher = Sha256::new();
    while let Some(chunk) = source.next_chunk() {
        hasher.update(&chunk);
    }
    (hex::encode(hasher.finalize()), started.elapsed())
}

/// Writes the file to `path`; returns the time to the last write and to the end of the
/// fsync.
fn baseline(path: &Path, total: u64, pb: &ProgressBar) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut file = std::fs::File::create(path).context("create the baseline file")?;
    let mut source = WavSource::new(total);
    while let Some(chunk) = source.next_chunk() {
        file.write_all(&chunk)?;
        pb.inc(chunk.len() as u64);
    }
    let written = started.elapsed();
    file.sync_all()?;
    let synced = started.elapsed();
    drop(file);
    std::fs::remove_file(path)?;
    Ok((written, synced))
}

/// The largest regular file under `dir`.
fn largest_file(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if best.as_ref().is_none_or(|(b, _)| len > *b) {
                    best = Some((len, entry.path()));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

/// One run's figures.
struct Run {
    object_fsync: Duration,
    write_no_fsync: Duration,
    write_fsync: Duration,
    upload: Duration,
    rss_before_kib: u64,
    hwm_before_kib: u64,
    hwm_after_kib: u64,
    server_cpu_s: f64,
    client_cpu_s: f64,
}

async fn one_run(
    parent: &Path,
    total: u64,
    sha256: &str,
    database_url: Option<&str>,
    run: usize,
) -> Result<Run> {
    let data = parent.join(format!("phivault-bench-upload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data)?;
    // The guard that removes `data` exists only once the server runs; until then, clean
    // up by hand on failure.
    let setup = (|| -> Result<(String, String, String, (Duration, Duration))> {
        let pb = progress(&format!("run {run}: disk write"), total);
        let written = baseline(&data.join("baseline.wav"), total, &pb)?;
        pb.finish_and_clear();
        let cli = |a: &[&str]| cli_on(&data, database_url, a).map(|(out, _)| out);
        let tenant = cli(&[
            "tenant",
            "create",
            "--slug",
            "bench-upload",
            "--name",
            "Benchmark tenant (synthetic)",
            "--sandbox",
        ])?;
        let owner = cli(&[
            "user",
            "create",
            "--tenant",
            &tenant,
            "--email",
            "owner@bench-upload.example.test",
            "--name",
            "Synthetic Owner",
            "--role",
            "owner",
            "--all-practices",
        ])?;
        let token = cli(&["token", "create", "--tenant", &tenant, "--user", &owner])?;
        let practice = cli(&[
            "practice",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "Synthetic Clinic",
        ])?;
        Ok((tenant, token, practice, written))
    })();
    let (tenant, token, practice, (write_no_fsync, write_fsync)) = match setup {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&data);
            return Err(e);
        }
    };
    let (server, base) = match start_server_on(&data, database_url) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&data);
            return Err(e);
        }
    };
    let pid = server_pid(&data)?;
    let client = reqwest::Client::new();
    let api = format!("{base}/api/v1/tenants/{tenant}");
    let patient: serde_json::Value = client
        .post(format!("{api}/patients"))
        .bearer_auth(&token)
        .json(&json!({
            "practice_id": practice,
            "mrn": "SYN-UPLOAD-1",
            "given_name": "Synthetic",
            "family_name": "Patient",
            "date_of_birth": "1970-01-01",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let encounter: serde_json::Value = client
        .post(format!("{api}/encounters"))
        .bearer_auth(&token)
        .json(&json!({
            "patient_id": patient["id"].as_str().context("no patient id")?,
            "reason": "synthetic visit",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let encounter = encounter["id"].as_str().context("no encounter id")?;
    client
        .post(format!("{api}/encounters/{encounter}/consents"))
        .bearer_auth(&token)
        .json(&json!({"method": "verbal", "jurisdiction": "US-NY"}))
        .send()
        .await?
        .error_for_status()?;

    let rss_before_kib = proc_status_kib(pid, "VmRSS")?;
    let hwm_before_kib = proc_status_kib(pid, "VmHWM")?;
    let server_cpu_before = proc_cpu_secs(pid)?;
    let client_cpu_before = proc_cpu_secs(std::process::id())?;
    let pb = progress(&format!("run {run}: upload"), total);
    let sent = Arc::new(AtomicU64::new(0));
    let body = {
        let pb = pb.clone();
        let sent = sent.clone();
        futures::stream::unfold(WavSource::new(total), move |mut source| {
            let chunk = source.next_chunk();
            if let Some(c) = &chunk {
                pb.inc(c.len() as u64);
                sent.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            async move { chunk.map(|c| (Ok::<_, std::io::Error>(c), source)) }
        })
    };
    let started = Instant::now();
    let response = client
        .post(format!("{api}/encounters/{encounter}/recordings"))
        .bearer_auth(&token)
        .header("content-type", "audio/wav")
        .header("x-content-sha256", sha256)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .context("upload")?;
    let status = response.status();
    let answer = response.bytes().await?;
    let upload = started.elapsed();
    pb.finish_and_clear();
    let hwm_after_kib = proc_status_kib(pid, "VmHWM")?;
    let server_cpu_s = proc_cpu_secs(pid)? - server_cpu_before;
    let client_cpu_s = proc_cpu_secs(std::process::id())? - client_cpu_before;
    if status != reqwest::StatusCode::CREATED {
        bail!(
            "the upload was answered {status} after {} bytes: {}",
            sent.load(Ordering::Relaxed),
            String::from_utf8_lossy(&answer)
        );
    }
    let rec: serde_json::Value = serde_json::from_slice(&answer)?;
    if rec["size_bytes"].as_u64() != Some(total) || rec["sha256"].as_str() != Some(sha256) {
        bail!("the server stored a different size or checksum: {rec}");
    }
    let expected_ms =
        (total - HEADER_LEN as u64) / (u64::from(CHANNELS) * 2) * 1000 / u64::from(RATE);
    if rec["duration_ms"].as_u64() != Some(expected_ms) {
        bail!("the prober found another duration: {rec}");
    }
    // The local object store does not fsync (object_store's `LocalFileSystem` without
    // `with_fsync`), so at the 201 the audio may be only in the page cache; the time to
    // fsync the stored object shows what a durable answer would have cost.
    let object = largest_file(&data.join("objects")).context("no stored object found")?;
    let synced = Instant::now();
    std::fs::File::open(&object)?.sync_all()?;
    let object_fsync = synced.elapsed();
    // Dropping the guard stops the server and removes the data directory.
    drop(server);
    Ok(Run {
        object_fsync,
        write_no_fsync,
        write_fsync,
        upload,
        rss_before_kib,
        hwm_before_kib,
        hwm_after_kib,
        server_cpu_s,
        client_cpu_s,
    })
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Runs the benchmark.
pub async fn run(args: UploadArgs) -> Result<()> {
    if args.size_mib == 0 || args.runs == 0 {
        bail!("--size-mib and --runs must be at least 1");
    }
    if args.size_mib > DEFAULT_UPLOAD_LIMIT_MIB {
        bail!(
            "--size-mib is above the server's default upload limit ({DEFAULT_UPLOAD_LIMIT_MIB} MiB)"
        );
    }
    let total = args.size_mib * MIB;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let backend = match args.backend {
        BenchBackend::Sqlite => "SQLite",
        BenchBackend::Postgres => "PostgreSQL",
    };
    println!(
        "phivault bench upload: {} MiB WAV (48 kHz stereo 16-bit PCM, synthetic), {backend}, \
         loopback HTTP (chunked), data under {}, {} run(s), median reported",
        args.size_mib,
        parent.display(),
        args.runs
    );
    let (sha256, hashed) = hash_pass(total);
    println!(
        "  generating + SHA-256 alone (client side, one core): {:.0} MiB/s",
        mib_per_s(total, hashed)
    );

    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let scratch = match args.backend {
            BenchBackend::Sqlite => None,
            BenchBackend::Postgres => Some(
                phivault_store::scratch::ScratchPg::create(&args.pg_admin_url, "bench_upload")
                    .await
                    .context("cannot create a scratch PostgreSQL database")?,
            ),
        };
        let url = scratch.as_ref().map(|s| s.app_url.clone());
        let result = one_run(&parent, total, &sha256, url.as_deref(), run).await;
        if let Some(s) = scratch {
            s.drop_database(&args.pg_admin_url).await?;
        }
        let r = result?;
        println!(
            "  run {run}: disk write {:.0} MiB/s (fsync'd; {:.0} MiB/s before the fsync), \
             upload {:.0} MiB/s ({:.2} s), server RSS before {:.1} MiB, peak {:.1} MiB, \
             server CPU {:.2} s, client CPU {:.2} s; fsync of the stored object after the \
             201: {:.2} s",
            mib_per_s(total, r.write_fsync),
            mib_per_s(total, r.write_no_fsync),
            mib_per_s(total, r.upload),
            r.upload.as_secs_f64(),
            r.rss_before_kib as f64 / 1024.0,
            r.hwm_after_kib as f64 / 1024.0,
            r.server_cpu_s,
            r.client_cpu_s,
            r.object_fsync.as_secs_f64(),
        );
        runs.push(r);
    }

    let write = median(runs.iter().map(|r| r.write_fsync).collect());
    let write_no_fsync = median(runs.iter().map(|r| r.write_no_fsync).collect());
    let upload = median(runs.iter().map(|r| r.upload).collect());
    let rss_before = median(runs.iter().map(|r| r.rss_before_kib).collect()) as f64 / 1024.0;
    let hwm_before = median(runs.iter().map(|r| r.hwm_before_kib).collect()) as f64 / 1024.0;
    let hwm_after = median(runs.iter().map(|r| r.hwm_after_kib).collect()) as f64 / 1024.0;
    let server_cpu = median(runs.iter().map(|r| r.server_cpu_s).collect());
    let client_cpu = median(runs.iter().map(|r| r.client_cpu_s).collect());
    let ratio = mib_per_s(total, upload) / mib_per_s(total, write);
    println!();
    println!("median of {} run(s):", runs.len());
    println!(
        "{:<48} {:>10.0}",
        "disk write + fsync, MiB/s",
        mib_per_s(total, write)
    );
    println!(
        "{:<48} {:>10.0}",
        "disk write, no fsync, MiB/s",
        mib_per_s(total, write_no_fsync)
    );
    println!(
        "{:<48} {:>10.0}",
        "upload to 201, MiB/s",
        mib_per_s(total, upload)
    );
    let durable = median(runs.iter().map(|r| r.upload + r.object_fsync).collect());
    println!(
        "{:<48} {:>10.0}",
        "upload + fsync of the stored object, MiB/s",
        mib_per_s(total, durable)
    );
    println!("{:<48} {:>10.3}", "upload ÷ disk write (fsync'd)", ratio);
    println!(
        "{:<48} {:>10.3}",
        "(upload + object fsync) ÷ disk write (fsync'd)",
        mib_per_s(total, durable) / mib_per_s(total, write)
    );
    println!(
        "{:<48} {:>10.3}",
        "upload ÷ disk write (no fsync)",
        mib_per_s(total, upload) / mib_per_s(total, write_no_fsync)
    );
    println!(
        "{:<48} {:>10.1}",
        "server RSS before the upload, MiB", rss_before
    );
    println!(
        "{:<48} {:>10.1}",
        "server VmHWM before the upload, MiB", hwm_before
    );
    println!(
        "{:<48} {:>10.1}",
        "server VmHWM after the upload, MiB", hwm_after
    );
    println!(
        "{:<48} {:>10.1}",
        "peak − RSS before, MiB",
        hwm_after - rss_before
    );
    println!(
        "{:<48} {:>10.2}",
        "server CPU s per upload (user + system)", server_cpu
    );
    println!(
        "{:<48} {:>10.2}",
        "client CPU s per upload (user + system)", client_cpu
    );
    println!(
        "goal: peak under 64 MiB: {}; upload at least half of the fsync'd disk write: {}",
        if hwm_after < 64.0 { "met" } else { "MISSED" },
        if ratio >= 0.5 { "met" } else { "MISSED" },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated file is a WAV the server's prober accepts, with the promised
    /// duration, and the same bytes each time it is generated.
    #[test]
    fn generated_wav_probes_and_repeats() {
        let total = 3 * MIB;
        let mut bytes = Vec::new();
        let mut source = WavSource::new(total);
        while let Some(c) = source.next_chunk() {
            bytes.extend_from_slice(&c);
        }
        assert_eq!(bytes.len() as u64, total);
        let info = phivault_transcribe::probe_reader(Box::new(std::io::Cursor::new(bytes.clone())))
            .expect("probe");
        assert_eq!(info.container, "wave");
        assert_eq!(info.codec, "pcm_s16le");
        assert_eq!(info.sample_rate, RATE);
        assert_eq!(info.channels, CHANNELS);
        let frames = (total - HEADER_LEN as u64) / 4;
        assert_eq!(info.duration_ms, frames * 1000 / u64::from(RATE));
        let (hash, _) = hash_pass(total);
        assert_eq!(hash, hex::encode(Sha256::digest(&bytes)));
    }

    #[test]
    fn reads_own_memory_and_cpu() {
        let pid = std::process::id();
        assert!(proc_status_kib(pid, "VmHWM").unwrap() > 0);
        assert!(proc_status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(proc_cpu_secs(pid).unwrap() >= 0.0);
        assert!(proc_status_kib(pid, "NoSuchField").is_err());
    }
}
