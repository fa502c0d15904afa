//! System extensions the agent keeps up to date (`[extensions.NAME]` in the settings).
//!
//! - OS-bound (`bound = "os"`): the OS package's extra package `{name}.raw` is the extension
//!   built for that OS version. While an OS update is fetched, before anything is written to
//!   the slot or the ESP, [`fetch_bound`] downloads each one to
//!   `/var/lib/keelson/extensions/{name}/os-{version}.raw` and checks its size and sha256; one
//!   the server does not attach fails the update ([`REASON_MISSING`]). At boot, [`link`]
//!   (`keelson-agent extensions link`, before `systemd-sysext.service`) points
//!   `/run/extensions/{name}.raw` at the file for the running OS version.
//! - Independent (`app_id = ...`): its own Omaha application whose packages are the `.raw`
//!   files. [`update_independent`] asks for each with the version it has (`0.0.0` when none),
//!   downloads `{name}_{version}.raw`, checks it, swaps `/var/lib/extensions/{name}.raw`
//!   atomically, runs `systemd-sysext refresh` and reports 3/2; on failure it restores the
//!   previous link, refreshes again and reports 3/0 with the reason. No reboot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsio;
use crate::omaha::{Client, Identity, OmahaError};
use crate::paths::Paths;
use crate::settings::{Extension, Settings};
use crate::state::{Answer, LastError, Report, Target};

/// The version an independent extension reports before it has one.
pub const NO_VERSION: &str = "0.0.0";

/// The reason slug of an OS update refused because an OS-bound extension is not attached.
pub const REASON_MISSING: &str = "extension_missing";

/// `systemd-sysext refresh`: the default command run after an independent extension's link
/// changed.
pub fn default_refresh_command() -> Vec<String> {
    vec!["systemd-sysext".to_owned(), "refresh".to_owned()]
}

/// An extension could not be fetched, checked, switched or merged.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    /// The download failed or was cut (tried again at the next check).
    #[error("extension {name}: downloading {url}: {message}")]
    Download {
        /// The extension.
        name: String,
        /// The file's URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The file has another size than the server said.
    #[error("extension {name}: {url} is {got} bytes, the server said {expected}")]
    Size {
        /// The extension.
        name: String,
        /// The file's URL.
        url: String,
        /// The size the server announced.
        expected: u64,
        /// The size received (at least).
        got: u64,
    },
    /// The file's sha256 is not the one the server said.
    #[error("extension {name}: {url} has sha256 {got}, the server said {expected}")]
    Hash {
        /// The extension.
        name: String,
        /// The file's URL.
        url: String,
        /// The hex sha256 announced.
        expected: String,
        /// The hex sha256 received.
        got: String,
    },
    /// OS-bound extensions the OS update does not carry.
    #[error(
        "OS version {version} has no file for the OS-bound extension(s) {}: attach {} to its package (or remove [extensions.NAME] bound = \"os\")",
        names.join(", "),
        names.iter().map(|n| format!("{n}.raw")).collect::<Vec<_>>().join(", ")
    )]
    Missing {
        /// The extensions missing.
        names: Vec<String>,
        /// The OS version offered.
        version: String,
    },
    /// The offer cannot be used (a bad version string or hash).
    #[error("extension {name}: the server's offer {message}")]
    BadOffer {
        /// The extension.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `systemd-sysext refresh` failed with the new extension (the previous one is back).
    #[error(
        "extension {name}: merging version {version} failed (the previous link is restored): {source}"
    )]
    Refresh {
        /// The extension.
        name: String,
        /// The version that did not merge.
        version: String,
        /// The command's failure.
        source: Box<keelson_cmd::CmdError>,
    },
    /// The Omaha check for an independent extension failed.
    #[error("extension {name}: {source}")]
    Omaha {
        /// The extension.
        name: String,
        /// The cause.
        source: OmahaError,
    },
    /// The extension record could not be read.
    #[error("{path}: {message}")]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl From<fsio::IoError> for ExtensionError {
    fn from(e: fsio::IoError) -> Self {
        Self::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

impl ExtensionError {
    /// A short stable slug for `status` and the 3/0 report.
    pub fn reason(&self) -> &'static str {
        match self {
            ExtensionError::Download { .. } => "extension_download",
            ExtensionError::Size { .. } => "extension_size",
            ExtensionError::Hash { .. } => "extension_hash",
            ExtensionError::Missing { .. } => REASON_MISSING,
            ExtensionError::BadOffer { .. } => "extension_bad_offer",
            ExtensionError::Io { .. } => "io",
            ExtensionError::Refresh { .. } => "sysext_refresh",
            ExtensionError::Omaha { source, .. } => source.reason(),
            ExtensionError::Corrupt { .. } => "state",
        }
    }

    /// A failure worth trying again at the next check (the bytes were not wrong).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ExtensionError::Download { .. }
                | ExtensionError::Omaha { .. }
                | ExtensionError::Io { .. }
                | ExtensionError::Corrupt { .. }
        )
    }

    /// The update_engine error code (`ActionExitCode`) reported with the 3/0 event.
    pub fn code(&self) -> u32 {
        use keelson_omaha::ExitCode as C;
        let c = match self {
            ExtensionError::Download { .. } => C::DownloadTransferError,
            ExtensionError::Size { .. } => C::PayloadSizeMismatchError,
            ExtensionError::Hash { .. } => C::PayloadHashMismatchError,
            ExtensionError::Missing { .. } | ExtensionError::BadOffer { .. } => {
                C::OmahaResponseHandlerError
            }
            ExtensionError::Io { .. } | ExtensionError::Corrupt { .. } => C::DownloadWriteError,
            ExtensionError::Refresh { .. } => C::PostinstallRunnerError,
            ExtensionError::Omaha { .. } => C::OmahaRequestError,
        };
        c.code()
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExtensionError {
    let io = fsio::io(action, path);
    move |source| io(source).into()
}

/// Whether `path` exists with `size` bytes and the hex sha256 `sha256`.
fn file_matches(path: &Path, size: u64, sha256: &str) -> Result<bool, ExtensionError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == size => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("reading", path)(e)),
    }
    let mut f = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io("reading", path))?;
    Ok(hex::encode(h.finalize()) == sha256)
}

