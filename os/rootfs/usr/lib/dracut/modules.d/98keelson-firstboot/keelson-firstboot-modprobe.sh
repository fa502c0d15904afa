#!/bin/sh
# Kernel modules of the first-boot stages from the verity-checked /usr (mounted on
# /sysusr/usr), instead of carrying them in every UKI: xfs, md RAID, dm-crypt and the crypto
# API sockets are needed only by a first boot whose config has a storage section (1.2 MB of
# the initrd). keelson-firstboot-modprobe.service points the kernel's module loader
# (/proc/sys/kernel/modprobe, which the kernel runs as `PATH -q -- NAME` for fs-xfs,
# md-level-N, dm-crypt, algif-skcipher, ...) at this script for the first-boot stages and
# points it back before switch-root. The initrd's own modules come first.
set -u
MODROOT=/run/keelson/modules-root
case "${1:-}" in
--enable)
    /usr/bin/mkdir -p "$MODROOT" || exit 1
    # modprobe -d DIR reads DIR/lib/modules/<release>: /sysusr has only usr.
    /usr/bin/ln -sfn /sysusr/usr/lib "$MODROOT/lib" || exit 1
    /usr/bin/cat /proc/sys/kernel/modprobe > /run/keelson/modprobe-path || exit 1
    echo /usr/lib/keelson/keelson-firstboot-modprobe > /proc/sys/kernel/modprobe
    exit
    ;;
--disable)
    [ -s /run/keelson/modprobe-path ] || exit 0
    /usr/bin/cat /run/keelson/modprobe-path > /proc/sys/kernel/modprobe
    exit
    ;;
esac
/usr/sbin/modprobe "$@" && exit 0
exec /usr/sbin/modprobe -d "$MODROOT" "$@"
