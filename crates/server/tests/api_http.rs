//! The REST API over real HTTP, against SQLite and PostgreSQL: resources, validation, status
//! codes and that a failed request writes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Backend, UPLOAD_LIMIT, json_of, start};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Assert an error response: status, JSON shape and (optionally) the field it names.
async fn expect_error(r: reqwest::Response, status: u16, field: Option<&str>) -> String {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let body = json_of(r).await;
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(!msg.is_empty());
    assert_eq!(body["field"].as_str(), field, "{body}");
    msg.to_string()
}

async fn crud_flow(backend: Backend) {
    let s = start(backend).await;
    s.seed(0).await;

    // Applications: braces and case normalized, duplicates conflict.
    let apps = s.viewer_json("/api/v1/apps").await;
    assert_eq!(apps[0]["id"], APP);
    let r = s
        .admin(Method::POST, "/api/v1/apps")
        .json(&json!({"id": APP.to_uppercase(), "name": "again"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 409, None).await;
    let r = s
        .admin(Method::PUT, &format!("/api/v1/apps/{{{APP}}}"))
        .json(&json!({"description": "the OS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["description"], "the OS");

    // Packages: newest first; upload streams, hashes and stores the payload.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/packages/3.0.0/payload?filename=keelson_update.gz"),
        )
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let pkg = json_of(r).await;
    assert_eq!(pkg["size"], 100_000);
    assert_eq!(pkg["stored"], true);
    assert_eq!(pkg["sha256_hex"], hex::encode(Sha256::digest(&payload)));
    let stored: Vec<_> = std::fs::read_dir(&s.data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), payload);
    // The path it is served at (by the payload endpoint, with ranges) returns the same bytes.
    let path = pkg["download_path"].as_str().unwrap();
    let r = s.http.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(r.bytes().await.unwrap().as_ref(), payload.as_slice());
    let list = s.viewer_json(&format!("/api/v1/apps/{APP}/packages")).await;
    let versions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["3.0.0", "2.0.0", "1.0.0"]);

    // Channels: repoint and set floors; a package in use cannot be deleted.
    let r = s
        .admin(Method::PUT, &format!("/api/v1/apps/{APP}/channels/stable"))
        .json(&json!({"version": "3.0.0", "floors": ["2.0.0"]}))
        .send()
        .await
        .unwrap();
    let ch = json_of(r).await;
    assert_eq!(ch["version"], "3.0.0");
    assert_eq!(ch["floors"], json!(["2.0.0"]));
    let r = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/apps/{APP}/packages/3.0.0"),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, 409, None).await;

    // Groups: the rollout target follows the channel.
    let g = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod"))
        .await;
    assert_eq!(g["channel"], "stable");
    assert_eq!(g["rollout"]["target_version"], "3.0.0");
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/groups"))
        .json(&json!({"name": "canary", "track": "stable"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 409, Some("track")).await;
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/groups"))
        .json(&json!({"name": "canary", "channel": "stable", "policy": {"rollout_percent": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(json_of(r).await["policy"]["rollout_percent"], 10);

    // Policies: a valid change is stored and logged.
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/groups/prod/policy"),
        )
        .json(&json!({
            "max_updates_per_period": 7, "timezone": "Europe/Berlin", "pinned_version": "2.0.0",
            "maintenance_windows": [{"days": ["sat", "sun"], "start": "22:00", "end": "04:00"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
        .await;
    assert_eq!(p["max_updates_per_period"], 7);
    assert_eq!(p["timezone"], "Europe/Berlin");
    assert_eq!(p["pinned_version"], "2.0.0");
    assert_eq!(p["maintenance_windows"][0]["start"], "22:00");
    let act = s.viewer_json("/api/v1/activity?limit=1").await;
    assert_eq!(act[0]["kind"], "group.policy_updated");
    assert!(act[0]["actor"].as_str().unwrap().starts_with("token:"));
    assert!(
        act[0]["message"]
            .as_str()
            .unwrap()
            .contains("max_updates_per_period")
    );

    // An automatic halt shows in the group and is cleared by `resume`, logged as such.
    sqlx::query("UPDATE groups SET halted_version = '3.0.0', halted_reason = 'failures' WHERE name = 'prod'")
        .execute(s.db.pool())
        .await
        .unwrap();
    let g = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod"))
        .await;
    assert_eq!(g["rollout"]["halted"], true);
    assert_eq!(g["policy"]["halted_reason"], "failures");
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/groups/prod/policy"),
        )
        .json(&json!({"resume": true}))
        .send()
        .await
        .unwrap();
    let p = json_of(r).await;
    assert_eq!(p["halted_version"], Value::Null);
    let act = s.viewer_json("/api/v1/activity?limit=1").await;
    assert_eq!(act[0]["kind"], "rollout.resumed");

    // Deleting a channel detaches its groups.
    let r = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/apps/{APP}/channels/stable"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let g = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod"))
        .await;
    assert_eq!(g["channel"], Value::Null);
    // Deleting the application removes everything under it.
    let r = s
        .admin(Method::DELETE, &format!("/api/v1/apps/{APP}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for table in ["packages", "channels", "groups"] {
        assert_eq!(s.count(table).await, 0, "{table}");
    }
}

async fn invalid_input_is_rejected_and_writes_nothing(backend: Backend) {
    let s = start(backend).await;
    s.seed(0).await;
    let policy_before = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
        .await;
    let activity_before = s.count("activity").await;

    let policy_url = format!("/api/v1/apps/{APP}/groups/prod/policy");
    // (body, status, field): invalid values name their field; shape errors are 422.
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (
            json!({"max_updates_per_period": 0}),
            400,
            Some("max_updates_per_period"),
        ),
        (json!({"timezone": "Mars/Base"}), 400, Some("timezone")),
        (
            json!({"rollout_percent": 250}),
            400,
            Some("rollout_percent"),
        ),
        (
            json!({"pinned_version": "9.9.9"}),
            400,
            Some("pinned_version"),
        ),
        (
            json!({"maintenance_windows": [{"days": ["mon"], "start": "9am", "end": "17:00"}]}),
            400,
            Some("maintenance_windows[0].start"),
        ),
        // A good value next to a bad one must not be half-applied.
        (
            json!({"max_updates_per_period": 3, "fleetlock_slots": 0}),
            400,
            Some("fleetlock_slots"),
        ),
        (json!({"max_updates": 3}), 422, Some("max_updates")),
        (json!({"safe_mode": "yes"}), 422, None),
    ];
    for (body, status, field) in cases {
        let r = s
            .admin(Method::PUT, &policy_url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let msg = expect_error(r, status, field).await;
        if let Some(f) = field {
            assert!(msg.contains(f.split('[').next().unwrap()), "{msg}");
        }
    }
    // Malformed JSON, wrong content type, oversized body.
    let r = s
        .admin(Method::PUT, &policy_url)
        .header("content-type", "application/json")
        .body("{\"safe_mode\": tru")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, None).await;
    let r = s
        .admin(Method::PUT, &policy_url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 415, None).await;
    let big = format!("{{\"timezone\": \"{}\"}}", "x".repeat(200 * 1024));
    let r = s
        .admin(Method::PUT, &policy_url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, None).await;

    let policy_after = s.viewer_json(&policy_url).await;
    assert_eq!(
        policy_before, policy_after,
        "a rejected change altered the policy"
    );

    // Multi-row creates roll back as a whole.
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/groups"))
        .json(&json!({"name": "half", "track": "half", "policy": {"timezone": "Nowhere/Land"}}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("timezone")).await;
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/channels"))
        .json(&json!({"name": "beta", "version": "1.0.0", "floors": ["1.0.0", "7.7.7"]}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("floors[1]")).await;
    assert_eq!(s.count("groups").await, 1);
    assert_eq!(s.count("channels").await, 1);
    assert_eq!(s.count("channel_floors").await, 0);

    // An oversized upload leaves neither a file nor a row; so does an empty one.
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/packages/5.0.0/payload"),
        )
        .body(vec![0u8; UPLOAD_LIMIT as usize + 1])
        .send()
        .await
        .unwrap();
    expect_error(r, 413, None).await;
    // The same without Content-Length (chunked): the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..5)
        .map(|_| Ok(vec![7u8; UPLOAD_LIMIT as usize / 4]))
        .collect();
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/packages/5.0.0/payload"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, None).await;
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/packages/5.0.0/payload"),
        )
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("body")).await;
    // Duplicate version: refused before the body is stored.
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/packages/2.0.0/payload"),
        )
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    expect_error(r, 409, None).await;
    assert_eq!(std::fs::read_dir(&s.data_dir).unwrap().count(), 0);
    assert_eq!(s.count("packages").await, 2);

    // Unknown objects are 404 and name what was missing.
    for path in [
        "/api/v1/apps/nope".to_string(),
        "/api/v1/apps/nope/groups".to_string(),
        format!("/api/v1/apps/{APP}/groups/nope/policy"),
        format!("/api/v1/apps/{APP}/channels/nope"),
        format!("/api/v1/apps/{APP}/packages/9.9.9"),
        "/api/v1/instances/424242".to_string(),
    ] {
        let r = s.viewer(Method::GET, &path).send().await.unwrap();
        let msg = expect_error(r, 404, None).await;
        assert!(msg.contains("not found"), "{path}: {msg}");
    }
    // Other bad input.
    for (body, field) in [
        (json!({"id": "has space", "name": "x"}), "id"),
        (json!({"id": "ok", "name": ""}), "name"),
    ] {
        let r = s
            .admin(Method::POST, "/api/v1/apps")
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, Some(field)).await;
    }
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/packages"))
        .json(&json!({"version": "6.0.0", "filename": "../etc/passwd", "url": "https://x/", "size": 1, "sha256_hex": "00".repeat(32)}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("filename")).await;
    let r = s
        .viewer(Method::GET, "/api/v1/instances?status=sleepy")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("status")).await;
    let r = s
        .viewer(Method::GET, "/api/v1/instances?limit=abc")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, None).await;

    assert_eq!(
        s.count("activity").await,
        activity_before,
        "a rejected request was logged"
    );
}

async fn instances_and_history(backend: Backend) {
    let s = start(backend).await;
    s.seed(10).await;
    let page = s
        .viewer_json(&format!("/api/v1/instances?app={APP}&limit=3"))
        .await;
    assert_eq!(page["total"], 10);
    assert_eq!(page["instances"].as_array().unwrap().len(), 3);
    // Most recently seen first.
    assert_eq!(page["instances"][0]["machine_id"], "machine-0000");
    let page = s
        .viewer_json("/api/v1/instances?version=1.0.0&group=prod")
        .await;
    assert_eq!(page["total"], 5);
    let page = s.viewer_json("/api/v1/instances?status=error").await;
    assert_eq!(page["total"], 1);
    let id = page["instances"][0]["id"].as_i64().unwrap();
    let page = s.viewer_json("/api/v1/instances?q=node-7").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["instances"][0]["alias"], "node-7");

    let detail = s.viewer_json(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(detail["machine_id"], "machine-0000");
    assert_eq!(detail["group"], "prod");
    let history: Vec<&str> = detail["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["error", "update-granted"]);

    // The group summary counts versions and statuses.
    let g = s
        .viewer_json(&format!("/api/v1/apps/{APP}/groups/prod"))
        .await;
    assert_eq!(g["rollout"]["instances"], 10);
    assert_eq!(g["rollout"]["on_target"], 5);
    assert_eq!(
        g["versions"],
        json!([{"version": "2.0.0", "count": 5}, {"version": "1.0.0", "count": 5}])
    );
    assert!(
        g["statuses"]
            .as_array()
            .unwrap()
            .contains(&json!({"status": "error", "count": 1}))
    );
}

async fn every_route_is_documented_and_guarded(backend: Backend) {
    let s = start(backend).await;
    let doc = json_of(s.http.get(s.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, methods) in keelson_server::openapi::ROUTES {
        let concrete = path
            .replace("{app}", APP)
            .replace("{channel}", "c")
            .replace("{group}", "g")
            .replace("{version}", "1.0.0")
            .replace("{id}", "1");
        for m in ["get", "post", "put", "delete"] {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = s
                .http
                .request(method, s.url(&concrete))
                .send()
                .await
                .unwrap();
            if methods.contains(&m) {
                assert!(
                    doc["paths"][path][m].is_object(),
                    "{m} {path} not documented"
                );
                assert_eq!(r.status(), 401, "{m} {path} without a token");
            } else {
                assert_eq!(r.status(), 405, "{m} {path} is routed but not listed");
            }
        }
    }
}

/// Lists sort by semver precedence (keelson-version): numeric parts as numbers, a pre-release
/// before its release (the old API order put 2.0.0 before 2.0.0-rc1), pre-release identifiers
/// numerically, and build metadata not changing precedence.
async fn lists_sort_by_version_precedence(backend: Backend) {
    let s = start(backend).await;
    s.seed(0).await;
    for v in [
        "2.0.0-rc1",
        "2.0.0-rc.10",
        "2.0.0-rc.2",
        "2.0.0+build5",
        "10.0.0",
        "9.10.0",
        "9.9.1",
    ] {
        let r = s
            .admin(Method::POST, &format!("/api/v1/apps/{APP}/packages"))
            .json(&json!({
                "version": v, "filename": "keelson_update.gz",
                "url": format!("https://updates.example.com/{v}"),
                "size": 1000, "sha256_hex": "ab".repeat(32)
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{v}: {}", r.text().await.unwrap());
    }
    let list = s.viewer_json(&format!("/api/v1/apps/{APP}/packages")).await;
    let versions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        [
            "10.0.0",
            "9.10.0",
            "9.9.1",
            "2.0.0+build5",
            "2.0.0",
            "2.0.0-rc1",
            "2.0.0-rc.10",
            "2.0.0-rc.2",
            "1.0.0"
        ]
    );
    // Channel floors are listed ascending by the same order.
    let r = s
        .admin(Method::PUT, &format!("/api/v1/apps/{APP}/channels/stable"))
        .json(&json!({"floors": ["2.0.0", "9.10.0", "2.0.0-rc1", "9.9.1", "2.0.0-rc.2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json_of(r).await["floors"],
        json!(["2.0.0-rc.2", "2.0.0-rc1", "2.0.0", "9.9.1", "9.10.0"])
    );
}

/// A node's Omaha request (update check plus `events`), as the agent sends it.
fn node_request(version: &str, events: &str) -> String {
    format!(
        r#"<request protocol="3.0" installsource="scheduler" ismachine="1"><os platform="Keelson"/>
        <app appid="{{{APP}}}" version="{version}" track="stable" machineid="node-r" machinealias="r">
        <ping active="1"/><updatecheck/>{events}</app></request>"#
    )
}

/// Post a node request; true when it was offered an update.
async fn node_check(s: &common::TestServer, version: &str, events: &str) -> bool {
    let r = s
        .http
        .post(s.url("/v1/update/"))
        .body(node_request(version, events))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let resp =
        keelson_omaha::Response::parse(text.as_bytes(), &keelson_omaha::Limits::default()).unwrap();
    resp.apps[0].update_check.as_ref().unwrap().status == keelson_omaha::UpdateStatus::Ok
}

/// #10: a failure's reason reaches the instance history; a version the node rolled back from
/// is held back until an admin clears it (REST), and then offered again.
async fn rollback_reason_and_clear(backend: Backend) {
    let s = start(backend).await;
    s.seed(0).await;
    assert!(node_check(&s, "1.0.0", "").await, "2.0.0 is granted");
    let rollback = r#"<event eventtype="3" eventresult="0" errorcode="44" keelson_reason="boot_not_blessed"/>"#;
    assert!(
        !node_check(&s, "1.0.0", rollback).await,
        "not offered again"
    );
    let page = s.viewer_json("/api/v1/instances?q=node-r").await;
    let id = page["instances"][0]["id"].as_i64().unwrap();
    let d = s.viewer_json(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(d["events"][0]["reason"], "boot_not_blessed", "{d}");
    assert_eq!(d["events"][0]["error_code"], 44);
    assert_eq!(d["rolled_back"], json!(["2.0.0"]));
    assert!(
        d["status_history"][0]["message"]
            .as_str()
            .unwrap()
            .contains("reason boot_not_blessed"),
        "{d}"
    );
    // An invalid reason is dropped, the event is still recorded.
    node_check(
        &s,
        "1.0.0",
        r#"<event eventtype="3" eventresult="0" errorcode="9" keelson_reason="Not a slug"/>"#,
    )
    .await;
    let d = s.viewer_json(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(d["events"][0]["error_code"], 9);
    assert_eq!(d["events"][0]["reason"], Value::Null);

    // The dashboard shows the reason and the held-back version with its button.
    let html = s
        .http
        .get(s.url(&format!("/ui/instances/{id}")))
        .header("cookie", format!("keelson_token={}", s.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("boot_not_blessed"), "{html}");
    assert!(
        html.contains(&format!("/ui/instances/{id}/rollbacks/2.0.0/clear")),
        "{html}"
    );

    // Still held back (the rollout also halted on the failure: resume it).
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/groups/prod/policy"),
        )
        .json(&json!({"resume": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!node_check(&s, "1.0.0", "").await, "rolled back: held back");
    // Viewers may not clear; unknown versions and instances are 404; bad ids 400.
    let path = format!("/api/v1/instances/{id}/rollbacks/2.0.0");
    let r = s.viewer(Method::DELETE, &path).send().await.unwrap();
    expect_error(r, 403, None).await;
    let r = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/instances/{id}/rollbacks/9.9.9"),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, 404, None).await;
    let r = s
        .admin(Method::DELETE, "/api/v1/instances/999999/rollbacks/2.0.0")
        .send()
        .await
        .unwrap();
    expect_error(r, 404, None).await;
    let r = s
        .admin(Method::DELETE, "/api/v1/instances/x/rollbacks/2.0.0")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("id")).await;
    let r = s.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = s.admin(Method::DELETE, &path).send().await.unwrap();
    expect_error(r, 404, None).await;
    let d = s.viewer_json(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(d["rolled_back"], json!([]));
    let act = s.viewer_json("/api/v1/activity").await;
    assert_eq!(act[0]["kind"], "instance.rollback_cleared", "{act}");
    assert!(
        node_check(&s, "1.0.0", "").await,
        "offered again after the clear"
    );
}

/// Refusals the data layer decides (what only the database knows) keep their exact status
/// and body: `{"error": ..., "field": ...}`.
async fn refusals_keep_their_status_and_body(backend: Backend) {
    let s = start(backend).await;
    s.seed(0).await;
    let apps = format!("/api/v1/apps/{APP}");
    let cases: Vec<(Method, String, Value, u16, Value)> = vec![
        (
            Method::POST,
            format!("{apps}/channels"),
            json!({"name": "beta", "version": "7.7.7"}),
            400,
            json!({"error": format!("version: application {APP} has no package with version \"7.7.7\""), "field": "version"}),
        ),
        (
            Method::POST,
            format!("{apps}/channels"),
            json!({"name": "beta", "floors": ["1.0.0", "1.0.0"]}),
            400,
            json!({"error": "floor \"1.0.0\" is listed twice", "field": "floors[1]"}),
        ),
        (
            Method::POST,
            format!("{apps}/channels"),
            json!({"name": "stable"}),
            409,
            json!({"error": "channel \"stable\" already exists"}),
        ),
        (
            Method::PUT,
            format!("{apps}/channels/stable"),
            json!({"floors": ["9.9.9"]}),
            400,
            json!({"error": format!("floors[0]: application {APP} has no package with version \"9.9.9\""), "field": "floors[0]"}),
        ),
        (
            Method::PUT,
            format!("{apps}/channels/nope"),
            json!({"version": "1.0.0"}),
            404,
            json!({"error": "channel \"nope\" not found"}),
        ),
        (
            Method::POST,
            format!("{apps}/groups"),
            json!({"name": "canary", "channel": "nope"}),
            400,
            json!({"error": format!("channel: application {APP} has no channel \"nope\""), "field": "channel"}),
        ),
        (
            Method::POST,
            format!("{apps}/groups"),
            json!({"name": "canary", "track": "stable"}),
            409,
            json!({"error": "track \"stable\" is already used by group \"prod\"", "field": "track"}),
        ),
        (
            Method::POST,
            format!("{apps}/groups"),
            json!({"name": "prod", "track": "other"}),
            409,
            json!({"error": "group \"prod\" already exists"}),
        ),
        (
            Method::PUT,
            format!("{apps}/groups/prod/policy"),
            json!({"rollout_percent": 101}),
            400,
            json!({"error": "rollout_percent: 101 is not in 0..=100", "field": "rollout_percent"}),
        ),
        (
            Method::PUT,
            format!("{apps}/groups/prod/policy"),
            json!({"pinned_version": "9.9.9"}),
            400,
            json!({"error": format!("pinned_version: application {APP} has no package with version \"9.9.9\""), "field": "pinned_version"}),
        ),
        (
            Method::PUT,
            "/api/v1/apps/nope/groups/prod/policy".to_string(),
            json!({}),
            404,
            json!({"error": "application \"nope\" not found"}),
        ),
        (
            Method::DELETE,
            format!("{apps}/packages/2.0.0"),
            Value::Null,
            409,
            json!({"error": "package 2.0.0 is used by channel(s) stable; repoint them first"}),
        ),
    ];
    let activity_before = s.count("activity").await;
    for (method, url, body, status, want) in cases {
        let mut req = s.admin(method.clone(), &url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {url} {body}");
        assert_eq!(json_of(r).await, want, "{method} {url} {body}");
    }
    assert_eq!(
        s.count("activity").await,
        activity_before,
        "a refusal was logged"
    );
}

both!(
    refusals_keep_their_status_and_body,
    rollback_reason_and_clear,
    crud_flow,
    invalid_input_is_rejected_and_writes_nothing,
    instances_and_history,
    every_route_is_documented_and_guarded,
    lists_sort_by_version_precedence,
);

/// Keys sorted at every level, so the golden file does not depend on whether serde_json's
/// `preserve_order` feature happens to be unified into this build.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The served document matches the reviewed golden file; regenerate with
/// `KEELSON_UPDATE_GOLDEN=1 cargo test -p keelson-server --test api_http`.
#[test]
fn openapi_document_matches_golden_file() {
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_openapi.golden.json");
    let current = sorted(&keelson_server::openapi::document());
    if std::env::var_os("KEELSON_UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &golden,
            serde_json::to_string_pretty(&current).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (set KEELSON_UPDATE_GOLDEN=1 to create it)",
            golden.display()
        )
    });
    let expected: Value = serde_json::from_str(&text).unwrap();
    assert!(
        sorted(&expected) == current,
        "the OpenAPI document changed; review and rerun with KEELSON_UPDATE_GOLDEN=1"
    );
}
