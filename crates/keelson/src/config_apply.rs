//! `keelson config apply` (owned by the provisioning apply work; replace this placeholder).

use std::process::ExitCode;

use clap::Args;

/// Arguments of `keelson config apply`.
#[derive(Args)]
pub struct ApplyArgs {}

pub fn run(_args: ApplyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("keelson config apply is not written yet")
}
