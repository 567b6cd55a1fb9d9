//! HTTP/1.1 client connections to one upstream, on the caller's own task, kept alive in a
//! [`Pool`]: the proxy's legacy leg streams through them ([`Pool::send_streamed`]), and the
//! mirror's own requests (the HTTP shadow's submissions, result polls, `drive`) exchange
//! whole bodies ([`Pool::send`]).
//!
//! There is no connection task and no channel: the request's task writes the request and
//! reads the response itself. What is read follows RFC 9112: a response framed by
//! `Transfer-Encoding: chunked`, by `Content-Length`, or by the connection's close; none for
//! `HEAD`, 204 and 304; interim 1xx responses skipped. A connection is reused only after a
//! complete exchange that did not ask to close it, and an idle one the upstream has closed
//! (or sent anything on) is never used again.
//!
//! - `head`: reading a response head. `decode`: undoing a body's framing.
//! - `whole`: whole-body exchanges. `stream`: streamed ones.

mod decode;
mod head;
mod stream;
mod whole;

use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hyper::header::HeaderValue;
use hyper::http::uri::Authority;
use hyper::Method;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub use self::head::Head;
pub use self::stream::ResponseBody;
pub use self::whole::Request;

/// Longest response head read (status line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head (and trailer fields after a chunked body).
const MAX_HEADERS: usize = 100;
/// How much more is asked of the socket at a time, at least.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// No connection could be opened.
    Connect(io::Error),
    /// Writing the request or reading the response head failed.
    Io(io::Error),
    /// The connection closed before a whole response head arrived.
    Closed,
    /// The response head is not HTTP/1.x as this client reads it.
    Head(String),
    /// The response body broke off, was malformed or grew past the limit.
    Body(String),
    /// The request body failed before it was all sent (the client's fault).
    RequestBody(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(error) => write!(f, "tcp connect error: {error}"),
            Error::Io(error) => write!(f, "connection error: {error}"),
            Error::Closed => f.write_str("connection closed before the response head was complete"),
            Error::Head(why) => write!(f, "invalid response head: {why}"),
            Error::Body(why) => f.write_str(why),
            Error::RequestBody(why) => write!(f, "request body failed: {why}"),
        }
    }
}

impl StdError for Error {}

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

/// One keep-alive connection, used by one exchange at a time on the task that sends it.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet taken.
    read: BytesMut,
    /// Whether it has carried an exchange before this one.
    reused: bool,
    /// Its place under the pool's cap, given back when the connection is dropped.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connection {
    /// Connects to `address` (`host:port`).
    async fn open(address: &str, config: &PoolConfig, permit: Option<OwnedSemaphorePermit>) -> Result<Self, Error> {
        let stream = TcpStream::connect(address).await.map_err(Error::Connect)?;
        // Small request/response exchanges must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        if let Some(time) = config.tcp_keepalive {
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(time));
        }
        // The read buffer is allocated by the first read: a connection to an upstream that
        // never answers holds none.
        Ok(Connection { stream, read: BytesMut::new(), reused: false, _permit: permit })
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it
    /// nor sent anything since its last response.
    fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        self.read.is_empty()
            && matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads the response head to a request already written (or being written).
    async fn read_head(&mut self, method: &Method, fields: bool) -> Result<Head, Error> {
        loop {
            if let Some(head) = self.parse_head(method, fields)? {
                return Ok(head);
            }
            if self.fill(0).await.map_err(Error::Io)? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// The final response head at the start of what was read, if it is all there.
    fn parse_head(&mut self, method: &Method, fields: bool) -> Result<Option<Head>, Error> {
        let head = head::parse(&mut self.read, method, fields)?;
        if head.is_none() && self.read.len() >= MAX_HEAD_BYTES {
            return Err(Error::Head(format!("longer than {MAX_HEAD_BYTES} bytes")));
        }
        Ok(head)
    }

    /// One read from the socket into the buffer, room made first for `expected` more bytes
    /// (up to a mebibyte) or a chunk; 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, expected: u64) -> Poll<io::Result<usize>> {
        let room = usize::try_from(expected).unwrap_or(usize::MAX).clamp(READ_CHUNK, 1 << 20);
        if self.read.capacity() - self.read.len() < room.min(READ_CHUNK) / 2 {
            self.read.reserve(room);
        }
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.read) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    async fn fill(&mut self, expected: u64) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx, expected)).await
    }

    /// Whether the exchange just over, its body `body_bytes` long, leaves the connection
    /// fit for another one (if its head allowed that: `keep_alive`). A buffer grown for a large body, or sharing its memory, is let
    /// go first: an idle connection must not keep a body's memory alive.
    fn finish(&mut self, keep_alive: bool, body_bytes: u64) -> bool {
        self.reused = true;
        // Anything read past the response is not an answer to anything: no reuse.
        let reusable = keep_alive && self.read.is_empty();
        if body_bytes > READ_CHUNK as u64 || self.read.capacity() > 2 * READ_CHUNK {
            self.read = BytesMut::new();
        }
        reusable
    }
}

