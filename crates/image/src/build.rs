//! `keelson image build`: `os/` -> Debian root (mmdebstrap, cached) -> factory copy of /etc and
//! /var under /usr -> erofs /usr -> dm-verity tree -> UKI carrying `usrhash=` -> GPT disk (ESP,
//! usr A + verity A, empty slot B, free space for root), plus the update parts of the version.
//! The root partition is not in the image: systemd-repart creates it on first boot.
//!
//! Nothing is written under an output name until it is complete: the work happens in a temporary
//! directory inside the output directory (same file system), and finished files are renamed into
//! place, so a failed or interrupted build leaves the previous outputs (or nothing) behind.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::os::{self, OsDefinition};
use keelson_cmd as cmd;
use keelson_disk::derive_fs_uuid;

use crate::{ImageError, io_err};

/// Bump when the build steps change in a way that changes the cached root file system.
const ROOTFS_RECIPE: &str = "keelson-rootfs-v1";
/// Default SOURCE_DATE_EPOCH (2025-01-01T00:00:00Z) when the environment sets none.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_735_689_600;
const MIB: u64 = 1024 * 1024;
/// The package index is fetched again after this long.
const INDEX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Inputs of one build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The OS definition directory (`os/`).
    pub os_dir: PathBuf,
    /// Version to build; the definition's default when None.
    pub version: Option<String>,
    /// Where the image and the update parts go.
    pub out_dir: PathBuf,
    /// Package, index and root file system cache.
    pub cache_dir: PathBuf,
    /// Timestamp for every file (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
    /// Ignore the cached root file system (the package cache is still used).
    pub fresh_rootfs: bool,
    /// Show progress spinners on stderr.
    pub progress: bool,
}

impl BuildOptions {
    /// Options with the defaults: cache from [`default_cache_dir`], SOURCE_DATE_EPOCH from the
    /// environment or [`DEFAULT_SOURCE_DATE_EPOCH`].
    pub fn new(os_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        let sde = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_SOURCE_DATE_EPOCH);
        BuildOptions {
            os_dir: os_dir.into(),
            version: None,
            out_dir: out_dir.into(),
            cache_dir: default_cache_dir(),
            source_date_epoch: sde,
            fresh_rootfs: false,
            progress: true,
        }
    }
}

/// `$KEELSON_CACHE_DIR`, else `~/.cache/keelson`, else `/var/cache/keelson`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KEELSON_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/keelson");
    }
    PathBuf::from("/var/cache/keelson")
}

/// One file written to the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartFile {
    /// Role: `disk`, `usr`, `usr-verity` or `uki`.
    pub kind: String,
    /// Path of the file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// One partition of the built disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionRecord {
    /// 1-based partition number.
    pub number: u32,
    /// GPT partition label.
    pub label: String,
    /// GPT partition type GUID.
    pub type_guid: String,
    /// GPT partition UUID.
    pub uuid: String,
    /// Byte offset of the partition in the disk image.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildOutput {
    /// The built version.
    pub version: String,
    /// The bootable disk image.
    pub image: PathBuf,
    /// dm-verity root hash of /usr, hex.
    pub usr_root_hash: String,
    /// Partition UUID of usr A (first half of the root hash).
    pub usr_partuuid: String,
    /// Partition UUID of usr-verity A (second half of the root hash).
    pub usr_verity_partuuid: String,
    /// Kernel version inside the UKI.
    pub kernel_version: String,
    /// The kernel command line in the UKI.
    pub cmdline: String,
    /// File name of the UKI on the ESP (`/EFI/Linux/...`).
    pub uki_name: String,
    /// The disk image and the update parts (usr image, verity tree, UKI).
    pub files: Vec<PartFile>,
    /// The partitions of the disk image, in table order. Root is not among them: the image
    /// ends in free space that systemd-repart turns into the root partition on first boot.
    pub partitions: Vec<PartitionRecord>,
    /// Bytes of free space the image reserves for the root partition (its minimum size).
    pub root_min_size: u64,
    /// Whether the root file system came from the cache.
    pub rootfs_cached: bool,
}

