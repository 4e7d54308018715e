//! RegisterTaskDefinition, DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition, DeleteTaskDefinitions.
//!
//! A registration is validated whole before anything is written, then normalised the way AWS
//! echoes it (containers gain `essential`, `environment`, `mountPoints`, `volumesFrom`; port
//! mappings gain `protocol`), so declarative clients see no drift.

use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::lookup;
use crate::state::records::TaskDefinitionRecord;
use crate::state::repo;
use crate::tags::{validate_tags, want_tags};
use crate::wire::{parse, to_output};
use gantry_model::arn::TaskDefinitionRef;
use gantry_model::fargate;
use gantry_model::requirements::{parse_cpu, parse_memory};
use gantry_model::types::{ContainerDefinition, Failure, Tag, TaskDefinition};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

pub const DELETE_IN_PROGRESS: &str = "DELETE_IN_PROGRESS";

/// Members a client may not set: the control plane owns them.
const SERVER_OWNED: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "deregisteredAt",
    "deleteRequestedAt",
    "registeredBy",
];

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn invalid(msg: impl Into<String>) -> EcsError {
    EcsError::client(msg)
}

/// Everything ECS refuses at registration, with a message that names the offending part.
pub fn validate(td: &TaskDefinition) -> EcsResult<()> {
    if !valid_name(&td.family) {
        return Err(invalid(format!(
            "Family '{}' is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
            td.family
        )));
    }
    let containers = &td.container_definitions;
    if containers.is_empty() {
        return Err(invalid("Container list cannot be empty."));
    }
    if containers.len() > 10 {
        return Err(invalid(format!(
            "Too many containers: {} given, a task definition can have at most 10.",
            containers.len()
        )));
    }
    let network_mode = td.network_mode.as_deref().unwrap_or("bridge");
    if !matches!(network_mode, "bridge" | "host" | "awsvpc" | "none") {
        return Err(invalid(format!(
            "Invalid networkMode '{network_mode}': use bridge, host, awsvpc or none."
        )));
    }
    for c in td.requires_compatibilities.iter().flatten() {
        if !matches!(
            c.as_str(),
            "EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES"
        ) {
            return Err(invalid(format!(
                "Invalid requiresCompatibilities value '{c}': use EC2, FARGATE, EXTERNAL or MANAGED_INSTANCES."
            )));
        }
    }
    let task_cpu = match &td.cpu {
        Some(s) => Some(parse_cpu(s).filter(|v| *v >= 128).ok_or_else(|| {
            invalid(format!(
                "Invalid 'cpu' setting for task: '{s}'. Use CPU units (at least 128, e.g. \"256\") or vCPU (e.g. \"1 vCPU\")."
            ))
        })?),
        None => None,
    };
    let task_memory = match &td.memory {
        Some(s) => Some(parse_memory(s).filter(|v| *v >= 6).ok_or_else(|| {
            invalid(format!(
                "Invalid 'memory' setting for task: '{s}'. Use MiB (at least 6, e.g. \"512\") or GB (e.g. \"1 GB\")."
            ))
        })?),
        None => None,
    };
    if let Some(p) = &td.pid_mode {
        if !matches!(p.as_str(), "host" | "task") {
            return Err(invalid(format!("Invalid pidMode '{p}': use host or task.")));
        }
    }
    if let Some(p) = &td.ipc_mode {
        if !matches!(p.as_str(), "host" | "task" | "none") {
            return Err(invalid(format!(
                "Invalid ipcMode '{p}': use host, task or none."
            )));
        }
    }
    fargate::validate_ephemeral_storage(td).map_err(invalid)?;
    // Secrets are read with the execution role when the task starts: ECS refuses a definition
    // that names secrets (even an empty list) without one.
    let has_execution_role = td
        .execution_role_arn
        .as_deref()
        .is_some_and(|r| !r.is_empty());
    if !has_execution_role && containers.iter().any(|c| c.extra.contains_key("secrets")) {
        return Err(invalid(
            "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.",
        ));
    }
    // A definition that asks for FARGATE is validated against it whole: one ClientException
    // for the first rule it breaks, in ECS's words.
    if fargate::requires_fargate(td) {
        if let Some(reason) = fargate::fargate_incompatibility(td) {
            return Err(invalid(reason));
        }
    }

    let mut volume_names = HashSet::new();
    for v in td.volumes.iter().flatten() {
        let name = v.name.as_deref().unwrap_or("");
        if !valid_name(name) {
            return Err(invalid(format!(
                "Invalid volume name '{name}': up to 255 letters, numbers, hyphens, and underscores are allowed."
            )));
        }
        if !volume_names.insert(name.to_string()) {
            return Err(invalid(format!("Duplicate volume name '{name}'.")));
        }
        if v.host.is_some() && v.docker_volume_configuration.is_some() {
            return Err(invalid(format!(
                "Volume '{name}' cannot specify both host and dockerVolumeConfiguration."
            )));
        }
        if let Some(scope) = v
            .docker_volume_configuration
            .as_ref()
            .and_then(|d| d.scope.as_deref())
        {
            if !matches!(scope, "task" | "shared") {
                return Err(invalid(format!(
                    "Invalid scope '{scope}' for volume '{name}': use task or shared."
                )));
            }
        }
    }

    let names: Vec<&str> = containers
        .iter()
        .map(|c| c.name.as_deref().unwrap_or(""))
        .collect();
    let mut seen = HashSet::new();
    let mut total_memory = 0i64;
    for c in containers {
        let name = c.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(invalid("Container.name should not be null or empty."));
        }
        if !valid_name(name) {
            return Err(invalid(format!(
                "Invalid container name '{name}': up to 255 letters, numbers, hyphens, and underscores are allowed."
            )));
        }
        if !seen.insert(name) {
            return Err(invalid(format!(
                "Duplicate container name '{name}': container names must be unique within a task definition."
            )));
        }
        validate_container(c, name, network_mode, &names, &volume_names)?;
        if c.memory.is_none() && c.memory_reservation.is_none() && task_memory.is_none() {
            return Err(invalid(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )));
        }
        total_memory += c.memory_reservation.or(c.memory).unwrap_or(0) as i64;
        if let (Some(tc), Some(cc)) = (task_cpu, c.cpu) {
            if cc as i64 > tc {
                return Err(invalid(format!(
                    "Invalid setting for container '{name}': cpu {cc} is greater than the task's cpu {tc}."
                )));
            }
        }
    }
    if let Some(tm) = task_memory {
        if total_memory > tm {
            return Err(invalid(format!(
                "The total memory reserved by the containers ({total_memory} MiB) is greater than the task's memory ({tm} MiB)."
            )));
        }
    }
    if !containers.iter().any(|c| c.essential != Some(false)) {
        return Err(invalid(
            "At least one container in a task definition must be essential.",
        ));
    }
    check_dependency_cycles(containers)?;
    Ok(())
}

