//! Fargate capacity, awsvpc task networking and capacity provider strategies, with real
//! containers, through the AWS SDK for Rust and the AWS CLI.

mod common;

use aws_sdk_ecs::types::{
    AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility, ContainerDefinition,
    KeyValuePair, LaunchType, NetworkConfiguration, NetworkMode, PortMapping, Task,
};
use aws_sdk_ecs::Client;
use common::*;
use std::time::Duration;

async fn start() -> Dev {
    let pool = awsvpc_pool();
    let dev = Dev::start_with(&["--awsvpc-cidr", &pool]).await;
    // `gantry dev` starts its Fargate host beside the cluster's agent; a FARGATE task placed
    // before that host's agent is connected fails with AGENT. Its instance is in a cluster
    // the API does not show, so the sign is in the output: both agents' channels connected.
    eventually(
        Duration::from_secs(60),
        "the Fargate host's agent to connect",
        || async {
            let connected = dev.proc.output().matches("task channel connected").count();
            (connected >= 2).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    dev
}

/// busybox httpd on 8080 serving `hello <task hostname>`.
fn web() -> ContainerDefinition {
    ContainerDefinition::builder()
        .name("web")
        .image(IMAGE)
        .essential(true)
        .stop_timeout(2)
        .port_mappings(PortMapping::builder().container_port(8080).build())
        .set_command(Some(vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /www && echo hello $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www".into(),
        ]))
        .build()
}

async fn register_fargate(
    client: &Client,
    family: &str,
    containers: Vec<ContainerDefinition>,
) -> String {
    client
        .register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .set_container_definitions(Some(containers))
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("ARN")
        .to_string()
}

fn detail<'a>(task: &'a Task, name: &str) -> Option<&'a str> {
    task.attachments()
        .iter()
        .find(|a| a.r#type() == Some("ElasticNetworkInterface"))?
        .details()
        .iter()
        .find(|d| d.name() == Some(name))?
        .value()
}

fn ip_of(task: &Task) -> String {
    detail(task, "privateIPv4Address")
        .unwrap_or_else(|| panic!("no address: {task:#?}"))
        .to_string()
}

