//! The Celery shadow's Redis side, against the real local Redis (127.0.0.1:6379) and real
//! Celery 5.7 workers running `tests/evalstack/celery_app.py` (`scripts/test-env.sh`
//! prepares both).
//!
//! Everything happens in Redis database 9, which nothing else uses. Tests without a
//! worker use queues of their own; most tests with one share a common worker (started by
//! the first of them, stopped by the last) on a queue of its own. Tests that must know
//! every worker alive on the database (revoke counts, priority order, a killed worker)
//! run alone, also across processes (a lock key in Redis makes a concurrent run of these
//! tests wait). Each test deletes the keys it created, also when it fails.

#[path = "support/worker.rs"]
mod worker;

use futures_util::future::join_all;
use futures_util::StreamExt as _;
use redis::Commands as _;
use serde_json::{json, Value};
use shadowdiff::celery::broker::{BrokerConfig, BrokerError, BrokerStats, CeleryBroker, WaitOutcome, REMOVE_SCAN};
use shadowdiff::celery::redis_target::RedisSpec;
use shadowdiff::celery::{encode_task, parse_result, result_key, EncodedTask, PriorityLayout, TaskResult};
use shadowdiff::celery::{TaskSpec, TaskState, WireError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use worker::{redis_url, Worker};

/// The Redis database of every test here.
const DB: u32 = 9;
/// How long a test waits for a task a worker runs.
const TASK_DEADLINE: Duration = Duration::from_secs(20);
/// Switches of the common worker: code containing `RAISE_ME` raises, `SLEEP_ME` sleeps 30 s.
const COMMON_SWITCHES: &[(&str, &str)] =
    &[("EVALSTACK_RAISE_WHEN", "RAISE_ME"), ("EVALSTACK_SLEEP_WHEN", "SLEEP_ME"), ("EVALSTACK_SLEEP_S", "30")];

// ---- helpers --------------------------------------------------------------------------

fn new_queue(what: &str) -> String {
    format!("sdtest-{what}-{}", uuid::Uuid::new_v4().simple())
}

fn config(queue: &str) -> BrokerConfig {
    BrokerConfig {
        broker: RedisSpec::url(redis_url(DB)),
        result: RedisSpec::url(redis_url(DB)),
        queue: queue.to_owned(),
        layout: PriorityLayout::default(),
        delete_results: false,
        result_poll_interval: Duration::from_millis(100),
        late_result_watch: Duration::ZERO,
    }
}

async fn connect(config: BrokerConfig) -> CeleryBroker {
    CeleryBroker::connect(config).await.expect("Redis on 127.0.0.1:6379 (scripts/test-env.sh starts it)")
}

/// `evaluate(eval_id, code, "python", shadow=True)` with a fresh eval id.
fn evaluate(spec: TaskSpec, code: &str) -> (String, EncodedTask) {
    let eval_id = format!("ev-{}", uuid::Uuid::new_v4().simple());
    let spec = TaskSpec {
        args: vec![json!(eval_id), json!(code), json!("python")],
        kwargs: vec![("shadow".into(), json!(true))],
        origin: "shadowdiff-test@localhost".into(),
        ..spec
    };
    (eval_id, encode_task(&spec, &PriorityLayout::default()).expect("encodes"))
}

/// `trivial(eval_id, "", "python")` at `priority`.
fn trivial(queue: &str, priority: u8, eval_id: &str) -> EncodedTask {
    let spec = TaskSpec {
        args: vec![json!(eval_id), json!(""), json!("python")],
        priority,
        ..TaskSpec::new("trivial", queue)
    };
    encode_task(&spec, &PriorityLayout::default()).expect("encodes")
}

/// `trivial`, with an id the broker made, as the sidecar's tasks have: its result reaches
/// the waiter through the broker's pattern subscription.
fn trivial_with_own_id(broker: &CeleryBroker, queue: &str, eval_id: &str) -> EncodedTask {
    let spec = TaskSpec {
        args: vec![json!(eval_id), json!(""), json!("python")],
        task_id: Some(broker.new_task_id()),
        ..TaskSpec::new("trivial", queue)
    };
    encode_task(&spec, &PriorityLayout::default()).expect("encodes")
}

/// What `trivial` returns.
fn trivial_outcome(eval_id: &str) -> Value {
    json!({"eval_id": eval_id, "status": "completed", "stdout": "", "stderr": "", "exit_code": 0, "duration_ms": 0})
}

/// The result and retry count of a final outcome; panics on anything else.
fn final_result(outcome: Result<WaitOutcome, BrokerError>) -> (TaskResult, u32) {
    match outcome {
        Ok(WaitOutcome::Final { result, retries_seen }) => (result, retries_seen),
        other => panic!("expected a final result, got {other:?}"),
    }
}

/// A plain connection for looking at Redis from the test's side.
fn redis() -> redis::Connection {
    redis::Client::open(redis_url(DB)).and_then(|c| c.get_connection()).expect("Redis on 127.0.0.1:6379")
}

/// Keys a test created, deleted when the test ends, whether it passed or not.
#[derive(Default)]
struct Cleanup {
    keys: Vec<String>,
    unacked: Vec<String>,
}

impl Cleanup {
    /// Every priority list of `queue`.
    fn queue(mut self, queue: &str) -> Self {
        self.keys.extend(PriorityLayout::default().keys(queue));
        self
    }

    /// The result keys of `tasks`.
    fn results<'a>(mut self, tasks: impl IntoIterator<Item = &'a EncodedTask>) -> Self {
        self.keys.extend(tasks.into_iter().map(|t| result_key(&t.task_id)));
        self
    }

    /// The `unacked` entry of a message a killed worker may leave behind.
    fn unacked(mut self, task: &EncodedTask) -> Self {
        self.unacked.push(task.delivery_tag.clone());
        self
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut redis = redis();
        if !self.keys.is_empty() {
            let _: redis::RedisResult<u64> = redis.del(&self.keys);
        }
        if !self.unacked.is_empty() {
            let _: redis::RedisResult<u64> = redis.hdel("unacked", &self.unacked);
            let _: redis::RedisResult<u64> = redis.zrem("unacked_index", &self.unacked);
        }
    }
}

