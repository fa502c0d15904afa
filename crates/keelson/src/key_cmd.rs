//! `keelson key generate`: an ed25519 key pair for signing release payloads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use keelson_payload::{GeneratedKey, generate_key};

/// Subcommands of `keelson key`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate an ed25519 key pair: NAME.key (private, PKCS#8 PEM, mode 0600) and NAME.pem
    /// (public, SPKI PEM, for the trusted key directory).
    Generate(GenerateArgs),
}

/// `keelson key generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Directory to write the two files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the files.
    #[arg(long, default_value = "keelson-release")]
    name: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Generate(a) => generate(a),
    }
}

fn render(k: &GeneratedKey, json: bool) -> anyhow::Result<String> {
    if json {
        let mut s = serde_json::to_string_pretty(k).context("serializing the key report")?;
        s.push('\n');
        return Ok(s);
    }
    Ok(format!(
        "private key: {}\npublic key:  {}\nkey id:      {}\n",
        k.private.display(),
        k.public.display(),
        k.key_id
    ))
}

fn generate(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let k = generate_key(&a.out, &a.name)
        .with_context(|| format!("generating key {:?} in {}", a.name, a.out.display()))?;
    crate::payload_cmd::print(&render(&k, a.json)?)?;
    Ok(ExitCode::SUCCESS)
}
