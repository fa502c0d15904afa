//! What the image build needs but a running node does not: the tools that make the initrd and
//! the UKI (dracut, ukify and their helpers) and the package manager that made the root (apt).
//! They are used in the working root after the cached root is copied; `/usr` (the erofs) is
//! made from a copy of that root with them purged, so they never ship in an image.
//!
//! Kept on purpose, although the build uses them too: `systemd-boot-efi` (the loader's EFI
//! binary; `systemd-boot`, which carries `systemd-bless-boot` for boot counting, depends on
//! it), `dpkg` (Essential, and its database is the node's record of what `/usr` holds) and
//! `e2fsprogs`/`dosfstools` (the node and its first boot format file systems with them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use keelson_cmd as cmd;

use crate::{ImageError, io_err};

/// Packages that only the image build uses, purged from the root that becomes `/usr`.
/// `dracut-install` and `cpio` come with dracut, the `python3-*` modules with ukify (python3
/// itself stays: xfsprogs' `xfs_scrub_all` needs it), `zstd` is dracut's compressor;
/// `apt`, `libapt-pkg7.0`, `sqv` and `debian-archive-keyring` installed the root and cannot
/// install anything into a read-only `/usr`.
pub const BUILD_ONLY_PACKAGES: [&str; 13] = [
    "dracut",
    "dracut-core",
    "dracut-install",
    "cpio",
    "systemd-ukify",
    "python3-pefile",
    "python3-zstandard",
    "python3-cffi-backend",
    "zstd",
    "apt",
    "libapt-pkg7.0",
    "sqv",
    "debian-archive-keyring",
];

/// Directories that the purge leaves behind because no package owns them: Keelson's own
/// dracut configuration and modules (they are inside the initrd already).
const BUILD_ONLY_DIRS: [&str; 2] = ["etc/dracut.conf.d", "usr/lib/dracut"];

/// Files the purge (and the build's own `ldconfig`, `crate::build`) writes with the time of the
/// build (dpkg's and update-alternatives' logs, ldconfig's cache of file times): removed
/// again, as mmdebstrap removes them after the install, so that two builds of the same inputs
/// give the same /usr (its factory copy of /var is inside the erofs).
const UNREPRODUCIBLE: [&str; 6] = [
    "var/log/dpkg.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/alternatives.log",
    "var/cache/ldconfig/aux-cache",
    "var/log/apt/eipp.log.xz",
];

/// Files that packages install but that only make a node start a unit for nothing: Debian's
/// empty `/etc/modules` (through `modules-load.d/modules.conf` it makes
/// `systemd-modules-load.service` run on every boot to load no module). A node's own
/// `modules-load.d` files, written by its provisioning config, still start the unit.
const IDLE_CONFIG: [&str; 2] = ["etc/modules-load.d/modules.conf", "etc/modules"];

/// Directories whose packaged entries are removed, for the same reason: `usr/lib/binfmt.d`
/// holds only Python's handler for running `.pyc` files directly (Python is in /usr for
/// `xfs_scrub_all`), which makes `systemd-binfmt.service` mount binfmt_misc and run on every
/// boot. Handlers a node's config puts in `/etc/binfmt.d` still start it.
const IDLE_CONFIG_DIRS: [&str; 1] = ["usr/lib/binfmt.d"];

/// Remove each of `list` under `root` (missing ones are fine).
fn remove_listed(root: &Path, list: &[&str]) -> Result<(), ImageError> {
    for rel in list {
        let p = root.join(rel);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(())
}

/// Remove [`UNREPRODUCIBLE`] under `root` (missing ones are fine).
pub(crate) fn remove_unreproducible(root: &Path) -> Result<(), ImageError> {
    remove_listed(root, &UNREPRODUCIBLE)
}

/// Remove [`IDLE_CONFIG`] and the entries of [`IDLE_CONFIG_DIRS`] under `root`, keeping the
/// directories themselves.
fn remove_idle_config(root: &Path) -> Result<(), ImageError> {
    remove_listed(root, &IDLE_CONFIG)?;
    for rel in IDLE_CONFIG_DIRS {
        let d = root.join(rel);
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&d)(e)),
        };
        for entry in entries {
            let p = entry.map_err(io_err(&d))?.path();
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// The installed packages of `root` among `wanted`, in `wanted`'s order.
fn installed(root: &Path, wanted: &[&str]) -> Result<Vec<String>, ImageError> {
    let admin = root.join("var/lib/dpkg");
    let status = admin.join("status");
    if !status.is_file() {
        // dpkg-query reads a missing database as an empty one: that would purge nothing.
        return Err(ImageError::Missing {
            path: status,
            message: "no dpkg database: cannot tell which build-only packages are installed".into(),
        });
    }
    let out = cmd::run(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .args(["--showformat=${Package} ${db:Status-Status}\\n", "--show"]),
    )?;
    let present: std::collections::HashSet<&str> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| *status == "installed")
        .map(|(name, _)| name)
        .collect();
    Ok(wanted
        .iter()
        .filter(|p| present.contains(**p))
        .map(|p| p.to_string())
        .collect())
}

