//! `cargo xtask bench image`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("bench image is not written yet")
}
