//! When a rule is on: weekly windows of local wall-clock time (licensed night markets, vending
//! hours, school gates) in the box's IANA time zone, so that a zone's own rules (daylight
//! saving, where there is any) are followed without a fixed offset.
//!
//! A window belongs to the day it starts on; one that ends at or before its start runs into
//! the next day. Back-to-back windows (Monday 18:00–24:00, then Tuesday 00:00–02:00) are one
//! stretch: [`Schedule::on_since`] gives the start of the whole stretch, so a rule is not
//! switched off and on at midnight.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Minutes in a day: a window's `to` may be `24:00`.
const DAY: u32 = 24 * 60;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    windows: Vec<Window>,
    tz: Tz,
}

/// Days it starts on (Monday first), and minutes from midnight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub days: [bool; 7],
    pub from: u32,
    /// `1..=1440`; at or before `from`: the next day.
    pub to: u32,
}

impl Window {
    /// The start of this window's stretch that holds local time `t`, if one does.
    fn start_holding(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let length = if self.to > self.from { self.to - self.from } else { self.to + DAY - self.from };
        [t.date(), t.date().pred_opt()?].into_iter().find_map(|day: NaiveDate| {
            let starts = *self.days.get(day.weekday().num_days_from_monday() as usize)?;
            let start = day.and_time(NaiveTime::MIN) + Duration::minutes(self.from.into());
            (starts && start <= t && t < start + Duration::minutes(length.into())).then_some(start)
        })
    }
}

impl Schedule {
    pub fn new(windows: Vec<Window>, tz: Tz) -> Self {
        Self { windows, tz }
    }

    /// If the rule is on at `at`: since when, without a break (back-to-back windows joined;
    /// looked back at most two weeks).
    pub fn on_since(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let holding = |t: NaiveDateTime| self.windows.iter().filter_map(|w| w.start_holding(t)).min();
        let mut start = holding(at.with_timezone(&self.tz).naive_local())?;
        for _ in 0..14 {
            match holding(start - Duration::minutes(1)) {
                Some(earlier) if earlier < start => start = earlier,
                _ => break,
            }
        }
        // A local time skipped by a clock change starts at the first instant after it.
        let utc = |t: NaiveDateTime| self.tz.from_local_datetime(&t).earliest().map(|l| l.with_timezone(&Utc));
        Some(utc(start).or_else(|| utc(start + Duration::hours(1))).unwrap_or(at).min(at))
    }
}

/// `HH:MM` as minutes from midnight, `24:00` included.
pub fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day as HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, most: usize| (1..=most).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(h, 2) && m.len() == 2 && digits(m, 2)) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let minutes = h * 60 + m;
    if m >= 60 || minutes > DAY {
        return Err(bad());
    }
    Ok(minutes)
}

