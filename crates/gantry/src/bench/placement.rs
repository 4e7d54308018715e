//! `gantry bench placement`: the scheduler's decisions alone, on synthetic instances.
//!
//! One task per call (as RunTask with count 1), binpack on memory plus one memberOf
//! constraint on the availability zone, over instances that look like what the agent registers
//! (4,096 CPU units, 16,384 MiB, its attributes, some already partly used). After each
//! decision the chosen instance's usage is updated, so binpack fills instances as it would in
//! a real cluster. Two ways of deciding are measured on the same inputs:
//!
//! - `scan`: `gantry_scheduler::place` on the whole snapshot, what the control plane calls
//!   today (every instance is checked and ranked on every call);
//! - `index`: `gantry_scheduler::PlacementIndex`, which keeps the instances ordered by
//!   remaining capacity between calls and gives the same answers.

use crate::bench::fixture;
use crate::bench::stats::{round1, Latency};
use clap::Args;
use gantry_model::requirements::TaskRequirements;
use gantry_model::types::{PlacementConstraint, PlacementStrategy};
use gantry_scheduler::{InstanceSnapshot, PlacementIndex, PlacementRequest};
use serde_json::json;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Goals (issue \"The control plane at fleet scale\"): at 10,000 instances, at least 20,000
placements/s and p99 decision latency under 1 ms on one core. For context only:
kube-scheduler's CI floor is about 680 pods/s on 5,000 nodes.

Examples:
  gantry bench placement                       # 10,000 instances, scan and index
  gantry bench placement --curve               # 100, 1,000, 10,000 and 50,000 instances
  gantry bench placement --instances 10000 --tasks 50000 --mode index --json
  gantry bench placement --instances 2000 --verify   # index answers == full scan answers";

const CONSTRAINT: &str = "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]";
const CURVE: [usize; 4] = [100, 1_000, 10_000, 50_000];

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `gantry_scheduler::place` over the whole snapshot on every call.
    Scan,
    /// `gantry_scheduler::PlacementIndex`, kept up to date between calls.
    Index,
    /// Both, one after the other, on the same inputs.
    Both,
}

