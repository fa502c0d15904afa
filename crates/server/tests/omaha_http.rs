//! The Omaha endpoint over the wire, as update_engine talks to it: POST /v1/update/ with the
//! request update_engine sends, answers parsed back with keelson-omaha, payloads fetched from
//! the offered URL, and bad input (malformed XML, unknown app, oversized body).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use base64::Engine as _;
use common::*;
use keelson_omaha::{AppStatus, Limits, Response, UpdateStatus};
use keelson_server::db;
use keelson_server::grant::RolloutPolicy;
use sha2::Digest as _;

/// The request update_engine sends on a scheduled check (docs/update-stack.md §1).
fn update_engine_request(app: &str, machine: &str, version: &str, events: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
    <os version="Chateau" platform="CoreOS" sp="{version}_x86_64"></os>
    <app appid="{app}" version="{version}" track="stable"
         bootid="{{9b6e1c1e-4c33-4bd4-9d6c-2f5a1e0d6a10}}" oem="ami" oemversion="0.1.0" alephversion="1.0.0" machineid="{machine}"
         machinealias="rack-7" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false" >
        <ping active="1"></ping>
        <updatecheck></updatecheck>
        {events}
    </app>
</request>"#
    )
}

async fn post(base: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/update/"))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn omaha(base: &str, body: String) -> Response {
    let resp = post(base, body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    Response::parse(text.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Application, a stored 2.0.0 payload on channel stable, group stable.
async fn stored_fleet(env: &Env, policy: RolloutPolicy) -> (i64, Vec<u8>) {
    application(env).await;
    let bytes = payload("2.0.0", 300_000);
    let pkg = stored_package(env, "2.0.0", &bytes).await;
    let (group, _) = channel_and_group(env, &pkg.version, policy).await;
    (group, bytes)
}

async fn grant_is_what_update_engine_needs(b: Backend) {
    let env = env(b).await;
    let (_, bytes) = stored_fleet(&env, RolloutPolicy::default()).await;
    let base = serve(&env, |_| {}).await;
    let events = r#"<event eventtype="3" eventresult="2" previousversion=""></event>"#;
    let resp = omaha(
        &base,
        update_engine_request(APP_BRACED, "m-1", "1.0.0", events),
    )
    .await;
    let app = &resp.apps[0];
    assert_eq!(app.app_id, APP_BRACED, "app id echoed as sent");
    assert_eq!(app.status, AppStatus::Ok);
    assert_eq!(app.ping.as_deref(), Some("ok"));
    assert_eq!(app.events.len(), 1);
    let uc = app.update_check.as_ref().unwrap();
    assert_eq!(uc.status, UpdateStatus::Ok);
    let manifest = uc.manifest.as_ref().unwrap();
    assert_eq!(manifest.version, "2.0.0");
    let pkg = &manifest.packages[0];
    assert_eq!(pkg.size, bytes.len() as u64);
    let action = manifest
        .actions
        .iter()
        .find(|a| a.event == "postinstall")
        .unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&bytes));
    assert_eq!(action.sha256.as_deref(), Some(want.as_str()));
    assert_eq!(action.disable_payload_backoff, Some(true));
    // The client appends the package name to the codebase and downloads, resuming by range.
    let url = format!("{}{}", uc.urls[0], pkg.name);
    assert!(url.starts_with(&base), "{url}");
    let http = reqwest::Client::new();
    let full = http.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let part = http
        .get(&url)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[100_000..]);
    // The instance is recorded with what the node said.
    let inst = instance(&env.db, "m-1").await;
    assert_eq!(
        (
            inst.version.as_str(),
            inst.alias.as_str(),
            inst.oem.as_str()
        ),
        ("1.0.0", "rack-7", "ami")
    );
    assert_eq!(inst.ip, "127.0.0.1");
}
both!(grant_is_what_update_engine_needs);

async fn held_back_is_noupdate_never_error(b: Backend) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        updates_enabled: false,
        ..Default::default()
    };
    stored_fleet(&env, policy).await;
    let base = serve(&env, |_| {}).await;
    let resp = omaha(&base, update_engine_request(APP_BRACED, "m-1", "1.0.0", "")).await;
    let app = &resp.apps[0];
    assert_eq!(app.status, AppStatus::Ok);
    let uc = app.update_check.as_ref().unwrap();
    assert_eq!(uc.status, UpdateStatus::NoUpdate);
    assert!(uc.manifest.is_none() && uc.urls.is_empty());
}
both!(held_back_is_noupdate_never_error);

async fn event_only_requests_are_acknowledged(b: Backend) {
    let env = env(b).await;
    stored_fleet(&env, RolloutPolicy::default()).await;
    let base = serve(&env, |_| {}).await;
    let _ = omaha(&base, update_engine_request(APP, "m-1", "1.0.0", "")).await;
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" installsource="scheduler" ismachine="1">
  <os version="Chateau" platform="CoreOS" sp="1.0.0_x86_64"></os>
  <app appid="{APP_BRACED}" version="1.0.0" track="stable" machineid="m-1" board="amd64-usr">
    <event eventtype="3" eventresult="0" errorcode="268435466"></event>
  </app>
</request>"#
    );
    let resp = omaha(&base, body).await;
    let app = &resp.apps[0];
    assert!(app.update_check.is_none());
    assert_eq!(app.events, vec!["ok".to_string()]);
    let inst = instance(&env.db, "m-1").await;
    assert_eq!(inst.status, 3, "Error");
    let ev = db::instances::detail(&env.db, inst.id)
        .await
        .unwrap()
        .unwrap()
        .events;
    assert_eq!(
        ev[0].error_code,
        Some(268_435_466),
        "stored with its flag bits"
    );
}
both!(event_only_requests_are_acknowledged);

