//! Whole-body HTTP/1.1 exchanges for the mirror's own requests (the HTTP shadow's
//! submissions, result polls, `drive`): the request written at once, the response read to
//! its end, on the caller's own task, over keep-alive connections kept in a [`Pool`].
//!
//! The proxy's forwarding path streams and uses hyper ([`super::pool`]); these requests
//! never stream, so they do without its per-connection task and the channels between it
//! and the request. What is read follows RFC 9112: a response framed by
//! `Transfer-Encoding: chunked`, by `Content-Length`, or by the connection's close; none for
//! `HEAD`, 204 and 304; interim 1xx responses skipped. A connection is reused only after a
//! complete response that did not ask to close it, and an idle one the upstream has closed
//! (or sent anything on) is never used again.

use std::fmt;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::http::uri::Authority;
use hyper::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::pool::PoolConfig;

/// Longest response head read (status line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line.
const MAX_LINE_BYTES: usize = 4096;
/// How much more is asked of the socket at a time.
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
    /// The body broke off, was malformed or grew past the limit.
    Body(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(error) => write!(f, "tcp connect error: {error}"),
            Error::Io(error) => write!(f, "connection error: {error}"),
            Error::Closed => f.write_str("connection closed before the response head was complete"),
            Error::Head(why) => write!(f, "invalid response head: {why}"),
            Error::Body(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

/// One request, as written: the method, the target in origin form, the headers (the
/// connection adds `Host` when there is none, and frames the body itself).
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// Path and query.
    pub target: &'a str,
    /// Header fields; any `Content-Length` or `Transfer-Encoding` among them is left out.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// A response head, read; its body still on the connection.
pub struct Head {
    /// The status.
    pub status: StatusCode,
    framing: Framing,
    keep_alive: bool,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// One keep-alive connection, used by one request at a time on the task that sends it.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet taken.
    read: BytesMut,
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
        // The read buffer is allocated by the first read: a connection to a shadow that
        // never answers holds none.
        Ok(Connection { stream, read: BytesMut::new(), _permit: permit })
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it
    /// nor sent anything since its last response.
    fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        self.read.is_empty()
            && matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the request and reads the response head (skipping interim 1xx ones).
    pub async fn send(&mut self, request: &Request<'_>, host: &HeaderValue) -> Result<Head, Error> {
        let head = encode_head(request, host);
        let mut parts = [IoSlice::new(&head), IoSlice::new(request.body)];
        let mut unsent = &mut parts[..];
        while !unsent.is_empty() {
            let written = self.stream.write_vectored(unsent).await.map_err(Error::Io)?;
            if written == 0 {
                return Err(Error::Io(io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut unsent, written);
        }
        loop {
            if let Some(head) = self.parse_head(request.method)? {
                return Ok(head);
            }
            if self.read.len() >= MAX_HEAD_BYTES {
                return Err(Error::Head(format!("longer than {MAX_HEAD_BYTES} bytes")));
            }
            if self.fill().await.map_err(Error::Io)? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// The final response head at the start of what was read, if it is all there; an
    /// interim one is taken off and skipped.
    fn parse_head(&mut self, method: &Method) -> Result<Option<Head>, Error> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut fields);
            let length = match response.parse(&self.read) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(error) => return Err(Error::Head(error.to_string())),
            };
            let code = response.code.unwrap_or_default();
            let status = StatusCode::from_u16(code).map_err(|_| Error::Head(format!("status {code}")))?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Head("101 Switching Protocols is not supported".into()));
            }
            if status.is_informational() {
                self.read.advance(length);
                continue;
            }
            let head = read_head(status, response.version == Some(1), response.headers, method)?;
            self.read.advance(length);
            return Ok(Some(head));
        }
    }

    /// Reads the body `head` announced, up to `limit` bytes; whether the connection can
    /// then take another request comes with it.
    pub async fn body(&mut self, head: &Head, limit: usize) -> Result<(Bytes, bool), Error> {
        let too_large = || Error::Body(format!("length limit exceeded ({limit} bytes)"));
        let body = match head.framing {
            Framing::Empty => Bytes::new(),
            Framing::Length(length) => {
                let length = usize::try_from(length).ok().filter(|length| *length <= limit).ok_or_else(too_large)?;
                self.fill_to(length, "body").await?;
                self.read.split_to(length).freeze()
            }
            Framing::Chunked => self.chunked(limit).await?,
            Framing::UntilClose => {
                while self.fill().await.map_err(|error| Error::Body(format!("body broke off: {error}")))? > 0 {
                    if self.read.len() > limit {
                        return Err(too_large());
                    }
                }
                self.read.split().freeze()
            }
        };
        let reusable = head.keep_alive && head.framing != Framing::UntilClose && self.read.is_empty();
        // A large body was read into a buffer of its size, which the rest of the read
        // buffer shares: an idle connection must not keep it alive once the body is gone.
        if body.len() > READ_CHUNK || self.read.capacity() > 2 * READ_CHUNK {
            self.read = BytesMut::new();
        }
        Ok((body, reusable))
    }

    /// A chunked body, its chunks joined; trailers are read and left out.
    async fn chunked(&mut self, limit: usize) -> Result<Bytes, Error> {
        let mut body = BytesMut::new();
        loop {
            let line = self.line().await?;
            let size = line.split(|byte| *byte == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .map(str::trim)
                .and_then(|size| usize::from_str_radix(size, 16).ok())
                .ok_or_else(|| Error::Body("invalid chunk size line".into()))?;
            if size == 0 {
                // Trailer fields, up to the empty line: as many as a head may have.
                for _ in 0..=MAX_HEADERS {
                    if self.line().await?.is_empty() {
                        return Ok(body.freeze());
                    }
                }
                return Err(Error::Body(format!("more than {MAX_HEADERS} trailer fields")));
            }
            if body.len().saturating_add(size) > limit {
                return Err(Error::Body(format!("length limit exceeded ({limit} bytes)")));
            }
            self.fill_to(size + 2, "chunk").await?;
            body.extend_from_slice(&self.read[..size]);
            if &self.read[size..size + 2] != b"\r\n" {
                return Err(Error::Body("chunk not followed by CRLF".into()));
            }
            self.read.advance(size + 2);
        }
    }

    /// The next line (without its CRLF), taken off what was read.
    async fn line(&mut self) -> Result<Bytes, Error> {
        loop {
            if let Some(end) = self.read.windows(2).position(|pair| pair == b"\r\n") {
                let line = self.read.split_to(end + 2).freeze();
                return Ok(line.slice(..end));
            }
            if self.read.len() > MAX_LINE_BYTES {
                return Err(Error::Body(format!("chunk line longer than {MAX_LINE_BYTES} bytes")));
            }
            if self.fill().await.map_err(|error| Error::Body(format!("body broke off: {error}")))? == 0 {
                return Err(Error::Body("body broke off in a chunk line".into()));
            }
        }
    }

    /// Reads until at least `length` bytes are waiting.
    async fn fill_to(&mut self, length: usize, what: &str) -> Result<(), Error> {
        while self.read.len() < length {
            self.read.reserve((length - self.read.len()).min(1 << 20));
            let read = self.fill().await.map_err(|error| Error::Body(format!("body broke off: {error}")))?;
            if read == 0 {
                return Err(Error::Body(format!("{what} broke off: connection closed early")));
            }
        }
        Ok(())
    }

    /// One read from the socket into the buffer; 0 at its end.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 2 {
            self.read.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.read).await
    }
}

