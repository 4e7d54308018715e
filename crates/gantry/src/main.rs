//! `gantry`: the control plane (`server`), the host agent (`agent`), both in one process for
//! local work (`dev`), a small CLI for people (`run`, `ps`, `logs`, `stop`, `deploy`,
//! `services`, `events`, `lb`), and `backup`/`restore` of the store. Logic lives in the
//! library crates; this binary parses flags and wires them together.

mod admin;
mod backup;
mod bench;
mod client;
mod commands;
mod credentials;
mod daemon;
mod dev_capacity;
mod explain;
mod lb;
mod services;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7420";

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "An Amazon ECS-compatible container orchestrator that runs anywhere.",
    long_about = "Gantry speaks the Amazon ECS API, so the AWS CLI and the AWS SDKs drive it \
unmodified, and runs the tasks as real containers on Docker.\n\n\
Start everything on this machine with `gantry dev`, then point any ECS client at it, e.g.\n  \
aws --endpoint-url http://127.0.0.1:7420 ecs list-clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane and one local agent in this process (embedded store).
    Dev(daemon::DevArgs),
    /// Run the control plane only; agents connect to it with `gantry agent`.
    Server(daemon::ServerArgs),
    /// Run an agent that registers this host's Docker Engine with a control plane.
    Agent(daemon::AgentArgs),
    /// Run a task from a task definition file (JSON, as for `aws ecs register-task-definition
    /// --cli-input-json`) or from a registered family[:revision].
    Run(commands::RunArgs),
    /// List tasks in a cluster.
    Ps(commands::PsArgs),
    /// Print a task's container output.
    Logs(commands::LogsArgs),
    /// Stop a task.
    Stop(commands::StopArgs),
    /// Simulate a Spot reclaim of a FARGATE_SPOT task: SIGTERM, its stopTimeout, then STOPPED
    /// with stop code SpotInterruption (its service replaces it).
    Interrupt(commands::InterruptArgs),
    /// Create or update a service from a task definition file or a registered
    /// family[:revision]; --wait follows the rollout.
    #[command(after_help = services::DEPLOY_HELP)]
    Deploy(services::DeployArgs),
    /// List a cluster's services with their task definition, task counts and rollout state.
    Services(services::ServicesArgs),
    /// Print a service's events (deployments, tasks started and stopped, failures).
    Events(services::EventsArgs),
    /// Why a task is PENDING, why a service cannot place a task, or where a task definition
    /// could run: per container instance, the first check that refused it and by how much.
    #[command(after_help = explain::EXPLAIN_HELP)]
    Explain(explain::ExplainArgs),
    /// Show the load balancers, their listeners and rules, the target groups and each
    /// target's health (ELBv2); --watch keeps the view live.
    #[command(after_help = lb::LB_HELP)]
    Lb(lb::LbArgs),
    /// Print the agents' join token (run on the control plane's host): `gantry agent --token`.
    Token(admin::TokenArgs),
    /// The audit log: who called what, on which resources, from where, and the outcome.
    Audit(admin::AuditArgs),
    /// The master keys that encrypt secrets at rest: `status`, or `rotate` without downtime.
    Keys(admin::KeysArgs),
    /// The control plane's replicas (several on etcd) and which one runs the controllers.
    Status(admin::StatusArgs),
    /// Write everything in the store to one file (a consistent snapshot), safely while the
    /// control plane runs.
    #[command(after_help = backup::BACKUP_HELP)]
    Backup(backup::BackupArgs),
    /// Write a `gantry backup` file into an empty store, with the control plane stopped.
    #[command(after_help = backup::RESTORE_HELP)]
    Restore(backup::RestoreArgs),
    /// Measure the control plane at fleet scale: placement, end to end, event cost, memory.
    #[command(after_help = bench::AFTER_HELP)]
    Bench(bench::BenchArgs),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts any thread: see `init_local_time`.
    services::init_local_time();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Dev(args) => {
            init_tracing("info");
            daemon::dev(args).await
        }
        Command::Server(args) => {
            init_tracing("info");
            daemon::server(args).await
        }
        Command::Agent(args) => {
            init_tracing("info");
            daemon::agent(args).await
        }
        Command::Run(args) => {
            init_tracing("warn");
            commands::run(args).await
        }
        Command::Ps(args) => {
            init_tracing("warn");
            commands::ps(args).await
        }
        Command::Logs(args) => {
            init_tracing("warn");
            commands::logs(args).await
        }
        Command::Stop(args) => {
            init_tracing("warn");
            commands::stop(args).await
        }
        Command::Interrupt(args) => {
            init_tracing("warn");
            commands::interrupt(args).await
        }
        Command::Deploy(args) => {
            init_tracing("warn");
            services::deploy(args).await
        }
        Command::Services(args) => {
            init_tracing("warn");
            services::services(args).await
        }
        Command::Events(args) => {
            init_tracing("warn");
            services::events(args).await
        }
        Command::Explain(args) => {
            init_tracing("warn");
            explain::explain(args).await
        }
        Command::Lb(args) => {
            init_tracing("warn");
            lb::lb(args).await
        }
        Command::Token(args) => admin::token(args),
        Command::Audit(args) => {
            init_tracing("warn");
            admin::audit(args).await
        }
        Command::Status(args) => {
            init_tracing("warn");
            admin::status(args).await
        }
        Command::Keys(args) => {
            init_tracing("warn");
            admin::keys(args).await
        }
        Command::Backup(args) => {
            init_tracing("warn");
            backup::backup(args).await
        }
        Command::Restore(args) => {
            init_tracing("warn");
            backup::restore(args).await
        }
        Command::Bench(args) => {
            init_tracing("error");
            bench::run(args).await
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
