//! FleetLock over the wire, exactly as Zincati speaks it (docs/fleetlock.md): header, body,
//! recursive locks, slots per group, unlock-if-held, error kinds, and concurrency.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use keelson_server::db;
use keelson_server::grant::RolloutPolicy;
use serde_json::{Value, json};

async fn call(base: &str, op: &str, id: &str, group: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/{op}"))
        .header("fleet-lock-protocol", "true")
        .json(&json!({"client_params": {"id": id, "group": group}}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn setup(b: Backend, slots: i64) -> (Env, String) {
    let env = env(b).await;
    let policy = RolloutPolicy {
        fleetlock_slots: slots,
        ..Default::default()
    };
    fleet(&env, "2.0.0", policy).await;
    let base = serve(&env, |_| {}).await;
    (env, base)
}

async fn semaphore_with_slots(b: Backend) {
    let (env, base) = setup(b, 2).await;
    assert_eq!(call(&base, "pre-reboot", "a", "stable").await.0, 200);
    assert_eq!(
        call(&base, "pre-reboot", "a", "stable").await.0,
        200,
        "recursive"
    );
    assert_eq!(call(&base, "pre-reboot", "b", "stable").await.0, 200);
    let (s, body) = call(&base, "pre-reboot", "c", "stable").await;
    assert_eq!(s, 423);
    assert_eq!(body["kind"], "lock_held");
    assert!(!body["value"].as_str().unwrap().is_empty());
    // IDs are case-sensitive: "A" is not "a".
    assert_eq!(call(&base, "pre-reboot", "A", "stable").await.0, 423);
    // Unlocking something not held is success and changes nothing.
    assert_eq!(call(&base, "steady-state", "c", "stable").await.0, 200);
    assert_eq!(
        holders(&env.db, "stable").await,
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(call(&base, "steady-state", "a", "stable").await.0, 200);
    assert_eq!(call(&base, "pre-reboot", "c", "stable").await.0, 200);
    assert_eq!(call(&base, "pre-reboot", "a", "stable").await.0, 423);
}
both!(semaphore_with_slots);

async fn protocol_errors(b: Backend) {
    let (env, base) = setup(b, 1).await;
    let http = reqwest::Client::new();
    let body = json!({"client_params": {"id": "a", "group": "stable"}});

    let r = http
        .post(format!("{base}/v1/pre-reboot"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["kind"], "missing_header");

    let r = http
        .post(format!("{base}/v1/pre-reboot"))
        .header("fleet-lock-protocol", "false")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    for (raw, kind) in [
        ("not json", "decode_error"),
        (r#"{"client_params": {"id": "a"}}"#, "decode_error"),
        (
            r#"{"client_params": {"id": "", "group": "stable"}}"#,
            "invalid_client_identity",
        ),
        (
            r#"{"client_params": {"id": "a", "group": ""}}"#,
            "invalid_client_identity",
        ),
        (
            r#"{"client_params": {"id": "a", "group": "no/slash"}}"#,
            "invalid_client_identity",
        ),
        (
            r#"{"client_params": {"id": "a", "group": "workers"}}"#,
            "unknown_group",
        ),
    ] {
        for op in ["pre-reboot", "steady-state"] {
            let r = http
                .post(format!("{base}/v1/{op}"))
                .header("fleet-lock-protocol", "true")
                .body(raw)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{op} {raw}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["kind"], kind, "{op} {raw}");
            assert!(!v["value"].as_str().unwrap().is_empty());
        }
    }

    let big = format!(
        r#"{{"client_params": {{"id": "{}", "group": "stable"}}}}"#,
        "x".repeat(100_000)
    );
    let r = http
        .post(format!("{base}/v1/pre-reboot"))
        .header("fleet-lock-protocol", "true")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // GET is not the protocol.
    let r = http
        .get(format!("{base}/v1/pre-reboot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(count(&env.db, "fleetlock_holders").await, 0);
}
both!(protocol_errors);

async fn concurrent_lockers_never_exceed_slots(b: Backend) {
    let (env, base) = setup(b, 3).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            call(&base, "pre-reboot", &format!("node-{i}"), "stable")
                .await
                .0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            423 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(count(&env.db, "fleetlock_holders").await, 3);
}
both!(concurrent_lockers_never_exceed_slots);

/// The ```json blocks of docs/fleetlock.md, in order.
fn doc_examples() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/fleetlock.md");
    let text = std::fs::read_to_string(path).unwrap();
    text.split("```json\n")
        .skip(1)
        .map(|b| serde_json::from_str(b.split("```").next().unwrap()).unwrap())
        .collect()
}

async fn documented_examples_are_what_the_server_does(b: Backend) {
    let docs = doc_examples();
    assert_eq!(docs.len(), 4, "request, held, released, error");
    let (env, base) = setup(b, 2).await;
    let http = reqwest::Client::new();
    let send = |op: &str, body: &Value| {
        http.post(format!("{base}/v1/{op}"))
            .header("fleet-lock-protocol", "true")
            .json(body)
            .send()
    };
    let r = send("pre-reboot", &docs[0]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), docs[1]);
    let r = send("steady-state", &docs[0]).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), docs[2]);
    // One slot, held by someone else: the documented error.
    let g = db::groups::find(&env.db, APP, "Stable").await.unwrap();
    let policy = RolloutPolicy {
        fleetlock_slots: 1,
        ..g.policy.rollout
    };
    db::groups::change_policy(&env.db, "admin", APP, "Stable", policy.into())
        .await
        .unwrap();
    assert_eq!(call(&base, "pre-reboot", "other", "stable").await.0, 200);
    let r = send("pre-reboot", &docs[0]).await.unwrap();
    assert_eq!(r.status(), 423);
    assert_eq!(r.json::<Value>().await.unwrap(), docs[3]);
}
both!(documented_examples_are_what_the_server_does);
