//! Taking given-up tasks out of their queues in batches: one background task takes every
//! removal waiting at that moment and looks for all of them at the tail of their lists in
//! one round trip, then takes out those found there and looks at the head for the others
//! in a second one (and a third takes out those found at the head), so that many tasks
//! given up together (a worker pool gone, Redis back after an outage) cost two or three
//! round trips, not two per task.
//!
//! Each task is looked for as [`super::broker::CeleryBroker::remove_queued`] says: `LPOS`
//! from the tail, then from the head for those not found there, each over [`REMOVE_SCAN`]
//! messages past this sidecar's own tasks still in flight, and `LREM` from the end where
//! it was found.
//!
//! Why past those: the tasks between a lost task and the tail are older ones, and those of
//! this sidecar are given up in about the order they were pushed, but not exactly: two
//! proxy threads under load fire their deadlines a little apart, and tasks given up
//! together are searched for before any is taken out. A search that stopped at a fixed
//! depth missed such a task, which then stayed at the tail, in front of every later one,
//! and no later search found anything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
    /// Removals asked for and not answered yet.
    removing: Arc<AtomicUsize>,
}

impl Remover {
    /// Starts the batcher. `waiting()` tells how many of this sidecar's tasks wait for
    /// their results now: each may still be in a queue, older than a task to remove.
    pub(super) fn start(broker: RedisLink, waiting: impl Fn() -> usize + Send + 'static) -> Remover {
        let removing = Arc::new(AtomicUsize::new(0));
        let in_flight = {
            let removing = Arc::clone(&removing);
            move || waiting() + removing.load(Ordering::Relaxed)
        };
        Remover { batcher: Batcher::start(QUEUE, |removals| run(broker, removals, in_flight)), removing }
    }

    /// Hands the message to the batcher and waits for its batch: whether it was found and
    /// taken out.
    pub(super) async fn remove(&self, list_key: &str, envelope: &str) -> Result<bool, BrokerError> {
        let _counted = Counted::new(&self.removing);
        let removal = |reply| Removal { list_key: list_key.to_owned(), envelope: envelope.to_owned(), reply };
        self.batcher.ask(removal, || stopped(BROKER, format!("LPOS {list_key:?}"), "removing")).await
    }
}

/// One removal counted in flight while it lives, even if its caller stops waiting.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run(broker: RedisLink, mut removals: mpsc::Receiver<Removal>, in_flight: impl Fn() -> usize) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while removals.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let answers = remove_batch(&broker, &batch, REMOVE_SCAN + in_flight()).await;
        for (removal, answer) in batch.drain(..).zip(answers) {
            // The caller may have stopped waiting; the removal was done all the same.
            let _ = removal.reply.send(answer);
        }
    }
}

/// Looks for every message of `batch` among the `reach` messages at the tail of its list,
/// then at the head for those not found there, and takes out those found; one answer per
/// removal, in order.
async fn remove_batch(broker: &RedisLink, batch: &[Removal], reach: usize) -> Vec<Result<bool, BrokerError>> {
    let mut broker = broker.clone();
    // From the tail first, as workers take from there and a task given up at its deadline
    // is found there; a second look at the head only for those that are not.
    let tail = pipeline(batch.iter().map(|removal| lpos(removal, -1, reach)));
    let at_tail = match query(&mut broker, &tail, batch.len(), "LPOS").await {
        Ok(found) => found,
        Err(error) => return failed(batch, "LPOS", &error),
    };
    // The tail's finds taken out, and the others looked for at the head, in one round trip.
    let second = pipeline(batch.iter().zip(&at_tail).map(|(removal, found)| match found {
        Some(_) => lrem(removal, -1),
        None => lpos(removal, 1, reach),
    }));
    let answers = match query(&mut broker, &second, batch.len(), "LREM").await {
        Ok(answers) => answers,
        Err(error) => return failed(batch, "LREM", &error),
    };
    let at_head: Vec<bool> =
        at_tail.iter().zip(&answers).map(|(tail, answer)| tail.is_none() && answer.is_some()).collect();
    let from_head = at_head.iter().filter(|found| **found).count();
    let mut taken_from_head = if from_head == 0 {
        Vec::new().into_iter()
    } else {
        let third =
            pipeline(batch.iter().zip(&at_head).filter(|(_, found)| **found).map(|(removal, _)| lrem(removal, 1)));
        match query(&mut broker, &third, from_head, "LREM").await {
            Ok(removed) => removed.into_iter(),
            Err(error) => return failed(batch, "LREM", &error),
        }
    };
    at_tail
        .iter()
        .zip(&answers)
        .zip(&at_head)
        .map(|((tail, answer), head)| {
            let removed = match (tail, head) {
                (Some(_), _) => *answer,
                (None, true) => taken_from_head.next().flatten(),
                (None, false) => None,
            };
            Ok(removed.is_some_and(|n| n > 0))
        })
        .collect()
}

/// `LPOS list envelope RANK rank MAXLEN reach`: where the message is, counting from the
/// tail (rank -1) or the head (rank 1), if within `reach` messages of that end.
fn lpos(removal: &Removal, rank: isize, reach: usize) -> redis::Cmd {
    let mut lpos = command("LPOS", removal);
    lpos.arg(&removal.envelope).arg(redis::LposOptions::default().rank(rank).maxlen(reach));
    lpos
}

/// `LREM list count envelope`: the first copy from the tail (count -1) or the head (1).
fn lrem(removal: &Removal, count: isize) -> redis::Cmd {
    let mut lrem = command("LREM", removal);
    lrem.arg(count).arg(&removal.envelope);
    lrem
}

/// A command naming the removal's list, sized once: grown an argument at a time, the
/// envelope was copied again at every doubling of its buffer.
fn command(name: &str, removal: &Removal) -> redis::Cmd {
    let mut command = redis::Cmd::with_capacity(8, 64 + removal.list_key.len() + removal.envelope.len());
    command.arg(name).arg(&removal.list_key);
    command
}

fn pipeline(commands: impl Iterator<Item = redis::Cmd>) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    for command in commands {
        pipeline.add_command(command);
    }
    pipeline
}

/// Sends `pipeline`: an answer per command (`None` for a nil), exactly `count` of them.
async fn query(
    broker: &mut RedisLink,
    pipeline: &redis::Pipeline,
    count: usize,
    name: &str,
) -> Result<Vec<Option<i64>>, redis::RedisError> {
    let answers: Vec<Option<i64>> = pipeline.query_async(broker).await?;
    if answers.len() != count {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "pipeline answered with the wrong count",
            format!("{} answers for {count} commands ({name})", answers.len()),
        )));
    }
    Ok(answers)
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
