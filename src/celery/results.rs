//! Waiting for task results (reference §5): one pub/sub connection shared by every
//! waiter, with `GET` polling underneath where pub/sub cannot be trusted.
//!
//! A worker writes each state of a task with `SETEX celery-task-meta-<id>` and publishes
//! the same bytes on the channel of that name. A [`Waiter`] is subscribed before its task
//! is pushed (by [`super::submit`], which also reads the key once right after, for a
//! result already stored under a reused id) and returns on the first final state
//! (SUCCESS, FAILURE, REVOKED). While the connection it was subscribed on stays up, every
//! later state reaches it by pub/sub, so it sends no command until then. If that
//! subscription failed or the connection dropped since, a publish may have been missed:
//! the waiter then `GET`s the key at every poll interval. Either way it reads the key once
//! more at its deadline.
//!
//! The [`Hub`] owns the pub/sub connection. A background task reads it and hands each
//! message to the waiter registered for that task id; when the connection drops it opens
//! a new one and subscribes again.
//!
//! The hub makes the ids of the tasks it submits ([`Hub::new_task_id`]): random v4 UUIDs
//! that begin with 8 hex digits drawn once per hub. One `PSUBSCRIBE
//! celery-task-meta-<those digits>-*`, made when a connection opens and before it is
//! used, receives the results of all of them: a task costs no `SUBSCRIBE` and no
//! `UNSUBSCRIBE`, and the server matches each `PUBLISH` against one pattern. Any other id
//! (one given in the task's spec) has its channel subscribed with the batch that pushes
//! it; such channels are unsubscribed in batches by another background task once no
//! longer needed.

use super::error::{BrokerError, CONNECT_TIMEOUT, RESULT_BACKEND};
use super::keys::Keys;
use super::redis_target::{RedisLink, RedisTarget};
use super::{parse_result, result_key, task_id_from_channel, TaskResult};
use futures_util::StreamExt as _;
use redis::aio::{PubSubSink, PubSubStream};
use redis::AsyncCommands as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant, MissedTickBehavior};

/// How long a `SUBSCRIBE` or `UNSUBSCRIBE` may wait for its reply before the waiter goes
/// on relying on polling.
pub(super) const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages buffered per waiter. A task writes a handful of states; if a waiter is so far
/// behind that its buffer is full, the message is dropped and its polling sees the value.
const WAITER_BUFFER: usize = 8;
/// The shortest result poll interval.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Delays between attempts to reopen the pub/sub connection.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the reconnect delay.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Distinct non-final values a waiter remembers to tell new states from repeated ones.
const REMEMBERED_VALUES: usize = 64;
/// How long a waiter that read a final state with `GET` waits for its published copy:
/// pub/sub delivers in order, so once the copy is in, every earlier state (RETRYs to
/// count) is in too. Only a result stored before the subscription never gets one.
const ECHO_GRACE: Duration = Duration::from_millis(500);
/// Task ids queued for the janitor; beyond it the watch's end looks at the key instead.
const JANITOR_BUFFER: usize = 1024;
/// Most tasks watched for late results at once (a few hundred bytes each).
pub const MAX_LATE_WATCHES: usize = 100_000;

/// What waiting for a task came to.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitOutcome {
    /// The task reached SUCCESS, FAILURE or REVOKED.
    Final {
        /// The final result as stored.
        result: TaskResult,
        /// How many RETRY states were written before it, as far as this waiter saw them
        /// (each publish counts; states written before the subscription are unseen).
        retries_seen: u32,
    },
    /// No final state before the deadline: the task is queued, running, retrying, or
    /// gone (no worker, a worker killed mid-task, `ignore_result`).
    Lost {
        /// The last non-final status seen (`STARTED`, `RETRY`, ...), `None` if the result
        /// key never existed (PENDING).
        last_state: Option<String>,
        /// How many distinct RETRY states were seen.
        retries_seen: u32,
    },
}

