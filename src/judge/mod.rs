//! The pure comparison core: from two sides of an evaluation to a verdict, statistics and
//! a readiness verdict.
//!
//! - [`pointer`](mod@pointer): JSON pointers and patterns with `*`, which name the fields rules apply to;
//! - [`normalize`]: text rules for stdout and stderr (line endings, blanks, masks);
//! - [`compare`]: structural comparison of two outcomes under the rules;
//! - [`verdict`]: the fate of one evaluation (match, mismatch, shadow error, lost, ...);
//! - [`example`]: bounded, redacted examples of mismatches with readable diffs;
//! - [`histogram`]: HDR latency histograms;
//! - [`breakdown`]: failures by kind (exception type, HTTP status, last state) with eval_ids;
//! - [`fields`]: how often each place was compared and differed;
//! - [`noise`]: places where the shadow differs from itself (double runs), and the `noise` verdict;
//! - [`timeline`]: verdicts and latency per minute (live) or per position (replay);
//! - [`stats`]: everything counted over many evaluations, merged by value;
//! - [`persist`]: the statistics as a document (Redis, restarts, fleets) and back;
//! - [`readiness`]: the success criteria judged on the statistics;
//! - [`engine`]: the one entry both drivers (replay and the live sidecar) call.
//!
//! Nothing here imports tokio, hyper, redis or [`crate::live`]: replay, benches and unit
//! tests drive it with no network.

pub mod breakdown;
pub mod compare;
pub mod engine;
pub mod example;
pub mod fields;
pub mod histogram;
pub mod noise;
pub mod normalize;
pub mod persist;
pub mod pointer;
pub mod readiness;
pub mod stats;
pub mod timeline;
pub mod verdict;
