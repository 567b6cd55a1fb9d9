//! The structural comparison of two outcome documents under the `[compare]` rules.
//!
//! [`diff`] walks both documents at once and lists every place where they differ, by JSON
//! pointer and kind. Object key order never matters, `null` differs from a missing key,
//! and `1` differs from `"1"`. Rules say which places are ignored, which arrays are
//! multisets, which strings are long text to normalise, and how close numbers must be.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fixture::json::{Doc, Elements, Kind, Members, Node};
use crate::judge::normalize::TextNormalize;
use crate::judge::pointer::{self, PatternSet, Segment};

/// What `[compare]` says about two outcome documents.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Places never compared (timings, worker names).
    pub ignore: PatternSet,
    /// Arrays compared as multisets.
    pub unordered: PatternSet,
    /// Strings normalised as text and shown as line diffs.
    pub text: PatternSet,
    /// Numbers are equal when `|a-b| <= float_abs`...
    pub float_abs: f64,
    /// ...or when `|a-b| <= float_rel * max(|a|,|b|)`.
    pub float_rel: f64,
    /// How `text` places are normalised.
    pub text_normalize: TextNormalize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            ignore: PatternSet::default(),
            unordered: PatternSet::default(),
            text: PatternSet::default(),
            float_abs: 0.0,
            float_rel: 0.0,
            text_normalize: TextNormalize::default(),
        }
    }
}

/// How two values at one place differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Same type, different value.
    Value,
    /// Different JSON types (`1` and `"1"`, `null` and `0`).
    Type,
    /// Present in the legacy outcome, absent from the shadow one.
    Missing,
    /// Absent from the legacy outcome, present in the shadow one.
    Extra,
    /// An ordered array holds the same elements in another order.
    Order,
    /// Arrays of different lengths.
    Length,
}

impl DiffKind {
    /// The kind's name as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Value => "value",
            DiffKind::Type => "type",
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Order => "order",
            DiffKind::Length => "length",
        }
    }
}

/// One place where the outcomes differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// JSON pointer of the place, e.g. `/tests/3/status`.
    pub path: String,
    /// The same pointer with array indices folded to `*`, used to group mismatches.
    #[serde(skip)]
    pub folded_path: String,
    /// How they differ.
    pub kind: DiffKind,
    /// The legacy value (normalised, for text places); absent when missing there.
    pub legacy: Option<Value>,
    /// The shadow value (normalised, for text places); absent when missing there.
    pub shadow: Option<Value>,
    /// True for text places, whose values are best shown as a line diff.
    #[serde(skip)]
    pub is_text: bool,
}

/// Lists every difference between two outcome documents under the rules.
pub fn diff(rules: &Rules, legacy: &Value, shadow: &Value) -> Vec<Difference> {
    diff_nodes(rules, Doc::from_value(legacy).root(), Doc::from_value(shadow).root())
}

/// [`diff`] over borrowed documents, the form the engine judges.
pub fn diff_nodes(rules: &Rules, legacy: Node<'_>, shadow: Node<'_>) -> Vec<Difference> {
    let mut walker = Walker { rules, path: Vec::with_capacity(8), out: Vec::new(), found: 0, probing: 0 };
    walker.walk(legacy, shadow);
    walker.out
}

/// Arrays longer than this are not searched for a reordering (the search is quadratic).
const MAX_ORDER_SEARCH: usize = 512;

struct Walker<'r, 'd> {
    rules: &'r Rules,
    path: Vec<Segment<'d>>,
    out: Vec<Difference>,
    /// Differences found so far: `out.len()`, plus those only counted while probing.
    found: usize,
    /// Above zero while a multiset search tries pairs of elements: it only needs to know
    /// whether a pair differs, so differences are counted there, not rendered and copied.
    probing: usize,
}

