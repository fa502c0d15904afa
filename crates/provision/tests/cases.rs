//! Conformance-style cases: `tests/cases/NAME/config.json` applied to a small base target
//! (plus the nodes of an optional `before.txt`) must give exactly the tree in `expected.txt`,
//! or, when that file starts with `error:`, fail with that text and leave the target as it
//! was. Every case is also run as a dry run first, which must change nothing.
//!
//! `KEELSON_BLESS=1 cargo test -p keelson-provision --test cases` rewrites `expected.txt`
//! from the actual result; review the diff before committing it.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use keelson_provision::engine::{apply_files, files::FilesOptions};
use keelson_provision::fetch::Fetcher;
use keelson_provision::http::{HttpClient, RetryPolicy};
use keelson_provision::target::TargetRoot;
use sha2::Digest as _;

const TODAY: u64 = 20000;

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// The base every case starts from: a tiny Flatcar-like /etc.
fn base(root: &Path) {
    let w = |p: &str, data: &str, mode: u32| {
        let path = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:Keelson Admin:/home/core:/bin/bash\n",
        0o644,
    );
    w(
        "/etc/shadow",
        "root:*:1::::::\ncore:*:1:0:99999:7:::\n",
        0o640,
    );
    w(
        "/etc/group",
        "root:x:0:\nwheel:x:10:root,core\nusers:x:100:\ndocker:x:233:core\ncore:x:500:\n",
        0o644,
    );
    w("/etc/skel/.bashrc", "# keelson skel\n", 0o644);
    w("/usr/lib/os-release", "ID=keelson\n", 0o644);
    for d in ["/etc/systemd/system", "/home/core", "/root", "/var"] {
        std::fs::create_dir_all(root.join(d.trim_start_matches('/'))).unwrap();
    }
    for d in [
        "/",
        "/etc",
        "/etc/skel",
        "/etc/systemd",
        "/etc/systemd/system",
        "/home",
        "/usr",
        "/usr/lib",
        "/var",
    ] {
        std::fs::set_permissions(
            root.join(d.trim_start_matches('/')),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        root.join("home/core"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    if is_root() {
        std::os::unix::fs::chown(root.join("home/core"), Some(500), Some(500)).unwrap();
    }
}

/// Extra nodes: `file PATH MODE TEXT`, `dir PATH MODE`, `symlink PATH TARGET`,
/// `hardlink PATH EXISTING`.
fn before(root: &Path, spec: &str) {
    for line in spec
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let mut it = line.splitn(4, ' ');
        let kind = it.next().unwrap();
        let path = root.join(it.next().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match kind {
            "file" => {
                let mode = u32::from_str_radix(it.next().unwrap(), 8).unwrap();
                let text = it.next().unwrap_or("").replace("\\n", "\n");
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            "dir" => {
                std::fs::create_dir_all(&path).unwrap();
                let mode = u32::from_str_radix(it.next().unwrap(), 8).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            "symlink" => std::os::unix::fs::symlink(it.next().unwrap(), &path).unwrap(),
            "hardlink" => {
                let target = root.join(it.next().unwrap().trim_start_matches('/'));
                std::fs::hard_link(target, &path).unwrap();
            }
            other => panic!("unknown before.txt kind {other}"),
        }
    }
}

/// One line per node: path, kind, mode, owner, and contents (inline when short text).
fn listing(root: &Path) -> String {
    let mut paths = Vec::new();
    collect(root, &mut paths);
    paths.sort();
    let mut out = String::new();
    for p in paths {
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        let m = std::fs::symlink_metadata(&p).unwrap();
        let owner = if is_root() {
            format!(" {}:{}", m.uid(), m.gid())
        } else {
            String::new()
        };
        let mode = m.mode() & 0o7777;
        if m.file_type().is_symlink() {
            writeln!(
                out,
                "{rel} -> {}{owner}",
                std::fs::read_link(&p).unwrap().display()
            )
            .unwrap();
        } else if m.is_dir() {
            writeln!(out, "{rel}/ {mode:04o}{owner}").unwrap();
        } else {
            let data = std::fs::read(&p).unwrap();
            let links = if m.nlink() > 1 {
                format!(" links={}", m.nlink())
            } else {
                String::new()
            };
            let shown = match std::str::from_utf8(&data) {
                Ok(s) if s.len() <= 160 => format!("{s:?}"),
                _ => format!(
                    "{} bytes sha256:{}",
                    data.len(),
                    &hex::encode(sha2::Sha256::digest(&data))[..16]
                ),
            };
            writeln!(out, "{rel} {mode:04o}{owner}{links} {shown}").unwrap();
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            collect(&p, out);
        }
    }
}

fn run_case(dir: &Path) -> Result<(), String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let config_bytes = std::fs::read(dir.join("config.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    base(&root);
    if let Ok(b) = std::fs::read_to_string(dir.join("before.txt")) {
        before(&root, &b);
    }
    let initial = listing(&root);
    let target = TargetRoot::new(&root).unwrap();
    let fetcher = Fetcher::new(HttpClient::new(RetryPolicy::quick(1)).unwrap(), 1 << 20);
    let actual = match keelson_config::parse(&config_bytes) {
        Err(e) => format!(
            "error: {}\n",
            e.to_string()
                .lines()
                .take(2)
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        Ok((config, _)) => {
            let mut opts = FilesOptions {
                today: TODAY,
                chown: is_root(),
                dry_run: true,
                kernel_cmdline: None,
            };
            let dry = apply_files(&config, &target, &fetcher, &opts);
            if listing(&root) != initial {
                return Err(format!("{name}: dry run changed the target"));
            }
            opts.dry_run = false;
            match apply_files(&config, &target, &fetcher, &opts) {
                Ok(outcome) => {
                    if let Ok(d) = &dry
                        && d.changes != outcome.changes
                    {
                        return Err(format!("{name}: dry-run plan differs from applied changes"));
                    }
                    listing(&root)
                }
                Err(e) => {
                    if dry.is_ok() {
                        return Err(format!("{name}: dry run passed but apply failed: {e}"));
                    }
                    let after = listing(&root);
                    if after != initial {
                        return Err(format!(
                            "{name}: failed ({e}) but changed the target:\n{after}"
                        ));
                    }
                    format!("error: {e}\n")
                }
            }
        }
    };
    let actual = actual.replace(&root.display().to_string(), "$ROOT");
    let expected_path = dir.join("expected.txt");
    if std::env::var_os("KEELSON_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| format!("{name}: {e}"))?;
    let expected = if is_root() {
        expected
    } else {
        strip_owners(&expected)
    };
    if actual != expected {
        return Err(format!(
            "{name}: tree differs\n--- expected\n{expected}--- actual\n{actual}"
        ));
    }
    Ok(())
}

fn strip_owners(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !(w.contains(':') && w.split(':').all(|x| x.parse::<u32>().is_ok())))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn conformance_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
