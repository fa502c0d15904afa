//! keelson-server: Omaha update server with rollout control, REST API, dashboard and FleetLock.
//!
//! Layout: [`db`] owns storage (one SQL dialect for SQLite and PostgreSQL), [`grant`] the
//! rollout decision, [`omaha_endpoint`] the node-facing Omaha protocol, [`packages`] payload
//! storage and range serving, [`fleetlock`] reboot coordination, [`metrics`] Prometheus text;
//! [`api`] and [`dashboard`] are the admin-facing parts, sharing [`error`] (the error type),
//! [`request`] (JSON bodies, input checks) and [`auth`], and calling one [`db`] function per
//! operation (no SQL or transaction of their own); [`wire`] turns db rows into the REST types;
//! [`openapi`] documents the REST API. Every endpoint reads its body through `body` (limit and
//! bounded drain). With the `test-support` feature, `embedded` runs a whole server on a thread.

pub mod api;
pub mod auth;
mod body;
pub mod dashboard;
pub mod db;
#[cfg(feature = "test-support")]
pub mod embedded;
pub mod error;
pub mod fleetlock;
pub mod grant;
pub mod metrics;
pub mod omaha_endpoint;
pub mod openapi;
pub mod packages;
pub mod request;
pub mod state;
pub mod wire;

use axum::Router;
use axum::routing::get;

pub use state::{AppState, ServerConfig};

/// The whole HTTP surface: node endpoints (Omaha, FleetLock, payloads), metrics, the REST API
/// and the dashboard.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(omaha_endpoint::router())
        .merge(fleetlock::router())
        .merge(packages::router())
        .merge(metrics::router())
        .merge(api::router())
        .merge(dashboard::router())
        .with_state(state)
}
