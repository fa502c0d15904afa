//! `cargo xtask bench update`, part 1: the agent's apply throughput next to a raw copy plus
//! sha256 of the same uncompressed bytes, measured in one run by the `apply` bench target of
//! keelson-agent (`crates/agent/benches/apply.rs`, release profile).
//!
//! Input: the usr erofs, verity tree and UKI of the latest image build when
//! `target/vm/<name>_<version>.usr.erofs` exists (or in `KEELSON_BENCH_IMAGE_DIR`), else a
//! generated 256 MiB usr of realistic compressibility. `KEELSON_BENCH_RUNS=N` times each
//! measurement N times (medians).
//!
//! Part 2: the update's downtime next to a plain reboot of the same node, by the VM test
//! `fleetlock_update_blessed` (crates/image/tests/vm_update.rs, with
//! `KEELSON_BENCH_PLAIN_REBOOT=1`): images v1 and v2 as `cargo xtask test`
//! builds them, keelson-server on the host, and the app polled from the host through a
//! forwarded port every 200 ms; the downtime is the longest time it did not answer, through
//! `keelson-agent update --now` (v1 -> v2) and then through `systemctl reboot`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util;

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let runs: usize = match std::env::var("KEELSON_BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("KEELSON_BENCH_RUNS={v:?} is not a number"))?,
        Err(_) => 1,
    };
    let image_dir = std::env::var_os("KEELSON_BENCH_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/vm"));
    let has_usr = std::fs::read_dir(&image_dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.contains('_') && n.ends_with(".usr.erofs"))
        })
    });
    let work = root.join("target/bench/update");
    let mut args = vec![
        "bench".to_string(),
        "-p".into(),
        "keelson-agent".into(),
        "--bench".into(),
        "apply".into(),
        "--".into(),
        "--work".into(),
        work.to_string_lossy().into_owned(),
        "--runs".into(),
        runs.to_string(),
    ];
    if has_usr {
        args.push("--image-dir".into());
        args.push(image_dir.to_string_lossy().into_owned());
    } else {
        eprintln!(
            "no <name>_<version>.usr.erofs in {}: generating a 256 MiB usr instead",
            image_dir.display()
        );
    }
    util::step("bench update: agent apply next to a raw copy plus sha256");
    util::run(util::cargo().args(&args)).context("running the apply bench of keelson-agent")?;

    util::step("bench update: downtime through the update, next to a plain reboot (VM)");
    let dir = root.join(crate::vm::VM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keelson = crate::vm::keelson_binary()?;
    let (_, pem) = crate::vm::dev_update_key(&keelson, &dir)?;
    let key = pem.to_string_lossy().into_owned();
    let v1 = crate::vm::build_image(&keelson, &dir, "0.1.0", &["--update-key", &key])?;
    let v2 = crate::vm::build_image(&keelson, &dir, "0.2.0", &["--update-key", &key])?;
    let busybox = crate::vm::busybox(&dir)?;
    util::run(util::cargo().args(["build", "-p", "keelson-server", "--bin", "keelson-server"]))
        .context("building the keelson-server binary")?;
    let (mut update, mut plain) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let out = util::output(
            crate::vm::vm_test("vm_update", Some("fleetlock_update_blessed"), &v1, &busybox)?
                .env("KEELSON_BENCH_PLAIN_REBOOT", "1")
                .env("KEELSON_VM_V2_BUILD", &v2)
                .env("KEELSON_VM_UPDATE_KEYS", pem.parent().unwrap_or(&dir))
                .env("KEELSON_VM_BIN_DIR", root.join("target/debug"))
                .env(
                    "KEELSON_VM_CONSOLE_LOG",
                    dir.join("console-bench-update.log"),
                ),
        )
        .context("the downtime VM run failed")?;
        let value = |key: &str| -> Result<f64> {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("the downtime run printed no {key}"))
        };
        update.push(value("update_downtime_s")?);
        plain.push(value("plain_reboot_downtime_s")?);
        eprintln!(
            "run {run}: update {:.1} s, plain reboot {:.1} s",
            update[run - 1],
            plain[run - 1]
        );
    }
    let (u, p) = (median(update), median(plain));
    println!(
        "  downtime (app not answering, seen from the host, median of {runs}): update v1 -> v2 \
         {u:.1} s, plain reboot {p:.1} s, ratio {:.2}",
        u / p
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
