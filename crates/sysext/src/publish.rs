//! `keelson sysext publish`: a directory systemd-sysupdate (257) can update extensions from:
//! versioned images `<name>-<version>-<arch>.raw`, `SHA256SUMS` over all of them, and one
//! `<name>.transfer` per extension.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::check::{self, CheckOptions};
use crate::ddi::{parent_dir, publish_mode, size_and_sha256};
use crate::error::SysextError;

/// Where nodes keep the downloaded versions (not a sysext search path, so the versioned names
/// are never merged themselves).
pub const DEFAULT_TARGET_DIR: &str = "/var/lib/extensions.d";
/// Where the symlink to the current version goes (a sysext search path).
pub const DEFAULT_LINK_DIR: &str = "/var/lib/extensions";

/// How the transfer files are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// The output directory.
    pub dir: PathBuf,
    /// Base URL the directory is served at (`[Source] Type=url-file`); without it the source
    /// is the directory itself (`Type=regular-file`).
    pub url: Option<String>,
    /// `[Target] Path`.
    pub target_dir: String,
    /// Directory of `CurrentSymlink=<dir>/<name>.raw`.
    pub link_dir: String,
    /// `InstancesMax` (at least 2).
    pub instances_max: u32,
}

impl PublishOptions {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PublishOptions {
            dir: dir.into(),
            url: None,
            target_dir: DEFAULT_TARGET_DIR.into(),
            link_dir: DEFAULT_LINK_DIR.into(),
            instances_max: 2,
        }
    }
}

/// One published image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Extension name.
    pub name: String,
    /// Extension version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// The file in the output directory.
    pub path: PathBuf,
    /// SHA-256 (hex).
    pub sha256: String,
    /// The transfer file for this extension.
    pub transfer: PathBuf,
}

/// The sysupdate file name of a version.
pub fn versioned_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}-{version}-{arch}.raw")
}

/// The `.transfer` file for extension `name` on `arch`.
pub fn transfer_file(name: &str, arch: &str, opts: &PublishOptions) -> String {
    let pattern = format!("{name}-@v-{arch}.raw");
    let (ty, path) = match &opts.url {
        Some(u) => ("url-file", u.trim_end_matches('/').to_string()),
        None => (
            "regular-file",
            std::path::absolute(&opts.dir)
                .unwrap_or_else(|_| opts.dir.clone())
                .display()
                .to_string(),
        ),
    };
    format!(
        "# systemd-sysupdate transfer for the {name} system extension (keelson sysext publish).\n\
         # The images carry a signed verity root hash; SHA256SUMS is not GPG-signed (Verify=no).\n\
         [Transfer]\n\
         Verify=no\n\
         \n\
         [Source]\n\
         Type={ty}\n\
         Path={path}\n\
         MatchPattern={pattern}\n\
         \n\
         [Target]\n\
         Type=regular-file\n\
         Path={target}\n\
         MatchPattern={pattern}\n\
         Mode=0444\n\
         InstancesMax={max}\n\
         CurrentSymlink={link}/{name}.raw\n",
        target = opts.target_dir,
        max = opts.instances_max.max(2),
        link = opts.link_dir.trim_end_matches('/'),
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SysextError> {
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".keelson-publish-")
        .tempfile_in(&dir)
        .map_err(SysextError::io_on("creating a temporary file in", &dir))?;
    fs::write(tmp.path(), bytes).map_err(SysextError::io_on("writing", tmp.path()))?;
    publish_mode(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| SysextError::io("renaming into place", path, e.error))?;
    Ok(())
}

/// Copies each image into `opts.dir` under its versioned name (after a structural check),
/// writes its extension's transfer file and rewrites `SHA256SUMS` over every `*.raw` there.
pub fn publish(files: &[PathBuf], opts: &PublishOptions) -> Result<Vec<Published>, SysextError> {
    fs::create_dir_all(&opts.dir).map_err(SysextError::io_on("creating", &opts.dir))?;
    let mut out = Vec::new();
    for f in files {
        // The name is whatever the image's release file names (a single one is expected).
        let report = check::check(f, &CheckOptions::default())?;
        let (name, rel) = match report.release_files.as_slice() {
            [one] => {
                let name = one.trim_start_matches("extension-release.").to_string();
                let r = check::check(
                    f,
                    &CheckOptions {
                        name: Some(name.clone()),
                        ..CheckOptions::default()
                    },
                )?;
                if !r.ok {
                    return Err(SysextError::NotADdi {
                        path: f.clone(),
                        reason: r.problems.join("; "),
                    });
                }
                (name, r.extension_release.unwrap_or_default())
            }
            other => {
                return Err(SysextError::NotADdi {
                    path: f.clone(),
                    reason: format!(
                        "expected exactly one extension-release file, found {}",
                        other.len()
                    ),
                });
            }
        };
        let version = rel.get("IMAGE_VERSION").ok_or_else(|| SysextError::NotADdi {
            path: f.clone(),
            reason: "its extension-release has no IMAGE_VERSION (build it with keelson sysext build)"
                .into(),
        })?;
        let arch = report.layout.arch.clone();
        let dest = opts.dir.join(versioned_name(&name, version, &arch));
        let tmp = tempfile::Builder::new()
            .prefix(".keelson-publish-")
            .tempfile_in(&opts.dir)
            .map_err(SysextError::io_on(
                "creating a temporary file in",
                &opts.dir,
            ))?;
        fs::copy(f, tmp.path()).map_err(SysextError::io_on("copying", f))?;
        publish_mode(tmp.path())?;
        tmp.persist(&dest)
            .map_err(|e| SysextError::io("renaming into place", &dest, e.error))?;
        let transfer = opts.dir.join(format!("{name}.transfer"));
        write_atomic(&transfer, transfer_file(&name, &arch, opts).as_bytes())?;
        let (_, sha256) = size_and_sha256(&dest)?;
        out.push(Published {
            name,
            version: version.to_string(),
            arch,
            path: dest,
            sha256,
            transfer,
        });
    }
    write_sums(&opts.dir)?;
    Ok(out)
}

/// Rewrites `dir/SHA256SUMS` (sha256sum format, sorted by name) over every `*.raw` in `dir`.
pub fn write_sums(dir: &Path) -> Result<String, SysextError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(SysextError::io_on("listing", dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".raw") && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut text = String::new();
    for n in names {
        let (_, sha) = size_and_sha256(&dir.join(&n))?;
        text.push_str(&format!("{sha}  {n}\n"));
    }
    write_atomic(&dir.join("SHA256SUMS"), text.as_bytes())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn transfer_names_source_target_and_symlink() {
        let mut o = PublishOptions::new("/srv/ext");
        o.url = Some("https://updates.example/ext/".into());
        let t = transfer_file("jq", "x86-64", &o);
        for line in [
            "[Source]\nType=url-file\nPath=https://updates.example/ext\nMatchPattern=jq-@v-x86-64.raw\n",
            "[Target]\nType=regular-file\nPath=/var/lib/extensions.d\nMatchPattern=jq-@v-x86-64.raw\n",
            "InstancesMax=2\n",
            "CurrentSymlink=/var/lib/extensions/jq.raw\n",
            "Verify=no\n",
        ] {
            assert!(t.contains(line), "{line:?} missing in\n{t}");
        }
        let local = transfer_file("jq", "arm64", &PublishOptions::new("/srv/ext"));
        assert!(
            local.contains("Type=regular-file\nPath=/srv/ext\n"),
            "{local}"
        );
        assert_eq!(versioned_name("jq", "1.7", "x86-64"), "jq-1.7-x86-64.raw");
    }
}
