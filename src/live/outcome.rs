//! Final outcomes: when a result document is final, how it maps onto the compared shape,
//! and polling a result endpoint until it is final or the deadline passes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::config::live::OutcomeRule;
use crate::fixture::json::Doc;
use crate::fixture::view::SideRef;
use crate::fixture::Side;
use crate::judge::pointer;
use crate::live::http_client::{encode_segment, HttpClient};

/// True when the document's status (at the rule's pointer) is one of the terminal values.
pub fn is_terminal(rule: &OutcomeRule, document: &Value) -> bool {
    let tokens: Vec<&str> = rule.status.iter().map(String::as_str).collect();
    matches!(pointer::lookup(document, &tokens), Some(Value::String(status)) if rule.terminal.iter().any(|t| t == status))
}

/// Longest status word kept from an upstream's document: it names a breakdown entry.
pub const MAX_STATUS_BYTES: usize = 64;

/// The status a non-final document reports (`queued`, `running`), cut to
/// [`MAX_STATUS_BYTES`]; `no_status` when it has none.
pub fn status_of(rule: &OutcomeRule, document: &Value) -> String {
    let tokens: Vec<&str> = rule.status.iter().map(String::as_str).collect();
    match pointer::lookup(document, &tokens) {
        Some(Value::String(status)) => {
            let mut end = status.len().min(MAX_STATUS_BYTES);
            while !status.is_char_boundary(end) {
                end -= 1;
            }
            status[..end].to_owned()
        }
        Some(other) => other.to_string().chars().take(MAX_STATUS_BYTES).collect(),
        None => "no_status".into(),
    }
}

/// Applies the rule's field mapping; without one the document is kept as it is.
pub fn map_fields(rule: &OutcomeRule, document: Value) -> Value {
    if rule.fields.is_empty() {
        return document;
    }
    let mut out = Value::Object(Map::new());
    for (target, source) in &rule.fields {
        let source: Vec<&str> = source.iter().map(String::as_str).collect();
        if let Some(value) = pointer::lookup(&document, &source) {
            insert(&mut out, target, value.clone());
        }
    }
    out
}

fn insert(root: &mut Value, target: &[String], value: Value) {
    let Some((last, parents)) = target.split_last() else {
        *root = value;
        return;
    };
    let mut current = root;
    for token in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else { return };
        current = map.entry(token.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current {
        map.insert(last.clone(), value);
    }
}

/// The URL of an evaluation's result: base URL + template with `{eval_id}` encoded.
pub fn result_url(base: &str, rule: &OutcomeRule, eval_id: &str) -> String {
    format!("{base}{}", rule.url_template.replace("{eval_id}", &encode_segment(eval_id)))
}

/// If `path` (without query) is the result path of some evaluation, its `eval_id`.
pub fn eval_id_from_path<'p>(rule: &OutcomeRule, path: &'p str) -> Option<&'p str> {
    let path = path.split('?').next().unwrap_or(path);
    let (prefix, suffix) = rule.url_template.split_once("{eval_id}")?;
    let id = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// What polling ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// A final document (mapped), and when it was seen.
    Final(Value, Instant),
    /// The deadline passed first; what was last seen, as a short word for reports: the
    /// last non-final status, `HTTP <code>`, `unreadable`, `unreachable`, or `never_seen`.
    Lost(String),
}

/// GETs the result URL every `rule.interval` until a terminal document or `deadline`.
/// Errors and non-final answers are retried: only the deadline ends a poll without one.
pub async fn poll(client: &HttpClient, url: &str, rule: &OutcomeRule, deadline: Instant) -> Polled {
    let mut last_seen: Option<String> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Polled::Lost(last_seen.unwrap_or_else(|| "never_seen".into()));
        }
        let budget = (deadline - now).min(Duration::from_secs(30));
        match client.get(url, budget).await {
            Ok((status, body)) if status.is_success() => match serde_json::from_slice::<Value>(&body) {
                Ok(document) if is_terminal(rule, &document) => {
                    return Polled::Final(map_fields(rule, document), Instant::now());
                }
                Ok(document) => last_seen = Some(status_of(rule, &document)),
                Err(e) => {
                    tracing::debug!(%url, error = %e, "result is not JSON");
                    last_seen = Some("unreadable".into());
                }
            },
            Ok((status, _)) => last_seen = Some(format!("HTTP {}", status.as_u16())),
            Err(e) => {
                tracing::debug!(%url, error = %e, "result endpoint unreachable");
                last_seen = Some("unreachable".into());
            }
        }
        let wake = Instant::now() + rule.interval;
        if wake >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
        } else {
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A final outcome document as an upstream's response carried it (`response` mode with no
/// field mapping), kept as bytes until it is judged: it is then read once, straight into
/// the form the engine compares, instead of into a `Value` first.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseOutcome {
    /// How long the submission took, in milliseconds (the outcome came with it).
    pub submit_ms: f64,
    /// The response body.
    pub body: Bytes,
    /// Which upstream sent it (`legacy`, `shadow`), for the error when it is not JSON.
    pub from: &'static str,
}

