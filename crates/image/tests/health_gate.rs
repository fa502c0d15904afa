//! The health gate's verdict script (`os/rootfs/usr/lib/keelson/keelson-health-gate`, docs/image.md
//! "Health-gated boots") reads every check's state with one `systemctl show`. These tests run
//! it against a `systemctl` on PATH that prints what systemd 257's prints: one block per unit
//! in the order of the arguments, blocks separated by an empty line, a service's `Result=`
//! before its `ActiveState=`, and no `Result=` for a target.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const GATE: &str = "../../os/rootfs/usr/lib/keelson/keelson-health-gate";

/// Runs the gate against a fake `systemctl` that answers from `units` (name, ActiveState,
/// Result; "" for none), with `wants` as the target's Wants=: its exit code and output.
fn gate(wants: &str, units: &[(&str, &str, &str)]) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut table = String::new();
    for (name, state, result) in units {
        table.push_str(&format!("{name} {state} {result}\n"));
    }
    std::fs::write(dir.join("units"), table).unwrap();
    let script = format!(
        r#"#!/bin/bash
# Answers the gate's two calls only; any other call fails the test instead of being misread.
if [ "$*" = "show --value -p Requires -p Wants keelson-health.target" ]; then
    echo "keelson-health-check.service"
    echo "{wants}"
    exit 0
fi
if [ "$1 $2 $3 $4 $5" != "show -p ActiveState -p Result" ]; then
    echo "fake systemctl: unexpected call: $*" >&2
    exit 99
fi
shift 5
first=1
for unit in "$@"; do
    [ $first = 1 ] || echo
    first=0
    read -r _ state result < <(grep "^$unit " "{dir}/units")
    echo "Type=oneshot"
    [ -n "$result" ] && echo "Result=$result"
    echo "Id=$unit"
    echo "ActiveState=${{state:-inactive}}"
done
"#,
        dir = dir.display()
    );
    let path = dir.join("systemctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_gate(dir)
}

fn run_gate(dir: &Path) -> (i32, String) {
    let gate = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GATE);
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .arg(&gate)
        .env("PATH", path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn a_boot_whose_checks_all_passed_is_healthy() {
    let (code, out) = gate(
        "app-ready.service containerd.service",
        &[
            ("keelson-health.target", "active", ""),
            ("keelson-health-check.service", "active", "success"),
            ("app-ready.service", "active", "success"),
            ("containerd.service", "active", "success"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("boot is healthy"), "{out}");
}

#[test]
fn each_failed_or_unfinished_check_is_named_and_the_rest_are_not() {
    let (code, out) = gate(
        "app-ready.service containerd.service slow.service",
        &[
            ("keelson-health.target", "inactive", ""),
            ("keelson-health-check.service", "active", "success"),
            ("app-ready.service", "failed", "exit-code"),
            ("containerd.service", "active", "success"),
            ("slow.service", "activating", "success"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("boot is NOT healthy"), "{out}");
    assert!(
        out.contains("failed check: app-ready.service (failed: exit-code)"),
        "{out}"
    );
    assert!(
        out.contains("failed check: slow.service (still activating)"),
        "{out}"
    );
    assert!(!out.contains("failed check: containerd"), "{out}");
    assert!(!out.contains("failed check: keelson-health-check"), "{out}");
    assert!(out.contains("keelson-health.target is inactive"), "{out}");
}

#[test]
fn a_check_that_ended_badly_without_failing_is_named() {
    let (code, out) = gate(
        "",
        &[
            ("keelson-health.target", "active", ""),
            ("keelson-health-check.service", "inactive", "timeout"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed check: keelson-health-check.service (inactive: timeout)"),
        "{out}"
    );
}

#[test]
fn no_answer_from_systemd_is_not_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("systemctl");
    std::fs::write(&path, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out) = run_gate(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("boot is NOT healthy"), "{out}");
}
