//! The extension image: a GPT disk image (DDI) with an erofs root partition holding `usr/`
//! (and `opt/`), its dm-verity partition and, when signed, the verity signature partition,
//! typed per the Discoverable Partitions Specification so that systemd-dissect and
//! systemd-sysext find them. Everything is derived from the inputs: same inputs, same bytes.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use sha2::{Digest, Sha256};

use keelson_cmd as cmd;
use keelson_disk::{Disk, PartitionType, PlannedPartition, SECTOR_SIZE, types};

use crate::error::SysextError;
use crate::release::{EXTENSION_RELEASE_DIR, ExtensionRelease};
use crate::sign::{self, VeritySignature};
use crate::tree;

/// The OS ID extensions are built for by default.
pub const DEFAULT_OS_ID: &str = "keelson";
/// Where the first partition starts (1 MiB, as partitioning tools leave).
const FIRST_BYTE: u64 = 1 << 20;
/// Partitions are placed on 4 KiB boundaries (the erofs and verity block size).
const ALIGN: u64 = 4096;
/// Sectors the backup GPT takes at the end of the disk (entry array and header).
const BACKUP_GPT_SECTORS: u64 = 33;

/// The partition types of an extension DDI for one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdiTypes {
    /// The erofs data partition (DPS root type: the file system holds `usr/` and `opt/`).
    pub data: PartitionType,
    /// Its dm-verity hash partition.
    pub verity: PartitionType,
    /// The root hash signature partition.
    pub signature: PartitionType,
}

/// The DPS types for systemd's architecture name (`x86-64`, `arm64`).
pub fn ddi_types(arch: &str) -> Option<DdiTypes> {
    match arch {
        "x86-64" => Some(DdiTypes {
            data: types::ROOT_X86_64,
            verity: types::ROOT_VERITY_X86_64,
            signature: types::ROOT_VERITY_SIG_X86_64,
        }),
        "arm64" => Some(DdiTypes {
            data: types::ROOT_ARM64,
            verity: types::ROOT_VERITY_ARM64,
            signature: types::ROOT_VERITY_SIG_ARM64,
        }),
        _ => None,
    }
}

/// The architectures extensions can be built for.
pub const ARCHES: [&str; 2] = ["x86-64", "arm64"];

/// A private key and its certificate (both PEM files) to sign the root hash with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The private key.
    pub key: PathBuf,
    /// Its X.509 certificate (what nodes trust in `/usr/lib/verity.d` or `/etc/verity.d`).
    pub cert: PathBuf,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The extension's name (`extension-release.<name>`; the image must be installed as
    /// `<name>.raw`).
    pub name: String,
    /// The extension's own version (IMAGE_VERSION, the sysupdate version).
    pub version: String,
    /// systemd architecture name.
    pub arch: String,
    /// The OS ID it is for.
    pub os_id: String,
    /// SYSEXT_LEVEL (independent extensions).
    pub sysext_level: Option<String>,
    /// VERSION_ID (OS-bound extensions: exactly this OS version).
    pub os_version: Option<String>,
    /// Timestamp of every file.
    pub source_date_epoch: u64,
    /// Sign the root hash with this key.
    pub signing: Option<SigningKey>,
}

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildOutput {
    /// The image.
    pub path: PathBuf,
    /// Extension name.
    pub name: String,
    /// Extension version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// dm-verity root hash (hex).
    pub root_hash: String,
    /// Whether the signature partition is there.
    pub signed: bool,
    /// Whether EXTENSION_RELOAD_MANAGER=1 was set (the tree ships units).
    pub reload_manager: bool,
    /// Image size in bytes.
    pub size: u64,
    /// SHA-256 of the image (hex).
    pub sha256: String,
    /// The extension-release file's text.
    pub extension_release: String,
}

/// Characters allowed in names and versions: a safe file name part for sysupdate's patterns.
fn check_token(field: &str, value: &str, extra: &str) -> Result<(), SysextError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with(['.', '-'])
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._".contains(c) || extra.contains(c));
    if ok {
        Ok(())
    } else {
        Err(SysextError::invalid(
            field,
            value,
            format!(
                "use 1-64 letters, digits and . _ {extra} (not first: . or -)",
                extra = extra
                    .chars()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ))
    }
}

