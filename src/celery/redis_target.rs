//! Where a Redis is and how to reach it: the one place where shadowdiff makes a Redis
//! connection, for the broker, the result backend and the fleet alike.
//!
//! A [`RedisSpec`] is what the config says, in Celery's spellings: a URL (`redis://`,
//! `rediss://` with TLS, or a `sentinel://host:port;sentinel://…` list), the TLS options of
//! `broker_use_ssl` / `redis_backend_use_ssl`, and the Sentinel options of
//! `broker_transport_options` (`master_name`, `sentinel_kwargs`). [`RedisTarget::open`]
//! checks it without connecting (the URL parses, the certificate files read) and is what
//! `check-config` runs; [`RedisTarget::link`] connects, and [`RedisTarget::client`] gives a
//! client for one more connection (the result pub/sub).
//!
//! Behind Sentinel the master moves: a [`RedisLink`] asks the sentinels for the master
//! again after a command fails on the connection (or on a `READONLY` demoted master) and
//! moves to the new one; the command that failed is reported as failed, the next ones go
//! to the new master. Its IO: the connections, and the sentinels' `SENTINEL
//! get-master-addr-by-name`.
//!
//! No password ever leaves this module in a message: errors name the Redis and the
//! reason, never the URL ([`redacted`] is what may be shown of one).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisError, TlsCertificates, TlsMode};
use tokio::time::Instant;

use super::error::CONNECT_TIMEOUT;

/// How long one command may wait for its reply. None of ours blocks on the server side
/// (no `BRPOP`), so a slower reply means Redis or the network is in trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sentinel is asked at most this often for the master, however many commands fail.
const RESOLVE_INTERVAL: Duration = Duration::from_millis(200);

/// Whether and how the server's certificate is checked (Celery's `ssl_cert_reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    /// `none` (`ssl.CERT_NONE`): any certificate is accepted. For tests only.
    None,
    /// `optional` (`ssl.CERT_OPTIONAL`): on a client, Python checks the certificate the
    /// server sends, as `required` does; so does shadowdiff.
    Optional,
    /// `required` (`ssl.CERT_REQUIRED`), the default: the certificate must chain to the CA
    /// and name the host.
    #[default]
    Required,
}

impl CertReqs {
    /// Reads Celery's spellings: `none`/`optional`/`required`, or `CERT_NONE`, … in any case.
    pub fn parse(text: &str) -> Option<CertReqs> {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("cert_").unwrap_or(&lower) {
            "none" => Some(CertReqs::None),
            "optional" => Some(CertReqs::Optional),
            "required" => Some(CertReqs::Required),
            _ => None,
        }
    }
}

/// The TLS options of a `rediss://` Redis (Celery's `broker_use_ssl`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) the server's certificate must chain to; `None`: the system's.
    pub ca_certs: Option<PathBuf>,
    /// Client certificate (PEM), for a Redis with `tls-auth-clients yes`.
    pub certfile: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub keyfile: Option<PathBuf>,
    /// Whether the server's certificate is checked.
    pub cert_reqs: CertReqs,
}

/// The Sentinel options of a `sentinel://` Redis (Celery's transport options).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SentinelOptions {
    /// The name the sentinels know the master by (`master_name`).
    pub master_name: String,
    /// User for the sentinels themselves (`sentinel_kwargs.username`).
    pub username: Option<String>,
    /// Password for the sentinels themselves (`sentinel_kwargs.password`).
    pub password: Option<String>,
}

impl std::fmt::Debug for SentinelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelOptions")
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// One Redis as the config describes it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisSpec {
    /// `redis://[user:password@]host:port/db`, `rediss://…`, or
    /// `sentinel://[user:password@]host:port/db;sentinel://host2:port…`.
    pub url: String,
    /// TLS options, for `rediss://` (or the master behind Sentinel). Boxed, as the
    /// Sentinel options: most specs have neither.
    pub tls: Option<Box<TlsOptions>>,
    /// Sentinel options, required with `sentinel://` and refused otherwise.
    pub sentinel: Option<Box<SentinelOptions>>,
}

impl RedisSpec {
    /// A plain URL with no options.
    pub fn url(url: impl Into<String>) -> RedisSpec {
        RedisSpec { url: url.into(), tls: None, sentinel: None }
    }
}

