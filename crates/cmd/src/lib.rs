//! The one subprocess runner of Keelson (image build, provisioning, first boot, the agent and
//! xtask): every failure names the command line, how it ended and the tail of its stderr, and a
//! command can be given a timeout after which it is killed.

// Every public item carries a one-line doc; keep the compiler checking it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How many stderr lines a failure keeps.
pub const TAIL_LINES: usize = 25;

/// A command that could not be started, failed, or ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` {status}{}", if stderr_tail.is_empty() { String::new() } else { format!(":\n{stderr_tail}") })]
pub struct CmdError {
    /// The command line, shell-quoted where needed.
    pub command: String,
    /// How it ended: `exit status: 3`, `could not start: ...`, `timed out after 30s`.
    pub status: String,
    /// The last [`TAIL_LINES`] lines of its stderr (and, for streamed commands, stdout).
    pub stderr_tail: String,
    /// The exit code, when the command ran and exited (not killed, not unstartable).
    pub code: Option<i32>,
}

impl CmdError {
    /// A command that ended badly in some other way than [`run`] sees (a program the caller
    /// spawned itself): its command line, how it ended and what it said.
    pub fn new(command: impl Into<String>, status: impl Into<String>, stderr_tail: &str) -> Self {
        CmdError {
            command: command.into(),
            status: status.into(),
            stderr_tail: tail(stderr_tail, TAIL_LINES),
            code: None,
        }
    }

    /// A command that could not be started.
    pub fn not_started(command: impl Into<String>, error: &std::io::Error) -> Self {
        CmdError::new(command, format!("could not start: {error}"), "")
    }
}

/// The command line as a string, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run `cmd` to completion (stdin empty) and return its stdout; fail with the command line and
/// the stderr tail.
pub fn run(cmd: &mut Command) -> Result<String, CmdError> {
    run_with_timeout(cmd, None)
}

/// [`run`], killing the command when it has not finished after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Option<Duration>) -> Result<String, CmdError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    if timeout.is_some() {
        // Its own process group, so that a timeout also kills what the command started.
        std::os::unix::process::CommandExt::process_group(cmd, 0);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CmdError::not_started(&command, &e))?;
    let stdout = reader_thread(child.stdout.take());
    let stderr = reader_thread(child.stderr.take());
    let status = wait(&mut child, &command, timeout);
    // After a timeout, a grandchild that escaped the group may still hold a pipe: wait briefly.
    let grace = Duration::from_secs(if status.is_err() { 2 } else { 3600 * 24 });
    let out = stdout.recv_timeout(grace).unwrap_or_default();
    let err = stderr.recv_timeout(grace).unwrap_or_default();
    let err_text = String::from_utf8_lossy(&err);
    match status {
        Ok(s) if s.success() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(s) => Err(CmdError {
            code: s.code(),
            ..CmdError::new(command, s.to_string(), &err_text)
        }),
        Err(status) => Err(CmdError::new(command, status, &err_text)),
    }
}

/// Read a pipe to its end on a thread, so that neither pipe can fill up and block the child.
fn reader_thread<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Wait for `child`, killing it after `timeout`; the error is the status text.
fn wait(child: &mut Child, command: &str, timeout: Option<Duration>) -> Result<ExitStatus, String> {
    let Some(limit) = timeout else {
        return child.wait().map_err(|e| format!("wait failed: {e}"));
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) if started.elapsed() >= limit => {
                tracing::warn!(%command, ?limit, "killing a command that ran out of time");
                // The whole group (see run_with_timeout); `kill` avoids unsafe libc calls.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    }
}

/// Run `cmd`, handing each line of its stderr to `on_line` as it comes (for progress); fail
/// with the command line and the tail of its stdout and stderr.
pub fn run_streaming(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<(), CmdError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CmdError::not_started(&command, &e))?;
    let stdout = reader_thread(child.stdout.take());
    let mut tail_lines: Vec<String> = Vec::new();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            on_line(&l);
            tail_lines.push(l);
            if tail_lines.len() > 4 * TAIL_LINES {
                tail_lines.drain(..2 * TAIL_LINES);
            }
        }
    }
    let out = stdout.recv().unwrap_or_default();
    let status = child
        .wait()
        .map_err(|e| CmdError::new(&command, format!("wait failed: {e}"), ""))?;
    if !status.success() {
        let mut all: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect();
        all.extend(tail_lines);
        return Err(CmdError {
            code: status.code(),
            ..CmdError::new(command, status.to_string(), &all.join("\n"))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn failure_names_command_and_stderr_tail() {
        let err =
            run(Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("two"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert_eq!(err.code, Some(3));
    }

    #[test]
    fn success_returns_stdout() {
        let out = run(Command::new("sh").args(["-c", "echo hi; echo noise >&2"])).unwrap();
        assert_eq!(out, "hi\n");
    }

    #[test]
    fn timeout_kills_the_command() {
        let err = run_with_timeout(
            Command::new("sh").args(["-c", "echo started >&2; sleep 30"]),
            Some(Duration::from_millis(200)),
        )
        .unwrap_err();
        assert!(err.status.contains("timed out"), "{err}");
        assert!(err.stderr_tail.contains("started"), "{err}");
        assert_eq!(err.code, None);
    }

    #[test]
    fn streaming_sees_lines_and_reports_failures() {
        let mut seen = Vec::new();
        run_streaming(
            Command::new("sh").args(["-c", "echo a >&2; echo b >&2"]),
            |l| seen.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(seen, ["a", "b"]);
        let err = run_streaming(
            Command::new("sh").args(["-c", "echo out; echo bad >&2; exit 1"]),
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
        assert!(err.to_string().contains("out"), "{err}");
    }

    #[test]
    fn missing_program_is_reported() {
        let err = run(&mut Command::new("/nonexistent/keelson-tool")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/keelson-tool"),
            "{err}"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
