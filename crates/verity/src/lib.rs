//! dm-verity hash trees, bit-exact with cryptsetup's veritysetup (format 0 and 1).
//!
//! [`format`] builds the hash area (superblock + tree) for a data file, [`verify`] recomputes it
//! and names the first bad block, [`dump`] reads a superblock. The data is hashed in parallel
//! from large positioned reads; only the tree (about 1/128 of the data) is held in memory.
//!
//! ```no_run
//! use keelson_verity::{VerityParams, format};
//! let info = format(
//!     "usr.img".as_ref(),
//!     "usr.hash".as_ref(),
//!     &VerityParams::default().with_salt(vec![0xaa; 32]),
//! )?;
//! println!("{}", info.root_hash_hex());
//! # Ok::<(), keelson_verity::VerityError>(())
//! ```

// Every public item carries a one-line doc; keep the compiler checking it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

mod error;
mod params;
mod ser;
mod superblock;
mod tree;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

pub use error::{SuperblockError, VerityError};
pub use params::{
    DEFAULT_SALT_SIZE, HashAlgorithm, HashType, MAX_BLOCK_SIZE, MAX_SALT_SIZE, MIN_BLOCK_SIZE,
    SaltSpec, VerityParams, check_block_size, decode_root_hash, parse_uuid,
};
pub use superblock::{SUPERBLOCK_SIZE, Superblock};

use tree::{BlockHasher, Layout};

/// Everything known about a hash tree: parameters, geometry and (after format/verify) the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerityInfo {
    /// Hash format (0 or 1).
    pub hash_type: HashType,
    /// Digest algorithm.
    pub algorithm: HashAlgorithm,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks protected.
    pub data_blocks: u64,
    /// Hash blocks in the tree, superblock not counted (veritysetup's `Hash blocks:`).
    pub hash_blocks: u64,
    /// Byte offset of the hash area (the superblock, if any) in the hash file.
    pub hash_offset: u64,
    /// First tree block in hash-block units: `<hash_start_block>` of the kernel table.
    pub hash_start_block: u64,
    /// Bytes of the hash area: superblock, padding and tree.
    pub hash_area_size: u64,
    /// Bytes the hash file needs (end of the tree): veritysetup's `Hash device size`.
    pub hash_device_size: u64,
    /// Whether a superblock is (to be) written at `hash_offset`.
    pub superblock: bool,
    /// Salt bytes (hex in JSON).
    #[serde(serialize_with = "ser::hex")]
    pub salt: Vec<u8>,
    /// Superblock UUID (None without a superblock).
    #[serde(serialize_with = "ser::opt_uuid")]
    pub uuid: Option<[u8; 16]>,
    /// Root hash (hex in JSON); None from [`dump`], which has no root to report.
    #[serde(serialize_with = "ser::opt_hex")]
    pub root_hash: Option<Vec<u8>>,
}

impl VerityInfo {
    fn new(
        layout: &Layout,
        hash_type: HashType,
        hash_offset: u64,
        superblock: bool,
        salt: Vec<u8>,
        uuid: Option<[u8; 16]>,
        root_hash: Option<Vec<u8>>,
    ) -> Self {
        let hbs = layout.hash_block_size as u64;
        let hash_device_size = if layout.levels.is_empty() && !superblock {
            0
        } else {
            layout.end_block * hbs
        };
        VerityInfo {
            hash_type,
            algorithm: layout.algorithm,
            data_block_size: layout.data_block_size as u32,
            hash_block_size: layout.hash_block_size as u32,
            data_blocks: layout.data_blocks,
            hash_blocks: layout.hash_blocks(),
            hash_offset,
            hash_start_block: layout.tree_start_block,
            hash_area_size: hash_device_size.saturating_sub(hash_offset),
            hash_device_size,
            superblock,
            salt,
            uuid,
            root_hash,
        }
    }

    /// Root hash as lowercase hex (empty if unknown, as after [`dump`]).
    pub fn root_hash_hex(&self) -> String {
        self.root_hash
            .as_deref()
            .map(hex::encode)
            .unwrap_or_default()
    }

    /// Salt as hex, or `-` when there is none (veritysetup's notation).
    pub fn salt_hex(&self) -> String {
        if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        }
    }

    /// UUID in canonical text form, empty without a superblock.
    pub fn uuid_string(&self) -> String {
        self.uuid
            .map(|u| uuid::Uuid::from_bytes(u).hyphenated().to_string())
            .unwrap_or_default()
    }

    /// The device-mapper table line for `dmsetup create` / the kernel's `dm-mod.create=`.
    pub fn dm_table(&self, data_dev: &str, hash_dev: &str) -> String {
        format!(
            "0 {} verity {} {} {} {} {} {} {} {} {} {}",
            self.data_blocks * u64::from(self.data_block_size) / 512,
            self.hash_type.number(),
            data_dev,
            hash_dev,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block,
            self.algorithm,
            self.root_hash_hex(),
            self.salt_hex()
        )
    }
}

