//! The Omaha client: update checks and event reports as update_engine sends them, over
//! reqwest (rustls), using keelson-omaha's request and response types.

use keelson_omaha::{
    ErrorCode, Event, EventResult, EventType, Limits, Os, Ping, Request, RequestApp, Response,
    UpdateCheck, UpdateStatus, valid_reason,
};

use crate::state::{Answer, ExtensionPackage, Report, Target};

/// The client's name and version in requests.
pub const CLIENT_VERSION: &str = concat!("keelson-agent-", env!("CARGO_PKG_VERSION"));

/// A check or report failed; each variant has a reason slug for `status`.
#[derive(Debug, thiserror::Error)]
pub enum OmahaError {
    /// The request did not get an HTTP answer.
    #[error("POST {url}: {message}")]
    Network {
        /// The endpoint.
        url: String,
        /// reqwest's message.
        message: String,
    },
    /// The server answered with an HTTP error.
    #[error("POST {url}: HTTP {status}")]
    Http {
        /// The endpoint.
        url: String,
        /// The status.
        status: u16,
    },
    /// The response is not an Omaha response we can use.
    #[error("response from {url}: {message}")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// What is wrong.
        message: String,
    },
}

impl OmahaError {
    /// A short stable slug.
    pub fn reason(&self) -> &'static str {
        match self {
            OmahaError::Network { .. } => "network",
            OmahaError::Http { .. } => "http_error",
            OmahaError::BadResponse { .. } => "bad_response",
        }
    }

    /// Whether the server asked for backoff (HTTP 500 / 503, as update_engine treats them).
    pub fn server_busy(&self) -> bool {
        matches!(
            self,
            OmahaError::Http {
                status: 500 | 503,
                ..
            }
        )
    }
}

/// Who is asking: the fields update_engine fills into `<app>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// App id.
    pub app_id: String,
    /// Running version.
    pub version: String,
    /// Group (`track`).
    pub track: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// The boot id, in braces.
    pub boot_id: String,
    /// `amd64-usr` or `arm64-usr`.
    pub board: String,
}

/// The answer to a check, with the server's `PollInterval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Update or not.
    pub answer: Answer,
    /// Seconds until the next check, if the server set it.
    pub poll_interval: Option<u32>,
}

fn app(identity: &Identity) -> RequestApp {
    RequestApp {
        app_id: identity.app_id.clone(),
        version: Some(identity.version.clone()),
        track: Some(identity.track.clone()),
        boot_id: Some(identity.boot_id.clone()),
        machine_id: Some(identity.machine_id.clone()),
        machine_alias: Some(String::new()),
        lang: Some("en-US".to_owned()),
        board: Some(identity.board.clone()),
        hardware_class: Some(String::new()),
        delta_okay: Some(false),
        ..RequestApp::default()
    }
}

fn request(identity: &Identity, install_source: &str, app: RequestApp) -> Request {
    Request {
        version: Some(CLIENT_VERSION.to_owned()),
        updater_version: Some(CLIENT_VERSION.to_owned()),
        install_source: Some(install_source.to_owned()),
        is_machine: Some(true),
        os: Some(Os {
            version: Some("Chateau".to_owned()),
            platform: Some("Keelson".to_owned()),
            service_pack: Some(format!("{}_{}", identity.version, std::env::consts::ARCH)),
            arch: None,
        }),
        apps: vec![app],
        ..Request::default()
    }
}

/// An update check: ping + updatecheck + the 3/2 previous-version event (`""`: a real
/// previous version goes out as its own report once the boot is blessed).
pub fn check_request(identity: &Identity, on_demand: bool) -> Request {
    let mut a = app(identity);
    a.ping = Some(Ping {
        active: Some(true),
        ..Ping::default()
    });
    a.update_check = Some(UpdateCheck::default());
    a.events = vec![Event {
        event_type: EventType::UpdateComplete,
        event_result: EventResult::SuccessReboot,
        error_code: None,
        previous_version: Some(String::new()),
        reason: None,
    }];
    let source = if on_demand {
        "ondemandupdate"
    } else {
        "scheduler"
    };
    request(identity, source, a)
}

/// The reason slug a rollback report carries (the boot of the new version was never blessed).
pub const ROLLBACK_REASON: &str = "boot_not_blessed";

