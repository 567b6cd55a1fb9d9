//! `shadowdiff replay` and `check-config` end to end, through the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/evaluations.jsonl");

fn shadowdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadowdiff")).args(args).output().expect("run shadowdiff")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch directory with helpers to write inputs into it.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().expect("tempdir"))
    }

    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn replay_json(args: &[&str]) -> (Output, Value) {
    let scratch = Scratch::new();
    let json_path = scratch.path("report.json");
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", str(&json_path)]);
    let output = shadowdiff(&all);
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|e| panic!("no report: {e}\n{}", stderr(&output)));
    (output, serde_json::from_str(&text).expect("report is JSON"))
}

/// One fixture line with the given sides.
fn line(eval_id: &str, legacy: Value, shadow: Value) -> String {
    json!({"v": 1, "eval_id": eval_id, "language": "python", "legacy": legacy, "shadow": shadow}).to_string()
}

fn ok(outcome: Value) -> Value {
    json!({"state": "ok", "submit_ms": 2.0, "outcome_ms": 10.0, "outcome": outcome})
}

#[test]
fn shipped_fixtures_give_the_known_totals() {
    let (output, report) = replay_json(&[FIXTURES]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        report["totals"],
        json!({
            "evaluations": 2190, "match": 1900, "equivalent": 40, "mismatch": 190, "noise": 0,
            "shadow_error": 30, "shadow_lost": 10, "legacy_failed": 20, "malformed": 0
        })
    );
    assert_eq!(report["equivalent_by_rule"], json!({"timeout": 40}));
    // One group per difference signature, across languages, with counts per language.
    let groups: Vec<(String, u64, Value)> = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let paths: Vec<&str> =
                g["paths"].as_array().expect("paths").iter().map(|p| p.as_str().expect("str")).collect();
            (paths.join(","), g["count"].as_u64().expect("count"), g["by_language"].clone())
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("/stdout".to_string(), 120, json!({"bash": 63, "python": 57})),
            (
                "/exit_code,/status,/stderr".to_string(),
                50,
                json!({"bash": 15, "javascript": 17, "python": 13, "ruby": 5})
            ),
            ("/tests/*/status".to_string(), 20, json!({"bash": 7, "javascript": 3, "python": 2, "ruby": 8})),
        ]
    );
    let python = &report["by_language"]["python"]["totals"];
    let languages: u64 = report["by_language"]
        .as_object()
        .expect("langs")
        .values()
        .map(|l| l["totals"]["evaluations"].as_u64().expect("n"))
        .sum();
    assert_eq!(languages, 2190);
    assert!(python["mismatch"].as_u64().expect("n") >= 60);
    assert_eq!(report["latency"]["legacy"]["outcome_ms"]["count"], 2170);
    assert_eq!(report["latency"]["shadow"]["outcome_ms"]["count"], 2110);
    assert_eq!(report["latency"]["delta"]["outcome_ms"]["count"], 2090);
    assert_eq!(report["readiness"]["ready"], false);
    assert_eq!(report["readiness"]["state"], "not_ready");
    let states: Vec<(&str, &str)> = report["readiness"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| (c["name"].as_str().expect("name"), c["state"].as_str().expect("state")))
        .collect();
    assert_eq!(
        states,
        [
            ("min_samples", "inconclusive"),
            ("max_mismatch_rate", "fail"),
            ("max_error_rate", "fail"),
            ("max_lost", "fail"),
            ("max_submit_p99_ms", "pass"),
            ("max_outcome_p99_ratio", "pass"),
        ]
    );
    let mismatch_check = &report["readiness"]["checks"][1];
    assert_eq!(mismatch_check["observed"], json!(190.0 / 2170.0), "observed is the rate as seen");
    assert!(mismatch_check["bound"].as_f64().expect("bound") > 0.1, "the bound is the Wilson upper bound");
    assert!(stdout(&output).contains("match 1900 | equivalent 40 | mismatch 190"), "{}", stdout(&output));
}