/// The request line and header fields.
fn encode_head(request: &Request<'_>, host: &HeaderValue) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(request.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &[u8], value: &[u8]| {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    if !request.headers.contains_key(HOST) {
        field(b"host", host.as_bytes());
    }
    for (name, value) in request.headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            field(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    // As hyper frames a whole body: no length for an empty GET or HEAD.
    let bodiless = request.body.is_empty() && matches!(*request.method, Method::GET | Method::HEAD);
    if !bodiless {
        field(b"content-length", request.body.len().to_string().as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// What a final response head says about its body and its connection.
fn read_head(
    status: StatusCode,
    http11: bool,
    fields: &[httparse::Header<'_>],
    method: &Method,
) -> Result<Head, Error> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut close = !http11;
    for field in fields {
        let value = std::str::from_utf8(field.value).unwrap_or("");
        if field.name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let parsed: u64 =
                    part.trim().parse().map_err(|_| Error::Head(format!("invalid content-length {value:?}")))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(Error::Head("content-length values differ".into()));
                }
                length = Some(parsed);
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // Chunked counts only as the last coding.
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if field.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    let framing = if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(length) => Framing::Length(length),
            None => Framing::UntilClose,
        }
    };
    Ok(Head { status, framing, keep_alive: !close })
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

    /// Sends the request on an idle connection (or a new one) and reads the response head.
    pub async fn send(&self, request: &Request<'_>) -> Result<(Connection, Head), Error> {
        let mut connection = self.checkout().await?;
        let head = connection.send(request, &self.inner.host).await?;
        Ok((connection, head))
    }

    /// Takes a connection back after a complete exchange, unless it cannot be reused.
    pub fn checkin(&self, connection: Connection, reusable: bool) {
        if reusable {
            let now = Instant::now();
            let mut idle = self.inner.lock();
            // The oldest are at the bottom: close those past their time.
            let expired =
                idle.iter().take_while(|(_, since)| now.duration_since(*since) >= self.inner.config.idle_timeout);
            let expired = expired.count();
            idle.drain(..expired);
            if idle.len() < self.inner.config.max_idle {
                idle.push((connection, now));
            }
        }
        // Dropped or kept, a place may be free now.
        self.inner.returned.notify_one();
    }

    /// The most recently idle connection still usable, or a new one (waiting for a place
    /// under the cap when there is one).
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream answering each request it reads with the next of `answers` (its raw
    /// bytes); it closes a connection after an answer marked `close`. Returns its address,
    /// the requests it read (raw), and how many connections it accepted.
    async fn upstream(answers: Vec<(&'static str, bool)>) -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (into, count) = (Arc::clone(&seen), Arc::clone(&accepted));
        tokio::spawn(async move {
            let answers = Arc::new(Mutex::new(answers.into_iter()));
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (answers, into) = (Arc::clone(&answers), Arc::clone(&into));
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        // One request: its head, then its Content-Length bytes.
                        let request = loop {
                            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                                let length = head
                                    .lines()
                                    .find_map(|line| line.strip_prefix("content-length: "))
                                    .map_or(0, |n| n.trim().parse::<usize>().expect("length"));
                                if buffer.len() >= end + 4 + length {
                                    break buffer.drain(..end + 4 + length).collect::<Vec<u8>>();
                                }
                            }
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        into.lock().expect("test lock").push(String::from_utf8_lossy(&request).into_owned());
                        let Some((answer, close)) = answers.lock().expect("test lock").next() else { return };
                        let _ = stream.write_all(answer.as_bytes()).await;
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (address, seen, accepted)
    }

    fn pool(address: &str) -> Pool {
        let config = PoolConfig { max_idle: 4, idle_timeout: Duration::from_secs(90), tcp_keepalive: None };
        Pool::new(&address.parse().expect("authority"), config, None)
    }

    /// One exchange through `pool`: status, body, and whether the connection went back.
    async fn exchange(pool: &Pool, method: Method, body: &str) -> Result<(u16, String, bool), Error> {
        let mut headers = HeaderMap::new();
        headers.insert("x-marker", HeaderValue::from_static("m"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        let request = Request { method: &method, target: "/evaluations?x=1", headers: &headers, body: body.as_bytes() };
        let (mut connection, head) = pool.send(&request).await?;
        let (bytes, reusable) = connection.body(&head, 64).await?;
        pool.checkin(connection, reusable);
        Ok((head.status.as_u16(), String::from_utf8_lossy(&bytes).into_owned(), reusable))
    }

    #[tokio::test]
    async fn the_request_is_written_with_host_and_its_own_length() {
        let (address, seen, _) = upstream(vec![("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false)]).await;
        let pool = pool(&address);
        assert_eq!(exchange(&pool, Method::POST, "{\"a\":1}").await.expect("answered"), (200, "ok".into(), true));
        assert_eq!(
            seen.lock().expect("test lock")[0],
            format!(
                "POST /evaluations?x=1 HTTP/1.1\r\nhost: {address}\r\nx-marker: m\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}"
            )
        );
    }

    /// One exchange of a keep-alive run: what the upstream answers (and whether it then
    /// closes the connection), the method sent, and what comes of it: status, body, and
    /// whether the connection went back to the pool.
    type Step = (&'static str, bool, Method, (u16, &'static str, bool));

    /// Sends the steps' requests in turn through one pool, pausing after each so that an
    /// upstream's close reaches the idle connection; how many connections they took.
    async fn keep_alive_run(steps: Vec<Step>) -> usize {
        let answers = steps.iter().map(|(answer, close, _, _)| (*answer, *close)).collect();
        let (address, _, accepted) = upstream(answers).await;
        let pool = pool(&address);
        for (answer, _, method, (status, body, reused)) in steps {
            let got = exchange(&pool, method, "x").await.expect(answer);
            assert_eq!(got, (status, body.to_owned(), reused), "{answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn every_framing_is_read_to_its_end() {
        let chunked = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n";
        let steps = vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, Method::POST, (200, "hello", true)),
            (chunked, false, Method::POST, (201, "abcde", true)),
            ("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", false, Method::GET, (204, "", true)),
            ("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nxyz", false, Method::GET, (200, "xyz", true)),
            ("HTTP/1.1 503 Busy\r\n\r\nuntil close", true, Method::GET, (503, "until close", false)),
        ];
        assert_eq!(keep_alive_run(steps).await, 1, "one keep-alive connection for all five");
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_large_body_alive() {
        let answer: &'static str =
            format!("HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n{}", "x".repeat(100_000)).leak();
        let (address, _, _) = upstream(vec![(answer, false)]).await;
        let pool = pool(&address);
        let headers = HeaderMap::new();
        let request = Request { method: &Method::GET, target: "/", headers: &headers, body: b"" };
        let (mut connection, head) = pool.send(&request).await.expect("sent");
        let (body, reusable) = connection.body(&head, 1 << 20).await.expect("body");
        assert_eq!((body.len(), reusable), (100_000, true));
        let body_memory = body.as_ptr_range();
        let read_at = connection.read.as_ptr();
        assert!(!(body_memory.start..=body_memory.end).contains(&read_at), "the body's buffer is the body's alone");
    }

    #[tokio::test]
    async fn a_connection_asked_to_close_or_closed_while_idle_is_not_reused() {
        let steps = vec![
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na",
                true,
                Method::GET,
                (200, "a", false),
            ),
            // Kept as reusable, then closed by the upstream while idle.
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", true, Method::GET, (200, "b", true)),
            // HTTP/1.0 without keep-alive closes after its response.
            ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nc", false, Method::GET, (200, "c", false)),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nd", false, Method::GET, (200, "d", true)),
        ];
        assert_eq!(keep_alive_run(steps).await, 4);
    }

    #[tokio::test]
    async fn broken_heads_and_bodies_are_errors_naming_what_broke() {
        let endless_trailers: &'static str =
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{}\r\n", "t: x\r\n".repeat(101)).leak();
        let cases: Vec<(&'static str, &str)> = vec![
            (endless_trailers, "more than 100 trailer fields"),
            ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "body broke off: connection closed early"),
            ("HTTP/1.1 200 OK\r\ncontent-length: 65\r\n\r\n", "length limit exceeded (64 bytes)"),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size line"),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY", "chunk not followed by CRLF"),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n41\r\n", "length limit exceeded (64 bytes)"),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx", "invalid response head: content-length values differ"),
            ("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid response head: invalid content-length \"-1\""),
            ("SMTP ready\r\n\r\n", "invalid response head: invalid HTTP version"),
            ("HTTP/1.1 200 OK\r\ncontent-le", "connection closed before the response head was complete"),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "invalid response head: 101 Switching Protocols is not supported",
            ),
        ];
        for (answer, want) in cases {
            let (address, _, _) = upstream(vec![(answer, true)]).await;
            let error = exchange(&pool(&address), Method::POST, "x").await.expect_err(answer);
            assert_eq!(error.to_string(), want, "{answer:?}");
        }
        let refused = pool("127.0.0.1:1");
        let error = exchange(&refused, Method::GET, "").await.expect_err("nothing listens on port 1");
        assert!(matches!(error, Error::Connect(_)), "{error}");
    }

    #[tokio::test]
    async fn under_a_cap_a_request_waits_for_a_connection_to_come_back() {
        let answers = vec![("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1", false); 3];
        let (address, _, accepted) = upstream(answers).await;
        let config = PoolConfig { max_idle: 1, idle_timeout: Duration::from_secs(90), tcp_keepalive: None };
        let pool = Pool::new(&address.parse().expect("authority"), config, Some(Arc::new(Semaphore::new(1))));
        let headers = HeaderMap::new();
        let request = Request { method: &Method::GET, target: "/", headers: &headers, body: b"" };
        let (mut first, head) = pool.send(&request).await.expect("first");
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let headers = HeaderMap::new();
                let request = Request { method: &Method::GET, target: "/", headers: &headers, body: b"" };
                let (mut connection, head) = pool.send(&request).await.expect("second");
                connection.body(&head, 64).await.expect("body").0
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second request waits: the only place is taken");
        let (body, reusable) = first.body(&head, 64).await.expect("body");
        assert_eq!((body.as_ref(), reusable), (&b"1"[..], true));
        pool.checkin(first, reusable);
        assert_eq!(waiting.await.expect("joined").as_ref(), b"1");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the second request took the first's connection");
    }
}
