//! The API, auth and dashboard tests' server: the whole router on a fresh database (see
//! [`super::env`]) with one admin and one viewer token.

use std::path::PathBuf;

use keelson_server::auth::{Role, create_token};
use keelson_server::db::Db;

use super::{APP, Backend};

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub base: String,
    pub admin: String,
    pub viewer: String,
    pub db: Db,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Upload limit used by the tests, small so the 413 path is cheap to hit.
pub const UPLOAD_LIMIT: u64 = 256 * 1024;

/// Start a server on `backend` with tokens for both roles.
pub async fn start(backend: Backend) -> TestServer {
    let env = super::env(backend).await;
    let admin = create_token(&env.db, Role::Admin, "test admin")
        .await
        .unwrap()
        .token;
    let viewer = create_token(&env.db, Role::Viewer, "test viewer")
        .await
        .unwrap()
        .token;
    let base = super::serve(&env, |config| config.upload_limit = UPLOAD_LIMIT).await;
    TestServer {
        base,
        admin,
        viewer,
        db: env.db,
        data_dir: env.data_dir,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: env.dir,
    }
}

/// The JSON body of a response, whatever its status; names the status and the text if it is
/// not JSON.
pub async fn json_of(r: reqwest::Response) -> serde_json::Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"))
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.admin)
    }

    /// The JSON body of a GET of `path` with the viewer token.
    pub async fn viewer_json(&self, path: &str) -> serde_json::Value {
        json_of(
            self.viewer(reqwest::Method::GET, path)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The JSON body of a GET of `path` with the admin token.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        json_of(self.admin(reqwest::Method::GET, path).send().await.unwrap()).await
    }

    /// A request with the viewer token.
    pub fn viewer(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.viewer)
    }

    /// Count rows of `table` (a fixed name from the test, never input).
    pub async fn count(&self, table: &str) -> i64 {
        super::count(&self.db, table).await
    }

    /// Seed the fleet used by several tests: app `keelson` with packages 1.0.0 and 2.0.0,
    /// channel `stable` at 2.0.0, group `prod` (track stable) on it, and `n` instances, the first
    /// half on 1.0.0 and the rest on 2.0.0, most recently seen first: `machine-0000` failed its
    /// update (status error, which halts the rollout), the others are complete. Everything goes
    /// through the production paths: the REST API and Omaha reports.
    pub async fn seed(&self, n: usize) {
        use reqwest::Method;
        let r = self
            .admin(Method::POST, "/api/v1/apps")
            .json(&serde_json::json!({"id": "{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}", "name": "Keelson OS"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        for v in ["1.0.0", "2.0.0"] {
            let r = self
                .admin(Method::POST, &format!("/api/v1/apps/{APP}/packages"))
                .json(&serde_json::json!({
                    "version": v, "filename": "keelson_update.gz",
                    "url": format!("https://updates.example.com/{v}"),
                    "size": 1000, "sha256_hex": "ab".repeat(32)
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
        let r = self
            .admin(Method::POST, &format!("/api/v1/apps/{APP}/channels"))
            .json(&serde_json::json!({"name": "stable", "version": "2.0.0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = self
            .admin(Method::POST, &format!("/api/v1/apps/{APP}/groups"))
            .json(&serde_json::json!({"name": "prod", "track": "stable", "channel": "stable"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        // The instances come the way production makes them: Omaha reports through
        // `db::rollout::handle_reports` (no SQL of the test's own).
        let now = chrono::Utc::now();
        for i in 0..n {
            let version = if i < n / 2 { "1.0.0" } else { "2.0.0" };
            let seen = now - chrono::Duration::seconds(i as i64);
            let mut r = super::report(&format!("machine-{i:04}"), version, seen);
            r.ip = "10.0.0.1".into();
            r.alias = format!("node-{i}");
            if i == 0 {
                // Granted 2.0.0, then failed: status history [error, update-granted].
                let mut check = r.clone();
                check.now = seen - chrono::Duration::seconds(500);
                super::handle_report(&self.db, &check).await.unwrap();
                r.events = vec![super::event(3, 0, Some(9), "")];
            } else {
                // Complete on its version (as after an update from 0.9.0).
                r.events = vec![super::event(3, 2, None, "0.9.0")];
            }
            r.update_check = false;
            super::handle_report(&self.db, &r).await.unwrap();
        }
    }
}
