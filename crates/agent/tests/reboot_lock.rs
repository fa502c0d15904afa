//! Reboot coordination under contention, with the real binary: 20 `keelson-agent daemon`
//! processes (`CARGO_BIN_EXE_keelson-agent`), each with its own root and state directory, its
//! own `/etc/keelson/update.toml` and an update staged (written through the agent's `Store`),
//! against keelson-server's FleetLock (a group with 2 slots) and a real etcd (locksmith's
//! semaphore, max 2). Each node's reboot command (`--reboot-command`) only appends
//! `start <node> <ns>` to a shared log and stops its agent, as systemd does for a reboot. The
//! test then boots the node: the new version's os-release and `usrhash=`, the UKI renamed as
//! systemd-boot counts a try, and a second daemon process on the same state directory, which
//! must keep the lock until the test blesses the boot (renames the UKI as systemd-bless-boot
//! does) and release it after.
//!
//! Checked from the lock service's side (its holders, polled all along) and from the recorded
//! times: at no moment more than 2 hold the lock, every node reboots exactly once, every slot
//! is free at the end. Then the same with the service stopped halfway (keelson-server shut
//! down and started again on the same port and database; etcd killed and started again on the
//! same port and data dir): every waiting node fails closed (`keelson-agent status --json` says
//! `lock_service_unavailable`), retries, reboots nothing while the service is down, and
//! finishes once it is back.
//!
//! etcd comes from the `etcd-server` package (`cargo xtask deps`); without `/usr/bin/etcd`
//! (or `$KEELSON_ETCD`) the etcd tests say so on stderr and pass, except under CI (`$CI`
//! set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use keelson_agent::agent::{Agent, RebootMode};
use keelson_agent::esp::Counter;
use keelson_agent::etcd::EtcdLock;
use keelson_agent::paths::Paths;
use keelson_agent::settings::Settings;
use keelson_agent::state::{self, BootFacts, Input, LockPhase, Record, State, Store, Target};
use keelson_disk::{Disk, Layout, UsrSlot};
use keelson_server::{AppState, ServerConfig};

const NODES: usize = 20;
const SLOTS: usize = 2;
const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
const MIB: u64 = 1 << 20;
const HASH_A: &str = "11111111111111111111111111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "22222222222222222222222222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const AGENT: &str = env!("CARGO_BIN_EXE_keelson-agent");
/// The agent's lock backoff for these tests: 20 ms doubling to 1.2 s (5 s to 5 min on nodes).
const BACKOFF_MS: &str = "20";
/// How often a second-boot daemon looks at its boot entry until it is blessed.
const VERIFY_POLL_MS: &str = "20";
/// How long one contention run may take before the test gives up on a node.
const NODE_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the test looks at files and the service.
const TICK: Duration = Duration::from_millis(10);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn machine_id(i: usize) -> String {
    format!("{:032x}", 0x5eed_0000 + i)
}

/// The disk every node boots from, read only: slot A holds 1.0.0, slot B 2.0.0 (what the
/// agent leaves once it staged 2.0.0), with the partition UUIDs of their root hashes.
fn shared_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    let layout = Layout {
        esp_size: MIB,
        usr_size: MIB,
        usr_verity_size: MIB,
        root_min_size: MIB,
        ..Layout::new(16 * MIB)
    };
    keelson_disk::create(&disk, &layout).unwrap();
    let (usr, verity) = (dir.join("part.usr"), dir.join("part.verity"));
    std::fs::write(&usr, vec![0x5a; 8192]).unwrap();
    std::fs::write(&verity, vec![0xa5; 4096]).unwrap();
    let mut d = Disk::open_rw(&disk).unwrap();
    for (slot, version, hash) in [(UsrSlot::A, "1.0.0", HASH_A), (UsrSlot::B, "2.0.0", HASH_B)] {
        d.install_usr_slot(slot, version, &hex::decode(hash).unwrap(), &usr, &verity)
            .unwrap();
    }
    d.commit().unwrap();
    disk
}

/// The update staged in slot B, as the agent records it.
fn staged_record() -> Record {
    Record {
        state: State::Staged {
            target: Target {
                version: "2.0.0".into(),
                url: "http://unused/p".into(),
                size: 1,
                sha256: "x".into(),
                extensions: vec![],
            },
            slot: "B".into(),
            previous_version: "1.0.0".into(),
        },
        // Checked and staged just now: the daemon coordinates the reboot without asking the
        // Omaha server again.
        last_check: Some(Utc::now()),
        lock: LockPhase::Free,
        ..Record::default()
    }
}

