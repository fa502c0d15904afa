//! The payload header: magic, the two lengths, the manifest bytes and the signatures.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::PayloadError;

/// The first 8 bytes of every payload.
pub const MAGIC: &[u8; 8] = b"KLSNPAY1";

/// Bytes before the manifest: magic, manifest_len, signatures_len.
pub const PREFIX_LEN: u64 = 24;

/// The largest manifest a reader accepts.
pub const MAX_MANIFEST_LEN: u64 = 16 * 1024 * 1024;

/// The largest signatures block a reader accepts.
pub const MAX_SIGNATURES_LEN: u64 = 64 * 1024;

/// One signature of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Lowercase hex of the first 8 bytes of sha256(raw 32-byte public key).
    pub key_id: String,
    /// The 64-byte ed25519 signature, base64 (standard alphabet, padded).
    pub ed25519: String,
}

/// The signatures block as stored in the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureBlock {
    signatures: Vec<Signature>,
}

/// The header of a payload: what is signed, the signatures, and where the data starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The manifest JSON exactly as stored (and signed).
    pub manifest_bytes: Vec<u8>,
    /// The signatures, in file order.
    pub signatures: Vec<Signature>,
    /// Offset of the data area in the file (`24 + manifest_len + signatures_len`).
    pub data_start: u64,
}

fn lengths(prefix: &[u8; 24]) -> Result<(u64, u64), PayloadError> {
    if &prefix[..8] != MAGIC {
        return Err(PayloadError::malformed(format!(
            "bad magic {:?} (want {:?})",
            String::from_utf8_lossy(&prefix[..8]),
            String::from_utf8_lossy(MAGIC)
        )));
    }
    let mut m = [0u8; 8];
    m.copy_from_slice(&prefix[8..16]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&prefix[16..24]);
    let (m, s) = (u64::from_be_bytes(m), u64::from_be_bytes(s));
    if m == 0 || m > MAX_MANIFEST_LEN {
        return Err(PayloadError::malformed(format!(
            "manifest_len {m} is outside 1..={MAX_MANIFEST_LEN}"
        )));
    }
    if s == 0 || s > MAX_SIGNATURES_LEN {
        return Err(PayloadError::malformed(format!(
            "signatures_len {s} is outside 1..={MAX_SIGNATURES_LEN}"
        )));
    }
    Ok((m, s))
}

/// How many bytes of the file the header takes, from the first 24 bytes (for a range request).
pub fn header_len(prefix: &[u8; 24]) -> Result<u64, PayloadError> {
    let (m, s) = lengths(prefix)?;
    Ok(PREFIX_LEN + m + s)
}

fn read_exact_vec<R: Read>(r: &mut R, len: u64, what: &str) -> Result<Vec<u8>, PayloadError> {
    // `len` is bounded by the caller (at most 16 MiB); a short file fails before filling it.
    let mut buf = Vec::new();
    r.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| PayloadError::io(format!("payload {what}"), e))?;
    if (buf.len() as u64) < len {
        return Err(PayloadError::Truncated {
            what: format!("{what}: {} of {len} bytes", buf.len()),
        });
    }
    Ok(buf)
}

/// Read and bound-check the header from the start of a payload (24 bytes + the two JSON blobs).
pub fn read_header<R: Read>(mut r: R) -> Result<Header, PayloadError> {
    let mut prefix = [0u8; 24];
    let got = read_exact_vec(&mut r, PREFIX_LEN, "header prefix")?;
    prefix.copy_from_slice(&got);
    let (m, s) = lengths(&prefix)?;
    let manifest_bytes = read_exact_vec(&mut r, m, "manifest")?;
    let sig_bytes = read_exact_vec(&mut r, s, "signatures")?;
    let block: SignatureBlock = serde_json::from_slice(&sig_bytes)
        .map_err(|e| PayloadError::malformed(format!("signatures JSON: {e}")))?;
    Ok(Header {
        manifest_bytes,
        signatures: block.signatures,
        data_start: PREFIX_LEN + m + s,
    })
}

/// Read the header of the payload file at `path`.
pub fn read_header_file(path: &Path) -> Result<Header, PayloadError> {
    let f = std::fs::File::open(path).map_err(|e| PayloadError::io(path, e))?;
    read_header(std::io::BufReader::new(f)).map_err(|e| match e {
        PayloadError::Io { source, .. } => PayloadError::io(path, source),
        other => other,
    })
}

impl Header {
    /// The header as bytes: prefix, manifest, signatures JSON. Its length is `data_start`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, PayloadError> {
        let sigs = serde_json::to_vec(&SignatureBlock {
            signatures: self.signatures.clone(),
        })
        .map_err(|e| PayloadError::malformed(format!("serialising signatures: {e}")))?;
        let (m, s) = (self.manifest_bytes.len() as u64, sigs.len() as u64);
        if m == 0 || m > MAX_MANIFEST_LEN {
            return Err(PayloadError::malformed(format!(
                "manifest of {m} bytes is outside 1..={MAX_MANIFEST_LEN}"
            )));
        }
        if s > MAX_SIGNATURES_LEN {
            return Err(PayloadError::malformed(format!(
                "signatures of {s} bytes exceed {MAX_SIGNATURES_LEN}"
            )));
        }
        let mut out = Vec::with_capacity((PREFIX_LEN + m + s) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&m.to_be_bytes());
        out.extend_from_slice(&s.to_be_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        out.extend_from_slice(&sigs);
        Ok(out)
    }

    /// A header for `manifest_bytes` and `signatures`, with `data_start` computed.
    pub fn new(
        manifest_bytes: Vec<u8>,
        signatures: Vec<Signature>,
    ) -> Result<Header, PayloadError> {
        let mut h = Header {
            manifest_bytes,
            signatures,
            data_start: 0,
        };
        h.data_start = h.to_bytes()?.len() as u64;
        Ok(h)
    }

    /// Write the header bytes to `w`.
    pub fn write_to<W: Write>(&self, mut w: W, path: &Path) -> Result<(), PayloadError> {
        let bytes = self.to_bytes()?;
        w.write_all(&bytes).map_err(|e| PayloadError::io(path, e))
    }
}
