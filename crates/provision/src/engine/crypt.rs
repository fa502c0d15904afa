//! RAID arrays (`storage.raid`, mdadm) and LUKS volumes (`storage.luks`, cryptsetup) for the
//! disks stage, and the key files and crypttab entries the files stage writes so the real
//! root unlocks the volumes on every boot.
//!
//! Keys: a `keyFile` from the config (fetched and verified by the fetch stage) or, as in
//! Ignition, 64 random bytes; either way the key goes to `/etc/luks/<name>` (0600) on the
//! root and `/etc/crypttab` names it. Clevis and CEX bindings are refused, not ignored.

use std::path::Path;

use keelson_config::{Config, Luks, Raid};

use super::ApplyError;
use super::disks::{DisksOptions, DisksPlan, Secret, Step, probe_filesystem, storage_err};

/// mdadm's level names we pass through.
const RAID_LEVELS: &[&str] = &[
    "linear", "raid0", "0", "stripe", "raid1", "1", "mirror", "raid4", "4", "raid5", "5", "raid6",
    "6", "raid10", "10",
];

fn invalid(field: String, reason: impl Into<String>) -> ApplyError {
    ApplyError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// `/dev/md/<name>`, the device a `storage.raid` entry becomes.
pub fn raid_device(name: &str) -> String {
    format!("/dev/md/{name}")
}

/// `/dev/mapper/<name>`, the device an opened `storage.luks` entry becomes.
pub fn luks_device(name: &str) -> String {
    format!("/dev/mapper/{name}")
}

fn check_name(field: &str, name: &str) -> Result<(), ApplyError> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(invalid(
            format!("{field}.name"),
            format!("{name:?} must be non-empty, without '/' or white space"),
        ));
    }
    Ok(())
}

/// Plan `storage.raid[i]`: `mdadm --create /dev/md/<name> --run` (Ignition's arguments).
pub(crate) fn plan_raid(i: usize, raid: &Raid, plan: &mut DisksPlan) -> Result<(), ApplyError> {
    let field = format!("$.storage.raid[{i}]");
    check_name(&field, &raid.name)?;
    let level = raid
        .level
        .as_deref()
        .ok_or_else(|| invalid(format!("{field}.level"), "is required"))?;
    if !RAID_LEVELS.contains(&level) {
        return Err(invalid(
            format!("{field}.level"),
            format!(
                "unknown RAID level {level:?} (linear, raid0, raid1, raid4, raid5, raid6, raid10)"
            ),
        ));
    }
    if raid.devices.is_empty() {
        return Err(invalid(
            format!("{field}.devices"),
            "at least one device is required",
        ));
    }
    let spares = raid.spares.unwrap_or(0);
    let n = raid.devices.len() as i64;
    if spares < 0 || spares >= n {
        return Err(invalid(
            format!("{field}.spares"),
            format!("{spares} spares leave no active device among {n}"),
        ));
    }
    if spares > 0 && matches!(level, "linear" | "raid0" | "0" | "stripe") {
        return Err(invalid(
            format!("{field}.spares"),
            format!("level {level} cannot have spares"),
        ));
    }
    let dev = raid_device(&raid.name);
    if Path::new(&dev).exists() {
        plan.note(&dev, "keep existing array".into());
        return Ok(());
    }
    let mut args: Vec<String> = vec![
        "--create".into(),
        dev.clone(),
        "--force".into(),
        "--run".into(),
        "--homehost".into(),
        "any".into(),
        "--level".into(),
        level.into(),
        "--raid-devices".into(),
        (n - spares).to_string(),
    ];
    if spares > 0 {
        args.extend(["--spare-devices".into(), spares.to_string()]);
    }
    args.extend(raid.options.iter().cloned());
    args.extend(raid.devices.iter().cloned());
    plan.push(Step::run("mdadm", args, raid.devices.clone()));
    plan.note(
        &dev,
        format!(
            "create {level} array over {} device(s){}",
            n - spares,
            if spares > 0 {
                format!(" and {spares} spare(s)")
            } else {
                String::new()
            }
        ),
    );
    Ok(())
}

