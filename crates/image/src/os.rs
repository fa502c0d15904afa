//! The OS definition in `os/`: `os.yaml` (suite, packages, kernel, command line, layout) and the
//! `rootfs/` overlay copied into the root before packages are installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ImageError;

/// File name of the OS definition inside the `os/` directory.
pub const OS_FILE: &str = "os.yaml";
/// Overlay directory inside `os/`, copied over the root before packages are installed.
pub const OVERLAY_DIR: &str = "rootfs";
/// Directory inside `os/` holding the trusted update keys (public keys only) that
/// `update_keys` names.
pub const KEYS_DIR: &str = "keys";

/// Partition sizes of the disk image, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// EFI system partition: systemd-boot and one UKI per installed version.
    pub esp_mib: u64,
    /// Each usr slot (A and B): the erofs image of /usr.
    pub usr_mib: u64,
    /// Each usr-verity slot: the dm-verity superblock and hash tree.
    pub usr_verity_mib: u64,
    /// Root partition as shipped; systemd-repart grows it on first boot.
    pub root_mib: u64,
}

/// `os/os.yaml`, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsDefinition {
    /// os-release `ID=`.
    pub name: String,
    /// os-release `PRETTY_NAME=` prefix.
    pub pretty_name: String,
    /// Default version (os-release `VERSION_ID=`).
    pub version: String,
    /// os-release `SYSEXT_LEVEL=`: system extensions must match it.
    pub sysext_level: String,
    /// Debian suite, e.g. `trixie`.
    pub suite: String,
    /// Debian mirror URL.
    pub mirror: String,
    /// Archive components, e.g. `[main]`.
    pub components: Vec<String>,
    /// Kernel package.
    pub kernel: String,
    /// Packages installed on top of the minbase variant.
    pub packages: Vec<String>,
    /// Kernel command line of the UKI (without `usrhash=`, which the build adds).
    pub cmdline: String,
    /// Partition sizes.
    pub layout: Layout,
    /// Trusted update keys: file names (`*.pem`, ed25519 public keys) under `os/keys/`, copied
    /// read-only into `/usr/share/keelson/update-keys/`. Empty when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_keys: Vec<String>,
}

/// The characters Debian allows in a package name (policy 5.6.7), lower-case only.
fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A key file name: a plain file name (no directory part) ending in `.pem`.
pub fn valid_key_file_name(name: &str) -> bool {
    name.len() > ".pem".len()
        && name.len() <= 64
        && name.ends_with(".pem")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A version usable in file names, partition labels and os-release.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
}

impl OsDefinition {
    /// Parse `text` (the contents of `path`) and validate it.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ImageError> {
        let def: OsDefinition =
            serde_yaml_ng::from_str(text).map_err(|e| ImageError::OsDefinition {
                path: path.to_path_buf(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
            })?;
        def.validate(path)?;
        Ok(def)
    }

    /// Read and validate `os_dir/os.yaml`.
    pub fn load(os_dir: &Path) -> Result<Self, ImageError> {
        let path = os_dir.join(OS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ImageError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &text)
    }

