//! The fetch stage fetches every remote resource into the cache under /run; the later stages
//! read only that cache, so a failed fetch fails the boot before any disk is touched.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Reply, Request, fetcher, serve, stage_context};
use keelson_provision::engine::files::FilesOptions;
use keelson_provision::fetch::{FetchError, ResourceSpec};
use keelson_provision::stages::{Stage, resource_cache, run_stage, storage_stamp};
use sha2::Digest as _;

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn files_stage_uses_only_what_the_fetch_stage_cached() {
    let up = Arc::new(AtomicBool::new(true));
    let u = up.clone();
    let server = serve(move |r: &Request| {
        if !u.load(Ordering::SeqCst) {
            return Reply::new(404, "");
        }
        match r.target.as_str() {
            "/motd" => Reply::new(200, "hello from http\n"),
            "/more" => Reply::new(200, "appended\n"),
            _ => Reply::new(404, ""),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"files":[{{"path":"/etc/motd",
          "contents":{{"source":"{b}/motd","verification":{{"hash":"sha256-{h}"}}}},
          "append":[{{"source":"{b}/more"}},{{"source":"data:,inline"}}]}}]}}}}"#,
        b = server.base,
        h = sha256(b"hello from http\n")
    );
    let ctx = stage_context(&dir, &config);
    let out = run_stage(Stage::Fetch, &ctx).unwrap();
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
    // Files only: the initrd keeps its own module loader.
    assert!(!storage_stamp(&ctx.cache).exists());
    let cached: Vec<_> = out
        .outcome
        .changes
        .iter()
        .filter(|c| c.action.starts_with("cache ") && c.action.contains("bytes"))
        .collect();
    assert_eq!(cached.len(), 2, "{out:?}");
    assert!(
        cached[0].action.contains("$.storage.files[0].contents"),
        "{out:?}"
    );
    let res = resource_cache(&ctx.cache);
    assert_eq!(std::fs::read_dir(&res).unwrap().count(), 2);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&res).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // The server is gone by the files stage: the files stage does not ask it.
    up.store(false, Ordering::SeqCst);
    run_stage(Stage::Files, &ctx).unwrap();
    assert_eq!(
        server.requests().len(),
        2,
        "files stage went to the network"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.root.join("etc/motd")).unwrap(),
        "hello from http\nappended\ninline"
    );
}

#[test]
fn failed_fetch_fails_the_fetch_stage_before_the_disks_are_touched() {
    let server = serve(|_: &Request| Reply::new(200, "not what the hash says"));
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let config = format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{
          "disks":[{{"device":"{img}","wipeTable":true,"partitions":[{{"label":"DATA"}}]}}],
          "files":[{{"path":"/etc/a","contents":{{"source":"data:,fine"}}}},
                   {{"path":"/etc/b","contents":{{"source":"{b}/b","verification":{{"hash":"sha256-{h}"}}}}}}]}}}}"#,
        img = img.display(),
        b = server.base,
        h = sha256(b"expected")
    );
    let ctx = stage_context(&dir, &config);
    let err = run_stage(Stage::Fetch, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("$.storage.files[1].contents (/etc/b)") && err.contains("sha256 mismatch"),
        "{err}"
    );
    // No config cache: the disks stage refuses to run, and the disk is still blank.
    assert!(!ctx.cache.exists());
    let err = run_stage(Stage::Disks, &ctx).unwrap_err().to_string();
    assert!(err.contains("fetch stage"), "{err}");
    let bytes = std::fs::read(&img).unwrap();
    assert!(bytes.iter().all(|b| *b == 0), "the disk was changed");
}

#[test]
fn a_bad_data_url_also_fails_in_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/a",
        "contents":{"source":"data:,abc","verification":{"hash":"sha256-0000000000000000000000000000000000000000000000000000000000000000"}}}]}}"#;
    let ctx = stage_context(&dir, config);
    let err = run_stage(Stage::Fetch, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("$.storage.files[0].contents") && err.contains("mismatch"),
        "{err}"
    );
}

#[test]
fn offline_fetcher_refuses_uncached_and_rechecks_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ResourceSpec {
        verification: Some(format!("sha256-{}", sha256(b"good"))),
        ..ResourceSpec::url("http://127.0.0.1:9/never")
    };
    let offline = fetcher().offline(dir.path());
    match offline.fetch_bytes(&spec).unwrap_err() {
        FetchError::NotCached { url, path } => {
            assert!(url.contains("127.0.0.1:9"), "{url}");
            assert!(path.starts_with(&dir.path().display().to_string()));
        }
        e => panic!("unexpected {e}"),
    }
    let key = keelson_provision::fetch::cache_key(&spec);
    std::fs::write(dir.path().join(&key), "good").unwrap();
    assert_eq!(offline.fetch_bytes(&spec).unwrap(), b"good");
    std::fs::write(dir.path().join(&key), "evil").unwrap();
    let err = offline.fetch_bytes(&spec).unwrap_err().to_string();
    assert!(err.contains("mismatch"), "{err}");
    // Another header is another resource.
    let other = ResourceSpec {
        headers: vec![("X".into(), "1".into())],
        ..spec.clone()
    };
    assert_ne!(keelson_provision::fetch::cache_key(&other), key);
}

