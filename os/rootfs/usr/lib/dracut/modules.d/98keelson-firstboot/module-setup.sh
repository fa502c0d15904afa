#!/bin/bash
# Keelson first-boot provisioning in the initrd: keelson-firstboot runs one stage per unit
# (fetch, disks, mount, files, done), ordered like Ignition's, with networkd for fetching
# remote resources and qemu_fw_cfg for configs handed over by QEMU. Every stage unit has
# OnFailure=emergency.target (isolate), so a failed stage never reaches the real root.
# The binary itself is not copied into the initrd: the units run it from the verity-checked
# /usr, which systemd mounts on /sysusr/usr before the root exists (it is the same build's
# /usr/bin/keelson-firstboot, linked against the same glibc as the initrd's).

check() {
    # The image build copies the binary into the root's /usr before it reruns dracut; a dracut
    # run without it (the kernel's postinst during the package install) leaves the module out.
    require_binaries keelson-firstboot || return 1
    return 0
}

depends() {
    echo systemd systemd-udevd
    return 0
}

installkernel() {
    # fw_cfg (the qemu provider), the virtio NIC, and vfat for the ESP, whose first-boot
    # marker the done stage removes.
    # What only the disks and mount stages use (xfs, md RAID, dm-crypt with AES-XTS and the
    # crypto API sockets cryptsetup checks ciphers through) is not here: the kernel loads it
    # from /sysusr/usr (keelson-firstboot-modprobe), so that every later boot of every node
    # does not carry it.
    instmods qemu_fw_cfg virtio_net af_packet vfat nls_cp437 nls_iso8859-1 nls_ascii
}

install() {
    inst_multiple mount umount modprobe
    # What /sysusr/usr/bin/keelson-firstboot links against besides glibc.
    inst_libdir_file "libgcc_s.so*"
    # The disks stage's tools run from /sysusr/usr (the disks unit's PATH and
    # LD_LIBRARY_PATH): sgdisk, mkfs.xfs, mkfs.vfat, mkswap, wipefs, mdadm, cryptsetup. Only a
    # first boot with a storage section needs them. blkid and mkfs.ext4 are the initrd's own
    # (systemd-repart formats the root with mkfs.ext4).
    inst_multiple -o blkid mkfs.ext4 mke2fs
    inst_script "$moddir/keelson-firstboot-modprobe.sh" /usr/lib/keelson/keelson-firstboot-modprobe
    inst_multiple ln mkdir cat
    # /dev/md/NAME for the arrays the disks stage creates (the mount stage and the config's
    # file systems name them so): Debian's rule, with mdadm from /sysusr/usr (libc and
    # libudev only, both the initrd's). dracut's mdraid module (mdadm, mdmon, assembly of
    # existing arrays in the initrd) is left out; the real root assembles them.
    mkdir -p "$initdir/usr/lib/udev/rules.d"
    sed 's|/usr/sbin/mdadm|/sysusr/usr/sbin/mdadm|' \
        "$dracutsysrootdir/usr/lib/udev/rules.d/63-md-raid-arrays.rules" \
        > "$initdir/usr/lib/udev/rules.d/63-md-raid-arrays.rules"

    # networkd in the initrd, DHCP on every Ethernet link: remote config resources are fetched
    # before the real root is touched (as Ignition does). It stops at switch-root.
    inst_multiple -o \
        "$systemdutildir/systemd-networkd-wait-online" \
        "$systemdsystemunitdir/systemd-networkd.service" \
        "$systemdsystemunitdir/systemd-networkd.socket" \
        "$systemdsystemunitdir/systemd-networkd-wait-online.service" \
        "$systemdsystemunitdir/network.target" \
        "$systemdsystemunitdir/network-pre.target" \
        "$systemdsystemunitdir/network-online.target" \
        "$systemdutildir/network/99-default.link"
    inst_simple "$moddir/90-keelson-initrd.network" \
        "$systemdutildir/network/90-keelson-initrd.network"
    inst_simple "$moddir/wait-online.conf" \
        "$systemdsystemunitdir/systemd-networkd-wait-online.service.d/50-keelson.conf"
    # networkd runs from /sysusr/usr too (1.9 MB): it only starts when a stage fetches.
    inst_simple "$moddir/networkd-sysusr.conf" \
        "$systemdsystemunitdir/systemd-networkd.service.d/50-keelson.conf"
    # networkd drops privileges to systemd-network.
    grep -E '^systemd-network:' "$dracutsysrootdir/etc/passwd" >> "$initdir/etc/passwd"
    grep -E '^systemd-network:' "$dracutsysrootdir/etc/group" >> "$initdir/etc/group"

    local stage
    for stage in modprobe fetch disks mount files done; do
        inst_simple "$moddir/keelson-firstboot-$stage.service" \
            "$systemdsystemunitdir/keelson-firstboot-$stage.service"
        $SYSTEMCTL -q --root "$initdir" add-wants initrd.target "keelson-firstboot-$stage.service"
    done
}
