//! The live state shared by the proxy's tap, the mirror, and the admin listener.
//!
//! One small handle ([`Live`]) hides its lock: the statistics and the accounting of every
//! submission sit behind one `std::sync::Mutex`, held only for counter updates and
//! snapshot copies (never across an `.await`). The tap on the client's path touches only
//! atomics. Readers render from a [`Snapshot`], never from live state.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fixture::view::EvaluationRef;
use crate::fixture::Evaluation;
use crate::judge::engine::Engine;
use crate::judge::histogram::Latency;
use crate::judge::noise::SecondRun;
use crate::judge::stats::Stats;
use crate::judge::timeline::Moment;
use crate::judge::verdict::Verdict;
use crate::live::mirror::breaker::Breaker;
use crate::live::mirror::sampling::Sampler;

/// Why a submission was not mirrored. Every submission is either judged, pending, or
/// counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotMirrored {
    /// The hand-off to the mirror was full.
    MirrorQueueFull,
    /// The request body exceeded `proxy.max_mirror_body_bytes`.
    BodyTooLarge,
    /// The request or response body did not arrive whole.
    BodyIncomplete,
    /// The request body (or response, for ids the API assigns) is not JSON.
    BodyNotJson,
    /// No `eval_id` where the route says.
    MissingEvalId,
    /// No `code` where the route says.
    MissingCode,
    /// No `language` where the route says.
    MissingLanguage,
    /// The legacy upstream was unreachable or timed out (the client got 502/504).
    LegacyError,
    /// The legacy upstream refused the submission (non-2xx).
    LegacyRejected,
    /// Not in the sampled fraction.
    SampledOut,
    /// The breaker is open after consecutive shadow failures.
    BreakerOpen,
    /// `shadow.max_in_flight` evaluations were already in flight.
    InFlightCap,
    /// The Celery queue is deeper than `shadow.celery.max_queue_depth`.
    QueueDepth,
    /// The shadow could not take the submission (e.g. Redis down).
    ShadowUnavailable,
    /// shadowdiff was shutting down.
    ShuttingDown,
    /// The client broke its request (malformed or slow body, left mid-body): answered 400
    /// or 408 by the proxy, never reached legacy whole.
    ClientError,
    /// Holding it would take the bytes held for pending evaluations past
    /// `shadow.max_pending_bytes`.
    MemoryBudget,
    /// The Celery result could not be read (not JSON: a worker with another
    /// `result_serializer`), so the two sides cannot be compared.
    ShadowUnreadable,
    /// The outcome deadline had passed before shadowdiff could push the task (its own
    /// backlog), so the task was not sent: a push then could only be counted lost, and
    /// blame Celery for shadowdiff's delay.
    SubmitLate,
    /// The HTTP shadow had a submission in flight on each of its
    /// `shadow.http.max_connections` connections and as many more waiting for one: it is
    /// not keeping up, or has stopped answering.
    ShadowBusy,
}

impl NotMirrored {
    /// The reason's label in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NotMirrored::MirrorQueueFull => "mirror_queue_full",
            NotMirrored::BodyTooLarge => "body_too_large",
            NotMirrored::BodyIncomplete => "body_incomplete",
            NotMirrored::BodyNotJson => "body_not_json",
            NotMirrored::MissingEvalId => "missing_eval_id",
            NotMirrored::MissingCode => "missing_code",
            NotMirrored::MissingLanguage => "missing_language",
            NotMirrored::LegacyError => "legacy_error",
            NotMirrored::LegacyRejected => "legacy_rejected",
            NotMirrored::SampledOut => "sampled_out",
            NotMirrored::BreakerOpen => "breaker_open",
            NotMirrored::InFlightCap => "in_flight_cap",
            NotMirrored::QueueDepth => "queue_depth",
            NotMirrored::ShadowUnavailable => "shadow_unavailable",
            NotMirrored::ShuttingDown => "shutting_down",
            NotMirrored::ClientError => "client_error",
            NotMirrored::MemoryBudget => "memory_budget",
            NotMirrored::ShadowUnreadable => "shadow_unreadable",
            NotMirrored::SubmitLate => "submit_late",
            NotMirrored::ShadowBusy => "shadow_busy",
        }
    }
}