/// The usr and usr-verity partition UUIDs of a root hash (hex, as the verity crate gives it),
/// by `keelson_disk::uuids_from_root_hash`: the two halves of the hash, refused when a half is
/// all zeros (systemd could never find such a partition).
fn partition_uuids(root_hash_hex: &str, verity: &Path) -> Result<(String, String), ImageError> {
    let bad = |message: String| ImageError::Verity {
        path: verity.to_path_buf(),
        message,
    };
    let bytes = hex::decode(root_hash_hex)
        .map_err(|e| bad(format!("root hash {root_hash_hex:?} is not hex: {e}")))?;
    let (usr, verity_uuid) =
        keelson_disk::uuids_from_root_hash(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok((usr.to_string(), verity_uuid.to_string()))
}

/// Spinner for one long step; prints a line when done.
struct Step {
    bar: ProgressBar,
    name: String,
    started: Instant,
}

impl Step {
    fn start(progress: bool, name: &str) -> Step {
        let bar = if progress {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(name.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        tracing::info!(step = name, "starting");
        Step {
            bar,
            name: name.to_string(),
            started: Instant::now(),
        }
    }

    fn message(&self, m: &str) {
        self.bar.set_message(m.to_string());
    }

    fn done(self, what: &str) {
        self.bar.finish_and_clear();
        tracing::info!(step = %self.name, elapsed = ?self.started.elapsed(), "{what}");
    }
}

fn require_tools() -> Result<(), ImageError> {
    let tools = [
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.erofs", "erofs-utils"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mmd", "mtools"),
        ("xz", "xz-utils"),
        ("curl", "curl"),
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (tool, pkg) in tools {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            return Err(ImageError::Missing {
                path: PathBuf::from(tool),
                message: format!(
                    "not found in PATH; install the Debian package {pkg} (cargo xtask deps)"
                ),
            });
        }
    }
    Ok(())
}

/// The sha256 of every input that shapes the root file system: the definition (minus the
/// version, which is applied after the cache), the overlay, the recipe and mmdebstrap's version.
fn rootfs_key(def: &OsDefinition, os_dir: &Path, sde: u64) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    h.update(ROOTFS_RECIPE.as_bytes());
    // Only what mmdebstrap sees: os-release, the command line and the layout are applied
    // after the cache, so changing them reuses the cached root.
    let mut keyed = def.clone();
    keyed.version = String::new();
    keyed.pretty_name = String::new();
    keyed.sysext_level = String::new();
    keyed.cmdline = String::new();
    keyed.layout = os::Layout {
        esp_mib: 0,
        usr_mib: 0,
        usr_verity_mib: 0,
        root_mib: 0,
    };
    let yaml = serde_json::to_string(&keyed).map_err(|e| ImageError::OsDefinition {
        path: os_dir.join(os::OS_FILE),
        line: None,
        message: e.to_string(),
    })?;
    h.update(yaml.as_bytes());
    h.update(sde.to_le_bytes());
    let overlay = os_dir.join(os::OVERLAY_DIR);
    if overlay.is_dir() {
        for rel in os::overlay_files(&overlay)? {
            let p = overlay.join(&rel);
            let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                h.update(meta.permissions().mode().to_le_bytes());
            }
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(io_err(&p))?;
                h.update(t.to_string_lossy().as_bytes());
            } else {
                h.update(fs::read(&p).map_err(io_err(&p))?);
            }
            h.update([0]);
        }
    }
    let v = cmd::run(Command::new("mmdebstrap").arg("--version")).unwrap_or_default();
    h.update(v.as_bytes());
    Ok(hex::encode(h.finalize()))
}

/// How long one archive index download may take (a few MB): a stalled mirror fails the
/// build's checks instead of hanging them.
const INDEX_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Names in the archive index of `suite`/`component` (packages and what they provide).
fn archive_names(
    def: &OsDefinition,
    cache: &Path,
) -> Result<std::collections::HashSet<String>, ImageError> {
    let dir = cache.join("index");
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut names = std::collections::HashSet::new();
    for comp in &def.components {
        let file = dir.join(format!("{}_{}_amd64_Packages.xz", def.suite, comp));
        let fresh = fs::metadata(&file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < INDEX_MAX_AGE);
        if !fresh {
            let url = format!(
                "{}/dists/{}/{}/binary-amd64/Packages.xz",
                def.mirror.trim_end_matches('/'),
                def.suite,
                comp
            );
            let tmp = dir.join(format!(".{}_{}.tmp", def.suite, comp));
            cmd::run_with_timeout(
                Command::new("curl")
                    .args(["-fsSL", "--retry", "3", "-o"])
                    .arg(&tmp)
                    .arg(&url),
                Some(INDEX_DOWNLOAD_TIMEOUT),
            )?;
            fs::rename(&tmp, &file).map_err(io_err(&file))?;
        }
        let text = cmd::run(Command::new("xz").arg("-dc").arg(&file))?;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("Package: ") {
                names.insert(n.trim().to_string());
            } else if let Some(p) = line.strip_prefix("Provides: ") {
                for item in p.split(',') {
                    if let Some(n) = item.split_whitespace().next() {
                        names.insert(n.to_string());
                    }
                }
            }
        }
    }
    Ok(names)
}

/// Check that every package of the definition exists in the archive, before the long work.
pub fn check_packages(def: &OsDefinition, os_dir: &Path, cache: &Path) -> Result<(), ImageError> {
    let names = archive_names(def, cache)?;
    let unknown: Vec<String> = def
        .all_packages()
        .into_iter()
        .filter(|p| !names.contains(p))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ImageError::UnknownPackages {
            path: os_dir.join(os::OS_FILE),
            suite: def.suite.clone(),
            names: unknown,
        })
    }
}

