//! ECS services on real containers, through the AWS SDK for Rust and the AWS CLI: replacement
//! of a killed task, rolling updates within their bounds, the deployment circuit breaker with
//! rollback (exiting containers and failing health checks), DAEMON services across agents,
//! scale to zero and delete with the CLI's waiters, bad input, tags and list filters.
//!
//! The behaviour checked is the contract in `docs/SERVICES.md`. Every test has its own
//! `gantry` and cluster, so they run in parallel; every wait polls with a deadline.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    ContainerDefinition, Deployment, DeploymentCircuitBreaker, DeploymentConfiguration,
    DeploymentRolloutState, HealthCheck, LaunchType, SchedulingStrategy, Service, ServiceField,
    Tag,
};
use aws_sdk_ecs::Client;
use common::svc::*;
use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A service's first steady state: image cached, a few starts, the 5 s stability window.
const STEADY: Duration = Duration::from_secs(90);
/// A whole rollout of four tasks, stops included.
const ROLLOUT: Duration = Duration::from_secs(120);
/// Breaker, rollback and the return to a steady state.
const ROLLBACK: Duration = Duration::from_secs(90);
/// Pause between two samples of a rollout (each sample is four API calls).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

fn sleeper() -> ContainerDefinition {
    busybox_container("app", &["sleep", "3600"])
}

fn service_arn(cluster: &str, name: &str) -> String {
    format!("arn:aws:ecs:us-east-1:000000000000:service/{cluster}/{name}")
}

/// The end of the gantry log, to append to a failure.
fn dev_log(dev: &Dev) -> String {
    format!(
        "\n--- gantry (last lines) ---\n{}",
        log_tail(&dev.proc.output(), 120)
    )
}

fn breaker(rollback: bool) -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .deployment_circuit_breaker(
            DeploymentCircuitBreaker::builder()
                .enable(true)
                .rollback(rollback)
                .build(),
        )
        .build()
}

/// Whether one event message contains every one of `parts`.
fn has_event(s: &Service, parts: &[&str]) -> bool {
    s.events().iter().any(|e| {
        let m = e.message().unwrap_or("");
        parts.iter().all(|p| m.contains(p))
    })
}

fn arns(tasks: &[aws_sdk_ecs::types::Task]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| t.task_arn().expect("taskArn").to_string())
        .collect()
}

/// The deployment id ECS gives: `ecs-svc/` and 19 digits.
fn assert_deployment_id(id: &str) {
    let digits = id.strip_prefix("ecs-svc/").unwrap_or("");
    assert!(
        digits.len() == 19 && digits.chars().all(|c| c.is_ascii_digit()),
        "deployment id {id:?} is not ecs-svc/<19 digits>"
    );
}

/// Assert that a call failed with the ECS error `code`.
fn expect_code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
    code: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:#?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: wrong error: {e:?}");
            assert!(
                e.message().is_some_and(|m| !m.is_empty()),
                "{what}: {code} without a message: {e:?}"
            );
        }
    }
}

async fn create_replica(
    c: &Client,
    cluster: &str,
    name: &str,
    td: &str,
    count: i32,
    config: Option<DeploymentConfiguration>,
) -> Service {
    c.create_service()
        .cluster(cluster)
        .service_name(name)
        .task_definition(td)
        .desired_count(count)
        .set_deployment_configuration(config)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateService {name}: {e:?}"))
        .service()
        .cloned()
        .expect("CreateService returns the service")
}

