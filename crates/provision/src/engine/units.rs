//! systemd units in the files stage: contents and drop-ins under `/etc/systemd/system`,
//! `mask` as a symlink to `/dev/null`, `enabled` as lines of
//! `/etc/systemd/system-preset/20-ignition.preset` (the file name Ignition uses, so
//! Flatcar-style images that already order presets around it behave the same).

use std::collections::BTreeMap;

use keelson_config::Config;

use super::files::{Base, Op, Planner};
use super::{ApplyError, NodeKind};

/// Where unit files go.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Preset file that carries `enabled`.
pub const PRESET_FILE: &str = "/etc/systemd/system-preset/20-ignition.preset";

const SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

fn check_unit_name(name: &str) -> Result<(), ApplyError> {
    let bad = |reason: &str| ApplyError::Invalid {
        field: format!("systemd.units {name}: name"),
        reason: reason.into(),
    };
    if name.contains('/') || name.is_empty() || name.starts_with('.') {
        return Err(bad("must be a plain file name"));
    }
    if !SUFFIXES
        .iter()
        .any(|s| name.ends_with(s) && name.len() > s.len())
    {
        return Err(bad("invalid unit suffix"));
    }
    Ok(())
}

fn has_install_section(contents: &str) -> bool {
    contents.lines().any(|l| l.trim() == "[Install]")
}

/// `foo@bar.service` -> (`foo@.service`, Some("bar")).
fn split_instance(name: &str) -> (String, Option<String>) {
    if let Some((base, rest)) = name.split_once('@')
        && let Some(dot) = rest.rfind('.')
        && dot > 0
    {
        return (
            format!("{base}@{}", &rest[dot..]),
            Some(rest[..dot].to_string()),
        );
    }
    (name.to_string(), None)
}

