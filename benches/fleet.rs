//! Merging a fleet: 100 instance states read back from their JSON documents and summed,
//! as `shadowdiff report --fleet` and `/report?scope=fleet` do.
//!
//! Run with `cargo bench --bench fleet`. Each state holds the shipped fixtures' statistics
//! judged live over a full day (a timeline of 1,440 minute buckets, the most it keeps), so
//! the documents are as large as an instance's state gets with the default report caps.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shadowdiff::config::Config;
use shadowdiff::fixture::FixtureReader;
use shadowdiff::judge::engine::Engine;
use shadowdiff::judge::persist::StatsState;
use shadowdiff::judge::stats::Stats;
use shadowdiff::judge::timeline::Moment;

const FIXTURES: &str = include_str!("../fixtures/evaluations.jsonl");

/// One instance's statistics: every shipped evaluation, spread over a day of minutes.
fn instance_stats(engine: &Engine) -> Stats {
    let mut stats = engine.new_stats().by_minute();
    let mut reader = FixtureReader::new(FIXTURES.as_bytes());
    let mut minute = 0u64;
    while let Some(Ok(line)) = reader.next() {
        if let Ok(evaluation) = line.parsed {
            let verdict = engine.judge(&evaluation);
            stats.record_at(&evaluation, &verdict, engine.rule_names(), Moment::Unix(1_800_000_000 + minute * 60));
            minute = (minute + 1) % 1440;
        }
    }
    stats
}

fn bench(c: &mut Criterion) {
    let engine = Engine::new(Config::default());
    let document = serde_json::to_string(&instance_stats(&engine).to_state()).expect("serialises");
    let gzipped = {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(document.as_bytes()).expect("gzip");
        encoder.finish().expect("gzip").len()
    };
    eprintln!("one instance's statistics document: {} bytes, {gzipped} gzipped", document.len());
    let documents: Vec<String> = (0..100).map(|_| document.clone()).collect();
    c.bench_function("merge_100_instance_states", |b| {
        b.iter(|| {
            let mut merged = engine.new_stats().by_minute();
            for text in &documents {
                let state: StatsState = serde_json::from_str(text).expect("parses");
                let stats = Stats::from_state(engine.policy(), engine.ignore(), state).expect("same version");
                merged += &stats;
            }
            black_box(merged.totals.evaluations)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
