//! An opened GPT disk image: read the table (falling back to the backup copy), edit entries,
//! write filesystem images into partitions, commit both copies.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gptman::{GPT, GPTHeader};
use serde::Serialize;
use tracing::{info, warn};
use uuid::Uuid;

use crate::attrs::{self, PrioBits};
use crate::gptprio::{self, Pick, Slot};
use crate::layout::{SECTOR_SIZE, UsrSlot, derive_uuid};
use crate::report::DiskReport;
use crate::types::{self, PartitionType};
use crate::{DiskError, EMPTY_LABEL, usr_label, usr_verity_label, uuids_from_root_hash};

/// Largest partition entry count we accept (the spec minimum is 128; sgdisk allows more, but
/// a huge count in a corrupt header must not make us allocate gigabytes).
const MAX_ENTRIES: u32 = 4096;
/// Most UTF-16 code units a GPT partition name holds.
const MAX_LABEL_UNITS: usize = 36;
/// Copy buffer for partition writes.
const COPY_BUFFER: usize = 1 << 20;

/// Which GPT copy the table was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GptCopy {
    /// The header at LBA 1.
    Primary,
    /// The header in the last sector (the primary was unusable).
    Backup,
}

/// One used partition entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// 1-based GPT number.
    pub number: u32,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Known name of the type, if any.
    pub type_name: Option<&'static str>,
    /// GPT label (partition name).
    pub label: String,
    /// Partition UUID (PARTUUID).
    pub uuid: Uuid,
    /// Raw 64-bit attribute field.
    pub attributes: u64,
    /// The same, as 16 hex digits (sgdisk's form; JSON numbers lose bits above 2^53).
    pub attributes_hex: String,
    /// Names of the UEFI/DPS flag bits that are set.
    pub flags: Vec<&'static str>,
    /// ChromeOS/Flatcar priority, tries and successful bits.
    pub prio: PrioBits,
}

impl PartitionInfo {
    /// The known partition type, if any.
    pub fn kind(&self) -> Option<PartitionType> {
        types::by_guid(self.type_guid)
    }
}

/// A GPT disk image opened for reading or editing. Edits stay in memory until [`Disk::commit`].
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    file: File,
    writable: bool,
    gpt: GPT,
    size: u64,
    read_from: GptCopy,
    warnings: Vec<String>,
}

impl Disk {
    /// Opens a disk image read-only.
    pub fn open(path: &Path) -> Result<Disk, DiskError> {
        Self::open_with(path, false)
    }

