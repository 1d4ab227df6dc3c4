//! Calendar date-times as values, and UTC timestamps.
//!
//! Python's `datetime.datetime` is carried through the core exactly: local
//! fields, `fold`, and the time zone (a fixed offset, optionally named, or an
//! IANA zone key with the offset it had). The core does no time-zone
//! arithmetic and reads no clock; it only validates, compares and writes the
//! canonical text form documented in `docs/format.md`:
//!
//! ```text
//! 2024-03-01T09:30:00.000000                    naive
//! 2024-03-01T09:30:00.000000+01:00              datetime.timezone
//! 2024-03-01T09:30:00.000000+01:00[tzname=CET]  named datetime.timezone
//! 2024-03-01T09:30:00.000000+01:00[Europe/Paris] zoneinfo.ZoneInfo
//! ...[fold=1]                                   PEP 495 fold
//! ```
//!
//! Execution-history timestamps are plain UTC instants in microseconds since
//! the Unix epoch, written as `2024-03-01T09:30:00.000000Z`.

use std::fmt;

use crate::core::error::{CoreError, CoreResult};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// Offsets must be strictly within a day, as in Python.
const MAX_OFFSET_MICROS: i64 = MICROS_PER_DAY - 1;

/// The time zone of an aware [`DateTime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tz {
    /// `datetime.timezone(timedelta(microseconds=offset), name)`.
    Fixed {
        /// Offset from UTC in microseconds, `|offset| < 24h`.
        offset_micros: i64,
        /// The name given to `datetime.timezone`, if any.
        name: Option<Box<str>>,
    },
    /// `zoneinfo.ZoneInfo(key)`, with the UTC offset in force at this time.
    Zone {
        /// The IANA key, e.g. `"Europe/Paris"`.
        key: Box<str>,
        /// Offset from UTC in microseconds at this date-time.
        offset_micros: i64,
    },
}

impl Tz {
    /// The UTC offset in microseconds.
    #[must_use]
    pub fn offset_micros(&self) -> i64 {
        match self {
            Tz::Fixed { offset_micros, .. } | Tz::Zone { offset_micros, .. } => *offset_micros,
        }
    }
}

/// A calendar date-time with Python's range (years 1 to 9999) and precision
/// (microseconds).
#[derive(Debug, Clone)]
pub struct DateTime {
    /// 1..=9999.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=days in the month.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 0..=999999.
    pub microsecond: u32,
    /// PEP 495 fold: which of two ambiguous wall times is meant.
    pub fold: bool,
    /// `None` for a naive date-time.
    pub tz: Option<Tz>,
}

impl DateTime {
    /// Checks every field's range; the bindings and the parser both call this.
    pub fn validate(&self) -> CoreResult<()> {
        let bad = |what: &str| Err(CoreError::invalid("datetime", what.to_string()));
        if !(1..=9999).contains(&self.year) {
            return bad("year out of range 1..9999");
        }
        if !(1..=12).contains(&self.month) {
            return bad("month out of range 1..12");
        }
        if self.day < 1 || self.day > days_in_month(i64::from(self.year), self.month) {
            return bad("day out of range for month");
        }
        if self.hour > 23 || self.minute > 59 || self.second > 59 || self.microsecond > 999_999 {
            return bad("time of day out of range");
        }
        if let Some(tz) = &self.tz {
            if tz.offset_micros().abs() > MAX_OFFSET_MICROS {
                return bad("UTC offset must be strictly between -24h and 24h");
            }
            if let Tz::Zone { key, .. } = tz {
                if key.is_empty() {
                    return bad("zone key must be non-empty");
                }
            }
        }
        Ok(())
    }

    /// The UTC instant of an aware date-time, in microseconds since the
    /// epoch; `None` for a naive one.
    #[must_use]
    pub fn timestamp(&self) -> Option<i64> {
        let tz = self.tz.as_ref()?;
        Some(self.local_micros() - tz.offset_micros())
    }

