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
    # fw_cfg (the qemu provider), the virtio NIC, and vfat for the ESP's first-boot marker.
    instmods qemu_fw_cfg virtio_net af_packet vfat nls_cp437 nls_iso8859-1 nls_ascii
    # The disks stage: file systems it formats, md RAID levels, and dm-crypt with the
    # default LUKS2 cipher (aes-xts-plain64) for storage.luks, with the kernel crypto API
    # sockets cryptsetup checks ciphers through. Missing ones are skipped. No btrfs: the image
    # has no mkfs.btrfs.
    instmods ext4 xfs md_mod linear raid0 raid1 raid10 raid456 \
        dm_mod dm_crypt xts aes_generic aesni_intel sha256_generic \
        af_alg algif_skcipher algif_hash
}

install() {
    inst_multiple mount umount modprobe
    # What /sysusr/usr/bin/keelson-firstboot links against besides glibc.
    inst_libdir_file "libgcc_s.so*"
    # The disks stage's tools, when the root has them. sgdisk (with libstdc++, 2.7 MB) and
    # mkfs.xfs run from /sysusr/usr instead (the disks unit's PATH and LD_LIBRARY_PATH): only a
    # first boot with a storage section needs them.
    inst_multiple -o blkid wipefs mkfs.ext4 mke2fs mkfs.vfat mkswap \
        mdadm cryptsetup dmsetup partx

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
    for stage in fetch disks mount files done; do
        inst_simple "$moddir/keelson-firstboot-$stage.service" \
            "$systemdsystemunitdir/keelson-firstboot-$stage.service"
        $SYSTEMCTL -q --root "$initdir" add-wants initrd.target "keelson-firstboot-$stage.service"
    done
}
