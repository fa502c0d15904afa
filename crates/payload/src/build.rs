//! Building a payload from the output of `keelson image build`, and adding signatures.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rayon::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    Chunk, Chunking, FORMAT, Header, Manifest, Part, PartName, PayloadError, Signature,
    SigningKeyFile, check_uki_root_hash, read_header, read_uki,
};

/// The default zstd level.
pub const DEFAULT_LEVEL: i32 = 3;

/// The release a payload is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInput {
    /// os-release `ID` (the OS definition's `name`).
    pub os_id: String,
    /// systemd architecture name (`x86-64`, `arm64`).
    pub arch: String,
    /// The release's version.
    pub version: String,
    /// dm-verity root hash of usr, lowercase hex.
    pub usr_root_hash: String,
    /// The usr erofs image.
    pub usr: PathBuf,
    /// The verity tree of usr.
    pub usr_verity: PathBuf,
    /// The UKI.
    pub uki: PathBuf,
}

/// The part of `keelson image build`'s record (`<name>_<version>.json`) a payload needs.
#[derive(Debug, Deserialize)]
struct BuildRecord {
    version: String,
    usr_root_hash: String,
    files: Vec<RecordFile>,
}

#[derive(Debug, Deserialize)]
struct RecordFile {
    kind: String,
    path: PathBuf,
}

impl BuildInput {
    /// The file of part `name`.
    pub fn part_path(&self, name: PartName) -> &Path {
        match name {
            PartName::Usr => &self.usr,
            PartName::UsrVerity => &self.usr_verity,
            PartName::Uki => &self.uki,
        }
    }

    /// Read the build record `<name>_<version>.json` in `dir` (the output directory of
    /// `keelson image build`): the parts by role, the root hash, the OS id (`<name>`); the
    /// architecture comes from the UKI's PE machine type.
    pub fn from_image_dir(dir: &Path, version: &str) -> Result<Self, PayloadError> {
        let suffix = format!("_{version}.json");
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| PayloadError::io(dir, e))? {
            let entry = entry.map_err(|e| PayloadError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(os_id) = name.strip_suffix(&suffix)
                && !os_id.is_empty()
            {
                found.push((os_id.to_string(), entry.path()));
            }
        }
        let (os_id, record_path) = match found.len() {
            1 => found.remove(0),
            0 => {
                return Err(PayloadError::BuildInput {
                    path: dir.to_path_buf(),
                    message: format!(
                        "no build record *{suffix} (run keelson image build --version {version})"
                    ),
                });
            }
            n => {
                return Err(PayloadError::BuildInput {
                    path: dir.to_path_buf(),
                    message: format!("{n} build records *{suffix}; keep one"),
                });
            }
        };
        let err = |message: String| PayloadError::BuildInput {
            path: record_path.clone(),
            message,
        };
        let text = fs::read(&record_path).map_err(|e| PayloadError::io(&record_path, e))?;
        let record: BuildRecord =
            serde_json::from_slice(&text).map_err(|e| err(format!("not a build record: {e}")))?;
        if record.version != version {
            return Err(err(format!(
                "records version {:?}, not {version:?}",
                record.version
            )));
        }
        let part = |role: &str| -> Result<PathBuf, PayloadError> {
            let mut it = record.files.iter().filter(|f| f.kind == role);
            let (Some(f), None) = (it.next(), it.next()) else {
                return Err(err(format!("want exactly one file of role {role:?}")));
            };
            // The record names files by absolute path; a moved output directory still works.
            let p = if f.path.is_absolute() {
                f.path.clone()
            } else {
                dir.join(&f.path)
            };
            if p.exists() {
                return Ok(p);
            }
            match f.path.file_name() {
                Some(n) if dir.join(n).exists() => Ok(dir.join(n)),
                _ => Err(err(format!("{role} file {} does not exist", p.display()))),
            }
        };
        let usr = part("usr")?;
        let usr_verity = part("usr-verity")?;
        let uki = part("uki")?;
        let f = File::open(&uki).map_err(|e| PayloadError::io(&uki, e))?;
        let info = read_uki(f)?;
        let arch = info.arch.ok_or_else(|| PayloadError::BuildInput {
            path: uki.clone(),
            message: "unknown PE machine type".into(),
        })?;
        Ok(BuildInput {
            os_id,
            arch: arch.to_string(),
            version: version.to_string(),
            usr_root_hash: record.usr_root_hash.to_ascii_lowercase(),
            usr,
            usr_verity,
            uki,
        })
    }
}

