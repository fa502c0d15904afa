//! Every path the agent touches, under one root prefix, so tests run against temp dirs.

use std::path::{Path, PathBuf};

/// Where the agent finds settings, state, the ESP, kernel interfaces and the disk.
///
/// All absolute paths are resolved under `root` (`/` on a node, a temp dir in tests). The disk
/// device is found from the running `/usr` unless `disk` names it (an image file in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Root prefix for every absolute path below.
    pub root: PathBuf,
    /// The disk holding both usr slots; `None` = the disk of the running usr partition.
    pub disk: Option<PathBuf>,
    /// Where the ESP is mounted, as an absolute node path (systemd's gpt-auto: `/efi`).
    pub esp_mount: String,
}

impl Paths {
    /// The paths of a real node: root `/`, ESP at `/efi`, disk found from `/usr`.
    pub fn system() -> Paths {
        Paths::under("/")
    }

    /// The node paths under `root`.
    pub fn under(root: impl Into<PathBuf>) -> Paths {
        Paths {
            root: root.into(),
            disk: None,
            esp_mount: "/efi".to_owned(),
        }
    }

    /// `abs` (an absolute node path) under the root prefix.
    pub fn at(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// `/etc/keelson/update.toml`: what provisioning's `updates:` section writes.
    pub fn update_toml(&self) -> PathBuf {
        self.at("/etc/keelson/update.toml")
    }

    /// `/etc/flatcar/update.conf`: Flatcar's node settings, carried over.
    pub fn flatcar_update_conf(&self) -> PathBuf {
        self.at("/etc/flatcar/update.conf")
    }

    /// `/usr/lib/keelson/update.toml`: the OS's defaults.
    pub fn defaults_toml(&self) -> PathBuf {
        self.at("/usr/lib/keelson/update.toml")
    }

    /// `/var/lib/keelson/agent`: the agent's persisted state.
    pub fn state_dir(&self) -> PathBuf {
        self.at("/var/lib/keelson/agent")
    }

    /// `/var/lib/keelson/chunks`: the verified chunks of the update being fetched.
    pub fn chunk_store(&self) -> PathBuf {
        self.at("/var/lib/keelson/chunks")
    }

    /// `/var/lib/keelson/extensions`: the extension files, one directory per extension.
    pub fn extension_store(&self) -> PathBuf {
        self.at("/var/lib/keelson/extensions")
    }

    /// `/var/lib/extensions`: where the independent extensions' links are (a sysext path).
    pub fn sysext_var(&self) -> PathBuf {
        self.at("/var/lib/extensions")
    }

    /// `/run/extensions`: where the OS-bound extensions are linked at boot (a sysext path).
    pub fn sysext_run(&self) -> PathBuf {
        self.at("/run/extensions")
    }

    /// The independent extensions' record inside [`Paths::state_dir`].
    pub fn extensions_state_file(&self) -> PathBuf {
        self.state_dir().join("extensions.json")
    }

    /// The state file inside [`Paths::state_dir`].
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// The lock file every acting process (daemon or CLI) holds while it changes state.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    /// `/run/reboot-required`: written once an update is staged, for kured and friends.
    pub fn reboot_required(&self) -> PathBuf {
        self.at("/run/reboot-required")
    }

    /// `/etc/machine-id`.
    pub fn machine_id(&self) -> PathBuf {
        self.at("/etc/machine-id")
    }

    /// `/proc/sys/kernel/random/boot_id`.
    pub fn boot_id(&self) -> PathBuf {
        self.at("/proc/sys/kernel/random/boot_id")
    }

    /// `/proc/cmdline`.
    pub fn cmdline(&self) -> PathBuf {
        self.at("/proc/cmdline")
    }

    /// `/usr/lib/os-release` of the running /usr.
    pub fn os_release(&self) -> PathBuf {
        self.at("/usr/lib/os-release")
    }

    /// `/usr/share/keelson/update-keys`: trusted release keys (`*.pem`).
    pub fn update_keys(&self) -> PathBuf {
        self.at("/usr/share/keelson/update-keys")
    }

    /// The ESP's root directory.
    pub fn esp(&self) -> PathBuf {
        self.at(&self.esp_mount)
    }

    /// `EFI/Linux` on the ESP, where systemd-boot finds UKIs.
    pub fn esp_linux(&self) -> PathBuf {
        self.esp().join("EFI/Linux")
    }

    /// `/dev/disk/by-partuuid`.
    pub fn by_partuuid(&self) -> PathBuf {
        self.at("/dev/disk/by-partuuid")
    }

    /// `/sys/class/block`.
    pub fn sys_class_block(&self) -> PathBuf {
        self.at("/sys/class/block")
    }

    /// `/dev`.
    pub fn dev(&self) -> PathBuf {
        self.at("/dev")
    }

    /// A path for messages: the node path when the root is `/`, else the prefixed one.
    pub fn display(path: &Path) -> String {
        path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let p = Paths::under("/tmp/x");
        assert_eq!(p.update_toml(), Path::new("/tmp/x/etc/keelson/update.toml"));
        assert_eq!(p.esp_linux(), Path::new("/tmp/x/efi/EFI/Linux"));
        assert_eq!(Paths::system().cmdline(), Path::new("/proc/cmdline"));
    }
}
