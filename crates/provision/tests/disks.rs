//! The disks stage against image files: sgdisk and mkfs work on regular files, so no loop
//! device or root is needed.
#![allow(clippy::unwrap_used)]

use keelson_provision::engine::ApplyError;
use keelson_provision::engine::disks::{plan_disks, probe_filesystem, read_partitions};

fn tool(name: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn image(dir: &tempfile::TempDir, name: &str, mib: u64) -> String {
    let p = dir.path().join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib << 20).unwrap();
    p.display().to_string()
}

fn config(json: &str) -> keelson_config::Config {
    keelson_config::parse(json.as_bytes()).unwrap().0
}

#[test]
fn partitions_created_then_kept_then_checked() {
    assert!(tool("sgdisk"), "sgdisk is a host package (gdisk)");
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 64);
    let cfg = |wipe: bool, extra: &str| {
        config(&format!(
            r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","wipeTable":{wipe},"partitions":[
              {{"number":1,"label":"ESP","sizeMiB":8,"typeGuid":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}},
              {{"number":2,"label":"ROOT"{extra}}}]}}]}}}}"#
        ))
    };
    let plan = plan_disks(&cfg(true, "")).unwrap();
    assert_eq!(plan.commands()[0], format!("sgdisk --zap-all {img}"));
    let outcome = plan.apply().unwrap();
    assert!(
        outcome.changes[0]
            .action
            .contains("create partition 1 (8 MiB)"),
        "{outcome:?}"
    );
    let (sector, parts) = read_partitions(&img).unwrap();
    assert_eq!(sector, 512);
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].label.as_str(), parts[0].size), ("ESP", 8 * 2048));
    assert_eq!(parts[0].type_guid, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[1].label, "ROOT");
    assert_eq!(parts[1].type_guid, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert!(parts[1].size > 50 * 2048, "ROOT takes the rest: {parts:?}");

    // Same config without wipeTable: everything matches, nothing to run.
    let plan = plan_disks(&cfg(false, "")).unwrap();
    assert!(plan.commands().is_empty(), "{:?}", plan.commands());
    assert!(
        plan.outcome().changes[0]
            .action
            .contains("keep partition 1")
    );

    // A mismatching label is an error unless wipePartitionEntry allows recreating it.
    let err = plan_disks(&cfg(false, r#","sizeMiB":16,"label":"OTHER""#)).unwrap_err();
    assert!(
        matches!(err, ApplyError::Storage { .. }) && err.to_string().contains("label"),
        "{err}"
    );
    let plan = plan_disks(&cfg(false, r#","sizeMiB":16,"wipePartitionEntry":true"#)).unwrap();
    plan.apply().unwrap();
    let (_, parts) = read_partitions(&img).unwrap();
    assert_eq!(
        (parts[1].label.as_str(), parts[1].size),
        ("ROOT", 16 * 2048)
    );
}

#[test]
fn should_exist_false_needs_wipe_partition_entry() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 32);
    let make = format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","partitions":[{{"number":1,"label":"A","sizeMiB":4}},{{"number":2,"label":"B","sizeMiB":4}}]}}]}}}}"#
    );
    plan_disks(&config(&make)).unwrap().apply().unwrap();
    let del = |wipe: bool| {
        format!(
            r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","partitions":[{{"number":2,"shouldExist":false,"wipePartitionEntry":{wipe}}}]}}]}}}}"#
        )
    };
    let err = plan_disks(&config(&del(false))).unwrap_err().to_string();
    assert!(
        err.contains("partition 2") && err.contains("wipePartitionEntry"),
        "{err}"
    );
    assert_eq!(
        read_partitions(&img).unwrap().1.len(),
        2,
        "a failed plan changes nothing"
    );
    plan_disks(&config(&del(true))).unwrap().apply().unwrap();
    let (_, parts) = read_partitions(&img).unwrap();
    assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn filesystems_created_reused_and_guarded() {
    assert!(
        tool("mkfs.ext4") && tool("blkid"),
        "e2fsprogs and util-linux are host packages"
    );
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "fs.img", 32);
    let fs = |format: &str, label: &str, wipe: bool| {
        config(&format!(
            r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"filesystems":[{{"device":"{img}","format":"{format}","label":"{label}","wipeFilesystem":{wipe}}}]}}}}"#
        ))
    };
    assert_eq!(probe_filesystem(&img).unwrap(), None);
    plan_disks(&fs("ext4", "DATA", false))
        .unwrap()
        .apply()
        .unwrap();
    let found = probe_filesystem(&img).unwrap().unwrap();
    assert_eq!(
        (found.fs_type.as_str(), found.label.as_deref()),
        ("ext4", Some("DATA"))
    );

    // Matching filesystem: kept, no mkfs.
    let plan = plan_disks(&fs("ext4", "DATA", false)).unwrap();
    assert!(plan.commands().is_empty());
    assert!(
        plan.outcome().changes[0]
            .action
            .contains("keep existing ext4")
    );

    // Mismatch without wipe fails; with wipe it is recreated.
    let err = plan_disks(&fs("vfat", "EFI", false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wipeFilesystem is false") && err.contains(&img),
        "{err}"
    );
    if tool("mkfs.vfat") {
        plan_disks(&fs("vfat", "EFI", true))
            .unwrap()
            .apply()
            .unwrap();
        let found = probe_filesystem(&img).unwrap().unwrap();
        assert_eq!(
            (found.fs_type.as_str(), found.label.as_deref()),
            ("vfat", Some("EFI"))
        );
    }
    if tool("mkswap") {
        plan_disks(&fs("swap", "SWAP", true))
            .unwrap()
            .apply()
            .unwrap();
        assert_eq!(probe_filesystem(&img).unwrap().unwrap().fs_type, "swap");
    }
}

