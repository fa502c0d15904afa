//! System extensions at provisioning (docs/sysext.md, docs/provisioning-yaml.md): the YAML
//! `extensions:` section and the Ignition form Flatcar users write by hand (a file under
//! /opt/extensions plus a symlink in /etc/extensions) go through the same fetch and files
//! stages and leave the same nodes: the image, hash-checked, and the symlink systemd-sysext
//! follows; the YAML form also enables systemd-sysext.service.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Reply, Request, serve, stage_context};
use keelson_provision::stages::{Stage, StageContext, run_stage};
use sha2::Digest as _;

/// Not a real image: the stages treat an extension as opaque bytes.
const IMAGE: &[u8] = b"pretend this is an erofs DDI with a verity tree";

/// systemd 257's unit, reduced to what enabling reads.
const SYSEXT_UNIT: &str = "[Unit]\nDescription=Merge System Extension Images into /usr/ and /opt/\n\
[Service]\nType=oneshot\nExecStart=systemd-sysext refresh\n[Install]\nWantedBy=sysinit.target\n";

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn context(dir: &tempfile::TempDir, config: &str) -> StageContext<'static> {
    let ctx = stage_context(dir, config);
    let units = ctx.root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("systemd-sysext.service"), SYSEXT_UNIT).unwrap();
    ctx
}

/// The YAML config's Ignition JSON, as `keelson config translate` writes it.
fn translate(yaml: &str) -> String {
    let t = keelson_config::yaml::translate(yaml, &keelson_config::yaml::Options::default())
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(t.report.is_empty(), "{}", t.report);
    serde_json::to_string(&t.config).unwrap()
}

fn provision(config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&dir, config);
    run_stage(Stage::Fetch, &ctx).unwrap();
    run_stage(Stage::Files, &ctx).unwrap();
    let root = ctx.root.clone();
    (dir, root)
}

#[test]
fn yaml_extension_is_downloaded_checked_linked_and_enabled() {
    let server = serve(|r: &Request| match r.target.as_str() {
        "/jq-1.7.1-x86-64.raw" => Reply::new(200, IMAGE),
        _ => Reply::new(404, ""),
    });
    let yaml = format!(
        "variant: keelson\nversion: 1.0.0\nextensions:\n  - name: jq\n    version: 1.7.1\n    source: {}/jq-1.7.1-x86-64.raw\n    sha256: {}\n",
        server.base,
        sha256(IMAGE)
    );
    let (_dir, root) = provision(&translate(&yaml));

    let image = root.join("opt/extensions/jq/jq-1.7.1.raw");
    assert_eq!(std::fs::read(&image).unwrap(), IMAGE);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&image).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    // The symlink's name is what systemd-sysext matches extension-release.jq against; its
    // target is absolute, as on the node.
    let link = root.join("etc/extensions/jq.raw");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::Path::new("/opt/extensions/jq/jq-1.7.1.raw")
    );
    assert_eq!(
        std::fs::read_link(
            root.join("etc/systemd/system/sysinit.target.wants/systemd-sysext.service")
        )
        .unwrap(),
        std::path::Path::new("/usr/lib/systemd/system/systemd-sysext.service")
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn flatcar_ignition_form_gives_the_same_nodes() {
    let server = serve(|_: &Request| Reply::new(200, IMAGE));
    let hand_written = format!(
        r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{
          "files":[{{"path":"/opt/extensions/jq/jq-1.7.1.raw","mode":420,
                     "contents":{{"source":"{b}/jq.raw","verification":{{"hash":"sha256-{h}"}}}}}}],
          "links":[{{"path":"/etc/extensions/jq.raw","target":"/opt/extensions/jq/jq-1.7.1.raw","hard":false}}]}}}}"#,
        b = server.base,
        h = sha256(IMAGE)
    );
    let (_d1, by_hand) = provision(&hand_written);
    let yaml = format!(
        "variant: keelson\nversion: 1.0.0\nextensions:\n  - name: jq\n    version: 1.7.1\n    source: {}/jq.raw\n    hash: sha256-{}\n",
        server.base,
        sha256(IMAGE)
    );
    let (_d2, by_yaml) = provision(&translate(&yaml));
    for root in [&by_hand, &by_yaml] {
        assert_eq!(
            std::fs::read(root.join("opt/extensions/jq/jq-1.7.1.raw")).unwrap(),
            IMAGE
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/extensions/jq.raw")).unwrap(),
            std::path::Path::new("/opt/extensions/jq/jq-1.7.1.raw")
        );
    }
}

#[test]
fn wrong_hash_fails_the_fetch_stage_naming_the_image() {
    let server = serve(|_: &Request| Reply::new(200, b"a different image".to_vec()));
    let yaml = format!(
        "variant: keelson\nversion: 1.0.0\nextensions:\n  - name: jq\n    source: {}/jq.raw\n    sha256: {}\n",
        server.base,
        sha256(IMAGE)
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&dir, &translate(&yaml));
    let err = run_stage(Stage::Fetch, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("$.storage.files[0].contents (/opt/extensions/jq/jq.raw)")
            && err.contains("sha256 mismatch"),
        "{err}"
    );
    // Nothing cached, so the files stage refuses and the root has no extension.
    assert!(run_stage(Stage::Files, &ctx).is_err());
    assert!(!ctx.root.join("opt/extensions").exists());
    assert!(std::fs::symlink_metadata(ctx.root.join("etc/extensions/jq.raw")).is_err());
}
