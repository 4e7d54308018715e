//! ECS services through the SDK, for the service tests and the services benchmark: describe
//! one service, list its tasks, wait for it to be steady on a revision, and summarise what was
//! seen when a wait fails.

use aws_sdk_ecs::types::{DeploymentRolloutState, DesiredStatus, Service, Task};
use aws_sdk_ecs::Client;
use std::future::Future;
use std::time::{Duration, Instant};

/// The one service `name` of `cluster` (panics on a failure entry or an error).
pub async fn describe_service(c: &Client, cluster: &str, name: &str) -> Service {
    let d = c
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeServices {name}: {e:?}"));
    assert!(
        d.failures().is_empty(),
        "DescribeServices {name}: failures {:?}",
        d.failures()
    );
    d.services()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("DescribeServices {name} returned no service"))
}

/// ECS's "steady": exactly one deployment, COMPLETED, with `n` running of `n` desired (what
/// `aws ecs wait services-stable` waits for, with the rollout state kept consistent).
pub fn is_steady(s: &Service, n: i32) -> bool {
    let d = s.deployments();
    d.len() == 1
        && d[0].rollout_state() == Some(&DeploymentRolloutState::Completed)
        && d[0].desired_count() == n
        && d[0].running_count() == n
        && s.desired_count() == n
        && s.running_count() == n
}

/// Steady, and the one deployment runs `task_definition`.
pub fn is_steady_on(s: &Service, n: i32, task_definition: &str) -> bool {
    is_steady(s, n) && s.deployments()[0].task_definition() == Some(task_definition)
}

/// One line per deployment and the newest events: what a failed wait reports.
pub fn summary(s: &Service) -> String {
    let mut out = format!(
        "service {} status={} desired={} running={} pending={} taskDefinition={}\n",
        s.service_name().unwrap_or("?"),
        s.status().unwrap_or("?"),
        s.desired_count(),
        s.running_count(),
        s.pending_count(),
        s.task_definition().unwrap_or("?"),
    );
    for d in s.deployments() {
        out.push_str(&format!(
            "  deployment {} {} {} desired={} running={} pending={} failed={} rollout={:?} ({})\n",
            d.id().unwrap_or("?"),
            d.status().unwrap_or("?"),
            d.task_definition().unwrap_or("?"),
            d.desired_count(),
            d.running_count(),
            d.pending_count(),
            d.failed_tasks(),
            d.rollout_state().map(|r| r.as_str()),
            d.rollout_state_reason().unwrap_or(""),
        ));
    }
    for e in s.events().iter().take(15) {
        out.push_str(&format!("  event: {}\n", e.message().unwrap_or("")));
    }
    out
}

/// One line per task: id, revision, statuses, startedBy, stop reason.
pub fn task_lines(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "  task {} {} last={} desired={} health={:?} startedBy={} stopped={}\n",
                t.task_arn().map(super::task_id).unwrap_or("?"),
                t.task_definition_arn()
                    .and_then(|a| a.rsplit('/').next())
                    .unwrap_or("?"),
                t.last_status().unwrap_or("?"),
                t.desired_status().unwrap_or("?"),
                t.health_status().map(|h| h.as_str()),
                t.started_by().unwrap_or("-"),
                t.stopped_reason().unwrap_or("-"),
            )
        })
        .collect()
}

/// Every task ARN of the service with the given desired status (all pages).
pub async fn list_service_tasks(
    c: &Client,
    cluster: &str,
    name: &str,
    desired: DesiredStatus,
) -> Vec<String> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = c
            .list_tasks()
            .cluster(cluster)
            .service_name(name)
            .desired_status(desired.clone())
            .set_next_token(token.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListTasks --service-name {name}: {e:?}"));
        arns.extend(page.task_arns().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return arns,
        }
    }
}

/// DescribeTasks for any number of ARNs (100 per call, as ECS allows).
pub async fn describe_task_arns(c: &Client, cluster: &str, arns: &[String]) -> Vec<Task> {
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let d = c
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeTasks: {e:?}"));
        assert!(
            d.failures().is_empty(),
            "DescribeTasks failures: {:?}",
            d.failures()
        );
        tasks.extend(d.tasks().iter().cloned());
    }
    tasks
}

/// The service's tasks that are meant to run (desiredStatus RUNNING), described.
pub async fn running_tasks(c: &Client, cluster: &str, name: &str) -> Vec<Task> {
    let arns = list_service_tasks(c, cluster, name, DesiredStatus::Running).await;
    describe_task_arns(c, cluster, &arns).await
}

/// All of the service's tasks: listed for desiredStatus RUNNING, then STOPPED, then described
/// in one call per hundred (so the states come from one snapshot of the store).
pub async fn service_tasks(c: &Client, cluster: &str, name: &str) -> Vec<Task> {
    let mut arns = list_service_tasks(c, cluster, name, DesiredStatus::Running).await;
    for a in list_service_tasks(c, cluster, name, DesiredStatus::Stopped).await {
        if !arns.contains(&a) {
            arns.push(a);
        }
    }
    describe_task_arns(c, cluster, &arns).await
}

/// The Docker id of a task's first container.
pub fn first_runtime_id(t: &Task) -> String {
    t.containers()
        .first()
        .and_then(|c| c.runtime_id())
        .unwrap_or_else(|| panic!("no runtimeId in {t:#?}"))
        .to_string()
}

/// Poll `probe` every `every` until it yields `Ok`; after `timeout`, fail with what was awaited
/// and the last `Err` the probe gave (the state it saw).
pub async fn wait_for_every<T, F, Fut>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut probe: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() > deadline => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen:\n{last}"
                ))
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// `wait_for_every` at the harness's usual 100 ms.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_for_every(Duration::from_millis(100), timeout, what, probe).await
}

/// Whether the tasks meant to run are exactly `n`, all RUNNING, all of `task_definition`.
pub fn all_running_on(tasks: &[Task], n: usize, task_definition: &str) -> bool {
    tasks.len() == n
        && tasks.iter().all(|t| {
            t.last_status() == Some("RUNNING") && t.task_definition_arn() == Some(task_definition)
        })
}

/// Wait until the service is steady with `n` tasks of `task_definition` and its tasks agree:
/// exactly `n` meant to run, all RUNNING on that revision. Polls every `every`.
pub async fn wait_steady_every(
    c: &Client,
    cluster: &str,
    name: &str,
    n: i32,
    task_definition: &str,
    every: Duration,
    timeout: Duration,
) -> Result<(Service, Vec<Task>), String> {
    wait_for_every(
        every,
        timeout,
        &format!("service {name} steady with {n} tasks of {task_definition}"),
        || async move {
            let s = describe_service(c, cluster, name).await;
            let tasks = running_tasks(c, cluster, name).await;
            if is_steady_on(&s, n, task_definition)
                && all_running_on(&tasks, n as usize, task_definition)
            {
                Ok((s, tasks))
            } else {
                Err(format!("{}{}", summary(&s), task_lines(&tasks)))
            }
        },
    )
    .await
}

/// `wait_steady_every` at 100 ms.
pub async fn wait_steady(
    c: &Client,
    cluster: &str,
    name: &str,
    n: i32,
    task_definition: &str,
    timeout: Duration,
) -> Result<(Service, Vec<Task>), String> {
    wait_steady_every(
        c,
        cluster,
        name,
        n,
        task_definition,
        Duration::from_millis(100),
        timeout,
    )
    .await
}

/// The last `n` lines of a log, for failure messages.
pub fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
