//! JSON REST API (placeholder: owned and replaced by ENGINEER SERVER-API).

use axum::Router;

use crate::state::AppState;

/// Routes under `/api` (empty until SERVER-API fills it).
pub fn router() -> Router<AppState> {
    Router::new()
}
