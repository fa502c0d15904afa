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
use crate::extensions::{self, ExtensionError};
use crate::lock::{LockError, LockStatus, RebootLock, lock_backoff};
use crate::omaha::{Client, Identity};
use crate::paths::Paths;
use crate::reboot::{self, RebootDecision};
use crate::settings::{RebootStrategy, Server, Settings};
use crate::state::{
    self, BootFacts, Input, LastError, LockPhase, LockWait, Record, State, Store, StoreError,
};

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
    /// The reboot lock (for `lock status|unlock` and `update --now`).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// An extension's files, links or record.
    #[error(transparent)]
    Extension(Box<ExtensionError>),
}

impl From<ExtensionError> for AgentError {
    fn from(e: ExtensionError) -> Self {
        AgentError::Extension(Box::new(e))
    }
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
    /// The first wait after a failed lock attempt (doubles per attempt, capped at 60x); a
    /// failed release is retried after the cap.
    pub lock_backoff_base: Duration,
    /// The daemon's wait between looks at a new boot until it is blessed.
    pub verify_poll: Duration,
    /// The command run after an independent extension's link changed
    /// (`systemd-sysext refresh`; tests: a script).
    pub sysext_refresh_command: Vec<String>,
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
            lock_backoff_base: crate::lock::LOCK_BACKOFF_BASE,
            verify_poll: VERIFY_POLL,
            sysext_refresh_command: extensions::default_refresh_command(),
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
            // Downloading too: a power cut between the UKI's rename and `staged` can boot the
            // target with the record still saying `downloading` (state::assess).
            State::Staged { target, .. }
            | State::RebootPending { target, .. }
            | State::Downloading { target, .. } => Some(&target.version),
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
        self.identity_for(&facts.os.version_id)
    }

    fn identity_for(&self, version: &str) -> Result<Identity, AgentError> {
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_owned())
                .map_err(|source| AgentError::Io { path: p, source })
        };
        let boot_id = read(self.paths.boot_id())?;
        Ok(Identity {
            app_id: self.settings.app_id.clone(),
            version: version.to_owned(),
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
        rec = self.release_if_steady(rec).await?;
        let Server::Url(url) = &self.settings.server else {
            // Disabled: still assess boots and release the lock; nothing is sent.
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
        self.check_extensions(&client, opts.on_demand).await;
        if let State::Downloading {
            target, progress, ..
        } = rec.state.clone()
        {
            rec = self.download(rec, &facts, &target, progress).await?;
            rec = self.flush(rec, &client).await?;
        }
        if let State::Staged { .. } = rec.state {
            rec = self.maybe_reboot(rec, opts.reboot).await?;
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
        if progress.phase == state::Phase::Fetch
            && let Err(e) =
                extensions::fetch_bound(&self.paths, &self.http, &self.settings, target).await
        {
            // Before the payload's first byte: nothing was written to the slot or the ESP.
            let input = if e.is_transient() {
                tracing::warn!(error = %e, "OS-bound extension download interrupted; tried again next cycle");
                Input::CheckFailed {
                    reason: e.reason().to_owned(),
                    detail: e.to_string(),
                }
            } else {
                tracing::error!(error = %e, reason = e.reason(), "update refused: OS-bound extension");
                Input::ApplyFailed {
                    reason: e.reason().to_owned(),
                    detail: e.to_string(),
                    code: e.code(),
                }
            };
            return self.save_step(&rec, &input);
        }
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

    /// The independent extensions' pass (after the OS check): each checked, updated and merged
    /// on its own; failures are in their record, never the cycle's.
    async fn check_extensions(&self, os_client: &Client, on_demand: bool) {
        let Server::Url(url) = &self.settings.server else {
            return;
        };
        if !self
            .settings
            .extensions
            .values()
            .any(|e| matches!(e, crate::settings::Extension::Independent { .. }))
        {
            return;
        }
        let ctx = extensions::Context {
            paths: &self.paths,
            http: &self.http,
            url,
            os: os_client.identity(),
            refresh: &self.sysext_refresh_command,
            on_demand,
        };
        if let Err(e) = extensions::update_independent(&ctx, &self.settings).await {
            tracing::error!(error = %e, "extension pass failed");
        }
    }

    /// `extensions check`: the independent extensions' pass alone (no OS check); the caller
    /// holds the state lock.
    pub async fn extensions_check(&self) -> Result<(), AgentError> {
        let os = boot::read_os_release(&self.paths.os_release())?;
        let Server::Url(url) = &self.settings.server else {
            return Ok(());
        };
        let client = Client::new(self.http.clone(), url, self.identity_for(&os.version_id)?);
        let ctx = extensions::Context {
            paths: &self.paths,
            http: &self.http,
            url,
            os: client.identity(),
            refresh: &self.sysext_refresh_command,
            on_demand: true,
        };
        extensions::update_independent(&ctx, &self.settings).await?;
        Ok(())
    }

    /// `extensions link` (at boot, before systemd-sysext): links each OS-bound extension's
    /// file for the running OS version into `/run/extensions` and keeps only the files for the
    /// running version, the other slot's and an update in progress.
    pub fn extensions_link(&self) -> Result<extensions::LinkOutcome, AgentError> {
        let os = boot::read_os_release(&self.paths.os_release())?;
        // Kept besides the running version's files: the other slot's version (a rollback
        // boots it) and the one being downloaded or staged.
        let other = self.facts().map(|f| {
            f.layout
                .slot(f.layout.inactive())
                .and_then(|s| s.version.clone())
        });
        let target = self
            .store
            .load()
            .map_err(AgentError::from)
            .map(|rec| Self::target_version(&rec.state).map(str::to_owned));
        let keep: Option<std::collections::BTreeSet<String>> = match (other, target) {
            (Ok(other), Ok(target)) => Some(other.into_iter().chain(target).collect()),
            (Err(e), _) | (_, Err(e)) => {
                // Without either of them nothing is removed.
                tracing::warn!(error = %e, "cannot read the slots or the state; keeping every extension file");
                None
            }
        };
        Ok(extensions::link(
            &self.paths,
            &self.settings,
            &os.version_id,
            keep.as_ref(),
        )?)
    }

    /// The lock of the configured strategy.
    pub fn reboot_lock(&self) -> Result<RebootLock, LockError> {
        RebootLock::from_settings(&self.http, &self.settings, &self.paths.machine_id())
    }

    /// The reboot-coordination step alone (no Omaha): release the lock if the node is steady,
    /// and reboot a staged update when the strategy, the windows and the lock allow. The
    /// daemon runs it between checks while an update waits for its lock; the caller holds
    /// the state lock.
    pub async fn coordinate(&self, mode: RebootMode) -> Result<Record, AgentError> {
        let rec = self.store.load()?;
        let mut rec = self.release_if_steady(rec).await?;
        if let State::Staged { .. } = rec.state {
            rec = self.maybe_reboot(rec, mode).await?;
        }
        Ok(rec)
    }

    /// Whether the node is steady (no update staged, rebooting or being verified) but may
    /// still hold the reboot lock of its coordinated strategy: it should give it back.
    pub fn release_pending(&self, rec: &Record) -> bool {
        let busy = matches!(
            rec.state,
            State::Staged { .. } | State::RebootPending { .. } | State::Verifying { .. }
        );
        !busy && rec.lock != LockPhase::Free && reboot::uses_lock(&self.settings.reboot.strategy)
    }

    /// Releases the reboot lock when the node is steady (no update staged, rebooting or being
    /// verified) and may still hold one: at start, and after the new boot was blessed.
    pub async fn release_if_steady(&self, rec: Record) -> Result<Record, AgentError> {
        if !self.release_pending(&rec) {
            return Ok(rec);
        }
        let mut rec = rec;
        let result = match self.reboot_lock() {
            Ok(lock) => lock.release().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!("reboot lock released (steady state)");
                rec.lock = LockPhase::Free;
                rec.lock_wait = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "releasing the reboot lock failed; retried next cycle");
                rec.last_error = Some(LastError {
                    reason: format!("release_{}", e.reason()),
                    detail: e.to_string(),
                    at: Utc::now(),
                });
            }
        }
        self.store.save(&rec)?;
        Ok(rec)
    }

    /// Writes `/run/reboot-required` (empty, as Flatcar's postinst does) for kured.
    fn mark_reboot_required(&self) {
        let path = self.paths.reboot_required();
        let write = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, b""));
        if let Err(e) = write {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the reboot-required flag");
        }
    }

    async fn maybe_reboot(&self, rec: Record, mode: RebootMode) -> Result<Record, AgentError> {
        self.mark_reboot_required();
        let now = Utc::now();
        let decision = match mode {
            RebootMode::Now => reboot::decide_now(&self.settings.reboot.strategy),
            RebootMode::Policy => reboot::decide(&self.settings.reboot, now),
        };
        match decision {
            RebootDecision::Now => self.reboot(rec),
            RebootDecision::Wait(why) => {
                tracing::info!(reason = why, "staged; not rebooting now");
                Ok(rec)
            }
            RebootDecision::NeedLock => {
                if mode == RebootMode::Policy
                    && let Some(w) = &rec.lock_wait
                    && w.retry_at > now
                {
                    return Ok(rec);
                }
                let mut rec = rec;
                // Write ahead: a crash between the request and the answer must not leak it.
                rec.lock = LockPhase::MaybeHeld;
                self.store.save(&rec)?;
                let result = match self.reboot_lock() {
                    Ok(lock) => lock.acquire().await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        tracing::info!("reboot lock taken");
                        rec.lock = LockPhase::Held;
                        rec.lock_wait = None;
                        self.store.save(&rec)?;
                        self.reboot(rec)
                    }
                    Err(e) => {
                        let attempts = rec.lock_wait.as_ref().map_or(0, |w| w.attempts) + 1;
                        let since = rec.lock_wait.as_ref().map_or(now, |w| w.since);
                        let retry = chrono::Duration::from_std(lock_backoff(
                            self.lock_backoff_base,
                            attempts,
                        ))
                        .unwrap_or(chrono::Duration::minutes(5));
                        tracing::warn!(error = %e, attempts, "no reboot lock; not rebooting (fail closed)");
                        rec.lock_wait = Some(LockWait {
                            reason: e.reason(),
                            detail: e.to_string(),
                            attempts,
                            since,
                            retry_at: now + retry,
                        });
                        self.store.save(&rec)?;
                        if mode == RebootMode::Now {
                            return Err(e.into());
                        }
                        Ok(rec)
                    }
                }
            }
        }
    }

    fn reboot(&self, rec: Record) -> Result<Record, AgentError> {
        let rec = self.save_step(&rec, &Input::RebootStarted)?;
        if let Some((prog, args)) = self.reboot_command.split_first() {
            let mut cmd = std::process::Command::new(prog);
            cmd.args(args);
            keelson_cmd::run(&mut cmd)?;
        }
        Ok(rec)
    }

    /// `lock status`: what the lock service says about this node's semaphore.
    pub async fn lock_status(&self) -> Result<LockStatus, AgentError> {
        Ok(self.reboot_lock()?.status().await?)
    }

    /// `lock unlock ID`: release `id`'s slot (a holder that is gone for good). When `id` is
    /// this node's own, the state says so too.
    pub async fn lock_unlock(&self, id: &str) -> Result<(), AgentError> {
        let lock = self.reboot_lock()?;
        lock.unlock(id).await?;
        if id == lock.id() {
            let mut rec = self.store.load()?;
            rec.lock = LockPhase::Free;
            self.store.save(&rec)?;
        }
        Ok(())
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
                    esp::rename_durably(&linux.join(&e.file_name), &linux.join(&blessed))?;
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

    /// `reset`: clear the failure and the refused versions (the extensions' too).
    pub fn reset(&self) -> Result<Record, AgentError> {
        extensions::reset(&self.paths)?;
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
            reboot: self.reboot_view(&rec, Utc::now()),
            extensions: extensions::views(&self.paths, &self.settings),
        })
    }

    fn reboot_view(&self, rec: &Record, now: chrono::DateTime<Utc>) -> RebootView {
        let staged = matches!(rec.state, State::Staged { .. });
        let decision = staged.then(|| reboot::decide(&self.settings.reboot, now));
        RebootView {
            waiting_for: match (&decision, &rec.lock_wait) {
                (Some(RebootDecision::Wait(why)), _) => Some((*why).to_owned()),
                (Some(RebootDecision::NeedLock), Some(w)) => Some(w.reason.clone()),
                (Some(RebootDecision::NeedLock), None) => Some("lock".to_owned()),
                _ => None,
            },
            next_window: if staged && decision == Some(RebootDecision::Wait("outside_window")) {
                crate::window::next_open(&self.settings.reboot.windows, now).map(|t| t.to_rfc3339())
            } else {
                None
            },
            lock: if reboot::uses_lock(&self.settings.reboot.strategy) {
                Some(rec.lock)
            } else {
                None
            },
            lock_wait: rec.lock_wait.clone(),
        }
    }

    /// Time until the next cycle: the server's PollInterval or the interval, doubled per
    /// failed check (capped at 4 h), plus up to 10% jitter; [`Agent::verify_poll`] while a
    /// boot is verified; the lock's backoff while a staged update waits for the lock or a
    /// steady node still has a lock to give back.
    pub fn next_delay(&self, rec: &Record, poll: Option<u32>, jitter: f64) -> Duration {
        if matches!(rec.state, State::Verifying { .. }) {
            return self.verify_poll;
        }
        // Never spin: at least a second, or the (test) backoff base when that is shorter.
        let shortest = self.lock_backoff_base.min(Duration::from_secs(1));
        if let (State::Staged { .. }, Some(w)) = (&rec.state, &rec.lock_wait) {
            // Waiting for the lock: retry on the lock's backoff, not the check interval.
            let wait = (w.retry_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            return wait.clamp(shortest, self.settings.interval.max(shortest));
        }
        if self.release_pending(rec) {
            // The release failed (the service is down): retry at the backoff's cap (5 min, as
            // locksmith's release loop at its cap), not after the whole check interval.
            return lock_backoff(self.lock_backoff_base, u32::MAX)
                .clamp(shortest, self.settings.interval.max(shortest));
        }
        if let State::Staged { .. } = rec.state {
            // Waiting for a window: wake when it opens, so short windows are not slept through.
            let now = Utc::now();
            if reboot::decide(&self.settings.reboot, now) == RebootDecision::Wait("outside_window")
                && let Some(open) = crate::window::next_open(&self.settings.reboot.windows, now)
            {
                let wait = (open - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_secs(1);
                return wait.min(self.settings.interval);
            }
        }
        next_delay(self.settings.interval, poll, rec.check_failures, jitter)
    }
}

/// The daemon's default wait between looks at a new boot until it is blessed.
pub const VERIFY_POLL: Duration = Duration::from_secs(30);

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
    /// The reboot into a staged update: what it waits for, and the lock.
    pub reboot: RebootView,
    /// The configured system extensions.
    pub extensions: Vec<extensions::View>,
}

