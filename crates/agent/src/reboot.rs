//! When to reboot into a staged update: a pure decision from the strategy, the windows and the
//! time. The coordinated strategies (`fleetlock`, `etcd-lock`) take their lock through
//! [`crate::lock::RebootLock`] only inside a window, and release it after the new boot was
//! blessed ([`crate::agent::Agent::coordinate`]).

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
    /// Take the coordinator's lock first, then reboot.
    NeedLock,
}

/// Whether the strategy coordinates reboots through a lock.
pub fn uses_lock(strategy: &RebootStrategy) -> bool {
    matches!(
        strategy,
        RebootStrategy::Fleetlock { .. } | RebootStrategy::EtcdLock { .. }
    )
}

/// Decides whether a staged update may reboot the node at `now`.
pub fn decide(settings: &RebootSettings, now: DateTime<Utc>) -> RebootDecision {
    if matches!(settings.strategy, RebootStrategy::Off) {
        return RebootDecision::Wait("strategy_off");
    }
    if !in_window(&settings.windows, now) {
        return RebootDecision::Wait("outside_window");
    }
    decide_now(&settings.strategy)
}

/// The decision when a person asked for the reboot (`update --now`): no window, no `off`,
/// but a coordinated strategy still takes its lock (never more holders than slots).
pub fn decide_now(strategy: &RebootStrategy) -> RebootDecision {
    if uses_lock(strategy) {
        RebootDecision::NeedLock
    } else {
        RebootDecision::Now
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
        let at = |h| {
            vec![Window {
                days: vec![],
                start: NaiveTime::from_hms_opt(h, 0, 0).unwrap(),
                length_minutes: 60,
                time_zone: Tz::UTC,
            }]
        };
        let s = |strategy, windows| RebootSettings {
            strategy,
            time_zone: Tz::UTC,
            windows,
            lock_group: None,
            lock_id: None,
        };
        let fl = RebootStrategy::Fleetlock {
            url: "http://f".into(),
        };
        let etcd = RebootStrategy::EtcdLock {
            endpoints: vec!["http://e:2379".into()],
        };
        let cases = [
            (s(RebootStrategy::Reboot, vec![]), RebootDecision::Now),
            (s(RebootStrategy::Reboot, at(4)), RebootDecision::Now),
            (
                s(RebootStrategy::Reboot, at(6)),
                RebootDecision::Wait("outside_window"),
            ),
            (
                s(RebootStrategy::Off, at(4)),
                RebootDecision::Wait("strategy_off"),
            ),
            (s(fl.clone(), at(4)), RebootDecision::NeedLock),
            (s(fl.clone(), at(6)), RebootDecision::Wait("outside_window")),
            (s(etcd.clone(), vec![]), RebootDecision::NeedLock),
        ];
        for (settings, want) in cases {
            assert_eq!(decide(&settings, now), want, "{settings:?}");
        }
        assert_eq!(decide_now(&fl), RebootDecision::NeedLock);
        assert_eq!(decide_now(&etcd), RebootDecision::NeedLock);
        assert_eq!(decide_now(&RebootStrategy::Off), RebootDecision::Now);
    }
}
