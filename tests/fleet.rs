//! A fleet of sidecars, one verdict: three `serve` processes share one real Redis
//! (127.0.0.1:6379, database 12, a run name of their own), with traffic spread over them.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/sidecar.rs"]
mod sidecar;

use std::process::Command;
use std::time::{Duration, Instant};

use evalapi::{Behaviour, EvalApi};
use serde_json::Value;
use sidecar::{http_config, Sidecar};

const REDIS: &str = "redis://127.0.0.1:6379/12";
/// Snapshot interval of these sidecars, ms.
const SNAPSHOT_MS: u64 = 200;

const TOKEN: &str = "fleet-token";

fn config(legacy: &EvalApi, shadow: &EvalApi, run: &str, instance: &str) -> String {
    http_config(
        &legacy.url(),
        &shadow.url(),
        &format!("[fleet]\nredis_url = \"{REDIS}\"\nrun = \"{run}\"\ninstance = \"{instance}\"\nsnapshot_ms = {SNAPSHOT_MS}\n"),
    )
    .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"))
}

/// An admin call with the bearer token.
async fn admin(sidecar: &Sidecar, method: hyper::Method, path: &str, body: &str) -> sidecar::Reply {
    let auth = format!("Bearer {TOKEN}");
    sidecar::send(
        &sidecar::client(),
        method,
        &sidecar.admin_url(path),
        &[("authorization", auth.as_str())],
        body.to_owned(),
    )
    .await
}

/// `shadowdiff ARGS…`, which must succeed; its stdout.
fn shadowdiff(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_shadowdiff")).args(args).output().expect("run shadowdiff");
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The merged report of `run` (its current window, or `window`).
fn merged(run: &str, window: Option<u64>) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleet.json");
    let mut args = vec!["report", "--fleet", REDIS, "--run", run, "--json", path.to_str().expect("utf-8")];
    let window = window.map(|w| w.to_string());
    if let Some(window) = &window {
        args.extend(["--window", window]);
    }
    shadowdiff(&args);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("report written")).expect("JSON")
}

