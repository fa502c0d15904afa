//! Keelson's own sugar in `variant: keelson`: the `updates` and `extensions` sections,
//! rewritten into the files and units they stand for (see docs/provisioning-yaml.md).

use std::collections::HashSet;

use super::{Translator, boolean, data_url_plain, int, list_mut, members, obj, obj_mut, s};
use crate::report::Pos;
use crate::tree::{Node, Number, Value};

/// Where the update agent reads its provisioning-time settings.
pub const UPDATE_CONFIG_PATH: &str = "/etc/keelson/update.toml";
/// Where systemd-sysext picks up extension images: the `NAME.raw` symlinks go here.
pub const EXTENSIONS_DIR: &str = "/etc/extensions";
/// Where the downloaded images are kept, one directory per extension (Flatcar's layout).
pub const EXTENSIONS_STORE: &str = "/opt/extensions";

const STRATEGIES: &[&str] = &["off", "reboot", "fleetlock", "etcd-lock"];
const DAYS: &[(&str, &str)] = &[
    ("mon", "Mon"),
    ("monday", "Mon"),
    ("tue", "Tue"),
    ("tuesday", "Tue"),
    ("wed", "Wed"),
    ("wednesday", "Wed"),
    ("thu", "Thu"),
    ("thursday", "Thu"),
    ("fri", "Fri"),
    ("friday", "Fri"),
    ("sat", "Sat"),
    ("saturday", "Sat"),
    ("sun", "Sun"),
    ("sunday", "Sun"),
];

/// A TOML basic string (JSON's escapes are all valid TOML escapes).
fn toml_str(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into())
}

/// Parse `90`, `90m`, `1h`, `1h30m`, `2d` into minutes.
pub fn parse_minutes(v: &Node) -> Result<i64, String> {
    let text = match &v.value {
        Value::Number(Number::Int(i)) => {
            return if *i > 0 {
                Ok(*i)
            } else {
                Err("length must be positive".into())
            };
        }
        Value::String(t) => t.trim().to_string(),
        _ => return Err("length must be a duration like 1h30m".into()),
    };
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any_unit = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        num.clear();
        let mult = match c {
            'm' => 1,
            'h' => 60,
            'd' => 1440,
            _ => return Err(format!("invalid duration {text:?}: units are d, h and m")),
        };
        any_unit = true;
        total = total.saturating_add(n.saturating_mul(mult));
    }
    if !num.is_empty() {
        if any_unit {
            return Err(format!("invalid duration {text:?}: a number needs a unit"));
        }
        total = num
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
    }
    if total <= 0 {
        return Err("length must be positive".into());
    }
    Ok(total)
}

fn hhmm(v: &str) -> bool {
    let Some((h, m)) = v.split_once(':') else {
        return false;
    };
    h.len() == 2
        && m.len() == 2
        && h.parse::<u32>().is_ok_and(|h| h < 24)
        && m.parse::<u32>().is_ok_and(|m| m < 60)
}

fn str_field(t: &mut Translator<'_>, node: &Node, key: &str, path: &str) -> Option<(String, Pos)> {
    let v = node.get(key)?;
    match v.as_str() {
        Some(x) => Some((x.to_string(), v.pos)),
        None => {
            t.error(
                v.pos,
                &format!("{path}.{key}"),
                format!("{key} must be a string"),
            );
            None
        }
    }
}

fn check_keys(t: &mut Translator<'_>, node: &Node, path: &str, known: &[&str]) {
    for m in members(node) {
        if !known.contains(&m.key.as_str()) {
            t.warn(
                m.key_pos,
                &format!("{path}.{}", m.key),
                format!("unused key {}", m.key),
            );
        }
    }
}

fn push_file(out: &mut Node, file: Node) {
    let pos = file.pos;
    if let Some(storage) = obj_mut(out, "storage", pos)
        && let Some(files) = list_mut(storage, "files", pos)
    {
        files.push(file);
    }
}

fn push_link(out: &mut Node, link: Node) {
    let pos = link.pos;
    if let Some(storage) = obj_mut(out, "storage", pos)
        && let Some(links) = list_mut(storage, "links", pos)
    {
        links.push(link);
    }
}

