//! The 64-bit GPT attribute field: UEFI bits, DPS bits and the ChromeOS/Flatcar
//! priority/tries/successful bits that GRUB's `gptprio` and `cgpt` read and write.

use serde::Serialize;

/// UEFI: platform required partition (bit 0).
pub const REQUIRED: u64 = 1 << 0;
/// UEFI: EFI firmware should ignore the partition's contents (bit 1).
pub const NO_BLOCK_IO: u64 = 1 << 1;
/// UEFI: legacy BIOS bootable (bit 2).
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Bottlerocket: boot has ever succeeded (bit 57, on its PRIVATE partition).
pub const BOOT_EVER_SUCCEEDED: u64 = 1 << 57;
/// DPS: grow the file system to the partition size on mount (bit 59).
pub const DPS_GROWFS: u64 = 1 << 59;
/// DPS: mount read-only (bit 60).
pub const DPS_READ_ONLY: u64 = 1 << 60;
/// DPS: do not mount automatically (bit 63).
pub const DPS_NO_AUTO: u64 = 1 << 63;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_SHIFT: u32 = 56;
const NIBBLE: u64 = 0xf;
/// Mask of the bits owned by [`PrioBits`] (48-56).
pub const PRIO_MASK: u64 =
    (NIBBLE << PRIORITY_SHIFT) | (NIBBLE << TRIES_SHIFT) | (1 << SUCCESSFUL_SHIFT);

/// Largest value priority and tries can hold (4 bits each).
pub const MAX_NIBBLE: u8 = 15;

/// ChromeOS/Flatcar boot selection bits of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PrioBits {
    /// Bits 48-51: higher boots first; 0 never boots.
    pub priority: u8,
    /// Bits 52-55: boots left before the partition counts as failed.
    pub tries: u8,
    /// Bit 56: the partition has booted successfully.
    pub successful: bool,
}

/// A priority or tries value that does not fit in 4 bits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} does not fit in 4 bits (0..=15)")]
pub struct NibbleOutOfRange {
    /// `priority` or `tries`.
    pub field: &'static str,
    /// The rejected value.
    pub value: u64,
}

impl PrioBits {
    /// Builds the bits, refusing values above 15.
    pub fn new(priority: u8, tries: u8, successful: bool) -> Result<Self, NibbleOutOfRange> {
        check_nibble("priority", u64::from(priority))?;
        check_nibble("tries", u64::from(tries))?;
        Ok(PrioBits {
            priority,
            tries,
            successful,
        })
    }

    /// Extracts the bits from a GPT attribute field.
    pub fn from_attributes(attrs: u64) -> Self {
        // Masked to 4 bits, so the casts cannot truncate.
        PrioBits {
            priority: ((attrs >> PRIORITY_SHIFT) & NIBBLE) as u8,
            tries: ((attrs >> TRIES_SHIFT) & NIBBLE) as u8,
            successful: (attrs >> SUCCESSFUL_SHIFT) & 1 == 1,
        }
    }

    /// Writes these bits into `attrs`, keeping every other bit as it was.
    pub fn apply(self, attrs: u64) -> u64 {
        (attrs & !PRIO_MASK)
            | ((u64::from(self.priority) & NIBBLE) << PRIORITY_SHIFT)
            | ((u64::from(self.tries) & NIBBLE) << TRIES_SHIFT)
            | (u64::from(self.successful) << SUCCESSFUL_SHIFT)
    }

    /// GRUB gptprio eligibility: `tries > 0 || successful` (priority is checked separately).
    pub fn grub_bootable(self) -> bool {
        self.tries > 0 || self.successful
    }

    /// Bottlerocket signpost's `will_boot`: `(priority > 0 && tries > 0) || successful`.
    pub fn signpost_will_boot(self) -> bool {
        (self.priority > 0 && self.tries > 0) || self.successful
    }
}

impl std::fmt::Display for PrioBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "priority={} tries={} successful={}",
            self.priority, self.tries, self.successful
        )
    }
}

fn check_nibble(field: &'static str, value: u64) -> Result<(), NibbleOutOfRange> {
    if value > u64::from(MAX_NIBBLE) {
        Err(NibbleOutOfRange { field, value })
    } else {
        Ok(())
    }
}

/// Sets the priority (bits 48-51), keeping the other bits.
pub fn with_priority(attrs: u64, priority: u8) -> Result<u64, NibbleOutOfRange> {
    check_nibble("priority", u64::from(priority))?;
    let mut b = PrioBits::from_attributes(attrs);
    b.priority = priority;
    Ok(b.apply(attrs))
}

