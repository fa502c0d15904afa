//! Builds small extensions from a directory and checks them with keelson-sysext itself and with
//! the real peers that run on this host: `systemd-dissect` (systemd-container) and
//! `veritysetup verify` (cryptsetup-bin, userspace only: no device-mapper here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use keelson_sysext::check::{CheckOptions, check};
use keelson_sysext::ddi::{BuildSpec, DEFAULT_OS_ID, SigningKey, build_from_dir, sign_image};
use keelson_sysext::release::ReleaseFile;

fn spec(name: &str) -> BuildSpec {
    BuildSpec {
        name: name.into(),
        version: "1.0".into(),
        arch: "x86-64".into(),
        os_id: DEFAULT_OS_ID.into(),
        sysext_level: Some("1.0".into()),
        os_version: None,
        source_date_epoch: 1_735_689_600,
        signing: None,
    }
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    for (rel, body) in [
        (
            "usr/bin/hello-ext",
            "#!/bin/sh\necho hello from an extension\n",
        ),
        ("usr/share/hello-ext/data.txt", "some data\n"),
        ("opt/hello-ext/README", "opt content\n"),
    ] {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
    }
    // 600 KiB that lz4 cannot shrink, so that the file system spans many verity blocks.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let blob: Vec<u8> = (0..600 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(root.join("usr/share/hello-ext/blob"), blob).unwrap();
    root
}

fn host() -> ReleaseFile {
    ReleaseFile::parse(
        "ID=keelson\nVERSION_ID=0.1.0\nSYSEXT_LEVEL=1.0\n",
        Path::new("os-release"),
    )
    .unwrap()
}

fn opts() -> CheckOptions {
    CheckOptions {
        host: Some(host()),
        host_arch: "x86-64".into(),
        ..CheckOptions::default()
    }
}

/// An RSA key and self-signed certificate made with the openssl CLI.
fn keypair(dir: &Path, cn: &str) -> SigningKey {
    let key = dir.join(format!("{cn}.key"));
    let cert = dir.join(format!("{cn}.crt"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    SigningKey { key, cert }
}

#[test]
fn built_image_checks_and_is_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let a = d.path().join("hello-ext.raw");
    let out = build_from_dir(&spec("hello-ext"), &root, &a).unwrap();
    assert!(!out.signed);
    assert!(!out.reload_manager);
    assert!(
        out.extension_release
            .contains("ID=keelson\nSYSEXT_LEVEL=1.0\n")
    );

    // Same inputs, same bytes (a second build into another directory).
    let other = d.path().join("again");
    fs::create_dir(&other).unwrap();
    let b = other.join("hello-ext.raw");
    let out_b = build_from_dir(&spec("hello-ext"), &root, &b).unwrap();
    assert_eq!(out.sha256, out_b.sha256);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());

    let r = check(&a, &opts()).unwrap();
    assert!(r.ok, "{:?}", r.problems);
    assert!(r.verity_ok);
    assert_eq!(r.root_hash, out.root_hash);
    assert_eq!(r.layout.arch, "x86-64");
    assert_eq!(r.layout.signature, None);
    assert!(r.matching.as_ref().unwrap().matches);
    assert_eq!(r.release_files, ["extension-release.hello-ext"]);
}

#[test]
fn units_set_reload_manager() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let unit = root.join("usr/lib/systemd/system/hello-ext.service");
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    fs::write(&unit, "[Service]\nExecStart=/usr/bin/hello-ext\n").unwrap();
    let out = build_from_dir(&spec("hello-ext"), &root, &d.path().join("h.raw")).unwrap();
    assert!(out.reload_manager);
    assert!(
        out.extension_release
            .contains("EXTENSION_RELOAD_MANAGER=1\n")
    );
}

#[test]
fn content_outside_usr_and_opt_is_refused_with_the_paths() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    fs::create_dir_all(root.join("etc/hello")).unwrap();
    fs::write(root.join("etc/hello/conf"), "x").unwrap();
    fs::create_dir_all(root.join("var/lib")).unwrap();
    let out = d.path().join("bad.raw");
    let e = build_from_dir(&spec("bad"), &root, &out).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("/etc/hello/conf") && text.contains("/var/lib/"),
        "{text}"
    );
    assert!(!out.exists());
}