/// `updates.extensions:` -> the agent's `[extensions."NAME"]` tables: `bound: os` (the OS
/// package's file named NAME, docs/sysext.md) or `app_id` (+ optional `group`) of an
/// independent extension's own application.
fn update_extensions(t: &mut Translator<'_>, e: &Node) -> String {
    let path = "$.updates.extensions";
    let Value::Array(items) = &e.value else {
        t.error(e.pos, path, "extensions must be a list");
        return String::new();
    };
    let mut toml = String::new();
    let mut seen = HashSet::new();
    for (i, x) in items.iter().enumerate() {
        let p = format!("{path}.{i}");
        if !matches!(x.value, Value::Object(_)) {
            t.error(x.pos, &p, "each extension must be a mapping");
            continue;
        }
        check_keys(t, x, &p, &["name", "bound", "app_id", "group"]);
        let Some((name, npos)) = str_field(t, x, "name", &p) else {
            if x.get("name").is_none() {
                t.error(x.pos, &format!("{p}.name"), "name is required");
            }
            continue;
        };
        if let Some(problem) = keelson_api_types::extension_name_problem(&name) {
            t.error(npos, &format!("{p}.name"), format!("name {problem}"));
        } else if !seen.insert(name.clone()) {
            t.error(
                npos,
                &format!("{p}.name"),
                format!("extension {name} is listed twice"),
            );
        }
        let bound = str_field(t, x, "bound", &p);
        let app_id = str_field(t, x, "app_id", &p);
        let group = str_field(t, x, "group", &p);
        toml.push_str(&format!("\n[extensions.{}]\n", toml_str(&name)));
        match (&bound, &app_id) {
            (Some((b, bpos)), _) if b != "os" => {
                t.error(*bpos, &format!("{p}.bound"), "bound must be \"os\"");
            }
            (Some(_), Some((_, apos))) => t.error(
                *apos,
                &format!("{p}.app_id"),
                "an OS-bound extension (bound: os) has no app_id",
            ),
            (Some(_), None) => {
                toml.push_str("bound = \"os\"\n");
                if let Some((_, gpos)) = &group {
                    t.error(
                        *gpos,
                        &format!("{p}.group"),
                        "an OS-bound extension follows the OS's group",
                    );
                }
            }
            (None, Some((app, _))) => {
                toml.push_str(&format!("app_id = {}\n", toml_str(app)));
                if let Some((g, _)) = &group {
                    toml.push_str(&format!("group = {}\n", toml_str(g)));
                }
            }
            (None, None) => t.error(
                x.pos,
                &format!("{p}.app_id"),
                "app_id is required (or bound: os for an OS-bound extension)",
            ),
        }
    }
    toml
}