/// Make (or reuse) the root file system for `def`; returns its directory, whether it was
/// cached, and the cache lock, to hold until the root has been copied out.
fn rootfs(
    def: &OsDefinition,
    opts: &BuildOptions,
) -> Result<(PathBuf, bool, fs::File), ImageError> {
    let key = rootfs_key(def, &opts.os_dir, opts.source_date_epoch)?;
    let base = opts.cache_dir.join("rootfs");
    fs::create_dir_all(&base).map_err(io_err(&base))?;
    // One build at a time may touch the root file system cache and the package cache: two
    // mmdebstraps syncing the same .deb directory (or writing the same root) corrupt each other.
    let lock_path = base.join(".lock");
    let lock = fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    if lock.try_lock().is_err() {
        tracing::info!(lock = %lock_path.display(), "another build holds the cache; waiting");
        lock.lock().map_err(io_err(&lock_path))?;
    }
    let dir = base.join(&key[..16]);
    let done = base.join(format!("{}.complete", &key[..16]));
    if !opts.fresh_rootfs && done.is_file() && dir.is_dir() {
        tracing::info!(dir = %dir.display(), "root file system from cache");
        return Ok((dir, true, lock));
    }
    let _ = fs::remove_file(&done);
    let tmp = base.join(format!("{}.tmp{}", &key[..16], std::process::id()));
    for d in [&tmp, &dir] {
        if d.exists() {
            fs::remove_dir_all(d).map_err(io_err(d))?;
        }
    }
    let archives = opts.cache_dir.join("apt-archives");
    fs::create_dir_all(&archives).map_err(io_err(&archives))?;
    let overlay = fs::canonicalize(opts.os_dir.join(os::OVERLAY_DIR)).ok();
    let archives = fs::canonicalize(&archives).map_err(io_err(&archives))?;

    let step = Step::start(opts.progress, "root file system (mmdebstrap)");
    let mut c = Command::new("mmdebstrap");
    c.env("SOURCE_DATE_EPOCH", opts.source_date_epoch.to_string())
        .args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--components={}", def.components.join(",")))
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg(format!("--include={}", def.all_packages().join(",")))
        // The package cache recipe from mmdebstrap(1): keep downloads, sync them in and out.
        .arg("--skip=download/empty")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives",
            archives.display()
        ));
    // The overlay goes in before the packages, so that the kernel's postinst runs dracut with
    // Keelson's dracut.conf.d and module.
    if let Some(o) = &overlay {
        c.arg(format!("--setup-hook=sync-in {} /", o.display()));
    }
    c.arg(format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        archives.display()
    ))
    .arg("--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb")
    .arg(&def.suite)
    .arg(&tmp)
    .arg(&def.mirror);
    let r = cmd::run_streaming(&mut c, |line| {
        if let Some(m) = line.strip_prefix("I: ") {
            step.message(m);
        }
    });
    if let Err(e) = r {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    fs::write(&done, &key).map_err(io_err(&done))?;
    prune_rootfs_cache(&base, ROOTFS_KEEP);
    step.done("root file system built");
    Ok((dir, false, lock))
}

/// How many cached root file systems to keep (each is several hundred MB).
const ROOTFS_KEEP: usize = 3;

/// Remove all but the `keep` most recently built root file systems from the cache. Best
/// effort: a failure to remove only costs disk space.
fn prune_rootfs_cache(base: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(base) else { return };
    let mut done: Vec<(SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "complete"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    done.sort();
    let excess = done.len().saturating_sub(keep);
    for (_, marker) in done.into_iter().take(excess) {
        let dir = marker.with_extension("");
        let _ = fs::remove_file(&marker);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "could not prune cached root: {e}");
        }
    }
}

/// The kernel version, vmlinuz and initrd in `root/boot`.
fn find_kernel(root: &Path) -> Result<(String, PathBuf, PathBuf), ImageError> {
    let boot = root.join("boot");
    let mut kvers: Vec<String> = fs::read_dir(&boot)
        .map_err(io_err(&boot))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    kvers.sort();
    let Some(kver) = kvers.pop() else {
        return Err(ImageError::Missing {
            path: boot,
            message: "no vmlinuz-*: the kernel package installed no kernel".into(),
        });
    };
    let vmlinuz = boot.join(format!("vmlinuz-{kver}"));
    let initrd = boot.join(format!("initrd.img-{kver}"));
    if !initrd.is_file() {
        return Err(ImageError::Missing {
            path: initrd,
            message: "no initrd: dracut did not run for the kernel".into(),
        });
    }
    Ok((kver, vmlinuz, initrd))
}

