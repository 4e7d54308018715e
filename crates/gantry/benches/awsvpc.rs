//! awsvpc tasks on Fargate capacity, against `docker run -d --network <user network>` of the
//! same image on the same engine:
//! - one task: RunTask → RUNNING, interleaved sample by sample with `docker run -d`;
//! - a burst: 50 tasks (five concurrent RunTask calls of 10) until all are RUNNING, against 50
//!   concurrent `docker run -d` on one user network.
//!
//! `cargo bench -p gantry --bench awsvpc` (GANTRY_BENCH_SAMPLES: single samples, 15 by
//! default; GANTRY_BENCH_ROUNDS: bursts, 3 by default). Prints medians and ratios; asserts
//! nothing about time.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Compatibility, ContainerDefinition, DesiredStatus, LaunchType,
    NetworkConfiguration, NetworkMode,
};
use common::*;
use std::time::{Duration, Instant};
use support::{median, report, samples, COMMAND};

const SUBNET: &str = "subnet-0bec4a5c0b1e7f00d";

fn network() -> NetworkConfiguration {
    NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets(SUBNET)
                .build()
                .expect("awsvpc configuration"),
        )
        .build()
}

async fn run(dev: &Dev, td: &str, count: i32) -> Vec<String> {
    let r = dev
        .client
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(td)
        .count(count)
        .launch_type(LaunchType::Fargate)
        .network_configuration(network())
        .send()
        .await
        .expect("RunTask");
    assert!(r.failures().is_empty(), "failures: {:?}", r.failures());
    r.tasks()
        .iter()
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect()
}

/// Polls until every task of `arns` is RUNNING (panics on STOPPED or after 120 s).
async fn wait_running(dev: &Dev, arns: &[String]) {
    let started = Instant::now();
    loop {
        let mut running = 0;
        for chunk in arns.chunks(100) {
            let d = dev
                .client
                .describe_tasks()
                .cluster(&dev.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .expect("DescribeTasks");
            for t in d.tasks() {
                match t.last_status() {
                    Some("RUNNING") => running += 1,
                    Some("STOPPED") => panic!("benchmark task stopped: {t:?}"),
                    _ => {}
                }
            }
        }
        if running == arns.len() {
            return;
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!(
                "{running}/{} RUNNING after 120 s\n{}",
                arns.len(),
                dev.proc.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn stop_all(dev: &Dev) {
    let listed = dev
        .client
        .list_tasks()
        .cluster(&dev.cluster)
        .desired_status(DesiredStatus::Running)
        .max_results(100)
        .send()
        .await
        .expect("ListTasks");
    let arns = listed.task_arns().to_vec();
    for arn in &arns {
        dev.client
            .stop_task()
            .cluster(&dev.cluster)
            .task(arn)
            .send()
            .await
            .expect("StopTask");
    }
    for arn in &arns {
        wait_task(
            &dev.client,
            &dev.cluster,
            arn,
            "STOPPED",
            Duration::from_secs(60),
        )
        .await;
    }
}

/// `docker run -d --network <net>` of the same image and command, in ms (the container is
/// running when it returns); removed afterwards.
fn docker_sample(label: &str, net: &str) -> f64 {
    let started = Instant::now();
    let id = sh(&format!(
        "docker run -d --label {label} --network {net} -m 512m --cpu-shares 256 {IMAGE} sh -c \"{COMMAND}\""
    ));
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    sh(&format!("docker rm -f {id} >/dev/null"));
    elapsed
}

/// 50 concurrent `docker run -d` on `net`, until all have returned, in ms.
fn docker_burst(label: &str, net: &str, n: usize) -> f64 {
    let started = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|_| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker run -d --label {label} --network {net} -m 512m --cpu-shares 256 {IMAGE} sh -c \"{COMMAND}\" >/dev/null"
                ))
                .spawn()
                .expect("docker run")
        })
        .collect();
    for mut c in children {
        let status = c.wait().expect("docker run");
        assert!(status.success(), "docker run failed");
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    remove_containers(label);
    elapsed
}

#[tokio::main]
async fn main() {
    let single = samples(15);
    let rounds: usize = std::env::var("GANTRY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    // Room for 50 Fargate tasks of 256 CPU / 512 MiB on this one host.
    let port = free_port();
    let pool = format!("10.{}.{}.0/20", 100 + (port / 16) % 150, (port % 16) * 16);
    let dev = Dev::start_with(&[
        "--cpu",
        "20480",
        "--memory",
        "40000",
        "--awsvpc-cidr",
        &pool,
    ])
    .await;
    let td = dev
        .client
        .register_task_definition()
        .family("bench-awsvpc")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image(IMAGE)
                .stop_timeout(2)
                .set_command(Some(vec!["sh".into(), "-c".into(), COMMAND.into()]))
                .build(),
        )
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("ARN")
        .to_string();
    let net = format!("gantry-bench-{port}");
    let peer_range = format!(
        "10.{}.{}.0/24",
        100 + (port / 16) % 150,
        (port % 16) * 16 + 15
    );
    sh(&format!(
        "docker network create --subnet {peer_range} {net} >/dev/null"
    ));
    let label = format!("gantry-bench={}", dev.cluster);

    // One task at a time (the first of each warms its path).
    let gantry_one = || async {
        let started = Instant::now();
        let arns = run(&dev, &td, 1).await;
        wait_running(&dev, &arns).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        stop_all(&dev).await;
        ms
    };
    gantry_one().await;
    docker_sample(&label, &net);
    let mut gantry = Vec::new();
    let mut docker = Vec::new();
    for _ in 0..single {
        docker.push(docker_sample(&label, &net));
        gantry.push(gantry_one().await);
    }
    println!("awsvpc RunTask -> RUNNING (Fargate, cached image), {single} samples, interleaved");
    report("docker run -d --network", &docker);
    report("gantry RunTask FARGATE", &gantry);
    println!(
        "  ratio gantry/docker: {:.2}x",
        median(gantry.clone()) / median(docker.clone())
    );

    // Bursts of 50.
    let mut gantry = Vec::new();
    let mut docker = Vec::new();
    for _ in 0..rounds {
        docker.push(docker_burst(&label, &net, 50));
        let started = Instant::now();
        let calls: Vec<_> = (0..5).map(|_| run(&dev, &td, 10)).collect();
        let arns: Vec<String> = futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        wait_running(&dev, &arns).await;
        gantry.push(started.elapsed().as_secs_f64() * 1000.0);
        stop_all(&dev).await;
    }
    println!("50 awsvpc tasks at once (5 RunTask calls of 10 vs 50 concurrent docker run -d), {rounds} rounds");
    report("50 x docker run -d --network", &docker);
    report("gantry 5 x RunTask(10)", &gantry);
    println!(
        "  ratio gantry/docker: {:.2}x",
        median(gantry) / median(docker)
    );
    remove_containers(&label);
    let _ = sh(&format!("docker network rm {net} >/dev/null; true"));
    drop(dev);
    let _ = sh(&format!(
        "docker network rm gantry-{SUBNET} >/dev/null 2>&1; true"
    ));
}
