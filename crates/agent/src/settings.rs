//! Settings: OS defaults, Flatcar's `update.conf` keys and provisioning's `update.toml`,
//! merged into one validated [`Settings`] at start. The rest of the agent never reads a
//! settings file.
//!
//! Precedence, lowest first: built-in defaults, `/usr/lib/keelson/update.toml`,
//! `/etc/flatcar/update.conf` (SERVER, GROUP, REBOOT_STRATEGY, LOCKSMITHD_REBOOT_WINDOW_*),
//! `/etc/keelson/update.toml` (what provisioning's `updates:` section writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::paths::Paths;
use crate::window::{MAX_LENGTH_MINUTES, Window};

/// Flatcar's update_engine default app id, which Keelson's server also serves.
pub const DEFAULT_APP_ID: &str = keelson_omaha::FLATCAR_APP_ID;
/// Default group (Omaha `track`).
pub const DEFAULT_GROUP: &str = "stable";
/// Default check interval (update_engine: 45 min).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(45 * 60);

/// A settings file could not be read or holds a bad value; names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file exists but cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and key).
        message: String,
    },
    /// A key has a value the agent cannot use.
    #[error("{path}: {key} = {value:?}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key (`reboot.time_zone`, `SERVER`, ...).
        key: String,
        /// The value found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Where updates come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "url")]
pub enum Server {
    /// The Omaha endpoint URL.
    Url(String),
    /// `disabled`: no checks; the agent still assesses and reports boots.
    Disabled,
}

/// How the node reboots into a staged update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum RebootStrategy {
    /// Reboot as soon as staged, inside a maintenance window if any are set.
    Reboot,
    /// Never reboot by itself; the update waits for the next reboot.
    Off,
    /// Take a FleetLock lock first (`pre-reboot`), release it after a blessed boot
    /// (`steady-state`); see `lock.rs`.
    Fleetlock {
        /// The FleetLock server's base URL.
        url: String,
    },
    /// Take a slot of locksmith's semaphore in etcd v3 first; see `etcd.rs`.
    EtcdLock {
        /// The etcd client URLs, tried in order.
        endpoints: Vec<String>,
    },
}

/// locksmith's default etcd endpoint.
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";

/// The reboot policy: strategy, maintenance windows, the lock's group and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootSettings {
    /// The strategy.
    pub strategy: RebootStrategy,
    /// IANA time zone of windows that name none (and of Flatcar's window).
    pub time_zone: Tz,
    /// Weekly windows, each with its own zone; empty = any time.
    pub windows: Vec<Window>,
    /// The lock group: FleetLock's `group` (default: the update group) or locksmith's group
    /// (default: the empty group, locksmith's own default).
    pub lock_group: Option<String>,
    /// The holder id to use instead of the derived one (FleetLock: Zincati's app-specific
    /// machine id; etcd: the machine id, as locksmith).
    pub lock_id: Option<String>,
}

/// The agent's whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Omaha endpoint or disabled.
    pub server: Server,
    /// The group (Omaha `track`).
    pub group: String,
    /// Omaha app id.
    pub app_id: String,
    /// Time between checks (jitter is added on top).
    pub interval: Duration,
    /// Reboot policy.
    pub reboot: RebootSettings,
    /// The system extensions the agent keeps up to date, by name (`[extensions.NAME]`).
    pub extensions: BTreeMap<String, Extension>,
    /// The files that were read, lowest precedence first.
    pub sources: Vec<PathBuf>,
}

