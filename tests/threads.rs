//! `shadowdiff serve` on one proxy thread and on several, each with its own listener on the
//! shared address (`SO_REUSEPORT`) and its own one-thread runtime: concurrent clients,
//! every evaluation mirrored and judged once, exact legacy bytes to each client, and a
//! clean SIGTERM; and a port another `serve` holds is refused, not shared.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::sync::Arc;

use evalapi::{echo_outcome, Behaviour, EvalApi};
use futures_util::stream::{self, StreamExt};
use hyper::{Method, StatusCode};
use serde_json::json;
use sidecar::{http_config, send, Sidecar};

const SUBMISSIONS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proxy_thread_judges_every_concurrent_submission_and_stops_cleanly() {
    every_concurrent_submission_is_judged_once(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxy_threads_judge_every_concurrent_submission_once_and_stop_cleanly() {
    every_concurrent_submission_is_judged_once(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_another_serve_holds_is_refused_not_shared() {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let config = http_config(&legacy.url(), &shadow.url(), "").replace("[proxy]\n", "[proxy]\nworker_threads = 2\n");
    let mut first = Sidecar::start(&config);
    let taken = first.url("").trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("second.toml");
    std::fs::write(
        &path,
        config.replace("listen = \"127.0.0.1:0\"\nshutdown", &format!("listen = \"{taken}\"\nshutdown")),
    )
    .expect("write config");
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a second serve");
    // A second serve that joined the port would serve on: stop it, and fail below.
    let started = std::time::Instant::now();
    while second.try_wait().expect("wait").is_none() && started.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = second.kill();
    let second = second.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on proxy.listen {taken}")), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert_eq!(first.submit("p-1", "print(1)").await.status, StatusCode::ACCEPTED);
    assert_eq!(first.settled(1, None).await["totals"]["match"], 1);
    assert!(first.stop().success());
}

async fn every_concurrent_submission_is_judged_once(threads: usize) {
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour {
        outcome: Arc::new(|id: &str, code: &str| {
            let mut outcome = echo_outcome(id, code);
            if code.contains('7') {
                outcome["stdout"] = json!("diverged\n");
            }
            outcome
        }),
        ..Behaviour::default()
    })
    .await;
    let config = http_config(&legacy.url(), &shadow.url(), "")
        .replace("[proxy]\n", &format!("[proxy]\nworker_threads = {threads}\n"));
    let mut sidecar = Sidecar::start(&config);

    let client = sidecar::client();
    let url = sidecar.url("/evaluations");
    stream::iter(0..SUBMISSIONS)
        .for_each_concurrent(32, |i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({"eval_id": format!("t-{i}"), "code": format!("print({i})"), "language": "python"});
                let reply =
                    send(&client, Method::POST, &url, &[("content-type", "application/json")], body.to_string()).await;
                assert_eq!(reply.status, StatusCode::ACCEPTED);
                assert_eq!(reply.body, format!(r#"{{"eval_id":"t-{i}","status":"queued"}}"#));
            }
        })
        .await;

    let report = sidecar.settled(SUBMISSIONS as u64, None).await;
    let diverging = (0..SUBMISSIONS).filter(|i| i.to_string().contains('7')).count();
    assert_eq!(diverging, 76);
    assert_eq!(
        report["totals"],
        json!({"evaluations": SUBMISSIONS, "match": SUBMISSIONS - diverging, "equivalent": 0,
               "mismatch": diverging, "noise": 0, "shadow_error": 0, "shadow_lost": 0, "legacy_failed": 0, "malformed": 0})
    );
    assert_eq!(report["accounting"]["judged"], SUBMISSIONS);
    assert_eq!(report["accounting"]["submissions"], SUBMISSIONS);
    assert_eq!(report["accounting"]["not_mirrored"], json!({}));
    assert_eq!(legacy.submissions(), SUBMISSIONS);
    assert_eq!(shadow.submissions(), SUBMISSIONS);
    assert!(sidecar.stop().success(), "SIGTERM ends serve with status 0");
}
