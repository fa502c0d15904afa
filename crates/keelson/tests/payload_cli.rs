//! `keelson key generate` and `keelson payload build|sign|verify|inspect` end to end through
//! the built binary, on a fake image build directory (small parts, a minimal UKI).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use keelson_payload::testing::fake_image_dir;

const ROOT: &str = "3f1c2a9b8e7d6c5b4a392817160504f3e2d1c0b9a8978675645342312010fedc";

fn keelson(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .current_dir(dir)
        .env("KEELSON_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str], dir: &Path) -> String {
    let out = keelson(args, dir);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(args: &[&str], dir: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(args, dir)).unwrap()
}

/// A refused verification: exit code 1 and the reason in the JSON report and on stderr.
fn refused(args: &[&str], dir: &Path, reason: &str) {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = keelson(&with_json, dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["reason"], reason, "{v}");
    let out = keelson(args, dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("refused ({reason})")), "{err}");
}

fn image(dir: &Path, version: &str, cmdline_root: &str) {
    let usr: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fake_image_dir(
        &dir.join("image"),
        "keelson",
        version,
        ROOT,
        &usr,
        &vec![0xa5; 70_000],
        &format!("console=ttyS0 usrhash={cmdline_root}"),
    )
    .unwrap();
}

#[test]
fn generate_build_sign_verify_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let k = json(
        &[
            "key", "generate", "--out", "keys", "--name", "dev", "--json",
        ],
        d,
    );
    assert_eq!(k["key_id"].as_str().unwrap().len(), 16);
    let mode = fs::metadata(d.join("keys/dev.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        fs::read_to_string(d.join("keys/dev.pem"))
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert!(
        fs::read_to_string(d.join("keys/dev.key"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    // A second generate into the same names is refused.
    assert!(
        !keelson(&["key", "generate", "--out", "keys", "--name", "dev"], d)
            .status
            .success()
    );

    image(d, "0.2.0", ROOT);
    let b = json(
        &[
            "payload",
            "build",
            "--image-dir",
            "image",
            "--version",
            "0.2.0",
            "--key",
            "keys/dev.key",
            "--expires-in",
            "10",
            "--out",
            "keelson_0.2.0.payload",
            "--json",
        ],
        d,
    );
    assert_eq!(b["version"], "0.2.0");
    assert_eq!(b["os_id"], "keelson");
    assert_eq!(b["arch"], "x86-64");
    assert_eq!(b["usr_root_hash"], ROOT);
    assert_eq!(b["signed_by"], serde_json::json!([k["key_id"]]));
    let size = fs::metadata(d.join("keelson_0.2.0.payload")).unwrap().len();
    assert_eq!(b["size"], size);
    assert_eq!(b["parts"][0]["name"], "usr");
    assert_eq!(b["parts"][0]["size"], 3_000_000);
    // Cut as `payload build` cuts by default (content-defined chunks).
    let usr: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let want = keelson_payload::Chunking::default()
        .chunks(&usr[..])
        .unwrap()
        .count();
    assert_eq!(b["parts"][0]["chunks"], want);
    let all_chunks: u64 = (0..3)
        .map(|i| b["parts"][i]["chunks"].as_u64().unwrap())
        .sum();
    // 70 000 equal bytes compress to almost nothing.
    assert!(b["parts"][1]["stored_bytes"].as_u64().unwrap() < 1000);

    let v = json(
        &[
            "payload",
            "verify",
            "--keys",
            "keys",
            "--running-version",
            "0.1.0",
            "keelson_0.2.0.payload",
            "--json",
        ],
        d,
    );
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["key_id"], k["key_id"]);
    assert_eq!(v["chunks_checked"], all_chunks);
    let human = ok(
        &[
            "payload",
            "verify",
            "--keys",
            "keys",
            "keelson_0.2.0.payload",
        ],
        d,
    );
    assert!(human.contains("verified"), "{human}");

    // Rotation: a second key signs; a node that trusts only the new key accepts.
    ok(
        &["key", "generate", "--out", "newkeys", "--name", "next"],
        d,
    );
    let s = json(
        &[
            "payload",
            "sign",
            "--key",
            "newkeys/next.key",
            "keelson_0.2.0.payload",
            "--json",
        ],
        d,
    );
    assert_eq!(s["signed_by"].as_array().unwrap().len(), 2);
    assert_eq!(s["parts"], b["parts"]);
    let v = json(
        &[
            "payload",
            "verify",
            "--keys",
            "newkeys",
            "keelson_0.2.0.payload",
            "--json",
        ],
        d,
    );
    assert_eq!(v["verified"], true, "{v}");

    let i = json(
        &["payload", "inspect", "keelson_0.2.0.payload", "--json"],
        d,
    );
    assert_eq!(i["manifest"]["version"], "0.2.0");
    assert_eq!(i["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(i["manifest"]["parts"][2]["name"], "uki");
    let human = ok(&["payload", "inspect", "keelson_0.2.0.payload"], d);
    assert!(
        human.contains("usr-verity") && human.contains("signature:  key"),
        "{human}"
    );

    // Refusals, each with its reason.
    let args = |extra: &[&'static str]| {
        let mut a = vec!["payload", "verify", "--keys", "keys"];
        a.extend_from_slice(extra);
        a.push("keelson_0.2.0.payload");
        a
    };
    refused(&args(&["--running-version", "0.2.0"]), d, "not_newer");
    refused(&args(&["--running-version", "1.0"]), d, "not_newer");
    refused(&args(&["--os-id", "flatcar"]), d, "wrong_os");
    refused(&args(&["--arch", "arm64"]), d, "wrong_arch");
    fs::create_dir(d.join("strangers")).unwrap();
    ok(&["key", "generate", "--out", "strangers", "--name", "s"], d);
    refused(
        &[
            "payload",
            "verify",
            "--keys",
            "strangers",
            "keelson_0.2.0.payload",
        ],
        d,
        "unknown_key",
    );

    // A flipped byte near the end of the data area (the UKI's .linux section).
    let mut bytes = fs::read(d.join("keelson_0.2.0.payload")).unwrap();
    let n = bytes.len();
    fs::write(d.join("truncated.payload"), &bytes[..n - 5]).unwrap();
    refused(
        &["payload", "verify", "--keys", "keys", "truncated.payload"],
        d,
        "truncated",
    );
    bytes[n - 20] ^= 0xff;
    fs::write(d.join("tampered.payload"), &bytes).unwrap();
    let out = keelson(
        &[
            "payload",
            "verify",
            "--keys",
            "keys",
            "tampered.payload",
            "--json",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        ["chunk_hash", "chunk_decode", "chunk_size"].contains(&v["reason"].as_str().unwrap()),
        "{v}"
    );
}

#[test]
fn unsigned_expired_and_mismatched_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(&["key", "generate", "--out", "keys"], d);
    assert!(d.join("keys/keelson-release.pem").exists());
    image(d, "0.3.0", ROOT);

    let b = json(
        &[
            "payload",
            "build",
            "--image-dir",
            "image",
            "--version",
            "0.3.0",
            "--out",
            "u.payload",
            "--json",
        ],
        d,
    );
    assert_eq!(b["signed_by"], serde_json::json!([]));
    refused(
        &["payload", "verify", "--keys", "keys", "u.payload"],
        d,
        "unsigned",
    );
    // Signing an unsigned payload makes it verify.
    ok(
        &[
            "payload",
            "sign",
            "--key",
            "keys/keelson-release.key",
            "u.payload",
        ],
        d,
    );
    ok(&["payload", "verify", "--keys", "keys", "u.payload"], d);

    ok(
        &[
            "payload",
            "build",
            "--image-dir",
            "image",
            "--version",
            "0.3.0",
            "--key",
            "keys/keelson-release.key",
            "--expires-in",
            "0",
            "--out",
            "e.payload",
        ],
        d,
    );
    refused(
        &["payload", "verify", "--keys", "keys", "e.payload"],
        d,
        "expired",
    );

    // The UKI's usrhash= differs from the record's root hash: build refuses, writes nothing.
    fs::remove_dir_all(d.join("image")).unwrap();
    image(d, "0.3.0", &"bb".repeat(32));
    let out = keelson(
        &[
            "payload",
            "build",
            "--image-dir",
            "image",
            "--version",
            "0.3.0",
            "--out",
            "m.payload",
        ],
        d,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("usrhash") && err.contains(ROOT), "{err}");
    assert!(!d.join("m.payload").exists());
    // Another version than the directory holds: a clear error.
    let out = keelson(
        &[
            "payload",
            "build",
            "--image-dir",
            "image",
            "--version",
            "9.9.9",
            "--out",
            "x.payload",
        ],
        d,
    );
    assert!(
        text(&out.stderr).contains("no build record"),
        "{}",
        text(&out.stderr)
    );
}
