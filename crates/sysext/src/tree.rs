//! The content rules of a system extension tree: only `/usr` and `/opt`, no os-release.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::SysextError;

/// The top-level directories an extension may carry (systemd-sysext's hierarchies).
pub const HIERARCHIES: [&str; 2] = ["usr", "opt"];

/// How many offending paths an error lists before it only counts the rest.
pub const MAX_LISTED: usize = 40;

/// Unit directories whose content makes a merge reload the service manager.
pub const UNIT_DIRS: [&str; 3] = [
    "usr/lib/systemd/system",
    "usr/lib/systemd/user",
    "usr/lib/systemd/system-generators",
];

/// What the checks found out about a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeInfo {
    /// It ships systemd units or generators, so it needs EXTENSION_RELOAD_MANAGER=1.
    pub ships_units: bool,
}

/// Checks that `root` only has `usr/` and `opt/` (real directories) at the top and no
/// `usr/lib/os-release`; the error lists every offending path (files inside an offending
/// directory included, up to [`MAX_LISTED`]).
pub fn check_tree(root: &Path) -> Result<TreeInfo, SysextError> {
    let meta = fs::symlink_metadata(root).map_err(SysextError::io_on("reading", root))?;
    if !meta.is_dir() {
        return Err(SysextError::Forbidden {
            path: root.to_path_buf(),
            reason: "is not a directory".into(),
        });
    }
    let mut bad = Vec::new();
    for entry in sorted_entries(root)? {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_dir = fs::symlink_metadata(&entry)
            .map_err(SysextError::io_on("reading", &entry))?
            .is_dir();
        if HIERARCHIES.contains(&name.as_str()) && is_dir {
            continue;
        }
        collect(root, &entry, &mut bad)?;
    }
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(MAX_LISTED);
        bad.truncate(MAX_LISTED);
        return Err(SysextError::OutsideHierarchies {
            root: root.to_path_buf(),
            paths: bad,
            more,
        });
    }
    for forbidden in ["usr/lib/os-release", "etc/os-release"] {
        let p = root.join(forbidden);
        if fs::symlink_metadata(&p).is_ok() {
            return Err(SysextError::Forbidden {
                path: p,
                reason: "an extension must not carry an os-release file (systemd-sysext refuses it; the host's describes the OS)".into(),
            });
        }
    }
    let ships_units = UNIT_DIRS.iter().any(|d| {
        fs::read_dir(root.join(d))
            .map(|mut it| it.next().is_some())
            .unwrap_or(false)
    });
    Ok(TreeInfo { ships_units })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, SysextError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(SysextError::io_on("listing", dir))? {
        v.push(e.map_err(SysextError::io_on("listing", dir))?.path());
    }
    v.sort();
    Ok(v)
}

/// `path` and, for a real directory, everything below it, as `/relative` strings.
fn collect(root: &Path, path: &Path, out: &mut Vec<String>) -> Result<(), SysextError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let meta = fs::symlink_metadata(path).map_err(SysextError::io_on("reading", path))?;
    if meta.is_dir() {
        let children = sorted_entries(path)?;
        if children.is_empty() {
            out.push(format!("/{}/", rel.display()));
        }
        for c in children {
            collect(root, &c, out)?;
        }
    } else {
        out.push(format!("/{}", rel.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn usr_and_opt_pass_and_units_are_noticed() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "usr/bin/tool");
        touch(d.path(), "opt/vendor/data");
        assert!(!check_tree(d.path()).unwrap().ships_units);
        touch(d.path(), "usr/lib/systemd/system/tool.service");
        assert!(check_tree(d.path()).unwrap().ships_units);
    }

    #[test]
    fn other_paths_are_listed() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "usr/bin/tool");
        touch(d.path(), "etc/tool.conf");
        touch(d.path(), "var/lib/tool/state");
        fs::create_dir_all(d.path().join("srv")).unwrap();
        std::os::unix::fs::symlink("usr/bin", d.path().join("bin")).unwrap();
        let e = check_tree(d.path()).unwrap_err();
        match &e {
            SysextError::OutsideHierarchies { paths, more, .. } => {
                assert_eq!(
                    paths,
                    &["/bin", "/etc/tool.conf", "/srv/", "/var/lib/tool/state"]
                );
                assert_eq!(*more, 0);
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("/etc/tool.conf"), "{e}");
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..(MAX_LISTED + 5) {
            touch(d.path(), &format!("etc/f{i:03}"));
        }
        let e = check_tree(d.path()).unwrap_err();
        assert!(e.to_string().contains("and 5 more"), "{e}");
    }

    #[test]
    fn os_release_is_refused() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "usr/lib/os-release");
        let e = check_tree(d.path()).unwrap_err();
        assert!(e.to_string().contains("os-release"), "{e}");
    }
}
