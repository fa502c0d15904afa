//! FleetLock holders for operators: REST list with the time each took its slot (viewer), the
//! admin release (with its activity row), the dashboard's Reboot slots card and Release form.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{APP, Backend, holders, start};
use keelson_server::db;
use reqwest::Method;

async fn holders_listed_and_released(backend: Backend) {
    let s = start(backend).await;
    s.seed(2).await;
    let before = chrono::Utc::now().timestamp();
    // The seeded group has the default 1 slot: one holder in "stable".
    let out = db::fleetlock::lock(&s.db, "stable", "node-a")
        .await
        .unwrap();
    assert!(
        matches!(out, db::fleetlock::LockOutcome::Held { .. }),
        "{out:?}"
    );

    let hs = s.viewer_json("/api/v1/fleetlock/holders").await;
    let hs = hs.as_array().unwrap();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0]["group"], "stable");
    assert_eq!(hs[0]["id"], "node-a");
    let at = hs[0]["acquired_at"].as_i64().unwrap();
    assert!(at >= before && at <= chrono::Utc::now().timestamp(), "{at}");
    assert_eq!(
        s.viewer_json("/api/v1/fleetlock/holders?group=other")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Viewers cannot release; unknown holders and groups are 404.
    let r = s
        .viewer(Method::DELETE, "/api/v1/fleetlock/stable/holders/node-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for path in [
        "/api/v1/fleetlock/stable/holders/node-b",
        "/api/v1/fleetlock/nogroup/holders/node-a",
    ] {
        let r = s.admin(Method::DELETE, path).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // The dashboard shows the holder and, for admins, a Release form that works.
    let r = s
        .http
        .post(s.url("/login"))
        .form(&[("token", s.admin.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = s
        .http
        .get(s.url(&format!("/ui/apps/{APP}/groups/prod")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Reboot slots (FleetLock stable): 1 of 1 held"),
        "{page}"
    );
    assert!(page.contains("<code>node-a</code>"));
    assert!(page.contains("/fleetlock/release"));
    let r = s
        .http
        .post(s.url(&format!("/ui/apps/{APP}/groups/prod/fleetlock/release")))
        .header("cookie", &cookie)
        .form(&[("id", "node-a")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(holders(&s.db, "stable").await.is_empty());

    // The REST release works the same way and is in the activity log.
    db::fleetlock::lock(&s.db, "stable", "node-b")
        .await
        .unwrap();
    let r = s
        .admin(Method::DELETE, "/api/v1/fleetlock/stable/holders/node-b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(holders(&s.db, "stable").await.is_empty());
    let activity = s.admin_json("/api/v1/activity?limit=10").await;
    let kinds: Vec<&str> = activity
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "fleetlock.released_by_admin")
            .count(),
        2,
        "{kinds:?}"
    );
}

both!(holders_listed_and_released);
