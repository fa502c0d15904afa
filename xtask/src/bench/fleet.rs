//! `cargo xtask bench fleet`: 100,000 simulated nodes taken through a staged rollout
//! (waves of 1%, 10%, 50%, 100%) to the end against a real keelson-server on SQLite.
//!
//! `keelson-loadgen fleet` plays every node's update_engine cycle (check, download and install
//! events, reboot, first check on the new version), raises the group's wave through the REST
//! API when a wave is done, and at the end reads the server's record of every instance and
//! fails unless each node's final version (and `complete` status) agrees with it, and unless
//! no node outside a wave was ever updated in it. The nodes run on core 1; the server is not
//! pinned.

use std::time::Instant;

use anyhow::{Context, Result};

use super::server::{
    Spawned, admin_token, build_release, free_addr, json_number, loadgen, require_tools, tempdir,
};
use crate::util;

/// Simulated nodes.
const NODES: usize = 100_000;

pub fn run() -> Result<()> {
    util::cd_workspace_root()?;
    require_tools()?;
    let bins = build_release()?;
    let work = tempdir("keelson-bench-fleet")?;
    let db_url = format!("sqlite://{}", work.join("fleet.db").display());
    let token = admin_token(&bins, &db_url)?;
    let addr = free_addr()?;
    let data_dir = work.join("data");
    // Unpinned: this bench reports the time a rollout takes, not per-core throughput.
    let server = Spawned::start(
        std::process::Command::new(&bins.server)
            .args(["--database-url", &db_url, "--listen", &addr, "--data-dir"])
            .arg(&data_dir)
            .env("RUST_LOG", "warn"),
        "keelson-server",
        &addr,
    )?;
    util::run(loadgen(&bins, &addr).args([
        "setup",
        "--token",
        &token,
        "--versions",
        "1.0.0",
        "2.0.0",
        "--rollout-percent",
        "0",
    ]))?;

    util::step(&format!(
        "{NODES} nodes through waves of 1%, 10%, 50%, 100%"
    ));
    let started = Instant::now();
    let out = util::output(loadgen(&bins, &addr).args([
        "fleet",
        "--token",
        &token,
        "--machines",
        &NODES.to_string(),
        "--concurrency",
        "64",
        "--from",
        "1.0.0",
        "--to",
        "2.0.0",
        "--waves",
        "1",
        "10",
        "50",
        "100",
        "--max-seconds",
        "2700",
        "--json",
    ]))
    .context("running the fleet (the error above lists nodes the server disagrees about)")?;
    let wall = started.elapsed().as_secs_f64();
    drop(server);
    let _ = std::fs::remove_dir_all(&work);

    let line = out.lines().last().unwrap_or_default();
    let num = |k: &str| json_number(line, k).unwrap_or(f64::NAN);
    println!();
    println!(
        "{NODES} nodes, staged rollout 1.0.0 → 2.0.0 in 4 waves: {:.1}s \
         ({:.0} Omaha requests, {:.0}/s); {:.0} nodes updated, server agrees on {:.0}",
        num("seconds"),
        num("omaha_requests"),
        num("omaha_requests") / num("seconds"),
        num("updated"),
        num("server_agrees"),
    );
    println!("(wall time including the final comparison: {wall:.1}s)");
    Ok(())
}
