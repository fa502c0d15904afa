#!/bin/sh
# ExecCondition= of the initrd's systemd-repart.service (repart-needed.conf): exit 0 when
# repart may have work to do, 1 when it has none, and the unit is skipped. repart itself opens
# the disk read-write even when it changes nothing; the close makes udev synthesize a
# "change" event for the disk and each of its partitions, on the way to the root. Work to do:
# - the first boot (the ESP's marker, which systemd-stub put into the initrd, or
#   keelson.first_boot=1): repart creates the root partition;
# - 1 MiB or more of the boot disk after its last partition (the disk was grown): repart
#   grows root into it, and keelson-growfs-root grows the file system (the stamp
#   /run/keelson/root-grows);
# - a boot disk this cannot find (no "usr" device-mapper device, or it is not on a partition).
# Only shell builtins: no process but this one.
set -u
[ -e /.extra/global_credentials/keelson.first_boot.cred ] && exit 0
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    [ "$arg" = keelson.first_boot=1 ] && exit 0
done
# The disk holding /usr's verity device (the one repart looks at: the disk backing
# /sysusr/usr), by the device-mapper device's partitions.
disk=
for d in /sys/block/dm-*; do
    [ -r "$d/dm/name" ] || continue
    read -r name < "$d/dm/name"
    [ "$name" = usr ] || continue
    for s in "$d"/slaves/*; do
        [ -e "$s/partition" ] || continue
        cd -P "$s/.." && disk=$PWD && break
    done
done
[ -n "$disk" ] || exit 0
read -r size < "$disk/size"
end=0
for p in "$disk"/*/partition; do
    [ -e "$p" ] || continue
    p=${p%/partition}
    read -r start < "$p/start"
    read -r len < "$p/size"
    [ $((start + len)) -gt "$end" ] && end=$((start + len))
done
# Sizes in 512-byte sectors. repart fills the disk up to the backup GPT at its end (33
# sectors; 40 on a 4Kn disk).
free=$((size - end))
if [ "$free" -ge 2048 ]; then
    echo "keelson-repart-needed: ${disk##*/} has $((free / 2048)) MiB after its last partition: systemd-repart grows root"
    mkdir -p /run/keelson && : > /run/keelson/root-grows
    exit 0
fi
exit 1
