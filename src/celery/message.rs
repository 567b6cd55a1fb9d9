//! Encoding a task message: a [`TaskSpec`] becomes the envelope text Celery 5.7 would have
//! pushed for the same call, and the Redis list key it goes to.

use super::isotime::{check_iso8601, format_utc};
use super::pyjson::{dumps, Py};
use super::pyrepr::{args_repr, kwargs_repr};
use super::WireError;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;
use std::time::Duration;

/// What to run, where, and how: the input of [`encode_task`].
///
/// Build it with [`TaskSpec::new`] and set the public fields you need.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Registered task name (`headers.task`), e.g. `evaluate`.
    pub task: String,
    /// Queue name; the message goes to the list key [`PriorityLayout::key_for`] gives.
    pub queue: String,
    /// 0..=9; on Redis **lower runs first** (0 is the most urgent, the opposite of AMQP).
    pub priority: u8,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, written in this order (a JSON map would sort them, Python
    /// keeps insertion order). Names must be unique.
    pub kwargs: Vec<(String, Value)>,
    /// Do not run before this ISO-8601 time (`headers.eta`), e.g. from [`format_utc`].
    /// The message is still delivered at once and held by a worker until then.
    pub eta: Option<String>,
    /// Do not run after this time: the worker stores a REVOKED result instead.
    pub expires: Option<Expires>,
    /// Hard time limit (`timelimit[0]`): the pool process is killed after it.
    pub time_limit: Option<Duration>,
    /// Soft time limit (`timelimit[1]`): `SoftTimeLimitExceeded` is raised in the task.
    pub soft_time_limit: Option<Duration>,
    /// Producer node name (`headers.origin`), e.g. `shadowdiff1234@host`; informational.
    pub origin: String,
    /// Task id; a fresh UUID4 when `None`. It names the result key.
    pub task_id: Option<String>,
    /// Broker delivery tag; a fresh UUID4 when `None`. Must be unique per message.
    pub delivery_tag: Option<String>,
    /// `properties.reply_to`: used by the RPC result backend only, empty by default.
    pub reply_to: String,
    /// `true` makes the worker write no result at all.
    pub ignore_result: bool,
}

impl TaskSpec {
    /// A task with no arguments on `queue` at priority 0, ids generated, no limits.
    pub fn new(task: impl Into<String>, queue: impl Into<String>) -> Self {
        TaskSpec {
            task: task.into(),
            queue: queue.into(),
            priority: 0,
            args: Vec::new(),
            kwargs: Vec::new(),
            eta: None,
            expires: None,
            time_limit: None,
            soft_time_limit: None,
            origin: String::from("shadowdiff"),
            task_id: None,
            delivery_tag: None,
            reply_to: String::new(),
            ignore_result: false,
        }
    }
}

/// Expiry of a task message: `headers.expires` and `properties.expiration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expires {
    /// Absolute ISO-8601 time after which the worker revokes instead of running.
    pub at: String,
    /// The same deadline relative to publishing, in milliseconds, as kombu writes it
    /// in `properties.expiration` (the Redis transport ignores it).
    pub after_ms: u64,
}

impl Expires {
    /// Expiry `ttl` after `now` (a time since the Unix epoch), as Celery's `expires=ttl`.
    pub fn after(now: Duration, ttl: Duration) -> Self {
        Expires { at: format_utc(now + ttl), after_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) }
    }
}

/// How kombu's Redis transport spreads one queue over several lists by priority.
///
/// A priority is clamped to 0..=9 and rounded down to the nearest step; step 0 is the
/// bare queue name, any other step is `<queue><sep><step>`. Workers `BRPOP` the keys in
/// step order, so **lower numbers are served first**, FIFO within one key. Producers and
/// workers must agree on the steps and separator (kombu transport options
/// `priority_steps` and `sep`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityLayout {
    steps: Vec<u8>,
    sep: String,
}

impl Default for PriorityLayout {
    /// kombu's defaults: steps `[0, 3, 6, 9]`, separator `"\x06\x16"`.
    fn default() -> Self {
        PriorityLayout { steps: vec![0, 3, 6, 9], sep: String::from("\x06\x16") }
    }
}

