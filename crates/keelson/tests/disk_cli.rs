//! `keelson disk ...` end to end: the binary against image files, with sgdisk as the reference.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn keelson(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .env("KEELSON_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = keelson(args);
    assert!(
        out.status.success(),
        "keelson {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = keelson(args);
    assert!(!out.status.success(), "keelson {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn small(path: &Path) {
    ok(&[
        "disk",
        "create",
        path.to_str().unwrap(),
        "--size",
        "64M",
        "--esp-size",
        "8M",
        "--usr-size",
        "16M",
        "--usr-verity-size",
        "1M",
        "--root-min-size",
        "4M",
    ]);
}

fn show_json(path: &Path) -> Value {
    serde_json::from_str(&ok(&["disk", "show", path.to_str().unwrap(), "--json"])).unwrap()
}

fn sgdisk_attrs(path: &Path, n: u32) -> String {
    let out = Command::new("sgdisk")
        .args(["-i", &n.to_string(), path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Attribute flags: "))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn create_show_and_json_agree() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    small(&img);
    let human = ok(&["disk", "show", img.to_str().unwrap()]);
    for needle in [
        "usr-x86-64 (8484680c-9521-48c6-9c11-b0720656f69e)",
        "usr-verity-x86-64 (77ff5f63-e7b6-4633-acf4-1565b864c0e6)",
        "root-x86-64 (4f68bce3-e8cd-4db1-96e7-fbcaf984b709)",
        "A: usr 2 + verity 3, 16.0 MiB, empty",
        "B: usr 4 + verity 5, 16.0 MiB, empty",
    ] {
        assert!(human.contains(needle), "{needle:?} missing from:\n{human}");
    }
    let json = show_json(&img);
    let parts = json["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 6);
    // Every UUID printed by the human form is the one in the JSON.
    for p in parts {
        assert!(human.contains(p["uuid"].as_str().unwrap()));
        assert!(human.contains(p["label"].as_str().unwrap()));
    }
    assert_eq!(json["slots"]["scheme"], "keelson");
    assert_eq!(json["slots"]["slots"][0]["empty"], true);
    assert_eq!(json["gpt_read_from"], "primary");
}

#[test]
fn set_prio_writes_bits_sgdisk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    small(&img);
    let p = img.to_str().unwrap();
    let out = ok(&[
        "disk",
        "set-prio",
        p,
        "--partition",
        "4",
        "--priority",
        "2",
        "--tries",
        "1",
        "--successful",
        "false",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["attributes_hex"], "0012000000000000");
    assert_eq!(v["changed"], true);
    assert_eq!(sgdisk_attrs(&img, 4), "0012000000000000");
    ok(&[
        "disk",
        "set-prio",
        p,
        "--partition",
        "4",
        "--successful",
        "true",
    ]);
    assert_eq!(sgdisk_attrs(&img, 4), "0112000000000000");
    // Reading only changes nothing.
    let out = ok(&["disk", "set-prio", p, "--partition", "4"]);
    assert!(out.contains("priority=2 tries=1 successful=true"), "{out}");
    let json = show_json(&img);
    assert_eq!(json["partitions"][3]["prio"]["priority"], 2);
}

#[test]
fn install_shows_version_and_root_hash() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    small(&img);
    let usr = dir.path().join("usr.erofs");
    let verity = dir.path().join("usr.verity");
    fs::write(&usr, vec![1u8; 100_000]).unwrap();
    fs::write(&verity, vec![2u8; 4096]).unwrap();
    let hash = "e522df0f97da4febb882ac40f30b37dc0b444bf6df418929463fa25280f09d5c";
    ok(&[
        "disk",
        "install",
        img.to_str().unwrap(),
        "--slot",
        "b",
        "--version",
        "1.2.0",
        "--root-hash",
        hash,
        "--usr",
        usr.to_str().unwrap(),
        "--verity",
        verity.to_str().unwrap(),
    ]);
    let json = show_json(&img);
    let b = &json["slots"]["slots"][1];
    assert_eq!(b["version"], "1.2.0");
    assert_eq!(b["root_hash"], hash);
    assert_eq!(b["usr_uuid"], "e522df0f-97da-4feb-b882-ac40f30b37dc");
    let human = ok(&["disk", "show", img.to_str().unwrap()]);
    assert!(
        human.contains(&format!(
            "B: usr 4 + verity 5, 16.0 MiB, version 1.2.0, root hash {hash}"
        )),
        "{human}"
    );

    let e = fails(&[
        "disk",
        "install",
        img.to_str().unwrap(),
        "--slot",
        "a",
        "--version",
        "1.2.1",
        "--root-hash",
        "abc",
        "--usr",
        usr.to_str().unwrap(),
        "--verity",
        verity.to_str().unwrap(),
    ]);
    assert!(e.contains("\"abc\""), "{e}");
}

#[test]
fn flatcar_disk_show_and_gptprio() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("flatcar.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let p = img.to_str().unwrap();
    let out = Command::new("sgdisk")
        .args([
            "-n1:0:+8M",
            "-t1:c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "-c1:EFI-SYSTEM",
            "-n3:0:+16M",
            "-t3:5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6",
            "-c3:USR-A",
            "-n4:0:+16M",
            "-t4:5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6",
            "-c4:USR-B",
            "-n9:0:0",
            "-t9:3884dd41-8582-4404-b9a8-e9b84f2df50e",
            "-c9:ROOT",
            "-A3:set:48",
            "-A3:set:56",
            "-A4:set:49",
            "-A4:set:52",
            p,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // USR-A (1,0,1), USR-B (2,1,0): B boots next.
    let json = show_json(&img);
    assert_eq!(json["slots"]["scheme"], "flatcar");
    assert_eq!(json["slots"]["boots_next"], 4);
    let human = ok(&["disk", "show", p]);
    assert!(human.contains("USR-B    partition 4"), "{human}");
    assert!(
        human.contains("priority=2 tries=1 successful=false  <- boots next"),
        "{human}"
    );

    let dry = ok(&["disk", "gptprio-next", p, "--dry-run", "--json"]);
    let v: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(v["number"], 4);
    assert_eq!(sgdisk_attrs(&img, 4), "0012000000000000", "dry run wrote");
    ok(&["disk", "gptprio-next", p]);
    assert_eq!(sgdisk_attrs(&img, 4), "0002000000000000");
    let out = ok(&["disk", "gptprio-next", p]);
    assert!(out.contains("boot partition 3"), "{out}");
    ok(&["disk", "prioritize", p, "--partition", "3"]);
    assert_eq!(sgdisk_attrs(&img, 3), "0102000000000000");
    assert_eq!(sgdisk_attrs(&img, 4), "0001000000000000");
}

#[test]
fn bad_input_fails_with_a_clear_message_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    small(&img);
    let p = img.to_str().unwrap();
    let before = fs::read(&img).unwrap();

    let e = fails(&[
        "disk",
        "set-prio",
        p,
        "--partition",
        "200",
        "--priority",
        "1",
    ]);
    assert!(e.contains("partition 200 is out of range (1..=128)"), "{e}");
    let e = fails(&[
        "disk",
        "set-prio",
        p,
        "--partition",
        "2",
        "--priority",
        "16",
    ]);
    assert!(e.contains("priority = 16"), "{e}");
    let e = fails(&["disk", "set-prio", p, "--partition", "8", "--tries", "1"]);
    assert!(e.contains("partition 8 is not in use"), "{e}");

    let big = dir.path().join("big.img");
    fs::File::create(&big).unwrap().set_len(17 << 20).unwrap();
    let e = fails(&[
        "disk",
        "write",
        p,
        "--partition",
        "2",
        big.to_str().unwrap(),
    ]);
    assert!(
        e.contains("17825792 bytes") && e.contains("16777216 bytes"),
        "{e}"
    );
    assert!(
        fs::read(&img).unwrap() == before,
        "failed commands must not write"
    );

    let e = fails(&["disk", "show", "/nonexistent.img"]);
    assert!(e.contains("/nonexistent.img"), "{e}");
    let text = dir.path().join("text.img");
    fs::write(&text, "not a disk\n".repeat(10_000)).unwrap();
    let e = fails(&["disk", "show", text.to_str().unwrap()]);
    assert!(e.contains("is not a GPT disk"), "{e}");

    let cut = dir.path().join("cut.img");
    fs::copy(&img, &cut).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let e = fails(&["disk", "show", cut.to_str().unwrap()]);
    assert!(e.contains("truncated") && e.contains("33554432"), "{e}");

    let small_img = dir.path().join("small.img");
    let e = fails(&[
        "disk",
        "create",
        small_img.to_str().unwrap(),
        "--size",
        "1G",
    ]);
    assert!(e.contains("too small") && e.contains("1073741824"), "{e}");
    assert!(!small_img.exists());
    let e = fails(&[
        "disk",
        "create",
        small_img.to_str().unwrap(),
        "--size",
        "1.5G",
    ]);
    assert!(e.contains("1.5G"), "{e}");
}

#[test]
fn set_changes_label_uuid_type_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    small(&img);
    let p = img.to_str().unwrap();
    ok(&[
        "disk",
        "set",
        p,
        "--partition",
        "6",
        "--label",
        "state",
        "--uuid",
        "11111111-2222-3333-4444-555555555555",
        "--type",
        "linux-data",
        "--attributes",
        "1000000000000001",
    ]);
    let out = Command::new("sgdisk")
        .args(["-i", "6", p])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Partition name: 'state'"), "{text}");
    assert!(
        text.contains("11111111-2222-3333-4444-555555555555"),
        "{text}"
    );
    assert!(
        text.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        "{text}"
    );
    assert!(text.contains("Attribute flags: 1000000000000001"), "{text}");
    // A UUID another partition already has is refused, and nothing is written.
    let before = fs::read(&img).unwrap();
    let e = fails(&[
        "disk",
        "set",
        p,
        "--partition",
        "1",
        "--label",
        "x",
        "--uuid",
        "11111111-2222-3333-4444-555555555555",
    ]);
    assert!(e.contains("already used by partition 6"), "{e}");
    let e = fails(&["disk", "set", p, "--partition", "1", "--type", "nonsense"]);
    assert!(e.contains("\"nonsense\""), "{e}");
    assert!(fs::read(&img).unwrap() == before);
}

#[test]
fn create_json_arm64_and_seed() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("arm.img");
    let args = |seed: &'static str| {
        vec![
            "disk",
            "create",
            img.to_str().unwrap(),
            "--size",
            "64M",
            "--esp-size",
            "8M",
            "--usr-size",
            "16M",
            "--usr-verity-size",
            "1M",
            "--root-min-size",
            "4M",
            "--arch",
            "arm64",
            "--seed",
            seed,
            "--json",
        ]
    };
    let v: Value = serde_json::from_str(&ok(&args("keelson"))).unwrap();
    assert_eq!(v["disk_guid"], "044d040a-99bd-424e-aee0-585ebc49ecb5");
    let types: Vec<&str> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "esp",
            "usr-arm64",
            "usr-verity-arm64",
            "usr-arm64",
            "usr-verity-arm64",
            "root-arm64"
        ]
    );
    assert_eq!(v["slots"]["scheme"], "keelson");
    let other: Value = serde_json::from_str(&ok(&args("other"))).unwrap();
    assert_ne!(other["disk_guid"], v["disk_guid"]);
}

