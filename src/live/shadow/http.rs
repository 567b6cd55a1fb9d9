//! The HTTP shadow: a copy of `api-service` (configured to use Celery) that receives the
//! client's own request; its outcome is polled or read from its response like the legacy
//! one.
//!
//! The shadow gets what legacy got from the client: method, path and query, headers
//! (hop-by-hop fields removed, `Host` left to the shadow's own address) and the body byte
//! for byte, plus `X-Shadowdiff: shadow` so it can tell mirrored traffic apart. The config
//! can drop headers or replace them (a shadow-only `Authorization`, say).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use hyper::HeaderMap;
use serde_json::{json, Value};

use super::{ms_between, Job, ShadowRun};
use crate::config::live::{OutcomeMode, OutcomeRule, ShadowHeaders};
use crate::fixture::Side;
use crate::live::http1;
use crate::live::http_client::{HttpClient, Upstream};
use crate::live::outcome::{self, Polled, ResponseOutcome};
use crate::live::state::NotMirrored;

/// Longest error body kept in a recorded side.
const ERROR_BODY_BYTES: usize = 512;

/// How long a shadow with every connection busy, and as many submissions again waiting,
/// may answer nothing before further submissions are refused (`shadow_busy`). A shadow
/// that answers at all answers hundreds of times in this while under such a load.
pub const SILENCE: Duration = Duration::from_millis(100);

/// The marker header on every request to the shadow.
pub const MARKER: HeaderName = HeaderName::from_static("x-shadowdiff");

/// The headers to send to the shadow for a client request that carried `client`.
pub fn shadow_headers(rules: &ShadowHeaders, client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    // The shadow has its own address, and hyper frames the body it sends.
    headers.remove(HOST);
    headers.remove(CONTENT_LENGTH);
    for name in &rules.drop {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(MARKER, HeaderValue::from_static("shadow"));
    headers
}

/// [`shadow_headers`]'s rules as fields left out (`None`) or written instead of the
/// client's: `Host` (the shadow's own is sent) and `Content-Length` (the body is framed
/// anew) out, the config's drops out and sets in, then the marker.
fn replacements(rules: &ShadowHeaders) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let mut replace: Vec<(HeaderName, Option<HeaderValue>)> = vec![(HOST, None), (CONTENT_LENGTH, None)];
    replace.extend(rules.drop.iter().map(|name| (name.clone(), None)));
    let marker = (MARKER, HeaderValue::from_static("shadow"));
    for (name, value) in rules.set.iter().chain([&marker]) {
        // A later set of the same name wins, as `insert` does in `shadow_headers`.
        replace.retain(|(replaced, _)| replaced != name);
        replace.push((name.clone(), Some(value.clone())));
    }
    replace
}

