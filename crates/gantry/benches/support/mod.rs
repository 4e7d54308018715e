//! What the benchmarks share: the container command, the `docker run -d` peer and the
//! figures they print. Figures only: a benchmark never asserts on time.

#![allow(dead_code)]

use crate::common::{sh, IMAGE};
use std::time::Instant;

/// The same process for Gantry's tasks and the peer: a shell that exits on SIGTERM, so stops
/// are prompt.
pub const COMMAND: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `docker run -d` of the busybox image until it returns (the container is running then),
/// in ms; the container is removed afterwards.
pub fn docker_sample(label: &str) -> f64 {
    let started = Instant::now();
    let id = sh(&format!(
        "docker run -d --label {label} -m 64m --cpu-shares 2 {IMAGE} sh -c \"{COMMAND}\""
    ));
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    sh(&format!("docker rm -f {id} >/dev/null"));
    elapsed
}

/// `  <what>  median … ms  (min …, max …)` and the samples in run order.
pub fn report(what: &str, samples: &[f64]) {
    println!(
        "  {what:<28} median {:9.1} ms  (min {:.1}, max {:.1})",
        median(samples.to_vec()),
        samples.iter().copied().fold(f64::MAX, f64::min),
        samples.iter().copied().fold(0.0, f64::max)
    );
    let list: Vec<String> = samples.iter().map(|s| format!("{s:.1}")).collect();
    println!("  {:<28} samples (ms): {}", "", list.join(", "));
}

/// The sample count: `GANTRY_BENCH_SAMPLES`, else `default`.
pub fn samples(default: usize) -> usize {
    std::env::var("GANTRY_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
