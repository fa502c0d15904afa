//! `cargo xtask demo`: the talk's demos (../shared/docs/talk-zero-touch-os-infrastructure.txt)
//! replayed on this machine, with the scenario code that the VM tests run:
//!
//! - `update` (the default run): `fleetlock_update_blessed` of crates/image/tests/vm_update.rs
//!   with the bad release: keelson-server on the host, a node booted from the stock v1 image
//!   with a config (provisioning: an SSH key, a container web app, the update settings), v2
//!   published, staged, rebooted into under a FleetLock slot and blessed; then a bad v3 that
//!   waits for the slot, fails its health check three times and rolls back by itself, and the
//!   server's halted rollout.
//! - `provisioning`: `first_boot_provisions_user_files_and_app` of vm_provision.rs on its own (a
//!   first boot that applies the config, a second that does not).
//! - `sysext`: `extension_update_without_reboot` of vm_update.rs: an extension published on
//!   keelson-server as its own application, installed by the node's agent and merged, then a
//!   newer version merged with `systemd-sysext refresh`, same boot, same container.
//!
//! Each step's narration (the scenario's `==> ` lines) is shown with the time it came; the
//! whole output goes to `target/demo/<step>.log`. At the end the last step keeps the server
//! and the node up until Ctrl-C (which ends the scenario, its server and its QEMU together),
//! unless `--no-wait`.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::vm::Profile;
use crate::{deps, util, vm};

/// What `cargo xtask demo` runs.
#[derive(Args)]
pub struct DemoArgs {
    /// Run only this step (repeatable). Without it: `update` (whose node is provisioned on
    /// its first boot), then `sysext`.
    #[arg(long, value_enum)]
    step: Vec<Step>,
    /// End after the last step instead of keeping the server and the node up until Ctrl-C.
    #[arg(long)]
    no_wait: bool,
}

/// The talk's demos.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Step {
    /// A stock image's first boot applies a config and runs a container app.
    Provisioning,
    /// v2 staged, rebooted into under a FleetLock slot and blessed; a bad v3 rolled back.
    Update,
    /// System extensions on a running node.
    Sysext,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Provisioning => "provisioning",
            Step::Update => "update",
            Step::Sysext => "sysext",
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let steps = if args.step.is_empty() {
        vec![Step::Update, Step::Sysext]
    } else {
        args.step.clone()
    };
    deps::run(false)?;
    let root = util::workspace_root();
    let work = root.join("target/demo");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    util::step(
        "building keelson, keelson-server, the node's binaries and the scenarios (one release build)",
    );
    let bin_dir = vm::release_binaries()?;
    let keelson = bin_dir.join("keelson");
    let needs = |s: Step| steps.contains(&s);
    let provision_bin = needs(Step::Provisioning)
        .then(|| vm::vm_test_binary_in("vm_provision", Profile::Release))
        .transpose()?;
    let update_bin = (needs(Step::Update) || needs(Step::Sysext))
        .then(|| vm::vm_test_binary_in("vm_update", Profile::Release))
        .transpose()?;
    say_done("built", started);

    util::step("the OS images (built from os/ once, reused while their inputs are unchanged)");
    let dir = root.join(vm::VM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, pem) = vm::dev_update_key(&keelson, &dir)?;
    let key_arg = pem.to_string_lossy().into_owned();
    let image = |version: &str, extra: &[&str]| -> Result<PathBuf> {
        let mut args = vec!["--update-key", key_arg.as_str()];
        args.extend(extra);
        vm::build_image_cached(&keelson, &dir, version, &args, None)
    };
    let v1 = image("0.1.0", &[])?;
    let releases = if needs(Step::Update) {
        let v2 = image("0.2.0", &[])?;
        let overlay = vm::bad_release_overlay(&dir)?;
        let v3 = image("0.3.0", &["--overlay", &overlay.to_string_lossy()])?;
        Some((v2, v3))
    } else {
        None
    };
    let busybox = vm::busybox(&dir)?;
    let ssh = ssh_key(&work)?;
    say_done("images ready", started);

    let last = steps.last().copied();
    for step in &steps {
        let hold = Some(*step) == last && !args.no_wait;
        let t = Instant::now();
        util::step(&format!("demo: {}", step.name()));
        match step {
            Step::Provisioning => {
                let bin = provision_bin.as_deref().context("no vm_provision binary")?;
                let mut c = scenario(
                    bin,
                    "first_boot_provisions_user_files_and_app",
                    &v1,
                    &busybox,
                    &bin_dir,
                );
                c.env(
                    "KEELSON_VM_CONSOLE_LOG",
                    work.join("console-provisioning.log"),
                );
                run_scenario(step.name(), c, &work, hold)?;
            }
            Step::Update => {
                let bin = update_bin.as_deref().context("no vm_update binary")?;
                let (v2, v3) = releases.as_ref().context("no v2/v3 images")?;
                let mut c = scenario(bin, "fleetlock_update_blessed", &v1, &busybox, &bin_dir);
                c.env("KEELSON_VM_V2_BUILD", v2)
                    .env("KEELSON_VM_V3_BUILD", v3)
                    .env("KEELSON_VM_UPDATE_KEYS", pem.parent().unwrap_or(&dir))
                    .env("KEELSON_VM_CONSOLE_LOG", work.join("console-update.log"))
                    .env("KEELSON_DEMO_SSH_PUBKEY", ssh.with_extension("pub"))
                    .env("KEELSON_DEMO_SSH_PORT", free_port()?.to_string());
                run_scenario(step.name(), c, &work, hold)?;
            }
            Step::Sysext => {
                let bin = update_bin.as_deref().context("no vm_update binary")?;
                let mut c = scenario(
                    bin,
                    "extension_update_without_reboot",
                    &v1,
                    &busybox,
                    &bin_dir,
                );
                c.env("KEELSON_VM_CONSOLE_LOG", work.join("console-sysext.log"))
                    .env("KEELSON_DEMO_SSH_PUBKEY", ssh.with_extension("pub"))
                    .env("KEELSON_DEMO_SSH_PORT", free_port()?.to_string());
                run_scenario(step.name(), c, &work, hold)?;
            }
        }
        println!("{}: done in {}", step.name(), mmss(t));
    }
    say_done("the demo ended", started);
    Ok(())
}

