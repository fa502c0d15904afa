//! Bearer tokens with two roles, stored hashed.
//!
//! A token is `kt_` plus 64 hex digits of randomness (two v4 UUIDs: 244 random bits from the
//! OS generator). Only its SHA-256 is stored: tokens are high-entropy, so a plain hash is
//! enough (no salt or slow KDF needed) and lets us find the row by an indexed lookup.
//! The REST API reads `Authorization: Bearer ...`; the dashboard reads the same token from an
//! HttpOnly cookie set by its login form, so both apply the same roles. Node-facing endpoints
//! (Omaha, FleetLock, payloads, metrics) never ask for a token.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, now_unix, tokens};
use crate::error::ApiError;
use crate::state::AppState;

/// Name of the dashboard cookie that carries the token.
pub const COOKIE_NAME: &str = "keelson_token";

pub use keelson_api_types::{Caller, NewToken, Role};

/// Errors of token management.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Reading or writing the tokens table failed.
    #[error("tokens table: {0}")]
    Db(#[from] DbError),
    /// A token row holds a role this version does not know.
    #[error("token {id} has unknown role {role:?} in the database")]
    BadRole {
        /// The token's ID.
        id: String,
        /// The stored role.
        role: String,
    },
}

/// SHA-256 (hex) of a token, the only form it is stored in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Create a token with `role` and store its hash (not logged: the CLI and test harnesses).
pub async fn create_token(db: &Db, role: Role, description: &str) -> Result<NewToken, AuthError> {
    store_token(db, role, description, None).await
}

/// Create a token with `role` and store its hash, logging the change as done by `actor` in the
/// same transaction (`POST /api/v1/tokens`).
pub async fn create_token_by(
    db: &Db,
    actor: &str,
    role: Role,
    description: &str,
) -> Result<NewToken, AuthError> {
    store_token(db, role, description, Some(actor)).await
}

async fn store_token(
    db: &Db,
    role: Role,
    description: &str,
    actor: Option<&str>,
) -> Result<NewToken, AuthError> {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    let token = format!("kt_{a}{b}");
    // The ID is derived from the hash, so it reveals nothing about the secret.
    let hash = hash_token(&token);
    let id = hash[..12].to_string();
    let row = tokens::NewTokenRow {
        id: &id,
        role: role.as_str(),
        hash: &hash,
        description,
    };
    tokens::create(db, &row, actor).await?;
    Ok(NewToken { id, role, token })
}

/// Find the caller a token belongs to, or `None` when no such token exists.
pub async fn lookup(db: &Db, token: &str) -> Result<Option<Caller>, AuthError> {
    let hash = hash_token(token);
    let row = tokens::find_by_hash(db, &hash).await?;
    let Some((id, role, last_used)) = row else {
        return Ok(None);
    };
    let role: Role = role.parse().map_err(|_| AuthError::BadRole {
        id: id.clone(),
        role,
    })?;
    let now = now_unix();
    // Record use at most once a minute: a write per request would serialize reads on SQLite.
    if last_used.is_none_or(|t| now - t >= 60) {
        tokens::touch(db, &id, now).await?;
    }
    Ok(Some(Caller { token_id: id, role }))
}

/// The token a request carries: the bearer header first, then the dashboard cookie.
pub fn request_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            return Some(token.trim().to_string());
        }
        return None;
    }
    cookie_value(parts, COOKIE_NAME)
}

/// The value of cookie `name`, if the request has it.
pub fn cookie_value(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Authenticate a request: 401 without a valid token, 403 when the role is below `need`.
pub async fn authorize(parts: &Parts, state: &AppState, need: Role) -> Result<Caller, ApiError> {
    let Some(token) = request_token(parts) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing token: send Authorization: Bearer <token>",
        ));
    };
    let caller = lookup(&state.db, &token)
        .await
        .map_err(|e| ApiError::internal("checking the token", e))?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown or revoked token"))?;
    if caller.role < need {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {} has role {}; this needs role {}",
                caller.token_id, caller.role, need
            ),
        ));
    }
    Ok(caller)
}

/// Extractor: any valid token (viewer or admin).
pub struct RequireViewer(pub Caller);

/// Extractor: an admin token.
pub struct RequireAdmin(pub Caller);

impl FromRequestParts<AppState> for RequireViewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Role::Viewer)
            .await
            .map(RequireViewer)
    }
}

impl FromRequestParts<AppState> for RequireAdmin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Role::Admin).await.map(RequireAdmin)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn token_comes_from_bearer_header_or_cookie() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[("authorization", "Bearer abc")], Some("abc")),
            (&[("authorization", "bearer  abc ")], Some("abc")),
            (&[("authorization", "Basic abc")], None),
            (&[("authorization", "Bearer ")], None),
            (&[("cookie", "a=1; keelson_token=xyz; b=2")], Some("xyz")),
            (&[("cookie", "keelson_token=")], None),
            (&[("cookie", "other=1")], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            assert_eq!(
                request_token(&parts(headers)).as_deref(),
                *want,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Admin > Role::Viewer);
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
        assert_eq!(hash_token("x").len(), 64);
        assert_ne!(hash_token("x"), hash_token("y"));
    }
}
