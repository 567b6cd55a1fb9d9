//! One request, client to legacy and back: rewrite the head, stream the bodies (teed when
//! captured), turn legacy failures into 502/504, and hand captured exchanges to the tap.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, VIA};
use hyper::http::uri::{InvalidUriParts, PathAndQuery};
use hyper::http::Extensions;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::debug;

use super::capture::{ExchangeRecord, PendingExchange, Tee};
use super::headers;
use super::stats::{InFlight, ProxyStats};
use super::tap::{LegacyOutcome, Tap};
use super::LegacyTarget;

/// How long an idle pooled connection to the legacy upstream is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on idle pooled connections to the legacy upstream (the pool has one host).
const POOL_MAX_IDLE: usize = 512;

const UNREACHABLE_BODY: &[u8] = br#"{"error":"legacy upstream unreachable"}"#;
const TIMEOUT_BODY: &[u8] = br#"{"error":"legacy upstream timed out"}"#;
const BAD_TARGET_BODY: &[u8] = br#"{"error":"bad request target"}"#;

/// Why a request got no legacy response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// Connect, send or read failed before a response head (refused, reset, closed).
    #[error("legacy upstream unreachable: {0}")]
    Unreachable(String),
    /// The response head did not arrive within the configured timeout.
    #[error("legacy upstream sent no response head within {0:?}")]
    Timeout(Duration),
    /// The client's request target cannot be re-addressed to the legacy upstream.
    #[error("request target cannot be forwarded: {0}")]
    Target(#[from] InvalidUriParts),
}

impl ForwardError {
    fn status_and_body(&self) -> (StatusCode, &'static [u8]) {
        match self {
            Self::Unreachable(_) => (StatusCode::BAD_GATEWAY, UNREACHABLE_BODY),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, TIMEOUT_BODY),
            Self::Target(_) => (StatusCode::BAD_REQUEST, BAD_TARGET_BODY),
        }
    }

    fn outcome(&self) -> LegacyOutcome {
        match self {
            Self::Unreachable(reason) => LegacyOutcome::Unreachable(reason.clone()),
            Self::Timeout(_) => LegacyOutcome::Timeout,
            Self::Target(error) => LegacyOutcome::Unreachable(error.to_string()),
        }
    }
}

/// Per-listener forwarding state, shared by every connection.
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Tee<Incoming>>,
    legacy: LegacyTarget,
    tap: Arc<dyn Tap>,
    stats: Arc<ProxyStats>,
}

impl Forwarder {
    /// Builds the pooled keep-alive HTTP/1.1 client to the legacy upstream.
    pub(crate) fn new(legacy: LegacyTarget, tap: Arc<dyn Tap>, stats: Arc<ProxyStats>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(POOL_IDLE_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        Self { client, legacy, tap, stats }
    }

    /// Forwards one client request and returns the response to send back. Never fails:
    /// legacy failures become 502/504 responses.
    pub(crate) async fn forward(&self, request: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let received = Instant::now();
        let in_flight = InFlight::start(&self.stats);
        let (parts, body) = request.into_parts();

        let path_and_query = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let record = self.tap.capture(&parts.method, path_and_query).then(|| {
            ExchangeRecord::new(Arc::clone(&self.tap), parts.method.clone(), path_and_query.to_owned(), received)
        });
        let body = match &record {
            Some(record) => Tee::recording(body, self.legacy.max_capture_bytes, record.request_sink()),
            None => Tee::plain(body),
        };
        // From here on, dropping this future (client gone) still delivers the exchange.
        let mut pending = PendingExchange::new(record);

        let result = match self.legacy_request(parts, body, client) {
            Ok(request) => self.send(request).await,
            Err(error) => Err(error),
        };
        let submit = received.elapsed();
        match result {
            Ok(response) => {
                debug!(status = response.status().as_u16(), submit_us = submit.as_micros() as u64, "legacy answered");
                self.relay(response, pending.take(), submit, in_flight)
            }
            Err(error) => {
                debug!(%error, submit_us = submit.as_micros() as u64, "legacy failed");
                if let Some(record) = pending.take() {
                    record.deliver(error.outcome(), submit);
                }
                local_response(&error, in_flight)
            }
        }
    }

    /// Sends to the legacy upstream and waits, within the timeout, for the response head.
    async fn send(&self, request: Request<Tee<Incoming>>) -> Result<Response<Incoming>, ForwardError> {
        match tokio::time::timeout(self.legacy.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                self.stats.count_unreachable();
                Err(ForwardError::Unreachable(error_chain(&error)))
            }
            Err(_elapsed) => {
                self.stats.count_timeout();
                Err(ForwardError::Timeout(self.legacy.timeout))
            }
        }
    }

