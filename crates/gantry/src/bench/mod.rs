//! `gantry bench`: the control plane at fleet scale, measured in this process.
//!
//! Benchmarks, each printing a human table or (`--json`) exactly one JSON object:
//!
//! - `placement`: the scheduler alone (`gantry_scheduler`), per-decision latency and
//!   throughput on one core at 100 … 50,000 instances, binpack + memberOf.
//! - `end-to-end`: an in-process control plane on loopback, N simulated agents speaking the
//!   real agent protocol over HTTP, and a RunTask driver; tasks/s until M tasks are RUNNING.
//! - `event-cost`: the cost of one task event (`SubmitTaskStateChange`) in a cluster that
//!   already holds 1,000 or 10,000 tasks.
//! - `memory`: resident memory of a control plane that loads 10,000 instances and 100,000
//!   tasks.
//! - `auth`: what authentication and authorisation add to DescribeTasks.
//! - `lb`: the load balancer's data plane against nginx and HAProxy, with wrk (these three
//!   run as processes on loopback; Gantry's data plane in this process).
//! - `task-endpoints`: a container's credentials request through the task endpoints' front.
//! - `failover`: `gantry server` replicas on an etcd cluster (child processes, on loopback),
//!   the leader killed: time until another replica leads and its controllers act.
//!
//! `end-to-end --etcd-members 3` runs its control plane on an etcd cluster it starts on
//! loopback instead of SQLite.
//!
//! Benchmarks measure and print; they assert nothing about time. Every loop is bounded in
//! count and in time, and everything runs on loopback and in temporary directories.

mod agents;
mod auth;
mod end_to_end;
mod event_cost;
mod failover;
mod fixture;
mod lb;
mod memory;
mod placement;
mod records;
mod server;
mod stats;
mod task_endpoints;

use clap::{Args, Subcommand};
use std::process::ExitCode;

/// What `gantry bench --help` says after the list of benchmarks.
pub const AFTER_HELP: &str = "\
Each benchmark runs in this process (an in-process control plane on a loopback port with a
temporary SQLite store, simulated agents as async tasks, no Docker), is bounded in count and
time, and prints a table, or with --json exactly one JSON object of its figures. The etcd
ones start Debian's etcd (on the PATH, or GANTRY_ETCD_BIN) on loopback ports: end-to-end
with --etcd-members, and failover, whose replicas are `gantry server` child processes. Build
in release mode for figures worth recording, e.g.:
  cargo run --release -p gantry -- bench placement --curve
  cargo run --release -p gantry -- bench end-to-end --agents 1000 --tasks 10000
  cargo run --release -p gantry -- bench end-to-end --agents 1000 --tasks 10000 --etcd-members 3
  cargo run --release -p gantry -- bench event-cost --tasks 1000,10000
  cargo run --release -p gantry -- bench memory --instances 10000 --tasks 100000
  cargo run --release -p gantry -- bench failover --replicas 3 --runs 7
Recorded results, the goals and the exact command lines are in docs/PERFORMANCE.md
(\"Control plane at fleet scale\", \"High availability on etcd\").";

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Scheduler decisions alone: binpack(memory) + memberOf on synthetic instances, one task
    /// per call; latency percentiles and placements/s on one core, full scan vs. index.
    #[command(after_help = placement::AFTER_HELP)]
    Placement(placement::PlacementArgs),
    /// RunTask → RUNNING through a real control plane on loopback with N simulated agents
    /// speaking the agent protocol over HTTP; tasks/s and placement/report latencies.
    #[command(after_help = end_to_end::AFTER_HELP)]
    EndToEnd(end_to_end::EndToEndArgs),
    /// The cost of one task event (SubmitTaskStateChange) in a cluster pre-filled with 1,000
    /// and 10,000 RUNNING tasks: median round trip, and whether it stays flat.
    #[command(after_help = event_cost::AFTER_HELP)]
    EventCost(event_cost::EventCostArgs),
    /// Resident memory of a control plane that loads N instances and M tasks from its store
    /// (default 10,000 and 100,000), and how long the load takes.
    #[command(after_help = memory::AFTER_HELP)]
    Memory(memory::MemoryArgs),
    /// What SigV4 verification, IAM policy evaluation and the audit record add to
    /// DescribeTasks: two control planes, authentication off and on, called alternately.
    #[command(after_help = auth::AFTER_HELP)]
    Auth(auth::AuthArgs),
    /// Requests/s and latency through Gantry's load balancer, nginx and HAProxy in front of
    /// the same backend, measured by wrk in interleaved rounds.
    #[command(after_help = lb::AFTER_HELP)]
    Lb(lb::LbArgs),
    /// A container's credentials request (GET /v2/credentials/<id>) through the task
    /// endpoints' front to the agent that serves it: p50/p99, new and kept-alive connections.
    #[command(after_help = task_endpoints::AFTER_HELP)]
    TaskEndpoints(task_endpoints::TaskEndpointsArgs),
    /// `gantry server` replicas on an etcd cluster started on loopback, the leader killed
    /// (SIGKILL) run after run: time until another replica leads and its controllers act.
    #[command(after_help = failover::AFTER_HELP)]
    Failover(failover::FailoverArgs),
}

pub async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    match args.command {
        BenchCommand::Placement(a) => placement::run(a).await,
        BenchCommand::EndToEnd(a) => end_to_end::run(a).await,
        BenchCommand::EventCost(a) => event_cost::run(a).await,
        BenchCommand::Memory(a) => memory::run(a).await,
        BenchCommand::Auth(a) => auth::run(a).await,
        BenchCommand::Lb(a) => lb::run(a).await,
        BenchCommand::TaskEndpoints(a) => task_endpoints::run(a).await,
        BenchCommand::Failover(a) => failover::run(a).await,
    }
}

/// A comma-separated list of sizes, e.g. `100,1000,10000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes(pub Vec<usize>);

/// Parses `100,1000,10000` (underscores allowed: `10_000`).
pub(crate) fn parse_sizes(s: &str) -> Result<Sizes, String> {
    let sizes: Vec<usize> = s
        .split(',')
        .map(|part| {
            let digits: String = part.trim().chars().filter(|c| *c != '_').collect();
            digits
                .parse::<usize>()
                .map_err(|_| format!("'{}' is not a whole number", part.trim()))
        })
        .collect::<Result<_, _>>()?;
    if sizes.is_empty() || sizes.contains(&0) {
        return Err("give one or more sizes above zero, e.g. 1000,10000".into());
    }
    Ok(Sizes(sizes))
}

#[cfg(test)]
mod tests {
    use super::{parse_sizes, Sizes};

    #[test]
    fn sizes_are_comma_separated_whole_numbers() {
        assert_eq!(
            parse_sizes("100,1_000, 10000"),
            Ok(Sizes(vec![100, 1000, 10000]))
        );
        assert!(parse_sizes("10,x").is_err());
        assert!(parse_sizes("0").is_err());
    }
}
