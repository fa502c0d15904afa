//! The disks stage: GPT partitions with `sgdisk` and filesystems with `mkfs.*`, against a
//! device path (a block device in the initrd, an image file in tests).
//!
//! Planning reads the current layout (`sgdisk --print`/`--info`, `blkid -p`) and applies
//! Ignition's reuse rules; the partition commands are checked with `sgdisk --pretend`
//! before anything is written.

use keelson_config::{Config, Filesystem, Partition};

use super::{ApplyError, NodeKind, Outcome, run_command, run_command_with_timeout};

/// Default partition type: Linux filesystem data.
pub const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// A partition as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingPartition {
    /// Partition number.
    pub number: u32,
    /// First sector.
    pub start: u64,
    /// Size in sectors.
    pub size: u64,
    /// PARTLABEL.
    pub label: String,
    /// Type GUID (uppercase).
    pub type_guid: String,
    /// Unique GUID (uppercase).
    pub guid: String,
}

/// A filesystem signature as found by blkid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExistingFs {
    /// `TYPE`.
    pub fs_type: String,
    /// `LABEL`.
    pub label: Option<String>,
    /// `UUID`.
    pub uuid: Option<String>,
}

/// Commands to run, and what they change.
#[derive(Debug, Clone, Default)]
pub struct DisksPlan {
    outcome: Outcome,
    commands: Vec<Step>,
}

/// Key bytes, never printed.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// One step of the disks stage.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Run a command, after waiting for the devices it needs.
    Run {
        program: String,
        args: Vec<String>,
        wait: Vec<String>,
    },
    /// Write a key file (0600): the given bytes, or 64 random ones.
    Key {
        path: std::path::PathBuf,
        bytes: Option<Secret>,
    },
    /// Run a command and keep its trimmed stdout in `path` (a LUKS volume's UUID).
    Save {
        program: String,
        args: Vec<String>,
        path: std::path::PathBuf,
    },
}

impl Step {
    /// A command, waiting for every `/dev/` argument except the ones it creates.
    pub(crate) fn run(program: &str, args: Vec<String>, wait: Vec<String>) -> Step {
        Step::Run {
            program: program.into(),
            args,
            wait,
        }
    }

    fn display(&self) -> String {
        match self {
            Step::Run { program, args, .. } | Step::Save { program, args, .. } => {
                format!("{program} {}", args.join(" "))
            }
            Step::Key { path, bytes } => format!(
                "write {} key to {}",
                if bytes.is_some() {
                    "the config's"
                } else {
                    "a random"
                },
                path.display()
            ),
        }
    }

    fn apply(&self) -> Result<(), ApplyError> {
        match self {
            Step::Run {
                program,
                args,
                wait,
            } => {
                for dev in wait {
                    wait_for_device(dev, DEVICE_WAIT)?;
                }
                run_command(program, args)?;
                if program == "sgdisk" {
                    settle();
                }
            }
            Step::Key { path, bytes } => {
                let bytes = match bytes {
                    Some(b) => b.0.clone(),
                    None => {
                        let mut b = vec![0u8; 64];
                        let mut f = std::fs::File::open("/dev/urandom")
                            .map_err(super::ApplyError::io("opening", "/dev/urandom".as_ref()))?;
                        std::io::Read::read_exact(&mut f, &mut b)
                            .map_err(super::ApplyError::io("reading", "/dev/urandom".as_ref()))?;
                        b
                    }
                };
                create_private_dir(path)?;
                crate::passwd::write_atomic(path, &bytes, 0o600)?;
            }
            Step::Save {
                program,
                args,
                path,
            } => {
                let out = run_command(program, args)?;
                create_private_dir(path)?;
                crate::passwd::write_atomic(path, out.trim().as_bytes(), 0o600)?;
            }
        }
        Ok(())
    }
}

fn create_private_dir(file: &std::path::Path) -> Result<(), ApplyError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let Some(dir) = file.parent() else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(ApplyError::io("creating", dir))
}

