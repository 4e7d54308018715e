//! The human CLI: `gantry run`, `gantry ps`, `gantry logs`, `gantry stop`. Each talks to the
//! ECS API like any other client and prints tables and progress instead of JSON.

use crate::client::ApiClient;
use clap::Args;
use gantry_model::agent_protocol::log_destination;
use gantry_model::arn::last_segment;
use gantry_model::types::{Task, TaskDefinition};
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct Target {
    /// Gantry's ECS endpoint.
    #[arg(long, default_value = crate::DEFAULT_ENDPOINT, env = "GANTRY_ENDPOINT", global = true)]
    pub endpoint: String,
    /// Cluster name or ARN.
    #[arg(long, default_value = "default", env = "GANTRY_CLUSTER", global = true)]
    pub cluster: String,
}

#[derive(Args)]
pub struct RunArgs {
    /// A task definition JSON file, or a registered `family` / `family:revision` / ARN.
    pub task_definition: String,
    /// How many copies to start (1-10).
    #[arg(long, default_value_t = 1)]
    pub count: i32,
    /// Return as soon as the tasks are accepted instead of waiting for RUNNING.
    #[arg(long)]
    pub detach: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// EC2 or FARGATE. Default: FARGATE for a definition that only Fargate may run, else the
    /// cluster's default capacity provider strategy, else EC2.
    #[arg(long, value_name = "TYPE", conflicts_with = "capacity_provider")]
    pub launch_type: Option<String>,
    /// Run on these capacity providers, weight 1 each (repeatable), e.g. FARGATE_SPOT.
    #[arg(long, value_name = "NAME")]
    pub capacity_provider: Vec<String>,
    /// awsvpc definitions: the subnet(s) the task's address comes from (repeatable). Default:
    /// subnet-00000000.
    #[arg(long, value_name = "SUBNET_ID")]
    pub subnet: Vec<String>,
    /// awsvpc definitions: security group ids to record with the task (repeatable).
    #[arg(long, value_name = "SG_ID")]
    pub security_group: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

/// The subnet `gantry run` uses for an awsvpc task when none is given.
const DEFAULT_SUBNET: &str = "subnet-00000000";

#[derive(Args)]
pub struct PsArgs {
    /// Include stopped tasks (kept for an hour after they stop).
    #[arg(long, short)]
    pub all: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Task id or ARN.
    pub task: String,
    /// Only this container's output.
    #[arg(long)]
    pub container: Option<String>,
    /// Keep printing new output until the task stops.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct StopArgs {
    /// Task id or ARN.
    pub task: String,
    /// Why (shown as the task's stoppedReason).
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait until the task is STOPPED.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct InterruptArgs {
    /// A FARGATE_SPOT task's id or ARN.
    pub task: String,
    /// Wait until the task is STOPPED.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn describe_tasks(
    api: &ApiClient,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<Task>, String> {
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let resp = api
            .ecs("DescribeTasks", json!({"cluster": cluster, "tasks": chunk}))
            .await
            .map_err(err)?;
        let tasks: Vec<Task> = serde_json::from_value(resp["tasks"].clone()).map_err(err)?;
        out.extend(tasks);
    }
    Ok(out)
}

fn short_id(arn: &str) -> String {
    last_segment(arn).chars().take(12).collect()
}

fn definition_name(t: &Task) -> String {
    t.task_definition_arn
        .as_deref()
        .map(family_revision)
        .unwrap_or_default()
}

/// `family:revision` of a task definition ARN (what `gantry ps` shows); anything that is not
/// such an ARN is shown as it is.
pub(crate) fn family_revision(arn: &str) -> String {
    gantry_model::arn::arn_resource(arn)
        .and_then(|r| r.strip_prefix("task-definition/"))
        .unwrap_or_else(|| last_segment(arn))
        .to_string()
}

/// What to pass as `taskDefinition` for what the user typed: a JSON file (as for `aws ecs
/// register-task-definition --cli-input-json`) is registered first and its new ARN returned;
/// anything else is a `family`, `family:revision` or ARN and is passed on as it is.
pub(crate) async fn task_definition_reference(
    api: &ApiClient,
    given: &str,
) -> Result<String, String> {
    if !Path::new(given).is_file() {
        return Ok(given.to_string());
    }
    let text = std::fs::read_to_string(given).map_err(|e| format!("cannot read {given}: {e}"))?;
    let body: Value =
        serde_json::from_str(&text).map_err(|e| format!("{given} is not valid JSON: {e}"))?;
    let resp = api
        .ecs("RegisterTaskDefinition", body)
        .await
        .map_err(|e| format!("cannot register {given}: {e}"))?;
    let arn = resp["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("Registered {}", last_segment(&arn));
    Ok(arn)
}

pub async fn run(args: RunArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = &args.target.cluster;
    let reference = task_definition_reference(&api, &args.task_definition).await?;
    let definition = api
        .ecs(
            "DescribeTaskDefinition",
            json!({"taskDefinition": reference}),
        )
        .await
        .map_err(err)?;
    let td = &definition["taskDefinition"];
    let mut input = json!({"cluster": cluster, "taskDefinition": reference, "count": args.count});
    let fargate_only = td["requiresCompatibilities"]
        .as_array()
        .is_some_and(|c| c.iter().all(|v| v == "FARGATE") && !c.is_empty());
    if let Some(lt) = &args.launch_type {
        input["launchType"] = json!(lt.to_ascii_uppercase());
    } else if !args.capacity_provider.is_empty() {
        input["capacityProviderStrategy"] = json!(args
            .capacity_provider
            .iter()
            .map(|p| json!({"capacityProvider": p, "weight": 1}))
            .collect::<Vec<_>>());
    } else if fargate_only {
        input["launchType"] = json!("FARGATE");
    }
    if td["networkMode"] == "awsvpc" {
        let subnets = if args.subnet.is_empty() {
            println!("Using subnet {DEFAULT_SUBNET} (--subnet to choose another)");
            vec![DEFAULT_SUBNET.to_string()]
        } else {
            args.subnet.clone()
        };
        input["networkConfiguration"] = json!({"awsvpcConfiguration": {
            "subnets": subnets,
            "securityGroups": args.security_group,
        }});
    }
    let resp = api.ecs("RunTask", input).await.map_err(err)?;
    for f in resp["failures"].as_array().into_iter().flatten() {
        eprintln!(
            "could not place a task on {}: {}",
            f["arn"].as_str().unwrap_or("?"),
            f["reason"].as_str().unwrap_or("?")
        );
    }
    let arns: Vec<String> = resp["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
        .collect();
    if arns.is_empty() {
        return Err("no task was started; see the reasons above (free resources with `gantry stop`, or add an agent).".into());
    }
    for a in &arns {
        println!("Started task {}", short_id(a));
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    wait_for(
        &api,
        cluster,
        &arns,
        "RUNNING",
        Duration::from_secs(args.timeout),
    )
    .await
}

/// How long `gantry run` keeps watching tasks that reached RUNNING before calling it a success.
const RUNNING_SETTLE: Duration = Duration::from_millis(1000);

/// A task as the user typed it: an ARN, a full id, or the short id `gantry ps` prints (a
/// unique prefix of a task id in the cluster).
pub(crate) async fn resolve_task(
    api: &ApiClient,
    cluster: &str,
    given: &str,
) -> Result<String, String> {
    if given.starts_with("arn:") || given.len() >= 32 {
        return Ok(given.to_string());
    }
    let mut matches: Vec<String> = list_task_arns(api, cluster, &["RUNNING", "STOPPED"])
        .await?
        .into_iter()
        .filter(|a| last_segment(a).starts_with(given))
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(format!(
            "task {given} not found in cluster {cluster}; `gantry ps --all` lists the tasks."
        )),
        n => Err(format!(
            "{n} tasks have ids starting with {given}; give more of the id."
        )),
    }
}

/// Every task ARN in the cluster with one of the desired `statuses`, through all pages.
async fn list_task_arns(
    api: &ApiClient,
    cluster: &str,
    statuses: &[&str],
) -> Result<Vec<String>, String> {
    let mut arns = Vec::new();
    for st in statuses {
        let mut token: Option<String> = None;
        loop {
            let mut input = json!({"cluster": cluster, "desiredStatus": st});
            if let Some(t) = &token {
                input["nextToken"] = json!(t);
            }
            let resp = api.ecs("ListTasks", input).await.map_err(err)?;
            arns.extend(
                resp["taskArns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string)),
            );
            token = resp["nextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(arns)
}

/// Poll until every task reaches `goal` (or STOPPED), printing each status change.
async fn wait_for(
    api: &ApiClient,
    cluster: &str,
    arns: &[String],
    goal: &str,
    timeout: Duration,
) -> Result<ExitCode, String> {
    let started = Instant::now();
    let mut last: Vec<String> = vec![String::new(); arns.len()];
    // A container that crashes at once is RUNNING for an instant; watching a moment longer
    // lets `gantry run` report the crash instead of a success.
    let mut reached: Option<Instant> = None;
    loop {
        let tasks = describe_tasks(api, cluster, arns).await?;
        let mut done = true;
        let mut failed = false;
        for (i, t) in tasks.iter().enumerate() {
            let st = t.last_status.clone().unwrap_or_default();
            if last.get(i) != Some(&st) {
                println!(
                    "  {}  {:<8} {:>6.1}s",
                    short_id(t.task_arn.as_deref().unwrap_or("")),
                    st,
                    started.elapsed().as_secs_f64()
                );
                if let Some(slot) = last.get_mut(i) {
                    *slot = st.clone();
                }
            }
            if st == "STOPPED" && goal != "STOPPED" {
                failed = true;
                println!(
                    "  stopped: {} ({})",
                    t.stopped_reason.as_deref().unwrap_or("no reason given"),
                    t.stop_code.as_deref().unwrap_or("")
                );
                for c in &t.containers {
                    if c.exit_code.is_some() || c.reason.is_some() {
                        println!(
                            "    container {}: exit code {}{}",
                            c.name.as_deref().unwrap_or("?"),
                            c.exit_code.map(|e| e.to_string()).unwrap_or("-".into()),
                            c.reason
                                .as_deref()
                                .map(|r| format!(", {r}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            if st != goal && st != "STOPPED" {
                done = false;
            }
        }
        if failed {
            println!("See the output with: gantry logs <task>");
            return Ok(ExitCode::FAILURE);
        }
        if done {
            if goal != "RUNNING" {
                return Ok(ExitCode::SUCCESS);
            }
            let since = *reached.get_or_insert_with(Instant::now);
            if since.elapsed() >= RUNNING_SETTLE {
                return Ok(ExitCode::SUCCESS);
            }
        } else {
            reached = None;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "timed out after {}s waiting for {goal}; `gantry ps` shows where the tasks are.",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn age(since: Option<f64>) -> String {
    let Some(since) = since else {
        return "-".into();
    };
    let secs = (gantry_model::now_epoch() - since).max(0.0) as u64;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn ports(t: &Task) -> String {
    let mut out = Vec::new();
    // An awsvpc task listens at its own address.
    if let Some(ip) = t
        .containers
        .iter()
        .flat_map(|c| c.network_interfaces.iter().flatten())
        .find_map(|ni| ni["privateIpv4Address"].as_str())
    {
        out.push(ip.to_string());
    }
    for c in &t.containers {
        for b in c.network_bindings.iter().flatten() {
            out.push(format!(
                "{}->{}/{}",
                b.host_port.unwrap_or(0),
                b.container_port.unwrap_or(0),
                b.protocol.as_deref().unwrap_or("tcp")
            ));
        }
    }
    out.join(",")
}

pub async fn ps(args: PsArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = &args.target.cluster;
    let statuses: &[&str] = if args.all {
        &["RUNNING", "STOPPED"]
    } else {
        &["RUNNING"]
    };
    let arns = list_task_arns(&api, cluster, statuses).await?;
    let tasks = describe_tasks(&api, cluster, &arns).await?;
    let mut rows = vec![vec![
        "TASK".to_string(),
        "DEFINITION".into(),
        "STATUS".into(),
        "DESIRED".into(),
        "HEALTH".into(),
        "PORTS".into(),
        "AGE".into(),
        "NOTE".into(),
    ]];
    for t in &tasks {
        rows.push(vec![
            short_id(t.task_arn.as_deref().unwrap_or("")),
            definition_name(t),
            t.last_status.clone().unwrap_or_default(),
            t.desired_status.clone().unwrap_or_default(),
            t.health_status.clone().unwrap_or_default(),
            ports(t),
            age(t.created_at),
            t.stopped_reason.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows);
    if tasks.is_empty() {
        println!(
            "(no tasks{})",
            if args.all {
                ""
            } else {
                "; --all includes stopped ones"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub async fn logs(args: LogsArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = &args.target.cluster;
    let task_ref = resolve_task(&api, cluster, &args.task).await?;
    let tasks = describe_tasks(&api, cluster, std::slice::from_ref(&task_ref)).await?;
    let task = tasks.into_iter().next().ok_or_else(|| {
        format!(
            "task {} not found in cluster {cluster}; `gantry ps --all` lists tasks.",
            args.task
        )
    })?;
    let td_arn = task.task_definition_arn.clone().unwrap_or_default();
    let resp = api
        .ecs("DescribeTaskDefinition", json!({"taskDefinition": td_arn}))
        .await
        .map_err(err)?;
    let td: TaskDefinition = serde_json::from_value(resp["taskDefinition"].clone()).map_err(err)?;
    let task_id = last_segment(task.task_arn.as_deref().unwrap_or("")).to_string();
    let names: Vec<String> = td
        .container_definitions
        .iter()
        .filter_map(|c| c.name.clone())
        .filter(|n| args.container.as_ref().is_none_or(|c| c == n))
        .collect();
    if names.is_empty() {
        return Err(format!(
            "the task has no container named {}",
            args.container.as_deref().unwrap_or("?")
        ));
    }
    let prefix_names = names.len() > 1;
    let mut tokens: Vec<Option<String>> = vec![None; names.len()];
    loop {
        let mut printed = false;
        for (i, name) in names.iter().enumerate() {
            let (group, stream) = log_destination(&td, name, &task_id);
            loop {
                let mut input =
                    json!({"logGroupName": group, "logStreamName": stream, "startFromHead": true});
                if let Some(t) = &tokens[i] {
                    input["nextToken"] = json!(t);
                }
                let resp = match api.logs("GetLogEvents", input).await {
                    Ok(r) => r,
                    Err(e) if e.code == "ResourceNotFoundException" => break,
                    Err(e) => return Err(e.to_string()),
                };
                let events = resp["events"].as_array().cloned().unwrap_or_default();
                for e in &events {
                    let msg = e["message"].as_str().unwrap_or("");
                    if prefix_names {
                        println!("{name} | {msg}");
                    } else {
                        println!("{msg}");
                    }
                }
                tokens[i] = resp["nextForwardToken"].as_str().map(str::to_string);
                if events.is_empty() {
                    break;
                }
                printed = true;
            }
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        if !printed {
            let t = describe_tasks(&api, cluster, std::slice::from_ref(&task_ref)).await?;
            if t.first().and_then(|t| t.last_status.as_deref()) == Some("STOPPED") {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `gantry interrupt`: what a Spot reclaim does to a FARGATE_SPOT task
/// (`GantryV1.InterruptSpotTask`).
pub async fn interrupt(args: InterruptArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = &args.target.cluster;
    let task_ref = resolve_task(&api, cluster, &args.task).await?;
    let resp = api
        .gantry(
            "InterruptSpotTask",
            json!({"cluster": cluster, "task": task_ref}),
        )
        .await
        .map_err(err)?;
    let arn = resp["task"]["taskArn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "Interrupted Spot task {} (stop code SpotInterruption): it stops within its containers' stopTimeout, and its service, if any, replaces it",
        short_id(&arn)
    );
    if args.wait {
        return wait_for(&api, cluster, &[arn], "STOPPED", Duration::from_secs(300)).await;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(args: StopArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = &args.target.cluster;
    let task_ref = resolve_task(&api, cluster, &args.task).await?;
    let mut input = json!({"cluster": cluster, "task": task_ref});
    if let Some(r) = &args.reason {
        input["reason"] = json!(r);
    }
    let resp = api.ecs("StopTask", input).await.map_err(err)?;
    let arn = resp["task"]["taskArn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("Stopping task {}", short_id(&arn));
    if args.wait {
        return wait_for(&api, cluster, &[arn], "STOPPED", Duration::from_secs(300)).await;
    }
    Ok(ExitCode::SUCCESS)
}