/// The reboot part of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct RebootView {
    /// Why a staged update has not rebooted yet (`outside_window`, `strategy_off`,
    /// `lock_full`, `lock_service_unavailable`, ...).
    pub waiting_for: Option<String>,
    /// When the next maintenance window opens (RFC 3339), when waiting for one.
    pub next_window: Option<String>,
    /// Whether this node may hold its reboot lock (coordinated strategies only).
    pub lock: Option<LockPhase>,
    /// The failed lock attempts, with the next try.
    pub lock_wait: Option<LockWait>,
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
        if let Some(why) = &self.reboot.waiting_for {
            writeln!(f, "reboot:    waiting for {why}")?;
        }
        if let Some(t) = &self.reboot.next_window {
            writeln!(f, "window:    next opens {t}")?;
        }
        if let Some(w) = &self.reboot.lock_wait {
            writeln!(
                f,
                "lock:      not taken (fail closed), {} attempt(s) since {}, next try {}: {}",
                w.attempts, w.since, w.retry_at, w.detail
            )?;
        }
        if let Some(phase) = self.reboot.lock {
            let text = match phase {
                LockPhase::Held => "held (released after the new boot is blessed)",
                LockPhase::MaybeHeld => "maybe held (released when steady)",
                LockPhase::Free => "free",
            };
            writeln!(f, "reboot lock: {text}")?;
        }
        if let Some(e) = &self.node_error {
            writeln!(f, "node:      {e}")?;
        }
        if !self.extensions.is_empty() {
            writeln!(f, "extensions:")?;
            for e in &self.extensions {
                write!(f, "  {e}")?;
            }
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn daemon_delays_follow_the_lock_and_the_verify_poll() {
        let mut settings = Settings::default();
        settings.reboot.strategy = RebootStrategy::Fleetlock {
            url: "http://f".into(),
        };
        let mut agent = Agent::new(Paths::under("/nonexistent"), settings).unwrap();
        agent.lock_backoff_base = Duration::from_millis(20);
        agent.verify_poll = Duration::from_millis(50);
        let at = |state: State, lock| Record {
            state,
            lock,
            ..Record::default()
        };
        let complete = State::Complete {
            version: "2".into(),
            previous_version: "1".into(),
        };
        let verifying = State::Verifying {
            version: "2".into(),
            previous_version: "1".into(),
        };
        let iv = agent.settings.interval;
        // Blessed but the release failed: retried at the backoff's cap, not after 45 min.
        assert_eq!(
            agent.next_delay(&at(complete.clone(), LockPhase::Held), None, 0.0),
            Duration::from_millis(1200)
        );
        assert_eq!(
            agent.next_delay(&at(complete.clone(), LockPhase::Free), None, 0.0),
            iv
        );
        assert_eq!(
            agent.next_delay(&at(verifying, LockPhase::Held), None, 0.0),
            Duration::from_millis(50)
        );
        // Waiting for the lock: the retry time, at least the (test) base, not a second.
        let staged = State::Staged {
            target: state::Target {
                version: "2".into(),
                url: "u".into(),
                size: 1,
                sha256: "x".into(),
                extensions: vec![],
            },
            slot: "B".into(),
            previous_version: "1".into(),
        };
        let mut rec = at(staged, LockPhase::MaybeHeld);
        rec.lock_wait = Some(LockWait {
            reason: "lock_full".into(),
            detail: "full".into(),
            attempts: 1,
            since: Utc::now(),
            retry_at: Utc::now() - chrono::Duration::seconds(1),
        });
        assert_eq!(agent.next_delay(&rec, None, 0.0), Duration::from_millis(20));
        // Locksmith's numbers on a node: 5 s base, release retried every 5 min.
        agent.lock_backoff_base = crate::lock::LOCK_BACKOFF_BASE;
        assert_eq!(agent.next_delay(&rec, None, 0.0), Duration::from_secs(1));
        assert_eq!(
            agent.next_delay(&at(complete, LockPhase::MaybeHeld), None, 0.0),
            Duration::from_secs(300)
        );
    }

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
