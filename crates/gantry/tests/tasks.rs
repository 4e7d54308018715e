//! Tasks on real containers through the AWS SDK for Rust: RunTask → RUNNING with the
//! definition really applied, exits, StopTask, placement failures, image pull failures,
//! dependsOn and health checks, logs, idempotency.

mod common;

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride, HealthCheck,
    KeyValuePair, PortMapping, TaskOverride,
};
use common::*;
use std::time::Duration;

const START: Duration = Duration::from_secs(60);

fn container_of(task: &aws_sdk_ecs::types::Task, name: &str) -> aws_sdk_ecs::types::Container {
    task.containers()
        .iter()
        .find(|c| c.name() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("no container {name} in {task:#?}"))
}

#[tokio::test]
async fn run_task_applies_the_definition_to_a_real_container() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let family = unique("apply");
    let def = ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .memory(96)
        .cpu(256)
        .environment(KeyValuePair::builder().name("GREETING").value("hi").build())
        .command("sh")
        .command("-c")
        .command("echo started; sleep 3600")
        .port_mappings(
            PortMapping::builder()
                .container_port(8080)
                .host_port(0)
                .build(),
        )
        .build();
    let td = register(c, &family, vec![def]).await;
    let run = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .started_by("tests")
        .overrides(
            TaskOverride::builder()
                .container_overrides(
                    ContainerOverride::builder()
                        .name("app")
                        .environment(KeyValuePair::builder().name("EXTRA").value("yes").build())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("RunTask");
    assert!(run.failures().is_empty(), "{:?}", run.failures());
    let t = &run.tasks()[0];
    assert_eq!(t.desired_status(), Some("RUNNING"));
    assert_eq!(t.started_by(), Some("tests"));
    assert_eq!(t.group(), Some(format!("family:{family}").as_str()));
    let arn = t.task_arn().unwrap().to_string();
    assert!(arn.starts_with(&format!(
        "arn:aws:ecs:us-east-1:000000000000:task/{}/",
        dev.cluster
    )));

    let running = wait_task(c, &dev.cluster, &arn, "RUNNING", START).await;
    assert!(running.started_at().is_some());
    assert!(running.pull_started_at().is_some() && running.pull_stopped_at().is_some());
    assert_eq!(
        running.connectivity().map(|c| c.as_str()),
        Some("CONNECTED")
    );
    let app = container_of(&running, "app");
    assert_eq!(app.last_status(), Some("RUNNING"));
    let binding = &app.network_bindings()[0];
    assert_eq!(binding.container_port(), Some(8080));
    let host_port = binding.host_port().unwrap_or(0);
    assert!(host_port > 0, "a dynamic host port was assigned");

    // Docker really runs it as the definition says.
    let id = app.runtime_id().expect("runtimeId").to_string();
    let inspected = inspect(&id);
    assert_eq!(inspected["State"]["Running"], true);
    assert_eq!(inspected["HostConfig"]["Memory"], 96 * 1024 * 1024);
    assert_eq!(inspected["HostConfig"]["CpuShares"], 256);
    let env: Vec<String> = serde_json::from_value(inspected["Config"]["Env"].clone()).unwrap();
    assert!(env.contains(&"GREETING=hi".to_string()), "{env:?}");
    assert!(
        env.contains(&"EXTRA=yes".to_string()),
        "override applied: {env:?}"
    );
    assert_eq!(inspected["Config"]["Cmd"][2], "echo started; sleep 3600");
    assert_eq!(
        inspected["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"],
        host_port.to_string()
    );
    assert_eq!(
        inspected["Config"]["Labels"]["com.amazonaws.ecs.task-arn"],
        arn.as_str()
    );

    // The instance accounts for it.
    let cis = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap();
    let d = c
        .describe_container_instances()
        .cluster(&dev.cluster)
        .set_container_instances(Some(cis.container_instance_arns().to_vec()))
        .send()
        .await
        .unwrap();
    let ci = &d.container_instances()[0];
    assert_eq!(ci.running_tasks_count(), 1);
    let reg = |name: &str, list: &[aws_sdk_ecs::types::Resource]| {
        list.iter()
            .find(|r| r.name() == Some(name))
            .map(|r| r.integer_value())
            .unwrap_or(-1)
    };
    assert_eq!(
        reg("MEMORY", ci.registered_resources()) - reg("MEMORY", ci.remaining_resources()),
        96
    );
    assert_eq!(
        reg("CPU", ci.registered_resources()) - reg("CPU", ci.remaining_resources()),
        256
    );

    // Listing by the filters ECS offers.
    let listed = c
        .list_tasks()
        .cluster(&dev.cluster)
        .family(&family)
        .started_by("tests")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.task_arns(), std::slice::from_ref(&arn));

    // Stop with a reason.
    let stopped = c
        .stop_task()
        .cluster(&dev.cluster)
        .task(&arn)
        .reason("test is done")
        .send()
        .await
        .expect("StopTask");
    assert_eq!(stopped.task().unwrap().desired_status(), Some("STOPPED"));
    let t = wait_task(c, &dev.cluster, &arn, "STOPPED", START).await;
    assert_eq!(t.stopped_reason(), Some("test is done"));
    assert_eq!(t.stop_code().map(|s| s.as_str()), Some("UserInitiated"));
    assert!(
        t.stopped_at().is_some() && t.stopping_at().is_some() && t.execution_stopped_at().is_some()
    );
    assert_eq!(container_of(&t, "app").last_status(), Some("STOPPED"));
    assert_eq!(inspect(&id)["State"]["Running"], false);
    let listed = c
        .list_tasks()
        .cluster(&dev.cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    assert!(listed.task_arns().contains(&arn));
}

#[tokio::test]
async fn an_exiting_essential_container_stops_the_task_with_its_exit_code() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let td = register(
        c,
        &unique("exit"),
        vec![
            busybox_container("main", &["sh", "-c", "sleep 1; exit 3"]),
            ContainerDefinition::builder()
                .name("helper")
                .image(IMAGE)
                .memory(16)
                .essential(false)
                .command("sleep")
                .command("3600")
                .build(),
        ],
    )
    .await;
    let arn = run_one(c, &dev.cluster, &td).await;
    let t = wait_task(c, &dev.cluster, &arn, "STOPPED", START).await;
    assert_eq!(
        t.stop_code().map(|s| s.as_str()),
        Some("EssentialContainerExited")
    );
    assert_eq!(
        t.stopped_reason(),
        Some("Essential container in task exited")
    );
    assert_eq!(container_of(&t, "main").exit_code(), Some(3));
    let helper = container_of(&t, "helper");
    assert_eq!(helper.last_status(), Some("STOPPED"));
    // The non-essential container was stopped with the task.
    let id = helper.runtime_id().expect("helper ran").to_string();
    assert_eq!(inspect(&id)["State"]["Running"], false);
}

