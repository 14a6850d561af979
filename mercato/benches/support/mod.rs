//! What the benchmarks share: the phase length and the percentile arithmetic.

#![allow(dead_code)]

use std::time::Duration;

pub mod shop;

/// Seconds of each throughput phase: `BENCH_SECONDS`, default 5, at least 1.
pub fn phase_seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(5, |seconds| seconds.max(1.0) as u64)
}

/// The `fraction` percentile (0.5, 0.99) of sorted durations.
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
