//! Configuration: `config.toml -> RawConfig -> Config`.
//!
//! [`raw`] mirrors the file and holds the defaults; [`Config::from_raw`] turns it into real
//! types (parsed pointers, compiled regexes) and reports every problem at once, each naming
//! its key. The commented reference is `config.toml` at the repository root.

pub mod live;
mod live_raw;
pub mod noise;
mod parse;
pub mod raw;
mod redis;

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::judge::compare::Rules;
use crate::judge::example::ExamplePolicy;
use crate::judge::noise::NoisePolicy;
use crate::judge::normalize::{Mask, TextNormalize};
use crate::judge::pointer::{Pattern, PatternSet};
use crate::judge::readiness::Gate;
use crate::judge::verdict::{Condition, Equivalence};
use raw::RawConfig;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How outcomes are compared.
    pub rules: Rules,
    /// Outcomes that mean the same in both vocabularies.
    pub equivalences: Vec<Equivalence>,
    /// When Celery counts as ready.
    pub gate: Gate,
    /// What reports keep.
    pub examples: ExamplePolicy,
    /// The `serve` sections.
    pub live: live::LiveConfig,
    /// Double runs on the shadow and learned noise (`[noise]`).
    pub noise: NoisePolicy,
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, as a dotted TOML path (`compare.text_normalize.masks[0].pattern`).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types; each `toml` message
    /// names line, column and shows the key's line.
    #[error("{}", toml_errors(path, errors))]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's errors, intact, in file order: every syntax error, or else every
        /// type error and unknown key.
        errors: Vec<toml::de::Error>,
    },
    /// The file is valid but `serve` could not start with it; every problem is listed.
    #[error("config {path} cannot serve:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    CannotServe {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The values do not make sense; every problem is listed.
    #[error("config {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One error as `config PATH: ERROR`; several counted, then each on its own lines.
fn toml_errors(path: &Path, errors: &[toml::de::Error]) -> String {
    let all: String = errors.iter().map(|e| e.to_string()).collect();
    let all = all.trim_end();
    match errors.len() {
        1 => format!("config {}: {all}", path.display()),
        n => format!("config {} has {n} TOML errors:\n{all}", path.display()),
    }
}

impl Default for Config {
    fn default() -> Self {
        // The defaults are valid by construction; a test checks it.
        Config::from_raw(RawConfig::default()).unwrap_or_else(|problems| unreachable!("invalid defaults: {problems:?}"))
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ParseError::Toml(errors) => ConfigError::Parse { path: path.into(), errors },
            ParseError::Invalid(problems) => ConfigError::Invalid { path: path.into(), problems },
        })
    }

    /// Reads, parses and validates a config file for `serve`: what [`Config::load`] checks,
    /// then what only `serve` needs (`check-config` checks the same, so the two agree).
    pub fn load_to_serve(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::load(path)?;
        let problems = config.live.serve_problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::CannotServe { path: path.into(), problems })
        }
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        let raw = parse::raw_config(text).map_err(ParseError::Toml)?;
        Config::from_raw(raw).map_err(ParseError::Invalid)
    }

    /// Validates a raw config, collecting every problem.
    pub fn from_raw(raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let mut problems = Problems::default();
        let live = live::check(&raw, &mut problems.0);
        let noise = noise::check(&raw.noise, &mut problems.0);
        let compare = raw.compare;
        let patterns = |problems: &mut Problems, key: &str, items: &[String]| {
            PatternSet::new(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| problems.pointer(&format!("compare.{key}[{i}]"), p))
                    .collect(),
            )
        };
        let ignore = patterns(&mut problems, "ignore", &compare.ignore);
        let unordered = patterns(&mut problems, "unordered", &compare.unordered);
        let text = patterns(&mut problems, "text", &compare.text);
        problems.non_negative("compare.float_abs", compare.float_abs);
        problems.non_negative("compare.float_rel", compare.float_rel);
        let masks = compare
            .text_normalize
            .masks
            .iter()
            .enumerate()
            .filter_map(|(i, mask)| match Regex::new(&mask.pattern) {
                Ok(pattern) => Some(Mask { pattern, replace: mask.replace.clone() }),
                Err(e) => {
                    problems.add(format!("compare.text_normalize.masks[{i}].pattern"), format!("invalid regex: {e}"));
                    None
                }
            })
            .collect();
        let rules = Rules {
            ignore,
            unordered,
            text,
            float_abs: compare.float_abs,
            float_rel: compare.float_rel,
            text_normalize: TextNormalize {
                line_endings: compare.text_normalize.line_endings,
                trailing_whitespace: compare.text_normalize.trailing_whitespace,
                final_newline: compare.text_normalize.final_newline,
                masks,
            },
        };
        let equivalences =
            compare.equivalent.iter().enumerate().map(|(i, rule)| problems.equivalence(i, rule)).collect();

        let g = raw.gate;
        for (key, value) in [("gate.max_mismatch_rate", g.max_mismatch_rate), ("gate.max_error_rate", g.max_error_rate)]
        {
            if !(0.0..=1.0).contains(&value) {
                problems.add(key.into(), format!("must be a fraction between 0 and 1, got {value}"));
            }
        }
        problems.non_negative("gate.max_submit_p99_ms", g.max_submit_p99_ms);
        problems.non_negative("gate.max_outcome_p99_ratio", g.max_outcome_p99_ratio);
        let gate = Gate {
            min_samples: g.min_samples,
            max_mismatch_rate: g.max_mismatch_rate,
            max_error_rate: g.max_error_rate,
            max_lost: g.max_lost,
            max_submit_p99_ms: g.max_submit_p99_ms,
            max_outcome_p99_ratio: g.max_outcome_p99_ratio,
        };

        let r = raw.report;
        if r.max_groups == 0 {
            problems.add("report.max_groups".into(), "must be at least 1".into());
        }
        let redact = r
            .redact
            .iter()
            .enumerate()
            .filter_map(|(i, p)| problems.pointer(&format!("report.redact[{i}]"), p))
            .collect();
        let examples = ExamplePolicy {
            examples_per_group: r.examples_per_group,
            max_groups: r.max_groups,
            redact,
            max_value_bytes: r.max_value_bytes,
            max_diff_lines: r.max_diff_lines,
        };

        problems.finish(Config { rules, equivalences, gate, examples, live, noise })
    }
}

