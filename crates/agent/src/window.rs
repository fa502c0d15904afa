//! Weekly maintenance windows, each in its own IANA time zone, as a pure function of the time.
//!
//! A window opens at a local wall-clock time on some days of the week and stays open for a
//! number of real minutes, so it may run past midnight and past the end of the week (Sunday
//! into Monday). Days when the clocks change (docs/reboot.md, "Windows and DST"):
//! - an opening time that does not exist that day (spring forward) opens at the instant the
//!   gap ends (02:30 in Europe/Berlin on the last Sunday of March opens at 03:00 CEST);
//! - an opening time that exists twice (fall back) opens once, at the first occurrence;
//! - a window is always `length_minutes` of real time long, also when it runs through the
//!   skipped or the repeated hour (a 60-minute window from 02:30 CEST on the fall-back night
//!   closes at 02:30 CET).

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

/// The longest window: one week.
pub const MAX_LENGTH_MINUTES: u32 = 7 * 24 * 60;

/// One weekly window: on `days` (empty = every day) from `start` local time in `time_zone`,
/// for `length_minutes` of real time (may run past midnight and past the end of the week).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Days the window opens; empty means every day.
    pub days: Vec<Weekday>,
    /// Local opening time.
    pub start: NaiveTime,
    /// Length in minutes (1 to [`MAX_LENGTH_MINUTES`]).
    pub length_minutes: u32,
    /// The IANA time zone `start` and `days` are read in.
    #[serde(serialize_with = "zone_name")]
    pub time_zone: Tz,
}

impl Window {
    /// The openings of this window (open, close) that may contain `now` or come soon after:
    /// those opened on the local days from a week before `now` to a week after it.
    fn openings(&self, now: DateTime<Utc>) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> {
        let today = now.with_timezone(&self.time_zone).date_naive();
        let len = Duration::minutes(i64::from(self.length_minutes.min(MAX_LENGTH_MINUTES)));
        (-8i64..=8).filter_map(move |offset| {
            let day = today.checked_add_signed(Duration::days(offset))?;
            if !self.days.is_empty() && !self.days.contains(&day.weekday()) {
                return None;
            }
            let open = local_instant(self.time_zone, day.and_time(self.start))?;
            Some((open, open + len))
        })
    }

    /// Whether `now` is inside this window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.openings(now)
            .any(|(open, close)| open <= now && now < close)
    }

    /// The next time this window opens strictly after `now`.
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.openings(now)
            .map(|(open, _)| open)
            .filter(|open| *open > now)
            .min()
    }
}

fn zone_name<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// Whether `now` falls in one of `windows`; no windows = always.
pub fn in_window(windows: &[Window], now: DateTime<Utc>) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

/// When the next window opens after `now` (`None` with no windows: always open).
pub fn next_open(windows: &[Window], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    windows.iter().filter_map(|w| w.next_open(now)).min()
}

