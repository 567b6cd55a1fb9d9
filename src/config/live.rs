//! The validated form of the `serve` sections: addresses parsed, pointers split, durations
//! typed. [`check`] adds its problems to the list the rest of the config reports.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::raw::{RawConfig, RawOutcome};
use super::redis::{self, RedisKeys};
use super::Problem;
use crate::celery::redis_target::RedisSpec;
use crate::celery::PriorityLayout;

const BROKER: RedisKeys = RedisKeys {
    url: "shadow.celery.broker_url",
    use_ssl: "shadow.celery.broker_use_ssl",
    transport_options: "shadow.celery.broker_transport_options",
};
const RESULT: RedisKeys = RedisKeys {
    url: "shadow.celery.result_url",
    use_ssl: "shadow.celery.redis_backend_use_ssl",
    transport_options: "shadow.celery.result_backend_transport_options",
};
const FLEET: RedisKeys = RedisKeys {
    url: "fleet.redis_url",
    use_ssl: "fleet.redis_use_ssl",
    transport_options: "fleet.redis_transport_options",
};
use crate::judge::pointer::Pattern;

/// Everything `serve` needs beyond the engine.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Added to `Via`; `None` adds nothing.
    pub via: Option<String>,
    /// Add `X-Forwarded-For`/`-Proto`.
    pub forwarded_headers: bool,
    /// Larger evaluation bodies are forwarded but not mirrored.
    pub max_mirror_body_bytes: usize,
    /// Capacity of the hand-off from the proxy to the mirror.
    pub mirror_queue: usize,
    /// How long pending comparisons may finish on shutdown.
    pub shutdown_grace: Duration,
    /// Proxy threads, each with its own listener and one-thread runtime; `None` for one
    /// per core.
    pub worker_threads: Option<usize>,
    /// Both listeners: time to a whole request head (the first from accept; later ones
    /// from their first byte).
    pub header_timeout: Duration,
    /// Both listeners: silence allowed with no request in flight.
    pub idle_timeout: Duration,
    /// Base URL of `api-service` (`None` when not configured: `serve` refuses to start).
    pub legacy_url: Option<String>,
    /// Time to the legacy response head before a 504.
    pub legacy_timeout: Duration,
    /// Cap on connections of the legacy result polls.
    pub legacy_max_connections: usize,
    /// How the legacy outcome is obtained.
    pub legacy_outcome: OutcomeRule,
    /// Where the legacy queue length is read, when configured.
    pub legacy_queue_length: Option<QueueLengthProbe>,
    /// Which requests are evaluation submissions.
    pub routes: Vec<Route>,
    /// The shadow system.
    pub shadow: ShadowKind,
    /// Initial sampling, 0 to 100.
    pub percent: f64,
    /// Cap on evaluations mirrored and not yet judged.
    pub max_in_flight: usize,
    /// Cap on the bytes held for pending evaluations.
    pub max_pending_bytes: u64,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// Pause before a probe.
    pub breaker_cooldown: Duration,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Recording, when configured.
    pub record: Option<RecordSettings>,
    /// The fleet this sidecar belongs to, when `[fleet] redis_url` is set.
    pub fleet: Option<FleetSettings>,
}

/// `[fleet]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// Redis holding the fleet's state (`[fleet] redis_url`, `redis_use_ssl`,
    /// `redis_transport_options`).
    pub redis: RedisSpec,
    /// This sidecar's name (`None`: `hostname:proxy port`, decided once the port is bound).
    pub instance: Option<String>,
    /// Time between two state writes.
    pub snapshot: Duration,
    /// The run's name.
    pub run: String,
    /// Lifetime of an instance's state after its last write.
    pub ttl: Duration,
}

/// `[legacy] queue_length_url` and `queue_length_pointer`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueLengthProbe {
    /// The URL answered with a JSON document holding the length.
    pub url: String,
    /// Unescaped pointer tokens to the length.
    pub pointer: Vec<String>,
}

/// How a final outcome is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeMode {
    /// GET the result URL until a terminal status.
    Poll,
    /// Watch the client's own result polls pass through (legacy only), then poll.
    Observe,
    /// The submission's response body is the outcome.
    Response,
}

impl OutcomeMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeMode::Poll => "poll",
            OutcomeMode::Observe => "observe",
            OutcomeMode::Response => "response",
        }
    }
}