impl BuildSpec {
    /// Checks names, versions, architecture and the level/version choice.
    pub fn validate(&self) -> Result<(), SysextError> {
        check_token("--name", &self.name, "-")?;
        check_token("--version", &self.version, "-+~^")?;
        check_token("ID", &self.os_id, "-")?;
        if ddi_types(&self.arch).is_none() {
            return Err(SysextError::invalid(
                "--arch",
                &self.arch,
                format!("supported: {}", ARCHES.join(", ")),
            ));
        }
        if let Some(l) = &self.sysext_level {
            check_token("SYSEXT_LEVEL", l, "-+~^")?;
        }
        if let Some(v) = &self.os_version {
            check_token("VERSION_ID", v, "-+~^")?;
        }
        if self.sysext_level.is_none() && self.os_version.is_none() && self.os_id != "_any" {
            return Err(SysextError::invalid(
                "SYSEXT_LEVEL",
                "",
                "an extension needs a SYSEXT_LEVEL (independent) or a VERSION_ID (OS-bound), \
                 or a host with either would refuse it",
            ));
        }
        Ok(())
    }

    /// The seed of the file-system ids and verity salt.
    fn seed(&self) -> String {
        format!("sysext:{}:{}:{}", self.name, self.version, self.arch)
    }

    /// The extension-release content for a tree that does or does not ship units.
    pub fn release(&self, ships_units: bool) -> ExtensionRelease {
        ExtensionRelease {
            id: self.os_id.clone(),
            sysext_level: self.sysext_level.clone(),
            version_id: self.os_version.clone(),
            architecture: self.arch.clone(),
            reload_manager: ships_units,
            image_id: self.name.clone(),
            image_version: self.version.clone(),
        }
    }
}

/// The directory a temporary file next to `out` goes in.
pub(crate) fn parent_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Builds the extension image of the tree `dir` (which must hold only `usr/` and `opt/`) at
/// `out`, replacing it atomically.
pub fn build_from_dir(
    spec: &BuildSpec,
    dir: &Path,
    out: &Path,
) -> Result<BuildOutput, SysextError> {
    spec.validate()?;
    let info = tree::check_tree(dir)?;
    let parent = parent_dir(out);
    fs::create_dir_all(&parent).map_err(SysextError::io_on("creating", &parent))?;
    let work = tempfile::Builder::new()
        .prefix(".keelson-sysext-")
        .tempdir_in(&parent)
        .map_err(SysextError::io_on(
            "creating a temporary directory in",
            &parent,
        ))?;
    let w = work.path();
    let staging = w.join("root");
    fs::create_dir(&staging).map_err(SysextError::io_on("creating", &staging))?;
    let mut src = dir.as_os_str().to_owned();
    src.push("/.");
    cmd::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto", "--no-preserve=ownership"])
            .arg(src)
            .arg(&staging),
    )?;
    // The root directory of the file system: a temporary directory is 0700.
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
        .map_err(SysextError::io_on("setting the mode of", &staging))?;
    let release = spec.release(info.ships_units);
    let rel_dir = staging.join(EXTENSION_RELEASE_DIR);
    fs::create_dir_all(&rel_dir).map_err(SysextError::io_on("creating", &rel_dir))?;
    for d in ["usr", "usr/lib", EXTENSION_RELEASE_DIR] {
        let p = staging.join(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
            .map_err(SysextError::io_on("setting the mode of", &p))?;
    }
    let rel_file = rel_dir.join(format!("extension-release.{}", spec.name));
    let text = release.render();
    fs::write(&rel_file, &text).map_err(SysextError::io_on("writing", &rel_file))?;
    fs::set_permissions(&rel_file, fs::Permissions::from_mode(0o644))
        .map_err(SysextError::io_on("setting the mode of", &rel_file))?;

    let seed = spec.seed();
    let data = w.join("data.erofs");
    cmd::run(
        Command::new("mkfs.erofs")
            .arg("-zlz4hc")
            .arg(format!("-T{}", spec.source_date_epoch))
            .arg(format!(
                "-U{}",
                keelson_disk::derive_fs_uuid(&seed, "sysext-erofs")
            ))
            // No xattrs: the build host's (SELinux labels, ...) would make the bytes depend on it.
            .arg("-x-1")
            .arg("--all-root")
            .arg("--quiet")
            .arg(&data)
            .arg(&staging),
    )?;
    let verity = w.join("data.verity");
    let salt = Sha256::digest(format!("keelson:sysext-verity-salt:{seed}").as_bytes()).to_vec();
    let params = keelson_verity::VerityParams::default()
        .with_salt(salt)
        .with_uuid(*keelson_disk::derive_fs_uuid(&seed, "sysext-verity").as_bytes());
    let vinfo =
        keelson_verity::format(&data, &verity, &params).map_err(|source| SysextError::Verity {
            path: data.clone(),
            source,
        })?;
    let root_hash = vinfo.root_hash.clone().unwrap_or_default();
    let root_hex = vinfo.root_hash_hex();
    let signature = match &spec.signing {
        Some(k) => Some(sign::sign_root_hash(&root_hex, &k.key, &k.cert, w)?),
        None => None,
    };
    let tmp_out = w.join("image.raw");
    assemble(
        &tmp_out,
        &DdiParts {
            arch: &spec.arch,
            label: &format!("{}_{}", spec.name, spec.version),
            data: &data,
            verity: &verity,
            root_hash: &root_hash,
            signature: signature.as_ref(),
        },
    )?;
    let (size, sha256) = size_and_sha256(&tmp_out)?;
    publish_mode(&tmp_out)?;
    fs::rename(&tmp_out, out).map_err(SysextError::io_on("renaming the image to", out))?;
    tracing::info!(path = %out.display(), root_hash = %root_hex, "extension image written");
    Ok(BuildOutput {
        path: out.to_path_buf(),
        name: spec.name.clone(),
        version: spec.version.clone(),
        arch: spec.arch.clone(),
        root_hash: root_hex,
        signed: signature.is_some(),
        reload_manager: info.ships_units,
        size,
        sha256,
        extension_release: text,
    })
}

