//! HTTP with Ignition's retry semantics: retry on connection errors and 5xx with exponential
//! backoff, treat any response below 500 as final, give up when the stage deadline passes.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};

/// The version string we send in `User-Agent` and `Accept`.
pub const USER_AGENT: &str = concat!("keelson-provision/", env!("CARGO_PKG_VERSION"));

/// `Accept` header Ignition sends when fetching configs and resources.
pub const ACCEPT: &str = "application/vnd.coreos.ignition+json;version=3.6.0, */*;q=0.1";

/// Errors of an HTTP exchange after all retries.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The HTTP client could not be built (TLS backend).
    #[error("building HTTP client: {0}")]
    Client(reqwest::Error),
    /// A proxy URL or CA bundle from the config is unusable.
    #[error("{what}: {reason}")]
    Settings {
        /// Which setting.
        what: String,
        /// Why.
        reason: String,
    },
    /// Every attempt failed with a retryable error until the deadline or attempt limit.
    #[error(
        "{method} {url}: gave up after {attempts} attempt(s) in {elapsed:?}; last error: {last}"
    )]
    GaveUp {
        /// HTTP method.
        method: String,
        /// URL requested.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// Description of the last failure.
        last: String,
    },
    /// A non-retryable status (4xx, or 3xx left unfollowed) the caller did not accept.
    #[error("{method} {url}: HTTP status {status}")]
    Status {
        /// HTTP method.
        method: String,
        /// URL requested.
        url: String,
        /// Status code.
        status: u16,
    },
}

/// How often and how long to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First delay between attempts (Ignition: 200 ms).
    pub initial_delay: Duration,
    /// Upper bound of the doubling delay (Ignition: 5 s).
    pub max_delay: Duration,
    /// Give up after this much time in total (the stage timeout); `None` = never.
    pub total: Option<Duration>,
    /// Give up after this many attempts; `None` = unlimited (bounded by `total`).
    pub max_attempts: Option<u32>,
    /// Time allowed to connect and to receive response headers for one attempt.
    pub response_headers_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            total: Some(Duration::from_secs(300)),
            max_attempts: None,
            response_headers_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The policy for a config's `ignition.timeouts` (seconds; 0 = no limit, as Ignition).
    pub fn from_timeouts(response_headers: Option<i64>, total: Option<i64>) -> Self {
        let mut p = RetryPolicy::default();
        match response_headers {
            Some(0) => p.response_headers_timeout = Duration::from_secs(24 * 3600),
            Some(s) if s > 0 => p.response_headers_timeout = Duration::from_secs(s.unsigned_abs()),
            _ => {}
        }
        match total {
            Some(s) if s > 0 => p.total = Some(Duration::from_secs(s.unsigned_abs())),
            Some(0) => p.total = None,
            _ => {}
        }
        p
    }

    /// A fast policy for tests and local sources: short delays, few attempts.
    pub fn quick(attempts: u32) -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            total: Some(Duration::from_secs(20)),
            max_attempts: Some(attempts),
            response_headers_timeout: Duration::from_secs(5),
        }
    }

    /// Delay before attempt `n + 1` (n starts at 1): doubling from `initial_delay`, capped.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Proxy and trust settings from the config's `ignition` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSettings {
    /// Proxy for `http:` URLs.
    pub http_proxy: Option<String>,
    /// Proxy for `https:` URLs.
    pub https_proxy: Option<String>,
    /// Hosts that bypass the proxies (reqwest's `NO_PROXY` syntax, as Ignition's).
    pub no_proxy: Vec<String>,
    /// Extra trusted CAs, each a PEM bundle, added to the built-in roots.
    pub ca_bundles: Vec<Vec<u8>>,
}

/// A blocking HTTP client plus its retry policy.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client,
    policy: RetryPolicy,
    network: Option<Arc<NetworkOnce>>,
}

/// Brings the network up; run once, before the first request of any client sharing it.
type NetworkHook = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

struct NetworkOnce {
    hook: NetworkHook,
    done: OnceLock<()>,
}

impl std::fmt::Debug for NetworkOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkOnce")
            .field("done", &self.done.get().is_some())
            .finish()
    }
}

impl NetworkOnce {
    fn ensure(&self) {
        self.done.get_or_init(|| {
            // Not fatal: without a network the request itself fails, with its own reason
            // (and the retries Ignition's semantics ask for).
            if let Err(reason) = (self.hook)() {
                tracing::warn!(%reason, "bringing the network up failed; trying anyway");
            }
        });
    }
}

impl HttpClient {
    /// Build a client; bodies may stream for as long as they need, only connecting is bounded.
    pub fn new(policy: RetryPolicy) -> Result<Self, HttpError> {
        Self::with_settings(policy, &HttpSettings::default())
    }