/// A container `restartPolicy` as ECS accepts it: `enabled` required, at most 50
/// `ignoredExitCodes`, `restartAttemptPeriod` between 60 and 1800 seconds.
fn validate_restart_policy(name: &str, policy: &Value) -> EcsResult<()> {
    let bad = |why: &str| {
        invalid(format!(
            "Invalid restartPolicy for container '{name}': {why}"
        ))
    };
    let obj = policy
        .as_object()
        .ok_or_else(|| bad("it must be an object."))?;
    if !obj.get("enabled").is_some_and(Value::is_boolean) {
        return Err(bad("'enabled' (true or false) is required."));
    }
    if let Some(codes) = obj.get("ignoredExitCodes") {
        let codes = codes
            .as_array()
            .filter(|a| a.iter().all(|c| c.as_i64().is_some()))
            .ok_or_else(|| bad("'ignoredExitCodes' must be a list of integers."))?;
        if codes.len() > 50 {
            return Err(bad("at most 50 ignoredExitCodes."));
        }
    }
    if let Some(period) = obj.get("restartAttemptPeriod") {
        match period.as_i64() {
            Some(p) if (60..=1800).contains(&p) => {}
            _ => return Err(bad("'restartAttemptPeriod' must be 60 to 1800 seconds.")),
        }
    }
    Ok(())
}

