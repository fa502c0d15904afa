//! `keelson disk ...` (owned by the disk work; replace this placeholder).

use std::process::ExitCode;

use clap::Subcommand;

/// Subcommands of `keelson disk`.
#[derive(Subcommand)]
pub enum DiskCommand {}

pub fn run(cmd: DiskCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
