//! Pacing: when each driven evaluation is due, as a distance from the start of the drive.
//!
//! Pure arithmetic, no clock and no IO: the driver asks [`Pacer::due`] for each evaluation
//! in order, sleeps until then, and tells [`Pacer::held`] when a safety rail kept one back
//! past its time. A fixed rate spaces evaluations `1/rate` apart; a speed factor replays the
//! recorded submission times that many times faster. A hold moves every later evaluation
//! by the same delay, so that a pause (queue too deep, breaker open) is never followed by a
//! burst that catches up and trips the rail again.

use std::time::Duration;

/// How evaluations are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// This many evaluations per second.
    Rate(f64),
    /// The recorded submission times, this many times faster (2.0: twice the recorded rate).
    Speed(f64),
    /// As fast as the safety rails allow.
    Unpaced,
}

impl Pace {
    /// The pace's word in reports: `rate`, `speed` or `unpaced`.
    pub fn mode(self) -> &'static str {
        match self {
            Pace::Rate(_) => "rate",
            Pace::Speed(_) => "speed",
            Pace::Unpaced => "unpaced",
        }
    }

    /// The rate or speed factor, if any.
    pub fn value(self) -> Option<f64> {
        match self {
            Pace::Rate(value) | Pace::Speed(value) => Some(value),
            Pace::Unpaced => None,
        }
    }
}

/// The schedule of one drive.
#[derive(Debug, Clone)]
pub struct Pacer {
    pace: Pace,
    /// Total delay added by holds so far.
    shift: Duration,
    /// The first recorded submission time (speed), since the Unix epoch.
    first_recorded: Option<Duration>,
    /// The last time handed out: due times never go back.
    last_due: Duration,
}

impl Pacer {
    /// A schedule at this pace. A rate or speed must be finite and above zero (the command
    /// line checks it); anything else is treated as unpaced.
    pub fn new(pace: Pace) -> Pacer {
        let pace = match pace {
            Pace::Rate(v) | Pace::Speed(v) if !(v.is_finite() && v > 0.0) => Pace::Unpaced,
            pace => pace,
        };
        Pacer { pace, shift: Duration::ZERO, first_recorded: None, last_due: Duration::ZERO }
    }

    /// When the `index`-th evaluation (0-based) is due, from the start of the drive.
    /// `recorded` is its recorded submission time since the Unix epoch (needed for speed;
    /// an evaluation without one goes right after the one before).
    pub fn due(&mut self, index: u64, recorded: Option<Duration>) -> Duration {
        let base = match self.pace {
            // Beyond what a Duration holds (a rate far below one a year) is never.
            Pace::Rate(rate) => Duration::try_from_secs_f64(index as f64 / rate).unwrap_or(Duration::MAX),
            Pace::Speed(factor) => match recorded {
                Some(at) => {
                    let first = *self.first_recorded.get_or_insert(at);
                    Duration::try_from_secs_f64(at.saturating_sub(first).as_secs_f64() / factor)
                        .unwrap_or(Duration::MAX)
                }
                None => Duration::ZERO,
            },
            Pace::Unpaced => Duration::ZERO,
        };
        let due = base.saturating_add(self.shift).max(self.last_due);
        self.last_due = due;
        due
    }

    /// The evaluation due at `due` could only go at `sent` (both from the start) because a
    /// safety rail held it: every later one moves by the same delay.
    pub fn held(&mut self, due: Duration, sent: Duration) {
        if let Some(delay) = sent.checked_sub(due) {
            self.shift = self.shift.saturating_add(delay);
            self.last_due = self.last_due.max(sent);
        }
    }

    /// The total delay added by holds.
    pub fn shift(&self) -> Duration {
        self.shift
    }
}

/// Reads a recorded `submitted_at` (RFC 3339: `2026-11-28T15:42:39.438828+00:00`, `Z` or
/// any `±HH:MM` offset, a fraction of any length) into its distance from the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Result<Duration, String> {
    let bad = |what: &str| format!("{text:?} is not an RFC 3339 time like 2026-11-28T15:42:39.438828+00:00: {what}");
    let b = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<u64> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && (at(10, b'T') || at(10, b't') || at(10, b' ')) && at(13, b':') && at(16, b':')) {
        return Err(bad("wrong separators"));
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (number(0, 4), number(5, 2), number(8, 2), number(11, 2), number(14, 2), number(17, 2))
    else {
        return Err(bad("a field is not digits"));
    };
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time"));
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(bad("no digits after the decimal point"));
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b':') => {
            let (Some(h), Some(m)) = (number(i + 1, 2), number(i + 4, 2)) else { return Err(bad("bad offset")) };
            let seconds = (h * 3600 + m * 60) as i64;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return Err(bad("no offset (`Z` or `+00:00`) at the end")),
    };
    let days = days_from_civil(year, month, day);
    let local = (days * 86_400 + hour * 3600 + minute * 60 + second) as i64;
    let utc = u64::try_from(local - offset_s).map_err(|_| bad("before 1970"))?;
    Ok(Duration::from_secs(utc) + Duration::from_nanos(nanos))
}