impl std::fmt::Debug for RedisSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSpec")
            .field("url", &redacted(&self.url))
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .finish()
    }
}

/// `url` with any password in it replaced by `***`, fit for a message.
pub fn redacted(url: &str) -> String {
    url.split(';')
        .map(|part| {
            let Some((scheme, rest)) = part.split_once("://") else { return part.to_owned() };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                    let shown = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
                    format!("{scheme}://{shown}{}", &rest[at..])
                }
                None => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A Redis ready to connect to: the URL parsed, the certificates read.
#[derive(Clone)]
pub struct RedisTarget {
    /// Which Redis: `broker`, `result backend`, `fleet`.
    which: &'static str,
    db: i64,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Direct(Box<redis::Client>),
    /// A tokio mutex: asking the sentinels holds it across their replies.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Direct(_) => "direct",
            Kind::Sentinel(_) => "sentinel",
        };
        f.debug_struct("RedisTarget").field("which", &self.which).field("db", &self.db).field("kind", &kind).finish()
    }
}

/// Why a [`RedisSpec`] cannot be used, or a Redis cannot be reached; never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The spec is wrong: the URL, an option, a certificate file.
    #[error("{0}")]
    Invalid(String),
    /// Connecting failed: refused, timed out, TLS handshake, authentication.
    #[error("{action}: {source}")]
    Connect {
        /// What was being done.
        action: String,
        /// The client's error.
        source: RedisError,
    },
}

impl RedisTarget {
    /// Parses `spec` and reads its certificate files, without connecting. `which` names
    /// the Redis in what is logged.
    pub fn open(which: &'static str, spec: &RedisSpec) -> Result<RedisTarget, TargetError> {
        let invalid = |reason: String| TargetError::Invalid(reason);
        let (url, query_tls) = split_tls_query(&spec.url).map_err(invalid)?;
        let tls = merge_tls(spec.tls.as_deref(), query_tls).map_err(invalid)?;
        let scheme = url.split_once("://").map(|(scheme, _)| scheme).unwrap_or_default();
        match scheme {
            "redis" | "rediss" => {
                if spec.sentinel.is_some() {
                    return Err(invalid(format!(
                        "master_name is for sentinel:// URLs; this one is {scheme}://, not a Sentinel"
                    )));
                }
                let client = direct_client(&url, scheme == "rediss", tls.as_ref())?;
                let db = client.get_connection_info().redis_settings().db();
                if db < 0 {
                    return Err(invalid("the database number is negative".into()));
                }
                Ok(RedisTarget { which, db, kind: Kind::Direct(Box::new(client)) })
            }
            "sentinel" => {
                let options =
                    spec.sentinel.as_ref().filter(|s| !s.master_name.is_empty()).ok_or_else(|| {
                        invalid("a sentinel:// URL needs master_name in the transport options".into())
                    })?;
                let (client, db) = sentinel_client(&url, options, tls.as_ref())?;
                Ok(RedisTarget { which, db, kind: Kind::Sentinel(Arc::new(tokio::sync::Mutex::new(client))) })
            }
            _ => Err(invalid(format!(
                "{:?} is not a Redis URL like redis://[user:password@]host:port/db, rediss://… or \
                 sentinel://host:port;sentinel://…",
                redacted(&spec.url)
            ))),
        }
    }

    /// Which Redis this is (`broker`, `result backend`, `fleet`).
    pub fn which(&self) -> &'static str {
        self.which
    }

    /// The database number the URL names.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// A client of the Redis to use now: the configured one, or the master the sentinels
    /// name at this moment.
    pub async fn client(&self) -> Result<redis::Client, TargetError> {
        match &self.kind {
            Kind::Direct(client) => Ok((**client).clone()),
            Kind::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(2 * CONNECT_TIMEOUT, sentinel.async_get_client())
                    .await
                    .unwrap_or_else(|_| Err(timed_out()))
                    .map_err(|source| TargetError::Connect {
                        action: "ask the sentinels for the master".into(),
                        source,
                    })
            }
        }
    }

    /// A reconnecting multiplexed connection that fails fast, and follows the master
    /// behind Sentinel. Fails if the Redis cannot be reached, the TLS handshake fails or
    /// the credentials are refused.
    ///
    /// redis-rs retries a lost connection 6 times by default, up to minutes apart, so an
    /// unreachable Redis would hold every command for a long time. One retry after
    /// 100 ms, each attempt capped at 2 s, makes a command fail within a
    /// few seconds instead, and the next one tries again.
    pub async fn link(&self) -> Result<RedisLink, TargetError> {
        let client = self.client().await?;
        let address = client.get_connection_info().addr().to_string();
        let manager = manager(client).await?;
        Ok(RedisLink {
            target: self.clone(),
            current: Arc::new(Mutex::new(Current { manager, address })),
            resolved: Arc::new(tokio::sync::Mutex::new(Instant::now())),
            db: self.db,
        })
    }
}