/// The instant a local opening time means in `tz` (see the module doc for DST days).
fn local_instant(tz: Tz, naive: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        chrono::LocalResult::None => {
            // Spring forward: the first local minute that exists after the gap is the instant
            // the gap ends (gaps are whole minutes in every zone of the tz database).
            (1..=24 * 60).find_map(|m| {
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

    fn w(days: &[Weekday], hh: u32, mm: u32, len: u32, tz: Tz) -> Window {
        Window {
            days: days.to_vec(),
            start: NaiveTime::from_hms_opt(hh, mm, 0).unwrap(),
            length_minutes: len,
            time_zone: tz,
        }
    }

    #[test]
    fn windows_table() {
        use Weekday::*;
        let utc_tz = Tz::UTC;
        let berlin = chrono_tz::Europe::Berlin;
        let ny = chrono_tz::America::New_York;
        let tokyo = chrono_tz::Asia::Tokyo;
        // 2026-12-04 is a Friday. Berlin: CEST -> CET on 2026-10-25 03:00 CEST (01:00Z),
        // CET -> CEST on 2026-03-29 02:00 CET (01:00Z). New York: EST -> EDT on 2026-03-08
        // 02:00 EST (07:00Z), EDT -> EST on 2026-11-01 02:00 EDT (06:00Z).
        let cases: &[(&str, Vec<Window>, &str, bool)] = &[
            ("no windows: always", vec![], "2026-12-04T12:00:00Z", true),
            (
                "inside daily",
                vec![w(&[], 4, 0, 60, utc_tz)],
                "2026-12-04T04:30:00Z",
                true,
            ),
            (
                "at open",
                vec![w(&[], 4, 0, 60, utc_tz)],
                "2026-12-04T04:00:00Z",
                true,
            ),
            (
                "at close: closed",
                vec![w(&[], 4, 0, 60, utc_tz)],
                "2026-12-04T05:00:00Z",
                false,
            ),
            (
                "before",
                vec![w(&[], 4, 0, 60, utc_tz)],
                "2026-12-04T03:59:00Z",
                false,
            ),
            (
                "wrong day",
                vec![w(&[Sat], 4, 0, 60, utc_tz)],
                "2026-12-04T04:30:00Z",
                false,
            ),
            (
                "right day",
                vec![w(&[Fri], 4, 0, 60, utc_tz)],
                "2026-12-04T04:30:00Z",
                true,
            ),
            (
                "several days",
                vec![w(&[Mon, Fri], 4, 0, 60, utc_tz)],
                "2026-12-04T04:30:00Z",
                true,
            ),
            (
                "past midnight, after it (Thu 23:00 + 2h)",
                vec![w(&[Thu], 23, 0, 120, utc_tz)],
                "2026-12-04T00:30:00Z",
                true,
            ),
            (
                "past midnight, the day is the opening day, not today",
                vec![w(&[Fri], 23, 0, 120, utc_tz)],
                "2026-12-04T00:30:00Z",
                false,
            ),
            (
                "past the end of the week: Sun 22:00 + 4h, Monday 01:00",
                vec![w(&[Sun], 22, 0, 240, utc_tz)],
                "2026-12-07T01:00:00Z",
                true,
            ),
            (
                "a 2-day window from Saturday, on Monday morning",
                vec![w(&[Sat], 23, 30, 2880, utc_tz)],
                "2026-12-07T23:00:00Z",
                true,
            ),
            (
                "a 2-day window from Saturday, closed on Monday after 23:30",
                vec![w(&[Sat], 23, 30, 2880, utc_tz)],
                "2026-12-07T23:30:00Z",
                false,
            ),
            (
                "a whole week never closes",
                vec![w(&[Wed], 0, 0, 10080, utc_tz)],
                "2026-12-08T23:59:00Z",
                true,
            ),
            (
                "Berlin is UTC+1 in winter: inside",
                vec![w(&[], 4, 0, 60, berlin)],
                "2026-12-04T03:30:00Z",
                true,
            ),
            (
                "Berlin: outside",
                vec![w(&[], 4, 0, 60, berlin)],
                "2026-12-04T04:30:00Z",
                false,
            ),
            (
                "the day is the zone's day: Sat 01:00 Tokyo is Fri 16:00Z",
                vec![w(&[Sat], 1, 0, 30, tokyo)],
                "2026-12-04T16:10:00Z",
                true,
            ),
            (
                "each window its own zone: Tokyo window closed, New York one open",
                vec![w(&[], 4, 0, 60, tokyo), w(&[], 4, 0, 60, ny)],
                "2026-12-04T09:30:00Z",
                true,
            ),
            (
                "each window its own zone: both closed",
                vec![w(&[], 4, 0, 60, tokyo), w(&[], 4, 0, 60, ny)],
                "2026-12-04T12:00:00Z",
                false,
            ),
            (
                "second of two windows",
                vec![w(&[Mon], 1, 0, 10, utc_tz), w(&[Fri], 12, 0, 10, utc_tz)],
                "2026-12-04T12:05:00Z",
                true,
            ),
            // Spring forward: 02:30 does not exist in Berlin on 2026-03-29.
            (
                "DST gap: opens when the gap ends (03:00 CEST = 01:00Z)",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-03-29T01:00:00Z",
                true,
            ),
            (
                "DST gap: not before",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-03-29T00:59:00Z",
                false,
            ),
            (
                "DST gap: still the full 60 minutes (until 04:00 CEST)",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-03-29T01:59:00Z",
                true,
            ),
            (
                "DST gap: closed after 60 minutes",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-03-29T02:00:00Z",
                false,
            ),
            (
                "window through the skipped hour: 01:30 CET + 60 min ends 03:30 CEST",
                vec![w(&[], 1, 30, 60, berlin)],
                "2026-03-29T01:20:00Z",
                true,
            ),
            (
                "window through the skipped hour: closed at 03:30 CEST",
                vec![w(&[], 1, 30, 60, berlin)],
                "2026-03-29T01:30:00Z",
                false,
            ),
            // Fall back: 02:00-03:00 happens twice in Berlin on 2026-10-25.
            (
                "repeated hour: opens at the first 02:30 (CEST, 00:30Z)",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-10-25T00:30:00Z",
                true,
            ),
            (
                "repeated hour: 60 real minutes, still open at 02:20 CET",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-10-25T01:20:00Z",
                true,
            ),
            (
                "repeated hour: does not open a second time at 02:30 CET",
                vec![w(&[], 2, 30, 60, berlin)],
                "2026-10-25T01:30:00Z",
                false,
            ),
            (
                "through the repeated hour: 01:30 CEST + 120 min ends 02:30 CET",
                vec![w(&[], 1, 30, 120, berlin)],
                "2026-10-25T01:29:00Z",
                true,
            ),
            (
                "through the repeated hour: closed at 02:30 CET",
                vec![w(&[], 1, 30, 120, berlin)],
                "2026-10-25T01:30:00Z",
                false,
            ),
            (
                "New York fall back, Sunday window 01:30 opens at the EDT one",
                vec![w(&[Sun], 1, 30, 30, ny)],
                "2026-11-01T05:45:00Z",
                true,
            ),
            (
                "New York fall back, not again at 01:30 EST",
                vec![w(&[Sun], 1, 30, 30, ny)],
                "2026-11-01T06:45:00Z",
                false,
            ),
            (
                "New York spring forward: 02:15 opens at 03:00 EDT",
                vec![w(&[Sun], 2, 15, 30, ny)],
                "2026-03-08T07:10:00Z",
                true,
            ),
        ];
        for (name, windows, now, want) in cases {
            assert_eq!(in_window(windows, utc(now)), *want, "{name}");
        }
    }

    #[test]
    fn next_opening_table() {
        use Weekday::*;
        let berlin = chrono_tz::Europe::Berlin;
        let cases: &[(&str, Vec<Window>, &str, Option<&str>)] = &[
            ("none", vec![], "2026-12-04T12:00:00Z", None),
            (
                "later today",
                vec![w(&[], 14, 0, 60, Tz::UTC)],
                "2026-12-04T12:00:00Z",
                Some("2026-12-04T14:00:00Z"),
            ),
            (
                "next week, across the week's end",
                vec![w(&[Mon], 1, 0, 60, Tz::UTC)],
                "2026-12-07T02:00:00Z",
                Some("2026-12-14T01:00:00Z"),
            ),
            (
                "the earliest of two",
                vec![w(&[Sat], 1, 0, 60, Tz::UTC), w(&[], 4, 0, 60, berlin)],
                "2026-12-04T12:00:00Z",
                Some("2026-12-05T01:00:00Z"),
            ),
            (
                "into the DST gap",
                vec![w(&[Sun], 2, 30, 60, berlin)],
                "2026-03-28T12:00:00Z",
                Some("2026-03-29T01:00:00Z"),
            ),
        ];
        for (name, windows, now, want) in cases {
            assert_eq!(next_open(windows, utc(now)), want.map(utc), "{name}");
        }
    }
}
