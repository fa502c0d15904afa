//! The `<request>` a node sends.

use crate::codes::{ErrorCode, EventResult, EventType};
use crate::xml::{Element, Limits, Writer, parse_tree};
use crate::{Error, parse_bool, parse_i64, parse_u32};

/// A whole Omaha v3 request. `Request::default()` is an empty protocol 3.0 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `protocol`: always `3.0` (checked when parsing).
    pub protocol: String,
    /// `version`: the client's name and version, e.g. `update_engine-0.4.10`.
    pub version: Option<String>,
    /// `updaterversion`: same as `version` for update_engine.
    pub updater_version: Option<String>,
    /// `installsource`: `scheduler` or `ondemandupdate`.
    pub install_source: Option<String>,
    /// `ismachine`: `1` for machine-wide updaters.
    pub is_machine: Option<bool>,
    /// The `<os>` element.
    pub os: Option<Os>,
    /// The `<app>` elements (update_engine sends exactly one).
    pub apps: Vec<RequestApp>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            protocol: "3.0".to_owned(),
            version: None,
            updater_version: None,
            install_source: None,
            is_machine: None,
            os: None,
            apps: Vec::new(),
        }
    }
}

/// `<os>`: the running operating system.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Os {
    /// `version` (update_engine sends the constant `Chateau`).
    pub version: Option<String>,
    /// `platform`, e.g. `CoreOS`.
    pub platform: Option<String>,
    /// `sp`: `<version>_<uname -m>`.
    pub service_pack: Option<String>,
    /// `arch`: `x64` or `arm` (Nebraska's fallback for the architecture).
    pub arch: Option<String>,
}

/// One `<app>` in a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestApp {
    /// `appid`, with or without braces (required).
    pub app_id: String,
    /// `version`: the running version.
    pub version: Option<String>,
    /// `track`: the group name or id.
    pub track: Option<String>,
    /// `bootid`: changes every boot.
    pub boot_id: Option<String>,
    /// `machineid`: `/etc/machine-id`, the instance identity.
    pub machine_id: Option<String>,
    /// `machinealias`: `MACHINE_ALIAS` from update.conf.
    pub machine_alias: Option<String>,
    /// `oem`: `ID` from oem-release.
    pub oem: Option<String>,
    /// `oemversion`: `VERSION_ID` from oem-release.
    pub oem_version: Option<String>,
    /// `alephversion`: the first version ever installed.
    pub aleph_version: Option<String>,
    /// `lang`.
    pub lang: Option<String>,
    /// `board`: `amd64-usr` or `arm64-usr`.
    pub board: Option<String>,
    /// `hardware_class`.
    pub hardware_class: Option<String>,
    /// `delta_okay`: always false from update_engine.
    pub delta_okay: Option<bool>,
    /// `multi_manifest_ok`: Nebraska syncer extension.
    pub multi_manifest_ok: Option<bool>,
    /// `<ping>`, if present.
    pub ping: Option<Ping>,
    /// `<updatecheck>`, if present: the node asks for an update.
    pub update_check: Option<UpdateCheck>,
    /// `<event>` elements, in order.
    pub events: Vec<Event>,
}

/// `<ping>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ping {
    /// `active`: `1` when the machine is active.
    pub active: Option<bool>,
    /// `a`: days since the last active ping (ChromeOS-era, -1 when never).
    pub active_days: Option<i64>,
    /// `r`: days since the last roll-call ping.
    pub roll_call_days: Option<i64>,
}

/// `<updatecheck>` in a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateCheck {
    /// `targetversionprefix`: ChromeOS pinning hint; update_engine in Flatcar does not send it.
    pub target_version_prefix: Option<String>,
}

/// `<event>` in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `eventtype` (required).
    pub event_type: EventType,
    /// `eventresult` (required).
    pub event_result: EventResult,
    /// `errorcode`, with flag bits.
    pub error_code: Option<ErrorCode>,
    /// `previousversion`: the version before the last update (`""` when none).
    pub previous_version: Option<String>,
    /// `keelson_reason`: Keelson's own extra attribute, the agent's slug for why a failure
    /// happened (e.g. `esp_full`). update_engine never sends it and Nebraska ignores it. Parsed
    /// leniently: a value that is not a [valid slug](valid_reason) is dropped, not an error.
    pub reason: Option<String>,
}

/// Longest `keelson_reason` kept (longer values are dropped).
pub const MAX_REASON_LEN: usize = 64;