/// Makes a finished output file world-readable (temporary files are created 0600).
pub(crate) fn publish_mode(path: &Path) -> Result<(), SysextError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(SysextError::io_on("setting the mode of", path))
}

/// Size and SHA-256 (hex) of a file, read in chunks.
pub fn size_and_sha256(path: &Path) -> Result<(u64, String), SysextError> {
    let mut f = File::open(path).map_err(SysextError::io_on("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(SysextError::io_on("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(h.finalize())))
}

/// The pieces of a DDI.
#[derive(Debug)]
pub struct DdiParts<'a> {
    /// systemd architecture name.
    pub arch: &'a str,
    /// Base of the partition labels.
    pub label: &'a str,
    /// The erofs image.
    pub data: &'a Path,
    /// Its verity hash area (superblock and tree).
    pub verity: &'a Path,
    /// The root hash (the partition UUIDs are its halves).
    pub root_hash: &'a [u8],
    /// The signature, if any.
    pub signature: Option<&'a VeritySignature>,
}

fn gpt_label(s: &str) -> String {
    // GPT names hold 36 UTF-16 code units.
    s.chars().take(36).collect()
}

/// Writes the DDI at `out` (through keelson-disk: a GPT with exactly these partitions, their
/// UUIDs from the root hash).
pub fn assemble(out: &Path, parts: &DdiParts<'_>) -> Result<(), SysextError> {
    let t = ddi_types(parts.arch)
        .ok_or_else(|| SysextError::invalid("--arch", parts.arch, "unsupported architecture"))?;
    let disk_err = |source| SysextError::Disk {
        path: out.to_path_buf(),
        source,
    };
    let (data_uuid, verity_uuid) =
        keelson_disk::uuids_from_root_hash(parts.root_hash).map_err(disk_err)?;
    let root_hex = hex::encode(parts.root_hash);
    let sig_bytes = parts.signature.map(VeritySignature::to_partition);
    let len = |p: &Path| -> Result<u64, SysextError> {
        Ok(fs::metadata(p)
            .map_err(SysextError::io_on("reading the size of", p))?
            .len())
    };
    let mut sizes = vec![
        (t.data, parts.label.to_string(), data_uuid, len(parts.data)?),
        (
            t.verity,
            format!("{}_verity", parts.label),
            verity_uuid,
            len(parts.verity)?,
        ),
    ];
    if let Some(s) = &sig_bytes {
        sizes.push((
            t.signature,
            format!("{}_verity_sig", parts.label),
            keelson_disk::derive_uuid(&root_hex, "sysext-verity-sig"),
            s.len() as u64,
        ));
    }
    let mut plan = Vec::new();
    let mut next = FIRST_BYTE;
    for (i, (kind, label, uuid, bytes)) in sizes.into_iter().enumerate() {
        let bytes = bytes.max(ALIGN).div_ceil(ALIGN) * ALIGN;
        plan.push(PlannedPartition {
            number: i as u32 + 1,
            kind,
            label: gpt_label(&label),
            uuid,
            first_lba: next / SECTOR_SIZE,
            last_lba: (next + bytes) / SECTOR_SIZE - 1,
        });
        next += bytes;
    }
    let disk_size = (next + (BACKUP_GPT_SECTORS + 1) * SECTOR_SIZE).div_ceil(ALIGN) * ALIGN;
    keelson_disk::create_from_plan(
        out,
        disk_size,
        keelson_disk::derive_uuid(&root_hex, "sysext-disk"),
        &plan,
    )
    .map_err(disk_err)?;
    let mut disk = Disk::open_rw(out).map_err(disk_err)?;
    disk.write_image_file(1, parts.data).map_err(disk_err)?;
    disk.write_image_file(2, parts.verity).map_err(disk_err)?;
    if let Some(s) = &sig_bytes {
        disk.write_image(3, &mut s.as_slice(), s.len() as u64, "the signature")
            .map_err(disk_err)?;
    }
    disk.commit().map_err(disk_err)?;
    Ok(())
}