fn validate_container(
    c: &ContainerDefinition,
    name: &str,
    network_mode: &str,
    names: &[&str],
    volume_names: &HashSet<String>,
) -> EcsResult<()> {
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return Err(invalid(format!(
            "Container.image should not be null or empty (container '{name}')."
        )));
    }
    if let Some(cpu) = c.cpu {
        if !(0..=10240).contains(&cpu) {
            return Err(invalid(format!(
                "Invalid setting for container '{name}': cpu must be between 0 and 10240 units."
            )));
        }
    }
    if let Some(m) = c.memory {
        if m < 6 {
            return Err(invalid(format!(
                "Invalid setting for container '{name}': memory must be at least 6 MiB."
            )));
        }
    }
    if let Some(r) = c.memory_reservation {
        if r < 6 {
            return Err(invalid(format!(
                "Invalid setting for container '{name}': memoryReservation must be at least 6 MiB."
            )));
        }
        if let Some(m) = c.memory {
            if r > m {
                return Err(invalid(format!(
                    "Invalid setting for container '{name}': memoryReservation ({r}) must be less than or equal to memory ({m})."
                )));
            }
        }
    }
    for pm in c.port_mappings.iter().flatten() {
        let cp = pm.container_port;
        if let Some(cp) = cp {
            if !(1..=65535).contains(&cp) {
                return Err(invalid(format!(
                    "Invalid containerPort {cp} for container '{name}': use 1-65535."
                )));
            }
        } else if !pm.extra.contains_key("containerPortRange") {
            return Err(invalid(format!(
                "A port mapping of container '{name}' needs a containerPort."
            )));
        }
        if let Some(hp) = pm.host_port {
            if !(0..=65535).contains(&hp) {
                return Err(invalid(format!(
                    "Invalid hostPort {hp} for container '{name}': use 0-65535."
                )));
            }
            if matches!(network_mode, "host" | "awsvpc") && hp != 0 && Some(hp) != cp {
                return Err(invalid(if network_mode == "awsvpc" {
                    fargate::AWSVPC_PORT_MISMATCH.to_string()
                } else {
                    // text not confirmed against AWS: written after the awsvpc text.
                    "When networkMode=host, the host ports and container ports in port mappings must match.".to_string()
                }));
            }
        }
        if let Some(p) = &pm.protocol {
            if !matches!(p.as_str(), "tcp" | "udp") {
                return Err(invalid(format!(
                    "Invalid protocol '{p}' for container '{name}': use tcp or udp."
                )));
            }
        }
    }
    for d in c.depends_on.iter().flatten() {
        if !matches!(
            d.condition.as_str(),
            "START" | "COMPLETE" | "SUCCESS" | "HEALTHY"
        ) {
            return Err(invalid(format!(
                "Invalid dependsOn condition '{}' for container '{name}': use START, COMPLETE, SUCCESS or HEALTHY.",
                d.condition
            )));
        }
        if d.container_name == name {
            return Err(invalid(format!(
                "Container '{name}' cannot depend on itself."
            )));
        }
        if !names.contains(&d.container_name.as_str()) {
            return Err(invalid(format!(
                "Container '{name}' depends on '{}', which is not a container in this task definition.",
                d.container_name
            )));
        }
    }
    for l in c.links.iter().flatten() {
        let target = l.split(':').next().unwrap_or("");
        if !names.contains(&target) {
            return Err(invalid(format!(
                "Container '{name}' links to '{target}', which is not a container in this task definition."
            )));
        }
    }
    for m in c.mount_points.iter().flatten() {
        let src = m.source_volume.as_deref().unwrap_or("");
        if !volume_names.contains(src) {
            return Err(invalid(format!(
                "Invalid 'mountPoints' in container '{name}': unknown volume '{src}'. Declare it under 'volumes'."
            )));
        }
        if m.container_path.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "A mount point of container '{name}' needs a containerPath."
            )));
        }
    }
    for v in c.volumes_from.iter().flatten() {
        let src = v.source_container.as_deref().unwrap_or("");
        if !names.contains(&src) || src == name {
            return Err(invalid(format!(
                "Container '{name}' takes volumes from '{src}', which is not another container in this task definition."
            )));
        }
    }
    if let Some(hc) = &c.health_check {
        match hc.command.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") if hc.command.len() > 1 => {}
            Some("NONE") => {}
            _ => {
                return Err(invalid(format!(
                    "Invalid healthCheck command for container '{name}': it must start with CMD or CMD-SHELL followed by the command."
                )))
            }
        }
        let ranges = [
            ("interval", hc.interval, 5, 300),
            ("timeout", hc.timeout, 2, 120),
            ("retries", hc.retries, 1, 10),
            ("startPeriod", hc.start_period, 0, 300),
        ];
        for (field, value, lo, hi) in ranges {
            if let Some(v) = value {
                if v < lo || v > hi {
                    return Err(invalid(format!(
                        "Invalid healthCheck {field} {v} for container '{name}': use {lo}-{hi}."
                    )));
                }
            }
        }
    }
    if let Some(policy) = c.extra.get("restartPolicy") {
        validate_restart_policy(name, policy)?;
    }
    if let Some(lc) = &c.log_configuration {
        if !matches!(
            lc.log_driver.as_str(),
            "json-file"
                | "syslog"
                | "journald"
                | "gelf"
                | "fluentd"
                | "awslogs"
                | "splunk"
                | "awsfirelens"
        ) {
            return Err(invalid(format!(
                "Invalid logDriver '{}' for container '{name}'.",
                lc.log_driver
            )));
        }
    }
    if let Some(v) = c.stop_timeout {
        if !(0..=120).contains(&v) {
            return Err(invalid(format!(
                "Invalid stopTimeout {v} for container '{name}': use 0-120 seconds."
            )));
        }
    }
    if let Some(v) = c.start_timeout {
        if v < 0 {
            return Err(invalid(format!(
                "Invalid startTimeout {v} for container '{name}'."
            )));
        }
    }
    Ok(())
}

