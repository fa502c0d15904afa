//! `keelson config validate|translate` end to end, through the built binary.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn keelson(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .env("KEELSON_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const VALID: &str = r#"{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/motd", "mode": 420}]}}"#;
const WARN: &str = r#"{"ignition": {"version": "3.6.0"}, "colour": "red"}"#;
const BAD: &str = "{\n  \"ignition\": {\"version\": \"3.6.0\"},\n  \"storage\": {\"files\": [{\"path\": \"etc/x\", \"mode\": 420}]}\n}\n";

#[test]
fn validate_valid_config_prints_nothing_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.ign");
    std::fs::write(&p, VALID).unwrap();
    let out = keelson(&["config", "validate", p.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn validate_warnings_are_printed_but_exit_0() {
    let out = keelson(&["config", "validate", "-"], Some(WARN));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "warning at $.colour, line 1 col 36: unused key colour\n"
    );
}

#[test]
fn validate_errors_exit_1_with_path_line_and_column() {
    let out = keelson(&["config", "validate", "-"], Some(BAD));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "error at $.storage.files.0.path, line 3 col 34: path not absolute\n"
    );
}

#[test]
fn validate_json_output_comes_from_the_same_report() {
    let out = keelson(&["config", "validate", "--json", "-"], Some(BAD));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["entries"][0]["kind"], "error");
    assert_eq!(v["entries"][0]["path"], "$.storage.files.0.path");
    assert_eq!(v["entries"][0]["pos"]["line"], 3);
    assert_eq!(v["entries"][0]["message"], "path not absolute");
}

#[test]
fn validate_missing_file_names_it() {
    let out = keelson(&["config", "validate", "/nonexistent/c.ign"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/c.ign"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_accepts_yaml() {
    let yaml = "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: relative\n      mode: 0644\n";
    let out = keelson(&["config", "validate", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "error at $.storage.files.0.path, line 5 col 13: path not absolute\n"
    );
}

const YAML: &str = "variant: keelson\nversion: 1.0.0\npasswd:\n  users:\n    - name: core\n      ssh_authorized_keys_local: [core.pub]\nstorage:\n  files:\n    - path: /etc/hostname\n      mode: 0644\n      contents:\n        inline: node1\n";

#[test]
fn translate_writes_ignition_json_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("core.pub"), "ssh-ed25519 AAAA core\n").unwrap();
    let out = keelson(
        &[
            "config",
            "translate",
            "--files-dir",
            dir.path().to_str().unwrap(),
            "-",
        ],
        Some(YAML),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "not pretty by default");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ignition"]["version"], "3.6.0");
    assert_eq!(
        v["passwd"]["users"][0]["sshAuthorizedKeys"][0],
        "ssh-ed25519 AAAA core"
    );
    assert_eq!(v["storage"]["files"][0]["mode"], 420);
    assert_eq!(
        v["storage"]["files"][0]["contents"]["source"],
        "data:,node1"
    );
    // The output is itself a valid config.
    let again = keelson(&["config", "validate", "-"], Some(&stdout));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
}

#[test]
fn translate_pretty_indents() {
    let out = keelson(
        &["config", "translate", "--pretty", "-"],
        Some("variant: keelson\nversion: 1.0.0\n"),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "{\n  \"ignition\": {\n    \"version\": \"3.6.0\"\n  }\n}\n"
    );
}

#[test]
fn translate_without_files_dir_reports_the_yaml_position() {
    let out = keelson(&["config", "translate", "-"], Some(YAML));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr)
            .contains("line 6 col 35: local file paths are relative to a files directory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn translate_strict_fails_on_warnings() {
    let yaml = "variant: keelson\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/x\n      mode: 644\n";
    let lax = keelson(&["config", "translate", "-"], Some(yaml));
    assert_eq!(lax.status.code(), Some(0));
    assert!(text(&lax.stderr).contains("warning at $.storage.files.0.mode, line 6 col 13"));
    let strict = keelson(&["config", "translate", "--strict", "-"], Some(yaml));
    assert_eq!(strict.status.code(), Some(1));
    assert_eq!(text(&strict.stdout), "");
    assert!(text(&strict.stderr).contains("error at $.storage.files.0.mode, line 6 col 13"));
}

#[test]
fn translate_output_file_is_replaced_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.ign");
    std::fs::write(&out_path, "previous").unwrap();
    let bad = keelson(
        &["config", "translate", "-o", out_path.to_str().unwrap(), "-"],
        Some("variant: keelson\nversion: 1.0.0\nstorage:\n  files:\n    - path: rel\n"),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "previous");
    let good = keelson(
        &["config", "translate", "-o", out_path.to_str().unwrap(), "-"],
        Some("variant: flatcar\nversion: 1.1.0\n"),
    );
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap(),
        "{\"ignition\":{\"version\":\"3.4.0\"}}\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind: {leftovers:?}");
}
