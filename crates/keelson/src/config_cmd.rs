//! `keelson config ...` (owned by the config work; replace this placeholder).

use std::process::ExitCode;

use clap::Subcommand;

/// Subcommands of `keelson config`.
#[derive(Subcommand)]
pub enum ConfigCommand {}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
