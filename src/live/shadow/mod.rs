//! The shadow system: where a mirrored evaluation goes and how its final outcome comes back.
//!
//! Two kinds share one interface, so that sampling, bounding, correlation, deadlines,
//! comparison, report and recording are built once: a second HTTP upstream ([`http`]), or
//! Celery tasks written straight into Redis ([`celery`]). [`twice`] makes the second run
//! of the evaluations run twice to learn noise.

pub mod celery;
pub mod http;
pub mod twice;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::{HeaderMap, Method};
use serde_json::Value;

use crate::fixture::json::{Doc, Kind};
use crate::fixture::Side;
use crate::live::mirror::budget::Reservation;
use crate::live::outcome::ResponseOutcome;
use crate::live::state::NotMirrored;
use http::SubmitSlot;

/// One evaluation to mirror: the client's request as sent, and what was read from it.
///
/// Only the raw body is kept (it is what the HTTP shadow sends and the report shows);
/// the parsed document and the code are read from it again when needed, so a pending
/// evaluation holds its request once, not three times.
#[derive(Debug, Clone)]
pub struct Job {
    /// The evaluation id.
    pub eval_id: String,
    /// Its language.
    pub language: String,
    /// Tokens of the route's pointer to the code in the body.
    pub code_pointer: Vec<String>,
    /// The client's request method.
    pub method: Method,
    /// The request target (path and query) the client used.
    pub path: String,
    /// The client's request headers, hop-by-hop fields removed.
    pub headers: HeaderMap,
    /// The request body as the client sent it.
    pub body: Bytes,
    /// When the proxy received the client's request.
    pub received_at: Instant,
}

impl Job {
    /// The request body, parsed (`Null` if it is not JSON, which the mirror has ruled out).
    pub fn request(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The code to run, read from the body at the route's pointer.
    pub fn code(&self) -> Option<String> {
        // The mirror's own reader: it takes exactly what serde_json does, faster.
        let document = Doc::parse(&self.body).ok()?;
        match document.root().lookup(&self.code_pointer)?.kind() {
            Kind::String(text) => Some(text.to_owned()),
            Kind::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The bytes this job holds.
    pub fn held_bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
        let pointer: usize = self.code_pointer.iter().map(String::len).sum();
        (self.eval_id.len() + self.language.len() + pointer + self.path.len() + headers + self.body.len()) as u64
    }
}

/// What the shadow did with a job.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowRun {
    /// A side to judge, and how many retries the shadow reported on the way.
    Side {
        /// The shadow side.
        side: Side,
        /// Celery `RETRY` states seen.
        retries: u32,
    },
    /// A final outcome that came in the shadow's response, to be read when judged.
    Response(ResponseOutcome),
    /// The shadow could not take the job at all (its transport is down): not mirrored.
    Unavailable(String),
    /// The job went to the shadow (or would have) but cannot be compared, for this
    /// reason; the text says why, for the debug log.
    NotCompared(NotMirrored, String),
}

impl ShadowRun {
    /// A side with no retries.
    pub fn side(side: Side) -> ShadowRun {
        ShadowRun::Side { side, retries: 0 }
    }
}

/// The configured shadow.
// One per process, behind an `Arc`: the size of its larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Shadow {
    /// A second HTTP upstream.
    Http(http::HttpShadow),
    /// Celery over Redis.
    Celery(celery::CeleryShadow),
}

impl Shadow {
    /// Runs one job to its final shadow outcome (or error, or loss). What the shadow
    /// holds beyond the job (a Celery message) is added to `reservation`; `slot`, from
    /// [`Self::reserve`], is the job's place among the HTTP shadow's outstanding
    /// submissions (`None`: wait for a connection however long the queue).
    pub async fn run(&self, job: &Job, reservation: &Reservation, slot: Option<SubmitSlot>) -> ShadowRun {
        // Each kind's future is boxed: inline, every evaluation's future (and its second
        // run's) would be as large as the larger kind's, and the whole of it is copied when
        // the evaluation is spawned.
        match self {
            Shadow::Http(shadow) => Box::pin(shadow.run(job, slot)).await,
            Shadow::Celery(shadow) => Box::pin(shadow.run(job, reservation)).await,
        }
    }

