//! Task messages round-trip through the real kombu and Celery: generated tasks (args and
//! kwargs with unicode, 64-bit integers at their edges, floats of every size, nested
//! values) are encoded by shadowdiff and decoded, offline, by the Python code a worker
//! runs (`tests/evalstack/decode_messages.py`, in the test venv). The task's name, id,
//! args, kwargs (and their order), priority and delivery info must arrive unchanged, and
//! the `argsrepr`/`kwargsrepr` headers must be what Celery's own `saferepr` writes.
//!
//! One Python process decodes a whole batch, so the test takes a few seconds.

mod seeded;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};
use shadowdiff::celery::{encode_task, validate_envelope, EncodedTask, PriorityLayout, TaskSpec, WireError};

/// Tasks per batch: each seed's batch goes to one Python process. `SHADOWDIFF_CASES`
/// asks for more.
fn cases() -> usize {
    std::env::var("SHADOWDIFF_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300)
}

/// Any JSON value a task argument may hold.
fn any_value() -> BoxedStrategy<Value> {
    let text = prop_oneof![
        4 => ".{0,16}",
        1 => prop::sample::select(vec![
            "", "é", "日本語", "😀", "'", "\"", "\\", "line\nbreak\ttab", "\u{0}", "\u{7f}\u{80}", "\u{2028}", "\u{fffd}",
            "don't \"quote\" me", "{eval_id}", "x ".repeat(700).leak(),
        ])
        .prop_map(str::to_owned),
    ];
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0, 1, -1, i64::MIN, i64::MAX, 1 << 53, (1 << 53) + 1]).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![0.0, -0.0, 3.0, 0.1, 1e16, 1e-7, 1.5e300, 5e-324, f64::MAX, f64::MIN_POSITIVE])
            .prop_map(Value::from),
    ];
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        3 => number,
        3 => text.prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 40, 6, |inner| {
        prop_oneof![
            20 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            20 => prop::collection::btree_map(prop_oneof![3 => "[a-z_]{1,8}", 1 => ".{0,6}"], inner.clone(), 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            // The shape kombu's JSON decoder turns into a Python object (or refuses).
            1 => (prop::sample::select(vec!["bytes", "base64", "datetime", "uuid", "decimal", "set", "x"]), inner)
                .prop_map(|(kind, value)| json!({"__type__": kind, "__value__": value})),
        ]
    })
    .boxed()
}

/// Keyword argument names: unique, some not identifiers, in any order.
fn kwargs() -> BoxedStrategy<Vec<(String, Value)>> {
    let name = prop_oneof![4 => "[a-z_][a-z0-9_]{0,10}", 1 => ".{1,8}"];
    prop::collection::vec((name, any_value()), 0..6)
        .prop_map(|pairs| {
            let mut seen = std::collections::HashSet::new();
            pairs.into_iter().filter(|(name, _)| seen.insert(name.clone())).collect()
        })
        .boxed()
}

fn spec() -> BoxedStrategy<TaskSpec> {
    let task = prop_oneof![3 => Just("evaluate".to_owned()), 1 => "[a-z_.]{1,20}", 1 => ".{1,10}"];
    let queue = prop_oneof![3 => Just("shadow".to_owned()), 1 => "[a-z0-9_.-]{1,20}"];
    let id = prop::option::of(prop_oneof!["[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", ".{1,12}"]);
    (task, queue, 0u8..=9, prop::collection::vec(any_value(), 0..6), kwargs(), id)
        .prop_map(|(task, queue, priority, args, kwargs, task_id)| TaskSpec {
            priority,
            args,
            kwargs,
            task_id,
            origin: "shadowdiff@test".into(),
            ..TaskSpec::new(task, queue)
        })
        .boxed()
}

/// True when a value holds an object kombu's JSON decoder would replace: exactly the keys
/// `__type__` and `__value__`.
fn has_kombu_marker(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(has_kombu_marker),
        Value::Object(map) => {
            (map.len() == 2 && map.contains_key("__type__") && map.contains_key("__value__"))
                || map.values().any(has_kombu_marker)
        }
        _ => false,
    }
}

fn spec_has_kombu_marker(spec: &TaskSpec) -> bool {
    spec.args.iter().chain(spec.kwargs.iter().map(|(_, v)| v)).any(has_kombu_marker)
}

