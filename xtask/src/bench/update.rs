//! `cargo xtask bench update`, part 1: the agent's apply throughput next to a raw copy plus
//! sha256 of the same uncompressed bytes, measured in one run by the `apply` bench target of
//! keelson-agent (`crates/agent/benches/apply.rs`, release profile).
//!
//! Input: the usr erofs, verity tree and UKI of the latest image build when
//! `target/vm/<name>_<version>.usr.erofs` exists (or in `KEELSON_BENCH_IMAGE_DIR`), else a
//! generated 256 MiB usr of realistic compressibility. `KEELSON_BENCH_RUNS=N` times each
//! measurement N times (medians). Part 2, the update's downtime from the reboot to the app
//! answering next to a plain reboot, needs a VM and is not measured here yet.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util;

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let runs: usize = match std::env::var("KEELSON_BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("KEELSON_BENCH_RUNS={v:?} is not a number"))?,
        Err(_) => 1,
    };
    let image_dir = std::env::var_os("KEELSON_BENCH_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/vm"));
    let has_usr = std::fs::read_dir(&image_dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.contains('_') && n.ends_with(".usr.erofs"))
        })
    });
    let work = root.join("target/bench/update");
    let mut args = vec![
        "bench".to_string(),
        "-p".into(),
        "keelson-agent".into(),
        "--bench".into(),
        "apply".into(),
        "--".into(),
        "--work".into(),
        work.to_string_lossy().into_owned(),
        "--runs".into(),
        runs.to_string(),
    ];
    if has_usr {
        args.push("--image-dir".into());
        args.push(image_dir.to_string_lossy().into_owned());
    } else {
        eprintln!(
            "no <name>_<version>.usr.erofs in {}: generating a 256 MiB usr instead",
            image_dir.display()
        );
    }
    util::step("bench update: agent apply next to a raw copy plus sha256");
    util::run(util::cargo().args(&args)).context("running the apply bench of keelson-agent")?;
    println!(
        "  downtime (reboot into the update -> app answering, next to a plain reboot): \
         not measured by this bench yet (part 2 of issue #10 point 8, needs a VM)"
    );
    Ok(())
}
