//! RunTask → RUNNING for a cached image, against `docker run -d` of the same image on the
//! same engine, interleaved sample by sample so machine noise hits both alike.
//!
//! `cargo bench -p gantry --bench run_task` (GANTRY_BENCH_SAMPLES to change the count, 20
//! by default). Prints each median and the ratio; it asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use std::time::{Duration, Instant};
use support::{docker_sample, median, COMMAND};

async fn gantry_sample(dev: &Dev, td: &str) -> f64 {
    let started = Instant::now();
    let arn = run_one(&dev.client, &dev.cluster, td).await;

    loop {
        let d = dev
            .client
            .describe_tasks()
            .cluster(&dev.cluster)
            .tasks(&arn)
            .send()
            .await
            .expect("DescribeTasks");
        match d.tasks().first().and_then(|t| t.last_status()) {
            Some("RUNNING") => break,
            Some("STOPPED") => panic!("benchmark task stopped: {d:?}"),
            _ if started.elapsed() > Duration::from_secs(60) => panic!(
                "benchmark task not RUNNING after 60 s: {d:?}\n{}",
                dev.proc.output()
            ),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    dev.client
        .stop_task()
        .cluster(&dev.cluster)
        .task(&arn)
        .send()
        .await
        .expect("StopTask");
    wait_task(
        &dev.client,
        &dev.cluster,
        &arn,
        "STOPPED",
        Duration::from_secs(60),
    )
    .await;
    elapsed
}

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
    gantry_sample(&dev, &td).await;
    docker_sample(&label);
    let mut gantry = Vec::new();
    let mut docker = Vec::new();
    for _ in 0..samples {
        docker.push(docker_sample(&label));
        gantry.push(gantry_sample(&dev, &td).await);
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
