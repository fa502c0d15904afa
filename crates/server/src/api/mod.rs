//! JSON REST API under `/api/v1/` (the document is at `/api/openapi.json`, see
//! [`crate::openapi`]).
//!
//! Every handler checks the caller's role first ([`crate::auth`]), validates its input into a
//! typed value, then does all of its writes and the matching activity-log row in one
//! transaction, so a failed request changes nothing. Errors are `{"error": "...", "field": "..."}`
//! with the status code that says what went wrong ([`ApiError`]).

pub mod apps;
pub mod embedded;
pub mod groups;
pub mod instances;
// `src/openapi.rs` is declared here rather than in lib.rs (owned by SERVER-CORE) so the API
// and its document live and change together.
#[path = "../openapi.rs"]
pub mod openapi;
pub mod packages;
pub mod tokens;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{DbError, Tx, now_unix};
use crate::state::AppState;

/// Routes under `/api` (the REST API and its OpenAPI document).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/v1/whoami", get(apps::whoami))
        .route("/api/v1/apps", get(apps::list).post(apps::create))
        .route(
            "/api/v1/apps/{app}",
            get(apps::get_one).put(apps::update).delete(apps::delete),
        )
        .route(
            "/api/v1/apps/{app}/channels",
            get(apps::list_channels).post(apps::create_channel),
        )
        .route(
            "/api/v1/apps/{app}/channels/{channel}",
            get(apps::get_channel)
                .put(apps::update_channel)
                .delete(apps::delete_channel),
        )
        .route(
            "/api/v1/apps/{app}/packages",
            get(packages::list).post(packages::create_external),
        )
        .route(
            "/api/v1/apps/{app}/packages/{version}",
            get(packages::get_one).delete(packages::delete),
        )
        .route(
            "/api/v1/apps/{app}/packages/{version}/payload",
            axum::routing::put(packages::upload),
        )
        .route(
            "/api/v1/apps/{app}/groups",
            get(groups::list).post(groups::create),
        )
        .route(
            "/api/v1/apps/{app}/groups/{group}",
            get(groups::get_one)
                .put(groups::update)
                .delete(groups::delete),
        )
        .route(
            "/api/v1/apps/{app}/groups/{group}/policy",
            get(groups::get_policy).put(groups::put_policy),
        )
        .route("/api/v1/instances", get(instances::list))
        .route("/api/v1/instances/{id}", get(instances::get_one))
        .route("/api/v1/activity", get(instances::activity))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
}

/// An API failure: the HTTP status, a message for humans and the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub status: StatusCode,
    /// What went wrong, naming the object or value.
    pub message: String,
    /// The request field the error is about, as the API spells it.
    pub field: Option<String>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// The request field the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message` and no field.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 about one field of the request.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// 404 for `what` named `key`.
    pub fn not_found(what: &str, key: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} {key:?} not found"))
    }

    /// 409 because `what` named `key` already exists.
    pub fn conflict(what: &str, key: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("{what} {key:?} already exists"),
        )
    }

    /// 500 for a failure that is ours, not the caller's; the details go to the log.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error while {context}"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
                field: self.field,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"keelson\""),
            );
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> ApiError {
        match err {
            DbError::NotFound { what, key } => ApiError::not_found(what, &key),
            DbError::Conflict { what, key } => ApiError::conflict(what, &key),
            DbError::Invalid {
                field,
                value,
                reason,
            } => ApiError::invalid(field, format!("invalid {field} {value:?}: {reason}")),
            other => ApiError::internal("accessing the database", other),
        }
    }
}

/// Map a driver error from one of this module's own queries.
pub(crate) fn db_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |e| ApiError::internal(what, e)
}

/// Like [`db_err`], but a unique-key violation becomes 409 for `kind` `key`.
pub(crate) fn db_unique(
    what: &'static str,
    kind: &'static str,
    key: &str,
) -> impl FnOnce(sqlx::Error) -> ApiError {
    let key = key.to_string();
    move |e| {
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            ApiError::conflict(kind, &key)
        } else {
            ApiError::internal(what, e)
        }
    }
}

/// A JSON request body, read up to the configured limit, with errors in our JSON shape:
/// 413 when too large, 415 without a JSON content type, 400 for malformed JSON and 422 for
/// well-formed JSON with missing or wrongly typed fields.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request body must be JSON (Content-Type: application/json)",
            ));
        }
        let limit = state.config.json_body_limit;
        let bytes = read_limited(req, limit).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// How much of a refused body we still read and discard before answering. Closing a socket
