//! What the benchmarks share: the phase length, the percentile arithmetic and wrk.

#![allow(dead_code)]

use std::time::Duration;

use tokio::process::Command;

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

/// What wrk said of a run.
pub struct WrkResult {
    pub requests_per_second: f64,
    pub p50: String,
    pub p99: String,
    pub non_2xx: u64,
}

/// Runs wrk against `url` with an optional Lua script; parses its summary.
pub async fn wrk(url: &str, connections: u32, script: Option<&str>) -> WrkResult {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{}s", phase_seconds()),
        "--latency",
    ]);
    let script_file = script.map(|script| {
        let file = tempfile::NamedTempFile::new().expect("script file");
        std::fs::write(file.path(), script).expect("write script");
        file
    });
    if let Some(file) = &script_file {
        command.arg("-s").arg(file.path());
    }
    command.arg(url);
    let output = command.output().await.unwrap_or_else(|error| {
        eprintln!("error: cannot run wrk ({error}); install it: apt-get install wrk");
        std::process::exit(1);
    });
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix(prefix)
                    .map(|rest| rest.trim().to_owned())
            })
            .unwrap_or_else(|| "?".to_owned())
    };
    let requests_per_second = find("Requests/sec:").parse().unwrap_or(0.0);
    let non_2xx = find("Non-2xx or 3xx responses:").parse().unwrap_or(0);
    WrkResult {
        requests_per_second,
        p50: find("50%"),
        p99: find("99%"),
        non_2xx,
    }
}