// ---- who runs workers on database 9 --------------------------------------------------

/// Tests sharing the common worker hold this shared; tests that must know every worker
/// alive on the database hold it exclusively, so no other worker of this process runs
/// meanwhile.
static WORKERS: RwLock<()> = RwLock::const_new(());

/// The same across processes: held in Redis while this process has a worker on the
/// database or runs a test alone, so that another run of these tests (a whole-suite
/// `cargo test` started meanwhile, say) waits instead of receiving our revokes or
/// draining our queues. It expires by itself if the process dies.
struct DatabaseLock {
    token: String,
}

impl DatabaseLock {
    const KEY: &'static str = "sdtest:database-9-workers";

    fn acquire() -> DatabaseLock {
        let token = uuid::Uuid::new_v4().to_string();
        let mut redis = redis();
        let started = Instant::now();
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(Self::KEY)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(120_000)
                .query(&mut redis)
                .expect("SET NX");
            if set.is_some() {
                return DatabaseLock { token };
            }
            assert!(started.elapsed() < Duration::from_secs(180), "{} held by another run for 3 minutes", Self::KEY);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        let release =
            redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end");
        let _: redis::RedisResult<()> = release.key(Self::KEY).arg(&self.token).invoke(&mut redis());
    }
}

/// Held by a test that must be the only one with workers on the database.
struct Alone {
    _across_processes: DatabaseLock,
    _in_process: RwLockWriteGuard<'static, ()>,
}

impl Alone {
    async fn take() -> Alone {
        let in_process = WORKERS.write().await;
        Alone { _across_processes: DatabaseLock::acquire(), _in_process: in_process }
    }
}

// ---- the common worker ----------------------------------------------------------------

/// The common worker and how many tests use it.
static COMMON: Mutex<Common> = Mutex::new(Common { users: 0, worker: None });

struct Common {
    users: usize,
    /// Queue, worker, and the database lock it holds (released after it stopped).
    worker: Option<(String, Worker, DatabaseLock)>,
}

fn common() -> MutexGuard<'static, Common> {
    COMMON.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A test's share of the common worker (queue `queue`, switches [`COMMON_SWITCHES`]).
/// The worker starts with the first share and stops when the last one is dropped.
struct CommonWorker {
    queue: String,
    _shared: RwLockReadGuard<'static, ()>,
}

impl CommonWorker {
    async fn join() -> CommonWorker {
        let shared = WORKERS.read().await;
        let mut common = common();
        if common.worker.is_none() {
            let lock = DatabaseLock::acquire();
            let queue = new_queue("common");
            let worker = Worker::start(&queue, DB, COMMON_SWITCHES);
            common.worker = Some((queue, worker, lock));
        }
        common.users += 1;
        let queue = common.worker.as_ref().map(|(queue, ..)| queue.clone()).expect("started above");
        CommonWorker { queue, _shared: shared }
    }
}

impl Drop for CommonWorker {
    fn drop(&mut self) {
        let mut common = common();
        common.users -= 1;
        if common.users == 0 {
            // Stops it (and waits) before `_shared` is released.
            common.worker = None;
        }
    }
}

// ---- results from a real worker -------------------------------------------------------

#[tokio::test]
async fn a_successful_evaluation_comes_back_with_its_exact_outcome() {
    let worker = CommonWorker::join().await;
    let broker = connect(config(&worker.queue)).await;
    let (eval_id, task) = evaluate(TaskSpec::new("evaluate", &worker.queue), "print(6*7)");
    let _cleanup = Cleanup::default().results([&task]);

    let waiter = broker.submit(&task).await.expect("submitted");
    let (result, retries_seen) = final_result(waiter.wait(TASK_DEADLINE).await);

    assert_eq!((result.task_id.as_str(), retries_seen), (task.task_id.as_str(), 0));
    let TaskState::Success(mut outcome) = result.state.clone() else { panic!("not a success: {result:?}") };
    let duration = outcome.as_object_mut().and_then(|o| o.remove("duration_ms"));
    assert!(duration.as_ref().is_some_and(Value::is_u64), "duration_ms: {duration:?}");
    assert_eq!(
        outcome,
        json!({"eval_id": eval_id, "status": "completed", "stdout": "42\n", "stderr": "", "exit_code": 0})
    );
    // delete_results is off: the key stays, holding the same result, with Celery's TTL.
    let mut redis = redis();
    let stored: Vec<u8> = redis.get(result_key(&task.task_id)).expect("GET");
    assert_eq!(parse_result(&stored).expect("a result"), result);
    let ttl: i64 = redis.ttl(result_key(&task.task_id)).expect("TTL");
    assert!((86_000..=86_400).contains(&ttl), "TTL {ttl}");
}

