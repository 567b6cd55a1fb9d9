//! `shadowdiff serve` with an HTTP shadow, end to end: stand-in upstreams on 127.0.0.1:0,
//! the real binary in between, and the report, metrics and recording read back.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::sync::Arc;
use std::time::Duration;

use evalapi::{echo_outcome, Behaviour, EvalApi};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sidecar::{http_config, send, Sidecar};

const TOKEN: &str = "s3cret";

fn diverging(needle: &'static str) -> Behaviour {
    Behaviour {
        outcome: Arc::new(move |id: &str, code: &str| {
            let mut outcome = echo_outcome(id, code);
            if code.contains(needle) {
                outcome["stdout"] = json!("diverged\n");
            }
            outcome
        }),
        ..Behaviour::default()
    }
}

fn totals(report: &Value) -> Value {
    report["totals"].clone()
}

fn not_mirrored(report: &Value) -> Value {
    report["accounting"]["not_mirrored"].clone()
}

#[tokio::test]
async fn every_submission_is_judged_and_clients_get_the_legacy_answer() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(diverging("7")).await;
    let sidecar = Sidecar::start(&http_config(&legacy.url(), &shadow.url(), ""));
    for i in 0..20 {
        let reply = sidecar.submit(&format!("e-{i}"), &format!("print({i})")).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.body, format!(r#"{{"eval_id":"e-{i}","status":"queued"}}"#));
    }
    let report = sidecar.settled(20, None).await;
    assert_eq!(
        totals(&report),
        json!({"evaluations": 20, "match": 18, "equivalent": 0, "mismatch": 2, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0})
    );
    assert_eq!(report["accounting"]["judged"], 20);
    assert_eq!(report["accounting"]["submissions"], 20);
    let group = &report["groups"][0];
    assert_eq!((group["paths"].clone(), group["count"].clone()), (json!(["/stdout"]), json!(2)));
    assert_eq!(legacy.submissions(), 20);
    assert_eq!(shadow.submissions(), 20);
    assert_eq!(report["latency"]["legacy"]["outcome_ms"]["count"], 20);
}

#[tokio::test]
async fn a_down_shadow_never_touches_the_client_and_opens_the_breaker() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let extra = "[shadow]\nbreaker_failures = 3\nbreaker_cooldown_ms = 60000\n";
    let sidecar = Sidecar::start(&http_config(&legacy.url(), &format!("http://{closed}"), extra));
    for i in 0..10 {
        let reply = sidecar.submit(&format!("d-{i}"), "print(1)").await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.body, format!(r#"{{"eval_id":"d-{i}","status":"queued"}}"#));
        // Let each evaluation finish so the breaker sees the failures in order.
        sidecar.settled(i + 1, None).await;
    }
    let report = sidecar.settled(10, None).await;
    assert_eq!(report["totals"]["shadow_error"], 3);
    assert_eq!(not_mirrored(&report), json!({"breaker_open": 7}));
    let metrics = sidecar.admin_get("/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("shadowdiff_breaker_state 1"), "{text}");
    // Only the three that failed reached the mirror's decision: with the breaker open the
    // proxy refuses a submission before copying it.
    assert!(text.contains("queue_selection_duration_seconds_count 3\n"), "{text}");
}

#[tokio::test]
async fn a_shadow_that_never_finishes_is_lost_at_its_deadline() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour { never_done: true, ..Behaviour::default() }).await;
    let config = http_config(&legacy.url(), &shadow.url(), "")
        .replace("deadline_ms = 5000\n[admin]", "deadline_ms = 300\n[admin]");
    let sidecar = Sidecar::start(&config);
    for i in 0..3 {
        assert_eq!(sidecar.submit(&format!("l-{i}"), "print(2)").await.status, StatusCode::ACCEPTED);
    }
    let report = sidecar.settled(3, None).await;
    assert_eq!(report["totals"]["shadow_lost"], 3);
    assert_eq!(report["readiness"]["checks"][3]["name"], "max_lost");
    assert_eq!(report["readiness"]["checks"][3]["pass"], false);
}

