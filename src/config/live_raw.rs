//! The sections only `shadowdiff serve` uses, as written in the file.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[proxy]`: the listener clients talk to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// Where clients connect instead of `api-service`.
    pub listen: String,
    /// Added to `Via` on requests and responses (RFC 9110); empty to add none.
    pub via: String,
    /// Append the client address to `X-Forwarded-For` and set `X-Forwarded-Proto`.
    pub forwarded_headers: bool,
    /// Evaluation bodies larger than this are forwarded but not mirrored.
    pub max_mirror_body_bytes: usize,
    /// Exchanges waiting for the mirror; beyond it they are not mirrored (counted), so the
    /// client's path never waits for the shadow.
    pub mirror_queue: usize,
    /// On SIGTERM, how long pending comparisons may still finish.
    pub shutdown_grace_ms: u64,
    /// Proxy threads, each with its own listener on the address (`SO_REUSEPORT`) and a
    /// one-thread runtime; 0 = one per core.
    pub worker_threads: usize,
    /// On both listeners (proxy and admin): a new connection must send a whole request
    /// head within this time, and so must each later head once its first byte arrived,
    /// or it is closed. Frees the descriptors of clients that connect and say nothing.
    pub header_timeout_ms: u64,
    /// On both listeners: a kept-alive connection with no request in flight that sends
    /// nothing for this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for RawProxy {
    fn default() -> Self {
        RawProxy {
            listen: "127.0.0.1:8080".into(),
            via: "1.1 shadowdiff".into(),
            forwarded_headers: true,
            max_mirror_body_bytes: 1 << 20,
            mirror_queue: 10_000,
            shutdown_grace_ms: 10_000,
            worker_threads: 0,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
        }
    }
}

/// How a side's final outcome is obtained (`[legacy.outcome]`, `[shadow.outcome]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutcome {
    /// `poll`, `observe` (legacy only) or `response`.
    pub mode: String,
    /// Path template of the result endpoint; `{eval_id}` is replaced (URL-encoded).
    pub url: String,
    /// Time between polls.
    pub interval_ms: u64,
    /// No final outcome by then: the side is `lost`.
    pub deadline_ms: u64,
    /// Where the status sits in the result document.
    pub status_pointer: String,
    /// Status values that mean the evaluation is finished.
    pub terminal: Vec<String>,
    /// Optional field mapping `target pointer = source pointer`, so both sides' documents
    /// compare field for field; empty keeps the document as it is.
    pub fields: BTreeMap<String, String>,
}

impl Default for RawOutcome {
    fn default() -> Self {
        RawOutcome {
            mode: "poll".into(),
            url: "/evaluations/{eval_id}".into(),
            interval_ms: 200,
            deadline_ms: 60_000,
            status_pointer: "/status".into(),
            terminal: ["completed", "failed", "timeout", "error"].iter().map(|s| s.to_string()).collect(),
            fields: BTreeMap::new(),
        }
    }
}

/// `[legacy]`: the authoritative upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLegacy {
    /// Base URL of `api-service`, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Time to the response head before the client gets a 504.
    pub timeout_ms: Option<u64>,
    /// Most connections shadowdiff's own requests to legacy (result polls) hold at once;
    /// more polls wait for one. Client requests are forwarded on a pool of their own.
    pub max_connections: Option<usize>,
    /// How the legacy final outcome is obtained.
    pub outcome: RawOutcome,
    /// Where the legacy system tells its queue length (empty: not read), so the dashboard
    /// can compare `legacy_queue_length` with `celery_queue_length`.
    pub queue_length_url: String,
    /// Pointer to the length in that answer.
    #[serde(default = "default_queue_length_pointer")]
    pub queue_length_pointer: String,
}

fn default_queue_length_pointer() -> String {
    "/queue_length".into()
}

/// One `[[routes]]` entry: which requests are evaluation submissions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Exact path, e.g. `/evaluations` (the query string is ignored).
    pub path: String,
    /// Pointer to the evaluation id.
    #[serde(default = "default_eval_id")]
    pub eval_id: String,
    /// `request` or `response`: where `eval_id` is (the API may assign it).
    #[serde(default = "default_request")]
    pub eval_id_from: String,
    /// Pointer to the code in the request body.
    #[serde(default = "default_code")]
    pub code: String,
    /// Pointer to the language in the request body.
    #[serde(default = "default_language")]
    pub language: String,
}

fn default_eval_id() -> String {
    "/eval_id".into()
}
fn default_request() -> String {
    "request".into()
}
fn default_code() -> String {
    "/code".into()
}
fn default_language() -> String {
    "/language".into()
}

