//! `keelson-firstboot --stage fetch|disks|mount|files|done`: first-boot provisioning as the
//! initrd runs it, one process per stage (units of the dracut module `98keelson-firstboot`).
//!
//! First boot is the file `keelson/first_boot` on the ESP (as Flatcar's `flatcar/first_boot`):
//! the image ships it, `fetch` looks for it (and records a "not first boot" stamp in /run
//! when it is absent, which the later units are conditioned on), and `done` removes it only
//! after every stage succeeded. A failed stage leaves it, so the next boot tries again.
//!
//! On failure the stage prints `keelson-firstboot: stage <S> failed (config <source>):
//! <reason>` to /dev/console, records it in `/run/keelson/firstboot-failed` for the emergency
//! handler, and exits non-zero; the unit's `OnFailure=emergency.target` stops the boot.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use keelson_provision::engine::files::FilesOptions;
use keelson_provision::fetch::{DEFAULT_MAX_SIZE, Fetcher};
use keelson_provision::http::{HttpClient, RetryPolicy};
use keelson_provision::providers::{FileProvider, Provider};
use keelson_provision::stages::{self, Stage, StageContext};

/// Path of the first-boot marker inside the ESP.
const MARKER: &str = "keelson/first_boot";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StageArg {
    Fetch,
    Disks,
    Mount,
    Files,
    Done,
}

impl StageArg {
    fn name(self) -> &'static str {
        match self {
            StageArg::Fetch => "fetch",
            StageArg::Disks => "disks",
            StageArg::Mount => "mount",
            StageArg::Files => "files",
            StageArg::Done => "done",
        }
    }
}

/// First-boot provisioning, one stage per run (the initrd's keelson-firstboot-*.service units).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The stage to run.
    #[arg(long, value_enum)]
    stage: StageArg,
    /// Target root (the real root, mounted by the initrd).
    #[arg(long, default_value = "/sysroot")]
    root: PathBuf,
    /// State directory shared by the stages: the rendered config cache, the config source,
    /// the "not first boot" stamp and the failure record.
    #[arg(long, default_value = "/run/keelson")]
    state: PathBuf,
    /// The ESP block device holding the first-boot marker (mounted under the state dir).
    #[arg(long, default_value = "/dev/disk/by-partlabel/esp")]
    esp_device: PathBuf,
    /// Use this directory as the ESP instead of mounting the device (tests).
    #[arg(long)]
    esp_dir: Option<PathBuf>,
    /// Kernel command line to read the platform and config URL from.
    #[arg(long, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// Platform (qemu, aws, gcp, azure, openstack, file, metal); default from the command
    /// line, else qemu when the fw_cfg sysfs directory exists, else metal.
    #[arg(long)]
    platform: Option<String>,
    /// Read the config from this file instead of the platform's provider (Ignition's `file`
    /// provider; tests and local debugging).
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Where failures are printed for the operator.
    #[arg(long, default_value = "/dev/console")]
    console: PathBuf,
}

impl Args {
    fn cache(&self) -> PathBuf {
        self.state.join("config.json")
    }
    fn source_file(&self) -> PathBuf {
        self.state.join("config-source")
    }
    fn not_first_boot(&self) -> PathBuf {
        self.state.join("not-first-boot")
    }
    fn failed_file(&self) -> PathBuf {
        self.state.join("firstboot-failed")
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let source = config_source(&args);
            let line = failure_line(args.stage, &source, &e);
            tracing::error!("{line}");
            report_failure(&args, &line);
            ExitCode::FAILURE
        }
    }
}

/// journald stamps its own time: drop ours when stderr goes to the journal.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.without_time().with_ansi(false).init();
    } else {
        b.init();
    }
}

/// The one line an operator sees on the console when a stage fails.
fn failure_line(stage: StageArg, source: &str, err: &anyhow::Error) -> String {
    // One line: the console and the emergency handler show it whole.
    let reason = format!("{err:#}").replace('\n', " ");
    format!(
        "keelson-firstboot: stage {} failed (config {source}): {reason}",
        stage.name()
    )
}

fn report_failure(args: &Args, line: &str) {
    // Best effort: the exit status already fails the unit, so these only add the message.
    let _ = std::fs::create_dir_all(&args.state);
    let _ = std::fs::write(args.failed_file(), format!("{line}\n"));
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&args.console) {
        use std::io::Write;
        let _ = writeln!(f, "\r\n{line}\r");
    }
}

