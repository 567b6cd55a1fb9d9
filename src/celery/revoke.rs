//! Revoke broadcasts: the control message that makes every live worker discard (or, with
//! `terminate`, kill) a task (reference §6).
//!
//! Control commands are `PUBLISH`ed on `/<db>.celery.pidbox`, not queued: a revoke
//! published while no worker is subscribed is lost (the `PUBLISH` reply counts the
//! receivers), and a worker started later does not learn it. A task still waiting in its
//! list is better removed with `LREM <list_key> 1 <envelope>`.

use super::pyjson::{dumps, Py};
use super::WireError;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// What to revoke: the input of [`encode_revoke`].
#[derive(Debug, Clone, PartialEq)]
pub struct RevokeRequest {
    /// Ids of the tasks to revoke; at least one.
    pub task_ids: Vec<String>,
    /// Also kill the pool process running the task, with `signal`.
    pub terminate: bool,
    /// Signal name sent when terminating, `SIGTERM` by default.
    pub signal: String,
    /// Redis database number of the broker; it is part of the channel name.
    pub db: u32,
    /// Lamport clock value (`headers.clock`); informational for a producer.
    pub clock: u64,
    /// Unix time (seconds) after which workers ignore the command; `None` = never.
    pub expires_at: Option<f64>,
    /// Delivery tag; a fresh UUID4 when `None`.
    pub delivery_tag: Option<String>,
}

impl RevokeRequest {
    /// Revoke `task_ids` on broker database `db`, without terminating, never expiring.
    pub fn new(task_ids: Vec<String>, terminate: bool, db: u32) -> Self {
        RevokeRequest {
            task_ids,
            terminate,
            signal: String::from("SIGTERM"),
            db,
            clock: 0,
            expires_at: None,
            delivery_tag: None,
        }
    }
}

/// A revoke ready to be sent: `PUBLISH <channel> <envelope>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRevoke {
    /// The pub/sub channel, e.g. `/0.celery.pidbox`.
    pub channel: String,
    /// The envelope JSON, in kombu's style.
    pub envelope: String,
}

/// The broadcast channel of Celery's control commands on broker database `db`.
pub fn pidbox_channel(db: u32) -> String {
    format!("/{db}.celery.pidbox")
}

