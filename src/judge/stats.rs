//! Statistics over many verdicts: counters, latency histograms, mismatch groups.
//!
//! [`Stats`] is a plain value: sources (replay files, proxy workers) each fill their own
//! and merge them with `+=`, and a report renders from a snapshot, never from live state.
//! Everything in it is bounded: languages, groups, examples and malformed lines are capped,
//! and what exceeds a cap is still counted.

use std::collections::BTreeMap;
use std::ops::AddAssign;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::fixture::json::Doc;
use crate::fixture::view::{EvaluationRef, SideRef};
use crate::fixture::{Evaluation, Side};
use crate::judge::compare::Difference;
use crate::judge::example::{Example, ExamplePolicy};
use crate::judge::histogram::{Latency, SignedLatency};
use crate::judge::verdict::{Verdict, VerdictKind};

/// Verdict counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Evaluations judged (malformed lines are not evaluations).
    pub evaluations: u64,
    /// Equal after the rules.
    #[serde(rename = "match")]
    pub matched: u64,
    /// Declared the same by an equivalence rule.
    pub equivalent: u64,
    /// Outcomes differ.
    pub mismatch: u64,
    /// The shadow failed the evaluation.
    pub shadow_error: u64,
    /// The shadow gave no outcome in time.
    pub shadow_lost: u64,
    /// The legacy side failed; the shadow was not judged.
    pub legacy_failed: u64,
}

impl Totals {
    fn count(&mut self, kind: VerdictKind) {
        self.evaluations += 1;
        *self.slot(kind) += 1;
    }

    fn slot(&mut self, kind: VerdictKind) -> &mut u64 {
        match kind {
            VerdictKind::Match => &mut self.matched,
            VerdictKind::Equivalent => &mut self.equivalent,
            VerdictKind::Mismatch => &mut self.mismatch,
            VerdictKind::ShadowError => &mut self.shadow_error,
            VerdictKind::ShadowLost => &mut self.shadow_lost,
            VerdictKind::LegacyFailed => &mut self.legacy_failed,
        }
    }

    /// The count of one verdict kind.
    pub fn get(&self, kind: VerdictKind) -> u64 {
        let mut copy = *self;
        *copy.slot(kind)
    }

    /// Evaluations on which the shadow was judged (all but `legacy_failed`).
    pub fn judged(&self) -> u64 {
        self.evaluations - self.legacy_failed
    }
}

impl AddAssign<&Totals> for Totals {
    fn add_assign(&mut self, other: &Totals) {
        self.evaluations += other.evaluations;
        for kind in VerdictKind::ALL {
            *self.slot(kind) += other.get(kind);
        }
    }
}

/// Submission and outcome latencies of one system.
#[derive(Debug, Clone, Default)]
pub struct SideLatency {
    /// How long submissions took.
    pub submit_ms: Latency,
    /// Time from submission to outcome.
    pub outcome_ms: Latency,
}

impl SideLatency {
    fn record(&mut self, times: Times) {
        if let Some(ms) = times.submit_ms {
            self.submit_ms.record_ms(ms);
        }
        if let Some(ms) = times.outcome_ms {
            self.outcome_ms.record_ms(ms);
        }
    }

    fn merge(&mut self, other: &SideLatency) {
        self.submit_ms.merge(&other.submit_ms);
        self.outcome_ms.merge(&other.outcome_ms);
    }
}

/// Latencies of both systems and their paired difference.
#[derive(Debug, Clone, Default)]
pub struct LatencySet {
    /// The legacy queue.
    pub legacy: SideLatency,
    /// The shadow (Celery).
    pub shadow: SideLatency,
    /// Shadow minus legacy time to outcome, for evaluations where both have one.
    pub delta_outcome_ms: SignedLatency,
}

impl LatencySet {
    fn record(&mut self, legacy: Times, shadow: Times) {
        self.legacy.record(legacy);
        self.shadow.record(shadow);
        if let (Some(legacy), Some(shadow)) = (legacy.outcome_ms, shadow.outcome_ms) {
            self.delta_outcome_ms.record_ms(shadow - legacy);
        }
    }

    fn merge(&mut self, other: &LatencySet) {
        self.legacy.merge(&other.legacy);
        self.shadow.merge(&other.shadow);
        self.delta_outcome_ms.merge(&other.delta_outcome_ms);
    }
}

