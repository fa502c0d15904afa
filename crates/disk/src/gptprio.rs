//! A/B selection over a slot table, as pure functions: GRUB's `gptprio.next` (Flatcar's GPT
//! patch) and seismograph's `cgpt prioritize`. The disk-level wrappers live in [`crate::Disk`].

use serde::Serialize;

use crate::attrs::{MAX_NIBBLE, PrioBits};

/// One candidate partition: its 1-based GPT number and its selection bits, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// 1-based partition number.
    pub number: u32,
    /// Priority, tries and successful.
    pub bits: PrioBits,
}

/// What `gptprio.next` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pick {
    /// Partition number that boots.
    pub number: u32,
    /// Its bits before the pick.
    pub before: PrioBits,
    /// Its bits after the pick (tries decremented when it had any).
    pub after: PrioBits,
}

impl Pick {
    /// Whether the pick changed the bits, so the GPT must be rewritten.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// GRUB `gptprio.next` without side effects: the first entry (table order) with the highest
/// priority > 0 among those with `tries > 0 || successful`; ties go to the lowest index.
pub fn next(slots: &[Slot]) -> Option<Pick> {
    let mut best: Option<&Slot> = None;
    let mut best_priority = 0;
    for slot in slots {
        if slot.bits.grub_bootable() && slot.bits.priority > best_priority {
            best_priority = slot.bits.priority;
            best = Some(slot);
        }
    }
    best.map(|slot| {
        let mut after = slot.bits;
        if after.tries > 0 {
            after.tries -= 1;
        }
        Pick {
            number: slot.number,
            before: slot.bits,
            after,
        }
    })
}

/// GRUB `gptprio.next` applied to the table: picks and decrements the winner's tries in place.
pub fn next_mut(slots: &mut [Slot]) -> Option<Pick> {
    let pick = next(slots)?;
    if let Some(slot) = slots.iter_mut().find(|s| s.number == pick.number) {
        slot.bits = pick.after;
    }
    Some(pick)
}

/// Why `cgpt prioritize` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrioritizeError {
    /// The target is not among the slots (wrong type or number).
    #[error("partition {number} is not one of the A/B slots {slots:?}")]
    NotASlot {
        /// The requested partition number.
        number: u32,
        /// The slot partition numbers that exist.
        slots: Vec<u32>,
    },
    /// `-P` outside 1..=15.
    #[error("maximum priority {value} is outside 1..=15")]
    MaxPriorityOutOfRange {
        /// The rejected value.
        value: u8,
    },
}