/// Why config text was refused.
#[derive(Debug)]
pub enum ParseError {
    /// Not TOML, or not the config's shape: every error found.
    Toml(Vec<toml::de::Error>),
    /// The values do not make sense.
    Invalid(Vec<Problem>),
}

/// The fields a side document has, for equivalence pointers.
const SIDE_FIELDS: [&str; 6] = ["state", "submit_ms", "outcome_ms", "waited_ms", "outcome", "error"];

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: String, message: String) {
        self.0.push(Problem { key, message });
    }

    fn pointer(&mut self, key: &str, text: &str) -> Option<Pattern> {
        Pattern::parse(text).map_err(|e| self.add(key.to_string(), e.to_string())).ok()
    }

    fn non_negative(&mut self, key: &str, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.add(key.to_string(), format!("must be a finite number >= 0, got {value}"));
        }
    }

    fn equivalence(&mut self, index: usize, rule: &raw::RawEquivalent) -> Equivalence {
        let base = format!("compare.equivalent[{index}]");
        if rule.name.is_empty() {
            self.add(format!("{base}.name"), "must not be empty".into());
        }
        if rule.legacy.is_empty() && rule.shadow.is_empty() {
            self.add(base.clone(), "needs at least one condition in `legacy` or `shadow`".into());
        }
        let mut conditions = |side: &str, map: &std::collections::BTreeMap<String, toml::Value>| -> Vec<Condition> {
            map.iter()
                .filter_map(|(pointer, value)| {
                    let key = format!("{base}.{side}.\"{pointer}\"");
                    let pattern = self.pointer(&key, pointer)?;
                    let Some(tokens) = pattern.literal_tokens() else {
                        self.add(key, "equivalence pointers cannot use `*`".into());
                        return None;
                    };
                    if !tokens.first().is_some_and(|t| SIDE_FIELDS.contains(t)) {
                        self.add(key, format!("must start with one of /{}", SIDE_FIELDS.join(", /")));
                        return None;
                    }
                    let tokens = tokens.into_iter().map(String::from).collect();
                    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
                    Some(Condition { pointer: pointer.clone(), tokens, value })
                })
                .collect()
        };
        let legacy = conditions("legacy", &rule.legacy);
        let shadow = conditions("shadow", &rule.shadow);
        Equivalence { name: rule.name.clone(), legacy, shadow }
    }

    fn finish(self, config: Config) -> Result<Config, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(config)
        } else {
            Err(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Err(ParseError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(ParseError::Toml(errors)) => errors.iter().map(|e| format!("toml: {e}")).collect(),
            Ok(_) => vec![],
        }
    }

    #[test]
    fn defaults_are_valid_and_complete() {
        let config = Config::default();
        assert_eq!(config.equivalences.len(), 1);
        assert_eq!(config.gate, Gate::default());
        assert!(!config.rules.text.is_empty());
    }

    #[test]
    fn the_shipped_reference_config_is_valid() {
        let text = include_str!("../../config.toml");
        match Config::parse(text) {
            Err(e) => panic!("config.toml: {e:?}"),
            Ok(config) => assert_eq!(config.live.serve_problems(), Vec::new(), "config.toml must serve as shipped"),
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let found = problems(
            r#"
            [compare]
            ignore = ["nope", "/ok"]
            float_abs = -1
            text_normalize = { masks = [ { pattern = "(", replace = "" } ] }
            [[compare.equivalent]]
            name = ""
            legacy = { "/outcome/*" = 1, "/bogus" = 2 }
            [gate]
            max_error_rate = 2.0
            "#,
        );
        assert_eq!(found.len(), 7, "{found:#?}");
        assert_eq!(found[0], "compare.ignore[0]: JSON pointer \"nope\" must be empty or start with '/'");
        assert_eq!(found[1], "compare.float_abs: must be a finite number >= 0, got -1");
        assert!(found[2].starts_with("compare.text_normalize.masks[0].pattern: invalid regex"));
        assert_eq!(found[3], "compare.equivalent[0].name: must not be empty");
        assert_eq!(found[4], "compare.equivalent[0].legacy.\"/bogus\": must start with one of /state, /submit_ms, /outcome_ms, /waited_ms, /outcome, /error");
        assert_eq!(found[5], "compare.equivalent[0].legacy.\"/outcome/*\": equivalence pointers cannot use `*`");
        assert_eq!(found[6], "gate.max_error_rate: must be a fraction between 0 and 1, got 2");
    }

    #[test]
    fn unknown_keys_keep_the_toml_position() {
        let found = problems("[compare]\nignroe = []\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("line 2, column 1"), "{}", found[0]);
        assert!(found[0].contains("unknown field `ignroe`"), "{}", found[0]);
    }
}
