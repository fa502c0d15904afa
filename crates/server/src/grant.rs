//! The grant algorithm: should this node get an update now, and to which version?
//!
//! [`decide`] is a pure function over a [`GrantInput`] snapshot, so every rule is a table test;
//! [`crate::db::rollout`] builds the snapshot from the database and applies the decision in the
//! same transaction. The rules (docs/rollout-policy.md) are Nebraska's (updates enabled, safe
//! mode, max updates per period, update timeout, office hours generalised to maintenance windows
//! in an IANA time zone) plus staged waves, an automatic halt on failures, floors and pinning.
//! A node that policy holds back is always answered `noupdate`, never an `error-*` status.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use keelson_version::Version;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A weekly maintenance window in the policy's time zone: on each of `days` it opens at
/// `start` and closes at `end` (wall-clock `HH:MM`); an `end` before `start` runs past midnight
/// (and past Sunday into Monday). This is the JSON stored in `groups.maintenance_windows` and
/// accepted by the REST API.
pub use keelson_api_types::MaintenanceWindow;

const MINUTES_PER_WEEK: i64 = 7 * 24 * 60;

fn parse_day(d: &str) -> Option<i64> {
    let days = [
        ("mon", "monday"),
        ("tue", "tuesday"),
        ("wed", "wednesday"),
        ("thu", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
        ("sun", "sunday"),
    ];
    let l = d.to_ascii_lowercase();
    days.iter()
        .position(|(s, f)| l == *s || l == *f)
        .map(|i| i as i64)
}

fn parse_hhmm(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// A maintenance window's checks and clock arithmetic (the type is the REST wire type).
trait WindowExt {
    /// Check the window; the error names the bad part (`days`, `start` or `end`) and why.
    fn validate(&self) -> Result<(), (&'static str, String)>;
    /// Minutes the window stays open (1..1440).
    fn length_minutes(&self) -> Option<i64>;
    /// Is local minute-of-week `mow` (Monday 00:00 = 0) inside this window?
    fn contains(&self, mow: i64) -> bool;
}

impl WindowExt for MaintenanceWindow {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.days.is_empty() {
            return Err(("days", "days must not be empty".into()));
        }
        for d in &self.days {
            if parse_day(d).is_none() {
                return Err(("days", format!("unknown day {d:?} (use Mon..Sun)")));
            }
        }
        let Some(start) = parse_hhmm(&self.start) else {
            return Err((
                "start",
                format!("start {:?} is not a time like 02:30", self.start),
            ));
        };
        let Some(end) = parse_hhmm(&self.end) else {
            return Err((
                "end",
                format!("end {:?} is not a time like 02:30", self.end),
            ));
        };
        if start == end {
            return Err(("end", format!("end {:?} equals start", self.end)));
        }
        Ok(())
    }

    fn length_minutes(&self) -> Option<i64> {
        let start = parse_hhmm(&self.start)?;
        let end = parse_hhmm(&self.end)?;
        Some((end - start).rem_euclid(1440))
    }

    fn contains(&self, mow: i64) -> bool {
        let (Some(start), Some(len)) = (parse_hhmm(&self.start), self.length_minutes()) else {
            return false;
        };
        self.days.iter().filter_map(|d| parse_day(d)).any(|day| {
            let open = day * 1440 + start;
            (mow - open).rem_euclid(MINUTES_PER_WEEK) < len
        })
    }
}

/// A group's rollout policy (the columns of `groups` an admin edits): the wire type, defined
/// once in keelson-api-types; its checks and clock arithmetic are [`PolicyRules`].
pub use keelson_api_types::RolloutPolicy;

/// A policy value that is out of range; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy field {field}: {reason}")]
pub struct PolicyError {
    /// The field as the API spells it (e.g. `maintenance_windows[1].start`).
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

/// The grant engine's rules on a [`RolloutPolicy`] (the type itself is serde only).
pub trait PolicyRules {
    /// Check every field; the first bad one is reported.
    fn validate(&self) -> Result<(), PolicyError>;
    /// Is `now` inside a maintenance window (always true when there are none)?
    fn in_maintenance_window(&self, now: DateTime<Utc>) -> bool;
}

impl PolicyRules for RolloutPolicy {
    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |field: &str, reason: String| {
            Err(PolicyError {
                field: field.to_string(),
                reason,
            })
        };
        // The one check: the REST API and the dashboard store a policy only through
        // db::groups::change_policy / create, which call this.
        if !(1..=1_000_000).contains(&self.max_updates_per_period) {
            return bad(
                "max_updates_per_period",
                format!("{} is not in 1..=1000000", self.max_updates_per_period),
            );
        }
        if !(60..=31 * 86400).contains(&self.period_secs) {
            return bad(
                "period_secs",
                format!("{} is not in 60..=2678400", self.period_secs),
            );
        }
        if !(60..=7 * 86400).contains(&self.update_timeout_secs) {
            return bad(
                "update_timeout_secs",
                format!("{} is not in 60..=604800", self.update_timeout_secs),
            );
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad(
                "timezone",
                format!("{:?} is not an IANA time zone", self.timezone),
            );
        }
        if self.maintenance_windows.len() > 64 {
            return bad("maintenance_windows", "more than 64 windows".into());
        }
        for (i, w) in self.maintenance_windows.iter().enumerate() {
            if let Err((part, reason)) = w.validate() {
                return bad(&format!("maintenance_windows[{i}].{part}"), reason);
            }
        }
        if !(0..=100).contains(&self.rollout_percent) {
            return bad(
                "rollout_percent",
                format!("{} is not in 0..=100", self.rollout_percent),
            );
        }
        if !(1..=100).contains(&self.failure_threshold_percent) {
            return bad(
                "failure_threshold_percent",
                format!("{} is not in 1..=100", self.failure_threshold_percent),
            );
        }
        if let Some(v) = &self.pinned_version
            && let Err(e) = Version::parse(v)
        {
            return bad("pinned_version", e.to_string());
        }
        if !(1..=100_000).contains(&self.fleetlock_slots) {
            return bad(
                "fleetlock_slots",
                format!("{} is not in 1..=100000", self.fleetlock_slots),
            );
        }
        Ok(())
    }

    fn in_maintenance_window(&self, now: DateTime<Utc>) -> bool {
        if self.maintenance_windows.is_empty() {
            return true;
        }
        // An unparsable zone cannot pass validation; treat it as closed rather than guess.
        let Ok(tz) = self.timezone.parse::<chrono_tz::Tz>() else {
            return false;
        };
        let local = now.with_timezone(&tz);
        let mow = i64::from(local.weekday().num_days_from_monday()) * 1440
            + i64::from(local.hour()) * 60
            + i64::from(local.minute());
        self.maintenance_windows.iter().any(|w| w.contains(mow))
    }
}

/// The stable wave bucket (0..100) of a machine: the first 8 bytes of SHA-256(machine id).
pub fn wave_bucket(machine_id: &str) -> i64 {
    let d = Sha256::digest(machine_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % 100) as i64
}

/// Counts over the group's grants for the current rollout (its target version).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RolloutStats {
    /// Instances in the group.
    pub group_instances: i64,
    /// Grants (any version) in the last `period_secs`.
    pub grants_in_period: i64,
    /// Grants (any version) still pending and within the timeout.
    pub in_progress: i64,
    /// Whether any node completed this rollout (safe mode only needs to know that).
    pub any_succeeded: bool,
    /// Distinct instances that failed this rollout: error events, rollbacks (code 44) and
    /// pending grants past the timeout.
    pub failed: i64,
}

/// This instance's own pending grant, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingGrant {
    /// The version it was granted.
    pub to_version: String,
    /// When (unix seconds).
    pub granted_at: i64,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct GrantInput<'a> {
    /// The decision time.
    pub now: DateTime<Utc>,
    /// The node's machine id (wave bucket).
    pub machine_id: &'a str,
    /// The version the node runs.
    pub instance_version: &'a str,
    /// The group's policy.
    pub policy: &'a RolloutPolicy,
    /// The rollout version the group is halted at, if any.
    pub halted_version: Option<&'a str>,
    /// The version the group's channel points to (`None`: no channel or no package).
    pub channel_version: Option<&'a str>,
    /// Floor versions on the channel (any order).
    pub floors: &'a [String],
    /// The node's own pending grant.
    pub pending: Option<&'a PendingGrant>,
    /// Versions this node rolled back from (never offered to it again).
    pub rolled_back: &'a [String],
    /// Counts for the current rollout.
    pub stats: RolloutStats,
}

