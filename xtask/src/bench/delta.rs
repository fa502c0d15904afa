//! `cargo xtask bench delta` (issue #13): the bytes a node running v1 downloads to get v2,
//! next to the full payload, and the time to apply v2 with chunk reuse next to a full apply.
//!
//! v1 and v2 are real image builds of `os/` (the cached root file system, so the two differ
//! only in what the bench changes): v2 has one package added and one upgraded. The packages
//! are pinned by exact version and put into `/usr` as image overlays (`keelson image build
//! --overlay DIR`, the extracted .deb), because the build's single Debian suite holds one
//! version of each package and an overlay does not change the cached root:
//!
//! - upgraded: `jq` and `libjq1` 1.6-2.1+deb12u2 (Debian 12 point release) in v1,
//!   1.6-2.1+deb12u3 (bookworm-security) in v2;
//! - added: `tree` 2.1.0-1 in v2 only.
//!
//! The .debs come from the host's apt sources (`apt-get download PKG=VERSION`) into
//! `target/bench/delta/debs`, once. Then the `delta` bench target of keelson-agent (release
//! profile, `crates/agent/benches/delta.rs`) builds v2's payload, serves it from a real
//! keelson-server and runs the agent's apply on disk image files, once on a node running v1
//! (slot A = v1's usr and verity, v1's UKI on the ESP) and once on a node with nothing to
//! reuse, and prints the numbers.
//!
//! `KEELSON_BENCH_DELTA_IMAGES=DIR` skips the builds and uses `DIR` holding both builds
//! (`keelson_0.1.0.*`, `keelson_0.2.0.*`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// (package, version) in v1's overlay.
const V1_DEBS: &[(&str, &str)] = &[("jq", "1.6-2.1+deb12u2"), ("libjq1", "1.6-2.1+deb12u2")];
/// (package, version) in v2's overlay: jq upgraded, tree added.
const V2_DEBS: &[(&str, &str)] = &[
    ("jq", "1.6-2.1+deb12u3"),
    ("libjq1", "1.6-2.1+deb12u3"),
    ("tree", "2.1.0-1"),
];
const V1: &str = "0.1.0";
const V2: &str = "0.2.0";

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let dir = root.join("target/bench/delta");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let images = match std::env::var_os("KEELSON_BENCH_DELTA_IMAGES") {
        Some(d) => PathBuf::from(d),
        None => build_images(&dir)?,
    };
    util::step("bench delta: v1 -> v2 with chunk reuse, next to a full apply");
    let images = images.to_string_lossy().into_owned();
    let work = dir.join("work").to_string_lossy().into_owned();
    util::run(util::cargo().args([
        "bench",
        "-p",
        "keelson-agent",
        "--bench",
        "delta",
        "--",
        "--v1-dir",
        &images,
        "--v1-version",
        V1,
        "--v2-dir",
        &images,
        "--v2-version",
        V2,
        "--work",
        &work,
    ]))
    .context("running the delta bench of keelson-agent")?;
    Ok(())
}

/// Builds v1 and v2 into `dir/images` with their overlays; returns the directory.
fn build_images(dir: &Path) -> Result<PathBuf> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let v1_overlay = overlay(&debs, &dir.join("overlay-v1"), V1_DEBS)?;
    let v2_overlay = overlay(&debs, &dir.join("overlay-v2"), V2_DEBS)?;
    let images = dir.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let keelson = crate::vm::keelson_binary()?;
    for (version, overlay) in [(V1, &v1_overlay), (V2, &v2_overlay)] {
        util::step(&format!("bench delta: building image {version}"));
        let overlay = overlay.to_string_lossy().into_owned();
        crate::vm::build_image(&keelson, &images, version, &["--overlay", &overlay])?;
    }
    Ok(images)
}

/// Downloads the pinned .debs (once) and extracts them into a fresh `out`.
fn overlay(debs: &Path, out: &Path, pinned: &[(&str, &str)]) -> Result<PathBuf> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, version) in pinned {
        let file = debs.join(format!("{name}_{}_amd64.deb", version.replace(':', "%3a")));
        if !file.is_file() {
            let spec = format!("{name}={version}");
            let download = || {
                util::run(
                    Command::new("apt-get")
                        .args(["download", "-q", &spec])
                        .current_dir(debs),
                )
            };
            if download().is_err() {
                util::run(Command::new("apt-get").args(["update", "-q"]))
                    .context("apt-get update")?;
                download().with_context(|| format!("downloading {spec}"))?;
            }
            if !file.is_file() {
                bail!("apt-get download {spec} wrote no {}", file.display());
            }
        }
        util::run(Command::new("dpkg-deb").arg("-x").arg(&file).arg(out))
            .with_context(|| format!("extracting {}", file.display()))?;
    }
    Ok(out.to_path_buf())
}
