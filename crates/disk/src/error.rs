//! The one error type of this crate; every variant names the file, partition or value involved.

use std::path::PathBuf;

use uuid::Uuid;

use crate::attrs::NibbleOutOfRange;
use crate::gptprio::PrioritizeError;
use crate::size::format_size;

/// Errors from reading, creating or editing a GPT disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O call on the image (or an input file) failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("reading", "writing partition 2 of", ...).
        action: String,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Neither LBA 1 nor the last sector holds a GPT header.
    #[error("{path} is not a GPT disk: no \"EFI PART\" header at LBA 1 nor in the last sector")]
    NotGpt {
        /// The image.
        path: PathBuf,
    },
    /// The file is too small to hold any GPT.
    #[error("{path} is {size} bytes, too small for a GPT disk (at least {min} bytes)")]
    TooSmallForGpt {
        /// The image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The smallest size that can hold a GPT.
        min: u64,
    },
    /// The GPT describes a disk larger than the file: the image was cut short.
    #[error(
        "{path} is truncated: it is {actual} bytes but its GPT says the disk is {expected} bytes \
         (backup header at LBA {backup_lba})"
    )]
    Truncated {
        /// The image.
        path: PathBuf,
        /// Size of the file in bytes.
        actual: u64,
        /// Size the GPT header implies in bytes.
        expected: u64,
        /// Where the header says its backup is.
        backup_lba: u64,
    },
    /// Both GPT copies are unusable.
    #[error("{path}: both GPT copies are corrupt (primary: {primary}; backup: {backup})")]
    CorruptGpt {
        /// The image.
        path: PathBuf,
        /// Why the primary copy was refused.
        primary: String,
        /// Why the backup copy was refused.
        backup: String,
    },
    /// No such partition entry.
    #[error("{path}: partition {number} is out of range (1..={max})")]
    PartitionOutOfRange {
        /// The image.
        path: PathBuf,
        /// The requested number.
        number: u32,
        /// The highest entry number in this table.
        max: u32,
    },
    /// The partition entry exists but is unused.
    #[error("{path}: partition {number} is not in use")]
    PartitionUnused {
        /// The image.
        path: PathBuf,
        /// The requested number.
        number: u32,
    },
    /// A filesystem image does not fit its partition.
    #[error(
        "{image} is {image_bytes} bytes ({}), larger than partition {number} ({label:?}) of {path}, \
         which is {partition_bytes} bytes ({})",
        format_size(*image_bytes),
        format_size(*partition_bytes)
    )]
    ImageTooLarge {
        /// The disk image.
        path: PathBuf,
        /// The partition number.
        number: u32,
        /// The partition's label.
        label: String,
        /// The filesystem image (a path or a description of the reader).
        image: String,
        /// Size of the filesystem image.
        image_bytes: u64,
        /// Size of the partition.
        partition_bytes: u64,
    },
    /// A reader delivered fewer bytes than declared.
    #[error(
        "{image} ended after {got} bytes, {declared} were declared, writing partition {number} of {path}"
    )]
    ImageShort {
        /// The disk image.
        path: PathBuf,
        /// The partition number.
        number: u32,
        /// The filesystem image.
        image: String,
        /// Bytes declared.
        declared: u64,
        /// Bytes actually read.
        got: u64,
    },
    /// The disk cannot hold the layout.
    #[error(
        "disk of {disk_bytes} bytes ({}) is too small for the layout, which needs {required_bytes} \
         bytes ({}): {detail}",
        format_size(*disk_bytes),
        format_size(*required_bytes)
    )]
    DiskTooSmall {
        /// Requested disk size.
        disk_bytes: u64,
        /// Smallest disk that fits the layout.
        required_bytes: u64,
        /// The partition sizes that add up to it.
        detail: String,
    },
    /// A layout field is unusable.
    #[error("layout field {field} = {value}: {reason}")]
    Layout {
        /// Field name.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why it is refused.
        reason: String,
    },
    /// A partition label cannot be stored in a GPT entry.
    #[error("label {label:?}: {reason}")]
    LabelInvalid {
        /// The label.
        label: String,
        /// Why.
        reason: &'static str,
    },
    /// Two partitions would share a UUID.
    #[error("{path}: partition {number} would get UUID {uuid}, already used by partition {other}")]
    DuplicateUuid {
        /// The image.
        path: PathBuf,
        /// The partition being changed.
        number: u32,
        /// The UUID.
        uuid: Uuid,
        /// The partition that already has it.
        other: u32,
    },
    /// A root hash shorter than a UUID.
    #[error("root hash is {len} bytes; at least 16 are needed to derive partition UUIDs")]
    RootHashTooShort {
        /// Its length.
        len: usize,
    },
    /// A root hash with an all-zero half, which systemd refuses.
    #[error("root hash {hash} has an all-zero first or last 16 bytes, which systemd refuses")]
    RootHashNullHalf {
        /// The hash in hex.
        hash: String,
    },
    /// Priority or tries out of range.
    #[error("partition {number} of {path}: {source}")]
    Attribute {
        /// The image.
        path: PathBuf,
        /// The partition.
        number: u32,
        /// The rejected value.
        #[source]
        source: NibbleOutOfRange,
    },
    /// `cgpt prioritize` refused.
    #[error("{path}: {source}")]
    Prioritize {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: PrioritizeError,
    },
    /// No coreos-usr partition is eligible to boot.
    #[error(
        "{path}: no USR partition can boot (gptprio: none with priority > 0 and tries > 0 or successful)"
    )]
    NoBootableSlot {
        /// The image.
        path: PathBuf,
    },
    /// gptman refused to write the table.
    #[error("{action} {path}: {source}")]
    Gpt {
        /// What we were doing.
        action: &'static str,
        /// The image.
        path: PathBuf,
        /// gptman's reason.
        #[source]
        source: gptman::Error,
    },
    /// The disk was opened read-only.
    #[error("{path} was opened read-only; open it with Disk::open_rw to change it")]
    ReadOnly {
        /// The image.
        path: PathBuf,
    },
    /// A size could not be parsed.
    #[error("size {text:?}: {reason}")]
    BadSize {
        /// What was given.
        text: String,
        /// Why it was refused.
        reason: &'static str,
    },
}
