//! Ignition's parent/child config merge (`ignition.config.merge`, base configs).
//!
//! Rules (Ignition's `config/merge`): structs merge field by field; a child's set scalar
//! replaces the parent's, an unset one keeps it; keyed lists merge item by item on their key
//! with the child's new items appended; `files[].append`, filesystem `options`/`mountOptions`,
//! luks `options` and raid `options` are concatenated; other lists of strings are unions.
//! Files, directories and links share one key (`path`): a child's node replaces a parent's
//! node of another kind at the same path.

use crate::v3_6::*;

fn opt<T: Clone>(p: &mut Option<T>, c: &Option<T>) {
    if c.is_some() {
        p.clone_from(c);
    }
}

/// Union of string lists, keeping the parent's order and appending the child's new values.
fn union(p: &mut Vec<String>, c: &[String]) {
    for v in c {
        if !p.contains(v) {
            p.push(v.clone());
        }
    }
}

fn concat(p: &mut Vec<String>, c: &[String]) {
    p.extend(c.iter().cloned());
}

/// Merge keyed lists: items with equal keys are merged with `f`, new child items appended.
fn keyed<T: Clone, K: PartialEq>(
    p: &mut Vec<T>,
    c: &[T],
    key: impl Fn(&T) -> K,
    f: impl Fn(&mut T, &T),
) {
    for item in c {
        let k = key(item);
        match p.iter_mut().find(|x| key(x) == k) {
            Some(existing) => f(existing, item),
            None => p.push(item.clone()),
        }
    }
}

/// Merge `child` on top of `parent` following Ignition's rules; inputs are untouched.
pub fn merge(parent: &Config, child: &Config) -> Config {
    let mut out = parent.clone();
    ignition(&mut out.ignition, &child.ignition);
    union(
        &mut out.kernel_arguments.should_exist,
        &child.kernel_arguments.should_exist,
    );
    union(
        &mut out.kernel_arguments.should_not_exist,
        &child.kernel_arguments.should_not_exist,
    );
    // One key space across both lists: the child's statement wins.
    let ka = &mut out.kernel_arguments;
    ka.should_exist
        .retain(|a| !child.kernel_arguments.should_not_exist.contains(a));
    ka.should_not_exist
        .retain(|a| !child.kernel_arguments.should_exist.contains(a));
    passwd(&mut out.passwd, &child.passwd);
    storage(&mut out.storage, &child.storage);
    keyed(
        &mut out.systemd.units,
        &child.systemd.units,
        |u| u.name.clone(),
        |p, c| {
            opt(&mut p.contents, &c.contents);
            opt(&mut p.enabled, &c.enabled);
            opt(&mut p.mask, &c.mask);
            keyed(
                &mut p.dropins,
                &c.dropins,
                |d| d.name.clone(),
                |p, c| opt(&mut p.contents, &c.contents),
            );
        },
    );
    out
}

fn ignition(p: &mut Ignition, c: &Ignition) {
    if !c.version.is_empty() {
        p.version.clone_from(&c.version);
    }
    keyed(
        &mut p.config.merge,
        &c.config.merge,
        |r| r.source.clone(),
        resource,
    );
    resource(&mut p.config.replace, &c.config.replace);
    opt(&mut p.proxy.http_proxy, &c.proxy.http_proxy);
    opt(&mut p.proxy.https_proxy, &c.proxy.https_proxy);
    union(&mut p.proxy.no_proxy, &c.proxy.no_proxy);
    keyed(
        &mut p.security.tls.certificate_authorities,
        &c.security.tls.certificate_authorities,
        |r| r.source.clone(),
        resource,
    );
    opt(
        &mut p.timeouts.http_response_headers,
        &c.timeouts.http_response_headers,
    );
    opt(&mut p.timeouts.http_total, &c.timeouts.http_total);
}

/// Merge one resource; a child header without value deletes the parent's header.
pub fn resource(p: &mut Resource, c: &Resource) {
    opt(&mut p.compression, &c.compression);
    opt(&mut p.source, &c.source);
    opt(&mut p.verification.hash, &c.verification.hash);
    for h in &c.http_headers {
        match (
            p.http_headers.iter().position(|x| x.name == h.name),
            &h.value,
        ) {
            (Some(i), None) => {
                p.http_headers.remove(i);
            }
            (Some(i), Some(_)) => p.http_headers[i] = h.clone(),
            (None, None) => {}
            (None, Some(_)) => p.http_headers.push(h.clone()),
        }
    }
}

