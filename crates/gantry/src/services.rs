//! The human CLI for services: `gantry deploy`, `gantry services`, `gantry events`. Like the
//! task commands they talk to the ECS API only (CreateService, UpdateService,
//! DescribeServices, ListServices, RegisterTaskDefinition, DescribeTaskDefinition) and print
//! tables and progress instead of JSON.

use crate::client::ApiClient;
use crate::commands::{err, family_revision, print_table, task_definition_reference, Target};
use clap::{Args, ValueEnum};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DeployArgs {
    /// Service name. A service that does not exist yet (or was deleted) is created.
    pub service: String,
    /// A task definition JSON file (registered first, as with `gantry run`), or a registered
    /// `family` (its latest revision) / `family:revision` / ARN.
    #[arg(long, short = 't', value_name = "TD")]
    pub task_definition: String,
    /// How many tasks the service keeps running. A new service defaults to 1; an existing
    /// one keeps its count unless this is given.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub desired_count: Option<i32>,
    /// Start a new deployment even when the task definition is unchanged, replacing every task
    /// (e.g. to pick up a new image pushed under the same tag).
    #[arg(long)]
    pub force_new_deployment: bool,
    /// Set the deployment circuit breaker: `rollback` fails a deployment whose tasks keep
    /// failing and returns to the last good revision, `on` fails it without rolling back,
    /// `off` turns the breaker off. Unchanged if not given.
    #[arg(long, value_enum, value_name = "MODE")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Follow the rollout until the service is stable (exit 0), the deployment fails or the
    /// timeout passes (non-zero).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CircuitBreaker {
    /// Fail the deployment and roll back to the last completed one.
    Rollback,
    /// Fail the deployment; leave the service as it is.
    On,
    /// No circuit breaker.
    Off,
}

impl CircuitBreaker {
    fn config(self) -> Value {
        let (enable, rollback) = match self {
            CircuitBreaker::Rollback => (true, true),
            CircuitBreaker::On => (true, false),
            CircuitBreaker::Off => (false, false),
        };
        json!({"enable": enable, "rollback": rollback})
    }
}

pub const DEPLOY_HELP: &str = "\
Examples:
  gantry deploy web --task-definition web.json --desired-count 2 --wait
  gantry deploy web --task-definition web:7 --circuit-breaker rollback --wait
  gantry deploy web --task-definition web --force-new-deployment

With --wait, one line per deployment is printed whenever it changes (id, task definition,
PRIMARY/ACTIVE, running/desired, pending and failed tasks, rollout state), followed by the
service's new events. The command exits 0 once the service is stable on the new deployment,
and non-zero if the deployment fails (circuit breaker) or the timeout passes.";

#[derive(Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Service name or ARN.
    pub service: String,
    /// How many of the newest events to show (the service keeps the last 100).
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Keep printing new events as they happen, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub target: Target,
}

/// The members of ECS's `Service` that the CLI shows.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Service {
    service_arn: Option<String>,
    service_name: Option<String>,
    status: Option<String>,
    desired_count: i64,
    running_count: i64,
    pending_count: i64,
    task_definition: Option<String>,
    deployment_configuration: Option<Value>,
    deployments: Vec<Deployment>,
    events: Vec<ServiceEvent>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
struct Deployment {
    id: Option<String>,
    status: Option<String>,
    task_definition: Option<String>,
    desired_count: i64,
    pending_count: i64,
    running_count: i64,
    failed_tasks: i64,
    rollout_state: Option<String>,
    rollout_state_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ServiceEvent {
    id: Option<String>,
    created_at: Option<f64>,
    message: Option<String>,
}

impl Service {
    fn name(&self) -> &str {
        self.service_name.as_deref().unwrap_or("?")
    }

    /// The deployment the service is moving to.
    fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status.as_deref() == Some("PRIMARY"))
            .or(self.deployments.first())
    }

    fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.id.as_deref() == Some(id))
    }

    fn rolls_back(&self) -> bool {
        let breaker = self
            .deployment_configuration
            .as_ref()
            .map(|c| &c["deploymentCircuitBreaker"]);
        breaker.is_some_and(|b| b["enable"] == json!(true) && b["rollback"] == json!(true))
    }
}

