//! The agent's life as one [`State`], a pure transition function [`step`] from a record and an
//! input to the next record and the Omaha reports to send, and the atomic [`Store`] that
//! persists it under `/var/lib/keelson/agent/`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::esp::Counter;
use crate::fsio;

/// What a granted update points at (from the Omaha response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The version offered.
    pub version: String,
    /// The payload's full URL (codebase + package name).
    pub url: String,
    /// The payload's size in bytes.
    pub size: u64,
    /// Base64 SHA-256 of the whole payload file, as Omaha names it.
    pub sha256: String,
    /// The extension files attached to this OS version (the response's `{name}.raw` extra
    /// packages), for the OS-bound extensions (`extensions.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionPackage>,
}

/// One `{name}.raw` extra package of an OS update: an OS-bound extension built for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionPackage {
    /// The extension name (the package name without `.raw`).
    pub name: String,
    /// Its full URL (codebase + `{name}.raw`).
    pub url: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 (the package's `hash_sha256`).
    pub sha256: String,
}

/// The two phases of an apply: nothing outside `/var/lib/keelson` changes before `write`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every chunk found locally or downloaded, checked and kept in the chunk store; every
    /// part's hash checked.
    #[default]
    Fetch,
    /// Every check passed: the slot is cleared and written from the verified chunks.
    Write,
}

/// Where a download stands; enough to resume at the next chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The slot being written (`A` or `B`), once chosen.
    pub slot: Option<String>,
    /// The phase (a state saved before phases existed reads as `fetch`).
    #[serde(default)]
    pub phase: Phase,
    /// Parts finished in this phase, in order (`usr`, `usr-verity`, `uki`): fetched and
    /// verified, or written.
    pub parts_done: Vec<String>,
    /// The part being fetched or written, if any.
    pub part: Option<String>,
    /// Index of the next chunk of `part` to fetch or write.
    pub next_chunk: u64,
    /// Uncompressed bytes fetched plus bytes written so far.
    pub bytes_done: u64,
    /// Uncompressed bytes to fetch and write: twice the size of all parts (0 until the
    /// manifest was read).
    pub bytes_total: u64,
    /// Compressed bytes downloaded for this update so far.
    #[serde(default)]
    pub bytes_downloaded: u64,
    /// Uncompressed bytes of the chunks found locally (active slot or chunk store) instead of
    /// downloaded, in the fetch phase.
    #[serde(default)]
    pub bytes_reused: u64,
}

/// The agent's state. One value, persisted after every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum State {
    /// Nothing in progress.
    Idle,
    /// A granted update is being downloaded and written to the inactive slot.
    Downloading {
        /// What is downloaded.
        target: Target,
        /// How far it got.
        progress: Progress,
        /// The version running when it started.
        previous_version: String,
    },
    /// Written, verified, UKI installed with `+3`: waiting for the reboot strategy.
    Staged {
        /// The staged update.
        target: Target,
        /// The slot it is in.
        slot: String,
        /// The version running when it was staged.
        previous_version: String,
    },
    /// A reboot into the staged version was started.
    RebootPending {
        /// The staged update.
        target: Target,
        /// The slot it is in.
        slot: String,
        /// The version running when it was staged.
        previous_version: String,
    },
    /// Running the new version; waiting for the boot to be blessed.
    Verifying {
        /// The new version.
        version: String,
        /// The version before it.
        previous_version: String,
    },
    /// Running the new version, blessed, reported (3/2 with previousversion).
    Complete {
        /// The new version.
        version: String,
        /// The version before it.
        previous_version: String,
    },
    /// The new version was never blessed and the node came back on the old one (3/0, 44).
    RolledBack {
        /// The version that failed (refused until `reset`).
        version: String,
        /// The version the node runs.
        running_version: String,
        /// Reason slug (`boot_not_blessed`, `manual`).
        reason: String,
    },
    /// A step failed; retried after `retry_at` (backoff grows with `attempts`).
    Failed {
        /// The version being installed, if known.
        version: Option<String>,
        /// Reason slug (`bad_signature`, `no_room_esp`, `chunk_hash`, ...).
        reason: String,
        /// The whole error message.
        detail: String,
        /// Failed attempts in a row.
        attempts: u32,
        /// No new attempt before this time.
        retry_at: DateTime<Utc>,
    },
}

