//! Fetching a resource (file contents, appended fragments, remote configs): `data:` and
//! http(s) sources, custom headers, retries, gzip, size limits and hash verification.
//!
//! Everything is streamed: source -> limit -> gunzip -> limit -> hash -> sink. The hash is
//! computed over the *decompressed* bytes, as Ignition does (provisioning.md 1.2 and 2.4).

use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};

use crate::dataurl::{self, DataUrlError, url_head};
use crate::http::{self, HttpClient, HttpError};

/// Default limit for one resource after decompression (Ignition has none; we want one).
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// What to fetch: the Ignition `Resource` fields, independent of the config crate's types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSpec {
    /// Source URL (`data:`, `http:`, `https:`).
    pub source: String,
    /// `None` or `Some("gzip")`.
    pub compression: Option<String>,
    /// Extra HTTP headers, overriding our defaults.
    pub headers: Vec<(String, String)>,
    /// `sha256-<hex>` or `sha512-<hex>` over the decompressed data.
    pub verification: Option<String>,
}

impl ResourceSpec {
    /// A spec with just a source.
    pub fn url(source: impl Into<String>) -> Self {
        ResourceSpec {
            source: source.into(),
            ..Default::default()
        }
    }
}

/// Why a resource could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Bad `data:` URL.
    #[error(transparent)]
    DataUrl(#[from] DataUrlError),
    /// HTTP failure after retries.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Scheme we do not fetch (tftp, s3, gs, arn are not supported here).
    #[error("{url}: unsupported URL scheme {scheme:?} (supported: data, http, https)")]
    UnsupportedScheme {
        /// The URL (shortened).
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Compression other than gzip.
    #[error("{url}: unsupported compression {compression:?} (supported: gzip)")]
    UnsupportedCompression {
        /// The URL (shortened).
        url: String,
        /// The compression named.
        compression: String,
    },
    /// Malformed `verification.hash`.
    #[error("{url}: malformed hash specifier {spec:?}: {reason}")]
    BadHashSpec {
        /// The URL (shortened).
        url: String,
        /// The hash field as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The data does not match `verification.hash`.
    #[error("{url}: {algo} mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The URL (shortened).
        url: String,
        /// sha256 or sha512.
        algo: &'static str,
        /// Hex digest expected.
        expected: String,
        /// Hex digest of what arrived.
        actual: String,
    },
    /// More data than allowed.
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL (shortened).
        url: String,
        /// Limit in bytes.
        limit: u64,
    },
    /// gzip stream is corrupt.
    #[error("{url}: gzip decompression failed: {error}")]
    Gzip {
        /// The URL (shortened).
        url: String,
        /// Decoder error.
        error: io::Error,
    },
    /// An offline fetcher was asked for a resource the fetch stage did not cache.
    #[error(
        "{url}: not in the resource cache {path} (the fetch stage fetches every remote resource; was it run with this config?)"
    )]
    NotCached {
        /// The URL (shortened).
        url: String,
        /// The cache file expected.
        path: String,
    },
    /// Writing to the destination failed.
    #[error("{url}: writing fetched data to {dest}: {error}")]
    Write {
        /// The URL (shortened).
        url: String,
        /// Where we were writing.
        dest: String,
        /// I/O error.
        error: io::Error,
    },
}

/// Hash algorithm and expected digest, parsed from `sha256-<hex>` / `sha512-<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSpec {
    /// `sha256` or `sha512`.
    pub algo: &'static str,
    /// Lowercase hex digest.
    pub hex: String,
}

