//! `keelson-loadgen`: the load generator behind `cargo xtask bench server` and `bench fleet`.
//!
//! It is a separate process on loopback so the server's core measures only the server. It
//! speaks HTTP/1.1 over keep-alive connections itself (a few dozen lines) instead of using a
//! full client, so the generator's own cost per request stays small next to the server's.
//! Every run is bounded in time and in request count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, Subcommand};
use keelson_omaha::{
    ErrorCode, Event, EventResult, EventType, Limits, Os, Ping, Request, RequestApp, Response,
    UpdateCheck, UpdateStatus,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(
    name = "keelson-loadgen",
    about = "Omaha load generator for the server benches"
)]
struct Cli {
    /// Server address (host:port on loopback).
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    server: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the application, packages, channel and group the benches use (REST API).
    Setup(SetupArgs),
    /// One update check per machine so the instances exist (not timed).
    Seed(SeedArgs),
    /// Timed update checks from many machines; prints throughput and latency percentiles.
    Check(CheckArgs),
    /// Simulate nodes through a staged rollout to the end and verify the server agrees.
    Fleet(FleetArgs),
}

#[derive(clap::Args)]
struct SetupArgs {
    /// Admin bearer token.
    #[arg(long)]
    token: String,
    /// Application id.
    #[arg(long, default_value = keelson_omaha::FLATCAR_APP_ID)]
    app_id: String,
    /// Group name (also the track).
    #[arg(long, default_value = "stable")]
    group: String,
    /// Versions to register as packages (external URLs); the channel points at the last.
    #[arg(long, num_args = 1.., required = true)]
    versions: Vec<String>,
    /// Initial rollout percentage of the group.
    #[arg(long, default_value_t = 100)]
    rollout_percent: i64,
}

#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// Application id.
    #[arg(long, default_value = keelson_omaha::FLATCAR_APP_ID)]
    app_id: String,
    /// Track (group) the nodes send.
    #[arg(long, default_value = "stable")]
    track: String,
    /// Number of distinct machines.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(clap::Args)]
