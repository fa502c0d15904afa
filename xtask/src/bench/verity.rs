//! `cargo xtask bench verity`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("bench verity is not written yet")
}
