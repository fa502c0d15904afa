//! The dashboard over plain HTTP on SQLite and PostgreSQL: login and cookie, roles, escaping,
//! and the policy form's validation (the browser test covers the same flow in Chromium).
#![allow(clippy::unwrap_used)]

mod common;

use common::{APP, Backend, start};
use reqwest::Method;
use serde_json::json;

async fn dashboard_pages_and_form(backend: Backend) {
    let s = start(backend).await;
    s.seed(6).await;

    // Without a session every page redirects to the login form.
    for path in [
        "/ui",
        "/ui/activity",
        "/ui/instances",
        &format!("/ui/apps/{APP}/groups/prod"),
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/login", "{path}");
    }
    let r = s
        .http
        .post(s.url("/login"))
        .form(&[("token", "kt_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // Login sets an HttpOnly, SameSite=Strict cookie holding the token.
    let r = s
        .http
        .post(s.url("/login"))
        .form(&[("token", s.admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let get = |path: String, cookie: String| {
        let req = s.http.get(s.url(&path)).header("cookie", cookie);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // Markup from the database is escaped.
    let r = s
        .admin(Method::PUT, &format!("/api/v1/apps/{APP}"))
        .json(&json!({"name": "<script>alert(1)</script>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, html) = get("/ui".into(), pair.clone()).await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("id=\"group-prod\"") && html.contains("class=\"bar\""));

    let (status, html) = get(
        "/ui/instances?group=prod&status=error".to_string(),
        pair.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("1 instance(s)"), "{html}");
    let (status, html) = get("/ui/activity".into(), pair.clone()).await;
    assert_eq!(status, 200);
    assert!(html.contains("application.updated"));
    let (status, _) = get("/ui/instances/999999".into(), pair.clone()).await;
    assert_eq!(status, 404);

    // The form: a valid change is stored, an invalid one is refused with the field named.
    let form_url = s.url(&format!("/ui/apps/{APP}/groups/prod/policy"));
    let r = s
        .http
        .post(&form_url)
        .header("cookie", pair.clone())
        .form(&[
            ("updates_enabled", "on"),
            ("max_updates_per_period", "9"),
            ("timezone", "America/New_York"),
            ("maintenance_windows", "mon,tue 01:00-03:00"),
            ("pinned_version", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let policy = || async {
        s.viewer_json(&format!("/api/v1/apps/{APP}/groups/prod/policy"))
            .await
    };
    let p = policy().await;
    assert_eq!(p["max_updates_per_period"], 9);
    assert_eq!(p["timezone"], "America/New_York");
    assert_eq!(p["safe_mode"], false);
    assert_eq!(p["maintenance_windows"][0]["days"], json!(["mon", "tue"]));
    for (field, value) in [
        ("max_updates_per_period", "lots"),
        ("rollout_percent", "101"),
        ("maintenance_windows", "mon 01:00"),
        ("pinned_version", "9.9.9"),
    ] {
        let r = s
            .http
            .post(&form_url)
            .header("cookie", pair.clone())
            .form(&[("updates_enabled", "on"), (field, value)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"policy-error\""), "{field}");
        assert!(
            html.contains(field),
            "{field}: error does not name the field"
        );
        assert_eq!(
            policy().await,
            p,
            "{field}: a refused form changed the policy"
        );
    }

    // A viewer gets the form read-only and cannot post it.
    let viewer_cookie = format!("keelson_token={}", s.viewer);
    let (status, html) = get(format!("/ui/apps/{APP}/groups/prod"), viewer_cookie.clone()).await;
    assert_eq!(status, 200);
    assert!(html.contains("Read-only") && !html.contains("id=\"save-policy\""));
    let r = s
        .http
        .post(&form_url)
        .header("cookie", viewer_cookie)
        .form(&[("max_updates_per_period", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(policy().await, p);

    // Logout clears the cookie.
    let r = s
        .http
        .post(s.url("/logout"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

both!(dashboard_pages_and_form);
