//! The Ignition result file: after a successful first boot, `/etc/.ignition-result.json` in
//! the target records when and in which boot the machine was provisioned, as Ignition's files
//! stage leaves it (`createResultFile`, `internal/exec/stages/files`), so tools that read it
//! (the machine-config daemon, `coreos-*` helpers comparing `provisioningBootID` with the
//! running boot) and users who look for it find the same thing on Keelson.
//!
//! The JSON is Go's `json.Marshal` of Ignition's struct: one line, no trailing newline, the
//! fields `provisioningDate` (RFC 3339), `provisioningBootID` (the kernel's boot id) and
//! `userConfigProvided`. The file is written into the target through [`TargetRoot`] (a link
//! planted at `/etc` cannot send it outside the root), to a temporary name and renamed,
//! mode 0644.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::target::{TargetError, TargetRoot};

/// Where the result file lives in the target root.
pub const RESULT_FILE: &str = "/etc/.ignition-result.json";

/// The running kernel's boot id (`provisioningBootID`).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// What Ignition records about a successful provisioning run, under its JSON names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnitionResult {
    /// When provisioning finished, RFC 3339 in UTC (`2026-12-04T14:45:00Z`).
    #[serde(rename = "provisioningDate")]
    pub provisioning_date: String,
    /// The boot id of the provisioning boot (`/proc/sys/kernel/random/boot_id`).
    #[serde(rename = "provisioningBootID")]
    pub provisioning_boot_id: String,
    /// Whether a provider supplied a user config (false when an empty one was applied).
    #[serde(rename = "userConfigProvided")]
    pub user_config_provided: bool,
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
    /// The path could not be resolved inside the target root.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Writing the file failed.
    #[error("writing {path}: {error}")]
    Write {
        /// The in-target path.
        path: String,
        /// Why.
        error: String,
    },
}

impl IgnitionResult {
    /// The record of a run that finished at `now` in the boot whose id is `boot_id`.
    pub fn new(now: std::time::SystemTime, boot_id: &str, user_config_provided: bool) -> Self {
        IgnitionResult {
            provisioning_date: rfc3339_utc(now),
            provisioning_boot_id: boot_id.trim().to_string(),
            user_config_provided,
        }
    }

    /// The file's bytes: compact JSON, as Go's `json.Marshal` writes it.
    pub fn to_json(&self) -> String {
        // Three plain fields: serialization cannot fail, but stay panic-free anyway.
        serde_json::to_string(self).unwrap_or_default()
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

/// Write `result` to [`RESULT_FILE`] in the target, atomically (temp file, rename), 0644.
/// An earlier result (a re-provisioned machine) is replaced. Returns the host path.
pub fn write_result_file(
    target: &TargetRoot,
    result: &IgnitionResult,
) -> Result<PathBuf, ResultError> {
    let host = target.resolve(RESULT_FILE)?;
    crate::passwd::write_atomic(&host, result.to_json().as_bytes(), 0o644).map_err(|e| {
        ResultError::Write {
            path: RESULT_FILE.into(),
            error: e.to_string(),
        }
    })?;
    // write_atomic keeps an old file's mode; Ignition's file is always 0644.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o644)).map_err(|e| {
        ResultError::Write {
            path: RESULT_FILE.into(),
            error: e.to_string(),
        }
    })?;
    Ok(host)
}

/// What the `done` stage calls after every other stage succeeded: record this boot (its
/// boot id from [`BOOT_ID_PATH`], the current time) in the target root at `root`.
pub fn record_first_boot(
    root: &Path,
    user_config_provided: bool,
) -> Result<IgnitionResult, ResultError> {
    let target = TargetRoot::new(root)?;
    let boot_id = read_boot_id(Path::new(BOOT_ID_PATH))?;
    let result = IgnitionResult::new(std::time::SystemTime::now(), &boot_id, user_config_provided);
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
        assert_eq!(
            r.to_json(),
            r#"{"provisioningDate":"2026-12-04T14:45:03Z","provisioningBootID":"0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e","userConfigProvided":true}"#
        );
        let back: IgnitionResult = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
