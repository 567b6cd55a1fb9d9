//! What the proxy hands over after a captured exchange: the [`Tap`] trait and the
//! [`Exchange`] record it receives.
//!
//! The tap is the only way shadow-side code sees live traffic. It is called on the
//! client's own connection task, so it must return at once: the mirror behind it is
//! expected to `try_send` the record into a bounded channel and count what it drops.

use std::time::Duration;

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};

use super::client::ClientFault;

/// Decides which exchanges are captured and receives them once they are over.
pub trait Tap: Send + Sync + 'static {
    /// From the request head only: should this exchange's bodies be captured?
    ///
    /// Called once per request, before anything is sent to the legacy upstream. Requests
    /// answered `false` are forwarded with no copying at all.
    fn capture(&self, method: &Method, path_and_query: &str) -> bool;

    /// Called exactly once per captured exchange, after the last byte of the response body
    /// has been handed to the client's connection, or when the exchange ended otherwise
    /// (legacy failure, timeout, client gone). Must not block and must not panic.
    fn exchange(&self, exchange: Exchange);
}

/// One captured request/response pair, as the client and the legacy upstream saw it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The client's request method.
    pub method: Method,
    /// The client's request target (path and query), as sent.
    pub path_and_query: String,
    /// The client's request headers, hop-by-hop fields removed, before the proxy added
    /// any (`Via`, `X-Forwarded-*`).
    pub headers: HeaderMap,
    /// The request body the client sent, as far as the legacy upstream consumed it.
    pub request_body: Captured,
    /// What the legacy upstream answered, or why it did not.
    pub outcome: LegacyOutcome,
    /// From the request head being received to the legacy response head (or the failure).
    pub submit: Duration,
}

/// A body copy taken while the body streamed through, capped in size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    /// The whole body, byte for byte.
    Complete(Bytes),
    /// The body grew past `max_capture_bytes`; the copy was dropped (the body itself was
    /// still forwarded whole).
    TooLarge,
    /// The body did not reach its end: the stream failed, the peer went away, or the
    /// legacy upstream stopped reading it before the exchange ended.
    Failed,
}

/// What the legacy upstream did with a captured request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyOutcome {
    /// A response head arrived; the body is the copy of what was streamed to the client.
    Response {
        /// The legacy status code, forwarded unchanged.
        status: StatusCode,
        /// The response body copy; [`Captured::Failed`] if the client went away or the
        /// legacy stream broke before the end.
        body: Captured,
    },
    /// No response head: connection refused, reset, or another transport error. The client
    /// got a 502. The text is the error chain, for logs and reports.
    Unreachable(String),
    /// No response head within `legacy_timeout`. The client got a 504.
    Timeout,
    /// The exchange was abandoned before the legacy response head arrived (the runtime
    /// shut down). A client that leaves after sending its whole request does not cancel
    /// the exchange: the legacy request goes on and its response is captured.
    Cancelled,
    /// The client broke its own request (malformed body, left mid-body, body too slow): it
    /// got a 400 or 408, and the legacy upstream is not to blame.
    ClientError(ClientFault),
}
