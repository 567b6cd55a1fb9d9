//! The report model, built once from a statistics snapshot and rendered three ways:
//! JSON ([`Report`] serialised as is), HTML ([`html`]) and a terminal summary ([`text`]).
//!
//! The JSON keys are a public interface: tools and the migration dashboard read them.

mod charts;
pub mod drive;
mod evidence;
pub mod html;
pub mod noise;
pub mod text;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::judge::breakdown::{Breakdowns, Entry};
use crate::judge::engine::Engine;
use crate::judge::fields::FieldRate;
use crate::judge::histogram::Percentiles;
use crate::judge::readiness::Readiness;
use crate::judge::stats::{Group, LatencySet, Malformed, Stats, Totals};
use crate::judge::timeline::{Point, Unit};

/// "about N more evaluations needed", with how long that takes at the current rate when
/// it is known; empty when nothing more is needed.
pub fn needed_in_words(report: &Report) -> String {
    let Some(needed) = report.readiness.samples_needed else {
        return "more evidence needed (no latency measured yet)".into();
    };
    let mut words = format!("about {needed} more evaluations needed");
    if let Some(rate) = report.judged_per_minute().filter(|rate| *rate > 0.0) {
        let minutes = needed as f64 / rate;
        let _ = if minutes < 90.0 {
            write!(words, ", ~{:.0} min at the current rate", minutes.ceil())
        } else {
            write!(words, ", ~{:.1} h at the current rate", minutes / 60.0)
        };
    }
    words
}

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
    /// `replay`, `live`, `fleet` or `drive`.
    pub mode: &'static str,
    /// The fixture files read, for replay.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// The evidence behind the failure counts: each verdict's failures by kind, with ids.
#[derive(Debug, Clone, Serialize)]
pub struct BreakdownReport {
    /// `shadow_error` by exception type (Celery) or HTTP status (HTTP shadow).
    pub shadow_error: Vec<Entry>,
    /// `shadow_lost` by the last state seen (`STARTED`, `RETRY`, `never_seen`,
    /// `broker_unreachable`, ...).
    pub shadow_lost: Vec<Entry>,
    /// `legacy_failed` by reason.
    pub legacy_failed: Vec<Entry>,
}

impl BreakdownReport {
    fn from_breakdowns(b: &Breakdowns) -> BreakdownReport {
        BreakdownReport {
            shadow_error: b.shadow_error.entries(),
            shadow_lost: b.shadow_lost.entries(),
            legacy_failed: b.legacy_failed.entries(),
        }
    }
}

/// How the timeline's buckets are laid out.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineLayout {
    /// `minute` (live: `start` is Unix seconds) or `position` (replay: `start` is the
    /// 0-based position of the bucket's first evaluation).
    pub unit: Unit,
    /// Seconds (minute) or evaluations (position) per bucket.
    pub span: u64,
}

/// What a live report adds about the sidecar that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveContext {
    /// When the report was made, Unix seconds.
    pub as_of: u64,
    /// When the run started (the sidecar's start), Unix seconds.
    pub since: u64,
    /// The sampling percent now.
    pub sampling_percent: f64,
    /// The breaker: `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// `celery` or `http`.
    pub shadow_kind: &'static str,
    /// How each side's outcome is obtained (`poll`, `observe`, `response`).
    pub legacy_outcome_mode: &'static str,
    /// How the shadow's outcome is obtained.
    pub shadow_outcome_mode: &'static str,
    /// Messages waiting in the Celery queue (Celery shadow only).
    pub celery_queue_length: Option<u64>,
    /// Evaluations waiting in the legacy queue (when `[legacy] queue_length_url` is set).
    pub legacy_queue_length: Option<u64>,
}

/// What a merged fleet report adds: which run and window it merges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetContext {
    /// The run's name.
    pub run: String,
    /// The comparison window merged.
    pub window: u64,
    /// Bytes of the instances' states in Redis.
    pub redis_bytes: u64,
    /// When the merge was made, Unix seconds.
    pub as_of: u64,
}

/// One instance of a fleet, as the merged report lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRow {
    /// Its name.
    pub instance: String,
    /// `running`, `stopped` (it said so at shutdown) or `cut_off` (no state for three
    /// snapshot intervals: killed or out of reach; judgments after `last_seen` are lost).
    pub status: &'static str,
    /// When it last wrote its state, Unix seconds.
    pub last_seen: u64,
    /// When its current process started, Unix seconds.
    pub started_at: u64,
    /// The shadowdiff version it runs.
    pub version: String,
    /// Evaluations it judged.
    pub judged: u64,
    /// Submissions it saw.
    pub submissions: u64,
    /// Size of its state in Redis.
    pub state_bytes: u64,
    /// Whether its comparison config is the one the merge judges by.
    pub same_config: bool,
    /// Whether its statistics are in the merged totals (not when its config differs).
    pub merged: bool,
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
    /// Field-level rates: each compared place, most differences first.
    pub paths: Vec<FieldRate>,
    /// Mismatch groups, largest first.
    pub groups: Vec<Group>,
    /// Mismatches counted beyond `report.max_groups` groups.
    pub ungrouped_mismatches: u64,
    /// The first malformed input lines.
    pub malformed: Vec<Malformed>,
    /// Failures by kind, with eval_ids.
    pub breakdown: BreakdownReport,
    /// What double runs taught: noisy places, evidence, the config to paste.
    pub noise: noise::NoiseReport,
    /// Verdicts and latency over the run, oldest bucket first.
    pub timeline: Vec<Point>,
    /// How the timeline's buckets are laid out.
    pub timeline_layout: TimelineLayout,
    /// The gate's verdict.
    pub readiness: Readiness,
    /// The sidecar's state when the report was made (live mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveContext>,
    /// The run and window a fleet report merges (fleet mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetContext>,
    /// Every instance of the fleet (fleet mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceRow>>,
    /// Live accounting of every submission (live and drive modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting: Option<crate::live::state::Accounting>,
    /// The drive's pace, rails, samples and id map (drive mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drive: Option<drive::DriveContext>,
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
            paths: stats.fields.rates(),
            groups,
            ungrouped_mismatches: stats.ungrouped_mismatches,
            malformed: stats.malformed.clone(),
            breakdown: BreakdownReport::from_breakdowns(&stats.breakdown),
            noise: noise::NoiseReport::build(engine, stats),
            timeline: stats.timeline.points(),
            timeline_layout: TimelineLayout { unit: stats.timeline.unit(), span: stats.timeline.span() },
            readiness: engine.readiness(stats),
            live: None,
            fleet: None,
            instances: None,
            accounting: None,
            drive: None,
        }
    }

    /// What the shadow is called on the page: `Celery`, `HTTP shadow`, or `shadow` when the
    /// report does not know (replay of a recording).
    pub fn shadow_name(&self) -> &'static str {
        match self.live.as_ref().map(|live| live.shadow_kind) {
            Some("celery") => "Celery",
            Some("http") => "HTTP shadow",
            _ => "shadow",
        }
    }

    /// Judged evaluations per minute over the timeline, when it is by minute (live) and
    /// spans at least one whole minute.
    pub fn judged_per_minute(&self) -> Option<f64> {
        if self.timeline_layout.unit != Unit::Minute || self.timeline.len() < 2 {
            return None;
        }
        let first = self.timeline.first()?.start;
        let last = self.timeline.last()?.start;
        let minutes = ((last - first) / self.timeline_layout.span.max(1) + 1) as f64;
        let judged: u64 = self.timeline.iter().map(|p| p.judged).sum();
        Some(judged as f64 / minutes)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // A tree of plain structs, strings, numbers and `Value`s always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
