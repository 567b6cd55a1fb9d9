//! Seeded property runs for the `prop_*` tests: a fixed seed that `cargo test` always runs,
//! and a fresh one (or `SHADOWDIFF_SEED`) printed on failure so that any failure can be
//! replayed exactly.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod damage;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// The seed every `cargo test` runs first.
pub const FIXED_SEED: u64 = 0x5ead_0f15_d1ff_0001;

/// `SHADOWDIFF_SEED` (decimal or `0x` hex) when set, else a seed from the clock.
pub fn fresh_seed() -> u64 {
    match std::env::var("SHADOWDIFF_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("SHADOWDIFF_SEED={text}: {e}"))
        }
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

/// Runs `test` on `cases` values of `strategy` drawn from `seed`; on failure, panics with
/// the smallest failing value proptest found and the seed that replays the run.
pub fn run<S: Strategy>(cases: u32, seed: u64, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        // Filters (finite floats, non-surrogates) reject a little of every run; a long run
        // adds up to more than proptest's default allowance.
        max_local_rejects: u32::MAX,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}\nreplay with SHADOWDIFF_SEED={seed:#x} ({cases} cases)");
    }
}
