//! /metrics over the wire: Prometheus text with instances per version and channel, grants,
//! failures and lock holders.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use chrono::{Duration, Utc};
use common::*;
use keelson_server::grant::RolloutPolicy;
use keelson_server::metrics::escape_label;

async fn scrape(b: Backend) {
    let env = env(b).await;
    fleet(
        &env,
        "2.0.0",
        RolloutPolicy {
            fleetlock_slots: 2,
            ..Default::default()
        },
    )
    .await;
    let now = Utc::now();
    for m in ["a", "b", "c"] {
        assert!(check(&env, m, "1.0.0", now).await.is_ok());
    }
    complete(&env, "a", "1.0.0", "2.0.0", now + Duration::minutes(5)).await;
    fail(&env, "b", "1.0.0", 44, now + Duration::minutes(6)).await;
    let base = serve(&env, |_| {}).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/pre-reboot"))
        .header("fleet-lock-protocol", "true")
        .body(r#"{"client_params": {"id": "c", "group": "stable"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for line in [
        format!(r#"keelson_instances{{application="{APP}",channel="stable",version="1.0.0"}} 2"#),
        format!(r#"keelson_instances{{application="{APP}",channel="stable",version="2.0.0"}} 1"#),
        format!(r#"keelson_update_grants_total{{application="{APP}",group="stable"}} 3"#),
        format!(r#"keelson_update_failures_total{{application="{APP}",group="stable"}} 1"#),
        format!(r#"keelson_update_successes_total{{application="{APP}",group="stable"}} 1"#),
        format!(
            r#"keelson_instances_by_status{{application="{APP}",group="stable",status="error"}} 1"#
        ),
        r#"keelson_fleetlock_holders{group="stable"} 1"#.to_string(),
        r#"keelson_fleetlock_slots{group="stable"} 2"#.to_string(),
        "# TYPE keelson_update_grants_total counter".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // Every sample line is `name{labels} integer`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        v.parse::<i64>()
            .unwrap_or_else(|_| panic!("bad sample {l:?}"));
    }
}
both!(scrape);

#[test]
fn label_escaping() {
    assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(escape_label("x\ny"), "x\\ny");
}