/// A snapshot of the result pub/sub dispatcher, for health reports and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStats {
    /// Whether the pub/sub connection is up (if not, results are only polled).
    pub pubsub_connected: bool,
    /// Pub/sub connections opened so far: 1 plus the number of reconnections.
    pub pubsub_connects: u64,
    /// Tasks currently waited for.
    pub waiters: usize,
    /// Tasks given up on whose result key is watched, to delete it if a late worker
    /// writes one.
    pub late_watches: usize,
    /// `GET`s sent by waiters at their poll interval, because their subscription failed
    /// or the connection it was made on dropped (the reads right after subscribing and at
    /// each deadline are not counted): 0 while pub/sub delivers everything.
    pub result_polls: u64,
}

/// The shared pub/sub connection and the waiters it serves.
pub(super) struct Hub {
    /// A `std::sync::Mutex`: it is only held to insert, remove or look up one waiter or to
    /// swap the sink, never across an `.await`, so it is held for microseconds and an
    /// async mutex would only add cost.
    state: Mutex<HubState>,
    /// Pub/sub connections opened so far.
    connects: AtomicU64,
    /// Polling `GET`s sent by waiters.
    polls: AtomicU64,
    /// The dispatcher task, stopped when the hub is dropped.
    dispatcher: OnceLock<tokio::task::AbortHandle>,
    /// Ids of late-watched tasks whose channel just carried a value, for the janitor.
    janitor: mpsc::Sender<String>,
    /// Whether the misplaced-result-key warning was logged (once per process is enough).
    warned_missing_key: std::sync::atomic::AtomicBool,
    /// The number of the pub/sub connection that is up (1 for the first, counting
    /// reconnections), `None` while reconnecting: a waiter subscribed on connection `n`
    /// misses no publish while this stays `Some(n)`.
    connection: watch::Sender<Option<u64>>,
    /// Channels to unsubscribe, sent in batches by [`release`].
    release: mpsc::UnboundedSender<String>,
    /// The first 4 bytes of every id [`Hub::new_task_id`] makes.
    id_prefix: [u8; 4],
    /// Those bytes as the ids spell them: 8 hex digits and a `-`.
    id_text: String,
    /// Whether the result backend accepted the pattern subscription (an ACL may allow
    /// only some channel patterns); if not, every task subscribes its own channel.
    pattern: bool,
}

struct HubState {
    /// Task id → the waiter's channel. One waiter per id.
    waiters: HashMap<String, Registration>,
    /// Sends `SUBSCRIBE`s on the current connection; `None` while reconnecting.
    sink: Option<PubSubSink>,
    /// Tells registrations of one id apart, so a late deregistration cannot remove a
    /// newer waiter.
    next_token: u64,
    /// Task ids given up on (lost, or revoked) whose result key may still be written by a
    /// late worker, and until when to watch for it. Their channels stay subscribed; a
    /// publish on one sends the id to the janitor, which deletes the key.
    late: HashMap<String, Instant>,
}

