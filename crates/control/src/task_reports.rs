//! The agent's reports: SubmitTaskStateChange and SubmitContainerStateChange, which drive a
//! task's lifecycle as ECS reports it: PENDING → RUNNING → STOPPED, with per-container status,
//! exit codes, network bindings, health, stop codes and timestamps. Status only moves forward.

use crate::lifecycle::task_not_found;
use crate::plane::ControlPlane;
use crate::state::keys;
use crate::state::records::{mark_stopped, TaskRecord};
use crate::state::repo;
use crate::wire::parse;
use gantry_model::agent_protocol::{ContainerStateChange, SubmitTaskStateChange};
use gantry_model::arn::{cluster_of_arn, last_segment};
use gantry_model::types::{Container, Task, TaskDefinition};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

fn status_rank(s: Option<&str>) -> u8 {
    match s {
        Some(status::PENDING) => 1,
        Some(status::RUNNING) => 2,
        Some(status::STOPPED) => 3,
        _ => 0,
    }
}

/// Apply one container's reported state. Status only moves forward.
fn apply_container_change(t: &mut Task, change: &ContainerStateChange) {
    let Some(name) = change.container_name.as_deref() else {
        return;
    };
    let Some(c) = t
        .containers
        .iter_mut()
        .find(|c| c.name.as_deref() == Some(name))
    else {
        return;
    };
    if let Some(id) = &change.runtime_id {
        c.runtime_id = Some(id.clone());
    }
    if let Some(d) = &change.image_digest {
        c.image_digest = Some(d.clone());
    }
    if status_rank(change.status.as_deref()) >= status_rank(c.last_status.as_deref()) {
        if let Some(s) = &change.status {
            c.last_status = Some(s.clone());
        }
    }
    if change.exit_code.is_some() {
        c.exit_code = change.exit_code;
    }
    if let Some(r) = &change.reason {
        c.reason = Some(r.clone());
    }
    if let Some(nb) = &change.network_bindings {
        c.network_bindings = Some(nb.clone());
    }
    // A stopped container's last health verdict stands; Docker's final probe state is noise.
    if change.status.as_deref() != Some(status::STOPPED) {
        if let Some(h) = &change.health_status {
            c.health_status = Some(h.clone());
        }
    }
}

/// Task health as ECS derives it: from the essential containers that have a health check.
fn task_health(t: &Task, td: Option<&TaskDefinition>) -> String {
    let Some(td) = td else {
        return status::UNKNOWN.into();
    };
    let checked: Vec<&Container> = t
        .containers
        .iter()
        .filter(|c| {
            td.container_definitions
                .iter()
                .any(|d| d.name == c.name && d.essential != Some(false) && d.health_check.is_some())
        })
        .collect();
    if checked.is_empty() {
        return status::UNKNOWN.into();
    }
    if checked
        .iter()
        .any(|c| c.health_status.as_deref() == Some(status::UNHEALTHY))
    {
        return status::UNHEALTHY.into();
    }
    if checked
        .iter()
        .all(|c| c.health_status.as_deref() == Some(status::HEALTHY))
    {
        return status::HEALTHY.into();
    }
    status::UNKNOWN.into()
}

/// The definition of the task at `key`: its ARN from the state cache (a task's definition
/// never changes; the store only if the cache does not have the task), the definition itself
/// from the plane's memo. No whole-record read per report.
async fn definition_of(plane: &ControlPlane, key: &str) -> EcsResult<Option<Arc<TaskDefinition>>> {
    let cached = keys::split(key, keys::TASKS)
        .and_then(|(cluster, id)| plane.cache.task(cluster, id))
        .and_then(|e| e.value.task.task_definition_arn.clone());
    let arn = match cached {
        Some(arn) => arn,
        None => match repo::get::<TaskRecord>(&*plane.store, key).await? {
            Some((rec, _)) => match rec.task.task_definition_arn {
                Some(arn) => arn,
                None => return Ok(None),
            },
            None => return Err(task_not_found()),
        },
    };
    Ok(plane.definition_by_arn(&arn).await.ok())
}

fn task_key_of(cluster: Option<&str>, task: &str) -> EcsResult<String> {
    let cluster = cluster_of_arn(task)
        .or(cluster.map(gantry_model::arn::cluster_name))
        .ok_or_else(|| EcsError::invalid_parameter("cluster is required with a bare task id."))?;
    Ok(repo::task_key(cluster, last_segment(task)))
}

pub async fn submit_task_state_change(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: SubmitTaskStateChange = parse(input)?;
    let task = req
        .task
        .as_deref()
        .ok_or_else(|| EcsError::invalid_parameter("task is required."))?;
    if let Some(s) = &req.status {
        if !matches!(s.as_str(), "PENDING" | "RUNNING" | "STOPPED") {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid status '{s}': use PENDING, RUNNING or STOPPED."
            )));
        }
    }
    let key = task_key_of(req.cluster.as_deref(), task)?;
    let td = definition_of(plane, &key).await?;
    repo::update::<TaskRecord, _>(&*plane.store, &key, |rec| {
        let t = &mut rec.task;
        if t.last_status.as_deref() == Some(status::STOPPED) {
            // Late details (exit codes) may still be filled in; status stays final.
            for c in req.containers.iter().flatten() {
                apply_container_change(t, c);
            }
            return Ok(());
        }
        let now = now_epoch();
        for c in req.containers.iter().flatten() {
            apply_container_change(t, c);
        }
        if req.pull_started_at.is_some() {
            t.pull_started_at = req.pull_started_at;
        }
        if req.pull_stopped_at.is_some() {
            t.pull_stopped_at = req.pull_stopped_at;
        }
        match req.status.as_deref() {
            Some(status::RUNNING) if t.last_status.as_deref() != Some(status::RUNNING) => {
                t.last_status = Some(status::RUNNING.into());
                crate::state::records::set_attachment_status(&mut t.attachments, "ATTACHED");
                t.started_at.get_or_insert(now);
                t.connectivity = Some("CONNECTED".into());
                t.connectivity_at = Some(now);
            }
            Some(status::PENDING) if t.last_status.as_deref() != Some(status::RUNNING) => {
                t.last_status = Some(status::PENDING.into());
            }
            Some(status::STOPPED) => {
                if t.stopped_reason.is_none() {
                    t.stopped_reason = req.reason.clone().filter(|r| !r.is_empty());
                }
                mark_stopped(t, req.execution_stopped_at, now);
            }
            _ => {}
        }
        t.health_status = Some(task_health(t, td.as_deref()));
        t.version = Some(t.version.unwrap_or(0) + 1);
        Ok(())
    })
    .await?
    .ok_or_else(task_not_found)?;
    Ok(json!({"acknowledgment": "ACK"}))
}

/// ECS's SubmitContainerStateChange: the task, plus one container's change in the same
/// members as `ContainerStateChange`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerChangeInput {
    cluster: Option<String>,
    task: Option<String>,
    #[serde(flatten)]
    change: ContainerStateChange,
}

pub async fn submit_container_state_change(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ContainerChangeInput = parse(input)?;
    let task = req
        .task
        .as_deref()
        .ok_or_else(|| EcsError::invalid_parameter("task is required."))?;
    let key = task_key_of(req.cluster.as_deref(), task)?;
    let change = req.change;
    repo::update::<TaskRecord, _>(&*plane.store, &key, |rec| {
        apply_container_change(&mut rec.task, &change);
        rec.task.version = Some(rec.task.version.unwrap_or(0) + 1);
        Ok(())
    })
    .await?
    .ok_or_else(task_not_found)?;
    Ok(json!({"acknowledgment": "ACK"}))
}
