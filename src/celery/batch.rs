//! What the Redis batchers share (the submitter, the remover of lost tasks, the result-key
//! reader): a bounded queue to one background task, which takes every request waiting at
//! that moment and sends them together, and callers that each wait for their own answer.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::error::BrokerError;

/// The sending half of a batcher; the background task ends when the last clone is dropped.
pub(super) struct Batcher<T> {
    queue: mpsc::Sender<T>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher { queue: self.queue.clone() }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// A queue of `capacity` requests (a full one makes callers wait), drained by
    /// `run(receiver)` on a task of its own.
    pub(super) fn start<F>(capacity: usize, run: impl FnOnce(mpsc::Receiver<T>) -> F) -> Batcher<T>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (queue, requests) = mpsc::channel(capacity);
        tokio::spawn(run(requests));
        Batcher { queue }
    }

    /// Hands over the request `request(reply)` builds around its reply channel and waits
    /// for the answer; `gone()` is the error if the background task has stopped.
    pub(super) async fn ask<A>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<A, BrokerError>>) -> T,
        gone: impl Fn() -> BrokerError,
    ) -> Result<A, BrokerError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(request(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The error of a request whose batcher stopped before answering.
pub(super) fn stopped(which: &'static str, action: String, batcher: &str) -> BrokerError {
    BrokerError::Unavailable {
        which,
        action,
        source: std::io::Error::other(format!("the {batcher} task has stopped")).into(),
    }
}
