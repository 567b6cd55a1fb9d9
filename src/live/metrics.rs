//! Prometheus text exposition of the live state. Every metric name is defined here, once.
//!
//! The migration dashboard already queries `tasks_submitted_total`,
//! `tasks_completed_total` and `task_duration_seconds` with a `queue_system` label of
//! `legacy` or `celery`; shadowdiff's own metrics are prefixed `shadowdiff_`.
//!
//! Each series counts one population, so the dashboard's ratios hold at any sampling:
//! - `tasks_submitted_total` and `tasks_completed_total` count the evaluations shadowdiff
//!   follows to an outcome (the mirrored, judged ones), per system: a submission, and an
//!   outcome. `completed / submitted` is each system's success ratio over the same
//!   evaluations, about 1 for healthy systems whatever the sampling percent.
//! - `legacy_tasks_submitted_total` counts every submission legacy received and
//!   `celery_tasks_submitted_total` every task pushed into Celery: their rates are the
//!   real shares of the traffic each system takes.
//! - a double run's second shadow run (`[noise]`) counts only in
//!   `shadowdiff_double_runs_total` and, as a task pushed, in `celery_tasks_submitted_total`
//!   and `shadowdiff_shadow_submitted_total`; never in verdicts or `tasks_*`.
//! - `celery_*` series exist only with a Celery shadow; label values come from bounded
//!   sets (languages are capped in number and length by the statistics).

use std::fmt::Write;

use crate::judge::histogram::Latency;
use crate::judge::readiness::{Readiness, ReadinessState};
use crate::judge::verdict::VerdictKind;
use crate::live::proxy::ProxyStatsSnapshot;
use crate::live::state::Snapshot;

/// Submissions per system, over the evaluations followed to an outcome.
pub const TASKS_SUBMITTED: &str = "tasks_submitted_total";
/// Final outcomes per system, over the same evaluations.
pub const TASKS_COMPLETED: &str = "tasks_completed_total";
/// Time from submission to outcome per system (histogram).
pub const TASK_DURATION: &str = "task_duration_seconds";
/// Tasks written to Celery.
pub const CELERY_SUBMITTED: &str = "celery_tasks_submitted_total";
/// Submissions to the legacy queue.
pub const LEGACY_SUBMITTED: &str = "legacy_tasks_submitted_total";
/// Messages in the Celery shadow queue (all priority keys).
pub const CELERY_QUEUE_LENGTH: &str = "celery_queue_length";
/// Evaluations waiting in the legacy queue, as the legacy system tells it.
pub const LEGACY_QUEUE_LENGTH: &str = "legacy_queue_length";
/// Time spent deciding whether and where an evaluation is mirrored (histogram).
pub const QUEUE_SELECTION: &str = "queue_selection_duration_seconds";
/// Tasks written to the shadow, whatever its kind.
pub const SHADOW_SUBMITTED: &str = "shadowdiff_shadow_submitted_total";
/// The readiness verdict: 1 for the current state, 0 for the others.
pub const READINESS: &str = "shadowdiff_readiness";
/// Each readiness check: 1 when it passes, 0 otherwise.
pub const CHECK_PASS: &str = "shadowdiff_check_pass";
/// Bytes Redis spends on shadow results left in Redis (`delete_results = false`),
/// measured with `MEMORY USAGE`.
pub const CELERY_RESULT_BYTES: &str = "shadowdiff_celery_result_bytes_retained";
/// Judged evaluations by verdict and language.
pub const COMPARISONS: &str = "shadowdiff_comparisons_total";
/// Double runs on the shadow (`[noise]`), by `result`: `compared` (both runs gave an
/// outcome) or `incomplete`. They count nowhere else: not in verdicts, submissions or latency.
pub const DOUBLE_RUNS: &str = "shadowdiff_double_runs_total";
/// Places learned noisy from double runs.
pub const NOISE_PLACES: &str = "shadowdiff_noise_places";
/// Submissions not mirrored, by reason.
pub const NOT_MIRRORED: &str = "shadowdiff_not_mirrored_total";
/// Mirrored evaluations not judged yet.
pub const PENDING: &str = "shadowdiff_pending";
/// Evaluations holding an in-flight slot.
pub const IN_FLIGHT: &str = "shadowdiff_in_flight";
/// Breaker: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "shadowdiff_breaker_state";
/// Current sampling percentage.
pub const SAMPLING_PERCENT: &str = "shadowdiff_sampling_percent";
/// Requests received on the proxy.
pub const PROXY_REQUESTS: &str = "shadowdiff_proxy_requests_total";
/// Client requests answered 502.
pub const LEGACY_UNREACHABLE: &str = "shadowdiff_legacy_unreachable_total";
/// Client requests answered 504.
pub const LEGACY_TIMEOUT: &str = "shadowdiff_legacy_timeout_total";
/// Celery RETRY states seen.
pub const SHADOW_RETRIES: &str = "shadowdiff_shadow_retries_total";
/// Client requests the client broke (malformed or slow body, left mid-body): 400/408.
pub const CLIENT_ERRORS: &str = "shadowdiff_client_errors_total";
/// Failed accepts on the proxy and admin listeners (e.g. out of file descriptors).
pub const ACCEPT_ERRORS: &str = "shadowdiff_accept_errors_total";
/// Bytes held for pending evaluations.
pub const PENDING_BYTES: &str = "shadowdiff_pending_bytes";
/// `shadow.max_pending_bytes`.
pub const PENDING_BYTES_LIMIT: &str = "shadowdiff_pending_bytes_limit";

