//! `cargo xtask bench boot`: time to multi-user.target of the Keelson image next to a stock
//! Debian trixie system booted the same way (QEMU TCG, q35, OVMF, systemd-boot, virtio disk,
//! the same harness) in the same run, and the ratio.
//!
//! The stock system is what a plain Debian install of the same kernel and services looks like:
//! one ext4 root, Debian's default initramfs-tools initrd, systemd-boot with a Type #1 entry,
//! its network up as the Keelson node's (networkd with DHCP, resolved); no dm-verity, no UKI,
//! no repart. It is built once into `target/bench/boot/` (mmdebstrap, with
//! its own package cache there). `KEELSON_BENCH_RUNS` (default 1) boots each that many times,
//! alternating, and reports the medians. Each boot is measured twice on one disk: the image's
//! first boot (Keelson: repart makes root, first-boot stages, machine ID, host keys) and, after
//! `systemctl reboot` (a fresh QEMU on the same snapshot overlay, as every guest reset of the
//! harness), the boot of a node that is already set up (what an update costs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::median;
use crate::{util, vm};

/// Packages of the stock system: the same kernel and services as os/os.yaml, Debian's defaults
/// for the rest.
const DEBIAN_PACKAGES: &str = "linux-image-cloud-amd64,initramfs-tools,systemd,systemd-sysv,udev,dbus,systemd-boot-efi,e2fsprogs,containerd,runc,openssh-server,ca-certificates,iproute2,less,util-linux";

/// What differs between the stock disks of the benches: where they live, what is installed on
/// top of [`DEBIAN_PACKAGES`], and what is set up after the install.
pub struct StockDisk<'a> {
    /// Directory of the disk and its scratch files (`target/bench/NAME`).
    pub dir: &'a Path,
    /// File name of the disk image in `dir`.
    pub name: &'a str,
    /// Comma-separated packages installed on top of [`DEBIAN_PACKAGES`] ("" for none).
    pub extra_packages: &'a str,
    /// More mmdebstrap `--customize-hook`s (shell, `$1` is the root).
    pub hooks: &'a [&'a str],
    /// Size of the ext4 root in MiB.
    pub root_mib: u64,
}

/// The network of the stock disk of `bench boot`: what os/os.yaml's node runs on every boot
/// (systemd-networkd with DHCP on the Ethernet links, systemd-resolved for DNS), set up the
/// way a Debian admin does: resolved's package enables itself, networkd is enabled with one
/// `.network` file. Before the tenth pass this disk had no network at all (networkd installed
/// but off, no resolved), so Debian's column skipped work that Keelson's did.
const DEBIAN_NETWORK_PACKAGES: &str = "systemd-resolved";
const DEBIAN_NETWORK_HOOKS: &[&str] = &[
    "printf '[Match]\\nType=ether\\n\\n[Network]\\nDHCP=yes\\n' > \"$1\"/etc/systemd/network/50-dhcp.network",
    "chroot \"$1\" systemctl enable systemd-networkd.service",
];

/// Build (once) the stock disk of `bench boot`.
fn debian_image(dir: &Path) -> Result<PathBuf> {
    stock_debian_image(&StockDisk {
        dir,
        name: "debian-trixie.img",
        extra_packages: DEBIAN_NETWORK_PACKAGES,
        hooks: DEBIAN_NETWORK_HOOKS,
        root_mib: 1536,
    })
}

