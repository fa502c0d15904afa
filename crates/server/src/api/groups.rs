//! Groups (track + channel + rollout policy) and their policies.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::apps::{acquire, double_option, load_app};
use super::{
    Activity, ApiError, ApiJson, Severity, begin, check_name, check_version, commit, db_err,
    db_unique, log_activity, normalize_app_id,
};
use crate::auth::{RequireAdmin, RequireViewer};
use crate::db::{Tx, now_unix};
use crate::state::AppState;

/// The rollout policy of a group, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// Master switch: when false every check is answered `noupdate`.
    pub updates_enabled: bool,
    /// Grant one update at a time until the first node finishes the current version.
    pub safe_mode: bool,
    /// At most this many grants per `period_secs`.
    pub max_updates_per_period: i64,
    /// Length of the rate-limit period, seconds.
    pub period_secs: i64,
    /// A grant not finished within this many seconds counts as timed out.
    pub update_timeout_secs: i64,
    /// IANA time zone the maintenance windows are read in.
    pub timezone: String,
    /// Weekly windows in which updates may be granted; empty means always.
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// Share of the group (by machine ID) offered the current version: staged waves.
    pub rollout_percent: i64,
    /// Halt the rollout when failures reach this percentage of its finished updates.
    pub failure_threshold_percent: i64,
    /// Hold the group at this version instead of the channel's.
    pub pinned_version: Option<String>,
    /// FleetLock: how many nodes of the group may reboot at once.
    pub fleetlock_slots: i64,
    /// Version whose rollout was halted automatically (read-only; clear with `resume`).
    pub halted_version: Option<String>,
    /// Why the rollout was halted (read-only).
    pub halted_reason: Option<String>,
}

/// A weekly maintenance window: the grant engine's type, so the API stores what it reads.
pub use crate::grant::MaintenanceWindow;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Body of `PUT .../policy`: fields left out stay as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// See [`Policy::updates_enabled`].
    pub updates_enabled: Option<bool>,
    /// See [`Policy::safe_mode`].
    pub safe_mode: Option<bool>,
    /// See [`Policy::max_updates_per_period`].
    pub max_updates_per_period: Option<i64>,
    /// See [`Policy::period_secs`].
    pub period_secs: Option<i64>,
    /// See [`Policy::update_timeout_secs`].
    pub update_timeout_secs: Option<i64>,
    /// See [`Policy::timezone`].
    pub timezone: Option<String>,
    /// See [`Policy::maintenance_windows`].
    pub maintenance_windows: Option<Vec<MaintenanceWindow>>,
    /// See [`Policy::rollout_percent`].
    pub rollout_percent: Option<i64>,
    /// See [`Policy::failure_threshold_percent`].
    pub failure_threshold_percent: Option<i64>,
    /// See [`Policy::pinned_version`]; `null` unpins.
    #[serde(default, deserialize_with = "double_option")]
    pub pinned_version: Option<Option<String>>,
    /// See [`Policy::fleetlock_slots`].
    pub fleetlock_slots: Option<i64>,
    /// `true` clears an automatic halt so the rollout continues.
    #[serde(default)]
    pub resume: bool,
}

fn check_range(field: &str, value: i64, min: i64, max: i64) -> Result<(), ApiError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} must be between {min} and {max}, got {value}"),
        ))
    }
}

fn check_hhmm(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() == 5
        && value.as_bytes()[2] == b':'
        && value[..2].parse::<u32>().is_ok_and(|h| h < 24)
        && value[3..].parse::<u32>().is_ok_and(|m| m < 60)
        && value[..2]
            .chars()
            .chain(value[3..].chars())
            .all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} {value:?} is not a time like 02:30"),
        ))
    }
}

