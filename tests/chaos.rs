//! The sidecar under faults, end to end with the real binary: a stalled shadow, a small
//! descriptor table, a memory budget, and (below) Celery workers killed, stopped and
//! resumed, and Redis stopped with a backlog. Each test states the exact counts.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/legacy_py.rs"]
mod legacy_py;
#[path = "support/own_redis.rs"]
mod own_redis;
#[path = "support/sidecar.rs"]
mod sidecar;
#[path = "support/worker.rs"]
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use evalapi::{Behaviour, EvalApi, Stalled};
use futures_util::stream::{self, StreamExt};
use hyper::{Method, StatusCode};
use own_redis::OwnRedis;
use serde_json::{json, Value};
use sidecar::{http_config, send, Sidecar};
use worker::Worker;

/// Waits until the sidecar has seen `submissions` and every one of them is judged, not
/// mirrored, or (when `pending_ok`) still pending; returns the report.
async fn accounted(sidecar: &Sidecar, submissions: u64) -> Value {
    let started = Instant::now();
    loop {
        let report = sidecar.report(None).await;
        let a = &report["accounting"];
        if a["submissions"].as_u64() == Some(submissions) {
            return report;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not accounted: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits `count` evaluations `prefix-<i>`, `concurrency` at a time; asserts that each
/// client got the legacy answer, byte for byte.
async fn submit_all(sidecar: &Sidecar, prefix: &str, count: usize, concurrency: usize, code: Arc<String>) {
    let client = sidecar::client();
    let url = sidecar.url("/evaluations");
    stream::iter(0..count)
        .for_each_concurrent(concurrency, |i| {
            let (client, url, code) = (client.clone(), url.clone(), Arc::clone(&code));
            async move {
                let eval_id = format!("{prefix}-{i}");
                let body = json!({"eval_id": eval_id, "code": code.as_str(), "language": "python"}).to_string();
                let reply = send(&client, Method::POST, &url, &[("content-type", "application/json")], body).await;
                assert_eq!(reply.status, StatusCode::ACCEPTED);
                assert_eq!(reply.body, format!(r#"{{"eval_id":"{eval_id}","status":"queued"}}"#));
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http_shadow_under_1024_open_files_costs_clients_nothing() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = Stalled::start().await;
    let config = http_config(&legacy.url(), &shadow.url(), "[shadow]\nbreaker_failures = 0\n");
    let sidecar = Sidecar::start_with_open_files(&config, 1024);

    submit_all(&sidecar, "fd", 2000, 64, Arc::new("print(1)".into())).await;
    let report = sidecar.settled(2000, None).await;
    let a = &report["accounting"];
    let judged = a["judged"].as_u64().expect("judged");
    // 256 connections, each with a submission, and as many waiting: the rest are refused
    // at once while those wait (2 s) for the answer that never comes.
    let busy = a["not_mirrored"]["shadow_busy"].as_u64().expect("shadow_busy");
    assert_eq!(judged + busy, 2000, "judged or refused as the shadow is busy, nothing else: {a}");
    assert_eq!(a["not_mirrored"].as_object().map(|m| m.len()), Some(1), "{a}");
    assert!(judged >= 512, "at least the first 512 were mirrored: {a}");
    assert_eq!(report["totals"]["shadow_error"].as_u64(), Some(judged), "every mirrored one timed out");
    assert_eq!(legacy.submissions(), 2000);
    assert_eq!(sidecar.metric("shadowdiff_accept_errors_total").await, 0.0);
    assert_eq!(sidecar.metric("shadowdiff_client_errors_total").await, 0.0);
    assert_eq!(sidecar.metric("shadowdiff_legacy_unreachable_total").await, 0.0);
    assert_eq!(sidecar.metric("shadowdiff_legacy_timeout_total").await, 0.0);
    assert!(shadow.most_connections() <= 256, "shadow connections capped: {}", shadow.most_connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pending_one_megabyte_submissions_stay_under_the_byte_budget() {
    const LIMIT: u64 = 64 << 20;
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = Stalled::start().await;
    let config = http_config(&legacy.url(), &shadow.url(), &format!("[shadow]\nmax_pending_bytes = {LIMIT}\n"))
        .replace("timeout_ms = 2000\n", "timeout_ms = 120000\n");
    let sidecar = Sidecar::start(&config);

    let code = Arc::new("x".repeat(999_900));
    submit_all(&sidecar, "mb", 1000, 8, code).await;
    accounted(&sidecar, 1000).await;
    // Every pending evaluation has its legacy outcome once the bytes held stop growing.
    let started = Instant::now();
    let mut held = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sidecar.metric("shadowdiff_pending_bytes").await as u64;
        if now == held || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        held = now;
    }
    let report = sidecar.report(None).await;
    let a = &report["accounting"];
    let pending = a["pending"].as_u64().expect("pending");
    let budget = a["not_mirrored"]["memory_budget"].as_u64().expect("memory_budget");
    assert_eq!(pending + budget, 1000, "{a}");
    assert_eq!(a["not_mirrored"].as_object().map(|m| m.len()), Some(1), "{a}");

    assert_eq!(sidecar.metric("shadowdiff_pending_bytes_limit").await as u64, LIMIT);
    assert!(pending > 0 && held <= LIMIT, "{pending} pending hold {held} bytes of {LIMIT}");
    // Each holds its request body once, and the legacy outcome (which echoes the code)
    // unless that did not fit: then it was dropped, and the evaluation will not be compared.
    let per_evaluation = held / pending;
    assert!((1_000_000..2_002_000).contains(&per_evaluation), "{per_evaluation} bytes per evaluation");
    let rss = sidecar.rss_bytes();
    assert!(rss < LIMIT + (96 << 20), "resident memory {} MiB for a {} MiB budget", rss >> 20, LIMIT >> 20);
}

// ---- Celery ----------------------------------------------------------------------------

/// A Celery shadow on `redis` (database 0) and `queue`, with this outcome deadline.
fn celery_config(legacy: &str, redis: &OwnRedis, queue: &str, deadline_ms: u64, extra: &str) -> String {
    sidecar::celery_config(legacy, &redis.url(0), queue, deadline_ms, extra)
}

fn queue(name: &str) -> String {
    format!("sd-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Submits `codes` as `prefix-<i>` one after the other.
async fn submit_codes(sidecar: &Sidecar, prefix: &str, codes: &[&str]) {
    for (i, code) in codes.iter().enumerate() {
        let eval_id = format!("{prefix}-{i}");
        let reply = sidecar.submit(&eval_id, code).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.json(), json!({"eval_id": eval_id, "status": "queued"}));
    }
}

/// Waits until `check` holds, for up to `patience`.
async fn eventually(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < patience, "still not so after {patience:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_sigkilled_mid_run_loses_its_evaluations_and_a_later_worker_runs_none() {
    let redis = OwnRedis::start();
    let queue = queue("kill");
    let mut worker = Worker::start_on(&redis.url(0), &[&queue], 2, &[]);
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start(&celery_config(&legacy.url, &redis, &queue, 3_000, ""));

    // Two run, two wait prefetched in the worker, two wait in the queue.
    let slow = "import time; time.sleep(2); print('done')";
    submit_codes(&sidecar, "k", &[slow; 6]).await;
    assert!(worker.wait_for_log("received", Duration::from_secs(10)), "the worker took tasks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill_hard();

    let report = sidecar.settled(6, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 6, "{report:#}");
    assert_eq!(report["totals"]["evaluations"], 6);
    assert_eq!(redis.llen(&queue), 0, "lost tasks still queued were removed");
    assert_eq!(redis.keys("celery-task-meta-*"), Vec::<String>::new());

    // A worker started later finds nothing to run.
    let later = Worker::start_on(&redis.url(0), &[&queue], 1, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!later.log().contains("Task evaluate["), "a stale task ran:\n{}", later.log());
    assert_eq!(redis.keys("celery-task-meta-*"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stopped_past_the_deadline_runs_nothing_late_and_leaves_no_keys() {
    let redis = OwnRedis::start();
    let queue = queue("stop");
    let worker = Worker::start_on(&redis.url(0), &[&queue], 1, &[]);
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start(&celery_config(&legacy.url, &redis, &queue, 1_500, ""));

    // Idle, the worker waits in BRPOP: stopped now, it pops one message it cannot run.
    eventually("the worker waits in BRPOP", Duration::from_secs(10), || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis.connection()).expect("CLIENT LIST");
        clients.contains("cmd=brpop")
    })
    .await;
    worker.pause();
    submit_codes(&sidecar, "p", &["print(1)", "print(2)", "print(3)"]).await;
    let report = sidecar.settled(3, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 3, "{report:#}");
    // The two still queued were removed; the popped one was revoked.
    assert_eq!(redis.llen(&queue), 0);

    worker.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = worker.log();
    assert!(!log.contains("succeeded in"), "a task ran after its deadline:\n{log}");
    assert_eq!(log.matches("Discarding revoked task").count(), 1, "the popped task was discarded:\n{log}");
    eventually("no result keys left", Duration::from_secs(5), || redis.keys("celery-task-meta-*").is_empty()).await;
    assert_eq!(redis.llen(&queue), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stopped_for_five_seconds_with_a_backlog_loses_nothing_it_kept() {
    let mut redis = OwnRedis::start();
    let queue = queue("outage");
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start(&celery_config(&legacy.url, &redis, &queue, 30_000, ""));

    // A backlog: no worker yet.
    submit_codes(&sidecar, "before", &["print(1)", "print(2)", "print(3)", "print(4)", "print(5)"]).await;
    eventually("the backlog is queued", Duration::from_secs(5), || redis.llen(&queue) == 5).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    submit_codes(&sidecar, "during", &["print(6)", "print(7)", "print(8)"]).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    redis.restart();

    // The backlog survived the restart; a worker runs it and every waiter gets its result.
    let _worker = Worker::start_on(&redis.url(0), &[&queue], 2, &[]);
    let report = sidecar.settled(8, None).await;
    assert_eq!(report["totals"]["match"], 5, "{report:#}");
    assert_eq!(report["accounting"]["not_mirrored"], json!({"shadow_unavailable": 3}));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    submit_codes(&sidecar, "after", &["print(9)", "print(10)"]).await;
    let report = sidecar.settled(10, None).await;
    assert_eq!(report["totals"]["match"], 7, "mirroring resumed by itself: {report:#}");
    assert_eq!(report["accounting"]["judged"], 7);
    assert_eq!(redis.keys("celery-task-meta-*"), Vec::<String>::new(), "results deleted once read");
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_expire_at_the_outcome_deadline_and_lost_ones_leave_the_queue() {
    let redis = OwnRedis::start();
    let queue = queue("expire");
    let legacy = EvalApi::start(Behaviour::default()).await;
    let sidecar = Sidecar::start(&celery_config(&legacy.url(), &redis, &queue, 1_500, ""));

    let before = std::time::SystemTime::now();
    submit_codes(&sidecar, "x", &["print(1)", "print(2)"]).await;
    eventually("both queued", Duration::from_secs(5), || redis.llen(&queue) == 2).await;
    let messages: Vec<String> =
        redis::cmd("LRANGE").arg(&queue).arg(0).arg(-1).query(&mut redis.connection()).expect("LRANGE");
    for message in &messages {
        let envelope: Value = serde_json::from_str(message).expect("envelope");
        let expires = envelope["headers"]["expires"].as_str().expect("expires is set");
        // "2026-11-29T10:21:38.656000+00:00": at most the deadline after submission.
        let at = chrono_like_seconds(expires);
        let submitted = before.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!(at > submitted && at <= submitted + 1.5 + 1.0, "expires {expires} vs submitted {submitted}");
    }
    let report = sidecar.settled(2, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 2, "{report:#}");
    assert_eq!(redis.llen(&queue), 0, "a lost task still queued is removed");
}

/// Seconds since the Unix epoch of a UTC ISO-8601 time as Celery writes it.
fn chrono_like_seconds(iso: &str) -> f64 {
    let (date, time) = iso.split_once('T').expect("T");
    let time = time.trim_end_matches("+00:00");
    let mut d = date.split('-').map(|p| p.parse::<i64>().expect("date"));
    let (y, m, day) = (d.next().expect("y"), d.next().expect("m"), d.next().expect("d"));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = time.split(':');
    let (h, min, s) = (t.next().expect("h"), t.next().expect("min"), t.next().expect("s"));
    days as f64 * 86_400.0
        + h.parse::<f64>().expect("h") * 3600.0
        + min.parse::<f64>().expect("min") * 60.0
        + s.parse::<f64>().expect("s")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_result_is_shadow_unreadable_and_its_key_deleted() {
    let redis = OwnRedis::start();
    let queue = queue("pickle");
    let _worker = Worker::start_on(&redis.url(0), &[&queue], 1, &[("EVALSTACK_RESULT_SERIALIZER", "pickle")]);
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start_logging(&celery_config(&legacy.url, &redis, &queue, 10_000, ""));

    submit_codes(&sidecar, "u", &["print(1)", "print(2)"]).await;
    let report = sidecar.settled(2, None).await;
    assert_eq!(report["accounting"]["not_mirrored"], json!({"shadow_unreadable": 2}), "{report:#}");
    assert_eq!(report["accounting"]["judged"], 0);
    eventually("no result keys left", Duration::from_secs(5), || redis.keys("celery-task-meta-*").is_empty()).await;
    let log = sidecar.log();
    let told = log.lines().filter(|l| l.contains(r#"set result_serializer = "json" and accept_content = ["json"]"#));
    assert_eq!(told.count(), 1, "one clear line naming the worker settings:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_written_to_another_database_are_noticed_and_named() {
    let redis = OwnRedis::start();
    let queue = queue("otherdb");
    // The workers' result backend is database 1; shadowdiff is told database 0.
    let _worker = Worker::start_on(&redis.url(0), &[&queue], 1, &[("SHADOWDIFF_RESULT_URL", &redis.url(1))]);
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start_logging(&celery_config(&legacy.url, &redis, &queue, 10_000, ""));

    submit_codes(&sidecar, "o", &["print(1)", "print(2)"]).await;
    let report = sidecar.settled(2, None).await;
    // Pub/sub channels span databases, so the results still arrive...
    assert_eq!(report["totals"]["match"], 2, "{report:#}");
    // ...but the warning names the misconfiguration, once.
    let log = sidecar.log();
    let told = log.lines().filter(|l| l.contains("names another Redis database than shadow.celery.result_url"));
    assert_eq!(told.count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retained_result_bytes_are_what_redis_measures() {
    let redis = OwnRedis::start();
    let queue = queue("retained");
    let _worker = Worker::start_on(&redis.url(0), &[&queue], 2, &[]);
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start(&celery_config(&legacy.url, &redis, &queue, 10_000, "delete_results = false\n"));

    submit_codes(&sidecar, "r", &["print(1)", "print(22)", "print('x' * 300)", "print(4)"]).await;
    let report = sidecar.settled(4, None).await;
    assert_eq!(report["totals"]["match"], 4, "{report:#}");
    let keys = redis.keys("celery-task-meta-*");
    assert_eq!(keys.len(), 4);
    let mut connection = redis.connection();
    let measured: u64 = keys
        .iter()
        .map(|key| redis::cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0).query::<u64>(&mut connection))
        .sum::<Result<u64, _>>()
        .expect("MEMORY USAGE");
    let gauge = sidecar.metric("shadowdiff_celery_result_bytes_retained").await;
    let ratio = gauge / measured as f64;
    assert!((0.9..=1.1).contains(&ratio), "gauge {gauge} vs MEMORY USAGE {measured}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_accept_backs_off_counts_and_recovers_at_once() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let sidecar = Sidecar::start_with_open_files(&http_config(&legacy.url(), &shadow.url(), ""), 64);

    // More idle connections than the sidecar has descriptors: its accepts fail.
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(tokio::net::TcpStream::connect(sidecar.proxy).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(idle);

    let started = Instant::now();
    let reply = sidecar.submit("fd-1", "print(1)").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(started.elapsed() < Duration::from_secs(1), "a client waited {:?}", started.elapsed());
    let errors = sidecar.metric("shadowdiff_accept_errors_total").await;
    assert!(errors >= 1.0, "accept failed and was counted: {errors}");
    let report = sidecar.settled(1, None).await;
    assert_eq!(report["totals"]["match"], 1, "{report:#}");
}