#[tokio::test]
async fn a_slow_shadow_does_not_slow_the_client() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour { submit_delay: Duration::from_millis(800), ..Behaviour::default() }).await;
    let sidecar = Sidecar::start(&http_config(&legacy.url(), &shadow.url(), ""));
    let started = std::time::Instant::now();
    for i in 0..5 {
        assert_eq!(sidecar.submit(&format!("s-{i}"), "print(3)").await.status, StatusCode::ACCEPTED);
    }
    assert!(started.elapsed() < Duration::from_millis(800), "clients waited for the shadow: {:?}", started.elapsed());
    let report = sidecar.settled(5, None).await;
    assert_eq!(report["totals"]["match"], 5);
}

#[tokio::test]
async fn observe_mode_takes_the_outcome_from_the_clients_own_polls() {
    let legacy = EvalApi::start(Behaviour { polls_before_done: 2, ..Behaviour::default() }).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config = http_config(&legacy.url(), &shadow.url(), "")
        .replace("[legacy.outcome]\n", "[legacy.outcome]\nmode = \"observe\"\n");
    let sidecar = Sidecar::start(&config);
    sidecar.submit("o-1", "print(5)").await;
    let client = sidecar::client();
    let mut polls = 0;
    loop {
        polls += 1;
        let reply = send(&client, Method::GET, &sidecar.url("/evaluations/o-1"), &[], "").await;
        if reply.json()["status"] == "completed" {
            break;
        }
    }
    let report = sidecar.settled(1, None).await;
    assert_eq!(report["totals"]["match"], 1);
    assert_eq!(polls, 3);
    assert_eq!(legacy.polls(), 3, "shadowdiff added no polls of its own to the legacy system");
}

#[tokio::test]
async fn response_mode_and_ids_assigned_by_the_api() {
    let sync = Behaviour { synchronous: true, assign_ids: true, ..Behaviour::default() };
    let legacy = EvalApi::start(sync.clone()).await;
    let shadow = EvalApi::start(sync).await;
    let config = http_config(&legacy.url(), &shadow.url(), "")
        .replace("[legacy.outcome]\n", "[legacy.outcome]\nmode = \"response\"\n")
        .replace("[shadow.outcome]\n", "[shadow.outcome]\nmode = \"response\"\n")
        .replace("path = \"/evaluations\"\n", "path = \"/evaluations\"\neval_id_from = \"response\"\n");
    let sidecar = Sidecar::start(&config);
    let reply = sidecar.submit("ignored", "print(8)").await;
    assert_eq!(reply.json()["eval_id"], "ev-1");
    let report = sidecar.settled(1, None).await;
    assert_eq!(report["totals"]["match"], 1);
    assert_eq!(report["live"]["shadow_outcome_mode"], "response");
    // Submit time and time to outcome are one measurement here: the page says so and
    // shows it once.
    let page = String::from_utf8_lossy(&sidecar.admin_get("/report", None).await.body).into_owned();
    assert!(page.contains("The HTTP shadow outcome is the answer to its submission (response mode)"), "{page}");
    assert!(page.contains("The legacy outcome is the answer to its submission (response mode)"));
    assert!(!page.contains("<td>HTTP shadow submit</td>"), "one row, not two identical ones");
    assert!(page.contains("(in response mode the submission is the whole evaluation)"));
}

#[tokio::test]
async fn route_extraction_failures_are_counted_by_reason() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config =
        http_config(&legacy.url(), &shadow.url(), "").replace("[proxy]\n", "[proxy]\nmax_mirror_body_bytes = 200\n");
    let sidecar = Sidecar::start(&config);
    let client = sidecar::client();
    let url = sidecar.url("/evaluations");
    let post = |body: String| send(&client, Method::POST, &url, &[], body);
    assert_eq!(post("not json".into()).await.status, StatusCode::ACCEPTED);
    post(json!({"eval_id": "m-1", "language": "python"}).to_string()).await;
    post(json!({"eval_id": "m-2", "code": "print(1)"}).to_string()).await;
    post(json!({"code": "print(1)", "language": "python"}).to_string()).await;
    let big = post(json!({"eval_id": "m-3", "code": "x".repeat(500), "language": "python"}).to_string()).await;
    assert_eq!(big.status, StatusCode::ACCEPTED, "a large body is still forwarded");
    let report = sidecar.settled(5, None).await;
    assert_eq!(
        not_mirrored(&report),
        json!({"body_not_json": 1, "missing_code": 1, "missing_language": 1, "missing_eval_id": 1, "body_too_large": 1})
    );
    assert_eq!(legacy.submissions(), 5);
    assert_eq!(shadow.submissions(), 0);
}