async fn http_get(url: String) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let r = client.get(&url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

async fn create_cluster(client: &Client, name: &str, providers: &[&str]) {
    client
        .create_cluster()
        .cluster_name(name)
        .set_capacity_providers(Some(providers.iter().map(|p| p.to_string()).collect()))
        .send()
        .await
        .expect("CreateCluster");
}

/// (code, message) of an SDK error.
macro_rules! err {
    ($e:expr) => {{
        use aws_sdk_ecs::error::ProvideErrorMetadata;
        let e = $e.into_service_error();
        (
            e.code().unwrap_or_default().to_string(),
            e.message().unwrap_or_default().to_string(),
        )
    }};
}

#[tokio::test]
async fn a_fargate_service_in_a_new_cluster_serves_on_its_own_addresses() {
    let dev = start().await;
    let c = &dev.client;
    let subnet = Subnet::new();
    let cluster = unique("fg");
    create_cluster(c, &cluster, &["FARGATE", "FARGATE_SPOT"]).await;
    let td = register_fargate(c, &unique("fgweb"), vec![web()]).await;
    c.create_service()
        .cluster(&cluster)
        .service_name("web")
        .task_definition(&td)
        .desired_count(2)
        .launch_type(LaunchType::Fargate)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect("CreateService");
    let tasks = eventually(
        Duration::from_secs(60),
        "two RUNNING Fargate tasks",
        || async {
            let arns = c
                .list_tasks()
                .cluster(&cluster)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                .send()
                .await
                .ok()?
                .task_arns()
                .to_vec();
            if arns.len() != 2 {
                return None;
            }
            let d = c
                .describe_tasks()
                .cluster(&cluster)
                .set_tasks(Some(arns))
                .send()
                .await
                .ok()?;
            let tasks = d.tasks().to_vec();
            tasks
                .iter()
                .all(|t| t.last_status() == Some("RUNNING"))
                .then_some(tasks)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    // The cluster has no instance of its own: the tasks run on Fargate capacity.
    let instances = c
        .list_container_instances()
        .cluster(&cluster)
        .send()
        .await
        .expect("ListContainerInstances");
    assert!(instances.container_instance_arns().is_empty());
    let mut ips = Vec::new();
    for t in &tasks {
        assert_eq!(t.container_instance_arn(), None, "{t:#?}");
        assert_eq!(t.launch_type(), Some(&LaunchType::Fargate));
        assert_eq!(t.platform_version(), Some("1.4.0"));
        assert_eq!(t.platform_family(), Some("Linux"));
        assert_eq!(t.ephemeral_storage().map(|e| e.size_in_gib()), Some(20));
        assert!(t
            .availability_zone()
            .is_some_and(|z| z.starts_with("us-east-1")));
        let attachment = &t.attachments()[0];
        assert_eq!(attachment.status(), Some("ATTACHED"));
        assert_eq!(detail(t, "subnetId"), Some(subnet.0.as_str()));
        assert!(detail(t, "networkInterfaceId").is_some_and(|e| e.starts_with("eni-")));
        assert!(detail(t, "macAddress").is_some());
        let ip = ip_of(t);
        assert!(detail(t, "privateDnsName").is_some_and(|n| n.contains(&ip.replace('.', "-"))));
        let ni = &t.containers()[0].network_interfaces()[0];
        assert_eq!(ni.private_ipv4_address(), Some(ip.as_str()));
        assert!(t.containers()[0].network_bindings().is_empty());
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "each task has its own address");
    // The host reaches each task at its address.
    for ip in &ips {
        let body = eventually(Duration::from_secs(20), "HTTP from the task", || {
            http_get(format!("http://{ip}:8080/"))
        })
        .await
        .unwrap();
        assert!(body.starts_with("hello ip-"), "{body}");
    }
    let d = c
        .describe_services()
        .cluster(&cluster)
        .services("web")
        .send()
        .await
        .expect("DescribeServices");
    assert_eq!(d.services()[0].running_count(), 2);
    let stats = c
        .describe_clusters()
        .clusters(&cluster)
        .include(aws_sdk_ecs::types::ClusterField::Statistics)
        .send()
        .await
        .expect("DescribeClusters");
    let stat = |name: &str| {
        stats.clusters()[0]
            .statistics()
            .iter()
            .find(|s| s.name() == Some(name))
            .and_then(|s| s.value())
            .map(str::to_string)
    };
    assert_eq!(stat("runningFargateTasksCount").as_deref(), Some("2"));
    assert_eq!(stat("runningEC2TasksCount").as_deref(), Some("0"));
    assert_eq!(stat("activeFargateServiceCount").as_deref(), Some("1"));
    assert_eq!(stat("activeEC2ServiceCount").as_deref(), Some("0"));
    assert_eq!(
        stats.clusters()[0].registered_container_instances_count(),
        0
    );
    // An update is checked as a creation is, and a refused one changes nothing.
    let bad = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets("subnet-nothex!")
                .build()
                .expect("awsvpc configuration"),
        )
        .build();
    let (code, message) = err!(c
        .update_service()
        .cluster(&cluster)
        .service("web")
        .network_configuration(bad)
        .send()
        .await
        .expect_err("malformed subnet"));
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("InvalidSubnetID.Malformed"), "{message}");
    let d = c
        .describe_services()
        .cluster(&cluster)
        .services("web")
        .send()
        .await
        .expect("DescribeServices");
    assert_eq!(d.services()[0].deployments().len(), 1);
    // From a launch type to a capacity provider strategy, as ECS lets an update do.
    let moved = c
        .update_service()
        .cluster(&cluster)
        .service("web")
        .capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .expect("item"),
        )
        .send()
        .await
        .expect("UpdateService to a strategy");
    let svc = moved.service().expect("service");
    assert_eq!(svc.launch_type(), None);
    assert_eq!(svc.deployments().len(), 2, "a new deployment");
    assert_eq!(
        svc.deployments()[0].capacity_provider_strategy()[0].capacity_provider(),
        "FARGATE_SPOT"
    );
    // Gone again: the service, then the cluster.
    c.delete_service()
        .cluster(&cluster)
        .service("web")
        .force(true)
        .send()
        .await
        .expect("DeleteService");
    eventually(
        Duration::from_secs(60),
        "the cluster to be deletable",
        || async { c.delete_cluster().cluster(&cluster).send().await.ok() },
    )
    .await
    .unwrap();
    remove_containers(&format!(
        "com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{cluster}"
    ));
}

