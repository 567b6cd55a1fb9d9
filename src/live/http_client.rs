//! A small pooled HTTP/1.1 client for the mirror's own requests: result polls and the HTTP
//! shadow. (The proxy's forwarding path has its own client, tuned for streaming.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

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
    client: Client<HttpConnector, Full<Bytes>>,
    /// One permit per request in flight: with HTTP/1.1 that is one connection each, so
    /// the cap bounds the descriptors this client holds (idle pooled ones included).
    connections: Option<Arc<Semaphore>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient { client: Client::builder(TokioExecutor::new()).build(connector), connections: None }
    }
}

impl HttpClient {
    /// A client with at most `max` connections open: more requests wait for one, within
    /// their own timeout.
    pub fn with_max_connections(max: usize) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(max).build(connector);
        HttpClient { client, connections: Some(Arc::new(Semaphore::new(max.max(1)))) }
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
        let started = tokio::time::Instant::now();
        let _permit = match &self.connections {
            Some(connections) => match tokio::time::timeout(timeout, Arc::clone(connections).acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Err(HttpError::Timeout(url.to_string())),
            },
            None => None,
        };
        let left = timeout.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(left, self.client.request(request)).await {
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