/// `updates:` -> `/etc/keelson/update.toml`.
pub(super) fn updates(t: &mut Translator<'_>, u: &Node, out: &mut Node) {
    let path = "$.updates";
    if !matches!(u.value, Value::Object(_)) {
        t.error(u.pos, path, "updates must be a mapping");
        return;
    }
    check_keys(
        t,
        u,
        path,
        &[
            "server",
            "group",
            "reboot_strategy",
            "fleetlock_url",
            "etcd_endpoints",
            "time_zone",
            "windows",
            "extensions",
        ],
    );
    let mut toml = String::from(
        "# Written by keelson config translate from the `updates:` section.\n[update]\n",
    );
    if let Some((server, pos)) = str_field(t, u, "server", path) {
        if server != "disabled"
            && !(server.starts_with("https://") || server.starts_with("http://"))
        {
            t.error(
                pos,
                "$.updates.server",
                "server must be an http(s) URL or \"disabled\"",
            );
        }
        toml.push_str(&format!("server = {}\n", toml_str(&server)));
    }
    if let Some((group, _)) = str_field(t, u, "group", path) {
        toml.push_str(&format!("group = {}\n", toml_str(&group)));
    }
    let strategy = str_field(t, u, "reboot_strategy", path);
    let strategy_name = strategy
        .as_ref()
        .map_or("reboot", |(s, _)| s.as_str())
        .to_string();
    if let Some((st, pos)) = &strategy
        && !STRATEGIES.contains(&st.as_str())
    {
        t.error(
            *pos,
            "$.updates.reboot_strategy",
            "reboot_strategy must be one of off, reboot, fleetlock, etcd-lock",
        );
    }
    toml.push_str(&format!(
        "\n[reboot]\nstrategy = {}\n",
        toml_str(&strategy_name)
    ));
    match str_field(t, u, "fleetlock_url", path) {
        Some((url, pos)) => {
            if strategy_name != "fleetlock" {
                t.warn(
                    pos,
                    "$.updates.fleetlock_url",
                    "fleetlock_url is only used with reboot_strategy fleetlock",
                );
            }
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                t.error(
                    pos,
                    "$.updates.fleetlock_url",
                    "fleetlock_url must be an http(s) URL",
                );
            }
            toml.push_str(&format!("fleetlock_url = {}\n", toml_str(&url)));
        }
        None if strategy_name == "fleetlock" => {
            t.error(
                u.pos,
                "$.updates.fleetlock_url",
                "fleetlock_url is required with reboot_strategy fleetlock",
            );
        }
        None => {}
    }
    if let Some(eps) = u.get("etcd_endpoints") {
        let list: Vec<String> = match &eps.value {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        if list.is_empty() {
            t.error(
                eps.pos,
                "$.updates.etcd_endpoints",
                "etcd_endpoints must be a non-empty list of URLs",
            );
        }
        if strategy_name != "etcd-lock" {
            t.warn(
                eps.pos,
                "$.updates.etcd_endpoints",
                "etcd_endpoints is only used with reboot_strategy etcd-lock",
            );
        }
        let quoted: Vec<String> = list.iter().map(|e| toml_str(e)).collect();
        toml.push_str(&format!("etcd_endpoints = [{}]\n", quoted.join(", ")));
    }
    let tz = str_field(t, u, "time_zone", path);
    if let Some((tz, pos)) = &tz
        && tz != "UTC"
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        t.error(
            *pos,
            "$.updates.time_zone",
            format!("unknown IANA time zone {tz:?}"),
        );
    }
    toml.push_str(&format!(
        "time_zone = {}\n",
        toml_str(tz.as_ref().map_or("UTC", |(z, _)| z.as_str()))
    ));
    // The agent's `[extensions.NAME]` tables go last (after the windows' array tables).
    let extensions = u
        .get("extensions")
        .map(|e| update_extensions(t, e))
        .unwrap_or_default();
    if let Some(ws) = u.get("windows") {
        let Value::Array(items) = &ws.value else {
            t.error(ws.pos, "$.updates.windows", "windows must be a list");
            return;
        };
        for (i, w) in items.iter().enumerate() {
            let wp = format!("$.updates.windows.{i}");
            check_keys(t, w, &wp, &["days", "start", "length"]);
            let mut days = Vec::new();
            if let Some(d) = w.get("days") {
                let names: Vec<&Node> = match &d.value {
                    Value::Array(items) => items.iter().collect(),
                    _ => vec![d],
                };
                for n in names {
                    match n
                        .as_str()
                        .and_then(|x| DAYS.iter().find(|(k, _)| k.eq_ignore_ascii_case(x)))
                    {
                        Some((_, canon)) => days.push(toml_str(canon)),
                        None => t.error(
                            n.pos,
                            &format!("{wp}.days"),
                            "days must be day names like Mon or Monday",
                        ),
                    }
                }
            }
            let start = match str_field(t, w, "start", &wp) {
                Some((st, pos)) => {
                    if !hhmm(&st) {
                        t.error(
                            pos,
                            &format!("{wp}.start"),
                            "start must be a time of day as HH:MM",
                        );
                    }
                    st
                }
                None => {
                    t.error(w.pos, &format!("{wp}.start"), "start is required");
                    String::new()
                }
            };
            let minutes = match w.get("length") {
                Some(l) => match parse_minutes(l) {
                    Ok(m) if m <= 7 * 1440 => m,
                    Ok(_) => {
                        t.error(
                            l.pos,
                            &format!("{wp}.length"),
                            "length must be at most 7 days",
                        );
                        0
                    }
                    Err(e) => {
                        t.error(l.pos, &format!("{wp}.length"), e);
                        0
                    }
                },
                None => {
                    t.error(w.pos, &format!("{wp}.length"), "length is required");
                    0
                }
            };
            toml.push_str(&format!(
                "\n[[reboot.window]]\ndays = [{}]\nstart = {}\nlength_minutes = {minutes}\n",
                days.join(", "),
                toml_str(&start)
            ));
        }
    }
    toml.push_str(&extensions);
    // Uncompressed, so the generated settings stay readable in the Ignition JSON.
    let url = data_url_plain(toml.as_bytes());
    let compression = "";
    let pos = u.pos;
    push_file(
        out,
        obj(
            vec![
                ("path", s(UPDATE_CONFIG_PATH, pos)),
                ("overwrite", boolean(true, pos)),
                ("mode", int(0o644, pos)),
                (
                    "contents",
                    obj(
                        vec![
                            ("source", s(url, pos)),
                            ("compression", s(compression, pos)),
                        ],
                        pos,
                    ),
                ),
            ],
            pos,
        ),
    );
}

