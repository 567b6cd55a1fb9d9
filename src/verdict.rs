//! From one evaluation's two sides to a verdict.
//!
//! The order of the questions matters and is the product's definition of a verdict:
//! 1. does an equivalence rule say both sides mean the same (`equivalent`)?
//! 2. did the legacy side fail (`legacy_failed`: Celery is not judged on it)?
//! 3. did the shadow side fail or get lost (`shadow_error`, `shadow_lost`)?
//! 4. otherwise the outcomes are compared: `match` or `mismatch` with its differences.

use serde::Serialize;
use serde_json::Value;

use crate::compare::{self, Difference, Rules};
use crate::fixture::{Evaluation, Side};

/// One condition of an equivalence rule: the side document holds `value` at `pointer`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The pointer as written in the config, for display.
    pub pointer: String,
    /// Its unescaped tokens; the first names a field of the side (`state`, `outcome`, `error`).
    pub tokens: Vec<String>,
    /// The value expected there.
    pub value: Value,
}

/// Outcomes that mean the same in both systems' vocabularies (`[[compare.equivalent]]`).
#[derive(Debug, Clone)]
pub struct Equivalence {
    /// The rule's name, counted in reports.
    pub name: String,
    /// Conditions on the legacy side; all must hold.
    pub legacy: Vec<Condition>,
    /// Conditions on the shadow side; all must hold.
    pub shadow: Vec<Condition>,
}

impl Equivalence {
    fn holds(&self, legacy: &Side, shadow: &Side) -> bool {
        all_hold(&self.legacy, legacy) && all_hold(&self.shadow, shadow)
    }
}

fn all_hold(conditions: &[Condition], side: &Side) -> bool {
    conditions.iter().all(|condition| {
        let tokens: Vec<&str> = condition.tokens.iter().map(String::as_str).collect();
        side.lookup(&tokens).is_some_and(|found| json_equal(&found, &condition.value))
    })
}

/// Equality where `1` and `1.0` are the same number (TOML and JSON spell them differently).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The judgement of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The outcomes are equal under the rules.
    Match,
    /// An equivalence rule (by index in the config) says both sides mean the same.
    Equivalent(usize),
    /// The outcomes differ at these places.
    Mismatch(Vec<Difference>),
    /// The shadow failed the evaluation while the legacy side produced an outcome.
    ShadowError,
    /// No shadow outcome arrived before its deadline.
    ShadowLost,
    /// The legacy side failed or was lost: the shadow is not judged.
    LegacyFailed,
}

/// The verdict's class, as counted and named in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// See [`Verdict::Match`].
    Match,
    /// See [`Verdict::Equivalent`].
    Equivalent,
    /// See [`Verdict::Mismatch`].
    Mismatch,
    /// See [`Verdict::ShadowError`].
    ShadowError,
    /// See [`Verdict::ShadowLost`].
    ShadowLost,
    /// See [`Verdict::LegacyFailed`].
    LegacyFailed,
}

impl VerdictKind {
    /// Every kind, in report order.
    pub const ALL: [VerdictKind; 6] = [
        VerdictKind::Match,
        VerdictKind::Equivalent,
        VerdictKind::Mismatch,
        VerdictKind::ShadowError,
        VerdictKind::ShadowLost,
        VerdictKind::LegacyFailed,
    ];

    /// The kind's name in reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Match => "match",
            VerdictKind::Equivalent => "equivalent",
            VerdictKind::Mismatch => "mismatch",
            VerdictKind::ShadowError => "shadow_error",
            VerdictKind::ShadowLost => "shadow_lost",
            VerdictKind::LegacyFailed => "legacy_failed",
        }
    }
}

