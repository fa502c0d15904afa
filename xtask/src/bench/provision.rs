//! `cargo xtask bench provision`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("bench provision is not written yet")
}