#[tokio::test]
async fn containers_of_a_task_share_localhost_and_tasks_reach_each_other() {
    let dev = start().await;
    let c = &dev.client;
    let subnet = Subnet::new();
    // The second container finds the first on localhost; it exits 0 when it did.
    let probe = ContainerDefinition::builder()
        .name("probe")
        .image(IMAGE)
        .essential(false)
        .set_command(Some(vec![
            "sh".into(),
            "-c".into(),
            "for i in $(seq 1 100); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080 | grep -q hello && exit 0; sleep 0.1; done; exit 1".into(),
        ]))
        .build();
    let td = register_fargate(c, &unique("pair"), vec![web(), probe]).await;
    let run = |td: String, env: Vec<KeyValuePair>| {
        let c = c.clone();
        let cluster = dev.cluster.clone();
        let network = subnet.network();
        async move {
            let mut overrides = aws_sdk_ecs::types::TaskOverride::builder();
            if !env.is_empty() {
                overrides = overrides.container_overrides(
                    aws_sdk_ecs::types::ContainerOverride::builder()
                        .name("client")
                        .set_environment(Some(env))
                        .build(),
                );
            }
            let r = c
                .run_task()
                .cluster(&cluster)
                .task_definition(td)
                .launch_type(LaunchType::Fargate)
                .network_configuration(network)
                .overrides(overrides.build())
                .send()
                .await
                .expect("RunTask");
            assert!(r.failures().is_empty(), "{:?}", r.failures());
            r.tasks()[0].task_arn().expect("arn").to_string()
        }
    };
    let first = run(td, Vec::new()).await;
    let running = wait_task(c, &dev.cluster, &first, "RUNNING", Duration::from_secs(60)).await;
    let ip = ip_of(&running);
    let probe_exit = eventually(
        Duration::from_secs(30),
        "the probe container to exit",
        || async {
            let d = c
                .describe_tasks()
                .cluster(&dev.cluster)
                .tasks(&first)
                .send()
                .await
                .ok()?;
            let t = d.tasks().first()?.clone();
            t.containers()
                .iter()
                .find(|k| k.name() == Some("probe"))?
                .exit_code()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        probe_exit, 0,
        "the second container reached the first on localhost"
    );

    // Another task reaches the first one by its address.
    let client_td = register_fargate(
        c,
        &unique("client"),
        vec![ContainerDefinition::builder()
            .name("client")
            .image(IMAGE)
            .essential(true)
            .set_command(Some(vec![
                "sh".into(),
                "-c".into(),
                "for i in $(seq 1 100); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc $TARGET 8080 | grep -q hello && exit 0; sleep 0.1; done; exit 1".into(),
            ]))
            .build()],
    )
    .await;
    let second = run(
        client_td,
        vec![KeyValuePair::builder().name("TARGET").value(&ip).build()],
    )
    .await;
    let stopped = wait_task(c, &dev.cluster, &second, "STOPPED", Duration::from_secs(60)).await;
    assert_eq!(
        stopped.containers()[0].exit_code(),
        Some(0),
        "the task reached {ip}: {stopped:#?}"
    );
    assert_ne!(ip_of(&stopped), ip);
}

#[tokio::test]
async fn addresses_are_freed_when_tasks_stop_and_used_again() {
    // A /29 pool: one subnet of five task addresses, .2 to .6.
    let n = free_port() as u32;
    let pool = format!(
        "10.{}.{}.{}/29",
        100 + (n / 16) % 150,
        240 + n % 15,
        (n % 32) * 8
    );
    let dev = Dev::start_with(&["--awsvpc-cidr", &pool]).await;
    let c = &dev.client;
    let subnet = Subnet::new();
    let td = register_fargate(c, &unique("reuse"), vec![web()]).await;
    let run = |count: i32| {
        let c = c.clone();
        let cluster = dev.cluster.clone();
        let td = td.clone();
        let network = subnet.network();
        async move {
            let r = c
                .run_task()
                .cluster(&cluster)
                .task_definition(&td)
                .count(count)
                .launch_type(LaunchType::Fargate)
                .network_configuration(network)
                .send()
                .await
                .expect("RunTask");
            assert!(r.failures().is_empty(), "{:?}", r.failures());
            r.tasks().to_vec()
        }
    };
    let tasks = run(5).await;
    assert!(tasks
        .iter()
        .all(|t| t.attachments()[0].status() == Some("PRECREATED")));
    let mut ips: Vec<String> = tasks.iter().map(ip_of).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(
        ips.len(),
        5,
        "an address in use is not given twice: {ips:?}"
    );
    for t in &tasks {
        wait_task(
            c,
            &dev.cluster,
            t.task_arn().unwrap(),
            "RUNNING",
            Duration::from_secs(60),
        )
        .await;
    }
    // Stop one: its address, and only it, is free; the next task gets it and serves there.
    let freed = &tasks[2];
    let ip = ip_of(freed);
    c.stop_task()
        .cluster(&dev.cluster)
        .task(freed.task_arn().unwrap())
        .send()
        .await
        .expect("StopTask");
    let stopped = wait_task(
        c,
        &dev.cluster,
        freed.task_arn().unwrap(),
        "STOPPED",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(stopped.attachments()[0].status(), Some("DELETED"));
    let again = run(1).await;
    assert_eq!(ip_of(&again[0]), ip);
    let again_arn = again[0].task_arn().unwrap().to_string();
    wait_task(
        c,
        &dev.cluster,
        &again_arn,
        "RUNNING",
        Duration::from_secs(60),
    )
    .await;
    let body = eventually(
        Duration::from_secs(20),
        "HTTP at the reused address",
        || http_get(format!("http://{ip}:8080/")),
    )
    .await
    .unwrap();
    assert!(body.contains(&ip.replace('.', "-")), "{body}");
}

#[tokio::test]
async fn capacity_provider_strategies_split_by_base_and_weight_and_spot_is_replaced() {
    let dev = start().await;
    let c = &dev.client;
    let subnet = Subnet::new();
    let cluster = unique("cps");
    c.create_cluster()
        .cluster_name(&cluster)
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .default_capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .expect("item"),
        )
        .send()
        .await
        .expect("CreateCluster");
    let td = register_fargate(c, &unique("split"), vec![web()]).await;
    // base 2 on FARGATE, the rest 1:1: 4 FARGATE and 2 FARGATE_SPOT of 6.
    let split_call = || {
        c.run_task()
            .cluster(&cluster)
            .task_definition(&td)
            .count(6)
            .capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE")
                    .base(2)
                    .weight(1)
                    .build()
                    .expect("item"),
            )
            .capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE_SPOT")
                    .weight(1)
                    .build()
                    .expect("item"),
            )
            .network_configuration(subnet.network())
            .client_token("split-token")
            .send()
    };
    let r = split_call().await.expect("RunTask");
    // Split over two providers, the call is still idempotent.
    let again = split_call().await.expect("RunTask again");
    let arns = |o: &aws_sdk_ecs::operation::run_task::RunTaskOutput| {
        let mut v: Vec<String> = o
            .tasks()
            .iter()
            .filter_map(|t| t.task_arn().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert_eq!(arns(&again), arns(&r));
    assert!(r.failures().is_empty(), "{:?}", r.failures());
    let on = |p: &str| {
        r.tasks()
            .iter()
            .filter(|t| t.capacity_provider_name() == Some(p))
            .count()
    };
    assert_eq!((on("FARGATE"), on("FARGATE_SPOT")), (4, 2));
    assert!(r
        .tasks()
        .iter()
        .all(|t| t.launch_type() == Some(&LaunchType::Fargate)));
    for t in r.tasks() {
        c.stop_task()
            .cluster(&cluster)
            .task(t.task_arn().unwrap())
            .send()
            .await
            .expect("StopTask");
    }

    // DAEMON services take no strategy, the cluster's default included (launchType EC2 does).
    let (code, message) = err!(c
        .create_service()
        .cluster(&cluster)
        .service_name("daemon")
        .task_definition(&td)
        .scheduling_strategy(aws_sdk_ecs::types::SchedulingStrategy::Daemon)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect_err("DAEMON with the cluster's default strategy"));
    assert_eq!(code, "InvalidParameterException");
    assert!(
        message.starts_with("Specifying a capacity provider strategy is not supported"),
        "{message}"
    );
    let (code, _) = err!(c
        .create_service()
        .cluster(&cluster)
        .service_name("daemon")
        .task_definition(&td)
        .launch_type(LaunchType::Fargate)
        .scheduling_strategy(aws_sdk_ecs::types::SchedulingStrategy::Daemon)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect_err("DAEMON on Fargate"));
    assert_eq!(code, "InvalidParameterException");

    // A service with neither a launch type nor a strategy takes the cluster's default
    // (FARGATE_SPOT); an interrupted Spot task is stopped as AWS stops it, and replaced.
    let created = c
        .create_service()
        .cluster(&cluster)
        .service_name("spot")
        .task_definition(&td)
        .desired_count(1)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect("CreateService");
    let svc = created.service().expect("service");
    assert_eq!(svc.launch_type(), None);
    assert_eq!(
        svc.capacity_provider_strategy()[0].capacity_provider(),
        "FARGATE_SPOT"
    );
    let running_one = || async {
        let arns = c
            .list_tasks()
            .cluster(&cluster)
            .service_name("spot")
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .ok()?
            .task_arns()
            .to_vec();
        if arns.len() != 1 {
            return None;
        }
        let d = c
            .describe_tasks()
            .cluster(&cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .ok()?;
        let t = d.tasks().first()?.clone();
        (t.last_status() == Some("RUNNING")).then_some(t)
    };
    let spot = eventually(Duration::from_secs(60), "the Spot task", running_one)
        .await
        .unwrap();
    assert_eq!(spot.capacity_provider_name(), Some("FARGATE_SPOT"));
    let spot_arn = spot.task_arn().unwrap().to_string();
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ecs",
        "GantryV1.InterruptSpotTask",
        &serde_json::json!({"cluster": cluster, "task": spot_arn}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stopped = wait_task(c, &cluster, &spot_arn, "STOPPED", Duration::from_secs(30)).await;
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::SpotInterruption)
    );
    assert_eq!(
        stopped.stopped_reason(),
        Some("Your Spot Task was interrupted.")
    );
    let replacement = eventually(Duration::from_secs(60), "a replacement", || async {
        running_one()
            .await
            .filter(|t| t.task_arn() != Some(spot_arn.as_str()))
    })
    .await
    .unwrap();
    assert_eq!(replacement.capacity_provider_name(), Some("FARGATE_SPOT"));
    // The same through the Gantry CLI.
    let replacement_arn = replacement.task_arn().unwrap().to_string();
    let out = common::cli::gantry_within_as(
        Duration::from_secs(60),
        &[
            "interrupt",
            &replacement_arn,
            "--wait",
            "--endpoint",
            &dev.endpoint,
            "--cluster",
            &cluster,
        ],
        Some(&dev.keys),
    )
    .await;
    assert!(out.status.success(), "{}", out.text());
    assert!(out.stdout.contains("SpotInterruption"), "{}", out.text());
    let stopped = wait_task(
        c,
        &cluster,
        &replacement_arn,
        "STOPPED",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::SpotInterruption)
    );
    // Only Spot tasks can be interrupted.
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ecs",
        "GantryV1.InterruptSpotTask",
        &serde_json::json!({"cluster": cluster, "task": r.tasks()[0].task_arn()}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    c.delete_service()
        .cluster(&cluster)
        .service("spot")
        .force(true)
        .send()
        .await
        .expect("DeleteService");
    remove_containers(&format!(
        "com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{cluster}"
    ));
}

#[tokio::test]
async fn bad_launch_settings_are_refused_as_ecs_refuses_them_and_leave_nothing() {
    let dev = start().await;
    let c = &dev.client;
    // Fargate needs awsvpc and a size Fargate offers.
    let bridge = c
        .register_task_definition()
        .family(unique("bad"))
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(web())
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_ecs::error::ProvideErrorMetadata;
            let e = e.into_service_error();
            (
                e.code().unwrap_or_default().to_string(),
                e.message().unwrap_or_default().to_string(),
            )
        })
        .expect_err("bridge on Fargate");
    assert_eq!(bridge.0, "ClientException");
    assert_eq!(
        bridge.1,
        "Fargate only supports network mode \u{2018}awsvpc\u{2019}."
    );
    let size = c
        .register_task_definition()
        .family(unique("bad"))
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("512")
        .memory("256")
        .container_definitions(web())
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_ecs::error::ProvideErrorMetadata;
            e.into_service_error()
                .message()
                .unwrap_or_default()
                .to_string()
        })
        .expect_err("no such size");
    assert!(
        size.starts_with("No Fargate configuration exists for given values: 512 CPU, 256 memory."),
        "{size}"
    );

    let td = register_fargate(c, &unique("ok"), vec![web()]).await;
    let run = |network: Option<NetworkConfiguration>| {
        c.run_task()
            .cluster(&dev.cluster)
            .task_definition(&td)
            .launch_type(LaunchType::Fargate)
            .set_network_configuration(network)
            .send()
    };
    let (code, message) = err!(run(None).await.expect_err("no network configuration"));
    assert_eq!(code, "InvalidParameterException");
    assert_eq!(
        message,
        "Network Configuration must be provided when networkMode 'awsvpc' is specified."
    );
    let malformed = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets("not-a-subnet")
                .build()
                .unwrap(),
        )
        .build();
    let (code, message) = err!(run(Some(malformed)).await.expect_err("malformed subnet"));
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("InvalidSubnetID.Malformed"), "{message}");
    // A provider the cluster does not have, and a mix of Fargate and Auto Scaling group
    // providers.
    let strategy = |p: &str| {
        CapacityProviderStrategyItem::builder()
            .capacity_provider(p)
            .weight(1)
            .build()
            .unwrap()
    };
    let subnet = Subnet::new();
    let (code, message) = err!(c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .capacity_provider_strategy(strategy("FARGATE"))
        .network_configuration(subnet.network())
        .send()
        .await
        .expect_err("not associated"));
    assert_eq!(code, "InvalidParameterException");
    assert!(
        message.contains("not associated with the cluster"),
        "{message}"
    );
    let (code, _) = err!(c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .launch_type(LaunchType::Fargate)
        .capacity_provider_strategy(strategy("FARGATE"))
        .network_configuration(subnet.network())
        .send()
        .await
        .expect_err("both"));
    assert_eq!(code, "InvalidParameterException");
    // An EC2 definition asked to run on Fargate.
    let ec2 = register(
        c,
        &unique("ec2"),
        vec![busybox_container("a", &["sleep", "60"])],
    )
    .await;
    let (code, message) = err!(c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&ec2)
        .launch_type(LaunchType::Fargate)
        .send()
        .await
        .expect_err("EC2 definition on Fargate"));
    assert_eq!(code, "InvalidParameterException");
    assert!(
        message.starts_with("Task definition does not support launch_type FARGATE."),
        "{message}"
    );
    // Nothing was created by any of them.
    let listed = c
        .list_tasks()
        .cluster(&dev.cluster)
        .send()
        .await
        .expect("ListTasks");
    assert!(listed.task_arns().is_empty(), "{:?}", listed.task_arns());
}

