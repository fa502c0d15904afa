//! `cargo xtask bench fleet`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("bench fleet is not written yet")
}