#[tokio::test]
async fn a_task_too_large_for_the_instance_comes_back_in_failures() {
    let dev = Dev::start_with(&["--memory", "256", "--cpu", "512"]).await;
    let c = &dev.client;
    let big_memory = register(
        c,
        &unique("big"),
        vec![ContainerDefinition::builder()
            .name("app")
            .image(IMAGE)
            .memory(512)
            .build()],
    )
    .await;
    let r = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&big_memory)
        .send()
        .await
        .expect("RunTask answers, with failures");
    assert!(r.tasks().is_empty());
    assert_eq!(r.failures().len(), 1);
    assert_eq!(r.failures()[0].reason(), Some("RESOURCE:MEMORY"));
    assert!(r.failures()[0]
        .arn()
        .unwrap_or("")
        .contains(":container-instance/"));

    let big_cpu = register(
        c,
        &unique("cpu"),
        vec![ContainerDefinition::builder()
            .name("app")
            .image(IMAGE)
            .memory(16)
            .cpu(1024)
            .build()],
    )
    .await;
    let r = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&big_cpu)
        .send()
        .await
        .unwrap();
    assert_eq!(r.failures()[0].reason(), Some("RESOURCE:CPU"));

    // Two fit, the third of count=3 does not: ECS places what it can.
    let fits = register(
        c,
        &unique("fits"),
        vec![ContainerDefinition::builder()
            .name("app")
            .image(IMAGE)
            .memory(100)
            .command("sleep")
            .command("3600")
            .build()],
    )
    .await;
    let r = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&fits)
        .count(3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.tasks().len(), 2);
    assert_eq!(r.failures()[0].reason(), Some("RESOURCE:MEMORY"));

    // A fixed host port can be taken once.
    let port = free_port() as i32;
    let fixed = register(
        c,
        &unique("port"),
        vec![ContainerDefinition::builder()
            .name("app")
            .image(IMAGE)
            .memory(8)
            .command("sleep")
            .command("3600")
            .port_mappings(
                PortMapping::builder()
                    .container_port(80)
                    .host_port(port)
                    .build(),
            )
            .build()],
    )
    .await;
    for t in r.tasks() {
        c.stop_task()
            .cluster(&dev.cluster)
            .task(t.task_arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    let first = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&fixed)
        .send()
        .await
        .unwrap();
    assert_eq!(first.tasks().len(), 1, "{:?}", first.failures());
    let second = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&fixed)
        .send()
        .await
        .unwrap();
    assert_eq!(second.failures()[0].reason(), Some("RESOURCE:PORTS"));
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_to_start() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let td = register(
        c,
        &unique("nopull"),
        vec![ContainerDefinition::builder()
            .name("app")
            .image("gantry-test/does-not-exist:never")
            .memory(16)
            .build()],
    )
    .await;
    let arn = run_one(c, &dev.cluster, &td).await;
    let t = wait_task(c, &dev.cluster, &arn, "STOPPED", Duration::from_secs(120)).await;
    assert_eq!(t.stop_code().map(|s| s.as_str()), Some("TaskFailedToStart"));
    let reason = container_of(&t, "app").reason().unwrap_or("").to_string();
    assert!(
        reason.starts_with("CannotPullContainerError"),
        "reason: {reason}"
    );
    assert!(
        t.stopped_reason()
            .unwrap_or("")
            .contains("CannotPullContainerError"),
        "{:?}",
        t.stopped_reason()
    );
    assert!(t.started_at().is_none());
}

