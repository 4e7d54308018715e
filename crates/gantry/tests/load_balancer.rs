//! Services behind Gantry's load balancer, on real containers (busybox `httpd` in bridge mode
//! on dynamic host ports), driven by the AWS CLI (`aws elbv2`) and the AWS SDK for Rust:
//! tasks register in their target group when RUNNING, a rolling deployment under load loses
//! no request, a target group that finds a task unhealthy gets it replaced with ECS's reason,
//! and a stopping task drains (an in-flight slow request finishes) before its agent stops it.
//!
//! Every test has its own `gantry dev`; the load balancer listens on a free loopback port.
//! Every wait polls with a deadline; load loops are bounded in count and time.

mod common;

use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentConfiguration, LoadBalancer, PortMapping, Service,
    TransportProtocol,
};
use common::svc::*;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WEB_PORT: i32 = 8080;
/// A service's tasks started, registered and found healthy (2 checks, 1 s apart... plus
/// image and container starts).
const STEADY: Duration = Duration::from_secs(120);

/// busybox httpd on 8080 serving `version` at `/`, and `/cgi-bin/slow` answering after
/// `slow_secs` seconds. `/health` exists only when `healthy`.
fn web(version: &str, healthy: bool, slow_secs: u32) -> ContainerDefinition {
    let health = if healthy {
        "echo ok > /www/health && "
    } else {
        ""
    };
    let script = format!(
        "mkdir -p /www/cgi-bin && echo {version} > /www/index.html && echo {version} > /www/weighted && {health}\
         printf '#!/bin/sh\\nsleep {slow_secs}\\necho Content-Type: text/plain\\necho\\necho slow-done\\n' > /www/cgi-bin/slow && \
         chmod +x /www/cgi-bin/slow && exec httpd -f -p {WEB_PORT} -h /www"
    );
    ContainerDefinition::builder()
        .name("web")
        .image(IMAGE)
        .memory(64)
        .stop_timeout(2)
        .essential(true)
        .port_mappings(
            PortMapping::builder()
                .container_port(WEB_PORT)
                .host_port(0)
                .protocol(TransportProtocol::Tcp)
                .build(),
        )
        .set_command(Some(vec!["sh".into(), "-c".into(), script]))
        .build()
}

/// A target group (instance targets, fast health checks), a load balancer and a listener on a
/// free loopback port forwarding to the group. Returns (target group ARN, listener port).
async fn load_balancer(aws: &Aws, name: &str, health_path: &str) -> (String, u16) {
    load_balancer_for(aws, name, health_path, "instance").await
}

async fn load_balancer_for(
    aws: &Aws,
    name: &str,
    health_path: &str,
    target_type: &str,
) -> (String, u16) {
    let tg = aws
        .ok(&[
            "elbv2",
            "create-target-group",
            "--name",
            name,
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            "vpc-gantry",
            "--target-type",
            target_type,
            "--health-check-path",
            health_path,
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
            "--unhealthy-threshold-count",
            "2",
        ])
        .await;
    let tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .expect("TargetGroupArn")
        .to_string();
    let lb = aws
        .ok(&[
            "elbv2",
            "create-load-balancer",
            "--name",
            name,
            "--subnets",
            "subnet-a",
            "subnet-b",
        ])
        .await;
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .expect("LoadBalancerArn")
        .to_string();
    let port = free_port();
    aws.ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb_arn,
        "--protocol",
        "HTTP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg_arn}"),
    ])
    .await;
    (tg_arn, port)
}

