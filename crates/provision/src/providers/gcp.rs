//! GCP metadata server: `GET /computeMetadata/v1/instance/attributes/user-data` with
//! `Metadata-Flavor: Google`; a genuine answer carries `Metadata-Flavor: Google` too.

use super::aws::read_userdata;
use super::{GCP_METADATA, Provider, ProviderError, join};
use crate::http::HttpClient;

/// Reads the `user-data` instance attribute.
#[derive(Debug, Clone)]
pub struct GcpProvider {
    /// Metadata base URL (`http://metadata.google.internal`).
    pub base_url: String,
    /// HTTP client with the stage's retry policy.
    pub http: HttpClient,
}

impl GcpProvider {
    /// Provider against the real metadata server.
    pub fn new(http: HttpClient) -> Self {
        GcpProvider {
            base_url: GCP_METADATA.into(),
            http,
        }
    }
}

impl Provider for GcpProvider {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        let url = join(
            &self.base_url,
            "/computeMetadata/v1/instance/attributes/user-data",
        );
        let resp = self
            .http
            .send("GET", &url, |c| {
                c.get(&url).header("Metadata-Flavor", "Google")
            })
            .map_err(|source| ProviderError::Http {
                provider: "gcp",
                error: source,
            })?;
        // Anything without the flavor header is not the metadata server (a captive portal or
        // a proxy answering for it): do not trust its body, not even its 404.
        let flavor = resp
            .headers()
            .get("Metadata-Flavor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if flavor.as_deref() != Some("Google") {
            return Err(ProviderError::BadResponse {
                provider: "gcp",
                url,
                reason: format!(
                    "response lacks 'Metadata-Flavor: Google' (got {flavor:?}); not the GCP metadata server"
                ),
            });
        }
        read_userdata("gcp", &url, resp)
    }
}
