//! `quiet-hours`: no voluntary disruption inside configured hours; `balanced` outside them.
//!
//! ```yaml
//! config:
//!   timezone: Europe/Berlin          # IANA name; default UTC
//!   windows: "Mon-Fri 08:00-18:00; Sat 10:00-14:00"
//!   replace-margin: "0.1"            # optional, as in `balanced`
//! ```
//!
//! A window is a day set (`Mon-Fri`, `Sat,Sun`, `Tue`, `daily`) and a time range in the time zone's
//! local time. A range that ends before it starts runs overnight (`Fri 22:00-06:00` holds until
//! Saturday 06:00). `24:00` ends a range at midnight. Daylight-saving changes follow the zone.
//! Inside a window every move is kept, with the window as the reason.

use dovetail_policy_sdk::select::{BalancedOptions, balanced, keep_all};
use dovetail_policy_sdk::{Action, ConsolidationRound, Consolidator, Params, Policy};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// See the crate documentation.
pub struct QuietHours {
    tz: TimeZone,
    tz_name: String,
    windows: Vec<Window>,
    spec: String,
    opts: BalancedOptions,
}

/// A weekly window: days (bit 0 = Monday) and minutes since local midnight.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    days: u8,
    start: u16,
    end: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Policy for QuietHours {
    fn new(params: &Params) -> Result<Self, String> {
        let mut known = vec!["timezone", "windows"];
        known.extend_from_slice(BalancedOptions::KEYS);
        params.only(&known)?;
        let tz_name = params.get("timezone").unwrap_or("UTC").trim().to_string();
        let tz =
            TimeZone::get(&tz_name).map_err(|e| format!("config timezone={tz_name:?}: {e}"))?;
        let spec = params
            .get("windows")
            .ok_or("config windows is required, e.g. \"Mon-Fri 08:00-18:00\"")?
            .trim()
            .to_string();
        let windows = parse_windows(&spec).map_err(|e| format!("config windows={spec:?}: {e}"))?;
        Ok(QuietHours {
            tz,
            tz_name,
            windows,
            spec,
            opts: BalancedOptions::from_params(params, true)?,
        })
    }
}

impl QuietHours {
    /// Whether `now` (Unix seconds) falls inside a window.
    pub fn is_quiet(&self, now: i64) -> Result<bool, String> {
        let local = Timestamp::from_second(now)
            .map_err(|e| format!("round time {now}: {e}"))?
            .to_zoned(self.tz.clone());
        let day = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let yesterday = (day + 6) % 7;
        Ok(self.windows.iter().any(|w| {
            let on = |d: u8| w.days & (1 << d) != 0;
            if w.start < w.end {
                on(day) && (w.start..w.end).contains(&minute)
            } else {
                (on(day) && minute >= w.start) || (on(yesterday) && minute < w.end)
            }
        }))
    }
}

impl Consolidator for QuietHours {
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String> {
        if self.is_quiet(round.now)? {
            Ok(keep_all(
                round,
                &format!("inside quiet hours ({} {})", self.spec, self.tz_name),
            ))
        } else {
            Ok(balanced(round, &self.opts))
        }
    }
}

fn parse_windows(spec: &str) -> Result<Vec<Window>, String> {
    let windows: Vec<Window> = spec
        .split(';')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(parse_window)
        .collect::<Result<_, _>>()?;
    if windows.is_empty() {
        return Err("no window given".into());
    }
    Ok(windows)
}

fn parse_window(w: &str) -> Result<Window, String> {
    let (days, range) = w
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("{w:?}: expected \"DAYS HH:MM-HH:MM\""))?;
    let (start, end) = range
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("{range:?}: expected HH:MM-HH:MM"))?;
    let (start, end) = (minutes(start)?, minutes(end)?);
    if start == end {
        return Err(format!("{w:?}: empty time range"));
    }
    if start >= 24 * 60 {
        return Err(format!("{w:?}: a window cannot start at 24:00"));
    }
    Ok(Window {
        days: parse_days(days)?,
        start,
        end,
    })
}

