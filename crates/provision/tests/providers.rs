//! Each cloud provider against a local server that serves that service's real paths and
//! headers, and rejects requests that lack them.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use common::{Reply, Request, serve};
use keelson_provision::http::{HttpClient, RetryPolicy};
use keelson_provision::providers::{
    AwsProvider, AzureProvider, GcpProvider, OpenStackProvider, Provider, ProviderError,
};

const CONFIG: &str = r#"{"ignition":{"version":"3.6.0"}}"#;

fn http() -> HttpClient {
    HttpClient::new(RetryPolicy::quick(4)).unwrap()
}

/// An IMDSv2 server: tokens from PUT, user-data only with a valid token.
fn imds(userdata: Option<&'static str>) -> common::Server {
    serve(
        move |r: &Request| match (r.method.as_str(), r.target.as_str()) {
            ("PUT", "/latest/api/token") => {
                match r.header("X-aws-ec2-metadata-token-ttl-seconds") {
                    Some(ttl) if ttl.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) => {
                        Reply::new(200, "tok-123")
                    }
                    _ => Reply::new(400, "missing or invalid ttl"),
                }
            }
            ("GET", "/latest/user-data") => {
                if r.header("X-aws-ec2-metadata-token") != Some("tok-123") {
                    Reply::new(401, "")
                } else if let Some(u) = userdata {
                    Reply::new(200, u)
                } else {
                    Reply::new(404, "")
                }
            }
            _ => Reply::new(404, ""),
        },
    )
}

#[test]
fn aws_imdsv2_token_then_userdata() {
    let server = imds(Some(CONFIG));
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), Some(CONFIG.as_bytes().to_vec()));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "PUT");
    assert_eq!(reqs[1].header("X-aws-ec2-metadata-token"), Some("tok-123"));
}

#[test]
fn aws_404_is_no_config_and_cloud_config_is_ignored() {
    let server = imds(None);
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), None);
    let server = imds(Some("#cloud-config\nhostname: x\n"));
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), None);
}

#[test]
fn aws_falls_back_to_imdsv1_when_token_endpoint_is_missing() {
    let server = serve(|r: &Request| match (r.method.as_str(), r.target.as_str()) {
        ("PUT", _) => Reply::new(405, ""),
        ("GET", "/latest/user-data") if r.header("X-aws-ec2-metadata-token").is_none() => {
            Reply::new(200, CONFIG)
        }
        _ => Reply::new(400, ""),
    });
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), Some(CONFIG.as_bytes().to_vec()));
}

#[test]
fn aws_retries_5xx_then_succeeds() {
    let fails = Arc::new(AtomicU32::new(2));
    let f = fails.clone();
    let server = serve(move |r: &Request| {
        if r.method == "PUT"
            && f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Reply::new(503, "busy");
        }
        match r.method.as_str() {
            "PUT" => Reply::new(200, "tok-123"),
            _ if r.header("X-aws-ec2-metadata-token") == Some("tok-123") => Reply::new(200, CONFIG),
            _ => Reply::new(401, ""),
        }
    });
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), Some(CONFIG.as_bytes().to_vec()));
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn aws_unexpected_status_is_an_error_with_the_url() {
    let server = serve(|r: &Request| match r.method.as_str() {
        "PUT" => Reply::new(200, "tok-123"),
        _ => Reply::new(403, ""),
    });
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    let err = p.fetch_config().unwrap_err().to_string();
    assert!(
        err.contains("/latest/user-data") && err.contains("403"),
        "{err}"
    );
}

#[test]
fn aws_gives_up_on_persistent_5xx() {
    let server = serve(|_: &Request| Reply::new(500, ""));
    let p = AwsProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    let err = p.fetch_config().unwrap_err();
    assert!(matches!(err, ProviderError::Http { .. }), "{err}");
    assert_eq!(server.requests().len(), 4);
}

fn gcp_server(userdata: Option<&'static str>, flavor_in_reply: bool) -> common::Server {
    serve(move |r: &Request| {
        let reply = if r.header("Metadata-Flavor") != Some("Google") {
            Reply::new(403, "Missing Metadata-Flavor:Google header.")
        } else if r.target == "/computeMetadata/v1/instance/attributes/user-data" {
            match userdata {
                Some(u) => Reply::new(200, u),
                None => Reply::new(404, ""),
            }
        } else {
            Reply::new(404, "")
        };
        if flavor_in_reply {
            reply.header("Metadata-Flavor", "Google")
        } else {
            reply
        }
    })
}

#[test]
fn gcp_userdata_with_flavor_headers() {
    let server = gcp_server(Some(CONFIG), true);
    let p = GcpProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), Some(CONFIG.as_bytes().to_vec()));
    let server = gcp_server(None, true);
    let p = GcpProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), None);
}

#[test]
fn gcp_rejects_an_impostor_without_the_flavor_reply_header() {
    let server = gcp_server(Some(CONFIG), false);
    let p = GcpProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    let err = p.fetch_config().unwrap_err().to_string();
    assert!(err.contains("Metadata-Flavor"), "{err}");
}

fn azure_server(userdata: Option<String>) -> common::Server {
    serve(move |r: &Request| {
        if r.header("Metadata") != Some("true") {
            return Reply::new(
                400,
                r#"{"error":"Bad request. Required metadata header not specified"}"#,
            );
        }
        if r.target != "/metadata/instance/compute/userData?api-version=2021-01-01&format=text" {
            return Reply::new(404, "");
        }
        match &userdata {
            Some(u) => Reply::new(200, u.clone()),
            None => Reply::new(200, ""),
        }
    })
}

#[test]
fn azure_base64_userdata() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(CONFIG);
    let server = azure_server(Some(b64));
    let p = AzureProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), Some(CONFIG.as_bytes().to_vec()));
    assert_eq!(server.requests()[0].header("Metadata"), Some("true"));
}

#[test]
fn azure_empty_is_none_and_garbage_is_an_error() {
    let server = azure_server(None);
    let p = AzureProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), None);
    let server = azure_server(Some("not base64 !!".into()));
    let p = AzureProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    let err = p.fetch_config().unwrap_err().to_string();
    assert!(err.contains("base64"), "{err}");
}

#[test]
fn openstack_metadata_service() {
    let server = serve(|r: &Request| match r.target.as_str() {
        "/openstack/latest/user_data" => Reply::new(200, CONFIG),
        _ => Reply::new(404, ""),
    });
    let p = OpenStackProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), Some(CONFIG.as_bytes().to_vec()));
    let server = serve(|_: &Request| Reply::new(404, ""));
    let p = OpenStackProvider {
        base_url: server.base.clone(),
        http: http(),
    };
    assert_eq!(p.fetch_config().unwrap(), None);
}
