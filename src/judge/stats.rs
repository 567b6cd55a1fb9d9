//! Statistics over many verdicts: counters, latency histograms, mismatch groups, and the
//! evidence behind them (failure breakdowns, field-level rates, a timeline).
//!
//! [`Stats`] is a plain value: sources (replay files, proxy workers) each fill their own
//! and merge them with `+=`, and a report renders from a snapshot, never from live state.
//! Everything in it is bounded: languages, groups, examples, breakdowns, places, buckets
//! and malformed lines are capped, and what exceeds a cap is still counted.

use std::collections::BTreeMap;
use std::ops::AddAssign;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fixture::view::{EvaluationRef, SideRef};
use crate::fixture::Evaluation;
use crate::judge::breakdown::{self, Breakdowns};
use crate::judge::compare::Difference;
use crate::judge::example::{Example, ExamplePolicy};
use crate::judge::fields::FieldRates;
use crate::judge::histogram::{Latency, SignedLatency};
use crate::judge::noise::{Noise, NoisePolicy};
use crate::judge::pointer::PatternSet;
use crate::judge::timeline::{Moment, Timeline};
use crate::judge::verdict::{Verdict, VerdictKind};

/// Verdict counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Outcomes differ only where the shadow differs from itself (learned noise): not a
    /// mismatch, never against the gate. Older documents without it read as 0.
    #[serde(default)]
    pub noise: u64,
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
            VerdictKind::Noise => &mut self.noise,
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LanguageStats {
    /// Verdict counters.
    pub totals: Totals,
    /// Latencies.
    pub latency: LatencySet,
}

/// Mismatches that differ at the same places, in any language.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// A short stable id of `paths`.
    pub fingerprint: String,
    /// The language of its evaluations, or [`SEVERAL_LANGUAGES`] (see `by_language`).
    pub language: String,
    /// How many of its evaluations each language has.
    pub by_language: BTreeMap<String, u64>,
    /// The differing places, array indices folded to `*`, sorted.
    pub paths: Vec<String>,
    /// How many evaluations fell in this group.
    pub count: u64,
    /// A few, redacted and with readable diffs; no two show the same differences.
    pub examples: Vec<Example>,
    /// Mismatches looked at for a distinct example; bounded so that a large group of
    /// identical diffs does not render every one of them.
    #[serde(skip, default)]
    tried: usize,
}

/// A group's `language` when its evaluations are of more than one.
pub const SEVERAL_LANGUAGES: &str = "(several)";
/// Mismatches looked at per example kept, at most, when looking for distinct ones.
const TRIES_PER_EXAMPLE: usize = 8;

impl Group {
    fn count_language(&mut self, language: &str, count: u64) {
        let known = self.by_language.contains_key(language);
        let key = if known || self.by_language.len() < MAX_LANGUAGES { language } else { OTHER_LANGUAGE };
        *self.by_language.entry(key.to_owned()).or_default() += count;
        if self.by_language.len() > 1 {
            self.language = SEVERAL_LANGUAGES.to_owned();
        }
    }

    /// Keeps `example` if there is room and no kept example shows the same differences.
    fn offer(&mut self, cap: usize, example: impl FnOnce() -> Example) {
        if self.examples.len() >= cap || self.tried >= cap * TRIES_PER_EXAMPLE {
            return;
        }
        self.tried += 1;
        let example = example();
        if !self.examples.iter().any(|kept| kept.differences == example.differences) {
            self.examples.push(example);
        }
    }
}