/// The reasons the tap can tell from the request head that the mirror would refuse a
/// submission, so that it is not copied at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Sampling is at 0 %.
    SampledOut,
    /// The HTTP shadow has stalled.
    ShadowBusy,
    /// `shadow.max_in_flight` evaluations are in flight.
    InFlightCap,
    /// The breaker is open (or probing) after consecutive shadow failures.
    BreakerOpen,
}

impl Skip {
    /// Every reason, in counter order.
    pub const ALL: [Skip; 4] = [Skip::SampledOut, Skip::ShadowBusy, Skip::InFlightCap, Skip::BreakerOpen];

    /// The reason it is counted under.
    pub fn reason(self) -> NotMirrored {
        match self {
            Skip::SampledOut => NotMirrored::SampledOut,
            Skip::ShadowBusy => NotMirrored::ShadowBusy,
            Skip::InFlightCap => NotMirrored::InFlightCap,
            Skip::BreakerOpen => NotMirrored::BreakerOpen,
        }
    }
}

/// Where every submission the proxy saw went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// Submissions seen on the client's path.
    pub submissions: u64,
    /// Judged: counted in the report's totals.
    pub judged: u64,
    /// Handed to the mirror and not judged yet (in the hand-off or in flight).
    pub pending: u64,
    /// Not mirrored, by reason.
    pub not_mirrored: BTreeMap<Cow<'static, str>, u64>,
    /// Pending evaluations given up at shutdown.
    pub abandoned: u64,
    /// Celery `RETRY` states seen while waiting.
    pub shadow_retries: u64,
}

impl Accounting {
    /// `submissions == judged + pending + abandoned + Σ not_mirrored`.
    pub fn balanced(&self) -> bool {
        self.submissions == self.judged + self.pending + self.abandoned + self.not_mirrored.values().sum::<u64>()
    }
}

/// A consistent copy of the live state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The statistics.
    pub stats: Stats,
    /// Where every submission went.
    pub accounting: Accounting,
    /// Time spent deciding whether and where each submission is mirrored.
    pub selection: Latency,
}

struct Inner {
    stats: Stats,
    accounting: Accounting,
    /// Submissions the mirror has taken out of the hand-off and counted somewhere. Kept
    /// under the lock with the counts, so a snapshot never sees one without the other.
    received: u64,
    selection: Latency,
    /// Submissions an earlier process of this instance accounted for (resumed at start).
    resumed_submissions: u64,
    /// Of the lock-free counters, what belongs to earlier windows.
    seen_before: u64,
    dropped_before: u64,
    skipped_before: [u64; Skip::ALL.len()],
}

/// The shared live state.
pub struct Live {
    engine: Engine,
    /// The sampling fraction.
    pub sampler: Sampler,
    /// The failure breaker.
    pub breaker: Breaker,
    // Lock-free counters for the tap, which runs on the client's path.
    seen: AtomicU64,
    dropped: AtomicU64,
    /// Submissions the tap did not copy, by [`Skip`] reason.
    skipped: [AtomicU64; Skip::ALL.len()],
    // Held for counter updates and snapshot copies only; no `.await` inside.
    inner: Mutex<Inner>,
    /// When this run started.
    started_at: SystemTime,
}

