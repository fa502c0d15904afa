//! The `sh doc-test` blocks of docs/sysext.md run, in order, as one bash script (`set -eu`)
//! in a scratch directory with `keelson` (this build) first on PATH and `os` linked to the
//! repository's OS definition, so the documented commands cannot drift from the CLI.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// The bodies of the fenced blocks whose info string is `sh doc-test`.
fn doc_test_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match current.as_mut() {
            None if line.trim() == "```sh doc-test" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unterminated ```sh doc-test block");
    blocks
}

#[test]
fn documented_sysext_commands_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/sysext.md")).unwrap();
    let blocks = doc_test_blocks(&doc);
    assert!(blocks.len() >= 3, "found only {} blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        root.join("os").canonicalize().unwrap(),
        dir.path().join("os"),
    )
    .unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_keelson")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -eu\n{}", blocks.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("KEELSON_LOG", "warn")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the docs/sysext.md commands failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // What the blocks say they make.
    for f in [
        "hello.raw",
        "sysext.crt",
        "published/SHA256SUMS",
        "published/hello.transfer",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} was not made:\n{stdout}");
    }
    assert!(stdout.contains("hello-1.0-"), "{stdout}");
    assert!(stdout.contains("signed:    yes"), "{stdout}");
}