async fn manager(client: redis::Client) -> Result<ConnectionManager, TargetError> {
    let config = ConnectionManagerConfig::new()
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(1)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|source| TargetError::Connect { action: "connect".into(), source })
}

fn timed_out() -> RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// A connection to a [`RedisTarget`], cheap to clone (clones share it); commands are sent
/// through it with redis-rs's `AsyncCommands`, `cmd(…).query_async` and pipelines.
#[derive(Clone)]
pub struct RedisLink {
    target: RedisTarget,
    /// A std mutex: the manager is cloned out, never held across an await.
    current: Arc<Mutex<Current>>,
    /// When the sentinels were last asked; a tokio mutex so that one caller asks while
    /// the others wait for its answer.
    resolved: Arc<tokio::sync::Mutex<Instant>>,
    db: i64,
}

struct Current {
    manager: ConnectionManager,
    /// `host:port` of the Redis the manager talks to.
    address: String,
}

impl RedisLink {
    fn manager(&self) -> ConnectionManager {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).manager.clone()
    }

    /// The `host:port` this link talks to now (behind Sentinel, the master it last found).
    pub fn address(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).address.clone()
    }

    /// After a failure that may mean the master moved: asks the sentinels (at most every
    /// [`RESOLVE_INTERVAL`]) and moves to the master they name if it is another one.
    async fn follow_master(&self, error: &RedisError) {
        if !matches!(self.target.kind, Kind::Sentinel(_)) || !moved_master(error) {
            return;
        }
        let mut resolved = self.resolved.lock().await;
        if resolved.elapsed() < RESOLVE_INTERVAL {
            return;
        }
        *resolved = Instant::now();
        let client = match self.target.client().await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(redis = self.target.which, %error, "no master from the sentinels yet");
                return;
            }
        };
        let address = client.get_connection_info().addr().to_string();
        if address == self.address() {
            return;
        }
        match manager(client).await {
            Ok(manager) => {
                tracing::warn!(redis = self.target.which, master = %address, "the sentinels name a new master; moved to it");
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Current { manager, address };
            }
            Err(error) => tracing::warn!(redis = self.target.which, %error, "cannot reach the new master yet"),
        }
    }
}

/// Whether `error` may come from a master that is gone or demoted.
fn moved_master(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.code() == Some("READONLY")
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let mut manager = self.manager();
            let result = manager.req_packed_command(cmd).await;
            if let Err(error) = &result {
                self.follow_master(error).await;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let mut manager = self.manager();
            let result = manager.req_packed_commands(pipeline, offset, count).await;
            if let Err(error) = &result {
                self.follow_master(error).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

/// Makes the rustls provider the process default, once: redis-rs builds its TLS
/// configurations from it.
fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Err means another part of the process installed one first: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn direct_client(url: &str, tls_url: bool, tls: Option<&TlsOptions>) -> Result<redis::Client, TargetError> {
    // The parser's own error is left out: it may quote the URL.
    let not_a_url = |_: RedisError| {
        TargetError::Invalid(format!(
            "{:?} is not a Redis URL like redis://[user:password@]host:port/db",
            redacted(url)
        ))
    };
    if !tls_url {
        if tls.is_some() {
            return Err(TargetError::Invalid(
                "TLS options are set but the URL is redis://: use rediss:// for TLS".into(),
            ));
        }
        return redis::Client::open(url).map_err(not_a_url);
    }
    install_crypto_provider();
    let options = tls.cloned().unwrap_or_default();
    let url = if options.cert_reqs == CertReqs::None { format!("{url}#insecure") } else { url.to_owned() };
    let client = redis::Client::open(url.as_str()).map_err(not_a_url)?;
    let certificates = certificates(&options)?;
    redis::Client::build_with_tls(client.get_connection_info().clone(), certificates)
        .map_err(|e| TargetError::Invalid(format!("TLS options: {e}")))
}

fn certificates(options: &TlsOptions) -> Result<TlsCertificates, TargetError> {
    let read = |key: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| TargetError::Invalid(format!("{key} {}: {e}", path.display())))
    };
    let root_cert = options.ca_certs.as_ref().map(|p| read("ssl_ca_certs", p)).transpose()?;
    let client_tls = match (&options.certfile, &options.keyfile) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("ssl_certfile", cert)?,
            client_key: read("ssl_keyfile", key)?,
        }),
        (None, None) => None,
        (Some(_), None) => return Err(TargetError::Invalid("ssl_certfile needs ssl_keyfile".into())),
        (None, Some(_)) => return Err(TargetError::Invalid("ssl_keyfile needs ssl_certfile".into())),
    };
    Ok(TlsCertificates { client_tls, root_cert })
}