/// Downloads `url` to `dest`, streamed into a temporary file next to it, checked against
/// `size` and the hex `sha256`, synced and renamed. A `dest` that already matches is kept;
/// returns whether a download happened. A mismatch removes the temporary file.
pub async fn fetch_verified(
    http: &reqwest::Client,
    name: &str,
    url: &str,
    size: u64,
    sha256: &str,
    dest: &Path,
) -> Result<bool, ExtensionError> {
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ExtensionError::BadOffer {
            name: name.to_owned(),
            message: format!("has sha256 {sha256:?}, not 64 hexadecimal digits"),
        });
    }
    if file_matches(dest, size, &sha256)? {
        return Ok(false);
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.part"));
    let fail = |message: String| ExtensionError::Download {
        name: name.to_owned(),
        url: url.to_owned(),
        message,
    };
    let mut r = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !r.status().is_success() {
        return Err(fail(format!("HTTP {}", r.status())));
    }
    let result = async {
        let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        let mut h = Sha256::new();
        let mut got = 0u64;
        while let Some(chunk) = r.chunk().await.map_err(|e| fail(format!("body: {e}")))? {
            got += chunk.len() as u64;
            if got > size {
                return Err(ExtensionError::Size {
                    name: name.to_owned(),
                    url: url.to_owned(),
                    expected: size,
                    got,
                });
            }
            h.update(&chunk);
            f.write_all(&chunk).map_err(io("writing", &tmp))?;
        }
        if got != size {
            return Err(ExtensionError::Size {
                name: name.to_owned(),
                url: url.to_owned(),
                expected: size,
                got,
            });
        }
        let hash = hex::encode(h.finalize());
        if hash != sha256 {
            return Err(ExtensionError::Hash {
                name: name.to_owned(),
                url: url.to_owned(),
                expected: sha256.clone(),
                got: hash,
            });
        }
        f.sync_all().map_err(io("syncing", &tmp))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(io("renaming", &tmp))?;
    fsio::sync_dir(dir)?;
    Ok(true)
}

/// Replaces (or creates) the symlink `link` -> `target` atomically: a temporary link next
/// to it, renamed over it, and the directory synced.
pub fn replace_symlink(link: &Path, target: &Path) -> Result<(), ExtensionError> {
    let dir = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing", &tmp)(e)),
    }
    std::os::unix::fs::symlink(target, &tmp).map_err(io("linking", &tmp))?;
    std::fs::rename(&tmp, link).map_err(io("renaming", &tmp))?;
    Ok(fsio::sync_dir(dir)?)
}

