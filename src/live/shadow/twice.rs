//! Double runs: the second shadow run of a sampled evaluation, from which
//! [`crate::judge::noise`] learns the places where the shadow differs from itself.
//!
//! Which evaluations run twice is the engine's decision
//! ([`crate::judge::engine::Engine::runs_twice`]); this module makes the second job and
//! reads its outcome. A Celery shadow gets the same job again: [`super::Shadow::run`]
//! writes a second task with its own task id, waited for, expired, removed or revoked and
//! its result key deleted like any other. An HTTP shadow keys evaluations by the id in the
//! request, so the second submission carries a derived id ([`derived_id`]) at the route's
//! `eval_id` pointer, and its outcome gets the original id back wherever it echoes it;
//! an API that assigns ids itself cannot be asked twice, and is not.
//!
//! The second run never makes a verdict, never counts in a total or latency, and never
//! reaches the breaker: it only teaches.

use bytes::Bytes;
use serde_json::Value;

use super::{Job, Shadow, ShadowRun};
use crate::fixture::Side;
pub use crate::judge::noise::SecondRun;

/// The id of an evaluation's second submission to an HTTP shadow.
pub fn derived_id(eval_id: &str) -> String {
    format!("{eval_id}.rerun")
}

impl Shadow {
    /// The job the shadow runs a second time, if it can: `eval_id_pointer` is where the
    /// request carries the eval_id (`None` when the API assigns it).
    pub fn second_job(&self, job: &Job, eval_id_pointer: Option<&[String]>) -> Option<Job> {
        match self {
            Shadow::Celery(_) => Some(job.clone()),
            Shadow::Http(_) => {
                let derived = derived_id(&job.eval_id);
                let mut request = job.request();
                *lookup_mut(&mut request, eval_id_pointer?)? = Value::String(derived.clone());
                let body = Bytes::from(serde_json::to_vec(&request).ok()?);
                Some(Job { eval_id: derived, body, ..job.clone() })
            }
        }
    }
}

/// The second run's outcome, as the learner compares it with the first's.
pub fn second_run(first: &Job, second: &Job, run: ShadowRun) -> SecondRun {
    match run {
        ShadowRun::Side { side: Side::Ok { outcome, .. }, .. } => {
            SecondRun::Outcome(restore_id(outcome, &second.eval_id, &first.eval_id))
        }
        ShadowRun::Response(response) => match response.to_side() {
            Side::Ok { outcome, .. } => SecondRun::Outcome(restore_id(outcome, &second.eval_id, &first.eval_id)),
            _ => SecondRun::Incomplete,
        },
        _ => SecondRun::Incomplete,
    }
}

/// Every string equal to `derived` becomes `original` (an outcome that echoes its id).
/// `value` with every string equal to `derived` (an id the shadow was given in place of
/// the original) put back to `original`, so an outcome that echoes its id compares equal.
pub fn restore_id(value: Value, derived: &str, original: &str) -> Value {
    if derived == original {
        return value;
    }
    match value {
        Value::String(text) if text == derived => Value::String(original.to_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| restore_id(v, derived, original)).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, restore_id(v, derived, original))).collect())
        }
        other => other,
    }
}

fn lookup_mut<'v>(value: &'v mut Value, tokens: &[String]) -> Option<&'v mut Value> {
    tokens.iter().try_fold(value, |current, token| match current {
        Value::Object(map) => map.get_mut(token),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_echoed_derived_id_is_restored() {
        let outcome = json!({"eval_id": "e-1.rerun", "stdout": "e-1.rerun\n", "list": ["e-1.rerun"]});
        assert_eq!(
            restore_id(outcome, "e-1.rerun", "e-1"),
            json!({"eval_id": "e-1", "stdout": "e-1.rerun\n", "list": ["e-1"]})
        );
    }

    #[test]
    fn the_id_is_found_where_the_route_says() {
        let mut request = json!({"meta": {"id": "e-1"}, "code": "x"});
        *lookup_mut(&mut request, &["meta".into(), "id".into()]).expect("found") = json!("e-1.rerun");
        assert_eq!(request, json!({"meta": {"id": "e-1.rerun"}, "code": "x"}));
        assert!(lookup_mut(&mut request, &["nope".into()]).is_none());
    }
}
