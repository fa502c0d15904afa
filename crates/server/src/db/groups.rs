//! Groups: the nodes of an application that send one track, with their rollout policy.

use serde::Serialize;
use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::applications::validate_name;
use super::{Db, DbError, Tx, flag, now_unix};
use crate::grant::{MaintenanceWindow, RolloutPolicy};
use keelson_omaha::normalize_app_id as normalize_id;

/// A stored group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Row id.
    pub id: i64,
    /// Owning application.
    pub application_id: String,
    /// Display name.
    pub name: String,
    /// The Omaha track (update.conf `GROUP`) that selects this group; also its FleetLock group.
    pub track: String,
    /// The channel it follows.
    pub channel_id: Option<i64>,
    /// The rollout policy.
    pub policy: RolloutPolicy,
    /// The rollout version that is halted, if any.
    pub halted_version: Option<String>,
    /// Why it was halted.
    pub halted_reason: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(FromRow)]
struct GroupRow {
    id: i64,
    application_id: String,
    name: String,
    track: String,
    channel_id: Option<i64>,
    updates_enabled: i64,
    safe_mode: i64,
    max_updates_per_period: i64,
    period_secs: i64,
    update_timeout_secs: i64,
    timezone: String,
    maintenance_windows: String,
    rollout_percent: i64,
    failure_threshold_percent: i64,
    pinned_version: Option<String>,
    fleetlock_slots: i64,
    halted_version: Option<String>,
    halted_reason: Option<String>,
    created_at: i64,
}

impl TryFrom<GroupRow> for Group {
    type Error = DbError;
    fn try_from(r: GroupRow) -> Result<Group, DbError> {
        let windows: Vec<MaintenanceWindow> = serde_json::from_str(&r.maintenance_windows)
            .map_err(|e| DbError::Corrupt {
                what: "groups.maintenance_windows",
                detail: format!("group {}: {e}", r.id),
            })?;
        Ok(Group {
            id: r.id,
            application_id: r.application_id,
            name: r.name,
            track: r.track,
            channel_id: r.channel_id,
            policy: RolloutPolicy {
                updates_enabled: flag(r.updates_enabled),
                safe_mode: flag(r.safe_mode),
                max_updates_per_period: r.max_updates_per_period,
                period_secs: r.period_secs,
                update_timeout_secs: r.update_timeout_secs,
                timezone: r.timezone,
                maintenance_windows: windows,
                rollout_percent: r.rollout_percent,
                failure_threshold_percent: r.failure_threshold_percent,
                pinned_version: r.pinned_version,
                fleetlock_slots: r.fleetlock_slots,
            },
            halted_version: r.halted_version,
            halted_reason: r.halted_reason,
            created_at: r.created_at,
        })
    }
}

/// Every column of `groups`, read through the alias `g` (so the same list serves the join with
/// `channels` below).
const COLS: &str = "g.id, g.application_id, g.name, g.track, g.channel_id, g.updates_enabled, \
    g.safe_mode, g.max_updates_per_period, g.period_secs, g.update_timeout_secs, g.timezone, \
    g.maintenance_windows, g.rollout_percent, g.failure_threshold_percent, g.pinned_version, \
    g.fleetlock_slots, g.halted_version, g.halted_reason, g.created_at";

#[derive(FromRow)]
struct GroupChannelRow {
    #[sqlx(flatten)]
    group: GroupRow,
    channel_name: Option<String>,
}

/// Groups of `application_id` with the name of the channel each follows, by name; only the
/// group called `name` when given. On a given connection or transaction (the REST API reads
/// and writes a group in one transaction).
pub async fn with_channel_in(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    name: Option<&str>,
) -> Result<Vec<(Group, Option<String>)>, DbError> {
    let filter = if name.is_some() {
        "AND g.name = $2"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLS}, c.name AS channel_name FROM groups g \
         LEFT JOIN channels c ON c.id = g.channel_id \
         WHERE g.application_id = $1 {filter} ORDER BY g.name"
    );
    let mut query = sqlx::query_as::<_, GroupChannelRow>(&sql).bind(application_id);
    if let Some(n) = name {
        query = query.bind(n);
    }
    query
        .fetch_all(conn)
        .await
        .map_err(DbError::query("reading groups"))?
        .into_iter()
        .map(|r| Ok((Group::try_from(r.group)?, r.channel_name)))
        .collect()
}