fn remove_if_present(path: &Path) -> Result<bool, ExtensionError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("removing", path)(e)),
    }
}

// ---------------------------------------------------------------------------------------
// OS-bound extensions

/// The names of the OS-bound extensions in the settings, sorted.
pub fn os_bound(settings: &Settings) -> Vec<String> {
    settings
        .extensions
        .iter()
        .filter(|(_, e)| **e == Extension::OsBound)
        .map(|(n, _)| n.clone())
        .collect()
}

/// `/var/lib/keelson/extensions/{name}/os-{os_version}.raw`: an OS-bound extension's file for
/// one OS version.
pub fn bound_file(paths: &Paths, name: &str, os_version: &str) -> PathBuf {
    paths
        .extension_store()
        .join(name)
        .join(format!("os-{os_version}.raw"))
}

/// Downloads and checks every OS-bound extension of `settings` for the OS update `target`
/// (files already there and matching are kept). One the update does not carry fails it with
/// [`ExtensionError::Missing`] before anything is downloaded. Returns the names fetched.
pub async fn fetch_bound(
    paths: &Paths,
    http: &reqwest::Client,
    settings: &Settings,
    target: &Target,
) -> Result<Vec<String>, ExtensionError> {
    let names = os_bound(settings);
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !target.extensions.iter().any(|p| &p.name == *n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ExtensionError::Missing {
            names: missing,
            version: target.version.clone(),
        });
    }
    for name in &names {
        let Some(pkg) = target.extensions.iter().find(|p| &p.name == name) else {
            continue;
        };
        // The offered version names the file, and the signed manifest that vouches for it is
        // fetched later: nothing of it may reach outside the extension's directory.
        check_version(name, &target.version)?;
        let dest = bound_file(paths, name, &target.version);
        let fetched = fetch_verified(http, name, &pkg.url, pkg.size, &pkg.sha256, &dest).await?;
        tracing::info!(
            extension = %name,
            version = %target.version,
            fetched,
            "OS-bound extension ready for the new OS version"
        );
    }
    Ok(names)
}

/// One extension linked (or not) by [`link`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linked {
    /// The extension.
    pub name: String,
    /// The file `/run/extensions/{name}.raw` points at; `None` when there is none for the
    /// running OS version (no link then).
    pub file: Option<String>,
}

/// What `keelson-agent extensions link` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkOutcome {
    /// The running OS version (VERSION_ID).
    pub os_version: String,
    /// Each OS-bound extension.
    pub extensions: Vec<Linked>,
    /// The files of other OS versions removed.
    pub removed: Vec<String>,
}

impl std::fmt::Display for LinkOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.extensions.is_empty() {
            writeln!(f, "no OS-bound extensions configured")?;
        }
        for e in &self.extensions {
            match &e.file {
                Some(file) => writeln!(f, "{}: linked {file} (OS {})", e.name, self.os_version)?,
                None => writeln!(
                    f,
                    "{}: no file for OS {}: not linked",
                    e.name, self.os_version
                )?,
            }
        }
        for r in &self.removed {
            writeln!(f, "removed {r}")?;
        }
        Ok(())
    }
}

