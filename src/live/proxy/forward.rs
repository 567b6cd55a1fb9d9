//! One request, client to legacy and back: rewrite the head, stream the bodies (teed when
//! captured), turn legacy failures into 502/504, and hand captured exchanges to the tap.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, VIA};
use hyper::http::uri::{InvalidUriParts, PathAndQuery};
use hyper::http::Extensions;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tracing::debug;

use super::capture::{ExchangeRecord, PendingExchange, Tee};
use super::client::{BodyState, ClientBody, ClientFault};
use super::headers;
use super::stats::{InFlight, ProxyStats};
use super::tap::{LegacyOutcome, Tap};
use super::LegacyTarget;
use crate::live::http1::{self, error_chain, Pool, PoolConfig, ResponseBody};
use crate::live::listener::Busy;

/// How long an idle pooled connection to the legacy upstream is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on idle pooled connections to the legacy upstream (the pool has one host).
const POOL_MAX_IDLE: usize = 512;

const UNREACHABLE_BODY: &[u8] = br#"{"error":"legacy upstream unreachable"}"#;
const TIMEOUT_BODY: &[u8] = br#"{"error":"legacy upstream timed out"}"#;
const BAD_TARGET_BODY: &[u8] = br#"{"error":"bad request target"}"#;
const MALFORMED_BODY: &[u8] = br#"{"error":"malformed or incomplete request body"}"#;
const SLOW_BODY: &[u8] = br#"{"error":"request body too slow"}"#;
const CONNECT_BODY: &[u8] = br#"{"error":"CONNECT is not supported"}"#;

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
    /// The client broke its own request body; legacy is not to blame.
    #[error("client fault: {}", .0.as_str())]
    Client(ClientFault),
}

impl ForwardError {
    fn status_and_body(&self) -> (StatusCode, &'static [u8]) {
        match self {
            Self::Unreachable(_) => (StatusCode::BAD_GATEWAY, UNREACHABLE_BODY),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, TIMEOUT_BODY),
            Self::Target(_) => (StatusCode::BAD_REQUEST, BAD_TARGET_BODY),
            Self::Client(ClientFault::Slow) => (StatusCode::REQUEST_TIMEOUT, SLOW_BODY),
            Self::Client(ClientFault::Malformed | ClientFault::Gone) => (StatusCode::BAD_REQUEST, MALFORMED_BODY),
        }
    }

    fn outcome(&self) -> LegacyOutcome {
        match self {
            Self::Unreachable(reason) => LegacyOutcome::Unreachable(reason.clone()),
            Self::Timeout(_) => LegacyOutcome::Timeout,
            Self::Target(error) => LegacyOutcome::Unreachable(error.to_string()),
            Self::Client(fault) => LegacyOutcome::ClientError(*fault),
        }
    }
}

/// The client at the other end of a connection, as its requests are forwarded.
pub(crate) struct Peer {
    /// Its `X-Forwarded-For` entry, made once per connection.
    forwarded_for: Option<HeaderValue>,
}

impl Peer {
    pub(crate) fn new(address: SocketAddr) -> Peer {
        Peer { forwarded_for: headers::forwarded_for(address.ip()) }
    }
}

/// The body of the request as sent to legacy.
type RequestBody = Tee<ClientBody<Incoming>>;

/// The request as sent to legacy.
type LegacyRequest = Request<RequestBody>;

/// The legacy response body, its connection going back to the pool at its end.
type LegacyBody = ResponseBody;

/// What the legacy leg of a request came to: the response (its body teed when captured).
type LegacyResult = Result<Response<Tee<LegacyBody>>, ForwardError>;

/// Per-listener forwarding state, shared by every connection.
pub(crate) struct Forwarder {
    pool: Pool,
    legacy: LegacyTarget,
    tap: Arc<dyn Tap>,
    stats: Arc<ProxyStats>,
}

impl Forwarder {
    /// Builds the pool of keep-alive HTTP/1.1 connections to the legacy upstream.
    pub(crate) fn new(legacy: LegacyTarget, tap: Arc<dyn Tap>, stats: Arc<ProxyStats>) -> Self {
        let pool = Pool::new(
            &legacy.authority,
            PoolConfig {
                max_idle: POOL_MAX_IDLE,
                idle_timeout: POOL_IDLE_TIMEOUT,
                tcp_keepalive: Some(POOL_IDLE_TIMEOUT),
            },
            None,
        );
        Self { pool, legacy, tap, stats }
    }