#[test]
fn mismatches_are_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let cases = [
        (
            BuildSpec {
                os_id: "flatcar".into(),
                ..spec("x")
            },
            "ID=flatcar",
        ),
        (
            BuildSpec {
                sysext_level: Some("2.0".into()),
                ..spec("x")
            },
            "SYSEXT_LEVEL=2.0",
        ),
        (
            BuildSpec {
                sysext_level: None,
                os_version: Some("0.0.9".into()),
                ..spec("x")
            },
            "VERSION_ID=0.0.9",
        ),
        (
            BuildSpec {
                arch: "arm64".into(),
                ..spec("x")
            },
            "ARCHITECTURE=arm64",
        ),
    ];
    for (i, (s, needle)) in cases.into_iter().enumerate() {
        let img = d.path().join(format!("x{i}/x.raw"));
        fs::create_dir_all(img.parent().unwrap()).unwrap();
        build_from_dir(&s, &root, &img).unwrap();
        let r = check(&img, &opts()).unwrap();
        assert!(!r.ok, "{needle}");
        assert!(
            r.problems.iter().any(|p| p.contains(needle)),
            "{needle}: {:?}",
            r.problems
        );
    }
    // An OS-bound extension for this very version matches.
    let img = d.path().join("bound/x.raw");
    fs::create_dir_all(img.parent().unwrap()).unwrap();
    let s = BuildSpec {
        sysext_level: None,
        os_version: Some("0.1.0".into()),
        ..spec("x")
    };
    build_from_dir(&s, &root, &img).unwrap();
    assert!(check(&img, &opts()).unwrap().ok);
}

#[test]
fn the_installed_name_must_match_the_release_file() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let img = d.path().join("renamed.raw");
    build_from_dir(&spec("hello-ext"), &root, &img).unwrap();
    let r = check(&img, &opts()).unwrap();
    assert!(!r.ok);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("extension-release.renamed")),
        "{:?}",
        r.problems
    );
}

#[test]
fn signatures_are_required_and_checked() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let good = keypair(d.path(), "good");
    let other = keypair(d.path(), "other");
    let img = d.path().join("hello-ext.raw");
    let s = BuildSpec {
        signing: Some(good.clone()),
        ..spec("hello-ext")
    };
    let out = build_from_dir(&s, &root, &img).unwrap();
    assert!(out.signed);
    let with = |cert: &Path| CheckOptions {
        require_signature: true,
        cert: Some(cert.to_path_buf()),
        ..opts()
    };
    let r = check(&img, &with(&good.cert)).unwrap();
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!(r.signature.verified, Some(true));
    assert_eq!(r.layout.signature, Some(3));

    let r = check(&img, &with(&other.cert)).unwrap();
    assert!(!r.ok);
    assert!(
        r.problems.iter().any(|p| p.contains("does not verify")),
        "{:?}",
        r.problems
    );

    // Unsigned: refused when required, and `sign` adds the signature afterwards.
    let unsigned = d.path().join("u/hello-ext.raw");
    fs::create_dir_all(unsigned.parent().unwrap()).unwrap();
    let plain = build_from_dir(&spec("hello-ext"), &root, &unsigned).unwrap();
    let r = check(&unsigned, &with(&good.cert)).unwrap();
    assert!(!r.ok);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("no verity signature partition")),
        "{:?}",
        r.problems
    );
    sign_image(&unsigned, &good, &unsigned).unwrap();
    let r = check(&unsigned, &with(&good.cert)).unwrap();
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!(r.root_hash, plain.root_hash);
    // Signing with RSA is deterministic: signing afterwards gives the signed build's bytes.
    assert_eq!(fs::read(&unsigned).unwrap(), fs::read(&img).unwrap());
}

#[test]
fn corrupted_data_is_found_by_the_verity_check() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let img = d.path().join("hello-ext.raw");
    build_from_dir(&spec("hello-ext"), &root, &img).unwrap();
    // Flip a byte in the third block of the erofs partition (it starts at 1 MiB).
    let mut bytes = fs::read(&img).unwrap();
    bytes[(1 << 20) + 2 * 4096 + 7] ^= 0xff;
    fs::write(&img, bytes).unwrap();
    let r = check(&img, &opts()).unwrap();
    assert!(!r.verity_ok);
    assert!(!r.ok);
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("verity") && p.contains("data block 2")),
        "{:?}",
        r.problems
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn veritysetup_verifies_the_partitions() {
    assert!(
        have("veritysetup"),
        "veritysetup (cryptsetup-bin) is a host package of cargo xtask deps"
    );
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let img = d.path().join("hello-ext.raw");
    let out = build_from_dir(&spec("hello-ext"), &root, &img).unwrap();
    let disk = keelson_disk::Disk::open(&img).unwrap();
    let parts = disk.partitions();
    let data = d.path().join("data");
    let hash = d.path().join("hash");
    keelson_sysext::ddi::copy_partition(&img, &parts[0], &data, None).unwrap();
    keelson_sysext::ddi::copy_partition(&img, &parts[1], &hash, None).unwrap();
    let o = Command::new("veritysetup")
        .arg("verify")
        .arg(&data)
        .arg(&hash)
        .arg(&out.root_hash)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut wrong = out.root_hash.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let o = Command::new("veritysetup")
        .arg("verify")
        .arg(&data)
        .arg(&hash)
        .arg(String::from_utf8(wrong).unwrap())
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "veritysetup accepted a wrong root hash"
    );
}

