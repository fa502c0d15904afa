//! `keelson`: the SDK and admin CLI. Argument parsing only; the work lives in the library crates.

mod admin_cmd;
mod config_apply;
mod config_cmd;
mod disk_cmd;
mod image_cmd;
mod key_cmd;
mod payload_cmd;
mod sysext_cmd;
mod verity_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "Keelson: build, provision and update an image-based container OS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// dm-verity hash trees (compatible with veritysetup).
    #[command(subcommand)]
    Verity(verity_cmd::VerityCommand),
    /// GPT disk images and A/B slots.
    #[command(subcommand)]
    Disk(disk_cmd::DiskCommand),
    /// Build and run OS images.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Provisioning configs: validate, translate, apply.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Administer a keelson-server over its REST API.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCommand),
    /// Signed release payloads: build, sign, verify, inspect.
    #[command(subcommand)]
    Payload(payload_cmd::PayloadCommand),
    /// Signing keys for release payloads.
    #[command(subcommand)]
    Key(key_cmd::KeyCommand),
    /// System extensions: build, check, sign, publish.
    #[command(subcommand)]
    Sysext(sysext_cmd::SysextCommand),
}

fn main() -> ExitCode {
    keelson_log::init(keelson_log::Style::default());
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verity(c) => verity_cmd::run(c),
        Command::Disk(c) => disk_cmd::run(c),
        Command::Image(c) => image_cmd::run(c),
        Command::Config(c) => config_cmd::run(c),
        Command::Admin(c) => admin_cmd::run(c),
        Command::Payload(c) => payload_cmd::run(c),
        Command::Key(c) => key_cmd::run(c),
        Command::Sysext(c) => sysext_cmd::run(c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
