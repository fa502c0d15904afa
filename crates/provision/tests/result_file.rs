//! The Ignition result file written into a target root.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, UNIX_EPOCH};

use keelson_provision::result::{
    IgnitionResult, RESULT_FILE, RESULT_MODE, ResultError, read_boot_id, record_first_boot,
    record_first_boot_with, write_result_file,
};
use keelson_provision::target::TargetRoot;

fn result(user: bool) -> IgnitionResult {
    IgnitionResult::new(
        UNIX_EPOCH + Duration::from_secs(1_796_395_503),
        "0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e",
        user,
    )
}

#[test]
fn written_atomically_with_ignitions_json_and_mode() {
    let root = tempfile::tempdir().unwrap();
    let target = TargetRoot::new(root.path()).unwrap();
    // /etc does not exist yet: it is created.
    let host = write_result_file(&target, &result(true)).unwrap();
    assert_eq!(
        host,
        root.path()
            .canonicalize()
            .unwrap()
            .join("etc/.ignition-result.json")
    );
    let text = std::fs::read_to_string(&host).unwrap();
    assert_eq!(
        text,
        "{\n  \"provisioningBootID\": \"0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e\",\n  \"provisioningDate\": \"2026-12-04T14:45:03Z\",\n  \"userConfigProvided\": true\n}\n"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["userConfigProvided"], true);
    assert_eq!(
        std::fs::metadata(&host).unwrap().permissions().mode() & 0o7777,
        RESULT_MODE
    );
    assert_eq!(RESULT_MODE, 0o600);
    // An old record with another mode is replaced (overwrite: true), mode 0600 again, and no
    // temporary file is left behind.
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_result_file(&target, &result(false)).unwrap();
    let again: IgnitionResult =
        serde_json::from_str(&std::fs::read_to_string(&host).unwrap()).unwrap();
    assert!(!again.user_config_provided);
    assert_eq!(
        std::fs::metadata(&host).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let names: Vec<_> = std::fs::read_dir(root.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![".ignition-result.json"]);
}

#[test]
fn a_second_run_nests_the_earlier_report() {
    let root = tempfile::tempdir().unwrap();
    let ids = tempfile::tempdir().unwrap();
    let first_id = ids.path().join("first");
    let second_id = ids.path().join("second");
    std::fs::write(&first_id, "11111111-2222-3333-4444-555555555555\n").unwrap();
    std::fs::write(&second_id, "66666666-7777-8888-9999-aaaaaaaaaaaa\n").unwrap();

    let first = record_first_boot_with(root.path(), &first_id, true).unwrap();
    assert_eq!(first.previous_report, None);
    let second = record_first_boot_with(root.path(), &second_id, false).unwrap();
    let host = root.path().join(RESULT_FILE.trim_start_matches('/'));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&host).unwrap()).unwrap();
    assert_eq!(
        v["provisioningBootID"],
        "66666666-7777-8888-9999-aaaaaaaaaaaa"
    );
    assert_eq!(v["userConfigProvided"], false);
    assert_eq!(
        v["previousReport"]["provisioningBootID"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(v["previousReport"]["userConfigProvided"], true);
    assert!(v["previousReport"].get("previousReport").is_none());
    assert_eq!(second.previous_report, Some(v["previousReport"].clone()));

    // An earlier file that is not JSON fails the run (Ignition: "couldn't unmarshal
    // previous report output") and is left as it was.
    std::fs::write(&host, "garbage").unwrap();
    let err = record_first_boot_with(root.path(), &second_id, true).unwrap_err();
    assert!(matches!(err, ResultError::PreviousReport { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "garbage");
}

#[test]
fn an_etc_link_cannot_send_it_outside_the_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // /etc -> an absolute path: inside the target that means <root>/<path>, never the host.
    std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();
    let target = TargetRoot::new(root.path()).unwrap();
    let host = write_result_file(&target, &result(true)).unwrap();
    assert!(
        host.starts_with(root.path().canonicalize().unwrap()),
        "{host:?}"
    );
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing written outside the root"
    );
}

#[test]
fn boot_id_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, "0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e\n").unwrap();
    assert_eq!(
        read_boot_id(&good).unwrap(),
        "0b4f5bd1-37b0-4b8a-9d55-3c1bd3a11e0e"
    );
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not-a-boot-id\n").unwrap();
    assert!(matches!(
        read_boot_id(&bad),
        Err(ResultError::BadBootId { .. })
    ));
    let err = read_boot_id(&dir.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn record_first_boot_uses_this_boot() {
    let id = std::path::Path::new(keelson_provision::result::BOOT_ID_PATH);
    assert!(id.exists(), "{} is Linux's boot id", id.display());
    let root = tempfile::tempdir().unwrap();
    let r = record_first_boot(root.path(), true).unwrap();
    assert_eq!(r.provisioning_boot_id, read_boot_id(id).unwrap());
    let on_disk: IgnitionResult = serde_json::from_str(
        &std::fs::read_to_string(root.path().join(RESULT_FILE.trim_start_matches('/'))).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk, r);
    assert!(r.provisioning_date.ends_with('Z') && r.provisioning_date.len() == 20);
}