#[test]
fn file_times_and_owners_of_the_input_do_not_matter() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let copy = d.path().join("copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(copy.join("usr/bin/hello-ext"))
        .arg(copy.join("opt"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("chown")
        .args(["-R", "12345:12345"])
        .arg(copy.join("opt"))
        .status()
        .unwrap();
    assert!(st.success());
    let a = build_from_dir(&spec("hello-ext"), &root, &d.path().join("a.raw")).unwrap();
    let b = build_from_dir(&spec("hello-ext"), &copy, &d.path().join("b.raw")).unwrap();
    assert_eq!(a.sha256, b.sha256);
}

/// `systemd-dissect --json=short` of an image: the JSON object.
fn dissect(img: &Path) -> serde_json::Value {
    assert!(
        have("systemd-dissect"),
        "systemd-dissect (package systemd-container) is a host package of cargo xtask deps"
    );
    let o = Command::new("systemd-dissect")
        .arg("--json=short")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "systemd-dissect {}: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn systemd_dissect_sees_a_system_extension() {
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let img = d.path().join("hello-ext.raw");
    let out = build_from_dir(&spec("hello-ext"), &root, &img).unwrap();
    let j = dissect(&img);
    assert_eq!(j["useSystemExtension"], true, "{j}");
    let rel: Vec<&str> = j["extensionRelease"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        rel.contains(&"ID=keelson") && rel.contains(&"SYSEXT_LEVEL=1.0"),
        "{j}"
    );
    let mounts = j["mounts"].as_array().unwrap();
    let root_mount = mounts.iter().find(|m| m["designator"] == "root").unwrap();
    assert_eq!(root_mount["fstype"], "erofs");
    assert_eq!(root_mount["architecture"], "x86-64");
    assert_eq!(
        root_mount["partition_uuid"]
            .as_str()
            .unwrap()
            .replace('-', ""),
        out.root_hash[..32]
    );
    assert!(
        mounts.iter().any(|m| m["designator"] == "root-verity"),
        "{j}"
    );

    // Signed: systemd reads the signature partition and takes the root hash from it.
    let keys = keypair(d.path(), "k");
    let signed = d.path().join("s/hello-ext.raw");
    fs::create_dir_all(signed.parent().unwrap()).unwrap();
    sign_image(&img, &keys, &signed).unwrap();
    let j = dissect(&signed);
    let mounts = j["mounts"].as_array().unwrap();
    let root_mount = mounts.iter().find(|m| m["designator"] == "root").unwrap();
    assert_eq!(root_mount["verity"], "signed", "{j}");
    let sig = mounts
        .iter()
        .find(|m| m["designator"] == "root-verity-sig")
        .unwrap();
    assert_eq!(sig["fstype"], "verity_hash_signature", "{j}");
}

#[test]
fn publish_writes_versions_sums_and_a_transfer() {
    use keelson_sysext::publish::{PublishOptions, publish};
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let mut images = Vec::new();
    for v in ["1.0", "1.1"] {
        let img = d.path().join(format!("{v}/hello-ext.raw"));
        fs::create_dir_all(img.parent().unwrap()).unwrap();
        build_from_dir(
            &BuildSpec {
                version: v.into(),
                ..spec("hello-ext")
            },
            &root,
            &img,
        )
        .unwrap();
        images.push(img);
    }
    let out = d.path().join("pub");
    let mut o = PublishOptions::new(&out);
    o.url = Some("http://updates.example/ext".into());
    let p = publish(&images[..1], &o).unwrap();
    assert_eq!(p[0].path, out.join("hello-ext-1.0-x86-64.raw"));
    // A later publish adds its version; SHA256SUMS covers both.
    publish(&images[1..], &o).unwrap();
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    let st = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    let t = fs::read_to_string(out.join("hello-ext.transfer")).unwrap();
    assert!(t.contains("MatchPattern=hello-ext-@v-x86-64.raw"), "{t}");
    assert!(
        t.contains("CurrentSymlink=/var/lib/extensions/hello-ext.raw"),
        "{t}"
    );
    // The published file is the image, byte for byte, and still checks under its link name.
    assert_eq!(fs::read(&p[0].path).unwrap(), fs::read(&images[0]).unwrap());
}

/// The extension-release example of docs/sysext.md is what the documented build writes.
#[test]
fn docs_example_is_what_the_build_writes() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sysext.md"))
            .unwrap();
    let start = doc.find("```text extension-release.hello\n").unwrap();
    let body = &doc[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let body = &body[..body.find("```").unwrap()];
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let out = build_from_dir(&spec("hello"), &root, &d.path().join("hello.raw")).unwrap();
    assert_eq!(out.extension_release, body);
    // And the defaults it names are the OS definition's.
    let os =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os/os.yaml")).unwrap();
    assert!(os.contains("\nname: keelson\n") && os.contains("\nsysext_level: \"1.0\"\n"));
}

/// The transfer file of docs/sysext.md is what `publish --url` writes (without its comments).
#[test]
fn docs_transfer_is_what_publish_writes() {
    use keelson_sysext::publish::{PublishOptions, transfer_file};
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sysext.md"))
            .unwrap();
    let start = doc.find("```ini\n[Transfer]").unwrap() + "```ini\n".len();
    let body = &doc[start..];
    let body = &body[..body.find("```").unwrap()];
    let mut o = PublishOptions::new("/srv/ext");
    o.url = Some("https://updates.example/ext".into());
    let written: String = transfer_file("jq", "x86-64", &o)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(written, body);
}

/// trixie's systemd-sysupdate (257) takes a published directory: it installs the newest
/// version under the target path and points the symlink at it, then moves on to a newer one
/// and keeps the older. bookworm has no systemd-sysupdate, so the test runs trixie's binary
/// with trixie's libraries through their dynamic loader: `KEELSON_TRIXIE_ROOT` is a trixie
/// root file system (the image build's cached root in `~/.cache/keelson/rootfs/<key>` will
/// do), `KEELSON_SYSUPDATE` the `usr/lib/systemd/systemd-sysupdate` unpacked from trixie's
/// systemd-container .deb. It runs in a private mount namespace with a temporary directory
/// bound over /var/lib (root and unshare needed): with `--root=` instead, 257 follows the
/// CurrentSymlink and replaces the previous version's file with a symlink.
#[test]
#[ignore = "needs trixie's systemd-sysupdate: set KEELSON_SYSUPDATE and KEELSON_TRIXIE_ROOT"]
fn trixie_sysupdate_installs_published_versions() {
    use keelson_sysext::publish::{PublishOptions, publish};
    let trixie = PathBuf::from(std::env::var("KEELSON_TRIXIE_ROOT").expect("KEELSON_TRIXIE_ROOT"));
    let sysupdate = PathBuf::from(std::env::var("KEELSON_SYSUPDATE").expect("KEELSON_SYSUPDATE"));
    let d = tempfile::tempdir().unwrap();
    let root = tree(d.path());
    let var_lib = d.path().join("var-lib");
    let defs = d.path().join("sysupdate.d");
    fs::create_dir_all(&var_lib).unwrap();
    fs::create_dir_all(&defs).unwrap();
    let served = d.path().join("srv/ext");
    let run = || {
        let script = format!(
            "set -e; mount --bind '{var_lib}' /var/lib; \
             mkdir -p /var/lib/extensions /var/lib/extensions.d; \
             exec '{loader}' --library-path '{t}/usr/lib/x86_64-linux-gnu:{t}/usr/lib/x86_64-linux-gnu/systemd' \
             '{sysupdate}' --definitions='{defs}' update",
            var_lib = var_lib.display(),
            loader = trixie.join("usr/lib64/ld-linux-x86-64.so.2").display(),
            t = trixie.display(),
            sysupdate = sysupdate.display(),
            defs = defs.display(),
        );
        let o = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "systemd-sysupdate update: {text}");
        text
    };
    for v in ["1.0", "1.1"] {
        let img = d.path().join(format!("{v}/hello-ext.raw"));
        fs::create_dir_all(img.parent().unwrap()).unwrap();
        build_from_dir(
            &BuildSpec {
                version: v.into(),
                ..spec("hello-ext")
            },
            &root,
            &img,
        )
        .unwrap();
        publish(&[img], &PublishOptions::new(&served)).unwrap();
        fs::copy(
            served.join("hello-ext.transfer"),
            defs.join("hello-ext.transfer"),
        )
        .unwrap();
        let out = run();
        assert!(out.contains(&format!("installed update '{v}'")), "{out}");
        let link = fs::read_link(var_lib.join("extensions/hello-ext.raw")).unwrap();
        assert_eq!(
            link,
            Path::new(&format!("../extensions.d/hello-ext-{v}-x86-64.raw")),
            "{out}"
        );
    }
    // Both versions are kept as files (InstancesMax=2), byte for byte what was published.
    for v in ["1.0", "1.1"] {
        let name = format!("hello-ext-{v}-x86-64.raw");
        let installed = var_lib.join("extensions.d").join(&name);
        assert!(
            fs::symlink_metadata(&installed).unwrap().is_file(),
            "{name}"
        );
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(served.join(&name)).unwrap()
        );
    }
    let out = run();
    assert!(out.contains("No update needed"), "{out}");
}