/// Counters and latencies of one language.
#[derive(Debug, Clone, Default)]
pub struct LanguageStats {
    /// Verdict counters.
    pub totals: Totals,
    /// Latencies.
    pub latency: LatencySet,
}

/// Mismatches that differ at the same places, in the same language.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// A short stable id of `language` + `paths`.
    pub fingerprint: String,
    /// The language of its evaluations.
    pub language: String,
    /// The differing places, array indices folded to `*`, sorted.
    pub paths: Vec<String>,
    /// How many evaluations fell in this group.
    pub count: u64,
    /// The first few, redacted and with readable diffs.
    pub examples: Vec<Example>,
}

/// A line of input that is not a valid evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// The file it came from (`-` for standard input).
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// Why it was refused.
    pub reason: String,
}

/// How many malformed lines are kept with their reason (all are counted).
pub const MALFORMED_KEPT: usize = 100;
/// Languages beyond this many are counted under [`OTHER_LANGUAGE`].
pub const MAX_LANGUAGES: usize = 32;
/// The bucket for languages beyond [`MAX_LANGUAGES`].
pub const OTHER_LANGUAGE: &str = "(other)";

/// Everything learnt from many evaluations.
#[derive(Debug, Clone)]
pub struct Stats {
    policy: Arc<ExamplePolicy>,
    /// Verdict counters over all evaluations.
    pub totals: Totals,
    /// Equivalent verdicts by rule name.
    pub equivalent_by_rule: BTreeMap<String, u64>,
    /// Latencies over all evaluations.
    pub latency: LatencySet,
    /// Counters and latencies per language.
    pub by_language: BTreeMap<String, LanguageStats>,
    /// Mismatch groups by fingerprint.
    pub groups: BTreeMap<String, Group>,
    /// Mismatches whose group could not be kept because `max_groups` was reached.
    pub ungrouped_mismatches: u64,
    /// Count of malformed input lines.
    pub malformed_count: u64,
    /// The first [`MALFORMED_KEPT`] malformed lines.
    pub malformed: Vec<Malformed>,
}

impl Stats {
    /// Empty statistics that keep examples as `policy` says.
    pub fn new(policy: Arc<ExamplePolicy>) -> Stats {
        Stats {
            policy,
            totals: Totals::default(),
            equivalent_by_rule: BTreeMap::new(),
            latency: LatencySet::default(),
            by_language: BTreeMap::new(),
            groups: BTreeMap::new(),
            ungrouped_mismatches: 0,
            malformed_count: 0,
            malformed: Vec::new(),
        }
    }

    /// Counts one judged evaluation; `rule_names` names the equivalence rules by index.
    pub fn record(&mut self, evaluation: &Evaluation, verdict: &Verdict, rule_names: &[String]) {
        let counted = Counted {
            eval_id: &evaluation.eval_id,
            language: &evaluation.language,
            legacy: Times::of(&evaluation.legacy),
            shadow: Times::of(&evaluation.shadow),
            request: evaluation.request.as_ref().map(Request::Owned),
        };
        self.count(counted, verdict, rule_names);
    }

    /// [`Stats::record`] for a borrowed evaluation (see [`crate::fixture::view`]).
    pub fn record_ref(&mut self, evaluation: &EvaluationRef<'_>, verdict: &Verdict, rule_names: &[String]) {
        let counted = Counted {
            eval_id: &evaluation.eval_id,
            language: &evaluation.language,
            legacy: Times::of_ref(&evaluation.legacy),
            shadow: Times::of_ref(&evaluation.shadow),
            request: evaluation.request.as_ref().map(Request::Borrowed),
        };
        self.count(counted, verdict, rule_names);
    }

    fn count(&mut self, evaluation: Counted<'_>, verdict: &Verdict, rule_names: &[String]) {
        let kind = verdict.kind();
        self.totals.count(kind);
        self.latency.record(evaluation.legacy, evaluation.shadow);
        let language = self.language_slot(evaluation.language);
        language.totals.count(kind);
        language.latency.record(evaluation.legacy, evaluation.shadow);
        match verdict {
            Verdict::Equivalent(index) => {
                let name = rule_names.get(*index).map_or("(unnamed)", String::as_str);
                // Most verdicts find their counter: only a new name costs an allocation.
                match self.equivalent_by_rule.get_mut(name) {
                    Some(count) => *count += 1,
                    None => {
                        self.equivalent_by_rule.insert(name.to_string(), 1);
                    }
                }
            }
            Verdict::Mismatch(differences) => self.group(&evaluation, differences),
            _ => {}
        }
    }