impl Verdict {
    /// The verdict's class.
    pub fn kind(&self) -> VerdictKind {
        match self {
            Verdict::Match => VerdictKind::Match,
            Verdict::Equivalent(_) => VerdictKind::Equivalent,
            Verdict::Mismatch(_) => VerdictKind::Mismatch,
            Verdict::ShadowError => VerdictKind::ShadowError,
            Verdict::ShadowLost => VerdictKind::ShadowLost,
            Verdict::LegacyFailed => VerdictKind::LegacyFailed,
        }
    }
}

/// Judges one evaluation.
pub fn judge(rules: &Rules, equivalences: &[Equivalence], evaluation: &Evaluation) -> Verdict {
    let (legacy, shadow) = (&evaluation.legacy, &evaluation.shadow);
    if let Some(index) = equivalences.iter().position(|rule| rule.holds(legacy, shadow)) {
        return Verdict::Equivalent(index);
    }
    let Side::Ok { outcome: legacy_outcome, .. } = legacy else {
        return Verdict::LegacyFailed;
    };
    match shadow {
        Side::Error { .. } => Verdict::ShadowError,
        Side::Lost { .. } => Verdict::ShadowLost,
        Side::Ok { outcome: shadow_outcome, .. } => {
            let differences = compare::diff(rules, legacy_outcome, shadow_outcome);
            if differences.is_empty() {
                Verdict::Match
            } else {
                Verdict::Mismatch(differences)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(outcome: Value) -> Side {
        Side::Ok { submit_ms: 1.0, outcome_ms: 2.0, outcome }
    }

    fn evaluation(legacy: Side, shadow: Side) -> Evaluation {
        Evaluation { v: 1, eval_id: "e".into(), language: "python".into(), request: None, legacy, shadow }
    }

    fn condition(pointer: &str, value: Value) -> Condition {
        let tokens = pointer.trim_start_matches('/').split('/').map(String::from).collect();
        Condition { pointer: pointer.into(), tokens, value }
    }

    fn timeout_rule() -> Equivalence {
        Equivalence {
            name: "timeout".into(),
            legacy: vec![condition("/outcome/status", json!("timeout"))],
            shadow: vec![
                condition("/state", json!("error")),
                condition("/error/exc_type", json!("SoftTimeLimitExceeded")),
            ],
        }
    }

    fn verdict(legacy: Side, shadow: Side) -> Verdict {
        judge(&Rules::default(), &[timeout_rule()], &evaluation(legacy, shadow))
    }

    #[test]
    fn equivalence_rule_beats_shadow_error() {
        let shadow = Side::Error { submit_ms: None, error: json!({"exc_type": "SoftTimeLimitExceeded"}) };
        assert_eq!(verdict(ok(json!({"status": "timeout"})), shadow), Verdict::Equivalent(0));
    }

    #[test]
    fn sides_decide_before_outcomes_are_compared() {
        let error = || Side::Error { submit_ms: None, error: json!({"exc_type": "ValueError"}) };
        let lost = || Side::Lost { submit_ms: Some(1.0), waited_ms: 9.0 };
        assert_eq!(verdict(ok(json!({})), error()), Verdict::ShadowError);
        assert_eq!(verdict(ok(json!({})), lost()), Verdict::ShadowLost);
        assert_eq!(verdict(error(), ok(json!({}))), Verdict::LegacyFailed);
        assert_eq!(verdict(lost(), lost()), Verdict::LegacyFailed);
        assert_eq!(verdict(ok(json!({"a": 1})), ok(json!({"a": 1}))), Verdict::Match);
        assert_eq!(verdict(ok(json!({"a": 1})), ok(json!({"a": 2}))).kind(), VerdictKind::Mismatch);
    }

    #[test]
    fn equivalence_needs_every_condition() {
        let shadow = Side::Error { submit_ms: None, error: json!({"exc_type": "ValueError"}) };
        assert_eq!(verdict(ok(json!({"status": "timeout"})), shadow), Verdict::ShadowError);
    }

    #[test]
    fn numbers_in_conditions_ignore_spelling() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(!json_equal(&json!(1), &json!("1")));
    }
}