/// Copy the working root `root` to `dest` (a new directory on the same file system) and purge
/// [`BUILD_ONLY_PACKAGES`] and [`BUILD_ONLY_DIRS`] there. Returns the packages purged. The
/// kernel package's dependency on an initramfs tool (dracut) is left unmet on purpose
/// (`--force-depends`): the initrd is made, and nothing on a node runs dracut again.
pub fn without_build_only(root: &Path, dest: &Path) -> Result<Vec<String>, ImageError> {
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io_err(dest))?;
    }
    cmd::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(root)
            .arg(dest),
    )?;
    let purge = installed(dest, &BUILD_ONLY_PACKAGES)?;
    if !purge.is_empty() {
        cmd::run(
            Command::new("chroot")
                .arg(dest)
                .args(["dpkg", "--purge", "--force-depends"])
                .args(&purge),
        )?;
    }
    remove_unreproducible(dest)?;
    remove_idle_config(dest)?;
    for d in BUILD_ONLY_DIRS {
        let p = dest.join(d);
        if p.exists() {
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
        }
    }
    tracing::info!(purged = ?purge, "build-only packages left out of /usr");
    Ok(purge)
}

/// Apparent size in bytes of the tree at `dir` (`du`), for the build log.
pub fn tree_size(dir: &Path) -> Result<u64, ImageError> {
    let out = cmd::run(
        Command::new("du")
            .args(["-s", "-B1", "--apparent-size"])
            .arg(dir),
    )?;
    out.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ImageError::Missing {
            path: PathBuf::from(dir),
            message: format!("du printed no size: {out:?}"),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn installed_reads_the_dpkg_database_of_the_root() {
        let d = tempfile::tempdir().unwrap();
        let admin = d.path().join("var/lib/dpkg");
        fs::create_dir_all(admin.join("info")).unwrap();
        fs::write(
            admin.join("status"),
            "Package: dracut\nStatus: install ok installed\nVersion: 106-6\nArchitecture: all\n\
             Maintainer: m\nDescription: d\n\n\
             Package: apt\nStatus: deinstall ok config-files\nVersion: 3.0\nArchitecture: amd64\n\
             Maintainer: m\nDescription: d\n\n\
             Package: systemd-ukify\nStatus: install ok installed\nVersion: 257\n\
             Architecture: all\nMaintainer: m\nDescription: d\n\n\
             Package: systemd\nStatus: install ok installed\nVersion: 257\nArchitecture: amd64\n\
             Maintainer: m\nDescription: d\n\n",
        )
        .unwrap();
        // Only installed ones (apt's config files alone do not count), in the list's order,
        // and nothing that is not on the list.
        assert_eq!(
            installed(d.path(), &BUILD_ONLY_PACKAGES).unwrap(),
            ["dracut", "systemd-ukify"]
        );
        let e = installed(&d.path().join("nowhere"), &BUILD_ONLY_PACKAGES).unwrap_err();
        assert!(e.to_string().contains("var/lib/dpkg/status"), "{e}");
    }

    #[test]
    fn the_purge_leaves_no_build_time_in_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in UNREPRODUCIBLE.iter().chain(["var/lib/dpkg/status"].iter()) {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), "2026-12-04 22:56:00 remove dracut\n").unwrap();
        }
        remove_unreproducible(r).unwrap();
        for f in UNREPRODUCIBLE {
            assert!(!r.join(f).exists(), "{f}");
        }
        assert!(r.join("var/lib/dpkg/status").is_file());
        // Again, with nothing left to remove.
        remove_unreproducible(r).unwrap();
    }

    #[test]
    fn idle_config_goes_and_the_rest_stays() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let files = [
            "etc/modules",
            "usr/lib/binfmt.d/python3.13.conf",
            "etc/modules-load.d/keep.conf",
            "etc/binfmt.d/keep.conf",
        ];
        for f in files {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), "x\n").unwrap();
        }
        std::os::unix::fs::symlink("../modules", r.join("etc/modules-load.d/modules.conf"))
            .unwrap();
        remove_idle_config(r).unwrap();
        assert!(!r.join("etc/modules").exists());
        assert!(fs::symlink_metadata(r.join("etc/modules-load.d/modules.conf")).is_err());
        assert!(!r.join("usr/lib/binfmt.d/python3.13.conf").exists());
        // The directory stays (an empty one does not start systemd-binfmt), and so does
        // every other file.
        assert!(r.join("usr/lib/binfmt.d").is_dir());
        assert!(r.join("etc/modules-load.d/keep.conf").is_file());
        assert!(r.join("etc/binfmt.d/keep.conf").is_file());
        // Again, with nothing left to remove, and on a root without the directories.
        remove_idle_config(r).unwrap();
        remove_idle_config(&r.join("nowhere")).unwrap();
    }

    #[test]
    fn the_runtime_stays() {
        // Boot counting (systemd-bless-boot), the package database, the file system tools of
        // the first boot and the kernel's modules are needed on a node.
        for keep in [
            "systemd-boot",
            "systemd-boot-efi",
            "dpkg",
            "e2fsprogs",
            "dosfstools",
            "xfsprogs",
            "linux-image-cloud-amd64",
            "python3",
        ] {
            assert!(!BUILD_ONLY_PACKAGES.contains(&keep), "{keep}");
        }
    }
}
