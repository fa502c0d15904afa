//! `keelson admin ...`: administer a keelson-server over its REST API (`/api/v1/`).
//!
//! Every command prints either a human table or, with `--json`, the same typed value as JSON.
//! Server errors (`{"error", "field"}`) become an error naming the request, the status and the
//! field.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where the server is and who we are; shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Base URL of the server.
    #[arg(
        long,
        env = "KEELSON_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API token (`keelson-server token create --role admin|viewer`).
    #[arg(long, env = "KEELSON_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// Subcommands of `keelson admin`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Applications.
    App {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: AppCmd,
    },
    /// Channels of an application.
    Channel {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: ChannelCmd,
    },
    /// Packages (update payloads) of an application.
    Package {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: PackageCmd,
    },
    /// Groups of an application.
    Group {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Rollout policy of a group.
    Policy {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Instances (nodes).
    Instance {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: InstanceCmd,
    },
    /// API tokens (admin only).
    Token {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// FleetLock reboot slots: who holds them, and releasing a node that is gone.
    Fleetlock {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: FleetlockCmd,
    },
    /// The activity log, newest first.
    Activity {
        #[command(flatten)]
        conn: Connection,
        /// Only this application.
        #[arg(long)]
        app: Option<String>,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// The application a command works on.
#[derive(Args, Debug)]
pub struct AppArg {
    /// Application ID.
    #[arg(long, env = "KEELSON_APP")]
    app: String,
}

/// `keelson admin app ...`.
#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// List applications.
    List,
    /// Show one application.
    Show {
        /// Application ID.
        id: String,
    },
    /// Create an application.
    Create {
        /// Application ID (e.g. a UUID; braces and case are ignored).
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete an application and everything under it.
    Delete {
        /// Application ID.
        id: String,
    },
}

/// `keelson admin channel ...`.
#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// List channels.
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Create a channel.
    Create {
        #[command(flatten)]
        app: AppArg,
        /// Channel name.
        name: String,
        /// Package version to point at.
        #[arg(long)]
        version: Option<String>,
    },
    /// Point a channel at a version (starts a rollout) and/or replace its floors.
    Set {
        #[command(flatten)]
        app: AppArg,
        /// Channel name.
        name: String,
        /// Package version to point at.
        #[arg(long)]
        version: Option<String>,
        /// Floor versions, comma-separated (empty string clears them).
        #[arg(long)]
        floors: Option<String>,
    },
    /// Delete a channel.
    Delete {
        #[command(flatten)]
        app: AppArg,
        /// Channel name.
        name: String,
    },
}

/// `keelson admin package ...`.
#[derive(Subcommand, Debug)]
pub enum PackageCmd {
    /// List packages, newest first.
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Upload a payload file; the server hashes and stores it.
    Upload {
        #[command(flatten)]
        app: AppArg,
        /// Version the payload installs.
        #[arg(long)]
        version: String,
        /// File name clients append to the URL (default: the file's name).
        #[arg(long)]
        filename: Option<String>,
        /// The payload file.
        file: PathBuf,
    },
    /// Register a payload hosted elsewhere.
    Add {
        #[command(flatten)]
        app: AppArg,
        /// Version the payload installs.
        #[arg(long)]
        version: String,
        /// Codebase URL the file name is appended to.
        #[arg(long)]
        url: String,
        /// File name under the URL.
        #[arg(long)]
        filename: String,
        /// Size in bytes.
        #[arg(long)]
        size: i64,
        /// SHA-256 of the payload, hex.
        #[arg(long)]
        sha256: String,
    },
    /// Delete a package (and its extensions).
    Delete {
        #[command(flatten)]
        app: AppArg,
        /// Version.
        version: String,
    },
    /// Attach an OS-bound system extension (a `.raw` built for this OS version) to a stored
    /// package; nodes granted the package download it with the OS update.
    AddExtension {
        #[command(flatten)]
        app: AppArg,
        /// Version of the OS package.
        #[arg(long)]
        version: String,
        /// Extension name (default: from the file name, `NAME.raw` or `NAME_VERSION.raw`).
        #[arg(long)]
        name: Option<String>,
        /// The extension image.
        file: PathBuf,
    },
    /// Remove an extension from a package.
    RemoveExtension {
        #[command(flatten)]
        app: AppArg,
        /// Version of the OS package.
        #[arg(long)]
        version: String,
        /// Extension name.
        name: String,
    },
}

/// The extension name a file is published under when `--name` is not given: the file name
/// without `.raw`, and without a trailing `_VERSION` (a part after the last `_` that starts with
/// a digit), as `keelson sysext build` names its outputs (`NAME.raw`, `NAME_VERSION.raw`).
/// `None` when that is not a valid extension name.
pub fn extension_name_from_file(file: &std::path::Path) -> Option<String> {
    let f = file.file_name()?.to_str()?;
    let stem = f.strip_suffix(".raw").unwrap_or(f);
    let name = match stem.rsplit_once('_') {
        Some((n, v)) if !n.is_empty() && v.starts_with(|c: char| c.is_ascii_digit()) => n,
        _ => stem,
    };
    keelson_api_types::extension_name_problem(name)
        .is_none()
        .then(|| name.to_string())
}

/// `keelson admin group ...`.
#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List groups with their rollout progress.
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Show a group: versions, statuses, rollout.
    Show {
        #[command(flatten)]
        app: AppArg,
        /// Group name.
        name: String,
    },
    /// Create a group.
    Create {
        #[command(flatten)]
        app: AppArg,
        /// Group name.
        name: String,
        /// Track nodes send (default: the name).
        #[arg(long)]
        track: Option<String>,
        /// Channel to follow.
        #[arg(long)]
        channel: Option<String>,
    },
    /// Delete a group.
    Delete {
        #[command(flatten)]
        app: AppArg,
        /// Group name.
        name: String,
    },
}

/// `keelson admin policy ...`.
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Show a group's policy.
    Get {
        #[command(flatten)]
        app: AppArg,
        /// Group name.
        group: String,
    },
    /// Change some of a group's policy values; the rest stay.
    Set(PolicySet),
}

/// Arguments of `keelson admin policy set`.
#[derive(Args, Debug)]
pub struct PolicySet {
    #[command(flatten)]
    app: AppArg,
    /// Group name.
    group: String,
    /// Master switch.
    #[arg(long)]
    updates_enabled: Option<bool>,
    /// One update at a time until the first finishes.
    #[arg(long)]
    safe_mode: Option<bool>,
    /// Max grants per period.
    #[arg(long)]
    max_updates: Option<i64>,
    /// Period length in seconds.
    #[arg(long)]
    period_secs: Option<i64>,
    /// Update timeout in seconds.
    #[arg(long)]
    timeout_secs: Option<i64>,
    /// IANA time zone of the windows.
    #[arg(long)]
    timezone: Option<String>,
    /// Maintenance window like "sat,sun 22:00-04:00" (repeat; replaces the list).
    #[arg(long = "window")]
    windows: Vec<String>,
    /// Remove all maintenance windows (updates at any time).
    #[arg(long, conflicts_with = "windows")]
    clear_windows: bool,
    /// Share of the group offered the target (staged wave).
    #[arg(long)]
    rollout_percent: Option<i64>,
    /// Halt the rollout at this failure percentage.
    #[arg(long)]
    failure_threshold: Option<i64>,
    /// Pin the group to a version.
    #[arg(long)]
    pin: Option<String>,
    /// Follow the channel again.
    #[arg(long, conflicts_with = "pin")]
    unpin: bool,
    /// FleetLock reboot slots.
    #[arg(long)]
    fleetlock_slots: Option<i64>,
    /// Clear an automatic halt.
    #[arg(long)]
    resume: bool,
}

/// `keelson admin token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// List tokens (IDs and roles; secrets are never shown again).
    List,
    /// Create a token and print its secret once.
    Create {
        /// `admin` or `viewer`.
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// Who or what it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Revoke a token by ID.
    Revoke {
        /// Token ID (from `token list`).
        id: String,
    },
}

/// `keelson admin fleetlock ...`.
#[derive(Subcommand, Debug)]
pub enum FleetlockCmd {
    /// Holders of every lock group (or one), with the time they took the slot.
    Holders {
        /// Only this lock group (a group's track).
        #[arg(long)]
        group: Option<String>,
    },
    /// Release a holder's slot (a node that is gone for good; admin only).
    Release {
        /// Lock group (a group's track).
        group: String,
        /// The holder's id (from `fleetlock holders`).
        id: String,
    },
}

/// `keelson admin instance ...`.
#[derive(Subcommand, Debug)]
pub enum InstanceCmd {
    /// List instances, most recently seen first.
    List {
        /// Application ID.
        #[arg(long, env = "KEELSON_APP")]
        app: Option<String>,
        /// Group name.
        #[arg(long)]
        group: Option<String>,
        /// Exact version.
        #[arg(long)]
        version: Option<String>,
        /// Status (e.g. error, complete).
        #[arg(long)]
        status: Option<String>,
        /// Substring of machine ID or alias.
        #[arg(long)]
        search: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show an instance with its status history, events (with failure reasons) and the
    /// versions held back after a rollback.
    Show {
        /// Numeric instance ID.
        id: i64,
    },
    /// Let an instance be offered a version it rolled back from again (the server holds such
    /// versions back from that node until an admin clears them).
    ClearRollback {
        /// Numeric instance ID.
        id: i64,
        /// The version it rolled back from.
        version: String,
    },
}

// ---- the API's JSON: keelson-server's own wire types (the --json output re-serializes them) ----

pub use keelson_api_types::{
    ActivityEntry, Application, Channel, ErrorBody, Group, Instance, InstanceDetail, InstancePage,
    NewToken, Package, Policy, TokenInfo,
};

/// What a command printed about a deletion.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    deleted: String,
}

// ---- HTTP ----

struct Api {
    client: Client,
    base: String,
    token: String,
}

impl Api {
    fn new(conn: &Connection) -> Result<Api> {
        let Some(token) = conn.token.clone().filter(|t| !t.is_empty()) else {
            bail!("no API token: pass --token or set KEELSON_TOKEN");
        };
        let client = Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            client,
            base: conn.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Send and decode, turning the server's error body into a readable error.
    fn send<T: DeserializeOwned>(&self, what: String, req: RequestBuilder) -> Result<T> {
        let resp = req
            .send()
            .with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp
            .text()
            .with_context(|| format!("{what}: reading the response"))?;
        if !status.is_success() {
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(e) => match e.field {
                    Some(f) => bail!("{what}: {status}: {} (field {f})", e.error),
                    None => bail!("{what}: {status}: {}", e.error),
                },
                Err(_) => bail!("{what}: {status}: {}", text.trim()),
            }
        }
        let body = if text.is_empty() { "null" } else { &text };
        serde_json::from_str(body).with_context(|| format!("{what}: unexpected response {text:?}"))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(format!("GET {path}"), self.request(Method::GET, path))
    }

    fn write<T: DeserializeOwned>(&self, method: Method, path: &str, body: &Value) -> Result<T> {
        self.send(
            format!("{method} {path}"),
            self.request(method.clone(), path).json(body),
        )
    }

    fn delete(&self, path: &str) -> Result<()> {
        let _: Value = self.send(format!("DELETE {path}"), self.request(Method::DELETE, path))?;
        Ok(())
    }

    /// `PUT path` with `file` as the body, streamed from the file (a payload or an extension
    /// is never held in memory).
    fn put_file<T: DeserializeOwned>(&self, path: &str, file: &std::path::Path) -> Result<T> {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading the size of {}", file.display()))?
            .len();
        let req = self
            .request(Method::PUT, path)
            .header("content-type", "application/octet-stream")
            .body(reqwest::blocking::Body::sized(f, len));
        self.send(format!("uploading {} to PUT {path}", file.display()), req)
    }
}

/// Percent-encode one path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Print `value` as JSON or as the human text `human` makes of it.
fn show<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).context("encoding JSON output")?
        );
    } else {
        print!("{}", human(value));
    }
    Ok(())
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn time(ts: i64) -> String {
    chrono_like(ts)
}