#[tokio::test]
async fn a_raising_task_is_a_failure_with_its_exception() {
    let worker = CommonWorker::join().await;
    let broker = connect(config(&worker.queue)).await;
    let (_, task) = evaluate(TaskSpec::new("evaluate", &worker.queue), "print('RAISE_ME')");
    let _cleanup = Cleanup::default().results([&task]);

    let waiter = broker.submit(&task).await.expect("submitted");
    let (result, retries_seen) = final_result(waiter.wait(TASK_DEADLINE).await);

    assert_eq!(retries_seen, 0);
    let TaskState::Failure(error) = &result.state else { panic!("not a failure: {result:?}") };
    assert_eq!(
        error.to_json(),
        json!({"exc_type": "RuntimeError", "exc_message": ["evalstack: forced failure"], "exc_module": "builtins"})
    );
    let traceback = error.traceback.as_deref().unwrap_or_default();
    assert!(traceback.ends_with("RuntimeError: evalstack: forced failure\n"), "traceback: {traceback}");
}

#[tokio::test]
async fn the_soft_time_limit_header_stops_a_slow_task() {
    let worker = CommonWorker::join().await;
    let broker = connect(config(&worker.queue)).await;
    let spec = TaskSpec { soft_time_limit: Some(Duration::from_secs(1)), ..TaskSpec::new("evaluate", &worker.queue) };
    let (_, task) = evaluate(spec, "print('SLEEP_ME')");
    let _cleanup = Cleanup::default().results([&task]);

    let started = Instant::now();
    let waiter = broker.submit(&task).await.expect("submitted");
    let (result, _) = final_result(waiter.wait(TASK_DEADLINE).await);

    let TaskState::Failure(error) = &result.state else { panic!("not a failure: {result:?}") };
    assert_eq!(
        error.to_json(),
        json!({"exc_type": "SoftTimeLimitExceeded", "exc_message": [], "exc_module": "billiard.exceptions"})
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "took {took:?} (the sleep is 30 s)");
}

#[tokio::test]
async fn delete_results_removes_the_key_once_read() {
    let worker = CommonWorker::join().await;
    let broker = connect(BrokerConfig { delete_results: true, ..config(&worker.queue) }).await;
    let task = trivial(&worker.queue, 0, "ev-delete");
    let _cleanup = Cleanup::default().results([&task]);

    let waiter = broker.submit(&task).await.expect("submitted");
    let (result, _) = final_result(waiter.wait(TASK_DEADLINE).await);

    assert_eq!(result.state, TaskState::Success(trivial_outcome("ev-delete")));
    let exists: u64 = redis().exists(result_key(&task.task_id)).expect("EXISTS");
    assert_eq!(exists, 0);
}

/// The next state published on a watched result channel.
async fn next_state(published: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin)) -> TaskState {
    let message = tokio::time::timeout(TASK_DEADLINE, published.next()).await.ok().flatten();
    let message = message.expect("a state written in time");
    parse_result(message.get_payload_bytes()).expect("a result").state
}

#[tokio::test]
async fn a_revoke_reaches_the_one_live_worker_and_revokes_the_task() {
    let worker = CommonWorker::join().await;
    let broker = connect(config(&worker.queue)).await;
    let task = trivial(&worker.queue, 0, "ev-revoked");
    let _cleanup = Cleanup::default().results([&task]);
    let mut watch = redis::Client::open(redis_url(DB)).expect("URL").get_async_pubsub().await.expect("pub/sub");
    watch.subscribe(result_key(&task.task_id)).await.expect("SUBSCRIBE");
    let mut published = watch.on_message();

    // A worker logs "ready." a moment before it listens to broadcasts: 0 until then.
    let started = Instant::now();
    let receivers = loop {
        let receivers = broker.revoke(&task.task_id).await.expect("published");
        if receivers > 0 || started.elapsed() > Duration::from_secs(10) {
            break receivers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(receivers, 1);
    // Not pushed yet, so PENDING: the worker stores REVOKED at once. Waiting for that write
    // makes sure the worker knows the id before the message reaches it (a message taken
    // in the same turn of its event loop as the revoke runs anyway, and its SUCCESS
    // overwrites the REVOKED).
    assert_eq!(next_state(&mut published).await.status(), "REVOKED");

    let waiter = broker.submit(&task).await.expect("submitted");
    let (result, _) = final_result(waiter.wait(TASK_DEADLINE).await);

    let TaskState::Revoked(error) = &result.state else { panic!("not revoked: {result:?}") };
    assert_eq!(
        error.to_json(),
        json!({"exc_type": "TaskRevokedError", "exc_message": ["revoked"], "exc_module": "celery.exceptions"})
    );
    // The worker discards the message when it arrives, storing REVOKED again.
    assert_eq!(next_state(&mut published).await, result.state);
}

/// `(client id, channel subscriptions)` of every client of the Redis server.
fn subscriptions_per_client() -> Vec<(u64, u64)> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis()).expect("CLIENT LIST");
    let field = |line: &str, name: &str| {
        line.split(' ').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
    };
    list.lines().filter_map(|line| Some((field(line, "id")?, field(line, "sub")?))).collect()
}