impl State {
    /// The state's name as `status` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Downloading { .. } => "downloading",
            State::Staged { .. } => "staged",
            State::RebootPending { .. } => "reboot-pending",
            State::Verifying { .. } => "verifying",
            State::Complete { .. } => "complete",
            State::RolledBack { .. } => "rolled-back",
            State::Failed { .. } => "failed",
        }
    }
}

/// An Omaha event to report, in update_engine's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Report {
    /// 13/1: download started.
    DownloadStarted {
        /// Version being downloaded.
        version: String,
    },
    /// 14/1: download finished.
    Downloaded {
        /// Version downloaded.
        version: String,
    },
    /// 3/1: installed, before the reboot.
    Installed {
        /// Version installed.
        version: String,
    },
    /// 3/2 with `previousversion`: the new version booted and was blessed.
    Complete {
        /// The running (new) version.
        version: String,
        /// The version before it.
        previous_version: String,
    },
    /// 3/0 with error code 44: the node rolled back from `version`.
    Rollback {
        /// The version that failed.
        version: String,
        /// The running version.
        running_version: String,
    },
    /// 3/0 with an update_engine error code.
    Failure {
        /// The version involved, if known.
        version: Option<String>,
        /// Base error code.
        code: u32,
        /// Reason slug.
        reason: String,
    },
}

/// The last error, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Stable slug.
    pub reason: String,
    /// Whole message.
    pub detail: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Whether this node may hold a reboot lock (FleetLock slot or etcd semaphore slot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockPhase {
    /// Unknown or being taken: release it when the node is steady (the default, so a node
    /// that lost its state file, or crashed while taking the lock, releases at start).
    #[default]
    MaybeHeld,
    /// Taken for the reboot into the staged update; released after the blessed boot.
    Held,
    /// Released, and the release was confirmed by the service.
    Free,
}

/// The node wants to reboot but has no lock yet: why, since when, and the next try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWait {
    /// Reason slug (`lock_full`, `lock_service_unavailable`, `lock_refused_<kind>`, ...).
    pub reason: String,
    /// The whole message.
    pub detail: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The first failed attempt.
    pub since: DateTime<Utc>,
    /// No new attempt before this time.
    pub retry_at: DateTime<Utc>,
}

/// Everything persisted: the state plus what outlives states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The state.
    pub state: State,
    /// Versions this node rolled back from (or was rolled back from by `rollback`); never
    /// installed again until `reset`.
    #[serde(default)]
    pub refused: Vec<String>,
    /// Reports not yet delivered to the server (sent in order, removed once accepted).
    #[serde(default)]
    pub outbox: Vec<Report>,
    /// Last successful check.
    #[serde(default)]
    pub last_check: Option<DateTime<Utc>>,
    /// Last error of any kind.
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// Failed checks in a row (for backoff).
    #[serde(default)]
    pub check_failures: u32,
    /// Whether this node may hold a reboot lock.
    #[serde(default)]
    pub lock: LockPhase,
    /// Waiting for the reboot lock (fail closed: no reboot without it).
    #[serde(default)]
    pub lock_wait: Option<LockWait>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            state: State::Idle,
            refused: Vec::new(),
            outbox: Vec::new(),
            last_check: None,
            last_error: None,
            check_failures: 0,
            lock: LockPhase::MaybeHeld,
            lock_wait: None,
        }
    }
}

/// What the node found out about its boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFacts {
    /// The version the running /usr is.
    pub running_version: String,
    /// The boot counter of the UKI of the version the state is waiting for, `None` if gone.
    pub target_entry: Option<Counter>,
}

/// An answer to an update check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No update.
    NoUpdate,
    /// An update was granted.
    Offer(Target),
}

