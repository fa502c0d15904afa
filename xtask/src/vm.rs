//! VM tests and VM runs: build the OS image once, then boot it under QEMU (TCG, OVMF).
//! (Owned by the OS image work, [2/7].)
//!
//! `run_tests` builds `os/` into `target/vm/` with the `keelson` binary (the package and root
//! file system caches under `~/.cache/keelson` make a rebuild of unchanged inputs quick), then
//! runs the `#[ignore]`d tests of `crates/image/tests/vm.rs` and `vm_provision.rs` one at a
//! time, and beside them (a second stream) `vm_update.rs` on v2 and v3 images built here,
//! pointing them at the builds through environment variables.

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
    // Its log lines go to the user's output between the steps, which say how long each took.
    c.env("KEELSON_LOG_TIME", "0");
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

/// Build `os/` into `out` with `keelson image build` (the binaries it installs first), unless
/// the same inputs built it before ([`build_image_cached`]); returns the build record path.
pub fn build_image(keelson: &Path, out: &Path, version: &str, extra: &[&str]) -> Result<PathBuf> {
    build_image_binaries()?;
    build_image_cached(keelson, out, version, extra, None)
}

/// The release binaries an image carries: keelson-firstboot (initrd) and keelson-agent (/usr).
pub fn build_image_binaries() -> Result<()> {
    // First-boot provisioning goes into the initrd (crates/firstboot, docs/first-boot.md), the
    // update agent into /usr/bin (crates/agent, docs/agent.md). One cargo run for both: built
    // one `-p` at a time, their shared dependencies were compiled again for each feature set.
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "keelson-firstboot",
        "-p",
        "keelson-agent",
    ]))
    .context("building the keelson-firstboot and keelson-agent binaries")
}

/// `keelson image build` of version `version` into `out` (output to `log` when given), skipped
/// when `keelson_<version>.inputs` there holds the digest of the same inputs: os/, the keelson,
/// keelson-firstboot and keelson-agent binaries, the version and the extra arguments (files and
/// directories they name by content). A rebuild of unchanged inputs gives the same image
/// (tests/vm.rs checks it), so the demo and repeated test runs need not wait for one.
pub fn build_image_cached(
    keelson: &Path,
    out: &Path,
    version: &str,
    extra: &[&str],
    log: Option<&std::fs::File>,
) -> Result<PathBuf> {
    let record = out.join(format!("keelson_{version}.json"));
    let image = out.join(format!("keelson_{version}.img"));
    let stamp = out.join(format!("keelson_{version}.inputs"));
    let mut c = image_build_command(keelson, out, version);
    c.args(extra);
    let digest = inputs_digest(&c)?;
    if record.is_file()
        && image.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest)
    {
        eprintln!(
            "image {version}: inputs unchanged, reusing {}",
            image.display()
        );
        return Ok(record);
    }
    let _ = std::fs::remove_file(&stamp);
    match log {
        None => util::run(&mut c),
        Some(f) => util::run_logged(&mut c, f),
    }
    .with_context(|| format!("building the {version} OS image into {}", out.display()))?;
    if !record.is_file() {
        bail!("the build finished but wrote no {}", record.display());
    }
    std::fs::write(&stamp, format!("{digest}\n"))
        .with_context(|| format!("writing {}", stamp.display()))?;
    Ok(record)
}

/// SHA-256 over everything an image build reads: os/, the program and the binaries named by
/// its environment, every argument, and the files and directories the arguments name.
fn inputs_digest(c: &Command) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut paths = vec![PathBuf::from(c.get_program())];
    for (k, v) in c.get_envs() {
        h.update(k.as_encoded_bytes());
        if let Some(v) = v {
            h.update(v.as_encoded_bytes());
            paths.push(PathBuf::from(v));
        }
    }
    // The output directory holds earlier builds: it is named, not read.
    let mut out_dir = false;
    for a in c.get_args() {
        h.update(a.as_encoded_bytes());
        h.update([0]);
        if !std::mem::replace(&mut out_dir, a == "--out") {
            paths.push(PathBuf::from(a));
        }
    }
    for p in paths.iter().filter(|p| p.exists()) {
        hash_tree(&mut h, p)?;
    }
    Ok(hex::encode(h.finalize()))
}

