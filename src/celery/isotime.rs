//! ISO-8601 datetimes as Celery writes them (`datetime.isoformat()` of an aware UTC time)
//! and as a worker reads them (`dateutil.parser.isoparse`), without a date library.

use std::time::Duration;

const SECONDS_PER_DAY: u64 = 86_400;

/// Formats a time given as its distance from the Unix epoch the way Celery writes `eta`
/// and `expires`: `2026-11-28T15:42:39.438828+00:00`. As Python's `isoformat`, it keeps
/// microseconds (sub-microsecond digits are dropped) and leaves the fraction out when it
/// is zero (`2030-01-02T03:04:05+00:00`).
///
/// Pass `SystemTime::now().duration_since(UNIX_EPOCH)` plus a countdown for an ETA.
pub fn format_utc(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    let (year, month, day) = civil_from_days(secs / SECONDS_PER_DAY);
    let rem = secs % SECONDS_PER_DAY;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Written digit by digit: one per task message, where `format!` cost more than the rest.
    let mut out = String::with_capacity(32);
    for (value, width, after) in
        [(year, 4, '-'), (month, 2, '-'), (day, 2, 'T'), (hour, 2, ':'), (minute, 2, ':'), (second, 2, '.')]
    {
        push_padded(&mut out, value, width);
        out.push(after);
    }
    if micros == 0 {
        out.pop();
    } else {
        push_padded(&mut out, u64::from(micros), 6);
    }
    out.push_str("+00:00");
    out
}

/// `value` in decimal, zero-padded to `width` digits (more if it has more), as `{:0width$}`.
fn push_padded(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    start = start.min(digits.len() - width.min(digits.len()));
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// Year, month and day of the `days`-th day after 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Howard Hinnant's `civil_from_days`, shifted so that eras start on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Checks that `s` is a datetime a Celery worker can parse, so that a message carrying
/// it in `eta` or `expires` is not dropped as invalid. Accepted (a subset of what
/// `isoparse` takes): `YYYY-MM-DD`, optionally followed by `T` or a space and
/// `HH:MM[:SS[.fraction]]`, optionally followed by `Z`, `±HH`, `±HHMM` or `±HH:MM`.
/// A time without an offset is naive, which the worker takes as UTC.
pub(crate) fn check_iso8601(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut p = Cursor { b, at: 0 };
    let year = p.digits(4).ok_or("does not start with a 4-digit year")?;
    p.expect(b'-').ok_or("has no `-` after the year")?;
    let month = p.digits(2).ok_or("has no 2-digit month")?;
    p.expect(b'-').ok_or("has no `-` after the month")?;
    let day = p.digits(2).ok_or("has no 2-digit day")?;
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("has no such date {year:04}-{month:02}-{day:02}"));
    }
    if p.done() {
        return Ok(());
    }
    if p.expect(b'T').or_else(|| p.expect(b' ')).is_none() {
        return Err("has no `T` between date and time".to_owned());
    }
    let hour = p.digits(2).ok_or("has no 2-digit hour")?;
    p.expect(b':').ok_or("has no `:` after the hour")?;
    let minute = p.digits(2).ok_or("has no 2-digit minute")?;
    let mut second = 0;
    if p.expect(b':').is_some() {
        second = p.digits(2).ok_or("has no 2-digit second")?;
        if p.expect(b'.').or_else(|| p.expect(b',')).is_some() && p.run_of_digits() == 0 {
            return Err("has no digits after the decimal point".to_owned());
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("has no such time {hour:02}:{minute:02}:{second:02}"));
    }
    if p.done() || (p.expect(b'Z').is_some() && p.done()) {
        return Ok(());
    }
    if p.expect(b'+').or_else(|| p.expect(b'-')).is_some() {
        let off_h = p.digits(2).ok_or("has no 2-digit offset hours")?;
        let off_m = if p.done() {
            0
        } else {
            // `+HH:MM` or `+HHMM`: the colon is optional.
            let _ = p.expect(b':');
            p.digits(2).ok_or("has no 2-digit offset minutes")?
        };
        if off_h > 23 || off_m > 59 {
            return Err(format!("has no such UTC offset {off_h:02}:{off_m:02}"));
        }
        if p.done() {
            return Ok(());
        }
    }
    Err(format!("has unexpected text at byte {}", p.at))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A position in the text being parsed.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at == self.b.len()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let part = self.b.get(self.at..self.at + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += n;
        Some(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    /// Skips ASCII digits, returning how many.
    fn run_of_digits(&mut self) -> usize {
        let start = self.at;
        while self.b.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python_isoformat() {
        // 2026-11-28T15:42:39.438828+00:00, the `expires` of message-expires.json.
        let t = Duration::new(1_795_880_559, 438_828_999);
        assert_eq!(format_utc(t), "2026-11-28T15:42:39.438828+00:00");
        assert_eq!(format_utc(Duration::from_secs(1_893_553_445)), "2030-01-02T03:04:05+00:00");
        assert_eq!(format_utc(Duration::ZERO), "1970-01-01T00:00:00+00:00");
        assert_eq!(format_utc(Duration::new(951_782_400, 1_000)), "2000-02-29T00:00:00.000001+00:00");
        assert_eq!(format_utc(Duration::from_secs(4_107_542_399)), "2100-02-28T23:59:59+00:00");
        // Past year 9999 the year takes the digits it needs, as `{:04}` does.
        assert_eq!(format_utc(Duration::new(253_402_300_800, 5_000)), "10000-01-01T00:00:00.000005+00:00");
    }

    #[test]
    fn accepts_what_celery_writes_and_isoparse_reads() {
        for ok in [
            "2026-11-28T15:42:39.438828+00:00",
            "2030-01-02T03:04:05+00:00",
            "2030-01-02T03:04:05Z",
            "2030-01-02T03:04:05.123Z",
            "2030-01-02T03:04:05.123456789-05:30",
            "2030-01-02T03:04:05,5+0530",
            "2030-01-02T03:04:05+02",
            "2030-01-02T03:04",
            "2030-01-02 03:04:05",
            "2030-01-02T03:04:05",
            "2030-01-02",
            "2024-02-29T00:00:00Z",
        ] {
            assert_eq!(check_iso8601(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_would_be_dropped() {
        for bad in [
            "",
            "tomorrow",
            "2030-1-02T03:04:05Z",
            "2030-13-02T03:04:05Z",
            "2023-02-29T00:00:00Z",
            "0000-01-01",
            "2030-01-02T24:00:00Z",
            "2030-01-02T03:60:00Z",
            "2030-01-02T03:04:05.Z",
            "2030-01-02T03:04:05+25:00",
            "2030-01-02T03:04:05 +00:00",
            "2030-01-02T03:04:05+00:00x",
            "2030-01-02T03",
            "1795880311.28",
        ] {
            assert!(check_iso8601(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
