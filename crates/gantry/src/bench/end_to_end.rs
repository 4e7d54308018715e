//! `gantry bench end-to-end`: RunTask → RUNNING through a whole control plane.
//!
//! An in-process control plane serves on a loopback port (SQLite file store in a temporary
//! directory by default, as `gantry server` runs; with `--etcd-members`, one replica on an
//! etcd cluster this benchmark starts on loopback); N simulated agents register, hold their
//! channels open and report RUNNING for every task they are given; a driver keeps several
//! RunTask calls (up to 10 tasks each) in flight until M tasks are placed. The clock runs from
//! the first RunTask until the M-th RUNNING report is acknowledged (each acknowledgment means
//! the control plane has stored the report and its state cache shows it).

use crate::bench::agents::Fleet;
use crate::bench::server::{self, open_plane, Server, StoreKind};
use crate::bench::stats::{round1, Latency};
use clap::Args;
use gantry_control::logs::LogStore;
use gantry_store::testing::EtcdCluster;
use gantry_store::{EtcdConfig, EtcdStore};
use serde_json::json;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Goal to compare with: at least 3,750 tasks/s reaching RUNNING (Nomad's C1M rate, on five
servers). This runs everything (control plane, agents, driver) on one machine.

Examples:
  gantry bench end-to-end                                  # 1,000 agents, 10,000 tasks
  gantry bench end-to-end --agents 200 --tasks 2000 --json
  gantry bench end-to-end --store memory                   # no fsync: the rest of the path
  gantry bench end-to-end --etcd-members 3                 # on a 3-member etcd on loopback";

/// Task size: 128 CPU units and 256 MiB, so 32 fit on each simulated instance.
const TASK_CPU: i64 = 128;
const TASK_MEMORY: i64 = 256;