/// Plan `storage.luks[i]`: write the key to `<luks_dir>/<name>.key`, `cryptsetup luksFormat`
/// (unless a LUKS volume is there and `wipeVolume` is not set), open it as
/// `/dev/mapper/<name>`, and keep its UUID in `<luks_dir>/<name>.uuid` for the crypttab.
pub(crate) fn plan_luks(
    i: usize,
    luks: &Luks,
    opts: &DisksOptions,
    plan: &mut DisksPlan,
) -> Result<(), ApplyError> {
    let field = format!("$.storage.luks[{i}]");
    if !luks.clevis.is_empty() {
        return Err(invalid(
            format!("{field}.clevis"),
            "Clevis (TPM2/Tang) binding is not supported: give a keyFile, or none for a random key kept in /etc/luks on the root",
        ));
    }
    if !luks.cex.is_empty() {
        return Err(invalid(
            format!("{field}.cex"),
            "IBM CEX secure keys are not supported",
        ));
    }
    check_name(&field, &luks.name)?;
    let device = luks
        .device
        .as_deref()
        .ok_or_else(|| invalid(format!("{field}.device"), "is required"))?;
    if let Some(l) = &luks.label
        && l.chars().count() > 47
    {
        return Err(invalid(
            format!("{field}.label"),
            format!("{l:?} is longer than 47 characters"),
        ));
    }
    let key = match super::stage_fetch::spec(&luks.key_file) {
        Some(spec) => {
            let fetcher = opts.fetcher.as_ref().ok_or_else(|| {
                invalid(
                    format!("{field}.keyFile"),
                    "needs the fetch stage's resource cache (run the first-boot stages)",
                )
            })?;
            let bytes = fetcher.fetch_bytes(&spec).map_err(|e| ApplyError::Fetch {
                what: format!("{field}.keyFile"),
                error: Box::new(e),
            })?;
            if bytes.is_empty() {
                return Err(invalid(format!("{field}.keyFile"), "the key file is empty"));
            }
            Some(Secret(bytes))
        }
        None => None,
    };
    let existing = if Path::new(device).exists() {
        probe_filesystem(device)?
    } else {
        None
    };
    let reuse = !luks.wipe_volume.unwrap_or(false)
        && existing
            .as_ref()
            .is_some_and(|e| e.fs_type == "crypto_LUKS");
    if reuse && key.is_none() {
        return Err(storage_err(
            device,
            format!(
                "{field}: a LUKS volume exists and there is no keyFile to open it; set wipeVolume to replace it"
            ),
        ));
    }
    let key_path = opts.luks_dir.join(format!("{}.key", luks.name));
    let key_arg = key_path.display().to_string();
    let random = key.is_none();
    plan.push(Step::Key {
        path: key_path,
        bytes: key,
    });
    if !reuse {
        let mut args: Vec<String> = vec![
            "luksFormat".into(),
            "--type".into(),
            "luks2".into(),
            "--batch-mode".into(),
            "--key-file".into(),
            key_arg.clone(),
        ];
        if let Some(l) = &luks.label {
            args.extend(["--label".into(), l.clone()]);
        }
        if let Some(u) = &luks.uuid {
            args.extend(["--uuid".into(), u.clone()]);
        }
        args.extend(luks.options.iter().cloned());
        args.push(device.into());
        plan.push(Step::run("cryptsetup", args, vec![device.into()]));
    }
    let mut open: Vec<String> = vec!["luksOpen".into(), "--key-file".into(), key_arg];
    if luks.discard == Some(true) {
        open.push("--allow-discards".into());
    }
    open.extend(luks.open_options.iter().cloned());
    open.extend([device.into(), luks.name.clone()]);
    plan.push(Step::run("cryptsetup", open, vec![device.into()]));
    plan.push(Step::Save {
        program: "cryptsetup".into(),
        args: vec!["luksUUID".into(), device.into()],
        path: opts.luks_dir.join(format!("{}.uuid", luks.name)),
    });
    let what = if reuse {
        format!("open existing LUKS volume as {}", luks_device(&luks.name))
    } else {
        format!(
            "create LUKS2 volume {} with {} key",
            luks_device(&luks.name),
            if random { "a random" } else { "the config's" }
        )
    };
    plan.note(device, what);
    Ok(())
}

