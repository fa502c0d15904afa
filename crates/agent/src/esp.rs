//! Boot entries on the ESP: one UKI per version in `EFI/Linux`, named with systemd-boot's
//! boot-counting suffix (`keelson_2.0+3.efi`, `keelson_2.0+1-2.efi`, `keelson_2.0+0-3.efi`,
//! blessed: `keelson_2.0.efi`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fsio;

/// Tries a freshly installed version gets.
pub const INITIAL_TRIES: u32 = 3;
/// File name prefix of Keelson's UKIs.
pub const UKI_PREFIX: &str = "keelson_";

/// An ESP operation failed; names the file.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// Reading, renaming, syncing or removing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<fsio::IoError> for EspError {
    fn from(e: fsio::IoError) -> Self {
        Self::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

/// The boot-counting state of one UKI file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Counter {
    /// No counter: blessed (a boot reached boot-complete.target), or never counted.
    Blessed,
    /// Tries left (and done so far).
    Counting {
        /// Tries left.
        left: u32,
        /// Tries used.
        done: u32,
    },
}

impl Counter {
    /// No tries left: systemd-boot sorts it last; the previous version boots.
    pub fn exhausted(self) -> bool {
        matches!(self, Counter::Counting { left: 0, .. })
    }
}

/// One Keelson UKI on the ESP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UkiEntry {
    /// The file name in `EFI/Linux`.
    pub file_name: String,
    /// The version it boots.
    pub version: String,
    /// Its boot counter.
    pub counter: Counter,
}

impl UkiEntry {
    /// Parses `keelson_<version>[+LEFT[-DONE]].efi`; `None` for other files.
    ///
    /// Versions may contain `+` themselves (`2026.11.24+git`): only a last `+` followed by
    /// digits (and optionally `-digits`) is a counter, as systemd-boot reads it.
    pub fn parse(file_name: &str) -> Option<UkiEntry> {
        let stem = file_name
            .strip_prefix(UKI_PREFIX)?
            .strip_suffix(".efi")
            .or_else(|| file_name.strip_prefix(UKI_PREFIX)?.strip_suffix(".EFI"))?;
        let (version, counter) = match stem.rsplit_once('+') {
            Some((v, c)) => match parse_counter(c) {
                Some(counter) => (v, counter),
                None => (stem, Counter::Blessed),
            },
            None => (stem, Counter::Blessed),
        };
        if version.is_empty() {
            return None;
        }
        Some(UkiEntry {
            file_name: file_name.to_owned(),
            version: version.to_owned(),
            counter,
        })
    }
}

fn parse_counter(c: &str) -> Option<Counter> {
    let digits = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match c.split_once('-') {
        Some((l, d)) => Some(Counter::Counting {
            left: digits(l)?,
            done: digits(d)?,
        }),
        None => Some(Counter::Counting {
            left: digits(c)?,
            done: 0,
        }),
    }
}

/// The file name a new version's UKI is installed under: `keelson_<version>+3.efi`.
pub fn staged_name(version: &str) -> String {
    format!("{UKI_PREFIX}{version}+{INITIAL_TRIES}.efi")
}

/// The temporary name a UKI is downloaded to (not `*.efi`, so systemd-boot never lists it).
pub fn temp_name(version: &str) -> String {
    format!(".{UKI_PREFIX}{version}.efi.part")
}

/// Every Keelson UKI in `dir` (`EFI/Linux`), sorted by file name; a missing dir is empty.
pub fn entries(dir: &Path) -> Result<Vec<UkiEntry>, EspError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EspError::Io {
                action: "listing",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| EspError::Io {
            action: "listing",
            path: dir.to_owned(),
            source,
        })?;
        if let Some(entry) = e.file_name().to_str().and_then(UkiEntry::parse) {
            out.push(entry);
        }
    }
    out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(out)
}

/// The entry of `version`, if any (the first by name if several).
pub fn entry_for<'a>(entries: &'a [UkiEntry], version: &str) -> Option<&'a UkiEntry> {
    entries.iter().find(|e| e.version == version)
}

