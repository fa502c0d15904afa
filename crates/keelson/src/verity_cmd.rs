//! `keelson verity ...` (owned by the verity work; replace this placeholder).

use std::process::ExitCode;

use clap::Subcommand;

/// Subcommands of `keelson verity`.
#[derive(Subcommand)]
pub enum VerityCommand {}

pub fn run(cmd: VerityCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
