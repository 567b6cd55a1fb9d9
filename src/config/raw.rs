//! The config file as written: `config.toml -> RawConfig -> Config`.
//!
//! These structs mirror the TOML one to one, refuse unknown keys, and carry the defaults.
//! They hold strings and numbers only; [`super::Config`] is the validated form.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::live_raw::*;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How outcomes are compared.
    #[serde(default)]
    pub compare: RawCompare,
    /// When Celery counts as ready.
    #[serde(default)]
    pub gate: RawGate,
    /// What reports keep.
    #[serde(default)]
    pub report: RawReport,
    /// The proxy listener (`serve`).
    #[serde(default)]
    pub proxy: RawProxy,
    /// The authoritative upstream (`serve`).
    #[serde(default)]
    pub legacy: RawLegacy,
    /// Which requests are evaluation submissions (`serve`).
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// The shadow and how much is mirrored (`serve`).
    #[serde(default)]
    pub shadow: RawShadow,
    /// Report and metrics listener (`serve`).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Recording of judged evaluations (`serve`).
    #[serde(default)]
    pub record: RawRecord,
    /// Several sidecars, one verdict: state kept in Redis (`serve`).
    #[serde(default)]
    pub fleet: RawFleet,
    /// Double runs on the shadow, and when a place counts as noise.
    #[serde(default)]
    pub noise: super::noise::RawNoise,
}

/// `[compare]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCompare {
    /// Places that legitimately differ between runs (timings, hosts): never compared.
    pub ignore: Vec<String>,
    /// Arrays whose order is not meaningful, compared as multisets.
    pub unordered: Vec<String>,
    /// Long text (stdout, stderr): normalised, and shown as line diffs.
    pub text: Vec<String>,
    /// Numbers closer than this are equal (float noise between runtimes).
    pub float_abs: f64,
    /// Numbers closer than this fraction of the larger one are equal.
    pub float_rel: f64,
    /// How text places are normalised.
    pub text_normalize: RawTextNormalize,
    /// Outcomes that mean the same in both systems' vocabularies.
    pub equivalent: Vec<RawEquivalent>,
}

impl Default for RawCompare {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        RawCompare {
            ignore: strings(&["/duration_ms", "/started_at", "/finished_at", "/worker", "/tests/*/time_ms"]),
            unordered: strings(&["/warnings"]),
            text: strings(&["/stdout", "/stderr"]),
            float_abs: 1e-9,
            float_rel: 1e-9,
            text_normalize: RawTextNormalize::default(),
            equivalent: vec![RawEquivalent::timeout()],
        }
    }
}

/// `[compare.text_normalize]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTextNormalize {
    /// Windows and old Mac line endings are no difference.
    pub line_endings: bool,
    /// Blanks at line ends are no difference.
    pub trailing_whitespace: bool,
    /// A missing or extra final newline is no difference.
    pub final_newline: bool,
    /// Volatile text (addresses, timings) replaced on both sides.
    pub masks: Vec<RawMask>,
}

impl Default for RawTextNormalize {
    fn default() -> Self {
        RawTextNormalize {
            line_endings: true,
            trailing_whitespace: true,
            final_newline: true,
            masks: vec![RawMask { pattern: "0x[0-9a-f]+".into(), replace: "0x?".into() }],
        }
    }
}

/// One entry of `masks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMask {
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Its replacement (`$1` names a group).
    pub replace: String,
}

/// One `[[compare.equivalent]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEquivalent {
    /// Shown in reports, where equivalent verdicts are counted by rule.
    pub name: String,
    /// Pointer into the legacy side document → expected value.
    #[serde(default)]
    pub legacy: BTreeMap<String, toml::Value>,
    /// Pointer into the shadow side document → expected value.
    #[serde(default)]
    pub shadow: BTreeMap<String, toml::Value>,
}

impl RawEquivalent {
    /// The default rule: a legacy timeout is a Celery soft time limit.
    fn timeout() -> RawEquivalent {
        let text = |s: &str| toml::Value::String(s.to_string());
        RawEquivalent {
            name: "timeout".into(),
            legacy: BTreeMap::from([("/outcome/status".to_string(), text("timeout"))]),
            shadow: BTreeMap::from([
                ("/state".to_string(), text("error")),
                ("/error/exc_type".to_string(), text("SoftTimeLimitExceeded")),
            ]),
        }
    }
}

/// `[gate]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGate {
    /// Fewer judged evaluations than this cannot make the gate say `ready`.
    pub min_samples: u64,
    /// The migration's mismatch budget, as a fraction (0.001 = 0.1%).
    pub max_mismatch_rate: f64,
    /// The migration's error budget, as a fraction.
    pub max_error_rate: f64,
    /// The migration requires zero data loss.
    pub max_lost: u64,
    /// The migration's latency criterion for submitting to Celery.
    pub max_submit_p99_ms: f64,
    /// Celery must be at least this fast relative to legacy (1.0 = as fast).
    pub max_outcome_p99_ratio: f64,
}

impl Default for RawGate {
    fn default() -> Self {
        let gate = crate::judge::readiness::Gate::default();
        RawGate {
            min_samples: gate.min_samples,
            max_mismatch_rate: gate.max_mismatch_rate,
            max_error_rate: gate.max_error_rate,
            max_lost: gate.max_lost,
            max_submit_p99_ms: gate.max_submit_p99_ms,
            max_outcome_p99_ratio: gate.max_outcome_p99_ratio,
        }
    }
}

/// `[report]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReport {
    /// Examples kept per mismatch group: enough to see the pattern, few enough to read.
    pub examples_per_group: usize,
    /// Groups kept; bounds memory when every mismatch differs somewhere new.
    pub max_groups: usize,
    /// Request fields shown only as length and hash (user code may be confidential).
    pub redact: Vec<String>,
    /// Longest string shown in an example.
    pub max_value_bytes: usize,
    /// Most lines of one text diff shown.
    pub max_diff_lines: usize,
}

impl Default for RawReport {
    fn default() -> Self {
        let policy = crate::judge::example::ExamplePolicy::default();
        RawReport {
            examples_per_group: policy.examples_per_group,
            max_groups: policy.max_groups,
            redact: vec!["/code".into()],
            max_value_bytes: policy.max_value_bytes,
            max_diff_lines: policy.max_diff_lines,
        }
    }
}
