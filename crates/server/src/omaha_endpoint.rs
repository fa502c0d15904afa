//! `POST /v1/update/`: the Omaha endpoint update_engine talks to (no token: nodes are not
//! admins). All `<app>`s of one request are recorded in one transaction
//! ([`crate::db::rollout::handle_reports`]), so a failure leaves nothing half-recorded.
//!
//! Answers: unknown application → that app gets `status="error-unknownApplication"` (as
//! Nebraska does); policy holds → `noupdate`; malformed XML or a missing `machineid`/`version`
//! → 400 with the parser's message and nothing written; a body over the limit → 413.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keelson_omaha as omaha;

use crate::body::{BodyError, read_limited};
use crate::db::packages::Package;
use crate::db::rollout::{self, CheckAnswer, NodeEvent, NodeReport, ReportOutcome};
use crate::state::AppState;

/// The node-facing Omaha routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/update", post(handle))
        .route("/v1/update/", post(handle))
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

/// The base URL nodes reach us at: the configured one, else from the `Host` header.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn offer(pkg: &Package, base: &str) -> Result<omaha::UpdateOffer, String> {
    let sha256: [u8; 32] = hex::decode(&pkg.sha256_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format!("package {} has a corrupt sha256 in the database", pkg.id))?;
    let sha1: Option<[u8; 20]> = hex::decode(&pkg.sha1_hex)
        .ok()
        .and_then(|v| v.try_into().ok());
    let url = match &pkg.url {
        Some(u) => u.clone(),
        None => format!("{base}/packages/{}/", pkg.id),
    };
    Ok(omaha::UpdateOffer {
        version: pkg.version.clone(),
        urls: vec![url],
        package_name: pkg.filename.clone(),
        size: u64::try_from(pkg.size).unwrap_or(0),
        sha256,
        sha1,
        extra_packages: extension_packages(pkg),
    })
}

/// The package's OS-bound extensions as extra `<package name="{name}.raw" required="false">`
/// entries, in name order (the order the database layer sorts them in): downloaded from the
/// payload's codebase, checked by the agent against `hash_sha256` (hex).
fn extension_packages(pkg: &Package) -> Vec<omaha::Package> {
    use base64::Engine as _;
    pkg.extensions
        .iter()
        .map(|e| omaha::Package {
            name: e.file_name(),
            hash_sha1: hex::decode(&e.sha1_hex)
                .ok()
                .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw)),
            hash_sha256_hex: Some(e.sha256_hex.clone()),
            size: u64::try_from(e.size).unwrap_or(0),
            required: false,
        })
        .collect()
}

fn node_report(
    app: &omaha::RequestApp,
    ip: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> NodeReport {
    NodeReport {
        application_id: app.app_id.clone(),
        machine_id: app.machine_id.clone().unwrap_or_default(),
        version: app.version.clone().unwrap_or_default(),
        // update_engine's default GROUP.
        track: app
            .track
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "stable".to_string()),
        ip: ip.to_string(),
        alias: app.machine_alias.clone().unwrap_or_default(),
        oem: app.oem.clone().unwrap_or_default(),
        aleph_version: app.aleph_version.clone().unwrap_or_default(),
        events: app
            .events
            .iter()
            .map(|e| NodeEvent {
                event_type: i64::from(e.event_type.code()),
                event_result: i64::from(e.event_result.code()),
                error_code: e.error_code.map(|c| i64::from(c.0)),
                previous_version: e.previous_version.clone().unwrap_or_default(),
                reason: e.reason.clone(),
            })
            .collect(),
        update_check: app.update_check.is_some(),
        now,
    }
}

/// The `<app>` answer for what the database made of it.
fn answer(
    app: &omaha::RequestApp,
    outcome: ReportOutcome,
    base: &str,
) -> Result<omaha::ResponseApp, String> {
    let ping = app.ping.is_some();
    let events = app.events.len();
    Ok(match outcome {
        ReportOutcome::UnknownApplication => omaha::ResponseApp {
            app_id: app.app_id.clone(),
            status: omaha::AppStatus::UnknownApplication,
            ping: None,
            update_check: None,
            events: Vec::new(),
        },
        ReportOutcome::Recorded { check: None, .. } => {
            let mut a = omaha::ResponseApp::events_only(&app.app_id, events);
            a.ping = ping.then(|| "ok".to_string());
            a
        }
        ReportOutcome::Recorded {
            check: Some(CheckAnswer::NoUpdate { reason }),
            ..
        } => {
            tracing::debug!(%reason, "noupdate");
            omaha::ResponseApp::no_update(&app.app_id, ping, events)
        }
        ReportOutcome::Recorded {
            check: Some(CheckAnswer::Update { package, reason }),
            ..
        } => {
            let o = offer(&package, base)?;
            tracing::info!(version = %package.version, ?reason, "update granted");
            omaha::ResponseApp::update(&app.app_id, ping, events, &o)
        }
    })
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let base = base_url(&state, req.headers());
    let limit = state.config.omaha_body_limit;
    let body = match read_limited(req.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { seen }) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Omaha request body is larger than the limit of {limit} bytes (got at least {seen})"
                ),
            );
        }
        Err(BodyError::Read(msg)) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let limits = omaha::Limits {
        max_body_bytes: limit,
        ..omaha::Limits::default()
    };
    let request = match omaha::Request::parse(&body, &limits) {
        Ok(r) => r,
        Err(e @ omaha::Error::BodyTooLarge { .. }) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("malformed Omaha request: {e}"),
            );
        }
    };
    // Validate every app before writing anything.
    for (i, app) in request.apps.iter().enumerate() {
        for (attr, v) in [("machineid", &app.machine_id), ("version", &app.version)] {
            if v.as_deref().is_none_or(str::is_empty) {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "malformed Omaha request: request/app[{i}]: required attribute {attr} is missing or empty"
                    ),
                );
            }
        }
    }
    let now = chrono::Utc::now();
    let reports: Vec<NodeReport> = request
        .apps
        .iter()
        .map(|app| node_report(app, &ip, now))
        .collect();
    // Every <app> of the request in one transaction: a failure leaves nothing half-recorded.
    let outcomes = match rollout::handle_reports(&state.db, &reports).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "handling Omaha request");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            );
        }
    };
    let mut apps = Vec::with_capacity(request.apps.len());
    for (app, outcome) in request.apps.iter().zip(outcomes) {
        // Cannot fail for what `handle_reports` returns (it refuses a package without a usable
        // SHA-256 before recording the grant); kept as an error, never a panic.
        match answer(app, outcome, &base) {
            Ok(a) => apps.push(a),
            Err(e) => {
                tracing::error!(error = %e, "building the update offer");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {e}"),
                );
            }
        }
    }
    let xml = omaha::Response::new(apps).to_xml();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}