/// Whether `s` is a reason slug: 1 to [`MAX_REASON_LEN`] characters of `[a-z0-9_-]`.
pub fn valid_reason(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REASON_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Event {
    /// A rollback report: type 3 (update complete), result 0 (error), base code 44
    /// (`kActionCodeRollbackError`), whatever flag bits are set.
    pub fn is_rollback(&self) -> bool {
        self.event_type == EventType::UpdateComplete
            && self.event_result == EventResult::Error
            && self.error_code.map(|c| c.base()) == Some(ErrorCode::ROLLBACK.0)
    }

    /// Any failure report: type 3, result 0 (rollbacks included).
    pub fn is_failure(&self) -> bool {
        self.event_type == EventType::UpdateComplete && self.event_result == EventResult::Error
    }

    /// A successful update report: type 3 with result 2 and a real `previousversion`
    /// (update_engine sends `""` or `0.0.0.0` when nothing was updated).
    pub fn is_update_success(&self) -> bool {
        self.event_type == EventType::UpdateComplete
            && self.event_result == EventResult::SuccessReboot
            && self
                .previous_version
                .as_deref()
                .is_some_and(|v| !v.is_empty() && v != "0.0.0.0")
    }
}

/// CPU architecture as Nebraska derives it from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `amd64-usr` / `x64`.
    Amd64,
    /// `arm64-usr` / `arm`.
    Arm64,
}

