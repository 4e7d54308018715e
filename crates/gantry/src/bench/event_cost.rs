//! `gantry bench event-cost`: what one task event costs as the cluster grows.
//!
//! For each size, a cluster is pre-filled with that many RUNNING tasks (copies of a real task
//! record, `--tasks-per-instance` per instance, so only the cluster grows, not the instances),
//! a control plane loads it and serves on loopback, and one simulated agent per instance holds
//! its channel open. Then events are sent one at a time, each timed from the call until the
//! answer (which comes once the store has the change and the control plane's state cache
//! shows it):
//!
//! - `health`: `SubmitTaskStateChange` RUNNING → RUNNING with the container's health changed;
//! - `stop`: `SubmitTaskStateChange` STOPPED (which also changes the instance's desired state
//!   that its agent channel sends).
//!
//! The `floor` is one store transaction of the same kind (a put, waited for by the cache)
//! without the API around it: what durability alone costs.

use crate::bench::agents::Fleet;
use crate::bench::records::{self, Templates};
use crate::bench::server::{open_stores, plane_on, Server, StoreKind, CLUSTER};
use crate::bench::stats::{round1, Latency};
use clap::Args;
use gantry_model::agent_protocol::{ContainerStateChange, SubmitTaskStateChange};
use gantry_store::{Txn, TxnOp};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
What \"flat\" means here: the median cost of one event at 10,000 tasks divided by the one at
1,000 tasks stays close to 1 (an event costs O(1) or O(log n) in the cluster's size, not
O(n)).

Examples:
  gantry bench event-cost                          # 1,000 and 10,000 tasks, 300 events each
  gantry bench event-cost --tasks 1000,10000,50000 --events 500 --json
  gantry bench event-cost --store memory           # without the fsync of each write";

#[derive(Args)]
pub struct EventCostArgs {
    /// Cluster sizes (RUNNING tasks already in the cluster), comma-separated.
    #[arg(long, value_name = "N[,N...]", default_value = "1000,10000", value_parser = crate::bench::parse_sizes)]
    pub tasks: crate::bench::Sizes,
    /// Tasks on each instance (instances = tasks / this), so that per-instance work stays the
    /// same at every size.
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub tasks_per_instance: u64,
    /// Events timed per kind and size.
    #[arg(long, value_name = "E", default_value_t = 300)]
    pub events: usize,
    /// Where the control plane keeps its state.
    #[arg(long, value_enum, default_value = "file")]
    pub store: StoreKind,
    /// Give up on a size after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Seed for choosing which tasks the events touch.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct SizeFigures {
    tasks: usize,
    instances: usize,
    load_secs: f64,
    health: Latency,
    stop: Latency,
    floor: Latency,
    stopped_in_cache: usize,
}

