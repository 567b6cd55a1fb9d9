//! The last check before a task envelope goes into a Celery queue.
//!
//! A Celery 5.7 worker handles malformed messages badly (reference §0, §3, §8): some
//! shapes make the worker process exit and the message is put back, so every worker that
//! takes it exits too; a missing `headers.id` wedges the worker on that message forever;
//! a missing `properties`, `delivery_tag` or `delivery_info` key loses the message
//! silently; a bad body, date or content type drops it. [`validate_envelope`] refuses all
//! of these, naming the field.

use super::isotime::check_iso8601;
use super::{json_kind, preview, WireError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Checks that `bytes` is a task envelope a Celery 5.7 worker runs (or, for an unknown
/// task name, refuses cleanly with a `NotRegistered` result) rather than one that crashes
/// it, wedges it, or loses the message.
///
/// Required: a JSON object; `content-type` = `application/json`; `headers` with string
/// `task` and `id`; `properties` with a string `delivery_tag` and a `delivery_info`
/// holding `exchange` and `routing_key`; a `body` that decodes (base64 when
/// `properties.body_encoding` is `base64`, else as JSON text) to
/// `[list, object, object|null]`. When present: `headers.retries` an integer,
/// `headers.eta`/`headers.expires` null or ISO-8601, `headers.timelimit` null or
/// `[number|null, number|null]`, `properties.priority` an integer in 0..=9,
/// `content-encoding` utf-8.
///
/// This is for task messages only; a control (revoke) broadcast has another shape.
pub fn validate_envelope(bytes: &[u8]) -> Result<(), WireError> {
    if fast::accepts(bytes) {
        return Ok(());
    }
    validate_document(bytes)
}

/// The full validator: the envelope read as a document, each rule checked in turn, the
/// first fault named. [`fast`] decides the common case without building the document.
fn validate_document(bytes: &[u8]) -> Result<(), WireError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|source| WireError::EnvelopeNotJson { source, preview: preview(bytes) })?;
    let env = value.as_object().ok_or(WireError::EnvelopeNotObject { found: json_kind(&value) })?;

    match required_str(env, "content-type", "content-type")? {
        "application/json" => {}
        other => {
            return Err(WireError::BadValue {
                field: "content-type",
                reason: format!("must be application/json (the only one workers accept), is {other:?}"),
            })
        }
    }
    if let Some(encoding) = optional_str(env, "content-encoding", "content-encoding")? {
        if !matches!(encoding.to_ascii_lowercase().as_str(), "utf-8" | "utf8") {
            return Err(WireError::BadValue {
                field: "content-encoding",
                reason: format!("must be utf-8, is {encoding:?}"),
            });
        }
    }

    let headers = required_object(env, "headers", "headers")?;
    non_empty(required_str(headers, "task", "headers.task")?, "headers.task")?;
    non_empty(required_str(headers, "id", "headers.id")?, "headers.id")?;
    if let Some(retries) = headers.get("retries") {
        if !(retries.is_i64() || retries.is_u64()) {
            return Err(wrong_type("headers.retries", "an integer", retries));
        }
    }
    for (key, field) in [("eta", "headers.eta"), ("expires", "headers.expires")] {
        if let Some(when) = optional_str(headers, key, field)? {
            // `maybe_iso8601` treats an empty string as absent.
            if !when.is_empty() {
                check_iso8601(when).map_err(|why| WireError::BadValue { field, reason: format!("{why}: {when:?}") })?;
            }
        }
    }
    check_timelimit(headers.get("timelimit"))?;

    let properties = required_object(env, "properties", "properties")?;
    non_empty(required_str(properties, "delivery_tag", "properties.delivery_tag")?, "properties.delivery_tag")?;
    let info = required_object(properties, "delivery_info", "properties.delivery_info")?;
    required_str(info, "exchange", "properties.delivery_info.exchange")?;
    required_str(info, "routing_key", "properties.delivery_info.routing_key")?;
    if let Some(priority) = properties.get("priority") {
        match priority.as_i64() {
            Some(0..=9) => {}
            Some(n) => {
                return Err(WireError::BadValue {
                    field: "properties.priority",
                    reason: format!("is {n}, outside 0..=9"),
                })
            }
            None => return Err(wrong_type("properties.priority", "an integer in 0..=9", priority)),
        }
    }
    let base64 = match optional_str(properties, "body_encoding", "properties.body_encoding")? {
        None => false,
        Some("base64") => true,
        Some(other) => {
            return Err(WireError::BadValue {
                field: "properties.body_encoding",
                reason: format!("must be base64 or absent, is {other:?}"),
            })
        }
    };

    let body = required_str(env, "body", "body")?;
    check_body(body, base64)
}

/// The body must unpack as `args, kwargs, embed = body` with usable parts.
fn check_body(body: &str, base64: bool) -> Result<(), WireError> {
    let bad = |reason: String| WireError::BadBody { reason };
    let decoded;
    let text: &[u8] = if base64 {
        decoded = BASE64.decode(body).map_err(|e| bad(format!("is not valid base64 ({e})")))?;
        &decoded
    } else {
        body.as_bytes()
    };
    let value: Value =
        serde_json::from_slice(text).map_err(|e| bad(format!("does not decode to JSON ({e}): {}", preview(text))))?;
    let parts = value.as_array().ok_or_else(|| {
        bad(format!("must decode to a 3-element list [args, kwargs, embed], decodes to {}", json_kind(&value)))
    })?;
    let [args, kwargs, embed] = parts.as_slice() else {
        return Err(bad(format!(
            "must decode to a 3-element list [args, kwargs, embed], has {} elements",
            parts.len()
        )));
    };
    if !args.is_array() {
        return Err(bad(format!("args (element 0) must be a list, is {}", json_kind(args))));
    }
    if !kwargs.is_object() {
        return Err(bad(format!("kwargs (element 1) must be an object, is {}", json_kind(kwargs))));
    }
    if !(embed.is_object() || embed.is_null()) {
        return Err(bad(format!("embed (element 2) must be an object or null, is {}", json_kind(embed))));
    }
    Ok(())
}

fn check_timelimit(limit: Option<&Value>) -> Result<(), WireError> {
    const EXPECTED: &str = "null or a [hard, soft] list of numbers or nulls";
    match limit {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) if items.len() == 2 && items.iter().all(|v| v.is_null() || v.is_number()) => Ok(()),
        Some(other) => Err(wrong_type("headers.timelimit", EXPECTED, other)),
    }
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value) -> WireError {
    WireError::WrongType { field, expected, found: json_kind(found) }
}

fn required<'a>(map: &'a Map<String, Value>, key: &str, field: &'static str) -> Result<&'a Value, WireError> {
    map.get(key).ok_or(WireError::MissingField { field })
}

fn required_str<'a>(map: &'a Map<String, Value>, key: &str, field: &'static str) -> Result<&'a str, WireError> {
    let value = required(map, key, field)?;
    value.as_str().ok_or_else(|| wrong_type(field, "a string", value))
}

fn required_object<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a Map<String, Value>, WireError> {
    let value = required(map, key, field)?;
    value.as_object().ok_or_else(|| wrong_type(field, "an object", value))
}

/// A string field that may be absent or null.
fn optional_str<'a>(map: &'a Map<String, Value>, key: &str, field: &'static str) -> Result<Option<&'a str>, WireError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(field, "a string or null", other)),
    }
}

fn non_empty(s: &str, field: &'static str) -> Result<(), WireError> {
    if s.is_empty() {
        return Err(WireError::BadValue { field, reason: "is empty".to_owned() });
    }
    Ok(())
}

mod fast;
#[cfg(test)]
mod tests;