#[tokio::test]
async fn ec2_instances_run_awsvpc_tasks_up_to_their_interface_limit() {
    let pool = awsvpc_pool();
    let dev = Dev::start_with(&["--awsvpc-cidr", &pool, "--awsvpc-task-limit", "1"]).await;
    let c = &dev.client;
    let subnet = Subnet::new();
    let td = c
        .register_task_definition()
        .family(unique("ec2vpc"))
        .network_mode(NetworkMode::Awsvpc)
        .container_definitions(
            ContainerDefinition::builder()
                .name("web")
                .image(IMAGE)
                .memory(64)
                .stop_timeout(2)
                .set_command(Some(web().command().to_vec()))
                .build(),
        )
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("ARN")
        .to_string();
    let r = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .count(2)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect("RunTask");
    assert_eq!(r.tasks().len(), 1, "{r:#?}");
    assert_eq!(r.failures()[0].reason(), Some("RESOURCE:ENI"));
    let t = &r.tasks()[0];
    assert!(t.container_instance_arn().is_some());
    assert_eq!(t.launch_type(), Some(&LaunchType::Ec2));
    let arn = t.task_arn().unwrap().to_string();
    let running = wait_task(c, &dev.cluster, &arn, "RUNNING", Duration::from_secs(60)).await;
    let ip = ip_of(&running);
    eventually(
        Duration::from_secs(20),
        "HTTP from the EC2 awsvpc task",
        || http_get(format!("http://{ip}:8080/")),
    )
    .await
    .unwrap();
    // StartTask names the instance and takes a network configuration too.
    let instance = t.container_instance_arn().unwrap().to_string();
    c.stop_task()
        .cluster(&dev.cluster)
        .task(&arn)
        .send()
        .await
        .expect("StopTask");
    wait_task(c, &dev.cluster, &arn, "STOPPED", Duration::from_secs(30)).await;
    let started = c
        .start_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .container_instances(&instance)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect("StartTask");
    assert!(started.failures().is_empty(), "{:?}", started.failures());
    let started_arn = started.tasks()[0].task_arn().unwrap().to_string();
    let running = wait_task(
        c,
        &dev.cluster,
        &started_arn,
        "RUNNING",
        Duration::from_secs(60),
    )
    .await;
    assert_ne!(ip_of(&running), ip, "next-fit: not the address just freed");
}