/// One `sentinel://[user:password@]host[:port][/db]` of the list.
struct SentinelUrl {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: Option<i64>,
}

fn parse_sentinel_url(part: &str) -> Result<SentinelUrl, String> {
    let shown = redacted(part);
    let rest = part.strip_prefix("sentinel://").ok_or_else(|| format!("{shown:?} is not a sentinel:// URL"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => {
                ((!user.is_empty()).then(|| percent_decode(user)), Some(percent_decode(password)))
            }
            None => (None, Some(percent_decode(info))),
        },
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) => {
            (host, port.parse::<u16>().map_err(|_| format!("{shown:?}: the port {port:?} is not a number"))?)
        }
        None => (hostport, 26379),
    };
    if host.is_empty() {
        return Err(format!("{shown:?} names no host"));
    }
    let db = match path.trim_end_matches('/') {
        "" => None,
        db => Some(
            db.parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| format!("{shown:?}: the database {db:?} is not a number from 0"))?,
        ),
    };
    Ok(SentinelUrl { host: host.to_owned(), port, username, password, db })
}

fn sentinel_client(
    url: &str,
    options: &SentinelOptions,
    tls: Option<&TlsOptions>,
) -> Result<(SentinelClient, i64), TargetError> {
    let parts = url.split(';').filter(|p| !p.is_empty()).map(parse_sentinel_url).collect::<Result<Vec<_>, _>>();
    let parts = parts.map_err(TargetError::Invalid)?;
    let Some(first) = parts.first() else { return Err(TargetError::Invalid("names no sentinel".into())) };
    // As kombu does: the first URL's credentials and database are the master's.
    let db = first.db.unwrap_or(0);
    let addresses = parts.iter().map(|p| ConnectionAddr::Tcp(p.host.clone(), p.port));
    let invalid = |e: RedisError| TargetError::Invalid(format!("sentinel options: {e}"));
    let mut builder = SentinelClientBuilder::new(addresses, &options.master_name, SentinelServerType::Master)
        .map_err(invalid)?
        .set_client_to_redis_db(db);
    if let Some(username) = &first.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &first.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(username) = &options.username {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = &options.password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(tls) = tls {
        install_crypto_provider();
        let mode = if tls.cert_reqs == CertReqs::None { TlsMode::Insecure } else { TlsMode::Secure };
        builder = builder.set_client_to_redis_tls_mode(mode).set_client_to_redis_certificates(certificates(tls)?);
    }
    Ok((builder.build().map_err(invalid)?, db))
}

/// Takes Celery's `ssl_*` query parameters out of `url` (`rediss://…?ssl_cert_reqs=required`).
fn split_tls_query(url: &str) -> Result<(String, Option<TlsOptions>), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None)) };
    let mut tls = TlsOptions::default();
    let mut found = false;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "ssl_cert_reqs" => {
                tls.cert_reqs = CertReqs::parse(&value)
                    .ok_or_else(|| format!("ssl_cert_reqs={value:?} in the URL is not none, optional or required"))?;
            }
            "ssl_ca_certs" => tls.ca_certs = Some(value.into()),
            "ssl_certfile" => tls.certfile = Some(value.into()),
            "ssl_keyfile" => tls.keyfile = Some(value.into()),
            _ => {
                kept.push(pair);
                continue;
            }
        }
        found = true;
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, found.then_some(tls)))
}

