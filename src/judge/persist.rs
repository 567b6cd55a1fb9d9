//! The statistics as a document, and back: what a sidecar writes to Redis so that a restart
//! resumes its totals and a fleet's instances merge into one verdict.
//!
//! Everything [`Stats`] holds is in the document: counters as numbers, latency histograms in
//! HdrHistogram's interchange encoding (V2, base64), groups with their examples, breakdowns,
//! field-level rates and the timeline. What is not evidence (the example policy, the ignore
//! rules) comes from the reader's config. A document is bounded by the same caps as the
//! statistics it came from.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::judge::breakdown::{Breakdown, Breakdowns, Entry};
use crate::judge::example::ExamplePolicy;
use crate::judge::fields::{FieldRate, FieldRates};
use crate::judge::noise::{Noise, NoiseState};
use crate::judge::pointer::PatternSet;
use crate::judge::stats::{Group, LanguageStats, LatencySet, Malformed, Stats, Totals};
use crate::judge::timeline::Timeline;

/// Version of the document's shape; a reader refuses another.
pub const STATE_VERSION: u32 = 1;

/// [`Stats`] as a document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsState {
    /// Always [`STATE_VERSION`].
    pub version: u32,
    totals: Totals,
    equivalent_by_rule: BTreeMap<String, u64>,
    latency: LatencySet,
    by_language: BTreeMap<String, LanguageStats>,
    groups: Vec<Group>,
    ungrouped_mismatches: u64,
    malformed_count: u64,
    malformed: Vec<Malformed>,
    shadow_error: Vec<Entry>,
    shadow_lost: Vec<Entry>,
    legacy_failed: Vec<Entry>,
    fields: Vec<FieldRate>,
    timeline: Timeline,
    /// Learned noise; older documents without it read as nothing learned.
    #[serde(default)]
    noise: NoiseState,
}

impl StatsState {
    /// The judged evaluations it holds (for instance tables).
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

impl Stats {
    /// The statistics as a document.
    pub fn to_state(&self) -> StatsState {
        StatsState {
            version: STATE_VERSION,
            totals: self.totals,
            equivalent_by_rule: self.equivalent_by_rule.clone(),
            latency: self.latency.clone(),
            by_language: self.by_language.clone(),
            groups: self.groups.values().cloned().collect(),
            ungrouped_mismatches: self.ungrouped_mismatches,
            malformed_count: self.malformed_count,
            malformed: self.malformed.clone(),
            shadow_error: self.breakdown.shadow_error.entries(),
            shadow_lost: self.breakdown.shadow_lost.entries(),
            legacy_failed: self.breakdown.legacy_failed.entries(),
            fields: self.fields.rates(),
            timeline: self.timeline.clone(),
            noise: self.noise.to_state(),
        }
    }

    /// Statistics from a document, keeping examples as `policy` says and leaving `ignore`
    /// out of the field rates from now on.
    pub fn from_state(policy: Arc<ExamplePolicy>, ignore: Arc<PatternSet>, state: StatsState) -> Result<Stats, String> {
        if state.version != STATE_VERSION {
            return Err(format!("statistics document version {} (this build reads {STATE_VERSION})", state.version));
        }
        let mut stats = Stats::new(policy).ignoring(ignore);
        stats.totals = state.totals;
        stats.equivalent_by_rule = state.equivalent_by_rule;
        stats.latency = state.latency;
        stats.by_language = state.by_language;
        stats.groups = state.groups.into_iter().map(|group| (group.fingerprint.clone(), group)).collect();
        stats.ungrouped_mismatches = state.ungrouped_mismatches;
        stats.malformed_count = state.malformed_count;
        stats.malformed = state.malformed;
        stats.breakdown = Breakdowns {
            shadow_error: Breakdown::from_entries(state.shadow_error),
            shadow_lost: Breakdown::from_entries(state.shadow_lost),
            legacy_failed: Breakdown::from_entries(state.legacy_failed),
        };
        stats.fields = FieldRates::from_rates(&state.fields);
        stats.timeline = state.timeline;
        stats.noise = Noise::from_state(stats.noise.policy(), state.noise);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::fixture::FixtureReader;
    use crate::judge::engine::Engine;

    const FIXTURES: &str = include_str!("../../fixtures/evaluations.jsonl");

    fn replayed(engine: &Engine) -> Stats {
        let mut stats = engine.new_stats();
        let mut reader = FixtureReader::new(FIXTURES.as_bytes());
        while let Some(Ok(line)) = reader.next_ref() {
            if let Ok(evaluation) = line.parsed {
                engine.record_ref(&mut stats, &evaluation);
            }
        }
        stats
    }

    fn report_json(engine: &Engine, stats: &Stats) -> serde_json::Value {
        let report =
            crate::report::Report::build(engine, stats, crate::report::Source { mode: "replay", files: vec![] });
        serde_json::to_value(&report).expect("report")
    }

    #[test]
    fn a_document_gives_back_the_same_report() {
        let engine = Engine::new(Config::default());
        let stats = replayed(&engine);
        let text = serde_json::to_string(&stats.to_state()).expect("serialises");
        let state: StatsState = serde_json::from_str(&text).expect("parses");
        let back = Stats::from_state(Arc::new(ExamplePolicy::default()), Arc::new(PatternSet::default()), state)
            .expect("same version");
        assert_eq!(report_json(&engine, &back), report_json(&engine, &stats));
        assert!(text.len() < 256 * 1024, "bounded: {} bytes", text.len());
    }

    #[test]
    fn a_document_from_before_learned_noise_still_loads() {
        let engine = Engine::new(Config::default());
        let stats = replayed(&engine);
        let mut document = serde_json::to_value(stats.to_state()).expect("serialises");
        let object = document.as_object_mut().expect("object");
        object.remove("noise");
        object["totals"].as_object_mut().expect("totals").remove("noise");
        let state: StatsState = serde_json::from_value(document).expect("older documents parse");
        let back = Stats::from_state(engine.policy(), engine.ignore(), state).expect("same version");
        assert_eq!(back.totals, stats.totals);
        assert_eq!((back.totals.noise, back.noise.runs), (0, 0));
    }

    #[test]
    fn merged_documents_equal_one_run() {
        let engine = Engine::new(Config::default());
        let whole = replayed(&engine);
        let mut merged = engine.new_stats();
        for _ in 0..2 {
            let state: StatsState =
                serde_json::from_str(&serde_json::to_string(&whole.to_state()).expect("ser")).expect("de");
            let part = Stats::from_state(Arc::new(ExamplePolicy::default()), Arc::new(PatternSet::default()), state)
                .expect("same version");
            merged += &part;
        }
        assert_eq!(merged.totals.evaluations, 2 * whole.totals.evaluations);
        assert_eq!(merged.latency.legacy.outcome_ms.count(), 2 * whole.latency.legacy.outcome_ms.count());
        assert_eq!(merged.fields.rates()[0].compared, 2 * whole.fields.rates()[0].compared);
        assert_eq!(merged.breakdown.shadow_error.total(), 2 * whole.breakdown.shadow_error.total());
    }

    #[test]
    fn another_version_is_refused() {
        let engine = Engine::new(Config::default());
        let mut state = engine.new_stats().to_state();
        state.version = 2;
        let refused = Stats::from_state(Arc::new(ExamplePolicy::default()), Arc::new(PatternSet::default()), state);
        assert_eq!(refused.err(), Some("statistics document version 2 (this build reads 1)".into()));
    }
}
