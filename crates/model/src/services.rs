//! ECS services as they travel on the wire: the service, its deployments and events, the
//! deployment configuration with the circuit breaker, and the task sets of a service whose
//! deployment controller is EXTERNAL. Members Gantry does not interpret (load balancers,
//! network configuration, service connect, …) ride in `extra` and are echoed.

use crate::types::{Extra, PlacementConstraint, PlacementStrategy, Tag};
use serde::{Deserialize, Serialize};

pub const REPLICA: &str = "REPLICA";
pub const DAEMON: &str = "DAEMON";

/// `Deployment.status`, and `TaskSet.status` (with `DRAINING`).
pub const PRIMARY: &str = "PRIMARY";
pub const ACTIVE: &str = "ACTIVE";
pub const DRAINING: &str = "DRAINING";

/// `DeploymentController.type`.
pub mod controller {
    pub const ECS: &str = "ECS";
    pub const CODE_DEPLOY: &str = "CODE_DEPLOY";
    pub const EXTERNAL: &str = "EXTERNAL";
}

/// `TaskSet.stabilityStatus`.
pub mod stability {
    pub const STEADY_STATE: &str = "STEADY_STATE";
    pub const STABILIZING: &str = "STABILIZING";
}

/// `Scale.unit`: the only one ECS knows.
pub const PERCENT: &str = "PERCENT";

/// `Deployment.rolloutState`.
pub mod rollout {
    pub const IN_PROGRESS: &str = "IN_PROGRESS";
    pub const COMPLETED: &str = "COMPLETED";
    pub const FAILED: &str = "FAILED";
}