struct Registration {
    token: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Hub {
    /// Opens the pub/sub connection to the result backend and starts the dispatcher. The
    /// connection is ready to subscribe on when this returns.
    pub(super) async fn start(target: RedisTarget) -> Result<(Arc<Hub>, mpsc::Receiver<String>), BrokerError> {
        let id_prefix = random_id_prefix();
        let id_text = id_text(id_prefix);
        let (mut sink, stream) = open_pubsub(&target).await?;
        let pattern = match subscribe_pattern(&mut sink, &id_text).await {
            Ok(()) => true,
            // The server's answer (an ACL's NOPERM): each task's channel is subscribed.
            Err(error) if error.code().is_some() => {
                tracing::warn!(
                    %error,
                    pattern = result_pattern(&id_text),
                    "the result backend refused the pattern subscription: each task subscribes and unsubscribes \
                     its own result channel (allow the pattern with `&celery-task-meta-*` in the ACL user's \
                     channels to spare that)"
                );
                false
            }
            Err(error) => {
                return Err(BrokerError::Unavailable {
                    which: RESULT_BACKEND,
                    action: format!("PSUBSCRIBE {:?}", result_pattern(&id_text)),
                    source: error,
                })
            }
        };
        let (janitor, janitor_rx) = mpsc::channel(JANITOR_BUFFER);
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState { waiters: HashMap::new(), sink: None, next_token: 0, late: HashMap::new() }),
            connects: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            dispatcher: OnceLock::new(),
            janitor,
            warned_missing_key: std::sync::atomic::AtomicBool::new(false),
            connection: watch::Sender::new(None),
            release: release_tx,
            id_prefix,
            id_text,
            pattern,
        });
        hub.install(sink);
        tokio::spawn(release(Arc::downgrade(&hub), release_rx));
        let task = tokio::spawn(dispatch(Arc::downgrade(&hub), target, stream));
        // Set once, here, before anyone else sees the hub.
        let _ = hub.dispatcher.set(task.abort_handle());
        Ok((hub, janitor_rx))
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // No code panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many waiters are registered: tasks pushed, or about to be, and waited for.
    pub(super) fn waiting(&self) -> usize {
        self.lock().waiters.len()
    }

    /// A new task id, random, whose results the pattern subscription receives.
    pub(super) fn new_task_id(&self) -> String {
        task_id_starting(self.id_prefix)
    }

    /// Whether `task_id` is one of [`Hub::new_task_id`]'s, whose channel the pattern
    /// subscription covers.
    pub(super) fn covers(&self, task_id: &str) -> bool {
        self.pattern && task_id.starts_with(&self.id_text)
    }

    /// Makes `sink` the current connection (its pattern already subscribed) and returns
    /// the channels to subscribe again: those of other ids, still waited for or watched.
    fn install(&self, sink: PubSubSink) -> Vec<String> {
        let connection = self.connects.fetch_add(1, Ordering::Relaxed) + 1;
        let mut state = self.lock();
        state.sink = Some(sink);
        self.connection.send_replace(Some(connection));
        let ids = state.waiters.keys().chain(state.late.keys());
        ids.filter(|id| !self.covers(id)).map(|id| result_key(id)).collect()
    }

    fn uninstall(&self) {
        let mut state = self.lock();
        state.sink = None;
        self.connection.send_replace(None);
    }

    /// The current connection's sink and number, `None` while reconnecting.
    pub(super) fn current_sink(&self) -> Option<(PubSubSink, u64)> {
        let state = self.lock();
        let connection = (*self.connection.borrow())?;
        Some((state.sink.clone()?, connection))
    }

    /// Queues `task_id`'s result channel to be unsubscribed with the next batch, unless
    /// the pattern covers it.
    fn unsubscribe_later(&self, task_id: &str) {
        if self.covers(task_id) {
            return;
        }
        // The receiver lives as long as the hub.
        let _ = self.release.send(result_key(task_id));
    }

    /// Hands a published value to the waiter of its task, if any.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let Some(task_id) = task_id_from_channel(channel) else { return };
        let (tx, late) = {
            let state = self.lock();
            (state.waiters.get(task_id).map(|r| r.tx.clone()), state.late.contains_key(task_id))
        };
        if let Some(tx) = tx {
            if tx.try_send(payload.to_vec()).is_err() {
                tracing::debug!(%task_id, "waiter not reading; its polling will see the value");
            }
        } else if late && self.janitor.try_send(task_id.to_owned()).is_err() {
            tracing::debug!(%task_id, "janitor busy; the watch's end will look at the key");
        }
    }

    /// Keeps watching `task_id`'s result channel until `until`, for the janitor. Returns
    /// false (and watches nothing) when [`MAX_LATE_WATCHES`] tasks are already watched.
    fn watch_late(&self, task_id: &str, until: Instant) -> bool {
        let mut state = self.lock();
        if state.late.len() >= MAX_LATE_WATCHES && !state.late.contains_key(task_id) {
            return false;
        }
        state.late.insert(task_id.to_owned(), until);
        true
    }

    /// Stops watching `task_id` and unsubscribes its channel, unless a waiter uses it
    /// again.
    pub(super) fn unwatch_late(&self, task_id: &str) {
        let unused = {
            let mut state = self.lock();
            state.late.remove(task_id).is_some() && !state.waiters.contains_key(task_id)
        };
        if unused {
            self.unsubscribe_later(task_id);
        }
    }

    /// Late watches whose time is up.
    pub(super) fn expired_late(&self, now: Instant) -> Vec<String> {
        self.lock().late.iter().filter(|(_, until)| **until <= now).map(|(id, _)| id.clone()).collect()
    }

    /// Registers a waiter for `task_id`; returns its token. Once registered, a
    /// reconnection subscribes its channel again.
    fn register(&self, task_id: &str, tx: mpsc::Sender<Vec<u8>>) -> Option<u64> {
        let mut state = self.lock();
        if state.waiters.contains_key(task_id) {
            return None;
        }
        let token = state.next_token;
        state.next_token += 1;
        state.waiters.insert(task_id.to_owned(), Registration { token, tx });
        Some(token)
    }

    /// Removes the registration `token` of `task_id` and unsubscribes its channel,
    /// unless a late watch keeps it.
    fn deregister(&self, task_id: &str, token: u64) {
        let unused = {
            let mut state = self.lock();
            let ours = state.waiters.get(task_id).is_some_and(|r| r.token == token);
            if ours {
                state.waiters.remove(task_id);
            }
            ours && !state.late.contains_key(task_id)
        };
        if unused {
            self.unsubscribe_later(task_id);
        }
    }

    fn stats(&self) -> BrokerStats {
        let state = self.lock();
        BrokerStats {
            pubsub_connected: state.sink.is_some(),
            pubsub_connects: self.connects.load(Ordering::Relaxed),
            waiters: state.waiters.len(),
            late_watches: state.late.len(),
            result_polls: self.polls.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.dispatcher.get() {
            task.abort();
        }
    }
}

