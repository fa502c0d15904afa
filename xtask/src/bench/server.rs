//! `cargo xtask bench server`: Omaha update checks per second and p99 latency with 100,000
//! instances in the database, for SQLite and PostgreSQL, next to an axum hello-world measured
//! the same way in the same run.
//!
//! The server under test is pinned to core 0 (`taskset -c 0`); the load generator
//! (`keelson-loadgen`, a second process on loopback) runs on core 1. Each measurement is
//! bounded in time. Two kinds of check are measured per backend: nodes held back by policy
//! (the grant algorithm runs to the end and answers `noupdate`) and nodes already up to date.
//! The 100,000 instances are inserted in bulk with SQL in the server's schema (Omaha seeding
//! takes minutes), then the server's REST API must report all of them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::postgres::Postgres;
use crate::util;

/// Instances seeded before measuring.
const INSTANCES: usize = 100_000;
/// Seconds per measurement.
const SECONDS: u64 = 10;
/// Connections the load generator keeps open.
const CONCURRENCY: usize = 64;
/// PostgreSQL port for benches: below the ephemeral range, like the tests' (`TEST_PG_PORT`).
const PG_PORT: u16 = 25440;

pub fn run() -> Result<()> {
    util::cd_workspace_root()?;
    require_tools()?;
    let bins = build_release()?;
    let work = tempdir("keelson-bench-server")?;

    util::step("axum hello-world (peer)");
    let hello = {
        let addr = free_addr()?;
        let _server = Spawned::start(
            pinned(0, &bins.hello).args(["--listen", &addr]),
            "hello-axum",
            &addr,
        )?;
        measure(&bins, &addr, "1.0.0", "hello-axum", true)?
    };

    util::step("keelson-server on SQLite");
    let sqlite_url = format!("sqlite://{}", work.join("bench.db").display());
    let sqlite = bench_backend(&bins, &sqlite_url, &work.join("sqlite-data"), "sqlite")?;

    util::step("keelson-server on PostgreSQL");
    let postgres = {
        let pg = Postgres::start(PG_PORT).context("starting PostgreSQL for the bench")?;
        bench_backend(&bins, &pg.url, &work.join("pg-data"), "postgres")?
    };

    let _ = std::fs::remove_dir_all(&work);
    println!();
    println!(
        "Omaha update checks, {INSTANCES} instances, server on 1 core (taskset -c 0), \
         load from a second process on core 1, {CONCURRENCY} connections, {SECONDS}s each"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>12} {:>12}",
        "", "checks/s", "p50 ms", "p99 ms", "vs hello/s", "p99 vs hello"
    );
    let mut rows = vec![hello.clone()];
    rows.extend(sqlite);
    rows.extend(postgres);
    for r in &rows {
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>11.1}% {:>11.1}x",
            r.label,
            r.rps,
            r.p50_us / 1000.0,
            r.p99_us / 1000.0,
            100.0 * r.rps / hello.rps,
            r.p99_us / hello.p99_us.max(1.0),
        );
    }
    for r in &rows {
        if r.errors > 0.0 {
            bail!("{} had {} failed requests", r.label, r.errors);
        }
    }
    Ok(())
}

/// One backend: token, server, setup, seeding, then the two measurements.
fn bench_backend(bins: &Bins, db_url: &str, data_dir: &Path, name: &str) -> Result<Vec<Load>> {
    let token = admin_token(bins, db_url)?;
    let addr = free_addr()?;
    let _server = Spawned::start(
        pinned(0, &bins.server)
            .args(["--database-url", db_url, "--listen", &addr, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn"),
        "keelson-server",
        &addr,
    )?;
    // The channel offers 2.0.0 but the group's wave is 0%: every check from 1.0.0 runs the
    // whole grant decision and is held back.
    util::run(loadgen(bins, &addr).args([
        "setup",
        "--token",
        &token,
        "--versions",
        "1.0.0",
        "2.0.0",
        "--rollout-percent",
        "0",
    ]))?;
    let started = Instant::now();
    util::run(loadgen(bins, &addr).args([
        "seed",
        "--version",
        "1.0.0",
        "--machines",
        &INSTANCES.to_string(),
        "--concurrency",
        "32",
        "--max-seconds",
        "900",
        "--sql",
        db_url,
        "--token",
        &token,
    ]))
    .with_context(|| format!("seeding {INSTANCES} instances into {name}"))?;
    eprintln!(
        "seeded {INSTANCES} instances in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let held = measure(
        bins,
        &addr,
        "1.0.0",
        &format!("{name}: held back by policy"),
        false,
    )?;
    let current = measure(
        bins,
        &addr,
        "2.0.0",
        &format!("{name}: already up to date"),
        false,
    )?;
    Ok(vec![held, current])
}

/// Binaries built in release mode.
pub(super) struct Bins {
    pub server: PathBuf,
    pub loadgen: PathBuf,
    pub hello: PathBuf,
}

pub(super) fn require_tools() -> Result<()> {
    if !util::have("taskset") {
        bail!("taskset (util-linux) is needed to pin the server to one core");
    }
    Ok(())
}

pub(super) fn build_release() -> Result<Bins> {
    util::step("building keelson-server, keelson-loadgen and hello-axum (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "keelson-server",
        "--bin",
        "keelson-server",
        "-p",
        "keelson-loadgen",
        "--bin",
        "keelson-loadgen",
        "--bin",
        "hello-axum",
    ]))?;
    let dir = util::workspace_root().join("target/release");
    Ok(Bins {
        server: dir.join("keelson-server"),
        loadgen: dir.join("keelson-loadgen"),
        hello: dir.join("hello-axum"),
    })
}

