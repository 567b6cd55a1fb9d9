//! `[noise]`: learned noise from double runs on the shadow (see [`crate::judge::noise`]).
//!
//! The raw section as written and its check into a [`NoisePolicy`]; every problem names
//! its key. Pure.

use serde::Deserialize;

use super::Problem;
use crate::judge::noise::NoisePolicy;

/// `[noise]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNoise {
    /// Share of mirrored evaluations the shadow runs twice, in percent, to learn which
    /// places differ between two runs of the same code (0 disables). Each double run is
    /// one more shadow execution: opt in (5 is a good start).
    pub double_run_percent: f64,
    /// Fewest double runs that must have seen a place before it can be learned noisy.
    pub min_observations: u64,
    /// Smallest share of those runs in which the place differed, as a fraction, for it
    /// to be learned noisy.
    pub min_flip_rate: f64,
}

impl Default for RawNoise {
    fn default() -> Self {
        let policy = NoisePolicy::default();
        RawNoise {
            double_run_percent: policy.double_run_percent,
            min_observations: policy.min_observations,
            min_flip_rate: policy.min_flip_rate,
        }
    }
}

/// Checks `[noise]`, adding a problem per bad key.
pub fn check(raw: &RawNoise, problems: &mut Vec<Problem>) -> NoisePolicy {
    let mut add = |key: &str, message: String| problems.push(Problem { key: format!("noise.{key}"), message });
    if !(0.0..=100.0).contains(&raw.double_run_percent) {
        add("double_run_percent", format!("must be a percentage between 0 and 100, got {}", raw.double_run_percent));
    }
    if raw.min_observations == 0 {
        add("min_observations", "must be at least 1 (a place needs evidence before it is noise)".into());
    }
    if !(raw.min_flip_rate > 0.0 && raw.min_flip_rate <= 1.0) {
        add("min_flip_rate", format!("must be a fraction above 0 and at most 1, got {}", raw.min_flip_rate));
    }
    NoisePolicy {
        double_run_percent: raw.double_run_percent,
        min_observations: raw.min_observations,
        min_flip_rate: raw.min_flip_rate,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ParseError};

    #[test]
    fn every_bad_key_is_named() {
        let text = "[noise]\ndouble_run_percent = 150\nmin_observations = 0\nmin_flip_rate = 0.0\n";
        let Err(ParseError::Invalid(problems)) = Config::parse(text) else { panic!("refused") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["noise.double_run_percent", "noise.min_observations", "noise.min_flip_rate"]);
    }

    #[test]
    fn defaults_learn_nothing_until_enabled() {
        let config = Config::default();
        assert!(!config.noise.enabled());
        let config = Config::parse("[noise]\ndouble_run_percent = 5\nmin_observations = 4\nmin_flip_rate = 0.5\n")
            .unwrap_or_else(|_| panic!("valid"));
        assert_eq!((config.noise.double_run_percent, config.noise.min_observations), (5.0, 4));
        assert!(matches!(Config::parse("[noise]\nrate = 1\n"), Err(ParseError::Toml(_))), "unknown key");
    }
}