/// Build (once) a stock Debian trixie disk: ESP with systemd-boot + kernel + initrd, ext4 root.
/// The inputs are recorded next to the disk: a changed package list or hook rebuilds it.
pub fn stock_debian_image(spec: &StockDisk<'_>) -> Result<PathBuf> {
    let dir = spec.dir;
    let img = dir.join(spec.name);
    let stamp = dir.join(format!("{}.inputs", spec.name));
    let inputs = format!(
        "{DEBIAN_PACKAGES}\n{}\n{}\n{}\n",
        spec.extra_packages,
        spec.hooks.join("\n"),
        spec.root_mib
    );
    // A disk from before the stamp existed (bench boot) counts as current when nothing was added.
    let current = match std::fs::read_to_string(&stamp) {
        Ok(s) => s == inputs,
        Err(_) => spec.extra_packages.is_empty() && spec.hooks.is_empty(),
    };
    if img.is_file() && current {
        return Ok(img);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = dir.join("debian-root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    // Its own package cache: sharing the image build's would need the build's cache lock.
    let cache = dir.join("apt-archives");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let packages = if spec.extra_packages.is_empty() {
        DEBIAN_PACKAGES.to_string()
    } else {
        format!("{DEBIAN_PACKAGES},{}", spec.extra_packages)
    };
    util::step(&format!(
        "stock Debian trixie root for {} (mmdebstrap)",
        img.display()
    ));
    let mut mm = Command::new("mmdebstrap");
    mm.args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg(format!("--include={packages}"))
        .arg("--skip=download/empty")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives",
            cache.display()
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            cache.display()
        ))
        .arg("--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb")
        .arg("--customize-hook=echo debian > \"$1\"/etc/hostname");
    for h in spec.hooks {
        mm.arg(format!("--customize-hook={h}"));
    }
    util::run(
        mm.args(["trixie"])
            .arg(&root)
            .arg("http://deb.debian.org/debian"),
    )?;
    let boot = root.join("boot");
    let kver = std::fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .next()
        .with_context(|| format!("no kernel in {}", boot.display()))?;

    util::step(&format!("stock Debian disk {}", img.display()));
    let esp = dir.join("esp.img");
    let _ = std::fs::remove_file(&esp);
    util::run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "ESP", "-C"])
            .arg(&esp)
            .arg((128 * 1024).to_string()),
    )?;
    let loader = dir.join("loader.conf");
    std::fs::write(&loader, "timeout 0\ndefault debian.conf\n").context("writing loader.conf")?;
    let entry = dir.join("debian.conf");
    std::fs::write(
        &entry,
        format!(
            "title Debian GNU/Linux trixie\nlinux /vmlinuz-{kver}\ninitrd /initrd.img-{kver}\noptions root=PARTLABEL=root rootfstype=ext4 rw console=ttyS0\n"
        ),
    )
    .context("writing the boot entry")?;
    let mtools = |args: &[&str], files: &[&Path]| {
        let mut c = Command::new(args[0]);
        c.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .args(&args[1..]);
        for f in files {
            c.arg(f);
        }
        c
    };
    util::run(&mut mtools(
        &[
            "mmd",
            "::/EFI",
            "::/EFI/BOOT",
            "::/loader",
            "::/loader/entries",
        ],
        &[],
    ))?;
    let sdboot = root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    for (src, dst) in [
        (sdboot.clone(), "::/EFI/BOOT/BOOTX64.EFI".to_string()),
        (loader.clone(), "::/loader/loader.conf".to_string()),
        (entry.clone(), "::/loader/entries/debian.conf".to_string()),
        (
            boot.join(format!("vmlinuz-{kver}")),
            format!("::/vmlinuz-{kver}"),
        ),
        (
            boot.join(format!("initrd.img-{kver}")),
            format!("::/initrd.img-{kver}"),
        ),
    ] {
        let mut c = Command::new("mcopy");
        c.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .arg(&src)
            .arg(dst);
        util::run(&mut c)?;
    }
    let rootimg = dir.join("root.img");
    let _ = std::fs::remove_file(&rootimg);
    util::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&root)
            .arg(&rootimg)
            .arg(format!("{}M", spec.root_mib)),
    )?;
    let tmp = dir.join(format!("{}.tmp", spec.name));
    let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.set_len((2 + 128 + spec.root_mib) << 20)
        .with_context(|| format!("sizing {}", tmp.display()))?;
    drop(f);
    util::run(
        Command::new("sgdisk")
            .args(["-o", "-n", "1:1M:+128M", "-t", "1:ef00", "-c", "1:esp"])
            .args([
                "-n",
                "2:0:0",
                "-t",
                "2:4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "-c",
                "2:root",
            ])
            .arg(&tmp),
    )?;
    for (src, seek) in [(&esp, 1u64), (&rootimg, 129)] {
        util::run(
            Command::new("dd")
                .arg(format!("if={}", src.display()))
                .arg(format!("of={}", tmp.display()))
                .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
                .arg(format!("seek={seek}")),
        )?;
    }
    std::fs::rename(&tmp, &img).with_context(|| format!("renaming to {}", img.display()))?;
    std::fs::write(&stamp, inputs).with_context(|| format!("writing {}", stamp.display()))?;
    for f in [&esp, &rootimg] {
        let _ = std::fs::remove_file(f);
    }
    // The tree is in the disk now; keep target/ small.
    let _ = std::fs::remove_dir_all(&root);
    Ok(img)
}

