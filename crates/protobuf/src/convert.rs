//! JSON forms of the apimachinery types that marshal themselves (Time, MicroTime, Duration).

use chrono::{DateTime, SecondsFormat, Utc};

/// `metav1.Time`: RFC 3339 in UTC with whole seconds, as Go's `Time.MarshalJSON`.
pub(crate) fn format_time(seconds: i64) -> Option<String> {
    let t = DateTime::<Utc>::from_timestamp(seconds, 0)?;
    Some(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits.
pub(crate) fn format_micro_time(seconds: i64, nanos: i32) -> Option<String> {
    let nanos = u32::try_from(nanos).ok()?;
    let t = DateTime::<Utc>::from_timestamp(seconds, nanos - nanos % 1000)?;
    Some(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// Parses an RFC 3339 timestamp into (seconds, nanoseconds) since the epoch.
pub(crate) fn parse_time(s: &str) -> Option<(i64, i32)> {
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos() as i32))
}

/// Go's `time.Duration.String()` (`1h0m0s`, `1.5s`, `300ms`, `0s`).
pub(crate) fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (unit, div) = match u {
            0..=999 => ("ns", 1),
            1_000..=999_999 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        format!("{}{unit}", with_fraction(u, div))
    } else {
        let total = u / 1_000_000_000;
        let mut s = format!("{}s", with_fraction(u % 60_000_000_000, 1_000_000_000));
        if total >= 60 {
            s = format!("{}m{s}", (total / 60) % 60);
        }
        if total >= 3600 {
            s = format!("{}h{s}", total / 3600);
        }
        s
    };
    format!("{sign}{body}")
}

fn with_fraction(v: u64, div: u64) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = div.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Go's `time.ParseDuration`.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut value = whole.checked_mul(scale)?;
        let mut place = scale;
        for d in frac.bytes() {
            place /= 10;
            value += i128::from(d - b'0') * place;
        }
        total = total.checked_add(value)?;
        rest = tail;
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(300_000_000), "300ms");
        assert_eq!(format_duration(1_500), "1.5µs");
        assert_eq!(format_duration(-2_000_000_000), "-2s");
        for s in ["1h0m0s", "1m30s", "1.5s", "300ms", "1.5µs", "-2s", "7ns"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("1x"), None);
    }

    #[test]
    fn times_print_like_go() {
        assert_eq!(
            format_time(1_704_164_645).as_deref(),
            Some("2024-01-02T03:04:05Z")
        );
        assert_eq!(
            format_micro_time(1_704_164_645, 123_456_789).as_deref(),
            Some("2024-01-02T03:04:05.123456Z")
        );
        assert_eq!(
            format_micro_time(1_704_164_645, 0).as_deref(),
            Some("2024-01-02T03:04:05.000000Z")
        );
        assert_eq!(
            parse_time("2024-01-02T04:04:05+01:00"),
            Some((1_704_164_645, 0))
        );
    }
}
