//! Standard cron schedules as upstream parses them (robfig/cron's ParseStandard): five
//! fields (minute, hour, day of month, month, day of week) with `*`, `?`, lists, ranges,
//! steps and month/day names, and the `@yearly`, `@monthly`, `@weekly`, `@daily`,
//! `@hourly` descriptors. `@every` is not supported.

use jiff::civil::DateTime;
use jiff::{Timestamp, ToSpan};

/// A time zone schedules are evaluated in (`spec.timeZone`, UTC when unset).
#[derive(Debug, Clone)]
pub struct TimeZone(jiff::tz::TimeZone);

impl TimeZone {
    /// The zone named `name` from the system tz database; UTC for `None`.
    pub fn get(name: Option<&str>) -> Result<TimeZone, String> {
        match name {
            None => Ok(TimeZone(jiff::tz::TimeZone::UTC)),
            Some(n) => jiff::tz::TimeZone::get(n)
                .map(TimeZone)
                .map_err(|e| format!("unknown time zone {n}: {e}")),
        }
    }

    /// `t` in RFC 3339 with this zone's offset (Go's time.RFC3339).
    pub fn format_rfc3339(&self, t: Timestamp) -> String {
        let z = t.to_zoned(self.0.clone());
        if z.offset().seconds() == 0 {
            z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        }
    }
}

const STAR: u64 = 1 << 63;

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + offset);
    }
    s.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {s}"))
}

/// Parses one field into a bit set over `min..=max` (bit 63: the field was `*` or `?`).
fn parse_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                Some(
                    s.parse::<u32>()
                        .map_err(|_| format!("failed to parse int from {s}"))?,
                ),
            ),
            None => (part, None),
        };
        let (mut start, mut end, mut extra) = if range == "*" || range == "?" {
            (min, max, STAR)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, names, offset)?,
                parse_value(b, names, offset)?,
                0,
            )
        } else {
            let v = parse_value(range, names, offset)?;
            (v, v, 0)
        };
        let step = match step {
            Some(0) => return Err(format!("step of range should be a positive number: {part}")),
            Some(s) => {
                // "N/step" means "N-max/step".
                if !range.contains('-') && range != "*" && range != "?" {
                    end = max;
                }
                if s > 1 {
                    extra = 0;
                }
                s
            }
            None => 1,
        };
        if start < min {
            return Err(format!(
                "beginning of range ({start}) below minimum ({min}): {part}"
            ));
        }
        if end > max {
            return Err(format!(
                "end of range ({end}) above maximum ({max}): {part}"
            ));
        }
        if start > end {
            return Err(format!(
                "beginning of range ({start}) beyond end of range ({end}): {part}"
            ));
        }
        while start <= end {
            bits |= 1 << start;
            start += step;
        }
        bits |= extra;
    }
    Ok(bits)
}

impl Schedule {
    /// Parses a standard five-field schedule or a descriptor.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(format!("unrecognized descriptor: {s}")),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        Ok(Schedule {
            minute: parse_field(fields[0], 0, 59, &[], 0)?,
            hour: parse_field(fields[1], 0, 23, &[], 0)?,
            dom: parse_field(fields[2], 1, 31, &[], 0)?,
            month: parse_field(fields[3], 1, 12, &MONTHS, 1)?,
            dow: parse_field(fields[4], 0, 6, &DAYS, 0)?,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom & (1 << dt.day()) != 0;
        let dow = self.dow & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        // Both restricted: either matches (cron's OR rule); otherwise both must.
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, evaluated in `tz`; `None` when
    /// nothing matches within five years (e.g. `0 0 30 2 *`).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = after.to_zoned(tz.0.clone());
        let start = z.datetime();
        let mut dt = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        while dt < limit {
            if self.month & (1 << dt.month()) == 0 {
                dt = dt
                    .first_of_month()
                    .start_of_day()
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.start_of_day().checked_add(1.day()).ok()?;
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = tz.0.to_ambiguous_timestamp(dt).compatible().ok()?;
            if ts > after {
                return Some(ts);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}
