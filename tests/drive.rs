//! `shadowdiff drive` end to end: recordings made by `serve` in front of the stand-in
//! legacy service, driven by the real binary into a real Celery worker (Redis database
//! [`DB`], queues of their own), into the in-process legacy stand-in (`--to legacy`), and
//! stopped half way by SIGINT.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/legacy_py.rs"]
mod legacy_py;
#[path = "support/sidecar.rs"]
mod sidecar;
#[path = "support/worker.rs"]
mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{json, Value};
use sidecar::Sidecar;

/// Redis database for these tests.
const DB: u32 = 11;

fn queue(name: &str) -> String {
    format!("sd-drive-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// A Celery shadow on `queue` in database [`DB`]; `extra` goes into `[shadow.celery]`.
fn celery_config(legacy: &str, queue: &str, extra: &str) -> String {
    sidecar::celery_config(legacy, &worker::redis_url(DB), queue, 20_000, extra)
}

/// Runs `shadowdiff drive` with these arguments to its end.
fn run_drive(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .arg("drive")
        .args(args)
        .env("SHADOWDIFF_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run shadowdiff drive")
}

/// Drives `recording` with `config` and `extra` arguments to a successful end, and returns
/// its printed summary and its JSON report.
fn drive_ok(recording: &Path, config: &Path, extra: &[&str]) -> (Output, Value) {
    let report_path = config.with_extension("report.json");
    let mut args = vec![
        recording.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--json",
        report_path.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let out = run_drive(&args);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report = read_json(&report_path);
    (out, report)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path
}

/// A recorded line whose request drives: `print(<n>)` in Python, with the legacy and
/// shadow sides given.
fn line(eval_id: &str, code: &str, legacy: Value, shadow: Value) -> String {
    json!({"v": 1, "eval_id": eval_id, "language": "python",
           "request": {"eval_id": eval_id, "code": code, "language": "python"},
           "legacy": legacy, "shadow": shadow})
    .to_string()
}

fn ok(outcome: Value) -> Value {
    json!({"state": "ok", "submit_ms": 1.0, "outcome_ms": 20.0, "outcome": outcome})
}

/// `submissions == judged + pending + abandoned + Σ not_mirrored`.
fn assert_balanced(report: &Value) {
    let a = &report["accounting"];
    let not_mirrored: u64 =
        a["not_mirrored"].as_object().expect("not_mirrored").values().filter_map(Value::as_u64).sum();
    let sum = a["judged"].as_u64().expect("judged")
        + a["pending"].as_u64().expect("pending")
        + a["abandoned"].as_u64().expect("abandoned")
        + not_mirrored;
    assert_eq!(a["submissions"].as_u64(), Some(sum), "accounting does not add up: {a}");
    assert_eq!(report["totals"]["evaluations"], a["judged"], "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recording_made_by_serve_drives_into_celery_and_a_diverging_worker_shows_at_stdout() {
    let (plain, diverging, noisy) = (queue("plain"), queue("diverging"), queue("noisy"));
    let _plain = worker::Worker::start(&plain, DB, &[]);
    let _diverging = worker::Worker::start(&diverging, DB, &[("EVALSTACK_STDOUT_SUFFIX_WHEN", "diverge")]);
    let _noisy = worker::Worker::start(&noisy, DB, &[("EVALSTACK_NOISE_FIELD", "run_id")]);
    let legacy = legacy_py::LegacyService::start(5.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("recording.jsonl");
    let config = celery_config(&legacy.url, &plain, "")
        .replace("[admin]", &format!("[record]\npath = \"{}\"\n[admin]", recording.display()));

    // Record in "production": serve in front of the legacy service.
    let mut sidecar = Sidecar::start(&config);
    let cases: Vec<(String, String)> = (0..6)
        .map(|i| (format!("ok-{i}"), format!("print({i})")))
        .chain((1..=2).map(|i| (format!("div-{i}"), format!("print('diverge {i}')"))))
        .collect();
    for (eval_id, code) in &cases {
        assert_eq!(sidecar.submit(eval_id, code).await.status, StatusCode::ACCEPTED);
    }
    let served = sidecar.settled(8, None).await;
    assert_eq!(served["totals"]["match"], 8, "{:#}", served["totals"]);
    assert!(sidecar.stop().success());
    let lines: Vec<Value> = std::fs::read_to_string(&recording)
        .expect("recording")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect();
    assert_eq!(lines.len(), 8);
    for recorded in &lines {
        let (eval_id, code) = cases.iter().find(|(id, _)| recorded["eval_id"] == id.as_str()).expect("a case");
        assert_eq!(recorded["request"], json!({"eval_id": eval_id, "code": code, "language": "python"}), "whole");
        let at = recorded["submitted_at"].as_str().expect("submitted_at");
        assert!(at.len() >= 25 && at.ends_with("+00:00") && at.as_bytes()[10] == b'T', "{at}");
    }

    // Drive the recording into Celery: every evaluation judged, every one a match.
    let drive_config = write(dir.path(), "drive.toml", &config);
    let (out, report) = drive_ok(&recording, &drive_config, &[]);
    assert_eq!(
        report["totals"],
        json!({"evaluations": 8, "match": 8, "equivalent": 0, "mismatch": 0, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_eq!(report["source"]["mode"], "drive");
    assert_balanced(&report);
    let drive = &report["drive"];
    assert_eq!(
        (drive["target"].as_str(), drive["planned"].as_u64(), drive["submitted"].as_u64()),
        (Some("celery"), Some(8), Some(8))
    );
    assert_eq!(drive["interrupted"], false);
    let ids = drive["ids"].as_array().expect("ids");
    assert_eq!(ids.len(), 8);
    for id in ids {
        let (recorded, driven) = (id["recorded"].as_str().expect("recorded"), id["driven"].as_str().expect("driven"));
        assert!(driven.starts_with(&format!("{recorded}-drive-")), "{id}");
        assert!(cases.iter().any(|(eval_id, _)| eval_id == recorded), "{id}");
    }
    let summary = text(&out.stdout);
    assert!(summary.contains("drive: 8 of 8 submitted to celery"), "{summary}");

    // The same recording into a worker whose stdout diverges, at 5x the recorded pace.
    let diverging_config = write(dir.path(), "diverging.toml", &config.replace(&plain, &diverging));
    let (_, report) = drive_ok(&recording, &diverging_config, &["--speed", "5"]);
    assert_eq!(
        report["totals"],
        json!({"evaluations": 8, "match": 6, "equivalent": 0, "mismatch": 2, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0]["paths"], json!(["/stdout"]));
    assert_eq!(groups[0]["count"], 2);
    assert!(groups[0]["examples"][0]["eval_id"].as_str().is_some_and(|id| id.starts_with("div-")), "{:#}", groups[0]);
    assert_eq!(
        (report["drive"]["pacing"].as_str(), report["drive"]["pacing_value"].as_f64()),
        (Some("speed"), Some(5.0))
    );

    // Into a worker that stamps a random /run_id, every evaluation run twice, one at a
    // time: /run_id is learned noisy after three double runs, so the first two evaluations
    // are mismatches and the other six noise; each evaluation counts once.
    let noise = "[noise]\ndouble_run_percent = 100\nmin_observations = 3\nmin_flip_rate = 0.5\n[admin]";
    let noisy_config = write(dir.path(), "noisy.toml", &config.replace(&plain, &noisy).replace("[admin]", noise));
    let (_, report) = drive_ok(&recording, &noisy_config, &["--concurrency", "1"]);
    assert_eq!(
        report["totals"],
        json!({"evaluations": 8, "match": 0, "equivalent": 0, "mismatch": 2, "noise": 6, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_balanced(&report);
    let learned = &report["noise"];
    assert_eq!((learned["double_runs"].as_u64(), learned["incomplete_double_runs"].as_u64()), (Some(8), Some(0)));
    let first_three: Vec<&Value> = lines.iter().take(3).map(|l| &l["eval_id"]).collect();
    assert_eq!(
        learned["learned"],
        json!([{"path": "/run_id", "runs": 8, "flips": 8, "flip_rate": 1.0, "examples": first_three}]),
        "examples are the recorded ids, in the order driven"
    );
    assert_eq!(learned["mismatches_now_explained"], 2);
    assert!(learned["suggested_config"].as_str().is_some_and(|toml| toml.contains("\"/run_id\"]")), "{learned:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_200_for_10_s_is_reported_and_every_evaluation_judged() {
    let queue = queue("rate");
    let _worker = worker::Worker::start_with(&[&queue], DB, 4, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let trivial = |id: &str| json!({"eval_id": id, "status": "completed", "stdout": "", "stderr": "", "exit_code": 0, "duration_ms": 0});
    let recording: Vec<String> = (0..2000)
        .map(|i| {
            let id = format!("r-{i}");
            line(&id, "print(1)", ok(trivial(&id)), ok(trivial(&id)))
        })
        .collect();
    let recording = write(dir.path(), "rate.jsonl", &recording.join("\n"));
    let config = celery_config("http://127.0.0.1:9", &queue, "task = \"trivial\"\nmax_queue_depth = 300\n");
    let config = write(dir.path(), "rate.toml", &config);
    let started = Instant::now();
    let (_, report) = drive_ok(&recording, &config, &["--rate", "200", "--concurrency", "64"]);
    assert_eq!(report["totals"]["evaluations"], 2000, "{:#}", report["totals"]);
    assert_eq!(
        report["totals"]["match"], 2000,
        "{:#}\n{:#}\n{:#}",
        report["totals"], report["breakdown"], report["drive"]["samples"]
    );
    assert_balanced(&report);
    let drive = &report["drive"];
    let achieved = drive["achieved_rate"].as_f64().expect("achieved_rate reported");
    assert_eq!((drive["pacing"].as_str(), drive["pacing_value"].as_f64()), (Some("rate"), Some(200.0)));
    assert!(!drive["samples"].as_array().expect("samples").is_empty(), "{drive:#}");
    // Reported, not asserted: the machine is shared.
    eprintln!(
        "drive --rate 200: achieved {achieved:.1}/s over {:.2} s; held {}; deepest queue {:?}; outcome p99 {} ms; \
         whole run {:.1} s",
        drive["submitting_s"].as_f64().unwrap_or_default(),
        drive["held_ms"],
        drive["samples"].as_array().and_then(|s| s.iter().filter_map(|s| s["queue_depth"].as_u64()).max()),
        report["latency"]["shadow"]["outcome_ms"]["p99"],
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn to_legacy_resubmits_to_the_legacy_service_and_compares_with_the_recorded_shadow() {
    let api = evalapi::EvalApi::start(evalapi::Behaviour::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Legacy lost these three; the shadow's outcomes were recorded.
    let lost = json!({"state": "lost", "waited_ms": 5000.0, "last_state": "queued"});
    let recording: Vec<String> = (0..3)
        .map(|i| {
            let (id, code) = (format!("l-{i}"), format!("print({i})"));
            line(&id, &code, lost.clone(), ok(evalapi::echo_outcome(&id, &code)))
        })
        .collect();
    let recording = write(dir.path(), "lost.jsonl", &recording.join("\n"));
    let config = write(dir.path(), "legacy.toml", &sidecar::http_config(&api.url(), "http://127.0.0.1:9", ""));
    let (_, report) =
        tokio::task::spawn_blocking(move || drive_ok(&recording, &config, &["--to", "legacy"])).await.expect("drive");
    assert_eq!(
        report["totals"],
        json!({"evaluations": 3, "match": 3, "equivalent": 0, "mismatch": 0, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_eq!(report["drive"]["target"], "legacy");
    assert_eq!(report["drive"]["driven_side"], "legacy");
    assert_eq!(api.submissions(), 3);
    let mut sent: Vec<String> = api
        .received()
        .iter()
        .map(|r| {
            assert_eq!(r.target, "/evaluations");
            let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
            body["eval_id"].as_str().expect("eval_id").to_owned()
        })
        .collect();
    sent.sort();
    for (i, driven) in sent.iter().enumerate() {
        assert!(driven.starts_with(&format!("l-{i}-drive-")), "fresh id: {driven}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_submitting_and_leaves_a_valid_partial_report() {
    let api = evalapi::EvalApi::start(evalapi::Behaviour::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let recording: Vec<String> = (0..300)
        .map(|i| {
            let (id, code) = (format!("c-{i}"), format!("print({i})"));
            let outcome = ok(evalapi::echo_outcome(&id, &code));
            line(&id, &code, outcome.clone(), outcome)
        })
        .collect();
    let recording = write(dir.path(), "long.jsonl", &recording.join("\n"));
    let config = write(dir.path(), "http.toml", &sidecar::http_config(&api.url(), &api.url(), ""));
    let report_path = dir.path().join("partial.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .arg("drive")
        .arg(&recording)
        .arg("--config")
        .arg(&config)
        .args(["--rate", "50", "--json"])
        .arg(&report_path)
        .env("SHADOWDIFF_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shadowdiff drive");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if child.try_wait().expect("try_wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("drive did not stop within 20 s of SIGINT");
    })
    .await
    .expect("wait");
    assert!(interrupted.is_ok_and(|status| status.success()), "kill -INT");
    assert_eq!(out.status.code(), Some(130), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("stopping: no more submissions"), "{}", text(&out.stderr));
    let report = read_json(&report_path);
    assert_balanced(&report);
    let drive = &report["drive"];
    assert_eq!(drive["interrupted"], true);
    let (planned, submitted, not_submitted) = (
        drive["planned"].as_u64().expect("planned"),
        drive["submitted"].as_u64().expect("submitted"),
        drive["not_submitted"].as_u64().expect("not_submitted"),
    );
    assert_eq!(planned, 300);
    assert!(submitted > 10 && submitted < 300, "stopped part way: {submitted}");
    assert_eq!(submitted + not_submitted, planned, "{drive:#}");
    assert_eq!(report["accounting"]["submissions"].as_u64(), Some(submitted));
    // The grace let those in flight finish: every submitted one is judged, and a match.
    assert_eq!(report["accounting"]["abandoned"], 0);
    assert_eq!(report["totals"]["evaluations"].as_u64(), Some(submitted));
    assert_eq!(report["totals"]["match"].as_u64(), Some(submitted));
    assert_eq!(drive["ids"].as_array().map(Vec::len), Some(submitted as usize));
    assert_eq!(api.submissions() as u64, submitted);
}

#[test]
fn a_redacted_recording_is_refused_naming_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = ok(json!({"stdout": "1\n"}));
    let redacted = json!({"v": 1, "eval_id": "e-2", "language": "python",
        "request": {"eval_id": "e-2", "code": {"redacted": true, "bytes": 8, "fnv1a64": "0"}, "language": "python"},
        "legacy": outcome, "shadow": outcome});
    let lines = [line("e-1", "print(1)", outcome.clone(), outcome.clone()), redacted.to_string()];
    let recording = write(dir.path(), "rec.jsonl", &lines.join("\n"));
    let config = write(dir.path(), "c.toml", &sidecar::http_config("http://127.0.0.1:9", "http://127.0.0.1:9", ""));
    let out = run_drive(&[recording.to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2: eval_id \"e-2\": the request's code at /code was redacted when it was recorded",
            recording.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("leaving [record] redact unset"), "{stderr}");
    let out =
        run_drive(&[recording.to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8"), "--rate", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--rate must be above 0, got 0"), "{}", text(&out.stderr));
}