impl DisksPlan {
    /// What applying changes.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// The command lines that will run (key material is never shown).
    pub fn commands(&self) -> Vec<String> {
        self.commands.iter().map(Step::display).collect()
    }

    /// Run the steps in order. A command on a device another one creates (a partition, an
    /// array, a mapping) waits for its node first; after each partition table change udev
    /// is given time to settle, so the real root finds the new labels.
    pub fn apply(self) -> Result<Outcome, ApplyError> {
        for step in &self.commands {
            step.apply()?;
        }
        Ok(self.outcome)
    }
}

/// How long to wait for a device node (a disk the kernel is still probing, a partition
/// just created).
pub const DEVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Wait until `device` exists, for at most `timeout`.
pub fn wait_for_device(device: &str, timeout: std::time::Duration) -> Result<(), ApplyError> {
    let start = std::time::Instant::now();
    while !std::path::Path::new(device).exists() {
        if start.elapsed() >= timeout {
            return Err(storage_err(
                device,
                format!("device did not appear within {} s", timeout.as_secs()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

/// Wait for the devices of `storage.disks` to appear (the disks stage can start while the
/// kernel is still probing them; RAID and LUKS members wait in their own steps).
pub fn wait_for_disks(config: &Config, timeout: std::time::Duration) -> Result<(), ApplyError> {
    for d in &config.storage.disks {
        wait_for_device(&d.device, timeout)?;
    }
    Ok(())
}

/// Let udev process the events of a change (best effort: there may be no udev, as in tests).
fn settle() {
    // udevadm's own limit, and ours in case udevadm itself hangs.
    let limit = std::time::Duration::from_secs(60);
    if let Err(e) =
        run_command_with_timeout("udevadm", &["settle".into(), "--timeout=30".into()], limit)
    {
        tracing::debug!(error = %e, "udevadm settle");
    }
}

/// Read the partition table of `device` (empty when it has none).
pub fn read_partitions(device: &str) -> Result<(u64, Vec<ExistingPartition>), ApplyError> {
    let out = run_command("sgdisk", &["--print".into(), device.into()])?;
    let mut sector = 512u64;
    let mut numbers = Vec::new();
    let mut in_table = false;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Sector size (logical): ") {
            sector = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(512);
        }
        if line.starts_with("Number") {
            in_table = true;
            continue;
        }
        if in_table
            && let Some(n) = line
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<u32>().ok())
        {
            numbers.push(n);
        }
    }
    let mut parts = Vec::new();
    for n in numbers {
        let info = run_command("sgdisk", &[format!("--info={n}"), device.into()])?;
        let field = |prefix: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::trim)
                .unwrap_or("")
                .to_string()
        };
        let first_word = |s: String| s.split_whitespace().next().unwrap_or("").to_string();
        let label = field("Partition name:");
        parts.push(ExistingPartition {
            number: n,
            start: first_word(field("First sector:")).parse().unwrap_or(0),
            size: first_word(field("Partition size:")).parse().unwrap_or(0),
            label: label.trim_matches('\'').to_string(),
            type_guid: first_word(field("Partition GUID code:")).to_uppercase(),
            guid: first_word(field("Partition unique GUID:")).to_uppercase(),
        });
    }
    Ok((sector, parts))
}

/// Probe a device for a filesystem signature; `None` when there is none.
pub fn probe_filesystem(device: &str) -> Result<Option<ExistingFs>, ApplyError> {
    let out = match keelson_cmd::run_with_timeout(
        std::process::Command::new("blkid").args(["-p", "-o", "export", device]),
        Some(super::TOOL_TIMEOUT),
    ) {
        Ok(out) => out,
        // blkid exits 2 when it finds nothing.
        Err(e) if e.code == Some(2) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
    };
    Ok(get("TYPE").map(|fs_type| ExistingFs {
        fs_type,
        label: get("LABEL"),
        uuid: get("UUID"),
    }))
}

pub(crate) fn storage_err(device: &str, reason: impl Into<String>) -> ApplyError {
    ApplyError::Storage {
        device: device.into(),
        reason: reason.into(),
    }
}

/// Where the disks stage finds fetched key files and leaves LUKS keys for the files stage.
#[derive(Debug, Clone)]
pub struct DisksOptions {
    /// Reads `storage.luks[].keyFile` (offline: from the fetch stage's cache).
    pub fetcher: Option<crate::fetch::Fetcher>,
    /// `<name>.key` and `<name>.uuid` of each LUKS volume (`/run/keelson/luks`).
    pub luks_dir: std::path::PathBuf,
}

impl Default for DisksOptions {
    fn default() -> Self {
        DisksOptions {
            fetcher: None,
            luks_dir: DEFAULT_LUKS_DIR.into(),
        }
    }
}

/// Where the disks stage leaves LUKS keys and UUIDs for the files stage.
pub const DEFAULT_LUKS_DIR: &str = "/run/keelson/luks";

/// Plan the disks stage of `config` with the default directories.
pub fn plan_disks(config: &Config) -> Result<DisksPlan, ApplyError> {
    plan_disks_with(config, &DisksOptions::default())
}

/// Plan the disks stage of `config`: partitions, then RAID arrays, then LUKS volumes, then
/// file systems (Ignition's order, so each can sit on the one before).
pub fn plan_disks_with(config: &Config, opts: &DisksOptions) -> Result<DisksPlan, ApplyError> {
    let mut plan = DisksPlan::default();
    for disk in &config.storage.disks {
        plan_disk(disk, &mut plan)?;
    }
    for (i, raid) in config.storage.raid.iter().enumerate() {
        super::crypt::plan_raid(i, raid, &mut plan)?;
    }
    for (i, luks) in config.storage.luks.iter().enumerate() {
        super::crypt::plan_luks(i, luks, opts, &mut plan)?;
    }
    for fs in &config.storage.filesystems {
        plan_filesystem(fs, &mut plan)?;
    }
    Ok(plan)
}

impl DisksPlan {
    pub(crate) fn push(&mut self, step: Step) {
        self.commands.push(step);
    }

    pub(crate) fn note(&mut self, device: &str, action: String) {
        self.outcome.push(device, NodeKind::Device, action);
    }
}

fn mib_to_sectors(mib: i64, sector: u64, device: &str, field: &str) -> Result<u64, ApplyError> {
    u64::try_from(mib)
        .ok()
        .and_then(|m| m.checked_mul((1 << 20) / sector))
        .ok_or_else(|| storage_err(device, format!("{field} {mib} is not a valid size")))
}

/// One partition of the config as Ignition's disks stage sees it (`sgdisk.Partition` in
/// `internal/sgdisk`): start and size in sectors, `None` when not given, `Some(0)` for
/// "sgdisk's default" until [`resolve_zeroes`] replaces it with what sgdisk would pick.
struct Spec<'a> {
    p: &'a Partition,
    number: u32,
    start: Option<u64>,
    size: Option<u64>,
}

