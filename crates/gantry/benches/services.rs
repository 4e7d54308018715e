//! ECS services on real containers, timed:
//!
//! - `rollback`: a service of 3 steady on a good revision, with the circuit breaker and
//!   rollback, is updated to a revision whose container exits at once; from UpdateService
//!   returning until the service is back on the good revision and steady (one deployment,
//!   COMPLETED, 3 running). Goal: under 20 s. Its peer, measured in the same run and
//!   interleaved: a Docker Swarm service of 3 (see below) updated with `docker service update
//!   --detach --args 'sh -c "exit 1"'`; from the command returning until `.UpdateStatus.State`
//!   is `rollback_completed` and 3 tasks of the original spec run. Swarm reports the rollback
//!   completed only after its rollback monitor window (5 s).
//! - `rolling`: a service of 10 (minimumHealthyPercent 100, maximumPercent 200) steady; from
//!   UpdateService returning until it is steady with all 10 tasks on the new revision. The
//!   figure includes the 5 s stability window. Goal: under 15 s. Its peer, interleaved: a
//!   Swarm service of 10 updated with `docker service update --detach --env-add REVISION=<n>`;
//!   until `.UpdateStatus.State` is `completed` and 10 tasks of the new spec run. Swarm's
//!   completion includes its update monitor window, kept at the default 5 s, as Gantry's
//!   figure includes its stability window.
//! - `replace`: a service of 3 steady; `docker kill` of one task's container; until a
//!   replacement task of the service is RUNNING (polled every 20 ms). Each victim has run past
//!   the stability window, as a long-lived task that crashes has. Goal: under 1.5 s. Its
//!   peer, measured in the same run and interleaved: `docker run -d` of the same image until it
//!   returns with the container running (the peer of the `run_task` benchmark).
//!
//! The Swarm peer runs the same image and command as Gantry's tasks, with the same memory
//! limit and stop grace period, on this engine as a single-node swarm: initialised with
//! `docker swarm init --advertise-addr 127.0.0.1` when inactive, and left again when the
//! benchmark ends; a swarm already active is used and left as it is. Its services are polled
//! with the `docker` CLI every 50 ms. The flags are in `SWARM_ROLLBACK` and `SWARM_ROLLING`.
//!
//! `cargo bench -p gantry --bench services [-- rollback|rolling|replace ...]`;
//! `GANTRY_BENCH_SAMPLES` sets the sample count of every part (defaults 5, 5 and 10);
//! `GANTRY_BENCH_NO_SWARM=1` skips the Swarm peer (so does a swarm that cannot be initialised,
//! with a line saying why). It prints medians and every sample; it asserts nothing about time.

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

/// Swarm's task settings closest to `container`: the same 32 MiB limit and 2 s stop timeout.
const SWARM_TASK: &str = "--limit-memory 32m --stop-grace-period 2s";
/// Swarm's counterpart of the circuit breaker with rollback: an update of all 3 tasks at once,
/// each new task started before its old one stops; a single failed task (a failure ratio above
/// 0) rolls the update back, also all at once and start-first. The 5 s monitor windows are
/// Swarm's default, and the window the issue quotes.
const SWARM_ROLLBACK: &str = "--update-failure-action rollback --update-monitor 5s \
    --update-order start-first --update-parallelism 3 --update-max-failure-ratio 0 \
    --rollback-parallelism 3 --rollback-order start-first --rollback-monitor 5s";
/// Swarm's closest to maximumPercent 200 and minimumHealthyPercent 100: all 10 replacements
/// at once, each started before its old task stops. The update monitor stays at its default,
/// 5 s: the update completes only after it, as Gantry's deployment after its stability window.
const SWARM_ROLLING: &str = "--update-order start-first --update-parallelism 10 --update-delay 0s";

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

