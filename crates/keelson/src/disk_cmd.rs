//! `keelson disk show|create|set-prio|write|install|gptprio-next|prioritize` over `keelson-disk`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use keelson_disk::Uuid;
use keelson_disk::{Arch, Disk, Layout, PrioBits, UsrSlot, format_size, parse_size};
use serde::Serialize;

/// Subcommands of `keelson disk`.
#[derive(Subcommand)]
pub enum DiskCommand {
    /// Print the partition table and the A/B slot state (Keelson or Flatcar).
    Show(ShowArgs),
    /// Create a sparse Keelson disk image: ESP, usr A, usr-verity A, usr B, usr-verity B, root.
    Create(CreateArgs),
    /// Read or change the ChromeOS/Flatcar priority, tries and successful bits of a partition.
    SetPrio(SetPrioArgs),
    /// Set a partition's label, UUID, type or whole attribute field.
    Set(SetArgs),
    /// Write a filesystem image into a partition (refused if it does not fit).
    Write(WriteArgs),
    /// Install a version into a usr slot: usr image, verity tree, UUIDs from the root hash, labels.
    Install(InstallArgs),
    /// GRUB `gptprio.next` on a Flatcar disk: pick the USR partition and spend one try.
    GptprioNext(GptprioNextArgs),
    /// `cgpt prioritize` on a Flatcar disk: rank a USR partition above the others.
    Prioritize(PrioritizeArgs),
}

