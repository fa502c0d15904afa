//! The one error type of the crate: every variant names the file, offset, field or value involved.

use std::io;
use std::path::PathBuf;

/// Why a superblock could not be parsed (wrapped with its path and offset in [`VerityError`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SuperblockError {
    /// The first 8 bytes are not `verity\0\0`.
    #[error("no verity superblock (signature is {found:?}, expected \"verity\\0\\0\")")]
    Signature {
        /// The 8 bytes found instead.
        found: String,
    },
    /// A field holds a value this implementation (and veritysetup) rejects.
    #[error("superblock field `{field}` has unsupported value {value}")]
    Field {
        /// Field name as in the on-disk layout (`version`, `hash_type`, ...).
        field: &'static str,
        /// The offending value, printed.
        value: String,
    },
}

/// Everything that can go wrong while formatting, verifying or dumping a verity hash tree.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    /// A block size outside 512..=4096 or not a power of two.
    #[error(
        "{which} block size {value} is not supported: it must be a power of two from 512 to 4096"
    )]
    BlockSize {
        /// `data` or `hash`.
        which: &'static str,
        /// The rejected size in bytes.
        value: u64,
    },
    /// A hash format other than 0 or 1.
    #[error("hash format {value} is not supported: it must be 0 (ChromeOS) or 1 (normal)")]
    HashType {
        /// The rejected format number.
        value: u64,
    },
    /// A hash algorithm other than sha1, sha256, sha512.
    #[error("hash algorithm {value:?} is not supported: use sha1, sha256 or sha512")]
    Algorithm {
        /// The rejected name.
        value: String,
    },
    /// A salt string that is not `-` or hex.
    #[error("salt {value:?} is not valid: {reason}")]
    SaltHex {
        /// The salt string as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A salt longer than the 256 bytes the superblock can hold.
    #[error("salt is {len} bytes long; at most 256 bytes are allowed")]
    SaltTooLong {
        /// Salt length in bytes.
        len: usize,
    },
    /// A UUID string that does not parse.
    #[error("UUID {value:?} is not valid: {reason}")]
    Uuid {
        /// The UUID string as given.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// A root hash that is not hex or has the wrong length for the algorithm.
    #[error("root hash {value:?} is not valid: {reason}")]
    RootHashFormat {
        /// The root hash as given (hex).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `--hash-offset` not a multiple of 512.
    #[error("hash offset {offset} is not a multiple of 512 bytes")]
    HashOffsetUnaligned {
        /// The offset in bytes.
        offset: u64,
    },
    /// Without a superblock the tree starts right at the offset, so it must be block aligned.
    #[error(
        "hash offset {offset} is not a multiple of the hash block size {hash_block_size} (required without a superblock)"
    )]
    HashOffsetNotBlockAligned {
        /// The offset in bytes.
        offset: u64,
        /// The hash block size.
        hash_block_size: u32,
    },
    /// Hash area and data area share a file and overlap.
    #[error(
        "{path}: hash area at offset {hash_offset} overlaps the data area, which ends at byte {data_end}"
    )]
    Overlap {
        /// The shared file.
        path: PathBuf,
        /// Where the hash area starts.
        hash_offset: u64,
        /// Where the data area ends.
        data_end: u64,
    },
    /// Zero data blocks: nothing to protect.
    #[error("{path}: data area is {size} bytes, smaller than one {block_size}-byte data block")]
    DataTooSmall {
        /// The data file.
        path: PathBuf,
        /// Bytes available for data.
        size: u64,
        /// Data block size.
        block_size: u32,
    },
    /// `--data-blocks` asks for more than the file holds.
    #[error(
        "{path}: {data_blocks} data blocks of {block_size} bytes need {needed} bytes, but only {available} are available"
    )]
    DataTooShort {
        /// The data file.
        path: PathBuf,
        /// Requested data blocks.
        data_blocks: u64,
        /// Data block size.
        block_size: u32,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// `--data-blocks 0`.
    #[error("data blocks must be at least 1 (got 0)")]
    ZeroDataBlocks,
    /// The tree would not fit in 64-bit offsets.
    #[error("{data_blocks} data blocks is too many: the hash tree offsets overflow 64 bits")]
    TooLarge {
        /// Requested data blocks.
        data_blocks: u64,
    },
    /// An I/O error on a named file.
    // The cause is part of the message and not a `source()`, so `{:#}` chains print it once.
    #[error("{path}: {op}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`reading data block range`, `writing hash area`, ...).
        op: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// The superblock at the given offset is missing or invalid.
    #[error("{path} at offset {offset}: {error}")]
    Superblock {
        /// The hash file.
        path: PathBuf,
        /// Offset of the superblock.
        offset: u64,
        /// What is wrong with it.
        error: SuperblockError,
    },
    /// The hash file ends before the hash area does.
    #[error("{path}: hash area is truncated: it needs {needed} bytes but the file has {size}")]
    HashTruncated {
        /// The hash file.
        path: PathBuf,
        /// Bytes needed (end of the hash area).
        needed: u64,
        /// File size.
        size: u64,
    },
    /// Verification: a data block whose digest is not the level-0 entry.
    #[error(
        "{path}: data block {index} (byte offset {offset}) does not match its level-0 hash entry"
    )]
    DataBlockMismatch {
        /// The data file.
        path: PathBuf,
        /// Data block index.
        index: u64,
        /// Byte offset of the block in the data file.
        offset: u64,
    },
    /// Verification: a hash block whose digest is not its entry one level up.
    #[error(
        "{path}: hash block {index} of level {level} (byte offset {offset}) does not match its entry in level {parent_level}"
    )]
    HashBlockMismatch {
        /// The hash file.
        path: PathBuf,
        /// Tree level of the bad block (0 = the level over the data blocks).
        level: usize,
        /// Index of the block within its level.
        index: u64,
        /// Byte offset of the block in the hash file.
        offset: u64,
        /// The level holding the entry it was checked against.
        parent_level: usize,
    },
    /// Verification: a hash block with non-zero bytes where there is no entry (its parent, or the
    /// root, was computed over them, so only a crafted tree gets here).
    #[error(
        "{path}: hash block {index} of level {level} (byte offset {offset}) has non-zero bytes in its unused space"
    )]
    HashBlockPadding {
        /// The hash file.
        path: PathBuf,
        /// Tree level of the block.
        level: usize,
        /// Index of the block within its level.
        index: u64,
        /// Byte offset of the block in the hash file.
        offset: u64,
    },
    /// Verification: the digest of the top block (or of the only data block) is not the root hash.
    #[error("root hash mismatch: expected {expected}, the hash tree in {path} gives {actual}")]
    RootHashMismatch {
        /// The file holding the top block (the hash file, or the data file with one block).
        path: PathBuf,
        /// Root hash given, hex.
        expected: String,
        /// Root hash computed, hex.
        actual: String,
    },
}

impl VerityError {
    /// Wrap an I/O error with its path and operation.
    pub(crate) fn io(path: &std::path::Path, op: &'static str, error: io::Error) -> Self {
        VerityError::Io {
            path: path.to_path_buf(),
            op,
            error,
        }
    }

    /// Is this a verification failure (corruption or wrong root), as opposed to bad input or I/O?
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            VerityError::DataBlockMismatch { .. }
                | VerityError::HashBlockMismatch { .. }
                | VerityError::HashBlockPadding { .. }
                | VerityError::RootHashMismatch { .. }
        )
    }
}
