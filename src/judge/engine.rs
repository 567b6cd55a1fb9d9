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
use crate::judge::readiness::{self, Readiness};
use crate::judge::stats::Stats;
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
        Stats::new(Arc::clone(&self.policy)).ignoring(Arc::clone(&self.ignore))
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
        let text = format!("{:?}|{:?}|{:?}|{:?}", c.rules, c.equivalences, c.gate, c.examples);
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