/// A line of input that is not a valid evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
/// The bucket for languages beyond [`MAX_LANGUAGES`], or longer than
/// [`MAX_LANGUAGE_BYTES`].
pub const OTHER_LANGUAGE: &str = "(other)";
/// Longest language name kept apart (it becomes a report key and a metrics label).
pub const MAX_LANGUAGE_BYTES: usize = 64;

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
    /// Failures by kind, with eval_ids.
    pub breakdown: Breakdowns,
    /// How often each place was compared and differed.
    pub fields: FieldRates,
    /// The run over time.
    pub timeline: Timeline,
    /// What double runs taught about places where the shadow differs from itself.
    pub noise: Noise,
    /// Places never compared (`[compare] ignore`), left out of the field rates.
    ignore: Arc<PatternSet>,
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
            breakdown: Breakdowns::default(),
            fields: FieldRates::default(),
            timeline: Timeline::default(),
            noise: Noise::default(),
            ignore: Arc::new(PatternSet::default()),
        }
    }

    /// The same statistics, judging learned noise by `policy`.
    pub fn learning(mut self, policy: NoisePolicy) -> Stats {
        self.noise = self.noise.with_policy(policy);
        self
    }

    /// The same statistics, leaving places under `ignore` out of the field rates.
    pub fn ignoring(mut self, ignore: Arc<PatternSet>) -> Stats {
        self.ignore = ignore;
        self
    }

    /// The same statistics, with a timeline by wall-clock minute (live) instead of by
    /// input position (replay).
    pub fn by_minute(mut self) -> Stats {
        self.timeline = Timeline::by_minute();
        self
    }

    /// Counts one judged evaluation; `rule_names` names the equivalence rules by index.
    /// On the timeline it follows the previous one (replay's order).
    pub fn record(&mut self, evaluation: &Evaluation, verdict: &Verdict, rule_names: &[String]) {
        self.count(&evaluation.view(), verdict, rule_names, Moment::Next);
    }

    /// [`Stats::record`] at a moment: live passes the wall-clock time it was judged.
    pub fn record_at(&mut self, evaluation: &Evaluation, verdict: &Verdict, rule_names: &[String], at: Moment) {
        self.count(&evaluation.view(), verdict, rule_names, at);
    }

    /// [`Stats::record_at`] for a borrowed evaluation: the live path views each evaluation
    /// once, to judge and to count it.
    pub fn record_ref_at(
        &mut self,
        evaluation: &EvaluationRef<'_>,
        verdict: &Verdict,
        rule_names: &[String],
        at: Moment,
    ) {
        self.count(evaluation, verdict, rule_names, at);
    }

    /// [`Stats::record`] for a borrowed evaluation (see [`crate::fixture::view`]).
    pub fn record_ref(&mut self, evaluation: &EvaluationRef<'_>, verdict: &Verdict, rule_names: &[String]) {
        self.count(evaluation, verdict, rule_names, Moment::Next);
    }

    fn count(&mut self, evaluation: &EvaluationRef<'_>, verdict: &Verdict, rule_names: &[String], at: Moment) {
        let kind = verdict.kind();
        let (legacy, shadow) = (Times::of(&evaluation.legacy), Times::of(&evaluation.shadow));
        self.totals.count(kind);
        self.latency.record(legacy, shadow);
        let language = self.language_slot(&evaluation.language);
        language.totals.count(kind);
        language.latency.record(legacy, shadow);
        self.timeline.count(at, kind, legacy.outcome_ms, shadow.outcome_ms);
        let ids_kept = self.policy.examples_per_group;
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
            Verdict::Match => self.count_fields(evaluation, &[]),
            Verdict::Mismatch(differences) => {
                self.count_fields(evaluation, differences);
                self.group(evaluation, differences);
            }
            // The places did differ: the field rates say so. It is no mismatch group.
            Verdict::Noise(differences) => self.count_fields(evaluation, differences),
            Verdict::ShadowError => {
                if let SideRef::Error { error, .. } = &evaluation.shadow {
                    let kind = breakdown::error_kind(error.root());
                    self.breakdown.shadow_error.count(&kind, &evaluation.eval_id, ids_kept);
                }
            }
            Verdict::ShadowLost => {
                if let SideRef::Lost { last_state, .. } = &evaluation.shadow {
                    let kind = breakdown::lost_kind(last_state.as_deref());
                    self.breakdown.shadow_lost.count(kind, &evaluation.eval_id, ids_kept);
                }
            }
            Verdict::LegacyFailed => {
                let kind = breakdown::legacy_kind(&evaluation.legacy);
                self.breakdown.legacy_failed.count(&kind, &evaluation.eval_id, ids_kept);
            }
        }
    }

    /// Field rates of an evaluation whose outcomes were compared.
    fn count_fields(&mut self, evaluation: &EvaluationRef<'_>, differences: &[Difference]) {
        if let (SideRef::Ok { outcome: legacy, .. }, SideRef::Ok { outcome: shadow, .. }) =
            (&evaluation.legacy, &evaluation.shadow)
        {
            // The same document twice has its places once: one walk counts them all.
            let shadow = (shadow != legacy).then(|| shadow.root());
            self.fields.count(&self.ignore, legacy.root(), shadow, differences);
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
        let fits = language.len() <= MAX_LANGUAGE_BYTES && self.by_language.len() < MAX_LANGUAGES;
        let key = if known || fits { language } else { OTHER_LANGUAGE };
        if !known && !self.by_language.contains_key(key) {
            self.by_language.insert(key.to_string(), LanguageStats::default());
        }
        self.by_language.get_mut(key).unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn group(&mut self, evaluation: &EvaluationRef<'_>, differences: &[Difference]) {
        let mut paths: Vec<String> = differences.iter().map(|d| d.folded_path.clone()).collect();
        paths.sort();
        paths.dedup();
        let fingerprint = fingerprint(&paths);
        if !self.groups.contains_key(&fingerprint) && self.groups.len() >= self.policy.max_groups {
            self.ungrouped_mismatches += 1;
            return;
        }
        let language = self.language_key(&evaluation.language).to_owned();
        let policy = Arc::clone(&self.policy);
        let group = self.groups.entry(fingerprint.clone()).or_insert_with(|| Group {
            fingerprint,
            language: language.clone(),
            by_language: BTreeMap::new(),
            paths,
            count: 0,
            examples: Vec::new(),
            tried: 0,
        });
        group.count += 1;
        group.count_language(&language, 1);
        group.offer(policy.examples_per_group, || {
            // Only here is a borrowed request turned into a `Value`: most never need one.
            let request = evaluation.request.as_ref().map(|doc| doc.to_value());
            Example::from_parts(&policy, &evaluation.eval_id, request, differences)
        });
    }

    /// The name a language is counted under (see [`Stats::by_language`]).
    fn language_key<'l>(&self, language: &'l str) -> &'l str {
        if self.by_language.contains_key(language) && language.len() <= MAX_LANGUAGE_BYTES {
            language
        } else {
            OTHER_LANGUAGE
        }
    }
}