/// `ServiceDeployment.status`.
pub mod deployment_status {
    pub const PENDING: &str = "PENDING";
    pub const IN_PROGRESS: &str = "IN_PROGRESS";
    pub const SUCCESSFUL: &str = "SUCCESSFUL";
    pub const STOPPED: &str = "STOPPED";
    pub const STOP_REQUESTED: &str = "STOP_REQUESTED";
    pub const ROLLBACK_REQUESTED: &str = "ROLLBACK_REQUESTED";
    pub const ROLLBACK_IN_PROGRESS: &str = "ROLLBACK_IN_PROGRESS";
    pub const ROLLBACK_SUCCESSFUL: &str = "ROLLBACK_SUCCESSFUL";
    pub const ROLLBACK_FAILED: &str = "ROLLBACK_FAILED";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdConfiguration {
    /// `COUNT`, `BOUNDED_PERCENT` or `UNBOUNDED_PERCENT`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_on_healthy_task: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_configuration: Option<ThresholdConfiguration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<DeploymentCircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_healthy_percent: Option<i64>,
    /// alarms, strategy, bakeTimeInMinutes, lifecycleHooks, …: echoed.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub status: String,
    pub task_definition: String,
    pub desired_count: i64,
    pub pending_count: i64,
    pub running_count: i64,
    pub failed_tasks: i64,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state_reason: Option<String>,
    /// networkConfiguration, capacityProviderStrategy, platformVersion, …: echoed.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentController {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    pub status: String,
    pub desired_count: i64,
    pub running_count: i64,
    pub pending_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    pub created_at: f64,
    #[serde(default)]
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub placement_strategy: Vec<PlacementStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<i64>,
    pub scheduling_strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_controller: Option<DeploymentController>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(
        default,
        rename = "enableECSManagedTags",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ecs_managed_tags: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_execute_command: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_service_deployment: Option<String>,
    /// The task sets of an EXTERNAL service (absent for the other controllers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_sets: Option<Vec<TaskSet>>,
    /// loadBalancers, serviceRegistries, networkConfiguration, capacityProviderStrategy,
    /// platformVersion, roleArn, availabilityZoneRebalancing, …: echoed.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    pub value: f64,
    pub unit: String,
}

/// A set of tasks of an EXTERNAL service: its own task definition and launch settings, and a
/// share (`scale`) of the service's desired count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSet {
    pub id: String,
    pub task_set_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// PRIMARY, ACTIVE or DRAINING.
    pub status: String,
    pub task_definition: String,
    pub computed_desired_count: i64,
    pub pending_count: i64,
    pub running_count: i64,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_family: Option<String>,
    pub scale: Scale,
    /// STEADY_STATE or STABILIZING.
    pub stability_status: String,
    pub stability_status_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// networkConfiguration, loadBalancers, serviceRegistries, capacityProviderStrategy: echoed.
    #[serde(flatten)]
    pub extra: Extra,
}

/// How many tasks a task set of `scale_percent` keeps for a service of `desired` tasks:
/// `desired × scale / 100`, always rounded up (ECS's rule: 1.2 tasks are 2).
pub fn computed_desired_count(desired: i64, scale_percent: f64) -> i64 {
    if !scale_percent.is_finite() || desired <= 0 {
        return 0;
    }
    let share = desired as f64 * scale_percent.clamp(0.0, 100.0) / 100.0;
    // The product of two decimals in binary floating point can land a hair above a whole
    // number (e.g. 7 × 0.3 …): that hair is not a task.
    (share - 1e-9).ceil().max(0.0) as i64
}

/// The failure threshold of the deployment circuit breaker for a service of `desired` tasks,
/// as ECS computes it.
pub fn breaker_threshold(breaker: &DeploymentCircuitBreaker, desired: i64) -> i64 {
    let (kind, value) = match &breaker.threshold_configuration {
        Some(t) => (t.kind.as_str(), t.value),
        None => ("BOUNDED_PERCENT", 50),
    };
    // Checked: `value` comes from the client and `desired` from its records; a huge value
    // saturates instead of overflowing (a panic in debug builds, a wrong answer in release).
    let percent_of_desired = desired
        .max(0)
        .saturating_mul(value.max(0))
        .saturating_add(99)
        / 100;
    match kind {
        "COUNT" => value.max(1),
        "UNBOUNDED_PERCENT" => percent_of_desired.max(1),
        _ => percent_of_desired.clamp(3, 200),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(kind: Option<&str>, value: i64) -> DeploymentCircuitBreaker {
        DeploymentCircuitBreaker {
            enable: true,
            rollback: true,
            reset_on_healthy_task: None,
            threshold_configuration: kind.map(|k| ThresholdConfiguration {
                kind: k.into(),
                value,
            }),
        }
    }

    #[test]
    fn huge_threshold_values_saturate_instead_of_overflowing() {
        let b = breaker(Some("UNBOUNDED_PERCENT"), i64::MAX);
        assert_eq!(breaker_threshold(&b, 5000), i64::MAX / 100);
        let b = breaker(Some("BOUNDED_PERCENT"), i64::MAX);
        assert_eq!(breaker_threshold(&b, i64::MAX), 200);
        assert_eq!(
            breaker_threshold(&breaker(Some("COUNT"), i64::MAX), 1),
            i64::MAX
        );
    }

    #[test]
    fn a_task_set_keeps_its_share_of_the_desired_count_rounded_up() {
        assert_eq!(computed_desired_count(4, 100.0), 4);
        assert_eq!(computed_desired_count(4, 0.0), 0);
        assert_eq!(computed_desired_count(4, 50.0), 2);
        // 1.2 tasks are 2, as ECS documents.
        assert_eq!(computed_desired_count(4, 30.0), 2);
        assert_eq!(computed_desired_count(10, 12.0), 2);
        assert_eq!(computed_desired_count(3, 33.3), 1);
        assert_eq!(computed_desired_count(3, 33.34), 2);
        assert_eq!(computed_desired_count(1, 0.1), 1);
        // Products that are whole numbers stay whole despite binary floating point.
        assert_eq!(computed_desired_count(10, 30.0), 3);
        assert_eq!(computed_desired_count(7, 30.0), 3);
        assert_eq!(computed_desired_count(100, 7.0), 7);
        assert_eq!(computed_desired_count(1000, 0.7), 7);
        assert_eq!(computed_desired_count(3, 100.0 / 3.0), 1);
        // Nothing for a service scaled to zero; out-of-range scales are clamped.
        assert_eq!(computed_desired_count(0, 100.0), 0);
        assert_eq!(computed_desired_count(5, 150.0), 5);
        assert_eq!(computed_desired_count(5, -3.0), 0);
        assert_eq!(computed_desired_count(5, f64::NAN), 0);
        assert_eq!(computed_desired_count(5000, 100.0), 5000);
    }

    #[test]
    fn threshold_follows_ecs_rule() {
        // max(3, min(200, 0.5 × desired)), rounded up.
        assert_eq!(breaker_threshold(&breaker(None, 0), 1), 3);
        assert_eq!(breaker_threshold(&breaker(None, 0), 3), 3);
        assert_eq!(breaker_threshold(&breaker(None, 0), 7), 4);
        assert_eq!(breaker_threshold(&breaker(None, 0), 10), 5);
        assert_eq!(breaker_threshold(&breaker(None, 0), 1000), 200);
        assert_eq!(
            breaker_threshold(&breaker(Some("BOUNDED_PERCENT"), 10), 10),
            3
        );
        assert_eq!(
            breaker_threshold(&breaker(Some("UNBOUNDED_PERCENT"), 50), 1000),
            500
        );
        assert_eq!(
            breaker_threshold(&breaker(Some("UNBOUNDED_PERCENT"), 10), 3),
            1
        );
        assert_eq!(breaker_threshold(&breaker(Some("COUNT"), 7), 100), 7);
    }
}
