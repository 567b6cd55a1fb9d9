//! The evidence behind the failure counts: which evaluations failed, and how.
//!
//! Every `shadow_error`, `shadow_lost` and `legacy_failed` verdict is counted again here
//! under a *kind*: the Celery exception type or the HTTP status of an error, the last state
//! seen of a lost side. Each kind keeps its count and the first few eval_ids, so a report
//! can say "30 shadow errors: 30 RuntimeError (e-17, e-52, ...)" and an operator can go and
//! look. Bounded like the rest of [`crate::judge::stats`]: kinds are capped in number and
//! length, and ids in number and length; what exceeds a cap is still counted.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

use crate::fixture::json::{Kind, Node};
use crate::fixture::view::SideRef;

/// Kinds kept per breakdown; further kinds are counted under [`OTHER_KIND`].
pub const MAX_KINDS: usize = 32;
/// The kind that collects everything beyond [`MAX_KINDS`].
pub const OTHER_KIND: &str = "(other)";
/// Longest kind kept, in bytes; longer ones are cut (an exception type is short).
pub const MAX_KIND_BYTES: usize = 80;
/// Longest eval_id kept as evidence, in bytes; longer ones are cut.
pub const MAX_ID_BYTES: usize = 128;
/// The kind of a lost side recorded without a `last_state` (older recordings).
pub const NOT_RECORDED: &str = "not_recorded";

/// One kind of failure: how many, and which evaluations (the first few).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What failed, e.g. `RuntimeError`, `HTTP 500`, `STARTED`, `never_seen`.
    pub kind: String,
    /// How many evaluations.
    pub count: u64,
    /// The first of them, up to `[report] examples_per_group`.
    pub eval_ids: Vec<String>,
}

/// Failures of one verdict, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breakdown {
    entries: BTreeMap<String, Entry>,
}

impl Breakdown {
    /// Counts one evaluation under `kind`, keeping its id while fewer than `ids_kept` are.
    pub fn count(&mut self, kind: &str, eval_id: &str, ids_kept: usize) {
        let kind = cut(kind, MAX_KIND_BYTES);
        let key = if self.entries.contains_key(kind) || self.entries.len() < MAX_KINDS { kind } else { OTHER_KIND };
        let entry = match self.entries.get_mut(key) {
            Some(entry) => entry,
            None => self.entries.entry(key.to_owned()).or_insert_with(|| Entry {
                kind: key.to_owned(),
                count: 0,
                eval_ids: Vec::new(),
            }),
        };
        entry.count += 1;
        if entry.eval_ids.len() < ids_kept {
            entry.eval_ids.push(cut(eval_id, MAX_ID_BYTES).to_owned());
        }
    }

    /// Adds another breakdown's counts; ids are kept up to `ids_kept` per kind.
    pub fn merge(&mut self, other: &Breakdown, ids_kept: usize) {
        for theirs in other.entries.values() {
            let key = if self.entries.contains_key(&theirs.kind) || self.entries.len() < MAX_KINDS {
                theirs.kind.as_str()
            } else {
                OTHER_KIND
            };
            let ours = self.entries.entry(key.to_owned()).or_insert_with(|| Entry {
                kind: key.to_owned(),
                count: 0,
                eval_ids: Vec::new(),
            });
            ours.count += theirs.count;
            let room = ids_kept.saturating_sub(ours.eval_ids.len());
            ours.eval_ids.extend(theirs.eval_ids.iter().take(room).cloned());
        }
    }

    /// The entries, most frequent first (ties by kind).
    pub fn entries(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self.entries.values().cloned().collect();
        entries.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
        entries
    }

    /// A breakdown holding `entries` (as [`Breakdown::entries`] lists them).
    pub fn from_entries(entries: Vec<Entry>) -> Breakdown {
        Breakdown { entries: entries.into_iter().map(|entry| (entry.kind.clone(), entry)).collect() }
    }

    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.entries.values().map(|entry| entry.count).sum()
    }
}

/// The three breakdowns every report carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breakdowns {
    /// `shadow_error` verdicts by exception type or HTTP status.
    pub shadow_error: Breakdown,
    /// `shadow_lost` verdicts by the last state seen.
    pub shadow_lost: Breakdown,
    /// `legacy_failed` verdicts by reason.
    pub legacy_failed: Breakdown,
}

impl Breakdowns {
    /// Adds another set of breakdowns.
    pub fn merge(&mut self, other: &Breakdowns, ids_kept: usize) {
        self.shadow_error.merge(&other.shadow_error, ids_kept);
        self.shadow_lost.merge(&other.shadow_lost, ids_kept);
        self.legacy_failed.merge(&other.legacy_failed, ids_kept);
    }
}

