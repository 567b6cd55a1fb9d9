//! The report model, built once from a statistics snapshot and rendered three ways:
//! JSON ([`Report`] serialised as is), HTML ([`html`]) and a terminal summary ([`text`]).
//!
//! The JSON keys are a public interface: tools and the migration dashboard read them.

pub mod html;
pub mod text;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::judge::engine::Engine;
use crate::judge::histogram::Percentiles;
use crate::judge::readiness::Readiness;
use crate::judge::stats::{Group, LatencySet, Malformed, Stats, Totals};

/// Verdict counters plus malformed input lines.
#[derive(Debug, Clone, Serialize)]
pub struct ReportTotals {
    /// The verdict counters.
    #[serde(flatten)]
    pub verdicts: Totals,
    /// Input lines that were not valid evaluations.
    pub malformed: u64,
}

/// Submission and outcome percentiles of one system.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    /// How long submissions took.
    pub submit_ms: Percentiles,
    /// Time from submission to outcome.
    pub outcome_ms: Percentiles,
}

/// Percentiles of the paired difference, shadow minus legacy.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaReport {
    /// Time to outcome difference; negative when the shadow was faster.
    pub outcome_ms: Percentiles,
}

/// Latency percentiles of both systems and their difference.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// The legacy queue.
    pub legacy: SideReport,
    /// The shadow (Celery).
    pub shadow: SideReport,
    /// Shadow minus legacy.
    pub delta: DeltaReport,
}

impl LatencyReport {
    fn from_set(set: &LatencySet) -> LatencyReport {
        let side = |s: &crate::judge::stats::SideLatency| SideReport {
            submit_ms: s.submit_ms.percentiles(),
            outcome_ms: s.outcome_ms.percentiles(),
        };
        LatencyReport {
            legacy: side(&set.legacy),
            shadow: side(&set.shadow),
            delta: DeltaReport { outcome_ms: set.delta_outcome_ms.percentiles() },
        }
    }
}

/// One language's counters and latencies.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageReport {
    /// Verdict counters.
    pub totals: Totals,
    /// Latency percentiles.
    pub latency: LatencyReport,
}

/// Where the evaluations came from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// `replay` or `live`.
    pub mode: &'static str,
    /// The fixture files read, for replay.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The tool and version that wrote it.
    pub generator: String,
    /// Where the evaluations came from.
    pub source: Source,
    /// Verdict counters.
    pub totals: ReportTotals,
    /// Equivalent verdicts by rule name.
    pub equivalent_by_rule: BTreeMap<String, u64>,
    /// Latency percentiles over all evaluations.
    pub latency: LatencyReport,
    /// Counters and latencies per language.
    pub by_language: BTreeMap<String, LanguageReport>,
    /// Mismatch groups, largest first.
    pub groups: Vec<Group>,
    /// Mismatches counted beyond `report.max_groups` groups.
    pub ungrouped_mismatches: u64,
    /// The first malformed input lines.
    pub malformed: Vec<Malformed>,
    /// The gate's verdict.
    pub readiness: Readiness,
    /// Live accounting of every submission (live mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting: Option<crate::live::state::Accounting>,
}

impl Report {
    /// Builds the report from a statistics snapshot.
    pub fn build(engine: &Engine, stats: &Stats, source: Source) -> Report {
        let mut groups: Vec<Group> = stats.groups.values().cloned().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        Report {
            generator: format!("shadowdiff {}", env!("CARGO_PKG_VERSION")),
            source,
            totals: ReportTotals { verdicts: stats.totals, malformed: stats.malformed_count },
            equivalent_by_rule: stats.equivalent_by_rule.clone(),
            latency: LatencyReport::from_set(&stats.latency),
            by_language: stats
                .by_language
                .iter()
                .map(|(language, s)| {
                    (
                        language.clone(),
                        LanguageReport { totals: s.totals, latency: LatencyReport::from_set(&s.latency) },
                    )
                })
                .collect(),
            groups,
            ungrouped_mismatches: stats.ungrouped_mismatches,
            malformed: stats.malformed.clone(),
            readiness: engine.readiness(stats),
            accounting: None,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // A tree of plain structs, strings, numbers and `Value`s always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
