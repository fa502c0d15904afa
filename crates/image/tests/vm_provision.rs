//! VM tests of first-boot provisioning (crates/firstboot, the dracut module
//! `98keelson-firstboot`, docs/first-boot.md): a config handed over through QEMU fw_cfg is
//! applied in the initrd on the first boot, all or nothing.
//!
//! Like `vm.rs` they need a built image and QEMU, so they are `#[ignore]`d and run by
//! `cargo xtask test`, which sets `KEELSON_VM_BUILD` (the build record, of an image built with
//! `KEELSON_FIRSTBOOT_BIN`) and `KEELSON_VM_BUSYBOX` (the container's one binary).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use app::{APP_UNIT, SSH_KEY, fetch_app};
use keelson_image::qemu::{Vm, VmOptions};
use sha2::{Digest, Sha256};

mod app;
mod common;

use common::{check, data_url, env_path, serve};

/// Generous: CI runs TCG on two shared cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const APP_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times the test polls the app from inside the guest, a second apart (bash's
/// /dev/tcp: the image has no HTTP client).
const APP_TRIES: u32 = 180;

fn image() -> PathBuf {
    let p = env_path("KEELSON_VM_BUILD");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
    PathBuf::from(rec["image"].as_str().unwrap())
}

/// The app's OCI archive: busybox httpd serving /www (bind-mounted from the host's /srv/www).
fn app_archive(dir: &Path) -> Vec<u8> {
    let busybox_path = env_path("KEELSON_VM_BUSYBOX");
    let busybox =
        std::fs::read(&busybox_path).unwrap_or_else(|e| panic!("{}: {e}", busybox_path.display()));
    app::app_archive(&busybox, dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The config of test (a): a user with an SSH key, files, and the app unit whose OCI archive
/// comes from `archive_url`, checked by sha256.
fn good_config(archive_url: &str, archive_sha256: &str, page: &str) -> String {
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "passwd": {"users": [{
            "name": "keel",
            "sshAuthorizedKeys": [SSH_KEY],
            "groups": ["sudo"]
        }]},
        "storage": {
            "files": [
                {
                    "path": "/var/lib/keelson-app/app.oci.tar",
                    "mode": 0o600,
                    "contents": {
                        "source": archive_url,
                        "verification": {"hash": format!("sha256-{archive_sha256}")}
                    }
                },
                {"path": "/srv/www/index.html", "contents": {"source": data_url(page)}},
                {
                    "path": "/etc/keelson-test/motd",
                    "mode": 0o640,
                    "user": {"name": "keel"},
                    "contents": {"source": data_url("provisioned by keelson-firstboot\n")}
                }
            ],
            "directories": [{"path": "/var/lib/keelson-test/empty", "mode": 0o700}]
        },
        // `enabled: true` alone must start the app: the files stage creates the unit's
        // [Install] links (systemd applies presets only on its own first boot).
        "systemd": {"units": [
            {"name": "keelson-app.service", "enabled": true, "contents": APP_UNIT}
        ]}
    })
    .to_string()
}

fn start(image: &Path, config: &Path, snapshot: bool) -> Vm {
    let mut o = VmOptions::new(image);
    o.snapshot = snapshot;
    o.config = Some(config.to_path_buf());
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    Vm::start(&o).unwrap_or_else(|e| panic!("{e}"))
}

