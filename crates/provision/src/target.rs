//! Paths inside the target root. Every path of the config is resolved as if we were chrooted
//! into the target: symlinks are followed within it (an absolute link target is re-rooted at
//! the target) and `..` stops at the root, so no config can make us touch the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before we call it a loop (Linux uses 40).
pub const MAX_SYMLINKS: u32 = 40;

/// Why a path could not be resolved inside the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target root itself is unusable.
    #[error("target root {root}: {error}")]
    Root {
        /// The root given.
        root: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Config paths must be absolute.
    #[error("{path}: path not absolute")]
    NotAbsolute {
        /// The path as given.
        path: String,
    },
    /// Symlink loop.
    #[error("{path}: more than {MAX_SYMLINKS} symlinks followed (loop?)")]
    TooManyLinks {
        /// The path being resolved.
        path: String,
    },
    /// Reading a path component failed.
    #[error("{path}: inspecting {host}: {error}")]
    Io {
        /// The path being resolved.
        path: String,
        /// The host path inspected.
        host: PathBuf,
        /// I/O error.
        error: std::io::Error,
    },
}

/// The root directory we provision (`/sysroot` in the initrd, a temp dir in tests).
#[derive(Debug, Clone)]
pub struct TargetRoot {
    root: PathBuf,
}

impl TargetRoot {
    /// Open a target root; it must exist and is canonicalized so prefixes compare reliably.
    pub fn new(root: &Path) -> Result<Self, TargetError> {
        let root = root.canonicalize().map_err(|source| TargetError::Root {
            root: root.to_path_buf(),
            error: source,
        })?;
        if !root.is_dir() {
            return Err(TargetError::Root {
                root,
                error: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(TargetRoot { root })
    }

    /// The host path of the target root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path for `path`, following symlinks in every component but the last (the last
    /// is what we are about to create or replace, so a link there is the node itself).
    pub fn resolve(&self, path: &str) -> Result<PathBuf, TargetError> {
        self.walk(path, false)
    }

    /// Host path for `path`, following symlinks in every component including the last.
    pub fn resolve_all(&self, path: &str) -> Result<PathBuf, TargetError> {
        self.walk(path, true)
    }

    /// The in-target path of a host path under the root (`/etc/passwd`), for messages.
    pub fn display(&self, host: &Path) -> String {
        match host.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => host.display().to_string(),
        }
    }

    fn walk(&self, path: &str, follow_last: bool) -> Result<PathBuf, TargetError> {
        if !path.starts_with('/') {
            return Err(TargetError::NotAbsolute { path: path.into() });
        }
        let mut pending: VecDeque<OsString> = components(Path::new(path)).collect();
        let mut stack: Vec<OsString> = Vec::new();
        let mut links = 0u32;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                // Everything on the stack is a real directory, so popping is exact; at the
                // root, `..` is the root itself (as in a chroot).
                stack.pop();
                continue;
            }
            stack.push(c);
            if pending.is_empty() && !follow_last {
                break;
            }
            let host = self.host_of(&stack);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(TargetError::TooManyLinks { path: path.into() });
                    }
                    let target = std::fs::read_link(&host).map_err(|source| TargetError::Io {
                        path: path.into(),
                        host: host.clone(),
                        error: source,
                    })?;
                    stack.pop();
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for (i, tc) in components(&target).enumerate() {
                        pending.insert(i, tc);
                    }
                }
                Ok(_) => {}
                // Missing (it will be created) or under a non-directory (creating it will
                // report that with the path): nothing to follow.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.kind() == std::io::ErrorKind::NotADirectory => {}
                Err(source) => {
                    return Err(TargetError::Io {
                        path: path.into(),
                        host,
                        error: source,
                    });
                }
            }
        }
        Ok(self.host_of(&stack))
    }

    fn host_of(&self, stack: &[OsString]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(stack);
        p
    }
}

