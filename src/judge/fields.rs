//! Field-level rates: for each place in the outcomes, how often it was compared and how
//! often it differed, across all traffic.
//!
//! A mismatch group says "these evaluations differ at /stdout and /exit_code together"; a
//! field rate says "/stdout differed in 120 of 2,000 compared evaluations". Places are JSON
//! pointers with array indices folded to `*`, as in groups. A place counts as compared in an
//! evaluation whose outcomes were compared (`match` or `mismatch`) when either outcome has
//! it and no `ignore` rule covers it; it counts once per evaluation however many array
//! elements share it. Bounded: at most [`MAX_FIELDS`] places, later ones under
//! [`OTHER_FIELD`].

use std::collections::HashMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

use crate::fixture::json::{Kind, Node};
use crate::judge::compare::Difference;
use crate::judge::pointer::{self, PatternSet, Segment};

/// Places kept apart; further ones are counted under [`OTHER_FIELD`].
pub const MAX_FIELDS: usize = 256;
/// The place that collects everything beyond [`MAX_FIELDS`].
pub const OTHER_FIELD: &str = "(other)";
/// Longest place kept, in bytes (keys are the outcomes' own and could be anything).
const MAX_FIELD_BYTES: usize = 200;
/// Deepest place walked: deeper structure is counted at this depth.
const MAX_DEPTH: usize = 16;

/// One place and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRate {
    /// JSON pointer, array indices folded to `*`.
    pub path: String,
    /// Compared evaluations in which either outcome had this place.
    pub compared: u64,
    /// Of those, how many differed here.
    pub differed: u64,
}

/// One place in the tree of places seen.
#[derive(Debug, Clone)]
struct Place {
    /// Its folded pointer.
    path: String,
    /// Object members seen under it: key and place index. Outcomes have few keys per
    /// object, so a short list searched in order beats hashing whole paths.
    members: Vec<(Box<str>, usize)>,
    /// The place of its array elements (`*`), once seen.
    elements: Option<usize>,
    compared: u64,
    differed: u64,
    /// The serial of the last evaluation counted here (with [`DIFFERED`] once it counted
    /// a difference there): a place counts once per evaluation.
    seen_in: u64,
}

impl Place {
    fn new(path: String) -> Place {
        Place { path, members: Vec::new(), elements: None, compared: 0, differed: 0, seen_in: 0 }
    }
}

/// The root (the whole outcome, never reported) and the overflow place.
const ROOT: usize = 0;
const OTHER: usize = 1;

/// Marks, in `seen_in`, that the evaluation of that serial already counted a difference.
const DIFFERED: u64 = 1 << 63;

/// Counts per place.
#[derive(Debug, Clone)]
pub struct FieldRates {
    places: Vec<Place>,
    /// Place index by folded pointer, for the differences (rare next to the walk).
    by_path: HashMap<String, usize>,
    /// Evaluations counted so far; each one's serial.
    serial: u64,
}

impl Default for FieldRates {
    fn default() -> Self {
        FieldRates {
            places: vec![Place::new(String::new()), Place::new(OTHER_FIELD.to_owned())],
            by_path: HashMap::new(),
            serial: 0,
        }
    }
}

/// A child of a place: a member key or the array elements.
#[derive(Clone, Copy)]
enum Step<'k> {
    Member(&'k str),
    Elements,
}

impl FieldRates {
    /// Counts one compared evaluation: every place of either outcome not covered by
    /// `ignore`, and the places of `differences`. `shadow` is `None` when the shadow's
    /// outcome is the same document as legacy's: its places are legacy's, counted once.
    pub fn count(
        &mut self,
        ignore: &PatternSet,
        legacy: Node<'_>,
        shadow: Option<Node<'_>>,
        differences: &[Difference],
    ) {
        self.serial += 1;
        let mut path = Vec::with_capacity(8);
        for root in std::iter::once(legacy).chain(shadow) {
            self.walk(ignore, root, ROOT, &mut path);
        }
        for difference in differences {
            // A difference lies at a place one of the outcomes has, so it was counted as
            // compared above; a repeat within the evaluation is not counted again.
            let index = match self.by_path.get(difference.folded_path.as_str()) {
                Some(index) => *index,
                None if self.places.len() >= MAX_FIELDS + 2 || difference.folded_path.len() > MAX_FIELD_BYTES => OTHER,
                None => continue,
            };
            let place = &mut self.places[index];
            if place.seen_in == self.serial {
                place.seen_in = self.serial | DIFFERED;
                place.differed += 1;
            }
        }
    }