/// Waits until `check` holds on the merged report (states are written every 200 ms).
fn merged_until(run: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let report = merged(run, None);
        if check(&report) {
            return report;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: {report:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(report: &Value, instance: &str) -> String {
    let rows = report["instances"].as_array().expect("instances");
    let row = rows.iter().find(|r| r["instance"] == instance).unwrap_or_else(|| panic!("no {instance} in {rows:?}"));
    row["status"].as_str().expect("status").to_owned()
}

async fn submit(sidecar: &Sidecar, prefix: &str, count: usize) {
    for i in 0..count {
        sidecar.submit(&format!("{prefix}-{i}"), "print(1)").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_sidecars_one_verdict_restarts_lose_nothing_and_kills_are_said() {
    let run = format!("t-{}", uuid::Uuid::new_v4().simple());
    let legacy = EvalApi::start(Behaviour::default()).await;
    let shadow = EvalApi::start(Behaviour::default()).await;
    let a = Sidecar::start(&config(&legacy, &shadow, &run, "a"));
    let mut b = Sidecar::start(&config(&legacy, &shadow, &run, "b"));
    let c = Sidecar::start(&config(&legacy, &shadow, &run, "c"));
    submit(&a, "a", 10).await;
    submit(&b, "b", 20).await;
    submit(&c, "c", 30).await;
    for (sidecar, n) in [(&a, 10), (&b, 20), (&c, 30)] {
        sidecar.settled(n, Some(TOKEN)).await;
    }

    // The merged totals are the sum of what each saw.
    let report = merged_until(&run, "all 60 merged", |r| r["totals"]["evaluations"] == 60);
    assert_eq!(report["totals"]["match"], 60);
    assert_eq!(report["accounting"]["submissions"], 60);
    assert_eq!(report["accounting"]["judged"], 60);
    assert_eq!(report["instances"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["fleet"]["window"], 0);

    // SIGTERM and restart: the instance resumes its totals, nothing is lost.
    assert!(b.stop().success());
    let stopped = merged(&run, None);
    assert_eq!(status(&stopped, "b"), "stopped");
    assert_eq!(stopped["totals"]["evaluations"], 60, "a stopped instance still counts");
    let b = Sidecar::start(&config(&legacy, &shadow, &run, "b"));
    let resumed = b.report(Some(TOKEN)).await;
    assert_eq!(resumed["totals"]["evaluations"], 20, "restart keeps its totals: {:#}", resumed["totals"]);
    assert_eq!(resumed["accounting"]["submissions"], 20);
    submit(&b, "b2", 5).await;
    let own = b.settled(25, Some(TOKEN)).await;
    assert_eq!(own["totals"]["evaluations"], 25);
    assert_eq!(own["accounting"]["judged"], 25);
    merged_until(&run, "65 after the restart", |r| r["totals"]["evaluations"] == 65);

    // SIGKILL: at most one snapshot interval is lost, and the report says who and when.
    c.signal("-KILL");
    let killed = merged_until(&run, "c cut off", |r| status(r, "c") == "cut_off");
    assert_eq!(killed["totals"]["evaluations"], 65, "c's judgments up to its last state stay in");
    let row = killed["instances"].as_array().expect("rows").iter().find(|r| r["instance"] == "c").cloned().expect("c");
    assert!(row["last_seen"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(status(&killed, "a"), "running");

    // Fleet-wide sampling reaches every running sidecar within a snapshot interval or so.
    shadowdiff(&["sampling", "0", "--fleet", REDIS, "--run", &run]);
    for sidecar in [&a, &b] {
        let start = Instant::now();
        loop {
            let metrics = String::from_utf8_lossy(&sidecar.admin_get("/metrics", Some(TOKEN)).await.body).into_owned();
            if metrics.lines().any(|l| l == "shadowdiff_sampling_percent 0") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(2), "sampling 0 not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    shadowdiff(&["sampling", "100", "--fleet", REDIS, "--run", &run]);

    // A new window starts from zero; the old one stays readable.
    let started = shadowdiff(&["window", "--fleet", REDIS, "--run", &run]);
    assert_eq!(started.trim(), format!("run {run}: window 1 started"));
    merged_until(&run, "a and b in window 1", |r| r["instances"].as_array().is_some_and(|rows| rows.len() == 2));
    let start = Instant::now();
    while a.report(Some(TOKEN)).await["totals"]["evaluations"] != 0 {
        assert!(start.elapsed() < Duration::from_secs(3), "a did not start window 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while b.report(Some(TOKEN)).await["live"]["sampling_percent"] != 100.0 {
        assert!(start.elapsed() < Duration::from_secs(3), "b did not apply sampling 100");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    submit(&a, "w1", 3).await;
    a.settled(3, Some(TOKEN)).await;
    let window1 = merged_until(&run, "3 in window 1", |r| r["totals"]["evaluations"] == 3);
    assert_eq!(window1["fleet"]["window"], 1);
    assert_eq!(window1["accounting"]["submissions"], 3);
    let window0 = merged(&run, Some(0));
    assert_eq!(window0["totals"]["evaluations"], 65, "window 0 stays readable");

    // The live sidecar's own fleet view agrees with the command line's.
    let scoped = a.admin_get("/report.json?scope=fleet", Some(TOKEN)).await.json();
    assert_eq!(scoped["fleet"]["window"], 1);
    assert_eq!(scoped["totals"]["evaluations"], 3);

    // The admin API does what the commands do: fleet-wide sampling from one sidecar
    // reaches the other, and a new window from any sidecar starts it for all.
    let reply = admin(&a, hyper::Method::PUT, "/admin/sampling", r#"{"percent": 50, "scope": "fleet"}"#).await;
    assert_eq!(reply.status, hyper::StatusCode::OK, "{:?}", reply.body);
    let start = Instant::now();
    while b.report(Some(TOKEN)).await["live"]["sampling_percent"] != 50.0 {
        assert!(start.elapsed() < Duration::from_secs(3), "b did not apply the fleet-wide 50%");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = admin(&b, hyper::Method::POST, "/admin/window", "").await;
    assert_eq!(reply.json(), serde_json::json!({"window": 2}));
    merged_until(&run, "window 2 from zero", |r| r["fleet"]["window"] == 2 && r["totals"]["evaluations"] == 0);
}
