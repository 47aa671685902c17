//! Cron schedules as CronJobs write them, parsed as upstream's (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) with `*`, `?`, ranges, steps,
//! lists and month and weekday names, or a descriptor (`@hourly`, `@daily`, `@every 90s`, ...).
//! The errors read as upstream's. [`Schedule::next`] finds the next time after an instant in a
//! time zone; day of month and day of week match either unless one of them starts with `*`.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every DURATION`: a fixed interval.
    Every(std::time::Duration),
}

/// The set of values each field matches, as bit sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Whether the day-of-month or day-of-week field starts with `*` (then both must match).
    day_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn number(s: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    let n: i64 = s.parse().map_err(|_| {
        format!("failed to parse int from {s}: strconv.Atoi: parsing \"{s}\": invalid syntax")
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {s}"));
    }
    u32::try_from(n).map_err(|_| format!("failed to parse int from {s}: value out of range"))
}

/// One field: comma-separated ranges; returns the bits and whether it starts with `*`/`?`.
fn field(expr: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in expr.split(',') {
        let (range, step) = match part.split('/').collect::<Vec<_>>()[..] {
            [r] => (r, None),
            [r, s] => (r, Some(s)),
            _ => return Err(format!("too many slashes: {part}")),
        };
        let ends: Vec<&str> = range.split('-').collect();
        let (start, mut end, is_star) = if ends[0] == "*" || ends[0] == "?" {
            (min, max, true)
        } else {
            let start = number(ends[0], names, base)?;
            match ends.len() {
                1 => (start, start, false),
                2 => (start, number(ends[1], names, base)?, false),
                _ => return Err(format!("too many hyphens: {range}")),
            }
        };
        let step = match step {
            None => 1,
            Some(s) => {
                let n = number(s, &[], 0)?;
                if ends.len() == 1 && !is_star {
                    end = max; // `N/step` means `N-max/step`.
                }
                n
            }
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
        if step == 0 {
            return Err(format!("step of range should be a positive number: {part}"));
        }
        star |= is_star && step == 1;
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

/// A Go duration (`90s`, `1h30m`, `500ms`).
fn go_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

impl Schedule {
    /// Parses a schedule (without `TZ=`; upstream refuses that in CronJobs).
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        if let Some(d) = spec.strip_prefix('@') {
            let five = match d {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    if let Some(every) = d.strip_prefix("every ") {
                        return go_duration(every.trim())
                            .map(|d| Schedule::Every(d.max(std::time::Duration::from_secs(1))))
                            .ok_or_else(|| format!("failed to parse duration {spec}: time: invalid duration \"{}\"", every.trim()));
                    }
                    return Err(format!("unrecognized descriptor: {spec}"));
                }
            };
            return Schedule::parse(five);
        }
        let f: Vec<&str> = spec.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                f.len(),
                f.join(" ")
            ));
        }
        let (minute, _) = field(f[0], 0, 59, &[], 0)?;
        let (hour, _) = field(f[1], 0, 23, &[], 0)?;
        let (dom, dom_star) = field(f[2], 1, 31, &[], 0)?;
        let (month, _) = field(f[3], 1, 12, &MONTHS, 1)?;
        let (dow, dow_star) = field(f[4], 0, 6, &DAYS, 0)?;
        Ok(Schedule::Fields(Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            day_star: dom_star || dow_star,
        }))
    }

    /// The first time strictly after `after` that the schedule fires in `tz` (None if none
    /// within five years).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let f = match self {
            Schedule::Every(d) => {
                let secs = d.as_secs().max(1) as i64;
                let next = after.as_second() - after.as_second().rem_euclid(1) + secs;
                return Timestamp::from_second(next).ok();
            }
            Schedule::Fields(f) => f,
        };
        let start = after.to_zoned(tz.clone()).datetime();
        let mut t = DateTime::new(
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
            0,
            0,
        )
        .ok()?
        .checked_add(1.minute())
        .ok()?;
        let limit = start.year() + 5;
        while t.year() <= limit {
            let bit = |set: u64, v: i8| set & (1u64 << v) != 0;
            if !bit(f.month, t.month()) {
                let first = DateTime::new(t.year(), t.month(), 1, 0, 0, 0, 0).ok()?;
                t = first.checked_add(1.month()).ok()?;
                continue;
            }
            let dom_ok = bit(f.dom, t.day());
            let dow_ok = bit(f.dow, t.weekday().to_sunday_zero_offset());
            let day_ok = if f.day_star {
                dom_ok && dow_ok
            } else {
                dom_ok || dow_ok
            };
            if !day_ok {
                t = DateTime::new(t.year(), t.month(), t.day(), 0, 0, 0, 0)
                    .ok()?
                    .checked_add(1.day())
                    .ok()?;
                continue;
            }
            if !bit(f.hour, t.hour()) {
                t = DateTime::new(t.year(), t.month(), t.day(), t.hour(), 0, 0, 0)
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !bit(f.minute, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn errors_read_as_upstream() {
        assert_eq!(
            Schedule::parse("* * *").unwrap_err(),
            "expected exactly 5 fields, found 3: [* * *]"
        );
        assert_eq!(
            Schedule::parse("61 * * * *").unwrap_err(),
            "end of range (61) above maximum (59): 61"
        );
        assert_eq!(
            Schedule::parse("5-2 * * * *").unwrap_err(),
            "beginning of range (5) beyond end of range (2): 5-2"
        );
        assert_eq!(
            Schedule::parse("@often").unwrap_err(),
            "unrecognized descriptor: @often"
        );
        assert!(Schedule::parse("x * * * *")
            .unwrap_err()
            .starts_with("failed to parse int from x"));
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(Schedule::parse("0 0 * JAN-mar mon-fri").is_ok());
        assert!(Schedule::parse("@every 90s").is_ok());
    }

    #[test]
    fn next_times_follow_the_fields() {
        let utc = TimeZone::UTC;
        let s = Schedule::parse("*/15 * * * *").expect("parse");
        assert_eq!(
            s.next(at("2026-11-30T10:07:30Z"), &utc),
            Some(at("2026-11-30T10:15:00Z"))
        );
        assert_eq!(
            s.next(at("2026-11-30T10:15:00Z"), &utc),
            Some(at("2026-11-30T10:30:00Z"))
        );
        // Day of month OR day of week when neither is `*`: the 1st or a Monday.
        let s = Schedule::parse("0 9 1 * mon").expect("parse");
        assert_eq!(
            s.next(at("2026-11-30T10:00:00Z"), &utc),
            Some(at("2026-12-01T09:00:00Z"))
        );
        assert_eq!(
            s.next(at("2026-12-01T09:00:00Z"), &utc),
            Some(at("2026-12-07T09:00:00Z"))
        );
        let s = Schedule::parse("@yearly").expect("parse");
        assert_eq!(
            s.next(at("2026-11-30T10:00:00Z"), &utc),
            Some(at("2027-01-01T00:00:00Z"))
        );
        let s = Schedule::parse("0 0 30 2 *").expect("parse");
        assert_eq!(s.next(at("2026-11-30T10:00:00Z"), &utc), None);
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let tz = TimeZone::get("Asia/Tokyo").expect("tokyo");
        let s = Schedule::parse("0 9 * * *").expect("parse");
        // 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            s.next(at("2026-11-30T10:00:00Z"), &tz),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }
}
