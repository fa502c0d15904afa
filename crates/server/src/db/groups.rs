//! Groups: the nodes of an application that send one track, with their rollout policy.
//!
//! Each change is one function that owns its transaction and writes its activity row there:
//! [`create`], [`update`], [`change_policy`], [`delete`]. Reads: [`find`] (the row), [`view`]
//! and [`views`] (with the instance summary the REST API and the dashboard show). The callers
//! check the format of names; these functions check what only the database knows (the
//! application, channel and packages named exist, names and tracks are free, the policy is one
//! the grant engine accepts).

use keelson_api_types::{GroupUpdate, NewGroup, Policy, PolicyUpdate};
use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::{Db, DbError, Tx, flag, now_unix};
use crate::grant::{MaintenanceWindow, PolicyRules, RolloutPolicy};
use keelson_omaha::normalize_app_id as normalize_id;

/// A stored group.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// That channel's name.
    pub channel: Option<String>,
    /// The rollout policy and its automatic halt.
    pub policy: Policy,
    /// Unix seconds.
    pub created_at: i64,
}

/// A group with the summary of its instances: what the REST API and the dashboard show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub group: Group,
    /// Instances per version, most common first.
    pub versions: Vec<VersionCount>,
    /// Instances per status, by status code.
    pub statuses: Vec<StatusCount>,
    /// The version the group moves to: the pin, else its channel's package.
    pub target_version: Option<String>,
    /// Grants towards the target: (in progress, succeeded, failed).
    pub grants: (i64, i64, i64),
}

#[derive(FromRow)]
struct GroupRow {
    id: i64,
    application_id: String,
    name: String,
    track: String,
    channel_id: Option<i64>,
    channel_name: Option<String>,
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
            channel: r.channel_name,
            policy: Policy {
                rollout: RolloutPolicy {
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
            },
            created_at: r.created_at,
        })
    }
}

/// Every column of `groups` (alias `g`) and the name of its channel (alias `c`).
const SELECT: &str = "SELECT g.id, g.application_id, g.name, g.track, g.channel_id, \
    c.name AS channel_name, g.updates_enabled, g.safe_mode, g.max_updates_per_period, \
    g.period_secs, g.update_timeout_secs, g.timezone, g.maintenance_windows, g.rollout_percent, \
    g.failure_threshold_percent, g.pinned_version, g.fleetlock_slots, g.halted_version, \
    g.halted_reason, g.created_at FROM groups g LEFT JOIN channels c ON c.id = g.channel_id";

/// Groups of `application_id` (normalized), by name; only the group called `name` when given.
async fn select_in(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    name: Option<&str>,
) -> Result<Vec<Group>, DbError> {
    let filter = if name.is_some() {
        "AND g.name = $2"
    } else {
        ""
    };
    let sql = format!("{SELECT} WHERE g.application_id = $1 {filter} ORDER BY g.name");
    let mut query = sqlx::query_as::<_, GroupRow>(&sql).bind(application_id);
    if let Some(n) = name {
        query = query.bind(n);
    }
    query
        .fetch_all(conn)
        .await
        .map_err(DbError::query("reading groups"))?
        .into_iter()
        .map(Group::try_from)
        .collect()
}

/// Group `name` of application `app` (normalized): `NotFound` for a missing application
/// (checked first) or group.
async fn find_in(conn: &mut sqlx::AnyConnection, app: &str, name: &str) -> Result<Group, DbError> {
    super::applications::get_on(conn, app).await?;
    select_in(conn, app, Some(name))
        .await?
        .pop()
        .ok_or_else(|| DbError::NotFound {
            what: "group",
            key: name.to_string(),
        })
}

