//! `gantry bench task-endpoints`: the latency of a container's credentials request
//! (`GET /v2/credentials/<id>`) through the machine-wide front, the way a container's SDK
//! makes it.
//!
//! In this process: one agent's endpoints server (`gantry_agent::task_endpoints`) with
//! `--tasks` tasks that have a task role (credentials from a stand-in source: the request path
//! never calls the control plane), and the front on a loopback port reading a registry in a
//! temporary directory, exactly the code that serves `169.254.170.2:80`. Each request is
//! timed from send to the last byte of the answer, in three ways: through the front on a new
//! connection per request (what an SDK refreshing its credentials does), through the front on
//! a kept-alive connection, and straight to the agent's own port (what the front adds).
//! Requests go one at a time, or `--concurrency` at once, cycling over the tasks.

use crate::bench::stats::{round1, Latency};
use clap::Args;
use futures::future::BoxFuture;
use gantry_agent::api_client::ApiError;
use gantry_agent::task_endpoints::credentials::CredentialsSource;
use gantry_agent::task_endpoints::ids::IdKey;
use gantry_agent::task_endpoints::registry::Registry;
use gantry_agent::task_endpoints::{
    front, TaskEndpoints, TaskEndpointsConfig, TaskLease, CREDENTIALS_URI_VAR,
};
use gantry_model::agent_protocol::{AssignedContainer, TaskAssignment, TaskRoleCredentials};
use gantry_model::types::{ContainerDefinition, TaskDefinition};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Reproduce the recorded figures (docs/PERFORMANCE.md, \"Task endpoints\") with:
  cargo run --release -p gantry -- bench task-endpoints --requests 20000";

#[derive(Args)]
pub struct TaskEndpointsArgs {
    /// Requests timed in each of the three ways.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Tasks with a task role served by the agent (requests cycle over them).
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Credentials that never expire within the run.
struct StandIn;

impl CredentialsSource for StandIn {
    fn fetch(&self, task_arn: &str) -> BoxFuture<'_, Result<TaskRoleCredentials, ApiError>> {
        let c = TaskRoleCredentials {
            role_arn: "arn:aws:iam::000000000000:role/bench".into(),
            access_key_id: "ASIABENCHBENCHBENCH0".into(),
            secret_access_key: format!("{:0>40}", task_arn.len()),
            session_token: "IQoJ".repeat(80),
            expiration: gantry_model::now_epoch() + 6.0 * 3600.0,
        };
        Box::pin(async move { Ok(c) })
    }
}

fn assignment(i: usize) -> TaskAssignment {
    TaskAssignment {
        task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/bench/{i:032x}"),
        cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/bench".into(),
        desired_status: "RUNNING".into(),
        version: 1,
        task_definition: TaskDefinition {
            family: "bench".into(),
            revision: Some(1),
            task_role_arn: Some("arn:aws:iam::000000000000:role/bench".into()),
            container_definitions: vec![ContainerDefinition {
                name: Some("app".into()),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
        overrides: None,
        containers: vec![AssignedContainer {
            name: "app".into(),
            container_arn: format!("arn:aws:ecs:us-east-1:000000000000:container/bench/{i}"),
        }],
        network_interface: None,
    }
}

/// Sends `paths` (cycling) `n` times, `concurrency` at once, through `client` to `base`;
/// each request's duration.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    paths: &[String],
    n: usize,
    concurrency: usize,
) -> Result<Vec<Duration>, String> {
    let concurrency = concurrency.max(1);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut samples = Vec::with_capacity(n);
    let mut next = 0usize;
    while samples.len() < n && Instant::now() < deadline {
        let wave = concurrency.min(n - samples.len());
        let jobs = (0..wave).map(|k| {
            let url = format!("{base}{}", paths[(next + k) % paths.len()]);
            let client = client.clone();
            async move {
                let started = Instant::now();
                let r = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let status = r.status();
                let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                let took = started.elapsed();
                if !status.is_success() || body.is_empty() {
                    return Err(format!("{url} answered {status}"));
                }
                Ok::<_, String>(took)
            }
        });
        for r in futures::future::join_all(jobs).await {
            samples.push(r?);
        }
        next += wave;
    }
    Ok(samples)
}

pub async fn run(args: TaskEndpointsArgs) -> Result<ExitCode, String> {
    let requests = args.requests.clamp(10, 1_000_000);
    let tasks = args.tasks.clamp(1, 10_000);
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let registry =
        Registry::open(dir.path()).map_err(|e| format!("registry in a temporary dir: {e}"))?;
    let mut config = TaskEndpointsConfig::new(registry.clone(), IdKey::random());
    config.credentials = Some(Arc::new(StandIn));
    let endpoints = TaskEndpoints::start(config)
        .await
        .map_err(|e| format!("endpoints server: {e}"))?;
    let mut leases: Vec<TaskLease> = Vec::with_capacity(tasks);
    let mut paths = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let lease = endpoints
            .open(endpoints.describe(&assignment(i)))
            .await
            .map_err(|e| format!("opening task {i}: {e}"))?;
        let path = lease
            .environment("app")
            .iter()
            .find(|(k, _)| *k == CREDENTIALS_URI_VAR)
            .map(|(_, v)| v.to_string())
            .ok_or("no credentials URI")?;
        paths.push(path);
        leases.push(lease);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("front: {e}"))?;
    let front_base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let agent_base = format!("http://{}", endpoints.local_addr());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let front_task = tokio::spawn(front::serve(listener, registry, stopped));

    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let kept = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let warmup = 200.min(requests);
    measure(&kept, &front_base, &paths, warmup, args.concurrency).await?;
    let new_conn =
        Latency::of(&measure(&fresh, &front_base, &paths, requests, args.concurrency).await?);
    let keep_alive =
        Latency::of(&measure(&kept, &front_base, &paths, requests, args.concurrency).await?);
    let direct =
        Latency::of(&measure(&fresh, &agent_base, &paths, requests, args.concurrency).await?);
    let _ = stop.send(true);
    front_task.abort();
    drop(leases);

    if args.json {
        println!(
            "{}",
            json!({
                "requests": requests,
                "tasks": tasks,
                "concurrency": args.concurrency,
                "front_new_connection": new_conn,
                "front_keep_alive": keep_alive,
                "agent_direct_new_connection": direct,
            })
        );
    } else {
        println!(
            "GET /v2/credentials/<id>, {requests} requests each, {tasks} tasks, {} at once",
            args.concurrency.max(1)
        );
        println!(
            "{:<34} {:>9} {:>9} {:>9} {:>9}",
            "", "p50 µs", "p90 µs", "p99 µs", "max µs"
        );
        for (name, l) in [
            ("front, new connection each", new_conn),
            ("front, kept-alive connection", keep_alive),
            ("agent directly, new connection", direct),
        ] {
            println!(
                "{name:<34} {:>9} {:>9} {:>9} {:>9}",
                round1(l.p50_us),
                round1(l.p90_us),
                round1(l.p99_us),
                round1(l.max_us)
            );
        }
        println!(
            "goal: p99 < 5 ms through the front ({})",
            if new_conn.p99_us < 5000.0 && keep_alive.p99_us < 5000.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
