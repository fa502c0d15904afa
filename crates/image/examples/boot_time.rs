//! Boot a disk image under QEMU exactly as the VM tests do (TCG, OVMF, systemd-boot, autologin
//! by SMBIOS credentials, a snapshot: a qcow2 overlay) and print `key value` lines with the time to
//! multi-user.target. With `--reboot` the guest then reboots (the harness starts QEMU again on
//! the guest's reset, and the snapshot's overlay keeps what the first boot wrote) and the same
//! keys are printed again with the prefix `later_`: the first boot of an image and a boot of a
//! node that is already set up.
//! Used by `cargo xtask bench boot` for Keelson and stock Debian alike.
//!
//! With `--analyze DIR` it also saves, for each boot, what the guest says about where the time
//! went: `systemd-analyze time`, `critical-chain`, `blame`, the whole journal of the boot
//! with monotonic timestamps, the kernel log, the CPU account and every unit systemd knows
//! with its state, as
//! `DIR/{first,later}-{time,critical-chain,blame,journal,dmesg,cpu,units}.txt`.
//!
//! The CPU account is what the wall times cannot give on a guest with one vCPU, where every
//! unit started at once waits for the others: the CPU time the guest spent so far (busy and
//! idle, from `/proc/stat`), PID 1's own (the initrd's and the real root's systemd are one
//! process), that of the kernel's threads (dm-verity's hashing, for one, and the threads that
//! exited, through kthreadd's children's time), the MB read from each block device, how many
//! units and device units there are, and the CPU time of each service,
//! mount and socket (systemd's `CPUUsageNSec`, in ms), most first. A unit of the initrd is
//! gone after switch-root, and so is its account, but PID 1's covers both. The commands the
//! harness runs over the serial console count too (`serial-getty@ttyS0` and some of PID 1's).
//!
//! The journal's timestamps are those of its arrival at journald. Across switch-root no
//! journald runs for a while, and what is logged then gets the time the next journald read it:
//! an apparent gap of 10-15 s under TCG that is not there. `dmesg` keeps the kernel's own
//! time of every record, so with `--kmsg` (systemd debug logging to the kernel log, for both
//! the initrd's and the real root's systemd, through the SMBIOS strings that systemd-stub and
//! systemd-boot append to the command line: Keelson's UKI and the stock Debian disk alike) it
//! is the faithful account of the boot. Debug logging slows the boot: `--kmsg` is for the
//! account, not for the times.
//!
//! `--extra COMMAND` runs one more shell command in the guest after each boot's account and
//! saves its output as `DIR/{first,later}-extra.txt` (for a one-off look).
//!
//! `--cpu MODEL` boots with another QEMU CPU model than the harness's (`qemu64` without
//! RDRAND, say, to see what the kernel's random pool costs).
//!
//! `--qemu-arg ARG` (repeated) adds QEMU arguments. `--qemu-arg -icount --qemu-arg
//! shift=3,sleep=off` makes the guest's clock count instructions (8 ns each), which moves
//! less with the host's load than TCG's real time does (about 1.5 % between reboots of one
//! image on a quiet host, against 5-10 %) but weighs every instruction alike: hashing and
//! other arithmetic count for more than under real time. For A/B of small changes.
//!
//! `--cmdline WORDS` (repeated) appends words to the kernel command line, as `--kmsg` does
//! (`trace_event=filemap:mm_filemap_add_to_page_cache`, say, to see which files a boot reads).
//!
//! `--initrd-account` (with `--analyze`) saves what the initrd's units cost, which is gone
//! from the real root's account: the harness passes a drop-in for `initrd-cleanup.service`
//! as the SMBIOS credential `systemd.unit-dropin.initrd-cleanup.service` (the initrd's
//! `systemd-debug-generator` installs it; no image change), whose `ExecStartPre=` writes
//! every cgroup's CPU time (`cgroup_cpu_us`), every process's `/proc/PID/stat` (`stat`), the
//! uptime, the first line of `/proc/stat` and PID 1's memory map to /run, read back as
//! `DIR/{first,later}-initrd.txt`. A disk without a systemd initrd has no such file.
//!
//! `--sample FILE` samples the vCPU through a second QMP socket every 10 ms or so (70-95
//! samples a second here) from QEMU's start to the end: one line per sample,
//! `SECONDS RIP CR3 CPL HALTED` (hex, as QEMU prints them), and every 20th sample a line
//! `J SECONDS INVALIDATED`, QEMU's count of translated blocks invalidated so far (guest
//! writes to memory that held code it ran). Each sample stops the vCPU while QEMU reads it,
//! so a sampled boot is slower: for where the time goes, not for the times.
//! docs/image.md ("Thirteenth pass") shows how to name the code behind the addresses.
//!
//! Usage: `boot_time IMAGE [--reboot] [--analyze DIR [--extra COMMAND] [--initrd-account]]
//! [--kmsg] [--cmdline WORDS]... [--cpu MODEL] [--qemu-arg ARG]... [--sample FILE]`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use keelson_image::qemu::{Qmp, Vm, VmOptions};