impl<'d> Walker<'_, 'd> {
    fn walk(&mut self, a: Node<'d>, b: Node<'d>) {
        if self.rules.ignore.matches(&self.path) {
            return;
        }
        match (a.kind(), b.kind()) {
            (Kind::Object(left), Kind::Object(right)) => self.walk_objects(left, right),
            (Kind::Array(left), Kind::Array(right)) => self.walk_arrays(a, b, left, right),
            (Kind::String(left), Kind::String(right)) => {
                if left == right {
                    return;
                }
                if self.rules.text.matches(&self.path) {
                    let norm = &self.rules.text_normalize;
                    let (left, right) = (norm.apply(left), norm.apply(right));
                    if left != right {
                        self.push(DiffKind::Value, true, || {
                            (Some(Value::String(left.into_owned())), Some(Value::String(right.into_owned())))
                        });
                    }
                } else {
                    self.report(DiffKind::Value, Some(a), Some(b));
                }
            }
            (Kind::Number(left), Kind::Number(right)) => {
                if !numbers_equal(&left, &right, self.rules.float_abs, self.rules.float_rel) {
                    self.report(DiffKind::Value, Some(a), Some(b));
                }
            }
            (Kind::Bool(left), Kind::Bool(right)) => {
                if left != right {
                    self.report(DiffKind::Value, Some(a), Some(b));
                }
            }
            (Kind::Null, Kind::Null) => {}
            _ => self.report(DiffKind::Type, Some(a), Some(b)),
        }
    }

    /// Objects are compared member by member, by key, and differences are listed in key
    /// order.
    fn walk_objects(&mut self, left: Members<'d>, right: Members<'d>) {
        if left.len() == right.len() && self.walk_aligned(left.clone(), right.clone()) {
            return;
        }
        self.walk_by_key(left, right);
    }

    /// Both sides nearly always write the same keys in the same order: this pairs members
    /// as written, which needs no sorting, and returns false (having taken back what it
    /// found) when the keys do not line up, or when a key repeats and something differs
    /// (of repeated keys only the last counts, which pairing as written cannot tell).
    fn walk_aligned(&mut self, left: Members<'d>, right: Members<'d>) -> bool {
        let before = self.found;
        // Where each differing member's differences start in `out`, to list them in key
        // order afterwards; allocated only when something differs.
        let mut differing: Vec<(&'d str, usize)> = Vec::new();
        for ((key, x), (other, y)) in left.clone().zip(right) {
            if key != other {
                self.rewind(before);
                return false;
            }
            let start = self.found;
            self.path.push(Segment::Key(key));
            self.walk(x, y);
            self.path.pop();
            if self.found > start {
                differing.push((key, start));
            }
        }
        if differing.is_empty() {
            return true;
        }
        let mut keys: Vec<&str> = left.map(|(key, _)| key).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
            self.rewind(before);
            return false;
        }
        // Each member's differences do not depend on its siblings: listing the blocks in
        // key order gives what a walk in key order would have found, in its order.
        if self.probing == 0 && differing.windows(2).any(|pair| pair[0].0 > pair[1].0) {
            let ends: Vec<usize> = differing.iter().skip(1).map(|&(_, start)| start).chain([self.out.len()]).collect();
            let mut blocks: Vec<(&str, Vec<Difference>)> = Vec::with_capacity(differing.len());
            for (&(key, start), &end) in differing.iter().zip(&ends).rev() {
                blocks.push((key, self.out.drain(start..end).collect()));
            }
            blocks.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (_, block) in blocks {
                self.out.extend(block);
            }
        }
        true
    }

    /// Pairs members by key (the last of repeated keys), in key order: members only the
    /// legacy side has are reported among the others, then those only the shadow has (the
    /// order a walk over two `serde_json::Map`s gives).
    fn walk_by_key(&mut self, left: Members<'d>, right: Members<'d>) {
        let (left, right) = (by_key(left), by_key(right));
        let mut j = 0;
        for &(key, value) in &left {
            while j < right.len() && right[j].0 < key {
                j += 1;
            }
            self.path.push(Segment::Key(key));
            if j < right.len() && right[j].0 == key {
                self.walk(value, right[j].1);
                j += 1;
            } else {
                self.report(DiffKind::Missing, Some(value), None);
            }
            self.path.pop();
        }
        let mut i = 0;
        for &(key, value) in &right {
            while i < left.len() && left[i].0 < key {
                i += 1;
            }
            if i == left.len() || left[i].0 != key {
                self.path.push(Segment::Key(key));
                self.report(DiffKind::Extra, None, Some(value));
                self.path.pop();
            }
        }
    }

    fn walk_arrays(&mut self, a: Node<'d>, b: Node<'d>, left: Elements<'d>, right: Elements<'d>) {
        if self.rules.unordered.matches(&self.path) {
            if left.len() != right.len() {
                self.report(DiffKind::Length, Some(a), Some(b));
            } else if !self.same_multiset(left, right) {
                self.report(DiffKind::Value, Some(a), Some(b));
            }
            return;
        }
        if left.len() != right.len() {
            self.report(DiffKind::Length, Some(a), Some(b));
            return;
        }
        let before = self.found;
        for (index, (x, y)) in left.clone().zip(right.clone()).enumerate() {
            self.path.push(Segment::Index(index));
            self.walk(x, y);
            self.path.pop();
        }
        if self.found > before && left.len() <= MAX_ORDER_SEARCH && self.same_multiset(left, right) {
            self.rewind(before);
            self.report(DiffKind::Order, Some(a), Some(b));
        }
    }

    /// True when every element of `left` pairs with an equal (under the rules) element of
    /// `right`, each used once. Elements are compared at the array's own path plus `*`.
    fn same_multiset(&mut self, left: Elements<'d>, right: Elements<'d>) -> bool {
        let mut used = vec![false; right.len()];
        self.probing += 1;
        let all_paired = left.enumerate().all(|(index, x)| {
            let found = right.clone().enumerate().find(|&(j, y)| {
                if used[j] {
                    return false;
                }
                let before = self.found;
                self.path.push(Segment::Index(index));
                self.walk(x, y);
                self.path.pop();
                let equal = self.found == before;
                self.rewind(before);
                equal
            });
            found.map(|(j, _)| used[j] = true).is_some()
        });
        self.probing -= 1;
        all_paired
    }

    /// Forgets the differences found after the first `found`.
    fn rewind(&mut self, found: usize) {
        self.found = found;
        if self.probing == 0 {
            self.out.truncate(found);
        }
    }

    fn report(&mut self, kind: DiffKind, legacy: Option<Node<'_>>, shadow: Option<Node<'_>>) {
        self.push(kind, false, || (legacy.map(Node::to_value), shadow.map(Node::to_value)));
    }

    /// Counts a difference; outside a probe also renders its path and copies its values.
    fn push(&mut self, kind: DiffKind, is_text: bool, values: impl FnOnce() -> (Option<Value>, Option<Value>)) {
        self.found += 1;
        if self.probing > 0 {
            return;
        }
        let (legacy, shadow) = values();
        self.out.push(Difference {
            path: pointer::render(&self.path),
            folded_path: pointer::render_folded(&self.path),
            kind,
            legacy,
            shadow,
            is_text,
        });
    }
}

