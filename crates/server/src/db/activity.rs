//! The activity log: one row per change, written by the db function that makes the change, in
//! its transaction (`insert`, `record_and_commit`: visible only inside `db/`, so nothing else writes rows);
//! [`list`] reads it.

use sqlx::FromRow;

use super::{Db, DbError, Tx, now_unix};

/// How much an entry matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Severity {
    /// Routine change.
    Info,
    /// Needs a look (e.g. a node failed).
    Warning,
    /// Something stopped (e.g. a rollout halted).
    Error,
}

impl Severity {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// An entry to write.
#[derive(Clone, Debug)]
pub(super) struct NewActivity<'a> {
    /// How much it matters.
    pub severity: Severity,
    /// Machine-readable kind, e.g. `group.policy_updated`, `rollout.halted`.
    pub kind: &'a str,
    /// Who did it: a token id, `omaha` or `fleetlock`.
    pub actor: &'a str,
    /// The application concerned.
    pub application_id: Option<&'a str>,
    /// The group concerned.
    pub group_id: Option<i64>,
    /// The version concerned.
    pub version: Option<&'a str>,
    /// Human-readable text.
    pub message: String,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Activity {
    /// Row id (increasing).
    pub id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// `info`, `warning` or `error`.
    pub severity: String,
    /// Machine-readable kind.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// The application concerned.
    pub application_id: Option<String>,
    /// The group concerned.
    pub group_id: Option<i64>,
    /// The version concerned.
    pub version: Option<String>,
    /// Human-readable text.
    pub message: String,
}

/// Append an entry inside the caller's transaction.
pub(super) async fn insert(tx: &mut Tx, a: &NewActivity<'_>) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO activity (created_at, severity, kind, actor, application_id, group_id, version, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now_unix())
    .bind(a.severity.as_str())
    .bind(a.kind)
    .bind(a.actor)
    .bind(a.application_id)
    .bind(a.group_id)
    .bind(a.version)
    .bind(&a.message)
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("writing the activity log"))?;
    Ok(())
}

/// Append an entry and commit the transaction holding the change it describes; `committing`
/// names the commit in the error.
pub(super) async fn record_and_commit(
    mut tx: Tx,
    a: &NewActivity<'_>,
    committing: &'static str,
) -> Result<(), DbError> {
    insert(&mut tx, a).await?;
    tx.commit().await.map_err(DbError::query(committing))
}

/// Newest first, at most `limit` entries with id below `before` (paging), optionally for one
/// application or group.
pub async fn list(
    db: &Db,
    application_id: Option<&str>,
    group_id: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Activity>, DbError> {
    sqlx::query_as::<_, Activity>(
        "SELECT id, created_at, severity, kind, actor, application_id, group_id, version, message \
         FROM activity \
         WHERE ($1 IS NULL OR application_id = $1) AND ($2 IS NULL OR group_id = $2) AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(application_id)
    .bind(group_id)
    .bind(before)
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing activity"))
}
