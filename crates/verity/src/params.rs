//! Parameters of a verity hash tree, with veritysetup's defaults.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::VerityError;

/// Largest salt the superblock can hold.
pub const MAX_SALT_SIZE: usize = 256;

/// Salt size veritysetup picks when none is given.
pub const DEFAULT_SALT_SIZE: usize = 32;

/// Smallest supported block size (dm-verity's sector size).
pub const MIN_BLOCK_SIZE: u32 = 512;

/// Largest supported block size: the kernel cannot activate data blocks larger than a page.
pub const MAX_BLOCK_SIZE: u32 = 4096;

/// The digest used for every block of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-1 (20-byte digests, padded to 32 in format 1).
    Sha1,
    /// SHA-256, veritysetup's default.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [HashAlgorithm; 3] = [
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha512,
    ];

    /// The name veritysetup and the kernel use (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_size(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgorithm {
    type Err = VerityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| VerityError::Algorithm {
                value: s.to_string(),
            })
    }
}

/// The hash format (`--format`): how digests are salted and laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "u32")]
pub enum HashType {
    /// Format 0, ChromeOS legacy: `H(block ‖ salt)`, digests packed.
    ChromeOs,
    /// Format 1, normal: `H(salt ‖ block)`, digests padded to a power of two.
    Normal,
}

impl HashType {
    /// The number written in the superblock and the kernel table.
    pub fn number(self) -> u32 {
        match self {
            HashType::ChromeOs => 0,
            HashType::Normal => 1,
        }
    }

    /// Parse the number used by `--format` and the superblock.
    pub fn from_number(n: u64) -> Result<Self, VerityError> {
        match n {
            0 => Ok(HashType::ChromeOs),
            1 => Ok(HashType::Normal),
            value => Err(VerityError::HashType { value }),
        }
    }
}

impl From<HashType> for u32 {
    fn from(t: HashType) -> u32 {
        t.number()
    }
}

/// Where the salt comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaltSpec {
    /// Random bytes of this length (veritysetup's default is 32).
    Random(usize),
    /// These exact bytes; empty means no salt (`--salt=-`).
    Fixed(Vec<u8>),
}

impl SaltSpec {
    /// Parse veritysetup's `--salt` syntax: `-` for none, otherwise hex (at most 256 bytes).
    pub fn parse_hex(s: &str) -> Result<Self, VerityError> {
        if s == "-" {
            return Ok(SaltSpec::Fixed(Vec::new()));
        }
        let bytes = hex::decode(s).map_err(|e| VerityError::SaltHex {
            value: s.to_string(),
            reason: e.to_string(),
        })?;
        if bytes.len() > MAX_SALT_SIZE {
            return Err(VerityError::SaltTooLong { len: bytes.len() });
        }
        Ok(SaltSpec::Fixed(bytes))
    }

    /// The salt bytes: fixed ones as given, random ones freshly drawn.
    pub fn resolve(&self) -> Result<Vec<u8>, VerityError> {
        match self {
            SaltSpec::Random(len) => {
                if *len > MAX_SALT_SIZE {
                    return Err(VerityError::SaltTooLong { len: *len });
                }
                let mut v = vec![0u8; *len];
                rand::fill(&mut v[..]);
                Ok(v)
            }
            SaltSpec::Fixed(v) => {
                if v.len() > MAX_SALT_SIZE {
                    return Err(VerityError::SaltTooLong { len: v.len() });
                }
                Ok(v.clone())
            }
        }
    }
}

/// Parse a UUID string the way veritysetup accepts it (`--uuid`).
pub fn parse_uuid(s: &str) -> Result<[u8; 16], VerityError> {
    uuid::Uuid::parse_str(s)
        .map(|u| *u.as_bytes())
        .map_err(|e| VerityError::Uuid {
            value: s.to_string(),
            reason: e.to_string(),
        })
}

/// Decode a hex root hash; its length is checked against the algorithm by [`crate::verify`].
pub fn decode_root_hash(s: &str) -> Result<Vec<u8>, VerityError> {
    let bytes = hex::decode(s).map_err(|e| VerityError::RootHashFormat {
        value: s.to_string(),
        reason: e.to_string(),
    })?;
    if ![20, 32, 64].contains(&bytes.len()) {
        return Err(VerityError::RootHashFormat {
            value: s.to_string(),
            reason: format!(
                "{} hex digits; expected 40 (sha1), 64 (sha256) or 128 (sha512)",
                s.len()
            ),
        });
    }
    Ok(bytes)
}

/// Check a block size: a power of two in 512..=4096.
pub fn check_block_size(which: &'static str, value: u64) -> Result<u32, VerityError> {
    if !(u64::from(MIN_BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&value)
        || !value.is_power_of_two()
    {
        return Err(VerityError::BlockSize { which, value });
    }
    // In range, so it fits.
    Ok(value as u32)
}

/// How to build a hash tree; [`Default`] gives veritysetup's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Hash format (`--format`), default 1.
    pub hash_type: HashType,
    /// Digest (`--hash`), default sha256.
    pub algorithm: HashAlgorithm,
    /// Data block size in bytes (`--data-block-size`), default 4096.
    pub data_block_size: u32,
    /// Hash block size in bytes (`--hash-block-size`), default 4096.
    pub hash_block_size: u32,
    /// Number of data blocks (`--data-blocks`); default: the whole data area.
    pub data_blocks: Option<u64>,
    /// Byte offset of the hash area (superblock first) in the hash file (`--hash-offset`).
    pub hash_offset: u64,
    /// Salt (`--salt`), default 32 random bytes.
    pub salt: SaltSpec,
    /// UUID for the superblock (`--uuid`); default random.
    pub uuid: Option<[u8; 16]>,
    /// Write a superblock (default) or not (`--no-superblock`).
    pub superblock: bool,
}

