//! Moving Celery messages through Redis: the IO edge of the Celery shadow.
//!
//! [`CeleryBroker`] `LPUSH`es the task envelopes that [`encode_task`](super::encode_task)
//! builds into the broker, so that unmodified Celery workers run them, and reads their
//! outcomes from the Redis result backend (reference §5): it subscribes to the task's
//! result channel on one pub/sub connection shared by every waiter, and also reads the
//! result key right after subscribing, then at a fixed interval whenever pub/sub may have
//! missed a publish (a failed subscription, a reconnect), so that no result is taken for
//! a lost task. Submissions are sent in batches (`src/celery/submit.rs`): a burst costs a few
//! round trips, not commands per task. It understands no byte it moves: encoding,
//! validation and parsing are the pure functions of [`crate::celery`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use shadowdiff::celery::broker::{BrokerConfig, CeleryBroker, WaitOutcome};
//! use shadowdiff::celery::redis_target::RedisSpec;
//! use shadowdiff::celery::{encode_task, PriorityLayout, TaskSpec};
//!
//! let config = BrokerConfig {
//!     broker: RedisSpec::url("redis://127.0.0.1:6379/0"),
//!     result: RedisSpec::url("redis://127.0.0.1:6379/0"),
//!     queue: "shadow".into(),
//!     layout: PriorityLayout::default(),
//!     delete_results: true,
//!     result_poll_interval: Duration::from_millis(500),
//!     late_result_watch: Duration::from_secs(3600),
//! };
//! let broker = CeleryBroker::connect(config).await?;
//! let task = encode_task(&TaskSpec::new("evaluate", "shadow"), &PriorityLayout::default())?;
//! let waiter = broker.submit(&task).await?;
//! match waiter.wait(Duration::from_secs(30)).await? {
//!     WaitOutcome::Final { result, retries_seen } => println!("{} after {retries_seen} retries", result.state.status()),
//!     WaitOutcome::Lost { last_state, .. } => println!("lost (last seen: {last_state:?})"),
//! }
//! # Ok(()) }
//! ```

use super::redis_target::{RedisLink, RedisSpec, RedisTarget};
use super::remove::Remover;
use super::results::{Hub, ResultReader};
use super::submit::Submitter;
use super::{encode_revoke, validate_envelope, EncodedTask, PriorityLayout, RevokeRequest};
use redis::AsyncCommands as _;
use std::sync::Arc;
use std::time::Duration;

pub use super::error::{BrokerError, BROKER, RESULT_BACKEND};
pub use super::results::{BrokerStats, WaitOutcome, Waiter, MAX_LATE_WATCHES};

/// How many messages at each end of a queue [`CeleryBroker::remove_queued`] looks
/// through, beyond the broker's own tasks in flight.
pub const REMOVE_SCAN: usize = 100;

/// Where the broker and result backend are, and how results are read.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Redis holding the task queues (Celery's `broker_url`, with its TLS and Sentinel
    /// options). Its db number also names the revoke channel (`/<db>.celery.pidbox`).
    pub broker: RedisSpec,
    /// Redis holding the results (Celery's `result_backend`); may equal `broker`, in
    /// which case one connection serves both.
    pub result: RedisSpec,
    /// The queue the workers consume (`-Q`); [`CeleryBroker::queue_depth`] measures it.
    pub queue: String,
    /// kombu's priority layout, as configured on the workers.
    pub layout: PriorityLayout,
    /// Delete a result key once its final state is read, instead of leaving it to
    /// Celery's expiry (a day by default): shadow results are of no use to anyone else.
    pub delete_results: bool,
    /// Time between two `GET`s of a result key while its task runs: the safety net under
    /// pub/sub, bounding how late a missed publish is noticed. Values under 10 ms count
    /// as 10 ms.
    pub result_poll_interval: Duration,
    /// When a wait ends lost or revoked, how long the task's result channel stays
    /// watched afterwards: a late worker's result (or the second REVOKED a worker writes
    /// when it discards a revoked message) is deleted as soon as it is written. Zero
    /// watches nothing.
    pub late_result_watch: Duration,
}

