//! VM tests and VM runs: build the OS image once, then boot it under QEMU (TCG, OVMF).
//! (Owned by the OS image work, [2/7].)
//!
//! `run_tests` builds `os/` into `target/vm/` with the `keelson` binary (the package and root
//! file system caches under `~/.cache/keelson` make a rebuild of unchanged inputs quick), then
//! runs the `#[ignore]`d tests of `crates/image/tests/vm.rs`, `vm_provision.rs` and
//! `vm_health.rs` one at a time, pointing them at the build through environment variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Where the VM test image is built.
pub const VM_DIR: &str = "target/vm";

/// Build the workspace's `keelson` binary and return its path.
pub fn keelson_binary() -> Result<PathBuf> {
    util::run(util::cargo().args(["build", "-p", "keelson", "--bin", "keelson"]))
        .context("building the keelson binary")?;
    Ok(util::workspace_root().join("target/debug/keelson"))
}

/// The release `keelson-agent` binary, when the workspace has the agent crate (crates/agent);
/// the image build installs it into /usr/bin (`KEELSON_AGENT_BIN`).
pub fn agent_binary() -> Option<PathBuf> {
    let root = util::workspace_root();
    root.join("crates/agent/Cargo.toml")
        .is_file()
        .then(|| root.join("target/release/keelson-agent"))
}

/// `keelson image build` of `os/` into `out`, with the release `keelson-firstboot` in the initrd
/// and the release `keelson-agent` in /usr/bin (the caller builds those binaries first).
pub fn image_build_command(keelson: &Path, out: &Path, version: &str) -> Command {
    let mut c = Command::new(keelson);
    c.env(
        "KEELSON_FIRSTBOOT_BIN",
        util::workspace_root().join("target/release/keelson-firstboot"),
    );
    if let Some(agent) = agent_binary() {
        c.env("KEELSON_AGENT_BIN", agent);
    }
    c.args([
        "image",
        "build",
        "--os",
        "os",
        "--version",
        version,
        "--out",
    ])
    .arg(out);
    c
}

/// Build `os/` into `out` with `keelson image build`; returns the build record path.
pub fn build_image(keelson: &Path, out: &Path, version: &str, extra: &[&str]) -> Result<PathBuf> {
    // First-boot provisioning goes into the initrd (crates/firstboot, docs/first-boot.md).
    util::run(util::cargo().args(["build", "--release", "-p", "keelson-firstboot"]))
        .context("building the keelson-firstboot binary")?;
    // The update agent goes into /usr/bin (crates/agent, docs/agent.md).
    if agent_binary().is_some() {
        util::run(util::cargo().args(["build", "--release", "-p", "keelson-agent"]))
            .context("building the keelson-agent binary")?;
    } else {
        util::step("no crates/agent in the workspace: the image is built without keelson-agent");
    }
    util::run(image_build_command(keelson, out, version).args(extra))
        .with_context(|| format!("building the OS image into {}", out.display()))?;
    let record = out.join(format!("keelson_{version}.json"));
    if !record.is_file() {
        bail!("the build finished but wrote no {}", record.display());
    }
    Ok(record)
}

/// A statically linked busybox for the container test, from the Debian package (cached).
pub fn busybox(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("busybox-static/bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let download = || {
        util::run(
            Command::new("apt-get")
                .args(["download", "-q", "busybox-static"])
                .current_dir(&debs),
        )
    };
    if download().is_err() {
        util::run(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")?;
        download().context("downloading busybox-static")?;
    }
    let deb = std::fs::read_dir(&debs)
        .with_context(|| format!("listing {}", debs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("busybox-static_"))
        })
        .with_context(|| format!("no busybox-static .deb in {}", debs.display()))?;
    let root = dir.join("busybox-static");
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    if !bin.is_file() {
        bail!("{} holds no bin/busybox", deb.display());
    }
    Ok(bin)
}

/// Run the VM test suite. A VM test that cannot boot fails; nothing is skipped.
pub fn run_tests() -> Result<()> {
    util::step("VM tests: building the OS image");
    let root = util::workspace_root();
    let dir = root.join(VM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keelson = keelson_binary()?;
    let record = build_image(&keelson, &dir, "0.1.0", &[])?;
    let busybox = busybox(&dir)?;
    // Every console of this run, for reading after a failure (each failure also quotes the tail).
    let _ = std::fs::remove_file(dir.join("console.log"));

    util::step("VM tests: booting the image");
    let mut c = vm_test("vm", None, &record, &busybox);
    c.env("KEELSON_VM_OS", root.join("os"))
        // The rebuild test must make the same /usr, keelson-firstboot and keelson-agent included.
        .env(
            "KEELSON_FIRSTBOOT_BIN",
            root.join("target/release/keelson-firstboot"),
        )
        .env("KEELSON_VM_CONSOLE_LOG", dir.join("console.log"));
    if let Some(agent) = agent_binary() {
        c.env("KEELSON_AGENT_BIN", agent);
    }
    util::run(&mut c).context("VM tests failed")?;

    // First-boot provisioning (crates/firstboot): three boots, about 6 min under TCG.
    util::step("VM tests: first-boot provisioning");
    util::run(
        vm_test("vm_provision", None, &record, &busybox)
            .env("KEELSON_VM_CONSOLE_LOG", dir.join("console.log")),
    )
    .context("first-boot provisioning VM tests failed")?;

    // Health-gated boots (os/rootfs keelson-health*): four boots (one blessed, two failing
    // trial boots that reboot by themselves, one fallback), a few minutes under TCG.
    util::step("VM tests: health-gated boots");
    util::run(
        vm_test("vm_health", None, &record, &busybox)
            .env("KEELSON_VM_CONSOLE_LOG", dir.join("console.log")),
    )
    .context("health-gate VM tests failed")?;
    Ok(())
}

/// `cargo test` of the `#[ignore]`d VM tests in `crates/image/tests/<file>.rs` (all of them,
/// one at a time, or only `exact`) against the build record `record`, with the test container's
/// busybox.
pub fn vm_test(file: &str, exact: Option<&str>, record: &Path, busybox: &Path) -> Command {
    let mut c = util::cargo();
    c.args(["test", "-p", "keelson-image", "--test", file, "--"])
        .args(["--ignored", "--test-threads=1", "--nocapture"]);
    if let Some(name) = exact {
        c.args(["--exact", name]);
    }
    c.env("KEELSON_VM_BUILD", record)
        .env("KEELSON_VM_BUSYBOX", busybox);
    c
}