/// Where the config came from: recorded by `fetch`, else the providers that would be asked.
fn config_source(args: &Args) -> String {
    if let Ok(s) = std::fs::read_to_string(args.source_file()) {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_string();
        }
    }
    if let Some(p) = &args.config_file {
        return format!("file {}", p.display());
    }
    let platform = platform(args).unwrap_or_else(|_| "unknown".into());
    format!("from providers cmdline,{platform}")
}

fn read_cmdline(args: &Args) -> Result<String> {
    match std::fs::read_to_string(&args.cmdline) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", args.cmdline.display())),
    }
}

fn platform(args: &Args) -> Result<String> {
    if let Some(p) = &args.platform {
        return Ok(p.clone());
    }
    if let Some(p) = stages::platform_from_cmdline(&read_cmdline(args)?) {
        return Ok(p);
    }
    Ok(if Path::new("/sys/firmware/qemu_fw_cfg/by_name").is_dir() {
        "qemu"
    } else {
        "metal"
    }
    .into())
}

fn run(args: &Args) -> Result<()> {
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    match args.stage {
        StageArg::Fetch => {
            let cmdline = read_cmdline(args)?;
            if !forced_first_boot(&cmdline)
                && !with_esp(args, false, |esp| Ok(esp.join(MARKER).is_file()))?
            {
                tracing::info!("no {MARKER} on the ESP: not the first boot, nothing to provision");
                std::fs::write(args.not_first_boot(), "")
                    .with_context(|| format!("writing {}", args.not_first_boot().display()))?;
                return Ok(());
            }
            let fetcher = fetcher()?;
            let providers: Vec<Box<dyn Provider>> = match &args.config_file {
                Some(path) => vec![Box::new(FileProvider { path: path.clone() })],
                None => {
                    let platform = platform(args)?;
                    tracing::info!(%platform, "first boot: fetching the config");
                    let http = fetcher.http().clone();
                    stages::providers_for(&cmdline, &platform, &http, &fetcher)?
                }
            };
            let ctx = StageContext {
                providers,
                fetcher,
                root: args.root.clone(),
                cache: args.cache(),
                files: FilesOptions {
                    kernel_cmdline: Some(cmdline),
                    ..FilesOptions::current()
                },
            };
            let out = stages::run_stage(Stage::Fetch, &ctx)?;
            let source = out
                .changes
                .iter()
                .find_map(|c| c.action.strip_prefix("cache config from "))
                .unwrap_or("unknown")
                .to_string();
            std::fs::write(args.source_file(), format!("from {source}\n"))
                .with_context(|| format!("writing {}", args.source_file().display()))?;
            log_outcome(&out);
            Ok(())
        }
        StageArg::Disks | StageArg::Mount | StageArg::Files => {
            if args.not_first_boot().exists() {
                tracing::info!("not the first boot: stage skipped");
                return Ok(());
            }
            let stage = match args.stage {
                StageArg::Disks => Stage::Disks,
                StageArg::Mount => Stage::Mount,
                _ => Stage::Files,
            };
            let fetcher = fetcher()?;
            let cmdline = read_cmdline(args)?;
            let ctx = StageContext {
                providers: Vec::new(),
                fetcher,
                root: args.root.clone(),
                cache: args.cache(),
                files: FilesOptions {
                    kernel_cmdline: Some(cmdline),
                    ..FilesOptions::current()
                },
            };
            let out = stages::run_stage(stage, &ctx)?;
            log_outcome(&out);
            Ok(())
        }
        StageArg::Done => {
            if args.not_first_boot().exists() {
                tracing::info!("not the first boot: stage skipped");
                return Ok(());
            }
            if !args.cache().is_file() {
                bail!(
                    "{} is missing: the earlier stages did not run",
                    args.cache().display()
                );
            }
            // The resource cache and the LUKS keys were for the stages only; /run survives
            // switch-root, so do not leave them (and a copy of every download) in memory.
            for dir in [
                stages::resource_cache(&args.cache()),
                stages::luks_dir(&args.cache()),
            ] {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", dir.display()));
                    }
                    _ => {}
                }
            }
            if forced_first_boot(&read_cmdline(args)?) {
                // A boot told to provision (PXE, no disk marker): nothing to clear.
                tracing::info!("provisioning complete (keelson.first_boot=1: no marker to clear)");
                return Ok(());
            }
            with_esp(args, true, |esp| {
                let marker = esp.join(MARKER);
                std::fs::remove_file(&marker)
                    .with_context(|| format!("removing the first-boot marker {}", marker.display()))
            })?;
            tracing::info!("provisioning complete: first-boot marker removed");
            Ok(())
        }
    }
}