/// `[legacy.outcome]` / `[shadow.outcome]`, validated.
#[derive(Debug, Clone)]
pub struct OutcomeRule {
    /// How.
    pub mode: OutcomeMode,
    /// Result path template with `{eval_id}`.
    pub url_template: String,
    /// Time between polls.
    pub interval: Duration,
    /// When the side is `lost`.
    pub deadline: Duration,
    /// Tokens of the status pointer.
    pub status: Vec<String>,
    /// Terminal status values.
    pub terminal: Vec<String>,
    /// `(target, source)` pointer tokens; empty keeps the document.
    pub fields: Vec<(Vec<String>, Vec<String>)>,
}

/// Where a route's `eval_id` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// In the request body.
    Request,
    /// In the legacy response body (the API assigns it).
    Response,
}

/// One validated `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upper-case method.
    pub method: String,
    /// Exact path.
    pub path: String,
    /// Tokens of the `eval_id` pointer.
    pub eval_id: Vec<String>,
    /// Where `eval_id` is.
    pub eval_id_from: IdSource,
    /// Tokens of the `code` pointer (request body).
    pub code: Vec<String>,
    /// Tokens of the `language` pointer (request body).
    pub language: Vec<String>,
}

/// The shadow system.
#[derive(Debug, Clone)]
pub enum ShadowKind {
    /// A second HTTP upstream.
    Http {
        /// Its base URL (`None` when not configured).
        url: Option<String>,
        /// Time to its whole response, waiting for a connection included.
        timeout: Duration,
        /// How its outcome is obtained.
        outcome: OutcomeRule,
        /// Most connections open to it at once.
        max_connections: usize,
        /// Which client headers it gets.
        headers: Box<ShadowHeaders>,
    },
    /// Celery tasks written into Redis.
    Celery(Box<CelerySettings>),
}

impl ShadowKind {
    /// How the shadow's outcome is obtained.
    pub fn outcome(&self) -> &OutcomeRule {
        match self {
            ShadowKind::Http { outcome, .. } => outcome,
            ShadowKind::Celery(settings) => &settings.outcome,
        }
    }
}

/// `[shadow.http] drop_headers` and `set_headers`, validated.
#[derive(Debug, Clone, Default)]
pub struct ShadowHeaders {
    /// Client headers not sent to the shadow.
    pub drop: Vec<HeaderName>,
    /// Headers set on every request to the shadow, replacing the client's.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

/// `[shadow.celery]`, validated.
#[derive(Debug, Clone)]
pub struct CelerySettings {
    /// The broker: URL, TLS and Sentinel options.
    pub broker: RedisSpec,
    /// The result backend: URL, TLS and Sentinel options (the broker's when no
    /// `result_url` is set).
    pub result: RedisSpec,
    /// Task name.
    pub task: String,
    /// Queue.
    pub queue: String,
    /// Priority 0-9.
    pub priority: u8,
    /// Argument templates.
    pub args: Vec<Value>,
    /// Keyword argument templates, in file order.
    pub kwargs: Vec<(String, Value)>,
    /// Expiry after submission; `None` means at the outcome deadline.
    pub expires: Option<Duration>,
    /// Soft time limit.
    pub soft_time_limit: Option<Duration>,
    /// Hard time limit.
    pub time_limit: Option<Duration>,
    /// How long to wait for a result before `lost` (`[shadow.outcome] deadline_ms`), how
    /// often to re-read it (`interval_ms`), and the field mapping (`fields`).
    pub outcome: OutcomeRule,
    /// Delete result keys after reading.
    pub delete_results: bool,
    /// Pause mirroring above this queue depth.
    pub max_queue_depth: u64,
    /// Revoke tasks whose result did not come in time.
    pub revoke_lost: bool,
    /// How long the result key of a lost or revoked task is watched (and deleted).
    pub late_result_watch: Duration,
    /// kombu priority layout.
    pub layout: PriorityLayout,
}

/// `[record]`, validated.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// File appended to.
    pub path: std::path::PathBuf,
    /// Rotation size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// Request fields redacted in recorded lines (none by default: requests drive whole).
    pub redact: Vec<Pattern>,
}

struct Checker<'a>(&'a mut Vec<Problem>);

