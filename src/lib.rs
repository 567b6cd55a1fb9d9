//! shadowdiff: a shadow-traffic comparison proxy for moving evaluations from a legacy HTTP
//! queue to Celery on Redis.
//!
//! The pure core (no sockets) is [`fixture`] → [`verdict`]/[`compare`] → [`stats`] →
//! [`report`], driven by [`engine::Engine`]; [`replay`] feeds it recorded fixtures.

pub mod admin;
pub mod celery;
pub mod cli;
pub mod compare;
pub mod config;
pub mod engine;
pub mod example;
pub mod fixture;
mod fixture_fast;
pub mod histogram;
pub mod http_client;
pub mod json;
pub mod live;
pub mod metrics;
pub mod mirror;
pub mod normalize;
pub mod outcome;
pub mod pointer;
pub mod proxy;
pub mod readiness;
pub mod record;
pub mod replay;
pub mod report;
pub mod serve;
pub mod shadow;
pub mod stats;
pub mod verdict;
pub mod view;
