//! Test support for the proxy: a scripted legacy upstream, a proxy on a free port with a
//! recording tap, and an HTTP/1.1 or HTTP/2 client. Everything binds 127.0.0.1:0.
//!
//! ```ignore
//! let legacy = upstream().route("/evaluations", reply(202).body(r#"{"status":"queued"}"#)).start().await;
//! let proxy = proxy_to(&legacy).via("1.1 shadowdiff").start().await;
//! let response = Client::http1().send(post(proxy.url("/evaluations"), "{}")).await;
//! ```

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shadowdiff::live::listener::ConnectionLimits;
use shadowdiff::live::proxy::{serve, Exchange, ProxyConfig, ProxyStats, ProxyStatsSnapshot, Tap};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Error type of streamed test bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type the test client sends.
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// `len` bytes of a recognisable, non-repeating-per-chunk pattern.
pub fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8 ^ ((i / 251) % 256) as u8).collect::<Vec<u8>>().into()
}

// ---------------------------------------------------------------------------------------
// The legacy upstream
// ---------------------------------------------------------------------------------------

/// Starts describing a legacy upstream.
pub fn upstream() -> UpstreamBuilder {
    UpstreamBuilder { routes: HashMap::new() }
}

/// A legacy upstream being described: path → scripted reply. Unknown paths get 404.
pub struct UpstreamBuilder {
    routes: HashMap<String, Reply>,
}

/// A scripted answer.
#[derive(Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(String, String)>,
    delay: Duration,
    steps: Vec<Step>,
    /// Chunked (no Content-Length) rather than one whole body.
    streamed: bool,
}

#[derive(Clone)]
enum Step {
    Send(Bytes),
    WaitFor(Arc<Notify>),
}

/// A reply with this status and, so far, no headers and an empty body.
pub fn reply(status: u16) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).expect("valid status"),
        headers: Vec::new(),
        delay: Duration::ZERO,
        steps: Vec::new(),
        streamed: false,
    }
}

impl Reply {
    /// Adds a header line (repeated names stay separate lines, in order).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The whole body, sent with a Content-Length.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.steps = vec![Step::Send(body.into())];
        self.streamed = false;
        self
    }

    /// Waits this long before sending the response head.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Streams `chunk` as one chunk of a chunked body (no Content-Length).
    pub fn send(mut self, chunk: impl Into<Bytes>) -> Self {
        self.steps.push(Step::Send(chunk.into()));
        self.streamed = true;
        self
    }

    /// Streams `body` in chunks of `chunk_size` bytes (no Content-Length).
    pub fn stream(mut self, body: Bytes, chunk_size: usize) -> Self {
        let mut offset = 0;
        while offset < body.len() {
            let end = (offset + chunk_size).min(body.len());
            self.steps.push(Step::Send(body.slice(offset..end)));
            offset = end;
        }
        self.streamed = true;
        self
    }

    /// Pauses the body until `gate` is notified.
    pub fn wait_for(mut self, gate: &Arc<Notify>) -> Self {
        self.steps.push(Step::WaitFor(Arc::clone(gate)));
        self.streamed = true;
        self
    }

    fn into_response(self) -> Response<TestBody> {
        let body = match (self.streamed, self.steps.as_slice()) {
            (true, _) => scripted_body(self.steps.clone()),
            (false, [Step::Send(whole)]) => Full::new(whole.clone()).map_err(|never| match never {}).boxed_unsync(),
            (false, _) => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        for (name, value) in &self.headers {
            response.headers_mut().append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                hyper::header::HeaderValue::from_str(value).expect("header value"),
            );
        }
        response
    }
}

fn scripted_body(steps: Vec<Step>) -> TestBody {
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Send(chunk) => return Some((Ok::<_, BoxError>(Frame::data(chunk)), steps)),
                Step::WaitFor(gate) => gate.notified().await,
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request method.
    pub method: Method,
    /// Request target as received (origin form).
    pub target: String,
    /// Protocol version on the upstream connection.
    pub version: Version,
    /// Request headers, in order.
    pub headers: HeaderMap,
    /// The whole request body.
    pub body: Bytes,
}

impl Seen {
    /// All values of `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().expect("ascii header").to_owned()).collect()
    }
}

#[derive(Default)]
struct UpstreamState {
    routes: HashMap<String, Reply>,
    seen: Mutex<Vec<Seen>>,
    /// Number of requests whose head has arrived.
    heads: watch::Sender<usize>,
    /// Request body bytes received so far, over all requests.
    body_bytes: watch::Sender<usize>,
    connections: AtomicUsize,
}

