//! The controllers that keep the data plane in step with the store, on the controller runtime:
//!
//! | controller | key | woken by |
//! | --- | --- | --- |
//! | `lb-service-targets` | (cluster, service) | its record; a change of one of its tasks |
//! | `lb-target-groups` | target group ARN | its record, its registrations, a service's targets |
//! | `lb-listeners` | listener ARN | its record, its rules, its load balancer's attributes |
//!
//! Each reconcile reads only the object of its key (a service's own tasks, one group's
//! registrations, one listener's rules) and puts that one object into the data plane.

use super::service_targets::{load_balancers_of, task_targets};
use super::{ServiceKey, TaskRef};
use crate::plane::ControlPlane;
use crate::state::cache::Change;
use gantry_model::elbv2::TargetConfig;
use gantry_runtime::{Action, Handle, ReconcileError, Reconciler};
use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

/// ELBv2's default deregistration delay: the bound of a drain when a group's own is unknown.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(300);

/// Puts what a service's tasks contribute into the registry, and wakes the target groups whose
/// targets that changed.
pub struct ServiceTargets {
    pub plane: Weak<ControlPlane>,
    pub groups: Handle<String>,
}

impl ServiceTargets {
    /// The services a change concerns: a service's own record, or one of its tasks changing
    /// whether (or where) it serves traffic.
    pub fn concerned(plane: &ControlPlane, change: &Change) -> Vec<ServiceKey> {
        match change {
            Change::Service { cluster, name, .. } => vec![(cluster.clone(), name.clone())],
            Change::Task { cluster, old, new } => {
                let entry = new.as_ref().or(old.as_ref());
                let Some(service) = entry.and_then(|e| crate::state::cache::service_of(&e.value))
                else {
                    return Vec::new();
                };
                let has_targets = plane
                    .cache
                    .service(cluster, service)
                    .is_some_and(|s| !load_balancers_of(&s.value.service).is_empty());
                if has_targets {
                    vec![(cluster.clone(), service.to_string())]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }
}

impl Reconciler for ServiceTargets {
    type Key = ServiceKey;

    async fn reconcile(&self, key: &ServiceKey) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let (cluster, name) = key;
        let load_balancers = plane
            .cache
            .service(cluster, name)
            .filter(|s| s.value.service.status != gantry_model::status::INACTIVE)
            .map(|s| load_balancers_of(&s.value.service))
            .unwrap_or_default();
        let mut contributed: BTreeMap<String, Vec<(TargetConfig, TaskRef)>> = BTreeMap::new();
        if !load_balancers.is_empty() {
            for entry in plane.cache.tasks_of_service(cluster, name) {
                let task = &entry.value;
                let Some(task_arn) = task.task.task_arn.clone() else {
                    continue;
                };
                let host_arn = task.host_arn().map(str::to_string);
                let instance = host_arn.as_deref().and_then(|arn| {
                    let host_cluster = gantry_model::arn::cluster_of_arn(arn)?;
                    plane
                        .cache
                        .instance(host_cluster, gantry_model::arn::last_segment(arn))
                });
                let owner = TaskRef {
                    task_arn,
                    service: key.clone(),
                    host_arn,
                };
                for (group, target) in
                    task_targets(task, &load_balancers, instance.as_ref().map(|i| &i.value))
                {
                    contributed
                        .entry(group)
                        .or_default()
                        .push((target, owner.clone()));
                }
            }
        }
        for targets in contributed.values_mut() {
            targets.sort_by(|a, b| (&a.0.id, a.0.port).cmp(&(&b.0.id, b.0.port)));
        }
        // Each group's drain bound, read before the registry's lock is taken.
        // Groups the service leaves count too: their targets drain for their own delay.
        let mut delays = BTreeMap::new();
        let groups: std::collections::BTreeSet<String> = load_balancers
            .iter()
            .map(|lb| lb.target_group_arn.clone())
            .chain(plane.targets.groups_of_service(key))
            .collect();
        for group in groups {
            let delay = super::sync::deregistration_delay(&plane, &group)
                .await
                .unwrap_or(DEFAULT_DEREGISTRATION_DELAY);
            delays.insert(group, delay);
        }
        let delay_of = |group: &str| {
            delays
                .get(group)
                .copied()
                .unwrap_or(DEFAULT_DEREGISTRATION_DELAY)
        };
        let changed = plane
            .targets
            .set_service_targets(key, contributed, &delay_of);
        self.groups.enqueue_many(changed.groups);
        // The fan-out of an instance whose task's stop is now held (or released) looks again:
        // it re-arms its timer for the hold's bound.
        if let Some(handles) = plane.controllers.get() {
            handles
                .channels
                .enqueue_many(changed.draining_on.into_iter().chain(changed.released_on));
        }
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<ServiceKey>, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Vec::new());
        };
        Ok(plane
            .cache
            .service_keys()
            .into_iter()
            .filter(|(c, n)| {
                plane
                    .cache
                    .service(c, n)
                    .is_some_and(|s| !load_balancers_of(&s.value.service).is_empty())
            })
            .collect())
    }
}
