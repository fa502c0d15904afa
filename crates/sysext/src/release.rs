//! os-release and extension-release files, and systemd-sysext's rule for whether an extension
//! matches a host (`extension_release_validate()` in systemd 257, image-format.md section 4).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::SysextError;

/// Where an extension's release file lives inside the image.
pub const EXTENSION_RELEASE_DIR: &str = "usr/lib/extension-release.d";

/// The scope a system extension is merged for (systemd-sysext's host scope).
pub const SYSTEM_SCOPE: &str = "system";

/// The scopes an extension without SYSEXT_SCOPE is good for.
pub const DEFAULT_SCOPE: &str = "system portable";

/// A parsed os-release style file: `KEY=value` pairs in file order (the last one wins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseFile {
    /// The fields, by name.
    pub fields: BTreeMap<String, String>,
}

impl ReleaseFile {
    /// Parses os-release(5) syntax: `KEY=VALUE`, values optionally in single or double quotes
    /// (double quotes take `\` escapes), `#` comments and blank lines ignored. `path` names the
    /// file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ReleaseFile, SysextError> {
        let mut fields = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| SysextError::Release {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("{line:?} is not KEY=VALUE")));
            };
            let key = key.trim();
            if key.is_empty()
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || key.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(err(format!("{key:?} is not a valid variable name")));
            }
            let value = unquote(value.trim()).map_err(err)?;
            fields.insert(key.to_string(), value);
        }
        Ok(ReleaseFile { fields })
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<ReleaseFile, SysextError> {
        let text = std::fs::read_to_string(path).map_err(SysextError::io_on("reading", path))?;
        Self::parse(&text, path)
    }

    /// A field's value, `None` when absent or empty (systemd treats both alike).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn unquote(v: &str) -> Result<String, String> {
    let bytes = v.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\'' {
        return Ok(v[1..v.len() - 1].to_string());
    }
    if v.starts_with('"') {
        if v.len() < 2 || !v.ends_with('"') {
            return Err(format!("unterminated double quote in {v:?}"));
        }
        let mut out = String::new();
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(n) => out.push(n),
                    None => return Err(format!("trailing backslash in {v:?}")),
                }
            } else {
                out.push(c);
            }
        }
        return Ok(out);
    }
    if v.starts_with('\'') {
        return Err(format!("unterminated single quote in {v:?}"));
    }
    Ok(v.to_string())
}

/// Quotes a value for a release file when it needs it.
fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+~:/,@^".contains(c))
    {
        v.to_string()
    } else {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '$' | '`' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// The systemd name of a CPU architecture (`x86-64`, `arm64`), as ARCHITECTURE= uses it.
pub fn systemd_arch(rust_arch: &str) -> Option<&'static str> {
    match rust_arch {
        "x86_64" | "x86-64" | "amd64" => Some("x86-64"),
        "aarch64" | "arm64" => Some("arm64"),
        _ => None,
    }
}

/// The systemd name of the architecture this program runs on.
pub fn host_arch() -> &'static str {
    systemd_arch(std::env::consts::ARCH).unwrap_or(std::env::consts::ARCH)
}

/// What an extension declares about itself; rendered into
/// `/usr/lib/extension-release.d/extension-release.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionRelease {
    /// The host OS ID the extension is for (`keelson`), or `_any`.
    pub id: String,
    /// SYSEXT_LEVEL: the host's extension API level it needs (independent extensions).
    pub sysext_level: Option<String>,
    /// VERSION_ID: the exact OS version it is for (OS-bound extensions).
    pub version_id: Option<String>,
    /// ARCHITECTURE in systemd's naming (`x86-64`, `arm64`), or `_any`.
    pub architecture: String,
    /// EXTENSION_RELOAD_MANAGER=1: merging reloads the service manager (the image ships units).
    pub reload_manager: bool,
    /// IMAGE_ID: the extension's name.
    pub image_id: String,
    /// IMAGE_VERSION: the extension's own version.
    pub image_version: String,
}

impl ExtensionRelease {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("ID={}\n", quote(&self.id)));
        if let Some(l) = &self.sysext_level {
            s.push_str(&format!("SYSEXT_LEVEL={}\n", quote(l)));
        }
        if let Some(v) = &self.version_id {
            s.push_str(&format!("VERSION_ID={}\n", quote(v)));
        }
        s.push_str(&format!("ARCHITECTURE={}\n", quote(&self.architecture)));
        s.push_str(&format!("IMAGE_ID={}\n", quote(&self.image_id)));
        s.push_str(&format!("IMAGE_VERSION={}\n", quote(&self.image_version)));
        if self.reload_manager {
            s.push_str("EXTENSION_RELOAD_MANAGER=1\n");
        }
        s
    }
}