/// Size of a regular file or block device (metadata says 0 for block devices, seeking does not).
fn file_size(f: &File, path: &Path) -> Result<u64, VerityError> {
    let mut f = f;
    f.seek(SeekFrom::End(0))
        .map_err(|e| VerityError::io(path, "finding the size", e))
}

/// Are `a` and `b` the same file or block device?
fn same_file(a: &File, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (a.metadata(), std::fs::metadata(b)) else {
        return false;
    };
    (ma.dev() == mb.dev() && ma.ino() == mb.ino())
        || (ma.file_type().is_block_device()
            && mb.file_type().is_block_device()
            && ma.rdev() == mb.rdev())
}

/// Work out how many data blocks there are and check the data area against the hash area.
fn resolve_data_blocks(
    data: &File,
    data_path: &Path,
    shared: bool,
    params: &VerityParams,
) -> Result<u64, VerityError> {
    let size = file_size(data, data_path)?;
    let dbs = u64::from(params.data_block_size);
    // In one shared file the data ends where the hash area starts unless told otherwise.
    let area = if shared {
        size.min(params.hash_offset)
    } else {
        size
    };
    let data_blocks = match params.data_blocks {
        Some(n) => n,
        None => area / dbs,
    };
    if data_blocks == 0 {
        return Err(VerityError::DataTooSmall {
            path: data_path.to_path_buf(),
            size: area,
            block_size: params.data_block_size,
        });
    }
    let needed = data_blocks
        .checked_mul(dbs)
        .ok_or(VerityError::TooLarge { data_blocks })?;
    if needed > size {
        return Err(VerityError::DataTooShort {
            path: data_path.to_path_buf(),
            data_blocks,
            block_size: params.data_block_size,
            needed,
            available: size,
        });
    }
    if shared && needed > params.hash_offset {
        return Err(VerityError::Overlap {
            path: data_path.to_path_buf(),
            hash_offset: params.hash_offset,
            data_end: needed,
        });
    }
    Ok(data_blocks)
}

/// First tree block: after the superblock (rounded up to a hash block), or at the offset.
fn tree_start_block(hash_offset: u64, hash_block_size: u32, superblock: bool) -> u64 {
    let hbs = u64::from(hash_block_size);
    if superblock {
        (hash_offset + SUPERBLOCK_SIZE as u64).div_ceil(hbs)
    } else {
        hash_offset / hbs
    }
}

/// Build the hash tree of `data` and write the hash area to `hash` (which may be `data` itself
/// with a `hash_offset` past the data), like `veritysetup format DATA HASH`.
///
/// Nothing is written until every parameter is checked and the whole tree is computed. A new
/// hash file, or a regular one written from offset 0, is written to a temporary file next to it
/// and renamed into place; otherwise (the data file itself, a block device, an existing file
/// with a `hash_offset`) the hash area is written in place and the rest of the file is kept.
pub fn format(data: &Path, hash: &Path, params: &VerityParams) -> Result<VerityInfo, VerityError> {
    params.validate()?;
    let data_file = File::open(data).map_err(|e| VerityError::io(data, "opening data file", e))?;
    let shared = same_file(&data_file, hash);
    let data_blocks = resolve_data_blocks(&data_file, data, shared, params)?;
    let salt = params.salt.resolve()?;
    let uuid = if params.superblock {
        Some(
            params
                .uuid
                .unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes()),
        )
    } else {
        None
    };
    let start = tree_start_block(
        params.hash_offset,
        params.hash_block_size,
        params.superblock,
    );
    let layout = Layout::new(
        params.algorithm,
        params.hash_type,
        params.data_block_size,
        params.hash_block_size,
        data_blocks,
        start,
    )?;
    let hasher = BlockHasher::new(params.algorithm, params.hash_type, &salt);
    let (levels, root) = tree::build(&data_file, data, &layout, &hasher)?;
    let info = VerityInfo::new(
        &layout,
        params.hash_type,
        params.hash_offset,
        params.superblock,
        salt,
        uuid,
        Some(root),
    );

    // The hash area, in file order: superblock, zero padding, then levels top-down.
    let mut area: Vec<&[u8]> = Vec::new();
    let sb_block;
    if let Some(uuid) = uuid {
        let sb = Superblock {
            hash_type: params.hash_type,
            uuid,
            algorithm: params.algorithm,
            data_block_size: params.data_block_size,
            hash_block_size: params.hash_block_size,
            data_blocks,
            salt: info.salt.clone(),
        };
        // From the offset to the first tree block: at least the 512-byte superblock, at most
        // one hash block more.
        let header_len = start * u64::from(params.hash_block_size) - params.hash_offset;
        let mut block = vec![0u8; header_len as usize];
        block[..SUPERBLOCK_SIZE].copy_from_slice(&sb.to_bytes());
        sb_block = block;
        area.push(&sb_block);
    }
    area.extend(levels.iter().rev().map(Vec::as_slice));
    write_hash_area(hash, shared, params.hash_offset, &area)?;
    tracing::debug!(root = %info.root_hash_hex(), data_blocks, "verity hash tree written");
    Ok(info)
}

