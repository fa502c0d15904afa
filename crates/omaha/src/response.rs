//! The `<response>` a server sends back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::xml::{Element, Limits, Writer, parse_tree, truncate};
use crate::{Error, parse_bool, parse_u32, parse_u64};

/// A whole Omaha v3 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `protocol`: always `3.0`.
    pub protocol: String,
    /// `server`: the server's name (informational).
    pub server: Option<String>,
    /// `<daystart elapsed_seconds>`: seconds since local midnight on the server.
    pub daystart: Option<DayStart>,
    /// The `<app>` elements, one per requested app.
    pub apps: Vec<ResponseApp>,
}

/// `<daystart>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayStart {
    /// `elapsed_seconds`.
    pub elapsed_seconds: u64,
}

/// `app@status` (and similar status strings).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppStatus {
    /// `ok`.
    Ok,
    /// `restricted`.
    Restricted,
    /// `error-unknownApplication`.
    UnknownApplication,
    /// `error-invalidAppId`.
    InvalidAppId,
    /// `error-internal`.
    Internal,
    /// Any other `error-*` value, kept whole (e.g. `error-invalidVersion`).
    Other(String),
}

impl AppStatus {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ok => "ok",
            Self::Restricted => "restricted",
            Self::UnknownApplication => "error-unknownApplication",
            Self::InvalidAppId => "error-invalidAppId",
            Self::Internal => "error-internal",
            Self::Other(s) => s,
        }
    }

    /// The variant for wire text.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "ok" => Self::Ok,
            "restricted" => Self::Restricted,
            "error-unknownApplication" => Self::UnknownApplication,
            "error-invalidAppId" => Self::InvalidAppId,
            "error-internal" => Self::Internal,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// `updatecheck@status`: update_engine accepts only `ok` and `noupdate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpdateStatus {
    /// `ok`: an update follows.
    Ok,
    /// `noupdate`: nothing to do (also the answer when policy holds an update back).
    NoUpdate,
    /// `error-*`, kept whole. update_engine treats these as error 34 and reports a failure,
    /// so Keelson's server never sends them for policy decisions.
    Error(String),
}

impl UpdateStatus {
    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ok => "ok",
            Self::NoUpdate => "noupdate",
            Self::Error(s) => s,
        }
    }
}

/// One `<app>` in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseApp {
    /// `appid`, echoed from the request.
    pub app_id: String,
    /// `status`.
    pub status: AppStatus,
    /// `<ping status="ok">`, present when the request had a ping.
    pub ping: Option<String>,
    /// `<updatecheck>`, present when the request had one.
    pub update_check: Option<UpdateCheckResponse>,
    /// One `<event status="ok">` per event in the request, in order.
    pub events: Vec<String>,
}

/// `<updatecheck>` in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateCheckResponse {
    /// `status`.
    pub status: UpdateStatus,
    /// `PollInterval`: seconds until the next check, honoured by update_engine's scheduler.
    pub poll_interval: Option<u32>,
    /// `<urls><url codebase>`: base URLs; the package name is appended to each.
    pub urls: Vec<String>,
    /// `<manifest>`, required when the status is `ok`.
    pub manifest: Option<Manifest>,
}

/// `<manifest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `version`: the version offered (update_engine only displays it).
    pub version: String,
    /// `<packages><package>`: update_engine installs the first; others are sysexts.
    pub packages: Vec<Package>,
    /// `<actions><action>`: the `postinstall` action carries the payload's SHA-256.
    pub actions: Vec<Action>,
}

/// `<package>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `name`: file name appended to each codebase.
    pub name: String,
    /// `hash`: base64 SHA-1 (ignored by today's update_engine, filled in for old clients).
    pub hash_sha1: Option<String>,
    /// `hash_sha256`: hex SHA-256 (note: hex), used for the extra sysext packages.
    pub hash_sha256_hex: Option<String>,
    /// `size` in bytes; must be > 0 for the main payload.
    pub size: u64,
    /// `required`.
    pub required: bool,
}

/// `<action>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `event`: `postinstall` is the one update_engine needs.
    pub event: String,
    /// `sha256`: base64 SHA-256 of the whole payload file.
    pub sha256: Option<String>,
    /// `ChromeOSVersion` (legacy).
    pub chromeos_version: Option<String>,
    /// `DisablePayloadBackoff`: skip update_engine's multi-day download backoff.
    pub disable_payload_backoff: Option<bool>,
    /// `needsadmin` (ignored by update_engine).
    pub needs_admin: Option<bool>,
    /// `IsDeltaPayload`: Flatcar ships full payloads only.
    pub is_delta_payload: Option<bool>,
    /// `MetadataSize` (ignored).
    pub metadata_size: Option<u64>,
    /// `MetadataSignatureRsa` (ignored).
    pub metadata_signature_rsa: Option<String>,
    /// `MaxFailureCountPerUrl`: how often each URL may fail before the next one is tried.
    pub max_failure_count_per_url: Option<u32>,
}

