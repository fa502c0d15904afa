//! Tree geometry and hashing: the part that has to be bit-exact with cryptsetup's `verity_hash.c`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;
use sha2::Digest;

use crate::VerityError;
use crate::params::{HashAlgorithm, HashType};

/// Bytes of data read and hashed per parallel task: big enough for long sequential reads,
/// small enough that two cores get plenty of tasks from a few hundred MiB.
const CHUNK_TARGET: usize = 4 << 20;

/// One level of the tree: where it sits in the hash file and how many hash blocks it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LevelSpan {
    /// Absolute hash block index (in hash-block units from the start of the hash file).
    pub start_block: u64,
    /// Number of hash blocks in the level.
    pub blocks: u64,
}

/// The shape of a tree: sizes, entries per block and where each level is stored.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub algorithm: HashAlgorithm,
    pub data_block_size: usize,
    pub hash_block_size: usize,
    pub data_blocks: u64,
    /// Bytes of one entry in a hash block: the digest, padded to a power of two in format 1.
    pub slot: usize,
    /// Entries per hash block: `2^floor(log2(hash_block_size / digest_size))`, for both formats.
    pub per_block: usize,
    /// `levels[0]` hashes the data; the last one is the single top block. Empty for one data block.
    pub levels: Vec<LevelSpan>,
    /// First hash block of the tree (the top level's block).
    pub tree_start_block: u64,
    /// One past the last hash block of the tree.
    pub end_block: u64,
}

impl Layout {
    /// Compute the layout like cryptsetup's `hash_levels()`: levels are stored top-down from
    /// `tree_start_block`.
    pub fn new(
        algorithm: HashAlgorithm,
        hash_type: HashType,
        data_block_size: u32,
        hash_block_size: u32,
        data_blocks: u64,
        tree_start_block: u64,
    ) -> Result<Self, VerityError> {
        let too_large = || VerityError::TooLarge { data_blocks };
        if data_blocks == 0 {
            return Err(VerityError::ZeroDataBlocks);
        }
        let digest = algorithm.digest_size();
        let hbs = hash_block_size as usize;
        // Block sizes are validated to be at least 512 and digests at most 64 bytes, so
        // per_block >= 8.
        let per_bits = (hbs / digest).ilog2();
        let per_block = 1usize << per_bits;
        let slot = match hash_type {
            HashType::Normal => digest.next_power_of_two(),
            HashType::ChromeOs => digest,
        };
        let mut nlevels = 0u32;
        while per_bits * nlevels < 64 && ((data_blocks - 1) >> (per_bits * nlevels)) != 0 {
            nlevels += 1;
        }
        let mut levels = vec![
            LevelSpan {
                start_block: 0,
                blocks: 0
            };
            nlevels as usize
        ];
        let mut pos = tree_start_block;
        for i in (0..nlevels).rev() {
            let shift = (i + 1) * per_bits;
            let blocks = if shift >= 64 {
                1
            } else {
                data_blocks.div_ceil(1u64 << shift)
            };
            levels[i as usize] = LevelSpan {
                start_block: pos,
                blocks,
            };
            pos = pos.checked_add(blocks).ok_or_else(too_large)?;
        }
        // Every byte offset in the hash file has to fit in 64 bits, and so do the data offsets.
        pos.checked_mul(hash_block_size as u64)
            .ok_or_else(too_large)?;
        data_blocks
            .checked_mul(u64::from(data_block_size))
            .ok_or_else(too_large)?;
        Ok(Layout {
            algorithm,
            data_block_size: data_block_size as usize,
            hash_block_size: hbs,
            data_blocks,
            slot,
            per_block,
            levels,
            tree_start_block,
            end_block: pos,
        })
    }

    /// Hash blocks in the tree (what veritysetup prints as `Hash blocks:`).
    pub fn hash_blocks(&self) -> u64 {
        self.end_block - self.tree_start_block
    }

    /// Byte offset where `level`'s block `index` is stored.
    pub fn hash_block_offset(&self, level: usize, index: u64) -> u64 {
        let start = self.levels.get(level).map_or(0, |l| l.start_block);
        (start + index) * self.hash_block_size as u64
    }

