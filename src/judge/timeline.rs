//! The run over time: verdict counts and outcome latency per bucket.
//!
//! Live, a bucket is one wall-clock minute and the last [`MAX_BUCKETS`] minutes (a day) are
//! kept. Replay has no clock (recordings carry no time), so it buckets by position: the
//! first [`FIRST_SPAN`] evaluations, the next ones, and so on; when the buckets would
//! exceed [`MAX_BUCKETS`], neighbours merge and the span doubles. Either way memory is
//! bounded, and every bucket's counts add up to the run's.
//!
//! Latencies per bucket are kept at two significant digits (within 1%), in milliseconds,
//! so a day of buckets stays small.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::judge::histogram;
use crate::judge::verdict::VerdictKind;

/// Buckets kept: a day of minutes.
pub const MAX_BUCKETS: usize = 1440;
/// Evaluations per bucket when replay starts bucketing by position.
pub const FIRST_SPAN: u64 = 100;
/// Seconds in a live bucket.
pub const MINUTE_S: u64 = 60;

/// How buckets are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// `start` is a Unix time in seconds, each bucket a minute.
    Minute,
    /// `start` is the 0-based position of the bucket's first evaluation.
    Position,
}

/// When an evaluation was judged, as the timeline places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Seconds since the Unix epoch (live).
    Unix(u64),
    /// The next evaluation in input order (replay).
    Next,
}

/// One bucket's counts, and its latencies in HdrHistogram's V2 encoding when written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bucket {
    judged: u64,
    mismatch: u64,
    shadow_error: u64,
    shadow_lost: u64,
    legacy_failed: u64,
    #[serde(with = "histogram::v2")]
    legacy_ms: Histogram<u32>,
    #[serde(with = "histogram::v2")]
    shadow_ms: Histogram<u32>,
}

fn coarse() -> Histogram<u32> {
    // Two significant digits, auto-resizing: creation fails only for sigfig > 5.
    Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant digits is valid"))
}

/// Longest time to outcome kept apart in a bucket: a day, in ms.
const MAX_MS: u64 = 86_400_000;

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            judged: 0,
            mismatch: 0,
            shadow_error: 0,
            shadow_lost: 0,
            legacy_failed: 0,
            legacy_ms: coarse(),
            shadow_ms: coarse(),
        }
    }
}

impl Bucket {
    fn count(&mut self, kind: VerdictKind, legacy_ms: Option<f64>, shadow_ms: Option<f64>) {
        match kind {
            VerdictKind::LegacyFailed => self.legacy_failed += 1,
            other => {
                self.judged += 1;
                match other {
                    VerdictKind::Mismatch => self.mismatch += 1,
                    VerdictKind::ShadowError => self.shadow_error += 1,
                    VerdictKind::ShadowLost => self.shadow_lost += 1,
                    _ => {}
                }
            }
        }
        let record = |histogram: &mut Histogram<u32>, ms: Option<f64>| {
            if let Some(ms) = ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
                // Auto-resizing and capped: recording cannot fail; a saturated count stays.
                let _ = histogram.record((ms.ceil() as u64).min(MAX_MS));
            }
        };
        record(&mut self.legacy_ms, legacy_ms);
        record(&mut self.shadow_ms, shadow_ms);
    }

    fn merge(&mut self, other: &Bucket) {
        self.judged += other.judged;
        self.mismatch += other.mismatch;
        self.shadow_error += other.shadow_error;
        self.shadow_lost += other.shadow_lost;
        self.legacy_failed += other.legacy_failed;
        let _ = self.legacy_ms.add(&other.legacy_ms);
        let _ = self.shadow_ms.add(&other.shadow_ms);
    }
}

/// One bucket as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Unix seconds of the minute (live) or position of the first evaluation (replay).
    pub start: u64,
    /// Evaluations on which the shadow was judged (all but `legacy_failed`).
    pub judged: u64,
    /// Mismatches.
    pub mismatch: u64,
    /// Shadow errors.
    pub shadow_error: u64,
    /// Shadow evaluations lost.
    pub shadow_lost: u64,
    /// Legacy failures (not judged).
    pub legacy_failed: u64,
    /// Median legacy time to outcome, ms.
    pub legacy_p50_ms: Option<f64>,
    /// 99th percentile legacy time to outcome, ms.
    pub legacy_p99_ms: Option<f64>,
    /// Median shadow time to outcome, ms.
    pub shadow_p50_ms: Option<f64>,
    /// 99th percentile shadow time to outcome, ms.
    pub shadow_p99_ms: Option<f64>,
}

