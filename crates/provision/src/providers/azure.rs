//! Azure IMDS user data: `GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text`
//! with `Metadata: true`; the body is base64.
//!
//! Ignition itself reads Azure *custom data* from the provisioning CD-ROM (OVF) and only falls
//! back to IMDS; we read IMDS `userData` only (mounting the CD is a later first-boot unit).

use base64::Engine as _;

use super::aws::read_userdata;
use super::{LINK_LOCAL_METADATA, Provider, ProviderError, join, userdata_to_config};
use crate::http::HttpClient;

/// The IMDS path and query we use.
pub const AZURE_USERDATA_PATH: &str =
    "/metadata/instance/compute/userData?api-version=2021-01-01&format=text";

/// Reads Azure IMDS `userData`.
#[derive(Debug, Clone)]
pub struct AzureProvider {
    /// IMDS base URL (`http://169.254.169.254`).
    pub base_url: String,
    /// HTTP client with the stage's retry policy.
    pub http: HttpClient,
}

impl AzureProvider {
    /// Provider against the real IMDS address.
    pub fn new(http: HttpClient) -> Self {
        AzureProvider {
            base_url: LINK_LOCAL_METADATA.into(),
            http,
        }
    }
}

impl Provider for AzureProvider {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        let url = join(&self.base_url, AZURE_USERDATA_PATH);
        let resp = self
            .http
            .send("GET", &url, |c| c.get(&url).header("Metadata", "true"))
            .map_err(|source| ProviderError::Http {
                provider: "azure",
                error: source,
            })?;
        // read_userdata classifies raw bytes; here the bytes are base64 first.
        let Some(encoded) = read_userdata_raw(&url, resp)? else {
            return Ok(None);
        };
        let compact: Vec<u8> = encoded
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&compact)
            .map_err(|e| ProviderError::BadResponse {
                provider: "azure",
                url: url.clone(),
                reason: format!("userData is not base64: {e}"),
            })?;
        Ok(userdata_to_config("azure", decoded))
    }
}

fn read_userdata_raw(
    url: &str,
    resp: reqwest::blocking::Response,
) -> Result<Option<Vec<u8>>, ProviderError> {
    // Reuse the status handling, but keep empty/foreign detection for after decoding: an
    // empty body classifies as Empty (None) either way.
    read_userdata("azure", url, resp)
}
