//! Whole-body exchanges: the request written at once, the response body read to its end
//! into one buffer (the mirror's own requests, whose bodies are outcome documents).

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method};
use tokio::io::AsyncWriteExt;

use super::decode::{Decoder, Framing};
use super::{Connection, Error, Head, Pool};

/// One request, as written: the method, the target in origin form, the headers (the
/// connection adds `Host` when there is none, and frames the body itself).
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// Path and query.
    pub target: &'a str,
    /// Header fields; any `Content-Length` or `Transfer-Encoding` among them is left out,
    /// and any named in `replace`.
    pub headers: &'a HeaderMap,
    /// Fields written after `headers` in place of the same-named ones there (none, for
    /// `None`): a shadow's own `Host`, headers dropped or set by its config.
    pub replace: &'a [(HeaderName, Option<HeaderValue>)],
    /// The whole body.
    pub body: &'a [u8],
}

impl Pool {
    /// Sends the request on an idle connection (or a new one) and reads the response head;
    /// the body is read with [`Connection::body`].
    pub async fn send(&self, request: &Request<'_>) -> Result<(Connection, Head), Error> {
        let mut connection = self.checkout().await?;
        let head = encode_head(request, &self.inner.host);
        connection.write_all(&head, request.body).await?;
        let head = connection.read_head(request.method, false).await?;
        Ok((connection, head))
    }
}

impl Connection {
    /// Writes `head` and `body` in as few writes as the socket takes.
    async fn write_all(&mut self, head: &[u8], body: &[u8]) -> Result<(), Error> {
        let mut parts = [IoSlice::new(head), IoSlice::new(body)];
        let mut unsent = &mut parts[..];
        while !unsent.is_empty() {
            let written = self.stream.write_vectored(unsent).await.map_err(Error::Io)?;
            if written == 0 {
                return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut unsent, written);
        }
        Ok(())
    }

    /// Reads the body `head` announced, up to `limit` bytes; whether the connection can
    /// then take another request comes with it.
    pub async fn body(&mut self, head: &Head, limit: usize) -> Result<(Bytes, bool), Error> {
        let too_large = || Error::Body(format!("length limit exceeded ({limit} bytes)"));
        if let Framing::Length(length) = head.framing {
            if length > limit as u64 {
                return Err(too_large());
            }
        }
        let mut decoder = Decoder::new(head.framing);
        // A body read in one piece (the usual case) is that piece, not a copy of it.
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        let mut length = 0u64;
        loop {
            while let Some(piece) = decoder.decode(&mut self.read)? {
                length += piece.len() as u64;
                if length > limit as u64 {
                    return Err(too_large());
                }
                match first.take() {
                    None if joined.is_empty() => first = Some(piece),
                    earlier => {
                        joined.extend_from_slice(&earlier.unwrap_or_default());
                        joined.extend_from_slice(&piece);
                    }
                }
            }
            if decoder.is_done() {
                break;
            }
            if length.saturating_add(decoder.announced()) > limit as u64 {
                return Err(too_large());
            }
            let read = self.fill(decoder.announced()).await;
            if read.map_err(|error| Error::Body(format!("body broke off: {error}")))? == 0 {
                decoder.closed()?;
            }
        }
        let body = first.unwrap_or_else(|| joined.freeze());
        let reusable = self.finish(head.keep_alive, length);
        Ok((body, reusable))
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
    let replaced = |name: &HeaderName| request.replace.iter().any(|(replaced, _)| replaced == name);
    let has_host = if replaced(&HOST) {
        request.replace.iter().any(|(name, value)| *name == HOST && value.is_some())
    } else {
        request.headers.contains_key(HOST)
    };
    if !has_host {
        field(b"host", host.as_bytes());
    }
    for (name, value) in request.headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING && !replaced(name) {
            field(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for (name, value) in request.replace {
        if let Some(value) = value {
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