impl Checker<'_> {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem { key: key.to_string(), message: message.into() });
    }

    fn addr(&mut self, key: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| {
            self.add(key, format!("{text:?} is not an address like 127.0.0.1:8080: {e}"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn tokens(&mut self, key: &str, text: &str) -> Vec<String> {
        match Pattern::parse(text) {
            Ok(p) => match p.literal_tokens() {
                Some(tokens) => tokens.into_iter().map(String::from).collect(),
                None => {
                    self.add(key, "cannot use `*` here");
                    Vec::new()
                }
            },
            Err(e) => {
                self.add(key, e.to_string());
                Vec::new()
            }
        }
    }

    fn url(&mut self, key: &str, text: &str) -> Option<String> {
        if text.is_empty() {
            return None;
        }
        match text.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {
                Some(text.trim_end_matches('/').to_string())
            }
            _ => {
                self.add(key, format!("{text:?} is not an http:// URL with a host"));
                None
            }
        }
    }

    fn outcome(&mut self, key: &str, raw: &RawOutcome, observe_allowed: bool) -> OutcomeRule {
        let mode = match raw.mode.as_str() {
            "poll" => OutcomeMode::Poll,
            "response" => OutcomeMode::Response,
            "observe" if observe_allowed => OutcomeMode::Observe,
            other => {
                let allowed = if observe_allowed { "poll, observe or response" } else { "poll or response" };
                self.add(&format!("{key}.mode"), format!("{other:?} is not one of {allowed}"));
                OutcomeMode::Poll
            }
        };
        if mode != OutcomeMode::Response && !raw.url.contains("{eval_id}") {
            self.add(&format!("{key}.url"), "must contain {eval_id}");
        }
        if !raw.url.starts_with('/') {
            self.add(&format!("{key}.url"), "must be a path starting with '/'");
        }
        if raw.interval_ms == 0 {
            self.add(&format!("{key}.interval_ms"), "must be at least 1");
        }
        if raw.terminal.is_empty() {
            self.add(&format!("{key}.terminal"), "needs at least one status");
        }
        let status = self.tokens(&format!("{key}.status_pointer"), &raw.status_pointer);
        let fields = raw
            .fields
            .iter()
            .map(|(target, source)| {
                let k = format!("{key}.fields.\"{target}\"");
                (self.tokens(&k, target), self.tokens(&k, source))
            })
            .collect();
        OutcomeRule {
            mode,
            url_template: raw.url.clone(),
            interval: Duration::from_millis(raw.interval_ms.max(1)),
            deadline: Duration::from_millis(raw.deadline_ms),
            status,
            terminal: raw.terminal.clone(),
            fields,
        }
    }

    fn header_name(&mut self, key: &str, text: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.add(key, format!("{text:?} is not a valid header name"));
                None
            }
        }
    }

    fn seconds(&mut self, key: &str, value: f64) -> Option<Duration> {
        if !(value.is_finite() && value >= 0.0) {
            self.add(key, format!("must be a finite number >= 0, got {value}"));
            return None;
        }
        if value == 0.0 {
            return None;
        }
        match Duration::try_from_secs_f64(value) {
            Ok(duration) => Some(duration),
            Err(_) => {
                self.add(key, format!("is too large: {value:e} seconds"));
                None
            }
        }
    }
}