#[test]
fn luks_key_is_cached_by_fetch_and_lands_on_the_root_with_a_crypttab_line() {
    let server = serve(|_: &Request| Reply::new(200, "remote-luks-key"));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"luks":[{{"name":"vault","device":"/dev/keelson-absent",
          "keyFile":{{"source":"{b}/key","verification":{{"hash":"sha256-{h}"}}}}}}]}}}}"#,
        b = server.base,
        h = sha256(b"remote-luks-key")
    );
    let ctx = stage_context(&dir, &config);
    let out = run_stage(Stage::Fetch, &ctx).unwrap();
    assert!(
        out.outcome
            .changes
            .iter()
            .any(|c| c.action.contains("$.storage.luks[0].keyFile (vault)")),
        "{out:?}"
    );
    // A LUKS volume: the disks stage needs dm-crypt from /sysusr/usr.
    assert!(storage_stamp(&ctx.cache).is_file());
    // What the disks stage leaves in /run/keelson/luks (it needs the device to run).
    let luks = keelson_provision::stages::luks_dir(&ctx.cache);
    std::fs::create_dir_all(&luks).unwrap();
    std::fs::write(luks.join("vault.key"), "remote-luks-key").unwrap();
    std::fs::write(luks.join("vault.uuid"), "0a0b-uuid\n").unwrap();
    std::fs::create_dir_all(ctx.root.join("etc")).unwrap();
    std::fs::write(ctx.root.join("etc/crypttab"), "# existing\n").unwrap();
    run_stage(Stage::Files, &ctx).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let key = ctx.root.join("etc/luks/vault");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "remote-luks-key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(ctx.root.join("etc/crypttab")).unwrap(),
        "# existing\nvault UUID=0a0b-uuid /etc/luks/vault luks\n"
    );
}

#[test]
fn kernel_arguments_are_checked_in_fetch_before_anything_is_fetched_or_written() {
    let server = serve(|_: &Request| Reply::new(200, "x"));
    let dir = tempfile::tempdir().unwrap();
    let config = |exist: &str, not: &str| {
        format!(
            r#"{{"ignition":{{"version":"3.6.0"}},"kernelArguments":{{"shouldExist":[{exist}],"shouldNotExist":[{not}]}},
              "storage":{{"files":[{{"path":"/etc/x","contents":{{"source":"{b}/x"}}}}]}}}}"#,
            b = server.base
        )
    };
    // Already as wished (the context's command line is "console=ttyS0"): passes.
    let ctx = stage_context(&dir, &config(r#""console=ttyS0""#, r#""quiet""#));
    run_stage(Stage::Fetch, &ctx).unwrap();
    assert_eq!(server.requests().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let ctx = stage_context(&dir, &config(r#""console=ttyS0","nomodeset""#, ""));
    let err = run_stage(Stage::Fetch, &ctx).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "$.kernelArguments.shouldExist[1]: \"nomodeset\" is not on the kernel command line"
        ),
        "{err}"
    );
    assert!(!ctx.cache.exists());
    assert_eq!(server.requests().len(), 1, "fetched after the check failed");

    let dir = tempfile::tempdir().unwrap();
    let ctx = stage_context(&dir, &config("", r#""console=ttyS0""#));
    let err = run_stage(Stage::Fetch, &ctx).unwrap_err().to_string();
    assert!(
        err.starts_with("$.kernelArguments.shouldNotExist[0]"),
        "{err}"
    );

    // The files stage (and so `keelson config apply`, also with --dry-run) says the same.
    let root = tempfile::tempdir().unwrap();
    let target = keelson_provision::target::TargetRoot::new(root.path()).unwrap();
    let cfg = keelson_config::parse(config("", r#""console=ttyS0""#).as_bytes())
        .unwrap()
        .0;
    let opts = FilesOptions {
        today: 1,
        chown: false,
        dry_run: true,
        kernel_cmdline: Some("console=ttyS0".into()),
    };
    let err = keelson_provision::engine::apply_files(&cfg, &target, &fetcher(), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("$.kernelArguments.shouldNotExist[0]"),
        "{err}"
    );
}