impl Deployment {
    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or("?")
    }

    fn definition(&self) -> String {
        family_revision(self.task_definition.as_deref().unwrap_or(""))
    }

    fn rollout(&self) -> &str {
        self.rollout_state.as_deref().unwrap_or("-")
    }

    /// One progress line (without the elapsed time, so that it can be compared).
    fn line(&self) -> String {
        let mut line = format!(
            "{}  {}  {:<7}  running {}/{}  pending {}  failed {}  {}",
            self.id(),
            self.definition(),
            self.status.as_deref().unwrap_or("-"),
            self.running_count,
            self.desired_count,
            self.pending_count,
            self.failed_tasks,
            self.rollout(),
        );
        let routine = |r: &str| r == "ECS deployment in progress." || r.ends_with(" completed.");
        match &self.rollout_state_reason {
            Some(reason) if self.rollout() == "FAILED" || !routine(reason) => {
                line.push_str(&format!(" ({})", reason.trim_end_matches('.')));
            }
            _ => {}
        }
        line
    }
}

impl ServiceEvent {
    /// What identifies an event across polls: its id, or its time and text if it has none.
    fn key(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!(
                "{}|{}",
                self.created_at.unwrap_or(0.0),
                self.message.as_deref().unwrap_or("")
            ),
        }
    }
}

/// A JSON list member of a response; absent or `null` is an empty list.
fn parse_list<T: DeserializeOwned>(v: &Value, what: &str) -> Result<Vec<T>, String> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(v.clone()).map_err(|e| format!("the server sent unreadable {what}: {e}"))
}

/// `command`, with `--cluster` added when the cluster is not the default one.
fn hint(command: &str, cluster: &str) -> String {
    if cluster == "default" {
        format!("`{command}`")
    } else {
        format!("`{command} --cluster {cluster}`")
    }
}