impl Live {
    /// Fresh state for an engine.
    pub fn new(engine: Engine, sampler: Sampler, breaker: Breaker) -> Live {
        let stats = engine.new_stats().by_minute();
        Live {
            engine,
            sampler,
            breaker,
            seen: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            skipped: Default::default(),
            started_at: SystemTime::now(),
            inner: Mutex::new(Inner {
                stats,
                accounting: Accounting::default(),
                received: 0,
                selection: Latency::default(),
                resumed_submissions: 0,
                seen_before: 0,
                dropped_before: 0,
                skipped_before: [0; Skip::ALL.len()],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When this run started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The engine that judges.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The tap saw a submission (lock-free).
    pub fn submission_seen(&self) {
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    /// The tap saw a submission and did not copy it, the mirror being sure to refuse it
    /// for `why` (lock-free): it is not mirrored for that reason, whatever its body or
    /// legacy's answer.
    pub fn submission_skipped(&self, why: Skip) {
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Submissions skipped, by reason, since the counters' start.
    fn skipped(&self) -> [u64; Skip::ALL.len()] {
        std::array::from_fn(|i| self.skipped[i].load(Ordering::Acquire))
    }

    /// The tap could not hand a submission over (lock-free).
    pub fn submission_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The mirror took a submission out of the hand-off and does not mirror it.
    pub fn not_mirrored(&self, reason: NotMirrored) {
        let mut inner = self.lock();
        inner.received += 1;
        *inner.accounting.not_mirrored.entry(Cow::Borrowed(reason.as_str())).or_default() += 1;
    }

    /// The mirror took a submission out of the hand-off and mirrors it: pending now.
    pub fn mirrored(&self) {
        let mut inner = self.lock();
        inner.received += 1;
        inner.accounting.pending += 1;
    }

    /// The mirror took a submission out of the hand-off and decided in `took` whether it
    /// is mirrored: pending now, or not mirrored for a reason (one lock for both counts).
    pub fn selected(&self, decision: Result<(), NotMirrored>, took: Duration) {
        let mut inner = self.lock();
        inner.selection.record_ms(took.as_secs_f64() * 1000.0);
        inner.received += 1;
        match decision {
            Ok(()) => inner.accounting.pending += 1,
            Err(reason) => *inner.accounting.not_mirrored.entry(Cow::Borrowed(reason.as_str())).or_default() += 1,
        }
    }

    /// A pending evaluation turned out not mirrored after all (the shadow was unavailable).
    pub fn unmirror(&self, reason: NotMirrored) {
        let mut inner = self.lock();
        inner.accounting.pending = inner.accounting.pending.saturating_sub(1);
        *inner.accounting.not_mirrored.entry(Cow::Borrowed(reason.as_str())).or_default() += 1;
    }

    /// A pending evaluation is judged; returns its verdict. A double run's second outcome
    /// is learned from first, so the evaluation's own run counts toward the noise it may
    /// be judged by; it is counted nowhere else.
    pub fn judged(&self, evaluation: &Evaluation, shadow_retries: u32, second: SecondRun) -> Verdict {
        self.judged_ref(&evaluation.view(), shadow_retries, second)
    }

    /// [`Live::judged`] for a borrowed evaluation, viewed once to judge, learn and count.
    pub fn judged_ref(&self, evaluation: &EvaluationRef<'_>, shadow_retries: u32, second: SecondRun) -> Verdict {
        let verdict = self.engine.judge_ref(evaluation);
        self.count_judged(evaluation, verdict, shadow_retries, second)
    }

    /// [`Live::judged_ref`] for an evaluation the engine has judged already: `verdict` is
    /// what [`Engine::judge_ref`] said of it (judging never reads the request, so the
    /// request may have been added to the view since, for a mismatch's example).
    pub fn count_judged(
        &self,
        evaluation: &EvaluationRef<'_>,
        verdict: Verdict,
        shadow_retries: u32,
        second: SecondRun,
    ) -> Verdict {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut inner = self.lock();
        self.engine.learn_ref(&mut inner.stats, evaluation, &second);
        let verdict = inner.stats.noise.reclassify(verdict);
        inner.stats.record_ref_at(evaluation, &verdict, self.engine.rule_names(), Moment::Unix(now));
        inner.accounting.pending = inner.accounting.pending.saturating_sub(1);
        inner.accounting.judged += 1;
        inner.accounting.shadow_retries += u64::from(shadow_retries);
        verdict
    }

    /// Takes over the totals of an earlier run of this instance (read back at start).
    pub fn resume(&self, stats: Stats, accounting: Accounting) {
        let mut inner = self.lock();
        inner.stats = stats.learning(self.engine.config().noise);
        // What was pending then is not pending in this process: it was given up.
        inner.accounting.abandoned += accounting.pending + accounting.abandoned;
        inner.accounting.judged += accounting.judged;
        inner.accounting.shadow_retries += accounting.shadow_retries;
        for (reason, count) in accounting.not_mirrored {
            *inner.accounting.not_mirrored.entry(reason).or_default() += count;
        }
        inner.resumed_submissions += accounting.submissions;
    }

    /// Starts the comparison from zero (a new window): statistics and accounting.
    ///
    /// Evaluations in flight at the switch are carried into the new window as submissions
    /// still pending, so every one is accounted for in exactly one window.
    pub fn reset(&self) {
        let mut inner = self.lock();
        let seen = self.seen.load(Ordering::Acquire) - inner.seen_before;
        let dropped = self.dropped.load(Ordering::Acquire) - inner.dropped_before;
        let skipped_now = self.skipped();
        let skipped: u64 = skipped_now.iter().zip(inner.skipped_before).map(|(now, before)| now - before).sum();
        let in_hand_off = seen.saturating_sub(dropped + skipped).saturating_sub(inner.received);
        let in_flight = inner.accounting.pending;
        inner.seen_before += seen.saturating_sub(in_hand_off + in_flight);
        inner.dropped_before += dropped;
        inner.skipped_before = skipped_now;
        inner.received = 0;
        inner.resumed_submissions = 0;
        inner.stats = self.engine.new_stats().by_minute();
        inner.accounting = Accounting { pending: in_flight, ..Accounting::default() };
        inner.selection = Latency::default();
    }

    /// Pending evaluations given up at shutdown.
    pub fn abandon_pending(&self) -> u64 {
        let mut inner = self.lock();
        let pending = inner.accounting.pending;
        inner.accounting.pending = 0;
        inner.accounting.abandoned += pending;
        pending
    }

    /// A consistent copy for reports and metrics.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut accounting = inner.accounting.clone();
        let stats = inner.stats.clone();
        let received = inner.received;
        let selection = inner.selection.clone();
        let (resumed, seen_before, dropped_before, skipped_before) =
            (inner.resumed_submissions, inner.seen_before, inner.dropped_before, inner.skipped_before);
        drop(inner);
        // Read after the lock: the tap counts a submission as seen before handing it over,
        // so `seen >= dropped + received` holds here.
        let seen = self.seen.load(Ordering::Acquire).saturating_sub(seen_before);
        let dropped = self.dropped.load(Ordering::Acquire).saturating_sub(dropped_before);
        accounting.submissions = seen + resumed;
        if dropped > 0 {
            *accounting.not_mirrored.entry(Cow::Borrowed(NotMirrored::MirrorQueueFull.as_str())).or_default() +=
                dropped;
        }
        let mut skipped = 0;
        for ((why, now), before) in Skip::ALL.into_iter().zip(self.skipped()).zip(skipped_before) {
            let count = now.saturating_sub(before);
            if count > 0 {
                *accounting.not_mirrored.entry(Cow::Borrowed(why.reason().as_str())).or_default() += count;
            }
            skipped += count;
        }
        // Handed off but not yet taken by the mirror: pending too.
        accounting.pending += seen.saturating_sub(dropped + skipped).saturating_sub(received);
        Snapshot { stats, accounting, selection }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn live() -> Live {
        Live::new(Engine::new(Config::default()), Sampler::new(0.0), Breaker::new(5, std::time::Duration::from_secs(1)))
    }

    #[test]
    fn submissions_skipped_by_the_tap_are_counted_by_reason_in_their_window() {
        let live = live();
        live.submission_skipped(Skip::SampledOut);
        live.submission_skipped(Skip::SampledOut);
        live.submission_skipped(Skip::ShadowBusy);
        live.submission_seen();
        let accounting = live.snapshot().accounting;
        assert_eq!((accounting.submissions, accounting.pending), (4, 1));
        assert_eq!(accounting.not_mirrored.get("sampled_out"), Some(&2));
        assert_eq!(accounting.not_mirrored.get("shadow_busy"), Some(&1));
        assert!(accounting.balanced());

        live.reset();
        live.submission_skipped(Skip::InFlightCap);
        let accounting = live.snapshot().accounting;
        assert_eq!((accounting.submissions, accounting.pending), (2, 1), "the one in the hand-off carried over");
        assert_eq!(accounting.not_mirrored.len(), 1);
        assert_eq!(accounting.not_mirrored.get("in_flight_cap"), Some(&1));
        assert!(accounting.balanced());
    }
}