impl Request {
    /// Parses a request body, enforcing `limits`.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Self, Error> {
        let root = parse_tree(body, limits)?;
        Self::from_element(&root)
    }

    fn from_element(root: &Element) -> Result<Self, Error> {
        if root.name != "request" {
            return Err(Error::UnexpectedRoot {
                expected: "request",
                found: root.name.clone(),
            });
        }
        let protocol = root.required("protocol")?;
        if protocol != "3.0" {
            return Err(Error::UnsupportedProtocol {
                path: root.path.clone(),
                value: crate::xml::truncate(protocol),
            });
        }
        let os = root.child("os").map(|os| Os {
            version: os.attr("version").map(str::to_owned),
            platform: os.attr("platform").map(str::to_owned),
            service_pack: os.attr("sp").map(str::to_owned),
            arch: os.attr("arch").map(str::to_owned),
        });
        let apps = root
            .children_named("app")
            .map(RequestApp::from_element)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            protocol: protocol.to_owned(),
            version: root.attr("version").map(str::to_owned),
            updater_version: root.attr("updaterversion").map(str::to_owned),
            install_source: root.attr("installsource").map(str::to_owned),
            is_machine: root.parsed("ismachine", "0 or 1", parse_bool)?,
            os,
            apps,
        })
    }

    /// The architecture: from `app@board` first, then `os@arch`; `None` when neither is known
    /// (Nebraska then assumes amd64).
    pub fn arch(&self, app: &RequestApp) -> Option<Arch> {
        match app.board.as_deref() {
            Some("amd64-usr") => return Some(Arch::Amd64),
            Some("arm64-usr") => return Some(Arch::Arm64),
            _ => {}
        }
        match self.os.as_ref().and_then(|o| o.arch.as_deref()) {
            Some("x64") => Some(Arch::Amd64),
            Some("arm") => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// Serializes deterministically (fixed attribute order, absent fields omitted).
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new();
        w.open(
            "request",
            &[
                ("protocol", Some(self.protocol.as_str())),
                ("version", self.version.as_deref()),
                ("updaterversion", self.updater_version.as_deref()),
                ("installsource", self.install_source.as_deref()),
                (
                    "ismachine",
                    self.is_machine.map(|b| if b { "1" } else { "0" }),
                ),
            ],
        );
        if let Some(os) = &self.os {
            w.leaf(
                "os",
                &[
                    ("version", os.version.as_deref()),
                    ("platform", os.platform.as_deref()),
                    ("sp", os.service_pack.as_deref()),
                    ("arch", os.arch.as_deref()),
                ],
            );
        }
        for app in &self.apps {
            app.write(&mut w);
        }
        w.close("request");
        w.finish()
    }
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl RequestApp {
    fn from_element(app: &Element) -> Result<Self, Error> {
        let app_id = app.required("appid")?;
        if app_id.trim().is_empty() {
            return Err(Error::InvalidAttribute {
                path: app.path.clone(),
                attribute: "appid".to_owned(),
                value: app_id.to_owned(),
                expected: "a non-empty application id",
            });
        }
        let s = |name: &str| app.attr(name).map(str::to_owned);
        let ping = match app.child("ping") {
            None => None,
            Some(p) => Some(Ping {
                active: p.parsed("active", "0 or 1", parse_bool)?,
                active_days: p.parsed("a", "an integer", parse_i64)?,
                roll_call_days: p.parsed("r", "an integer", parse_i64)?,
            }),
        };
        let update_check = app.child("updatecheck").map(|u| UpdateCheck {
            target_version_prefix: u.attr("targetversionprefix").map(str::to_owned),
        });
        let events = app
            .children_named("event")
            .map(|e| {
                let event_type = e.required("eventtype")?;
                let event_type = parse_u32(event_type).ok_or_else(|| invalid(e, "eventtype"))?;
                let event_result = e.required("eventresult")?;
                let event_result =
                    parse_u32(event_result).ok_or_else(|| invalid(e, "eventresult"))?;
                Ok(Event {
                    event_type: EventType::from_code(event_type),
                    event_result: EventResult::from_code(event_result),
                    error_code: e.parsed(
                        "errorcode",
                        "a 32-bit decimal error code",
                        ErrorCode::parse,
                    )?,
                    previous_version: e.attr("previousversion").map(str::to_owned),
                    reason: e
                        .attr("keelson_reason")
                        .filter(|r| valid_reason(r))
                        .map(str::to_owned),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            app_id: app_id.to_owned(),
            version: s("version"),
            track: s("track"),
            boot_id: s("bootid"),
            machine_id: s("machineid"),
            machine_alias: s("machinealias"),
            oem: s("oem"),
            oem_version: s("oemversion"),
            aleph_version: s("alephversion"),
            lang: s("lang"),
            board: s("board"),
            hardware_class: s("hardware_class"),
            delta_okay: app.parsed("delta_okay", "true or false", parse_bool)?,
            multi_manifest_ok: app.parsed("multi_manifest_ok", "true or false", parse_bool)?,
            ping,
            update_check,
            events,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.open(
            "app",
            &[
                ("appid", Some(self.app_id.as_str())),
                ("version", self.version.as_deref()),
                ("track", self.track.as_deref()),
                ("bootid", self.boot_id.as_deref()),
                ("oem", self.oem.as_deref()),
                ("oemversion", self.oem_version.as_deref()),
                ("alephversion", self.aleph_version.as_deref()),
                ("machineid", self.machine_id.as_deref()),
                ("machinealias", self.machine_alias.as_deref()),
                ("lang", self.lang.as_deref()),
                ("board", self.board.as_deref()),
                ("hardware_class", self.hardware_class.as_deref()),
                ("delta_okay", self.delta_okay.map(bool_text)),
                ("multi_manifest_ok", self.multi_manifest_ok.map(bool_text)),
            ],
        );
        if let Some(p) = &self.ping {
            let a = p.active_days.map(|n| n.to_string());
            let r = p.roll_call_days.map(|n| n.to_string());
            w.leaf(
                "ping",
                &[
                    ("active", p.active.map(|b| if b { "1" } else { "0" })),
                    ("a", a.as_deref()),
                    ("r", r.as_deref()),
                ],
            );
        }
        if let Some(u) = &self.update_check {
            w.leaf(
                "updatecheck",
                &[("targetversionprefix", u.target_version_prefix.as_deref())],
            );
        }
        for e in &self.events {
            let t = e.event_type.code().to_string();
            let r = e.event_result.code().to_string();
            let c = e.error_code.map(|c| c.0.to_string());
            w.leaf(
                "event",
                &[
                    ("eventtype", Some(t.as_str())),
                    ("eventresult", Some(r.as_str())),
                    ("errorcode", c.as_deref()),
                    ("previousversion", e.previous_version.as_deref()),
                    ("keelson_reason", e.reason.as_deref()),
                ],
            );
        }
        w.close("app");
    }

    /// The app id without braces, lower-cased: Nebraska matches ids either way.
    pub fn normalized_app_id(&self) -> String {
        crate::normalize_app_id(&self.app_id)
    }

    /// The first rollback report among the events, if any.
    pub fn rollback_event(&self) -> Option<&Event> {
        self.events.iter().find(|e| e.is_rollback())
    }
}

fn invalid(e: &Element, attribute: &str) -> Error {
    Error::InvalidAttribute {
        path: e.path.clone(),
        attribute: attribute.to_owned(),
        value: crate::xml::truncate(e.attr(attribute).unwrap_or_default()),
        expected: "an unsigned decimal integer",
    }
}
