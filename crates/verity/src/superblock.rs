//! The 512-byte verity superblock (cryptsetup's `struct verity_sb`), little-endian.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::params::{HashAlgorithm, HashType, MAX_SALT_SIZE, check_block_size};
use crate::{SuperblockError, VerityError};

/// Size of the superblock on disk.
pub const SUPERBLOCK_SIZE: usize = 512;

/// The signature at offset 0.
pub const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// The only superblock version cryptsetup defines.
pub const SUPERBLOCK_VERSION: u32 = 1;

/// A parsed superblock: every parameter needed to open the tree except the root hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Superblock {
    /// Hash format.
    pub hash_type: HashType,
    /// Raw UUID bytes.
    #[serde(serialize_with = "crate::ser::uuid")]
    pub uuid: [u8; 16],
    /// Digest algorithm.
    pub algorithm: HashAlgorithm,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks.
    pub data_blocks: u64,
    /// Salt bytes (at most 256).
    #[serde(serialize_with = "crate::ser::hex")]
    pub salt: Vec<u8>,
}

fn field(field: &'static str, value: impl ToString) -> SuperblockError {
    SuperblockError::Field {
        field,
        value: value.to_string(),
    }
}

fn le_u32(b: &[u8; SUPERBLOCK_SIZE], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

impl Superblock {
    /// Serialize to the on-disk layout (unused bytes zero).
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.hash_type.number().to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        let name = self.algorithm.name().as_bytes();
        b[32..32 + name.len()].copy_from_slice(name);
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        // Constructors keep the salt at most 256 bytes; clamp anyway so this cannot panic.
        let salt = &self.salt[..self.salt.len().min(MAX_SALT_SIZE)];
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    /// Parse the on-disk layout, rejecting what veritysetup rejects.
    pub fn from_bytes(b: &[u8; SUPERBLOCK_SIZE]) -> Result<Self, SuperblockError> {
        if &b[0..8] != SIGNATURE {
            return Err(SuperblockError::Signature {
                found: String::from_utf8_lossy(&b[0..8]).into_owned(),
            });
        }
        let version = le_u32(b, 8);
        if version != SUPERBLOCK_VERSION {
            return Err(field("version", version));
        }
        let hash_type = HashType::from_number(u64::from(le_u32(b, 12)))
            .map_err(|_| field("hash_type", le_u32(b, 12)))?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let name_raw = &b[32..64];
        let name_len = name_raw.iter().position(|&c| c == 0).unwrap_or(32);
        let name = String::from_utf8_lossy(&name_raw[..name_len]).into_owned();
        let algorithm: HashAlgorithm = name
            .parse()
            .map_err(|_| field("algorithm", format!("{name:?}")))?;
        let data_block_size = check_block_size("data", u64::from(le_u32(b, 64)))
            .map_err(|_| field("data_block_size", le_u32(b, 64)))?;
        let hash_block_size = check_block_size("hash", u64::from(le_u32(b, 68)))
            .map_err(|_| field("hash_block_size", le_u32(b, 68)))?;
        let mut db = [0u8; 8];
        db.copy_from_slice(&b[72..80]);
        let data_blocks = u64::from_le_bytes(db);
        if data_blocks == 0 {
            return Err(field("data_blocks", 0));
        }
        let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_size > MAX_SALT_SIZE {
            return Err(field("salt_size", salt_size));
        }
        Ok(Superblock {
            hash_type,
            uuid,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt: b[88..88 + salt_size].to_vec(),
        })
    }

    /// Read and parse the superblock at `offset` of `path`.
    pub fn read(path: &Path, offset: u64) -> Result<Self, VerityError> {
        let f = File::open(path).map_err(|e| VerityError::io(path, "opening hash file", e))?;
        Self::read_from(&f, path, offset)
    }

    /// Read and parse the superblock at `offset` of an open file.
    pub(crate) fn read_from(f: &File, path: &Path, offset: u64) -> Result<Self, VerityError> {
        let size = f
            .metadata()
            .map_err(|e| VerityError::io(path, "reading file size", e))?
            .len();
        let end = offset.saturating_add(SUPERBLOCK_SIZE as u64);
        if size < end {
            return Err(VerityError::HashTruncated {
                path: path.to_path_buf(),
                needed: end,
                size,
            });
        }
        let mut b = [0u8; SUPERBLOCK_SIZE];
        f.read_exact_at(&mut b, offset)
            .map_err(|e| VerityError::io(path, "reading superblock", e))?;
        Self::from_bytes(&b).map_err(|error| VerityError::Superblock {
            path: path.to_path_buf(),
            offset,
            error,
        })
    }

    /// The UUID in its canonical text form.
    pub fn uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            hash_type: HashType::Normal,
            uuid: *uuid::Uuid::parse_str("7d429397-0dd5-479c-9814-01050ba06d71")
                .unwrap()
                .as_bytes(),
            algorithm: HashAlgorithm::Sha256,
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 129,
            salt: vec![0xaa],
        }
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let b = sample().to_bytes();
        assert_eq!(&b[0..8], b"verity\0\0");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[1, 0, 0, 0]);
        assert_eq!(b[16], 0x7d);
        assert_eq!(&b[32..39], b"sha256\0");
        assert_eq!(&b[64..68], &4096u32.to_le_bytes());
        assert_eq!(&b[72..80], &129u64.to_le_bytes());
        assert_eq!(&b[80..82], &[1, 0]);
        assert_eq!(b[88], 0xaa);
        assert!(b[89..].iter().all(|&x| x == 0));
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Superblock::from_bytes(&s.to_bytes()).unwrap(), s);
        assert_eq!(s.uuid_string(), "7d429397-0dd5-479c-9814-01050ba06d71");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut b = [0u8; SUPERBLOCK_SIZE];
            rng.fill(&mut b[..]);
            // Keep the signature and version most of the time so the later fields get exercised.
            if rng.random_bool(0.9) {
                b[..8].copy_from_slice(SIGNATURE);
                b[8..12].copy_from_slice(&1u32.to_le_bytes());
                b[12..16].copy_from_slice(&u32::from(rng.random_bool(0.5)).to_le_bytes());
                b[32..39].copy_from_slice(b"sha256\0");
                b[64..68].copy_from_slice(&(512u32 << rng.random_range(0..5)).to_le_bytes());
                b[68..72].copy_from_slice(&(512u32 << rng.random_range(0..5)).to_le_bytes());
                b[81] = rng.random_range(0..2);
            }
            if let Ok(sb) = Superblock::from_bytes(&b) {
                parsed += 1;
                assert!(sb.salt.len() <= MAX_SALT_SIZE);
                assert!(sb.data_block_size <= 4096 && sb.hash_block_size <= 4096);
            }
        }
        assert!(parsed > 100, "only {parsed} random superblocks parsed");
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        type Mutate = fn(&mut [u8; SUPERBLOCK_SIZE]);
        let cases: &[(Mutate, &str)] = &[
            (|b| b[0] = b'X', "signature"),
            (|b| b[8] = 2, "version"),
            (|b| b[12] = 7, "hash_type"),
            (|b| b[32..38].copy_from_slice(b"md5\0\0\0"), "algorithm"),
            (|b| b[65] = 0x11, "data_block_size"),
            (|b| b[69] = 0x20, "hash_block_size"),
            (|b| b[72..80].fill(0), "data_blocks"),
            (|b| b[81] = 2, "salt_size"),
        ];
        for (mutate, name) in cases {
            let mut b = sample().to_bytes();
            mutate(&mut b);
            let e = Superblock::from_bytes(&b).unwrap_err();
            assert!(e.to_string().contains(name), "{name}: {e}");
        }
    }
}
