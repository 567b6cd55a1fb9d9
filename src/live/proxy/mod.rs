//! The legacy path: an HTTP reverse proxy in front of `api-service`.
//!
//! Every request goes to the legacy upstream and the client gets exactly its answer:
//! status, headers and body, minus the hop-by-hop fields (RFC 9110 §7.6.1) and plus `Via`
//! and `X-Forwarded-*` when configured. Bodies stream in both directions and are never
//! buffered whole. Requests the [`Tap`] asks for are *captured*: both bodies are copied
//! (capped) as they stream, and the tap receives one [`Exchange`] after the response is
//! over. Nothing on the tap's side can delay, fail or change the client's answer.
//!
//! - [`serve`]: accept loop, HTTP/1.1 and HTTP/2 (prior knowledge), graceful shutdown.
//! - `forward`: one request to the legacy upstream and back, 502/504 on a legacy failure,
//!   400/408 on a client's (see [`client`]), 405 for `CONNECT`.
//! - `headers`: hop-by-hop removal and list-valued additions.
//! - `capture`: the tee body and the once-only delivery of an exchange.
//! - [`tap`]: what the tap sees. [`stats`]: what the proxy counts.
//!
//! The `Host` header is forwarded as the client sent it (from `:authority` for HTTP/2
//! clients), so the legacy upstream sees the name the client used, not its own address.

mod capture;
pub mod client;
mod forward;
mod headers;
pub mod stats;
pub mod tap;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::http::uri::{Authority, Scheme};
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, Instrument};

pub use self::client::ClientFault;
pub use self::stats::{ProxyStats, ProxyStatsSnapshot};
pub use self::tap::{Captured, Exchange, LegacyOutcome, Tap};

use self::forward::{Forwarder, Peer};
use crate::live::listener::{self, Activity, ConnectionLimits, TimedIo};

/// How the proxy reaches and presents itself to the legacy upstream.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Base URI of the legacy upstream, `http://host:port` (plain HTTP, no path): requests
    /// keep their own path and query.
    pub legacy: Uri,
    /// Time from sending a request to the legacy response head; past it the client gets a
    /// 504. Covers connecting and sending the request body; not the response body.
    pub legacy_timeout: Duration,
    /// Appended to `Via` on requests and responses, e.g. `Some("1.1 shadowdiff")`.
    pub via: Option<String>,
    /// Append the client address to `X-Forwarded-For` and set `X-Forwarded-Proto: http`
    /// when the client did not send one.
    pub forwarded_headers: bool,
    /// Cap on each captured body copy; larger bodies are captured as [`Captured::TooLarge`].
    pub max_capture_bytes: usize,
    /// How long a client connection may stay silent (see [`listener`]).
    pub limits: ConnectionLimits,
}

/// Why a [`ProxyConfig`] cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `legacy` is not a plain `http://` URI.
    #[error("legacy upstream `{0}` must use the http scheme")]
    LegacyScheme(Uri),
    /// `legacy` has no host.
    #[error("legacy upstream `{0}` has no host")]
    LegacyAuthority(Uri),
    /// `legacy` has a path or query, which the proxy would silently drop.
    #[error("legacy upstream `{0}` must not have a path or query")]
    LegacyPath(Uri),
    /// `legacy_timeout` is zero, which would answer every request 504.
    #[error("legacy timeout must be greater than zero")]
    ZeroTimeout,
    /// `via` is not a valid header value.
    #[error("via `{0}` is not a valid header value")]
    Via(String),
}

impl ProxyConfig {
    /// Checks the config and turns it into what the forwarding path uses.
    fn target(&self) -> Result<LegacyTarget, ConfigError> {
        let legacy = &self.legacy;
        if legacy.scheme() != Some(&Scheme::HTTP) {
            return Err(ConfigError::LegacyScheme(legacy.clone()));
        }
        let authority = legacy.authority().cloned().ok_or_else(|| ConfigError::LegacyAuthority(legacy.clone()))?;
        if !matches!(legacy.path(), "" | "/") || legacy.query().is_some() {
            return Err(ConfigError::LegacyPath(legacy.clone()));
        }
        if self.legacy_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        let via = match &self.via {
            Some(via) => Some(HeaderValue::from_str(via).map_err(|_| ConfigError::Via(via.clone()))?),
            None => None,
        };
        Ok(LegacyTarget {
            authority,
            timeout: self.legacy_timeout,
            via,
            forwarded_headers: self.forwarded_headers,
            max_capture_bytes: self.max_capture_bytes,
        })
    }
}

