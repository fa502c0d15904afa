//! The `keelson-server` binary itself: with no --database-url it creates ./keelson.db in its
//! working directory and answers update_engine; --database-url postgres://... uses PostgreSQL;
//! a bad URL is a clear error; SIGTERM stops it cleanly.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Backend;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("keelson-server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "keelson-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson-server"));
    cmd.current_dir(dir.path())
        .env_remove("KEELSON_DATABASE_URL")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if backend == Backend::Postgres {
        // A database of its own, created through the library's connect (migrations applied).
        let env = common::env(Backend::Postgres).await;
        let url = {
            let base_url = common::postgres_url();
            let (name,): (String,) = sqlx::query_as("SELECT current_database()::text")
                .fetch_one(env.db.pool())
                .await
                .unwrap();
            let (head, _) = base_url.rsplit_once('/').unwrap();
            format!("{head}/{name}")
        };
        cmd.args(["--database-url", &url]);
    }
    let mut server = Server(cmd.spawn().unwrap());
    wait_ready(&base, &mut server.0).await;
    let body = format!(
        r#"<request protocol="3.0"><app appid="{}" version="1.0.0" track="stable" machineid="bin-1"><updatecheck/></app></request>"#,
        common::APP_BRACED
    );
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/update/"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("error-unknownApplication"));
    if backend == Backend::Sqlite {
        assert!(
            dir.path().join("keelson.db").is_file(),
            "default ./keelson.db"
        );
    }
    // SIGTERM: graceful exit with status 0.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sqlite_by_default() {
    run(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_by_url() {
    run(Backend::Postgres).await
}

#[test]
fn unsupported_database_url_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keelson-server"))
        .current_dir(dir.path())
        .args([
            "--database-url",
            "mysql://u:secret@h/db",
            "--listen",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(
        err.contains("mysql://u:***@h/db"),
        "password redacted: {err}"
    );
    assert!(!err.contains("secret"));
}
