//! The error every REST handler, the auth extractors and the dashboard return: an HTTP status,
//! a message for humans and the request field it concerns, sent as
//! `{"error": "...", "field": "..."}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::db::DbError;

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

pub use keelson_api_types::ErrorBody;

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
        let message = err.to_string();
        match err {
            DbError::NotFound { what, key } => ApiError::not_found(what, &key),
            DbError::Conflict { what, key } => ApiError::conflict(what, &key),
            DbError::Invalid {
                field,
                value,
                reason,
            } => ApiError::invalid(field, format!("invalid {field} {value:?}: {reason}")),
            DbError::InUse { .. } => ApiError::new(StatusCode::CONFLICT, message),
            DbError::UnknownPackage { field, .. } | DbError::DuplicateFloor { field, .. } => {
                ApiError::invalid(&field, message)
            }
            DbError::UnknownChannel { .. } => ApiError::invalid("channel", message),
            DbError::Policy(e) => ApiError::invalid(&e.field, message),
            DbError::TrackTaken { .. } => ApiError {
                status: StatusCode::CONFLICT,
                message,
                field: Some("track".into()),
            },
            other => ApiError::internal("accessing the database", other),
        }
    }
}