/// A validated [`ProxyConfig`], in the types the hot path needs.
struct LegacyTarget {
    authority: Authority,
    timeout: Duration,
    via: Option<HeaderValue>,
    forwarded_headers: bool,
    max_capture_bytes: usize,
}

/// Serves the proxy on `listener` until `shutdown` is cancelled, then stops accepting and
/// waits for the open connections to finish their in-flight requests (idle keep-alive
/// connections close at once; HTTP/2 clients get a GOAWAY).
///
/// Returns only when every connection is done, so put a deadline around it. Fails at once,
/// before accepting anything, with [`io::ErrorKind::InvalidInput`] wrapping a
/// [`ConfigError`] if the config is invalid.
pub async fn serve(
    listener: TcpListener,
    config: ProxyConfig,
    tap: Arc<dyn Tap>,
    stats: Arc<ProxyStats>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let target = config.target().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let forwarder = Arc::new(Forwarder::new(target, tap, Arc::clone(&stats)));

    let limits = config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true).header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            (stream, peer) = listener::accept(&listener, stats.accept_errors()) => {
                spawn_connection(&builder, &graceful, stream, peer, Arc::clone(&forwarder), limits);
            }
        }
    }

    drop(listener);
    debug!(connections = graceful.count(), "stopped accepting; draining connections");
    graceful.shutdown().await;
    Ok(())
}

/// Serves one accepted client connection on its own task, watched for graceful shutdown.
fn spawn_connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    forwarder: Arc<Forwarder>,
    limits: ConnectionLimits,
) {
    // Small request/response exchanges must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let requests = Arc::clone(&activity);
    let client = Arc::new(Peer::new(peer));
    let service = service_fn(move |request: Request<Incoming>| {
        let forwarder = Arc::clone(&forwarder);
        let client = Arc::clone(&client);
        let busy = requests.request(request.version() == hyper::Version::HTTP_2);
        let span = debug_span!("request", method = %request.method(), path = %request.uri().path());
        async move {
            let response = forwarder.forward(request, &client).instrument(span).await;
            Ok::<_, Infallible>(response.map(|body| body.with_busy(busy)))
        }
    });
    let io = TokioIo::new(TimedIo::new(stream, Arc::clone(&activity)));
    let connection = builder.serve_connection(io, service).into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        match listener::guard(connection, activity, limits).await {
            Some(Err(error)) => debug!(%peer, %error, "client connection ended with an error"),
            Some(Ok(())) => {}
            None => debug!(%peer, "client connection closed: silent past its timeout"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(legacy: &str) -> ProxyConfig {
        ProxyConfig {
            legacy: legacy.parse().expect("uri"),
            legacy_timeout: Duration::from_secs(1),
            via: Some("1.1 shadowdiff".to_owned()),
            forwarded_headers: true,
            max_capture_bytes: 64,
            limits: ConnectionLimits::default(),
        }
    }

    #[test]
    fn a_plain_http_base_is_accepted() {
        let target = config("http://127.0.0.1:8000").target().expect("valid");
        assert_eq!(target.authority.as_str(), "127.0.0.1:8000");
        assert_eq!(target.via, Some(HeaderValue::from_static("1.1 shadowdiff")));
        assert!(config("http://api-service:8000/").target().is_ok());
    }

    #[test]
    fn each_invalid_field_is_named() {
        let message = |config: ProxyConfig| config.target().err().map(|error| error.to_string());
        assert_eq!(
            message(config("https://127.0.0.1:8000")).as_deref(),
            Some("legacy upstream `https://127.0.0.1:8000/` must use the http scheme")
        );
        assert_eq!(
            message(config("http://127.0.0.1:8000/api?x=1")).as_deref(),
            Some("legacy upstream `http://127.0.0.1:8000/api?x=1` must not have a path or query")
        );
        assert_eq!(
            message(config("/relative")).as_deref(),
            Some("legacy upstream `/relative` must use the http scheme")
        );
        let mut zero = config("http://127.0.0.1:8000");
        zero.legacy_timeout = Duration::ZERO;
        assert_eq!(message(zero).as_deref(), Some("legacy timeout must be greater than zero"));
        let mut bad_via = config("http://127.0.0.1:8000");
        bad_via.via = Some("1.1 shadow\ndiff".to_owned());
        assert_eq!(message(bad_via).as_deref(), Some("via `1.1 shadow\ndiff` is not a valid header value"));
    }
}
