//! The recorded-evaluation format: JSON Lines, version 1.
//!
//! One line holds one evaluation with both sides' fates. The live proxy writes it
//! (`[record]`), `replay` reads it, and people write it by hand, so it is parsed strictly:
//! unknown keys, wrong types and impossible numbers are refused with the reason. The
//! format is documented in the README ("Fixture format").

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::Doc;
use crate::view::{EvaluationRef, SideRef};

/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// One evaluation as seen by both systems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// Format version, always [`FORMAT_VERSION`].
    pub v: u32,
    /// The platform's evaluation id, the key both sides are correlated by.
    pub eval_id: String,
    /// The evaluation's language (`python`, `bash`, ...): statistics are kept per language.
    pub language: String,
    /// The submitted request, if it was recorded (it may be redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// What the legacy queue did with it.
    pub legacy: Side,
    /// What the shadow (Celery) did with it.
    pub shadow: Side,
}

/// The fate of an evaluation on one system.
///
/// In the format it is one object tagged by `state`. It is read through
/// [`SideRef`], whose parser checks the fields against the state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Side {
    /// A final outcome arrived.
    Ok {
        /// How long the submission took, in milliseconds.
        submit_ms: f64,
        /// Time from submission until the outcome was available, in milliseconds.
        outcome_ms: f64,
        /// The outcome document (status, stdout, stderr, exit code, ...).
        outcome: Value,
    },
    /// The system failed the evaluation itself (HTTP error, Celery FAILURE, ...).
    Error {
        /// How long the submission took, when it was accepted at all.
        submit_ms: Option<f64>,
        /// What the system said, e.g. `{"exc_type": .., "exc_message": ..}`.
        error: Value,
    },
    /// No outcome arrived before the deadline.
    Lost {
        /// How long the submission took, when it was accepted at all.
        submit_ms: Option<f64>,
        /// How long shadowdiff waited before giving up, in milliseconds.
        waited_ms: f64,
    },
}

impl<'de> Deserialize<'de> for Side {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Side, D::Error> {
        SideRef::deserialize(deserializer).map(|side| side.to_owned_side())
    }
}

/// A side as written: every field optional, checked against `state` afterwards.
///
/// serde's internally tagged enums would buffer the whole outcome before decoding it,
/// which costs more than the rest of a replay together; a flat struct reads it in one pass.
/// The fast path ([`crate::fixture_fast`]) fills the same struct, so both paths judge the
/// fields against the state in the same place.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSide<'a> {
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) submit_ms: Option<f64>,
    #[serde(default)]
    pub(crate) outcome_ms: Option<f64>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) outcome: Option<Doc<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) error: Option<Doc<'a>>,
    #[serde(default)]
    pub(crate) waited_ms: Option<f64>,
}

/// The `state` of a side.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Ok,
    Error,
    Lost,
}

/// A key that is present holds a value, even `null` (which `Option` alone would lose).
fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Doc<'a>>, D::Error> {
    Doc::deserialize(deserializer).map(Some)
}