/// 4 random bytes, the start of a hub's task ids.
fn random_id_prefix() -> [u8; 4] {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

/// A random v4 UUID whose first 4 bytes are `prefix`, spelled as Celery's ids are.
fn task_id_starting(prefix: [u8; 4]) -> String {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[..4].copy_from_slice(&prefix);
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// How the ids spell `prefix`: 8 lowercase hex digits and the `-` after them.
fn id_text(prefix: [u8; 4]) -> String {
    format!("{:08x}-", u32::from_be_bytes(prefix))
}

/// The pattern whose channels are the result channels of the ids starting `id_text`.
fn result_pattern(id_text: &str) -> String {
    format!("{}*", result_key(id_text))
}

fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// Opens a pub/sub connection to the result backend (behind Sentinel, to the master the
/// sentinels name now).
async fn open_pubsub(target: &RedisTarget) -> Result<(PubSubSink, PubSubStream), BrokerError> {
    let client = target.client().await.map_err(|e| BrokerError::from_target(RESULT_BACKEND, e))?;
    let opened = timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await.unwrap_or_else(|_| Err(timed_out()));
    Ok(opened.map_err(BrokerError::unavailable(RESULT_BACKEND, "open pub/sub connection".into()))?.split())
}

/// Subscribes `sink` to the pattern of the ids starting `id_text`: every result of theirs
/// published once this returns is received.
async fn subscribe_pattern(sink: &mut PubSubSink, id_text: &str) -> Result<(), redis::RedisError> {
    let pattern = result_pattern(id_text);
    timeout(SUBSCRIBE_TIMEOUT, sink.psubscribe(&pattern)).await.unwrap_or_else(|_| Err(timed_out()))
}

/// The dispatcher: reads the pub/sub connection, hands messages to waiters, reconnects.
/// It starts with the stream of the connection [`Hub::start`] installed, holds the hub
/// weakly and ends when the hub is gone.
async fn dispatch(hub: Weak<Hub>, target: RedisTarget, first: PubSubStream) {
    let Some(pattern) = hub.upgrade().map(|hub| hub.pattern.then(|| hub.id_text.clone())) else { return };
    let mut next = Some(first);
    let mut delay = RECONNECT_MIN;
    loop {
        let mut stream = match next.take() {
            Some(stream) => stream,
            None => match open_pubsub(&target).await {
                Ok((mut sink, stream)) => {
                    if let Some(id_text) = &pattern {
                        if let Err(error) = subscribe_pattern(&mut sink, id_text).await {
                            tracing::warn!(%error, retry_in = ?delay, "cannot subscribe the reopened result pub/sub connection");
                            sleep(delay).await;
                            delay = (delay * 2).min(RECONNECT_MAX);
                            continue;
                        }
                    }
                    let Some(channels) = hub.upgrade().map(|hub| hub.install(sink.clone())) else { return };
                    if !channels.is_empty() {
                        tracing::info!(waiters = channels.len(), "result pub/sub reopened; subscribing again");
                        tokio::spawn(resubscribe(sink, channels));
                    }
                    stream
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "cannot reopen the result pub/sub connection");
                    sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_MAX);
                    continue;
                }
            },
        };
        let opened = Instant::now();
        while let Some(message) = stream.next().await {
            let Some(hub) = hub.upgrade() else { return };
            hub.deliver(message.get_channel_name(), message.get_payload_bytes());
        }
        let Some(hub) = hub.upgrade() else { return };
        hub.uninstall();
        if opened.elapsed() >= STABLE_CONNECTION {
            delay = RECONNECT_MIN;
        }
        tracing::warn!(retry_in = ?delay, "result pub/sub connection closed; results are polled meanwhile");
        drop(hub);
        sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// Unsubscribes the channels queued by [`Hub::unsubscribe_later`], as many in one
/// `UNSUBSCRIBE` as are waiting (up to [`super::submit::MAX_BATCH`]). While reconnecting
/// there is nothing to unsubscribe from: the new connection subscribes only the channels
/// still in use. Ends with the hub.
async fn release(hub: Weak<Hub>, mut channels: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::with_capacity(super::submit::MAX_BATCH);
    while channels.recv_many(&mut batch, super::submit::MAX_BATCH).await > 0 {
        let Some(hub) = hub.upgrade() else { return };
        let sink = hub.current_sink();
        drop(hub);
        if let Some((mut sink, _)) = sink {
            if !matches!(timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&batch)).await, Ok(Ok(()))) {
                tracing::debug!(channels = batch.len(), "UNSUBSCRIBE failed; the channels close with the connection");
            }
        }
        batch.clear();
    }
}

