//! API tokens over the API (admins only): list, create (the secret is shown once), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::{NewToken, RequireAdmin, Role, create_token_on};
use crate::error::{ApiError, db_err};
use crate::request::{Activity, ApiJson, Severity, begin, check_text_opt, commit, log_activity};
use crate::state::AppState;

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    /// The token's ID.
    pub id: String,
    /// `admin` or `viewer`.
    pub role: String,
    /// Who or what it is for.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last use (recorded at most once a minute).
    pub last_used: Option<i64>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// `admin` or `viewer`.
    pub role: String,
    /// Who or what it is for.
    #[serde(default)]
    pub description: String,
}

/// `GET /api/v1/tokens`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireAdmin,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, role, description, created_at, last_used FROM tokens ORDER BY created_at, id",
    )
    .fetch_all(state.db.pool())
    .await
    .map_err(db_err("listing tokens"))?;
    Ok(Json(
        rows.into_iter()
            .map(|(id, role, description, created_at, last_used)| TokenInfo {
                id,
                role,
                description,
                created_at,
                last_used,
            })
            .collect(),
    ))
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
    let mut tx = begin(&state).await?;
    let new = create_token_on(&mut tx, role, &body.description)
        .await
        .map_err(|e| ApiError::internal("creating a token", e))?;
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Warning,
            kind: "token.created",
            actor: &caller.actor(),
            application_id: None,
            group_id: None,
            version: None,
            message: format!("{role} token {} created ({})", new.id, body.description),
        },
    )
    .await?;
    commit(tx).await?;
    Ok((StatusCode::CREATED, Json(new)))
}

/// `DELETE /api/v1/tokens/{id}`: the token stops working at once.
pub async fn revoke(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = begin(&state).await?;
    let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("revoking a token"))?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("token", &id));
    }
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Warning,
            kind: "token.revoked",
            actor: &caller.actor(),
            application_id: None,
            group_id: None,
            version: None,
            message: format!("token {id} revoked"),
        },
    )
    .await?;
    commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}
