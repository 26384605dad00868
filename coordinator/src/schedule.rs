//! EventBridge schedule expressions and when they fire (pure: no clock, no
//! I/O; every function takes the time it reasons about).
//!
//! - `rate(N minute|minutes|hour|hours|day|days)`: every N units, counted from
//!   the rule's anchor (the second its schedule was created, changed or
//!   re-enabled): slots `anchor + k*N` for `k >= 1`. As EventBridge requires,
//!   N = 1 takes the singular unit and N > 1 the plural.
//! - `cron(minutes hours day-of-month month day-of-week year)`: EventBridge's
//!   six fields, always UTC, fired at second 0 of each matching minute after
//!   the anchor. Supported: `*`, `?`, lists `,`, ranges `-` (wrapping, e.g.
//!   `FRI-MON`), steps `/` (`*/5`, `10/15`, `1-20/3`), month names
//!   `JAN`-`DEC`, weekday names `SUN`-`SAT` (1 = Sunday), day-of-month `L`
//!   (last day), `LW` (last weekday), `nW` (weekday nearest the n-th, never
//!   leaving the month), day-of-week `L` (Saturday), `nL` (last weekday n of
//!   the month) and `n#k` (k-th weekday n). Exactly one of day-of-month and
//!   day-of-week is `?`, as EventBridge demands. Not supported: `L-n`
//!   offsets, and `L`/`W`/`#` inside lists. Years run 1970-2199.
//!
//! The catch-up rule ([`due`]): after any pause (a coordinator restart, a
//! slow tick) a rule fires once for the LATEST slot it missed, never once per
//! missed slot; recording that slot consumes every earlier one.

use time::{Date, Month, OffsetDateTime};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expected rate(...) or cron(...)")]
    Syntax,
    #[error("rate: {0}")]
    Rate(&'static str),
    #[error("cron needs 6 fields (minutes hours day-of-month month day-of-week year), got {0}")]
    FieldCount(usize),
    #[error("cron {field}: {reason}: {text}")]
    Field {
        field: &'static str,
        reason: &'static str,
        text: String,
    },
    #[error("cron: exactly one of day-of-month and day-of-week must be '?'")]
    DayFields,
}

/// Last year a cron expression may name (EventBridge's range is 1970-2199).
pub const MAX_YEAR: i32 = 2199;
const MIN_YEAR: i32 = 1970;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `seconds`, counted from the anchor.
    Rate {
        seconds: i64,
    },
    Cron(Box<Cron>),
}

/// A cron expression as sets of allowed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    months: u16,
    days: DaySpec,
    /// Allowed years, indexed from 1970.
    years: Vec<bool>,
}

/// Which days of a month match: by day of month or by day of week.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DaySpec {
    /// Day-of-month bit set (bits 1..=31).
    MonthDays(u32),
    /// `L`: the last day of the month.
    LastDay,
    /// `LW`: the last weekday (Mon-Fri) of the month.
    LastWeekday,
    /// `nW`: the weekday nearest day n, within the month.
    NearestWeekday(u32),
    /// Day-of-week bit set (bits 1..=7, 1 = Sunday).
    WeekDays(u8),
    /// `nL`: the last weekday n of the month.
    LastOfWeekday(u8),
    /// `n#k`: the k-th weekday n of the month.
    NthWeekday(u8, u32),
}

impl Schedule {
    /// Parses `rate(...)` or `cron(...)`.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let expr = expr.trim();
        if let Some(body) = expr.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
            return parse_rate(body);
        }
        if let Some(body) = expr.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
            return Cron::parse(body).map(|c| Schedule::Cron(Box::new(c)));
        }
        Err(ScheduleError::Syntax)
    }

    /// The first slot strictly after `t` (epoch seconds) of a schedule
    /// anchored at `anchor`; slots never precede or equal the anchor.
    /// `None` when there is none (a cron whose years have passed).
    pub fn next_after(&self, anchor: i64, t: i64) -> Option<i64> {
        let t = t.max(anchor);
        match self {
            Schedule::Rate { seconds } => {
                let k = (t - anchor).div_euclid(*seconds) + 1;
                anchor.checked_add(k.checked_mul(*seconds)?)
            }
            Schedule::Cron(c) => c.next_after(t),
        }
    }

    /// The latest slot `s` with `after < s <= t` (and `s > anchor`).
    pub fn latest_in(&self, anchor: i64, after: i64, t: i64) -> Option<i64> {
        let after = after.max(anchor);
        if t <= after {
            return None;
        }
        match self {
            Schedule::Rate { seconds } => {
                let k = (t - anchor).div_euclid(*seconds);
                let s = anchor.checked_add(k.checked_mul(*seconds)?)?;
                (k >= 1 && s > after).then_some(s)
            }
            Schedule::Cron(c) => {
                // Cheap existence check first, so the backward walk below
                // is bounded by a slot that is known to exist.
                let first = c.next_after(after)?;
                if first > t {
                    return None;
                }
                c.latest_at_or_before(t, first)
            }
        }
    }
}

