//! Who is looking at the dashboard: the token from the login cookie, checked like the API's.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

use super::html::error_page;
use crate::auth::{Caller, Role, authorize};
use crate::state::AppState;

/// A logged-in dashboard user; without a valid cookie the browser is sent to `/login`.
pub struct DashUser(pub Caller);

impl FromRequestParts<AppState> for DashUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match authorize(parts, state, Role::Viewer).await {
            Ok(c) => Ok(DashUser(c)),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                Err(Redirect::to("/login").into_response())
            }
            Err(e) => Err(error_page(None, e.status, &e.message)),
        }
    }
}
