//! The task API: RunTask, StartTask, StopTask, DescribeTasks, ListTasks. Placing and
//! stopping are in `lifecycle.rs` (shared with the service scheduler); the agent's reports
//! in `task_reports.rs`.

use crate::clusters;
use crate::lifecycle::{
    build_spec, load_cluster_tasks, place, place_tasks, replay_token, request_stop, LaunchOptions,
    Target,
};
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::records::TaskRecord;
use crate::state::repo;
use crate::tags::want_tags;
use crate::wire::{parse, to_output};
use gantry_model::arn::{cluster_of_arn, last_segment};
use gantry_model::types::{
    Failure, PlacementConstraint, PlacementStrategy, Tag, Task, TaskOverride,
};
use gantry_model::{status, stop_code, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunTaskInput {
    cluster: Option<String>,
    task_definition: String,
    count: Option<i32>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<TaskOverride>,
    placement_constraints: Option<Vec<PlacementConstraint>>,
    placement_strategy: Option<Vec<PlacementStrategy>>,
    launch_type: Option<String>,
    capacity_provider_strategy: Option<Vec<Value>>,
    platform_version: Option<String>,
    network_configuration: Option<Value>,
    tags: Option<Vec<Tag>>,
    client_token: Option<String>,
    enable_execute_command: Option<bool>,
}

pub async fn run(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: RunTaskInput = parse(input)?;
    let count = req.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(EcsError::invalid_parameter(format!(
            "count must be between 1 and 10 (got {count})."
        )));
    }
    let strategies = req.placement_strategy.unwrap_or_default();
    let constraints = req.placement_constraints.unwrap_or_default();
    gantry_scheduler::validate_strategies(&strategies).map_err(EcsError::invalid_parameter)?;
    gantry_scheduler::validate_constraints(&constraints).map_err(EcsError::invalid_parameter)?;
    if let Some(t) = &req.client_token {
        if t.is_empty() || t.len() > 64 {
            return Err(EcsError::invalid_parameter(
                "clientToken must be 1 to 64 characters.",
            ));
        }
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    if let Some(token) = &req.client_token {
        if let Some((tasks, failures)) = replay_token(plane, &cname, token).await? {
            return tasks_output(&tasks, &failures);
        }
    }
    let spec = build_spec(
        plane,
        &req.task_definition,
        false,
        req.overrides,
        req.started_by,
        req.group,
        LaunchOptions {
            launch_type: req.launch_type,
            capacity_provider_strategy: req.capacity_provider_strategy.unwrap_or_default(),
            platform_version: req.platform_version,
            network_configuration: req.network_configuration,
            ..LaunchOptions::for_cluster(&cluster)
        },
        req.tags,
        req.enable_execute_command,
    )
    .await?;
    spec.check_placement(&strategies, &constraints)?;
    let target = Target::Scheduler {
        count: count as usize,
        strategies,
        constraints,
    };
    let (tasks, failures) = place(
        plane,
        &cname,
        &spec,
        &target,
        req.client_token.as_deref(),
        &Default::default(),
    )
    .await?;
    tasks_output(&tasks, &failures)
}

fn tasks_output(tasks: &[TaskRecord], failures: &[Failure]) -> EcsResult<Value> {
    let rendered: Vec<Task> = tasks.iter().map(|t| t.render(true)).collect();
    Ok(json!({"tasks": to_output(&rendered)?, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartTaskInput {
    cluster: Option<String>,
    task_definition: String,
    container_instances: Vec<String>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<TaskOverride>,
    network_configuration: Option<Value>,
    tags: Option<Vec<Tag>>,
    enable_execute_command: Option<bool>,
}

pub async fn start(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: StartTaskInput = parse(input)?;
    if req.container_instances.is_empty() || req.container_instances.len() > 10 {
        return Err(EcsError::invalid_parameter(
            "Specify between 1 and 10 container instances.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let spec = build_spec(
        plane,
        &req.task_definition,
        false,
        req.overrides,
        req.started_by,
        req.group,
        LaunchOptions {
            launch_type: Some("EC2".into()),
            network_configuration: req.network_configuration,
            ..Default::default()
        },
        req.tags,
        req.enable_execute_command,
    )
    .await?;
    let (tasks, failures) = place_tasks(
        plane,
        &cname,
        &spec,
        &Target::Instances(req.container_instances),
        None,
    )
    .await?;
    tasks_output(&tasks, &failures)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopTaskInput {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

pub async fn stop(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: StopTaskInput = parse(input)?;
    if req.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(EcsError::invalid_parameter(
            "reason can be at most 1024 characters.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let reason = req
        .reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "Task stopped by user".into());
    let record = request_stop(plane, &cname, &req.task, stop_code::USER_INITIATED, &reason).await?;
    Ok(json!({"task": to_output(&record.render(true))?}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InterruptInput {
    cluster: Option<String>,
    task: String,
}

/// `GantryV1.InterruptSpotTask`: what a Spot reclaim does to a FARGATE_SPOT task. The task
/// gets ECS's notice (desired STOPPED, stop code SpotInterruption); its agent sends SIGTERM and
/// waits the containers' stopTimeout (Fargate's two-minute notice, shortened to it) before
/// SIGKILL; a service replaces the task as it replaces any stopped one.
pub async fn interrupt_spot(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: InterruptInput = parse(input)?;
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    if cluster_of_arn(req.task.trim()).is_some_and(|c| c != cname) {
        return Err(crate::lifecycle::task_not_found());
    }
    let key = repo::task_key(&cname, last_segment(req.task.trim()));
    let (current, _) = repo::get::<TaskRecord>(&*plane.store, &key)
        .await?
        .ok_or_else(crate::lifecycle::task_not_found)?;
    if current.task.capacity_provider_name.as_deref() != Some("FARGATE_SPOT") {
        return Err(EcsError::invalid_parameter(format!(
            "Task {} does not run on FARGATE_SPOT capacity: only Spot tasks can be interrupted.",
            req.task
        )));
    }
    let record = request_stop(
        plane,
        &cname,
        &req.task,
        stop_code::SPOT_INTERRUPTION,
        "Your Spot Task was interrupted.",
    )
    .await?;
    Ok(json!({"task": to_output(&record.render(true))?}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    cluster: Option<String>,
    tasks: Vec<String>,
    include: Option<Vec<String>>,
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let with_tags = want_tags(&req.include)?;
    if req.tasks.is_empty() || req.tasks.len() > 100 {
        return Err(EcsError::invalid_parameter(
            "Specify between 1 and 100 tasks.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for given in &req.tasks {
        let in_cluster = cluster_of_arn(given).is_none_or(|c| c == cname);
        let record = if in_cluster {
            repo::get::<TaskRecord>(&*plane.store, &repo::task_key(&cname, last_segment(given)))
                .await?
        } else {
            None
        };
        match record {
            Some((t, _)) => found.push(t.render(with_tags)),
            None => failures.push(Failure::missing(if given.starts_with("arn:") {
                given.clone()
            } else {
                plane.scope().task(&cname, given)
            })),
        }
    }
    Ok(json!({"tasks": to_output(&found)?, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    cluster: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
    service_name: Option<String>,
    desired_status: Option<String>,
    launch_type: Option<String>,
    next_token: Option<String>,
    max_results: Option<i32>,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    let desired = req.desired_status.as_deref().unwrap_or(status::RUNNING);
    if !matches!(desired, "RUNNING" | "PENDING" | "STOPPED") {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid desiredStatus '{desired}': use RUNNING, PENDING or STOPPED."
        )));
    }
    if let Some(lt) = &req.launch_type {
        if !matches!(
            lt.as_str(),
            "EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES"
        ) {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid launchType '{lt}'."
            )));
        }
    }
    if req.family.is_some() && req.service_name.is_some() {
        return Err(EcsError::invalid_parameter(
            "family and serviceName cannot be combined.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let instance_arn = req
        .container_instance
        .as_deref()
        .map(|ci| plane.scope().container_instance(&cname, last_segment(ci)));
    let service_group = req
        .service_name
        .as_deref()
        .map(|s| format!("service:{}", last_segment(s)));
    if let Some(service) = req.service_name.as_deref() {
        if plane.cache.service(&cname, last_segment(service)).is_none() {
            return Err(EcsError::service_not_found());
        }
    }
    let mut tasks = load_cluster_tasks(plane, &cname).await?;
    tasks.retain(|t| {
        let task = &t.task;
        // ECS lists PENDING tasks under desiredStatus RUNNING (their desired status).
        let status_ok = match desired {
            "PENDING" => {
                task.last_status.as_deref() == Some(status::PENDING)
                    && task.desired_status.as_deref() == Some(status::RUNNING)
            }
            d => task.desired_status.as_deref() == Some(d),
        };
        status_ok
            && instance_arn
                .as_ref()
                .is_none_or(|a| task.container_instance_arn.as_ref() == Some(a))
            && req.family.as_ref().is_none_or(|f| &t.internal.family == f)
            && req
                .started_by
                .as_ref()
                .is_none_or(|s| task.started_by.as_ref() == Some(s))
            && service_group
                .as_ref()
                .is_none_or(|g| task.group.as_ref() == Some(g))
            && req
                .launch_type
                .as_ref()
                .is_none_or(|l| task.launch_type.as_ref() == Some(l))
    });
    tasks.sort_by(|a, b| {
        a.task
            .created_at
            .unwrap_or(0.0)
            .total_cmp(&b.task.created_at.unwrap_or(0.0))
            .then_with(|| a.task.task_arn.cmp(&b.task.task_arn))
    });
    let arns: Vec<String> = tasks.into_iter().filter_map(|t| t.task.task_arn).collect();
    let (page, next) = pagination::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
    let mut out = json!({"taskArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}