impl HashSpec {
    /// Parse Ignition's hash specifier; `url` only names the resource in errors.
    pub fn parse(spec: &str, url: &str) -> Result<HashSpec, FetchError> {
        let bad = |reason| FetchError::BadHashSpec {
            url: url_head(url),
            spec: spec.to_string(),
            reason,
        };
        let (algo, hex) = spec
            .split_once('-')
            .ok_or_else(|| bad("expected <algo>-<hex>"))?;
        let (algo, len) = match algo {
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => return Err(bad("unrecognized hash function")),
        };
        if hex.len() != len {
            return Err(bad("incorrect size for hash sum"));
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("hash sum is not hex"));
        }
        Ok(HashSpec {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

/// Fetches resources with one HTTP client and a size limit.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: HttpClient,
    max_size: u64,
    /// When set, remote resources come only from this directory (see [`Fetcher::offline`]).
    cache: Option<PathBuf>,
}

/// The cache file name of a resource: a digest of everything that decides its bytes, so two
/// resources with one URL but different headers, compression or hash are two entries.
pub fn cache_key(spec: &ResourceSpec) -> String {
    let mut h = Sha256::new();
    for part in [
        spec.source.as_str(),
        spec.compression.as_deref().unwrap_or(""),
        spec.verification.as_deref().unwrap_or(""),
    ] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    for (k, v) in &spec.headers {
        h.update(k.len().to_le_bytes());
        h.update(k.as_bytes());
        h.update(v.len().to_le_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Fetcher {
    /// A fetcher using `http` and limiting every resource to `max_size` bytes.
    pub fn new(http: HttpClient, max_size: u64) -> Self {
        Fetcher {
            http,
            max_size,
            cache: None,
        }
    }

    /// This fetcher, but reading every remote (non-`data:`) resource from `dir` as
    /// [`Fetcher::cache_into`] left it, and never from the network: the later first-boot
    /// stages use it so a fetch cannot fail after the disks stage changed something.
    pub fn offline(&self, dir: &Path) -> Fetcher {
        Fetcher {
            cache: Some(dir.to_path_buf()),
            ..self.clone()
        }
    }

    /// Fetch a remote resource (verified, decompressed) into `dir` under [`cache_key`];
    /// a `data:` resource is only decoded and verified. Returns the bytes it holds.
    pub fn cache_into(&self, spec: &ResourceSpec, dir: &Path) -> Result<u64, FetchError> {
        if !Self::needs_network(spec) {
            return self.fetch_bytes(spec).map(|b| b.len() as u64);
        }
        let tmp = self.fetch_to_temp_in(spec, dir)?;
        let size = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        let dest = dir.join(cache_key(spec));
        tmp.persist(&dest).map_err(|e| FetchError::Write {
            url: url_head(&spec.source),
            dest: dest.display().to_string(),
            error: e.error,
        })?;
        Ok(size)
    }

    /// The size limit per resource.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The HTTP client (providers share it).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Whether the spec needs the network (used to decide whether a stage can run offline).
    pub fn needs_network(spec: &ResourceSpec) -> bool {
        !scheme_of(&spec.source).eq_ignore_ascii_case("data")
    }

    /// Check everything that can be checked without fetching.
    pub fn validate(spec: &ResourceSpec) -> Result<(), FetchError> {
        let scheme = scheme_of(&spec.source).to_ascii_lowercase();
        if !matches!(scheme.as_str(), "data" | "http" | "https") {
            return Err(FetchError::UnsupportedScheme {
                url: url_head(&spec.source),
                scheme,
            });
        }
        if let Some(c) = spec
            .compression
            .as_deref()
            .filter(|c| !c.is_empty() && *c != "gzip")
        {
            return Err(FetchError::UnsupportedCompression {
                url: url_head(&spec.source),
                compression: c.to_string(),
            });
        }
        if let Some(h) = &spec.verification {
            HashSpec::parse(h, &spec.source)?;
        }
        Ok(())
    }

    /// Fetch into memory (configs and small fragments), still limited and verified.
    pub fn fetch_bytes(&self, spec: &ResourceSpec) -> Result<Vec<u8>, FetchError> {
        let mut out = io::Cursor::new(Vec::new());
        self.fetch_to(spec, &mut out, "memory")?;
        Ok(out.into_inner())
    }

    /// Fetch into a new temporary file inside `dir` (same filesystem as the final target, so
    /// the caller can rename it into place atomically).
    pub fn fetch_to_temp_in(
        &self,
        spec: &ResourceSpec,
        dir: &Path,
    ) -> Result<tempfile::NamedTempFile, FetchError> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".keelson-fetch")
            .tempfile_in(dir)
            .map_err(|source| FetchError::Write {
                url: url_head(&spec.source),
                dest: dir.display().to_string(),
                error: source,
            })?;
        let dest = tmp.path().display().to_string();
        self.fetch_to(spec, tmp.as_file_mut(), &dest)?;
        Ok(tmp)
    }

    /// Fetch into `sink`; on a retried HTTP attempt the sink is rewound and truncated first.
    /// Returns the number of (decompressed) bytes written.
    pub fn fetch_to<W: Write + Seek + Truncate>(
        &self,
        spec: &ResourceSpec,
        sink: &mut W,
        dest: &str,
    ) -> Result<u64, FetchError> {
        Self::validate(spec)?;
        let url = url_head(&spec.source);
        let scheme = scheme_of(&spec.source).to_ascii_lowercase();
        if scheme == "data" {
            let bytes = dataurl::decode(&spec.source)?;
            return self.pipe(spec, &bytes[..], sink, dest);
        }
        if let Some(dir) = &self.cache {
            let path = dir.join(cache_key(spec));
            let file = std::fs::File::open(&path).map_err(|_| FetchError::NotCached {
                url: url.clone(),
                path: path.display().to_string(),
            })?;
            // Stored decompressed; the hash is checked again so a changed cache is caught.
            let stored = ResourceSpec {
                compression: None,
                ..spec.clone()
            };
            return self.pipe(&stored, file, sink, dest);
        }
        // HTTP: a body that breaks off mid-stream is retried like a connection error; a bad
        // hash or gzip stream is final.
        let mut final_err: Option<FetchError> = None;
        let result = self.http.retry("GET", &spec.source, |_| {
            let mut req = self
                .http
                .client()
                .get(&spec.source)
                .header("Accept", http::ACCEPT)
                .header("Accept-Encoding", "identity");
            for (name, value) in &spec.headers {
                req = req.header(name.as_str(), value.as_str());
            }
            let resp = req.send().map_err(|e| http::describe(&e))?;
            let status = resp.status();
            if status.is_server_error() {
                return Err(format!("HTTP status {}", status.as_u16()));
            }
            if !status.is_success() {
                final_err = Some(FetchError::Http(HttpError::Status {
                    method: "GET".into(),
                    url: spec.source.clone(),
                    status: status.as_u16(),
                }));
                return Ok(0);
            }
            sink.rewind_and_truncate().map_err(|e| e.to_string())?;
            match self.pipe(spec, resp, sink, dest) {
                Ok(n) => Ok(n),
                Err(FetchError::Write { error: source, .. }) if is_transport(&source) => {
                    Err(format!("reading body: {source}"))
                }
                Err(e) => {
                    final_err = Some(e);
                    Ok(0)
                }
            }
        });
        match (result, final_err) {
            (_, Some(e)) => Err(e),
            (Ok(n), None) => Ok(n),
            (Err(e), None) => {
                tracing::debug!(%url, "fetch failed");
                Err(FetchError::Http(e))
            }
        }
    }

    /// source -> limit -> (gunzip) -> limit -> hash -> sink.
    fn pipe<R: Read, W: Write>(
        &self,
        spec: &ResourceSpec,
        source: R,
        sink: &mut W,
        dest: &str,
    ) -> Result<u64, FetchError> {
        let url = url_head(&spec.source);
        let hash = spec
            .verification
            .as_deref()
            .map(|h| HashSpec::parse(h, &spec.source))
            .transpose()?;
        let limited = source.take(self.max_size + 1);
        let gzip = spec.compression.as_deref() == Some("gzip");
        let mut reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(limited))
        } else {
            Box::new(limited)
        };
        let mut hasher = hash.as_ref().map(|h| Hasher::new(h.algo));
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if gzip
                        && matches!(
                            e.kind(),
                            io::ErrorKind::InvalidData
                                | io::ErrorKind::InvalidInput
                                | io::ErrorKind::UnexpectedEof
                        ) =>
                {
                    return Err(FetchError::Gzip { url, error: e });
                }
                Err(source) => {
                    return Err(FetchError::Write {
                        url,
                        dest: dest.into(),
                        error: source,
                    });
                }
            };
            total += n as u64;
            if total > self.max_size {
                return Err(FetchError::TooLarge {
                    url,
                    limit: self.max_size,
                });
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            sink.write_all(&buf[..n])
                .map_err(|source| FetchError::Write {
                    url: url.clone(),
                    dest: dest.into(),
                    error: io::Error::other(SinkError(source)),
                })?;
        }
        sink.flush().map_err(|source| FetchError::Write {
            url: url.clone(),
            dest: dest.into(),
            error: io::Error::other(SinkError(source)),
        })?;
        if let (Some(h), Some(expected)) = (hasher, hash) {
            let actual = h.finish();
            if actual != expected.hex {
                return Err(FetchError::HashMismatch {
                    url,
                    algo: expected.algo,
                    expected: expected.hex,
                    actual,
                });
            }
        }
        Ok(total)
    }
}

