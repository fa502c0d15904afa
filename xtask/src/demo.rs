//! `cargo xtask demo`: the main job. Until the full demo exists it runs what exists and says
//! what is still missing.

use anyhow::Result;

use crate::{deps, util};

pub fn run() -> Result<()> {
    deps::run(false)?;
    util::step("building keelson");
    util::run(util::cargo().args(["build", "--release", "-p", "keelson"]))?;
    eprintln!("demo: nothing to show yet");
    Ok(())
}
