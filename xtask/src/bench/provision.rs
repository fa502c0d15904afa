//! `cargo xtask bench provision`: power-on to the container app answering on a first boot
//! that provisions it (config through fw_cfg; user, files, unit, and the app's OCI archive
//! fetched over HTTP in the initrd), next to the same disk booting again without provisioning
//! (marker gone, app already installed), and next to a stock Debian trixie disk provisioned by
//! cloud-init from an equivalent cloud-config, in one run with the same harness.
//!
//! The Keelson numbers come from the VM test `first_boot_provisions_user_files_and_app`
//! (crates/image/tests/vm_provision.rs), which boots the disk twice and prints
//! `bench: first_boot_app_s X` and `bench: second_boot_app_s Y`: the test checks what was
//! provisioned, this bench only reads the times. The cloud-init number comes from the example
//! `cloudinit_provision` (crates/image/examples/), which boots the stock disk with the same
//! `Vm` harness, serves cloud-init's NoCloud seed over HTTP, takes the time the same way (QEMU
//! start to the app answering a poll from inside the guest, after the autologin) and then
//! checks the user, key, files and archive in the guest. Times include the autologin on the
//! serial console and polling the app once a second, equally for all three.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::boot::{StockDisk, stock_debian_image};
use super::median;
use crate::{util, vm};

/// On top of the stock disk of `bench boot` (which has containerd, runc, openssh-server):
/// cloud-init, an HTTP client for the archive, and the DHCP client cloud-init depends on.
const CLOUD_INIT_PACKAGES: &str = "cloud-init,curl,dhcpcd-base";

/// cloud-init renders its network config for systemd-networkd (no ifupdown or netplan here);
/// Debian leaves networkd disabled, a cloud image enables it.
const CLOUD_INIT_HOOKS: &[&str] = &["chroot \"$1\" systemctl enable systemd-networkd.service"];