/// Bucket bounds of `queue_selection_duration_seconds`: the decision takes microseconds.
pub const SELECTION_BUCKETS_S: [f64; 9] =
    [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01];

/// Bucket bounds of `task_duration_seconds`.
pub const DURATION_BUCKETS_S: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Gauges read at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveGauges {
    /// Tasks written to the shadow.
    pub shadow_submitted: u64,
    /// Celery queue depth, when the shadow is Celery.
    pub queue_depth: Option<u64>,
    /// Bytes of Celery results left in Redis, when the shadow is Celery.
    pub retained_result_bytes: Option<u64>,
    /// In-flight slots held.
    pub in_flight: u64,
    /// Breaker state gauge.
    pub breaker_state: u8,
    /// Sampling percentage.
    pub sampling_percent: f64,
    /// Whether the shadow is Celery (the `celery_*` series exist only then).
    pub celery: bool,
    /// The legacy queue length, when configured and readable.
    pub legacy_queue_length: Option<u64>,
    /// Bytes held for pending evaluations.
    pub pending_bytes: u64,
    /// Their cap.
    pub pending_bytes_limit: u64,
}

/// Escapes a label value (backslash, quote, newline).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A sample value: never `-0`, which Prometheus reads but people misread.
fn value(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// A Prometheus histogram of `latency` in seconds; `labels` is `""` or `key="value",`.
fn histogram(out: &mut String, name: &str, labels: &str, bounds: &[f64], latency: &Latency) {
    let (counts, sum) = latency.cumulative(bounds);
    for (bound, count) in bounds.iter().zip(counts) {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", latency.count());
    let labels = labels.trim_end_matches(',');
    let labels = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{labels} {}", value(sum));
    let _ = writeln!(out, "{name}_count{labels} {}", latency.count());
}

/// Renders every metric.
pub fn render(snapshot: &Snapshot, proxy: &ProxyStatsSnapshot, gauges: &LiveGauges, readiness: &Readiness) -> String {
    let mut out = String::with_capacity(8192);
    let a = &snapshot.accounting;
    let latency = &snapshot.stats.latency;

    // Over the judged evaluations: a side with a submission time was submitted, a side
    // with a time to outcome completed.
    header(
        &mut out,
        TASKS_SUBMITTED,
        "counter",
        "Evaluations submitted, per queue system, among those followed to an outcome.",
    );
    let _ = writeln!(out, "{TASKS_SUBMITTED}{{queue_system=\"legacy\"}} {}", latency.legacy.submit_ms.count());
    let _ = writeln!(out, "{TASKS_SUBMITTED}{{queue_system=\"celery\"}} {}", latency.shadow.submit_ms.count());
    header(
        &mut out,
        TASKS_COMPLETED,
        "counter",
        "Evaluations with a final outcome, per queue system, among those followed.",
    );
    let _ = writeln!(out, "{TASKS_COMPLETED}{{queue_system=\"legacy\"}} {}", latency.legacy.outcome_ms.count());
    let _ = writeln!(out, "{TASKS_COMPLETED}{{queue_system=\"celery\"}} {}", latency.shadow.outcome_ms.count());
    header(&mut out, TASK_DURATION, "histogram", "Time from submission to final outcome.");
    histogram(&mut out, TASK_DURATION, "queue_system=\"legacy\",", &DURATION_BUCKETS_S, &latency.legacy.outcome_ms);
    histogram(&mut out, TASK_DURATION, "queue_system=\"celery\",", &DURATION_BUCKETS_S, &latency.shadow.outcome_ms);
    header(&mut out, LEGACY_SUBMITTED, "counter", "Every evaluation submitted to the legacy queue.");
    let _ = writeln!(out, "{LEGACY_SUBMITTED} {}", a.submissions);
    header(&mut out, SHADOW_SUBMITTED, "counter", "Evaluations sent to the shadow.");
    let _ = writeln!(out, "{SHADOW_SUBMITTED} {}", gauges.shadow_submitted);
    if gauges.celery {
        header(&mut out, CELERY_SUBMITTED, "counter", "Every task written to the Celery shadow.");
        let _ = writeln!(out, "{CELERY_SUBMITTED} {}", gauges.shadow_submitted);
    }
    if let Some(length) = gauges.legacy_queue_length {
        header(&mut out, LEGACY_QUEUE_LENGTH, "gauge", "Evaluations waiting in the legacy queue.");
        let _ = writeln!(out, "{LEGACY_QUEUE_LENGTH} {length}");
    }
    header(&mut out, QUEUE_SELECTION, "histogram", "Time spent deciding whether and where an evaluation is mirrored.");
    histogram(&mut out, QUEUE_SELECTION, "", &SELECTION_BUCKETS_S, &snapshot.selection);
    header(&mut out, READINESS, "gauge", "The readiness verdict: 1 for the current state.");
    for state in ReadinessState::ALL {
        let _ = writeln!(out, "{READINESS}{{state=\"{}\"}} {}", state.as_str(), u8::from(state == readiness.state));
    }
    header(&mut out, CHECK_PASS, "gauge", "Each readiness check: 1 when it passes.");
    for check in &readiness.checks {
        let _ = writeln!(out, "{CHECK_PASS}{{check=\"{}\"}} {}", check.name, u8::from(check.pass));
    }
    if let Some(depth) = gauges.queue_depth {
        header(&mut out, CELERY_QUEUE_LENGTH, "gauge", "Messages waiting in the Celery shadow queue.");
        let _ = writeln!(out, "{CELERY_QUEUE_LENGTH} {depth}");
    }
    if let Some(bytes) = gauges.retained_result_bytes {
        header(&mut out, CELERY_RESULT_BYTES, "gauge", "Bytes of shadow results left in Redis (MEMORY USAGE).");
        let _ = writeln!(out, "{CELERY_RESULT_BYTES} {bytes}");
    }

    header(&mut out, COMPARISONS, "counter", "Judged evaluations by verdict and language.");
    for (language, stats) in &snapshot.stats.by_language {
        for kind in VerdictKind::ALL {
            let _ = writeln!(
                out,
                "{COMPARISONS}{{verdict=\"{}\",language=\"{}\"}} {}",
                kind.as_str(),
                label(language),
                stats.totals.get(kind)
            );
        }
    }
    let noise = &snapshot.stats.noise;
    header(&mut out, DOUBLE_RUNS, "counter", "Evaluations the shadow ran twice to learn noise, by result.");
    let _ = writeln!(out, "{DOUBLE_RUNS}{{result=\"compared\"}} {}", noise.runs);
    let _ = writeln!(out, "{DOUBLE_RUNS}{{result=\"incomplete\"}} {}", noise.incomplete);
    header(&mut out, NOISE_PLACES, "gauge", "Places learned noisy: differences there alone are noise, not mismatches.");
    let _ = writeln!(out, "{NOISE_PLACES} {}", noise.learned().len());
    header(&mut out, NOT_MIRRORED, "counter", "Submissions not mirrored, by reason.");
    for (reason, count) in &a.not_mirrored {
        let _ = writeln!(out, "{NOT_MIRRORED}{{reason=\"{reason}\"}} {count}");
    }
    header(&mut out, PENDING, "gauge", "Mirrored evaluations not judged yet.");
    let _ = writeln!(out, "{PENDING} {}", a.pending);
    header(&mut out, IN_FLIGHT, "gauge", "Evaluations holding an in-flight slot.");
    let _ = writeln!(out, "{IN_FLIGHT} {}", gauges.in_flight);
    header(&mut out, BREAKER_STATE, "gauge", "Mirroring breaker: 0 closed, 1 open, 2 half-open.");
    let _ = writeln!(out, "{BREAKER_STATE} {}", gauges.breaker_state);
    header(&mut out, SAMPLING_PERCENT, "gauge", "Share of evaluations mirrored.");
    let _ = writeln!(out, "{SAMPLING_PERCENT} {}", gauges.sampling_percent);
    header(&mut out, SHADOW_RETRIES, "counter", "Celery RETRY states seen while waiting.");
    let _ = writeln!(out, "{SHADOW_RETRIES} {}", a.shadow_retries);
    header(&mut out, PROXY_REQUESTS, "counter", "Requests received on the proxy.");
    let _ = writeln!(out, "{PROXY_REQUESTS} {}", proxy.requests_total);
    header(&mut out, LEGACY_UNREACHABLE, "counter", "Client requests answered 502: legacy unreachable.");
    let _ = writeln!(out, "{LEGACY_UNREACHABLE} {}", proxy.legacy_unreachable_total);
    header(&mut out, LEGACY_TIMEOUT, "counter", "Client requests answered 504: legacy too slow.");
    let _ = writeln!(out, "{LEGACY_TIMEOUT} {}", proxy.legacy_timeout_total);
    header(&mut out, CLIENT_ERRORS, "counter", "Client requests answered 400/408: the client broke its request.");
    let _ = writeln!(out, "{CLIENT_ERRORS} {}", proxy.client_errors_total);
    header(&mut out, ACCEPT_ERRORS, "counter", "Failed accepts on the proxy and admin listeners.");
    let _ = writeln!(out, "{ACCEPT_ERRORS} {}", proxy.accept_errors_total);
    header(&mut out, PENDING_BYTES, "gauge", "Bytes held for pending evaluations.");
    let _ = writeln!(out, "{PENDING_BYTES} {}", gauges.pending_bytes);
    header(&mut out, PENDING_BYTES_LIMIT, "gauge", "Cap on the bytes held for pending evaluations.");
    let _ = writeln!(out, "{PENDING_BYTES_LIMIT} {}", gauges.pending_bytes_limit);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
