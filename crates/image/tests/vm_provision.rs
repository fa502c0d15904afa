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

use common::{build_record, check, data_url, env_path, host_run, keelson_bin, say, serve};

/// Generous: CI runs TCG on two shared cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const APP_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times the test polls the app from inside the guest, a second apart (bash's
/// /dev/tcp: the image has no HTTP client).
const APP_TRIES: u32 = 180;

fn image() -> PathBuf {
    PathBuf::from(build_record("KEELSON_VM_BUILD")["image"].as_str().unwrap())
}

/// The image build's installed package set (`keelson_<v>.packages`, next to the image).
fn base_packages() -> PathBuf {
    let rec = build_record("KEELSON_VM_BUILD");
    let image = PathBuf::from(rec["image"].as_str().unwrap());
    image.with_file_name(format!(
        "keelson_{}.packages",
        rec["version"].as_str().unwrap()
    ))
}

/// The image policy that refuses unsigned extensions (docs/sysext.md).
const SIGNED_ONLY: &str = "root=signed+absent:usr=signed+absent";
/// Where the node keeps the extensions that the test links in by hand (no search path).
const EXT_STASH: &str = "/var/lib/keelson-test/ext";

/// The extensions of the storage test, built on the host with `keelson sysext build` and
/// served to the node over HTTP: `jq` from trixie's jq package (the image has no jq), signed
/// with a key whose certificate the config installs in /etc/verity.d, enabled through the
/// YAML `extensions:` section; and four that systemd must refuse, stored on the node outside
/// every search path: `wrongid` (ID=fedora), `wronglevel` (SYSEXT_LEVEL=2.0), `badsig`
/// (signed with a key the node does not trust) and `unsigned` (refused only by a policy that
/// requires signatures).
struct Extensions {
    /// `keelson config translate` of the YAML `extensions:` section (Ignition JSON).
    translated: serde_json::Value,
    /// `storage.files` entries: the refused images under [`EXT_STASH`] and the certificate.
    files: Vec<serde_json::Value>,
    /// The sha256 of jq.raw.
    jq_sha256: String,
}