/// Sets tries (bits 52-55), keeping the other bits.
pub fn with_tries(attrs: u64, tries: u8) -> Result<u64, NibbleOutOfRange> {
    check_nibble("tries", u64::from(tries))?;
    let mut b = PrioBits::from_attributes(attrs);
    b.tries = tries;
    Ok(b.apply(attrs))
}

/// Sets or clears successful (bit 56), keeping the other bits.
pub fn with_successful(attrs: u64, successful: bool) -> u64 {
    let mut b = PrioBits::from_attributes(attrs);
    b.successful = successful;
    b.apply(attrs)
}

/// Names of the well-known bits set in `attrs` (prio bits excluded; see [`PrioBits`]).
pub fn flag_names(attrs: u64) -> Vec<&'static str> {
    const NAMES: &[(u64, &str)] = &[
        (REQUIRED, "required"),
        (NO_BLOCK_IO, "no-block-io"),
        (LEGACY_BIOS_BOOTABLE, "legacy-bios-bootable"),
        (BOOT_EVER_SUCCEEDED, "boot-ever-succeeded"),
        (DPS_GROWFS, "growfs"),
        (DPS_READ_ONLY, "read-only"),
        (DPS_NO_AUTO, "no-auto"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| attrs & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn image_format_example() {
        let b = PrioBits::new(1, 0, true).unwrap();
        assert_eq!(b.apply(0), 0x0101_0000_0000_0000);
    }

    /// Bottlerocket signpost's `gptprio.rs` vectors (image-format.md section 2).
    #[test]
    fn signpost_vectors() {
        let all = 0x5555_5555_5555_5555u64;
        let b = PrioBits::from_attributes(all);
        assert_eq!(b, PrioBits::new(5, 5, true).unwrap());
        let a = with_priority(all, 0).unwrap();
        assert_eq!(a, 0x5550_5555_5555_5555);
        let a = with_tries(a, 0).unwrap();
        assert_eq!(a, 0x5500_5555_5555_5555);
        let a = with_successful(a, false);
        assert_eq!(a, 0x5400_5555_5555_5555);
    }

    #[test]
    fn out_of_range_is_refused_with_the_value() {
        let e = PrioBits::new(16, 0, false).unwrap_err();
        assert_eq!(e.field, "priority");
        assert_eq!(e.value, 16);
        assert!(e.to_string().contains("priority = 16"));
        assert_eq!(with_tries(0, 200).unwrap_err().field, "tries");
    }

    #[test]
    fn flag_names_table() {
        let cases: &[(u64, &[&str])] = &[
            (0, &[]),
            (1, &["required"]),
            (0x0101_0000_0000_0000, &[]),
            (DPS_READ_ONLY | DPS_NO_AUTO, &["read-only", "no-auto"]),
            (
                LEGACY_BIOS_BOOTABLE | DPS_GROWFS,
                &["legacy-bios-bootable", "growfs"],
            ),
        ];
        for (attrs, names) in cases {
            assert_eq!(flag_names(*attrs), *names, "attrs {attrs:#018x}");
        }
    }

    #[test]
    fn eligibility_rules_differ_between_grub_and_signpost() {
        let succ_prio0 = PrioBits::new(0, 0, true).unwrap();
        assert!(succ_prio0.grub_bootable());
        assert!(succ_prio0.signpost_will_boot());
        let tries_prio0 = PrioBits::new(0, 3, false).unwrap();
        assert!(tries_prio0.grub_bootable());
        assert!(!tries_prio0.signpost_will_boot());
        assert!(!PrioBits::default().grub_bootable());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip_keeps_other_bits(attrs in any::<u64>(), p in 0u8..=15, t in 0u8..=15, s in any::<bool>()) {
            let b = PrioBits::new(p, t, s).unwrap();
            let out = b.apply(attrs);
            prop_assert_eq!(PrioBits::from_attributes(out), b);
            prop_assert_eq!(out & !PRIO_MASK, attrs & !PRIO_MASK);
            // Reading then writing back is the identity.
            prop_assert_eq!(PrioBits::from_attributes(attrs).apply(attrs), attrs);
            // The single-field setters agree with the struct.
            let via_setters = with_successful(with_tries(with_priority(attrs, p).unwrap(), t).unwrap(), s);
            prop_assert_eq!(via_setters, out);
        }
    }
}
