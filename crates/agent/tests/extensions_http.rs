//! Independent extensions against the real keelson-server (SQLite, on 127.0.0.1:0): the
//! extension is its own application whose packages are `.raw` files; the agent, on a temp
//! root, asks for it with the version it has, downloads and checks the file, swaps
//! `/var/lib/extensions/NAME.raw` and runs the refresh command (a script here that records
//! what the link resolves to), and the server's instance for the extension's app shows the
//! 3/2 and 3/0 events. No disk: the extension pass needs none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use keelson_agent::agent::Agent;
use keelson_agent::extensions;
use keelson_agent::paths::Paths;
use keelson_agent::settings::Settings;
use keelson_server::{AppState, ServerConfig};

const EXT_APP: &str = "5b2b5a9c-0c1e-4f6a-9d51-3c2f8e7a6b10";
const MACHINE: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    base: String,
    admin: String,
    http: reqwest::Client,
    /// What the link resolved to at each refresh, one line each.
    refresh_log: PathBuf,
}

impl Fixture {
    async fn new(extra_settings: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("usr/lib/os-release", "ID=keelson\nVERSION_ID=1.0.0\n");
        w("etc/machine-id", &format!("{MACHINE}\n"));
        w(
            "proc/sys/kernel/random/boot_id",
            "b0b0b0b0-0000-4000-8000-000000000001\n",
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let data = dir.path().join("server");
        std::fs::create_dir_all(&data).unwrap();
        let db = keelson_server::db::Db::connect(&format!(
            "sqlite://{}",
            dir.path().join("server.db").display()
        ))
        .await
        .unwrap();
        let admin =
            keelson_server::auth::create_token(&db, keelson_server::auth::Role::Admin, "ext test")
                .await
                .unwrap()
                .token;
        let mut config = ServerConfig::new(&data);
        config.public_url = Some(base.clone());
        let router = keelson_server::router(AppState::new(db, config));
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap();
        });
        w(
            "etc/keelson/update.toml",
            &format!(
                "[update]\nserver = \"{base}/v1/update/\"\ngroup = \"stable\"\n\n[reboot]\nstrategy = \"off\"\n\n[extensions.tools]\napp_id = \"{EXT_APP}\"\n{extra_settings}"
            ),
        );
        let refresh_log = dir.path().join("refresh.log");
        let f = Fixture {
            dir,
            root,
            base,
            admin,
            http: reqwest::Client::new(),
            refresh_log,
        };
        f.admin_post(
            "/api/v1/apps",
            serde_json::json!({"id": format!("{{{EXT_APP}}}"), "name": "tools extension"}),
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

    /// Uploads `bytes` as the extension's package `version` (`tools_{version}.raw`) and
    /// points channel `stable` (group `prod`, track `stable`) at it.
    async fn publish(&self, version: &str, bytes: &[u8]) {
        let r = self
            .http
            .put(format!(
                "{}/api/v1/apps/{EXT_APP}/packages/{version}/payload?filename=tools_{version}.raw",
                self.base
            ))
            .bearer_auth(&self.admin)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let channels = self
            .admin_get(&format!("/api/v1/apps/{EXT_APP}/channels"))
            .await;
        if channels.as_array().is_some_and(|c| !c.is_empty()) {
            let r = self
                .http
                .put(format!(
                    "{}/api/v1/apps/{EXT_APP}/channels/stable",
                    self.base
                ))
                .bearer_auth(&self.admin)
                .json(&serde_json::json!({"version": version}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        } else {
            self.admin_post(
                &format!("/api/v1/apps/{EXT_APP}/channels"),
                serde_json::json!({"name": "stable", "version": version}),
            )
            .await;
            self.admin_post(
                &format!("/api/v1/apps/{EXT_APP}/groups"),
                serde_json::json!({"name": "prod", "track": "stable", "channel": "stable"}),
            )
            .await;
        }
    }

    fn paths(&self) -> Paths {
        Paths::under(&self.root)
    }

    /// An agent whose refresh command runs `body` (with `$LINK` the extension's link and
    /// `$LOG` the refresh log).
    fn agent(&self, refresh_body: &str) -> Agent {
        use std::os::unix::fs::PermissionsExt as _;
        let paths = self.paths();
        let script = self.dir.path().join("refresh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nLINK={}\nLOG={}\n{refresh_body}\n",
                extensions::independent_link(&paths, "tools").display(),
                self.refresh_log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let settings = Settings::load(&paths).unwrap();
        let mut agent = Agent::new(paths, settings).unwrap();
        agent.sysext_refresh_command = vec![script.to_string_lossy().into_owned()];
        agent
    }

    async fn check(&self, refresh_body: &str) -> extensions::View {
        let agent = self.agent(refresh_body);
        let _lock = agent.store().lock(false).unwrap();
        agent.extensions_check().await.unwrap();
        extensions::views(&agent.paths, &agent.settings)
            .into_iter()
            .find(|v| v.name == "tools")
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.refresh_log).unwrap_or_default()
    }

    /// The extension app's instance: its version and events (oldest first, without the
    /// checks' 3/2 with no previous version) as (type, result, code, previous, reason).
    async fn instance(&self) -> (String, Vec<(i64, i64, Option<i64>, String, Option<String>)>) {
        let page = self
            .admin_get(&format!("/api/v1/instances?app={EXT_APP}&q={MACHINE}"))
            .await;
        let id = page["instances"][0]["id"]
            .as_i64()
            .expect("instance listed");
        let d = self.admin_get(&format!("/api/v1/instances/{id}")).await;
        let mut events: Vec<_> = d["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["event_type"].as_i64().unwrap(),
                    e["event_result"].as_i64().unwrap(),
                    e["error_code"].as_i64(),
                    e["previous_version"].as_str().unwrap_or("").to_owned(),
                    e["reason"].as_str().map(str::to_owned),
                )
            })
            .filter(|e| !(e.0 == 3 && e.1 == 2 && e.3.is_empty()))
            .collect();
        events.reverse();
        (d["version"].as_str().unwrap_or("").to_owned(), events)
    }
}

const RECORD: &str = "cat \"$LINK\" >> \"$LOG\"; echo >> \"$LOG\"";

fn files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("var/lib/keelson/extensions/tools"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_extension_is_installed_updated_and_merged_without_a_reboot() {
    let f = Fixture::new("").await;
    // Nothing published yet: no link, no refresh.
    let v = f.check(RECORD).await;
    assert_eq!(v.version, None);
    assert!(v.last_check.is_some(), "the check was answered");
    assert_eq!(f.log(), "");

    f.publish("1.0", b"tools one").await;
    let v = f.check(RECORD).await;
    assert_eq!(v.version.as_deref(), Some("1.0"), "{v:?}");
    assert_eq!(
        v.link.as_deref(),
        Some("../keelson/extensions/tools/tools_1.0.raw")
    );
    assert_eq!(f.log(), "tools one\n", "refreshed once with 1.0 linked");
    assert!(v.last_error.is_none() && v.pending_reports == 0, "{v:?}");
    let (version, events) = f.instance().await;
    assert_eq!(events, vec![(3, 2, None, "0.0.0".into(), None)]);
    assert_eq!(version, "1.0", "the report carries the version now linked");
    // The next check reports 1.0 and nothing changes.
    let v = f.check(RECORD).await;
    assert_eq!(v.version.as_deref(), Some("1.0"));
    assert_eq!(f.log(), "tools one\n");
    assert_eq!(
        f.instance().await.0,
        "1.0",
        "the server sees the version the node has"
    );

    f.publish("1.1", b"tools one-one").await;
    let v = f.check(RECORD).await;
    assert_eq!(v.version.as_deref(), Some("1.1"));
    assert_eq!(f.log(), "tools one\ntools one-one\n");
    assert_eq!(files(&f.root), ["tools_1.0.raw", "tools_1.1.raw"]);
    let (_, events) = f.instance().await;
    assert_eq!(
        events.last().unwrap(),
        &(3, 2, None, "1.0".to_owned(), None)
    );

    // 1.2 does not merge: 1.1 is linked and merged again, 3/0 with the reason, and 1.2 is
    // not tried again until `reset`.
    f.publish("1.2", b"tools bad").await;
    let picky = format!("{RECORD}; [ \"$(cat \"$LINK\")\" != 'tools bad' ] || exit 1");
    let v = f.check(&picky).await;
    assert_eq!(v.version.as_deref(), Some("1.1"));
    assert_eq!(
        f.log(),
        "tools one\ntools one-one\ntools bad\ntools one-one\n"
    );
    assert_eq!(v.refused, ["1.2"]);
    assert_eq!(v.last_error.as_ref().unwrap().reason, "sysext_refresh");
    let (_, events) = f.instance().await;
    assert_eq!(
        events.last().unwrap(),
        &(
            3,
            0,
            Some(5),
            String::new(),
            Some("sysext_refresh".to_owned())
        )
    );
    let v = f.check(RECORD).await;
    assert_eq!(v.version.as_deref(), Some("1.1"), "refused: not retried");
    assert_eq!(f.log().lines().count(), 4);
    // The refused file is gone; the current and the previous one stay.
    assert_eq!(files(&f.root), ["tools_1.0.raw", "tools_1.1.raw"]);

    // `reset` clears the refusal: 1.2 is tried again and, merging now, taken.
    f.agent(RECORD).reset().unwrap();
    let v = f.check(RECORD).await;
    assert_eq!(v.version.as_deref(), Some("1.2"));
    assert!(v.refused.is_empty() && v.last_error.is_none());
    assert_eq!(files(&f.root), ["tools_1.1.raw", "tools_1.2.raw"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_its_own_and_a_server_without_the_app() {
    // The extension asks with its own group's track: only that group's channel is seen.
    let f = Fixture::new("group = \"edge\"\n").await;
    f.publish("1.0", b"stable one").await;
    let v = f.check(RECORD).await;
    assert_eq!(v.group.as_deref(), Some("edge"));
    assert_eq!(v.version, None, "group edge has no channel yet: {v:?}");
    f.admin_post(
        &format!("/api/v1/apps/{EXT_APP}/groups"),
        serde_json::json!({"name": "edge", "track": "edge", "channel": "stable"}),
    )
    .await;
    let v = f.check(RECORD).await;
    assert_eq!(v.version.as_deref(), Some("1.0"));

    // An app the server does not know: the error is the extension's, the pass goes on.
    let g = Fixture::new("").await;
    std::fs::write(
        g.root.join("etc/keelson/update.toml"),
        format!(
            "[update]\nserver = \"{}/v1/update/\"\n\n[extensions.tools]\napp_id = \"00000000-0000-4000-8000-000000000000\"\n",
            g.base
        ),
    )
    .unwrap();
    let v = g.check(RECORD).await;
    assert_eq!(v.version, None);
    let e = v.last_error.expect("the failed check is recorded");
    assert!(!e.reason.is_empty(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_checked_before_it_takes_the_files_name() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = axum::Router::new().route(
        "/jq.raw",
        axum::routing::get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { b"the jq image".to_vec() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jq.raw", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("jq/os-2.0.0.raw");
    let http = reqwest::Client::new();
    use sha2::Digest as _;
    let good = hex::encode(sha2::Sha256::digest(b"the jq image"));
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.path().join("jq"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };

    let e = extensions::fetch_verified(&http, "jq", &url, 12, &"0".repeat(64), &dest)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "extension_hash");
    assert!(e.to_string().contains(&good), "{e}");
    assert!(listing().is_empty(), "nothing kept: {:?}", listing());
    let e = extensions::fetch_verified(&http, "jq", &url, 11, &good, &dest)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "extension_size");
    let e = extensions::fetch_verified(&http, "jq", &url, 13, &good, &dest)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "extension_size");
    assert!(listing().is_empty());
    let e = extensions::fetch_verified(&http, "jq", &url, 12, "abc", &dest)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "extension_bad_offer");
    let e = extensions::fetch_verified(&http, "jq", &format!("{url}.missing"), 12, &good, &dest)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "extension_download");
    assert!(e.is_transient());

    assert!(
        extensions::fetch_verified(&http, "jq", &url, 12, &good.to_uppercase(), &dest)
            .await
            .unwrap()
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"the jq image");
    assert_eq!(listing(), ["os-2.0.0.raw"]);
    let before = hits.load(Ordering::SeqCst);
    assert!(
        !extensions::fetch_verified(&http, "jq", &url, 12, &good, &dest)
            .await
            .unwrap(),
        "a matching file is kept"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "and not downloaded again"
    );
    // A damaged copy is downloaded again.
    std::fs::write(&dest, b"the jq imagE").unwrap();
    assert!(
        extensions::fetch_verified(&http, "jq", &url, 12, &good, &dest)
            .await
            .unwrap()
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"the jq image");
}