/// The slot a rule must fire for at `now`, if any: the latest slot after both
/// its anchor and the last slot it fired for. However many slots were missed,
/// this is one slot, so a rule fires once after downtime.
pub fn due(schedule: &Schedule, anchor: i64, last_slot: Option<i64>, now: i64) -> Option<i64> {
    let after = last_slot.map_or(anchor, |l| l.max(anchor));
    schedule.latest_in(anchor, after, now)
}

fn parse_rate(body: &str) -> Result<Schedule, ScheduleError> {
    let mut parts = body.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ScheduleError::Rate("expected 'value unit'"));
    };
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScheduleError::Rate("the value must be a positive integer"));
    }
    let n: i64 = n
        .parse()
        .map_err(|_| ScheduleError::Rate("the value is too large"))?;
    if n < 1 {
        return Err(ScheduleError::Rate("the value must be a positive integer"));
    }
    let (unit_secs, singular) = match unit {
        "minute" => (60, true),
        "minutes" => (60, false),
        "hour" => (3600, true),
        "hours" => (3600, false),
        "day" => (86400, true),
        "days" => (86400, false),
        _ => {
            return Err(ScheduleError::Rate(
                "the unit must be minute(s), hour(s) or day(s)",
            ))
        }
    };
    if singular != (n == 1) {
        return Err(ScheduleError::Rate(
            "a value of 1 takes a singular unit, larger values a plural one",
        ));
    }
    let seconds = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= 100 * 365 * 86400)
        .ok_or(ScheduleError::Rate("the value is too large"))?;
    Ok(Schedule::Rate { seconds })
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's name, range and value names.
struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: FieldDef = FieldDef {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: FieldDef = FieldDef {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldDef = FieldDef {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: FieldDef = FieldDef {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
};
const DOW: FieldDef = FieldDef {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &DAY_NAMES,
};
const YEARS: FieldDef = FieldDef {
    name: "year",
    min: MIN_YEAR as u32,
    max: MAX_YEAR as u32,
    names: &[],
};

impl FieldDef {
    fn err(&self, reason: &'static str, text: &str) -> ScheduleError {
        ScheduleError::Field {
            field: self.name,
            reason,
            text: text.to_string(),
        }
    }

    fn value(&self, text: &str) -> Result<u32, ScheduleError> {
        let upper = text.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.min + i as u32);
        }
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err("not a value", text));
        }
        let v: u32 = text.parse().map_err(|_| self.err("out of range", text))?;
        if v < self.min || v > self.max {
            return Err(self.err("out of range", text));
        }
        Ok(v)
    }

    /// The values a plain field (`*`, lists, ranges, steps) allows.
    fn values(&self, text: &str) -> Result<Vec<u32>, ScheduleError> {
        let mut out = Vec::new();
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|s| *s >= 1)
                        .ok_or_else(|| self.err("bad step", item))?;
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(a)?, self.value(b)?)
            } else {
                let v = self.value(range)?;
                // `a/n` runs from a to the end of the range.
                (
                    v,
                    if step > 1 || item.contains('/') {
                        self.max
                    } else {
                        v
                    },
                )
            };
            // A range may wrap (FRI-MON, 22-2): walk it modulo the field.
            let span = self.max - self.min + 1;
            let len = if hi >= lo { hi - lo } else { hi + span - lo };
            let mut k = 0;
            while k <= len {
                out.push(self.min + (lo - self.min + k) % span);
                k += step;
            }
        }
        Ok(out)
    }
}