#[tokio::test]
async fn sampling_is_decided_by_eval_id_and_changes_at_run_time() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config = http_config(&legacy.url(), &shadow.url(), "[shadow]\npercent = 0\n")
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let sidecar = Sidecar::start(&config);
    for i in 0..4 {
        sidecar.submit(&format!("p-{i}"), "print(1)").await;
    }
    let report = sidecar.settled(4, Some(TOKEN)).await;
    assert_eq!(not_mirrored(&report), json!({"sampled_out": 4}));

    let client = sidecar::client();
    let url = sidecar.admin_url("/admin/sampling");
    let unauthorized = send(&client, Method::PUT, &url, &[], r#"{"percent": 100}"#).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {TOKEN}");
    let changed = send(&client, Method::PUT, &url, &[("authorization", &auth)], r#"{"percent": 100}"#).await;
    assert_eq!(changed.json(), json!({"percent": 100.0}));
    let bad = send(&client, Method::PUT, &url, &[("authorization", &auth)], r#"{"percent": 101}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    for i in 4..8 {
        sidecar.submit(&format!("p-{i}"), "print(1)").await;
    }
    let report = sidecar.settled(8, Some(TOKEN)).await;
    assert_eq!(report["totals"]["match"], 4);
    assert_eq!(shadow.submissions(), 4);
}

#[tokio::test]
async fn sighup_rereads_the_sampling_fraction() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config = http_config(&legacy.url(), &shadow.url(), "[shadow]\npercent = 0\n");
    let sidecar = Sidecar::start(&config);
    sidecar.submit("h-1", "print(1)").await;
    let first = sidecar.settled(1, None).await;
    assert_eq!(not_mirrored(&first), json!({"sampled_out": 1}), "{first:#}");
    std::fs::write(sidecar.config_path(), config.replace("percent = 0", "percent = 100")).expect("rewrite");
    sidecar.signal("-HUP");
    let start = std::time::Instant::now();
    let sampling = || async { String::from_utf8_lossy(&sidecar.admin_get("/metrics", None).await.body).into_owned() };
    while !sampling().await.lines().any(|l| l == "shadowdiff_sampling_percent 100") {
        assert!(start.elapsed() < Duration::from_secs(5), "SIGHUP not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sidecar.submit("h-2", "print(1)").await;
    let report = sidecar.settled(2, None).await;
    assert_eq!(report["totals"]["match"], 1);
    assert_eq!(not_mirrored(&report), json!({"sampled_out": 1}));
}

#[tokio::test]
async fn admin_token_protects_all_but_healthz_and_metrics_have_the_dashboard_names() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config =
        http_config(&legacy.url(), &shadow.url(), "").replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let sidecar = Sidecar::start(&config);
    sidecar.submit("t-1", "print(1)").await;
    sidecar.settled(1, Some(TOKEN)).await;
    assert_eq!(sidecar.admin_get("/healthz", None).await.status, StatusCode::OK);
    for path in ["/report", "/report.json", "/metrics"] {
        assert_eq!(sidecar.admin_get(path, None).await.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(sidecar.admin_get(path, Some("wrong")).await.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(sidecar.admin_get(path, Some(TOKEN)).await.status, StatusCode::OK, "{path}");
    }
    let metrics = sidecar.admin_get("/metrics", Some(TOKEN)).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for line in [
        "tasks_submitted_total{queue_system=\"legacy\"} 1",
        "tasks_submitted_total{queue_system=\"celery\"} 1",
        "tasks_completed_total{queue_system=\"legacy\"} 1",
        "task_duration_seconds_count{queue_system=\"celery\"} 1",
        "legacy_tasks_submitted_total 1",
        "shadowdiff_shadow_submitted_total 1",
        "shadowdiff_readiness{state=\"ready\"} 0",
        "shadowdiff_check_pass{check=\"min_samples\"} 0",
        "shadowdiff_check_pass{check=\"max_lost\"} 1",
        "queue_selection_duration_seconds_count 1",
        "shadowdiff_comparisons_total{verdict=\"match\",language=\"python\"} 1",
        "shadowdiff_pending 0",
        "shadowdiff_in_flight 0",
        "shadowdiff_breaker_state 0",
        "shadowdiff_sampling_percent 100",
        "shadowdiff_proxy_requests_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("celery_"), "celery_* series only with a Celery shadow:\n{text}");
    // One sample judged: too few to be ready; inconclusive unless a latency check failed.
    let state = sidecar.report(Some(TOKEN)).await["readiness"]["state"].as_str().expect("state").to_string();
    assert!(state == "inconclusive" || state == "not_ready", "{state}");
    for other in ["ready", "not_ready", "inconclusive"] {
        let line = format!("shadowdiff_readiness{{state=\"{other}\"}} {}", u8::from(other == state));
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("-0\n") && !text.contains("-0 "), "no negative zero:\n{text}");
    let html = sidecar.admin_get("/report", Some(TOKEN)).await;
    let page = String::from_utf8_lossy(&html.body);
    assert!(page.contains("Every submission accounted for") && page.contains("holds"), "{page}");
    // The live page names the real shadow, says when and how it was made, and refreshes.
    assert!(page.contains("HTTP shadow is NOT READY to take traffic") || page.contains("INCONCLUSIVE"), "{page}");
    assert!(
        page.contains(" UTC · since ") && page.contains("shadow: HTTP shadow · sampling 100% · breaker closed"),
        "{page}"
    );
    assert!(page.contains("<meta name=\"viewport\"") && page.contains("setInterval("), "{page}");
    let report = sidecar.report(Some(TOKEN)).await;
    assert_eq!(report["live"]["shadow_kind"], "http");
    assert_eq!(report["live"]["breaker"], "closed");
    assert!(report["live"]["as_of"].as_u64() >= report["live"]["since"].as_u64());
}

/// A counter's value in Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
    line.and_then(|l| l[series.len() + 1..].parse().ok()).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn dashboard_queries_read_true_at_half_sampling() {
    let legacy = EvalApi::start(Behaviour { polls_before_done: 1, ..Behaviour::default() }).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config = http_config(&legacy.url(), &shadow.url(), "[shadow]\npercent = 50\n")
        .replace("[legacy]\n", "[legacy]\nqueue_length_url = \"/queue\"\n");
    let sidecar = Sidecar::start(&config);
    for i in 0..60 {
        sidecar.submit(&format!("half-{i}"), "print(1)").await;
    }
    let report = sidecar.settled(60, None).await;
    let judged = report["accounting"]["judged"].as_u64().expect("judged");
    let sampled_out = report["accounting"]["not_mirrored"]["sampled_out"].as_u64().expect("sampled out");
    assert_eq!(judged + sampled_out, 60, "{:#}", report["accounting"]);
    assert!((15..=45).contains(&judged), "about half mirrored: {judged}");
    let text = String::from_utf8_lossy(&sidecar.admin_get("/metrics", None).await.body).into_owned();
    // Success ratio, sum(rate(tasks_completed_total)) by (queue_system) /
    // sum(rate(tasks_submitted_total)) by (queue_system): 1 for healthy systems.
    for system in ["legacy", "celery"] {
        let submitted = sample(&text, &format!("tasks_submitted_total{{queue_system=\"{system}\"}}"));
        let completed = sample(&text, &format!("tasks_completed_total{{queue_system=\"{system}\"}}"));
        assert_eq!(submitted, judged as f64, "{system}");
        assert_eq!(completed / submitted, 1.0, "{system} success ratio");
    }
    // Distribution: every submission reached legacy; the mirrored ones reached the shadow.
    assert_eq!(sample(&text, "legacy_tasks_submitted_total"), 60.0);
    assert_eq!(sample(&text, "shadowdiff_shadow_submitted_total"), judged as f64);
    // The legacy queue length is read from the legacy system. The stand-in counts an
    // evaluation as queued until its result is first polled: the sampled-out ones, which
    // nobody polls here, stay there.
    let start = std::time::Instant::now();
    let expected = format!("legacy_queue_length {sampled_out}");
    loop {
        let text = String::from_utf8_lossy(&sidecar.admin_get("/metrics", None).await.body).into_owned();
        if text.lines().any(|l| l == expected) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no legacy_queue_length in\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_in_flight_cap_bounds_mirrored_work() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour { submit_delay: Duration::from_millis(500), ..Behaviour::default() }).await;
    let config = http_config(&legacy.url(), &shadow.url(), "[shadow]\nmax_in_flight = 2\n");
    let sidecar = Sidecar::start(&config);
    for i in 0..6 {
        sidecar.submit(&format!("c-{i}"), "print(1)").await;
    }
    let report = sidecar.settled(6, None).await;
    assert_eq!(report["accounting"]["judged"], 2);
    assert_eq!(not_mirrored(&report), json!({"in_flight_cap": 4}));
}

#[tokio::test]
async fn a_silent_shadow_holds_two_submissions_per_connection_and_no_more() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour { submit_delay: Duration::from_millis(600), ..Behaviour::default() }).await;
    // Two connections: two submissions in flight, two waiting for a connection; once the
    // shadow has answered nothing for 100 ms, the rest are refused at once instead of
    // queueing until they time out.
    let config = http_config(&legacy.url(), &shadow.url(), "")
        .replace("timeout_ms = 2000\n", "timeout_ms = 2000\nmax_connections = 2\n");
    let sidecar = Sidecar::start(&config);
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..7 {
        assert_eq!(sidecar.submit(&format!("b-{i}"), "print(1)").await.status, StatusCode::ACCEPTED);
    }
    let report = sidecar.settled(7, None).await;
    assert_eq!(report["totals"]["match"], 4, "{report:#}");
    assert_eq!(report["accounting"]["judged"], 4);
    assert_eq!(not_mirrored(&report), json!({"shadow_busy": 3}));
    assert_eq!(shadow.submissions(), 4);
}

#[tokio::test]
async fn shutdown_finishes_pending_work_and_flushes_the_recording() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour { polls_before_done: 10, ..Behaviour::default() }).await;
    let record_dir = tempfile::tempdir().expect("tempdir");
    let record = record_dir.path().join("live.jsonl");
    // Recordings keep requests whole unless `[record] redact` asks (tests/drive.rs checks the default).
    let extra = format!("[record]\npath = \"{}\"\nredact = [\"/code\"]\n", record.display());
    let mut sidecar = Sidecar::start(&http_config(&legacy.url(), &shadow.url(), &extra));
    for i in 0..5 {
        sidecar.submit(&format!("r-{i}"), &format!("print({i})")).await;
    }
    let status = sidecar.stop();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&record).expect("recording");
    assert_eq!(text.lines().count(), 5, "pending comparisons finished within the grace period");
    let first: Value = serde_json::from_str(text.lines().next().expect("line")).expect("fixture line");
    assert_eq!(first["v"], 1);
    assert_eq!(first["request"]["code"]["redacted"], true, "recording applies [record] redact");
    assert_eq!(first["request"]["language"], "python", "only what [record] redact names is redacted");
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["replay", "--strict"])
        .arg(&record)
        .output()
        .expect("replay");
    assert!(String::from_utf8_lossy(&replay.stdout).contains("shadowdiff: 5 evaluations, 0 malformed lines"));
}

