//! The short terminal summary printed at the end of a replay.

use std::fmt::Write;

use super::Report;
use crate::judge::histogram::Percentiles;
use crate::judge::readiness::{CheckState, ReadinessState};

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn p99(p: &Percentiles) -> String {
    ms(p.p99)
}

/// Renders the summary: verdict counters, p99 latencies, top groups, readiness.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let t = &report.totals;
    let v = &t.verdicts;
    let _ = writeln!(out, "shadowdiff: {} evaluations, {} malformed lines", v.evaluations, t.malformed);
    let _ = writeln!(
        out,
        "  match {} | equivalent {} | mismatch {} | noise {} | shadow_error {} | shadow_lost {} | legacy_failed {}",
        v.matched, v.equivalent, v.mismatch, v.noise, v.shadow_error, v.shadow_lost, v.legacy_failed
    );
    let l = &report.latency;
    let _ = writeln!(
        out,
        "  p99 ms: legacy submit {} outcome {} | shadow submit {} outcome {} | delta outcome p50 {} p99 {}",
        p99(&l.legacy.submit_ms),
        p99(&l.legacy.outcome_ms),
        p99(&l.shadow.submit_ms),
        p99(&l.shadow.outcome_ms),
        ms(l.delta.outcome_ms.p50),
        p99(&l.delta.outcome_ms),
    );
    if !report.groups.is_empty() {
        let _ = match report.groups.len() {
            n if n > 5 => writeln!(out, "  mismatch groups: top 5 of {n} groups"),
            n => writeln!(out, "  mismatch groups: {n}"),
        };
        for group in report.groups.iter().take(5) {
            let _ = writeln!(out, "    {:>6}  {:<10} {}", group.count, group.language, group.paths.join(", "));
        }
    }
    report.noise.text(&mut out);
    for line in report.malformed.iter().take(5) {
        let _ = writeln!(out, "  malformed {}:{}: {}", line.file, line.line, line.reason);
    }
    for (name, entries) in [
        ("shadow_error", &report.breakdown.shadow_error),
        ("shadow_lost", &report.breakdown.shadow_lost),
        ("legacy_failed", &report.breakdown.legacy_failed),
    ] {
        for entry in entries.iter().take(5) {
            let _ = writeln!(out, "  {name}: {} × {} (e.g. {})", entry.count, entry.kind, entry.eval_ids.join(", "));
        }
    }
    let verdict = match report.readiness.state {
        ReadinessState::Ready => "READY".to_string(),
        ReadinessState::NotReady => "NOT READY".to_string(),
        ReadinessState::Inconclusive => format!("INCONCLUSIVE, {}", super::needed_in_words(report)),
    };
    let _ = writeln!(out, "readiness: {verdict}");
    for check in &report.readiness.checks {
        let mark = match check.state {
            CheckState::Pass => "pass",
            CheckState::Fail => "FAIL",
            CheckState::Inconclusive => "wait",
        };
        let needed = check.samples_needed.map_or_else(String::new, |n| format!("; about {n} more needed"));
        let _ = writeln!(out, "  [{mark}] {} (limit {}): {}{needed}", check.name, check.limit, check.detail);
    }
    out
}