struct SeedArgs {
    #[command(flatten)]
    nodes: NodeArgs,
    /// Version the machines report.
    #[arg(long)]
    version: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Insert the instances straight into this database (sqlite:// or postgres://) in bulk,
    /// then send one check per 1,000 machines through Omaha to confirm the server sees them.
    /// Without it every machine is seeded through the Omaha endpoint.
    #[arg(long)]
    sql: Option<String>,
    /// Admin or viewer token: when given, the server's instance count is checked afterwards.
    #[arg(long)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    nodes: NodeArgs,
    /// Version the machines report.
    #[arg(long)]
    version: String,
    /// Measure for this many seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many requests even if time is left.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Accept any 200 body (for the hello-world peer) instead of requiring an Omaha response.
    #[arg(long)]
    any_body: bool,
    /// Label for the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct FleetArgs {
    #[command(flatten)]
    nodes: NodeArgs,
    /// Admin bearer token (to raise the waves and read the server's instance records).
    #[arg(long)]
    token: String,
    /// Group name.
    #[arg(long, default_value = "stable")]
    group: String,
    /// Version every node starts on.
    #[arg(long)]
    from: String,
    /// Version the channel offers.
    #[arg(long)]
    to: String,
    /// Rollout percentages, one wave each; the last should be 100.
    #[arg(long, num_args = 1.., default_values_t = vec![1, 10, 50, 100])]
    waves: Vec<i64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    max_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup(a) => setup(&cli.server, a).await,
        Cmd::Seed(a) => seed(&cli.server, a).await,
        Cmd::Check(a) => check(&cli.server, a).await,
        Cmd::Fleet(a) => fleet(&cli.server, a).await,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection.

struct Conn {
    addr: String,
    stream: BufReader<TcpStream>,
}

struct HttpResponse {
    status: u16,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(Conn {
            addr: addr.to_owned(),
            stream: BufReader::new(stream),
        })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        let s = self.stream.get_mut();
        s.write_all(&msg)
            .await
            .with_context(|| format!("sending {method} {path}"))?;
        self.read_response()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))
    }

    async fn read_response(&mut self) -> Result<HttpResponse> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("connection closed by the server");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.parse().with_context(|| format!("content-length {v:?}"))?);
                } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("chunk size {line:?}"))?;
                let start = body.len();
                body.resize(start + size + 2, 0);
                self.stream.read_exact(&mut body[start..]).await?;
                body.truncate(start + size);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok(HttpResponse { status, body })
    }

    async fn json(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let auth = format!("Bearer {token}");
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let r = self
            .request(
                method,
                path,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                data.as_bytes(),
            )
            .await?;
        let text = String::from_utf8_lossy(&r.body);
        ensure!(
            (200..300).contains(&r.status),
            "{method} {path} answered {}: {text}",
            r.status
        );
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).with_context(|| format!("{method} {path}: JSON {text}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Omaha requests as update_engine builds them.

fn machine_id(i: usize) -> String {
    format!("{i:032x}")
}

fn omaha_request(
    n: &NodeArgs,
    machine: usize,
    version: &str,
    update_check: bool,
    events: Vec<Event>,
) -> Request {
    Request {
        protocol: "3.0".to_owned(),
        version: Some("update_engine-0.4.10".to_owned()),
        updater_version: Some("update_engine-0.4.10".to_owned()),
        install_source: Some("scheduler".to_owned()),
        is_machine: Some(true),
        os: Some(Os {
            version: Some("Chateau".to_owned()),
            platform: Some("CoreOS".to_owned()),
            service_pack: Some(format!("{version}_x86_64")),
            arch: None,
        }),
        apps: vec![RequestApp {
            app_id: n.app_id.clone(),
            version: Some(version.to_owned()),
            track: Some(n.track.clone()),
            boot_id: Some(format!("{{{:08x}-0000-4000-8000-000000000000}}", machine)),
            machine_id: Some(machine_id(machine)),
            machine_alias: Some(String::new()),
            oem: Some("qemu".to_owned()),
            oem_version: Some("0.1.0".to_owned()),
            aleph_version: Some(version.to_owned()),
            lang: Some("en-US".to_owned()),
            board: Some("amd64-usr".to_owned()),
            hardware_class: Some(String::new()),
            delta_okay: Some(false),
            multi_manifest_ok: None,
            ping: update_check.then_some(Ping {
                active: Some(true),
                active_days: None,
                roll_call_days: None,
            }),
            update_check: update_check.then(UpdateCheck::default),
            events,
        }],
    }
}

fn event(t: EventType, r: EventResult, previous: Option<&str>) -> Event {
    Event {
        event_type: t,
        event_result: r,
        error_code: (r == EventResult::Error).then_some(ErrorCode(1)),
        previous_version: previous.map(str::to_owned),
        reason: None,
    }
}

/// The synthetic event update_engine attaches to every update check.
fn check_event(previous: &str) -> Vec<Event> {
    vec![event(
        EventType::UpdateComplete,
        EventResult::SuccessReboot,
        Some(previous),
    )]
}

async fn omaha(conn: &mut Conn, req: &Request) -> Result<Response> {
    let body = req.to_xml();
    let r = conn
        .request(
            "POST",
            "/v1/update",
            &[("Content-Type", "text/xml")],
            body.as_bytes(),
        )
        .await?;
    ensure!(
        r.status == 200,
        "Omaha answered HTTP {}: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    Response::parse(&r.body, &Limits::default()).context("parsing the Omaha response")
}

// ---------------------------------------------------------------------------------------------

async fn setup(server: &str, a: SetupArgs) -> Result<()> {
    let mut c = Conn::open(server).await?;
    let app = keelson_omaha::normalize_app_id(&a.app_id);
    c.json(
        "POST",
        "/api/v1/apps",
        &a.token,
        Some(&json!({"id": app, "name": "bench"})),
    )
    .await?;
    for (i, v) in a.versions.iter().enumerate() {
        c.json(
            "POST",
            &format!("/api/v1/apps/{app}/packages"),
            &a.token,
            Some(&json!({
                "version": v,
                "filename": "keelson_update.gz",
                "url": format!("http://127.0.0.1:1/bench/{v}/"),
                "size": 1_000_000 + i,
                "sha256_hex": format!("{:064x}", i + 1),
            })),
        )
        .await?;
    }
    let last = a
        .versions
        .last()
        .ok_or_else(|| anyhow!("--versions is empty"))?;
    c.json(
        "POST",
        &format!("/api/v1/apps/{app}/channels"),
        &a.token,
        Some(&json!({"name": a.group, "version": last})),
    )
    .await?;
    c.json(
        "POST",
        &format!("/api/v1/apps/{app}/groups"),
        &a.token,
        Some(&json!({
            "name": a.group,
            "track": a.group,
            "channel": a.group,
            "policy": {"rollout_percent": a.rollout_percent},
        })),
    )
    .await?;
    eprintln!(
        "set up application {app}: versions {:?}, group {} → {last}",
        a.versions, a.group
    );
    Ok(())
}

/// Bulk-inserts the instance rows (the server's schema, `migrations/*/0001_initial.sql`) in
/// one transaction: seconds instead of minutes of Omaha round trips.
async fn seed_sql(url: &str, a: &SeedArgs) -> Result<()> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let app = keelson_omaha::normalize_app_id(&a.nodes.app_id);
    let (group_id,): (i64,) =
        sqlx::query_as("SELECT id FROM groups WHERE application_id = $1 AND track = $2")
            .bind(&app)
            .bind(&a.nodes.track)
            .fetch_one(&mut db)
            .await
            .with_context(|| {
                format!(
                    "finding the group with track {} (run setup first)",
                    a.nodes.track
                )
            })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut tx = db.begin().await.context("starting the seed transaction")?;
    for chunk in (0..a.nodes.machines).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|&i| {
                format!(
                    "({}, {}, {group_id}, {}, 1, '127.0.0.1', {now}, {now})",
                    quote(&machine_id(i)),
                    quote(&app),
                    quote(&a.version)
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO instances (machine_id, application_id, group_id, version, status, ip, \
             last_check, created_at) VALUES {}",
            rows.join(", ")
        );
        sqlx::query(&sql)
            .execute(&mut *tx)
            .await
            .context("inserting instances")?;
    }
    tx.commit()
        .await
        .context("committing the seeded instances")?;
    Ok(())
}

async fn seed(server: &str, a: SeedArgs) -> Result<()> {
    seed_instances(server, &a).await?;
    if let Some(token) = &a.token {
        let app = keelson_omaha::normalize_app_id(&a.nodes.app_id);
        let page = Conn::open(server)
            .await?
            .json(
                "GET",
                &format!("/api/v1/instances?app={app}&limit=1"),
                token,
                None,
            )
            .await?;
        let total = page["total"].as_u64().unwrap_or(0);
        ensure!(
            total >= a.nodes.machines as u64,
            "the server reports {total} instances of {app} after seeding {}",
            a.nodes.machines
        );
        eprintln!("the server reports {total} instances of {app}");
    }
    Ok(())
}

async fn seed_instances(server: &str, a: &SeedArgs) -> Result<()> {
    if let Some(url) = &a.sql {
        let start = Instant::now();
        seed_sql(url, a).await?;
        eprintln!(
            "inserted {} instances in {:.1}s",
            a.nodes.machines,
            start.elapsed().as_secs_f64()
        );
        // The server must know these machines as the instances it already has.
        let mut c = Conn::open(server).await?;
        for i in (0..a.nodes.machines).step_by(1000) {
            let req = omaha_request(&a.nodes, i, &a.version, true, check_event(""));
            omaha(&mut c, &req)
                .await
                .with_context(|| format!("checking seeded machine {i}"))?;
        }
        return Ok(());
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.max_seconds);
    let conc = a.nodes.concurrency.max(1);
    let mut tasks = Vec::new();
    for t in 0..conc {
        let n = a.nodes.clone();
        let server = server.to_owned();
        let version = a.version.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&server).await?;
            let mut i = t;
            while i < n.machines {
                ensure!(Instant::now() < deadline, "seeding did not finish in time");
                let req = omaha_request(&n, i, &version, true, check_event(""));
                omaha(&mut c, &req)
                    .await
                    .with_context(|| format!("seeding machine {i}"))?;
                i += conc;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("seed task panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "seeded {} machines in {secs:.1}s ({:.0}/s)",
        a.nodes.machines,
        a.nodes.machines as f64 / secs
    );
    Ok(())
}

/// Result of a timed run; the human line and `--json` come from this.
#[derive(Serialize)]
struct CheckReport {
    label: String,
    requests: u64,
    errors: u64,
    seconds: f64,
    rps: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
    first_error: Option<String>,
}

async fn check(server: &str, a: CheckArgs) -> Result<()> {
    let conc = a.nodes.concurrency.max(1);
    let machines = a.nodes.machines.max(1);
    // Bodies are rendered before the clock starts so the generator does little per request.
    let bodies: Vec<String> = (0..machines.min(4096))
        .map(|i| {
            let m = (i * 7919) % machines;
            omaha_request(&a.nodes, m, &a.version, true, check_event("")).to_xml()
        })
        .collect();
    let bodies = std::sync::Arc::new(bodies);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(a.max_requests));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for t in 0..conc {
        let bodies = bodies.clone();
        let budget = budget.clone();
        let server = server.to_owned();
        let any_body = a.any_body;
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut c = Conn::open(&server).await?;
            let mut i = t;
            while Instant::now() < deadline {
                if budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| b.checked_sub(1),
                    )
                    .is_err()
                {
                    break;
                }
                let body = &bodies[i % bodies.len()];
                i += conc;
                let sent = Instant::now();
                let r = c
                    .request(
                        "POST",
                        "/v1/update",
                        &[("Content-Type", "text/xml")],
                        body.as_bytes(),
                    )
                    .await;
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                let ok = match &r {
                    Ok(r) if r.status == 200 => {
                        any_body || r.body.windows(9).any(|w| w == b"<response")
                    }
                    _ => false,
                };
                if ok {
                    lat.push(us);
                } else {
                    errors += 1;
                    if first_error.is_none() {
                        first_error = Some(match r {
                            Ok(r) => {
                                format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body))
                            }
                            Err(e) => format!("{e:#}"),
                        });
                    }
                    // A failed exchange may leave the connection unusable.
                    c = Conn::open(&server).await?;
                }
            }
            anyhow::Ok((lat, errors, first_error))
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, f) = t.await.context("load task panicked")??;
        lat.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let idx = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        u64::from(lat[idx])
    };
    let report = CheckReport {
        label: a.label,
        requests: lat.len() as u64,
        errors,
        seconds,
        rps: lat.len() as f64 / seconds,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        max_us: lat.last().copied().map(u64::from).unwrap_or(0),
        first_error,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} requests in {:.1}s = {:.0}/s, p50 {} µs, p99 {} µs, {} errors",
            report.label,
            report.requests,
            report.seconds,
            report.rps,
            report.p50_us,
            report.p99_us,
            report.errors
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fleet: every node runs update_engine's happy path against the server.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NodeState {
    /// On the old version, checking.
    Waiting,
    /// Updated, rebooted and reported success on the new version.
    Done,
}

