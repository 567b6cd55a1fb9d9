//! From one evaluation's two sides to a verdict.
//!
//! The order of the questions matters and is the product's definition of a verdict:
//! 1. does an equivalence rule say both sides mean the same (`equivalent`)?
//! 2. did the legacy side fail (`legacy_failed`: Celery is not judged on it)?
//! 3. did the shadow side fail or get lost (`shadow_error`, `shadow_lost`)?
//! 4. otherwise the outcomes are compared: `match` or `mismatch` with its differences;
//! 5. a mismatch made only of places the shadow learned to be noisy is `noise`
//!    ([`crate::judge::noise`]; judged by the engine, which holds what was learned).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::fixture::json::{Kind, Node};
use crate::fixture::view::{EvaluationRef, Field, SideRef};
use crate::fixture::Evaluation;
use crate::judge::compare::{self, Difference, Rules};

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
    fn holds(&self, legacy: &SideRef<'_>, shadow: &SideRef<'_>) -> bool {
        all_hold(&self.legacy, legacy) && all_hold(&self.shadow, shadow)
    }
}

fn all_hold(conditions: &[Condition], side: &SideRef<'_>) -> bool {
    conditions.iter().all(|condition| {
        side.lookup(&condition.tokens).is_some_and(|found| match found {
            Field::State(state) => condition.value.as_str() == Some(state),
            Field::Number(n) => condition.value.as_f64() == Some(n),
            Field::Document(node) => json_equal(node, &condition.value),
        })
    })
}

/// Equality where `1` and `1.0` are the same number (TOML and JSON spell them differently).
fn json_equal(a: Node<'_>, b: &Value) -> bool {
    match (a.kind(), b) {
        (Kind::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Kind::Array(x), Value::Array(y)) => x.len() == y.len() && x.zip(y).all(|(p, q)| json_equal(p, q)),
        // `x` may repeat a key (the last counts): compare its distinct keys with `y`'s.
        (Kind::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&str> = x.map(|(key, _)| key).collect();
            keys.len() == y.len() && y.iter().all(|(k, w)| a.get(k).is_some_and(|v| json_equal(v, w)))
        }
        (Kind::String(x), Value::String(y)) => x == y,
        (Kind::Bool(x), Value::Bool(y)) => x == *y,
        (Kind::Null, Value::Null) => true,
        _ => false,
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
    /// The outcomes differ only at places where the shadow also differs from itself
    /// (learned by [`crate::judge::noise`]): not a difference between the systems.
    Noise(Vec<Difference>),
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
    /// See [`Verdict::Noise`].
    Noise,
    /// See [`Verdict::ShadowError`].
    ShadowError,
    /// See [`Verdict::ShadowLost`].
    ShadowLost,
    /// See [`Verdict::LegacyFailed`].
    LegacyFailed,
}

impl VerdictKind {
    /// Every kind, in report order.
    pub const ALL: [VerdictKind; 7] = [
        VerdictKind::Match,
        VerdictKind::Equivalent,
        VerdictKind::Mismatch,
        VerdictKind::Noise,
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
            VerdictKind::Noise => "noise",
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
            Verdict::Noise(_) => VerdictKind::Noise,
            Verdict::ShadowError => VerdictKind::ShadowError,
            Verdict::ShadowLost => VerdictKind::ShadowLost,
            Verdict::LegacyFailed => VerdictKind::LegacyFailed,
        }
    }
}

/// Judges one evaluation.
pub fn judge(rules: &Rules, equivalences: &[Equivalence], evaluation: &Evaluation) -> Verdict {
    judge_ref(rules, equivalences, &evaluation.view())
}

