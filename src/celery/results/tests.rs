use super::*;
use crate::celery::TaskState;

const RETRY: &[u8] = br#"{"status": "RETRY", "result": {"exc_type": "RuntimeError", "exc_message": ["try again"], "exc_module": "builtins"}, "traceback": null, "children": [], "date_done": null, "task_id": "t"}"#;
const STARTED: &[u8] = br#"{"status": "STARTED", "result": {"pid": 1, "hostname": "w@h"}, "traceback": null, "children": [], "date_done": null, "task_id": "t"}"#;
const SUCCESS: &[u8] = br#"{"status": "SUCCESS", "result": 42, "traceback": null, "children": [], "date_done": "2026-11-28T15:38:15.932640+00:00", "task_id": "t"}"#;

/// Feeds `values` in order; returns (retries, last state, final result if any).
fn run(values: &[(Source, &[u8])]) -> (u32, Option<String>, Option<TaskResult>) {
    let mut progress = Progress::default();
    for (source, bytes) in values {
        if let Some(result) = progress.observe("t", *source, bytes).expect("valid result") {
            return (progress.retries_seen, progress.last_state, Some(result));
        }
    }
    (progress.retries_seen, progress.last_state, None)
}

use Source::{Published as P, Stored as S};

#[test]
fn every_published_retry_counts_even_when_identical() {
    let (retries, last, done) = run(&[(P, RETRY), (P, RETRY), (P, SUCCESS)]);
    assert_eq!((retries, last.as_deref()), (2, Some("RETRY")));
    assert_eq!(done.map(|r| r.state), Some(TaskState::Success(serde_json::json!(42))));
}

#[test]
fn a_polled_copy_of_a_published_retry_is_not_counted_again() {
    // Published first, then read by GET (before or after the next write).
    assert_eq!(run(&[(P, RETRY), (S, RETRY), (S, RETRY)]).0, 1);
    assert_eq!(run(&[(P, RETRY), (P, STARTED), (S, RETRY)]).0, 1);
}

#[test]
fn a_retry_polled_before_its_publish_arrives_counts_once() {
    assert_eq!(run(&[(S, RETRY), (P, RETRY)]).0, 1);
    // ... and a second, identical publish is a second retry.
    assert_eq!(run(&[(S, RETRY), (P, RETRY), (P, RETRY)]).0, 2);
}

#[test]
fn retries_seen_only_by_polling_count_when_the_value_changes() {
    assert_eq!(run(&[(S, RETRY), (S, STARTED), (S, RETRY)]).0, 1);
    let (retries, last, done) = run(&[(S, STARTED), (S, RETRY)]);
    assert_eq!((retries, last.as_deref(), done), (1, Some("RETRY"), None));
}

#[test]
fn a_stale_poll_does_not_move_the_last_state_back() {
    let (_, last, _) = run(&[(P, STARTED), (P, RETRY), (S, STARTED)]);
    assert_eq!(last.as_deref(), Some("RETRY"));
}

#[test]
fn an_unreadable_value_is_an_error_naming_the_task() {
    let error = Progress::default().observe("t-9", S, b"not json").expect_err("refused");
    assert!(matches!(&error, BrokerError::BadResult { task_id, .. } if task_id == "t-9"), "{error}");
}

#[test]
fn the_hubs_ids_are_v4_uuids_under_its_pattern() {
    let prefix = [0x0a, 0x1b, 0x2c, 0x3d];
    let text = id_text(prefix);
    assert_eq!(text, "0a1b2c3d-");
    assert_eq!(result_pattern(&text), "celery-task-meta-0a1b2c3d-*");
    let ids: Vec<String> = (0..100).map(|_| task_id_starting(prefix)).collect();
    for id in &ids {
        let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{id}");
        assert_eq!(uuid.hyphenated().to_string(), *id, "spelled as Celery's ids are");
        assert!(id.starts_with(&text), "{id}");
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
}