/// Removes the entries of versions not in `keep` (the versions in either usr slot); returns
/// the removed file names. The directory is synced afterwards.
pub fn remove_unused(dir: &Path, keep: &[&str]) -> Result<Vec<String>, EspError> {
    let mut removed = Vec::new();
    for e in entries(dir)? {
        if keep.contains(&e.version.as_str()) {
            continue;
        }
        let path = dir.join(&e.file_name);
        std::fs::remove_file(&path).map_err(|source| EspError::Io {
            action: "removing",
            path: path.clone(),
            source,
        })?;
        removed.push(e.file_name);
    }
    if !removed.is_empty() {
        fsio::sync_dir(dir)?;
    }
    Ok(removed)
}

/// Removes every entry of `version` (used by `rollback` and before a slot is overwritten).
pub fn remove_version(dir: &Path, version: &str) -> Result<Vec<String>, EspError> {
    let mut removed = Vec::new();
    for e in entries(dir)?.into_iter().filter(|e| e.version == version) {
        let path = dir.join(&e.file_name);
        std::fs::remove_file(&path).map_err(|source| EspError::Io {
            action: "removing",
            path,
            source,
        })?;
        removed.push(e.file_name);
    }
    if !removed.is_empty() {
        fsio::sync_dir(dir)?;
    }
    Ok(removed)
}

/// Renames `from` to `to` on the ESP so that the new name survives a power cut with its
/// content: on FAT a file's size and first cluster live in its directory entry, and a rename
/// writes the new entry empty until the inode itself is written back, so syncing only the
/// directory left a 0-byte `keelson_<v>+3.efi` after a power cut (the VM test's cut after the
/// rename). Syncs the renamed file, then its directory.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), EspError> {
    std::fs::rename(from, to).map_err(fsio::io("renaming", from))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(fsio::io("syncing", to))?;
    Ok(fsio::sync_dir(to.parent().unwrap_or(Path::new(".")))?)
}

/// Free bytes on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, EspError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| EspError::Io {
        action: "checking free space on",
        path: dir.to_owned(),
        source: e.into(),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_table() {
        let c = |left, done| Counter::Counting { left, done };
        let cases: &[(&str, Option<(&str, Counter)>)] = &[
            ("keelson_2.0+3.efi", Some(("2.0", c(3, 0)))),
            ("keelson_2.0+1-2.efi", Some(("2.0", c(1, 2)))),
            ("keelson_2.0+0-3.efi", Some(("2.0", c(0, 3)))),
            ("keelson_2.0.efi", Some(("2.0", Counter::Blessed))),
            (
                "keelson_2026.11.24+git.efi",
                Some(("2026.11.24+git", Counter::Blessed)),
            ),
            (
                "keelson_2026.11.24+git+2-1.efi",
                Some(("2026.11.24+git", c(2, 1))),
            ),
            ("keelson_2.0+x-1.efi", Some(("2.0+x-1", Counter::Blessed))),
            ("keelson_.efi", None),
            ("keelson_+3.efi", None),
            ("other_2.0.efi", None),
            (".keelson_2.0.efi.part", None),
            ("keelson_2.0+3.conf", None),
        ];
        for (name, want) in cases {
            let got = UkiEntry::parse(name).map(|e| (e.version, e.counter));
            let want = want.map(|(v, c)| (v.to_string(), c));
            assert_eq!(got, want, "{name}");
        }
        assert!(c(0, 3).exhausted());
        assert!(!c(1, 2).exhausted());
        assert!(!Counter::Blessed.exhausted());
        assert_eq!(staged_name("2.0"), "keelson_2.0+3.efi");
        assert!(UkiEntry::parse(&temp_name("2.0")).is_none());
    }

    #[test]
    fn cleanup_keeps_the_versions_in_slots() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "keelson_1.0.efi",
            "keelson_2.0+0-3.efi",
            "keelson_3.0+3.efi",
            "keelson_0.9+1-2.efi",
            "systemd-bootx64.efi",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let removed = remove_unused(dir.path(), &["1.0", "3.0"]).unwrap();
        assert_eq!(removed, vec!["keelson_0.9+1-2.efi", "keelson_2.0+0-3.efi"]);
        let left: Vec<_> = entries(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.file_name)
            .collect();
        assert_eq!(left, vec!["keelson_1.0.efi", "keelson_3.0+3.efi"]);
        assert!(dir.path().join("systemd-bootx64.efi").exists());
        assert_eq!(
            remove_version(dir.path(), "3.0").unwrap(),
            vec!["keelson_3.0+3.efi"]
        );
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
