//! Boot a disk image under QEMU exactly as the VM tests do (TCG, OVMF, systemd-boot, autologin
//! by SMBIOS credentials, `snapshot=on`) and print `key value` lines with the time to
//! multi-user.target. With `--reboot` the guest then reboots (in the same QEMU, so the
//! snapshot keeps what the first boot wrote) and the same keys are printed again with the
//! prefix `later_`: the first boot of an image and a boot of a node that is already set up.
//! Used by `cargo xtask bench boot` for Keelson and stock Debian alike.
//!
//! Usage: `boot_time IMAGE [--reboot]`

use std::time::{Duration, Instant};

use keelson_image::qemu::{Vm, VmOptions};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: boot_time IMAGE [--reboot]";
    let image = args.next().ok_or(usage)?;
    let reboot = match args.next().as_deref() {
        None => false,
        Some("--reboot") => true,
        Some(_) => return Err(usage.into()),
    };
    let mut o = VmOptions::new(&image);
    o.snapshot = true;
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    let start = Instant::now();
    let mut vm = Vm::start(&o)?;
    let mut out = format!("image {image}\n");
    out.push_str(&measure(&mut vm, 0, start, "")?);
    out.push_str(&format!("kernel {}\n", vm.check("uname -r")?.trim()));
    if reboot {
        let from = vm.console_text().len();
        let start = Instant::now();
        vm.send("systemctl reboot\n")?;
        let again = vm.wait_for_from("Linux version", from, TIMEOUT)?;
        out.push_str(&measure(&mut vm, again, start, "later_")?);
    }
    print!("{out}");
    Ok(())
}