#[test]
fn shipped_fixtures_show_the_evidence_behind_the_counts() {
    let (_, report) = replay_json(&[FIXTURES]);
    let breakdown = &report["breakdown"];
    assert_eq!(
        breakdown["shadow_error"],
        json!([{"kind": "RuntimeError", "count": 30, "eval_ids": ["e-000039", "e-000040", "e-000204"]}])
    );
    assert_eq!(
        breakdown["shadow_lost"],
        json!([{"kind": "not_recorded", "count": 10, "eval_ids": ["e-000012", "e-000083", "e-000120"]}])
    );
    assert_eq!(
        breakdown["legacy_failed"],
        json!([{"kind": "error: HTTP 500", "count": 20, "eval_ids": ["e-000134", "e-000217", "e-000257"]}])
    );
    // Field-level rates over the 2,090 compared evaluations (match + mismatch).
    let paths: Vec<(String, u64, u64)> = report["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .take(5)
        .map(|p| {
            (
                p["path"].as_str().expect("path").into(),
                p["compared"].as_u64().expect("n"),
                p["differed"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            ("/stdout".into(), 2090, 120),
            ("/exit_code".into(), 2090, 50),
            ("/status".into(), 2090, 50),
            ("/stderr".into(), 2090, 50),
            ("/tests/*/status".into(), 2090, 20),
        ]
    );
    // The timeline by position: 22 buckets of 100 whose counts add up to the totals.
    let timeline = report["timeline"].as_array().expect("timeline");
    assert_eq!(report["timeline_layout"], json!({"unit": "position", "span": 100}));
    assert_eq!(timeline.len(), 22);
    let sum = |key: &str| timeline.iter().map(|p| p[key].as_u64().expect("n")).sum::<u64>();
    assert_eq!(
        (sum("judged"), sum("mismatch"), sum("shadow_error"), sum("shadow_lost"), sum("legacy_failed")),
        (2170, 190, 30, 10, 20)
    );
    assert_eq!(timeline[21]["start"], 2100);
}

#[test]
fn clean_runs_are_inconclusive_until_the_stated_count_then_ready() {
    let scratch = Scratch::new();
    let clean = |n: usize| -> String {
        (0..n).map(|i| line(&format!("c{i}"), ok(json!({"a": 1})), ok(json!({"a": 1})))).collect::<Vec<_>>().join("\n")
    };
    // The default gate: 3,838 clean evaluations are the fewest that prove 0.1%.
    let under = scratch.file("under.jsonl", clean(3000));
    let (output, report) = replay_json(&[str(&under), "--gate"]);
    assert_eq!(output.status.code(), Some(1), "only ready passes the gate");
    assert_eq!(report["readiness"]["state"], "inconclusive");
    assert_eq!(report["readiness"]["samples_needed"], 838);
    let checks = &report["readiness"]["checks"];
    assert_eq!(checks[0]["samples_needed"], 838);
    assert_eq!(checks[1]["state"], "inconclusive");
    assert_eq!(checks[1]["observed"], 0.0);
    assert_eq!(checks[1]["samples_needed"], 838);
    let text = shadowdiff(&["replay", str(&under)]);
    assert!(stdout(&text).contains("readiness: INCONCLUSIVE, about 838 more evaluations needed"), "{}", stdout(&text));
    let just_under = scratch.file("just-under.jsonl", clean(3837));
    let (_, report) = replay_json(&[str(&just_under)]);
    assert_eq!(report["readiness"]["state"], "inconclusive");
    assert_eq!(report["readiness"]["samples_needed"], 1);
    let at = scratch.file("at.jsonl", clean(3838));
    let (output, report) = replay_json(&[str(&at), "--gate"]);
    assert_eq!(report["readiness"]["state"], "ready", "{}", report["readiness"]);
    assert_eq!(report["readiness"]["samples_needed"], Value::Null);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn examples_are_redacted_and_show_line_diffs() {
    let (_, report) = replay_json(&[FIXTURES]);
    let group =
        report["groups"].as_array().expect("groups").iter().find(|g| g["paths"] == json!(["/stdout"])).expect("group");
    assert_eq!(group["examples"].as_array().expect("examples").len(), 3);
    let example = &group["examples"][0];
    assert_eq!(example["request"]["code"]["redacted"], true);
    assert!(!example.to_string().contains("print("), "code leaked: {example}");
    let diff = example["differences"][0]["diff"].as_str().expect("text diff");
    assert!(diff.contains("+shadow-diverged"), "{diff}");
}

#[test]
fn every_forgiven_difference_matches() {
    let base =
        json!({"status": "completed", "stdout": "a\nb\n", "score": 0.1, "warnings": ["x", "y"], "duration_ms": 4});
    let forgiven = [
        json!({"status": "completed", "stdout": "a\r\nb\r\n", "score": 0.1, "warnings": ["x", "y"], "duration_ms": 4}),
        json!({"status": "completed", "stdout": "a  \nb\t\n", "score": 0.1, "warnings": ["x", "y"], "duration_ms": 4}),
        json!({"status": "completed", "stdout": "a\nb", "score": 0.1, "warnings": ["x", "y"], "duration_ms": 4}),
        json!({"status": "completed", "stdout": "a\nb\n", "score": 0.1 + 1e-12, "warnings": ["x", "y"], "duration_ms": 4}),
        json!({"status": "completed", "stdout": "a\nb\n", "score": 0.1, "warnings": ["y", "x"], "duration_ms": 4}),
        json!({"status": "completed", "stdout": "a\nb\n", "score": 0.1, "warnings": ["x", "y"], "duration_ms": 999}),
        json!({"duration_ms": 4, "warnings": ["x", "y"], "score": 0.1, "stdout": "a\nb\n", "status": "completed"}),
    ];
    let lines: Vec<String> =
        forgiven.iter().enumerate().map(|(i, s)| line(&format!("f{i}"), ok(base.clone()), ok(s.clone()))).collect();
    let scratch = Scratch::new();
    let file = scratch.file("forgiven.jsonl", lines.join("\n") + "\n");
    let (_, report) = replay_json(&[str(&file)]);
    assert_eq!(report["totals"]["match"], 7, "{}", report["groups"]);
    assert_eq!(report["totals"]["mismatch"], 0);
}

#[test]
fn malformed_lines_are_counted_with_line_and_reason() {
    let good = line("g", ok(json!({"a": 1})), ok(json!({"a": 1})));
    let mut input = Vec::new();
    input.extend_from_slice(format!("{good}\n").as_bytes());
    input.extend_from_slice(&good.as_bytes()[..40]); // truncated line
    input.push(b'\n');
    input.extend_from_slice(format!("{}\n", good.replace("\"v\":1", "\"v\":\"1\"")).as_bytes()); // wrong type
    input.extend_from_slice(format!("{}\n", good.replace("\"v\":1", "\"v\":1,\"extra\":true")).as_bytes()); // unknown key
    input.extend_from_slice(b"{\"v\":1,\"eval_id\":\"\xff\"}\n"); // invalid UTF-8
    input.extend_from_slice(good.as_bytes()); // last line without newline is fine
    let scratch = Scratch::new();
    let file = scratch.file("bad.jsonl", &input);
    let (output, report) = replay_json(&[str(&file)]);
    assert!(output.status.success());
    assert_eq!(report["totals"]["evaluations"], 2);
    assert_eq!(report["totals"]["malformed"], 4);
    let malformed: Vec<(u64, String)> = report["malformed"]
        .as_array()
        .expect("malformed")
        .iter()
        .map(|m| (m["line"].as_u64().expect("line"), m["reason"].as_str().expect("reason").to_string()))
        .collect();
    assert_eq!(malformed[0], (2, "EOF while parsing a string (column 40)".to_string()));
    assert_eq!(malformed[1].0, 3);
    assert!(malformed[1].1.starts_with("invalid type: string \"1\", expected u32"), "{}", malformed[1].1);
    assert_eq!(malformed[2].0, 4);
    assert!(malformed[2].1.starts_with("unknown field `extra`"), "{}", malformed[2].1);
    assert_eq!(malformed[3], (5, "invalid UTF-8 at byte 18".to_string()));
    assert!(report["malformed"][0]["file"].as_str().expect("file").ends_with("bad.jsonl"));
}

#[test]
fn strict_stops_at_the_first_malformed_line() {
    let scratch = Scratch::new();
    let file = scratch.file("bad.jsonl", "{\"v\":1}\n");
    let output = shadowdiff(&["replay", "--strict", str(&file)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("bad.jsonl:1: missing field `eval_id`"), "{}", stderr(&output));
}

#[test]
fn empty_file_and_stdin() {
    let scratch = Scratch::new();
    let empty = scratch.file("empty.jsonl", "");
    let (output, report) = replay_json(&[str(&empty)]);
    assert!(output.status.success());
    assert_eq!(report["totals"]["evaluations"], 0);
    assert_eq!(report["readiness"]["ready"], false);

    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["replay", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let good = line("s", ok(json!({"a": 1})), ok(json!({"a": 2})));
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), format!("{good}\n").as_bytes()).expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(stdout(&output).contains("shadowdiff: 1 evaluations"), "{}", stdout(&output));
    assert!(stdout(&output).contains("mismatch 1"));
}

#[test]
fn html_escapes_untrusted_output() {
    let evil = "<script>alert('x')</script>\n";
    let scratch = Scratch::new();
    let file = scratch.file(
        "evil.jsonl",
        line("<b>id</b>", ok(json!({"stdout": "safe\n"})), ok(json!({"stdout": evil, "x<y": "</pre>"}))) + "\n",
    );
    let html_path = scratch.path("report.html");
    let output = shadowdiff(&["replay", str(&file), "--html", str(&html_path)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let html = std::fs::read_to_string(&html_path).expect("html");
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(!html.contains("<b>id"), "unescaped id");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;b&gt;id&lt;/b&gt;"));
    assert!(html.contains("/x&lt;y"));
    assert!(!html.contains("src=") && !html.contains("href="), "the page must be self-contained");
    assert!(html.contains("<svg"), "latency chart");
    assert!(!html.contains("<script"), "a replay report is a still page");
    assert!(html.contains("<details class=\"group\"><summary>"), "groups are folded");
    let fields = html.find("Fields: how often each differs").expect("field table");
    let groups = html.find("Mismatch groups").expect("groups");
    assert!(fields < groups, "the field-level table comes first");
}

#[test]
fn gate_exit_code_follows_readiness() {
    let scratch = Scratch::new();
    let lines: Vec<String> =
        (0..20).map(|i| line(&format!("r{i}"), ok(json!({"a": 1})), ok(json!({"a": 1})))).collect();
    let file = scratch.file("ok.jsonl", lines.join("\n"));
    let lenient =
        scratch.file("gate.toml", "[gate]\nmin_samples = 20\nmax_mismatch_rate = 0.2\nmax_error_rate = 0.2\n");
    let strict = scratch.file("strict.toml", "[gate]\nmin_samples = 20\n");
    let ready = shadowdiff(&["replay", str(&file), "--config", str(&lenient), "--gate"]);
    assert_eq!(ready.status.code(), Some(0), "{}", stdout(&ready));
    assert!(stdout(&ready).contains("readiness: READY"));
    let not_ready = shadowdiff(&["replay", str(&file), "--config", str(&strict), "--gate"]);
    assert_eq!(not_ready.status.code(), Some(1), "20 clean samples cannot prove 0.1%");
    let without_gate = shadowdiff(&["replay", str(&file), "--config", str(&strict)]);
    assert_eq!(without_gate.status.code(), Some(0));
}

#[test]
fn bad_config_and_files_exit_2_naming_the_place() {
    let scratch = Scratch::new();
    let config = scratch.file("bad.toml", "[compare]\nignore = [\"/a\"]\nfloat_abs = \"x\"\n");
    let output = shadowdiff(&["replay", FIXTURES, "--config", str(&config)]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("bad.toml") && message.contains("line 3, column 13") && message.contains("float_abs"),
        "{message}"
    );

    let missing = shadowdiff(&["replay", "/nonexistent/evals.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing),
        "shadowdiff: cannot open /nonexistent/evals.jsonl: No such file or directory (os error 2)\n",
        "each cause once"
    );

    let usage = shadowdiff(&["replay"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn check_config_lists_every_problem() {
    let scratch = Scratch::new();
    let config =
        scratch.file("bad.toml", "[compare]\nignore = [\"x\"]\ntext = [\"/a~9\"]\n[gate]\nmax_error_rate = 7\n");
    let output = shadowdiff(&["check-config", str(&config)]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("has 3 problem(s)"), "{message}");
    assert!(message.contains("compare.ignore[0]:"), "{message}");
    assert!(message.contains("compare.text[0]:"), "{message}");
    assert!(message.contains("gate.max_error_rate:"), "{message}");

    let reference = shadowdiff(&["check-config", concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")]);
    assert!(reference.status.success(), "{}", stderr(&reference));
}

#[test]
fn check_config_lists_every_toml_error_once_each() {
    let scratch = Scratch::new();
    let config = scratch.file("types.toml", "[compare]\nfloat_abs = \"x\"\n[gate]\nmin_samples = true\nmax_lots = 1\n");
    let output = shadowdiff(&["check-config", str(&config)]);
    assert_eq!(output.status.code(), Some(2));
    let expected = format!(
        "shadowdiff: config {} has 3 TOML errors:\n\
         TOML parse error at line 2, column 13\n  |\n2 | float_abs = \"x\"\n  |             ^^^\n\
         invalid type: string \"x\", expected f64\n\
         TOML parse error at line 4, column 15\n  |\n4 | min_samples = true\n  |               ^^^^\n\
         invalid type: boolean `true`, expected u64\n\
         TOML parse error at line 5, column 1\n  |\n5 | max_lots = 1\n  | ^^^^^^^^\n\
         unknown field `max_lots`, expected one of {}\n",
        str(&config),
        "`min_samples`, `max_mismatch_rate`, `max_error_rate`, `max_lost`, `max_submit_p99_ms`, `max_outcome_p99_ratio`",
    );
    assert_eq!(stderr(&output), expected);

    let one = scratch.file("one.toml", "[gate]\nmin_samples = \"many\"\n");
    let output = shadowdiff(&["check-config", str(&one)]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "shadowdiff: config {}: TOML parse error at line 2, column 15\n  |\n2 | min_samples = \"many\"\n  |               ^^^^^^\ninvalid type: string \"many\", expected u64\n",
            str(&one)
        )
    );
}

#[test]
fn check_config_refuses_what_serve_refuses() {
    let scratch = Scratch::new();
    let config = scratch.file(
        "noshadow.toml",
        "[shadow.http]\nurl = \"\"\n[shadow.celery]\nbroker_url = \"redis://127.0.0.1:notaport/0\"\n",
    );
    let expected = format!(
        "shadowdiff: config {} cannot serve:\n  - legacy.url: is required to serve\n  - routes: at least one [[routes]] entry is required to serve\n  - shadow.http.url: is required to serve with shadow.kind = \"http\"\n",
        str(&config)
    );
    let checked = shadowdiff(&["check-config", str(&config)]);
    assert_eq!((checked.status.code(), stderr(&checked)), (Some(2), expected.clone()));
    let served = shadowdiff(&["serve", "--config", str(&config)]);
    assert_eq!((served.status.code(), stderr(&served)), (Some(2), expected));

    let record = scratch.file(
        "record.toml",
        "[legacy]\nurl = \"http://127.0.0.1:8000\"\n[[routes]]\nmethod = \"POST\"\npath = \"/evaluations\"\n\
         [shadow.http]\nurl = \"http://127.0.0.1:8001\"\n[record]\npath = \"/nonexistent/dir/rec.jsonl\"\n",
    );
    let expected = format!(
        "shadowdiff: config {} cannot serve:\n  - record.path: the folder /nonexistent/dir does not exist\n",
        str(&record)
    );
    let checked = shadowdiff(&["check-config", str(&record)]);
    assert_eq!((checked.status.code(), stderr(&checked)), (Some(2), expected.clone()));
    let served = shadowdiff(&["serve", "--config", str(&record)]);
    assert_eq!((served.status.code(), stderr(&served)), (Some(2), expected));

    let celery = scratch.file(
        "celery.toml",
        "[legacy]\nurl = \"http://127.0.0.1:8000\"\n[[routes]]\nmethod = \"POST\"\npath = \"/evaluations\"\n\
         [shadow]\nkind = \"celery\"\n[shadow.celery]\nbroker_url = \"redis://127.0.0.1:notaport/0\"\n",
    );
    let checked = shadowdiff(&["check-config", str(&celery)]);
    assert_eq!(checked.status.code(), Some(2));
    let not_redis = "\"redis://127.0.0.1:notaport/0\" is not a Redis URL like redis://[user:password@]host:port/db";
    assert_eq!(
        stderr(&checked),
        format!(
            "shadowdiff: config {} cannot serve:\n  - shadow.celery.broker_url: {not_redis}\n  - shadow.celery.result_url: {not_redis}\n",
            str(&celery)
        )
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn replay_stdin(input: &[u8], json_path: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["replay", "-", "--json", str(json_path)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let output = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    output
}

#[test]
fn gzip_fixtures_replay_exactly_like_plain_ones_by_their_magic_bytes() {
    let scratch = Scratch::new();
    let plain = std::fs::read(FIXTURES).expect("fixtures");
    let compressed = gzip(&plain);
    let (plain_output, plain_report) = replay_json(&[FIXTURES]);
    assert!(plain_output.status.success());
    // The same report whatever the file is called: only `source.files` may differ (the
    // shipped fixtures have no malformed line to name a file).
    let same = |mut report: Value| {
        report["source"]["files"] = Value::Null;
        report
    };
    assert_eq!(plain_report["malformed"], json!([]));
    let expected = same(plain_report);
    for name in ["evaluations.jsonl.gz", "recording.jsonl"] {
        let file = scratch.file(name, &compressed);
        let (output, report) = replay_json(&[str(&file)]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), stdout(&plain_output), "{name}");
        assert_eq!(same(report), expected, "{name}");
    }
    let json_path = scratch.path("stdin.json");
    let output = replay_stdin(&compressed, &json_path);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), stdout(&plain_output), "stdin");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("report")).expect("json");
    assert_eq!(same(report), expected, "stdin");
}

#[test]
fn a_file_that_is_not_json_lines_is_refused_naming_it() {
    let scratch = Scratch::new();
    let binary = scratch.file("a.out", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00");
    let output = shadowdiff(&["replay", FIXTURES, str(&binary)]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "shadowdiff: cannot replay {}: it holds binary data (a NUL byte at offset 7), not JSON Lines\n",
            str(&binary)
        )
    );
    assert_eq!(stdout(&output), "", "no report for a refused input");

    let zstd = scratch.file("evaluations.jsonl.zst", [0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x31, 0x00]);
    let output = shadowdiff(&["replay", str(&zstd)]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "shadowdiff: cannot replay {}: it is compressed with zstd; decompress it first (replay reads plain and gzip files)\n",
            str(&zstd)
        )
    );

    let array = scratch.file("evaluations.json", format!("[{}]\n", line("a", ok(json!({})), ok(json!({})))));
    let output = shadowdiff(&["replay", str(&array)]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "shadowdiff: cannot replay {}: it starts with '[', one JSON document rather than JSON Lines (one evaluation object per line)\n",
            str(&array)
        )
    );

    let json_path = scratch.path("stdin.json");
    let output = replay_stdin(&gzip(&[0u8; 64]), &json_path);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "shadowdiff: cannot replay -: it holds binary data (a NUL byte at offset 0 after gzip decompression), not JSON Lines\n"
    );
}

#[test]
fn the_summary_says_how_many_groups_it_leaves_out() {
    // Ten mismatches, each differing at a field of its own: ten groups.
    let scratch = Scratch::new();
    let lines: Vec<String> = (0..10)
        .map(|i| {
            let field = format!("f{i}");
            line(&format!("g{i}"), ok(json!({ field.clone(): 1 })), ok(json!({ field: 2 })))
        })
        .collect();
    let ten = scratch.file("ten.jsonl", lines.join("\n") + "\n");
    let output = shadowdiff(&["replay", str(&ten)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let at = text.find("  mismatch groups:").expect("groups line");
    let listed: Vec<&str> = text[at..].lines().skip(1).take_while(|l| l.starts_with("    ")).collect();
    assert_eq!(text[at..].lines().next(), Some("  mismatch groups: top 5 of 10 groups"));
    assert_eq!(listed.len(), 5, "{text}");

    let one = scratch.file("one.jsonl", line("m", ok(json!({"a": 1})), ok(json!({"a": 2}))) + "\n");
    let text = stdout(&shadowdiff(&["replay", str(&one)]));
    assert!(text.contains("  mismatch groups: 1\n         1  python     /a\n"), "{text}");
}
