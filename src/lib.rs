//! shadowdiff: a shadow-traffic comparison proxy for moving evaluations from a legacy HTTP
//! queue to Celery on Redis.
//!
//! The pure core (no sockets) is [`fixture`] → [`verdict`]/[`compare`] → [`stats`] →
//! [`report`], driven by [`engine::Engine`]; [`replay`] feeds it recorded fixtures.

pub mod celery;
pub mod cli;
pub mod compare;
pub mod config;
pub mod engine;
pub mod example;
pub mod fixture;
pub mod histogram;
pub mod normalize;
pub mod pointer;
pub mod readiness;
pub mod replay;
pub mod report;
pub mod stats;
pub mod verdict;
