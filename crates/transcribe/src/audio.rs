//! Probing and decoding uploaded audio with symphonia, resampling with rubato.
//!
//! Accepted: WAV (PCM), FLAC, Ogg Vorbis, MP3, MP4/M4A with AAC-LC, and ADTS AAC. Refused:
//! Ogg Opus (and any other codec symphonia 0.6 cannot decode) with `unsupported_codec`,
//! because symphonia has no Opus decoder; chained Ogg streams with `unsupported_format`;
//! sample rates outside 4 kHz–384 kHz with `unsupported_format`.
//!
//! Damage policy: a stream that ends early (a cut upload) is accepted up to the cut, and its
//! duration is what actually decodes. One undecodable packet is tolerated only if it is the
//! last one (the cut frame); any other undecodable packet, or a jump in packet timestamps
//! (a demuxer that skipped damaged data), is `corrupt_audio`, because dropping audio in the
//! middle would shift every later timestamp of the transcript.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Read};
use std::path::Path;
use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::codecs::audio::well_known as codec_ids;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

use crate::error::{Error, Result};

/// The rate every engine is fed.
pub const TARGET_RATE: u32 = 16_000;

/// Sample rates outside this range are refused: below it there is no speech band to
/// recognise, above it resampler buffers grow for no benefit.
const MIN_RATE: u32 = 4_000;
const MAX_RATE: u32 = 384_000;

/// `probe` decodes the whole file; this bounds the work a small, highly compressed hostile
/// file (e.g. Vorbis silence) can cause. No consultation lasts a day.
const PROBE_MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Input frames handed to the resampler per call.
const RESAMPLE_CHUNK: usize = 1024;

/// What `probe` learned about an upload. Holds no audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioInfo {
    /// Container short name as symphonia names it: "wav", "flac", "ogg", "mp3", "isomp4", …
    pub container: &'static str,
    /// Codec short name: "pcm_s16le", "flac", "vorbis", "mp3", "aac", …
    pub codec: &'static str,
    /// Sample rate of the decoded audio, in Hz.
    pub sample_rate: u32,
    /// Channel count of the decoded audio.
    pub channels: u16,
    /// Duration of the audio that actually decodes, in milliseconds.
    pub duration_ms: u64,
}

/// Probes `path`, decoding every packet (without keeping samples), so that corrupt data is
/// caught at upload and the duration is the real one even when a cut file's header promises
/// more. Memory stays constant; time is linear in the file.
pub fn probe(path: &Path) -> Result<AudioInfo> {
    probe_opened(Opened::open(path)?)
}

/// [`probe`] over a stream that cannot seek, such as an upload being received (and sealed)
/// as it arrives; reads it to the end. Same checks and codes as [`probe`], with one
/// limit of streaming: an MP4/M4A whose index (`moov`) comes after the audio (FFmpeg's and
/// many recorders' default) cannot be read without seeking and is refused with
/// `unsupported_format`; "fast start" MP4s, which put the index first, are fine. Probe such
/// files with [`probe`] from a seekable (decrypted, private) copy instead.
pub fn probe_reader(reader: Box<dyn Read + Send + Sync>) -> Result<AudioInfo> {
    probe_opened(Opened::from_reader(reader)?)
}

fn probe_opened(mut opened: Opened) -> Result<AudioInfo> {
    let mut spec: Option<(u32, u16)> = None;
    let mut frames: u64 = 0;
    opened.decode_all(|buf| {
        let (rate, _) = *spec.get_or_insert((buf.rate, buf.channels));
        if rate != buf.rate {
            return Err(Error::CorruptAudio);
        }
        frames += buf.frames as u64;
        if frames > PROBE_MAX_DURATION.as_secs() * u64::from(rate) {
            return Err(Error::AudioTooLong {
                limit: PROBE_MAX_DURATION,
            });
        }
        Ok(())
    })?;
    let (sample_rate, channels) = spec.ok_or(Error::EmptyAudio)?;
    Ok(AudioInfo {
        container: opened.container,
        codec: opened.codec,
        sample_rate,
        channels,
        duration_ms: frames * 1000 / u64::from(sample_rate),
    })
}

