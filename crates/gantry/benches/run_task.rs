//! RunTask → RUNNING for a cached image, against `docker run -d` of the same image on the
//! same engine, interleaved sample by sample so machine noise hits both alike.
//!
//! `cargo bench -p gantry --bench run_task` (GANTRY_BENCH_SAMPLES to change the count, 20
//! by default). Prints each median and the ratio; it asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use support::{docker_sample, median, run_task_sample, COMMAND};

#[tokio::main]
async fn main() {
    let samples: usize = std::env::var("GANTRY_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dev = Dev::start().await;
    let td = register(
        &dev.client,
        "bench-run-task",
        vec![busybox_container("app", &["sh", "-c", COMMAND])],
    )
    .await;
    let label = format!("gantry-bench={}", dev.cluster);
    // Warm both paths once (first container creation on a fresh engine is slower).
    run_task_sample(&dev, &td).await;
    docker_sample(&label);
    let mut gantry = Vec::new();
    let mut docker = Vec::new();
    for _ in 0..samples {
        docker.push(docker_sample(&label));
        gantry.push(run_task_sample(&dev, &td).await);
    }
    remove_containers(&label);
    let (g, d) = (median(gantry.clone()), median(docker.clone()));
    println!("RunTask -> RUNNING (cached image), {samples} samples, interleaved");
    println!(
        "  docker run -d      median {d:8.1} ms  (min {:.1}, max {:.1})",
        docker.iter().copied().fold(f64::MAX, f64::min),
        docker.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "  gantry RunTask     median {g:8.1} ms  (min {:.1}, max {:.1})",
        gantry.iter().copied().fold(f64::MAX, f64::min),
        gantry.iter().copied().fold(0.0, f64::max)
    );
    println!("  ratio gantry/docker: {:.2}x", g / d);
}