    /// The UTC date-time of a timestamp (see [`check_timestamp`] for the
    /// range).
    #[must_use]
    pub fn from_timestamp(micros: i64) -> DateTime {
        let days = micros.div_euclid(MICROS_PER_DAY);
        let in_day = micros.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / MICROS_PER_SECOND;
        // Every narrowing is in range by construction.
        let narrow = |v: i64| u8::try_from(v).unwrap_or_default();
        DateTime {
            year: u16::try_from(year).unwrap_or_default(),
            month,
            day,
            hour: narrow(secs / 3600),
            minute: narrow(secs / 60 % 60),
            second: narrow(secs % 60),
            microsecond: u32::try_from(in_day % MICROS_PER_SECOND).unwrap_or_default(),
            fold: false,
            tz: Some(Tz::Fixed {
                offset_micros: 0,
                name: None,
            }),
        }
    }

    /// Microseconds since 1970-01-01T00:00 of the local (wall) time.
    fn local_micros(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let secs =
            i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        days * MICROS_PER_DAY + secs * MICROS_PER_SECOND + i64::from(self.microsecond)
    }

    /// Python's comparison: naive date-times compare their fields, aware ones
    /// their UTC instants, and a naive one never equals an aware one. `fold`
    /// is ignored, as in Python.
    #[must_use]
    pub fn same_moment(&self, other: &DateTime) -> bool {
        match (&self.tz, &other.tz) {
            (None, None) => self.local_micros() == other.local_micros(),
            (Some(a), Some(b)) => {
                self.local_micros() - a.offset_micros() == other.local_micros() - b.offset_micros()
            }
            _ => false,
        }
    }

    /// Parses the canonical text form written by [`fmt::Display`].
    pub fn parse(text: &str) -> CoreResult<DateTime> {
        let err = || CoreError::serialization(format!("invalid datetime {text:?}"));
        let bytes = text.as_bytes();
        if bytes.len() < 26 || !text.is_char_boundary(26) {
            return Err(err());
        }
        let (year, month, day, hour, minute, second, microsecond) =
            parse_local(&bytes[..26]).ok_or_else(err)?;
        let mut rest = &text[26..];
        let mut tz = None;
        if let Some(sign) = rest.chars().next().filter(|c| *c == '+' || *c == '-') {
            let end = rest.find('[').unwrap_or(rest.len());
            let offset = parse_offset(&rest[1..end]).ok_or_else(err)?;
            let offset_micros = if sign == '-' { -offset } else { offset };
            tz = Some(Tz::Fixed {
                offset_micros,
                name: None,
            });
            rest = &rest[end..];
        }
        let mut fold = false;
        while let Some(stripped) = rest.strip_prefix('[') {
            let close = stripped.find(']').ok_or_else(err)?;
            let tag = unescape(&stripped[..close]).ok_or_else(err)?;
            let tag = tag.as_str();
            rest = &stripped[close + 1..];
            match (tag.strip_prefix("tzname="), tag, &mut tz) {
                (_, "fold=1", _) if !fold => fold = true,
                (
                    Some(tzname),
                    _,
                    Some(Tz::Fixed {
                        name: name @ None, ..
                    }),
                ) => {
                    *name = Some(tzname.into());
                }
                (
                    None,
                    key,
                    Some(Tz::Fixed {
                        offset_micros,
                        name: None,
                    }),
                ) if !key.is_empty() && !key.contains('=') => {
                    let offset_micros = *offset_micros;
                    tz = Some(Tz::Zone {
                        key: key.into(),
                        offset_micros,
                    });
                }
                _ => return Err(err()),
            }
        }
        if !rest.is_empty() {
            return Err(err());
        }
        let value = DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            microsecond,
            fold,
            tz,
        };
        value.validate().map_err(|_| err())?;
        Ok(value)
    }
}

impl PartialEq for DateTime {
    fn eq(&self, other: &Self) -> bool {
        self.same_moment(other)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.microsecond
        )?;
        match &self.tz {
            None => {}
            Some(Tz::Fixed {
                offset_micros,
                name,
            }) => {
                write_offset(f, *offset_micros)?;
                if let Some(name) = name {
                    write!(f, "[tzname={}]", escape(name))?;
                }
            }
            Some(Tz::Zone { key, offset_micros }) => {
                write_offset(f, *offset_micros)?;
                write!(f, "[{}]", escape(key))?;
            }
        }
        if self.fold {
            f.write_str("[fold=1]")?;
        }
        Ok(())
    }
}