/// Subscribes a new connection to the channels of the waiters registered before it.
async fn resubscribe(sink: PubSubSink, channels: Vec<String>) {
    let total = channels.len();
    let subscribes = channels.into_iter().map(|channel| {
        let mut sink = sink.clone();
        async move { sink.subscribe(channel).await.is_ok() }
    });
    let done = timeout(SUBSCRIBE_TIMEOUT, futures_util::future::join_all(subscribes)).await;
    let ok = done.map_or(0, |oks| oks.into_iter().filter(|ok| *ok).count());
    if ok < total {
        tracing::warn!(ok, total, "some result channels were not subscribed again; their results are polled");
    }
}

/// Everything a [`Waiter`] needs besides its own registration. Cheap to clone.
#[derive(Clone)]
pub(super) struct ResultReader {
    hub: Arc<Hub>,
    results: RedisLink,
    /// `GET`s and `DEL`s of result keys, sent in batches (`src/celery/keys.rs`).
    keys: Keys,
    /// The result backend's database number, for the misplaced-key warning.
    result_db: i64,
    delete_results: bool,
    poll_interval: Duration,
    late_watch: Duration,
}

impl ResultReader {
    /// A reader over `hub`; starts the janitor that deletes late result keys, fed by
    /// `janitor` (from [`Hub::start`]). The janitor ends with the hub.
    pub(super) fn new(
        (hub, janitor): (Arc<Hub>, mpsc::Receiver<String>),
        results: RedisLink,
        result_db: i64,
        delete_results: bool,
        poll: Duration,
        late_watch: Duration,
    ) -> Self {
        let poll_interval = poll.max(MIN_POLL_INTERVAL);
        let keys = Keys::start(results.clone());
        let reader = ResultReader { hub, results, keys, result_db, delete_results, poll_interval, late_watch };
        tokio::spawn(super::janitor::run(Arc::downgrade(&reader.hub), reader.keys.clone(), janitor));
        reader
    }

    /// Keeps the channel of a waiter that is about to end watched for late results. Called
    /// while the waiter still holds its registration, so the channel is never unsubscribed
    /// in between (the waiter's drop leaves a watched channel subscribed).
    fn watch_late(&self, task_id: &str) {
        if self.late_watch.is_zero() {
            return;
        }
        if !self.hub.watch_late(task_id, Instant::now() + self.late_watch) {
            tracing::debug!(%task_id, "too many late watches; its result key is left to expire");
            return;
        }
        // A value written before the watch began is seen now.
        let _ = self.hub.janitor.try_send(task_id.to_owned());
    }

    /// Ends the late watch of `task_id` and unsubscribes its channel.
    pub(super) fn forget_late(&self, task_id: &str) {
        self.hub.unwatch_late(task_id);
    }

