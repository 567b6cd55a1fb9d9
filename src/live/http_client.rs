//! A small pooled HTTP/1.1 client for the mirror's own requests: result polls and the HTTP
//! shadow, whole bodies in and out, over [`crate::live::http1`]'s connections (the proxy's
//! forwarding path, which streams, has [`crate::live::pool`]'s).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{HeaderMap, Method, StatusCode, Uri};
use tokio::sync::Semaphore;

use crate::live::http1::{self, Pool};
use crate::live::pool::{error_chain, PoolConfig};

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

    /// Sends a request with exactly these headers (the pool adds `Host`, hyper the
    /// framing) and reads the whole answer. `timeout` covers waiting for a connection slot
    /// and the response head.
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
        let request = http1::Request { method: &method, target, headers: &headers, body: &body };
        let (mut connection, head) = match tokio::time::timeout(timeout, pool.send(&request)).await {
            Err(_) => return Err(HttpError::Timeout(url.to_string())),
            Ok(Err(e)) => return Err(HttpError::Unreachable { url: url.to_string(), reason: error_chain(&e) }),
            Ok(Ok(sent)) => sent,
        };
        let (body, reusable) = connection
            .body(&head, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| HttpError::Body { url: url.to_string(), reason: e.to_string() })?;
        pool.checkin(connection, reusable);
        Ok((head.status, body))
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