/// A client of one Celery broker and result backend on Redis. Cheap to clone: clones
/// share the connections, the pub/sub dispatcher and its waiters.
///
/// It holds a reconnecting multiplexed connection to each Redis (one when both URLs are
/// equal) and one pub/sub connection to the result backend, which a background task
/// reads and reopens when it drops. The task stops, and the connections close, when the
/// last clone and the last [`Waiter`] are dropped.
#[derive(Clone)]
pub struct CeleryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    queue: String,
    layout: PriorityLayout,
    broker: RedisLink,
    /// Database number of the broker, part of the revoke channel's name.
    broker_db: u32,
    reader: ResultReader,
    submitter: Submitter,
    remover: Remover,
}

impl std::fmt::Debug for CeleryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryBroker")
            .field("queue", &self.inner.queue)
            .field("broker_db", &self.inner.broker_db)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CeleryBroker {
    /// Connects to the broker and the result backend and opens the shared pub/sub
    /// connection; fails (within a few seconds) if either Redis cannot be reached.
    pub async fn connect(config: BrokerConfig) -> Result<CeleryBroker, BrokerError> {
        let broker_target = open_target(&config.broker, BROKER)?;
        let result_target = open_target(&config.result, RESULT_BACKEND)?;
        let broker_db = u32::try_from(broker_target.db())
            .map_err(|_| BrokerError::BadUrl { which: BROKER, reason: "the database number is negative".into() })?;
        let broker = link(&broker_target).await?;
        let results = if config.result == config.broker { broker.clone() } else { link(&result_target).await? };
        let result_db = result_target.db();
        let hub = Hub::start(result_target).await?;
        let reader = ResultReader::new(
            hub,
            results,
            result_db,
            config.delete_results,
            config.result_poll_interval,
            config.late_result_watch,
        );
        let submitter = Submitter::start(reader.hub(), broker.clone(), reader.link());
        let hub = Arc::downgrade(&reader.hub());
        let remover = Remover::start(broker.clone(), move || hub.upgrade().map_or(0, |hub| hub.waiting()));
        Ok(CeleryBroker {
            inner: Arc::new(Inner {
                queue: config.queue,
                layout: config.layout,
                broker,
                broker_db,
                reader,
                submitter,
                remover,
            }),
        })
    }

    /// A new random task id (a v4 UUID) for a task to [`submit`](Self::submit): results
    /// of such ids reach their waiters through one pattern subscription, so they cost no
    /// `SUBSCRIBE` and `UNSUBSCRIBE` each, as any other id does.
    pub fn new_task_id(&self) -> String {
        self.inner.reader.new_task_id()
    }

    /// Sends one task: validates the envelope (an invalid one is refused with the
    /// validator's error and never pushed), subscribes to the task's result channel
    /// (unless the id is one of [`new_task_id`](Self::new_task_id)'s), then `LPUSH`es the envelope onto `task.list_key`, with the other tasks submitted
    /// at the same moment (`src/celery/submit.rs`). The returned [`Waiter`] owns the
    /// subscription; drop it to give it up.
    ///
    /// If the pub/sub connection is down at that moment the task is still pushed: the
    /// dispatcher subscribes again when it reconnects, and the waiter's `GET`s find the
    /// result meanwhile.
    pub async fn submit(&self, task: &EncodedTask) -> Result<Waiter, BrokerError> {
        validate_envelope(task.envelope.as_bytes()).map_err(BrokerError::InvalidMessage)?;
        let mut waiter = self.inner.reader.register(&task.task_id)?;
        let pushed = self.inner.submitter.push(&task.task_id, &task.list_key, &task.envelope).await?;
        waiter.pushed(pushed.subscribed_on, pushed.stored);
        tracing::trace!(task_id = %task.task_id, list_key = ?task.list_key, "task pushed");
        Ok(waiter)
    }

    /// How many messages wait in the queue, over all its priority lists (one `LLEN` each,
    /// in one pipeline). Messages a worker has already taken (running, or prefetched and
    /// held in `unacked`) are not counted.
    pub async fn queue_depth(&self) -> Result<u64, BrokerError> {
        let keys = self.inner.layout.keys(&self.inner.queue);
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.llen(key);
        }
        let mut broker = self.inner.broker.clone();
        let lengths: Vec<u64> =
            pipe.query_async(&mut broker).await.map_err(BrokerError::unavailable(BROKER, format!("LLEN {keys:?}")))?;
        Ok(lengths.iter().sum())
    }

    /// Broadcasts a revoke of `task_id` to the workers (without terminating it if it
    /// already runs) and returns how many subscribers received the broadcast, one per
    /// live worker on this broker database.
    ///
    /// **0 means no worker was listening: the revoke went nowhere**, and a worker started
    /// later will run the task anyway (reference §6). A worker that receives it stores a
    /// REVOKED result at once if the task has not started, and discards the message when
    /// it arrives.
    pub async fn revoke(&self, task_id: &str) -> Result<u32, BrokerError> {
        let request = RevokeRequest::new(vec![task_id.to_owned()], false, self.inner.broker_db);
        let revoke = encode_revoke(&request).map_err(BrokerError::InvalidMessage)?;
        let mut broker = self.inner.broker.clone();
        broker
            .publish(&revoke.channel, &revoke.envelope)
            .await
            .map_err(BrokerError::unavailable(BROKER, format!("PUBLISH {:?}", revoke.channel)))
    }

    /// Removes `task`'s message from its queue if no worker has taken it yet; returns
    /// whether it was still there. A removed task never runs, so it needs no revoke and
    /// leaves no result.
    ///
    /// The search is bounded: `LPOS ... MAXLEN` looks at the tail of the list, which
    /// workers take from, and where a task that waited its deadline out is; if it is not
    /// there, at the head, where one pushed shortly before it was given up is, in a queue
    /// nobody takes from. At each end it looks through [`REMOVE_SCAN`] messages past this
    /// broker's own tasks in flight (waited for, or being removed): those may lie between
    /// the task and the end, as a task's deadline can pass before an older one's. Only
    /// where it was found does `LREM` take it out, searching from that end.
    /// A plain `LREM` would compare the envelope with every message of a deep queue,
    /// blocking Redis for milliseconds each time. A task further inside stays queued, and
    /// its `expires` makes the worker that takes it discard it.
    pub async fn remove_queued(&self, task: &EncodedTask) -> Result<bool, BrokerError> {
        // With the tasks given up at the same moment: two or three round trips for all of
        // them (`src/celery/remove.rs`).
        self.inner.remover.remove(&task.list_key, &task.envelope).await
    }

    /// Stops watching `task_id`'s result key (see [`BrokerConfig::late_result_watch`]),
    /// for a task that can no longer write one: [`remove_queued`](Self::remove_queued)
    /// took it out of the queue. At most [`MAX_LATE_WATCHES`] tasks are watched at once.
    pub fn forget_late(&self, task_id: &str) {
        self.inner.reader.forget_late(task_id);
    }

    /// What Redis spends on `task_id`'s result key (`MEMORY USAGE`), `None` without one.
    pub async fn result_memory(&self, task_id: &str) -> Result<Option<u64>, BrokerError> {
        self.inner.reader.memory_usage(task_id).await
    }

    /// Checks that the broker and the result backend answer `PING`. The pub/sub
    /// connection is not part of it: while it reconnects, results are still read by
    /// polling ([`stats`](Self::stats) tells whether it is up).
    pub async fn ping(&self) -> Result<(), BrokerError> {
        let mut broker = self.inner.broker.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut broker)
            .await
            .map_err(BrokerError::unavailable(BROKER, "PING".into()))?;
        self.inner.reader.ping().await
    }

    /// A snapshot of the pub/sub dispatcher's state.
    pub fn stats(&self) -> BrokerStats {
        self.inner.reader.stats()
    }
}

fn open_target(spec: &RedisSpec, which: &'static str) -> Result<RedisTarget, BrokerError> {
    RedisTarget::open(which, spec).map_err(|e| BrokerError::BadUrl { which, reason: e.to_string() })
}

async fn link(target: &RedisTarget) -> Result<RedisLink, BrokerError> {
    target.link().await.map_err(|e| BrokerError::from_target(target.which(), e))
}