/// What a server needs to offer an update; turned into the response update_engine accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOffer {
    /// Version offered.
    pub version: String,
    /// Base URLs (each should end in `/`; the package name is appended by the client).
    pub urls: Vec<String>,
    /// Payload file name.
    pub package_name: String,
    /// Payload size in bytes.
    pub size: u64,
    /// Raw SHA-256 of the payload file.
    pub sha256: [u8; 32],
    /// Raw SHA-1 of the payload file, if known (for old clients).
    pub sha1: Option<[u8; 20]>,
    /// Extra, optional packages (sysexts): (name, size, hex sha256).
    pub extra_packages: Vec<Package>,
}

impl Action {
    /// The `postinstall` action for a payload with this SHA-256, backoff disabled as Nebraska
    /// does by default.
    pub fn postinstall(sha256: &[u8; 32]) -> Self {
        Self {
            event: "postinstall".to_owned(),
            sha256: Some(BASE64.encode(sha256)),
            chromeos_version: None,
            disable_payload_backoff: Some(true),
            needs_admin: Some(false),
            is_delta_payload: Some(false),
            metadata_size: None,
            metadata_signature_rsa: None,
            max_failure_count_per_url: None,
        }
    }

    /// The decoded `sha256`, if present and 32 bytes of valid base64.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let raw = BASE64.decode(self.sha256.as_deref()?).ok()?;
        raw.try_into().ok()
    }
}

impl ResponseApp {
    /// An app answer with `noupdate`, acknowledging `events` events and a ping if `ping`.
    pub fn no_update(app_id: &str, ping: bool, events: usize) -> Self {
        Self {
            app_id: app_id.to_owned(),
            status: AppStatus::Ok,
            ping: ping.then(|| "ok".to_owned()),
            update_check: Some(UpdateCheckResponse {
                status: UpdateStatus::NoUpdate,
                poll_interval: None,
                urls: Vec::new(),
                manifest: None,
            }),
            events: vec!["ok".to_owned(); events],
        }
    }

    /// An app answer offering an update.
    pub fn update(app_id: &str, ping: bool, events: usize, offer: &UpdateOffer) -> Self {
        let mut packages = vec![Package {
            name: offer.package_name.clone(),
            hash_sha1: offer.sha1.map(|h| BASE64.encode(h)),
            hash_sha256_hex: None,
            size: offer.size,
            required: true,
        }];
        packages.extend(offer.extra_packages.iter().cloned());
        Self {
            app_id: app_id.to_owned(),
            status: AppStatus::Ok,
            ping: ping.then(|| "ok".to_owned()),
            update_check: Some(UpdateCheckResponse {
                status: UpdateStatus::Ok,
                poll_interval: None,
                urls: offer.urls.clone(),
                manifest: Some(Manifest {
                    version: offer.version.clone(),
                    packages,
                    actions: vec![Action::postinstall(&offer.sha256)],
                }),
            }),
            events: vec!["ok".to_owned(); events],
        }
    }

    /// An answer to an event-only request: just the acknowledgements.
    pub fn events_only(app_id: &str, events: usize) -> Self {
        Self {
            app_id: app_id.to_owned(),
            status: AppStatus::Ok,
            ping: None,
            update_check: None,
            events: vec!["ok".to_owned(); events],
        }
    }
}

impl Response {
    /// A response with the given apps, `server="keelson"`, daystart 0.
    pub fn new(apps: Vec<ResponseApp>) -> Self {
        Self {
            protocol: "3.0".to_owned(),
            server: Some("keelson".to_owned()),
            daystart: Some(DayStart { elapsed_seconds: 0 }),
            apps,
        }
    }

    /// Parses a response body, enforcing `limits` and what update_engine requires of an
    /// `ok` update check (see [`UpdateCheckResponse::validate`]).
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Self, Error> {
        let root = parse_tree(body, limits)?;
        if root.name != "response" {
            return Err(Error::UnexpectedRoot {
                expected: "response",
                found: root.name.clone(),
            });
        }
        let protocol = root.required("protocol")?;
        if protocol != "3.0" {
            return Err(Error::UnsupportedProtocol {
                path: root.path.clone(),
                value: truncate(protocol),
            });
        }
        let daystart = match root.child("daystart") {
            None => None,
            Some(d) => Some(DayStart {
                elapsed_seconds: d
                    .parsed("elapsed_seconds", "an unsigned integer", parse_u64)?
                    .unwrap_or(0),
            }),
        };
        let apps = root
            .children_named("app")
            .map(parse_app)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            protocol: protocol.to_owned(),
            server: root.attr("server").map(str::to_owned),
            daystart,
            apps,
        })
    }

    /// Serializes deterministically; Nebraska's element layout and attribute names.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new();
        w.open(
            "response",
            &[
                ("protocol", Some(self.protocol.as_str())),
                ("server", self.server.as_deref()),
            ],
        );
        if let Some(d) = &self.daystart {
            let s = d.elapsed_seconds.to_string();
            w.leaf("daystart", &[("elapsed_seconds", Some(s.as_str()))]);
        }
        for app in &self.apps {
            write_app(&mut w, app);
        }
        w.close("response");
        w.finish()
    }
}

