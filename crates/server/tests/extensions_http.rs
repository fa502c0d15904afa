//! System extensions on keelson-server (issue 12 point 4, docs/sysext.md "Publishing on
//! keelson-server"), over the wire on both backends:
//! - OS-bound: `.raw` files attached to an OS package through the REST API, listed in the
//!   package JSON, offered as extra `<package>`s after the payload when the package is granted
//!   (parsed back with keelson-omaha), served with ranges, removed with the package;
//! - bad input answered with the field named, nothing left in the data dir;
//! - independent: an application whose packages are `.raw` files gets the normal offers and
//!   the normal rollout control (waves, safe mode, halt on a failure).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use base64::Engine as _;
use common::*;
use keelson_omaha::{Limits, Response, UpdateStatus};
use reqwest::Method;
use serde_json::{Value, json};
use sha1::Digest as _;

/// Deterministic bytes standing in for a `.raw` DDI (the server never looks inside).
fn raw(name: &str, len: usize) -> Vec<u8> {
    payload(name, len)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(b))
}

/// A node's update check for `app` at `version` on track `track`, with `events`.
fn check_request(app: &str, machine: &str, version: &str, track: &str, events: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="keelson-agent-0.1" updaterversion="keelson-agent-0.1" installsource="scheduler" ismachine="1">
    <os version="Keelson" platform="Keelson" sp="{version}_x86_64"></os>
    <app appid="{app}" version="{version}" track="{track}" machineid="{machine}" oem="qemu" alephversion="1.0.0">
        <updatecheck></updatecheck>
        {events}
    </app>
</request>"#
    )
}