#[test]
fn filesystem_uuid_and_bad_labels() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "fs.img", 16);
    let uuid = "5b8d9a6c-1e2f-4a3b-9c4d-5e6f7a8b9c0d";
    let cfg = config(&format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"filesystems":[{{"device":"{img}","format":"ext4","uuid":"{uuid}"}}]}}}}"#
    ));
    plan_disks(&cfg).unwrap().apply().unwrap();
    assert_eq!(
        probe_filesystem(&img).unwrap().unwrap().uuid.as_deref(),
        Some(uuid)
    );
    // The engine checks label limits itself too (the config crate may already reject it).
    let mut cfg = cfg.clone();
    cfg.storage.filesystems[0].label = Some("a-label-longer-than-16".into());
    cfg.storage.filesystems[0].wipe_filesystem = Some(true);
    let err = plan_disks(&cfg).unwrap_err().to_string();
    assert!(err.contains("longer than 16"), "{err}");
}

#[test]
fn failing_tool_reports_command_line_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "tiny.img", 1);
    // 1 MiB cannot hold a 4 MiB partition: sgdisk --pretend refuses before anything runs.
    let cfg = config(&format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","partitions":[{{"number":1,"sizeMiB":4}}]}}]}}}}"#
    ));
    let err = plan_disks(&cfg).unwrap_err();
    match &err {
        ApplyError::Command(e) => {
            let cmdline = &e.command;
            assert!(
                cmdline.starts_with("sgdisk --pretend") && cmdline.contains(&img),
                "{cmdline}"
            )
        }
        other => panic!("{other}"),
    }
}

