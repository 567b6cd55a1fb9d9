//! The admin listener, kept apart from the proxied port: `/report` (HTML), `/report.json`,
//! `/metrics` (Prometheus text), `/healthz`, and `PUT /admin/sampling` to change the
//! mirrored fraction at run time. A bearer token, when configured, protects everything but
//! `/healthz`; changing the sampling always needs one.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::live::listener::{self, Activity, ConnectionLimits, TimedIo};
use crate::live::metrics::{self, LiveGauges};
use crate::live::mirror::Mirror;
use crate::live::proxy::ProxyStats;
use crate::live::state::Live;
use crate::report::{self, Report, Source};

/// What the admin handlers read.
pub struct AdminState {
    /// The live state.
    pub live: Arc<Live>,
    /// The proxy's counters.
    pub proxy: Arc<ProxyStats>,
    /// The mirror, for in-flight counts.
    pub mirror: Arc<Mirror>,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// The shadow, for its submission count and queue depth.
    pub shadow: Arc<crate::live::shadow::Shadow>,
    /// The byte budget of pending evaluations, for its gauge.
    pub budget: Arc<crate::live::mirror::budget::Budget>,
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    reply(status, "application/json", serde_json::json!({ "error": message }).to_string())
}

impl AdminState {
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        presented
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }

    /// The live report.
    pub fn report(&self) -> Report {
        let snapshot = self.live.snapshot();
        let mut report = Report::build(self.live.engine(), &snapshot.stats, Source { mode: "live", files: Vec::new() });
        report.accounting = Some(snapshot.accounting);
        report
    }

    fn metrics(&self) -> String {
        let live = LiveGauges {
            shadow_submitted: self.shadow.submitted(),
            queue_depth: self.shadow.queue_depth(),
            retained_result_bytes: self.shadow.retained_result_bytes(),
            in_flight: self.mirror.in_flight() as u64,
            breaker_state: self.live.breaker.state().as_gauge(),
            sampling_percent: self.live.sampler.percent(),
            pending_bytes: self.budget.held(),
            pending_bytes_limit: self.budget.limit(),
        };
        metrics::render(&self.live.snapshot(), &self.proxy.snapshot(), &live)
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_string();
        if request.method() == Method::GET && path == "/healthz" {
            return reply(StatusCode::OK, "text/plain", "ok\n");
        }
        if !self.authorized(&request) {
            return json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
        match (request.method().clone(), path.as_str()) {
            (Method::GET, "/report") => {
                reply(StatusCode::OK, "text/html; charset=utf-8", report::html::render(&self.report()))
            }
            (Method::GET, "/report.json") => reply(StatusCode::OK, "application/json", self.report().to_json()),
            (Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            (Method::PUT, "/admin/sampling") => self.set_sampling(request).await,
            _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    async fn set_sampling(&self, request: Request<Incoming>) -> Response<Body> {
        if self.token.is_none() {
            return json_error(StatusCode::FORBIDDEN, "set admin.token to change the sampling at run time");
        }
        let body = match Limited::new(request.into_body(), 4096).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return json_error(StatusCode::BAD_REQUEST, "body unreadable or over 4 KiB"),
        };
        let percent = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("percent").and_then(|p| p.as_f64()));
        match percent {
            Some(p) if (0.0..=100.0).contains(&p) => {
                self.live.sampler.set_percent(p);
                tracing::info!(percent = p, "sampling changed through the admin API");
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({ "percent": self.live.sampler.percent() }).to_string(),
                )
            }
            _ => json_error(StatusCode::BAD_REQUEST, "expected {\"percent\": 0..100}"),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the admin endpoints until `shutdown`, closing connections that stay silent past
/// `limits` (see [`listener`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener::accept(&listener, state.proxy.accept_errors()) => accepted,
        };
        let state = Arc::clone(&state);
        let builder = builder.clone();
        tokio::spawn(async move {
            let activity = Activity::new();
            let requests = Arc::clone(&activity);
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                let busy = requests.request(request.version() == hyper::Version::HTTP_2);
                async move {
                    let response = state.handle(request).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            });
            let io = TokioIo::new(TimedIo::new(stream, Arc::clone(&activity)));
            match listener::guard(builder.serve_connection(io, service), activity, limits).await {
                Some(Err(error)) => tracing::debug!(%error, "admin connection ended with an error"),
                Some(Ok(())) => {}
                None => tracing::debug!("admin connection closed: silent past its timeout"),
            }
        });
    }
}