#[derive(Args)]
pub struct PlacementArgs {
    /// Cluster sizes to measure, comma-separated (e.g. 100,1000,10000,50000).
    #[arg(long, value_name = "N[,N...]", default_value = "10000", value_parser = crate::bench::parse_sizes)]
    pub instances: crate::bench::Sizes,
    /// Shorthand for --instances 100,1000,10000,50000.
    #[arg(long)]
    pub curve: bool,
    /// Placements (calls, one task each) per size and mode.
    #[arg(long, value_name = "M", default_value_t = 20_000)]
    pub tasks: usize,
    /// Which scheduler path to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Stop a (size, mode) run after this many seconds even if fewer than --tasks placements
    /// were made (the full scan is slow at 50,000 instances).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub max_secs: f64,
    /// Fraction of instances that start partly used (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.3)]
    pub partly_used: f64,
    /// In index mode, also ask the full scan for every decision and fail if any answer
    /// differs. The scan is not timed, but it evicts the index from the CPU caches: use this
    /// to check answers, not to record figures.
    #[arg(long)]
    pub verify: bool,
    /// Seed for the synthetic fleet and the requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one (size, mode) run.
struct RunFigures {
    instances: usize,
    mode: &'static str,
    placements: usize,
    /// Times the fleet was full and was reset to its starting state (untimed).
    resets: usize,
    per_sec: f64,
    latency: Latency,
    /// The first decision (for the index, it builds the `memberOf` partition).
    first_us: f64,
    build_ms: f64,
    mismatches: usize,
}

impl RunFigures {
    /// The figures of one run: `samples` decisions timed over `wall` (untimed work excluded).
    fn of(
        mode: &'static str,
        instances: usize,
        samples: &[Duration],
        resets: usize,
        wall: Duration,
        build: Duration,
        mismatches: usize,
    ) -> RunFigures {
        RunFigures {
            instances,
            mode,
            placements: samples.len(),
            resets,
            per_sec: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
            latency: Latency::of(samples),
            first_us: first_us(samples),
            build_ms: build.as_secs_f64() * 1e3,
            mismatches,
        }
    }
}

fn request(seed: u64) -> PlacementRequest {
    PlacementRequest {
        requirements: TaskRequirements {
            cpu: 256,
            memory: 512,
            ..Default::default()
        },
        count: 1,
        strategies: vec![PlacementStrategy {
            kind: Some("binpack".into()),
            field: Some("memory".into()),
        }],
        constraints: vec![PlacementConstraint {
            kind: Some("memberOf".into()),
            expression: Some(CONSTRAINT.into()),
        }],
        group: Some("family:bench".into()),
        family: "bench".into(),
        seed,
    }
}

/// What a placed task adds to its instance, as the control plane's snapshot would show it.
fn add_task(instance: &mut InstanceSnapshot, req: &PlacementRequest) {
    instance.used_cpu += req.requirements.cpu;
    instance.used_memory += req.requirements.memory;
    instance
        .task_groups
        .push(req.group.clone().unwrap_or_default());
    instance.task_definition_families.push(req.family.clone());
}

fn first_us(samples: &[Duration]) -> f64 {
    samples.first().map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn run_scan(fleet: &[InstanceSnapshot], args: &PlacementArgs) -> RunFigures {
    let mut instances = fleet.to_vec();
    let position: HashMap<String, usize> = instances
        .iter()
        .enumerate()
        .map(|(i, s)| (s.arn.clone(), i))
        .collect();
    let budget = Duration::from_secs_f64(args.max_secs.max(0.01));
    let mut samples = Vec::with_capacity(args.tasks);
    let mut resets = 0;
    let started = Instant::now();
    let mut untimed = Duration::ZERO;
    let mut call = 0u64;
    while samples.len() < args.tasks && started.elapsed() < budget {
        call += 1;
        let req = request(args.seed.wrapping_mul(1_000_003).wrapping_add(call));
        let t = Instant::now();
        let placement = gantry_scheduler::place(&instances, &req);
        let took = t.elapsed();
        match placement
            .placements
            .first()
            .and_then(|arn| position.get(arn))
        {
            Some(&i) => {
                samples.push(took);
                add_task(&mut instances[i], &req);
            }
            None => {
                let r = Instant::now();
                resets += 1;
                instances = fleet.to_vec();
                untimed += r.elapsed() + took;
            }
        }
    }
    let wall = started.elapsed().saturating_sub(untimed);
    RunFigures::of(
        "scan",
        fleet.len(),
        &samples,
        resets,
        wall,
        Duration::ZERO,
        0,
    )
}

fn run_index(fleet: &[InstanceSnapshot], args: &PlacementArgs) -> RunFigures {
    let copy = fleet.to_vec();
    let t = Instant::now();
    let mut index = PlacementIndex::new(copy);
    let build = t.elapsed();
    let budget = Duration::from_secs_f64(args.max_secs.max(0.01));
    let mut samples = Vec::with_capacity(args.tasks);
    let mut resets = 0;
    let mut mismatches = 0;
    let started = Instant::now();
    let mut untimed = Duration::ZERO;
    let mut call = 0u64;
    while samples.len() < args.tasks && started.elapsed() < budget {
        call += 1;
        let req = request(args.seed.wrapping_mul(1_000_003).wrapping_add(call));
        let t = Instant::now();
        let placement = index.place(&req);
        let took = t.elapsed();
        if args.verify {
            let v = Instant::now();
            if gantry_scheduler::place(index.instances(), &req) != placement {
                mismatches += 1;
            }
            untimed += v.elapsed();
        }
        match placement.placements.first() {
            Some(arn) => {
                samples.push(took);
                let req = req.clone();
                index.update(arn, |s| add_task(s, &req));
            }
            None => {
                let r = Instant::now();
                resets += 1;
                index = PlacementIndex::new(fleet.to_vec());
                untimed += r.elapsed() + took;
            }
        }
    }
    let wall = started.elapsed().saturating_sub(untimed);
    RunFigures::of(
        "index",
        fleet.len(),
        &samples,
        resets,
        wall,
        build,
        mismatches,
    )
}

pub async fn run(args: PlacementArgs) -> Result<ExitCode, String> {
    if !(0.0..=1.0).contains(&args.partly_used) {
        return Err("--partly-used is a fraction between 0 and 1".into());
    }
    if args.tasks == 0 {
        return Err("--tasks must be at least 1".into());
    }
    let sizes = if args.curve {
        CURVE.to_vec()
    } else {
        args.instances.0.clone()
    };
    let mut results = Vec::new();
    for &n in &sizes {
        let fleet = fixture::fleet(n, args.partly_used, args.seed);
        if matches!(args.mode, Mode::Scan | Mode::Both) {
            let f = run_scan(&fleet, &args);
            print_row(&args, &f);
            results.push(f);
        }
        if matches!(args.mode, Mode::Index | Mode::Both) {
            let f = run_index(&fleet, &args);
            print_row(&args, &f);
            results.push(f);
        }
    }
    let mismatches: usize = results.iter().map(|r| r.mismatches).sum();
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                json!({
                    "instances": r.instances,
                    "mode": r.mode,
                    "placements": r.placements,
                    "resets": r.resets,
                    "placements_per_sec": r.per_sec.round(),
                    "p50_us": round1(r.latency.p50_us),
                    "p90_us": round1(r.latency.p90_us),
                    "p99_us": round1(r.latency.p99_us),
                    "max_us": round1(r.latency.max_us),
                    "first_us": round1(r.first_us),
                    "mean_us": round1(r.latency.mean_us),
                    "index_build_ms": round1(r.build_ms),
                    "verify_mismatches": if args.verify && r.mode == "index" { json!(r.mismatches) } else { json!(null) },
                })
            })
            .collect();
        let out = json!({
            "bench": "placement",
            "strategy": "binpack:memory",
            "constraint": CONSTRAINT,
            "task": {"cpu": 256, "memory": 512},
            "instance": {"cpu": fixture::INSTANCE_CPU, "memory": fixture::INSTANCE_MEMORY, "zones": fixture::ZONES.len()},
            "partly_used": args.partly_used,
            "goal": {"instances": 10_000, "placements_per_sec": 20_000, "p99_us": 1_000},
            "results": rows,
        });
        println!("{out}");
    }
    if mismatches > 0 {
        return Err(format!(
            "the index disagreed with the full scan on {mismatches} decisions"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(args: &PlacementArgs, f: &RunFigures) {
    if args.json {
        return;
    }
    if f.instances == 0 {
        return;
    }
    println!(
        "{:>7} instances  {:<5}  {:>7} placements  {:>9.0} placements/s  p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>9.1} µs  first {:>9.1} µs{}{}{}",
        f.instances,
        f.mode,
        f.placements,
        f.per_sec,
        f.latency.p50_us,
        f.latency.p99_us,
        f.latency.max_us,
        f.first_us,
        if f.resets > 0 { format!("  ({} resets when full)", f.resets) } else { String::new() },
        if f.mode == "index" { format!("  index built in {:.1} ms", f.build_ms) } else { String::new() },
        if args.verify && f.mode == "index" { format!("  verify: {} mismatches", f.mismatches) } else { String::new() },
    );
}
