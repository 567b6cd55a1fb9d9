//! The Celery shadow: each mirrored evaluation becomes a real Celery task message in the
//! Redis broker, run by unmodified Celery workers; the outcome is read from the Redis
//! result backend. [`crate::celery`] says what the bytes mean; [`crate::celery::broker`]
//! moves them. This module maps an evaluation onto a task and a result onto a side.
//!
//! Shadow safety lives in the config: the task name, a dedicated queue served by workers
//! that do not write to production, and argument templates (e.g. a `shadow=True` kwarg).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{ms_between, Job, ShadowRun};
use crate::celery::broker::{BrokerConfig, BrokerError, CeleryBroker, WaitOutcome};
use crate::celery::{encode_task, EncodedTask, Expires, TaskSpec, TaskState};
use crate::config::live::{CelerySettings, OutcomeRule};
use crate::fixture::Side;
use crate::live::mirror::budget::Reservation;
use crate::live::outcome;
use crate::live::state::NotMirrored;

/// `last_state` of a lost task whose result key never existed: no worker wrote a state.
pub const NEVER_SEEN: &str = "never_seen";
/// `last_state` of a lost task whose wait ended because Redis stopped answering.
pub const BROKER_UNREACHABLE: &str = "broker_unreachable";

/// How often the queue depth and Redis health are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the background sampler learns, read by the mirror and `/metrics`.
#[derive(Debug, Default)]
pub struct CeleryGauges {
    /// Messages waiting in the shadow queue (all priority keys).
    pub queue_depth: AtomicU64,
    /// The queue is deeper than `max_queue_depth`: mirroring pauses.
    pub too_deep: AtomicBool,
    /// Redis did not answer: mirroring pauses until it does.
    pub unavailable: AtomicBool,
    /// Tasks pushed into the broker.
    pub submitted: AtomicU64,
    /// With `delete_results = false`: bytes Redis spends on the result keys left behind
    /// (they expire after the backend's `result_expires`, one day by default), measured
    /// with `MEMORY USAGE` of each key once its final state is read.
    pub retained_result_bytes: AtomicU64,
}

/// Celery over Redis.
pub struct CeleryShadow {
    broker: CeleryBroker,
    settings: CelerySettings,
    rule: OutcomeRule,
    origin: String,
    /// Whether the unreadable-result warning was logged.
    warned_unreadable: AtomicBool,
    /// Queue depth and availability.
    pub gauges: Arc<CeleryGauges>,
}

impl CeleryShadow {
    /// Connects to the broker and result backend, and starts sampling the queue depth.
    pub async fn connect(settings: CelerySettings, shutdown: CancellationToken) -> Result<CeleryShadow, BrokerError> {
        let rule = settings.outcome.clone();
        let broker = CeleryBroker::connect(BrokerConfig {
            broker: settings.broker.clone(),
            result: settings.result.clone(),
            queue: settings.queue.clone(),
            layout: settings.layout.clone(),
            delete_results: settings.delete_results,
            result_poll_interval: rule.interval.max(Duration::from_millis(100)),
            late_result_watch: settings.late_result_watch,
        })
        .await?;
        let gauges = Arc::new(CeleryGauges::default());
        tokio::spawn(sample(broker.clone(), Arc::clone(&gauges), settings.max_queue_depth, shutdown));
        let origin = format!("shadowdiff{}@{}", std::process::id(), hostname());
        Ok(CeleryShadow { broker, settings, rule, origin, warned_unreadable: AtomicBool::new(false), gauges })
    }

    /// Why mirroring should pause now, if it should.
    pub fn paused(&self) -> Option<NotMirrored> {
        if self.gauges.unavailable.load(Ordering::Relaxed) {
            Some(NotMirrored::ShadowUnavailable)
        } else if self.gauges.too_deep.load(Ordering::Relaxed) {
            Some(NotMirrored::QueueDepth)
        } else {
            None
        }
    }

