//! FleetLock semaphores: holders per lock group, slots from the Keelson group with that track.

use serde::Serialize;

use super::activity::{self, NewActivity, Severity};
use super::{Db, DbError, now_unix};

/// Result of a lock attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum LockOutcome {
    /// The slot is held by `id` (newly taken, or already held: the lock is recursive).
    Held {
        /// Holders now.
        holders: i64,
        /// Slots of the group.
        slots: i64,
    },
    /// Every slot is taken by someone else.
    Full {
        /// Holders now.
        holders: i64,
        /// Slots of the group.
        slots: i64,
    },
    /// No Keelson group has this track.
    UnknownGroup,
}

/// Result of an unlock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum UnlockOutcome {
    /// Released (`was_held`) or not held in the first place; both are success.
    Released {
        /// Whether `id` held a slot.
        was_held: bool,
    },
    /// No Keelson group has this track.
    UnknownGroup,
}

async fn slots_and_lock(tx: &mut super::Tx, group: &str) -> Result<Option<i64>, DbError> {
    // Bumping the groups' lock_seq serializes lockers of this group: a row lock on PostgreSQL,
    // the single writer on SQLite. Without it two nodes could both take the last slot.
    let n = sqlx::query("UPDATE groups SET lock_seq = lock_seq + 1 WHERE track = $1")
        .bind(group)
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("locking fleetlock group"))?
        .rows_affected();
    if n == 0 {
        return Ok(None);
    }
    let (slots,): (i64,) =
        sqlx::query_as("SELECT MAX(fleetlock_slots) FROM groups WHERE track = $1")
            .bind(group)
            .fetch_one(&mut **tx)
            .await
            .map_err(DbError::query("reading fleetlock slots"))?;
    Ok(Some(slots))
}

async fn holders(tx: &mut super::Tx, group: &str) -> Result<i64, DbError> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM fleetlock_holders WHERE lock_group = $1")
            .bind(group)
            .fetch_one(&mut **tx)
            .await
            .map_err(DbError::query("counting fleetlock holders"))?;
    Ok(n)
}

/// RecursiveLock: take a slot of `group` for `id`, or confirm it is already held.
pub async fn lock(db: &Db, group: &str, id: &str) -> Result<LockOutcome, DbError> {
    let mut tx = db.begin().await?;
    let Some(slots) = slots_and_lock(&mut tx, group).await? else {
        return Ok(LockOutcome::UnknownGroup);
    };
    let held: Option<(String,)> = sqlx::query_as(
        "SELECT holder_id FROM fleetlock_holders WHERE lock_group = $1 AND holder_id = $2",
    )
    .bind(group)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("reading fleetlock holder"))?;
    let n = holders(&mut tx, group).await?;
    if held.is_some() {
        tx.commit()
            .await
            .map_err(DbError::query("committing fleetlock"))?;
        return Ok(LockOutcome::Held { holders: n, slots });
    }
    if n >= slots {
        return Ok(LockOutcome::Full { holders: n, slots });
    }
    sqlx::query(
        "INSERT INTO fleetlock_holders (lock_group, holder_id, acquired_at) VALUES ($1, $2, $3)",
    )
    .bind(group)
    .bind(id)
    .bind(now_unix())
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("taking fleetlock slot"))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "fleetlock.locked",
            actor: "fleetlock",
            application_id: None,
            group_id: None,
            version: None,
            message: format!("{id} took a reboot slot of {group} ({}/{slots})", n + 1),
        },
        "committing fleetlock",
    )
    .await?;
    Ok(LockOutcome::Held {
        holders: n + 1,
        slots,
    })
}

/// UnlockIfHeld: release `id`'s slot of `group` if it holds one.
pub async fn unlock(db: &Db, group: &str, id: &str) -> Result<UnlockOutcome, DbError> {
    let mut tx = db.begin().await?;
    if slots_and_lock(&mut tx, group).await?.is_none() {
        return Ok(UnlockOutcome::UnknownGroup);
    }
    let n = sqlx::query("DELETE FROM fleetlock_holders WHERE lock_group = $1 AND holder_id = $2")
        .bind(group)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("releasing fleetlock slot"))?
        .rows_affected();
    if n > 0 {
        activity::insert(
            &mut tx,
            &NewActivity {
                severity: Severity::Info,
                kind: "fleetlock.unlocked",
                actor: "fleetlock",
                application_id: None,
                group_id: None,
                version: None,
                message: format!("{id} released its reboot slot of {group}"),
            },
        )
        .await?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing fleetlock"))?;
    Ok(UnlockOutcome::Released { was_held: n > 0 })
}

/// One FleetLock holder: who holds a slot of which lock group since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The lock group (a group's track).
    pub group: String,
    /// The client's id (Zincati: its app-specific machine id).
    pub id: String,
    /// When it took the slot (Unix seconds).
    pub acquired_at: i64,
}

/// Holders of `group` (or of every lock group), by group, oldest first.
pub async fn holders_with_time(db: &Db, group: Option<&str>) -> Result<Vec<Holder>, DbError> {
    let rows: Vec<(String, String, i64)> = match group {
        Some(g) => {
            sqlx::query_as(
                "SELECT lock_group, holder_id, acquired_at FROM fleetlock_holders \
             WHERE lock_group = $1 ORDER BY acquired_at, holder_id",
            )
            .bind(g)
            .fetch_all(db.pool())
            .await
        }
        None => {
            sqlx::query_as(
                "SELECT lock_group, holder_id, acquired_at FROM fleetlock_holders \
             ORDER BY lock_group, acquired_at, holder_id",
            )
            .fetch_all(db.pool())
            .await
        }
    }
    .map_err(DbError::query("listing fleetlock holders"))?;
    Ok(rows
        .into_iter()
        .map(|(group, id, acquired_at)| Holder {
            group,
            id,
            acquired_at,
        })
        .collect())
}

/// An admin releases `id`'s slot of `group` (a node that is gone for good); `NotFound` when
/// it holds none. Recorded in the activity log with the admin as actor.
pub async fn release_by_admin(db: &Db, actor: &str, group: &str, id: &str) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    if slots_and_lock(&mut tx, group).await?.is_none() {
        return Err(DbError::NotFound {
            what: "fleetlock group",
            key: group.to_owned(),
        });
    }
    let n = sqlx::query("DELETE FROM fleetlock_holders WHERE lock_group = $1 AND holder_id = $2")
        .bind(group)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("releasing fleetlock slot"))?
        .rows_affected();
    if n == 0 {
        return Err(DbError::NotFound {
            what: "fleetlock holder",
            key: format!("{group}/{id}"),
        });
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "fleetlock.released_by_admin",
            actor,
            application_id: None,
            group_id: None,
            version: None,
            message: format!("{actor} released {id}'s reboot slot of {group}"),
        },
        "committing fleetlock release",
    )
    .await
}