/// `extensions:` -> Flatcar's layout: each image downloaded (hash-checked) to
/// `/opt/extensions/NAME/NAME[-VERSION].raw`, a symlink `/etc/extensions/NAME.raw` to it, and
/// `systemd-sysext.service` enabled.
pub(super) fn extensions(t: &mut Translator<'_>, e: &Node, out: &mut Node) {
    let Value::Array(items) = &e.value else {
        t.error(e.pos, "$.extensions", "extensions must be a list");
        return;
    };
    let mut seen = HashSet::new();
    for (i, x) in items.iter().enumerate() {
        let p = format!("$.extensions.{i}");
        if !matches!(x.value, Value::Object(_)) {
            t.error(x.pos, &p, "each extension must be a mapping");
            continue;
        }
        check_keys(t, x, &p, &["name", "version", "source", "hash", "sha256"]);
        let Some(ext) = extension_entry(t, x, &p) else {
            continue;
        };
        if !seen.insert(ext.name.clone()) {
            t.error(
                ext.name_pos,
                &format!("{p}.name"),
                "duplicate entry defined",
            );
            continue;
        }
        let npos = ext.name_pos;
        let image = ext.image_path();
        let mut contents = vec![("source", s(ext.source, ext.source_pos))];
        if let Some((hash, hpos)) = ext.hash {
            contents.push(("verification", obj(vec![("hash", s(hash, hpos))], hpos)));
        }
        push_file(
            out,
            obj(
                vec![
                    ("path", s(image.clone(), npos)),
                    ("overwrite", boolean(true, npos)),
                    ("mode", int(0o644, npos)),
                    ("contents", obj(contents, x.pos)),
                ],
                x.pos,
            ),
        );
        push_link(
            out,
            obj(
                vec![
                    (
                        "path",
                        s(format!("{EXTENSIONS_DIR}/{}.raw", ext.name), npos),
                    ),
                    ("target", s(image, npos)),
                    ("hard", boolean(false, npos)),
                    ("overwrite", boolean(true, npos)),
                ],
                x.pos,
            ),
        );
    }
    if !items.is_empty() {
        t.extra_units.push(obj(
            vec![
                ("name", s("systemd-sysext.service", e.pos)),
                ("enabled", boolean(true, e.pos)),
            ],
            e.pos,
        ));
    }
}

/// One checked `extensions[]` entry.
struct Extension {
    name: String,
    name_pos: Pos,
    version: Option<String>,
    source: String,
    source_pos: Pos,
    /// Ignition's `verification.hash` (`sha256-HEX` / `sha512-HEX`) and where it was written.
    hash: Option<(String, Pos)>,
}

impl Extension {
    /// Where the image is downloaded to (the symlink's target).
    fn image_path(&self) -> String {
        match &self.version {
            Some(v) => format!("{EXTENSIONS_STORE}/{0}/{0}-{v}.raw", self.name),
            None => format!("{EXTENSIONS_STORE}/{0}/{0}.raw", self.name),
        }
    }
}

