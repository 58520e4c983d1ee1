//! Disruption budgets: how many of a NodePool's nodes may be disrupting at once, for which
//! reasons, and when (`schedule` is a cron expression in UTC, active for `duration` after each
//! match).

use crate::api::nodepool::{Budget, DisruptionReason as ApiReason};
use crate::cluster::DisruptionReason;
use crate::cluster::IntOrPercent;

/// How many nodes of a pool of `total` may be disrupting at `now` for `reason`: the smallest
/// `nodes` among the active budgets that cover the reason (`u32::MAX` when none does).
pub fn allowed(
    budgets: &[Budget],
    total: u32,
    reason: DisruptionReason,
    now: i64,
) -> Result<u32, String> {
    let mut allowed = u32::MAX;
    for b in budgets {
        if let Some(reasons) = &b.reasons
            && !reasons.iter().any(|r| covers(r, reason))
        {
            continue;
        }
        if !active(b, now)? {
            continue;
        }
        allowed = allowed.min(IntOrPercent::parse(&b.nodes)?.of(total));
    }
    Ok(allowed)
}

/// Whether a budget's `reasons` entry covers a reason. Expiry has no entry (as in Karpenter v1):
/// only budgets without `reasons` limit it.
fn covers(name: &ApiReason, reason: DisruptionReason) -> bool {
    matches!(
        (name, reason),
        (ApiReason::Empty, DisruptionReason::Empty)
            | (ApiReason::Underutilized, DisruptionReason::Underutilized)
            | (ApiReason::Drifted, DisruptionReason::Drifted)
    )
}

/// Whether a budget applies at `now`: always without a schedule, else within `duration` after
/// a minute its cron expression matches.
pub fn active(b: &Budget, now: i64) -> Result<bool, String> {
    let (Some(schedule), Some(duration)) = (&b.schedule, &b.duration) else {
        return Ok(true);
    };
    let cron = Cron::parse(schedule)?;
    let span = crate::api::duration::parse(duration)?
        .map_or(0, |d| d.as_secs() as i64)
        .max(0);
    // Minute by minute back over the window: schedules are minutes apart and windows hours long.
    let minute = now.div_euclid(60) * 60;
    let mut t = minute;
    while t > now - span {
        if cron.matches(t) {
            return Ok(true);
        }
        t -= 60;
    }
    Ok(false)
}

/// A five-field cron expression (minute hour day-of-month month day-of-week) or a macro.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minute: u64,
    hour: u32,
    dom: u32,
    month: u16,
    dow: u8,
    dom_star: bool,
    dow_star: bool,
}

impl Cron {
    /// Parses `"0 9 * * 1-5"`, `"*/15 * * * *"`, `"@daily"`…
    pub fn parse(s: &str) -> Result<Cron, String> {
        let expanded = match s.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!("schedule {s:?}: needs 5 fields, has {}", f.len()));
        }
        let field = |i: usize, lo: u32, hi: u32| -> Result<u64, String> {
            let mut bits = 0u64;
            for part in f[i].split(',') {
                let (range, step) = match part.split_once('/') {
                    Some((r, st)) => (
                        r,
                        st.parse::<u32>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| format!("schedule {s:?}: bad step in {part:?}"))?,
                    ),
                    None => (part, 1),
                };
                let num = |x: &str| {
                    name(i, x)
                        .or_else(|| x.parse::<u32>().ok())
                        .filter(|n| (lo..=hi).contains(n))
                        .ok_or_else(|| format!("schedule {s:?}: {x:?} is not in {lo}-{hi}"))
                };
                let (a, b) = match range {
                    "*" => (lo, hi),
                    r => match r.split_once('-') {
                        Some((a, b)) => (num(a)?, num(b)?),
                        None if step > 1 => (num(r)?, hi),
                        None => (num(r)?, num(r)?),
                    },
                };
                let mut v = a;
                while v <= b {
                    bits |= 1 << v;
                    v += step;
                }
            }
            Ok(bits)
        };
        let mut dow = field(4, 0, 7)?;
        if dow & (1 << 7) != 0 {
            dow |= 1;
        }
        Ok(Cron {
            minute: field(0, 0, 59)?,
            hour: field(1, 0, 23)? as u32,
            dom: field(2, 1, 31)? as u32,
            month: field(3, 1, 12)? as u16,
            dow: (dow & 0x7f) as u8,
            dom_star: f[2] == "*",
            dow_star: f[4] == "*",
        })
    }

    /// Whether the minute starting at `t` (Unix seconds, UTC) matches.
    pub fn matches(&self, t: i64) -> bool {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let (minute, hour) = ((secs / 60) % 60, secs / 3600);
        let (_, month, dom) = civil(days);
        let dow = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday.
        let day = match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (false, true) => self.dom & (1 << dom) != 0,
            (true, false) => self.dow & (1 << dow) != 0,
            // Cron's rule: with both restricted, either may match.
            (false, false) => self.dom & (1 << dom) != 0 || self.dow & (1 << dow) != 0,
        };
        self.minute & (1 << minute) != 0
            && self.hour & (1 << hour) != 0
            && self.month & (1 << month) != 0
            && day
    }
}

