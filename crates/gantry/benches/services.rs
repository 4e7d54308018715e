//! ECS services on real containers, timed:
//!
//! - `rollback`: a service of 3 steady on a good revision, with the circuit breaker and
//!   rollback, is updated to a revision whose container exits at once; from UpdateService
//!   returning until the service is back on the good revision and steady (one deployment,
//!   COMPLETED, 3 running). Goal: under 20 s.
//! - `rolling`: a service of 10 (minimumHealthyPercent 100, maximumPercent 200) steady; from
//!   UpdateService returning until it is steady with all 10 tasks on the new revision. The
//!   figure includes the 5 s stability window. Goal: under 15 s.
//! - `replace`: a service of 3 steady; `docker kill` of one task's container; until a
//!   replacement task of the service is RUNNING (polled every 20 ms). Each victim has run past
//!   the stability window, as a long-lived task that crashes has. Goal: under 1.5 s. Its
//!   peer, measured in the same run and interleaved: `docker run -d` of the same image until it
//!   returns with the container running (the peer of the `run_task` benchmark).
//!
//! `cargo bench -p gantry --bench services [-- rollback|rolling|replace ...]`;
//! `GANTRY_BENCH_SAMPLES` sets the sample count of every part (defaults 5, 5 and 10).
//! It prints medians and every sample; it asserts nothing about time.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair,
};
use aws_sdk_ecs::Client;
use common::svc::*;
use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::*;

/// Deadline for any untimed setup wait and for any timed wait (a stuck sample panics).
const LIMIT: Duration = Duration::from_secs(180);
/// Poll interval while timing a rollout.
const ROLLOUT_POLL: Duration = Duration::from_millis(50);
/// Poll interval while timing a replacement.
const REPLACE_POLL: Duration = Duration::from_millis(20);
/// How long a task has run before it is killed: past the 5 s stability window.
const SETTLED: Duration = Duration::from_secs(6);

