//! `keelson config apply` end to end: the binary against a temp target root.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"{
  "ignition": {"version": "3.6.0"},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAAKEY me@host"]}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420, "contents": {"source": "data:,node1%0A"}}]},
  "systemd": {"units": [{"name": "hello.service", "enabled": true,
     "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"}]}
}"#;

fn keelson(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .env("KEELSON_LOG", "warn")
        .output()
        .unwrap()
}

fn setup(config: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    let cfg = dir.path().join("config.ign");
    std::fs::write(&cfg, config).unwrap();
    let (r, c) = (root.display().to_string(), cfg.display().to_string());
    (dir, r, c)
}

fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let data = if p.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).unwrap_or_default()
            };
            out.push((p.display().to_string(), data));
        }
    }
    out.sort();
    out
}

#[test]
fn dry_run_prints_a_tree_and_changes_nothing() {
    let (_d, root, cfg) = setup(CONFIG);
    let before = snapshot(Path::new(&root));
    let out = keelson(&["config", "apply", "--root", &root, "--dry-run", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("would change:"), "{text}");
    assert!(
        text.contains("├── hostname (create 6 bytes, mode 0644)"),
        "{text}"
    );
    assert!(
        text.contains("passwd (modify: add user core (uid 1000))"),
        "{text}"
    );
    assert!(
        text.contains("20-ignition.preset (preset: enable hello.service)"),
        "{text}"
    );
    assert!(
        text.contains("└── keelson (write 1 ssh key(s) for core)"),
        "{text}"
    );
    assert_eq!(
        snapshot(Path::new(&root)),
        before,
        "dry run changed the target"
    );
}

#[test]
fn apply_writes_the_target_and_json_matches_the_tree() {
    let (_d, root, cfg) = setup(CONFIG);
    let out = keelson(&["config", "apply", "--root", &root, "--json", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dry_run"], false);
    let changes = v["changes"].as_array().unwrap();
    let find = |p: &str| {
        changes
            .iter()
            .find(|c| c["path"] == p)
            .unwrap_or_else(|| panic!("{p} missing: {v}"))
    };
    assert_eq!(find("/etc/hostname")["kind"], "file");
    assert_eq!(find("/home/core")["kind"], "directory");
    let r = Path::new(&root);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/hostname")).unwrap(),
        "node1\n"
    );
    assert!(
        std::fs::read_to_string(r.join("etc/passwd"))
            .unwrap()
            .contains("core:x:1000:1000::/home/core:/bin/bash")
    );
    assert_eq!(
        std::fs::read_to_string(r.join("home/core/.ssh/authorized_keys.d/keelson")).unwrap(),
        "ssh-ed25519 AAAAKEY me@host\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/systemd/system-preset/20-ignition.preset")).unwrap(),
        "enable hello.service\n"
    );
    // No staging directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(r)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".keelson"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn existing_file_without_overwrite_fails_and_changes_nothing() {
    let (_d, root, cfg) = setup(CONFIG);
    std::fs::write(Path::new(&root).join("etc/hostname"), "old\n").unwrap();
    let before = snapshot(Path::new(&root));
    let out = keelson(&["config", "apply", "--root", &root, &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/etc/hostname: a file exists there already and overwrite is false"),
        "{err}"
    );
    assert_eq!(snapshot(Path::new(&root)), before);
}

#[test]
fn invalid_config_names_the_field_and_line() {
    let (_d, root, cfg) = setup(
        r#"{"ignition": {"version": "3.6.0"},
  "storage": {"files": [{"path": "relative/path"}]}}"#,
    );
    let out = keelson(&["config", "apply", "--root", &root, &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("$.storage.files.0.path") && err.contains("line 2"),
        "{err}"
    );
    assert!(err.contains("path not absolute"), "{err}");
}

#[test]
fn missing_root_is_a_clear_error() {
    let (_d, _root, cfg) = setup(CONFIG);
    let out = keelson(&[
        "config",
        "apply",
        "--root",
        "/nonexistent/keelson-root",
        &cfg,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/keelson-root"), "{err}");
}

#[test]
fn yaml_config_is_translated_then_applied() {
    let yaml = "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/motd\n      mode: 0600\n      contents:\n        inline: hello from yaml\n";
    let (_d, root, cfg) = setup(yaml);
    let out = keelson(&["config", "apply", "--root", &root, &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = Path::new(&root).join("etc/motd");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "hello from yaml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn storage_devices_are_skipped_without_disks_flag() {
    let (_d, root, cfg) = setup(
        r#"{"ignition": {"version": "3.6.0"},
  "storage": {"disks": [{"device": "/dev/keelson-test-nonexistent", "wipeTable": true}]}}"#,
    );
    let out = keelson(&["config", "apply", "--root", &root, "--json", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warnings"].to_string().contains("--disks"), "{v}");
    let out = keelson(&["config", "apply", "--root", &root, "--disks", &cfg]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/dev/keelson-test-nonexistent: device does not exist")
    );
}

#[test]
fn disks_flag_partitions_an_image_file_and_dry_run_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let config = format!(
        r#"{{"ignition": {{"version": "3.6.0"}},
  "storage": {{"disks": [{{"device": "{}", "wipeTable": true,
     "partitions": [{{"number": 1, "label": "DATA", "sizeMiB": 8}}]}}]}}}}"#,
        img.display()
    );
    let (_d, root, cfg) = setup(&config);
    let before = std::fs::read(&img).unwrap();
    let out = keelson(&[
        "config",
        "apply",
        "--root",
        &root,
        "--disks",
        "--dry-run",
        &cfg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "{} (wipe partition table; create partition 1 (8 MiB))",
            img.display()
        )),
        "{text}"
    );
    assert!(
        std::fs::read(&img).unwrap() == before,
        "dry run wrote to the image"
    );
    let out = keelson(&["config", "apply", "--root", &root, "--disks", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let print = Command::new("sgdisk")
        .arg("--print")
        .arg(&img)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&print.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with('1') && l.ends_with("DATA")),
        "{table}"
    );
}