/// One node on the host: its root (settings, state, os-release, `/proc` files, ESP), the
/// shared disk, and a reboot script.
struct Node {
    i: usize,
    root: PathBuf,
    disk: PathBuf,
    /// The id the lock service knows this node by.
    lock_id: String,
    script: PathBuf,
}

impl Node {
    /// Node `i` running 1.0.0 from slot A with 2.0.0 staged in slot B (`keelson_2.0.0+3.efi`).
    fn new(
        base: &Path,
        i: usize,
        disk: &Path,
        reboot_toml: &str,
        log: &Path,
        fleetlock: bool,
    ) -> Node {
        let root = base.join(format!("node{i:02}"));
        let mid = machine_id(i);
        write(&root.join("etc/machine-id"), &format!("{mid}\n"));
        write(
            &root.join("etc/keelson/update.toml"),
            &format!("[update]\ngroup = \"stable\"\n\n{reboot_toml}"),
        );
        write(
            &root.join("usr/lib/os-release"),
            "ID=keelson\nVERSION_ID=1.0.0\n",
        );
        write(
            &root.join("proc/cmdline"),
            &format!("console=ttyS0 usrhash={HASH_A}\n"),
        );
        write(
            &root.join("proc/sys/kernel/random/boot_id"),
            &format!("{}\n", uuid::Uuid::new_v4()),
        );
        write(&root.join("efi/EFI/Linux/keelson_1.0.0.efi"), "uki 1.0.0");
        write(&root.join("efi/EFI/Linux/keelson_2.0.0+3.efi"), "uki 2.0.0");
        // The reboot: record the time, then stop the agent as systemd stops it for a reboot.
        let script = root.join("reboot.sh");
        write(
            &script,
            &format!(
                "#!/bin/sh\nprintf 'start %s %s\\n' {i} \"$(date +%s%N)\" >> '{}'\nkill -TERM \"$PPID\"\n",
                log.display()
            ),
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lock_id = if fleetlock {
            keelson_agent::lock::app_specific_id(&mid, keelson_agent::lock::ZINCATI_APP_ID).unwrap()
        } else {
            mid
        };
        let node = Node {
            i,
            root,
            disk: disk.to_owned(),
            lock_id,
            script,
        };
        node.agent().store().save(&staged_record()).unwrap();
        node
    }

    /// The agent library on this node's paths, to read and write its state.
    fn agent(&self) -> Agent {
        let mut paths = Paths::under(&self.root);
        paths.disk = Some(self.disk.clone());
        let settings = Settings::load(&paths).unwrap();
        Agent::new(paths, settings).unwrap()
    }

    /// The node's state, read as `status` reads it (the file is always whole).
    fn record(&self) -> Record {
        let paths = Paths::under(&self.root);
        Store::new(paths.state_file(), paths.lock_file())
            .load()
            .unwrap()
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(AGENT);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--disk")
            .arg(&self.disk)
            .arg("--reboot-command")
            .arg(&self.script)
            .args(["--lock-backoff-ms", BACKOFF_MS])
            .args(["--verify-poll-ms", VERIFY_POLL_MS]);
        cmd
    }

    /// `keelson-agent daemon` for boot `boot`, its log in the node's root.
    fn daemon(&self, boot: u32) -> tokio::process::Child {
        let log = std::fs::File::create(self.root.join(format!("agent-boot{boot}.log"))).unwrap();
        self.command()
            .arg("daemon")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// `keelson-agent status --json`.
    async fn status(&self) -> serde_json::Value {
        let out = self
            .command()
            .args(["status", "--json"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The agents' logs, for failure messages.
    fn logs(&self) -> String {
        (1..=2)
            .map(|b| {
                let p = self.root.join(format!("agent-boot{b}.log"));
                format!(
                    "--- node {} boot {b}:\n{}",
                    self.i,
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }

    /// The reboot into 2.0.0: its os-release and `usrhash=`, a new boot id, and the UKI with
    /// one try used (systemd-boot's `+3` -> `+2-1`), not yet blessed.
    fn boot_new_version(&self) {
        write(
            &self.root.join("usr/lib/os-release"),
            "ID=keelson\nVERSION_ID=2.0.0\n",
        );
        write(
            &self.root.join("proc/cmdline"),
            &format!("console=ttyS0 usrhash={HASH_B}\n"),
        );
        write(
            &self.root.join("proc/sys/kernel/random/boot_id"),
            &format!("{}\n", uuid::Uuid::new_v4()),
        );
        let linux = self.root.join("efi/EFI/Linux");
        std::fs::rename(
            linux.join("keelson_2.0.0+3.efi"),
            linux.join("keelson_2.0.0+2-1.efi"),
        )
        .unwrap();
    }

    /// boot-complete.target reached: systemd-bless-boot drops the counter.
    fn bless(&self) {
        let linux = self.root.join("efi/EFI/Linux");
        std::fs::rename(
            linux.join("keelson_2.0.0+2-1.efi"),
            linux.join("keelson_2.0.0.efi"),
        )
        .unwrap();
    }
}

/// The reboots in the shared log: node -> the times its reboot command ran.
fn reboots(log: &Path) -> BTreeMap<usize, Vec<u128>> {
    let mut out: BTreeMap<usize, Vec<u128>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut w = line.split_whitespace();
        assert_eq!(w.next(), Some("start"), "bad line {line:?}");
        let node: usize = w.next().unwrap().parse().unwrap();
        let at: u128 = w.next().unwrap().parse().unwrap();
        out.entry(node).or_default().push(at);
    }
    out
}

/// How the test asks the lock service who holds a slot.
#[derive(Clone)]
enum Watch {
    /// keelson-server's REST API (`GET /api/v1/fleetlock/holders?group=stable`).
    FleetLock {
        http: reqwest::Client,
        base: String,
        token: String,
    },
    /// The semaphore's value in etcd.
    Etcd(EtcdLock),
}

impl Watch {
    /// The holders, or `None` while the service does not answer.
    async fn holders(&self) -> Option<Vec<String>> {
        match self {
            Watch::FleetLock { http, base, token } => {
                let r = http
                    .get(format!("{base}/api/v1/fleetlock/holders?group=stable"))
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .ok()?;
                if !r.status().is_success() {
                    return None;
                }
                let list: Vec<serde_json::Value> = r.json().await.ok()?;
                Some(
                    list.iter()
                        .map(|h| h["id"].as_str().unwrap().to_owned())
                        .collect(),
                )
            }
            Watch::Etcd(lock) => lock
                .read()
                .await
                .ok()
                .map(|v| v.and_then(|(s, _)| s.holders).unwrap_or_default()),
        }
    }
}

#[derive(Default)]
struct Stats {
    /// Node -> when the test blessed its new boot (ns since the epoch).
    blessed: BTreeMap<usize, u128>,
    /// Every reason a node recorded for not rebooting or not releasing yet.
    reasons: BTreeSet<String>,
    /// Most holders the service reported at once.
    max_seen: usize,
    /// Every holder id the service ever reported.
    seen_ids: BTreeSet<String>,
}

fn note_reasons(rec: &Record, stats: &Mutex<Stats>) {
    let mut s = stats.lock().unwrap();
    if let Some(w) = &rec.lock_wait {
        s.reasons.insert(w.reason.clone());
    }
    if let Some(e) = &rec.last_error {
        s.reasons.insert(e.reason.clone());
    }
}

/// Waits until `done(record)`, failing with the node's logs when its daemon exits or time runs out.
async fn wait_for(
    node: &Node,
    child: &mut tokio::process::Child,
    stats: &Mutex<Stats>,
    what: &str,
    done: impl Fn(&Record) -> bool,
) -> Record {
    let start = Instant::now();
    loop {
        let rec = node.record();
        note_reasons(&rec, stats);
        if done(&rec) {
            return rec;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "node {}: daemon exited ({st}) before {what}: {rec:?}\n{}",
                node.i,
                node.logs()
            );
        }
        assert!(
            start.elapsed() < NODE_TIMEOUT,
            "node {}: no {what} in {NODE_TIMEOUT:?}: {rec:?}\n{}",
            node.i,
            node.logs()
        );
        tokio::time::sleep(TICK).await;
    }
}

/// One node's life: the first daemon waits for the lock and reboots (its reboot command stops
/// it); the second, on the new boot, keeps the lock until the boot is blessed, then releases.
async fn life(node: Arc<Node>, watch: Watch, stats: Arc<Mutex<Stats>>) {
    let mut first = node.daemon(1);
    let start = Instant::now();
    let exit = loop {
        tokio::select! {
            st = first.wait() => break st.unwrap(),
            () = tokio::time::sleep(TICK) => {
                note_reasons(&node.record(), &stats);
                assert!(
                    start.elapsed() < NODE_TIMEOUT,
                    "node {} never rebooted\n{}",
                    node.i,
                    node.logs()
                );
            }
        }
    };
    assert_eq!(
        exit.signal(),
        Some(15),
        "node {}: the first daemon ended by itself ({exit}), not by its reboot\n{}",
        node.i,
        node.logs()
    );
    let rec = node.record();
    assert!(
        matches!(rec.state, State::RebootPending { .. }) && rec.lock == LockPhase::Held,
        "node {}: rebooted as {rec:?}",
        node.i
    );

    node.boot_new_version();
    let mut second = node.daemon(2);
    let rec = wait_for(&node, &mut second, &stats, "verifying", |r| {
        matches!(r.state, State::Verifying { .. })
    })
    .await;
    assert_eq!(rec.lock, LockPhase::Held, "node {}", node.i);
    // Not blessed yet: the service still counts this node as a holder (when it answers).
    if let Some(h) = watch.holders().await {
        assert!(
            h.contains(&node.lock_id),
            "node {} released before its boot was blessed: {h:?}",
            node.i
        );
    }
    stats.lock().unwrap().blessed.insert(node.i, now_ns());
    node.bless();
    let rec = wait_for(&node, &mut second, &stats, "release", |r| {
        r.lock == LockPhase::Free
    })
    .await;
    assert!(
        matches!(rec.state, State::Complete { .. }),
        "node {}: {rec:?}",
        node.i
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

type BoxFut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// A lock service the test can stop and start again on the same address and data.
trait Outage: Send {
    fn stop(&mut self) -> BoxFut<'_>;
    fn start(&mut self) -> BoxFut<'_>;
}

/// Runs the nodes; with `outage`, stops the service once a third of them rebooted, checks that
/// the waiting nodes fail closed, and starts it again.
async fn contend(
    label: &str,
    nodes: Vec<Node>,
    log: &Path,
    watch: Watch,
    outage: Option<&mut dyn Outage>,
) -> Stats {
    let began = Instant::now();
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (stats, done, watch) = (stats.clone(), done.clone(), watch.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(h) = watch.holders().await {
                    let mut s = stats.lock().unwrap();
                    s.max_seen = s.max_seen.max(h.len());
                    s.seen_ids.extend(h);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(life(n.clone(), watch.clone(), stats.clone())))
        .collect();
    if let Some(o) = outage {
        while reboots(log).len() < NODES / 3 {
            tokio::time::sleep(TICK).await;
        }
        o.stop().await;
        let stopped_at = Utc::now();
        // Every node that has not rebooted tries, finds the service down and stays staged.
        // (A node whose lock was granted just before the stop reboots: it holds a slot.)
        let (rebooted, waiting) = loop {
            let rebooted: BTreeSet<usize> = reboots(log).into_keys().collect();
            let mut waiting = BTreeMap::new();
            let mut pending = 0;
            for n in nodes.iter().filter(|n| !rebooted.contains(&n.i)) {
                let rec = n.record();
                match &rec.lock_wait {
                    Some(w)
                        if matches!(rec.state, State::Staged { .. })
                            && w.reason == "lock_service_unavailable"
                            && w.retry_at > stopped_at =>
                    {
                        waiting.insert(n.i, w.attempts);
                    }
                    _ => pending += 1,
                }
            }
            if pending == 0 {
                break (rebooted, waiting);
            }
            tokio::time::sleep(TICK).await;
        };
        assert!(!waiting.is_empty());
        for &i in waiting.keys() {
            let st = nodes[i].status().await;
            assert_eq!(st["state"], "staged", "node {i}: {st:#}");
            assert_eq!(
                st["reboot"]["waiting_for"], "lock_service_unavailable",
                "node {i}: {st:#}"
            );
            assert!(
                !st["reboot"]["lock_wait"]["detail"]
                    .as_str()
                    .unwrap()
                    .is_empty(),
                "node {i}: {st:#}"
            );
        }
        // They keep trying (with backoff) while the service is down, and reboot nothing.
        for (&i, &attempts) in &waiting {
            loop {
                let rec = nodes[i].record();
                let now = rec.lock_wait.as_ref().map_or(0, |w| w.attempts);
                assert!(
                    matches!(rec.state, State::Staged { .. }),
                    "node {i} left staged while the service was down: {rec:?}"
                );
                if now > attempts {
                    break;
                }
                tokio::time::sleep(TICK).await;
            }
        }
        // The nodes that rebooted keep their slot while the service is down: once blessed,
        // they cannot give it back, and say so.
        let mut holding = 0;
        for &i in &rebooted {
            let rec = loop {
                let rec = nodes[i].record();
                let release_failed = matches!(rec.state, State::Complete { .. })
                    && rec.last_error.as_ref().is_some_and(|e| {
                        e.reason == "release_lock_service_unavailable" && e.at > stopped_at
                    });
                if rec.lock == LockPhase::Free || release_failed {
                    break rec;
                }
                tokio::time::sleep(TICK).await;
            };
            if rec.lock != LockPhase::Free {
                holding += 1;
                let st = nodes[i].status().await;
                assert_eq!(st["state"], "complete", "node {i}: {st:#}");
                assert_eq!(
                    st["last_error"]["reason"], "release_lock_service_unavailable",
                    "node {i}: {st:#}"
                );
                assert_eq!(st["reboot"]["lock"], "held", "node {i}: {st:#}");
            }
        }
        assert!(holding <= SLOTS, "{holding} nodes hold a slot");
        eprintln!(
            "outage ({label}): {} nodes failed closed, {holding} blessed node(s) kept their slot",
            waiting.len()
        );
        let after: BTreeSet<usize> = reboots(log).into_keys().collect();
        assert_eq!(
            after, rebooted,
            "a node rebooted while the lock service was down"
        );
        o.start().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    monitor.await.unwrap();
    eprintln!(
        "contention run ({label}): {NODES} agent processes, {SLOTS} slots, {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Arc::try_unwrap(stats)
        .ok()
        .expect("stats still shared")
        .into_inner()
        .unwrap()
}

/// The most nodes that were between "reboot command ran" and "boot blessed" at once. Each
/// node holds its lock over a longer span (from before the reboot to after the blessing), so
/// this can only undercount, never report an overlap that did not happen.
fn max_overlap(spans: &[(u128, u128)]) -> usize {
    let mut ev: Vec<(u128, i32)> = spans
        .iter()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    ev.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    usize::try_from(max).unwrap()
}

fn check(stats: &Stats, log: &Path, nodes: &BTreeSet<String>, waited: &str, outage: bool) {
    let reboots = reboots(log);
    assert_eq!(reboots.len(), NODES, "not every node rebooted: {reboots:?}");
    let mut spans = Vec::new();
    for (i, times) in &reboots {
        assert_eq!(times.len(), 1, "node {i} rebooted {} times", times.len());
        let blessed = stats.blessed[i];
        assert!(times[0] < blessed, "node {i} blessed before its reboot");
        spans.push((times[0], blessed));
    }
    let overlap = max_overlap(&spans);
    assert!(
        (1..=SLOTS).contains(&overlap),
        "{overlap} nodes between reboot and blessed boot at once"
    );
    assert!(
        stats.max_seen <= SLOTS,
        "the service reported {} holders at once",
        stats.max_seen
    );
    assert!(stats.max_seen >= 1, "the service never reported a holder");
    assert!(
        stats.seen_ids.is_subset(nodes),
        "unknown holders: {:?}",
        stats.seen_ids
    );
    assert!(
        stats.reasons.contains(waited),
        "nobody ever waited for a slot ({waited}): {:?}",
        stats.reasons
    );
    if outage {
        assert!(
            stats.reasons.contains("lock_service_unavailable"),
            "the outage was never noticed: {:?}",
            stats.reasons
        );
    }
}

// ---- keelson-server's FleetLock ----

/// keelson-server on a SQLite file; stopped (shut down, database closed) and started again
/// (database reopened) on the same port.
struct FleetLockServer {
    addr: SocketAddr,
    url: String,
    db: keelson_server::db::Db,
    data: PathBuf,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl FleetLockServer {
    async fn new(dir: &Path) -> (FleetLockServer, String) {
        let url = format!("sqlite://{}", dir.join("server.db").display());
        let db = keelson_server::db::Db::connect(&url).await.unwrap();
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
            url,
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

    /// Creates the app and group `stable` with `slots` FleetLock slots.
    async fn group(&self, admin: &str, slots: Option<usize>) {
        let base = self.base();
        let http = reqwest::Client::new();
        let policy = match slots {
            Some(n) => serde_json::json!({"fleetlock_slots": n}),
            None => serde_json::json!({}),
        };
        for (path, body) in [
            (
                "/api/v1/apps".to_string(),
                serde_json::json!({"id": APP, "name": "Keelson"}),
            ),
            (
                format!("/api/v1/apps/{APP}/groups"),
                serde_json::json!({"name": "stable", "policy": policy}),
            ),
        ] {
            let r = http
                .post(format!("{base}{path}"))
                .bearer_auth(admin)
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
    }
}

impl Outage for FleetLockServer {
    fn stop(&mut self) -> BoxFut<'_> {
        Box::pin(async move {
            if let Some((tx, handle)) = self.running.take() {
                let _ = tx.send(());
                handle.await.unwrap();
            }
            self.db.pool().close().await;
        })
    }
    fn start(&mut self) -> BoxFut<'_> {
        Box::pin(async move {
            self.db = keelson_server::db::Db::connect(&self.url).await.unwrap();
            self.serve().await;
        })
    }
}

async fn fleetlock_run(outage: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, admin) = FleetLockServer::new(dir.path()).await;
    server.group(&admin, Some(SLOTS)).await;
    let base = server.base();
    let toml = format!("[reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"{base}\"\n");
    let disk = shared_disk(dir.path());
    let log = dir.path().join("reboots.log");
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| Node::new(dir.path(), i, &disk, &toml, &log, true))
        .collect();
    let ids: BTreeSet<String> = nodes.iter().map(|n| n.lock_id.clone()).collect();
    let watch = Watch::FleetLock {
        http: reqwest::Client::new(),
        base,
        token: admin,
    };
    let label = if outage {
        "fleetlock, server stopped halfway"
    } else {
        "fleetlock"
    };
    let stats = contend(
        label,
        nodes,
        &log,
        watch.clone(),
        outage.then_some(&mut server as &mut dyn Outage),
    )
    .await;
    check(&stats, &log, &ids, "lock_refused_lock_held", outage);
    assert_eq!(watch.holders().await, Some(vec![]), "slots left held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_twenty_agent_processes_two_slots() {
    fleetlock_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_twenty_agent_processes_server_stopped_halfway() {
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .unwrap();
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
        for _ in 0..600 {
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
    let disk = shared_disk(dir.path());
    let log = dir.path().join("reboots.log");
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| Node::new(dir.path(), i, &disk, &toml, &log, false))
        .collect();
    let ids: BTreeSet<String> = nodes.iter().map(|n| n.lock_id.clone()).collect();
    let label = if outage {
        "etcd-lock, etcd killed halfway"
    } else {
        "etcd-lock"
    };
    let stats = contend(
        label,
        nodes,
        &log,
        Watch::Etcd(admin.clone()),
        outage.then_some(&mut etcd as &mut dyn Outage),
    )
    .await;
    check(&stats, &log, &ids, "lock_full", outage);
    let (sem, _) = admin.read().await.unwrap().unwrap();
    assert_eq!(sem.holders, None, "holders left: {sem:?}");
    assert_eq!((sem.semaphore, sem.max), (SLOTS as i64, SLOTS as i64));
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_twenty_agent_processes_max_two() {
    etcd_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_twenty_agent_processes_etcd_killed_halfway() {
    etcd_run(true).await;
}

// ---- one node, step by step, in process ----

/// Node 0 as an in-process [`Agent`] whose reboot command records the time in `reboots.log`.
fn agent_node(base: &Path, reboot_toml: &str) -> (Agent, PathBuf) {
    let root = base.join("node00");
    write(
        &root.join("etc/machine-id"),
        &format!("{}\n", machine_id(0)),
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
    agent.store().save(&staged_record()).unwrap();
    (agent, log)
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
    server.group(&admin, None).await;
    let toml = format!("[reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"{base}\"\n");
    let (mut agent, log) = agent_node(dir.path(), &toml);
    // Long enough that the retry below is always inside the backoff.
    agent.lock_backoff_base = Duration::from_secs(3600);
    let id =
        keelson_agent::lock::app_specific_id(&machine_id(0), keelson_agent::lock::ZINCATI_APP_ID)
            .unwrap();
    let holders = || async {
        keelson_server::db::fleetlock::holders_with_time(&server.db, Some("stable"))
            .await
            .map(|v| v.into_iter().map(|h| h.id).collect::<Vec<_>>())
    };

    // A slot held from an earlier boot (the state file says nothing): released at start.
    let staged = agent.store().load().unwrap();
    agent.store().save(&Record::default()).unwrap();
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
