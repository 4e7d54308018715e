//! `gantry bench memory`: the control plane's resident memory with a large cluster loaded.
//!
//! A child process (this binary, with a hidden flag) writes N instances and M RUNNING tasks
//! into a SQLite store in a temporary directory, as the control plane stores them (copies of
//! real records, see `records.rs`), and exits; so nothing it allocated is counted. Then this
//! process reads its own VmRSS, opens the control plane on that store (which loads every
//! record into its state cache), and reads VmRSS again.

use crate::bench::records;
use crate::bench::server::{open_plane, open_stores};
use crate::bench::stats::{resident_kib, round1};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

pub const AFTER_HELP: &str = "\
Reports VmRSS (and the peak, VmHWM) from /proc/self/status before and after the control plane
loads, so it needs Linux. The store is written by a child process first.

Examples:
  gantry bench memory                              # 10,000 instances, 100,000 tasks
  gantry bench memory --instances 1000 --tasks 10000 --json";

#[derive(Args)]
pub struct MemoryArgs {
    /// Container instances in the cluster.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub instances: usize,
    /// RUNNING tasks in the cluster, spread over the instances.
    #[arg(long, value_name = "M", default_value_t = 100_000)]
    pub tasks: usize,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
    /// (Internal) write the store into this directory and exit.
    #[arg(long, hide = true, value_name = "DIR")]
    pub fill_into: Option<PathBuf>,
}

pub async fn run(args: MemoryArgs) -> Result<ExitCode, String> {
    if args.instances == 0 {
        return Err("--instances must be at least 1".into());
    }
    if let Some(dir) = &args.fill_into {
        fill_into(dir, args.instances, args.tasks).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    if !args.json {
        println!(
            "writing {} instances and {} tasks into a store (child process)…",
            args.instances, args.tasks
        );
    }
    let writing = Instant::now();
    let status = tokio::process::Command::new(exe)
        .args(["bench", "memory", "--instances"])
        .arg(args.instances.to_string())
        .arg("--tasks")
        .arg(args.tasks.to_string())
        .arg("--fill-into")
        .arg(dir.path())
        .status()
        .await
        .map_err(|e| format!("cannot start the writer: {e}"))?;
    if !status.success() {
        return Err(format!("the writer failed: {status}"));
    }
    let write_secs = writing.elapsed().as_secs_f64();
    let record_bytes: u64 = std::fs::read_to_string(dir.path().join(WRITTEN))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let db_bytes = ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum::<u64>();

    let (rss_before, _) = resident_kib()?;
    let loading = Instant::now();
    let plane = open_plane(Some(dir.path())).await?;
    let load_secs = loading.elapsed().as_secs_f64();
    let (rss_after, peak) = resident_kib()?;
    let tasks = plane.cache.task_count();
    let instances = plane.cache.all_instances().len();
    drop(plane);

    let delta_mib = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0;
    let per_task_bytes = if tasks + instances > 0 {
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / (tasks + instances) as f64
    } else {
        0.0
    };
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "memory",
                "instances": instances,
                "tasks": tasks,
                "rss_before_mib": round1(rss_before as f64 / 1024.0),
                "rss_after_mib": round1(rss_after as f64 / 1024.0),
                "rss_delta_mib": round1(delta_mib),
                "peak_rss_mib": round1(peak as f64 / 1024.0),
                "bytes_per_record": per_task_bytes.round(),
                "load_seconds": (load_secs * 100.0).round() / 100.0,
                "store_mib": round1(db_bytes as f64 / (1024.0 * 1024.0)),
                "records_json_mib": round1(record_bytes as f64 / (1024.0 * 1024.0)),
                "write_seconds": round1(write_secs),
            })
        );
    } else {
        println!(
            "store: {:.1} MiB on disk ({:.1} MiB of keys and JSON records), written in {:.1} s",
            db_bytes as f64 / (1024.0 * 1024.0),
            record_bytes as f64 / (1024.0 * 1024.0),
            write_secs
        );
        println!(
            "control plane loaded {instances} instances and {tasks} tasks in {load_secs:.2} s"
        );
        println!(
            "VmRSS {:.1} MiB before, {:.1} MiB after (+{:.1} MiB, about {:.0} bytes per record); peak {:.1} MiB",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            delta_mib,
            per_task_bytes,
            peak as f64 / 1024.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the writer leaves how many bytes of records it wrote.
const WRITTEN: &str = "written-bytes";

async fn fill_into(dir: &Path, instances: usize, tasks: usize) -> Result<(), String> {
    let templates = records::capture().await?;
    let (store, _logs) = open_stores(Some(dir))?;
    let filled = records::fill(&store, &templates, instances, tasks).await?;
    std::fs::write(dir.join(WRITTEN), filled.bytes.to_string())
        .map_err(|e| format!("cannot note the bytes written: {e}"))?;
    Ok(())
}
