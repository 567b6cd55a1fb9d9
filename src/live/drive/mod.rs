//! `shadowdiff drive`: recorded evaluations sent again, at a chosen pace, to the shadow
//! (Celery or HTTP) or to the legacy service, each new outcome compared with the recorded
//! outcome of the other system.
//!
//! Nothing here is a second copy of `serve`: the shadow is [`crate::live::shadow::Shadow`]
//! (the legacy service, for `--to legacy`, is driven as an HTTP shadow with the legacy
//! outcome rule), the rails are the mirror's [`Breaker`], [`Budget`] and the shadow's queue
//! depth pause, and judging goes through [`Live`] and the engine. What is its own: the
//! pace ([`pace`], pure), reading and checking the recordings ([`plan`]), fresh ids, the
//! progress display ([`progress`]) and the report's drive section.
//!
//! A rail does not drop a driven evaluation as it would a mirrored one: it holds the next
//! submission until the rail lets it go (the time held is reported per rail), since the
//! point of a drive is to send every one. Every planned evaluation ends in one place:
//! judged, not compared (with the mirror's reasons), abandoned at the end of the grace, or
//! not submitted after Ctrl-C.

pub mod pace;
pub mod plan;
pub mod progress;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::live::{IdSource, Route};
use crate::config::Config;
use crate::fixture::Side;
use crate::judge::engine::Engine;
use crate::judge::noise::SecondRun;
use crate::judge::verdict::VerdictKind;
use crate::live::http_client::HttpClient;
use crate::live::mirror::breaker::Breaker;
use crate::live::mirror::budget::{Budget, Reservation};
use crate::live::mirror::sampling::Sampler;
use crate::live::record::Recorder;
use crate::live::shadow::http::HttpShadow;
use crate::live::shadow::twice::{self, restore_id};
use crate::live::shadow::{Job, Shadow, ShadowRun};
use crate::live::state::{Live, NotMirrored};
use crate::report::drive::{DriveContext, DriveSample, DrivenId};
use crate::report::{Report, Source};
use pace::{Pace, Pacer};
use plan::Planned;
use progress::{Counters, Display};

/// Far enough to mean never, near enough for an `Instant` to hold.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long a rail is waited on before it is asked again.
const RAIL_RECHECK: Duration = Duration::from_millis(50);
/// Time between two samples of the queue depth and counts.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept; a longer drive keeps every other one from then on.
const MAX_SAMPLES: usize = 3600;

/// Where the evaluations go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The configured shadow (Celery or HTTP); compared with the recorded legacy outcome.
    Shadow,
    /// `[legacy] url`, the recovery path; compared with the recorded shadow outcome.
    Legacy,
}

/// How a drive runs.
#[derive(Debug, Clone)]
pub struct DriveSettings {
    /// The pace.
    pub pace: Pace,
    /// Most evaluations in flight at once.
    pub concurrency: usize,
    /// Where they go.
    pub target: Target,
    /// Send each with a fresh `eval_id` (`<recorded>-drive-<run>-<n>`), or with its own.
    pub fresh_ids: bool,
    /// After Ctrl-C, how long evaluations in flight may still finish.
    pub grace: Duration,
    /// How progress is shown.
    pub display: Display,
}

/// Signals from the command line: `stop` ends submitting (first Ctrl-C), `abort` ends the
/// wait for what is in flight (second Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Submit no more.
    pub stop: CancellationToken,
    /// Wait no more.
    pub abort: CancellationToken,
}

/// The finished drive.
#[derive(Debug)]
pub struct Driven {
    /// The report, with its drive section and accounting.
    pub report: Report,
}

/// What every evaluation task shares.
struct Context {
    live: Arc<Live>,
    shadow: Arc<Shadow>,
    target: Target,
    counters: Arc<Counters>,
    recorder: Option<Arc<Recorder>>,
}

