#!/bin/bash
# Keelson's initrd pieces: mkfs.ext4 for the root that systemd-repart creates on first boot,
# and an emergency handler that prints why the boot failed and reboots after a timeout, so
# that a broken slot spends its boot-counting tries and rolls back instead of waiting for ever
# in dracut's emergency shell.

check() {
    return 0
}

depends() {
    echo systemd
    return 0
}

install() {
    inst_script "$moddir/keelson-emergency.sh" /usr/lib/keelson/keelson-emergency
    local unit
    # What dracut-systemd would give a systemd initrd, which Keelson's leaves out (its shell
    # hooks: cmdline, pre-udev, pre-trigger, the initqueue, pre-mount, mount, pre-pivot; systemd's
    # generators do their work): initrd.target as the default, the initrd's os-release, and an
    # emergency/rescue service (keelson-emergency).
    ln_r "$systemdsystemunitdir/initrd.target" "$systemdsystemunitdir/default.target"
    if [[ -e "$initdir/usr/lib/initrd-release" ]]; then
        ln -sf ../usr/lib/initrd-release "$initdir/etc/initrd-release"
        ln -sf initrd-release "$initdir/usr/lib/os-release"
        ln -sf initrd-release "$initdir/etc/os-release"
    fi
    for unit in emergency.service rescue.service; do
        if [[ ! -e "$initdir$systemdsystemunitdir/$unit" ]]; then
            inst_simple "$moddir/emergency.service" "$systemdsystemunitdir/$unit"
        fi
    done
    # Coldplug of the boot's buses only (udev-trigger.conf).
    inst_simple "$moddir/udev-trigger.conf" \
        "$systemdsystemunitdir/systemd-udev-trigger.service.d/50-keelson.conf"
    # modprobe@ runs once per module (modprobe-remain.conf).
    inst_simple "$moddir/modprobe-remain.conf" \
        "$systemdsystemunitdir/modprobe@.service.d/50-keelson.conf"
    # systemd-repart runs on the first boot and on a grown disk only (keelson-repart-needed),
    # and keelson-growfs-root grows root's ext4 after it on a grown disk.
    inst_script "$moddir/keelson-repart-needed.sh" /usr/lib/keelson/keelson-repart-needed
    inst_simple "$moddir/repart-needed.conf" \
        "$systemdsystemunitdir/systemd-repart.service.d/50-keelson.conf"
    inst_multiple "$systemdutildir/systemd-growfs"
    inst_simple "$moddir/keelson-growfs-root.service" \
        "$systemdsystemunitdir/keelson-growfs-root.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target keelson-growfs-root.service
    # udevd, which the disk waits for, is ordered after these three, one after the other. They
    # make the static device nodes of modules not loaded yet (/dev/fuse, /dev/loop-control,
    # /dev/net/tun, ...: modules.devname) and set the nodes' permissions, for the users and
    # programs of a running system; no unit of the initrd opens such a node (dm_mod and loop
    # are loaded by modprobe@, which makes their nodes), and PID 1 makes /dev's symlinks
    # itself. The real root runs all three against its full module set. systemd-sysctl too:
    # the initrd's sysctl.d (pid_max, systemd-coredump's core pattern) is for a running
    # system, and the real root applies every sysctl.d file again. systemd-tmpfiles-setup
    # too: in the initrd it makes /var's directories and the journal's ACLs for a running
    # system (the real root runs it again over everything) and copies what systemd-stub
    # passes for multi-profile UKIs and TPM2 PCR policies (/.extra/profile, os-release,
    # tpm2-pcr-*), which Keelson's UKI does not carry; one second of the initrd's one vCPU
    # while udevd waits for the disk.
    $SYSTEMCTL -q --root "$initdir" mask kmod-static-nodes.service \
        systemd-tmpfiles-setup-dev-early.service systemd-tmpfiles-setup-dev.service \
        systemd-sysctl.service systemd-tmpfiles-setup.service
    # The CPU's sha256 and crc32c before dm-verity and ext4 choose theirs
    # (keelson-cpu-crypto.service).
    inst_simple "$moddir/keelson-cpu-crypto.service" \
        "$systemdsystemunitdir/keelson-cpu-crypto.service"
    $SYSTEMCTL -q --root "$initdir" add-wants sysinit.target keelson-cpu-crypto.service
    # The loop module on the first boot only (modprobe-loop.conf).
    inst_simple "$moddir/modprobe-loop.conf" \
        "$systemdsystemunitdir/modprobe@loop.service.d/50-keelson.conf"
    for unit in emergency.service dracut-emergency.service; do
        inst_simple "$moddir/emergency-override.conf" \
            "$systemdsystemunitdir/$unit.d/50-keelson.conf"
    done
    inst_multiple sleep cat mkdir
    # systemd-repart formats the root partition it creates on first boot (Format=ext4 in
    # /usr/lib/repart.d/50-root.conf) with mkfs.ext4, with e2fsprogs' own feature defaults.
    # Optional only because the kernel's postinst may run dracut before e2fsprogs is
    # unpacked; the image build runs dracut again on the finished root (add_firstboot).
    inst_multiple -o mkfs.ext4 mke2fs /etc/mke2fs.conf

    # systemd-gpt-auto-generator: root= and usrhash= name the boot's devices, so it only
    # reports that it has nothing to discover, at the initrd's start and again at
    # initrd-parse-etc's reload (the image masks it in the real root too).
    rm -f "$initdir$systemdutildir/system-generators/systemd-gpt-auto-generator"
    # udev rules: those for the devices this initrd handles (block devices, device-mapper,
    # md arrays of the first boot, NICs, driver loading, systemd's device units). The others
    # (input, sound, video, seats, serial, sensors, cdrom, tape, btrfs, memory, ...) are for a
    # running system: the real root's udevd applies every rule when it coldplugs, while here
    # udevd would parse them at its start, on the way to the disk, for no device. The image
    # build checks the built initrd against the same list (INITRD_UDEV_RULES in build.rs).
    # Keelson's own 61-keelson-disk-links.rules is on it: without it here the initrd's
    # coldplug would make the links (and their device units) that the real root's leaves out.
    inst_rules 61-keelson-disk-links.rules
    local r
    for r in "$initdir"/usr/lib/udev/rules.d/*.rules; do
        case "${r##*/}" in
            50-udev-default.rules | 55-dm.rules | 60-block.rules | 60-persistent-storage.rules | \
                60-persistent-storage-dm.rules | 61-keelson-disk-links.rules | \
                63-md-raid-arrays.rules | \
                75-net-description.rules | 80-drivers.rules | 80-net-setup-link.rules | \
                81-net-dhcp.rules | 95-dm-notify.rules | 99-systemd.rules) ;;
            *) rm -f "$r" ;;
        esac
    done
    # What other modules add but no unit of this initrd runs (each is in /usr for the node):
    # ls, cp, mv, sed, less and dmesg with libtinfo (dracut's base, for its shell hooks and
    # the emergency shell, which keelson-emergency replaces), libbpf (systemd's optional BPF features,
    # dlopen()ed: no initrd unit restricts with BPF), lz4 and xxhash (journald compresses
    # with zstd), findmnt and libsmartcols (dracut's shell hooks; losetup and partx, its other
    # users, came with the left-out shutdown and mdraid modules).
    local d
    for d in ls cp mv sed less dmesg findmnt; do
        rm -f "$initdir/usr/bin/$d"
    done
    for d in $libdirs; do
        rm -f "$initdir$d"/libtinfo.so* "$initdir$d"/libbpf.so* "$initdir$d"/libelf.so* \
            "$initdir$d"/libelf-*.so "$initdir$d"/liblz4.so* "$initdir$d"/libxxhash.so* \
            "$initdir$d"/libsmartcols.so*
    done
}