/// Decodes every packet of `path`, downmixes to mono and resamples to 16 kHz with rubato's
/// FFT (sinc-windowed) resampler. Refuses audio longer than `max_duration` with
/// `audio_too_long`, as soon as the decoded length passes it. The input is
/// streamed: memory is the output plus a few resampler chunks. For long recordings use
/// [`decode_to_wav_16k`], which does not hold the output either.
pub fn decode_mono_16k(path: &Path, max_duration: Duration) -> Result<Vec<f32>> {
    let mut out: Vec<f32> = Vec::new();
    decode_16k_with(path, max_duration, &mut out)?;
    Ok(out)
}

/// [`decode_mono_16k`] straight into a 16 kHz mono 16-bit WAV at `wav` (created 0600: it
/// is PHI), without holding the recording in memory: samples go to the file a resampler
/// chunk at a time, so a 60-minute visit costs the same memory as a 60-second one.
/// Returns the number of samples written. On failure the partial file is left for the
/// caller's private directory to wipe.
pub fn decode_to_wav_16k(path: &Path, wav: &Path, max_duration: Duration) -> Result<u64> {
    let mut writer = Wav16kWriter::create(wav)?;
    decode_16k_with(path, max_duration, &mut writer)?;
    writer.finish()
}

/// Where the decode loop puts 16 kHz mono samples.
trait Sink {
    /// The expected output length, from the header (capped by the limit), heard once.
    fn reserve(&mut self, _samples: usize) {}
    /// The next samples, in order, a resampler chunk at a time.
    fn write(&mut self, samples: &[f32]) -> Result<()>;
}

impl Sink for Vec<f32> {
    fn reserve(&mut self, samples: usize) {
        Vec::reserve(self, samples);
    }

    fn write(&mut self, samples: &[f32]) -> Result<()> {
        self.extend_from_slice(samples);
        Ok(())
    }
}

/// The decode loop shared by the two entry points.
fn decode_16k_with(path: &Path, max_duration: Duration, sink: &mut dyn Sink) -> Result<()> {
    let too_long = || Error::AudioTooLong {
        limit: max_duration,
    };
    let mut opened = Opened::open(path)?;
    // Headers can lie either way (a cut upload keeps its original length), so only decoded
    // frames count against the limit; decoding stops as soon as they pass it.
    let max_out = (max_duration.as_secs_f64() * f64::from(TARGET_RATE)).ceil() as usize;
    if let Some(frames) = opened.declared_frames {
        let rate = opened.declared_rate.unwrap_or(TARGET_RATE).max(1);
        let expected = (frames as f64 * f64::from(TARGET_RATE) / f64::from(rate)) as usize;
        sink.reserve(expected.min(max_out) + 64);
    }
    let mut resampler: Option<(u32, MonoResampler)> = None;
    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut out: Vec<f32> = Vec::new();
    let mut frames_in: u64 = 0;
    opened.decode_all(|buf| {
        if resampler.is_none() {
            resampler = Some((buf.rate, MonoResampler::new(buf.rate)?));
        }
        let Some((rate, resampler)) = resampler.as_mut() else {
            return Err(Error::Internal("resampler missing"));
        };
        if *rate != buf.rate {
            return Err(Error::CorruptAudio);
        }
        frames_in += buf.frames as u64;
        if Duration::from_secs_f64(frames_in as f64 / f64::from(*rate)) > max_duration {
            return Err(too_long());
        }
        buf.samples.copy_to_vec_interleaved(&mut interleaved);
        downmix(&interleaved, usize::from(buf.channels), &mut mono);
        out.clear();
        resampler.push(&mono, &mut out)?;
        sink.write(&out)
    })?;
    let Some((_, resampler)) = resampler else {
        return Err(Error::EmptyAudio);
    };
    out.clear();
    resampler.finish(&mut out)?;
    sink.write(&out)
}

/// A 16 kHz mono 16-bit WAV written sample by sample (hound fills in the sizes at the end).
struct Wav16kWriter {
    writer: hound::WavWriter<BufWriter<File>>,
    samples: u64,
}

impl Wav16kWriter {
    fn create(path: &Path) -> Result<Self> {
        let file = create_private_file(path).map_err(Error::Io)?;
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: TARGET_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::new(BufWriter::new(file), spec).map_err(hound_error)?;
        Ok(Self { writer, samples: 0 })
    }

    fn finish(self) -> Result<u64> {
        self.writer.finalize().map_err(hound_error)?;
        Ok(self.samples)
    }
}

