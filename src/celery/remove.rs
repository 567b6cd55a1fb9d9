//! Taking given-up tasks out of their queues in batches: one background task takes every
//! removal waiting at that moment and looks for all of them in one round trip, then takes
//! out those it found in a second one, so that many tasks given up together (a worker pool
//! gone, Redis back after an outage) cost two round trips, not two per task.
//!
//! Each task is looked for as [`super::broker::CeleryBroker::remove_queued`] says: `LPOS`
//! from the tail and from the head, each over [`REMOVE_SCAN`] messages, and `LREM` from the
//! end where it was found.

use tokio::sync::{mpsc, oneshot};

use super::batch::{stopped, Batcher};
use super::broker::REMOVE_SCAN;
use super::error::{BrokerError, BROKER};
use super::redis_target::RedisLink;

/// Most removals looked for in one round trip.
const MAX_BATCH: usize = 512;
/// Removals waiting for the batcher; a full queue makes `remove` wait.
const QUEUE: usize = 8 * MAX_BATCH;

/// One task's message to take out of its list.
struct Removal {
    list_key: String,
    envelope: String,
    reply: oneshot::Sender<Result<bool, BrokerError>>,
}

/// The sending half, held by the broker client. The batcher ends when it is dropped.
#[derive(Clone)]
pub(super) struct Remover {
    batcher: Batcher<Removal>,
}

impl Remover {
    /// Starts the batcher.
    pub(super) fn start(broker: RedisLink) -> Remover {
        Remover { batcher: Batcher::start(QUEUE, |removals| run(broker, removals)) }
    }

    /// Hands the message to the batcher and waits for its batch: whether it was found and
    /// taken out.
    pub(super) async fn remove(&self, list_key: &str, envelope: &str) -> Result<bool, BrokerError> {
        let removal = |reply| Removal { list_key: list_key.to_owned(), envelope: envelope.to_owned(), reply };
        self.batcher.ask(removal, || stopped(BROKER, format!("LPOS {list_key:?}"), "removing")).await
    }
}

async fn run(broker: RedisLink, mut removals: mpsc::Receiver<Removal>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while removals.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let answers = remove_batch(&broker, &batch).await;
        for (removal, answer) in batch.drain(..).zip(answers) {
            // The caller may have stopped waiting; the removal was done all the same.
            let _ = removal.reply.send(answer);
        }
    }
}

/// Looks for every message of `batch` at both ends of its list, then takes out those found;
/// one answer per removal, in order.
async fn remove_batch(broker: &RedisLink, batch: &[Removal]) -> Vec<Result<bool, BrokerError>> {
    let mut broker = broker.clone();
    let near = |rank| redis::LposOptions::default().rank(rank).maxlen(REMOVE_SCAN);
    // Each command sized once: grown an argument at a time, the envelope was copied again
    // at every doubling of its buffer.
    let command = |name: &str, removal: &Removal| {
        let mut command = redis::Cmd::with_capacity(8, 64 + removal.list_key.len() + removal.envelope.len());
        command.arg(name).arg(&removal.list_key);
        command
    };
    let mut find = redis::pipe();
    for removal in batch {
        for rank in [-1, 1] {
            let mut lpos = command("LPOS", removal);
            lpos.arg(&removal.envelope).arg(near(rank));
            find.add_command(lpos);
        }
    }
    let found = match find.query_async::<Vec<Option<i64>>>(&mut broker).await {
        Ok(found) if found.len() == 2 * batch.len() => found,
        Ok(found) => {
            let error = redis::RedisError::from((
                redis::ErrorKind::Client,
                "LPOS pipeline answered with the wrong count",
                format!("{} answers for {} commands", found.len(), 2 * batch.len()),
            ));
            return failed(batch, "LPOS", &error);
        }
        Err(error) => return failed(batch, "LPOS", &error),
    };
    // From the end where each was found: the tail first, as workers take from there.
    let ends: Vec<Option<i64>> = found
        .chunks(2)
        .map(|pair| match (pair[0], pair[1]) {
            (Some(_), _) => Some(-1),
            (None, Some(_)) => Some(1),
            (None, None) => None,
        })
        .collect();
    let mut take = redis::pipe();
    for (removal, end) in batch.iter().zip(&ends) {
        if let Some(end) = end {
            let mut lrem = command("LREM", removal);
            lrem.arg(*end).arg(&removal.envelope);
            take.add_command(lrem);
        }
    }
    let taken = ends.iter().filter(|end| end.is_some()).count();
    if taken == 0 {
        return batch.iter().map(|_| Ok(false)).collect();
    }
    let mut removed = match take.query_async::<Vec<u64>>(&mut broker).await {
        Ok(removed) if removed.len() == taken => removed.into_iter(),
        Ok(removed) => {
            let error = redis::RedisError::from((
                redis::ErrorKind::Client,
                "LREM pipeline answered with the wrong count",
                format!("{} answers for {taken} commands", removed.len()),
            ));
            return failed(batch, "LREM", &error);
        }
        Err(error) => return failed(batch, "LREM", &error),
    };
    ends.iter().map(|end| Ok(end.is_some() && removed.next().is_some_and(|n| n > 0))).collect()
}

/// The same failure for every removal of the batch, each naming its own list.
fn failed(batch: &[Removal], command: &str, error: &redis::RedisError) -> Vec<Result<bool, BrokerError>> {
    batch
        .iter()
        .map(|removal| {
            Err(BrokerError::Unavailable {
                which: BROKER,
                action: format!("{command} {:?}", removal.list_key),
                source: error.clone(),
            })
        })
        .collect()
}