/// Result of a fleet run; the human lines and `--json` come from this.
#[derive(Serialize)]
struct FleetReport {
    nodes: usize,
    waves: Vec<WaveReport>,
    seconds: f64,
    omaha_requests: u64,
    updated: usize,
    server_agrees: usize,
    mismatches: Vec<String>,
}

#[derive(Serialize)]
struct WaveReport {
    percent: i64,
    seconds: f64,
    rounds: u32,
    updated_total: usize,
}

async fn fleet(server: &str, a: FleetArgs) -> Result<()> {
    let n = a.nodes.machines;
    let conc = a.nodes.concurrency.max(1);
    let app = keelson_omaha::normalize_app_id(&a.nodes.app_id);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.max_seconds);
    let mut state = vec![NodeState::Waiting; n];
    let mut admin = Conn::open(server).await?;
    let mut waves = Vec::new();
    let mut requests = 0u64;
    let mut staging_violations = Vec::new();

    for &percent in &a.waves {
        let wave_start = Instant::now();
        admin
            .json(
                "PUT",
                &format!("/api/v1/apps/{app}/groups/{}/policy", a.group),
                &a.token,
                Some(&json!({"rollout_percent": percent})),
            )
            .await
            .with_context(|| format!("opening the {percent}% wave"))?;
        let mut rounds = 0u32;
        // The server's wave of a machine, to check that staging holds: a node outside the
        // wave must never be granted, and every node inside it must end up updated.
        let member = |i: usize| keelson_server::grant::wave_bucket(&machine_id(i)) < percent;
        // The first round is one update check from every node not yet updated, as a real
        // fleet polls; a granted node goes through download, install, reboot and its first
        // check on the new version at once. Later rounds only re-poll wave members still
        // waiting (e.g. held by a per-period limit), until none is left or nothing moves.
        loop {
            ensure!(
                Instant::now() < deadline,
                "fleet did not finish within {}s",
                a.max_seconds
            );
            rounds += 1;
            let todo: Vec<usize> = (0..n)
                .filter(|&i| state[i] != NodeState::Done && (rounds == 1 || member(i)))
                .collect();
            if todo.is_empty() {
                break;
            }
            let (changes, sent) = fleet_round(server, &a, &todo, &state, conc, deadline).await?;
            requests += sent;
            let progressed = !changes.is_empty();
            for (i, s) in changes {
                if !member(i) {
                    staging_violations.push(format!(
                        "{} (bucket {}) was updated in the {percent}% wave",
                        machine_id(i),
                        keelson_server::grant::wave_bucket(&machine_id(i))
                    ));
                }
                state[i] = s;
            }
            if !progressed && rounds > 1 {
                break;
            }
        }
        let left = (0..n)
            .filter(|&i| member(i) && state[i] != NodeState::Done)
            .count();
        ensure!(
            left == 0,
            "{left} nodes inside the {percent}% wave were never updated"
        );
        let updated = state.iter().filter(|s| **s == NodeState::Done).count();
        eprintln!(
            "wave {percent:>3}%: {updated} of {n} nodes updated after {rounds} rounds, {:.1}s",
            wave_start.elapsed().as_secs_f64()
        );
        waves.push(WaveReport {
            percent,
            seconds: wave_start.elapsed().as_secs_f64(),
            rounds,
            updated_total: updated,
        });
    }
    let seconds = start.elapsed().as_secs_f64();

    // Compare every node's final state with the server's record of it.
    let mut server_view: HashMap<String, (String, String)> = HashMap::with_capacity(n);
    let mut offset = 0usize;
    loop {
        let page = admin
            .json(
                "GET",
                &format!("/api/v1/instances?app={app}&limit=500&offset={offset}"),
                &a.token,
                None,
            )
            .await?;
        let list = page["instances"]
            .as_array()
            .ok_or_else(|| anyhow!("instances page without an instances list: {page}"))?;
        if list.is_empty() {
            break;
        }
        for i in list {
            let id = i["machine_id"].as_str().unwrap_or_default().to_owned();
            let version = i["version"].as_str().unwrap_or_default().to_owned();
            let status = i["status"].as_str().unwrap_or_default().to_owned();
            server_view.insert(id, (version, status));
        }
        offset += list.len();
    }
    let mut mismatches = Vec::new();
    let mut agree = 0usize;
    for (i, s) in state.iter().enumerate() {
        let id = machine_id(i);
        let expected = if *s == NodeState::Done {
            a.to.as_str()
        } else {
            a.from.as_str()
        };
        // An updated node must be recorded on the new version with its update complete.
        let status_ok = |st: &str| *s != NodeState::Done || st == "complete";
        match server_view.get(&id) {
            Some((v, st)) if v == expected && status_ok(st) => agree += 1,
            Some((v, st)) => mismatches.push(format!(
                "{id}: node on {expected} ({s:?}), server says {v} ({st})"
            )),
            None => mismatches.push(format!("{id}: unknown to the server")),
        }
    }
    if server_view.len() != n {
        mismatches.push(format!(
            "server has {} instances for {app}, the fleet has {n} nodes",
            server_view.len()
        ));
    }
    mismatches.splice(0..0, staging_violations);
    mismatches.truncate(20);
    let report = FleetReport {
        nodes: n,
        waves,
        seconds,
        omaha_requests: requests,
        updated: state.iter().filter(|s| **s == NodeState::Done).count(),
        server_agrees: agree,
        mismatches,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} nodes: {} updated in {:.1}s ({} Omaha requests); server agrees on {}",
            report.nodes,
            report.updated,
            report.seconds,
            report.omaha_requests,
            report.server_agrees
        );
        for m in &report.mismatches {
            println!("  mismatch: {m}");
        }
    }
    ensure!(
        report.updated == n && report.server_agrees == n && report.mismatches.is_empty(),
        "fleet did not end with every node updated and the server agreeing"
    );
    Ok(())
}

