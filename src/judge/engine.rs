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
use crate::fixture::view::EvaluationRef;
use crate::fixture::Evaluation;
use serde_json::Value;

use crate::fixture::json::Doc;
use crate::judge::noise;
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

    /// Counts a double run: the two shadow outcomes of one evaluation, compared under the
    /// `[compare]` rules, teach `stats` which places differ by themselves.
    pub fn observe_double_run(&self, stats: &mut Stats, eval_id: &str, first: &Value, second: &Value) {
        let (first, second) = (Doc::from_value(first), Doc::from_value(second));
        stats.noise.observe(&self.config.rules, eval_id, first.root(), second.root());
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