#[tokio::test]
async fn on_gantry_dev_a_new_cluster_runs_tasks_and_can_be_deleted_with_the_cli() {
    let pool = awsvpc_pool();
    let dev = Dev::start_unpinned(&["--awsvpc-cidr", &pool]).await;
    let aws = Aws::new(&dev);
    let cluster = unique("demo");
    aws.ok(&["ecs", "create-cluster", "--cluster-name", &cluster])
        .await;
    // The new cluster gets its own local instance.
    eventually(
        Duration::from_secs(30),
        "an instance in the new cluster",
        || async {
            let v = aws
                .ok(&["ecs", "list-container-instances", "--cluster", &cluster])
                .await;
            (v["containerInstanceArns"].as_array()?.len() == 1).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    wait_connected(&dev.client, &cluster, 1).await.unwrap();
    let td = aws
        .ok(&[
            "ecs",
            "register-task-definition",
            "--family",
            &unique("demo"),
            "--container-definitions",
            &format!(
                r#"[{{"name":"a","image":"{IMAGE}","memory":32,"stopTimeout":2,"command":["sleep","300"]}}]"#
            ),
        ])
        .await;
    let td_arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("ARN")
        .to_string();
    let run = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            &cluster,
            "--task-definition",
            &td_arn,
        ])
        .await;
    assert_eq!(run["failures"].as_array().map(Vec::len), Some(0), "{run}");
    let task = run["tasks"][0]["taskArn"]
        .as_str()
        .expect("task")
        .to_string();
    wait_task(
        &dev.client,
        &cluster,
        &task,
        "RUNNING",
        Duration::from_secs(60),
    )
    .await;
    aws.ok(&["ecs", "stop-task", "--cluster", &cluster, "--task", &task])
        .await;
    wait_task(
        &dev.client,
        &cluster,
        &task,
        "STOPPED",
        Duration::from_secs(30),
    )
    .await;
    // DeleteCluster takes the local instance with it.
    let deleted = aws
        .ok(&["ecs", "delete-cluster", "--cluster", &cluster])
        .await;
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    let described = aws
        .ok(&["ecs", "describe-clusters", "--clusters", &cluster])
        .await;
    assert_eq!(described["clusters"][0]["status"], "INACTIVE");
    // Its local agent goes, and takes its stopped task's container with it.
    let label =
        format!("com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{cluster}");
    eventually(
        Duration::from_secs(30),
        "the deleted cluster's containers to go",
        || {
            let gone = containers_with_label(&label).is_empty();
            async move { gone.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    // The default cluster's instance is still there and still works.
    let listed = aws
        .ok(&["ecs", "list-container-instances", "--cluster", "default"])
        .await;
    assert_eq!(
        listed["containerInstanceArns"].as_array().map(Vec::len),
        Some(1)
    );
    remove_containers(&format!(
        "com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{cluster}"
    ));
}

#[tokio::test]
async fn an_exhausted_subnet_or_pool_is_refused_and_allocates_nothing() {
    // A /29 pool: one subnet of five task addresses.
    let n = free_port() as u32;
    let pool = format!(
        "10.{}.{}.{}/29",
        100 + (n / 16) % 150,
        255 - n % 16,
        (n % 32) * 8
    );
    let dev = Dev::start_with(&["--awsvpc-cidr", &pool]).await;
    let c = &dev.client;
    let subnet = Subnet::new();
    let td = register_fargate(c, &unique("full"), vec![web()]).await;
    let r = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .count(7)
        .launch_type(LaunchType::Fargate)
        .network_configuration(subnet.network())
        .send()
        .await
        .expect("RunTask");
    assert_eq!(r.tasks().len(), 5, "{r:#?}");
    assert_eq!(r.failures().len(), 2);
    assert!(r
        .failures()
        .iter()
        .all(|f| f.reason() == Some("InsufficientFreeAddressesInSubnet")
            && f.detail().is_some_and(|d| d.contains(&subnet.0))));
    let mut ips: Vec<String> = r.tasks().iter().map(ip_of).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5, "five different addresses: {ips:?}");
    // The pool has no room for a second subnet: refused whole.
    let other = Subnet::new();
    let (code, message) = err!(c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .launch_type(LaunchType::Fargate)
        .network_configuration(other.network())
        .send()
        .await
        .expect_err("no range left"));
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("--awsvpc-cidr"), "{message}");
    let listed = c
        .list_tasks()
        .cluster(&dev.cluster)
        .send()
        .await
        .expect("ListTasks");
    assert_eq!(listed.task_arns().len(), 5);
    for arn in listed.task_arns() {
        wait_task(c, &dev.cluster, arn, "RUNNING", Duration::from_secs(60)).await;
    }
}

#[tokio::test]
async fn fargate_hosts_spread_tasks_over_zones_and_asg_providers_map_to_their_agents() {
    let pool = awsvpc_pool();
    let mut split = Split::start_with(0, &["--awsvpc-cidr", &pool]).await;
    // Two Fargate hosts in zones a and b; two hosts of the cluster, one of them the capacity
    // of the Auto Scaling group provider.
    split.spawn_agent_with(&["--fargate"]);
    split.spawn_agent_with(&["--fargate"]);
    split.spawn_agent_with(&["--capacity-provider", "asg-web"]);
    // Claiming to be gantry dev's local capacity means nothing to `gantry server`.
    split.spawn_agent_with(&["--attribute", "dev.gantry.local-capacity=true"]);
    split.wait_connected(2).await;
    let c = split.client.clone();
    let cluster = split.cluster.clone();
    let subnet = Subnet::new();
    let td = register_fargate(&c, &unique("zones"), vec![web()]).await;
    let zones = eventually(Duration::from_secs(30), "two Fargate hosts", || async {
        let r = c
            .run_task()
            .cluster(&cluster)
            .task_definition(&td)
            .count(2)
            .launch_type(LaunchType::Fargate)
            .network_configuration(subnet.network())
            .send()
            .await
            .ok()?;
        let mut zones: Vec<String> = r
            .tasks()
            .iter()
            .filter_map(|t| t.availability_zone().map(str::to_string))
            .collect();
        zones.sort();
        for t in r.tasks() {
            let _ = c
                .stop_task()
                .cluster(&cluster)
                .task(t.task_arn().unwrap_or_default())
                .send()
                .await;
        }
        (zones.len() == 2 && zones[0] != zones[1]).then_some(zones)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    assert_eq!(zones, vec!["us-east-1a", "us-east-1b"]);
    // The cluster's instances are its own two; the Fargate hosts are none of them.
    let listed = c
        .list_container_instances()
        .cluster(&cluster)
        .send()
        .await
        .expect("ListContainerInstances");
    assert_eq!(listed.container_instance_arns().len(), 2);

    // An Auto Scaling group provider's tasks run on the agents that joined it.
    c.create_capacity_provider()
        .name("asg-web")
        .auto_scaling_group_provider(
            aws_sdk_ecs::types::AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn(
                    "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:1:autoScalingGroupName/web",
                )
                .build()
                .expect("provider"),
        )
        .send()
        .await
        .expect("CreateCapacityProvider");
    c.put_cluster_capacity_providers()
        .cluster(&cluster)
        .capacity_providers("asg-web")
        .set_default_capacity_provider_strategy(Some(Vec::new()))
        .send()
        .await
        .expect("PutClusterCapacityProviders");
    let ec2 = register(
        &c,
        &unique("asg"),
        vec![busybox_container("a", &["sleep", "300"])],
    )
    .await;
    let r = c
        .run_task()
        .cluster(&cluster)
        .task_definition(&ec2)
        .count(3)
        .capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("asg-web")
                .weight(1)
                .build()
                .expect("item"),
        )
        .send()
        .await
        .expect("RunTask");
    assert_eq!(r.tasks().len(), 3, "{r:#?}");
    let hosts: std::collections::BTreeSet<&str> = r
        .tasks()
        .iter()
        .filter_map(|t| t.container_instance_arn())
        .collect();
    assert_eq!(hosts.len(), 1, "all on the provider's one agent");
    assert!(r
        .tasks()
        .iter()
        .all(|t| t.capacity_provider_name() == Some("asg-web")
            && t.launch_type() == Some(&LaunchType::Ec2)));
    let described = c
        .describe_container_instances()
        .cluster(&cluster)
        .container_instances(*hosts.iter().next().unwrap())
        .send()
        .await
        .expect("DescribeContainerInstances");
    assert_eq!(
        described.container_instances()[0].capacity_provider_name(),
        Some("asg-web")
    );
    for t in r.tasks() {
        wait_task(
            &c,
            &cluster,
            t.task_arn().unwrap(),
            "RUNNING",
            Duration::from_secs(60),
        )
        .await;
    }
    // With the provider's instance gone (its tasks stopped with it), only the instance that
    // claims to be local capacity remains: `gantry server` still refuses to delete the cluster.
    let asg_instance = hosts.iter().next().unwrap().to_string();
    c.deregister_container_instance()
        .cluster(&cluster)
        .container_instance(&asg_instance)
        .force(true)
        .send()
        .await
        .expect("DeregisterContainerInstance");
    let (code, _) = err!(c
        .delete_cluster()
        .cluster(&cluster)
        .send()
        .await
        .expect_err("an active instance"));
    assert_eq!(code, "ClusterContainsContainerInstancesException");
}

#[tokio::test]
async fn gantry_run_starts_a_fargate_definition_and_ps_shows_its_address() {
    use common::cli::*;
    let dev = start().await;
    let subnet = Subnet::new();
    let file = dev.dir.path().join("fargate.json");
    let family = unique("clifg");
    std::fs::write(
        &file,
        serde_json::json!({
            "family": family,
            "requiresCompatibilities": ["FARGATE"],
            "networkMode": "awsvpc",
            "cpu": "256",
            "memory": "512",
            "containerDefinitions": [{
                "name": "web",
                "image": IMAGE,
                "stopTimeout": 2,
                "command": ["sh", "-c", "echo fargate-output; mkdir -p /www && echo cli > /www/index.html && exec httpd -f -p 8080 -h /www"],
            }],
        })
        .to_string(),
    )
    .expect("write");
    let path = file.display().to_string();
    let out = gantry_within_as(
        Duration::from_secs(90),
        &at_dev(&dev, &["run", &path, "--subnet", &subnet.0]),
        Some(&dev.keys),
    )
    .await;
    assert!(out.status.success(), "{}", out.text());
    let ps = gantry_within_as(
        Duration::from_secs(30),
        &at_dev(&dev, &["ps"]),
        Some(&dev.keys),
    )
    .await;
    assert!(ps.status.success(), "{}", ps.text());
    let ip = ps
        .stdout
        .split_whitespace()
        .find(|w| w.split('.').count() == 4 && w.starts_with("10."))
        .unwrap_or_else(|| panic!("no address in ps: {}", ps.text()))
        .to_string();
    let body = eventually(Duration::from_secs(20), "HTTP from the CLI's task", || {
        http_get(format!("http://{ip}:8080/"))
    })
    .await
    .unwrap();
    assert_eq!(body.trim(), "cli");
    let listed = dev
        .client
        .list_tasks()
        .cluster(&dev.cluster)
        .launch_type(LaunchType::Fargate)
        .send()
        .await
        .expect("ListTasks");
    assert_eq!(
        listed.task_arns().len(),
        1,
        "gantry run chose FARGATE for a Fargate-only definition"
    );
    // The Fargate host ships the task's output like any agent.
    let task = listed.task_arns()[0].clone();
    eventually(Duration::from_secs(20), "the task's output", || async {
        let out = gantry_within_as(
            Duration::from_secs(30),
            &at_dev(&dev, &["logs", &task]),
            Some(&dev.keys),
        )
        .await;
        out.stdout.contains("fargate-output").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
}
