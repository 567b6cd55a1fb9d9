//! Where a streamed body stands after a poll, the one rule every body wrapper here (the
//! capture's tee, the client's body) follows to notice its end.

use std::task::Poll;

use hyper::body::{Body, Frame};

/// What `poll_frame` returns for a body `B`.
pub(crate) type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// What one poll of a body came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Progress<'a, E> {
    /// Not over yet (pending, or a frame with more to come).
    Going,
    /// Over: nothing more will come.
    Ended,
    /// The body failed with this error.
    Failed(&'a E),
}

/// What `polled`, just returned by `body`, means. A data frame that leaves the body at
/// its end ends it: hyper stops polling once `is_end_stream` says so, and the `None`
/// after it may never be asked for.
pub(crate) fn progress<'a, B: Body>(polled: &'a Polled<B>, body: &B) -> Progress<'a, B::Error> {
    match polled {
        Poll::Ready(None) => Progress::Ended,
        Poll::Ready(Some(Ok(_))) if body.is_end_stream() => Progress::Ended,
        Poll::Ready(Some(Err(error))) => Progress::Failed(error),
        Poll::Ready(Some(Ok(_))) | Poll::Pending => Progress::Going,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::convert::Infallible;

    #[test]
    fn the_last_frame_or_none_ends_a_body() {
        let frame = || Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x")))));
        let done = Full::new(Bytes::new());
        let more = Full::new(Bytes::from_static(b"left"));
        assert_eq!(progress(&frame(), &done), Progress::Ended);
        assert_eq!(progress(&frame(), &more), Progress::Going);
        assert_eq!(progress(&Poll::Ready(None), &more), Progress::Ended);
        assert_eq!(progress(&Poll::Pending, &more), Progress::Going);
    }
}
