//! JSON Pointer patterns (RFC 6901) with `*` standing for any one segment.
//!
//! The comparison rules name places in an outcome document by pointer: `/stdout`,
//! `/tests/*/time_ms`. A [`Pattern`] is parsed once from the config; during a diff the
//! walker keeps the current location as a stack of [`Segment`]s and asks each pattern
//! whether it matches, so no pointer string is built unless a difference is reported.

use std::fmt;

/// One step of a concrete location inside a JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

/// A pattern segment: a literal token or the `*` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A literal token, and the array index it also names when it is one (`"3"`), parsed
    /// once here rather than at every comparison.
    Literal(String, Option<usize>),
    Any,
}

impl Token {
    #[inline]
    fn matches(&self, segment: &Segment<'_>) -> bool {
        match (self, segment) {
            (Token::Any, _) => true,
            (Token::Literal(literal, _), Segment::Key(key)) => literal == key,
            (Token::Literal(_, index), Segment::Index(at)) => *index == Some(*at),
        }
    }
}

/// A parsed pointer pattern such as `/tests/*/time_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

/// Why a pointer pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// RFC 6901: a non-empty pointer starts with `/`.
    #[error("JSON pointer {0:?} must be empty or start with '/'")]
    NoLeadingSlash(String),
    /// RFC 6901: `~` is only valid as `~0` or `~1`.
    #[error("JSON pointer {0:?} has a '~' not followed by 0 or 1")]
    BadEscape(String),
}

impl Pattern {
    /// Parses an RFC 6901 pointer; a segment that is exactly `*` matches any one segment.
    pub fn parse(text: &str) -> Result<Pattern, PointerError> {
        if text.is_empty() {
            return Ok(Pattern { source: String::new(), tokens: Vec::new() });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_string()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| {
                if raw == "*" {
                    Ok(Token::Any)
                } else {
                    let literal = unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_string()))?;
                    let index = literal.parse::<usize>().ok();
                    Ok(Token::Literal(literal, index))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pattern { source: text.to_string(), tokens })
    }

    /// True when the pattern names exactly this location.
    // The last segment is compared first: it tells most locations apart (the diff asks
    // about every member of an object, and they share everything but their last segment).
    #[inline]
    pub fn matches(&self, path: &[Segment<'_>]) -> bool {
        self.tokens.len() == path.len()
            && self.tokens.iter().rev().zip(path.iter().rev()).all(|(token, segment)| token.matches(segment))
    }

    /// The literal segments, or `None` when the pattern holds a wildcard.
    pub fn literal_tokens(&self) -> Option<Vec<&str>> {
        self.tokens
            .iter()
            .map(|token| match token {
                Token::Literal(lit, _) => Some(lit.as_str()),
                Token::Any => None,
            })
            .collect()
    }

    /// The pointer as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A set of patterns, asked "does any of you match this location?".
///
/// The diff asks at every node of every outcome, so patterns are kept by length: a
/// location is only compared with the patterns that have as many segments as it has.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    by_length: Vec<Vec<Pattern>>,
}

impl PatternSet {
    /// Builds a set from already parsed patterns.
    pub fn new(patterns: Vec<Pattern>) -> PatternSet {
        let mut by_length: Vec<Vec<Pattern>> = Vec::new();
        for pattern in patterns {
            let length = pattern.tokens.len();
            if by_length.len() <= length {
                by_length.resize_with(length + 1, Vec::new);
            }
            by_length[length].push(pattern);
        }
        PatternSet { by_length }
    }

    /// Every pattern, shortest first (in the order given among equally long ones).
    pub fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.by_length.iter().flatten()
    }

    /// True when any pattern matches the location.
    pub fn matches(&self, path: &[Segment<'_>]) -> bool {
        self.by_length.get(path.len()).is_some_and(|patterns| patterns.iter().any(|p| p.matches(path)))
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_length.iter().all(Vec::is_empty)
    }
}

/// Renders a concrete location as an RFC 6901 pointer (`/tests/0/time_ms`).
pub fn render(path: &[Segment<'_>]) -> String {
    let mut out = String::new();
    for segment in path {
        out.push('/');
        match segment {
            Segment::Key(key) => escape_into(key, &mut out),
            Segment::Index(index) => out.push_str(&index.to_string()),
        }
    }
    out
}

/// Renders a location with every array index folded to `*`, so that the same field of
/// different elements groups together (`/tests/*/status`).
pub fn render_folded(path: &[Segment<'_>]) -> String {
    let mut out = String::new();
    for segment in path {
        out.push('/');
        match segment {
            Segment::Key(key) => escape_into(key, &mut out),
            Segment::Index(_) => out.push('*'),
        }
    }
    out
}

/// Looks a pattern without wildcards up in a document.
pub fn lookup<'v>(value: &'v serde_json::Value, tokens: &[&str]) -> Option<&'v serde_json::Value> {
    tokens.iter().try_fold(value, |current, token| match current {
        serde_json::Value::Object(map) => map.get(*token),
        serde_json::Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

pub(crate) fn escape_into(key: &str, out: &mut String) {
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid pattern")
    }

    #[test]
    fn wildcard_matches_any_one_segment() {
        let p = pattern("/tests/*/time_ms");
        assert!(p.matches(&[Segment::Key("tests"), Segment::Index(3), Segment::Key("time_ms")]));
        assert!(p.matches(&[Segment::Key("tests"), Segment::Key("a"), Segment::Key("time_ms")]));
        assert!(!p.matches(&[Segment::Key("tests"), Segment::Index(3)]));
        assert!(!p.matches(&[Segment::Key("tests"), Segment::Index(3), Segment::Key("x")]));
    }

    #[test]
    fn escapes_follow_rfc_6901() {
        let p = pattern("/a~1b/c~0d");
        assert!(p.matches(&[Segment::Key("a/b"), Segment::Key("c~d")]));
        assert_eq!(render(&[Segment::Key("a/b"), Segment::Key("c~d")]), "/a~1b/c~0d");
        assert_eq!(Pattern::parse("/a~2"), Err(PointerError::BadEscape("/a~2".into())));
        assert_eq!(Pattern::parse("a"), Err(PointerError::NoLeadingSlash("a".into())));
    }

    #[test]
    fn numeric_literal_matches_index() {
        assert!(pattern("/warnings/0").matches(&[Segment::Key("warnings"), Segment::Index(0)]));
        assert!(!pattern("/warnings/01").matches(&[Segment::Key("warnings"), Segment::Index(2)]));
    }

    #[test]
    fn folding_replaces_indices() {
        let path = [Segment::Key("tests"), Segment::Index(7), Segment::Key("status")];
        assert_eq!(render(&path), "/tests/7/status");
        assert_eq!(render_folded(&path), "/tests/*/status");
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let doc = serde_json::json!({"a": [{"b": 1}]});
        assert_eq!(lookup(&doc, &["a", "0", "b"]), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&doc, &["a", "1"]), None);
        assert_eq!(lookup(&doc, &[]), Some(&doc));
    }
}