/// How to build a payload.
pub struct BuildOptions<'a> {
    /// How parts are cut into chunks (default: FastCDC 8/32/128 KiB), recorded in the
    /// manifest.
    pub chunking: Chunking,
    /// zstd level (default 3).
    pub level: i32,
    /// The manifest's `created` time (whole seconds).
    pub created: DateTime<Utc>,
    /// The manifest expires this long after `created`.
    pub expires_in: Duration,
    /// Keys to sign with (none: an unsigned payload, for `sign` later).
    pub keys: Vec<&'a SigningKeyFile>,
    /// Called with the number of part bytes read since the last call.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        BuildOptions {
            chunking: Chunking::default(),
            level: DEFAULT_LEVEL,
            created: Utc::now().trunc_subsecs(0),
            expires_in: Duration::days(90),
            keys: Vec::new(),
            progress: None,
        }
    }
}

/// A temporary file next to `out`, removed unless renamed over it.
struct TempOut {
    path: PathBuf,
    file: Option<File>,
}

impl TempOut {
    fn new(out: &Path, tag: &str) -> Result<Self, PayloadError> {
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "payload".into());
        let path = dir.join(format!(".{name}.{tag}.{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| PayloadError::io(&path, e))?;
        Ok(TempOut {
            path,
            file: Some(file),
        })
    }

    fn file(&mut self) -> Result<&mut File, PayloadError> {
        self.file
            .as_mut()
            .ok_or_else(|| PayloadError::io(&self.path, std::io::Error::other("already closed")))
    }

    fn persist(mut self, out: &Path) -> Result<(), PayloadError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| PayloadError::io(&self.path, e))?;
        }
        fs::rename(&self.path, out).map_err(|e| PayloadError::io(out, e))
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where one distinct chunk's compressed copy lives in the data area.
type Stored = (u64, u64);

/// Cut one part into chunks, compress the new ones in parallel, append them to `data`.
fn write_part(
    name: PartName,
    path: &Path,
    opts: &BuildOptions,
    data: &mut BufWriter<&mut File>,
    data_path: &Path,
    data_len: &mut u64,
    stored: &mut HashMap<[u8; 32], Stored>,
) -> Result<Part, PayloadError> {
    let f = File::open(path).map_err(|e| PayloadError::io(path, e))?;
    let mut cuts = opts
        .chunking
        .chunks(std::io::BufReader::with_capacity(1 << 20, f))?;
    let batch = rayon::current_num_threads().max(1) * 4;
    let mut part_hash = Sha256::new();
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    loop {
        // Cut up to `batch` chunks: the only part bytes in memory at once.
        let mut bufs = Vec::with_capacity(batch);
        for _ in 0..batch {
            match cuts.next() {
                Some(Ok((_, buf))) => bufs.push(buf),
                Some(Err(e)) => return Err(PayloadError::io(path, e)),
                None => break,
            }
        }
        if bufs.is_empty() {
            break;
        }
        let read: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let hashes: Vec<[u8; 32]> = bufs.par_iter().map(|b| Sha256::digest(b).into()).collect();
        // Compress each distinct chunk not stored yet, once.
        let mut todo: Vec<usize> = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            if !stored.contains_key(h) && !todo.iter().any(|&j| hashes[j] == *h) {
                todo.push(i);
            }
        }
        let compressed: Vec<Result<Vec<u8>, std::io::Error>> = todo
            .par_iter()
            .map(|&i| zstd::bulk::compress(&bufs[i], opts.level))
            .collect();
        for (&i, c) in todo.iter().zip(compressed) {
            let c = c.map_err(|e| PayloadError::io(path, e))?;
            data.write_all(&c)
                .map_err(|e| PayloadError::io(data_path, e))?;
            stored.insert(hashes[i], (*data_len, c.len() as u64));
            *data_len += c.len() as u64;
        }
        for (b, h) in bufs.iter().zip(&hashes) {
            part_hash.update(b);
            let (data_offset, data_size) = stored[h];
            chunks.push(Chunk {
                offset,
                size: b.len() as u64,
                sha256: hex::encode(h),
                data_offset,
                data_size,
            });
            offset += b.len() as u64;
        }
        if let Some(p) = opts.progress {
            p(read);
        }
    }
    Ok(Part {
        name,
        size: offset,
        sha256: hex::encode(part_hash.finalize()),
        chunks,
    })
}

