//! The sidecar under faults, end to end with the real binary: a stalled shadow, a small
//! descriptor table, a memory budget, and (below) Celery workers killed, stopped and
//! resumed, and Redis stopped with a backlog. Each test states the exact counts.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/sidecar.rs"]
mod sidecar;
#[path = "support/worker.rs"]
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use evalapi::{Behaviour, EvalApi, Stalled};
use futures_util::stream::{self, StreamExt};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::{http_config, send, Sidecar};

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
    let capped = a["not_mirrored"]["in_flight_cap"].as_u64().unwrap_or(0);
    assert_eq!(judged + capped, 2000, "judged or over the in-flight cap, nothing else: {a}");
    assert_eq!(a["not_mirrored"].as_object().map(|m| m.len()), Some(usize::from(capped > 0)), "{a}");
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