fn file_size(p: &Path) -> Result<u64, ImageError> {
    Ok(fs::metadata(p).map_err(io_err(p))?.len())
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String, ImageError> {
    let mut f = fs::File::open(p).map_err(io_err(p))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(p))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn check_fits(what: &str, size: u64, field: &str, mib: u64) -> Result<(), ImageError> {
    if size > mib * MIB {
        return Err(ImageError::TooSmall {
            what: what.into(),
            size,
            field: field.into(),
            mib,
        });
    }
    Ok(())
}

/// Build the erofs image of `root/usr`.
fn make_usr(root: &Path, out: &Path, sde: u64, seed: &str) -> Result<(), ImageError> {
    cmd::run(
        Command::new("mkfs.erofs")
            .arg("-zlz4hc")
            .arg(format!("-T{sde}"))
            .arg(format!("-U{}", derive_fs_uuid(seed, "usr-erofs")))
            .arg("--quiet")
            .arg(out)
            .arg(root.join("usr")),
    )?;
    Ok(())
}

/// The dm-verity hash area (superblock + tree) of `data` into `hash` with the verity crate;
/// returns the root hash. Salt and superblock UUID derive from the build seed (reproducible).
fn make_verity(data: &Path, hash: &Path, seed: &str) -> Result<String, ImageError> {
    let salt = Sha256::digest(format!("keelson:usr-verity-salt:{seed}").as_bytes()).to_vec();
    let uuid = *derive_fs_uuid(seed, "usr-verity").as_bytes();
    let params = keelson_verity::VerityParams::default()
        .with_salt(salt)
        .with_uuid(uuid);
    let info = keelson_verity::format(data, hash, &params).map_err(|e| ImageError::Verity {
        path: hash.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(info.root_hash_hex())
}

/// Make the UKI with ukify inside the (copied) trixie root.
fn make_uki(root: &Path, kver: &str, cmdline: &str, sde: u64) -> Result<PathBuf, ImageError> {
    let rel = "tmp/keelson-uki.efi";
    cmd::run(
        Command::new("chroot")
            .arg(root)
            .args(["env", "PYTHONDONTWRITEBYTECODE=1"])
            .arg(format!("SOURCE_DATE_EPOCH={sde}"))
            .args(["ukify", "build"])
            .arg(format!("--linux=/boot/vmlinuz-{kver}"))
            .arg(format!("--initrd=/boot/initrd.img-{kver}"))
            .arg(format!("--uname={kver}"))
            .arg("--os-release=@/usr/lib/os-release")
            .arg(format!("--cmdline={cmdline}"))
            .arg(format!("--output=/{rel}")),
    )?;
    Ok(root.join(rel))
}

/// Environment variable naming the `keelson-firstboot` binary (built by `cargo xtask`) that
/// goes into the initrd with the dracut module `98keelson-firstboot`.
pub const FIRSTBOOT_BIN_ENV: &str = "KEELSON_FIRSTBOOT_BIN";

/// First-boot provisioning: the binary changes far more often than the cached root, so it is
/// copied into the working root here and the initrd is made again with its dracut module.
fn add_firstboot(root: &Path, kver: &str, progress: bool) -> Result<(), ImageError> {
    let Some(bin) = std::env::var_os(FIRSTBOOT_BIN_ENV).map(PathBuf::from) else {
        return Ok(());
    };
    let step = Step::start(progress, "initrd with first-boot provisioning (dracut)");
    let dest = root.join("usr/bin/keelson-firstboot");
    fs::copy(&bin, &dest).map_err(io_err(&bin))?;
    // Line tables are for the host; the initrd only needs the code (best effort).
    let _ = cmd::run(Command::new("strip").arg(&dest));
    cmd::run(
        Command::new("chroot")
            .arg(root)
            .args([
                "dracut",
                "--force",
                "--add",
                "keelson-firstboot",
                "--kver",
                kver,
            ])
            .arg(format!("/boot/initrd.img-{kver}")),
    )?;
    step.done("initrd made with keelson-firstboot");
    Ok(())
}

/// The ESP as a FAT image: systemd-boot as the removable-media loader and the UKI.
fn make_esp(
    root: &Path,
    esp: &Path,
    uki: &Path,
    uki_name: &str,
    mib: u64,
    seed: &str,
) -> Result<(), ImageError> {
    let sdboot = root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    if !sdboot.is_file() {
        return Err(ImageError::Missing {
            path: sdboot,
            message: "systemd-boot EFI binary missing (package systemd-boot-efi)".into(),
        });
    }
    let esp_uuid = derive_fs_uuid(seed, "esp").to_string();
    let volid = &esp_uuid[..8];
    cmd::run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "ESP", "-i", volid, "--invariant", "-C"])
            .arg(esp)
            .arg((mib * 1024).to_string()),
    )?;
    let loader_conf = esp.with_extension("loader.conf");
    // timeout 0: boot the default (newest, with boot counting) without a menu.
    fs::write(&loader_conf, "timeout 0\nconsole-mode keep\neditor no\n")
        .map_err(io_err(&loader_conf))?;
    let m = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(esp)
            .args(&args[1..]);
        c
    };
    cmd::run(&mut m(&[
        "mmd",
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/EFI/Linux",
        "::/loader",
        "::/loader/entries",
        "::/keelson",
    ]))?;
    // The first-boot marker (removed by keelson-firstboot's done stage, docs/first-boot.md).
    let marker = esp.with_extension("first_boot");
    fs::write(&marker, "").map_err(io_err(&marker))?;
    let mut c = Command::new("mcopy");
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(esp)
        .arg("-m")
        .arg(&marker)
        .arg("::/keelson/first_boot");
    cmd::run(&mut c)?;
    for (src, dst) in [
        (sdboot.as_path(), "::/EFI/BOOT/BOOTX64.EFI".to_string()),
        (
            sdboot.as_path(),
            "::/EFI/systemd/systemd-bootx64.efi".to_string(),
        ),
        (loader_conf.as_path(), "::/loader/loader.conf".to_string()),
        (uki, format!("::/EFI/Linux/{uki_name}")),
    ] {
        let mut c = Command::new("mcopy");
        c.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(esp)
            .arg("-m")
            .arg(src)
            .arg(dst);
        cmd::run(&mut c)?;
    }
    Ok(())
}

/// The directories of the root that systemd-repart seeds the root partition with on first boot
/// (`CopyFiles=/usr/share/factory/<dir>:/<dir>` in `os/rootfs/usr/lib/repart.d/50-root.conf`).
pub const FACTORY_DIRS: [&str; 3] = ["etc", "var", "root"];
/// Where the factory copy lives inside the root (and so inside the erofs /usr).
pub const FACTORY_DIR: &str = "usr/share/factory";
/// The repart definition of the root partition, inside the root.
const ROOT_REPART_CONF: &str = "usr/lib/repart.d/50-root.conf";

/// Per-node identity and secrets that a Debian install leaves in /etc and /var, relative to the
/// factory directory. None may ship in the image: every node would share them. systemd makes a
/// machine ID and a random seed on first boot, `keelson-ssh-keygen.service` the host keys; the
/// host name comes from the node's network (it was the build host's, as was the resolver in
/// `etc/resolv.conf`, which is rewritten instead).
const NODE_IDENTITY: [&str; 5] = [
    "etc/hostname",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "var/lib/dbus/machine-id",
    "etc/ssh/ssh_host_*",
];

