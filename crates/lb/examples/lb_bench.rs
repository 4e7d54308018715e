//! Serves one listener forwarding to the given targets, for load tests with wrk:
//! `cargo run --release -p gantry-lb --example lb_bench -- <port> <target ip:port>... `
//! (`GANTRY_LB_THREADS` sets the load balancer's worker threads, 2 by default;
//! `GANTRY_LB_HYPER_ONLY=1` serves everything with hyper, without the HTTP/1.1 forwarding path).
//!
//! How it was compared: one nginx worker as the target (`return 200 "ok\n"`), and in front of
//! it this (one worker), nginx (one worker, `proxy_pass` to an upstream with `keepalive`,
//! `X-Forwarded-*` set) and HAProxy (`nbthread 1`, `http-reuse always`, `option forwardfor`),
//! each measured with `wrk -t1 -c50 -d4s` in turn, noting requests per second and the proxy's
//! CPU time per request (from `/proc/<pid>/stat`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use gantry_lb::{Limits, LoadBalancer};
use gantry_model::elbv2::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8080);
    let targets: Vec<SocketAddr> = args.filter_map(|a| a.parse().ok()).collect();
    let threads = std::env::var("GANTRY_LB_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    // The load balancer serves on its own worker threads; this runtime only runs its
    // health checks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let limits = Limits {
            worker_threads: threads,
            http1_forwarding: std::env::var("GANTRY_LB_HYPER_ONLY").map_or(true, |v| v != "1"),
            ..Limits::default()
        };
        let lb = LoadBalancer::with_limits(IpAddr::V4(Ipv4Addr::LOCALHOST), limits);
        lb.put_target_group(TargetGroupConfig {
            arn: "tg/bench".into(),
            name: "bench".into(),
            target_type: TargetType::Ip,
            protocol_version: TargetProtocolVersion::Http1,
            health_check: HealthCheckConfig {
                enabled: true,
                path: "/".into(),
                port: None,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
                matcher: "200-399".into(),
            },
            algorithm: Algorithm::RoundRobin,
            deregistration_delay: Duration::from_secs(5),
            slow_start: Duration::ZERO,
            stickiness: None,
            app_cookie: None,
            targets: targets
                .iter()
                .map(|t| TargetConfig {
                    id: t.ip().to_string(),
                    port: t.port(),
                    address: t.ip(),
                })
                .collect(),
        });
        lb.put_listener(ListenerConfig {
            arn: "l/bench".into(),
            load_balancer_arn: "lb/bench".into(),
            load_balancer_name: "bench".into(),
            port,
            rules: vec![RuleConfig {
                arn: "rule/default".into(),
                priority: None,
                conditions: Vec::new(),
                action: RuleAction::Forward {
                    target_groups: vec![WeightedTargetGroup {
                        arn: "tg/bench".into(),
                        weight: 1,
                    }],
                    stickiness: None,
                },
            }],
            idle_timeout: Duration::from_secs(60),
        })
        .expect("the listener binds");
        eprintln!("listening on 127.0.0.1:{port}");
        std::future::pending::<()>().await;
    });
}
