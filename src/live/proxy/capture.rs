//! Capture as a tee: a body wrapper that passes every frame on at once while copying the
//! data into a capped buffer, and the bookkeeping that turns two copies into one
//! [`Exchange`] for the [`Tap`].
//!
//! A captured exchange is an [`ExchangeRecord`] that moves along with the request: the
//! handler holds it inside a [`PendingExchange`] until the legacy response head arrives
//! (or fails), then it rides inside the response body's [`Tee`] and is delivered when that
//! body ends, errors or is dropped. Each path consumes the record, so the tap hears of an
//! exchange exactly once.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::{HeaderMap, Method, StatusCode};

use super::tap::{Captured, Exchange, LegacyOutcome, Tap};
use crate::live::body::{progress, Progress};

/// A body that forwards `B` frame by frame, copying data frames when it has a recorder.
///
/// Without a recorder it is a plain pass-through: one branch per frame, no copy.
pub(crate) struct Tee<B: Body> {
    inner: B,
    recorder: Option<Recorder>,
}

impl<B: Body> Tee<B> {
    /// Forwards `inner` untouched.
    pub(crate) fn plain(inner: B) -> Self {
        Self { inner, recorder: None }
    }

    /// Forwards `inner` and copies up to `cap` bytes of it; `on_end` gets the copy once.
    pub(crate) fn recording(inner: B, cap: usize, on_end: OnEnd) -> Self {
        let recorder = Recorder::new(inner.size_hint(), cap, on_end);
        Self { inner, recorder: Some(recorder) }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(recorder) = this.recorder.as_mut() {
            if let Poll::Ready(Some(Ok(frame))) = &polled {
                if let Some(data) = frame.data_ref() {
                    recorder.copy(data);
                }
            }
            match progress(&polled, &this.inner) {
                Progress::Ended => recorder.finish_complete(),
                Progress::Failed(_) => recorder.finish(Captured::Failed),
                Progress::Going => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Must match the inner hint exactly: hyper compares it with Content-Length.
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Tee<B> {
    fn drop(&mut self) {
        let Some(recorder) = self.recorder.as_mut().filter(|recorder| !recorder.is_finished()) else {
            return;
        };
        // hyper drops bodies that ended without polling them (an empty body, a HEAD
        // response): those are complete. Anything else stopped early because a peer or
        // the stream gave up.
        if self.inner.is_end_stream() {
            recorder.finish_complete();
        } else {
            recorder.finish(Captured::Failed);
        }
    }
}

/// Receives the copy of one body when it is over.
pub(crate) type OnEnd = Box<dyn FnOnce(Captured) + Send>;

/// The capped copy of one body.
struct Recorder {
    buffer: BytesMut,
    cap: usize,
    too_large: bool,
    /// The length the body announced (`Content-Length`), if it did.
    announced: Option<u64>,
    /// Data bytes seen, copied or not.
    seen: u64,
    on_end: Option<OnEnd>,
}

impl Recorder {
    fn new(hint: SizeHint, cap: usize, on_end: OnEnd) -> Self {
        let expected = usize::try_from(hint.lower()).unwrap_or(usize::MAX);
        let too_large = expected > cap;
        let buffer = if too_large { BytesMut::new() } else { BytesMut::with_capacity(expected) };
        Self { buffer, cap, too_large, announced: hint.exact(), seen: 0, on_end: Some(on_end) }
    }

    fn is_finished(&self) -> bool {
        self.on_end.is_none()
    }

    fn copy(&mut self, data: &Bytes) {
        self.seen = self.seen.saturating_add(data.len() as u64);
        if self.too_large || self.is_finished() {
            return;
        }
        if self.buffer.len().saturating_add(data.len()) > self.cap {
            self.too_large = true;
            self.buffer = BytesMut::new();
            return;
        }
        self.buffer.extend_from_slice(data);
    }

    fn finish_complete(&mut self) {
        // hyper ends a body whose connection went away as if it were over: shorter than
        // its Content-Length, it was cut, not complete.
        let captured = if self.announced.is_some_and(|length| self.seen < length) {
            Captured::Failed
        } else if self.too_large {
            Captured::TooLarge
        } else {
            Captured::Complete(std::mem::take(&mut self.buffer).freeze())
        };
        self.finish(captured);
    }

    fn finish(&mut self, captured: Captured) {
        if let Some(on_end) = self.on_end.take() {
            on_end(captured);
        }
    }
}

/// Where the request body's copy lands; read when the exchange is delivered.
pub(crate) type RequestSlot = Arc<OnceLock<Captured>>;

/// Everything known about a captured exchange before its outcome.
pub(crate) struct ExchangeRecord {
    tap: Arc<dyn Tap>,
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    request_body: RequestSlot,
    received: Instant,
}

impl ExchangeRecord {
    /// Starts a record for a request received at `received`.
    pub(crate) fn new(tap: Arc<dyn Tap>, method: Method, path_and_query: String, received: Instant) -> Self {
        Self {
            tap,
            method,
            path_and_query,
            headers: HeaderMap::new(),
            request_body: Arc::new(OnceLock::new()),
            received,
        }
    }

    /// Keeps the client's request headers (hop-by-hop fields already removed).
    pub(crate) fn set_headers(&mut self, headers: HeaderMap) {
        self.headers = headers;
    }

    /// The callback for the request body's [`Tee`].
    pub(crate) fn request_sink(&self) -> OnEnd {
        let slot = Arc::clone(&self.request_body);
        Box::new(move |captured| {
            // A second set cannot happen (the recorder finishes once); ignore it if it did.
            let _ = slot.set(captured);
        })
    }

    /// Time since the request head was received.
    pub(crate) fn elapsed(&self) -> Duration {
        self.received.elapsed()
    }

    /// Hands the finished exchange to the tap.
    pub(crate) fn deliver(self, outcome: LegacyOutcome, submit: Duration) {
        // A request body that had not ended by now never will for this exchange.
        let request_body = self.request_body.get().cloned().unwrap_or(Captured::Failed);
        self.tap.exchange(Exchange {
            method: self.method,
            path_and_query: self.path_and_query,
            headers: self.headers,
            request_body,
            outcome,
            submit,
        });
    }

    /// The callback for the response body's [`Tee`]: delivers the exchange when it ends.
    pub(crate) fn response_sink(self, status: StatusCode, submit: Duration) -> OnEnd {
        Box::new(move |body| self.deliver(LegacyOutcome::Response { status, body }, submit))
    }
}

/// Holds a captured exchange while the handler waits for the legacy response head, and
/// delivers it as [`LegacyOutcome::Cancelled`] if the handler is dropped meanwhile (the
/// client went away).
pub(crate) struct PendingExchange(Option<ExchangeRecord>);

impl PendingExchange {
    /// Guards `record` (or nothing, for an exchange that is not captured).
    pub(crate) fn new(record: Option<ExchangeRecord>) -> Self {
        Self(record)
    }

    /// Takes the record out; the guard then does nothing on drop.
    pub(crate) fn take(&mut self) -> Option<ExchangeRecord> {
        self.0.take()
    }
}

impl Drop for PendingExchange {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            let submit = record.elapsed();
            record.deliver(LegacyOutcome::Cancelled, submit);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    type Chunks = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts.iter().map(|part| Ok(Frame::data(Bytes::from_static(part.as_bytes())))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// A sink that remembers what it was given, and how often.
    fn sink() -> (OnEnd, Arc<Mutex<Vec<Captured>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        (Box::new(move |captured| into.lock().expect("test lock").push(captured)), seen)
    }

    #[tokio::test]
    async fn copies_every_frame_and_passes_it_on() {
        let (on_end, seen) = sink();
        let tee = Tee::recording(chunks(&["ab", "cd", "e"]), 16, on_end);
        let forwarded = tee.collect().await.expect("infallible").to_bytes();
        assert_eq!(forwarded, "abcde");
        assert_eq!(*seen.lock().expect("test lock"), [Captured::Complete(Bytes::from("abcde"))]);
    }

    #[tokio::test]
    async fn over_the_cap_is_too_large_yet_forwarded_whole() {
        let (on_end, seen) = sink();
        let tee = Tee::recording(chunks(&["abcd", "efgh", "ij"]), 6, on_end);
        let forwarded = tee.collect().await.expect("infallible").to_bytes();
        assert_eq!(forwarded, "abcdefghij");
        assert_eq!(*seen.lock().expect("test lock"), [Captured::TooLarge]);
    }

    #[tokio::test]
    async fn exactly_the_cap_is_complete() {
        let (on_end, seen) = sink();
        let tee = Tee::recording(chunks(&["abc", "def"]), 6, on_end);
        tee.collect().await.expect("infallible");
        assert_eq!(*seen.lock().expect("test lock"), [Captured::Complete(Bytes::from("abcdef"))]);
    }

    #[tokio::test]
    async fn a_known_length_over_the_cap_is_too_large_from_the_start() {
        let (on_end, seen) = sink();
        let tee = Tee::recording(Full::new(Bytes::from_static(b"0123456789")), 4, on_end);
        assert_eq!(tee.collect().await.expect("infallible").to_bytes(), "0123456789");
        assert_eq!(*seen.lock().expect("test lock"), [Captured::TooLarge]);
    }

    #[tokio::test]
    async fn dropped_before_the_end_is_failed_once() {
        let (on_end, seen) = sink();
        let mut tee = Tee::recording(chunks(&["ab", "cd"]), 16, on_end);
        let first = tee.frame().await.expect("a frame").expect("infallible");
        assert_eq!(first.into_data().expect("data"), "ab");
        drop(tee);
        assert_eq!(*seen.lock().expect("test lock"), [Captured::Failed]);
    }

    /// Announces `announced` bytes and sends only `sent`, then ends.
    struct Short {
        announced: u64,
        sent: Option<&'static str>,
    }

    impl Body for Short {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.sent.take().map(|text| Ok(Frame::data(Bytes::from_static(text.as_bytes())))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.announced)
        }
    }

    #[tokio::test]
    async fn a_body_ending_short_of_its_announced_length_is_failed() {
        let (on_end, seen) = sink();
        let tee = Tee::recording(Short { announced: 10, sent: Some("abcd") }, 16, on_end);
        assert_eq!(tee.collect().await.expect("infallible").to_bytes(), "abcd");
        assert_eq!(*seen.lock().expect("test lock"), [Captured::Failed]);

        let (on_end, seen) = sink();
        let tee = Tee::recording(Short { announced: 4, sent: Some("abcd") }, 16, on_end);
        tee.collect().await.expect("infallible");
        assert_eq!(*seen.lock().expect("test lock"), [Captured::Complete(Bytes::from("abcd"))]);
    }

    #[test]
    fn an_ended_body_dropped_unpolled_is_complete() {
        let (on_end, seen) = sink();
        drop(Tee::recording(Full::new(Bytes::new()), 16, on_end));
        assert_eq!(*seen.lock().expect("test lock"), [Captured::Complete(Bytes::new())]);
    }

    #[test]
    fn a_plain_tee_reports_nothing() {
        let tee = Tee::plain(Full::new(Bytes::from_static(b"x")));
        assert_eq!(tee.size_hint().exact(), Some(1));
        assert!(tee.recorder.is_none());
    }
}
