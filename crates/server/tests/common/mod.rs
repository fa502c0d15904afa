//! Shared by all of the server's integration tests: a fresh SQLite or PostgreSQL database per
//! test, a real server on 127.0.0.1:0 (bare, or with one admin and one viewer token for the API,
//! auth and dashboard tests), and seeding helpers that go through the library's typed DB
//! functions or the REST API.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use keelson_api_types::{NewChannel, NewGroup};
use keelson_server::db::packages::{NewPackage, Package};
use keelson_server::db::rollout::{self, CheckAnswer, NodeEvent, NodeReport, ReportOutcome};
use keelson_server::db::{self, Db, DbError};
use keelson_server::grant::RolloutPolicy;
use keelson_server::{AppState, ServerConfig};
use sha1::Digest as _;

mod server;
// Each test binary uses only part of this module.
#[allow(unused_imports)]
pub use server::{TestServer, UPLOAD_LIMIT, json_of, start};

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run async test bodies against both backends: `both!(a, b);` makes `a::sqlite`,
/// `a::postgres`, `b::sqlite` and `b::postgres` from `async fn a(backend: Backend)` and so on,
/// so both backends pass the same suite.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The PostgreSQL URL from the environment; the test fails (never skips) without it.
pub fn postgres_url() -> String {
    std::env::var("KEELSON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "KEELSON_TEST_POSTGRES_URL is not set: run the PostgreSQL variants via `cargo xtask test` \
             (it starts a throwaway cluster), or point the variable at a server you started"
        )
    })
}

/// A test environment: a database and a data dir (kept alive as long as this value).
pub struct Env {
    pub db: Db,
    pub data_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A fresh database of `backend` with the migrations applied.
pub async fn env(backend: Backend) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("keelson.db").display());
            Db::connect(&url).await.unwrap()
        }
        Backend::Postgres => {
            let base = postgres_url();
            let name = format!("keelson_core_{}", uuid::Uuid::new_v4().simple());
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&base)
                .await
                .unwrap_or_else(|e| panic!("connecting to KEELSON_TEST_POSTGRES_URL {base}: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            let (head, query) = match base.split_once('?') {
                Some((h, q)) => (h.to_string(), format!("?{q}")),
                None => (base.clone(), String::new()),
            };
            let after = head.find("://").map(|i| i + 3).unwrap_or(0);
            let url = match head[after..].find('/') {
                Some(s) => format!("{}/{name}{query}", &head[..after + s]),
                None => format!("{head}/{name}{query}"),
            };
            Db::connect(&url).await.unwrap()
        }
    };
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    Env { db, data_dir, dir }
}

/// Serve the whole router for `env` on 127.0.0.1:0; returns the base URL.
pub async fn serve(env: &Env, tweak: impl FnOnce(&mut ServerConfig)) -> String {
    let mut config = ServerConfig::new(&env.data_dir);
    tweak(&mut config);
    let app = keelson_server::router(AppState::new(env.db.clone(), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

pub const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
pub const APP_BRACED: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";

/// Deterministic payload bytes for a version.
pub fn payload(version: &str, len: usize) -> Vec<u8> {
    let seed = version
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..len)
        .map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed))
        .collect()
}