/// dependsOn must not form a cycle: such a task could never start.
fn check_dependency_cycles(containers: &[ContainerDefinition]) -> EcsResult<()> {
    let deps: BTreeMap<&str, Vec<&str>> = containers
        .iter()
        .map(|c| {
            (
                c.name.as_deref().unwrap_or(""),
                c.depends_on
                    .iter()
                    .flatten()
                    .map(|d| d.container_name.as_str())
                    .collect(),
            )
        })
        .collect();
    // Kahn's algorithm: repeatedly remove containers whose dependencies are all removed.
    let mut done: HashSet<&str> = HashSet::new();
    loop {
        let ready: Vec<&str> = deps
            .iter()
            .filter(|(n, ds)| !done.contains(*n) && ds.iter().all(|d| done.contains(d)))
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            break;
        }
        done.extend(ready);
    }
    if done.len() < deps.len() {
        let stuck: Vec<&str> = deps
            .keys()
            .filter(|n| !done.contains(*n))
            .copied()
            .collect();
        return Err(invalid(format!(
            "The dependsOn of containers {} form a cycle.",
            stuck.join(", ")
        )));
    }
    Ok(())
}

/// AWS's echo normalisation of a container definition.
fn normalize_container(c: &mut ContainerDefinition, network_mode: &str) {
    c.essential.get_or_insert(true);
    c.cpu.get_or_insert(0);
    c.environment.get_or_insert_with(Vec::new);
    c.mount_points.get_or_insert_with(Vec::new);
    c.volumes_from.get_or_insert_with(Vec::new);
    c.port_mappings.get_or_insert_with(Vec::new);
    for pm in c.port_mappings.iter_mut().flatten() {
        pm.protocol.get_or_insert_with(|| "tcp".to_string());
        if matches!(network_mode, "host" | "awsvpc") && pm.host_port.is_none_or(|h| h == 0) {
            pm.host_port = pm.container_port;
        }
    }
}

#[derive(Debug, Deserialize)]
struct RegisterExtras {
    #[serde(default)]
    tags: Option<Vec<Tag>>,
}