impl UpdateCheckResponse {
    /// Checks what update_engine's `OmahaRequestAction::ParseResponse` requires of an `ok`
    /// answer (otherwise it fails with error 34): at least one URL, a manifest whose first
    /// package has a name and a size > 0, and a `postinstall` action with a 32-byte base64
    /// `sha256`. `path` names the element in errors.
    pub fn validate(&self, path: &str) -> Result<(), Error> {
        if self.status != UpdateStatus::Ok {
            return Ok(());
        }
        let missing = |element: &str| Error::MissingElement {
            path: path.to_owned(),
            element: element.to_owned(),
        };
        if self.urls.is_empty() {
            return Err(missing("urls/url"));
        }
        if let Some(i) = self.urls.iter().position(|u| u.is_empty()) {
            return Err(Error::InvalidAttribute {
                path: format!("{path}/urls[0]/url[{i}]"),
                attribute: "codebase".to_owned(),
                value: String::new(),
                expected: "a non-empty base URL",
            });
        }
        let manifest = self.manifest.as_ref().ok_or_else(|| missing("manifest"))?;
        let first = manifest
            .packages
            .first()
            .ok_or_else(|| missing("manifest/packages/package"))?;
        let pkg_path = format!("{path}/manifest[0]/packages[0]/package[0]");
        if first.name.is_empty() {
            return Err(Error::InvalidAttribute {
                path: pkg_path,
                attribute: "name".to_owned(),
                value: String::new(),
                expected: "a non-empty file name",
            });
        }
        if first.size == 0 {
            return Err(Error::InvalidAttribute {
                path: pkg_path,
                attribute: "size".to_owned(),
                value: "0".to_owned(),
                expected: "a size greater than 0",
            });
        }
        let action = manifest
            .actions
            .iter()
            .find(|a| a.event == "postinstall")
            .ok_or_else(|| missing("manifest/actions/action[@event=postinstall]"))?;
        if action.sha256_bytes().is_none() {
            return Err(Error::InvalidAttribute {
                path: format!("{path}/manifest[0]/actions[0]/action"),
                attribute: "sha256".to_owned(),
                value: truncate(action.sha256.as_deref().unwrap_or_default()),
                expected: "the base64 SHA-256 (32 bytes) of the payload",
            });
        }
        Ok(())
    }
}

fn parse_app(app: &Element) -> Result<ResponseApp, Error> {
    let app_id = app.required("appid")?;
    let update_check = match app.child("updatecheck") {
        None => None,
        Some(u) => Some(parse_update_check(u)?),
    };
    Ok(ResponseApp {
        app_id: app_id.to_owned(),
        // update_engine ignores app@status; a missing one reads as ok.
        status: app
            .attr("status")
            .map_or(AppStatus::Ok, AppStatus::from_wire),
        ping: app
            .child("ping")
            .map(|p| p.attr("status").unwrap_or("ok").to_owned()),
        update_check,
        events: app
            .children_named("event")
            .map(|e| e.attr("status").unwrap_or("ok").to_owned())
            .collect(),
    })
}

