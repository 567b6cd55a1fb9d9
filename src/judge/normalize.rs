//! Text normalisation for stdout/stderr-like fields before they are compared.
//!
//! Two systems that run the same code can still print differently in ways nobody cares
//! about: Windows line endings, trailing blanks, a final newline, a memory address. The
//! rules here are applied to both sides alike; what remains different is a real difference.

use std::borrow::Cow;

use regex::Regex;

/// A volatile piece of text replaced by a fixed one on both sides.
#[derive(Debug, Clone)]
pub struct Mask {
    /// What to look for.
    pub pattern: Regex,
    /// What to put instead (regex replacement syntax: `$1` refers to a group).
    pub replace: String,
}

/// Which differences in text are forgiven (`[compare.text_normalize]`).
#[derive(Debug, Clone)]
pub struct TextNormalize {
    /// CRLF and lone CR become LF.
    pub line_endings: bool,
    /// White space at the end of each line is dropped.
    pub trailing_whitespace: bool,
    /// Newlines at the very end are dropped, so a missing or extra final newline is no difference.
    pub final_newline: bool,
    /// Applied last, in order.
    pub masks: Vec<Mask>,
}

impl Default for TextNormalize {
    fn default() -> Self {
        TextNormalize { line_endings: true, trailing_whitespace: true, final_newline: true, masks: Vec::new() }
    }
}

impl TextNormalize {
    /// Returns the text as compared; borrows when nothing had to change.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        if self.line_endings && text.contains('\r') {
            text = Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"));
        }
        if self.trailing_whitespace && has_trailing_whitespace(&text) {
            let mut out = String::with_capacity(text.len());
            for (i, line) in text.split('\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(line.trim_end());
            }
            text = Cow::Owned(out);
        }
        if self.final_newline && text.ends_with('\n') {
            text = match text {
                Cow::Borrowed(b) => Cow::Borrowed(b.trim_end_matches('\n')),
                Cow::Owned(o) => Cow::Owned(o.trim_end_matches('\n').to_string()),
            };
        }
        for mask in &self.masks {
            if let Cow::Owned(replaced) = mask.pattern.replace_all(&text, mask.replace.as_str()) {
                text = Cow::Owned(replaced);
            }
        }
        text
    }
}

fn has_trailing_whitespace(text: &str) -> bool {
    text.split('\n').any(|line| line.len() != line.trim_end().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_rules() -> TextNormalize {
        TextNormalize {
            masks: vec![Mask { pattern: Regex::new("0x[0-9a-f]+").expect("regex"), replace: "0x?".into() }],
            ..TextNormalize::default()
        }
    }

    #[test]
    fn each_rule_forgives_its_difference() {
        let rules = all_rules();
        assert_eq!(rules.apply("a\r\nb\rc"), "a\nb\nc");
        assert_eq!(rules.apply("a  \nb\t\n"), "a\nb");
        assert_eq!(rules.apply("a\n\n"), "a");
        assert_eq!(rules.apply("at 0xdeadbeef"), "at 0x?");
    }

    #[test]
    fn untouched_text_is_borrowed() {
        assert!(matches!(all_rules().apply("plain\ntext"), Cow::Borrowed("plain\ntext")));
    }

    #[test]
    fn rules_can_be_turned_off() {
        let none =
            TextNormalize { line_endings: false, trailing_whitespace: false, final_newline: false, masks: vec![] };
        assert_eq!(none.apply("a \r\n"), "a \r\n");
    }

    #[test]
    fn leading_and_inner_whitespace_still_counts() {
        let rules = all_rules();
        assert_ne!(rules.apply(" a"), rules.apply("a"));
        assert_ne!(rules.apply("a b"), rules.apply("a  b"));
    }
}
