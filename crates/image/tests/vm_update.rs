//! VM tests of updates end to end (issue [6/12], docs/agent.md): keelson-server runs on the host
//! (SQLite, reached by the guest as 10.0.2.2 through QEMU's user network), releases are signed
//! payloads built with `keelson payload build` from real image builds, and keelson-agent on a
//! node booted through OVMF and systemd-boot takes them:
//!
//! (a) v2 is published; the node downloads it into the inactive slot, reboots into it, the boot
//!     is blessed, the server shows the instance complete on v2; a file in /etc and one in /var
//!     written before are still there, and the container app answers again.
//! (c) on the way to v2 the power is cut (QEMU killed) during the download (the agent's fetch
//!     phase), during the usr and the verity writes, before and after the UKI's rename, and
//!     during v2's first boot; each time a good version boots, and the update then completes,
//!     with the server sending well below the full payload (chunk reuse, [9/12]).
//! (d) on v2, a tampered chunk, a manifest signed by an unknown key, an expired manifest and an
//!     older release are each refused with their reason in `keelson-agent status`, and the ESP
//!     and the partition table stay as they were.
//!
//! `update_bless_and_refuse` runs (a), (c) and (d) on one node. `fleetlock_update_blessed`, the
//! update step of `cargo xtask demo` run the same way in CI, takes a node from v1 to v2 under
//! the `fleetlock` strategy against keelson-server ([7/12]) and then runs (b):
//! (b) v3, whose own health check (`/usr/lib/keelson/health.d`) fails, is published while
//!     another node holds the group's one reboot slot; once the slot is free the node boots v3,
//!     it is never blessed, the node is back on v2 by itself within 3 boots, reports the
//!     rollback, does not try v3 again, frees the slot, and the server halts the group's
//!     rollout.
//!
//! Extensions ([8/12], docs/sysext.md): `extension_update_without_reboot` (6b) installs and
//! updates an independent extension (its own application on the server) with `systemd-sysext
//! refresh`, same boot, same container; `fleetlock_update_blessed` (6d) carries an OS-bound
//! extension built for v2 with the v1 -> v2 update and finds it merged on v2's first boot.
//!
//! Each test's scenarios share one node and its boots (CI runs TCG on two cores).
//!
//! `cargo xtask test` (xtask/src/vm.rs) builds the images and sets: `KEELSON_VM_BUILD` (v1, the
//! node's image), `KEELSON_VM_V2_BUILD`, `KEELSON_VM_V3_BUILD` (build records),
//! `KEELSON_VM_UPDATE_KEYS` (the directory of the development key `dev-update.key` that every
//! image trusts), `KEELSON_VM_BIN_DIR` (the `keelson` and `keelson-server` binaries) and
//! `KEELSON_VM_BUSYBOX` (the test container's binary). A test that cannot run fails.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use app::{APP_UNIT, SSH_KEY, fetch_app};
use keelson_image::qemu::{Vm, VmOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod app;
mod common;

use common::{
    build_record, check, data_url, demo_ssh, doc_node_commands, doc_text, env_path, hold, host_run,
    poll_until, say, serve,
};

/// Generous: CI runs TCG on two shared cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// A whole download and apply of a release inside the TCG guest.
const APPLY_TIMEOUT: Duration = Duration::from_secs(1200);
/// The reboot delay after a failed health check (health.conf `REBOOT_AFTER_SECS`).
const REBOOT_AFTER_SECS: u64 = 5;
/// Flatcar's application ID, keelson-agent's default.
const APP_ID: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
const APP_TRIES: u32 = 180;
/// How long the server may take to show what a node reported, and how often to look.
const SERVER_WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// keelson-server on the host, SQLite, driven with `keelson admin` as an operator would.
struct Server {
    child: Child,
    base: String,
    port: u16,
    token: String,
    bin: PathBuf,
    /// Bytes keelson-server sent through the payload proxy (its `--public-url`), so the test
    /// sees how much of a payload a node downloaded (#13: chunk reuse).
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A TCP proxy on the host's loopback in front of `upstream`, counting the bytes sent back.
fn counting_proxy(upstream: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let count = count.clone();
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    count.fetch_add(n as u64, Ordering::SeqCst);
                }
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, served)
}

impl Server {
    fn start(bin: &Path, dir: &Path) -> Server {
        let db = format!("sqlite://{}", dir.join("keelson.db").display());
        let out = host_run(Command::new(bin.join("keelson-server")).args([
            "token",
            "create",
            "--role",
            "admin",
            "--json",
            "--database-url",
            &db,
        ]));
        let token = serde_json::from_str::<Value>(&out).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let port = free_port();
        // Payload URLs in Omaha responses point at the counting proxy.
        let (proxy_port, served) = counting_proxy(port);
        let child = Command::new(bin.join("keelson-server"))
            .args([
                "--database-url",
                &db,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &format!("http://10.0.2.2:{proxy_port}"),
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let s = Server {
            child,
            base,
            port,
            token,
            bin: bin.to_path_buf(),
            served,
        };
        poll_until(
            "keelson-server listening",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || std::net::TcpStream::connect(("127.0.0.1", port)),
        );
        s
    }

    /// [`Server::start`] with the fleet of the scenarios: the app, channel `stable` and group
    /// `stable` on it (updates on, no safe mode, rollout 100%, halted at 50% failures, one
    /// FleetLock reboot slot).
    fn fleet(bin: &Path, dir: &Path) -> Server {
        let server = Server::start(bin, dir);
        server.open_app(
            APP_ID,
            "Keelson",
            &["--failure-threshold", "50", "--fleetlock-slots", "1"],
        );
        server
    }

    /// Application `app` named `name`, with channel `stable` and group `stable` on it: updates
    /// on, no safe mode, rollout 100%, and the further `policy set` options `policy`.
    fn open_app(&self, app: &str, name: &str, policy: &[&str]) {
        self.admin(&["app", "create", "--name", name, app]);
        self.admin_app(app, &["channel", "create", "stable"]);
        self.admin_app(app, &["group", "create", "stable", "--channel", "stable"]);
        let mut set = vec![
            "policy",
            "set",
            "stable",
            "--updates-enabled",
            "true",
            "--safe-mode",
            "false",
            "--rollout-percent",
            "100",
        ];
        set.extend(policy);
        self.admin_app(app, &set);
    }

    /// `keelson admin ARGS` against this server.
    fn admin(&self, args: &[&str]) -> String {
        host_run(
            Command::new(self.bin.join("keelson"))
                .arg("admin")
                .args(args)
                .env("KEELSON_SERVER", &self.base)
                .env("KEELSON_TOKEN", &self.token)
                .env("KEELSON_APP", APP_ID),
        )
    }

    fn admin_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.admin(&a)).unwrap()
    }

