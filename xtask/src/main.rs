//! `cargo xtask`: host dependencies, the test suite, image builds, benchmarks and the demo.
//!
//! Everything a developer or CI runs goes through here, so that a fresh Debian machine needs
//! exactly two commands: `cargo xtask demo` and `cargo xtask test`.

mod bench;
mod demo;
mod deps;
mod postgres;
mod test;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Keelson developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the Debian host packages Keelson needs (idempotent).
    Deps {
        /// Only report what is missing; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Run every check: fmt, clippy, unit and integration tests, VM tests.
    Test(test::TestArgs),
    /// The main job: the talk's demos (provisioning, update and rollback, extensions) on
    /// this machine, then the server and the node stay up until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Benchmarks, each printed next to its peer or physical limit.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    util::cd_workspace_root()?;
    match cli.command {
        Command::Deps { check } => deps::run(check),
        Command::Test(args) => test::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
