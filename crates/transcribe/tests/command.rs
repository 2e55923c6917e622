//! The command engine against real programs: shell scripts written here, run by /bin/sh.
//! Every script reports the private directory it was given to a "spy" file, so the tests can
//! check that directory is gone afterwards. All text is synthetic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use phivault_transcribe::{
    CommandConfig, CommandTranscriber, EngineFailure, Error, OutputFormat, SpeakerRole,
    Transcriber, write_wav_16k,
};

struct Fixture {
    dir: tempfile::TempDir,
    wav: PathBuf,
}

impl Fixture {
    /// A 16 kHz mono WAV of `ms` milliseconds of a quiet tone.
    fn new(ms: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("audio.wav");
        let samples: Vec<f32> = (0..ms * 16).map(|i| (i as f32 * 0.1).sin() * 0.1).collect();
        write_wav_16k(&samples, &wav).unwrap();
        Self { dir, wav }
    }

    fn spy(&self) -> PathBuf {
        self.dir.path().join("spy")
    }

    /// Writes an executable script whose body runs after recording `$2` (the private dir)
    /// in the spy file.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!("#!/bin/sh\nprintf '%s' \"$2\" > \"$3\"\n{body}\n");
        std::fs::write(&path, text).unwrap();
        make_executable(&path);
        path
    }

    fn engine(
        &self,
        program: PathBuf,
        output: OutputFormat,
        timeout: Duration,
    ) -> CommandTranscriber {
        CommandTranscriber::new(CommandConfig {
            program,
            args: vec![
                "{input}".into(),
                "{output_dir}".into(),
                self.spy().to_str().unwrap().into(),
            ],
            output,
            timeout,
            model: "synthetic-test-script".into(),
            work_dir: Some(self.dir.path().join("work")),
        })
        .unwrap()
    }

    /// The private directory the script saw; asserts it was inside `work/` and is gone.
    fn assert_private_dir_wiped(&self) {
        let seen = PathBuf::from(std::fs::read_to_string(self.spy()).unwrap());
        assert!(seen.starts_with(self.dir.path().join("work")), "{seen:?}");
        assert!(!seen.exists(), "private dir {seen:?} still exists");
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("work"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn work_dir(f: &Fixture) {
    std::fs::create_dir(f.dir.path().join("work")).unwrap();
}

#[tokio::test]
async fn segments_json_reflects_the_input_it_read() {
    let f = Fixture::new(2000);
    work_dir(&f);
    // Derives its answer from the copy it was given: size in bytes → duration in ms, and a
    // check that the private dir is 0700 and holds the input.
    let program = f.script(
        "segments.sh",
        r#"size=$(wc -c < "$1")
mode=$(stat -c %a "$2")
[ "$(dirname "$1")" = "$2" ] || exit 3
ms=$(( (size - 44) / 32 ))
half=$(( ms / 2 ))
printf '[{"start_ms":0,"end_ms":%d,"text":" synthetic first half of %d bytes ","speaker":"clinician"},{"start_ms":%d,"end_ms":%d,"text":"synthetic mode %s"}]' "$half" "$size" "$half" "$ms" "$mode""#,
    );
    let transcript = f
        .engine(program, OutputFormat::SegmentsJson, Duration::from_secs(10))
        .transcribe(&f.wav)
        .await
        .unwrap();
    assert_eq!(transcript.engine, "command");
    assert_eq!(transcript.model, "synthetic-test-script");
    let size = std::fs::metadata(&f.wav).unwrap().len();
    let got: Vec<(u64, u64, &str, Option<SpeakerRole>)> = transcript
        .segments
        .iter()
        .map(|s| (s.start_ms, s.end_ms, s.text.expose(), s.speaker))
        .collect();
    let first = format!("synthetic first half of {size} bytes");
    assert_eq!(
        got,
        [
            (0, 1000, first.as_str(), Some(SpeakerRole::Clinician)),
            (1000, 2000, "synthetic mode 700", None),
        ]
    );
    f.assert_private_dir_wiped();
}

#[tokio::test]
async fn whisper_cpp_json_file_is_read_and_wiped() {
    let f = Fixture::new(3000);
    work_dir(&f);
    // Writes `{input}.json` as whisper.cpp's -oj does, with a last segment that overshoots
    // the audio (whisper.cpp rounds its window up), and leaves a read-only extra file behind.
    let program = f.script(
        "whisper.sh",
        r#"cat > "$1.json" <<'EOF'
{"systeminfo":"synthetic","transcription":[
 {"timestamps":{"from":"00:00:00,000","to":"00:00:01,500"},"offsets":{"from":0,"to":1500},"text":" Synthetic hello."},
 {"timestamps":{"from":"00:00:01,500","to":"00:00:03,200"},"offsets":{"from":1500,"to":3200},"text":" Synthetic goodbye."}
]}
EOF
echo scratch > "$2/scratch.txt"; chmod 400 "$2/scratch.txt""#,
    );
    let transcript = f
        .engine(
            program,
            OutputFormat::WhisperCppJson,
            Duration::from_secs(10),
        )
        .transcribe(&f.wav)
        .await
        .unwrap();
    let got: Vec<(u64, u64, &str)> = transcript
        .segments
        .iter()
        .map(|s| (s.start_ms, s.end_ms, s.text.expose()))
        .collect();
    assert_eq!(
        got,
        [
            (0, 1500, "Synthetic hello."),
            (1500, 3000, "Synthetic goodbye.")
        ]
    );
    f.assert_private_dir_wiped();
}

#[tokio::test]
async fn plain_text_spans_the_whole_audio() {
    let f = Fixture::new(1500);
    work_dir(&f);
    let program = f.script("plain.sh", r#"printf 'synthetic\n  plain   words\n'"#);
    let transcript = f
        .engine(program, OutputFormat::PlainText, Duration::from_secs(10))
        .transcribe(&f.wav)
        .await
        .unwrap();
    assert_eq!(transcript.segments.len(), 1);
    assert_eq!(
        transcript.segments[0].text.expose(),
        "synthetic plain words"
    );
    assert_eq!(
        (
            transcript.segments[0].start_ms,
            transcript.segments[0].end_ms
        ),
        (0, 1500)
    );
    f.assert_private_dir_wiped();
}

#[tokio::test]
async fn a_failing_program_is_engine_failed_with_stderr_withheld() {
    let f = Fixture::new(500);
    work_dir(&f);
    let program = f.script(
        "fail.sh",
        "echo 'synthetic: model file not found' >&2\nexit 1",
    );
    let err = f
        .engine(program, OutputFormat::PlainText, Duration::from_secs(10))
        .transcribe(&f.wav)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "engine_failed");
    assert_eq!(
        err.to_string(),
        "the transcription engine failed: it exited with status 1"
    );
    // The tail is kept for an operator's deliberate look, but neither Debug nor the
    // message shows it: an engine may echo what it heard on stderr.
    assert!(!format!("{err:?}").contains("model file not found"));
    let Error::EngineFailed {
        reason,
        stderr_tail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(reason, &EngineFailure::Exit(Some(1)));
    assert!(
        stderr_tail
            .as_ref()
            .is_some_and(|t| t.expose().contains("synthetic: model file not found"))
    );
    f.assert_private_dir_wiped();
}

#[tokio::test]
async fn a_hung_program_is_killed_with_its_children() {
    let f = Fixture::new(500);
    work_dir(&f);
    let pid_file = f.dir.path().join("child.pid");
    // The script starts a helper and waits on it; both must die at the timeout.
    let program = f.script(
        "hang.sh",
        &format!(
            "sleep 30 &\necho $! > '{}'\nwait",
            pid_file.to_str().unwrap()
        ),
    );
    let started = Instant::now();
    let err = f
        .engine(program, OutputFormat::PlainText, Duration::from_millis(700))
        .transcribe(&f.wav)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(err.code(), "engine_failed");
    assert_eq!(
        err.to_string(),
        "the transcription engine failed: it timed out after 700 ms"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    // The helper is SIGKILLed; give init a moment to reap it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while proc_is_alive(&proc_dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!proc_is_alive(&proc_dir), "helper process {pid} survived");
    f.assert_private_dir_wiped();
}

#[tokio::test]
async fn a_helper_left_in_the_background_is_killed_on_success() {
    let f = Fixture::new(500);
    work_dir(&f);
    let pid_file = f.dir.path().join("bg.pid");
    let program = f.script(
        "background.sh",
        &format!(
            "sleep 30 >/dev/null 2>&1 &\necho $! > '{}'\necho synthetic words",
            pid_file.to_str().unwrap()
        ),
    );
    let transcript = f
        .engine(program, OutputFormat::PlainText, Duration::from_secs(10))
        .transcribe(&f.wav)
        .await
        .unwrap();
    assert_eq!(transcript.text().expose(), "synthetic words");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    let deadline = Instant::now() + Duration::from_secs(3);
    while proc_is_alive(&proc_dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !proc_is_alive(&proc_dir),
        "background helper {pid} survived"
    );
    f.assert_private_dir_wiped();
}

/// Alive and not a zombie.
fn proc_is_alive(proc_dir: &Path) -> bool {
    match std::fs::read_to_string(proc_dir.join("stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn malformed_json_is_engine_failed() {
    let f = Fixture::new(500);
    work_dir(&f);
    for (name, body) in [
        ("bad.sh", r#"printf '[{"start_ms":0,"end_ms":'"#),
        (
            "backwards.sh",
            r#"printf '[{"start_ms":90,"end_ms":10,"text":"x"}]'"#,
        ),
        (
            "negative.sh",
            r#"printf '[{"start_ms":-1,"end_ms":10,"text":"x"}]'"#,
        ),
    ] {
        let program = f.script(name, body);
        let err = f
            .engine(program, OutputFormat::SegmentsJson, Duration::from_secs(10))
            .transcribe(&f.wav)
            .await
            .unwrap_err();
        let Error::EngineFailed { reason, .. } = &err else {
            panic!("{name}: {err:?}")
        };
        assert_eq!(reason, &EngineFailure::MalformedOutput, "{name}");
        f.assert_private_dir_wiped();
    }
    // whisper.cpp format, but the program wrote no file.
    let program = f.script("nofile.sh", "true");
    let err = f
        .engine(
            program,
            OutputFormat::WhisperCppJson,
            Duration::from_secs(10),
        )
        .transcribe(&f.wav)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "engine_failed");
    f.assert_private_dir_wiped();
}

#[tokio::test]
async fn flooding_stdout_is_cut_off() {
    let f = Fixture::new(500);
    work_dir(&f);
    let program = f.script("flood.sh", "exec yes synthetic");
    let started = Instant::now();
    let err = f
        .engine(program, OutputFormat::PlainText, Duration::from_secs(60))
        .transcribe(&f.wav)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    let Error::EngineFailed { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(reason, &EngineFailure::OutputTooLarge);
    f.assert_private_dir_wiped();
}

#[test]
fn misconfiguration_is_refused_up_front() {
    let f = Fixture::new(100);
    let script = f.script("ok.sh", "true");
    let config = |program: PathBuf, args: &[&str]| CommandConfig {
        program,
        args: args.iter().map(|a| a.to_string()).collect(),
        output: OutputFormat::PlainText,
        timeout: Duration::from_secs(1),
        model: "m".into(),
        work_dir: None,
    };
    let code = |c: CommandConfig| CommandTranscriber::new(c).unwrap_err().code();
    assert_eq!(
        code(config("ok.sh".into(), &["{input}"])),
        "engine_misconfigured"
    );
    let not_exec = f.dir.path().join("data.txt");
    std::fs::write(&not_exec, "synthetic").unwrap();
    assert_eq!(code(config(not_exec, &["{input}"])), "engine_misconfigured");
    assert_eq!(
        code(config(f.dir.path().to_owned(), &["{input}"])),
        "engine_misconfigured"
    );
    assert_eq!(
        code(config(script.clone(), &["-f", "x"])),
        "engine_misconfigured"
    );
    let mut zero = config(script.clone(), &["{input}"]);
    zero.timeout = Duration::ZERO;
    assert_eq!(code(zero), "engine_misconfigured");
    assert!(CommandTranscriber::new(config(script, &["-f", "{input}"])).is_ok());
}

#[tokio::test]
async fn input_must_be_16k_mono_wav() {
    let f = Fixture::new(100);
    work_dir(&f);
    let program = f.script("ok.sh", "true");
    let not_wav = f.dir.path().join("x.wav");
    std::fs::write(&not_wav, "synthetic, not a wav").unwrap();
    let err = f
        .engine(program, OutputFormat::PlainText, Duration::from_secs(1))
        .transcribe(&not_wav)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unsupported_format");
    // Refused before any private directory was made.
    assert_eq!(
        std::fs::read_dir(f.dir.path().join("work"))
            .unwrap()
            .count(),
        0
    );
}
