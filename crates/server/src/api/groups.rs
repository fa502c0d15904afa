//! Groups (track + channel + rollout policy) and their policies: input checks, then one `db::`
//! call each.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::auth::{RequireAdmin, RequireViewer};
use crate::db;
use crate::error::ApiError;
use crate::request::{ApiJson, check_name};
use crate::state::AppState;

pub use keelson_api_types::{
    Group, GroupUpdate, MaintenanceWindow, NewGroup, Policy, PolicyUpdate, RolloutProgress,
    StatusCount, VersionCount,
};

/// `GET /api/v1/apps/{app}/groups`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Vec<Group>>, ApiError> {
    let views = db::groups::views(&state.db, &app).await?;
    Ok(Json(views.into_iter().map(Group::from).collect()))
}

/// `GET /api/v1/apps/{app}/groups/{group}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: RequireViewer,
    Path((app, group)): Path<(String, String)>,
) -> Result<Json<Group>, ApiError> {
    Ok(Json(
        db::groups::view(&state.db, &app, &group).await?.into(),
    ))
}

/// `POST /api/v1/apps/{app}/groups`.
pub async fn create(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<NewGroup>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    check_name("name", &body.name)?;
    check_name("track", body.track.as_deref().unwrap_or(&body.name))?;
    let group = db::groups::create(&state.db, &caller.actor(), &app, &body).await?;
    Ok((StatusCode::CREATED, Json(group.into())))
}

/// `PUT /api/v1/apps/{app}/groups/{group}`: rename, change track or channel.
pub async fn update(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, group)): Path<(String, String)>,
    ApiJson(body): ApiJson<GroupUpdate>,
) -> Result<Json<Group>, ApiError> {
    if let Some(n) = &body.name {
        check_name("name", n)?;
    }
    if let Some(t) = &body.track {
        check_name("track", t)?;
    }
    let out = db::groups::update(&state.db, &caller.actor(), &app, &group, &body).await?;
    Ok(Json(out.into()))
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
    Ok(Json(
        db::groups::find(&state.db, &app, &group).await?.policy,
    ))
}

/// `PUT /api/v1/apps/{app}/groups/{group}/policy`.
pub async fn put_policy(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, group)): Path<(String, String)>,
    ApiJson(body): ApiJson<PolicyUpdate>,
) -> Result<Json<Policy>, ApiError> {
    let policy = db::groups::change_policy(&state.db, &caller.actor(), &app, &group, body).await?;
    Ok(Json(policy))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::grant::PolicyRules;

    fn base() -> Policy {
        Policy {
            halted_version: Some("2.0.0".into()),
            halted_reason: Some("failures".into()),
            ..Policy::default()
        }
    }

    /// What `PUT .../policy` answers for `update` applied to `base()` before anything is
    /// stored: `db::groups::change_policy`'s check, mapped to the API's error.
    fn check(update: PolicyUpdate) -> Result<Policy, ApiError> {
        let mut p = base();
        update.apply_to(&mut p);
        p.rollout
            .validate()
            .map_err(|e| ApiError::from(db::DbError::from(e)))?;
        Ok(p)
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
            let err = check(update).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(err.field.as_deref(), Some(*field), "{json}");
            assert!(err.message.starts_with(&format!("{field}: ")), "{err}");
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
        let p = check(update).unwrap();
        let r = &p.rollout;
        assert_eq!(r.max_updates_per_period, 5);
        assert_eq!(r.timezone, "Europe/Berlin");
        assert_eq!(r.rollout_percent, 25);
        assert_eq!(r.maintenance_windows.len(), 1);
        assert_eq!(r.pinned_version.as_deref(), Some("3975.2.0"));
        assert_eq!(p.halted_version, None);
        assert!(r.updates_enabled, "untouched fields stay");
    }
}
