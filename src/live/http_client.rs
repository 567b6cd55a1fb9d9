//! A small pooled HTTP/1.1 client for the mirror's own requests: result polls and the HTTP
//! shadow. (The proxy's forwarding path has its own client, tuned for streaming.)

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest response body the mirror reads (an outcome document).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL could not be built.
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    /// Connect, send or receive failed.
    #[error("{url} unreachable: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// No response head in time.
    #[error("{0} timed out")]
    Timeout(String),
    /// The body broke off or exceeded [`MAX_RESPONSE_BYTES`].
    #[error("{url} body unreadable: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// A status and a whole body.
pub type Response = (StatusCode, Bytes);

/// A cheap-to-clone pooled client, optionally capped in connections.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<CappedConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient { client: Client::builder(TokioExecutor::new()).build(CappedConnector::new(None)) }
    }
}

impl HttpClient {
    /// A client with at most `max` connections open at once, idle pooled ones included:
    /// each connection holds a permit until its socket is closed, so the cap is on
    /// descriptors, not requests. More requests wait for a connection within their own
    /// timeout.
    pub fn with_max_connections(max: usize) -> HttpClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max)
            .build(CappedConnector::new(Some(Arc::new(Semaphore::new(max.max(1))))));
        HttpClient { client }
    }

    /// GET a URL.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Response, HttpError> {
        self.send(Method::GET, url, Bytes::new(), timeout).await
    }

    /// POST a JSON body.
    pub async fn post_json(&self, url: &str, body: Bytes, timeout: Duration) -> Result<Response, HttpError> {
        self.send(Method::POST, url, body, timeout).await
    }

    async fn send(&self, method: Method, url: &str, body: Bytes, timeout: Duration) -> Result<Response, HttpError> {
        let mut headers = HeaderMap::new();
        if !body.is_empty() {
            headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        }
        self.request(method, url, headers, body, timeout).await
    }

    /// Sends a request with exactly these headers (hyper adds `Host` and the framing) and
    /// reads the whole answer. `timeout` covers waiting for a connection slot and the
    /// response head.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body))
            .map_err(|_| HttpError::InvalidUrl(url.to_string()))?;
        *request.headers_mut() = headers;
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => return Err(HttpError::Timeout(url.to_string())),
            Ok(Err(e)) => return Err(HttpError::Unreachable { url: url.to_string(), reason: e.to_string() }),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| HttpError::Body { url: url.to_string(), reason: e.to_string() })?
            .to_bytes();
        Ok((status, body))
    }
}

/// An HTTP connector whose connections each hold a semaphore permit for as long as their
/// socket is open (no semaphore: no cap).
#[derive(Clone, Debug)]
pub struct CappedConnector {
    inner: HttpConnector,
    permits: Option<Arc<Semaphore>>,
}

impl CappedConnector {
    fn new(permits: Option<Arc<Semaphore>>) -> CappedConnector {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        CappedConnector { inner, permits }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Uri> for CappedConnector {
    type Response = CappedIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CappedIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let permits = self.permits.clone();
        Box::pin(async move {
            let permit = match permits {
                Some(permits) => Some(permits.acquire_owned().await?),
                None => None,
            };
            let io = inner.call(uri).await?;
            Ok(CappedIo { io, _permit: permit })
        })
    }
}

/// A connection of a [`CappedConnector`]; its permit goes back when it is dropped.
#[derive(Debug)]
pub struct CappedIo {
    io: TokioIo<TcpStream>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connection for CappedIo {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for CappedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for CappedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay as they are).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::encode_segment("e-1_a.b~"), "e-1_a.b~");
        assert_eq!(super::encode_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }
}
