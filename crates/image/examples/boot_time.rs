//! Boot a disk image once under QEMU exactly as the VM tests do (TCG, OVMF, systemd-boot,
//! autologin by SMBIOS credentials, `snapshot=on`) and print `key value` lines with the time to
//! multi-user.target. Used by `cargo xtask bench boot` for Keelson and stock Debian alike.
//!
//! Usage: `boot_time IMAGE`

use std::time::Duration;

use keelson_image::qemu::{Vm, VmOptions};

fn seconds_from_usec(text: &str, what: &str) -> Result<f64, String> {
    text.trim()
        .parse::<u64>()
        .map(|us| us as f64 / 1e6)
        .map_err(|e| format!("{what}: {text:?}: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let image = std::env::args().nth(1).ok_or("usage: boot_time IMAGE")?;
    let mut o = VmOptions::new(&image);
    o.snapshot = true;
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    let timeout = Duration::from_secs(600);
    let mut vm = Vm::start(&o)?;
    vm.login(timeout)?;
    let state = vm.run_with_timeout("systemctl is-system-running --wait", timeout)?;
    // Wall clock from QEMU's start to the moment the guest reports the boot finished (this
    // includes the console round trips, the same for every image).
    let wall = vm.elapsed().as_secs_f64();
    let multi_user =
        vm.check("systemctl show -P ActiveEnterTimestampMonotonic multi-user.target")?;
    let firmware = vm.check("systemctl show -P FirmwareTimestampMonotonic")?;
    let loader = vm.check("systemctl show -P LoaderTimestampMonotonic")?;
    let kernel = vm.check("uname -r")?;
    // One `key value` pair per line: easy to read for people and for xtask (no JSON parser there).
    let mut out = String::new();
    out.push_str(&format!("image {image}\n"));
    out.push_str(&format!("state {}\n", state.output.trim()));
    out.push_str(&format!("kernel {}\n", kernel.trim()));
    out.push_str(&format!("wall_to_boot_finished_s {wall:.3}\n"));
    out.push_str(&format!(
        "kernel_to_multi_user_s {:.3}\n",
        seconds_from_usec(&multi_user, "multi-user.target")?
    ));
    out.push_str(&format!(
        "firmware_and_loader_s {:.3}\n",
        seconds_from_usec(&firmware, "firmware").unwrap_or(0.0)
    ));
    out.push_str(&format!(
        "loader_s {:.3}\n",
        seconds_from_usec(&loader, "loader").unwrap_or(0.0)
    ));
    print!("{out}");
    Ok(())
}
