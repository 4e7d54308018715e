//! A service as stored: the wire `Service` plus the bookkeeping the service scheduler keeps to
//! itself (per-deployment breaker counts, revisions, the deployment history, which stopped
//! tasks it has already accounted for).

use gantry_model::services::{Deployment, DeploymentConfiguration, Service, ServiceEvent};
use gantry_model::types::Extra;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// ECS keeps the newest 100 events of a service.
pub const MAX_EVENTS: usize = 100;
/// How many finished service deployments are kept for ListServiceDeployments.
pub const MAX_HISTORY: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    #[serde(flatten)]
    pub service: Service,
    #[serde(default, rename = "gantryInternal")]
    pub internal: ServiceInternal,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInternal {
    /// CreateService's clientToken, to answer a retried create with the same service.
    #[serde(default)]
    pub client_token: Option<String>,
    /// One entry per `service.deployments[]` entry, matched by id (for an EXTERNAL service,
    /// one per task set: whether its tasks have a health check).
    #[serde(default)]
    pub deployments: Vec<DeploymentInternal>,
    /// CreateTaskSet's clientTokens and the task set each created, to answer a retried
    /// create with the same task set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_set_tokens: BTreeMap<String, String>,
    /// The revision the last COMPLETED deployment ran: where a rollback goes.
    #[serde(default)]
    pub last_completed_revision: Option<String>,
    #[serde(default)]
    pub revisions: Vec<ServiceRevisionRecord>,
    /// Newest last.
    #[serde(default)]
    pub history: Vec<ServiceDeploymentRecord>,
    /// Stopped tasks whose stop has been counted (events, breaker, back-off).
    #[serde(default)]
    pub seen_stopped: BTreeSet<String>,
    /// When each task was first seen healthy.
    #[serde(default)]
    pub healthy_since: BTreeMap<String, f64>,
    /// Tasks that have stayed healthy for the stability window and earned their reset of the
    /// breaker and back-off (once each).
    #[serde(default)]
    pub settled: BTreeSet<String>,
    /// Tasks counted as failed health checks (once each, whether or not the stop that
    /// followed was recorded).
    #[serde(default)]
    pub health_failed: BTreeSet<String>,
    /// Revisions whose task definition has an essential container with a health check.
    #[serde(default)]
    pub health_checked_revisions: BTreeSet<String>,
    #[serde(default)]
    pub backoff: Backoff,
    /// Whether the service was steady when last reconciled (the steady-state event is sent on
    /// the transition).
    #[serde(default)]
    pub steady: bool,
    /// The last "unable to place" event and when, so a blocked service does not repeat it on
    /// every reconcile.
    #[serde(default)]
    pub last_placement_event: Option<(String, f64)>,
    /// When the service became INACTIVE; the janitor forgets it after the retention period.
    #[serde(default)]
    pub inactive_at: Option<f64>,
    /// DeleteService with `force`: the draining service stops even protected tasks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_deleted: bool,
    /// The tasks the last pass kept running only because of task scale-in protection (the
    /// event saying so is sent when this changes).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub protection_held: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInternal {
    pub id: String,
    pub revision_arn: String,
    pub service_deployment_arn: String,
    /// Failures counted by the circuit breaker (reset by a healthy task unless disabled).
    #[serde(default)]
    pub breaker_failures: i64,
    /// Of those, how many were failed health checks (to word the failure reason).
    #[serde(default)]
    pub health_failures: i64,
    /// Whether an essential container has a health check: then a task is healthy only once
    /// it reports HEALTHY.
    #[serde(default)]
    pub has_health_check: bool,
    /// This deployment rolls a failed one back: if it fails too, there is nowhere to go.
    #[serde(default)]
    pub is_rollback: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    pub consecutive_failures: u32,
    pub next_launch_at: f64,
}

/// What defines the tasks of a deployment (ECS's service revision).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRevisionRecord {
    pub service_revision_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub task_definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(default)]
    pub container_images: Vec<serde_json::Value>,
    pub created_at: f64,
    /// capacityProviderStrategy, platformVersion, loadBalancers, serviceRegistries,
    /// networkConfiguration, serviceConnectConfiguration, volumeConfigurations.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The service members a revision carries besides the task definition and launch type.
pub const REVISION_MEMBERS: &[&str] = &[
    "capacityProviderStrategy",
    "platformVersion",
    "loadBalancers",
    "serviceRegistries",
    "networkConfiguration",
    "serviceConnectConfiguration",
    "volumeConfigurations",
    "vpcLatticeConfigurations",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSummary {
    pub arn: String,
    pub requested_task_count: i64,
    pub running_task_count: i64,
    pub pending_task_count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackInfo {
    pub reason: String,
    pub started_at: f64,
    pub service_revision_arn: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerState {
    /// TRIGGERED, MONITORING, MONITORING_COMPLETE or DISABLED.
    pub status: String,
    pub failure_count: i64,
    pub threshold: i64,
}

/// One entry of the deployment history (ECS's ServiceDeployment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeploymentRecord {
    pub service_deployment_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub created_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    pub updated_at: f64,
    #[serde(default)]
    pub source_service_revisions: Vec<RevisionSummary>,
    pub target_service_revision: RevisionSummary,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackInfo>,
    pub deployment_circuit_breaker: BreakerState,
}

impl ServiceRecord {
    pub fn name(&self) -> &str {
        &self.service.service_name
    }

    pub fn push_event(&mut self, message: String, now: f64) {
        self.service.events.insert(
            0,
            ServiceEvent {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: now,
                message,
            },
        );
        self.service.events.truncate(MAX_EVENTS);
    }

    pub fn internal_of(&self, deployment_id: &str) -> Option<&DeploymentInternal> {
        self.internal
            .deployments
            .iter()
            .find(|d| d.id == deployment_id)
    }

    pub fn internal_of_mut(&mut self, deployment_id: &str) -> Option<&mut DeploymentInternal> {
        self.internal
            .deployments
            .iter_mut()
            .find(|d| d.id == deployment_id)
    }

    pub fn primary(&self) -> Option<&Deployment> {
        self.service.deployments.first()
    }

    pub fn revision(&self, arn: &str) -> Option<&ServiceRevisionRecord> {
        self.internal
            .revisions
            .iter()
            .find(|r| r.service_revision_arn == arn)
    }

    pub fn history_mut(&mut self, arn: &str) -> Option<&mut ServiceDeploymentRecord> {
        self.internal
            .history
            .iter_mut()
            .find(|h| h.service_deployment_arn == arn)
    }

    /// Forget revisions no deployment or history entry refers to any more.
    pub fn prune_revisions(&mut self) {
        let internal = &mut self.internal;
        if internal.history.len() > MAX_HISTORY {
            let excess = internal.history.len() - MAX_HISTORY;
            internal.history.drain(..excess);
        }
        let mut used: BTreeSet<String> = internal
            .deployments
            .iter()
            .map(|d| d.revision_arn.clone())
            .collect();
        used.extend(internal.last_completed_revision.clone());
        for h in &internal.history {
            used.insert(h.target_service_revision.arn.clone());
            used.extend(h.source_service_revisions.iter().map(|s| s.arn.clone()));
        }
        internal
            .revisions
            .retain(|r| used.contains(&r.service_revision_arn));
        internal
            .health_checked_revisions
            .retain(|r| used.contains(r));
    }
}
