//! The Celery shadow end to end: the real binary between the Python legacy service and a
//! real Celery worker over the local Redis. Every test uses a queue and a Redis database
//! of its own.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/legacy_py.rs"]
mod legacy_py;
#[path = "support/sidecar.rs"]
mod sidecar;
#[path = "support/worker.rs"]
mod worker;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};
use sidecar::Sidecar;

/// Redis database for these tests (the broker tests use 9).
const DB: u32 = 10;

/// A Celery shadow in database [`DB`] of the shared Redis, with the time limits the
/// evalstack tests use; `extra` goes into `[shadow.celery]`.
fn celery_config(legacy: &str, queue: &str, deadline_ms: u64, extra: &str) -> String {
    let limits = format!("soft_time_limit_s = 1.5\ntime_limit_s = 10\n{extra}");
    sidecar::celery_config(legacy, &worker::redis_url(DB), queue, deadline_ms, &limits)
}

fn queue(name: &str) -> String {
    format!("sd-{name}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_worker_every_evaluation_judged_with_known_divergences() {
    let queue = queue("e2e");
    let _worker = worker::Worker::start(
        &queue,
        DB,
        &[("EVALSTACK_STDOUT_SUFFIX_WHEN", "diverge"), ("EVALSTACK_RAISE_WHEN", "boom")],
    );
    let legacy = legacy_py::LegacyService::start(1.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.jsonl");
    let config = celery_config(&legacy.url, &queue, 20_000, "delete_results = false\n")
        .replace("[admin]", &format!("[record]\npath = \"{}\"\n[admin]", record.display()));
    let mut sidecar = Sidecar::start(&config);

    let cases: Vec<(String, String)> = (0..8)
        .map(|i| (format!("ok-{i}"), format!("print({i})")))
        .chain([
            ("div-1".to_string(), "print('diverge 1')".to_string()),
            ("div-2".to_string(), "print('diverge 2')".to_string()),
            ("err-1".to_string(), "print('boom')".to_string()),
            ("slow-1".to_string(), "import time; time.sleep(3)".to_string()),
        ])
        .collect();
    for (eval_id, code) in &cases {
        let reply = sidecar.submit(eval_id, code).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.json(), json!({"eval_id": eval_id, "status": "queued"}), "the client gets the legacy answer");
    }
    let report = sidecar.settled(cases.len() as u64, None).await;
    assert_eq!(
        report["totals"],
        json!({"evaluations": 12, "match": 8, "equivalent": 1, "mismatch": 2, "noise": 0, "shadow_error": 1,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_eq!(report["equivalent_by_rule"], json!({"timeout": 1}), "legacy timeout = Celery soft time limit");
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["paths"], json!(["/stdout"]));
    assert_eq!(groups[0]["count"], 2);
    let diff = groups[0]["examples"][0]["differences"][0]["diff"].as_str().expect("line diff");
    assert!(diff.contains("+shadow-diverged"), "{diff}");
    assert_eq!(report["accounting"]["judged"], 12);

    let metrics = sidecar.admin_get("/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.lines().any(|l| l == "celery_tasks_submitted_total 12"), "{text}");
    assert!(text.lines().any(|l| l == "celery_queue_length 0"), "{text}");
    let retained: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("shadowdiff_celery_result_bytes_retained "))
        .and_then(|v| v.parse().ok())
        .expect("retained result bytes metric");
    assert!(retained > 1000, "12 results kept in Redis: {retained} bytes");
    let mut redis = redis::Client::open(worker::redis_url(DB)).expect("url").get_connection().expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg("celery-task-meta-*").query(&mut redis).expect("KEYS");
    assert!(keys.len() >= 12, "results were kept: {}", keys.len());
    let _: () = redis::cmd("DEL").arg(&keys).query(&mut redis).expect("DEL");

    assert!(sidecar.stop().success());
    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .expect("recording")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect();
    assert_eq!(lines.len(), 12);
    let error = lines.iter().find(|l| l["eval_id"] == "err-1").expect("err-1 recorded");
    assert_eq!(error["shadow"]["error"]["exc_type"], "RuntimeError");
    assert_eq!(error["shadow"]["error"]["exc_message"], json!(["evalstack: forced failure"]));
    let slow = lines.iter().find(|l| l["eval_id"] == "slow-1").expect("slow-1 recorded");
    assert_eq!(slow["shadow"]["error"]["exc_type"], "SoftTimeLimitExceeded");
    assert_eq!(slow["legacy"]["outcome"]["status"], "timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_run_leaves_its_evaluations_lost_and_clients_untouched() {
    let queue = queue("kill");
    let mut worker = worker::Worker::start(&queue, DB, &[]);
    let legacy = legacy_py::LegacyService::start(10.0);
    let sidecar = Sidecar::start(&celery_config(&legacy.url, &queue, 4_000, ""));
    for i in 0..2 {
        let reply = sidecar.submit(&format!("k-{i}"), "import time; time.sleep(1.2); print('done')").await;
        assert_eq!(reply.json(), json!({"eval_id": format!("k-{i}"), "status": "queued"}));
    }
    assert!(worker.wait_for_log("received", Duration::from_secs(10)), "the worker took the tasks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill_hard();
    let report = sidecar.settled(2, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 2, "{report:#}");
    assert_eq!(report["totals"]["evaluations"], 2);
    assert_eq!(report["readiness"]["checks"][3]["pass"], false, "max_lost fails");
}

/// A Redis of our own, so that stopping it harms nobody else.
struct OwnRedis {
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install Redis (apt-get install redis-server) or run scripts/test-env.sh")
            });
        let redis = OwnRedis { child: Some(child) };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {port} did not start");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stopped_and_restarted_pauses_and_resumes_mirroring() {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let legacy = evalapi::EvalApi::start(evalapi::Behaviour::default()).await;
    let config = celery_config(&legacy.url(), &queue("redis"), 500, "revoke_lost = false\n")
        .replace(&worker::redis_url(DB), &format!("redis://127.0.0.1:{port}/0"));
    let sidecar = Sidecar::start(&config);

    // No worker: tasks are enqueued and, at their deadline, lost.
    sidecar.submit("before", "print(1)").await;
    let report = sidecar.settled(1, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 1);

    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let reply = sidecar.submit(&format!("down-{i}"), "print(1)").await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "the legacy path is never affected");
    }
    let report = sidecar.settled(4, None).await;
    assert_eq!(report["accounting"]["not_mirrored"], json!({"shadow_unavailable": 3}), "{report:#}");

    let _redis = OwnRedis::start(port);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sidecar.submit("after", "print(1)").await;
    let report = sidecar.settled(5, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 2, "mirroring resumed by itself: {report:#}");
    assert_eq!(report["accounting"]["not_mirrored"], json!({"shadow_unavailable": 3}));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_past_the_deadline_counts_pushed_tasks_lost_not_unmirrored() {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let legacy = evalapi::EvalApi::start(evalapi::Behaviour::default()).await;
    let config = celery_config(&legacy.url(), &queue("outage"), 2_000, "revoke_lost = false\n")
        .replace(&worker::redis_url(DB), &format!("redis://127.0.0.1:{port}/0"));
    let sidecar = Sidecar::start(&config);

    // No worker: the tasks are pushed and wait; then Redis goes away for longer than the
    // outcome deadline. Pushed tasks are mirrored, and without an outcome they are lost.
    for i in 0..4 {
        let reply = sidecar.submit(&format!("outage-{i}"), "print(1)").await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let start = std::time::Instant::now();
    // Pushed means in the broker: the shadow counts a task once its LPUSH succeeded.
    let pushed = || async {
        let metrics = sidecar.admin_get("/metrics", None).await;
        String::from_utf8_lossy(&metrics.body).lines().any(|l| l == "celery_tasks_submitted_total 4")
    };
    while !pushed().await {
        assert!(start.elapsed() < Duration::from_secs(5), "the 4 tasks were not pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.stop();
    let report = sidecar.settled(4, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 4, "{report:#}");
    assert_eq!(report["accounting"]["not_mirrored"], json!({}), "a pushed task is never 'not mirrored'");
    assert_eq!(report["accounting"]["judged"], 4);
    let lost = &report["breakdown"]["shadow_lost"];
    assert_eq!(lost[0]["kind"], "broker_unreachable", "{lost:#}");
    assert_eq!(lost[0]["count"], 4);
    let max_lost = &report["readiness"]["checks"][3];
    assert_eq!((max_lost["name"].as_str(), max_lost["state"].as_str()), (Some("max_lost"), Some("fail")));
    assert_eq!(report["readiness"]["state"], "not_ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_deadline_passed_before_its_push_is_not_pushed_and_not_lost() {
    // The legacy answer takes longer than the whole shadow deadline: by the time the task
    // could be pushed there is no time left to wait for it, through no fault of Celery's.
    let legacy =
        evalapi::EvalApi::start(evalapi::Behaviour { submit_delay: Duration::from_millis(400), ..Default::default() })
            .await;
    let queue = queue("late");
    let sidecar = Sidecar::start(&celery_config(&legacy.url(), &queue, 200, "revoke_lost = false\n"));

    for i in 0..3 {
        let reply = sidecar.submit(&format!("late-{i}"), "print(1)").await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let report = sidecar.settled(3, None).await;

    assert_eq!(report["accounting"]["not_mirrored"], json!({"submit_late": 3}), "{report:#}");
    assert_eq!(report["accounting"]["judged"], 0);
    assert_eq!(report["totals"]["shadow_lost"], 0);
    assert_eq!(sidecar.metric("celery_tasks_submitted_total").await, 0.0);
    let mut redis = redis::Client::open(worker::redis_url(DB)).and_then(|c| c.get_connection()).expect("Redis");
    let depth: u64 = redis::cmd("LLEN").arg(&queue).query(&mut redis).expect("LLEN");
    assert_eq!(depth, 0, "nothing was pushed");
}