/// Letters, digits and `extra`, not empty and not starting with a dot.
fn plain_name(v: &str, extra: &[u8]) -> bool {
    !v.is_empty()
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Check one entry's fields; every problem is reported at its field. `None` when the entry
/// cannot be translated.
fn extension_entry(t: &mut Translator<'_>, x: &Node, p: &str) -> Option<Extension> {
    let name = str_field(t, x, "name", p);
    let mut ok = true;
    let (name, name_pos) = match name {
        Some((n, pos)) => {
            if !plain_name(&n, b"-_.") {
                t.error(
                    pos,
                    &format!("{p}.name"),
                    "extension names may only contain letters, digits, '-', '_' and '.'",
                );
                ok = false;
            } else if n.ends_with(".raw") {
                t.error(
                    pos,
                    &format!("{p}.name"),
                    "name is the extension's name without .raw",
                );
                ok = false;
            }
            (n, pos)
        }
        None => {
            if x.get("name").is_none() {
                t.error(x.pos, &format!("{p}.name"), "name is required");
            }
            ok = false;
            (String::new(), x.pos)
        }
    };
    if let Some(v) = x.get("version")
        && matches!(v.value, Value::Number(_))
    {
        // `version: 1.10` is the number 1.1 in YAML: the text is lost, so ask for quotes.
        t.error(
            v.pos,
            &format!("{p}.version"),
            "version must be a string: quote it (\"1.10\"), YAML reads 1.10 as the number 1.1",
        );
        ok = false;
    }
    let version = match x
        .get("version")
        .filter(|v| !matches!(v.value, Value::Number(_)))
        .and_then(|_| str_field(t, x, "version", p))
    {
        Some((v, pos)) if !plain_name(&v, b"-_.+~^") => {
            t.error(
                pos,
                &format!("{p}.version"),
                "version may only contain letters, digits, '.', '_', '+', '~', '^' and '-'",
            );
            ok = false;
            None
        }
        Some((v, _)) => Some(v),
        None => None,
    };
    let source = match str_field(t, x, "source", p) {
        Some(v) => Some(v),
        None => {
            if x.get("source").is_none() {
                t.error(x.pos, &format!("{p}.source"), "source is required");
            }
            ok = false;
            None
        }
    };
    let hash = str_field(t, x, "hash", p);
    let sha256 = str_field(t, x, "sha256", p);
    let hash = match (hash, sha256) {
        (Some(_), Some((_, pos))) => {
            t.error(
                pos,
                &format!("{p}.sha256"),
                "only one of the following can be set: hash, sha256",
            );
            ok = false;
            None
        }
        (Some(h), None) => Some(h),
        (None, Some((hex, pos))) => {
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some((format!("sha256-{}", hex.to_ascii_lowercase()), pos))
            } else {
                t.error(
                    pos,
                    &format!("{p}.sha256"),
                    "sha256 must be 64 hexadecimal digits",
                );
                ok = false;
                None
            }
        }
        (None, None) => {
            if x.get("hash").is_none() && x.get("sha256").is_none() {
                t.warn(
                    x.pos,
                    &format!("{p}.sha256"),
                    "extension has no sha256 or hash; its image is not verified",
                );
            }
            None
        }
    };
    let (source, source_pos) = source?;
    ok.then_some(Extension {
        name,
        name_pos,
        version,
        source,
        source_pos,
        hash,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        let p = Pos::default();
        let cases: &[(Node, Result<i64, ()>)] = &[
            (s("90m", p), Ok(90)),
            (s("1h30m", p), Ok(90)),
            (s("2d", p), Ok(2880)),
            (s("45", p), Ok(45)),
            (int(30, p), Ok(30)),
            (int(0, p), Err(())),
            (s("1x", p), Err(())),
            (s("1h30", p), Err(())),
            (s("", p), Err(())),
        ];
        for (n, want) in cases {
            assert_eq!(parse_minutes(n).map_err(|_| ()), *want, "{n:?}");
        }
    }

    /// The generated file's contents, decoded from its data URL.
    fn generated(yaml: &str, path: &str) -> String {
        let t = crate::yaml::translate(yaml, &crate::yaml::Options::default()).unwrap();
        let f = t
            .config
            .storage
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap();
        let src = f.contents.source.as_deref().unwrap();
        let b64 = src.strip_prefix("data:;base64,").unwrap();
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn updates_section_becomes_update_toml() {
        let yaml = "variant: keelson\nversion: 1.0.0\nupdates:\n  server: https://u.example/v1/update/\n  group: beta\n  reboot_strategy: fleetlock\n  fleetlock_url: http://fl.example:8080\n  time_zone: America/New_York\n  windows:\n    - days: [mon, Friday]\n      start: \"02:30\"\n      length: 2h\n";
        let want = "# Written by keelson config translate from the `updates:` section.\n[update]\nserver = \"https://u.example/v1/update/\"\ngroup = \"beta\"\n\n[reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"http://fl.example:8080\"\ntime_zone = \"America/New_York\"\n\n[[reboot.window]]\ndays = [\"Mon\", \"Fri\"]\nstart = \"02:30\"\nlength_minutes = 120\n";
        assert_eq!(generated(yaml, UPDATE_CONFIG_PATH), want);
    }

    #[test]
    fn update_extensions_become_agent_tables() {
        let yaml = "variant: keelson\nversion: 1.0.0\nupdates:\n  server: https://u.example/v1/update/\n  extensions:\n    - name: jq\n      bound: os\n    - name: tools.x\n      app_id: 5b2b5a9c-8d1e-4c3a-9f0b-0a1b2c3d4e5f\n      group: beta\n";
        let want = "# Written by keelson config translate from the `updates:` section.\n[update]\nserver = \"https://u.example/v1/update/\"\n\n[reboot]\nstrategy = \"reboot\"\ntime_zone = \"UTC\"\n\n[extensions.\"jq\"]\nbound = \"os\"\n\n[extensions.\"tools.x\"]\napp_id = \"5b2b5a9c-8d1e-4c3a-9f0b-0a1b2c3d4e5f\"\ngroup = \"beta\"\n";
        assert_eq!(generated(yaml, UPDATE_CONFIG_PATH), want);
    }

    #[test]
    fn update_extensions_errors_name_the_field() {
        for (entry, field, message) in [
            (
                "- bound: os",
                "$.updates.extensions.0.name",
                "name is required",
            ),
            (
                "- name: .x\n      bound: os",
                "$.updates.extensions.0.name",
                "name must not start with a dot",
            ),
            (
                "- name: x\n      bound: usr",
                "$.updates.extensions.0.bound",
                "bound must be",
            ),
            (
                "- name: x",
                "$.updates.extensions.0.app_id",
                "app_id is required",
            ),
            (
                "- name: x\n      bound: os\n      app_id: a",
                "$.updates.extensions.0.app_id",
                "has no app_id",
            ),
            (
                "- name: x\n      bound: os\n      group: g",
                "$.updates.extensions.0.group",
                "follows the OS's group",
            ),
            (
                "- name: x\n      bound: os\n    - name: x\n      app_id: a",
                "$.updates.extensions.1.name",
                "listed twice",
            ),
        ] {
            let yaml =
                format!("variant: keelson\nversion: 1.0.0\nupdates:\n  extensions:\n    {entry}\n");
            let report = crate::yaml::translate(&yaml, &crate::yaml::Options::default())
                .unwrap_err()
                .report();
            let found = report
                .entries
                .iter()
                .any(|e| e.path == field && e.message.contains(message));
            assert!(found, "{entry}: {:?}", report.entries);
        }
    }

    #[test]
    fn toml_strings_are_escaped() {
        let yaml = "variant: keelson\nversion: 1.0.0\nupdates:\n  group: \"a\\\"b\\\\c\"\n";
        let text = generated(yaml, UPDATE_CONFIG_PATH);
        assert!(text.contains("group = \"a\\\"b\\\\c\"\n"), "{text}");
    }

    #[test]
    fn times_of_day() {
        assert!(hhmm("04:00"));
        assert!(hhmm("23:59"));
        assert!(!hhmm("24:00"));
        assert!(!hhmm("4:00"));
        assert!(!hhmm("04:60"));
    }
}
