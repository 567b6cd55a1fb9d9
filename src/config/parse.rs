//! TOML text into [`RawConfig`], with every TOML problem rather than the first.
//!
//! Syntax errors come from the parser's recovery ([`DeTable::parse_recoverable`]). Type
//! errors and unknown keys come from serde, which stops at the first: so the value (or the
//! array element) an error points at is taken out of the parsed document and the rest is
//! deserialized again, until it passes. Spans still point into the original text, so
//! every error keeps its line, column and the line of the key. Pure: text in, errors out.

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue, Deserializer, Error};
use toml::Spanned;

use super::raw::RawConfig;

/// More errors than this in one file are not worth listing one by one.
const MAX_ERRORS: usize = 50;

/// Parses config text, listing every syntax error, or else every type error and unknown
/// key (each with its position).
pub fn raw_config(text: &str) -> Result<RawConfig, Vec<Error>> {
    let (mut document, mut errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for error in &mut errors {
            error.set_input(Some(text));
        }
        return Err(errors);
    }
    loop {
        match RawConfig::deserialize(Deserializer::from(document.clone())) {
            Ok(raw) if errors.is_empty() => return Ok(raw),
            Ok(_) => {
                errors.sort_by_key(|e| e.span().map_or(0, |span| span.start));
                return Err(errors);
            }
            Err(mut error) => {
                error.set_input(Some(text));
                let span = error.span();
                errors.push(error);
                let removed = span.is_some_and(|span| remove_at(document.get_mut(), span.start));
                if !removed || errors.len() >= MAX_ERRORS {
                    errors.sort_by_key(|e| e.span().map_or(0, |span| span.start));
                    return Err(errors);
                }
            }
        }
    }
}

/// Takes out of `table` the deepest entry whose key or value holds byte `at`; inside an
/// array, the whole element, so that no required field of a table goes missing. A table's
/// own span may cover only its header, so every branch is searched.
fn remove_at(table: &mut DeTable<'_>, at: usize) -> bool {
    let keys: Vec<_> = table.keys().cloned().collect();
    for key in &keys {
        let Some(value) = table.get_mut(key) else { continue };
        let removed = match value.get_mut() {
            DeValue::Table(inner) => remove_at(inner, at),
            DeValue::Array(array) => remove_element(array, at),
            _ => false,
        };
        if removed {
            return true;
        }
    }
    let direct = table.iter().find(|(k, v)| holds(k.span(), at) || holds(v.span(), at)).map(|(k, _)| k.clone());
    direct.is_some_and(|key| table.remove(&key).is_some())
}

/// Takes out of `array` the element that holds byte `at` anywhere inside it.
fn remove_element(array: &mut DeArray<'_>, at: usize) -> bool {
    let Some(index) = array.iter().position(|item| within(item, at)) else { return false };
    let mut kept = DeArray::new();
    for (i, item) in array.iter().enumerate() {
        if i != index {
            kept.push(item.clone());
        }
    }
    *array = kept;
    true
}

fn within(value: &Spanned<DeValue<'_>>, at: usize) -> bool {
    holds(value.span(), at)
        || match value.get_ref() {
            DeValue::Table(table) => table.iter().any(|(k, v)| holds(k.span(), at) || within(v, at)),
            DeValue::Array(array) => array.iter().any(|item| within(item, at)),
            _ => false,
        }
}

fn holds(span: std::ops::Range<usize>, at: usize) -> bool {
    span.contains(&at) || span.start == at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match raw_config(text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_type_error_and_unknown_key_is_listed_with_its_position() {
        let found = errors(
            "[compare]\nfloat_abs = \"x\"\nignroe = []\n[gate]\nmin_samples = -1\n[[routes]]\nmethod = 1\npath = \"/a\"\n[[routes]]\nmethod = \"POST\"\npath = 2\n",
        );
        assert_eq!(found.len(), 5, "{found:#?}");
        assert_eq!(
            found[0],
            "TOML parse error at line 2, column 13\n  |\n2 | float_abs = \"x\"\n  |             ^^^\ninvalid type: string \"x\", expected f64\n"
        );
        assert!(found[1].starts_with("TOML parse error at line 3, column 1\n"), "{}", found[1]);
        assert!(found[1].contains("unknown field `ignroe`"), "{}", found[1]);
        assert!(found[2].starts_with("TOML parse error at line 5, column 15\n"), "{}", found[2]);
        assert!(found[3].starts_with("TOML parse error at line 7, column 10\n"), "{}", found[3]);
        assert!(found[4].starts_with("TOML parse error at line 11, column 8\n"), "{}", found[4]);
    }

    #[test]
    fn every_syntax_error_is_listed() {
        let found = errors("[gate]\nmin_samples = = 1\n[report]\nmax_groups = 1 2\n");
        assert!(found.len() >= 2, "{found:#?}");
        assert!(found[0].starts_with("TOML parse error at line 2,"), "{}", found[0]);
        assert!(found.iter().any(|e| e.starts_with("TOML parse error at line 4,")), "{found:#?}");
    }

    #[test]
    fn a_valid_file_parses() {
        assert!(raw_config("[gate]\nmin_samples = 5\n").is_ok_and(|raw| raw.gate.min_samples == 5));
    }
}