    /// Enqueues the task and waits for its final result, leaving nothing behind: a task
    /// given up on is removed from the queue if still there, otherwise revoked (if
    /// configured) and its result key watched and deleted when a late worker writes it.
    pub async fn run(&self, job: &Job, reservation: &Reservation) -> ShadowRun {
        let Some(code) = job.code() else {
            return ShadowRun::NotCompared(NotMirrored::MissingCode, "no code in the request body".into());
        };
        let deadline = self.settings.outcome.deadline.saturating_sub(job.received_at.elapsed());
        if deadline.is_zero() {
            return ShadowRun::NotCompared(
                NotMirrored::SubmitLate,
                "the outcome deadline passed before the task could be pushed".into(),
            );
        }
        let spec = self.task_spec(job, &code, deadline);
        drop(code);
        let task = match encode_task(&spec, &self.settings.layout) {
            Ok(task) => task,
            Err(e) => {
                return ShadowRun::side(Side::Error { submit_ms: None, error: json!({"shadowdiff": e.to_string()}) })
            }
        };
        drop(spec);
        // The message is kept until the outcome, to remove it from the queue if need be.
        // `grow`, not `resize`: a double run's two tasks add to the same reservation at once.
        if !reservation.grow(task.envelope.len() as u64) {
            return ShadowRun::NotCompared(NotMirrored::MemoryBudget, "the Celery message does not fit".into());
        }
        let submitted_at = Instant::now();
        let waiter = match self.broker.submit(&task).await {
            Ok(waiter) => waiter,
            Err(e) => {
                self.gauges.unavailable.store(true, Ordering::Relaxed);
                return ShadowRun::Unavailable(e.to_string());
            }
        };
        let submit_ms = ms_between(submitted_at, Instant::now());
        self.gauges.submitted.fetch_add(1, Ordering::Relaxed);
        match waiter.wait(deadline).await {
            // The task was pushed: it is mirrored, and without an outcome it is lost, never
            // "not mirrored" (that would hide it from `max_lost`).
            Err(e @ BrokerError::Unavailable { .. }) => {
                self.gauges.unavailable.store(true, Ordering::Relaxed);
                tracing::warn!(task_id = %task.task_id, error = %e, "Redis stopped answering while a task waited: counted lost");
                let side = Side::Lost {
                    submit_ms: Some(submit_ms),
                    waited_ms: ms_between(submitted_at, Instant::now()),
                    last_state: Some(BROKER_UNREACHABLE.into()),
                };
                ShadowRun::side(side)
            }
            Err(BrokerError::BadResult { task_id, source }) => {
                self.warn_unreadable(&task_id, &source);
                ShadowRun::NotCompared(NotMirrored::ShadowUnreadable, format!("task {task_id}: {source}"))
            }
            Err(e) => {
                ShadowRun::side(Side::Error { submit_ms: Some(submit_ms), error: json!({"shadowdiff": e.to_string()}) })
            }
            Ok(WaitOutcome::Final { result, retries_seen }) => {
                let outcome_ms = ms_between(submitted_at, Instant::now());
                if !self.settings.delete_results {
                    match self.broker.result_memory(&task.task_id).await {
                        Ok(bytes) => {
                            self.gauges.retained_result_bytes.fetch_add(bytes.unwrap_or(0), Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(task_id = %task.task_id, error = %e, "MEMORY USAGE failed"),
                    }
                }
                let side = match result.state {
                    TaskState::Success(value) => {
                        Side::Ok { submit_ms, outcome_ms, outcome: outcome::map_fields(&self.rule, value) }
                    }
                    state => Side::Error {
                        submit_ms: Some(submit_ms),
                        error: state.error().map_or_else(|| json!({"status": state.status()}), |e| e.to_json()),
                    },
                };
                ShadowRun::Side { side, retries: retries_seen }
            }
            Ok(WaitOutcome::Lost { retries_seen, last_state }) => {
                self.leave_nothing_behind(&task).await;
                let side = Side::Lost {
                    submit_ms: Some(submit_ms),
                    waited_ms: ms_between(submitted_at, Instant::now()),
                    last_state: Some(last_state.unwrap_or_else(|| NEVER_SEEN.into())),
                };
                ShadowRun::Side { side, retries: retries_seen }
            }
        }
    }

    /// A lost task: out of the queue if it is still there; otherwise a worker holds it, so
    /// revoke it (if configured); the broker deletes whatever result it writes late.
    async fn leave_nothing_behind(&self, task: &EncodedTask) {
        match self.broker.remove_queued(task).await {
            Ok(true) => {
                tracing::debug!(task_id = %task.task_id, "lost task removed from the queue");
                self.broker.forget_late(&task.task_id);
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(task_id = %task.task_id, error = %e, "LREM of a lost task failed"),
        }
        if self.settings.revoke_lost {
            if let Err(e) = self.broker.revoke(&task.task_id).await {
                tracing::debug!(task_id = %task.task_id, error = %e, "revoke of a lost task failed");
            }
        }
    }

    /// One clear line, once per process: the workers write results shadowdiff cannot read.
    fn warn_unreadable(&self, task_id: &str, error: &crate::celery::WireError) {
        if !self.warned_unreadable.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %task_id,
                %error,
                "a Celery result is not JSON, so no shadow outcome can be compared (counted as shadow_unreadable, \
                 key deleted): set result_serializer = \"json\" and accept_content = [\"json\"] on the shadow workers"
            );
        }
    }

    fn task_spec(&self, job: &Job, code: &str, deadline: Duration) -> TaskSpec {
        let s = &self.settings;
        let fill = |v: &Value| fill_template(v, job, code);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        TaskSpec {
            priority: s.priority,
            args: s.args.iter().map(fill).collect(),
            kwargs: s.kwargs.iter().map(|(name, v)| (name.clone(), fill(v))).collect(),
            // A worker that gets the task after its outcome deadline discards it.
            expires: Some(Expires::after(now, s.expires.unwrap_or(deadline))),
            time_limit: s.time_limit,
            soft_time_limit: s.soft_time_limit,
            origin: self.origin.clone(),
            // An id the broker's pattern subscription covers: no SUBSCRIBE of its own.
            task_id: Some(self.broker.new_task_id()),
            ..TaskSpec::new(s.task.clone(), s.queue.clone())
        }
    }
}

/// Fills `{eval_id}`, `{code}` and `{language}` in every string of a template value.
pub fn fill_template(template: &Value, job: &Job, code: &str) -> Value {
    match template {
        Value::String(text) => Value::String(fill_text(text, job, code)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_template(v, job, code)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), fill_template(v, job, code))).collect())
        }
        other => other.clone(),
    }
}