/// An object's members sorted by key, each key once: the last of repeated keys, as a
/// `serde_json::Map` keeps it. The sort is stable, so the last of a run is the last written.
fn by_key(members: Members<'_>) -> Vec<(&str, Node<'_>)> {
    let mut sorted: Vec<(&str, Node<'_>)> = members.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut kept: Vec<(&str, Node<'_>)> = Vec::with_capacity(sorted.len());
    for member in sorted {
        if kept.last().is_some_and(|last| last.0 == member.0) {
            kept.pop();
        }
        kept.push(member);
    }
    kept
}

/// Integers compare exactly (beyond 2^53 too); otherwise `|a-b| <= abs` or `|a-b| <= rel * max(|a|,|b|)`.
fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number, abs: f64, rel: f64) -> bool {
    if let (Some(x), Some(y)) = (as_integer(a), as_integer(b)) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => {
            let delta = (x - y).abs();
            delta <= abs || delta <= rel * x.abs().max(y.abs())
        }
        _ => false,
    }
}

fn as_integer(n: &serde_json::Number) -> Option<i128> {
    n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::pointer::Pattern;
    use serde_json::json;

    fn set(patterns: &[&str]) -> PatternSet {
        PatternSet::new(patterns.iter().map(|p| Pattern::parse(p).expect("pattern")).collect())
    }

    fn rules() -> Rules {
        Rules {
            ignore: set(&["/duration_ms", "/tests/*/time_ms"]),
            unordered: set(&["/warnings"]),
            text: set(&["/stdout"]),
            float_abs: 1e-9,
            float_rel: 1e-9,
            text_normalize: TextNormalize::default(),
        }
    }

    fn kinds(legacy: Value, shadow: Value) -> Vec<(String, DiffKind)> {
        diff(&rules(), &legacy, &shadow).into_iter().map(|d| (d.path, d.kind)).collect()
    }

    fn one(path: &str, kind: DiffKind) -> Vec<(String, DiffKind)> {
        vec![(path.to_string(), kind)]
    }

    #[test]
    fn key_order_and_ignored_paths_do_not_matter() {
        assert!(kinds(json!({"a": 1, "b": 2, "duration_ms": 5}), json!({"b": 2, "a": 1, "duration_ms": 9})).is_empty());
        let tests_l = json!({"tests": [{"name": "t", "time_ms": 1}]});
        let tests_r = json!({"tests": [{"name": "t", "time_ms": 7}]});
        assert!(kinds(tests_l, tests_r).is_empty());
    }

    #[test]
    fn each_kind_of_difference_is_reported() {
        assert_eq!(kinds(json!({"s": "a"}), json!({"s": "b"})), one("/s", DiffKind::Value));
        assert_eq!(kinds(json!({"s": 1}), json!({"s": "1"})), one("/s", DiffKind::Type));
        assert_eq!(kinds(json!({"s": null}), json!({})), one("/s", DiffKind::Missing));
        assert_eq!(kinds(json!({}), json!({"s": null})), one("/s", DiffKind::Extra));
        assert_eq!(kinds(json!({"l": [1, 2]}), json!({"l": [2, 1]})), one("/l", DiffKind::Order));
        assert_eq!(kinds(json!({"l": [1, 2]}), json!({"l": [1]})), one("/l", DiffKind::Length));
        assert_eq!(kinds(json!({"l": [1, 2]}), json!({"l": [1, 3]})), one("/l/1", DiffKind::Value));
        assert_eq!(kinds(json!({"b": true}), json!({"b": false})), one("/b", DiffKind::Value));
        assert_eq!(kinds(json!({"n": null}), json!({"n": 0})), one("/n", DiffKind::Type));
    }

    #[test]
    fn unordered_arrays_are_multisets() {
        assert!(kinds(json!({"warnings": ["a", "b", "a"]}), json!({"warnings": ["a", "a", "b"]})).is_empty());
        assert_eq!(
            kinds(json!({"warnings": ["a", "b"]}), json!({"warnings": ["a", "a"]})),
            one("/warnings", DiffKind::Value)
        );
        assert_eq!(
            kinds(json!({"warnings": ["a"]}), json!({"warnings": ["a", "a"]})),
            one("/warnings", DiffKind::Length)
        );
    }

    #[test]
    fn numbers_within_tolerance_are_equal() {
        assert!(kinds(json!({"x": 0.1 + 0.2}), json!({"x": 0.3})).is_empty());
        assert!(kinds(json!({"x": 1e12}), json!({"x": 1e12 + 1e2})).is_empty());
        assert_eq!(kinds(json!({"x": 0.3}), json!({"x": 0.3001})), one("/x", DiffKind::Value));
        assert_eq!(kinds(json!({"x": u64::MAX}), json!({"x": u64::MAX - 1})), one("/x", DiffKind::Value));
        assert!(kinds(json!({"x": 1}), json!({"x": 1.0})).is_empty());
    }

    #[test]
    fn text_paths_are_normalised_and_keep_normalised_values() {
        assert!(kinds(json!({"stdout": "1\r\n2  \n"}), json!({"stdout": "1\n2"})).is_empty());
        let found = diff(&rules(), &json!({"stdout": "1\r\n"}), &json!({"stdout": "2\n"}));
        assert_eq!(found.len(), 1);
        assert!(found[0].is_text);
        assert_eq!(found[0].legacy, Some(json!("1")));
        assert_eq!(found[0].shadow, Some(json!("2")));
        // A non-text path is compared byte for byte.
        assert_eq!(kinds(json!({"stderr": "a\r\n"}), json!({"stderr": "a\n"})), one("/stderr", DiffKind::Value));
    }

    /// Differences of documents as written (members in any order, keys possibly repeated).
    fn written(legacy: &str, shadow: &str) -> Vec<(String, DiffKind)> {
        let (legacy, shadow): (Doc, Doc) = (parse(legacy), parse(shadow));
        diff_nodes(&rules(), legacy.root(), shadow.root()).into_iter().map(|d| (d.path, d.kind)).collect()
    }

    fn parse(text: &str) -> Doc<'_> {
        serde_json::from_str(text).expect("document")
    }

    #[test]
    fn differences_come_in_key_order_whatever_the_written_order() {
        let found = written(r#"{"b":1,"a":1,"c":[1],"d":0}"#, r#"{"b":2,"a":2,"c":[2],"d":0}"#);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/a", "/b", "/c/0"]);
        let mixed = written(r#"{"b":1,"z":0,"a":1}"#, r#"{"a":2,"y":0,"b":2}"#);
        let paths: Vec<(&str, DiffKind)> = mixed.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        assert_eq!(
            paths,
            [("/a", DiffKind::Value), ("/b", DiffKind::Value), ("/z", DiffKind::Missing), ("/y", DiffKind::Extra)]
        );
    }

    #[test]
    fn of_repeated_keys_the_last_counts() {
        assert!(written(r#"{"a":1,"a":2}"#, r#"{"a":3,"a":2}"#).is_empty());
        assert_eq!(written(r#"{"a":2,"a":1}"#, r#"{"a":2,"a":3}"#), one("/a", DiffKind::Value));
        assert!(written(r#"{"a":1,"b":0,"a":2}"#, r#"{"b":0,"a":2}"#).is_empty());
    }

    #[test]
    fn folded_paths_group_array_elements() {
        let found = diff(&rules(), &json!({"tests": [{"ok": true}]}), &json!({"tests": [{"ok": false}]}));
        assert_eq!(found[0].path, "/tests/0/ok");
        assert_eq!(found[0].folded_path, "/tests/*/ok");
    }
}