#[tokio::test]
async fn two_hundred_concurrent_tasks_share_one_pubsub_connection() {
    let worker = CommonWorker::join().await;
    let broker = connect(BrokerConfig { delete_results: true, ..config(&worker.queue) }).await;
    let eval_ids: Vec<String> = (0..200).map(|i| format!("ev-burst-{i}")).collect();
    let tasks: Vec<EncodedTask> = eval_ids.iter().map(|id| trivial(&worker.queue, 0, id)).collect();
    let _cleanup = Cleanup::default().results(&tasks);

    let waiters: Vec<_> = join_all(tasks.iter().map(|t| broker.submit(t))).await;
    let waiters: Vec<_> = waiters.into_iter().collect::<Result<_, _>>().expect("all submitted");

    assert_eq!(
        broker.stats(),
        BrokerStats { pubsub_connected: true, pubsub_connects: 1, waiters: 200, late_watches: 0, result_polls: 0 }
    );
    let shared: Vec<u64> =
        subscriptions_per_client().iter().filter(|(_, sub)| *sub == 200).map(|(id, _)| *id).collect();
    assert_eq!(shared.len(), 1, "clients subscribed to 200 channels: {shared:?}");

    let outcomes = join_all(waiters.into_iter().map(|w| w.wait(TASK_DEADLINE))).await;
    for (outcome, eval_id) in outcomes.into_iter().zip(&eval_ids) {
        let (result, _) = final_result(outcome);
        assert_eq!(result.state, TaskState::Success(trivial_outcome(eval_id)));
    }

    // Pub/sub delivered every result: no waiter polled.
    assert_eq!(
        broker.stats(),
        BrokerStats { pubsub_connected: true, pubsub_connects: 1, waiters: 0, late_watches: 0, result_polls: 0 }
    );
    // Dropped waiters unsubscribe in the background.
    let started = Instant::now();
    let left = loop {
        let left = subscriptions_per_client().iter().find(|(id, _)| *id == shared[0]).map(|(_, sub)| *sub);
        if left == Some(0) || started.elapsed() > Duration::from_secs(5) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(left, Some(0), "subscriptions left on the shared connection");
}

#[tokio::test]
async fn tasks_with_the_brokers_ids_need_no_subscription_of_their_own() {
    let queue = new_queue("pattern");
    // Polling so slow that only pub/sub can deliver the results in time.
    let broker = connect(BrokerConfig { result_poll_interval: Duration::from_secs(60), ..config(&queue) }).await;
    let tasks: Vec<EncodedTask> =
        (0..50).map(|i| trivial_with_own_id(&broker, &queue, &format!("ev-pattern-{i}"))).collect();
    let _cleanup = Cleanup::default().queue(&queue).results(&tasks);
    let waiters = join_all(tasks.iter().map(|t| broker.submit(t))).await;
    let waiting = tokio::spawn(join_all(waiters.into_iter().map(|w| w.expect("submitted").wait(TASK_DEADLINE))));

    let mut redis = redis();
    for task in &tasks {
        // No client subscribed to the channel itself...
        let numsub: (String, u32) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(result_key(&task.task_id)).query(&mut redis).expect("NUMSUB");
        assert_eq!(numsub.1, 0, "{}", task.task_id);
        // ...yet exactly one receives its publish: our broker, through its pattern.
        assert_eq!(write_state(task, "SUCCESS", json!(task.task_id)), 1, "{}", task.task_id);
    }
    let started = Instant::now();
    for (task, outcome) in tasks.iter().zip(waiting.await.expect("waits ran")) {
        assert_eq!(final_result(outcome).0.state, TaskState::Success(json!(task.task_id)));
    }
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}: results were polled", started.elapsed());
    assert_eq!(
        broker.stats(),
        BrokerStats { pubsub_connected: true, pubsub_connects: 1, waiters: 0, late_watches: 0, result_polls: 0 }
    );
}

// ---- no worker ------------------------------------------------------------------------

#[tokio::test]
async fn without_a_worker_the_task_is_lost_at_its_deadline() {
    let queue = new_queue("lost");
    let broker = connect(config(&queue)).await;
    let task = trivial(&queue, 0, "ev-lost");
    let _cleanup = Cleanup::default().queue(&queue);

    let waiter = broker.submit(&task).await.expect("submitted");
    let started = Instant::now();
    let outcome = waiter.wait(Duration::from_millis(300)).await.expect("no error");

    assert_eq!(outcome, WaitOutcome::Lost { last_state: None, retries_seen: 0 });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 1);
}

