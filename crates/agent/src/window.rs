//! Weekly maintenance windows in an IANA time zone, as a pure function of the time.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

/// One weekly window: on `days` (empty = every day) from `start` local time, for
/// `length_minutes` (may run past midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Days the window opens; empty means every day.
    pub days: Vec<Weekday>,
    /// Local opening time.
    pub start: NaiveTime,
    /// Length in minutes (at most a week).
    pub length_minutes: u32,
}

/// Whether `now` falls in one of `windows` (local time in `tz`); no windows = always.
///
/// A window opened on a local day is checked for that day and the days before, so windows that
/// cross midnight work. Around DST changes a local opening time that does not exist that day
/// (spring forward) opens at the first valid instant after it; an ambiguous one (fall back)
/// opens at the earlier instant.
pub fn in_window(windows: &[Window], tz: Tz, now: DateTime<Utc>) -> bool {
    if windows.is_empty() {
        return true;
    }
    let local_today = now.with_timezone(&tz).date_naive();
    windows.iter().any(|w| {
        // The window could have opened up to 7 days (its max length) before today.
        (0..=7).any(|back| {
            let Some(day) = local_today.checked_sub_days(chrono::Days::new(back)) else {
                return false;
            };
            if !w.days.is_empty() && !w.days.contains(&day.weekday()) {
                return false;
            }
            let Some(open) = local_instant(tz, day.and_time(w.start)) else {
                return false;
            };
            let close = open + Duration::minutes(i64::from(w.length_minutes));
            open <= now && now < close
        })
    })
}

fn local_instant(tz: Tz, naive: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(a, _) => Some(a.with_timezone(&Utc)),
        chrono::LocalResult::None => {
            // Spring forward: the first minute that exists after the gap.
            (1..=180).find_map(|m| {
                tz.from_local_datetime(&(naive + Duration::minutes(m)))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn w(days: &[Weekday], hh: u32, mm: u32, len: u32) -> Window {
        Window {
            days: days.to_vec(),
            start: NaiveTime::from_hms_opt(hh, mm, 0).unwrap(),
            length_minutes: len,
        }
    }

    #[test]
    fn windows_table() {
        use Weekday::*;
        let berlin = chrono_tz::Europe::Berlin;
        let cases: &[(&str, Vec<Window>, Tz, &str, bool)] = &[
            ("no windows", vec![], Tz::UTC, "2026-12-04T12:00:00Z", true),
            (
                "inside daily",
                vec![w(&[], 4, 0, 60)],
                Tz::UTC,
                "2026-12-04T04:30:00Z",
                true,
            ),
            (
                "at close",
                vec![w(&[], 4, 0, 60)],
                Tz::UTC,
                "2026-12-04T05:00:00Z",
                false,
            ),
            (
                "before",
                vec![w(&[], 4, 0, 60)],
                Tz::UTC,
                "2026-12-04T03:59:00Z",
                false,
            ),
            // 2026-12-04 is a Friday.
            (
                "wrong day",
                vec![w(&[Sat], 4, 0, 60)],
                Tz::UTC,
                "2026-12-04T04:30:00Z",
                false,
            ),
            (
                "right day",
                vec![w(&[Fri], 4, 0, 60)],
                Tz::UTC,
                "2026-12-04T04:30:00Z",
                true,
            ),
            (
                "crosses midnight, after it",
                vec![w(&[Thu], 23, 0, 120)],
                Tz::UTC,
                "2026-12-04T00:30:00Z",
                true,
            ),
            (
                "time zone shifts it (Berlin is UTC+1 in winter)",
                vec![w(&[], 4, 0, 60)],
                berlin,
                "2026-12-04T03:30:00Z",
                true,
            ),
            (
                "zone, outside",
                vec![w(&[], 4, 0, 60)],
                berlin,
                "2026-12-04T04:30:00Z",
                false,
            ),
            (
                "DST spring forward: 02:30 does not exist, opens at 03:00 CEST",
                vec![w(&[], 2, 30, 60)],
                berlin,
                "2026-03-29T01:10:00Z",
                true,
            ),
            (
                "second of two windows",
                vec![w(&[Mon], 1, 0, 10), w(&[Fri], 12, 0, 10)],
                Tz::UTC,
                "2026-12-04T12:05:00Z",
                true,
            ),
        ];
        for (name, windows, tz, now, want) in cases {
            assert_eq!(in_window(windows, *tz, utc(now)), *want, "{name}");
        }
    }
}