/// Remove [`NODE_IDENTITY`] under `dir` and write `etc/machine-id` as `uninitialized`, which
/// makes systemd treat the node's first boot as such (ConditionFirstBoot=, machine ID
/// commit), and `etc/resolv.conf` without a name server. Returns what was removed, relative
/// to `dir`.
fn scrub_node_identity(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut removed = Vec::new();
    for pattern in NODE_IDENTITY {
        let rel = Path::new(pattern);
        let (parent, name) = match (rel.parent(), rel.file_name().and_then(|n| n.to_str())) {
            (Some(p), Some(n)) => (p, n),
            _ => continue,
        };
        let d = dir.join(parent);
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&d)(e)),
        };
        let prefix = name.strip_suffix('*');
        for entry in entries {
            let entry = entry.map_err(io_err(&d))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            let hit = match prefix {
                Some(p) => file.starts_with(p),
                None => file == name,
            };
            if hit {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err(&p))?;
                removed.push(parent.join(&*file));
            }
        }
    }
    if dir.join("etc").is_dir() {
        let mid = dir.join("etc/machine-id");
        let _ = fs::remove_file(&mid);
        fs::write(&mid, "uninitialized\n").map_err(io_err(&mid))?;
        // The file must exist (containerd bind-mounts it into host-network containers), but
        // the build host's resolver means nothing on a node.
        let resolv = dir.join("etc/resolv.conf");
        fs::write(
            &resolv,
            "# Keelson: no resolver in the image; the node's network configuration sets one.\n",
        )
        .map_err(io_err(&resolv))?;
    }
    removed.sort();
    Ok(removed)
}

/// The factory copy: the root's [`FACTORY_DIRS`] under [`FACTORY_DIR`] (so inside the erofs and
/// covered by dm-verity), without per-node identity; and the minimum size of the root partition
/// (`layout.root_mib`) in its repart definition. Fails, naming the field, when the copy would not
/// fit a root partition of the minimum size.
fn make_factory(root: &Path, mib: u64) -> Result<(), ImageError> {
    let factory = root.join(FACTORY_DIR);
    fs::create_dir_all(&factory).map_err(io_err(&factory))?;
    for d in FACTORY_DIRS {
        let dst = factory.join(d);
        if dst.exists() {
            fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
        }
        let src = root.join(d);
        if src.is_dir() {
            cmd::run(Command::new("cp").arg("-a").arg(&src).arg(&dst))?;
        }
    }
    let removed = scrub_node_identity(&factory)?;
    tracing::info!(?removed, "per-node identity left out of the factory copy");
    let used = cmd::run(
        Command::new("du")
            .args(["-s", "-B1", "--apparent-size"])
            .arg(&factory),
    )?;
    let used: u64 = used
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // ext4 needs room for its own metadata (inode tables, journal): ask for a quarter more.
    check_fits(
        "the root partition's first contents (/etc, /var, /root)",
        used + used / 4 + 16 * MIB,
        "layout.root_mib",
        mib,
    )?;
    let conf = root.join(ROOT_REPART_CONF);
    let text = fs::read_to_string(&conf).map_err(io_err(&conf))?;
    if !text.lines().any(|l| l.trim() == "[Partition]") {
        return Err(ImageError::Missing {
            path: conf,
            message: "no [Partition] section: the root partition would never be created".into(),
        });
    }
    const NOTE: &str = "# From layout.root_mib (os.yaml), added by the image build.";
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| *l != NOTE && !l.trim_start().starts_with("SizeMinBytes="))
        .collect();
    let text = format!(
        "{}\n{NOTE}\nSizeMinBytes={mib}M\n",
        kept.join("\n").trim_end()
    );
    // The file may be a hard link into the cache (cp --reflink): replace it, never write into it.
    let tmp = conf.with_extension("conf.tmp");
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &conf).map_err(io_err(&conf))?;
    Ok(())
}

/// The disk crate's layout for the definition's sizes: the disk ends in root's minimum size of
/// free space, left for systemd-repart.
fn disk_layout(layout: &os::Layout, seed: &str) -> keelson_disk::Layout {
    let mut l = keelson_disk::Layout::new(0);
    l.esp_size = layout.esp_mib * MIB;
    l.usr_size = layout.usr_mib * MIB;
    l.usr_verity_size = layout.usr_verity_mib * MIB;
    l.root_min_size = layout.root_mib * MIB;
    l.seed = seed.to_string();
    l.root_at_first_boot = true;
    l.disk_size = l.required_disk_size();
    l
}

/// Check the layout before any long work (e.g. a verity partition too small for the tree of a
/// full usr partition), naming the os.yaml file.
pub fn check_layout(def: &OsDefinition, os_dir: &Path) -> Result<(), ImageError> {
    disk_layout(&def.layout, &def.name)
        .plan()
        .map(|_| ())
        .map_err(|e| ImageError::OsField {
            path: os_dir.join(os::OS_FILE),
            field: "layout".into(),
            message: e.to_string(),
        })
}

struct DiskContents<'a> {
    esp: &'a Path,
    usr: &'a Path,
    verity: &'a Path,
}