pub(super) fn tempdir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `taskset -c CORE BIN`.
pub(super) fn pinned(core: u32, bin: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", &core.to_string()]).arg(bin);
    c
}

/// The load generator on core 1, aimed at `addr`.
pub(super) fn loadgen(bins: &Bins, addr: &str) -> Command {
    let mut c = pinned(1, &bins.loadgen);
    c.args(["--server", addr]);
    c
}

/// `keelson-server token create --role admin` against the bench database.
pub(super) fn admin_token(bins: &Bins, db_url: &str) -> Result<String> {
    let out = util::output(Command::new(&bins.server).args([
        "--database-url",
        db_url,
        "token",
        "create",
        "--role",
        "admin",
        "--description",
        "bench",
    ]))?;
    match out.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(t) => Ok(t.to_owned()),
        None => bail!("`keelson-server token create` printed no token"),
    }
}

/// A loopback address nobody listens on right now.
pub(super) fn free_addr() -> Result<String> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.to_string())
}

/// A child process killed when dropped.
pub(super) struct Spawned {
    child: Child,
    log: PathBuf,
}

impl Spawned {
    /// Start `cmd` and wait until it accepts connections on `addr`.
    pub fn start(cmd: &mut Command, name: &str, addr: &str) -> Result<Spawned> {
        let log =
            std::env::temp_dir().join(format!("keelson-bench-{name}-{}.log", std::process::id()));
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut s = Spawned {
            child,
            log: log.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(addr).is_ok() {
                return Ok(s);
            }
            if let Some(status) = s.child.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{name} exited with {status} before listening on {addr}:\n{}",
                    tail.join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not listen on {addr} within 30s (log: {})",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One measurement, read back from the load generator's `--json` line.
#[derive(Clone, Debug)]
pub(super) struct Load {
    pub label: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: f64,
}

fn measure(bins: &Bins, addr: &str, version: &str, label: &str, any_body: bool) -> Result<Load> {
    let mut cmd = loadgen(bins, addr);
    cmd.args([
        "check",
        "--version",
        version,
        "--machines",
        &INSTANCES.to_string(),
        "--concurrency",
        &CONCURRENCY.to_string(),
        "--seconds",
        &SECONDS.to_string(),
        "--label",
        label,
        "--json",
    ]);
    if any_body {
        cmd.arg("--any-body");
    }
    let out = util::output(&mut cmd)?;
    let line = out.lines().last().unwrap_or_default();
    let num = |key: &str| {
        json_number(line, key).with_context(|| format!("no {key:?} in loadgen output {line:?}"))
    };
    let load = Load {
        label: label.to_owned(),
        rps: num("rps")?,
        p50_us: num("p50_us")?,
        p99_us: num("p99_us")?,
        errors: num("errors")?,
    };
    eprintln!(
        "{label}: {:.0} checks/s, p99 {:.2} ms, {} errors",
        load.rps,
        load.p99_us / 1000.0,
        load.errors
    );
    if load.errors > 0.0 {
        eprintln!(
            "  first error: {}",
            json_string(line, "first_error").unwrap_or_default()
        );
    }
    Ok(load)
}

/// The number after `"key":` in a flat JSON object (xtask keeps no JSON dependency).
pub(super) fn json_number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string after `"key":` in a flat JSON object, without unescaping.
pub(super) fn json_string(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = &json[at..];
    let mut end = 0;
    let bytes = rest.as_bytes();
    while end < bytes.len() {
        match bytes[end] {
            b'\\' => end += 2,
            b'"' => break,
            _ => end += 1,
        }
    }
    rest.get(..end).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loadgen_json() {
        let line = r#"{"label":"x","requests":5,"errors":0,"seconds":1.5,"rps":3.3e2,"p50_us":10,"first_error":"HTTP 500: \"no\""}"#;
        assert_eq!(json_number(line, "rps"), Some(330.0));
        assert_eq!(json_number(line, "seconds"), Some(1.5));
        assert_eq!(json_number(line, "errors"), Some(0.0));
        assert_eq!(json_number(line, "p99_us"), None);
        assert_eq!(
            json_string(line, "first_error").as_deref(),
            Some(r#"HTTP 500: \"no\""#)
        );
    }
}