impl<'de: 'a, 'a> Deserialize<'de> for SideRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SideRef<'a>, D::Error> {
        let raw = RawSide::deserialize(deserializer)?;
        SideRef::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl<'a> TryFrom<RawSide<'a>> for SideRef<'a> {
    type Error = String;

    fn try_from(raw: RawSide<'a>) -> Result<SideRef<'a>, String> {
        let (state, allowed): (&str, &[&str]) = match raw.state {
            State::Ok => ("ok", &["submit_ms", "outcome_ms", "outcome"]),
            State::Error => ("error", &["submit_ms", "error"]),
            State::Lost => ("lost", &["submit_ms", "waited_ms"]),
        };
        let given = [
            ("outcome_ms", raw.outcome_ms.is_some()),
            ("outcome", raw.outcome.is_some()),
            ("error", raw.error.is_some()),
            ("waited_ms", raw.waited_ms.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(field, given)| *given && !allowed.contains(field)) {
            return Err(format!("field `{field}` does not belong to state \"{state}\""));
        }
        let required = |field: &str| format!("state \"{state}\" requires field `{field}`");
        Ok(match raw.state {
            State::Ok => SideRef::Ok {
                submit_ms: raw.submit_ms.ok_or_else(|| required("submit_ms"))?,
                outcome_ms: raw.outcome_ms.ok_or_else(|| required("outcome_ms"))?,
                outcome: raw.outcome.ok_or_else(|| required("outcome"))?,
            },
            State::Error => {
                SideRef::Error { submit_ms: raw.submit_ms, error: raw.error.ok_or_else(|| required("error"))? }
            }
            State::Lost => SideRef::Lost {
                submit_ms: raw.submit_ms,
                waited_ms: raw.waited_ms.ok_or_else(|| required("waited_ms"))?,
            },
        })
    }
}

impl Side {
    /// The side's `state` word, as written in the format.
    pub fn state(&self) -> &'static str {
        match self {
            Side::Ok { .. } => "ok",
            Side::Error { .. } => "error",
            Side::Lost { .. } => "lost",
        }
    }

    /// The submission time, when known.
    pub fn submit_ms(&self) -> Option<f64> {
        match self {
            Side::Ok { submit_ms, .. } => Some(*submit_ms),
            Side::Error { submit_ms, .. } | Side::Lost { submit_ms, .. } => *submit_ms,
        }
    }

    /// Looks a member of the side document up: the first token names a field of the side
    /// (`state`, `submit_ms`, `outcome`, `error`, ...), the rest walks into its value.
    pub fn lookup(&self, tokens: &[&str]) -> Option<Value> {
        let (first, rest) = tokens.split_first()?;
        let number = |n: f64| serde_json::Number::from_f64(n).map(Value::Number);
        let field = match (*first, self) {
            ("state", _) => Some(Value::String(self.state().to_string())),
            ("submit_ms", side) => side.submit_ms().and_then(number),
            ("outcome_ms", Side::Ok { outcome_ms, .. }) => number(*outcome_ms),
            ("waited_ms", Side::Lost { waited_ms, .. }) => number(*waited_ms),
            ("outcome", Side::Ok { outcome, .. }) => return crate::pointer::lookup(outcome, rest).cloned(),
            ("error", Side::Error { error, .. }) => return crate::pointer::lookup(error, rest).cloned(),
            _ => None,
        }?;
        rest.is_empty().then_some(field)
    }
}

impl Evaluation {
    /// Serialises the evaluation as one fixture line, without the trailing newline.
    pub fn to_line(&self) -> String {
        // Serialising a tree of `Value`s and plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why one line is not a valid evaluation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is empty or only white space.
    #[error("blank line")]
    Blank,
    /// The bytes are not UTF-8.
    #[error("invalid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    /// The JSON does not parse or does not have the format's shape.
    #[error("{0}")]
    Json(String),
    /// The JSON has the right shape but impossible values.
    #[error("{0}")]
    Invalid(String),
}

/// Parses one line (without its newline) into an owned evaluation.
pub fn parse_line(line: &[u8]) -> Result<Evaluation, LineError> {
    parse_line_ref(line).map(|evaluation| evaluation.to_owned_evaluation())
}

/// Parses one line (without its newline) into an evaluation that borrows from it: the
/// cheap form replay judges (see [`crate::view`]). Refuses exactly what [`parse_line`] does.
pub fn parse_line_ref(line: &[u8]) -> Result<EvaluationRef<'_>, LineError> {
    let text = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(LineError::Blank);
    }
    // The fast path reads well-formed lines; serde_json reads the rest and words the errors.
    let evaluation = match crate::fixture_fast::evaluation(text) {
        Some(evaluation) => evaluation,
        None => serde_json::from_str(text).map_err(|e| LineError::Json(json_reason(&e)))?,
    };
    validate(&evaluation).map_err(LineError::Invalid)?;
    Ok(evaluation)
}

