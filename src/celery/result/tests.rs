use super::*;
use crate::celery::samples;

fn parse_sample(name: &str) -> TaskResult {
    parse_result(samples::read(name).as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Expected `(status, exc_type, exc_message, has traceback)` of an error state.
fn assert_error(r: &TaskResult, status: &str, exc_type: &str, message: Value, traceback: bool) {
    assert_eq!(r.state.status(), status);
    let e = r.state.error().expect("an error state");
    assert_eq!(e.exc_type, exc_type);
    assert_eq!(e.exc_message, message);
    assert_eq!(e.traceback.is_some(), traceback, "traceback presence");
}

#[test]
fn every_result_sample_parses_to_its_state() {
    let all = samples::all("result-");
    assert_eq!(all.len(), 21, "result samples found");
    for (name, _) in &all {
        let r = parse_sample(name);
        assert!(!r.task_id.is_empty(), "{name}");
        let status = name.trim_start_matches("result-").trim_end_matches(".json").to_uppercase();
        let want = match status.split('-').next() {
            Some("SUCCESS" | "CHAIN") => "SUCCESS",
            Some("FAILURE") => "FAILURE",
            Some("RETRY") => "RETRY",
            Some("REVOKED") => "REVOKED",
            Some("STARTED") => "STARTED",
            _ => panic!("unexpected sample {name}"),
        };
        assert_eq!(r.state.status(), want, "{name}");
    }
}

#[test]
fn success_samples_carry_the_return_value() {
    let r = parse_sample("result-success.json");
    assert_eq!(r.task_id, "da16d6c5-3139-468a-983f-eb2712e1cb27");
    assert_eq!(r.date_done.as_deref(), Some("2026-11-28T15:38:15.932640+00:00"));
    assert_eq!(
        r.state,
        TaskState::Success(json!({"eval_id": "eval-ok", "status": "success", "stdout": "42\n",
            "stderr": "", "exit_code": 0, "duration_ms": 20}))
    );
    for (name, status, exit_code) in [
        ("result-success-nonzero-exit.json", "error", json!(3)),
        ("result-success-subprocess-timeout.json", "timeout", Value::Null),
        ("result-success-extended.json", "success", json!(0)),
    ] {
        let TaskState::Success(v) = parse_sample(name).state else {
            panic!("{name} is not SUCCESS");
        };
        assert_eq!(v["status"], status, "{name}");
        assert_eq!(v["exit_code"], exit_code, "{name}");
    }
    let r = parse_sample("result-success-soft-time-limit-handled.json");
    assert_eq!(r.state, TaskState::Success(json!({"status": "soft_timeout"})));
}

#[test]
fn chain_steps_link_to_their_parent() {
    let (s1, s2, s3) = (
        parse_sample("result-chain-step1.json"),
        parse_sample("result-chain-step2.json"),
        parse_sample("result-chain-step3.json"),
    );
    assert_eq!(
        [&s1.state, &s2.state, &s3.state],
        [&TaskState::Success(json!(3)), &TaskState::Success(json!(6)), &TaskState::Success(json!(10))]
    );
    assert_eq!(s1.parent_id, None);
    assert_eq!(s2.parent_id.as_deref(), Some(s1.task_id.as_str()));
    assert_eq!(s3.parent_id.as_deref(), Some(s2.task_id.as_str()));
}

#[test]
fn failure_samples_carry_the_exception() {
    let cases = [
        ("result-failure.json", "ValueError", json!(["something broke"]), true),
        ("result-failure-after-retries.json", "RuntimeError", json!(["try again"]), true),
        ("result-failure-hard-time-limit.json", "TimeLimitExceeded", json!([2]), false),
        ("result-failure-soft-time-limit.json", "SoftTimeLimitExceeded", json!([]), true),
        ("result-failure-soft-time-limit-from-header.json", "SoftTimeLimitExceeded", json!([]), true),
        ("result-failure-unknown-task.json", "NotRegistered", json!(["does_not_exist"]), false),
        (
            "result-failure-worker-lost.json",
            "WorkerLostError",
            json!(["Worker exited prematurely: signal 9 (SIGKILL) Job: 0."]),
            false,
        ),
    ];
    for (name, exc_type, message, traceback) in cases {
        assert_error(&parse_sample(name), "FAILURE", exc_type, message, traceback);
    }
    let r = parse_sample("result-failure.json");
    let e = r.state.error().expect("failure");
    assert_eq!(e.exc_module.as_deref(), Some("builtins"));
    assert!(e.traceback.as_deref().is_some_and(|t| t.ends_with("ValueError: something broke\n")));
}

#[test]
fn retry_revoked_and_started_samples() {
    let r = parse_sample("result-retry.json");
    assert_error(&r, "RETRY", "RuntimeError", json!(["try again"]), true);
    assert_eq!(r.date_done, None);
    for (name, why) in [
        ("result-revoked-eta.json", "revoked"),
        ("result-revoked-terminate.json", "terminated"),
        ("result-revoked-expired.json", "expired"),
    ] {
        assert_error(&parse_sample(name), "REVOKED", "TaskRevokedError", json!([why]), false);
    }
    for (name, pid) in [("result-started.json", 6894), ("result-started-slow.json", 7409)] {
        let r = parse_sample(name);
        let want = TaskState::Started { pid: Some(pid), hostname: Some("lab@vm".into()) };
        assert_eq!(r.state, want, "{name}");
        assert_eq!(r.date_done, None);
    }
}

#[test]
fn only_success_failure_and_revoked_are_final() {
    let error = TaskError { exc_type: "E".into(), exc_message: json!([]), exc_module: None, traceback: None };
    let cases = [
        (TaskState::Success(Value::Null), true),
        (TaskState::Failure(error.clone()), true),
        (TaskState::Revoked(error.clone()), true),
        (TaskState::Retry(error), false),
        (TaskState::Started { pid: None, hostname: None }, false),
        (TaskState::Other { status: "PROGRESS".into(), result: json!({"done": 3}) }, false),
    ];
    for (state, is_final) in cases {
        assert_eq!(state.is_final(), is_final, "{}", state.status());
    }
}

#[test]
fn failure_converts_to_the_fixture_error_object() {
    for name in ["result-failure.json", "result-failure-hard-time-limit.json", "result-revoked-expired.json"] {
        let raw: Value = serde_json::from_str(&samples::read(name)).expect("JSON");
        let r = parse_sample(name);
        assert_eq!(r.state.error().expect("error").to_json(), raw["result"], "{name}");
    }
    let no_module = TaskError {
        exc_type: "Boom".into(),
        exc_message: json!("text"),
        exc_module: None,
        traceback: Some("tb".into()),
    };
    assert_eq!(no_module.to_json(), json!({"exc_type": "Boom", "exc_message": "text", "exc_module": null}));
}

#[test]
fn pubsub_messages_parse_like_keys() {
    let text = samples::read("result-pubsub-sample.txt");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "two pmessages of four lines");
    let mut states = Vec::new();
    for msg in lines.chunks(4) {
        assert_eq!(msg[..2], ["pmessage", "celery-task-meta-*"]);
        let r = parse_result(msg[3].as_bytes()).expect("payload parses");
        assert_eq!(task_id_from_channel(msg[2]), Some(r.task_id.as_str()));
        assert_eq!(result_key(&r.task_id), msg[2]);
        states.push((r.state.status().to_owned(), r.state.is_final()));
    }
    assert_eq!(states, [("STARTED".to_owned(), false), ("SUCCESS".to_owned(), true)]);
}

#[test]
fn keys_and_channels() {
    assert_eq!(result_key("abc"), "celery-task-meta-abc");
    assert_eq!(task_id_from_channel("celery-task-meta-abc"), Some("abc"));
    assert_eq!(task_id_from_channel("celery-task-meta-"), None);
    assert_eq!(task_id_from_channel("celery-taskset-meta-abc"), None);
}

#[test]
fn custom_states_are_kept_as_other() {
    let r = parse_result(br#"{"status": "PROGRESS", "result": {"done": 3}, "task_id": "t"}"#).expect("parses");
    assert_eq!(r.state, TaskState::Other { status: "PROGRESS".into(), result: json!({"done": 3}) });
}

#[test]
fn malformed_values_are_refused_with_the_reason_and_a_preview() {
    let cases: [(&[u8], &str); 9] = [
        (b"{\"status\": \"SUCC", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[\"SUCCESS\"]", "is an array, not an object"),
        (br#"{"result": 1, "task_id": "t"}"#, "has no `status`"),
        (br#"{"status": 1, "task_id": "t"}"#, "`status` that is a number"),
        (br#"{"status": "SUCCESS", "result": 1}"#, "has no `task_id`"),
        (br#"{"status": "FAILURE", "result": "boom", "task_id": "t"}"#, "not an exception object"),
        (br#"{"status": "FAILURE", "result": {}, "task_id": "t"}"#, "has no `exc_type`"),
        (br#"{"status": "REVOKED", "result": {"exc_type": 3}, "task_id": "t"}"#, "`exc_type` that is a number"),
    ];
    for (input, want) in cases {
        let err = parse_result(input).expect_err(want);
        let msg = err.to_string();
        assert!(msg.contains(want), "{msg:?} does not say {want:?}");
        let start: String = String::from_utf8_lossy(input).chars().take(10).collect();
        assert!(format!("{err:?}").contains(&start.replace('"', "\\\"")), "{err:?}");
        assert!(matches!(err, WireError::ResultNotJson { .. } | WireError::BadResult { .. }));
    }
}