    /// Upload `payload` as `version` and point the stable channel at it.
    fn publish(&self, version: &str, payload: &Path) {
        self.publish_with(version, payload, &[]);
    }

    /// [`Server::publish`] with OS-bound extension files attached to the package (name, file)
    /// before the channel points at it.
    fn publish_with(&self, version: &str, payload: &Path, extensions: &[(&str, &Path)]) {
        self.admin(&[
            "package",
            "upload",
            "--version",
            version,
            payload.to_str().unwrap(),
        ]);
        for (name, raw) in extensions {
            self.attach_extension(version, name, raw);
        }
        self.admin(&["channel", "set", "stable", "--version", version]);
    }

    /// `keelson admin ARGS --app APP`: the commands of another application (an extension's).
    fn admin_app(&self, app: &str, args: &[&str]) -> String {
        let mut a = args.to_vec();
        a.extend(["--app", app]);
        self.admin(&a)
    }

    /// Attaches the OS-bound extension file `raw` as `name` to the OS package `version`
    /// (`keelson admin package add-extension`).
    fn attach_extension(&self, version: &str, name: &str, raw: &Path) {
        self.admin(&[
            "package",
            "add-extension",
            "--version",
            version,
            "--name",
            name,
            raw.to_str().unwrap(),
        ]);
    }

    /// A FleetLock request of another node (`pre-reboot` takes a slot, `steady-state` frees it).
    fn fleetlock(&self, op: &str, id: &str) {
        host_run(Command::new("curl").args([
            "-sSf",
            "-X",
            "POST",
            "-H",
            "fleet-lock-protocol: true",
            "-d",
            &format!("{{\"client_params\": {{\"id\": \"{id}\", \"group\": \"stable\"}}}}"),
            &format!("{}/v1/{op}", self.base),
        ]));
    }

    /// The ids holding the stable group's FleetLock slots.
    /// What the demo shows before it ends (`hold`): the dashboard, `extra`, a `keelson admin`
    /// command (`admin` of `app`) and, when the demo forwards ssh, how to reach the node and
    /// what to run there (`on_node`).
    fn look_here(
        &self,
        bin: &Path,
        app: &str,
        admin: &str,
        extra: &[String],
        on_node: &str,
    ) -> Vec<String> {
        let mut look = vec![format!(
            "dashboard: {}/ (log in with the admin token {})",
            self.base, self.token
        )];
        look.extend_from_slice(extra);
        look.push(format!(
            "keelson admin: KEELSON_SERVER={} KEELSON_TOKEN={} KEELSON_APP={app} {} admin {admin}",
            self.base,
            self.token,
            bin.join("keelson").display()
        ));
        if let Some((_, port)) = demo_ssh() {
            look.push(format!(
                "the node: ssh -i target/demo/ssh/id_ed25519 -p {port} keel@127.0.0.1, then \
                 {on_node}"
            ));
        }
        look
    }

