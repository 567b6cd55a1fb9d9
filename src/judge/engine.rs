//! The engine both drivers share: judge an evaluation, count it.
//!
//! Replay feeds it evaluations read from fixtures, borrowed from each line
//! ([`Engine::record_ref`]); the live proxy feeds it evaluations it assembled from what it
//! saw, owned ([`Engine::judge`], [`Engine::record`]), which are judged through a borrowed
//! view of them. Whatever the live path concludes, replay concludes from a recording,
//! because both are judged by the same code ([`verdict::judge_ref`]) and counted by the
//! same [`Stats`].

use std::sync::Arc;

use crate::config::Config;
use crate::fixture::json::Doc;
use crate::fixture::view::{EvaluationRef, SideRef};
use crate::fixture::Evaluation;
use crate::judge::noise::{self, SecondRun};
use crate::judge::readiness::{self, Readiness};
use crate::judge::stats::Stats;
use crate::judge::timeline::Moment;
use crate::judge::verdict::{self, Verdict};

/// Comparison rules, equivalences and report policy, ready to judge.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Arc<Config>,
    rule_names: Arc<Vec<String>>,
    policy: Arc<crate::judge::example::ExamplePolicy>,
    ignore: Arc<crate::judge::pointer::PatternSet>,
}

impl Engine {
    /// An engine for a validated config.
    pub fn new(config: Config) -> Engine {
        let rule_names = config.equivalences.iter().map(|rule| rule.name.clone()).collect();
        let policy = Arc::new(config.examples.clone());
        let ignore = Arc::new(config.rules.ignore.clone());
        Engine { config: Arc::new(config), rule_names: Arc::new(rule_names), policy, ignore }
    }

    /// The config it judges by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Empty statistics that keep examples as the config says.
    pub fn new_stats(&self) -> Stats {
        Stats::new(Arc::clone(&self.policy)).ignoring(Arc::clone(&self.ignore)).learning(self.config.noise)
    }

    /// Whether the shadow runs `eval_id` twice to learn noise (`[noise] double_run_percent`).
    /// Every driver asks this, so all pick the same evaluations.
    pub fn runs_twice(&self, eval_id: &str) -> bool {
        noise::runs_twice(eval_id, self.config.noise.double_run_percent)
    }

    /// Counts a double run: the evaluation's shadow outcome and its second run's, compared
    /// under the `[compare]` rules, teach `stats` which places differ by themselves. Call
    /// it before the evaluation is counted, so that its own run is part of what judges it.
    pub fn learn(&self, stats: &mut Stats, evaluation: &Evaluation, second: &SecondRun) {
        self.learn_ref(stats, &evaluation.view(), second);
    }

    /// [`Engine::learn`] for a borrowed evaluation.
    pub fn learn_ref(&self, stats: &mut Stats, evaluation: &EvaluationRef<'_>, second: &SecondRun) {
        match (second, &evaluation.shadow) {
            (SecondRun::NotRun, _) => {}
            (SecondRun::Outcome(again), SideRef::Ok { outcome, .. }) => {
                let again = Doc::from_value(again);
                stats.noise.observe(&self.config.rules, &evaluation.eval_id, outcome.root(), again.root());
            }
            _ => stats.noise.incomplete += 1,
        }
    }

    /// Judges one evaluation, then counts it as `noise` rather than `mismatch` when every
    /// difference lies at a place `stats` learned to be noisy; counts it and returns the
    /// verdict. The verdict is final: see [`crate::judge::noise`] on the order of learning.
    pub fn record_learning(&self, stats: &mut Stats, evaluation: &Evaluation, at: Moment) -> Verdict {
        let verdict = stats.noise.reclassify(self.judge(evaluation));
        stats.record_at(evaluation, &verdict, &self.rule_names, at);
        verdict
    }

    /// Judges one evaluation.
    pub fn judge(&self, evaluation: &Evaluation) -> Verdict {
        verdict::judge(&self.config.rules, &self.config.equivalences, evaluation)
    }

