//! JSON text as Python's `json.dumps` writes it with its defaults, which is what kombu uses
//! for task bodies and envelopes: `", "` and `": "` separators, every character outside
//! printable ASCII escaped (`ensure_ascii=True`), floats as Python's `repr`, and object
//! keys in the order they were inserted.
//!
//! Matching those bytes lets tests compare our messages with captured ones byte for byte.

use serde_json::Value;
use std::fmt::Write as _;

/// A JSON value whose objects keep the order in which their members are listed.
pub(crate) enum Py<'a> {
    Null,
    Bool(bool),
    Int(u64),
    Float(f64),
    Str(&'a str),
    List(Vec<Py<'a>>),
    Object(Vec<(&'a str, Py<'a>)>),
    /// A `serde_json` value; its objects are written in the map's iteration order.
    Json(&'a Value),
}

impl<'a> Py<'a> {
    /// A string, or `null` when absent.
    pub(crate) fn opt_str(value: Option<&'a str>) -> Self {
        value.map_or(Py::Null, Py::Str)
    }
}

/// `json.dumps(value)`.
pub(crate) fn dumps(value: &Py<'_>) -> String {
    // Sized once for the usual text: a task message is written without a reallocation.
    let mut out = String::with_capacity(rough_len(value));
    write_py(&mut out, value);
    out
}

/// About how long `value`'s text is when nothing in it needs an escape (a little more,
/// for the punctuation).
fn rough_len(value: &Py<'_>) -> usize {
    match value {
        Py::Null | Py::Bool(_) | Py::Int(_) | Py::Float(_) => 24,
        Py::Str(s) => s.len() + 2,
        Py::List(items) => items.iter().map(|item| rough_len(item) + 2).sum::<usize>() + 2,
        Py::Object(members) => members.iter().map(|(key, item)| key.len() + rough_len(item) + 6).sum::<usize>() + 2,
        Py::Json(v) => rough_value_len(v),
    }
}

fn rough_value_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(|item| rough_value_len(item) + 2).sum::<usize>() + 2,
        Value::Object(map) => map.iter().map(|(key, item)| key.len() + rough_value_len(item) + 6).sum::<usize>() + 2,
    }
}

fn write_py(out: &mut String, value: &Py<'_>) {
    match value {
        Py::Null => out.push_str("null"),
        Py::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Py::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Py::Float(f) => write_float(out, *f),
        Py::Str(s) => write_str(out, s),
        Py::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(out, item);
            }
            out.push(']');
        }
        Py::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_py(out, item);
            }
            out.push('}');
        }
        Py::Json(v) => write_value(out, v),
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_repr(n)),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal with Python's `ensure_ascii` escapes: only `' '..='~'` stay as
/// they are (so DEL is escaped too), other characters become `\uXXXX` (lower-case hex,
/// UTF-16 surrogate pairs above the BMP) or their short escapes.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Runs of characters that stay as they are are copied whole.
    let mut plain_from = 0;
    let bytes = s.as_bytes();
    let mut at = plain_run_end(bytes, 0);
    while at < bytes.len() {
        let escape = match bytes[at] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        out.push_str(&s[plain_from..at]);
        if escape.is_empty() {
            // A control character, DEL or a non-ASCII character: `at` is on a boundary.
            let c = s[at..].chars().next().unwrap_or_default();
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
            at += c.len_utf8();
        } else {
            out.push_str(escape);
            at += 1;
        }
        plain_from = at;
        at = plain_run_end(bytes, at);
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

/// Whether a byte stays as it is in a string literal: printable ASCII but `"` and `\`.
fn is_plain(byte: u8) -> bool {
    matches!(byte, b' '..=b'~') && byte != b'"' && byte != b'\\'
}

/// The end of the run of plain bytes from `at`: the first byte to escape, or the end.
///
/// Eight bytes are looked at together while none of them needs an escape (most of a task
/// message: base64, identifiers, ASCII code). A word "may need one" when one of its bytes
/// is below `' '`, above `'~'`, `"` or `\`; the tests are exact for the first such byte
/// and may flag the bytes after it, which the byte-by-byte loop then sorts out.
fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// A byte of `word` is zero.
    fn zero_byte(word: u64) -> u64 {
        word.wrapping_sub(ONES) & !word & HIGH
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let above_tilde = (word.wrapping_add(ONES) | word) & HIGH;
        let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
        if control | above_tilde | quote | backslash != 0 {
            break;
        }
        at += 8;
    }
    while at < bytes.len() && is_plain(bytes[at]) {
        at += 1;
    }
    at
}

/// JSON float as `json.dumps` writes it (`NaN` and `Infinity` included, as Python does).
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.push_str(&float_repr(f));
    }
}

/// A JSON number as Python prints it (`str(int)` or `repr(float)`).
pub(crate) fn number_repr(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        n.as_f64().map_or_else(|| n.to_string(), float_repr)
    }
}