    /// The level's size in bytes, as a `usize` for an in-memory buffer.
    pub fn level_bytes(&self, level: usize) -> Result<usize, VerityError> {
        let blocks = self.levels.get(level).map_or(0, |l| l.blocks);
        blocks
            .checked_mul(self.hash_block_size as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(VerityError::TooLarge {
                data_blocks: self.data_blocks,
            })
    }
}

/// Salted block digests for one tree; cheap to share between threads.
#[derive(Clone)]
pub(crate) struct BlockHasher {
    hash_type: HashType,
    salt: Vec<u8>,
    /// For format 1 the salt comes first, so hash it once and clone the state per block.
    prefix: Prefixed,
}

#[derive(Clone)]
enum Prefixed {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

fn finish<D: Digest + Clone>(
    start: &D,
    hash_type: HashType,
    block: &[u8],
    salt: &[u8],
    out: &mut [u8],
) {
    let mut h = start.clone();
    h.update(block);
    if hash_type == HashType::ChromeOs {
        h.update(salt);
    }
    let d = h.finalize();
    out[..d.len()].copy_from_slice(&d);
}

impl BlockHasher {
    /// A hasher for `H(salt ‖ block)` (format 1) or `H(block ‖ salt)` (format 0).
    pub fn new(algorithm: HashAlgorithm, hash_type: HashType, salt: &[u8]) -> Self {
        let prefix_salt: &[u8] = if hash_type == HashType::Normal {
            salt
        } else {
            &[]
        };
        let prefix = match algorithm {
            HashAlgorithm::Sha1 => Prefixed::Sha1(sha1::Sha1::new_with_prefix(prefix_salt)),
            HashAlgorithm::Sha256 => Prefixed::Sha256(sha2::Sha256::new_with_prefix(prefix_salt)),
            HashAlgorithm::Sha512 => Prefixed::Sha512(sha2::Sha512::new_with_prefix(prefix_salt)),
        };
        BlockHasher {
            hash_type,
            salt: salt.to_vec(),
            prefix,
        }
    }

    /// Write the digest of `block` into the start of `out` (which must hold a digest).
    pub fn digest_into(&self, block: &[u8], out: &mut [u8]) {
        match &self.prefix {
            Prefixed::Sha1(h) => finish(h, self.hash_type, block, &self.salt, out),
            Prefixed::Sha256(h) => finish(h, self.hash_type, block, &self.salt, out),
            Prefixed::Sha512(h) => finish(h, self.hash_type, block, &self.salt, out),
        }
    }

    /// The digest of `block` as a vector.
    pub fn digest(&self, block: &[u8], algorithm: HashAlgorithm) -> Vec<u8> {
        let mut out = vec![0u8; algorithm.digest_size()];
        self.digest_into(block, &mut out);
        out
    }
}

/// Level 0: hash every data block of `data` into hash blocks, in parallel over large
/// positioned reads, so only a few chunks of data are in memory at a time.
pub(crate) fn hash_data_level(
    data: &File,
    path: &Path,
    layout: &Layout,
    hasher: &BlockHasher,
) -> Result<Vec<u8>, VerityError> {
    let hbs = layout.hash_block_size;
    let dbs = layout.data_block_size;
    let per = layout.per_block;
    let digest = layout.algorithm.digest_size();
    let mut out = vec![0u8; layout.level_bytes(0)?];
    let hash_blocks_per_chunk = (CHUNK_TARGET / (per * dbs)).max(1);
    let blocks_per_chunk = (hash_blocks_per_chunk * per) as u64;
    let data_blocks = layout.data_blocks;
    out.par_chunks_mut(hash_blocks_per_chunk * hbs)
        .enumerate()
        .try_for_each_init(Vec::new, |buf: &mut Vec<u8>, (chunk, out_chunk)| {
            let first = chunk as u64 * blocks_per_chunk;
            let count = blocks_per_chunk.min(data_blocks - first) as usize;
            buf.resize(count * dbs, 0);
            data.read_exact_at(buf, first * dbs as u64)
                .map_err(|e| VerityError::io(path, "reading data blocks", e))?;
            for (j, block) in buf.chunks_exact(dbs).enumerate() {
                let pos = (j / per) * hbs + (j % per) * layout.slot;
                hasher.digest_into(block, &mut out_chunk[pos..pos + digest]);
            }
            Ok(())
        })?;
    Ok(out)
}

/// Level i+1 from level i, in parallel over output hash blocks.
pub(crate) fn hash_upper_level(
    below: &[u8],
    layout: &Layout,
    level: usize,
    hasher: &BlockHasher,
) -> Result<Vec<u8>, VerityError> {
    let hbs = layout.hash_block_size;
    let per = layout.per_block;
    let digest = layout.algorithm.digest_size();
    let mut out = vec![0u8; layout.level_bytes(level)?];
    out.par_chunks_mut(hbs).enumerate().for_each(|(k, ob)| {
        let inputs = below.chunks_exact(hbs).skip(k * per).take(per);
        for (j, block) in inputs.enumerate() {
            hasher.digest_into(block, &mut ob[j * layout.slot..j * layout.slot + digest]);
        }
    });
    Ok(out)
}

/// Build every level from the data; returns the levels (index = level) and the root hash.
pub(crate) fn build(
    data: &File,
    path: &Path,
    layout: &Layout,
    hasher: &BlockHasher,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), VerityError> {
    if layout.levels.is_empty() {
        let mut block = vec![0u8; layout.data_block_size];
        data.read_exact_at(&mut block, 0)
            .map_err(|e| VerityError::io(path, "reading data block 0", e))?;
        return Ok((Vec::new(), hasher.digest(&block, layout.algorithm)));
    }
    let _span = tracing::debug_span!("verity_tree", data_blocks = layout.data_blocks).entered();
    let mut levels = vec![hash_data_level(data, path, layout, hasher)?];
    for level in 1..layout.levels.len() {
        let next = hash_upper_level(&levels[level - 1], layout, level, hasher)?;
        levels.push(next);
    }
    let top = levels.last().map(Vec::as_slice).unwrap_or(&[]);
    let root = hasher.digest(top, layout.algorithm);
    Ok((levels, root))
}

/// Byte index of the first difference between two equal-length buffers.
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn level_geometry_table() {
        // (digest, format, hbs, data_blocks) -> (per_block, slot, level sizes bottom-up)
        type Case = (
            HashAlgorithm,
            HashType,
            u32,
            u64,
            usize,
            usize,
            &'static [u64],
        );
        let cases: &[Case] = &[
            (
                HashAlgorithm::Sha256,
                HashType::Normal,
                4096,
                1,
                128,
                32,
                &[],
            ),
            (
                HashAlgorithm::Sha256,
                HashType::Normal,
                4096,
                2,
                128,
                32,
                &[1],
            ),
            (
                HashAlgorithm::Sha256,
                HashType::Normal,
                4096,
                128,
                128,
                32,
                &[1],
            ),
            (
                HashAlgorithm::Sha256,
                HashType::Normal,
                4096,
                129,
                128,
                32,
                &[2, 1],
            ),
            (
                HashAlgorithm::Sha256,
                HashType::Normal,
                4096,
                16384,
                128,
                32,
                &[128, 1],
            ),
            (
                HashAlgorithm::Sha256,
                HashType::Normal,
                4096,
                16385,
                128,
                32,
                &[129, 2, 1],
            ),
            (
                HashAlgorithm::Sha1,
                HashType::Normal,
                4096,
                300,
                128,
                32,
                &[3, 1],
            ),
            (
                HashAlgorithm::Sha1,
                HashType::ChromeOs,
                4096,
                300,
                128,
                20,
                &[3, 1],
            ),
            (
                HashAlgorithm::Sha512,
                HashType::Normal,
                512,
                9,
                8,
                64,
                &[2, 1],
            ),
            (
                HashAlgorithm::Sha1,
                HashType::ChromeOs,
                512,
                9,
                16,
                20,
                &[1],
            ),
        ];
        for &(alg, ty, hbs, n, per, slot, sizes) in cases {
            let l = Layout::new(alg, ty, 4096, hbs, n, 1).unwrap();
            assert_eq!(l.per_block, per, "{alg} {n}");
            assert_eq!(l.slot, slot, "{alg} {n}");
            let got: Vec<u64> = l.levels.iter().map(|s| s.blocks).collect();
            assert_eq!(got, sizes, "{alg} {n}");
            // Stored top-down right after the start block.
            let mut pos = 1;
            for s in l.levels.iter().rev() {
                assert_eq!(s.start_block, pos);
                pos += s.blocks;
            }
            assert_eq!(l.end_block, pos);
            assert_eq!(l.hash_blocks(), sizes.iter().sum::<u64>());
        }
    }