/// The VM test `name` in `bin`, run directly (as `cargo xtask test` does) against image `v1`.
fn scenario(bin: &Path, name: &str, v1: &Path, busybox: &Path, bin_dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(util::workspace_root().join("crates/image"))
        .args([
            "--ignored",
            "--exact",
            name,
            "--test-threads=1",
            "--nocapture",
        ])
        .env("KEELSON_VM_BUILD", v1)
        .env("KEELSON_VM_BUSYBOX", busybox)
        .env("KEELSON_VM_BIN_DIR", bin_dir);
    c
}

/// Run a scenario: its narration (`==> ` lines) on stdout with the time since it started, all
/// of its output in `work/<name>.log`; on failure, the log's tail. `hold`: it keeps the server
/// and the node up at the end (`KEELSON_DEMO_HOLD`) until Ctrl-C.
fn run_scenario(name: &str, mut c: Command, work: &Path, hold: bool) -> Result<()> {
    let log_path = work.join(format!("{name}.log"));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    if hold {
        c.env("KEELSON_DEMO_HOLD", "1");
    }
    c.stdout(Stdio::piped()).stderr(log.try_clone()?);
    let line = keelson_cmd::describe(&c);
    writeln!(log, "$ {line}")?;
    let started = Instant::now();
    let mut child = c.spawn().with_context(|| format!("starting `{line}`"))?;
    let out = child.stdout.take().context("no stdout pipe")?;
    println!("  (all of its output: {})", log_path.display());
    // On a terminal a spinner under the narration shows the step's clock and what it waits
    // for; into a pipe or file only the narration lines go, without escapes.
    let progress = if std::io::stdout().is_terminal() {
        let p = ProgressBar::new_spinner();
        p.set_style(
            ProgressStyle::with_template("  {spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        p.enable_steady_tick(std::time::Duration::from_millis(250));
        p
    } else {
        ProgressBar::hidden()
    };
    for l in BufReader::new(out).lines() {
        let l = l.with_context(|| format!("reading the output of `{line}`"))?;
        writeln!(log, "{l}")?;
        // libtest's "test NAME ... " has no newline: the first narration follows it.
        if let Some((_, said)) = l.split_once("==> ") {
            let said = format!("[{}] {said}", mmss(started));
            if progress.is_hidden() {
                println!("{said}");
            } else {
                progress.println(&said);
                progress.set_message(format!(
                    "after: {}",
                    said.chars().take(70).collect::<String>()
                ));
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    progress.finish_and_clear();
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("  | {l}");
        }
        bail!(
            "the {name} step failed ({status}); its output is in {}",
            log_path.display()
        );
    }
    Ok(())
}

/// The demo's SSH key pair (`work/ssh/id_ed25519`), made once with ssh-keygen.
fn ssh_key(work: &Path) -> Result<PathBuf> {
    let key = work.join("ssh/id_ed25519");
    if key.is_file() && key.with_extension("pub").is_file() {
        return Ok(key);
    }
    let dir = work.join("ssh");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(&key);
    util::output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "keelson-demo", "-f"])
            .arg(&key),
    )
    .context("making the demo's SSH key")?;
    Ok(key)
}

/// A free TCP port on the host's loopback.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn mmss(since: Instant) -> String {
    let s = since.elapsed().as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

fn say_done(what: &str, started: Instant) {
    println!("{what} ({} since the start)", mmss(started));
}