/// Why a grant was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantReason {
    /// A step of the rollout to the target.
    Rollout,
    /// A floor the node must pass through before the target.
    Floor,
    /// The node asked again while its grant is in progress: the same answer again.
    Resend,
}

/// Why a node is held back (answered `noupdate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum HoldReason {
    /// The group has no channel or the channel no package.
    NoPackage,
    /// The node runs the target version or newer (there are no downgrades).
    UpToDate,
    /// The node reported a version that does not parse.
    InvalidVersion,
    /// The node rolled back from the version it would get: offering it again would loop.
    RolledBack,
    /// The group's updates are switched off.
    UpdatesDisabled,
    /// The rollout was halted (failures); an admin must resume it.
    RolloutHalted,
    /// Outside every maintenance window.
    OutsideMaintenanceWindow,
    /// The node's bucket is not in the current wave.
    NotInWave {
        /// The node's bucket.
        bucket: i64,
        /// The wave size.
        percent: i64,
    },
    /// Safe mode: another node is trying the update first.
    SafeModeWaiting,
    /// `max_updates_per_period` grants already given in this period.
    PeriodLimitReached,
    /// `max_updates_per_period` nodes are updating right now.
    ConcurrencyLimitReached,
}

/// Why a rollout gets halted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum HaltCause {
    /// Safe mode: the first node failed.
    SafeModeFailure,
    /// Failed nodes passed the group's threshold.
    FailureThreshold {
        /// Failed nodes.
        failed: i64,
        /// Nodes in the group.
        group_instances: i64,
        /// The threshold in percent.
        threshold_percent: i64,
    },
}