/// Buckets over the run. As a document: counts as numbers, latencies in HdrHistogram's V2
/// encoding, buckets by start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Timeline {
    unit: Unit,
    /// Evaluations per bucket (position) or seconds per bucket (minute).
    span: u64,
    /// Evaluations placed by position so far.
    placed: u64,
    buckets: BTreeMap<u64, Bucket>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::by_position()
    }
}

impl Timeline {
    /// Buckets by input position (replay).
    pub fn by_position() -> Timeline {
        Timeline { unit: Unit::Position, span: FIRST_SPAN, placed: 0, buckets: BTreeMap::new() }
    }

    /// Buckets by wall-clock minute (live).
    pub fn by_minute() -> Timeline {
        Timeline { unit: Unit::Minute, span: MINUTE_S, placed: 0, buckets: BTreeMap::new() }
    }

    /// How buckets are laid out.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// The width of a bucket: evaluations (position) or seconds (minute).
    pub fn span(&self) -> u64 {
        self.span
    }

    /// Counts one judged evaluation.
    pub fn count(&mut self, at: Moment, kind: VerdictKind, legacy_ms: Option<f64>, shadow_ms: Option<f64>) {
        let start = match (self.unit, at) {
            (Unit::Minute, Moment::Unix(seconds)) => seconds - seconds % self.span,
            // A live timeline given no time (or replay given one) places by position
            // within its own unit's scheme: the latest bucket.
            (Unit::Minute, Moment::Next) => self.buckets.keys().next_back().copied().unwrap_or(0),
            (Unit::Position, _) => {
                let position = self.placed;
                self.placed += 1;
                position - position % self.span
            }
        };
        if self.unit == Unit::Minute && self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&start) {
            match self.buckets.keys().next().copied() {
                // Older than the whole kept day: nowhere to put it.
                Some(oldest) if start < oldest => return,
                Some(oldest) => {
                    self.buckets.remove(&oldest);
                }
                None => {}
            }
        }
        self.buckets.entry(start).or_default().count(kind, legacy_ms, shadow_ms);
        if self.unit == Unit::Position && self.buckets.len() > MAX_BUCKETS {
            self.widen();
        }
    }

    /// Doubles the span of position buckets, merging neighbours.
    fn widen(&mut self) {
        self.span *= 2;
        let old = std::mem::take(&mut self.buckets);
        for (start, bucket) in old {
            let start = start - start % self.span;
            match self.buckets.get_mut(&start) {
                Some(ours) => ours.merge(&bucket),
                None => {
                    self.buckets.insert(start, bucket);
                }
            }
        }
    }

    /// The buckets, oldest first.
    pub fn points(&self) -> Vec<Point> {
        let quantile =
            |histogram: &Histogram<u32>, q: f64| (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64);
        self.buckets
            .iter()
            .map(|(start, b)| Point {
                start: *start,
                judged: b.judged,
                mismatch: b.mismatch,
                shadow_error: b.shadow_error,
                shadow_lost: b.shadow_lost,
                legacy_failed: b.legacy_failed,
                legacy_p50_ms: quantile(&b.legacy_ms, 0.5),
                legacy_p99_ms: quantile(&b.legacy_ms, 0.99),
                shadow_p50_ms: quantile(&b.shadow_ms, 0.5),
                shadow_p99_ms: quantile(&b.shadow_ms, 0.99),
            })
            .collect()
    }
}

/// A timeline as read from a document, before its bounds are checked.
#[derive(Deserialize)]
struct Unchecked {
    unit: Unit,
    span: u64,
    placed: u64,
    buckets: BTreeMap<u64, Bucket>,
}

impl TryFrom<Unchecked> for Timeline {
    type Error = &'static str;

    fn try_from(read: Unchecked) -> Result<Timeline, &'static str> {
        if read.span == 0 || read.buckets.len() > MAX_BUCKETS {
            return Err("timeline: span 0 or too many buckets");
        }
        Ok(Timeline { unit: read.unit, span: read.span, placed: read.placed, buckets: read.buckets })
    }
}

