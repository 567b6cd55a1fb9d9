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
    let mut out = String::new();
    write_py(&mut out, value);
    out
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
    let mut at = 0;
    let bytes = s.as_bytes();
    while at < bytes.len() {
        let escape = match bytes[at] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            b' '..=b'~' => {
                at += 1;
                continue;
            }
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
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
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
