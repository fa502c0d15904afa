//! Instances (nodes), their status history and events.

use serde::Serialize;
use sqlx::FromRow;

use super::{Db, DbError};

/// Where a node is in its update, with Nebraska's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Nothing known (1).
    Undefined,
    /// An update was granted (2).
    UpdateGranted,
    /// The last update failed (3).
    Error,
    /// The last update completed (4).
    Complete,
    /// Installed, waiting for the reboot (5).
    Installed,
    /// Payload downloaded (6).
    Downloaded,
    /// Downloading the payload (7).
    Downloading,
    /// Policy held the node back at its last check (8).
    OnHold,
}

impl InstanceStatus {
    /// The stored code.
    pub fn code(self) -> i64 {
        match self {
            InstanceStatus::Undefined => 1,
            InstanceStatus::UpdateGranted => 2,
            InstanceStatus::Error => 3,
            InstanceStatus::Complete => 4,
            InstanceStatus::Installed => 5,
            InstanceStatus::Downloaded => 6,
            InstanceStatus::Downloading => 7,
            InstanceStatus::OnHold => 8,
        }
    }

    /// From a stored code (unknown codes read as Undefined).
    pub fn from_code(c: i64) -> InstanceStatus {
        match c {
            2 => InstanceStatus::UpdateGranted,
            3 => InstanceStatus::Error,
            4 => InstanceStatus::Complete,
            5 => InstanceStatus::Installed,
            6 => InstanceStatus::Downloaded,
            7 => InstanceStatus::Downloading,
            8 => InstanceStatus::OnHold,
            _ => InstanceStatus::Undefined,
        }
    }

    /// Lowercase name for display.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Undefined => "undefined",
            InstanceStatus::UpdateGranted => "update_granted",
            InstanceStatus::Error => "error",
            InstanceStatus::Complete => "complete",
            InstanceStatus::Installed => "installed",
            InstanceStatus::Downloaded => "downloaded",
            InstanceStatus::Downloading => "downloading",
            InstanceStatus::OnHold => "on_hold",
        }
    }
}

/// A stored instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct Instance {
    /// Row id.
    pub id: i64,
    /// `/etc/machine-id` as sent by the node.
    pub machine_id: String,
    /// Application.
    pub application_id: String,
    /// Group it reported (by track).
    pub group_id: Option<i64>,
    /// Version it runs.
    pub version: String,
    /// Status code ([`InstanceStatus`]).
    pub status: i64,
    /// Source address of its last request.
    pub ip: String,
    /// `machinealias`.
    pub alias: String,
    /// OEM id.
    pub oem: String,
    /// First version installed.
    pub aleph_version: String,
    /// Unix seconds of the last request.
    pub last_check: i64,
    /// Unix seconds of the first request.
    pub created_at: i64,
}

const COLS: &str = "id, machine_id, application_id, group_id, version, status, ip, alias, oem, aleph_version, last_check, created_at";

/// Which instances to list.
#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    /// Only this application.
    pub application_id: Option<String>,
    /// Only this group.
    pub group_id: Option<i64>,
    /// Only this version.
    pub version: Option<String>,
    /// Only this status code.
    pub status: Option<i64>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

const WHERE: &str = "WHERE ($1 IS NULL OR application_id = $1) AND ($2 IS NULL OR group_id = $2) \
    AND ($3 IS NULL OR version = $3) AND ($4 IS NULL OR status = $4)";

/// Instances matching `f`, most recently seen first.
pub async fn list(db: &Db, f: &InstanceFilter) -> Result<Vec<Instance>, DbError> {
    sqlx::query_as::<_, Instance>(&format!(
        "SELECT {COLS} FROM instances {WHERE} ORDER BY last_check DESC, id LIMIT $5 OFFSET $6"
    ))
    .bind(f.application_id.as_deref())
    .bind(f.group_id)
    .bind(f.version.as_deref())
    .bind(f.status)
    .bind(f.limit.unwrap_or(100).clamp(1, 1000))
    .bind(f.offset.unwrap_or(0).max(0))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing instances"))
}

/// How many instances match `f` (paging ignored).
pub async fn count(db: &Db, f: &InstanceFilter) -> Result<i64, DbError> {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM instances {WHERE}"))
        .bind(f.application_id.as_deref())
        .bind(f.group_id)
        .bind(f.version.as_deref())
        .bind(f.status)
        .fetch_one(db.pool())
        .await
        .map_err(DbError::query("counting instances"))?;
    Ok(n)
}

/// One instance by row id.
pub async fn get(db: &Db, id: i64) -> Result<Instance, DbError> {
    sqlx::query_as::<_, Instance>(&format!("SELECT {COLS} FROM instances WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .map_err(DbError::query("reading instance"))?
        .ok_or(DbError::NotFound {
            what: "instance",
            key: id.to_string(),
        })
}

/// One instance by machine id and application.
pub async fn get_by_machine(
    db: &Db,
    application_id: &str,
    machine_id: &str,
) -> Result<Instance, DbError> {
    sqlx::query_as::<_, Instance>(&format!(
        "SELECT {COLS} FROM instances WHERE application_id = $1 AND machine_id = $2"
    ))
    .bind(keelson_omaha::normalize_app_id(application_id))
    .bind(machine_id)
    .fetch_optional(db.pool())
    .await
    .map_err(DbError::query("reading instance"))?
    .ok_or(DbError::NotFound {
        what: "instance",
        key: machine_id.to_string(),
    })
}

/// A status change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct StatusChange {
    /// Status code.
    pub status: i64,
    /// Version at the time.
    pub version: String,
    /// Why (event or decision).
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Status history of an instance, newest first.
pub async fn history(db: &Db, id: i64, limit: i64) -> Result<Vec<StatusChange>, DbError> {
    sqlx::query_as::<_, StatusChange>(
        "SELECT status, version, message, created_at FROM instance_status_history \
         WHERE instance_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("reading status history"))
}

/// An Omaha event a node reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct Event {
    /// Omaha event type (3 update complete, 13 download started, 14 downloaded, ...).
    pub event_type: i64,
    /// Omaha event result (0 error, 1 success, 2 success + reboot, ...).
    pub event_result: i64,
    /// `errorcode`, flag bits included.
    pub error_code: Option<i64>,
    /// Version the node ran.
    pub version: String,
    /// `previousversion`.
    pub previous_version: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Events of an instance, newest first.
pub async fn events(db: &Db, id: i64, limit: i64) -> Result<Vec<Event>, DbError> {
    sqlx::query_as::<_, Event>(
        "SELECT event_type, event_result, error_code, version, previous_version, created_at FROM events \
         WHERE instance_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("reading events"))
}
