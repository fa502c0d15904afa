//! Running the build's external tools: every failure names the command line and the tail of
//! its stderr.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::ImageError;

/// How many stderr lines a failure keeps.
const TAIL_LINES: usize = 25;

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

/// Run `cmd` to completion and return its stdout; fail with command line and stderr tail.
pub fn run(cmd: &mut Command) -> Result<String, ImageError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::Command {
            command: command.clone(),
            status: format!("could not start: {e}"),
            stderr_tail: String::new(),
        })?;
    if !out.status.success() {
        return Err(ImageError::Command {
            command,
            status: out.status.to_string(),
            stderr_tail: tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `cmd`, handing each line of its stderr (and stdout) to `on_line` as it comes, for
/// progress; fail with the command line and the output tail.
pub fn run_streaming(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<(), ImageError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Command {
            command: command.clone(),
            status: format!("could not start: {e}"),
            stderr_tail: String::new(),
        })?;
    // stdout goes to a thread so neither pipe can fill up and block the child.
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(s) = stdout {
            for l in BufReader::new(s).lines().map_while(Result::ok) {
                lines.push(l);
            }
        }
        lines
    });
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
    let out_lines = out_thread.join().unwrap_or_default();
    let status = child.wait().map_err(|e| ImageError::Command {
        command: command.clone(),
        status: format!("wait failed: {e}"),
        stderr_tail: String::new(),
    })?;
    if !status.success() {
        let mut all = out_lines;
        all.extend(tail_lines);
        return Err(ImageError::Command {
            command,
            status: status.to_string(),
            stderr_tail: tail(&all.join("\n"), TAIL_LINES),
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