async fn target_states(aws: &Aws, tg_arn: &str) -> Vec<(String, String)> {
    let out = aws
        .ok(&[
            "elbv2",
            "describe-target-health",
            "--target-group-arn",
            tg_arn,
        ])
        .await;
    out["TargetHealthDescriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                format!(
                    "{}:{}",
                    d["Target"]["Id"].as_str().unwrap_or("?"),
                    d["Target"]["Port"]
                ),
                d["TargetHealth"]["State"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect()
}

async fn wait_healthy_targets(aws: &Aws, tg_arn: &str, n: usize, dev: &Dev) {
    let deadline = Instant::now() + STEADY;
    loop {
        let states = target_states(aws, tg_arn).await;
        let healthy = states.iter().filter(|(_, s)| s == "healthy").count();
        if healthy == n && states.len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} healthy targets expected, have {states:?}\n{}",
            control_log(dev)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn create_service(
    dev: &Dev,
    name: &str,
    td: &str,
    count: i32,
    tg_arn: &str,
    grace: Option<i32>,
) -> Service {
    dev.client
        .create_service()
        .cluster(&dev.cluster)
        .service_name(name)
        .task_definition(td)
        .desired_count(count)
        .load_balancers(
            LoadBalancer::builder()
                .target_group_arn(tg_arn)
                .container_name("web")
                .container_port(WEB_PORT)
                .build(),
        )
        .set_health_check_grace_period_seconds(grace)
        .deployment_configuration(
            DeploymentConfiguration::builder()
                .minimum_healthy_percent(100)
                .maximum_percent(200)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateService {name}: {e:?}"))
        .service()
        .cloned()
        .expect("service")
}

/// The control plane's side of the log (the agent's lines left out), to append to a failure.
fn control_log(dev: &Dev) -> String {
    let lines: Vec<String> = dev
        .proc
        .output()
        .lines()
        .filter(|l| !l.contains("gantry_agent"))
        .map(str::to_string)
        .collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The service's tasks asked to stop (draining ones included), described.
async fn asked_to_stop(dev: &Dev, service: &str) -> Vec<aws_sdk_ecs::types::Task> {
    let arns = list_service_tasks(
        &dev.client,
        &dev.cluster,
        service,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    )
    .await;
    describe_task_arns(&dev.client, &dev.cluster, &arns).await
}

/// What the load balancer answers at `/`: (status, body).
async fn get(http: &reqwest::Client, port: u16, path: &str) -> Result<(u16, String), String> {
    let r = http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((status, body.trim().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deployment_behind_the_load_balancer_fails_no_request() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let (tg_arn, port) = load_balancer(&aws, "roll", "/").await;
    let v1 = register(&dev.client, "roll", vec![web("v1", true, 1)]).await;
    create_service(&dev, "roll", &v1, 3, &tg_arn, Some(30)).await;
    wait_healthy_targets(&aws, &tg_arn, 3, &dev).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    assert_eq!(get(&http, port, "/").await, Ok((200, "v1".to_string())));

    // A steady load of about 200 requests/s, bounded to 3 minutes, while the service rolls to v2.
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served_v2 = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, failures, served_v2, total, stop) = (
            http.clone(),
            failures.clone(),
            served_v2.clone(),
            total.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(180);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match get(&http, port, "/").await {
                    Ok((200, body)) => {
                        if body == "v2" {
                            served_v2.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    other => failures
                        .lock()
                        .expect("failures")
                        .push(format!("{other:?}")),
                }
                total.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let v2 = register(&dev.client, "roll", vec![web("v2", true, 1)]).await;
    let started = Instant::now();
    dev.client
        .update_service()
        .cluster(&dev.cluster)
        .service("roll")
        .task_definition(&v2)
        .send()
        .await
        .expect("UpdateService");
    let deadline = started + Duration::from_secs(150);
    loop {
        let s = describe_service(&dev.client, &dev.cluster, "roll").await;
        if is_steady_on(&s, 3, &v2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: {}\n{}",
            summary(&s),
            control_log(&dev)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    // A little more load on the new tasks alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.expect("load task");
    }
    let failures = failures.lock().expect("failures").clone();
    let total = total.load(Ordering::SeqCst);
    assert!(total > 200, "too little load to mean anything: {total}");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed during the rollout (took {took:?}): {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(served_v2.load(Ordering::SeqCst) > 0, "v2 never served");
    assert_eq!(get(&http, port, "/").await, Ok((200, "v2".to_string())));
    wait_healthy_targets(&aws, &tg_arn, 3, &dev).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_target_group_finds_unhealthy_is_replaced_with_ecs_reason() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    // `/health` does not exist: httpd answers 404, which the matcher (200) refuses.
    let (tg_arn, _port) = load_balancer(&aws, "sick", "/health").await;
    let td = register(&dev.client, "sick", vec![web("v1", false, 1)]).await;
    create_service(&dev, "sick", &td, 1, &tg_arn, Some(0)).await;
    let reason = format!("Task failed ELB health checks in (target-group {tg_arn})");
    let deadline = Instant::now() + STEADY;
    loop {
        let stopped = asked_to_stop(&dev, "sick").await;
        if stopped
            .iter()
            .any(|t| t.stopped_reason() == Some(reason.as_str()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no task stopped for failed ELB health checks: {}\n{}",
            task_lines(&stopped),
            control_log(&dev)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = describe_service(&dev.client, &dev.cluster, "sick").await;
    assert!(
        s.events().iter().any(|e| e
            .message()
            .is_some_and(|m| m.contains("is unhealthy in (target-group")
                && m.contains("Health checks failed with these codes: [404]"))),
        "{}",
        summary(&s)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_task_drains_its_in_flight_request_then_stops_early() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let (tg_arn, port) = load_balancer(&aws, "drain", "/").await;
    // The default deregistration delay (300 s) stays: draining must end when the request does.
    let td = register(&dev.client, "drain", vec![web("v1", true, 4)]).await;
    create_service(&dev, "drain", &td, 1, &tg_arn, None).await;
    wait_healthy_targets(&aws, &tg_arn, 1, &dev).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let slow = {
        let http = http.clone();
        tokio::spawn(async move { get(&http, port, "/cgi-bin/slow").await })
    };
    // The request is in flight (it takes 4 s); scale the service to zero.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scaled = Instant::now();
    dev.client
        .update_service()
        .cluster(&dev.cluster)
        .service("drain")
        .desired_count(0)
        .send()
        .await
        .expect("UpdateService");
    // While it drains, the target is `draining` and the task still RUNNING.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states = target_states(&aws, &tg_arn).await;
        if states.iter().any(|(_, s)| s == "draining") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the target never drained: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = asked_to_stop(&dev, "drain").await;
    assert!(
        running.iter().all(|t| t.last_status() == Some("RUNNING")),
        "the task must keep running while it drains: {}",
        task_lines(&running)
    );
    let answer = slow.await.expect("slow request task");
    assert_eq!(answer, Ok((200, "slow-done".to_string())));
    // Draining ends with the request, not after the 300 s delay.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = asked_to_stop(&dev, "drain").await;
        if !tasks.is_empty() && tasks.iter().all(|t| t.last_status() == Some("STOPPED")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task did not stop after its drain: {}",
            task_lines(&tasks)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        scaled.elapsed() < Duration::from_secs(40),
        "drain took {:?}",
        scaled.elapsed()
    );
    let states: Vec<(String, String)> = target_states(&aws, &tg_arn).await;
    assert!(states.is_empty(), "targets left: {states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fargate_tasks_are_ip_targets_reached_at_their_own_addresses() {
    let pool = awsvpc_pool();
    let dev = Dev::start_with(&["--awsvpc-cidr", &pool]).await;
    let subnet = Subnet::new();
    let aws = Aws::new(&dev);
    let (tg_arn, port) = load_balancer_for(&aws, "vpc", "/", "ip").await;
    let td = dev
        .client
        .register_task_definition()
        .family("vpc")
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(web("fargate", true, 1))
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("ARN")
        .to_string();
    dev.client
        .create_service()
        .cluster(&dev.cluster)
        .service_name("vpc")
        .task_definition(&td)
        .desired_count(2)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .subnets(&subnet.0)
                        .build()
                        .expect("awsvpc configuration"),
                )
                .build(),
        )
        .load_balancers(
            LoadBalancer::builder()
                .target_group_arn(&tg_arn)
                .container_name("web")
                .container_port(WEB_PORT)
                .build(),
        )
        .send()
        .await
        .expect("CreateService");
    wait_healthy_targets(&aws, &tg_arn, 2, &dev).await;
    // Each target is a task's own address and the container's port.
    let states = target_states(&aws, &tg_arn).await;
    let pool_prefix = pool.split('.').take(2).collect::<Vec<_>>().join(".");
    for (target, _) in &states {
        assert!(
            target.starts_with(&pool_prefix) && target.ends_with(&format!(":{WEB_PORT}")),
            "{states:?} (pool {pool})"
        );
    }
    let http = reqwest::Client::new();
    assert_eq!(
        get(&http, port, "/").await,
        Ok((200, "fargate".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_service_checks_its_target_groups_with_ecs_errors() {
    use aws_sdk_ecs::error::ProvideErrorMetadata;
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let (instance_tg, _) = load_balancer(&aws, "checked", "/").await;
    let (ip_tg, _) = load_balancer_for(&aws, "checked-ip", "/", "ip").await;
    let unused = aws
        .ok(&[
            "elbv2",
            "create-target-group",
            "--name",
            "lonely",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            "vpc-gantry",
        ])
        .await["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .expect("ARN")
        .to_string();
    let td = register(&dev.client, "checked", vec![web("v1", true, 1)]).await;
    let missing = instance_tg.replace("targetgroup/checked/", "targetgroup/nothing/");
    let cases: Vec<(&str, String, &str, i32, String)> = vec![
        (
            "missing group",
            missing.clone(),
            "web",
            WEB_PORT,
            format!("The target group with targetGroupArn {missing} does not exist."),
        ),
        (
            "group without a listener",
            unused.clone(),
            "web",
            WEB_PORT,
            format!(
                "The target group with targetGroupArn {unused} does not have an associated load balancer."
            ),
        ),
        (
            "unknown container",
            instance_tg.clone(),
            "db",
            WEB_PORT,
            "The container db does not exist in the task definition.".to_string(),
        ),
        (
            "port not mapped",
            instance_tg.clone(),
            "web",
            9999,
            "The container web did not have a container port 9999 defined.".to_string(),
        ),
        (
            "ip group for a bridge task",
            ip_tg.clone(),
            "web",
            WEB_PORT,
            format!(
                "The provided target group {ip_tg} has target type ip, which is incompatible with the bridge network mode specified in the task definition."
            ),
        ),
    ];
    for (what, arn, container, port, message) in cases {
        let err = dev
            .client
            .create_service()
            .cluster(&dev.cluster)
            .service_name("checked")
            .task_definition(&td)
            .desired_count(1)
            .load_balancers(
                LoadBalancer::builder()
                    .target_group_arn(&arn)
                    .container_name(container)
                    .container_port(port)
                    .build(),
            )
            .send()
            .await
            .expect_err(what);
        assert_eq!(
            err.code(),
            Some("InvalidParameterException"),
            "{what}: {err:?}"
        );
        assert_eq!(err.message(), Some(message.as_str()), "{what}");
    }
    // Nothing was created by the refused calls; a correct one goes through.
    create_service(&dev, "checked", &td, 0, &instance_tg, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_port_in_use_is_refused_and_a_free_one_serves() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let lb = aws
        .ok(&["elbv2", "create-load-balancer", "--name", "ports"])
        .await["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .expect("ARN")
        .to_string();
    // Another program holds this port.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port().to_string();
    let fixed = "Type=fixed-response,FixedResponseConfig={StatusCode=200,ContentType=text/plain,MessageBody=gantry}";
    let refused = aws
        .run(&[
            "elbv2",
            "create-listener",
            "--load-balancer-arn",
            &lb,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            fixed,
        ])
        .await;
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("InvalidConfigurationRequest") && refused.stderr.contains(&port),
        "{}",
        refused.stderr
    );
    let listed = aws
        .ok(&["elbv2", "describe-listeners", "--load-balancer-arn", &lb])
        .await;
    assert_eq!(
        listed["Listeners"],
        serde_json::json!([]),
        "nothing was created"
    );
    // Freed, the same port serves (the data plane binds it as the listener record lands).
    drop(held);
    aws.ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port,
        "--default-actions",
        fixed,
    ])
    .await;
    let http = reqwest::Client::new();
    let port: u16 = port.parse().expect("port");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(&http, port, "/").await {
            Ok(answer) => {
                assert_eq!(answer, (200, "gantry".to_string()));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the listener never served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` requests to the listener and counts the bodies.
async fn tally(
    http: &reqwest::Client,
    port: u16,
    path: &str,
    host: Option<&str>,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let mut request = http.get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body").trim().to_string();
        *counts.entry(format!("{status} {body}")).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_and_weighted_rules_route_to_real_containers() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    // Two groups, one service each; the listener's default rule forwards to "blue".
    let (blue_tg, port) = load_balancer(&aws, "blue", "/").await;
    let green_tg = aws
        .ok(&[
            "elbv2",
            "create-target-group",
            "--name",
            "green",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            "vpc-gantry",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
        ])
        .await["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .expect("ARN")
        .to_string();
    let listener = aws
        .ok(&["elbv2", "describe-load-balancers", "--names", "blue"])
        .await["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .map(str::to_string)
        .expect("ARN");
    let listener = aws
        .ok(&[
            "elbv2",
            "describe-listeners",
            "--load-balancer-arn",
            &listener,
        ])
        .await["Listeners"][0]["ListenerArn"]
        .as_str()
        .map(str::to_string)
        .expect("listener ARN");
    let rule = |priority: &str, conditions: String, actions: String| {
        vec![
            "elbv2".to_string(),
            "create-rule".into(),
            "--listener-arn".into(),
            listener.clone(),
            "--priority".into(),
            priority.into(),
            "--conditions".into(),
            conditions,
            "--actions".into(),
            actions,
        ]
    };
    for args in [
        rule(
            "10",
            r#"[{"Field":"host-header","HostHeaderConfig":{"Values":["green.example"]}}]"#.into(),
            format!(r#"[{{"Type":"forward","TargetGroupArn":"{green_tg}"}}]"#),
        ),
        rule(
            "20",
            r#"[{"Field":"path-pattern","PathPatternConfig":{"Values":["/weighted*"]}}]"#.into(),
            format!(
                r#"[{{"Type":"forward","ForwardConfig":{{"TargetGroups":[{{"TargetGroupArn":"{blue_tg}","Weight":3}},{{"TargetGroupArn":"{green_tg}","Weight":1}}]}}}}]"#
            ),
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        aws.ok(&args).await;
    }
    let blue = register(&dev.client, "blue", vec![web("blue", true, 1)]).await;
    let green = register(&dev.client, "green", vec![web("green", true, 1)]).await;
    create_service(&dev, "blue", &blue, 1, &blue_tg, None).await;
    create_service(&dev, "green", &green, 1, &green_tg, None).await;
    wait_healthy_targets(&aws, &blue_tg, 1, &dev).await;
    wait_healthy_targets(&aws, &green_tg, 1, &dev).await;

    let http = reqwest::Client::new();
    let by_default = tally(&http, port, "/", None, 20).await;
    assert_eq!(by_default.get("200 blue"), Some(&20), "{by_default:?}");
    let by_host = tally(&http, port, "/", Some("green.example:8080"), 20).await;
    assert_eq!(by_host.get("200 green"), Some(&20), "{by_host:?}");
    // 3:1 over 2,000 requests: blue within 75 % ± 5 %.
    let weighted = tally(&http, port, "/weighted", None, 2000).await;
    let blue_share = weighted.get("200 blue").copied().unwrap_or(0) as f64 / 2000.0;
    let green_share = weighted.get("200 green").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (blue_share - 0.75).abs() <= 0.05 && (blue_share + green_share - 1.0).abs() < 1e-9,
        "{weighted:?}"
    );
}
