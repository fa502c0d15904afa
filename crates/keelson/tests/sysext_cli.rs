//! `keelson sysext build|check|sign|publish` end to end through the built binary.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn keelson(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .current_dir(dir)
        .env("KEELSON_LOG", "warn")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn os_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../os")
        .display()
        .to_string()
}

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("tree/usr/bin/hello");
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(&f, "#!/bin/sh\necho hello\n").unwrap();
    fs::write(
        d.path().join("os-release"),
        "ID=keelson\nVERSION_ID=0.1.0\nSYSEXT_LEVEL=1.0\n",
    )
    .unwrap();
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=cli-test", "-keyout", "k.pem", "-out", "c.crt"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    d
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

#[test]
fn build_check_sign_publish() {
    let d = setup();
    let dir = d.path();
    let os = os_dir();
    let o = keelson(
        &[
            "sysext",
            "build",
            "--name",
            "hello",
            "--version",
            "1.0",
            "--dir",
            "tree",
            "--out",
            "hello.raw",
            "--os-dir",
            &os,
            "--json",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let built = json(&o);
    assert_eq!(built["signed"], false);
    assert!(
        built["extension_release"]
            .as_str()
            .unwrap()
            .contains("SYSEXT_LEVEL=1.0\n")
    );

    let o = keelson(
        &[
            "sysext",
            "check",
            "hello.raw",
            "--os-release",
            "os-release",
            "--json",
        ],
        dir,
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let r = json(&o);
    assert_eq!(r["ok"], true);
    assert_eq!(r["root_hash"], built["root_hash"]);
    assert_eq!(r["match"]["matches"], true);

    // Signature required: refused unsigned (exit 1, reason in the human output) ...
    let o = keelson(
        &[
            "sysext",
            "check",
            "hello.raw",
            "--os-release",
            "os-release",
            "--require-signature",
            "--cert",
            "c.crt",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("no verity signature partition") && out.contains("REFUSED"),
        "{out}"
    );
    // ... and accepted once signed.
    let o = keelson(
        &[
            "sysext",
            "sign",
            "hello.raw",
            "--key",
            "k.pem",
            "--cert",
            "c.crt",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = keelson(
        &[
            "sysext",
            "check",
            "hello.raw",
            "--os-release",
            "os-release",
            "--require-signature",
            "--cert",
            "c.crt",
            "--json",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o.stdout));
    assert_eq!(json(&o)["signature"]["verified"], true);

    // The wrong host: refused with the field in the reason.
    fs::write(dir.join("other"), "ID=keelson\nSYSEXT_LEVEL=2\n").unwrap();
    let o = keelson(
        &["sysext", "check", "hello.raw", "--os-release", "other"],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("SYSEXT_LEVEL=1.0 does not match the host's SYSEXT_LEVEL=2"));

    let o = keelson(
        &[
            "sysext",
            "publish",
            "--dir",
            "pub",
            "--url",
            "http://u.example/x",
            "hello.raw",
            "--json",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let p = json(&o);
    assert_eq!(p["published"][0]["version"], "1.0");
    assert!(dir.join("pub/hello-1.0-x86-64.raw").is_file());
    assert!(
        fs::read_to_string(dir.join("pub/hello.transfer"))
            .unwrap()
            .contains("Path=http://u.example/x\n")
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let d = setup();
    let dir = d.path();
    let os = os_dir();
    fs::create_dir_all(dir.join("tree/etc")).unwrap();
    fs::write(dir.join("tree/etc/hello.conf"), "x").unwrap();
    let o = keelson(
        &[
            "sysext",
            "build",
            "--name",
            "hello",
            "--version",
            "1.0",
            "--dir",
            "tree",
            "--out",
            "hello.raw",
            "--os-dir",
            &os,
        ],
        dir,
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("/etc/hello.conf"),
        "{}",
        text(&o.stderr)
    );
    let o = keelson(
        &[
            "sysext",
            "build",
            "--name",
            "hello",
            "--version",
            "1.0",
            "--deb",
            "jq",
            "--out",
            "x.raw",
            "--os-dir",
            &os,
        ],
        dir,
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--base-packages"),
        "{}",
        text(&o.stderr)
    );
    fs::write(dir.join("junk.raw"), vec![0u8; 8192]).unwrap();
    let o = keelson(&["sysext", "check", "junk.raw", "--no-host"], dir);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("not a valid extension image"),
        "{}",
        text(&o.stderr)
    );
}
