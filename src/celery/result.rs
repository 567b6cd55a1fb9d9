//! Reading the Redis result backend (reference §5): the JSON a worker stores under
//! `celery-task-meta-<task_id>` and publishes, identical, on the channel of that name.
//!
//! A missing key means PENDING, an unknown id, or an expired result (default TTL one day);
//! this module only sees values that exist. Without `task_track_started` the first value
//! written is the final one; a SUCCESS is never overwritten by the worker.

use super::{json_kind, preview, WireError};
use serde_json::{json, Map, Value};

/// Prefix of result keys and of the channels results are published on.
pub const RESULT_KEY_PREFIX: &str = "celery-task-meta-";

/// The Redis key holding the result of `task_id`, which is also the pub/sub channel the
/// worker publishes it on: `celery-task-meta-<task_id>`.
pub fn result_key(task_id: &str) -> String {
    format!("{RESULT_KEY_PREFIX}{task_id}")
}

/// The task id a result channel (or key) is named after, as seen by
/// `PSUBSCRIBE celery-task-meta-*`; `None` for other names.
pub fn task_id_from_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(RESULT_KEY_PREFIX).filter(|id| !id.is_empty())
}

/// One stored result value.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// The task this result belongs to (`task_id`).
    pub task_id: String,
    /// The state reached and what it carries.
    pub state: TaskState,
    /// When the state was reached (ISO-8601 UTC); `None` for STARTED and RETRY.
    pub date_done: Option<String>,
    /// The task that sent this one (chains, retries), when set.
    pub parent_id: Option<String>,
}

/// The state a task reached, from the result's `status`, with its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// `SUCCESS`: the task's return value. Final.
    Success(serde_json::Value),
    /// `FAILURE`: the task raised, or was killed (time limit, lost worker), or its name is
    /// not registered. Final.
    Failure(TaskError),
    /// `RETRY`: the task asked to be retried; another state will follow. Not final.
    Retry(TaskError),
    /// `REVOKED`: revoked, terminated or expired before running. Final.
    Revoked(TaskError),
    /// `STARTED` (only with `task_track_started`): a pool process runs it. Not final.
    Started {
        /// Pool process id, when given.
        pid: Option<u64>,
        /// Worker node name, when given.
        hostname: Option<String>,
    },
    /// Any other status (a custom state from `update_state`, say). Not final.
    Other {
        /// The status as written.
        status: String,
        /// The `result` field as written.
        result: serde_json::Value,
    },
}

/// An exception as the result backend stores it (FAILURE, RETRY and REVOKED results).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    /// Exception class name, e.g. `ValueError`, `TimeLimitExceeded`, `TaskRevokedError`.
    pub exc_type: String,
    /// The exception's args, e.g. `["something broke"]`, `[2]`, `["expired"]`, `[]`.
    pub exc_message: serde_json::Value,
    /// Module of the exception class, e.g. `builtins`, `billiard.exceptions`.
    pub exc_module: Option<String>,
    /// Python traceback text; `None` for time limits, lost workers, revokes, unknown tasks.
    pub traceback: Option<String>,
}

impl TaskError {
    /// The error as shadowdiff's fixtures store a side's `error`:
    /// `{"exc_type": .., "exc_message": .., "exc_module": ..}` (module null when unknown).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "exc_type": self.exc_type,
            "exc_message": self.exc_message,
            "exc_module": self.exc_module,
        })
    }
}

impl TaskState {
    /// The status string Celery uses for this state (`SUCCESS`, `FAILURE`, ...).
    pub fn status(&self) -> &str {
        match self {
            TaskState::Success(_) => "SUCCESS",
            TaskState::Failure(_) => "FAILURE",
            TaskState::Retry(_) => "RETRY",
            TaskState::Revoked(_) => "REVOKED",
            TaskState::Started { .. } => "STARTED",
            TaskState::Other { status, .. } => status,
        }
    }

    /// `true` for SUCCESS, FAILURE and REVOKED (Celery's `READY_STATES`): no other state
    /// will be written for this task.
    pub fn is_final(&self) -> bool {
        matches!(self, TaskState::Success(_) | TaskState::Failure(_) | TaskState::Revoked(_))
    }

    /// The exception of a FAILURE, RETRY or REVOKED state.
    pub fn error(&self) -> Option<&TaskError> {
        match self {
            TaskState::Failure(e) | TaskState::Retry(e) | TaskState::Revoked(e) => Some(e),
            _ => None,
        }
    }
}

/// Parses a result value as read from `celery-task-meta-<id>` or received on its channel.
///
/// Requires a JSON object with a string `status` and `task_id`; for FAILURE, RETRY and
/// REVOKED, a `result` object with a string `exc_type`. Fields Celery adds with
/// `result_extended` (`name`, `args`, `worker`, ...) are ignored.
pub fn parse_result(bytes: &[u8]) -> Result<TaskResult, WireError> {
    let bad = |problem: String| WireError::BadResult { problem, preview: preview(bytes) };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|source| WireError::ResultNotJson { source, preview: preview(bytes) })?;
    let Value::Object(mut meta) = value else {
        return Err(bad(format!("is {}, not an object", json_kind(&value))));
    };
    let status = take_str(&mut meta, "status").map_err(&bad)?;
    let task_id = take_str(&mut meta, "task_id").map_err(&bad)?;
    let result = meta.remove("result").unwrap_or(Value::Null);
    let traceback = optional_str(&mut meta, "traceback");

    let state = match status.as_str() {
        "SUCCESS" => TaskState::Success(result),
        "FAILURE" | "RETRY" | "REVOKED" => {
            let error = task_error(result, traceback).map_err(|why| bad(format!("with status {status} {why}")))?;
            match status.as_str() {
                "FAILURE" => TaskState::Failure(error),
                "RETRY" => TaskState::Retry(error),
                _ => TaskState::Revoked(error),
            }
        }
        "STARTED" => TaskState::Started {
            pid: result.get("pid").and_then(Value::as_u64),
            hostname: result.get("hostname").and_then(Value::as_str).map(str::to_owned),
        },
        _ => TaskState::Other { status, result },
    };
    Ok(TaskResult {
        task_id,
        state,
        date_done: optional_str(&mut meta, "date_done"),
        parent_id: optional_str(&mut meta, "parent_id"),
    })
}

fn task_error(result: Value, traceback: Option<String>) -> Result<TaskError, String> {
    let Value::Object(mut exc) = result else {
        return Err(format!("has a `result` that is {}, not an exception object", json_kind(&result)));
    };
    Ok(TaskError {
        exc_type: take_str(&mut exc, "exc_type").map_err(|why| format!("has a `result` that {why}"))?,
        exc_message: exc.remove("exc_message").unwrap_or(Value::Null),
        exc_module: optional_str(&mut exc, "exc_module"),
        traceback,
    })
}

/// A required string member, moved out of the map.
fn take_str(map: &mut Map<String, Value>, key: &str) -> Result<String, String> {
    match map.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("has a `{key}` that is {}, not a string", json_kind(&other))),
        None => Err(format!("has no `{key}`")),
    }
}

/// An optional string member; any other type counts as absent.
fn optional_str(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
