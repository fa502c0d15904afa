//! `keelson sysext check`: is a file an extension DDI whose verity tree matches its root hash,
//! is its signature good, and would systemd-sysext merge it on a given host?

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use keelson_cmd as cmd;

use crate::ddi::{self, DdiLayout};
use crate::error::SysextError;
use crate::release::{self, EXTENSION_RELEASE_DIR, MatchVerdict, ReleaseFile};
use crate::sign::{self, SIG_MAX, VeritySignature};
use crate::tree;

/// What to check besides the structure.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The name the image is installed under (`<name>.raw`); the file's stem when None.
    pub name: Option<String>,
    /// The host's os-release to match against; no matching when None.
    pub host: Option<ReleaseFile>,
    /// The host's architecture in systemd's naming.
    pub host_arch: String,
    /// Refuse an image without a signature that verifies with `cert`.
    pub require_signature: bool,
    /// The certificate to verify the signature with.
    pub cert: Option<PathBuf>,
}

/// The signature part of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignatureReport {
    /// A signature partition is there and parses.
    pub present: bool,
    /// The signer's certificate fingerprint recorded in the partition.
    pub certificate_fingerprint: Option<String>,
    /// Whether it verified with the given certificate (None: not checked).
    pub verified: Option<bool>,
    /// Why it is missing, malformed or did not verify.
    pub reason: Option<String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The image.
    pub path: PathBuf,
    /// The name systemd-sysext would know it by.
    pub name: String,
    /// Partitions and the architecture they are for.
    pub layout: DdiLayout,
    /// The root hash (from the partition UUIDs, checked against the tree).
    pub root_hash: String,
    /// The verity tree matches the data and the root hash.
    pub verity_ok: bool,
    /// The signature findings.
    pub signature: SignatureReport,
    /// The extension-release fields.
    pub extension_release: Option<ReleaseFile>,
    /// The extension-release file names found in the image.
    pub release_files: Vec<String>,
    /// The verdict of systemd-sysext's matching rules (None when no host was given).
    #[serde(rename = "match")]
    pub matching: Option<MatchVerdict>,
    /// Every reason the image would be refused.
    pub problems: Vec<String>,
    /// No problems.
    pub ok: bool,
}

/// The name an image file is known by: its file name without `.raw`.
pub fn image_name(path: &Path) -> String {
    let f = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    f.strip_suffix(".raw").map(str::to_string).unwrap_or(f)
}