/// The Omaha event for a report. Failures carry their reason slug in Keelson's extra
/// `keelson_reason` attribute, so the server's instance page shows why.
pub fn event_of(report: &Report) -> Event {
    let ev = |t, r, code: Option<u32>, prev: Option<&str>| Event {
        event_type: t,
        event_result: r,
        error_code: code.map(ErrorCode),
        previous_version: prev.map(str::to_owned),
        reason: None,
    };
    match report {
        Report::DownloadStarted { .. } => ev(
            EventType::UpdateDownloadStarted,
            EventResult::Success,
            None,
            None,
        ),
        Report::Downloaded { .. } => ev(
            EventType::UpdateDownloadFinished,
            EventResult::Success,
            None,
            None,
        ),
        Report::Installed { .. } => ev(EventType::UpdateComplete, EventResult::Success, None, None),
        Report::Complete {
            previous_version, ..
        } => ev(
            EventType::UpdateComplete,
            EventResult::SuccessReboot,
            None,
            Some(previous_version),
        ),
        Report::Rollback { .. } => Event {
            reason: Some(ROLLBACK_REASON.to_owned()),
            ..ev(
                EventType::UpdateComplete,
                EventResult::Error,
                Some(ErrorCode::ROLLBACK.0),
                None,
            )
        },
        Report::Failure { code, reason, .. } => Event {
            // A slug the server would drop is not sent at all.
            reason: Some(reason.clone()).filter(|r| valid_reason(r)),
            ..ev(
                EventType::UpdateComplete,
                EventResult::Error,
                Some(*code),
                None,
            )
        },
    }
}

/// An event-only request for a report.
pub fn event_request(identity: &Identity, report: &Report) -> Request {
    let mut a = app(identity);
    a.events = vec![event_of(report)];
    request(identity, "scheduler", a)
}

/// Reads the answer for `app_id` from a response.
pub fn answer_from(response: &Response, url: &str) -> Result<CheckOutcome, OmahaError> {
    let bad = |message: String| OmahaError::BadResponse {
        url: url.to_owned(),
        message,
    };
    let app = response
        .apps
        .first()
        .ok_or_else(|| bad("no <app>".into()))?;
    let uc = app.update_check.as_ref().ok_or_else(|| {
        bad(format!(
            "app status {:?}, no <updatecheck>",
            app.status.as_str()
        ))
    })?;
    let poll_interval = uc.poll_interval;
    let answer = match &uc.status {
        UpdateStatus::NoUpdate => Answer::NoUpdate,
        UpdateStatus::Error(s) => return Err(bad(format!("updatecheck status {s:?}"))),
        UpdateStatus::Ok => {
            let m = uc
                .manifest
                .as_ref()
                .ok_or_else(|| bad("updatecheck ok without <manifest>".into()))?;
            let pkg = m
                .packages
                .first()
                .ok_or_else(|| bad("no <package>".into()))?;
            let base = uc.urls.first().ok_or_else(|| bad("no <url>".into()))?;
            let sha256 = m
                .actions
                .iter()
                .find(|a| a.event == "postinstall")
                .and_then(|a| a.sha256.clone())
                .ok_or_else(|| bad("no postinstall action with sha256".into()))?;
            if pkg.size == 0 {
                return Err(bad(format!("package {} has size 0", pkg.name)));
            }
            let join = |name: &str| {
                if base.ends_with('/') {
                    format!("{base}{name}")
                } else {
                    format!("{base}/{name}")
                }
            };
            // The extra packages `{name}.raw` are extensions built for this version; others
            // (or ones without a hex sha256) are not ours and are skipped.
            let extensions = m.packages[1..]
                .iter()
                .filter_map(|p| {
                    let name = p.name.strip_suffix(".raw")?;
                    let sha256 = p.hash_sha256_hex.clone()?;
                    Some(ExtensionPackage {
                        name: name.to_owned(),
                        url: join(&p.name),
                        size: p.size,
                        sha256: sha256.to_ascii_lowercase(),
                    })
                })
                .collect();
            Answer::Offer(Target {
                version: m.version.clone(),
                url: join(&pkg.name),
                size: pkg.size,
                sha256,
                extensions,
            })
        }
    };
    Ok(CheckOutcome {
        answer,
        poll_interval,
    })
}

/// An Omaha endpoint and the identity to speak to it with.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    identity: Identity,
}

impl Client {
    /// A client for the endpoint `url`.
    pub fn new(http: reqwest::Client, url: &str, identity: Identity) -> Client {
        Client {
            http,
            url: url.to_owned(),
            identity,
        }
    }