/// Store a payload in the data dir and create its package row.
pub async fn stored_package(env: &Env, version: &str, bytes: &[u8]) -> Package {
    let name = format!("pkg-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(env.data_dir.join(&name), bytes).unwrap();
    db::packages::create(
        &env.db,
        "test",
        &NewPackage {
            application_id: APP.into(),
            version: version.into(),
            filename: "keelson_update.gz".into(),
            url: None,
            stored_path: Some(name),
            size: bytes.len() as i64,
            sha1_hex: hex::encode(sha1::Sha1::digest(bytes)),
            sha256_hex: hex::encode(sha2::Sha256::digest(bytes)),
        },
    )
    .await
    .unwrap()
}

/// An external package (no payload stored here).
pub async fn external_package(env: &Env, version: &str) -> Package {
    db::packages::create(
        &env.db,
        "test",
        &NewPackage {
            application_id: APP.into(),
            version: version.into(),
            filename: "flatcar_production_update.gz".into(),
            url: Some(format!("https://update.example.net/amd64-usr/{version}/")),
            stored_path: None,
            size: 1234,
            sha1_hex: "11".repeat(20),
            sha256_hex: "22".repeat(32),
        },
    )
    .await
    .unwrap()
}

/// Application + channel `stable` pointing at an external package `target` + group with track
/// `stable` and `policy`. Returns (group id, channel id).
pub async fn fleet(env: &Env, target: &str, policy: RolloutPolicy) -> (i64, i64) {
    application(env).await;
    external_package(env, target).await;
    channel_and_group(env, target, policy).await
}

/// The application `APP` the fleets are built in.
pub async fn application(env: &Env) {
    db::applications::create(&env.db, "test", APP_BRACED, "Keelson", "")
        .await
        .unwrap();
}

/// Channel `stable` pointing at the package of `version` + group `Stable` with track `stable`
/// and `policy`, through the functions the REST API calls. Returns (group id, channel id).
pub async fn channel_and_group(env: &Env, version: &str, policy: RolloutPolicy) -> (i64, i64) {
    let ch = db::channels::create(
        &env.db,
        "test",
        APP,
        &NewChannel {
            name: "stable".into(),
            version: Some(version.into()),
            floors: Vec::new(),
        },
    )
    .await
    .unwrap();
    let g = db::groups::create(
        &env.db,
        "test",
        APP,
        &NewGroup {
            name: "Stable".into(),
            track: Some("stable".into()),
            channel: Some("stable".into()),
            policy: Some(policy.into()),
        },
    )
    .await
    .unwrap();
    (g.group.id, ch.channel.id)
}

/// Handle one node report the way the Omaha endpoint handles a request with one `<app>`.
pub async fn handle_report(db: &Db, r: &NodeReport) -> Result<ReportOutcome, DbError> {
    let mut out = rollout::handle_reports(db, std::slice::from_ref(r)).await?;
    Ok(out.remove(0))
}

/// A node report for `machine` at `version` at time `now`.
pub fn report(machine: &str, version: &str, now: DateTime<Utc>) -> NodeReport {
    NodeReport {
        application_id: APP_BRACED.into(),
        machine_id: machine.into(),
        version: version.into(),
        track: "stable".into(),
        ip: "127.0.0.1".into(),
        alias: String::new(),
        oem: "qemu".into(),
        aleph_version: "1.0.0".into(),
        events: Vec::new(),
        update_check: true,
        now,
    }
}

/// An event.
pub fn event(t: i64, r: i64, code: Option<i64>, prev: &str) -> NodeEvent {
    NodeEvent {
        event_type: t,
        event_result: r,
        error_code: code,
        previous_version: prev.into(),
        reason: None,
    }
}

/// Check for an update; returns the granted version or `None` with the hold reason.
pub async fn check(
    env: &Env,
    machine: &str,
    version: &str,
    now: DateTime<Utc>,
) -> Result<String, String> {
    answer(env, report(machine, version, now)).await
}

/// Send a report; returns the granted version or the noupdate reason.
pub async fn answer(env: &Env, r: NodeReport) -> Result<String, String> {
    match handle_report(&env.db, &r).await.unwrap() {
        ReportOutcome::Recorded {
            check: Some(CheckAnswer::Update { package, .. }),
            ..
        } => Ok(package.version),
        ReportOutcome::Recorded {
            check: Some(CheckAnswer::NoUpdate { reason }),
            ..
        } => Err(reason),
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// Report that `machine` finished updating from `from` to `to` (update check after reboot).
pub async fn complete(env: &Env, machine: &str, from: &str, to: &str, now: DateTime<Utc>) {
    let mut r = report(machine, to, now);
    r.events = vec![event(3, 2, None, from)];
    let _ = answer(env, r).await;
}

/// Report an error event (event-only request).
pub async fn fail(env: &Env, machine: &str, version: &str, code: i64, now: DateTime<Utc>) {
    let mut r = report(machine, version, now);
    r.update_check = false;
    r.events = vec![event(3, 0, Some(code), "")];
    let out = handle_report(&env.db, &r).await.unwrap();
    assert!(
        matches!(out, ReportOutcome::Recorded { check: None, .. }),
        "{out:?}"
    );
}

/// Instance `machine` of `APP`, read through the instance search the REST API uses.
pub async fn instance(db: &Db, machine: &str) -> db::instances::Instance {
    let search = db::instances::Search {
        app: Some(APP.into()),
        q: Some(machine.into()),
        limit: 500,
        ..Default::default()
    };
    let (_, rows) = db::instances::search(db, &search).await.unwrap();
    rows.into_iter()
        .find(|i| i.machine_id == machine)
        .unwrap_or_else(|| panic!("no instance {machine}"))
}

/// The holders of FleetLock group `group`, oldest first, as the REST API lists them.
pub async fn holders(db: &Db, group: &str) -> Vec<String> {
    db::fleetlock::holders_with_time(db, Some(group))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect()
}

/// Count rows of `table` (a fixed name from the test).
pub async fn count(db: &Db, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(db.pool())
        .await
        .unwrap();
    n
}