    /// A new task id whose results reach the waiters without a `SUBSCRIBE` of their own
    /// ([`Hub::new_task_id`]).
    pub(super) fn new_task_id(&self) -> String {
        self.hub.new_task_id()
    }

    /// The hub, for the batcher that subscribes and pushes.
    pub(super) fn hub(&self) -> Arc<Hub> {
        Arc::clone(&self.hub)
    }

    /// The connection to the result backend.
    pub(super) fn link(&self) -> RedisLink {
        self.results.clone()
    }

    /// `MEMORY USAGE` of `task_id`'s result key: what Redis spends on it, key and
    /// overhead included; `None` if there is no such key.
    pub(super) async fn memory_usage(&self, task_id: &str) -> Result<Option<u64>, BrokerError> {
        let key = result_key(task_id);
        let mut results = self.results.clone();
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut results)
            .await
            .map_err(BrokerError::unavailable(RESULT_BACKEND, format!("MEMORY USAGE {key:?}")))
    }

    /// Logs, once per process, that a result arrived by pub/sub but its key is not in the
    /// configured result database.
    fn warn_missing_key(&self, task_id: &str) {
        if !self.hub.warned_missing_key.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %task_id,
                result_db = self.result_db,
                "a result arrived by pub/sub but its key celery-task-meta-{task_id} is not in database {} of \
                 the result backend: the workers' result_backend most likely names another Redis database than \
                 shadow.celery.result_url (pub/sub channels are shared by all databases, keys are not)",
                self.result_db
            );
        }
    }

    /// Registers a waiter for `task_id`; it is not subscribed yet.
    pub(super) fn register(&self, task_id: &str) -> Result<Waiter, BrokerError> {
        let (tx, rx) = mpsc::channel(WAITER_BUFFER);
        let token = self
            .hub
            .register(task_id, tx)
            .ok_or_else(|| BrokerError::AlreadyWaiting { task_id: task_id.to_owned() })?;
        Ok(Waiter {
            task_id: task_id.to_owned(),
            token,
            rx,
            subscribed_on: None,
            stored: None,
            connection: self.hub.connection.subscribe(),
            reader: self.clone(),
        })
    }

    pub(super) async fn ping(&self) -> Result<(), BrokerError> {
        let mut results = self.results.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut results)
            .await
            .map_err(BrokerError::unavailable(RESULT_BACKEND, "PING".into()))
    }

    pub(super) fn stats(&self) -> BrokerStats {
        self.hub.stats()
    }

    /// The result key's value, if any; with the other reads and deletes of the moment.
    async fn get(&self, task_id: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        self.keys.get(result_key(task_id)).await
    }

    /// Deletes the result key; returns whether there was one. With the other reads and
    /// deletes of the moment.
    async fn delete(&self, task_id: &str) -> Result<bool, BrokerError> {
        self.keys.delete(result_key(task_id)).await
    }

    async fn exists(&self, task_id: &str) -> Result<bool, BrokerError> {
        let key = result_key(task_id);
        let mut results = self.results.clone();
        results.exists(&key).await.map_err(BrokerError::unavailable(RESULT_BACKEND, format!("EXISTS {key:?}")))
    }
}

/// The pending result of one submitted task. Dropping it unsubscribes.
pub struct Waiter {
    task_id: String,
    token: u64,
    rx: mpsc::Receiver<Vec<u8>>,
    /// The pub/sub connection our `SUBSCRIBE` was confirmed on, if it was.
    subscribed_on: Option<u64>,
    /// The result key as read right after subscribing, until the wait takes it in
    /// (`None` once taken, or if that read failed).
    stored: Option<Option<Vec<u8>>>,
    /// The number of the pub/sub connection up now, to know when to start polling.
    connection: watch::Receiver<Option<u64>>,
    reader: ResultReader,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("task_id", &self.task_id).finish_non_exhaustive()
    }
}

impl Waiter {
    /// The id of the task waited for.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Takes in what the batcher did: the connection the channel was subscribed on (a
    /// failure is left to the dispatcher's resubscription and to polling) and the key as
    /// read right after.
    pub(super) fn pushed(&mut self, subscribed_on: Option<u64>, stored: Option<Option<Vec<u8>>>) {
        self.subscribed_on = subscribed_on;
        self.stored = stored;
    }

