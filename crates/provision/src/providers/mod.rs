//! Where the config comes from: a [`Provider`] returns the raw config bytes, or `None` when
//! the platform has no config for this machine (the engine then applies an empty config).

use std::path::PathBuf;

use crate::fetch::FetchError;
use crate::http::HttpError;

mod aws;
mod azure;
mod cmdline;
mod file;
mod fwcfg;
mod gcp;
mod openstack;

pub use aws::AwsProvider;
pub use azure::AzureProvider;
pub(crate) use cmdline::split_cmdline;
pub use cmdline::{CMDLINE_URL_KEYS, CmdlineProvider, cmdline_value};
pub use file::FileProvider;
pub use fwcfg::{FW_CFG_KEYS, FwCfgProvider};
pub use gcp::GcpProvider;
pub use openstack::OpenStackProvider;

/// Link-local metadata address used by AWS, Azure and OpenStack.
pub const LINK_LOCAL_METADATA: &str = "http://169.254.169.254";

/// GCP's metadata server.
pub const GCP_METADATA: &str = "http://metadata.google.internal";

/// Why a provider could not say whether there is a config.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Reading a local file (config file, fw_cfg blob) failed.
    #[error("{provider}: reading {path}: {error}")]
    Read {
        /// Provider name.
        provider: &'static str,
        /// File read.
        path: PathBuf,
        /// I/O error.
        error: std::io::Error,
    },
    /// HTTP failure after retries, or a status the service does not use for "no config".
    #[error("{provider}: {error}")]
    Http {
        /// Provider name.
        provider: &'static str,
        /// The HTTP error.
        error: HttpError,
    },
    /// Fetching the URL named on the kernel command line failed.
    #[error("{provider}: fetching {key} from the kernel command line: {error}")]
    Fetch {
        /// Provider name.
        provider: &'static str,
        /// Command-line key that named the URL.
        key: String,
        /// Fetch error (boxed: it is large and rare).
        error: Box<FetchError>,
    },
    /// The service answered, but not as that service would.
    #[error("{provider}: {url}: {reason}")]
    BadResponse {
        /// Provider name.
        provider: &'static str,
        /// URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// A source of the raw config.
pub trait Provider {
    /// Short name for logs and errors (`aws`, `qemu`, ...).
    fn name(&self) -> &'static str;
    /// The raw config, `None` if this machine has none.
    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError>;
}

/// What user data turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Userdata {
    /// Nothing, or whitespace only.
    Empty,
    /// Data meant for another agent (`#cloud-config`, a `#!` script, MIME multipart); like
    /// Flatcar we treat it as "no Ignition config" instead of failing the boot.
    Foreign(&'static str),
    /// A candidate config (gunzipped if it was gzip).
    Config(Vec<u8>),
}

/// Classify cloud user data the way Flatcar's Ignition does.
pub fn classify_userdata(raw: Vec<u8>) -> Userdata {
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read as _;
        let mut out = Vec::new();
        let limit = crate::fetch::DEFAULT_MAX_SIZE;
        match flate2::read::GzDecoder::new(&raw[..])
            .take(limit)
            .read_to_end(&mut out)
        {
            Ok(_) => out,
            // Not really gzip: let the config parser report it.
            Err(_) => raw,
        }
    } else {
        raw
    };
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let trimmed = &data[start..];
    if trimmed.is_empty() {
        return Userdata::Empty;
    }
    if trimmed.starts_with(b"#cloud-config") {
        return Userdata::Foreign("cloud-config");
    }
    if trimmed.starts_with(b"#!") {
        return Userdata::Foreign("script");
    }
    let head = String::from_utf8_lossy(&trimmed[..trimmed.len().min(1024)]).to_ascii_lowercase();
    if head.starts_with("content-type: multipart/")
        || (head.starts_with("mime-version:") && head.contains("content-type: multipart/"))
    {
        return Userdata::Foreign("multipart MIME");
    }
    Userdata::Config(data)
}

/// Turn classified user data into the provider answer, logging why data was skipped.
pub(crate) fn userdata_to_config(provider: &'static str, raw: Vec<u8>) -> Option<Vec<u8>> {
    match classify_userdata(raw) {
        Userdata::Empty => {
            tracing::info!(provider, "user data is empty: no config");
            None
        }
        Userdata::Foreign(kind) => {
            tracing::warn!(
                provider,
                kind,
                "user data is not an Ignition config: ignoring it"
            );
            None
        }
        Userdata::Config(c) => Some(c),
    }
}

/// Join a base URL (no trailing slash needed) and an absolute path.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"  \n\t", "empty"),
            (b"#cloud-config\nusers: []", "cloud-config"),
            (b"\n#!/bin/sh\necho hi", "script"),
            (
                b"Content-Type: multipart/mixed; boundary=x\n\n--x",
                "multipart MIME",
            ),
            (
                b"MIME-Version: 1.0\nContent-Type: multipart/mixed; b=1",
                "multipart MIME",
            ),
            (br#"{"ignition":{"version":"3.6.0"}}"#, "config"),
        ];
        for (input, want) in cases {
            let got = match classify_userdata(input.to_vec()) {
                Userdata::Empty => "empty",
                Userdata::Foreign(k) => k,
                Userdata::Config(_) => "config",
            };
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn gzipped_userdata_is_unpacked_then_classified() {
        let gz = |d: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(
            classify_userdata(gz(b"{\"a\":1}")),
            Userdata::Config(b"{\"a\":1}".to_vec())
        );
        assert_eq!(
            classify_userdata(gz(b"#cloud-config\n")),
            Userdata::Foreign("cloud-config")
        );
    }
}
