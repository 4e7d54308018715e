//! Several agents on one engine, and crashes: `kill -9` of the control plane and of an agent
//! in the middle of work. State and containers must be reconciled with nothing lost and
//! nothing duplicated.

mod common;

use aws_sdk_ecs::types::{PlacementStrategy, PlacementStrategyType};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn describe(
    client: &aws_sdk_ecs::Client,
    cluster: &str,
    arns: &[String],
) -> Vec<aws_sdk_ecs::types::Task> {
    client
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(arns.to_vec()))
        .send()
        .await
        .expect("DescribeTasks")
        .tasks()
        .to_vec()
}

fn runtime_id(t: &aws_sdk_ecs::types::Task) -> String {
    t.containers()[0]
        .runtime_id()
        .expect("runtimeId")
        .to_string()
}

#[tokio::test]
async fn two_agents_on_one_engine_each_mind_their_own_containers() {
    let split = Split::start(2).await;
    let c = &split.client;
    let td = register(
        c,
        &unique("two"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let run = c
        .run_task()
        .cluster(&split.cluster)
        .task_definition(&td)
        .count(4)
        .placement_strategy(
            PlacementStrategy::builder()
                .r#type(PlacementStrategyType::Spread)
                .field("instanceId")
                .build(),
        )
        .send()
        .await
        .expect("RunTask");
    assert_eq!(run.tasks().len(), 4, "{:?}", run.failures());
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    for t in run.tasks() {
        *per_instance
            .entry(t.container_instance_arn().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_instance.values().copied().collect::<Vec<_>>(),
        vec![2, 2],
        "spread evenly"
    );

    for t in run.tasks() {
        let running = wait_task(c, &split.cluster, t.task_arn().unwrap(), "RUNNING", T).await;
        // The container carries the label of the instance that runs it.
        let labels = inspect(&runtime_id(&running))["Config"]["Labels"].clone();
        assert_eq!(
            labels["dev.gantry.container-instance-arn"],
            t.container_instance_arn().unwrap(),
        );
    }
    assert_eq!(
        split.containers().len(),
        4,
        "exactly one container per task"
    );

    // Each agent stops only its own tasks.
    for t in run.tasks() {
        c.stop_task()
            .cluster(&split.cluster)
            .task(t.task_arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    for t in run.tasks() {
        wait_task(c, &split.cluster, t.task_arn().unwrap(), "STOPPED", T).await;
    }
}

#[tokio::test]
async fn kill_9_of_gantry_dev_keeps_tasks_and_containers() {
    let mut dev = Dev::start().await;
    let td = register(
        &dev.client,
        &unique("crash"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let keep = run_one(&dev.client, &dev.cluster, &td).await;
    let doomed = run_one(&dev.client, &dev.cluster, &td).await;
    let keep_before = wait_task(&dev.client, &dev.cluster, &keep, "RUNNING", T).await;
    let doomed_before = wait_task(&dev.client, &dev.cluster, &doomed, "RUNNING", T).await;
    let instances_before = dev
        .client
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap()
        .container_instance_arns()
        .to_vec();

    // Crash the whole process (control plane and agent); a container dies while it is down.
    dev.proc.kill9();
    sh(&format!("docker kill {}", runtime_id(&doomed_before)));
    dev.restart_hard().await;

    let c = &dev.client;
    let instances_after = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap()
        .container_instance_arns()
        .to_vec();
    assert_eq!(
        instances_before, instances_after,
        "the agent kept its identity"
    );
    let stopped = wait_task(c, &dev.cluster, &doomed, "STOPPED", T).await;
    assert_eq!(stopped.containers()[0].exit_code(), Some(137));
    assert_eq!(
        stopped.stop_code().map(|s| s.as_str()),
        Some("EssentialContainerExited")
    );
    let kept = wait_task(c, &dev.cluster, &keep, "RUNNING", T).await;
    assert_eq!(
        runtime_id(&kept),
        runtime_id(&keep_before),
        "adopted, not restarted"
    );
    assert_eq!(inspect(&runtime_id(&kept))["State"]["Running"], true);
    assert_eq!(dev.containers().len(), 2, "no duplicates, no orphans");

    // And it keeps working.
    let fresh = run_one(c, &dev.cluster, &td).await;
    wait_task(c, &dev.cluster, &fresh, "RUNNING", T).await;
    c.stop_task()
        .cluster(&dev.cluster)
        .task(&keep)
        .send()
        .await
        .unwrap();
    wait_task(c, &dev.cluster, &keep, "STOPPED", T).await;
}

#[tokio::test]
async fn kill_9_of_the_server_loses_no_report() {
    let mut split = Split::start(1).await;
    let td = register(
        &split.client,
        &unique("srv"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let keep = run_one(&split.client, &split.cluster, &td).await;
    let doomed = run_one(&split.client, &split.cluster, &td).await;
    let keep_before = wait_task(&split.client, &split.cluster, &keep, "RUNNING", T).await;
    let doomed_before = wait_task(&split.client, &split.cluster, &doomed, "RUNNING", T).await;

    // The control plane dies; the agent lives on and sees a container die meanwhile.
    split.server.kill9();
    sh(&format!("docker kill {}", runtime_id(&doomed_before)));
    split.restart_server().await;
    split.wait_connected(1).await;

    let c = &split.client;
    let stopped = wait_task(c, &split.cluster, &doomed, "STOPPED", T).await;
    assert_eq!(
        stopped.containers()[0].exit_code(),
        Some(137),
        "{}",
        split.dump()
    );
    let kept = describe(c, &split.cluster, std::slice::from_ref(&keep)).await;
    assert_eq!(kept[0].last_status(), Some("RUNNING"));
    assert_eq!(runtime_id(&kept[0]), runtime_id(&keep_before));
    assert_eq!(split.containers().len(), 2);
}

#[tokio::test]
async fn kill_9_of_an_agent_is_reconciled_when_it_returns() {
    let mut split = Split::start(1).await;
    let td = register(
        &split.client,
        &unique("agt"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let arns: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(run_one(&split.client, &split.cluster, &td).await);
        }
        v
    };
    let mut before = Vec::new();
    for a in &arns {
        before.push(wait_task(&split.client, &split.cluster, a, "RUNNING", T).await);
    }
    let instance = before[0].container_instance_arn().unwrap().to_string();

    split.agents[0].kill9();
    // The control plane notices the agent is gone.
    let c = split.client.clone();
    let cluster = split.cluster.clone();
    eventually(Duration::from_secs(30), "agentConnected=false", || {
        let c = c.clone();
        let cluster = cluster.clone();
        let instance = instance.clone();
        async move {
            let d = c
                .describe_container_instances()
                .cluster(cluster)
                .container_instances(instance)
                .send()
                .await
                .ok()?;
            (!d.container_instances()[0].agent_connected()).then_some(())
        }
    })
    .await
    .expect("disconnect noticed");
    // While it is away: one container dies, one task is asked to stop, one is left alone.
    sh(&format!("docker kill {}", runtime_id(&before[0])));
    c.stop_task()
        .cluster(&split.cluster)
        .task(&arns[1])
        .reason("stopped while the agent was away")
        .send()
        .await
        .unwrap();
    split.add_agent(0).await;

    let list = c
        .list_container_instances()
        .cluster(&split.cluster)
        .send()
        .await
        .unwrap();
    assert_eq!(
        list.container_instance_arns(),
        std::slice::from_ref(&instance),
        "same identity, no new instance"
    );
    let died = wait_task(&c, &split.cluster, &arns[0], "STOPPED", T).await;
    assert_eq!(
        died.containers()[0].exit_code(),
        Some(137),
        "{}",
        split.dump()
    );
    let asked = wait_task(&c, &split.cluster, &arns[1], "STOPPED", T).await;
    assert_eq!(
        asked.stopped_reason(),
        Some("stopped while the agent was away")
    );
    assert_eq!(inspect(&runtime_id(&before[1]))["State"]["Running"], false);
    let left = describe(&c, &split.cluster, std::slice::from_ref(&arns[2])).await;
    assert_eq!(left[0].last_status(), Some("RUNNING"));
    assert_eq!(
        runtime_id(&left[0]),
        runtime_id(&before[2]),
        "adopted, not restarted"
    );
    assert_eq!(
        split.containers().len(),
        3,
        "no duplicates: {}",
        split.dump()
    );
}
