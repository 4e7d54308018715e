//! A rolling deployment behind Gantry's load balancer under load, timed.
//!
//! A service of 3 busybox `httpd` tasks (bridge mode, dynamic host ports; minimumHealthyPercent
//! 100, maximumPercent 200) registered in an `instance` target group (health checks every
//! 5 s, healthy after 2) behind a listener on a loopback port. While 6 clients send requests
//! through the listener in a loop (each pausing 20 ms: a few hundred requests/s), the service
//! is updated to a new revision; the sample is the time from UpdateService returning until the
//! service is steady with its 3 tasks on the new revision, and every failed request (a status
//! other than 200, or a transport error) is counted. The default deregistration delay (300 s)
//! stays: each old task drains only as long as its in-flight requests last.
//!
//! `cargo bench -p gantry --bench lb_rolling`; `GANTRY_BENCH_SAMPLES` sets the sample count
//! (default 3). It prints the median, every sample and the failed-request counts; it asserts
//! nothing about time. Every load loop is bounded (it stops with its sample, or after 3
//! minutes).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentConfiguration, LoadBalancer, PortMapping, TransportProtocol,
};
use common::svc::*;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const WEB_PORT: i32 = 8080;
const LIMIT: Duration = Duration::from_secs(180);

fn web(version: &str) -> ContainerDefinition {
    ContainerDefinition::builder()
        .name("web")
        .image(IMAGE)
        .memory(64)
        .stop_timeout(2)
        .port_mappings(
            PortMapping::builder()
                .container_port(WEB_PORT)
                .host_port(0)
                .protocol(TransportProtocol::Tcp)
                .build(),
        )
        .set_command(Some(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "mkdir -p /www && echo {version} > /www/index.html && exec httpd -f -p {WEB_PORT} -h /www"
            ),
        ]))
        .build()
}

fn arn_of(v: &serde_json::Value, list: &str, member: &str) -> String {
    v[list][0][member]
        .as_str()
        .unwrap_or_else(|| panic!("{list}[0].{member} missing: {v}"))
        .to_string()
}

async fn healthy_targets(aws: &Aws, tg: &str) -> usize {
    let out = aws
        .ok(&["elbv2", "describe-target-health", "--target-group-arn", tg])
        .await;
    out["TargetHealthDescriptions"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .filter(|d| d["TargetHealth"]["State"] == "healthy")
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let tg = arn_of(
        &aws.ok(&[
            "elbv2",
            "create-target-group",
            "--name",
            "bench",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            "vpc-gantry",
            "--target-type",
            "instance",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
        ])
        .await,
        "TargetGroups",
        "TargetGroupArn",
    );
    let lb = arn_of(
        &aws.ok(&["elbv2", "create-load-balancer", "--name", "bench"])
            .await,
        "LoadBalancers",
        "LoadBalancerArn",
    );
    let port = free_port();
    aws.ok(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg}"),
    ])
    .await;
    let revisions = [
        register(&dev.client, "bench-lb", vec![web("a")]).await,
        register(&dev.client, "bench-lb", vec![web("b")]).await,
    ];
    dev.client
        .create_service()
        .cluster(&dev.cluster)
        .service_name("bench-lb")
        .task_definition(&revisions[0])
        .desired_count(3)
        .load_balancers(
            LoadBalancer::builder()
                .target_group_arn(&tg)
                .container_name("web")
                .container_port(WEB_PORT)
                .build(),
        )
        .deployment_configuration(
            DeploymentConfiguration::builder()
                .minimum_healthy_percent(100)
                .maximum_percent(200)
                .build(),
        )
        .send()
        .await
        .expect("CreateService");
    let deadline = Instant::now() + LIMIT;
    while healthy_targets(&aws, &tg).await < 3 {
        assert!(Instant::now() < deadline, "3 healthy targets never came");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let n = samples(3);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (mut times, mut failed, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let to = &revisions[(i + 1) % 2];
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut load = Vec::new();
        for _ in 0..6 {
            let (http, stop, ok, bad) = (http.clone(), stop.clone(), ok.clone(), bad.clone());
            load.push(tokio::spawn(async move {
                let until = Instant::now() + LIMIT;
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    let answer = http.get(format!("http://127.0.0.1:{port}/")).send().await;
                    let served = match answer {
                        Ok(r) => r.status().as_u16() == 200 && r.text().await.is_ok(),
                        Err(_) => false,
                    };
                    if served {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        dev.client
            .update_service()
            .cluster(&dev.cluster)
            .service("bench-lb")
            .task_definition(to)
            .send()
            .await
            .expect("UpdateService");
        let started = Instant::now();
        loop {
            let s = describe_service(&dev.client, &dev.cluster, "bench-lb").await;
            if is_steady_on(&s, 3, to) {
                break;
            }
            assert!(
                started.elapsed() < LIMIT,
                "rollout {i} stuck: {}",
                summary(&s)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        stop.store(true, Ordering::SeqCst);
        for l in load {
            let _ = l.await;
        }
        failed.push(bad.load(Ordering::SeqCst));
        sent.push(ok.load(Ordering::SeqCst) + bad.load(Ordering::SeqCst));
    }
    println!(
        "rolling deployment of 3 tasks behind the load balancer under load; {n} samples; goal < 30000 ms, 0 failed requests"
    );
    report("UpdateService -> steady", &times);
    for (i, (f, s)) in failed.iter().zip(&sent).enumerate() {
        println!("  sample {}: {f} failed of {s} requests", i + 1);
    }
}
