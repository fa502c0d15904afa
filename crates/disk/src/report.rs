//! What `keelson disk show` prints: the partition table and the A/B slot state, as one typed
//! struct that is both serialised (`--json`) and displayed.

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

use crate::attrs::PrioBits;
use crate::disk::{Disk, GptCopy, PartitionInfo};
use crate::layout::SECTOR_SIZE;
use crate::size::format_size;
use crate::{EMPTY_LABEL, gptprio, types, version_from_label};

/// A disk's partition table and A/B slot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskReport {
    /// The image path.
    pub path: String,
    /// Image size in bytes.
    pub size_bytes: u64,
    /// Logical sector size.
    pub sector_size: u64,
    /// Disk GUID.
    pub disk_guid: Uuid,
    /// Which GPT copy was read.
    pub gpt_read_from: GptCopy,
    /// Problems found while reading (corrupt backup, no protective MBR, ...).
    pub warnings: Vec<String>,
    /// Used partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// A/B slots, by the scheme the disk uses.
    pub slots: SlotState,
}

/// The A/B scheme found on the disk and its slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum SlotState {
    /// DPS usr + usr-verity pairs (Keelson; versions in the labels).
    Keelson {
        /// Slots in table order (A, B, ...).
        slots: Vec<KeelsonSlot>,
    },
    /// Flatcar coreos-usr partitions chosen by GRUB gptprio.
    Flatcar {
        /// USR partitions in table order.
        slots: Vec<FlatcarSlot>,
        /// Partition GRUB would boot next (None: boot would fail).
        boots_next: Option<u32>,
    },
    /// No usr partitions.
    None,
}

/// One Keelson usr slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeelsonSlot {
    /// "A", "B", ...
    pub name: String,
    /// usr partition number.
    pub usr_partition: u32,
    /// Paired usr-verity partition number.
    pub verity_partition: Option<u32>,
    /// usr partition label.
    pub label: String,
    /// Version from the label (`keelson_<version>`); None when empty.
    pub version: Option<String>,
    /// Labelled `_empty` (or unlabelled): holds nothing.
    pub empty: bool,
    /// usr partition UUID (first half of the root hash when installed).
    pub usr_uuid: Uuid,
    /// usr-verity partition UUID (last half of the root hash when installed).
    pub verity_uuid: Option<Uuid>,
    /// The SHA-256 root hash the two UUIDs spell, for installed slots.
    pub root_hash: Option<String>,
    /// usr partition size.
    pub size_bytes: u64,
    /// usr-verity partition size.
    pub verity_size_bytes: Option<u64>,
    /// usr partition attribute field, 16 hex digits.
    pub attributes_hex: String,
    /// usr partition priority/tries/successful bits (unused by systemd-boot; shown for tools
    /// that use them).
    pub prio: PrioBits,
}

/// One Flatcar USR partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlatcarSlot {
    /// Partition number.
    pub partition: u32,
    /// Label (USR-A, USR-B).
    pub label: String,
    /// Partition UUID (GRUB picks vmlinuz-a for 7130c94a-...).
    pub uuid: Uuid,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Priority, tries, successful.
    pub prio: PrioBits,
    /// GRUB gptprio would boot this one next.
    pub boots_next: bool,
}

impl DiskReport {
    pub(crate) fn build(disk: &Disk) -> DiskReport {
        let partitions = disk.partitions();
        DiskReport {
            path: disk.path().display().to_string(),
            size_bytes: disk.size_bytes(),
            sector_size: SECTOR_SIZE,
            disk_guid: disk.disk_guid(),
            gpt_read_from: disk.read_from(),
            warnings: disk.warnings().to_vec(),
            slots: slot_state(disk, &partitions),
            partitions,
        }
    }
}