pub async fn register(plane: &ControlPlane, mut input: Value) -> EcsResult<Value> {
    let extras: RegisterExtras = parse(json!({"tags": input.get("tags").cloned()}))?;
    if let Some(obj) = input.as_object_mut() {
        obj.remove("tags");
        for k in SERVER_OWNED {
            obj.remove(*k);
        }
    }
    if input.get("family").is_none_or(Value::is_null) {
        return Err(invalid("family is required."));
    }
    if input.get("containerDefinitions").is_none_or(Value::is_null) {
        return Err(invalid("containerDefinitions is required."));
    }
    let mut td: TaskDefinition = parse(input)?;
    let tags = extras.tags.unwrap_or_default();
    validate_tags(&tags)?;
    validate(&td)?;

    let network_mode = td.network_mode.clone().unwrap_or_else(|| "bridge".into());
    for c in &mut td.container_definitions {
        normalize_container(c, &network_mode);
    }
    td.volumes.get_or_insert_with(Vec::new);
    td.placement_constraints.get_or_insert_with(Vec::new);
    td.status = Some(status::ACTIVE.into());
    td.compatibilities = Some(compatibilities(&td));
    td.requires_attributes = Some(Vec::new());
    td.registered_by = Some(format!("arn:aws:iam::{}:root", plane.scope().account));

    let family = td.family.clone();
    let counter_key = repo::taskdef_revision_key(&family);
    loop {
        let last = repo::get::<i64>(&*plane.store, &counter_key).await?;
        let (last_rev, counter_rev) = last.unwrap_or((0, 0));
        let revision = last_rev + 1;
        td.revision = Some(revision);
        td.task_definition_arn = Some(plane.scope().task_definition(&family, revision));
        td.registered_at = Some(now_epoch());
        let record = TaskDefinitionRecord {
            task_definition: td.clone(),
            tags: tags.clone(),
        };
        let key = repo::taskdef_key(&family, revision);
        let committed = repo::commit(
            &*plane.store,
            vec![
                repo::unchanged_since(&counter_key, counter_rev),
                repo::unchanged_since(&key, 0),
            ],
            vec![
                repo::put_op(&counter_key, &revision)?,
                repo::put_op(&key, &record)?,
            ],
        )
        .await?;
        if committed {
            let mut out = json!({"taskDefinition": to_output(&record.task_definition)?});
            if !record.tags.is_empty() {
                out["tags"] = to_output(&record.tags)?;
            }
            return Ok(out);
        }
    }
}

/// What a definition can run on, as ECS computes it: EC2 always, FARGATE exactly when the
/// definition meets every Fargate rule (whether or not it asked for FARGATE).
fn compatibilities(td: &TaskDefinition) -> Vec<String> {
    let mut c = vec!["EC2".to_string()];
    if fargate::fargate_incompatibility(td).is_none() {
        c.push("FARGATE".into());
    }
    c
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    task_definition: String,
    include: Option<Vec<String>>,
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let with_tags = want_tags(&req.include)?;
    let (record, _) = lookup::task_definition(&*plane.store, &req.task_definition).await?;
    let mut out = json!({"taskDefinition": to_output(&record.task_definition)?});
    if with_tags {
        out["tags"] = to_output(&record.tags)?;
    }
    Ok(out)
}