/// `YYYY-MM-DD HH:MM:SS` UTC from unix seconds, without a date crate.
fn chrono_like(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn policy_text(policy: &Policy) -> String {
    let p = &policy.rollout;
    let windows = if p.maintenance_windows.is_empty() {
        "any time".to_string()
    } else {
        p.maintenance_windows
            .iter()
            .map(|w| format!("{} {}-{}", w.days.join(","), w.start, w.end))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut s = String::new();
    let _ = writeln!(s, "updates enabled:      {}", p.updates_enabled);
    let _ = writeln!(s, "safe mode:            {}", p.safe_mode);
    let _ = writeln!(
        s,
        "max updates:          {} per {} s",
        p.max_updates_per_period, p.period_secs
    );
    let _ = writeln!(s, "update timeout:       {} s", p.update_timeout_secs);
    let _ = writeln!(s, "maintenance windows:  {windows} ({})", p.timezone);
    let _ = writeln!(s, "rollout wave:         {}%", p.rollout_percent);
    let _ = writeln!(s, "halt at failures:     {}%", p.failure_threshold_percent);
    let _ = writeln!(
        s,
        "pinned version:       {}",
        p.pinned_version.as_deref().unwrap_or("(follows channel)")
    );
    let _ = writeln!(s, "reboot slots:         {}", p.fleetlock_slots);
    if let Some(v) = &policy.halted_version {
        let _ = writeln!(
            s,
            "HALTED at {v}:         {}",
            policy.halted_reason.as_deref().unwrap_or("")
        );
    }
    s
}

fn parse_window(raw: &str) -> Result<Value> {
    let (days, span) = raw
        .trim()
        .split_once(' ')
        .with_context(|| format!("--window {raw:?}: expected \"DAYS HH:MM-HH:MM\""))?;
    let (start, end) = span
        .trim()
        .split_once('-')
        .with_context(|| format!("--window {raw:?}: expected \"DAYS HH:MM-HH:MM\""))?;
    let days: Vec<String> = days.split(',').map(|d| d.trim().to_lowercase()).collect();
    Ok(json!({"days": days, "start": start.trim(), "end": end.trim()}))
}

/// Run `keelson admin ...`.
pub fn run(cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::App { conn, cmd } => run_app(&conn, cmd)?,
        AdminCommand::Channel { conn, cmd } => run_channel(&conn, cmd)?,
        AdminCommand::Package { conn, cmd } => run_package(&conn, cmd)?,
        AdminCommand::Group { conn, cmd } => run_group(&conn, cmd)?,
        AdminCommand::Policy { conn, cmd } => run_policy(&conn, cmd)?,
        AdminCommand::Instance { conn, cmd } => run_instance(&conn, cmd)?,
        AdminCommand::Token { conn, cmd } => run_token(&conn, cmd)?,
        AdminCommand::Fleetlock { conn, cmd } => run_fleetlock(&conn, cmd)?,
        AdminCommand::Activity { conn, app, limit } => {
            let api = Api::new(&conn)?;
            let mut path = format!("/api/v1/activity?limit={limit}");
            if let Some(a) = app {
                let _ = write!(path, "&app={}", enc(&a));
            }
            let entries: Vec<ActivityEntry> = api.get(&path)?;
            show(conn.json, &entries, |es| {
                table(
                    &["TIME (UTC)", "SEVERITY", "KIND", "ACTOR", "MESSAGE"],
                    es.iter()
                        .map(|e| {
                            vec![
                                time(e.created_at),
                                e.severity.clone(),
                                e.kind.clone(),
                                e.actor.clone(),
                                e.message.clone(),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_token(conn: &Connection, cmd: TokenCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        TokenCmd::List => {
            let ts: Vec<TokenInfo> = api.get("/api/v1/tokens")?;
            show(conn.json, &ts, |ts| {
                table(
                    &[
                        "ID",
                        "ROLE",
                        "CREATED (UTC)",
                        "LAST USED (UTC)",
                        "DESCRIPTION",
                    ],
                    ts.iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.role.clone(),
                                time(t.created_at),
                                t.last_used.map(time).unwrap_or_else(|| "never".into()),
                                t.description.clone(),
                            ]
                        })
                        .collect(),
                )
            })
        }
        TokenCmd::Create { role, description } => {
            let t: NewToken = api.write(
                Method::POST,
                "/api/v1/tokens",
                &json!({"role": role, "description": description}),
            )?;
            show(conn.json, &t, |t| {
                eprintln!(
                    "created {} token {} (shown once; only its hash is stored):",
                    t.role, t.id
                );
                format!("{}\n", t.token)
            })
        }
        TokenCmd::Revoke { id } => {
            api.delete(&format!("/api/v1/tokens/{}", enc(&id)))?;
            deleted(conn, format!("token {id}"))
        }
    }
}

fn run_fleetlock(conn: &Connection, cmd: FleetlockCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        FleetlockCmd::Holders { group } => {
            let mut path = "/api/v1/fleetlock/holders".to_string();
            if let Some(g) = group {
                let _ = write!(path, "?group={}", enc(&g));
            }
            let hs: Vec<keelson_api_types::FleetLockHolder> = api.get(&path)?;
            show(conn.json, &hs, |hs| {
                table(
                    &["GROUP", "HOLDER", "SINCE (UTC)"],
                    hs.iter()
                        .map(|h| vec![h.group.clone(), h.id.clone(), time(h.acquired_at)])
                        .collect(),
                )
            })
        }
        FleetlockCmd::Release { group, id } => {
            api.delete(&format!(
                "/api/v1/fleetlock/{}/holders/{}",
                enc(&group),
                enc(&id)
            ))?;
            show(
                conn.json,
                &Deleted {
                    deleted: format!("fleetlock holder {id} of {group}"),
                },
                |d| format!("released {}\n", d.deleted),
            )
        }
    }
}

fn deleted(conn: &Connection, what: String) -> Result<()> {
    show(conn.json, &Deleted { deleted: what }, |d| {
        format!("deleted {}\n", d.deleted)
    })
}

fn run_app(conn: &Connection, cmd: AppCmd) -> Result<()> {
    let api = Api::new(conn)?;
    let one = |a: &Application| format!("{}  {}  {}\n", a.id, a.name, a.description);
    match cmd {
        AppCmd::List => {
            let apps: Vec<Application> = api.get("/api/v1/apps")?;
            show(conn.json, &apps, |apps| {
                table(
                    &["ID", "NAME", "DESCRIPTION"],
                    apps.iter()
                        .map(|a| vec![a.id.clone(), a.name.clone(), a.description.clone()])
                        .collect(),
                )
            })
        }
        AppCmd::Show { id } => {
            let a: Application = api.get(&format!("/api/v1/apps/{}", enc(&id)))?;
            show(conn.json, &a, one)
        }
        AppCmd::Create {
            id,
            name,
            description,
        } => {
            let a: Application = api.write(
                Method::POST,
                "/api/v1/apps",
                &json!({"id": id, "name": name, "description": description}),
            )?;
            show(conn.json, &a, one)
        }
        AppCmd::Delete { id } => {
            api.delete(&format!("/api/v1/apps/{}", enc(&id)))?;
            deleted(conn, format!("application {id}"))
        }
    }
}

fn channel_rows(cs: &[Channel]) -> String {
    table(
        &["NAME", "VERSION", "FLOORS"],
        cs.iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.version.clone().unwrap_or_else(|| "-".into()),
                    c.floors.join(","),
                ]
            })
            .collect(),
    )
}

fn run_channel(conn: &Connection, cmd: ChannelCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        ChannelCmd::List { app } => {
            let cs: Vec<Channel> = api.get(&format!("/api/v1/apps/{}/channels", enc(&app.app)))?;
            show(conn.json, &cs, |cs| channel_rows(cs))
        }
        ChannelCmd::Create { app, name, version } => {
            let c: Channel = api.write(
                Method::POST,
                &format!("/api/v1/apps/{}/channels", enc(&app.app)),
                &json!({"name": name, "version": version}),
            )?;
            show(conn.json, &c, |c| channel_rows(std::slice::from_ref(c)))
        }
        ChannelCmd::Set {
            app,
            name,
            version,
            floors,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(v) = version {
                body.insert("version".into(), json!(v));
            }
            if let Some(f) = floors {
                let list: Vec<&str> = f
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                body.insert("floors".into(), json!(list));
            }
            if body.is_empty() {
                bail!("nothing to change: give --version and/or --floors");
            }
            let c: Channel = api.write(
                Method::PUT,
                &format!("/api/v1/apps/{}/channels/{}", enc(&app.app), enc(&name)),
                &Value::Object(body),
            )?;
            show(conn.json, &c, |c| channel_rows(std::slice::from_ref(c)))
        }
        ChannelCmd::Delete { app, name } => {
            api.delete(&format!(
                "/api/v1/apps/{}/channels/{}",
                enc(&app.app),
                enc(&name)
            ))?;
            deleted(conn, format!("channel {name}"))
        }
    }
}

fn package_rows(ps: &[Package]) -> String {
    table(
        &["VERSION", "SIZE", "WHERE", "SHA256", "EXTENSIONS"],
        ps.iter()
            .map(|p| {
                vec![
                    p.version.clone(),
                    p.size.to_string(),
                    match &p.url {
                        Some(u) => format!("{u}{}", p.filename),
                        None => format!("stored ({})", p.filename),
                    },
                    p.sha256_hex.clone(),
                    if p.extensions.is_empty() {
                        "-".to_string()
                    } else {
                        p.extensions
                            .iter()
                            .map(|e| e.name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                ]
            })
            .collect(),
    )
}

fn run_package(conn: &Connection, cmd: PackageCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        PackageCmd::List { app } => {
            let ps: Vec<Package> = api.get(&format!("/api/v1/apps/{}/packages", enc(&app.app)))?;
            show(conn.json, &ps, |ps| package_rows(ps))
        }
        PackageCmd::Upload {
            app,
            version,
            filename,
            file,
        } => {
            let filename = match filename {
                Some(f) => f,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .with_context(|| {
                        format!(
                            "{} has no usable file name; pass --filename",
                            file.display()
                        )
                    })?,
            };
            let path = format!(
                "/api/v1/apps/{}/packages/{}/payload?filename={}",
                enc(&app.app),
                enc(&version),
                enc(&filename)
            );
            let p: Package = api.put_file(&path, &file)?;
            show(conn.json, &p, |p| package_rows(std::slice::from_ref(p)))
        }
        PackageCmd::Add {
            app,
            version,
            url,
            filename,
            size,
            sha256,
        } => {
            let p: Package = api.write(
                Method::POST,
                &format!("/api/v1/apps/{}/packages", enc(&app.app)),
                &json!({"version": version, "url": url, "filename": filename, "size": size, "sha256_hex": sha256}),
            )?;
            show(conn.json, &p, |p| package_rows(std::slice::from_ref(p)))
        }
        PackageCmd::Delete { app, version } => {
            api.delete(&format!(
                "/api/v1/apps/{}/packages/{}",
                enc(&app.app),
                enc(&version)
            ))?;
            deleted(conn, format!("package {version}"))
        }
        PackageCmd::AddExtension {
            app,
            version,
            name,
            file,
        } => {
            let name = match name {
                Some(n) => {
                    if let Some(problem) = keelson_api_types::extension_name_problem(&n) {
                        bail!("extension name {n:?} {problem}");
                    }
                    n
                }
                // Checked by extension_name_from_file.
                None => extension_name_from_file(&file).with_context(|| {
                    format!(
                        "no extension name in the file name {}; pass --name",
                        file.display()
                    )
                })?,
            };
            let path = format!(
                "/api/v1/apps/{}/packages/{}/extensions/{}",
                enc(&app.app),
                enc(&version),
                enc(&name)
            );
            let p: Package = api.put_file(&path, &file)?;
            show(conn.json, &p, extension_rows)
        }
        PackageCmd::RemoveExtension { app, version, name } => {
            api.delete(&format!(
                "/api/v1/apps/{}/packages/{}/extensions/{}",
                enc(&app.app),
                enc(&version),
                enc(&name)
            ))?;
            deleted(conn, format!("extension {name} of package {version}"))
        }
    }
}

fn extension_rows(p: &Package) -> String {
    table(
        &["VERSION", "EXTENSION", "SIZE", "SHA256"],
        p.extensions
            .iter()
            .map(|e| {
                vec![
                    p.version.clone(),
                    e.name.clone(),
                    e.size.to_string(),
                    e.sha256.clone(),
                ]
            })
            .collect(),
    )
}

fn group_rows(gs: &[Group]) -> String {
    table(
        &[
            "NAME",
            "TRACK",
            "CHANNEL",
            "TARGET",
            "ON TARGET",
            "FAILED",
            "STATE",
        ],
        gs.iter()
            .map(|g| {
                vec![
                    g.name.clone(),
                    g.track.clone(),
                    g.channel.clone().unwrap_or_else(|| "-".into()),
                    g.rollout
                        .target_version
                        .clone()
                        .unwrap_or_else(|| "-".into()),
                    format!("{}/{}", g.rollout.on_target, g.rollout.instances),
                    g.rollout.failed.to_string(),
                    if g.rollout.halted {
                        "halted".into()
                    } else if g.policy.rollout.updates_enabled {
                        "enabled".into()
                    } else {
                        "disabled".into()
                    },
                ]
            })
            .collect(),
    )
}

fn run_group(conn: &Connection, cmd: GroupCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        GroupCmd::List { app } => {
            let gs: Vec<Group> = api.get(&format!("/api/v1/apps/{}/groups", enc(&app.app)))?;
            show(conn.json, &gs, |gs| group_rows(gs))
        }
        GroupCmd::Show { app, name } => {
            let g: Group = api.get(&format!(
                "/api/v1/apps/{}/groups/{}",
                enc(&app.app),
                enc(&name)
            ))?;
            show(conn.json, &g, |g| {
                let mut s = group_rows(std::slice::from_ref(g));
                s.push_str("\nversions:\n");
                for v in &g.versions {
                    let _ = writeln!(s, "  {:<20} {}", v.version, v.count);
                }
                s.push_str("statuses:\n");
                for v in &g.statuses {
                    let _ = writeln!(s, "  {:<20} {}", v.status, v.count);
                }
                s.push_str("\npolicy:\n");
                s.push_str(&policy_text(&g.policy));
                s
            })
        }
        GroupCmd::Create {
            app,
            name,
            track,
            channel,
        } => {
            let g: Group = api.write(
                Method::POST,
                &format!("/api/v1/apps/{}/groups", enc(&app.app)),
                &json!({"name": name, "track": track, "channel": channel}),
            )?;
            show(conn.json, &g, |g| group_rows(std::slice::from_ref(g)))
        }
        GroupCmd::Delete { app, name } => {
            api.delete(&format!(
                "/api/v1/apps/{}/groups/{}",
                enc(&app.app),
                enc(&name)
            ))?;
            deleted(conn, format!("group {name}"))
        }
    }
}

/// The JSON body of `policy set`: only the values given.
fn policy_body(p: &PolicySet) -> Result<Value> {
    let mut body = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        body.insert(k.to_string(), v);
    };
    if let Some(v) = p.updates_enabled {
        put("updates_enabled", json!(v));
    }
    if let Some(v) = p.safe_mode {
        put("safe_mode", json!(v));
    }
    if let Some(v) = p.max_updates {
        put("max_updates_per_period", json!(v));
    }
    if let Some(v) = p.period_secs {
        put("period_secs", json!(v));
    }
    if let Some(v) = p.timeout_secs {
        put("update_timeout_secs", json!(v));
    }
    if let Some(v) = &p.timezone {
        put("timezone", json!(v));
    }
    if p.clear_windows {
        put("maintenance_windows", json!([]));
    } else if !p.windows.is_empty() {
        let ws = p
            .windows
            .iter()
            .map(|w| parse_window(w))
            .collect::<Result<Vec<_>>>()?;
        put("maintenance_windows", Value::Array(ws));
    }
    if let Some(v) = p.rollout_percent {
        put("rollout_percent", json!(v));
    }
    if let Some(v) = p.failure_threshold {
        put("failure_threshold_percent", json!(v));
    }
    if let Some(v) = &p.pin {
        put("pinned_version", json!(v));
    }
    if p.unpin {
        put("pinned_version", Value::Null);
    }
    if let Some(v) = p.fleetlock_slots {
        put("fleetlock_slots", json!(v));
    }
    if p.resume {
        put("resume", json!(true));
    }
    if body.is_empty() {
        bail!("nothing to change: give at least one policy option (see --help)");
    }
    Ok(Value::Object(body))
}

