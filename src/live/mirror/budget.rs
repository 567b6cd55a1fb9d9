//! The byte budget of pending evaluations (`shadow.max_pending_bytes`).
//!
//! Every byte held for an evaluation between the proxy and its judgment is reserved here
//! first: the captured bodies while they wait in the hand-off, then what the evaluation
//! keeps for the shadow and the report, plus a Celery message kept to remove it from the
//! queue. A submission that does not fit is not mirrored (`memory_budget`), so whatever the
//! shadow does (stall, refuse, vanish) the sidecar's memory stays bounded. Lock-free: the
//! proxy's tap reserves on the client's path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes held and their cap. Share it as `Arc<Budget>`.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    held: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget { limit, held: AtomicU64::new(0) })
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reserves `bytes` if they fit under the cap.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.take(bytes).then(|| Reservation { budget: Arc::clone(self), bytes: AtomicU64::new(bytes) })
    }

    /// Adds `bytes` to what is held if the total stays under the cap.
    fn take(&self, bytes: u64) -> bool {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let Some(wanted) = held.checked_add(bytes).filter(|total| *total <= self.limit) else { return false };
            match self.held.compare_exchange_weak(held, wanted, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }
}

/// Bytes reserved for one evaluation; released when dropped. Both sides of an evaluation
/// may grow it while they run, hence the atomic.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: AtomicU64,
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Sets the reservation to `bytes`, what the evaluation holds now. Shrinking always
    /// succeeds; growing past the cap fails and leaves the reservation as it was.
    pub fn resize(&self, bytes: u64) -> bool {
        let current = self.bytes();
        if bytes <= current {
            self.budget.held.fetch_sub(current - bytes, Ordering::AcqRel);
            self.bytes.fetch_sub(current - bytes, Ordering::AcqRel);
            return true;
        }
        self.grow(bytes - current)
    }

    /// Adds `extra` bytes if they fit under the cap.
    pub fn grow(&self, extra: u64) -> bool {
        if self.budget.take(extra) {
            self.bytes.fetch_add(extra, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(*self.bytes.get_mut(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_under_the_cap_and_are_released() {
        let budget = Budget::new(100);
        let a = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(41).is_none());
        let b = budget.try_reserve(40).expect("fits exactly");
        assert_eq!(budget.held(), 100);
        assert!(b.resize(10));
        assert_eq!(budget.held(), 70);
        assert!(!b.resize(41), "60 + 41 > 100");
        assert!(b.resize(40));
        assert_eq!(budget.held(), 100);
        drop(a);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