impl fmt::Display for HaltCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaltCause::SafeModeFailure => f.write_str("safe mode: the first node failed"),
            HaltCause::FailureThreshold {
                failed,
                group_instances,
                threshold_percent,
            } => write!(
                f,
                "{failed} of {group_instances} nodes failed, over the {threshold_percent}% threshold"
            ),
        }
    }
}

/// What to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantDecision {
    /// Send this version.
    Grant {
        /// The version to send (a floor or the target).
        version: String,
        /// The group's target this grant belongs to.
        rollout_version: String,
        /// Why.
        reason: GrantReason,
    },
    /// Answer `noupdate`.
    Hold(HoldReason),
    /// Halt the rollout to `rollout_version`, then answer `noupdate`.
    Halt {
        /// The rollout being halted.
        rollout_version: String,
        /// Why.
        cause: HaltCause,
    },
}

/// Should the rollout halt given these counts? Used on update checks and on failure events.
pub fn halt_check(policy: &RolloutPolicy, stats: &RolloutStats) -> Option<HaltCause> {
    if stats.failed == 0 {
        return None;
    }
    if policy.safe_mode && !stats.any_succeeded {
        return Some(HaltCause::SafeModeFailure);
    }
    // "Pass the threshold": strictly more than threshold% of the group failed.
    if stats.failed * 100 > policy.failure_threshold_percent * stats.group_instances.max(1) {
        return Some(HaltCause::FailureThreshold {
            failed: stats.failed,
            group_instances: stats.group_instances,
            threshold_percent: policy.failure_threshold_percent,
        });
    }
    None
}

/// The target version of a group: its pin, else its channel's package.
pub fn target_version<'a>(
    policy: &'a RolloutPolicy,
    channel_version: Option<&'a str>,
) -> Option<&'a str> {
    policy.pinned_version.as_deref().or(channel_version)
}