/// Everything that moves the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// What the boot looks like (at start and before each check).
    Boot(BootFacts),
    /// A check was answered.
    Checked {
        /// The answer.
        answer: Answer,
        /// The running version.
        running_version: String,
    },
    /// A check could not be made (network, server error, bad response).
    CheckFailed {
        /// Reason slug.
        reason: String,
        /// Message.
        detail: String,
    },
    /// The download made progress (persisted at each checkpoint, every `apply::CHECKPOINT_BYTES`, and at the end of each part).
    Progressed(Progress),
    /// Every part written and verified, GPT and UKI updated.
    Applied {
        /// The slot written.
        slot: String,
    },
    /// The download or apply failed.
    ApplyFailed {
        /// Reason slug.
        reason: String,
        /// Message.
        detail: String,
        /// update_engine error code reported.
        code: u32,
    },
    /// A reboot into the staged version was started.
    RebootStarted,
    /// `keelson-agent rollback`: the other slot's version boots from now on.
    ManualRollback {
        /// The version given up.
        from: String,
        /// The version that will boot.
        to: String,
    },
    /// `keelson-agent reset`: clear failures and refused versions.
    Reset,
    /// Reports were delivered; drop the first `n` from the outbox.
    Delivered(usize),
}

/// Longest wait after repeated failures.
pub const MAX_BACKOFF: Duration = Duration::hours(24);

/// Backoff after `attempts` failures in a row: `interval * 2^(attempts-1)`, capped.
pub fn backoff(interval: Duration, attempts: u32) -> Duration {
    let factor = 1i32 << attempts.saturating_sub(1).min(16);
    (interval * factor).min(MAX_BACKOFF)
}

/// The pure transition: `record` + `input` at `now` -> the next record (with any new reports
/// appended to its outbox). `interval` is the check interval (the base of the backoff).
pub fn step(record: &Record, input: &Input, now: DateTime<Utc>, interval: Duration) -> Record {
    let mut r = record.clone();
    let report = |r: &mut Record, rep: Report| r.outbox.push(rep);
    match input {
        Input::Boot(facts) => assess(&mut r, facts),
        Input::Checked {
            answer,
            running_version,
        } => {
            r.last_check = Some(now);
            r.check_failures = 0;
            if let Answer::Offer(target) = answer
                && let Some(next) = accept(&r, target, running_version, now)
            {
                report(
                    &mut r,
                    Report::DownloadStarted {
                        version: target.version.clone(),
                    },
                );
                r.state = next;
            }
        }
        Input::CheckFailed { reason, detail } => {
            r.check_failures = r.check_failures.saturating_add(1);
            r.last_error = Some(LastError {
                reason: reason.clone(),
                detail: detail.clone(),
                at: now,
            });
        }
        Input::Progressed(p) => {
            if let State::Downloading { progress, .. } = &mut r.state {
                *progress = p.clone();
            }
        }
        Input::Applied { slot } => {
            if let State::Downloading {
                target,
                previous_version,
                ..
            } = &r.state
            {
                let (target, previous_version) = (target.clone(), previous_version.clone());
                let version = target.version.clone();
                report(
                    &mut r,
                    Report::Downloaded {
                        version: version.clone(),
                    },
                );
                report(&mut r, Report::Installed { version });
                r.state = State::Staged {
                    target,
                    slot: slot.clone(),
                    previous_version,
                };
            }
        }
        Input::ApplyFailed {
            reason,
            detail,
            code,
        } => {
            let (version, attempts) = match &r.state {
                State::Downloading { target, .. } => (Some(target.version.clone()), 1),
                State::Failed {
                    version, attempts, ..
                } => (version.clone(), attempts.saturating_add(1)),
                _ => (None, 1),
            };
            let attempts = match (&record.state, &version) {
                (
                    State::Failed {
                        version: Some(v),
                        attempts: a,
                        ..
                    },
                    Some(now_v),
                ) if v == now_v => a.saturating_add(1),
                _ => attempts,
            };
            report(
                &mut r,
                Report::Failure {
                    version: version.clone(),
                    code: *code,
                    reason: reason.clone(),
                },
            );
            r.last_error = Some(LastError {
                reason: reason.clone(),
                detail: detail.clone(),
                at: now,
            });
            r.state = State::Failed {
                version,
                reason: reason.clone(),
                detail: detail.clone(),
                attempts,
                retry_at: now + backoff(interval, attempts),
            };
        }
        Input::RebootStarted => {
            if let State::Staged {
                target,
                slot,
                previous_version,
            } = &r.state
            {
                r.state = State::RebootPending {
                    target: target.clone(),
                    slot: slot.clone(),
                    previous_version: previous_version.clone(),
                };
            }
        }
        Input::ManualRollback { from, to } => {
            if !r.refused.contains(from) {
                r.refused.push(from.clone());
            }
            r.state = State::RolledBack {
                version: from.clone(),
                running_version: to.clone(),
                reason: "manual".to_owned(),
            };
        }
        Input::Reset => {
            r.refused.clear();
            r.last_error = None;
            r.check_failures = 0;
            if matches!(r.state, State::Failed { .. } | State::RolledBack { .. }) {
                r.state = State::Idle;
            }
        }
        Input::Delivered(n) => {
            let n = (*n).min(r.outbox.len());
            r.outbox.drain(..n);
        }
    }
    r
}