/// Groups of an application, by name.
pub async fn list(db: &Db, application_id: &str) -> Result<Vec<Group>, DbError> {
    sqlx::query_as::<_, GroupRow>(&format!(
        "SELECT {COLS} FROM groups g WHERE application_id = $1 ORDER BY name"
    ))
    .bind(normalize_id(application_id))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing groups"))?
    .into_iter()
    .map(Group::try_from)
    .collect()
}

/// Every group of every application.
pub async fn list_all(db: &Db) -> Result<Vec<Group>, DbError> {
    sqlx::query_as::<_, GroupRow>(&format!(
        "SELECT {COLS} FROM groups g ORDER BY application_id, name"
    ))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing groups"))?
    .into_iter()
    .map(Group::try_from)
    .collect()
}

/// One group by id.
pub async fn get(db: &Db, id: i64) -> Result<Group, DbError> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .map_err(DbError::query("acquiring a connection"))?;
    get_in(&mut conn, id).await
}

/// One group by id, on a given connection or transaction.
pub async fn get_in(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Group, DbError> {
    sqlx::query_as::<_, GroupRow>(&format!("SELECT {COLS} FROM groups g WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(DbError::query("reading group"))?
        .ok_or(DbError::NotFound {
            what: "group",
            key: id.to_string(),
        })?
        .try_into()
}

/// The group of `application_id` whose track (or, failing that, name) is `track`.
pub async fn find_by_track(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    track: &str,
) -> Result<Option<Group>, DbError> {
    let row = sqlx::query_as::<_, GroupRow>(&format!(
        "SELECT {COLS} FROM groups g WHERE application_id = $1 AND (track = $2 OR name = $2) \
         ORDER BY CASE WHEN track = $2 THEN 0 ELSE 1 END, id LIMIT 1"
    ))
    .bind(application_id)
    .bind(track)
    .fetch_optional(conn)
    .await
    .map_err(DbError::query("finding group by track"))?;
    row.map(Group::try_from).transpose()
}

/// A group to create.
#[derive(Clone, Debug)]
pub struct NewGroup {
    /// Owning application (any spelling).
    pub application_id: String,
    /// Display name.
    pub name: String,
    /// Omaha track; `^[a-zA-Z0-9.-]+$` so it can also name the FleetLock group.
    pub track: String,
    /// Channel to follow.
    pub channel_id: Option<i64>,
    /// Rollout policy (validated).
    pub policy: RolloutPolicy,
}

/// Check a track name: also a FleetLock group name, so `^[a-zA-Z0-9.-]+$`.
pub fn validate_track(track: &str) -> Result<(), DbError> {
    if track.is_empty()
        || track.len() > 100
        || !track
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(DbError::Invalid {
            field: "track",
            value: track.to_string(),
            reason: "must match ^[a-zA-Z0-9.-]+$ (1-100 characters)".into(),
        });
    }
    Ok(())
}

fn validate_policy(p: &RolloutPolicy) -> Result<(), DbError> {
    p.validate().map_err(|e| DbError::Invalid {
        field: "policy",
        value: e.field.clone(),
        reason: e.to_string(),
    })
}

async fn check_channel(tx: &mut Tx, app: &str, channel_id: Option<i64>) -> Result<(), DbError> {
    let Some(cid) = channel_id else {
        return Ok(());
    };
    let row: Option<(String,)> =
        sqlx::query_as("SELECT application_id FROM channels WHERE id = $1")
            .bind(cid)
            .fetch_optional(&mut **tx)
            .await
            .map_err(DbError::query("reading channel"))?;
    match row {
        None => Err(DbError::NotFound {
            what: "channel",
            key: cid.to_string(),
        }),
        Some((a,)) if a != app => Err(DbError::Invalid {
            field: "channel_id",
            value: cid.to_string(),
            reason: format!("channel belongs to application {a}, not {app}"),
        }),
        Some(_) => Ok(()),
    }
}

fn windows_json(p: &RolloutPolicy) -> Result<String, DbError> {
    serde_json::to_string(&p.maintenance_windows).map_err(|e| DbError::Invalid {
        field: "maintenance_windows",
        value: String::new(),
        reason: e.to_string(),
    })
}

/// Create a group.
pub async fn create(db: &Db, actor: &str, new: &NewGroup) -> Result<Group, DbError> {
    let app = normalize_id(&new.application_id);
    validate_name("name", &new.name)?;
    validate_track(&new.track)?;
    validate_policy(&new.policy)?;
    let p = &new.policy;
    let mut tx = db.begin().await?;
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM applications WHERE id = $1")
        .bind(&app)
        .fetch_optional(&mut *tx)
        .await
        .map_err(DbError::query("reading application"))?;
    if exists.is_none() {
        return Err(DbError::NotFound {
            what: "application",
            key: app,
        });
    }
    check_channel(&mut tx, &app, new.channel_id).await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO groups (application_id, name, track, channel_id, updates_enabled, safe_mode, \
         max_updates_per_period, period_secs, update_timeout_secs, timezone, maintenance_windows, rollout_percent, \
         failure_threshold_percent, pinned_version, fleetlock_slots, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id",
    )
    .bind(&app)
    .bind(&new.name)
    .bind(&new.track)
    .bind(new.channel_id)
    .bind(i64::from(p.updates_enabled))
    .bind(i64::from(p.safe_mode))
    .bind(p.max_updates_per_period)
    .bind(p.period_secs)
    .bind(p.update_timeout_secs)
    .bind(&p.timezone)
    .bind(windows_json(p)?)
    .bind(p.rollout_percent)
    .bind(p.failure_threshold_percent)
    .bind(p.pinned_version.as_deref())
    .bind(p.fleetlock_slots)
    .bind(now_unix())
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("group", &format!("{} (track {})", new.name, new.track)))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "group.created",
            actor,
            application_id: Some(&app),
            group_id: Some(id),
            version: None,
            message: format!("group {:?} (track {}) created", new.name, new.track),
        },
        "committing group",
    )
    .await?;
    get(db, id).await
}