#[tokio::test]
async fn the_http_shadow_gets_the_clients_own_request_with_its_headers_and_a_marker() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config = http_config(&legacy.url(), &shadow.url(), "").replace(
        "timeout_ms = 2000\n",
        "timeout_ms = 2000\ndrop_headers = [\"cookie\"]\nset_headers = { authorization = \"Bearer shadow\" }\n",
    );
    let sidecar = Sidecar::start(&config);
    // Spacing and key order a re-serialiser would change: the shadow must get these bytes.
    let body = r#"{ "language":"python", "code":"print(5)",  "eval_id":"h-1" }"#;
    let headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("authorization", "Bearer client"),
        ("cookie", "session=1"),
        ("x-tenant", "t-7"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ];
    let reply = send(&sidecar::client(), Method::POST, &sidecar.url("/evaluations?tenant=t-7"), &headers, body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let report = sidecar.settled(1, None).await;
    assert_eq!(report["totals"]["match"], 1, "{report:#}");

    let seen = shadow.received();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/evaluations?tenant=t-7"));
    assert_eq!(request.body, body.as_bytes());
    let header = |name: &str| request.headers.get(name).map(|v| v.to_str().expect("ascii").to_owned());
    assert_eq!(header("content-type").as_deref(), Some("application/json; charset=utf-8"));
    assert_eq!(header("authorization").as_deref(), Some("Bearer shadow"));
    assert_eq!(header("x-tenant").as_deref(), Some("t-7"));
    assert_eq!(header("traceparent").as_deref(), Some(headers[4].1));
    assert_eq!(header("x-shadowdiff").as_deref(), Some("shadow"));
    assert_eq!(header("cookie"), None);
    assert_eq!(header("host"), Some(shadow.addr.to_string()), "the shadow's own address");
    // Legacy got the client's request untouched.
    let legacy_seen = &legacy.received()[0];
    assert_eq!(legacy_seen.headers["authorization"], "Bearer client");
    assert_eq!(legacy_seen.headers["cookie"], "session=1");
    assert!(!legacy_seen.headers.contains_key("x-shadowdiff"));
}

