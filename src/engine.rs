//! The engine both drivers share: judge an evaluation, count it.
//!
//! Replay feeds it evaluations read from fixtures; the live proxy feeds it evaluations it
//! assembled from what it saw. Whatever the live path concludes, replay concludes from a
//! recording, because both go through [`Engine::record`].

use std::sync::Arc;

use crate::config::Config;
use crate::fixture::Evaluation;
use crate::readiness::{self, Readiness};
use crate::stats::Stats;
use crate::verdict::{self, Verdict};

/// Comparison rules, equivalences and report policy, ready to judge.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Arc<Config>,
    rule_names: Arc<Vec<String>>,
    policy: Arc<crate::example::ExamplePolicy>,
}

impl Engine {
    /// An engine for a validated config.
    pub fn new(config: Config) -> Engine {
        let rule_names = config.equivalences.iter().map(|rule| rule.name.clone()).collect();
        let policy = Arc::new(config.examples.clone());
        Engine { config: Arc::new(config), rule_names: Arc::new(rule_names), policy }
    }

    /// The config it judges by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Empty statistics that keep examples as the config says.
    pub fn new_stats(&self) -> Stats {
        Stats::new(Arc::clone(&self.policy))
    }

    /// Judges one evaluation.
    pub fn judge(&self, evaluation: &Evaluation) -> Verdict {
        verdict::judge(&self.config.rules, &self.config.equivalences, evaluation)
    }

    /// Judges one evaluation and counts it; returns the verdict.
    pub fn record(&self, stats: &mut Stats, evaluation: &Evaluation) -> Verdict {
        let verdict = self.judge(evaluation);
        stats.record(evaluation, &verdict, &self.rule_names);
        verdict
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