fn build_extensions(scratch: &Path) -> Extensions {
    let keelson = keelson_bin();
    let os_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os");
    let (trusted_key, trusted_cert) = common::openssl_cert(scratch, "keelson-test-trusted");
    let (other_key, other_cert) = common::openssl_cert(scratch, "keelson-test-untrusted");
    let sysext = |name: &str, extra: &[&std::ffi::OsStr]| -> (Vec<u8>, String) {
        let out = scratch.join(format!("{name}.raw"));
        let mut c = std::process::Command::new(&keelson);
        c.args(["sysext", "build", "--name", name, "--version", "1.7"])
            .arg("--os-dir")
            .arg(&os_dir)
            .arg("--out")
            .arg(&out)
            .args(extra);
        host_run(&mut c);
        let bytes = std::fs::read(&out).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        (bytes, sha)
    };
    let packages = base_packages();
    let (jq, jq_sha256) = sysext(
        "jq",
        &[
            "--deb".as_ref(),
            "jq".as_ref(),
            "--base-packages".as_ref(),
            packages.as_os_str(),
            "--key".as_ref(),
            trusted_key.as_os_str(),
            "--cert".as_ref(),
            trusted_cert.as_os_str(),
        ],
    );
    let jq_port = serve(jq);
    let yaml = format!(
        "variant: keelson\nversion: 1.0.0\nextensions:\n  - name: jq\n    version: \"1.7\"\n    source: http://10.0.2.2:{jq_port}/jq-1.7-x86-64.raw\n    sha256: {jq_sha256}\n"
    );
    let yaml_path = scratch.join("extensions.yaml");
    std::fs::write(&yaml_path, yaml).unwrap();
    let json = host_run(
        std::process::Command::new(&keelson)
            .args(["config", "translate", "--strict"])
            .arg(&yaml_path),
    );
    let translated: serde_json::Value = serde_json::from_str(&json).unwrap();

    let mut files = Vec::new();
    for (name, extra) in [
        ("wrongid", vec!["--id".as_ref(), "fedora".as_ref()]),
        (
            "wronglevel",
            vec!["--sysext-level".as_ref(), "2.0".as_ref()],
        ),
        ("unsigned", vec![]),
        (
            "badsig",
            vec![
                "--key".as_ref(),
                other_key.as_os_str(),
                "--cert".as_ref(),
                other_cert.as_os_str(),
            ],
        ),
    ] {
        let tree = scratch.join(format!("tree-{name}"));
        let bin = tree.join(format!("usr/bin/keelson-ext-{name}"));
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, format!("#!/bin/sh\necho keelson-ext-{name}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec!["--dir".as_ref(), tree.as_os_str()];
        args.extend(extra);
        let (bytes, sha) = sysext(name, &args);
        let port = serve(bytes);
        files.push(serde_json::json!({
            "path": format!("{EXT_STASH}/{name}.raw"),
            "contents": {
                "source": format!("http://10.0.2.2:{port}/{name}.raw"),
                "verification": {"hash": format!("sha256-{sha}")}
            }
        }));
    }
    let pem = std::fs::read_to_string(&trusted_cert).unwrap();
    files.push(serde_json::json!({
        "path": "/etc/verity.d/keelson-test.crt",
        "contents": {"source": data_url(&pem)}
    }));
    Extensions {
        translated,
        files,
        jq_sha256,
    }
}

/// `config` with the extensions' files, links and units added.
fn with_extensions(config: String, ext: &Extensions) -> String {
    let mut c: serde_json::Value = serde_json::from_str(&config).unwrap();
    for (section, key) in [
        ("storage", "files"),
        ("storage", "links"),
        ("systemd", "units"),
    ] {
        let add = ext.translated[section][key]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !add.is_empty(),
            "the translation has no {section}.{key}: {}",
            ext.translated
        );
        let list = c[section]
            .as_object_mut()
            .unwrap()
            .entry(key)
            .or_insert(serde_json::json!([]))
            .as_array_mut()
            .unwrap();
        list.extend(add);
    }
    c["storage"]["files"]
        .as_array_mut()
        .unwrap()
        .extend(ext.files.iter().cloned());
    c.to_string()
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
    say(format!(
        "provisioning: the stock image's first boot applied its config in the initrd (user \
         keel with its SSH key, files, the container app fetched over HTTP and checked by \
         sha256): the app answers {first_boot_s:.0} s after power-on"
    ));

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
    // systemd-stub handed the ESP's marker to the initrd (PID 1 keeps the ESP's credentials
    // in @encrypted), and the done stage removed it from the ESP.
    check(
        &mut vm,
        "test -e /run/credentials/@encrypted/keelson.first_boot",
    );
    // Nothing to format, assemble or open: the module loader stayed the initrd's.
    let modprobe = check(
        &mut vm,
        "journalctl -b --no-pager -o cat -u keelson-firstboot-modprobe.service",
    );
    assert!(
        modprobe.contains("unmet condition check ConditionPathExists=/run/keelson/storage")
            && !modprobe.contains("Finished"),
        "{modprobe}"
    );
    assert_ne!(
        check(
            &mut vm,
            "journalctl -b --no-pager -o cat -t keelson-firstboot | wc -l"
        )
        .trim(),
        "0"
    );
    assert_eq!(check(&mut vm, "ls -A /efi/loader/credentials").trim(), "");

    // Second boot: the marker is gone, so nothing is provisioned again.
    let _ = vm.run("sync");
    vm.kill();
    let mut vm = start(&disk, &config, false);
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
    // No stage started at all: PID 1 skipped their units by their conditions, since no
    // marker came through systemd-stub (the first boot logged from every stage).
    assert_eq!(
        check(
            &mut vm,
            "journalctl -b --no-pager -o cat -t keelson-firstboot | wc -l"
        )
        .trim(),
        "0"
    );
    say(format!(
        "provisioning: the second boot applied nothing again; the app answers {second_boot_s:.0} \
         s after power-on"
    ));
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
/// The same boot provisions system extensions and checks them ([`check_extensions`]).
/// One boot.
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn first_boot_partitions_formats_and_mounts_an_extra_disk() {
    let image = image();
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let config = scratch.path().join("storage.ign");
    let ext = build_extensions(scratch.path());
    std::fs::write(&config, with_extensions(storage_config(), &ext)).unwrap();
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

    check_extensions(&mut vm, &ext);
}

/// Run `cmd` on the guest with systemd's debug log (the reasons systemd-sysext gives for an
/// image it ignores or refuses are debug messages); the output and the exit status.
fn sysext_debug(vm: &mut Vm, cmd: &str) -> (String, i32) {
    let r = vm
        .run_with_timeout(
            &format!("SYSTEMD_LOG_LEVEL=debug timeout 300 {cmd} </dev/null 2>&1"),
            APP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    println!("--- {cmd} (exit {}):\n{}", r.status, r.output);
    (r.output, r.status)
}

/// #12 6a and 6c on the booted node: the jq extension (YAML `extensions:`) was downloaded in
/// the initrd, checked, linked and merged at boot; then extensions with the wrong ID, the
/// wrong SYSEXT_LEVEL and a bad signature are refused, each with systemd's reason, and an
/// unsigned one by the image policy that requires signatures.
fn check_extensions(vm: &mut Vm, ext: &Extensions) {
    // 6a: the package's binary runs and systemd-sysext lists the extension.
    assert_eq!(
        check(vm, "echo '{\"a\":[1,2,39]}' | jq -c '.a | add'").trim(),
        "42"
    );
    let which = check(vm, "command -v jq");
    assert_eq!(which.trim(), "/usr/bin/jq");
    let status = check(vm, "systemd-sysext status --no-pager");
    assert!(status.contains("jq"), "systemd-sysext status:\n{status}");
    assert_eq!(
        check(vm, "systemctl is-enabled systemd-sysext.service").trim(),
        "enabled"
    );
    assert_eq!(
        check(vm, "readlink /etc/extensions/jq.raw").trim(),
        "/opt/extensions/jq/jq-1.7.raw"
    );
    let got = check(vm, "sha256sum /opt/extensions/jq/jq-1.7.raw");
    assert!(got.starts_with(&ext.jq_sha256), "{got}");

    // 6c, ID and level: linked into /run/extensions, ignored by a refresh with the reason;
    // jq stays merged.
    check(
        vm,
        &format!(
            "mkdir -p /run/extensions && ln -s {EXT_STASH}/wrongid.raw {EXT_STASH}/wronglevel.raw /run/extensions/"
        ),
    );
    let (out, rc) = sysext_debug(vm, "systemd-sysext refresh");
    assert_eq!(rc, 0, "refresh: {out}");
    assert!(
        out.contains("Extension 'wrongid' is for OS 'fedora', but deployed on top of 'keelson'"),
        "no reason for wrongid: {out}"
    );
    assert!(
        out.contains(
            "Extension 'wronglevel' is for API level '2.0', but running on API level '1.0'"
        ),
        "no reason for wronglevel: {out}"
    );
    let status = check(vm, "systemd-sysext status --no-pager");
    assert!(
        status.contains("jq") && !status.contains("wrongid") && !status.contains("wronglevel"),
        "{status}"
    );
    check(
        vm,
        "test ! -e /usr/bin/keelson-ext-wrongid && test ! -e /usr/bin/keelson-ext-wronglevel && jq --version",
    );
    check(
        vm,
        "rm /run/extensions/wrongid.raw /run/extensions/wronglevel.raw",
    );

    // 6c, signature: badsig (signed with a key whose certificate is not in /etc/verity.d) is
    // refused under the policy that requires signatures, and under systemd 257's default
    // policy too: neither the kernel nor the userspace check accepts the signature, and the
    // whole refresh fails (jq stays merged from before: nothing was unmerged).
    let reasons = [
        "Userspace PKCS#7 validation failed: error:10800080:PKCS7 routines::signer certificate not found",
        "Activation of signed Verity volume worked neither via the kernel nor in userspace, can't activate.",
    ];
    check(
        vm,
        &format!("ln -s {EXT_STASH}/badsig.raw /run/extensions/"),
    );
    for policy in [format!(" --image-policy={SIGNED_ONLY}"), String::new()] {
        let (out, rc) = sysext_debug(vm, &format!("systemd-sysext refresh{policy}"));
        assert_ne!(rc, 0, "badsig was accepted with{policy:?}: {out}");
        for reason in reasons {
            assert!(out.contains(reason), "badsig, {reason:?} missing: {out}");
        }
        check(vm, "test ! -e /usr/bin/keelson-ext-badsig && jq --version");
    }
    check(vm, "rm /run/extensions/badsig.raw");

    // The policy's own part: jq (signed with the trusted key) merges under it, unsigned (no
    // signature partition) is refused with the reason, and merges without the policy.
    let (out, rc) = sysext_debug(
        vm,
        &format!("systemd-sysext refresh --image-policy={SIGNED_ONLY}"),
    );
    assert_eq!(rc, 0, "signed jq refused under {SIGNED_ONLY}: {out}");
    assert!(
        out.contains("Userspace PKCS#7 validation succeeded"),
        "{out}"
    );
    check(vm, "jq --version");
    check(
        vm,
        &format!("ln -s {EXT_STASH}/unsigned.raw /run/extensions/"),
    );
    let (out, rc) = sysext_debug(
        vm,
        &format!("systemd-sysext refresh --image-policy={SIGNED_ONLY}"),
    );
    assert_ne!(rc, 0, "unsigned was accepted under {SIGNED_ONLY}: {out}");
    for reason in [
        "Partition root discovered with policy 'verity' but 'signed+absent' was required, refusing.",
        "/run/extensions/unsigned.raw: Image does not match image policy.",
    ] {
        assert!(out.contains(reason), "unsigned, {reason:?} missing: {out}");
    }
    check(vm, "test ! -e /usr/bin/keelson-ext-unsigned");
    let (out, rc) = sysext_debug(vm, "systemd-sysext refresh");
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        check(vm, "keelson-ext-unsigned").trim(),
        "keelson-ext-unsigned"
    );
    check(
        vm,
        "rm /run/extensions/unsigned.raw && systemd-sysext refresh && jq --version && test ! -e /usr/bin/keelson-ext-unsigned",
    );
}