#[derive(Args)]
pub struct EndToEndArgs {
    /// Simulated agents (container instances of 4,096 CPU units and 16,384 MiB).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub agents: usize,
    /// Tasks to bring to RUNNING.
    #[arg(long, value_name = "M", default_value_t = 10_000)]
    pub tasks: usize,
    /// Tasks per RunTask call (ECS allows at most 10).
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10))]
    pub count: u64,
    /// RunTask calls in flight at once.
    #[arg(long, value_name = "C", default_value_t = 8)]
    pub in_flight: usize,
    /// Where the control plane keeps its state.
    #[arg(long, value_enum, default_value = "file")]
    pub store: StoreKind,
    /// Run the control plane on an etcd cluster of this many members instead, started on
    /// loopback ports for this run (Debian's etcd on the PATH, or GANTRY_ETCD_BIN), as one
    /// replica of `gantry server --store etcd://...` that leads the controllers.
    #[arg(long, value_name = "MEMBERS", conflicts_with = "store",
          value_parser = clap::value_parser!(u64).range(1..=7))]
    pub etcd_members: Option<u64>,
    /// Give up after this many seconds (the figures so far are still printed).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: EndToEndArgs) -> Result<ExitCode, String> {
    if args.agents == 0 || args.tasks == 0 || args.in_flight == 0 {
        return Err("--agents, --tasks and --in-flight must be at least 1".into());
    }
    let capacity = args.agents * (crate::bench::fixture::INSTANCE_CPU / TASK_CPU) as usize;
    if args.tasks > capacity * 9 / 10 {
        return Err(format!(
            "{} agents hold at most {capacity} tasks of {TASK_CPU} CPU units; ask for at most \
             90% of that ({}), or add agents",
            args.agents,
            capacity * 9 / 10
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    // Declared before the plane, so the members outlive it.
    let mut etcd = None;
    let (plane, store_name) = match args.etcd_members {
        Some(members) => {
            let cluster = EtcdCluster::start(dir.path(), members as usize).await?;
            let store = EtcdStore::connect(&cluster.config(EtcdConfig::DEFAULT_NAMESPACE))
                .await
                .map_err(|e| format!("cannot reach the etcd members just started: {e}"))?;
            let logs = LogStore::open(&dir.path().join("logs.db"))
                .map_err(|e| format!("log store: {e}"))?;
            etcd = Some(cluster);
            let plane = server::plane_on_etcd(Arc::new(store), logs).await?;
            (plane, format!("{members}-member etcd"))
        }
        None => {
            let plane = open_plane(match args.store {
                StoreKind::File => Some(dir.path()),
                StoreKind::Memory => None,
            })
            .await?;
            (plane, args.store.name().to_string())
        }
    };
    let server = Server::serve(plane.clone()).await?;
    server::wait_leading(&plane, Duration::from_secs(30)).await?;
    let (client, token) = server::admin_client(&plane, &server.endpoint).await?;
    server::prepare_cluster(&client, TASK_CPU, TASK_MEMORY).await?;

    let setup = Instant::now();
    let fleet = Fleet::register(
        &server.endpoint,
        server::CLUSTER,
        args.agents,
        &token,
        Duration::from_secs(args.timeout),
    )
    .await?;
    let setup = setup.elapsed();
    if !args.json {
        println!(
            "{} agents registered and connected in {:.1} s ({} store); placing {} tasks, {} per \
             RunTask, {} calls in flight…",
            args.agents,
            setup.as_secs_f64(),
            store_name,
            args.tasks,
            args.count,
            args.in_flight
        );
    }

    // The driver: `in_flight` workers take the next RunTask from a shared count of tasks still
    // to place.
    let to_place = Arc::new(AtomicUsize::new(args.tasks));
    let issued: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let run_task_latency: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut workers = Vec::new();
    for _ in 0..args.in_flight {
        let (client, to_place, issued, latency, failures) = (
            client.clone(),
            to_place.clone(),
            issued.clone(),
            run_task_latency.clone(),
            failures.clone(),
        );
        let count = args.count as usize;
        workers.push(tokio::spawn(async move {
            let mut barren = 0;
            loop {
                let Ok(left) =
                    to_place.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        (left > 0).then(|| left - left.min(count))
                    })
                else {
                    return Ok::<Instant, String>(Instant::now());
                };
                let want = left.min(count);
                if Instant::now() > deadline {
                    return Err("timed out placing tasks".to_string());
                }
                let sent = Instant::now();
                let (arns, failed) = server::run_task(&client, want).await?;
                let took = sent.elapsed();
                if let Ok(mut l) = latency.lock() {
                    l.push(took);
                }
                failures.fetch_add(failed, Ordering::Relaxed);
                if let Ok(mut m) = issued.lock() {
                    for arn in &arns {
                        m.insert(arn.clone(), sent);
                    }
                }
                if arns.len() < want {
                    // Put back what was not placed and try again (a full instance, a race).
                    to_place.fetch_add(want - arns.len(), Ordering::Relaxed);
                    barren = if arns.is_empty() { barren + 1 } else { 0 };
                    if barren >= 20 {
                        return Err("RunTask placed nothing 20 times in a row".to_string());
                    }
                }
            }
        }));
    }
    let mut placed_by = started;
    let mut driver_error = None;
    for w in workers {
        match w.await {
            Ok(Ok(done)) => placed_by = placed_by.max(done),
            Ok(Err(e)) => driver_error = Some(e),
            Err(e) => driver_error = Some(format!("driver task failed: {e}")),
        }
    }
    let target = args.tasks;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let all_running = fleet
        .wait(|s| s.running.load(Ordering::Relaxed) >= target, remaining)
        .await;
    let finished = Instant::now();
    let elapsed = finished - started;
    let running = fleet.shared.running.load(Ordering::Relaxed);
    let errors = fleet.shared.errors.load(Ordering::Relaxed);

    // Figures (after the clock stopped).
    let reports = fleet
        .shared
        .reports
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let acked = fleet
        .shared
        .acked
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let issued = issued.lock().map(|m| m.clone()).unwrap_or_default();
    let to_running: Vec<Duration> = acked
        .iter()
        .filter_map(|(arn, at)| {
            issued
                .get(arn)
                .map(|sent| at.saturating_duration_since(*sent))
        })
        .collect();
    let run_task = Latency::of(
        &run_task_latency
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default(),
    );
    let report = Latency::of(&reports);
    let task = Latency::of(&to_running);
    let placed = issued.len();
    let placement_secs = (placed_by - started).as_secs_f64().max(1e-9);
    let cache_running = server::running_in_cache(&plane);
    fleet.stop().await;
    server.shutdown().await;
    drop(etcd);

    let tasks_per_sec = running.min(target) as f64 / elapsed.as_secs_f64().max(1e-9);
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "end-to-end",
                "agents": args.agents,
                "tasks": args.tasks,
                "count_per_call": args.count,
                "in_flight": args.in_flight,
                "store": if args.etcd_members.is_some() { "etcd" } else { args.store.name() },
                "etcd_members": args.etcd_members,
                "completed": all_running,
                "running_acknowledged": running,
                "running_in_cache": cache_running,
                "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
                "tasks_per_sec": tasks_per_sec.round(),
                "placements_per_sec": (placed as f64 / placement_secs).round(),
                "run_task_p50_us": round1(run_task.p50_us),
                "run_task_p99_us": round1(run_task.p99_us),
                "report_p50_us": round1(report.p50_us),
                "report_p99_us": round1(report.p99_us),
                "task_to_running_p50_us": round1(task.p50_us),
                "task_to_running_p99_us": round1(task.p99_us),
                "run_task_failures": failures.load(Ordering::Relaxed),
                "agent_errors": errors,
                "setup_seconds": round1(setup.as_secs_f64()),
                "goal_tasks_per_sec": 3750,
            })
        );
    } else {
        println!(
            "{} of {} tasks RUNNING in {:.2} s: {:.0} tasks/s (goal to compare with: 3,750)",
            running.min(target),
            target,
            elapsed.as_secs_f64(),
            tasks_per_sec
        );
        println!(
            "  placement: {placed} tasks placed in {:.2} s ({:.0}/s); RunTask p50 {:.1} ms, p99 {:.1} ms; {} failures reported",
            placement_secs,
            placed as f64 / placement_secs,
            run_task.p50_us / 1e3,
            run_task.p99_us / 1e3,
            failures.load(Ordering::Relaxed)
        );
        println!(
            "  report:    SubmitTaskStateChange p50 {:.1} ms, p99 {:.1} ms",
            report.p50_us / 1e3,
            report.p99_us / 1e3
        );
        println!(
            "  task:      RunTask sent → RUNNING acknowledged p50 {:.1} ms, p99 {:.1} ms",
            task.p50_us / 1e3,
            task.p99_us / 1e3
        );
        println!(
            "  check:     {cache_running} tasks RUNNING in the control plane's state; {errors} agent errors"
        );
    }
    if let Some(e) = driver_error {
        return Err(e);
    }
    if !all_running {
        return Err(format!(
            "only {running} of {target} tasks reached RUNNING within {} s",
            args.timeout
        ));
    }
    Ok(ExitCode::SUCCESS)
}