    /// Build a client with proxies and extra CAs. Without an explicit proxy, the usual
    /// `http_proxy`/`https_proxy` environment variables still apply (reqwest's default).
    pub fn with_settings(policy: RetryPolicy, settings: &HttpSettings) -> Result<Self, HttpError> {
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(policy.response_headers_timeout)
            .timeout(None);
        let no_proxy = reqwest::NoProxy::from_string(&settings.no_proxy.join(","));
        let proxies = [
            (settings.http_proxy.as_deref(), false),
            (settings.https_proxy.as_deref(), true),
        ];
        for (url, https) in proxies {
            let Some(url) = url else { continue };
            let proxy = if https {
                reqwest::Proxy::https(url)
            } else {
                reqwest::Proxy::http(url)
            }
            .map_err(|e| HttpError::Settings {
                what: format!("proxy {url}"),
                reason: describe(&e),
            })?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        for (i, pem) in settings.ca_bundles.iter().enumerate() {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| HttpError::Settings {
                    what: format!("certificateAuthorities[{i}]"),
                    reason: describe(&e),
                })?;
            if certs.is_empty() {
                return Err(HttpError::Settings {
                    what: format!("certificateAuthorities[{i}]"),
                    reason: "no PEM certificate in the bundle".into(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(HttpError::Client)?;
        Ok(HttpClient {
            client,
            policy,
            network: None,
        })
    }

    /// Run `hook` once, before the first request this client (or a clone, or a client made
    /// by [`HttpClient::reconfigured`]) sends. The initrd brings its network up this way only
    /// when provisioning really fetches something, so boots that need none never wait for it.
    pub fn with_network_hook(
        mut self,
        hook: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.network = Some(Arc::new(NetworkOnce {
            hook: Box::new(hook),
            done: OnceLock::new(),
        }));
        self
    }

    /// A client with other settings (the config's proxies, CAs and timeouts) that shares this
    /// one's network hook.
    pub fn reconfigured(
        &self,
        policy: RetryPolicy,
        settings: &HttpSettings,
    ) -> Result<Self, HttpError> {
        Ok(HttpClient {
            network: self.network.clone(),
            ..Self::with_settings(policy, settings)?
        })
    }

    /// The retry policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The underlying client, to build requests for [`HttpClient::send`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Send the request built by `build` until it yields a response with status < 500.
    /// Connection errors and 5xx are retried with backoff; anything else is returned as is.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        self.retry(method, url, |_| match build(&self.client).send() {
            Ok(resp) if resp.status().is_server_error() => {
                Err(format!("HTTP status {}", resp.status().as_u16()))
            }
            Ok(resp) => Ok(resp),
            Err(e) => Err(describe(&e)),
        })
    }

    /// Run `attempt` until it returns `Ok`, retrying its `Err(description)` with backoff.
    pub fn retry<T>(
        &self,
        method: &str,
        url: &str,
        mut attempt: impl FnMut(u32) -> Result<T, String>,
    ) -> Result<T, HttpError> {
        if let Some(network) = &self.network {
            network.ensure();
        }
        let start = Instant::now();
        let mut n = 0u32;
        loop {
            n += 1;
            match attempt(n) {
                Ok(v) => return Ok(v),
                Err(last) => {
                    let delay = self.policy.delay_after(n);
                    let out_of_attempts = self.policy.max_attempts.is_some_and(|max| n >= max);
                    let out_of_time = self
                        .policy
                        .total
                        .is_some_and(|total| start.elapsed() + delay > total);
                    if out_of_attempts || out_of_time {
                        return Err(HttpError::GaveUp {
                            method: method.to_string(),
                            url: url.to_string(),
                            attempts: n,
                            elapsed: start.elapsed(),
                            last,
                        });
                    }
                    tracing::warn!(%url, attempt = n, error = %last, ?delay, "retrying");
                    std::thread::sleep(delay);
                }
            }
        }
    }
}

/// A reqwest error with its source chain, which is where the useful part usually is.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        let got: Vec<u64> = (1..=7)
            .map(|n| p.delay_after(n).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.delay_after(100), Duration::from_secs(5));
    }

    #[test]
    fn retry_gives_up_after_max_attempts_and_reports_last_error() {
        let http = HttpClient::new(RetryPolicy::quick(3)).unwrap();
        let mut calls = 0;
        let err = http
            .retry("GET", "http://x/", |n| {
                calls += 1;
                Err::<(), _>(format!("fail {n}"))
            })
            .unwrap_err();
        assert_eq!(calls, 3);
        let msg = err.to_string();
        assert!(
            msg.contains("3 attempt(s)") && msg.contains("fail 3"),
            "{msg}"
        );
    }

    #[test]
    fn timeouts_from_config() {
        let p = RetryPolicy::from_timeouts(Some(3), Some(60));
        assert_eq!(p.response_headers_timeout, Duration::from_secs(3));
        assert_eq!(p.total, Some(Duration::from_secs(60)));
        assert_eq!(RetryPolicy::from_timeouts(None, Some(0)).total, None);
        assert_eq!(
            RetryPolicy::from_timeouts(None, None).total,
            RetryPolicy::default().total
        );
    }

    #[test]
    fn retry_returns_first_success() {
        let http = HttpClient::new(RetryPolicy::quick(5)).unwrap();
        let v = http
            .retry("GET", "u", |n| if n < 3 { Err("no".into()) } else { Ok(n) })
            .unwrap();
        assert_eq!(v, 3);
    }
}
