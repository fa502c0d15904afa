//! The resource fetcher against a local HTTP server: headers, retries, broken downloads,
//! gzip and verification over the wire.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Reply, Request, serve};
use keelson_provision::fetch::{FetchError, Fetcher, ResourceSpec};
use keelson_provision::http::{HttpClient, RetryPolicy};
use sha2::Digest as _;

fn fetcher() -> Fetcher {
    Fetcher::new(HttpClient::new(RetryPolicy::quick(4)).unwrap(), 1 << 20)
}

#[test]
fn sends_custom_headers_and_ignition_accept() {
    let server = serve(|r: &Request| match r.header("Authorization") {
        Some("Bearer s3cret") => Reply::new(200, "payload"),
        _ => Reply::new(401, ""),
    });
    let spec = ResourceSpec {
        headers: vec![("Authorization".into(), "Bearer s3cret".into())],
        ..ResourceSpec::url(format!("{}/f", server.base))
    };
    assert_eq!(fetcher().fetch_bytes(&spec).unwrap(), b"payload");
    let req = &server.requests()[0];
    assert!(
        req.header("Accept")
            .unwrap()
            .contains("vnd.coreos.ignition+json")
    );
    assert_eq!(req.header("Accept-Encoding"), Some("identity"));
    // Without the header: 401 is final, not retried.
    let err = fetcher()
        .fetch_bytes(&ResourceSpec::url(format!("{}/f", server.base)))
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn retries_5xx_and_broken_bodies_then_writes_only_the_good_copy() {
    let n = Arc::new(AtomicU32::new(0));
    let c = n.clone();
    let body = "0123456789".repeat(100);
    let b = body.clone();
    let server = serve(move |_: &Request| match c.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::new(502, ""),
        1 => Reply {
            truncate: true,
            ..Reply::new(200, b.clone())
        },
        _ => Reply::new(200, b.clone()),
    });
    let dir = tempfile::tempdir().unwrap();
    let tmp = fetcher()
        .fetch_to_temp_in(
            &ResourceSpec::url(format!("{}/big", server.base)),
            dir.path(),
        )
        .unwrap();
    assert_eq!(std::fs::read_to_string(tmp.path()).unwrap(), body);
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[test]
fn gzip_over_http_verified_after_decompression() {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b"unit contents\n").unwrap();
    let gz = e.finish().unwrap();
    let server = serve(move |_: &Request| Reply::new(200, gz.clone()));
    let good = ResourceSpec {
        source: format!("{}/x.gz", server.base),
        compression: Some("gzip".into()),
        headers: vec![],
        verification: Some(format!(
            "sha512-{}",
            hex::encode(sha2::Sha512::digest(b"unit contents\n"))
        )),
    };
    assert_eq!(fetcher().fetch_bytes(&good).unwrap(), b"unit contents\n");
    let bad = ResourceSpec {
        verification: Some(format!("sha512-{}", "a".repeat(128))),
        ..good
    };
    assert!(matches!(
        fetcher().fetch_bytes(&bad),
        Err(FetchError::HashMismatch { .. })
    ));
    // A hash mismatch is final: one request per fetch.
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn connection_refused_gives_up_with_attempt_count() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = fetcher()
        .fetch_bytes(&ResourceSpec::url(format!("http://{addr}/x")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("4 attempt(s)"), "{msg}");
}

#[test]
fn http_proxy_from_settings_is_used_and_no_proxy_bypasses_it() {
    use keelson_provision::http::HttpSettings;
    let proxy = serve(|r: &Request| {
        // A forward proxy sees the absolute URL in the request line.
        if r.target == "http://keelson.invalid/x" {
            Reply::new(200, "via proxy")
        } else {
            Reply::new(400, r.target.clone())
        }
    });
    let settings = HttpSettings {
        http_proxy: Some(proxy.base.clone()),
        ..Default::default()
    };
    let f = Fetcher::new(
        HttpClient::with_settings(RetryPolicy::quick(1), &settings).unwrap(),
        1 << 20,
    );
    assert_eq!(
        f.fetch_bytes(&ResourceSpec::url("http://keelson.invalid/x"))
            .unwrap(),
        b"via proxy"
    );
    let bypass = HttpSettings {
        no_proxy: vec!["keelson.invalid".into()],
        ..settings
    };
    let f = Fetcher::new(
        HttpClient::with_settings(RetryPolicy::quick(1), &bypass).unwrap(),
        1 << 20,
    );
    assert!(
        f.fetch_bytes(&ResourceSpec::url("http://keelson.invalid/x"))
            .is_err()
    );
    assert_eq!(proxy.requests().len(), 1);
}

#[test]
fn ca_bundles_are_checked() {
    use keelson_provision::http::HttpSettings;
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/test-ca.pem"
    ))
    .unwrap();
    let ok = HttpSettings {
        ca_bundles: vec![pem],
        ..Default::default()
    };
    assert!(HttpClient::with_settings(RetryPolicy::quick(1), &ok).is_ok());
    let bad = HttpSettings {
        ca_bundles: vec![b"not a certificate".to_vec()],
        ..Default::default()
    };
    let err = HttpClient::with_settings(RetryPolicy::quick(1), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificateAuthorities[0]"), "{err}");
}

