//! The `file` provider: a config file on the local filesystem (tests, `user.ign`).

use std::path::PathBuf;

use super::{Provider, ProviderError};

/// Reads the config from a file; a missing file means "no config".
#[derive(Debug, Clone)]
pub struct FileProvider {
    /// Path of the config file.
    pub path: PathBuf,
}

impl Provider for FileProvider {
    fn name(&self) -> &'static str {
        "file"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProviderError::Read {
                provider: "file",
                path: self.path.clone(),
                error: source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_file_missing_is_none_directory_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.ign");
        let p = FileProvider { path: path.clone() };
        assert_eq!(p.fetch_config().unwrap(), None);
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(p.fetch_config().unwrap(), Some(b"{}".to_vec()));
        let d = FileProvider {
            path: dir.path().to_path_buf(),
        };
        let err = d.fetch_config().unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