impl Sink for Wav16kWriter {
    fn write(&mut self, samples: &[f32]) -> Result<()> {
        for &s in samples {
            // `as` saturates and maps NaN to 0, which is what a clipped sample should be.
            self.writer
                .write_sample((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16)
                .map_err(hound_error)?;
        }
        self.samples += samples.len() as u64;
        Ok(())
    }
}

/// Writes `samples` (mono, 16 kHz, nominally in [-1, 1]) as a 16-bit PCM WAV, for engines
/// that read files. The file is created mode 0600: it is PHI.
pub fn write_wav_16k(samples: &[f32], path: &Path) -> Result<()> {
    let mut writer = Wav16kWriter::create(path)?;
    writer.write(samples)?;
    writer.finish().map(|_| ())
}

/// Reads the header of a WAV written by [`write_wav_16k`] (or any 16 kHz mono 16-bit PCM
/// WAV) and returns its duration in ms; anything else is `unsupported_format`, because the
/// engines would silently mis-hear it.
pub(crate) fn wav_16k_duration_ms(path: &Path) -> Result<u64> {
    let reader = hound::WavReader::open(path).map_err(|e| match e {
        hound::Error::IoError(e) if e.kind() != ErrorKind::UnexpectedEof => Error::Io(e),
        _ => Error::UnsupportedFormat,
    })?;
    let spec = reader.spec();
    if spec.channels != 1
        || spec.sample_rate != TARGET_RATE
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(Error::UnsupportedFormat);
    }
    Ok(u64::from(reader.duration()) * 1000 / u64::from(TARGET_RATE))
}

fn hound_error(e: hound::Error) -> Error {
    match e {
        hound::Error::IoError(e) => Error::Io(e),
        _ => Error::Internal("wav writer"),
    }
}

