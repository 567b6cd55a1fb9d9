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
    /// Fewest judged evaluations before the gate can say `ready`.
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
            // The fewest clean evaluations whose 95% upper bound is within the default
            // 0.1% rate limits (see `default_min_samples_is_where_a_clean_run_passes`), so
            // that a clean run becomes ready at the count the report states.
            min_samples: 3838,
            max_mismatch_rate: 0.001,
            max_error_rate: 0.001,
            max_lost: 0,
            max_submit_p99_ms: 100.0,
            max_outcome_p99_ratio: 1.0,
        }
    }
}

/// What one check, or the whole gate, concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// The evidence shows the criterion is met.
    Pass,
    /// The evidence shows the criterion is not met.
    Fail,
    /// Not enough evidence either way yet: more judged evaluations are needed.
    Inconclusive,
}

impl CheckState {
    /// The state's name in reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pass => "pass",
            CheckState::Fail => "fail",
            CheckState::Inconclusive => "inconclusive",
        }
    }
}

/// The gate's three answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    /// Every check passes.
    Ready,
    /// At least one check fails on the evidence.
    NotReady,
    /// No check fails, but at least one needs more evaluations.
    Inconclusive,
}

impl ReadinessState {
    /// Every state, in the order metrics list them.
    pub const ALL: [ReadinessState; 3] =
        [ReadinessState::Ready, ReadinessState::NotReady, ReadinessState::Inconclusive];

    /// The state's name in reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadinessState::Ready => "ready",
            ReadinessState::NotReady => "not_ready",
            ReadinessState::Inconclusive => "inconclusive",
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
    /// What was observed: the rate as seen for rate checks, the count or the latency for
    /// the others (`null` when there is nothing to observe yet).
    pub observed: Option<f64>,
    /// For rate checks, the upper bound of the 95% Wilson interval the limit is judged on;
    /// for the others, the observed value itself.
    pub bound: Option<f64>,
    /// What the check concludes.
    pub state: CheckState,
    /// When inconclusive: how many more judged evaluations are needed, at the observed
    /// rate, before the check can pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_needed: Option<u64>,
    /// True when the check passes (kept for scripts that read it).
    pub pass: bool,
    /// The observation in words.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, limit: f64, observed: Option<f64>, state: CheckState, detail: String) -> Check {
        Check {
            name,
            limit,
            observed,
            bound: observed,
            state,
            samples_needed: None,
            pass: state == CheckState::Pass,
            detail,
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// `ready`, `not_ready` or `inconclusive`.
    pub state: ReadinessState,
    /// When inconclusive: the most any check still needs, so that after this many more
    /// clean judged evaluations every check that waits for evidence can pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_needed: Option<u64>,
    /// True when every check passes (`state == "ready"`).
    pub ready: bool,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
}

/// The 95% two-sided normal quantile.
const Z: f64 = 1.959_963_984_540_054;

/// Upper bound of the 95% Wilson score interval of `successes` out of `trials`.
pub fn wilson_upper(successes: u64, trials: u64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    wilson_upper_at(successes as f64 / trials as f64, trials as f64)
}

/// The Wilson upper bound for an observed rate `p` over `n` trials.
fn wilson_upper_at(p: f64, n: f64) -> f64 {
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let margin = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre + margin) / (1.0 + z2 / n)).min(1.0)
}

/// No answer is given beyond this many evaluations: a rate this close to its limit is, in
/// practice, not going to pass.
pub const MAX_SAMPLES: u64 = 1 << 40;

