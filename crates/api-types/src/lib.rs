//! The JSON wire types of keelson-server's REST API (`/api/v1/...`), defined once.
//!
//! keelson-server serializes its answers from these types and reads its request bodies into
//! them; `keelson admin` reads the answers into the same types. The OpenAPI document
//! (`/api/openapi.json`) is checked against them by keelson-server's tests. This crate is
//! serde only: no database, HTTP or async types, so any client can depend on it.
//!
//! Field order is the JSON's key order: do not reorder fields.

use serde::{Deserialize, Deserializer, Serialize};

/// Tell a missing field (`None`) from an explicit `null` (`Some(None)`), for `PUT` bodies.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The body of every error answer: `{"error": "...", "field": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// The request field the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything, change nothing.
    Viewer,
    /// Read and change everything.
    Admin,
}

impl Role {
    /// The role as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use admin or viewer")),
        }
    }
}

/// `GET /api/v1/whoami`: the caller's token ID and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The token's ID (not secret; shown in the activity log).
    pub token_id: String,
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// How the caller appears as the actor of an activity entry: `token:<id>`.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

/// An application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Application ID (normalized: no braces, lower case).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApplication {
    /// Application ID; braces and case are normalized away.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Body of `PUT /api/v1/apps/{app}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationUpdate {
    /// New display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A channel: a named pointer to one package of an application, plus its floors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Numeric ID.
    pub id: i64,
    /// The application.
    pub application_id: String,
    /// Name, unique within the application.
    pub name: String,
    /// Version of the package the channel points to, if any.
    pub version: Option<String>,
    /// Versions every node must pass through on its way up (ascending).
    pub floors: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /api/v1/apps/{app}/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Channel name.
    pub name: String,
    /// Package version to point at (must exist).
    pub version: Option<String>,
    /// Floor versions (packages that must exist).
    #[serde(default)]
    pub floors: Vec<String>,
}

/// Body of `PUT /api/v1/apps/{app}/channels/{channel}`: fields left out stay as they are;
/// `"version": null` detaches the channel from any package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelUpdate {
    /// Package version to point at (`Some(None)`: detach).
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<Option<String>>,
    /// Replaces the floor list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floors: Option<Vec<String>>,
}

/// A package: one payload per application version, stored on the server or external.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Numeric ID.
    pub id: i64,
    /// The application.
    pub application_id: String,
    /// Version it installs.
    pub version: String,
    /// Payload file name (appended to the codebase URL by update_engine).
    pub filename: String,
    /// External codebase URL ending in `/`; `None` when the payload is stored on the server.
    pub url: Option<String>,
    /// Whether the payload is stored on the server.
    pub stored: bool,
    /// Where the server serves a stored payload (`/packages/{id}/{filename}`).
    pub download_path: Option<String>,
    /// Payload size in bytes.
    pub size: i64,
    /// SHA-1 of the payload, hex.
    pub sha1_hex: String,
    /// SHA-256 of the payload, hex.
    pub sha256_hex: String,
    /// Unix seconds.
    pub created_at: i64,
    /// OS-bound system extensions attached to this package, sorted by name (empty when none).
    #[serde(default)]
    pub extensions: Vec<PackageExtension>,
}

/// An OS-bound system extension file attached to a package: the Omaha answer that grants the
/// package lists it as an extra `<package name="{name}.raw">`, and the server serves it at
/// `/packages/{package id}/{name}.raw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageExtension {
    /// Extension (systemd image) name; see [`extension_name_problem`].
    pub name: String,
    /// File size in bytes.
    pub size: i64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// SHA-1 of the file, hex.
    pub sha1: String,
}

/// Longest extension name the server accepts.
pub const EXTENSION_NAME_MAX: usize = 64;

/// Why `name` is not a valid extension name (systemd's image name: 1-64 of `[A-Za-z0-9_.-]`,
/// no leading dot; not ending in `.raw`, which the file name adds), or `None` when it is. The
/// server, `keelson admin` and the agent's settings all check names with it.
pub fn extension_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > EXTENSION_NAME_MAX {
        Some("must be at most 64 characters")
    } else if name.starts_with('.') {
        Some("must not start with a dot")
    } else if name.ends_with(".raw") {
        Some("must not end in .raw (the image's file name adds it)")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("may only contain letters, digits, '_', '.' and '-'")
    } else {
        None
    }
}