impl PolicyUpdate {
    /// Apply to `policy`, checking every given value; the first bad one is named in a 400.
    pub fn apply(self, policy: &mut Policy) -> Result<(), ApiError> {
        if let Some(v) = self.updates_enabled {
            policy.updates_enabled = v;
        }
        if let Some(v) = self.safe_mode {
            policy.safe_mode = v;
        }
        if let Some(v) = self.max_updates_per_period {
            check_range("max_updates_per_period", v, 1, 1_000_000)?;
            policy.max_updates_per_period = v;
        }
        if let Some(v) = self.period_secs {
            check_range("period_secs", v, 60, 31 * 86_400)?;
            policy.period_secs = v;
        }
        if let Some(v) = self.update_timeout_secs {
            check_range("update_timeout_secs", v, 60, 7 * 86_400)?;
            policy.update_timeout_secs = v;
        }
        if let Some(tz) = self.timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(ApiError::invalid(
                    "timezone",
                    format!("timezone {tz:?} is not an IANA time zone like Europe/Berlin"),
                ));
            }
            policy.timezone = tz;
        }
        if let Some(windows) = self.maintenance_windows {
            if windows.len() > 50 {
                return Err(ApiError::invalid(
                    "maintenance_windows",
                    "at most 50 maintenance windows",
                ));
            }
            for (i, w) in windows.iter().enumerate() {
                let f = format!("maintenance_windows[{i}]");
                if w.days.is_empty() {
                    return Err(ApiError::invalid(
                        &format!("{f}.days"),
                        "days must not be empty",
                    ));
                }
                for d in &w.days {
                    if !DAYS.contains(&d.as_str()) {
                        return Err(ApiError::invalid(
                            &format!("{f}.days"),
                            format!("day {d:?} is not one of {}", DAYS.join(", ")),
                        ));
                    }
                }
                check_hhmm(&format!("{f}.start"), &w.start)?;
                check_hhmm(&format!("{f}.end"), &w.end)?;
                if w.start == w.end {
                    return Err(ApiError::invalid(
                        &format!("{f}.end"),
                        "end must differ from start",
                    ));
                }
            }
            policy.maintenance_windows = windows;
        }
        if let Some(v) = self.rollout_percent {
            check_range("rollout_percent", v, 0, 100)?;
            policy.rollout_percent = v;
        }
        if let Some(v) = self.failure_threshold_percent {
            check_range("failure_threshold_percent", v, 1, 100)?;
            policy.failure_threshold_percent = v;
        }
        if let Some(v) = self.pinned_version {
            if let Some(version) = &v {
                check_version("pinned_version", version)?;
            }
            policy.pinned_version = v;
        }
        if let Some(v) = self.fleetlock_slots {
            check_range("fleetlock_slots", v, 1, 100_000)?;
            policy.fleetlock_slots = v;
        }
        if self.resume {
            policy.halted_version = None;
            policy.halted_reason = None;
        }
        // The grant engine's own check too, so the API never stores what it would refuse.
        let engine = crate::grant::RolloutPolicy {
            updates_enabled: policy.updates_enabled,
            safe_mode: policy.safe_mode,
            max_updates_per_period: policy.max_updates_per_period,
            period_secs: policy.period_secs,
            update_timeout_secs: policy.update_timeout_secs,
            timezone: policy.timezone.clone(),
            maintenance_windows: policy.maintenance_windows.clone(),
            rollout_percent: policy.rollout_percent,
            failure_threshold_percent: policy.failure_threshold_percent,
            pinned_version: policy.pinned_version.clone(),
            fleetlock_slots: policy.fleetlock_slots,
        };
        engine
            .validate()
            .map_err(|e| ApiError::invalid(&e.field, format!("{}: {}", e.field, e.reason)))
    }
}

/// Instances of a group at one version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionCount {
    /// The version.
    pub version: String,
    /// How many instances run it.
    pub count: i64,
}

/// Instances of a group in one status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusCount {
    /// Status name (see [`super::instances::status_name`]).
    pub status: String,
    /// How many instances are in it.
    pub count: i64,
}

