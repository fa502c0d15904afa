//! Shared by the API, auth and dashboard tests: a real server on 127.0.0.1:0 over SQLite or a
//! fresh PostgreSQL database, with one admin and one viewer token.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use keelson_server::auth::{Role, create_token};
use keelson_server::db::Db;
use keelson_server::{AppState, ServerConfig};

/// Which database a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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

/// The PostgreSQL URL from the environment; the test fails (never skips) without it.
pub fn postgres_url() -> String {
    std::env::var("KEELSON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "KEELSON_TEST_POSTGRES_URL is not set: run the PostgreSQL variants via `cargo xtask test` \
             (it starts a throwaway cluster), or point the variable at a server you started"
        )
    })
}

/// A fresh, empty database of `backend` with the migrations applied.
pub async fn fresh_db(backend: Backend, dir: &std::path::Path) -> Db {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.join("keelson.db").display());
            Db::connect(&url).await.unwrap()
        }
        Backend::Postgres => {
            let base = postgres_url();
            let name = format!("keelson_api_{}", uuid::Uuid::new_v4().simple());
            {
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&base).await.unwrap_or_else(|e| {
                    panic!("connecting to KEELSON_TEST_POSTGRES_URL {base}: {e}")
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            let (head, query) = match base.split_once('?') {
                Some((h, q)) => (h.to_string(), format!("?{q}")),
                None => (base.clone(), String::new()),
            };
            let after_scheme = head.find("://").map(|i| i + 3).unwrap_or(0);
            let url = match head[after_scheme..].find('/') {
                Some(slash) => format!("{}/{name}{query}", &head[..after_scheme + slash]),
                None => format!("{head}/{name}{query}"),
            };
            Db::connect(&url).await.unwrap()
        }
    }
}

/// Start a server on `backend` with tokens for both roles.
pub async fn start(backend: Backend) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(backend, dir.path()).await;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut config = ServerConfig::new(&data_dir);
    config.upload_limit = UPLOAD_LIMIT;
    let admin = create_token(&db, Role::Admin, "test admin")
        .await
        .unwrap()
        .token;
    let viewer = create_token(&db, Role::Viewer, "test viewer")
        .await
        .unwrap()
        .token;
    let app = keelson_server::router(AppState::new(db.clone(), config));
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
    TestServer {
        base: format!("http://{addr}"),
        admin,
        viewer,
        db,
        data_dir,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    }
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

    /// A request with the viewer token.
    pub fn viewer(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.viewer)
    }

    /// Count rows of `table` (a fixed name from the test, never input).
    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        n
    }

    /// Seed the fleet used by several tests: app `keelson` with packages 1.0.0 and 2.0.0,
    /// channel `stable` at 2.0.0, group `prod` (track stable) on it, and `n` instances, the first
    /// half on 1.0.0 and the rest on 2.0.0, each with a short status history.
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
        let group: serde_json::Value = r.json().await.unwrap();
        let group_id = group["id"].as_i64().unwrap();
        let now = chrono::Utc::now().timestamp();
        for i in 0..n {
            let version = if i < n / 2 { "1.0.0" } else { "2.0.0" };
            let status: i64 = if i == 0 { 3 } else { 4 };
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO instances (machine_id, application_id, group_id, version, status, ip, alias, last_check, created_at) \
                 VALUES ($1, $2, $3, $4, $5, '10.0.0.1', $6, $7, $8) RETURNING id",
            )
            .bind(format!("machine-{i:04}"))
            .bind(APP)
            .bind(group_id)
            .bind(version)
            .bind(status)
            .bind(format!("node-{i}"))
            .bind(now - i as i64)
            .bind(now - 1000)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
            for (s, msg) in [(2_i64, "granted 2.0.0"), (status, "reported")] {
                sqlx::query(
                    "INSERT INTO instance_status_history (instance_id, status, version, message, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(s)
                .bind(version)
                .bind(msg)
                .bind(now - 500)
                .execute(self.db.pool())
                .await
                .unwrap();
            }
        }
    }
}

/// The application ID the seed uses (normalized form).
pub const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";

/// For each `name`, define module `name` with tests `sqlite` and `postgres` that run
/// `name(backend)`, so both backends pass the same suite.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::api_support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::api_support::Backend::Postgres).await
                }
            }
        )*
    };
}