/// Assemble the GPT disk with the disk crate: ESP, usr A + verity A (UUIDs from the root hash,
/// labels carrying the version), empty slot B, and free space for root, where systemd-repart
/// creates it (as partition 6) on first boot.
fn make_disk(
    disk: &Path,
    layout: &os::Layout,
    seed: &str,
    version: &str,
    root_hash: &str,
    c: &DiskContents<'_>,
) -> Result<Vec<PartitionRecord>, ImageError> {
    let DiskContents { esp, usr, verity } = *c;
    let derr = |e: keelson_disk::DiskError| ImageError::Disk {
        path: disk.to_path_buf(),
        message: e.to_string(),
    };
    let l = disk_layout(layout, seed);
    keelson_disk::create(disk, &l).map_err(derr)?;
    let hash = hex::decode(root_hash).map_err(|e| ImageError::Missing {
        path: verity.to_path_buf(),
        message: format!("root hash {root_hash:?}: {e}"),
    })?;
    let mut d = keelson_disk::Disk::open_rw(disk).map_err(derr)?;
    d.write_image_file(keelson_disk::ESP_PARTITION, esp)
        .map_err(derr)?;
    d.install_usr_slot(keelson_disk::UsrSlot::A, version, &hash, usr, verity)
        .map_err(derr)?;
    d.commit().map_err(derr)?;
    Ok(d.partitions()
        .into_iter()
        .map(|p| PartitionRecord {
            number: p.number,
            label: p.label,
            type_guid: p.type_guid.to_string(),
            uuid: p.uuid.to_string(),
            start: p.first_lba * keelson_disk::SECTOR_SIZE,
            size: p.size_bytes,
        })
        .collect())
}

/// Move a finished file from the work directory to its output name.
fn publish(from: &Path, to: &Path) -> Result<(), ImageError> {
    fs::rename(from, to).map_err(io_err(to))
}