impl PriorityLayout {
    /// A layout with custom steps (strictly increasing, starting at 0, at most 9).
    pub fn new(steps: Vec<u8>, sep: impl Into<String>) -> Result<Self, WireError> {
        let bad = |reason: &str| WireError::InvalidPriorityLayout { reason: format!("{reason} (steps {steps:?})") };
        if steps.first() != Some(&0) {
            return Err(bad("steps must start at 0"));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("steps must be strictly increasing"));
        }
        if steps.iter().any(|s| *s > 9) {
            return Err(bad("steps must be at most 9"));
        }
        Ok(PriorityLayout { steps, sep: sep.into() })
    }

    /// The steps, lowest (served first) first.
    pub fn steps(&self) -> &[u8] {
        &self.steps
    }

    /// The separator between queue name and step.
    pub fn sep(&self) -> &str {
        &self.sep
    }

    /// The list key a message of `priority` on `queue` is pushed to:
    /// with the default layout `celery` for 0..=2, `celery\x06\x163` for 3..=5, and so on.
    pub fn key_for(&self, queue: &str, priority: u8) -> String {
        let priority = priority.min(9);
        let step = self.steps.iter().copied().take_while(|s| *s <= priority).last().unwrap_or(0);
        if step == 0 {
            queue.to_owned()
        } else {
            format!("{queue}{}{step}", self.sep)
        }
    }

    /// Every list key of `queue`, in the order a worker polls them (e.g. to sum `LLEN`s).
    pub fn keys(&self, queue: &str) -> Vec<String> {
        self.steps.iter().map(|s| self.key_for(queue, *s)).collect()
    }
}

/// A task message ready to be pushed: `LPUSH <list_key> <envelope>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTask {
    /// The task id (`headers.id`); the result appears under `celery-task-meta-<task_id>`.
    pub task_id: String,
    /// The delivery tag (`properties.delivery_tag`), the message's key in `unacked`.
    pub delivery_tag: String,
    /// The Redis list to push to.
    pub list_key: String,
    /// The envelope JSON (ASCII only), byte for byte what kombu would push. Keep it to
    /// `LREM` the message while it is still queued.
    pub envelope: String,
}

/// Encodes a task as Celery 5.7's `apply_async` does: full header set, base64 body
/// `[args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`,
/// all in kombu's JSON style. The spec is checked first so that the result always passes
/// [`validate_envelope`](super::validate_envelope).
pub fn encode_task(spec: &TaskSpec, layout: &PriorityLayout) -> Result<EncodedTask, WireError> {
    check_spec(spec)?;
    let task_id = spec.task_id.clone().unwrap_or_else(new_id);
    let delivery_tag = spec.delivery_tag.clone().unwrap_or_else(new_id);

    let kwargs = Py::Object(spec.kwargs.iter().map(|(k, v)| (k.as_str(), Py::Json(v))).collect());
    let body = Py::List(vec![
        Py::List(spec.args.iter().map(Py::Json).collect()),
        kwargs,
        Py::Object(vec![("callbacks", Py::Null), ("errbacks", Py::Null), ("chain", Py::Null), ("chord", Py::Null)]),
    ]);
    let body = BASE64.encode(dumps(&body));
    let argsrepr = args_repr(&spec.args);
    let kwargsrepr = kwargs_repr(&spec.kwargs);

    let headers = Py::Object(vec![
        ("lang", Py::Str("py")),
        ("task", Py::Str(&spec.task)),
        ("id", Py::Str(&task_id)),
        ("shadow", Py::Null),
        ("eta", Py::opt_str(spec.eta.as_deref())),
        ("expires", Py::opt_str(spec.expires.as_ref().map(|e| e.at.as_str()))),
        ("group", Py::Null),
        ("group_index", Py::Null),
        ("retries", Py::Int(0)),
        ("timelimit", Py::List(vec![seconds(spec.time_limit), seconds(spec.soft_time_limit)])),
        ("root_id", Py::Str(&task_id)),
        ("parent_id", Py::Null),
        ("argsrepr", Py::Str(&argsrepr)),
        ("kwargsrepr", Py::Str(&kwargsrepr)),
        ("origin", Py::Str(&spec.origin)),
        ("ignore_result", Py::Bool(spec.ignore_result)),
        ("replaced_task_nesting", Py::Int(0)),
        ("stamped_headers", Py::Null),
        ("stamps", Py::Object(Vec::new())),
    ]);

    let expiration = spec.expires.as_ref().map(|e| e.after_ms.to_string());
    let mut properties = vec![
        ("correlation_id", Py::Str(&task_id)),
        ("reply_to", Py::Str(&spec.reply_to)),
        ("delivery_mode", Py::Int(2)),
    ];
    if let Some(ms) = &expiration {
        properties.push(("expiration", Py::Str(ms)));
    }
    properties.extend([
        ("delivery_info", Py::Object(vec![("exchange", Py::Str("")), ("routing_key", Py::Str(&spec.queue))])),
        ("priority", Py::Int(u64::from(spec.priority))),
        ("body_encoding", Py::Str("base64")),
        ("delivery_tag", Py::Str(&delivery_tag)),
    ]);

    let envelope = dumps(&Py::Object(vec![
        ("body", Py::Str(&body)),
        ("content-encoding", Py::Str("utf-8")),
        ("content-type", Py::Str("application/json")),
        ("headers", headers),
        ("properties", Py::Object(properties)),
    ]));
    Ok(EncodedTask { list_key: layout.key_for(&spec.queue, spec.priority), task_id, delivery_tag, envelope })
}