/// Links `/run/extensions/{name}.raw` to each OS-bound extension's file for `os_version`
/// (relative links, so they resolve under any root), removes a link when there is no file
/// for it, and removes the extensions' files for OS versions not in `keep` (`os_version` is
/// always kept; `None` keeps every file).
pub fn link(
    paths: &Paths,
    settings: &Settings,
    os_version: &str,
    keep: Option<&BTreeSet<String>>,
) -> Result<LinkOutcome, ExtensionError> {
    let run = paths.sysext_run();
    let mut out = LinkOutcome {
        os_version: os_version.to_owned(),
        extensions: Vec::new(),
        removed: Vec::new(),
    };
    for name in os_bound(settings) {
        let file = bound_file(paths, &name, os_version);
        let link_path = run.join(format!("{name}.raw"));
        if file.is_file() {
            let target = Path::new("../..")
                .join("var/lib/keelson/extensions")
                .join(&name)
                .join(format!("os-{os_version}.raw"));
            replace_symlink(&link_path, &target)?;
            out.extensions.push(Linked {
                name: name.clone(),
                file: Some(Paths::display(&file)),
            });
        } else {
            if std::fs::symlink_metadata(&link_path).is_ok() {
                remove_if_present(&link_path)?;
            }
            out.extensions.push(Linked {
                name: name.clone(),
                file: None,
            });
        }
        let Some(keep) = keep else {
            continue;
        };
        let dir = paths.extension_store().join(&name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some(v) = fname
                .strip_prefix("os-")
                .and_then(|s| s.strip_suffix(".raw"))
            else {
                continue;
            };
            if v != os_version && !keep.contains(v) {
                let p = entry.path();
                if remove_if_present(&p)? {
                    out.removed.push(Paths::display(&p));
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Independent extensions

/// What the agent remembers about each independent extension, in
/// `/var/lib/keelson/agent/extensions.json` (the installed version is the link itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// By extension name.
    #[serde(default)]
    pub extensions: BTreeMap<String, Record>,
}

/// One independent extension's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The last successful check.
    #[serde(default)]
    pub last_check: Option<DateTime<Utc>>,
    /// The last failure, cleared by a successful switch.
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// Versions that failed their checks or did not merge: not tried again until `reset`.
    #[serde(default)]
    pub refused: Vec<String>,
    /// Reports not delivered yet, oldest first.
    #[serde(default)]
    pub outbox: Vec<Report>,
}

impl Records {
    /// Reads the record file; a missing file is empty.
    pub fn load(paths: &Paths) -> Result<Records, ExtensionError> {
        let path = paths.extensions_state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ExtensionError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Writes the record file atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, paths: &Paths) -> Result<(), ExtensionError> {
        let path = paths.extensions_state_file();
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ExtensionError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(fsio::write_atomic(&path, &bytes)?)
    }
}

/// `/var/lib/extensions/{name}.raw`: an independent extension's link.
pub fn independent_link(paths: &Paths, name: &str) -> PathBuf {
    paths.sysext_var().join(format!("{name}.raw"))
}

/// `/var/lib/keelson/extensions/{name}/{name}_{version}.raw`.
pub fn independent_file(paths: &Paths, name: &str, version: &str) -> PathBuf {
    paths
        .extension_store()
        .join(name)
        .join(format!("{name}_{version}.raw"))
}

/// The version an independent extension's link points at (`{name}_{version}.raw`), if any.
pub fn installed_version(paths: &Paths, name: &str) -> Option<String> {
    let target = std::fs::read_link(independent_link(paths, name)).ok()?;
    let file = target.file_name()?.to_str()?;
    file.strip_prefix(&format!("{name}_"))?
        .strip_suffix(".raw")
        .map(str::to_owned)
}

fn check_version(name: &str, v: &str) -> Result<(), ExtensionError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(ExtensionError::BadOffer {
            name: name.to_owned(),
            message: format!("has version {v:?}, not usable in a file name"),
        })
    }
}

fn run_command(command: &[String]) -> Result<(), keelson_cmd::CmdError> {
    let Some((prog, args)) = command.split_first() else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    keelson_cmd::run_with_timeout(&mut cmd, Some(std::time::Duration::from_secs(300))).map(|_| ())
}

/// Points `name`'s link at `version`'s file and runs `refresh`; when the refresh fails, the
/// previous link (or none) is put back and `refresh` runs again.
pub fn switch(
    paths: &Paths,
    name: &str,
    version: &str,
    refresh: &[String],
) -> Result<(), ExtensionError> {
    let link_path = independent_link(paths, name);
    let previous = std::fs::read_link(&link_path).ok();
    let target = Path::new("../keelson/extensions")
        .join(name)
        .join(format!("{name}_{version}.raw"));
    replace_symlink(&link_path, &target)?;
    let Err(source) = run_command(refresh) else {
        return Ok(());
    };
    tracing::error!(extension = name, version, error = %source, "refresh failed; restoring the previous link");
    let restored = match &previous {
        Some(p) => replace_symlink(&link_path, p),
        None => remove_if_present(&link_path).map(|_| ()),
    };
    if let Err(e) = restored {
        tracing::error!(extension = name, error = %e, "restoring the previous link failed");
    }
    if let Err(e) = run_command(refresh) {
        tracing::error!(extension = name, error = %e, "refresh with the previous link failed too");
    }
    Err(ExtensionError::Refresh {
        name: name.to_owned(),
        version: version.to_owned(),
        source: Box::new(source),
    })
}

/// Downloads, checks and switches to `target` (an independent extension's offer).
pub async fn install(
    paths: &Paths,
    http: &reqwest::Client,
    name: &str,
    target: &Target,
    refresh: &[String],
) -> Result<(), ExtensionError> {
    check_version(name, &target.version)?;
    use base64::Engine as _;
    let sha = base64::engine::general_purpose::STANDARD
        .decode(&target.sha256)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| ExtensionError::BadOffer {
            name: name.to_owned(),
            message: format!("has sha256 {:?}, not base64 of 32 bytes", target.sha256),
        })?;
    let dest = independent_file(paths, name, &target.version);
    fetch_verified(
        http,
        name,
        &target.url,
        target.size,
        &hex::encode(sha),
        &dest,
    )
    .await?;
    switch(paths, name, &target.version, refresh)
}