fn passwd(p: &mut Passwd, c: &Passwd) {
    keyed(
        &mut p.users,
        &c.users,
        |u| u.name.clone(),
        |p, c| {
            opt(&mut p.gecos, &c.gecos);
            union(&mut p.groups, &c.groups);
            opt(&mut p.home_dir, &c.home_dir);
            opt(&mut p.no_create_home, &c.no_create_home);
            opt(&mut p.no_log_init, &c.no_log_init);
            opt(&mut p.no_user_group, &c.no_user_group);
            opt(&mut p.password_hash, &c.password_hash);
            opt(&mut p.primary_group, &c.primary_group);
            opt(&mut p.shell, &c.shell);
            opt(&mut p.should_exist, &c.should_exist);
            union(&mut p.ssh_authorized_keys, &c.ssh_authorized_keys);
            opt(&mut p.system, &c.system);
            opt(&mut p.uid, &c.uid);
        },
    );
    keyed(
        &mut p.groups,
        &c.groups,
        |g| g.name.clone(),
        |p, c| {
            opt(&mut p.gid, &c.gid);
            opt(&mut p.password_hash, &c.password_hash);
            opt(&mut p.should_exist, &c.should_exist);
            opt(&mut p.system, &c.system);
        },
    );
}

fn owner(pu: &mut NodeUser, pg: &mut NodeGroup, cu: &NodeUser, cg: &NodeGroup) {
    opt(&mut pu.id, &cu.id);
    opt(&mut pu.name, &cu.name);
    opt(&mut pg.id, &cg.id);
    opt(&mut pg.name, &cg.name);
}

/// Partition key: the number, or the label when the number is 0/absent.
fn part_key(pt: &Partition) -> String {
    match pt.number {
        Some(n) if n != 0 => format!("number:{n}"),
        _ => format!("label:{}", pt.label.as_deref().unwrap_or("")),
    }
}