fn bits(values: &[u32]) -> u64 {
    values.iter().fold(0u64, |acc, v| acc | (1u64 << v))
}

impl Cron {
    /// Parses the six fields inside `cron(...)`.
    pub fn parse(body: &str) -> Result<Cron, ScheduleError> {
        let fields: Vec<&str> = body.split_whitespace().collect();
        let [min, hour, dom, month, dow, year] = fields[..] else {
            return Err(ScheduleError::FieldCount(fields.len()));
        };
        if min == "?" || hour == "?" || month == "?" || year == "?" {
            return Err(ScheduleError::Field {
                field: "fields",
                reason: "'?' is only allowed in day-of-month or day-of-week",
                text: body.to_string(),
            });
        }
        let days = match (dom == "?", dow == "?") {
            (true, false) => parse_dow(dow)?,
            (false, true) => parse_dom(dom)?,
            _ => return Err(ScheduleError::DayFields),
        };
        let mut years = vec![false; (MAX_YEAR - MIN_YEAR + 1) as usize];
        for y in YEARS.values(year)? {
            years[(y - YEARS.min) as usize] = true;
        }
        Ok(Cron {
            minutes: bits(&MINUTES.values(min)?),
            hours: bits(&HOURS.values(hour)?) as u32,
            months: bits(&MONTHS.values(month)?) as u16,
            days,
            years,
        })
    }

    fn year_ok(&self, y: i32) -> bool {
        (MIN_YEAR..=MAX_YEAR).contains(&y) && self.years[(y - MIN_YEAR) as usize]
    }

    fn month_ok(&self, m: Month) -> bool {
        self.months & (1 << (m as u8)) != 0
    }

    fn day_ok(&self, d: Date) -> bool {
        let day = u32::from(d.day());
        let last = u32::from(d.month().length(d.year()));
        let wd = d.weekday().number_from_sunday();
        match &self.days {
            DaySpec::MonthDays(b) => b & (1 << day) != 0,
            DaySpec::LastDay => day == last,
            DaySpec::LastWeekday => day == nearest_weekday(d, last, last),
            DaySpec::NearestWeekday(n) => *n <= last && day == nearest_weekday(d, *n, last),
            DaySpec::WeekDays(b) => b & (1 << wd) != 0,
            DaySpec::LastOfWeekday(n) => wd == *n && day + 7 > last,
            DaySpec::NthWeekday(n, k) => wd == *n && (day - 1) / 7 + 1 == *k,
        }
    }

    /// The first minute of (hour, minute) at or after `from` in a day.
    fn first_time_from(&self, from: (u32, u32)) -> Option<(u32, u32)> {
        (from.0..24)
            .filter(|h| self.hours & (1 << h) != 0)
            .find_map(|h| {
                let start = if h == from.0 { from.1 } else { 0 };
                (start..60)
                    .find(|m| self.minutes & (1 << m) != 0)
                    .map(|m| (h, m))
            })
    }

    /// The last (hour, minute) at or before `to` in a day.
    fn last_time_to(&self, to: (u32, u32)) -> Option<(u32, u32)> {
        (0..=to.0)
            .rev()
            .filter(|h| self.hours & (1 << h) != 0)
            .find_map(|h| {
                let end = if h == to.0 { to.1 } else { 59 };
                (0..=end)
                    .rev()
                    .find(|m| self.minutes & (1 << m) != 0)
                    .map(|m| (h, m))
            })
    }

    /// The first matching minute strictly after `t`.
    fn next_after(&self, t: i64) -> Option<i64> {
        let start = t.div_euclid(60).checked_add(1)?.checked_mul(60)?;
        let dt = OffsetDateTime::from_unix_timestamp(start).ok()?;
        let mut date = dt.date();
        let mut from = (u32::from(dt.hour()), u32::from(dt.minute()));
        loop {
            if date.year() > MAX_YEAR {
                return None;
            }
            if !self.year_ok(date.year()) {
                date = Date::from_calendar_date(date.year() + 1, Month::January, 1).ok()?;
                from = (0, 0);
                continue;
            }
            if !self.month_ok(date.month()) {
                date = first_of_next_month(date)?;
                from = (0, 0);
                continue;
            }
            if self.day_ok(date) {
                if let Some((h, m)) = self.first_time_from(from) {
                    return Some(at(date, h, m));
                }
            }
            date = date.next_day()?;
            from = (0, 0);
        }
    }