/// `[shadow]`: where and how much is mirrored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShadow {
    /// `http` (a second HTTP upstream) or `celery` (tasks written into Redis).
    pub kind: String,
    /// Share of evaluations mirrored, 0 to 100, decided by a hash of `eval_id`. 0 is the
    /// immediate rollback; changeable at run time.
    pub percent: f64,
    /// Most evaluations mirrored and not yet judged.
    pub max_in_flight: usize,
    /// Most bytes held for evaluations between the proxy and their judgment (captured
    /// bodies waiting in the hand-off, the request kept for the shadow and the report, a
    /// Celery message kept to remove it from the queue); beyond it a submission is not
    /// mirrored (`memory_budget`). Bounds the sidecar's memory whatever the shadow does.
    pub max_pending_bytes: u64,
    /// Consecutive shadow errors or lost outcomes that pause mirroring.
    pub breaker_failures: u32,
    /// How long mirroring pauses before one probe evaluation is tried.
    pub breaker_cooldown_ms: u64,
    /// The HTTP shadow.
    pub http: RawHttpShadow,
    /// How the shadow's final outcome is obtained (HTTP shadow; Celery reads its result backend).
    pub outcome: RawOutcome,
    /// The Celery shadow.
    pub celery: RawCelery,
}

impl Default for RawShadow {
    fn default() -> Self {
        RawShadow {
            kind: "http".into(),
            percent: 100.0,
            max_in_flight: 1000,
            max_pending_bytes: 256 << 20,
            breaker_failures: 20,
            breaker_cooldown_ms: 5000,
            http: RawHttpShadow::default(),
            outcome: RawOutcome::default(),
            celery: RawCelery::default(),
        }
    }
}

/// `[shadow.http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpShadow {
    /// Base URL of the shadow copy of `api-service`.
    pub url: String,
    /// Time to the shadow's whole response, waiting for a connection included.
    pub timeout_ms: u64,
    /// Most connections open to the shadow at once (submissions and result polls); more
    /// requests wait for one within their timeout. Bounds the descriptors a stalled shadow
    /// can hold.
    pub max_connections: usize,
    /// Client request headers not sent to the shadow (case-insensitive names), e.g.
    /// `["cookie"]`. Hop-by-hop fields are never sent.
    pub drop_headers: Vec<String>,
    /// Headers set on every request to the shadow, replacing the client's value, e.g.
    /// `{ authorization = "Bearer shadow-token" }`.
    pub set_headers: BTreeMap<String, String>,
}

impl Default for RawHttpShadow {
    fn default() -> Self {
        RawHttpShadow {
            url: String::new(),
            timeout_ms: 10_000,
            max_connections: 256,
            drop_headers: Vec::new(),
            set_headers: BTreeMap::new(),
        }
    }
}

/// `[shadow.celery]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCelery {
    /// Redis broker (Celery's `broker_url`): `redis://[user:password@]host:port/db`,
    /// `rediss://…` for TLS, or `sentinel://host:port;sentinel://host2:port` with
    /// `broker_transport_options.master_name`.
    pub broker_url: String,
    /// TLS options of a `rediss://` broker, as in Celery's `broker_use_ssl`.
    pub broker_use_ssl: Option<RawUseSsl>,
    /// Sentinel options of a `sentinel://` broker, as in Celery's
    /// `broker_transport_options`.
    pub broker_transport_options: Option<RawTransportOptions>,
    /// Redis result backend (also spelt `result_backend`, as in Celery); empty: the broker,
    /// with its options.
    #[serde(alias = "result_backend")]
    pub result_url: String,
    /// TLS options of a `rediss://` result backend, as in Celery's `redis_backend_use_ssl`.
    pub redis_backend_use_ssl: Option<RawUseSsl>,
    /// Sentinel options of a `sentinel://` result backend, as in Celery's
    /// `result_backend_transport_options`.
    pub result_backend_transport_options: Option<RawTransportOptions>,
    /// Registered task name the workers run.
    pub task: String,
    /// Queue (Redis list) to push to: a `shadow` queue served by isolated workers.
    pub queue: String,
    /// Celery priority 0-9; on Redis, lower runs first.
    pub priority: u8,
    /// Positional arguments; strings may hold `{eval_id}`, `{code}`, `{language}`.
    pub args: Vec<toml::Value>,
    /// Keyword arguments, templated like `args` (e.g. `shadow = true`).
    pub kwargs: BTreeMap<String, toml::Value>,
    /// Task expiry after submission, in seconds; 0 = at the evaluation's outcome deadline
    /// (`[shadow.outcome] deadline_ms`), so that a worker that gets the task only after
    /// shadowdiff gave up on it discards it instead of running it.
    pub expires_s: f64,
    /// Soft time limit in seconds (0 = the worker's default).
    pub soft_time_limit_s: f64,
    /// Hard time limit in seconds (0 = the worker's default).
    pub time_limit_s: f64,
    /// Delete each result key after reading it (Redis memory).
    pub delete_results: bool,
    /// Pause mirroring while the queue holds more messages than this.
    pub max_queue_depth: u64,
    /// Broadcast a revoke for a task whose result did not come in time (and that a worker
    /// had already taken: one still queued is simply removed).
    pub revoke_lost: bool,
    /// After a task is given up on (lost) or revoked, how long its result key is watched
    /// so that a late worker's result is deleted as soon as it is written. kombu hands an
    /// unacknowledged task to another worker after its visibility timeout (1 h by default).
    pub late_result_watch_s: f64,
    /// kombu priority steps, as configured on the workers.
    pub priority_steps: Vec<u8>,
    /// kombu priority key separator, as configured on the workers.
    pub priority_separator: String,
}