/// Day-of-week and month names (`mon`, `jan`).
fn name(field: usize, x: &str) -> Option<u32> {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let x = x.to_ascii_lowercase();
    match field {
        4 => DAYS.iter().position(|&d| d == x).map(|i| i as u32),
        3 => MONTHS.iter().position(|&m| m == x).map(|i| i as u32 + 1),
        _ => None,
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(nodes: &str, schedule: Option<&str>, duration: Option<&str>) -> Budget {
        Budget {
            nodes: nodes.into(),
            schedule: schedule.map(Into::into),
            duration: duration.map(Into::into),
            reasons: None,
        }
    }

    // 2026-11-23 (a Monday) 10:30 UTC.
    const MON_1030: i64 = 1_795_429_800;

    #[test]
    fn cron_matches_weekday_business_hours() {
        assert_eq!(civil(MON_1030.div_euclid(86_400)), (2026, 11, 23));
        let c = Cron::parse("30 10 * * 1-5").unwrap();
        assert!(c.matches(MON_1030));
        assert!(!c.matches(MON_1030 + 60));
        assert!(!c.matches(MON_1030 - 86_400)); // Sunday
        assert!(
            Cron::parse("@daily")
                .unwrap()
                .matches(MON_1030 - 10 * 3600 - 1800)
        );
        assert!(Cron::parse("*/15 * * * *").unwrap().matches(MON_1030));
        assert!(Cron::parse("30 10 * * mon-fri").unwrap().matches(MON_1030));
        assert!(Cron::parse("61 * * * *").is_err());
        assert!(Cron::parse("* * *").is_err());
    }

    #[test]
    fn the_smallest_active_budget_for_the_reason_wins() {
        // Block everything 09:00–17:00 on weekdays; 10% otherwise.
        let budgets = vec![
            budget("10%", None, None),
            budget("0", Some("0 9 * * 1-5"), Some("8h")),
        ];
        assert_eq!(
            allowed(&budgets, 20, DisruptionReason::Empty, MON_1030),
            Ok(0)
        );
        assert_eq!(
            allowed(&budgets, 20, DisruptionReason::Empty, MON_1030 + 7 * 3600),
            Ok(2)
        );
        let mut drift_only = budget("0", None, None);
        drift_only.reasons = Some(vec![ApiReason::Drifted]);
        let budgets = vec![budget("5", None, None), drift_only];
        assert_eq!(
            allowed(&budgets, 20, DisruptionReason::Drifted, MON_1030),
            Ok(0)
        );
        assert_eq!(
            allowed(&budgets, 20, DisruptionReason::Empty, MON_1030),
            Ok(5)
        );
    }
}