/// A running legacy upstream (HTTP/1.1 only, like `api-service`).
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl UpstreamBuilder {
    /// Answers requests for `path` (query ignored) with `reply`.
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.insert(path.to_owned(), reply);
        self
    }

    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState { routes: self.routes, ..UpstreamState::default() });
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&state), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state, task }
    }
}

async fn answer(state: Arc<UpstreamState>, request: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let (parts, mut body) = request.into_parts();
    state.heads.send_modify(|n| *n += 1);
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            received.extend_from_slice(data);
            state.body_bytes.send_modify(|n| *n += data.len());
        }
    }
    state.seen.lock().expect("seen lock").push(Seen {
        method: parts.method.clone(),
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: received.into(),
    });
    let reply = state.routes.get(parts.uri.path()).cloned().unwrap_or_else(|| reply(404).body("no route"));
    tokio::time::sleep(reply.delay).await;
    Ok(reply.into_response())
}

impl Upstream {
    /// `http://127.0.0.1:port`, for the proxy config.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The only request received so far; fails the test if there were not exactly one.
    pub fn only_request(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "upstream should have seen exactly one request");
        seen.into_iter().next().expect("one request")
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until `count` request heads have arrived.
    pub async fn wait_for_requests(&self, count: usize) {
        let mut heads = self.state.heads.subscribe();
        within("upstream request heads", heads.wait_for(|n| *n >= count)).await.expect("upstream alive");
    }

