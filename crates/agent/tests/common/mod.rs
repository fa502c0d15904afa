//! What the agent's HTTP tests share: the admin side of the embedded keelson-server.

#![allow(dead_code, clippy::unwrap_used)]

/// `POST {base}{path}` with the admin token and a JSON body; the answer must be a success.
pub async fn admin_post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// `GET {base}{path}` with the admin token, as JSON.
pub async fn admin_get(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
) -> serde_json::Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}
