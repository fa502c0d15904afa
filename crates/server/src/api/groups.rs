//! Groups (track + channel + rollout policy) and their policies.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keelson_omaha::normalize_app_id;

use crate::auth::{RequireAdmin, RequireViewer};
use crate::db::{self, Tx};
use crate::error::ApiError;
use crate::request::{
    Activity, ApiJson, Severity, acquire, begin, check_name, commit, load_app, log_activity,
};
use crate::state::AppState;

pub use keelson_api_types::{
    Group, GroupUpdate, MaintenanceWindow, NewGroup, Policy, PolicyUpdate, RolloutProgress,
    StatusCount, VersionCount,
};

/// Apply `update` to `policy` and check the result with the grant engine's own rules, so the
/// API never stores what the engine would refuse; the first bad field is named in a 400.
pub fn apply_update(update: PolicyUpdate, policy: &mut Policy) -> Result<(), ApiError> {
    {
        let p = &mut *policy;
        let PolicyUpdate {
            updates_enabled,
            safe_mode,
            max_updates_per_period,
            period_secs,
            update_timeout_secs,
            timezone,
            maintenance_windows,
            rollout_percent,
            failure_threshold_percent,
            pinned_version,
            fleetlock_slots,
            resume,
        } = update;
        set(&mut p.updates_enabled, updates_enabled);
        set(&mut p.safe_mode, safe_mode);
        set(&mut p.max_updates_per_period, max_updates_per_period);
        set(&mut p.period_secs, period_secs);
        set(&mut p.update_timeout_secs, update_timeout_secs);
        set(&mut p.timezone, timezone);
        set(&mut p.maintenance_windows, maintenance_windows);
        set(&mut p.rollout_percent, rollout_percent);
        set(&mut p.failure_threshold_percent, failure_threshold_percent);
        set(&mut p.pinned_version, pinned_version);
        set(&mut p.fleetlock_slots, fleetlock_slots);
        if resume {
            p.halted_version = None;
            p.halted_reason = None;
        }
    }
    crate::wire::rollout_policy(policy)
        .validate()
        .map_err(|e| ApiError::invalid(&e.field, format!("{}: {}", e.field, e.reason)))
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

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

impl GroupCore {
    fn new((g, channel): (db::groups::Group, Option<String>)) -> GroupCore {
        GroupCore {
            id: g.id,
            application_id: g.application_id,
            name: g.name,
            track: g.track,
            channel,
            policy: crate::wire::policy(g.policy, g.halted_version, g.halted_reason),
            created_at: g.created_at,
        }
    }
}

/// Load group `name` of `app` or 404.
pub(crate) async fn load_group(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    name: &str,
) -> Result<GroupCore, ApiError> {
    db::groups::with_channel_in(conn, app, Some(name))
        .await?
        .pop()
        .map(GroupCore::new)
        .ok_or_else(|| ApiError::not_found("group", name))
}

/// All groups of `app` (without summaries), by name.
pub(crate) async fn load_groups(
    conn: &mut sqlx::AnyConnection,
    app: &str,
) -> Result<Vec<GroupCore>, ApiError> {
    let groups = db::groups::with_channel_in(conn, app, None).await?;
    Ok(groups.into_iter().map(GroupCore::new).collect())
}

/// Add the instance summary (versions, statuses, rollout progress) to a group.
pub(crate) async fn summarize(
    conn: &mut sqlx::AnyConnection,
    core: GroupCore,
) -> Result<Group, ApiError> {
    let versions: Vec<VersionCount> = db::groups::version_counts_in(conn, core.id)
        .await?
        .into_iter()
        .map(VersionCount::from)
        .collect();
    let statuses = db::groups::status_counts_in(conn, core.id)
        .await?
        .into_iter()
        .map(StatusCount::from)
        .collect();
    let target_version = match &core.policy.pinned_version {
        Some(v) => Some(v.clone()),
        None => db::groups::channel_version_in(conn, core.id).await?,
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
        (rollout.in_progress, rollout.succeeded, rollout.failed) =
            db::groups::grant_outcomes_in(conn, core.id, target).await?;
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
    let row = db::channels::id_by_name(conn, app, name).await?;
    row.ok_or_else(|| {
        ApiError::invalid(
            "channel",
            format!("channel: application {app} has no channel {name:?}"),
        )
    })
}

async fn store_policy(tx: &mut Tx, group_id: i64, p: &Policy) -> Result<(), ApiError> {
    let clear_halt = p.halted_version.is_none();
    let rollout = crate::wire::rollout_policy(p);
    Ok(db::groups::write_policy(tx, group_id, &rollout, clear_halt).await?)
}

/// Check that a pinned version names a package of the application.
async fn check_pin(conn: &mut sqlx::AnyConnection, app: &str, p: &Policy) -> Result<(), ApiError> {
    if let Some(v) = &p.pinned_version {
        crate::request::package_id(conn, app, v, "pinned_version").await?;
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
    if let Some(other) = db::groups::track_owner_in(&mut tx, &app, &track).await? {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("track {track:?} is already used by group {other:?}"),
            field: Some("track".into()),
        });
    }
    let id = db::groups::insert_in(&mut tx, &app, &body.name, &track, channel).await?;
    if let Some(update) = body.policy {
        let mut policy = load_group(&mut tx, &app, &body.name).await?.policy;
        apply_update(update, &mut policy)?;
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
    db::groups::rename_in(&mut tx, current.id, &name, &track, channel).await?;
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
    db::groups::delete(&state.db, &caller.actor(), &app, &group).await?;
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
    apply_update(update, &mut policy)?;
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
    use crate::grant::RolloutPolicy;

    fn base() -> Policy {
        crate::wire::policy(
            RolloutPolicy::default(),
            Some("2.0.0".into()),
            Some("failures".into()),
        )
    }

    #[test]
    fn policy_json_is_one_flat_object_and_reads_back() {
        let json = serde_json::to_value(base()).unwrap();
        assert_eq!(json["rollout_percent"], 100);
        assert_eq!(json["halted_version"], "2.0.0");
        assert!(json.get("rollout").is_none(), "{json}");
        let back: Policy = serde_json::from_value(json).unwrap();
        assert_eq!(back, base());
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
            let err = apply_update(update, &mut p).unwrap_err();
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
        apply_update(update, &mut p).unwrap();
        assert_eq!(p.max_updates_per_period, 5);
        assert_eq!(p.timezone, "Europe/Berlin");
        assert_eq!(p.rollout_percent, 25);
        assert_eq!(p.maintenance_windows.len(), 1);
        assert_eq!(p.pinned_version.as_deref(), Some("3975.2.0"));
        assert_eq!(p.halted_version, None);
        assert!(p.updates_enabled, "untouched fields stay");

        let unpin: PolicyUpdate = serde_json::from_str(r#"{"pinned_version": null}"#).unwrap();
        apply_update(unpin, &mut p).unwrap();
        assert_eq!(p.pinned_version, None);
        let changes = describe_changes(&base(), &p);
        assert!(
            changes.iter().any(|c| c.starts_with("timezone:")),
            "{changes:?}"
        );
    }
}
