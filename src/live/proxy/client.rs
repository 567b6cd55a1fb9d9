//! The client's side of a request body: a pass-through wrapper that remembers whether the
//! client sent its body whole, broke it (malformed framing) or left in the middle, so that
//! a failed exchange is blamed on the side that failed.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::live::body::{progress, Progress};

/// A fault of the client's, which the client (not legacy) is answered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The body's framing was invalid (a bad chunk size, a body longer than announced).
    Malformed,
    /// The client closed or reset the connection before its body ended.
    Gone,
    /// The body was still arriving when the legacy time ran out.
    Slow,
}

impl ClientFault {
    /// A short label for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientFault::Malformed => "malformed_body",
            ClientFault::Gone => "client_gone",
            ClientFault::Slow => "slow_body",
        }
    }
}

const STREAMING: u8 = 0;
const COMPLETE: u8 = 1;
const MALFORMED: u8 = 2;
const GONE: u8 = 3;

/// Where the client's body stands, shared by the body and the handler that reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyState(Arc<AtomicU8>);

impl BodyState {
    fn set(&self, state: u8) {
        // The first end wins: a later drop does not overwrite a failure.
        let _ = self.0.compare_exchange(STREAMING, state, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the client has sent its whole body.
    pub(crate) fn complete(&self) -> bool {
        self.0.load(Ordering::Acquire) == COMPLETE
    }

    /// The client's fault, if its body failed.
    pub(crate) fn fault(&self) -> Option<ClientFault> {
        match self.0.load(Ordering::Acquire) {
            MALFORMED => Some(ClientFault::Malformed),
            GONE => Some(ClientFault::Gone),
            _ => None,
        }
    }
}

/// The client's request body, frame by frame, noting how it ended in a [`BodyState`].
pub(crate) struct ClientBody<B> {
    inner: B,
    state: BodyState,
}

impl<B: Body> ClientBody<B> {
    /// Wraps `inner`; a body that is already over (no body at all) is complete at once.
    pub(crate) fn new(inner: B, state: BodyState) -> Self {
        if inner.is_end_stream() {
            state.set(COMPLETE);
        }
        ClientBody { inner, state }
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: StdError + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match progress(&polled, &this.inner) {
            Progress::Ended => this.state.set(COMPLETE),
            Progress::Failed(error) => this.state.set(if client_left(error) { GONE } else { MALFORMED }),
            Progress::Going => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a body error means the client went away (rather than sent bad framing).
fn client_left(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = current {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            );
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                return true;
            }
        }
        current = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("body")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn an_early_eof_is_a_client_gone_and_bad_framing_is_malformed() {
        assert!(client_left(&Wrapper(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"))));
        assert!(!client_left(&Wrapper(io::Error::new(io::ErrorKind::InvalidInput, "invalid chunk size"))));
    }

    #[test]
    fn the_first_end_wins() {
        let state = BodyState::default();
        state.set(MALFORMED);
        state.set(COMPLETE);
        assert_eq!(state.fault(), Some(ClientFault::Malformed));
        assert!(!state.complete());
    }
}
