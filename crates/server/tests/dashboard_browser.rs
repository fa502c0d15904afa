//! The dashboard in headless Chromium, driven over WebDriver (chromedriver): log in, edit a
//! policy through the form and check it in the API, see a bad value refused, see the viewer's
//! read-only form, and save screenshots under `target/screenshots/`.
//!
//! WebDriver over plain HTTP needs nothing but reqwest; chromedriver comes from the Debian
//! package `chromium-driver` (installed by `cargo xtask deps`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{APP, Backend, TestServer, start};
use reqwest::Method;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    async fn start() -> Driver {
        for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install the Debian package {what} (`cargo xtask deps` does it)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not come up on {base}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {r}"))
            .to_string();
        Driver {
            child,
            base,
            http,
            session,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == Method::POST {
            req = req.json(&json!({}));
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.cmd(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn title(&self) -> String {
        self.cmd(Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Find an element, waiting up to 10 s for it to appear (pages load after clicks).
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let v: Value = self
                .http
                .post(&url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = v["value"][ELEMENT_KEY].as_str() {
                return id.to_string();
            }
            if Instant::now() > deadline {
                let src = self.cmd(Method::GET, "/source", None).await;
                panic!("no element {css} on {}: {}", self.url().await, src);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.cmd(
            Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0)
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(Method::POST, &format!("/element/{el}/clear"), None)
            .await;
        self.cmd(
            Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd(Method::POST, &format!("/element/{el}/click"), None)
            .await;
    }

    async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd(Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        let el = self.find(css).await;
        self.cmd(Method::GET, &format!("/element/{el}/property/{name}"), None)
            .await
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots")
}

/// A fleet worth looking at: two groups mid-rollout, some failures, some activity.
async fn seed_fleet(s: &TestServer) {
    s.seed(40).await;
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/groups"))
        .json(
            &json!({"name": "canary", "track": "beta", "channel": "stable",
                      "policy": {"rollout_percent": 25, "safe_mode": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let canary: Value = r.json().await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let ids: Vec<(i64, String)> = sqlx::query_as("SELECT id, version FROM instances ORDER BY id")
        .fetch_all(s.db.pool())
        .await
        .unwrap();
    for (n, (id, version)) in ids.iter().enumerate() {
        if n % 5 == 4 {
            sqlx::query("UPDATE instances SET group_id = $1, version = '1.0.0' WHERE id = $2")
                .bind(canary["id"].as_i64().unwrap())
                .bind(id)
                .execute(s.db.pool())
                .await
                .unwrap();
        }
        if version == "2.0.0" || n < 3 {
            let outcome: i64 = if n < 3 { 2 } else { 1 };
            sqlx::query(
                "INSERT INTO grants (group_id, instance_id, from_version, to_version, rollout_version, outcome, granted_at) \
                 SELECT group_id, id, '1.0.0', '2.0.0', '2.0.0', $1, $2 FROM instances WHERE id = $3",
            )
            .bind(outcome)
            .bind(now - 600)
            .bind(id)
            .execute(s.db.pool())
            .await
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_login_policy_edit_and_screenshot() {
    let s = start(Backend::Sqlite).await;
    seed_fleet(&s).await;
    let d = Driver::start().await;

    // Without the cookie every page leads to the login form.
    d.goto(&s.url("/ui")).await;
    assert!(d.url().await.ends_with("/login"), "{}", d.url().await);
    d.screenshot("dashboard-login.png").await;
    d.fill("#token", "kt_wrong").await;
    d.click("#login").await;
    assert!(d.text(".flash.bad").await.contains("Unknown"));

    // Admin logs in and sees the groups with their version bars.
    d.fill("#token", &s.admin).await;
    d.click("#login").await;
    d.find("#group-prod").await;
    assert!(d.title().await.starts_with("Groups"));
    assert!(d.count(".bar > div").await >= 2, "version bars missing");
    assert!(d.text("#group-prod").await.contains("on target"));
    d.screenshot("dashboard-groups.png").await;

    // Edit the policy through the form.
    d.click("#group-prod h2 a").await;
    d.find("#save-policy").await;
    d.fill("#max_updates_per_period", "42").await;
    d.fill("#timezone", "Europe/Berlin").await;
    d.fill("#maintenance_windows", "sat,sun 22:00-04:00").await;
    d.click("#safe_mode").await;
    d.click("#save-policy").await;
    assert!(d.text("#saved").await.contains("saved"));
    let p: Value = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
        .await;
    assert_eq!(p["max_updates_per_period"], 42);
    assert_eq!(p["timezone"], "Europe/Berlin");
    assert_eq!(p["safe_mode"], true);
    assert_eq!(
        p["maintenance_windows"],
        json!([{"days": ["sat", "sun"], "start": "22:00", "end": "04:00"}])
    );
    assert_eq!(p["updates_enabled"], true, "an untouched checkbox flipped");

    // A bad value is refused with the field named, and nothing is stored.
    d.fill("#max_updates_per_period", "0").await;
    d.fill("#timezone", "Atlantis/Capital").await;
    d.click("#save-policy").await;
    let err = d.text("#policy-error").await;
    assert!(err.contains("max_updates_per_period"), "{err}");
    let p2: Value = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
        .await;
    assert_eq!(p, p2);
    d.goto(&s.url(&format!("/ui/apps/{APP}/groups/prod"))).await;
    d.find("#save-policy").await;
    d.screenshot("dashboard-group.png").await;

    // Instances with history, and the activity stream showing the change.
    d.click("a[href^='/ui/instances/']").await;
    d.find("#history").await;
    assert!(d.text("#history").await.contains("update-granted"));
    d.screenshot("dashboard-instance.png").await;
    d.goto(&s.url("/ui/activity")).await;
    assert!(
        d.text("#activity")
            .await
            .contains("max_updates_per_period: 1000000 -> 42")
            || d.text("#activity").await.contains("-> 42")
    );
    d.screenshot("dashboard-activity.png").await;

    // A viewer sees the same form read-only.
    d.click(".who button").await;
    d.fill("#token", &s.viewer).await;
    d.click("#login").await;
    d.find("#group-prod").await;
    d.goto(&s.url(&format!("/ui/apps/{APP}/groups/prod"))).await;
    assert_eq!(
        d.property("#max_updates_per_period", "disabled").await,
        json!(true)
    );
    assert_eq!(d.count("#save-policy").await, 0);
    d.quit().await;

    // And the form endpoint refuses a viewer even when posted directly.
    let r = s
        .http
        .post(s.url(&format!("/ui/apps/{APP}/groups/prod/policy")))
        .header("cookie", format!("keelson_token={}", s.viewer))
        .form(&[("max_updates_per_period", "7")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let p3: Value = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
        .await;
    assert_eq!(p3["max_updates_per_period"], 42);
}