/// with unread data makes Linux send RST, which can destroy the 413 before the client reads
/// it; draining a bounded amount lets ordinary clients see the error, while a huge body still
/// cannot make us read it all.
pub(crate) const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// Read and discard up to [`DRAIN_LIMIT`] bytes of what is left of `stream`.
pub(crate) async fn drain(mut stream: axum::body::BodyDataStream) {
    use futures_util::StreamExt;
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// Read a whole request body, refusing (413) more than `limit` bytes. Counted while streaming,
/// so a body without Content-Length cannot get past the limit either.
pub(crate) async fn read_limited(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = req.into_body().into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(stream).await;
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading request body: {e}"),
            )
        })?;
        if out.len() + chunk.len() > limit {
            drain(stream).await;
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Parse JSON, telling syntax errors (400) from shape errors (422), with line and column.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let field = field_from_serde_message(&e.to_string());
        ApiError {
            status,
            message: format!("invalid JSON body: {e}"),
            field,
        }
    })
}

/// serde names the field in its message as "missing field `x`" / "unknown field `x`".
fn field_from_serde_message(msg: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(start) = msg.find(marker) {
            let rest = &msg[start + marker.len()..];
            return rest.find('`').map(|end| rest[..end].to_string());
        }
    }
    None
}

/// Check a short identifier (names, tracks): 1-128 chars of letters, digits, `-_.`.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 128 {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to 128 characters long"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} {value:?} contains {c:?}; use letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

/// Check a version string: dot-separated parts starting with a digit, like `3975.2.0`.
pub(crate) fn check_version(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} {value:?} is not a version like 3975.2.0"),
        ))
    }
}

/// Severity of an activity entry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Severity {
    Info,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
        }
    }
}

/// One activity-log row, written in the same transaction as the change it describes.
pub(crate) struct Activity<'a> {
    pub severity: Severity,
    pub kind: &'a str,
    pub actor: &'a str,
    pub application_id: Option<&'a str>,
    pub group_id: Option<i64>,
    pub version: Option<&'a str>,
    pub message: String,
}

/// Insert an activity row inside `tx`.
pub(crate) async fn log_activity(tx: &mut Tx, a: Activity<'_>) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO activity (created_at, severity, kind, actor, application_id, group_id, version, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now_unix())
    .bind(a.severity.as_str())
    .bind(a.kind)
    .bind(a.actor)
    .bind(a.application_id.map(str::to_string))
    .bind(a.group_id)
    .bind(a.version.map(str::to_string))
    .bind(a.message)
    .execute(&mut **tx)
    .await
    .map_err(db_err("writing the activity log"))?;
    Ok(())
}

/// Commit `tx`, mapping the error.
pub(crate) async fn commit(tx: Tx) -> Result<(), ApiError> {
    tx.commit()
        .await
        .map_err(db_err("committing the transaction"))
}

/// Begin a transaction on the state's database.
pub(crate) async fn begin(state: &AppState) -> Result<Tx, ApiError> {
    state.db.begin().await.map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_errors_are_classified_and_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            name: String,
        }
        let cases: &[(&str, StatusCode, Option<&str>)] = &[
            ("{", StatusCode::BAD_REQUEST, None),
            ("{}", StatusCode::UNPROCESSABLE_ENTITY, Some("name")),
            (r#"{"name": 3}"#, StatusCode::UNPROCESSABLE_ENTITY, None),
            (
                r#"{"name": "a", "nmae": "b"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("nmae"),
            ),
        ];
        for (input, status, field) in cases {
            let err = parse_json::<T>(input.as_bytes()).unwrap_err();
            assert_eq!(err.status, *status, "{input}");
            assert_eq!(err.field.as_deref(), *field, "{input}");
        }
        assert!(parse_json::<T>(br#"{"name":"x"}"#).is_ok());
    }

    #[test]
    fn names_and_versions_are_checked() {
        for ok in ["stable", "lts-2024", "a.b_c"] {
            assert!(check_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "slash/", "<b>", &"x".repeat(129)] {
            assert_eq!(
                check_name("name", bad).unwrap_err().field.as_deref(),
                Some("name")
            );
        }
        for ok in ["3975.2.0", "1.0.0-rc1", "4081.2.0+build5"] {
            assert!(check_version("version", ok).is_ok(), "{ok}");
        }
        for bad in ["", "v1", "1..2", "1 2", "1/2"] {
            assert!(check_version("version", bad).is_err(), "{bad}");
        }
    }
}