/// Body of `POST /api/v1/apps/{app}/packages`: a payload hosted elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExternalPackage {
    /// Version the payload installs.
    pub version: String,
    /// File name under `url`.
    pub filename: String,
    /// Codebase URL (http or https); a trailing `/` is added when missing.
    pub url: String,
    /// Payload size in bytes (> 0).
    pub size: i64,
    /// SHA-256 of the payload, 64 hex digits.
    pub sha256_hex: String,
    /// SHA-1 of the payload, 40 hex digits (optional; today's update_engine ignores it).
    #[serde(default)]
    pub sha1_hex: String,
}

/// Query of `PUT /api/v1/apps/{app}/packages/{version}/payload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadQuery {
    /// File name the client appends to the codebase URL.
    pub filename: Option<String>,
}

/// A weekly maintenance window: open on `days` from `start` to `end` (wall-clock `HH:MM` in
/// the policy's time zone); an `end` before `start` runs past midnight. Also the JSON stored
/// in the database and read by the grant engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Days it opens: `mon`..`sun` (any case; full English names too).
    pub days: Vec<String>,
    /// Opening time, `HH:MM` (24 h).
    pub start: String,
    /// Closing time, `HH:MM` (24 h), not equal to `start`.
    pub end: String,
}

/// A group's rollout policy: the values an admin sets and the grant engine reads (keelson-server
/// checks them, `grant::PolicyRules::validate`). Also the JSON block of docs/rollout-policy.md:
/// fields left out take their defaults, unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutPolicy {
    /// Master switch: when false no node in the group is granted anything.
    pub updates_enabled: bool,
    /// One node first: until one node finished the current rollout only one may be in
    /// progress, and its failure halts the rollout.
    pub safe_mode: bool,
    /// At most this many grants per `period_secs` (and at most this many in progress).
    pub max_updates_per_period: i64,
    /// Length of the rate-limit period in seconds.
    pub period_secs: i64,
    /// A granted node that has not completed after this many seconds counts as failed.
    pub update_timeout_secs: i64,
    /// IANA time zone the maintenance windows are written in.
    pub timezone: String,
    /// Weekly windows in which grants may happen; empty means any time.
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// Staged wave: nodes whose stable bucket (0..100) is below this get the update.
    pub rollout_percent: i64,
    /// Halt the rollout when failed nodes exceed this percentage of the group.
    pub failure_threshold_percent: i64,
    /// Hold the group at this version instead of following the channel.
    pub pinned_version: Option<String>,
    /// FleetLock: how many nodes of this group may reboot at once.
    pub fleetlock_slots: i64,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            updates_enabled: true,
            safe_mode: false,
            max_updates_per_period: 1_000_000,
            period_secs: 3600,
            update_timeout_secs: 3600,
            timezone: "UTC".into(),
            maintenance_windows: Vec::new(),
            rollout_percent: 100,
            failure_threshold_percent: 100,
            pinned_version: None,
            fleetlock_slots: 1,
        }
    }
}

/// A group's rollout policy as the API shows it: the [`RolloutPolicy`] (its fields inline, in
/// its order) plus the automatic halt, which only `resume` clears.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The values an admin sets.
    #[serde(flatten)]
    pub rollout: RolloutPolicy,
    /// Version whose rollout was halted automatically (read-only; clear with `resume`).
    pub halted_version: Option<String>,
    /// Why the rollout was halted (read-only).
    pub halted_reason: Option<String>,
}

/// Body of `PUT .../policy`: fields left out stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// See [`RolloutPolicy::updates_enabled`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates_enabled: Option<bool>,
    /// See [`RolloutPolicy::safe_mode`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_mode: Option<bool>,
    /// See [`RolloutPolicy::max_updates_per_period`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_updates_per_period: Option<i64>,
    /// See [`RolloutPolicy::period_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_secs: Option<i64>,
    /// See [`RolloutPolicy::update_timeout_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_timeout_secs: Option<i64>,
    /// See [`RolloutPolicy::timezone`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// See [`RolloutPolicy::maintenance_windows`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_windows: Option<Vec<MaintenanceWindow>>,
    /// See [`RolloutPolicy::rollout_percent`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<i64>,
    /// See [`RolloutPolicy::failure_threshold_percent`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold_percent: Option<i64>,
    /// See [`RolloutPolicy::pinned_version`]; `Some(None)` (`null`) unpins.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub pinned_version: Option<Option<String>>,
    /// See [`RolloutPolicy::fleetlock_slots`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleetlock_slots: Option<i64>,
    /// `true` clears an automatic halt so the rollout continues.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}