fn json(value: &toml::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Validates the `serve` sections; problems are appended to `problems`.
pub fn check(raw: &RawConfig, problems: &mut Vec<Problem>) -> LiveConfig {
    let mut c = Checker(problems);
    let p = &raw.proxy;
    let listen = c.addr("proxy.listen", &p.listen);
    if p.mirror_queue == 0 {
        c.add("proxy.mirror_queue", "must be at least 1");
    }
    let legacy_url = c.url("legacy.url", &raw.legacy.url);
    let legacy_outcome = c.outcome("legacy.outcome", &raw.legacy.outcome, true);
    let queue_length_url = &raw.legacy.queue_length_url;
    let queue_length_url = match queue_length_url.strip_prefix('/') {
        // A path is on the legacy system itself.
        Some(path) => legacy_url.as_ref().map(|base| format!("{base}/{path}")),
        None => c.url("legacy.queue_length_url", queue_length_url),
    };
    let legacy_queue_length = queue_length_url.map(|url| QueueLengthProbe {
        url,
        pointer: c.tokens("legacy.queue_length_pointer", &raw.legacy.queue_length_pointer),
    });
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = |field: &str| format!("routes[{i}].{field}");
            if !r.path.starts_with('/') {
                c.add(&key("path"), "must start with '/'");
            }
            let eval_id_from = match r.eval_id_from.as_str() {
                "request" => IdSource::Request,
                "response" => IdSource::Response,
                other => {
                    c.add(&key("eval_id_from"), format!("{other:?} is not request or response"));
                    IdSource::Request
                }
            };
            Route {
                method: r.method.to_ascii_uppercase(),
                path: r.path.clone(),
                eval_id: c.tokens(&key("eval_id"), &r.eval_id),
                eval_id_from,
                code: c.tokens(&key("code"), &r.code),
                language: c.tokens(&key("language"), &r.language),
            }
        })
        .collect();

    let s = &raw.shadow;
    if !(0.0..=100.0).contains(&s.percent) {
        c.add("shadow.percent", format!("must be between 0 and 100, got {}", s.percent));
    }
    if s.max_in_flight == 0 {
        c.add("shadow.max_in_flight", "must be at least 1");
    }
    if raw.legacy.max_connections == Some(0) {
        c.add("legacy.max_connections", "must be at least 1");
    }
    if p.header_timeout_ms == 0 {
        c.add("proxy.header_timeout_ms", "must be at least 1");
    }
    if p.idle_timeout_ms == 0 {
        c.add("proxy.idle_timeout_ms", "must be at least 1");
    }
    if s.max_pending_bytes < p.max_mirror_body_bytes as u64 {
        c.add(
            "shadow.max_pending_bytes",
            format!(
                "must be at least proxy.max_mirror_body_bytes ({}), or no submission of that size could be mirrored",
                p.max_mirror_body_bytes
            ),
        );
    }
    let shadow = match s.kind.as_str() {
        "http" => {
            if s.http.max_connections == 0 {
                c.add("shadow.http.max_connections", "must be at least 1");
            }
            ShadowKind::Http {
                url: c.url("shadow.http.url", &s.http.url),
                timeout: Duration::from_millis(s.http.timeout_ms),
                outcome: c.outcome("shadow.outcome", &s.outcome, false),
                max_connections: s.http.max_connections.max(1),
                headers: Box::new(ShadowHeaders {
                    drop: s
                        .http
                        .drop_headers
                        .iter()
                        .enumerate()
                        .filter_map(|(i, name)| c.header_name(&format!("shadow.http.drop_headers[{i}]"), name))
                        .collect(),
                    set: s
                        .http
                        .set_headers
                        .iter()
                        .filter_map(|(name, value)| {
                            let key = format!("shadow.http.set_headers.{name}");
                            let name = c.header_name(&key, name)?;
                            match HeaderValue::from_str(value) {
                                Ok(value) => Some((name, value)),
                                Err(_) => {
                                    c.add(&key, "is not a valid header value (visible ASCII only)");
                                    None
                                }
                            }
                        })
                        .collect(),
                }),
            }
        }
        "celery" => ShadowKind::Celery(Box::new(celery(&mut c, raw))),
        other => {
            c.add("shadow.kind", format!("{other:?} is not http or celery"));
            ShadowKind::Http {
                url: None,
                timeout: Duration::ZERO,
                outcome: c.outcome("shadow.outcome", &s.outcome, false),
                max_connections: 1,
                headers: Box::default(),
            }
        }
    };

    let admin_listen = c.addr("admin.listen", &raw.admin.listen);
    if admin_listen == listen && listen.port() != 0 {
        c.add("admin.listen", "must differ from proxy.listen: the admin listener never shares the proxied port");
    }
    let record = (!raw.record.path.is_empty()).then(|| {
        if raw.record.max_bytes < 4096 {
            c.add("record.max_bytes", "must be at least 4096");
        }
        let redact = raw
            .record
            .redact
            .iter()
            .enumerate()
            .filter_map(|(i, text)| match Pattern::parse(text) {
                Ok(pattern) if pattern.literal_tokens().is_some() => Some(pattern),
                Ok(_) => {
                    c.add(&format!("record.redact[{i}]"), "cannot use `*` here");
                    None
                }
                Err(e) => {
                    c.add(&format!("record.redact[{i}]"), e.to_string());
                    None
                }
            })
            .collect();
        RecordSettings {
            path: raw.record.path.clone().into(),
            max_bytes: raw.record.max_bytes,
            keep: raw.record.keep,
            redact,
        }
    });

    let f = &raw.fleet;
    let fleet = (!f.redis_url.is_empty()).then(|| {
        let redis =
            redis::spec(c.0, &FLEET, &f.redis_url, f.redis_use_ssl.as_ref(), f.redis_transport_options.as_ref());
        if f.snapshot_ms < 100 {
            c.add("fleet.snapshot_ms", format!("must be at least 100, got {}", f.snapshot_ms));
        }
        if f.run.is_empty() || f.run.contains(|ch: char| ch.is_whitespace() || ch == ':') {
            c.add("fleet.run", format!("{:?} must be a non-empty name without spaces or ':'", f.run));
        }
        if f.instance.contains(char::is_whitespace) {
            c.add("fleet.instance", format!("{:?} must not contain spaces", f.instance));
        }
        if f.ttl_s * 1000 < 10 * f.snapshot_ms {
            c.add("fleet.ttl_s", "must be at least 10 snapshot intervals");
        }
        FleetSettings {
            redis,
            instance: (!f.instance.is_empty()).then(|| f.instance.clone()),
            snapshot: Duration::from_millis(f.snapshot_ms.max(100)),
            run: f.run.clone(),
            ttl: Duration::from_secs(f.ttl_s),
        }
    });

    LiveConfig {
        listen,
        via: (!p.via.is_empty()).then(|| p.via.clone()),
        forwarded_headers: p.forwarded_headers,
        max_mirror_body_bytes: p.max_mirror_body_bytes,
        mirror_queue: p.mirror_queue.max(1),
        shutdown_grace: Duration::from_millis(p.shutdown_grace_ms),
        worker_threads: (p.worker_threads > 0).then_some(p.worker_threads),
        header_timeout: Duration::from_millis(p.header_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(p.idle_timeout_ms.max(1)),
        legacy_url,
        legacy_timeout: Duration::from_millis(raw.legacy.timeout_ms.unwrap_or(30_000)),
        legacy_max_connections: raw.legacy.max_connections.unwrap_or(256).max(1),
        legacy_outcome,
        legacy_queue_length,
        routes,
        shadow,
        percent: s.percent.clamp(0.0, 100.0),
        max_in_flight: s.max_in_flight.max(1),
        max_pending_bytes: s.max_pending_bytes,
        breaker_failures: s.breaker_failures,
        breaker_cooldown: Duration::from_millis(s.breaker_cooldown_ms),
        admin_listen,
        admin_token: (!raw.admin.token.is_empty()).then(|| raw.admin.token.clone()),
        record,
        fleet,
    }
}

