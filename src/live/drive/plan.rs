//! The plan of a drive: every recorded evaluation that will be sent again, read and checked
//! before the first one goes out.
//!
//! Only files are read here (the fixture format, `.gz` too, through
//! [`crate::fixture::input`]). A line that cannot drive (malformed, no request, a request
//! whose code was redacted, no `submitted_at` when pacing by speed) stops the drive before
//! it starts, with every such line named by file and line number.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::pace::parse_rfc3339;
use crate::config::live::Route;
use crate::fixture::input;
use crate::fixture::{Evaluation, FixtureReader};
use crate::judge::pointer;

/// Problems listed in full; beyond this only their number is given.
const LISTED: usize = 10;

/// One recorded evaluation to send again.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The file it was read from, as named on the command line.
    pub file: String,
    /// Its 1-based line in that file.
    pub line: u64,
    /// Its recorded submission time, since the Unix epoch.
    pub recorded_at: Option<Duration>,
    /// The recorded evaluation: its request and both recorded sides.
    pub evaluation: Evaluation,
}

/// Why a drive cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A file could not be opened or read.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// The OS or format error.
        reason: String,
    },
    /// Lines that cannot be driven.
    #[error("{count} recorded evaluation(s) cannot be driven:\n{listed}{hint}")]
    Lines {
        /// How many lines.
        count: usize,
        /// The first of them, one per line as `file:line: reason`.
        listed: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Nothing to drive.
    #[error("no recorded evaluation in {0}")]
    Empty(String),
}

/// What a line that drives needs, said once under the list of lines that do not.
const HINT: &str = "\nA recording drives when each line carries the request as it was sent: record with \
`shadowdiff serve` and a [record] path, leaving [record] redact unset (the default), so the code is kept. \
--speed also needs each line's submitted_at, which serve writes; use --rate for recordings without it.";

/// Reads every file and checks each line can drive under `route` (which says where the
/// code is in a request). With `need_times`, each line must carry `submitted_at`; the plan
/// is then in recorded order (stable for equal times).
pub fn read(files: &[PathBuf], route: &Route, need_times: bool) -> Result<Vec<Planned>, PlanError> {
    let mut planned = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let read_error = |reason: String| PlanError::Read { file: name.clone(), reason };
        let file = File::open(path).map_err(|e| read_error(e.to_string()))?;
        let lines = input::open(file).map_err(|e| read_error(e.to_string()))?;
        let mut reader = FixtureReader::new(lines);
        while let Some(line) = reader.next_ref() {
            let line = line.map_err(|e| read_error(e.to_string()))?;
            let evaluation = match line.parsed {
                Ok(evaluation) => evaluation.to_owned_evaluation(),
                Err(reason) => {
                    problems.push(format!("{name}:{}: {reason}", line.number));
                    continue;
                }
            };
            match check(&evaluation, route, need_times) {
                Ok(recorded_at) => {
                    planned.push(Planned { file: name.clone(), line: line.number, recorded_at, evaluation })
                }
                Err(reason) => {
                    problems.push(format!("{name}:{}: eval_id {:?}: {reason}", line.number, evaluation.eval_id))
                }
            }
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        let mut listed: Vec<String> = problems.into_iter().take(LISTED).map(|p| format!("  - {p}")).collect();
        if count > LISTED {
            listed.push(format!("  - ... and {} more", count - LISTED));
        }
        return Err(PlanError::Lines { count, listed: listed.join("\n"), hint: HINT });
    }
    if planned.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(PlanError::Empty(names.join(", ")));
    }
    if need_times {
        planned.sort_by_key(|p| p.recorded_at);
    }
    Ok(planned)
}