/// Progress of the group towards its target version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutProgress {
    /// The version the group is moving to (pin, else the channel's), if any.
    pub target_version: Option<String>,
    /// Instances in the group.
    pub instances: i64,
    /// Instances already running the target.
    pub on_target: i64,
    /// Grants towards the target still in progress.
    pub in_progress: i64,
    /// Grants towards the target that succeeded.
    pub succeeded: i64,
    /// Grants towards the target that failed.
    pub failed: i64,
    /// Whether the rollout is halted.
    pub halted: bool,
}

/// A group with its policy and a summary of its instances.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Group {
    /// Numeric ID.
    pub id: i64,
    /// The application.
    pub application_id: String,
    /// Name, unique within the application.
    pub name: String,
    /// The Omaha `track` nodes send to land in this group.
    pub track: String,
    /// Name of the channel the group follows, if any.
    pub channel: Option<String>,
    /// The rollout policy.
    pub policy: Policy,
    /// Instances per version, most common first.
    pub versions: Vec<VersionCount>,
    /// Instances per status.
    pub statuses: Vec<StatusCount>,
    /// Progress towards the target version.
    pub rollout: RolloutProgress,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /api/v1/apps/{app}/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Group name.
    pub name: String,
    /// Track nodes send (default: the name).
    pub track: Option<String>,
    /// Channel to follow.
    pub channel: Option<String>,
    /// Policy values differing from the defaults.
    #[serde(default)]
    pub policy: Option<PolicyUpdate>,
}

/// Body of `PUT /api/v1/apps/{app}/groups/{group}`: fields left out stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    /// New name.
    pub name: Option<String>,
    /// New track.
    pub track: Option<String>,
    /// Channel to follow; `null` detaches.
    #[serde(default, deserialize_with = "double_option")]
    pub channel: Option<Option<String>>,
}

const GROUP_SELECT: &str = "SELECT g.id, g.application_id, g.name, g.track, c.name, \
     g.updates_enabled, g.safe_mode, g.max_updates_per_period, g.period_secs, \
     g.update_timeout_secs, g.timezone, g.maintenance_windows, g.rollout_percent, \
     g.failure_threshold_percent, g.pinned_version, g.fleetlock_slots, g.halted_version, \
     g.halted_reason, g.created_at FROM groups g LEFT JOIN channels c ON c.id = g.channel_id";

/// A group row without the instance summary.
pub(crate) struct GroupCore {
    pub id: i64,
    pub application_id: String,
    pub name: String,
    pub track: String,
    pub channel: Option<String>,
    pub policy: Policy,
    pub created_at: i64,
}

fn core_from_row(row: &sqlx::any::AnyRow) -> Result<GroupCore, ApiError> {
    // More columns than sqlx's tuple decoding takes, so read them by index.
    fn get<'r, T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>>(
        row: &'r sqlx::any::AnyRow,
        i: usize,
    ) -> Result<T, ApiError> {
        row.try_get(i).map_err(db_err("decoding a group row"))
    }
    let name: String = get(row, 2)?;
    let windows_json: String = get(row, 11)?;
    let windows: Vec<MaintenanceWindow> = serde_json::from_str(&windows_json).map_err(|e| {
        ApiError::internal(
            "reading a group",
            format!("group {name} has unreadable maintenance_windows: {e}"),
        )
    })?;
    Ok(GroupCore {
        id: get(row, 0)?,
        application_id: get(row, 1)?,
        name,
        track: get(row, 3)?,
        channel: get(row, 4)?,
        policy: Policy {
            updates_enabled: get::<i64>(row, 5)? != 0,
            safe_mode: get::<i64>(row, 6)? != 0,
            max_updates_per_period: get(row, 7)?,
            period_secs: get(row, 8)?,
            update_timeout_secs: get(row, 9)?,
            timezone: get(row, 10)?,
            maintenance_windows: windows,
            rollout_percent: get(row, 12)?,
            failure_threshold_percent: get(row, 13)?,
            pinned_version: get(row, 14)?,
            fleetlock_slots: get(row, 15)?,
            halted_version: get(row, 16)?,
            halted_reason: get(row, 17)?,
        },
        created_at: get(row, 18)?,
    })
}

