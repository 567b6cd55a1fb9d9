//! Which evaluations are mirrored: a fraction, decided by a hash of `eval_id`.
//!
//! Hashing (not a coin toss) means a retried submission of the same evaluation is sampled
//! the same way. The fraction is an atomic, so the admin API and SIGHUP change it at run
//! time without a restart; 0 is the immediate rollback.

use std::sync::atomic::{AtomicU32, Ordering};

/// Parts per million, the resolution of the sampling fraction.
const SCALE: u32 = 1_000_000;

/// The sampling fraction, shared between the mirror and the admin API.
#[derive(Debug)]
pub struct Sampler {
    per_million: AtomicU32,
}

impl Sampler {
    /// A sampler mirroring `percent` (0 to 100) of evaluations.
    pub fn new(percent: f64) -> Sampler {
        let sampler = Sampler { per_million: AtomicU32::new(0) };
        sampler.set_percent(percent);
        sampler
    }

    /// Changes the fraction; values outside 0..=100 are clamped.
    pub fn set_percent(&self, percent: f64) {
        let clamped = if percent.is_finite() { percent.clamp(0.0, 100.0) } else { 0.0 };
        self.per_million.store((clamped * f64::from(SCALE) / 100.0).round() as u32, Ordering::Relaxed);
    }

    /// The fraction as a percentage.
    pub fn percent(&self) -> f64 {
        f64::from(self.per_million.load(Ordering::Relaxed)) * 100.0 / f64::from(SCALE)
    }

    /// Whether nothing is mirrored (0 %): the proxy then does not copy submissions at all.
    pub fn is_off(&self) -> bool {
        self.per_million.load(Ordering::Relaxed) == 0
    }

    /// Whether this evaluation is mirrored.
    pub fn sampled(&self, eval_id: &str) -> bool {
        let bucket = (fnv1a64(eval_id.as_bytes()) % u64::from(SCALE)) as u32;
        bucket < self.per_million.load(Ordering::Relaxed)
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_and_determinism() {
        let none = Sampler::new(0.0);
        let all = Sampler::new(100.0);
        let ids: Vec<String> = (0..1000).map(|i| format!("e-{i}")).collect();
        assert!(ids.iter().all(|id| !none.sampled(id)));
        assert!(none.is_off() && !all.is_off() && !Sampler::new(0.0001).is_off());
        assert!(ids.iter().all(|id| all.sampled(id)));
        let half = Sampler::new(50.0);
        let first: Vec<bool> = ids.iter().map(|id| half.sampled(id)).collect();
        let again: Vec<bool> = ids.iter().map(|id| half.sampled(id)).collect();
        assert_eq!(first, again);
        let count = first.iter().filter(|s| **s).count();
        assert!((430..=570).contains(&count), "{count} of 1000 sampled at 50%");
    }

    #[test]
    fn changes_at_run_time_and_clamps() {
        let sampler = Sampler::new(10.0);
        assert_eq!(sampler.percent(), 10.0);
        sampler.set_percent(250.0);
        assert_eq!(sampler.percent(), 100.0);
        sampler.set_percent(f64::NAN);
        assert_eq!(sampler.percent(), 0.0);
    }
}
