//! The structural comparison of two outcome documents under the `[compare]` rules.
//!
//! [`diff`] walks both documents at once and lists every place where they differ, by JSON
//! pointer and kind. Object key order never matters, `null` differs from a missing key,
//! and `1` differs from `"1"`. Rules say which places are ignored, which arrays are
//! multisets, which strings are long text to normalise, and how close numbers must be.

use serde::Serialize;
use serde_json::Value;

use crate::normalize::TextNormalize;
use crate::pointer::{self, PatternSet, Segment};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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
    let mut walker = Walker { rules, path: Vec::new(), out: Vec::new() };
    walker.walk(legacy, shadow);
    walker.out
}

/// Arrays longer than this are not searched for a reordering (the search is quadratic).
const MAX_ORDER_SEARCH: usize = 512;

struct Walker<'r, 'v> {
    rules: &'r Rules,
    path: Vec<Segment<'v>>,
    out: Vec<Difference>,
}

impl<'v> Walker<'_, 'v> {
    fn walk(&mut self, a: &'v Value, b: &'v Value) {
        if self.rules.ignore.matches(&self.path) {
            return;
        }
        match (a, b) {
            (Value::Object(left), Value::Object(right)) => {
                for (key, value) in left {
                    self.path.push(Segment::Key(key));
                    match right.get(key) {
                        Some(other) => self.walk(value, other),
                        None => self.report(DiffKind::Missing, Some(value), None),
                    }
                    self.path.pop();
                }
                for (key, value) in right {
                    if !left.contains_key(key) {
                        self.path.push(Segment::Key(key));
                        self.report(DiffKind::Extra, None, Some(value));
                        self.path.pop();
                    }
                }
            }
            (Value::Array(left), Value::Array(right)) => self.walk_arrays(a, b, left, right),
            (Value::String(left), Value::String(right)) => {
                if left == right {
                    return;
                }
                if self.rules.text.matches(&self.path) {
                    let norm = &self.rules.text_normalize;
                    let (left, right) = (norm.apply(left), norm.apply(right));
                    if left != right {
                        let (l, r) = (Value::String(left.into_owned()), Value::String(right.into_owned()));
                        self.push(DiffKind::Value, Some(l), Some(r), true);
                    }
                } else {
                    self.report(DiffKind::Value, Some(a), Some(b));
                }
            }
            (Value::Number(left), Value::Number(right)) => {
                if !numbers_equal(left, right, self.rules.float_abs, self.rules.float_rel) {
                    self.report(DiffKind::Value, Some(a), Some(b));
                }
            }
            (Value::Bool(left), Value::Bool(right)) => {
                if left != right {
                    self.report(DiffKind::Value, Some(a), Some(b));
                }
            }
            (Value::Null, Value::Null) => {}
            _ => self.report(DiffKind::Type, Some(a), Some(b)),
        }
    }

    fn walk_arrays(&mut self, a: &'v Value, b: &'v Value, left: &'v [Value], right: &'v [Value]) {
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
        let before = self.out.len();
        for (index, (x, y)) in left.iter().zip(right).enumerate() {
            self.path.push(Segment::Index(index));
            self.walk(x, y);
            self.path.pop();
        }
        if self.out.len() > before && left.len() <= MAX_ORDER_SEARCH && self.same_multiset(left, right) {
            self.out.truncate(before);
            self.report(DiffKind::Order, Some(a), Some(b));
        }
    }

    /// True when every element of `left` pairs with an equal (under the rules) element of
    /// `right`, each used once. Elements are compared at the array's own path plus `*`.
    fn same_multiset(&mut self, left: &'v [Value], right: &'v [Value]) -> bool {
        let mut used = vec![false; right.len()];
        left.iter().enumerate().all(|(index, x)| {
            let found = (0..right.len()).find(|&j| {
                if used[j] {
                    return false;
                }
                let before = self.out.len();
                self.path.push(Segment::Index(index));
                self.walk(x, &right[j]);
                self.path.pop();
                let equal = self.out.len() == before;
                self.out.truncate(before);
                equal
            });
            found.map(|j| used[j] = true).is_some()
        })
    }

    fn report(&mut self, kind: DiffKind, legacy: Option<&Value>, shadow: Option<&Value>) {
        self.push(kind, legacy.cloned(), shadow.cloned(), false);
    }

    fn push(&mut self, kind: DiffKind, legacy: Option<Value>, shadow: Option<Value>, is_text: bool) {
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
    use crate::pointer::Pattern;
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

    #[test]
    fn folded_paths_group_array_elements() {
        let found = diff(&rules(), &json!({"tests": [{"ok": true}]}), &json!({"tests": [{"ok": false}]}));
        assert_eq!(found[0].path, "/tests/0/ok");
        assert_eq!(found[0].folded_path, "/tests/*/ok");
    }
}
