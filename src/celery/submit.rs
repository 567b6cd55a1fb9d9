//! Sending tasks in batches: one background task takes every submission waiting at that
//! moment and sends them together, so that a burst of evaluations costs a few round trips
//! and no command per evaluation:
//!
//! 1. the ids the hub made ([`Hub::new_task_id`]) are already covered by its pattern
//!    subscription; for any other id, one `SUBSCRIBE` naming their result channels, on
//!    the shared pub/sub connection, and its confirmations awaited (a result published
//!    from then on is seen);
//! 2. then at once, in one pipeline on the broker, one `LPUSH` per queue list carrying all
//!    of the batch's envelopes for it (in submission order), and, for those other ids, one
//!    `MGET` of their result keys on the result backend (a result stored before the
//!    subscription, for a reused task id, is found there). An id the hub made is new, so
//!    it has no result yet.
//!
//! A quiet sidecar sends batches of one, one round trip each; under load the batch is
//! whatever arrived during the previous one, up to [`MAX_BATCH`].

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::batch::{stopped, Batcher};
use super::error::{BrokerError, BROKER};
use super::redis_target::RedisLink;
use super::result_key;
use super::results::{Hub, SUBSCRIBE_TIMEOUT};

/// Most submissions sent in one batch.
pub(super) const MAX_BATCH: usize = 1024;
/// Submissions waiting for the batcher; a full queue makes `submit` wait.
const QUEUE: usize = 16 * MAX_BATCH;

/// One task to push.
pub(super) struct Submission {
    pub(super) task_id: String,
    pub(super) list_key: String,
    pub(super) envelope: String,
    pub(super) reply: oneshot::Sender<Result<Pushed, BrokerError>>,
}

/// What the batcher did for one task.
#[derive(Debug)]
pub(super) struct Pushed {
    /// The pub/sub connection (its number, counting reconnections) on which the result
    /// channel was subscribed before the push, `None` if it could not be.
    pub(super) subscribed_on: Option<u64>,
    /// The result key read after subscribing: `None` if the read failed, `Some(None)` if
    /// there was no key.
    pub(super) stored: Option<Option<Vec<u8>>>,
}

/// The sending half, held by the broker client. The batcher ends when it is dropped.
#[derive(Clone)]
pub(super) struct Submitter {
    batcher: Batcher<Submission>,
}

impl Submitter {
    /// Starts the batcher.
    pub(super) fn start(hub: Arc<Hub>, broker: RedisLink, results: RedisLink) -> Submitter {
        Submitter { batcher: Batcher::start(QUEUE, |submissions| run(hub, broker, results, submissions)) }
    }

    /// Hands `submission` to the batcher and waits until its batch was sent.
    pub(super) async fn push(&self, task_id: &str, list_key: &str, envelope: &str) -> Result<Pushed, BrokerError> {
        let submission = |reply| Submission {
            task_id: task_id.to_owned(),
            list_key: list_key.to_owned(),
            envelope: envelope.to_owned(),
            reply,
        };
        self.batcher.ask(submission, || stopped(BROKER, format!("LPUSH {list_key:?}"), "submitting")).await
    }
}

async fn run(hub: Arc<Hub>, broker: RedisLink, results: RedisLink, mut submissions: mpsc::Receiver<Submission>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while submissions.recv_many(&mut batch, MAX_BATCH).await > 0 {
        send(&hub, &broker, &results, &mut batch).await;
    }
}

