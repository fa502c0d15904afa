//! A throwaway PostgreSQL cluster for the server's tests and benches.
//!
//! Debian's postgresql package gives the binaries; the cluster lives in a temp directory owned
//! by the `postgres` user (initdb refuses to run as root), listens on loopback only, trusts
//! local connections, and is stopped when the guard is dropped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// A running cluster; stopped on drop.
pub struct Postgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    /// `postgres://` URL of the cluster's `postgres` database.
    pub url: String,
}

fn bin_dir() -> Result<PathBuf> {
    let base = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(&base)
        .with_context(|| {
            format!(
                "reading {} (is postgresql installed? run `cargo xtask deps`)",
                base.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, p)) => Ok(p),
        None => bail!("no PostgreSQL server binaries under {}", base.display()),
    }
}

/// How long a best-effort `pg_ctl stop` may take (its own `-w` waits 60 s).
const PG_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Run a command as the `postgres` user when we are root (initdb and postgres refuse root).
fn as_postgres(bin: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn is_root() -> bool {
    util::output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// Start a fresh cluster on `port` (loopback only).
    pub fn start(port: u16) -> Result<Postgres> {
        let bin_dir = bin_dir()?;
        let data_dir = std::env::temp_dir().join(format!("keelson-pg-{port}"));
        if data_dir.exists() {
            // A cluster left by an interrupted run: stop it if it runs, then start afresh.
            let _ = util::output_with_timeout(
                as_postgres(bin_dir.join("pg_ctl"))
                    .args(["-D"])
                    .arg(&data_dir)
                    .args(["-m", "immediate", "stop"]),
                PG_STOP_TIMEOUT,
            );
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing old cluster {}", data_dir.display()))?;
        }
        std::fs::create_dir_all(&data_dir)?;
        if is_root() {
            util::output(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&data_dir),
            )?;
        }
        util::output(
            as_postgres(bin_dir.join("initdb"))
                .args(["-D"])
                .arg(&data_dir)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        )
        .context("initdb")?;
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            data_dir.display()
        );
        util::output(
            as_postgres(bin_dir.join("pg_ctl"))
                .args(["-D"])
                .arg(&data_dir)
                .args(["-o", &opts, "-w", "-l"])
                .arg(data_dir.join("log"))
                .arg("start"),
        )
        .context("starting PostgreSQL")?;
        Ok(Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            data_dir,
            bin_dir,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = util::output_with_timeout(
            as_postgres(self.bin_dir.join("pg_ctl"))
                .args(["-D"])
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "stop"]),
            PG_STOP_TIMEOUT,
        );
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