/// Load group `name` of `app` or 404.
pub(crate) async fn load_group(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    name: &str,
) -> Result<GroupCore, ApiError> {
    let row = sqlx::query(&format!(
        "{GROUP_SELECT} WHERE g.application_id = $1 AND g.name = $2"
    ))
    .bind(app)
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(db_err("reading a group"))?;
    match row {
        Some(r) => core_from_row(&r),
        None => Err(ApiError::not_found("group", name)),
    }
}

/// All groups of `app` (without summaries), by name.
pub(crate) async fn load_groups(
    conn: &mut sqlx::AnyConnection,
    app: &str,
) -> Result<Vec<GroupCore>, ApiError> {
    let rows = sqlx::query(&format!(
        "{GROUP_SELECT} WHERE g.application_id = $1 ORDER BY g.name"
    ))
    .bind(app)
    .fetch_all(conn)
    .await
    .map_err(db_err("listing groups"))?;
    rows.iter().map(core_from_row).collect()
}

/// Add the instance summary (versions, statuses, rollout progress) to a group.
pub(crate) async fn summarize(
    conn: &mut sqlx::AnyConnection,
    core: GroupCore,
) -> Result<Group, ApiError> {
    let versions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT version, COUNT(*) FROM instances WHERE group_id = $1 GROUP BY version",
    )
    .bind(core.id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err("counting versions"))?;
    let mut versions: Vec<VersionCount> = versions
        .into_iter()
        .map(|(version, count)| VersionCount { version, count })
        .collect();
    versions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| super::apps::compare_versions(&b.version, &a.version))
    });
    let statuses: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM instances WHERE group_id = $1 GROUP BY status ORDER BY status",
    )
    .bind(core.id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err("counting statuses"))?;
    let statuses = statuses
        .into_iter()
        .map(|(s, count)| StatusCount {
            status: super::instances::status_name(s).to_string(),
            count,
        })
        .collect();
    let target_version = match &core.policy.pinned_version {
        Some(v) => Some(v.clone()),
        None => {
            let row: Option<(Option<String>,)> = sqlx::query_as(
                "SELECT p.version FROM groups g JOIN channels c ON c.id = g.channel_id \
                 LEFT JOIN packages p ON p.id = c.package_id WHERE g.id = $1",
            )
            .bind(core.id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err("reading the group's target"))?;
            row.and_then(|(v,)| v)
        }
    };
    let instances: i64 = versions.iter().map(|v| v.count).sum();
    let mut rollout = RolloutProgress {
        target_version: target_version.clone(),
        instances,
        on_target: 0,
        in_progress: 0,
        succeeded: 0,
        failed: 0,
        halted: core.policy.halted_version.is_some(),
    };
    if let Some(target) = &target_version {
        rollout.on_target = versions
            .iter()
            .filter(|v| &v.version == target)
            .map(|v| v.count)
            .sum();
        let outcomes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT outcome, COUNT(*) FROM grants WHERE group_id = $1 AND rollout_version = $2 \
             GROUP BY outcome",
        )
        .bind(core.id)
        .bind(target)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err("counting grants"))?;
        for (outcome, n) in outcomes {
            match outcome {
                0 => rollout.in_progress += n,
                1 => rollout.succeeded += n,
                _ => rollout.failed += n,
            }
        }
    }
    Ok(Group {
        id: core.id,
        application_id: core.application_id,
        name: core.name,
        track: core.track,
        channel: core.channel,
        policy: core.policy,
        versions,
        statuses,
        rollout,
        created_at: core.created_at,
    })
}

async fn channel_id(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    name: &str,
) -> Result<i64, ApiError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM channels WHERE application_id = $1 AND name = $2")
            .bind(app)
            .bind(name)
            .fetch_optional(conn)
            .await
            .map_err(db_err("looking up a channel"))?;
    row.map(|(id,)| id).ok_or_else(|| {
        ApiError::invalid(
            "channel",
            format!("channel: application {app} has no channel {name:?}"),
        )
    })
}