impl Spec<'_> {
    fn should_exist(&self) -> bool {
        self.p.should_exist != Some(false)
    }

    fn wipe_entry(&self) -> bool {
        self.p.wipe_partition_entry.unwrap_or(false)
    }

    fn name(&self) -> String {
        match (self.number, &self.p.label) {
            (0, Some(l)) => format!("partition {l:?}"),
            (n, _) => format!("partition {n}"),
        }
    }
}

fn spec<'a>(dev: &str, sector: u64, p: &'a Partition) -> Result<Spec<'a>, ApplyError> {
    // Ignition does not validate the number; sgdisk refuses a negative one, so do we.
    let number = match p.number {
        Some(n) if n < 0 => {
            return Err(storage_err(
                dev,
                format!("partition number {n} is not a valid partition number"),
            ));
        }
        Some(n) => u32::try_from(n)
            .map_err(|_| storage_err(dev, format!("partition number {n} is out of range")))?,
        None => 0,
    };
    Ok(Spec {
        p,
        number,
        start: p
            .start_mib
            .map(|s| mib_to_sectors(s, sector, dev, "startMiB"))
            .transpose()?,
        size: p
            .size_mib
            .map(|s| mib_to_sectors(s, sector, dev, "sizeMiB"))
            .transpose()?,
    })
}

