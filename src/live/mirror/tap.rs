//! The proxy side of the hand-off: which exchanges are captured, and a `try_send` of each
//! into the bounded channel. It runs on the client's connection task, so it only matches
//! routes, bumps atomics and never waits.

use std::sync::Arc;

use hyper::Method;
use tokio::sync::mpsc;

use super::budget::{Budget, Reservation};
use super::Mirror;
use crate::config::live::{LiveConfig, OutcomeMode, Route};
use crate::live::outcome;
use crate::live::proxy::{Captured, Exchange, LegacyOutcome, Tap};
use crate::live::state::Live;

/// What crosses the hand-off.
#[derive(Debug)]
pub enum Handoff {
    /// A submission on the route with this index, and the bytes reserved for it; `None`
    /// when it did not fit in `shadow.max_pending_bytes` (its bodies were dropped).
    Submission(usize, Exchange, Option<Reservation>),
    /// A client's own poll of a legacy result (observe mode).
    Observation(Exchange),
}

/// The [`Tap`] shadowdiff installs in the proxy.
pub struct MirrorTap {
    routes: Vec<Route>,
    observe: Option<crate::config::live::OutcomeRule>,
    sender: mpsc::Sender<Handoff>,
    live: Arc<Live>,
    budget: Arc<Budget>,
    /// The mirror it feeds, asked whether it would refuse everything now.
    mirror: Arc<Mirror>,
}

impl MirrorTap {
    /// A tap handing exchanges to `sender`, which `mirror` drains.
    pub fn new(
        config: &LiveConfig,
        sender: mpsc::Sender<Handoff>,
        live: Arc<Live>,
        budget: Arc<Budget>,
        mirror: Arc<Mirror>,
    ) -> MirrorTap {
        let observe = (config.legacy_outcome.mode == OutcomeMode::Observe).then(|| config.legacy_outcome.clone());
        MirrorTap { routes: config.routes.clone(), observe, sender, live, budget, mirror }
    }

    fn route(&self, method: &Method, path_and_query: &str) -> Option<usize> {
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        self.routes.iter().position(|r| r.method == method.as_str() && r.path == path)
    }

    fn observed(&self, method: &Method, path_and_query: &str) -> bool {
        *method == Method::GET
            && self.observe.as_ref().is_some_and(|rule| outcome::eval_id_from_path(rule, path_and_query).is_some())
    }
}

impl Tap for MirrorTap {
    fn capture(&self, method: &Method, path_and_query: &str) -> bool {
        if self.route(method, path_and_query).is_none() {
            return self.observed(method, path_and_query);
        }
        // Where the mirror would refuse it anyway (sampling at 0 %, the rollback; the
        // in-flight cap reached; a stalled shadow) a submission costs the client's path one
        // count, and no copy.
        match self.mirror.refuses_all() {
            Some(why) => {
                self.live.submission_skipped(why);
                false
            }
            None => true,
        }
    }

    fn exchange(&self, exchange: Exchange) {
        match self.route(&exchange.method, &exchange.path_and_query) {
            Some(index) => {
                self.live.submission_seen();
                let mut exchange = exchange;
                let reservation = self.budget.try_reserve(held_bytes(&exchange));
                if reservation.is_none() {
                    // Not mirrored anyway: do not hold its bodies in the hand-off.
                    exchange.request_body = Captured::TooLarge;
                    if let LegacyOutcome::Response { body, .. } = &mut exchange.outcome {
                        *body = Captured::TooLarge;
                    }
                }
                if self.sender.try_send(Handoff::Submission(index, exchange, reservation)).is_err() {
                    self.live.submission_dropped();
                }
            }
            // A dropped observation costs nothing but load: the legacy side falls back to polling.
            None => {
                let _ = self.sender.try_send(Handoff::Observation(exchange));
            }
        }
    }
}

/// The bytes an exchange holds while it waits in the hand-off: both body copies, the
/// headers and the target.
pub fn held_bytes(exchange: &Exchange) -> u64 {
    let body = |captured: &Captured| match captured {
        Captured::Complete(bytes) => bytes.len(),
        Captured::TooLarge | Captured::Failed => 0,
    };
    let response = match &exchange.outcome {
        LegacyOutcome::Response { body: captured, .. } => body(captured),
        _ => 0,
    };
    let headers: usize = exchange.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
    (body(&exchange.request_body) + response + headers + exchange.path_and_query.len()) as u64
}