    #[test]
    fn salt_order_depends_on_format() {
        let block = [7u8; 512];
        let salt = [1u8, 2, 3];
        let n = BlockHasher::new(HashAlgorithm::Sha256, HashType::Normal, &salt)
            .digest(&block, HashAlgorithm::Sha256);
        let c = BlockHasher::new(HashAlgorithm::Sha256, HashType::ChromeOs, &salt)
            .digest(&block, HashAlgorithm::Sha256);
        let mut pre = salt.to_vec();
        pre.extend_from_slice(&block);
        let mut post = block.to_vec();
        post.extend_from_slice(&salt);
        assert_eq!(n, sha2::Sha256::digest(&pre).to_vec());
        assert_eq!(c, sha2::Sha256::digest(&post).to_vec());
    }

    #[test]
    fn random_geometry_never_panics_and_is_consistent() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let alg = HashAlgorithm::ALL[rng.random_range(0..3)];
            let ty = if rng.random_bool(0.5) {
                HashType::Normal
            } else {
                HashType::ChromeOs
            };
            let hbs = 512u32 << rng.random_range(0..4);
            let n: u64 = match rng.random_range(0..3) {
                0 => rng.random_range(1..100_000),
                1 => rng.random(),
                _ => u64::MAX - rng.random_range(0..10),
            };
            let start: u64 = rng.random_range(0..1 << 20);
            let Ok(l) = Layout::new(alg, ty, 4096, hbs, n.max(1), start) else {
                continue;
            };
            // The top level has one block, and each level covers the one below.
            if let Some(top) = l.levels.last() {
                assert_eq!(top.blocks, 1);
            }
            for w in l.levels.windows(2) {
                assert!(w[1].blocks * l.per_block as u64 >= w[0].blocks);
            }
            assert!(l.per_block * l.slot <= hbs as usize);
        }
    }

    #[test]
    fn huge_block_counts_do_not_panic() {
        let r = Layout::new(
            HashAlgorithm::Sha256,
            HashType::Normal,
            4096,
            4096,
            u64::MAX,
            0,
        );
        assert!(matches!(r, Err(VerityError::TooLarge { .. })));
    }
}
