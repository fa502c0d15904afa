//! keelson-server: Omaha update server with rollout control, REST API, dashboard and FleetLock.
//!
//! Layout: [`db`] owns storage (one SQL dialect for SQLite and PostgreSQL), [`grant`] the
//! rollout decision, [`omaha_endpoint`] the node-facing Omaha protocol, [`packages`] payload
//! storage and range serving, [`fleetlock`] reboot coordination, [`metrics`] Prometheus text;
//! [`api`] and [`dashboard`] are the admin-facing parts.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod db;
pub mod fleetlock;
pub mod grant;
pub mod metrics;
pub mod omaha_endpoint;
pub mod packages;
pub mod state;

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
