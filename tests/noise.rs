//! Learned noise end to end: the real binary runs a sample of evaluations twice on a real
//! Celery worker (or a second HTTP shadow), learns the places where the shadow differs
//! from itself, and counts mismatches made only of those places as `noise`.
//!
//! Evaluations are submitted one at a time and each is judged before the next, so the
//! order of learning, and with it every total, is exact.

#[path = "support/legacy_py.rs"]
mod legacy_py;
#[path = "support/sidecar.rs"]
mod sidecar;
#[path = "support/worker.rs"]
mod worker;

use hyper::StatusCode;
use serde_json::{json, Value};
use sidecar::Sidecar;

/// Redis database for these tests.
const DB: u32 = 13;

/// Every evaluation runs twice; a place is noise after 3 double runs flipping half the time.
const NOISE: &str = "[noise]\ndouble_run_percent = 100\nmin_observations = 3\nmin_flip_rate = 0.5\n";

fn queue(name: &str) -> String {
    format!("sd-noise-{name}-{}", uuid::Uuid::new_v4().simple())
}

fn celery_config(legacy: &str, queue: &str, record: &std::path::Path) -> String {
    let config = sidecar::celery_config(legacy, &worker::redis_url(DB), queue, 20_000, "");
    format!("{config}\n{NOISE}[record]\npath = \"{}\"\n", record.display())
}

/// Submits the evaluations one by one, each judged before the next; returns the report.
async fn one_by_one(sidecar: &Sidecar, cases: &[(String, String)], before: u64) -> Value {
    let mut report = Value::Null;
    for (i, (eval_id, code)) in cases.iter().enumerate() {
        let reply = sidecar.submit(eval_id, code).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.json(), json!({"eval_id": eval_id, "status": "queued"}), "the client gets the legacy answer");
        report = sidecar.settled(before + i as u64 + 1, None).await;
        assert_eq!(report["accounting"]["judged"], before + i as u64 + 1, "{:#}", report["accounting"]);
    }
    report
}

fn cases(prefix: &str, range: std::ops::Range<usize>, code: impl Fn(usize) -> String) -> Vec<(String, String)> {
    range.map(|i| (format!("{prefix}-{i}"), code(i))).collect()
}