/// The files the files stage adds for `storage.luks`: `/etc/luks/<name>` (0600, the key
/// the disks stage used) and one `/etc/crypttab` line per volume (by LUKS UUID), so the real
/// root's systemd-cryptsetup opens them on every boot.
pub fn luks_files(
    config: &Config,
    luks_dir: &Path,
) -> Result<Vec<keelson_config::File>, ApplyError> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut crypttab = Vec::new();
    for (i, l) in config.storage.luks.iter().enumerate() {
        let field = format!("$.storage.luks[{i}]");
        let read = |ext: &str| {
            let p = luks_dir.join(format!("{}.{ext}", l.name));
            std::fs::read(&p).map_err(|e| ApplyError::Io {
                op: "reading the disks stage's LUKS record (did the disks stage run?)",
                path: p,
                error: e,
            })
        };
        let key = read("key")?;
        let uuid = String::from_utf8_lossy(&read("uuid")?).trim().to_string();
        if uuid.is_empty() {
            return Err(invalid(field, "the disks stage recorded no LUKS UUID"));
        }
        let path = format!("/etc/luks/{}", l.name);
        out.push(file_entry(serde_json::json!({
            "path": path,
            "mode": 0o600,
            "overwrite": true,
            "contents": {"source": format!(
                "data:;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(&key)
            )}
        }))?);
        let mut options = vec!["luks".to_string()];
        if l.discard == Some(true) {
            options.push("discard".into());
        }
        crypttab.push(format!(
            "{} UUID={uuid} {path} {}\n",
            l.name,
            options.join(",")
        ));
    }
    if !crypttab.is_empty() {
        let appends: Vec<_> = crypttab
            .iter()
            .map(|line| {
                serde_json::json!({"source": format!(
                    "data:;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(line)
                )})
            })
            .collect();
        out.push(file_entry(serde_json::json!({
            "path": "/etc/crypttab",
            "mode": 0o600,
            "append": appends
        }))?);
    }
    Ok(out)
}

