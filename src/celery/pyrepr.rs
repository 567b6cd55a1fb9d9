//! The `argsrepr` and `kwargsrepr` headers: Celery's `saferepr(args, 1024)` and
//! `saferepr(kwargs, 1024)` (`celery/utils/saferepr.py`, `task_repr_maxlevels = 3`).
//!
//! `saferepr` is not `repr`: a string is always put in single quotes with only `'`
//! escaped (no `\\`, `\n` or non-ASCII escapes: a newline in the code stays a newline),
//! containers nested deeper than three levels print as `[...]`/`{...}`, and the text is
//! cut once 1024 characters have been written (a long string is shortened at its last
//! space within the remaining budget and ends in `...`; the rest becomes `, ...` followed
//! by the closing brackets still open). These headers are for logs and monitoring only;
//! the worker never reads them back.

use std::borrow::Cow;

use super::pyjson::number_repr;
use serde_json::Value;

/// Characters of `argsrepr`/`kwargsrepr` Celery writes (`AMQP.argsrepr_maxsize`).
const MAXLEN: usize = 1024;
/// Container depth Celery expands (`task_repr_maxlevels`).
const MAXLEVELS: usize = 3;

/// `saferepr(tuple(args), 1024)`: `('a', 1)`, `('a',)`, `()`.
pub(crate) fn args_repr(args: &[Value]) -> String {
    let mut toks = Vec::new();
    let end = if args.len() == 1 { ",)" } else { ")" };
    push_seq(&mut toks, "(", end, args.iter(), 0);
    render(&toks, MAXLEN)
}

/// `saferepr(kwargs, 1024)` of a dict with these items in this order: `{'a': 1}`.
pub(crate) fn kwargs_repr(kwargs: &[(String, Value)]) -> String {
    let mut toks = Vec::new();
    push_dict(&mut toks, kwargs.iter().map(|(k, v)| (k.as_str(), v)), 0);
    render(&toks, MAXLEN)
}

/// One piece of the output, as `reprstream` yields them.
enum Tok<'a> {
    /// An opening bracket, with the text that will close it.
    Open(&'static str, &'static str),
    /// A closing bracket.
    Close(&'static str),
    /// `", "` or `": "`.
    Sep(&'static str),
    /// A string (value or key), quoted when written.
    Quoted(&'a str),
    /// A container past the depth limit (`[...]`), never shortened.
    Marker(String),
    /// Anything else, shortened like a string when over budget (numbers, `None`, `True`).
    Plain(String),
}

fn push_value<'a>(toks: &mut Vec<Tok<'a>>, value: &'a Value, level: usize) {
    match value {
        Value::Null => toks.push(Tok::Plain("None".to_owned())),
        Value::Bool(b) => toks.push(Tok::Plain(if *b { "True" } else { "False" }.to_owned())),
        Value::Number(n) => toks.push(Tok::Plain(number_repr(n))),
        Value::String(s) => toks.push(Tok::Quoted(s)),
        Value::Array(items) => push_seq(toks, "[", "]", items.iter(), level),
        Value::Object(map) => push_dict(toks, map.iter().map(|(k, v)| (k.as_str(), v)), level),
    }
}

/// `level` is the number of containers already open around this one.
fn push_seq<'a>(
    toks: &mut Vec<Tok<'a>>,
    open: &'static str,
    close: &'static str,
    items: impl Iterator<Item = &'a Value>,
    level: usize,
) {
    if level >= MAXLEVELS {
        toks.push(Tok::Marker(format!("{open}...{close}")));
        return;
    }
    toks.push(Tok::Open(open, close));
    for (i, item) in items.enumerate() {
        if i > 0 {
            toks.push(Tok::Sep(", "));
        }
        push_value(toks, item, level + 1);
    }
    toks.push(Tok::Close(close));
}

fn push_dict<'a>(toks: &mut Vec<Tok<'a>>, items: impl Iterator<Item = (&'a str, &'a Value)>, level: usize) {
    if level >= MAXLEVELS {
        toks.push(Tok::Marker("{...}".to_owned()));
        return;
    }
    toks.push(Tok::Open("{", "}"));
    for (i, (key, item)) in items.enumerate() {
        if i > 0 {
            toks.push(Tok::Sep(", "));
        }
        toks.push(Tok::Quoted(key));
        toks.push(Tok::Sep(": "));
        push_value(toks, item, level + 1);
    }
    toks.push(Tok::Close("}"));
}