    /// Waits until at least `bytes` request body bytes have arrived.
    pub async fn wait_for_body_bytes(&self, bytes: usize) {
        let mut received = self.state.body_bytes.subscribe();
        within("upstream body bytes", received.wait_for(|n| *n >= bytes)).await.expect("upstream alive");
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address with nothing listening on it (bound, then released).
pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------

/// Starts describing a proxy in front of `upstream`.
pub fn proxy_to(upstream: &Upstream) -> ProxyBuilder {
    proxy_to_base(&upstream.base())
}

/// Starts describing a proxy in front of the legacy base URI `base`.
pub fn proxy_to_base(base: &str) -> ProxyBuilder {
    ProxyBuilder {
        config: ProxyConfig {
            legacy: base.parse().expect("legacy uri"),
            legacy_timeout: Duration::from_secs(5),
            via: None,
            forwarded_headers: false,
            max_capture_bytes: 1 << 20,
            limits: ConnectionLimits::default(),
        },
        tap: RecordingTap::capturing(|_, _| false),
    }
}

/// A proxy being described.
pub struct ProxyBuilder {
    config: ProxyConfig,
    tap: Arc<RecordingTap>,
}

impl ProxyBuilder {
    /// Sets the time allowed for the legacy response head.
    pub fn legacy_timeout(mut self, timeout: Duration) -> Self {
        self.config.legacy_timeout = timeout;
        self
    }

    /// Sets the `Via` value to append.
    pub fn via(mut self, via: &str) -> Self {
        self.config.via = Some(via.to_owned());
        self
    }

    /// Adds `X-Forwarded-For` and `X-Forwarded-Proto`.
    pub fn forwarded_headers(mut self) -> Self {
        self.config.forwarded_headers = true;
        self
    }

    /// Sets the header and idle timeouts of client connections.
    pub fn timeouts(mut self, header: Duration, idle: Duration) -> Self {
        self.config.limits = ConnectionLimits { header_timeout: header, idle_timeout: idle };
        self
    }

    /// Caps each captured body copy.
    pub fn capture_cap(mut self, bytes: usize) -> Self {
        self.config.max_capture_bytes = bytes;
        self
    }

    /// Uses `tap` to decide and receive captures.
    pub fn tap(mut self, tap: &Arc<RecordingTap>) -> Self {
        self.tap = Arc::clone(tap);
        self
    }

    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(self) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let stats = Arc::new(ProxyStats::new());
        let shutdown = CancellationToken::new();
        let tap: Arc<dyn Tap> = self.tap;
        let task = tokio::spawn(serve(listener, self.config, tap, Arc::clone(&stats), shutdown.clone()));
        Proxy { addr, stats, shutdown, task: Some(task) }
    }
}

/// A running proxy.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    stats: Arc<ProxyStats>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The proxy's counters now.
    pub fn stats(&self) -> ProxyStatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits until no request is in flight (hyper drops finished bodies a moment after
    /// the client has read them), then returns the counters.
    pub async fn settled_stats(&self) -> ProxyStatsSnapshot {
        within("in-flight requests to settle", async {
            while self.stats.snapshot().in_flight != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        self.stats.snapshot()
    }

    /// Asks the proxy to stop accepting and drain.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for `serve` to return and gives its result.
    pub async fn finished(&mut self) -> std::io::Result<()> {
        let task = self.task.take().expect("proxy still running");
        within("serve to return", task).await.expect("serve task did not panic")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Which requests a [`RecordingTap`] captures: `(method, path_and_query) -> capture?`.
pub type CapturePredicate = dyn Fn(&Method, &str) -> bool + Send + Sync;

/// A tap that captures what its predicate selects and records everything it is told.
pub struct RecordingTap {
    wanted: Box<CapturePredicate>,
    asked: Mutex<Vec<(Method, String)>>,
    sender: mpsc::UnboundedSender<Exchange>,
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Exchange>>,
}

impl RecordingTap {
    /// Captures the requests for which `wanted(method, path_and_query)` is true.
    pub fn capturing(wanted: impl Fn(&Method, &str) -> bool + Send + Sync + 'static) -> Arc<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        Arc::new(Self {
            wanted: Box::new(wanted),
            asked: Mutex::new(Vec::new()),
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
        })
    }

    /// Captures every request.
    pub fn capturing_everything() -> Arc<Self> {
        Self::capturing(|_, _| true)
    }

    /// Every `capture` question asked so far, in order.
    pub fn asked(&self) -> Vec<(Method, String)> {
        self.asked.lock().expect("asked lock").clone()
    }

    /// The next delivered exchange; fails the test if none comes.
    pub async fn next_exchange(&self) -> Exchange {
        let mut receiver = self.receiver.lock().await;
        within("an exchange from the tap", receiver.recv()).await.expect("tap sender alive")
    }

    /// Fails the test if another exchange is delivered within `wait`.
    pub async fn assert_no_more_exchanges(&self, wait: Duration) {
        let mut receiver = self.receiver.lock().await;
        if let Ok(Some(extra)) = tokio::time::timeout(wait, receiver.recv()).await {
            panic!("unexpected extra exchange: {} {}", extra.method, extra.path_and_query);
        }
    }
}

impl Tap for RecordingTap {
    fn capture(&self, method: &Method, path_and_query: &str) -> bool {
        self.asked.lock().expect("asked lock").push((method.clone(), path_and_query.to_owned()));
        (self.wanted)(method, path_and_query)
    }

    fn exchange(&self, exchange: Exchange) {
        let _ = self.sender.send(exchange);
    }
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// A keep-alive test client.
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, TestBody>,
}

impl Client {
    /// Speaks HTTP/1.1.
    pub fn http1() -> Self {
        Self { inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Speaks HTTP/2 with prior knowledge (no upgrade dance).
    pub fn http2() -> Self {
        Self { inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http() }
    }

    /// Sends `request`; fails the test on a transport error.
    pub async fn send(&self, request: Request<TestBody>) -> Response<Incoming> {
        within("the response head", self.inner.request(request)).await.expect("request through the proxy")
    }
}

/// A request with an empty body.
pub fn request(method: Method, url: &str) -> Request<TestBody> {
    with_body(method, url, Bytes::new())
}

/// A request with a whole body (sent with Content-Length).
pub fn with_body(method: Method, url: &str, body: impl Into<Bytes>) -> Request<TestBody> {
    let mut request = Request::new(Full::new(body.into()).map_err(|never| match never {}).boxed_unsync());
    *request.method_mut() = method;
    *request.uri_mut() = url.parse().expect("request url");
    request
}

/// A POST whose body is fed chunk by chunk through the returned sender (chunked encoding).
pub fn streaming_post(url: &str) -> (mpsc::Sender<Bytes>, Request<TestBody>) {
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(chunk)), receiver))
    });
    let mut request = Request::new(StreamBody::new(stream).boxed_unsync());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.parse().expect("request url");
    (sender, request)
}

/// Reads the whole response body.
pub async fn body_of(response: Response<Incoming>) -> Bytes {
    within("the response body", response.into_body().collect()).await.expect("response body").to_bytes()
}

/// All values of header `name` in `response`, in order.
pub fn header_values<B>(response: &Response<B>, name: &str) -> Vec<String> {
    response.headers().get_all(name).iter().map(|v| v.to_str().expect("ascii header").to_owned()).collect()
}