/// `keelson disk show`.
#[derive(Args)]
pub struct ShowArgs {
    /// Disk image (or block device).
    image: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// CPU architecture of the usr/root partition types.
#[derive(Clone, Copy, ValueEnum)]
enum ArchArg {
    #[value(name = "x86-64")]
    X86_64,
    Arm64,
}

/// `keelson disk create`.
#[derive(Args)]
pub struct CreateArgs {
    /// Image file to write (replaced atomically if it exists).
    image: PathBuf,
    /// Disk size (bytes, or with K/M/G/T; binary units).
    #[arg(long, value_parser = size_arg)]
    size: u64,
    /// ESP size.
    #[arg(long, value_parser = size_arg, default_value = "128M")]
    esp_size: u64,
    /// Size of each usr partition.
    #[arg(long, value_parser = size_arg, default_value = "1G")]
    usr_size: u64,
    /// Size of each usr-verity partition.
    #[arg(long, value_parser = size_arg, default_value = "16M")]
    usr_verity_size: u64,
    /// Smallest root partition (root takes the rest of the disk).
    #[arg(long, value_parser = size_arg, default_value = "256M")]
    root_min_size: u64,
    /// Leave root's space free: systemd-repart creates the root partition on first boot.
    #[arg(long)]
    root_at_first_boot: bool,
    /// Architecture of the usr and root partition types.
    #[arg(long, value_enum, default_value = "x86-64")]
    arch: ArchArg,
    /// Seed of the disk GUID and partition UUIDs (same seed, same image).
    #[arg(long, default_value = Layout::DEFAULT_SEED)]
    seed: String,
    /// Print the resulting disk as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson disk set-prio`.
#[derive(Args)]
pub struct SetPrioArgs {
    /// Disk image.
    image: PathBuf,
    /// Partition number (1-based).
    #[arg(long)]
    partition: u32,
    /// Priority, 0..=15 (bits 48-51).
    #[arg(long)]
    priority: Option<u8>,
    /// Tries left, 0..=15 (bits 52-55).
    #[arg(long)]
    tries: Option<u8>,
    /// Successful flag (bit 56).
    #[arg(long, action = clap::ArgAction::Set)]
    successful: Option<bool>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson disk set`.
#[derive(Args)]
pub struct SetArgs {
    /// Disk image.
    image: PathBuf,
    /// Partition number (1-based).
    #[arg(long)]
    partition: u32,
    /// New label (at most 36 UTF-16 code units).
    #[arg(long)]
    label: Option<String>,
    /// New partition UUID.
    #[arg(long)]
    uuid: Option<String>,
    /// New type: a GUID or a name printed by `keelson disk show` (usr-x86-64, esp, ...).
    #[arg(long = "type")]
    kind: Option<String>,
    /// New 64-bit attribute field, as 16 hex digits (sgdisk's form).
    #[arg(long)]
    attributes: Option<String>,
}

/// `keelson disk write`.
#[derive(Args)]
pub struct WriteArgs {
    /// Disk image.
    image: PathBuf,
    /// Partition number (1-based).
    #[arg(long)]
    partition: u32,
    /// Filesystem image to copy into the partition.
    source: PathBuf,
}

/// Usr slot name.
#[derive(Clone, Copy, ValueEnum)]
enum SlotArg {
    A,
    B,
}

/// `keelson disk install`.
#[derive(Args)]
pub struct InstallArgs {
    /// Disk image.
    image: PathBuf,
    /// Slot to install into.
    #[arg(long, value_enum)]
    slot: SlotArg,
    /// Version for the labels (`keelson_<version>`).
    #[arg(long)]
    version: String,
    /// dm-verity root hash of the usr image (hex).
    #[arg(long)]
    root_hash: String,
    /// usr filesystem image.
    #[arg(long)]
    usr: PathBuf,
    /// Its verity hash tree (with superblock).
    #[arg(long)]
    verity: PathBuf,
}

/// `keelson disk gptprio-next`.
#[derive(Args)]
pub struct GptprioNextArgs {
    /// Disk image.
    image: PathBuf,
    /// Only say what would boot; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the pick as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson disk prioritize`.
#[derive(Args)]
pub struct PrioritizeArgs {
    /// Disk image.
    image: PathBuf,
    /// USR partition to rank first.
    #[arg(long)]
    partition: u32,
    /// Highest priority to hand out (1..=15; default: number of groups).
    #[arg(long)]
    max_priority: Option<u8>,
    /// Move the partition's whole priority group with it (`cgpt prioritize -f`).
    #[arg(long)]
    friends: bool,
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

pub fn run(cmd: DiskCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DiskCommand::Show(a) => show(&a.image, a.json),
        DiskCommand::Create(a) => create(a),
        DiskCommand::SetPrio(a) => set_prio(a),
        DiskCommand::Set(a) => set(a),
        DiskCommand::Write(a) => write(a),
        DiskCommand::Install(a) => install(a),
        DiskCommand::GptprioNext(a) => gptprio_next(a),
        DiskCommand::Prioritize(a) => prioritize(a),
    }
}

fn show(image: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let disk = Disk::open(image).with_context(|| format!("reading {}", image.display()))?;
    let report = disk.report();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout {
        disk_size: a.size,
        esp_size: a.esp_size,
        usr_size: a.usr_size,
        usr_verity_size: a.usr_verity_size,
        root_min_size: a.root_min_size,
        arch: match a.arch {
            ArchArg::X86_64 => Arch::X86_64,
            ArchArg::Arm64 => Arch::Arm64,
        },
        seed: a.seed,
        root_at_first_boot: a.root_at_first_boot,
    };
    keelson_disk::create(&a.image, &layout)
        .with_context(|| format!("creating disk image {}", a.image.display()))?;
    if a.json {
        show(&a.image, true)
    } else {
        println!(
            "created {} ({}, disk GUID {})",
            a.image.display(),
            format_size(layout.disk_size),
            layout.disk_guid()
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// What `set-prio` prints.
#[derive(Serialize)]
struct PrioResult {
    partition: u32,
    label: String,
    attributes_hex: String,
    prio: PrioBits,
    changed: bool,
}

fn set_prio(a: SetPrioArgs) -> anyhow::Result<ExitCode> {
    let changing = a.priority.is_some() || a.tries.is_some() || a.successful.is_some();
    let mut disk = if changing {
        Disk::open_rw(&a.image)
    } else {
        Disk::open(&a.image)
    }
    .with_context(|| format!("opening {}", a.image.display()))?;
    let ctx = || format!("partition {} of {}", a.partition, a.image.display());
    let before = disk.partition(a.partition).with_context(ctx)?;
    if changing {
        disk.update_prio(a.partition, a.priority, a.tries, a.successful)
            .with_context(ctx)?;
        disk.commit().with_context(ctx)?;
    }
    let after = disk.partition(a.partition).with_context(ctx)?;
    let result = PrioResult {
        partition: after.number,
        label: after.label,
        attributes_hex: after.attributes_hex,
        prio: after.prio,
        changed: after.attributes != before.attributes,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "partition {} ({}): attributes {} {}",
            result.partition, result.label, result.attributes_hex, result.prio
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn set(a: SetArgs) -> anyhow::Result<ExitCode> {
    let mut disk =
        Disk::open_rw(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
    let ctx = || format!("partition {} of {}", a.partition, a.image.display());
    if let Some(label) = &a.label {
        disk.set_label(a.partition, label).with_context(ctx)?;
    }
    if let Some(text) = &a.uuid {
        let uuid: Uuid = text
            .parse()
            .with_context(|| format!("--uuid {text:?} is not a UUID"))?;
        disk.set_uuid(a.partition, uuid).with_context(ctx)?;
    }
    if let Some(text) = &a.kind {
        let guid = match keelson_disk::types::by_name(text) {
            Some(t) => t.guid,
            None => text.parse().with_context(|| {
                format!("--type {text:?} is neither a type GUID nor a known type name")
            })?,
        };
        disk.set_type(a.partition, guid).with_context(ctx)?;
    }
    if let Some(text) = &a.attributes {
        let bits = u64::from_str_radix(text.trim_start_matches("0x"), 16)
            .with_context(|| format!("--attributes {text:?} is not a 64-bit hex number"))?;
        disk.set_attributes(a.partition, bits).with_context(ctx)?;
    }
    disk.commit().with_context(ctx)?;
    let p = disk.partition(a.partition).with_context(ctx)?;
    println!(
        "partition {}: label {:?}, uuid {}, type {}, attributes {}",
        p.number,
        p.label,
        p.uuid,
        p.type_name
            .map_or_else(|| p.type_guid.to_string(), str::to_string),
        p.attributes_hex
    );
    Ok(ExitCode::SUCCESS)
}

fn write(a: WriteArgs) -> anyhow::Result<ExitCode> {
    let mut disk =
        Disk::open_rw(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
    disk.write_image_file(a.partition, &a.source)
        .with_context(|| {
            format!(
                "writing {} into partition {} of {}",
                a.source.display(),
                a.partition,
                a.image.display()
            )
        })?;
    println!(
        "wrote {} into partition {} of {}",
        a.source.display(),
        a.partition,
        a.image.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let t = text.trim();
    if !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("root hash {t:?} is not an even number of hex digits");
    }
    (0..t.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&t[i..i + 2], 16)
                .with_context(|| format!("root hash {t:?}: bad hex at {i}"))
        })
        .collect()
}

fn install(a: InstallArgs) -> anyhow::Result<ExitCode> {
    let hash = decode_hex(&a.root_hash)?;
    let slot = match a.slot {
        SlotArg::A => UsrSlot::A,
        SlotArg::B => UsrSlot::B,
    };
    let mut disk =
        Disk::open_rw(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
    let ctx = || {
        format!(
            "installing version {} into slot {} of {}",
            a.version,
            slot.name(),
            a.image.display()
        )
    };
    disk.install_usr_slot(slot, &a.version, &hash, &a.usr, &a.verity)
        .with_context(ctx)?;
    disk.commit().with_context(ctx)?;
    println!(
        "installed {} into slot {} (partitions {} and {}) of {}",
        a.version,
        slot.name(),
        slot.usr_partition(),
        slot.verity_partition(),
        a.image.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn gptprio_next(a: GptprioNextArgs) -> anyhow::Result<ExitCode> {
    let pick = if a.dry_run {
        let disk =
            Disk::open(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
        keelson_disk::gptprio::next(&disk.flatcar_slots()).with_context(|| {
            format!(
                "{}: no USR partition can boot (gptprio: none with priority > 0 and tries > 0 or successful)",
                a.image.display()
            )
        })?
    } else {
        let mut disk =
            Disk::open_rw(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
        disk.gptprio_next()
            .with_context(|| format!("gptprio.next on {}", a.image.display()))?
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&pick)?);
    } else {
        println!(
            "boot partition {}: {} -> {}",
            pick.number, pick.before, pick.after
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prioritize(a: PrioritizeArgs) -> anyhow::Result<ExitCode> {
    let mut disk =
        Disk::open_rw(&a.image).with_context(|| format!("opening {}", a.image.display()))?;
    let ctx = || {
        format!(
            "prioritizing partition {} of {}",
            a.partition,
            a.image.display()
        )
    };
    disk.prioritize(a.partition, a.max_priority, a.friends)
        .with_context(ctx)?;
    disk.commit().with_context(ctx)?;
    for s in disk.flatcar_slots() {
        println!("partition {}: {}", s.number, s.bits);
    }
    Ok(ExitCode::SUCCESS)
}