/// (a) a first boot with a config from fw_cfg: the user with its SSH key, the files, and the
/// enabled app unit running a container whose archive was fetched over HTTP (in the initrd)
/// and checked by sha256; the test reaches the app. A second boot of the same disk does not
/// provision again.
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn first_boot_provisions_user_files_and_app() {
    let image = image();
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let archive = app_archive(scratch.path());
    let sha = hex::encode(Sha256::digest(&archive));
    let port = serve(archive);
    let page = format!("keelson-app-ok-{}", std::process::id());
    let config = scratch.path().join("config.ign");
    let url = format!("http://10.0.2.2:{port}/app.oci.tar");
    std::fs::write(&config, good_config(&url, &sha, &page)).unwrap();
    // The second boot needs the first one's writes: a private copy instead of snapshot=on.
    let disk = scratch.path().join("disk.img");
    let st = std::process::Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(&image)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success(), "copying {}", image.display());

    let mut vm = start(&disk, &config, false);
    vm.wait_for("Keelson first boot: done", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.login(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));

    // The app answers with the page the config wrote.
    let r = vm
        .run_with_timeout(&fetch_app(APP_TRIES), APP_TIMEOUT)
        .unwrap();
    let first_boot_s = vm.elapsed().as_secs_f64();
    assert!(
        r.output.contains("200 OK") && r.output.contains(&page),
        "app reply: {}\n{}",
        r.output,
        check(
            &mut vm,
            "systemctl status --no-pager keelson-app.service 2>&1 | tail -20; true"
        )
    );
    assert_eq!(
        check(&mut vm, "systemctl is-enabled keelson-app.service").trim(),
        "enabled"
    );

    // The user, its groups and its key.
    let id = check(&mut vm, "id keel");
    assert!(
        id.contains("uid=1000(keel)") && id.contains("(sudo)"),
        "{id}"
    );
    let keys = check(&mut vm, "cat /home/keel/.ssh/authorized_keys");
    assert!(keys.contains(SSH_KEY), "{keys}");
    assert_eq!(
        check(&mut vm, "stat -c '%a %U' /home/keel/.ssh/authorized_keys").trim(),
        "600 keel"
    );

    // The files and the directory, with their modes and owners.
    assert_eq!(
        check(&mut vm, "stat -c '%a %U:%G' /etc/keelson-test/motd").trim(),
        "640 keel:root"
    );
    assert_eq!(
        check(&mut vm, "cat /etc/keelson-test/motd").trim(),
        "provisioned by keelson-firstboot"
    );
    assert_eq!(
        check(&mut vm, "stat -c '%a' /var/lib/keelson-test/empty").trim(),
        "700"
    );
    let got = check(&mut vm, "sha256sum /var/lib/keelson-app/app.oci.tar");
    assert!(got.starts_with(&sha), "{got} vs {sha}");
    // The stages ran in the initrd (their journal entries were carried over).
    let log = check(
        &mut vm,
        "journalctl -b --no-pager -o cat -u keelson-firstboot-files.service | tail -40",
    );
    assert!(log.contains("/etc/keelson-test/motd"), "{log}");

    // Second boot: the marker is gone, so nothing is provisioned again.
    let _ = vm.run("sync");
    vm.kill();
    let mut vm = start(&disk, &config, false);
    vm.wait_for("not the first boot", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.login(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let r = vm
        .run_with_timeout(&fetch_app(APP_TRIES), APP_TIMEOUT)
        .unwrap();
    let second_boot_s = vm.elapsed().as_secs_f64();
    assert!(
        r.output.contains(&page),
        "app after the second boot: {}",
        r.output
    );
    let r = vm
        .run("journalctl -b --no-pager -o cat -u keelson-firstboot-files.service")
        .unwrap();
    assert!(
        !r.output.contains("/etc/keelson-test/motd"),
        "files stage ran again: {}",
        r.output
    );
    // Read by `cargo xtask bench provision`: power-on to the app answering, with and without
    // provisioning (same disk, same harness, one run).
    println!("bench: first_boot_app_s {first_boot_s:.1}");
    println!("bench: second_boot_app_s {second_boot_s:.1}");
}

/// (b) a config that fails in the files stage (a file owned by a user that does not exist) stops the
/// boot in emergency mode: the console names the stage, the config source and the reason, and
/// nothing of the real root starts (no switch-root, no multi-user.target, no login).
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn files_stage_failure_stops_in_emergency_mode() {
    let image = image();
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let config = scratch.path().join("bad.ign");
    let bad = serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "storage": {"files": [
            {"path": "/etc/keelson-test/ok", "contents": {"source": "data:,fine"}},
            // Fetched and verified fine; the owner does not exist in the real root, which
            // only the files stage can see. (A bad hash now fails the fetch stage.)
            {"path": "/etc/keelson-test/bad", "contents": {"source": "data:,fine"},
             "user": {"name": "nosuchuser"}}
        ]},
        "systemd": {"units": [{"name": "keelson-never.service", "enabled": true,
            "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"}]}
    });
    std::fs::write(&config, bad.to_string()).unwrap();
    let mut vm = start(&image, &config, true);
    let at = vm
        .wait_for(
            "keelson-firstboot: stage files failed (config from qemu",
            BOOT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // The emergency handler repeats the record and announces the reboot; read up to there.
    vm.wait_for_from("keelson-emergency: rebooting in", at, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let text = vm.console_text();
    let line = text[at..].lines().next().unwrap_or_default();
    assert!(
        line.contains("/etc/keelson-test/bad") && line.contains("nosuchuser"),
        "failure line: {line}"
    );
    let emergency = &text[at..];
    assert!(
        emergency.contains("keelson-firstboot-files.service"),
        "the failed unit is not listed: {emergency}"
    );
    for never in [
        "Switching root",
        "Reached target multi-user.target",
        "(automatic login)",
        "keelson-never",
    ] {
        assert!(
            !text.contains(never),
            "the real root started ({never:?} on the console)"
        );
    }
}

const LINUX_FS_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const BASIC_DATA_GUID: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

/// The disks stage config: a table on the extra disk (wiping the old one), ext4 mounted under
/// /sysroot by the mount stage with a file written inside it, a vfat partition, and the mount
/// unit that mounts the ext4 one again on the real root.
fn storage_config() -> String {
    serde_json::json!({
        "ignition": {"version": "3.4.0"},
        "storage": {
            "disks": [{
                "device": "/dev/vdb",
                "wipeTable": true,
                "partitions": [
                    {"number": 1, "label": "kdata", "sizeMiB": 64, "typeGuid": LINUX_FS_GUID},
                    {"number": 2, "label": "kscratch", "sizeMiB": 32, "typeGuid": BASIC_DATA_GUID},
                    {"number": 3, "label": "ksecret", "sizeMiB": 48}
                ]
            }],
            "raid": [{"name": "kraid", "level": "raid1", "devices": ["/dev/vdc", "/dev/vdd"]}],
            // A random key (kept in /etc/luks/ksecret on the root). PBKDF2 with few
            // iterations: argon2's default cost is minutes under TCG.
            "luks": [{"name": "ksecret", "device": "/dev/vdb3", "label": "KSECRET",
                      "options": ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]}],
            "filesystems": [
                {"device": "/dev/vdb1", "format": "ext4", "label": "kdata",
                 "path": "/var/lib/kdata"},
                {"device": "/dev/vdb2", "format": "vfat", "label": "KSCRATCH"},
                {"device": "/dev/md/kraid", "format": "ext4", "label": "kraid"},
                {"device": "/dev/mapper/ksecret", "format": "ext4", "label": "ksecret",
                 "path": "/var/lib/ksecret"}
            ],
            "files": [{"path": "/var/lib/kdata/hello",
                       "contents": {"source": data_url("written into the new ext4\n")}},
                      {"path": "/var/lib/ksecret/inside",
                       "contents": {"source": data_url("inside the LUKS volume\n")}}]
        },
        "systemd": {"units": [{
            "name": "var-lib-kdata.mount",
            "enabled": true,
            "contents": "[Unit]\nDescription=Keelson test data\n[Mount]\nWhat=/dev/disk/by-label/kdata\nWhere=/var/lib/kdata\nType=ext4\n[Install]\nWantedBy=multi-user.target\n"
        }, {
            "name": "var-lib-ksecret.mount",
            "enabled": true,
            "contents": "[Unit]\nDescription=Keelson test LUKS volume\n[Mount]\nWhat=/dev/mapper/ksecret\nWhere=/var/lib/ksecret\nType=ext4\n[Install]\nWantedBy=multi-user.target\n"
        }]}
    })
    .to_string()
}