impl ResponseOutcome {
    /// The side as a recording holds it: the parsed document, or an error saying why not.
    pub fn to_side(&self) -> Side {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(document) => Side::Ok { submit_ms: self.submit_ms, outcome_ms: self.submit_ms, outcome: document },
            Err(e) => self.not_json(&e),
        }
    }

    /// The side as the engine judges it; `error` holds the error side when the body is
    /// not JSON.
    pub fn view<'a>(&'a self, error: &'a mut Option<Side>) -> SideRef<'a> {
        match Doc::parse(&self.body) {
            Ok(outcome) => SideRef::Ok { submit_ms: self.submit_ms, outcome_ms: self.submit_ms, outcome },
            Err(e) => error.insert(self.not_json(&e)).view(),
        }
    }

    fn not_json(&self, e: &serde_json::Error) -> Side {
        Side::Error {
            submit_ms: Some(self.submit_ms),
            error: json!({"shadowdiff": format!("{} response is not JSON: {e}", self.from)}),
        }
    }
}

/// A side waiting to be judged: whole, or as its response body.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldSide {
    /// Obtained otherwise (polled, observed, mapped, failed): already a side.
    Side(Side),
    /// Read from a response when judged.
    Response(ResponseOutcome),
}

impl HeldSide {
    /// The side as a recording holds it.
    pub fn into_side(self) -> Side {
        match self {
            HeldSide::Side(side) => side,
            HeldSide::Response(response) => response.to_side(),
        }
    }

    /// The side as the engine judges it (see [`ResponseOutcome::view`]).
    pub fn view<'a>(&'a self, error: &'a mut Option<Side>) -> SideRef<'a> {
        match self {
            HeldSide::Side(side) => side.view(),
            HeldSide::Response(response) => response.view(error),
        }
    }

