//! The Celery wire format: what the bytes in Redis mean; [`broker`] alone moves them.
//!
//! shadowdiff mirrors evaluations to unmodified Python Celery 5 workers by writing Celery
//! protocol-v2 task messages straight into the Redis broker, and reads their outcomes from
//! the Redis result backend. This module turns typed values into those bytes and back.
//! Apart from [`broker`] (the Redis client) and [`redis_target`] (how a Redis is reached:
//! TLS, ACL users, Sentinel) it does no IO: the broker client `LPUSH`es
//! what [`encode_task`] returns, `PUBLISH`es what [`encode_revoke`] returns, and hands the
//! value of a `celery-task-meta-<id>` key (or of a pub/sub message on the channel of the
//! same name) to [`parse_result`].
//!
//! The format is the one captured from Celery 5.7 / kombu 5.7 on Redis 7 and described
//! field by field in `shared/celery-wire/README.md`; the captured samples are copied into
//! `tests/data/celery-wire/` and every test here runs against them:
//!
//! * A task message is a JSON *envelope* (`body`, `content-type`, `content-encoding`,
//!   `headers`, `properties`) pushed with `LPUSH` onto the list key of its queue and
//!   priority ([`PriorityLayout`]). Its `body` is the base64 of the JSON text
//!   `[args, kwargs, embed]`. [`encode_task`] writes the same bytes as kombu, separators
//!   and ASCII escapes included, so its output can be compared byte for byte with Celery's.
//! * Several malformed envelopes make a worker exit, wedge, or lose the message without a
//!   trace, and the Redis transport has no dead-letter queue. [`validate_envelope`] refuses
//!   every such shape listed in the reference, naming the field at fault.
//! * A revoke is a broadcast on the pub/sub channel `/<db>.celery.pidbox` ([`encode_revoke`]).
//! * A result is a JSON object whose `status` says which [`TaskState`] the task reached;
//!   a missing key means PENDING (or expired), which is the caller's business.
//!
//! ```
//! use serde_json::json;
//! use shadowdiff::celery::{encode_task, parse_result, result_key, validate_envelope};
//! use shadowdiff::celery::{PriorityLayout, TaskSpec, TaskState};
//!
//! let spec = TaskSpec {
//!     args: vec![json!("eval-42"), json!("print(6*7)"), json!("python")],
//!     kwargs: vec![("shadow".into(), json!(true))],
//!     priority: 3,
//!     origin: "shadowdiff1234@host".into(),
//!     ..TaskSpec::new("evaluate", "shadow")
//! };
//! let msg = encode_task(&spec, &PriorityLayout::default())?;
//! assert_eq!(msg.list_key, "shadow\x06\x163"); // LPUSH msg.list_key msg.envelope
//! validate_envelope(msg.envelope.as_bytes())?;
//!
//! // SUBSCRIBE then GET result_key(&msg.task_id); either gives bytes like these:
//! assert_eq!(result_key("t-1"), "celery-task-meta-t-1");
//! let stored = br#"{"status": "FAILURE", "result": {"exc_type": "ValueError",
//!     "exc_message": ["boom"], "exc_module": "builtins"}, "traceback": null,
//!     "children": [], "date_done": "2026-11-28T15:38:16.990178+00:00", "task_id": "t-1"}"#;
//! let result = parse_result(stored)?;
//! assert!(result.state.is_final());
//! if let TaskState::Failure(error) = &result.state {
//!     assert_eq!(error.to_json()["exc_type"], "ValueError");
//! }
//! # Ok::<(), shadowdiff::celery::WireError>(())
//! ```

#![warn(missing_docs)]

mod batch;
pub mod broker;
mod error;
mod isotime;
mod janitor;
mod keys;
mod message;
mod pyjson;
mod pyrepr;
pub mod redis_target;
mod remove;
mod result;
mod results;
mod revoke;
mod submit;
mod validate;

