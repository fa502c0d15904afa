//! The agent's cycle, shared by the daemon and the CLI: assess the boot, deliver pending
//! reports, check, download and apply, and reboot when the strategy allows. Every step goes
//! through [`state::step`] and is persisted before the next one.
//!
//! The CLI and the daemon coordinate through the state file's lock: whoever acts holds it
//! (the daemon only during a cycle), and `status` reads the atomically written file without it.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::apply::{self, ApplyError, Node};
use crate::boot::{self, Layout, OsRelease};
use crate::esp::{self, Counter};
use crate::omaha::{Client, Identity};
use crate::paths::Paths;
use crate::reboot::{self, RebootDecision};
use crate::settings::{RebootStrategy, Server, Settings};
use crate::state::{self, BootFacts, Input, LastError, Record, State, Store, StoreError};

/// A cycle could not run at all (as opposed to a failed update, which is a state).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state file.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The running system.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A boot entry.
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    /// A file the identity needs.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(String),
    /// `rollback` is not possible.
    #[error("cannot roll back: {0}")]
    Rollback(String),
    /// The reboot command failed.
    #[error(transparent)]
    Reboot(#[from] keelson_cmd::CmdError),
}

/// How a cycle treats the reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootMode {
    /// As the strategy and windows say.
    Policy,
    /// Right after staging (`update --now`).
    Now,
}

/// Options of one cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleOptions {
    /// A person asked (`installsource=ondemandupdate`, failure backoff ignored).
    pub on_demand: bool,
    /// Reboot handling.
    pub reboot: RebootMode,
    /// Ask the server for an update (and go on with a download in progress). Without it the
    /// cycle only assesses the boot and delivers pending reports: the daemon's cycles before
    /// its first check ([`first_check_delay`]).
    pub check: bool,
}

/// What the running node is.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// os-release.
    pub os: OsRelease,
    /// Disk and slots.
    pub layout: Layout,
}

/// The agent for one node (or one temp root in tests).
#[derive(Debug)]
pub struct Agent {
    /// Paths.
    pub paths: Paths,
    /// Settings.
    pub settings: Settings,
    /// The command that reboots the node.
    pub reboot_command: Vec<String>,
    store: Store,
    http: reqwest::Client,
}

impl Agent {
    /// An agent with validated settings.
    pub fn new(paths: Paths, settings: Settings) -> Result<Agent, AgentError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(crate::omaha::CLIENT_VERSION)
            .build()
            .map_err(|e| AgentError::Http(e.to_string()))?;
        Ok(Agent {
            store: Store::new(paths.state_file(), paths.lock_file()),
            paths,
            settings,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            http,
        })
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads what the node runs.
    pub fn facts(&self) -> Result<NodeFacts, AgentError> {
        let os = boot::read_os_release(&self.paths.os_release())?;
        let hash = boot::running_root_hash(&self.paths)?;
        let layout = boot::layout(&self.paths, &hash)?;
        Ok(NodeFacts { os, layout })
    }

    fn save_step(&self, rec: &Record, input: &Input) -> Result<Record, AgentError> {
        let interval = chrono::Duration::from_std(self.settings.interval)
            .unwrap_or(chrono::Duration::minutes(45));
        let next = state::step(rec, input, Utc::now(), interval);
        self.store.save(&next)?;
        Ok(next)
    }

    fn target_version(state: &State) -> Option<&str> {
        match state {
            State::Staged { target, .. } | State::RebootPending { target, .. } => {
                Some(&target.version)
            }
            State::Verifying { version, .. } => Some(version),
            _ => None,
        }
    }

    /// Boot assessment: feeds what the running version and the ESP say into the state.
    pub fn assess(&self, rec: &Record, facts: &NodeFacts) -> Result<Record, AgentError> {
        let Some(v) = Self::target_version(&rec.state) else {
            return Ok(rec.clone());
        };
        let entries = esp::entries(&self.paths.esp_linux())?;
        let input = Input::Boot(BootFacts {
            running_version: facts.os.version_id.clone(),
            target_entry: esp::entry_for(&entries, v).map(|e| e.counter),
        });
        self.save_step(rec, &input)
    }

