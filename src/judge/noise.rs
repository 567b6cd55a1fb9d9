//! Learned noise: places where the shadow disagrees with itself.
//!
//! The legacy system is production and runs each evaluation once; the shadow can run a
//! sample of them twice (`[noise] double_run_percent`). Whatever differs between two runs
//! of the same code on the same system (a random id, a timestamp, hash ordering) is not a
//! difference between the systems, and a mismatch made only of such places is counted as
//! `noise`, not `mismatch`, and never against the gate.
//!
//! - Each double run is one observation: the two shadow outcomes are compared under the
//!   same `[compare]` rules as legacy and shadow, and the places are counted by the same
//!   [`FieldRates`] as the report's field rates (array indices folded to `*`): a place is
//!   *observed* when either run has it and *flips* when the runs differ there.
//! - A place is **noisy** once it has at least `min_observations` observations and its flip
//!   rate (flips / observations) is at least `min_flip_rate`.
//! - [`Noise::reclassify`] turns a mismatch whose every differing place is noisy into
//!   [`Verdict::Noise`]; one non-noisy difference keeps it a mismatch.
//!
//! Verdicts are **final when judged**: a mismatch judged before its places were learned
//! noisy stays a mismatch. Totals, per-language counts, the timeline, `/metrics` counters
//! (which must never go down) and the fleet's sums then always agree with one another,
//! and each count is the verdict the evaluation got. The report shows how many kept
//! mismatches the learned noise would now explain ([`Noise::would_explain`]), and the
//! `[compare] ignore` lines that make the learning permanent for the next run.
//!
//! Which evaluations run twice is decided here too ([`runs_twice`]): a hash of the
//! eval_id, so every driver (the live sidecar, `drive`) and every sidecar of a fleet picks
//! the same ones. Pure: no IO.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

use crate::fixture::json::Node;
use crate::judge::compare::{self, Difference, Rules};
use crate::judge::fields::{FieldRate, FieldRates};
use crate::judge::verdict::Verdict;

/// What a double run's second shadow run gave, as every driver hands it to the engine
/// ([`crate::judge::engine::Engine::learn`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SecondRun {
    /// The evaluation was not run twice.
    NotRun,
    /// It was, but the second run gave no outcome to compare (failed, lost, unavailable).
    Incomplete,
    /// The second run's outcome (with the original eval_id, where the shadow needed
    /// another one for it).
    Outcome(serde_json::Value),
}

impl SecondRun {
    /// How a recording labels the evaluation (its `double_run` key): `compared`,
    /// `incomplete`, or nothing when it ran once.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            SecondRun::NotRun => None,
            SecondRun::Incomplete => Some("incomplete"),
            SecondRun::Outcome(_) => Some("compared"),
        }
    }
}

/// Example eval_ids kept per noisy place.
pub const EXAMPLES_KEPT: usize = 3;
/// Places whose examples are kept (every place is still counted, up to the field rates' cap).
const MAX_EXAMPLE_PLACES: usize = 64;

/// `[noise]`: how much runs twice, and when a place counts as noisy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisePolicy {
    /// Share of mirrored evaluations the shadow runs twice, in percent (0 disables).
    pub double_run_percent: f64,
    /// Fewest double runs that must have observed a place before it can be noisy.
    pub min_observations: u64,
    /// Smallest share of those observations in which the place flipped, as a fraction.
    pub min_flip_rate: f64,
}

impl Default for NoisePolicy {
    fn default() -> Self {
        NoisePolicy { double_run_percent: 0.0, min_observations: 20, min_flip_rate: 0.1 }
    }
}

impl NoisePolicy {
    /// Whether any evaluation runs twice.
    pub fn enabled(&self) -> bool {
        self.double_run_percent > 0.0
    }
}

