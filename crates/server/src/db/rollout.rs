//! The database side of the grant algorithm: [`handle_reports`] handles the node reports of one
//! Omaha request (one per `<app>`) in one transaction; for each it upserts the instance, record its events (completions, failures, rollbacks),
//! build the [`GrantInput`] snapshot, run [`grant::decide`] and write what it decided.
//!
//! Concurrency: a decision that would grant or halt is re-taken after bumping the group's
//! `lock_seq` row, which serializes such decisions per group on PostgreSQL (row lock) and on
//! SQLite (single writer), so two nodes cannot both take the last slot of a limit.

use chrono::{DateTime, Utc};

use super::activity::{self, NewActivity, Severity};
use super::groups::{self, Group};
use super::instances::InstanceStatus;
use super::packages::{self, Package};
use super::{Db, DbError, Tx};
use crate::grant::{
    self, GrantDecision, GrantInput, GrantReason, HaltCause, HoldReason, PendingGrant, RolloutStats,
};
use keelson_omaha::{ErrorCode, EventResult, EventType};
use keelson_version::Version;
use tracing::Instrument;

/// `max_updates_per_period` at or above this is "no rate limit" (the API's maximum), so the
/// period count is skipped.
pub const UNLIMITED_UPDATES: i64 = 1_000_000;
/// `grants.outcome`: still pending.
pub const OUTCOME_PENDING: i64 = 0;
/// `grants.outcome`: the node runs the granted version.
pub const OUTCOME_SUCCEEDED: i64 = 1;
/// `grants.outcome`: an error event, or closed after timing out.
pub const OUTCOME_FAILED: i64 = 2;
/// `grants.outcome`: the node rolled back (error code 44); never offered that version again.
pub const OUTCOME_ROLLED_BACK: i64 = 3;
/// The event type of a stored number (numbers outside u32 are kept as unknown ones).
fn event_type(n: i64) -> EventType {
    u32::try_from(n).map_or(EventType::Other(u32::MAX), EventType::from_code)
}

/// The event result of a stored number (numbers outside u32 are kept as unknown ones).
fn event_result(n: i64) -> EventResult {
    u32::try_from(n).map_or(EventResult::Other(u32::MAX), EventResult::from_code)
}

/// The error code of a stored number: the low 32 bits, as update_engine sends them.
fn error_code(n: i64) -> ErrorCode {
    ErrorCode(u32::try_from(n & 0xFFFF_FFFF).unwrap_or_default())
}

/// One `<event>` of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// `eventtype`.
    pub event_type: i64,
    /// `eventresult`.
    pub event_result: i64,
    /// `errorcode` (flag bits included).
    pub error_code: Option<i64>,
    /// `previousversion`.
    pub previous_version: String,
    /// `keelson_reason`: the agent's slug for a failure (already checked by keelson-omaha).
    pub reason: Option<String>,
}

/// What a node said about one application.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// Application id as sent (any spelling).
    pub application_id: String,
    /// `machineid`.
    pub machine_id: String,
    /// `version`.
    pub version: String,
    /// `track` (selects the group).
    pub track: String,
    /// Source address.
    pub ip: String,
    /// `machinealias`.
    pub alias: String,
    /// `oem`.
    pub oem: String,
    /// `alephversion`.
    pub aleph_version: String,
    /// The events, in order.
    pub events: Vec<NodeEvent>,
    /// Whether it asked for an update.
    pub update_check: bool,
    /// Decision time (tests pass their own clock).
    pub now: DateTime<Utc>,
}

/// The answer to an update check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckAnswer {
    /// `<updatecheck status="noupdate">` with the reason (for logs and tests).
    NoUpdate {
        /// Why, as text.
        reason: String,
    },
    /// `<updatecheck status="ok">` with this package.
    Update {
        /// The package to send, with its OS-bound extensions.
        package: Box<Package>,
        /// Why it was granted.
        reason: GrantReason,
    },
}

/// What became of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The application is not known: answer `error-unknownApplication`, nothing written.
    UnknownApplication,
    /// Recorded; `check` is set when the node asked for an update.
    Recorded {
        /// The instance row id.
        instance_id: i64,
        /// The answer to the update check, if there was one.
        check: Option<CheckAnswer>,
    },
}

