//! The Ignition result file: after a successful first boot, `/etc/.ignition-result.json` in
//! the target records when and in which boot the machine was provisioned, as Ignition's files
//! stage leaves it (`createResultFile` in `internal/exec/stages/files/filesystemEntries.go`),
//! so tools that read it (the machine-config daemon, `coreos-*` helpers comparing
//! `provisioningBootID` with the running boot) and users who look for it find the same thing
//! on Keelson.
//!
//! The bytes are Go's `json.MarshalIndent(result, "", "  ")` of Ignition's struct plus a
//! newline: the fields in its order, `provisioningBootID` (the kernel's boot id, trimmed),
//! `provisioningDate` (`time.RFC3339`, UTC in the initrd), `userConfigProvided` (a provider
//! supplied a config), and `previousReport` only when an earlier result file was found (it is
//! then nested, and Ignition warns that it has already run on this system). Like Ignition's
//! `fileEntry` with `overwrite: true` and `mode: 0600`, the file replaces an earlier one, has
//! mode 0600 and is owned by root (when running as root). It is written through
//! [`TargetRoot`] (a link planted at `/etc` cannot send it outside the root), to a temporary
//! name in the same directory and renamed, so a crash leaves the old file or the new one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::target::{TargetError, TargetRoot};

/// Where the result file lives in the target root (Ignition's `distro.ResultFilePath()`).
pub const RESULT_FILE: &str = "/etc/.ignition-result.json";

/// The result file's mode, as Ignition writes it.
pub const RESULT_MODE: u32 = 0o600;

/// The running kernel's boot id (`provisioningBootID`).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Ignition's warning when it finds an earlier result file (it then nests that report).
pub const ALREADY_RAN_WARNING: &str = "Ignition has already run on this system. Unexpected behavior may occur. Ignition is not designed to run more than once per system.";

/// What Ignition records about a successful provisioning run, under its JSON names and in
/// its field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnitionResult {
    /// The boot id of the provisioning boot (`/proc/sys/kernel/random/boot_id`).
    #[serde(rename = "provisioningBootID")]
    pub provisioning_boot_id: String,
    /// When provisioning finished, RFC 3339 in UTC (`2026-12-04T14:45:00Z`).
    #[serde(rename = "provisioningDate")]
    pub provisioning_date: String,
    /// Whether a provider supplied a user config (false when an empty one was applied).
    #[serde(rename = "userConfigProvided")]
    pub user_config_provided: bool,
    /// The result file an earlier run left, nested as it was read (`omitempty` in Ignition).
    #[serde(
        rename = "previousReport",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_report: Option<serde_json::Value>,
}