fn storage(p: &mut Storage, c: &Storage) {
    // Shared path key space: drop parent nodes of another kind that the child redefines.
    let child_files: Vec<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
    let child_dirs: Vec<&str> = c.directories.iter().map(|d| d.path.as_str()).collect();
    let child_links: Vec<&str> = c.links.iter().map(|l| l.path.as_str()).collect();
    p.files.retain(|f| {
        !child_dirs.contains(&f.path.as_str()) && !child_links.contains(&f.path.as_str())
    });
    p.directories.retain(|d| {
        !child_files.contains(&d.path.as_str()) && !child_links.contains(&d.path.as_str())
    });
    p.links.retain(|l| {
        !child_files.contains(&l.path.as_str()) && !child_dirs.contains(&l.path.as_str())
    });

    keyed(
        &mut p.files,
        &c.files,
        |f| f.path.clone(),
        |p, c| {
            owner(&mut p.user, &mut p.group, &c.user, &c.group);
            opt(&mut p.overwrite, &c.overwrite);
            p.append.extend(c.append.iter().cloned());
            resource(&mut p.contents, &c.contents);
            opt(&mut p.mode, &c.mode);
        },
    );
    keyed(
        &mut p.directories,
        &c.directories,
        |d| d.path.clone(),
        |p, c| {
            owner(&mut p.user, &mut p.group, &c.user, &c.group);
            opt(&mut p.overwrite, &c.overwrite);
            opt(&mut p.mode, &c.mode);
        },
    );
    keyed(
        &mut p.links,
        &c.links,
        |l| l.path.clone(),
        |p, c| {
            owner(&mut p.user, &mut p.group, &c.user, &c.group);
            opt(&mut p.overwrite, &c.overwrite);
            opt(&mut p.hard, &c.hard);
            opt(&mut p.target, &c.target);
        },
    );
    keyed(
        &mut p.disks,
        &c.disks,
        |d| d.device.clone(),
        |p, c| {
            opt(&mut p.wipe_table, &c.wipe_table);
            keyed(&mut p.partitions, &c.partitions, part_key, |p, c| {
                opt(&mut p.guid, &c.guid);
                opt(&mut p.label, &c.label);
                opt(&mut p.number, &c.number);
                opt(&mut p.resize, &c.resize);
                opt(&mut p.should_exist, &c.should_exist);
                opt(&mut p.size_mib, &c.size_mib);
                opt(&mut p.start_mib, &c.start_mib);
                opt(&mut p.type_guid, &c.type_guid);
                opt(&mut p.wipe_partition_entry, &c.wipe_partition_entry);
            });
        },
    );
    keyed(
        &mut p.raid,
        &c.raid,
        |r| r.name.clone(),
        |p, c| {
            union(&mut p.devices, &c.devices);
            opt(&mut p.level, &c.level);
            concat(&mut p.options, &c.options);
            opt(&mut p.spares, &c.spares);
        },
    );
    keyed(
        &mut p.filesystems,
        &c.filesystems,
        |f| f.device.clone(),
        |p, c| {
            opt(&mut p.format, &c.format);
            opt(&mut p.label, &c.label);
            concat(&mut p.mount_options, &c.mount_options);
            concat(&mut p.options, &c.options);
            opt(&mut p.path, &c.path);
            opt(&mut p.uuid, &c.uuid);
            opt(&mut p.wipe_filesystem, &c.wipe_filesystem);
        },
    );
    keyed(
        &mut p.luks,
        &c.luks,
        |l| l.name.clone(),
        |p, c| {
            opt(&mut p.cex.enabled, &c.cex.enabled);
            opt(&mut p.clevis.custom.config, &c.clevis.custom.config);
            opt(
                &mut p.clevis.custom.needs_network,
                &c.clevis.custom.needs_network,
            );
            opt(&mut p.clevis.custom.pin, &c.clevis.custom.pin);
            keyed(
                &mut p.clevis.tang,
                &c.clevis.tang,
                |t| t.url.clone(),
                |p, c| {
                    opt(&mut p.advertisement, &c.advertisement);
                    opt(&mut p.thumbprint, &c.thumbprint);
                },
            );
            opt(&mut p.clevis.threshold, &c.clevis.threshold);
            opt(&mut p.clevis.tpm2, &c.clevis.tpm2);
            opt(&mut p.device, &c.device);
            opt(&mut p.discard, &c.discard);
            resource(&mut p.key_file, &c.key_file);
            opt(&mut p.label, &c.label);
            union(&mut p.open_options, &c.open_options);
            concat(&mut p.options, &c.options);
            opt(&mut p.uuid, &c.uuid);
            opt(&mut p.wipe_volume, &c.wipe_volume);
        },
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(json: &str) -> Config {
        crate::parse(json.as_bytes()).unwrap().0
    }

    const SAMPLE: &str = r#"{"ignition":{"version":"3.6.0","proxy":{"noProxy":["a"]}},
        "storage":{"files":[{"path":"/f","mode":420,"append":[{"source":"data:,1"}]}],
                   "filesystems":[{"device":"/dev/vdb","format":"ext4","options":["-a"]}]},
        "passwd":{"users":[{"name":"core","sshAuthorizedKeys":["k1"]}]},
        "systemd":{"units":[{"name":"a.service","enabled":true}]}}"#;

    #[test]
    fn empty_child_keeps_the_parent() {
        let p = cfg(SAMPLE);
        assert_eq!(merge(&p, &Config::default()), p);
    }

    #[test]
    fn empty_parent_takes_the_child() {
        let c = cfg(SAMPLE);
        assert_eq!(merge(&Config::default(), &c), c);
    }

    #[test]
    fn merging_a_config_into_itself_concatenates_only_the_concatenated_lists() {
        let c = cfg(SAMPLE);
        let m = merge(&c, &c);
        assert_eq!(m.storage.files[0].append.len(), 2);
        assert_eq!(m.storage.filesystems[0].options, ["-a", "-a"]);
        // Keyed lists and unions do not grow.
        assert_eq!(m.storage.files.len(), 1);
        assert_eq!(m.passwd.users[0].ssh_authorized_keys, ["k1"]);
        assert_eq!(m.ignition.proxy.no_proxy, ["a"]);
        assert_eq!(m.systemd.units.len(), 1);
    }

    #[test]
    fn inputs_are_not_modified() {
        let p = cfg(SAMPLE);
        let c = cfg(
            r#"{"ignition":{"version":"3.6.0"},"storage":{"links":[{"path":"/f","target":"/x"}]}}"#,
        );
        let (p0, c0) = (p.clone(), c.clone());
        let m = merge(&p, &c);
        assert_eq!((p, c), (p0, c0));
        assert!(m.storage.files.is_empty());
        assert_eq!(m.storage.links.len(), 1);
    }
}
