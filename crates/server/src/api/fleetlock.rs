//! FleetLock holders over the API: who holds a reboot slot of which group since when
//! (viewers), and releasing a holder that is gone for good (admins).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::auth::{RequireAdmin, RequireViewer};
use crate::error::ApiError;
use crate::state::AppState;

pub use keelson_api_types::FleetLockHolder;

/// Query of `GET /api/v1/fleetlock/holders`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldersQuery {
    /// Only this lock group (a group's track).
    pub group: Option<String>,
}

/// `GET /api/v1/fleetlock/holders[?group=G]`: holders by group, oldest first.
pub async fn list(
    State(state): State<AppState>,
    _: RequireViewer,
    Query(q): Query<HoldersQuery>,
) -> Result<Json<Vec<FleetLockHolder>>, ApiError> {
    let holders = crate::db::fleetlock::holders_with_time(&state.db, q.group.as_deref()).await?;
    Ok(Json(
        holders.into_iter().map(FleetLockHolder::from).collect(),
    ))
}

/// `DELETE /api/v1/fleetlock/{group}/holders/{id}`: release a holder's slot (admins only).
pub async fn release(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((group, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::db::fleetlock::release_by_admin(&state.db, &caller.actor(), &group, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
