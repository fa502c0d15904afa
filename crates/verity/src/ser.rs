//! Serde helpers: bytes as hex and UUIDs as text, so `--json` output reads like veritysetup's.

use serde::Serializer;

/// Bytes as lowercase hex.
pub(crate) fn hex<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&::hex::encode(v))
}

/// Optional bytes as lowercase hex or null.
pub(crate) fn opt_hex<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&::hex::encode(b)),
        None => s.serialize_none(),
    }
}

/// A raw UUID as its hyphenated text form.
pub(crate) fn uuid<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&::uuid::Uuid::from_bytes(*v).hyphenated().to_string())
}

/// An optional raw UUID as text or null.
pub(crate) fn opt_uuid<S: Serializer>(v: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => uuid(u, s),
        None => s.serialize_none(),
    }
}