/// Whether an offer starts (or restarts) a download, and the state it starts.
fn accept(r: &Record, target: &Target, running: &str, now: DateTime<Utc>) -> Option<State> {
    if r.refused.contains(&target.version)
        || keelson_version::compare(&target.version, running) != std::cmp::Ordering::Greater
    {
        return None;
    }
    let start = || State::Downloading {
        target: target.clone(),
        progress: Progress::default(),
        previous_version: running.to_owned(),
    };
    match &r.state {
        State::Idle | State::Complete { .. } | State::RolledBack { .. } => Some(start()),
        State::Failed { retry_at, .. } if *retry_at <= now => Some(start()),
        State::Failed { .. } => None,
        // The same download continues where it is; a different version starts over.
        State::Downloading { target: t, .. } if t.version == target.version => None,
        State::Downloading { .. } => Some(start()),
        // update_engine: after staging, checks are ping-only until the reboot.
        State::Staged { .. } | State::RebootPending { .. } | State::Verifying { .. } => None,
    }
}

/// Boot assessment: what the running version and the target's UKI say happened.
fn assess(r: &mut Record, facts: &BootFacts) {
    // A power cut after the UKI's rename and before the state said `staged`: the new version
    // booted while the record still says `downloading`. Running the target means the install
    // was whole (the entry exists only after every check); assess it like a staged one, or
    // the next cycle would "resume" into the other slot, over the version to fall back to.
    if let State::Downloading {
        target,
        progress,
        previous_version,
    } = &r.state
        && facts.running_version == target.version
    {
        let staged = State::Staged {
            target: target.clone(),
            slot: progress.slot.clone().unwrap_or_default(),
            previous_version: previous_version.clone(),
        };
        let version = target.version.clone();
        r.outbox.push(Report::Downloaded {
            version: version.clone(),
        });
        r.outbox.push(Report::Installed { version });
        r.state = staged;
    }
    let (version, previous) = match &r.state {
        State::Staged {
            target,
            previous_version,
            ..
        }
        | State::RebootPending {
            target,
            previous_version,
            ..
        } => (target.version.clone(), previous_version.clone()),
        State::Verifying {
            version,
            previous_version,
        } => (version.clone(), previous_version.clone()),
        _ => return,
    };
    let running = facts.running_version.as_str();
    if running == version {
        if facts.target_entry == Some(Counter::Blessed) {
            r.outbox.push(Report::Complete {
                version: version.clone(),
                previous_version: previous.clone(),
            });
            r.state = State::Complete {
                version,
                previous_version: previous,
            };
        } else {
            r.state = State::Verifying {
                version,
                previous_version: previous,
            };
        }
        return;
    }
    let gave_up = match facts.target_entry {
        None => true,
        Some(c) => c.exhausted(),
    };
    // Still on the old version: either not rebooted yet (tries left, nothing to do) or the new
    // version used up its tries without being blessed.
    if gave_up || matches!(r.state, State::Verifying { .. }) {
        if !r.refused.contains(&version) {
            r.refused.push(version.clone());
        }
        r.outbox.push(Report::Rollback {
            version: version.clone(),
            running_version: running.to_owned(),
        });
        r.state = State::RolledBack {
            version,
            running_version: running.to_owned(),
            reason: "boot_not_blessed".to_owned(),
        };
    }
}

/// Reading or writing the state file failed; names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on the state file or its directory.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file is not a record this agent understands.
    #[error("{path} is not a valid agent state: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Another process holds the lock.
    #[error("{path} is locked by another keelson-agent process (the daemon is mid-update?)")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
}

