//! The live sidecar: everything that talks to sockets.
//!
//! - [`serve`]: wires the parts together and shuts them down in order;
//! - [`proxy`]: the client's path to legacy, byte-exact, with a capped tee for the mirror;
//! - [`mirror`]: decides what is mirrored (route, sampling, breaker, caps) and runs it;
//! - [`shadow`]: the two shadow kinds, an HTTP upstream or Celery over Redis;
//! - [`outcome`]: waiting for a side's final outcome (poll, observe, response);
//! - [`state`]: the shared statistics and accounting behind one small handle;
//! - [`admin`] and [`metrics`]: `/report`, `/report.json`, `/metrics`, `/healthz`;
//! - [`login`]: the admin listener's login form and session cookies, for browsers;
//! - [`record`]: judged evaluations appended as fixture lines;
//! - [`drive`]: recorded evaluations sent again at a chosen pace, judged against the
//!   recorded other side (`shadowdiff drive`);
//! - [`fleet`]: this instance's state in Redis, and reports merged over every instance;
//! - [`legacy_queue`]: the legacy queue length, read from the legacy system;
//! - [`http1`]: keep-alive HTTP/1.1 connections to one upstream, on the caller's task:
//!   streamed for the proxy's legacy leg, whole-body for the mirror's own requests;
//! - [`http_client`]: the pooled HTTP client the mirror and outcome tracking share, over
//!   [`http1`]'s whole-body exchanges;
//! - [`listener`]: accepting under descriptor pressure, closing silent connections.
//!
//! Judging is not done here: every finished evaluation goes to [`crate::judge::engine`],
//! the same code replay uses.

pub mod admin;
mod body;
pub mod drive;
pub mod fleet;
pub mod http1;
pub mod http_client;
pub mod legacy_queue;
pub mod listener;
pub mod login;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod proxy;
pub mod record;
pub mod serve;
pub mod shadow;
pub mod state;
