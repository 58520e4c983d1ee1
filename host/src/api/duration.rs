//! Go-style durations as Karpenter's fields spell them (`30s`, `1h30m`, `720h`, `Never`).

use std::time::Duration;

/// Parses a duration; `Ok(None)` for `Never`. The schema's pattern already admits only these
/// forms, so an error here means the object skipped validation.
pub fn parse(s: &str) -> Result<Option<Duration>, String> {
    if s == "Never" {
        return Ok(None);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: a number needs a unit (ns, us, ms, s, m, h)"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
        };
        total += value * scale;
        rest = next;
    }
    Ok(Some(Duration::from_secs_f64(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_never() {
        assert_eq!(parse("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse("1h30m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse("720h"), Ok(Some(Duration::from_secs(720 * 3600))));
        assert_eq!(parse("1.5m"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse("0s"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse("Never"), Ok(None));
        assert!(parse("10").is_err());
        assert!(parse("10d").is_err());
        assert!(parse("").is_err());
    }
}