/// [`cases`] specs drawn from `seed`.
fn specs(seed: u64) -> Vec<TaskSpec> {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = spec();
    (0..cases()).map(|_| strategy.new_tree(&mut runner).expect("a spec").current()).collect()
}

/// What the worker's code makes of each envelope, in order.
fn decode_with_celery(envelopes: &[&str]) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test-env.sh first", python.display());
    let mut child = Command::new(&python)
        .arg(root.join("tests/evalstack/decode_messages.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input: String = envelopes.iter().map(|e| format!("{e}\n")).collect();
    // Written from a thread: the decoder answers line by line and the pipes are finite.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let decoded: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(&line.expect("decoder output")).expect("JSON")).collect();
    writer.join().expect("writer").expect("write to the decoder");
    assert!(child.wait().expect("decoder exits").success(), "decoder failed");
    assert_eq!(decoded.len(), envelopes.len(), "one answer per message");
    decoded
}

/// The differences between what was sent and what the worker decoded, if any.
fn differences(spec: &TaskSpec, encoded: &EncodedTask, decoded: &Value) -> Vec<String> {
    if let Some(error) = decoded.get("error") {
        return vec![format!("refused: {error}")];
    }
    let kwargs: Map<String, Value> = spec.kwargs.iter().cloned().collect();
    let names: Vec<&str> = spec.kwargs.iter().map(|(name, _)| name.as_str()).collect();
    let expected = [
        ("id", json!(encoded.task_id)),
        ("task", json!(spec.task)),
        ("args", Value::from(spec.args.clone())),
        ("kwargs", Value::Object(kwargs)),
        ("kwargs_order", json!(names)),
        ("priority", json!(spec.priority)),
        (
            "delivery_info",
            json!({"exchange": "", "routing_key": spec.queue, "priority": spec.priority, "redelivered": false}),
        ),
        ("argsrepr", decoded["argsrepr_celery"].clone()),
        ("kwargsrepr", decoded["kwargsrepr_celery"].clone()),
    ];
    expected
        .into_iter()
        .filter(|(field, want)| decoded.get(field) != Some(want))
        .map(|(field, want)| format!("{field}: sent {want}, worker has {}", decoded.get(field).unwrap_or(&Value::Null)))
        .collect()
}

fn round_trip(seed: u64) {
    // A value kombu would turn into a Python object must be refused, naming its place;
    // everything else must be encoded.
    let (refused, specs): (Vec<TaskSpec>, Vec<TaskSpec>) = specs(seed).into_iter().partition(spec_has_kombu_marker);
    for spec in &refused {
        match encode_task(spec, &PriorityLayout::default()) {
            Err(WireError::InvalidSpec { field: "args" | "kwargs", reason }) if reason.contains("__type__") => {}
            other => panic!("expected a refusal, got {other:?}\nspec: {spec:?}\nreplay with SHADOWDIFF_SEED={seed:#x}"),
        }
    }
    assert!(specs.len() > cases() / 2, "only {} of {} specs without a kombu marker", specs.len(), cases());
    let encoded: Vec<EncodedTask> = specs
        .iter()
        .map(|spec| {
            encode_task(spec, &PriorityLayout::default())
                .unwrap_or_else(|e| panic!("{e}\nspec: {spec:?}\nreplay with SHADOWDIFF_SEED={seed:#x}"))
        })
        .collect();
    for (spec, encoded) in specs.iter().zip(&encoded) {
        if let Err(e) = validate_envelope(encoded.envelope.as_bytes()) {
            panic!("{e}\nspec: {spec:?}\nreplay with SHADOWDIFF_SEED={seed:#x}");
        }
    }
    let envelopes: Vec<&str> = encoded.iter().map(|e| e.envelope.as_str()).collect();
    let decoded = decode_with_celery(&envelopes);
    let failures: Vec<String> = specs
        .iter()
        .zip(&encoded)
        .zip(&decoded)
        .filter_map(|((spec, encoded), decoded)| {
            let differences = differences(spec, encoded, decoded);
            (!differences.is_empty())
                .then(|| format!("{}\n  spec: {spec:?}\n  envelope: {}", differences.join("\n  "), encoded.envelope))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} messages did not arrive unchanged (replay with SHADOWDIFF_SEED={seed:#x}):\n{}",
        failures.len(),
        specs.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn generated_tasks_arrive_unchanged_at_a_celery_worker() {
    round_trip(seeded::FIXED_SEED);
    round_trip(seeded::fresh_seed());
}
