//! Latency histograms: HDR histograms at microsecond resolution, 3 significant digits.
//!
//! [`Latency`] holds durations; [`SignedLatency`] holds paired differences (shadow minus
//! legacy), which are negative whenever the shadow is faster. HDR histograms only count
//! non-negative integers, so a signed one keeps two: magnitudes below zero and values at or
//! above it, and reads its percentiles across both.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer as HdrDeserializer, Serializer as _, V2Serializer};
use hdrhistogram::{Counter, Histogram};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SIGNIFICANT_DIGITS: u8 = 3;

fn empty() -> Histogram<u64> {
    // An auto-resizing histogram of 3 significant digits; creation only fails for
    // sigfig > 5, so this cannot panic.
    Histogram::new(SIGNIFICANT_DIGITS).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
}

/// Longest duration kept apart: one day. Longer ones count as one day, which bounds the
/// histogram's memory (it grows with the largest value it holds).
const MAX_MICROS: u64 = 86_400_000_000;

fn to_micros(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        ((ms * 1000.0).round() as u64).min(MAX_MICROS)
    } else {
        0
    }
}

fn to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The percentiles every report shows for a distribution, in milliseconds
/// (`null` when nothing was recorded).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values were recorded.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

/// A histogram in HdrHistogram's interchange encoding (V2), as base64: what any HdrHistogram
/// implementation reads.
pub fn encode<T: Counter>(histogram: &Histogram<T>) -> String {
    let mut bytes = Vec::new();
    // Serialising into a Vec cannot fail for an in-range histogram.
    let _ = V2Serializer::new().serialize(histogram, &mut bytes);
    BASE64.encode(bytes)
}

/// Reads what [`encode`] wrote.
pub fn decode<T: Counter>(text: &str) -> Result<Histogram<T>, String> {
    let bytes = BASE64.decode(text).map_err(|e| format!("histogram is not base64: {e}"))?;
    let mut histogram: Histogram<T> = HdrDeserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram is not in HdrHistogram V2 encoding: {e:?}"))?;
    histogram.auto(true);
    Ok(histogram)
}

/// `#[serde(with = "crate::judge::histogram::v2")]`: a histogram field as [`encode`]
/// writes it.
pub mod v2 {
    use hdrhistogram::{Counter, Histogram};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the histogram as base64 of its V2 encoding.
    pub fn serialize<T: Counter, S: Serializer>(histogram: &Histogram<T>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::encode(histogram))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, T: Counter, D: Deserializer<'de>>(deserializer: D) -> Result<Histogram<T>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::decode(&text).map_err(serde::de::Error::custom)
    }
}

impl Percentiles {
    /// The report's percentiles of `count` values, read through `quantile`.
    fn read(count: u64, quantile: impl Fn(f64) -> Option<f64>, max: Option<f64>) -> Percentiles {
        Percentiles { count, p50: quantile(0.5), p90: quantile(0.9), p99: quantile(0.99), p999: quantile(0.999), max }
    }
}

/// A distribution of durations.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { histogram: empty() }
    }
}

impl Latency {
    /// Records one duration in milliseconds (negative or non-finite counts as 0, more than a
    /// day as a day).
    pub fn record_ms(&mut self, ms: f64) {
        // The histogram auto-resizes and the value is capped, so recording cannot fail.
        let _ = self.histogram.record(to_micros(ms));
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The duration below which `quantile` (0..=1) of the values fall, in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        (self.count() > 0).then(|| to_ms(self.histogram.value_at_quantile(quantile)))
    }

    /// Like [`Latency::quantile_ms`] but the lowest value of the bucket instead of the
    /// highest: a negated magnitude then rounds toward zero, as positive values do upward.
    fn quantile_lowest_ms(&self, quantile: f64) -> Option<f64> {
        (self.count() > 0).then(|| {
            let value = self.histogram.value_at_quantile(quantile);
            to_ms(self.histogram.lowest_equivalent(value))
        })
    }

    /// The report's percentiles.
    pub fn percentiles(&self) -> Percentiles {
        let max = (self.count() > 0).then(|| to_ms(self.histogram.max()));
        Percentiles::read(self.count(), |q| self.quantile_ms(q), max)
    }

    /// Counts per upper bound (in seconds) for Prometheus-style cumulative buckets, and the
    /// sum of all values in seconds.
    pub fn cumulative(&self, bounds_s: &[f64]) -> (Vec<u64>, f64) {
        let mut counts = Vec::with_capacity(bounds_s.len());
        for bound in bounds_s {
            let micros = (bound * 1_000_000.0) as u64;
            let below: u64 = self
                .histogram
                .iter_recorded()
                .take_while(|v| v.value_iterated_to() <= micros)
                .map(|v| v.count_at_value())
                .sum();
            counts.push(below);
        }
        let sum_s = self
            .histogram
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum::<f64>()
            / 1_000_000.0;
        (counts, sum_s)
    }

