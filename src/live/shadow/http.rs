//! The HTTP shadow: a copy of `api-service` (configured to use Celery) that receives the
//! client's own request; its outcome is polled or read from its response like the legacy
//! one.
//!
//! The shadow gets what legacy got from the client: method, path and query, headers
//! (hop-by-hop fields removed, `Host` left to the shadow's own address) and the body byte
//! for byte, plus `X-Shadowdiff: shadow` so it can tell mirrored traffic apart. The config
//! can drop headers or replace them (a shadow-only `Authorization`, say).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use hyper::HeaderMap;
use serde_json::{json, Value};

use super::{ms_between, Job, ShadowRun};
use crate::config::live::{OutcomeMode, OutcomeRule, ShadowHeaders};
use crate::fixture::Side;
use crate::live::http_client::HttpClient;
use crate::live::outcome::{self, Polled, ResponseOutcome};

/// Longest error body kept in a recorded side.
const ERROR_BODY_BYTES: usize = 512;

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

/// A second HTTP upstream.
pub struct HttpShadow {
    submitted: AtomicU64,
    client: HttpClient,
    base: String,
    timeout: Duration,
    rule: OutcomeRule,
    headers: ShadowHeaders,
}

impl HttpShadow {
    /// A shadow at `base` (e.g. `http://127.0.0.1:8001`), reached through `client`
    /// (capped in connections: see [`HttpClient::with_max_connections`]).
    pub fn new(
        client: HttpClient,
        base: String,
        timeout: Duration,
        rule: OutcomeRule,
        headers: ShadowHeaders,
    ) -> HttpShadow {
        HttpShadow { submitted: AtomicU64::new(0), client, base, timeout, rule, headers }
    }

    /// Submissions it accepted (any HTTP answer).
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Submits the job and waits for its final outcome.
    pub async fn run(&self, job: &Job) -> ShadowRun {
        let submitted_at = Instant::now();
        let url = format!("{}{}", self.base, job.path);
        let headers = shadow_headers(&self.headers, &job.headers);
        let sent = self.client.request(job.method.clone(), &url, headers, job.body.clone(), self.timeout).await;
        let (status, body) = match sent {
            Ok(response) => response,
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
}
