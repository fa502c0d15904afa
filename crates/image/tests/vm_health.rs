//! VM tests of health-gated boots (docs/image.md, "Health-gated boots"): systemd-boot's boot
//! counting, `keelson-health.target` before `boot-complete.target`, and the reboot after a
//! failed check, booting through OVMF + systemd-boot the way a real machine does.
//!
//! The built image's UKI has no try counter (the first version is known-good), so each test
//! works on a copy of the disk whose UKI is renamed on the ESP (mtools) to carry one, as
//! keelson-agent installs a new version. Checks come in through the provisioning config
//! (fw_cfg), as a user would add them.
//!
//! Like `vm.rs` they need a built image and QEMU, so they are `#[ignore]`d and run by
//! `cargo xtask test` (xtask/src/vm.rs), which sets `KEELSON_VM_BUILD` (the build record of an
//! image built with `KEELSON_FIRSTBOOT_BIN`). A test that cannot run fails; nothing is skipped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keelson_image::qemu::{Vm, VmOptions};

/// Generous: CI runs TCG on two shared cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// The reboot delay of the failing test (health.conf `REBOOT_AFTER_SECS`).
const REBOOT_AFTER_SECS: u64 = 5;

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!("{name} is not set: run the VM tests through `cargo xtask test`"),
    }
}

fn build_record() -> serde_json::Value {
    let p = env_path("KEELSON_VM_BUILD");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The built image, its UKI's file name on the ESP, and the ESP's byte offset in the disk.
fn image() -> (PathBuf, String, u64) {
    let rec = build_record();
    let image = PathBuf::from(rec["image"].as_str().unwrap());
    let uki = rec["uki_name"].as_str().unwrap().to_string();
    let esp = rec["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"].as_u64() == Some(1))
        .unwrap_or_else(|| panic!("no partition 1 (ESP) in the build record"))["start"]
        .as_u64()
        .unwrap();
    (image, uki, esp)
}