/// Sends one batch and answers each of its submissions; leaves `batch` empty.
async fn send(hub: &Hub, broker: &RedisLink, results: &RedisLink, batch: &mut Vec<Submission>) {
    // The channels the pattern does not cover, in batch order.
    let channels: Vec<String> =
        batch.iter().filter(|s| !hub.covers(&s.task_id)).map(|s| result_key(&s.task_id)).collect();
    // The connection the pattern is subscribed on, and whether the other channels are.
    let (connection, channels_subscribed) = match hub.current_sink() {
        Some((_, connection)) if channels.is_empty() => (Some(connection), true),
        Some((mut sink, connection)) => match timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channels)).await {
            Ok(Ok(())) => (Some(connection), true),
            _ => {
                tracing::debug!(tasks = channels.len(), "SUBSCRIBE failed; these results will be polled");
                (Some(connection), false)
            }
        },
        // Reconnecting: the dispatcher subscribes every registered waiter once it is back.
        None => (None, false),
    };

    // Each command sized once: grown an argument at a time, the envelopes were copied
    // again at every doubling of its buffer.
    let mut push = redis::pipe();
    for (list_key, envelopes) in by_list(batch) {
        let bytes = "LPUSH".len() + list_key.len() + envelopes.iter().map(|envelope| envelope.len()).sum::<usize>();
        let mut lpush = redis::Cmd::with_capacity(2 + envelopes.len(), bytes);
        lpush.arg("LPUSH").arg(list_key).arg(envelopes);
        push.add_command(lpush).ignore();
    }
    let mut broker = broker.clone();
    let (pushed, stored) = tokio::join!(push.query_async::<()>(&mut broker), read_keys(results, &channels));
    let mut stored = stored.into_iter();
    for submission in batch.drain(..) {
        let covered = hub.covers(&submission.task_id);
        let subscribed_on = connection.filter(|_| covered || channels_subscribed);
        // A new id has no result yet.
        let stored = if covered { Some(None) } else { stored.next().flatten() };
        let answer = match &pushed {
            Ok(()) => Ok(Pushed { subscribed_on, stored }),
            Err(e) => Err(BrokerError::Unavailable {
                which: BROKER,
                action: format!("LPUSH {:?}", submission.list_key),
                source: e.clone(),
            }),
        };
        // The submitter may have given up waiting; its waiter then unsubscribes.
        let _ = submission.reply.send(answer);
    }
}

/// One `MGET` of `keys`: each value, `None` for all if the read failed (the waiters read
/// them again). No command for no keys.
async fn read_keys(results: &RedisLink, keys: &[String]) -> Vec<Option<Option<Vec<u8>>>> {
    if keys.is_empty() {
        return Vec::new();
    }
    let mut results = results.clone();
    let bytes = "MGET".len() + keys.iter().map(String::len).sum::<usize>();
    let mut read = redis::Cmd::with_capacity(1 + keys.len(), bytes);
    read.arg("MGET").arg(keys);
    match read.query_async::<Vec<Option<Vec<u8>>>>(&mut results).await {
        Ok(values) if values.len() == keys.len() => values.into_iter().map(Some).collect(),
        Ok(_) | Err(_) => {
            tracing::debug!(keys = keys.len(), "MGET of new result keys failed; the waiters read them again");
            vec![None; keys.len()]
        }
    }
}

/// The batch's envelopes grouped by the list they go to, lists in order of first use and
/// envelopes in submission order: one `LPUSH` per list pushes them as separate `LPUSH`es
/// would.
fn by_list(batch: &[Submission]) -> Vec<(&str, Vec<&str>)> {
    let mut lists: Vec<(&str, Vec<&str>)> = Vec::new();
    for submission in batch {
        match lists.iter_mut().find(|(key, _)| *key == submission.list_key) {
            Some((_, envelopes)) => envelopes.push(&submission.envelope),
            None => lists.push((&submission.list_key, vec![&submission.envelope])),
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(list_key: &str, envelope: &str) -> Submission {
        Submission {
            task_id: envelope.into(),
            list_key: list_key.into(),
            envelope: envelope.into(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn envelopes_are_grouped_by_list_in_submission_order() {
        let batch = [
            submission("q", "a"),
            submission("q\x06\x163", "b"),
            submission("q", "c"),
            submission("q\x06\x163", "d"),
            submission("q", "e"),
        ];
        assert_eq!(by_list(&batch), vec![("q", vec!["a", "c", "e"]), ("q\x06\x163", vec!["b", "d"])]);
    }
}