fn create_private_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Averages interleaved channels into `mono` (cleared first).
fn downmix(interleaved: &[f32], channels: usize, mono: &mut Vec<f32>) {
    mono.clear();
    if channels <= 1 {
        mono.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    mono.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

/// One decoded buffer, as the decode loop hands it on.
struct Decoded<'a> {
    rate: u32,
    channels: u16,
    frames: usize,
    samples: symphonia::core::audio::GenericAudioBufferRef<'a>,
}

/// A probed file with a decoder for its default audio track.
struct Opened {
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    container: &'static str,
    codec: &'static str,
    declared_frames: Option<u64>,
    declared_rate: Option<u32>,
}

impl Opened {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::Io)?;
        if file.metadata().map_err(Error::Io)?.len() == 0 {
            return Err(Error::EmptyAudio);
        }
        Self::from_source(Box::new(file), true)
    }

    fn from_reader(mut reader: Box<dyn Read + Send + Sync>) -> Result<Self> {
        // An empty stream must say so, not "unsupported format": peek one byte.
        let mut first = [0u8; 1];
        let n = loop {
            match reader.read(&mut first) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other.map_err(Error::Io)?,
            }
        };
        if n == 0 {
            return Err(Error::EmptyAudio);
        }
        let stream = std::io::Cursor::new(first).chain(reader);
        Self::from_source(Box::new(ReadOnlySource::new(stream)), false)
    }

    fn from_source(source: Box<dyn MediaSource>, seekable: bool) -> Result<Self> {
        let mss = MediaSourceStream::new(source, Default::default());
        let reader = symphonia::default::get_probe()
            .probe(
                &Hint::new(),
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                // symphonia says "unsupported" for an MP4 without its index. In a file that
                // is damage (a cut upload: moov often comes last); in a stream the index may
                // simply lie beyond where a non-seeking reader can look.
                SymError::Unsupported(msg) if seekable && msg.contains("missing") => {
                    Error::CorruptAudio
                }
                SymError::Unsupported(_) => Error::UnsupportedFormat,
                other => from_stream_error(other),
            })?;
        let container = reader.format_info().short_name;
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or(Error::EmptyAudio)?;
        let track_id = track.id;
        let declared_frames = track.num_frames;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or(Error::UnsupportedCodec { codec: "unknown" })?;
        let declared_rate = params.sample_rate;
        if let Some(rate) = declared_rate
            && !(MIN_RATE..=MAX_RATE).contains(&rate)
        {
            return Err(Error::UnsupportedFormat);
        }
        let registry = symphonia::default::get_codecs();
        let Some(registered) = registry.get_audio_decoder(params.codec) else {
            return Err(Error::UnsupportedCodec {
                codec: unsupported_codec_name(params.codec),
            });
        };
        let codec = registered.codec.info.short_name;
        let decoder = registry
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| match e {
                SymError::Unsupported(_) => Error::UnsupportedCodec { codec },
                other => from_stream_error(other),
            })?;
        Ok(Self {
            reader,
            decoder,
            track_id,
            container,
            codec,
            declared_frames,
            declared_rate,
        })
    }

    /// Decodes every packet of the track, handing each non-empty buffer to `sink`, and
    /// applies the damage policy of the module doc. Fails with `empty_audio` if nothing
    /// decodes.
    fn decode_all(&mut self, mut sink: impl FnMut(Decoded<'_>) -> Result<()>) -> Result<()> {
        let mut failed_packet = false;
        let mut decoded_any = false;
        // Where the next packet should start. Some demuxers (FLAC's) resynchronise past
        // damage silently; a jump in timestamps is the only trace of the lost audio.
        let mut expected_ts: Option<i64> = None;
        loop {
            let packet = match self.reader.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                // A cut upload: what came before the cut is real audio.
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
                // A chained Ogg stream changes its tracks midway; not worth the complexity.
                Err(SymError::ResetRequired) => return Err(Error::UnsupportedFormat),
                Err(SymError::Unsupported(_)) => return Err(Error::UnsupportedFormat),
                Err(e) => return Err(from_stream_error(e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let pts = packet.pts.get();
            let dur = i64::try_from(packet.dur.get()).map_err(|_| Error::CorruptAudio)?;
            if let Some(expected) = expected_ts
                && pts.saturating_sub(expected) > dur / 2
            {
                return Err(Error::CorruptAudio);
            }
            if dur > 0 {
                expected_ts = Some(pts.saturating_add(dur));
            }
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    if failed_packet {
                        return Err(Error::CorruptAudio);
                    }
                    let frames = buf.frames();
                    if frames == 0 {
                        continue;
                    }
                    let rate = buf.spec().rate();
                    let channels = buf.spec().channels().count();
                    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                        return Err(Error::UnsupportedFormat);
                    }
                    let channels = u16::try_from(channels)
                        .ok()
                        .filter(|&c| c > 0)
                        .ok_or(Error::CorruptAudio)?;
                    decoded_any = true;
                    sink(Decoded {
                        rate,
                        channels,
                        frames,
                        samples: buf,
                    })?;
                }
                Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                    if failed_packet {
                        return Err(Error::CorruptAudio);
                    }
                    failed_packet = true;
                }
                Err(SymError::Unsupported(_)) => {
                    return Err(Error::UnsupportedCodec { codec: self.codec });
                }
                Err(_) => return Err(Error::CorruptAudio),
            }
        }
        if !decoded_any {
            return Err(if failed_packet {
                Error::CorruptAudio
            } else {
                Error::EmptyAudio
            });
        }
        Ok(())
    }
}

/// Maps a demuxer error that is not about the format being unknown.
fn from_stream_error(e: SymError) -> Error {
    match e {
        SymError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => Error::CorruptAudio,
        SymError::IoError(e) => Error::Io(e),
        SymError::Unsupported(_) => Error::UnsupportedFormat,
        _ => Error::CorruptAudio,
    }
}

/// Names a codec the registry has no decoder for, so the refusal can say what it was.
fn unsupported_codec_name(id: AudioCodecId) -> &'static str {
    match id {
        codec_ids::CODEC_ID_OPUS => "opus",
        codec_ids::CODEC_ID_SPEEX => "speex",
        codec_ids::CODEC_ID_ALAC => "alac",
        codec_ids::CODEC_ID_AC3 => "ac3",
        codec_ids::CODEC_ID_EAC3 => "eac3",
        codec_ids::CODEC_ID_WMA => "wma",
        codec_ids::CODEC_ID_MP1 => "mp1",
        codec_ids::CODEC_ID_MP2 => "mp2",
        codec_ids::CODEC_ID_WAVPACK => "wavpack",
        _ => "unknown",
    }
}

/// Streaming mono resampler to 16 kHz: FFT-based (rubato `Fft`, windowed-sinc filter in the
/// frequency domain), with its start-up delay trimmed so sample 0 of the output is time 0.
enum MonoResampler {
    Passthrough,
    Fft(Box<FftState>),
}