fn celery(c: &mut Checker<'_>, raw: &RawConfig) -> CelerySettings {
    let k = &raw.shadow.celery;
    let broker =
        redis::spec(c.0, &BROKER, &k.broker_url, k.broker_use_ssl.as_ref(), k.broker_transport_options.as_ref());
    let result = if k.result_url.is_empty() {
        for (key, set) in [
            (RESULT.use_ssl, k.redis_backend_use_ssl.is_some()),
            (RESULT.transport_options, k.result_backend_transport_options.is_some()),
        ] {
            if set {
                c.add(key, "is for a result_url of its own; without one the broker's options serve");
            }
        }
        broker.clone()
    } else {
        redis::spec(
            c.0,
            &RESULT,
            &k.result_url,
            k.redis_backend_use_ssl.as_ref(),
            k.result_backend_transport_options.as_ref(),
        )
    };
    if k.task.is_empty() {
        c.add("shadow.celery.task", "must not be empty");
    }
    if k.queue.is_empty() {
        c.add("shadow.celery.queue", "must not be empty");
    }
    if k.priority > 9 {
        c.add("shadow.celery.priority", format!("must be 0 to 9, got {}", k.priority));
    }
    let layout = PriorityLayout::new(k.priority_steps.clone(), k.priority_separator.clone()).unwrap_or_else(|e| {
        c.add("shadow.celery.priority_steps", e.to_string());
        PriorityLayout::default()
    });
    CelerySettings {
        broker,
        result,
        task: k.task.clone(),
        queue: k.queue.clone(),
        priority: k.priority.min(9),
        args: k.args.iter().map(json).collect(),
        kwargs: k.kwargs.iter().map(|(name, v)| (name.clone(), json(v))).collect(),
        expires: c.seconds("shadow.celery.expires_s", k.expires_s),
        soft_time_limit: c.seconds("shadow.celery.soft_time_limit_s", k.soft_time_limit_s),
        time_limit: c.seconds("shadow.celery.time_limit_s", k.time_limit_s),
        outcome: c.outcome("shadow.outcome", &raw.shadow.outcome, false),
        delete_results: k.delete_results,
        max_queue_depth: k.max_queue_depth,
        revoke_lost: k.revoke_lost,
        late_result_watch: c.seconds("shadow.celery.late_result_watch_s", k.late_result_watch_s).unwrap_or_default(),
        layout,
    }
}

