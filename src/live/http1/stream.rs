//! Streamed exchanges, for the proxy's legacy leg: the request body is written as the
//! client sends it, and the response body is a [`Body`] that reads from the connection as
//! it is polled, the connection going back to the pool at its end.
//!
//! The request is framed as hyper's client frames one: a body already over is sent as the
//! head says (nothing more); else by the `Content-Length` it carries, else by an exact size
//! (a `Content-Length` is added), else chunked. Trailers are not sent, as the head declares
//! none (`Trailer` is hop-by-hop). An upstream may answer before the request body is over:
//! that answer is the response, and the connection is not reused. A request that a reused
//! connection failed before any byte of it was written (the upstream closed it while idle)
//! is sent again on another connection.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Response};
use tokio::io::AsyncWriteExt;

use super::decode::Decoder;
use super::head::fold_content_length;
use super::{Connection, Error, Head, Inner, Pool};

/// Most a streamed response body asks of the socket at a time: the bytes a connection
/// holds while its body streams, however long the body.
const STREAM_READ: u64 = 64 * 1024;

impl Pool {
    /// Sends a request whose body streams, and reads the response head; the response body
    /// is read as it is polled. `parts.uri` is sent in origin form (its path and query);
    /// a request with no `Host` gets this upstream's.
    pub async fn send_streamed<B>(&self, parts: &Parts, mut body: B) -> Result<Response<ResponseBody>, Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut writer = Writer::new(parts, &body, self.inner.host.as_bytes())?;
        loop {
            let mut connection = self.checkout().await?;
            match writer.exchange(&mut connection, &mut body, &parts.method).await {
                Ok((mut head, whole)) => {
                    let headers = std::mem::take(&mut head.headers);
                    let body = ResponseBody::new(connection, Arc::clone(&self.inner), &head, whole);
                    let mut response = Response::new(body);
                    *response.status_mut() = head.status;
                    *response.headers_mut() = headers;
                    return Ok(response);
                }
                Err(Failure::Unsent(_)) if connection.reused => {}
                Err(Failure::Unsent(error) | Failure::Final(error)) => return Err(error),
            }
        }
    }
}

/// How an exchange failed: writing on a connection that took none of the request (which
/// may then go on another), or otherwise.
enum Failure {
    Unsent(Error),
    Final(Error),
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// The body was over before it began: nothing follows the head.
    None,
    /// This many bytes are still to be sent.
    Length(u64),
    Chunked,
}

/// The request as it is written: the bytes gathered and not yet written, and how far the
/// body has come.
struct Writer {
    /// The head, then the body as it is read, framed; emptied by each write.
    out: BytesMut,
    framing: Framing,
    /// Whether the body is over (its last framing bytes in `out`).
    ended: bool,
    /// Whether any byte has been written.
    wrote: bool,
}

impl Writer {
    fn new<B: Body>(parts: &Parts, body: &B, host: &[u8]) -> Result<Writer, Error> {
        let target = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let mut out = BytesMut::with_capacity(256 + usize::try_from(body.size_hint().lower()).unwrap_or(0).min(16_384));
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !parts.headers.contains_key(HOST) {
            field(&mut out, b"host", host);
        }
        for (name, value) in &parts.headers {
            field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
        let framing = if body.is_end_stream() {
            Framing::None
        } else if let Some(length) = content_length(&parts.headers)? {
            Framing::Length(length)
        } else if let Some(length) = body.size_hint().exact() {
            if length > 0 || !matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) {
                field(&mut out, b"content-length", length.to_string().as_bytes());
            }
            Framing::Length(length)
        } else {
            field(&mut out, b"transfer-encoding", b"chunked");
            Framing::Chunked
        };
        out.extend_from_slice(b"\r\n");
        Ok(Writer { out, framing, ended: framing == Framing::None, wrote: false })
    }