/// Change a group's name, track and channel.
pub async fn update(
    db: &Db,
    actor: &str,
    id: i64,
    name: &str,
    track: &str,
    channel_id: Option<i64>,
) -> Result<Group, DbError> {
    validate_name("name", name)?;
    validate_track(track)?;
    let g = get(db, id).await?;
    let mut tx = db.begin().await?;
    check_channel(&mut tx, &g.application_id, channel_id).await?;
    sqlx::query("UPDATE groups SET name = $1, track = $2, channel_id = $3 WHERE id = $4")
        .bind(name)
        .bind(track)
        .bind(channel_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::unique("group", &format!("{name} (track {track})")))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "group.updated",
            actor,
            application_id: Some(&g.application_id),
            group_id: Some(id),
            version: None,
            message: format!("group {name:?} updated (track {track}, channel {channel_id:?})"),
        },
        "committing group",
    )
    .await?;
    get(db, id).await
}

/// The name of the group of `application_id` (normalized) that already uses `track`, if
/// any; on the caller's connection or transaction.
pub async fn track_owner_in(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    track: &str,
) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT name FROM groups WHERE application_id = $1 AND track = $2")
            .bind(application_id)
            .bind(track)
            .fetch_optional(conn)
            .await
            .map_err(DbError::query("checking tracks"))?;
    Ok(row.map(|(n,)| n))
}

