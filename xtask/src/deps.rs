//! Host packages: install what is missing with apt, idempotently, and say what was done.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util;

/// Debian bookworm packages the host needs, and why.
pub const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boot images under TCG"),
    (
        "qemu-utils",
        "qemu-img: the qcow2 overlay a snapshot test VM writes to across guest resets",
    ),
    ("ovmf", "UEFI firmware for QEMU"),
    ("mmdebstrap", "build the Debian root of the image"),
    (
        "erofs-utils",
        "mkfs.erofs for /usr and extensions, fsck.erofs for sysext check",
    ),
    (
        "systemd-container",
        "systemd-dissect: reference for the sysext DDI tests",
    ),
    (
        "cryptsetup-bin",
        "veritysetup: reference for the verity crate",
    ),
    ("dosfstools", "mkfs.vfat for the ESP"),
    ("mtools", "copy files into the ESP without root mounts"),
    ("systemd-boot-efi", "systemd-boot EFI binaries"),
    ("gdisk", "sgdisk: reference for the disk crate"),
    ("e2fsprogs", "mkfs.ext4 for test partitions"),
    ("postgresql", "keelson-server's PostgreSQL backend tests"),
    (
        "etcd-server",
        "etcd 3.4: the agent's etcd-lock tests (JSON gateway /v3/kv/txn)",
    ),
    ("chromium", "headless browser test of the dashboard"),
    ("chromium-driver", "WebDriver: dashboard browser test"),
    ("zstd", "payload compression reference"),
    ("openssl", "ed25519 reference for the payload signatures"),
    ("binutils", "objcopy: reference UKI for the payload tests"),
    ("ca-certificates", "TLS to the Debian mirror"),
    ("curl", "Packages index: image package check"),
    (
        "openssh-client",
        "ssh-keygen and ssh: the demo's key to its node",
    ),
    ("xz-utils", "unpack Packages.xz"),
];

fn installed(pkg: &str) -> bool {
    util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|out| out.contains("install ok installed"))
}

/// Packages from [`HOST_PACKAGES`] that are not installed.
pub fn missing() -> Vec<&'static str> {
    HOST_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect()
}

pub fn run(check_only: bool) -> Result<()> {
    util::step("host packages");
    let missing = missing();
    if missing.is_empty() {
        eprintln!(
            "all {} host packages are installed; nothing to do",
            HOST_PACKAGES.len()
        );
        return Ok(());
    }
    for p in &missing {
        let why = HOST_PACKAGES
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, w)| *w)
            .unwrap_or("");
        eprintln!("missing: {p} ({why})");
    }
    if check_only {
        bail!(
            "{} host package(s) missing: {}",
            missing.len(),
            missing.join(" ")
        );
    }
    if !util::have("apt-get") {
        bail!(
            "apt-get not found: install these packages by hand: {}",
            missing.join(" ")
        );
    }
    eprintln!("installing: {}", missing.join(" "));
    util::run(Command::new("apt-get").args(["update", "-q"]))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still = self::missing();
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still missing: {}",
            still.join(" ")
        );
    }
    eprintln!("installed {} package(s)", missing.len());
    Ok(())
}