/// A container that runs `COMMAND` (stops within a second), tagged with `revision`.
fn container(revision: &str) -> ContainerDefinition {
    ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .memory(32)
        .stop_timeout(2)
        .environment(
            KeyValuePair::builder()
                .name("REVISION")
                .value(revision)
                .build(),
        )
        .command("sh")
        .command("-c")
        .command(COMMAND)
        .build()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fail(dev: &Dev, e: String) -> ! {
    panic!(
        "{e}\n--- gantry (last lines) ---\n{}",
        log_tail(&dev.proc.output(), 120)
    )
}

async fn create(
    c: &Client,
    cluster: &str,
    name: &str,
    td: &str,
    count: i32,
    config: DeploymentConfiguration,
) {
    c.create_service()
        .cluster(cluster)
        .service_name(name)
        .task_definition(td)
        .desired_count(count)
        .deployment_configuration(config)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateService {name}: {e:?}"));
}

async fn update(c: &Client, cluster: &str, name: &str, td: &str) {
    c.update_service()
        .cluster(cluster)
        .service(name)
        .task_definition(td)
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateService {name}: {e:?}"));
}

/// Delete with force and wait until INACTIVE, so the next sample starts on a quiet engine.
async fn delete(dev: &Dev, name: &str) {
    let (c, cl) = (&dev.client, dev.cluster.as_str());
    c.delete_service()
        .cluster(cl)
        .service(name)
        .force(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteService {name}: {e:?}"));
    wait_for(LIMIT, &format!("{name} INACTIVE"), || async move {
        let s = describe_service(c, cl, name).await;
        if s.status() == Some("INACTIVE") {
            Ok(())
        } else {
            Err(summary(&s))
        }
    })
    .await
    .unwrap_or_else(|e| fail(dev, e));
}

/// (a) One rollback, in ms.
async fn rollback_sample(dev: &Dev, i: usize, good: &str, bad: &str) -> f64 {
    let (c, cl) = (&dev.client, dev.cluster.as_str());
    let name = format!("bench-rollback-{i}");
    let config = DeploymentConfiguration::builder()
        .deployment_circuit_breaker(
            DeploymentCircuitBreaker::builder()
                .enable(true)
                .rollback(true)
                .build(),
        )
        .build();
    create(c, cl, &name, good, 3, config).await;
    wait_steady(c, cl, &name, 3, good, LIMIT)
        .await
        .unwrap_or_else(|e| fail(dev, e));
    update(c, cl, &name, bad).await;
    let started = Instant::now();
    wait_steady_every(c, cl, &name, 3, good, ROLLOUT_POLL, LIMIT)
        .await
        .unwrap_or_else(|e| fail(dev, e));
    let elapsed = ms(started.elapsed());
    delete(dev, &name).await;
    elapsed
}

/// (b) One rolling replacement of all ten tasks, in ms.
async fn rolling_sample(dev: &Dev, name: &str, to: &str) -> f64 {
    let (c, cl) = (&dev.client, dev.cluster.as_str());
    update(c, cl, name, to).await;
    let started = Instant::now();
    wait_steady_every(c, cl, name, 10, to, ROLLOUT_POLL, LIMIT)
        .await
        .unwrap_or_else(|e| fail(dev, e));
    ms(started.elapsed())
}

/// (c) One replacement after `docker kill`, in ms: from the kill being issued, and from it
/// having returned.
async fn replace_sample(dev: &Dev, name: &str, td: &str) -> (f64, f64) {
    let (c, cl) = (&dev.client, dev.cluster.as_str());
    // Untimed: every task has run past the stability window, so the victim is a settled task
    // (one killed sooner counts as a failed start and feeds the start back-off).
    let tasks = wait_for(LIMIT, "every task settled", || async move {
        let tasks = running_tasks(c, cl, name).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let settled = tasks.len() == 3
            && tasks.iter().all(|t| {
                t.last_status() == Some("RUNNING")
                    && t.started_at()
                        .is_some_and(|s| s.as_secs_f64() + SETTLED.as_secs_f64() <= now)
            });
        if settled {
            Ok(tasks)
        } else {
            Err(task_lines(&tasks))
        }
    })
    .await
    .unwrap_or_else(|e| fail(dev, e));
    let before: BTreeSet<String> = tasks
        .iter()
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect();
    let victim = first_runtime_id(&tasks[0]);
    let issued = Instant::now();
    sh(&format!("docker kill {victim}"));
    let returned = Instant::now();
    let before = &before;
    wait_for_every(
        REPLACE_POLL,
        LIMIT,
        "a replacement RUNNING",
        || async move {
            let tasks = running_tasks(c, cl, name).await;
            let fresh = tasks.iter().any(|t| {
                t.last_status() == Some("RUNNING") && !before.contains(t.task_arn().unwrap_or(""))
            });
            if fresh {
                Ok(())
            } else {
                Err(task_lines(&tasks))
            }
        },
    )
    .await
    .unwrap_or_else(|e| fail(dev, e));
    let (from_issued, from_returned) = (ms(issued.elapsed()), ms(returned.elapsed()));
    // Untimed: steady again, the killed task gone from the tasks meant to run.
    wait_steady(c, cl, name, 3, td, LIMIT)
        .await
        .unwrap_or_else(|e| fail(dev, e));
    (from_issued, from_returned)
}

#[tokio::main]
async fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |part: &str| filters.is_empty() || filters.iter().any(|f| part.contains(f.as_str()));
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();

    if wanted("rollback") {
        let n = samples(5);
        let good = register(c, "bench-svc-good", vec![container("good")]).await;
        let bad = register(
            c,
            "bench-svc-bad",
            vec![busybox_container("app", &["sh", "-c", "exit 1"])],
        )
        .await;
        let mut times = Vec::new();
        for i in 0..n {
            times.push(rollback_sample(&dev, i, &good, &bad).await);
        }
        println!("(a) rollback: UpdateService to a crashing revision -> back on the previous one, steady; {n} samples; goal < 20000 ms");
        report("rollback", &times);
    }

    if wanted("rolling") {
        let n = samples(5);
        let a = register(c, "bench-svc-rolling", vec![container("a")]).await;
        let b = register(c, "bench-svc-rolling", vec![container("b")]).await;
        let name = "bench-rolling";
        let config = DeploymentConfiguration::builder()
            .minimum_healthy_percent(100)
            .maximum_percent(200)
            .build();
        create(c, cl, name, &a, 10, config).await;
        wait_steady(c, cl, name, 10, &a, LIMIT)
            .await
            .unwrap_or_else(|e| fail(&dev, e));
        let mut times = Vec::new();
        for i in 0..n {
            let to = if i % 2 == 0 { &b } else { &a };
            times.push(rolling_sample(&dev, name, to).await);
        }
        delete(&dev, name).await;
        println!("(b) rolling replacement of 10 tasks (100/200), UpdateService -> steady on the new revision; {n} samples; goal < 15000 ms");
        report("rolling replacement", &times);
    }

    if wanted("replace") {
        let n = samples(10);
        let td = register(c, "bench-svc-replace", vec![container("replace")]).await;
        let name = "bench-replace";
        create(
            c,
            cl,
            name,
            &td,
            3,
            DeploymentConfiguration::builder().build(),
        )
        .await;
        wait_steady(c, cl, name, 3, &td, LIMIT)
            .await
            .unwrap_or_else(|e| fail(&dev, e));
        let label = format!("gantry-bench={}", dev.cluster);
        // Warm both paths once.
        replace_sample(&dev, name, &td).await;
        docker_sample(&label);
        let (mut issued, mut returned, mut docker) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            docker.push(docker_sample(&label));
            let (i, r) = replace_sample(&dev, name, &td).await;
            issued.push(i);
            returned.push(r);
        }
        remove_containers(&label);
        delete(&dev, name).await;
        println!("(c) docker kill of a service task's container -> a replacement RUNNING; {n} samples, interleaved with the peer; goal < 1500 ms");
        report("docker run -d (peer)", &docker);
        report("replacement, from kill", &issued);
        report("replacement, kill returned", &returned);
        println!(
            "  ratio replacement (from kill) / docker run -d: {:.2}x",
            median(issued.clone()) / median(docker.clone())
        );
    }
}
