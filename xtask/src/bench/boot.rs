//! `cargo xtask bench boot`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("bench boot is not written yet")
}