const TIMEOUT: Duration = Duration::from_secs(600);

fn seconds_from_usec(text: &str, what: &str) -> Result<f64, String> {
    text.trim()
        .parse::<u64>()
        .map(|us| us as f64 / 1e6)
        .map_err(|e| format!("{what}: {text:?}: {e}"))
}

/// Wait for the boot that prints its login after console offset `from` to finish; returns the
/// `key value` lines of that boot, each key with `prefix`. `wall` is the time from `start`
/// (QEMU start, or the reboot command) to the guest reporting the boot finished, console
/// round trips included, the same for every image.
fn measure(
    vm: &mut Vm,
    from: usize,
    start: Instant,
    prefix: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    vm.login_from(from, TIMEOUT)?;
    let state = vm.run_with_timeout("systemctl is-system-running --wait", TIMEOUT)?;
    let wall = start.elapsed().as_secs_f64();
    let multi_user =
        vm.check("systemctl show -P ActiveEnterTimestampMonotonic multi-user.target")?;
    let firmware = vm.check("systemctl show -P FirmwareTimestampMonotonic")?;
    let loader = vm.check("systemctl show -P LoaderTimestampMonotonic")?;
    // One `key value` pair per line: easy to read for people and for xtask (no JSON parser there).
    let mut out = String::new();
    out.push_str(&format!("{prefix}state {}\n", state.output.trim()));
    out.push_str(&format!("{prefix}wall_to_boot_finished_s {wall:.3}\n"));
    out.push_str(&format!(
        "{prefix}kernel_to_multi_user_s {:.3}\n",
        seconds_from_usec(&multi_user, "multi-user.target")?
    ));
    out.push_str(&format!(
        "{prefix}firmware_and_loader_s {:.3}\n",
        seconds_from_usec(&firmware, "firmware").unwrap_or(0.0)
    ));
    out.push_str(&format!(
        "{prefix}loader_s {:.3}\n",
        seconds_from_usec(&loader, "loader").unwrap_or(0.0)
    ));
    Ok(out)
}

/// The guest's CPU account (see the module's documentation), one shell line.
const CPU_ACCOUNT: &str = "echo \"uptime_s $(cut -d' ' -f1 /proc/uptime)\"; \
    head -1 /proc/stat | awk '{print \"cpu_busy_s\", ($2+$3+$4+$7+$8)/100, \"idle_s\", ($5+$6)/100}'; \
    awk '{print \"pid1_cpu_s\", ($14+$15)/100}' /proc/1/stat; \
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{pid = $1; c = $0; sub(/\\) .*$/, \")\", c); \
    sub(/^[0-9]+ /, \"\", c); r = $0; sub(/^.*\\) /, \"\", r); split(r, f, \" \"); \
    if (pid == 2) s += f[12] + f[13] + f[14] + f[15]; \
    if (f[2] == 2) { s += f[12] + f[13] + f[14] + f[15]; \
    if (f[12] + f[13] >= 5) top[++n] = \"kthread_ms \" (f[12] + f[13]) * 10 \" \" c } } \
    END {print \"kthreads_cpu_s\", s/100; fflush(); \
    for (i = 1; i <= n; i++) print top[i] | \"sort -k2 -rn | head -12\"}'; \
    for b in /sys/block/*; do awk -v b=${b##*/} '$3 > 0 {printf \"read_mb %s %.1f\\n\", b, $3/2048}' \
    $b/stat; done; \
    echo \"units $(systemctl list-units --all --no-legend --plain | wc -l) \
    device_units $(systemctl list-units --all --no-legend --plain --type=device | wc -l)\"; \
    systemctl show -p Id -p CPUUsageNSec -- $(systemctl list-units --all --no-legend --plain \
    --type=service,mount,socket | awk '{print $1}') | paste -d' ' - - - \
    | awk '{id = \"\"; ns = \"\"; for (i = 1; i <= NF; i++) { \
    if ($i ~ /^Id=/) id = substr($i, 4); if ($i ~ /^CPUUsageNSec=[0-9]+$/) ns = substr($i, 14) } \
    if (ns != \"\") print int(ns / 1e6), \"ms\", id}' | sort -rn";

