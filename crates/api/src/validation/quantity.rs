//! Kubernetes resource quantities (`k8s.io/apimachinery/pkg/api/resource`), enough to compare
//! and sign-check them. Values are held in nano-units, rounded up as upstream rounds sub-nano
//! precision.

use std::cmp::Ordering;

/// A parsed quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    /// The value in units of 10^-9, rounded away from zero below that precision.
    pub nanos: i128,
    /// Whether the suffix was binary (`Ki`, `Mi`, ...).
    pub binary: bool,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Upstream's `ErrFormatWrong`.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// Upstream's `ErrSuffix`.
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit (upstream caps at about 2^63 of the largest scale).
    #[error("quantity is out of range")]
    Range,
}

impl Quantity {
    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
    /// Whether the value is a whole number.
    pub fn is_integer(&self) -> bool {
        self.nanos % 1_000_000_000 == 0
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// Parses a quantity such as `100m`, `1.5Gi`, `2e3` or `-1`.
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QuantityError::Format);
    }
    let (neg, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num.matches('.').count() > 1 || num == "." {
        return Err(QuantityError::Format);
    }
    if !suffix
        .chars()
        .all(|c| "eEinumkKMGTP+-0123456789".contains(c))
    {
        return Err(QuantityError::Format);
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let (base2, exp): (bool, i32) = match suffix {
        "" => (false, 0),
        "n" => (false, -9),
        "u" => (false, -6),
        "m" => (false, -3),
        "k" => (false, 3),
        "M" => (false, 6),
        "G" => (false, 9),
        "T" => (false, 12),
        "P" => (false, 15),
        "E" => (false, 18),
        "Ki" => (true, 10),
        "Mi" => (true, 20),
        "Gi" => (true, 30),
        "Ti" => (true, 40),
        "Pi" => (true, 50),
        "Ei" => (true, 60),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| QuantityError::Suffix)?;
            (false, e)
        }
        _ => return Err(QuantityError::Suffix),
    };
    // mantissa * 10^(exp10) with exp10 adjusted for the fraction digits; then scale to nanos.
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return Err(QuantityError::Range);
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::Range)?
    };
    let mut exp10 = -(frac_part.len() as i32) + 9;
    let mut value = mantissa;
    if base2 {
        value = value
            .checked_mul(1i128 << exp)
            .ok_or(QuantityError::Range)?;
    } else {
        exp10 += exp;
    }
    if exp10 >= 0 {
        for _ in 0..exp10 {
            value = value.checked_mul(10).ok_or(QuantityError::Range)?;
        }
    } else {
        let mut rem = false;
        for _ in 0..(-exp10) {
            rem |= value % 10 != 0;
            value /= 10;
            if value == 0 && !rem {
                break;
            }
        }
        if rem {
            value += 1;
        }
    }
    Ok(Quantity {
        nanos: if neg { -value } else { value },
        binary: base2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> i128 {
        parse_quantity(s).unwrap().nanos
    }

    #[test]
    fn parses_forms() {
        assert_eq!(n("1"), 1_000_000_000);
        assert_eq!(n("100m"), 100_000_000);
        assert_eq!(n("0.5"), 500_000_000);
        assert_eq!(n("1Ki"), 1024 * 1_000_000_000);
        assert_eq!(n("1.5Gi"), 1_610_612_736 * 1_000_000_000);
        assert_eq!(n("2e3"), 2_000 * 1_000_000_000);
        assert_eq!(n("1k"), n("1000"));
        assert_eq!(n("-1"), -1_000_000_000);
        assert_eq!(n("1n"), 1);
        assert_eq!(n("0.1n"), 1);
        assert!(parse_quantity("500m").unwrap() < parse_quantity("1").unwrap());
        assert!(parse_quantity("1").unwrap().is_integer());
    }

    #[test]
    fn rejects_bad() {
        assert_eq!(parse_quantity("abc"), Err(QuantityError::Format));
        assert_eq!(parse_quantity(""), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1Zi"), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1iK"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("1.2.3"), Err(QuantityError::Format));
    }
}