/// Feed `path` into `h`: a file's bytes, a link's target, a directory's entries in order.
fn hash_tree(h: &mut sha2::Sha256, path: &Path) -> Result<()> {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(meta.permissions().mode().to_le_bytes());
    if meta.is_symlink() {
        h.update(std::fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if meta.is_dir() {
        let mut entries = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?;
        entries.sort();
        for e in entries {
            hash_tree(h, &e)?;
        }
    } else {
        h.update(file_digest(path, &meta)?);
    }
    Ok(())
}

/// SHA-256 of a file's bytes, remembered for the run by path, size and modification time:
/// the three image builds of a test run name the same binaries (hundreds of MB), read once.
fn file_digest(path: &Path, meta: &std::fs::Metadata) -> Result<[u8; 32]> {
    use sha2::Digest;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Seen = HashMap<(PathBuf, u64, Option<std::time::SystemTime>), [u8; 32]>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let seen = SEEN.get_or_init(Default::default);
    if let Some(d) = seen.lock().ok().and_then(|m| m.get(&key).copied()) {
        return Ok(d);
    }
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut fh = sha2::Sha256::new();
    std::io::copy(&mut f, &mut fh).with_context(|| format!("reading {}", path.display()))?;
    let d: [u8; 32] = fh.finalize().into();
    if let Ok(mut m) = seen.lock() {
        m.insert(key, d);
    }
    Ok(d)
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
pub fn run_tests(only: &[String]) -> Result<()> {
    const FILES: [&str; 3] = ["vm", "vm_provision", "vm_update"];
    if let Some(bad) = only.iter().find(|f| !FILES.contains(&f.as_str())) {
        bail!("--vm-test {bad}: no such VM test file (one of {FILES:?})");
    }
    let wanted = |file: &str| only.is_empty() || only.iter().any(|f| f == file);
    let started = std::time::Instant::now();
    util::step("VM tests: building the OS image");
    let root = util::workspace_root();
    let dir = root.join(VM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keelson = keelson_binary()?;
    // The development update key: every test image trusts it, the update tests sign with it.
    let (_, dev_pem) = dev_update_key(&keelson, &dir)?;
    let key_arg = dev_pem.to_string_lossy().into_owned();
    let record = build_image(&keelson, &dir, "0.1.0", &["--update-key", &key_arg])?;
    let busybox = busybox(&dir)?;
    if wanted("vm_update") {
        util::run(util::cargo().args(["build", "-p", "keelson-server", "--bin", "keelson-server"]))
            .context("building the keelson-server binary")?;
    }
    // Every test binary is built before any runs: the two streams below then never wait for
    // cargo's lock, and run the binaries themselves.
    for file in FILES.iter().filter(|f| wanted(f)) {
        vm_test_binary(file)?;
    }
    // Each stream keeps every console in its own file, for reading after a failure (each
    // failure also quotes the tail).
    let console = |name: &str| {
        let p = dir.join(format!("console-{name}.log"));
        let _ = std::fs::remove_file(&p);
        p
    };

    // Two streams side by side: each guest has one vCPU (qemu.rs), so one stream leaves a core
    // of CI's two idle. The update stream builds v2 and a v3 whose own health check fails
    // (both signed with the development key, published on a keelson-server on the host), runs
    // the long update test and then the demo's update scenario, and writes their output to a
    // log that is printed when it ends. The main stream runs the other files and the extension
    // update (v1 only).
    let update_stream = wanted("vm_update").then(|| {
        let (keelson, dir, record, busybox, key_arg, dev_pem, root) = (
            keelson.clone(),
            dir.clone(),
            record.clone(),
            busybox.clone(),
            key_arg.clone(),
            dev_pem.clone(),
            root.clone(),
        );
        let log = dir.join("vm_update.log");
        let consoles = [console("vm_update"), console("vm_update-fleetlock")];
        let log2 = log.clone();
        let handle = std::thread::spawn(move || -> Result<()> {
            let out = std::fs::File::create(&log2)
                .with_context(|| format!("creating {}", log2.display()))?;
            let build = |version: &str, extra: &[&str]| -> Result<PathBuf> {
                let mut args = vec!["--update-key", key_arg.as_str()];
                args.extend(extra);
                build_image_cached(&keelson, &dir, version, &args, Some(&out))
            };
            let v2 = build("0.2.0", &[])?;
            let overlay = bad_release_overlay(&dir)?;
            let v3 = build("0.3.0", &["--overlay", &overlay.to_string_lossy()])?;
            // The long test (power cuts, refusals), then the demo's update step as it runs
            // in `cargo xtask demo`: v2 through a FleetLock slot, then the bad v3's rollback.
            let mut failed = Vec::new();
            for (name, console) in ["update_bless_and_refuse", "fleetlock_update_blessed"]
                .into_iter()
                .zip(&consoles)
            {
                let run = vm_test("vm_update", Some(name), &record, &busybox).and_then(|mut c| {
                    c.env("KEELSON_VM_V2_BUILD", &v2)
                        .env("KEELSON_VM_V3_BUILD", &v3)
                        .env("KEELSON_VM_UPDATE_KEYS", dev_pem.parent().unwrap_or(&dir))
                        .env("KEELSON_VM_BIN_DIR", root.join("target/debug"))
                        .env("KEELSON_VM_CONSOLE_LOG", console);
                    util::run_logged(&mut c, &out)
                });
                if let Err(e) = run {
                    failed.push(format!("{name}: {e:#}"));
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("\n"));
            }
            Ok(())
        });
        (handle, log)
    });

    let mut failed = Vec::new();
    let mut stream = |name: &str, what: &str, c: Result<Command>| {
        util::step(&format!(
            "VM tests: {what} ({name}.rs, {:.0?} in)",
            started.elapsed()
        ));
        if let Err(e) = c.and_then(|mut c| util::run(&mut c)) {
            failed.push(format!("{what} ({name}.rs): {e:#}"));
        }
    };
    if wanted("vm") {
        let c = vm_test("vm", None, &record, &busybox).map(|mut c| {
            c.env("KEELSON_VM_OS", root.join("os"))
                // The rebuild test must make the same /usr, keelson-firstboot and keelson-agent
                // included.
                .env(
                    "KEELSON_FIRSTBOOT_BIN",
                    root.join("target/release/keelson-firstboot"),
                )
                .env("KEELSON_VM_UPDATE_KEY", &dev_pem)
                .env("KEELSON_VM_CONSOLE_LOG", console("vm"));
            if let Some(agent) = agent_binary() {
                c.env("KEELSON_AGENT_BIN", agent);
            }
            c
        });
        stream("vm", "the image: boot, verity, runtime, rebuild", c);
    }
    if wanted("vm_provision") {
        let c = vm_test("vm_provision", None, &record, &busybox).map(|mut c| {
            c.env("KEELSON_VM_CONSOLE_LOG", console("vm_provision"));
            c
        });
        stream("vm_provision", "first-boot provisioning", c);
    }
    if wanted("vm_update") {
        // Needs only v1.
        let c = vm_test(
            "vm_update",
            Some("extension_update_without_reboot"),
            &record,
            &busybox,
        )
        .map(|mut c| {
            c.env("KEELSON_VM_BIN_DIR", root.join("target/debug"))
                .env("KEELSON_VM_CONSOLE_LOG", console("vm_update-sysext"));
            c
        });
        stream("vm_update", "an extension updated without a reboot", c);
    }
    if let Some((handle, log)) = update_stream {
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the update stream panicked")));
        util::step(&format!(
            "VM tests: updates (vm_update.rs), ended {:.0?} in; its output ({}):",
            started.elapsed(),
            log.display()
        ));
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        if let Err(e) = result {
            failed.push(format!("updates (vm_update.rs): {e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} VM test file(s) failed (consoles in {}/console-*.log):\n{}",
            failed.len(),
            dir.display(),
            failed.join("\n")
        );
    }
    eprintln!("VM tests passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Build the test binary of `crates/image/tests/<file>.rs` (cargo's JSON messages name it).
pub fn vm_test_binary(file: &str) -> Result<PathBuf> {
    vm_test_binary_in(file, Profile::Dev)
}

/// A cargo profile: the test suite builds the host side in `dev` (and the image's two
/// binaries in `release`); the demo builds everything in `release`, so it compiles the
/// workspace once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`.
    Dev,
    /// `target/release`.
    Release,
}

impl Profile {
    /// Where cargo puts this profile's binaries.
    pub fn dir(self) -> PathBuf {
        util::workspace_root().join(match self {
            Profile::Dev => "target/debug",
            Profile::Release => "target/release",
        })
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Profile::Dev => &[],
            Profile::Release => &["--release"],
        }
    }
}

/// Every binary of the demo in one release cargo run: `keelson`, `keelson-server`, and the
/// image's `keelson-firstboot` and `keelson-agent`; returns `target/release`.
pub fn release_binaries() -> Result<PathBuf> {
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "keelson",
        "-p",
        "keelson-server",
        "-p",
        "keelson-firstboot",
        "-p",
        "keelson-agent",
    ]))
    .context("building keelson, keelson-server, keelson-firstboot and keelson-agent")?;
    Ok(Profile::Release.dir())
}

/// [`vm_test_binary`] in `profile`.
pub fn vm_test_binary_in(file: &str, profile: Profile) -> Result<PathBuf> {
    let out = util::output(util::cargo().args(["test"]).args(profile.flags()).args([
        "-p",
        "keelson-image",
        "--test",
        file,
        "--no-run",
        "--message-format=json",
    ]))
    .with_context(|| format!("building the VM test {file}"))?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == file)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no executable for the VM test {file}"))
}

/// The development update key pair in `dir/keys` (`dev-update.key`, `dev-update.pem`), made
/// with `keelson key generate` the first time. Generated here, never committed.
pub fn dev_update_key(keelson: &Path, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let keys = dir.join("keys");
    let key = keys.join("dev-update.key");
    let pem = keys.join("dev-update.pem");
    if !(key.is_file() && pem.is_file()) {
        util::run(
            Command::new(keelson)
                .args(["key", "generate", "--name", "dev-update", "--out"])
                .arg(&keys),
        )
        .context("generating the development update key")?;
    }
    Ok((key, pem))
}

/// An overlay for a release whose own health check fails (`/usr/lib/keelson/health.d`): the
/// "bad v3" of the update tests, which must never be blessed.
pub fn bad_release_overlay(dir: &Path) -> Result<PathBuf> {
    let overlay = dir.join("overlay-bad-release");
    let check = overlay.join("usr/lib/keelson/health.d/50-release-check");
    std::fs::create_dir_all(check.parent().unwrap_or(&overlay))
        .with_context(|| format!("creating {}", overlay.display()))?;
    std::fs::write(
        &check,
        "#!/bin/sh\necho 'this release is broken on purpose (keelson update tests)' >&2\nexit 7\n",
    )
    .with_context(|| format!("writing {}", check.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", check.display()))?;
    Ok(overlay)
}

/// The `#[ignore]`d VM tests in `crates/image/tests/<file>.rs` (all of them, one at a time,
/// or only `exact`) against the build record `record`, with the test container's busybox: the
/// test binary, built first and run directly (in the crate's directory, as `cargo test` would).
pub fn vm_test(file: &str, exact: Option<&str>, record: &Path, busybox: &Path) -> Result<Command> {
    let bin = vm_test_binary(file)?;
    let mut c = Command::new(&bin);
    c.current_dir(util::workspace_root().join("crates/image"))
        .args(["--ignored", "--test-threads=1", "--nocapture"]);
    if let Some(name) = exact {
        // `--exact` with a name that no longer exists runs nothing and passes: refuse it.
        let list = util::output(Command::new(&bin).args(["--ignored", "--list"]))?;
        if !list.lines().any(|l| l == format!("{name}: test")) {
            bail!("{file}.rs has no VM test named {name}");
        }
        c.args(["--exact", name]);
    }
    c.env("KEELSON_VM_BUILD", record)
        .env("KEELSON_VM_BUSYBOX", busybox);
    Ok(c)
}
