//! The mirror: takes exchanges from the proxy's hand-off, decides which evaluations are
//! mirrored, runs both sides to their final outcomes, and hands the pair to the engine.
//!
//! Every submission ends in exactly one place: judged, pending, or not mirrored with a
//! reason ([`crate::live::state::NotMirrored`]). Mirrored evaluations are bounded by a semaphore
//! (`shadow.max_in_flight`) and tracked, so shutdown can wait for them under a deadline.

pub mod breaker;
pub mod budget;
pub mod observe;
pub mod sampling;
pub mod tap;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::config::live::{IdSource, LiveConfig, OutcomeMode, Route};
use crate::fixture::json::{Doc, Kind, Node};
use crate::fixture::view::{EvaluationRef, SideRef};
use crate::fixture::{Evaluation, Side, FORMAT_VERSION};
use crate::judge::verdict::Verdict;
use crate::live::http_client::HttpClient;
use crate::live::outcome::{self, HeldSide, Polled, ResponseOutcome};
use crate::live::proxy::{Captured, Exchange, LegacyOutcome};
use crate::live::record::Recorder;
use crate::live::shadow::http::SubmitSlot;
use crate::live::shadow::twice::{self, SecondRun};
use crate::live::shadow::{ms_between, Job, Shadow, ShadowRun};
use crate::live::state::{Live, NotMirrored, Skip};
use budget::Reservation;
use observe::Observers;
use tap::Handoff;

/// Everything an evaluation task needs, shared.
pub struct Mirror {
    live: Arc<Live>,
    config: Arc<LiveConfig>,
    shadow: Arc<Shadow>,
    client: HttpClient,
    observers: Arc<Observers>,
    in_flight: Arc<InFlight>,
    tracker: TaskTracker,
    recorder: Option<Arc<Recorder>>,
}

/// Mirrored evaluations not judged yet, under `shadow.max_in_flight`. Only ever taken
/// without waiting, so it is a shared count rather than a semaphore, whose release takes a
/// lock every proxy thread would share.
struct InFlight {
    taken: AtomicUsize,
    max: usize,
}

impl InFlight {
    /// A place, if one is free.
    fn take(this: &Arc<InFlight>) -> Option<InFlightPermit> {
        if this.taken.fetch_add(1, Ordering::AcqRel) >= this.max {
            this.taken.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightPermit(Arc::clone(this)))
    }

    /// Whether every place is taken.
    fn full(&self) -> bool {
        self.taken.load(Ordering::Relaxed) >= self.max
    }
}

