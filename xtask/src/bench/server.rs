//! `cargo xtask bench server`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("bench server is not written yet")
}
