//! A small pooled HTTP/1.1 client for the mirror's own requests: result polls and the HTTP
//! shadow, whole bodies in and out, over [`crate::live::http1`]'s connections (the proxy's
//! forwarding path streams over its own pool of them).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{HeaderMap, Method, StatusCode, Uri};
use tokio::sync::Semaphore;

use crate::live::http1::{self, error_chain, Pool, PoolConfig};

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
    /// The body broke off, exceeded [`MAX_RESPONSE_BYTES`] or was not over in time.
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
    inner: Arc<Pools>,
}

/// One pool per upstream the client has talked to (a result endpoint, a shadow: one or
/// two), all under one cap.
#[derive(Debug)]
struct Pools {
    config: PoolConfig,
    /// The cap on connections open at once, shared by every pool (and sibling) under it.
    cap: Option<Arc<Semaphore>>,
    /// A std mutex: looked up and cloned out, never held across an `.await`.
    pools: Mutex<Vec<(Authority, Pool)>>,
}

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::with_config(
            PoolConfig { max_idle: usize::MAX, idle_timeout: IDLE_TIMEOUT, tcp_keepalive: None },
            None,
        )
    }
}

impl HttpClient {
    /// A client with at most `max` connections open at once, idle pooled ones included:
    /// each connection holds a permit until its socket is closed, so the cap is on
    /// descriptors, not requests. More requests wait for a connection within their own
    /// timeout.
    pub fn with_max_connections(max: usize) -> HttpClient {
        HttpClient::with_config(
            PoolConfig { max_idle: max, idle_timeout: IDLE_TIMEOUT, tcp_keepalive: None },
            Some(Arc::new(Semaphore::new(max.max(1)))),
        )
    }

    /// A client of its own connections under this one's cap, for another proxy thread:
    /// each thread's requests then ride sockets its own runtime watches, and the cap on
    /// descriptors stays one for all.
    pub fn sibling(&self) -> HttpClient {
        HttpClient::with_config(self.inner.config.clone(), self.inner.cap.clone())
    }

    fn with_config(config: PoolConfig, cap: Option<Arc<Semaphore>>) -> HttpClient {
        HttpClient { inner: Arc::new(Pools { config, cap, pools: Mutex::new(Vec::new()) }) }
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

    /// The pool for `uri`'s upstream (plain `http://` only).
    fn pool(&self, uri: &Uri, url: &str) -> Result<Pool, HttpError> {
        let unreachable = |reason: &str| HttpError::Unreachable { url: url.to_string(), reason: reason.to_string() };
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(unreachable("invalid URL, scheme is not http"));
        }
        let authority = uri.authority().ok_or_else(|| unreachable("invalid URL, missing host"))?;
        let mut pools = self.inner.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(known, _)| known == authority) {
            return Ok(pool.clone());
        }
        let pool = Pool::new(authority, self.inner.config.clone(), self.inner.cap.clone());
        pools.push((authority.clone(), pool.clone()));
        Ok(pool)
    }

    /// Sends a request with exactly these headers (the connection adds `Host` when there
    /// is none, and the framing) and reads the whole answer. `timeout` covers it all:
    /// waiting for a connection slot, the response head, then the body.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::InvalidUrl(url.to_string()))?;
        let pool = self.pool(&uri, url)?;
        let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let request = http1::Request { method: &method, target, headers: &headers, replace: &[], body: &body };
        exchange(&pool, &request, timeout, || url.to_string()).await
    }

    /// The upstream at `base` (`http://host:port`, maybe a path below which requests go),
    /// for [`Self::request_on`]: requests to one upstream then neither build nor parse a
    /// URL. `None` if `base` is not such a URL.
    pub fn upstream(&self, base: &str) -> Option<Upstream> {
        let uri: Uri = base.parse().ok()?;
        let pool = self.pool(&uri, base).ok()?;
        let origin = format!("http://{}", uri.authority()?);
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Some(Upstream { pool, origin, prefix })
    }

    /// [`Self::request`] to `upstream`, for `request.target` there (from
    /// [`Upstream::target`]).
    pub async fn request_on(
        &self,
        upstream: &Upstream,
        request: &http1::Request<'_>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        exchange(&upstream.pool, request, timeout, || format!("{}{}", upstream.origin, request.target)).await
    }
}

/// One upstream of an [`HttpClient`]'s, from [`HttpClient::upstream`].
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Pool,
    /// `http://host:port`, named in errors.
    origin: String,
    /// The base URL's path, without its last `/` (mostly empty).
    prefix: String,
}

impl Upstream {
    /// The request target for `path` (path and query) below the base URL.
    pub fn target<'a>(&self, path: &'a str) -> Cow<'a, str> {
        if self.prefix.is_empty() {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("{}{path}", self.prefix))
        }
    }
}

/// One whole exchange through `pool` within `timeout`; `url` names it in errors.
async fn exchange(
    pool: &Pool,
    request: &http1::Request<'_>,
    timeout: Duration,
    url: impl Fn() -> String,
) -> Result<Response, HttpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut connection, head) = match tokio::time::timeout_at(deadline, pool.send(request)).await {
        Err(_) => return Err(HttpError::Timeout(url())),
        Ok(Err(e)) => return Err(HttpError::Unreachable { url: url(), reason: error_chain(&e) }),
        Ok(Ok(sent)) => sent,
    };
    let unreadable = |reason: String| HttpError::Body { url: url(), reason };
    let (body, reusable) = match tokio::time::timeout_at(deadline, connection.body(&head, MAX_RESPONSE_BYTES)).await {
        Err(_) => return Err(unreadable(format!("not complete within {} ms", timeout.as_millis()))),
        Ok(read) => read.map_err(|e| unreadable(e.to_string()))?,
    };
    pool.checkin(connection, reusable);
    Ok((head.status, body))
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
    use super::*;

    #[tokio::test]
    async fn a_body_that_stops_coming_is_given_up_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf";
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, head).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let url = format!("http://{address}/result");
        let started = std::time::Instant::now();
        let error = HttpClient::default().get(&url, Duration::from_millis(300)).await.expect_err("never complete");
        assert_eq!(error, HttpError::Body { url, reason: "not complete within 300 ms".into() });
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("e-1_a.b~"), "e-1_a.b~");
        assert_eq!(encode_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }
}