impl PolicyUpdate {
    /// Apply the values given to `policy` (those left out stay); `resume` clears the halt.
    /// The result is not checked here: keelson-server checks it before storing it.
    pub fn apply_to(self, policy: &mut Policy) {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        let PolicyUpdate {
            updates_enabled,
            safe_mode,
            max_updates_per_period,
            period_secs,
            update_timeout_secs,
            timezone,
            maintenance_windows,
            rollout_percent,
            failure_threshold_percent,
            pinned_version,
            fleetlock_slots,
            resume,
        } = self;
        let p = &mut policy.rollout;
        set(&mut p.updates_enabled, updates_enabled);
        set(&mut p.safe_mode, safe_mode);
        set(&mut p.max_updates_per_period, max_updates_per_period);
        set(&mut p.period_secs, period_secs);
        set(&mut p.update_timeout_secs, update_timeout_secs);
        set(&mut p.timezone, timezone);
        set(&mut p.maintenance_windows, maintenance_windows);
        set(&mut p.rollout_percent, rollout_percent);
        set(&mut p.failure_threshold_percent, failure_threshold_percent);
        set(&mut p.pinned_version, pinned_version);
        set(&mut p.fleetlock_slots, fleetlock_slots);
        if resume {
            policy.halted_version = None;
            policy.halted_reason = None;
        }
    }
}

impl From<RolloutPolicy> for PolicyUpdate {
    /// An update that sets every value of `p` (and does not resume).
    fn from(p: RolloutPolicy) -> PolicyUpdate {
        PolicyUpdate {
            updates_enabled: Some(p.updates_enabled),
            safe_mode: Some(p.safe_mode),
            max_updates_per_period: Some(p.max_updates_per_period),
            period_secs: Some(p.period_secs),
            update_timeout_secs: Some(p.update_timeout_secs),
            timezone: Some(p.timezone),
            maintenance_windows: Some(p.maintenance_windows),
            rollout_percent: Some(p.rollout_percent),
            failure_threshold_percent: Some(p.failure_threshold_percent),
            pinned_version: Some(p.pinned_version),
            fleetlock_slots: Some(p.fleetlock_slots),
            resume: false,
        }
    }
}

/// Instances of a group at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    /// The version.
    pub version: String,
    /// How many instances run it.
    pub count: i64,
}

/// Instances of a group in one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCount {
    /// Status name (see [`STATUSES`]).
    pub status: String,
    /// How many instances are in it.
    pub count: i64,
}

/// Progress of a group towards its target version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The version the group is moving to (pin, else the channel's), if any.
    pub target_version: Option<String>,
    /// Instances in the group.
    pub instances: i64,
    /// Instances already running the target.
    pub on_target: i64,
    /// Grants towards the target still in progress.
    pub in_progress: i64,
    /// Grants towards the target that succeeded.
    pub succeeded: i64,
    /// Grants towards the target that failed.
    pub failed: i64,
    /// Whether the rollout is halted.
    pub halted: bool,
}

/// A group with its policy and a summary of its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Numeric ID.
    pub id: i64,
    /// The application.
    pub application_id: String,
    /// Name, unique within the application.
    pub name: String,
    /// The Omaha `track` nodes send to land in this group.
    pub track: String,
    /// Name of the channel the group follows, if any.
    pub channel: Option<String>,
    /// The rollout policy.
    pub policy: Policy,
    /// Instances per version, most common first.
    pub versions: Vec<VersionCount>,
    /// Instances per status.
    pub statuses: Vec<StatusCount>,
    /// Progress towards the target version.
    pub rollout: RolloutProgress,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /api/v1/apps/{app}/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Group name.
    pub name: String,
    /// Track nodes send (default: the name).
    pub track: Option<String>,
    /// Channel to follow.
    pub channel: Option<String>,
    /// Policy values differing from the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyUpdate>,
}

/// Body of `PUT /api/v1/apps/{app}/groups/{group}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Channel to follow; `Some(None)` (`null`) detaches.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub channel: Option<Option<String>>,
}

/// Instance status codes as stored, with their names (Nebraska's numbering).
pub const STATUSES: [(i64, &str); 8] = [
    (1, "undefined"),
    (2, "update-granted"),
    (3, "error"),
    (4, "complete"),
    (5, "installed"),
    (6, "downloaded"),
    (7, "downloading"),
    (8, "on-hold"),
];

/// Name of a stored status code (`"unknown"` for any other code).
pub fn status_name(code: i64) -> &'static str {
    STATUSES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// Stored code of a status name.
pub fn status_code(name: &str) -> Option<i64> {
    STATUSES.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
}