/// The problems that stop a drive with this config before anything is sent, each naming
/// its key: those `serve` would have, less the ones about its recording and about the
/// system not driven (`legacy.url` when driving the shadow, `shadow.*` when driving legacy).
pub fn problems(config: &Config, target: Target) -> Vec<crate::config::Problem> {
    let unused = |key: &str| match target {
        Target::Shadow => key == "legacy.url",
        Target::Legacy => key.starts_with("shadow."),
    };
    config.live.serve_problems().into_iter().filter(|p| !p.key.starts_with("record.") && !unused(&p.key)).collect()
}

/// Sends every planned evaluation, waits for the outcomes, and builds the report.
pub async fn run(
    config: Config,
    files: Vec<String>,
    plan: Vec<Planned>,
    settings: DriveSettings,
    recorder: Option<Arc<Recorder>>,
    signals: Stop,
) -> anyhow::Result<Driven> {
    let live_config = Arc::new(config.live.clone());
    let route = live_config.routes.first().cloned().ok_or_else(|| anyhow::anyhow!("no [[routes]] entry"))?;
    let background = CancellationToken::new();
    let shadow = Arc::new(match settings.target {
        Target::Shadow => crate::live::serve::build_shadow(&live_config, background.clone()).await?,
        Target::Legacy => Shadow::Http(HttpShadow::new(
            HttpClient::with_max_connections(live_config.legacy_max_connections),
            live_config.legacy_max_connections,
            live_config.legacy_url.clone().unwrap_or_default(),
            live_config.legacy_timeout,
            live_config.legacy_outcome.clone(),
            Default::default(),
        )),
    });
    let target_name = match (settings.target, shadow.as_ref()) {
        (Target::Legacy, _) => "legacy",
        (Target::Shadow, Shadow::Http(_)) => "http",
        (Target::Shadow, Shadow::Celery(_)) => "celery",
    };
    let live = Arc::new(Live::new(
        Engine::new(config),
        Sampler::new(100.0),
        Breaker::new(live_config.breaker_failures, live_config.breaker_cooldown),
    ));
    let counters = Arc::new(Counters::default());
    let context = Arc::new(Context {
        live: Arc::clone(&live),
        shadow: Arc::clone(&shadow),
        target: settings.target,
        counters: Arc::clone(&counters),
        recorder,
    });
    let budget = Budget::new(live_config.max_pending_bytes);
    let in_flight = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let tracker = TaskTracker::new();
    let planned_count = plan.len() as u64;
    let started = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(sample(
        Arc::clone(&samples),
        Arc::clone(&counters),
        Arc::clone(&shadow),
        Arc::clone(&in_flight),
        settings.concurrency.max(1),
        started,
        background.clone(),
    ));
    tokio::spawn(progress::show(settings.display, Arc::clone(&counters), planned_count, started, background.clone()));

    let run_token = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let mut pacer = Pacer::new(settings.pace);
    let mut held: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut ids = Vec::with_capacity(plan.len());
    let (mut first_sent, mut last_sent) = (None, None);
    'plan: for (index, planned) in plan.into_iter().enumerate() {
        let due = pacer.due(index as u64, planned.recorded_at);
        tokio::select! {
            () = signals.stop.cancelled() => break,
            // A due time past what an Instant holds (a pace far too slow) waits for Ctrl-C.
            () = tokio::time::sleep_until(started.checked_add(due).unwrap_or(started + FOREVER).into()) => {}
        }
        let mut was_held = false;
        // The in-flight cap (`--concurrency`).
        let permit = match Arc::clone(&in_flight).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                was_held = true;
                let waiting = Instant::now();
                let permit = tokio::select! {
                    () = signals.stop.cancelled() => break,
                    permit = Arc::clone(&in_flight).acquire_owned() => permit?,
                };
                *held.entry(NotMirrored::InFlightCap.as_str()).or_default() += waiting.elapsed();
                permit
            }
        };
        // The queue depth pause, Redis down, the breaker.
        loop {
            let reason = match shadow.paused() {
                Some(reason) => reason,
                None if live.breaker.allow(Instant::now()) => break,
                None => NotMirrored::BreakerOpen,
            };
            was_held = true;
            let waiting = Instant::now();
            tokio::select! {
                () = signals.stop.cancelled() => break 'plan,
                () = tokio::time::sleep(RAIL_RECHECK) => {}
            }
            *held.entry(reason.as_str()).or_default() += waiting.elapsed();
        }
        let driven_id = if settings.fresh_ids {
            format!("{}-drive-{run_token}-{}", planned.evaluation.eval_id, index + 1)
        } else {
            planned.evaluation.eval_id.clone()
        };
        let job = job(&planned, &route, &driven_id, settings.fresh_ids);
        live.submission_seen();
        if job.body.len() > live_config.max_mirror_body_bytes {
            live.not_mirrored(NotMirrored::BodyTooLarge);
            counters.done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // The byte cap: wait while others hold the bytes; one that can never fit is skipped.
        let bytes = job.held_bytes() + json_len(&planned.evaluation);
        let reservation = loop {
            if let Some(reservation) = budget.try_reserve(bytes) {
                break Some(reservation);
            }
            if budget.held() == 0 {
                break None;
            }
            was_held = true;
            let waiting = Instant::now();
            tokio::select! {
                () = signals.stop.cancelled() => {
                    live.not_mirrored(NotMirrored::ShuttingDown);
                    break 'plan;
                }
                () = tokio::time::sleep(RAIL_RECHECK) => {}
            }
            *held.entry(NotMirrored::MemoryBudget.as_str()).or_default() += waiting.elapsed();
        };
        let Some(reservation) = reservation else {
            live.not_mirrored(NotMirrored::MemoryBudget);
            counters.done.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if was_held {
            pacer.held(due, started.elapsed());
        }
        // Learned noise: a sample (chosen by the recorded id, as serve chooses) runs twice
        // on the shadow, where the byte cap holds the second job too. Legacy never runs twice.
        let second = if settings.target == Target::Shadow && live.engine().runs_twice(&planned.evaluation.eval_id) {
            let eval_id_pointer = (route.eval_id_from == IdSource::Request).then_some(route.eval_id.as_slice());
            shadow.second_job(&job, eval_id_pointer).filter(|second| reservation.grow(second.held_bytes()))
        } else {
            None
        };
        live.mirrored();
        let now = Instant::now();
        first_sent.get_or_insert(now);
        last_sent = Some(now);
        counters.submitted.fetch_add(1, Ordering::Relaxed);
        ids.push(DrivenId {
            driven: driven_id.clone(),
            recorded: planned.evaluation.eval_id.clone(),
            file: planned.file.clone(),
            line: planned.line,
        });
        let context = Arc::clone(&context);
        tracker.spawn(async move {
            evaluate(&context, planned, Jobs { first: job, second }, driven_id, reservation).await;
            drop(permit);
        });
    }
    tracker.close();
    tokio::select! {
        () = tracker.wait() => {}
        () = signals.stop.cancelled() => {
            tokio::select! {
                () = tracker.wait() => {}
                () = tokio::time::sleep(settings.grace) => {}
                () = signals.abort.cancelled() => {}
            }
        }
    }
    let abandoned = if tracker.is_empty() { 0 } else { live.abandon_pending() };
    let snapshot = live.snapshot();
    background.cancel();
    let interrupted = signals.stop.is_cancelled();
    if abandoned > 0 {
        tracing::warn!(abandoned, "evaluations still in flight after the grace: counted abandoned");
    }
    let submitted = counters.submitted.load(Ordering::Relaxed);
    let submitting_s = match (first_sent, last_sent) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    // n submissions span n - 1 gaps.
    let achieved_rate = if submitting_s > 0.0 { submitted.saturating_sub(1) as f64 / submitting_s } else { 0.0 };
    let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    samples.push(sample_now(&counters, &shadow, &in_flight, settings.concurrency.max(1), started));
    let drive = DriveContext {
        target: target_name,
        driven_side: if settings.target == Target::Legacy { "legacy" } else { "shadow" },
        pacing: settings.pace.mode(),
        pacing_value: settings.pace.value(),
        concurrency: settings.concurrency.max(1),
        planned: planned_count,
        submitted,
        // Read but never sent: the drive was interrupted first.
        not_submitted: planned_count.saturating_sub(snapshot.accounting.submissions),
        interrupted,
        submitting_s,
        elapsed_s: started.elapsed().as_secs_f64(),
        achieved_rate,
        held_ms: held.into_iter().map(|(rail, time)| (rail, time.as_millis() as u64)).collect(),
        samples,
        ids,
    };
    let mut report = Report::build(live.engine(), &snapshot.stats, Source { mode: "drive", files });
    report.accounting = Some(snapshot.accounting);
    report.drive = Some(drive);
    Ok(Driven { report })
}

