//! OpenStack metadata service: `GET /openstack/latest/user_data`; 404 = no user data.
//! (The config drive is not read here.)

use super::aws::read_userdata;
use super::{LINK_LOCAL_METADATA, Provider, ProviderError, join};
use crate::http::HttpClient;

/// Reads OpenStack user data from the metadata service.
#[derive(Debug, Clone)]
pub struct OpenStackProvider {
    /// Metadata base URL (`http://169.254.169.254`).
    pub base_url: String,
    /// HTTP client with the stage's retry policy.
    pub http: HttpClient,
}

impl OpenStackProvider {
    /// Provider against the real metadata address.
    pub fn new(http: HttpClient) -> Self {
        OpenStackProvider {
            base_url: LINK_LOCAL_METADATA.into(),
            http,
        }
    }
}

impl Provider for OpenStackProvider {
    fn name(&self) -> &'static str {
        "openstack"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        let url = join(&self.base_url, "/openstack/latest/user_data");
        let resp = self
            .http
            .send("GET", &url, |c| c.get(&url))
            .map_err(|source| ProviderError::Http {
                provider: "openstack",
                error: source,
            })?;
        read_userdata("openstack", &url, resp)
    }
}