    fn identity(&self, facts: &NodeFacts) -> Result<Identity, AgentError> {
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_owned())
                .map_err(|source| AgentError::Io { path: p, source })
        };
        let boot_id = read(self.paths.boot_id())?;
        Ok(Identity {
            app_id: self.settings.app_id.clone(),
            version: facts.os.version_id.clone(),
            track: self.settings.group.clone(),
            machine_id: read(self.paths.machine_id())?,
            boot_id: format!("{{{boot_id}}}"),
            board: boot::omaha_board().to_owned(),
        })
    }

    /// Sends pending reports in order; stops at the first that fails (kept for next time).
    pub async fn flush(&self, rec: Record, client: &Client) -> Result<Record, AgentError> {
        let mut rec = rec;
        while let Some(first) = rec.outbox.first().cloned() {
            match client.report(&first).await {
                Ok(()) => rec = self.save_step(&rec, &Input::Delivered(1))?,
                Err(e) => {
                    tracing::warn!(error = %e, "report not delivered, kept for the next cycle");
                    rec.last_error = Some(LastError {
                        reason: e.reason().to_owned(),
                        detail: e.to_string(),
                        at: Utc::now(),
                    });
                    self.store.save(&rec)?;
                    break;
                }
            }
        }
        Ok(rec)
    }

    /// One cycle; the caller holds the lock. Returns the record and the server's PollInterval.
    pub async fn cycle(&self, opts: CycleOptions) -> Result<(Record, Option<u32>), AgentError> {
        let facts = self.facts()?;
        let mut rec = self.store.load()?;
        rec = self.assess(&rec, &facts)?;
        let Server::Url(url) = &self.settings.server else {
            // Disabled: still assess boots; nothing is sent.
            return Ok((rec, None));
        };
        let client = Client::new(self.http.clone(), url, self.identity(&facts)?);
        rec = self.flush(rec, &client).await?;
        if !opts.check {
            return Ok((rec, None));
        }
        let mut poll = None;
        if opts.on_demand
            && let State::Failed { .. } = rec.state
        {
            // A person asked: the backoff does not apply.
            if let State::Failed { retry_at, .. } = &mut rec.state {
                *retry_at = Utc::now();
            }
        }
        let _span = tracing::info_span!("check").entered();
        match client.check(opts.on_demand).await {
            Ok(outcome) => {
                poll = outcome.poll_interval;
                rec = self.save_step(
                    &rec,
                    &Input::Checked {
                        answer: outcome.answer,
                        running_version: facts.os.version_id.clone(),
                    },
                )?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "update check failed");
                rec = self.save_step(
                    &rec,
                    &Input::CheckFailed {
                        reason: e.reason().to_owned(),
                        detail: e.to_string(),
                    },
                )?;
            }
        }
        drop(_span);
        rec = self.flush(rec, &client).await?;
        if let State::Downloading {
            target, progress, ..
        } = rec.state.clone()
        {
            rec = self.download(rec, &facts, &target, progress).await?;
            rec = self.flush(rec, &client).await?;
        }
        if let State::Staged { .. } = rec.state {
            rec = self.maybe_reboot(rec, opts.reboot)?;
        }
        Ok((rec, poll))
    }

    async fn download(
        &self,
        rec: Record,
        facts: &NodeFacts,
        target: &state::Target,
        progress: state::Progress,
    ) -> Result<Record, AgentError> {
        let node = Node {
            paths: &self.paths,
            layout: &facts.layout,
            os: &facts.os,
            now: Utc::now(),
        };
        let mut current = rec.clone();
        let mut save = |p: &state::Progress| -> Result<(), String> {
            current = self
                .save_step(&current, &Input::Progressed(p.clone()))
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        let result = apply::apply(&node, &self.http, target, progress, &mut save)
            .instrument_span()
            .await;
        let rec = self.store.load()?;
        match result {
            Ok(slot) => self.save_step(
                &rec,
                &Input::Applied {
                    slot: slot.name().to_owned(),
                },
            ),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "download interrupted; resumes at the next chunk");
                self.save_step(
                    &rec,
                    &Input::CheckFailed {
                        reason: e.reason().to_owned(),
                        detail: e.to_string(),
                    },
                )
            }
            Err(e) => {
                tracing::error!(error = %e, reason = e.reason(), "update refused or failed");
                apply::discard_temp(&self.paths, &target.version);
                self.save_step(&rec, &apply_failed(&e))
            }
        }
    }

    fn maybe_reboot(&self, rec: Record, mode: RebootMode) -> Result<Record, AgentError> {
        let decision = match mode {
            RebootMode::Now => RebootDecision::Now,
            RebootMode::Policy => reboot::decide(&self.settings.reboot, Utc::now()),
        };
        match decision {
            RebootDecision::Now => {
                let rec = self.save_step(&rec, &Input::RebootStarted)?;
                if let Some((prog, args)) = self.reboot_command.split_first() {
                    let mut cmd = std::process::Command::new(prog);
                    cmd.args(args);
                    keelson_cmd::run(&mut cmd)?;
                }
                Ok(rec)
            }
            RebootDecision::Wait(why) => {
                tracing::info!(reason = why, "staged; not rebooting now");
                Ok(rec)
            }
            RebootDecision::NeedLock => {
                let why = reboot::lock_for(&self.settings.reboot.strategy)
                    .err()
                    .unwrap_or("lock");
                tracing::warn!(
                    reason = why,
                    "staged; reboot coordination not available yet"
                );
                Ok(rec)
            }
        }
    }

    /// `rollback`: the other slot's good version boots from the next boot on, for good.
    pub fn rollback(&self) -> Result<Record, AgentError> {
        let facts = self.facts()?;
        let other = facts
            .layout
            .slot(facts.layout.inactive())
            .and_then(|s| s.version.clone())
            .ok_or_else(|| AgentError::Rollback("the other slot holds no version".into()))?;
        let linux = self.paths.esp_linux();
        let entries = esp::entries(&linux)?;
        match esp::entry_for(&entries, &other) {
            Some(e) if !e.counter.exhausted() => {
                if e.counter != Counter::Blessed {
                    // Make it the good version, not a trial one.
                    let blessed = format!("{}{other}.efi", esp::UKI_PREFIX);
                    std::fs::rename(linux.join(&e.file_name), linux.join(&blessed)).map_err(
                        |source| AgentError::Io {
                            path: linux.join(&e.file_name),
                            source,
                        },
                    )?;
                }
            }
            Some(e) => {
                return Err(AgentError::Rollback(format!(
                    "{other}'s boot entry {} has no tries left: it is not a good version",
                    e.file_name
                )));
            }
            None => {
                return Err(AgentError::Rollback(format!(
                    "{other} has no boot entry on the ESP"
                )));
            }
        }
        let running = facts.os.version_id.clone();
        esp::remove_version(&linux, &running)?;
        let rec = self.store.load()?;
        self.save_step(
            &rec,
            &Input::ManualRollback {
                from: running,
                to: other,
            },
        )
    }

    /// `reset`: clear the failure and the refused versions.
    pub fn reset(&self) -> Result<Record, AgentError> {
        let rec = self.store.load()?;
        self.save_step(&rec, &Input::Reset)
    }

    /// What `status` shows.
    pub fn status(&self) -> Result<Status, AgentError> {
        let rec = self.store.load()?;
        let facts = self.facts();
        let (running_version, running_slot, other_slot, other_version) = match &facts {
            Ok(f) => (
                Some(f.os.version_id.clone()),
                Some(f.layout.running.name().to_owned()),
                Some(f.layout.inactive().name().to_owned()),
                f.layout
                    .slot(f.layout.inactive())
                    .and_then(|s| s.version.clone()),
            ),
            Err(_) => (None, None, None, None),
        };
        let progress = match &rec.state {
            State::Downloading { progress, .. } => Some(ProgressView {
                bytes_done: progress.bytes_done,
                bytes_total: progress.bytes_total,
                part: progress.part.clone(),
                next_chunk: progress.next_chunk,
            }),
            _ => None,
        };
        Ok(Status {
            running_version,
            running_slot,
            other_slot,
            other_version,
            state: rec.state.name(),
            detail: rec.state.clone(),
            progress,
            last_check: rec.last_check.map(|t| t.to_rfc3339()),
            last_error: rec.last_error.clone(),
            refused: rec.refused.clone(),
            pending_reports: rec.outbox.len(),
            server: match &self.settings.server {
                Server::Url(u) => u.clone(),
                Server::Disabled => "disabled".into(),
            },
            group: self.settings.group.clone(),
            reboot_strategy: match &self.settings.reboot.strategy {
                RebootStrategy::Reboot => "reboot",
                RebootStrategy::Off => "off",
                RebootStrategy::Fleetlock { .. } => "fleetlock",
                RebootStrategy::EtcdLock { .. } => "etcd-lock",
            },
            node_error: facts.err().map(|e| e.to_string()),
        })
    }

    /// Time until the next cycle: the server's PollInterval or the interval, doubled per
    /// failed check (capped at 4 h), plus up to 10% jitter; 30 s while a boot is verified.
    pub fn next_delay(&self, rec: &Record, poll: Option<u32>, jitter: f64) -> Duration {
        if matches!(rec.state, State::Verifying { .. }) {
            return Duration::from_secs(30);
        }
        next_delay(self.settings.interval, poll, rec.check_failures, jitter)
    }
}