/// One group by id, on the caller's connection or transaction.
pub(super) async fn get_in(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Group, DbError> {
    sqlx::query_as::<_, GroupRow>(&format!("{SELECT} WHERE g.id = $1"))
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
pub(super) async fn find_by_track(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    track: &str,
) -> Result<Option<Group>, DbError> {
    let row = sqlx::query_as::<_, GroupRow>(&format!(
        "{SELECT} WHERE g.application_id = $1 AND (g.track = $2 OR g.name = $2) \
         ORDER BY CASE WHEN g.track = $2 THEN 0 ELSE 1 END, g.id LIMIT 1"
    ))
    .bind(application_id)
    .bind(track)
    .fetch_optional(conn)
    .await
    .map_err(DbError::query("finding group by track"))?;
    row.map(Group::try_from).transpose()
}

/// Add the instance summary to `group`, on the caller's connection or transaction.
async fn summarize_in(conn: &mut sqlx::AnyConnection, group: Group) -> Result<GroupView, DbError> {
    let versions = version_counts_in(conn, group.id).await?;
    let statuses = status_counts_in(conn, group.id).await?;
    let target_version = match &group.policy.rollout.pinned_version {
        Some(v) => Some(v.clone()),
        None => channel_version_in(conn, group.id).await?,
    };
    let grants = match &target_version {
        Some(t) => grant_outcomes_in(conn, group.id, t).await?,
        None => (0, 0, 0),
    };
    Ok(GroupView {
        group,
        versions,
        statuses,
        target_version,
        grants,
    })
}

/// A read transaction: every read of one answer sees the same state.
async fn read(db: &Db) -> Result<Tx, DbError> {
    db.begin().await
}

async fn end_read(tx: Tx) -> Result<(), DbError> {
    tx.commit()
        .await
        .map_err(DbError::query("ending a group read"))
}

/// Group `name` of application `application_id` (any spelling), without the summary;
/// `NotFound` for a missing application (checked first) or group.
pub async fn find(db: &Db, application_id: &str, name: &str) -> Result<Group, DbError> {
    let app = normalize_id(application_id);
    let mut tx = read(db).await?;
    let g = find_in(&mut tx, &app, name).await?;
    end_read(tx).await?;
    Ok(g)
}

/// Group `name` of application `application_id` (any spelling) with its summary.
pub async fn view(db: &Db, application_id: &str, name: &str) -> Result<GroupView, DbError> {
    let app = normalize_id(application_id);
    let mut tx = read(db).await?;
    let g = find_in(&mut tx, &app, name).await?;
    let v = summarize_in(&mut tx, g).await?;
    end_read(tx).await?;
    Ok(v)
}

/// Every group of application `application_id` (any spelling) with its summary, by name;
/// `NotFound` if the application does not exist.
pub async fn views(db: &Db, application_id: &str) -> Result<Vec<GroupView>, DbError> {
    let app = normalize_id(application_id);
    let mut tx = read(db).await?;
    super::applications::get_on(&mut tx, &app).await?;
    let mut out = Vec::new();
    for g in select_in(&mut tx, &app, None).await? {
        out.push(summarize_in(&mut tx, g).await?);
    }
    end_read(tx).await?;
    Ok(out)
}

/// The id of channel `name` of `app`, or [`DbError::UnknownChannel`].
async fn channel_id_in(tx: &mut Tx, app: &str, name: &str) -> Result<i64, DbError> {
    super::channels::id_by_name(tx, app, name)
        .await?
        .ok_or_else(|| DbError::UnknownChannel {
            application: app.to_string(),
            name: name.to_string(),
        })
}

/// Check `policy` as the grant engine would and that a pinned version names a package of
/// `app`.
async fn check_policy_in(tx: &mut Tx, app: &str, policy: &RolloutPolicy) -> Result<(), DbError> {
    policy.validate()?;
    if let Some(v) = &policy.pinned_version {
        super::packages::id_of_version_in(tx, app, v, "pinned_version").await?;
    }
    Ok(())
}

/// Create group `new.name` of application `application_id` (any spelling), its track
/// defaulting to its name, with the schema's default policy changed by `new.policy`, in one
/// transaction with its `group.created` row. `NotFound` without the application,
/// `UnknownChannel`, `TrackTaken`, `Conflict` (the name), `Policy` or `UnknownPackage` (the
/// pin).
pub async fn create(
    db: &Db,
    actor: &str,
    application_id: &str,
    new: &NewGroup,
) -> Result<GroupView, DbError> {
    let app = normalize_id(application_id);
    let track = new.track.clone().unwrap_or_else(|| new.name.clone());
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let channel = match &new.channel {
        Some(c) => Some(channel_id_in(&mut tx, &app, c).await?),
        None => None,
    };
    if let Some(other) = track_owner_in(&mut tx, &app, &track).await? {
        return Err(DbError::TrackTaken {
            track,
            group: other,
        });
    }
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO groups (application_id, name, track, channel_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&app)
    .bind(&new.name)
    .bind(&track)
    .bind(channel)
    .bind(now_unix())
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("group", &new.name))?;
    if let Some(update) = &new.policy {
        let mut policy = get_in(&mut tx, id).await?.policy;
        update.clone().apply_to(&mut policy);
        check_policy_in(&mut tx, &app, &policy.rollout).await?;
        write_policy(&mut tx, id, &policy).await?;
    }
    activity::insert(
        &mut tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "group.created",
            actor,
            application_id: Some(&app),
            group_id: Some(id),
            version: None,
            message: format!(
                "group {} created (track {track}, channel {})",
                new.name,
                new.channel.as_deref().unwrap_or("(none)")
            ),
        },
    )
    .await?;
    let group = get_in(&mut tx, id).await?;
    let view = summarize_in(&mut tx, group).await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing group"))?;
    Ok(view)
}