    /// Whether every publish on the channel since the push reached this waiter: it was
    /// subscribed on the connection that is still up.
    fn trusts_pubsub(&self) -> bool {
        self.subscribed_on.is_some() && *self.connection.borrow() == self.subscribed_on
    }

    /// Waits up to `deadline` for a final state (SUCCESS, FAILURE, REVOKED), from
    /// pub/sub or from the result key: as read right after subscribing, by a `GET` at
    /// every poll interval while pub/sub cannot be trusted (see the module's text), and
    /// once more at the deadline. RETRY and STARTED are not final: RETRYs are counted
    /// and the wait goes on. When a `GET` sees the final state first, the wait lets its
    /// published copy arrive (up to 0.5 s) so that the RETRYs published before it are
    /// counted too. After a final state the key is deleted if the config says so.
    ///
    /// A `GET` that fails is retried at the next interval; only the last one, at the
    /// deadline, makes the wait fail, since its failure leaves "lost" unproven. A value
    /// that is not a Celery result fails the wait with [`BrokerError::BadResult`].
    pub async fn wait(mut self, deadline: Duration) -> Result<WaitOutcome, BrokerError> {
        let waited = self.wait_for(deadline).await;
        match &waited {
            Err(BrokerError::BadResult { .. }) => {
                // No reader can use it, and it would stay for the backend's expiry.
                if let Err(error) = self.reader.delete(&self.task_id).await {
                    tracing::debug!(%error, task_id = %self.task_id, "could not delete an unreadable result key");
                }
            }
            // A worker may still write a result for a lost task, and marks a revoked one
            // again when it discards its message: watch the key, before letting go of it.
            Ok(WaitOutcome::Lost { .. }) => self.reader.watch_late(&self.task_id),
            Ok(WaitOutcome::Final { result, .. }) if matches!(result.state, super::TaskState::Revoked(_)) => {
                self.reader.watch_late(&self.task_id)
            }
            _ => {}
        }
        waited
    }

    /// One polling `GET` of the result key, counted in [`BrokerStats::result_polls`].
    async fn poll(&self) -> Result<Option<Vec<u8>>, BrokerError> {
        self.reader.hub.polls.fetch_add(1, Ordering::Relaxed);
        self.reader.get(&self.task_id).await
    }

    async fn wait_for(&mut self, deadline: Duration) -> Result<WaitOutcome, BrokerError> {
        let until = Instant::now() + deadline;
        let mut poll = tokio::time::interval(self.reader.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut progress = Progress::default();
        let mut published_open = true;
        match self.stored.take() {
            Some(Some(bytes)) => {
                if let Some(result) = progress.observe(&self.task_id, Source::Stored, &bytes)? {
                    return self.finish(result, Source::Stored, &bytes, progress).await;
                }
                poll.reset();
            }
            // Nothing stored yet: the first poll tick is due only if pub/sub fails us.
            Some(None) => poll.reset(),
            // Not read: the first tick reads it at once.
            None => {}
        }
        loop {
            let trusted = self.trusts_pubsub();
            let (source, bytes) = tokio::select! {
                message = self.rx.recv(), if published_open => match message {
                    Some(bytes) => (Source::Published, bytes),
                    None => {
                        published_open = false;
                        continue;
                    }
                },
                // The connection changed: trust is looked at again.
                changed = self.connection.changed(), if trusted => {
                    if changed.is_err() {
                        self.subscribed_on = None;
                    }
                    continue;
                }
                _ = poll.tick(), if !trusted => match self.poll().await {
                    Ok(Some(bytes)) => (Source::Stored, bytes),
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::debug!(%error, task_id = %self.task_id, "result poll failed; trying again");
                        continue;
                    }
                },
                () = sleep_until(until) => break,
            };
            if let Some(result) = progress.observe(&self.task_id, source, &bytes)? {
                return self.finish(result, source, &bytes, progress).await;
            }
        }
        // The deadline: whatever was published meanwhile, then one last look at the key.
        while let Ok(bytes) = self.rx.try_recv() {
            if let Some(result) = progress.observe(&self.task_id, Source::Published, &bytes)? {
                return self.finish(result, Source::Published, &bytes, progress).await;
            }
        }
        if let Some(bytes) = self.reader.get(&self.task_id).await? {
            if let Some(result) = progress.observe(&self.task_id, Source::Stored, &bytes)? {
                return self.finish(result, Source::Stored, &bytes, progress).await;
            }
        }
        Ok(WaitOutcome::Lost { last_state: progress.last_state, retries_seen: progress.retries_seen })
    }

