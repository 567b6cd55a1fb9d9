//! The HTTP shadow: a copy of `api-service` (configured to use Celery) that receives the
//! same submission; its outcome is polled or read from its response like the legacy one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{ms_between, Job, ShadowRun};
use crate::config::live::{OutcomeMode, OutcomeRule};
use crate::fixture::Side;
use crate::live::http_client::HttpClient;
use crate::live::outcome::{self, Polled};

/// Longest error body kept in a recorded side.
const ERROR_BODY_BYTES: usize = 512;

/// A second HTTP upstream.
pub struct HttpShadow {
    submitted: AtomicU64,
    client: HttpClient,
    base: String,
    timeout: Duration,
    rule: OutcomeRule,
}

impl HttpShadow {
    /// A shadow at `base` (e.g. `http://127.0.0.1:8001`).
    pub fn new(client: HttpClient, base: String, timeout: Duration, rule: OutcomeRule) -> HttpShadow {
        HttpShadow { submitted: AtomicU64::new(0), client, base, timeout, rule }
    }

    /// Submissions it accepted (any HTTP answer).
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Submits the job and waits for its final outcome.
    pub async fn run(&self, job: &Job) -> ShadowRun {
        let submitted_at = Instant::now();
        let url = format!("{}{}", self.base, job.path);
        let (status, body) = match self.client.post_json(&url, job.body.clone(), self.timeout).await {
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