/// Refuses a spec that would make a message the worker drops or cannot route.
fn check_spec(spec: &TaskSpec) -> Result<(), WireError> {
    let invalid = |field, reason: String| Err(WireError::InvalidSpec { field, reason });
    if spec.task.is_empty() {
        return invalid("task", "is empty".into());
    }
    if spec.queue.is_empty() {
        return invalid("queue", "is empty".into());
    }
    if spec.priority > 9 {
        return invalid("priority", format!("is {}, outside 0..=9", spec.priority));
    }
    for (field, id) in [("task_id", &spec.task_id), ("delivery_tag", &spec.delivery_tag)] {
        if id.as_deref() == Some("") {
            return invalid(field, "is empty".into());
        }
    }
    for (i, (name, _)) in spec.kwargs.iter().enumerate() {
        if spec.kwargs[..i].iter().any(|(other, _)| other == name) {
            return invalid("kwargs", format!("names `{name}` twice"));
        }
    }
    let values = spec.args.iter().enumerate().map(|(i, v)| ("args", format!("[{i}]"), v));
    for (field, at, value) in values.chain(spec.kwargs.iter().map(|(k, v)| ("kwargs", format!(".{k}"), v))) {
        if let Some(path) = kombu_marker(value, at) {
            return invalid(
                field,
                format!(
                    "holds an object of exactly `__type__` and `__value__` at {path}: kombu's JSON decoder \
                     turns it into a Python object or refuses the message, which the worker then drops"
                ),
            );
        }
    }
    if let Some(eta) = &spec.eta {
        if let Err(why) = check_iso8601(eta) {
            return invalid("eta", format!("{why}: {eta:?}"));
        }
    }
    if let Some(expires) = &spec.expires {
        if let Err(why) = check_iso8601(&expires.at) {
            return invalid("expires", format!("{why}: {:?}", expires.at));
        }
    }
    Ok(())
}

/// Where in `value` (reached at `path`) an object kombu would decode as a typed value is:
/// one with exactly the keys `__type__` and `__value__` (`kombu.utils.json.object_hook`).
fn kombu_marker(value: &Value, path: String) -> Option<String> {
    match value {
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| kombu_marker(v, format!("{path}[{i}]"))),
        Value::Object(map) if map.len() == 2 && map.contains_key("__type__") && map.contains_key("__value__") => {
            Some(path)
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| kombu_marker(v, format!("{path}.{k}"))),
        _ => None,
    }
}

/// A time limit as Python would have it: whole seconds as an int, else a float.
fn seconds(limit: Option<Duration>) -> Py<'static> {
    match limit {
        None => Py::Null,
        Some(d) if d.subsec_nanos() == 0 => Py::Int(d.as_secs()),
        Some(d) => Py::Float(d.as_secs_f64()),
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests;