fn hold_text(r: &HoldReason) -> String {
    match r {
        HoldReason::NotInWave { bucket, percent } => {
            format!("not_in_wave (bucket {bucket} >= {percent}%)")
        }
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("reason").and_then(|s| s.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

async fn set_status(
    tx: &mut Tx,
    instance_id: i64,
    old: i64,
    new: InstanceStatus,
    version: &str,
    message: &str,
    now: i64,
) -> Result<(), DbError> {
    if old == new.code() {
        return Ok(());
    }
    sqlx::query("UPDATE instances SET status = $1 WHERE id = $2")
        .bind(new.code())
        .bind(instance_id)
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("updating instance status"))?;
    sqlx::query(
        "INSERT INTO instance_status_history (instance_id, status, version, message, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(instance_id)
    .bind(new.code())
    .bind(version)
    .bind(message)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("writing status history"))?;
    Ok(())
}

/// Counts for the rollout of `group` to `target` at `now`.
async fn rollout_stats(
    conn: &mut sqlx::AnyConnection,
    group: &Group,
    target: &str,
    now: i64,
) -> Result<RolloutStats, DbError> {
    let p = &group.policy.rollout;
    // Every count here is bounded so a decision stays cheap with 100,000 nodes in a group:
    // pending grants are few (index grants_group_pending), the period count stops at the
    // limit, success is an existence check, and the group size is only needed once something
    // failed.
    let (in_progress,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM grants WHERE group_id = $1 AND outcome = 0 AND granted_at > $2",
    )
    .bind(group.id)
    .bind(now - p.update_timeout_secs)
    .fetch_one(&mut *conn)
    .await
    .map_err(DbError::query("counting grants in progress"))?;
    let grants_in_period = if p.max_updates_per_period >= UNLIMITED_UPDATES {
        0
    } else {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM (SELECT 1 FROM grants WHERE group_id = $1 AND granted_at > $2 LIMIT $3) t",
        )
        .bind(group.id)
        .bind(now - p.period_secs)
        .bind(p.max_updates_per_period)
        .fetch_one(&mut *conn)
        .await
        .map_err(DbError::query("counting grants in the period"))?;
        n
    };
    let (succeeded,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT 1 FROM grants WHERE group_id = $1 AND rollout_version = $2 AND outcome = 1 LIMIT 1) t",
    )
    .bind(group.id)
    .bind(target)
    .fetch_one(&mut *conn)
    .await
    .map_err(DbError::query("looking for a succeeded grant"))?;
    // Failed: an error or rollback, or still pending past the timeout; a node that later
    // succeeded in this rollout no longer counts. `outcome IN (0, 2, 3)` keeps the scan to
    // pending and failed rows; the subquery has no group_id so it uses the per-instance index.
    let (failed,): (i64,) = sqlx::query_as(
        "SELECT COUNT(DISTINCT instance_id) FROM grants g WHERE g.group_id = $1 AND g.rollout_version = $2 \
         AND g.outcome IN (0, 2, 3) AND (g.outcome <> 0 OR g.granted_at <= $3) \
         AND NOT EXISTS (SELECT 1 FROM grants s WHERE s.instance_id = g.instance_id \
                         AND s.rollout_version = $2 AND s.outcome = 1)",
    )
    .bind(group.id)
    .bind(target)
    .bind(now - p.update_timeout_secs)
    .fetch_one(&mut *conn)
    .await
    .map_err(DbError::query("counting failed grants"))?;
    let group_instances = if failed > 0 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM instances WHERE group_id = $1")
            .bind(group.id)
            .fetch_one(&mut *conn)
            .await
            .map_err(DbError::query("counting group instances"))?;
        n
    } else {
        0
    };
    Ok(RolloutStats {
        group_instances,
        grants_in_period,
        in_progress,
        any_succeeded: succeeded > 0,
        failed,
    })
}

async fn channel_version(
    conn: &mut sqlx::AnyConnection,
    channel_id: Option<i64>,
) -> Result<(Option<String>, Vec<String>), DbError> {
    let Some(cid) = channel_id else {
        return Ok((None, Vec::new()));
    };
    let v: Option<(String,)> = sqlx::query_as(
        "SELECT p.version FROM channels c JOIN packages p ON p.id = c.package_id WHERE c.id = $1",
    )
    .bind(cid)
    .fetch_optional(&mut *conn)
    .await
    .map_err(DbError::query("reading channel package"))?;
    let floors: Vec<(String,)> = sqlx::query_as(
        "SELECT p.version FROM channel_floors f JOIN packages p ON p.id = f.package_id WHERE f.channel_id = $1",
    )
    .bind(cid)
    .fetch_all(&mut *conn)
    .await
    .map_err(DbError::query("reading channel floors"))?;
    Ok((v.map(|(s,)| s), floors.into_iter().map(|(s,)| s).collect()))
}

