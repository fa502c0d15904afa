//! API tokens over the API (admins only): list, create (the secret is shown once), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::auth::{NewToken, RequireAdmin, Role, create_token_by};
use crate::error::ApiError;
use crate::request::{ApiJson, check_text_opt};
use crate::state::AppState;

pub use keelson_api_types::{NewTokenRequest, TokenInfo};

/// `GET /api/v1/tokens`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireAdmin,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let rows = crate::db::tokens::list(&state.db).await?;
    Ok(Json(rows.into_iter().map(TokenInfo::from).collect()))
}

/// `POST /api/v1/tokens`: the response is the only time the secret is shown.
pub async fn create(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    ApiJson(body): ApiJson<NewTokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| ApiError::invalid("role", e))?;
    check_text_opt("description", &body.description, 500)?;
    let new = create_token_by(&state.db, &caller.actor(), role, &body.description)
        .await
        .map_err(|e| ApiError::internal("creating a token", e))?;
    Ok((StatusCode::CREATED, Json(new)))
}

/// `DELETE /api/v1/tokens/{id}`: the token stops working at once.
pub async fn revoke(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::db::tokens::revoke(&state.db, &caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