/// Ignition's `partitionDisk` (`internal/exec/stages/disks/partitions.go`), planned instead of
/// run: partitions numbered 0 go last, start/size 0 are resolved with `sgdisk --pretend` as if
/// every partition of the config were (re)created after the deletions, then each partition
/// goes through Ignition's exists/shouldExist/matches/wipePartitionEntry matrix. One `sgdisk`
/// run does all deletions before all creations (`buildOptions` in `internal/sgdisk`).
fn plan_disk(disk: &keelson_config::Disk, plan: &mut DisksPlan) -> Result<(), ApplyError> {
    let dev = disk.device.as_str();
    if !std::path::Path::new(dev).exists() {
        return Err(storage_err(dev, "device does not exist"));
    }
    let (sector, mut existing) = read_partitions(dev)?;
    let wipe_table = disk.wipe_table.unwrap_or(false);
    let mut actions = Vec::new();
    if wipe_table {
        plan.commands.push(Step::run(
            "sgdisk",
            vec!["--zap-all".into(), dev.into()],
            vec![],
        ));
        actions.push("wipe partition table".to_string());
        existing.clear();
    }
    // Ignition sorts the partitions stably so that those numbered 0 ("the next free number")
    // come last, wherever the config lists them (`PartitionList`).
    let mut ordered: Vec<&Partition> = disk.partitions.iter().collect();
    ordered.sort_by_key(|p| p.number.unwrap_or(0) == 0);
    let mut specs = ordered
        .into_iter()
        .map(|p| spec(dev, sector, p))
        .collect::<Result<Vec<_>, _>>()?;
    resolve_zeroes(dev, wipe_table, &existing, &mut specs)?;

    let mut deletes: Vec<String> = Vec::new();
    let mut creates: Vec<String> = Vec::new();
    for s in &specs {
        plan_partition(dev, s, &existing, &mut deletes, &mut creates, &mut actions)?;
    }
    let mut args = deletes;
    args.append(&mut creates);
    if !args.is_empty() {
        // Ignition's trick: let sgdisk check the whole change before doing it. On a disk we
        // are about to wipe, the check runs after the wipe (as part of apply).
        if !wipe_table {
            let mut pretend = vec!["--pretend".to_string()];
            pretend.extend(args.iter().cloned());
            pretend.push(dev.into());
            run_command("sgdisk", &pretend)?;
        }
        args.push(dev.into());
        plan.commands.push(Step::run("sgdisk", args, vec![]));
    }
    if !actions.is_empty() {
        plan.outcome.push(dev, NodeKind::Device, actions.join("; "));
    }
    Ok(())
}