/// Issue 15: Ignition accepts a disk that deletes one partition and lets another take "the
/// largest free block" (start and size 0), and resolves it when it applies it: deletions go
/// first, so the new partition fills the hole the deleted one leaves, even when the config
/// lists the new partition before the deletion.
#[test]
fn should_exist_false_next_to_zero_start_and_size() {
    assert!(tool("sgdisk"), "sgdisk is a host package (gdisk)");
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 32);
    let make = format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","partitions":[{{"number":1,"label":"BIG","sizeMiB":20}},{{"number":2,"label":"SMALL","sizeMiB":4}}]}}]}}}}"#
    );
    plan_disks(&config(&make)).unwrap().apply().unwrap();
    let (_, before) = read_partitions(&img).unwrap();
    let hole = (before[0].start, before[0].size);
    assert_eq!(hole.1, 20 * 2048, "{before:?}");

    // The new partition is listed first, the deletion second; both take defaults.
    let cfg = config(&format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","partitions":[
          {{"number":3,"label":"NEW","startMiB":0,"sizeMiB":0}},
          {{"number":1,"shouldExist":false,"wipePartitionEntry":true}}]}}]}}}}"#
    ));
    let plan = plan_disks(&cfg).unwrap();
    let cmd = plan.commands().last().unwrap().clone();
    let delete_at = cmd.find("--delete=1").unwrap();
    let new_at = cmd.find("--new=3:").unwrap();
    assert!(delete_at < new_at, "deletions come first: {cmd}");
    // Start and size 0 were resolved (sgdisk --pretend after the deletion), as Ignition
    // does before it commits: the new partition is written with explicit sectors.
    assert!(
        cmd.contains(&format!("--new=3:{}:+{}", hole.0, hole.1)),
        "{cmd}"
    );
    plan.apply().unwrap();

    let (_, after) = read_partitions(&img).unwrap();
    assert_eq!(
        after.iter().map(|p| p.number).collect::<Vec<_>>(),
        vec![2, 3],
        "{after:?}"
    );
    let new = &after[1];
    assert_eq!(new.label, "NEW");
    // The 20 MiB hole is now the largest free block (the tail is about 7 MiB), so the new
    // partition starts where BIG started and takes all of it.
    assert_eq!(new.start, hole.0, "{after:?}");
    assert_eq!(new.size, hole.1, "{after:?}");
}

/// A negative partition number is accepted by validation (as by Ignition) and refused when
/// the disks stage plans it, before anything is written.
#[test]
fn negative_partition_number_is_refused_at_apply_time() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 8);
    let cfg = config(&format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","partitions":[{{"number":-1,"sizeMiB":1}}]}}]}}}}"#
    ));
    let err = plan_disks(&cfg).unwrap_err();
    assert!(
        matches!(err, ApplyError::Storage { .. }) && err.to_string().contains("-1"),
        "{err}"
    );
    assert!(read_partitions(&img).unwrap().1.is_empty());
}

fn disk_config(img: &str, wipe_table: bool, partitions: &str) -> keelson_config::Config {
    config(&format!(
        r#"{{"ignition":{{"version":"3.6.0"}},"storage":{{"disks":[{{"device":"{img}","wipeTable":{wipe_table},"partitions":[{partitions}]}}]}}}}"#
    ))
}

/// Ignition processes the partitions numbered 0 ("the next free number") after the numbered
/// ones, wherever the config lists them (partitions.go `PartitionList`): a numbered partition
/// listed after an unnumbered one that takes the rest of the disk still gets its place.
#[test]
fn unnumbered_partitions_are_created_last() {
    assert!(tool("sgdisk"), "sgdisk is a host package (gdisk)");
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 32);
    let cfg = disk_config(
        &img,
        false,
        r#"{"label":"REST","sizeMiB":0},{"number":1,"label":"FIRST","sizeMiB":4}"#,
    );
    let plan = plan_disks(&cfg).unwrap();
    let cmd = plan.commands().last().unwrap().clone();
    assert!(
        cmd.find("--new=1:").unwrap() < cmd.find("--new=0:").unwrap(),
        "{cmd}"
    );
    plan.apply().unwrap();
    let (_, parts) = read_partitions(&img).unwrap();
    let got: Vec<_> = parts
        .iter()
        .map(|p| (p.number, p.label.as_str(), p.start))
        .collect();
    assert_eq!(got, vec![(1, "FIRST", 2048), (2, "REST", 2048 + 4 * 2048)]);
    assert_eq!(parts[0].size, 4 * 2048);
    assert!(parts[1].size > 20 * 2048, "{parts:?}");
}