#[test]
fn show_reads_the_backup_when_the_primary_is_corrupt() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    small(&img);
    let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.seek(SeekFrom::Start(512 + 60)).unwrap();
    f.write_all(&[0xde, 0xad]).unwrap();
    drop(f);
    let json = show_json(&img);
    assert_eq!(json["gpt_read_from"], "backup");
    assert_eq!(json["partitions"].as_array().unwrap().len(), 6);
    let human = ok(&["disk", "show", img.to_str().unwrap()]);
    assert!(human.contains("GPT read from the backup copy"), "{human}");
    assert!(
        human.contains("warning: primary GPT header is unusable"),
        "{human}"
    );
    // Any committed change repairs the primary.
    ok(&[
        "disk",
        "set-prio",
        img.to_str().unwrap(),
        "--partition",
        "2",
        "--priority",
        "1",
    ]);
    assert_eq!(show_json(&img)["gpt_read_from"], "primary");
}

/// The log lines keelson writes to a pipe: with a timestamp by default, without one under
/// `KEELSON_LOG_TIME=0` (what `cargo xtask demo` sets for the image builds it shows), and never
/// with colour codes when stderr is not a terminal.
#[test]
fn log_lines_with_and_without_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let create = |name: &str, time: Option<&str>| {
        let path = dir.path().join(name);
        let mut c = Command::new(env!("CARGO_BIN_EXE_keelson"));
        c.args(["disk", "create", path.to_str().unwrap(), "--size", "64M"])
            .args(["--esp-size", "8M", "--usr-size", "16M"])
            .args(["--usr-verity-size", "1M", "--root-min-size", "4M"])
            .env("KEELSON_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("KEELSON_LOG_TIME");
        if let Some(v) = time {
            c.env("KEELSON_LOG_TIME", v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let stamped = create("a.img", None);
    let line = stamped
        .lines()
        .find(|l| l.contains("created disk image"))
        .unwrap_or_else(|| panic!("no log line in {stamped:?}"));
    assert!(line.starts_with("20"), "no timestamp: {line:?}");
    let plain = create("b.img", Some("0"));
    let line = plain
        .lines()
        .find(|l| l.contains("created disk image"))
        .unwrap_or_else(|| panic!("no log line in {plain:?}"));
    assert!(line.trim_start().starts_with("INFO "), "{line:?}");
    assert!(!stamped.contains('\x1b') && !plain.contains('\x1b'));
}
