//! The shipped dashboard and alert rules query only what `/metrics` serves.
//!
//! `deploy/grafana/shadowdiff-migration.json` and `deploy/prometheus/shadowdiff-alerts.yml`
//! are read as text: every metric name they use, and every `name{label="value"}` they
//! select, must appear in the metrics a sidecar with a Celery shadow and a legacy queue
//! length renders. With `promtool` on the PATH (`scripts/test-env.sh` installs it), the
//! rules and the rendered metrics are also checked by Prometheus's own tool.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use shadowdiff::config::Config;
use shadowdiff::fixture::{Evaluation, Side};
use shadowdiff::judge::engine::Engine;
use shadowdiff::live::metrics::{self, LiveGauges};
use shadowdiff::live::proxy::ProxyStatsSnapshot;
use shadowdiff::live::state::{Accounting, Snapshot};

const DASHBOARD: &str = "deploy/grafana/shadowdiff-migration.json";
const RULES: &str = "deploy/prometheus/shadowdiff-alerts.yml";
const PREFIXES: &[&str] = &["shadowdiff_", "tasks_", "task_", "celery_", "legacy_", "queue_"];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("shipped file")
}

/// What a sidecar with a Celery shadow serves after judging one of each verdict.
fn rendered() -> String {
    let engine = Engine::new(Config::default());
    let mut stats = engine.new_stats();
    let ok = |ms: f64| Side::Ok { submit_ms: 1.0, outcome_ms: ms, outcome: serde_json::json!({"stdout": "1"}) };
    let evaluation = Evaluation {
        v: 1,
        eval_id: "d-1".into(),
        language: "python".into(),
        submitted_at: None,
        request: None,
        legacy: ok(20.0),
        shadow: ok(10.0),
        double_run: None,
    };
    engine.record(&mut stats, &evaluation);
    let mut accounting = Accounting { submissions: 2, judged: 1, ..Accounting::default() };
    accounting.not_mirrored.insert("sampled_out".into(), 1);
    let mut selection = shadowdiff::judge::histogram::Latency::default();
    selection.record_ms(0.02);
    let snapshot = Snapshot { stats, accounting, selection };
    let gauges = LiveGauges {
        shadow_submitted: 1,
        queue_depth: Some(3),
        retained_result_bytes: Some(0),
        in_flight: 0,
        breaker_state: 0,
        sampling_percent: 50.0,
        celery: true,
        legacy_queue_length: Some(4),
        pending_bytes: 0,
        pending_bytes_limit: 256 << 20,
    };
    let readiness = engine.readiness(&snapshot.stats);
    let proxy = ProxyStatsSnapshot {
        requests_total: 2,
        legacy_unreachable_total: 0,
        legacy_timeout_total: 0,
        in_flight: 0,
        client_errors_total: 0,
        accept_errors_total: 0,
    };
    metrics::render(&snapshot, &proxy, &gauges, &readiness)
}

/// Label names that share the metrics' prefixes.
const LABELS: &[&str] = &["queue_system"];

/// Metric names used in a query text: identifiers with one of our prefixes, not label
/// names and not quoted label values.
fn names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut previous = ' ';
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            if word.is_empty() {
                quoted = previous == '"';
            }
            word.push(c);
        } else {
            if !quoted && PREFIXES.iter().any(|p| word.starts_with(p)) && !LABELS.contains(&word.as_str()) {
                found.insert(word.clone());
            }
            word.clear();
        }
        previous = c;
    }
    found
}

/// `name{label="value"}` selections with one equality matcher.
fn selections(text: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for name in names(text) {
        let mut rest = text;
        while let Some(at) = rest.find(&format!("{name}{{")) {
            let after = &rest[at + name.len() + 1..];
            let matcher = &after[..after.find('}').unwrap_or(0)];
            if !matcher.contains("!=") && !matcher.contains("=~") && !matcher.is_empty() {
                found.insert((name.clone(), matcher.replace("\\\"", "\"")));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn dashboard_is_json_with_the_migration_panels() {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("valid JSON");
    let titles: Vec<&str> =
        dashboard["panels"].as_array().expect("panels").iter().map(|p| p["title"].as_str().expect("title")).collect();
    for wanted in [
        "Task distribution",
        "Success rate",
        "p99 time to outcome",
        "Queue depths",
        "Readiness",
        "Mismatch rate",
        "Not mirrored",
    ] {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no {wanted:?} panel in {titles:?}");
    }
}

#[test]
fn every_metric_the_dashboard_and_rules_use_is_served() {
    let metrics = rendered();
    let served = |name: &str| metrics.lines().any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']));
    for file in [DASHBOARD, RULES] {
        let text = read(file);
        let used = names(&text);
        assert!(used.len() >= 5, "{file}: only {used:?}");
        for name in &used {
            assert!(served(name), "{file} uses {name}, which /metrics does not serve:\n{metrics}");
        }
        for (name, matcher) in selections(&text) {
            let needle = format!("{name}{{{matcher}");
            let partial = format!("{name}{{{matcher},");
            assert!(
                metrics.lines().any(|l| l.starts_with(&format!("{needle}}}"))
                    || l.starts_with(&partial)
                    || l.starts_with(&name) && l.contains(&matcher)),
                "{file} selects {needle}}}, which /metrics never serves:\n{metrics}"
            );
        }
    }
}

fn promtool(args: &[&str], input: Option<&str>) -> Option<std::process::Output> {
    use std::io::Write;
    let mut command = Command::new("promtool");
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(_) => {
            eprintln!("promtool not installed (scripts/test-env.sh installs it): skipped");
            return None;
        }
    };
    if let Some(input) = input {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    Some(child.wait_with_output().expect("promtool ran"))
}

#[test]
fn promtool_accepts_the_rules_and_the_metrics() {
    if let Some(output) = promtool(&["check", "rules", RULES], None) {
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("SUCCESS: 5 rules found"));
    }
    if let Some(output) = promtool(&["check", "metrics"], Some(&rendered())) {
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
