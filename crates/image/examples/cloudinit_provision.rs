//! Boot a stock Debian disk with cloud-init once under QEMU with the VM tests' harness and
//! provision it from NoCloud over HTTP with the cloud-config equivalent of the Keelson config
//! of `first_boot_provisions_user_files_and_app` (crates/image/tests/vm_provision.rs): the same
//! user and SSH key, the same files, the app's OCI archive fetched over HTTP and checked by
//! sha256, and the same app unit enabled and started. Prints `bench: cloudinit_app_s X`, the
//! seconds from QEMU start to the app answering (taken the same way as the VM test: after the
//! autologin, polling the app once a second from inside the guest), then checks in the guest
//! that everything was provisioned and exits non-zero if not. Used by
//! `cargo xtask bench provision`.
//!
//! Usage: `cloudinit_provision IMAGE BUSYBOX`
//!
//! The guest finds the seed through the SMBIOS system serial
//! `ds=nocloud;s=http://10.0.2.2:PORT/` (`VmOptions::system_serial`), PORT being the seed
//! server this example starts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use app::{APP_UNIT, SSH_KEY};
use keelson_image::qemu::{Vm, VmOptions};
use sha2::{Digest, Sha256};

/// The app and its unit, shared with the VM test so that both bench columns run the same app.
#[path = "../tests/app/mod.rs"]
mod app;

type Error = Box<dyn std::error::Error>;

/// cloud-init under TCG is slow: Python starts four times.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const APP_TIMEOUT: Duration = Duration::from_secs(900);

/// NoCloud network-config (version 2): DHCP on the virtio NIC.
const NETWORK_CONFIG: &str =
    "version: 2\nethernets:\n  nic:\n    match:\n      name: \"en*\"\n    dhcp4: true\n";

const MOTD: &str = "provisioned by keelson-firstboot\n";

/// The VM test's poll of the app, given more tries: cloud-init's final stage starts the app
/// well after the login prompt.
const APP_TRIES: u32 = 900;

/// Serve fixed bodies by path on the host's loopback (the guest reaches it as 10.0.2.2); 404
/// for anything else. Logs each request to stderr, so a run shows what cloud-init asked for.
fn serve(listener: TcpListener, routes: BTreeMap<String, Vec<u8>>) {
    let routes = Arc::new(routes);
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let routes = Arc::clone(&routes);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                let line = head.lines().next().unwrap_or_default().to_string();
                let path = line.split(' ').nth(1).unwrap_or_default();
                // cloud-init may add a query string or repeat the slash.
                let path = path.split('?').next().unwrap_or_default();
                let key = path.trim_start_matches('/');
                let (status, body) = match routes.get(key) {
                    Some(b) => ("200 OK", b.as_slice()),
                    None => ("404 Not Found", &b""[..]),
                };
                eprintln!(
                    "http server +{:.1}s: {line} -> {status}",
                    started.elapsed().as_secs_f64()
                );
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            });
        }
    });
}

/// The app's OCI archive, built exactly as the VM test builds it.
/// The cloud-config equivalent of the VM test's Keelson config. All or nothing where
/// cloud-init lets us: the archive goes to a temporary name, is checked, then renamed, and the
/// app is enabled only after that (`set -e` in runcmd).
fn cloud_config(archive_url: &str, archive_sha256: &str, page: &str) -> Result<String, Error> {
    let archive = "/var/lib/keelson-app/app.oci.tar";
    let runcmd = [
        "set -e".to_string(),
        "install -d -m 0700 /var/lib/keelson-test/empty".to_string(),
        "install -d -m 0755 /var/lib/keelson-app".to_string(),
        format!("curl -fsS --retry 5 -o {archive}.part {archive_url}"),
        format!("echo '{archive_sha256}  {archive}.part' | sha256sum -c -"),
        format!("chmod 0600 {archive}.part"),
        format!("mv {archive}.part {archive}"),
        "systemctl daemon-reload".to_string(),
        // --no-block: runcmd runs inside cloud-final.service; do not wait on a start job there.
        "systemctl enable --now --no-block keelson-app.service".to_string(),
    ];
    let config = serde_json::json!({
        "users": [{
            "name": "keel",
            "groups": ["sudo"],
            "shell": "/bin/bash",
            "ssh_authorized_keys": [SSH_KEY]
        }],
        "write_files": [
            {"path": "/srv/www/index.html", "content": page},
            // Deferred to the final stage: the owner is created by users-groups, which runs
            // after write_files.
            {"path": "/etc/keelson-test/motd", "content": MOTD, "permissions": "0640",
             "owner": "keel:root", "defer": true},
            {"path": "/etc/systemd/system/keelson-app.service", "content": APP_UNIT}
        ],
        "runcmd": runcmd,
    });
    let yaml = serde_yaml_ng::to_string(&config)?;
    Ok(format!("#cloud-config\n{yaml}"))
}

fn check(vm: &mut Vm, cmd: &str) -> Result<String, Error> {
    Ok(vm.check(cmd)?)
}