/// A second HTTP upstream.
pub struct HttpShadow {
    submitted: Arc<AtomicU64>,
    /// Submissions sent or waiting for a connection, and not answered yet.
    submitting: Arc<AtomicUsize>,
    /// Past this many submissions outstanding (as many again as the shadow's connections),
    /// a shadow that has answered nothing for [`SILENCE`] gets no more.
    max_submitting: usize,
    /// When the shadow last answered a submission, in milliseconds since `epoch`.
    answered_ms: Arc<AtomicU64>,
    epoch: Instant,
    client: HttpClient,
    base: String,
    /// `base`'s connections, when `base` is a valid URL (else each request names the
    /// fault).
    upstream: Option<Upstream>,
    timeout: Duration,
    rule: OutcomeRule,
    headers: ShadowHeaders,
    /// What [`shadow_headers`] does to the client's headers, as fields to leave out or
    /// write instead: made once, so a submission's headers are written without a copy.
    replace: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl HttpShadow {
    /// A shadow at `base` (e.g. `http://127.0.0.1:8001`), reached through `client`
    /// (capped at `max_connections`: see [`HttpClient::with_max_connections`]).
    pub fn new(
        client: HttpClient,
        max_connections: usize,
        base: String,
        timeout: Duration,
        rule: OutcomeRule,
        headers: ShadowHeaders,
    ) -> HttpShadow {
        HttpShadow {
            submitted: Arc::new(AtomicU64::new(0)),
            submitting: Arc::new(AtomicUsize::new(0)),
            max_submitting: max_connections.max(1).saturating_mul(2),
            answered_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            upstream: client.upstream(&base),
            client,
            base,
            timeout,
            rule,
            replace: replacements(&headers),
            headers,
        }
    }

    /// The same shadow for another proxy thread: connections of its own (under the same
    /// cap), the counts and the stall watch shared.
    pub fn sibling(&self) -> HttpShadow {
        let client = self.client.sibling();
        HttpShadow {
            submitted: Arc::clone(&self.submitted),
            submitting: Arc::clone(&self.submitting),
            max_submitting: self.max_submitting,
            answered_ms: Arc::clone(&self.answered_ms),
            epoch: self.epoch,
            upstream: client.upstream(&self.base),
            client,
            base: self.base.clone(),
            timeout: self.timeout,
            rule: self.rule.clone(),
            headers: self.headers.clone(),
            replace: self.replace.clone(),
        }
    }

    /// A place for one more submission, or `ShadowBusy` when the shadow has stalled: every
    /// connection has a submission awaiting its answer, as many more wait for a connection,
    /// and nothing was answered for [`SILENCE`]. Queueing more would only hold them (and
    /// their bytes) until they time out, and blame the shadow for each. A shadow that is
    /// busy but answering keeps its queue, up to `shadow.max_in_flight`.
    pub fn reserve(&self) -> Result<SubmitSlot, NotMirrored> {
        let taken = self.submitting.fetch_add(1, Ordering::Relaxed);
        let slot = SubmitSlot(Arc::clone(&self.submitting));
        if taken >= self.max_submitting && self.silent_for() >= SILENCE {
            return Err(NotMirrored::ShadowBusy);
        }
        Ok(slot)
    }

    /// Submissions it accepted (any HTTP answer).
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Whether the shadow has stalled (see [`Self::reserve`]): a submission now would be
    /// refused.
    pub fn stalled(&self) -> bool {
        self.submitting.load(Ordering::Relaxed) >= self.max_submitting && self.silent_for() >= SILENCE
    }

    /// Time since the shadow last answered a submission (or since it was set up).
    fn silent_for(&self) -> Duration {
        let answered = Duration::from_millis(self.answered_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(answered)
    }

    /// Submits the job and waits for its final outcome. `slot` (from [`Self::reserve`]) is
    /// given back once the submission is answered; without one the submission waits for a
    /// connection however many others do (`drive`, which holds rather than drops).
    pub async fn run(&self, job: &Job, slot: Option<SubmitSlot>) -> ShadowRun {
        let submitted_at = Instant::now();
        let sent = match &self.upstream {
            Some(upstream) => {
                let target = upstream.target(&job.path);
                let request = http1::Request {
                    method: &job.method,
                    target: &target,
                    headers: &job.headers,
                    replace: &self.replace,
                    body: &job.body,
                };
                self.client.request_on(upstream, &request, self.timeout).await
            }
            None => {
                let url = format!("{}{}", self.base, job.path);
                let headers = shadow_headers(&self.headers, &job.headers);
                self.client.request(job.method.clone(), &url, headers, job.body.clone(), self.timeout).await
            }
        };
        drop(slot);
        let (status, body) = match sent {
            Ok(response) => {
                let now = self.epoch.elapsed().as_millis() as u64;
                // Written only when it moves: answers within the same millisecond, from any
                // proxy thread, leave the shared line alone.
                if self.answered_ms.load(Ordering::Relaxed) < now {
                    self.answered_ms.fetch_max(now, Ordering::Relaxed);
                }
                response
            }
            Err(e) => {
                return ShadowRun::side(Side::Error { submit_ms: None, error: json!({"shadowdiff": e.to_string()}) });
            }
        };
        let submit_ms = ms_between(submitted_at, Instant::now());
        self.submitted.fetch_add(1, Ordering::Relaxed);
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]).into_owned();
            return ShadowRun::side(Side::Error {
                submit_ms: Some(submit_ms),
                error: json!({"http_status": status.as_u16(), "body": text}),
            });
        }
        let deadline = submitted_at + self.rule.deadline;
        match self.rule.mode {
            // Unmapped, the document is the body as it came: read it when judged.
            OutcomeMode::Response if self.rule.fields.is_empty() => {
                ShadowRun::Response(ResponseOutcome { submit_ms, body, from: "shadow" })
            }
            OutcomeMode::Response => match serde_json::from_slice::<Value>(&body) {
                Ok(document) => ShadowRun::side(Side::Ok {
                    submit_ms,
                    outcome_ms: submit_ms,
                    outcome: outcome::map_fields(&self.rule, document),
                }),
                Err(e) => ShadowRun::side(Side::Error {
                    submit_ms: Some(submit_ms),
                    error: json!({"shadowdiff": format!("shadow response is not JSON: {e}")}),
                }),
            },
            OutcomeMode::Poll | OutcomeMode::Observe => {
                let url = outcome::result_url(&self.base, &self.rule, &job.eval_id);
                match outcome::poll(&self.client, &url, &self.rule, deadline).await {
                    Polled::Final(document, at) => ShadowRun::side(Side::Ok {
                        submit_ms,
                        outcome_ms: ms_between(submitted_at, at),
                        outcome: document,
                    }),
                    Polled::Lost(last_state) => ShadowRun::side(Side::Lost {
                        submit_ms: Some(submit_ms),
                        waited_ms: ms_between(submitted_at, Instant::now()),
                        last_state: Some(last_state),
                    }),
                }
            }
        }
    }
}