/// Runs one driven evaluation to its new outcome, judges it against the recorded other
/// side, counts and records it.
async fn evaluate(context: &Context, planned: Planned, jobs: Jobs, driven_id: String, reservation: Reservation) {
    let live = &context.live;
    let Jobs { first: job, second } = jobs;
    let again = async {
        match &second {
            Some(second) => twice::second_run(&job, second, context.shadow.run(second, &reservation, None).await),
            None => SecondRun::NotRun,
        }
    };
    let (run, again) = tokio::join!(context.shadow.run(&job, &reservation, None), again);
    drop(second);
    context.counters.done.fetch_add(1, Ordering::Relaxed);
    let (side, retries) = match run {
        ShadowRun::Side { side, retries } => (side, retries),
        ShadowRun::Response(response) => (response.to_side(), 0),
        ShadowRun::Unavailable(reason) => {
            tracing::debug!(eval_id = %driven_id, %reason, "target unavailable");
            live.unmirror(NotMirrored::ShadowUnavailable);
            return;
        }
        ShadowRun::NotCompared(reason, why) => {
            tracing::debug!(eval_id = %driven_id, reason = reason.as_str(), %why, "not compared");
            live.unmirror(reason);
            if reason == NotMirrored::ShadowUnreadable {
                live.breaker.record(true, Instant::now());
            }
            return;
        }
    };
    let mut evaluation = planned.evaluation;
    let side = map_id_back(side, &driven_id, &evaluation.eval_id);
    let failed = !matches!(side, Side::Ok { .. });
    match context.target {
        Target::Shadow => evaluation.shadow = side,
        Target::Legacy => evaluation.legacy = side,
    }
    evaluation.submitted_at = Some(wall_clock_of(job.received_at));
    evaluation.double_run = again.label().map(str::to_owned);
    drop(job);
    drop(reservation);
    let again = match again {
        SecondRun::Outcome(outcome) => SecondRun::Outcome(restore_id(outcome, &driven_id, &evaluation.eval_id)),
        other => other,
    };
    let verdict = live.judged(&evaluation, retries, again);
    live.breaker.record(failed, Instant::now());
    if verdict.kind() == VerdictKind::Mismatch {
        context.counters.mismatches.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(eval_id = %driven_id, recorded = %evaluation.eval_id, verdict = verdict.kind().as_str(), "judged");
    if let Some(recorder) = &context.recorder {
        recorder.record(evaluation.to_line());
    }
}

/// What the shadow runs for one driven evaluation: its job, and the second run's where the
/// evaluation runs twice to learn noise.
struct Jobs {
    first: Job,
    second: Option<Job>,
}

/// The job that sends a recorded request again: the route's method and path, the recorded
/// body with its `eval_id` replaced by the driven one (for ids the request carries).
fn job(planned: &Planned, route: &Route, driven_id: &str, fresh_ids: bool) -> Job {
    let mut request = planned.evaluation.request.clone().unwrap_or(Value::Null);
    if fresh_ids && route.eval_id_from == IdSource::Request {
        set_at(&mut request, &route.eval_id, Value::String(driven_id.to_owned()));
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Job {
        eval_id: driven_id.to_owned(),
        language: planned.evaluation.language.clone(),
        code_pointer: route.code.clone(),
        method: route.method.parse().unwrap_or(Method::POST),
        path: route.path.clone(),
        headers,
        // A `Value` always serialises.
        body: Bytes::from(serde_json::to_vec(&request).unwrap_or_default()),
        received_at: Instant::now(),
    }
}

/// Sets the member at `tokens`, making objects on the way.
pub fn set_at(document: &mut Value, tokens: &[String], value: Value) {
    let Some((last, parents)) = tokens.split_last() else {
        *document = value;
        return;
    };
    let mut current = document;
    for token in parents {
        current = match current {
            Value::Object(map) => map.entry(token.clone()).or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(item) => item,
                None => return,
            },
            _ => return,
        };
    }
    match current {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *item = value;
            }
        }
        _ => {}
    }
}