#[tokio::test]
async fn a_malformed_client_body_is_a_client_error_not_a_legacy_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let sidecar = Sidecar::start(&http_config(&legacy.url(), &shadow.url(), ""));
    let mut stream = tokio::net::TcpStream::connect(sidecar.proxy).await.expect("connect");
    stream
        .write_all(b"POST /evaluations HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n4\r\n{\"a\"\r\nxyz\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"), "{}", String::from_utf8_lossy(&answer));

    let report = sidecar.settled(1, None).await;
    assert_eq!(not_mirrored(&report), json!({"client_error": 1}));
    assert_eq!(sidecar.metric("shadowdiff_client_errors_total").await, 1.0);
    assert_eq!(sidecar.metric("shadowdiff_legacy_unreachable_total").await, 0.0);
    assert_eq!(sidecar.metric("shadowdiff_legacy_timeout_total").await, 0.0);
    assert_eq!(shadow.submissions(), 0);
}

#[tokio::test]
async fn a_client_that_leaves_after_its_whole_submission_still_gets_it_judged() {
    let legacy = EvalApi::start(Behaviour { submit_delay: Duration::from_millis(300), ..Behaviour::default() }).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let sidecar = Sidecar::start(&http_config(&legacy.url(), &shadow.url(), ""));

    let url = sidecar.url("/evaluations");
    let body = r#"{"eval_id":"gone-1","code":"print(1)","language":"python"}"#;
    let client = tokio::spawn(async move {
        send(&sidecar::client(), Method::POST, &url, &[("content-type", "application/json")], body).await
    });
    // The submission is with legacy: the client gives up before the answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.abort();

    let report = sidecar.settled(1, None).await;
    assert_eq!(report["totals"]["match"], 1, "{report:#}");
    assert_eq!(report["accounting"]["judged"], 1);
    assert_eq!((legacy.submissions(), shadow.submissions()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_response_leaves_nothing_to_judge_and_no_blame_on_legacy() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A legacy service that answers with a head announcing 100 bytes, sends 12, and waits.
    let legacy = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let legacy_url = format!("http://{}", legacy.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = legacy.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{\"eval_id\": ").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let shadow = EvalApi::start(Behaviour { synchronous: true, ..Behaviour::default() }).await;
    let config = http_config(&legacy_url, &shadow.url(), "")
        .replace("[legacy.outcome]\n", "[legacy.outcome]\nmode = \"response\"\n")
        .replace("[shadow.outcome]\n", "[shadow.outcome]\nmode = \"response\"\n");
    let sidecar = Sidecar::start(&config);

    // The client reads the response head and part of its body, then leaves.
    let address = sidecar.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let body = r#"{"eval_id": "cut-1", "code": "print(1)", "language": "python"}"#;
    let request = format!(
        "POST /evaluations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !String::from_utf8_lossy(&head).contains("eval_id") {
        let mut chunk = [0u8; 256];
        let read = client.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the proxy closed before relaying the head: {:?}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&chunk[..read]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 202"), "{:?}", String::from_utf8_lossy(&head));
    drop(client);

    let report = sidecar.settled(1, None).await;
    assert_eq!(not_mirrored(&report), json!({"body_incomplete": 1}), "{report:#}");
    assert_eq!(totals(&report)["evaluations"], 0);
    assert_eq!(totals(&report)["legacy_failed"], 0);
    assert_eq!(shadow.submissions(), 0, "nothing to compare, so nothing mirrored");
}