/// Keep-alive connections to one upstream, most recently idle first; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port` to connect to.
    address: String,
    /// `Host` for requests that carry none (the port only when not 80).
    host: HeaderValue,
    config: PoolConfig,
    /// Places for the connections open at once, idle ones included, shared by the pools
    /// under one cap (`None`: no cap).
    cap: Option<Arc<Semaphore>>,
    /// Idle connections, most recent last. A std mutex: never held across an `.await`.
    idle: Mutex<Vec<(Connection, Instant)>>,
    /// Wakes requests waiting for a place under the cap when a connection comes back.
    returned: Notify,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("http1::Pool").field("address", &self.inner.address).finish()
    }
}

impl Pool {
    /// A pool for the upstream at `authority` (port 80 when it names none), its open
    /// connections under `cap` when there is one: each holds a place for as long as its
    /// socket is open, idle or not.
    pub fn new(authority: &Authority, config: PoolConfig, cap: Option<Arc<Semaphore>>) -> Pool {
        let port = authority.port_u16().unwrap_or(80);
        let address = format!("{}:{port}", authority.host());
        let host = if port == 80 { authority.host() } else { authority.as_str() };
        let host = HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let idle = Mutex::new(Vec::new());
        Pool { inner: Arc::new(Inner { address, host, config, cap, idle, returned: Notify::new() }) }
    }

    /// Takes a connection back after a complete exchange, unless it cannot be reused.
    pub fn checkin(&self, connection: Connection, reusable: bool) {
        self.inner.checkin(connection, reusable);
    }

    /// The most recently idle connection still usable, or a new one (waiting for a place
    /// under the cap when there is one); [`Connection::reused`] tells which.
    async fn checkout(&self) -> Result<Connection, Error> {
        loop {
            if let Some(connection) = self.inner.pop_idle() {
                return Ok(connection);
            }
            let Some(permits) = &self.inner.cap else {
                return Connection::open(&self.inner.address, &self.inner.config, None).await;
            };
            let returned = self.inner.returned.notified();
            tokio::pin!(returned);
            // Registered before looking again, so a connection coming back in between
            // is not missed.
            returned.as_mut().enable();
            if self.inner.has_idle() {
                continue;
            }
            tokio::select! {
                permit = Arc::clone(permits).acquire_owned() => {
                    // The semaphore is never closed.
                    let permit = permit.map_err(|_| Error::Connect(io::ErrorKind::Other.into()))?;
                    return Connection::open(&self.inner.address, &self.inner.config, Some(permit)).await;
                }
                () = &mut returned => {}
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Vec<(Connection, Instant)>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently idle connection still young and open; older or closed ones are dropped.
    fn pop_idle(&self) -> Option<Connection> {
        let mut idle = self.lock();
        let now = Instant::now();
        while let Some((connection, since)) = idle.pop() {
            if now.duration_since(since) < self.config.idle_timeout && connection.is_usable() {
                return Some(connection);
            }
        }
        None
    }

    fn has_idle(&self) -> bool {
        !self.lock().is_empty()
    }

    fn checkin(&self, connection: Connection, reusable: bool) {
        if reusable {
            let now = Instant::now();
            let mut idle = self.lock();
            // The oldest are at the bottom: close those past their time.
            let expired = idle.iter().take_while(|(_, since)| now.duration_since(*since) >= self.config.idle_timeout);
            let expired = expired.count();
            idle.drain(..expired);
            if idle.len() < self.config.max_idle {
                idle.push((connection, now));
            }
        }
        // Dropped or kept, a place under the cap may be free now.
        if self.cap.is_some() {
            self.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