#[tokio::test]
async fn a_waiter_sends_nothing_while_its_subscription_holds() {
    let queue = new_queue("quiet");
    // A poll interval short enough to poll 30 times before the deadline, were it polling.
    let broker = connect(BrokerConfig { result_poll_interval: Duration::from_millis(10), ..config(&queue) }).await;
    let tasks: Vec<EncodedTask> = (0..20).map(|i| trivial(&queue, 0, &format!("ev-quiet-{i}"))).collect();
    let _cleanup = Cleanup::default().queue(&queue);

    let waiters = join_all(tasks.iter().map(|t| broker.submit(t))).await;
    let outcomes = join_all(waiters.into_iter().map(|w| w.expect("submitted").wait(Duration::from_millis(300)))).await;

    for outcome in outcomes {
        assert_eq!(outcome.expect("no error"), WaitOutcome::Lost { last_state: None, retries_seen: 0 });
    }
    assert_eq!(broker.stats().result_polls, 0);
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 20);
}

/// A queue of its own for removal tests, its broker, its cleanup, and enough filler
/// messages to push a task deeper than `REMOVE_SCAN`.
async fn removal_setup(what: &str) -> (String, CeleryBroker, Cleanup, Vec<String>) {
    let queue = new_queue(what);
    let broker = connect(config(&queue)).await;
    let cleanup = Cleanup::default().queue(&queue);
    let fillers = (0..REMOVE_SCAN + 50).map(|i| format!("filler-{i}")).collect();
    (queue, broker, cleanup, fillers)
}

#[tokio::test]
async fn a_lost_task_is_taken_out_of_either_end_of_its_queue_but_not_searched_for_deep_inside() {
    let (queue, broker, _cleanup, fillers) = removal_setup("remove").await;
    let mut redis = redis();

    // At the tail, where workers take from: pushed before everything else.
    let tail = trivial(&queue, 0, "ev-tail");
    drop(broker.submit(&tail).await.expect("submitted"));
    let () = redis.lpush(&queue, &fillers).expect("LPUSH");
    assert!(broker.remove_queued(&tail).await.expect("LPOS"));
    // At the head: the latest pushed.
    let head = trivial(&queue, 0, "ev-head");
    drop(broker.submit(&head).await.expect("submitted"));
    assert!(broker.remove_queued(&head).await.expect("LPOS"));
    assert_eq!(broker.queue_depth().await.expect("LLEN"), fillers.len() as u64);
    // Deeper than REMOVE_SCAN from both ends: left to its `expires`.
    let deep = trivial(&queue, 0, "ev-deep");
    drop(broker.submit(&deep).await.expect("submitted"));
    let () = redis.lpush(&queue, &fillers).expect("LPUSH");
    assert!(!broker.remove_queued(&deep).await.expect("LPOS"));
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 2 * fillers.len() as u64 + 1);
    let deep_at: Option<usize> = redis.lpos(&queue, &deep.envelope, redis::LposOptions::default()).expect("LPOS");
    assert_eq!(deep_at, Some(fillers.len()));
}

#[tokio::test]
async fn lost_tasks_given_up_together_are_taken_out_together_each_answered_for_itself() {
    let (queue, broker, _cleanup, fillers) = removal_setup("remove-many").await;
    let mut redis = redis();

    // Ten at the tail under the fillers, ten at the head above them, and one never pushed.
    let tail: Vec<EncodedTask> = (0..10).map(|i| trivial(&queue, 0, &format!("ev-tail-{i}"))).collect();
    for waiter in join_all(tail.iter().map(|t| broker.submit(t))).await {
        drop(waiter.expect("submitted"));
    }
    let () = redis.lpush(&queue, &fillers).expect("LPUSH");
    let head: Vec<EncodedTask> = (0..10).map(|i| trivial(&queue, 0, &format!("ev-head-{i}"))).collect();
    for waiter in join_all(head.iter().map(|t| broker.submit(t))).await {
        drop(waiter.expect("submitted"));
    }
    let never = trivial(&queue, 0, "ev-never-pushed");
    let all: Vec<&EncodedTask> = tail.iter().chain(&head).chain([&never]).collect();

    let removed = join_all(all.iter().map(|t| broker.remove_queued(t))).await;
    let removed: Vec<bool> = removed.into_iter().map(|r| r.expect("LPOS and LREM")).collect();
    assert_eq!(removed, [vec![true; 20], vec![false]].concat());
    assert_eq!(broker.queue_depth().await.expect("LLEN"), fillers.len() as u64);
    let left: Vec<String> = redis.lrange(&queue, 0, -1).expect("LRANGE");
    assert!(left.iter().all(|message| message.starts_with("filler-")), "only the fillers are left");
}

#[tokio::test]
async fn hundreds_of_tasks_given_up_together_are_all_found_past_one_another() {
    let (queue, broker, _cleanup, fillers) = removal_setup("remove-burst").await;
    let mut redis = redis();

    // Three times REMOVE_SCAN at the tail, oldest first, under the fillers: each search
    // must reach past the others of its batch.
    let burst: Vec<EncodedTask> = (0..3 * REMOVE_SCAN).map(|i| trivial(&queue, 0, &format!("ev-burst-{i}"))).collect();
    for task in &burst {
        let () = redis.lpush(&queue, &task.envelope).expect("LPUSH");
    }
    let () = redis.lpush(&queue, &fillers).expect("LPUSH");

    let removed = join_all(burst.iter().map(|t| broker.remove_queued(t))).await;
    let removed: Vec<bool> = removed.into_iter().map(|r| r.expect("LPOS and LREM")).collect();
    assert_eq!(removed, vec![true; burst.len()]);
    assert_eq!(broker.queue_depth().await.expect("LLEN"), fillers.len() as u64);
}

