//! FleetLock (Zincati's reboot-coordination protocol, docs/fleetlock.md):
//! `POST /v1/pre-reboot` (RecursiveLock) and `POST /v1/steady-state` (UnlockIfHeld).
//! Nodes need no token. The lock group is the Keelson group with that track; its
//! `fleetlock_slots` says how many nodes may hold a slot at once.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use crate::body::{BodyError, read_limited};
use crate::db::fleetlock::{self, LockOutcome, UnlockOutcome};
use crate::state::AppState;

/// The FleetLock routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pre-reboot", post(pre_reboot))
        .route("/v1/steady-state", post(steady_state))
}

/// The request body the protocol defines.
#[derive(Debug, Deserialize)]
pub struct FleetLockRequest {
    /// The client's parameters.
    pub client_params: ClientParams,
}

/// `client_params`.
#[derive(Debug, Deserialize)]
pub struct ClientParams {
    /// Node id (case-sensitive, non-empty).
    pub id: String,
    /// Lock group, `^[a-zA-Z0-9.-]+$`.
    pub group: String,
}

/// Error body: `kind` has small cardinality (clients use it as a metric label).
#[derive(Debug, Serialize)]
pub struct FleetLockError {
    /// Machine-readable kind.
    pub kind: &'static str,
    /// Human-readable detail.
    pub value: String,
}

fn error(status: StatusCode, kind: &'static str, value: impl Into<String>) -> Response {
    (
        status,
        axum::Json(FleetLockError {
            kind,
            value: value.into(),
        }),
    )
        .into_response()
}

/// Check the header and body; the error is the response to send.
async fn client_params(
    state: &AppState,
    headers: &HeaderMap,
    req: Request,
) -> Result<ClientParams, Response> {
    let header_ok = headers
        .get("fleet-lock-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "true");
    if !header_ok {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "missing_header",
            "header fleet-lock-protocol: true is required",
        ));
    }
    let limit = state.config.json_body_limit;
    let body = match read_limited(req.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { .. }) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("body is larger than {limit} bytes"),
            ));
        }
        Err(BodyError::Read(msg)) => {
            return Err(error(StatusCode::BAD_REQUEST, "decode_error", msg));
        }
    };
    let parsed: FleetLockRequest = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "decode_error",
            format!("body is not {{\"client_params\": {{\"id\": ..., \"group\": ...}}}}: {e}"),
        )
    })?;
    let p = parsed.client_params;
    if p.id.is_empty() || p.id.len() > 256 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_client_identity",
            "client_params.id must be 1-256 characters",
        ));
    }
    if p.group.is_empty()
        || p.group.len() > 100
        || !p
            .group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_client_identity",
            format!(
                "client_params.group {:?} must match ^[a-zA-Z0-9.-]+$",
                p.group
            ),
        ));
    }
    Ok(p)
}

fn internal(e: crate::db::DbError) -> Response {
    tracing::error!(error = %e, "fleetlock");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        e.to_string(),
    )
}

fn unknown_group(group: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "unknown_group",
        format!("no group has track {group:?}"),
    )
}

async fn pre_reboot(State(state): State<AppState>, headers: HeaderMap, req: Request) -> Response {
    let p = match client_params(&state, &headers, req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match fleetlock::lock(&state.db, &p.group, &p.id).await {
        Ok(o @ LockOutcome::Held { .. }) => (StatusCode::OK, axum::Json(o)).into_response(),
        Ok(LockOutcome::Full { holders, slots }) => error(
            StatusCode::LOCKED,
            "lock_held",
            format!(
                "all {slots} reboot slot(s) of group {} are held ({holders} holders)",
                p.group
            ),
        ),
        Ok(LockOutcome::UnknownGroup) => unknown_group(&p.group),
        Err(e) => internal(e),
    }
}

async fn steady_state(State(state): State<AppState>, headers: HeaderMap, req: Request) -> Response {
    let p = match client_params(&state, &headers, req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match fleetlock::unlock(&state.db, &p.group, &p.id).await {
        Ok(o @ UnlockOutcome::Released { .. }) => (StatusCode::OK, axum::Json(o)).into_response(),
        Ok(UnlockOutcome::UnknownGroup) => unknown_group(&p.group),
        Err(e) => internal(e),
    }
}
