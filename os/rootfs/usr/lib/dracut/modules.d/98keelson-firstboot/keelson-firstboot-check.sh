#!/bin/sh
# Is this the first boot? The same test as the fetch stage (keelson-firstboot: the file
# keelson/first_boot on the ESP, or keelson.first_boot=1 on the command line), made with the
# initrd's mount and vfat beside the verity setup of /usr, without the stage binary from
# /sysusr/usr. When the ESP mounts and has no marker, it writes the stamp
# /run/keelson/not-first-boot that every stage unit is conditioned on, so later boots skip
# the fetch stage (which otherwise started only after /sysusr/usr was mounted, and mounted the
# ESP itself, on the way to the root device). In every other case (a marker, a forced first
# boot, an ESP that does not mount) it writes nothing and the fetch stage decides as before.
set -u
for arg in $(/usr/bin/cat /proc/cmdline); do
    [ "$arg" = keelson.first_boot=1 ] && exit 0
done
esp=/dev/disk/by-partlabel/esp
mnt=/run/keelson/esp-check
/usr/bin/mkdir -p "$mnt" || exit 0
/usr/bin/mount -t vfat -o ro,noexec,nosuid,nodev "$esp" "$mnt" || exit 0
if [ -e "$mnt/keelson/first_boot" ]; then
    first=yes
else
    first=no
fi
/usr/bin/umount "$mnt" || exit 0
if [ "$first" = no ]; then
    : > /run/keelson/not-first-boot
    echo "keelson-firstboot-check: no keelson/first_boot on the ESP: not the first boot"
fi
exit 0