async fn store_policy(tx: &mut Tx, group_id: i64, p: &Policy) -> Result<(), ApiError> {
    let windows = serde_json::to_string(&p.maintenance_windows)
        .map_err(|e| ApiError::internal("encoding maintenance windows", e))?;
    sqlx::query(
        "UPDATE groups SET updates_enabled = $1, safe_mode = $2, max_updates_per_period = $3, \
         period_secs = $4, update_timeout_secs = $5, timezone = $6, maintenance_windows = $7, \
         rollout_percent = $8, failure_threshold_percent = $9, pinned_version = $10, \
         fleetlock_slots = $11, halted_version = $12, halted_reason = $13 WHERE id = $14",
    )
    .bind(i64::from(p.updates_enabled))
    .bind(i64::from(p.safe_mode))
    .bind(p.max_updates_per_period)
    .bind(p.period_secs)
    .bind(p.update_timeout_secs)
    .bind(&p.timezone)
    .bind(windows)
    .bind(p.rollout_percent)
    .bind(p.failure_threshold_percent)
    .bind(p.pinned_version.clone())
    .bind(p.fleetlock_slots)
    .bind(p.halted_version.clone())
    .bind(p.halted_reason.clone())
    .bind(group_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err("updating a group's policy"))?;
    Ok(())
}

/// Check that a pinned version names a package of the application.
async fn check_pin(conn: &mut sqlx::AnyConnection, app: &str, p: &Policy) -> Result<(), ApiError> {
    if let Some(v) = &p.pinned_version {
        super::apps::package_id(conn, app, v, "pinned_version").await?;
    }
    Ok(())
}

/// `GET /api/v1/apps/{app}/groups`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Vec<Group>>, ApiError> {
    let app = normalize_app_id(&app);
    let mut conn = acquire(&state).await?;
    load_app(&mut conn, &app).await?;
    let mut out = Vec::new();
    for core in load_groups(&mut conn, &app).await? {
        out.push(summarize(&mut conn, core).await?);
    }
    Ok(Json(out))
}

/// `GET /api/v1/apps/{app}/groups/{group}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: RequireViewer,
    Path((app, group)): Path<(String, String)>,
) -> Result<Json<Group>, ApiError> {
    let app = normalize_app_id(&app);
    let mut conn = acquire(&state).await?;
    load_app(&mut conn, &app).await?;
    let core = load_group(&mut conn, &app, &group).await?;
    summarize(&mut conn, core).await.map(Json)
}

/// `POST /api/v1/apps/{app}/groups`.
pub async fn create(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<NewGroup>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    let app = normalize_app_id(&app);
    check_name("name", &body.name)?;
    let track = body.track.clone().unwrap_or_else(|| body.name.clone());
    check_name("track", &track)?;
    let mut tx = begin(&state).await?;
    load_app(&mut tx, &app).await?;
    let channel = match &body.channel {
        Some(c) => Some(channel_id(&mut tx, &app, c).await?),
        None => None,
    };
    let taken: Option<(String,)> =
        sqlx::query_as("SELECT name FROM groups WHERE application_id = $1 AND track = $2")
            .bind(&app)
            .bind(&track)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("checking tracks"))?;
    if let Some((other,)) = taken {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("track {track:?} is already used by group {other:?}"),
            field: Some("track".into()),
        });
    }
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO groups (application_id, name, track, channel_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&app)
    .bind(&body.name)
    .bind(&track)
    .bind(channel)
    .bind(now_unix())
    .fetch_one(&mut *tx)
    .await
    .map_err(db_unique("inserting a group", "group", &body.name))?;
    if let Some(update) = body.policy {
        let mut policy = load_group(&mut tx, &app, &body.name).await?.policy;
        update.apply(&mut policy)?;
        check_pin(&mut tx, &app, &policy).await?;
        store_policy(&mut tx, id, &policy).await?;
    }
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Info,
            kind: "group.created",
            actor: &caller.actor(),
            application_id: Some(&app),
            group_id: Some(id),
            version: None,
            message: format!(
                "group {} created (track {track}, channel {})",
                body.name,
                body.channel.as_deref().unwrap_or("(none)")
            ),
        },
    )
    .await?;
    let core = load_group(&mut tx, &app, &body.name).await?;
    let group = summarize(&mut tx, core).await?;
    commit(tx).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

