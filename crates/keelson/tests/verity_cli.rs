//! `keelson verity format|verify|dump` end to end through the built binary.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const ROOT_129_AA: &str = "2c03d2ffc512acf2dfbbc4013c3bae82571ba920082c9b95c56d4136ad2ad114";
const UUID: &str = "7d429397-0dd5-479c-9814-01050ba06d71";

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

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("data"))
        .unwrap()
        .set_len(129 * 4096)
        .unwrap();
    dir
}

#[test]
fn format_prints_veritysetup_fields_and_verify_dump_agree() {
    let dir = setup();
    let out = keelson(
        &[
            "verity",
            "format",
            "data",
            "hash",
            "--salt=aa",
            &format!("--uuid={UUID}"),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "VERITY header information for hash",
        &format!("UUID:            \t{UUID}"),
        "Hash type:       \t1",
        "Data blocks:     \t129",
        "Data block size: \t4096",
        "Hash block size: \t4096",
        "Hash algorithm:  \tsha256",
        "Salt:            \taa",
        &format!("Root hash:      \t{ROOT_129_AA}"),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    let out = keelson(
        &["verity", "verify", "data", "hash", ROOT_129_AA],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = keelson(&["verity", "dump", "hash"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Salt:            \taa"));
    assert!(!text(&out.stdout).contains("Root hash"));
}

#[test]
fn json_has_every_parameter() {
    let dir = setup();
    let out = keelson(
        &[
            "verity",
            "format",
            "data",
            "hash",
            "--json",
            "--salt",
            "-",
            "--no-superblock",
            "--hash",
            "sha512",
            "--format",
            "0",
            "--data-block-size",
            "1024",
            "--hash-block-size",
            "2048",
            "--data-blocks",
            "100",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hash_type"], 0);
    assert_eq!(v["algorithm"], "sha512");
    assert_eq!(v["data_block_size"], 1024);
    assert_eq!(v["hash_block_size"], 2048);
    assert_eq!(v["data_blocks"], 100);
    assert_eq!(v["superblock"], false);
    assert_eq!(v["salt"], "");
    assert!(v["uuid"].is_null());
    assert_eq!(v["root_hash"].as_str().unwrap().len(), 128);
    for key in [
        "hash_blocks",
        "hash_offset",
        "hash_start_block",
        "hash_area_size",
        "hash_device_size",
    ] {
        assert!(v[key].is_u64(), "{key} missing in {v}");
    }
    let size = std::fs::metadata(dir.path().join("hash")).unwrap().len();
    assert_eq!(v["hash_device_size"], size);
}

#[test]
fn verify_names_the_first_bad_block_and_fails() {
    let dir = setup();
    let out = keelson(
        &[
            "verity",
            "format",
            "data",
            "data",
            "--salt=aa",
            "--hash-offset=528384",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(ROOT_129_AA));
    let args = [
        "verity",
        "verify",
        "data",
        "data",
        ROOT_129_AA,
        "--hash-offset=528384",
    ];
    assert!(keelson(&args, dir.path()).status.success());

    // Corrupt data block 77.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("data"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"!", 77 * 4096 + 5).unwrap();
    let out = keelson(&args, dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("data block 77"),
        "{}",
        text(&out.stderr)
    );

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = keelson(&json_args, dir.path());
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert!(v["error"].as_str().unwrap().contains("data block 77"));

    // A wrong root hash.
    let wrong = "00".repeat(32);
    let out = keelson(
        &[
            "verity",
            "verify",
            "data",
            "data",
            &wrong,
            "--hash-offset=528384",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("root hash mismatch"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_input_fails_clearly_without_output() {
    let cases: &[(&[&str], &str)] = &[
        (&["--salt=zz"], "salt \"zz\""),
        (&["--salt", &"00".repeat(257)], "257 bytes"),
        (&["--hash-offset=1000"], "hash offset 1000"),
        (&["--data-block-size=8192"], "data block size 8192"),
        (&["--hash-block-size=256"], "hash block size 256"),
        (&["--format=2"], "hash format 2"),
        (&["--hash=md5"], "\"md5\""),
        (&["--uuid=nope"], "UUID \"nope\""),
        (&["--data-blocks=130"], "130 data blocks"),
    ];
    for (extra, want) in cases {
        let dir = setup();
        let mut args = vec!["verity", "format", "data", "hash"];
        args.extend_from_slice(extra);
        let out = keelson(&args, dir.path());
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(
            !dir.path().join("hash").exists(),
            "{extra:?} left a hash file"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "{extra:?} left files"
        );
    }
    let dir = setup();
    let out = keelson(
        &[
            "verity",
            "format",
            "data",
            "data",
            "--hash-offset=4096",
            "--data-blocks=129",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("overlaps"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("data")).unwrap().len(),
        129 * 4096
    );
    let out = keelson(&["verity", "dump", "data"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no verity superblock"));
}