/// Ignition's `getRealStartAndSize`: an existing partition whose entry may not be wiped keeps
/// its start and size where the config gives none; then, if a numbered partition that should
/// exist has start or size 0, `sgdisk --pretend` deletes every existing partition of the
/// config, creates every one that should exist, and reports (`--info`) where those land. On
/// a disk whose table is wiped first, the pretend run starts from an empty table (`--clear`).
fn resolve_zeroes(
    dev: &str,
    wipe_table: bool,
    existing: &[ExistingPartition],
    specs: &mut [Spec<'_>],
) -> Result<(), ApplyError> {
    let mut deletes = Vec::new();
    let mut creates = Vec::new();
    for s in specs.iter_mut() {
        if let Some(e) = find_existing(existing, s.number) {
            deletes.push(format!("--delete={}", e.number));
            if !s.wipe_entry() {
                s.start.get_or_insert(e.start);
                s.size.get_or_insert(e.size);
            }
        }
        if s.should_exist() {
            creates.push(format!(
                "--new={}:{}:+{}",
                s.number,
                s.start.unwrap_or(0),
                s.size.unwrap_or(0)
            ));
        }
    }
    let inspect: Vec<u32> = specs
        .iter()
        .filter(|s| s.number != 0 && (s.start == Some(0) || s.size == Some(0)))
        .map(|s| s.number)
        .collect();
    if inspect.is_empty() {
        return Ok(());
    }
    let mut args = vec!["--pretend".to_string()];
    if wipe_table {
        args.push("--clear".into());
    }
    args.extend(deletes);
    args.extend(creates);
    args.extend(inspect.iter().map(|n| format!("--info={n}")));
    args.push(dev.into());
    let out = run_command("sgdisk", &args)?;
    let dims = parse_pretend_info(&out, inspect.len())
        .ok_or_else(|| storage_err(dev, format!("sgdisk had unexpected output: {out}")))?;
    for (n, (first, last)) in inspect.iter().zip(dims) {
        for s in specs.iter_mut().filter(|s| s.number == *n) {
            if s.start.is_some() {
                s.start = Some(first);
            }
            if s.size.is_some() {
                s.size = Some(last + 1 - first);
            }
        }
    }
    Ok(())
}

/// The `First sector:`/`Last sector:` pairs of `sgdisk --info` output, in order; `None` unless
/// there are exactly `count` well-formed pairs (Ignition's `parseSgdiskPretend`).
fn parse_pretend_info(out: &str, count: usize) -> Option<Vec<(u64, u64)>> {
    let value = |line: &str, prefix: &str| -> Option<Option<u64>> {
        let rest = line.strip_prefix(prefix)?;
        Some(rest.split_whitespace().next().and_then(|v| v.parse().ok()))
    };
    let mut pairs = Vec::new();
    let mut first: Option<u64> = None;
    for line in out.lines() {
        if let Some(v) = value(line, "First sector: ") {
            if first.is_some() {
                return None;
            }
            first = Some(v?);
        } else if let Some(v) = value(line, "Last sector: ") {
            let f = first.take()?;
            let l = v?;
            if l < f {
                return None;
            }
            pairs.push((f, l));
        }
    }
    (first.is_none() && pairs.len() == count).then_some(pairs)
}

/// The partition of that number on the disk; a partition numbered 0 ("the next free number")
/// never exists yet, as in Ignition (`DiskInfo.GetPartition`).
fn find_existing(existing: &[ExistingPartition], number: u32) -> Option<&ExistingPartition> {
    if number == 0 {
        return None;
    }
    existing.iter().find(|e| e.number == number)
}

/// Ignition's `partitionMatchesCommon`: everything the config gives, except the size, is what
/// the disk has (GUIDs compared without case).
fn matches_common(s: &Spec<'_>, e: &ExistingPartition) -> Vec<&'static str> {
    let mut diffs = Vec::new();
    if s.start.is_some_and(|v| v != e.start) {
        diffs.push("start");
    }
    if s.p
        .guid
        .as_deref()
        .is_some_and(|g| !g.is_empty() && !g.eq_ignore_ascii_case(&e.guid))
    {
        diffs.push("guid");
    }
    if s.p
        .type_guid
        .as_deref()
        .is_some_and(|g| !g.is_empty() && !g.eq_ignore_ascii_case(&e.type_guid))
    {
        diffs.push("typeGuid");
    }
    if s.p.label.as_deref().is_some_and(|l| l != e.label) {
        diffs.push("label");
    }
    diffs
}

fn push_new(
    creates: &mut Vec<String>,
    number: u32,
    start: Option<u64>,
    size: Option<u64>,
    label: Option<&str>,
    type_guid: Option<&str>,
    guid: Option<&str>,
) {
    // sgdisk takes "+N" as a count of sectors when no unit is given; 0 is its default (the
    // start, or the end, of the largest free block).
    creates.push(format!(
        "--new={number}:{}:+{}",
        start.unwrap_or(0),
        size.unwrap_or(0)
    ));
    // A number of 0 means "next free", which sgdisk also resolves for the options below.
    if let Some(l) = label {
        creates.push(format!("--change-name={number}:{l}"));
    }
    let t = type_guid.filter(|t| !t.is_empty()).unwrap_or(LINUX_FS_TYPE);
    creates.push(format!("--typecode={number}:{}", t.to_uppercase()));
    if let Some(g) = guid.filter(|g| !g.is_empty()) {
        creates.push(format!("--partition-guid={number}:{}", g.to_uppercase()));
    }
}

fn plan_partition(
    dev: &str,
    s: &Spec<'_>,
    existing: &[ExistingPartition],
    deletes: &mut Vec<String>,
    creates: &mut Vec<String>,
    actions: &mut Vec<String>,
) -> Result<(), ApplyError> {
    let p = s.p;
    let name = s.name();
    let found = find_existing(existing, s.number);
    let Some(e) = found else {
        if !s.should_exist() {
            // Specified as nonexistent and not there: nothing to do.
            return Ok(());
        }
        if let Some(l) = &p.label
            && (l.len() > 36 || l.contains(':'))
        {
            return Err(storage_err(
                dev,
                format!("{name}: label {l:?} must be at most 36 bytes and contain no ':'"),
            ));
        }
        push_new(
            creates,
            s.number,
            s.start,
            s.size,
            p.label.as_deref(),
            p.type_guid.as_deref(),
            p.guid.as_deref(),
        );
        let size = match (p.size_mib, s.size) {
            (Some(m), _) if m != 0 => format!("{m} MiB"),
            (_, Some(n)) if n != 0 => format!("largest free block, {n} sectors"),
            _ => "largest free block".into(),
        };
        actions.push(format!("create {name} ({size})"));
        return Ok(());
    };
    if !s.should_exist() {
        if !s.wipe_entry() {
            return Err(storage_err(
                dev,
                format!(
                    "{name} exists and shouldExist is false, but wipePartitionEntry is not set"
                ),
            ));
        }
        deletes.push(format!("--delete={}", e.number));
        actions.push(format!("delete {name}"));
        return Ok(());
    }
    let common = matches_common(s, e);
    let size_differs = s.size.is_some_and(|v| v != e.size);
    if common.is_empty() && !size_differs {
        actions.push(format!("keep {name}"));
        return Ok(());
    }
    if s.wipe_entry() {
        // Recreated from the config alone, as Ignition does: what it leaves out takes sgdisk's
        // defaults, not the old entry's.
        deletes.push(format!("--delete={}", e.number));
        push_new(
            creates,
            e.number,
            s.start,
            s.size,
            p.label.as_deref(),
            p.type_guid.as_deref(),
            p.guid.as_deref(),
        );
        actions.push(format!("recreate {name}"));
        return Ok(());
    }
    if common.is_empty() && p.resize.unwrap_or(false) {
        // Ignition's resize: the same entry (number, GUIDs, label, start) with the new size.
        deletes.push(format!("--delete={}", e.number));
        push_new(
            creates,
            e.number,
            Some(e.start),
            s.size,
            Some(&e.label),
            Some(&e.type_guid),
            Some(&e.guid),
        );
        actions.push(format!("resize {name}"));
        return Ok(());
    }
    let mut all = common;
    if size_differs {
        all.push("size");
    }
    Err(storage_err(
        dev,
        format!(
            "{name} exists but its {} differ(s) from the config, and neither wipePartitionEntry nor (for size only) resize is set",
            all.join(", ")
        ),
    ))
}

fn label_limit(format: &str) -> Option<usize> {
    match format {
        "ext4" => Some(16),
        "xfs" => Some(12),
        "vfat" => Some(11),
        "swap" => Some(15),
        "btrfs" => Some(256),
        _ => None,
    }
}

fn plan_filesystem(fs: &Filesystem, plan: &mut DisksPlan) -> Result<(), ApplyError> {
    let dev = fs.device.as_str();
    let Some(format) = fs.format.as_deref() else {
        return Ok(());
    };
    let wipe = fs.wipe_filesystem.unwrap_or(false);
    if let (Some(l), Some(max)) = (&fs.label, label_limit(format))
        && l.chars().count() > max
    {
        return Err(storage_err(
            dev,
            format!("filesystem labels cannot be longer than {max} characters when using {format}"),
        ));
    }
    let existing = if std::path::Path::new(dev).exists() {
        probe_filesystem(dev)?
    } else {
        None
    };
    if format == "none" {
        if wipe && existing.is_some() {
            plan.commands.push(Step::run(
                "wipefs",
                vec!["-a".into(), dev.into()],
                vec![dev.into()],
            ));
            plan.outcome
                .push(dev, NodeKind::Device, "wipe filesystem signature");
        }
        return Ok(());
    }
    if !wipe && let Some(e) = &existing {
        let same_type = e.fs_type == format;
        let label_ok = fs
            .label
            .as_ref()
            .is_none_or(|l| e.label.as_ref() == Some(l));
        let uuid_ok = fs
            .uuid
            .as_ref()
            .is_none_or(|u| e.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u)));
        if same_type && label_ok && uuid_ok {
            plan.outcome.push(
                dev,
                NodeKind::Device,
                format!("keep existing {format} filesystem"),
            );
            return Ok(());
        }
        return Err(storage_err(
            dev,
            format!(
                "has a {} filesystem (label {:?}, uuid {:?}) that does not match the config ({format}, label {:?}, uuid {:?}) and wipeFilesystem is false",
                e.fs_type, e.label, e.uuid, fs.label, fs.uuid
            ),
        ));
    }
    let (program, mut args): (&str, Vec<String>) = match format {
        "ext4" => ("mkfs.ext4", vec!["-F".into(), "-q".into()]),
        "btrfs" => ("mkfs.btrfs", vec!["-f".into()]),
        "xfs" => ("mkfs.xfs", vec!["-f".into()]),
        "vfat" => ("mkfs.vfat", vec![]),
        "swap" => ("mkswap", vec!["-f".into()]),
        other => {
            return Err(storage_err(
                dev,
                format!("unsupported filesystem format {other:?}"),
            ));
        }
    };
    if let Some(l) = &fs.label {
        args.push(if format == "vfat" {
            "-n".into()
        } else {
            "-L".into()
        });
        args.push(l.clone());
    }
    if let Some(u) = &fs.uuid {
        match format {
            "xfs" => args.extend(["-m".into(), format!("uuid={u}")]),
            "vfat" => args.extend(["-i".into(), u.replace('-', "")]),
            _ => args.extend(["-U".into(), u.clone()]),
        }
    }
    args.extend(fs.options.iter().cloned());
    args.push(dev.into());
    plan.commands
        .push(Step::run(program, args, vec![dev.to_string()]));
    let label = fs
        .label
        .as_ref()
        .map(|l| format!(", label {l}"))
        .unwrap_or_default();
    plan.outcome.push(
        dev,
        NodeKind::Device,
        format!("create {format} filesystem{label}"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pretend_info_pairs() {
        let out = "Setting name!\nPartition GUID code: 0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)\n\
                   First sector: 2048 (at 1024.0 KiB)\nLast sector: 10239 (at 5.0 MiB)\n\
                   Partition size: 8192 sectors (4.0 MiB)\n\
                   First sector: 10240 (at 5.0 MiB)\nLast sector: 65502 (at 32.0 MiB)\n";
        assert_eq!(
            parse_pretend_info(out, 2),
            Some(vec![(2048, 10239), (10240, 65502)])
        );
        // Fewer or more blocks than asked for, a block cut short, garbage numbers: refused.
        assert_eq!(parse_pretend_info(out, 1), None);
        assert_eq!(parse_pretend_info(out, 3), None);
        assert_eq!(
            parse_pretend_info("First sector: 2048 (at 1 MiB)\n", 1),
            None
        );
        assert_eq!(
            parse_pretend_info("First sector: x (at 1 MiB)\nLast sector: 9 (at 1 MiB)\n", 1),
            None
        );
        assert_eq!(
            parse_pretend_info("First sector: 10 (a)\nLast sector: 9 (b)\n", 1),
            None
        );
    }
}
