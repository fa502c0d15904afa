//! `ignition.version` detection and the forward translation 3.N -> 3.6.0.

use crate::report::{Kind, Report};
use crate::tree::{Node, Value};
use crate::v3_6::Config;

/// The newest spec this crate understands.
pub const MAX_MINOR: u32 = 6;

/// A supported spec version 3.`minor`.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Minor version, 0..=6.
    pub minor: u32,
}

/// Parse a semver string; `None` when it is not semver.
fn semver(s: &str) -> Option<(u64, u64, u64, Option<&str>)> {
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    let core = core.split('+').next().unwrap_or(core);
    let mut it = core.split('.');
    let mut num = || -> Option<u64> {
        let p = it.next()?;
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        p.parse().ok()
    };
    let (a, b, c) = (num()?, num()?, num()?);
    if it.next().is_some() || pre.is_some_and(str::is_empty) {
        return None;
    }
    Some((a, b, c, pre))
}

/// Find and check `ignition.version`; adds Ignition's stable error on failure.
pub fn detect(root: &Node, report: &mut Report) -> Option<Version> {
    if !matches!(root.value, Value::Object(_)) {
        report.add(
            Kind::Error,
            "$",
            Some(root.pos),
            format!(
                "cannot unmarshal {} into a field of type object",
                root.value.type_name()
            ),
        );
        return None;
    }
    let Some(ign) = root.get("ignition") else {
        report.add(
            Kind::Error,
            "$.ignition.version",
            Some(root.pos),
            "invalid config version (couldn't parse)",
        );
        return None;
    };
    let Some(v) = ign.get("version") else {
        report.add(
            Kind::Error,
            "$.ignition.version",
            Some(ign.pos),
            "invalid config version (couldn't parse)",
        );
        return None;
    };
    let Some(s) = v.as_str() else {
        report.add(
            Kind::Error,
            "$.ignition.version",
            Some(v.pos),
            "invalid config version (couldn't parse)",
        );
        return None;
    };
    match semver(s) {
        None => {
            report.add(
                Kind::Error,
                "$.ignition.version",
                Some(v.pos),
                "invalid config version (couldn't parse)",
            );
            None
        }
        // Only final releases 3.0.0..3.6.0: experimental specs are not supported.
        Some((3, minor, 0, None)) if minor <= u64::from(MAX_MINOR) => Some(Version {
            #[allow(clippy::cast_possible_truncation)]
            minor: minor as u32,
        }),
        Some(_) => {
            report.add(
                Kind::Error,
                "$.ignition.version",
                Some(v.pos),
                "unsupported config version",
            );
            None
        }
    }
}

/// Translate a config parsed under spec 3.`minor` to 3.6.0.
///
/// Fields are a superset in every step, so the only semantic change is 3.6's special mode
/// bits: older specs ignore setuid/setgid/sticky, so they are cleared (validation warned).
pub fn translate_forward(cfg: &mut Config, minor: u32) {
    if minor < 6 {
        for f in &mut cfg.storage.files {
            if let Some(m) = f.mode.as_mut() {
                *m &= 0o777;
            }
        }
        for d in &mut cfg.storage.directories {
            if let Some(m) = d.mode.as_mut() {
                *m &= 0o777;
            }
        }
    }
    cfg.ignition.version = "3.6.0".into();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn semver_table() {
        type Triple = Option<(u64, u64, u64)>;
        let cases: &[(&str, Triple)] = &[
            ("3.0.0", Some((3, 0, 0))),
            ("3.6.0", Some((3, 6, 0))),
            ("3.7.0-experimental", Some((3, 7, 0))),
            ("3.1", None),
            ("v3.1.0", None),
            ("03.1.0", None),
            ("3.1.0.0", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(semver(s).map(|(a, b, c, _)| (a, b, c)), *want, "{s}");
        }
    }
}