/// Normal and `..` components of a path; root and `.` are dropped.
fn components(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, TargetRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        let t = TargetRoot::new(&root).unwrap();
        (dir, t)
    }

    #[test]
    fn plain_paths_map_under_root() {
        let (_d, t) = setup();
        assert_eq!(
            t.resolve("/etc/passwd").unwrap(),
            t.root().join("etc/passwd")
        );
        assert_eq!(t.resolve("/").unwrap(), t.root());
        assert_eq!(t.display(&t.root().join("etc/x")), "/etc/x");
        assert!(matches!(
            t.resolve("etc/passwd"),
            Err(TargetError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn escape_attempts_stay_inside() {
        let (dir, t) = setup();
        let host_secret = dir.path().join("host-secret");
        std::fs::create_dir_all(&host_secret).unwrap();
        let r = t.root();
        // Relative link climbing far above the root.
        symlink("../../../../../../host-secret", r.join("up")).unwrap();
        // Absolute link to the host's view of the outside.
        symlink(&host_secret, r.join("abs")).unwrap();
        // Absolute link to "/" and a link to "..".
        symlink("/", r.join("slash")).unwrap();
        symlink("..", r.join("etc/parent")).unwrap();
        // A chain: a -> b -> /etc/../../..
        symlink("b", r.join("a")).unwrap();
        symlink("/etc/../../..", r.join("b")).unwrap();
        let cases: &[(&str, PathBuf)] = &[
            ("/up/x", r.join("host-secret/x")),
            (
                "/abs/x",
                r.join(host_secret.strip_prefix("/").unwrap()).join("x"),
            ),
            ("/slash/etc/x", r.join("etc/x")),
            ("/etc/parent/etc/parent/x", r.join("x")),
            ("/etc/parent/../../x", r.join("x")),
            ("/../../x", r.join("x")),
            ("/a/x", r.join("x")),
            ("/usr/../../../etc/x", r.join("etc/x")),
        ];
        for (path, want) in cases {
            let got = t.resolve(path).unwrap();
            assert_eq!(&got, want, "{path}");
            assert!(got.starts_with(r), "{path} escaped to {}", got.display());
        }
    }

    #[test]
    fn last_component_is_not_followed_unless_asked() {
        let (_d, t) = setup();
        symlink("/usr/lib", t.root().join("lib")).unwrap();
        assert_eq!(t.resolve("/lib").unwrap(), t.root().join("lib"));
        assert_eq!(t.resolve_all("/lib").unwrap(), t.root().join("usr/lib"));
        assert_eq!(t.resolve("/lib/x").unwrap(), t.root().join("usr/lib/x"));
    }

    #[test]
    fn loops_are_reported() {
        let (_d, t) = setup();
        symlink("/loop2", t.root().join("loop1")).unwrap();
        symlink("/loop1", t.root().join("loop2")).unwrap();
        let err = t.resolve("/loop1/x").unwrap_err();
        assert!(matches!(err, TargetError::TooManyLinks { .. }), "{err}");
        assert!(err.to_string().contains("/loop1/x"));
    }

    #[test]
    fn dangling_links_resolve_inside() {
        let (_d, t) = setup();
        symlink("/data/lib", t.root().join("var")).unwrap();
        assert_eq!(
            t.resolve("/var/x/y").unwrap(),
            t.root().join("data/lib/x/y")
        );
    }

    #[test]
    fn missing_root_is_an_error() {
        let err = TargetRoot::new(Path::new("/nonexistent/keelson-root")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keelson-root"));
    }

    mod never_escapes_prop {
        use super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just("a".to_string()),
                Just("b".to_string()),
                Just("c".to_string()),
            ]
        }

        fn rel_path() -> impl Strategy<Value = String> {
            proptest::collection::vec(component(), 0..6).prop_map(|v| v.join("/"))
        }

        proptest! {
            /// Whatever links exist and whatever path is asked for, the result stays under
            /// the root (or the walk reports a loop).
            #[test]
            fn never_escapes(
                links in proptest::collection::vec((rel_path(), rel_path(), any::<bool>()), 0..6),
                path in rel_path(),
                follow_last in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path().join("r");
                std::fs::create_dir_all(root.join("a/b/c")).unwrap();
                std::fs::create_dir_all(root.join("b")).unwrap();
                for (at, to, absolute) in &links {
                    let at_host = root.join(at);
                    let to = if *absolute { format!("/{to}") } else { to.clone() };
                    // Missing parents or existing nodes just mean this link is skipped.
                    let _ = std::os::unix::fs::symlink(&to, &at_host);
                }
                let t = TargetRoot::new(&root).unwrap();
                let p = format!("/{path}");
                let r = if follow_last { t.resolve_all(&p) } else { t.resolve(&p) };
                match r {
                    Ok(host) => prop_assert!(host.starts_with(t.root()), "{p} -> {}", host.display()),
                    Err(TargetError::TooManyLinks { .. }) => {}
                    Err(e) => prop_assert!(false, "{p}: {e}"),
                }
            }
        }
    }
}