/// One place in [`InFlight`], given back when dropped.
struct InFlightPermit(Arc<InFlight>);

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A submission that passed every check, with the legacy answer it got (kept only when
/// it is the legacy outcome) and the bytes reserved for what it holds.
struct Accepted {
    job: Job,
    legacy_status_body: Bytes,
    submit_ms: f64,
    permit: InFlightPermit,
    reservation: Reservation,
    /// Its place among the HTTP shadow's outstanding submissions.
    slot: Option<SubmitSlot>,
    /// The shadow's second run of the same evaluation, when it runs twice to learn noise,
    /// with its own place.
    second: Option<(Job, Option<SubmitSlot>)>,
}

impl Mirror {
    /// A mirror over shared state.
    pub fn new(
        live: Arc<Live>,
        config: Arc<LiveConfig>,
        shadow: Arc<Shadow>,
        client: HttpClient,
        recorder: Option<Arc<Recorder>>,
    ) -> Mirror {
        let in_flight = Arc::new(InFlight { taken: AtomicUsize::new(0), max: config.max_in_flight });
        Mirror {
            live,
            config,
            shadow,
            client,
            observers: Arc::new(Observers::default()),
            in_flight,
            tracker: TaskTracker::new(),
            recorder,
        }
    }

    /// A mirror for another proxy thread: the same state, config, observers and in-flight
    /// cap, the shadow and the result polls on connections of that thread's own, and a
    /// task tracker of its own (its hand-off is its own too).
    pub fn shard(&self) -> Mirror {
        Mirror {
            live: Arc::clone(&self.live),
            config: Arc::clone(&self.config),
            shadow: self.shadow.sibling(),
            client: self.client.sibling(),
            observers: Arc::clone(&self.observers),
            in_flight: Arc::clone(&self.in_flight),
            tracker: TaskTracker::new(),
            recorder: self.recorder.clone(),
        }
    }

    /// The config it mirrors by.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// A reason it would refuse any submission now, known without the submission: sampling
    /// at 0 %, `max_in_flight` reached, a stalled HTTP shadow, or the breaker open (in its
    /// cool-down, or probing). The proxy then copies nothing.
    pub fn refuses_all(&self) -> Option<Skip> {
        if self.live.sampler.is_off() {
            Some(Skip::SampledOut)
        } else if self.in_flight.full() {
            Some(Skip::InFlightCap)
        } else if self.shadow.stalled() {
            Some(Skip::ShadowBusy)
        } else if self.live.breaker.refuses(Instant::now()) {
            Some(Skip::BreakerOpen)
        } else {
            None
        }
    }

    /// Evaluations mirrored and not judged yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.taken.load(Ordering::Relaxed).min(self.in_flight.max)
    }

    /// The tracker of evaluation tasks, for shutdown.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Drains the hand-off until every sender is gone.
    pub async fn run(self: Arc<Self>, mut handoff: mpsc::Receiver<Handoff>) {
        while let Some(item) = handoff.recv().await {
            match item {
                Handoff::Observation(exchange) => self.observe(exchange),
                Handoff::Submission(route, exchange, reservation) => {
                    let deciding = Instant::now();
                    let decision = self.accept(&self.config.routes[route], exchange, reservation);
                    self.live.selected(decision.as_ref().map(|_| ()).map_err(|reason| *reason), deciding.elapsed());
                    if let Ok(accepted) = decision {
                        let mirror = Arc::clone(&self);
                        // Boxed, like the proxy's captured leg: a pointer-sized task.
                        self.tracker.spawn(Box::pin(async move { mirror.evaluate(accepted).await }));
                    }
                }
            }
        }
        self.tracker.close();
    }

    fn observe(&self, exchange: Exchange) {
        let rule = &self.config.legacy_outcome;
        let Some(eval_id) = outcome::eval_id_from_path(rule, &exchange.path_and_query) else { return };
        let LegacyOutcome::Response { status, body: Captured::Complete(body) } = &exchange.outcome else { return };
        if !status.is_success() {
            return;
        }
        if let Ok(document) = serde_json::from_slice::<Value>(body) {
            if outcome::is_terminal(rule, &document) {
                self.observers.deliver(eval_id, outcome::map_fields(rule, document), Instant::now());
            }
        }
    }

    /// Every check a submission must pass to be mirrored, in order.
    fn accept(
        &self,
        route: &Route,
        exchange: Exchange,
        reservation: Option<Reservation>,
    ) -> Result<Accepted, NotMirrored> {
        let received_at = Instant::now() - exchange.submit;
        let response_body = match exchange.outcome {
            LegacyOutcome::ClientError(_) => return Err(NotMirrored::ClientError),
            LegacyOutcome::Response { status, body } if status.is_success() => body,
            LegacyOutcome::Response { .. } => return Err(NotMirrored::LegacyRejected),
            LegacyOutcome::Unreachable(_) | LegacyOutcome::Timeout | LegacyOutcome::Cancelled => {
                return Err(NotMirrored::LegacyError)
            }
        };
        let reservation = reservation.ok_or(NotMirrored::MemoryBudget)?;
        let body = match exchange.request_body {
            Captured::Complete(body) if body.len() <= self.config.max_mirror_body_bytes => body,
            Captured::Complete(_) | Captured::TooLarge => return Err(NotMirrored::BodyTooLarge),
            Captured::Failed => return Err(NotMirrored::BodyIncomplete),
        };
        // Read into a document borrowing from the body: only three strings are needed.
        let request = Doc::parse(&body).map_err(|_| NotMirrored::BodyNotJson)?;
        // Without the whole response there is no legacy outcome where the response is the
        // outcome, and no id where the id is in it: not comparable, and nobody's fault but
        // the exchange's (a client that left mid-response cuts the copy).
        let needs_response = self.config.legacy_outcome.mode == OutcomeMode::Response;
        let response_bytes = match response_body {
            Captured::Complete(bytes) => bytes,
            Captured::TooLarge if needs_response => return Err(NotMirrored::BodyTooLarge),
            _ if needs_response || route.eval_id_from == IdSource::Response => return Err(NotMirrored::BodyIncomplete),
            _ => Bytes::new(),
        };
        let eval_id = match route.eval_id_from {
            IdSource::Request => text_at(request.root(), &route.eval_id),
            IdSource::Response => {
                let response = Doc::parse(&response_bytes).map_err(|_| NotMirrored::BodyNotJson)?;
                text_at(response.root(), &route.eval_id)
            }
        }
        .ok_or(NotMirrored::MissingEvalId)?;
        if !has_text(request.root(), &route.code) {
            return Err(NotMirrored::MissingCode);
        }
        let language = text_at(request.root(), &route.language).ok_or(NotMirrored::MissingLanguage)?;
        drop(request);

        if !self.live.sampler.sampled(&eval_id) {
            return Err(NotMirrored::SampledOut);
        }
        if let Some(reason) = self.shadow.paused() {
            return Err(reason);
        }
        if !self.live.breaker.allow(Instant::now()) {
            return Err(NotMirrored::BreakerOpen);
        }
        let permit = InFlight::take(&self.in_flight).ok_or(NotMirrored::InFlightCap)?;
        let slot = self.shadow.reserve()?;
        let job = Job {
            eval_id,
            language,
            code_pointer: route.code.clone(),
            method: exchange.method,
            path: exchange.path_and_query,
            headers: exchange.headers,
            body,
            received_at,
        };
        // Keep the legacy answer only where it is the legacy outcome.
        let legacy_status_body =
            if self.config.legacy_outcome.mode == OutcomeMode::Response { response_bytes } else { Bytes::new() };
        // What the evaluation holds from now on; less than the hand-off held, so it fits.
        reservation.resize(job.held_bytes() + legacy_status_body.len() as u64);
        // A second run only where the budget holds its job too and the shadow has room
        // for it; otherwise it runs once.
        let second = if self.live.engine().runs_twice(&job.eval_id) {
            let eval_id_pointer = (route.eval_id_from == IdSource::Request).then_some(route.eval_id.as_slice());
            self.shadow
                .second_job(&job, eval_id_pointer)
                .and_then(|second| Some((second, self.shadow.reserve().ok()?)))
                .filter(|(second, _)| reservation.grow(second.held_bytes()))
        } else {
            None
        };
        Ok(Accepted {
            job,
            legacy_status_body,
            submit_ms: exchange.submit.as_secs_f64() * 1000.0,
            permit,
            reservation,
            slot,
            second,
        })
    }

    /// Runs both sides to their final outcomes, then judges, counts and records.
    async fn evaluate(&self, accepted: Accepted) {
        let Accepted { job, legacy_status_body, submit_ms, permit, reservation, slot, second } = accepted;
        let legacy = async {
            match self.legacy_side(&job, &legacy_status_body, submit_ms).await {
                // The response body, already counted since the hand-off.
                held @ HeldSide::Response(_) => Some(held),
                // Any other legacy outcome is held until the shadow's arrives: it counts
                // too. If it does not fit, it is dropped now; the shadow still runs to its
                // end (a Celery task is then cleaned up as usual) and the evaluation is not
                // compared.
                HeldSide::Side(side) => reservation.grow(json_bytes(&side)).then_some(HeldSide::Side(side)),
            }
        };
        let shadow = self.shadow.run(&job, &reservation, slot);
        let again = async {
            match second {
                Some((second, slot)) => {
                    twice::second_run(&job, &second, self.shadow.run(&second, &reservation, slot).await)
                }
                None => SecondRun::NotRun,
            }
        };
        let (legacy, shadow, again) = tokio::join!(legacy, shadow, again);
        drop(permit);
        let (shadow, retries) = match shadow {
            ShadowRun::Side { side, retries } => (HeldSide::Side(side), retries),
            ShadowRun::Response(response) => (HeldSide::Response(response), 0),
            ShadowRun::Unavailable(reason) => {
                tracing::debug!(eval_id = %job.eval_id, %reason, "shadow unavailable");
                self.live.unmirror(NotMirrored::ShadowUnavailable);
                return;
            }
            ShadowRun::NotCompared(reason, why) => {
                tracing::debug!(eval_id = %job.eval_id, reason = reason.as_str(), %why, "not compared");
                self.live.unmirror(reason);
                if reason == NotMirrored::ShadowUnreadable {
                    self.live.breaker.record(true, Instant::now());
                }
                return;
            }
        };
        let Some(legacy) = legacy else {
            tracing::debug!(eval_id = %job.eval_id, "legacy outcome over the byte budget: not compared");
            self.live.unmirror(NotMirrored::MemoryBudget);
            return;
        };
        let double_run = again.label();
        // Judged from a view, the sides viewed once. Judging never reads the request, and
        // counting reads it only for a mismatch's example: it is read from its body, into
        // the form the engine keeps, only then. An owned evaluation (the request as a
        // `Value`, the wall-clock time) is built only for a recording.
        let (mut legacy_error, mut shadow_error) = (None, None);
        let legacy_view = legacy.view(&mut legacy_error);
        let shadow_view = shadow.view_beside(&mut shadow_error, &legacy, &legacy_view);
        let mut view = EvaluationRef {
            v: FORMAT_VERSION,
            eval_id: Cow::Borrowed(&job.eval_id),
            language: Cow::Borrowed(&job.language),
            submitted_at: None,
            request: None,
            legacy: legacy_view,
            shadow: shadow_view,
            double_run: double_run.map(Cow::Borrowed),
        };
        let verdict = self.live.engine().judge_ref(&view);
        let null = Value::Null;
        if matches!(verdict, Verdict::Mismatch(_)) {
            view.request = Some(Doc::parse(&job.body).unwrap_or_else(|_| Doc::from_value(&null)));
        }
        let shadow_failed = !matches!(view.shadow, SideRef::Ok { .. });
        drop(reservation);
        let verdict = self.live.count_judged(&view, verdict, retries, again);
        drop(view);
        self.live.breaker.record(shadow_failed, Instant::now());
        tracing::debug!(eval_id = %job.eval_id, verdict = verdict.kind().as_str(), "judged");
        if let Some(recorder) = &self.recorder {
            // Whole by default, so that `drive` can send it again; `[record] redact` opts out.
            let mut recorded = Evaluation {
                v: FORMAT_VERSION,
                submitted_at: Some(wall_clock_of(job.received_at)),
                request: Some(job.request()),
                eval_id: job.eval_id,
                language: job.language,
                legacy: legacy.into_side(),
                shadow: shadow.into_side(),
                double_run: double_run.map(str::to_owned),
            };
            let redact = self.config.record.as_ref().map_or(&[][..], |settings| &settings.redact[..]);
            if let (Some(request), false) = (&recorded.request, redact.is_empty()) {
                recorded.request = Some(crate::judge::example::redact(request, redact));
            }
            recorder.record(recorded.to_line());
        }
    }

    /// The legacy side's final outcome, as `[legacy.outcome]` says to obtain it.
    async fn legacy_side(&self, job: &Job, response: &Bytes, submit_ms: f64) -> HeldSide {
        let rule = &self.config.legacy_outcome;
        let deadline = job.received_at + rule.deadline;
        let base = self.config.legacy_url.as_deref().unwrap_or_default();
        let polled = match rule.mode {
            // Unmapped, the document is the body as it came: read it when judged.
            OutcomeMode::Response if rule.fields.is_empty() => {
                return HeldSide::Response(ResponseOutcome { submit_ms, body: response.clone(), from: "legacy" });
            }
            OutcomeMode::Response => {
                return HeldSide::Side(match serde_json::from_slice::<Value>(response) {
                    Ok(document) => {
                        Side::Ok { submit_ms, outcome_ms: submit_ms, outcome: outcome::map_fields(rule, document) }
                    }
                    Err(e) => Side::Error {
                        submit_ms: Some(submit_ms),
                        error: json!({"shadowdiff": format!("legacy response is not JSON: {e}")}),
                    },
                });
            }
            OutcomeMode::Poll => {
                // Boxed, as the shadow's run: polling is not every evaluation's way.
                let url = outcome::result_url(base, rule, &job.eval_id);
                Box::pin(outcome::poll(&self.client, &url, rule, deadline)).await
            }
            OutcomeMode::Observe => {
                let mut observation = self.observers.register(&job.eval_id);
                match tokio::time::timeout_at(deadline.into(), &mut observation.receiver).await {
                    Ok(Ok((document, at))) => Polled::Final(document, at),
                    _ => {
                        drop(observation);
                        // None seen in time: ask the legacy system once more, for as long again.
                        let url = outcome::result_url(base, rule, &job.eval_id);
                        Box::pin(outcome::poll(&self.client, &url, rule, Instant::now() + rule.deadline)).await
                    }
                }
            }
        };
        HeldSide::Side(match polled {
            Polled::Final(document, at) => {
                Side::Ok { submit_ms, outcome_ms: ms_between(job.received_at, at), outcome: document }
            }
            Polled::Lost(last_state) => Side::Lost {
                submit_ms: Some(submit_ms),
                waited_ms: ms_between(job.received_at, Instant::now()),
                last_state: Some(last_state),
            },
        })
    }
}