    /// Completes a wait on `result`, read from `source` as `bytes`: counts the states
    /// published before it that are still on their way, then deletes the key if asked.
    async fn finish(
        &mut self,
        result: TaskResult,
        source: Source,
        bytes: &[u8],
        mut progress: Progress,
    ) -> Result<WaitOutcome, BrokerError> {
        if source == Source::Stored && self.subscribed_on.is_some() {
            let grace = Instant::now() + ECHO_GRACE;
            while let Ok(Some(published)) = tokio::time::timeout_at(grace, self.rx.recv()).await {
                if published == bytes {
                    break;
                }
                // A state written before the final one. A later final one (the second
                // REVOKED a worker writes when it discards a revoked message) changes
                // nothing.
                progress.observe(&self.task_id, Source::Published, &published)?;
            }
        }
        let retries_seen = progress.retries_seen;
        let key_found = if self.reader.delete_results {
            match self.reader.delete(&self.task_id).await {
                Ok(found) => Some(found),
                Err(error) => {
                    // The result is in hand; the key expires on its own (a day by default).
                    tracing::warn!(%error, task_id = %self.task_id, "could not delete the result key");
                    None
                }
            }
        } else if source == Source::Published {
            self.reader.exists(&self.task_id).await.ok()
        } else {
            None
        };
        // A worker writes the key, then publishes: a published result without its key was
        // written to another database.
        if source == Source::Published && key_found == Some(false) {
            self.reader.warn_missing_key(&self.task_id);
        }
        Ok(WaitOutcome::Final { result, retries_seen })
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.reader.hub.deregister(&self.task_id, self.token);
    }
}

/// Where a result value was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A pub/sub message: exactly one write by the worker.
    Published,
    /// A `GET` of the key: the current value, possibly read before or after its publish.
    Stored,
}

/// What a waiter has seen so far of a task's non-final states.
///
/// Each publish is one write, so a published value is a new state unless it is the
/// pub/sub copy of a value a `GET` read first. A stored value is a new state only if it
/// was not seen before from either source. Two byte-identical RETRYs in a row (Celery
/// writes no date for RETRY) are therefore both counted when published, and once when
/// only polling saw them.
#[derive(Debug, Default)]
struct Progress {
    retries_seen: u32,
    last_state: Option<String>,
    /// Non-final values seen, from either source (the latest [`REMEMBERED_VALUES`]).
    known: Vec<Vec<u8>>,
    /// Values a `GET` saw first, whose published copy has not arrived yet.
    unechoed: Vec<Vec<u8>>,
}

impl Progress {
    /// Takes in one value; returns the result when it is final.
    fn observe(&mut self, task_id: &str, source: Source, bytes: &[u8]) -> Result<Option<TaskResult>, BrokerError> {
        let result =
            parse_result(bytes).map_err(|source| BrokerError::BadResult { task_id: task_id.to_owned(), source })?;
        if result.state.is_final() {
            return Ok(Some(result));
        }
        if self.is_new(source, bytes) {
            if matches!(result.state, super::TaskState::Retry(_)) {
                self.retries_seen += 1;
            }
            self.last_state = Some(result.state.status().to_owned());
        }
        Ok(None)
    }

    fn is_new(&mut self, source: Source, bytes: &[u8]) -> bool {
        match source {
            Source::Published => {
                if let Some(i) = self.unechoed.iter().position(|v| v == bytes) {
                    self.unechoed.remove(i);
                    return false;
                }
            }
            Source::Stored => {
                if self.known.iter().any(|v| v == bytes) {
                    return false;
                }
                remember(&mut self.unechoed, bytes.to_vec());
            }
        }
        remember(&mut self.known, bytes.to_vec());
        true
    }
}

/// Appends to a bounded list, forgetting the oldest entry when full.
fn remember(list: &mut Vec<Vec<u8>>, value: Vec<u8>) {
    if list.len() == REMEMBERED_VALUES {
        list.remove(0);
    }
    list.push(value);
}

#[cfg(test)]
mod tests;