/// The partitions of an extension DDI, found by type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DdiLayout {
    /// Architecture the partition types are for.
    pub arch: String,
    /// Data partition number.
    pub data: u32,
    /// Verity partition number.
    pub verity: u32,
    /// Signature partition number, if any.
    pub signature: Option<u32>,
    /// The root hash the data and verity partition UUIDs spell (hex).
    pub uuid_root_hash: String,
    /// Every partition (number, type name, label, size).
    pub partitions: Vec<keelson_disk::PartitionInfo>,
}

/// Reads the GPT of `path` and finds the data, verity and signature partitions of one
/// architecture (root or usr types).
pub fn open_layout(path: &Path) -> Result<(Disk, DdiLayout), SysextError> {
    let not = |reason: String| SysextError::NotADdi {
        path: path.to_path_buf(),
        reason,
    };
    let disk = Disk::open(path).map_err(|e| not(format!("no usable GPT: {e}")))?;
    let parts = disk.partitions();
    let find = |g: keelson_disk::Uuid| parts.iter().find(|p| p.type_guid == g).map(|p| p.number);
    let candidates = [
        (
            "x86-64",
            types::ROOT_X86_64,
            types::ROOT_VERITY_X86_64,
            types::ROOT_VERITY_SIG_X86_64,
        ),
        (
            "x86-64",
            types::USR_X86_64,
            types::USR_VERITY_X86_64,
            types::USR_VERITY_SIG_X86_64,
        ),
        (
            "arm64",
            types::ROOT_ARM64,
            types::ROOT_VERITY_ARM64,
            types::ROOT_VERITY_SIG_ARM64,
        ),
        (
            "arm64",
            types::USR_ARM64,
            types::USR_VERITY_ARM64,
            types::USR_VERITY_SIG_ARM64,
        ),
    ];
    for (arch, d, v, s) in candidates {
        let Some(data) = find(d.guid) else { continue };
        let Some(verity) = find(v.guid) else {
            return Err(not(format!(
                "partition {data} ({}) has no {} partition next to it",
                d.name, v.name
            )));
        };
        let info = |n: u32| parts.iter().find(|p| p.number == n).cloned();
        let (Some(di), Some(vi)) = (info(data), info(verity)) else {
            continue;
        };
        let mut hash = di.uuid.as_bytes().to_vec();
        hash.extend_from_slice(vi.uuid.as_bytes());
        let layout = DdiLayout {
            arch: arch.to_string(),
            data,
            verity,
            signature: find(s.guid),
            uuid_root_hash: hex::encode(hash),
            partitions: parts.clone(),
        };
        return Ok((disk, layout));
    }
    Err(not(format!(
        "no root or usr partition for x86-64 or arm64 among {} partition(s)",
        parts.len()
    )))
}

/// Copies partition `number` of `disk` (at most `max` bytes, refused if larger) to `to`,
/// streaming.
pub fn copy_partition(
    disk_path: &Path,
    info: &keelson_disk::PartitionInfo,
    to: &Path,
    max: Option<u64>,
) -> Result<(), SysextError> {
    if let Some(m) = max
        && info.size_bytes > m
    {
        return Err(SysextError::NotADdi {
            path: disk_path.to_path_buf(),
            reason: format!(
                "partition {} has {} bytes, more than the {m} allowed",
                info.number, info.size_bytes
            ),
        });
    }
    let mut f = File::open(disk_path).map_err(SysextError::io_on("opening", disk_path))?;
    f.seek(SeekFrom::Start(info.first_lba * SECTOR_SIZE))
        .map_err(SysextError::io_on("seeking in", disk_path))?;
    let mut out = File::create(to).map_err(SysextError::io_on("creating", to))?;
    let copied = std::io::copy(&mut f.take(info.size_bytes), &mut out)
        .map_err(SysextError::io_on("copying a partition of", disk_path))?;
    if copied != info.size_bytes {
        return Err(SysextError::NotADdi {
            path: disk_path.to_path_buf(),
            reason: format!(
                "partition {} ends after the end of the file ({copied} of {} bytes)",
                info.number, info.size_bytes
            ),
        });
    }
    Ok(())
}