fn write_all_at(f: &File, path: &Path, offset: u64, parts: &[&[u8]]) -> Result<(), VerityError> {
    let mut pos = offset;
    for p in parts {
        f.write_all_at(p, pos)
            .map_err(|e| VerityError::io(path, "writing hash area", e))?;
        pos += p.len() as u64;
    }
    Ok(())
}

fn write_hash_area(
    hash: &Path,
    shared: bool,
    offset: u64,
    parts: &[&[u8]],
) -> Result<(), VerityError> {
    let existing = std::fs::metadata(hash).ok();
    let replace = match &existing {
        None => true,
        Some(m) => !shared && m.file_type().is_file() && offset == 0,
    };
    if !replace {
        let f = OpenOptions::new()
            .write(true)
            .open(hash)
            .map_err(|e| VerityError::io(hash, "opening hash file for writing", e))?;
        write_all_at(&f, hash, offset, parts)?;
        return f
            .sync_all()
            .map_err(|e| VerityError::io(hash, "syncing hash file", e));
    }
    let dir = match hash.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".verity-")
        .tempfile_in(dir)
        .map_err(|e| VerityError::io(dir, "creating temporary hash file", e))?;
    let written = parts.iter().map(|p| p.len() as u64).sum::<u64>();
    // Like veritysetup, an empty hash area (one data block, no superblock) leaves an empty file.
    let end = if written == 0 { 0 } else { offset + written };
    tmp.as_file()
        .set_len(end)
        .map_err(|e| VerityError::io(tmp.path(), "sizing temporary hash file", e))?;
    write_all_at(tmp.as_file(), hash, offset, parts)?;
    tmp.as_file_mut()
        .flush()
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| VerityError::io(hash, "syncing temporary hash file", e))?;
    tmp.persist(hash)
        .map_err(|e| VerityError::io(hash, "renaming temporary hash file into place", e.error))?;
    Ok(())
}

/// Read the superblock at `hash_offset` of `hash`, like `veritysetup dump`.
pub fn dump(hash: &Path, hash_offset: u64) -> Result<VerityInfo, VerityError> {
    if !hash_offset.is_multiple_of(512) {
        return Err(VerityError::HashOffsetUnaligned {
            offset: hash_offset,
        });
    }
    let sb = Superblock::read(hash, hash_offset)?;
    let layout = layout_for_superblock(&sb, hash_offset)?;
    Ok(VerityInfo::new(
        &layout,
        sb.hash_type,
        hash_offset,
        true,
        sb.salt,
        Some(sb.uuid),
        None,
    ))
}

fn layout_for_superblock(sb: &Superblock, hash_offset: u64) -> Result<Layout, VerityError> {
    Layout::new(
        sb.algorithm,
        sb.hash_type,
        sb.data_block_size,
        sb.hash_block_size,
        sb.data_blocks,
        tree_start_block(hash_offset, sb.hash_block_size, true),
    )
}

