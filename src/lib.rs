//! shadowdiff: a shadow-traffic comparison proxy for moving evaluations from a legacy HTTP
//! queue to Celery on Redis.
//!
//! The folders are the architecture:
//!
//! | folder | what it holds | IO |
//! |---|---|---|
//! | [`fixture`] | the recorded-evaluation format: owned and borrowed forms, the line reader, JSON documents | none (reads from any `BufRead`) |
//! | [`judge`] | comparison rules, verdicts, learned noise, statistics, histograms, readiness, the [`judge::engine::Engine`] | none |
//! | [`config`] | `config.toml` → raw serde structs → validated [`config::Config`] | reads the file |
//! | [`report`] | the report model and its JSON, HTML and text renderings | none |
//! | [`celery`] | the Celery protocol v2 wire format (pure), the Redis broker client and how every Redis is reached: TLS, ACL users, Sentinel (IO) | `celery::broker`, `celery::redis_target` only |
//! | [`live`] | the sidecar: proxy, mirror, shadows, outcome tracking, admin listener, metrics, recording; `drive` (recordings sent again) | sockets, Redis |
//! | [`cli`] | the commands: `replay` (the offline driver), `check-config`, `serve`, `drive` | files, process |
//!
//! Dependencies point one way: [`fixture`] and [`judge`] never import [`live`], [`celery`],
//! tokio, hyper or redis, so replay, the benches and the unit tests drive the same engine as
//! the live sidecar with no network. [`live`] and [`cli`] sit on top and may use everything
//! below them.

pub mod celery;
pub mod cli;
pub mod config;
pub mod fixture;
pub mod judge;
pub mod live;
pub mod report;