/// serde_json says "at line 1 column N"; on a one-line record only the column helps.
fn json_reason(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => &message,
    };
    format!("{message} (column {})", error.column())
}

/// The checks the JSON shape alone cannot make.
fn validate(evaluation: &EvaluationRef<'_>) -> Result<(), String> {
    if evaluation.v != FORMAT_VERSION {
        return Err(format!("unsupported format version v={} (this build reads v=1)", evaluation.v));
    }
    if evaluation.eval_id.is_empty() {
        return Err("eval_id must not be empty".into());
    }
    if evaluation.language.is_empty() {
        return Err("language must not be empty".into());
    }
    evaluation.legacy.validate("legacy")?;
    evaluation.shadow.validate("shadow")
}

impl SideRef<'_> {
    fn validate(&self, name: &str) -> Result<(), String> {
        let check = |key: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name}.{key} must be a finite number >= 0, got {value}"))
            }
        };
        match self {
            SideRef::Ok { submit_ms, outcome_ms, outcome } => {
                check("submit_ms", *submit_ms)?;
                check("outcome_ms", *outcome_ms)?;
                if !outcome.root().is_object() {
                    return Err(format!("{name}.outcome must be a JSON object"));
                }
            }
            SideRef::Error { submit_ms, .. } => {
                if let Some(ms) = submit_ms {
                    check("submit_ms", *ms)?;
                }
            }
            SideRef::Lost { submit_ms, waited_ms } => {
                if let Some(ms) = submit_ms {
                    check("submit_ms", *ms)?;
                }
                check("waited_ms", *waited_ms)?;
            }
        }
        Ok(())
    }
}

/// A line of input with its 1-based number.
#[derive(Debug)]
pub struct Line {
    /// 1-based line number in its file.
    pub number: u64,
    /// The parsed evaluation, or why the line is malformed.
    pub parsed: Result<Evaluation, LineError>,
}

/// A line of input with its 1-based number, parsed into a view of the reader's buffer.
#[derive(Debug)]
pub struct LineRef<'a> {
    /// 1-based line number in its file.
    pub number: u64,
    /// The parsed evaluation, or why the line is malformed.
    pub parsed: Result<EvaluationRef<'a>, LineError>,
}

/// Reads evaluations from a stream one line at a time; memory stays that of one line.
///
/// As an [`Iterator`] it yields owned evaluations; [`FixtureReader::next_ref`] yields
/// views of its line buffer instead, which is what replay uses.
pub struct FixtureReader<R> {
    reader: R,
    buffer: Vec<u8>,
    number: u64,
}

impl<R: BufRead> FixtureReader<R> {
    /// Wraps a buffered reader.
    pub fn new(reader: R) -> FixtureReader<R> {
        FixtureReader { reader, buffer: Vec::with_capacity(4096), number: 0 }
    }