fn merge_tls(table: Option<&TlsOptions>, query: Option<TlsOptions>) -> Result<Option<TlsOptions>, String> {
    match (table, query) {
        (Some(_), Some(_)) => Err("TLS options are both in the URL and in the use_ssl table: keep one".into()),
        (Some(table), None) => Ok(Some(table.clone())),
        (None, query) => Ok(query),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_every_password() {
        assert_eq!(redacted("redis://u:s3cret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redacted("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted("rediss://s3cret@h/0?x=1"), "rediss://***@h/0?x=1");
        assert_eq!(redacted("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redacted("sentinel://:pw@a:1;sentinel://b:2"), "sentinel://:***@a:1;sentinel://b:2");
    }

    #[test]
    fn celery_spellings_of_cert_reqs() {
        assert_eq!(CertReqs::parse("CERT_REQUIRED"), Some(CertReqs::Required));
        assert_eq!(CertReqs::parse("none"), Some(CertReqs::None));
        assert_eq!(CertReqs::parse("Optional"), Some(CertReqs::Optional));
        assert_eq!(CertReqs::parse("yes"), None);
    }

    #[test]
    fn tls_query_parameters_are_taken_out_of_the_url() {
        let (url, tls) =
            split_tls_query("rediss://h:1/0?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=%2Fca.pem&protocol=resp2")
                .expect("parses");
        assert_eq!(url, "rediss://h:1/0?protocol=resp2");
        let tls = tls.expect("tls");
        assert_eq!((tls.cert_reqs, tls.ca_certs), (CertReqs::None, Some("/ca.pem".into())));
        assert!(split_tls_query("rediss://h/0?ssl_cert_reqs=maybe").is_err());
    }

    #[test]
    fn sentinel_urls_read_like_kombus() {
        let url = parse_sentinel_url("sentinel://user:p%40ss@10.0.0.1:26380/3").expect("parses");
        assert_eq!(
            (url.host.as_str(), url.port, url.username.as_deref(), url.password.as_deref(), url.db),
            ("10.0.0.1", 26380, Some("user"), Some("p@ss"), Some(3))
        );
        let url = parse_sentinel_url("sentinel://h").expect("parses");
        assert_eq!((url.port, url.db), (26379, None));
        let error = parse_sentinel_url("sentinel://:pw@h:x/0").err().expect("bad port");
        assert!(!error.contains("pw"), "{error}");
    }

    #[test]
    fn open_checks_without_connecting() {
        let open = |spec: RedisSpec| RedisTarget::open("broker", &spec).map(|t| t.db()).map_err(|e| e.to_string());
        assert_eq!(open(RedisSpec::url("redis://u:pw@127.0.0.1:1/4")), Ok(4));
        assert_eq!(open(RedisSpec::url("rediss://127.0.0.1:1/2?ssl_cert_reqs=none")), Ok(2));
        let sentinel = SentinelOptions { master_name: "m".into(), ..SentinelOptions::default() };
        let spec = RedisSpec {
            sentinel: Some(Box::new(sentinel.clone())),
            ..RedisSpec::url("sentinel://a:1/5;sentinel://b:2/5")
        };
        assert_eq!(open(spec), Ok(5));
        let errors = [
            (RedisSpec::url("http://:pw@h/0"), "is not a Redis URL like"),
            (RedisSpec::url("sentinel://h:1"), "needs master_name"),
            (RedisSpec { sentinel: Some(Box::new(sentinel)), ..RedisSpec::url("redis://h/0") }, "not a Sentinel"),
            (RedisSpec { tls: Some(Box::default()), ..RedisSpec::url("redis://h/0") }, "use rediss://"),
            (
                RedisSpec {
                    tls: Some(Box::new(TlsOptions {
                        ca_certs: Some("/nonexistent/ca.pem".into()),
                        ..TlsOptions::default()
                    })),
                    ..RedisSpec::url("rediss://:pw@h/0")
                },
                "ssl_ca_certs /nonexistent/ca.pem: No such file",
            ),
        ];
        for (spec, expected) in errors {
            let error = open(spec).expect_err("refused");
            assert!(error.contains(expected) && !error.contains("pw@"), "{error}");
        }
    }
}
