#!/bin/bash
# Keelson's initrd pieces: an emergency handler that prints why the boot failed and reboots
# after a timeout, so that a broken slot spends its boot-counting tries and rolls back instead
# of waiting for ever in dracut's emergency shell.

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
    for unit in emergency.service dracut-emergency.service; do
        inst_simple "$moddir/emergency-override.conf" \
            "$systemdsystemunitdir/$unit.d/50-keelson.conf"
    done
    inst_multiple sleep cat
}
