//! The one error type of the crate; every variant names what it is about.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::manifest::PartName;

/// Everything that can go wrong reading, verifying, building or signing a payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or stream) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The payload (header, manifest or signatures) does not follow the format.
    #[error("malformed payload: {what}")]
    Malformed {
        /// What is wrong, and where.
        what: String,
    },
    /// The payload ends before the bytes its header or manifest announce.
    #[error("truncated payload: {what}")]
    Truncated {
        /// What was being read when the data ended.
        what: String,
    },
    /// The manifest carries no signature at all.
    #[error("the manifest is not signed")]
    Unsigned,
    /// No signature is by a trusted key.
    #[error("no signature is by a trusted key (signed by key ids: {})", key_ids.join(", "))]
    UnknownKey {
        /// The key ids of the signatures present.
        key_ids: Vec<String>,
    },
    /// A signature by a trusted key does not verify.
    #[error("the signature by trusted key {key_id} does not verify")]
    BadSignature {
        /// The key id of the failing signature.
        key_id: String,
    },
    /// The manifest expired.
    #[error("the manifest expired at {expires} (now {now})")]
    Expired {
        /// The manifest's expiry time.
        expires: DateTime<Utc>,
        /// The time the check was made at.
        now: DateTime<Utc>,
    },
    /// The manifest is for another OS.
    #[error("the payload is for os_id {got:?}, this system is {want:?}")]
    WrongOs {
        /// The OS id of this system.
        want: String,
        /// The OS id in the manifest.
        got: String,
    },
    /// The manifest is for another architecture.
    #[error("the payload is for architecture {got:?}, this system is {want:?}")]
    WrongArch {
        /// The architecture of this system.
        want: String,
        /// The architecture in the manifest.
        got: String,
    },
    /// The payload's version is not newer than the running one.
    #[error("version {version} is not newer than the running version {running}")]
    NotNewer {
        /// The payload's version.
        version: String,
        /// The running version.
        running: String,
    },
    /// A version string does not parse.
    #[error("invalid version {value:?}")]
    BadVersion {
        /// The rejected text.
        value: String,
    },
    /// A chunk's uncompressed bytes do not have the manifest's sha256.
    #[error("{part} chunk {index} at offset {offset}: sha256 is {got}, the manifest says {want}")]
    ChunkHash {
        /// The part the chunk belongs to.
        part: PartName,
        /// Index of the chunk in the part.
        index: usize,
        /// Offset of the chunk in the part.
        offset: u64,
        /// The sha256 from the manifest.
        want: String,
        /// The sha256 of the data.
        got: String,
    },
    /// A chunk has another size than the manifest says (compressed or uncompressed).
    #[error(
        "{part} chunk {index} at offset {offset}: {what} size is {got}, the manifest says {want}"
    )]
    ChunkSize {
        /// The part the chunk belongs to.
        part: PartName,
        /// Index of the chunk in the part.
        index: usize,
        /// Offset of the chunk in the part.
        offset: u64,
        /// `compressed` or `uncompressed`.
        what: &'static str,
        /// The size from the manifest.
        want: u64,
        /// The size of the data.
        got: u64,
    },
    /// A chunk's compressed bytes are not a valid zstd frame.
    #[error("{part} chunk {index} at offset {offset}: cannot decompress: {message}")]
    ChunkDecode {
        /// The part the chunk belongs to.
        part: PartName,
        /// Index of the chunk in the part.
        index: usize,
        /// Offset of the chunk in the part.
        offset: u64,
        /// The decoder's message.
        message: String,
    },
    /// A whole part does not have the manifest's sha256.
    #[error("part {part}: sha256 is {got}, the manifest says {want}")]
    PartHash {
        /// The part.
        part: PartName,
        /// The sha256 from the manifest.
        want: String,
        /// The sha256 of the data.
        got: String,
    },
    /// A whole part does not have the manifest's size.
    #[error("part {part}: {got} bytes, the manifest says {want}")]
    PartSize {
        /// The part.
        part: PartName,
        /// The size from the manifest.
        want: u64,
        /// The number of bytes seen.
        got: u64,
    },
    /// The manifest's usr root hash is not the UKI's `usrhash=`.
    #[error("the manifest's usr root hash {manifest} is not the UKI's usrhash={uki}")]
    RootHashMismatch {
        /// The root hash in the manifest.
        manifest: String,
        /// The `usrhash=` of the UKI.
        uki: String,
    },
    /// The UKI is not a PE file with a `.cmdline` section carrying `usrhash=`.
    #[error("UKI: {what}")]
    BadUki {
        /// What is wrong.
        what: String,
    },
    /// A key file does not hold the expected key.
    #[error("key {origin}: {message}")]
    BadKey {
        /// The file (or other origin) of the key.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The manifest names a chunking algorithm this reader does not know.
    #[error(
        "the manifest's chunking algorithm {algorithm:?} is unknown to this reader (it knows fastcdc-2020 and fixed)"
    )]
    UnknownChunking {
        /// The algorithm named.
        algorithm: String,
    },
    /// The image build output cannot be made into a payload.
    #[error("{}: {message}", path.display())]
    BuildInput {
        /// The file or directory involved.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl PayloadError {
    /// A short stable slug for status output and events (`bad_signature`, `chunk_hash`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Io { .. } => "io",
            PayloadError::Malformed { .. } => "malformed",
            PayloadError::Truncated { .. } => "truncated",
            PayloadError::Unsigned => "unsigned",
            PayloadError::UnknownKey { .. } => "unknown_key",
            PayloadError::BadSignature { .. } => "bad_signature",
            PayloadError::Expired { .. } => "expired",
            PayloadError::WrongOs { .. } => "wrong_os",
            PayloadError::WrongArch { .. } => "wrong_arch",
            PayloadError::NotNewer { .. } => "not_newer",
            PayloadError::BadVersion { .. } => "bad_version",
            PayloadError::ChunkHash { .. } => "chunk_hash",
            PayloadError::ChunkSize { .. } => "chunk_size",
            PayloadError::ChunkDecode { .. } => "chunk_decode",
            PayloadError::PartHash { .. } => "part_hash",
            PayloadError::PartSize { .. } => "part_size",
            PayloadError::RootHashMismatch { .. } => "root_hash_mismatch",
            PayloadError::BadUki { .. } => "bad_uki",
            PayloadError::BadKey { .. } => "bad_key",
            PayloadError::BuildInput { .. } => "build_input",
            PayloadError::UnknownChunking { .. } => "unknown_chunking",
        }
    }

    /// An [`PayloadError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PayloadError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`PayloadError::Malformed`] with `what`.
    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        PayloadError::Malformed { what: what.into() }
    }
}