impl LiveConfig {
    /// What `serve` needs that replay does not: problems that stop `serve` from starting.
    pub fn serve_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut c = Checker(&mut problems);
        if self.legacy_url.is_none() {
            c.add("legacy.url", "is required to serve");
        }
        if self.routes.is_empty() {
            c.add("routes", "at least one [[routes]] entry is required to serve");
        }
        match &self.shadow {
            ShadowKind::Http { url: None, .. } => {
                Checker(&mut problems).add("shadow.http.url", "is required to serve with shadow.kind = \"http\"");
            }
            ShadowKind::Http { .. } => {}
            ShadowKind::Celery(settings) => {
                // What the broker client refuses before connecting; whether Redis answers
                // is for `serve` to find out.
                redis::open_problems(&mut problems, &BROKER, crate::celery::broker::BROKER, &settings.broker);
                redis::open_problems(&mut problems, &RESULT, crate::celery::broker::RESULT_BACKEND, &settings.result);
            }
        }
        if let Some(fleet) = &self.fleet {
            redis::open_problems(&mut problems, &FLEET, "fleet", &fleet.redis);
        }
        let mut c = Checker(&mut problems);
        // The recording is opened at start: a folder that is not there stops `serve`.
        if let Some(record) = &self.record {
            let folder =
                record.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if !folder.is_dir() {
                c.add("record.path", format!("the folder {} does not exist", folder.display()));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ParseError};

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Err(ParseError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(other) => vec![format!("{other:?}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn the_fault_limits_are_checked_all_at_once() {
        let found = problems(
            r#"
            [proxy]
            header_timeout_ms = 0
            idle_timeout_ms = 0
            max_mirror_body_bytes = 2048
            [legacy]
            max_connections = 0
            [shadow]
            max_pending_bytes = 1024
            [shadow.http]
            max_connections = 0
            drop_headers = ["ok", "bad name"]
            set_headers = { authorization = "line\nbreak" }
            "#,
        );
        assert_eq!(
            found,
            [
                "legacy.max_connections: must be at least 1",
                "proxy.header_timeout_ms: must be at least 1",
                "proxy.idle_timeout_ms: must be at least 1",
                "shadow.max_pending_bytes: must be at least proxy.max_mirror_body_bytes (2048), or no submission of that size could be mirrored",
                "shadow.http.max_connections: must be at least 1",
                "shadow.http.drop_headers[1]: \"bad name\" is not a valid header name",
                "shadow.http.set_headers.authorization: is not a valid header value (visible ASCII only)",
            ]
        );
    }

    #[test]
    fn seconds_too_large_for_a_duration_are_refused_by_name() {
        let found = problems(
            "[shadow]\nkind = \"celery\"\n[shadow.celery]\nbroker_url = \"redis://127.0.0.1:6379/0\"\nqueue = \"q\"\ntask = \"t\"\nexpires_s = 1e300\nlate_result_watch_s = -1\n",
        );
        assert_eq!(
            found,
            [
                "shadow.celery.expires_s: is too large: 1e300 seconds",
                "shadow.celery.late_result_watch_s: must be a finite number >= 0, got -1",
            ]
        );
    }

    #[test]
    fn the_http_shadow_headers_are_typed() {
        let config = Config::parse(
            "[shadow.http]\ndrop_headers = [\"Cookie\"]\nset_headers = { Authorization = \"Bearer s\" }\n",
        )
        .expect("valid");
        let super::ShadowKind::Http { headers, max_connections, .. } = &config.live.shadow else {
            panic!("http shadow")
        };
        assert_eq!(*max_connections, 256);
        assert_eq!(headers.drop, [hyper::header::COOKIE]);
        assert_eq!(headers.set, [(hyper::header::AUTHORIZATION, hyper::header::HeaderValue::from_static("Bearer s"))]);
        assert_eq!(config.live.max_pending_bytes, 256 << 20);
        assert_eq!(config.live.header_timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn recordings_keep_requests_whole_unless_record_redact_names_fields() {
        let whole = Config::parse("[record]\npath = \"r.jsonl\"\n").expect("valid");
        assert!(whole.live.record.expect("record").redact.is_empty());
        let redacted = Config::parse("[record]\npath = \"r.jsonl\"\nredact = [\"/code\"]\n").expect("valid");
        assert_eq!(redacted.live.record.expect("record").redact.len(), 1);
        assert_eq!(
            problems("[record]\npath = \"r.jsonl\"\nredact = [\"/code\", \"/tests/*\", \"code\"]\n"),
            [
                "record.redact[1]: cannot use `*` here".to_owned(),
                problems("[report]\nredact = [\"code\"]\n")[0].replace("report.redact[0]", "record.redact[2]"),
            ]
        );
    }
}