/// An mtools command on the ESP inside `disk` (`-i disk@@offset`).
fn mtool(tool: &str, disk: &Path, esp: u64, args: &[&str]) -> String {
    let out = Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{esp}", disk.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The file names in `/EFI/Linux` of the ESP, sorted.
fn uki_files(disk: &Path, esp: u64) -> Vec<String> {
    let list = mtool("mdir", disk, esp, &["-b", "::/EFI/Linux"]);
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter(|n| n.ends_with(".efi"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// A private copy of the image (sparse) in `dir`.
fn copy_image(image: &Path, dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    let st = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(image)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success(), "copying {}", image.display());
    disk
}

/// `keelson_<v>.efi` -> `keelson_<v>+<tries>.efi`.
fn with_counter(uki: &str, tries: u32) -> String {
    let stem = uki.strip_suffix(".efi").unwrap();
    format!("{stem}+{tries}.efi")
}

fn data_url(text: &str) -> String {
    let mut s = String::from("data:,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// An executable file of the config.
fn exe(path: &str, script: &str) -> serde_json::Value {
    serde_json::json!({"path": path, "mode": 0o755, "contents": {"source": data_url(script)}})
}

/// A check unit of the config, enabled (its `[Install]` section links it to the health target).
fn check_unit(name: &str, exec: &str, install: &str) -> serde_json::Value {
    let contents = format!(
        "[Unit]\nDescription=test check {name}\nBefore=keelson-health.target\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={exec}\n\
         [Install]\n{install}=keelson-health.target\n"
    );
    serde_json::json!({"name": name, "enabled": true, "contents": contents})
}

fn start(disk: &Path, config: &Path) -> Vm {
    let mut o = VmOptions::new(disk);
    o.config = Some(config.to_path_buf());
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    Vm::start(&o).unwrap_or_else(|e| panic!("{e}"))
}

fn check(vm: &mut Vm, cmd: &str) -> String {
    vm.check(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// The boot loader entry the firmware booted (`LoaderEntrySelected`), read in the guest.
/// (A 4-byte attribute header, not printable, then UTF-16LE: keep the printable ASCII.)
const ENTRY_SELECTED: &str = "tr -cd '[:print:]' < /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// (i) With every check passing (an executable in /etc/keelson/health.d and a unit required by
/// keelson-health.target, both from the provisioning config), a boot of a UKI with a try
/// counter is blessed: systemd-bless-boot ran after the gate, says `good`, and the UKI on the
/// ESP has lost its counter.
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn passing_checks_bless_the_boot() {
    let (image, uki, esp) = image();
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let disk = copy_image(&image, scratch.path());
    let trial = with_counter(&uki, 3);
    mtool(
        "mren",
        &disk,
        esp,
        &[
            &format!("::/EFI/Linux/{uki}"),
            &format!("::/EFI/Linux/{trial}"),
        ],
    );
    assert_eq!(uki_files(&disk, esp), [trial.as_str()]);

    let config = scratch.path().join("config.ign");
    let cfg = serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "storage": {"files": [
            exe(
                "/etc/keelson/health.d/10-ok",
                "#!/bin/sh\necho health-d-ran > /run/keelson-test-health-d\n",
            )
        ]},
        "systemd": {"units": [
            check_unit(
                "keelson-test-check.service",
                "/bin/sh -c 'echo unit-ran > /run/keelson-test-unit'",
                "RequiredBy",
            )
        ]}
    });
    std::fs::write(&config, cfg.to_string()).unwrap();

    let mut vm = start(&disk, &config);
    vm.wait_for(
        "keelson-health: boot is healthy: every check of keelson-health.target passed",
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    vm.login(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let state = vm
        .run_with_timeout("systemctl is-system-running --wait", BOOT_TIMEOUT)
        .unwrap();
    if state.output.trim() != "running" {
        let failed = check(&mut vm, "systemctl --failed --no-legend --no-pager");
        eprintln!(
            "system state {:?}; failed units: {failed}",
            state.output.trim()
        );
    }

    // Booted with boot counting: systemd-boot counted the try down before starting the UKI.
    let count_path = check(
        &mut vm,
        "tr -cd '[:print:]' < /sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
    );
    assert_eq!(
        count_path.trim(),
        format!(
            "\\EFI\\Linux\\{}",
            with_counter(&uki, 2).replace(".efi", "-1.efi")
        ),
        "LoaderBootCountPath"
    );
    // Both kinds of check ran, before the boot was marked good.
    assert_eq!(
        check(&mut vm, "cat /run/keelson-test-health-d").trim(),
        "health-d-ran"
    );
    assert_eq!(
        check(&mut vm, "cat /run/keelson-test-unit").trim(),
        "unit-ran"
    );
    assert_eq!(
        check(
            &mut vm,
            "systemctl is-active keelson-health.target keelson-health-gate.service \
             boot-complete.target systemd-bless-boot.service"
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["active", "active", "active", "active"]
    );
    let order = check(
        &mut vm,
        "for u in keelson-test-check.service keelson-health-check.service \
         keelson-health-gate.service systemd-bless-boot.service; do \
         systemctl show -P ExecMainExitTimestampMonotonic $u; done",
    );
    let stamps: Vec<u64> = order
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(stamps.len(), 4, "{order}");
    assert!(
        stamps[0] <= stamps[2] && stamps[1] <= stamps[2] && stamps[2] <= stamps[3],
        "checks, gate and bless ran out of order: {stamps:?}"
    );
    assert_eq!(
        check(&mut vm, "/usr/lib/systemd/systemd-bless-boot status").trim(),
        "good"
    );
    let bootctl = check(&mut vm, "bootctl list --no-pager 2>&1 | head -30; true");
    eprintln!("bootctl list:\n{bootctl}");
    check(&mut vm, "sync");
    vm.kill();

    // On the host: the entry lost its counter, it is the known-good version now.
    assert_eq!(uki_files(&disk, esp), [uki.as_str()]);
}

/// (ii) A failing executable in /etc/keelson/health.d (and a failing check unit) keep the boot
/// from being blessed: the console names both, the node reboots by itself after
/// `REBOOT_AFTER_SECS`, and systemd-boot counts the try down on each boot. The trial entry has
/// 2 tries (one fewer than an update's 3, to save a boot) next to a known-good entry (a copy of
/// the same UKI under an older version's name, no counter): once no try is left, the known-good
/// entry boots, the checks still fail, and the node stays up instead of rebooting, since
/// there is nothing left to fall back to.
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn failing_check_reboots_until_the_good_version_boots() {
    let (image, uki, esp) = image();
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let disk = copy_image(&image, scratch.path());
    let stem = uki.strip_suffix(".efi").unwrap();
    let (name, _version) = stem.split_once('_').unwrap();
    // Sorts before the built version, so systemd-boot prefers the trial entry while it has tries.
    let good = format!("{name}_0.0.0-good.efi");
    let trial = with_counter(&uki, 2);
    let host_uki = scratch.path().join("good.efi");
    mtool(
        "mcopy",
        &disk,
        esp,
        &[&format!("::/EFI/Linux/{uki}"), host_uki.to_str().unwrap()],
    );
    mtool(
        "mcopy",
        &disk,
        esp,
        &[host_uki.to_str().unwrap(), &format!("::/EFI/Linux/{good}")],
    );
    mtool(
        "mren",
        &disk,
        esp,
        &[
            &format!("::/EFI/Linux/{uki}"),
            &format!("::/EFI/Linux/{trial}"),
        ],
    );
    let mut want = vec![good.clone(), trial.clone()];
    want.sort();
    assert_eq!(uki_files(&disk, esp), want);

    let config = scratch.path().join("config.ign");
    let cfg = serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "storage": {"files": [
            exe("/etc/keelson/health.d/10-ok", "#!/bin/sh\nexit 0\n"),
            exe(
                "/etc/keelson/health.d/50-app-down",
                "#!/bin/sh\necho 'test app is not answering' >&2\nexit 3\n",
            ),
            {
                "path": "/etc/keelson/health.conf",
                "contents": {"source": data_url(&format!("REBOOT_AFTER_SECS={REBOOT_AFTER_SECS}\n"))}
            }
        ]},
        "systemd": {"units": [
            check_unit("keelson-test-bad.service", "/bin/false", "WantedBy")
        ]}
    });
    std::fs::write(&config, cfg.to_string()).unwrap();

    let mut vm = start(&disk, &config);
    let mut from = 0;
    // Two boots on trial, each counted down, each failing and rebooting by itself.
    for (boot, counted) in [(1, "+1-1.efi"), (2, "+0-2.efi")] {
        let failed = vm
            .wait_for_from(
                "keelson-health: FAILED: /etc/keelson/health.d/50-app-down exited with status 3",
                from,
                BOOT_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("boot {boot}: {e}"));
        let named = vm
            .wait_for_from(
                "keelson-health: failed check: keelson-test-bad.service",
                failed,
                BOOT_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("boot {boot}: {e}"));
        let entry = format!("{}{counted}", trial.strip_suffix("+2.efi").unwrap());
        let rebooting = vm
            .wait_for_from(
                &format!("failed its health checks; rebooting in {REBOOT_AFTER_SECS}s"),
                named,
                BOOT_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("boot {boot}: {e}"));
        let text = vm.console_text();
        let line = text[..rebooting]
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains(&entry),
            "boot {boot}: expected the counter of {entry} in {line:?}"
        );
        assert!(
            !text[from..rebooting].contains("Finished systemd-bless-boot.service"),
            "boot {boot} was blessed"
        );
        from = vm
            .wait_for_from("Linux version", rebooting, BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("boot {boot} did not reboot by itself: {e}"));
    }

    // Third boot: no try left on the trial entry, so the known-good entry boots. Its checks
    // fail too (same /etc), and it says so, but it is not on trial and stays up.
    vm.wait_for_from(
        "keelson-health: not rebooting: this boot is not on trial",
        from,
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    vm.login_from(from, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let selected = check(&mut vm, ENTRY_SELECTED);
    assert_eq!(
        selected.trim(),
        good,
        "the third boot ran {selected:?}, not the known-good {good}"
    );
    let r = vm
        .run("test -e /sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")
        .unwrap();
    assert_ne!(r.status, 0, "the known-good boot is counted");
    let journal = check(
        &mut vm,
        "journalctl -b --no-pager -o cat -u keelson-health-check.service -u keelson-health-gate.service",
    );
    assert!(
        journal.contains("50-app-down exited with status 3")
            && journal.contains("test app is not answering")
            && journal.contains("failed check: keelson-test-bad.service"),
        "{journal}"
    );
    assert_eq!(
        check(&mut vm, "systemctl is-failed keelson-health-gate.service").trim(),
        "failed"
    );
    // Nothing marked the trial good on any boot.
    let r = vm
        .run("systemctl is-active systemd-bless-boot.service")
        .unwrap();
    assert_ne!(r.output.trim(), "active", "{}", r.output);
    check(&mut vm, "sync");
    vm.kill();

    // On the host: the trial entry has used up its tries and is never blessed; the known-good
    // entry is untouched.
    let mut want = vec![good, trial.replace("+2.efi", "+0-2.efi")];
    want.sort();
    assert_eq!(uki_files(&disk, esp), want);
}