    /// Forwards one client request and returns the response to send back. Never fails:
    /// legacy failures become 502/504 responses, client faults 400/408, `CONNECT` 405.
    ///
    /// A client that leaves after sending its whole request does not cancel a captured
    /// request's legacy leg ([`CapturedLeg`]): its exchange is still delivered with the
    /// legacy response.
    pub(crate) async fn forward(self: Arc<Self>, request: Request<Incoming>, client: &Peer) -> Response<ProxyBody> {
        let received = Instant::now();
        let in_flight = InFlight::start(&self.stats);
        if request.method() == Method::CONNECT {
            debug!("CONNECT refused");
            return fixed_response(StatusCode::METHOD_NOT_ALLOWED, CONNECT_BODY, in_flight);
        }
        let (parts, body) = request.into_parts();
        let body_state = BodyState::default();
        let body = ClientBody::new(body, body_state.clone());

        let path_and_query = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let record = self.tap.capture(&parts.method, path_and_query).then(|| {
            ExchangeRecord::new(Arc::clone(&self.tap), parts.method.clone(), path_and_query.to_owned(), received)
        });
        let body = match &record {
            Some(record) => Tee::recording(body, self.legacy.max_capture_bytes, record.request_sink()),
            None => Tee::plain(body),
        };
        let mut record = record;
        let request = self.legacy_request(parts, body, client, record.as_mut());
        let result = match (request, record) {
            (Err(error), record) => {
                if let Some(record) = record {
                    record.deliver(error.outcome(), received.elapsed());
                }
                Err(error)
            }
            (Ok(request), None) => {
                let result = self.send(request, &body_state).await;
                result.map(|response| self.relay(response, None, received.elapsed()))
            }
            (Ok(request), Some(record)) => {
                let leg = Arc::clone(&self).captured_leg(request, record, body_state, received);
                CapturedLeg { leg: Some(Box::pin(leg)), timeout: self.legacy.timeout }.await
            }
        };
        let submit = received.elapsed();
        match result {
            Ok(response) => {
                debug!(status = response.status().as_u16(), submit_us = submit.as_micros() as u64, "legacy answered");
                response.map(|body| ProxyBody { kind: Kind::Legacy(body), _in_flight: in_flight, _busy: None })
            }
            Err(error) => {
                debug!(%error, submit_us = submit.as_micros() as u64, "no legacy answer");
                local_response(&error, in_flight)
            }
        }
    }

    /// The legacy leg of a captured exchange (see [`CapturedLeg`]): the response, its body
    /// teed, or the failure, the exchange delivered with it.
    async fn captured_leg(
        self: Arc<Self>,
        request: LegacyRequest,
        record: ExchangeRecord,
        body_state: BodyState,
        received: Instant,
    ) -> LegacyResult {
        // Dropped before the head arrives (the runtime shutting down): delivered as cancelled.
        let mut pending = PendingExchange::new(Some(record));
        let result = self.send(request, &body_state).await;
        let submit = received.elapsed();
        match result {
            Ok(response) => Ok(self.relay(response, pending.take(), submit)),
            Err(error) => {
                if let Some(record) = pending.take() {
                    record.deliver(error.outcome(), submit);
                }
                Err(error)
            }
        }
    }