struct FftState {
    resampler: Fft<f32>,
    ratio: f64,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl MonoResampler {
    fn new(rate: u32) -> Result<Self> {
        if rate == TARGET_RATE {
            return Ok(Self::Passthrough);
        }
        let resampler = Fft::<f32>::new(
            rate as usize,
            TARGET_RATE as usize,
            RESAMPLE_CHUNK,
            1,
            FixedSync::Input,
        )
        .map_err(|_| Error::Internal("resampler construction"))?;
        let scratch = vec![0.0; resampler.output_frames_max()];
        Ok(Self::Fft(Box::new(FftState {
            delay_left: resampler.output_delay(),
            ratio: f64::from(TARGET_RATE) / f64::from(rate),
            resampler,
            pending: Vec::with_capacity(2 * RESAMPLE_CHUNK),
            scratch,
            frames_in: 0,
            frames_out: 0,
        })))
    }

    fn push(&mut self, mono: &[f32], out: &mut Vec<f32>) -> Result<()> {
        match self {
            Self::Passthrough => {
                out.extend_from_slice(mono);
                Ok(())
            }
            Self::Fft(state) => {
                state.frames_in += mono.len() as u64;
                state.pending.extend_from_slice(mono);
                let mut start = 0;
                while state.pending.len() - start >= state.resampler.input_frames_next() {
                    let need = state.resampler.input_frames_next();
                    let consumed = state.process(start, need, None, out)?;
                    start += consumed;
                }
                state.pending.drain(..start);
                Ok(())
            }
        }
    }

    fn finish(self, out: &mut Vec<f32>) -> Result<()> {
        let Self::Fft(mut state) = self else {
            return Ok(());
        };
        let expected = (state.frames_in as f64 * state.ratio).round() as u64;
        let left = state.pending.len();
        let need = state.resampler.input_frames_next();
        state.pending.resize(need.max(left), 0.0);
        if left > 0 {
            state.process(0, need, Some(left), out)?;
        }
        // Flush the filter's tail with silence until every input frame has come out.
        let mut guard = 0;
        while state.frames_out < expected {
            state.pending.iter_mut().for_each(|s| *s = 0.0);
            state.process(0, need, Some(0), out)?;
            guard += 1;
            if guard > 10_000 {
                return Err(Error::Internal("resampler did not drain"));
            }
        }
        let excess = (state.frames_out - expected) as usize;
        out.truncate(out.len() - excess.min(out.len()));
        Ok(())
    }
}

impl FftState {
    /// Runs one chunk starting at `pending[start]`; returns the input frames consumed.
    fn process(
        &mut self,
        start: usize,
        need: usize,
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<usize> {
        let input = InterleavedSlice::new(&self.pending[start..start + need], 1, need)
            .map_err(|_| Error::Internal("resampler input"))?;
        let out_len = self.scratch.len();
        let mut output = InterleavedSlice::new_mut(&mut self.scratch, 1, out_len)
            .map_err(|_| Error::Internal("resampler output"))?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (consumed, produced) = self
            .resampler
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|_| Error::Internal("resampler"))?;
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        out.extend_from_slice(&self.scratch[skip..produced]);
        self.frames_out += (produced - skip) as u64;
        Ok(consumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_frames() {
        let mut mono = Vec::new();
        downmix(&[1.0, 0.0, 0.5, 0.5, -1.0, 1.0], 2, &mut mono);
        assert_eq!(mono, vec![0.5, 0.5, 0.0]);
        downmix(&[0.25, -0.25], 1, &mut mono);
        assert_eq!(mono, vec![0.25, -0.25]);
    }

    #[test]
    fn resampler_keeps_length_and_timing() {
        // 0.5 s of 48 kHz with a single impulse at 0.25 s: the output must be 8000 samples
        // with the impulse's peak at 4000 ± 1, i.e. the start-up delay really is trimmed.
        let mut input = vec![0.0f32; 24_000];
        input[12_000] = 1.0;
        let mut r = MonoResampler::new(48_000).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(777) {
            r.push(chunk, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        assert_eq!(out.len(), 8000);
        let peak = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert!((3999..=4001).contains(&peak), "peak at {peak}");
    }
}