/// Issue 15, apply time: a partition deleted next to a partition of size 0 that grows into the
/// space it leaves. Ignition resolves size 0 with `sgdisk --pretend` after the deletions, finds
/// that the kept partition no longer matches (it could be larger) and, with `resize`, recreates
/// it at the same start, with the same GUIDs and label, over the freed space.
#[test]
fn deleted_partition_makes_room_for_a_size_zero_resize() {
    assert!(tool("sgdisk"), "sgdisk is a host package (gdisk)");
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 32);
    plan_disks(&disk_config(
        &img,
        false,
        r#"{"number":1,"label":"ROOT","sizeMiB":8},{"number":2,"label":"OLD","sizeMiB":8}"#,
    ))
    .unwrap()
    .apply()
    .unwrap();
    let (_, before) = read_partitions(&img).unwrap();
    let root = before[0].clone();

    // Without resize, a kept partition whose size 0 resolves to more than it has is a mismatch.
    let err = plan_disks(&disk_config(
        &img,
        false,
        r#"{"number":1,"sizeMiB":0},{"number":2,"shouldExist":false,"wipePartitionEntry":true}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("partition 1") && err.contains("size"), "{err}");
    assert_eq!(
        read_partitions(&img).unwrap().1,
        before,
        "a failed plan changes nothing"
    );

    let plan = plan_disks(&disk_config(
        &img,
        false,
        r#"{"number":1,"sizeMiB":0,"resize":true},{"number":2,"shouldExist":false,"wipePartitionEntry":true}"#,
    ))
    .unwrap();
    let cmd = plan.commands().last().unwrap().clone();
    // Deletions first, then the resolved start and size in sectors (the rest of the disk).
    assert!(
        cmd.starts_with("sgdisk --delete=1 --delete=2 --new=1:2048:+"),
        "{cmd}"
    );
    plan.apply().unwrap();
    let (_, after) = read_partitions(&img).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    let grown = &after[0];
    assert_eq!(
        (grown.number, grown.start, grown.label.as_str()),
        (1, root.start, "ROOT")
    );
    assert_eq!(
        (&grown.guid, &grown.type_guid),
        (&root.guid, &root.type_guid)
    );
    assert!(grown.size > 28 * 2048, "{after:?}");

    // Applied again, the same config finds everything as it should be.
    let again = plan_disks(&disk_config(
        &img,
        false,
        r#"{"number":1,"sizeMiB":0,"resize":true},{"number":2,"shouldExist":false,"wipePartitionEntry":true}"#,
    ))
    .unwrap();
    assert!(again.commands().is_empty(), "{:?}", again.commands());
}

/// With wipeTable, start and size 0 are resolved against the empty table the wipe leaves
/// (`--clear` in the pretend run), not against the partitions about to go.
#[test]
fn zero_size_after_wipe_table_takes_the_whole_disk() {
    assert!(tool("sgdisk"), "sgdisk is a host package (gdisk)");
    let dir = tempfile::tempdir().unwrap();
    let img = image(&dir, "disk.img", 32);
    plan_disks(&disk_config(
        &img,
        false,
        r#"{"number":1,"sizeMiB":8},{"number":2,"sizeMiB":8}"#,
    ))
    .unwrap()
    .apply()
    .unwrap();
    let plan = plan_disks(&disk_config(
        &img,
        true,
        r#"{"number":2,"label":"ALL","startMiB":0,"sizeMiB":0}"#,
    ))
    .unwrap();
    let cmds = plan.commands();
    assert_eq!(cmds[0], format!("sgdisk --zap-all {img}"));
    assert!(cmds[1].starts_with("sgdisk --new=2:2048:+"), "{cmds:?}");
    plan.apply().unwrap();
    let (_, parts) = read_partitions(&img).unwrap();
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!((parts[0].number, parts[0].start), (2, 2048));
    assert!(parts[0].size > 30 * 2048, "{parts:?}");
}