/// Insert group `name` with the schema's default policy inside the caller's transaction,
/// which also writes the activity row; `Conflict` (key: the name) when taken. Returns the id.
pub async fn insert_in(
    tx: &mut Tx,
    application_id: &str,
    name: &str,
    track: &str,
    channel_id: Option<i64>,
) -> Result<i64, DbError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO groups (application_id, name, track, channel_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(application_id)
    .bind(name)
    .bind(track)
    .bind(channel_id)
    .bind(now_unix())
    .fetch_one(&mut **tx)
    .await
    .map_err(DbError::unique("group", name))?;
    Ok(id)
}

/// Set group `id`'s name, track and channel inside the caller's transaction, which also
/// writes the activity row; `Conflict` (key `NAME/TRACK`) when either is taken.
pub async fn rename_in(
    tx: &mut Tx,
    id: i64,
    name: &str,
    track: &str,
    channel_id: Option<i64>,
) -> Result<(), DbError> {
    sqlx::query("UPDATE groups SET name = $1, track = $2, channel_id = $3 WHERE id = $4")
        .bind(name)
        .bind(track)
        .bind(channel_id)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(DbError::unique(
            "group name or track",
            &format!("{name}/{track}"),
        ))?;
    Ok(())
}

/// Store `p` as group `id`'s policy inside `tx` (not validated here: callers do); with
/// `clear_halt` also lift an automatic halt. Shared by [`update_policy`] and the REST API.
pub(crate) async fn write_policy(
    tx: &mut Tx,
    id: i64,
    p: &RolloutPolicy,
    clear_halt: bool,
) -> Result<(), DbError> {
    let halt = if clear_halt {
        ", halted_version = NULL, halted_reason = NULL"
    } else {
        ""
    };
    sqlx::query(&format!(
        "UPDATE groups SET updates_enabled = $1, safe_mode = $2, max_updates_per_period = $3, \
         period_secs = $4, update_timeout_secs = $5, timezone = $6, maintenance_windows = $7, \
         rollout_percent = $8, failure_threshold_percent = $9, pinned_version = $10, \
         fleetlock_slots = $11{halt} WHERE id = $12"
    ))
    .bind(i64::from(p.updates_enabled))
    .bind(i64::from(p.safe_mode))
    .bind(p.max_updates_per_period)
    .bind(p.period_secs)
    .bind(p.update_timeout_secs)
    .bind(&p.timezone)
    .bind(windows_json(p)?)
    .bind(p.rollout_percent)
    .bind(p.failure_threshold_percent)
    .bind(p.pinned_version.as_deref())
    .bind(p.fleetlock_slots)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("updating group policy"))?;
    Ok(())
}

/// Replace a group's rollout policy (validated; nothing is written when invalid).
pub async fn update_policy(
    db: &Db,
    actor: &str,
    id: i64,
    policy: &RolloutPolicy,
) -> Result<Group, DbError> {
    validate_policy(policy)?;
    let g = get(db, id).await?;
    let p = policy;
    let mut tx = db.begin().await?;
    write_policy(&mut tx, id, p, false).await?;
    let json = serde_json::to_string(p).unwrap_or_default();
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "group.policy_updated",
            actor,
            application_id: Some(&g.application_id),
            group_id: Some(id),
            version: None,
            message: format!("policy of group {:?} set to {json}", g.name),
        },
        "committing group policy",
    )
    .await?;
    get(db, id).await
}

/// Lift an automatic halt so the rollout continues.
pub async fn resume(db: &Db, actor: &str, id: i64) -> Result<Group, DbError> {
    let g = get(db, id).await?;
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE groups SET halted_version = NULL, halted_reason = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("resuming group"))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "rollout.resumed",
            actor,
            application_id: Some(&g.application_id),
            group_id: Some(id),
            version: g.halted_version.as_deref(),
            message: format!("rollout of group {:?} resumed", g.name),
        },
        "committing resume",
    )
    .await?;
    get(db, id).await
}

