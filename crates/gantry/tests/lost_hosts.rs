//! Lost hosts: `kill -9` of an agent leaves its containers running; after the grace period
//! (`--lost-host-after`) its tasks are STOPPED with TerminationNotice and the service replaces
//! them on another agent; when the agent comes back, the lost task's containers are removed and
//! nothing runs twice.

mod common;

use common::svc::*;
use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn describe_instance(
    c: &aws_sdk_ecs::Client,
    cluster: &str,
    arn: &str,
) -> aws_sdk_ecs::types::ContainerInstance {
    c.describe_container_instances()
        .cluster(cluster)
        .container_instances(arn)
        .include(aws_sdk_ecs::types::ContainerInstanceField::ContainerInstanceHealth)
        .send()
        .await
        .expect("DescribeContainerInstances")
        .container_instances()[0]
        .clone()
}

#[tokio::test]
async fn a_lost_agent_s_tasks_are_replaced_elsewhere_and_removed_when_it_returns() {
    let mut split = Split::start_with(2, &["--lost-host-after", "3"]).await;
    let c = split.client.clone();
    let cl = split.cluster.clone();
    let td = register(
        &c,
        &unique("lost"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let name = unique("svc");
    c.create_service()
        .cluster(&cl)
        .service_name(&name)
        .task_definition(&td)
        .desired_count(1)
        .send()
        .await
        .expect("CreateService");
    let first = wait_for(T, "one RUNNING task", || {
        let (c, cl, name) = (c.clone(), cl.clone(), name.clone());
        async move {
            let tasks = running_tasks(&c, &cl, &name).await;
            match tasks.as_slice() {
                [t] if t.last_status() == Some("RUNNING") => Ok(t.clone()),
                other => Err(format!("{} tasks", other.len())),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    let lost_instance = first
        .container_instance_arn()
        .expect("instance")
        .to_string();
    let lost_container = first_runtime_id(&first);

    // Which agent runs it: agent i registers availability zone us-east-1{a+i}.
    let zone = describe_instance(&c, &cl, &lost_instance)
        .await
        .attributes()
        .iter()
        .find(|a| a.name() == "ecs.availability-zone")
        .and_then(|a| a.value())
        .expect("zone attribute")
        .to_string();
    let agent = if zone.ends_with('a') { 0 } else { 1 };

    split.agents[agent].kill9();
    assert_eq!(
        inspect(&lost_container)["State"]["Running"],
        true,
        "kill -9 of the agent leaves its containers running"
    );

    // After the grace period: the task is STOPPED as lost, and a replacement runs elsewhere.
    let first_arn = first.task_arn().expect("arn").to_string();
    let stopped = wait_for(T, "the lost task STOPPED", || {
        let (c, cl, arn) = (c.clone(), cl.clone(), first_arn.clone());
        async move {
            let t = describe_task_arns(&c, &cl, &[arn]).await.remove(0);
            if t.last_status() == Some("STOPPED") {
                Ok(t)
            } else {
                Err(format!("{:?}", t.last_status()))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    assert_eq!(
        stopped.stop_code().map(|s| s.as_str()),
        Some("TerminationNotice")
    );
    let reason = stopped.stopped_reason().unwrap_or_default();
    let instance_id = lost_instance.rsplit('/').next().unwrap_or_default();
    assert!(
        reason.contains(instance_id) && reason.contains("disconnected for"),
        "{reason}"
    );
    let replacement = wait_for(T, "a replacement RUNNING on the other instance", || {
        let (c, cl, name, lost) = (c.clone(), cl.clone(), name.clone(), lost_instance.clone());
        async move {
            let tasks = running_tasks(&c, &cl, &name).await;
            match tasks.as_slice() {
                [t] if t.last_status() == Some("RUNNING")
                    && t.container_instance_arn() != Some(lost.as_str()) =>
                {
                    Ok(t.clone())
                }
                other => Err(format!(
                    "{:?}",
                    other
                        .iter()
                        .map(|t| (t.last_status(), t.container_instance_arn()))
                        .collect::<Vec<_>>()
                )),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    let ci = describe_instance(&c, &cl, &lost_instance).await;
    assert!(!ci.agent_connected());
    assert_eq!(
        ci.health_status()
            .and_then(|h| h.overall_status())
            .map(|s| s.as_str()),
        Some("IMPAIRED"),
        "{ci:?}"
    );
    assert!(ci.status_reason().unwrap_or_default().contains("lost"));
    assert_eq!(ci.running_tasks_count(), 0);

    // The agent returns: the lost task's container is stopped and removed; the replacement
    // keeps running; nothing runs twice.
    split.add_agent(agent).await;
    wait_for(T, "the lost task's container removed", || {
        let id = lost_container.clone();
        async move {
            let out = std::process::Command::new("docker")
                .args(["inspect", &id])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    let running = running_tasks(&c, &cl, &name).await;
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].task_arn(), replacement.task_arn());
    assert_eq!(
        split.containers().len(),
        1,
        "one container in all: {}",
        split.dump()
    );
    let ci = describe_instance(&c, &cl, &lost_instance).await;
    assert!(ci.agent_connected());
    assert_eq!(
        ci.health_status()
            .and_then(|h| h.overall_status())
            .map(|s| s.as_str()),
        Some("OK"),
        "no longer marked lost: {ci:?}"
    );

    // The controllers' work shows on /metrics.
    let metrics = reqwest::get(format!("{}/metrics", split.endpoint))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let reconciles = |controller: &str| -> f64 {
        let prefix = format!("gantry_controller_reconciles_total{{controller=\"{controller}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert!(reconciles("lost-hosts") >= 1.0, "{metrics}");
    assert!(reconciles("services") >= 1.0, "{metrics}");
    assert!(reconciles("agent-channels") >= 1.0, "{metrics}");
    assert!(metrics.contains("gantry_controller_panics_total{controller=\"services\"} 0"));
}
