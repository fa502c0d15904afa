//! The one error type of the crate: every variant names the file, field or command involved.

use std::path::PathBuf;

/// What went wrong while building, checking, signing or publishing an extension.
#[derive(Debug, thiserror::Error)]
pub enum SysextError {
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tool (mkfs.erofs, fsck.erofs, openssl, apt-get, dpkg-deb) failed.
    #[error(transparent)]
    Cmd(#[from] keelson_cmd::CmdError),
    /// An argument or input field is not acceptable.
    #[error("{field} {value:?}: {reason}")]
    Invalid {
        /// The field or option (`--name`, `ARCHITECTURE`, ...).
        field: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The extension tree has content outside /usr and /opt.
    #[error(
        "{} holds paths outside /usr and /opt, which a system extension cannot carry:\n  {}{}",
        root.display(),
        paths.join("\n  "),
        if *more > 0 { format!("\n  ... and {more} more") } else { String::new() }
    )]
    OutsideHierarchies {
        /// The tree that was checked.
        root: PathBuf,
        /// The offending paths (relative, with a leading `/`), sorted, at most a screenful.
        paths: Vec<String>,
        /// How many more offending paths were left out of `paths`.
        more: usize,
    },
    /// The extension tree has a file that a system extension must not carry.
    #[error("{}: {reason}", path.display())]
    Forbidden {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A release file (os-release, extension-release) could not be parsed.
    #[error("{}, line {line}: {reason}", path.display())]
    Release {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not a valid extension DDI.
    #[error("{} is not a valid extension image: {reason}", path.display())]
    NotADdi {
        /// The image.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The verity tree does not match the data or the root hash.
    #[error("verity check of {} failed: {source}", path.display())]
    Verity {
        /// The image.
        path: PathBuf,
        /// What keelson-verity found.
        source: keelson_verity::VerityError,
    },
    /// Writing or reading the GPT failed.
    #[error("partition table of {}: {source}", path.display())]
    Disk {
        /// The image.
        path: PathBuf,
        /// What keelson-disk found.
        source: keelson_disk::DiskError,
    },
    /// The root hash signature is missing, malformed or does not verify.
    #[error("signature of {}: {reason}", path.display())]
    Signature {
        /// The image (or signature file).
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The base image's package list could not be parsed.
    #[error("{}, line {line}: {reason}", path.display())]
    BasePackages {
        /// The `keelson_<v>.packages` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl SysextError {
    /// An I/O error on `path` while doing `action`.
    pub fn io(action: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SysextError::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }

    /// A closure for `map_err` that wraps an I/O error on `path`.
    pub fn io_on(
        action: &str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> SysextError + use<> {
        let action = action.to_string();
        let path = path.to_path_buf();
        move |source| SysextError::Io {
            action,
            path,
            source,
        }
    }

    /// An invalid value of `field`.
    pub fn invalid(field: &str, value: &str, reason: impl Into<String>) -> Self {
        SysextError::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