fn parse_status_filter(s: Option<&str>, allow_all: bool) -> EcsResult<Option<String>> {
    match s {
        None => Ok(None),
        Some("ACTIVE") | Some("INACTIVE") => Ok(s.map(str::to_string)),
        Some("DELETE_IN_PROGRESS") if !allow_all => Ok(s.map(str::to_string)),
        Some("ALL") if allow_all => Ok(None),
        Some(other) => Err(EcsError::invalid_parameter(format!(
            "Invalid status '{other}'."
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    family_prefix: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    next_token: Option<String>,
    max_results: Option<i32>,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    let wanted = parse_status_filter(req.status.as_deref(), false)?
        .unwrap_or_else(|| status::ACTIVE.to_string());
    let descending = match req.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid sort '{other}': use ASC or DESC."
            )))
        }
    };
    let prefix = match &req.family_prefix {
        Some(f) => repo::taskdef_prefix(f),
        None => repo::TASKDEFS.to_string(),
    };
    let records: Vec<(TaskDefinitionRecord, i64)> = repo::list(&*plane.store, &prefix).await?;
    let mut defs: Vec<TaskDefinition> = records
        .into_iter()
        .map(|(r, _)| r.task_definition)
        .filter(|td| td.status.as_deref() == Some(wanted.as_str()))
        .collect();
    defs.sort_by(|a, b| (&a.family, a.revision).cmp(&(&b.family, b.revision)));
    if descending {
        defs.reverse();
    }
    let arns: Vec<String> = defs
        .into_iter()
        .filter_map(|td| td.task_definition_arn)
        .collect();
    let (page, next) = pagination::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
    let mut out = json!({"taskDefinitionArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub async fn list_families(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    let wanted = parse_status_filter(req.status.as_deref(), true)?;
    let records: Vec<(TaskDefinitionRecord, i64)> =
        repo::list(&*plane.store, repo::TASKDEFS).await?;
    let mut families: BTreeMap<String, bool> = BTreeMap::new();
    for (r, _) in records {
        let td = r.task_definition;
        if let Some(p) = &req.family_prefix {
            if !td.family.starts_with(p.as_str()) {
                continue;
            }
        }
        let active = td.status.as_deref() == Some(status::ACTIVE);
        *families.entry(td.family).or_insert(false) |= active;
    }
    let names: Vec<String> = families
        .into_iter()
        .filter(|(_, active)| match wanted.as_deref() {
            Some("ACTIVE") => *active,
            Some("INACTIVE") => !*active,
            _ => true,
        })
        .map(|(f, _)| f)
        .collect();
    let (page, next) = pagination::page(names, req.next_token.as_deref(), req.max_results, 100)?;
    let mut out = json!({"families": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

/// The store key of a reference that must name a revision.
fn revision_key(reference: &str) -> EcsResult<String> {
    let r = TaskDefinitionRef::parse(reference)
        .ok_or_else(|| invalid(format!("Invalid task definition '{reference}'.")))?;
    let rev = r.revision.ok_or_else(|| {
        invalid(format!(
            "The task definition '{reference}' must name a revision (family:revision or a full ARN)."
        ))
    })?;
    Ok(repo::taskdef_key(&r.family, rev))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeregisterInput {
    task_definition: String,
}

pub async fn deregister(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeregisterInput = parse(input)?;
    let key = revision_key(&req.task_definition)?;
    let record = repo::update::<TaskDefinitionRecord, _>(&*plane.store, &key, |r| {
        let td = &mut r.task_definition;
        if td.status.as_deref() == Some(status::ACTIVE) {
            td.status = Some(status::INACTIVE.into());
            td.deregistered_at = Some(now_epoch());
        }
        Ok(())
    })
    .await?
    .ok_or_else(|| {
        invalid(format!(
            "The specified task definition '{}' does not exist.",
            req.task_definition
        ))
    })?;
    Ok(json!({"taskDefinition": to_output(&record.task_definition)?}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteInput {
    task_definitions: Vec<String>,
}

pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeleteInput = parse(input)?;
    if req.task_definitions.is_empty() || req.task_definitions.len() > 10 {
        return Err(EcsError::invalid_parameter(
            "Specify between 1 and 10 task definitions to delete.",
        ));
    }
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for reference in &req.task_definitions {
        let key = revision_key(reference)?;
        let result = repo::update::<TaskDefinitionRecord, _>(&*plane.store, &key, |r| {
            let td = &mut r.task_definition;
            match td.status.as_deref() {
                Some(status::ACTIVE) => Err(invalid(
                    "The specified task definition is still in ACTIVE status. Please deregister the target and try again.",
                )),
                Some(DELETE_IN_PROGRESS) => Ok(()),
                _ => {
                    td.status = Some(DELETE_IN_PROGRESS.into());
                    td.delete_requested_at = Some(now_epoch());
                    Ok(())
                }
            }
        })
        .await;
        match result {
            Ok(Some(r)) => deleted.push(r.task_definition),
            Ok(None) => failures.push(Failure {
                arn: Some(reference.clone()),
                reason: Some("TASK_DEFINITION_NOT_FOUND".into()),
                detail: Some("The specified task definition does not exist.".into()),
            }),
            Err(e) if e.code == "ClientException" => failures.push(Failure {
                arn: Some(reference.clone()),
                reason: Some("TASK_DEFINITION_IN_USE".into()),
                detail: Some(e.message),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(json!({"taskDefinitions": to_output(&deleted)?, "failures": failures}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(v: Value) -> TaskDefinition {
        serde_json::from_value(v).expect("a task definition")
    }

    fn fargate_def() -> Value {
        json!({
            "family": "web",
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "512",
            "memory": "1 GB",
            "containerDefinitions": [{
                "name": "web",
                "image": "nginx",
                "portMappings": [{"containerPort": 80, "hostPort": 80}]
            }]
        })
    }

    /// A change to a valid Fargate definition.
    type Edit = fn(&mut Value);

    fn refusal(v: Value) -> EcsError {
        validate(&td(v)).expect_err("refused")
    }

    #[test]
    fn registers_a_valid_fargate_definition() {
        let def = td(fargate_def());
        assert_eq!(validate(&def), Ok(()));
        assert_eq!(compatibilities(&def), vec!["EC2", "FARGATE"]);
    }

    #[test]
    fn secrets_need_an_execution_role_even_when_the_list_is_empty() {
        let mut def = fargate_def();
        def["containerDefinitions"][0]["secrets"] = json!([]);
        let e = refusal(def.clone());
        assert_eq!(e.code, "ClientException");
        assert_eq!(
            e.message,
            "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'."
        );
        def["executionRoleArn"] = json!("arn:aws:iam::000000000000:role/exec");
        assert_eq!(validate(&td(def)), Ok(()));
    }

    #[test]
    fn fargate_refusals_are_client_exceptions_in_aws_words() {
        let cases: Vec<(Edit, String)> = vec![
            (
                (|v: &mut Value| v["networkMode"] = json!("bridge")),
                fargate::AWSVPC_REQUIRED.into(),
            ),
            (
                (|v: &mut Value| {
                    v.as_object_mut().unwrap().remove("cpu");
                }),
                fargate::TASK_CPU_REQUIRED.into(),
            ),
            (
                (|v: &mut Value| {
                    v.as_object_mut().unwrap().remove("memory");
                }),
                fargate::TASK_MEMORY_REQUIRED.into(),
            ),
            (
                (|v: &mut Value| v["memory"] = json!("256")),
                "No Fargate configuration exists for given values: 512 CPU, 256 memory. See the Amazon ECS documentation for the valid values.".into(),
            ),
            (
                (|v: &mut Value| v["containerDefinitions"][0]["privileged"] = json!(true)),
                fargate::PRIVILEGED_UNSUPPORTED.into(),
            ),
            (
                (|v: &mut Value| {
                    v["volumes"] = json!([{"name": "data", "host": {"sourcePath": "/data"}}])
                }),
                fargate::HOST_SOURCE_PATH_UNSUPPORTED.into(),
            ),
            (
                (|v: &mut Value| {
                    v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(8080)
                }),
                fargate::AWSVPC_PORT_MISMATCH.into(),
            ),
            (
                (|v: &mut Value| v["pidMode"] = json!("host")),
                "Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'.".into(),
            ),
            (
                (|v: &mut Value| v["ipcMode"] = json!("host")),
                fargate::IPC_MODE_UNSUPPORTED.into(),
            ),
            (
                (|v: &mut Value| {
                    v["containerDefinitions"][0]["linuxParameters"] =
                        json!({"devices": [{"hostPath": "/dev/fuse"}]})
                }),
                "Fargate compatible task definitions do not support devices".into(),
            ),
        ];
        for (edit, message) in cases {
            let mut v = fargate_def();
            edit(&mut v);
            let e = refusal(v.clone());
            assert_eq!(
                (e.code, e.message.as_str()),
                ("ClientException", message.as_str())
            );
            // Without FARGATE asked for, the same definition registers (where EC2 allows
            // it) and simply is not FARGATE-compatible.
            v["requiresCompatibilities"] = json!(["EC2"]);
            let def = td(v);
            if validate(&def).is_ok() {
                assert_eq!(compatibilities(&def), vec!["EC2"]);
            }
        }
    }

    #[test]
    fn fargate_rules_apply_only_when_fargate_is_required() {
        let mut v = fargate_def();
        v["requiresCompatibilities"] = json!(["EC2"]);
        v["networkMode"] = json!("bridge");
        v["containerDefinitions"][0]["privileged"] = json!(true);
        v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(8080);
        let def = td(v);
        assert_eq!(validate(&def), Ok(()));
        assert_eq!(compatibilities(&def), vec!["EC2"]);
        // Without requiresCompatibilities, a definition that meets every Fargate rule is
        // still computed FARGATE-compatible.
        let mut v = fargate_def();
        v.as_object_mut().unwrap().remove("requiresCompatibilities");
        assert_eq!(compatibilities(&td(v)), vec!["EC2", "FARGATE"]);
    }

    #[test]
    fn awsvpc_host_port_rule_is_the_one_aws_rule() {
        let mut v = fargate_def();
        v["requiresCompatibilities"] = json!(["EC2"]);
        v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(8080);
        assert_eq!(refusal(v).message, fargate::AWSVPC_PORT_MISMATCH);
    }

    #[test]
    fn ephemeral_storage_is_validated_at_registration() {
        let mut v = fargate_def();
        v["ephemeralStorage"] = json!({"sizeInGiB": 20});
        let e = refusal(v);
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                "ClientException",
                "EphemeralStorage size should be at least 21"
            )
        );
        let mut v = fargate_def();
        v["ephemeralStorage"] = json!({"sizeInGiB": 201});
        assert_eq!(
            refusal(v).message,
            "EphemeralStorage size should be at most 200"
        );
        let mut v = fargate_def();
        v["ephemeralStorage"] = json!({"sizeInGiB": 100});
        assert_eq!(validate(&td(v)), Ok(()));
    }
}