    /// Judges one evaluation and counts it; returns the verdict.
    pub fn record(&self, stats: &mut Stats, evaluation: &Evaluation) -> Verdict {
        self.record_ref(stats, &evaluation.view())
    }

    /// Judges one borrowed evaluation (see [`crate::fixture::view`]).
    pub fn judge_ref(&self, evaluation: &EvaluationRef<'_>) -> Verdict {
        verdict::judge_ref(&self.config.rules, &self.config.equivalences, evaluation)
    }

    /// Judges one borrowed evaluation and counts it; returns the verdict. Replay's path.
    pub fn record_ref(&self, stats: &mut Stats, evaluation: &EvaluationRef<'_>) -> Verdict {
        let verdict = self.judge_ref(evaluation);
        stats.record_ref(evaluation, &verdict, &self.rule_names);
        verdict
    }

    /// The example policy statistics keep examples by.
    pub fn policy(&self) -> Arc<crate::judge::example::ExamplePolicy> {
        Arc::clone(&self.policy)
    }

    /// The places never compared.
    pub fn ignore(&self) -> Arc<crate::judge::pointer::PatternSet> {
        Arc::clone(&self.ignore)
    }

    /// A fingerprint of what judging depends on (rules, equivalences, gate, report caps):
    /// statistics with the same fingerprint can be summed. FNV-1a of their debug text.
    pub fn fingerprint(&self) -> String {
        let c = &self.config;
        let mut text = format!("{:?}|{:?}|{:?}|{:?}", c.rules, c.equivalences, c.gate, c.examples);
        // Learned noise changes verdicts only when double runs are on; without them the
        // fingerprint stays what earlier versions wrote, so their states still merge.
        if c.noise.enabled() {
            text.push_str(&format!("|{:?}", c.noise));
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// The equivalence rules' names, by index.
    pub fn rule_names(&self) -> &[String] {
        &self.rule_names
    }

    /// Judges statistics against the gate.
    pub fn readiness(&self, stats: &Stats) -> Readiness {
        readiness::assess(&self.config.gate, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::verdict::VerdictKind;
    use serde_json::json;

    /// What a driver does with a double run: learn from it, then judge and count.
    #[test]
    fn a_driver_learns_before_it_judges_and_verdicts_stay_final() {
        let config = Config::parse("[noise]\ndouble_run_percent = 100\nmin_observations = 2\nmin_flip_rate = 0.5\n")
            .unwrap_or_else(|_| panic!("valid"));
        let engine = Engine::new(config);
        let mut stats = engine.new_stats();
        let ok = |run: u32| crate::fixture::Side::Ok {
            submit_ms: 1.0,
            outcome_ms: 2.0,
            outcome: json!({"stdout": "1\n", "run_id": run}),
        };
        let mut kinds = Vec::new();
        for i in 0..4 {
            let evaluation = Evaluation {
                v: 1,
                eval_id: format!("e{i}"),
                language: "python".into(),
                request: None,
                legacy: crate::fixture::Side::Ok { submit_ms: 1.0, outcome_ms: 2.0, outcome: json!({"stdout": "1\n"}) },
                shadow: ok(i),
                submitted_at: None,
                double_run: None,
            };
            assert!(engine.runs_twice(&evaluation.eval_id));
            let second = if i == 3 {
                SecondRun::Incomplete
            } else {
                SecondRun::Outcome(json!({"stdout": "1\n", "run_id": 100 + i}))
            };
            engine.learn(&mut stats, &evaluation, &second);
            kinds.push(engine.record_learning(&mut stats, &evaluation, Moment::Next).kind());
        }
        assert_eq!(kinds, [VerdictKind::Mismatch, VerdictKind::Noise, VerdictKind::Noise, VerdictKind::Noise]);
        assert_eq!((stats.totals.evaluations, stats.totals.mismatch, stats.totals.noise), (4, 1, 3));
        assert_eq!((stats.noise.runs, stats.noise.incomplete), (3, 1));
        assert_eq!(
            engine.readiness(&stats).checks[1].observed,
            Some(0.25),
            "only the mismatch counts against the gate"
        );
    }
}