/// A node of one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Numeric ID.
    pub id: i64,
    /// The node's machine ID.
    pub machine_id: String,
    /// The application.
    pub application_id: String,
    /// Name of the node's group, if it matched one.
    pub group: Option<String>,
    /// Version the node last reported.
    pub version: String,
    /// Status name (see [`STATUSES`]).
    pub status: String,
    /// Address of the last check.
    pub ip: String,
    /// `MACHINE_ALIAS`.
    pub alias: String,
    /// OEM ID.
    pub oem: String,
    /// First version installed on the node.
    pub aleph_version: String,
    /// Unix seconds of the last check.
    pub last_check: i64,
    /// Unix seconds of the first check.
    pub created_at: i64,
}

/// One status change of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// Status name.
    pub status: String,
    /// Version at the time.
    pub version: String,
    /// Details (e.g. the error code).
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One Omaha event reported by an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    /// Omaha event type.
    pub event_type: i64,
    /// Omaha event result.
    pub event_result: i64,
    /// Error code including flag bits, if any.
    pub error_code: Option<i64>,
    /// Version reported.
    pub version: String,
    /// `previousversion`.
    pub previous_version: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Why it failed: the agent's slug from the event's `keelson_reason` attribute
    /// (`null` for update_engine's events, which carry none).
    #[serde(default)]
    pub reason: Option<String>,
}

/// An instance with its history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDetail {
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// Status changes, newest first (at most 100).
    pub status_history: Vec<StatusEntry>,
    /// Events, newest first (at most 100).
    pub events: Vec<EventEntry>,
    /// Versions this node rolled back from: never offered to it again until an admin clears
    /// them (`DELETE /api/v1/instances/{id}/rollbacks/{version}`).
    #[serde(default)]
    pub rolled_back: Vec<String>,
}

/// One page of instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePage {
    /// Instances matching the filters in total.
    pub total: i64,
    /// This page.
    pub instances: Vec<Instance>,
}

/// Filters of `GET /api/v1/instances` (the query string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFilter {
    /// Application ID.
    pub app: Option<String>,
    /// Group name (needs `app` when names repeat across applications).
    pub group: Option<String>,
    /// Exact version.
    pub version: Option<String>,
    /// Status name.
    pub status: Option<String>,
    /// Substring of the machine ID or alias.
    pub q: Option<String>,
    /// Page size (1-500, default 50).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

/// One activity-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityEntry {
    /// Numeric ID (increasing).
    pub id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// `info`, `warning` or `error`.
    pub severity: String,
    /// What happened, e.g. `group.updated`, `rollout.halted`.
    pub kind: String,
    /// Who: `token:<id>`, `omaha`, `fleetlock`.
    pub actor: String,
    /// The application concerned.
    pub application_id: Option<String>,
    /// The group concerned.
    pub group_id: Option<i64>,
    /// The version concerned.
    pub version: Option<String>,
    /// What happened, for humans.
    pub message: String,
}

/// Filters of `GET /api/v1/activity` (the query string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityFilter {
    /// Only this application.
    pub app: Option<String>,
    /// Only entries with an ID below this (paging backwards).
    pub before: Option<i64>,
    /// Page size (1-500, default 50).
    pub limit: Option<i64>,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's ID.
    pub id: String,
    /// `admin` or `viewer`.
    pub role: String,
    /// Who or what it is for.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of its last use, if any.
    pub last_used: Option<i64>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// `admin` or `viewer`.
    pub role: String,
    /// Who or what it is for.
    #[serde(default)]
    pub description: String,
}

/// A freshly created token: the secret is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// The token's ID.
    pub id: String,
    /// The token's role.
    pub role: Role,
    /// The bearer secret.
    pub token: String,
}