/// Recompute the tree of `data` and check it against the stored one in `hash` and `root_hash`,
/// like `veritysetup verify`; the error names the first bad block.
///
/// With `params.superblock` the parameters come from the superblock at `params.hash_offset`
/// (the other fields of `params` are ignored); without it they come from `params`, whose salt
/// must be [`SaltSpec::Fixed`]. Checks run top-down as the kernel does: the root against the
/// top block, each hash block against its entry one level up, then each data block against
/// level 0, so a corrupted hash block is reported as such and not as a bad data block.
pub fn verify(
    data: &Path,
    hash: &Path,
    root_hash: &[u8],
    params: &VerityParams,
) -> Result<VerityInfo, VerityError> {
    if !params.hash_offset.is_multiple_of(512) {
        return Err(VerityError::HashOffsetUnaligned {
            offset: params.hash_offset,
        });
    }
    let data_file = File::open(data).map_err(|e| VerityError::io(data, "opening data file", e))?;
    let hash_file = File::open(hash).map_err(|e| VerityError::io(hash, "opening hash file", e))?;
    let shared = same_file(&data_file, hash);
    let (layout, hash_type, salt, uuid) = if params.superblock {
        let sb = Superblock::read_from(&hash_file, hash, params.hash_offset)?;
        let layout = layout_for_superblock(&sb, params.hash_offset)?;
        let p = VerityParams {
            data_blocks: Some(sb.data_blocks),
            data_block_size: sb.data_block_size,
            ..params.clone()
        };
        resolve_data_blocks(&data_file, data, shared, &p)?;
        (layout, sb.hash_type, sb.salt, Some(sb.uuid))
    } else {
        params.validate()?;
        let salt = match &params.salt {
            SaltSpec::Fixed(s) => s.clone(),
            SaltSpec::Random(_) => {
                return Err(VerityError::SaltHex {
                    value: "(random)".to_string(),
                    reason: "verifying without a superblock needs the salt used at format time"
                        .to_string(),
                });
            }
        };
        let data_blocks = resolve_data_blocks(&data_file, data, shared, params)?;
        let layout = Layout::new(
            params.algorithm,
            params.hash_type,
            params.data_block_size,
            params.hash_block_size,
            data_blocks,
            tree_start_block(params.hash_offset, params.hash_block_size, false),
        )?;
        (layout, params.hash_type, salt, None)
    };
    if root_hash.len() != layout.algorithm.digest_size() {
        return Err(VerityError::RootHashFormat {
            value: hex::encode(root_hash),
            reason: format!(
                "{} has {}-byte digests, this is {} bytes",
                layout.algorithm,
                layout.algorithm.digest_size(),
                root_hash.len()
            ),
        });
    }
    let hasher = BlockHasher::new(layout.algorithm, hash_type, &salt);
    let info = VerityInfo::new(
        &layout,
        hash_type,
        params.hash_offset,
        params.superblock,
        salt,
        uuid,
        Some(root_hash.to_vec()),
    );
    check_tree(
        &data_file, data, &hash_file, hash, &layout, &hasher, root_hash,
    )?;
    Ok(info)
}

fn check_tree(
    data_file: &File,
    data: &Path,
    hash_file: &File,
    hash: &Path,
    layout: &Layout,
    hasher: &BlockHasher,
    root_hash: &[u8],
) -> Result<(), VerityError> {
    let mismatch_root = |path: &Path, actual: Vec<u8>| VerityError::RootHashMismatch {
        path: path.to_path_buf(),
        expected: hex::encode(root_hash),
        actual: hex::encode(actual),
    };
    if layout.levels.is_empty() {
        let (_, root) = tree::build(data_file, data, layout, hasher)?;
        return if root == root_hash {
            Ok(())
        } else {
            Err(mismatch_root(data, root))
        };
    }
    let hbs = layout.hash_block_size;
    let needed = layout.end_block * hbs as u64;
    let size = file_size(hash_file, hash)?;
    if size < needed {
        return Err(VerityError::HashTruncated {
            path: hash.to_path_buf(),
            needed,
            size,
        });
    }
    let mut stored = Vec::with_capacity(layout.levels.len());
    for (level, span) in layout.levels.iter().enumerate() {
        let mut buf = vec![0u8; layout.level_bytes(level)?];
        hash_file
            .read_exact_at(&mut buf, span.start_block * hbs as u64)
            .map_err(|e| VerityError::io(hash, "reading hash tree", e))?;
        stored.push(buf);
    }
    let top = stored.len() - 1;
    let root = hasher.digest(&stored[top], layout.algorithm);
    if root != root_hash {
        return Err(mismatch_root(hash, root));
    }
    for level in (0..top).rev() {
        let expected = tree::hash_upper_level(&stored[level], layout, level + 1, hasher)?;
        if let Some(pos) = tree::first_difference(&expected, &stored[level + 1]) {
            let entries = layout.levels[level].blocks;
            let index = entry_at(layout, hash, level + 1, pos, entries)?;
            return Err(VerityError::HashBlockMismatch {
                path: hash.to_path_buf(),
                level,
                index,
                offset: layout.hash_block_offset(level, index),
                parent_level: level + 1,
            });
        }
    }
    let computed = tree::hash_data_level(data_file, data, layout, hasher)?;
    if let Some(pos) = tree::first_difference(&computed, &stored[0]) {
        let index = entry_at(layout, hash, 0, pos, layout.data_blocks)?;
        return Err(VerityError::DataBlockMismatch {
            path: data.to_path_buf(),
            index,
            offset: index * layout.data_block_size as u64,
        });
    }
    Ok(())
}