impl Planner<'_> {
    pub(crate) fn plan_units(&mut self, config: &Config) -> Result<(), ApplyError> {
        // enable/disable lines, grouped per template as Ignition writes them.
        let mut presets: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
        let mut order: Vec<(String, bool)> = Vec::new();
        for u in &config.systemd.units {
            check_unit_name(&u.name)?;
            let path = format!("{UNIT_DIR}/{}", u.name);
            let host = self.target.resolve(&path)?;
            if let Some(contents) = &u.contents {
                let staged = self.stage_bytes(contents.as_bytes())?;
                let action = if host.exists() {
                    "overwrite unit"
                } else {
                    "create unit"
                };
                self.parents(&host)?;
                self.outcome.push(
                    &path,
                    NodeKind::File,
                    format!("{action}, {} bytes, mode 0644", contents.len()),
                );
                self.planned.insert(host.clone());
                self.ops.push(Op::WriteFile {
                    host: host.clone(),
                    base: Base::Staged(staged),
                    appends: vec![],
                    mode: Some(0o644),
                    owner: (0, 0),
                    replace: true,
                });
                if u.enabled == Some(true) && !has_install_section(contents) {
                    self.outcome.warnings.push(format!(
                        "unit {} is enabled, but has no install section so enable does nothing",
                        u.name
                    ));
                }
            }
            for d in &u.dropins {
                if !d.name.ends_with(".conf") || d.name.contains('/') {
                    return Err(ApplyError::Invalid {
                        field: format!("systemd.units {}: dropins {}", u.name, d.name),
                        reason: "drop-in name must be a file name ending in .conf".into(),
                    });
                }
                let Some(contents) = &d.contents else {
                    continue;
                };
                let dpath = format!("{UNIT_DIR}/{}.d/{}", u.name, d.name);
                let dhost = self.target.resolve(&dpath)?;
                let staged = self.stage_bytes(contents.as_bytes())?;
                self.parents(&dhost)?;
                self.outcome.push(
                    &dpath,
                    NodeKind::File,
                    format!(
                        "{} drop-in, {} bytes",
                        if dhost.exists() {
                            "overwrite"
                        } else {
                            "create"
                        },
                        contents.len()
                    ),
                );
                self.planned.insert(dhost.clone());
                self.ops.push(Op::WriteFile {
                    host: dhost,
                    base: Base::Staged(staged),
                    appends: vec![],
                    mode: Some(0o644),
                    owner: (0, 0),
                    replace: true,
                });
            }
            match u.mask {
                Some(true) => {
                    if u.contents.is_some() {
                        return Err(ApplyError::Invalid {
                            field: format!("systemd.units {}", u.name),
                            reason: "a masked unit cannot also have contents".into(),
                        });
                    }
                    self.parents(&host)?;
                    self.outcome
                        .push(&path, NodeKind::Symlink, "mask -> /dev/null");
                    self.planned.insert(host.clone());
                    self.ops.push(Op::Symlink {
                        host: host.clone(),
                        target: "/dev/null".into(),
                        owner: None,
                        replace: true,
                    });
                }
                Some(false)
                    if std::fs::read_link(&host)
                        .is_ok_and(|t| t == std::path::Path::new("/dev/null")) =>
                {
                    self.outcome.push(
                        &path,
                        NodeKind::Symlink,
                        "unmask (remove link to /dev/null)",
                    );
                    self.ops.push(Op::Remove { host: host.clone() });
                }
                Some(false) => {}
                None => {}
            }
            if let Some(enable) = u.enabled {
                let (template, instance) = split_instance(&u.name);
                let key = (template, enable);
                if !presets.contains_key(&key) {
                    order.push(key.clone());
                }
                let list = presets.entry(key).or_default();
                if let Some(i) = instance {
                    list.push(i);
                }
                if !enable {
                    self.plan_disable_links(&u.name)?;
                }
            }
        }
        if order.is_empty() {
            return Ok(());
        }
        let host = self.target.resolve(PRESET_FILE)?;
        let mut text = std::fs::read_to_string(&host).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let mut added = Vec::new();
        for key in order {
            let instances = presets.get(&key).cloned().unwrap_or_default();
            let (unit, enable) = key;
            let verb = if enable { "enable" } else { "disable" };
            let line = if instances.is_empty() {
                format!("{verb} {unit}")
            } else {
                format!("{verb} {unit} {}", instances.join(" "))
            };
            if !text.lines().any(|l| l == line) {
                text.push_str(&line);
                text.push('\n');
                added.push(line);
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        let staged = self.stage_bytes(text.as_bytes())?;
        self.parents(&host)?;
        self.outcome.push(
            PRESET_FILE,
            NodeKind::File,
            format!("preset: {}", added.join(", ")),
        );
        self.planned.insert(host.clone());
        self.ops.push(Op::WriteFile {
            host,
            base: Base::Staged(staged),
            appends: vec![],
            mode: Some(0o644),
            owner: (0, 0),
            replace: true,
        });
        Ok(())
    }

    /// `systemctl disable` removes the unit's links from `*.wants`/`*.requires`/`*.upholds`.
    fn plan_disable_links(&mut self, unit: &str) -> Result<(), ApplyError> {
        let dir = self.target.resolve(UNIT_DIR)?;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut found = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".wants")
                || name.ends_with(".requires")
                || name.ends_with(".upholds"))
            {
                continue;
            }
            let link = e.path().join(unit);
            if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
                found.push(link);
            }
        }
        found.sort();
        for link in found {
            self.outcome
                .push(self.show(&link), NodeKind::Symlink, "remove (disable)");
            self.ops.push(Op::Remove { host: link });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_split() {
        assert_eq!(
            split_instance("getty@tty1.service"),
            ("getty@.service".into(), Some("tty1".into()))
        );
        assert_eq!(
            split_instance("foo@.service"),
            ("foo@.service".into(), None)
        );
        assert_eq!(
            split_instance("plain.service"),
            ("plain.service".into(), None)
        );
    }

    #[test]
    fn unit_names() {
        for ok in ["a.service", "x@y.timer", "-.mount", "var-lib.mount"] {
            assert!(check_unit_name(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "a.serv", ".service", "a/b.service", ""] {
            assert!(check_unit_name(bad).is_err(), "{bad}");
        }
    }
}
