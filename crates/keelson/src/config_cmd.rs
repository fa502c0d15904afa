//! `keelson config ...`: validate and translate (config work) and apply (provisioning work,
//! in `config_apply.rs`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::config_apply;

/// Subcommands of `keelson config`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Apply a config to a target root directory.
    Apply(config_apply::ApplyArgs),
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Apply(args) => config_apply::run(args),
    }
}