/// One service as DescribeServices returns it, or `None` if the cluster has no such service.
/// An INACTIVE (deleted) service is returned as it is: it stays describable for a while.
async fn describe_service(
    api: &ApiClient,
    cluster: &str,
    service: &str,
) -> Result<Option<Service>, String> {
    let resp = api
        .ecs(
            "DescribeServices",
            json!({"cluster": cluster, "services": [service]}),
        )
        .await
        .map_err(err)?;
    let services: Vec<Service> = parse_list(&resp["services"], "services")?;
    if let Some(s) = services.into_iter().next() {
        return Ok(Some(s));
    }
    let failure = &resp["failures"][0];
    match failure["reason"].as_str() {
        Some("MISSING") | None => Ok(None),
        Some(reason) => Err(format!(
            "cannot describe service {service}: {reason}{}",
            failure["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )),
    }
}

/// The full ARN of a task definition reference, or an error that says what to do.
async fn resolve_task_definition(api: &ApiClient, reference: &str) -> Result<String, String> {
    let resp = api
        .ecs(
            "DescribeTaskDefinition",
            json!({"taskDefinition": reference}),
        )
        .await
        .map_err(|e| {
            format!(
                "task definition {reference} not found ({e}). Give a registered family, family:revision or ARN, or the path of a task definition JSON file."
            )
        })?;
    resp["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the server described task definition {reference} without its ARN"))
}

pub async fn deploy(args: DeployArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = args.target.cluster.as_str();
    let name = args.service.as_str();
    let reference = task_definition_reference(&api, &args.task_definition).await?;
    let td_arn = resolve_task_definition(&api, &reference).await?;
    let td = family_revision(&td_arn);

    let existing = describe_service(&api, cluster, name)
        .await?
        .filter(|s| s.status.as_deref() != Some("INACTIVE"));
    let started = Instant::now();
    let service = match &existing {
        None => {
            let desired = args.desired_count.unwrap_or(1);
            let mut input = json!({
                "cluster": cluster,
                "serviceName": name,
                "taskDefinition": td_arn,
                "desiredCount": desired,
            });
            if let Some(cb) = args.circuit_breaker {
                input["deploymentConfiguration"] = json!({"deploymentCircuitBreaker": cb.config()});
            }
            let resp = api.ecs("CreateService", input).await.map_err(err)?;
            println!(
                "Created service {name} ({td}, {desired} task{})",
                if desired == 1 { "" } else { "s" }
            );
            resp
        }
        Some(current) => {
            let mut input = json!({"cluster": cluster, "service": name, "taskDefinition": td_arn});
            if let Some(n) = args.desired_count {
                input["desiredCount"] = json!(n);
            }
            if args.force_new_deployment {
                input["forceNewDeployment"] = json!(true);
            }
            if let Some(cb) = args.circuit_breaker {
                // Keep the rest of the service's deployment configuration as it is.
                let mut config = match &current.deployment_configuration {
                    Some(c @ Value::Object(_)) => c.clone(),
                    _ => json!({}),
                };
                config["deploymentCircuitBreaker"] = cb.config();
                input["deploymentConfiguration"] = config;
            }
            let resp = api.ecs("UpdateService", input).await.map_err(err)?;
            let was = current
                .task_definition
                .as_deref()
                .map(family_revision)
                .unwrap_or_default();
            if was == td {
                println!("Updated service {name} ({td})");
            } else {
                println!("Updated service {name}: {was} -> {td}");
            }
            resp
        }
    };
    let service: Service = serde_json::from_value(service["service"].clone())
        .map_err(|e| format!("the server sent an unreadable service: {e}"))?;
    let deployment = service
        .primary()
        .and_then(|d| d.id.clone())
        .ok_or_else(|| {
            format!(
                "service {name} reports no deployment; {} shows its state.",
                hint("gantry services", cluster)
            )
        })?;
    let previous = existing
        .as_ref()
        .and_then(Service::primary)
        .and_then(|d| d.id.as_deref());
    if previous == Some(deployment.as_str()) {
        println!(
            "No new deployment: {deployment} goes on (--force-new-deployment replaces the tasks)"
        );
    } else {
        println!("Started deployment {deployment}");
    }

    if !args.wait {
        println!("Service {}", service.service_arn.as_deref().unwrap_or(name));
        println!(
            "Follow the rollout with --wait, {} or {}.",
            hint("gantry services", cluster),
            hint(&format!("gantry events {name} --follow"), cluster)
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Events already there before this command are not news.
    let seen: HashSet<String> = existing
        .iter()
        .flat_map(|s| &s.events)
        .map(ServiceEvent::key)
        .collect();
    let watch = Rollout {
        api: &api,
        cluster,
        name,
        deployment,
        td,
        started,
        timeout: Duration::from_secs(args.timeout),
    };
    watch.follow(seen).await
}

/// How long a deployment seen FAILED (or gone) may take to show where the service went: the
/// rollback, or the deployment that replaced it.
const SETTLE: Duration = Duration::from_secs(3);

/// What `gantry deploy --wait` watches: one deployment of one service.
struct Rollout<'a> {
    api: &'a ApiClient,
    cluster: &'a str,
    name: &'a str,
    /// The PRIMARY deployment right after CreateService/UpdateService.
    deployment: String,
    /// Its task definition as `family:revision`.
    td: String,
    started: Instant,
    timeout: Duration,
}

enum Outcome {
    Going,
    Stable,
    Failed {
        reason: String,
        rolled_back_to: Option<String>,
    },
    Replaced {
        by: String,
    },
    Deleted {
        status: String,
    },
}

impl Rollout<'_> {
    async fn follow(&self, mut seen: HashSet<String>) -> Result<ExitCode, String> {
        let mut lines: HashMap<String, String> = HashMap::new();
        // When the deployment was first seen failed or gone, without a verdict yet.
        let mut unsettled: Option<Instant> = None;
        loop {
            let elapsed = self.started.elapsed().as_secs_f64();
            let service = describe_service(self.api, self.cluster, self.name)
                .await?
                .ok_or_else(|| {
                    format!(
                        "service {} disappeared while deploying; {} lists the services.",
                        self.name,
                        hint("gantry services", self.cluster)
                    )
                })?;
            for d in &service.deployments {
                let line = d.line();
                if lines.get(d.id()) != Some(&line) {
                    println!("  {line}  {elapsed:>6.1}s");
                    lines.insert(d.id().to_string(), line);
                }
            }
            print_new_events(&service, &mut seen, "  ");

            let mut outcome = self.outcome(&service);
            if outcome.may_still_move(&service) {
                let since = *unsettled.get_or_insert_with(Instant::now);
                if since.elapsed() < SETTLE {
                    outcome = Outcome::Going;
                }
            } else {
                unsettled = None;
            }
            match outcome {
                Outcome::Going => {}
                Outcome::Stable => {
                    let d = service.primary().cloned().unwrap_or_default();
                    println!(
                        "Service {} is stable: {}/{} tasks of {} running ({:.1}s)",
                        self.name,
                        d.running_count,
                        d.desired_count,
                        self.td,
                        self.started.elapsed().as_secs_f64()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Outcome::Failed {
                    reason,
                    rolled_back_to,
                } => {
                    let events = hint(&format!("gantry events {}", self.name), self.cluster);
                    let mut message = format!(
                        "deployment {} of {} failed: {reason}",
                        self.deployment, self.td
                    );
                    match rolled_back_to {
                        Some(to) => message.push_str(&format!(
                            "; the service rolled back to {to}. {events} shows what happened."
                        )),
                        None => message.push_str(&format!(
                            "; the service was not rolled back. {events} shows what happened, {} the tasks that stopped and {} their output.",
                            hint("gantry ps --all", self.cluster),
                            hint("gantry logs <task>", self.cluster)
                        )),
                    }
                    return Err(message);
                }
                Outcome::Deleted { status } => {
                    return Err(format!(
                        "service {} is {status}: it was deleted while deploying; {} lists the services.",
                        self.name,
                        hint("gantry services", self.cluster)
                    ));
                }
                Outcome::Replaced { by } => {
                    return Err(format!(
                        "deployment {} of {} was replaced by {by} (another deploy of service {}?); {} shows what happened.",
                        self.deployment,
                        self.td,
                        self.name,
                        hint(&format!("gantry events {}", self.name), self.cluster)
                    ));
                }
            }
            if self.started.elapsed() > self.timeout {
                println!("Last state:");
                for d in &service.deployments {
                    println!("  {}", d.line());
                }
                return Err(format!(
                    "timed out after {}s waiting for service {} to become stable (last state above). {} says what the service is doing, {} shows its tasks and {} their output.",
                    self.timeout.as_secs(),
                    self.name,
                    hint(&format!("gantry events {}", self.name), self.cluster),
                    hint("gantry ps", self.cluster),
                    hint("gantry logs <task>", self.cluster)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Where the rollout stands, from one DescribeServices answer.
    fn outcome(&self, service: &Service) -> Outcome {
        let status = service.status.as_deref().unwrap_or("ACTIVE");
        if status != "ACTIVE" {
            return Outcome::Deleted {
                status: status.to_string(),
            };
        }
        let primary = service.primary();
        let elsewhere = primary
            .filter(|p| p.id() != self.deployment)
            .map(Deployment::definition);
        match service.deployment(&self.deployment) {
            Some(d) if d.rollout() == "FAILED" => Outcome::Failed {
                reason: d
                    .rollout_state_reason
                    .as_deref()
                    .map(|r| r.trim_end_matches('.').to_string())
                    .unwrap_or_else(|| "rollout FAILED".into()),
                rolled_back_to: elsewhere,
            },
            Some(d) => {
                let stable = service.deployments.len() == 1
                    && d.rollout() == "COMPLETED"
                    && d.running_count == d.desired_count
                    && service.running_count == service.desired_count;
                if stable {
                    Outcome::Stable
                } else {
                    Outcome::Going
                }
            }
            // Gone from the service: failed and drained already, or replaced by another deploy.
            None => {
                // The breaker's event says why: "(deployment X) deployment failed: <why>."
                let failed = service.events.iter().find_map(|e| {
                    let m = e.message.as_deref()?;
                    if !m.contains(&self.deployment) {
                        return None;
                    }
                    let (_, why) = m.split_once("deployment failed: ")?;
                    Some(why.trim_end_matches('.').to_string())
                });
                match (failed, primary) {
                    (Some(why), _) => Outcome::Failed {
                        reason: format!("ECS deployment circuit breaker: {why}"),
                        rolled_back_to: elsewhere,
                    },
                    (None, Some(p)) => Outcome::Replaced {
                        by: format!("{} ({})", p.id(), p.definition()),
                    },
                    (None, None) => Outcome::Replaced {
                        by: "nothing".into(),
                    },
                }
            }
        }
    }
}

impl Outcome {
    /// Whether this verdict may still change in a moment: a failure without a rollback yet on
    /// a service whose breaker rolls back, or a deployment gone without a word in the events
    /// (they may be a step behind).
    fn may_still_move(&self, service: &Service) -> bool {
        match self {
            Outcome::Failed {
                rolled_back_to: None,
                ..
            } => service.rolls_back(),
            Outcome::Replaced { .. } => true,
            _ => false,
        }
    }
}

/// Print the service's events not in `seen`, oldest first, and remember them.
fn print_new_events(service: &Service, seen: &mut HashSet<String>, indent: &str) {
    // The API lists events newest first.
    for e in service.events.iter().rev() {
        if seen.insert(e.key()) {
            println!("{indent}{}", event_line(e));
        }
    }
}

fn event_line(e: &ServiceEvent) -> String {
    format!(
        "{}  {}",
        e.created_at.map(local_time).unwrap_or_else(|| "-".into()),
        e.message.as_deref().unwrap_or("")
    )
}

pub async fn services(args: ServicesArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = args.target.cluster.as_str();
    let mut arns: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({"cluster": cluster, "maxResults": 100});
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let resp = api.ecs("ListServices", input).await.map_err(err)?;
        arns.extend(parse_list::<String>(&resp["serviceArns"], "service ARNs")?);
        token = resp["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut services: Vec<Service> = Vec::new();
    for chunk in arns.chunks(10) {
        let resp = api
            .ecs(
                "DescribeServices",
                json!({"cluster": cluster, "services": chunk}),
            )
            .await
            .map_err(err)?;
        // A service deleted since ListServices is MISSING: there is nothing to show for it.
        services.extend(parse_list::<Service>(&resp["services"], "services")?);
    }
    services.sort_by(|a, b| a.name().cmp(b.name()));
    let mut rows = vec![vec![
        "NAME".to_string(),
        "STATUS".into(),
        "TASK DEFINITION".into(),
        "RUNNING/DESIRED".into(),
        "PENDING".into(),
        "DEPLOYMENTS".into(),
        "ROLLOUT".into(),
    ]];
    for s in &services {
        rows.push(vec![
            s.name().to_string(),
            s.status.clone().unwrap_or_default(),
            s.task_definition
                .as_deref()
                .map(family_revision)
                .unwrap_or_default(),
            format!("{}/{}", s.running_count, s.desired_count),
            s.pending_count.to_string(),
            s.deployments.len().to_string(),
            s.primary()
                .map(|d| d.rollout().to_string())
                .unwrap_or_default(),
        ]);
    }
    print_table(&rows);
    if services.is_empty() {
        println!(
            "(no services in cluster {cluster}; start one with {})",
            hint("gantry deploy NAME --task-definition FILE", cluster)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn events(args: EventsArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = args.target.cluster.as_str();
    let name = args.service.as_str();
    let not_found = || {
        format!(
            "service {name} not found in cluster {cluster}; {} lists the services.",
            hint("gantry services", cluster)
        )
    };
    let service = describe_service(&api, cluster, name)
        .await?
        .ok_or_else(not_found)?;
    for e in service.events.iter().take(args.limit).rev() {
        println!("{}", event_line(e));
    }
    if service.events.is_empty() && !args.follow {
        println!("(no events for service {name} yet)");
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut seen: HashSet<String> = service.events.iter().map(ServiceEvent::key).collect();
    // On stderr, so that stdout holds only events: from here on, every new event is printed.
    eprintln!("Following the events of service {name} (Ctrl-C stops)...");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let service = describe_service(&api, cluster, name)
            .await?
            .ok_or_else(not_found)?;
        print_new_events(&service, &mut seen, "");
    }
}

/// The local time zone's offset, read once at start-up by [`init_local_time`].
static LOCAL_OFFSET: OnceLock<time::UtcOffset> = OnceLock::new();

/// Read the local time zone's offset. Call before any other thread starts: on Unix the offset
/// can only be read soundly (and the `time` crate only reads it) while the process has one
/// thread. Times are shown in UTC if it cannot be read.
pub fn init_local_time() {
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

/// An API timestamp (seconds since the epoch) as local `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn local_time(epoch: f64) -> String {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC);
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos((epoch * 1e9) as i128)
        .ok()
        .and_then(|t| t.checked_to_offset(offset))
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{epoch}"))
}
