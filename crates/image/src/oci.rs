//! A minimal OCI image layout archive (one layer holding one static binary), for testing the
//! container-runtime contract without a registry: `ctr image import` accepts it.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{ImageError, io_err};

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// What to put in the image.
#[derive(Debug, Clone)]
pub struct OciSpec<'a> {
    /// Image name containerd registers (`io.containerd.image.name`), e.g. `docker.io/library/hello:1`.
    pub name: &'a str,
    /// Path of the binary inside the image, e.g. `bin/busybox`.
    pub binary_path: &'a str,
    /// The binary's bytes (statically linked: the image has nothing else).
    pub binary: &'a [u8],
    /// Default command.
    pub cmd: &'a [&'a str],
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    // Paths here are short constants and digests; set_path only fails on over-long names.
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn tar_bytes(entries: &[(&str, &[u8], u32)], dirs: &[&str]) -> Result<Vec<u8>, std::io::Error> {
    let mut b = tar::Builder::new(Vec::new());
    for d in dirs {
        let h = header(d, 0, 0o755, tar::EntryType::Directory);
        b.append(&h, std::io::empty())?;
    }
    for (path, data, mode) in entries {
        let h = header(path, data.len() as u64, *mode, tar::EntryType::Regular);
        b.append(&h, *data)?;
    }
    b.into_inner()
}

/// The OCI archive (a tar of an OCI image layout) as bytes; deterministic for the same spec.
pub fn archive(spec: &OciSpec<'_>) -> Result<Vec<u8>, ImageError> {
    let tar_err = |e: std::io::Error| ImageError::Io {
        path: spec.binary_path.into(),
        source: e,
    };
    let parent = Path::new(spec.binary_path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    let dirs: Vec<&str> = parent.iter().map(String::as_str).collect();
    let layer = tar_bytes(&[(spec.binary_path, spec.binary, 0o755)], &dirs).map_err(tar_err)?;
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": spec.cmd },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .map_err(|e| ImageError::Io {
        path: "config.json".into(),
        source: e.into(),
    })?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [ { "mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer.len() } ],
    }))
    .map_err(|e| ImageError::Io {
        path: "manifest.json".into(),
        source: e.into(),
    })?;
    let manifest_digest = digest(&manifest);
    let tag = spec
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [ {
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        } ],
    }))
    .map_err(|e| ImageError::Io {
        path: "index.json".into(),
        source: e.into(),
    })?;
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let (lp, cp, mp) = (
        blob(&layer_digest),
        blob(&config_digest),
        blob(&manifest_digest),
    );
    tar_bytes(
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644),
            ("index.json", &index, 0o644),
            (&mp, &manifest, 0o644),
            (&cp, &config, 0o644),
            (&lp, &layer, 0o644),
        ],
        &["blobs", "blobs/sha256"],
    )
    .map_err(tar_err)
}

/// Write the archive to `out`, padded with zeros to a multiple of 512 bytes so it can also be
/// attached to a VM as a raw disk (tar readers stop at the end-of-archive blocks).
pub fn write_archive(spec: &OciSpec<'_>, out: &Path) -> Result<(), ImageError> {
    let mut bytes = archive(spec)?;
    let padded = bytes.len().div_ceil(512) * 512;
    bytes.resize(padded.max(512), 0);
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(&bytes).map_err(io_err(out))?;
    tmp.persist(out).map_err(|e| ImageError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    fn entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(bytes);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            out.insert(p, v);
        }
        out
    }

    #[test]
    fn layout_is_consistent_and_deterministic() {
        let spec = OciSpec {
            name: "docker.io/library/hello:1",
            binary_path: "bin/hello",
            binary: b"\x7fELF fake",
            cmd: &["/bin/hello"],
        };
        let a = archive(&spec).unwrap();
        assert_eq!(a, archive(&spec).unwrap(), "same spec, same bytes");
        let files = entries(&a);
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "docker.io/library/hello:1"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1");
        // Every digest names a blob whose bytes hash to it.
        let mdig = m["digest"].as_str().unwrap();
        let manifest_bytes = &files[&format!("blobs/sha256/{}", &mdig[7..])];
        assert_eq!(digest(manifest_bytes), mdig);
        let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes).unwrap();
        let layer_dig = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer = &files[&format!("blobs/sha256/{}", &layer_dig[7..])];
        assert_eq!(digest(layer), layer_dig);
        assert_eq!(
            manifest["layers"][0]["size"].as_u64().unwrap(),
            layer.len() as u64
        );
        let inner = entries(layer);
        assert_eq!(inner["bin/hello"], b"\x7fELF fake");
        let cdig = manifest["config"]["digest"].as_str().unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", &cdig[7..])]).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_dig);
    }

    #[test]
    fn written_archive_is_sector_padded() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a.tar");
        let spec = OciSpec {
            name: "x:1",
            binary_path: "bin/x",
            binary: &[1, 2, 3],
            cmd: &["/bin/x"],
        };
        write_archive(&spec, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert!(entries(&bytes).contains_key("index.json"));
    }
}