impl AddAssign<&Breakdowns> for Breakdowns {
    /// Merges keeping every id the other side kept; [`Breakdowns::merge`] bounds them.
    fn add_assign(&mut self, other: &Breakdowns) {
        self.merge(other, usize::MAX);
    }
}

/// What kind of error a side reports: Celery's `exc_type`, `HTTP <status>` for an HTTP
/// error, `shadowdiff` for a failure of shadowdiff's own (an unreadable answer), the
/// `status` word of a Celery state without an exception, or `error` when it says nothing
/// of these.
pub fn error_kind(error: Node<'_>) -> String {
    let text = |key: &str| match error.get(key).map(Node::kind) {
        Some(Kind::String(text)) if !text.is_empty() => Some(text.to_owned()),
        _ => None,
    };
    if let Some(exc_type) = text("exc_type") {
        return exc_type;
    }
    if let Some(Kind::Number(status)) = error.get("http_status").map(Node::kind) {
        return format!("HTTP {status}");
    }
    if error.get("shadowdiff").is_some() {
        return "shadowdiff".into();
    }
    text("status").unwrap_or_else(|| "error".into())
}

/// Why a side is lost, as recorded: its `last_state`, or [`NOT_RECORDED`].
pub fn lost_kind(last_state: Option<&str>) -> &str {
    last_state.unwrap_or(NOT_RECORDED)
}

/// Why the legacy side failed: `error: <kind>` or `lost: <last state>`.
pub fn legacy_kind(side: &SideRef<'_>) -> String {
    match side {
        SideRef::Error { error, .. } => format!("error: {}", error_kind(error.root())),
        SideRef::Lost { last_state, .. } => format!("lost: {}", lost_kind(last_state.as_deref())),
        SideRef::Ok { .. } => "ok".into(),
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::json::Doc;
    use serde_json::json;

    fn kind_of(error: serde_json::Value) -> String {
        error_kind(Doc::from_value(&error).root())
    }

    #[test]
    fn error_kinds_name_what_failed() {
        assert_eq!(kind_of(json!({"exc_type": "RuntimeError", "exc_message": ["x"]})), "RuntimeError");
        assert_eq!(kind_of(json!({"http_status": 503, "body": "down"})), "HTTP 503");
        assert_eq!(kind_of(json!({"shadowdiff": "shadow response is not JSON"})), "shadowdiff");
        assert_eq!(kind_of(json!({"status": "REVOKED"})), "REVOKED");
        assert_eq!(kind_of(json!({"exc_type": ""})), "error");
        assert_eq!(kind_of(json!("just text")), "error");
    }

    #[test]
    fn counts_kinds_and_keeps_the_first_ids() {
        let mut breakdown = Breakdown::default();
        for id in ["a", "b", "c", "d"] {
            breakdown.count("RuntimeError", id, 3);
        }
        breakdown.count("HTTP 500", "e", 3);
        let entries = breakdown.entries();
        assert_eq!(
            entries[0],
            Entry { kind: "RuntimeError".into(), count: 4, eval_ids: vec!["a".into(), "b".into(), "c".into()] }
        );
        assert_eq!(entries[1], Entry { kind: "HTTP 500".into(), count: 1, eval_ids: vec!["e".into()] });
        assert_eq!(breakdown.total(), 5);
    }

    #[test]
    fn kinds_and_ids_are_bounded() {
        let mut breakdown = Breakdown::default();
        for i in 0..(MAX_KINDS + 5) {
            breakdown.count(&format!("Kind{i}"), "x", 1);
        }
        breakdown.count(&"é".repeat(1000), &"i".repeat(10_000), 1);
        let entries = breakdown.entries();
        assert_eq!(entries.len(), MAX_KINDS + 1);
        let other = entries.iter().find(|e| e.kind == OTHER_KIND).expect("other");
        assert_eq!(other.count, 5 + 1);
        assert_eq!(breakdown.total(), (MAX_KINDS + 6) as u64);
        let mut long = Breakdown::default();
        long.count(&"é".repeat(1000), &"i".repeat(10_000), 1);
        let entry = &long.entries()[0];
        assert_eq!((entry.kind.len(), entry.eval_ids[0].len()), (80, MAX_ID_BYTES));
    }

    #[test]
    fn merging_adds_counts_and_bounds_ids() {
        let (mut a, mut b) = (Breakdown::default(), Breakdown::default());
        a.count("X", "a1", 2);
        b.count("X", "b1", 2);
        b.count("X", "b2", 2);
        b.count("Y", "b3", 2);
        a.merge(&b, 2);
        let entries = a.entries();
        assert_eq!(entries[0], Entry { kind: "X".into(), count: 3, eval_ids: vec!["a1".into(), "b1".into()] });
        assert_eq!(entries[1].count, 1);
    }
}
