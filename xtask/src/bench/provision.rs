//! `cargo xtask bench provision`: power-on to the container app answering on a first boot
//! that provisions it (config through fw_cfg; user, files, unit, and the app's OCI archive
//! fetched over HTTP in the initrd), next to the same disk booting again without provisioning
//! (marker gone, app already installed), in one run with the same harness.
//!
//! Both numbers come from the VM test `first_boot_provisions_user_files_and_app`
//! (crates/image/tests/vm_provision.rs), which boots the disk twice and prints
//! `bench: first_boot_app_s X` and `bench: second_boot_app_s Y`: the test checks what was
//! provisioned, this bench only reads the times. Times include the autologin on the serial
//! console and polling the app once a second from inside the guest, equally for both boots.
//!
//! Debian's cloud-init with an equivalent cloud-config is not measured yet (it needs a second
//! stock image with cloud-init and a NoCloud seed); the line says so instead of a made-up value.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{util, vm};

fn value(out: &str, key: &str) -> Result<f64> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("bench: "))
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .with_context(|| format!("the VM test printed no `bench: {key}`"))?
        .1
        .trim()
        .parse()
        .with_context(|| format!("`bench: {key}` is not a number"))
}

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let dir = root.join(vm::VM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keelson = vm::keelson_binary()?;
    util::step("bench provision: image with first-boot provisioning");
    let record = vm::build_image(&keelson, &dir, "0.1.0", &[])?;
    let busybox = vm::busybox(&dir)?;
    // One sample is noisy on shared cores: KEELSON_BENCH_RUNS (default 1) repeats the pair
    // and reports the medians.
    let runs: usize = std::env::var("KEELSON_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (mut firsts, mut seconds) = (Vec::new(), Vec::new());
    for i in 1..=runs {
        util::step(&format!(
            "bench provision: first boot (provisioning) and second boot of the same disk, run {i}/{runs}"
        ));
        let (f, s) = one_run(&record, &busybox, &dir)?;
        println!("  run {i}: first boot {f:.1} s, second boot {s:.1} s");
        firsts.push(f);
        seconds.push(s);
    }
    let first = median(firsts);
    let second = median(seconds);
    if second <= 0.0 {
        bail!("second boot time {second} s is not positive");
    }
    println!(
        "power-on to the container app answering (QEMU TCG, same disk, same harness, median of {runs}):"
    );
    println!("  first boot, provisioning from fw_cfg + HTTP : {first:>7.1} s");
    println!("  second boot, no provisioning                : {second:>7.1} s");
    println!(
        "  ratio provisioning / no provisioning        : {:>7.2}",
        first / second
    );
    println!(
        "  Debian cloud-init, equivalent cloud-config  :  not measured (no cloud-init image yet)"
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One pair of boots through the VM test; returns (first boot, second boot) seconds.
fn one_run(record: &Path, busybox: &Path, dir: &Path) -> Result<(f64, f64)> {
    let out = util::output(
        util::cargo()
            .args([
                "test",
                "-p",
                "keelson-image",
                "--test",
                "vm_provision",
                "--",
                "--ignored",
                "--exact",
                "first_boot_provisions_user_files_and_app",
                "--nocapture",
            ])
            .env("KEELSON_VM_BUILD", record)
            .env("KEELSON_VM_BUSYBOX", busybox)
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
