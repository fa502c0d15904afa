//! `cargo xtask bench image`: cold and warm build times of the OS image, measured in one run.
//!
//! Cold: an empty cache (the archive index, every package download, mmdebstrap, then the rest).
//! Rootfs: packages cached but the root file system rebuilt (what a changed package list or
//! overlay costs). Warm: unchanged inputs, everything cached (what CI pays on every run).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{util, vm};

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let dir = root.join("target/bench/image");
    let cache = dir.join("cache");
    let out = dir.join("out");
    let keelson = vm::keelson_binary()?;
    // Built before the clock starts: only `keelson image build` is timed (cargo may wait for
    // other builds' locks, which says nothing about the image build).
    vm::build_image_binaries()?;
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("emptying {}", cache.display()))?;
    }
    let cache_arg = cache.to_string_lossy().into_owned();
    let time = |label: &str, extra: &[&str]| -> Result<Duration> {
        util::step(&format!("bench image: {label} build"));
        let mut args = vec!["--cache", cache_arg.as_str()];
        args.extend_from_slice(extra);
        let t = Instant::now();
        util::run(vm::image_build_command(&keelson, &out, "0.1.0").args(&args))
            .context("building the OS image")?;
        Ok(t.elapsed())
    };
    let cold = time("cold (empty cache)", &[])?;
    let rootfs = time("root file system rebuilt (packages cached)", &["--fresh"])?;
    let warm = time("warm (unchanged inputs)", &[])?;
    let s = |d: Duration| d.as_secs_f64();
    println!("\nimage build of os/ ({})", out.display());
    println!(
        "  {:<48} {:>8.1} s",
        "cold: empty cache (download + mmdebstrap + rest)",
        s(cold)
    );
    println!(
        "  {:<48} {:>8.1} s",
        "packages cached, root file system rebuilt",
        s(rootfs)
    );
    println!("  {:<48} {:>8.1} s", "warm: unchanged inputs", s(warm));
    println!("  {:<48} {:>8.2}", "ratio warm / cold", s(warm) / s(cold));
    println!(
        "  {:<48} {:>8.2}",
        "ratio packages-cached / cold",
        s(rootfs) / s(cold)
    );
    sizes(&out.join("keelson_0.1.0.json"))
}

/// The UKI before issue #14 (2026-12-04, generic dracut initrd): the UKI target is half of it.
const UKI_BEFORE: u64 = 44_530_176;
/// The usr erofs before issue #14 (with dracut, ukify and apt in /usr).
const USR_BEFORE: u64 = 265_138_176;

/// Print the sizes of the build's update parts next to the sizes before issue #14, and how
/// many versions' UKIs the ESP holds.
fn sizes(record: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(record)
        .with_context(|| format!("reading the build record {}", record.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing the build record {}", record.display()))?;
    let size = |kind: &str| -> Result<u64> {
        json["files"]
            .as_array()
            .and_then(|files| files.iter().find(|f| f["kind"] == kind))
            .and_then(|f| f["size"].as_u64())
            .with_context(|| format!("{} lists no {kind} file", record.display()))
    };
    let (uki, usr) = (size("uki")?, size("usr")?);
    let esp = json["partitions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["label"] == "esp"))
        .and_then(|p| p["size"].as_u64())
        .with_context(|| format!("{} lists no esp partition", record.display()))?;
    let mb = |b: u64| b as f64 / 1e6;
    println!("\nsizes of the update parts ({})", record.display());
    println!(
        "  {:<48} {:>8.1} MB  before {:>6.1} MB  ratio {:.2} (target <= 0.50)",
        "UKI (kernel + initrd)",
        mb(uki),
        mb(UKI_BEFORE),
        uki as f64 / UKI_BEFORE as f64
    );
    println!(
        "  {:<48} {:>8.1} MB  before {:>6.1} MB  ratio {:.2}",
        "/usr erofs",
        mb(usr),
        mb(USR_BEFORE),
        usr as f64 / USR_BEFORE as f64
    );
    // systemd-boot twice (removable-media path and its own) and the loader files: about 1 MB.
    let room = esp.saturating_sub(1 << 20);
    println!(
        "  {:<48} {:>8} (before {})",
        format!("UKIs that fit the {} MiB ESP", esp >> 20),
        room / uki.max(1),
        room / UKI_BEFORE
    );
    Ok(())
}
