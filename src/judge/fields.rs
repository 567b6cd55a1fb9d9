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

use serde::Serialize;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldRate {
    /// JSON pointer, array indices folded to `*`.
    pub path: String,
    /// Compared evaluations in which either outcome had this place.
    pub compared: u64,
    /// Of those, how many differed here.
    pub differed: u64,
}

#[derive(Debug, Clone, Default)]
struct Counts {
    compared: u64,
    differed: u64,
    /// The serial of the last evaluation counted here: a place counts once per evaluation.
    seen_in: u64,
}

/// Counts per place.
#[derive(Debug, Clone, Default)]
pub struct FieldRates {
    places: HashMap<String, Counts>,
    /// Evaluations counted so far; each one's serial.
    serial: u64,
    /// A reused buffer for the folded pointer being walked.
    buffer: String,
}

impl FieldRates {
    /// Counts one compared evaluation: every place of either outcome not covered by
    /// `ignore`, and the places of `differences`.
    pub fn count(&mut self, ignore: &PatternSet, legacy: Node<'_>, shadow: Node<'_>, differences: &[Difference]) {
        self.serial += 1;
        let mut path = Vec::with_capacity(8);
        for root in [legacy, shadow] {
            self.buffer.clear();
            self.walk(ignore, root, &mut path);
        }
        for difference in differences {
            // A difference lies at a place one of the outcomes has, so it was counted as
            // compared above; a repeat within the evaluation is not counted again.
            let serial = self.serial;
            if let Some(counts) = existing(&mut self.places, &difference.folded_path) {
                if counts.seen_in == serial {
                    counts.seen_in = serial | DIFFERED;
                    counts.differed += 1;
                }
            }
        }
    }

    fn walk<'d>(&mut self, ignore: &PatternSet, node: Node<'d>, path: &mut Vec<Segment<'d>>) {
        if !path.is_empty() {
            if ignore.matches(path) {
                return;
            }
            let counts = slot(&mut self.places, &self.buffer);
            if counts.seen_in & !DIFFERED != self.serial {
                counts.seen_in = self.serial;
                counts.compared += 1;
            }
        }
        if path.len() >= MAX_DEPTH {
            return;
        }
        let mark = self.buffer.len();
        match node.kind() {
            Kind::Object(members) => {
                for (key, value) in members {
                    self.buffer.push('/');
                    pointer::escape_into(key, &mut self.buffer);
                    path.push(Segment::Key(key));
                    self.walk(ignore, value, path);
                    path.pop();
                    self.buffer.truncate(mark);
                }
            }
            Kind::Array(elements) => {
                for (index, value) in elements.enumerate() {
                    self.buffer.push_str("/*");
                    path.push(Segment::Index(index));
                    self.walk(ignore, value, path);
                    path.pop();
                    self.buffer.truncate(mark);
                }
            }
            _ => {}
        }
    }

    /// Every place, most differences first, then most compared, then by path.
    pub fn rates(&self) -> Vec<FieldRate> {
        let mut rates: Vec<FieldRate> = self
            .places
            .iter()
            .map(|(path, counts)| FieldRate {
                path: path.clone(),
                compared: counts.compared,
                differed: counts.differed,
            })
            .collect();
        rates.sort_by(|a, b| {
            b.differed.cmp(&a.differed).then_with(|| b.compared.cmp(&a.compared)).then_with(|| a.path.cmp(&b.path))
        });
        rates
    }
}

/// The key `place` is counted under: itself, or [`OTHER_FIELD`] when it is too long or
/// there is no room for another place.
fn key<'p>(places: &HashMap<String, Counts>, place: &'p str) -> &'p str {
    if place.len() > MAX_FIELD_BYTES || (!places.contains_key(place) && places.len() >= MAX_FIELDS) {
        OTHER_FIELD
    } else {
        place
    }
}

/// The counters of `place`, made when first seen.
fn slot<'m>(places: &'m mut HashMap<String, Counts>, place: &str) -> &'m mut Counts {
    let key = key(places, place);
    if !places.contains_key(key) {
        places.insert(key.to_owned(), Counts::default());
    }
    places.get_mut(key).unwrap_or_else(|| unreachable!("inserted above"))
}

/// The counters of `place` if it was seen.
fn existing<'m>(places: &'m mut HashMap<String, Counts>, place: &str) -> Option<&'m mut Counts> {
    let key = key(places, place);
    places.get_mut(key)
}

/// Marks, in `seen_in`, that the evaluation of that serial already counted a difference.
const DIFFERED: u64 = 1 << 63;

impl AddAssign<&FieldRates> for FieldRates {
    fn add_assign(&mut self, other: &FieldRates) {
        for (path, theirs) in &other.places {
            let ours = slot(&mut self.places, path);
            ours.compared += theirs.compared;
            ours.differed += theirs.differed;
        }
        self.serial += other.serial;
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
        rates.count(&rules.ignore, Doc::from_value(&legacy).root(), Doc::from_value(&shadow).root(), &differences);
    }

    fn table(rates: &FieldRates) -> Vec<(String, u64, u64)> {
        rates.rates().into_iter().map(|r| (r.path, r.compared, r.differed)).collect()
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