/// The daemon's first update check after it starts, as update_engine's: 7 min, give or take
/// 5 (`jitter` in `[0, 1)` picks the point in 2..12 min), so that a fleet that boots together
/// does not ask together, and a boot settles before a download (also one cut by a power loss)
/// goes on. Boots are still assessed and reports delivered from the start.
pub fn first_check_delay(jitter: f64) -> Duration {
    Duration::from_secs(120) + Duration::from_secs(600).mul_f64(jitter.clamp(0.0, 1.0))
}

/// The pure delay computation behind [`Agent::next_delay`]; `jitter` in `[0, 1)`.
pub fn next_delay(interval: Duration, poll: Option<u32>, failures: u32, jitter: f64) -> Duration {
    let base = poll
        .filter(|p| *p > 0)
        .map(|p| Duration::from_secs(u64::from(p)))
        .unwrap_or(interval);
    let backed = base
        .saturating_mul(1u32 << failures.min(8))
        .min(Duration::from_secs(4 * 3600).max(base));
    backed + backed.mul_f64(jitter.clamp(0.0, 1.0) * 0.1)
}

fn apply_failed(e: &ApplyError) -> Input {
    Input::ApplyFailed {
        reason: e.reason().to_owned(),
        detail: e.to_string(),
        code: e.code(),
    }
}