/// `PUT /api/v1/apps/{app}/groups/{group}`: rename, change track or channel.
pub async fn update(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, group)): Path<(String, String)>,
    ApiJson(body): ApiJson<GroupUpdate>,
) -> Result<Json<Group>, ApiError> {
    let app = normalize_app_id(&app);
    if let Some(n) = &body.name {
        check_name("name", n)?;
    }
    if let Some(t) = &body.track {
        check_name("track", t)?;
    }
    let mut tx = begin(&state).await?;
    load_app(&mut tx, &app).await?;
    let current = load_group(&mut tx, &app, &group).await?;
    let name = body.name.clone().unwrap_or(current.name.clone());
    let track = body.track.clone().unwrap_or(current.track.clone());
    let channel = match &body.channel {
        Some(Some(c)) => Some(channel_id(&mut tx, &app, c).await?),
        Some(None) => None,
        None => match &current.channel {
            Some(c) => Some(channel_id(&mut tx, &app, c).await?),
            None => None,
        },
    };
    sqlx::query("UPDATE groups SET name = $1, track = $2, channel_id = $3 WHERE id = $4")
        .bind(&name)
        .bind(&track)
        .bind(channel)
        .bind(current.id)
        .execute(&mut *tx)
        .await
        .map_err(db_unique(
            "updating a group",
            "group name or track",
            &format!("{name}/{track}"),
        ))?;
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Info,
            kind: "group.updated",
            actor: &caller.actor(),
            application_id: Some(&app),
            group_id: Some(current.id),
            version: None,
            message: format!("group {group} updated (now {name}, track {track})"),
        },
    )
    .await?;
    let core = load_group(&mut tx, &app, &name).await?;
    let out = summarize(&mut tx, core).await?;
    commit(tx).await?;
    Ok(Json(out))
}

