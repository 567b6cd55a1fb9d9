//! Config loading on generated mistakes: the shipped `config.toml` (as shipped, and with
//! a Celery shadow, whose section is only checked then) with one key given a wrong type,
//! an out-of-range or odd value, removed, or joined by an unknown key or section. Loading
//! never panics, and whenever it refuses the file the message names the key at fault.
//!
//! Written against behaviour only (no panic; the key's name is in the error text), not
//! against the wording of the `toml` crate's messages.

mod seeded;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use shadowdiff::config::Config;

/// The shipped reference config, which is valid.
const REFERENCE: &str = include_str!("../config.toml");

/// The reference with a Celery shadow: `[shadow.celery]` is only checked then.
fn celery_reference() -> String {
    let celery = REFERENCE.replacen("kind                = \"http\"", "kind                = \"celery\"", 1);
    assert_ne!(celery, REFERENCE, "config.toml no longer sets kind = \"http\" this way");
    celery
}

/// One `key = value` line of the reference, with the table it belongs to.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    key: String,
}

/// Every key set in the reference, and every table header, by line and name.
fn entries() -> (Vec<Entry>, Vec<(usize, String)>) {
    let (mut entries, mut tables) = (Vec::new(), Vec::new());
    let mut table;
    for (line, text) in REFERENCE.lines().enumerate() {
        let text = text.trim();
        if text.starts_with('#') || text.is_empty() {
            continue;
        }
        if text.starts_with('[') {
            table = text.trim_matches(|c| c == '[' || c == ']').to_owned();
            tables.push((line, table.clone()));
        } else if let Some((key, _)) = text.split_once('=') {
            entries.push(Entry { line, key: key.trim().to_owned() });
        }
    }
    (entries, tables)
}

/// A value of any TOML type, or out of any sensible range.
fn odd_value() -> BoxedStrategy<String> {
    prop_oneof![
        // Wrong types.
        prop::sample::select(vec![
            "\"text\"",
            "\"\"",
            "5",
            "1.5",
            "true",
            "false",
            "[]",
            "[1, \"a\"]",
            "[\"/x\"]",
            "{ a = 1 }",
            "{}",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "[[1], [2]]",
            "\"\\u0000\"",
            "'literal'",
        ]),
        // Numbers at and past the edges.
        prop::sample::select(vec![
            "-1",
            "0",
            "-0.0",
            "0.0",
            "1e300",
            "-1e300",
            "nan",
            "inf",
            "-inf",
            "+inf",
            "9223372036854775807",
            "-9223372036854775808",
            "4294967296",
            "65536",
            "1.0e-300",
            "100",
            "101",
            "2.0",
            "0.5",
            "1_000_000",
            "0x7fffffff",
        ]),
    ]
    .prop_map(str::to_owned)
    .boxed()
}

/// A key name none of the config's tables has.
fn unknown_key() -> BoxedStrategy<String> {
    "[a-z][a-z_]{2,14}".prop_filter("not a known key", |k| !entries().0.iter().any(|e| &e.key == k)).boxed()
}

/// One mistake in the reference, and the key whose name the error must carry.
#[derive(Debug, Clone)]
enum Mistake {
    /// The key at this entry gets this value.
    Value(Index, String),
    /// The key at this entry is removed.
    Remove(Index),
    /// An unknown key with this value is added to the table of this header.
    UnknownKey(Index, String, String),
    /// An unknown sub-table of the table of this header.
    UnknownTable(Index, String),
    /// A known key of this entry, misspelt by one changed character.
    Misspelt(Index, Index, char),
}

