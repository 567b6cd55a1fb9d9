//! Keep-alive HTTP/1.1 connections to one upstream: a stack of idle senders of hyper's
//! `client::conn::http1`, reused most recently idle first.
//!
//! Its IO is the connections themselves: each is a socket and a task of its own that runs
//! hyper's connection until the socket closes. A request takes an idle connection (or
//! opens one), and its connection goes back on the stack when the response body has been
//! read to its end ([`PooledBody`]); a body dropped half-read closes its connection.
//!
//! It does per request only what the proxy needs (no per-request task, no boxed future,
//! no keyed pool): the legacy forwarding path, whose bodies stream, sends through one; the
//! mirror's whole-body requests have [`super::http1`]. Its connections are not capped:
//! the client connections they serve bound them.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{progress, Progress};

/// Why a request got no response head.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The connection failed before or while the request was sent, or before the head.
    Http(hyper::Error),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Connect(_) => f.write_str("tcp connect error"),
            PoolError::Http(_) => f.write_str("connection error"),
        }
    }
}

impl StdError for PoolError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PoolError::Connect(error) => Some(error),
            PoolError::Http(error) => Some(error),
        }
    }
}

/// How a [`Pool`] connects and keeps connections.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Idle connections kept; more are closed when they come back.
    pub max_idle: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// TCP keep-alive probes after this much silence (`None`: the system's default).
    pub tcp_keepalive: Option<Duration>,
}

/// Pooled connections to one upstream; cheap to clone.
pub struct Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool { inner: Arc::clone(&self.inner) }
    }
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("address", &self.inner.address).finish()
    }
}

struct Inner<B> {
    /// `host:port` to connect to.
    address: String,
    /// The `Host` header for requests that carry none (the port only when not 80).
    host: HeaderValue,
    config: PoolConfig,
    /// The idle stack, most recent last. A std mutex: push and pop only, never across
    /// an `.await`.
    idle: Mutex<Vec<Idle<B>>>,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// A pool for the upstream at `authority` (`host` or `host:port`; port 80 by default).
    pub fn new(authority: &Authority, config: PoolConfig) -> Pool<B> {
        let port = authority.port_u16().unwrap_or(80);
        let address = format!("{}:{port}", authority.host());
        let host = if port == 80 { authority.host() } else { authority.as_str() };
        let host = HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Pool { inner: Arc::new(Inner { address, host, config, idle: Mutex::new(Vec::new()) }) }
    }

    /// Sends `request` and waits for the response head. The request's URI is sent in
    /// origin form (its path and query); it gets this upstream's `Host` if it has none.
    ///
    /// A request that a reused connection closed on before taking it (the upstream
    /// dropped an idle connection at that moment) is sent again on another one.
    pub async fn send(&self, mut request: Request<B>) -> Result<Response<PooledBody<B>>, PoolError> {
        origin_form(request.uri_mut());
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.inner.host.clone());
        }
        loop {
            let (mut sender, reused) = self.checkout().await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pool = Arc::clone(&self.inner);
                    return Ok(response.map(|body| PooledBody { body, home: Some((sender, pool)) }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::Http(error.into_error())),
                },
            }
        }
    }

    /// A ready connection: the most recently idle one, or a new one.
    async fn checkout(&self) -> Result<(SendRequest<B>, bool), PoolError> {
        while let Some(mut sender) = self.inner.pop_idle() {
            // Ready at once unless it is just finishing its last response; an error means
            // the upstream closed it.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    /// Opens a connection and runs it on a task of its own until the socket closes.
    async fn connect(&self) -> Result<SendRequest<B>, PoolError> {
        let stream = TcpStream::connect(self.inner.address.as_str()).await.map_err(PoolError::Connect)?;
        // Small request/response exchanges must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        if let Some(time) = self.inner.config.tcp_keepalive {
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(time));
        }
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(PoolError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl<B> Inner<B> {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle<B>>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently idle connection still young enough; older ones are closed.
    fn pop_idle(&self) -> Option<SendRequest<B>> {
        let mut idle = self.lock();
        let now = Instant::now();
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < self.config.idle_timeout && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// A connection whose response is over comes back (unless it is closing).
    fn checkin(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The oldest are at the bottom: close those past their time.
        let expired =
            idle.iter().take_while(|entry| now.saturating_duration_since(entry.since) >= self.config.idle_timeout);
        let expired = expired.count();
        idle.drain(..expired);
        if idle.len() < self.config.max_idle {
            idle.push(Idle { sender, since: now });
        }
    }
}

/// A request URI in origin form: its path and query only (`/` when it has none).
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = hyper::http::uri::Parts::default();
    parts.path_and_query = Some(path);
    if let Ok(origin) = Uri::from_parts(parts) {
        *uri = origin;
    }
}

/// A response body from a pooled connection, which goes back to the pool once this body
/// has been read to its end (or ended without being read).
pub struct PooledBody<B> {
    body: Incoming,
    home: Option<(SendRequest<B>, Arc<Inner<B>>)>,
}

impl<B> PooledBody<B> {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.home.take() {
            pool.checkin(sender);
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match progress(&polled, &this.body) {
            Progress::Ended => this.release(),
            // A broken body leaves its connection unusable: drop the sender.
            Progress::Failed(_) => this.home = None,
            Progress::Going => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // An empty body is dropped unread, its connection free; one dropped half-read
        // takes its connection with it.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl<B> fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody").field("body", &self.body).finish()
    }
}

/// `error: cause: cause`, so that "connection refused" survives into logs and reports.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_in_origin_form() {
        let mut uri: Uri = "http://127.0.0.1:8000/evaluations?x=1".parse().expect("uri");
        origin_form(&mut uri);
        assert_eq!(uri, "/evaluations?x=1");
        let mut bare: Uri = "http://api-service".parse().expect("uri");
        origin_form(&mut bare);
        assert_eq!(bare, "/");
    }

    #[test]
    fn the_host_header_names_the_port_unless_it_is_80() {
        let pool = Pool::<http_body_util::Empty<Bytes>>::new(&Authority::from_static("api:8000"), config());
        assert_eq!(pool.inner.host, "api:8000");
        assert_eq!(pool.inner.address, "api:8000");
        let pool = Pool::<http_body_util::Empty<Bytes>>::new(&Authority::from_static("api"), config());
        assert_eq!(pool.inner.host, "api");
        assert_eq!(pool.inner.address, "api:80");
    }

    fn config() -> PoolConfig {
        PoolConfig { max_idle: 4, idle_timeout: Duration::from_secs(90), tcp_keepalive: None }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_keeps_every_cause() {
        let error = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(error_chain(&error), "outer: refused");
    }
}