/// Checks the image at `path`. Structural failures that make further checks impossible (no
/// GPT, no data/verity pair, an erofs that does not unpack) are errors; everything else is
/// collected in the report's `problems`.
pub fn check(path: &Path, opts: &CheckOptions) -> Result<CheckReport, SysextError> {
    let (_disk, layout) = ddi::open_layout(path)?;
    let name = opts.name.clone().unwrap_or_else(|| image_name(path));
    let work = tempfile::Builder::new()
        .prefix(".keelson-sysext-check-")
        .tempdir()
        .map_err(SysextError::io_on(
            "creating a temporary directory in",
            &std::env::temp_dir(),
        ))?;
    let w = work.path();
    let part = |n: u32| {
        layout
            .partitions
            .iter()
            .find(|p| p.number == n)
            .cloned()
            .ok_or_else(|| SysextError::NotADdi {
                path: path.to_path_buf(),
                reason: format!("partition {n} is not in the table"),
            })
    };
    let mut problems = Vec::new();

    let data = w.join("data.erofs");
    let verity = w.join("data.verity");
    ddi::copy_partition(path, &part(layout.data)?, &data, None)?;
    ddi::copy_partition(path, &part(layout.verity)?, &verity, None)?;
    let root_hash = hex::decode(&layout.uuid_root_hash).unwrap_or_default();
    let verity_ok = match keelson_verity::verify(
        &data,
        &verity,
        &root_hash,
        &keelson_verity::VerityParams::default(),
    ) {
        Ok(_) => true,
        Err(e) => {
            problems.push(format!(
                "the verity tree does not match root hash {} (the partition UUIDs): {e}",
                layout.uuid_root_hash
            ));
            false
        }
    };

    let mut signature = SignatureReport::default();
    match layout.signature {
        None => signature.reason = Some("the image has no verity signature partition".into()),
        Some(n) => {
            let sig_path = w.join("sig.json");
            ddi::copy_partition(path, &part(n)?, &sig_path, Some(SIG_MAX as u64))?;
            let bytes = fs::read(&sig_path).map_err(SysextError::io_on("reading", &sig_path))?;
            match VeritySignature::from_partition(&bytes) {
                Err(reason) => signature.reason = Some(reason),
                Ok(sig) => {
                    signature.present = true;
                    signature.certificate_fingerprint = sig.certificate_fingerprint.clone();
                    if !sig.root_hash.eq_ignore_ascii_case(&layout.uuid_root_hash) {
                        signature.reason = Some(format!(
                            "it signs root hash {} but the partitions carry {}",
                            sig.root_hash, layout.uuid_root_hash
                        ));
                        signature.verified = Some(false);
                    } else if let Some(cert) = &opts.cert {
                        match sign::verify_signature(&sig, &layout.uuid_root_hash, cert, w) {
                            Ok(()) => signature.verified = Some(true),
                            Err(reason) => {
                                signature.verified = Some(false);
                                signature.reason = Some(reason);
                            }
                        }
                    }
                }
            }
        }
    }
    if opts.require_signature {
        match (&opts.cert, signature.verified) {
            (None, _) => problems.push(
                "a signature is required but no certificate was given to check it with (--cert)"
                    .into(),
            ),
            (Some(_), Some(true)) => {}
            (Some(_), _) => problems.push(format!(
                "a signature is required: {}",
                signature
                    .reason
                    .clone()
                    .unwrap_or_else(|| "it did not verify".into())
            )),
        }
    } else if signature.present && signature.verified == Some(false) {
        problems.push(format!(
            "the signature is bad: {}",
            signature.reason.clone().unwrap_or_default()
        ));
    }

    if !verity_ok {
        // systemd would not mount it: its content is not to be read, let alone trusted.
        return Ok(CheckReport {
            path: path.to_path_buf(),
            name,
            root_hash: layout.uuid_root_hash.clone(),
            layout,
            verity_ok,
            signature,
            extension_release: None,
            release_files: Vec::new(),
            matching: None,
            problems,
            ok: false,
        });
    }

    // The file system: fsck.erofs checks every file while unpacking it.
    let tree_dir = w.join("tree");
    cmd::run(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", tree_dir.display()))
            .arg(&data),
    )
    .map_err(|e| SysextError::NotADdi {
        path: path.to_path_buf(),
        reason: format!("the data partition is not a valid erofs: {e}"),
    })?;
    if let Err(e) = tree::check_tree(&tree_dir) {
        problems.push(
            e.to_string()
                .replace(&tree_dir.display().to_string(), "the image"),
        );
    }
    let rel_dir = tree_dir.join(EXTENSION_RELEASE_DIR);
    let mut release_files: Vec<String> = fs::read_dir(&rel_dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("extension-release."))
                .collect()
        })
        .unwrap_or_default();
    release_files.sort();
    let wanted = format!("extension-release.{name}");
    let extension_release = if release_files.contains(&wanted) {
        Some(ReleaseFile::read(&rel_dir.join(&wanted))?)
    } else {
        match release_files.as_slice() {
            [] => problems.push(format!(
                "the image has no /{EXTENSION_RELEASE_DIR}/extension-release.* file"
            )),
            found => problems.push(format!(
                "systemd-sysext looks for /{EXTENSION_RELEASE_DIR}/{wanted} in an image named \
                 {name}.raw, but the image has {}: install it under the matching name",
                found.join(", ")
            )),
        }
        None
    };
    let matching = opts
        .host
        .as_ref()
        .map(|host| release::validate(host, extension_release.as_ref(), &opts.host_arch));
    if let Some(m) = &matching
        && !m.matches
    {
        problems.push(format!("does not match the host: {}", m.reason));
    }
    let ok = problems.is_empty();
    Ok(CheckReport {
        path: path.to_path_buf(),
        name,
        root_hash: layout.uuid_root_hash.clone(),
        layout,
        verity_ok,
        signature,
        extension_release,
        release_files,
        matching,
        problems,
        ok,
    })
}
