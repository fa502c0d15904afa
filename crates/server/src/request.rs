//! Helpers every REST handler (and the dashboard) shares: the JSON body extractor with its
//! limits and the input checks. The database steps are `crate::db`'s, one call per operation.

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::body::{self, BodyError};
use crate::error::ApiError;
use crate::state::AppState;

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

/// Read a whole request body, refusing (413) more than `limit` bytes: at once when the
/// declared `Content-Length` says so, else while streaming ([`crate::body::read_limited`]).
pub(crate) async fn read_limited(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = body::declared_length(req.headers());
    if declared.is_some_and(|n| n > limit as u64) {
        body::drain(req.into_body().into_data_stream()).await;
        return Err(too_large());
    }
    body::read_limited(req.into_body(), limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => too_large(),
            BodyError::Read(msg) => ApiError::new(StatusCode::BAD_REQUEST, msg),
        })
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

/// Check a required display text: non-empty, at most `max` bytes, no control characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    check_text_opt(field, value, max)
}

/// Like [`check_text`] but empty is allowed.
pub(crate) fn check_text_opt(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} is longer than {max} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
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

    #[test]
    fn texts_are_checked() {
        assert!(check_text("name", "Keelson OS", 200).is_ok());
        assert_eq!(
            check_text("name", " ", 200).map_err(|e| e.field),
            Err(Some("name".into()))
        );
        assert!(check_text("name", "a\u{7}b", 200).is_err());
        assert!(check_text_opt("description", "", 10).is_ok());
        assert!(check_text_opt("description", "12345678901", 10).is_err());
    }
}