/// A side's times, as far as it has them.
#[derive(Clone, Copy)]
struct Times {
    submit_ms: Option<f64>,
    /// Only a side with an outcome has one.
    outcome_ms: Option<f64>,
}

impl Times {
    fn of(side: &SideRef<'_>) -> Times {
        let outcome_ms = match side {
            SideRef::Ok { outcome_ms, .. } => Some(*outcome_ms),
            _ => None,
        };
        Times { submit_ms: side.submit_ms(), outcome_ms }
    }
}

/// FNV-1a of the sorted paths, as 16 hex digits: stable across runs and
/// machines, so a group can be followed from one report to the next.
fn fingerprint(paths: &[String]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
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
                    for (language, count) in &theirs.by_language {
                        ours.count_language(language, *count);
                    }
                    for example in &theirs.examples {
                        ours.offer(self.policy.examples_per_group, || example.clone());
                    }
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
        self.breakdown.merge(&other.breakdown, self.policy.examples_per_group);
        self.fields += &other.fields;
        self.timeline += &other.timeline;
        self.noise += &other.noise;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Side;
    use crate::judge::compare::{self, Rules};
    use serde_json::json;

    fn evaluation(language: &str, stdout: &str) -> Evaluation {
        let side =
            |stdout: &str, ms: f64| Side::Ok { submit_ms: 1.0, outcome_ms: ms, outcome: json!({"stdout": stdout}) };
        Evaluation {
            v: 1,
            eval_id: format!("e-{language}-{stdout}"),
            language: language.into(),
            submitted_at: None,
            request: None,
            legacy: side("1", 100.0),
            shadow: side(stdout, 40.0),
            double_run: None,
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
        assert_eq!(stats.groups.len(), 1, "one group for the same paths, whatever the language");
        let group = stats.groups.values().next().expect("the group");
        assert_eq!((group.count, group.examples.len()), (4, 2));
        assert_eq!(group.paths, vec!["/stdout".to_string()]);
        assert_eq!(group.language, SEVERAL_LANGUAGES);
        assert_eq!(group.by_language, BTreeMap::from([("bash".to_string(), 1), ("python".to_string(), 3)]));
        assert_eq!(stats.latency.delta_outcome_ms.quantile_ms(0.5), Some(-60.0));
    }

    #[test]
    fn groups_beyond_the_cap_are_still_counted() {
        let mut stats = Stats::new(policy(1));
        record(&mut stats, &evaluation("python", "2"));
        let mut other = evaluation("bash", "2");
        other.shadow = Side::Ok { submit_ms: 1.0, outcome_ms: 1.0, outcome: json!({"stdout": "1", "x": 1}) };
        let differences = compare::diff(&Rules::default(), &json!({"stdout": "1"}), &json!({"stdout": "1", "x": 1}));
        stats.record(&other, &Verdict::Mismatch(differences), &[]);
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
        assert_eq!(fingerprint(&["/stdout".into()]), "c7dd857dfbffb5a3".to_string());
        assert_ne!(fingerprint(&["/stdout".into()]), fingerprint(&["/stderr".into()]));
    }

    #[test]
    fn examples_show_distinct_differences() {
        let mut stats = Stats::new(policy(10));
        for (id, stdout) in [("a", "2"), ("b", "2"), ("c", "3"), ("d", "2")] {
            let mut e = evaluation("python", stdout);
            e.eval_id = id.into();
            let differences = compare::diff(&Rules::default(), &json!({"stdout": "1"}), &json!({"stdout": stdout}));
            stats.record(&e, &Verdict::Mismatch(differences), &[]);
        }
        let group = stats.groups.values().next().expect("group");
        assert_eq!(group.count, 4);
        let ids: Vec<&str> = group.examples.iter().map(|e| e.eval_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"], "b and d repeat a's diff");
    }

    #[test]
    fn failures_are_broken_down_with_their_ids() {
        let mut stats = Stats::new(policy(10));
        let ok = Side::Ok { submit_ms: 1.0, outcome_ms: 2.0, outcome: json!({"stdout": "1"}) };
        let with = |id: &str, legacy: Side, shadow: Side| Evaluation {
            v: 1,
            eval_id: id.into(),
            language: "python".into(),
            submitted_at: None,
            request: None,
            legacy,
            shadow,
            double_run: None,
        };
        let error = |e: serde_json::Value| Side::Error { submit_ms: Some(1.0), error: e };
        let lost = |state: Option<&str>| Side::Lost {
            submit_ms: Some(1.0),
            waited_ms: 9.0,
            last_state: state.map(Into::into),
        };
        stats.record(&with("e1", ok.clone(), error(json!({"exc_type": "RuntimeError"}))), &Verdict::ShadowError, &[]);
        stats.record(&with("e2", ok.clone(), error(json!({"http_status": 502}))), &Verdict::ShadowError, &[]);
        stats.record(&with("e3", ok.clone(), error(json!({"exc_type": "RuntimeError"}))), &Verdict::ShadowError, &[]);
        stats.record(&with("l1", ok.clone(), lost(Some("STARTED"))), &Verdict::ShadowLost, &[]);
        stats.record(&with("l2", ok.clone(), lost(None)), &Verdict::ShadowLost, &[]);
        stats.record(&with("f1", error(json!({"http_status": 500})), ok.clone()), &Verdict::LegacyFailed, &[]);
        let table = |b: &crate::judge::breakdown::Breakdown| {
            b.entries().into_iter().map(|e| (e.kind, e.count, e.eval_ids.join(","))).collect::<Vec<_>>()
        };
        assert_eq!(
            table(&stats.breakdown.shadow_error),
            vec![("RuntimeError".into(), 2, "e1,e3".into()), ("HTTP 502".into(), 1, "e2".into())]
        );
        assert_eq!(
            table(&stats.breakdown.shadow_lost),
            vec![("STARTED".into(), 1, "l1".into()), ("not_recorded".into(), 1, "l2".into())]
        );
        assert_eq!(table(&stats.breakdown.legacy_failed), vec![("error: HTTP 500".into(), 1, "f1".into())]);
        assert_eq!(stats.totals.shadow_error, stats.breakdown.shadow_error.total());
    }

    #[test]
    fn an_overlong_language_is_not_a_key() {
        let mut stats = Stats::new(policy(10));
        record(&mut stats, &evaluation(&"x".repeat(100_000), "2"));
        assert_eq!(stats.by_language.keys().collect::<Vec<_>>(), vec![OTHER_LANGUAGE]);
        let group = stats.groups.values().next().expect("group");
        assert_eq!(group.by_language.keys().collect::<Vec<_>>(), vec![OTHER_LANGUAGE]);
        assert_eq!(group.language, OTHER_LANGUAGE);
    }
}