pub async fn run(args: EventCostArgs) -> Result<ExitCode, String> {
    if args.events == 0 {
        return Err("--events must be at least 1".into());
    }
    let templates = records::capture().await?;
    let mut figures = Vec::new();
    for &tasks in &args.tasks.0 {
        if tasks < 2 * args.events {
            return Err(format!(
                "{tasks} tasks are too few for {} events of each kind; ask for at least {}",
                args.events,
                2 * args.events
            ));
        }
        let f = tokio::time::timeout(
            Duration::from_secs(args.timeout),
            one_size(&args, &templates, tasks),
        )
        .await
        .map_err(|_| format!("{tasks} tasks: gave up after {} s", args.timeout))??;
        if !args.json {
            println!(
                "{:>7} tasks on {:>5} instances  health p50 {:>7.2} ms  p99 {:>7.2} ms   stop p50 {:>7.2} ms  p99 {:>7.2} ms   floor (store txn) p50 {:>6.2} ms   (loaded in {:.1} s)",
                f.tasks,
                f.instances,
                f.health.p50_us / 1e3,
                f.health.p99_us / 1e3,
                f.stop.p50_us / 1e3,
                f.stop.p99_us / 1e3,
                f.floor.p50_us / 1e3,
                f.load_secs
            );
        }
        figures.push(f);
    }
    let ratio = |pick: fn(&SizeFigures) -> f64| match (figures.first(), figures.last()) {
        (Some(a), Some(b)) if figures.len() > 1 && pick(a) > 0.0 => Some(pick(b) / pick(a)),
        _ => None,
    };
    let health_ratio = ratio(|f| f.health.p50_us);
    let stop_ratio = ratio(|f| f.stop.p50_us);
    if args.json {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({
                    "tasks": f.tasks,
                    "instances": f.instances,
                    "events_per_kind": args.events,
                    "health_p50_us": round1(f.health.p50_us),
                    "health_p99_us": round1(f.health.p99_us),
                    "stop_p50_us": round1(f.stop.p50_us),
                    "stop_p99_us": round1(f.stop.p99_us),
                    "floor_p50_us": round1(f.floor.p50_us),
                    "stopped_in_cache": f.stopped_in_cache,
                    "load_seconds": round1(f.load_secs),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "bench": "event-cost",
                "store": args.store.name(),
                "tasks_per_instance": args.tasks_per_instance,
                "results": rows,
                "health_p50_ratio_last_to_first": health_ratio.map(|r| (r * 100.0).round() / 100.0),
                "stop_p50_ratio_last_to_first": stop_ratio.map(|r| (r * 100.0).round() / 100.0),
            })
        );
    } else if let (Some(h), Some(s), Some(a), Some(b)) =
        (health_ratio, stop_ratio, figures.first(), figures.last())
    {
        println!(
            "median at {} tasks / median at {} tasks: health {h:.2}, stop {s:.2} (flat is close to 1)",
            b.tasks, a.tasks
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn one_size(
    args: &EventCostArgs,
    templates: &Templates,
    tasks: usize,
) -> Result<SizeFigures, String> {
    let per = args.tasks_per_instance as usize;
    let instances = tasks.div_ceil(per);
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let (store, logs) = open_stores(match args.store {
        StoreKind::File => Some(dir.path()),
        StoreKind::Memory => None,
    })?;
    let filled = records::fill(&store, templates, instances, tasks).await?;
    let loading = Instant::now();
    let plane = plane_on(store, logs).await?;
    let load_secs = loading.elapsed().as_secs_f64();
    let server = Server::serve(plane.clone()).await?;
    let (client, _) = crate::bench::server::admin_client(&plane, &server.endpoint).await?;
    let mut agents = Vec::new();
    for arn in filled.instance_arns() {
        let agent = crate::bench::server::agent_client(&plane, &server.endpoint, &arn).await?;
        agents.push((arn, agent));
    }
    let fleet = Fleet::connect(agents, CLUSTER, true, Duration::from_secs(args.timeout)).await?;

    let mut chosen = filled.task_arns();
    chosen.shuffle(&mut StdRng::seed_from_u64(args.seed));
    let warm_up = 10.min(chosen.len() / 4);
    let (health_arns, rest) = chosen.split_at(args.events + warm_up);
    let stop_arns = &rest[..args.events.min(rest.len())];
    let cluster_arn = plane.scope().cluster(CLUSTER);
    let container = &templates.container_name;
    let health_change = |task: &str, n: usize| SubmitTaskStateChange {
        cluster: Some(cluster_arn.clone()),
        task: Some(task.to_string()),
        status: Some("RUNNING".into()),
        containers: Some(vec![ContainerStateChange {
            container_name: Some(container.clone()),
            status: Some("RUNNING".into()),
            health_status: Some(
                if n.is_multiple_of(2) {
                    "HEALTHY"
                } else {
                    "UNHEALTHY"
                }
                .into(),
            ),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let stop_change = |task: &str| SubmitTaskStateChange {
        cluster: Some(cluster_arn.clone()),
        task: Some(task.to_string()),
        status: Some("STOPPED".into()),
        containers: Some(vec![ContainerStateChange {
            container_name: Some(container.clone()),
            status: Some("STOPPED".into()),
            exit_code: Some(0),
            ..Default::default()
        }]),
        execution_stopped_at: Some(gantry_model::now_epoch()),
        ..Default::default()
    };

    let mut health = Vec::with_capacity(args.events);
    for (n, task) in health_arns.iter().enumerate() {
        let change = health_change(task, n);
        let started = Instant::now();
        client
            .submit_task_state_change(&change)
            .await
            .map_err(|e| format!("SubmitTaskStateChange: {e}"))?;
        if n >= warm_up {
            health.push(started.elapsed());
        }
    }
    let mut stop = Vec::with_capacity(args.events);
    for task in stop_arns {
        let change = stop_change(task);
        let started = Instant::now();
        client
            .submit_task_state_change(&change)
            .await
            .map_err(|e| format!("SubmitTaskStateChange: {e}"))?;
        stop.push(started.elapsed());
    }
    let mut floor = Vec::with_capacity(args.events);
    let value = vec![b'x'; 2048];
    for n in 0..args.events {
        let started = Instant::now();
        plane
            .store
            .txn(Txn {
                success: vec![TxnOp::Put {
                    key: format!("bench-probe/{n}"),
                    value: value.clone(),
                }],
                ..Txn::default()
            })
            .await
            .map_err(|e| format!("store: {e}"))?;
        floor.push(started.elapsed());
    }
    let stopped_in_cache = plane
        .cache
        .tasks_of_cluster(CLUSTER)
        .iter()
        .filter(|e| e.value.task.last_status.as_deref() == Some("STOPPED"))
        .count();
    fleet.stop().await;
    server.shutdown().await;
    drop(plane);
    Ok(SizeFigures {
        tasks,
        instances,
        load_secs,
        health: Latency::of(&health),
        stop: Latency::of(&stop),
        floor: Latency::of(&floor),
        stopped_in_cache,
    })
}
