//! OS image builder: Debian root -> erofs /usr -> dm-verity -> UKI -> GPT A/B disk, and the QEMU runner.