    /// The client's request re-addressed to the legacy upstream, as HTTP/1.1.
    fn legacy_request(
        &self,
        mut parts: hyper::http::request::Parts,
        body: Tee<Incoming>,
        client: SocketAddr,
    ) -> Result<Request<Tee<Incoming>>, ForwardError> {
        // Host is forwarded as the client sent it. HTTP/2 clients send `:authority`
        // instead, which becomes Host; with neither, hyper sets the legacy authority.
        if !parts.headers.contains_key(HOST) {
            if let Some(authority) = parts.uri.authority() {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    parts.headers.insert(HOST, host);
                }
            }
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(via) = &self.legacy.via {
            headers::append_to_list(&mut parts.headers, VIA, via.clone());
        }
        if self.legacy.forwarded_headers {
            headers::add_forwarded(&mut parts.headers, client.ip());
        }

        let mut uri = hyper::http::uri::Parts::default();
        uri.scheme = Some(self.legacy.scheme.clone());
        uri.authority = Some(self.legacy.authority.clone());
        uri.path_and_query =
            Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        parts.uri = Uri::from_parts(uri)?;
        parts.version = Version::HTTP_11;
        // Server-side extensions (upgrade handles and the like) mean nothing upstream.
        parts.extensions = Extensions::new();
        Ok(Request::from_parts(parts, body))
    }

    /// The legacy response, cleaned of hop-by-hop fields, streaming through a tee.
    fn relay(
        &self,
        response: Response<Incoming>,
        record: Option<ExchangeRecord>,
        submit: Duration,
        in_flight: InFlight,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(via) = &self.legacy.via {
            headers::append_to_list(&mut parts.headers, VIA, via.clone());
        }
        // Framing is the client connection's business: hyper picks it per client version.
        parts.version = Version::HTTP_11;
        parts.extensions = Extensions::new();
        let body = match record {
            Some(record) => {
                let sink = record.response_sink(parts.status, submit);
                Tee::recording(body, self.legacy.max_capture_bytes, sink)
            }
            None => Tee::plain(body),
        };
        Response::from_parts(parts, ProxyBody { kind: Kind::Legacy(body), _in_flight: in_flight })
    }
}

/// Our own short JSON answer for a request the legacy upstream did not answer.
fn local_response(error: &ForwardError, in_flight: InFlight) -> Response<ProxyBody> {
    let (status, body) = error.status_and_body();
    let body = ProxyBody { kind: Kind::Local(Full::new(Bytes::from_static(body))), _in_flight: in_flight };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `error: cause: cause`, so that "connection refused" survives into logs and reports.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The body of every response the proxy sends: the legacy stream, or a local error body.
/// Holds the request's in-flight count until hyper drops it.
pub(crate) struct ProxyBody {
    kind: Kind,
    _in_flight: InFlight,
}

enum Kind {
    Legacy(Tee<Incoming>),
    Local(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Legacy(body) => Pin::new(body).poll_frame(cx),
            Kind::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Legacy(body) => body.is_end_stream(),
            Kind::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Legacy(body) => body.size_hint(),
            Kind::Local(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_keeps_every_cause() {
        let error = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(error_chain(&error), "outer: refused");
    }

    #[test]
    fn failures_map_to_their_status_and_exact_body() {
        let unreachable = ForwardError::Unreachable("x".into());
        assert_eq!(unreachable.status_and_body(), (StatusCode::BAD_GATEWAY, UNREACHABLE_BODY));
        assert_eq!(unreachable.outcome(), LegacyOutcome::Unreachable("x".into()));
        let timeout = ForwardError::Timeout(Duration::from_millis(5));
        assert_eq!(timeout.status_and_body(), (StatusCode::GATEWAY_TIMEOUT, TIMEOUT_BODY));
        assert_eq!(timeout.outcome(), LegacyOutcome::Timeout);
    }
}