    /// Opens a disk image for editing.
    pub fn open_rw(path: &Path) -> Result<Disk, DiskError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, writable: bool) -> Result<Disk, DiskError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(io_err("opening", path))?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(io_err("reading", path))?;
        let min = (1 + 2 * (1 + 32)) * SECTOR_SIZE;
        if size < min {
            return Err(DiskError::TooSmallForGpt {
                path: path.to_path_buf(),
                size,
                min,
            });
        }
        let last_lba = size / SECTOR_SIZE - 1;
        let mut warnings = Vec::new();

        let primary = read_header(&mut file, 1, path, "primary", last_lba)?;
        let backup = read_header(&mut file, last_lba, path, "backup", last_lba)?;

        if let Ok(h) = &primary
            && h.backup_lba > last_lba
        {
            return Err(DiskError::Truncated {
                path: path.to_path_buf(),
                actual: size,
                expected: h.backup_lba.saturating_add(1).saturating_mul(SECTOR_SIZE),
                backup_lba: h.backup_lba,
            });
        }

        let (gpt, read_from) = match (&primary, &backup) {
            (Err(HeaderProblem::NoSignature), Err(HeaderProblem::NoSignature)) => {
                return Err(DiskError::NotGpt {
                    path: path.to_path_buf(),
                });
            }
            (Ok(_), _) => match GPT::read_from(&mut file, SECTOR_SIZE) {
                Ok(gpt) => (gpt, GptCopy::Primary),
                Err(primary_err) => {
                    let backup_result = match &backup {
                        Ok(_) => GPT::read_from(&mut HidePrimary::new(&mut file), SECTOR_SIZE)
                            .map_err(|e| e.to_string()),
                        Err(p) => Err(p.to_string()),
                    };
                    match backup_result {
                        Ok(gpt) => {
                            warnings.push(format!(
                                "primary GPT is corrupt ({primary_err}); read the backup copy"
                            ));
                            (gpt, GptCopy::Backup)
                        }
                        Err(backup_err) => {
                            return Err(DiskError::CorruptGpt {
                                path: path.to_path_buf(),
                                primary: primary_err.to_string(),
                                backup: backup_err,
                            });
                        }
                    }
                }
            },
            (Err(p), Ok(_)) => {
                match GPT::read_from(&mut HidePrimary::new(&mut file), SECTOR_SIZE) {
                    Ok(gpt) => {
                        warnings.push(format!(
                            "primary GPT header is unusable ({p}); read the backup copy"
                        ));
                        (gpt, GptCopy::Backup)
                    }
                    Err(e) => {
                        return Err(DiskError::CorruptGpt {
                            path: path.to_path_buf(),
                            primary: p.to_string(),
                            backup: e.to_string(),
                        });
                    }
                }
            }
            (Err(p), Err(b)) => {
                return Err(DiskError::CorruptGpt {
                    path: path.to_path_buf(),
                    primary: p.to_string(),
                    backup: b.to_string(),
                });
            }
        };

        if read_from == GptCopy::Primary {
            match &backup {
                Err(b) => warnings.push(format!(
                    "backup GPT header is unusable ({b}); committing a change rewrites it"
                )),
                Ok(_) => {
                    // The backup header is fine; check its entry array too.
                    if let Err(e) = GPT::read_from(&mut HidePrimary::new(&mut file), SECTOR_SIZE) {
                        warnings.push(format!(
                            "backup GPT is corrupt ({e}); committing a change rewrites it"
                        ));
                    }
                }
            }
            if gpt.header.backup_lba < last_lba {
                warnings.push(format!(
                    "the backup GPT is at LBA {} but the disk ends at LBA {last_lba} (the disk was grown)",
                    gpt.header.backup_lba
                ));
            }
        }
        if let Some(msg) = check_protective_mbr(&mut file).map_err(io_err("reading", path))? {
            warnings.push(msg);
        }
        if let Some(end) = gpt
            .iter()
            .filter(|(_, e)| e.is_used())
            .map(|(_, e)| e.ending_lba)
            .max()
            && end > last_lba
        {
            return Err(DiskError::Truncated {
                path: path.to_path_buf(),
                actual: size,
                expected: (end.saturating_add(1)).saturating_mul(SECTOR_SIZE),
                backup_lba: gpt.header.backup_lba.max(gpt.header.primary_lba),
            });
        }
        for w in &warnings {
            warn!(path = %path.display(), "{w}");
        }
        Ok(Disk {
            path: path.to_path_buf(),
            file,
            writable,
            gpt,
            size,
            read_from,
            warnings,
        })
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the image in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// The disk GUID.
    pub fn disk_guid(&self) -> Uuid {
        Uuid::from_bytes_le(self.gpt.header.disk_guid)
    }

    /// Which GPT copy the table came from.
    pub fn read_from(&self) -> GptCopy {
        self.read_from
    }

    /// Problems found while reading that did not stop us (corrupt backup, missing MBR, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of entries in the partition table (the highest valid partition number).
    pub fn max_partitions(&self) -> u32 {
        self.gpt.header.number_of_partition_entries
    }

    fn check_number(&self, number: u32) -> Result<(), DiskError> {
        if number == 0 || number > self.max_partitions() {
            return Err(DiskError::PartitionOutOfRange {
                path: self.path.clone(),
                number,
                max: self.max_partitions(),
            });
        }
        Ok(())
    }

    fn check_used(&self, number: u32) -> Result<(), DiskError> {
        self.check_number(number)?;
        if self.gpt[number].is_unused() {
            return Err(DiskError::PartitionUnused {
                path: self.path.clone(),
                number,
            });
        }
        Ok(())
    }

    /// One used partition.
    pub fn partition(&self, number: u32) -> Result<PartitionInfo, DiskError> {
        self.check_used(number)?;
        Ok(self.info(number))
    }

    fn info(&self, number: u32) -> PartitionInfo {
        let e = &self.gpt[number];
        let type_guid = Uuid::from_bytes_le(e.partition_type_guid);
        PartitionInfo {
            number,
            first_lba: e.starting_lba,
            last_lba: e.ending_lba,
            size_bytes: e
                .ending_lba
                .saturating_sub(e.starting_lba)
                .saturating_add(1)
                .saturating_mul(SECTOR_SIZE),
            type_guid,
            type_name: types::by_guid(type_guid).map(|t| t.name),
            label: e.partition_name.as_str().to_string(),
            uuid: Uuid::from_bytes_le(e.unique_partition_guid),
            attributes: e.attribute_bits,
            attributes_hex: format!("{:016x}", e.attribute_bits),
            flags: attrs::flag_names(e.attribute_bits),
            prio: PrioBits::from_attributes(e.attribute_bits),
        }
    }

    /// All used partitions, in table order.
    pub fn partitions(&self) -> Vec<PartitionInfo> {
        self.gpt
            .iter()
            .filter(|(_, e)| e.is_used())
            .map(|(n, _)| self.info(n))
            .collect()
    }

    /// Sets a partition's label (at most 36 UTF-16 code units, no NUL).
    pub fn set_label(&mut self, number: u32, label: &str) -> Result<(), DiskError> {
        self.check_used(number)?;
        check_label(label)?;
        self.gpt[number].partition_name = label.into();
        Ok(())
    }

    /// Sets a partition's UUID, refusing one another partition already has.
    pub fn set_uuid(&mut self, number: u32, uuid: Uuid) -> Result<(), DiskError> {
        self.check_used(number)?;
        let bytes = uuid.to_bytes_le();
        if let Some((other, _)) = self
            .gpt
            .iter()
            .find(|(n, e)| *n != number && e.is_used() && e.unique_partition_guid == bytes)
        {
            return Err(DiskError::DuplicateUuid {
                path: self.path.clone(),
                number,
                uuid,
                other,
            });
        }
        self.gpt[number].unique_partition_guid = bytes;
        Ok(())
    }

    /// Sets a partition's type GUID.
    pub fn set_type(&mut self, number: u32, type_guid: Uuid) -> Result<(), DiskError> {
        self.check_used(number)?;
        if type_guid.is_nil() {
            return Err(DiskError::Layout {
                field: "type_guid",
                value: 0,
                reason: "the nil type marks an unused entry; remove the partition instead".into(),
            });
        }
        self.gpt[number].partition_type_guid = type_guid.to_bytes_le();
        Ok(())
    }

    /// Sets a partition's whole 64-bit attribute field.
    pub fn set_attributes(&mut self, number: u32, attributes: u64) -> Result<(), DiskError> {
        self.check_used(number)?;
        self.gpt[number].attribute_bits = attributes;
        Ok(())
    }

    /// Changes some of a partition's priority/tries/successful bits, keeping the others.
    pub fn update_prio(
        &mut self,
        number: u32,
        priority: Option<u8>,
        tries: Option<u8>,
        successful: Option<bool>,
    ) -> Result<PrioBits, DiskError> {
        self.check_used(number)?;
        let mut a = self.gpt[number].attribute_bits;
        let attr_err = |source| DiskError::Attribute {
            path: self.path.clone(),
            number,
            source,
        };
        if let Some(p) = priority {
            a = attrs::with_priority(a, p).map_err(attr_err)?;
        }
        if let Some(t) = tries {
            a = attrs::with_tries(a, t).map_err(attr_err)?;
        }
        if let Some(s) = successful {
            a = attrs::with_successful(a, s);
        }
        self.gpt[number].attribute_bits = a;
        Ok(PrioBits::from_attributes(a))
    }

    /// Copies exactly `len` bytes from `reader` into partition `number`, refusing before writing
    /// anything when `len` exceeds the partition. `image` names the source in errors.
    pub fn write_image(
        &mut self,
        number: u32,
        reader: &mut dyn Read,
        len: u64,
        image: &str,
    ) -> Result<(), DiskError> {
        self.require_writable()?;
        let info = self.partition(number)?;
        if len > info.size_bytes {
            return Err(DiskError::ImageTooLarge {
                path: self.path.clone(),
                number,
                label: info.label,
                image: image.to_string(),
                image_bytes: len,
                partition_bytes: info.size_bytes,
            });
        }
        let action = format!("writing {image} into partition {number} of");
        self.file
            .seek(SeekFrom::Start(info.first_lba * SECTOR_SIZE))
            .map_err(io_err(&action, &self.path))?;
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut done: u64 = 0;
        while done < len {
            let want = usize::try_from((len - done).min(COPY_BUFFER as u64)).unwrap_or(COPY_BUFFER);
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(DiskError::ImageShort {
                        path: self.path.clone(),
                        number,
                        image: image.to_string(),
                        declared: len,
                        got: done,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(DiskError::Io {
                        action: format!("reading {image} for partition {number} of"),
                        path: self.path.clone(),
                        source: e,
                    });
                }
            };
            self.file
                .write_all(&buf[..n])
                .map_err(io_err(&action, &self.path))?;
            done += n as u64;
        }
        self.file.flush().map_err(io_err(&action, &self.path))?;
        info!(path = %self.path.display(), partition = number, bytes = len, image, "wrote image");
        Ok(())
    }

    /// Writes the file at `image` into partition `number` (refused before writing if too large).
    pub fn write_image_file(&mut self, number: u32, image: &Path) -> Result<(), DiskError> {
        let mut f = File::open(image).map_err(io_err("opening", image))?;
        let len = f
            .metadata()
            .map_err(io_err("reading the size of", image))?
            .len();
        self.write_image(number, &mut f, len, &image.display().to_string())
    }

    /// Installs a version into a usr slot: writes the usr image and its verity tree, sets the
    /// partition UUIDs from the root hash and the labels `keelson_<version>` and
    /// `keelson_<version>_verity`. Both sizes are checked before anything is written.
    pub fn install_usr_slot(
        &mut self,
        slot: UsrSlot,
        version: &str,
        root_hash: &[u8],
        usr_image: &Path,
        verity_image: &Path,
    ) -> Result<(), DiskError> {
        self.require_writable()?;
        let (usr_uuid, verity_uuid) = uuids_from_root_hash(root_hash)?;
        let (usr_label, verity_label) = (usr_label(version), usr_verity_label(version));
        check_label(&usr_label)?;
        check_label(&verity_label)?;
        let (usr_n, verity_n) = (slot.usr_partition(), slot.verity_partition());
        for (number, image) in [(usr_n, usr_image), (verity_n, verity_image)] {
            let info = self.partition(number)?;
            let len = std::fs::metadata(image)
                .map_err(io_err("reading the size of", image))?
                .len();
            if len > info.size_bytes {
                return Err(DiskError::ImageTooLarge {
                    path: self.path.clone(),
                    number,
                    label: info.label,
                    image: image.display().to_string(),
                    image_bytes: len,
                    partition_bytes: info.size_bytes,
                });
            }
        }
        // UUID clashes (the same hash already in the other slot) are refused before writing.
        let saved = self.gpt.clone();
        let clash = self
            .set_uuid(usr_n, usr_uuid)
            .and_then(|()| self.set_uuid(verity_n, verity_uuid));
        self.gpt = saved;
        clash?;
        // A slot whose label and UUIDs name a version must never sit over half-written data:
        // mark it empty on disk before overwriting it.
        let holds_version = [usr_n, verity_n]
            .iter()
            .any(|n| self.gpt[*n].partition_name.as_str() != EMPTY_LABEL);
        if holds_version {
            self.clear_usr_slot(slot)?;
            self.commit()?;
        }
        self.write_image_file(usr_n, usr_image)?;
        self.write_image_file(verity_n, verity_image)?;
        self.set_uuid(usr_n, usr_uuid)?;
        self.set_uuid(verity_n, verity_uuid)?;
        self.set_label(usr_n, &usr_label)?;
        self.set_label(verity_n, &verity_label)?;
        info!(path = %self.path.display(), slot = slot.name(), version, "installed usr slot");
        Ok(())
    }

    /// Marks a usr slot empty (in memory; commit after): labels `_empty` and UUIDs that no
    /// root hash will match, derived from the disk GUID and the partition's role.
    pub fn clear_usr_slot(&mut self, slot: UsrSlot) -> Result<(), DiskError> {
        let seed = self.disk_guid().to_string();
        let role = slot.name().to_ascii_lowercase();
        for (number, purpose) in [
            (slot.usr_partition(), format!("empty-usr-{role}")),
            (slot.verity_partition(), format!("empty-usr-verity-{role}")),
        ] {
            self.set_label(number, EMPTY_LABEL)?;
            self.set_uuid(number, derive_uuid(&seed, &purpose))?;
        }
        Ok(())
    }

    fn require_writable(&self) -> Result<(), DiskError> {
        if self.writable {
            Ok(())
        } else {
            Err(DiskError::ReadOnly {
                path: self.path.clone(),
            })
        }
    }

    /// Writes the edited table to both GPT copies (recomputing the CRCs) and syncs the file.
    pub fn commit(&mut self) -> Result<(), DiskError> {
        self.require_writable()?;
        // Partition data written so far reaches the disk before a table that names it.
        self.file
            .sync_data()
            .map_err(io_err("syncing", &self.path))?;
        self.gpt
            .write_into(&mut self.file)
            .map_err(|source| DiskError::Gpt {
                action: "writing the partition table of",
                path: self.path.clone(),
                source,
            })?;
        self.file
            .sync_all()
            .map_err(io_err("syncing", &self.path))?;
        info!(path = %self.path.display(), "partition table written");
        Ok(())
    }

    /// The Flatcar USR partitions (type coreos-usr) as a gptprio slot table, in table order.
    pub fn flatcar_slots(&self) -> Vec<Slot> {
        self.gpt
            .iter()
            .filter(|(_, e)| Uuid::from_bytes_le(e.partition_type_guid) == types::COREOS_USR.guid)
            .map(|(number, e)| Slot {
                number,
                bits: PrioBits::from_attributes(e.attribute_bits),
            })
            .collect()
    }

    /// GRUB `gptprio.next` on this disk: picks the USR partition to boot and, when it had tries
    /// left, decrements them and rewrites both GPT copies (which also repairs a wiped copy).
    /// When nothing changes, nothing is written.
    pub fn gptprio_next(&mut self) -> Result<Pick, DiskError> {
        let pick =
            gptprio::next(&self.flatcar_slots()).ok_or_else(|| DiskError::NoBootableSlot {
                path: self.path.clone(),
            })?;
        if pick.changed() {
            self.require_writable()?;
            let number = pick.number;
            self.gpt[number].attribute_bits = pick.after.apply(self.gpt[number].attribute_bits);
            self.commit()?;
        }
        Ok(pick)
    }

    /// `cgpt prioritize -i number [-P max] [-f]` over the USR partitions (in memory; commit after).
    pub fn prioritize(
        &mut self,
        number: u32,
        max_priority: Option<u8>,
        friends: bool,
    ) -> Result<(), DiskError> {
        self.check_used(number)?;
        let mut slots = self.flatcar_slots();
        gptprio::prioritize(&mut slots, Some(number), max_priority, friends).map_err(|source| {
            DiskError::Prioritize {
                path: self.path.clone(),
                source,
            }
        })?;
        for s in slots {
            self.gpt[s.number].attribute_bits = s.bits.apply(self.gpt[s.number].attribute_bits);
        }
        Ok(())
    }

    /// The partition table and A/B slot state, for `keelson disk show`.
    pub fn report(&self) -> DiskReport {
        DiskReport::build(self)
    }
}

