//! The report's learned-noise section: what double runs taught, the evidence for each
//! noisy place, and the `[compare] ignore` lines that make it permanent.
//!
//! Built from [`crate::judge::noise::Noise`] in the statistics snapshot; rendered in the
//! HTML page and the text summary. Pure.

use std::fmt::Write;

use serde::Serialize;

use crate::judge::engine::Engine;
use crate::judge::fields::FieldRate;
use crate::judge::noise::NoisyPlace;
use crate::judge::stats::Stats;

/// Candidates listed at most (places that flipped but are not noisy yet).
const CANDIDATES_SHOWN: usize = 20;

/// Learned noise, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseReport {
    /// `[noise] double_run_percent`.
    pub double_run_percent: f64,
    /// `[noise] min_observations`.
    pub min_observations: u64,
    /// `[noise] min_flip_rate`.
    pub min_flip_rate: f64,
    /// Double runs whose two shadow outcomes were compared.
    pub double_runs: u64,
    /// Double runs where either run gave no outcome.
    pub incomplete_double_runs: u64,
    /// Noisy places with their evidence, by path.
    pub learned: Vec<NoisyPlace>,
    /// Places that flipped in some double run but are not noisy yet: observations
    /// (`compared`) and flips (`differed`).
    pub candidates: Vec<FieldRate>,
    /// Mismatches (in kept groups) judged before their places were learned noisy, which
    /// the learned noise would now explain. Verdicts are final: they stay mismatches.
    pub mismatches_now_explained: u64,
    /// The `[compare]` section to paste into the config so that the learned places are
    /// ignored from the start next time (the current `ignore` list plus the learned ones).
    pub suggested_config: Option<String>,
}

impl NoiseReport {
    /// The section for a statistics snapshot.
    pub fn build(engine: &Engine, stats: &Stats) -> NoiseReport {
        let noise = &stats.noise;
        let policy = noise.policy();
        let existing: Vec<String> = engine.config().rules.ignore.patterns().map(ToString::to_string).collect();
        let mut candidates = noise.candidates();
        candidates.truncate(CANDIDATES_SHOWN);
        NoiseReport {
            double_run_percent: policy.double_run_percent,
            min_observations: policy.min_observations,
            min_flip_rate: policy.min_flip_rate,
            double_runs: noise.runs,
            incomplete_double_runs: noise.incomplete,
            learned: noise.learned(),
            candidates,
            mismatches_now_explained: stats
                .groups
                .values()
                .filter(|group| noise.would_explain(&group.paths))
                .map(|group| group.count)
                .sum(),
            suggested_config: noise.suggestion(&existing),
        }
    }

    /// Whether there is anything to show (double runs on, or evidence merged in).
    pub fn is_empty(&self) -> bool {
        self.double_run_percent <= 0.0 && self.double_runs == 0 && self.incomplete_double_runs == 0
    }

    /// The HTML section.
    pub fn html(&self, out: &mut String) {
        use super::html::escape;
        if self.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "<h2>Learned noise: {} place{}</h2><p>{} double runs compared ({} incomplete) at {}% of mirrored \
             evaluations; a place is noise after {} observations with a flip rate of at least {}.</p>",
            self.learned.len(),
            if self.learned.len() == 1 { "" } else { "s" },
            self.double_runs,
            self.incomplete_double_runs,
            self.double_run_percent,
            self.min_observations,
            self.min_flip_rate
        );
        if !self.learned.is_empty() {
            out.push_str("<table><tr><th class=\"text\">place</th><th>runs</th><th>flips</th><th>flip rate</th><th class=\"text\">e.g. eval_ids</th></tr>\n");
            for place in &self.learned {
                let _ = writeln!(
                    out,
                    "<tr><td class=\"text\"><code>{}</code></td><td>{}</td><td>{}</td><td>{:.3}</td><td class=\"text\">{}</td></tr>",
                    escape(&place.path),
                    place.runs,
                    place.flips,
                    place.flip_rate,
                    escape(&place.examples.join(", "))
                );
            }
            out.push_str("</table>\n");
        }
        if self.mismatches_now_explained > 0 {
            let _ = writeln!(
                out,
                "<p>{} mismatches were judged before their places were learned noisy; they stay mismatches.</p>",
                self.mismatches_now_explained
            );
        }
        if let Some(config) = &self.suggested_config {
            let _ = writeln!(
                out,
                "<p>To ignore these places from the start, paste into the config:</p><pre>{}</pre>",
                escape(config)
            );
        }
        if !self.candidates.is_empty() {
            let rows: Vec<String> = self
                .candidates
                .iter()
                .map(|c| format!("<code>{}</code> {}/{}", escape(&c.path), c.differed, c.compared))
                .collect();
            let _ = writeln!(out, "<p>Flipped, not noise (yet): {}.</p>", rows.join(", "));
        }
    }

    /// The text summary's lines.
    pub fn text(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "  learned noise: {} places from {} double runs ({} incomplete)",
            self.learned.len(),
            self.double_runs,
            self.incomplete_double_runs
        );
        for place in &self.learned {
            let _ = writeln!(
                out,
                "    {}  {} flips in {} runs (e.g. {})",
                place.path,
                place.flips,
                place.runs,
                place.examples.join(", ")
            );
        }
        if let Some(config) = &self.suggested_config {
            let _ = writeln!(out, "  to make it permanent:\n    {}", config.trim_end().replace('\n', "\n    "));
        }
    }
}
