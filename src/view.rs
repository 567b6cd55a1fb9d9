//! Borrowed evaluations: the form the engine judges and counts.
//!
//! Replay parses each fixture line straight into an [`EvaluationRef`] whose strings and
//! documents borrow from the line ([`crate::json::Doc`]), judges it and drops it, so a line
//! costs a handful of allocations. The live proxy builds owned [`Evaluation`]s instead and
//! views them with [`Evaluation::view`]; both paths then go through the same code.

use std::borrow::Cow;

use serde::Deserialize;

use crate::fixture::{Evaluation, Side};
use crate::json::{Doc, Node};

/// One evaluation as seen by both systems, borrowing from where it was read.
///
/// The fields mean what they mean in [`Evaluation`]; field names and order are the
/// format's, so a malformed line is refused with the same message either way.
#[derive(Debug, Clone, PartialEq, Deserialize)]
// Errors name the struct ("invalid type: null, expected struct Evaluation"): keep the name
// users have always seen.
#[serde(deny_unknown_fields, expecting = "struct Evaluation")]
pub struct EvaluationRef<'a> {
    /// Format version, always [`crate::fixture::FORMAT_VERSION`] once validated.
    pub v: u32,
    /// The platform's evaluation id.
    #[serde(borrow)]
    pub eval_id: Cow<'a, str>,
    /// The evaluation's language.
    #[serde(borrow)]
    pub language: Cow<'a, str>,
    /// The submitted request, if it was recorded.
    #[serde(default, borrow)]
    pub request: Option<Doc<'a>>,
    /// What the legacy queue did with it.
    #[serde(borrow)]
    pub legacy: SideRef<'a>,
    /// What the shadow (Celery) did with it.
    #[serde(borrow)]
    pub shadow: SideRef<'a>,
}

/// A member of a side document, found by [`SideRef::lookup`].
#[derive(Debug, Clone, Copy)]
pub enum Field<'d> {
    /// The side's `state`.
    State(&'static str),
    /// One of the side's times (always finite).
    Number(f64),
    /// A value inside the side's outcome or error.
    Document(Node<'d>),
}

impl Field<'_> {
    /// The equal owned value.
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Field::State(state) => serde_json::Value::from(*state),
            Field::Number(n) => serde_json::Value::from(*n),
            Field::Document(node) => node.to_value(),
        }
    }
}

/// The fate of an evaluation on one system; see [`Side`] for the meaning of each field.
#[derive(Debug, Clone, PartialEq)]
pub enum SideRef<'a> {
    /// A final outcome arrived.
    Ok {
        /// How long the submission took, in milliseconds.
        submit_ms: f64,
        /// Time from submission until the outcome was available, in milliseconds.
        outcome_ms: f64,
        /// The outcome document.
        outcome: Doc<'a>,
    },
    /// The system failed the evaluation itself.
    Error {
        /// How long the submission took, when it was accepted at all.
        submit_ms: Option<f64>,
        /// What the system said.
        error: Doc<'a>,
    },
    /// No outcome arrived before the deadline.
    Lost {
        /// How long the submission took, when it was accepted at all.
        submit_ms: Option<f64>,
        /// How long shadowdiff waited before giving up, in milliseconds.
        waited_ms: f64,
    },
}