/// Escapes the two characters that cannot stand inside a `[...]` suffix.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['%', ']']) {
        std::borrow::Cow::Owned(text.replace('%', "%25").replace(']', "%5D"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The inverse of [`escape`]; any other `%` sequence is an error.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('%');
    out.push_str(parts.next()?);
    for part in parts {
        let rest = if let Some(rest) = part.strip_prefix("25") {
            out.push('%');
            rest
        } else {
            out.push(']');
            part.strip_prefix("5D")?
        };
        out.push_str(rest);
    }
    Some(out)
}

fn write_offset(f: &mut fmt::Formatter<'_>, offset: i64) -> fmt::Result {
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    let micros = abs % 1_000_000;
    let secs = abs / 1_000_000;
    write!(f, "{sign}{:02}:{:02}", secs / 3600, secs / 60 % 60)?;
    if secs % 60 != 0 || micros != 0 {
        write!(f, ":{:02}", secs % 60)?;
    }
    if micros != 0 {
        write!(f, ".{micros:06}")?;
    }
    Ok(())
}

/// Parses `HH:MM`, `HH:MM:SS` or `HH:MM:SS.ffffff` into microseconds.
fn parse_offset(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let hours = digits(b.get(0..2)?)?;
    if b.get(2) != Some(&b':') {
        return None;
    }
    let minutes = digits(b.get(3..5)?)?;
    let (seconds, micros) = match b.len() {
        5 => (0, 0),
        8 if b[5] == b':' => (digits(&b[6..8])?, 0),
        15 if b[5] == b':' && b[8] == b'.' => (digits(&b[6..8])?, digits(&b[9..15])?),
        _ => return None,
    };
    if minutes > 59 || seconds > 59 {
        return None;
    }
    Some(((hours * 60 + minutes) * 60 + seconds) * MICROS_PER_SECOND + micros)
}

type LocalFields = (u16, u8, u8, u8, u8, u8, u32);

/// Parses `YYYY-MM-DDTHH:MM:SS.ffffff` (exactly 26 bytes); ranges are
/// checked by [`DateTime::validate`].
fn parse_local(b: &[u8]) -> Option<LocalFields> {
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let narrow = |range: std::ops::Range<usize>| u8::try_from(digits(&b[range])?).ok();
    Some((
        u16::try_from(digits(&b[0..4])?).ok()?,
        narrow(5..7)?,
        narrow(8..10)?,
        narrow(11..13)?,
        narrow(14..16)?,
        narrow(17..19)?,
        u32::try_from(digits(&b[20..26])?).ok()?,
    ))
}

/// Parses a run of ASCII digits (no sign, at most 18 of them).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both narrowings are in range by construction: day 1..=31, month 1..=12.
    let day = u8::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u8::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The earliest instant Python can represent (0001-01-01T00:00Z), in
/// microseconds since the Unix epoch.
pub const MIN_TIMESTAMP: i64 = -62_135_596_800 * MICROS_PER_SECOND;
/// The latest instant Python can represent (9999-12-31T23:59:59.999999Z).
pub const MAX_TIMESTAMP: i64 = 253_402_300_800 * MICROS_PER_SECOND - 1;

/// Checks that a UTC timestamp (microseconds since the epoch) is within
/// Python's `datetime` range.
pub fn check_timestamp(micros: i64) -> CoreResult<i64> {
    if (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&micros) {
        Ok(micros)
    } else {
        Err(CoreError::invalid(
            "timestamp",
            format!("{micros} microseconds since the epoch is outside years 1..9999"),
        ))
    }
}

/// Writes a UTC timestamp as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (by hand: it is
/// on the hot path of writing a history, where `core::fmt` was a tenth of
/// the cost).
pub fn format_timestamp(micros: i64, out: &mut String) {
    let t = DateTime::from_timestamp(micros);
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            // A digit always fits in a byte.
            buf[i] = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
        }
    };
    put(0, 4, u32::from(t.year));
    put(5, 2, u32::from(t.month));
    put(8, 2, u32::from(t.day));
    put(11, 2, u32::from(t.hour));
    put(14, 2, u32::from(t.minute));
    put(17, 2, u32::from(t.second));
    put(20, 6, t.microsecond);
    out.extend(buf.iter().map(|&b| char::from(b)));
}