fn slot_state(disk: &Disk, partitions: &[PartitionInfo]) -> SlotState {
    let usr: Vec<&PartitionInfo> = partitions
        .iter()
        .filter(|p| types::is_dps_usr(p.type_guid))
        .collect();
    if !usr.is_empty() {
        let verity: Vec<&PartitionInfo> = partitions
            .iter()
            .filter(|p| types::is_dps_usr_verity(p.type_guid))
            .collect();
        let slots = usr
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let v = verity.get(i);
                let version = version_from_label(&u.label).map(str::to_string);
                let empty = u.label == EMPTY_LABEL || u.label.is_empty();
                let root_hash = match (empty, v) {
                    (false, Some(v)) => Some(format!(
                        "{}{}",
                        crate::hex(u.uuid.as_bytes()),
                        crate::hex(v.uuid.as_bytes())
                    )),
                    _ => None,
                };
                KeelsonSlot {
                    name: slot_name(i),
                    usr_partition: u.number,
                    verity_partition: v.map(|v| v.number),
                    label: u.label.clone(),
                    version,
                    empty,
                    usr_uuid: u.uuid,
                    verity_uuid: v.map(|v| v.uuid),
                    root_hash,
                    size_bytes: u.size_bytes,
                    verity_size_bytes: v.map(|v| v.size_bytes),
                    attributes_hex: u.attributes_hex.clone(),
                    prio: u.prio,
                }
            })
            .collect();
        return SlotState::Keelson { slots };
    }
    let table = disk.flatcar_slots();
    if table.is_empty() {
        return SlotState::None;
    }
    let next = gptprio::next(&table).map(|p| p.number);
    let slots = table
        .iter()
        .filter_map(|s| partitions.iter().find(|p| p.number == s.number))
        .map(|p| FlatcarSlot {
            partition: p.number,
            label: p.label.clone(),
            uuid: p.uuid,
            size_bytes: p.size_bytes,
            prio: p.prio,
            boots_next: next == Some(p.number),
        })
        .collect();
    SlotState::Flatcar {
        slots,
        boots_next: next,
    }
}

fn slot_name(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'A' + i).to_string(),
        _ => format!("#{}", i + 1),
    }
}

impl fmt::Display for DiskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Disk {}: {} ({} sectors of {} bytes)",
            self.path,
            format_size(self.size_bytes),
            self.size_bytes / self.sector_size,
            self.sector_size
        )?;
        let copy = match self.gpt_read_from {
            GptCopy::Primary => "primary",
            GptCopy::Backup => "backup",
        };
        writeln!(
            f,
            "Disk GUID: {}  (GPT read from the {copy} copy)",
            self.disk_guid
        )?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>3}  {:>10}  {:>10}  {:>10}  {:<58}  {:<24}  {:<36}  Attributes",
            "#", "Start", "End", "Size", "Type", "Label", "UUID"
        )?;
        for p in &self.partitions {
            let kind = format!("{} ({})", p.type_name.unwrap_or("unknown"), p.type_guid);
            let mut attrs = p.attributes_hex.clone();
            if p.prio != PrioBits::default() {
                attrs.push_str(&format!(" [{}]", p.prio));
            }
            if !p.flags.is_empty() {
                attrs.push_str(&format!(" [{}]", p.flags.join(",")));
            }
            writeln!(
                f,
                "{:>3}  {:>10}  {:>10}  {:>10}  {:<58}  {:<24}  {:<36}  {}",
                p.number,
                p.first_lba,
                p.last_lba,
                format_size(p.size_bytes),
                kind,
                p.label,
                p.uuid,
                attrs
            )?;
        }
        writeln!(f)?;
        match &self.slots {
            SlotState::None => writeln!(f, "A/B slots: none (no usr partitions)")?,
            SlotState::Keelson { slots } => {
                writeln!(f, "A/B slots (Keelson, DPS usr + usr-verity):")?;
                for s in slots {
                    let parts = match s.verity_partition {
                        Some(v) => format!("usr {} + verity {}", s.usr_partition, v),
                        None => format!("usr {} (no verity partition)", s.usr_partition),
                    };
                    let what = match (&s.version, s.empty) {
                        (_, true) => "empty".to_string(),
                        (Some(v), false) => format!("version {v}"),
                        (None, false) => format!("label {:?} (no version)", s.label),
                    };
                    write!(
                        f,
                        "  {}: {parts}, {}, {what}",
                        s.name,
                        format_size(s.size_bytes)
                    )?;
                    if let Some(h) = &s.root_hash {
                        write!(f, ", root hash {h}")?;
                    }
                    if s.prio != PrioBits::default() {
                        write!(f, ", {}", s.prio)?;
                    }
                    writeln!(f)?;
                }
            }
            SlotState::Flatcar { slots, boots_next } => {
                writeln!(f, "A/B slots (Flatcar, GRUB gptprio):")?;
                for s in slots {
                    writeln!(
                        f,
                        "  {:<8} partition {}, {}, {}, {}{}",
                        s.label,
                        s.partition,
                        s.uuid,
                        format_size(s.size_bytes),
                        s.prio,
                        if s.boots_next { "  <- boots next" } else { "" }
                    )?;
                }
                if boots_next.is_none() {
                    writeln!(
                        f,
                        "  no USR partition can boot: GRUB would stop with \"no such partition\""
                    )?;
                }
            }
        }
        Ok(())
    }
}
