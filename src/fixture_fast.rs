//! The fast path of the fixture parser: well-formed lines read without serde.
//!
//! serde_json reads a line through layers of generic visitor calls; on the replay path that
//! was most of the time spent per evaluation. [`evaluation`] reads the format's fields with a
//! [`Scanner`] instead and each document (`outcome`, `error`, `request`) straight into a
//! [`crate::json::Doc`].
//!
//! It is deliberately incomplete. Whenever it meets something it is not sure to read
//! exactly as serde_json would (any syntax error, an unknown or repeated field, a wrong
//! type, a side whose fields do not fit its state, and whatever the scanner gives up on) it
//! returns `None`. The caller ([`crate::fixture::parse_line_ref`]) then parses the line with
//! serde_json, which stays the reference: it produces the same evaluation or the exact error
//! message users have always seen. The tests below check that both paths agree on the
//! shipped fixtures and on thousands of damaged lines.

use std::borrow::Cow;

use crate::fixture::{RawSide, State};
use crate::json::scan::Scanner;
use crate::json::Doc;
use crate::view::{EvaluationRef, SideRef};

/// Reads a well-formed line, or returns `None` to let serde_json read it.
pub(crate) fn evaluation(text: &str) -> Option<EvaluationRef<'_>> {
    let mut scanner = Scanner::new(text);
    let evaluation = read_evaluation(&mut scanner)?;
    scanner.skip_whitespace();
    scanner.at_end().then_some(evaluation)
}

fn read_evaluation<'a>(scanner: &mut Scanner<'a>) -> Option<EvaluationRef<'a>> {
    let (mut v, mut eval_id, mut language, mut request, mut legacy, mut shadow) = (None, None, None, None, None, None);
    fields(scanner, |scanner, key| match key {
        "v" => once(&mut v, u32_field(scanner)?),
        "eval_id" => once(&mut eval_id, string_field(scanner)?),
        "language" => once(&mut language, string_field(scanner)?),
        "request" => once(&mut request, nullable_document(scanner)?),
        "legacy" => once(&mut legacy, read_side(scanner)?),
        "shadow" => once(&mut shadow, read_side(scanner)?),
        _ => None,
    })?;
    Some(EvaluationRef {
        v: v?,
        eval_id: eval_id?,
        language: language?,
        request: request.flatten(),
        legacy: legacy?,
        shadow: shadow?,
    })
}

fn read_side<'a>(scanner: &mut Scanner<'a>) -> Option<SideRef<'a>> {
    let (mut state, mut submit_ms, mut outcome_ms, mut outcome, mut error, mut waited_ms) =
        (None, None, None, None, None, None);
    fields(scanner, |scanner, key| match key {
        "state" => once(&mut state, state_field(scanner)?),
        "submit_ms" => once(&mut submit_ms, nullable_f64(scanner)?),
        "outcome_ms" => once(&mut outcome_ms, nullable_f64(scanner)?),
        "outcome" => once(&mut outcome, scanner.document()?),
        "error" => once(&mut error, scanner.document()?),
        "waited_ms" => once(&mut waited_ms, nullable_f64(scanner)?),
        _ => None,
    })?;
    let raw = RawSide {
        state: state?,
        submit_ms: submit_ms.flatten(),
        outcome_ms: outcome_ms.flatten(),
        outcome,
        error,
        waited_ms: waited_ms.flatten(),
    };
    SideRef::try_from(raw).ok()
}

/// Reads an object of known fields: `field` gets each key and reads its value.
fn fields<'a>(scanner: &mut Scanner<'a>, mut field: impl FnMut(&mut Scanner<'a>, &str) -> Option<()>) -> Option<()> {
    scanner.skip_whitespace();
    scanner.expect(b'{')?;
    scanner.skip_whitespace();
    if scanner.eat(b'}') {
        return Some(());
    }
    loop {
        scanner.skip_whitespace();
        let key = scanner.string()?;
        scanner.skip_whitespace();
        scanner.expect(b':')?;
        field(scanner, &key)?;
        scanner.skip_whitespace();
        match scanner.next_byte()? {
            b',' => {}
            b'}' => return Some(()),
            _ => return None,
        }
    }
}

/// Stores a field's value unless the field was already given (serde refuses repeats).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

fn state_field(scanner: &mut Scanner<'_>) -> Option<State> {
    match string_field(scanner)?.as_ref() {
        "ok" => Some(State::Ok),
        "error" => Some(State::Error),
        "lost" => Some(State::Lost),
        _ => None,
    }
}

fn string_field<'a>(scanner: &mut Scanner<'a>) -> Option<Cow<'a, str>> {
    scanner.skip_whitespace();
    scanner.string()
}