impl AddAssign<&Timeline> for Timeline {
    /// Minutes merge by minute. Positions of another source follow this one's: its
    /// buckets are appended after the evaluations placed here.
    fn add_assign(&mut self, other: &Timeline) {
        match (self.unit, other.unit) {
            (Unit::Minute, Unit::Minute) => {
                for (start, theirs) in &other.buckets {
                    self.buckets.entry(*start).or_default().merge(theirs);
                }
                while self.buckets.len() > MAX_BUCKETS {
                    self.buckets.pop_first();
                }
            }
            _ => {
                while self.span < other.span {
                    self.widen();
                }
                let offset = self.placed.div_ceil(self.span) * self.span;
                for (start, theirs) in &other.buckets {
                    let start = offset + start;
                    let start = start - start % self.span;
                    self.buckets.entry(start).or_default().merge(theirs);
                }
                self.placed = offset + other.placed;
                while self.buckets.len() > MAX_BUCKETS {
                    self.widen();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_buckets_by_position_and_widens() {
        let mut timeline = Timeline::by_position();
        for i in 0..250u64 {
            let kind = if i % 50 == 0 { VerdictKind::Mismatch } else { VerdictKind::Match };
            timeline.count(Moment::Next, kind, Some(10.0), Some(i as f64));
        }
        let points = timeline.points();
        assert_eq!(
            points.iter().map(|p| (p.start, p.judged, p.mismatch)).collect::<Vec<_>>(),
            vec![(0, 100, 2), (100, 100, 2), (200, 50, 1)]
        );
        assert_eq!(points[0].legacy_p50_ms, Some(10.0));
        assert_eq!(points[0].shadow_p99_ms, Some(98.0), "the 99th of 0..=99 ms");

        let mut long = Timeline::by_position();
        for _ in 0..(FIRST_SPAN * MAX_BUCKETS as u64 + 1) {
            long.count(Moment::Next, VerdictKind::Match, None, None);
        }
        assert_eq!(long.span(), 2 * FIRST_SPAN);
        assert!(long.points().len() <= MAX_BUCKETS);
        assert_eq!(long.points().iter().map(|p| p.judged).sum::<u64>(), FIRST_SPAN * MAX_BUCKETS as u64 + 1);
    }

    #[test]
    fn live_buckets_by_minute_and_keeps_a_day() {
        let mut timeline = Timeline::by_minute();
        timeline.count(Moment::Unix(120), VerdictKind::ShadowLost, Some(5.0), None);
        timeline.count(Moment::Unix(179), VerdictKind::LegacyFailed, None, None);
        timeline.count(Moment::Unix(180), VerdictKind::ShadowError, Some(5.0), None);
        let points = timeline.points();
        assert_eq!(
            points
                .iter()
                .map(|p| (p.start, p.judged, p.shadow_lost, p.shadow_error, p.legacy_failed))
                .collect::<Vec<_>>(),
            vec![(120, 1, 1, 0, 1), (180, 1, 0, 1, 0)]
        );
        for minute in 0..(MAX_BUCKETS as u64 + 10) {
            timeline.count(Moment::Unix(1_000_020 + minute * 60), VerdictKind::Match, None, None);
        }
        let points = timeline.points();
        assert_eq!(points.len(), MAX_BUCKETS);
        assert_eq!(points[0].start, 1_000_020 + 10 * 60, "the two first minutes and ten more dropped");
    }

    #[test]
    fn a_document_round_trips_and_out_of_bounds_ones_are_refused() {
        let mut timeline = Timeline::by_minute();
        timeline.count(Moment::Unix(120), VerdictKind::Mismatch, Some(12.0), Some(30.0));
        let text = serde_json::to_string(&timeline).expect("serialises");
        let back: Timeline = serde_json::from_str(&text).expect("parses");
        assert_eq!(back.points(), timeline.points());
        let broken = text.replace("\"span\":60", "\"span\":0");
        let refused = serde_json::from_str::<Timeline>(&broken).expect_err("span 0");
        assert!(refused.to_string().contains("span 0"), "{refused}");
    }

    #[test]
    fn merging_adds_buckets() {
        let (mut a, mut b) = (Timeline::by_minute(), Timeline::by_minute());
        a.count(Moment::Unix(60), VerdictKind::Match, None, None);
        b.count(Moment::Unix(61), VerdictKind::Mismatch, None, None);
        a += &b;
        assert_eq!(a.points().iter().map(|p| (p.start, p.judged, p.mismatch)).collect::<Vec<_>>(), vec![(60, 2, 1)]);

        let (mut c, mut d) = (Timeline::by_position(), Timeline::by_position());
        for _ in 0..150 {
            c.count(Moment::Next, VerdictKind::Match, None, None);
        }
        d.count(Moment::Next, VerdictKind::Mismatch, None, None);
        c += &d;
        assert_eq!(
            c.points().iter().map(|p| (p.start, p.judged, p.mismatch)).collect::<Vec<_>>(),
            vec![(0, 100, 0), (100, 50, 0), (200, 1, 1)]
        );
    }
}