/// Why the result file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The boot id could not be read.
    #[error("reading the boot id from {path}: {error}")]
    BootId {
        /// The file read.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The boot id file held something that is not a boot id.
    #[error("{path}: not a boot id: {content:?}")]
    BadBootId {
        /// The file read.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
    },
    /// An earlier result file could not be read or is not JSON (Ignition fails here too:
    /// "couldn't unmarshal previous report output").
    #[error("reading the previous report {path}: {reason}")]
    PreviousReport {
        /// The in-target path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The path could not be resolved inside the target root.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Writing the file failed.
    #[error("writing {path}: {error}")]
    Write {
        /// The in-target path.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

impl IgnitionResult {
    /// The record of a run that finished at `now` in the boot whose id is `boot_id`, with no
    /// previous report.
    pub fn new(now: std::time::SystemTime, boot_id: &str, user_config_provided: bool) -> Self {
        IgnitionResult {
            provisioning_boot_id: boot_id.trim().to_string(),
            provisioning_date: rfc3339_utc(now),
            user_config_provided,
            previous_report: None,
        }
    }

    /// The file's bytes: Go's `json.MarshalIndent` with two spaces, then a newline. Go
    /// escapes `<`, `>`, `&`, U+2028 and U+2029 in strings; those characters can only occur
    /// inside strings of the output, so they are escaped the same way here.
    pub fn to_json(&self) -> String {
        // Strings, a bool and a JSON value: serialization cannot fail, but stay panic-free.
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        let mut out = String::with_capacity(text.len() + 1);
        for c in text.chars() {
            match c {
                '<' => out.push_str("\\u003c"),
                '>' => out.push_str("\\u003e"),
                '&' => out.push_str("\\u0026"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        }
        out.push('\n');
        out
    }
}

/// Read and check a boot id file (`BOOT_ID_PATH` in a real run).
pub fn read_boot_id(path: &Path) -> Result<String, ResultError> {
    let text = std::fs::read_to_string(path).map_err(|error| ResultError::BootId {
        path: path.to_path_buf(),
        error,
    })?;
    let id = text.trim();
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if !ok {
        return Err(ResultError::BadBootId {
            path: path.to_path_buf(),
            content: id.chars().take(64).collect(),
        });
    }
    Ok(id.to_string())
}

/// The result file an earlier run left in the target, parsed as any JSON value; `None` when
/// there is none. (Ignition skips this on a live image; a Keelson root never is one.)
pub fn read_previous_report(target: &TargetRoot) -> Result<Option<serde_json::Value>, ResultError> {
    let host = target.resolve(RESULT_FILE)?;
    let bad = |reason: String| ResultError::PreviousReport {
        path: RESULT_FILE.into(),
        reason,
    };
    let bytes = match std::fs::read(&host) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(format!("not JSON: {e}")))
}

/// Write `result` to [`RESULT_FILE`] in the target: a temporary file in the same directory
/// with mode [`RESULT_MODE`] (owned by root when running as root), synced, then renamed over
/// any earlier one. Missing parent directories are created (0755). Returns the host path.
pub fn write_result_file(
    target: &TargetRoot,
    result: &IgnitionResult,
) -> Result<PathBuf, ResultError> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let host = target.resolve(RESULT_FILE)?;
    let io = |error| ResultError::Write {
        path: RESULT_FILE.into(),
        error,
    };
    let dir = host.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ignition-result.")
        .tempfile_in(dir)
        .map_err(io)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(RESULT_MODE))
        .map_err(io)?;
    if running_as_root() {
        std::os::unix::fs::chown(tmp.path(), Some(0), Some(0)).map_err(io)?;
    }
    tmp.write_all(result.to_json().as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&host).map_err(|e| io(e.error))?;
    Ok(host)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What the `done` stage calls after every other stage succeeded: record this boot (its
/// boot id from [`BOOT_ID_PATH`], the current time, an earlier result nested as
/// `previousReport`) in the target root at `root`. A `previous_report` in the returned record
/// means the caller should warn with [`ALREADY_RAN_WARNING`], as Ignition does.
pub fn record_first_boot(
    root: &Path,
    user_config_provided: bool,
) -> Result<IgnitionResult, ResultError> {
    record_first_boot_with(root, Path::new(BOOT_ID_PATH), user_config_provided)
}

/// [`record_first_boot`] with the boot id read from `boot_id_path`.
pub fn record_first_boot_with(
    root: &Path,
    boot_id_path: &Path,
    user_config_provided: bool,
) -> Result<IgnitionResult, ResultError> {
    let target = TargetRoot::new(root)?;
    let previous = read_previous_report(&target)?;
    let boot_id = read_boot_id(boot_id_path)?;
    let mut result =
        IgnitionResult::new(std::time::SystemTime::now(), &boot_id, user_config_provided);
    result.previous_report = previous;
    write_result_file(&target, &result)?;
    Ok(result)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time (before 1970 is clamped to the epoch).
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_164_799, "2024-02-28T23:59:59Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (1_796_395_503, "2026-12-04T14:45:03Z"),
        ] {
            assert_eq!(rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn json_is_ignitions() {
        let r = IgnitionResult::new(
            UNIX_EPOCH + Duration::from_secs(1_796_395_503),
            "0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e\n",
            true,
        );
        // json.MarshalIndent(result, "", "  ") + "\n", fields in the Go struct's order,
        // previousReport left out (omitempty).
        assert_eq!(
            r.to_json(),
            "{\n  \"provisioningBootID\": \"0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e\",\n  \"provisioningDate\": \"2026-12-04T14:45:03Z\",\n  \"userConfigProvided\": true\n}\n"
        );
        let back: IgnitionResult = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn previous_report_is_nested_with_sorted_keys_and_go_escapes() {
        let mut r = IgnitionResult::new(
            UNIX_EPOCH + Duration::from_secs(1_796_395_503),
            "0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e",
            false,
        );
        // Go decodes the old file into map[string]interface{} and marshals its keys sorted.
        r.previous_report = Some(
            serde_json::from_str(
                r#"{"userConfigProvided":true,"provisioningDate":"2026-01-01T00:00:00Z","provisioningBootID":"a<b>&c"}"#,
            )
            .unwrap(),
        );
        assert_eq!(
            r.to_json(),
            "{\n  \"provisioningBootID\": \"0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e\",\n  \"provisioningDate\": \"2026-12-04T14:45:03Z\",\n  \"userConfigProvided\": false,\n  \"previousReport\": {\n    \"provisioningBootID\": \"a\\u003cb\\u003e\\u0026c\",\n    \"provisioningDate\": \"2026-01-01T00:00:00Z\",\n    \"userConfigProvided\": true\n  }\n}\n"
        );
        let back: IgnitionResult = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