    /// Adds another distribution's values to this one.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms auto-resize, so adding cannot run out of range.
        let _ = self.histogram.add(&other.histogram);
    }
}

impl Serialize for Latency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        v2::serialize(&self.histogram, serializer)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Latency, D::Error> {
        v2::deserialize(deserializer).map(|histogram| Latency { histogram })
    }
}

/// A distribution of differences, which may be negative.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignedLatency {
    below_zero: Latency,
    at_or_above_zero: Latency,
}

impl SignedLatency {
    /// Records one difference in milliseconds.
    pub fn record_ms(&mut self, ms: f64) {
        if ms < 0.0 {
            self.below_zero.record_ms(-ms);
        } else {
            self.at_or_above_zero.record_ms(ms);
        }
    }

    /// How many differences were recorded.
    pub fn count(&self) -> u64 {
        self.below_zero.count() + self.at_or_above_zero.count()
    }

    /// The difference below which `quantile` of the values fall, in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let negatives = self.below_zero.count();
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        if rank <= negatives {
            // The rank-th smallest difference is the (negatives - rank + 1)-th smallest
            // magnitude below zero, negated.
            let magnitude_rank = negatives - rank + 1;
            self.below_zero.quantile_lowest_ms(magnitude_rank as f64 / negatives as f64).map(|m| -m)
        } else {
            let positives = self.at_or_above_zero.count();
            self.at_or_above_zero.quantile_ms((rank - negatives) as f64 / positives as f64)
        }
    }

    /// The report's percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::read(self.count(), |q| self.quantile_ms(q), self.quantile_ms(1.0))
    }

    /// Adds another distribution's values to this one.
    pub fn merge(&mut self, other: &SignedLatency) {
        self.below_zero.merge(&other.below_zero);
        self.at_or_above_zero.merge(&other.at_or_above_zero);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_three_digits() {
        let mut latency = Latency::default();
        for ms in 1..=1000 {
            latency.record_ms(ms as f64);
        }
        let p = latency.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, Some(500.223));
        assert_eq!(p.p99, Some(990.207));
        assert_eq!(p.max, Some(1000.447));
    }

    #[test]
    fn empty_distribution_has_no_percentiles() {
        let p = Latency::default().percentiles();
        assert_eq!((p.count, p.p50, p.max), (0, None, None));
    }

    #[test]
    fn signed_percentiles_cross_zero() {
        let mut delta = SignedLatency::default();
        for ms in -50..50 {
            delta.record_ms(ms as f64);
        }
        assert_eq!(delta.count(), 100);
        // 50 ms shares a bucket of 32 µs with 49.984 ms: three significant digits.
        assert_eq!(delta.quantile_ms(0.0), Some(-49.984));
        assert_eq!(delta.quantile_ms(0.25), Some(-26.0));
        assert_eq!(delta.quantile_ms(0.5), Some(-1.0));
        assert_eq!(delta.quantile_ms(0.51), Some(0.0));
        assert_eq!(delta.quantile_ms(1.0), Some(49.023));
    }

    #[test]
    fn all_negative_differences() {
        let mut delta = SignedLatency::default();
        delta.record_ms(-10.0);
        delta.record_ms(-20.0);
        assert_eq!(delta.percentiles().max, Some(-10.0));
        assert_eq!(delta.quantile_ms(0.5), Some(-20.0));
    }

    #[test]
    fn the_interchange_encoding_round_trips() {
        let mut latency = Latency::default();
        for ms in [0.5, 3.0, 250.0, 90_000.0] {
            latency.record_ms(ms);
        }
        let text = serde_json::to_string(&latency).expect("encodes");
        let back: Latency = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back.percentiles(), latency.percentiles());
        let mut grown = back.clone();
        grown.record_ms(86_400_000.0);
        assert_eq!(grown.count(), 5, "a decoded histogram still grows");
        assert!(serde_json::from_str::<Latency>("\"bm90IGhkcg==\"").is_err());
    }

    #[test]
    fn merging_adds_counts() {
        let (mut a, mut b) = (Latency::default(), Latency::default());
        a.record_ms(1.0);
        b.record_ms(2.0);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.percentiles().max, Some(2.0));
    }

    #[test]
    fn cumulative_buckets_for_prometheus() {
        let mut latency = Latency::default();
        for ms in [1.0, 20.0, 300.0] {
            latency.record_ms(ms);
        }
        let (counts, sum) = latency.cumulative(&[0.005, 0.05, 1.0]);
        assert_eq!(counts, vec![1, 2, 3]);
        assert!((sum - 0.321).abs() < 0.001, "{sum}");
    }
}