    /// Sends to the legacy upstream and waits, within the timeout, for the response head.
    /// A failure is blamed on the client when its body broke or had not ended.
    async fn send(&self, request: LegacyRequest, body: &BodyState) -> Result<Response<LegacyBody>, ForwardError> {
        let (parts, request_body) = request.into_parts();
        let sent = self.pool.send_streamed(&parts, request_body);
        let error = match tokio::time::timeout(self.legacy.timeout, sent).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(error)) => match body.fault() {
                Some(fault) => ForwardError::Client(fault),
                None => ForwardError::Unreachable(error_chain(&error)),
            },
            Err(_elapsed) if !body.complete() => ForwardError::Client(ClientFault::Slow),
            Err(_elapsed) => ForwardError::Timeout(self.legacy.timeout),
        };
        match &error {
            ForwardError::Unreachable(_) => self.stats.count_unreachable(),
            ForwardError::Timeout(_) => self.stats.count_timeout(),
            ForwardError::Client(_) => self.stats.count_client_error(),
            ForwardError::Target(_) => {}
        }
        Err(error)
    }

    /// The client's request re-addressed to the legacy upstream, as HTTP/1.1; the record
    /// (if captured) keeps the client's headers as they were before the proxy's additions.
    fn legacy_request(
        &self,
        mut parts: hyper::http::request::Parts,
        body: Tee<ClientBody<Incoming>>,
        client: &Peer,
        record: Option<&mut ExchangeRecord>,
    ) -> Result<LegacyRequest, ForwardError> {
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
        if let Some(record) = record {
            record.set_headers(parts.headers.clone());
        }
        if let Some(via) = &self.legacy.via {
            headers::append_to_list(&mut parts.headers, VIA, via.clone());
        }
        if self.legacy.forwarded_headers {
            headers::add_forwarded(&mut parts.headers, client.forwarded_for.as_ref());
        }

        // Origin form: the pool sends to the legacy upstream, with the Host set above (or
        // the upstream's own when the client sent none).
        let mut uri = hyper::http::uri::Parts::default();
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
        response: Response<LegacyBody>,
        record: Option<ExchangeRecord>,
        submit: Duration,
    ) -> Response<Tee<LegacyBody>> {
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
        Response::from_parts(parts, body)
    }
}

/// The legacy leg of a captured exchange, run by the request's own task where it is
/// awaited. A client that leaves after sending its whole request (its handler dropped
/// before the legacy response head) does not cancel it: the leg is then finished on a task
/// of its own, and the response body read to its end within the legacy timeout, so that
/// the exchange is delivered with it.
struct CapturedLeg {
    /// `None` once it has finished.
    leg: Option<Pin<Box<dyn Future<Output = LegacyResult> + Send>>>,
    timeout: Duration,
}

impl Future for CapturedLeg {
    type Output = LegacyResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LegacyResult> {
        let Some(leg) = self.leg.as_mut() else {
            return Poll::Ready(Err(ForwardError::Unreachable("legacy leg polled after its end".into())));
        };
        let result = ready!(leg.as_mut().poll(cx));
        self.leg = None;
        Poll::Ready(result)
    }
}

impl Drop for CapturedLeg {
    fn drop(&mut self) {
        let Some(leg) = self.leg.take() else { return };
        // Without a runtime (it is shutting down) the leg is dropped, and its pending record
        // delivers the exchange as cancelled.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let timeout = self.timeout;
        runtime.spawn(async move {
            if let Ok(response) = leg.await {
                debug!("client left after its request; reading the legacy response for the mirror");
                let _ = tokio::time::timeout(timeout, response.into_body().collect()).await;
            }
        });
    }
}

/// Our own short JSON answer for a request the legacy upstream did not answer.
fn local_response(error: &ForwardError, in_flight: InFlight) -> Response<ProxyBody> {
    let (status, body) = error.status_and_body();
    fixed_response(status, body, in_flight)
}

/// A short JSON answer of our own.
fn fixed_response(status: StatusCode, body: &'static [u8], in_flight: InFlight) -> Response<ProxyBody> {
    let body = ProxyBody { kind: Kind::Local(Full::new(Bytes::from_static(body))), _in_flight: in_flight, _busy: None };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The body of every response the proxy sends: the legacy stream, or a local error body.
/// Holds the request's in-flight count (and its connection's busy mark) until hyper drops it.
pub(crate) struct ProxyBody {
    kind: Kind,
    _in_flight: InFlight,
    _busy: Option<Busy>,
}

impl ProxyBody {
    /// Keeps the connection marked busy until this body is done.
    pub(crate) fn with_busy(mut self, busy: Busy) -> Self {
        self._busy = Some(busy);
        self
    }
}

enum Kind {
    Legacy(Tee<LegacyBody>),
    Local(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = http1::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, http1::Error>>> {
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
