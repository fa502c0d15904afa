//! The verity root hash signature, in the JSON systemd reads from a `*-verity-sig` partition:
//! `{"rootHash": hex, "certificateFingerprint": sha256 hex, "signature": base64 DER PKCS#7}`,
//! NUL-padded to a multiple of 4096 bytes. The PKCS#7 is detached, without signed attributes,
//! over the lowercase hex root hash (no newline), as systemd-repart and the kernel's
//! `root_hash_sig_key_desc` expect.
//!
//! The openssl CLI (through keelson-cmd) does the cryptography: it is on every build host and
//! in the image, and no well-kept pure-Rust crate writes PKCS#7 SignedData.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use keelson_cmd as cmd;

use crate::error::SysextError;

/// Signature partitions are padded to a multiple of this.
pub const SIG_ALIGN: usize = 4096;
/// systemd refuses signature partitions larger than this.
pub const SIG_MAX: usize = 4 << 20;

/// The JSON object of a verity signature partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VeritySignature {
    /// Lowercase hex root hash that was signed.
    #[serde(rename = "rootHash")]
    pub root_hash: String,
    /// SHA-256 of the signer certificate's DER, hex (informational; systemd ignores it).
    #[serde(
        rename = "certificateFingerprint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_fingerprint: Option<String>,
    /// Base64 of the DER PKCS#7 detached signature.
    pub signature: String,
}

impl VeritySignature {
    /// The partition content: the JSON, NUL-padded to a multiple of [`SIG_ALIGN`].
    pub fn to_partition(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        let padded = bytes.len().div_ceil(SIG_ALIGN) * SIG_ALIGN;
        bytes.resize(padded, 0);
        bytes
    }

    /// Parses a partition's content (JSON up to the first NUL); the error is the reason.
    pub fn from_partition(bytes: &[u8]) -> Result<VeritySignature, String> {
        if bytes.len() > SIG_MAX {
            return Err(format!(
                "the signature partition has {} bytes, more than systemd's limit of {SIG_MAX}",
                bytes.len()
            ));
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let sig: VeritySignature = serde_json::from_slice(&bytes[..end])
            .map_err(|e| format!("the signature partition is not the expected JSON: {e}"))?;
        if hex::decode(&sig.root_hash).is_err() {
            return Err(format!("rootHash {:?} is not hex", sig.root_hash));
        }
        if B64.decode(&sig.signature).is_err() {
            return Err("signature is not base64".into());
        }
        Ok(sig)
    }

    /// The DER PKCS#7 bytes.
    pub fn der(&self) -> Result<Vec<u8>, String> {
        B64.decode(&self.signature)
            .map_err(|e| format!("signature is not base64: {e}"))
    }
}

/// SHA-256 (hex) of a PEM certificate's DER encoding.
pub fn cert_fingerprint(cert: &Path) -> Result<String, SysextError> {
    let text = std::fs::read_to_string(cert).map_err(SysextError::io_on("reading", cert))?;
    let der = pem_body(&text, "CERTIFICATE").ok_or_else(|| SysextError::Signature {
        path: cert.to_path_buf(),
        reason: "no PEM CERTIFICATE block in the file".into(),
    })?;
    Ok(hex::encode(Sha256::digest(&der)))
}

fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(b64).ok()
}

/// Signs `root_hash_hex` with `key` (PEM private key) for `cert` (its PEM certificate), using
/// `work` for the temporary files. RSA keys give the same bytes on every run.
pub fn sign_root_hash(
    root_hash_hex: &str,
    key: &Path,
    cert: &Path,
    work: &Path,
) -> Result<VeritySignature, SysextError> {
    let fingerprint = cert_fingerprint(cert)?;
    let content = work.join("roothash.txt");
    std::fs::write(&content, root_hash_hex).map_err(SysextError::io_on("writing", &content))?;
    let der = work.join("roothash.p7s");
    cmd::run(
        Command::new("openssl")
            .args(["smime", "-sign", "-binary", "-noattr", "-outform", "DER"])
            .arg("-in")
            .arg(&content)
            .arg("-inkey")
            .arg(key)
            .arg("-signer")
            .arg(cert)
            .arg("-out")
            .arg(&der),
    )?;
    let bytes = std::fs::read(&der).map_err(SysextError::io_on("reading", &der))?;
    Ok(VeritySignature {
        root_hash: root_hash_hex.to_string(),
        certificate_fingerprint: Some(fingerprint),
        signature: B64.encode(bytes),
    })
}

/// Checks `sig` the way systemd's userspace check does (`PKCS7_verify` with `PKCS7_NOINTERN |
/// PKCS7_NOVERIFY`: the signer must be `cert`, certificates inside the signature are not
/// trusted, the chain is not checked). `Err` carries the reason.
pub fn verify_signature(
    sig: &VeritySignature,
    expected_root_hash: &str,
    cert: &Path,
    work: &Path,
) -> Result<(), String> {
    if !sig.root_hash.eq_ignore_ascii_case(expected_root_hash) {
        return Err(format!(
            "it signs root hash {} but the image's verity root hash is {expected_root_hash}",
            sig.root_hash
        ));
    }
    let der = sig.der()?;
    let content = work.join("verify-roothash.txt");
    let der_path = work.join("verify-roothash.p7s");
    std::fs::write(&content, sig.root_hash.as_bytes())
        .and_then(|()| std::fs::write(&der_path, der))
        .map_err(|e| format!("writing temporary files in {}: {e}", work.display()))?;
    let r = cmd::run(
        Command::new("openssl")
            .args([
                "smime",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-nointern",
                "-noverify",
            ])
            .arg("-in")
            .arg(&der_path)
            .arg("-content")
            .arg(&content)
            .arg("-certfile")
            .arg(cert)
            .args(["-out", "/dev/null"]),
    );
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            let why = e
                .stderr_tail
                .lines()
                .find(|l| l.contains("error:") || l.contains("failure"))
                .unwrap_or(e.stderr_tail.as_str())
                .trim()
                .to_string();
            let fp = match (cert_fingerprint(cert), &sig.certificate_fingerprint) {
                (Ok(have), Some(want)) if &have != want => format!(
                    " (signed for certificate {want}, checked against {have} from {})",
                    cert.display()
                ),
                _ => String::new(),
            };
            Err(format!(
                "the PKCS#7 signature does not verify with {}{fp}: {why}",
                cert.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partition_round_trip_and_padding() {
        let s = VeritySignature {
            root_hash: "ab".repeat(32),
            certificate_fingerprint: Some("cd".repeat(32)),
            signature: B64.encode(b"der"),
        };
        let p = s.to_partition();
        assert_eq!(p.len() % SIG_ALIGN, 0);
        assert!(p.starts_with(b"{\"rootHash\":\""));
        assert_eq!(VeritySignature::from_partition(&p).unwrap(), s);
    }

    #[test]
    fn bad_partitions_give_reasons() {
        assert!(
            VeritySignature::from_partition(b"\0\0\0")
                .unwrap_err()
                .contains("JSON")
        );
        let e = VeritySignature::from_partition(br#"{"rootHash":"zz","signature":"AA=="}"#)
            .unwrap_err();
        assert!(e.contains("not hex"), "{e}");
        let e =
            VeritySignature::from_partition(br#"{"rootHash":"aa","signature":"*"}"#).unwrap_err();
        assert!(e.contains("base64"), "{e}");
    }
}