/// Writes the tokens within a budget of `maxlen` characters, as Celery 5.7's `_saferepr`
/// does. Once the budget is spent, closing brackets that come next are still written;
/// any other token is replaced by `, ...` followed by the closing brackets of the
/// containers already written open.
fn render(toks: &[Tok<'_>], maxlen: usize) -> String {
    let mut out = String::with_capacity(maxlen.min(256));
    let mut budget = maxlen;
    let mut open: Vec<&'static str> = Vec::new();
    for tok in toks {
        if budget == 0 {
            if let Tok::Close(close) = tok {
                open.pop();
                out.push_str(close);
                continue;
            }
            out.push_str(", ...");
            for close in open.iter().rev() {
                out.push_str(close);
            }
            return out;
        }
        // Each token is written in place; the budget counts its characters.
        let start = out.len();
        match tok {
            Tok::Open(s, close) => {
                open.push(close);
                out.push_str(s);
            }
            Tok::Close(s) => {
                open.pop();
                out.push_str(s);
            }
            Tok::Sep(s) => out.push_str(s),
            Tok::Marker(s) => out.push_str(s),
            Tok::Quoted(s) => {
                out.push('\'');
                for (i, part) in truncate(s, budget).split('\'').enumerate() {
                    if i > 0 {
                        out.push_str("\\'");
                    }
                    out.push_str(part);
                }
                out.push('\'');
            }
            Tok::Plain(s) => out.push_str(&truncate(s, budget)),
        }
        budget = budget.saturating_sub(out[start..].chars().count());
    }
    out
}

/// Celery's `truncate(s, maxlen)`: when `s` has `maxlen` characters or more, keep the
/// first `maxlen`, drop from their last space on, and add `...`.
fn truncate(s: &str, maxlen: usize) -> Cow<'_, str> {
    if s.chars().count() < maxlen {
        return Cow::Borrowed(s);
    }
    let head: String = s.chars().take(maxlen).collect();
    let kept = head.rsplit_once(' ').map_or(head.as_str(), |(before, _)| before);
    Cow::Owned(format!("{kept}..."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> String {
        args_repr(v.as_array().expect("test args are an array"))
    }

    fn kwargs(items: &[(&str, Value)]) -> String {
        let owned: Vec<(String, Value)> = items.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        kwargs_repr(&owned)
    }

    #[test]
    fn samples_from_celery() {
        assert_eq!(args(json!(["eval-001", "print(6*7)", "python"])), "('eval-001', 'print(6*7)', 'python')");
        assert_eq!(args(json!([2, 2])), "(2, 2)");
        assert_eq!(args(json!([])), "()");
        assert_eq!(kwargs(&[]), "{}");
        assert_eq!(
            kwargs(&[("eval_id", json!("eval-002")), ("code", json!("print('hi')")), ("language", json!("python")),]),
            r"{'eval_id': 'eval-002', 'code': 'print(\'hi\')', 'language': 'python'}"
        );
    }

    // Every expected string below was printed by celery 5.7.0's own
    // `saferepr(x, 1024, maxlevels=3)` for the same value.

    #[test]
    fn scalars_and_one_tuple() {
        assert_eq!(args(json!(["x"])), "('x',)");
        assert_eq!(
            args(json!([null, true, false, 0, -7, 1.5, 1e16, 0.00001])),
            "(None, True, False, 0, -7, 1.5, 1e+16, 1e-05)"
        );
        assert_eq!(kwargs(&[("shadow", json!(true))]), "{'shadow': True}");
    }

    #[test]
    fn strings_are_not_escaped_except_single_quotes() {
        assert_eq!(
            args(json!(["a\"b", "it's \"x\"", "back\\slash", "l1\nl2\tt", "héllo ✓", "\u{1}"])),
            "('a\"b', 'it\\'s \"x\"', 'back\\slash', 'l1\nl2\tt', 'héllo ✓', '\u{1}')"
        );
    }

    #[test]
    fn nested_containers_stop_at_three_levels() {
        assert_eq!(args(json!([[1, [2, [3, [4]]]]])), "([1, [2, [...]]],)");
        assert_eq!(args(json!([{"a": {"b": {"c": 1}}, "l": [[]]}])), "({'a': {'b': {...}}, 'l': [[...]]},)");
        assert_eq!(kwargs(&[("k", json!({"x": [1, {"y": 2}]}))]), "{'k': {'x': [1, {...}]}}");
        assert_eq!(args(json!([[], {}])), "([], {})");
    }

    /// `n` times the character `c`.
    fn rep(c: &str, n: usize) -> String {
        c.repeat(n)
    }

    #[test]
    fn long_strings_are_cut_at_their_last_space() {
        let got = args(json!(["e", format!("{} tail", rep("x", 1100)), "python"]));
        assert_eq!(got, format!("('e', '{}...', ...)", rep("x", 1018)));
        let got = args(json!([rep("word ", 300)]));
        assert_eq!(got, format!("('{}word...',)", rep("word ", 203)));
        let got = kwargs(&[(&rep("z", 1030), json!(1))]);
        assert_eq!(got, format!("{{'{}...', ...}}", rep("z", 1023)));
    }

    #[test]
    fn a_string_as_long_as_the_budget_is_cut() {
        // `truncate` cuts when len >= the budget left (1023 after the opening bracket).
        assert_eq!(args(json!([rep("z", 1023)])), format!("('{}...',)", rep("z", 1023)));
        assert_eq!(args(json!([rep("z", 1022)])), format!("('{}',)", rep("z", 1022)));
    }

    #[test]
    fn spent_budget_ends_with_ellipsis_and_open_brackets() {
        let items: Vec<Value> = (0..400).map(|i| json!(i)).collect();
        let got = args(json!([items]));
        assert!(got.ends_with(", 224, 225, 22..., ...],)"), "{got}");
        assert_eq!(got.chars().count(), 1035);

        let got = kwargs(&[("a", json!(rep("y", 1015))), ("b", json!(1))]);
        assert_eq!(got, format!("{{'a': '{}', , ...}}", rep("y", 1015)));
        let got = args(json!([rep("z", 1019), [1, 2]]));
        assert_eq!(got, format!("('{}', , ...)", rep("z", 1019)));
        let got = args(json!([rep("z", 1018), [[1]], 3]));
        assert_eq!(got, format!("('{}', [, ...])", rep("z", 1018)));
        let got = args(json!([rep("z", 1016), [[[[1]]]], 3]));
        assert_eq!(got, format!("('{}', [[[...]]], ...)", rep("z", 1016)));
        let got = args(json!([rep("z", 1010), {"k": "v"}]));
        assert_eq!(got, format!("('{}', {{'k': 'v'}})", rep("z", 1010)));
        let got = args(json!([rep("z", 1020), 123456]));
        assert_eq!(got, format!("('{}', , ...)", rep("z", 1020)));
    }
}