/// Removes `name`'s files other than the versions in `keep` (the current and previous ones).
fn prune_independent(paths: &Paths, name: &str, keep: &[&str]) {
    let dir = paths.extension_store().join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let fname = entry.file_name().to_string_lossy().into_owned();
        let Some(v) = fname
            .strip_prefix(&format!("{name}_"))
            .and_then(|s| s.strip_suffix(".raw"))
        else {
            continue;
        };
        if !keep.contains(&v)
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an old extension file");
        }
    }
}

/// What the independent pass needs besides the settings: the node's identity fields and the
/// Omaha endpoint.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Paths.
    pub paths: &'a Paths,
    /// The HTTP client.
    pub http: &'a reqwest::Client,
    /// The Omaha endpoint.
    pub url: &'a str,
    /// The OS's identity (machine id, boot id, board, group); app id and version are replaced.
    pub os: &'a Identity,
    /// The command run after a link changed.
    pub refresh: &'a [String],
    /// A person asked.
    pub on_demand: bool,
}

impl Context<'_> {
    fn client(&self, app_id: &str, group: Option<&str>, version: &str) -> Client {
        let identity = Identity {
            app_id: app_id.to_owned(),
            version: version.to_owned(),
            track: group.unwrap_or(&self.os.track).to_owned(),
            ..self.os.clone()
        };
        Client::new(self.http.clone(), self.url, identity)
    }
}

async fn flush(client: &Client, rec: &mut Record) {
    while let Some(first) = rec.outbox.first() {
        match client.report(first).await {
            Ok(()) => {
                rec.outbox.remove(0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "extension report not delivered, kept for the next check");
                break;
            }
        }
    }
}

fn failed(rec: &mut Record, e: &ExtensionError) {
    rec.last_error = Some(LastError {
        reason: e.reason().to_owned(),
        detail: e.to_string(),
        at: Utc::now(),
    });
}

async fn one(ctx: &Context<'_>, name: &str, app_id: &str, group: Option<&str>, rec: &mut Record) {
    let installed = installed_version(ctx.paths, name);
    let have = installed.clone().unwrap_or_else(|| NO_VERSION.to_owned());
    let client = ctx.client(app_id, group, &have);
    flush(&client, rec).await;
    let target = match client.check(ctx.on_demand).await {
        Err(source) => {
            tracing::warn!(extension = name, error = %source, "extension check failed");
            failed(
                rec,
                &ExtensionError::Omaha {
                    name: name.to_owned(),
                    source,
                },
            );
            return;
        }
        Ok(outcome) => {
            rec.last_check = Some(Utc::now());
            match outcome.answer {
                Answer::NoUpdate => return,
                Answer::Offer(t) => t,
            }
        }
    };
    if keelson_version::compare(&target.version, &have) != std::cmp::Ordering::Greater
        || rec.refused.contains(&target.version)
    {
        return;
    }
    let version = target.version.clone();
    let _span = tracing::info_span!("extension", name, version = %version).entered();
    match install(ctx.paths, ctx.http, name, &target, ctx.refresh).await {
        Ok(()) => {
            tracing::info!(previous = %have, "extension switched and merged");
            rec.last_error = None;
            rec.outbox.push(Report::Complete {
                version: version.clone(),
                previous_version: have.clone(),
            });
            let mut keep = vec![version.as_str()];
            if let Some(old) = &installed {
                keep.push(old);
            }
            prune_independent(ctx.paths, name, &keep);
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "extension update interrupted; tried again at the next check");
            failed(rec, &e);
        }
        Err(e) => {
            tracing::error!(error = %e, reason = e.reason(), "extension update refused or failed");
            failed(rec, &e);
            rec.refused.push(version.clone());
            if let Err(e) = remove_if_present(&independent_file(ctx.paths, name, &version)) {
                tracing::warn!(error = %e, "cannot remove the refused extension file");
            }
            rec.outbox.push(Report::Failure {
                version: Some(version.clone()),
                code: e.code(),
                reason: e.reason().to_owned(),
            });
        }
    }
    let now = installed_version(ctx.paths, name).unwrap_or_else(|| NO_VERSION.to_owned());
    flush(&ctx.client(app_id, group, &now), rec).await;
}