impl<'a> SideRef<'a> {
    /// The side's `state` word, as written in the format.
    pub fn state(&self) -> &'static str {
        match self {
            SideRef::Ok { .. } => "ok",
            SideRef::Error { .. } => "error",
            SideRef::Lost { .. } => "lost",
        }
    }

    /// The submission time, when known.
    pub fn submit_ms(&self) -> Option<f64> {
        match self {
            SideRef::Ok { submit_ms, .. } => Some(*submit_ms),
            SideRef::Error { submit_ms, .. } | SideRef::Lost { submit_ms, .. } => *submit_ms,
        }
    }

    /// Looks a member of the side document up, as [`Side::lookup`] does: the first token
    /// names a field of the side (`state`, `submit_ms`, `outcome`, `error`, ...), the rest
    /// walks into its value.
    pub fn lookup<S: AsRef<str>>(&self, tokens: &[S]) -> Option<Field<'_>> {
        let (first, rest) = tokens.split_first()?;
        let number = |n: f64| n.is_finite().then_some(Field::Number(n));
        let field = match (first.as_ref(), self) {
            ("state", _) => Some(Field::State(self.state())),
            ("submit_ms", side) => side.submit_ms().and_then(number),
            ("outcome_ms", SideRef::Ok { outcome_ms, .. }) => number(*outcome_ms),
            ("waited_ms", SideRef::Lost { waited_ms, .. }) => number(*waited_ms),
            ("outcome", SideRef::Ok { outcome, .. }) => return outcome.root().lookup(rest).map(Field::Document),
            ("error", SideRef::Error { error, .. }) => return error.root().lookup(rest).map(Field::Document),
            _ => None,
        }?;
        rest.is_empty().then_some(field)
    }

    /// The owned side.
    pub fn to_owned_side(&self) -> Side {
        match self {
            SideRef::Ok { submit_ms, outcome_ms, outcome } => {
                Side::Ok { submit_ms: *submit_ms, outcome_ms: *outcome_ms, outcome: outcome.to_value() }
            }
            SideRef::Error { submit_ms, error } => Side::Error { submit_ms: *submit_ms, error: error.to_value() },
            SideRef::Lost { submit_ms, waited_ms } => Side::Lost { submit_ms: *submit_ms, waited_ms: *waited_ms },
        }
    }
}

impl EvaluationRef<'_> {
    /// The owned evaluation.
    pub fn to_owned_evaluation(&self) -> Evaluation {
        Evaluation {
            v: self.v,
            eval_id: self.eval_id.to_string(),
            language: self.language.to_string(),
            request: self.request.as_ref().map(Doc::to_value),
            legacy: self.legacy.to_owned_side(),
            shadow: self.shadow.to_owned_side(),
        }
    }
}

impl Side {
    /// A borrowed view of the side.
    pub fn view(&self) -> SideRef<'_> {
        match self {
            Side::Ok { submit_ms, outcome_ms, outcome } => {
                SideRef::Ok { submit_ms: *submit_ms, outcome_ms: *outcome_ms, outcome: Doc::from_value(outcome) }
            }
            Side::Error { submit_ms, error } => SideRef::Error { submit_ms: *submit_ms, error: Doc::from_value(error) },
            Side::Lost { submit_ms, waited_ms } => SideRef::Lost { submit_ms: *submit_ms, waited_ms: *waited_ms },
        }
    }
}

impl Evaluation {
    /// A borrowed view of the evaluation, to judge and count it.
    pub fn view(&self) -> EvaluationRef<'_> {
        EvaluationRef {
            v: self.v,
            eval_id: Cow::Borrowed(&self.eval_id),
            language: Cow::Borrowed(&self.language),
            request: self.request.as_ref().map(Doc::from_value),
            legacy: self.legacy.view(),
            shadow: self.shadow.view(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_reaches_into_outcome_and_error() {
        let owned = Side::Error { submit_ms: Some(1.5), error: json!({"exc_type": "X"}) };
        let side = owned.view();
        let found = |tokens: &[&str]| side.lookup(tokens).map(|field| field.to_value());
        assert_eq!(found(&["state"]), Some(json!("error")));
        assert_eq!(found(&["submit_ms"]), Some(json!(1.5)));
        assert_eq!(found(&["error", "exc_type"]), Some(json!("X")));
        assert_eq!(found(&["outcome", "status"]), None);
        assert_eq!(found(&["state", "x"]), None);
        for tokens in [&["state"][..], &["submit_ms"], &["error", "exc_type"], &["error"], &["waited_ms"]] {
            assert_eq!(found(tokens), owned.lookup(tokens), "{tokens:?}");
        }
    }

    #[test]
    fn view_and_back_is_the_same_evaluation() {
        let evaluation = Evaluation {
            v: 1,
            eval_id: "e".into(),
            language: "python".into(),
            request: Some(json!({"code": "x", "n": [1, 2.5]})),
            legacy: Side::Ok { submit_ms: 1.0, outcome_ms: 2.0, outcome: json!({"b": 1, "a": {"c": null}}) },
            shadow: Side::Lost { submit_ms: None, waited_ms: 3.0 },
        };
        assert_eq!(evaluation.view().to_owned_evaluation(), evaluation);
    }
}