/// One submission's place among those the shadow may have outstanding; given back when
/// dropped.
#[derive(Debug)]
pub struct SubmitSlot(Arc<AtomicUsize>);

impl Drop for SubmitSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_headers_pass_except_dropped_and_replaced_ones_plus_the_marker() {
        let mut client = HeaderMap::new();
        client.insert("authorization", HeaderValue::from_static("Bearer client"));
        client.insert("x-tenant", HeaderValue::from_static("t-1"));
        client.insert("cookie", HeaderValue::from_static("a=1"));
        client.insert("host", HeaderValue::from_static("legacy.example"));
        client.insert("content-length", HeaderValue::from_static("12"));
        let rules = ShadowHeaders {
            drop: vec![HeaderName::from_static("cookie")],
            set: vec![(HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer shadow"))],
        };
        let sent = shadow_headers(&rules, &client);
        let mut pairs: Vec<(String, String)> =
            sent.iter().map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned())).collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("authorization".to_owned(), "Bearer shadow".to_owned()),
                ("x-shadowdiff".to_owned(), "shadow".to_owned()),
                ("x-tenant".to_owned(), "t-1".to_owned()),
            ]
        );
    }

    #[test]
    fn the_rules_become_the_fields_written_instead_of_the_clients() {
        let rules = ShadowHeaders {
            drop: vec![HeaderName::from_static("cookie")],
            set: vec![
                (HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer first")),
                (HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer shadow")),
            ],
        };
        let replacements = replacements(&rules);
        let replace: Vec<(String, Option<&str>)> = replacements
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_ref().map(|value| value.to_str().expect("ascii"))))
            .collect();
        assert_eq!(
            replace,
            [
                ("host".to_owned(), None),
                ("content-length".to_owned(), None),
                ("cookie".to_owned(), None),
                ("authorization".to_owned(), Some("Bearer shadow")),
                ("x-shadowdiff".to_owned(), Some("shadow")),
            ]
        );
    }

    #[test]
    fn a_silent_shadow_gets_no_more_than_twice_its_connections_in_submissions() {
        let shadow = HttpShadow::new(
            HttpClient::with_max_connections(2),
            2,
            "http://127.0.0.1:9".into(),
            Duration::from_secs(1),
            OutcomeRule {
                mode: OutcomeMode::Response,
                url_template: String::new(),
                interval: Duration::from_secs(1),
                deadline: Duration::from_secs(1),
                status: Vec::new(),
                terminal: Vec::new(),
                fields: Vec::new(),
            },
            ShadowHeaders::default(),
        );
        // Set up just now: six outstanding, none refused, as it has not been silent long.
        let mut slots: Vec<SubmitSlot> = (0..6).map(|_| shadow.reserve().expect("a place")).collect();
        std::thread::sleep(SILENCE);
        assert_eq!(shadow.reserve().map(|_| ()), Err(NotMirrored::ShadowBusy));
        assert_eq!(shadow.reserve().map(|_| ()), Err(NotMirrored::ShadowBusy), "a refusal takes no place");
        slots.truncate(3);
        let fourth = shadow.reserve().expect("three outstanding: room for a fourth");
        assert_eq!(shadow.reserve().map(|_| ()), Err(NotMirrored::ShadowBusy));
        // An answer just now: busy, not stalled.
        shadow.answered_ms.store(shadow.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let fifth = shadow.reserve().expect("answering: room");
        drop((fourth, fifth, slots));
    }
}