async fn unknown_application_the_omaha_way(b: Backend) {
    let env = env(b).await;
    stored_fleet(&env, RolloutPolicy::default()).await;
    let base = serve(&env, |_| {}).await;
    let other = "{11111111-2222-3333-4444-555555555555}";
    let resp = omaha(&base, update_engine_request(other, "m-1", "1.0.0", "")).await;
    assert_eq!(resp.apps[0].app_id, other);
    assert_eq!(resp.apps[0].status, AppStatus::UnknownApplication);
    assert_eq!(count(&env.db, "instances").await, 0);
}
both!(unknown_application_the_omaha_way);

async fn bad_input_gets_a_status_and_writes_nothing(b: Backend) {
    let env = env(b).await;
    stored_fleet(&env, RolloutPolicy::default()).await;
    let base = serve(&env, |c| c.omaha_body_limit = 8 * 1024).await;
    let before = count(&env.db, "activity").await;

    // Malformed XML (go-omaha's broken no-update fixture style).
    let resp = post(&base, r#"<response" protocol="3.0"><app appid="x">"#).await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("malformed Omaha request")
    );

    // Truncated request.
    let full = update_engine_request(APP_BRACED, "m-1", "1.0.0", "");
    let resp = post(&base, full[..full.len() / 2].to_string()).await;
    assert_eq!(resp.status(), 400);

    // Missing machineid, second app: nothing of the first app is written either.
    let body = format!(
        r#"<request protocol="3.0"><app appid="{APP_BRACED}" version="1.0.0" machineid="ok-1"><updatecheck/></app><app appid="{APP_BRACED}" version="1.0.0"><updatecheck/></app></request>"#
    );
    let resp = post(&base, body).await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("app[1]: required attribute machineid")
    );

    // Oversized body.
    let padding = " ".repeat(9 * 1024);
    let big = update_engine_request(APP_BRACED, "m-1", "1.0.0", &padding);
    let resp = post(&base, big).await;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("limit of 8192 bytes"));

    // Too deep.
    let deep = format!(
        r#"<request protocol="3.0"><app appid="{APP_BRACED}" version="1.0.0" machineid="d">{}{}</app></request>"#,
        "<x>".repeat(40),
        "</x>".repeat(40)
    );
    let resp = post(&base, deep).await;
    assert_eq!(resp.status(), 400);

    assert_eq!(count(&env.db, "instances").await, 0);
    assert_eq!(count(&env.db, "events").await, 0);
    assert_eq!(count(&env.db, "activity").await, before);
}
both!(bad_input_gets_a_status_and_writes_nothing);

/// One node's whole update over the wire, the way update_engine and a FleetLock client do it:
/// check → download (resumed) → events → pre-reboot lock → reboot → check on the new version
/// → steady-state unlock. The server's view matches at every step.
async fn node_update_journey(b: Backend) {
    let env = env(b).await;
    let (_, bytes) = stored_fleet(&env, RolloutPolicy::default()).await;
    let base = serve(&env, |_| {}).await;
    let http = reqwest::Client::new();
    let node = "journey-1";
    let ev = |t: u32, r: u32, prev: &str| {
        format!(r#"<event eventtype="{t}" eventresult="{r}" previousversion="{prev}"></event>"#)
    };
    let event_only = |events: String| {
        format!(
            r#"<request protocol="3.0"><app appid="{APP_BRACED}" version="1.0.0" track="stable" machineid="{node}">{events}</app></request>"#
        )
    };
    let status = || async { instance(&env.db, node).await.status };

    let resp = omaha(
        &base,
        update_engine_request(APP_BRACED, node, "1.0.0", &ev(3, 2, "")),
    )
    .await;
    let uc = resp.apps[0].update_check.clone().unwrap();
    let url = format!(
        "{}{}",
        uc.urls[0],
        uc.manifest.as_ref().unwrap().packages[0].name
    );
    assert_eq!(status().await, 2);

    let _ = omaha(&base, event_only(ev(13, 1, ""))).await;
    assert_eq!(status().await, 7);
    // Download in two halves, as a resumed transfer.
    let first = http
        .get(&url)
        .header("range", "bytes=0-149999")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let rest = http
        .get(&url)
        .header("range", format!("bytes={}-", first.len()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!([first.as_ref(), rest.as_ref()].concat(), bytes);
    let _ = omaha(&base, event_only(ev(14, 1, ""))).await;
    let _ = omaha(&base, event_only(ev(3, 1, ""))).await;
    assert_eq!(status().await, 5);

    let lock = |op: &'static str| {
        http.post(format!("{base}/v1/{op}"))
            .header("fleet-lock-protocol", "true")
            .body(format!(
                r#"{{"client_params": {{"id": "{node}", "group": "stable"}}}}"#
            ))
            .send()
    };
    assert_eq!(lock("pre-reboot").await.unwrap().status(), 200);
    // ... reboot into 2.0.0 ...
    let resp = omaha(
        &base,
        update_engine_request(APP_BRACED, node, "2.0.0", &ev(3, 2, "1.0.0")),
    )
    .await;
    assert_eq!(
        resp.apps[0].update_check.as_ref().unwrap().status,
        UpdateStatus::NoUpdate
    );
    assert_eq!(status().await, 4);
    assert_eq!(lock("steady-state").await.unwrap().status(), 200);
    assert!(holders(&env.db, "stable").await.is_empty());
    let breakdown = db::groups::view(&env.db, APP, "Stable")
        .await
        .unwrap()
        .versions;
    assert_eq!(breakdown.len(), 1);
    assert_eq!(
        (breakdown[0].version.as_str(), breakdown[0].count),
        ("2.0.0", 1)
    );
}
both!(node_update_journey);
