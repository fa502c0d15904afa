//! Server-rendered dashboard (placeholder: owned and replaced by ENGINEER SERVER-API).

use axum::Router;

use crate::state::AppState;

/// Dashboard routes (empty until SERVER-API fills it).
pub fn router() -> Router<AppState> {
    Router::new()
}
