//! Payload serving over the wire: full downloads, single byte ranges (206), unsatisfiable
//! ranges (416), HEAD, If-Range, and what is not served (wrong name, external packages).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use keelson_server::db;

async fn ranges(b: Backend) {
    let env = env(b).await;
    db::applications::create(&env.db, "test", APP, "Keelson", "")
        .await
        .unwrap();
    let bytes = payload("3.1.0", 200_001);
    let pkg = stored_package(&env, "3.1.0", &bytes).await;
    let ext = external_package(&env, "3.2.0").await;
    let base = serve(&env, |_| {}).await;
    let url = format!("{base}/packages/{}/keelson_update.gz", pkg.id);
    let http = reqwest::Client::new();
    let get = |range: Option<&'static str>| {
        let mut r = http.get(&url);
        if let Some(v) = range {
            r = r.header("range", v);
        }
        r.send()
    };

    let full = get(None).await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-length"], "200001");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(full.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let table: [(&str, usize, usize); 4] = [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=199990-", 199_990, 200_000),
        ("bytes=-11", 199_990, 200_000),
    ];
    for (h, s, e) in table {
        let r = get(Some(h)).await.unwrap();
        assert_eq!(r.status(), 206, "{h}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {s}-{e}/200001").as_str(),
            "{h}"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[s..=e], "{h}");
    }

    let r = get(Some("bytes=200001-")).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */200001");

    // Multiple ranges are answered with the whole file (allowed by RFC 9110).
    let r = get(Some("bytes=0-1,5-6")).await.unwrap();
    assert_eq!(r.status(), 200);

    // If-Range with the current ETag honours the range; a stale one gets the full body.
    let r = http
        .get(&url)
        .header("range", "bytes=10-19")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let r = http
        .get(&url)
        .header("range", "bytes=10-19")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "200001");

    for bad in [
        format!("{base}/packages/{}/other.gz", pkg.id),
        format!("{base}/packages/999999/keelson_update.gz"),
        format!("{base}/packages/abc/keelson_update.gz"),
        format!("{base}/packages/{}/flatcar_production_update.gz", ext.id),
    ] {
        let r = http.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), 404, "{bad}");
        assert!(!r.text().await.unwrap().is_empty());
    }
}
both!(ranges);

/// A payload uploaded through the REST API (SERVER-API's streamed upload) is served here with
/// ranges at the `download_path` the API reports, byte for byte.
async fn uploaded_through_the_api_is_served(b: Backend) {
    let env = env(b).await;
    db::applications::create(&env.db, "test", APP, "Keelson", "")
        .await
        .unwrap();
    let token = keelson_server::auth::create_token(
        &env.db,
        keelson_server::auth::Role::Admin,
        "packages test",
    )
    .await
    .unwrap()
    .token;
    let base = serve(&env, |_| {}).await;
    let bytes = payload("4.0.0", 123_457);
    let http = reqwest::Client::new();
    let r = http
        .put(format!(
            "{base}/api/v1/apps/{APP}/packages/4.0.0/payload?filename=keelson_update.gz"
        ))
        .bearer_auth(&token)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let pkg: serde_json::Value = r.json().await.unwrap();
    let path = pkg["download_path"].as_str().unwrap();
    let got = http
        .get(format!("{base}{path}"))
        .header("range", "bytes=-457")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 206);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &bytes[123_000..]);
    let whole = http.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes.as_slice());
}
both!(uploaded_through_the_api_is_served);
