//! Package payloads: `GET`/`HEAD /packages/{id}/{filename}` serves a stored payload, or the
//! package's OS-bound extension when `filename` is `{name}.raw` (`crate::db::extensions`), with HTTP
//! range requests (`Range: bytes=a-b`, `a-`, `-n` → 206 with `Content-Range`; unsatisfiable →
//! 416 with `bytes */size`), which update_engine uses to resume downloads. Packages with an
//! external URL are not served here (the Omaha answer points at their URL). Uploads go through
//! the REST API (`crate::api::packages::upload`), which stores files under the same data dir.

use std::io::SeekFrom;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::db::{self, DbError};
use crate::state::AppState;

/// The payload routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/packages/{id}/{filename}", get(serve))
}

/// A parsed `Range` header against a file of known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: send the whole file with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// The range cannot be satisfied: 416.
    Unsatisfiable,
}

/// Interpret a `Range` header value for a file of `size` bytes (RFC 9110 §14). Syntax we do not
/// understand, other units and multi-range requests are ignored (a full 200 answer is allowed).
pub fn parse_range(value: Option<&str>, size: u64) -> ByteRange {
    let Some(v) = value else {
        return ByteRange::Full;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => ByteRange::Full,
        },
        // bytes=a-: from a to the end.
        (false, true) => match num(a) {
            Some(s) if s >= size => ByteRange::Unsatisfiable,
            Some(s) => ByteRange::Partial {
                start: s,
                end: size - 1,
            },
            None => ByteRange::Full,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s > e => ByteRange::Full,
            (Some(s), Some(_)) if s >= size => ByteRange::Unsatisfiable,
            (Some(s), Some(e)) => ByteRange::Partial {
                start: s,
                end: e.min(size - 1),
            },
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

async fn serve(
    State(state): State<AppState>,
    method: Method,
    Path((id, filename)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return text(StatusCode::NOT_FOUND, format!("no package {id:?}"));
    };
    let pkg = match db::packages::get(&state.db, id).await {
        Ok(p) => p,
        Err(DbError::NotFound { .. }) => {
            return text(StatusCode::NOT_FOUND, format!("no package {id}"));
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // The payload, else one of the package's OS-bound extensions (`{name}.raw`).
    let payload = pkg
        .stored_path
        .as_deref()
        .filter(|_| pkg.filename == filename)
        .map(|s| (s, pkg.sha256_hex.as_str()));
    let extension = || {
        pkg.extensions
            .iter()
            .find(|e| e.file_name() == filename)
            .map(|e| (e.stored_path.as_str(), e.sha256_hex.as_str()))
    };
    let Some((stored, sha256_hex)) = payload.or_else(extension) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("package {id} has no stored payload or extension named {filename:?}"),
        );
    };
    // stored_path is a bare file name chosen by the server; refuse anything else.
    if stored.contains('/') || stored.contains("..") {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "corrupt stored path");
    }
    let path = state.config.data_dir.join(stored);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "opening payload");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("payload of package {id} is missing on the server"),
            );
        }
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let etag = format!("\"{sha256_hex}\"");
    // If-Range with a different validator means the client's partial copy is stale.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|s| s == etag));
    let range = if if_range_ok {
        parse_range(
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            size,
        )
    } else {
        ByteRange::Full
    };
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp_headers.insert(header::ETAG, v);
    }
    let (status, start, len) = match range {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Partial { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                resp_headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp_headers.insert(header::CONTENT_RANGE, v);
            }
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                resp_headers,
                format!("range not satisfiable: the payload has {size} bytes"),
            )
                .into_response();
        }
    };
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return (status, resp_headers).into_response();
    }
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start)).await
    {
        return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), 64 * 1024));
    (status, resp_headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any header, any size: no panic, and a partial range is inside the file.
        #[test]
        fn range_never_out_of_bounds(h in "(bytes=)?[0-9 ,-]{0,12}", size in 0u64..10_000) {
            if let ByteRange::Partial { start, end } = parse_range(Some(&h), size) {
                prop_assert!(start <= end && end < size, "{h:?} size {size}: {start}-{end}");
            }
        }
    }

    #[test]
    fn range_table() {
        use ByteRange::*;
        let p = |start, end| Partial { start, end };
        let table = [
            (None, 100, Full),
            (Some("bytes=0-9"), 100, p(0, 9)),
            (Some("bytes=90-"), 100, p(90, 99)),
            (Some("bytes=-10"), 100, p(90, 99)),
            (Some("bytes=-1000"), 100, p(0, 99)),
            (Some("bytes=50-1000"), 100, p(50, 99)),
            (Some("bytes=99-99"), 100, p(99, 99)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=100-200"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=9-0"), 100, Full),
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("items=0-1"), 100, Full),
            (Some("bytes=a-b"), 100, Full),
            (Some("bytes=-"), 100, Full),
            (Some("bytes=+1-2"), 100, Full),
        ];
        for (h, size, want) in table {
            assert_eq!(parse_range(h, size), want, "{h:?} size {size}");
        }
    }
}