/// One round over `todo`; returns the nodes whose state changed and the requests sent.
async fn fleet_round(
    server: &str,
    a: &FleetArgs,
    todo: &[usize],
    state: &[NodeState],
    conc: usize,
    deadline: Instant,
) -> Result<(Vec<(usize, NodeState)>, u64)> {
    let work: std::sync::Arc<Vec<(usize, NodeState)>> =
        std::sync::Arc::new(todo.iter().map(|&i| (i, state[i])).collect());
    let mut tasks = Vec::new();
    for t in 0..conc.min(work.len()) {
        let work = work.clone();
        let server = server.to_owned();
        let nodes = a.nodes.clone();
        let (from, to) = (a.from.clone(), a.to.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&server).await?;
            let mut changes = Vec::new();
            let mut sent = 0u64;
            let mut k = t;
            while k < work.len() {
                // Checked per node: one round over 100,000 nodes can itself take minutes.
                ensure!(
                    Instant::now() < deadline,
                    "fleet ran out of time in the middle of a round"
                );
                let (i, s) = work[k];
                k += conc;
                let next = node_step(&mut c, &nodes, i, s, &from, &to, &mut sent)
                    .await
                    .with_context(|| format!("node {} ({s:?})", machine_id(i)))?;
                if next != s {
                    changes.push((i, next));
                }
            }
            anyhow::Ok((changes, sent))
        }));
    }
    let mut changes = Vec::new();
    let mut sent = 0;
    for t in tasks {
        let (c, s) = t.await.context("fleet task panicked")??;
        changes.extend(c);
        sent += s;
    }
    Ok((changes, sent))
}