/// Decide one update check. Pure: same input, same answer.
pub fn decide(input: &GrantInput<'_>) -> GrantDecision {
    use GrantDecision::{Grant, Halt, Hold};
    let p = input.policy;
    let Some(target) = target_version(p, input.channel_version) else {
        return Hold(HoldReason::NoPackage);
    };
    let Ok(current) = Version::parse(input.instance_version) else {
        return Hold(HoldReason::InvalidVersion);
    };
    let Ok(target_v) = Version::parse(target) else {
        return Hold(HoldReason::NoPackage);
    };

    // A grant in flight is answered the same way again without re-checking policy (the node
    // may have restarted mid-download), unless it already timed out.
    if let Some(pending) = input.pending {
        let live = input.now.timestamp() - pending.granted_at < p.update_timeout_secs;
        if live
            && let Ok(pv) = Version::parse(&pending.to_version)
            && current < pv
        {
            return Grant {
                version: pending.to_version.clone(),
                rollout_version: target.to_string(),
                reason: GrantReason::Resend,
            };
        }
    }

    if current >= target_v {
        return Hold(HoldReason::UpToDate);
    }

    // Floors strictly between the node and the target, lowest first: one step per reboot.
    let mut floors: Vec<Version> = input
        .floors
        .iter()
        .filter_map(|f| Version::parse(f).ok())
        .filter(|f| *f > current && *f < target_v)
        .collect();
    floors.sort();
    let (version, reason) = match floors.first() {
        Some(f) => (f.as_str().to_string(), GrantReason::Floor),
        None => (target.to_string(), GrantReason::Rollout),
    };
    if input.rolled_back.contains(&version) {
        return Hold(HoldReason::RolledBack);
    }

    if !p.updates_enabled {
        return Hold(HoldReason::UpdatesDisabled);
    }
    if input.halted_version == Some(target) {
        return Hold(HoldReason::RolloutHalted);
    }
    if let Some(cause) = halt_check(p, &input.stats) {
        return Halt {
            rollout_version: target.to_string(),
            cause,
        };
    }
    if !p.in_maintenance_window(input.now) {
        return Hold(HoldReason::OutsideMaintenanceWindow);
    }
    let bucket = wave_bucket(input.machine_id);
    if bucket >= p.rollout_percent {
        return Hold(HoldReason::NotInWave {
            bucket,
            percent: p.rollout_percent,
        });
    }
    if p.safe_mode && !input.stats.any_succeeded && input.stats.in_progress >= 1 {
        return Hold(HoldReason::SafeModeWaiting);
    }
    if input.stats.grants_in_period >= p.max_updates_per_period {
        return Hold(HoldReason::PeriodLimitReached);
    }
    if input.stats.in_progress >= p.max_updates_per_period {
        return Hold(HoldReason::ConcurrencyLimitReached);
    }
    Grant {
        version,
        rollout_version: target.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    type PolicyEdit = Box<dyn Fn(&mut RolloutPolicy)>;

    proptest::proptest! {
        /// Whatever the counts and versions, decide() answers and never grants more than the
        /// limits allow or a version that is not above the node's.
        #[test]
        fn decide_respects_limits(
            node in "[0-9]{1,2}\\.[0-9]{1,2}",
            target in "[0-9]{1,2}\\.[0-9]{1,2}",
            max in 1i64..5, in_progress in 0i64..6, in_period in 0i64..6,
            failed in 0i64..5, group in 0i64..50, safe in proptest::bool::ANY,
        ) {
            let policy = RolloutPolicy {
                max_updates_per_period: max,
                safe_mode: safe,
                failure_threshold_percent: 50,
                ..RolloutPolicy::default()
            };
            let stats = RolloutStats {
                group_instances: group,
                grants_in_period: in_period,
                in_progress,
                any_succeeded: false,
                failed,
            };
            let now = Utc::now();
            let d = decide(&GrantInput {
                now,
                machine_id: "m",
                instance_version: &node,
                policy: &policy,
                halted_version: None,
                channel_version: Some(&target),
                floors: &[],
                pending: None,
                rolled_back: &[],
                stats,
            });
            if let GrantDecision::Grant { version, .. } = d {
                proptest::prop_assert!(in_period < max && in_progress < max);
                proptest::prop_assert!(!(safe && in_progress > 0));
                proptest::prop_assert!(Version::parse(&version).unwrap() > Version::parse(&node).unwrap());
            }
        }
    }

    #[test]
    fn policy_validation_names_the_field() {
        let table: Vec<(PolicyEdit, &str)> = vec![
            (
                Box::new(|p| p.max_updates_per_period = 0),
                "max_updates_per_period",
            ),
            (Box::new(|p| p.period_secs = 5), "period_secs"),
            (
                Box::new(|p| p.update_timeout_secs = -1),
                "update_timeout_secs",
            ),
            (Box::new(|p| p.timezone = "Mars/Olympus".into()), "timezone"),
            (Box::new(|p| p.rollout_percent = 101), "rollout_percent"),
            (
                Box::new(|p| p.failure_threshold_percent = -3),
                "failure_threshold_percent",
            ),
            (
                Box::new(|p| p.pinned_version = Some("latest".into())),
                "pinned_version",
            ),
            (Box::new(|p| p.fleetlock_slots = 0), "fleetlock_slots"),
            (
                Box::new(|p| {
                    p.maintenance_windows = vec![MaintenanceWindow {
                        days: vec!["mon".into()],
                        start: "01:00".into(),
                        end: "01:00".into(),
                    }]
                }),
                "maintenance_windows[0].end",
            ),
            (
                Box::new(|p| {
                    p.maintenance_windows = vec![
                        MaintenanceWindow {
                            days: vec!["Sat".into()],
                            start: "01:00".into(),
                            end: "02:00".into(),
                        },
                        MaintenanceWindow {
                            days: vec!["Sat".into()],
                            start: "25:00".into(),
                            end: "02:00".into(),
                        },
                    ]
                }),
                "maintenance_windows[1].start",
            ),
            (
                Box::new(|p| {
                    p.maintenance_windows = vec![MaintenanceWindow {
                        days: vec!["Caturday".into()],
                        start: "01:00".into(),
                        end: "02:00".into(),
                    }]
                }),
                "maintenance_windows[0].days",
            ),
        ];
        for (edit, field) in table {
            let mut p = RolloutPolicy::default();
            assert!(p.validate().is_ok());
            edit(&mut p);
            assert_eq!(p.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn maintenance_windows_in_a_time_zone() {
        let mut p = RolloutPolicy {
            timezone: "Europe/Berlin".into(),
            maintenance_windows: vec![MaintenanceWindow {
                days: vec!["Sun".into()],
                start: "23:30".into(),
                end: "00:30".into(),
            }],
            ..RolloutPolicy::default()
        };
        // 2026-11-29 is a Sunday; Berlin is UTC+1 in winter.
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
        assert!(!p.in_maintenance_window(at(29, 22, 29))); // 23:29 local Sun
        assert!(p.in_maintenance_window(at(29, 22, 30))); // 23:30 local Sun
        assert!(p.in_maintenance_window(at(29, 23, 29))); // 00:29 local Mon: crosses the week end
        assert!(!p.in_maintenance_window(at(29, 23, 30))); // closed at 00:30 local
        p.timezone = "UTC".into();
        assert!(!p.in_maintenance_window(at(29, 22, 30)));
        assert!(p.in_maintenance_window(at(29, 23, 30)));
        p.maintenance_windows.clear();
        assert!(p.in_maintenance_window(at(29, 3, 0)));
    }

    #[test]
    fn wave_buckets_are_stable_and_spread() {
        assert_eq!(wave_bucket("abc"), wave_bucket("abc"));
        let mut counts = [0i64; 10];
        for i in 0..10_000 {
            let b = wave_bucket(&format!("machine-{i}"));
            assert!((0..100).contains(&b));
            counts[(b / 10) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven buckets: {counts:?}");
        }
    }

    fn machine_in_wave(percent: i64, inside: bool) -> String {
        (0..)
            .map(|i| format!("m{i}"))
            .find(|m| (wave_bucket(m) < percent) == inside)
            .unwrap()
    }

    struct Case {
        name: &'static str,
        version: &'static str,
        channel: Option<&'static str>,
        floors: Vec<&'static str>,
        policy: RolloutPolicy,
        halted: Option<&'static str>,
        pending: Option<PendingGrant>,
        stats: RolloutStats,
        in_wave: bool,
        rolled_back: Vec<String>,
        want: GrantDecision,
    }

    fn grant(v: &str, target: &str, reason: GrantReason) -> GrantDecision {
        GrantDecision::Grant {
            version: v.into(),
            rollout_version: target.into(),
            reason,
        }
    }

    fn base() -> Case {
        Case {
            name: "",
            version: "1.0.0",
            channel: Some("2.0.0"),
            floors: vec![],
            policy: RolloutPolicy::default(),
            halted: None,
            pending: None,
            stats: RolloutStats {
                group_instances: 10,
                ..Default::default()
            },
            in_wave: true,
            rolled_back: vec![],
            want: grant("2.0.0", "2.0.0", GrantReason::Rollout),
        }
    }

    #[test]
    fn decision_table() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let t = now.timestamp();
        use HoldReason::*;
        let cases = vec![
            Case {
                name: "plain grant",
                ..base()
            },
            Case {
                name: "rolled back from the target",
                rolled_back: vec!["2.0.0".into()],
                want: GrantDecision::Hold(RolledBack),
                ..base()
            },
            Case {
                name: "rolled back from an older version only",
                rolled_back: vec!["1.5.0".into()],
                ..base()
            },
            Case {
                name: "no package",
                channel: None,
                want: GrantDecision::Hold(NoPackage),
                ..base()
            },
            Case {
                name: "up to date",
                version: "2.0.0",
                want: GrantDecision::Hold(UpToDate),
                ..base()
            },
            Case {
                name: "no downgrade",
                version: "3.0.0",
                want: GrantDecision::Hold(UpToDate),
                ..base()
            },
            Case {
                name: "garbage version",
                version: "x",
                want: GrantDecision::Hold(InvalidVersion),
                ..base()
            },
            Case {
                name: "disabled",
                policy: RolloutPolicy {
                    updates_enabled: false,
                    ..Default::default()
                },
                want: GrantDecision::Hold(UpdatesDisabled),
                ..base()
            },
            Case {
                name: "halted",
                halted: Some("2.0.0"),
                want: GrantDecision::Hold(RolloutHalted),
                ..base()
            },
            Case {
                name: "halt of an older rollout does not apply",
                halted: Some("1.5.0"),
                ..base()
            },
            Case {
                name: "floor first",
                floors: vec!["1.8.0", "1.5.0", "0.9.0", "2.5.0"],
                want: grant("1.5.0", "2.0.0", GrantReason::Floor),
                ..base()
            },
            Case {
                name: "past the floors",
                version: "1.5.0",
                floors: vec!["1.5.0"],
                ..base()
            },
            Case {
                name: "pinned below channel",
                policy: RolloutPolicy {
                    pinned_version: Some("1.5.0".into()),
                    ..Default::default()
                },
                want: grant("1.5.0", "1.5.0", GrantReason::Rollout),
                ..base()
            },
            Case {
                name: "pinned and there",
                version: "1.5.0",
                policy: RolloutPolicy {
                    pinned_version: Some("1.5.0".into()),
                    ..Default::default()
                },
                want: GrantDecision::Hold(UpToDate),
                ..base()
            },
            Case {
                name: "pinned without channel",
                channel: None,
                policy: RolloutPolicy {
                    pinned_version: Some("1.5.0".into()),
                    ..Default::default()
                },
                want: grant("1.5.0", "1.5.0", GrantReason::Rollout),
                ..base()
            },
            Case {
                name: "outside window",
                policy: RolloutPolicy {
                    maintenance_windows: vec![MaintenanceWindow {
                        days: vec!["Sat".into(), "Sun".into()],
                        start: "00:00".into(),
                        end: "23:59".into(),
                    }],
                    ..Default::default()
                },
                want: GrantDecision::Hold(OutsideMaintenanceWindow),
                ..base()
            },
            Case {
                name: "inside window (Tuesday noon)",
                policy: RolloutPolicy {
                    maintenance_windows: vec![MaintenanceWindow {
                        days: vec!["Tue".into()],
                        start: "11:00".into(),
                        end: "13:00".into(),
                    }],
                    ..Default::default()
                },
                ..base()
            },
            Case {
                name: "wave 0% holds everyone",
                policy: RolloutPolicy {
                    rollout_percent: 0,
                    ..Default::default()
                },
                in_wave: false,
                want: GrantDecision::Hold(NotInWave {
                    bucket: -1,
                    percent: 0,
                }),
                ..base()
            },
            Case {
                name: "in wave 30%",
                policy: RolloutPolicy {
                    rollout_percent: 30,
                    ..Default::default()
                },
                ..base()
            },
            Case {
                name: "out of wave 30%",
                policy: RolloutPolicy {
                    rollout_percent: 30,
                    ..Default::default()
                },
                in_wave: false,
                want: GrantDecision::Hold(NotInWave {
                    bucket: -1,
                    percent: 30,
                }),
                ..base()
            },
            Case {
                name: "period limit",
                policy: RolloutPolicy {
                    max_updates_per_period: 2,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    grants_in_period: 2,
                    ..Default::default()
                },
                want: GrantDecision::Hold(PeriodLimitReached),
                ..base()
            },
            Case {
                name: "concurrency limit",
                policy: RolloutPolicy {
                    max_updates_per_period: 2,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    grants_in_period: 1,
                    in_progress: 2,
                    ..Default::default()
                },
                want: GrantDecision::Hold(ConcurrencyLimitReached),
                ..base()
            },
            Case {
                name: "safe mode: first node goes",
                policy: RolloutPolicy {
                    safe_mode: true,
                    ..Default::default()
                },
                ..base()
            },
            Case {
                name: "safe mode: second waits",
                policy: RolloutPolicy {
                    safe_mode: true,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    in_progress: 1,
                    grants_in_period: 1,
                    ..Default::default()
                },
                want: GrantDecision::Hold(SafeModeWaiting),
                ..base()
            },
            Case {
                name: "safe mode: after a success the limit is the policy's",
                policy: RolloutPolicy {
                    safe_mode: true,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    in_progress: 1,
                    any_succeeded: true,
                    grants_in_period: 2,
                    ..Default::default()
                },
                ..base()
            },
            Case {
                name: "safe mode: first node failed halts",
                policy: RolloutPolicy {
                    safe_mode: true,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    failed: 1,
                    ..Default::default()
                },
                want: GrantDecision::Halt {
                    rollout_version: "2.0.0".into(),
                    cause: HaltCause::SafeModeFailure,
                },
                ..base()
            },
            Case {
                name: "failures under threshold",
                policy: RolloutPolicy {
                    failure_threshold_percent: 20,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    failed: 2,
                    any_succeeded: true,
                    ..Default::default()
                },
                ..base()
            },
            Case {
                name: "failures pass threshold",
                policy: RolloutPolicy {
                    failure_threshold_percent: 20,
                    ..Default::default()
                },
                stats: RolloutStats {
                    group_instances: 10,
                    failed: 3,
                    any_succeeded: true,
                    ..Default::default()
                },
                want: GrantDecision::Halt {
                    rollout_version: "2.0.0".into(),
                    cause: HaltCause::FailureThreshold {
                        failed: 3,
                        group_instances: 10,
                        threshold_percent: 20,
                    },
                },
                ..base()
            },
            Case {
                name: "resend in-flight grant without policy",
                policy: RolloutPolicy {
                    updates_enabled: false,
                    ..Default::default()
                },
                pending: Some(PendingGrant {
                    to_version: "1.5.0".into(),
                    granted_at: t - 60,
                }),
                want: grant("1.5.0", "2.0.0", GrantReason::Resend),
                ..base()
            },
            Case {
                name: "timed-out grant is not resent",
                policy: RolloutPolicy {
                    updates_enabled: false,
                    ..Default::default()
                },
                pending: Some(PendingGrant {
                    to_version: "1.5.0".into(),
                    granted_at: t - 7200,
                }),
                want: GrantDecision::Hold(UpdatesDisabled),
                ..base()
            },
        ];
        for c in cases {
            let machine = if c.in_wave {
                machine_in_wave(c.policy.rollout_percent, true)
            } else {
                machine_in_wave(c.policy.rollout_percent, false)
            };
            let floors: Vec<String> = c.floors.iter().map(|s| s.to_string()).collect();
            let input = GrantInput {
                now,
                machine_id: &machine,
                instance_version: c.version,
                policy: &c.policy,
                halted_version: c.halted,
                channel_version: c.channel,
                floors: &floors,
                pending: c.pending.as_ref(),
                rolled_back: &c.rolled_back,
                stats: c.stats,
            };
            let mut want = c.want.clone();
            if let GrantDecision::Hold(NotInWave { bucket, .. }) = &mut want {
                *bucket = wave_bucket(&machine);
            }
            assert_eq!(decide(&input), want, "case {:?}", c.name);
        }
    }
}