    /// The shadow as another proxy thread uses it: an HTTP shadow with connections of that
    /// thread's own (under the same cap); the Celery shadow is shared as it is (its batcher
    /// already gathers every thread's submissions).
    pub fn sibling(self: &Arc<Self>) -> Arc<Shadow> {
        match self.as_ref() {
            Shadow::Http(shadow) => Arc::new(Shadow::Http(shadow.sibling())),
            Shadow::Celery(_) => Arc::clone(self),
        }
    }

    /// A place for one more submission (the HTTP shadow bounds those waiting for an
    /// answer; a Celery push never waits on the shadow), or why there is none.
    pub fn reserve(&self) -> Result<Option<SubmitSlot>, NotMirrored> {
        match self {
            Shadow::Http(shadow) => shadow.reserve().map(Some),
            Shadow::Celery(_) => Ok(None),
        }
    }

    /// Whether mirroring should pause now (the Celery queue too deep, Redis down).
    pub fn paused(&self) -> Option<NotMirrored> {
        match self {
            Shadow::Http(_) => None,
            Shadow::Celery(shadow) => shadow.paused(),
        }
    }

    /// Whether an HTTP shadow has stalled, so that any submission now is `shadow_busy`.
    pub fn stalled(&self) -> bool {
        match self {
            Shadow::Http(shadow) => shadow.stalled(),
            Shadow::Celery(_) => false,
        }
    }

    /// Submissions the shadow accepted.
    pub fn submitted(&self) -> u64 {
        match self {
            Shadow::Http(shadow) => shadow.submitted(),
            Shadow::Celery(shadow) => shadow.gauges.submitted.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Bytes Redis spends on Celery results left there (`delete_results = false`).
    pub fn retained_result_bytes(&self) -> Option<u64> {
        match self {
            Shadow::Http(_) => None,
            Shadow::Celery(shadow) => {
                Some(shadow.gauges.retained_result_bytes.load(std::sync::atomic::Ordering::Relaxed))
            }
        }
    }

    /// The Celery queue depth, for a Celery shadow.
    pub fn queue_depth(&self) -> Option<u64> {
        match self {
            Shadow::Http(_) => None,
            Shadow::Celery(shadow) => Some(shadow.gauges.queue_depth.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }
}

/// Milliseconds between two instants.
pub fn ms_between(start: Instant, end: Instant) -> f64 {
    end.saturating_duration_since(start).as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pointer: &[&str], body: &'static str) -> Job {
        Job {
            eval_id: "e-1".into(),
            language: "python".into(),
            code_pointer: pointer.iter().map(|token| (*token).to_owned()).collect(),
            method: Method::POST,
            path: "/evaluations".into(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            received_at: Instant::now(),
        }
    }

    /// The code as read from a `serde_json` document, which [`Job::code`] must agree with.
    fn code_from_value(job: &Job) -> Option<String> {
        let tokens: Vec<&str> = job.code_pointer.iter().map(String::as_str).collect();
        match crate::judge::pointer::lookup(&job.request(), &tokens)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    #[test]
    fn the_code_is_read_as_serde_json_reads_it() {
        let cases: [(&[&str], &str, Option<&str>); 9] = [
            (&["code"], r#"{"code": "print(1)\n\u00e9\ud83d\ude00\"q\""}"#, Some("print(1)\né😀\"q\"")),
            (&["code"], r#"{"code": 1e2}"#, Some("100.0")),
            (&["code"], r#"{"code": -7}"#, Some("-7")),
            (&["code"], r#"{"code": "first", "code": "last"}"#, Some("last")),
            (&["job", "1", "src"], r#"{"job": [{}, {"src": "x = 1"}]}"#, Some("x = 1")),
            (&["code"], r#"{"code": ["not", "text"]}"#, None),
            (&["code"], r#"{"other": "x"}"#, None),
            (&["code"], r#"{"code": "unterminated"#, None),
            (&["code"], "not json", None),
        ];
        for (pointer, body, want) in cases {
            let job = job(pointer, body);
            assert_eq!(job.code().as_deref(), want, "{body}");
            assert_eq!(job.code(), code_from_value(&job), "{body}");
        }
    }
}