/// Rename group `name` of application `application_id` (any spelling), change its track or
/// channel (`Some(None)` detaches it), in one transaction with its `group.updated` row.
/// `NotFound`, `UnknownChannel`, or `Conflict` when the new name or track is taken.
pub async fn update(
    db: &Db,
    actor: &str,
    application_id: &str,
    name: &str,
    change: &GroupUpdate,
) -> Result<GroupView, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let current = find_in(&mut tx, &app, name).await?;
    let new_name = change.name.clone().unwrap_or(current.name.clone());
    let track = change.track.clone().unwrap_or(current.track.clone());
    let channel = match &change.channel {
        Some(Some(c)) => Some(channel_id_in(&mut tx, &app, c).await?),
        Some(None) => None,
        None => current.channel_id,
    };
    sqlx::query("UPDATE groups SET name = $1, track = $2, channel_id = $3 WHERE id = $4")
        .bind(&new_name)
        .bind(&track)
        .bind(channel)
        .bind(current.id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::unique(
            "group name or track",
            &format!("{new_name}/{track}"),
        ))?;
    activity::insert(
        &mut tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "group.updated",
            actor,
            application_id: Some(&app),
            group_id: Some(current.id),
            version: None,
            message: format!("group {name} updated (now {new_name}, track {track})"),
        },
    )
    .await?;
    let group = get_in(&mut tx, current.id).await?;
    let view = summarize_in(&mut tx, group).await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing group"))?;
    Ok(view)
}

/// The name of the group of `application_id` (normalized) that already uses `track`, if any.
async fn track_owner_in(
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

fn windows_json(p: &RolloutPolicy) -> Result<String, DbError> {
    serde_json::to_string(&p.maintenance_windows).map_err(|e| DbError::Invalid {
        field: "maintenance_windows",
        value: String::new(),
        reason: e.to_string(),
    })
}

/// Store `p` as group `id`'s policy inside `tx` (checked by the caller); a policy without a
/// halt also lifts an automatic halt.
async fn write_policy(tx: &mut Tx, id: i64, p: &Policy) -> Result<(), DbError> {
    let halt = if p.halted_version.is_none() {
        ", halted_version = NULL, halted_reason = NULL"
    } else {
        ""
    };
    let r = &p.rollout;
    sqlx::query(&format!(
        "UPDATE groups SET updates_enabled = $1, safe_mode = $2, max_updates_per_period = $3, \
         period_secs = $4, update_timeout_secs = $5, timezone = $6, maintenance_windows = $7, \
         rollout_percent = $8, failure_threshold_percent = $9, pinned_version = $10, \
         fleetlock_slots = $11{halt} WHERE id = $12"
    ))
    .bind(i64::from(r.updates_enabled))
    .bind(i64::from(r.safe_mode))
    .bind(r.max_updates_per_period)
    .bind(r.period_secs)
    .bind(r.update_timeout_secs)
    .bind(&r.timezone)
    .bind(windows_json(r)?)
    .bind(r.rollout_percent)
    .bind(r.failure_threshold_percent)
    .bind(r.pinned_version.as_deref())
    .bind(r.fleetlock_slots)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("updating group policy"))?;
    Ok(())
}