/// `keelson.first_boot=1` (Flatcar: `flatcar.first_boot=1`) provisions without the ESP marker,
/// for boots that have no disk marker to go by (PXE).
fn forced_first_boot(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|a| a == "keelson.first_boot=1")
}

fn fetcher() -> Result<Fetcher> {
    let http = HttpClient::new(RetryPolicy::default())
        .context("creating the HTTP client")?
        .with_network_hook(network_up);
    Ok(Fetcher::new(http, DEFAULT_MAX_SIZE))
}

/// The initrd's network (systemd-networkd, DHCP on every Ethernet link) is started only when
/// provisioning is about to send its first request: a config from fw_cfg without remote
/// resources, and every boot after the first, never wait for DHCP.
fn network_up() -> Result<(), String> {
    tracing::info!("a remote resource is needed: bringing the network up");
    let out = Command::new("systemctl")
        .args([
            "start",
            "systemd-networkd.service",
            "systemd-networkd-wait-online.service",
        ])
        .output()
        .map_err(|e| format!("running systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl start systemd-networkd-wait-online.service: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn log_outcome(out: &keelson_provision::engine::Outcome) {
    for c in &out.changes {
        tracing::info!(path = %c.path, "{}", c.action);
    }
    for w in &out.warnings {
        tracing::warn!("{w}");
    }
}

/// Run `f` on the ESP: the test directory, or the device mounted (read-only unless `write`)
/// under the state dir for the call only.
fn with_esp<T>(args: &Args, write: bool, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if let Some(dir) = &args.esp_dir {
        return f(dir);
    }
    let mnt = args.state.join("esp");
    std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let mut mount = Command::new("mount");
    mount
        .args(["-t", "vfat", "-o", if write { "rw" } else { "ro" }])
        .arg(&args.esp_device)
        .arg(&mnt);
    run_cmd(&mut mount)?;
    let r = f(&mnt);
    // Unmount even when `f` failed: umount flushes the FAT, so a removed marker stays removed
    // across a reset, and a later stage can mount the ESP again.
    let unmount = run_cmd(Command::new("umount").arg(&mnt));
    let v = r?;
    unmount?;
    Ok(v)
}

fn run_cmd(c: &mut Command) -> Result<()> {
    let line = format!("{c:?}");
    let out = c.output().with_context(|| format!("running {line}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{line} failed ({}): {}", out.status, tail.join(" | "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Env {
        dir: tempfile::TempDir,
    }

    impl Env {
        fn new(first_boot: bool, config: &str) -> Env {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path();
            for d in ["root/etc", "esp/keelson", "state"] {
                std::fs::create_dir_all(p.join(d)).unwrap();
            }
            if first_boot {
                std::fs::write(p.join("esp").join(MARKER), "").unwrap();
            }
            std::fs::write(p.join("user.ign"), config).unwrap();
            std::fs::write(p.join("cmdline"), "console=ttyS0 quiet").unwrap();
            std::fs::write(p.join("console"), "").unwrap();
            Env { dir }
        }
        fn args(&self, stage: StageArg) -> Args {
            let p = self.dir.path();
            Args {
                stage,
                root: p.join("root"),
                state: p.join("state"),
                esp_device: p.join("no-device"),
                esp_dir: Some(p.join("esp")),
                cmdline: p.join("cmdline"),
                platform: None,
                config_file: Some(p.join("user.ign")),
                console: p.join("console"),
            }
        }
        /// Run a stage as `main` does (failure line to the console file).
        fn stage(&self, stage: StageArg) -> bool {
            let args = self.args(stage);
            match run(&args) {
                Ok(()) => true,
                Err(e) => {
                    report_failure(&args, &failure_line(stage, &config_source(&args), &e));
                    false
                }
            }
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
    }

    const GOOD: &str = r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/hello","contents":{"source":"data:,hi"}}]}}"#;
    const BAD_FILES: &str = r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,a"}},{"path":"/etc/hello","contents":{"source":"data:,hi"},"user":{"name":"nosuchuser"}}]}}"#;
    const BAD_FETCH: &str = r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,a"}},{"path":"/etc/hello","contents":{"source":"data:,hi","verification":{"hash":"sha256-0000000000000000000000000000000000000000000000000000000000000000"}}}]}}"#;

    #[test]
    fn first_boot_runs_every_stage_and_done_removes_the_marker() {
        let env = Env::new(true, GOOD);
        for s in [
            StageArg::Fetch,
            StageArg::Disks,
            StageArg::Files,
            StageArg::Done,
        ] {
            assert!(
                env.stage(s),
                "stage {s:?}: {:?}",
                std::fs::read_to_string(env.path("console"))
            );
            // The resource cache lives from fetch until done removes it.
            assert_eq!(
                env.path("state/resources").is_dir(),
                !matches!(s, StageArg::Done),
                "after {s:?}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(env.path("root/etc/hello")).unwrap(),
            "hi"
        );
        assert!(!env.path("esp").join(MARKER).exists());
        assert_eq!(
            std::fs::read_to_string(env.path("state/config-source"))
                .unwrap()
                .trim(),
            "from file"
        );
    }

    #[test]
    fn second_boot_skips_every_stage() {
        let env = Env::new(false, GOOD);
        for s in [
            StageArg::Fetch,
            StageArg::Disks,
            StageArg::Files,
            StageArg::Done,
        ] {
            assert!(env.stage(s), "stage {s:?}");
        }
        assert!(env.path("state/not-first-boot").exists());
        assert!(!env.path("state/config.json").exists());
        assert!(!env.path("root/etc/hello").exists());
    }

    #[test]
    fn a_bad_resource_fails_the_fetch_stage_and_leaves_no_config_cache() {
        let env = Env::new(true, BAD_FETCH);
        assert!(!env.stage(StageArg::Fetch));
        let console = std::fs::read_to_string(env.path("console")).unwrap();
        assert!(
            console.contains("keelson-firstboot: stage fetch failed")
                && console.contains("$.storage.files[1].contents (/etc/hello)")
                && console.contains("sha256 mismatch"),
            "{console}"
        );
        assert!(!env.path("state/config.json").exists());
        assert!(env.path("esp").join(MARKER).exists());
    }

    #[test]
    fn failed_files_stage_names_stage_source_and_reason_and_keeps_the_marker() {
        let env = Env::new(true, BAD_FILES);
        assert!(env.stage(StageArg::Fetch));
        assert!(!env.stage(StageArg::Files));
        let console = std::fs::read_to_string(env.path("console")).unwrap();
        assert!(
            console.contains("keelson-firstboot: stage files failed (config from file): ")
                && console.contains("/etc/hello")
                && console.contains("nosuchuser"),
            "{console}"
        );
        assert_eq!(
            std::fs::read_to_string(env.path("state/firstboot-failed"))
                .unwrap()
                .trim(),
            console.trim()
        );
        // Planned before applied: nothing of the config reached the root.
        assert!(!env.path("root/etc/a").exists());
        assert!(env.path("esp").join(MARKER).exists());
    }

    #[test]
    fn kernel_argument_forces_a_first_boot_without_the_marker() {
        let env = Env::new(false, GOOD);
        std::fs::write(env.path("cmdline"), "console=ttyS0 keelson.first_boot=1").unwrap();
        for s in [StageArg::Fetch, StageArg::Disks, StageArg::Files] {
            assert!(env.stage(s), "stage {s:?}");
        }
        assert_eq!(
            std::fs::read_to_string(env.path("root/etc/hello")).unwrap(),
            "hi"
        );
        // Nothing to clear, and no ESP is touched (a PXE boot may have none).
        std::fs::remove_dir_all(env.path("esp")).unwrap();
        assert!(env.stage(StageArg::Done));
    }

    #[test]
    fn done_without_the_marker_fails() {
        let env = Env::new(true, GOOD);
        assert!(env.stage(StageArg::Fetch));
        std::fs::remove_file(env.path("esp").join(MARKER)).unwrap();
        assert!(!env.stage(StageArg::Done));
        let console = std::fs::read_to_string(env.path("console")).unwrap();
        assert!(
            console.contains("stage done failed") && console.contains("first_boot"),
            "{console}"
        );
    }

    #[test]
    fn failure_line_is_one_line() {
        let e = anyhow::anyhow!("a\nb").context("ctx");
        let l = failure_line(StageArg::Mount, "from qemu", &e);
        assert_eq!(
            l,
            "keelson-firstboot: stage mount failed (config from qemu): ctx: a b"
        );
    }
}
