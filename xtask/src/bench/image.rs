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
    util::run(util::cargo().args(["build", "--release", "-p", "keelson-firstboot"]))
        .context("building the keelson-firstboot binary")?;
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
    Ok(())
}
