//! What the agent's benches share: keelson-server in the bench process, with a payload.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use keelson_server::{AppState, ServerConfig};

/// Flatcar's application id, the agent's default.
pub const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";

/// keelson-server on 127.0.0.1:0 with a SQLite database under `work`; the payload uploaded
/// through the REST API as the app's package. Returns the server's base URL and the payload's
/// path on it (`/packages/ID/NAME`).
pub async fn serve_payload(
    work: &Path,
    payload: &Path,
    http: &reqwest::Client,
) -> Result<(String, String)> {
    let data = work.join("server");
    fs::create_dir_all(&data)?;
    let db =
        keelson_server::db::Db::connect(&format!("sqlite://{}", work.join("server.db").display()))
            .await?;
    let admin = keelson_server::auth::create_token(&db, keelson_server::auth::Role::Admin, "bench")
        .await?
        .token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = keelson_server::router(AppState::new(db, ServerConfig::new(&data)));
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
        if let Err(e) = served {
            eprintln!("keelson-server stopped: {e}");
        }
    });
    let r = http
        .post(format!("{base}/api/v1/apps"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"id": format!("{{{APP}}}"), "name": "Keelson"}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "creating the app: {}", r.status());
    let name = payload
        .file_name()
        .and_then(|n| n.to_str())
        .context("payload file name")?;
    let version = name
        .strip_prefix("keelson_")
        .and_then(|n| n.strip_suffix(".payload"))
        .context("payload file name")?;
    let file = tokio::fs::File::open(payload).await?;
    let r = http
        .put(format!(
            "{base}/api/v1/apps/{APP}/packages/{version}/payload?filename={name}"
        ))
        .bearer_auth(&admin)
        .body(reqwest::Body::from(file))
        .send()
        .await?;
    let status = r.status();
    let pkg: serde_json::Value = r.json().await?;
    ensure!(status == 201, "uploading the payload: {status} {pkg}");
    let id = &pkg["id"];
    ensure!(!id.is_null(), "no package id in {pkg}");
    Ok((base, format!("/packages/{id}/{name}")))
}