impl Default for VerityParams {
    fn default() -> Self {
        VerityParams {
            hash_type: HashType::Normal,
            algorithm: HashAlgorithm::Sha256,
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: None,
            hash_offset: 0,
            salt: SaltSpec::Random(DEFAULT_SALT_SIZE),
            uuid: None,
            superblock: true,
        }
    }
}

impl VerityParams {
    /// Set the hash format.
    pub fn with_hash_type(mut self, t: HashType) -> Self {
        self.hash_type = t;
        self
    }

    /// Set the digest algorithm.
    pub fn with_algorithm(mut self, a: HashAlgorithm) -> Self {
        self.algorithm = a;
        self
    }

    /// Set both block sizes.
    pub fn with_block_sizes(mut self, data: u32, hash: u32) -> Self {
        self.data_block_size = data;
        self.hash_block_size = hash;
        self
    }

    /// Limit the data to this many blocks.
    pub fn with_data_blocks(mut self, n: u64) -> Self {
        self.data_blocks = Some(n);
        self
    }

    /// Put the hash area at this byte offset of the hash file.
    pub fn with_hash_offset(mut self, off: u64) -> Self {
        self.hash_offset = off;
        self
    }

    /// Use exactly this salt (empty = none).
    pub fn with_salt(mut self, salt: Vec<u8>) -> Self {
        self.salt = SaltSpec::Fixed(salt);
        self
    }

    /// Use exactly this UUID.
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// Write a superblock or not.
    pub fn with_superblock(mut self, on: bool) -> Self {
        self.superblock = on;
        self
    }

    /// Check everything that does not depend on the files.
    pub fn validate(&self) -> Result<(), VerityError> {
        check_block_size("data", u64::from(self.data_block_size))?;
        check_block_size("hash", u64::from(self.hash_block_size))?;
        let len = match &self.salt {
            SaltSpec::Fixed(v) => v.len(),
            SaltSpec::Random(n) => *n,
        };
        if len > MAX_SALT_SIZE {
            return Err(VerityError::SaltTooLong { len });
        }
        if !self.hash_offset.is_multiple_of(512) {
            return Err(VerityError::HashOffsetUnaligned {
                offset: self.hash_offset,
            });
        }
        if !self.superblock
            && !self
                .hash_offset
                .is_multiple_of(u64::from(self.hash_block_size))
        {
            return Err(VerityError::HashOffsetNotBlockAligned {
                offset: self.hash_offset,
                hash_block_size: self.hash_block_size,
            });
        }
        if self.data_blocks == Some(0) {
            return Err(VerityError::ZeroDataBlocks);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn salt_parsing_table() {
        let cases: &[(&str, Option<usize>)] = &[
            ("-", Some(0)),
            ("aa", Some(1)),
            ("DADADA", Some(3)),
            ("abc", None),
            ("zz", None),
            ("", Some(0)),
        ];
        for (input, want) in cases {
            match (SaltSpec::parse_hex(input), want) {
                (Ok(SaltSpec::Fixed(v)), Some(n)) => assert_eq!(v.len(), *n, "{input}"),
                (Err(VerityError::SaltHex { value, .. }), None) => assert_eq!(&value, input),
                (got, _) => panic!("{input}: unexpected {got:?}"),
            }
        }
        let long = "00".repeat(257);
        assert!(matches!(
            SaltSpec::parse_hex(&long),
            Err(VerityError::SaltTooLong { len: 257 })
        ));
        assert!(SaltSpec::parse_hex(&"00".repeat(256)).is_ok());
    }

    #[test]
    fn random_salt_is_random_and_sized() {
        let a = SaltSpec::Random(32).resolve().unwrap();
        let b = SaltSpec::Random(32).resolve().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn block_size_table() {
        for ok in [512u64, 1024, 2048, 4096] {
            assert_eq!(check_block_size("data", ok).unwrap() as u64, ok);
        }
        for bad in [0u64, 256, 1000, 3072, 8192, 1 << 40] {
            let e = check_block_size("hash", bad).unwrap_err();
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
            assert!(e.to_string().contains("hash block size"), "{e}");
        }
    }

    #[test]
    fn params_validation_names_the_value() {
        let p = VerityParams::default().with_hash_offset(1000);
        assert!(p.validate().unwrap_err().to_string().contains("1000"));
        let p = VerityParams::default()
            .with_hash_offset(512)
            .with_superblock(false);
        assert!(matches!(
            p.validate(),
            Err(VerityError::HashOffsetNotBlockAligned { offset: 512, .. })
        ));
        let p = VerityParams::default().with_data_blocks(0);
        assert!(matches!(p.validate(), Err(VerityError::ZeroDataBlocks)));
        let p = VerityParams::default().with_block_sizes(4096, 8192);
        assert!(p.validate().unwrap_err().to_string().contains("8192"));
        assert!(VerityParams::default().validate().is_ok());
    }

    #[test]
    fn names_and_numbers() {
        for a in HashAlgorithm::ALL {
            assert_eq!(a.name().parse::<HashAlgorithm>().unwrap(), a);
        }
        assert!("md5".parse::<HashAlgorithm>().is_err());
        assert_eq!(HashType::from_number(0).unwrap(), HashType::ChromeOs);
        assert!(HashType::from_number(2).is_err());
        assert!(parse_uuid("not-a-uuid").is_err());
        assert!(
            decode_root_hash("ab")
                .unwrap_err()
                .to_string()
                .contains("2 hex digits")
        );
        assert!(decode_root_hash(&"zz".repeat(32)).is_err());
        assert_eq!(decode_root_hash(&"ab".repeat(20)).unwrap().len(), 20);
    }
}
