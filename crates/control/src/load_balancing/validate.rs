//! CreateService's checks of `loadBalancers`, with ECS's errors: each entry names an existing
//! target group that a load balancer's listener forwards to, whose target type fits the task
//! definition's network mode, and a container and port the task definition has.

use crate::plane::ControlPlane;
use crate::state::elbv2;
use gantry_model::types::TaskDefinition;
use gantry_model::{EcsError, EcsResult};
use serde_json::Value;

/// Checks a service's `loadBalancers` (as sent) against the ELBv2 records and the task
/// definition the service runs (`None` for an EXTERNAL service: only the groups are checked).
pub async fn check(
    plane: &ControlPlane,
    load_balancers: Option<&Value>,
    definition: Option<&TaskDefinition>,
) -> EcsResult<()> {
    let entries = match load_balancers {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(EcsError::invalid_parameter(
                "loadBalancers must be a list of load balancer objects.",
            ))
        }
    };
    if entries.is_empty() {
        return Ok(());
    }
    if entries.len() > 5 {
        return Err(EcsError::invalid_parameter(
            "A service can use at most 5 target groups (loadBalancers).",
        ));
    }
    let mut used_groups = None;
    for entry in entries {
        let field = |name: &str| entry.get(name).filter(|v| !v.is_null());
        if field("loadBalancerName").is_some() && field("targetGroupArn").is_none() {
            return Err(EcsError::invalid_parameter(
                "Classic Load Balancers (loadBalancerName) are not supported: give the targetGroupArn of an Application Load Balancer target group.",
            ));
        }
        let Some(arn) = field("targetGroupArn").and_then(Value::as_str) else {
            return Err(EcsError::invalid_parameter(
                "loadBalancers: targetGroupArn must be specified.",
            ));
        };
        let Some(group) = elbv2::target_group(&*plane.store, arn).await? else {
            return Err(EcsError::invalid_parameter(format!(
                "The target group with targetGroupArn {arn} does not exist."
            )));
        };
        if used_groups.is_none() {
            used_groups = Some(elbv2::group_users(&*plane.store).await?);
        }
        if !used_groups.as_ref().is_some_and(|u| u.contains_key(arn)) {
            return Err(EcsError::invalid_parameter(format!(
                "The target group with targetGroupArn {arn} does not have an associated load balancer."
            )));
        }
        let container = field("containerName").and_then(Value::as_str);
        let port = field("containerPort").and_then(Value::as_i64);
        let (Some(container), Some(port)) = (container, port) else {
            return Err(EcsError::invalid_parameter(
                "loadBalancers: containerName and containerPort must be specified for a target group.",
            ));
        };
        let Some(definition) = definition else {
            continue;
        };
        let Some(def) = definition
            .container_definitions
            .iter()
            .find(|c| c.name.as_deref() == Some(container))
        else {
            return Err(EcsError::invalid_parameter(format!(
                "The container {container} does not exist in the task definition."
            )));
        };
        let mapped = def
            .port_mappings
            .iter()
            .flatten()
            .any(|m| m.container_port.map(i64::from) == Some(port));
        if !mapped {
            return Err(EcsError::invalid_parameter(format!(
                "The container {container} did not have a container port {port} defined."
            )));
        }
        let mode = definition.network_mode.as_deref().unwrap_or("bridge");
        let fits = match mode {
            "awsvpc" => group.target_type == "ip",
            _ => group.target_type == "instance",
        };
        if !fits {
            return Err(EcsError::invalid_parameter(format!(
                "The provided target group {arn} has target type {}, which is incompatible with the {mode} network mode specified in the task definition.",
                group.target_type
            )));
        }
    }
    Ok(())
}