/// One template string filled in a single pass: a placeholder that appears in a filled-in
/// value (an eval_id or code containing `{code}`) stays as it is.
fn fill_text(text: &str, job: &Job, code: &str) -> String {
    let mut out = String::with_capacity(text.len() + code.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let placeholders =
            [("{eval_id}", job.eval_id.as_str()), ("{language}", job.language.as_str()), ("{code}", code)];
        match placeholders.iter().find(|(name, _)| tail.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &tail[name.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Samples the queue depth every second: pauses mirroring above the limit or while Redis
/// does not answer, and resumes by itself.
async fn sample(broker: CeleryBroker, gauges: Arc<CeleryGauges>, max_depth: u64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match broker.queue_depth().await {
            Ok(depth) => {
                gauges.queue_depth.store(depth, Ordering::Relaxed);
                gauges.too_deep.store(depth > max_depth, Ordering::Relaxed);
                if gauges.unavailable.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: mirroring resumes");
                }
            }
            Err(e) => {
                if !gauges.unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis unavailable: mirroring paused");
                }
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(eval_id: &str, language: &str, body: &'static [u8]) -> Job {
        Job {
            eval_id: eval_id.into(),
            language: language.into(),
            code_pointer: vec!["code".into()],
            method: hyper::Method::POST,
            path: "/evaluations".into(),
            headers: hyper::HeaderMap::new(),
            body: bytes::Bytes::from_static(body),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn templates_fill_every_string() {
        let job = job("e-1", "python", br#"{"code": "print('{x}')"}"#);
        let template = json!(["{eval_id}", "{code}", {"lang": "{language}", "shadow": true}, 3, "{ {code}{"]);
        let code = job.code().expect("code");
        assert_eq!(
            fill_template(&template, &job, &code),
            json!(["e-1", "print('{x}')", {"lang": "python", "shadow": true}, 3, "{ print('{x}'){"])
        );
    }

    #[test]
    fn placeholders_inside_filled_in_values_stay_as_they_are() {
        let job = job("{code}", "{eval_id}", br#"{"code": "print('{language}')"}"#);
        let code = job.code().expect("code");
        let template = json!("{eval_id}|{language}|{code}");
        assert_eq!(fill_template(&template, &job, &code), json!("{code}|{eval_id}|print('{language}')"));
    }
}
