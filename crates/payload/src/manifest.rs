//! The manifest: what a payload holds, and the structural checks on it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Chunking, PayloadError};

/// The manifest format this crate writes: 2 records the chunking (`chunking`); format 1
/// (fixed 1 MiB chunks, no `chunking`) is still read.
pub const FORMAT: u32 = 2;

/// The largest uncompressed chunk a manifest may list (bounds the memory of one decode).
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;

/// One of the update parts of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartName {
    /// The usr erofs image.
    Usr,
    /// The dm-verity hash tree of the usr image.
    UsrVerity,
    /// The unified kernel image.
    Uki,
}

impl PartName {
    /// Every part, in manifest order.
    pub const ALL: [PartName; 3] = [PartName::Usr, PartName::UsrVerity, PartName::Uki];

    /// The name as in the manifest and the build record's roles (`usr`, `usr-verity`, `uki`).
    pub fn as_str(self) -> &'static str {
        match self {
            PartName::Usr => "usr",
            PartName::UsrVerity => "usr-verity",
            PartName::Uki => "uki",
        }
    }
}

impl fmt::Display for PartName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One chunk of a part: where its bytes go, their hash, and where the compressed copy is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Offset of the uncompressed bytes in the part.
    pub offset: u64,
    /// Number of uncompressed bytes.
    pub size: u64,
    /// sha256 of the uncompressed bytes, lowercase hex.
    pub sha256: String,
    /// Offset of the zstd-compressed bytes, relative to the header's `data_start`.
    pub data_offset: u64,
    /// Number of compressed bytes.
    pub data_size: u64,
}

impl Chunk {
    /// The uncompressed end (`offset + size`), saturating.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// One update part: its size, hash and chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Which part.
    pub name: PartName,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the whole part, lowercase hex.
    pub sha256: String,
    /// The chunks, in order, tiling the part exactly.
    pub chunks: Vec<Chunk>,
}

/// The signed description of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format number ([`FORMAT`]).
    pub format: u32,
    /// The os-release `ID` the release is for.
    pub os_id: String,
    /// The systemd architecture name the release is for (`x86-64`, `arm64`).
    pub arch: String,
    /// The release's version.
    pub version: String,
    /// dm-verity root hash of the usr part, lowercase hex; equals the UKI's `usrhash=`.
    pub usr_root_hash: String,
    /// When the payload was built.
    pub created: DateTime<Utc>,
    /// After this time no node accepts the payload.
    pub expires: DateTime<Utc>,
    /// How the parts were cut into chunks (format 2; absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<Chunking>,
    /// The parts: usr, usr-verity and uki, each once.
    pub parts: Vec<Part>,
}

impl Manifest {
    /// The part called `name`, if present.
    pub fn part(&self, name: PartName) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// The chunking the parts were cut with: the recorded one, or for format 1 fixed chunks
    /// of the usr part's first chunk's size ([`crate::DEFAULT_CHUNK_SIZE`] if it has none).
    pub fn effective_chunking(&self) -> Chunking {
        match &self.chunking {
            Some(c) => c.clone(),
            None => Chunking::fixed(
                self.part(PartName::Usr)
                    .and_then(|p| p.chunks.first())
                    .map_or(crate::DEFAULT_CHUNK_SIZE, |c| c.size),
            ),
        }
    }

    /// Parse manifest bytes (JSON) and check their structure ([`Manifest::check_structure`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, PayloadError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| PayloadError::malformed(format!("manifest JSON: {e}")))?;
        m.check_structure()?;
        Ok(m)
    }

    /// The manifest as the JSON bytes that are signed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, PayloadError> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| PayloadError::malformed(format!("serialising the manifest: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Structural soundness: format 1 (no chunking) or 2 (a known chunking, else
    /// UnknownChunking), each part exactly once, hashes are sha256 hex, chunks in order tiling
    /// each part with no gap or overlap, sizes within bounds (and the chunking's `max_size`).
    pub fn check_structure(&self) -> Result<(), PayloadError> {
        match (self.format, &self.chunking) {
            (1, None) => {}
            (1, Some(_)) => {
                return Err(PayloadError::malformed(
                    "manifest format 1 has no chunking field (format 2 has)",
                ));
            }
            (2, None) => {
                return Err(PayloadError::malformed(
                    "manifest format 2 lacks its chunking field",
                ));
            }
            (2, Some(c)) => c.check()?,
            (n, _) => {
                return Err(PayloadError::malformed(format!(
                    "manifest format {n} (this reader knows 1 and {FORMAT})"
                )));
            }
        }
        for (field, value) in [
            ("os_id", &self.os_id),
            ("arch", &self.arch),
            ("version", &self.version),
        ] {
            if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
                return Err(PayloadError::malformed(format!(
                    "manifest {field} {value:?} is empty, too long or has control characters"
                )));
            }
        }
        check_hex("usr_root_hash", &self.usr_root_hash)?;
        for name in PartName::ALL {
            let n = self.parts.iter().filter(|p| p.name == name).count();
            if n != 1 {
                return Err(PayloadError::malformed(format!(
                    "manifest lists part {name} {n} times (want exactly once)"
                )));
            }
        }
        let max = self
            .chunking
            .as_ref()
            .map_or(MAX_CHUNK_SIZE, |c| c.max_size);
        for part in &self.parts {
            check_part(part, max)?;
        }
        Ok(())
    }
}

fn check_hex(field: &str, value: &str) -> Result<(), PayloadError> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(PayloadError::malformed(format!(
            "{field} {value:?} is not 64 lowercase hex digits"
        )))
    }
}

/// The most compressed bytes a chunk of `size` bytes may take (zstd's bound, rounded up).
pub(crate) fn max_data_size(size: u64) -> u64 {
    size.saturating_add(size / 128).saturating_add(4096)
}

fn check_part(part: &Part, max_chunk: u64) -> Result<(), PayloadError> {
    let name = part.name;
    check_hex(&format!("part {name} sha256"), &part.sha256)?;
    let mut end = 0u64;
    for (i, c) in part.chunks.iter().enumerate() {
        let at = || format!("part {name} chunk {i}");
        check_hex(&format!("{} sha256", at()), &c.sha256)?;
        if c.offset != end {
            return Err(PayloadError::malformed(format!(
                "{} starts at {} but the previous chunk ends at {end} (chunks must tile the part)",
                at(),
                c.offset
            )));
        }
        if c.size == 0 || c.size > MAX_CHUNK_SIZE || c.size > max_chunk {
            return Err(PayloadError::malformed(format!(
                "{} has size {} (want 1..={})",
                at(),
                c.size,
                max_chunk.min(MAX_CHUNK_SIZE)
            )));
        }
        if c.data_size == 0 || c.data_size > max_data_size(c.size) {
            return Err(PayloadError::malformed(format!(
                "{} has {} compressed bytes for {} bytes",
                at(),
                c.data_size,
                c.size
            )));
        }
        if c.data_offset.checked_add(c.data_size).is_none() {
            return Err(PayloadError::malformed(format!(
                "{} data range overflows",
                at()
            )));
        }
        end = c
            .offset
            .checked_add(c.size)
            .ok_or_else(|| PayloadError::malformed(format!("{} range overflows", at())))?;
    }
    if end != part.size {
        return Err(PayloadError::malformed(format!(
            "part {name} has size {} but its chunks end at {end}",
            part.size
        )));
    }
    Ok(())
}