#[test]
fn config_settings_build_the_fetcher() {
    use keelson_provision::engine::fetcher_for;
    let base = fetcher();
    let cfg = |ign: &str| {
        keelson_config::parse(format!(r#"{{"ignition":{{"version":"3.6.0",{ign}}}}}"#).as_bytes())
            .unwrap()
            .0
    };
    let bad_ca =
        cfg(r#""security":{"tls":{"certificateAuthorities":[{"source":"data:,garbage"}]}}"#);
    let err = fetcher_for(&bad_ca, &base).unwrap_err().to_string();
    assert!(err.contains("certificateAuthorities[0]"), "{err}");
    let proxy = serve(|_: &Request| Reply::new(200, "proxied"));
    let with_proxy = cfg(&format!(r#""proxy":{{"httpProxy":"{}"}}"#, proxy.base));
    let f = fetcher_for(&with_proxy, &base).unwrap();
    assert_eq!(
        f.fetch_bytes(&ResourceSpec::url("http://keelson.invalid/y"))
            .unwrap(),
        b"proxied"
    );
}

#[test]
fn files_stage_fetches_over_http_and_a_bad_resource_changes_nothing() {
    use keelson_provision::engine::{apply_files, files::FilesOptions};
    use keelson_provision::target::TargetRoot;
    let server = serve(
        |r: &Request| match (r.target.as_str(), r.header("X-Token")) {
            ("/motd", Some("t0k")) => Reply::new(200, "hello over http\n"),
            ("/motd", _) => Reply::new(403, ""),
            _ => Reply::new(404, ""),
        },
    );
    let sha = hex::encode(sha2::Sha256::digest(b"hello over http\n"));
    let cfg = |path: &str, hash: &str| {
        keelson_config::parse(
            format!(
                r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"files":[
                  {{"path":"/etc/first","contents":{{"source":"data:,1"}}}},
                  {{"path":"/etc/motd","contents":{{"source":"{}{path}","httpHeaders":[{{"name":"X-Token","value":"t0k"}}],
                    "verification":{{"hash":"sha256-{hash}"}}}}}}]}}}}"#,
                server.base
            )
            .as_bytes(),
        )
        .unwrap()
        .0
    };
    let dir = tempfile::tempdir().unwrap();
    let target = TargetRoot::new(dir.path()).unwrap();
    let opts = FilesOptions {
        today: 1,
        chown: false,
        dry_run: false,
        kernel_cmdline: None,
    };
    for (path, hash) in [("/missing", sha.as_str()), ("/motd", &"0".repeat(64))] {
        let err = apply_files(&cfg(path, hash), &target, &fetcher(), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/motd"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "failed stage left files behind"
        );
    }
    apply_files(&cfg("/motd", &sha), &target, &fetcher(), &opts).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/motd")).unwrap(),
        "hello over http\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/first")).unwrap(),
        "1"
    );
}

/// The initrd brings its network up through this hook: once, and only when a request is about
/// to go out (a data: URL is not one), shared with the client the config's settings make.
#[test]
fn network_hook_runs_once_before_the_first_request() {
    let server = serve(|_: &Request| Reply::new(200, "x"));
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let http = HttpClient::new(RetryPolicy::quick(1))
        .unwrap()
        .with_network_hook(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            Err("no link (the hook's failure is only logged)".into())
        });
    let f = Fetcher::new(http.clone(), 1 << 20);
    f.fetch_bytes(&ResourceSpec::url("data:,offline")).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a data: URL needs no network"
    );
    f.fetch_bytes(&ResourceSpec::url(format!("{}/a", server.base)))
        .unwrap();
    let other = http
        .reconfigured(RetryPolicy::quick(1), &Default::default())
        .unwrap();
    Fetcher::new(other, 1 << 20)
        .fetch_bytes(&ResourceSpec::url(format!("{}/b", server.base)))
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.requests().len(), 2);
}
