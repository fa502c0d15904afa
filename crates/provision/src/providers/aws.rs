//! AWS EC2 instance metadata, IMDSv2: `PUT /latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds`, then `GET /latest/user-data` with
//! `X-aws-ec2-metadata-token`. 404 on user-data means the instance has none.

use super::{LINK_LOCAL_METADATA, Provider, ProviderError, join, userdata_to_config};
use crate::http::{HttpClient, HttpError};

/// Token lifetime we ask for (seconds); we only need it for one request.
const TOKEN_TTL: &str = "300";

/// Reads EC2 user data through IMDSv2 (IMDSv1 only if the token endpoint does not exist).
#[derive(Debug, Clone)]
pub struct AwsProvider {
    /// Metadata base URL (`http://169.254.169.254`).
    pub base_url: String,
    /// HTTP client with the stage's retry policy.
    pub http: HttpClient,
}

impl AwsProvider {
    /// Provider against the real metadata address.
    pub fn new(http: HttpClient) -> Self {
        AwsProvider {
            base_url: LINK_LOCAL_METADATA.into(),
            http,
        }
    }

    fn http_err(source: HttpError) -> ProviderError {
        ProviderError::Http {
            provider: "aws",
            error: source,
        }
    }

    fn token(&self) -> Result<Option<String>, ProviderError> {
        let url = join(&self.base_url, "/latest/api/token");
        let resp = self
            .http
            .send("PUT", &url, |c| {
                c.put(&url)
                    .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)
            })
            .map_err(Self::http_err)?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            // No token service (old IMDS, or IMDSv2 disabled): fall back to IMDSv1 as
            // Afterburn does.
            403..=405 => {
                tracing::warn!(status, "IMDSv2 token unavailable, falling back to IMDSv1");
                return Ok(None);
            }
            _ => {
                return Err(Self::http_err(HttpError::Status {
                    method: "PUT".into(),
                    url,
                    status,
                }));
            }
        }
        let token = resp.text().map_err(|e| ProviderError::BadResponse {
            provider: "aws",
            url: url.clone(),
            reason: format!("reading token: {}", crate::http::describe(&e)),
        })?;
        if token.trim().is_empty() {
            return Err(ProviderError::BadResponse {
                provider: "aws",
                url,
                reason: "empty IMDSv2 token".into(),
            });
        }
        Ok(Some(token.trim().to_string()))
    }
}

impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn fetch_config(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        let token = self.token()?;
        let url = join(&self.base_url, "/latest/user-data");
        let resp = self
            .http
            .send("GET", &url, |c| {
                let req = c.get(&url);
                match &token {
                    Some(t) => req.header("X-aws-ec2-metadata-token", t),
                    None => req,
                }
            })
            .map_err(Self::http_err)?;
        read_userdata("aws", &url, resp)
    }
}

/// Shared tail of the metadata providers: 404 = none, 200 = body, anything else = error.
pub(crate) fn read_userdata(
    provider: &'static str,
    url: &str,
    resp: reqwest::blocking::Response,
) -> Result<Option<Vec<u8>>, ProviderError> {
    let status = resp.status().as_u16();
    if status == 404 {
        tracing::info!(provider, "no user data");
        return Ok(None);
    }
    if status != 200 {
        return Err(ProviderError::Http {
            provider,
            error: HttpError::Status {
                method: "GET".into(),
                url: url.into(),
                status,
            },
        });
    }
    let body = resp.bytes().map_err(|e| ProviderError::BadResponse {
        provider,
        url: url.into(),
        reason: format!("reading body: {}", crate::http::describe(&e)),
    })?;
    Ok(userdata_to_config(provider, body.to_vec()))
}
