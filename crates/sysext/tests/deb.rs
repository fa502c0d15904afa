//! Debian packages as extension content: unpacking (with .debs made here by dpkg-deb) and,
//! with network access to deb.debian.org, resolving and fetching from the real archive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use keelson_sysext::check::{CheckOptions, check};
use keelson_sysext::ddi::{BuildSpec, DEFAULT_OS_ID, build_from_dir};
use keelson_sysext::deb::{self, AptSource, BasePackages, Fetched};
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

/// A .deb named `name` holding `files` (relative paths), built with dpkg-deb.
fn make_deb(dir: &Path, name: &str, files: &[&str]) -> Fetched {
    let pkg = dir.join(format!("{name}-pkg"));
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test\n"
        ),
    )
    .unwrap();
    for f in files {
        let p = pkg.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("{f}\n")).unwrap();
    }
    let deb = dir.join(format!("{name}_1.0_amd64.deb"));
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Fetched {
        name: name.into(),
        version: "1.0".into(),
        path: deb,
    }
}

#[test]
fn unpacking_folds_merged_usr_aliases_into_usr() {
    let d = tempfile::tempdir().unwrap();
    let a = make_deb(
        d.path(),
        "tool-a",
        &[
            "bin/tool-a",
            "lib/x86_64-linux-gnu/liba.so",
            "usr/share/doc/tool-a/copyright",
        ],
    );
    let b = make_deb(d.path(), "tool-b", &["usr/bin/tool-b", "opt/tool-b/data"]);
    let root = d.path().join("root");
    deb::unpack(&[a, b], &root).unwrap();
    for f in [
        "usr/bin/tool-a",
        "usr/lib/x86_64-linux-gnu/liba.so",
        "usr/bin/tool-b",
        "opt/tool-b/data",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    assert!(!root.join("bin").exists() && !root.join("lib").exists());
    let img = d.path().join("tools.raw");
    build_from_dir(&spec("tools"), &root, &img).unwrap();
}

#[test]
fn packages_with_etc_or_var_are_refused_with_their_paths() {
    let d = tempfile::tempdir().unwrap();
    let a = make_deb(
        d.path(),
        "daemon",
        &[
            "usr/sbin/daemond",
            "etc/daemon.conf",
            "var/lib/daemon/state",
        ],
    );
    let root = d.path().join("root");
    deb::unpack(&[a], &root).unwrap();
    let e = build_from_dir(&spec("daemon"), &root, &d.path().join("daemon.raw")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("/etc/daemon.conf") && text.contains("/var/lib/daemon/state"),
        "{text}"
    );
}

fn trixie() -> AptSource {
    AptSource {
        suite: "trixie".into(),
        mirror: "http://deb.debian.org/debian".into(),
        components: vec!["main".into()],
        arch: "amd64".into(),
        keyring: PathBuf::from(deb::DEFAULT_KEYRING),
    }
}

/// jq's closure in trixie is jq, libjq1 and libonig5 on top of libc6: a base image that has
/// libc6 (and what it needs) gets exactly those three into the extension.
#[test]
#[ignore = "needs network access to deb.debian.org (run with --ignored)"]
fn jq_from_the_archive_brings_only_what_the_base_lacks() {
    let d = tempfile::tempdir().unwrap();
    let base = BasePackages::parse(
        "installed\tlibc6\t2.41-12\tamd64\tsame\t\n\
         installed\tlibgcc-s1\t14.2.0-19\tamd64\tsame\t\n\
         installed\tgcc-14-base\t14.2.0-19\tamd64\tsame\t\n",
        Path::new("base.packages"),
        "amd64",
    )
    .unwrap();
    let cache = d.path().join("cache");
    let work = d.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let fetched = deb::fetch(&["jq".to_string()], &base, &trixie(), &cache, &work).unwrap();
    let names: Vec<&str> = fetched.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["jq", "libjq1", "libonig5"]);
    let root = d.path().join("root");
    deb::unpack(&fetched, &root).unwrap();
    assert!(root.join("usr/bin/jq").is_file());
    let img = d.path().join("jq.raw");
    let a = build_from_dir(&spec("jq"), &root, &img).unwrap();
    let host = ReleaseFile::parse(
        "ID=keelson\nSYSEXT_LEVEL=1.0\nVERSION_ID=0.1.0\n",
        Path::new("h"),
    )
    .unwrap();
    let r = check(
        &img,
        &CheckOptions {
            host: Some(host),
            host_arch: "x86-64".into(),
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.problems);

    // The same packages again (the apt lists now come from the cache): the same bytes.
    let work2 = d.path().join("work2");
    fs::create_dir_all(&work2).unwrap();
    let again = deb::fetch(&["jq".to_string()], &base, &trixie(), &cache, &work2).unwrap();
    let root2 = d.path().join("root2");
    deb::unpack(&again, &root2).unwrap();
    let b = build_from_dir(&spec("jq"), &root2, &d.path().join("jq2.raw")).unwrap();
    assert_eq!(a.sha256, b.sha256);

    // A base that already has everything: nothing to build, and the reason says so.
    let full = BasePackages::parse(
        "installed\tjq\t9:9\tamd64\t\t\ninstalled\tlibc6\t2.41-12\tamd64\tsame\t\n",
        Path::new("full.packages"),
        "amd64",
    )
    .unwrap();
    let work3 = d.path().join("work3");
    fs::create_dir_all(&work3).unwrap();
    let e = deb::fetch(&["jq".to_string()], &full, &trixie(), &cache, &work3).unwrap_err();
    assert!(e.to_string().contains("already has"), "{e}");
}