    /// The last matching minute at or before `t`, not earlier than `floor`
    /// (a slot known to exist, which bounds the walk).
    fn latest_at_or_before(&self, t: i64, floor: i64) -> Option<i64> {
        let dt = OffsetDateTime::from_unix_timestamp(t).ok()?;
        let mut date = dt.date();
        let mut to = (u32::from(dt.hour()), u32::from(dt.minute()));
        loop {
            let day_end = at(date, 23, 59);
            if day_end < floor {
                return None;
            }
            if !self.year_ok(date.year()) {
                date = Date::from_calendar_date(date.year() - 1, Month::December, 31).ok()?;
                to = (23, 59);
                continue;
            }
            if !self.month_ok(date.month()) {
                date = Date::from_calendar_date(date.year(), date.month(), 1)
                    .ok()?
                    .previous_day()?;
                to = (23, 59);
                continue;
            }
            if self.day_ok(date) {
                if let Some((h, m)) = self.last_time_to(to) {
                    let s = at(date, h, m);
                    return (s >= floor).then_some(s);
                }
            }
            date = date.previous_day()?;
            to = (23, 59);
        }
    }
}

fn at(date: Date, h: u32, m: u32) -> i64 {
    date.midnight().assume_utc().unix_timestamp() + i64::from(h) * 3600 + i64::from(m) * 60
}

fn first_of_next_month(d: Date) -> Option<Date> {
    let (y, m) = if d.month() == Month::December {
        (d.year() + 1, Month::January)
    } else {
        (d.year(), d.month().next())
    };
    Date::from_calendar_date(y, m, 1).ok()
}

/// The weekday nearest day `n` of `d`'s month (Saturday → Friday, Sunday →
/// Monday), without leaving the month.
fn nearest_weekday(d: Date, n: u32, last: u32) -> u32 {
    let Ok(target) = Date::from_calendar_date(d.year(), d.month(), n as u8) else {
        return 0;
    };
    match target.weekday().number_from_sunday() {
        7 if n == 1 => 3,        // Saturday the 1st → Monday the 3rd
        7 => n - 1,              // Saturday → Friday
        1 if n == last => n - 2, // Sunday the last → Friday
        1 => n + 1,              // Sunday → Monday
        _ => n,
    }
}

fn parse_dom(text: &str) -> Result<DaySpec, ScheduleError> {
    match text {
        "L" => return Ok(DaySpec::LastDay),
        "LW" => return Ok(DaySpec::LastWeekday),
        _ => {}
    }
    if let Some(n) = text.strip_suffix('W') {
        return Ok(DaySpec::NearestWeekday(DOM.value(n)?));
    }
    if text.contains('L') || text.contains('W') {
        return Err(DOM.err("L and W are only supported alone (L, LW, nW)", text));
    }
    Ok(DaySpec::MonthDays(bits(&DOM.values(text)?) as u32))
}