/// Days from 1970-01-01 to a date (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_rate_spaces_evaluations_evenly() {
        let mut pacer = Pacer::new(Pace::Rate(200.0));
        let due: Vec<Duration> = (0..4).map(|i| pacer.due(i, None)).collect();
        assert_eq!(due, [ms(0), ms(5), ms(10), ms(15)]);
        // 2000 at 200/s: the last is due just before 10 s.
        assert_eq!(Pacer::new(Pace::Rate(200.0)).due(1999, None), ms(9995));
    }

    #[test]
    fn a_pace_too_slow_for_a_duration_is_due_never_rather_than_a_panic() {
        let mut pacer = Pacer::new(Pace::Rate(1e-300));
        assert_eq!(pacer.due(0, None), ms(0));
        assert_eq!(pacer.due(1, None), Duration::MAX);
        pacer.held(ms(0), ms(10));
        assert_eq!(pacer.due(2, None), Duration::MAX);
        let mut pacer = Pacer::new(Pace::Speed(1e-300));
        assert_eq!(pacer.due(0, Some(ms(1_000))), ms(0));
        assert_eq!(pacer.due(1, Some(ms(2_000))), Duration::MAX);
    }

    #[test]
    fn a_speed_factor_replays_recorded_gaps_faster() {
        let mut pacer = Pacer::new(Pace::Speed(2.0));
        let recorded = [1_000_000, 1_000_100, 1_000_100, 1_001_000].map(ms);
        let due: Vec<Duration> = recorded.iter().enumerate().map(|(i, at)| pacer.due(i as u64, Some(*at))).collect();
        assert_eq!(due, [ms(0), ms(50), ms(50), ms(500)]);
        let mut five = Pacer::new(Pace::Speed(5.0));
        assert_eq!(five.due(0, Some(ms(10_000))), ms(0));
        assert_eq!(five.due(1, Some(ms(20_000))), ms(2_000));
    }

    #[test]
    fn due_times_never_go_back() {
        // Out-of-order recorded times (two files, say) do not send anything into the past.
        let mut pacer = Pacer::new(Pace::Speed(1.0));
        assert_eq!(pacer.due(0, Some(ms(5_000))), ms(0));
        assert_eq!(pacer.due(1, Some(ms(6_000))), ms(1_000));
        assert_eq!(pacer.due(2, Some(ms(5_500))), ms(1_000));
        assert_eq!(pacer.due(3, None), ms(1_000));
    }

    #[test]
    fn a_hold_moves_every_later_evaluation_instead_of_bursting() {
        let mut pacer = Pacer::new(Pace::Rate(100.0));
        assert_eq!(pacer.due(0, None), ms(0));
        let due = pacer.due(1, None);
        assert_eq!(due, ms(10));
        // The queue was too deep: the second went out 500 ms late.
        pacer.held(due, ms(510));
        assert_eq!(pacer.due(2, None), ms(520));
        assert_eq!(pacer.due(3, None), ms(530));
        assert_eq!(pacer.shift(), ms(500));
        // Sent early or on time: nothing moves.
        pacer.held(ms(530), ms(530));
        assert_eq!(pacer.due(4, None), ms(540));
    }

    #[test]
    fn unpaced_and_nonsense_paces_send_at_once() {
        for pace in [Pace::Unpaced, Pace::Rate(0.0), Pace::Speed(f64::NAN), Pace::Rate(-1.0)] {
            let mut pacer = Pacer::new(pace);
            assert_eq!((0..3).map(|i| pacer.due(i, Some(ms(i * 1000)))).collect::<Vec<_>>(), [ms(0); 3], "{pace:?}");
        }
        assert_eq!(Pace::Rate(2.0).mode(), "rate");
        assert_eq!(Pace::Speed(5.0).value(), Some(5.0));
    }

    #[test]
    fn recorded_times_parse_as_serve_writes_them() {
        let at = parse_rfc3339("2026-11-28T15:42:39.438828+00:00").expect("parses");
        assert_eq!(crate::celery::format_utc(at), "2026-11-28T15:42:39.438828+00:00");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(Duration::ZERO));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(Duration::ZERO));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.5Z"), Ok(Duration::from_millis(951_868_800_500)));
        for bad in ["", "2026-11-28", "2026-11-28T15:42:39", "2026-13-01T00:00:00Z", "2026-11-28T15:42:39.+00:00", "x"]
        {
            let error = parse_rfc3339(bad).expect_err(bad);
            assert!(error.contains("is not an RFC 3339 time"), "{error}");
        }
    }
}
