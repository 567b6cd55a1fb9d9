//! The shadow system: where a mirrored evaluation goes and how its final outcome comes back.
//!
//! Two kinds share one interface, so that sampling, bounding, correlation, deadlines,
//! comparison, report and recording are built once: a second HTTP upstream ([`http`]), or
//! Celery tasks written straight into Redis ([`celery`]).

pub mod celery;
pub mod http;

use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use crate::fixture::Side;

/// One evaluation to mirror.
#[derive(Debug, Clone)]
pub struct Job {
    /// The evaluation id.
    pub eval_id: String,
    /// The code to run.
    pub code: String,
    /// Its language.
    pub language: String,
    /// The request path the client used.
    pub path: String,
    /// The request body as the client sent it.
    pub body: Bytes,
    /// The request body, parsed.
    pub request: Value,
    /// When the proxy received the client's request.
    pub received_at: Instant,
}

/// What the shadow did with a job.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowRun {
    /// A side to judge, and how many retries the shadow reported on the way.
    Side {
        /// The shadow side.
        side: Side,
        /// Celery `RETRY` states seen.
        retries: u32,
    },
    /// The shadow could not take the job at all (its transport is down): not mirrored.
    Unavailable(String),
}

impl ShadowRun {
    /// A side with no retries.
    pub fn side(side: Side) -> ShadowRun {
        ShadowRun::Side { side, retries: 0 }
    }
}

/// The configured shadow.
pub enum Shadow {
    /// A second HTTP upstream.
    Http(http::HttpShadow),
    /// Celery over Redis.
    Celery(celery::CeleryShadow),
}

impl Shadow {
    /// Runs one job to its final shadow outcome (or error, or loss).
    pub async fn run(&self, job: &Job) -> ShadowRun {
        match self {
            Shadow::Http(shadow) => shadow.run(job).await,
            Shadow::Celery(shadow) => shadow.run(job).await,
        }
    }

    /// Whether mirroring should pause now (the Celery queue too deep, Redis down).
    pub fn paused(&self) -> Option<crate::live::state::NotMirrored> {
        match self {
            Shadow::Http(_) => None,
            Shadow::Celery(shadow) => shadow.paused(),
        }
    }

    /// Submissions the shadow accepted.
    pub fn submitted(&self) -> u64 {
        match self {
            Shadow::Http(shadow) => shadow.submitted(),
            Shadow::Celery(shadow) => shadow.gauges.submitted.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Approximate bytes of Celery results left in Redis (`delete_results = false`).
    pub fn retained_result_bytes(&self) -> Option<u64> {
        match self {
            Shadow::Http(_) => None,
            Shadow::Celery(shadow) => {
                Some(shadow.gauges.retained_result_bytes.load(std::sync::atomic::Ordering::Relaxed))
            }
        }
    }

    /// The Celery queue depth, for a Celery shadow.
    pub fn queue_depth(&self) -> Option<u64> {
        match self {
            Shadow::Http(_) => None,
            Shadow::Celery(shadow) => Some(shadow.gauges.queue_depth.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }
}

/// Milliseconds between two instants.
pub fn ms_between(start: Instant, end: Instant) -> f64 {
    end.saturating_duration_since(start).as_secs_f64() * 1000.0
}