/// `v`: serde reads a `u32` only from a non-negative integer that fits.
fn u32_field(scanner: &mut Scanner<'_>) -> Option<u32> {
    scanner.skip_whitespace();
    scanner.number()?.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// An `Option<f64>` field: `null` or any number (serde turns an integer into an `f64`
/// with `as`, as `Number::as_f64` does).
fn nullable_f64(scanner: &mut Scanner<'_>) -> Option<Option<f64>> {
    scanner.skip_whitespace();
    if scanner.peek() == Some(b'n') {
        return scanner.literal(b"null", None);
    }
    scanner.number()?.as_f64().map(Some)
}

/// An `Option<Doc>` field (`request`): `null` is no document at all.
fn nullable_document<'a>(scanner: &mut Scanner<'a>) -> Option<Option<Doc<'a>>> {
    scanner.skip_whitespace();
    if scanner.peek() == Some(b'n') {
        return scanner.literal(b"null", None);
    }
    scanner.document().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = include_str!("../fixtures/evaluations.jsonl");

    /// What serde_json makes of a line: the reference.
    fn reference(text: &str) -> Result<EvaluationRef<'_>, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The fast path may give up, but what it returns must be what serde_json returns.
    fn agrees(text: &str) -> bool {
        match evaluation(text) {
            Some(fast) => {
                assert_eq!(Ok(fast), reference(text), "fast path differs on {text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_every_shipped_line_as_serde_json_does() {
        for line in FIXTURES.lines() {
            assert!(agrees(line), "fast path gave up on a shipped line: {line}");
        }
    }

    #[test]
    fn reads_escapes_numbers_and_odd_spacing_exactly() {
        let lines = [
            r#" { "v" : 1 , "eval_id":"e\u0031\"\\\/\b\f\n\r\t","language":"\u00e9x","request":null,
               "legacy":{"state":"ok","submit_ms":0,"outcome_ms":1e2,"outcome":{"a":[-0,-0.0,1.5E-3,18446744073709551615,
               123456789012345678901234,-9223372036854775808,0.1,{"k":1,"k":[],"\u006b":{}}],"b":true,"c":false,"d":null}},
               "shadow":{"waited_ms":30000,"submit_ms":null,"state":"lost"}}  "#,
            r#"{"v":1,"eval_id":"e","language":"l","legacy":{"state":"error","error":null},"shadow":{"state":"error","submit_ms":2.5,"error":[]}}"#,
            r#"{"v":1,"eval_id":"e","language":"l","request":[1,{"code":"x"}],"legacy":{"state":"lost","waited_ms":1},"shadow":{"state":"lost","waited_ms":0.0}}"#,
        ];
        for line in lines {
            let line = line.replace('\n', " ");
            assert!(agrees(&line), "fast path gave up: {line}");
        }
    }

    #[test]
    fn gives_up_on_what_it_cannot_vouch_for() {
        let good = FIXTURES.lines().next().expect("a line");
        let cases = [
            good.replace("\"v\":1", "\"v\":1.0"),
            good.replace("\"v\":1", "\"v\":01"),
            good.replace("\"v\":1", "\"v\":1,\"v\":1"),
            good.replace("\"v\":1", "\"v\":1,\"x\":1"),
            good.replace("\"state\":\"ok\"", "\"state\":{\"ok\":null}"),
            good.replace("\"stdout\":\"", "\"stdout\":\"\\ud83d\\ude00"),
            good.replace("\"stdout\":\"", "\"stdout\":\"\u{1}"),
            good.replace("\"score\":24.0", "\"score\":1e999"),
            good.replacen("\"state\":\"ok\"", "\"state\":\"lost\"", 1),
            good.replace("\"exit_code\":0", &format!("\"exit_code\":{}0{}", "[".repeat(70), "]".repeat(70))),
            format!("{good} x"),
            format!("[{good}]"),
        ];
        for case in cases {
            assert!(evaluation(&case).is_none(), "fast path should give up on {case}");
        }
    }

    #[test]
    fn damaged_lines_are_never_misread() {
        const NOISE: &[u8] = b"\"\\{}[],:0123456789-+.eEtfnulr \tx";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let lines: Vec<&str> = FIXTURES.lines().take(200).collect();
        let (mut accepted, mut tried) = (0, 0);
        for round in 0..20_000 {
            let mut bytes = lines[round % lines.len()].as_bytes().to_vec();
            for _ in 0..1 + random(3) {
                if bytes.is_empty() {
                    break;
                }
                let at = random(bytes.len());
                match random(4) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, NOISE[random(NOISE.len())]),
                    2 => bytes[at] = NOISE[random(NOISE.len())],
                    _ => bytes.truncate(at),
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            tried += 1;
            accepted += usize::from(agrees(text));
        }
        // Some damage leaves a valid line (a changed digit): those must have been compared.
        assert!(accepted > 100 && tried > 19_000, "accepted {accepted} of {tried}");
    }
}