    fn walk<'d>(&mut self, ignore: &PatternSet, node: Node<'d>, at: usize, path: &mut Vec<Segment<'d>>) {
        if at != ROOT {
            if ignore.matches(path) {
                return;
            }
            let place = &mut self.places[at];
            if place.seen_in & !DIFFERED != self.serial {
                place.seen_in = self.serial;
                place.compared += 1;
            }
        }
        // Below the overflow place nothing more is told apart.
        if at == OTHER || path.len() >= MAX_DEPTH {
            return;
        }
        match node.kind() {
            Kind::Object(members) => {
                for (key, value) in members {
                    let child = self.child(at, Step::Member(key));
                    path.push(Segment::Key(key));
                    self.walk(ignore, value, child, path);
                    path.pop();
                }
            }
            Kind::Array(elements) => {
                let child = self.child(at, Step::Elements);
                for (index, value) in elements.enumerate() {
                    path.push(Segment::Index(index));
                    self.walk(ignore, value, child, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// The place under `parent` for `step`, made when first seen (or [`OTHER`] when
    /// there is no room or its pointer is too long).
    fn child(&mut self, parent: usize, step: Step<'_>) -> usize {
        let found = match step {
            Step::Member(key) => self.places[parent].members.iter().find(|(k, _)| &**k == key).map(|(_, i)| *i),
            Step::Elements => self.places[parent].elements,
        };
        if let Some(index) = found {
            return index;
        }
        let mut path = self.places[parent].path.clone();
        match step {
            Step::Member(key) => {
                path.push('/');
                pointer::escape_into(key, &mut path);
            }
            Step::Elements => path.push_str("/*"),
        }
        let index = if self.places.len() >= MAX_FIELDS + 2 || path.len() > MAX_FIELD_BYTES {
            OTHER
        } else {
            self.by_path.insert(path.clone(), self.places.len());
            self.places.push(Place::new(path));
            self.places.len() - 1
        };
        // Remember overflow too, so the next evaluation does not build the pointer again.
        match step {
            Step::Member(key) => self.places[parent].members.push((key.into(), index)),
            Step::Elements => self.places[parent].elements = Some(index),
        }
        index
    }

    /// The counts of one place (a folded pointer), if it was seen.
    pub fn rate(&self, path: &str) -> Option<FieldRate> {
        let place = &self.places[*self.by_path.get(path)?];
        Some(FieldRate { path: place.path.clone(), compared: place.compared, differed: place.differed })
    }

    /// Every place, most differences first, then most compared, then by path.
    pub fn rates(&self) -> Vec<FieldRate> {
        let mut rates: Vec<FieldRate> = self.places[OTHER..]
            .iter()
            .filter(|place| place.compared > 0 || place.differed > 0)
            .map(|place| FieldRate { path: place.path.clone(), compared: place.compared, differed: place.differed })
            .collect();
        rates.sort_by(|a, b| {
            b.differed.cmp(&a.differed).then_with(|| b.compared.cmp(&a.compared)).then_with(|| a.path.cmp(&b.path))
        });
        rates
    }
}

impl AddAssign<&FieldRates> for FieldRates {
    fn add_assign(&mut self, other: &FieldRates) {
        for theirs in &other.places[OTHER..] {
            let index = match (theirs.path.as_str(), self.by_path.get(&theirs.path)) {
                (OTHER_FIELD, _) => OTHER,
                (_, Some(index)) => *index,
                (_, None) if self.places.len() >= MAX_FIELDS + 2 => OTHER,
                // Made without a parent link: a later walk that reaches it makes its own
                // entry from the parent, so link it now by path instead.
                (path, None) => self.insert_path(path),
            };
            self.places[index].compared += theirs.compared;
            self.places[index].differed += theirs.differed;
        }
        self.serial += other.serial;
    }
}

impl FieldRates {
    /// Rates holding `rates` (as [`FieldRates::rates`] lists them).
    pub fn from_rates(rates: &[FieldRate]) -> FieldRates {
        let mut fields = FieldRates::default();
        for rate in rates {
            let index = if rate.path == OTHER_FIELD { OTHER } else { fields.insert_path(&rate.path) };
            fields.places[index].compared += rate.compared;
            fields.places[index].differed += rate.differed;
        }
        fields
    }

    /// Makes a place (and its missing ancestors) from its folded pointer, linked into
    /// the tree so that walks find it.
    fn insert_path(&mut self, path: &str) -> usize {
        let mut at = ROOT;
        let mut rest = path;
        while let Some(stripped) = rest.strip_prefix('/') {
            let end = stripped.find('/').unwrap_or(stripped.len());
            let token = &stripped[..end];
            at = match token {
                "*" => self.child(at, Step::Elements),
                escaped => {
                    let key = escaped.replace("~1", "/").replace("~0", "~");
                    self.child(at, Step::Member(&key))
                }
            };
            if at == OTHER {
                return OTHER;
            }
            rest = &stripped[end..];
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::json::Doc;
    use crate::judge::compare::{diff, Rules};
    use crate::judge::pointer::Pattern;
    use serde_json::{json, Value};

    fn count(rates: &mut FieldRates, rules: &Rules, legacy: Value, shadow: Value) {
        let differences = diff(rules, &legacy, &shadow);
        rates.count(
            &rules.ignore,
            Doc::from_value(&legacy).root(),
            Some(Doc::from_value(&shadow).root()),
            &differences,
        );
    }

    fn table(rates: &FieldRates) -> Vec<(String, u64, u64)> {
        rates.rates().into_iter().map(|r| (r.path, r.compared, r.differed)).collect()
    }

    #[test]
    fn the_same_document_twice_counts_as_walking_both() {
        let outcome = json!({"stdout": "1", "tests": [{"ok": "y"}, {"ok": "n"}], "exit_code": 0});
        let rules = Rules {
            ignore: crate::judge::pointer::PatternSet::new(vec![Pattern::parse("/exit_code").expect("pattern")]),
            ..Rules::default()
        };
        let (mut once, mut twice) = (FieldRates::default(), FieldRates::default());
        for _ in 0..2 {
            let doc = Doc::from_value(&outcome);
            once.count(&rules.ignore, doc.root(), None, &[]);
            twice.count(&rules.ignore, doc.root(), Some(doc.root()), &[]);
        }
        assert_eq!(table(&once), table(&twice));
        assert_eq!(
            table(&once),
            [
                ("/stdout".to_owned(), 2, 0),
                ("/tests".to_owned(), 2, 0),
                ("/tests/*".to_owned(), 2, 0),
                ("/tests/*/ok".to_owned(), 2, 0)
            ]
        );
    }

    #[test]
    fn counts_each_place_once_per_evaluation() {
        let rules = Rules::default();
        let mut rates = FieldRates::default();
        let tests = |a: &str, b: &str| json!([{"ok": a}, {"ok": b}]);
        count(
            &mut rates,
            &rules,
            json!({"stdout": "1", "tests": tests("y", "y")}),
            json!({"stdout": "2", "tests": tests("n", "n")}),
        );
        count(
            &mut rates,
            &rules,
            json!({"stdout": "1", "tests": tests("y", "y")}),
            json!({"stdout": "1", "tests": tests("y", "y")}),
        );
        count(&mut rates, &rules, json!({"stdout": "1"}), json!({"stdout": "1", "extra": null}));
        assert_eq!(
            table(&rates),
            vec![
                ("/stdout".into(), 3, 1),
                ("/tests/*/ok".into(), 2, 1),
                ("/extra".into(), 1, 1),
                ("/tests".into(), 2, 0),
                ("/tests/*".into(), 2, 0),
            ]
        );
    }

    #[test]
    fn ignored_places_are_not_compared() {
        let rules =
            Rules { ignore: PatternSet::new(vec![Pattern::parse("/timing").expect("pattern")]), ..Rules::default() };
        let mut rates = FieldRates::default();
        count(&mut rates, &rules, json!({"a": 1, "timing": {"ms": 3}}), json!({"a": 1, "timing": {"ms": 9}}));
        assert_eq!(table(&rates), vec![("/a".into(), 1, 0)]);
    }

    #[test]
    fn places_are_bounded() {
        let rules = Rules::default();
        let mut rates = FieldRates::default();
        let wide: serde_json::Map<String, Value> = (0..300).map(|i| (format!("k{i}"), json!(i))).collect();
        count(&mut rates, &rules, Value::Object(wide.clone()), Value::Object(wide));
        let all = rates.rates();
        assert_eq!(all.len(), MAX_FIELDS + 1);
        let other = all.iter().find(|r| r.path == OTHER_FIELD).expect("other");
        assert_eq!(other.compared, 1, "once per evaluation, however many places fold into it");
    }

    #[test]
    fn merging_adds() {
        let rules = Rules::default();
        let (mut a, mut b) = (FieldRates::default(), FieldRates::default());
        count(&mut a, &rules, json!({"x": 1}), json!({"x": 2}));
        count(&mut b, &rules, json!({"x": 1}), json!({"x": 1}));
        a += &b;
        assert_eq!(table(&a), vec![("/x".into(), 2, 1)]);
    }
}
