//! `keelson image ...` (owned by the image work; replace this placeholder).

use std::process::ExitCode;

use clap::Subcommand;

/// Subcommands of `keelson image`.
#[derive(Subcommand)]
pub enum ImageCommand {}

pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