/// Encodes a revoke broadcast as `app.control.revoke(ids, terminate=...)` does. A single
/// id is sent as a string, several as a list, as Celery does.
pub fn encode_revoke(req: &RevokeRequest) -> Result<EncodedRevoke, WireError> {
    let invalid = |field, reason: &str| WireError::InvalidSpec { field, reason: reason.to_owned() };
    if req.task_ids.is_empty() {
        return Err(invalid("task_ids", "is empty"));
    }
    if req.task_ids.iter().any(String::is_empty) {
        return Err(invalid("task_ids", "contains an empty id"));
    }
    if req.signal.is_empty() {
        return Err(invalid("signal", "is empty"));
    }
    let expires = match req.expires_at {
        None => Py::Int(0),
        Some(t) if t.is_finite() && t > 0.0 => Py::Float(t),
        Some(_) => return Err(invalid("expires_at", "must be a positive finite unix time")),
    };
    let delivery_tag = req.delivery_tag.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    let task_id = match req.task_ids.as_slice() {
        [one] => Py::Str(one),
        many => Py::List(many.iter().map(|id| Py::Str(id)).collect()),
    };
    let body = Py::Object(vec![
        ("method", Py::Str("revoke")),
        (
            "arguments",
            Py::Object(vec![
                ("task_id", task_id),
                ("terminate", Py::Bool(req.terminate)),
                ("signal", Py::Str(&req.signal)),
            ]),
        ),
        ("destination", Py::Null),
        ("pattern", Py::Null),
        ("matcher", Py::Null),
    ]);
    let body = BASE64.encode(dumps(&body));
    let envelope = dumps(&Py::Object(vec![
        ("body", Py::Str(&body)),
        ("content-encoding", Py::Str("utf-8")),
        ("content-type", Py::Str("application/json")),
        ("headers", Py::Object(vec![("clock", Py::Int(req.clock)), ("expires", expires)])),
        (
            "properties",
            Py::Object(vec![
                ("delivery_mode", Py::Int(2)),
                (
                    "delivery_info",
                    Py::Object(vec![("exchange", Py::Str("celery.pidbox")), ("routing_key", Py::Str(""))]),
                ),
                ("priority", Py::Int(0)),
                ("body_encoding", Py::Str("base64")),
                ("delivery_tag", Py::Str(&delivery_tag)),
            ]),
        ),
    ]));
    Ok(EncodedRevoke { channel: pidbox_channel(req.db), envelope })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::celery::samples;
    use serde_json::{json, Value};

    fn decoded_body(envelope: &str) -> Value {
        let env: Value = serde_json::from_str(envelope).expect("envelope is JSON");
        let body = env["body"].as_str().expect("body is a string");
        let bytes = BASE64.decode(body).expect("body is base64");
        serde_json::from_slice(&bytes).expect("body is JSON")
    }

    /// A request with the clock, expiry, id and tag of a captured revoke.
    fn like_sample(name: &str, terminate: bool) -> RevokeRequest {
        let env: Value = serde_json::from_str(&samples::read(name)).expect("JSON");
        let body = decoded_body(&samples::read(name));
        RevokeRequest {
            clock: env["headers"]["clock"].as_u64().expect("clock"),
            expires_at: env["headers"]["expires"].as_f64(),
            delivery_tag: env["properties"]["delivery_tag"].as_str().map(str::to_owned),
            ..RevokeRequest::new(vec![body["arguments"]["task_id"].as_str().expect("id").to_owned()], terminate, 0)
        }
    }

    #[test]
    fn reproduces_captured_revokes_byte_for_byte() {
        for (name, terminate) in [("control-revoke.json", false), ("control-revoke-terminate.json", true)] {
            let out = encode_revoke(&like_sample(name, terminate)).expect("encodes");
            assert_eq!(out.envelope, samples::line(name), "{name}");
            let pretty: Value =
                serde_json::from_str(&samples::read(&name.replace(".json", ".pretty.json"))).expect("JSON");
            assert_eq!(out.channel, pretty["_redis_publish_channel"], "{name}");
            assert_eq!(decoded_body(&out.envelope), pretty["_body_decoded"], "{name}");
        }
    }

    #[test]
    fn body_has_the_captured_structure() {
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let out = encode_revoke(&RevokeRequest::new(ids, true, 3)).expect("encodes");
        assert_eq!(out.channel, "/3.celery.pidbox");
        assert_eq!(
            decoded_body(&out.envelope),
            json!({
                "method": "revoke",
                "arguments": {"task_id": ["a", "b"], "terminate": true, "signal": "SIGTERM"},
                "destination": null, "pattern": null, "matcher": null,
            })
        );
        let env: Value = serde_json::from_str(&out.envelope).expect("JSON");
        assert_eq!(env["headers"], json!({"clock": 0, "expires": 0}));
        assert_eq!(env["content-type"], "application/json");
        assert_eq!(env["properties"]["delivery_info"], json!({"exchange": "celery.pidbox", "routing_key": ""}));
        assert!(uuid::Uuid::parse_str(env["properties"]["delivery_tag"].as_str().expect("tag")).is_ok());
    }

    #[test]
    fn bad_requests_are_refused() {
        let cases = [
            RevokeRequest::new(vec![], false, 0),
            RevokeRequest::new(vec![String::new()], false, 0),
            RevokeRequest { signal: String::new(), ..RevokeRequest::new(vec!["a".into()], true, 0) },
            RevokeRequest { expires_at: Some(f64::NAN), ..RevokeRequest::new(vec!["a".into()], false, 0) },
        ];
        for req in cases {
            assert!(matches!(encode_revoke(&req), Err(WireError::InvalidSpec { .. })), "{req:?} accepted");
        }
    }
}