/// Judges one borrowed evaluation (see [`crate::fixture::view`]).
pub fn judge_ref(rules: &Rules, equivalences: &[Equivalence], evaluation: &EvaluationRef<'_>) -> Verdict {
    let (legacy, shadow) = (&evaluation.legacy, &evaluation.shadow);
    if let Some(index) = equivalences.iter().position(|rule| rule.holds(legacy, shadow)) {
        return Verdict::Equivalent(index);
    }
    let SideRef::Ok { outcome: legacy_outcome, .. } = legacy else {
        return Verdict::LegacyFailed;
    };
    match shadow {
        SideRef::Error { .. } => Verdict::ShadowError,
        SideRef::Lost { .. } => Verdict::ShadowLost,
        // The same document twice differs nowhere, whatever the rules: no walk needed.
        SideRef::Ok { outcome: shadow_outcome, .. } if shadow_outcome == legacy_outcome => Verdict::Match,
        SideRef::Ok { outcome: shadow_outcome, .. } => {
            let differences = compare::diff_nodes(rules, legacy_outcome.root(), shadow_outcome.root());
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
    use crate::fixture::Side;
    use crate::judge::pointer::{Pattern, PatternSet};
    use serde_json::json;

    fn ok(outcome: Value) -> Side {
        Side::Ok { submit_ms: 1.0, outcome_ms: 2.0, outcome }
    }

    fn evaluation(legacy: Side, shadow: Side) -> Evaluation {
        Evaluation {
            v: 1,
            eval_id: "e".into(),
            language: "python".into(),
            submitted_at: None,
            request: None,
            legacy,
            shadow,
            double_run: None,
        }
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
    fn the_same_outcome_on_both_sides_is_a_match_under_any_rules_without_a_walk() {
        let outcome = json!({"stdout": "a\r\nb", "tests": [2, 1], "time": 0.5, "exit_code": 0});
        let pattern = |p: &str| PatternSet::new(vec![Pattern::parse(p).expect("pattern")]);
        let rules = Rules {
            ignore: pattern("/exit_code"),
            unordered: pattern("/tests"),
            text: pattern("/stdout"),
            float_abs: 0.1,
            ..Rules::default()
        };
        let evaluation = evaluation(ok(outcome.clone()), ok(outcome.clone()));
        assert_eq!(judge(&rules, &[], &evaluation), Verdict::Match);
        // The walk the shortcut skips would have found nothing either.
        assert!(compare::diff(&rules, &outcome, &outcome).is_empty());
        // An equivalence rule is still asked first.
        let both_timed_out = Equivalence {
            name: "both timed out".into(),
            legacy: vec![condition("/outcome/status", json!("timeout"))],
            shadow: vec![condition("/outcome/status", json!("timeout"))],
        };
        let timed_out = self::evaluation(ok(json!({"status": "timeout"})), ok(json!({"status": "timeout"})));
        assert_eq!(judge(&Rules::default(), &[both_timed_out], &timed_out), Verdict::Equivalent(0));
    }

    #[test]
    fn equivalence_rule_beats_shadow_error() {
        let shadow = Side::Error { submit_ms: None, error: json!({"exc_type": "SoftTimeLimitExceeded"}) };
        assert_eq!(verdict(ok(json!({"status": "timeout"})), shadow), Verdict::Equivalent(0));
    }

    #[test]
    fn sides_decide_before_outcomes_are_compared() {
        let error = || Side::Error { submit_ms: None, error: json!({"exc_type": "ValueError"}) };
        let lost = || Side::Lost { submit_ms: Some(1.0), waited_ms: 9.0, last_state: None };
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
        let equal = |a: Value, b: Value| json_equal(crate::fixture::json::Doc::from_value(&a).root(), &b);
        assert!(equal(json!(1), json!(1.0)));
        assert!(!equal(json!(1), json!("1")));
        assert!(equal(json!({"a": [1, null, "x", true]}), json!({"a": [1.0, null, "x", true]})));
        assert!(!equal(json!({"a": 1}), json!({"a": 1, "b": 2})));
        assert!(!equal(json!(null), json!(false)));
        let repeated: crate::fixture::json::Doc = serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).expect("doc");
        assert!(json_equal(repeated.root(), &json!({"a": 3, "b": 2})));
        assert!(!json_equal(repeated.root(), &json!({"a": 1, "b": 2})));
        assert!(!json_equal(repeated.root(), &json!({"a": 3, "b": 2, "c": 0})));
    }
}