#[tokio::test]
async fn a_replica_service_replaces_a_killed_task() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("svc-web");
    let td = register(c, &family, vec![sleeper()]).await;
    let td = td.as_str();
    let name = unique("web");
    let name = name.as_str();

    let created = create_replica(c, cl, name, td, 3, None).await;
    assert_eq!(created.service_name(), Some(name));
    assert_eq!(created.service_arn(), Some(service_arn(cl, name).as_str()));
    assert_eq!(created.status(), Some("ACTIVE"));
    assert_eq!(created.desired_count(), 3);
    assert_eq!(created.task_definition(), Some(td));
    assert_eq!(
        created.scheduling_strategy(),
        Some(&SchedulingStrategy::Replica)
    );
    assert_eq!(created.deployments().len(), 1, "{}", summary(&created));
    let deployment = created.deployments()[0]
        .id()
        .expect("deployment id")
        .to_string();
    assert_deployment_id(&deployment);
    assert_eq!(created.deployments()[0].status(), Some("PRIMARY"));

    // A task of the same cluster that is not the service's: ListTasks --service-name skips it.
    let outsider = run_one(c, cl, td).await;

    let (steady, tasks) = wait_steady(c, cl, name, 3, td, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    assert_eq!(steady.deployments()[0].id(), Some(deployment.as_str()));
    assert!(
        !arns(&tasks).contains(&outsider),
        "ListTasks --service-name lists a task the service did not start"
    );
    for t in &tasks {
        assert_eq!(t.started_by(), Some(deployment.as_str()), "{t:#?}");
        assert_eq!(
            t.group(),
            Some(format!("service:{name}").as_str()),
            "{t:#?}"
        );
    }
    let steady_event = wait_for(
        Duration::from_secs(10),
        "the steady-state event",
        || async move {
            let s = describe_service(c, cl, name).await;
            if has_event(
                &s,
                &[&format!("(service {name})"), "has reached a steady state"],
            ) {
                Ok(())
            } else {
                Err(summary(&s))
            }
        },
    )
    .await;
    steady_event.unwrap_or_else(|e| panic!("{e}"));

    // Kill one task's container behind Gantry's back.
    let victim = tasks[0].clone();
    let victim_arn = victim.task_arn().expect("taskArn").to_string();
    let victim_id = task_id(&victim_arn).to_string();
    sh(&format!("docker kill {}", first_runtime_id(&victim)));

    let stopped = wait_task(c, cl, &victim_arn, "STOPPED", Duration::from_secs(60)).await;
    assert_eq!(
        stopped.stop_code().map(|s| s.as_str()),
        Some("EssentialContainerExited"),
        "{stopped:#?}"
    );
    let (after, replaced) = wait_for(STEADY, "a replacement and a steady service", || {
        let victim_arn = victim_arn.clone();
        async move {
            let s = describe_service(c, cl, name).await;
            let tasks = running_tasks(c, cl, name).await;
            if is_steady_on(&s, 3, td)
                && all_running_on(&tasks, 3, td)
                && !arns(&tasks).contains(&victim_arn)
            {
                Ok((s, tasks))
            } else {
                Err(format!("{}{}", summary(&s), task_lines(&tasks)))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    assert_eq!(
        after.deployments()[0].id(),
        Some(deployment.as_str()),
        "a replacement is not a new deployment"
    );
    let before = arns(&tasks);
    let fresh: Vec<_> = replaced
        .iter()
        .filter(|t| !before.contains(t.task_arn().unwrap_or("")))
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "one replacement:\n{}",
        task_lines(&replaced)
    );
    for t in &replaced {
        assert_eq!(t.started_by(), Some(deployment.as_str()), "{t:#?}");
        assert_eq!(
            t.group(),
            Some(format!("service:{name}").as_str()),
            "{t:#?}"
        );
    }
    let victim_now = describe_task_arns(c, cl, std::slice::from_ref(&victim_arn)).await;
    assert_eq!(victim_now[0].last_status(), Some("STOPPED"));

    let event = wait_for(
        Duration::from_secs(10),
        "the stopped-unexpectedly event",
        || {
            let victim_id = victim_id.clone();
            async move {
                let s = describe_service(c, cl, name).await;
                if has_event(&s, &["stopped unexpectedly", &victim_id]) {
                    Ok(())
                } else {
                    Err(summary(&s))
                }
            }
        },
    )
    .await;
    event.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dev.containers()
            .iter()
            .filter(|id| inspect(id)["State"]["Running"] == true)
            .count(),
        4,
        "three service containers and the outsider run"
    );
}

/// Roll four tasks from revision 1 to 2 with `min`/`max` percent, sampling the tasks all along:
/// never more than floor(4 × max / 100) tasks short of STOPPED, never fewer than
/// ceil(4 × min / 100) RUNNING and meant to run.
async fn rolling_update_within(min: i32, max: i32) {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("svc-roll");
    let v1 = register(c, &family, vec![sleeper()]).await;
    let name = unique("roll");
    let config = DeploymentConfiguration::builder()
        .minimum_healthy_percent(min)
        .maximum_percent(max)
        .build();
    let created = create_replica(c, cl, &name, &v1, 4, Some(config)).await;
    let echoed = created.deployment_configuration();
    assert_eq!(echoed.and_then(|d| d.minimum_healthy_percent()), Some(min));
    assert_eq!(echoed.and_then(|d| d.maximum_percent()), Some(max));
    let (_, old) = wait_steady(c, cl, &name, 4, &v1, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let old = arns(&old);

    let v2 = register(
        c,
        &family,
        vec![busybox_container("app", &["sleep", "3601"])],
    )
    .await;
    assert!(v2.ends_with(&format!("/{family}:2")), "{v2}");
    let updated = c
        .update_service()
        .cluster(cl)
        .service(&name)
        .task_definition(&v2)
        .send()
        .await
        .expect("UpdateService")
        .service()
        .cloned()
        .expect("service");
    let primary = updated.deployments().first().expect("a deployment");
    assert_eq!(primary.status(), Some("PRIMARY"), "{}", summary(&updated));
    assert_eq!(
        primary.task_definition(),
        Some(v2.as_str()),
        "{}",
        summary(&updated)
    );

    let ceiling = (4 * max / 100) as usize;
    let floor = ((4 * min + 99) / 100) as usize;
    let deadline = Instant::now() + ROLLOUT;
    let (mut samples, mut peak, mut lowest) = (0, 0, usize::MAX);
    loop {
        let tasks = service_tasks(c, cl, &name).await;
        samples += 1;
        let alive = tasks
            .iter()
            .filter(|t| t.last_status() != Some("STOPPED"))
            .count();
        let healthy = tasks
            .iter()
            .filter(|t| t.last_status() == Some("RUNNING") && t.desired_status() == Some("RUNNING"))
            .count();
        assert!(
            alive <= ceiling,
            "sample {samples}: {alive} tasks are not STOPPED, more than floor(4 × {max} / 100) = {ceiling}:\n{}",
            task_lines(&tasks)
        );
        assert!(
            healthy >= floor,
            "sample {samples}: {healthy} tasks are RUNNING and meant to run, fewer than ceil(4 × {min} / 100) = {floor}:\n{}",
            task_lines(&tasks)
        );
        peak = peak.max(alive);
        lowest = lowest.min(healthy);
        let s = describe_service(c, cl, &name).await;
        if is_steady_on(&s, 4, &v2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish in {ROLLOUT:?}:\n{}{}{}",
            summary(&s),
            task_lines(&tasks),
            dev_log(&dev)
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    eprintln!(
        "min {min} / max {max}: {samples} samples, at most {peak} tasks alive (bound {ceiling}), at least {lowest} healthy (bound {floor})"
    );
    assert!(
        samples >= 5,
        "the rollout was over after {samples} samples: it cannot have waited the stability window"
    );

    // Steady on revision 2: its four tasks run, nothing of revision 1 is left running.
    let s = describe_service(c, cl, &name).await;
    assert!(is_steady_on(&s, 4, &v2), "{}", summary(&s));
    assert_eq!(s.task_definition(), Some(v2.as_str()), "{}", summary(&s));
    assert_eq!(
        s.deployments()[0].status(),
        Some("PRIMARY"),
        "{}",
        summary(&s)
    );
    let meant = running_tasks(c, cl, &name).await;
    assert!(
        all_running_on(&meant, 4, &v2),
        "steady, yet the tasks meant to run are:\n{}",
        task_lines(&meant)
    );
    let all = service_tasks(c, cl, &name).await;
    for t in &all {
        if t.last_status() == Some("RUNNING") {
            assert_eq!(
                t.task_definition_arn(),
                Some(v2.as_str()),
                "a RUNNING task of the old revision after the rollout:\n{}",
                task_lines(&all)
            );
        }
        if old.contains(t.task_arn().unwrap_or("")) {
            assert_eq!(t.last_status(), Some("STOPPED"), "{}", task_lines(&all));
        }
    }
    let deployment = s.deployments()[0].id().unwrap_or("").to_string();
    for t in &meant {
        assert_eq!(t.started_by(), Some(deployment.as_str()), "{t:#?}");
    }
}

#[tokio::test]
async fn a_rolling_update_50_200_keeps_within_its_bounds() {
    rolling_update_within(50, 200).await;
}

#[tokio::test]
async fn a_rolling_update_100_150_keeps_within_its_bounds() {
    rolling_update_within(100, 150).await;
}

/// A service of three steady on a good revision, with the breaker and rollback; update it to
/// `bad` and expect the rollback to the good revision. `reason` is the end of the failed
/// deployment's `rolloutStateReason`; `event` an extra event every run must produce.
async fn the_breaker_rolls_back(bad: ContainerDefinition, reason: &str, event: Option<&str>) {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("svc-cb");
    let v1 = register(c, &family, vec![sleeper()]).await;
    let name = unique("cb");
    create_replica(c, cl, &name, &v1, 3, Some(breaker(true))).await;
    let (s1, good) = wait_steady(c, cl, &name, 3, &v1, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let d1 = s1.deployments()[0].id().expect("id").to_string();
    let good = arns(&good);
    let cb = s1
        .deployment_configuration()
        .and_then(|d| d.deployment_circuit_breaker())
        .expect("the breaker is echoed");
    assert!(cb.enable() && cb.rollback(), "{cb:?}");

    let v2 = register(c, &family, vec![bad]).await;
    let updated = c
        .update_service()
        .cluster(cl)
        .service(&name)
        .task_definition(&v2)
        .send()
        .await
        .expect("UpdateService")
        .service()
        .cloned()
        .expect("service");
    let d2 = updated
        .deployments()
        .iter()
        .find(|d| d.task_definition() == Some(v2.as_str()))
        .and_then(|d| d.id())
        .unwrap_or_else(|| panic!("no deployment of revision 2: {}", summary(&updated)))
        .to_string();
    assert_ne!(d1, d2);

    // Poll until the service is back on revision 1, remembering a FAILED deployment if one is
    // seen on the way (it may collapse between two polls).
    let deadline = Instant::now() + ROLLBACK;
    let mut failed: Option<Deployment> = None;
    let (back, running) = loop {
        let s = describe_service(c, cl, &name).await;
        if let Some(d) = s
            .deployments()
            .iter()
            .find(|d| d.rollout_state() == Some(&DeploymentRolloutState::Failed))
        {
            failed.get_or_insert_with(|| d.clone());
        }
        let tasks = running_tasks(c, cl, &name).await;
        if is_steady_on(&s, 3, &v1)
            && all_running_on(&tasks, 3, &v1)
            && has_event(&s, &["deployment failed"])
            && has_event(&s, &["rolling back"])
        {
            break (s, tasks);
        }
        assert!(
            Instant::now() < deadline,
            "no rollback to revision 1 within {ROLLBACK:?} (FAILED deployment seen: {}):\n{}{}{}",
            failed.is_some(),
            summary(&s),
            task_lines(&tasks),
            dev_log(&dev)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("FAILED deployment seen while polling: {failed:?}");
    if let Some(f) = &failed {
        assert_eq!(f.id(), Some(d2.as_str()), "{f:?}");
        assert_eq!(f.task_definition(), Some(v2.as_str()), "{f:?}");
        let why = f.rollout_state_reason().unwrap_or("");
        assert!(
            why.contains("circuit breaker") && why.contains(reason),
            "rolloutStateReason {why:?} should name the circuit breaker and {reason:?}"
        );
    }
    assert!(
        has_event(&back, &["deployment failed", &d2]),
        "the failure event names the failed deployment {d2}:\n{}",
        summary(&back)
    );
    assert!(
        has_event(&back, &["rolling back", &d1]),
        "the rollback event names the deployment rolled back to {d1}:\n{}",
        summary(&back)
    );
    if let Some(e) = event {
        assert!(
            has_event(&back, &[e]),
            "no event with {e:?}:\n{}",
            summary(&back)
        );
    }
    // The last COMPLETED deployment still held its tasks: it is PRIMARY again, and with
    // minimumHealthyPercent 100 none of its healthy tasks may have been stopped.
    assert_eq!(
        back.deployments()[0].id(),
        Some(d1.as_str()),
        "{}",
        summary(&back)
    );
    assert_eq!(
        arns(&running),
        good,
        "the original tasks kept running:\n{}",
        task_lines(&running)
    );
    // Every task of revision 2 is over; at least the threshold (3) of them failed.
    let all = service_tasks(c, cl, &name).await;
    let bad_tasks: Vec<_> = all
        .iter()
        .filter(|t| t.task_definition_arn() == Some(v2.as_str()))
        .collect();
    assert!(bad_tasks.len() >= 3, "{}", task_lines(&all));
    for t in &bad_tasks {
        assert_eq!(t.last_status(), Some("STOPPED"), "{}", task_lines(&all));
        assert_eq!(t.started_by(), Some(d2.as_str()), "{t:#?}");
    }

    // The deployment history: the failed deployment, rolled back, with its breaker TRIGGERED.
    let listed = c
        .list_service_deployments()
        .cluster(cl)
        .service(&name)
        .send()
        .await
        .expect("ListServiceDeployments");
    let rolled: Vec<_> = listed
        .service_deployments()
        .iter()
        .filter(|b| {
            matches!(
                b.status().map(|s| s.as_str()),
                Some("ROLLBACK_SUCCESSFUL") | Some("ROLLBACK_IN_PROGRESS")
            )
        })
        .collect();
    assert_eq!(
        rolled.len(),
        1,
        "one rolled-back deployment in {:#?}",
        listed.service_deployments()
    );
    let sd_arn = rolled[0]
        .service_deployment_arn()
        .expect("serviceDeploymentArn")
        .to_string();
    assert_eq!(
        rolled[0].service_arn(),
        Some(service_arn(cl, &name).as_str())
    );
    let described = c
        .describe_service_deployments()
        .service_deployment_arns(&sd_arn)
        .send()
        .await
        .expect("DescribeServiceDeployments");
    assert!(
        described.failures().is_empty(),
        "{:?}",
        described.failures()
    );
    let sd = described
        .service_deployments()
        .first()
        .unwrap_or_else(|| panic!("DescribeServiceDeployments {sd_arn}: nothing"));
    let status = sd.status().map(|s| s.as_str());
    assert!(
        matches!(
            status,
            Some("ROLLBACK_SUCCESSFUL") | Some("ROLLBACK_IN_PROGRESS")
        ),
        "{sd:#?}"
    );
    let tripped = sd
        .deployment_circuit_breaker()
        .unwrap_or_else(|| panic!("no deploymentCircuitBreaker: {sd:#?}"));
    assert_eq!(
        tripped.status().map(|s| s.as_str()),
        Some("TRIGGERED"),
        "{sd:#?}"
    );
    assert_eq!(
        tripped.threshold(),
        3,
        "max(3, min(200, ceil(3 × 50 / 100)))"
    );
    assert!(tripped.failure_count() >= 3, "{sd:#?}");
    // Its target is the revision that failed; `rollback` names the revision rolled back to.
    let revision_of = |arn: String| async move {
        let revisions = c
            .describe_service_revisions()
            .service_revision_arns(&arn)
            .send()
            .await
            .expect("DescribeServiceRevisions");
        assert!(revisions.failures().is_empty(), "{revisions:#?}");
        revisions
            .service_revisions()
            .first()
            .and_then(|r| r.task_definition())
            .unwrap_or_else(|| panic!("service revision {arn} without a task definition"))
            .to_string()
    };
    let target = sd
        .target_service_revision()
        .and_then(|r| r.arn())
        .unwrap_or_else(|| panic!("no targetServiceRevision: {sd:#?}"))
        .to_string();
    assert_eq!(
        revision_of(target).await,
        v2,
        "targetServiceRevision of the failed deployment is the revision it deployed: {sd:#?}"
    );
    let back_to = sd
        .rollback()
        .and_then(|r| r.service_revision_arn())
        .unwrap_or_else(|| panic!("no rollback.serviceRevisionArn: {sd:#?}"))
        .to_string();
    assert_eq!(revision_of(back_to).await, v1, "rolled back to: {sd:#?}");
}

#[tokio::test]
async fn the_circuit_breaker_rolls_back_a_revision_whose_container_exits() {
    the_breaker_rolls_back(
        busybox_container("app", &["sh", "-c", "exit 1"]),
        "tasks failed to start",
        None,
    )
    .await;
}

#[tokio::test]
async fn the_circuit_breaker_rolls_back_a_revision_that_fails_health_checks() {
    let unhealthy = ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .memory(64)
        .stop_timeout(2)
        .command("sleep")
        .command("3600")
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("exit 1")
                .interval(5)
                .timeout(2)
                .retries(1)
                .start_period(0)
                .build()
                .expect("health check"),
        )
        .build();
    the_breaker_rolls_back(
        unhealthy,
        "health checks",
        Some("failed container health checks"),
    )
    .await;
}

/// Exactly one RUNNING task of the service on each of the cluster's `n` instances, and the
/// service reports `n` desired and running.
async fn one_task_per_instance(split: &Split, name: &str, n: usize) -> Result<(), String> {
    let c = &split.client;
    let cl = split.cluster.as_str();
    wait_for(
        Duration::from_secs(60),
        &format!("one task of {name} on each of {n} instances"),
        || async move {
            let instances: BTreeSet<String> = c
                .list_container_instances()
                .cluster(cl)
                .send()
                .await
                .expect("ListContainerInstances")
                .container_instance_arns()
                .iter()
                .cloned()
                .collect();
            let s = describe_service(c, cl, name).await;
            let tasks = running_tasks(c, cl, name).await;
            let on: Vec<String> = tasks
                .iter()
                .map(|t| t.container_instance_arn().unwrap_or("").to_string())
                .collect();
            let distinct: BTreeSet<String> = on.iter().cloned().collect();
            let ok = instances.len() == n
                && tasks.len() == n
                && tasks.iter().all(|t| t.last_status() == Some("RUNNING"))
                && on.len() == distinct.len()
                && distinct == instances
                && s.desired_count() == n as i32
                && s.running_count() == n as i32;
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{} instances: {instances:?}\ntasks on: {on:?}\n{}{}",
                    instances.len(),
                    summary(&s),
                    task_lines(&tasks)
                ))
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_daemon_service_runs_one_task_on_every_instance_including_new_ones() {
    let mut split = Split::start(3).await;
    let c = split.client.clone();
    let cl = split.cluster.clone();
    let td = register(&c, &unique("svc-daemon"), vec![sleeper()]).await;
    let name = unique("daemon");
    let created = c
        .create_service()
        .cluster(&cl)
        .service_name(&name)
        .task_definition(&td)
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .expect("CreateService DAEMON")
        .service()
        .cloned()
        .expect("service");
    assert_eq!(
        created.scheduling_strategy(),
        Some(&SchedulingStrategy::Daemon)
    );
    one_task_per_instance(&split, &name, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    let s = describe_service(&c, &cl, &name).await;
    let deployment = s.deployments()[0].id().unwrap_or("").to_string();
    for t in running_tasks(&c, &cl, &name).await {
        assert_eq!(t.group(), Some(format!("service:{name}").as_str()));
        assert_eq!(t.started_by(), Some(deployment.as_str()));
    }

    // A fourth agent joins: it gets its task.
    split.add_agent(3).await;
    one_task_per_instance(&split, &name, 4)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    assert_eq!(describe_service(&c, &cl, &name).await.desired_count(), 4);
    assert_eq!(split.containers().len(), 4, "one container per instance");
}

#[tokio::test]
async fn scale_to_zero_and_delete_with_the_cli_waiters() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let td = register(c, &unique("svc-cli"), vec![sleeper()]).await;
    let name = unique("cli");
    let name = name.as_str();

    let created = aws
        .ok(&[
            "ecs",
            "create-service",
            "--cluster",
            cl,
            "--service-name",
            name,
            "--task-definition",
            &td,
            "--desired-count",
            "2",
        ])
        .await;
    assert_eq!(created["service"]["status"], "ACTIVE", "{created:#}");
    assert_eq!(created["service"]["serviceArn"], service_arn(cl, name));
    let waited = aws
        .run(&[
            "ecs",
            "wait",
            "services-stable",
            "--cluster",
            cl,
            "--services",
            name,
        ])
        .await;
    assert!(
        waited.status.success(),
        "services-stable failed after {:?}: {}\n{}{}",
        waited.elapsed,
        waited.stderr,
        summary(&describe_service(c, cl, name).await),
        dev_log(&dev)
    );
    // The waiter looks only at deployments[] and the counts; rolloutState turns COMPLETED
    // once the stability window has passed.
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.deployments().len(), 1, "{}", summary(&s));
    assert_eq!(s.running_count(), 2, "{}", summary(&s));
    let (s, _) = wait_steady(c, cl, name, 2, &td, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let deployment = s.deployments()[0].id().unwrap_or("").to_string();

    // Scale to zero: the same deployment, no task left.
    let scaled = c
        .update_service()
        .cluster(cl)
        .service(name)
        .desired_count(0)
        .send()
        .await
        .expect("UpdateService desiredCount 0")
        .service()
        .cloned()
        .expect("service");
    assert_eq!(scaled.desired_count(), 0);
    assert_eq!(
        scaled
            .deployments()
            .iter()
            .filter_map(|d| d.id())
            .collect::<Vec<_>>(),
        vec![deployment.as_str()],
        "changing only desiredCount scales the current deployment"
    );
    wait_for(Duration::from_secs(60), "no task left", || async move {
        let s = describe_service(c, cl, name).await;
        let meant = running_tasks(c, cl, name).await;
        let all = service_tasks(c, cl, name).await;
        if is_steady(&s, 0)
            && meant.is_empty()
            && all.len() == 2
            && all.iter().all(|t| t.last_status() == Some("STOPPED"))
        {
            Ok(())
        } else {
            Err(format!("{}{}", summary(&s), task_lines(&all)))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));

    // Delete: DRAINING, then INACTIVE, which the CLI's waiter sees.
    let deleted = c
        .delete_service()
        .cluster(cl)
        .service(name)
        .send()
        .await
        .expect("DeleteService of a service scaled to 0")
        .service()
        .cloned()
        .expect("service");
    assert_eq!(deleted.status(), Some("DRAINING"), "{}", summary(&deleted));
    let waited = aws
        .run(&[
            "ecs",
            "wait",
            "services-inactive",
            "--cluster",
            cl,
            "--services",
            name,
        ])
        .await;
    assert!(
        waited.status.success(),
        "services-inactive failed after {:?}: {}\n{}",
        waited.elapsed,
        waited.stderr,
        summary(&describe_service(c, cl, name).await)
    );
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.status(), Some("INACTIVE"), "{}", summary(&s));
    let d = aws
        .ok(&[
            "ecs",
            "describe-services",
            "--cluster",
            cl,
            "--services",
            name,
        ])
        .await;
    assert_eq!(d["services"][0]["status"], "INACTIVE", "{d:#}");
    assert_eq!(
        d["failures"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{d:#}"
    );

    // services-stable's failure acceptor: an INACTIVE service ends the wait at once.
    let waited = aws
        .run(&[
            "ecs",
            "wait",
            "services-stable",
            "--cluster",
            cl,
            "--services",
            name,
        ])
        .await;
    assert!(
        !waited.status.success(),
        "services-stable succeeded on an INACTIVE service: {}",
        waited.stdout
    );
    assert!(
        waited.elapsed < Duration::from_secs(10),
        "the failure acceptor should end the wait on the first poll, took {:?}",
        waited.elapsed
    );

    // The name is free again at once.
    let again = create_replica(c, cl, name, &td, 0, None).await;
    assert_eq!(again.status(), Some("ACTIVE"));
    assert_eq!(describe_service(c, cl, name).await.status(), Some("ACTIVE"));
}

#[tokio::test]
async fn bad_input_is_refused_with_ecs_errors_and_changes_nothing() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("svc-bad");
    let v1 = register(c, &family, vec![sleeper()]).await;
    let gone = register(c, &family, vec![sleeper()]).await;
    c.deregister_task_definition()
        .task_definition(&gone)
        .send()
        .await
        .expect("DeregisterTaskDefinition");
    let unknown = format!("{family}-nope:1");
    let name = unique("web");
    create_replica(c, cl, &name, &v1, 1, None).await;
    let before = describe_service(c, cl, &name).await;
    let stray = unique("stray");

    // Task definitions that cannot run.
    expect_code(
        c.create_service()
            .cluster(cl)
            .service_name(&stray)
            .task_definition(&unknown)
            .desired_count(1)
            .send()
            .await,
        "ClientException",
        "CreateService with an unknown task definition",
    );
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(&name)
            .task_definition(&unknown)
            .send()
            .await,
        "ClientException",
        "UpdateService to an unknown task definition",
    );
    expect_code(
        c.create_service()
            .cluster(cl)
            .service_name(&stray)
            .task_definition(&gone)
            .desired_count(1)
            .send()
            .await,
        "ClientException",
        "CreateService with an INACTIVE revision",
    );
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(&name)
            .task_definition(&gone)
            .send()
            .await,
        "ClientException",
        "UpdateService to an INACTIVE revision",
    );
    // Counts and percentages out of range.
    expect_code(
        c.create_service()
            .cluster(cl)
            .service_name(&stray)
            .task_definition(&v1)
            .desired_count(-1)
            .send()
            .await,
        "InvalidParameterException",
        "CreateService with desiredCount -1",
    );
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(&name)
            .desired_count(-1)
            .send()
            .await,
        "InvalidParameterException",
        "UpdateService with desiredCount -1",
    );
    let max_90 = DeploymentConfiguration::builder()
        .maximum_percent(90)
        .build();
    expect_code(
        c.create_service()
            .cluster(cl)
            .service_name(&stray)
            .task_definition(&v1)
            .desired_count(1)
            .deployment_configuration(max_90.clone())
            .send()
            .await,
        "InvalidParameterException",
        "CreateService REPLICA with maximumPercent 90",
    );
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(&name)
            .deployment_configuration(max_90)
            .send()
            .await,
        "InvalidParameterException",
        "UpdateService REPLICA with maximumPercent 90",
    );
    let min_150 = DeploymentConfiguration::builder()
        .minimum_healthy_percent(150)
        .build();
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(&name)
            .deployment_configuration(min_150.clone())
            .send()
            .await,
        "InvalidParameterException",
        "UpdateService with minimumHealthyPercent 150",
    );
    expect_code(
        c.create_service()
            .cluster(cl)
            .service_name(&stray)
            .task_definition(&v1)
            .desired_count(1)
            .deployment_configuration(min_150)
            .send()
            .await,
        "InvalidParameterException",
        "CreateService with minimumHealthyPercent 150",
    );
    expect_code(
        c.create_service()
            .cluster(cl)
            .service_name(&stray)
            .task_definition(&v1)
            .scheduling_strategy(SchedulingStrategy::Daemon)
            .desired_count(2)
            .send()
            .await,
        "InvalidParameterException",
        "CreateService DAEMON with a desiredCount",
    );
    // Deleting a service that still wants tasks needs force.
    expect_code(
        c.delete_service().cluster(cl).service(&name).send().await,
        "InvalidParameterException",
        "DeleteService of a service with desiredCount 1 without force",
    );
    // Services that do not exist.
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(unique("nope"))
            .desired_count(1)
            .send()
            .await,
        "ServiceNotFoundException",
        "UpdateService of an unknown service",
    );
    let missing = unique("nope");
    let d = c
        .describe_services()
        .cluster(cl)
        .services(&missing)
        .send()
        .await
        .expect("DescribeServices of an unknown name answers with failures");
    assert!(d.services().is_empty(), "{d:#?}");
    assert_eq!(d.failures().len(), 1, "{d:#?}");
    assert_eq!(d.failures()[0].reason(), Some("MISSING"), "{d:#?}");
    assert_eq!(
        d.failures()[0].arn(),
        Some(service_arn(cl, &missing).as_str()),
        "{d:#?}"
    );

    // Nothing changed and nothing was created.
    let after = describe_service(c, cl, &name).await;
    assert_eq!(after.status(), Some("ACTIVE"));
    assert_eq!(after.desired_count(), before.desired_count());
    assert_eq!(after.task_definition(), Some(v1.as_str()));
    assert_eq!(
        after.deployment_configuration(),
        before.deployment_configuration()
    );
    let ids = |s: &Service| -> Vec<String> {
        s.deployments()
            .iter()
            .filter_map(|d| d.id().map(str::to_string))
            .collect()
    };
    assert_eq!(ids(&after), ids(&before), "{}", summary(&after));
    let listed = c
        .list_services()
        .cluster(cl)
        .send()
        .await
        .expect("ListServices");
    assert_eq!(
        listed.service_arns(),
        [service_arn(cl, &name)],
        "a refused CreateService created nothing"
    );

    // UpdateService on a DRAINING service. `sleep` ignores SIGTERM, so with a 30 s stop
    // timeout the service stays DRAINING well past the calls below.
    let slow = register(
        c,
        &unique("svc-slow"),
        vec![ContainerDefinition::builder()
            .name("app")
            .image(IMAGE)
            .memory(32)
            // ECS's longest: the service must still be DRAINING when described, however
            // slowly a loaded machine gets to that call.
            .stop_timeout(120)
            .command("sleep")
            .command("3600")
            .build()],
    )
    .await;
    let draining = unique("drain");
    create_replica(c, cl, &draining, &slow, 1, None).await;
    wait_steady(c, cl, &draining, 1, &slow, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let deleted = c
        .delete_service()
        .cluster(cl)
        .service(&draining)
        .force(true)
        .send()
        .await
        .expect("DeleteService force")
        .service()
        .cloned()
        .expect("service");
    assert_eq!(deleted.status(), Some("DRAINING"), "{}", summary(&deleted));
    let s = describe_service(c, cl, &draining).await;
    assert_eq!(s.status(), Some("DRAINING"), "{}", summary(&s));
    expect_code(
        c.update_service()
            .cluster(cl)
            .service(&draining)
            .desired_count(2)
            .send()
            .await,
        "ServiceNotActiveException",
        "UpdateService of a DRAINING service",
    );
    let s = describe_service(c, cl, &draining).await;
    assert_ne!(s.status(), Some("ACTIVE"), "{}", summary(&s));
    assert_eq!(
        s.desired_count(),
        deleted.desired_count(),
        "{}",
        summary(&s)
    );
}

#[tokio::test]
async fn tags_are_described_on_request_and_list_services_filters() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let td = register(c, &unique("svc-tags"), vec![sleeper()]).await;
    let tagged = unique("tagged");
    let daemon = unique("daemon");
    c.create_service()
        .cluster(cl)
        .service_name(&tagged)
        .task_definition(&td)
        .desired_count(1)
        .launch_type(LaunchType::Ec2)
        .tags(Tag::builder().key("team").value("gantry").build())
        .tags(Tag::builder().key("env").value("test").build())
        .send()
        .await
        .expect("CreateService with tags");
    c.create_service()
        .cluster(cl)
        .service_name(&daemon)
        .task_definition(&td)
        .launch_type(LaunchType::Ec2)
        .scheduling_strategy(SchedulingStrategy::Daemon)
        .send()
        .await
        .expect("CreateService DAEMON");

    let with = c
        .describe_services()
        .cluster(cl)
        .services(&tagged)
        .services(&daemon)
        .include(ServiceField::Tags)
        .send()
        .await
        .expect("DescribeServices include TAGS");
    assert_eq!(with.services().len(), 2, "{with:#?}");
    let by_name = |name: &str| -> Service {
        with.services()
            .iter()
            .find(|s| s.service_name() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not described: {with:#?}"))
    };
    let tags: BTreeSet<(String, String)> = by_name(&tagged)
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or("").to_string(),
                t.value().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from([
            ("env".to_string(), "test".to_string()),
            ("team".to_string(), "gantry".to_string()),
        ])
    );
    assert!(by_name(&daemon).tags().is_empty(), "{with:#?}");
    let without = describe_service(c, cl, &tagged).await;
    assert!(
        without.tags().is_empty(),
        "tags only when include asks for TAGS: {:?}",
        without.tags()
    );

    let list = |strategy: Option<SchedulingStrategy>, launch: Option<LaunchType>| async move {
        let mut arns: Vec<String> = c
            .list_services()
            .cluster(cl)
            .set_scheduling_strategy(strategy)
            .set_launch_type(launch)
            .send()
            .await
            .expect("ListServices")
            .service_arns()
            .to_vec();
        arns.sort();
        arns
    };
    let mut both = vec![service_arn(cl, &tagged), service_arn(cl, &daemon)];
    both.sort();
    assert_eq!(list(None, None).await, both);
    assert_eq!(
        list(Some(SchedulingStrategy::Replica), None).await,
        vec![service_arn(cl, &tagged)]
    );
    assert_eq!(
        list(Some(SchedulingStrategy::Daemon), None).await,
        vec![service_arn(cl, &daemon)]
    );
    assert_eq!(list(None, Some(LaunchType::Ec2)).await, both);
    assert_eq!(
        list(None, Some(LaunchType::Fargate)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(Some(SchedulingStrategy::Daemon), Some(LaunchType::Ec2)).await,
        vec![service_arn(cl, &daemon)]
    );
}

#[tokio::test]
async fn force_new_deployment_replaces_every_task_on_the_same_revision() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let td = register(c, &unique("svc-force"), vec![sleeper()]).await;
    create_replica(c, &dev.cluster, "web", &td, 2, None).await;
    let (_, before) = wait_steady(c, &dev.cluster, "web", 2, &td, STEADY)
        .await
        .unwrap_or_else(|e| panic!("not steady: {e}{}", dev_log(&dev)));
    let updated = c
        .update_service()
        .cluster(&dev.cluster)
        .service("web")
        .force_new_deployment(true)
        .send()
        .await
        .expect("UpdateService forceNewDeployment")
        .service()
        .cloned()
        .expect("service");
    let new_id = updated.deployments()[0].id().expect("id").to_string();
    assert_eq!(updated.deployments().len(), 2, "{}", summary(&updated));
    let (s, after) = wait_steady(c, &dev.cluster, "web", 2, &td, ROLLOUT)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "not steady after the forced deployment: {e}{}",
                dev_log(&dev)
            )
        });
    assert_eq!(s.deployments()[0].id(), Some(new_id.as_str()));
    assert!(
        arns(&before).is_disjoint(&arns(&after)),
        "every task was replaced"
    );
    assert!(after
        .iter()
        .all(|t| t.started_by() == Some(new_id.as_str())
            && t.task_definition_arn() == Some(td.as_str())));
}

#[tokio::test]
async fn a_task_no_instance_can_hold_is_explained_in_the_events() {
    let dev = Dev::start().await;
    let c = &dev.client;
    // Far more memory than the local instance registers.
    let huge = ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .memory(4_000_000)
        .set_command(Some(vec!["sleep".into(), "3600".into()]))
        .build();
    let td = register(c, &unique("svc-huge"), vec![huge]).await;
    create_replica(c, &dev.cluster, "web", &td, 1, None).await;
    let instance = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .expect("ListContainerInstances")
        .container_instance_arns()[0]
        .rsplit('/')
        .next()
        .expect("instance id")
        .to_string();
    let s = wait_for(STEADY, "the placement event", || async {
        let s = describe_service(c, &dev.cluster, "web").await;
        let expected = [
            "(service web) was unable to place a task because no container instance met all of its requirements.",
            &format!("The closest matching (container-instance {instance}) has insufficient memory available."),
        ];
        if has_event(&s, &expected) {
            Ok(s)
        } else {
            Err(summary(&s))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    assert_eq!(s.running_count(), 0);
    assert_eq!(s.pending_count(), 0);
    // Said once, not on every retry.
    let n = s
        .events()
        .iter()
        .filter(|e| {
            e.message()
                .unwrap_or("")
                .contains("was unable to place a task")
        })
        .count();
    assert_eq!(n, 1, "{}", summary(&s));
}

/// A revision that never gets healthy nor fails: its health check stays in Docker's start
/// period, so the deployment stays IN_PROGRESS until someone stops it.
fn forever_starting() -> ContainerDefinition {
    ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .memory(64)
        .stop_timeout(2)
        .set_command(Some(vec!["sleep".into(), "3600".into()]))
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("exit 1")
                .interval(300)
                .start_period(300)
                .build()
                .expect("health check"),
        )
        .build()
}

#[tokio::test]
async fn stop_service_deployment_rolls_back_or_aborts_a_rollout() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("svc-stop");
    let v1 = register(c, &family, vec![sleeper()]).await;
    create_replica(c, cl, "web", &v1, 2, None).await;
    wait_steady(c, cl, "web", 2, &v1, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let v2 = register(c, &family, vec![forever_starting()]).await;

    for stop_type in ["ROLLBACK", "ABORT"] {
        let s = c
            .update_service()
            .cluster(cl)
            .service("web")
            .task_definition(&v2)
            .force_new_deployment(true)
            .send()
            .await
            .expect("UpdateService")
            .service()
            .cloned()
            .expect("service");
        let current = s
            .current_service_deployment()
            .expect("currentServiceDeployment")
            .to_string();
        // Its tasks start but never become healthy: still rolling out.
        wait_for(STEADY, "the new revision's tasks running", || async {
            let tasks = running_tasks(c, cl, "web").await;
            let on_v2 = tasks
                .iter()
                .filter(|t| t.task_definition_arn() == Some(v2.as_str()))
                .count();
            if on_v2 == 2 {
                Ok(())
            } else {
                Err(task_lines(&tasks))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
        c.stop_service_deployment()
            .service_deployment_arn(&current)
            .stop_type(stop_type.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("StopServiceDeployment {stop_type}: {e:?}"));
        let described = c
            .describe_service_deployments()
            .service_deployment_arns(&current)
            .send()
            .await
            .expect("DescribeServiceDeployments");
        let status = described.service_deployments()[0]
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if stop_type == "ROLLBACK" {
            assert!(
                status.starts_with("ROLLBACK_"),
                "ROLLBACK: service deployment is {status}"
            );
            let (s, _) = wait_steady(c, cl, "web", 2, &v1, ROLLBACK)
                .await
                .unwrap_or_else(|e| panic!("not back on revision 1: {e}{}", dev_log(&dev)));
            assert_eq!(s.task_definition(), Some(v1.as_str()));
        } else {
            assert_eq!(status, "STOPPED", "ABORT");
            let s = describe_service(c, cl, "web").await;
            let primary = &s.deployments()[0];
            assert_eq!(
                primary.rollout_state(),
                Some(&DeploymentRolloutState::Failed)
            );
            assert_eq!(
                primary.task_definition(),
                Some(v2.as_str()),
                "ABORT does not roll back"
            );
            // Stopping it again: it is no longer in progress.
            let again = c
                .stop_service_deployment()
                .service_deployment_arn(&current)
                .stop_type("ABORT".into())
                .send()
                .await
                .expect_err("a stopped deployment cannot be stopped again");
            assert_eq!(again.code(), Some("ConflictException"), "{again:?}");
        }
    }
    let unknown = c
        .stop_service_deployment()
        .service_deployment_arn(format!(
            "arn:aws:ecs:us-east-1:000000000000:service-deployment/{cl}/web/nosuchdeployment"
        ))
        .send()
        .await
        .expect_err("unknown service deployment");
    assert_eq!(
        unknown.code(),
        Some("ServiceDeploymentNotFoundException"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_service_survives_a_control_plane_crash_without_duplicates() {
    let mut dev = Dev::start().await;
    let td = register(&dev.client, &unique("svc-crash"), vec![sleeper()]).await;
    create_replica(&dev.client, &dev.cluster, "web", &td, 2, None).await;
    let (_, before) = wait_steady(&dev.client, &dev.cluster, "web", 2, &td, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    dev.restart_hard().await;
    let c = &dev.client;
    // Kill a task's container while the control plane is back but before anything else
    // happens: the restarted scheduler must replace it, and only it.
    let victim = first_runtime_id(&before[0]);
    sh(&format!("docker kill {victim}"));
    let (s, after) = wait_for(STEADY, "steady again with one replacement", || async {
        let s = describe_service(c, &dev.cluster, "web").await;
        let tasks = running_tasks(c, &dev.cluster, "web").await;
        let replaced = !arns(&tasks).contains(before[0].task_arn().expect("arn"));
        let all_running = tasks.iter().all(|t| t.last_status() == Some("RUNNING"));
        if is_steady(&s, 2) && tasks.len() == 2 && all_running && replaced {
            Ok((s, tasks))
        } else {
            Err(format!("{}{}", summary(&s), task_lines(&tasks)))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    assert!(
        arns(&after).contains(before[1].task_arn().expect("arn")),
        "the task that was not killed kept running across the restart"
    );
    assert_eq!(s.deployments().len(), 1);
    // No duplicate containers: exactly two of this cluster's containers are running.
    let running = sh(&format!(
        "docker ps -q --filter label=com.amazonaws.ecs.cluster={}",
        dev.cluster_arn()
    ));
    assert_eq!(
        running.lines().count(),
        2,
        "running containers:\n{running}\nall of them:\n{}\ntasks:\n{}{}",
        sh(&format!(
            "docker ps -a --format '{{{{.ID}}}} {{{{.Status}}}} {{{{.Names}}}}' --filter label=com.amazonaws.ecs.cluster={}",
            dev.cluster_arn()
        )),
        task_lines(&after),
        dev_log(&dev)
    );
}

#[tokio::test]
async fn list_services_by_namespace_names_the_unknown_namespace() {
    let dev = Dev::start().await;
    let e = dev
        .client
        .list_services_by_namespace()
        .namespace("corp.local")
        .send()
        .await
        .expect_err("no namespaces exist");
    assert_eq!(e.code(), Some("NamespaceNotFoundException"), "{e:?}");
    assert!(e.message().unwrap_or("").contains("corp.local"), "{e:?}");
}