/// Save the guest's own account of the boot just measured into `dir` (files named `name-*`).
fn analyze(
    vm: &mut Vm,
    dir: &Path,
    name: &str,
    extra: Option<&str>,
    initrd_account: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    // The CPU account first: the commands below cost the guest CPU time too.
    for (what, command) in [
        ("cpu", CPU_ACCOUNT),
        ("time", "systemd-analyze time"),
        (
            "critical-chain",
            "systemd-analyze critical-chain --no-pager multi-user.target",
        ),
        ("blame", "systemd-analyze blame --no-pager"),
        (
            "journal",
            "journalctl -b --no-pager --no-hostname -o short-monotonic",
        ),
        ("dmesg", "dmesg"),
        (
            "units",
            "systemctl list-units --all --no-legend --plain --no-pager",
        ),
    ] {
        let out = vm.run_with_timeout(command, TIMEOUT)?;
        std::fs::write(dir.join(format!("{name}-{what}.txt")), out.output)?;
    }
    if initrd_account {
        let out = vm.run_with_timeout(&format!("cat {INITRD_ACCOUNT_FILE}"), TIMEOUT)?;
        std::fs::write(dir.join(format!("{name}-initrd.txt")), out.output)?;
    }
    if let Some(command) = extra {
        let out = vm.run_with_timeout(command, TIMEOUT)?;
        std::fs::write(dir.join(format!("{name}-extra.txt")), out.output)?;
    }
    Ok(())
}

/// Where `--initrd-account`'s drop-in leaves the initrd's account.
const INITRD_ACCOUNT_FILE: &str = "/run/keelson-initrd-account.txt";

/// The drop-in for the initrd's `initrd-cleanup.service` that `--initrd-account` passes: the
/// initrd's last unit before it stops its daemons, so udevd's and journald's cgroups are
/// still there and every exited unit's time is in its parent's. Only what the initrd has:
/// dash builtins and cat. `$$` is a literal `$` for systemd.
fn initrd_account_dropin() -> String {
    format!(
        "[Service]\n\
         ExecStartPre=/bin/sh -c 'exec > {INITRD_ACCOUNT_FILE}; \
         for f in /sys/fs/cgroup/cpu.stat /sys/fs/cgroup/*/cpu.stat /sys/fs/cgroup/*/*/cpu.stat; \
         do [ -e \"$$f\" ] || continue; read k v < \"$$f\"; \
         echo \"cgroup_cpu_us $$v $${{f%/cpu.stat}}\"; done; \
         for p in /proc/[0-9]*; do read l < $$p/stat && echo \"stat $$l\"; done; \
         read u < /proc/uptime; echo \"uptime $$u\"; read c < /proc/stat; echo \"$$c\"; \
         echo pid1_maps; cat /proc/1/maps'\n"
    )
}

/// One vCPU sample from `info registers`: (RIP, CR3, CPL, halted), as QEMU prints them.
fn registers_sample(text: &str) -> Option<(&str, &str, &str, &str)> {
    let field = |key: &str| text.split_whitespace().find_map(|w| w.strip_prefix(key));
    Some((
        field("RIP=")?,
        field("CR3=")?,
        field("CPL=")?,
        field("HLT=")?,
    ))
}

/// QEMU's count of invalidated translation blocks in `info jit`'s output.
fn invalidations(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("TB invalidate count"))
        .map(str::trim)
}