fn mistake() -> BoxedStrategy<Mistake> {
    prop_oneof![
        6 => (any::<Index>(), odd_value()).prop_map(|(i, v)| Mistake::Value(i, v)),
        1 => any::<Index>().prop_map(Mistake::Remove),
        2 => (any::<Index>(), unknown_key(), odd_value()).prop_map(|(i, k, v)| Mistake::UnknownKey(i, k, v)),
        1 => (any::<Index>(), unknown_key()).prop_map(|(i, k)| Mistake::UnknownTable(i, k)),
        2 => (any::<Index>(), any::<Index>(), prop::char::range('a', 'z')).prop_map(|(i, at, c)| Mistake::Misspelt(i, at, c)),
    ]
    .boxed()
}

/// The config text with the mistake made, and the key name the error must carry (`None`
/// when the change cannot be wrong: a misspelling that spells the same key).
fn apply(base: &str, mistake: &Mistake) -> (String, Option<String>) {
    let (entries, tables) = entries();
    let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
    let key = match mistake {
        Mistake::Value(i, value) => {
            let entry = &entries[i.index(entries.len())];
            lines[entry.line] = format!("{} = {value}", entry.key);
            Some(entry.key.clone())
        }
        Mistake::Remove(i) => {
            let entry = &entries[i.index(entries.len())];
            lines[entry.line] = String::new();
            Some(entry.key.clone())
        }
        Mistake::UnknownKey(i, key, value) => {
            let (line, _) = &tables[i.index(tables.len())];
            lines.insert(line + 1, format!("{key} = {value}"));
            Some(key.clone())
        }
        Mistake::UnknownTable(i, key) => {
            let (_, table) = &tables[i.index(tables.len())];
            // An array of tables cannot take a sub-table after its last element here.
            let parent = table.split('.').next().unwrap_or(table);
            lines.push(format!("[{parent}.{key}]"));
            lines.push("x = 1".into());
            Some(key.clone())
        }
        Mistake::Misspelt(i, at, c) => {
            let entry = &entries[i.index(entries.len())];
            let mut chars: Vec<char> = entry.key.chars().collect();
            let at = at.index(chars.len());
            chars[at] = *c;
            let misspelt: String = chars.into_iter().collect();
            let value = lines[entry.line].split_once('=').map(|(_, v)| v.to_owned()).unwrap_or_default();
            lines[entry.line] = format!("{misspelt} ={value}");
            (misspelt != entry.key).then_some(misspelt)
        }
    };
    (lines.join("\n"), key)
}

/// What loading says of `text`: `Ok` or the whole error text a user would read.
fn load(dir: &Path, text: &str) -> Result<(), String> {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write the config");
    Config::load(&path).map(|_| ()).map_err(|e| format!("{e:#}"))
}

#[test]
fn the_reference_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(load(dir.path(), REFERENCE), Ok(()));
    assert_eq!(load(dir.path(), &celery_reference()), Ok(()));
    let (entries, tables) = entries();
    assert!(entries.len() > 60 && tables.len() > 10, "{} keys in {} tables", entries.len(), tables.len());
}

#[test]
fn every_refusal_names_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = AtomicUsize::new(0);
    let bases = [REFERENCE.to_owned(), celery_reference()];
    let check = |(base, mistake): (Index, Mistake)| -> Result<(), TestCaseError> {
        let (text, key) = apply(base.get::<String>(&bases), &mistake);
        let loaded = std::panic::catch_unwind(|| load(dir.path(), &text))
            .map_err(|_| TestCaseError::fail(format!("loading panicked on:\n{text}")))?;
        if let Err(message) = loaded {
            refused.fetch_add(1, Ordering::Relaxed);
            if let Some(key) = key {
                prop_assert!(message.contains(&key), "the error does not name `{}`:\n{}", key, message);
            }
        }
        Ok(())
    };
    let strategy = (any::<Index>(), mistake());
    seeded::run(1500, seeded::FIXED_SEED, strategy.clone(), check);
    // Most mistakes must be refused, or the test proves little.
    let refused_of_fixed = refused.swap(0, Ordering::Relaxed);
    assert!(refused_of_fixed > 1000, "only {refused_of_fixed} of 1500 mistakes were refused");
    seeded::run(500, seeded::fresh_seed(), strategy, check);
}