/// One check (and update) of every independent extension in `settings`, each recorded in
/// `/var/lib/keelson/agent/extensions.json`. A failing extension is recorded there and does
/// not stop the others; only the record file itself fails the pass.
pub async fn update_independent(
    ctx: &Context<'_>,
    settings: &Settings,
) -> Result<Records, ExtensionError> {
    let mut records = Records::load(ctx.paths)?;
    for (name, ext) in &settings.extensions {
        let Extension::Independent { app_id, group } = ext else {
            continue;
        };
        let rec = records.extensions.entry(name.clone()).or_default();
        one(ctx, name, app_id, group.as_deref(), rec).await;
        records.save(ctx.paths)?;
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------
// Status

/// One configured extension, for `status` and `extensions status`.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// The name.
    pub name: String,
    /// `os-bound` or `independent`.
    pub kind: &'static str,
    /// The application (independent).
    pub app_id: Option<String>,
    /// The group asked for (independent).
    pub group: Option<String>,
    /// Independent: the version linked; OS-bound: the OS version of the linked file.
    pub version: Option<String>,
    /// Where `{name}.raw` in `/var/lib/extensions` (independent) or `/run/extensions`
    /// (OS-bound) points, if it exists.
    pub link: Option<String>,
    /// The extension's files in `/var/lib/keelson/extensions/{name}`.
    pub files: Vec<String>,
    /// The last successful check (independent).
    pub last_check: Option<String>,
    /// The last failure (independent).
    pub last_error: Option<LastError>,
    /// Versions refused until `reset` (independent).
    pub refused: Vec<String>,
    /// Reports waiting for the server (independent).
    pub pending_reports: usize,
}

/// The views of every configured extension (the record file unreadable counts as empty).
pub fn views(paths: &Paths, settings: &Settings) -> Vec<View> {
    let records = Records::load(paths).unwrap_or_default();
    settings
        .extensions
        .iter()
        .map(|(name, ext)| {
            let mut files: Vec<String> = std::fs::read_dir(paths.extension_store().join(name))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            let rec = records.extensions.get(name).cloned().unwrap_or_default();
            let (kind, app_id, group, link_path) = match ext {
                Extension::OsBound => (
                    "os-bound",
                    None,
                    None,
                    paths.sysext_run().join(format!("{name}.raw")),
                ),
                Extension::Independent { app_id, group } => (
                    "independent",
                    Some(app_id.clone()),
                    group.clone(),
                    independent_link(paths, name),
                ),
            };
            let link = std::fs::read_link(&link_path).ok();
            let version = match ext {
                Extension::OsBound => link.as_ref().and_then(|l| {
                    l.file_name()?
                        .to_str()?
                        .strip_prefix("os-")?
                        .strip_suffix(".raw")
                        .map(str::to_owned)
                }),
                Extension::Independent { .. } => installed_version(paths, name),
            };
            View {
                name: name.clone(),
                kind,
                app_id,
                group,
                version,
                link: link.map(|l| l.display().to_string()),
                files,
                last_check: rec.last_check.map(|t| t.to_rfc3339()),
                last_error: rec.last_error,
                refused: rec.refused,
                pending_reports: rec.outbox.len(),
            }
        })
        .collect()
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        write!(f, "{} ({}", self.name, self.kind)?;
        if let Some(a) = &self.app_id {
            write!(f, ", app {a}")?;
        }
        if let Some(g) = &self.group {
            write!(f, ", group {g}")?;
        }
        writeln!(f, "): version {}", o(&self.version))?;
        writeln!(f, "  link:  {}", o(&self.link))?;
        writeln!(f, "  files: {}", self.files.join(" "))?;
        if self.kind == "independent" {
            writeln!(f, "  last check: {}", o(&self.last_check))?;
        }
        if let Some(e) = &self.last_error {
            writeln!(f, "  last error: {} ({}) at {}", e.reason, e.detail, e.at)?;
        }
        if !self.refused.is_empty() {
            writeln!(
                f,
                "  refused: {} (until `keelson-agent reset`)",
                self.refused.join(", ")
            )?;
        }
        if self.pending_reports > 0 {
            writeln!(f, "  pending reports: {}", self.pending_reports)?;
        }
        Ok(())
    }
}

