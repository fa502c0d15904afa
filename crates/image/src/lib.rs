//! OS image builder: Debian root -> erofs /usr -> dm-verity -> UKI -> GPT A/B disk, and the QEMU runner.
//!
//! The stages (see `docs/image.md`): [`build`] turns `os/` into a disk image and the update
//! parts of one version; [`qemu`] boots an image under QEMU (TCG, OVMF, systemd-boot) and drives
//! its serial console for tests; [`oci`] writes a tiny OCI image archive for the runtime test.

// Every public item carries a one-line doc; keep the compiler checking it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod build;
pub mod oci;
pub mod os;
pub mod qemu;
pub mod slim;

use std::path::PathBuf;

pub use build::{BuildOptions, BuildOutput, PartFile, build};
pub use os::OsDefinition;

/// Everything that can go wrong building or running an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `os.yaml` is not valid YAML or has unknown/missing fields.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    OsDefinition {
        /// The definition file.
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A field of `os.yaml` has a value the build cannot use.
    #[error("{path}: field `{field}`: {message}")]
    OsField {
        /// The definition file.
        path: PathBuf,
        /// The field, e.g. `layout.usr_mib` or `packages[3]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Packages named in the definition do not exist in the archive.
    #[error("{path}: unknown package(s) in {suite}: {}", names.join(", "))]
    UnknownPackages {
        /// The definition file.
        path: PathBuf,
        /// The suite that was searched.
        suite: String,
        /// The names not found.
        names: Vec<String>,
    },
    /// A build product does not fit the partition the layout gives it.
    #[error("{what} is {size} bytes but its partition ({field} = {mib} MiB) holds only {} bytes; raise {field} in os.yaml", mib * 1024 * 1024)]
    TooSmall {
        /// What did not fit, e.g. `the /usr erofs image`.
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The layout field that sets the partition size.
        field: String,
        /// The partition size in MiB.
        mib: u64,
    },
    /// A command the build or the VM runner runs failed: its command line, how it ended and
    /// the tail of its stderr.
    #[error(transparent)]
    Command(#[from] keelson_cmd::CmdError),
    /// The built tree lacks something the image needs (kernel, initrd, systemd-boot).
    #[error("{path}: {message}")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The version given for the build is unusable.
    #[error("version {version:?}: {message}")]
    Version {
        /// The version.
        version: String,
        /// Why it is rejected.
        message: String,
    },
    /// The verity crate refused or failed.
    #[error("dm-verity tree {path}: {message}")]
    Verity {
        /// The hash file.
        path: PathBuf,
        /// The verity crate's error.
        message: String,
    },
    /// The disk crate refused or failed.
    #[error("disk image {path}: {message}")]
    Disk {
        /// The disk image.
        path: PathBuf,
        /// The disk crate's error.
        message: String,
    },
    /// A trusted update key (os.yaml `update_keys`, `--update-key`) is unusable.
    #[error("update key {path}: {message}")]
    UpdateKey {
        /// The key file.
        path: PathBuf,
        /// Why it is refused.
        message: String,
    },
    /// The VM did not do what was expected; carries the console tail.
    #[error("{message}\n--- console tail ---\n{console_tail}")]
    Vm {
        /// What was expected.
        message: String,
        /// The last lines of the serial console.
        console_tail: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { path, source }
}
