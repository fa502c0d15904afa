//! ed25519 keys: key ids, the trusted key directory, signing key files, generation.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{PayloadError, Signature};

/// What is signed: this context string, then the manifest bytes.
pub const SIGNING_CONTEXT: &[u8] = b"keelson payload manifest v1\n";

/// The key id of a raw 32-byte public key: lowercase hex of the first 8 bytes of its sha256.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(manifest);
    msg
}

/// One trusted public key and where it came from.
#[derive(Debug, Clone)]
struct TrustedKey {
    id: String,
    key: VerifyingKey,
    origin: String,
}

/// The public keys a node trusts (every `*.pem` of a directory).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// Load every `*.pem` in `dir` (SPKI public keys); a private key there is an error.
    pub fn load_dir(dir: &Path) -> Result<Self, PayloadError> {
        let entries = fs::read_dir(dir).map_err(|e| PayloadError::io(dir, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| PayloadError::io(dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pem") {
                paths.push(path);
            }
        }
        paths.sort();
        let mut out = TrustedKeys::default();
        for path in paths {
            let text = fs::read_to_string(&path).map_err(|e| PayloadError::io(&path, e))?;
            let one = TrustedKeys::from_pem(&text, &path.display().to_string())?;
            out.keys.extend(one.keys);
        }
        Ok(out)
    }

    /// One public key from PEM text (`-----BEGIN PUBLIC KEY-----`); `origin` names it in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, PayloadError> {
        if pem.contains("PRIVATE KEY") {
            return Err(PayloadError::BadKey {
                origin: origin.into(),
                message: "is a private key; trusted keys are public keys only".into(),
            });
        }
        let key =
            VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| PayloadError::BadKey {
                origin: origin.into(),
                message: format!("not an ed25519 public key in PEM (SPKI): {e}"),
            })?;
        Ok(TrustedKeys {
            keys: vec![TrustedKey {
                id: key_id(key.as_bytes()),
                key,
                origin: origin.into(),
            }],
        })
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, in load order.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Add the keys of `other`.
    pub fn extend(&mut self, other: TrustedKeys) {
        self.keys.extend(other.keys);
    }

    /// Check the signatures over `manifest`: Ok with the key id (and origin) of the first
    /// signature by a trusted key that verifies; else Unsigned, BadSignature or UnknownKey.
    pub fn verify(
        &self,
        manifest: &[u8],
        signatures: &[Signature],
    ) -> Result<(String, String), PayloadError> {
        if signatures.is_empty() {
            return Err(PayloadError::Unsigned);
        }
        let msg = signed_message(manifest);
        let mut bad = None;
        for sig in signatures {
            let trusted: Vec<&TrustedKey> =
                self.keys.iter().filter(|k| k.id == sig.key_id).collect();
            if trusted.is_empty() {
                continue;
            }
            let raw = B64
                .decode(sig.ed25519.as_bytes())
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok());
            if let Some(raw) = raw {
                let s = ed25519_dalek::Signature::from_bytes(&raw);
                for k in trusted {
                    if k.key.verify_strict(&msg, &s).is_ok() {
                        return Ok((k.id.clone(), k.origin.clone()));
                    }
                }
            }
            bad.get_or_insert_with(|| sig.key_id.clone());
        }
        match bad {
            Some(key_id) => Err(PayloadError::BadSignature { key_id }),
            None => Err(PayloadError::UnknownKey {
                key_ids: signatures.iter().map(|s| s.key_id.clone()).collect(),
            }),
        }
    }
}

/// A private signing key loaded from a PKCS#8 PEM file.
#[derive(Debug)]
pub struct SigningKeyFile {
    key: SigningKey,
    id: String,
    path: PathBuf,
}

impl SigningKeyFile {
    /// Load a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, as openssl genpkey writes).
    pub fn load(path: &Path) -> Result<Self, PayloadError> {
        let text = fs::read_to_string(path).map_err(|e| PayloadError::io(path, e))?;
        Self::from_pem(&text, path)
    }

    /// A key from PEM text; `path` names it in errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<Self, PayloadError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| PayloadError::BadKey {
            origin: path.display().to_string(),
            message: format!("not an ed25519 private key in PEM (PKCS#8): {e}"),
        })?;
        Ok(Self::from_key(key, path.to_path_buf()))
    }

    fn from_key(key: SigningKey, path: PathBuf) -> Self {
        let id = key_id(key.verifying_key().as_bytes());
        SigningKeyFile { key, id, path }
    }

    /// The key id of the public half.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The file the key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public half as PEM (SPKI).
    pub fn public_pem(&self) -> Result<String, PayloadError> {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| PayloadError::BadKey {
                origin: self.path.display().to_string(),
                message: format!("encoding the public key: {e}"),
            })
    }

    /// The signature of `manifest` (over the signing context and the manifest bytes).
    pub fn sign_manifest(&self, manifest: &[u8]) -> Signature {
        let sig = self.key.sign(&signed_message(manifest));
        Signature {
            key_id: self.id.clone(),
            ed25519: B64.encode(sig.to_bytes()),
        }
    }
}

/// The files `generate_key` wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GeneratedKey {
    /// The private key (PKCS#8 PEM, mode 0600).
    pub private: PathBuf,
    /// The public key (SPKI PEM), for the trusted key directory.
    pub public: PathBuf,
    /// The key id.
    pub key_id: String,
}

/// Generate an ed25519 key pair into `dir`: `<name>.key` (private, 0600) and `<name>.pem`
/// (public). Refuses to overwrite either file.
pub fn generate_key(dir: &Path, name: &str) -> Result<GeneratedKey, PayloadError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(PayloadError::BadKey {
            origin: name.into(),
            message: "a key name must be a plain file name".into(),
        });
    }
    let mut seed = [0u8; 32];
    use rand::TryRngCore as _;
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| PayloadError::BadKey {
            origin: name.into(),
            message: format!("no randomness from the OS: {e}"),
        })?;
    let key = SigningKey::from_bytes(&seed);
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pem"));
    // PKCS#8 v1 (no public key attribute): what openssl genpkey writes and every reader takes.
    let pkcs8 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| PayloadError::BadKey {
        origin: private.display().to_string(),
        message: format!("encoding the private key: {e}"),
    })?;
    let file = SigningKeyFile::from_key(key, private.clone());
    let public_pem = file.public_pem()?;
    fs::create_dir_all(dir).map_err(|e| PayloadError::io(dir, e))?;
    for p in [&private, &public] {
        if p.exists() {
            return Err(PayloadError::io(
                p,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to overwrite"),
            ));
        }
    }
    write_new(&private, pkcs8.as_bytes(), 0o600)?;
    write_new(&public, public_pem.as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private,
        public,
        key_id: file.id,
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PayloadError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| PayloadError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| PayloadError::io(path, e))
}
