//! Instances (nodes as seen through their Omaha checks), their history, and the activity log.

use axum::Json;
use axum::extract::{Path, Query, State};
use keelson_omaha::normalize_app_id;

use crate::auth::{RequireAdmin, RequireViewer};
use crate::error::ApiError;
use crate::state::AppState;

pub use keelson_api_types::{
    ActivityEntry, ActivityFilter, EventEntry, Instance, InstanceDetail, InstanceFilter,
    InstancePage, STATUSES, StatusEntry, status_code, status_name,
};

/// Query instances matching `f`: shared by the API and the dashboard.
pub async fn query_instances(
    state: &AppState,
    f: &InstanceFilter,
) -> Result<InstancePage, ApiError> {
    let limit = f.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let offset = f.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset", "offset must not be negative"));
    }
    let status = match &f.status {
        Some(s) => Some(status_code(s).ok_or_else(|| {
            ApiError::invalid(
                "status",
                format!(
                    "unknown status {s:?}; one of {}",
                    STATUSES
                        .iter()
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?),
        None => None,
    };
    let search = crate::db::instances::Search {
        app: f.app.as_deref().map(normalize_app_id),
        group: f.group.clone(),
        version: f.version.clone(),
        status,
        q: f.q.clone(),
        limit,
        offset,
    };
    let (total, rows) = crate::db::instances::search(&state.db, &search).await?;
    Ok(InstancePage {
        total,
        instances: rows.into_iter().map(Instance::from).collect(),
    })
}

/// Load one instance with its history.
pub async fn load_instance(state: &AppState, id: i64) -> Result<InstanceDetail, ApiError> {
    let d = crate::db::instances::detail(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance", &id.to_string()))?;
    Ok(InstanceDetail {
        instance: d.instance.into(),
        status_history: d.history.into_iter().map(StatusEntry::from).collect(),
        events: d.events.into_iter().map(EventEntry::from).collect(),
        rolled_back: d.rolled_back,
    })
}

/// `GET /api/v1/instances?app=&group=&version=&status=&q=&limit=&offset=`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireViewer,
    filter: Result<Query<InstanceFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InstancePage>, ApiError> {
    let Query(filter) = filter.map_err(query_error)?;
    query_instances(&state, &filter).await.map(Json)
}

/// Turn axum's query rejection into our error shape.
pub(crate) fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        format!("invalid query string: {}", e.body_text()),
    )
}

/// `GET /api/v1/instances/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(id): Path<String>,
) -> Result<Json<InstanceDetail>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("instance id {id:?} is not a number")))?;
    load_instance(&state, id).await.map(Json)
}

/// `DELETE /api/v1/instances/{id}/rollbacks/{version}`: the node may be offered `version`
/// again (it rolled back from it, so the server has held it back since).
pub async fn clear_rollback(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((id, version)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("instance id {id:?} is not a number")))?;
    crate::db::instances::clear_rollback(&state.db, &caller.actor(), id, &version).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Query the activity log, newest first: shared by the API and the dashboard.
pub async fn query_activity(
    state: &AppState,
    f: &ActivityFilter,
) -> Result<Vec<ActivityEntry>, ApiError> {
    let limit = f.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let app = f.app.as_deref().map(normalize_app_id);
    let rows = crate::db::activity::list(&state.db, app.as_deref(), None, f.before, limit).await?;
    Ok(rows.into_iter().map(ActivityEntry::from).collect())
}

/// `GET /api/v1/activity?app=&before=&limit=`.
pub async fn activity(
    State(state): State<AppState>,
    _: RequireViewer,
    filter: Result<Query<ActivityFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ActivityEntry>>, ApiError> {
    let Query(filter) = filter.map_err(query_error)?;
    query_activity(&state, &filter).await.map(Json)
}