#[tokio::test]
async fn depends_on_and_health_checks_order_the_start() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let db = ContainerDefinition::builder()
        .name("db")
        .image(IMAGE)
        .memory(16)
        .command("sh")
        .command("-c")
        .command("sleep 2; touch /tmp/ready; sleep 3600")
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("test -f /tmp/ready")
                .interval(5)
                .timeout(2)
                .retries(3)
                .build()
                .unwrap(),
        )
        .build();
    let init = ContainerDefinition::builder()
        .name("init")
        .image(IMAGE)
        .memory(16)
        .essential(false)
        .command("true")
        .build();
    let app = ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .memory(16)
        .command("sleep")
        .command("3600")
        .depends_on(
            ContainerDependency::builder()
                .container_name("db")
                .condition(ContainerCondition::Healthy)
                .build()
                .unwrap(),
        )
        .depends_on(
            ContainerDependency::builder()
                .container_name("init")
                .condition(ContainerCondition::Success)
                .build()
                .unwrap(),
        )
        .build();
    let td = register(c, &unique("deps"), vec![db, init, app]).await;
    let arn = run_one(c, &dev.cluster, &td).await;
    let t = wait_task(c, &dev.cluster, &arn, "RUNNING", START).await;
    assert_eq!(t.health_status().map(|h| h.as_str()), Some("HEALTHY"));
    assert_eq!(
        container_of(&t, "db").health_status().map(|h| h.as_str()),
        Some("HEALTHY")
    );
    assert_eq!(container_of(&t, "init").exit_code(), Some(0));
    // app started only after db was healthy and init had succeeded.
    let started = |name: &str| {
        let id = container_of(&t, name).runtime_id().unwrap().to_string();
        inspect(&id)["State"]["StartedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let finished_init = {
        let id = container_of(&t, "init").runtime_id().unwrap().to_string();
        inspect(&id)["State"]["FinishedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(started("app") > started("db"));
    assert!(started("app") >= finished_init);
}

#[tokio::test]
async fn container_output_is_kept_per_task() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let family = unique("logs");
    let td = register(
        c,
        &family,
        vec![busybox_container(
            "app",
            &[
                "sh",
                "-c",
                "echo line-one; echo line-two; echo line-err >&2; sleep 1",
            ],
        )],
    )
    .await;
    let arn = run_one(c, &dev.cluster, &td).await;
    wait_task(c, &dev.cluster, &arn, "STOPPED", START).await;
    let id = arn.rsplit('/').next().unwrap().to_string();
    let out = eventually(Duration::from_secs(20), "logs to arrive", || {
        let endpoint = dev.endpoint.clone();
        let id = id.clone();
        let cluster = dev.cluster.clone();
        let keys = dev.keys.clone();
        async move {
            let out = std::process::Command::new(gantry_bin())
                .envs(keys.env())
                .args(["logs", &id, "--endpoint", &endpoint, "--cluster", &cluster])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (text.contains("line-one") && text.contains("line-two") && text.contains("line-err"))
                .then_some(text)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    let one = out.find("line-one").unwrap();
    let two = out.find("line-two").unwrap();
    // Within one stream output keeps its order (Docker itself does not order stdout against
    // stderr, so line-err may come anywhere).
    assert!(one < two, "in order: {out}");
}

#[tokio::test]
async fn a_repeated_client_token_returns_the_same_tasks() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let td = register(
        c,
        &unique("idem"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let first = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .count(2)
        .client_token("same-token-1")
        .send()
        .await
        .unwrap();
    let again = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .count(2)
        .client_token("same-token-1")
        .send()
        .await
        .unwrap();
    let arns = |r: &aws_sdk_ecs::operation::run_task::RunTaskOutput| {
        let mut v: Vec<String> = r
            .tasks()
            .iter()
            .filter_map(|t| t.task_arn().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert_eq!(arns(&first).len(), 2);
    assert_eq!(arns(&first), arns(&again));
    let listed = c.list_tasks().cluster(&dev.cluster).send().await.unwrap();
    assert_eq!(listed.task_arns().len(), 2, "no extra tasks were started");
}