/// Whether the shadow runs the evaluation `eval_id` twice, at `percent` percent.
///
/// A hash of the eval_id (FNV-1a, salted so that it is independent of the sampling
/// hash): the same evaluation gets the same answer in every process and driver.
pub fn runs_twice(eval_id: &str, percent: f64) -> bool {
    if percent <= 0.0 {
        return false;
    }
    let hash = b"noise:"
        .iter()
        .chain(eval_id.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    // Per million, like the sampler: 0.0001% steps.
    (hash % 1_000_000) < (percent.min(100.0) * 10_000.0) as u64
}

/// One learned noisy place and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoisyPlace {
    /// JSON pointer, array indices folded to `*`.
    pub path: String,
    /// Double runs in which either run had this place.
    pub runs: u64,
    /// Of those, how many differed here.
    pub flips: u64,
    /// `flips / runs`.
    pub flip_rate: f64,
    /// A few eval_ids whose two shadow runs differed here.
    pub examples: Vec<String>,
}

/// What was learned from double runs. Merges by value, like the rest of the statistics.
#[derive(Debug, Clone)]
pub struct Noise {
    policy: NoisePolicy,
    /// Double runs whose two shadow outcomes were compared.
    pub runs: u64,
    /// Double runs where either shadow run gave no outcome: nothing to compare.
    pub incomplete: u64,
    /// Observations and flips per place.
    places: FieldRates,
    /// Example eval_ids by place, bounded.
    examples: BTreeMap<String, Vec<String>>,
}

impl Default for Noise {
    fn default() -> Self {
        Noise::new(NoisePolicy::default())
    }
}

impl Noise {
    /// Nothing learned yet; places become noisy as `policy` says.
    pub fn new(policy: NoisePolicy) -> Noise {
        Noise { policy, runs: 0, incomplete: 0, places: FieldRates::default(), examples: BTreeMap::new() }
    }

    /// The same evidence, judged by `policy` from now on.
    pub fn with_policy(mut self, policy: NoisePolicy) -> Noise {
        self.policy = policy;
        self
    }

    /// The policy places are judged by.
    pub fn policy(&self) -> NoisePolicy {
        self.policy
    }

    /// Counts one double run: the two shadow outcomes of `eval_id`, compared under
    /// `rules` (places under `ignore` are neither observed nor flipped).
    pub fn observe(&mut self, rules: &Rules, eval_id: &str, first: Node<'_>, second: Node<'_>) {
        let differences = compare::diff_nodes(rules, first, second);
        self.runs += 1;
        self.places.count(&rules.ignore, first, Some(second), &differences);
        for difference in &differences {
            keep_example(&mut self.examples, &difference.folded_path, eval_id);
        }
    }

    /// Whether the place (a folded pointer) is learned noisy.
    pub fn is_noisy(&self, folded_path: &str) -> bool {
        self.places.rate(folded_path).is_some_and(|rate| self.noisy(&rate))
    }

    fn noisy(&self, rate: &FieldRate) -> bool {
        rate.compared > 0
            && rate.compared >= self.policy.min_observations
            && rate.differed as f64 >= self.policy.min_flip_rate * rate.compared as f64
    }

    /// Whether every one of `differences` lies at a noisy place (and there is one).
    pub fn explains(&self, differences: &[Difference]) -> bool {
        !differences.is_empty() && differences.iter().all(|d| self.is_noisy(&d.folded_path))
    }

    /// Whether a mismatch group differing at `paths` (folded) would now be noise.
    pub fn would_explain(&self, paths: &[String]) -> bool {
        !paths.is_empty() && paths.iter().all(|path| self.is_noisy(path))
    }