/// Marks an error as coming from the sink (not retryable), so it is not mistaken for a
/// broken-off HTTP body.
#[derive(Debug)]
struct SinkError(io::Error);

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SinkError {}

/// Errors raised while reading an HTTP body (as opposed to writing the sink).
fn is_transport(e: &io::Error) -> bool {
    !e.get_ref().is_some_and(|inner| inner.is::<SinkError>())
}

/// The part of a URL before ':' (empty when there is none).
fn scheme_of(url: &str) -> &str {
    url.split_once(':').map(|(s, _)| s).unwrap_or("")
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Self {
        if algo == "sha512" {
            Hasher::Sha512(Sha512::new())
        } else {
            Hasher::Sha256(Sha256::new())
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A sink that can be emptied before a retried download.
pub trait Truncate {
    /// Seek to 0 and drop everything written so far.
    fn rewind_and_truncate(&mut self) -> io::Result<()>;
}

impl Truncate for std::fs::File {
    fn rewind_and_truncate(&mut self) -> io::Result<()> {
        self.set_len(0)?;
        self.rewind()
    }
}

impl Truncate for io::Cursor<Vec<u8>> {
    fn rewind_and_truncate(&mut self) -> io::Result<()> {
        self.get_mut().clear();
        self.set_position(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::http::RetryPolicy;

    fn fetcher(limit: u64) -> Fetcher {
        Fetcher::new(HttpClient::new(RetryPolicy::quick(2)).unwrap(), limit)
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn b64(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn data_url_plain_gzip_and_hash() {
        let f = fetcher(1 << 20);
        let plain = ResourceSpec::url("data:,hello");
        assert_eq!(f.fetch_bytes(&plain).unwrap(), b"hello");

        let sha = hex::encode(Sha256::digest(b"hello"));
        let spec = ResourceSpec {
            source: format!("data:;base64,{}", b64(&gz(b"hello"))),
            compression: Some("gzip".into()),
            verification: Some(format!("sha256-{sha}")),
            ..Default::default()
        };
        assert_eq!(f.fetch_bytes(&spec).unwrap(), b"hello");

        let sha512 = hex::encode(Sha512::digest(b"hello"));
        let spec = ResourceSpec {
            verification: Some(format!("sha512-{sha512}")),
            ..plain.clone()
        };
        assert_eq!(f.fetch_bytes(&spec).unwrap(), b"hello");
    }

    #[test]
    fn hash_is_over_decompressed_data() {
        let f = fetcher(1 << 20);
        let compressed = gz(b"hello");
        let spec = ResourceSpec {
            source: format!("data:;base64,{}", b64(&compressed)),
            compression: Some("gzip".into()),
            verification: Some(format!(
                "sha256-{}",
                hex::encode(Sha256::digest(&compressed))
            )),
            ..Default::default()
        };
        assert!(matches!(
            f.fetch_bytes(&spec),
            Err(FetchError::HashMismatch { .. })
        ));
    }

    #[test]
    fn mismatch_bad_spec_scheme_compression_limits() {
        let f = fetcher(4);
        let wrong = ResourceSpec {
            verification: Some(format!("sha256-{}", "0".repeat(64))),
            ..ResourceSpec::url("data:,abc")
        };
        let e = f.fetch_bytes(&wrong).unwrap_err();
        assert!(
            matches!(e, FetchError::HashMismatch { algo: "sha256", .. }),
            "{e}"
        );

        for (bad, reason) in [
            ("md5-abc", "unrecognized hash function"),
            ("sha256-abc", "incorrect size for hash sum"),
            ("sha256", "expected <algo>-<hex>"),
        ] {
            let spec = ResourceSpec {
                verification: Some(bad.into()),
                ..ResourceSpec::url("data:,abc")
            };
            match f.fetch_bytes(&spec) {
                Err(FetchError::BadHashSpec { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            f.fetch_bytes(&ResourceSpec::url("tftp://x/y")),
            Err(FetchError::UnsupportedScheme { .. })
        ));
        let xz = ResourceSpec {
            compression: Some("xz".into()),
            ..ResourceSpec::url("data:,abc")
        };
        assert!(matches!(
            f.fetch_bytes(&xz),
            Err(FetchError::UnsupportedCompression { .. })
        ));
        assert!(matches!(
            f.fetch_bytes(&ResourceSpec::url("data:,hello")),
            Err(FetchError::TooLarge { limit: 4, .. })
        ));
        // A gzip bomb is stopped by the limit on decompressed bytes.
        let bomb = ResourceSpec {
            source: format!("data:;base64,{}", b64(&gz(&[0u8; 10_000]))),
            compression: Some("gzip".into()),
            ..Default::default()
        };
        assert!(matches!(
            fetcher(1000).fetch_bytes(&bomb),
            Err(FetchError::TooLarge { .. })
        ));
        let corrupt = ResourceSpec {
            source: "data:,notgzip".into(),
            compression: Some("gzip".into()),
            ..Default::default()
        };
        assert!(matches!(
            f.fetch_bytes(&corrupt),
            Err(FetchError::Gzip { .. })
        ));
    }

    #[test]
    fn temp_file_lands_in_given_dir() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = fetcher(100)
            .fetch_to_temp_in(&ResourceSpec::url("data:,xyz"), dir.path())
            .unwrap();
        assert_eq!(tmp.path().parent().unwrap(), dir.path());
        assert_eq!(std::fs::read(tmp.path()).unwrap(), b"xyz");
    }
}