fn run_policy(conn: &Connection, cmd: PolicyCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        PolicyCmd::Get { app, group } => {
            let p: Policy = api.get(&format!(
                "/api/v1/apps/{}/groups/{}/policy",
                enc(&app.app),
                enc(&group)
            ))?;
            show(conn.json, &p, policy_text)
        }
        PolicyCmd::Set(set) => {
            let body = policy_body(&set)?;
            let p: Policy = api.write(
                Method::PUT,
                &format!(
                    "/api/v1/apps/{}/groups/{}/policy",
                    enc(&set.app.app),
                    enc(&set.group)
                ),
                &body,
            )?;
            show(conn.json, &p, policy_text)
        }
    }
}

fn instance_rows(is: &[Instance]) -> String {
    table(
        &[
            "ID",
            "MACHINE",
            "ALIAS",
            "GROUP",
            "VERSION",
            "STATUS",
            "LAST CHECK (UTC)",
        ],
        is.iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.machine_id.clone(),
                    i.alias.clone(),
                    i.group.clone().unwrap_or_else(|| "-".into()),
                    i.version.clone(),
                    i.status.clone(),
                    time(i.last_check),
                ]
            })
            .collect(),
    )
}

fn run_instance(conn: &Connection, cmd: InstanceCmd) -> Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        InstanceCmd::List {
            app,
            group,
            version,
            status,
            search,
            limit,
        } => {
            let mut path = format!("/api/v1/instances?limit={limit}");
            for (k, v) in [
                ("app", app),
                ("group", group),
                ("version", version),
                ("status", status),
                ("q", search),
            ] {
                if let Some(v) = v {
                    let _ = write!(path, "&{k}={}", enc(&v));
                }
            }
            let page: InstancePage = api.get(&path)?;
            show(conn.json, &page, |p| {
                format!(
                    "{}{} of {} shown\n",
                    instance_rows(&p.instances),
                    p.instances.len(),
                    p.total
                )
            })
        }
        InstanceCmd::Show { id } => {
            let d: InstanceDetail = api.get(&format!("/api/v1/instances/{id}"))?;
            show(conn.json, &d, |d| {
                let mut s = instance_rows(std::slice::from_ref(&d.instance));
                s.push_str("\nstatus history:\n");
                s.push_str(&table(
                    &["TIME (UTC)", "STATUS", "VERSION", "DETAILS"],
                    d.status_history
                        .iter()
                        .map(|h| {
                            vec![
                                time(h.created_at),
                                h.status.clone(),
                                h.version.clone(),
                                h.message.clone(),
                            ]
                        })
                        .collect(),
                ));
                s.push_str("\nevents:\n");
                s.push_str(&table(
                    &["TIME (UTC)", "EVENT", "ERROR", "REASON", "VERSION"],
                    d.events
                        .iter()
                        .map(|e| {
                            vec![
                                time(e.created_at),
                                format!("{}/{}", e.event_type, e.event_result),
                                e.error_code.map(|c| c.to_string()).unwrap_or_default(),
                                e.reason.clone().unwrap_or_else(|| "-".into()),
                                e.version.clone(),
                            ]
                        })
                        .collect(),
                ));
                if !d.rolled_back.is_empty() {
                    let _ = writeln!(
                        s,
                        "\nheld back after a rollback (clear with `keelson admin instance \
                         clear-rollback {} <version>`): {}",
                        d.instance.id,
                        d.rolled_back.join(", ")
                    );
                }
                s
            })
        }
        InstanceCmd::ClearRollback { id, version } => {
            api.delete(&format!(
                "/api/v1/instances/{id}/rollbacks/{}",
                enc(&version)
            ))?;
            show(
                conn.json,
                &RollbackCleared {
                    instance: id,
                    version,
                },
                |c| {
                    format!(
                        "instance {} may be offered {} again\n",
                        c.instance, c.version
                    )
                },
            )
        }
    }
}