    /// A mismatch made only of noisy differences becomes [`Verdict::Noise`]; any other
    /// verdict is returned as it is.
    pub fn reclassify(&self, verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::Mismatch(differences) if self.explains(&differences) => Verdict::Noise(differences),
            other => other,
        }
    }

    /// Every noisy place with its evidence, by path.
    pub fn learned(&self) -> Vec<NoisyPlace> {
        let mut places: Vec<NoisyPlace> = self
            .places
            .rates()
            .into_iter()
            .filter(|rate| self.noisy(rate))
            .map(|rate| NoisyPlace {
                examples: self.examples.get(&rate.path).cloned().unwrap_or_default(),
                flip_rate: rate.differed as f64 / rate.compared as f64,
                runs: rate.compared,
                flips: rate.differed,
                path: rate.path,
            })
            .collect();
        places.sort_by(|a, b| a.path.cmp(&b.path));
        places
    }

    /// Places that flipped at least once but are not (yet) noisy: candidates, with their
    /// counts, so a reader sees what more evidence would decide.
    pub fn candidates(&self) -> Vec<FieldRate> {
        self.places.rates().into_iter().filter(|rate| rate.differed > 0 && !self.noisy(rate)).collect()
    }

    /// The `[compare]` lines that make the learned noise permanent, ready to paste; `None`
    /// when nothing is learned. `existing` is the current `ignore` list, kept in front.
    pub fn suggestion(&self, existing: &[String]) -> Option<String> {
        let learned = self.learned();
        if learned.is_empty() {
            return None;
        }
        let mut all: Vec<String> = existing.to_vec();
        for place in learned {
            if !all.contains(&place.path) {
                all.push(place.path);
            }
        }
        let quoted: Vec<String> = all.iter().map(|path| toml_string(path)).collect();
        Some(format!("[compare]\nignore = [{}]\n", quoted.join(", ")))
    }

    /// The evidence as a document (fleet and restart state).
    pub fn to_state(&self) -> NoiseState {
        NoiseState {
            runs: self.runs,
            incomplete: self.incomplete,
            places: self.places.rates(),
            examples: self.examples.clone(),
        }
    }

    /// Evidence read back from a document, judged by `policy`.
    pub fn from_state(policy: NoisePolicy, state: NoiseState) -> Noise {
        Noise {
            policy,
            runs: state.runs,
            incomplete: state.incomplete,
            places: FieldRates::from_rates(&state.places),
            examples: state.examples.into_iter().take(MAX_EXAMPLE_PLACES).collect(),
        }
    }
}

