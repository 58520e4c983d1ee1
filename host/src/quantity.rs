//! Kubernetes resource quantities (`500m`, `1.5`, `512Mi`, `1G`, `2e3`) as integers.

/// A quantity that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid quantity {input:?}: {why}")]
pub struct QuantityError {
    pub input: String,
    pub why: &'static str,
}

/// Parses a quantity into units × `scale` (CPU in millicores: `scale` 1000), exactly, rounding
/// up as Kubernetes does for requests.
fn parse_scaled(input: &str, scale: u128) -> Result<u64, QuantityError> {
    let err = |why| QuantityError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("must be a finite, non-negative number"));
    }
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    // "1e3" has an exponent; in "1E" (exa) the E is a suffix: it is an exponent only if digits follow.
    let (number, suffix) = match s[..split].rfind(['e', 'E']) {
        Some(i) if i + 1 == split => (&s[..i], &s[i..]),
        _ => (&s[..split], &s[split..]),
    };
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| err("not a number"))?),
        None => (number, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return Err(err("not a number"));
    }
    let digits: u128 = format!("{int}{frac}")
        .parse()
        .map_err(|_| err("too large"))?;
    let (pow10, binary): (i32, u128) = match suffix {
        "" => (0, 1),
        "m" => (-3, 1),
        "k" => (3, 1),
        "M" => (6, 1),
        "G" => (9, 1),
        "T" => (12, 1),
        "P" => (15, 1),
        "E" => (18, 1),
        "Ki" => (0, 1 << 10),
        "Mi" => (0, 1 << 20),
        "Gi" => (0, 1 << 30),
        "Ti" => (0, 1 << 40),
        "Pi" => (0, 1 << 50),
        "Ei" => (0, 1 << 60),
        _ => return Err(err("unknown suffix")),
    };
    let exp10 = exponent + pow10 - frac.len() as i32;
    let big = || err("too large");
    let ten = |e: i32| 10u128.checked_pow(e as u32).ok_or_else(big);
    let numerator = digits
        .checked_mul(binary)
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(big)?;
    let value = if exp10 >= 0 {
        numerator.checked_mul(ten(exp10)?).ok_or_else(big)?
    } else if exp10 < -38 {
        u128::from(numerator > 0)
    } else {
        numerator.div_ceil(ten(-exp10)?)
    };
    u64::try_from(value).map_err(|_| big())
}

/// CPU in millicores: `500m` → 500, `1.5` → 1500.
pub fn cpu_millis(input: &str) -> Result<u64, QuantityError> {
    parse_scaled(input, 1000)
}

/// Bytes: `512Mi` → 536870912, `1G` → 10⁹.
pub fn bytes(input: &str) -> Result<u64, QuantityError> {
    parse_scaled(input, 1)
}

/// A plain count (pods, GPUs).
pub fn count(input: &str) -> Result<u64, QuantityError> {
    parse_scaled(input, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis("500m").unwrap(), 500);
        assert_eq!(cpu_millis("1").unwrap(), 1000);
        assert_eq!(cpu_millis("1.5").unwrap(), 1500);
        assert_eq!(cpu_millis("0.1").unwrap(), 100);
        assert_eq!(cpu_millis("100.5m").unwrap(), 101, "rounds up");
        assert_eq!(cpu_millis("2e3m").unwrap(), 2000);
    }

    #[test]
    fn memory() {
        assert_eq!(bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(bytes("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("129M").unwrap(), 129_000_000);
        assert_eq!(bytes("128974848").unwrap(), 128_974_848);
        assert_eq!(bytes("1E").unwrap(), 1_000_000_000_000_000_000);
        assert_eq!(bytes("1e3").unwrap(), 1000);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(bytes("12Qi").unwrap_err().why, "unknown suffix");
        assert_eq!(bytes("").unwrap_err().why, "empty");
        assert_eq!(
            cpu_millis("-1").unwrap_err().why,
            "must be a finite, non-negative number"
        );
        assert_eq!(cpu_millis("lots").unwrap_err().why, "not a number");
        assert!(bytes("1Mi ").is_ok(), "surrounding space is fine");
        assert_eq!(bytes("99999999999Ei").unwrap_err().why, "too large");
        assert_eq!(bytes(".").unwrap_err().why, "not a number");
    }
}