#[tokio::test]
async fn a_lost_task_behind_older_tasks_still_waited_for_is_found() {
    let (queue, broker, _cleanup, fillers) = removal_setup("remove-behind").await;
    let mut redis = redis();

    // Older tasks still waited for at the tail (their deadlines fire later, as on a busier
    // proxy thread), then the task given up, then the fillers: it is deeper than
    // REMOVE_SCAN from both ends.
    let older: Vec<EncodedTask> = (0..REMOVE_SCAN + 50).map(|i| trivial(&queue, 0, &format!("ev-older-{i}"))).collect();
    let waiting: Vec<_> = join_all(older.iter().map(|t| broker.submit(t))).await;
    let lost = trivial(&queue, 0, "ev-given-up");
    drop(broker.submit(&lost).await.expect("submitted"));
    let () = redis.lpush(&queue, &fillers).expect("LPUSH");

    assert!(broker.remove_queued(&lost).await.expect("LPOS and LREM"));
    assert_eq!(broker.queue_depth().await.expect("LLEN"), (older.len() + fillers.len()) as u64);
    drop(waiting);
}

#[tokio::test]
async fn a_result_stored_before_the_subscription_is_read_at_once() {
    let queue = new_queue("stored");
    // Polling so slow that only the GET right after subscribing can find the result.
    let broker = connect(BrokerConfig { result_poll_interval: Duration::from_secs(60), ..config(&queue) }).await;
    let task = trivial(&queue, 0, "ev-stored");
    let _cleanup = Cleanup::default().queue(&queue).results([&task]);
    let stored = json!({"status": "SUCCESS", "result": {"answer": 42}, "traceback": null, "children": [],
        "date_done": "2026-11-28T15:38:15.932640+00:00", "task_id": task.task_id});
    let () = redis().set_ex(result_key(&task.task_id), stored.to_string(), 60).expect("SETEX");

    let started = Instant::now();
    let waiter = broker.submit(&task).await.expect("submitted");
    let (result, retries_seen) = final_result(waiter.wait(Duration::from_secs(10)).await);

    assert!(started.elapsed() < Duration::from_secs(5), "took {:?} (the deadline is 10 s)", started.elapsed());
    assert_eq!(retries_seen, 0);
    assert_eq!(result.state, TaskState::Success(json!({"answer": 42})));
    assert_eq!(result.date_done.as_deref(), Some("2026-11-28T15:38:15.932640+00:00"));
}

/// Writes a state as a worker does: `SETEX` and `PUBLISH` in one transaction; returns how
/// many subscribers received the publish.
#[tokio::test]
async fn results_read_and_deleted_together_each_get_their_own_answer() {
    let queue = new_queue("keys");
    // Pub/sub holds, so nothing is read until the deadline's last look at each key.
    let broker =
        connect(BrokerConfig { result_poll_interval: Duration::from_secs(60), delete_results: true, ..config(&queue) })
            .await;
    let tasks: Vec<EncodedTask> = (0..21).map(|i| trivial(&queue, 0, &format!("ev-keys-{i}"))).collect();
    let _cleanup = Cleanup::default().queue(&queue).results(&tasks);
    let waiters: Vec<_> = join_all(tasks.iter().map(|t| broker.submit(t))).await;
    // Written after the subscriptions and never published: ten results, one key of another
    // type, ten with nothing.
    let mut redis = redis();
    for task in &tasks[..10] {
        let stored = json!({"status": "SUCCESS", "result": task.task_id, "traceback": null, "children": [],
            "date_done": "2026-12-07T02:00:00.000000+00:00", "task_id": task.task_id});
        let () = redis.set_ex(result_key(&task.task_id), stored.to_string(), 60).expect("SETEX");
    }
    let () = redis.rpush(result_key(&tasks[10].task_id), "not a string").expect("RPUSH");

    let outcomes = join_all(waiters.into_iter().map(|w| w.expect("submitted").wait(Duration::from_millis(300)))).await;

    for (task, outcome) in tasks[..10].iter().zip(&outcomes) {
        match outcome {
            Ok(WaitOutcome::Final { result, retries_seen: 0 }) => {
                assert_eq!(result.state, TaskState::Success(json!(task.task_id)));
            }
            other => panic!("{}: {other:?}", task.task_id),
        }
    }
    match &outcomes[10] {
        Err(BrokerError::Unavailable { action, .. }) => {
            assert_eq!(action, &format!("GET {:?}", result_key(&tasks[10].task_id)));
        }
        other => panic!("the key of another type: {other:?}"),
    }
    for outcome in &outcomes[11..] {
        assert_eq!(outcome.as_ref().expect("no error"), &WaitOutcome::Lost { last_state: None, retries_seen: 0 });
    }
    // The results read were deleted; the key of another type was left alone.
    let keys: Vec<String> = tasks[..11].iter().map(|t| result_key(&t.task_id)).collect();
    let left: usize = redis.exists(&keys).expect("EXISTS");
    assert_eq!(left, 1);
}