fn ensure(ok: bool, what: &str, got: &str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(format!("not provisioned: {what}; the guest says: {got}").into())
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudinit_provision: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: cloudinit_provision IMAGE BUSYBOX";
    let image = args.next().ok_or(usage)?;
    let busybox_path = args.next().ok_or(usage)?;
    let busybox =
        std::fs::read(&busybox_path).map_err(|e| format!("reading {busybox_path}: {e}"))?;
    let scratch = tempfile::tempdir()?;
    let archive = app::app_archive(&busybox, scratch.path())?;
    let sha = hex::encode(Sha256::digest(&archive));
    let page = format!("keelson-app-ok-{}", std::process::id());

    // The archive on its own server, as in the VM test.
    let archive_listener = TcpListener::bind("127.0.0.1:0")?;
    let archive_port = archive_listener.local_addr()?.port();
    serve(
        archive_listener,
        BTreeMap::from([("app.oci.tar".to_string(), archive)]),
    );
    let url = format!("http://10.0.2.2:{archive_port}/app.oci.tar");
    let user_data = cloud_config(&url, &sha, &page)?;
    let instance = format!("keelson-bench-{}", std::process::id());
    let meta_data = format!("instance-id: {instance}\nlocal-hostname: debian\n");
    let seed_listener = TcpListener::bind("127.0.0.1:0")?;
    let seed_port = seed_listener.local_addr()?.port();
    serve(
        seed_listener,
        BTreeMap::from([
            ("meta-data".to_string(), meta_data.into_bytes()),
            ("user-data".to_string(), user_data.into_bytes()),
            ("vendor-data".to_string(), b"#cloud-config\n{}\n".to_vec()),
            // Asked for too; a 404 costs ten retries a second apart. DHCP on the NIC, which is
            // also what Keelson does without a network section in its config.
            (
                "network-config".to_string(),
                NETWORK_CONFIG.as_bytes().to_vec(),
            ),
        ]),
    );

    let mut o = VmOptions::new(&image);
    // Every run is the disk's first boot.
    o.snapshot = true;
    o.system_serial = Some(format!("ds=nocloud;s=http://10.0.2.2:{seed_port}/"));
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    let mut vm = Vm::start(&o)?;
    vm.login(BOOT_TIMEOUT)?;
    let r = vm.run_with_timeout(&app::fetch_app(APP_TRIES), APP_TIMEOUT)?;
    let app_s = vm.elapsed().as_secs_f64();
    if !(r.output.contains("200 OK") && r.output.contains(&page)) {
        let status = vm
            .run("cloud-init status --long 2>&1; systemctl status --no-pager keelson-app.service 2>&1 | tail -20; tail -30 /var/log/cloud-init-output.log; true")
            .map(|o| o.output)
            .unwrap_or_default();
        return Err(format!(
            "the app did not answer with the page within {APP_TIMEOUT:?}: {}\n{status}",
            r.output
        )
        .into());
    }

    // What cloud-init did, checked like the VM test checks Keelson's first boot.
    let st = vm.run_with_timeout("cloud-init status --wait --long", BOOT_TIMEOUT)?;
    ensure(
        st.output.contains("status: done"),
        "cloud-init status done",
        &st.output,
    )?;
    let ds = check(
        &mut vm,
        "cloud-init query v1.platform; cloud-init query v1.subplatform",
    )?;
    ensure(
        ds.contains("nocloud") && ds.contains("10.0.2.2"),
        "the NoCloud seed came over HTTP",
        &ds,
    )?;
    let enabled = check(&mut vm, "systemctl is-enabled keelson-app.service")?;
    ensure(enabled.trim() == "enabled", "app unit enabled", &enabled)?;
    let id = check(&mut vm, "id keel")?;
    ensure(
        id.contains("uid=1000(keel)") && id.contains("(sudo)"),
        "user keel, uid 1000, in sudo",
        &id,
    )?;
    let keys = check(&mut vm, "cat /home/keel/.ssh/authorized_keys")?;
    ensure(keys.contains(SSH_KEY), "the SSH key", &keys)?;
    let k = check(&mut vm, "stat -c '%a %U' /home/keel/.ssh/authorized_keys")?;
    ensure(k.trim() == "600 keel", "authorized_keys 600 keel", &k)?;
    let m = check(&mut vm, "stat -c '%a %U:%G' /etc/keelson-test/motd")?;
    ensure(m.trim() == "640 keel:root", "motd 640 keel:root", &m)?;
    let m = check(&mut vm, "cat /etc/keelson-test/motd")?;
    ensure(m.trim() == MOTD.trim(), "motd content", &m)?;
    let d = check(&mut vm, "stat -c '%a' /var/lib/keelson-test/empty")?;
    ensure(d.trim() == "700", "directory 700", &d)?;
    let got = check(&mut vm, "sha256sum /var/lib/keelson-app/app.oci.tar")?;
    ensure(got.starts_with(&sha), "the archive with its sha256", &got)?;
    let images = check(&mut vm, "ctr -n default image ls -q")?;
    ensure(
        images.contains("docker.io/library/keelson-app:1"),
        "the image imported into containerd",
        &images,
    )?;
    let times = check(
        &mut vm,
        "cloud-init analyze show 2>/dev/null | tail -8; true",
    )?;
    eprintln!("cloud-init analyze show (tail):\n{times}");
    println!("bench: cloudinit_app_s {app_s:.1}");
    vm.kill();
    Ok(())
}