/// One FleetLock holder (`GET /api/v1/fleetlock/holders`): who holds a reboot slot of which
/// lock group, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLockHolder {
    /// The lock group (a group's track).
    pub group: String,
    /// The client's id (Zincati: its app-specific machine id).
    pub id: String,
    /// When it took the slot (Unix seconds).
    pub acquired_at: i64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_and_null_differ_in_updates() {
        let missing: ChannelUpdate = serde_json::from_str("{}").unwrap();
        assert_eq!(missing.version, None);
        let null: ChannelUpdate = serde_json::from_str(r#"{"version": null}"#).unwrap();
        assert_eq!(null.version, Some(None));
        let set: ChannelUpdate = serde_json::from_str(r#"{"version": "2.0.0"}"#).unwrap();
        assert_eq!(set.version, Some(Some("2.0.0".into())));
        // And they are written back the same way, so a client sends what it means.
        assert_eq!(serde_json::to_string(&missing).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&null).unwrap(), r#"{"version":null}"#);
        let unpin = PolicyUpdate {
            pinned_version: Some(None),
            ..PolicyUpdate::default()
        };
        assert_eq!(
            serde_json::to_string(&unpin).unwrap(),
            r#"{"pinned_version":null}"#
        );
    }

    #[test]
    fn policy_json_is_the_rollout_policy_plus_the_halt() {
        let rollout = RolloutPolicy {
            rollout_percent: 25,
            pinned_version: Some("2.0.0".into()),
            maintenance_windows: vec![MaintenanceWindow {
                days: vec!["sat".into()],
                start: "22:00".into(),
                end: "04:00".into(),
            }],
            ..RolloutPolicy::default()
        };
        let p = Policy {
            rollout: rollout.clone(),
            halted_version: Some("3.0.0".into()),
            halted_reason: Some("failures".into()),
        };
        // One flat object: the rollout policy's keys in its order, then the halt.
        let inner = serde_json::to_string(&rollout).unwrap();
        let expected = format!(
            r#"{},"halted_version":"3.0.0","halted_reason":"failures"}}"#,
            inner.trim_end_matches('}')
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, expected);
        assert!(!json.contains("\"rollout\""), "{json}");
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
        let pretty = serde_json::to_string_pretty(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&pretty).unwrap(), p);
    }

    #[test]
    fn updates_apply_and_resume_clears_the_halt() {
        let mut p = Policy {
            halted_version: Some("2.0.0".into()),
            halted_reason: Some("failures".into()),
            ..Policy::default()
        };
        PolicyUpdate {
            rollout_percent: Some(10),
            pinned_version: Some(Some("1.0.0".into())),
            ..PolicyUpdate::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.rollout.rollout_percent, 10);
        assert_eq!(p.rollout.pinned_version.as_deref(), Some("1.0.0"));
        assert_eq!(
            p.halted_version.as_deref(),
            Some("2.0.0"),
            "no resume, halt stays"
        );
        PolicyUpdate {
            pinned_version: Some(None),
            resume: true,
            ..PolicyUpdate::default()
        }
        .apply_to(&mut p);
        assert_eq!(p.rollout.pinned_version, None);
        assert_eq!((p.halted_version, p.halted_reason), (None, None));
        let all = RolloutPolicy {
            safe_mode: true,
            fleetlock_slots: 3,
            ..RolloutPolicy::default()
        };
        let mut q = Policy::default();
        PolicyUpdate::from(all.clone()).apply_to(&mut q);
        assert_eq!(q.rollout, all);
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let err = serde_json::from_str::<NewApplication>(r#"{"id": "a", "name": "n", "x": 1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        assert!(serde_json::from_str::<PolicyUpdate>(r#"{"resum": true}"#).is_err());
    }

    #[test]
    fn roles_and_statuses_round_trip() {
        for r in [Role::Viewer, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("root".parse::<Role>().unwrap_err().contains("root"));
        for (code, name) in STATUSES {
            assert_eq!(status_name(code), name);
            assert_eq!(status_code(name), Some(code));
        }
        assert_eq!(status_name(99), "unknown");
        assert_eq!(status_code("bogus"), None);
    }

    #[test]
    fn extension_names() {
        for ok in ["jq", "docker-27", "a.b_c", "A1", &"x".repeat(64)] {
            assert_eq!(extension_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "jq\n",
            "é",
            &"x".repeat(65),
            "..",
            "jq.raw",
        ] {
            assert!(extension_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn package_without_extensions_key_reads_as_none() {
        let v = serde_json::json!({
            "id": 1, "application_id": "a", "version": "1.0.0", "filename": "f", "url": null,
            "stored": true, "download_path": "/packages/1/f", "size": 3, "sha1_hex": "",
            "sha256_hex": "", "created_at": 0
        });
        let p: Package = serde_json::from_value(v).unwrap();
        assert!(p.extensions.is_empty());
    }

    #[test]
    fn instance_detail_is_one_flat_object() {
        let d = InstanceDetail {
            instance: Instance {
                id: 1,
                machine_id: "m".into(),
                application_id: "a".into(),
                group: None,
                version: "1.0.0".into(),
                status: "error".into(),
                ip: "127.0.0.1".into(),
                alias: String::new(),
                oem: String::new(),
                aleph_version: String::new(),
                last_check: 5,
                created_at: 4,
            },
            status_history: vec![],
            events: vec![],
            rolled_back: vec!["2.0.0".into()],
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["machine_id"], "m");
        assert!(v.get("instance").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<InstanceDetail>(v).unwrap(), d);
    }
}