/// `reset`: forget the independent extensions' failures and refused versions.
pub fn reset(paths: &Paths) -> Result<(), ExtensionError> {
    let mut records = match Records::load(paths) {
        Ok(r) => r,
        // An unreadable record file is what a reset is for: start again from none (its
        // unsent reports are lost with it), instead of refusing the whole reset.
        Err(e @ ExtensionError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "extension records unreadable; reset starts them afresh");
            return Records::default().save(paths);
        }
        Err(e) => return Err(e),
    };
    if records.extensions.is_empty() {
        return Ok(());
    }
    for rec in records.extensions.values_mut() {
        rec.refused.clear();
        rec.last_error = None;
    }
    records.save(paths)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(text: &str) -> Settings {
        let mut s = Settings::default();
        s.apply_toml(Path::new("u.toml"), text).unwrap();
        s
    }

    fn put(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn link_points_run_extensions_at_the_running_version_and_prunes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let s = settings(
            "[extensions.jq]\nbound = \"os\"\n[extensions.htop]\nbound = \"os\"\n[extensions.tools]\napp_id = \"a\"\n",
        );
        for v in ["1.0.0", "2.0.0", "3.0.0", "0.9.0"] {
            put(
                &bound_file(&paths, "jq", v),
                format!("jq for {v}").as_bytes(),
            );
        }
        put(&paths.extension_store().join("jq/notes.txt"), b"kept");
        // htop has no file for 2.0.0: a stale link from before must go.
        std::fs::create_dir_all(paths.sysext_run()).unwrap();
        std::os::unix::fs::symlink("/nowhere", paths.sysext_run().join("htop.raw")).unwrap();
        let keep: BTreeSet<String> = ["1.0.0".to_owned()].into();
        let out = link(&paths, &s, "2.0.0", Some(&keep)).unwrap();
        assert_eq!(
            out.extensions,
            vec![
                Linked {
                    name: "htop".into(),
                    file: None
                },
                Linked {
                    name: "jq".into(),
                    file: Some(Paths::display(&bound_file(&paths, "jq", "2.0.0")))
                },
            ]
        );
        let l = paths.sysext_run().join("jq.raw");
        assert_eq!(
            std::fs::read(&l).unwrap(),
            b"jq for 2.0.0",
            "resolves under the root"
        );
        assert!(
            std::fs::read_link(&l)
                .unwrap()
                .starts_with("../../var/lib/keelson/extensions/jq")
        );
        assert!(std::fs::symlink_metadata(paths.sysext_run().join("htop.raw")).is_err());
        assert!(!paths.sysext_run().join("tools.raw").exists());
        let mut left: Vec<String> = std::fs::read_dir(paths.extension_store().join("jq"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "os-1.0.0.raw", "os-2.0.0.raw"]);
        assert_eq!(out.removed.len(), 2);
        // Booted back into 1.0.0: the link follows, nothing else removed.
        let out = link(&paths, &s, "1.0.0", Some(&["2.0.0".to_owned()].into())).unwrap();
        assert!(out.removed.is_empty());
        assert_eq!(std::fs::read(&l).unwrap(), b"jq for 1.0.0");
    }

    fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![p.to_string_lossy().into_owned()]
    }

    #[test]
    fn switch_swaps_the_link_and_restores_it_when_the_refresh_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path().join("root"));
        let log = dir.path().join("refresh.log");
        put(&independent_file(&paths, "tools", "1.0"), b"one");
        put(&independent_file(&paths, "tools", "1.1"), b"one-one");
        let link_path = independent_link(&paths, "tools");
        // Each refresh records what the link resolves to.
        let ok = script(
            dir.path(),
            "ok",
            &format!(
                "cat {} >> {}; echo >> {}",
                link_path.display(),
                log.display(),
                log.display()
            ),
        );
        assert_eq!(installed_version(&paths, "tools"), None);
        switch(&paths, "tools", "1.0", &ok).unwrap();
        assert_eq!(installed_version(&paths, "tools").as_deref(), Some("1.0"));
        assert_eq!(std::fs::read(&link_path).unwrap(), b"one");
        // The refresh fails only while 1.1 is linked: 1.0 is back and merged again.
        let picky = script(
            dir.path(),
            "picky",
            &format!(
                "v=$(cat {l}); echo \"$v\" >> {log}; [ \"$v\" != one-one ] || {{ echo 'Failed to merge hierarchies' >&2; exit 1; }}",
                l = link_path.display(),
                log = log.display()
            ),
        );
        let e = switch(&paths, "tools", "1.1", &picky).unwrap_err();
        assert_eq!(e.reason(), "sysext_refresh");
        assert!(e.to_string().contains("Failed to merge hierarchies"), "{e}");
        assert!(!e.is_transient());
        assert_eq!(installed_version(&paths, "tools").as_deref(), Some("1.0"));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "one\none-one\none\n",
            "merged 1.0, tried 1.1, merged 1.0 again"
        );
        // A first install that fails leaves no link at all.
        put(&independent_file(&paths, "new", "2"), b"one-one");
        let new_link = independent_link(&paths, "new");
        let fail = script(dir.path(), "fail", "exit 3");
        switch(&paths, "new", "2", &fail).unwrap_err();
        assert!(std::fs::symlink_metadata(&new_link).is_err());
    }

    #[test]
    fn records_round_trip_and_reset_clears_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        assert_eq!(Records::load(&paths).unwrap(), Records::default());
        let mut r = Records::default();
        r.extensions.insert(
            "tools".into(),
            Record {
                refused: vec!["1.1".into()],
                last_error: Some(LastError {
                    reason: "extension_hash".into(),
                    detail: "d".into(),
                    at: Utc::now(),
                }),
                outbox: vec![Report::Failure {
                    version: Some("1.1".into()),
                    code: 10,
                    reason: "extension_hash".into(),
                }],
                ..Record::default()
            },
        );
        r.save(&paths).unwrap();
        assert_eq!(Records::load(&paths).unwrap(), r);
        reset(&paths).unwrap();
        let back = Records::load(&paths).unwrap();
        assert!(back.extensions["tools"].refused.is_empty());
        assert!(back.extensions["tools"].last_error.is_none());
        assert_eq!(
            back.extensions["tools"].outbox.len(),
            1,
            "reports still go out"
        );
        std::fs::write(paths.extensions_state_file(), b"{").unwrap();
        assert_eq!(Records::load(&paths).unwrap_err().reason(), "state");
        // A reset does not stop at an unreadable file: it starts the records afresh.
        reset(&paths).unwrap();
        assert_eq!(Records::load(&paths).unwrap(), Records::default());
    }

    #[test]
    fn an_offered_os_version_that_is_no_file_name_is_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let s = settings("[extensions.jq]\nbound = \"os\"\n");
        let target = Target {
            version: "/../../../../extensions/evil".into(),
            url: "http://127.0.0.1:9/p".into(),
            size: 1,
            sha256: String::new(),
            extensions: vec![crate::state::ExtensionPackage {
                name: "jq".into(),
                url: "http://127.0.0.1:9/jq.raw".into(),
                size: 1,
                sha256: "00".repeat(32),
            }],
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(fetch_bound(&paths, &reqwest::Client::new(), &s, &target))
            .unwrap_err();
        assert_eq!(e.reason(), "extension_bad_offer", "{e}");
        assert!(e.to_string().contains("jq"), "{e}");
        assert!(!paths.extension_store().exists());
    }

    #[test]
    fn versions_must_make_file_names() {
        for v in ["1.0", "1.7.1-2+deb13u1", "2~rc1"] {
            check_version("x", v).unwrap();
        }
        for v in ["", "../x", ".1", "a/b", "a b"] {
            assert_eq!(
                check_version("x", v).unwrap_err().reason(),
                "extension_bad_offer"
            );
        }
    }

    #[test]
    fn missing_names_every_absent_extension() {
        let e = ExtensionError::Missing {
            names: vec!["htop".into(), "jq".into()],
            version: "2.0.0".into(),
        };
        assert_eq!(e.reason(), REASON_MISSING);
        assert_eq!(
            e.to_string(),
            "OS version 2.0.0 has no file for the OS-bound extension(s) htop, jq: attach htop.raw, jq.raw to its package (or remove [extensions.NAME] bound = \"os\")"
        );
        assert_eq!(e.code(), 3);
    }
}
