//! Running an engine program: bounded time, bounded output, and nothing left behind.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::error::{EngineFailure, Error, Result};

/// Bytes of stderr kept while reading (the rest scrolls away).
const STDERR_KEEP: usize = 4096;
/// Characters of stderr kept in an error, after sanitizing.
const STDERR_TAIL_CHARS: usize = 300;

/// A program that ran to completion.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr_tail: Option<crate::error::StderrTail>,
}

impl Finished {
    /// Turns an unsuccessful exit into `engine_failed`.
    pub fn check(self) -> Result<Self> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(Error::EngineFailed {
                reason: EngineFailure::Exit(self.status.code()),
                stderr_tail: self.stderr_tail,
            })
        }
    }
}

/// Runs `cmd` in its own process group with stdin closed, collecting at most `stdout_cap`
/// bytes of stdout. On timeout or oversized output the whole group is killed, so helper
/// processes a wrapper script started die too and cannot keep working on PHI.
pub(crate) async fn run(
    mut cmd: Command,
    timeout: Duration,
    stdout_cap: usize,
) -> Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|_| Error::engine(EngineFailure::Spawn))?;
    // Also on success and on cancellation: a helper the program left running in the
    // background must not go on reading the audio.
    let _group = GroupKill(child.id());
    let pid = child.id();
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_group(pid);
        return Err(Error::Internal("child pipes"));
    };
    let mut stderr_buf = Vec::new();
    // try_join: oversized output must end the run at once, not wait for the timeout.
    let outcome = tokio::time::timeout(timeout, async {
        tokio::try_join!(
            read_capped(&mut stdout, stdout_cap),
            read_tail(&mut stderr, &mut stderr_buf),
            async { child.wait().await.map_err(|_| EngineFailure::Exit(None)) }
        )
    })
    .await;
    let failure = match outcome {
        Ok(Ok((stdout, (), status))) => {
            return Ok(Finished {
                status,
                stdout,
                stderr_tail: sanitize_tail(&stderr_buf).map(crate::error::StderrTail::new),
            });
        }
        Ok(Err(reason)) => reason,
        Err(_) => EngineFailure::Timeout(timeout),
    };
    kill_group(pid);
    let _ = child.kill().await;
    Err(Error::EngineFailed {
        reason: failure,
        stderr_tail: sanitize_tail(&stderr_buf).map(crate::error::StderrTail::new),
    })
}

struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH (group already gone) is the expected outcome for a well-behaved program.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    #[cfg(not(unix))]
    let _ = pid;
}

async fn read_capped(
    reader: &mut (impl AsyncRead + Unpin),
    cap: usize,
) -> std::result::Result<Vec<u8>, EngineFailure> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > cap {
                    return Err(EngineFailure::OutputTooLarge);
                }
                out.extend_from_slice(&chunk[..n]);
            }
            Err(_) => return Err(EngineFailure::MalformedOutput),
        }
    }
}

async fn read_tail(
    reader: &mut (impl AsyncRead + Unpin),
    tail: &mut Vec<u8>,
) -> std::result::Result<(), EngineFailure> {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_KEEP {
            tail.drain(..tail.len() - STDERR_KEEP);
        }
    }
    Ok(())
}

/// The last few hundred characters of stderr, printable ASCII only, lines joined by " | ".
fn sanitize_tail(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            line.chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .filter(|line| !line.is_empty())
        .collect();
    let joined = lines.join(" | ");
    if joined.is_empty() {
        return None;
    }
    let skip = joined.len().saturating_sub(STDERR_TAIL_CHARS);
    Some(joined[skip..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_short_ascii() {
        let raw = "first line\n\x1b[31mcolour\x1b[0m é\n".repeat(50);
        let tail = sanitize_tail(raw.as_bytes()).unwrap();
        assert!(tail.len() <= STDERR_TAIL_CHARS);
        assert!(
            tail.chars().all(|c| c.is_ascii_graphic() || c == ' '),
            "{tail}"
        );
        assert!(tail.ends_with("?[31mcolour?[0m ?"), "{tail}");
        assert_eq!(sanitize_tail(b"\n \n"), None);
    }
}
