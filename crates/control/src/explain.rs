//! "Why is it PENDING?" — Gantry's `ExplainPlacement` operation (`X-Amz-Target:
//! GantryV1.ExplainPlacement`, awsJson1_1 like the ECS API). For a task, a service or a task
//! definition with placement settings it answers, for every container instance of the
//! cluster, whether one more task fits there and, if not, the first check that refused it and
//! by how much ("needs 512 MiB, 200 MiB free"). A task that was already placed is explained by
//! where it is and what it waits for. `gantry explain` prints the same answer.

use crate::clusters;
use crate::lifecycle::snapshot_of;
use crate::plane::ControlPlane;
use crate::state::lookup;
use crate::wire::parse;
use gantry_model::arn::last_segment;
use gantry_model::requirements::task_requirements;
use gantry_model::types::{PlacementConstraint, PlacementStrategy};
use gantry_model::{status, EcsError, EcsResult};
use gantry_scheduler::{InstanceSnapshot, PlacementRequest};
use serde::Deserialize;
use serde_json::{json, Value};

/// The target prefix of Gantry's own operations.
pub const GANTRY_PREFIX: &str = "GantryV1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExplainInput {
    cluster: Option<String>,
    task: Option<String>,
    service: Option<String>,
    task_definition: Option<String>,
    #[serde(default)]
    placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    placement_strategy: Vec<PlacementStrategy>,
}

pub async fn dispatch(plane: &ControlPlane, op: &str, input: Value) -> EcsResult<Value> {
    match op {
        "ExplainPlacement" => explain(plane, input).await,
        _ => Err(EcsError::unknown_operation(op)),
    }
}

/// What is being placed: a definition with constraints and a group.
struct Subject {
    description: String,
    task_definition: String,
    constraints: Vec<PlacementConstraint>,
    strategies: Vec<PlacementStrategy>,
    group: String,
}