fn write_state(task: &EncodedTask, status: &str, result: Value) -> u32 {
    let date_done = if matches!(status, "SUCCESS" | "FAILURE" | "REVOKED") {
        json!("2026-11-28T15:38:24.228909+00:00")
    } else {
        Value::Null
    };
    let value = json!({"status": status, "result": result, "traceback": null, "children": [],
        "date_done": date_done, "task_id": task.task_id})
    .to_string();
    let key = result_key(&task.task_id);
    let ((), receivers): ((), u32) =
        redis::pipe().atomic().set_ex(&key, &value, 60).publish(&key, &value).query(&mut redis()).expect("MULTI");
    receivers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_started_are_not_final_and_retries_are_counted() {
    let queue = new_queue("states");
    let broker = connect(config(&queue)).await;
    let retried = trivial(&queue, 0, "ev-retried");
    let running = trivial(&queue, 0, "ev-running");
    let _cleanup = Cleanup::default().queue(&queue).results([&retried, &running]);
    let retry = json!({"exc_type": "RuntimeError", "exc_message": ["try again"], "exc_module": "builtins"});
    let started = json!({"pid": 1, "hostname": "w@h"});

    let waiter = broker.submit(&retried).await.expect("submitted");
    let waiting = tokio::spawn(waiter.wait(Duration::from_secs(10)));
    // As a worker would, one state after another; two identical RETRYs are two retries.
    for (status, result) in [("STARTED", &started), ("RETRY", &retry), ("RETRY", &retry), ("FAILURE", &retry)] {
        // Exactly one receiver, our waiter: submit returns subscribed.
        assert_eq!(write_state(&retried, status, result.clone()), 1, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (result, retries_seen) = final_result(waiting.await.expect("wait ran"));
    assert_eq!(retries_seen, 2);
    assert_eq!(result.state.status(), "FAILURE");
    assert_eq!(result.state.error().map(|e| e.to_json()), Some(retry));

    let waiter = broker.submit(&running).await.expect("submitted");
    assert_eq!(write_state(&running, "STARTED", started), 1);
    let outcome = waiter.wait(Duration::from_millis(300)).await.expect("no error");
    assert_eq!(outcome, WaitOutcome::Lost { last_state: Some("STARTED".into()), retries_seen: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pubsub_connection_is_reopened_and_resubscribed() {
    let queue = new_queue("reconnect");
    // Polling so slow that only pub/sub can deliver the results in time.
    let broker = connect(BrokerConfig { result_poll_interval: Duration::from_secs(60), ..config(&queue) }).await;
    // An unusual number of subscriptions, to find our connection in CLIENT LIST, and tasks
    // with the broker's own ids, which its pattern subscription covers.
    let tasks: Vec<EncodedTask> = (0..37)
        .map(|i| trivial(&queue, 0, &format!("ev-reconnect-{i}")))
        .chain((0..5).map(|i| trivial_with_own_id(&broker, &queue, &format!("ev-reconnect-own-{i}"))))
        .collect();
    let _cleanup = Cleanup::default().queue(&queue).results(&tasks);
    let waiters = join_all(tasks.iter().map(|t| broker.submit(t))).await;
    let ours = |subs: Vec<(u64, u64)>| subs.into_iter().filter(|(_, sub)| *sub == 37).map(|(id, _)| id).collect();
    let before: Vec<u64> = ours(subscriptions_per_client());
    assert_eq!(before.len(), 1, "clients subscribed to 37 channels: {before:?}");

    let () = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(before[0]).query(&mut redis()).expect("CLIENT KILL");
    let started = Instant::now();
    let after = loop {
        let after: Vec<u64> = ours(subscriptions_per_client());
        if after.len() == 1 && after != before || started.elapsed() > Duration::from_secs(5) {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.len(), 1, "no new connection subscribed to the 37 channels: {after:?}");
    assert_eq!(
        broker.stats(),
        BrokerStats { pubsub_connected: true, pubsub_connects: 2, waiters: 42, late_watches: 0, result_polls: 0 }
    );

    let waiting = tokio::spawn(join_all(waiters.into_iter().map(|w| w.expect("submitted").wait(TASK_DEADLINE))));
    for task in &tasks {
        assert_eq!(write_state(task, "SUCCESS", json!("done")), 1);
    }
    let outcomes = waiting.await.expect("waits ran");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}: results were polled", started.elapsed());
    for outcome in outcomes {
        assert_eq!(final_result(outcome).0.state, TaskState::Success(json!("done")));
    }
}

#[tokio::test]
async fn an_unreadable_result_is_an_error() {
    let queue = new_queue("garbage");
    let broker = connect(config(&queue)).await;
    let task = trivial(&queue, 0, "ev-garbage");
    let _cleanup = Cleanup::default().queue(&queue).results([&task]);
    let () = redis().set_ex(result_key(&task.task_id), "{\"status\": 1}", 60).expect("SET");

    let waiter = broker.submit(&task).await.expect("submitted");
    let error = waiter.wait(Duration::from_secs(5)).await.expect_err("unreadable");

    assert!(
        matches!(&error, BrokerError::BadResult { task_id, source: WireError::BadResult { .. } } if *task_id == task.task_id),
        "{error:?}"
    );
}

#[tokio::test]
async fn queue_depth_counts_every_priority_list() {
    let queue = new_queue("depth");
    let broker = connect(config(&queue)).await;
    let _cleanup = Cleanup::default().queue(&queue);
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 0);

    let tasks: Vec<EncodedTask> = [0, 1, 3, 5, 6, 9, 9].iter().map(|p| trivial(&queue, *p, "ev-depth")).collect();
    let waiters = join_all(tasks.iter().map(|t| broker.submit(t))).await;

    assert!(waiters.iter().all(Result::is_ok), "{waiters:?}");
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 7);
    let mut redis = redis();
    let per_key: Vec<u64> =
        PriorityLayout::default().keys(&queue).iter().map(|k| redis.llen(k).expect("LLEN")).collect();
    assert_eq!(per_key, [2, 2, 1, 2]);
}

#[tokio::test]
async fn invalid_or_duplicate_messages_are_never_pushed() {
    let queue = new_queue("refused");
    let broker = connect(config(&queue)).await;
    let _cleanup = Cleanup::default().queue(&queue);
    let task = trivial(&queue, 0, "ev-refused");

    let mut envelope: Value = serde_json::from_str(&task.envelope).expect("JSON");
    envelope.as_object_mut().expect("object").remove("content-type");
    let crashing = EncodedTask { envelope: envelope.to_string(), ..task.clone() };
    let error = broker.submit(&crashing).await.expect_err("refused");
    assert!(
        matches!(error, BrokerError::InvalidMessage(WireError::MissingField { field: "content-type" })),
        "{error:?}"
    );
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 0);
    assert_eq!(broker.stats().waiters, 0);

    let _first = broker.submit(&task).await.expect("submitted");
    let error = broker.submit(&task).await.expect_err("a second waiter for the same id");
    assert!(matches!(&error, BrokerError::AlreadyWaiting { task_id } if *task_id == task.task_id), "{error:?}");
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 1);
}

#[tokio::test]
async fn an_unreachable_redis_fails_connect_quickly() {
    let started = Instant::now();
    let error =
        CeleryBroker::connect(BrokerConfig { broker: RedisSpec::url("redis://127.0.0.1:1/0"), ..config("none") })
            .await
            .expect_err("nothing listens on port 1");
    assert!(matches!(error, BrokerError::Unavailable { which: "broker", .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

// ---- tests that run alone -------------------------------------------------------------

#[tokio::test]
async fn lower_priority_numbers_run_first() {
    let _alone = Alone::take().await;
    let queue = new_queue("priority");
    let broker = connect(config(&queue)).await;
    let tasks: Vec<EncodedTask> = [9, 0, 5].iter().map(|p| trivial(&queue, *p, &format!("ev-p{p}"))).collect();
    let _cleanup = Cleanup::default().queue(&queue).results(&tasks);
    assert_eq!(broker.revoke("no-such-task").await.expect("published"), 0, "no worker listens yet");

    let waiters = join_all(tasks.iter().map(|t| broker.submit(t))).await;
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 3);
    let _worker = Worker::start_with(&[&queue], DB, 1, &[]);
    let mut done: Vec<(String, String)> = Vec::new();
    for waiter in waiters {
        let (result, _) = final_result(waiter.expect("submitted").wait(TASK_DEADLINE).await);
        let TaskState::Success(outcome) = &result.state else { panic!("not a success: {result:?}") };
        done.push((result.date_done.clone().expect("date_done"), outcome["eval_id"].as_str().expect("id").to_owned()));
    }

    done.sort();
    let order: Vec<&str> = done.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(order, ["ev-p0", "ev-p5", "ev-p9"], "by date_done: {done:?}");
}

#[tokio::test]
async fn a_task_whose_worker_is_killed_is_lost() {
    let _alone = Alone::take().await;
    let queue = new_queue("killed");
    let broker = connect(config(&queue)).await;
    let mut worker = Worker::start(&queue, DB, &[("EVALSTACK_SLEEP_WHEN", "SLEEP_ME"), ("EVALSTACK_SLEEP_S", "30")]);
    let (_, task) = evaluate(TaskSpec::new("evaluate", &queue), "print('SLEEP_ME')");
    let _cleanup = Cleanup::default().queue(&queue).results([&task]).unacked(&task);

    let waiter = broker.submit(&task).await.expect("submitted");
    let received = format!("Task evaluate[{}] received", task.task_id);
    assert!(worker.wait_for_log(&received, Duration::from_secs(10)), "never received; log:\n{}", worker.log());
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill_hard();

    // Acknowledged when it started (task_acks_late=False): nothing will ever run it again.
    let outcome = waiter.wait(Duration::from_secs(1)).await.expect("no error");
    assert_eq!(outcome, WaitOutcome::Lost { last_state: None, retries_seen: 0 });
    assert_eq!(broker.queue_depth().await.expect("LLEN"), 0);
}