/// The fewest trials at which an observed rate `p` has its upper bound at or under
/// `limit`; `None` when `p >= limit` (no number of trials is enough) or beyond
/// [`MAX_SAMPLES`]. The bound falls as trials grow, so a doubling then a bisection finds it.
pub fn trials_to_pass(p: f64, limit: f64) -> Option<u64> {
    if p.is_nan() || p >= limit || limit <= 0.0 {
        return None;
    }
    let passes = |n: u64| wilson_upper_at(p, n as f64) <= limit;
    let mut high = 1u64;
    while !passes(high) {
        high = high.checked_mul(2).filter(|h| *h <= MAX_SAMPLES)?;
    }
    let mut low = high / 2; // fails (or is 0)
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if passes(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(high)
}

/// Judges statistics against the gate.
pub fn assess(gate: &Gate, stats: &Stats) -> Readiness {
    let totals = &stats.totals;
    let judged = totals.judged();
    let mut checks = Vec::with_capacity(6);

    let enough = judged >= gate.min_samples;
    checks.push(Check {
        samples_needed: (!enough).then(|| gate.min_samples - judged),
        ..Check::new(
            "min_samples",
            gate.min_samples as f64,
            Some(judged as f64),
            if enough { CheckState::Pass } else { CheckState::Inconclusive },
            format!("{judged} evaluations judged"),
        )
    });
    checks.push(rate_check("max_mismatch_rate", gate.max_mismatch_rate, totals.mismatch, judged, "mismatches"));
    checks.push(rate_check("max_error_rate", gate.max_error_rate, totals.shadow_error, judged, "shadow errors"));
    checks.push(Check::new(
        "max_lost",
        gate.max_lost as f64,
        Some(totals.shadow_lost as f64),
        if totals.shadow_lost <= gate.max_lost { CheckState::Pass } else { CheckState::Fail },
        format!("{} shadow evaluations lost", totals.shadow_lost),
    ));

    let submit_p99 = stats.latency.shadow.submit_ms.quantile_ms(0.99);
    checks.push(Check::new(
        "max_submit_p99_ms",
        gate.max_submit_p99_ms,
        submit_p99,
        measured(submit_p99, gate.max_submit_p99_ms),
        match submit_p99 {
            Some(p) => format!("shadow submission p99 {p:.3} ms"),
            None => "no shadow submission timed yet".into(),
        },
    ));

    let legacy_p99 = stats.latency.legacy.outcome_ms.quantile_ms(0.99);
    let shadow_p99 = stats.latency.shadow.outcome_ms.quantile_ms(0.99);
    let ratio = match (shadow_p99, legacy_p99) {
        (Some(shadow), Some(legacy)) if legacy > 0.0 => Some(shadow / legacy),
        _ => None,
    };
    checks.push(Check::new(
        "max_outcome_p99_ratio",
        gate.max_outcome_p99_ratio,
        ratio,
        measured(ratio, gate.max_outcome_p99_ratio),
        match (shadow_p99, legacy_p99) {
            (Some(s), Some(l)) => format!("time to outcome p99: shadow {s:.3} ms, legacy {l:.3} ms"),
            _ => "no time to outcome on both sides yet".into(),
        },
    ));

    let state = if checks.iter().any(|c| c.state == CheckState::Fail) {
        ReadinessState::NotReady
    } else if checks.iter().any(|c| c.state == CheckState::Inconclusive) {
        ReadinessState::Inconclusive
    } else {
        ReadinessState::Ready
    };
    let samples_needed = match state {
        ReadinessState::Inconclusive => checks.iter().filter_map(|c| c.samples_needed).max(),
        _ => None,
    };
    Readiness { state, samples_needed, ready: state == ReadinessState::Ready, checks }
}

/// A latency check: nothing measured yet is inconclusive, not a failure.
fn measured(value: Option<f64>, limit: f64) -> CheckState {
    match value {
        None => CheckState::Inconclusive,
        Some(v) if v <= limit => CheckState::Pass,
        Some(_) => CheckState::Fail,
    }
}

/// A rate check, judged on the Wilson upper bound. Over the limit while the observed rate
/// is under it, the evidence is not enough yet: inconclusive, with the number of further
/// judged evaluations at the observed rate that bring the bound under the limit.
fn rate_check(name: &'static str, limit: f64, count: u64, judged: u64, what: &str) -> Check {
    let upper = wilson_upper(count, judged);
    let observed = if judged == 0 { 0.0 } else { count as f64 / judged as f64 };
    let detail =
        format!("{count} {what} in {judged} ({:.3}%); 95% upper bound {:.3}%", observed * 100.0, upper * 100.0);
    let (state, samples_needed) = if judged > 0 && upper <= limit {
        (CheckState::Pass, None)
    } else if observed < limit {
        let needed = trials_to_pass(observed, limit).map(|n| n.saturating_sub(judged).max(1));
        (CheckState::Inconclusive, needed)
    } else {
        (CheckState::Fail, None)
    };
    Check {
        name,
        limit,
        observed: (judged > 0).then_some(observed),
        bound: Some(upper),
        state,
        samples_needed,
        pass: state == CheckState::Pass,
        detail,
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
    fn few_clean_samples_are_inconclusive_not_failing() {
        let check = rate_check("max_mismatch_rate", 0.001, 0, 100, "mismatches");
        assert!(!check.pass);
        assert_eq!(check.state, CheckState::Inconclusive);
        assert_eq!(check.observed, Some(0.0));
        assert_eq!(check.samples_needed, Some(3738), "3838 clean in all");
        assert_eq!(check.detail, "0 mismatches in 100 (0.000%); 95% upper bound 3.699%");
        assert!(rate_check("max_mismatch_rate", 0.001, 0, 5000, "mismatches").pass);
    }

    #[test]
    fn default_min_samples_is_where_a_clean_run_passes() {
        let gate = Gate::default();
        assert!(wilson_upper(0, gate.min_samples) <= gate.max_mismatch_rate);
        assert!(wilson_upper(0, gate.min_samples - 1) > gate.max_mismatch_rate);
        assert_eq!(trials_to_pass(0.0, 0.001), Some(gate.min_samples));
    }

    #[test]
    fn observed_is_the_rate_and_bound_the_upper_bound() {
        // 146 mismatches in 1000: observed 14.6%, bound about 16.9%; far over 0.1%.
        let check = rate_check("max_mismatch_rate", 0.001, 146, 1000, "mismatches");
        assert_eq!(check.observed, Some(0.146));
        assert!((check.bound.expect("bound") - 0.169_1).abs() < 1e-3, "{:?}", check.bound);
        assert_eq!(check.state, CheckState::Fail);
        assert_eq!(check.samples_needed, None);
    }

    #[test]
    fn a_rate_under_the_limit_needs_more_samples_at_that_rate() {
        // 1 in 4000 (0.025%) is under 0.1%, but its bound (0.14%) is not yet.
        let check = rate_check("max_error_rate", 0.001, 1, 4000, "shadow errors");
        assert_eq!(check.state, CheckState::Inconclusive);
        let needed = check.samples_needed.expect("a count");
        let total = 4000 + needed;
        assert!(wilson_upper_at(0.00025, total as f64) <= 0.001);
        assert!(wilson_upper_at(0.00025, (total - 1) as f64) > 0.001);
        // At the limit itself no count is enough: that is a failure, not a wait.
        assert_eq!(rate_check("max_error_rate", 0.001, 4, 4000, "shadow errors").state, CheckState::Fail);
        assert_eq!(trials_to_pass(0.001, 0.001), None);
    }
}