impl Default for RawCelery {
    fn default() -> Self {
        let text = |s: &str| toml::Value::String(s.into());
        RawCelery {
            broker_url: "redis://127.0.0.1:6379/0".into(),
            broker_use_ssl: None,
            broker_transport_options: None,
            result_url: String::new(),
            redis_backend_use_ssl: None,
            result_backend_transport_options: None,
            task: "evaluate".into(),
            queue: "shadow".into(),
            priority: 0,
            args: vec![text("{eval_id}"), text("{code}"), text("{language}")],
            kwargs: BTreeMap::from([("shadow".to_string(), toml::Value::Boolean(true))]),
            expires_s: 0.0,
            soft_time_limit_s: 0.0,
            time_limit_s: 0.0,
            delete_results: true,
            max_queue_depth: 1000,
            revoke_lost: true,
            late_result_watch_s: 3600.0,
            priority_steps: vec![0, 3, 6, 9],
            priority_separator: "\u{6}\u{16}".into(),
        }
    }
}

/// `[admin]`: the report and metrics listener, never the proxied port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Where `/report`, `/report.json`, `/metrics` and `/healthz` are served.
    pub listen: String,
    /// Bearer token required for everything but `/healthz`; empty for none. Changing the
    /// sampling at run time always needs one.
    pub token: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { listen: "127.0.0.1:9090".into(), token: String::new() }
    }
}

/// `[record]`: judged evaluations appended as fixture lines, for replay later.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRecord {
    /// File to append to; empty records nothing.
    pub path: String,
    /// Size at which the file is rotated to `<path>.1` (older ones shift up).
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// Request fields replaced by a redaction marker in the recording (JSON pointers).
    /// Empty by default: a recording keeps each request whole so `shadowdiff drive` can
    /// send it again; redacted requests replay but do not drive.
    pub redact: Vec<String>,
}

impl Default for RawRecord {
    fn default() -> Self {
        RawRecord { path: String::new(), max_bytes: 100 << 20, keep: 5, redact: Vec::new() }
    }
}

/// `[fleet]`: several sidecars in front of `api-service` replicas, one verdict. Each writes
/// its state to Redis; reports can merge every instance of a run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFleet {
    /// Redis holding the fleet's state (`redis://…`, `rediss://…` or `sentinel://…`, as
    /// for the broker); empty: this sidecar stands alone.
    pub redis_url: String,
    /// TLS options of a `rediss://` fleet Redis (the keys of `broker_use_ssl`).
    pub redis_use_ssl: Option<RawUseSsl>,
    /// Sentinel options of a `sentinel://` fleet Redis (the keys of
    /// `broker_transport_options`).
    pub redis_transport_options: Option<RawTransportOptions>,
    /// This sidecar's name in the fleet; empty: `hostname:proxy port`.
    pub instance: String,
    /// How often this sidecar writes its state (and reads the fleet's sampling and window).
    /// A SIGKILL loses at most this much of its judgments.
    pub snapshot_ms: u64,
    /// The comparison this sidecar belongs to: instances of one run are merged.
    pub run: String,
    /// How long an instance's state stays in Redis after its last write, in seconds.
    pub ttl_s: u64,
}

impl Default for RawFleet {
    fn default() -> Self {
        RawFleet {
            redis_url: String::new(),
            redis_use_ssl: None,
            redis_transport_options: None,
            instance: String::new(),
            snapshot_ms: 1000,
            run: "default".into(),
            ttl_s: 7 * 24 * 3600,
        }
    }
}

/// TLS options of a `rediss://` Redis, with the keys of Celery's `broker_use_ssl` and
/// `redis_backend_use_ssl` (which may also be given as query parameters of the URL).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUseSsl {
    /// CA certificates (PEM file) the server's certificate must chain to; empty: the
    /// system's.
    pub ssl_ca_certs: String,
    /// Client certificate (PEM file), for a Redis that checks clients.
    pub ssl_certfile: String,
    /// The client certificate's private key (PEM file).
    pub ssl_keyfile: String,
    /// `required` (the default), `optional` or `none` (any certificate: tests only); also
    /// `CERT_REQUIRED`, … as Celery spells them.
    pub ssl_cert_reqs: String,
}

/// Sentinel options, with the keys of Celery's `broker_transport_options` that concern
/// finding the master.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTransportOptions {
    /// The name the sentinels know the master by.
    pub master_name: String,
    /// How to log in to the sentinels themselves (the master's credentials are the URL's).
    pub sentinel_kwargs: RawSentinelKwargs,
}

/// `sentinel_kwargs`: credentials of the sentinels.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSentinelKwargs {
    /// ACL user on the sentinels.
    pub username: String,
    /// Password of the sentinels (`requirepass` in sentinel.conf).
    pub password: String,
}