/// Parses the form written by [`format_timestamp`].
pub fn parse_timestamp(text: &str) -> CoreResult<i64> {
    let err = || CoreError::serialization(format!("invalid timestamp {text:?}"));
    let b = text.as_bytes();
    if b.len() != 27 || b[26] != b'Z' {
        return Err(err());
    }
    let (year, month, day, hour, minute, second, microsecond) =
        parse_local(&b[..26]).ok_or_else(err)?;
    let fields = DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        microsecond,
        fold: false,
        tz: None,
    };
    fields.validate().map_err(|_| err())?;
    Ok(fields.local_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(text: &str) -> DateTime {
        DateTime::parse(text).unwrap()
    }

    #[test]
    fn civil_round_trip_over_the_whole_range() {
        let first = days_from_civil(1, 1, 1);
        let last = days_from_civil(9999, 12, 31);
        for days in (first..=last).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn canonical_text_round_trips() {
        for text in [
            "2024-02-29T23:59:59.999999",
            "0001-01-01T00:00:00.000000+00:00",
            "2024-03-01T09:30:00.000000-05:30[tzname=IST?]",
            "2024-10-27T02:30:00.000000+01:00[Europe/Paris][fold=1]",
            "2024-03-01T09:30:00.000000+00:00:01.000001",
            "2024-03-01T09:30:00.000000+01:00[tzname=a%5Db%25c]",
            "2024-03-01T09:30:00.000000+01:00[%5D]",
            "9999-12-31T23:59:59.999999-23:59:59.999999",
        ] {
            assert_eq!(naive(text).to_string(), text);
        }
    }

    #[test]
    fn bad_text_is_rejected() {
        for text in [
            "",
            "2024-02-30T00:00:00.000000",
            "2023-02-29T00:00:00.000000",
            "2024-01-01 00:00:00.000000",
            "2024-01-01T24:00:00.000000",
            "2024-01-01T00:00:00.000000+24:00",
            "2024-01-01T00:00:00.000000+01",
            "2024-01-01T00:00:00.000000[Europe/Paris]",
            "2024-01-01T00:00:00.000000+01:00[Europe/Paris][tzname=X]",
            "2024-01-01T00:00:00.000000[fold=1][fold=1]",
            "2024-01-01T00:00:00.000000trailing",
            "2024-01-01T00:00:00.000000+01:00[tzname=a%5Xb]",
            "2024-01-01T00:00:00.000000+01:00[a]b]",
            "0000-01-01T00:00:00.000000",
            "+024-01-01T00:00:00.000000",
            "2024-01-01T00:00:00.00000é",
        ] {
            assert!(DateTime::parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn comparison_follows_python() {
        let utc = naive("2024-01-01T12:00:00.000000+00:00");
        let paris = naive("2024-01-01T13:00:00.000000+01:00[Europe/Paris]");
        let plain = naive("2024-01-01T12:00:00.000000");
        let folded = naive("2024-01-01T12:00:00.000000[fold=1]");
        assert_eq!(utc, paris);
        assert_ne!(utc, plain);
        assert_eq!(plain, folded);
    }

    #[test]
    fn timestamps_round_trip_and_check_range() {
        for micros in [
            0,
            1,
            -1,
            MIN_TIMESTAMP,
            MAX_TIMESTAMP,
            1_732_000_000_123_456,
        ] {
            let mut text = String::new();
            format_timestamp(micros, &mut text);
            assert_eq!(parse_timestamp(&text), Ok(micros), "{text}");
        }
        let dt = DateTime::from_timestamp(1_732_000_000_123_456);
        assert_eq!(dt.timestamp(), Some(1_732_000_000_123_456));
        assert_eq!(
            naive("2024-01-01T01:00:00.000000+01:00").timestamp(),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(naive("2024-01-01T01:00:00.000000").timestamp(), None);
        let mut text = String::new();
        format_timestamp(0, &mut text);
        assert_eq!(text, "1970-01-01T00:00:00.000000Z");
        assert!(check_timestamp(MAX_TIMESTAMP + 1).is_err());
        assert!(parse_timestamp("1970-01-01T00:00:00.000000+00:00").is_err());
    }
}