/// Delete group `name` of application `application_id` (any spelling) in one transaction:
/// its instances stay, without a group; its grants go. `NotFound` for a missing application
/// (checked first) or group. Logs `group.deleted` with the group's id.
pub async fn delete(db: &Db, actor: &str, application_id: &str, name: &str) -> Result<(), DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let (g, _) = with_channel_in(&mut tx, &app, Some(name))
        .await?
        .pop()
        .ok_or_else(|| DbError::NotFound {
            what: "group",
            key: name.to_string(),
        })?;
    for sql in [
        "UPDATE instances SET group_id = NULL WHERE group_id = $1",
        "DELETE FROM grants WHERE group_id = $1",
        "DELETE FROM groups WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(g.id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("deleting group"))?;
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "group.deleted",
            actor,
            application_id: Some(&app),
            group_id: Some(g.id),
            version: None,
            message: format!("group {name} deleted"),
        },
        "committing group delete",
    )
    .await
}

/// Instances per version in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, FromRow)]
pub struct VersionCount {
    /// The version.
    pub version: String,
    /// How many instances run it.
    pub count: i64,
}

/// Instances per version in a group, most common first, ties by version precedence (newest
/// first, [`keelson_version::compare`]); on the caller's connection.
pub async fn version_counts_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<Vec<VersionCount>, DbError> {
    let mut v = sqlx::query_as::<_, VersionCount>(
        "SELECT version, COUNT(*) AS count FROM instances WHERE group_id = $1 GROUP BY version",
    )
    .bind(id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("counting versions"))?;
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| keelson_version::compare(&b.version, &a.version))
    });
    Ok(v)
}

/// Instances per version in a group, most common first (see [`version_counts_in`]).
pub async fn version_breakdown(db: &Db, id: i64) -> Result<Vec<VersionCount>, DbError> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .map_err(DbError::query("getting a connection"))?;
    version_counts_in(&mut conn, id).await
}

/// Instances per status code in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct StatusCount {
    /// Status code (see [`super::instances::InstanceStatus`]).
    pub status: i64,
    /// How many instances have it.
    pub count: i64,
}

/// Instances per status in a group, by status code; on the caller's connection.
pub async fn status_counts_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<Vec<StatusCount>, DbError> {
    sqlx::query_as::<_, StatusCount>(
        "SELECT status, COUNT(*) AS count FROM instances WHERE group_id = $1 GROUP BY status ORDER BY status",
    )
    .bind(id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("counting statuses"))
}

/// Instances per status in a group.
pub async fn status_breakdown(db: &Db, id: i64) -> Result<Vec<StatusCount>, DbError> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .map_err(DbError::query("getting a connection"))?;
    status_counts_in(&mut conn, id).await
}

/// The version of the package the group's channel points at, if any; on the caller's
/// connection.
pub async fn channel_version_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<Option<String>, DbError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT p.version FROM groups g JOIN channels c ON c.id = g.channel_id \
         LEFT JOIN packages p ON p.id = c.package_id WHERE g.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(DbError::query("reading the group's target"))?;
    Ok(row.and_then(|(v,)| v))
}

/// Grants of a group towards `version`: (in progress, succeeded, failed); on the caller's
/// connection.
pub async fn grant_outcomes_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
    version: &str,
) -> Result<(i64, i64, i64), DbError> {
    let outcomes: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT outcome, COUNT(*) FROM grants WHERE group_id = $1 AND rollout_version = $2 \
         GROUP BY outcome",
    )
    .bind(id)
    .bind(version)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("counting grants"))?;
    let mut out = (0, 0, 0);
    for (outcome, n) in outcomes {
        match outcome {
            0 => out.0 += n,
            1 => out.1 += n,
            _ => out.2 += n,
        }
    }
    Ok(out)
}