    /// Counts one malformed input line.
    pub fn record_malformed(&mut self, file: &str, line: u64, reason: String) {
        self.malformed_count += 1;
        if self.malformed.len() < MALFORMED_KEPT {
            self.malformed.push(Malformed { file: file.to_string(), line, reason });
        }
    }

    fn language_slot(&mut self, language: &str) -> &mut LanguageStats {
        let known = self.by_language.contains_key(language);
        let key = if known || self.by_language.len() < MAX_LANGUAGES { language } else { OTHER_LANGUAGE };
        if !known && !self.by_language.contains_key(key) {
            self.by_language.insert(key.to_string(), LanguageStats::default());
        }
        self.by_language.get_mut(key).unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn group(&mut self, evaluation: &Counted<'_>, differences: &[Difference]) {
        let mut paths: Vec<String> = differences.iter().map(|d| d.folded_path.clone()).collect();
        paths.sort();
        paths.dedup();
        let fingerprint = fingerprint(evaluation.language, &paths);
        if !self.groups.contains_key(&fingerprint) && self.groups.len() >= self.policy.max_groups {
            self.ungrouped_mismatches += 1;
            return;
        }
        let policy = Arc::clone(&self.policy);
        let group = self.groups.entry(fingerprint.clone()).or_insert_with(|| Group {
            fingerprint,
            language: evaluation.language.to_string(),
            paths,
            count: 0,
            examples: Vec::new(),
        });
        group.count += 1;
        if group.examples.len() < policy.examples_per_group {
            // Only here is a borrowed request turned into a `Value`: most never need one.
            let request = evaluation.request.as_ref().map(|request| match request {
                Request::Owned(value) => (*value).clone(),
                Request::Borrowed(doc) => doc.to_value(),
            });
            group.examples.push(Example::from_parts(&policy, evaluation.eval_id, request, differences));
        }
    }
}

/// What counting needs of an evaluation, taken from either form of it without copying:
/// the live proxy's owned [`Evaluation`] or replay's borrowed [`EvaluationRef`].
struct Counted<'e> {
    eval_id: &'e str,
    language: &'e str,
    legacy: Times,
    shadow: Times,
    request: Option<Request<'e>>,
}

/// A side's times, as far as it has them.
#[derive(Clone, Copy)]
struct Times {
    submit_ms: Option<f64>,
    /// Only a side with an outcome has one.
    outcome_ms: Option<f64>,
}

impl Times {
    fn of(side: &Side) -> Times {
        let outcome_ms = match side {
            Side::Ok { outcome_ms, .. } => Some(*outcome_ms),
            _ => None,
        };
        Times { submit_ms: side.submit_ms(), outcome_ms }
    }

    fn of_ref(side: &SideRef<'_>) -> Times {
        let outcome_ms = match side {
            SideRef::Ok { outcome_ms, .. } => Some(*outcome_ms),
            _ => None,
        };
        Times { submit_ms: side.submit_ms(), outcome_ms }
    }
}

/// The recorded request, in the form the evaluation holds it.
enum Request<'e> {
    Owned(&'e Value),
    Borrowed(&'e Doc<'e>),
}

/// FNV-1a of the language and the sorted paths, as 16 hex digits: stable across runs and
/// machines, so a group can be followed from one report to the next.
fn fingerprint(language: &str, paths: &[String]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(language.as_bytes());
    for path in paths {
        feed(b"\0");
        feed(path.as_bytes());
    }
    format!("{hash:016x}")
}