/// What `instance clear-rollback` printed.
#[derive(Debug, Serialize, Deserialize)]
pub struct RollbackCleared {
    /// The instance.
    pub instance: i64,
    /// The version it may be offered again.
    pub version: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn extension_names_from_files() {
        use std::path::Path;
        for (file, want) in [
            ("out/jq.raw", Some("jq")),
            ("jq_1.7.1.raw", Some("jq")),
            ("my_tool.raw", Some("my_tool")),
            ("docker-27.raw", Some("docker-27")),
            ("my_tool_2.0.raw", Some("my_tool")),
            ("_1.0.raw", Some("_1.0")),
            (".hidden.raw", None),
            ("a b.raw", None),
        ] {
            assert_eq!(
                extension_name_from_file(Path::new(file)).as_deref(),
                want,
                "{file}"
            );
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(chrono_like(0), "1970-01-01 00:00:00");
        assert_eq!(chrono_like(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(chrono_like(1_795_000_000), "2026-11-18 11:06:40");
    }

    #[test]
    fn windows_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_window("sat,SUN 22:00-04:00").unwrap(),
            json!({"days": ["sat", "sun"], "start": "22:00", "end": "04:00"})
        );
        assert!(
            parse_window("weekends")
                .unwrap_err()
                .to_string()
                .contains("weekends")
        );
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONG"], vec![vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    LONG\nxxx  y\n");
        assert_eq!(enc("a b/{c}"), "a%20b%2F%7Bc%7D");
    }
}
