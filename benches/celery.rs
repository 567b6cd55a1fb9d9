//! The pure part of a Celery submission: one evaluation encoded as a Celery protocol v2
//! task message (`encode_task`) and checked before its push (`validate_envelope`), as the
//! Celery shadow does for every mirrored evaluation before the batched `LPUSH`.
//!
//! Run with `cargo bench --bench celery`. The evaluation is a typical one (a short
//! program, the `evaluate(eval_id, code, language, shadow=True)` signature); the 64 KiB
//! case shows how the cost grows with the code's size.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use shadowdiff::celery::{encode_task, validate_envelope, Expires, PriorityLayout, TaskSpec};

fn spec(code: &str) -> TaskSpec {
    TaskSpec {
        args: vec![json!("eval-0123456789"), json!(code), json!("python")],
        kwargs: vec![("shadow".into(), json!(true))],
        expires: Some(Expires::after(
            std::time::Duration::from_secs(1_800_000_000),
            std::time::Duration::from_secs(60),
        )),
        origin: "shadowdiff1234@sidecar".into(),
        ..TaskSpec::new("evaluate", "shadow")
    }
}

fn bench(c: &mut Criterion) {
    let layout = PriorityLayout::default();
    for (name, code) in [
        ("typical", "import sys\nprint(sum(range(10)))\nprint('done', file=sys.stderr)\n".to_string()),
        ("64KiB", "x = 1  # é\n".repeat(64 * 1024 / 12)),
    ] {
        let spec = spec(&code);
        c.bench_function(&format!("encode_task {name}"), |b| b.iter(|| encode_task(black_box(&spec), &layout)));
        let task = encode_task(&spec, &layout).expect("encodes");
        c.bench_function(&format!("validate_envelope {name}"), |b| {
            b.iter(|| validate_envelope(black_box(task.envelope.as_bytes())))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
