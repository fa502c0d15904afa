//! Bearer tokens over real HTTP: missing and wrong tokens, roles, the cookie, endpoints that
//! need none, hashed storage and `keelson-server token create`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Backend, start};
use reqwest::Method;
use serde_json::{Value, json};

async fn roles_and_tokens(backend: Backend) {
    let s = start(backend).await;
    s.seed(0).await;

    // Missing, malformed and unknown tokens: 401 with a challenge and a JSON message.
    let attempts: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong scheme", Some(format!("Basic {}", s.admin))),
        ("unknown token", Some("Bearer kt_0000".to_string())),
        ("empty token", Some("Bearer ".to_string())),
    ];
    for (what, header) in attempts {
        let mut req = s.http.get(s.url("/api/v1/apps"));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{what}"
        );
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("token"),
            "{what}: {body}"
        );
    }

    // Viewer reads, may not write; nothing changes when refused.
    let before = s.count("activity").await;
    let r = s
        .viewer(Method::GET, &format!("/api/v1/apps/{APP}/groups"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let writes = [
        (
            Method::POST,
            "/api/v1/apps".to_string(),
            json!({"id": "x", "name": "x"}),
        ),
        (
            Method::PUT,
            format!("/api/v1/apps/{APP}/groups/prod/policy"),
            json!({"updates_enabled": false}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/apps/{APP}/groups/prod"),
            json!({}),
        ),
    ];
    for (method, path, body) in &writes {
        let r = s
            .viewer(method.clone(), path)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("viewer"), "{err}");
    }
    assert_eq!(s.count("activity").await, before);
    let p: Value = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
        .await;
    assert_eq!(p["updates_enabled"], true);

    // Admin writes; whoami tells the roles apart.
    let who: Value = s.admin_json("/api/v1/whoami").await;
    assert_eq!(who["role"], "admin");
    let who: Value = s.viewer_json("/api/v1/whoami").await;
    assert_eq!(who["role"], "viewer");
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/groups/prod/policy"),
        )
        .json(&json!({"updates_enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The dashboard cookie carries the same roles.
    let r = s
        .http
        .put(s.url(&format!("/api/v1/apps/{APP}/groups/prod/policy")))
        .header("cookie", format!("keelson_token={}", s.viewer))
        .json(&json!({"updates_enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .http
        .get(s.url("/api/v1/whoami"))
        .header("cookie", format!("other=1; keelson_token={}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Endpoints for nodes, probes and documentation never ask for a token.
    for path in [
        "/api/openapi.json",
        "/health",
        "/metrics",
        "/static/dashboard.css",
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert!(
            r.status() != 401 && r.status() != 403,
            "{path} wants a token: {}",
            r.status()
        );
    }
    for path in ["/v1/update/", "/v1/pre-reboot", "/v1/steady-state"] {
        let r = s.http.post(s.url(path)).body("x").send().await.unwrap();
        assert!(
            r.status() != 401 && r.status() != 403,
            "{path} wants a token: {}",
            r.status()
        );
    }

    // Only hashes are stored.
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT role, hash FROM tokens ORDER BY role")
        .fetch_all(s.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (role, hash) in rows {
        let token = if role == "admin" { &s.admin } else { &s.viewer };
        assert_ne!(&hash, token);
        assert!(!hash.contains(token.as_str()));
        assert_eq!(hash, keelson_server::auth::hash_token(token));
    }
}

async fn tokens_over_the_api(backend: Backend) {
    let s = start(backend).await;
    // Only admins manage tokens.
    let r = s
        .viewer(Method::GET, "/api/v1/tokens")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{:?}", r.text().await);
    let r = s
        .admin(Method::POST, "/api/v1/tokens")
        .json(&json!({"role": "superuser"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["field"], "role");

    let r = s
        .admin(Method::POST, "/api/v1/tokens")
        .json(&json!({"role": "viewer", "description": "grafana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let new: Value = r.json().await.unwrap();
    let secret = new["token"].as_str().unwrap().to_string();
    let id = new["id"].as_str().unwrap().to_string();
    let r = s
        .http
        .get(s.url("/api/v1/apps"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Listing shows IDs and roles, never secrets or hashes.
    let text = s
        .admin(Method::GET, "/api/v1/tokens")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(text.contains("grafana") && text.contains(&id));
    assert!(!text.contains(&secret) && !text.contains(&keelson_server::auth::hash_token(&secret)));

    // Revoked tokens stop working at once; unknown IDs are 404.
    let r = s
        .admin(Method::DELETE, &format!("/api/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .http
        .get(s.url("/api/v1/apps"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .admin(Method::DELETE, &format!("/api/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let kinds: Value = s.admin_json("/api/v1/activity?limit=2").await;
    assert_eq!(kinds[0]["kind"], "token.revoked");
    assert_eq!(kinds[1]["kind"], "token.created");
}

both!(roles_and_tokens, tokens_over_the_api);

#[test]
fn token_create_cli_prints_a_working_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let bin = env!("CARGO_BIN_EXE_keelson-server");
    let out = std::process::Command::new(bin)
        .args([
            "token",
            "create",
            "--role",
            "viewer",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("kt_") && token.len() == 67, "{token:?}");

    let bad = std::process::Command::new(bin)
        .args(["token", "create", "--role", "root", "--database-url", &url])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("root"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = keelson_server::db::Db::connect(&url).await.unwrap();
        let caller = keelson_server::auth::lookup(&db, &token)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(caller.role, keelson_server::auth::Role::Viewer);
        assert!(
            keelson_server::auth::lookup(&db, "kt_nope")
                .await
                .unwrap()
                .is_none()
        );
    });
}