/// Run the whole build. See the module documentation for the order of the steps.
pub fn build(opts: &BuildOptions) -> Result<BuildOutput, ImageError> {
    // Everything that can be checked cheaply is checked before the long work.
    let def = OsDefinition::load(&opts.os_dir)?;
    let version = opts.version.clone().unwrap_or_else(|| def.version.clone());
    if !os::valid_version(&version) {
        return Err(ImageError::Version {
            version,
            message: "use letters, digits and . _ ~ - (at most 32 characters)".into(),
        });
    }
    check_layout(&def, &opts.os_dir)?;
    require_tools()?;
    fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
    // The build record names its files by absolute path, so that it is usable from any
    // working directory (the VM tests run in the crate's directory).
    let out_dir = std::path::absolute(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
    fs::create_dir_all(&opts.cache_dir).map_err(io_err(&opts.cache_dir))?;
    {
        let step = Step::start(opts.progress, "checking packages");
        check_packages(&def, &opts.os_dir, &opts.cache_dir)?;
        step.done("every package exists in the archive");
    }

    let (cached_root, rootfs_cached, cache_lock) = rootfs(&def, opts)?;
    let work = tempfile::Builder::new()
        .prefix(".keelson-build-")
        .tempdir_in(&out_dir)
        .map_err(io_err(&out_dir))?;
    let w = work.path();
    let root = w.join("root");
    {
        let step = Step::start(opts.progress, "copying the root");
        cmd::run(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&cached_root)
                .arg(&root),
        )?;
        step.done("root copied");
    }
    drop(cache_lock);
    let os_release = root.join("usr/lib/os-release");
    let _ = fs::remove_file(&os_release);
    fs::write(&os_release, def.os_release(&version)).map_err(io_err(&os_release))?;
    let (kver, _vmlinuz, _initrd) = find_kernel(&root)?;
    // Before the initrd is made again: dracut's systemd-repart module copies repart.d into it.
    make_factory(&root, def.layout.root_mib)?;
    add_firstboot(&root, &kver, opts.progress)?;
    let seed = format!("{}:{}", def.name, version);

    let usr_img = w.join("usr.erofs");
    {
        let step = Step::start(opts.progress, "/usr as erofs");
        make_usr(&root, &usr_img, opts.source_date_epoch, &seed)?;
        step.done("erofs image written");
    }
    check_fits(
        "the /usr erofs image",
        file_size(&usr_img)?,
        "layout.usr_mib",
        def.layout.usr_mib,
    )?;

    let verity = w.join("usr.verity");
    let root_hash = {
        let step = Step::start(opts.progress, "dm-verity tree");
        let h = make_verity(&usr_img, &verity, &seed)?;
        step.done("verity tree written");
        h
    };
    check_fits(
        "the /usr verity tree",
        file_size(&verity)?,
        "layout.usr_verity_mib",
        def.layout.usr_verity_mib,
    )?;
    let (usr_uuid, verity_uuid) = partition_uuids(&root_hash, &verity)?;

    let cmdline = format!("{} usrhash={root_hash}", def.cmdline.trim());
    let uki_name = format!("{}_{version}.efi", def.name);
    let uki = {
        let step = Step::start(opts.progress, "UKI (ukify)");
        let u = make_uki(&root, &kver, &cmdline, opts.source_date_epoch)?;
        step.done("UKI written");
        u
    };
    check_fits(
        "the UKI",
        file_size(&uki)? + 2 * MIB,
        "layout.esp_mib",
        def.layout.esp_mib,
    )?;

    let esp = w.join("esp.img");
    {
        let step = Step::start(opts.progress, "ESP");
        make_esp(&root, &esp, &uki, &uki_name, def.layout.esp_mib, &seed)?;
        step.done("ESP written");
    }

    let disk = w.join("disk.img");
    let partitions = {
        let step = Step::start(opts.progress, "GPT disk");
        let records = make_disk(
            &disk,
            &def.layout,
            &seed,
            &version,
            &root_hash,
            &DiskContents {
                esp: &esp,
                usr: &usr_img,
                verity: &verity,
            },
        )?;
        step.done("disk assembled");
        records
    };

    // Publish: update parts first, the disk image last, each by rename.
    let stem = format!("{}_{version}", def.name);
    let mut files = Vec::new();
    for (kind, src, name) in [
        ("usr", &usr_img, format!("{stem}.usr.erofs")),
        ("usr-verity", &verity, format!("{stem}.usr.verity")),
        ("uki", &uki, uki_name.clone()),
        ("disk", &disk, format!("{stem}.img")),
    ] {
        let sha = sha256_file(src)?;
        let size = file_size(src)?;
        let dst = out_dir.join(&name);
        publish(src, &dst)?;
        files.push(PartFile {
            kind: kind.into(),
            path: dst,
            size,
            sha256: sha,
        });
    }
    let image = out_dir.join(format!("{stem}.img"));
    let output = BuildOutput {
        version: version.clone(),
        image,
        usr_root_hash: root_hash,
        usr_partuuid: usr_uuid,
        usr_verity_partuuid: verity_uuid,
        kernel_version: kver,
        cmdline,
        uki_name,
        files,
        partitions,
        root_min_size: def.layout.root_mib * MIB,
        rootfs_cached,
    };
    let sums: String = output
        .files
        .iter()
        .map(|f| {
            format!(
                "{}  {}\n",
                f.sha256,
                f.path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            )
        })
        .collect();
    let json = serde_json::to_string_pretty(&output).map_err(|e| ImageError::Missing {
        path: out_dir.clone(),
        message: format!("serialising the build record: {e}"),
    })?;
    for (name, text) in [
        (format!("{stem}.SHA256SUMS"), sums),
        (format!("{stem}.json"), json + "\n"),
    ] {
        let tmp = w.join(&name);
        fs::write(&tmp, text).map_err(io_err(&tmp))?;
        publish(&tmp, &out_dir.join(&name))?;
    }
    drop(work);
    Ok(output)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partition_uuids_are_the_root_hash_halves() {
        // The root hash of image-format.md section 3 (8 MiB of zeros, 4096-byte blocks).
        let h = "e522df0f97da4febb882ac40f30b37dc0b444bf6df418929463fa25280f09d5c";
        let (a, b) = partition_uuids(h, Path::new("usr.verity")).unwrap();
        assert_eq!(a, "e522df0f-97da-4feb-b882-ac40f30b37dc");
        assert_eq!(b, "0b444bf6-df41-8929-463f-a25280f09d5c");
        // Upper-case hex gives the same (lower-case) UUIDs.
        assert_eq!(
            partition_uuids(&h.to_uppercase(), Path::new("usr.verity")).unwrap(),
            (a, b)
        );
        for bad in [
            "abc",
            &"g".repeat(64),
            &format!("{}{}", "0".repeat(32), &h[32..]),
        ] {
            let e = partition_uuids(bad, Path::new("usr.verity")).unwrap_err();
            assert!(e.to_string().contains("usr.verity"), "{e}");
        }
    }

    #[test]
    fn build_uuids_are_the_ones_earlier_builds_gave() {
        // Pinned from the formula the builder used before it called keelson-disk: the erofs
        // UUID is inside /usr, so a different value would change the root hash.
        let seed = "keelson:1.2.0";
        assert_eq!(
            derive_fs_uuid(seed, "usr-erofs").to_string(),
            "82f77887-d6d2-470f-9105-d74a41acef21"
        );
        assert_eq!(
            hex::encode(derive_fs_uuid(seed, "usr-verity").as_bytes()),
            "eadcd283cb91481e87f1b7004ffa33a8"
        );
        assert_eq!(&derive_fs_uuid(seed, "esp").to_string()[..8], "3aacea2f");
    }

    #[test]
    fn too_small_names_the_field() {
        let e = check_fits("the /usr erofs image", 3 * MIB, "layout.usr_mib", 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layout.usr_mib"), "{e}");
        assert!(check_fits("x", 2 * MIB, "f", 2).is_ok());
    }

    #[test]
    fn rootfs_key_ignores_version_but_not_packages() {
        let os_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os");
        let def = OsDefinition::load(&os_dir).unwrap();
        let k1 = rootfs_key(&def, &os_dir, 1).unwrap();
        let mut v2 = def.clone();
        v2.version = "9.9.9".into();
        v2.layout.usr_mib += 64;
        v2.cmdline.push_str(" quiet");
        assert_eq!(k1, rootfs_key(&v2, &os_dir, 1).unwrap());
        let mut p = def.clone();
        p.packages.push("jq".into());
        assert_ne!(k1, rootfs_key(&p, &os_dir, 1).unwrap());
        assert_ne!(k1, rootfs_key(&def, &os_dir, 2).unwrap());
    }

    #[test]
    fn layout_is_checked_against_the_disk_planner() {
        let os_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os");
        let mut def = OsDefinition::load(&os_dir).unwrap();
        check_layout(&def, &os_dir).unwrap();
        // 4 GiB of usr needs more than 1 MiB of verity tree.
        def.layout.usr_mib = 4096;
        def.layout.usr_verity_mib = 1;
        let e = check_layout(&def, &os_dir).unwrap_err().to_string();
        assert!(e.contains("usr_verity_size"), "{e}");
        assert!(e.contains("os.yaml"), "{e}");
    }

    #[test]
    fn rootfs_cache_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            fs::create_dir_all(d.path().join(name).join("usr")).unwrap();
            let m = d.path().join(format!("{name}.complete"));
            fs::write(&m, name).unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&m)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        prune_rootfs_cache(d.path(), 2);
        assert!(!d.path().join("a").exists());
        assert!(!d.path().join("a.complete").exists());
        assert!(d.path().join("b/usr").is_dir());
        assert!(d.path().join("c.complete").is_file());
    }

    #[test]
    fn scrub_removes_node_identity_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "etc/hostname",
            "etc/resolv.conf",
            "etc/machine-id",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/ssh_host_rsa_key",
            "etc/ssh/sshd_config",
            "etc/hosts",
            "var/lib/systemd/random-seed",
            "var/lib/dpkg/status",
        ] {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), "x").unwrap();
        }
        let removed = scrub_node_identity(r).unwrap();
        let removed: Vec<String> = removed
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            removed,
            [
                "etc/hostname",
                "etc/ssh/ssh_host_ed25519_key",
                "etc/ssh/ssh_host_ed25519_key.pub",
                "etc/ssh/ssh_host_rsa_key",
                "var/lib/systemd/random-seed",
            ]
        );
        for kept in ["etc/ssh/sshd_config", "etc/hosts", "var/lib/dpkg/status"] {
            assert!(r.join(kept).is_file(), "{kept} was removed");
        }
        assert_eq!(
            fs::read_to_string(r.join("etc/machine-id")).unwrap(),
            "uninitialized\n"
        );
        let resolv = fs::read_to_string(r.join("etc/resolv.conf")).unwrap();
        assert!(!resolv.contains("nameserver"), "{resolv}");
        assert!(!resolv.is_empty());
        // A second pass finds nothing more (and an empty tree is no error).
        assert!(scrub_node_identity(r).unwrap().is_empty());
        assert!(scrub_node_identity(&r.join("nothing")).unwrap().is_empty());
    }

    #[test]
    fn repart_seeds_root_from_every_factory_dir() {
        let conf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../os/rootfs")
            .join(ROOT_REPART_CONF);
        let text = fs::read_to_string(&conf).unwrap();
        let mut copies: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CopyFiles="))
            .map(str::to_string)
            .collect();
        copies.sort();
        let mut want: Vec<String> = FACTORY_DIRS
            .iter()
            .map(|d| format!("/{FACTORY_DIR}/{d}:/{d}"))
            .collect();
        want.sort();
        assert_eq!(copies, want, "{}", conf.display());
        assert!(text.lines().any(|l| l.trim() == "Format=ext4"), "{text}");
        assert!(text.lines().any(|l| l.trim() == "Type=root"), "{text}");
        // The minimum size comes from os.yaml, not from the file.
        assert!(
            !text.lines().any(|l| l.trim().starts_with("SizeMinBytes=")),
            "{text}"
        );
    }

    fn factory_root(conf: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "etc/ssh/ssh_host_rsa_key",
            "etc/fstab",
            "var/log/x",
            "root/.profile",
        ] {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), "x").unwrap();
        }
        let c = r.join(ROOT_REPART_CONF);
        fs::create_dir_all(c.parent().unwrap()).unwrap();
        fs::write(&c, conf).unwrap();
        d
    }

    #[test]
    fn factory_copies_state_dirs_and_sets_the_minimum_size() {
        let d = factory_root("[Partition]\nType=root\n");
        let r = d.path();
        make_factory(r, 64).unwrap();
        let f = r.join(FACTORY_DIR);
        assert!(f.join("etc/fstab").is_file());
        assert!(f.join("var/log/x").is_file());
        assert!(f.join("root/.profile").is_file());
        assert!(!f.join("etc/ssh/ssh_host_rsa_key").exists());
        // The root's own /etc is the build's business, not the image's: left alone.
        assert!(r.join("etc/ssh/ssh_host_rsa_key").is_file());
        let conf = fs::read_to_string(r.join(ROOT_REPART_CONF)).unwrap();
        assert!(conf.ends_with("SizeMinBytes=64M\n"), "{conf}");
        // A rebuild of the same work root replaces the copy instead of nesting it.
        fs::remove_file(r.join("etc/fstab")).unwrap();
        make_factory(r, 64).unwrap();
        assert!(!f.join("etc/fstab").exists());
        assert!(!f.join("etc/etc").exists());
        let again = fs::read_to_string(r.join(ROOT_REPART_CONF)).unwrap();
        assert_eq!(again, conf, "the minimum size is set once");
    }

    #[test]
    fn factory_that_does_not_fit_names_the_field() {
        let d = factory_root("[Partition]\nType=root\n");
        let e = make_factory(d.path(), 1).unwrap_err().to_string();
        assert!(e.contains("layout.root_mib"), "{e}");
        let d = factory_root("# nothing\n");
        let e = make_factory(d.path(), 64).unwrap_err().to_string();
        assert!(e.contains("50-root.conf"), "{e}");
        assert!(e.contains("[Partition]"), "{e}");
    }

    #[test]
    fn missing_kernel_is_reported() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("boot")).unwrap();
        let e = find_kernel(d.path()).unwrap_err().to_string();
        assert!(e.contains("no vmlinuz"), "{e}");
        fs::write(d.path().join("boot/vmlinuz-6.1"), b"k").unwrap();
        let e = find_kernel(d.path()).unwrap_err().to_string();
        assert!(e.contains("initrd.img-6.1"), "{e}");
        fs::write(d.path().join("boot/initrd.img-6.1"), b"i").unwrap();
        assert_eq!(find_kernel(d.path()).unwrap().0, "6.1");
    }
}
