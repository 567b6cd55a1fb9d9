//! Is Celery ready to take traffic? The `[gate]` checks against the migration's criteria.
//!
//! Rates are judged on the upper bound of the 95% Wilson score interval, not on the
//! observed rate: zero mismatches in 100 samples does not prove a rate under 0.1%, and the
//! gate must not say it does.

use serde::Serialize;

use crate::judge::stats::Stats;

/// The readiness criteria (`[gate]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Fewest judged evaluations before any verdict of readiness.
    pub min_samples: u64,
    /// Highest acceptable mismatch rate (upper 95% bound), as a fraction.
    pub max_mismatch_rate: f64,
    /// Highest acceptable shadow error rate (upper 95% bound), as a fraction.
    pub max_error_rate: f64,
    /// Most shadow evaluations that may be lost.
    pub max_lost: u64,
    /// Highest acceptable p99 of the shadow's submission time, in milliseconds.
    pub max_submit_p99_ms: f64,
    /// Highest acceptable ratio of shadow p99 to legacy p99 time to outcome.
    pub max_outcome_p99_ratio: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            min_samples: 1000,
            max_mismatch_rate: 0.001,
            max_error_rate: 0.001,
            max_lost: 0,
            max_submit_p99_ms: 100.0,
            max_outcome_p99_ratio: 1.0,
        }
    }
}

/// One check of the gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The `[gate]` key it checks.
    pub name: &'static str,
    /// The configured limit.
    pub limit: f64,
    /// What was observed (`null` when there is nothing to observe yet).
    pub observed: Option<f64>,
    /// Whether the observation is within the limit.
    pub pass: bool,
    /// The observation in words.
    pub detail: String,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// True when every check passes.
    pub ready: bool,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
}

/// Upper bound of the 95% Wilson score interval of `successes` out of `trials`.
pub fn wilson_upper(successes: u64, trials: u64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let margin = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre + margin) / (1.0 + z2 / n)).min(1.0)
}

/// Judges statistics against the gate.
pub fn assess(gate: &Gate, stats: &Stats) -> Readiness {
    let totals = &stats.totals;
    let judged = totals.judged();
    let mut checks = Vec::with_capacity(6);

    checks.push(Check {
        name: "min_samples",
        limit: gate.min_samples as f64,
        observed: Some(judged as f64),
        pass: judged >= gate.min_samples,
        detail: format!("{judged} evaluations judged"),
    });
    checks.push(rate_check("max_mismatch_rate", gate.max_mismatch_rate, totals.mismatch, judged, "mismatches"));
    checks.push(rate_check("max_error_rate", gate.max_error_rate, totals.shadow_error, judged, "shadow errors"));
    checks.push(Check {
        name: "max_lost",
        limit: gate.max_lost as f64,
        observed: Some(totals.shadow_lost as f64),
        pass: totals.shadow_lost <= gate.max_lost,
        detail: format!("{} shadow evaluations lost", totals.shadow_lost),
    });

    let submit_p99 = stats.latency.shadow.submit_ms.quantile_ms(0.99);
    checks.push(Check {
        name: "max_submit_p99_ms",
        limit: gate.max_submit_p99_ms,
        observed: submit_p99,
        pass: submit_p99.is_some_and(|p| p <= gate.max_submit_p99_ms),
        detail: match submit_p99 {
            Some(p) => format!("shadow submission p99 {p:.3} ms"),
            None => "no shadow submission timed yet".into(),
        },
    });

    let legacy_p99 = stats.latency.legacy.outcome_ms.quantile_ms(0.99);
    let shadow_p99 = stats.latency.shadow.outcome_ms.quantile_ms(0.99);
    let ratio = match (shadow_p99, legacy_p99) {
        (Some(shadow), Some(legacy)) if legacy > 0.0 => Some(shadow / legacy),
        _ => None,
    };
    checks.push(Check {
        name: "max_outcome_p99_ratio",
        limit: gate.max_outcome_p99_ratio,
        observed: ratio,
        pass: ratio.is_some_and(|r| r <= gate.max_outcome_p99_ratio),
        detail: match (shadow_p99, legacy_p99) {
            (Some(s), Some(l)) => format!("time to outcome p99: shadow {s:.3} ms, legacy {l:.3} ms"),
            _ => "no time to outcome on both sides yet".into(),
        },
    });

    Readiness { ready: checks.iter().all(|c| c.pass), checks }
}

fn rate_check(name: &'static str, limit: f64, count: u64, judged: u64, what: &str) -> Check {
    let upper = wilson_upper(count, judged);
    let observed = if judged == 0 { 0.0 } else { count as f64 / judged as f64 };
    Check {
        name,
        limit,
        observed: Some(upper),
        pass: judged > 0 && upper <= limit,
        detail: format!("{count} {what} in {judged} ({:.3}%); 95% upper bound {:.3}%", observed * 100.0, upper * 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_upper_bound_matches_known_values() {
        // Zero events in 100 trials: the bound is about 3.7%, far above 0.1%.
        assert!((wilson_upper(0, 100) - 0.036_995).abs() < 1e-5, "{}", wilson_upper(0, 100));
        assert!((wilson_upper(5, 100) - 0.111_8).abs() < 1e-3, "{}", wilson_upper(5, 100));
        assert!((wilson_upper(0, 5000) - 0.000_768).abs() < 1e-5, "{}", wilson_upper(0, 5000));
        assert_eq!(wilson_upper(0, 0), 1.0);
    }

    #[test]
    fn few_clean_samples_do_not_prove_readiness() {
        let check = rate_check("max_mismatch_rate", 0.001, 0, 100, "mismatches");
        assert!(!check.pass);
        assert_eq!(check.detail, "0 mismatches in 100 (0.000%); 95% upper bound 3.699%");
        assert!(rate_check("max_mismatch_rate", 0.001, 0, 5000, "mismatches").pass);
    }
}