fn value(out: &str, key: &str) -> Result<f64> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("bench: "))
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .with_context(|| format!("the VM run printed no `bench: {key}`"))?
        .1
        .trim()
        .parse()
        .with_context(|| format!("`bench: {key}` is not a number"))
}

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let dir = root.join(vm::VM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bench_dir = root.join("target/bench/provision");
    // Built first: it is the step most likely to need the network, and it is cached.
    let ci_disk = stock_debian_image(&StockDisk {
        dir: &bench_dir,
        name: "debian-trixie-cloudinit.img",
        extra_packages: CLOUD_INIT_PACKAGES,
        hooks: CLOUD_INIT_HOOKS,
        root_mib: 2048,
    });
    let keelson = vm::keelson_binary()?;
    util::step("bench provision: image with first-boot provisioning");
    let record = vm::build_image(&keelson, &dir, "0.1.0", &[])?;
    let busybox = vm::busybox(&dir)?;
    // The cloud-init side: its disk and the example; any failure is reported in its line
    // instead of a number.
    let ci = ci_disk.and_then(|disk| {
        util::step("bench provision: the cloud-init example");
        util::run(util::cargo().args([
            "build",
            "-q",
            "-p",
            "keelson-image",
            "--example",
            "cloudinit_provision",
        ]))?;
        let example = root.join("target/debug/examples/cloudinit_provision");
        Ok(CloudInit { disk, example })
    });
    // One sample is noisy on shared cores: KEELSON_BENCH_RUNS (default 1) repeats the three
    // boots and reports the medians.
    let runs: usize = std::env::var("KEELSON_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    // A boot that fails (a guest kernel panic under TCG was seen on a loaded machine) is
    // reported with its reason and left out of the medians; the line says how many counted.
    let (mut firsts, mut seconds, mut clouds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut keelson_err, mut cloud_err) = (None, None);
    for i in 1..=runs {
        util::step(&format!(
            "bench provision: first boot (provisioning) and second boot of the same disk, run {i}/{runs}"
        ));
        match one_run(&record, &busybox, &dir) {
            Ok((f, s)) => {
                println!("  run {i}: first boot {f:.1} s, second boot {s:.1} s");
                firsts.push(f);
                seconds.push(s);
            }
            Err(e) => {
                println!("  run {i}: the Keelson boots failed: {}", first_line(&e));
                keelson_err = Some(e);
            }
        }
        if let Ok(c) = &ci {
            util::step(&format!(
                "bench provision: stock Debian + cloud-init first boot, run {i}/{runs}"
            ));
            match c.run_once(&busybox, &bench_dir) {
                Ok(t) => {
                    println!("  run {i}: cloud-init first boot {t:.1} s");
                    clouds.push(t);
                }
                Err(e) => {
                    println!("  run {i}: the cloud-init boot failed: {}", first_line(&e));
                    cloud_err = Some(e);
                }
            }
        }
    }
    if firsts.is_empty() {
        let e = keelson_err.unwrap_or_else(|| anyhow::anyhow!("no run"));
        return Err(e.context("every Keelson provisioning run failed"));
    }
    let counted = |n: usize| {
        if n == runs {
            String::new()
        } else {
            format!(" ({n} of {runs} runs)")
        }
    };
    let keelson_n = counted(firsts.len());
    let first = median(firsts);
    let second = median(seconds);
    if second <= 0.0 || first <= 0.0 {
        bail!("boot times {first} s / {second} s are not positive");
    }
    println!(
        "power-on to the container app answering (QEMU TCG, same harness, median of the runs that worked):"
    );
    println!("  Keelson first boot, provisioning from fw_cfg + HTTP : {first:>7.1} s{keelson_n}");
    println!("  Keelson second boot, same disk, no provisioning     : {second:>7.1} s{keelson_n}");
    println!(
        "  ratio provisioning / no provisioning                : {:>7.2}",
        first / second
    );
    let cloud_n = clouds.len();
    let cloud = median(clouds);
    match (ci, cloud_n) {
        (Ok(_), n) if n > 0 => {
            println!(
                "  Debian trixie + cloud-init first boot, NoCloud HTTP : {cloud:>7.1} s{}",
                counted(n)
            );
            println!(
                "  ratio Keelson first boot / cloud-init first boot    : {:>7.2}",
                first / cloud
            );
            println!(
                "  ratio cloud-init first boot / Keelson second boot   : {:>7.2}",
                cloud / second
            );
            Ok(())
        }
        (ci, _) => {
            let e = match ci {
                Err(e) => e,
                Ok(_) => cloud_err.unwrap_or_else(|| anyhow::anyhow!("no run")),
            };
            let why = format!("{e:#}");
            println!(
                "  Debian trixie + cloud-init first boot               : not measured, because:"
            );
            for l in why.lines() {
                println!("      {l}");
            }
            bail!("the cloud-init column could not be measured: {why}")
        }
    }
}

/// The first line of an error chain, for a one-line progress report.
fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// One pair of boots through the VM test; returns (first boot, second boot) seconds.
fn one_run(record: &Path, busybox: &Path, dir: &Path) -> Result<(f64, f64)> {
    let out = util::output(
        vm::vm_test(
            "vm_provision",
            Some("first_boot_provisions_user_files_and_app"),
            record,
            busybox,
        )?
        .env(
            "KEELSON_VM_CONSOLE_LOG",
            dir.join("console-bench-provision.log"),
        ),
    )
    .context("the provisioning VM run failed")?;
    Ok((
        value(&out, "first_boot_app_s")?,
        value(&out, "second_boot_app_s")?,
    ))
}

/// What the cloud-init column needs, ready to boot.
struct CloudInit {
    disk: PathBuf,
    example: PathBuf,
}

impl CloudInit {
    /// One first boot of the stock disk (snapshot, so every run is a first boot); seconds from
    /// QEMU start to the app answering.
    fn run_once(&self, busybox: &Path, dir: &Path) -> Result<f64> {
        let log = dir.join("console-bench-cloudinit.log");
        let _ = std::fs::remove_file(&log);
        // The example's stderr (what cloud-init fetched and when, `cloud-init analyze`) is
        // kept for reading after the run; on failure its tail goes into the error.
        let errlog = dir.join("cloudinit-example.log");
        let errfile = std::fs::File::create(&errlog)
            .with_context(|| format!("creating {}", errlog.display()))?;
        let out = util::output(
            std::process::Command::new(&self.example)
                .arg(&self.disk)
                .arg(busybox)
                .env("KEELSON_VM_CONSOLE_LOG", &log)
                .stderr(errfile),
        )
        .with_context(|| {
            let text = std::fs::read_to_string(&errlog).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "the cloud-init boot failed (console in {}, log in {}):\n{}",
                log.display(),
                errlog.display(),
                tail.join("\n")
            )
        })?;
        value(&out, "cloudinit_app_s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_are_read_by_key() {
        let out = "noise\nbench: first_boot_app_s 12.5\n  bench: cloudinit_app_s 40.0\n";
        assert_eq!(value(out, "first_boot_app_s").unwrap(), 12.5);
        assert_eq!(value(out, "cloudinit_app_s").unwrap(), 40.0);
        let e = value(out, "second_boot_app_s").unwrap_err().to_string();
        assert!(e.contains("second_boot_app_s"), "{e}");
        let e = value("bench: cloudinit_app_s soon\n", "cloudinit_app_s").unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