impl From<fsio::IoError> for StoreError {
    fn from(e: fsio::IoError) -> Self {
        Self::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

/// The persisted record: one JSON file written through a temporary name, fsync and rename.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    lock_path: PathBuf,
}

/// Held while a process acts on the state (released on drop).
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

impl Store {
    /// A store at `path` with its lock file at `lock_path`.
    pub fn new(path: PathBuf, lock_path: PathBuf) -> Store {
        Store { path, lock_path }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record; a missing file is a fresh [`Record::default`].
    pub fn load(&self) -> Result<Record, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(source) => Err(StoreError::Io {
                action: "reading",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the record atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(fsio::write_atomic(&self.path, &bytes)?)
    }

    /// Takes the state lock, waiting for it when `wait`, else failing with [`StoreError::Busy`].
    pub fn lock(&self, wait: bool) -> Result<StoreLock, StoreError> {
        let dir = self.lock_path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "creating",
            path: dir.to_owned(),
            source,
        })?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|source| StoreError::Io {
                action: "opening",
                path: self.lock_path.clone(),
                source,
            })?;
        let op = if wait {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&file, op) {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Busy {
                path: self.lock_path.clone(),
            }),
            Err(e) => Err(StoreError::Io {
                action: "locking",
                path: self.lock_path.clone(),
                source: e.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn target(v: &str) -> Target {
        Target {
            version: v.into(),
            url: format!("http://s/packages/1/keelson_{v}.payload"),
            size: 100,
            sha256: "x".into(),
            extensions: vec![],
        }
    }

    fn rec(state: State) -> Record {
        Record {
            state,
            ..Record::default()
        }
    }

    fn staged(v: &str, prev: &str) -> State {
        State::Staged {
            target: target(v),
            slot: "B".into(),
            previous_version: prev.into(),
        }
    }

    fn downloading(v: &str, prev: &str) -> State {
        State::Downloading {
            target: target(v),
            progress: Progress::default(),
            previous_version: prev.into(),
        }
    }

    fn offer(v: &str, running: &str) -> Input {
        Input::Checked {
            answer: Answer::Offer(target(v)),
            running_version: running.into(),
        }
    }

    fn boot(running: &str, entry: Option<Counter>) -> Input {
        Input::Boot(BootFacts {
            running_version: running.into(),
            target_entry: entry,
        })
    }

    const IV: Duration = Duration::minutes(45);

    /// (name, record before, input, state after, reports added)
    #[test]
    fn transitions_table() {
        let counting = |left, done| Some(Counter::Counting { left, done });
        let failed_until = |at: DateTime<Utc>| State::Failed {
            version: Some("2.0".into()),
            reason: "chunk_hash".into(),
            detail: "d".into(),
            attempts: 1,
            retry_at: at,
        };
        let refused_2 = Record {
            refused: vec!["2.0".into()],
            ..Record::default()
        };
        let cases: Vec<(&str, Record, Input, State, Vec<Report>)> = vec![
            (
                "idle + offer -> downloading, 13/1",
                rec(State::Idle),
                offer("2.0", "1.0"),
                downloading("2.0", "1.0"),
                vec![Report::DownloadStarted {
                    version: "2.0".into(),
                }],
            ),
            (
                "idle + no update stays",
                rec(State::Idle),
                Input::Checked {
                    answer: Answer::NoUpdate,
                    running_version: "1.0".into(),
                },
                State::Idle,
                vec![],
            ),
            (
                "an offer not newer than running is ignored",
                rec(State::Idle),
                offer("1.0", "1.0"),
                State::Idle,
                vec![],
            ),
            (
                "a refused version is never taken again",
                refused_2.clone(),
                offer("2.0", "1.0"),
                State::Idle,
                vec![],
            ),
            (
                "a newer version than the refused one is taken",
                refused_2,
                offer("3.0", "1.0"),
                downloading("3.0", "1.0"),
                vec![Report::DownloadStarted {
                    version: "3.0".into(),
                }],
            ),
            (
                "the same offer mid-download resumes, no second 13/1",
                rec(downloading("2.0", "1.0")),
                offer("2.0", "1.0"),
                downloading("2.0", "1.0"),
                vec![],
            ),
            (
                "applied -> staged, 14/1 and 3/1",
                rec(downloading("2.0", "1.0")),
                Input::Applied { slot: "B".into() },
                staged("2.0", "1.0"),
                vec![
                    Report::Downloaded {
                        version: "2.0".into(),
                    },
                    Report::Installed {
                        version: "2.0".into(),
                    },
                ],
            ),
            (
                "staged ignores offers",
                rec(staged("2.0", "1.0")),
                offer("3.0", "1.0"),
                staged("2.0", "1.0"),
                vec![],
            ),
            (
                "staged, not rebooted yet (tries left) stays",
                rec(staged("2.0", "1.0")),
                boot("1.0", counting(3, 0)),
                staged("2.0", "1.0"),
                vec![],
            ),
            (
                "rebooted into the new version, not yet blessed -> verifying",
                rec(staged("2.0", "1.0")),
                boot("2.0", counting(2, 1)),
                State::Verifying {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                },
                vec![],
            ),
            (
                "power cut after the UKI's rename, before `staged`: the new version booted, \
                 so the install was whole -> verifying, 14/1 and 3/1 sent late",
                rec(downloading("2.0", "1.0")),
                boot("2.0", counting(2, 1)),
                State::Verifying {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                },
                vec![
                    Report::Downloaded {
                        version: "2.0".into(),
                    },
                    Report::Installed {
                        version: "2.0".into(),
                    },
                ],
            ),
            (
                "still downloading on the old version: a boot changes nothing",
                rec(downloading("2.0", "1.0")),
                boot("1.0", None),
                downloading("2.0", "1.0"),
                vec![],
            ),
            (
                "blessed -> complete, 3/2 with previousversion",
                rec(State::Verifying {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                }),
                boot("2.0", Some(Counter::Blessed)),
                State::Complete {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                },
                vec![Report::Complete {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                }],
            ),
            (
                "back on the old version, tries used up -> rolled back, 3/0 44",
                rec(State::RebootPending {
                    target: target("2.0"),
                    slot: "B".into(),
                    previous_version: "1.0".into(),
                }),
                boot("1.0", counting(0, 3)),
                State::RolledBack {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                    reason: "boot_not_blessed".into(),
                },
                vec![Report::Rollback {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                }],
            ),
            (
                "back on the old version after verifying -> rolled back",
                rec(State::Verifying {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                }),
                boot("1.0", counting(1, 2)),
                State::RolledBack {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                    reason: "boot_not_blessed".into(),
                },
                vec![Report::Rollback {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                }],
            ),
            (
                "the UKI is gone while on the old version -> rolled back",
                rec(staged("2.0", "1.0")),
                boot("1.0", None),
                State::RolledBack {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                    reason: "boot_not_blessed".into(),
                },
                vec![Report::Rollback {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                }],
            ),
            (
                "apply failure -> failed with backoff, 3/0 with the code",
                rec(downloading("2.0", "1.0")),
                Input::ApplyFailed {
                    reason: "chunk_hash".into(),
                    detail: "d".into(),
                    code: 10,
                },
                failed_until(t0() + IV),
                vec![Report::Failure {
                    version: Some("2.0".into()),
                    code: 10,
                    reason: "chunk_hash".into(),
                }],
            ),
            (
                "failed, backoff not over: the offer waits",
                rec(failed_until(t0() + IV)),
                offer("2.0", "1.0"),
                failed_until(t0() + IV),
                vec![],
            ),
            (
                "failed, backoff over: the offer is taken",
                rec(failed_until(t0())),
                offer("2.0", "1.0"),
                downloading("2.0", "1.0"),
                vec![Report::DownloadStarted {
                    version: "2.0".into(),
                }],
            ),
            (
                "reboot started",
                rec(staged("2.0", "1.0")),
                Input::RebootStarted,
                State::RebootPending {
                    target: target("2.0"),
                    slot: "B".into(),
                    previous_version: "1.0".into(),
                },
                vec![],
            ),
            (
                "reset clears a rollback",
                rec(State::RolledBack {
                    version: "2.0".into(),
                    running_version: "1.0".into(),
                    reason: "boot_not_blessed".into(),
                }),
                Input::Reset,
                State::Idle,
                vec![],
            ),
            (
                "complete + newer offer -> downloading",
                rec(State::Complete {
                    version: "2.0".into(),
                    previous_version: "1.0".into(),
                }),
                offer("3.0", "2.0"),
                downloading("3.0", "2.0"),
                vec![Report::DownloadStarted {
                    version: "3.0".into(),
                }],
            ),
        ];
        for (name, before, input, want, reports) in cases {
            let after = step(&before, &input, t0(), IV);
            assert_eq!(after.state, want, "{name}");
            assert_eq!(&after.outbox[before.outbox.len()..], &reports[..], "{name}");
        }
    }

    #[test]
    fn rollback_refuses_until_reset() {
        let r = rec(staged("2.0", "1.0"));
        let r = step(
            &r,
            &boot("1.0", Some(Counter::Counting { left: 0, done: 3 })),
            t0(),
            IV,
        );
        assert_eq!(r.refused, vec!["2.0".to_string()]);
        let again = step(&r, &offer("2.0", "1.0"), t0(), IV);
        assert_eq!(again.state.name(), "rolled-back");
        let r = step(&r, &Input::Reset, t0(), IV);
        assert!(r.refused.is_empty());
        let r = step(&r, &offer("2.0", "1.0"), t0(), IV);
        assert_eq!(r.state.name(), "downloading");
    }

    #[test]
    fn repeated_failures_back_off_further() {
        let fail = Input::ApplyFailed {
            reason: "download".into(),
            detail: "d".into(),
            code: 9,
        };
        let mut r = rec(downloading("2.0", "1.0"));
        let mut waits = Vec::new();
        for _ in 0..3 {
            r = step(&r, &fail, t0(), IV);
            let State::Failed { retry_at, .. } = &r.state else {
                panic!("{:?}", r.state)
            };
            waits.push(*retry_at - t0());
            // Retry: take the offer again after the backoff, fail again.
            r = step(&r, &offer("2.0", "1.0"), *retry_at, IV);
            assert_eq!(r.state.name(), "downloading");
        }
        // Each retry starts a fresh download, so attempts restart at 1 per download; the
        // backoff function itself doubles.
        assert_eq!(backoff(IV, 1), IV);
        assert_eq!(backoff(IV, 3), IV * 4);
        assert_eq!(backoff(IV, 30), MAX_BACKOFF);
        assert!(waits.iter().all(|w| *w == IV));
    }

    #[test]
    fn delivered_reports_leave_the_outbox_in_order() {
        let r = step(
            &rec(downloading("2.0", "1.0")),
            &Input::Applied { slot: "B".into() },
            t0(),
            IV,
        );
        assert_eq!(r.outbox.len(), 2);
        let r = step(&r, &Input::Delivered(1), t0(), IV);
        assert_eq!(
            r.outbox,
            vec![Report::Installed {
                version: "2.0".into()
            }]
        );
    }

    #[test]
    fn store_round_trips_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("a/state.json"), dir.path().join("a/lock"));
        assert_eq!(store.load().unwrap(), Record::default());
        let mut r = rec(downloading("2.0", "1.0"));
        r = step(
            &r,
            &Input::Progressed(Progress {
                slot: Some("B".into()),
                parts_done: vec!["usr".into()],
                part: Some("usr-verity".into()),
                next_chunk: 3,
                bytes_done: 10,
                bytes_total: 20,
                phase: Phase::Write,
                bytes_downloaded: 7,
                bytes_reused: 3,
            }),
            t0(),
            IV,
        );
        store.save(&r).unwrap();
        assert_eq!(store.load().unwrap(), r);
        assert!(!dir.path().join("a/state.json.tmp").exists());
        // A progress saved before phases existed reads as the fetch phase.
        let old: Progress = serde_json::from_str(
            r#"{"slot":"B","parts_done":[],"part":"usr","next_chunk":2,"bytes_done":5,"bytes_total":9}"#,
        )
        .unwrap();
        assert_eq!((old.phase, old.bytes_downloaded), (Phase::Fetch, 0));
        std::fs::write(store.path(), b"{\"state\":\"nonsense\"}").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("state.json"), dir.path().join("lock"));
        let held = store.lock(false).unwrap();
        assert!(matches!(store.lock(false), Err(StoreError::Busy { .. })));
        drop(held);
        store.lock(false).unwrap();
    }
}