async fn pending_grant(
    conn: &mut sqlx::AnyConnection,
    instance_id: i64,
) -> Result<Option<(i64, PendingGrant)>, DbError> {
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, to_version, granted_at FROM grants WHERE instance_id = $1 AND outcome = 0 ORDER BY id DESC LIMIT 1",
    )
    .bind(instance_id)
    .fetch_optional(conn)
    .await
    .map_err(DbError::query("reading pending grant"))?;
    Ok(row.map(|(id, to_version, granted_at)| {
        (
            id,
            PendingGrant {
                to_version,
                granted_at,
            },
        )
    }))
}

/// Halt `group`'s rollout to `target` (idempotent) and log why.
async fn halt(tx: &mut Tx, group: &Group, target: &str, cause: &HaltCause) -> Result<(), DbError> {
    let n = sqlx::query(
        "UPDATE groups SET halted_version = $1, halted_reason = $2 WHERE id = $3 \
         AND (halted_version IS NULL OR halted_version <> $1)",
    )
    .bind(target)
    .bind(cause.to_string())
    .bind(group.id)
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("halting rollout"))?
    .rows_affected();
    if n > 0 {
        tracing::warn!(group = group.id, target, %cause, "rollout halted");
        log_group_event(
            tx,
            group,
            Severity::Error,
            "rollout.halted",
            target,
            format!(
                "rollout of group {:?} to {target} halted: {cause}",
                group.name
            ),
        )
        .await?;
    }
    Ok(())
}

/// After a grant completed: if it was a step of its rollout's target and every node of the
/// group now runs that target, log `rollout.finished`.
async fn rollout_finished_check(tx: &mut Tx, group: &Group, grant_id: i64) -> Result<(), DbError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT to_version, rollout_version FROM grants WHERE id = $1")
            .bind(grant_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(DbError::query("reading grant"))?;
    let Some((to, target)) = row else {
        return Ok(());
    };
    if to != target {
        return Ok(());
    }
    // Two one-sided range probes on (group_id, version): each stops at its first row, where
    // `version <> $2` could make the planner walk every node of the group.
    let mut behind = 0;
    for sql in [
        "SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE group_id = $1 AND version < $2 LIMIT 1) t",
        "SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE group_id = $1 AND version > $2 LIMIT 1) t",
    ] {
        let (n,): (i64,) = sqlx::query_as(sql)
            .bind(group.id)
            .bind(&target)
            .fetch_one(&mut **tx)
            .await
            .map_err(DbError::query("looking for nodes behind"))?;
        behind += n;
    }
    if behind == 0 {
        log_group_event(
            tx,
            group,
            Severity::Info,
            "rollout.finished",
            &target,
            format!("every node of group {:?} runs {target}", group.name),
        )
        .await?;
    }
    Ok(())
}