impl AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, other: &Stats) {
        self.totals += &other.totals;
        for (name, count) in &other.equivalent_by_rule {
            *self.equivalent_by_rule.entry(name.clone()).or_default() += count;
        }
        self.latency.merge(&other.latency);
        for (language, theirs) in &other.by_language {
            let ours = self.language_slot(language);
            ours.totals += &theirs.totals;
            ours.latency.merge(&theirs.latency);
        }
        for (fingerprint, theirs) in &other.groups {
            let room_for_groups = self.groups.len() < self.policy.max_groups;
            match self.groups.get_mut(fingerprint) {
                Some(ours) => {
                    ours.count += theirs.count;
                    let room = self.policy.examples_per_group.saturating_sub(ours.examples.len());
                    ours.examples.extend(theirs.examples.iter().take(room).cloned());
                }
                None if room_for_groups => {
                    self.groups.insert(fingerprint.clone(), theirs.clone());
                }
                None => self.ungrouped_mismatches += theirs.count,
            }
        }
        self.ungrouped_mismatches += other.ungrouped_mismatches;
        self.malformed_count += other.malformed_count;
        let room = MALFORMED_KEPT.saturating_sub(self.malformed.len());
        self.malformed.extend(other.malformed.iter().take(room).cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::compare::{self, Rules};
    use serde_json::json;

    fn evaluation(language: &str, stdout: &str) -> Evaluation {
        let side =
            |stdout: &str, ms: f64| Side::Ok { submit_ms: 1.0, outcome_ms: ms, outcome: json!({"stdout": stdout}) };
        Evaluation {
            v: 1,
            eval_id: format!("e-{language}-{stdout}"),
            language: language.into(),
            request: None,
            legacy: side("1", 100.0),
            shadow: side(stdout, 40.0),
        }
    }

    fn record(stats: &mut Stats, evaluation: &Evaluation) {
        let differences =
            compare::diff(&Rules::default(), &json!({"stdout": "1"}), &json!({"stdout": evaluation.eval_id}));
        let verdict = if evaluation.eval_id.ends_with("-1") { Verdict::Match } else { Verdict::Mismatch(differences) };
        stats.record(evaluation, &verdict, &[]);
    }

    fn policy(max_groups: usize) -> Arc<ExamplePolicy> {
        Arc::new(ExamplePolicy { examples_per_group: 2, max_groups, ..ExamplePolicy::default() })
    }

    #[test]
    fn counts_per_language_and_groups_by_fingerprint() {
        let mut stats = Stats::new(policy(10));
        for stdout in ["1", "2", "3", "4"] {
            record(&mut stats, &evaluation("python", stdout));
        }
        record(&mut stats, &evaluation("bash", "2"));
        assert_eq!(stats.totals.evaluations, 5);
        assert_eq!(stats.totals.matched, 1);
        assert_eq!(stats.totals.mismatch, 4);
        assert_eq!(stats.by_language["python"].totals.mismatch, 3);
        assert_eq!(stats.groups.len(), 2, "one group per language for the same path");
        let python = stats.groups.values().find(|g| g.language == "python").expect("python group");
        assert_eq!((python.count, python.examples.len()), (3, 2));
        assert_eq!(python.paths, vec!["/stdout".to_string()]);
        assert_eq!(stats.latency.delta_outcome_ms.quantile_ms(0.5), Some(-60.0));
    }

    #[test]
    fn groups_beyond_the_cap_are_still_counted() {
        let mut stats = Stats::new(policy(1));
        record(&mut stats, &evaluation("python", "2"));
        record(&mut stats, &evaluation("bash", "2"));
        assert_eq!(stats.groups.len(), 1);
        assert_eq!(stats.ungrouped_mismatches, 1);
        assert_eq!(stats.totals.mismatch, 2);
    }

    #[test]
    fn merging_equals_recording_in_one() {
        let (mut a, mut b, mut both) = (Stats::new(policy(10)), Stats::new(policy(10)), Stats::new(policy(10)));
        for (i, stdout) in ["1", "2", "3", "2"].iter().enumerate() {
            let e = evaluation(if i % 2 == 0 { "python" } else { "bash" }, stdout);
            record(if i < 2 { &mut a } else { &mut b }, &e);
            record(&mut both, &e);
        }
        a.record_malformed("f", 3, "bad".into());
        both.record_malformed("f", 3, "bad".into());
        a += &b;
        assert_eq!(a.totals, both.totals);
        assert_eq!(a.by_language["bash"].totals, both.by_language["bash"].totals);
        assert_eq!(a.groups.keys().collect::<Vec<_>>(), both.groups.keys().collect::<Vec<_>>());
        assert_eq!(a.latency.legacy.outcome_ms.count(), 4);
        assert_eq!(a.malformed, both.malformed);
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint("python", &["/stdout".into()]), fingerprint("python", &["/stdout".into()]));
        assert_ne!(fingerprint("python", &["/stdout".into()]), fingerprint("bash", &["/stdout".into()]));
    }
}