    /// Writes the request on `connection` and reads the response head; whether the whole
    /// request was sent comes with it (an upstream may answer before the body is over).
    async fn exchange<B>(
        &mut self,
        connection: &mut Connection,
        body: &mut B,
        method: &Method,
    ) -> Result<(Head, bool), Failure>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        loop {
            // What the body has ready now goes out with what is already gathered.
            while !self.ended {
                let ready = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
                match ready {
                    Poll::Ready(frame) => self.take(frame).map_err(Failure::Final)?,
                    Poll::Pending => break,
                }
            }
            if let Err(error) = self.write(connection).await {
                if !self.wrote {
                    return Err(Failure::Unsent(error));
                }
                // The upstream may have answered and closed: that answer is the response.
                return match connection.read_head(method, true).await {
                    Ok(head) => Ok((head, false)),
                    Err(_) => Err(Failure::Final(error)),
                };
            }
            if self.ended {
                break;
            }
            tokio::select! {
                biased;
                frame = body.frame() => self.take(frame).map_err(Failure::Final)?,
                read = connection.fill(0) => {
                    if read.map_err(|error| Failure::Final(Error::Io(error)))? == 0 {
                        return Err(Failure::Final(Error::Closed));
                    }
                    if let Some(head) = connection.parse_head(method, true).map_err(Failure::Final)? {
                        return Ok((head, false));
                    }
                }
            }
        }
        let head = connection.read_head(method, true).await.map_err(Failure::Final)?;
        Ok((head, true))
    }

    /// Takes one frame of the body (or its end) into what is to be written.
    fn take<E: std::fmt::Display>(&mut self, frame: Option<Result<Frame<Bytes>, E>>) -> Result<(), Error> {
        let data = match frame {
            None => return self.end(),
            Some(Err(error)) => return Err(Error::RequestBody(error.to_string())),
            // Trailers are not sent: the head declares none.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => return Ok(()),
            },
        };
        match &mut self.framing {
            Framing::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| Error::RequestBody("longer than its content-length".into()))?;
                self.out.extend_from_slice(&data);
            }
            Framing::Chunked if !data.is_empty() => {
                self.out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.out.extend_from_slice(&data);
                self.out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked | Framing::None => {}
        }
        Ok(())
    }

    /// The body is over: its last framing bytes.
    fn end(&mut self) -> Result<(), Error> {
        self.ended = true;
        match self.framing {
            Framing::Length(0) | Framing::None => Ok(()),
            Framing::Length(left) => Err(Error::RequestBody(format!("ended {left} bytes short of its content-length"))),
            Framing::Chunked => {
                self.out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
        }
    }

    /// Writes everything gathered.
    async fn write(&mut self, connection: &mut Connection) -> Result<(), Error> {
        let mut from = 0;
        while from < self.out.len() {
            let written = connection.stream.write(&self.out[from..]).await.map_err(Error::Io)?;
            if written == 0 {
                return Err(Error::Io(io::ErrorKind::WriteZero.into()));
            }
            self.wrote = true;
            from += written;
        }
        self.out.clear();
        Ok(())
    }
}

/// One header field line.
fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The length the request's `Content-Length` fields give, if they give one.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        fold_content_length(value.to_str().unwrap_or(""), &mut length).map_err(Error::RequestBody)?;
    }
    Ok(length)
}

/// A response body read from its connection as it is polled. At its end the connection
/// goes back to the pool (when it can carry another exchange); a body dropped before its
/// end takes its connection with it.
pub struct ResponseBody {
    /// `None` once the body is over or broken.
    connection: Option<Connection>,
    pool: Arc<Inner>,
    decoder: Decoder,
    /// Whether the head (and a request sent whole) let the connection be reused.
    keep_alive: bool,
    /// Body bytes passed on so far.
    streamed: u64,
}

impl ResponseBody {
    fn new(connection: Connection, pool: Arc<Inner>, head: &Head, request_whole: bool) -> ResponseBody {
        let mut body = ResponseBody {
            connection: Some(connection),
            pool,
            decoder: Decoder::new(head.framing),
            keep_alive: head.keep_alive && request_whole,
            streamed: 0,
        };
        if body.decoder.is_done() {
            body.release();
        }
        body
    }

    /// The body is over: its connection goes back.
    fn release(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let reusable = connection.finish(self.keep_alive, self.streamed);
            self.pool.checkin(connection, reusable);
        }
    }

    /// The body broke: its connection is closed.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
            match this.decoder.decode(&mut connection.read) {
                Ok(Some(piece)) => {
                    this.streamed += piece.len() as u64;
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
                Ok(None) if this.decoder.is_done() => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            match ready!(connection.poll_fill(cx, this.decoder.announced().min(STREAM_READ))) {
                Ok(0) => {
                    if let Err(error) = this.decoder.closed() {
                        return this.fail(error);
                    }
                }
                Ok(_) => {}
                Err(error) => return this.fail(Error::Body(format!("body broke off: {error}"))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("decoder", &self.decoder).field("streamed", &self.streamed).finish()
    }
}
