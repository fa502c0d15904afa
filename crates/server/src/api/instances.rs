//! Instances (nodes as seen through their Omaha checks), their history, and the activity log.

use axum::Json;
use axum::extract::{Path, Query, State};
use keelson_omaha::normalize_app_id;
use serde::{Deserialize, Serialize};

use crate::auth::RequireViewer;
use crate::error::ApiError;
use crate::state::AppState;

/// Instance status codes as stored (Nebraska's numbering, so its users read them the same).
pub const STATUSES: [(i64, &str); 8] = [
    (1, "undefined"),
    (2, "update-granted"),
    (3, "error"),
    (4, "complete"),
    (5, "installed"),
    (6, "downloaded"),
    (7, "downloading"),
    (8, "on-hold"),
];

/// Name of a stored status code.
pub fn status_name(code: i64) -> &'static str {
    STATUSES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// Stored code of a status name.
pub fn status_code(name: &str) -> Option<i64> {
    STATUSES.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
}

/// A node of one application.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    /// Numeric ID.
    pub id: i64,
    /// The node's machine ID.
    pub machine_id: String,
    /// The application.
    pub application_id: String,
    /// Name of the node's group, if it matched one.
    pub group: Option<String>,
    /// Version the node last reported.
    pub version: String,
    /// Status name.
    pub status: String,
    /// Address of the last check.
    pub ip: String,
    /// `MACHINE_ALIAS`.
    pub alias: String,
    /// OEM ID.
    pub oem: String,
    /// First version installed on the node.
    pub aleph_version: String,
    /// Unix seconds of the last check.
    pub last_check: i64,
    /// Unix seconds of the first check.
    pub created_at: i64,
}

/// One status change of an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusEntry {
    /// Status name.
    pub status: String,
    /// Version at the time.
    pub version: String,
    /// Details (e.g. the error code).
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One Omaha event reported by an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventEntry {
    /// Omaha event type.
    pub event_type: i64,
    /// Omaha event result.
    pub event_result: i64,
    /// Error code including flag bits, if any.
    pub error_code: Option<i64>,
    /// Version reported.
    pub version: String,
    /// `previousversion`.
    pub previous_version: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// An instance with its history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceDetail {
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// Status changes, newest first (at most 100).
    pub status_history: Vec<StatusEntry>,
    /// Events, newest first (at most 100).
    pub events: Vec<EventEntry>,
}

/// One page of instances.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstancePage {
    /// Instances matching the filters in total.
    pub total: i64,
    /// This page.
    pub instances: Vec<Instance>,
}

/// Filters of `GET /api/v1/instances`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFilter {
    /// Application ID.
    pub app: Option<String>,
    /// Group name (needs `app` when names repeat across applications).
    pub group: Option<String>,
    /// Exact version.
    pub version: Option<String>,
    /// Status name.
    pub status: Option<String>,
    /// Substring of the machine ID or alias.
    pub q: Option<String>,
    /// Page size (1-500, default 50).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

use crate::db::instances::ListRow as InstanceRow;

fn instance_from_row(r: InstanceRow) -> Instance {
    Instance {
        id: r.0,
        machine_id: r.1,
        application_id: r.2,
        group: r.3,
        version: r.4,
        status: status_name(r.5).to_string(),
        ip: r.6,
        alias: r.7,
        oem: r.8,
        aleph_version: r.9,
        last_check: r.10,
        created_at: r.11,
    }
}

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
        instances: rows.into_iter().map(instance_from_row).collect(),
    })
}

/// Load one instance with its history.
pub async fn load_instance(state: &AppState, id: i64) -> Result<InstanceDetail, ApiError> {
    let (row, history, events) = crate::db::instances::detail(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance", &id.to_string()))?;
    let instance = instance_from_row(row);
    Ok(InstanceDetail {
        instance,
        status_history: history
            .into_iter()
            .map(|(s, version, message, created_at)| StatusEntry {
                status: status_name(s).to_string(),
                version,
                message,
                created_at,
            })
            .collect(),
        events: events
            .into_iter()
            .map(
                |(event_type, event_result, error_code, version, previous_version, created_at)| {
                    EventEntry {
                        event_type,
                        event_result,
                        error_code,
                        version,
                        previous_version,
                        created_at,
                    }
                },
            )
            .collect(),
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

/// One activity-log entry (the stored row).
pub use crate::db::activity::Activity as ActivityEntry;

/// Filters of `GET /api/v1/activity`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityFilter {
    /// Only this application.
    pub app: Option<String>,
    /// Only entries with an ID below this (paging backwards).
    pub before: Option<i64>,
    /// Page size (1-500, default 50).
    pub limit: Option<i64>,
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
    Ok(crate::db::activity::list(&state.db, app.as_deref(), None, f.before, limit).await?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for (code, name) in STATUSES {
            assert_eq!(status_name(code), name);
            assert_eq!(status_code(name), Some(code));
        }
        assert_eq!(status_name(99), "unknown");
        assert_eq!(status_code("bogus"), None);
    }
}