/// The new side with every string equal to the driven id put back to the recorded id, so
/// that an outcome echoing its id compares equal to the recorded one.
pub fn map_id_back(side: Side, driven: &str, recorded: &str) -> Side {
    match side {
        Side::Ok { submit_ms, outcome_ms, outcome } => {
            Side::Ok { submit_ms, outcome_ms, outcome: restore_id(outcome, driven, recorded) }
        }
        Side::Error { submit_ms, error } => Side::Error { submit_ms, error: restore_id(error, driven, recorded) },
        lost @ Side::Lost { .. } => lost,
    }
}

fn wall_clock_of(at: Instant) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::celery::format_utc(now.saturating_sub(at.elapsed()))
}

fn json_len(value: &impl serde::Serialize) -> u64 {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len() as u64)
}

fn sample_now(
    counters: &Counters,
    shadow: &Shadow,
    in_flight: &Semaphore,
    concurrency: usize,
    started: Instant,
) -> DriveSample {
    DriveSample {
        at_s: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        submitted: counters.submitted.load(Ordering::Relaxed),
        judged: counters.done.load(Ordering::Relaxed),
        in_flight: concurrency.saturating_sub(in_flight.available_permits()) as u64,
        queue_depth: shadow.queue_depth(),
    }
}

/// Samples the counts and the queue depth every second until `stop`.
async fn sample(
    samples: Arc<Mutex<Vec<DriveSample>>>,
    counters: Arc<Counters>,
    shadow: Arc<Shadow>,
    in_flight: Arc<Semaphore>,
    concurrency: usize,
    started: Instant,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sample = sample_now(&counters, &shadow, &in_flight, concurrency, started);
        // A std mutex: one push per second, never across an await.
        let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() >= MAX_SAMPLES {
            let thinned: Vec<DriveSample> = samples.iter().step_by(2).cloned().collect();
            *samples = thinned;
        }
        samples.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_echoed_driven_id_is_put_back_to_the_recorded_one() {
        let side = Side::Ok {
            submit_ms: 1.0,
            outcome_ms: 2.0,
            outcome: json!({"eval_id": "e-1-drive-a-3", "stdout": "e-1-drive-a-3 ran", "n": [ "e-1-drive-a-3" ]}),
        };
        let back = map_id_back(side, "e-1-drive-a-3", "e-1");
        assert_eq!(
            back,
            Side::Ok {
                submit_ms: 1.0,
                outcome_ms: 2.0,
                outcome: json!({"eval_id": "e-1", "stdout": "e-1-drive-a-3 ran", "n": ["e-1"]})
            }
        );
        let lost = Side::Lost { submit_ms: None, waited_ms: 1.0, last_state: Some("e-1-drive-a-3".into()) };
        assert_eq!(map_id_back(lost.clone(), "e-1-drive-a-3", "e-1"), lost);
    }

    #[test]
    fn the_driven_id_goes_where_the_route_reads_it() {
        let mut request = json!({"eval_id": "e-1", "code": "x"});
        set_at(&mut request, &["eval_id".into()], json!("e-1-drive-a-1"));
        assert_eq!(request, json!({"eval_id": "e-1-drive-a-1", "code": "x"}));
        let mut nested = json!({"meta": [{"id": 1}]});
        set_at(&mut nested, &["meta".into(), "0".into(), "id".into()], json!("d"));
        assert_eq!(nested, json!({"meta": [{"id": "d"}]}));
        set_at(&mut nested, &["new".into(), "id".into()], json!("d"));
        assert_eq!(nested["new"], json!({"id": "d"}));
    }
}