/// `DELETE /api/v1/apps/{app}/groups/{group}`: its instances stay, without a group.
pub async fn delete(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, group)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = normalize_app_id(&app);
    let mut tx = begin(&state).await?;
    load_app(&mut tx, &app).await?;
    let current = load_group(&mut tx, &app, &group).await?;
    for sql in [
        "UPDATE instances SET group_id = NULL WHERE group_id = $1",
        "DELETE FROM grants WHERE group_id = $1",
        "DELETE FROM groups WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(current.id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("deleting a group"))?;
    }
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Warning,
            kind: "group.deleted",
            actor: &caller.actor(),
            application_id: Some(&app),
            group_id: Some(current.id),
            version: None,
            message: format!("group {group} deleted"),
        },
    )
    .await?;
    commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/apps/{app}/groups/{group}/policy`.
pub async fn get_policy(
    State(state): State<AppState>,
    _: RequireViewer,
    Path((app, group)): Path<(String, String)>,
) -> Result<Json<Policy>, ApiError> {
    let app = normalize_app_id(&app);
    let mut conn = acquire(&state).await?;
    load_app(&mut conn, &app).await?;
    Ok(Json(load_group(&mut conn, &app, &group).await?.policy))
}

/// Validate and store a policy change for group `group`, logging what changed; shared by the
/// API and the dashboard's form. Returns the new policy.
pub async fn change_policy(
    state: &AppState,
    actor: &str,
    app: &str,
    group: &str,
    update: PolicyUpdate,
) -> Result<Policy, ApiError> {
    let app = normalize_app_id(app);
    let mut tx = begin(state).await?;
    load_app(&mut tx, &app).await?;
    let current = load_group(&mut tx, &app, group).await?;
    let mut policy = current.policy.clone();
    update.apply(&mut policy)?;
    check_pin(&mut tx, &app, &policy).await?;
    store_policy(&mut tx, current.id, &policy).await?;
    let changes = describe_changes(&current.policy, &policy);
    let resumed = current.policy.halted_version.is_some() && policy.halted_version.is_none();
    log_activity(
        &mut tx,
        Activity {
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
                "policy of group {group} updated: {}",
                if changes.is_empty() {
                    "no change".to_string()
                } else {
                    changes.join(", ")
                }
            ),
        },
    )
    .await?;
    commit(tx).await?;
    Ok(policy)
}

/// "field: old -> new" for each field that differs.
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

/// `PUT /api/v1/apps/{app}/groups/{group}/policy`.
pub async fn put_policy(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, group)): Path<(String, String)>,
    ApiJson(body): ApiJson<PolicyUpdate>,
) -> Result<Json<Policy>, ApiError> {
    change_policy(&state, &caller.actor(), &app, &group, body)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn base() -> Policy {
        Policy {
            updates_enabled: true,
            safe_mode: false,
            max_updates_per_period: 10,
            period_secs: 3600,
            update_timeout_secs: 3600,
            timezone: "UTC".into(),
            maintenance_windows: vec![],
            rollout_percent: 100,
            failure_threshold_percent: 100,
            pinned_version: None,
            fleetlock_slots: 1,
            halted_version: Some("2.0.0".into()),
            halted_reason: Some("failures".into()),
        }
    }

    #[test]
    fn invalid_policy_values_name_their_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"max_updates_per_period": 0}"#, "max_updates_per_period"),
            (r#"{"period_secs": 5}"#, "period_secs"),
            (r#"{"update_timeout_secs": -1}"#, "update_timeout_secs"),
            (r#"{"timezone": "Mars/Olympus"}"#, "timezone"),
            (r#"{"rollout_percent": 101}"#, "rollout_percent"),
            (
                r#"{"failure_threshold_percent": 0}"#,
                "failure_threshold_percent",
            ),
            (r#"{"pinned_version": "latest"}"#, "pinned_version"),
            (r#"{"fleetlock_slots": 0}"#, "fleetlock_slots"),
            (
                r#"{"maintenance_windows": [{"days": ["mon"], "start": "25:00", "end": "03:00"}]}"#,
                "maintenance_windows[0].start",
            ),
            (
                r#"{"maintenance_windows": [{"days": ["funday"], "start": "01:00", "end": "03:00"}]}"#,
                "maintenance_windows[0].days",
            ),
            (
                r#"{"maintenance_windows": [{"days": ["sat"], "start": "01:00", "end": "01:00"}]}"#,
                "maintenance_windows[0].end",
            ),
        ];
        for (json, field) in cases {
            let update: PolicyUpdate = serde_json::from_str(json).unwrap();
            let mut p = base();
            let err = update.apply(&mut p).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(err.field.as_deref(), Some(*field), "{json}");
        }
    }

    #[test]
    fn valid_update_applies_and_resume_clears_halt() {
        let update: PolicyUpdate = serde_json::from_str(
            r#"{"max_updates_per_period": 5, "timezone": "Europe/Berlin", "rollout_percent": 25,
                "maintenance_windows": [{"days": ["sat", "sun"], "start": "22:00", "end": "04:00"}],
                "pinned_version": "3975.2.0", "resume": true}"#,
        )
        .unwrap();
        let mut p = base();
        update.apply(&mut p).unwrap();
        assert_eq!(p.max_updates_per_period, 5);
        assert_eq!(p.timezone, "Europe/Berlin");
        assert_eq!(p.rollout_percent, 25);
        assert_eq!(p.maintenance_windows.len(), 1);
        assert_eq!(p.pinned_version.as_deref(), Some("3975.2.0"));
        assert_eq!(p.halted_version, None);
        assert!(p.updates_enabled, "untouched fields stay");

        let unpin: PolicyUpdate = serde_json::from_str(r#"{"pinned_version": null}"#).unwrap();
        unpin.apply(&mut p).unwrap();
        assert_eq!(p.pinned_version, None);
        let changes = describe_changes(&base(), &p);
        assert!(
            changes.iter().any(|c| c.starts_with("timezone:")),
            "{changes:?}"
        );
    }
}