    fn holders(&self) -> Vec<String> {
        let v = self.admin_json(&["fleetlock", "holders", "--group", "stable"]);
        v.as_array()
            .unwrap_or_else(|| panic!("holders: {v}"))
            .iter()
            .map(|h| h["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn group(&self) -> Value {
        self.admin_json(&["group", "show", "stable"])
    }

    /// The one instance (the node), once it has talked to the server.
    fn instance(&self) -> Option<Value> {
        let page = self.admin_json(&["instance", "list"]);
        page["instances"].as_array().unwrap().first().cloned()
    }

    /// Poll until `pred` holds for the node's instance (at most `timeout`).
    fn wait_instance(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        poll_until(&format!("the instance {what}"), timeout, POLL, || {
            let i = self.instance();
            i.clone().filter(|i| pred(i)).ok_or(i)
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keelson payload build` of the build record `rec`'s version.
fn payload(bin: &Path, rec: &Value, key: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let image = Path::new(rec["image"].as_str().unwrap());
    host_run(
        Command::new(bin.join("keelson"))
            .args(["payload", "build", "--image-dir"])
            .arg(image.parent().unwrap())
            .args(["--version", rec["version"].as_str().unwrap(), "--key"])
            .arg(key)
            .arg("--out")
            .arg(out)
            .args(extra),
    );
    out.to_path_buf()
}

/// A signed payload of v3's parts under `version` (keelson-payload's library, as
/// `keelson payload build` uses it), with one byte of its first usr chunk's compressed data
/// flipped: only the chunk check can catch it.
fn tampered(v3: &Value, version: &str, key: &Path, out: &Path) -> PathBuf {
    let dir = Path::new(v3["image"].as_str().unwrap()).parent().unwrap();
    let mut input =
        keelson_payload::BuildInput::from_image_dir(dir, v3["version"].as_str().unwrap()).unwrap();
    input.version = version.to_string();
    let key = keelson_payload::SigningKeyFile::load(key).unwrap();
    let opts = keelson_payload::BuildOptions {
        keys: vec![&key],
        ..keelson_payload::BuildOptions::default()
    };
    keelson_payload::build(&input, out, &opts).unwrap();
    let header = keelson_payload::read_header_file(out).unwrap();
    let manifest: keelson_payload::Manifest =
        serde_json::from_slice(&header.manifest_bytes).unwrap();
    let chunk = &manifest.parts[0].chunks[0];
    let at = header.data_start + chunk.data_offset + chunk.data_size / 2;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    out.to_path_buf()
}

fn exe(path: &str, script: &str) -> Value {
    serde_json::json!({"path": path, "mode": 0o755, "contents": {"source": data_url(script)}})
}

/// What a scenario adds to the node's config: more `/etc/keelson/update.toml` (the
/// `[extensions.NAME]` tables) and more `storage.files` entries (a certificate in
/// `/etc/verity.d`).
#[derive(Debug, Default)]
struct Extras {
    update_toml: String,
    files: Vec<Value>,
}

impl Extras {
    /// `[extensions.NAME]` `toml` for each extension, and `cert` trusted for their signatures.
    fn extensions(toml: &str, cert: &Path) -> Extras {
        let pem = std::fs::read_to_string(cert).unwrap();
        Extras {
            update_toml: format!("\n{toml}"),
            files: vec![serde_json::json!({
                "path": "/etc/verity.d/keelson-test-ext.crt",
                "contents": {"source": data_url(&pem)}
            })],
        }
    }
}

/// The node's config: the agent pointed at the host's server, a short reboot delay after a
/// failed check, the container app, a health check that the app answers, and a check unit;
/// `keys` are user keel's SSH keys; `extras` what the scenario adds.
fn node_config(
    server_port: u16,
    archive_port: u16,
    archive_sha256: &str,
    keys: &[&str],
    extras: &Extras,
) -> String {
    let update = format!(
        "[update]\nserver = \"http://10.0.2.2:{server_port}/v1/update/\"\ngroup = \"stable\"\n\n\
         [reboot]\nstrategy = \"fleetlock\"\nfleetlock_url = \"http://10.0.2.2:{server_port}/\"\n{}",
        extras.update_toml
    );
    // The app is part of what makes a boot good: it must answer before the boot is blessed.
    let app_check = "#!/bin/bash\nfor i in $(seq 120); do\n  \
         if { exec 3<>/dev/tcp/127.0.0.1/8080; } 2>/dev/null; then\n    \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; grep -q 'HTTP/1' <&3 && exit 0\n  fi\n  \
         sleep 1\ndone\necho 'the container app is not answering' >&2\nexit 1\n";
    let mut files = vec![
        serde_json::json!({"path": "/etc/keelson/update.toml", "contents": {"source": data_url(&update)}}),
        serde_json::json!({
            "path": "/etc/keelson/health.conf",
            "contents": {"source": data_url(&format!("REBOOT_AFTER_SECS={REBOOT_AFTER_SECS}\n"))}
        }),
        exe("/etc/keelson/health.d/20-app", app_check),
        serde_json::json!({
            "path": "/var/lib/keelson-app/app.oci.tar",
            "mode": 0o600,
            "contents": {
                "source": format!("http://10.0.2.2:{archive_port}/app.oci.tar"),
                "verification": {"hash": format!("sha256-{archive_sha256}")}
            }
        }),
        serde_json::json!({"path": "/srv/www/index.html", "contents": {"source": data_url("served across updates\n")}}),
    ];
    files.extend(extras.files.iter().cloned());
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{"name": "keel", "sshAuthorizedKeys": keys, "groups": ["sudo"]}]},
        "storage": {"files": files},
        "systemd": {"units": [
            {"name": "keelson-app.service", "enabled": true, "contents": APP_UNIT},
            {
                "name": "keelson-test-check.service",
                "enabled": true,
                "contents": "[Unit]\nDescription=test check unit\nBefore=keelson-health.target\n\
                    [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n\
                    [Install]\nRequiredBy=keelson-health.target\n"
            }
        ]}
    })
    .to_string()
}

/// The node: a private copy of the v1 image in `work`, provisioned with [`node_config`] (the
/// app's archive served from the host), logging in on the console; `app_port` forwards the
/// app's port to the host. Under `cargo xtask demo`, the demo's SSH key is keel's too and its
/// port is forwarded to the node's sshd ([`demo_ssh`]).
fn node(
    work: &Path,
    v1_image: &Path,
    server: &Server,
    app_port: Option<u16>,
    extras: &Extras,
) -> VmOptions {
    let busybox = std::fs::read(env_path("KEELSON_VM_BUSYBOX")).unwrap();
    let archive = app::app_archive(&busybox, work).unwrap_or_else(|e| panic!("{e}"));
    let archive_sha = hex::encode(Sha256::digest(&archive));
    let archive_port = serve(archive);
    let config = work.join("node.ign");
    let demo = demo_ssh();
    let mut keys = vec![SSH_KEY];
    keys.extend(demo.as_ref().map(|(key, _)| key.as_str()));
    std::fs::write(
        &config,
        node_config(server.port, archive_port, &archive_sha, &keys, extras),
    )
    .unwrap();
    let disk = work.join("node.img");
    host_run(
        Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(v1_image)
            .arg(&disk),
    );
    let mut o = VmOptions::new(&disk);
    o.config = Some(config);
    o.host_forwards.extend(app_port.map(|p| (p, app::APP_PORT)));
    o.host_forwards.extend(demo.map(|(_, port)| (port, 22)));
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    o
}

/// Log in to the shell that appears after console offset `from`, then wait for the boot to end
/// (the network is up: keelson-agent.service wants network-online.target).
fn login(vm: &mut Vm, from: usize, what: &str) {
    vm.login_from(from, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let state = vm
        .run_with_timeout("systemctl is-system-running --wait", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    if state.output.trim() != "running" {
        let failed = vm.run("systemctl --failed --no-legend --no-pager");
        eprintln!(
            "{what}: system {:?}; failed units: {failed:?}",
            state.output.trim()
        );
    }
}

/// `keelson-agent status --json` in the guest. Base64 between marks, so that a service's line
/// on the console (health checks print there) cannot break the JSON.
fn status(vm: &mut Vm) -> Value {
    let out = check(
        vm,
        "printf '@@J%s@@J\\n' \"$(keelson-agent status --json | base64 -w0)\"",
    );
    let b64 = out
        .split("@@J")
        .nth(1)
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_else(|e| panic!("status base64 {out:?}: {e}"));
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

/// Poll the agent's status until `pred` holds.
fn wait_status(vm: &mut Vm, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    poll_until(
        &format!("{what} in keelson-agent status"),
        timeout,
        Duration::from_secs(5),
        || {
            let s = status(vm);
            if pred(&s) { Ok(s) } else { Err(s) }
        },
    )
}

/// The entry systemd-boot booted, with its counter (`LoaderBootCountPath`), read in the guest.
/// (A 4-byte attribute header, not printable, then UTF-16LE: keep the printable ASCII.)
const BOOT_COUNT_PATH: &str = "tr -cd '[:print:]' < /sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// What an update may not change when it refuses: the partition table and the boot entries.
fn boot_state(vm: &mut Vm) -> String {
    check(
        vm,
        "for i in 1 2 3 4 5 6; do echo \"$i: $(sgdisk -i $i /dev/vda | grep -E 'unique GUID|Partition name|First sector|Last sector' | tr '\\n' ' ')\"; done; \
         ls -l --time-style=+%s /efi/EFI/Linux",
    )
}

/// Publish `payload` as `version` (lifting the halt the previous refusal caused) and run
/// `keelson-agent check`; its output.
fn refuse(server: &Server, vm: &mut Vm, version: &str, payload: &Path) -> String {
    server.admin(&["policy", "set", "stable", "--resume"]);
    server.publish(version, payload);
    vm.run_with_timeout("keelson-agent check", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
        .output
}

#[test]
#[ignore = "needs built images, keelson-server and QEMU: run by `cargo xtask test`"]
fn update_bless_and_refuse() {
    let v1 = build_record("KEELSON_VM_BUILD");
    let v2 = build_record("KEELSON_VM_V2_BUILD");
    let v3 = build_record("KEELSON_VM_V3_BUILD");
    let keys = env_path("KEELSON_VM_UPDATE_KEYS");
    let key = keys.join("dev-update.key");
    let bin = env_path("KEELSON_VM_BIN_DIR");
    let v1_image = PathBuf::from(v1["image"].as_str().unwrap());
    let scratch = tempfile::tempdir_in(v1_image.parent().unwrap()).unwrap();
    let work = scratch.path();

    // Releases, as a release engineer makes them.
    let t = Instant::now();
    let p1 = payload(&bin, &v1, &key, &work.join("v1.payload"), &[]);
    let p2 = payload(&bin, &v2, &key, &work.join("v2.payload"), &[]);
    let other = work.join("other-key");
    host_run(
        Command::new(bin.join("keelson"))
            .args(["key", "generate", "--name", "unknown", "--out"])
            .arg(&other),
    );
    let p_unknown = payload(
        &bin,
        &v3,
        &other.join("unknown.key"),
        &work.join("unknown-key.payload"),
        &[],
    );
    let p_expired = payload(
        &bin,
        &v3,
        &key,
        &work.join("expired.payload"),
        &["--expires-in", "0"],
    );
    let p_tampered = tampered(&v3, "0.2.4", &key, &work.join("tampered.payload"));
    eprintln!("payloads built in {:?}", t.elapsed());

    let server = Server::fleet(&bin, work);

    let o = node(work, &v1_image, &server, None, &Extras::default());
    let mut vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
    login(&mut vm, 0, "the first boot of v1");
    assert!(check(&mut vm, &fetch_app(APP_TRIES)).contains("served across updates"));
    let s = status(&mut vm);
    assert_eq!(s["running_version"], "0.1.0", "{s:#}");
    check(
        &mut vm,
        "mkdir -p /var/lib/keelson-test && echo etc-kept > /etc/keelson-test-marker && \
         echo var-kept > /var/lib/keelson-test/marker && sync",
    );

    // (a) + (c) v2, with the power cut five times on the way (keelson-agent's failpoints stop
    // it at an exact point, then QEMU is killed) and once more during v2's first boot. Each
    // time a good version boots and the update resumes; then it completes.
    let t = Instant::now();
    let served_before = server.served.load(std::sync::atomic::Ordering::SeqCst);
    server.publish("0.2.0", &p2);
    for point in [
        // The fetch phase (chunks checked into the store; nothing outside /var changed yet),
        // then the write phase.
        "fetched:usr:100",
        "usr:0",
        "usr-verity:0",
        "uki-before-rename",
        "uki-after-rename",
    ] {
        let from = vm.console_text().len();
        vm.send(&format!(
            "KEELSON_AGENT_FAILPOINT={point} keelson-agent check\n"
        ))
        .unwrap();
        vm.wait_for_from(&format!("failpoint {point} reached"), from, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("the agent never reached {point}: {e}"));
        vm.kill();
        eprintln!("power cut at {point} ({:?})", t.elapsed());
        vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
        if point == "uki-after-rename" {
            // v2's entry is on the ESP with its tries: it boots; cut the power in the middle.
            vm.wait_for("Welcome to Keelson 0.2.0", BOOT_TIMEOUT)
                .unwrap_or_else(|e| panic!("v2 did not start booting after {point}: {e}"));
            vm.kill();
            eprintln!("power cut during v2's first boot ({:?})", t.elapsed());
            vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
            break;
        }
        login(&mut vm, 0, &format!("the boot after the cut at {point}"));
        let s = status(&mut vm);
        assert_eq!(
            s["running_version"], "0.1.0",
            "after the cut at {point}: {s:#}"
        );
        assert_eq!(s["state"], "downloading", "after the cut at {point}: {s:#}");
    }
    login(&mut vm, 0, "v2's second boot");
    // The cut boot used one of v2's tries: this is its second.
    let counted = check(&mut vm, &format!("{BOOT_COUNT_PATH}; echo"));
    assert!(counted.contains("+1-2.efi"), "boot count path {counted:?}");
    assert!(check(&mut vm, "cat /usr/lib/os-release").contains("VERSION_ID=0.2.0"));
    assert_eq!(
        check(&mut vm, "cat /etc/keelson-test-marker").trim(),
        "etc-kept"
    );
    assert_eq!(
        check(&mut vm, "cat /var/lib/keelson-test/marker").trim(),
        "var-kept"
    );
    assert!(check(&mut vm, &fetch_app(APP_TRIES)).contains("served across updates"));
    let s = wait_status(&mut vm, "complete on 0.2.0", BOOT_TIMEOUT, |s| {
        s["state"] == "complete" && s["running_version"] == "0.2.0"
    });
    eprintln!("v2 blessed and complete after {:?}: {s:#}", t.elapsed());
    // Blessed: systemd-bless-boot dropped the counter from the entry's name.
    let entries = check(&mut vm, "ls /efi/EFI/Linux");
    assert!(entries.contains("keelson_0.2.0.efi"), "{entries}");
    server.wait_instance("complete on 0.2.0", SERVER_WAIT, |i| {
        i["version"] == "0.2.0" && i["status"] == "complete"
    });
    // #13: v2 was built from v1's chunks and the new ones; the server sent well below the
    // full payload, resumes after the power cuts included (the fetched chunks were kept).
    let served = server.served.load(std::sync::atomic::Ordering::SeqCst) - served_before;
    let full = std::fs::metadata(&p2).unwrap().len();
    eprintln!(
        "v1 -> v2: the server sent {served} bytes of a {full}-byte payload ({:.1}%)",
        100.0 * served as f64 / full as f64
    );
    assert!(
        served * 2 < full,
        "v1 -> v2 downloaded {served} bytes of a {full}-byte payload"
    );
    assert_eq!(
        server.holders(),
        Vec::<String>::new(),
        "a reboot slot is still held"
    );

    // (d) refusals found before the first byte is written: each with its reason, nothing
    // changed on the ESP or in the GPT.
    let before = boot_state(&mut vm);
    for (version, payload, reason) in [
        ("0.2.1", &p_unknown, "unknown_key"),
        ("0.2.2", &p_expired, "expired"),
        ("0.2.3", &p1, "not_newer"),
    ] {
        let out = refuse(&server, &mut vm, version, payload);
        let s = status(&mut vm);
        assert_eq!(
            s["last_error"]["reason"], reason,
            "offer {version}:\n{out}\n{s:#}"
        );
        assert_eq!(
            boot_state(&mut vm),
            before,
            "offer {version} ({reason}) changed the GPT or the ESP"
        );
        check(&mut vm, "keelson-agent reset");
        eprintln!("offer {version} refused: {reason}");
    }
    // A tampered chunk is found in the fetch phase, before anything outside
    // /var/lib/keelson changes: the GPT and the ESP are as before, v1 still in its slot.
    let out = refuse(&server, &mut vm, "0.2.4", &p_tampered);
    let s = status(&mut vm);
    let reason = s["last_error"]["reason"].as_str().unwrap_or_default();
    assert!(
        ["chunk_hash", "chunk_decode"].contains(&reason),
        "tampered chunk: status says {reason:?}:\n{out}\n{s:#}"
    );
    assert_eq!(
        boot_state(&mut vm),
        before,
        "the tampered payload changed the GPT or the ESP"
    );
    check(&mut vm, "keelson-agent reset");
    eprintln!("offer 0.2.4 refused: {reason}");

    // (b), v3 failing its own health check and rolling back, runs in
    // `fleetlock_update_blessed`, the demo's update step, on a node with a reboot slot.
    vm.kill();
}

/// (b) on a node running v2 with the `fleetlock` strategy and the group's one reboot slot: v3,
/// whose own health check fails, is published while another node holds the slot. The node
/// stages v3 and waits; once the slot is free it reboots, v3 is never blessed, the node is back
/// on v2 within 3 boots by itself, reports the rollback, does not try v3 again, gives the slot
/// back, and the server halts the group's rollout of v3.
fn bad_release_rolls_back(server: &Server, vm: &mut Vm, p3: &Path, extensions: &[(&str, &Path)]) {
    let t = Instant::now();
    server.admin(&["policy", "set", "stable", "--resume"]);
    // [7/12] FleetLock: another node holds the group's one reboot slot, so the node stages v3
    // and waits; once the slot is free it takes it, reboots, and gives it back after the
    // rollback.
    server.fleetlock("pre-reboot", "another-node");
    server.publish_with("0.3.0", p3, extensions);
    let from = vm.console_text().len();
    let out = vm
        .run_with_timeout("keelson-agent check", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    say(format!(
        "update: bad v3 published; the node downloaded and staged it in {:.0?}",
        t.elapsed()
    ));
    let s = status(vm);
    assert_eq!(s["state"], "staged", "{}\n{s:#}", out.output);
    assert!(
        s["reboot"]["waiting_for"]
            .as_str()
            .is_some_and(|w| w.starts_with("lock")),
        "{s:#}"
    );
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        !vm.console_text()[from..].contains("reboot: Restarting system"),
        "rebooted without the lock"
    );
    assert_eq!(server.holders(), vec!["another-node".to_string()]);
    server.fleetlock("steady-state", "another-node");
    let mut at = vm
        .wait_for_from("reboot: Restarting system", from, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("the node never took the free slot and rebooted: {e}"));
    say(format!(
        "reboot coordination: the node waited while another node held the group's one \
         FleetLock slot, then took it and rebooted into v3 ({:.0?})",
        t.elapsed()
    ));
    for boot in 1..=3 {
        at = vm
            .wait_for_from(
                "keelson-health: FAILED: /usr/lib/keelson/health.d/50-release-check exited with status 7",
                at,
                BOOT_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("v3 boot {boot}: {e}"));
        at = vm
            .wait_for_from("reboot: Restarting system", at, BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("v3 boot {boot} did not reboot by itself: {e}"));
        say(format!(
            "rollback: v3 boot {boot} of 3 failed its health check and rebooted by itself \
             ({:.0?})",
            t.elapsed()
        ));
    }
    login(vm, at, "the boot after v3's tries ran out");
    assert!(
        check(vm, "cat /usr/lib/os-release").contains("VERSION_ID=0.2.0"),
        "not back on v2"
    );
    let s = wait_status(vm, "rolled back from 0.3.0", BOOT_TIMEOUT, |s| {
        s["state"] == "rolled-back"
            && s["refused"]
                .as_array()
                .is_some_and(|r| r.contains(&"0.3.0".into()))
    });
    eprintln!("{s:#}");
    say(format!(
        "rollback: the node is back on v2 by itself after {:.0?}; the app answers again",
        t.elapsed()
    ));
    assert!(check(vm, &fetch_app(APP_TRIES)).contains("served across updates"));
    // Not tried again: another check neither downloads nor reboots.
    let before = boot_state(vm);
    check(vm, "keelson-agent check");
    let s = status(vm);
    assert_eq!(s["running_version"], "0.2.0", "{s:#}");
    assert_eq!(boot_state(vm), before, "v3 was tried again");
    // The server saw the rollback and halted the group's rollout of v3.
    let i = server.wait_instance("on 0.2.0 after the rollback", SERVER_WAIT, |i| {
        i["version"] == "0.2.0"
    });
    let id = i["id"].as_i64().unwrap().to_string();
    poll_until(
        "the rollback in the instance history",
        SERVER_WAIT,
        POLL,
        || {
            let shown = server.admin_json(&["instance", "show", &id]);
            Some(())
                .filter(|_| shown.to_string().contains("rollback"))
                .ok_or(shown)
        },
    );
    poll_until(
        "the reboot slot given back after the rollback",
        SERVER_WAIT,
        POLL,
        || {
            let held = server.holders();
            Some(()).filter(|_| held.is_empty()).ok_or(held)
        },
    );
    let g = server.group();
    assert_eq!(g["policy"]["halted_version"], "0.3.0", "{g:#}");
    assert!(g["rollout"]["failed"].as_i64().unwrap() >= 1, "{g:#}");
    say(
        "rollback: the server counted the failure and halted the group's rollout of v3; the \
         node does not try v3 again and gave its reboot slot back",
    );
}

/// Polls the app on the host's forwarded port every 200 ms until `stop`; (seconds since start,
/// answered) for each try.
fn poll_app(port: u16, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<(f64, bool)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let ok = (|| -> std::io::Result<bool> {
            let mut c = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1),
            )?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut buf = Vec::new();
            c.read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).contains("served across updates"))
        })()
        .unwrap_or(false);
        out.push((start.elapsed().as_secs_f64(), ok));
        std::thread::sleep(Duration::from_millis(200));
    }
    out
}

/// The longest time the app did not answer: from its last answer before the gap to its first
/// after it, in seconds.
fn longest_outage(samples: &[(f64, bool)]) -> f64 {
    let mut best = 0.0_f64;
    let mut last_ok: Option<f64> = None;
    let mut in_gap = false;
    for &(t, ok) in samples {
        if ok {
            if in_gap && let Some(l) = last_ok {
                best = best.max(t - l);
            }
            last_ok = Some(t);
            in_gap = false;
        } else if last_ok.is_some() {
            in_gap = true;
        }
    }
    best
}

#[test]
fn longest_outage_spans_from_last_to_next_answer() {
    let s = [
        (0.0, true),
        (1.0, true),
        (1.2, false),
        (5.0, false),
        (6.0, true),
        (7.0, false),
    ];
    assert!((longest_outage(&s) - 5.0).abs() < 1e-9);
    assert_eq!(longest_outage(&[(0.0, false), (1.0, true)]), 0.0);
}

/// (a) through the front door, and [7/12]'s VM test: v1 -> v2 by `keelson-agent update --now`
/// with the `fleetlock` strategy and the group's one reboot slot. The node reboots only holding
/// the slot (the server lists it as the holder through the reboot), boots v2, which is
/// blessed, and only then gives the slot back. The app's outage through the update is watched
/// from the host through a forwarded port and printed as `update_downtime_s=`.
///
/// `cargo xtask test` runs it in the stream beside the long update test. `cargo xtask bench
/// update` runs it with `KEELSON_BENCH_PLAIN_REBOOT=1`, which adds a plain reboot of the same
/// node afterwards (`plain_reboot_downtime_s=`), the downtime's peer.
/// The independent extension of [`extension_update_without_reboot`]: its own application.
const EXT_APP_ID: &str = "7d0c4b9e-3f5a-4c1d-9e2b-6a8f0d1c2b3a";

/// What says the container app was not restarted: the unit's main PID and start time, and the
/// container task's PID.
fn app_identity(vm: &mut Vm) -> String {
    check(
        vm,
        "systemctl show keelson-app.service -p MainPID -p ExecMainStartTimestampMonotonic; \
         ctr -n default task ls | grep keelson-app",
    )
}

/// (6b) An independent extension published on keelson-server (its own application, channel and
/// group: the OS's rollout machinery) is installed, then updated from 1.0 to 1.1, each time
/// downloaded, checked, linked in /var/lib/extensions and merged with `systemd-sysext
/// refresh`, without a reboot and without disturbing the running container; then a 1.2 that
/// systemd-sysext refuses (untrusted signature) is rolled back to 1.1 and reported.
#[test]
#[ignore = "needs built images, keelson-server and QEMU: run by `cargo xtask test`"]
fn extension_update_without_reboot() {
    let v1 = build_record("KEELSON_VM_BUILD");
    let bin = env_path("KEELSON_VM_BIN_DIR");
    let v1_image = PathBuf::from(v1["image"].as_str().unwrap());
    let scratch = tempfile::tempdir_in(v1_image.parent().unwrap()).unwrap();
    let work = scratch.path();
    let (key, cert) = common::openssl_cert(work, "keelson-test-ext");
    let greet = |version: &str| {
        common::script_sysext(
            work,
            ("greet", version),
            ("greet", &format!("#!/bin/sh\necho greet {version}\n")),
            (&key, &cert),
            &[],
        )
    };
    let (e10, e11) = (greet("1.0"), greet("1.1"));
    // 1.2 is signed with a key the node does not trust: systemd-sysext refuses it, and one
    // refused image fails the whole merge.
    let (other_key, other_cert) = common::openssl_cert(work, "keelson-test-untrusted");
    let e12 = common::script_sysext(
        work,
        ("greet", "1.2"),
        ("greet", "#!/bin/sh\necho greet 1.2\n"),
        (&other_key, &other_cert),
        &[],
    );
    let server = Server::fleet(&bin, work);
    server.open_app(EXT_APP_ID, "greet extension", &[]);
    let publish = |version: &str, raw: &Path| {
        server.admin_app(
            EXT_APP_ID,
            &[
                "package",
                "upload",
                "--version",
                version,
                raw.to_str().unwrap(),
            ],
        );
        server.admin_app(
            EXT_APP_ID,
            &["channel", "set", "stable", "--version", version],
        );
    };
    say(format!(
        "server: keelson-server at {}; the extension `greet` is its own application {EXT_APP_ID} \
         (channel stable, group stable), its packages the signed .raw images built with \
         `keelson sysext build`",
        server.base
    ));
    let t = Instant::now();
    let extras = Extras::extensions(
        &format!("[extensions.greet]\napp_id = \"{EXT_APP_ID}\"\n"),
        &cert,
    );
    let o = node(work, &v1_image, &server, None, &extras);
    let mut vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
    login(&mut vm, 0, "v1's first boot");
    assert!(check(&mut vm, &fetch_app(APP_TRIES)).contains("served across updates"));
    let boot_id = check(&mut vm, "cat /proc/sys/kernel/random/boot_id");
    let app = app_identity(&mut vm);
    say(format!(
        "node: v1 booted with [extensions.greet] app_id = {EXT_APP_ID} in \
         /etc/keelson/update.toml and the signing certificate in /etc/verity.d; the container \
         app runs ({:.0?})",
        t.elapsed()
    ));

    let ext_instance = |version: &str| {
        poll_until(
            &format!("the extension's instance on {version}"),
            SERVER_WAIT,
            POLL,
            || {
                let page: Value = serde_json::from_str(
                    &server.admin_app(EXT_APP_ID, &["instance", "list", "--json"]),
                )
                .unwrap();
                let i = page["instances"][0].clone();
                if i["version"] == version {
                    Ok(i)
                } else {
                    Err(i)
                }
            },
        )
    };
    for (version, raw) in [("1.0", &e10), ("1.1", &e11)] {
        let t = Instant::now();
        publish(version, raw);
        let out = check(&mut vm, "keelson-agent extensions check");
        assert!(
            out.contains(&format!(
                "greet (independent, app {EXT_APP_ID}): version {version}"
            )),
            "{out}"
        );
        assert_eq!(check(&mut vm, "greet").trim(), format!("greet {version}"));
        let st = check(&mut vm, "systemd-sysext status --no-pager");
        assert!(st.contains("greet"), "systemd-sysext status:\n{st}");
        assert_eq!(
            check(&mut vm, "readlink /var/lib/extensions/greet.raw").trim(),
            format!("../keelson/extensions/greet/greet_{version}.raw")
        );
        let s = status(&mut vm);
        let ext = &s["extensions"][0];
        assert_eq!(ext["version"], version, "{s:#}");
        assert!(ext["last_error"].is_null(), "{s:#}");
        ext_instance(version);
        assert_eq!(
            check(&mut vm, "cat /proc/sys/kernel/random/boot_id"),
            boot_id,
            "no reboot"
        );
        assert_eq!(
            app_identity(&mut vm),
            app,
            "the container app was not restarted"
        );
        assert!(check(&mut vm, &fetch_app(APP_TRIES)).contains("served across updates"));
        say(format!(
            "extension: greet {version} published; `keelson-agent extensions check` downloaded \
             and checked it, linked /var/lib/extensions/greet.raw and ran systemd-sysext \
             refresh: `greet` prints \"greet {version}\", the server shows the node on {version}, \
             same boot, same container ({:.0?})",
            t.elapsed()
        ));
    }
    let t = Instant::now();
    publish("1.2", &e12);
    check(&mut vm, "keelson-agent extensions check");
    assert_eq!(
        check(&mut vm, "greet").trim(),
        "greet 1.1",
        "1.1 merged again"
    );
    assert_eq!(
        check(&mut vm, "readlink /var/lib/extensions/greet.raw").trim(),
        "../keelson/extensions/greet/greet_1.1.raw"
    );
    let st = check(&mut vm, "systemd-sysext status --no-pager");
    assert!(st.contains("greet"), "systemd-sysext status:\n{st}");
    let s = status(&mut vm);
    let ext = &s["extensions"][0];
    assert_eq!(ext["version"], "1.1", "{s:#}");
    assert_eq!(ext["last_error"]["reason"], "sysext_refresh", "{s:#}");
    assert_eq!(ext["refused"], serde_json::json!(["1.2"]), "{s:#}");
    let failure = poll_until(
        "the extension's 3/0 on the server",
        SERVER_WAIT,
        POLL,
        || {
            let page: Value = serde_json::from_str(
                &server.admin_app(EXT_APP_ID, &["instance", "list", "--json"]),
            )
            .unwrap();
            let id = page["instances"][0]["id"].as_i64().unwrap().to_string();
            let d: Value =
                serde_json::from_str(&server.admin(&["instance", "show", &id, "--json"])).unwrap();
            let events = d["events"].as_array().cloned().unwrap_or_default();
            events
                .into_iter()
                .find(|e| e["event_result"] == 0 && e["reason"] == "sysext_refresh")
                .ok_or(d)
        },
    );
    assert_eq!(
        check(&mut vm, "cat /proc/sys/kernel/random/boot_id"),
        boot_id
    );
    assert_eq!(
        app_identity(&mut vm),
        app,
        "the container app was not restarted"
    );
    say(format!(
        "extension: greet 1.2, signed with a key the node does not trust, published: the \
         refresh with it failed, the agent linked 1.1 again and merged it (`greet` prints \
         \"greet 1.1\"), reported 3/0 (error code {}, reason sysext_refresh) and will not try \
         1.2 again until `keelson-agent reset` ({:.0?})",
        failure["error_code"],
        t.elapsed()
    ));
    hold(&server.look_here(
        &bin,
        EXT_APP_ID,
        "instance list",
        &[],
        "greet; systemd-sysext status; sudo keelson-agent extensions status",
    ));
    vm.kill();
}

#[test]
#[ignore = "needs built images, keelson-server and QEMU: run by `cargo xtask test`"]
fn fleetlock_update_blessed() {
    let v1 = build_record("KEELSON_VM_BUILD");
    let v2 = build_record("KEELSON_VM_V2_BUILD");
    let key = env_path("KEELSON_VM_UPDATE_KEYS").join("dev-update.key");
    let bin = env_path("KEELSON_VM_BIN_DIR");
    let v1_image = PathBuf::from(v1["image"].as_str().unwrap());
    let scratch = tempfile::tempdir_in(v1_image.parent().unwrap()).unwrap();
    let work = scratch.path();
    let p2 = payload(&bin, &v2, &key, &work.join("v2.payload"), &[]);
    // (6d) An OS-bound extension built for v2 (VERSION_ID=0.2.0), attached to v2's package:
    // the agent fetches it with the update and it is merged on v2's first boot.
    let v2_version = v2["version"].as_str().unwrap();
    let (ext_key, ext_cert) = common::openssl_cert(work, "keelson-test-ext");
    let notes = common::script_sysext(
        work,
        ("notes", v2_version),
        (
            "release-notes",
            &format!("#!/bin/sh\necho release notes of {v2_version}\n"),
        ),
        (&ext_key, &ext_cert),
        &["--os-bound", v2_version],
    );
    let server = Server::fleet(&bin, work);
    let app_port = free_port();
    say(format!(
        "server: keelson-server at {} with app, channel stable, group stable (rollout 100%, \
         one FleetLock reboot slot)",
        server.base
    ));
    let t = Instant::now();
    let extras = Extras::extensions("[extensions.notes]\nbound = \"os\"\n", &ext_cert);
    let o = node(work, &v1_image, &server, Some(app_port), &extras);
    let mut vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
    login(&mut vm, 0, "v1's first boot");
    assert!(check(&mut vm, &fetch_app(APP_TRIES)).contains("served across updates"));
    say(format!(
        "provisioning: the stock v1 image booted with its config (user keel and its SSH key, \
         the update settings, a health check) and runs the container app, answering on host \
         port {app_port} ({:.0?})",
        t.elapsed()
    ));

    // The outage of one reboot that `command` starts, until the app answers on `version`;
    // `rebooting` runs as soon as the console shows the reboot.
    let outage = |vm: &mut Vm, command: &str, version: &str, rebooting: &dyn Fn()| -> f64 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let stop = stop.clone();
            std::thread::spawn(move || poll_app(app_port, stop))
        };
        let from = vm.console_text().len();
        vm.send(&format!("{command}\n")).unwrap();
        let at = vm
            .wait_for_from("reboot: Restarting system", from, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{command}: no reboot: {e}"));
        rebooting();
        login(vm, at, &format!("the boot after {command}"));
        assert!(check(vm, "cat /usr/lib/os-release").contains(&format!("VERSION_ID={version}")));
        assert!(check(vm, &fetch_app(APP_TRIES)).contains("served across updates"));
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        longest_outage(&poller.join().unwrap())
    };
    assert_eq!(server.holders(), Vec::<String>::new());
    server.publish_with("0.2.0", &p2, &[("notes", &notes)]);
    say(
        "update: v2 published on channel stable, with the OS-bound extension `notes` built for \
         it attached to its package; on the node ([extensions.notes] bound = \"os\"): \
         keelson-agent update --now",
    );
    let t = Instant::now();
    let update = outage(&mut vm, "keelson-agent update --now", "0.2.0", &|| {
        // Rebooting: the slot is held, by this node alone.
        let held = server.holders();
        assert_eq!(held.len(), 1, "rebooted without the slot");
        say(format!(
            "update: v2 verified and staged in the inactive slot; the node took the group's \
             FleetLock slot ({}) and reboots ({:.0?})",
            held[0],
            t.elapsed()
        ));
    });
    let s = wait_status(&mut vm, "complete on 0.2.0", BOOT_TIMEOUT, |s| {
        s["state"] == "complete"
    });
    let entries = check(&mut vm, "ls /efi/EFI/Linux");
    assert!(
        entries.contains("keelson_0.2.0.efi"),
        "not blessed: {entries}\n{s:#}"
    );
    poll_until(
        "the reboot slot given back after the blessed boot",
        SERVER_WAIT,
        POLL,
        || {
            let held = server.holders();
            Some(()).filter(|_| held.is_empty()).ok_or(held)
        },
    );
    server.wait_instance("complete on 0.2.0", SERVER_WAIT, |i| {
        i["version"] == "0.2.0" && i["status"] == "complete"
    });
    say(format!(
        "update: v2 booted, passed its health checks and was blessed; the slot is free again \
         and the server shows the node complete on v2 (app down {update:.0} s, {:.0?} in all)",
        t.elapsed()
    ));
    println!("update_downtime_s={update:.1}");
    // (6d) The extension fetched with v2 was linked for v2 at boot and merged.
    assert_eq!(
        check(&mut vm, "release-notes").trim(),
        format!("release notes of {v2_version}")
    );
    let st = check(&mut vm, "systemd-sysext status --no-pager");
    assert!(st.contains("notes"), "systemd-sysext status:\n{st}");
    assert_eq!(
        check(&mut vm, "readlink /run/extensions/notes.raw").trim(),
        format!("../../var/lib/keelson/extensions/notes/os-{v2_version}.raw")
    );
    let ext = &s["extensions"][0];
    assert_eq!(
        (&ext["name"], &ext["version"]),
        (&Value::from("notes"), &Value::from(v2_version)),
        "{s:#}"
    );
    say(format!(
        "extension: on v2's first boot keelson-extensions-link.service linked \
         /run/extensions/notes.raw to the file fetched with the update, before systemd-sysext \
         merged it: `release-notes` prints \"release notes of {v2_version}\""
    ));
    // What README.md and docs/reboot.md show being typed on a node, on this node (the README's
    // node config is this one: the app unit, the fleetlock strategy). `update --now` is this
    // scenario's own step above; the extension commands need the README's `hello` extension
    // (vm_provision.rs merges one at provisioning and checks `systemd-sysext status`).
    let readme = doc_text("README.md");
    assert!(readme.contains("keelson-agent update --now"));
    for doc in [readme, doc_text("docs/reboot.md")] {
        for cmd in doc_node_commands(&doc) {
            if cmd == "keelson-agent update --now"
                || cmd == "hello"
                || cmd.starts_with("systemd-sysext")
            {
                continue;
            }
            check(&mut vm, &cmd);
        }
    }
    if std::env::var_os("KEELSON_BENCH_PLAIN_REBOOT").is_some() {
        let plain = outage(&mut vm, "systemctl reboot", "0.2.0", &|| {});
        println!("plain_reboot_downtime_s={plain:.1}");
    }
    // (b) a bad release, when given (CI and the demo): v3 carries its own build of the
    // node's OS-bound extension, as any release must (without it the agent refuses v3 with
    // extension_missing and nothing rolls back).
    if std::env::var_os("KEELSON_VM_V3_BUILD").is_some() {
        let v3 = build_record("KEELSON_VM_V3_BUILD");
        let v3_version = v3["version"].as_str().unwrap();
        let p3 = payload(&bin, &v3, &key, &work.join("v3.payload"), &[]);
        let notes3 = common::script_sysext(
            work,
            ("notes", v3_version),
            (
                "release-notes",
                &format!("#!/bin/sh\necho release notes of {v3_version}\n"),
            ),
            (&ext_key, &ext_cert),
            &["--os-bound", v3_version],
        );
        bad_release_rolls_back(&server, &mut vm, &p3, &[("notes", &notes3)]);
    }
    hold(&server.look_here(
        &bin,
        APP_ID,
        "group show stable",
        &[format!("the app: curl http://127.0.0.1:{app_port}/")],
        "sudo keelson-agent status",
    ));
    vm.kill();
}
