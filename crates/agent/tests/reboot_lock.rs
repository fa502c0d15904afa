//! Reboot coordination under contention: 20 nodes, each with its own state directory and a
//! reboot command that only records the time, driven through the agent's real coordination
//! path ([`Agent::coordinate`]) against keelson-server's FleetLock (2 slots) and a real etcd
//! (locksmith semaphore, max 2). At no moment do more than 2 nodes hold the lock, every node
//! reboots exactly once, and every slot is free at the end; the same again with the lock
//! service stopped halfway and started again.
//!
//! etcd comes from the `etcd-server` package (`cargo xtask deps`); without `/usr/bin/etcd`
//! (or `$KEELSON_ETCD`) the etcd tests say so on stderr and pass, except under CI (`$CI`
//! set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use keelson_agent::agent::{Agent, RebootMode};
use keelson_agent::esp::Counter;
use keelson_agent::etcd::EtcdLock;
use keelson_agent::paths::Paths;
use keelson_agent::settings::Settings;
use keelson_agent::state::{self, BootFacts, Input, LockPhase, Record, State, Target};
use keelson_server::{AppState, ServerConfig};

const NODES: usize = 20;
const SLOTS: usize = 2;
const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[derive(Default)]
struct Stats {
    /// (reboot command ran, the new boot came up) per node, in ns since the epoch.
    held: Vec<(u128, u128)>,
    /// Every reason a node gave for not rebooting or not releasing yet.
    reasons: BTreeSet<String>,
    /// Most holders the service reported at once.
    max_seen: usize,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// One node: its own root and state, an update staged, a reboot command that records the time.
fn node(base: &Path, i: usize, reboot_toml: &str) -> (Agent, PathBuf) {
    let root = base.join(format!("node{i:02}"));
    write(
        &root.join("etc/machine-id"),
        &format!("{:032x}\n", 0x5eed_0000 + i),
    );
    write(
        &root.join("etc/keelson/update.toml"),
        &format!("[update]\ngroup = \"stable\"\n\n{reboot_toml}"),
    );
    let paths = Paths::under(&root);
    let settings = Settings::load(&paths).unwrap();
    let mut agent = Agent::new(paths, settings).unwrap();
    let log = root.join("reboots.log");
    agent.reboot_command = vec![
        "sh".into(),
        "-c".into(),
        format!("date +%s%N >> '{}'", log.display()),
    ];
    agent.lock_backoff_base = Duration::from_millis(20);
    let rec = Record {
        state: State::Staged {
            target: Target {
                version: "2.0.0".into(),
                url: "http://unused/p".into(),
                size: 1,
                sha256: "x".into(),
            },
            slot: "B".into(),
            previous_version: "1.0.0".into(),
        },
        ..Record::default()
    };
    agent.store().save(&rec).unwrap();
    (agent, log)
}

/// The node's life: wait for the lock and reboot, come up blessed, release.
async fn run_node(agent: Agent, log: PathBuf, stats: Arc<Mutex<Stats>>, seed: u64) {
    loop {
        let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
        if let Some(w) = &rec.lock_wait {
            stats.lock().unwrap().reasons.insert(w.reason.clone());
        }
        match rec.state {
            State::RebootPending { .. } => break,
            State::Staged { .. } => {}
            other => panic!("unexpected state {other:?}"),
        }
        let wait = rec
            .lock_wait
            .map(|w| (w.retry_at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_millis(10));
        tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
    }
    let rebooted: u128 = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // "Rebooting", then the new version boots and is blessed.
    tokio::time::sleep(Duration::from_millis(20 + seed % 40)).await;
    let up = now_ns();
    let rec = agent.store().load().unwrap();
    let next = state::step(
        &rec,
        &Input::Boot(BootFacts {
            running_version: "2.0.0".into(),
            target_entry: Some(Counter::Blessed),
        }),
        Utc::now(),
        chrono::Duration::minutes(45),
    );
    assert!(matches!(next.state, State::Complete { .. }), "{next:?}");
    agent.store().save(&next).unwrap();
    loop {
        let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
        if rec.lock == LockPhase::Free {
            break;
        }
        if let Some(e) = &rec.last_error {
            stats.lock().unwrap().reasons.insert(e.reason.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats.lock().unwrap().held.push((rebooted, up));
}

/// Runs the 20 nodes; `outage` stops the service after a third of the reboots and starts it
/// again. `holders` asks the service how many hold the lock now.
async fn contend<F, Fut>(
    agents: Vec<(Agent, PathBuf)>,
    holders: F,
    outage: Option<&mut dyn Outage>,
) -> Stats
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<usize>> + Send,
{
    let stats = Arc::new(Mutex::new(Stats::default()));
    let logs: Vec<PathBuf> = agents.iter().map(|(_, l)| l.clone()).collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (stats, done) = (stats.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(n) = holders().await {
                    let mut s = stats.lock().unwrap();
                    s.max_seen = s.max_seen.max(n);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for (i, (agent, log)) in agents.into_iter().enumerate() {
        tasks.push(tokio::spawn(run_node(
            agent,
            log,
            stats.clone(),
            (i as u64).wrapping_mul(2654435761),
        )));
    }
    if let Some(o) = outage {
        // Stop the service once a third of the nodes rebooted.
        while logs.iter().filter(|l| l.exists()).count() < NODES / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        o.stop().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let rebooted_during = logs.iter().filter(|l| l.exists()).count();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            logs.iter().filter(|l| l.exists()).count(),
            rebooted_during,
            "a node rebooted while the lock service was down"
        );
        o.start().await;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a node never finished")
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    monitor.await.unwrap();
    for l in &logs {
        let n = std::fs::read_to_string(l).unwrap().lines().count();
        assert_eq!(n, 1, "{} rebooted {n} times", l.display());
    }
    Arc::try_unwrap(stats)
        .ok()
        .expect("stats still shared")
        .into_inner()
        .unwrap()
}

/// The most nodes that were between "reboot" and "up" at once.
fn max_overlap(held: &[(u128, u128)]) -> usize {
    let mut ev: Vec<(u128, i32)> = held.iter().flat_map(|(a, b)| [(*a, 1), (*b, -1)]).collect();
    ev.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    usize::try_from(max).unwrap()
}

fn check(stats: &Stats, outage: bool) {
    assert_eq!(stats.held.len(), NODES);
    let overlap = max_overlap(&stats.held);
    assert!(overlap <= SLOTS, "{overlap} nodes rebooting at once");
    assert!(overlap >= 1);
    assert!(
        stats.max_seen <= SLOTS,
        "service reported {} holders",
        stats.max_seen
    );
    assert!(
        stats
            .reasons
            .iter()
            .any(|r| r.contains("full") || r.contains("lock_held")),
        "nobody ever waited for a slot: {:?}",
        stats.reasons
    );
    if outage {
        assert!(
            stats
                .reasons
                .iter()
                .any(|r| r.contains("lock_service_unavailable")),
            "the outage was never noticed: {:?}",
            stats.reasons
        );
    }
}

type BoxFut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// A lock service the test can stop and start again on the same address.
trait Outage: Send {
    fn stop(&mut self) -> BoxFut<'_>;
    fn start(&mut self) -> BoxFut<'_>;
}

// ---- keelson-server's FleetLock ----

struct FleetLockServer {
    addr: SocketAddr,
    db: keelson_server::db::Db,
    data: PathBuf,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl FleetLockServer {
    async fn new(dir: &Path) -> (FleetLockServer, String) {
        let db = keelson_server::db::Db::connect(&format!(
            "sqlite://{}",
            dir.join("server.db").display()
        ))
        .await
        .unwrap();
        let admin = keelson_server::auth::create_token(
            &db,
            keelson_server::auth::Role::Admin,
            "contention test",
        )
        .await
        .unwrap()
        .token;
        let data = dir.join("server");
        std::fs::create_dir_all(&data).unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s = FleetLockServer {
            addr,
            db,
            data,
            running: None,
        };
        s.serve().await;
        (s, admin)
    }

    async fn serve(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let app = keelson_server::router(AppState::new(
            self.db.clone(),
            ServerConfig::new(&self.data),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        self.running = Some((tx, handle));
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Outage for FleetLockServer {
    fn stop(&mut self) -> BoxFut<'_> {
        Box::pin(async move {
            if let Some((tx, handle)) = self.running.take() {
                let _ = tx.send(());
                handle.await.unwrap();
            }
        })
    }
    fn start(&mut self) -> BoxFut<'_> {
        Box::pin(self.serve())
    }
}

async fn fleetlock_run(outage: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, admin) = FleetLockServer::new(dir.path()).await;
    let base = server.base();
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/v1/apps".to_string(),
            serde_json::json!({"id": APP, "name": "Keelson"}),
        ),
        (
            format!("/api/v1/apps/{APP}/groups"),
            serde_json::json!({"name": "stable", "policy": {"fleetlock_slots": SLOTS}}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let toml = format!("[reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"{base}\"\n");
    let agents: Vec<_> = (0..NODES).map(|i| node(dir.path(), i, &toml)).collect();
    let db = server.db.clone();
    let holders = move || {
        let db = db.clone();
        async move {
            keelson_server::db::fleetlock::holders_with_time(&db, Some("stable"))
                .await
                .ok()
                .map(|h| h.len())
        }
    };
    let db = server.db.clone();
    let stats = contend(
        agents,
        holders,
        outage.then_some(&mut server as &mut dyn Outage),
    )
    .await;
    check(&stats, outage);
    assert!(
        keelson_server::db::fleetlock::holders_with_time(&db, Some("stable"))
            .await
            .unwrap()
            .is_empty(),
        "slots left held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_twenty_nodes_two_slots() {
    fleetlock_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_twenty_nodes_server_stopped_halfway() {
    fleetlock_run(true).await;
}

// ---- etcd ----

fn etcd_binary() -> Option<PathBuf> {
    let p = std::env::var_os("KEELSON_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing under CI: `cargo xtask deps` installs etcd-server",
        p.display()
    );
    eprintln!(
        "SKIPPED: {} not found; install it with `cargo xtask deps` (Debian package etcd-server) \
         to run the etcd-lock tests",
        p.display()
    );
    None
}

/// A throwaway etcd: its own data dir and free ports, killed on drop.
struct Etcd {
    bin: PathBuf,
    data: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<std::process::Child>,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Etcd {
    async fn start(bin: PathBuf, dir: &Path) -> Etcd {
        let mut e = Etcd {
            bin,
            data: dir.join("etcd"),
            client: free_addr(),
            peer: free_addr(),
            child: None,
        };
        e.spawn().await;
        e
    }

    fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let child = std::process::Command::new(&self.bin)
            .arg("--name=keelson-test")
            .arg(format!("--data-dir={}", self.data.display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls=http://{}", self.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://{}",
                self.peer
            ))
            .arg(format!(
                "--initial-cluster=keelson-test=http://{}",
                self.peer
            ))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let ok = http
                .post(format!("{}/v3/kv/range", self.url()))
                .json(&serde_json::json!({"key": "eA=="}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "etcd did not come up: {}",
            std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Outage for Etcd {
    fn stop(&mut self) -> BoxFut<'_> {
        Box::pin(async move { self.kill() })
    }
    fn start(&mut self) -> BoxFut<'_> {
        Box::pin(self.spawn())
    }
}

async fn etcd_run(outage: bool) {
    let Some(bin) = etcd_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(bin, dir.path()).await;
    let url = etcd.url();
    let admin = EtcdLock::new(
        reqwest::Client::new(),
        vec![url.clone()],
        "workers",
        "admin",
    );
    admin.set_max(SLOTS as i64).await.unwrap();
    let toml = format!(
        "[reboot]\nstrategy = \"etcd-lock\"\netcd_endpoints = [\"{url}\"]\nlock_group = \"workers\"\n"
    );
    let agents: Vec<_> = (0..NODES).map(|i| node(dir.path(), i, &toml)).collect();
    let reader = admin.clone();
    let holders = move || {
        let r = reader.clone();
        async move {
            r.read()
                .await
                .ok()
                .flatten()
                .map(|(s, _)| s.holders.unwrap_or_default().len())
        }
    };
    let stats = contend(
        agents,
        holders,
        outage.then_some(&mut etcd as &mut dyn Outage),
    )
    .await;
    check(&stats, outage);
    let (sem, _) = admin.read().await.unwrap().unwrap();
    assert_eq!(sem.holders, None, "holders left: {sem:?}");
    assert_eq!((sem.semaphore, sem.max), (SLOTS as i64, SLOTS as i64));
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_twenty_nodes_max_two() {
    etcd_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_twenty_nodes_etcd_stopped_halfway() {
    etcd_run(true).await;
}

/// One node through its whole life against keelson-server: a slot held from an earlier boot
/// is released at start; a staged update waits (fail closed, `status` says why) while the
/// slot is taken by another node; takes it, reboots once, keeps it while the boot is being
/// verified, and releases it once blessed. `/run/reboot-required` is written when staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_life_cycle_of_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = FleetLockServer::new(dir.path()).await;
    let base = server.base();
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/v1/apps".to_string(),
            serde_json::json!({"id": APP, "name": "Keelson"}),
        ),
        (
            format!("/api/v1/apps/{APP}/groups"),
            serde_json::json!({"name": "stable"}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let toml = format!("[reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"{base}\"\n");
    let (mut agent, log) = node(dir.path(), 0, &toml);
    // Long enough that the retry below is always inside the backoff.
    agent.lock_backoff_base = Duration::from_secs(3600);
    let id = keelson_agent::lock::app_specific_id(
        &format!("{:032x}", 0x5eed_0000),
        keelson_agent::lock::ZINCATI_APP_ID,
    )
    .unwrap();
    let holders = || async {
        keelson_server::db::fleetlock::holders_with_time(&server.db, Some("stable"))
            .await
            .map(|v| v.into_iter().map(|h| h.id).collect::<Vec<_>>())
    };

    // A slot held from an earlier boot (the state file says nothing): released at start.
    let staged = agent.store().load().unwrap();
    let mut rec = staged.clone();
    rec.state = State::Idle;
    agent.store().save(&rec).unwrap();
    keelson_server::db::fleetlock::lock(&server.db, "stable", &id)
        .await
        .unwrap();
    let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
    assert_eq!(rec.lock, LockPhase::Free);
    assert!(holders().await.unwrap().is_empty());

    // Staged while another node holds the only slot: no reboot, status says why.
    agent.store().save(&staged).unwrap();
    keelson_server::db::fleetlock::lock(&server.db, "stable", "other")
        .await
        .unwrap();
    let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
    assert!(matches!(rec.state, State::Staged { .. }), "{rec:?}");
    assert!(!log.exists(), "rebooted without the lock");
    assert!(agent.paths.reboot_required().exists());
    let status = agent.status().unwrap();
    assert_eq!(
        status.reboot.waiting_for.as_deref(),
        Some("lock_refused_lock_held")
    );
    assert!(format!("{status}").contains("fail closed"), "{status}");
    // The retry waits for its backoff.
    let again = agent.coordinate(RebootMode::Policy).await.unwrap();
    assert_eq!(again.lock_wait.as_ref().unwrap().attempts, 1);

    // The other node releases; after the backoff this one takes the slot and reboots once.
    keelson_server::db::fleetlock::unlock(&server.db, "stable", "other")
        .await
        .unwrap();
    let mut waited = agent.store().load().unwrap();
    if let Some(w) = &mut waited.lock_wait {
        w.retry_at = Utc::now() - chrono::Duration::seconds(1);
    }
    agent.store().save(&waited).unwrap();
    let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
    assert!(matches!(rec.state, State::RebootPending { .. }), "{rec:?}");
    assert_eq!(rec.lock, LockPhase::Held);
    assert_eq!(holders().await.unwrap(), vec![id.clone()]);
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);

    // New boot, not yet blessed: the slot is kept.
    let step = |rec: &Record, entry| {
        state::step(
            rec,
            &Input::Boot(BootFacts {
                running_version: "2.0.0".into(),
                target_entry: Some(entry),
            }),
            Utc::now(),
            chrono::Duration::minutes(45),
        )
    };
    let verifying = step(&rec, Counter::Counting { left: 2, done: 1 });
    assert!(matches!(verifying.state, State::Verifying { .. }));
    agent.store().save(&verifying).unwrap();
    let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
    assert_eq!(rec.lock, LockPhase::Held);
    assert_eq!(holders().await.unwrap(), vec![id.clone()]);

    // Blessed: released.
    agent.store().save(&step(&rec, Counter::Blessed)).unwrap();
    let rec = agent.coordinate(RebootMode::Policy).await.unwrap();
    assert_eq!(rec.lock, LockPhase::Free);
    assert!(holders().await.unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}