/// Python's `repr(float)` of a finite float: the shortest digits that read back to the
/// same value, in positional notation when the decimal exponent is in `-4..16`, otherwise
/// as `d.ddde+XX` with at least two exponent digits; always with a `.0` or an exponent.
pub(crate) fn float_repr(f: f64) -> String {
    // Rust's `{:e}` prints the shortest digits that round-trip: `-1.5e-7`, `1e16`, `0e0`.
    // When two such strings are equally near (the float lies exactly halfway), it rounds
    // up where Python rounds to even: redo the rounding at that length with `{:.N$e}`,
    // which rounds ties to even, and keep it if it still reads back to the same float.
    let shortest = format!("{f:e}");
    let ndigits = shortest.split('e').next().map_or(1, |m| m.chars().filter(char::is_ascii_digit).count());
    let even = format!("{f:.*e}", ndigits.saturating_sub(1));
    let sci = if even.parse::<f64>() == Ok(f) { even } else { shortest };
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci;
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let ndigits = digits.len() as i32;
    // Position of the decimal point relative to the start of `digits`.
    let decpt = exp + 1;
    let body = if decpt > -4 && decpt <= 16 {
        if decpt <= 0 {
            format!("0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt >= ndigits {
            format!("{digits}{}.0", "0".repeat((decpt - ndigits) as usize))
        } else {
            let (int, frac) = digits.split_at(decpt as usize);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{dot}{rest}e{exp_sign}{:02}", exp.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_python() {
        // Expected values printed by CPython 3.11 `repr(float)`.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (30.0, "30.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456.789, "123456.789"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e16, "1.2345e+16"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1795880311.282165, "1795880311.282165"),
            (1795880311.3324423, "1795880311.3324423"),
            (0.23, "0.23"),
            (2.0 / 3.0, "0.6666666666666666"),
            // Exactly halfway between two shortest candidates: Python picks the even one.
            (808_946_155_333_924.0 + 0.25, "808946155333924.2"),
            (2_328_443_561_657.0 + 0.406_25, "2328443561657.4062"),
            (974_522_426_854_827.0 + 0.25, "974522426854827.2"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "repr({f:?})");
        }
    }

    #[test]
    fn strings_are_escaped_like_ensure_ascii() {
        let v = json!(["a\"b\\c", "\n\r\t\u{8}\u{c}", "\u{1}\u{1f}\u{7f}", "héllo", "😀", "~ "]);
        assert_eq!(
            dumps(&Py::Json(&v)),
            r#"["a\"b\\c", "\n\r\t\b\f", "\u0001\u001f\u007f", "h\u00e9llo", "\ud83d\ude00", "~ "]"#
        );
    }

    /// `ensure_ascii` escaping one character at a time: what the word-at-a-time scan of
    /// [`write_str`] must agree with.
    fn escaped_one_by_one(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                ' '..='~' => out.push(c),
                _ => {
                    for unit in c.encode_utf16(&mut [0u16; 2]) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn the_word_at_a_time_scan_escapes_every_character_wherever_it_is() {
        let specials: Vec<char> =
            (0u8..=0x7f).map(char::from).chain(['\u{80}', 'é', '\u{7ff}', '\u{800}', '日', '\u{fffd}', '😀']).collect();
        let check = |s: &str| {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, escaped_one_by_one(s), "{s:?}");
        };
        // Each character at each place of strings up to three words long.
        for len in 1..=24 {
            for at in 0..len {
                for &special in &specials {
                    check(&(0..len).map(|i| if i == at { special } else { 'a' }).collect::<String>());
                }
            }
        }
        // Two in one word, and runs of one kind.
        for &first in &specials {
            for &second in &['"', '\\', '\u{1f}', '\u{7f}', 'é', '~', ' '] {
                check(&format!("abc{first}de{second}fghijklmnop{first}"));
            }
            check(&first.to_string().repeat(17));
        }
        check("");
    }

    #[test]
    fn separators_and_order_are_pythons() {
        // Keys already sorted: the output is the same with or without `preserve_order`.
        let inner = json!({"a": {}, "b": [1, 2.5, null, true, false]});
        let v = Py::Object(vec![
            ("z", Py::Int(1)),
            ("a", Py::List(vec![])),
            ("m", Py::Json(&inner)),
            ("f", Py::Float(2.0)),
            ("n", Py::opt_str(None)),
        ]);
        assert_eq!(
            dumps(&v),
            r#"{"z": 1, "a": [], "m": {"a": {}, "b": [1, 2.5, null, true, false]}, "f": 2.0, "n": null}"#
        );
    }

    #[test]
    fn large_and_negative_integers() {
        let v = json!([u64::MAX, i64::MIN, -1, 0]);
        assert_eq!(dumps(&Py::Json(&v)), "[18446744073709551615, -9223372036854775808, -1, 0]");
    }

    #[test]
    fn non_finite_floats_use_python_tokens() {
        let v = Py::List(vec![Py::Float(f64::NAN), Py::Float(f64::INFINITY), Py::Float(f64::NEG_INFINITY)]);
        assert_eq!(dumps(&v), "[NaN, Infinity, -Infinity]");
    }
}