/// Rewrites the DDI at `image` with a signature partition made with `key` (to `out`, which may
/// be `image` itself; replaced atomically). The data and verity partitions are copied as they
/// are; the root hash comes from their UUIDs and the tree is verified first.
pub fn sign_image(image: &Path, key: &SigningKey, out: &Path) -> Result<BuildOutput, SysextError> {
    let (_disk, layout) = open_layout(image)?;
    let parent = parent_dir(out);
    let work = tempfile::Builder::new()
        .prefix(".keelson-sysext-")
        .tempdir_in(&parent)
        .map_err(SysextError::io_on(
            "creating a temporary directory in",
            &parent,
        ))?;
    let w = work.path();
    let part = |n: u32| {
        layout
            .partitions
            .iter()
            .find(|p| p.number == n)
            .cloned()
            .ok_or_else(|| SysextError::NotADdi {
                path: image.to_path_buf(),
                reason: format!("partition {n} vanished"),
            })
    };
    let data = w.join("data.erofs");
    let verity = w.join("data.verity");
    copy_partition(image, &part(layout.data)?, &data, None)?;
    copy_partition(image, &part(layout.verity)?, &verity, None)?;
    let root_hash = hex::decode(&layout.uuid_root_hash).unwrap_or_default();
    keelson_verity::verify(
        &data,
        &verity,
        &root_hash,
        &keelson_verity::VerityParams::default(),
    )
    .map_err(|source| SysextError::Verity {
        path: image.to_path_buf(),
        source,
    })?;
    let sig = sign::sign_root_hash(&layout.uuid_root_hash, &key.key, &key.cert, w)?;
    let label = layout
        .partitions
        .iter()
        .find(|p| p.number == layout.data)
        .map(|p| p.label.clone())
        .unwrap_or_default();
    let tmp_out = w.join("image.raw");
    assemble(
        &tmp_out,
        &DdiParts {
            arch: &layout.arch,
            label: &label,
            data: &data,
            verity: &verity,
            root_hash: &root_hash,
            signature: Some(&sig),
        },
    )?;
    let (size, sha256) = size_and_sha256(&tmp_out)?;
    publish_mode(&tmp_out)?;
    fs::rename(&tmp_out, out).map_err(SysextError::io_on("renaming the image to", out))?;
    Ok(BuildOutput {
        path: out.to_path_buf(),
        name: String::new(),
        version: String::new(),
        arch: layout.arch,
        root_hash: layout.uuid_root_hash,
        signed: true,
        reload_manager: false,
        size,
        sha256,
        extension_release: String::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> BuildSpec {
        BuildSpec {
            name: "hello".into(),
            version: "1.0".into(),
            arch: "x86-64".into(),
            os_id: DEFAULT_OS_ID.into(),
            sysext_level: Some("1.0".into()),
            os_version: None,
            source_date_epoch: 0,
            signing: None,
        }
    }

    #[test]
    fn spec_checks_name_version_arch_and_level() {
        assert!(spec().validate().is_ok());
        for (f, bad) in [
            (
                "--name",
                BuildSpec {
                    name: "../x".into(),
                    ..spec()
                },
            ),
            (
                "--name",
                BuildSpec {
                    name: ".x".into(),
                    ..spec()
                },
            ),
            (
                "--version",
                BuildSpec {
                    version: "1 0".into(),
                    ..spec()
                },
            ),
            (
                "--arch",
                BuildSpec {
                    arch: "s390x".into(),
                    ..spec()
                },
            ),
            (
                "SYSEXT_LEVEL",
                BuildSpec {
                    sysext_level: None,
                    ..spec()
                },
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.to_string().starts_with(f), "{f}: {e}");
        }
        let bound = BuildSpec {
            sysext_level: None,
            os_version: Some("1.2.0".into()),
            ..spec()
        };
        assert!(bound.validate().is_ok());
        let r = bound.release(true).render();
        assert!(r.contains("VERSION_ID=1.2.0\n") && r.contains("EXTENSION_RELOAD_MANAGER=1\n"));
        assert!(!r.contains("SYSEXT_LEVEL"));
    }

    #[test]
    fn types_per_arch() {
        assert_eq!(ddi_types("x86-64").unwrap().data, types::ROOT_X86_64);
        assert_eq!(
            ddi_types("arm64").unwrap().signature,
            types::ROOT_VERITY_SIG_ARM64
        );
        assert!(ddi_types("x86_64").is_none());
    }
}
