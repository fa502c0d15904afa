//! Signed release payloads (`keelson_<version>.payload`): one file with a header, a signed
//! JSON manifest, its ed25519 signatures, and the update parts (usr erofs, its verity tree,
//! the UKI) cut into chunks, each zstd-compressed and hashed, so that a download resumes at a
//! chunk and every chunk is checked before it is written.
//!
//! Format crate: no processes, no network, no async; it reads and writes the files it is
//! given. The format is specified in `docs/payload.md`.

mod build;
mod chunking;
mod error;
mod file;
mod header;
mod keys;
mod manifest;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod uki;
mod verify;

pub use build::{BuildInput, BuildOptions, DEFAULT_LEVEL, build, sign};
pub use chunking::{Chunking, Chunks, DEFAULT_CHUNK_SIZE, FASTCDC_2020, FIXED};
pub use error::PayloadError;
pub use file::{PartReader, PayloadFile, Verified, verify_file};
pub use header::{
    Header, MAGIC, MAX_MANIFEST_LEN, MAX_SIGNATURES_LEN, PREFIX_LEN, Signature, header_len,
    read_header, read_header_file,
};
pub use keys::{GeneratedKey, SIGNING_CONTEXT, SigningKeyFile, TrustedKeys, generate_key, key_id};
pub use manifest::{Chunk, FORMAT, MAX_CHUNK_SIZE, Manifest, Part, PartName};
pub use uki::{UkiInfo, read_uki, uki_usrhash};
pub use verify::{
    Expectations, PartVerifier, check_manifest, check_uki_root_hash, decode_chunk, verify_manifest,
};
#[cfg(test)]
mod tests;
