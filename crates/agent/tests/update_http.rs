//! The agent against the real keelson-server (SQLite, on 127.0.0.1:0): a payload built with
//! keelson-payload from fake parts is uploaded through the REST API, and the agent, on a temp
//! root (a GPT image made with keelson-disk as the disk, a directory as the ESP), checks,
//! downloads through a proxy that can cut a download, writes the inactive slot and installs the
//! UKI with `+3`; the server's instance shows the events. Each refusal leaves the ESP and the
//! partition table as they were and is visible in `status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{Duration, Utc};
use keelson_agent::agent::{Agent, CycleOptions, RebootMode};
use keelson_agent::paths::Paths;
use keelson_agent::settings::Settings;
use keelson_agent::state::State as AgentState;
use keelson_disk::{Disk, Layout, UsrSlot};
use keelson_payload::testing::noise;
use keelson_payload::{BuildInput, BuildOptions, SigningKeyFile};
use keelson_server::{AppState, ServerConfig};

const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
const MIB: u64 = 1 << 20;
const HASH_A: &str = "11111111111111111111111111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "22222222222222222222222222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CHUNK: u64 = 256 * 1024;

/// A UKI-shaped PE (keelson-payload's test helper) with a `.linux` big enough for two chunks.
fn fake_uki(cmdline: &str) -> Vec<u8> {
    use keelson_payload::testing::{MACHINE_X86_64, minimal_pe};
    let cmdline = format!("{cmdline}\n");
    minimal_pe(
        MACHINE_X86_64,
        &[
            (".osrel", b"ID=keelson\n"),
            (".cmdline", cmdline.as_bytes()),
            (".linux", &noise(300_000, 9)),
        ],
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    disk: PathBuf,
    work: PathBuf,
    key: SigningKeyFile,
    base: String,
    admin: String,
    http: reqwest::Client,
    /// Payload requests through the proxy so far.
    proxied: Arc<AtomicUsize>,
    /// The proxied request number whose body is cut in the middle (0 = none).
    cut_at: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    count: Arc<AtomicUsize>,
    cut_at: Arc<AtomicUsize>,
}

/// Forwards payload GETs (with their Range) to the server; the `cut_at`-th one sends half its
/// body and then fails, as a dropped connection does.
async fn proxy(State(p): State<Proxy>, req: Request) -> Response {
    let n = p.count.fetch_add(1, Ordering::SeqCst) + 1;
    let mut up = p.http.get(format!("{}{}", p.upstream, req.uri()));
    if let Some(r) = req.headers().get("range") {
        up = up.header("range", r.to_str().unwrap());
    }
    let r = up.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let mut builder = Response::builder().status(status.as_u16());
    for (k, v) in headers.iter() {
        builder = builder.header(k.as_str(), v.as_bytes());
    }
    if n == p.cut_at.load(Ordering::SeqCst) {
        let half = bytes.slice(..bytes.len() / 2);
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::other("connection dropped by the test")),
        ]);
        return builder.body(Body::from_stream(stream)).unwrap();
    }
    builder.body(Body::from(bytes)).unwrap()
}