/// (c) the disks and mount stages on an extra blank disk that held another partition table:
/// partitions with labels, sizes and type GUIDs, ext4 and vfat with labels, a file written
/// into the ext4 file system while the mount stage had it under /sysroot, and the config's
/// mount unit mounting it on the real root; RAID1 over two more disks with ext4 on it; LUKS
/// (random key) on a partition with ext4 inside, its key and crypttab line on the root.
/// One boot.
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn first_boot_partitions_formats_and_mounts_an_extra_disk() {
    let image = image();
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let config = scratch.path().join("storage.ign");
    std::fs::write(&config, storage_config()).unwrap();
    // A sparse disk with an old table the config must wipe (wipeTable: true).
    let extra = scratch.path().join("vdb.img");
    std::fs::File::create(&extra)
        .unwrap()
        .set_len(192 << 20)
        .unwrap();
    let st = std::process::Command::new("sgdisk")
        .args(["--new=1:0:+100M", "--change-name=1:old"])
        .arg(&extra)
        .output()
        .unwrap();
    assert!(st.status.success(), "sgdisk on {}: {st:?}", extra.display());

    let mut o = VmOptions::new(&image);
    o.snapshot = true;
    o.config = Some(config);
    o.writable_disks.push(extra);
    // vdc and vdd: the RAID1 members.
    for name in ["vdc", "vdd"] {
        let d = scratch.path().join(format!("{name}.img"));
        std::fs::File::create(&d)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        o.writable_disks.push(d);
    }
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    let mut vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("Keelson first boot: done", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(60)));
    vm.login(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let boot_s = vm.elapsed().as_secs_f64();

    // The partition table: labels, sizes, type GUIDs; the old partition is gone.
    let table = check(
        &mut vm,
        "lsblk -b -n -r -o NAME,PARTLABEL,SIZE,PARTTYPE /dev/vdb",
    );
    let rows: Vec<Vec<String>> = table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_lowercase).collect())
        .filter(|r: &Vec<String>| r.len() == 4)
        .collect();
    let want = [
        ["vdb1", "kdata", "67108864", &LINUX_FS_GUID.to_lowercase()],
        [
            "vdb2",
            "kscratch",
            "33554432",
            &BASIC_DATA_GUID.to_lowercase(),
        ],
        // No typeGuid in the config: Linux file system data, as in Ignition.
        ["vdb3", "ksecret", "50331648", &LINUX_FS_GUID.to_lowercase()],
    ];
    // Rows of four: the partitions (the opened LUKS mapping below vdb3 has no PARTLABEL).
    assert_eq!(rows.len(), 3, "partitions of /dev/vdb:\n{table}");
    for (row, w) in rows.iter().zip(want.iter()) {
        assert_eq!(row, &w.to_vec(), "partitions of /dev/vdb:\n{table}");
    }
    assert!(!table.contains("old"), "{table}");

    // The file systems, by probing the devices.
    for (dev, fs_type, label) in [
        ("/dev/vdb1", "ext4", "kdata"),
        ("/dev/vdb2", "vfat", "KSCRATCH"),
    ] {
        let probe = check(&mut vm, &format!("blkid -p -o export {dev}"));
        assert!(
            probe.contains(&format!("TYPE={fs_type}")) && probe.contains(&format!("LABEL={label}")),
            "{dev}: {probe}"
        );
    }

    // The config's mount unit mounts the new file system, and the file the files stage wrote
    // is inside it (not in the root's directory underneath).
    assert_eq!(
        check(&mut vm, "systemctl is-active var-lib-kdata.mount").trim(),
        "active"
    );
    let src = check(&mut vm, "findmnt -n -o SOURCE,FSTYPE /var/lib/kdata");
    assert!(src.contains("/dev/vdb1") && src.contains("ext4"), "{src}");
    assert_eq!(
        check(&mut vm, "cat /var/lib/kdata/hello").trim(),
        "written into the new ext4"
    );
    let under = check(
        &mut vm,
        "mkdir -p /tmp/rootonly && mount --bind / /tmp/rootonly && ls -A /tmp/rootonly/var/lib/kdata; umount /tmp/rootonly",
    );
    assert!(!under.contains("hello"), "the file is on the root: {under}");

    // RAID1 over vdc and vdd, ext4 on it.
    let md = check(&mut vm, "mdadm --detail /dev/md/kraid");
    assert!(
        md.contains("Raid Level : raid1")
            && md.contains("Raid Devices : 2")
            && md.contains("/dev/vdc")
            && md.contains("/dev/vdd"),
        "{md}"
    );
    let probe = check(&mut vm, "blkid -p -o export /dev/md/kraid");
    assert!(
        probe.contains("TYPE=ext4") && probe.contains("LABEL=kraid"),
        "{probe}"
    );

    // LUKS on vdb3 with ext4 inside, the file the files stage wrote into it, the key on
    // the root (0600) and a crypttab line naming it; the key opens the volume.
    let probe = check(&mut vm, "blkid -p -o export /dev/vdb3");
    assert!(
        probe.contains("TYPE=crypto_LUKS") && probe.contains("LABEL=KSECRET"),
        "{probe}"
    );
    let status = check(&mut vm, "cryptsetup status ksecret");
    assert!(
        status.contains("is active") && status.contains("/dev/vdb3"),
        "{status}"
    );
    assert_eq!(
        check(&mut vm, "stat -c '%a %U' /etc/luks/ksecret").trim(),
        "600 root"
    );
    let uuid = check(&mut vm, "cryptsetup luksUUID /dev/vdb3");
    let crypttab = check(&mut vm, "cat /etc/crypttab");
    assert!(
        crypttab.contains(&format!(
            "ksecret UUID={} /etc/luks/ksecret luks",
            uuid.trim()
        )),
        "{crypttab}"
    );
    check(
        &mut vm,
        "cryptsetup open --test-passphrase --key-file /etc/luks/ksecret /dev/vdb3",
    );
    assert_eq!(
        check(&mut vm, "systemctl is-active var-lib-ksecret.mount").trim(),
        "active"
    );
    assert_eq!(
        check(&mut vm, "cat /var/lib/ksecret/inside").trim(),
        "inside the LUKS volume"
    );
    // The done stage removed the stages' copies of the key and the resources from /run.
    check(
        &mut vm,
        "test ! -e /run/keelson/luks && test ! -e /run/keelson/resources",
    );
    println!("storage first boot to login: {boot_s:.1} s");
}
