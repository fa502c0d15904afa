//! Durable file writes shared by the agent's stores: the state record ([`crate::state`]), the
//! extension records ([`crate::extensions`]) and the ESP's entries ([`crate::esp`]). Each
//! module's error type has an `Io { action, path, source }` variant and converts an
//! [`IoError`] into it, so the failing step and path reach the user unchanged.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One file-system step that failed: what was being done, on which path, and why.
#[derive(Debug)]
pub struct IoError {
    /// What was being done ("syncing", "renaming", ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// Maps an `io::Error` of `action` on `path` to an [`IoError`].
pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.to_owned();
    move |source| IoError {
        action,
        path,
        source,
    }
}

/// fsync of a directory: a rename, link or removal in it is durable afterwards.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Replaces `path` with `bytes` atomically: the parent directory is created if missing, the
/// bytes go to `<path>.tmp`, which is synced and renamed over `path`, and the directory is
/// synced. A crash leaves the old file or the new one, never a mix; a
/// failure before the rename leaves `path` untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming", &tmp))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn write_atomic_names_the_step_and_path_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the temp file is written, the rename over it fails.
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        let e = write_atomic(&path, b"new").unwrap_err();
        assert_eq!(e.action, "renaming");
        assert_eq!(e.path, dir.path().join("state.json.tmp"));
        assert_eq!(std::fs::read(path.join("keep")).unwrap(), b"x");
    }
}
