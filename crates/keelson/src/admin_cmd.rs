//! `keelson admin ...` (owned by the admin work; replace this placeholder).

use std::process::ExitCode;

use clap::Subcommand;

/// Subcommands of `keelson admin`.
#[derive(Subcommand)]
pub enum AdminCommand {}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