    /// The identity sent.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    async fn post(&self, request: &Request) -> Result<Response, OmahaError> {
        let r = self
            .http
            .post(&self.url)
            .header("content-type", "text/xml")
            .body(request.to_xml())
            .send()
            .await
            .map_err(|e| OmahaError::Network {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        let status = r.status();
        if !status.is_success() {
            return Err(OmahaError::Http {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        let body = r.bytes().await.map_err(|e| OmahaError::Network {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        Response::parse(&body, &Limits::default()).map_err(|e| OmahaError::BadResponse {
            url: self.url.clone(),
            message: e.to_string(),
        })
    }

    /// One update check.
    pub async fn check(&self, on_demand: bool) -> Result<CheckOutcome, OmahaError> {
        let response = self.post(&check_request(&self.identity, on_demand)).await?;
        answer_from(&response, &self.url)
    }

    /// One event-only report.
    pub async fn report(&self, report: &Report) -> Result<(), OmahaError> {
        self.post(&event_request(&self.identity, report))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use keelson_omaha::{ResponseApp, UpdateOffer};

    fn id() -> Identity {
        Identity {
            app_id: keelson_omaha::FLATCAR_APP_ID.into(),
            version: "1.0.0".into(),
            track: "stable".into(),
            machine_id: "m1".into(),
            boot_id: "{b1}".into(),
            board: "amd64-usr".into(),
        }
    }

    #[test]
    fn check_request_parses_as_update_engine_s() {
        let xml = check_request(&id(), false).to_xml();
        let r = Request::parse(xml.as_bytes(), &Limits::default()).unwrap();
        let a = &r.apps[0];
        assert_eq!(a.track.as_deref(), Some("stable"));
        assert_eq!(a.machine_id.as_deref(), Some("m1"));
        assert!(a.ping.is_some() && a.update_check.is_some());
        assert_eq!(a.events[0].previous_version.as_deref(), Some(""));
        assert!(!a.events[0].is_update_success());
        assert_eq!(r.install_source.as_deref(), Some("scheduler"));
    }

    #[test]
    fn reports_map_to_update_engine_events() {
        let rollback = event_of(&Report::Rollback {
            version: "2".into(),
            running_version: "1".into(),
        });
        assert!(rollback.is_rollback());
        assert_eq!(rollback.reason.as_deref(), Some(ROLLBACK_REASON));
        let failed = event_request(
            &id(),
            &Report::Failure {
                version: Some("2".into()),
                code: 10,
                reason: "esp_full".into(),
            },
        );
        let xml = failed.to_xml();
        assert!(xml.contains(r#"keelson_reason="esp_full""#), "{xml}");
        let back = Request::parse(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(back.apps[0].events[0].reason.as_deref(), Some("esp_full"));
        let odd = event_of(&Report::Failure {
            version: None,
            code: 10,
            reason: "Not A Slug".into(),
        });
        assert_eq!(odd.reason, None);
        let done = event_of(&Report::Complete {
            version: "2".into(),
            previous_version: "1".into(),
        });
        assert!(done.is_update_success());
        assert_eq!(done.reason, None);
        let started = event_of(&Report::DownloadStarted {
            version: "2".into(),
        });
        assert_eq!(
            (started.event_type.code(), started.event_result.code()),
            (13, 1)
        );
        let req = event_request(
            &id(),
            &Report::Installed {
                version: "2".into(),
            },
        );
        assert!(req.apps[0].update_check.is_none() && req.apps[0].ping.is_none());
    }

    #[test]
    fn offers_and_no_updates_are_read() {
        let offer = UpdateOffer {
            version: "2.0.0".into(),
            urls: vec!["http://s/packages/7/".into()],
            package_name: "keelson_2.0.0.payload".into(),
            size: 1234,
            sha256: [1; 32],
            sha1: None,
            extra_packages: vec![],
        };
        let resp = Response::new(vec![ResponseApp::update("x", true, 1, &offer)]);
        let got = answer_from(&resp, "u").unwrap();
        let Answer::Offer(t) = got.answer else {
            panic!()
        };
        assert_eq!(t.url, "http://s/packages/7/keelson_2.0.0.payload");
        assert_eq!(t.size, 1234);
        assert!(t.extensions.is_empty());
        let with_ext = UpdateOffer {
            extra_packages: vec![keelson_omaha::Package {
                name: "jq.raw".into(),
                hash_sha1: None,
                hash_sha256_hex: Some("AB".repeat(32)),
                size: 99,
                required: false,
            }],
            ..offer.clone()
        };
        let resp = Response::new(vec![ResponseApp::update("x", true, 1, &with_ext)]);
        let Answer::Offer(t) = answer_from(&resp, "u").unwrap().answer else {
            panic!()
        };
        assert_eq!(
            t.extensions,
            vec![ExtensionPackage {
                name: "jq".into(),
                url: "http://s/packages/7/jq.raw".into(),
                size: 99,
                sha256: "ab".repeat(32),
            }]
        );
        let resp = Response::new(vec![ResponseApp::no_update("x", true, 1)]);
        assert_eq!(answer_from(&resp, "u").unwrap().answer, Answer::NoUpdate);
        let resp = Response::new(vec![]);
        assert_eq!(
            answer_from(&resp, "u").unwrap_err().reason(),
            "bad_response"
        );
    }
}