/// The wall-clock time of an instant in the past, as a recording's `submitted_at`.
fn wall_clock_of(at: Instant) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    crate::celery::format_utc(now.saturating_sub(at.elapsed()))
}

/// The size of a value's JSON, without building it.
fn json_bytes(value: &impl serde::Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The non-empty string or the number at `tokens`, as text.
fn text_at(document: Node<'_>, tokens: &[String]) -> Option<String> {
    match document.lookup(tokens)?.kind() {
        Kind::String(text) if !text.is_empty() => Some(text.to_owned()),
        Kind::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether [`text_at`] finds something, without copying it.
fn has_text(document: Node<'_>, tokens: &[String]) -> bool {
    match document.lookup(tokens).map(Node::kind) {
        Some(Kind::String(text)) => !text.is_empty(),
        Some(Kind::Number(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_places_are_taken_up_to_the_cap_and_given_back_when_dropped() {
        let cap = Arc::new(InFlight { taken: AtomicUsize::new(0), max: 2 });
        let first = InFlight::take(&cap).expect("a place");
        let second = InFlight::take(&cap).expect("a place");
        assert!(cap.full());
        assert!(InFlight::take(&cap).is_none());
        assert_eq!(cap.taken.load(Ordering::Relaxed), 2, "a refusal takes no place");
        drop(first);
        assert!(!cap.full());
        let third = InFlight::take(&cap).expect("the place given back");
        drop((second, third));
        assert_eq!(cap.taken.load(Ordering::Relaxed), 0);
    }
}
