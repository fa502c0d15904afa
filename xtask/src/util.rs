//! Workspace paths, step headers and running commands: the subprocess runner is
//! `keelson-cmd` (command line and stderr tail in every error); only cargo, QEMU and other
//! long steps whose output the developer watches run with inherited stdio, and their failures
//! still name the command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keelson_cmd::describe;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Work from the workspace root so relative paths in commands mean the same everywhere.
pub fn cd_workspace_root() -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))
}

/// Print a step header the way the rest of xtask does.
pub fn step(msg: &str) {
    eprintln!("\n==> {msg}");
}

/// Run a command with inherited stdio; fail with its command line if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("$ {line}");
    let status = cmd.status().with_context(|| format!("starting `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// Run a command with its stdout and stderr appended to `log`; fail with its command line if
/// it exits non-zero.
pub fn run_logged(cmd: &mut Command, log: &std::fs::File) -> Result<()> {
    let line = describe(cmd);
    let status = cmd
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .status()
        .with_context(|| format!("starting `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// Run a command and capture stdout (`keelson_cmd::run`); on failure the error carries the
/// command line and the stderr tail.
pub fn output(cmd: &mut Command) -> Result<String> {
    Ok(keelson_cmd::run(cmd)?)
}

/// [`output`], killing the command after `timeout` (for tools that could hang: a stuck
/// `pg_ctl stop`, a server that does not answer).
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<String> {
    Ok(keelson_cmd::run_with_timeout(cmd, Some(timeout))?)
}

/// Is `prog` on PATH?
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// `cargo` as invoked by the user (respects `$CARGO`).
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}
