//! The apply engine: a config in, a target root changed. Each Ignition stage has a library
//! entry point ([`fetch_config`], [`disks::plan_disks`], [`mount::mount_filesystems`],
//! [`files::plan_files`]) so the same code runs as `keelson config apply` against a directory
//! and, through [`crate::stages`], as `keelson-firstboot --stage ...` in the initrd.
//!
//! Every stage plans first (validate everything, fetch everything into a staging area) and
//! only then applies, so a bad hash, a missing group or an existing file with
//! `overwrite: false` fails the stage before the target is touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::fetch::FetchError;
use crate::passwd::PasswdError;
use crate::target::TargetError;

pub mod crypt;
pub mod disks;
pub mod files;
pub mod kargs;
pub mod mount;
pub(crate) mod stage_fetch;
mod tree;
mod units;

pub use stage_fetch::{
    FetchedConfig, cache_resources, fetch_config, fetcher_for, render_config, stage_resources,
};
pub use tree::render_tree;

/// Why a stage failed. Each variant names the path, device or config field involved.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A path could not be resolved inside the target.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The account databases could not be read or changed.
    #[error(transparent)]
    Passwd(#[from] PasswdError),
    /// Fetching a resource for a path failed.
    #[error("{what}: {error}")]
    Fetch {
        /// The config item (`file /etc/x contents`, `append[1] of /etc/y`).
        what: String,
        /// The fetch error.
        error: Box<FetchError>,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Host path.
        path: PathBuf,
        /// I/O error.
        error: std::io::Error,
    },
    /// Ignition's rule: a node exists and the config did not allow replacing it.
    #[error("{path}: a {found} exists there already and overwrite is false")]
    Exists {
        /// Path in the target.
        path: String,
        /// What is there.
        found: &'static str,
    },
    /// The config is inconsistent with itself or the target in a way validation cannot see.
    #[error("{field}: {reason}")]
    Invalid {
        /// Config field or path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A user or group named for a node does not exist in the target.
    #[error("{path}: {kind} {name:?} does not exist in the target's {file}")]
    NoSuchOwner {
        /// Path in the target.
        path: String,
        /// `user` or `group`.
        kind: &'static str,
        /// Name given.
        name: String,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
    },
    /// An external tool failed: its command line, how it ended and the tail of its stderr.
    #[error(transparent)]
    Command(#[from] keelson_cmd::CmdError),
    /// The config from a provider did not parse.
    #[error("{source_name}: {error}")]
    Config {
        /// Where the config came from.
        source_name: String,
        /// The parse/validation error with its report.
        error: Box<keelson_config::Error>,
    },
    /// A partition or filesystem on disk does not match and the config does not allow wiping.
    #[error("{device}: {reason}")]
    Storage {
        /// Device path.
        device: String,
        /// What does not match.
        reason: String,
    },
}

impl ApplyError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError {
        let path = path.to_path_buf();
        move |source| ApplyError::Io {
            op,
            path,
            error: source,
        }
    }
}

/// Kind of node a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Hard link.
    Hardlink,
    /// Block device or image (disks stage).
    Device,
}

/// One planned (or applied) change, the unit of the dry-run tree and of `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Path in the target (or device path).
    pub path: String,
    /// Node kind.
    pub kind: NodeKind,
    /// What happens: `create`, `overwrite`, `modify: add user core`, ...
    pub action: String,
}

/// The result of planning or applying a stage, printable as a tree or as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The changes, in the order they are applied.
    pub changes: Vec<Change>,
    /// Things worth knowing that did not stop the stage.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// Add a change, merging actions on the same path and kind into one entry.
    pub fn push(&mut self, path: impl Into<String>, kind: NodeKind, action: impl Into<String>) {
        let (path, action) = (path.into(), action.into());
        if let Some(c) = self
            .changes
            .iter_mut()
            .find(|c| c.path == path && c.kind == kind)
        {
            if !c.action.split("; ").any(|a| a == action) {
                c.action.push_str("; ");
                c.action.push_str(&action);
            }
            return;
        }
        self.changes.push(Change { path, kind, action });
    }

    /// Append another stage's outcome.
    pub fn extend(&mut self, other: Outcome) {
        for c in other.changes {
            self.push(c.path, c.kind, c.action);
        }
        self.warnings.extend(other.warnings);
    }
}

/// How long one provisioning tool (sgdisk, mkfs, mdadm, cryptsetup, blkid, mount) may run
/// before it is killed: far more than any of them needs on a large healthy disk, but a stuck
/// device fails the stage, with the command line in the reason, instead of hanging the boot.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Run a tool with [`TOOL_TIMEOUT`], returning stdout; failures carry the command line and
/// the tail of its stderr (`keelson_cmd::run_with_timeout`).
pub fn run_command(program: &str, args: &[String]) -> Result<String, ApplyError> {
    run_command_with_timeout(program, args, TOOL_TIMEOUT)
}

/// [`run_command`] with a timeout of its own (`udevadm settle`).
pub fn run_command_with_timeout(
    program: &str,
    args: &[String],
    timeout: Duration,
) -> Result<String, ApplyError> {
    Ok(keelson_cmd::run_with_timeout(
        Command::new(program).args(args),
        Some(timeout),
    )?)
}

/// Everything `keelson config apply --root` does for one config: the files stage against a
/// directory. Disks and mounts are separate entry points because they touch devices.
pub fn apply_files(
    config: &keelson_config::Config,
    target: &crate::target::TargetRoot,
    fetcher: &crate::fetch::Fetcher,
    opts: &files::FilesOptions,
) -> Result<Outcome, ApplyError> {
    let _span = tracing::info_span!("files", root = %target.root().display()).entered();
    // The first-boot fetch stage checks this before anything is written; `config apply`
    // (and its --dry-run) gets the same verdict here.
    if let Some(cmdline) = &opts.kernel_cmdline {
        kargs::check_kernel_arguments(config, cmdline)?;
    }
    let plan = files::plan_files(config, target, fetcher, opts)?;
    if opts.dry_run {
        return Ok(plan.outcome().clone());
    }
    plan.apply()
}
