//! The admin listener, kept apart from the proxied port: `/report` (HTML), `/report.json`,
//! `/metrics` (Prometheus text), `/healthz`, and `PUT /admin/sampling` to change the
//! mirrored fraction at run time. A bearer token, when configured, protects everything but
//! `/healthz`; changing the sampling always needs one. Browsers get a login form instead
//! of a JSON 401 (`GET /login`, `POST /login`, `POST /logout`; see [`crate::live::login`]),
//! and `HEAD` answers like `GET` on every route, without the body.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE,
    LOCATION, SET_COOKIE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::live::ShadowKind;
use crate::live::fleet::{self, Member};
use crate::live::legacy_queue::QueueLength;
use crate::live::listener::{self, Activity, ConnectionLimits, TimedIo};
use crate::live::login::{self, constant_time_eq, Sessions};
use crate::live::metrics::{self, LiveGauges};
use crate::live::mirror::Mirror;
use crate::live::proxy::ProxyStats;
use crate::live::state::Live;
use crate::report::{self, LiveContext, Report, Source};

/// What the admin handlers read.
pub struct AdminState {
    /// The live state.
    pub live: Arc<Live>,
    /// The proxy's counters.
    pub proxy: Arc<ProxyStats>,
    /// This instance's part in the fleet, when `[fleet] redis_url` is set.
    pub fleet: Option<Arc<Member>>,
    /// The legacy queue length, when `[legacy] queue_length_url` is set.
    pub legacy_queue: Option<Arc<QueueLength>>,
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
    /// A bearer token, or (for reading only) a session opened by the login form.
    fn authorized_or_logged_in(&self, sessions: &Sessions, request: &Request<Incoming>) -> bool {
        self.authorized(request)
            || (request.method() == Method::GET
                && request
                    .headers()
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|cookie| login::session_in(cookie).is_some_and(|id| sessions.is_open(id))))
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        presented
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }

    /// What the page says about the sidecar itself.
    fn context(&self) -> LiveContext {
        let unix = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let config = self.mirror.config();
        LiveContext {
            as_of: unix(SystemTime::now()),
            since: unix(self.live.started_at()),
            sampling_percent: self.live.sampler.percent(),
            breaker: self.live.breaker.state().as_str(),
            shadow_kind: match config.shadow {
                ShadowKind::Celery(_) => "celery",
                ShadowKind::Http { .. } => "http",
            },
            legacy_outcome_mode: config.legacy_outcome.mode.as_str(),
            shadow_outcome_mode: config.shadow.outcome().mode.as_str(),
            celery_queue_length: self.shadow.queue_depth(),
            legacy_queue_length: self.legacy_queue.as_ref().and_then(|gauge| gauge.get()),
        }
    }

    /// The live report.
    pub fn report(&self) -> Report {
        let snapshot = self.live.snapshot();
        let mut report = Report::build(self.live.engine(), &snapshot.stats, Source { mode: "live", files: Vec::new() });
        report.accounting = Some(snapshot.accounting);
        report.live = Some(self.context());
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
            celery: self.shadow.queue_depth().is_some(),
            legacy_queue_length: self.legacy_queue.as_ref().and_then(|gauge| gauge.get()),
            pending_bytes: self.budget.held(),
            pending_bytes_limit: self.budget.limit(),
        };
        let snapshot = self.live.snapshot();
        let readiness = self.live.engine().readiness(&snapshot.stats);
        metrics::render(&snapshot, &self.proxy.snapshot(), &live, &readiness)
    }

    /// Answers `HEAD` as `GET`, with the same status and headers and no body.
    async fn handle(self: Arc<Self>, sessions: Arc<Sessions>, request: Request<Incoming>) -> Response<Body> {
        if request.method() != Method::HEAD {
            return self.answer(&sessions, request).await;
        }
        let (mut parts, body) = request.into_parts();
        parts.method = Method::GET;
        let (mut parts, body) = self.answer(&sessions, Request::from_parts(parts, body)).await.into_parts();
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.size_hint().exact().unwrap_or(0)));
        Response::from_parts(parts, Full::new(Bytes::new()))
    }

    async fn answer(&self, sessions: &Sessions, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_string();
        if request.method() == Method::GET && path == "/healthz" {
            return reply(StatusCode::OK, "text/plain", "ok\n");
        }
        match (request.method(), path.as_str()) {
            (&Method::GET, "/login") => return self.login_page(false),
            (&Method::POST, "/login") => return self.log_in(sessions, request).await,
            (&Method::POST, "/logout") => return log_out(sessions, &request),
            _ => {}
        }
        if !self.authorized_or_logged_in(sessions, &request) {
            let browser =
                request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
            let mut response = if browser && request.method() == Method::GET {
                self.login_page(false)
            } else {
                json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            };
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"shadowdiff\""));
            return response;
        }
        let fleet_scope = request.uri().query().is_some_and(|q| q.split('&').any(|pair| pair == "scope=fleet"));
        match (request.method().clone(), path.as_str()) {
            (Method::GET, "/report" | "/report.json") if fleet_scope => match self.fleet_report().await {
                Ok(report) if path == "/report" => {
                    reply(StatusCode::OK, "text/html; charset=utf-8", report::html::render(&report))
                }
                Ok(report) => reply(StatusCode::OK, "application/json", report.to_json()),
                Err(response) => response,
            },
            (Method::GET, "/report") => {
                reply(StatusCode::OK, "text/html; charset=utf-8", report::html::render(&self.report()))
            }
            (Method::GET, "/report.json") => reply(StatusCode::OK, "application/json", self.report().to_json()),
            (Method::POST, "/admin/window") => self.new_window().await,
            (Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            (Method::PUT, "/admin/sampling") => self.set_sampling(request).await,
            _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    /// The report merged over every instance of this sidecar's run and window.
    async fn fleet_report(&self) -> Result<Report, Response<Body>> {
        let Some(member) = &self.fleet else {
            return Err(json_error(StatusCode::CONFLICT, "scope=fleet needs [fleet] redis_url"));
        };
        let window = member.window();
        let states = member
            .fleet()
            .load_all(window)
            .await
            .map_err(|error| json_error(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()))?;
        let run = &self.mirror.config().fleet.as_ref().map_or("default", |f| f.run.as_str()).to_owned();
        Ok(fleet::merged_report(self.live.engine(), run, window, states, SystemTime::now()))
    }

    /// `POST /admin/window`: a new comparison window for the whole run.
    async fn new_window(&self) -> Response<Body> {
        if self.token.is_none() {
            return json_error(StatusCode::FORBIDDEN, "set admin.token to start a new window");
        }
        let Some(member) = &self.fleet else {
            return json_error(StatusCode::CONFLICT, "windows need [fleet] redis_url");
        };
        match member.fleet().new_window().await {
            Ok(window) => {
                tracing::info!(window, "new comparison window started through the admin API");
                reply(StatusCode::OK, "application/json", serde_json::json!({ "window": window }).to_string())
            }
            Err(error) => json_error(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
        }
    }

    /// The login form (or, with no token configured, straight to the report).
    fn login_page(&self, failed: bool) -> Response<Body> {
        if self.token.is_none() {
            return see_other("/report");
        }
        let status = if failed { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        let mut response = reply(status, "text/html; charset=utf-8", login::page(failed));
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
        );
        response
    }

    /// `POST /login` with `token=...`: a session cookie and the report, or the form again.
    async fn log_in(&self, sessions: &Sessions, request: Request<Incoming>) -> Response<Body> {
        let Some(token) = &self.token else { return see_other("/report") };
        let body = match Limited::new(request.into_body(), 4096).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return json_error(StatusCode::BAD_REQUEST, "body unreadable or over 4 KiB"),
        };
        let given = login::token_in_form(&body).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            tracing::debug!("admin login refused: wrong token");
            return self.login_page(true);
        }
        let mut response = see_other("/report");
        if let Ok(cookie) = HeaderValue::from_str(&login::set_cookie(&sessions.open())) {
            response.headers_mut().insert(SET_COOKIE, cookie);
        }
        response
    }

    async fn set_sampling(&self, request: Request<Incoming>) -> Response<Body> {
        if self.token.is_none() {
            return json_error(StatusCode::FORBIDDEN, "set admin.token to change the sampling at run time");
        }
        let body = match Limited::new(request.into_body(), 4096).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return json_error(StatusCode::BAD_REQUEST, "body unreadable or over 4 KiB"),
        };
        let request = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        let percent = request.get("percent").and_then(|p| p.as_f64());
        let fleet_scope = request.get("scope").and_then(|s| s.as_str()) == Some("fleet");
        match percent {
            Some(p) if (0.0..=100.0).contains(&p) => {
                if fleet_scope {
                    let Some(member) = &self.fleet else {
                        return json_error(StatusCode::CONFLICT, "scope \"fleet\" needs [fleet] redis_url");
                    };
                    if let Err(error) = member.fleet().set_sampling(p).await {
                        return json_error(StatusCode::SERVICE_UNAVAILABLE, &error.to_string());
                    }
                    tracing::info!(percent = p, "fleet-wide sampling changed through the admin API");
                }
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

/// `POST /logout`: closes the session and removes the cookie.
fn log_out(sessions: &Sessions, request: &Request<Incoming>) -> Response<Body> {
    for cookie in request.headers().get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()) {
        if let Some(id) = login::session_in(cookie) {
            sessions.close(id);
        }
    }
    let mut response = see_other("/login");
    if let Ok(cookie) = HeaderValue::from_str(&login::clear_cookie()) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

fn see_other(location: &'static str) -> Response<Body> {
    let mut response = reply(StatusCode::SEE_OTHER, "text/plain", "");
    response.headers_mut().insert(LOCATION, HeaderValue::from_static(location));
    response
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
    let sessions = Arc::new(Sessions::default());
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener::accept(&listener, state.proxy.accept_errors()) => accepted,
        };
        let state = Arc::clone(&state);
        let sessions = Arc::clone(&sessions);
        let builder = builder.clone();
        tokio::spawn(async move {
            let activity = Activity::new();
            let requests = Arc::clone(&activity);
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                let sessions = Arc::clone(&sessions);
                let busy = requests.request(request.version() == hyper::Version::HTTP_2);
                async move {
                    let response = state.handle(sessions, request).await;
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