/// `mon` … `sun` as a day index, Monday 0.
pub fn parse_day(text: &str) -> Result<usize, String> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| text.eq_ignore_ascii_case(d))
        .ok_or_else(|| format!("{text:?} is not a day: mon, tue, wed, thu, fri, sat or sun"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [bool; 7] = [true; 7];

    fn tz() -> Tz {
        "Asia/Ho_Chi_Minh".parse().unwrap()
    }

    /// Local time in Ho Chi Minh City (UTC+7), on the week of Monday 2026-11-30.
    fn local(day: u32, hh: u32, mm: u32) -> DateTime<Utc> {
        let date = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap() + chrono::Days::new((day - 1).into());
        let time = date.and_hms_opt(hh, mm, 0).unwrap();
        tz().from_local_datetime(&time).unwrap().with_timezone(&Utc)
    }

    fn window(days: [bool; 7], from: &str, to: &str) -> Window {
        Window { days, from: parse_time(from).unwrap(), to: parse_time(to).unwrap() }
    }

    #[test]
    fn a_day_window_is_on_within_its_hours_only() {
        let s = Schedule::new(vec![window(ALL, "07:00", "17:30")], tz());
        assert_eq!(s.on_since(local(1, 6, 59)), None);
        assert_eq!(s.on_since(local(1, 7, 0)), Some(local(1, 7, 0)));
        assert_eq!(s.on_since(local(1, 17, 29)), Some(local(1, 7, 0)));
        assert_eq!(s.on_since(local(1, 17, 30)), None, "the end is not in it");
    }

    #[test]
    fn a_night_window_runs_across_midnight_from_the_day_it_starts() {
        // Fridays only, 22:00 to 02:00: Friday night and Saturday early morning.
        let friday = [false, false, false, false, true, false, false];
        let s = Schedule::new(vec![window(friday, "22:00", "02:00")], tz());
        assert_eq!(s.on_since(local(5, 23, 0)), Some(local(5, 22, 0)));
        assert_eq!(s.on_since(local(6, 1, 59)), Some(local(5, 22, 0)), "Saturday 01:59 belongs to Friday");
        assert_eq!(s.on_since(local(6, 2, 0)), None);
        assert_eq!(s.on_since(local(4, 1, 0)), None, "Thursday night is not Friday's");
        assert_eq!(s.on_since(local(6, 23, 0)), None, "nor is Saturday's");
    }

    #[test]
    fn weekday_boundaries_follow_the_local_date_not_utc() {
        // Monday 06:00 in Ho Chi Minh City is Sunday 23:00 UTC.
        let monday = [true, false, false, false, false, false, false];
        let s = Schedule::new(vec![window(monday, "06:00", "08:00")], tz());
        assert_eq!(local(1, 6, 0).weekday(), chrono::Weekday::Sun, "UTC says Sunday");
        assert_eq!(s.on_since(local(1, 6, 0)), Some(local(1, 6, 0)));
        assert_eq!(s.on_since(local(8, 6, 0)), Some(local(8, 6, 0)), "next Monday too");
        assert_eq!(s.on_since(local(2, 6, 0)), None, "not Tuesday");
    }

    #[test]
    fn a_window_to_24_00_joins_the_next_days_window_from_00_00() {
        let s = Schedule::new(vec![window(ALL, "18:00", "24:00"), window(ALL, "00:00", "02:00")], tz());
        assert_eq!(s.on_since(local(2, 0, 30)), Some(local(1, 18, 0)), "one stretch from 18:00");
        assert_eq!(s.on_since(local(2, 1, 59)), Some(local(1, 18, 0)));
        assert_eq!(s.on_since(local(2, 2, 0)), None);
        assert_eq!(s.on_since(local(2, 23, 59)), Some(local(2, 18, 0)));
    }

    #[test]
    fn always_on_is_on_since_long_ago() {
        let s = Schedule::new(vec![window(ALL, "00:00", "24:00")], tz());
        let since = s.on_since(local(3, 12, 0)).unwrap();
        assert!(since <= local(1, 0, 0), "{since}");
    }

    #[test]
    fn daylight_saving_is_followed_by_name() {
        // Berlin moves from +01:00 to +02:00 on 2027-03-28: 08:00 local is 07:00 UTC before
        // and 06:00 UTC after.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::new(vec![window(ALL, "08:00", "09:00")], berlin);
        let utc = |d: u32, h: u32| Utc.with_ymd_and_hms(2027, 3, d, h, 30, 0).unwrap();
        assert!(s.on_since(utc(27, 7)).is_some() && s.on_since(utc(27, 6)).is_none());
        assert!(s.on_since(utc(29, 6)).is_some() && s.on_since(utc(29, 7)).is_none());
    }

    #[test]
    fn times_and_days_parse_strictly() {
        assert_eq!(parse_time("00:00"), Ok(0));
        assert_eq!(parse_time("24:00"), Ok(DAY));
        assert_eq!(parse_time("7:05"), Ok(425));
        for bad in ["24:01", "12:60", "1200", "ab:cd", "-1:00", "", "123:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_day("Sun"), Ok(6));
        assert!(parse_day("sunday").is_err());
    }
}
