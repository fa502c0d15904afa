//! Instances (nodes), their status history and events.

use sqlx::FromRow;

use super::{Db, DbError};

/// Where a node is in its update, with Nebraska's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// An instance (a node of one application) as the REST API and the dashboard show it.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Instance {
    /// Row id.
    pub id: i64,
    /// `/etc/machine-id` as sent by the node.
    pub machine_id: String,
    /// Application.
    pub application_id: String,
    /// Name of the group it reported (by track), if any.
    pub group_name: Option<String>,
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

/// A status change.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
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

/// An Omaha event a node reported.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
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
    /// `keelson_reason`: the agent's slug for a failure, if it sent one.
    pub reason: Option<String>,
}

/// The instance search of the REST API and the dashboard; values are checked by the caller.
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// Normalized application id.
    pub app: Option<String>,
    /// Group name.
    pub group: Option<String>,
    /// Exact version.
    pub version: Option<String>,
    /// Status code.
    pub status: Option<i64>,
    /// Substring of the machine id or alias (`%` and `_` are dropped).
    pub q: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

const LIST_COLUMNS: &str = "i.id, i.machine_id, i.application_id, g.name AS group_name, \
     i.version, i.status, i.ip, i.alias, i.oem, i.aleph_version, i.last_check, i.created_at";

/// Instances matching `f`, most recently seen first: the total and one page, read in one
/// transaction.
pub async fn search(db: &Db, f: &Search) -> Result<(i64, Vec<Instance>), DbError> {
    // Build the WHERE clause from fixed fragments; every value goes in as a bind parameter.
    let mut clauses: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let mut push = |clause: &str, value: String| {
        binds.push(value);
        clauses.push(clause.replace('?', &format!("${}", binds.len())));
    };
    if let Some(app) = &f.app {
        push("i.application_id = ?", app.clone());
    }
    if let Some(group) = &f.group {
        push("g.name = ?", group.clone());
    }
    if let Some(v) = &f.version {
        push("i.version = ?", v.clone());
    }
    if let Some(q) = &f.q {
        let n = binds.len();
        binds.push(format!("%{}%", q.replace(['%', '_'], "")));
        clauses.push(format!(
            "(i.machine_id LIKE ${} OR i.alias LIKE ${})",
            n + 1,
            n + 1
        ));
    }
    let mut where_sql = if clauses.is_empty() {
        String::from("WHERE 1 = 1")
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let status_idx = binds.len() + 1;
    if f.status.is_some() {
        where_sql.push_str(&format!(" AND i.status = ${status_idx}"));
    }
    let from = "FROM instances i LEFT JOIN groups g ON g.id = i.group_id";
    let mut tx = db.begin().await?;
    let count_sql = format!("SELECT COUNT(*) {from} {where_sql}");
    let mut count_q = sqlx::query_as::<_, (i64,)>(&count_sql);
    for b in &binds {
        count_q = count_q.bind(b.clone());
    }
    if let Some(s) = f.status {
        count_q = count_q.bind(s);
    }
    let (total,) = count_q
        .fetch_one(&mut *tx)
        .await
        .map_err(DbError::query("counting instances"))?;
    let page_sql = format!(
        "SELECT {LIST_COLUMNS} {from} {where_sql} ORDER BY i.last_check DESC, i.id \
         LIMIT {} OFFSET {}",
        f.limit, f.offset
    );
    let mut page_q = sqlx::query_as::<_, Instance>(&page_sql);
    for b in &binds {
        page_q = page_q.bind(b.clone());
    }
    if let Some(s) = f.status {
        page_q = page_q.bind(s);
    }
    let rows = page_q
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::query("listing instances"))?;
    tx.commit()
        .await
        .map_err(DbError::query("finishing the instance search"))?;
    Ok((total, rows))
}

/// An instance with its newest status changes and events, and the versions it rolled back
/// from that are still blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceDetail {
    /// The instance.
    pub instance: Instance,
    /// Its newest status changes, newest first.
    pub history: Vec<StatusChange>,
    /// Its newest events, newest first.
    pub events: Vec<Event>,
    /// Versions it rolled back from that an admin has not cleared, sorted.
    pub rolled_back: Vec<String>,
}

/// Versions instance `id` rolled back from and that an admin has not cleared: the grant
/// engine never offers them to it again. Sorted.
pub(super) async fn rolled_back_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT to_version FROM grants \
         WHERE instance_id = $1 AND outcome = 3 AND rollback_cleared_at IS NULL \
         ORDER BY to_version",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(DbError::query("reading rolled-back versions"))?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// One instance with its newest 100 status changes and events, or `None`.
pub async fn detail(db: &Db, id: i64) -> Result<Option<InstanceDetail>, DbError> {
    let mut tx = db.begin().await?;
    let row: Option<Instance> = sqlx::query_as(&format!(
        "SELECT {LIST_COLUMNS} FROM instances i LEFT JOIN groups g ON g.id = i.group_id \
         WHERE i.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("reading an instance"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let history: Vec<StatusChange> = sqlx::query_as(
        "SELECT status, version, message, created_at FROM instance_status_history \
         WHERE instance_id = $1 ORDER BY id DESC LIMIT 100",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("reading status history"))?;
    let events: Vec<Event> = sqlx::query_as(
        "SELECT event_type, event_result, error_code, version, previous_version, created_at, reason \
         FROM events WHERE instance_id = $1 ORDER BY id DESC LIMIT 100",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("reading events"))?;
    let rolled_back = rolled_back_in(&mut tx, id).await?;
    tx.commit()
        .await
        .map_err(DbError::query("finishing the instance read"))?;
    Ok(Some(InstanceDetail {
        instance: row,
        history,
        events,
        rolled_back,
    }))
}

/// Let instance `id` be offered `version` again after it rolled back from it: an admin's
/// decision (e.g. after fixing the node or the release). One transaction with its activity
/// row; `NotFound` when the instance does not exist or has no blocked rollback from `version`.
pub async fn clear_rollback(db: &Db, actor: &str, id: i64, version: &str) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    let inst: Option<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT machine_id, application_id, group_id FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(DbError::query("reading an instance"))?;
    let Some((machine_id, application_id, group_id)) = inst else {
        return Err(DbError::NotFound {
            what: "instance",
            key: id.to_string(),
        });
    };
    let now = super::now_unix();
    let done = sqlx::query(
        "UPDATE grants SET rollback_cleared_at = $1 \
         WHERE instance_id = $2 AND to_version = $3 AND outcome = 3 AND rollback_cleared_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .bind(version)
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("clearing a rollback"))?;
    if done.rows_affected() == 0 {
        return Err(DbError::NotFound {
            what: "rollback",
            key: format!("instance {id} from version {version}"),
        });
    }
    super::activity::insert(
        &mut tx,
        &super::activity::NewActivity {
            severity: super::activity::Severity::Info,
            kind: "instance.rollback_cleared",
            actor,
            application_id: Some(&application_id),
            group_id,
            version: Some(version),
            message: format!(
                "instance {machine_id} may be offered {version} again (its rollback was cleared)"
            ),
        },
    )
    .await?;
    tx.commit()
        .await
        .map_err(DbError::query("finishing the rollback clear"))
}
