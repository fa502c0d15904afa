//! `keelson-firstboot --stage fetch|disks|mount|files|done`: first-boot provisioning as the
//! initrd runs it, one process per stage (units of the dracut module `98keelson-firstboot`).
//! The stages themselves are `keelson_provision::stages` (`Stage`, `run_stage`); this binary
//! adds what belongs to the initrd: the ESP marker, the platform, the network hook and the
//! failure report.
//!
//! First boot is the file `loader/credentials/keelson.first_boot.cred` on the ESP (as
//! Flatcar's `flatcar/first_boot`): the image ships it, systemd-stub hands it to the initrd
//! as `/.extra/global_credentials/keelson.first_boot.cred` (the stage units' condition),
//! `fetch` looks for it there (and records a "not first boot" stamp in /run when it is
//! absent, which the later stages skip on), and `done` removes it from the ESP only after
//! every stage succeeded. A failed stage leaves it, so the next boot tries again.
//!
//! On failure the stage prints `keelson-firstboot: stage <S> failed (config <source>):
//! <reason>` to /dev/console, records it in `/run/keelson/firstboot-failed` for the emergency
//! handler, and exits non-zero; the unit's `OnFailure=emergency.target` stops the boot.

#![cfg_attr(not(test), warn(clippy::expect_used))]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use keelson_provision::engine::files::FilesOptions;
use keelson_provision::fetch::{DEFAULT_MAX_SIZE, Fetcher};
use keelson_provision::http::{HttpClient, RetryPolicy};
use keelson_provision::providers::{FileProvider, Provider};
use keelson_provision::stages::{
    self, FIRST_BOOT_MARKER as MARKER, FIRST_BOOT_MARKER_IN_INITRD, Stage, StageContext,
    StageOutcome,
};

/// How long mounting or unmounting the ESP may take (a FAT partition: seconds at most).
const ESP_MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long bringing the network up may take: wait-online gives up after 60 s by itself
/// (`wait-online.conf`: `--any --timeout=60`); this only guards against a hung systemctl.
/// The stage units are oneshot services without a start timeout, so nothing else would.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(300);

/// `--stage`: one of `Stage::ALL` by name.
fn stage_parser() -> impl TypedValueParser<Value = Stage> {
    PossibleValuesParser::new(Stage::ALL.map(Stage::name)).try_map(|s| s.parse::<Stage>())
}

/// First-boot provisioning, one stage per run (the initrd's keelson-firstboot-*.service units).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The stage to run (keelson_provision::stages::Stage, in order: fetch, disks, mount,
    /// files, done).
    #[arg(long, value_parser = stage_parser())]
    stage: Stage,
    /// Target root (the real root, mounted by the initrd).
    #[arg(long, default_value = "/sysroot")]
    root: PathBuf,
    /// State directory shared by the stages: the rendered config cache, the config source,
    /// the "not first boot" stamp and the failure record.
    #[arg(long, default_value = "/run/keelson")]
    state: PathBuf,
    /// The first-boot marker as systemd-stub hands it to the initrd.
    #[arg(long, default_value = FIRST_BOOT_MARKER_IN_INITRD)]
    boot_marker: PathBuf,
    /// The ESP block device holding the first-boot marker (mounted under the state dir by the
    /// done stage, which removes it).
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
    fn not_first_boot(&self) -> PathBuf {
        self.state.join("not-first-boot")
    }
    fn failed_file(&self) -> PathBuf {
        self.state.join("firstboot-failed")
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    keelson_log::init(keelson_log::Style { no_target: true });
    match run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let source = config_source(&args);
            let line = failure_line(args.stage, &source, &e);
            tracing::error!("{line}");
            report_failure(&args, &line);
            ExitCode::FAILURE
        }
    }
}