/// How one `[extensions.NAME]` is updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Extension {
    /// `bound = "os"`: the file named `NAME.raw` attached to each OS package, fetched with the
    /// OS update and linked at boot for the running OS version.
    OsBound,
    /// Its own Omaha application on the server, updated without a reboot.
    Independent {
        /// The application id.
        app_id: String,
        /// The group (Omaha `track`); `None` = the OS's group.
        group: Option<String>,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: Server::Disabled,
            group: DEFAULT_GROUP.to_owned(),
            app_id: DEFAULT_APP_ID.to_owned(),
            interval: DEFAULT_INTERVAL,
            reboot: RebootSettings {
                strategy: RebootStrategy::Reboot,
                time_zone: Tz::UTC,
                windows: Vec::new(),
                lock_group: None,
                lock_id: None,
            },
            extensions: BTreeMap::new(),
            sources: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    update: TomlUpdate,
    #[serde(default)]
    reboot: Option<TomlReboot>,
    #[serde(default)]
    extensions: BTreeMap<String, TomlExtension>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlExtension {
    bound: Option<String>,
    app_id: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlUpdate {
    server: Option<String>,
    group: Option<String>,
    app_id: Option<String>,
    interval_minutes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlReboot {
    strategy: Option<String>,
    fleetlock_url: Option<String>,
    etcd_endpoints: Option<Vec<String>>,
    lock_group: Option<String>,
    lock_id: Option<String>,
    time_zone: Option<String>,
    #[serde(default)]
    window: Option<Vec<TomlWindow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlWindow {
    #[serde(default)]
    days: Vec<String>,
    start: String,
    length_minutes: u32,
    time_zone: Option<String>,
}

impl Settings {
    /// Reads and merges every settings file under `paths`; a missing file is skipped.
    pub fn load(paths: &Paths) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        let defaults = paths.defaults_toml();
        if let Some(text) = read_optional(&defaults)? {
            s.apply_toml(&defaults, &text)?;
            s.sources.push(defaults);
        }
        let flatcar = paths.flatcar_update_conf();
        if let Some(text) = read_optional(&flatcar)? {
            s.apply_flatcar(&flatcar, &text)?;
            s.sources.push(flatcar);
        }
        let etc = paths.update_toml();
        if let Some(text) = read_optional(&etc)? {
            s.apply_toml(&etc, &text)?;
            s.sources.push(etc);
        }
        Ok(s)
    }

    /// Whether update checks are on.
    pub fn checks_enabled(&self) -> bool {
        matches!(self.server, Server::Url(_))
    }

    /// Applies one TOML fragment (`update.toml` format) over these settings.
    pub fn apply_toml(&mut self, path: &Path, text: &str) -> Result<(), SettingsError> {
        let file: TomlFile = toml::from_str(text).map_err(|e| SettingsError::Toml {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key: &str, value: &str, reason: &str| SettingsError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(server) = &file.update.server {
            self.server = parse_server(server).map_err(|r| invalid("update.server", server, r))?;
        }
        if let Some(group) = &file.update.group {
            check_token(group).map_err(|r| invalid("update.group", group, r))?;
            self.group = group.clone();
        }
        if let Some(app) = &file.update.app_id {
            check_token(app).map_err(|r| invalid("update.app_id", app, r))?;
            self.app_id = app.clone();
        }
        if let Some(m) = file.update.interval_minutes {
            if m == 0 || m > 7 * 24 * 60 {
                return Err(invalid(
                    "update.interval_minutes",
                    &m.to_string(),
                    "must be between 1 and 10080",
                ));
            }
            self.interval = Duration::from_secs(m * 60);
        }
        for (name, e) in &file.extensions {
            let key = |k: &str| format!("extensions.{name}.{k}");
            if let Some(r) = keelson_api_types::extension_name_problem(name) {
                return Err(invalid(&format!("extensions.{name}"), name, r));
            }
            let ext = match (&e.bound, &e.app_id) {
                (Some(b), _) if b != "os" => {
                    return Err(invalid(&key("bound"), b, "the only binding is \"os\""));
                }
                (Some(_), Some(app)) => {
                    return Err(invalid(
                        &key("app_id"),
                        app,
                        "an OS-bound extension follows the OS package and has no app_id",
                    ));
                }
                (Some(_), None) => {
                    if let Some(g) = &e.group {
                        return Err(invalid(
                            &key("group"),
                            g,
                            "an OS-bound extension follows the OS's group",
                        ));
                    }
                    Extension::OsBound
                }
                (None, None) => {
                    return Err(invalid(
                        &key("app_id"),
                        "",
                        "required for an independent extension (or bound = \"os\")",
                    ));
                }
                (None, Some(app)) => {
                    check_token(app).map_err(|r| invalid(&key("app_id"), app, r))?;
                    if let Some(g) = &e.group {
                        check_token(g).map_err(|r| invalid(&key("group"), g, r))?;
                    }
                    Extension::Independent {
                        app_id: app.clone(),
                        group: e.group.clone(),
                    }
                }
            };
            self.extensions.insert(name.clone(), ext);
        }
        let Some(r) = file.reboot else {
            return Ok(());
        };
        if let Some(tz) = &r.time_zone {
            let old = self.reboot.time_zone;
            self.reboot.time_zone = tz
                .parse()
                .map_err(|_| invalid("reboot.time_zone", tz, "unknown IANA time zone"))?;
            // Windows read earlier in the default zone (Flatcar's) follow the new default.
            for w in &mut self.reboot.windows {
                if w.time_zone == old {
                    w.time_zone = self.reboot.time_zone;
                }
            }
        }
        if let Some(ws) = &r.window {
            let mut windows = Vec::new();
            for (i, w) in ws.iter().enumerate() {
                let key = format!("reboot.window[{i}]");
                let mut days = Vec::new();
                for d in &w.days {
                    days.push(parse_day(d).ok_or_else(|| {
                        invalid(&format!("{key}.days"), d, "not a day name (Mon or Monday)")
                    })?);
                }
                let start = parse_hhmm(&w.start)
                    .ok_or_else(|| invalid(&format!("{key}.start"), &w.start, "must be HH:MM"))?;
                let time_zone = match &w.time_zone {
                    Some(tz) => tz.parse().map_err(|_| {
                        invalid(&format!("{key}.time_zone"), tz, "unknown IANA time zone")
                    })?,
                    None => self.reboot.time_zone,
                };
                if w.length_minutes == 0 || w.length_minutes > MAX_LENGTH_MINUTES {
                    return Err(invalid(
                        &format!("{key}.length_minutes"),
                        &w.length_minutes.to_string(),
                        "must be between 1 and 10080",
                    ));
                }
                windows.push(Window {
                    days,
                    start,
                    length_minutes: w.length_minutes,
                    time_zone,
                });
            }
            self.reboot.windows = windows;
        }
        if let Some(g) = &r.lock_group {
            check_lock_group(g).map_err(|reason| invalid("reboot.lock_group", g, reason))?;
            self.reboot.lock_group = Some(g.clone());
        }
        if let Some(id) = &r.lock_id {
            check_token(id).map_err(|reason| invalid("reboot.lock_id", id, reason))?;
            self.reboot.lock_id = Some(id.clone());
        }
        if let Some(st) = &r.strategy {
            self.reboot.strategy = match st.as_str() {
                "reboot" => RebootStrategy::Reboot,
                "off" => RebootStrategy::Off,
                "fleetlock" => {
                    let url = r.fleetlock_url.clone().ok_or_else(|| {
                        invalid(
                            "reboot.fleetlock_url",
                            "",
                            "required with strategy fleetlock",
                        )
                    })?;
                    check_http_url(&url)
                        .map_err(|reason| invalid("reboot.fleetlock_url", &url, reason))?;
                    RebootStrategy::Fleetlock { url }
                }
                "etcd-lock" => {
                    let endpoints = r
                        .etcd_endpoints
                        .clone()
                        .unwrap_or_else(|| vec![DEFAULT_ETCD_ENDPOINT.to_owned()]);
                    for e in &endpoints {
                        check_http_url(e)
                            .map_err(|reason| invalid("reboot.etcd_endpoints", e, reason))?;
                    }
                    RebootStrategy::EtcdLock { endpoints }
                }
                other => {
                    return Err(invalid(
                        "reboot.strategy",
                        other,
                        "must be one of reboot, off, fleetlock, etcd-lock",
                    ));
                }
            };
        }
        Ok(())
    }

    /// Applies Flatcar's `update.conf` (`KEY=value` lines) over these settings.
    pub fn apply_flatcar(&mut self, path: &Path, text: &str) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: &str, reason: &str| SettingsError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let mut window_start: Option<String> = None;
        let mut window_length: Option<String> = None;
        let mut endpoints: Option<Vec<String>> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(invalid(
                    &format!("line {}", n + 1),
                    line,
                    "expected KEY=value",
                ));
            };
            let key = key.trim();
            let value = unquote(value.trim());
            match key {
                // update_engine: "disabled" (or any invalid URL) stops checks.
                "SERVER" => {
                    self.server = parse_server(value).unwrap_or(Server::Disabled);
                }
                "GROUP" => {
                    check_token(value).map_err(|r| invalid(key, value, r))?;
                    self.group = value.to_owned();
                }
                "REBOOT_STRATEGY" => {
                    self.reboot.strategy = match value {
                        "reboot" | "best-effort" => RebootStrategy::Reboot,
                        "off" => RebootStrategy::Off,
                        "etcd-lock" => RebootStrategy::EtcdLock {
                            endpoints: vec![DEFAULT_ETCD_ENDPOINT.to_owned()],
                        },
                        _ => {
                            return Err(invalid(
                                key,
                                value,
                                "must be one of reboot, best-effort, etcd-lock, off",
                            ));
                        }
                    }
                }
                // locksmith also reads the legacy names without the prefix.
                "LOCKSMITHD_REBOOT_WINDOW_START" | "REBOOT_WINDOW_START" => {
                    window_start = Some(value.to_owned());
                }
                "LOCKSMITHD_REBOOT_WINDOW_LENGTH" | "REBOOT_WINDOW_LENGTH" => {
                    window_length = Some(value.to_owned());
                }
                // locksmith: repeatable flag or a comma list.
                "LOCKSMITHD_ENDPOINT" => {
                    let list: Vec<String> = value
                        .split(',')
                        .map(|e| e.trim().to_owned())
                        .filter(|e| !e.is_empty())
                        .collect();
                    for e in &list {
                        check_http_url(e).map_err(|r| invalid(key, e, r))?;
                    }
                    endpoints = Some(list);
                }
                "LOCKSMITHD_GROUP" => {
                    if !value.is_empty() {
                        check_token(value).map_err(|r| invalid(key, value, r))?;
                    }
                    self.reboot.lock_group = Some(value.to_owned());
                }
                // MACHINE_ALIAS, DOWNLOAD_USER, PCR_POLICY_SERVER...: not used by Keelson.
                _ => {}
            }
        }
        match (window_start, window_length) {
            (None, None) => {}
            (Some(start), Some(length)) => {
                let (days, start_time) = parse_locksmith_start(&start).ok_or_else(|| {
                    invalid(
                        "LOCKSMITHD_REBOOT_WINDOW_START",
                        &start,
                        "expected \"[Day ]HH:MM\"",
                    )
                })?;
                let length_minutes = parse_duration_minutes(&length).ok_or_else(|| {
                    invalid(
                        "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
                        &length,
                        "expected a duration like 1h30m",
                    )
                })?;
                self.reboot.windows = vec![Window {
                    days,
                    start: start_time,
                    length_minutes,
                    time_zone: self.reboot.time_zone,
                }];
            }
            (Some(v), None) => {
                return Err(invalid(
                    "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
                    &v,
                    "missing: a window needs both START and LENGTH",
                ));
            }
            (None, Some(v)) => {
                return Err(invalid(
                    "LOCKSMITHD_REBOOT_WINDOW_START",
                    &v,
                    "missing: a window needs both START and LENGTH",
                ));
            }
        }
        if let (Some(list), RebootStrategy::EtcdLock { endpoints: e }) =
            (endpoints, &mut self.reboot.strategy)
            && !list.is_empty()
        {
            *e = list;
        }
        Ok(())
    }
}

fn check_http_url(value: &str) -> Result<(), &'static str> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err("must be an http(s) URL"),
    }
}

