//! Omaha v3 protocol types as spoken by Flatcar's update_engine and Nebraska.
//!
//! [`Request::parse`] reads what update_engine sends (tolerating unknown attributes and
//! elements, strict about the ones that matter), [`Response::to_xml`] writes what it accepts.
//! Both directions are deterministic so that a parse → write → parse round trip is the
//! identity; the fuzz target and the property tests check exactly that. The subset we speak
//! is written down in `docs/omaha.md`.

// Every public item carries a one-line doc; keep the compiler checking it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

mod codes;
mod request;
mod response;
mod xml;

pub use codes::{ErrorCode, ErrorFlags, EventResult, EventType, ExitCode};
pub use request::{
    Arch, Event, MAX_REASON_LEN, Os, Ping, Request, RequestApp, UpdateCheck, valid_reason,
};
pub use response::{
    Action, AppStatus, DayStart, Manifest, Package, Response, ResponseApp, UpdateCheckResponse,
    UpdateOffer, UpdateStatus,
};
pub use xml::Limits;

/// Flatcar's application id, also update_engine's built-in default.
pub const FLATCAR_APP_ID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";

/// Why a body was rejected. Every variant names the element path (e.g.
/// `request/app[0]/event[1]`) or byte offset involved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The body exceeds [`Limits::max_body_bytes`].
    #[error("body is {size} bytes, more than the limit of {limit}")]
    BodyTooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Element nesting exceeds [`Limits::max_depth`].
    #[error("element {path} is nested deeper than the limit of {limit}")]
    TooDeep {
        /// The element that went too deep.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// More elements than [`Limits::max_elements`].
    #[error("element {path} is past the limit of {limit} elements")]
    TooManyElements {
        /// The first element over the limit.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// More attributes on one element than [`Limits::max_attributes`].
    #[error("element {path} has more than {limit} attributes")]
    TooManyAttributes {
        /// The element.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// First invalid byte.
        offset: usize,
    },
    /// The XML is malformed.
    #[error("malformed XML at byte {offset} (inside {path:?}): {message}")]
    Xml {
        /// Byte offset where the parser stopped (0 if unknown).
        offset: u64,
        /// The innermost open element, empty at top level.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The body ended while elements were still open.
    #[error("XML is truncated: element {path} is never closed")]
    Truncated {
        /// The innermost unclosed element.
        path: String,
    },
    /// No root element at all.
    #[error("body is empty: no root element")]
    Empty,
    /// Content after the root element closed.
    #[error("unexpected {found} after the root element at byte {offset}")]
    TrailingContent {
        /// Byte offset.
        offset: u64,
        /// What was found (element name or `text`).
        found: String,
    },
    /// The root element is not the expected one.
    #[error("root element is <{found}>, expected <{expected}>")]
    UnexpectedRoot {
        /// `request` or `response`.
        expected: &'static str,
        /// What the body had.
        found: String,
    },
    /// `protocol` is not `3.0`.
    #[error("{path}: attribute protocol is {value:?}, only \"3.0\" is supported")]
    UnsupportedProtocol {
        /// The element.
        path: String,
        /// The value sent.
        value: String,
    },
    /// A required attribute is missing.
    #[error("{path}: required attribute {attribute} is missing")]
    MissingAttribute {
        /// The element.
        path: String,
        /// The attribute name.
        attribute: String,
    },
    /// An attribute's value cannot be used.
    #[error("{path}: attribute {attribute} is {value:?}, expected {expected}")]
    InvalidAttribute {
        /// The element.
        path: String,
        /// The attribute name.
        attribute: String,
        /// The value (truncated to 64 bytes).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A required child element is missing.
    #[error("{path}: required element {element} is missing")]
    MissingElement {
        /// The parent element.
        path: String,
        /// The missing child (a relative path).
        element: String,
    },
}

/// The app id without braces, lower-cased: Nebraska matches ids with or without braces.
pub fn normalize_app_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

/// `true`/`false` as Omaha writes booleans, and `1`/`0` as update_engine writes `ismachine`
/// and `ping@active`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "True" | "TRUE" => Some(true),
        "0" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Plain decimal digits only: no sign, no spaces, no hex.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Plain decimal digits only: no sign, no spaces, no hex.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Optional leading `-`, then decimal digits.
pub(crate) fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The round-trip property the fuzz target and property tests check on any input: whatever
/// parses (as a request, or as a response) must write back to XML that parses to the same
/// value and writes back byte-identically. `Err` describes the first mismatch.
pub fn check_round_trip(body: &[u8]) -> Result<(), String> {
    let limits = Limits::default();
    if let Ok(request) = Request::parse(body, &limits) {
        let xml = request.to_xml();
        match Request::parse(xml.as_bytes(), &limits) {
            Ok(again) if again == request && again.to_xml() == xml => {}
            Ok(again) => return Err(format!("request changed:\n{request:?}\n{again:?}\n{xml}")),
            Err(e) => return Err(format!("written request does not parse: {e}\n{xml}")),
        }
    }
    if let Ok(response) = Response::parse(body, &limits) {
        let xml = response.to_xml();
        match Response::parse(xml.as_bytes(), &limits) {
            Ok(again) if again == response && again.to_xml() == xml => {}
            Ok(again) => return Err(format!("response changed:\n{response:?}\n{again:?}\n{xml}")),
            Err(e) => return Err(format!("written response does not parse: {e}\n{xml}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_parsers_are_strict() {
        assert_eq!(parse_u32("42"), Some(42));
        for bad in ["", "+1", "-1", " 1", "1 ", "0x1", "4294967296", "1e3"] {
            assert_eq!(parse_u32(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(parse_i64("-1"), Some(-1));
        assert_eq!(parse_i64("--1"), None);
        assert_eq!(parse_i64("-"), None);
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn app_ids_match_with_or_without_braces() {
        assert_eq!(
            normalize_app_id(FLATCAR_APP_ID),
            normalize_app_id("E96281A6-D1AF-4BDE-9A0A-97B76E56DC57")
        );
    }
}