/// (a) The Swarm peer: one rollback, in ms.
async fn swarm_rollback_sample() -> f64 {
    let svc = SwarmService::create(
        &unique("bench-swarm-rollback"),
        3,
        "good",
        &format!("{SWARM_TASK} {SWARM_ROLLBACK}"),
    );
    let original = |t: &SwarmTask| t.args == ["sh", "-c", COMMAND];
    svc.wait(None, 3, &original, ROLLOUT_POLL, LIMIT)
        .await
        .unwrap_or_else(|e| svc.fail(e));
    svc.update(r#"--args 'sh -c "exit 1"'"#);
    let started = Instant::now();
    svc.wait(
        Some("rollback_completed"),
        3,
        &original,
        ROLLOUT_POLL,
        LIMIT,
    )
    .await
    .unwrap_or_else(|e| svc.fail(e));
    ms(started.elapsed())
    // Dropping `svc` removes the service and waits for its containers to go.
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

/// (b) The Swarm peer: one rolling replacement of all ten tasks to `REVISION=<revision>`, in
/// ms. A "completed" state left from the previous update cannot end the wait early: the
/// tasks must all be of the new spec, so this update's rollout has run.
async fn swarm_rolling_sample(svc: &SwarmService, revision: usize) -> f64 {
    svc.update(&format!("--env-add REVISION={revision}"));
    let started = Instant::now();
    let want = format!("REVISION={revision}");
    let on_new = |t: &SwarmTask| t.has_env(&want);
    svc.wait(Some("completed"), 10, &on_new, ROLLOUT_POLL, LIMIT)
        .await
        .unwrap_or_else(|e| svc.fail(e));
    ms(started.elapsed())
}

/// How the samples were taken, for a part's heading.
fn interleaved(swarm: &Result<Swarm, String>) -> &'static str {
    if swarm.is_ok() {
        ", interleaved with the Swarm peer"
    } else {
        ""
    }
}

/// The Swarm peer's figures and the ratio, or why it was skipped.
fn report_swarm(swarm: &Result<Swarm, String>, gantry: &[f64], peer: &[f64]) {
    match swarm {
        Ok(_) => {
            report("swarm (peer)", peer);
            println!(
                "  ratio gantry / swarm: {:.2}x",
                median(gantry.to_vec()) / median(peer.to_vec())
            );
        }
        Err(why) => println!("  swarm (peer) skipped: {why}"),
    }
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
    // Only for the parts with a Swarm peer; left (if this run initialised it) when dropped.
    let swarm = if wanted("rollback") || wanted("rolling") {
        Swarm::start()
    } else {
        Err("not needed".into())
    };

    if wanted("rollback") {
        let n = samples(5);
        let good = register(c, "bench-svc-good", vec![container("good")]).await;
        let bad = register(
            c,
            "bench-svc-bad",
            vec![busybox_container("app", &["sh", "-c", "exit 1"])],
        )
        .await;
        let (mut times, mut peer) = (Vec::new(), Vec::new());
        for i in 0..n {
            times.push(rollback_sample(&dev, i, &good, &bad).await);
            if swarm.is_ok() {
                peer.push(swarm_rollback_sample().await);
            }
        }
        println!("(a) rollback: UpdateService to a crashing revision -> back on the previous one, steady; {n} samples{}; goal < 20000 ms", interleaved(&swarm));
        report("rollback", &times);
        report_swarm(&swarm, &times, &peer);
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
        let peer_svc = swarm.is_ok().then(|| {
            SwarmService::create(
                &unique("bench-swarm-rolling"),
                10,
                "0",
                &format!("{SWARM_TASK} {SWARM_ROLLING}"),
            )
        });
        if let Some(svc) = &peer_svc {
            svc.wait(None, 10, &|t| t.has_env("REVISION=0"), ROLLOUT_POLL, LIMIT)
                .await
                .unwrap_or_else(|e| svc.fail(e));
        }
        let (mut times, mut peer) = (Vec::new(), Vec::new());
        for i in 0..n {
            let to = if i % 2 == 0 { &b } else { &a };
            times.push(rolling_sample(&dev, name, to).await);
            if let Some(svc) = &peer_svc {
                peer.push(swarm_rolling_sample(svc, i + 1).await);
            }
        }
        delete(&dev, name).await;
        drop(peer_svc);
        println!("(b) rolling replacement of 10 tasks (100/200), UpdateService -> steady on the new revision; {n} samples{}; goal < 15000 ms", interleaved(&swarm));
        report("rolling replacement", &times);
        report_swarm(&swarm, &times, &peer);
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