/// Keeps `eval_id` as an example of `path`, within the bounds.
fn keep_example(examples: &mut BTreeMap<String, Vec<String>>, path: &str, eval_id: &str) {
    if let Some(ids) = examples.get_mut(path) {
        if ids.len() < EXAMPLES_KEPT && !ids.iter().any(|id| id == eval_id) {
            ids.push(eval_id.to_owned());
        }
    } else if examples.len() < MAX_EXAMPLE_PLACES {
        examples.insert(path.to_owned(), vec![eval_id.to_owned()]);
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl AddAssign<&Noise> for Noise {
    /// Sums the evidence; the policy stays ours.
    fn add_assign(&mut self, other: &Noise) {
        self.runs += other.runs;
        self.incomplete += other.incomplete;
        self.places += &other.places;
        for (path, ids) in &other.examples {
            for id in ids {
                keep_example(&mut self.examples, path, id);
            }
        }
    }
}

/// The learned evidence as stored: older documents without it read as nothing learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseState {
    /// Double runs compared.
    pub runs: u64,
    /// Double runs with nothing to compare.
    pub incomplete: u64,
    /// Observations (`compared`) and flips (`differed`) per place.
    pub places: Vec<FieldRate>,
    /// Example eval_ids by place.
    pub examples: BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::json::Doc;
    use crate::judge::pointer::{Pattern, PatternSet};
    use serde_json::{json, Value};

    fn policy(min_observations: u64, min_flip_rate: f64) -> NoisePolicy {
        NoisePolicy { double_run_percent: 100.0, min_observations, min_flip_rate }
    }

    fn observe(noise: &mut Noise, id: &str, first: Value, second: Value) {
        let rules = Rules::default();
        noise.observe(&rules, id, Doc::from_value(&first).root(), Doc::from_value(&second).root());
    }

    fn mismatch(legacy: Value, shadow: Value) -> Verdict {
        Verdict::Mismatch(compare::diff(&Rules::default(), &legacy, &shadow))
    }

    #[test]
    fn a_place_is_noisy_after_enough_observations_at_a_high_enough_rate() {
        let mut noise = Noise::new(policy(3, 0.5));
        for i in 0..2 {
            observe(
                &mut noise,
                &format!("e{i}"),
                json!({"run_id": i, "out": "x"}),
                json!({"run_id": 100 + i, "out": "x"}),
            );
        }
        assert!(!noise.is_noisy("/run_id"), "2 observations < 3");
        observe(&mut noise, "e2", json!({"run_id": 2, "out": "x"}), json!({"run_id": 102, "out": "x"}));
        assert!(noise.is_noisy("/run_id"));
        assert!(!noise.is_noisy("/out"), "observed 3 times, never flipped");
        assert_eq!(
            noise.learned(),
            vec![NoisyPlace {
                path: "/run_id".into(),
                runs: 3,
                flips: 3,
                flip_rate: 1.0,
                examples: vec!["e0".into(), "e1".into(), "e2".into()]
            }]
        );
        assert_eq!(noise.runs, 3);
    }

    #[test]
    fn a_rare_flip_is_not_noise() {
        let mut noise = Noise::new(policy(4, 0.5));
        observe(&mut noise, "a", json!({"x": 1}), json!({"x": 2}));
        for id in ["b", "c", "d"] {
            observe(&mut noise, id, json!({"x": 1}), json!({"x": 1}));
        }
        assert!(!noise.is_noisy("/x"), "1 flip in 4 is under 0.5");
        assert_eq!(noise.candidates(), vec![FieldRate { path: "/x".into(), compared: 4, differed: 1 }]);
    }

    #[test]
    fn array_indices_fold_to_a_star() {
        let mut noise = Noise::new(policy(1, 1.0));
        observe(
            &mut noise,
            "a",
            json!({"tests": [{"id": "p"}, {"id": "q"}]}),
            json!({"tests": [{"id": "r"}, {"id": "s"}]}),
        );
        assert!(noise.is_noisy("/tests/*/id"));
        let verdict = mismatch(
            json!({"tests": [{"id": 1}, {"id": 2}, {"id": 3}]}),
            json!({"tests": [{"id": 9}, {"id": 8}, {"id": 3}]}),
        );
        assert_eq!(noise.reclassify(verdict).kind(), crate::judge::verdict::VerdictKind::Noise);
    }

    #[test]
    fn only_a_mismatch_made_only_of_noisy_places_is_noise() {
        let mut noise = Noise::new(policy(1, 0.5));
        observe(&mut noise, "a", json!({"run_id": "1", "stdout": "x"}), json!({"run_id": "2", "stdout": "x"}));
        let only_noise = mismatch(json!({"run_id": "l", "stdout": "x"}), json!({"run_id": "s", "stdout": "x"}));
        let with_stdout = mismatch(json!({"run_id": "l", "stdout": "x"}), json!({"run_id": "s", "stdout": "y"}));
        assert!(matches!(noise.reclassify(only_noise), Verdict::Noise(d) if d.len() == 1));
        assert!(matches!(noise.reclassify(with_stdout), Verdict::Mismatch(d) if d.len() == 2));
        assert_eq!(noise.reclassify(Verdict::Match), Verdict::Match);
        assert_eq!(noise.reclassify(Verdict::ShadowError), Verdict::ShadowError);
        assert!(noise.would_explain(&["/run_id".into()]));
        assert!(!noise.would_explain(&["/run_id".into(), "/stdout".into()]));
        assert!(!noise.would_explain(&[]));
    }

    #[test]
    fn ignored_places_are_never_learned() {
        let rules = Rules { ignore: PatternSet::new(vec![Pattern::parse("/t").expect("pattern")]), ..Rules::default() };
        let mut noise = Noise::new(policy(1, 0.1));
        let (a, b) = (json!({"t": 1}), json!({"t": 2}));
        noise.observe(&rules, "a", Doc::from_value(&a).root(), Doc::from_value(&b).root());
        assert!(noise.learned().is_empty());
        assert_eq!(noise.suggestion(&[]), None);
    }

    #[test]
    fn the_suggestion_is_toml_to_paste() {
        let mut noise = Noise::new(policy(1, 0.5));
        observe(&mut noise, "a", json!({"run_id": 1, "we\"ird": 1}), json!({"run_id": 2, "we\"ird": 2}));
        let text = noise.suggestion(&["/worker".into()]).expect("learned");
        assert_eq!(text, "[compare]\nignore = [\"/worker\", \"/run_id\", \"/we\\\"ird\"]\n");
        let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["compare"]["ignore"][2].as_str(), Some("/we\"ird"));
    }

    #[test]
    fn merging_and_state_keep_the_evidence() {
        let (mut a, mut b) = (Noise::new(policy(2, 0.5)), Noise::new(policy(2, 0.5)));
        observe(&mut a, "a", json!({"r": 1}), json!({"r": 2}));
        observe(&mut b, "b", json!({"r": 1}), json!({"r": 3}));
        assert!(!a.is_noisy("/r"));
        a += &b;
        assert!(a.is_noisy("/r"));
        assert_eq!(a.learned()[0].examples, vec!["a".to_string(), "b".to_string()]);
        let text = serde_json::to_string(&a.to_state()).expect("state");
        let back = Noise::from_state(policy(2, 0.5), serde_json::from_str(&text).expect("parses"));
        assert_eq!(back.learned(), a.learned());
        assert_eq!(back.runs, 2);
        let empty: NoiseState = serde_json::from_str("{}").expect("older documents have none");
        assert_eq!(empty, NoiseState::default());
    }

    #[test]
    fn the_double_run_share_is_stable_and_close_to_the_percent() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("e-{i}")).collect();
        assert!(ids.iter().all(|id| !runs_twice(id, 0.0)));
        assert!(ids.iter().all(|id| runs_twice(id, 100.0)));
        let five = ids.iter().filter(|id| runs_twice(id, 5.0)).count();
        assert!((800..1200).contains(&five), "5% of 20000: {five}");
        assert_eq!(runs_twice("e-7", 5.0), runs_twice("e-7", 5.0));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever was observed, a reclassified mismatch is noise exactly when every
            /// difference is at a learned place, and never loses a difference.
            #[test]
            fn noise_is_exactly_the_all_noisy_mismatches(
                runs in proptest::collection::vec((0u8..4, 0u8..4, 0u8..4), 0..30),
                legacy in (0u8..3, 0u8..3, 0u8..3),
                shadow in (0u8..3, 0u8..3, 0u8..3),
                min_observations in 0u64..6,
                min_flip_rate in 0.0f64..=1.0,
            ) {
                let doc = |(a, b, c): (u8, u8, u8)| json!({"a": a, "b": [b], "c": {"d": c}});
                let mut noise = Noise::new(policy(min_observations, min_flip_rate));
                for (i, (a, b, c)) in runs.iter().enumerate() {
                    observe(&mut noise, &format!("e{i}"), doc((*a, *b, *c)), doc((a / 2, *b, c % 2)));
                }
                let verdict = mismatch(doc(legacy), doc(shadow));
                let Verdict::Mismatch(differences) = verdict.clone() else { unreachable!() };
                let all_noisy = !differences.is_empty() && differences.iter().all(|d| noise.is_noisy(&d.folded_path));
                match noise.reclassify(verdict) {
                    Verdict::Noise(kept) => { prop_assert!(all_noisy); prop_assert_eq!(kept, differences); }
                    Verdict::Mismatch(kept) => { prop_assert!(!all_noisy); prop_assert_eq!(kept, differences); }
                    other => prop_assert!(false, "{other:?}"),
                }
                prop_assert!(!noise.is_noisy("/b/*"), "/b/* never flips");
                prop_assert_eq!(noise.runs, runs.len() as u64);
            }
        }
    }
}