async fn serve(router: axum::Router, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        // The node: os-release 1.0.0 booted from slot A.
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("usr/lib/os-release", "ID=keelson\nVERSION_ID=1.0.0\n");
        w("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        w(
            "proc/sys/kernel/random/boot_id",
            "b0b0b0b0-0000-4000-8000-000000000001\n",
        );
        w(
            "proc/cmdline",
            &format!("console=ttyS0 usrhash={HASH_A} mount.usrfstype=erofs\n"),
        );
        w("efi/EFI/Linux/keelson_1.0.0.efi", "old uki");
        let disk = dir.path().join("disk.img");
        let layout = Layout {
            esp_size: MIB,
            usr_size: 4 * MIB,
            usr_verity_size: MIB,
            root_min_size: MIB,
            ..Layout::new(16 * MIB)
        };
        keelson_disk::create(&disk, &layout).unwrap();
        std::fs::write(work.join("a.usr"), noise(MIB as usize, 1)).unwrap();
        std::fs::write(work.join("a.verity"), noise(4096, 2)).unwrap();
        let mut d = Disk::open_rw(&disk).unwrap();
        d.install_usr_slot(
            UsrSlot::A,
            "1.0.0",
            &hex::decode(HASH_A).unwrap(),
            &work.join("a.usr"),
            &work.join("a.verity"),
        )
        .unwrap();
        d.commit().unwrap();
        // Trusted key.
        let k = keelson_payload::generate_key(&work, "dev").unwrap();
        let keys = root.join("usr/share/keelson/update-keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::copy(&k.public, keys.join("dev.pem")).unwrap();
        let key = SigningKeyFile::load(&k.private).unwrap();

        // The server, with payload URLs pointing at the cutting proxy.
        let server_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", server_l.local_addr().unwrap());
        let proxy_base = format!("http://{}", proxy_l.local_addr().unwrap());
        let data = dir.path().join("server");
        std::fs::create_dir_all(&data).unwrap();
        let db = keelson_server::db::Db::connect(&format!(
            "sqlite://{}",
            dir.path().join("server.db").display()
        ))
        .await
        .unwrap();
        let admin = keelson_server::auth::create_token(
            &db,
            keelson_server::auth::Role::Admin,
            "agent test",
        )
        .await
        .unwrap()
        .token;
        let mut config = ServerConfig::new(&data);
        config.public_url = Some(proxy_base.clone());
        serve(keelson_server::router(AppState::new(db, config)), server_l).await;
        let proxied = Arc::new(AtomicUsize::new(0));
        let cut_at = Arc::new(AtomicUsize::new(0));
        let p = Proxy {
            upstream: base.clone(),
            http: reqwest::Client::new(),
            count: proxied.clone(),
            cut_at: cut_at.clone(),
        };
        serve(axum::Router::new().fallback(proxy).with_state(p), proxy_l).await;
        w(
            "etc/keelson/update.toml",
            &format!(
                "[update]\nserver = \"{base}/v1/update/\"\ngroup = \"stable\"\n\n[reboot]\nstrategy = \"off\"\ntime_zone = \"UTC\"\n"
            ),
        );
        let f = Fixture {
            _dir: dir,
            root,
            disk,
            work,
            key,
            base,
            admin,
            http: reqwest::Client::new(),
            proxied,
            cut_at,
        };
        f.admin_post(
            "/api/v1/apps",
            serde_json::json!({"id": format!("{{{APP}}}"), "name": "Keelson"}),
        )
        .await;
        f
    }

    async fn admin_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        common::admin_post(&self.http, &self.base, &self.admin, path, body).await
    }

    async fn admin_get(&self, path: &str) -> serde_json::Value {
        common::admin_get(&self.http, &self.base, &self.admin, path).await
    }

    /// Builds `keelson_<version>.payload` with `tweak` applied to the options and the input.
    fn build(
        &self,
        version: &str,
        key: &SigningKeyFile,
        tweak: impl FnOnce(&mut BuildOptions, &mut BuildInput),
    ) -> PathBuf {
        let d = self.work.join(version);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("usr"), noise(3 * MIB as usize / 2, 3)).unwrap();
        std::fs::write(d.join("verity"), noise(8192, 4)).unwrap();
        std::fs::write(
            d.join("uki"),
            fake_uki(&format!("console=ttyS0 usrhash={HASH_B} ro")),
        )
        .unwrap();
        let mut input = BuildInput {
            os_id: "keelson".into(),
            arch: keelson_agent::boot::systemd_arch().into(),
            version: version.into(),
            usr_root_hash: HASH_B.into(),
            usr: d.join("usr"),
            usr_verity: d.join("verity"),
            uki: d.join("uki"),
        };
        let mut opts = BuildOptions {
            chunking: keelson_payload::Chunking::fixed(CHUNK),
            keys: vec![key],
            ..BuildOptions::default()
        };
        tweak(&mut opts, &mut input);
        let out = d.join(format!("keelson_{version}.payload"));
        keelson_payload::build(&input, &out, &opts).unwrap();
        out
    }

    /// Uploads a payload as package `version` and points channel `stable` (and group `prod`,
    /// track `stable`) at it.
    async fn publish(&self, version: &str, payload: &Path) {
        let name = payload.file_name().unwrap().to_str().unwrap();
        let r = self
            .http
            .put(format!(
                "{}/api/v1/apps/{APP}/packages/{version}/payload?filename={name}",
                self.base
            ))
            .bearer_auth(&self.admin)
            .body(std::fs::read(payload).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        self.admin_post(
            &format!("/api/v1/apps/{APP}/channels"),
            serde_json::json!({"name": "stable", "version": version}),
        )
        .await;
        self.admin_post(
            &format!("/api/v1/apps/{APP}/groups"),
            serde_json::json!({"name": "prod", "track": "stable", "channel": "stable"}),
        )
        .await;
    }

    fn agent(&self) -> Agent {
        let mut paths = Paths::under(&self.root);
        paths.disk = Some(self.disk.clone());
        let settings = Settings::load(&paths).unwrap();
        Agent::new(paths, settings).unwrap()
    }

    async fn cycle(&self) -> keelson_agent::state::Record {
        let agent = self.agent();
        let _lock = agent.store().lock(false).unwrap();
        agent
            .cycle(CycleOptions {
                on_demand: false,
                reboot: RebootMode::Policy,
                check: true,
            })
            .await
            .unwrap()
            .0
    }

    /// The ESP's files and the GPT bytes, to prove a refusal changed neither.
    fn snapshot(&self) -> (Vec<String>, Vec<u8>, Vec<u8>) {
        let mut esp: Vec<String> = std::fs::read_dir(self.root.join("efi/EFI/Linux"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        esp.sort();
        let img = std::fs::read(&self.disk).unwrap();
        let primary = img[..(34 * 512)].to_vec();
        let backup = img[img.len() - 33 * 512..].to_vec();
        (esp, primary, backup)
    }

    async fn events(&self) -> Vec<(i64, i64, Option<i64>, String)> {
        let page = self
            .admin_get("/api/v1/instances?q=0123456789abcdef0123456789abcdef")
            .await;
        let id = page["instances"][0]["id"]
            .as_i64()
            .expect("instance listed");
        let detail = self.admin_get(&format!("/api/v1/instances/{id}")).await;
        let mut out: Vec<_> = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["event_type"].as_i64().unwrap(),
                    e["event_result"].as_i64().unwrap(),
                    e["error_code"].as_i64(),
                    e["previous_version"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        out.reverse(); // oldest first
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_resumes_after_a_cut_and_stages_the_inactive_slot() {
    let f = Fixture::new().await;
    let payload = f.build("2.0.0", &f.key, |_, _| {});
    f.publish("2.0.0", &payload).await;
    let slot_a_before = {
        let img = std::fs::read(&f.disk).unwrap();
        let d = Disk::open(&f.disk).unwrap();
        let p = d.partition(UsrSlot::A.usr_partition()).unwrap();
        let off = (p.first_lba * 512) as usize;
        img[off..off + MIB as usize].to_vec()
    };

    // Cut the 5th payload request: 2 header requests, then chunks 0 and 1 of usr, then 2.
    f.cut_at.store(5, Ordering::SeqCst);
    let rec = f.cycle().await;
    let AgentState::Downloading { progress, .. } = &rec.state else {
        panic!(
            "expected to stay downloading after the cut: {:?}",
            rec.state
        )
    };
    assert_eq!(progress.part.as_deref(), Some("usr"));
    assert_eq!(progress.next_chunk, 2, "chunks 0 and 1 were written");
    assert_eq!(rec.last_error.as_ref().unwrap().reason, "download");
    let status = f.agent().status().unwrap();
    assert_eq!(status.state, "downloading");
    assert_eq!(status.progress.as_ref().unwrap().bytes_done, 2 * CHUNK);

    // The second run resumes at chunk 2: only the header and the remaining chunks are fetched.
    let before = f.proxied.load(Ordering::SeqCst);
    let rec = f.cycle().await;
    let AgentState::Staged { slot, target, .. } = &rec.state else {
        panic!("expected staged: {:?}", rec.state)
    };
    assert_eq!((slot.as_str(), target.version.as_str()), ("B", "2.0.0"));
    let m = keelson_payload::read_header_file(&payload).unwrap();
    let manifest = keelson_payload::Manifest::from_bytes(&m.manifest_bytes).unwrap();
    let total_chunks: usize = manifest.parts.iter().map(|p| p.chunks.len()).sum();
    assert_eq!(
        f.proxied.load(Ordering::SeqCst) - before,
        2 + total_chunks - 2,
        "header (2 requests) plus every chunk but the two already written"
    );
    assert!(
        rec.outbox.is_empty(),
        "every report delivered: {:?}",
        rec.outbox
    );

    // Slot B holds the new usr and verity bytes, with UUIDs from the root hash and labels.
    let d = Disk::open(&f.disk).unwrap();
    let img = std::fs::read(&f.disk).unwrap();
    let usr_b = d.partition(UsrSlot::B.usr_partition()).unwrap();
    let verity_b = d.partition(UsrSlot::B.verity_partition()).unwrap();
    let want_usr = std::fs::read(f.work.join("2.0.0/usr")).unwrap();
    let off = (usr_b.first_lba * 512) as usize;
    assert!(
        img[off..off + want_usr.len()] == want_usr[..],
        "usr B bytes"
    );
    let want_verity = std::fs::read(f.work.join("2.0.0/verity")).unwrap();
    let off = (verity_b.first_lba * 512) as usize;
    assert!(
        img[off..off + want_verity.len()] == want_verity[..],
        "verity B bytes"
    );
    let (u, v) = keelson_disk::uuids_from_root_hash(&hex::decode(HASH_B).unwrap()).unwrap();
    assert_eq!((usr_b.uuid, verity_b.uuid), (u, v));
    assert_eq!(usr_b.label, "keelson_2.0.0");
    assert_eq!(verity_b.label, "keelson_2.0.0_verity");
    // Slot A (running) untouched.
    let a = d.partition(UsrSlot::A.usr_partition()).unwrap();
    let off = (a.first_lba * 512) as usize;
    assert!(
        img[off..off + MIB as usize] == slot_a_before[..],
        "slot A untouched"
    );
    assert_eq!(a.label, "keelson_1.0.0");

    // The UKI is installed with three tries, next to the running version's.
    let (esp, _, _) = f.snapshot();
    assert_eq!(esp, vec!["keelson_1.0.0.efi", "keelson_2.0.0+3.efi"]);
    assert_eq!(
        std::fs::read(f.root.join("efi/EFI/Linux/keelson_2.0.0+3.efi")).unwrap(),
        std::fs::read(f.work.join("2.0.0/uki")).unwrap()
    );

    // The server saw 13/1, 14/1 and 3/1 (after the check's 3/2 with no previous version).
    let events: Vec<(i64, i64)> = f
        .events()
        .await
        .into_iter()
        .map(|(t, r, _, _)| (t, r))
        .filter(|e| *e != (3, 2))
        .collect();
    assert_eq!(events, vec![(13, 1), (14, 1), (3, 1)]);
}

async fn refused(
    name: &str,
    want_reason: &str,
    make: impl FnOnce(&Fixture) -> PathBuf,
    publish_as: &str,
) {
    let f = Fixture::new().await;
    let payload = make(&f);
    f.publish(publish_as, &payload).await;
    let before = f.snapshot();
    let rec = f.cycle().await;
    let AgentState::Failed { reason, .. } = &rec.state else {
        panic!("{name}: expected failed: {:?}", rec.state)
    };
    assert_eq!(reason, want_reason, "{name}");
    assert_eq!(f.snapshot(), before, "{name}: ESP or GPT changed");
    let status = f.agent().status().unwrap();
    assert_eq!(status.state, "failed", "{name}");
    assert_eq!(status.last_error.unwrap().reason, want_reason, "{name}");
    assert!(format!("{}", f.agent().status().unwrap()).contains(want_reason));
    // The failure reached the server as 3/0 with a code.
    let events = f.events().await;
    assert!(
        events
            .iter()
            .any(|(t, r, c, _)| (*t, *r) == (3, 0) && c.is_some()),
        "{name}: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_chunk_is_refused() {
    refused(
        "tampered",
        "chunk_hash",
        |f| {
            let p = f.build("2.0.0", &f.key, |_, _| {});
            let h = keelson_payload::read_header_file(&p).unwrap();
            let m = keelson_payload::Manifest::from_bytes(&h.manifest_bytes).unwrap();
            let c = &m.parts[0].chunks[1];
            let mut bytes = std::fs::read(&p).unwrap();
            let at = (h.data_start + c.data_offset + c.data_size / 2) as usize;
            bytes[at] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            p
        },
        "2.0.0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_refused() {
    refused(
        "unknown key",
        "unknown_key",
        |f| {
            let other = keelson_payload::generate_key(&f.work, "other").unwrap();
            let other = SigningKeyFile::load(&other.private).unwrap();
            f.build("2.0.0", &other, |_, _| {})
        },
        "2.0.0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_manifest_is_refused() {
    refused(
        "expired",
        "expired",
        |f| {
            f.build("2.0.0", &f.key, |o, _| {
                o.created = Utc::now() - Duration::days(10);
                o.expires_in = Duration::days(1);
            })
        },
        "2.0.0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_is_refused() {
    // The server offers "2.0.0" but the signed manifest inside is 0.9.0, older than 1.0.0.
    refused(
        "older",
        "not_newer",
        |f| f.build("0.9.0", &f.key, |_, _| {}),
        "2.0.0",
    )
    .await;
}

/// A node with 2.0.0 staged in slot B (UKI `keelson_2.0.0+3.efi`).
async fn staged() -> Fixture {
    let f = Fixture::new().await;
    let payload = f.build("2.0.0", &f.key, |_, _| {});
    f.publish("2.0.0", &payload).await;
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "staged", "{:?}", rec.state);
    f
}

impl Fixture {
    /// What a reboot into `version` (root hash `hash`) looks like to the agent, with the new
    /// version's UKI renamed as systemd-boot / systemd-bless-boot would have.
    fn booted(&self, version: &str, hash: &str, uki_name: &str) {
        std::fs::write(
            self.root.join("usr/lib/os-release"),
            format!("ID=keelson\nVERSION_ID={version}\n"),
        )
        .unwrap();
        std::fs::write(
            self.root.join("proc/cmdline"),
            format!("console=ttyS0 usrhash={hash}\n"),
        )
        .unwrap();
        std::fs::write(
            self.root.join("proc/sys/kernel/random/boot_id"),
            format!("{}\n", uuid::Uuid::new_v4()),
        )
        .unwrap();
        let linux = self.root.join("efi/EFI/Linux");
        std::fs::rename(linux.join("keelson_2.0.0+3.efi"), linux.join(uki_name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blessed_boot_is_reported_complete_with_the_previous_version() {
    let f = staged().await;
    // First boot of 2.0.0, not yet blessed: verifying, nothing reported.
    f.booted("2.0.0", HASH_B, "keelson_2.0.0+2-1.efi");
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "verifying");
    assert!(!f.events().await.iter().any(|e| e.3 == "1.0.0"));
    // boot-complete.target reached: systemd-bless-boot dropped the counter.
    std::fs::rename(
        f.root.join("efi/EFI/Linux/keelson_2.0.0+2-1.efi"),
        f.root.join("efi/EFI/Linux/keelson_2.0.0.efi"),
    )
    .unwrap();
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "complete", "{:?}", rec.state);
    assert!(rec.outbox.is_empty());
    let events = f.events().await;
    assert!(
        events
            .iter()
            .any(|(t, r, _, prev)| (*t, *r) == (3, 2) && prev == "1.0.0"),
        "{events:?}"
    );
    let status = f.agent().status().unwrap();
    assert_eq!(status.running_version.as_deref(), Some("2.0.0"));
    assert_eq!(status.running_slot.as_deref(), Some("B"));
    assert_eq!(status.other_version.as_deref(), Some("1.0.0"));

    // `rollback`: 1.0.0 boots from now on, 2.0.0's entry is gone and 2.0.0 is refused.
    let agent = f.agent();
    let rec = agent.rollback().unwrap();
    assert_eq!(rec.state.name(), "rolled-back");
    assert_eq!(rec.refused, vec!["2.0.0".to_string()]);
    let (esp, _, _) = f.snapshot();
    assert_eq!(esp, vec!["keelson_1.0.0.efi"]);
    let rec = agent.reset().unwrap();
    assert!(rec.refused.is_empty() && rec.state.name() == "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_never_blessed_is_a_rollback_and_never_retried() {
    let f = staged().await;
    // Three failed tries; systemd-boot went back to 1.0.0.
    f.booted("1.0.0", HASH_A, "keelson_2.0.0+0-3.efi");
    let rec = f.cycle().await;
    let AgentState::RolledBack {
        version, reason, ..
    } = &rec.state
    else {
        panic!("{:?}", rec.state)
    };
    assert_eq!(
        (version.as_str(), reason.as_str()),
        ("2.0.0", "boot_not_blessed")
    );
    assert_eq!(rec.refused, vec!["2.0.0".to_string()]);
    let events = f.events().await;
    assert!(
        events
            .iter()
            .any(|(t, r, c, _)| (*t, *r, *c) == (3, 0, Some(44))),
        "{events:?}"
    );
    // The server may offer 2.0.0 again; the node does not take it.
    let fetched = f.proxied.load(Ordering::SeqCst);
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "rolled-back");
    assert_eq!(
        f.proxied.load(Ordering::SeqCst),
        fetched,
        "no download started"
    );
    let status = f.agent().status().unwrap();
    assert_eq!(status.refused, vec!["2.0.0".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_written_but_not_marked_done_is_verified_from_disk_on_resume() {
    let f = Fixture::new().await;
    let payload = f.build("2.0.0", &f.key, |_, _| {});
    f.publish("2.0.0", &payload).await;
    // 2 header requests + 6 usr chunks, then the first verity chunk is cut.
    f.cut_at.store(9, Ordering::SeqCst);
    let rec = f.cycle().await;
    let AgentState::Downloading { progress, .. } = &rec.state else {
        panic!("{:?}", rec.state)
    };
    assert_eq!(progress.parts_done, vec!["usr".to_string()]);
    // A power cut between the last chunk's save and "usr done": the state says chunk 6 of
    // usr is next, which is past its end.
    let state_file = f.root.join("var/lib/keelson/agent/state.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    json["state"]["progress"]["parts_done"] = serde_json::json!([]);
    json["state"]["progress"]["part"] = serde_json::json!("usr");
    json["state"]["progress"]["next_chunk"] = serde_json::json!(6);
    std::fs::write(&state_file, serde_json::to_vec(&json).unwrap()).unwrap();
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "staged", "{:?}", rec.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_after_the_uki_rename_resumes_to_staged() {
    let f = staged().await;
    // The state as saved just before `Applied`: every part done, still downloading.
    let state_file = f.root.join("var/lib/keelson/agent/state.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let target = json["state"]["target"].clone();
    json["state"] = serde_json::json!({
        "state": "downloading",
        "target": target,
        "previous_version": "1.0.0",
        "progress": {"slot": "B", "parts_done": ["usr", "usr-verity", "uki"], "part": null,
                     "next_chunk": 0, "bytes_done": 0, "bytes_total": 0},
    });
    std::fs::write(&state_file, serde_json::to_vec(&json).unwrap()).unwrap();
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "staged", "{:?}", rec.state);
    let (esp, _, _) = f.snapshot();
    assert_eq!(esp, vec!["keelson_1.0.0.efi", "keelson_2.0.0+3.efi"]);
    let d = Disk::open(&f.disk).unwrap();
    assert_eq!(
        d.partition(UsrSlot::B.usr_partition()).unwrap().label,
        "keelson_2.0.0"
    );
}

impl Fixture {
    /// Slot B holds an older version, 0.9.0, with its boot entry on the ESP: what an apply
    /// would clear before writing, and what a refusal must leave alone.
    fn old_version_in_slot_b(&self) {
        std::fs::write(self.work.join("b.usr"), noise(MIB as usize, 21)).unwrap();
        std::fs::write(self.work.join("b.verity"), noise(4096, 22)).unwrap();
        let mut d = Disk::open_rw(&self.disk).unwrap();
        d.install_usr_slot(
            UsrSlot::B,
            "0.9.0",
            &hex::decode(HASH_B).unwrap(),
            &self.work.join("b.usr"),
            &self.work.join("b.verity"),
        )
        .unwrap();
        d.commit().unwrap();
        std::fs::write(self.root.join("efi/EFI/Linux/keelson_0.9.0.efi"), "0.9 uki").unwrap();
    }

    /// The whole disk image (partition table and both slots).
    fn disk_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.disk).unwrap()
    }

    fn store(&self) -> PathBuf {
        self.root.join("var/lib/keelson/chunks")
    }

    fn store_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.store()) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn manifest_of(payload: &Path) -> keelson_payload::Manifest {
    let h = keelson_payload::read_header_file(payload).unwrap();
    keelson_payload::Manifest::from_bytes(&h.manifest_bytes).unwrap()
}

/// Issue #10 7d: a chunk that fails its check, found after most of the payload was fetched,
/// is refused with nothing outside /var/lib/keelson changed: the GPT (both copies), the old
/// version's slot and boot entry, the ESP listing, byte for byte; the chunk store is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_chunk_leaves_the_partition_table_the_old_slot_and_the_esp_unchanged() {
    let f = Fixture::new().await;
    f.old_version_in_slot_b();
    let p = f.build("2.0.0", &f.key, |_, _| {});
    // Flip a byte of the UKI's last chunk: the last chunk fetched.
    let h = keelson_payload::read_header_file(&p).unwrap();
    let m = manifest_of(&p);
    let c = m.parts[2].chunks.last().unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let at = (h.data_start + c.data_offset + c.data_size / 2) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    f.publish("2.0.0", &p).await;
    let esp_before = f.snapshot().0;
    assert!(esp_before.contains(&"keelson_0.9.0.efi".to_string()));
    let disk_before = f.disk_bytes();

    let rec = f.cycle().await;
    let AgentState::Failed { reason, .. } = &rec.state else {
        panic!("expected failed: {:?}", rec.state)
    };
    assert_eq!(reason, "chunk_hash");
    assert_eq!(f.snapshot().0, esp_before, "ESP listing changed");
    assert!(
        f.disk_bytes() == disk_before,
        "the disk image (GPT or a slot) changed"
    );
    let d = Disk::open(&f.disk).unwrap();
    assert_eq!(
        d.partition(UsrSlot::B.usr_partition()).unwrap().label,
        "keelson_0.9.0"
    );
    assert!(f.store_files().is_empty(), "{:?}", f.store_files());
    assert_eq!(
        f.agent().status().unwrap().last_error.unwrap().reason,
        "chunk_hash"
    );
}

/// Chunk reuse (#13): v2's usr is v1's (slot A) with an insertion; with content-defined
/// chunks the agent takes most of it from slot A, downloads the rest, and slot B ends up
/// with exactly v2's bytes. The old version in slot B is replaced only after the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_the_active_slot_are_reused_and_only_the_rest_downloaded() {
    let f = Fixture::new().await;
    f.old_version_in_slot_b();
    let v1 = std::fs::read(f.work.join("a.usr")).unwrap();
    let mut v2 = v1[..300_000].to_vec();
    v2.extend_from_slice(&noise(5000, 77));
    v2.extend_from_slice(&v1[300_000..]);
    v2.extend_from_slice(&noise(100_000, 78));
    let usr = f.work.join("v2.usr");
    std::fs::write(&usr, &v2).unwrap();
    let payload = f.build("2.0.0", &f.key, |o, i| {
        o.chunking = keelson_payload::Chunking::default();
        i.usr = usr.clone();
    });
    f.publish("2.0.0", &payload).await;
    let m = manifest_of(&payload);
    let usr_chunks = m.parts[0].chunks.len();
    let total: usize = m.parts.iter().map(|p| p.chunks.len()).sum();
    assert!(usr_chunks >= 8, "{usr_chunks} usr chunks");

    let before = f.proxied.load(Ordering::SeqCst);
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "staged", "{:?}", rec.state);
    let requests = f.proxied.load(Ordering::SeqCst) - before;
    // Header (2), the verity and UKI chunks (nothing shared with slot A), and at most the
    // usr chunks around the insertion and the new tail.
    let others = total - usr_chunks;
    assert!(
        requests <= 2 + others + 4,
        "{requests} requests for {usr_chunks} usr chunks"
    );
    let d = Disk::open(&f.disk).unwrap();
    let img = f.disk_bytes();
    let off = (d.partition(UsrSlot::B.usr_partition()).unwrap().first_lba * 512) as usize;
    assert!(img[off..off + v2.len()] == v2[..], "usr B bytes");
    assert_eq!(
        d.partition(UsrSlot::B.usr_partition()).unwrap().label,
        "keelson_2.0.0"
    );
    // 0.9.0's entry went with its slot; the store is gone once installed.
    assert_eq!(
        f.snapshot().0,
        vec!["keelson_1.0.0.efi", "keelson_2.0.0+3.efi"]
    );
    assert!(f.store_files().is_empty(), "{:?}", f.store_files());
}

/// A chunk in the store that no longer matches its hash (bit rot, a write lost to a power
/// cut) is dropped and downloaded again; the slot gets only verified bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_stored_chunk_is_fetched_again_never_written() {
    let f = Fixture::new().await;
    let payload = f.build("2.0.0", &f.key, |_, _| {});
    f.publish("2.0.0", &payload).await;
    // Cut the 5th request: chunks 0 and 1 of usr are in the store.
    f.cut_at.store(5, Ordering::SeqCst);
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "downloading", "{:?}", rec.state);
    let m = manifest_of(&payload);
    let stored = |i: usize| {
        f.store()
            .join(format!("{}.zst", m.parts[0].chunks[i].sha256))
    };
    assert!(stored(0).is_file() && stored(1).is_file());
    // Chunk 0: one flipped byte. Chunk 1: cut short.
    let mut b = std::fs::read(stored(0)).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(stored(0), b).unwrap();
    let b = std::fs::read(stored(1)).unwrap();
    std::fs::write(stored(1), &b[..b.len() / 3]).unwrap();

    let before = f.proxied.load(Ordering::SeqCst);
    let rec = f.cycle().await;
    assert_eq!(rec.state.name(), "staged", "{:?}", rec.state);
    let total: usize = m.parts.iter().map(|p| p.chunks.len()).sum();
    assert_eq!(
        f.proxied.load(Ordering::SeqCst) - before,
        2 + total,
        "the header and every chunk, the two bad copies included"
    );
    let d = Disk::open(&f.disk).unwrap();
    let img = f.disk_bytes();
    let want = std::fs::read(f.work.join("2.0.0/usr")).unwrap();
    let off = (d.partition(UsrSlot::B.usr_partition()).unwrap().first_lba * 512) as usize;
    assert!(img[off..off + want.len()] == want[..], "usr B bytes");
}

/// A manifest (signed by a trusted key) naming a chunking this agent does not know is refused
/// with its own reason, before anything is fetched or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_chunking_algorithm_is_refused() {
    refused(
        "unknown chunking",
        "unknown_chunking",
        |f| {
            let p = f.build("2.0.0", &f.key, |_, _| {});
            let bytes = std::fs::read(&p).unwrap();
            let h = keelson_payload::read_header(&bytes[..]).unwrap();
            let text = String::from_utf8(h.manifest_bytes.clone()).unwrap();
            let text = text.replacen("\"fixed\"", "\"rabin-2030\"", 1);
            assert_ne!(text.as_bytes(), &h.manifest_bytes[..]);
            let sig = f.key.sign_manifest(text.as_bytes());
            let header = keelson_payload::Header::new(text.into_bytes(), vec![sig]).unwrap();
            let mut out = header.to_bytes().unwrap();
            out.extend_from_slice(&bytes[h.data_start as usize..]);
            std::fs::write(&p, out).unwrap();
            p
        },
        "2.0.0",
    )
    .await;
}

/// Enables the OS-bound extension `name` in the node's settings.
fn enable_bound(f: &Fixture, name: &str) {
    let p = f.root.join("etc/keelson/update.toml");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(&format!("\n[extensions.{name}]\nbound = \"os\"\n"));
    std::fs::write(p, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_os_bound_extension_the_update_lacks_fails_it_before_any_write() {
    let f = Fixture::new().await;
    enable_bound(&f, "jq");
    let payload = f.build("2.0.0", &f.key, |_, _| {});
    f.publish("2.0.0", &payload).await;
    let before = f.snapshot();
    let rec = f.cycle().await;
    let AgentState::Failed { reason, detail, .. } = &rec.state else {
        panic!("expected failed: {:?}", rec.state)
    };
    assert_eq!(reason, "extension_missing");
    assert!(
        detail.contains("OS version 2.0.0") && detail.contains("jq.raw"),
        "names the extension: {detail}"
    );
    assert_eq!(f.snapshot(), before, "ESP or GPT changed");
    assert_eq!(
        f.proxied.load(Ordering::SeqCst),
        0,
        "not one byte of the payload was fetched"
    );
    assert!(!f.root.join("var/lib/keelson/chunks").exists());
    // `status --json` says it.
    let json = serde_json::to_value(f.agent().status().unwrap()).unwrap();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["detail"]["reason"], "extension_missing");
    assert_eq!(json["extensions"][0]["name"], "jq");
    assert_eq!(json["extensions"][0]["kind"], "os-bound");
    // The server got 3/0 with update_engine's response-handler code and the reason.
    let events = f.events().await;
    assert!(
        events
            .iter()
            .any(|(t, r, c, _)| (*t, *r, *c) == (3, 0, Some(3))),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_bound_extensions_are_fetched_with_the_update_and_linked_for_the_booted_version() {
    let f = Fixture::new().await;
    enable_bound(&f, "jq");
    enable_bound(&f, "htop");
    let payload = f.build("2.0.0", &f.key, |_, _| {});
    f.publish("2.0.0", &payload).await;
    let attach = |name: &'static str, body: &'static [u8]| {
        let f = &f;
        async move {
            let r = f
                .http
                .put(format!(
                    "{}/api/v1/apps/{APP}/packages/2.0.0/extensions/{name}",
                    f.base
                ))
                .bearer_auth(&f.admin)
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    };
    attach("jq", b"jq built for 2.0.0").await;
    // htop is not attached yet: the update fails naming htop only.
    let rec = f.cycle().await;
    let AgentState::Failed { reason, detail, .. } = &rec.state else {
        panic!("expected failed: {:?}", rec.state)
    };
    assert_eq!(reason, "extension_missing");
    assert!(
        detail.contains("htop.raw") && !detail.contains("jq.raw"),
        "{detail}"
    );
    attach("htop", b"htop built for 2.0.0").await;
    f.agent().reset().unwrap();
    let rec = f.cycle().await;
    let AgentState::Staged { target, .. } = &rec.state else {
        panic!("expected staged: {:?}", rec.state)
    };
    assert_eq!(
        target
            .extensions
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["htop", "jq"]
    );
    let store = f.root.join("var/lib/keelson/extensions");
    assert_eq!(
        std::fs::read(store.join("jq/os-2.0.0.raw")).unwrap(),
        b"jq built for 2.0.0"
    );
    assert_eq!(
        std::fs::read(store.join("htop/os-2.0.0.raw")).unwrap(),
        b"htop built for 2.0.0"
    );

    // Still on 1.0.0 (not rebooted): jq has no file for it, nothing is linked, and the file
    // for the staged version is kept.
    let out = f.agent().extensions_link().unwrap();
    assert_eq!(out.os_version, "1.0.0");
    assert!(out.extensions.iter().all(|e| e.file.is_none()), "{out:?}");
    assert!(out.removed.is_empty());
    assert!(store.join("jq/os-2.0.0.raw").exists());

    // "Booted" 2.0.0: /run/extensions/jq.raw resolves to the file fetched with the update.
    std::fs::write(
        f.root.join("usr/lib/os-release"),
        "ID=keelson\nVERSION_ID=2.0.0\n",
    )
    .unwrap();
    std::fs::write(store.join("jq/os-0.9.0.raw"), b"old").unwrap();
    let out = f.agent().extensions_link().unwrap();
    assert_eq!(out.os_version, "2.0.0");
    assert_eq!(
        std::fs::read(f.root.join("run/extensions/jq.raw")).unwrap(),
        b"jq built for 2.0.0"
    );
    assert_eq!(
        std::fs::read(f.root.join("run/extensions/htop.raw")).unwrap(),
        b"htop built for 2.0.0"
    );
    assert!(!store.join("jq/os-0.9.0.raw").exists(), "{out:?}");
    let json = serde_json::to_value(f.agent().status().unwrap()).unwrap();
    assert_eq!(json["extensions"][1]["name"], "jq");
    assert_eq!(json["extensions"][1]["version"], "2.0.0");
}