/// Which entry byte `pos` of `level` belongs to; bytes outside every entry (the zero tail of a
/// hash block, the padding after a short digest, slots past the last entry) mean that hash
/// block itself is bad.
fn entry_at(
    layout: &Layout,
    hash: &Path,
    level: usize,
    pos: usize,
    entries: u64,
) -> Result<u64, VerityError> {
    let hbs = layout.hash_block_size;
    let block = (pos / hbs) as u64;
    let in_block = pos % hbs;
    let slot = in_block / layout.slot;
    let index = block * layout.per_block as u64 + slot as u64;
    if slot >= layout.per_block
        || in_block % layout.slot >= layout.algorithm.digest_size()
        || index >= entries
    {
        return Err(VerityError::HashBlockPadding {
            path: hash.to_path_buf(),
            level,
            index: block,
            offset: layout.hash_block_offset(level, block),
        });
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data_file(dir: &Path, blocks: u64) -> std::path::PathBuf {
        let p = dir.join("data");
        File::create(&p).unwrap().set_len(blocks * 4096).unwrap();
        p
    }

    #[test]
    fn dm_table_has_the_kernel_fields_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = data_file(dir.path(), 129);
        let hash = dir.path().join("hash");
        let info = format(&data, &hash, &VerityParams::default().with_salt(vec![0xaa])).unwrap();
        assert_eq!(
            info.dm_table("/dev/vda3", "/dev/vda4"),
            "0 1032 verity 1 /dev/vda3 /dev/vda4 4096 4096 129 1 sha256 \
             2c03d2ffc512acf2dfbbc4013c3bae82571ba920082c9b95c56d4136ad2ad114 aa"
        );
        let info = format(
            &data,
            &hash,
            &VerityParams::default()
                .with_salt(vec![])
                .with_superblock(false),
        )
        .unwrap();
        assert!(info.dm_table("a", "b").ends_with(
            " 129 0 sha256 3e5d285ca1f11edfca6327028471f08b75634ff3361264b88d79ee2e95cacb84 -"
        ));
    }

    #[test]
    fn non_zero_padding_is_blamed_on_the_hash_block() {
        // 3 data blocks: one level-0 block, which is also the top; entries 3.. are padding.
        // Write a non-zero padding byte and re-sign it with a matching root, as a crafted tree
        // would: the data still matches, the padding does not.
        for (alg, at) in [
            (HashAlgorithm::Sha256, 4000usize),
            (HashAlgorithm::Sha1, 25),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let data = data_file(dir.path(), 3);
            let hash = dir.path().join("hash");
            let params = VerityParams::default()
                .with_algorithm(alg)
                .with_salt(vec![1])
                .with_superblock(false);
            format(&data, &hash, &params).unwrap();
            let mut block = std::fs::read(&hash).unwrap();
            block[at] ^= 1;
            std::fs::write(&hash, &block).unwrap();
            let root = BlockHasher::new(alg, HashType::Normal, &[1]).digest(&block, alg);
            let err = verify(&data, &hash, &root, &params).unwrap_err();
            assert!(
                matches!(
                    err,
                    VerityError::HashBlockPadding {
                        level: 0,
                        index: 0,
                        ..
                    }
                ),
                "{alg}: {err}"
            );
            assert!(err.is_mismatch());
        }
    }

    #[test]
    fn defaults_draw_a_fresh_salt_and_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let data = data_file(dir.path(), 3);
        let a = format(&data, &dir.path().join("a"), &VerityParams::default()).unwrap();
        let b = format(&data, &dir.path().join("b"), &VerityParams::default()).unwrap();
        assert_eq!(a.salt.len(), DEFAULT_SALT_SIZE);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.uuid, b.uuid);
        assert_ne!(a.root_hash, b.root_hash);
        // The superblock records what was drawn.
        let d = dump(&dir.path().join("a"), 0).unwrap();
        assert_eq!((d.salt, d.uuid), (a.salt.clone(), a.uuid));
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["salt"], hex::encode(&a.salt));
        assert_eq!(v["uuid"], a.uuid_string());
        assert_eq!(v["root_hash"], a.root_hash_hex());
    }
}