fn check_label(label: &str) -> Result<(), DiskError> {
    if label.encode_utf16().count() > MAX_LABEL_UNITS {
        return Err(DiskError::LabelInvalid {
            label: label.to_string(),
            reason: "longer than the 36 UTF-16 code units a GPT entry holds",
        });
    }
    if label.contains('\0') {
        return Err(DiskError::LabelInvalid {
            label: label.to_string(),
            reason: "contains a NUL character",
        });
    }
    Ok(())
}

fn io_err(action: &str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let action = action.to_string();
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// Why one GPT header copy was refused.
#[derive(Debug)]
enum HeaderProblem {
    NoSignature,
    Invalid(String),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::NoSignature => f.write_str("no \"EFI PART\" signature"),
            HeaderProblem::Invalid(s) => f.write_str(s),
        }
    }
}

/// Reads and sanity-checks the header at `lba`. The outer error is an I/O failure or a
/// header we refuse to hand to gptman; the inner one says why this copy is unusable.
fn read_header(
    file: &mut File,
    lba: u64,
    path: &Path,
    copy: &'static str,
    last_lba: u64,
) -> Result<Result<GPTHeader, HeaderProblem>, DiskError> {
    file.seek(SeekFrom::Start(lba * SECTOR_SIZE))
        .map_err(io_err("reading", path))?;
    let header = match GPTHeader::read_from(file) {
        Ok(h) => h,
        Err(gptman::Error::InvalidSignature) => return Ok(Err(HeaderProblem::NoSignature)),
        Err(gptman::Error::Io(e)) => return Err(io_err("reading", path)(e)),
        Err(e) => return Ok(Err(HeaderProblem::Invalid(e.to_string()))),
    };
    // Odd sizes make this copy unusable (the other copy may still be fine).
    if header.size_of_partition_entry != 128 {
        return Ok(Err(HeaderProblem::Invalid(format!(
            "{copy} header: entry size {} is not supported (only 128-byte entries)",
            header.size_of_partition_entry
        ))));
    }
    if header.number_of_partition_entries == 0 || header.number_of_partition_entries > MAX_ENTRIES {
        return Ok(Err(HeaderProblem::Invalid(format!(
            "{copy} header: {} partition entries, expected 1..={MAX_ENTRIES}",
            header.number_of_partition_entries
        ))));
    }
    let array_sectors = (u64::from(header.number_of_partition_entries) * 128).div_ceil(SECTOR_SIZE);
    if header.partition_entry_lba < 2
        || header.partition_entry_lba.saturating_add(array_sectors) > last_lba + 1
    {
        return Ok(Err(HeaderProblem::Invalid(format!(
            "partition entry array at LBA {} does not fit the disk",
            header.partition_entry_lba
        ))));
    }
    if header.first_usable_lba < 2 || header.last_usable_lba < header.first_usable_lba {
        return Ok(Err(HeaderProblem::Invalid(format!(
            "usable LBAs {}..={} are impossible",
            header.first_usable_lba, header.last_usable_lba
        ))));
    }
    // Entries gptman would choke on (a used entry starting at LBA 0 makes its alignment guess
    // panic) or that lie outside the usable area make this copy unusable.
    let mut array = vec![0u8; usize::try_from(array_sectors * SECTOR_SIZE).unwrap_or(0)];
    file.seek(SeekFrom::Start(header.partition_entry_lba * SECTOR_SIZE))
        .map_err(io_err("reading", path))?;
    file.read_exact(&mut array)
        .map_err(io_err("reading", path))?;
    for (i, entry) in array
        .chunks_exact(128)
        .take(header.number_of_partition_entries as usize)
        .enumerate()
    {
        if entry[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let lba = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&entry[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let (start, end) = (lba(32), lba(40));
        if start < header.first_usable_lba || end < start || end > header.last_usable_lba {
            return Ok(Err(HeaderProblem::Invalid(format!(
                "partition {} spans LBA {start}..={end}, outside the usable LBAs {}..={}",
                i + 1,
                header.first_usable_lba,
                header.last_usable_lba
            ))));
        }
    }
    Ok(Ok(header))
}

/// Returns a warning when sector 0 is not a protective MBR.
fn check_protective_mbr(file: &mut File) -> io::Result<Option<String>> {
    let mut mbr = [0u8; 512];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut mbr)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(Some(
            "no MBR signature in sector 0 (protective MBR missing)".into(),
        ));
    }
    let types: Vec<u8> = (0..4).map(|i| mbr[446 + 16 * i + 4]).collect();
    if !types.contains(&0xee) {
        return Ok(Some(format!(
            "sector 0 is not a protective MBR (partition types {types:02x?}, none is 0xee)"
        )));
    }
    Ok(None)
}

/// A view of the disk whose LBA 1 reads as zeros, so gptman falls back to the backup copy.
struct HidePrimary<'a> {
    inner: &'a mut File,
    pos: u64,
}

impl<'a> HidePrimary<'a> {
    fn new(inner: &'a mut File) -> Self {
        HidePrimary { inner, pos: 0 }
    }
}

impl Read for HidePrimary<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        let (hide_start, hide_end) = (SECTOR_SIZE, 2 * SECTOR_SIZE);
        if start < hide_end && end > hide_start {
            let from = usize::try_from(hide_start.saturating_sub(start)).unwrap_or(0);
            let to = usize::try_from(hide_end.min(end) - start).unwrap_or(n);
            buf[from..to].fill(0);
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for HidePrimary<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}