/// Build the payload `out` from `input`: check the usr root hash against the UKI's `usrhash=`
/// (RootHashMismatch otherwise), cut each part into chunks, compress them with zstd in
/// parallel (identical chunks stored once), sign the manifest with `opts.keys`, and publish
/// the file by rename. Each part is read chunk by chunk, never whole.
pub fn build(
    input: &BuildInput,
    out: &Path,
    opts: &BuildOptions,
) -> Result<Manifest, PayloadError> {
    opts.chunking.check()?;
    keelson_version::Version::parse(&input.version)
        .map_err(|e| PayloadError::BadVersion { value: e.value })?;
    let uki_file = File::open(&input.uki).map_err(|e| PayloadError::io(&input.uki, e))?;
    let uki_hash = crate::uki_usrhash(uki_file)?;

    let mut data = TempOut::new(out, "data")?;
    let data_path = data.path.clone();
    let mut stored = HashMap::new();
    let mut data_len = 0u64;
    let mut parts = Vec::new();
    {
        let mut w = BufWriter::with_capacity(1 << 20, data.file()?);
        for name in PartName::ALL {
            parts.push(write_part(
                name,
                input.part_path(name),
                opts,
                &mut w,
                &data_path,
                &mut data_len,
                &mut stored,
            )?);
        }
        w.flush().map_err(|e| PayloadError::io(&data_path, e))?;
    }
    let manifest = Manifest {
        format: FORMAT,
        os_id: input.os_id.clone(),
        arch: input.arch.clone(),
        version: input.version.clone(),
        usr_root_hash: input.usr_root_hash.to_ascii_lowercase(),
        created: opts.created,
        expires: opts.created + opts.expires_in,
        chunking: Some(opts.chunking.clone()),
        parts,
    };
    manifest.check_structure()?;
    check_uki_root_hash(&manifest, &uki_hash)?;
    let manifest_bytes = manifest.to_bytes()?;
    let signatures = opts
        .keys
        .iter()
        .map(|k| k.sign_manifest(&manifest_bytes))
        .collect();
    let header = Header::new(manifest_bytes, signatures)?;

    let mut tmp = TempOut::new(out, "tmp")?;
    let tmp_path = tmp.path.clone();
    let f = tmp.file()?;
    header.write_to(&mut *f, &tmp_path)?;
    let src = data.file()?;
    src.seek(SeekFrom::Start(0))
        .map_err(|e| PayloadError::io(&data_path, e))?;
    std::io::copy(src, f).map_err(|e| PayloadError::io(&tmp_path, e))?;
    tmp.persist(out)?;
    Ok(manifest)
}

/// Add a signature by `key` to the payload at `path` without changing the manifest bytes (a
/// signature by the same key is replaced); the file is rewritten through a temporary name and
/// a rename. Returns the new signature.
pub fn sign(payload: &Path, key: &SigningKeyFile) -> Result<Signature, PayloadError> {
    let mut src = File::open(payload).map_err(|e| PayloadError::io(payload, e))?;
    let old = read_header(std::io::BufReader::new(&mut src)).map_err(|e| match e {
        PayloadError::Io { source, .. } => PayloadError::io(payload, source),
        other => other,
    })?;
    // Sign only what parses: a signature vouches for a sound manifest.
    Manifest::from_bytes(&old.manifest_bytes)?;
    let sig = key.sign_manifest(&old.manifest_bytes);
    let mut signatures: Vec<Signature> = old
        .signatures
        .into_iter()
        .filter(|s| s.key_id != sig.key_id)
        .collect();
    signatures.push(sig.clone());
    let header = Header::new(old.manifest_bytes, signatures)?;

    let mut tmp = TempOut::new(payload, "sign")?;
    let tmp_path = tmp.path.clone();
    let f = tmp.file()?;
    header.write_to(&mut *f, &tmp_path)?;
    src.seek(SeekFrom::Start(old.data_start))
        .map_err(|e| PayloadError::io(payload, e))?;
    std::io::copy(&mut src, f).map_err(|e| PayloadError::io(&tmp_path, e))?;
    tmp.persist(payload)?;
    Ok(sig)
}