fn file_entry(v: serde_json::Value) -> Result<keelson_config::File, ApplyError> {
    serde_json::from_value(v).map_err(|e| invalid("$.storage.luks".into(), e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::disks::plan_disks_with;
    use crate::fetch::Fetcher;
    use crate::http::{HttpClient, RetryPolicy};

    /// A config straight from JSON, without the config crate's validation, so the engine's
    /// own checks are what is tested.
    fn storage(json: serde_json::Value) -> Config {
        serde_json::from_value(serde_json::json!({
            "ignition": {"version": "3.6.0"},
            "storage": json
        }))
        .unwrap()
    }

    fn opts(dir: &Path, fetcher: bool) -> DisksOptions {
        DisksOptions {
            fetcher: fetcher.then(|| {
                Fetcher::new(HttpClient::new(RetryPolicy::quick(1)).unwrap(), 1 << 20)
                    .offline(&dir.join("resources"))
            }),
            luks_dir: dir.join("luks"),
        }
    }

    #[test]
    fn raid_command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                serde_json::json!({"name": "data", "level": "raid1", "spares": 1,
                    "devices": ["/dev/vdc", "/dev/vdd", "/dev/vde"], "options": ["--metadata=1.2"]}),
                "mdadm --create /dev/md/data --force --run --homehost any --level raid1 --raid-devices 2 --spare-devices 1 --metadata=1.2 /dev/vdc /dev/vdd /dev/vde",
            ),
            (
                serde_json::json!({"name": "fast", "level": "raid0",
                    "devices": ["/dev/vdc1", "/dev/vdd1"]}),
                "mdadm --create /dev/md/fast --force --run --homehost any --level raid0 --raid-devices 2 /dev/vdc1 /dev/vdd1",
            ),
        ];
        for (raid, want) in cases {
            let plan = plan_disks_with(
                &storage(serde_json::json!({"raid": [raid]})),
                &opts(dir.path(), false),
            )
            .unwrap();
            assert_eq!(plan.commands(), vec![want.to_string()]);
            assert!(
                plan.outcome().changes[0].path.starts_with("/dev/md/")
                    && plan.outcome().changes[0].action.starts_with("create raid"),
                "{:?}",
                plan.outcome()
            );
        }
    }

    #[test]
    fn raid_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                serde_json::json!({"name": "a", "devices": ["/dev/x"]}),
                "$.storage.raid[0].level: is required",
            ),
            (
                serde_json::json!({"name": "a", "level": "raid7", "devices": ["/dev/x"]}),
                "unknown RAID level \"raid7\"",
            ),
            (
                serde_json::json!({"name": "a", "level": "raid1", "devices": []}),
                "$.storage.raid[0].devices",
            ),
            (
                serde_json::json!({"name": "a", "level": "raid0", "spares": 1,
                    "devices": ["/dev/x", "/dev/y", "/dev/z"]}),
                "$.storage.raid[0].spares: level raid0 cannot have spares",
            ),
            (
                serde_json::json!({"name": "a", "level": "raid1", "spares": 2,
                    "devices": ["/dev/x", "/dev/y"]}),
                "2 spares leave no active device",
            ),
            (
                serde_json::json!({"name": "a/b", "level": "raid1", "devices": ["/dev/x"]}),
                "$.storage.raid[0].name",
            ),
        ];
        for (raid, want) in cases {
            let err = plan_disks_with(
                &storage(serde_json::json!({"raid": [raid]})),
                &opts(dir.path(), false),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn luks_with_a_random_key_formats_opens_and_records_the_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path(), false);
        let cfg = storage(serde_json::json!({"luks": [{
            "name": "secret", "device": "/dev/keelson-test-absent", "label": "SECRET",
            "discard": true, "options": ["--pbkdf", "pbkdf2"], "openOptions": ["--perf-no_read_workqueue"]
        }]}));
        let plan = plan_disks_with(&cfg, &o).unwrap();
        let key = dir.path().join("luks/secret.key").display().to_string();
        assert_eq!(
            plan.commands(),
            vec![
                format!("write a random key to {key}"),
                format!(
                    "cryptsetup luksFormat --type luks2 --batch-mode --key-file {key} --label SECRET --pbkdf pbkdf2 /dev/keelson-test-absent"
                ),
                format!(
                    "cryptsetup luksOpen --key-file {key} --allow-discards --perf-no_read_workqueue /dev/keelson-test-absent secret"
                ),
                "cryptsetup luksUUID /dev/keelson-test-absent".to_string(),
            ]
        );
        assert_eq!(
            plan.outcome().changes[0].action,
            "create LUKS2 volume /dev/mapper/secret with a random key"
        );
        // Planning wrote nothing.
        assert!(!dir.path().join("luks").exists());
    }

    #[test]
    fn luks_key_file_comes_through_the_fetcher_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = storage(serde_json::json!({"luks": [{
            "name": "k", "device": "/dev/keelson-test-absent",
            "keyFile": {"source": "data:,topsecretkey"}
        }]}));
        let err = plan_disks_with(&cfg, &opts(dir.path(), false))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("$.storage.luks[0].keyFile:"), "{err}");
        let plan = plan_disks_with(&cfg, &opts(dir.path(), true)).unwrap();
        assert!(plan.commands()[0].starts_with("write the config's key"));
        assert!(!format!("{plan:?}{:?}", plan.commands()).contains("topsecretkey"));
        // A remote key the fetch stage did not cache is an error, not a network fetch.
        let cfg = storage(serde_json::json!({"luks": [{
            "name": "k", "device": "/dev/keelson-test-absent",
            "keyFile": {"source": "http://127.0.0.1:9/key"}
        }]}));
        let err = plan_disks_with(&cfg, &opts(dir.path(), true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("$.storage.luks[0].keyFile") && err.contains("not in the resource cache"),
            "{err}"
        );
    }

    #[test]
    fn luks_refuses_clevis_cex_and_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                serde_json::json!({"name": "a", "device": "/dev/x", "clevis": {"tpm2": true}}),
                "$.storage.luks[0].clevis: Clevis (TPM2/Tang) binding is not supported",
            ),
            (
                serde_json::json!({"name": "a", "device": "/dev/x", "cex": {"enabled": true}}),
                "$.storage.luks[0].cex",
            ),
            (
                serde_json::json!({"name": "a"}),
                "$.storage.luks[0].device: is required",
            ),
            (
                serde_json::json!({"name": "", "device": "/dev/x"}),
                "$.storage.luks[0].name",
            ),
            (
                serde_json::json!({"name": "a", "device": "/dev/x", "label": "L".repeat(48)}),
                "$.storage.luks[0].label",
            ),
        ];
        for (luks, want) in cases {
            let err = plan_disks_with(
                &storage(serde_json::json!({"luks": [luks]})),
                &opts(dir.path(), true),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn luks_files_carry_the_key_and_a_crypttab_line() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = storage(serde_json::json!({"luks": [
            {"name": "one", "device": "/dev/x", "discard": true},
            {"name": "two", "device": "/dev/y"}
        ]}));
        // Without the disks stage's records: a clear error naming what is missing.
        let err = luks_files(&cfg, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("one.key") && err.contains("disks stage"),
            "{err}"
        );
        for (n, uuid) in [("one", "1111-aaaa"), ("two", "2222-bbbb")] {
            std::fs::write(dir.path().join(format!("{n}.key")), format!("key-{n}")).unwrap();
            std::fs::write(dir.path().join(format!("{n}.uuid")), format!("{uuid}\n")).unwrap();
        }
        let files = luks_files(&cfg, dir.path()).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/etc/luks/one", "/etc/luks/two", "/etc/crypttab"]
        );
        assert_eq!(files[0].mode, Some(0o600));
        let decode = |r: &keelson_config::Resource| {
            crate::dataurl::decode(r.source.as_deref().unwrap()).unwrap()
        };
        assert_eq!(decode(&files[0].contents), b"key-one");
        let lines: Vec<String> = files[2]
            .append
            .iter()
            .map(|a| String::from_utf8(decode(a)).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                "one UUID=1111-aaaa /etc/luks/one luks,discard\n",
                "two UUID=2222-bbbb /etc/luks/two luks\n"
            ]
        );
    }
}
