//! A tiny HTTP/1.1 server on 127.0.0.1:0 for tests: one thread, one request per connection,
//! a handler closure decides the reply and every request is recorded.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Announce the full length but send only half the body, then close: a broken download.
    pub truncate: bool,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            truncate: false,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub struct Server {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

pub fn serve(handler: impl Fn(&Request) -> Reply + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).ok();
            let req = Request {
                method,
                target,
                headers,
                body,
            };
            let reply = handler(&req);
            log.lock().unwrap().push(req);
            let reason = match reply.status {
                200 => "OK",
                404 => "Not Found",
                401 => "Unauthorized",
                _ => "Status",
            };
            let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason);
            for (k, v) in &reply.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                reply.body.len()
            ));
            let mut bytes = out.into_bytes();
            let body_len = if reply.truncate {
                reply.body.len() / 2
            } else {
                reply.body.len()
            };
            bytes.extend_from_slice(&reply.body[..body_len]);
            stream.write_all(&bytes).ok();
            stream.flush().ok();
        }
    });
    Server { base, requests }
}

/// A client with quick retries, as the stage tests use.
pub fn fetcher() -> keelson_provision::fetch::Fetcher {
    keelson_provision::fetch::Fetcher::new(
        keelson_provision::http::HttpClient::new(keelson_provision::http::RetryPolicy::quick(2))
            .unwrap(),
        1 << 20,
    )
}

/// The first-boot stages' context over `dir`: `config` as the user config (a file provider),
/// the target root `dir/sysroot` (created), the stage cache under `dir/run`.
pub fn stage_context(
    dir: &tempfile::TempDir,
    config: &str,
) -> keelson_provision::stages::StageContext<'static> {
    let cfg = dir.path().join("user.ign");
    std::fs::write(&cfg, config).unwrap();
    let root = dir.path().join("sysroot");
    std::fs::create_dir_all(&root).unwrap();
    keelson_provision::stages::StageContext {
        providers: vec![Box::new(keelson_provision::providers::FileProvider {
            path: cfg,
        })],
        fetcher: fetcher(),
        root,
        cache: dir.path().join("run/keelson/config.json"),
        files: keelson_provision::engine::files::FilesOptions {
            today: 1,
            chown: false,
            dry_run: false,
            kernel_cmdline: Some("console=ttyS0".into()),
        },
    }
}
