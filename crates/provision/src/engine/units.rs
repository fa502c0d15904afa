//! systemd units in the files stage: contents and drop-ins under `/etc/systemd/system`,
//! `mask` as a symlink to `/dev/null`, `enabled` as lines of
//! `/etc/systemd/system-preset/20-ignition.preset` (the file name Ignition uses, so
//! Flatcar-style images that already order presets around it behave the same).
//!
//! systemd applies presets only on its own first boot (`/etc/machine-id` missing or
//! `uninitialized`), which a Keelson image is not, and which would also enable every unit
//! Debian leaves disabled. So `enabled: true` also creates the unit's `[Install]` links
//! (`WantedBy=`, `RequiredBy=`, `UpheldBy=`) the way `systemctl enable --root` does, and
//! `enabled: false` removes them: the unit is enabled on the first boot, whatever the image.

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
        let mut enable_units: Vec<(&str, Option<&str>)> = Vec::new();
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
                if enable {
                    enable_units.push((u.name.as_str(), u.contents.as_deref()));
                } else {
                    self.plan_disable_links(&u.name)?;
                }
            }
        }
        for (name, contents) in enable_units {
            self.plan_enable_links(name, contents)?;
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

    /// `systemctl enable`: a link in `<target>.wants/` (`.requires/`, `.upholds/`) for each
    /// target of the unit's `[Install]` section. The unit file is the config's contents or,
    /// without them, the first one found in the target's unit directories; a unit found
    /// nowhere keeps only its preset line.
    fn plan_enable_links(&mut self, name: &str, contents: Option<&str>) -> Result<(), ApplyError> {
        let (template, instance) = split_instance(name);
        let found = match contents {
            Some(c) => Some((format!("{UNIT_DIR}/{name}"), c.to_string())),
            None => self.find_unit_file(name, &template),
        };
        let Some((unit_path, text)) = found else {
            return Ok(());
        };
        let install = InstallSection::parse(&text);
        // A template enabled without an instance uses DefaultInstance=, as systemctl does.
        let link_name = match (&instance, &install.default_instance) {
            (Some(_), _) => name.to_string(),
            (None, Some(def)) if template.contains("@.") => {
                template.replacen("@.", &format!("@{def}."), 1)
            }
            (None, None) if template.contains("@.") => return Ok(()),
            _ => name.to_string(),
        };
        for (dir_suffix, targets) in [
            ("wants", &install.wanted_by),
            ("requires", &install.required_by),
            ("upholds", &install.upheld_by),
        ] {
            for t in targets {
                let link = format!("{UNIT_DIR}/{t}.{dir_suffix}/{link_name}");
                let host = self.target.resolve(&link)?;
                if self.planned.contains(&host) || std::fs::symlink_metadata(&host).is_ok() {
                    continue;
                }
                self.parents(&host)?;
                self.outcome
                    .push(&link, NodeKind::Symlink, format!("enable -> {unit_path}"));
                self.planned.insert(host.clone());
                self.ops.push(Op::Symlink {
                    host,
                    target: unit_path.clone(),
                    owner: None,
                    replace: false,
                });
            }
        }
        Ok(())
    }

    /// The unit file of `name` (or its template) in the target, as systemd searches.
    fn find_unit_file(&self, name: &str, template: &str) -> Option<(String, String)> {
        for dir in [UNIT_DIR, "/usr/lib/systemd/system", "/lib/systemd/system"] {
            for candidate in [name, template] {
                let path = format!("{dir}/{candidate}");
                let Ok(host) = self.target.resolve(&path) else {
                    continue;
                };
                if let Ok(text) = std::fs::read_to_string(&host) {
                    return Some((path, text));
                }
            }
        }
        None
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

/// The parts of a unit's `[Install]` section that `systemctl enable` turns into links.
#[derive(Debug, Default, PartialEq)]
struct InstallSection {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    upheld_by: Vec<String>,
    default_instance: Option<String>,
}

impl InstallSection {
    fn parse(unit: &str) -> InstallSection {
        let mut out = InstallSection::default();
        let mut in_install = false;
        for line in unit.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_install = line == "[Install]";
                continue;
            }
            if !in_install || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let list = match key.trim() {
                "WantedBy" => &mut out.wanted_by,
                "RequiredBy" => &mut out.required_by,
                "UpheldBy" => &mut out.upheld_by,
                "DefaultInstance" => {
                    out.default_instance = Some(value.trim().to_string()).filter(|v| !v.is_empty());
                    continue;
                }
                _ => continue,
            };
            // An empty assignment resets the list, as in systemd's unit file syntax.
            if value.trim().is_empty() {
                list.clear();
            }
            list.extend(value.split_whitespace().map(str::to_string));
        }
        out
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
    fn install_section() {
        let unit = "[Unit]\nWantedBy=not-here.target\n[Install]\nWantedBy=multi-user.target\n\
                    WantedBy=a.target b.target\nRequiredBy=c.target\n# UpheldBy=x.target\n\
                    DefaultInstance=tty1\n[X-Other]\nWantedBy=nope.target\n";
        let s = InstallSection::parse(unit);
        assert_eq!(s.wanted_by, ["multi-user.target", "a.target", "b.target"]);
        assert_eq!(s.required_by, ["c.target"]);
        assert!(s.upheld_by.is_empty());
        assert_eq!(s.default_instance.as_deref(), Some("tty1"));
        let reset =
            InstallSection::parse("[Install]\nWantedBy=a.target\nWantedBy=\nWantedBy=b.target\n");
        assert_eq!(reset.wanted_by, ["b.target"]);
        assert_eq!(
            InstallSection::parse("[Service]\nExecStart=/bin/true\n"),
            InstallSection::default()
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
