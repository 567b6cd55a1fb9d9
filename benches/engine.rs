//! The pure core's speed: parse + judge + record of one evaluation, as replay does it
//! (borrowed from the line: `parse_line_ref` + `Engine::record_ref`).
//!
//! Run with `cargo bench --bench engine`. The replay throughput target (200,000
//! evaluations/s on one core) needs one typical evaluation to cost under 5 µs here.
//! `judge_record_owned_x1000` is the live proxy's share: judging and counting evaluations it
//! built as owned `Evaluation`s (no parsing).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shadowdiff::config::Config;
use shadowdiff::fixture::{parse_line, parse_line_ref};
use shadowdiff::judge::engine::Engine;

const FIXTURES: &str = include_str!("../fixtures/evaluations.jsonl");

fn typical_lines() -> Vec<&'static str> {
    FIXTURES.lines().take(1000).collect()
}

fn big_stdout_line(shadow_suffix: &str) -> String {
    let stdout: String = (0..40_000).map(|i| format!("line {i:>8} of the output\n")).collect();
    assert!(stdout.len() >= 1 << 20);
    serde_json::json!({
        "v": 1, "eval_id": "big", "language": "python",
        "legacy": {"state": "ok", "submit_ms": 1.0, "outcome_ms": 2.0, "outcome": {"status": "completed", "stdout": stdout}},
        "shadow": {"state": "ok", "submit_ms": 1.0, "outcome_ms": 2.0,
                   "outcome": {"status": "completed", "stdout": format!("{stdout}{shadow_suffix}")}},
    })
    .to_string()
}

fn bench(c: &mut Criterion) {
    let engine = Engine::new(Config::default());
    let mut group = c.benchmark_group("parse_judge_record");

    let lines = typical_lines();
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("typical_x1000", |b| {
        let mut stats = engine.new_stats();
        b.iter(|| {
            for line in &lines {
                let evaluation = parse_line_ref(line.as_bytes()).expect("valid fixture");
                black_box(engine.record_ref(&mut stats, &evaluation));
            }
        })
    });
    let owned: Vec<_> = lines.iter().map(|line| parse_line(line.as_bytes()).expect("valid fixture")).collect();
    group.bench_function("judge_record_owned_x1000", |b| {
        let mut stats = engine.new_stats();
        b.iter(|| {
            for evaluation in &owned {
                black_box(engine.record(&mut stats, evaluation));
            }
        })
    });

    for (name, suffix) in
        [("stdout_1mib_equal", ""), ("stdout_1mib_crlf_forgiven", "\r\n"), ("stdout_1mib_mismatch", "extra\n")]
    {
        let line = big_stdout_line(suffix);
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            let mut stats = engine.new_stats();
            b.iter(|| {
                let evaluation = parse_line_ref(line.as_bytes()).expect("valid");
                black_box(engine.record_ref(&mut stats, &evaluation));
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