/// Download progress for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    /// Bytes written.
    pub bytes_done: u64,
    /// Bytes in all parts.
    pub bytes_total: u64,
    /// Part being written.
    pub part: Option<String>,
    /// Next chunk of that part.
    pub next_chunk: u64,
}

/// `keelson-agent status`: printed as text or `--json` from this one struct.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Running version.
    pub running_version: Option<String>,
    /// Running slot.
    pub running_slot: Option<String>,
    /// The other slot.
    pub other_slot: Option<String>,
    /// The other slot's version.
    pub other_version: Option<String>,
    /// State name.
    pub state: &'static str,
    /// The whole state.
    pub detail: State,
    /// Download progress.
    pub progress: Option<ProgressView>,
    /// Last successful check (RFC 3339).
    pub last_check: Option<String>,
    /// Last error with its reason slug.
    pub last_error: Option<LastError>,
    /// Versions refused until `reset`.
    pub refused: Vec<String>,
    /// Reports waiting for the server.
    pub pending_reports: usize,
    /// The Omaha endpoint or `disabled`.
    pub server: String,
    /// The group.
    pub group: String,
    /// The reboot strategy.
    pub reboot_strategy: &'static str,
    /// Why the running system could not be read, if it could not.
    pub node_error: Option<String>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "running:   {} (slot {})",
            o(&self.running_version),
            o(&self.running_slot)
        )?;
        writeln!(
            f,
            "other:     {} (slot {})",
            o(&self.other_version),
            o(&self.other_slot)
        )?;
        writeln!(f, "state:     {}", self.state)?;
        match &self.detail {
            State::Downloading { target, .. }
            | State::Staged { target, .. }
            | State::RebootPending { target, .. } => writeln!(f, "target:    {}", target.version)?,
            State::Failed { reason, detail, .. } => writeln!(f, "failed:    {reason}: {detail}")?,
            State::RolledBack {
                version, reason, ..
            } => writeln!(f, "rolled back from {version} ({reason})")?,
            _ => {}
        }
        if let Some(p) = &self.progress {
            let pct = if p.bytes_total == 0 {
                0.0
            } else {
                p.bytes_done as f64 * 100.0 / p.bytes_total as f64
            };
            writeln!(
                f,
                "progress:  {}/{} bytes ({pct:.1}%)",
                p.bytes_done, p.bytes_total
            )?;
        }
        writeln!(f, "last check: {}", o(&self.last_check))?;
        if let Some(e) = &self.last_error {
            writeln!(f, "last error: {} ({}) at {}", e.reason, e.detail, e.at)?;
        }
        if !self.refused.is_empty() {
            writeln!(
                f,
                "refused:   {} (until `keelson-agent reset`)",
                self.refused.join(", ")
            )?;
        }
        writeln!(
            f,
            "server:    {} (group {}, reboot {})",
            self.server, self.group, self.reboot_strategy
        )?;
        if let Some(e) = &self.node_error {
            writeln!(f, "node:      {e}")?;
        }
        Ok(())
    }
}

trait InstrumentSpan: Sized {
    fn instrument_span(self) -> tracing::instrument::Instrumented<Self>;
}

impl<F: std::future::Future> InstrumentSpan for F {
    fn instrument_span(self) -> tracing::instrument::Instrumented<Self> {
        use tracing::Instrument as _;
        self.instrument(tracing::info_span!("write_slot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        let iv = Duration::from_secs(2700);
        assert_eq!(next_delay(iv, None, 0, 0.0), iv);
        assert_eq!(next_delay(iv, Some(60), 0, 0.0), Duration::from_secs(60));
        assert_eq!(next_delay(iv, None, 1, 0.0), iv * 2);
        assert_eq!(next_delay(iv, None, 10, 0.0), Duration::from_secs(4 * 3600));
        assert_eq!(
            next_delay(Duration::from_secs(100), None, 0, 0.5),
            Duration::from_secs(105)
        );
    }
}