    /// [`HeldSide::view`] beside the other system's side, already viewed as `other_view`:
    /// where both are response bodies with the same bytes and those read as JSON, the
    /// document read for `other` is this side's too, and the bytes are not read twice.
    pub fn view_beside<'a>(
        &'a self,
        error: &'a mut Option<Side>,
        other: &HeldSide,
        other_view: &SideRef<'a>,
    ) -> SideRef<'a> {
        if let (HeldSide::Response(mine), HeldSide::Response(theirs), SideRef::Ok { outcome, .. }) =
            (self, other, other_view)
        {
            if mine.body == theirs.body {
                return SideRef::Ok { submit_ms: mine.submit_ms, outcome_ms: mine.submit_ms, outcome: outcome.clone() };
            }
        }
        self.view(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::live::OutcomeMode;

    fn rule(fields: &[(&str, &str)]) -> OutcomeRule {
        let split = |p: &str| p.trim_start_matches('/').split('/').map(String::from).collect::<Vec<_>>();
        OutcomeRule {
            mode: OutcomeMode::Poll,
            url_template: "/evaluations/{eval_id}".into(),
            interval: Duration::from_millis(10),
            deadline: Duration::from_secs(1),
            status: vec!["status".into()],
            terminal: vec!["completed".into(), "failed".into()],
            fields: fields.iter().map(|(t, s)| (split(t), split(s))).collect(),
        }
    }

    #[test]
    fn terminal_status_decides() {
        assert!(is_terminal(&rule(&[]), &json!({"status": "completed"})));
        assert!(!is_terminal(&rule(&[]), &json!({"status": "queued"})));
        assert!(!is_terminal(&rule(&[]), &json!({"state": "completed"})));
    }

    #[test]
    fn fields_map_onto_the_compared_shape() {
        let mapped = map_fields(
            &rule(&[("/stdout", "/result/out"), ("/meta/code", "/exit")]),
            json!({"result": {"out": "1"}, "exit": 0, "junk": 1}),
        );
        assert_eq!(mapped, json!({"stdout": "1", "meta": {"code": 0}}));
        assert_eq!(map_fields(&rule(&[]), json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn a_response_outcome_is_judged_and_recorded_as_its_parsed_side() {
        let ok =
            ResponseOutcome { submit_ms: 2.5, body: Bytes::from_static(br#"{"b":1,"a":"x","b":2}"#), from: "shadow" };
        let parsed = Side::Ok { submit_ms: 2.5, outcome_ms: 2.5, outcome: json!({"a": "x", "b": 2}) };
        assert_eq!(ok.to_side(), parsed);
        let mut error = None;
        assert_eq!(ok.view(&mut error).to_owned_side(), parsed);
        assert_eq!(error, None);

        let bad = ResponseOutcome { submit_ms: 1.0, body: Bytes::from_static(b"<html>"), from: "legacy" };
        let expected = Side::Error {
            submit_ms: Some(1.0),
            error: json!({"shadowdiff": "legacy response is not JSON: expected value at line 1 column 1"}),
        };
        assert_eq!(bad.to_side(), expected);
        let mut error = None;
        assert_eq!(HeldSide::Response(bad).view(&mut error).to_owned_side(), expected);
    }

    #[test]
    fn a_side_with_the_other_sides_bytes_is_read_once_and_judged_alike() {
        let response = |body: &'static [u8], submit_ms, from| {
            HeldSide::Response(ResponseOutcome { submit_ms, body: Bytes::from_static(body), from })
        };
        let body = br#"{"stdout":"1","exit_code":0}"#;
        let legacy = response(body, 1.0, "legacy");
        let (mut legacy_error, mut shadow_error) = (None, None);
        let legacy_view = legacy.view(&mut legacy_error);

        let same = response(body, 2.0, "shadow");
        let shared = same.view_beside(&mut shadow_error, &legacy, &legacy_view);
        let SideRef::Ok { outcome: shared_doc, .. } = &shared else { panic!("not read: {shared:?}") };
        let SideRef::Ok { outcome: legacy_doc, .. } = &legacy_view else { panic!("not read: {legacy_view:?}") };
        assert_eq!(shared_doc, legacy_doc);
        assert_eq!(
            shared.to_owned_side(),
            Side::Ok { submit_ms: 2.0, outcome_ms: 2.0, outcome: json!({"stdout": "1", "exit_code": 0}) }
        );

        let other = response(br#"{"stdout":"2","exit_code":0}"#, 3.0, "shadow");
        let mut other_error = None;
        let own = other.view_beside(&mut other_error, &legacy, &legacy_view);
        assert_eq!(
            own.to_owned_side(),
            Side::Ok { submit_ms: 3.0, outcome_ms: 3.0, outcome: json!({"stdout": "2", "exit_code": 0}) }
        );

        // The same bytes that are not JSON: each side says it of itself.
        let (bad_legacy, bad_shadow) = (response(b"<html>", 1.0, "legacy"), response(b"<html>", 2.0, "shadow"));
        let (mut e1, mut e2) = (None, None);
        let bad_legacy_view = bad_legacy.view(&mut e1);
        let bad_shadow_view = bad_shadow.view_beside(&mut e2, &bad_legacy, &bad_legacy_view);
        assert_eq!(
            bad_shadow_view.to_owned_side(),
            Side::Error {
                submit_ms: Some(2.0),
                error: json!({"shadowdiff": "shadow response is not JSON: expected value at line 1 column 1"}),
            }
        );
    }

    #[test]
    fn result_paths_round_trip() {
        let r = rule(&[]);
        assert_eq!(result_url("http://h:1", &r, "e 1"), "http://h:1/evaluations/e%201");
        assert_eq!(eval_id_from_path(&r, "/evaluations/e-1?x=2"), Some("e-1"));
        assert_eq!(eval_id_from_path(&r, "/evaluations/"), None);
        assert_eq!(eval_id_from_path(&r, "/evaluations/a/b"), None);
        assert_eq!(eval_id_from_path(&r, "/other/e-1"), None);
    }
}