/// Why an extension does (or does not) match a host, in systemd-sysext's words and order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchVerdict {
    /// Whether systemd-sysext (without `--force`) would merge it.
    pub matches: bool,
    /// The rule that decided, as a sentence.
    pub reason: String,
    /// A short stable slug for the deciding rule (`id`, `level`, `version-id`, ...).
    pub rule: &'static str,
}

impl MatchVerdict {
    fn yes(rule: &'static str, reason: impl Into<String>) -> Self {
        MatchVerdict {
            matches: true,
            reason: reason.into(),
            rule,
        }
    }
    fn no(rule: &'static str, reason: impl Into<String>) -> Self {
        MatchVerdict {
            matches: false,
            reason: reason.into(),
            rule,
        }
    }
}

/// systemd-sysext's matching rule (systemd 257 `extension_release_validate()` for the
/// `system` scope): scope, architecture, ID (or the host's ID_LIKE), then SYSEXT_LEVEL when
/// both sides have one, else VERSION_ID. `host_arch` is systemd's name of the host CPU.
pub fn validate(host: &ReleaseFile, ext: Option<&ReleaseFile>, host_arch: &str) -> MatchVerdict {
    let Some(ext) = ext else {
        return MatchVerdict::no("release", "the image carries no extension-release file");
    };
    let scope = ext.get("SYSEXT_SCOPE").unwrap_or(DEFAULT_SCOPE);
    if !scope.split_whitespace().any(|s| s == SYSTEM_SCOPE) {
        return MatchVerdict::no(
            "scope",
            format!("SYSEXT_SCOPE={scope:?} does not include {SYSTEM_SCOPE:?}"),
        );
    }
    if let Some(arch) = ext.get("ARCHITECTURE")
        && arch != "_any"
        && arch != host_arch
    {
        return MatchVerdict::no(
            "architecture",
            format!("ARCHITECTURE={arch} does not match the host's {host_arch}"),
        );
    }
    let Some(id) = ext.get("ID") else {
        return MatchVerdict::no("id", "the extension-release file has no ID");
    };
    if id == "_any" {
        return MatchVerdict::yes("id", "ID=_any matches every host");
    }
    let host_id = host.get("ID").unwrap_or("linux");
    let like = host.get("ID_LIKE").unwrap_or("");
    // Accepted by extension-release(5) in 257 (systemd-sysext(8) does not say so).
    let via_like = id != host_id && like.split_whitespace().any(|l| l == id);
    if id != host_id && !via_like {
        return MatchVerdict::no(
            "id",
            format!(
                "ID={id} does not match the host's ID={host_id}{}",
                if like.is_empty() {
                    String::new()
                } else {
                    format!(" nor its ID_LIKE={like:?}")
                }
            ),
        );
    }
    let id = if via_like {
        format!("ID={id} (one of the host's ID_LIKE words)")
    } else {
        format!("ID={id}")
    };
    let host_level = host.get("SYSEXT_LEVEL");
    let host_version = host.get("VERSION_ID");
    if host_level.is_none() && host_version.is_none() {
        return MatchVerdict::yes(
            "id",
            format!("{id} matches and the host has neither SYSEXT_LEVEL nor VERSION_ID"),
        );
    }
    let ext_level = ext.get("SYSEXT_LEVEL");
    if let (Some(h), Some(e)) = (host_level, ext_level) {
        return if h == e {
            MatchVerdict::yes("level", format!("{id} and SYSEXT_LEVEL={e} match"))
        } else {
            MatchVerdict::no(
                "level",
                format!("SYSEXT_LEVEL={e} does not match the host's SYSEXT_LEVEL={h}"),
            )
        };
    }
    if let Some(h) = host_version {
        return match ext.get("VERSION_ID") {
            None => MatchVerdict::no(
                "version-id",
                format!(
                    "the extension has neither a SYSEXT_LEVEL{} nor a VERSION_ID to compare with the host's VERSION_ID={h}",
                    host_level
                        .map(|l| format!(" (the host has SYSEXT_LEVEL={l})"))
                        .unwrap_or_default()
                ),
            ),
            Some(e) if e == h => {
                MatchVerdict::yes("version-id", format!("{id} and VERSION_ID={e} match"))
            }
            Some(e) => MatchVerdict::no(
                "version-id",
                format!("VERSION_ID={e} does not match the host's VERSION_ID={h}"),
            ),
        };
    }
    MatchVerdict::yes(
        "level",
        format!("{id} matches; the extension sets no SYSEXT_LEVEL and the host no VERSION_ID"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rf(text: &str) -> ReleaseFile {
        ReleaseFile::parse(text, Path::new("t")).unwrap()
    }

    const HOST: &str = "ID=keelson\nID_LIKE=debian\nVERSION_ID=1.2.0\nSYSEXT_LEVEL=1.0\n";

    #[test]
    fn parses_quotes_escapes_and_comments() {
        let r = rf("# c\n\nNAME=\"Keel \\\"son\\\"\"\nID='keelson'\nX=plain\nEMPTY=\n");
        assert_eq!(r.get("NAME"), Some("Keel \"son\""));
        assert_eq!(r.get("ID"), Some("keelson"));
        assert_eq!(r.get("X"), Some("plain"));
        assert_eq!(r.get("EMPTY"), None);
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, needle) in [
            ("ID=a\nnonsense\n", "line 2"),
            ("A=\"open\n", "unterminated"),
            ("1A=x\n", "variable name"),
            ("A B=x\n", "variable name"),
        ] {
            let e = ReleaseFile::parse(text, Path::new("f")).unwrap_err();
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn render_round_trips() {
        let r = ExtensionRelease {
            id: "keelson".into(),
            sysext_level: Some("1.0".into()),
            version_id: None,
            architecture: "x86-64".into(),
            reload_manager: true,
            image_id: "jq".into(),
            image_version: "1.7 beta".into(),
        };
        let p = rf(&r.render());
        assert_eq!(p.get("ID"), Some("keelson"));
        assert_eq!(p.get("SYSEXT_LEVEL"), Some("1.0"));
        assert_eq!(p.get("VERSION_ID"), None);
        assert_eq!(p.get("EXTENSION_RELOAD_MANAGER"), Some("1"));
        assert_eq!(p.get("IMAGE_VERSION"), Some("1.7 beta"));
    }

    #[test]
    fn matching_table() {
        let host = rf(HOST);
        let cases: &[(&str, bool, &str, &str)] = &[
            ("ID=keelson\nSYSEXT_LEVEL=1.0\n", true, "level", "match"),
            (
                "ID=keelson\nSYSEXT_LEVEL=2.0\n",
                false,
                "level",
                "SYSEXT_LEVEL=2.0",
            ),
            ("ID=flatcar\nSYSEXT_LEVEL=1.0\n", false, "id", "ID=flatcar"),
            ("ID=debian\nSYSEXT_LEVEL=1.0\n", true, "level", "ID_LIKE"),
            ("ID=_any\nSYSEXT_LEVEL=9\n", true, "id", "_any"),
            ("SYSEXT_LEVEL=1.0\n", false, "id", "no ID"),
            (
                "ID=keelson\nVERSION_ID=1.2.0\n",
                true,
                "version-id",
                "VERSION_ID=1.2.0",
            ),
            (
                "ID=keelson\nVERSION_ID=1.3.0\n",
                false,
                "version-id",
                "1.3.0",
            ),
            ("ID=keelson\n", false, "version-id", "neither"),
            (
                "ID=keelson\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\n",
                false,
                "architecture",
                "arm64",
            ),
            (
                "ID=keelson\nSYSEXT_LEVEL=1.0\nARCHITECTURE=_any\n",
                true,
                "level",
                "match",
            ),
            (
                "ID=keelson\nSYSEXT_LEVEL=1.0\nSYSEXT_SCOPE=portable\n",
                false,
                "scope",
                "portable",
            ),
            (
                "ID=keelson\nSYSEXT_LEVEL=1.0\nSYSEXT_SCOPE=\"initrd system\"\n",
                true,
                "level",
                "match",
            ),
        ];
        for (ext, ok, rule, needle) in cases {
            let v = validate(&host, Some(&rf(ext)), "x86-64");
            assert_eq!(v.matches, *ok, "{ext:?}: {v:?}");
            assert_eq!(v.rule, *rule, "{ext:?}: {v:?}");
            assert!(v.reason.contains(needle), "{ext:?}: {v:?}");
        }
        assert!(!validate(&host, None, "x86-64").matches);
    }

    #[test]
    fn host_without_level_falls_back_to_version_id() {
        let host = rf("ID=keelson\nVERSION_ID=3\n");
        let v = validate(&host, Some(&rf("ID=keelson\nSYSEXT_LEVEL=1.0\n")), "x86-64");
        assert!(!v.matches, "{v:?}");
        assert_eq!(v.rule, "version-id");
        let bare = rf("ID=keelson\n");
        assert!(validate(&bare, Some(&rf("ID=keelson\n")), "x86-64").matches);
    }

    #[test]
    fn arch_names() {
        assert_eq!(systemd_arch("x86_64"), Some("x86-64"));
        assert_eq!(systemd_arch("aarch64"), Some("arm64"));
        assert_eq!(systemd_arch("riscv64"), None);
    }
}
