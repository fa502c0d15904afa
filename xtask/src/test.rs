//! `cargo xtask test`: the whole suite, the same locally and in CI.

use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::{deps, postgres::Postgres, util};

/// Port of the throwaway PostgreSQL cluster used by tests. Below Linux's ephemeral range
/// (32768-60999 by default): a port in it can be the source port of any outgoing connection,
/// and one in TIME_WAIT on 55432 (a test's client connection) kept PostgreSQL from binding.
pub const TEST_PG_PORT: u16 = 25432;

#[derive(Args)]
pub struct TestArgs {
    /// Skip fmt and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Skip the VM tests (they build an image and boot it under QEMU).
    #[arg(long, conflicts_with = "vm_only")]
    no_vm: bool,
    /// Only the VM tests (after a `--no-vm` run, or to re-run them alone).
    #[arg(long)]
    vm_only: bool,
    /// Only these VM test files of crates/image/tests (`vm`, `vm_provision`, `vm_update`);
    /// repeatable. Without it, all of them.
    #[arg(long = "vm-test", value_name = "FILE")]
    vm_tests: Vec<String>,
}

pub fn run(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    deps::run(false)?;
    if args.vm_only {
        crate::vm::run_tests(&args.vm_tests)?;
        eprintln!("\nVM tests passed in {:.0?}", started.elapsed());
        return Ok(());
    }
    if !args.no_lint {
        util::step("cargo fmt --check");
        util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
        util::step("cargo clippy");
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }

    util::step("PostgreSQL for the server tests");
    let pg = Postgres::start(TEST_PG_PORT)?;
    eprintln!("PostgreSQL at {}", pg.url);

    util::step("unit and integration tests");
    util::run(
        util::cargo()
            .args(["test", "--workspace", "--all-targets"])
            .env("KEELSON_TEST_POSTGRES_URL", &pg.url),
    )?;
    util::run(util::cargo().args(["test", "--workspace", "--doc"]))?;
    drop(pg);

    if !args.no_vm {
        crate::vm::run_tests(&args.vm_tests)?;
    }
    eprintln!("\nall tests passed in {:.0?}", started.elapsed());
    Ok(())
}