/// FleetLock's group grammar, `^[a-zA-Z0-9.-]+$` (also fine as a locksmith group).
fn check_lock_group(v: &str) -> Result<(), &'static str> {
    if v.is_empty()
        || v.len() > 100
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        Err("must match ^[a-zA-Z0-9.-]+$ (at most 100 characters)")
    } else {
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SettingsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_server(value: &str) -> Result<Server, &'static str> {
    if value == "disabled" {
        return Ok(Server::Disabled);
    }
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Server::Url(value.to_owned()))
        }
        _ => Err("must be an http(s) URL or \"disabled\""),
    }
}

fn check_token(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control() || c == '"') {
        Err("must be 1 to 128 printable characters")
    } else {
        Ok(())
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// `Mon`, `monday`, any case.
pub fn parse_day(d: &str) -> Option<Weekday> {
    let l = d.trim().to_ascii_lowercase();
    let table = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    table
        .iter()
        .zip(full)
        .find(|((short, _), long)| l == *short || l == *long)
        .map(|((_, day), _)| *day)
}

fn parse_hhmm(v: &str) -> Option<NaiveTime> {
    let (h, m) = v.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

/// locksmith's time, parsed with Go's `%d:%d`: `4:00` and `04:00` both work.
fn parse_locksmith_time(v: &str) -> Option<NaiveTime> {
    let (h, m) = v.trim().split_once(':')?;
    let digits = |p: &str| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

/// locksmith's `LOCKSMITHD_REBOOT_WINDOW_START`: `Thu 04:00` or `04:00` (every day); the day
/// is a three-letter name in any case, as locksmith takes it.
fn parse_locksmith_start(v: &str) -> Option<(Vec<Weekday>, NaiveTime)> {
    let mut parts = v.split_whitespace();
    let first = parts.next()?;
    match parts.next() {
        None => Some((Vec::new(), parse_locksmith_time(first)?)),
        Some(time) if parts.next().is_none() && first.len() == 3 => {
            Some((vec![parse_day(first)?], parse_locksmith_time(time)?))
        }
        Some(_) => None,
    }
}

/// Go-style durations as locksmith takes them: `1h`, `90m`, `1h30m`, `2h0m0s`.
fn parse_duration_minutes(v: &str) -> Option<u32> {
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in v.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += match c {
            'h' => n * 60,
            'm' => n,
            's' => n / 60,
            'd' => n * 1440,
            _ => return None,
        };
    }
    if !num.is_empty() || total == 0 || total > 7 * 24 * 60 {
        return None;
    }
    u32::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The exact text `keelson config translate` writes for an `updates:` section
    /// (crates/config/src/yaml/keelson.rs, `updates_section_becomes_update_toml`).
    const PROVISIONED: &str = "# Written by keelson config translate from the `updates:` section.\n[update]\nserver = \"https://u.example/v1/update/\"\ngroup = \"beta\"\n\n[reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"http://fl.example:8080\"\ntime_zone = \"America/New_York\"\n\n[[reboot.window]]\ndays = [\"Mon\", \"Fri\"]\nstart = \"02:30\"\nlength_minutes = 120\n";

    #[test]
    fn no_files_means_defaults_and_checks_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load(&Paths::under(dir.path())).unwrap();
        assert_eq!(s.server, Server::Disabled);
        assert!(!s.checks_enabled());
        assert_eq!(s.group, "stable");
        assert!(s.sources.is_empty());
    }

    #[test]
    fn provisioned_update_toml_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "etc/keelson/update.toml", PROVISIONED);
        let s = Settings::load(&Paths::under(dir.path())).unwrap();
        assert_eq!(s.server, Server::Url("https://u.example/v1/update/".into()));
        assert_eq!(s.group, "beta");
        assert_eq!(
            s.reboot.strategy,
            RebootStrategy::Fleetlock {
                url: "http://fl.example:8080".into()
            }
        );
        assert_eq!(s.reboot.time_zone, chrono_tz::America::New_York);
        assert_eq!(
            s.reboot.windows,
            vec![Window {
                days: vec![Weekday::Mon, Weekday::Fri],
                start: NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
                length_minutes: 120,
                time_zone: chrono_tz::America::New_York,
            }]
        );
    }

    #[test]
    fn precedence_defaults_then_flatcar_then_keelson() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "usr/lib/keelson/update.toml",
            "[update]\nserver = \"https://default.example/v1/update/\"\ngroup = \"alpha\"\ninterval_minutes = 10\n",
        );
        write(
            dir.path(),
            "etc/flatcar/update.conf",
            "# carried over\nGROUP=beta\nSERVER=\"https://flatcar.example/v1/update/\"\nREBOOT_STRATEGY=off\nLOCKSMITHD_REBOOT_WINDOW_START=\"Thu 04:00\"\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h30m\nMACHINE_ALIAS=x\n",
        );
        let s = Settings::load(&Paths::under(dir.path())).unwrap();
        assert_eq!(
            s.server,
            Server::Url("https://flatcar.example/v1/update/".into())
        );
        assert_eq!(s.group, "beta");
        assert_eq!(s.interval, Duration::from_secs(600));
        assert_eq!(s.reboot.strategy, RebootStrategy::Off);
        assert_eq!(s.reboot.windows[0].days, vec![Weekday::Thu]);
        assert_eq!(s.reboot.windows[0].length_minutes, 90);
        write(
            dir.path(),
            "etc/keelson/update.toml",
            "[update]\ngroup = \"prod\"\n",
        );
        let s = Settings::load(&Paths::under(dir.path())).unwrap();
        assert_eq!(s.group, "prod", "the provisioned file wins");
        assert_eq!(s.sources.len(), 3);
    }

    #[test]
    fn extensions_are_os_bound_or_their_own_app() {
        let mut s = Settings::default();
        s.apply_toml(
            Path::new("u.toml"),
            "[extensions.jq]\nbound = \"os\"\n\n[extensions.tools]\napp_id = \"5b2b5a9c-1111-4222-8333-944445555666\"\ngroup = \"beta\"\n\n[extensions.htop]\napp_id = \"x\"\n",
        )
        .unwrap();
        assert_eq!(s.extensions["jq"], Extension::OsBound);
        assert_eq!(
            s.extensions["tools"],
            Extension::Independent {
                app_id: "5b2b5a9c-1111-4222-8333-944445555666".into(),
                group: Some("beta".into())
            }
        );
        assert_eq!(
            s.extensions["htop"],
            Extension::Independent {
                app_id: "x".into(),
                group: None
            }
        );
        // What `keelson config translate` writes for `updates.extensions` (quoted keys; see
        // crates/config/src/yaml/keelson.rs, `update_extensions_become_agent_tables`).
        let mut t = Settings::default();
        t.apply_toml(
            Path::new("u.toml"),
            "[update]\nserver = \"https://u.example/v1/update/\"\n\n[reboot]\nstrategy = \"reboot\"\ntime_zone = \"UTC\"\n\n[extensions.\"jq\"]\nbound = \"os\"\n\n[extensions.\"tools.x\"]\napp_id = \"5b2b5a9c-8d1e-4c3a-9f0b-0a1b2c3d4e5f\"\ngroup = \"beta\"\n",
        )
        .unwrap();
        assert_eq!(t.extensions["jq"], Extension::OsBound);
        assert_eq!(
            t.extensions["tools.x"],
            Extension::Independent {
                app_id: "5b2b5a9c-8d1e-4c3a-9f0b-0a1b2c3d4e5f".into(),
                group: Some("beta".into())
            }
        );
        let bad = |text: &str| {
            Settings::default()
                .apply_toml(Path::new("/etc/keelson/update.toml"), text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad("[extensions.tools]\n"),
            "/etc/keelson/update.toml: extensions.tools.app_id = \"\": required for an independent extension (or bound = \"os\")"
        );
        assert!(
            bad("[extensions.jq]\nbound = \"usr\"\n").contains("extensions.jq.bound = \"usr\""),
        );
        assert!(bad("[extensions.jq]\nbound = \"os\"\napp_id = \"a\"\n").contains("has no app_id"));
        assert!(
            bad("[extensions.jq]\nbound = \"os\"\ngroup = \"a\"\n").contains("extensions.jq.group")
        );
        assert!(
            bad("[extensions.\".hidden\"]\nbound = \"os\"\n").contains("must not start with a dot")
        );
        assert!(bad("[extensions.\"jq.raw\"]\nbound = \"os\"\n").contains("extensions.jq.raw"));
        assert!(bad("[extensions.jq]\nbound = \"os\"\nenabled = true\n").contains("unknown field"));
    }

    #[test]
    fn server_disabled_either_way() {
        let mut s = Settings::default();
        s.apply_flatcar(Path::new("u.conf"), "SERVER=disabled\n")
            .unwrap();
        assert!(!s.checks_enabled());
        s.apply_toml(
            Path::new("u.toml"),
            "[update]\nserver = \"http://h:1/v1/update/\"\n",
        )
        .unwrap();
        assert!(s.checks_enabled());
        s.apply_toml(Path::new("u.toml"), "[update]\nserver = \"disabled\"\n")
            .unwrap();
        assert!(!s.checks_enabled());
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases: &[(&str, &str)] = &[
            ("[update]\nserver = \"ftp://x\"\n", "update.server"),
            (
                "[reboot]\ntime_zone = \"Mars/Olympus\"\n",
                "reboot.time_zone",
            ),
            ("[reboot]\nstrategy = \"sometimes\"\n", "reboot.strategy"),
            (
                "[reboot]\nstrategy = \"fleetlock\"\n",
                "reboot.fleetlock_url",
            ),
            (
                "[[reboot.window]]\ndays = [\"Funday\"]\nstart = \"04:00\"\nlength_minutes = 5\n",
                "reboot.window[0].days",
            ),
            (
                "[[reboot.window]]\nstart = \"4:00\"\nlength_minutes = 5\n",
                "reboot.window[0].start",
            ),
            (
                "[[reboot.window]]\nstart = \"04:00\"\nlength_minutes = 0\n",
                "reboot.window[0].length_minutes",
            ),
            ("[update]\nsevrer = \"x\"\n", "sevrer"),
            ("[update]\ngroup = 3\n", "group"),
        ];
        for (text, key) in cases {
            let e = Settings::default()
                .apply_toml(Path::new("/etc/keelson/update.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("/etc/keelson/update.toml"), "{e}");
            assert!(e.contains(key), "{key}: {e}");
        }
        let flatcar: &[(&str, &str)] = &[
            ("REBOOT_STRATEGY=sometimes\n", "REBOOT_STRATEGY"),
            (
                "LOCKSMITHD_REBOOT_WINDOW_START=Thu\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n",
                "LOCKSMITHD_REBOOT_WINDOW_START",
            ),
            (
                "LOCKSMITHD_REBOOT_WINDOW_START=04:00\n",
                "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
            ),
            ("garbage\n", "line 1"),
        ];
        for (text, key) in flatcar {
            let e = Settings::default()
                .apply_flatcar(Path::new("/etc/flatcar/update.conf"), text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("/etc/flatcar/update.conf"), "{e}");
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn windows_each_with_a_zone() {
        let mut s = Settings::default();
        s.apply_toml(
            Path::new("u.toml"),
            "[reboot]\nstrategy = \"etcd-lock\"\ntime_zone = \"Europe/Berlin\"\nlock_group = \"db\"\n\n[[reboot.window]]\nstart = \"04:00\"\nlength_minutes = 60\n\n[[reboot.window]]\ndays = [\"Sun\"]\nstart = \"23:30\"\nlength_minutes = 2880\ntime_zone = \"Asia/Tokyo\"\n",
        )
        .unwrap();
        let zones: Vec<Tz> = s.reboot.windows.iter().map(|w| w.time_zone).collect();
        assert_eq!(
            zones,
            vec![chrono_tz::Europe::Berlin, chrono_tz::Asia::Tokyo]
        );
        assert_eq!(s.reboot.windows[1].days, vec![Weekday::Sun]);
        assert_eq!(
            s.reboot.strategy,
            RebootStrategy::EtcdLock {
                endpoints: vec![DEFAULT_ETCD_ENDPOINT.into()]
            }
        );
        assert_eq!(s.reboot.lock_group.as_deref(), Some("db"));
    }

    #[test]
    fn flatcar_locksmith_keys_carry_over() {
        let mut s = Settings::default();
        s.apply_flatcar(
            Path::new("update.conf"),
            "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT=http://10.0.0.1:2379,http://10.0.0.2:2379\nLOCKSMITHD_GROUP=lb\nREBOOT_WINDOW_START=sat 1:00\nREBOOT_WINDOW_LENGTH=2h\n",
        )
        .unwrap();
        assert_eq!(
            s.reboot.strategy,
            RebootStrategy::EtcdLock {
                endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()]
            }
        );
        assert_eq!(s.reboot.lock_group.as_deref(), Some("lb"));
        assert_eq!(s.reboot.windows[0].days, vec![Weekday::Sat]);
        assert_eq!(
            s.reboot.windows[0].start,
            NaiveTime::from_hms_opt(1, 0, 0).unwrap()
        );
        assert_eq!(s.reboot.windows[0].time_zone, Tz::UTC);
        // A later update.toml's default zone moves the Flatcar window with it.
        s.apply_toml(
            Path::new("u.toml"),
            "[reboot]\ntime_zone = \"America/New_York\"\n",
        )
        .unwrap();
        assert_eq!(s.reboot.windows[0].time_zone, chrono_tz::America::New_York);
    }

    #[test]
    fn locksmith_formats() {
        assert_eq!(parse_duration_minutes("1h"), Some(60));
        assert_eq!(parse_duration_minutes("2h0m0s"), Some(120));
        assert_eq!(parse_duration_minutes("0m"), None);
        assert_eq!(parse_duration_minutes("5"), None);
        let (days, t) = parse_locksmith_start("04:00").unwrap();
        assert!(days.is_empty());
        assert_eq!(t, NaiveTime::from_hms_opt(4, 0, 0).unwrap());
        assert!(parse_locksmith_start("Thu 04:00 x").is_none());
    }
}
