//! Checking a payload: the manifest against the trusted keys and this system, each chunk and
//! each part against the manifest.

use std::io::Read;

use chrono::{DateTime, Utc};
use keelson_version::Version;
use sha2::{Digest, Sha256};

use crate::manifest::max_data_size;
use crate::{Chunk, Header, Manifest, Part, PartName, PayloadError, TrustedKeys};

/// What this system expects of a payload.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// os-release `ID` of this system.
    pub os_id: &'a str,
    /// systemd architecture name of this system (`x86-64`, `arm64`).
    pub arch: &'a str,
    /// The running version; the payload's must be newer.
    pub running_version: &'a str,
    /// The time to check expiry against.
    pub now: DateTime<Utc>,
}

/// Every check of the manifest, in this order, each with its own error variant: at least one
/// signature by a trusted key (else BadSignature or UnknownKey or Unsigned), manifest parses and
/// is structurally sound (parts present once each, chunks tile each part), not expired, os_id and
/// arch match, version parses and is newer than running_version (keelson-version ordering).
pub fn verify_manifest(
    h: &Header,
    keys: &TrustedKeys,
    expect: &Expectations,
) -> Result<Manifest, PayloadError> {
    keys.verify(&h.manifest_bytes, &h.signatures)?;
    let m = Manifest::from_bytes(&h.manifest_bytes)?;
    check_manifest(&m, expect)?;
    Ok(m)
}

/// The checks after the signature on a parsed manifest: expiry, OS, architecture, version.
pub fn check_manifest(m: &Manifest, expect: &Expectations) -> Result<(), PayloadError> {
    if expect.now >= m.expires {
        return Err(PayloadError::Expired {
            expires: m.expires,
            now: expect.now,
        });
    }
    if m.os_id != expect.os_id {
        return Err(PayloadError::WrongOs {
            want: expect.os_id.into(),
            got: m.os_id.clone(),
        });
    }
    if m.arch != expect.arch {
        return Err(PayloadError::WrongArch {
            want: expect.arch.into(),
            got: m.arch.clone(),
        });
    }
    let version =
        Version::parse(&m.version).map_err(|e| PayloadError::BadVersion { value: e.value })?;
    let running = Version::parse(expect.running_version)
        .map_err(|e| PayloadError::BadVersion { value: e.value })?;
    if version <= running {
        return Err(PayloadError::NotNewer {
            version: m.version.clone(),
            running: expect.running_version.into(),
        });
    }
    Ok(())
}

/// Decompress one chunk (bounded to chunk.size) and check its size and sha256.
pub fn decode_chunk(
    part: PartName,
    index: usize,
    chunk: &Chunk,
    compressed: &[u8],
) -> Result<Vec<u8>, PayloadError> {
    let size_err = |what, want, got| PayloadError::ChunkSize {
        part,
        index,
        offset: chunk.offset,
        what,
        want,
        got,
    };
    if compressed.len() as u64 != chunk.data_size {
        return Err(size_err(
            "compressed",
            chunk.data_size,
            compressed.len() as u64,
        ));
    }
    if chunk.size > crate::MAX_CHUNK_SIZE || chunk.data_size > max_data_size(chunk.size) {
        return Err(PayloadError::malformed(format!(
            "{part} chunk {index}: size {} / compressed {} out of bounds",
            chunk.size, chunk.data_size
        )));
    }
    let decode_err = |e: std::io::Error| PayloadError::ChunkDecode {
        part,
        index,
        offset: chunk.offset,
        message: e.to_string(),
    };
    let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(decode_err)?
        .single_frame();
    let mut out = Vec::with_capacity(chunk.size as usize);
    // One byte more than announced tells a too-long chunk from an exact one.
    decoder
        .take(chunk.size + 1)
        .read_to_end(&mut out)
        .map_err(decode_err)?;
    if out.len() as u64 != chunk.size {
        return Err(size_err("uncompressed", chunk.size, out.len() as u64));
    }
    let got = hex::encode(Sha256::digest(&out));
    if got != chunk.sha256 {
        return Err(PayloadError::ChunkHash {
            part,
            index,
            offset: chunk.offset,
            want: chunk.sha256.clone(),
            got,
        });
    }
    Ok(out)
}

/// Running sha256 over a part's bytes, fed chunk by chunk in order; `finish` checks size and hash.
#[derive(Debug, Clone)]
pub struct PartVerifier {
    name: PartName,
    size: u64,
    sha256: String,
    seen: u64,
    hasher: Sha256,
}

impl PartVerifier {
    /// A verifier for `part`.
    pub fn new(part: &Part) -> Self {
        PartVerifier {
            name: part.name,
            size: part.size,
            sha256: part.sha256.clone(),
            seen: 0,
            hasher: Sha256::new(),
        }
    }

    /// Feed the next bytes of the part.
    pub fn update(&mut self, bytes: &[u8]) {
        self.seen = self.seen.saturating_add(bytes.len() as u64);
        self.hasher.update(bytes);
    }

    /// Bytes fed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Check the size and sha256 of everything fed.
    pub fn finish(self) -> Result<(), PayloadError> {
        if self.seen != self.size {
            return Err(PayloadError::PartSize {
                part: self.name,
                want: self.size,
                got: self.seen,
            });
        }
        let got = hex::encode(self.hasher.finalize());
        if got != self.sha256 {
            return Err(PayloadError::PartHash {
                part: self.name,
                want: self.sha256,
                got,
            });
        }
        Ok(())
    }
}

/// The usr root hash of the manifest equals the UKI's usrhash= (RootHashMismatch otherwise).
pub fn check_uki_root_hash(m: &Manifest, uki_usrhash: &str) -> Result<(), PayloadError> {
    if m.usr_root_hash.eq_ignore_ascii_case(uki_usrhash) {
        Ok(())
    } else {
        Err(PayloadError::RootHashMismatch {
            manifest: m.usr_root_hash.clone(),
            uki: uki_usrhash.into(),
        })
    }
}