/// Handle the node reports of one Omaha request (one per `<app>`) in one transaction, so a
/// failure leaves nothing half-recorded; the outcomes are in the order of `reports`.
pub async fn handle_reports(
    db: &Db,
    reports: &[NodeReport],
) -> Result<Vec<ReportOutcome>, DbError> {
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(reports.len());
    for r in reports {
        let span = tracing::info_span!("omaha", machine = %r.machine_id, app = %r.application_id);
        out.push(handle_report_in(&mut tx, r).instrument(span).await?);
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing node reports"))?;
    Ok(out)
}

/// Handle one node report inside the caller's transaction. An unknown application writes
/// nothing.
async fn handle_report_in(tx: &mut Tx, r: &NodeReport) -> Result<ReportOutcome, DbError> {
    let app = keelson_omaha::normalize_app_id(&r.application_id);
    let now = r.now.timestamp();
    // The group lookup proves the application exists in the common case; only without a group
    // do we ask separately (an unknown application must not write anything).
    let group = groups::find_by_track(tx, &app, &r.track).await?;
    if group.is_none() {
        let known: Option<(String,)> = sqlx::query_as("SELECT id FROM applications WHERE id = $1")
            .bind(&app)
            .fetch_optional(&mut **tx)
            .await
            .map_err(DbError::query("reading application"))?;
        if known.is_none() {
            return Ok(ReportOutcome::UnknownApplication);
        }
    }
    let group_id = group.as_ref().map(|g| g.id);

    // The upsert never touches status, so RETURNING gives the status before this report.
    let (instance_id, mut status): (i64, i64) = sqlx::query_as(
        "INSERT INTO instances (machine_id, application_id, group_id, version, status, ip, alias, oem, aleph_version, last_check, created_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (machine_id, application_id) DO UPDATE SET group_id = $3, version = $4, ip = $5, alias = $6, \
         oem = $7, aleph_version = $8, last_check = $9 RETURNING id, status",
    )
    .bind(&r.machine_id)
    .bind(&app)
    .bind(group_id)
    .bind(&r.version)
    .bind(&r.ip)
    .bind(&r.alias)
    .bind(&r.oem)
    .bind(&r.aleph_version)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(DbError::query("upserting instance"))?;

    // A pending grant whose version the node now runs has completed.
    let mut pending = pending_grant(tx, instance_id).await?;
    if let (Some((gid, p)), Ok(cur)) = (&pending, Version::parse(&r.version))
        && let Ok(to) = Version::parse(&p.to_version)
        && cur >= to
    {
        sqlx::query("UPDATE grants SET outcome = 1, finished_at = $1 WHERE id = $2")
            .bind(now)
            .bind(gid)
            .execute(&mut **tx)
            .await
            .map_err(DbError::query("completing grant"))?;
        if let Some(g) = &group {
            rollout_finished_check(tx, g, *gid).await?;
        }
        let msg = format!("updated to {}", r.version);
        set_status(
            tx,
            instance_id,
            status,
            InstanceStatus::Complete,
            &r.version,
            &msg,
            now,
        )
        .await?;
        status = InstanceStatus::Complete.code();
        pending = None;
    }

    let mut failed_now = false;
    for e in &r.events {
        // update_engine attaches 3/2 with previousversion "" (or 0.0.0.0) to every scheduled
        // check: it says nothing, and storing it would grow the events table by one row per
        // check per node. Everything else is kept, error codes raw.
        let kind = (event_type(e.event_type), event_result(e.event_result));
        let no_news = kind == (EventType::UpdateComplete, EventResult::SuccessReboot)
            && (e.previous_version.is_empty() || e.previous_version == "0.0.0.0");
        if !no_news {
            sqlx::query(
            "INSERT INTO events (instance_id, event_type, event_result, error_code, version, previous_version, created_at, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(instance_id)
        .bind(e.event_type)
        .bind(e.event_result)
        .bind(e.error_code)
        .bind(&r.version)
        .bind(&e.previous_version)
        .bind(now)
        .bind(e.reason.as_deref())
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("recording event"))?;
        }
        let next = match kind {
            (EventType::UpdateDownloadStarted, EventResult::Success) => {
                Some((InstanceStatus::Downloading, "download started".to_string()))
            }
            (EventType::UpdateDownloadFinished, EventResult::Success) => {
                Some((InstanceStatus::Downloaded, "download finished".to_string()))
            }
            (EventType::UpdateComplete, EventResult::Success) => Some((
                InstanceStatus::Installed,
                "installed, reboot pending".to_string(),
            )),
            (EventType::UpdateComplete, EventResult::SuccessReboot)
                if !e.previous_version.is_empty()
                    && e.previous_version != "0.0.0.0"
                    && e.previous_version != r.version =>
            {
                Some((
                    InstanceStatus::Complete,
                    format!("updated from {} to {}", e.previous_version, r.version),
                ))
            }
            (EventType::UpdateComplete, EventResult::Error) => {
                let code = e.error_code.unwrap_or(0);
                let base = error_code(code).base();
                let rollback = base == ErrorCode::ROLLBACK.base();
                // A rollback is reported after the reboot, when the grant may already look
                // complete: the newest grant of the node fails either way.
                let target: Option<(i64, String)> = if rollback {
                    sqlx::query_as("SELECT id, to_version FROM grants WHERE instance_id = $1 ORDER BY id DESC LIMIT 1")
                        .bind(instance_id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(DbError::query("reading last grant"))?
                } else {
                    pending.as_ref().map(|(id, p)| (*id, p.to_version.clone()))
                };
                if let Some((gid, to)) = &target {
                    // Outcome 3 = rolled back: a failure that also keeps this node from being
                    // offered the same version again (no update/rollback loop).
                    sqlx::query("UPDATE grants SET outcome = $3, finished_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(gid)
                        .bind(if rollback {
                            OUTCOME_ROLLED_BACK
                        } else {
                            OUTCOME_FAILED
                        })
                        .execute(&mut **tx)
                        .await
                        .map_err(DbError::query("failing grant"))?;
                    failed_now = true;
                    pending = None;
                    let what = if rollback {
                        "rolled back from"
                    } else {
                        "failed to update to"
                    };
                    activity::insert(
                        tx,
                        &NewActivity {
                            severity: Severity::Warning,
                            kind: if rollback {
                                "instance.rollback"
                            } else {
                                "instance.update_failed"
                            },
                            actor: "omaha",
                            application_id: Some(&app),
                            group_id,
                            version: Some(to),
                            message: format!(
                                "instance {} {what} {to} (error code {base}, raw {code}){}",
                                r.machine_id,
                                reason_suffix(e)
                            ),
                        },
                    )
                    .await?;
                }
                Some((
                    InstanceStatus::Error,
                    format!(
                        "error event, code {base} (raw {code}){}{}",
                        if rollback { ": rollback" } else { "" },
                        reason_suffix(e)
                    ),
                ))
            }
            _ => None,
        };
        if let Some((s, msg)) = next {
            set_status(tx, instance_id, status, s, &r.version, &msg, now).await?;
            status = s.code();
        }
    }

    if failed_now && let Some(g) = &group {
        let (chan, _) = channel_version(tx, g.channel_id).await?;
        if let Some(target) = grant::target_version(&g.policy.rollout, chan.as_deref()) {
            let stats = rollout_stats(tx, g, target, now).await?;
            if let Some(cause) = grant::halt_check(&g.policy.rollout, &stats) {
                halt(tx, g, target, &cause).await?;
            }
        }
    }

    let check = if r.update_check {
        Some(match &group {
            None => CheckAnswer::NoUpdate {
                reason: format!("no group with track {:?}", r.track),
            },
            Some(g) => decide_and_apply(tx, g, r, instance_id, status, now, pending).await?,
        })
    } else {
        None
    };
    Ok(ReportOutcome::Recorded { instance_id, check })
}

/// `", reason <slug>"` when the event carries the agent's reason, else nothing.
fn reason_suffix(e: &NodeEvent) -> String {
    e.reason
        .as_deref()
        .map(|r| format!(", reason {r}"))
        .unwrap_or_default()
}

async fn decide_and_apply(
    tx: &mut Tx,
    group: &Group,
    r: &NodeReport,
    instance_id: i64,
    status: i64,
    now: i64,
    pending: Option<(i64, PendingGrant)>,
) -> Result<CheckAnswer, DbError> {
    let (chan, floors) = channel_version(tx, group.channel_id).await?;
    let mut group = group.clone();
    let mut pending = pending;
    // Fast path first: decide on zero counts without locking. Most checks end in a hold that
    // does not depend on the counts (up to date, disabled, halted, outside the window, not in
    // the wave); only a would-be grant or halt pays for the counts, under the group's row lock.
    // (So a halt caused by timeouts is recorded at the next check that could be granted; halts
    // caused by failure events are recorded when the event arrives.)
    let mut stats = RolloutStats::default();
    let mut rolled_back: Vec<String> = Vec::new();
    let mut locked = false;
    let decision = loop {
        let input = GrantInput {
            now: r.now,
            machine_id: &r.machine_id,
            instance_version: &r.version,
            policy: &group.policy.rollout,
            halted_version: group.policy.halted_version.as_deref(),
            channel_version: chan.as_deref(),
            floors: &floors,
            pending: pending.as_ref().map(|(_, p)| p),
            rolled_back: &rolled_back,
            stats,
        };
        let d = grant::decide(&input);
        let depends_on_counts = matches!(
            d,
            GrantDecision::Halt { .. }
                | GrantDecision::Grant {
                    reason: GrantReason::Rollout | GrantReason::Floor,
                    ..
                }
                | GrantDecision::Hold(
                    HoldReason::RolledBack
                        | HoldReason::SafeModeWaiting
                        | HoldReason::PeriodLimitReached
                        | HoldReason::ConcurrencyLimitReached
                )
        );
        if locked || !depends_on_counts {
            break d;
        }
        locked = true;
        sqlx::query("UPDATE groups SET lock_seq = lock_seq + 1 WHERE id = $1")
            .bind(group.id)
            .execute(&mut **tx)
            .await
            .map_err(DbError::query("locking group"))?;
        group = groups::get_in(tx, group.id).await?;
        if let Some(t) = grant::target_version(&group.policy.rollout, chan.as_deref()) {
            let t = t.to_string();
            stats = rollout_stats(tx, &group, &t, now).await?;
        }
        pending = pending_grant(tx, instance_id).await?;
        rolled_back = super::instances::rolled_back_in(tx, instance_id).await?;
    };
    match decision {
        GrantDecision::Hold(reason) => {
            let policy_hold = !matches!(
                reason,
                HoldReason::UpToDate
                    | HoldReason::NoPackage
                    | HoldReason::InvalidVersion
                    // Keep the Error status a rollback left: that is what an admin must see.
                    | HoldReason::RolledBack
            );
            let text = hold_text(&reason);
            if policy_hold {
                set_status(
                    tx,
                    instance_id,
                    status,
                    InstanceStatus::OnHold,
                    &r.version,
                    &text,
                    now,
                )
                .await?;
            }
            Ok(CheckAnswer::NoUpdate { reason: text })
        }
        GrantDecision::Halt {
            rollout_version,
            cause,
        } => {
            halt(tx, &group, &rollout_version, &cause).await?;
            set_status(
                tx,
                instance_id,
                status,
                InstanceStatus::OnHold,
                &r.version,
                "rollout halted",
                now,
            )
            .await?;
            Ok(CheckAnswer::NoUpdate {
                reason: format!("rollout_halted ({cause})"),
            })
        }
        GrantDecision::Grant {
            version,
            rollout_version,
            reason,
        } => {
            let Some(pkg) = packages::by_version(tx, &group.application_id, &version).await? else {
                log_group_event(
                    tx,
                    &group,
                    Severity::Warning,
                    "package.missing",
                    &version,
                    format!(
                        "group {:?} needs version {version} but no package has it",
                        group.name
                    ),
                )
                .await?;
                return Ok(CheckAnswer::NoUpdate {
                    reason: format!("no package for version {version}"),
                });
            };
            // The offer carries the SHA-256 in binary: refuse a row that cannot make one here,
            // before the grant is recorded, so the request fails as a whole.
            if !(pkg.sha256_hex.len() == 64
                && pkg.sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(DbError::Corrupt {
                    what: "packages.sha256_hex",
                    detail: format!("package {} has a corrupt sha256 in the database", pkg.id),
                });
            }
            if reason != GrantReason::Resend {
                // A timed-out grant this node never finished is closed as failed.
                if let Some((old, _)) = &pending {
                    sqlx::query("UPDATE grants SET outcome = 2, finished_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(old)
                        .execute(&mut **tx)
                        .await
                        .map_err(DbError::query("closing timed-out grant"))?;
                }
                let (earlier,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM grants WHERE group_id = $1 AND rollout_version = $2 LIMIT 1) t",
                )
                .bind(group.id)
                .bind(&rollout_version)
                .fetch_one(&mut **tx)
                .await
                .map_err(DbError::query("counting grants"))?;
                sqlx::query(
                    "INSERT INTO grants (group_id, instance_id, from_version, to_version, rollout_version, outcome, granted_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6)",
                )
                .bind(group.id)
                .bind(instance_id)
                .bind(&r.version)
                .bind(&version)
                .bind(&rollout_version)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(DbError::query("recording grant"))?;
                if earlier == 0 {
                    log_group_event(
                        tx,
                        &group,
                        Severity::Info,
                        "rollout.started",
                        &rollout_version,
                        format!(
                            "rollout of group {:?} to {rollout_version} started",
                            group.name
                        ),
                    )
                    .await?;
                }
                let msg = format!("granted {version}");
                set_status(
                    tx,
                    instance_id,
                    status,
                    InstanceStatus::UpdateGranted,
                    &r.version,
                    &msg,
                    now,
                )
                .await?;
            }
            // The offer lists the package's OS-bound extensions after the payload.
            let pkg = packages::with_extensions(tx, pkg).await?;
            Ok(CheckAnswer::Update {
                package: Box::new(pkg),
                reason,
            })
        }
    }
}

/// Log a rollout event of `group` about `version` in the caller's transaction; the Omaha
/// endpoint is the actor of every one.
async fn log_group_event(
    tx: &mut Tx,
    group: &Group,
    severity: Severity,
    kind: &str,
    version: &str,
    message: String,
) -> Result<(), DbError> {
    activity::insert(
        tx,
        &NewActivity {
            severity,
            kind,
            actor: "omaha",
            application_id: Some(&group.application_id),
            group_id: Some(group.id),
            version: Some(version),
            message,
        },
    )
    .await
}