/// Whether a recorded evaluation can drive: a request with its code whole, and a parseable
/// time where one is needed. Returns the recorded time.
pub fn check(evaluation: &Evaluation, route: &Route, need_times: bool) -> Result<Option<Duration>, String> {
    let Some(request) = &evaluation.request else {
        return Err("no request was recorded".into());
    };
    let tokens: Vec<&str> = route.code.iter().map(String::as_str).collect();
    let code_at = || format!("/{}", route.code.join("/"));
    match pointer::lookup(request, &tokens) {
        Some(Value::String(_) | Value::Number(_)) => {}
        Some(Value::Object(map)) if map.get("redacted") == Some(&Value::Bool(true)) => {
            return Err(format!("the request's code at {} was redacted when it was recorded", code_at()));
        }
        Some(_) => return Err(format!("the request's code at {} is not text", code_at())),
        None => return Err(format!("the request has no code at {}", code_at())),
    }
    let recorded_at = match &evaluation.submitted_at {
        Some(text) => Some(parse_rfc3339(text).map_err(|e| format!("submitted_at {e}"))?),
        None if need_times => return Err("no submitted_at (needed by --speed)".into()),
        None => None,
    };
    Ok(recorded_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::live::IdSource;
    use crate::fixture::Side;
    use serde_json::json;

    fn route() -> Route {
        Route {
            method: "POST".into(),
            path: "/evaluations".into(),
            eval_id: vec!["eval_id".into()],
            eval_id_from: IdSource::Request,
            code: vec!["code".into()],
            language: vec!["language".into()],
        }
    }

    fn evaluation(request: Option<Value>, submitted_at: Option<&str>) -> Evaluation {
        let side = Side::Ok { submit_ms: 1.0, outcome_ms: 2.0, outcome: json!({"stdout": "1\n"}) };
        Evaluation {
            v: 1,
            eval_id: "e-1".into(),
            language: "python".into(),
            submitted_at: submitted_at.map(str::to_owned),
            request,
            legacy: side.clone(),
            shadow: side,
            double_run: None,
        }
    }

    #[test]
    fn a_whole_request_drives_and_a_redacted_or_missing_one_does_not() {
        let whole = json!({"eval_id": "e-1", "code": "print(1)", "language": "python"});
        assert_eq!(check(&evaluation(Some(whole.clone()), None), &route(), false), Ok(None));
        let redacted =
            crate::judge::example::redact(&whole, &[crate::judge::pointer::Pattern::parse("/code").expect("pattern")]);
        let error = check(&evaluation(Some(redacted), None), &route(), false).expect_err("redacted");
        assert_eq!(error, "the request's code at /code was redacted when it was recorded");
        assert_eq!(check(&evaluation(None, None), &route(), false), Err("no request was recorded".into()));
        assert_eq!(
            check(&evaluation(Some(json!({"eval_id": "e-1"})), None), &route(), false),
            Err("the request has no code at /code".into())
        );
    }

    #[test]
    fn speed_needs_a_readable_submission_time() {
        let whole = json!({"eval_id": "e-1", "code": "print(1)", "language": "python"});
        assert_eq!(
            check(&evaluation(Some(whole.clone()), None), &route(), true),
            Err("no submitted_at (needed by --speed)".into())
        );
        let at = check(&evaluation(Some(whole.clone()), Some("1970-01-01T00:00:01Z")), &route(), true);
        assert_eq!(at, Ok(Some(Duration::from_secs(1))));
        let bad = check(&evaluation(Some(whole), Some("yesterday")), &route(), false).expect_err("bad time");
        assert!(bad.starts_with("submitted_at \"yesterday\" is not an RFC 3339 time"), "{bad}");
    }

    #[test]
    fn every_line_that_cannot_drive_is_named_with_its_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec.jsonl");
        let good = evaluation(Some(json!({"eval_id": "e-1", "code": "print(1)", "language": "python"})), None);
        let lines = [good.to_line(), evaluation(None, None).to_line(), "{not json".to_owned(), good.to_line()];
        std::fs::write(&path, lines.join("\n")).expect("write");
        let error = read(std::slice::from_ref(&path), &route(), false).expect_err("two bad lines").to_string();
        let name = path.display().to_string();
        assert!(error.starts_with("2 recorded evaluation(s) cannot be driven:\n"), "{error}");
        assert!(error.contains(&format!("  - {name}:2: eval_id \"e-1\": no request was recorded\n")), "{error}");
        assert!(error.contains(&format!("  - {name}:3: ")), "{error}");
        assert!(error.contains("leaving [record] redact unset"), "{error}");

        std::fs::write(&path, [lines[0].clone(), lines[3].clone()].join("\n")).expect("write");
        let planned = read(&[path], &route(), false).expect("drives");
        assert_eq!(planned.iter().map(|p| p.line).collect::<Vec<_>>(), [1, 2]);
    }
}