/// The `key value` lines of one boot_time run.
type Sample = Vec<(String, String)>;

/// Boot `image` once (and reboot it); the guest's own account of both boots (`systemd-analyze
/// time`, `critical-chain`, `blame`, the journal) goes to `analyze`.
fn boot_once(image: &Path, analyze: &Path) -> Result<Sample> {
    let out = util::output(
        util::cargo()
            .args([
                "run",
                "-q",
                "-p",
                "keelson-image",
                "--example",
                "boot_time",
                "--",
            ])
            .arg(image)
            .arg("--reboot")
            .arg("--analyze")
            .arg(analyze),
    )
    .with_context(|| format!("booting {}", image.display()))?;
    let sample: Sample = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for key in ["kernel_to_multi_user_s", "later_kernel_to_multi_user_s"] {
        if !sample.iter().any(|(k, _)| k == key) {
            bail!("boot_time printed no {key}:\n{out}");
        }
    }
    Ok(sample)
}

/// The 1, 5 and 15 minute load averages of the host (other builds share the cores), as
/// `/proc/loadavg` gives them; "unknown" when it cannot be read.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

pub fn run() -> Result<()> {
    let root = util::workspace_root();
    let runs: usize = std::env::var("KEELSON_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let keelson = vm::keelson_binary()?;
    util::step("bench boot: Keelson image");
    let vm_dir = root.join(vm::VM_DIR);
    vm::build_image(&keelson, &vm_dir, "0.1.0", &[])?;
    let keelson_img = vm_dir.join("keelson_0.1.0.img");
    let debian_img = debian_image(&root.join("target/bench/boot"))?;

    let load = load_average();
    let mut results: Vec<(&str, Vec<Sample>)> =
        vec![("keelson", Vec::new()), ("debian", Vec::new())];
    for i in 0..runs {
        for (name, img) in [("keelson", &keelson_img), ("debian", &debian_img)] {
            util::step(&format!("bench boot: {name}, run {}/{runs}", i + 1));
            let analyze = root.join(format!("target/bench/boot/analyze/{name}-{}", i + 1));
            let v = boot_once(img, &analyze)?;
            for (k, val) in &v {
                eprintln!("  {k} {val}");
            }
            if let Some((_, list)) = results.iter_mut().find(|(n, _)| *n == name) {
                list.push(v);
            }
        }
    }
    let get = |name: &str, key: &str| {
        let vals = results
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| {
                l.iter()
                    .filter_map(|s| {
                        s.iter()
                            .find(|(k, _)| k == key)
                            .and_then(|(_, v)| v.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        median(vals)
    };
    let keys = [
        (
            "kernel_to_multi_user_s",
            "first boot: kernel -> multi-user.target",
        ),
        ("firmware_and_loader_s", "first boot: firmware + loader"),
        (
            "wall_to_boot_finished_s",
            "first boot: QEMU start -> finished (wall)",
        ),
        (
            "later_kernel_to_multi_user_s",
            "reboot: kernel -> multi-user.target",
        ),
        (
            "later_wall_to_boot_finished_s",
            "reboot: command -> finished (wall)",
        ),
    ];
    println!(
        "\nboot to multi-user.target, QEMU TCG + OVMF + systemd-boot, median of {runs} run(s), \
         load average {} before the first boot",
        load
    );
    println!(
        "  {:<40} {:>10} {:>10} {:>8}",
        "", "keelson", "debian", "ratio"
    );
    println!(
        "  (target: reboot ratio <= 1.00; systemd-analyze of each boot in target/bench/boot/analyze/)"
    );
    for (key, label) in keys {
        let (k, d) = (get("keelson", key), get("debian", key));
        if d <= 0.0 || k <= 0.0 {
            // systemd reports 0 when the firmware/loader did not pass its timestamps.
            println!("  {label:<40} {k:>9.1}s {d:>9.1}s {:>8}", "n/a");
        } else {
            println!("  {label:<40} {k:>9.1}s {d:>9.1}s {:>8.2}", k / d);
        }
    }
    Ok(())
}