/// The one line an operator sees on the console when a stage fails.
fn failure_line(stage: Stage, source: &str, err: &anyhow::Error) -> String {
    // One line: the console and the emergency handler show it whole.
    let reason = format!("{err:#}").replace('\n', " ");
    format!("keelson-firstboot: stage {stage} failed (config {source}): {reason}")
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
    if let Some(source) = stages::recorded_config_source(&args.cache()) {
        return format!("from {source}");
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

/// Run the stage `args` names; `None` when it was skipped (not the first boot).
fn run(args: &Args) -> Result<Option<StageOutcome>> {
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let cmdline = read_cmdline(args)?;
    let forced = stages::forced_first_boot(&cmdline);
    if args.stage == Stage::Fetch {
        if !forced && !args.boot_marker.is_file() {
            tracing::info!(
                "no {} (the ESP's {MARKER}): not the first boot, nothing to provision",
                args.boot_marker.display()
            );
            std::fs::write(args.not_first_boot(), "")
                .with_context(|| format!("writing {}", args.not_first_boot().display()))?;
            return Ok(None);
        }
    } else if args.not_first_boot().exists() {
        tracing::info!("not the first boot: stage skipped");
        return Ok(None);
    }
    let fetcher = fetcher()?;
    let providers: Vec<Box<dyn Provider>> = match (args.stage, &args.config_file) {
        (Stage::Fetch, Some(path)) => vec![Box::new(FileProvider { path: path.clone() })],
        (Stage::Fetch, None) => {
            let platform = platform(args)?;
            tracing::info!(%platform, "first boot: fetching the config");
            let http = fetcher.http().clone();
            stages::providers_for(&cmdline, &platform, &http, &fetcher)?
        }
        _ => Vec::new(),
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
    let out = stages::run_stage(args.stage, &ctx)?;
    log_outcome(&out);
    if args.stage == Stage::Done {
        if forced {
            // A boot told to provision (PXE, no disk marker): nothing to clear.
            tracing::info!("provisioning complete (keelson.first_boot=1: no marker to clear)");
        } else {
            with_esp(args, |esp| {
                let marker = esp.join(MARKER);
                std::fs::remove_file(&marker)
                    .with_context(|| format!("removing the first-boot marker {}", marker.display()))
            })?;
            tracing::info!("provisioning complete: first-boot marker removed");
        }
    }
    Ok(Some(out))
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
    keelson_cmd::run_with_timeout(
        Command::new("systemctl").args([
            "start",
            "systemd-networkd.service",
            "systemd-networkd-wait-online.service",
        ]),
        Some(NETWORK_TIMEOUT),
    )
    .map(drop)
    .map_err(|e| e.to_string())
}

fn log_outcome(out: &StageOutcome) {
    let source = out.config_source.as_ref().map(|s| s.to_string());
    for c in &out.outcome.changes {
        tracing::info!(path = %c.path, "{}", c.action);
    }
    for w in &out.outcome.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        stage = %out.stage,
        config_source = source.as_deref().unwrap_or("unknown"),
        "stage {}/{} done",
        out.stage.order(),
        Stage::ALL.len()
    );
}

/// Run `f` on the ESP: the test directory, or the device mounted read-write under the state
/// dir for the call only.
fn with_esp<T>(args: &Args, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if let Some(dir) = &args.esp_dir {
        return f(dir);
    }
    let mnt = args.state.join("esp");
    std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    let mut mount = Command::new("mount");
    mount
        .args(["-t", "vfat", "-o", "rw"])
        .arg(&args.esp_device)
        .arg(&mnt);
    keelson_cmd::run_with_timeout(&mut mount, Some(ESP_MOUNT_TIMEOUT))?;
    let r = f(&mnt);
    // Unmount even when `f` failed: umount flushes the FAT, so a removed marker stays removed
    // across a reset, and a later stage can mount the ESP again.
    let unmount =
        keelson_cmd::run_with_timeout(Command::new("umount").arg(&mnt), Some(ESP_MOUNT_TIMEOUT));
    let v = r?;
    unmount?;
    Ok(v)
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
            for d in ["root/etc", "esp/loader/credentials", "extra", "state"] {
                std::fs::create_dir_all(p.join(d)).unwrap();
            }
            if first_boot {
                // The image's marker, and the copy systemd-stub hands to the initrd.
                std::fs::write(p.join("esp").join(MARKER), "").unwrap();
                std::fs::write(p.join("extra/keelson.first_boot.cred"), "").unwrap();
            }
            std::fs::write(p.join("user.ign"), config).unwrap();
            std::fs::write(p.join("cmdline"), "console=ttyS0 quiet").unwrap();
            std::fs::write(p.join("console"), "").unwrap();
            Env { dir }
        }
        fn args(&self, stage: Stage) -> Args {
            let p = self.dir.path();
            Args {
                stage,
                root: p.join("root"),
                state: p.join("state"),
                boot_marker: p.join("extra/keelson.first_boot.cred"),
                esp_device: p.join("no-device"),
                esp_dir: Some(p.join("esp")),
                cmdline: p.join("cmdline"),
                platform: None,
                config_file: Some(p.join("user.ign")),
                console: p.join("console"),
            }
        }
        /// Run a stage as `main` does (failure line to the console file).
        fn stage(&self, stage: Stage) -> bool {
            let args = self.args(stage);
            match run(&args) {
                Ok(_) => true,
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
        for s in [Stage::Fetch, Stage::Disks, Stage::Files, Stage::Done] {
            assert!(
                env.stage(s),
                "stage {s:?}: {:?}",
                std::fs::read_to_string(env.path("console"))
            );
            // The resource cache lives from fetch until done removes it.
            assert_eq!(
                env.path("state/resources").is_dir(),
                !matches!(s, Stage::Done),
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
        // Ignition's record of this first boot, for the tools that read it: in the target
        // root's /etc, mode 0600, Go's indented JSON with a final newline, no previousReport.
        let path = env.path("root/etc/.ignition-result.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let result: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(result["userConfigProvided"], true);
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(result["provisioningBootID"], boot_id.trim());
        assert!(text.starts_with("{\n  \"provisioningBootID\": "), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
        assert!(result.get("previousReport").is_none(), "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn second_boot_skips_every_stage() {
        let env = Env::new(false, GOOD);
        for s in [Stage::Fetch, Stage::Disks, Stage::Files, Stage::Done] {
            assert!(env.stage(s), "stage {s:?}");
        }
        assert!(env.path("state/not-first-boot").exists());
        assert!(!env.path("state/config.json").exists());
        assert!(!env.path("root/etc/hello").exists());
        assert!(!env.path("root/etc/.ignition-result.json").exists());
    }

    #[test]
    fn a_bad_resource_fails_the_fetch_stage_and_leaves_no_config_cache() {
        let env = Env::new(true, BAD_FETCH);
        assert!(!env.stage(Stage::Fetch));
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
        assert!(env.stage(Stage::Fetch));
        assert!(!env.stage(Stage::Files));
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
        // No record of a first boot that did not finish.
        assert!(!env.path("root/etc/.ignition-result.json").exists());
    }

    #[test]
    fn kernel_argument_forces_a_first_boot_without_the_marker() {
        let env = Env::new(false, GOOD);
        std::fs::write(env.path("cmdline"), "console=ttyS0 keelson.first_boot=1").unwrap();
        for s in [Stage::Fetch, Stage::Disks, Stage::Files] {
            assert!(env.stage(s), "stage {s:?}");
        }
        assert_eq!(
            std::fs::read_to_string(env.path("root/etc/hello")).unwrap(),
            "hi"
        );
        // A machine provisioned before: Ignition nests the earlier record as previousReport.
        let earlier = r#"{"provisioningBootID":"11111111-2222-3333-4444-555555555555","provisioningDate":"2026-01-01T00:00:00Z","userConfigProvided":true}"#;
        std::fs::write(env.path("root/etc/.ignition-result.json"), earlier).unwrap();
        // Nothing to clear, and no ESP is touched (a PXE boot may have none).
        std::fs::remove_dir_all(env.path("esp")).unwrap();
        assert!(env.stage(Stage::Done));
        let result: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(env.path("root/etc/.ignition-result.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            result["previousReport"],
            serde_json::from_str::<serde_json::Value>(earlier).unwrap()
        );
        assert_ne!(
            result["provisioningBootID"],
            "11111111-2222-3333-4444-555555555555"
        );
    }

    #[test]
    fn done_without_the_marker_fails() {
        let env = Env::new(true, GOOD);
        assert!(env.stage(Stage::Fetch));
        std::fs::remove_file(env.path("esp").join(MARKER)).unwrap();
        assert!(!env.stage(Stage::Done));
        let console = std::fs::read_to_string(env.path("console")).unwrap();
        assert!(
            console.contains("stage done failed") && console.contains("first_boot"),
            "{console}"
        );
    }

    #[test]
    fn every_stage_has_its_unit_and_parses_by_name() {
        let module = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../os/rootfs/usr/lib/dracut/modules.d/98keelson-firstboot");
        for stage in Stage::ALL {
            let unit = module.join(format!("keelson-firstboot-{stage}.service"));
            let text = std::fs::read_to_string(&unit).unwrap();
            assert!(
                text.contains(&format!(
                    "ExecStart=/sysusr/usr/bin/keelson-firstboot --stage {stage}\n"
                )),
                "{}",
                unit.display()
            );
            // Run on the first boot only: the marker where systemd-stub puts it, or the
            // command line.
            assert!(
                text.contains(&format!(
                    "ConditionPathExists=|{FIRST_BOOT_MARKER_IN_INITRD}\n\
                     ConditionKernelCommandLine=|keelson.first_boot=1\n"
                )),
                "{}",
                unit.display()
            );
            let args =
                Args::try_parse_from(["keelson-firstboot", "--stage", stage.name()]).unwrap();
            assert_eq!(args.stage, stage);
            assert_eq!(args.boot_marker, Path::new(FIRST_BOOT_MARKER_IN_INITRD));
        }
        // The initrd's other first-boot-only pieces (the loop module for repart, repart's
        // condition) test the same two things.
        let keelson = module.join("../99keelson");
        for piece in ["modprobe-loop.conf", "keelson-repart-needed.sh"] {
            let text = std::fs::read_to_string(keelson.join(piece)).unwrap();
            assert!(
                text.contains(FIRST_BOOT_MARKER_IN_INITRD) && text.contains("keelson.first_boot=1"),
                "{piece}"
            );
        }
        // The image build writes the marker where the done stage removes it, under the name
        // systemd-stub hands on.
        let build = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/src/build.rs"),
        )
        .unwrap();
        assert!(build.contains(&format!("\"::/{MARKER}\"")));
        let cred = MARKER.rsplit('/').next().unwrap();
        assert!(MARKER.starts_with("loader/credentials/") && cred.ends_with(".cred"));
        assert!(FIRST_BOOT_MARKER_IN_INITRD.ends_with(&format!("/global_credentials/{cred}")));
        let err = Args::try_parse_from(["keelson-firstboot", "--stage", "boot"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("fetch") && err.contains("done"), "{err}");
    }

    #[test]
    fn failure_line_is_one_line() {
        let e = anyhow::anyhow!("a\nb").context("ctx");
        let l = failure_line(Stage::Mount, "from qemu", &e);
        assert_eq!(
            l,
            "keelson-firstboot: stage mount failed (config from qemu): ctx: a b"
        );
    }
}
