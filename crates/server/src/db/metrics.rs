//! The counts behind `/metrics`, read in one transaction so the families agree.

use super::{Db, DbError};

/// Every count the Prometheus endpoint shows, as rows ordered by their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// (application, channel name or "", version, instances).
    pub per_version: Vec<(String, String, String, i64)>,
    /// (application, group track or "", status code, instances).
    pub per_status: Vec<(String, String, i64, i64)>,
    /// (application, group track, grants, failed, succeeded).
    pub grants: Vec<(String, String, i64, i64, i64)>,
    /// (application, group track, 1 when halted).
    pub halted: Vec<(String, String, i64)>,
    /// (group track, reboot slots, holders).
    pub fleetlock: Vec<(String, i64, i64)>,
}

/// Read the counts of [`MetricsSnapshot`] in one transaction.
pub async fn snapshot(db: &Db) -> Result<MetricsSnapshot, DbError> {
    let mut tx = db.begin().await?;
    let per_version: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT i.application_id, COALESCE(c.name, ''), i.version, COUNT(*) FROM instances i \
         LEFT JOIN groups g ON g.id = i.group_id LEFT JOIN channels c ON c.id = g.channel_id \
         GROUP BY i.application_id, COALESCE(c.name, ''), i.version ORDER BY 1, 2, 3",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("counting instances per version"))?;
    let per_status: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT i.application_id, COALESCE(g.track, ''), i.status, COUNT(*) FROM instances i \
         LEFT JOIN groups g ON g.id = i.group_id GROUP BY i.application_id, COALESCE(g.track, ''), i.status ORDER BY 1, 2, 3",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("counting instances per status"))?;
    let grants: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT g.application_id, g.track, COUNT(r.id), COUNT(CASE WHEN r.outcome IN (2, 3) THEN 1 END), \
         COUNT(CASE WHEN r.outcome = 1 THEN 1 END) FROM groups g LEFT JOIN grants r ON r.group_id = g.id \
         GROUP BY g.application_id, g.track ORDER BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("counting grants"))?;
    let halted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT application_id, track, CASE WHEN halted_version IS NULL THEN 0 ELSE 1 END FROM groups ORDER BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("reading halted groups"))?;
    let fleetlock: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT g.track, MAX(g.fleetlock_slots), (SELECT COUNT(*) FROM fleetlock_holders h WHERE h.lock_group = g.track) \
         FROM groups g GROUP BY g.track ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("counting fleetlock holders"))?;
    tx.commit()
        .await
        .map_err(DbError::query("finishing the metrics read"))?;
    Ok(MetricsSnapshot {
        per_version,
        per_status,
        grants,
        halted,
        fleetlock,
    })
}
