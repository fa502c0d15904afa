//! When to reboot into a staged update: a pure decision from the strategy, the windows and the
//! time. The coordinated strategies (`fleetlock`, `etcd-lock`) get their lock through
//! [`RebootLock`], implemented in the next issue ([7/12]); until then they hold the update
//! staged and say so in `status`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::settings::{RebootSettings, RebootStrategy};
use crate::window::in_window;

/// The reboot decision for a staged update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "kebab-case")]
pub enum RebootDecision {
    /// Reboot now.
    Now,
    /// Not now; the slug says why (`outside_window`, `strategy_off`, ...).
    Wait(&'static str),
    /// Ask the coordinator for a lock first.
    NeedLock,
}

/// Decides whether a staged update may reboot the node at `now`.
pub fn decide(settings: &RebootSettings, now: DateTime<Utc>) -> RebootDecision {
    if matches!(settings.strategy, RebootStrategy::Off) {
        return RebootDecision::Wait("strategy_off");
    }
    if !in_window(&settings.windows, settings.time_zone, now) {
        return RebootDecision::Wait("outside_window");
    }
    match settings.strategy {
        RebootStrategy::Reboot => RebootDecision::Now,
        RebootStrategy::Off => RebootDecision::Wait("strategy_off"),
        RebootStrategy::Fleetlock { .. } | RebootStrategy::EtcdLock { .. } => {
            RebootDecision::NeedLock
        }
    }
}

/// A reboot lock held across the reboot (FleetLock `pre-reboot`/`steady-state`, or an etcd
/// semaphore slot). The implementations arrive with [7/12].
pub trait RebootLock {
    /// Tries to take the lock; `Ok(false)` means another node holds it.
    fn acquire(&mut self) -> Result<bool, String>;
    /// Releases the lock after a good boot.
    fn release(&mut self) -> Result<(), String>;
}

/// The lock for a coordinated strategy, or why there is none yet.
pub fn lock_for(strategy: &RebootStrategy) -> Result<Box<dyn RebootLock>, &'static str> {
    match strategy {
        RebootStrategy::Fleetlock { .. } => Err("fleetlock_not_implemented"),
        RebootStrategy::EtcdLock { .. } => Err("etcd_lock_not_implemented"),
        RebootStrategy::Reboot | RebootStrategy::Off => Err("no_lock_needed"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::window::Window;
    use chrono::NaiveTime;
    use chrono_tz::Tz;

    #[test]
    fn decisions() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T04:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let win = vec![Window {
            days: vec![],
            start: NaiveTime::from_hms_opt(4, 0, 0).unwrap(),
            length_minutes: 60,
        }];
        let late = vec![Window {
            days: vec![],
            start: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            length_minutes: 60,
        }];
        let s = |strategy, windows| RebootSettings {
            strategy,
            time_zone: Tz::UTC,
            windows,
        };
        let fl = RebootStrategy::Fleetlock {
            url: "http://f".into(),
        };
        let cases = [
            (s(RebootStrategy::Reboot, vec![]), RebootDecision::Now),
            (s(RebootStrategy::Reboot, win.clone()), RebootDecision::Now),
            (
                s(RebootStrategy::Reboot, late),
                RebootDecision::Wait("outside_window"),
            ),
            (
                s(RebootStrategy::Off, win.clone()),
                RebootDecision::Wait("strategy_off"),
            ),
            (s(fl.clone(), win), RebootDecision::NeedLock),
        ];
        for (settings, want) in cases {
            assert_eq!(decide(&settings, now), want, "{settings:?}");
        }
        assert_eq!(lock_for(&fl).err(), Some("fleetlock_not_implemented"));
    }
}
