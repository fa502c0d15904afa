//! `keelson image` bad input: clear errors before the long work, and nothing left under the
//! output name. (The full build and boot are VM tests: crates/image/tests/vm.rs.)
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

fn shipped_os() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os")
}

/// A copy of os/ with `from` replaced by `to` in os.yaml.
fn os_with(dir: &Path, from: &str, to: &str) -> PathBuf {
    let os = dir.join("os");
    std::fs::create_dir_all(&os).unwrap();
    let text = std::fs::read_to_string(shipped_os().join("os.yaml")).unwrap();
    assert!(text.contains(from), "os.yaml has no {from:?}");
    std::fs::write(os.join("os.yaml"), text.replacen(from, to, 1)).unwrap();
    os
}

fn build(os: &Path, out: &Path) -> (bool, String) {
    let o = keelson()
        .args(["image", "build", "--os"])
        .arg(os)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_no_outputs(out: &Path) {
    if let Ok(rd) = std::fs::read_dir(out) {
        let names: Vec<String> = rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.is_empty(),
            "left behind in {}: {names:?}",
            out.display()
        );
    }
}

#[test]
fn missing_kernel_is_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let os = os_with(d.path(), "kernel: linux-image-cloud-amd64", "kernel: \"\"");
    let out = d.path().join("out");
    let (ok, err) = build(&os, &out);
    assert!(!ok);
    assert!(err.contains("kernel") && err.contains("os.yaml"), "{err}");
    assert_no_outputs(&out);
}

#[test]
fn layout_too_small_is_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let os = os_with(
        d.path(),
        "usr_mib: 768\n  usr_verity_mib: 16",
        "usr_mib: 8192\n  usr_verity_mib: 2",
    );
    let out = d.path().join("out");
    let (ok, err) = build(&os, &out);
    assert!(!ok);
    assert!(err.contains("usr_verity"), "{err}");
    assert!(err.contains("os.yaml"), "{err}");
    assert_no_outputs(&out);
}

#[test]
fn bad_version_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = keelson()
        .args(["image", "build", "--version", "1.0/../x", "--os"])
        .arg(shipped_os())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1.0/../x"), "{err}");
    assert_no_outputs(&out);
}

#[test]
fn unknown_package_is_named_before_mmdebstrap() {
    // Checked against the archive index (fetched from the Debian mirror, cached for a day).
    let d = tempfile::tempdir().unwrap();
    let os = os_with(
        d.path(),
        "  - runc\n",
        "  - runc\n  - keelson-no-such-package\n",
    );
    let out = d.path().join("out");
    let (ok, err) = build(&os, &out);
    assert!(!ok);
    assert!(err.contains("unknown package"), "{err}");
    assert!(err.contains("keelson-no-such-package"), "{err}");
    assert!(
        !err.contains("mmdebstrap"),
        "got as far as mmdebstrap: {err}"
    );
    assert_no_outputs(&out);
}

#[test]
fn run_names_a_missing_image() {
    let o = keelson()
        .args(["image", "run", "/nonexistent/keelson.img"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/keelson.img"), "{err}");
}