async fn explain(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ExplainInput = parse(input)?;
    let given = [&req.task, &req.service, &req.task_definition]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err(EcsError::invalid_parameter(
            "Give exactly one of task, service or taskDefinition.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();

    let mut out = json!({ "cluster": cluster.cluster_arn });
    let subject = if let Some(task) = &req.task {
        let Some(entry) = plane.cache.task(&cname, last_segment(task)) else {
            return Err(EcsError::invalid_parameter(format!(
                "Task '{task}' was not found in cluster {cname}."
            )));
        };
        let t = &entry.value.task;
        let td = t.task_definition_arn.clone().unwrap_or_default();
        out["task"] = task_state(plane, &cname, &entry.value);
        Subject {
            description: format!("task {} ({})", entry.value.id(), short_td(&td)),
            task_definition: td,
            constraints: req.placement_constraints.clone(),
            strategies: req.placement_strategy.clone(),
            group: t
                .group
                .clone()
                .unwrap_or_else(|| format!("family:{}", entry.value.internal.family)),
        }
    } else if let Some(service) = &req.service {
        let name = last_segment(service);
        let Some(entry) = plane.cache.service(&cname, name) else {
            return Err(EcsError::new(
                "ServiceNotFoundException",
                format!("Service '{service}' was not found in cluster {cname}."),
            ));
        };
        let s = &entry.value.service;
        let td = s
            .deployments
            .first()
            .map(|d| d.task_definition.clone())
            .or_else(|| s.task_definition.clone())
            .unwrap_or_default();
        if let Some(e) = s
            .events
            .iter()
            .find(|e| e.message.contains("was unable to place a task"))
        {
            out["lastPlacementEvent"] = json!(e.message);
        }
        Subject {
            description: format!("service {name} ({})", short_td(&td)),
            task_definition: td,
            constraints: s.placement_constraints.clone(),
            strategies: s.placement_strategy.clone(),
            group: format!("service:{name}"),
        }
    } else {
        let td = req.task_definition.clone().unwrap_or_default();
        Subject {
            description: format!("task definition {}", short_td(&td)),
            task_definition: td,
            constraints: req.placement_constraints.clone(),
            strategies: req.placement_strategy.clone(),
            group: String::new(),
        }
    };

    let (record, _) = lookup::task_definition(&*plane.store, &subject.task_definition).await?;
    let definition = record.task_definition;
    let requirements = task_requirements(&definition, None);
    let group = if subject.group.is_empty() {
        format!("family:{}", definition.family)
    } else {
        subject.group.clone()
    };
    let instances: Vec<InstanceSnapshot> = plane
        .cache
        .instances_of_cluster(&cname)
        .iter()
        .filter(|e| e.value.status.as_deref() != Some(status::INACTIVE))
        .map(|e| {
            let arn = e
                .value
                .container_instance_arn
                .as_deref()
                .unwrap_or_default();
            let on_it = plane.cache.tasks_on_instance(arn);
            snapshot_of(&e.value, on_it.iter().map(|t| &t.value))
        })
        .collect();
    let request = PlacementRequest {
        requirements: requirements.clone(),
        count: 1,
        strategies: subject.strategies.clone(),
        constraints: subject.constraints.clone(),
        group: Some(group),
        family: definition.family.clone(),
        seed: 0,
    };
    let verdicts = gantry_scheduler::explain(&instances, &request)
        .map_err(|e| EcsError::invalid_parameter(format!("Invalid placement settings: {e}")))?;
    let fits = verdicts.iter().filter(|v| v.refusal.is_none()).count();
    let rows: Vec<Value> = verdicts
        .iter()
        .map(|v| {
            let snap = instances.iter().find(|i| i.arn == v.arn);
            let mut row = json!({
                "containerInstanceArn": v.arn,
                "containerInstanceId": last_segment(&v.arn),
                "status": snap.map(|s| s.status.clone()),
                "agentConnected": snap.map(|s| s.agent_connected),
                "fits": v.refusal.is_none(),
            });
            if let Some(r) = &v.refusal {
                row["reason"] = json!(r.reason);
                row["detail"] = json!(r.detail);
            }
            row
        })
        .collect();
    out["subject"] = json!(subject.description);
    out["requirements"] = json!({
        "cpu": requirements.cpu,
        "memory": requirements.memory,
        "tcpPorts": requirements.tcp_ports,
        "udpPorts": requirements.udp_ports,
    });
    out["instances"] = json!(rows);
    out["placeableOn"] = json!(fits);
    out["summary"] = json!(summary(&verdicts, instances.len()));
    Ok(out)
}

/// `web:3` from a task definition ARN (or what was given).
fn short_td(td: &str) -> String {
    td.rsplit_once("task-definition/")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| td.to_string())
}

/// Where a placed task is and what it waits for.
fn task_state(
    plane: &ControlPlane,
    cluster: &str,
    rec: &crate::state::records::TaskRecord,
) -> Value {
    let t = &rec.task;
    let last = t.last_status.clone().unwrap_or_default();
    let instance = t.container_instance_arn.clone().unwrap_or_default();
    let connected = plane
        .cache
        .instance(cluster, last_segment(&instance))
        .map(|i| i.value.agent_connected);
    let why = match (last.as_str(), connected) {
        (status::STOPPED, _) => format!(
            "STOPPED: {}",
            t.stopped_reason.clone().unwrap_or_else(|| "no reason recorded".into())
        ),
        (status::RUNNING, _) => "RUNNING.".to_string(),
        (_, Some(false)) => format!(
            "Placed on container instance {}, whose agent is disconnected: the task starts when the agent returns (or is stopped if the host is declared lost).",
            last_segment(&instance)
        ),
        (_, None) => format!(
            "Placed on container instance {}, which is no longer registered.",
            last_segment(&instance)
        ),
        _ => {
            let waiting: Vec<String> = t
                .containers
                .iter()
                .filter(|c| c.last_status.as_deref() != Some(status::RUNNING))
                .map(|c| {
                    format!(
                        "{} is {}{}",
                        c.name.clone().unwrap_or_default(),
                        c.last_status.clone().unwrap_or_else(|| "PENDING".into()),
                        c.reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            format!(
                "Placed on container instance {}; its agent is starting it (pulling images, creating and starting containers){}.",
                last_segment(&instance),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(": {}", waiting.join(", "))
                }
            )
        }
    };
    json!({
        "taskArn": t.task_arn,
        "lastStatus": last,
        "desiredStatus": t.desired_status,
        "containerInstanceArn": t.container_instance_arn,
        "agentConnected": connected,
        "why": why,
    })
}

/// One sentence: how many instances can take it, or what stops each group of them.
fn summary(verdicts: &[gantry_scheduler::Verdict], total: usize) -> String {
    if total == 0 {
        return "The cluster has no container instances: start an agent (`gantry agent --cluster …`) or register one.".into();
    }
    let fits = verdicts.iter().filter(|v| v.refusal.is_none()).count();
    if fits > 0 {
        return format!("{fits} of {total} container instances can take one more task now.");
    }
    let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
    for v in verdicts {
        if let Some(r) = &v.refusal {
            *by_reason.entry(r.reason.as_str()).or_default() += 1;
        }
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(reason, n)| format!("{n} refused with {}", reason.trim_end_matches('.')))
        .collect();
    format!(
        "No container instance can take it ({} of {total}): {}.",
        total,
        parts.join(", ")
    )
}