/// `--sample`: sample the vCPU through the QMP socket `sock` into `out` until `stop` is set
/// (see the module's documentation). A guest reset is a new QEMU with a new socket at the same
/// path: the sampler connects again and goes on.
fn sample(sock: &Path, out: std::fs::File, stop: &AtomicBool) -> std::io::Result<()> {
    let start = Instant::now();
    let mut w = std::io::BufWriter::new(out);
    let mut n = 0u64;
    'connect: while !stop.load(Ordering::Relaxed) {
        let mut q = match Qmp::connect_within(sock, Duration::from_secs(60), || {
            stop.load(Ordering::Relaxed)
        }) {
            Ok(q) => q,
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(e) => return Err(e),
        };
        while !stop.load(Ordering::Relaxed) {
            // An error here is this QEMU gone (a guest reset, or the end of the run).
            let Ok(regs) = q.hmp("info registers") else {
                continue 'connect;
            };
            let t = start.elapsed().as_secs_f64();
            if let Some((rip, cr3, cpl, hlt)) = registers_sample(&regs) {
                writeln!(w, "{t:.3} {rip} {cr3} {cpl} {hlt}")?;
            }
            n += 1;
            if n.is_multiple_of(20) {
                let Ok(jit) = q.hmp("info jit") else {
                    continue 'connect;
                };
                if let Some(count) = invalidations(&jit) {
                    writeln!(w, "J {t:.3} {count}")?;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    w.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: boot_time IMAGE [--reboot] [--analyze DIR [--extra COMMAND] \
                 [--initrd-account]] [--kmsg] [--cmdline WORDS]... [--cpu MODEL] \
                 [--qemu-arg ARG]... [--sample FILE]";
    let image = args.next().ok_or(usage)?;
    let mut reboot = false;
    let mut kmsg = false;
    let mut analyze_dir: Option<PathBuf> = None;
    let mut extra: Option<String> = None;
    let mut cpu_model: Option<String> = None;
    let mut qemu_args = Vec::new();
    let mut cmdline = Vec::new();
    let mut initrd_account = false;
    let mut sample_file: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reboot" => reboot = true,
            "--kmsg" => kmsg = true,
            "--analyze" => analyze_dir = Some(args.next().ok_or(usage)?.into()),
            "--extra" => extra = Some(args.next().ok_or(usage)?),
            "--cpu" => cpu_model = Some(args.next().ok_or(usage)?),
            "--qemu-arg" => qemu_args.push(args.next().ok_or(usage)?),
            "--cmdline" => cmdline.push(args.next().ok_or(usage)?),
            "--initrd-account" => initrd_account = true,
            "--sample" => sample_file = Some(args.next().ok_or(usage)?.into()),
            _ => return Err(usage.into()),
        }
    }
    if initrd_account && analyze_dir.is_none() {
        return Err(usage.into());
    }
    let mut o = VmOptions::new(&image);
    o.snapshot = true;
    if let Some(m) = cpu_model {
        o.cpu_model = m;
    }
    o.qemu_args = qemu_args;
    if initrd_account {
        let b64 = base64::engine::general_purpose::STANDARD.encode(initrd_account_dropin());
        o.qemu_args.extend([
            "-smbios".to_string(),
            format!(
                "type=11,value=io.systemd.credential.binary:\
                 systemd.unit-dropin.initrd-cleanup.service={b64}"
            ),
        ]);
    }
    let sample_dir = tempfile::tempdir()?;
    let sample_sock = sample_dir.path().join("sample.qmp");
    if sample_file.is_some() {
        o.qemu_args.extend([
            "-qmp".to_string(),
            format!("unix:{},server=on,wait=off", sample_sock.display()),
        ]);
    }
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    let mut words = Vec::new();
    if kmsg {
        // systemd's own limit on kmsg lines would drop most of them; loglevel=1 keeps them off
        // the console, which the harness reads.
        words.push(
            "systemd.log_level=debug systemd.log_target=kmsg systemd.log_ratelimit_kmsg=0 \
             printk.devkmsg=on log_buf_len=16M loglevel=1"
                .to_string(),
        );
    }
    words.extend(cmdline);
    if !words.is_empty() {
        o.kernel_cmdline_extra = Some(words.join(" "));
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // The sample file is made before QEMU starts: a path that cannot be written fails now,
    // not after the boot.
    let sampler = match sample_file {
        Some(file) => {
            let out = std::fs::File::create(&file)
                .map_err(|e| format!("--sample {}: {e}", file.display()))?;
            let stop = Arc::clone(&stop);
            let sock = sample_sock.clone();
            Some(std::thread::spawn(move || {
                sample(&sock, out, &stop).map_err(|e| {
                    format!(
                        "--sample {} (QMP at {}): {e}",
                        file.display(),
                        sock.display()
                    )
                })
            }))
        }
        None => None,
    };
    let mut vm = Vm::start(&o)?;
    let mut out = format!("image {image}\n");
    out.push_str(&measure(&mut vm, 0, start, "")?);
    out.push_str(&format!("kernel {}\n", vm.check("uname -r")?.trim()));
    if let Some(dir) = &analyze_dir {
        analyze(&mut vm, dir, "first", extra.as_deref(), initrd_account)?;
    }
    if reboot {
        let from = vm.console_text().len();
        let start = Instant::now();
        vm.send("systemctl reboot\n")?;
        let again = vm.wait_for_from("Linux version", from, TIMEOUT)?;
        out.push_str(&measure(&mut vm, again, start, "later_")?);
        if let Some(dir) = &analyze_dir {
            analyze(&mut vm, dir, "later", extra.as_deref(), initrd_account)?;
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = sampler {
        t.join().map_err(|_| "the sampler panicked")??;
    }
    print!("{out}");
    Ok(())
}