fn parse_dow(text: &str) -> Result<DaySpec, ScheduleError> {
    if text == "L" {
        return Ok(DaySpec::WeekDays(1 << 7));
    }
    if let Some((n, k)) = text.split_once('#') {
        let k: u32 = k
            .parse()
            .ok()
            .filter(|k| (1..=5).contains(k))
            .ok_or_else(|| DOW.err("the week after # must be 1-5", text))?;
        return Ok(DaySpec::NthWeekday(DOW.value(n)? as u8, k));
    }
    if let Some(n) = text.strip_suffix('L') {
        return Ok(DaySpec::LastOfWeekday(DOW.value(n)? as u8));
    }
    if text.contains('L') || text.contains('#') {
        return Err(DOW.err("L and # are only supported alone (L, nL, n#k)", text));
    }
    Ok(DaySpec::WeekDays(bits(&DOW.values(text)?) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn ts(s: &str) -> i64 {
        OffsetDateTime::parse(s, &Rfc3339).unwrap().unix_timestamp()
    }

    fn fmt(t: i64) -> String {
        OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    }

    #[test]
    fn parse_table() {
        // (expression, accepted)
        let table: &[(&str, bool)] = &[
            ("rate(1 minute)", true),
            ("rate(5 minutes)", true),
            ("rate(1 hour)", true),
            ("rate(12 hours)", true),
            ("rate(1 day)", true),
            ("rate(7 days)", true),
            ("rate(1 minutes)", false),
            ("rate(5 minute)", false),
            ("rate(0 minutes)", false),
            ("rate(-1 minutes)", false),
            ("rate(1.5 minutes)", false),
            ("rate(5 seconds)", false),
            ("rate(5)", false),
            ("rate(99999999999999999999 days)", false),
            ("rate(5 minutes", false),
            ("every 5 minutes", false),
            ("", false),
            ("cron(0 12 * * ? *)", true),
            ("cron(15 10 ? * 6L 2022-2199)", true),
            ("cron(0 18 ? * MON-FRI *)", true),
            ("cron(0 8 1 * ? *)", true),
            ("cron(0/15 * * * ? *)", true),
            ("cron(0/10 * ? * MON-FRI *)", true),
            ("cron(0/5 8-17 ? * MON-FRI *)", true),
            ("cron(0 9 ? * 2#1 *)", true),
            ("cron(0 0 L * ? *)", true),
            ("cron(0 0 LW * ? *)", true),
            ("cron(0 0 15W * ? *)", true),
            ("cron(0 0 ? * L *)", true),
            ("cron(0 22-2 ? * FRI-MON *)", true),
            ("cron(0,30 1,13 1,15 JAN,jul ? 2030)", true),
            ("cron(0 12 * * * *)", false),
            ("cron(0 12 ? * ? *)", false),
            ("cron(0 12 * *)", false),
            ("cron(0 12 * * ? * *)", false),
            ("cron(60 12 * * ? *)", false),
            ("cron(0 24 * * ? *)", false),
            ("cron(0 0 32 * ? *)", false),
            ("cron(0 0 0 * ? *)", false),
            ("cron(0 0 ? 13 MON *)", false),
            ("cron(0 0 ? * 8 *)", false),
            ("cron(0 0 ? * 2#6 *)", false),
            ("cron(0 0 ? * FOO *)", false),
            ("cron(0 0 1 * ? 1969)", false),
            ("cron(0 0 1 * ? 2200)", false),
            ("cron(*/0 * * * ? *)", false),
            ("cron(? 0 1 * ? *)", false),
            ("cron(0 0 1,L * ? *)", false),
            ("cron(0 0 L-3 * ? *)", false),
        ];
        for (expr, ok) in table {
            assert_eq!(
                Schedule::parse(expr).is_ok(),
                *ok,
                "{expr}: {:?}",
                Schedule::parse(expr)
            );
        }
    }

    #[test]
    fn next_after_table() {
        // (expression, anchor, after, expected next slot)
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:01:30Z",
            ),
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:01:30Z",
                "2026-01-01T00:02:30Z",
            ),
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:05:30Z",
            ),
            (
                "rate(5 minutes)",
                "2026-01-01T00:00:00Z",
                "2025-12-31T00:00:00Z",
                "2026-01-01T00:05:00Z",
            ),
            (
                "rate(2 hours)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T03:00:00Z",
                "2026-01-01T04:00:00Z",
            ),
            (
                "rate(1 day)",
                "2026-01-01T10:00:00Z",
                "2026-01-01T10:00:00Z",
                "2026-01-02T10:00:00Z",
            ),
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-01T12:00:00Z",
            ),
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T12:00:00Z",
                "2026-01-02T12:00:00Z",
            ),
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T11:59:59Z",
                "2026-01-01T12:00:00Z",
            ),
            (
                "cron(* * * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
            ),
            (
                "cron(* * * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:01:00Z",
            ),
            (
                "cron(0/15 * * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:16:00Z",
                "2026-01-01T00:30:00Z",
            ),
            (
                "cron(10/20 * * * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:51:00Z",
                "2026-01-01T01:10:00Z",
            ),
            // 2026-01-01 is a Thursday.
            (
                "cron(0 18 ? * MON-FRI *)",
                "2026-01-01T00:00:00Z",
                "2026-01-02T18:00:00Z",
                "2026-01-05T18:00:00Z",
            ),
            (
                "cron(0 9 ? * 2#1 *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-05T09:00:00Z",
            ),
            (
                "cron(0 9 ? * 2#1 *)",
                "2026-01-01T00:00:00Z",
                "2026-01-05T09:00:00Z",
                "2026-02-02T09:00:00Z",
            ),
            (
                "cron(15 10 ? * 6L *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-30T10:15:00Z",
            ),
            (
                "cron(0 0 L * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-31T00:00:00Z",
                "2026-02-28T00:00:00Z",
            ),
            (
                "cron(0 0 L 2 ? *)",
                "2026-01-01T00:00:00Z",
                "2027-03-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
            // 2026-05-31 is a Sunday: the last weekday is Friday the 29th.
            (
                "cron(0 0 LW 5 ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-05-29T00:00:00Z",
            ),
            // 2026-08-15 is a Saturday → Friday the 14th; 2026-11-15 a Sunday → Monday the 16th.
            (
                "cron(0 0 15W 8,11 ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-08-14T00:00:00Z",
            ),
            (
                "cron(0 0 15W 8,11 ? *)",
                "2026-01-01T00:00:00Z",
                "2026-08-14T00:00:00Z",
                "2026-11-16T00:00:00Z",
            ),
            // 2026-08-01 is a Saturday: 1W is Monday the 3rd, not July 31st.
            (
                "cron(0 0 1W 8 ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-08-03T00:00:00Z",
            ),
            // Saturday (dow L) after Thursday 2026-01-01.
            (
                "cron(30 6 ? * L *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-03T06:30:00Z",
            ),
            // Wrapping ranges: 22:00 Friday, then 0:00 Saturday.
            (
                "cron(0 22-0 ? * FRI *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
            ),
            (
                "cron(0 22-0 ? * FRI *)",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
                "2026-01-02T22:00:00Z",
            ),
            (
                "cron(0 0 1 DEC-JAN ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-12-01T00:00:00Z",
            ),
            (
                "cron(0 0 1 1 ? 2030,2040)",
                "2026-01-01T00:00:00Z",
                "2030-01-01T00:00:00Z",
                "2040-01-01T00:00:00Z",
            ),
            (
                "cron(0 0 31 * ? *)",
                "2026-01-01T00:00:00Z",
                "2026-01-31T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ),
            // A slot never precedes the anchor.
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T13:00:00Z",
                "2025-01-01T00:00:00Z",
                "2026-01-02T12:00:00Z",
            ),
        ];
        for (expr, anchor, after, want) in table {
            let s = Schedule::parse(expr).unwrap();
            let got = s.next_after(ts(anchor), ts(after)).map(fmt);
            assert_eq!(got.as_deref(), Some(*want), "{expr} after {after}");
        }
        // Years that have all passed: nothing more.
        let past = Schedule::parse("cron(0 0 1 1 ? 2020)").unwrap();
        assert_eq!(past.next_after(0, ts("2026-01-01T00:00:00Z")), None);
        // Day 31 in a 30-day month only with W: never fires there.
        let w = Schedule::parse("cron(0 0 31W 4 ? *)").unwrap();
        assert_eq!(w.next_after(0, ts("2026-01-01T00:00:00Z")), None);
    }

    /// (expression, anchor, last fired slot, now, expected due slot)
    type DueRow = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static str,
        Option<&'static str>,
    );

    /// The catch-up rule: however many slots passed, one firing, for the
    /// latest of them; none when the latest was already fired.
    #[test]
    fn due_table() {
        let table: &[DueRow] = &[
            // Not yet the first slot.
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                None,
                "2026-01-01T00:01:29Z",
                None,
            ),
            // Exactly on the first slot.
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                None,
                "2026-01-01T00:01:30Z",
                Some("2026-01-01T00:01:30Z"),
            ),
            // First slot already fired; the second not yet due.
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                Some("2026-01-01T00:01:30Z"),
                "2026-01-01T00:02:00Z",
                None,
            ),
            // Down for ten minutes: one firing, for the latest missed slot.
            (
                "rate(1 minute)",
                "2026-01-01T00:00:30Z",
                Some("2026-01-01T00:01:30Z"),
                "2026-01-01T00:11:45Z",
                Some("2026-01-01T00:11:30Z"),
            ),
            // Never fired, down for a day.
            (
                "rate(5 minutes)",
                "2026-01-01T00:00:00Z",
                None,
                "2026-01-02T00:02:00Z",
                Some("2026-01-02T00:00:00Z"),
            ),
            // That catch-up slot recorded: nothing more until the next slot.
            (
                "rate(5 minutes)",
                "2026-01-01T00:00:00Z",
                Some("2026-01-02T00:00:00Z"),
                "2026-01-02T00:04:59Z",
                None,
            ),
            (
                "rate(5 minutes)",
                "2026-01-01T00:00:00Z",
                Some("2026-01-02T00:00:00Z"),
                "2026-01-02T00:05:00Z",
                Some("2026-01-02T00:05:00Z"),
            ),
            // Cron: missed three daily slots → the last of them.
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T12:00:00Z"),
                "2026-01-04T13:00:00Z",
                Some("2026-01-04T12:00:00Z"),
            ),
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T00:00:00Z",
                Some("2026-01-04T12:00:00Z"),
                "2026-01-04T13:00:00Z",
                None,
            ),
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T00:00:00Z",
                None,
                "2026-01-01T11:59:59Z",
                None,
            ),
            (
                "cron(* * * * ? *)",
                "2026-01-01T00:00:10Z",
                None,
                "2026-01-01T00:00:59Z",
                None,
            ),
            (
                "cron(* * * * ? *)",
                "2026-01-01T00:00:10Z",
                None,
                "2026-01-01T00:01:00Z",
                Some("2026-01-01T00:01:00Z"),
            ),
            // A slot at the anchor itself does not fire (the schedule starts after it).
            (
                "cron(0 12 * * ? *)",
                "2026-01-01T12:00:00Z",
                None,
                "2026-01-01T12:00:30Z",
                None,
            ),
            // A monthly 2#1 slot missed over months: the latest one.
            (
                "cron(0 9 ? * 2#1 *)",
                "2026-01-01T00:00:00Z",
                None,
                "2026-04-20T00:00:00Z",
                Some("2026-04-06T09:00:00Z"),
            ),
            // A cron whose only slot is in the past, before the anchor: never.
            (
                "cron(0 0 1 1 ? 2020)",
                "2026-01-01T00:00:00Z",
                None,
                "2027-01-01T00:00:00Z",
                None,
            ),
            // The only slot of a one-off cron, missed during downtime: once.
            (
                "cron(0 0 1 6 ? 2026)",
                "2026-01-01T00:00:00Z",
                None,
                "2027-01-01T00:00:00Z",
                Some("2026-06-01T00:00:00Z"),
            ),
            (
                "cron(0 0 1 6 ? 2026)",
                "2026-01-01T00:00:00Z",
                Some("2026-06-01T00:00:00Z"),
                "2027-01-01T00:00:00Z",
                None,
            ),
        ];
        for (expr, anchor, last, now, want) in table {
            let s = Schedule::parse(expr).unwrap();
            let got = due(&s, ts(anchor), last.map(ts), ts(now)).map(fmt);
            assert_eq!(
                got.as_deref(),
                *want,
                "{expr} anchor {anchor} last {last:?} now {now}"
            );
        }
    }

    /// `latest_in` agrees with stepping `next_after` forward, on random-ish
    /// windows over a few cron shapes.
    #[test]
    fn latest_in_matches_forward_walk() {
        let exprs = [
            "cron(0/7 */5 * * ? *)",
            "cron(13 2 ? * 3L *)",
            "cron(0 0 LW * ? *)",
            "cron(5 4 ? * 1#2 *)",
            "rate(17 minutes)",
        ];
        let anchor = ts("2026-01-01T00:00:00Z");
        for expr in exprs {
            let s = Schedule::parse(expr).unwrap();
            for k in 0..40i64 {
                let after = anchor + k * 7919 * 13;
                let now = after + k * 86_400 / 3 + 61;
                let mut walk = None;
                let mut t = after;
                while let Some(n) = s.next_after(anchor, t).filter(|n| *n <= now) {
                    walk = Some(n);
                    t = n;
                }
                assert_eq!(s.latest_in(anchor, after, now), walk, "{expr} k={k}");
            }
        }
    }
}
