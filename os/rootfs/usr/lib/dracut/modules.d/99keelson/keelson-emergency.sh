#!/bin/sh
# Keelson emergency handler (initrd): print the reason the boot failed, then reboot after a
# timeout (keelson.emergency_timeout=SECONDS on the kernel command line, default 15), so that
# systemd-boot's boot counting can move on to the previous good version.
timeout=15
# Plain text on the serial console: no colour escapes in the report.
export SYSTEMD_COLORS=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        keelson.emergency_timeout=*) timeout="${arg#keelson.emergency_timeout=}" ;;
    esac
done
{
    echo
    echo "keelson-emergency: the boot failed in the initrd; failed units:"
    # First-boot provisioning records the failed stage, its config source and the reason.
    [ -r /run/keelson/firstboot-failed ] && cat /run/keelson/firstboot-failed
    systemctl --no-pager --no-legend --failed 2>&1
    echo "keelson-emergency: last log lines:"
    journalctl --no-pager -b -p warning -n 30 -o short-monotonic --no-hostname 2>&1
    echo "keelson-emergency: rebooting in ${timeout}s"
} >/dev/console 2>&1
sleep "$timeout"
systemctl --force reboot || reboot -f