fn metric_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_random_run_id_is_learned_as_noise_and_a_stdout_divergence_stays_a_mismatch() {
    let queue = queue("learn");
    let _worker = worker::Worker::start(
        &queue,
        DB,
        &[("EVALSTACK_NOISE_FIELD", "run_id"), ("EVALSTACK_STDOUT_SUFFIX_WHEN", "diverge")],
    );
    let legacy = legacy_py::LegacyService::start(5.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.jsonl");
    let mut sidecar = Sidecar::start(&celery_config(&legacy.url, &queue, &record));

    // The first two are judged before /run_id has 3 observations: mismatches, and final.
    // The third's own double run is the third observation: it is noise, like the next four.
    let report = one_by_one(&sidecar, &cases("ok", 0..7, |i| format!("print({i})")), 0).await;
    assert_eq!(
        report["totals"],
        json!({"evaluations": 7, "match": 0, "equivalent": 0, "mismatch": 2, "noise": 5, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    // A forced stdout divergence differs at /stdout too, which never flips between runs.
    let report = one_by_one(&sidecar, &cases("div", 0..2, |i| format!("print('diverge {i}')")), 7).await;
    assert_eq!(
        report["totals"],
        json!({"evaluations": 9, "match": 0, "equivalent": 0, "mismatch": 4, "noise": 5, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_eq!(report["by_language"]["python"]["totals"]["noise"], 5);
    let mut groups: Vec<(String, u64)> = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| (g["paths"].to_string(), g["count"].as_u64().expect("count")))
        .collect();
    groups.sort();
    assert_eq!(groups, vec![(r#"["/run_id","/stdout"]"#.into(), 2), (r#"["/run_id"]"#.into(), 2)]);

    let noise = &report["noise"];
    assert_eq!(noise["double_runs"], 9, "{noise:#}");
    assert_eq!(noise["incomplete_double_runs"], 0);
    assert_eq!(
        noise["learned"],
        json!([{"path": "/run_id", "runs": 9, "flips": 9, "flip_rate": 1.0, "examples": ["ok-0", "ok-1", "ok-2"]}])
    );
    assert_eq!(noise["candidates"], json!([]), "nothing else flips between two runs");
    assert_eq!(noise["mismatches_now_explained"], 2, "ok-0 and ok-1, judged before the learning");
    let suggested = noise["suggested_config"].as_str().expect("a config to paste");
    assert_eq!(
        suggested,
        "[compare]\nignore = [\"/duration_ms\", \"/started_at\", \"/finished_at\", \"/worker\", \"/tests/*/time_ms\", \"/run_id\"]\n"
    );
    assert!(shadowdiff::config::Config::parse(suggested).is_ok(), "the suggestion is valid config");
    let checks = report["readiness"]["checks"].as_array().expect("checks");
    let mismatch_rate = checks.iter().find(|c| c["name"] == "max_mismatch_rate").expect("the mismatch check");
    assert_eq!(mismatch_rate["observed"], json!(4.0 / 9.0), "only the 4 mismatches count against the gate");

    let html = String::from_utf8_lossy(&sidecar.admin_get("/report", None).await.body).into_owned();
    assert!(html.contains("<h2>Learned noise: 1 place</h2>"), "{html}");
    assert!(html.contains("<td class=\"text\"><code>/run_id</code></td><td>9</td><td>9</td>"), "{html}");
    assert!(html.contains("&quot;/run_id&quot;]"), "the TOML to paste: {html}");

    // The second runs are tasks of their own, pushed and cleaned up, and counted only as double runs.
    let metrics = String::from_utf8_lossy(&sidecar.admin_get("/metrics", None).await.body).into_owned();
    for line in [
        "celery_tasks_submitted_total 18",
        "tasks_submitted_total{queue_system=\"celery\"} 9",
        "tasks_completed_total{queue_system=\"celery\"} 9",
        "shadowdiff_double_runs_total{result=\"compared\"} 9",
        "shadowdiff_double_runs_total{result=\"incomplete\"} 0",
        "shadowdiff_noise_places 1",
        "shadowdiff_comparisons_total{verdict=\"noise\",language=\"python\"} 5",
        "shadowdiff_comparisons_total{verdict=\"mismatch\",language=\"python\"} 4",
    ] {
        assert!(metric_line(&metrics, line), "{line} in\n{metrics}");
    }
    // The queue's depth is sampled every second: the sample after the last task was taken.
    let mut metrics = metrics;
    for _ in 0..30 {
        if metric_line(&metrics, "celery_queue_length 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        metrics = String::from_utf8_lossy(&sidecar.admin_get("/metrics", None).await.body).into_owned();
    }
    assert!(metric_line(&metrics, "celery_queue_length 0"), "both runs' tasks were taken:\n{metrics}");
    let mut redis = redis::Client::open(worker::redis_url(DB)).expect("url").get_connection().expect("redis");
    let mut left: Vec<String> = Vec::new();
    for i in 0..50 {
        left = redis::cmd("KEYS").arg("celery-task-meta-*").query(&mut redis).expect("KEYS");
        if left.is_empty() || i == 49 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(left, Vec::<String>::new(), "both runs' result keys are deleted");

    assert!(sidecar.stop().success());
    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .expect("recording")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect();
    assert_eq!(lines.len(), 9, "one line per evaluation, whether it ran once or twice");
    for line in &lines {
        assert_eq!(line["double_run"], "compared", "every evaluation ran twice and is labelled so: {line}");
    }
    // The label reads back through the fixture reader.
    let text = std::fs::read_to_string(&record).expect("recording");
    for line in text.lines() {
        let read = shadowdiff::fixture::read::parse_line(line.as_bytes()).expect("a fixture line");
        assert_eq!(read.double_run.as_deref(), Some("compared"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_random_field_nothing_is_learned() {
    let queue = queue("quiet");
    let _worker = worker::Worker::start(&queue, DB, &[("EVALSTACK_STDOUT_SUFFIX_WHEN", "diverge")]);
    let legacy = legacy_py::LegacyService::start(5.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sidecar = Sidecar::start(&celery_config(&legacy.url, &queue, &dir.path().join("record.jsonl")));

    let mut cases = cases("q", 0..4, |i| format!("print({i})"));
    cases.push(("q-div".into(), "print('diverge')".into()));
    let report = one_by_one(&sidecar, &cases, 0).await;
    assert_eq!(
        report["totals"],
        json!({"evaluations": 5, "match": 4, "equivalent": 0, "mismatch": 1, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    let noise = &report["noise"];
    assert_eq!(noise["double_runs"], 5, "{noise:#}");
    assert_eq!(noise["learned"], json!([]));
    assert_eq!(noise["candidates"], json!([]));
    assert_eq!(noise["suggested_config"], Value::Null);
    let metrics = String::from_utf8_lossy(&sidecar.admin_get("/metrics", None).await.body).into_owned();
    assert!(metric_line(&metrics, "shadowdiff_noise_places 0"), "{metrics}");
    assert!(metric_line(&metrics, "celery_tasks_submitted_total 10"), "{metrics}");
    assert!(sidecar.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_shadow_gets_its_second_submission_under_a_derived_id() {
    // The shadow is a second legacy service: it runs the same code, so nothing differs,
    // and an outcome that echoes its (derived) eval_id is not mistaken for noise.
    let legacy = legacy_py::LegacyService::start(5.0);
    let shadow = legacy_py::LegacyService::start(5.0);
    let config = sidecar::http_config(&legacy.url, &shadow.url, NOISE);
    let mut sidecar = Sidecar::start(&config);

    let report = one_by_one(&sidecar, &cases("h", 0..4, |i| format!("print({i})")), 0).await;
    assert_eq!(
        report["totals"],
        json!({"evaluations": 4, "match": 4, "equivalent": 0, "mismatch": 0, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_eq!(report["noise"]["double_runs"], 4, "{:#}", report["noise"]);
    assert_eq!(report["noise"]["incomplete_double_runs"], 0);
    assert_eq!(report["noise"]["candidates"], json!([]), "the echoed id is restored before comparing");
    // Both submissions reached the shadow: the second under its derived id.
    let client = sidecar::client();
    let reply = sidecar::send(
        &client,
        hyper::Method::GET,
        &format!("{}/evaluations/h-0.rerun", shadow.url),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["eval_id"], "h-0.rerun");
    assert_eq!(reply.json()["stdout"], "0\n");
    assert!(sidecar.stop().success());
}