pub use isotime::format_utc;
pub use message::{encode_task, EncodedTask, Expires, PriorityLayout, TaskSpec};
pub use result::{parse_result, result_key, task_id_from_channel, TaskError, TaskResult, TaskState, RESULT_KEY_PREFIX};
pub use revoke::{encode_revoke, pidbox_channel, EncodedRevoke, RevokeRequest};
pub use validate::validate_envelope;

/// Everything that can be wrong with Celery wire data, on the way out or on the way in.
///
/// Field names are dotted paths into the envelope or result (`headers.id`,
/// `properties.delivery_info.exchange`), so a refused message says exactly what to fix.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The typed input given to an encoder cannot make a message a worker would accept.
    #[error("cannot encode: `{field}` {reason}")]
    InvalidSpec {
        /// The input field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A priority layout is not usable (steps empty, unsorted, not starting at 0, above 9).
    #[error("invalid priority layout: {reason}")]
    InvalidPriorityLayout {
        /// What is wrong with it.
        reason: String,
    },

    /// The envelope is not JSON at all (a worker exits on it).
    #[error("envelope is not valid JSON ({source}); input starts {preview:?}")]
    EnvelopeNotJson {
        /// The JSON parser's error.
        source: serde_json::Error,
        /// The first characters of the input.
        preview: String,
    },

    /// The envelope is JSON but not an object (a worker exits on it).
    #[error("envelope is a JSON {found}, not an object")]
    EnvelopeNotObject {
        /// The JSON type found instead.
        found: &'static str,
    },

    /// A field the worker needs is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// Dotted path of the field.
        field: &'static str,
    },

    /// A field is present with a JSON type the worker cannot use.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// Dotted path of the field.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// What it holds (a JSON type name).
        found: &'static str,
    },

    /// A field has the right type but a value the worker refuses or mishandles.
    #[error("field `{field}` {reason}")]
    BadValue {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// The `body` does not decode to the `[args, kwargs, embed]` list a worker unpacks.
    #[error("field `body` {reason}")]
    BadBody {
        /// What is wrong with the decoded body.
        reason: String,
    },

    /// A result backend value is not JSON.
    #[error("result is not valid JSON ({source}); input starts {preview:?}")]
    ResultNotJson {
        /// The JSON parser's error.
        source: serde_json::Error,
        /// The first characters of the input.
        preview: String,
    },

    /// A result backend value is JSON but not what Celery writes.
    #[error("result {problem}; input starts {preview:?}")]
    BadResult {
        /// What is wrong (e.g. "has no `status`").
        problem: String,
        /// The first characters of the input.
        preview: String,
    },
}

/// How many characters of a bad input an error quotes.
const PREVIEW_CHARS: usize = 120;

/// The start of `bytes` as text, for error messages.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().nth(PREVIEW_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The JSON type name of a value, for error messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Loading of the captured samples in `tests/data/celery-wire/`.
#[cfg(test)]
mod samples {
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/celery-wire")
    }

    /// The content of one sample file.
    pub(crate) fn read(name: &str) -> String {
        let path = dir().join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read sample {}: {e}", path.display()))
    }

    /// The exact bytes of a one-line sample, without the final newline if any.
    pub(crate) fn line(name: &str) -> String {
        read(name).trim_end_matches('\n').to_owned()
    }

    /// `(file name, content)` of every sample whose name starts with `prefix` and ends
    /// with `.json`, the indented `.pretty.json` copies excluded; sorted by name.
    pub(crate) fn all(prefix: &str) -> Vec<(String, String)> {
        let entries = std::fs::read_dir(dir()).expect("sample directory is readable");
        let mut names: Vec<String> = entries
            .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix) && n.ends_with(".json") && !n.ends_with(".pretty.json"))
            .collect();
        names.sort();
        names.into_iter().map(|n| (n.clone(), read(&n))).collect()
    }
}
