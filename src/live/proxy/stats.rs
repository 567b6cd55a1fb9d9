//! Counters of the forwarding path, shared with whoever reports them.
//!
//! Plain atomics: the hot path only adds, readers take a [`ProxyStatsSnapshot`] by value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Live counters of one proxy listener. Share it as `Arc<ProxyStats>`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    requests_total: AtomicU64,
    legacy_unreachable_total: AtomicU64,
    legacy_timeout_total: AtomicU64,
    in_flight: AtomicU64,
    client_errors_total: AtomicU64,
    accept_errors_total: AtomicU64,
}

/// A point-in-time copy of [`ProxyStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStatsSnapshot {
    /// Requests received from clients.
    pub requests_total: u64,
    /// Requests answered 502 because the legacy upstream could not be reached.
    pub legacy_unreachable_total: u64,
    /// Requests answered 504 because the legacy response head came too late.
    pub legacy_timeout_total: u64,
    /// Requests whose response has not finished streaming to the client yet.
    pub in_flight: u64,
    /// Requests the client broke (malformed or slow body, left mid-body): answered 400 or
    /// 408, never counted as legacy faults.
    pub client_errors_total: u64,
    /// Failed `accept` calls on the proxy and admin listeners (e.g. out of descriptors).
    pub accept_errors_total: u64,
}

impl ProxyStats {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies every counter. Each is read atomically; together they are a near-instant view.
    pub fn snapshot(&self) -> ProxyStatsSnapshot {
        ProxyStatsSnapshot {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            legacy_unreachable_total: self.legacy_unreachable_total.load(Ordering::Relaxed),
            legacy_timeout_total: self.legacy_timeout_total.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            client_errors_total: self.client_errors_total.load(Ordering::Relaxed),
            accept_errors_total: self.accept_errors_total.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_unreachable(&self) {
        self.legacy_unreachable_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_timeout(&self) {
        self.legacy_timeout_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_client_error(&self) {
        self.client_errors_total.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter the listeners' accept loops add their failures to.
    pub fn accept_errors(&self) -> &AtomicU64 {
        &self.accept_errors_total
    }
}

/// Counts one request and keeps it in `in_flight` until dropped, which happens when its
/// response body is done (or abandoned).
pub(crate) struct InFlight(Arc<ProxyStats>);

impl InFlight {
    /// Counts a newly received request.
    pub(crate) fn start(stats: &Arc<ProxyStats>) -> Self {
        stats.requests_total.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