    /// The next line, parsed into a view that lives until the next call; `None` at the end.
    pub fn next_ref(&mut self) -> Option<std::io::Result<LineRef<'_>>> {
        self.buffer.clear();
        match self.reader.read_until(b'\n', &mut self.buffer) {
            Ok(0) => None,
            Ok(_) => {
                self.number += 1;
                let mut line = self.buffer.as_slice();
                if let Some(stripped) = line.strip_suffix(b"\n") {
                    line = stripped.strip_suffix(b"\r").unwrap_or(stripped);
                }
                Some(Ok(LineRef { number: self.number, parsed: parse_line_ref(line) }))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl<R: BufRead> Iterator for FixtureReader<R> {
    type Item = std::io::Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = self.next_ref()?;
        Some(line.map(|line| Line {
            number: line.number,
            parsed: line.parsed.map(|evaluation| evaluation.to_owned_evaluation()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"v":1,"eval_id":"e-1","language":"python","request":{"code":"print(1)"},"legacy":{"state":"ok","submit_ms":41.2,"outcome_ms":812.0,"outcome":{"status":"completed","stdout":"1\n"}},"shadow":{"state":"lost","submit_ms":null,"waited_ms":30000}}"#;

    fn reason(line: &str) -> String {
        parse_line(line.as_bytes()).expect_err("should be refused").to_string()
    }

    #[test]
    fn parses_a_good_line_and_writes_it_back() {
        let evaluation = parse_line(GOOD.as_bytes()).expect("valid");
        assert_eq!(evaluation.eval_id, "e-1");
        assert_eq!(evaluation.shadow, Side::Lost { submit_ms: None, waited_ms: 30000.0 });
        let again = parse_line(evaluation.to_line().as_bytes()).expect("round trip");
        assert_eq!(again, evaluation);
    }

    #[test]
    fn refuses_unknown_keys_at_every_level() {
        assert!(reason(&GOOD.replace("\"v\":1,", "\"v\":1,\"x\":2,")).starts_with("unknown field `x`"));
        let side = GOOD.replace("\"waited_ms\":30000", "\"waited_ms\":30000,\"y\":1");
        assert!(reason(&side).starts_with("unknown field `y`"), "{}", reason(&side));
        let misplaced = GOOD.replace("\"waited_ms\":30000", "\"waited_ms\":30000,\"error\":null");
        assert!(
            reason(&misplaced).starts_with("field `error` does not belong to state \"lost\""),
            "{}",
            reason(&misplaced)
        );
        let incomplete = GOOD.replace(",\"waited_ms\":30000", "");
        assert!(
            reason(&incomplete).starts_with("state \"lost\" requires field `waited_ms`"),
            "{}",
            reason(&incomplete)
        );
    }

    #[test]
    fn refuses_wrong_types_and_values() {
        assert!(reason(&GOOD.replace("41.2", "\"41.2\"")).contains("invalid type: string"));
        assert_eq!(reason(&GOOD.replace("41.2", "-1")), "legacy.submit_ms must be a finite number >= 0, got -1");
        assert_eq!(
            reason(&GOOD.replace("\"v\":1", "\"v\":2")),
            "unsupported format version v=2 (this build reads v=1)"
        );
        assert!(reason(&GOOD.replace("\"state\":\"lost\"", "\"state\":\"gone\"")).starts_with("unknown variant `gone`"));
        let null_error = GOOD
            .replace("\"state\":\"lost\",\"submit_ms\":null,\"waited_ms\":30000", "\"state\":\"error\",\"error\":null");
        assert_eq!(
            parse_line(null_error.as_bytes()).expect("null error is an error").shadow,
            Side::Error { submit_ms: None, error: Value::Null }
        );
        assert_eq!(reason(&GOOD.replace("\"e-1\"", "\"\"")), "eval_id must not be empty");
    }

    #[test]
    fn truncated_line_names_the_column() {
        let cut = &GOOD[..60];
        assert_eq!(reason(cut), "EOF while parsing an object (column 60)");
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[20] = 0xff;
        assert_eq!(parse_line(&bytes).expect_err("bad utf8"), LineError::InvalidUtf8(20));
    }

    #[test]
    fn reader_numbers_lines_and_reports_blank_ones() {
        let input = format!("{GOOD}\n\n{GOOD}\r\n");
        let lines: Vec<Line> = FixtureReader::new(input.as_bytes()).map(|l| l.expect("io")).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].parsed.is_ok());
        assert_eq!(lines[1].parsed, Err(LineError::Blank));
        assert_eq!(lines[2].number, 3);
        assert!(lines[2].parsed.is_ok());
    }

    #[test]
    fn side_lookup_reaches_into_outcome_and_error() {
        let side = Side::Error { submit_ms: Some(1.0), error: serde_json::json!({"exc_type": "X"}) };
        assert_eq!(side.lookup(&["state"]), Some(serde_json::json!("error")));
        assert_eq!(side.lookup(&["error", "exc_type"]), Some(serde_json::json!("X")));
        assert_eq!(side.lookup(&["outcome", "status"]), None);
        assert_eq!(side.lookup(&["state", "x"]), None);
    }
}