/// `cgpt prioritize [-i target] [-P max] [-f]`: ranks `target` above every other slot and
/// compacts the other priorities, never touching priority-0 slots and never going below 1.
/// `friends` (`-f`) moves the target's whole old priority group with it.
pub fn prioritize(
    slots: &mut [Slot],
    target: Option<u32>,
    max_priority: Option<u8>,
    friends: bool,
) -> Result<(), PrioritizeError> {
    const TARGET_RANK: u16 = 99;
    if let Some(max) = max_priority
        && !(1..=MAX_NIBBLE).contains(&max)
    {
        return Err(PrioritizeError::MaxPriorityOutOfRange { value: max });
    }
    let orig_priority = match target {
        Some(number) => match slots.iter().find(|s| s.number == number) {
            Some(s) => Some(s.bits.priority),
            None => {
                return Err(PrioritizeError::NotASlot {
                    number,
                    slots: slots.iter().map(|s| s.number).collect(),
                });
            }
        },
        None => None,
    };
    if slots.is_empty() {
        return Ok(());
    }
    // Rank of each slot: its priority, or 99 for the target (and its friends with -f).
    let rank = |s: &Slot| -> u16 {
        match (target, orig_priority) {
            (Some(t), _) if s.number == t => TARGET_RANK,
            (Some(_), Some(p)) if friends && s.bits.priority == p => TARGET_RANK,
            _ => u16::from(s.bits.priority),
        }
    };
    let mut groups: Vec<u16> = slots.iter().map(rank).collect();
    groups.sort_unstable_by(|a, b| b.cmp(a));
    groups.dedup();
    // Nothing is ever moved to or from priority 0.
    if groups.last() == Some(&0) {
        groups.pop();
    }
    let mut priority = match max_priority {
        Some(p) => p,
        None => u8::try_from(groups.len())
            .unwrap_or(MAX_NIBBLE)
            .min(MAX_NIBBLE),
    };
    let mut new_priority: Vec<(u16, u8)> = Vec::with_capacity(groups.len());
    for group in groups {
        new_priority.push((group, priority));
        if priority > 1 {
            priority -= 1;
        }
    }
    for slot in slots.iter_mut() {
        let r = rank(slot);
        if let Some((_, p)) = new_priority.iter().find(|(g, _)| *g == r) {
            slot.bits.priority = *p;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(number: u32, p: u8, t: u8, succ: bool) -> Slot {
        Slot {
            number,
            bits: PrioBits::new(p, t, succ).unwrap(),
        }
    }

    fn bits(slots: &[Slot], number: u32) -> (u8, u8, bool) {
        let b = slots.iter().find(|s| s.number == number).unwrap().bits;
        (b.priority, b.tries, b.successful)
    }

    /// `tests/gptprio_test.in` from Flatcar's GRUB GPT patch (image-format.md section 2).
    #[test]
    fn grub_gptprio_test_sequence() {
        let mut slots = vec![s(2, 3, 3, false), s(3, 2, 2, false), s(4, 1, 0, true)];
        let expected: &[(u32, (u8, u8, bool))] = &[
            (2, (3, 2, false)),
            (2, (3, 1, false)),
            (2, (3, 0, false)),
            (3, (2, 1, false)),
            (3, (2, 0, false)),
            (4, (1, 0, true)),
            (4, (1, 0, true)),
            (4, (1, 0, true)),
        ];
        for (i, (number, after)) in expected.iter().enumerate() {
            let pick = next_mut(&mut slots).unwrap();
            assert_eq!(pick.number, *number, "call {i}");
            assert_eq!(bits(&slots, *number), *after, "call {i}");
        }
    }

    #[test]
    fn next_rules_table() {
        struct Case {
            name: &'static str,
            slots: Vec<Slot>,
            pick: Option<u32>,
            changed: bool,
        }
        let cases = vec![
            Case {
                name: "empty table",
                slots: vec![],
                pick: None,
                changed: false,
            },
            Case {
                name: "priority 0 never wins, even when successful",
                slots: vec![s(3, 0, 0, true), s(4, 0, 5, false)],
                pick: None,
                changed: false,
            },
            Case {
                name: "no tries and not successful is not eligible",
                slots: vec![s(3, 2, 0, false), s(4, 1, 0, true)],
                pick: Some(4),
                changed: false,
            },
            Case {
                name: "tie goes to the lowest index",
                slots: vec![s(3, 2, 0, true), s(4, 2, 1, false)],
                pick: Some(3),
                changed: false,
            },
            Case {
                name: "table order, not partition number, breaks ties",
                slots: vec![s(4, 2, 1, false), s(3, 2, 0, true)],
                pick: Some(4),
                changed: true,
            },
            Case {
                name: "single slot with one try",
                slots: vec![s(3, 1, 1, false)],
                pick: Some(3),
                changed: true,
            },
        ];
        for c in cases {
            let pick = next(&c.slots);
            assert_eq!(pick.map(|p| p.number), c.pick, "{}", c.name);
            assert_eq!(pick.is_some_and(|p| p.changed()), c.changed, "{}", c.name);
        }
    }

    /// The worked update cycle of image-format.md section 2.
    #[test]
    fn worked_update_cycle() {
        const A: u32 = 3;
        const B: u32 = 4;
        // Install: only USR-A gets bits.
        let install = vec![s(A, 1, 0, true), s(B, 0, 0, false)];

        // postinst: cgpt add -S0 -T1 B; cgpt prioritize B.
        let mut slots = install.clone();
        slots[1].bits.successful = false;
        slots[1].bits.tries = 1;
        prioritize(&mut slots, Some(B), None, false).unwrap();
        assert_eq!(bits(&slots, B), (2, 1, false));
        assert_eq!(bits(&slots, A), (1, 0, true));
        let staged = slots.clone();

        // Boot 1: GRUB picks B and spends its try.
        let pick = next_mut(&mut slots).unwrap();
        assert_eq!(pick.number, B);
        assert_eq!(bits(&slots, B), (2, 0, false));
        let booted_b = slots.clone();

        // B comes up: setgoodroot = cgpt add -S1 -T0 B; cgpt prioritize B.
        slots[1].bits.successful = true;
        slots[1].bits.tries = 0;
        prioritize(&mut slots, Some(B), None, false).unwrap();
        assert_eq!(bits(&slots, B), (2, 0, true));
        assert_eq!(bits(&slots, A), (1, 0, true));
        assert_eq!(next(&slots).unwrap().number, B);

        // B died before setgoodroot: the next boot falls back to A by itself.
        let mut slots = booted_b;
        let pick = next_mut(&mut slots).unwrap();
        assert_eq!(pick.number, A);
        assert!(!pick.changed());

        // Manual rollback from the staged state: prioritize A.
        let mut slots = staged;
        prioritize(&mut slots, Some(A), None, false).unwrap();
        assert_eq!(bits(&slots, A), (2, 0, true));
        assert_eq!(bits(&slots, B), (1, 1, false));
        assert_eq!(next(&slots).unwrap().number, A);
    }

    #[test]
    fn prioritize_table() {
        struct Case {
            name: &'static str,
            slots: Vec<(u32, u8)>,
            target: Option<u32>,
            max: Option<u8>,
            friends: bool,
            expect: Vec<(u32, u8)>,
        }
        let cases = vec![
            Case {
                name: "zero group is left alone",
                slots: vec![(1, 0), (2, 0), (3, 5)],
                target: Some(3),
                max: None,
                friends: false,
                expect: vec![(1, 0), (2, 0), (3, 1)],
            },
            Case {
                name: "target with priority 0 leaves zero",
                slots: vec![(1, 0), (2, 7)],
                target: Some(1),
                max: None,
                friends: false,
                expect: vec![(1, 2), (2, 1)],
            },
            Case {
                name: "compaction keeps order",
                slots: vec![(1, 9), (2, 5), (3, 5), (4, 1)],
                target: None,
                max: None,
                friends: false,
                expect: vec![(1, 3), (2, 2), (3, 2), (4, 1)],
            },
            Case {
                name: "explicit maximum",
                slots: vec![(1, 1), (2, 2)],
                target: Some(1),
                max: Some(10),
                friends: false,
                expect: vec![(1, 10), (2, 9)],
            },
            Case {
                name: "never below one",
                slots: vec![(1, 3), (2, 2), (3, 1)],
                target: Some(3),
                max: Some(2),
                friends: false,
                expect: vec![(1, 1), (2, 1), (3, 2)],
            },
            Case {
                name: "friends move with the target",
                slots: vec![(1, 2), (2, 2), (3, 3)],
                target: Some(1),
                max: None,
                friends: true,
                expect: vec![(1, 2), (2, 2), (3, 1)],
            },
            Case {
                name: "without friends the target leaves its group",
                slots: vec![(1, 2), (2, 2), (3, 3)],
                target: Some(1),
                max: None,
                friends: false,
                expect: vec![(1, 3), (2, 1), (3, 2)],
            },
        ];
        for c in cases {
            let mut slots: Vec<Slot> = c.slots.iter().map(|(n, p)| s(*n, *p, 0, false)).collect();
            prioritize(&mut slots, c.target, c.max, c.friends).unwrap();
            let got: Vec<(u32, u8)> = slots.iter().map(|s| (s.number, s.bits.priority)).collect();
            assert_eq!(got, c.expect, "{}", c.name);
        }
    }

    #[test]
    fn prioritize_more_than_fifteen_groups_caps_at_fifteen() {
        let mut slots: Vec<Slot> = (1..=20).map(|n| s(n, (n % 16) as u8, 0, false)).collect();
        prioritize(&mut slots, Some(1), None, false).unwrap();
        assert_eq!(slots[0].bits.priority, 15);
        assert!(slots.iter().all(|s| s.bits.priority <= 15));
    }

    #[test]
    fn prioritize_errors_name_the_value() {
        let mut slots = vec![s(3, 1, 0, true), s(4, 0, 0, false)];
        let e = prioritize(&mut slots, Some(7), None, false).unwrap_err();
        assert_eq!(
            e,
            PrioritizeError::NotASlot {
                number: 7,
                slots: vec![3, 4]
            }
        );
        assert!(e.to_string().contains("partition 7"));
        let e = prioritize(&mut slots, None, Some(16), false).unwrap_err();
        assert!(e.to_string().contains("16"));
        assert!(prioritize(&mut slots, None, Some(0), false).is_err());
    }
}
