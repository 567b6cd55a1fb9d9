//! The breaker: after N consecutive shadow failures, stop mirroring for a cool-down, then
//! let one probe through. A shadow that keeps failing must not be fed more work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state, as exposed in metrics (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Mirroring normally.
    Closed,
    /// Paused until the cool-down ends.
    Open,
    /// One probe is in flight; its result closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The state's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The state as a gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    trips: u64,
}

/// A consecutive-failure breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    // A std mutex: every section is a few assignments and never awaits.
    inner: Mutex<Inner>,
    /// What the state means for the next submission, readable without the lock (see
    /// [`Breaker::refuses`]): [`GATE_CLOSED`], [`GATE_PROBING`], or the end of the
    /// cool-down in milliseconds since `epoch`. Written under the lock.
    gate: AtomicU64,
    epoch: Instant,
}

/// [`Breaker::gate`]: mirroring normally.
const GATE_CLOSED: u64 = 0;
/// [`Breaker::gate`]: a probe is in flight.
const GATE_PROBING: u64 = u64::MAX;

impl Breaker {
    /// Opens after `threshold` consecutive failures (0 disables it) for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                open_until: None,
                trips: 0,
            }),
            gate: AtomicU64::new(GATE_CLOSED),
            epoch: Instant::now(),
        }
    }

    /// Whether the breaker would refuse a submission now, without taking its lock: open
    /// with its cool-down still running, or half-open with the probe in flight. The proxy
    /// asks this before it copies a submission; [`Breaker::allow`] decides for the ones
    /// that get through.
    pub fn refuses(&self, now: Instant) -> bool {
        match self.gate.load(Ordering::Relaxed) {
            GATE_CLOSED => false,
            GATE_PROBING => true,
            until => (now.saturating_duration_since(self.epoch).as_millis() as u64) < until,
        }
    }

    /// Keeps the gate in step with `inner` (called with the lock held).
    fn set_gate(&self, inner: &Inner) {
        let gate = match (inner.state, inner.open_until) {
            (BreakerState::Closed, _) => GATE_CLOSED,
            (BreakerState::HalfOpen, _) => GATE_PROBING,
            // Rounded down: the gate opens no later than `allow` would let the probe by.
            (BreakerState::Open, Some(until)) => {
                (until.saturating_duration_since(self.epoch).as_millis() as u64).clamp(1, GATE_PROBING - 1)
            }
            (BreakerState::Open, None) => GATE_CLOSED,
        };
        self.gate.store(gate, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// May this evaluation be mirrored now? Moves an open breaker whose cool-down ended
    /// to half-open and lets exactly that one evaluation through as the probe.
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => {
                if inner.open_until.is_some_and(|until| now >= until) {
                    inner.state = BreakerState::HalfOpen;
                    self.set_gate(&inner);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records the end of a mirrored evaluation.
    pub fn record(&self, failed: bool, now: Instant) {
        let mut inner = self.lock();
        if failed {
            inner.consecutive_failures += 1;
            let trip = inner.state == BreakerState::HalfOpen
                || (self.threshold > 0
                    && inner.consecutive_failures >= self.threshold
                    && inner.state == BreakerState::Closed);
            if trip {
                inner.state = BreakerState::Open;
                inner.open_until = Some(now + self.cooldown);
                inner.trips += 1;
                self.set_gate(&inner);
            }
        } else {
            inner.consecutive_failures = 0;
            if inner.state == BreakerState::HalfOpen {
                inner.state = BreakerState::Closed;
                inner.open_until = None;
                self.set_gate(&inner);
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// How many times it opened.
    pub fn trips(&self) -> u64 {
        self.lock().trips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        breaker.record(true, t0);
        breaker.record(true, t0);
        breaker.record(false, t0);
        breaker.record(true, t0);
        breaker.record(true, t0);
        assert_eq!(breaker.state(), BreakerState::Closed, "a success resets the count");
        breaker.record(true, t0);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.refuses(t0 + Duration::from_secs(4)), "the gate is shut in the cool-down");
        assert!(!breaker.allow(t0 + Duration::from_secs(4)));
        assert!(!breaker.refuses(t0 + Duration::from_secs(5)), "the gate lets the probe by");
        assert!(breaker.allow(t0 + Duration::from_secs(5)), "the probe");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.refuses(t0 + Duration::from_secs(5)), "the gate is shut while it probes");
        assert!(!breaker.allow(t0 + Duration::from_secs(5)), "only one probe");
        breaker.record(true, t0 + Duration::from_secs(6));
        assert_eq!(breaker.state(), BreakerState::Open, "a failed probe reopens");
        assert!(breaker.refuses(t0 + Duration::from_secs(10)));
        assert!(breaker.allow(t0 + Duration::from_secs(11)));
        breaker.record(false, t0 + Duration::from_secs(12));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(!breaker.refuses(t0 + Duration::from_secs(12)), "closed, the gate is open");
        assert_eq!(breaker.trips(), 2);
    }

    #[test]
    fn zero_threshold_never_opens() {
        let breaker = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            breaker.record(true, Instant::now());
        }
        assert!(breaker.allow(Instant::now()));
        assert!(!breaker.refuses(Instant::now()));
    }
}
