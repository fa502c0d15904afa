//! Helpers shared by the VM test files (each file is its own crate and uses some of them).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use keelson_image::qemu::Vm;

/// The path in environment variable `name`, set by `cargo xtask test`.
pub fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!("{name} is not set: run the VM tests through `cargo xtask test`"),
    }
}

/// The JSON build record (`keelson_<v>.json` of `keelson image build`) named by environment
/// variable `var`.
pub fn build_record(var: &str) -> serde_json::Value {
    let p = env_path(var);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Serve `body` for every GET on the host's loopback (the guest reaches it as 10.0.2.2);
/// returns the port. The thread lives as long as the test process.
pub fn serve(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            // Read the request head; its content does not matter.
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/x-tar\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    port
}

/// A `data:` URL of `text` (percent-encoded).
pub fn data_url(text: &str) -> String {
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

/// Run a guest command that must succeed; its output.
pub fn check(vm: &mut Vm, cmd: &str) -> String {
    vm.check(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Call `probe` every `every` until it answers `Ok`, for at most `timeout`; its answer. On
/// timeout, panics naming `what` and the last `Err` (what the probe saw instead).
pub fn poll_until<T, S: std::fmt::Debug>(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() >= deadline => {
                panic!("never saw {what} in {timeout:?}; last: {last:#?}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// The workspace's `keelson` binary: `KEELSON_VM_BIN_DIR/keelson` when set, else the one next
/// to this test binary's directory (target/debug, which `cargo xtask test` builds first).
pub fn keelson_bin() -> PathBuf {
    let dir = match std::env::var_os("KEELSON_VM_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(std::path::Path::parent)
                .unwrap()
                .to_path_buf()
        }
    };
    let bin = dir.join("keelson");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p keelson` (cargo xtask test builds it)",
        bin.display()
    );
    bin
}

/// Run a host command that must succeed; its stdout.
pub fn host_run(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", keelson_cmd::describe(cmd)));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}{}",
        keelson_cmd::describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[path = "../../../keelson/tests/doc_blocks/mod.rs"]
mod doc_blocks;

/// The commands of the ```` ```sh node ```` blocks of a document (README.md or a docs/*.md
/// page, its text), in order: what the docs show being typed on a Keelson node, for a VM test
/// to run in the guest (e.g. each through `check`). One entry per logical command: lines
/// ending in `\` joined with the next (newline kept), blank and comment lines dropped. The
/// host-side docs test (`crates/keelson/tests/docs.rs`) runs the ```` ```sh doc-test ````
/// blocks, refuses a shell block without a place and checks that these commands name
/// programs a node has; running them is this half. Note for the caller: in README.md
/// `keelson-agent update --now` reboots the node (wait for the next boot before the next
/// command), and the commands assume README.md's node config (the app unit
/// `keelson-app.service`, the `hello` extension of step 3).
pub fn doc_node_commands(doc: &str) -> Vec<String> {
    let blocks = doc_blocks::shell_blocks(doc, "node").unwrap_or_else(|e| panic!("{e}"));
    blocks
        .iter()
        .flat_map(doc_blocks::Block::commands)
        .map(|(_, cmd)| cmd)
        .collect()
}

/// The text of a document of the repository (`README.md`, `docs/agent.md`).
pub fn doc_text(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One line of narration: what a scenario step did. `cargo xtask demo` shows these lines (and
/// keeps the rest of the output in its log); in `cargo xtask test` they are ordinary output.
pub fn say(what: impl std::fmt::Display) {
    println!("==> {what}");
}

/// The end of a scenario under `cargo xtask demo` (`KEELSON_DEMO_HOLD` set): say where to look
/// (`lines`), then keep the server and the node up until the demo is interrupted (Ctrl-C ends
/// this process, its server and its QEMU together). Without the variable, returns at once.
pub fn hold(lines: &[String]) {
    if std::env::var_os("KEELSON_DEMO_HOLD").is_none() {
        return;
    }
    for l in lines {
        say(l);
    }
    say("ready: everything stays up until Ctrl-C");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The demo's own SSH key (`KEELSON_DEMO_SSH_PUBKEY`, a public key file) and the host port to
/// forward to the node's port 22 (`KEELSON_DEMO_SSH_PORT`), when `cargo xtask demo` gives them.
pub fn demo_ssh() -> Option<(String, u16)> {
    let key = std::fs::read_to_string(std::env::var_os("KEELSON_DEMO_SSH_PUBKEY")?).ok()?;
    let port = std::env::var("KEELSON_DEMO_SSH_PORT").ok()?.parse().ok()?;
    Some((key.trim().to_owned(), port))
}

/// A self-signed RSA key and certificate named `name` in `dir` (`openssl req -x509`): a node
/// with the certificate in `/etc/verity.d` trusts extensions signed with the key
/// (docs/sysext.md). Returns (key, certificate).
pub fn openssl_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    host_run(
        std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (key, cert)
}

/// `keelson sysext build` of an extension `name` at `version` holding one executable script,
/// `usr/bin/{program}` = `script`, signed with `key`/`cert`, into `dir/{name}_{version}.raw`
/// (the file name keelson-server's packages of an independent extension use); `extra` are more
/// build arguments (`--os-bound V`).
pub fn script_sysext(
    dir: &std::path::Path,
    (name, version): (&str, &str),
    (program, script): (&str, &str),
    (key, cert): (&std::path::Path, &std::path::Path),
    extra: &[&str],
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let tree = dir.join(format!("tree-{name}-{version}"));
    let bin = tree.join("usr/bin").join(program);
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join(format!("{name}_{version}.raw"));
    let os_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os");
    host_run(
        std::process::Command::new(keelson_bin())
            .args(["sysext", "build", "--name", name, "--version", version])
            .arg("--os-dir")
            .arg(&os_dir)
            .arg("--dir")
            .arg(&tree)
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .args(extra)
            .arg("--out")
            .arg(&out),
    );
    out
}