    fn invalid(path: &Path, field: &str, message: impl Into<String>) -> ImageError {
        ImageError::OsField {
            path: path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ImageError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(Self::invalid(
                path,
                "name",
                format!(
                    "{:?} is not a valid os-release ID (lower-case a-z, 0-9, . _ -)",
                    self.name
                ),
            ));
        }
        if !valid_version(&self.version) {
            return Err(Self::invalid(
                path,
                "version",
                format!("{:?} is not a valid version", self.version),
            ));
        }
        if !valid_version(&self.sysext_level) {
            return Err(Self::invalid(
                path,
                "sysext_level",
                format!("{:?} is not a valid SYSEXT_LEVEL", self.sysext_level),
            ));
        }
        if self.suite.is_empty()
            || !self
                .suite
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Self::invalid(
                path,
                "suite",
                format!("{:?} is not a Debian suite name", self.suite),
            ));
        }
        if !(self.mirror.starts_with("http://") || self.mirror.starts_with("https://")) {
            return Err(Self::invalid(
                path,
                "mirror",
                format!("{:?} is not an http(s) URL", self.mirror),
            ));
        }
        if self.components.is_empty() {
            return Err(Self::invalid(
                path,
                "components",
                "at least one component is needed (main)",
            ));
        }
        if self.kernel.is_empty() {
            return Err(Self::invalid(
                path,
                "kernel",
                "no kernel package: the image cannot boot without one",
            ));
        }
        if !valid_package_name(&self.kernel) {
            return Err(Self::invalid(
                path,
                "kernel",
                format!("{:?} is not a Debian package name", self.kernel),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.packages.iter().enumerate() {
            if !valid_package_name(p) {
                return Err(Self::invalid(
                    path,
                    &format!("packages[{i}]"),
                    format!("{p:?} is not a Debian package name"),
                ));
            }
            if !seen.insert(p.as_str()) {
                return Err(Self::invalid(
                    path,
                    &format!("packages[{i}]"),
                    format!("{p:?} is listed twice"),
                ));
            }
        }
        for required in ["systemd", "dracut", "systemd-boot-efi", "systemd-ukify"] {
            if !seen.contains(required) {
                return Err(Self::invalid(
                    path,
                    "packages",
                    format!(
                        "{required:?} is required by the build (initrd, systemd-boot, UKI) but not listed"
                    ),
                ));
            }
        }
        if self.cmdline.contains("usrhash=") {
            return Err(Self::invalid(
                path,
                "cmdline",
                "must not carry usrhash=: the build adds it",
            ));
        }
        let mut keys = BTreeSet::new();
        for (i, k) in self.update_keys.iter().enumerate() {
            let field = format!("update_keys[{i}]");
            if !valid_key_file_name(k) {
                return Err(Self::invalid(
                    path,
                    &field,
                    format!(
                        "{k:?} is not a key file name under {KEYS_DIR}/ (letters, digits, . _ -, ending in .pem)"
                    ),
                ));
            }
            if !keys.insert(k.as_str()) {
                return Err(Self::invalid(
                    path,
                    &field,
                    format!("{k:?} is listed twice"),
                ));
            }
        }
        let l = &self.layout;
        for (field, v, min) in [
            ("layout.esp_mib", l.esp_mib, 32),
            ("layout.usr_mib", l.usr_mib, 64),
            ("layout.usr_verity_mib", l.usr_verity_mib, 1),
            ("layout.root_mib", l.root_mib, 32),
        ] {
            if v < min {
                return Err(Self::invalid(
                    path,
                    field,
                    format!("{v} MiB is below the minimum of {min} MiB"),
                ));
            }
            if v > 1 << 20 {
                return Err(Self::invalid(
                    path,
                    field,
                    format!("{v} MiB is more than 1 TiB"),
                ));
            }
        }
        Ok(())
    }

    /// The files of [`OsDefinition::update_keys`], under `os_dir/keys/`.
    pub fn update_key_paths(&self, os_dir: &Path) -> Vec<PathBuf> {
        self.update_keys
            .iter()
            .map(|k| os_dir.join(KEYS_DIR).join(k))
            .collect()
    }

    /// Every package mmdebstrap installs: the kernel first, then the list.
    pub fn all_packages(&self) -> Vec<String> {
        let mut v = vec![self.kernel.clone()];
        v.extend(self.packages.iter().filter(|p| **p != self.kernel).cloned());
        v
    }

    /// The os-release file of a build of this OS at `version`.
    pub fn os_release(&self, version: &str) -> String {
        format!(
            "NAME=\"{pretty}\"\nPRETTY_NAME=\"{pretty} {version}\"\nID={id}\nID_LIKE=debian\nVERSION={version}\nVERSION_ID={version}\nSYSEXT_LEVEL={level}\nIMAGE_ID={id}\nIMAGE_VERSION={version}\nHOME_URL=\"https://github.com/keelson-os/keelson\"\n",
            pretty = self.pretty_name,
            id = self.name,
            level = self.sysext_level,
        )
    }
}

/// Every file under `dir`, relative, sorted: the overlay's contribution to the cache key.
pub fn overlay_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| ImageError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| ImageError::Io {
                path: d.clone(),
                source,
            })?;
            let p = entry.path();
            let ft = entry.file_type().map_err(|source| ImageError::Io {
                path: p.clone(),
                source,
            })?;
            if ft.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = include_str!("../../../os/os.yaml");

    #[test]
    fn the_shipped_definition_is_valid() {
        let d = OsDefinition::parse(Path::new("os/os.yaml"), GOOD).unwrap();
        assert_eq!(d.name, "keelson");
        assert_eq!(d.suite, "trixie");
        assert_eq!(d.all_packages()[0], d.kernel);
        let rel = d.os_release("9.9.9");
        assert!(rel.contains("\nID=keelson\n"), "{rel}");
        assert!(rel.contains("\nVERSION_ID=9.9.9\n"), "{rel}");
        assert!(rel.contains("\nSYSEXT_LEVEL=1.0\n"), "{rel}");
    }

    fn with(from: &str, to: &str) -> Result<OsDefinition, ImageError> {
        assert!(GOOD.contains(from), "fixture text {from:?} missing");
        OsDefinition::parse(Path::new("os/os.yaml"), &GOOD.replacen(from, to, 1))
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("kernel: linux-image-cloud-amd64", "kernel: \"\"", "kernel"),
            (
                "kernel: linux-image-cloud-amd64",
                "kernel: Linux_Image",
                "kernel",
            ),
            ("  - runc\n", "  - \"Bad Name\"\n", "packages["),
            ("  - runc\n", "  - runc\n  - runc\n", "listed twice"),
            ("  - dracut\n", "", "\"dracut\" is required"),
            ("version: 0.1.0", "version: \"0.1 beta\"", "version"),
            ("esp_mib: 128", "esp_mib: 1", "layout.esp_mib"),
            ("usr_mib: 768", "usr_mib: 0", "layout.usr_mib"),
            (
                "mirror: http://deb.debian.org/debian",
                "mirror: ftp://x",
                "mirror",
            ),
            (
                "cmdline: console=ttyS0",
                "cmdline: usrhash=ab console=ttyS0",
                "usrhash",
            ),
            (
                "update_keys: []",
                "update_keys: [../secret.pem]",
                "update_keys[0]",
            ),
            (
                "update_keys: []",
                "update_keys: [release.key]",
                "update_keys[0]",
            ),
            (
                "update_keys: []",
                "update_keys: [a.pem, b.pem, a.pem]",
                "update_keys[2]",
            ),
        ];
        for (from, to, want) in cases {
            let err = with(from, to).unwrap_err().to_string();
            assert!(err.contains(want), "{from} -> {to}: {err}");
            assert!(err.contains("os/os.yaml"), "{err}");
        }
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = with("suite: trixie", "suite: [trixie").unwrap_err();
        match &err {
            ImageError::OsDefinition { line: Some(l), .. } => assert!(*l > 1, "{err}"),
            other => panic!("unexpected {other}"),
        }
        let err = with("suite: trixie", "suite: trixie\nsuit: x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("suit"), "{err}");
    }

    #[test]
    fn update_keys_resolve_under_os_keys() {
        let d = with(
            "update_keys: []",
            "update_keys: [release-2026.pem, dev_1.pem]",
        )
        .unwrap();
        assert_eq!(
            d.update_key_paths(Path::new("/src/os")),
            [
                PathBuf::from("/src/os/keys/release-2026.pem"),
                PathBuf::from("/src/os/keys/dev_1.pem")
            ]
        );
        let none = OsDefinition::parse(Path::new("os/os.yaml"), GOOD).unwrap();
        assert!(none.update_key_paths(Path::new("os")).is_empty());
        for bad in [
            "",
            ".pem",
            "a/b.pem",
            "..pem",
            "key.pub",
            "k y.pem",
            ".hidden.pem",
        ] {
            assert!(!valid_key_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn package_names() {
        for ok in [
            "runc",
            "g++",
            "libc6",
            "linux-image-6.1.0-1-amd64",
            "xz-utils",
        ] {
            assert!(valid_package_name(ok), "{ok}");
        }
        for bad in ["", "a", "Runc", "foo bar", "-x", "foo_bar", "foo;rm"] {
            assert!(!valid_package_name(bad), "{bad}");
        }
    }
}