async fn omaha(s: &TestServer, body: String) -> keelson_omaha::ResponseApp {
    let r = s
        .http
        .post(s.url("/v1/update/"))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut resp = Response::parse(text.as_bytes(), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    resp.apps.remove(0)
}

/// `POST /api/v1/apps` for `id`.
async fn create_app(s: &TestServer, id: &str, name: &str) {
    let r = s
        .admin(Method::POST, "/api/v1/apps")
        .json(&json!({"id": id, "name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Upload a payload through the REST API.
async fn upload_payload(s: &TestServer, app: &str, version: &str, filename: &str, body: &[u8]) {
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{app}/packages/{version}/payload?filename={filename}"),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// `PUT .../extensions/{name}`; returns (status, JSON body).
async fn put_extension(
    s: &TestServer,
    app: &str,
    version: &str,
    name: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{app}/packages/{version}/extensions/{name}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

/// Channel `name` at `version` and group `name` (track `name`) on it, with `policy`.
async fn channel_and_group_api(
    s: &TestServer,
    app: &str,
    name: &str,
    version: &str,
    policy: Value,
) {
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{app}/channels"))
        .json(&json!({"name": name, "version": version}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{app}/groups"))
        .json(&json!({"name": name, "track": name, "channel": name, "policy": policy}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Files in the data dir (uploads and their temporary parts).
fn data_files(s: &TestServer) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&s.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn os_bound_round_trip(b: Backend) {
    let s = start(b).await;
    create_app(&s, APP_BRACED, "Keelson OS").await;
    let os = payload("2.0.0", 100_000);
    upload_payload(&s, APP, "2.0.0", "keelson_update.gz", &os).await;
    let jq = raw("jq", 40_000);
    let tools = raw("zz-tools", 12_345);
    // Uploaded out of name order: the JSON and the offer list them sorted by name.
    let (st, pkg) = put_extension(&s, APP, "2.0.0", "zz-tools", tools.clone()).await;
    assert_eq!(st, 201, "{pkg}");
    assert_eq!(pkg["extensions"][0]["name"], "zz-tools");
    let (st, pkg) = put_extension(&s, APP_BRACED, "2.0.0", "jq", jq.clone()).await;
    assert_eq!(st, 201, "{pkg}");
    let want = json!([
        {"name": "jq", "size": jq.len(), "sha256": sha256_hex(&jq), "sha1": sha1_hex(&jq)},
        {"name": "zz-tools", "size": tools.len(), "sha256": sha256_hex(&tools), "sha1": sha1_hex(&tools)},
    ]);
    assert_eq!(pkg["extensions"], want);
    let one = s
        .viewer_json(&format!("/api/v1/apps/{APP}/packages/2.0.0"))
        .await;
    assert_eq!(one["extensions"], want);
    let list = s.viewer_json(&format!("/api/v1/apps/{APP}/packages")).await;
    assert_eq!(list[0]["extensions"], want);
    // The typed client view reads the same JSON.
    let typed: keelson_api_types::Package = serde_json::from_value(one.clone()).unwrap();
    assert_eq!(typed.extensions[1].name, "zz-tools");
    let act = s.viewer_json("/api/v1/activity").await;
    assert!(
        act.as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "package.extension_added" && a["version"] == "2.0.0"),
        "{act}"
    );

    channel_and_group_api(&s, APP, "stable", "2.0.0", json!({})).await;
    let app = omaha(&s, check_request(APP_BRACED, "m-1", "1.0.0", "stable", "")).await;
    let uc = app.update_check.unwrap();
    assert_eq!(uc.status, UpdateStatus::Ok);
    let codebase = uc.urls[0].clone();
    assert_eq!(codebase, format!("{}/packages/{}/", s.base, pkg["id"]));
    let m = uc.manifest.unwrap();
    let names: Vec<&str> = m.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["keelson_update.gz", "jq.raw", "zz-tools.raw"]);
    assert!(m.packages[0].required);
    for (p, bytes) in m.packages[1..].iter().zip([&jq, &tools]) {
        assert!(!p.required, "{}", p.name);
        assert_eq!(p.size, bytes.len() as u64);
        assert_eq!(
            p.hash_sha256_hex.as_deref(),
            Some(sha256_hex(bytes).as_str())
        );
        let sha1_b64 = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(bytes));
        assert_eq!(p.hash_sha1.as_deref(), Some(sha1_b64.as_str()));
        // Downloaded from the payload's codebase, whole and by range.
        let url = format!("{}{}", uc.urls[0], p.name);
        let got = s.http.get(&url).send().await.unwrap();
        assert_eq!(got.status(), 200, "{url}");
        assert_eq!(
            got.headers()["etag"],
            format!("\"{}\"", sha256_hex(bytes)).as_str()
        );
        assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
        let part = s
            .http
            .get(&url)
            .header("range", "bytes=1000-")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[1000..]);
    }
    // The payload is still served under its own name, and no other name is.
    let payload_url = format!("{}keelson_update.gz", uc.urls[0]);
    let got = s.http.get(&payload_url).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), os.as_slice());
    let r = s
        .http
        .get(format!("{}other.raw", uc.urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The dashboard's group page lists the target package's extensions.
    let r = s
        .http
        .post(s.url("/login"))
        .form(&[("token", s.viewer.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let html = s
        .http
        .get(s.url(&format!("/ui/apps/{APP}/groups/stable")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"extensions\""), "{html}");
    let jq_at = html.find("jq.raw").unwrap();
    let tools_at = html.find("zz-tools.raw").unwrap();
    assert!(jq_at < tools_at);
    assert!(html.contains(&sha256_hex(&tools)));

    // The grant logic is the OS's: a held-back group sends no extension either.
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/groups/stable/policy"),
        )
        .json(&json!({"updates_enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let app = omaha(&s, check_request(APP_BRACED, "m-2", "1.0.0", "stable", "")).await;
    let uc = app.update_check.unwrap();
    assert_eq!(uc.status, UpdateStatus::NoUpdate);
    assert!(uc.manifest.is_none());

    // Removing one extension removes its file; the offer no longer lists it.
    let files_before = data_files(&s);
    assert_eq!(files_before.len(), 3, "{files_before:?}");
    let r = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/apps/{APP}/packages/2.0.0/extensions/zz-tools"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(data_files(&s).len(), 2);
    let one = s
        .viewer_json(&format!("/api/v1/apps/{APP}/packages/2.0.0"))
        .await;
    assert_eq!(one["extensions"], json!([want[0]]));
    let r = s
        .http
        .get(format!("{codebase}zz-tools.raw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.count("package_extensions").await, 1);

    // Deleting the application removes its stored payload and extension with their rows.
    let r = s
        .admin(Method::DELETE, &format!("/api/v1/apps/{APP}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(data_files(&s), Vec::<String>::new());
    assert_eq!(s.count("package_extensions").await, 0);
}
both!(os_bound_round_trip);

async fn bad_input_names_the_field(b: Backend) {
    let s = start(b).await;
    create_app(&s, APP, "Keelson OS").await;
    upload_payload(&s, APP, "2.0.0", "keelson_update.gz", &payload("2", 1000)).await;
    // An external package: extensions could not be served from its codebase.
    let r = s
        .admin(Method::POST, &format!("/api/v1/apps/{APP}/packages"))
        .json(&json!({
            "version": "3.0.0", "filename": "keelson_update.gz",
            "url": "https://updates.example.com/3.0.0/", "size": 10, "sha256_hex": "ab".repeat(32)
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (st, _) = put_extension(&s, APP, "2.0.0", "jq", raw("jq", 100)).await;
    assert_eq!(st, 201);
    let files = data_files(&s);

    let long = "x".repeat(65);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("2.0.0", ".hidden", raw("a", 10), 400, "name"),
        ("2.0.0", "a%20b", raw("a", 10), 400, "name"),
        ("2.0.0", "a%C3%A9", raw("a", 10), 400, "name"),
        ("2.0.0", &long, raw("a", 10), 400, "name"),
        // `{name}.raw` would shadow the payload's own file name.
        ("2.0.0", "keelson_update.gz", raw("a", 10), 201, ""),
        ("2.0.0", "tools", Vec::new(), 400, "body"),
        ("2.0.0", "jq", raw("jq2", 10), 409, "name"),
        ("9.9.9", "jq", raw("a", 10), 404, "version"),
        ("not-a-version", "jq", raw("a", 10), 400, "version"),
        ("3.0.0", "jq", raw("a", 10), 400, "version"),
        (
            "2.0.0",
            "big",
            vec![1u8; UPLOAD_LIMIT as usize + 1],
            413,
            "",
        ),
    ];
    for (version, name, body, want, field) in cases {
        let (st, v) = put_extension(&s, APP, version, name, body).await;
        assert_eq!(st, want, "{version} {name}: {v}");
        if want == 201 {
            // Not a clash: the payload is keelson_update.gz, this is keelson_update.gz.raw.
            let r = s
                .admin(
                    Method::DELETE,
                    &format!("/api/v1/apps/{APP}/packages/{version}/extensions/{name}"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
            continue;
        }
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        if !field.is_empty() {
            assert_eq!(v["field"], field, "{version} {name}: {v}");
        }
    }
    // A payload named like an extension file refuses that extension name.
    upload_payload(&s, APP, "4.0.0", "os.raw", &payload("4", 100)).await;
    let (st, v) = put_extension(&s, APP, "4.0.0", "os", raw("os", 10)).await;
    assert_eq!((st, v["field"].as_str()), (400, Some("name")), "{v}");
    let mut files_now = data_files(&s);
    files_now.retain(|f| !files.contains(f));
    assert_eq!(
        files_now.len(),
        1,
        "only 4.0.0's payload is new: {files_now:?}"
    );

    // Unknown application, extension; the viewer may not write.
    let (st, _) = put_extension(&s, "no-such-app", "2.0.0", "jq2", raw("a", 10)).await;
    assert_eq!(st, 404);
    let r = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/apps/{APP}/packages/2.0.0/extensions/nope"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json_of(r).await["field"], "name");
    let r = s
        .viewer(
            Method::PUT,
            &format!("/api/v1/apps/{APP}/packages/2.0.0/extensions/jq3"),
        )
        .body(raw("a", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .viewer(
            Method::DELETE,
            &format!("/api/v1/apps/{APP}/packages/2.0.0/extensions/jq"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(s.count("package_extensions").await, 1);

    // Deleting the package takes its extensions and their files with it.
    let before = data_files(&s).len();
    let r = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/apps/{APP}/packages/2.0.0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        data_files(&s).len(),
        before - 2,
        "payload and jq.raw removed"
    );
    assert_eq!(s.count("package_extensions").await, 0);
}
both!(bad_input_names_the_field);

const TOOLS_APP: &str = "5b2b5a9c-8d1e-4c3a-9f0b-0a1b2c3d4e5f";

/// Contract section B: an independent extension is its own application whose packages are
/// `{name}_{version}.raw` files; it needs no new server model, and rollout control applies.
async fn independent_extension_is_an_ordinary_app(b: Backend) {
    let s = start(b).await;
    create_app(&s, TOOLS_APP, "tools extension").await;
    let v1 = raw("tools-1.1.0", 50_000);
    upload_payload(&s, TOOLS_APP, "1.1.0", "tools_1.1.0.raw", &v1).await;
    channel_and_group_api(&s, TOOLS_APP, "stable", "1.1.0", json!({"safe_mode": true})).await;

    // A node without the extension asks with 0.0.0 and gets the .raw file as the payload.
    let app = omaha(&s, check_request(TOOLS_APP, "n-1", "0.0.0", "stable", "")).await;
    let uc = app.update_check.unwrap();
    assert_eq!(uc.status, UpdateStatus::Ok);
    let m = uc.manifest.unwrap();
    assert_eq!(m.version, "1.1.0");
    assert_eq!(m.packages.len(), 1);
    assert_eq!(m.packages[0].name, "tools_1.1.0.raw");
    let action = m.actions.iter().find(|a| a.event == "postinstall").unwrap();
    assert_eq!(
        action.sha256_bytes().map(hex::encode),
        Some(sha256_hex(&v1))
    );
    let got = s
        .http
        .get(format!("{}tools_1.1.0.raw", uc.urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), v1.as_slice());

    // Safe mode: one node at a time...
    let app = omaha(&s, check_request(TOOLS_APP, "n-2", "0.0.0", "stable", "")).await;
    assert_eq!(app.update_check.unwrap().status, UpdateStatus::NoUpdate);
    // ... and its failure (3/0 with the agent's reason) halts the rollout.
    let failed = r#"<event eventtype="3" eventresult="0" errorcode="1" keelson_reason="sysext_refresh_failed"></event>"#;
    let _ = omaha(
        &s,
        check_request(TOOLS_APP, "n-1", "0.0.0", "stable", failed),
    )
    .await;
    let g = s
        .viewer_json(&format!("/api/v1/apps/{TOOLS_APP}/groups/stable"))
        .await;
    assert_eq!(g["policy"]["halted_version"], "1.1.0", "{g}");
    let app = omaha(&s, check_request(TOOLS_APP, "n-3", "0.0.0", "stable", "")).await;
    assert_eq!(app.update_check.unwrap().status, UpdateStatus::NoUpdate);

    // Resumed and out of safe mode, a wave of 0% still holds everyone back.
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{TOOLS_APP}/groups/stable/policy"),
        )
        .json(&json!({"resume": true, "safe_mode": false, "rollout_percent": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let app = omaha(&s, check_request(TOOLS_APP, "n-3", "0.0.0", "stable", "")).await;
    assert_eq!(app.update_check.unwrap().status, UpdateStatus::NoUpdate);
    let r = s
        .admin(
            Method::PUT,
            &format!("/api/v1/apps/{TOOLS_APP}/groups/stable/policy"),
        )
        .json(&json!({"rollout_percent": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let app = omaha(&s, check_request(TOOLS_APP, "n-3", "0.0.0", "stable", "")).await;
    assert_eq!(app.update_check.unwrap().status, UpdateStatus::Ok);
    // A node already at 1.1.0 is up to date.
    let app = omaha(&s, check_request(TOOLS_APP, "n-4", "1.1.0", "stable", "")).await;
    assert_eq!(app.update_check.unwrap().status, UpdateStatus::NoUpdate);
}
both!(independent_extension_is_an_ordinary_app);
