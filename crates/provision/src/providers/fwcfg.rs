//! QEMU fw_cfg: `-fw_cfg name=opt/org.keelson/config,file=config.ign` shows up in sysfs as
//! `/sys/firmware/qemu_fw_cfg/by_name/opt/org.keelson/config/raw`.

use std::path::PathBuf;

use super::{Provider, ProviderError};

/// fw_cfg keys we read, in order: ours, then Flatcar's and CoreOS's so their docs work as is.
pub const FW_CFG_KEYS: [&str; 3] = [
    "opt/org.keelson/config",
    "opt/org.flatcar-linux/config",
    "opt/com.coreos/config",
];

/// Reads the config blob from the fw_cfg sysfs tree.
#[derive(Debug, Clone)]
pub struct FwCfgProvider {
    /// The sysfs directory (`/sys/firmware/qemu_fw_cfg`), a parameter so tests use a temp dir.
    pub sysfs_root: PathBuf,
}

impl Default for FwCfgProvider {
    fn default() -> Self {
        FwCfgProvider {
            sysfs_root: PathBuf::from("/sys/firmware/qemu_fw_cfg"),
        }
    }
}

impl Provider for FwCfgProvider {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        for key in FW_CFG_KEYS {
            let path = self.sysfs_root.join("by_name").join(key).join("raw");
            match std::fs::read(&path) {
                Ok(b) => {
                    tracing::info!(key, "config found in fw_cfg");
                    return Ok(Some(b));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ProviderError::Read {
                        provider: "qemu",
                        path,
                        error: source,
                    });
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(root: &std::path::Path, key: &str, data: &[u8]) {
        let dir = root.join("by_name").join(key);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("raw"), data).unwrap();
    }

    #[test]
    fn key_precedence_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let p = FwCfgProvider {
            sysfs_root: dir.path().to_path_buf(),
        };
        assert_eq!(p.fetch_config().unwrap(), None);
        put(dir.path(), "opt/com.coreos/config", b"coreos");
        assert_eq!(p.fetch_config().unwrap(), Some(b"coreos".to_vec()));
        put(dir.path(), "opt/org.flatcar-linux/config", b"flatcar");
        assert_eq!(p.fetch_config().unwrap(), Some(b"flatcar".to_vec()));
        put(dir.path(), "opt/org.keelson/config", b"keelson");
        assert_eq!(p.fetch_config().unwrap(), Some(b"keelson".to_vec()));
    }

    #[test]
    fn unreadable_blob_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the raw file should be: reading it fails with something other
        // than NotFound.
        std::fs::create_dir_all(dir.path().join("by_name/opt/org.keelson/config/raw")).unwrap();
        let p = FwCfgProvider {
            sysfs_root: dir.path().to_path_buf(),
        };
        let err = p.fetch_config().unwrap_err().to_string();
        assert!(err.contains("org.keelson/config/raw"), "{err}");
    }
}