fn minutes(hhmm: &str) -> Result<u16, String> {
    let bad = || format!("{hhmm:?}: expected HH:MM");
    let (h, m) = hhmm.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_days(spec: &str) -> Result<u8, String> {
    let day = |d: &str| {
        let d = d.trim().to_ascii_lowercase();
        DAYS.iter()
            .position(|&n| {
                d.len() >= 3
                    && (n == d
                        || (d.starts_with(n)
                            && "monday tuesday wednesday thursday friday saturday sunday"
                                .contains(&d)))
            })
            .ok_or_else(|| format!("{d:?} is not a day (Mon, Tue, … or daily)"))
    };
    if matches!(spec.trim().to_ascii_lowercase().as_str(), "daily" | "*") {
        return Ok(0x7f);
    }
    let mut mask = 0u8;
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day(part)?,
        }
    }
    Ok(mask)
}

dovetail_policy_sdk::export_consolidator!(QuietHours);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::DisruptionReason::*;
    use dovetail_policy_sdk::testing::{ConsolidationRoundBuilder, decide, executed};

    /// 2026-11-23 is a Monday.
    fn at(local: &str, tz: &str) -> i64 {
        let zdt: jiff::civil::DateTime = local.parse().unwrap();
        zdt.to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
            .as_second()
    }

    fn policy(tz: &str, windows: &str) -> QuietHours {
        QuietHours::new(&Params::from([("timezone", tz), ("windows", windows)])).unwrap()
    }

    #[test]
    fn blocks_inside_the_window_and_allows_outside() {
        let p = policy("Europe/Berlin", "Mon-Fri 08:00-18:00");
        let round = |now| {
            ConsolidationRoundBuilder::new()
                .now(now)
                .node("a", "m5.large", 0.096, Empty)
                .delete(&[0], 0.096, 0.0)
                .build()
        };
        let inside = decide(&p, &round(at("2026-11-23T09:30", "Europe/Berlin"))).unwrap();
        assert!(executed(&inside).is_empty());
        assert!(matches!(&inside[0], Action::Keep(k) if k.reason.contains("quiet hours")));
        let evening = decide(&p, &round(at("2026-11-23T18:00", "Europe/Berlin"))).unwrap();
        assert_eq!(executed(&evening), vec![0]);
        let saturday = decide(&p, &round(at("2026-11-28T10:00", "Europe/Berlin"))).unwrap();
        assert_eq!(executed(&saturday), vec![0]);
    }

    #[test]
    fn time_zone_matters() {
        let p = policy("America/New_York", "Mon-Fri 09:00-17:00");
        // 09:30 in Berlin is 03:30 in New York: outside.
        assert!(!p.is_quiet(at("2026-11-23T09:30", "Europe/Berlin")).unwrap());
        assert!(
            p.is_quiet(at("2026-11-23T09:30", "America/New_York"))
                .unwrap()
        );
    }

    #[test]
    fn overnight_windows_run_into_the_next_day() {
        let p = policy("UTC", "Fri 22:00-06:00");
        assert!(
            p.is_quiet(at("2026-11-27T23:00", "UTC")).unwrap(),
            "Friday night"
        );
        assert!(
            p.is_quiet(at("2026-11-28T05:59", "UTC")).unwrap(),
            "Saturday early"
        );
        assert!(!p.is_quiet(at("2026-11-28T06:00", "UTC")).unwrap());
        assert!(
            !p.is_quiet(at("2026-11-27T05:00", "UTC")).unwrap(),
            "Friday early is Thursday's night"
        );
    }

    #[test]
    fn day_sets_and_errors() {
        assert_eq!(parse_days("Mon-Fri").unwrap(), 0b001_1111);
        assert_eq!(parse_days("Sat,Sun").unwrap(), 0b110_0000);
        assert_eq!(parse_days("Fri-Mon").unwrap(), 0b111_0001);
        assert_eq!(parse_days("daily").unwrap(), 0x7f);
        for (tz, windows, needle) in [
            ("Mars/Olympus", "Mon 09:00-10:00", "timezone"),
            ("UTC", "Funday 09:00-10:00", "not a day"),
            ("UTC", "Mon 9-10", "HH:MM"),
            ("UTC", "Mon 10:00-10:00", "empty"),
            ("UTC", "Mon 25:00-26:00", "HH:MM"),
        ] {
            let err = QuietHours::new(&Params::from([("timezone", tz), ("windows", windows)]))
                .err()
                .unwrap();
            assert!(err.contains(needle), "{windows}: {err}");
        }
        assert!(
            QuietHours::new(&Params::default())
                .err()
                .unwrap()
                .contains("windows is required")
        );
    }
}