/// Apply `change` to the policy of group `name` of application `application_id` (any
/// spelling), check the result as the grant engine would, and store it in one transaction
/// with its row: `rollout.resumed` when it lifts a halt, else `group.policy_updated`, naming
/// each value that changed. Nothing is written when a value is refused (`Policy`, or
/// `UnknownPackage` for a pin). Returns the new policy.
pub async fn change_policy(
    db: &Db,
    actor: &str,
    application_id: &str,
    name: &str,
    change: PolicyUpdate,
) -> Result<Policy, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let current = find_in(&mut tx, &app, name).await?;
    let mut policy = current.policy.clone();
    change.apply_to(&mut policy);
    check_policy_in(&mut tx, &app, &policy.rollout).await?;
    write_policy(&mut tx, current.id, &policy).await?;
    let changes = describe_changes(&current.policy, &policy);
    let resumed = current.policy.halted_version.is_some() && policy.halted_version.is_none();
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: if resumed {
                Severity::Warning
            } else {
                Severity::Info
            },
            kind: if resumed {
                "rollout.resumed"
            } else {
                "group.policy_updated"
            },
            actor,
            application_id: Some(&app),
            group_id: Some(current.id),
            version: None,
            message: format!(
                "policy of group {name} updated: {}",
                if changes.is_empty() {
                    "no change".to_string()
                } else {
                    changes.join(", ")
                }
            ),
        },
        "committing group policy",
    )
    .await?;
    Ok(policy)
}

/// "field: old -> new" for each value of the policy's JSON that differs.
fn describe_changes(old: &Policy, new: &Policy) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: {} -> {v}",
                a.get(k).unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect()
}

/// Delete group `name` of application `application_id` (any spelling) in one transaction:
/// its instances stay, without a group; its grants go. `NotFound` for a missing application
/// (checked first) or group. Logs `group.deleted` with the group's id.
pub async fn delete(db: &Db, actor: &str, application_id: &str, name: &str) -> Result<(), DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let g = find_in(&mut tx, &app, name).await?;
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
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct VersionCount {
    /// The version.
    pub version: String,
    /// How many instances run it.
    pub count: i64,
}

/// Instances per version in a group, most common first, ties by version precedence (newest
/// first, [`keelson_version::compare`]); on the caller's connection.
async fn version_counts_in(
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

/// Instances per status code in a group.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct StatusCount {
    /// Status code (see [`super::instances::InstanceStatus`]).
    pub status: i64,
    /// How many instances have it.
    pub count: i64,
}

/// Instances per status in a group, by status code; on the caller's connection.
async fn status_counts_in(
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

/// The version of the package the group's channel points at, if any; on the caller's
/// connection.
async fn channel_version_in(
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
async fn grant_outcomes_in(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn changes_name_each_value_that_differs() {
        let old = Policy {
            halted_version: Some("2.0.0".into()),
            ..Policy::default()
        };
        let mut new = old.clone();
        PolicyUpdate {
            timezone: Some("Europe/Berlin".into()),
            resume: true,
            ..PolicyUpdate::default()
        }
        .apply_to(&mut new);
        assert_eq!(
            describe_changes(&old, &new),
            // In key order (serde_json's map is sorted).
            vec![
                r#"halted_version: "2.0.0" -> null"#.to_string(),
                r#"timezone: "UTC" -> "Europe/Berlin""#.to_string(),
            ]
        );
        assert!(describe_changes(&new, &new).is_empty());
    }
}
