//! `shadowdiff serve` with `worker_threads = 1`, which runs on a `current_thread` runtime
//! (the cheapest per request, and what the speed figures use): concurrent clients, every
//! evaluation mirrored and judged, exact legacy bytes to each client, and a clean SIGTERM.

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
async fn one_runtime_thread_judges_every_concurrent_submission_and_stops_cleanly() {
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
    let config = http_config(&legacy.url(), &shadow.url(), "").replace("[proxy]\n", "[proxy]\nworker_threads = 1\n");
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