/// One update_engine cycle for one node: check; when granted, the download and install
/// events, then the first check after the reboot, which reports the previous version.
async fn node_step(
    c: &mut Conn,
    n: &NodeArgs,
    i: usize,
    s: NodeState,
    from: &str,
    to: &str,
    sent: &mut u64,
) -> Result<NodeState> {
    if s == NodeState::Done {
        return Ok(s);
    }
    let r = omaha(c, &omaha_request(n, i, from, true, check_event(""))).await?;
    *sent += 1;
    match update_status(&r)? {
        UpdateStatus::NoUpdate => Ok(s),
        UpdateStatus::Ok => {
            let offered = r.apps[0]
                .update_check
                .as_ref()
                .and_then(|u| u.manifest.as_ref())
                .map(|m| m.version.clone())
                .unwrap_or_default();
            ensure!(offered == to, "offered {offered:?}, expected {to}");
            for (t, res) in [
                (EventType::UpdateDownloadStarted, EventResult::Success),
                (EventType::UpdateDownloadFinished, EventResult::Success),
                (EventType::UpdateComplete, EventResult::Success),
            ] {
                omaha(
                    c,
                    &omaha_request(n, i, from, false, vec![event(t, res, None)]),
                )
                .await?;
                *sent += 1;
            }
            let r = omaha(c, &omaha_request(n, i, to, true, check_event(from))).await?;
            *sent += 1;
            let status = update_status(&r)?;
            ensure!(
                status == UpdateStatus::NoUpdate,
                "offered {status:?} right after updating to {to}"
            );
            Ok(NodeState::Done)
        }
        UpdateStatus::Error(e) => bail!("server answered updatecheck status {e}"),
    }
}

fn update_status(r: &Response) -> Result<UpdateStatus> {
    r.apps
        .first()
        .and_then(|a| a.update_check.as_ref())
        .map(|u| u.status.clone())
        .ok_or_else(|| anyhow!("response without app/updatecheck"))
}