fn parse_update_check(u: &Element) -> Result<UpdateCheckResponse, Error> {
    let status = match u.required("status")? {
        "ok" => UpdateStatus::Ok,
        "noupdate" => UpdateStatus::NoUpdate,
        s if s.starts_with("error-") => UpdateStatus::Error(s.to_owned()),
        other => {
            return Err(Error::InvalidAttribute {
                path: u.path.clone(),
                attribute: "status".to_owned(),
                value: truncate(other),
                expected: "ok, noupdate or error-*",
            });
        }
    };
    let urls = u
        .children_named("urls")
        .flat_map(|urls| urls.children_named("url"))
        .map(|url| url.required("codebase").map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = match u.child("manifest") {
        None => None,
        Some(m) => Some(parse_manifest(m)?),
    };
    let check = UpdateCheckResponse {
        status,
        poll_interval: u.parsed("PollInterval", "seconds as an unsigned integer", parse_u32)?,
        urls,
        manifest,
    };
    check.validate(&u.path)?;
    Ok(check)
}

fn parse_manifest(m: &Element) -> Result<Manifest, Error> {
    let packages = m
        .children_named("packages")
        .flat_map(|p| p.children_named("package"))
        .map(|p| {
            Ok(Package {
                name: p.required("name")?.to_owned(),
                hash_sha1: p.attr("hash").map(str::to_owned),
                hash_sha256_hex: p.attr("hash_sha256").map(str::to_owned),
                size: p
                    .parsed("size", "a size in bytes", parse_u64)?
                    .ok_or_else(|| Error::MissingAttribute {
                        path: p.path.clone(),
                        attribute: "size".to_owned(),
                    })?,
                required: p
                    .parsed("required", "true or false", parse_bool)?
                    .unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let actions = m
        .children_named("actions")
        .flat_map(|a| a.children_named("action"))
        .map(|a| {
            Ok(Action {
                event: a.required("event")?.to_owned(),
                sha256: a.attr("sha256").map(str::to_owned),
                chromeos_version: a.attr("ChromeOSVersion").map(str::to_owned),
                disable_payload_backoff: a.parsed(
                    "DisablePayloadBackoff",
                    "true or false",
                    parse_bool,
                )?,
                needs_admin: a.parsed("needsadmin", "true or false", parse_bool)?,
                is_delta_payload: a.parsed("IsDeltaPayload", "true or false", parse_bool)?,
                metadata_size: a.parsed("MetadataSize", "a size in bytes", parse_u64)?,
                metadata_signature_rsa: a.attr("MetadataSignatureRsa").map(str::to_owned),
                max_failure_count_per_url: a.parsed(
                    "MaxFailureCountPerUrl",
                    "an unsigned integer",
                    parse_u32,
                )?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Manifest {
        // update_engine only displays the version, so a missing one is not an error.
        version: m.attr("version").unwrap_or_default().to_owned(),
        packages,
        actions,
    })
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn write_app(w: &mut Writer, app: &ResponseApp) {
    w.open(
        "app",
        &[
            ("appid", Some(app.app_id.as_str())),
            ("status", Some(app.status.as_str())),
        ],
    );
    if let Some(p) = &app.ping {
        w.leaf("ping", &[("status", Some(p.as_str()))]);
    }
    if let Some(u) = &app.update_check {
        let poll = u.poll_interval.map(|n| n.to_string());
        let attrs = [
            ("status", Some(u.status.as_str())),
            ("PollInterval", poll.as_deref()),
        ];
        if u.urls.is_empty() && u.manifest.is_none() {
            w.leaf("updatecheck", &attrs);
        } else {
            w.open("updatecheck", &attrs);
            if !u.urls.is_empty() {
                w.open("urls", &[]);
                for url in &u.urls {
                    w.leaf("url", &[("codebase", Some(url.as_str()))]);
                }
                w.close("urls");
            }
            if let Some(m) = &u.manifest {
                write_manifest(w, m);
            }
            w.close("updatecheck");
        }
    }
    for e in &app.events {
        w.leaf("event", &[("status", Some(e.as_str()))]);
    }
    w.close("app");
}

fn write_manifest(w: &mut Writer, m: &Manifest) {
    w.open("manifest", &[("version", Some(m.version.as_str()))]);
    w.open("packages", &[]);
    for p in &m.packages {
        let size = p.size.to_string();
        w.leaf(
            "package",
            &[
                ("name", Some(p.name.as_str())),
                ("hash", p.hash_sha1.as_deref()),
                ("hash_sha256", p.hash_sha256_hex.as_deref()),
                ("size", Some(size.as_str())),
                ("required", Some(bool_text(p.required))),
            ],
        );
    }
    w.close("packages");
    w.open("actions", &[]);
    for a in &m.actions {
        let meta = a.metadata_size.map(|n| n.to_string());
        let max_fail = a.max_failure_count_per_url.map(|n| n.to_string());
        w.leaf(
            "action",
            &[
                ("event", Some(a.event.as_str())),
                ("sha256", a.sha256.as_deref()),
                ("ChromeOSVersion", a.chromeos_version.as_deref()),
                ("needsadmin", a.needs_admin.map(bool_text)),
                ("IsDeltaPayload", a.is_delta_payload.map(bool_text)),
                (
                    "DisablePayloadBackoff",
                    a.disable_payload_backoff.map(bool_text),
                ),
                ("MetadataSize", meta.as_deref()),
                ("MetadataSignatureRsa", a.metadata_signature_rsa.as_deref()),
                ("MaxFailureCountPerUrl", max_fail.as_deref()),
            ],
        );
    }
    w.close("actions");
    w.close("manifest");
}
