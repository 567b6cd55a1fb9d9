//! The legacy queue's length, read from the legacy system itself.
//!
//! The migration dashboard compares `legacy_queue_length` with `celery_queue_length`. Only
//! the legacy system knows its queue, so shadowdiff asks it: every second it GETs
//! `[legacy] queue_length_url` and reads the number at `queue_length_pointer`. A failed or
//! unreadable answer leaves the gauge unknown (absent from `/metrics`) until the next good
//! one, and is logged once per change, not once per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::live::QueueLengthProbe;
use crate::judge::pointer;
use crate::live::http_client::HttpClient;

/// How often the length is read.
const EVERY: Duration = Duration::from_secs(1);

/// The last length read, if the last read succeeded.
#[derive(Debug, Default)]
pub struct QueueLength {
    length: AtomicU64,
    known: AtomicBool,
}

impl QueueLength {
    /// The length, when the last read gave one.
    pub fn get(&self) -> Option<u64> {
        self.known.load(Ordering::Acquire).then(|| self.length.load(Ordering::Relaxed))
    }

    fn set(&self, length: Option<u64>) {
        if let Some(length) = length {
            self.length.store(length, Ordering::Relaxed);
        }
        self.known.store(length.is_some(), Ordering::Release);
    }
}

/// Reads the length every second until `shutdown`.
pub async fn poll(client: HttpClient, probe: QueueLengthProbe, gauge: Arc<QueueLength>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_problem: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = match client.get(&probe.url, EVERY).await {
            Ok((status, body)) if status.is_success() => match serde_json::from_slice::<Value>(&body) {
                Ok(document) => length_at(&document, &probe.pointer),
                Err(e) => Err(format!("answer is not JSON: {e}")),
            },
            Ok((status, _)) => Err(format!("answered {status}")),
            Err(e) => Err(e.to_string()),
        };
        match read {
            Ok(length) => {
                if last_problem.take().is_some() {
                    tracing::info!(url = %probe.url, "legacy queue length readable again");
                }
                gauge.set(Some(length));
            }
            Err(problem) => {
                if last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(url = %probe.url, %problem, "cannot read the legacy queue length");
                }
                last_problem = Some(problem);
                gauge.set(None);
            }
        }
    }
}

/// The non-negative integer at `tokens`.
fn length_at(document: &Value, tokens: &[String]) -> Result<u64, String> {
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    match pointer::lookup(document, &tokens) {
        Some(value) => value.as_u64().ok_or_else(|| format!("/{} is {value}, not a count", tokens.join("/"))),
        None => Err(format!("no /{} in the answer", tokens.join("/"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_count_at_the_pointer() {
        let tokens = vec!["queue".to_string(), "length".to_string()];
        assert_eq!(length_at(&json!({"queue": {"length": 7}}), &tokens), Ok(7));
        assert_eq!(
            length_at(&json!({"queue": {"length": -1}}), &tokens),
            Err("/queue/length is -1, not a count".into())
        );
        assert_eq!(length_at(&json!({}), &tokens), Err("no /queue/length in the answer".into()));
    }

    #[test]
    fn an_unreadable_answer_makes_the_length_unknown() {
        let gauge = QueueLength::default();
        assert_eq!(gauge.get(), None);
        gauge.set(Some(3));
        assert_eq!(gauge.get(), Some(3));
        gauge.set(None);
        assert_eq!(gauge.get(), None);
    }
}
