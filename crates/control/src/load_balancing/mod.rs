//! Services behind the load balancer: which targets service tasks contribute to target groups,
//! their health as the data plane reports it, and the hold that keeps a task's stop from its
//! agent until its targets have drained.
//!
//! The [`TargetRegistry`] is memory only, rebuilt from the state cache after a restart: every
//! target a service task has in the data plane (serving or draining) and its owner, the latest
//! health of each, and by service what its tasks contribute. It is fed by the service-targets
//! controller (task and service changes) and by the data plane's health observer.
//!
//! The order of a stop, as ECS does it: the service scheduler (or StopTask) sets the task's
//! desired status to STOPPED; the task stops contributing targets, so its target groups are
//! put without it and the data plane drains it; meanwhile the agent fan-out keeps telling the
//! agent RUNNING ([`TargetRegistry::holds_stop`]); when the data plane reports the last of the
//! task's targets gone (its in-flight requests done, or the deregistration delay over) the
//! hold lifts and the agent hears the stop.

pub mod controllers;
pub mod follow;
pub mod service_targets;
pub mod sync;
pub mod validate;

use gantry_model::elbv2::{TargetConfig, TargetHealthReport, TargetReason, TargetState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// (cluster, service name).
pub type ServiceKey = (String, String);

/// How long past its target group's deregistration delay a stop is held at most, should the
/// data plane never report the drain over.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A target in a target group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub target_group_arn: String,
    pub id: String,
    pub port: u16,
}

/// The task behind a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub task_arn: String,
    pub service: ServiceKey,
    /// The instance whose agent runs the task (its stop is held there).
    pub host_arn: Option<String>,
}

/// A task's targets as the service scheduler weighs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLbHealth {
    /// Targets the task has in the data plane.
    pub targets: usize,
    /// Of which healthy (or unchecked: health checks disabled).
    pub healthy: usize,
    /// The first target group that reports the task's target unhealthy, with the reason.
    pub unhealthy: Option<(String, String)>,
}

impl TaskLbHealth {
    pub fn all_healthy(&self) -> bool {
        self.targets > 0 && self.healthy == self.targets
    }
}

#[derive(Default)]
struct TaskTargets {
    keys: BTreeSet<TargetKey>,
    /// Set when the task stopped contributing: its stop is held until then at the latest.
    drain_deadline: Option<Instant>,
}

#[derive(Default)]
struct Registry {
    /// What each service's tasks contribute, by target group.
    by_service: HashMap<ServiceKey, BTreeMap<String, Vec<(TargetConfig, TaskRef)>>>,
    /// Target group → the services contributing to it.
    services_of_group: HashMap<String, BTreeSet<ServiceKey>>,
    /// Every target a service task has in the data plane, serving or draining.
    owners: HashMap<TargetKey, TaskRef>,
    tasks: HashMap<String, TaskTargets>,
    health: HashMap<TargetKey, (TargetState, Option<TargetReason>, Option<String>)>,
    /// The target groups the data plane serves.
    served_groups: BTreeSet<String>,
}

/// What [`TargetRegistry::set_service_targets`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TargetsChange {
    /// Target groups whose targets changed: to be put again.
    pub groups: Vec<String>,
    /// Instances with a task whose stop is now held for draining (their fan-out must look
    /// again when the hold's bound passes).
    pub draining_on: Vec<String>,
    /// Instances with a task whose last target changed hands: its held stop may go.
    pub released_on: Vec<String>,
}

/// What a health report asks to be woken.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HealthEffect {
    /// The service whose task's target changed state.
    pub service: Option<ServiceKey>,
    /// The instance whose agent may now hear a held stop.
    pub release_on: Option<String>,
}

#[derive(Default)]
pub struct TargetRegistry {
    inner: Mutex<Registry>,
}

impl TargetRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry's invariants hold between statements; a panic elsewhere cannot leave it
        // half-updated in a way later calls would trip over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces what `service`'s tasks contribute. Targets that leave start draining: their
    /// tasks' stops are held until the data plane reports them gone, and at most until
    /// `delay_of(target group)` (plus a little) from now.
    pub fn set_service_targets(
        &self,
        service: &ServiceKey,
        contributed: BTreeMap<String, Vec<(TargetConfig, TaskRef)>>,
        delay_of: &dyn Fn(&str) -> Duration,
    ) -> TargetsChange {
        let mut reg = self.lock();
        let old = reg.by_service.remove(service).unwrap_or_default();
        let mut change = TargetsChange::default();
        let groups: BTreeSet<&String> = old.keys().chain(contributed.keys()).collect();
        for group in groups {
            let before = old.get(group).map(Vec::as_slice).unwrap_or(&[]);
            let after = contributed.get(group).map(Vec::as_slice).unwrap_or(&[]);
            if before != after {
                change.groups.push(group.clone());
            }
        }
        let now = Instant::now();
        // Leaving: owned until drained — or forgotten at once, if never served.
        for (group, targets) in &old {
            for (target, owner) in targets {
                let key = TargetKey {
                    target_group_arn: group.clone(),
                    id: target.id.clone(),
                    port: target.port,
                };
                let stays = contributed
                    .get(group)
                    .is_some_and(|v| v.iter().any(|(t, o)| t == target && o == owner));
                if stays {
                    continue;
                }
                let served = reg
                    .tasks
                    .get(&owner.task_arn)
                    .is_some_and(|e| e.keys.contains(&key));
                if !served {
                    if reg.owners.get(&key) == Some(owner) {
                        reg.owners.remove(&key);
                    }
                    continue;
                }
                let deadline = now + delay_of(group) + DRAIN_GRACE;
                if let Some(entry) = reg.tasks.get_mut(&owner.task_arn) {
                    entry.drain_deadline =
                        Some(entry.drain_deadline.map_or(deadline, |d| d.max(deadline)));
                    change.draining_on.extend(owner.host_arn.clone());
                }
            }
        }
        // Joining (or staying): owned and serving. A target that changes hands (a new task on
        // the same instance and port) starts over: the old task's health is not the new one's.
        for (group, targets) in &contributed {
            for (target, owner) in targets {
                let key = TargetKey {
                    target_group_arn: group.clone(),
                    id: target.id.clone(),
                    port: target.port,
                };
                if let Some(previous) = reg.owners.insert(key.clone(), owner.clone()) {
                    if previous.task_arn != owner.task_arn {
                        reg.health.remove(&key);
                        let emptied = reg.tasks.get_mut(&previous.task_arn).is_some_and(|e| {
                            e.keys.remove(&key);
                            e.keys.is_empty()
                        });
                        if emptied {
                            reg.tasks.remove(&previous.task_arn);
                            change.released_on.extend(previous.host_arn);
                        }
                    }
                }
                if let Some(entry) = reg.tasks.get_mut(&owner.task_arn) {
                    entry.drain_deadline = None;
                }
            }
        }
        for group in old.keys() {
            if !contributed.contains_key(group) {
                if let Some(s) = reg.services_of_group.get_mut(group) {
                    s.remove(service);
                    if s.is_empty() {
                        reg.services_of_group.remove(group);
                    }
                }
            }
        }
        for group in contributed.keys() {
            reg.services_of_group
                .entry(group.clone())
                .or_default()
                .insert(service.clone());
        }
        if !contributed.is_empty() {
            reg.by_service.insert(service.clone(), contributed);
        }
        change
    }

    /// The target groups `service`'s tasks contribute to now.
    pub fn groups_of_service(&self, service: &ServiceKey) -> Vec<String> {
        self.lock()
            .by_service
            .get(service)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the data plane serves `target_group_arn` (it was put, and not removed since).
    pub fn serves_group(&self, target_group_arn: &str) -> bool {
        self.lock().served_groups.contains(target_group_arn)
    }

    /// The data plane now serves `targets` in `target_group_arn`: those of service tasks count
    /// for their tasks (health, held stops) from now on.
    /// Returns the services whose tasks contribute to the group when it is served for the
    /// first time (their deployments are gated on its health from now on: they look again).
    pub fn mark_served(&self, target_group_arn: &str, targets: &[TargetConfig]) -> Vec<ServiceKey> {
        let mut reg = self.lock();
        let first = reg.served_groups.insert(target_group_arn.to_string());
        let newly_gated: Vec<ServiceKey> = if first {
            reg.services_of_group
                .get(target_group_arn)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for target in targets {
            let key = TargetKey {
                target_group_arn: target_group_arn.to_string(),
                id: target.id.clone(),
                port: target.port,
            };
            let Some(owner) = reg.owners.get(&key).cloned() else {
                continue;
            };
            // Put from an older compilation: a target its task no longer contributes is
            // not taken on again (its drain is already under way, or it was never served).
            let contributed = reg
                .by_service
                .get(&owner.service)
                .and_then(|g| g.get(target_group_arn))
                .is_some_and(|v| v.iter().any(|(t, o)| t == target && *o == owner));
            if !contributed {
                continue;
            }
            reg.tasks
                .entry(owner.task_arn)
                .or_default()
                .keys
                .insert(key);
        }
        newly_gated
    }

    /// The data plane no longer has `target_group_arn` (deleted, or never created): its targets
    /// end at once. Returns the instances whose held stops may now go ahead.
    pub fn group_removed(&self, target_group_arn: &str) -> Vec<String> {
        let mut reg = self.lock();
        reg.served_groups.remove(target_group_arn);
        let keys: Vec<TargetKey> = reg
            .owners
            .keys()
            .filter(|k| k.target_group_arn == target_group_arn)
            .cloned()
            .collect();
        let mut released = Vec::new();
        for key in keys {
            reg.health.remove(&key);
            let Some(owner) = reg.owners.get(&key).cloned() else {
                continue;
            };
            if let Some(entry) = reg.tasks.get_mut(&owner.task_arn) {
                if entry.keys.remove(&key) && entry.keys.is_empty() {
                    reg.tasks.remove(&owner.task_arn);
                    released.extend(owner.host_arn);
                }
            }
        }
        released
    }

    /// The targets service tasks contribute to `target_group_arn`.
    pub fn service_targets_of(&self, target_group_arn: &str) -> Vec<TargetConfig> {
        let reg = self.lock();
        let Some(services) = reg.services_of_group.get(target_group_arn) else {
            return Vec::new();
        };
        services
            .iter()
            .filter_map(|s| reg.by_service.get(s)?.get(target_group_arn))
            .flatten()
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether the agent must not hear yet that `task_arn` stops: the task still has targets
    /// in the data plane (serving, or draining within their bound).
    pub fn holds_stop(&self, task_arn: &str) -> bool {
        let mut reg = self.lock();
        let Some(entry) = reg.tasks.get(task_arn) else {
            return false;
        };
        if entry.keys.is_empty() {
            return false;
        }
        match entry.drain_deadline {
            Some(deadline) if Instant::now() >= deadline => {
                tracing::warn!(task = %task_arn, "draining outlived its bound; the stop goes ahead");
                let keys = reg
                    .tasks
                    .remove(task_arn)
                    .map(|e| e.keys)
                    .unwrap_or_default();
                for key in keys {
                    reg.owners.remove(&key);
                    reg.health.remove(&key);
                }
                false
            }
            _ => true,
        }
    }

    /// When a held stop must be looked at again at the latest.
    pub fn drain_deadline(&self, task_arn: &str) -> Option<Instant> {
        self.lock().tasks.get(task_arn)?.drain_deadline
    }

    /// Notes a target's new state; says which service to wake, and which instance's agent may
    /// hear a stop that was held for this target.
    pub fn on_health(&self, report: &TargetHealthReport) -> HealthEffect {
        let key = TargetKey {
            target_group_arn: report.target_group_arn.clone(),
            id: report.id.clone(),
            port: report.port,
        };
        let mut reg = self.lock();
        let Some(owner) = reg.owners.get(&key).cloned() else {
            return HealthEffect::default();
        };
        let gone = report.state == TargetState::Unused
            && report.reason == Some(TargetReason::NotRegistered);
        if !gone {
            reg.health.insert(
                key,
                (report.state, report.reason, report.description.clone()),
            );
            return HealthEffect {
                service: Some(owner.service),
                release_on: None,
            };
        }
        // Gone from the data plane: unless the task contributes it again (a put raced the
        // drain), it is no longer the task's.
        let contributed = reg
            .by_service
            .get(&owner.service)
            .and_then(|g| g.get(&key.target_group_arn))
            .is_some_and(|v| {
                v.iter().any(|(t, o)| {
                    t.id == key.id && t.port == key.port && o.task_arn == owner.task_arn
                })
            });
        if contributed {
            return HealthEffect::default();
        }
        reg.owners.remove(&key);
        reg.health.remove(&key);
        let mut released = false;
        if let Some(entry) = reg.tasks.get_mut(&owner.task_arn) {
            entry.keys.remove(&key);
            if entry.keys.is_empty() {
                reg.tasks.remove(&owner.task_arn);
                released = true;
            }
        }
        HealthEffect {
            service: Some(owner.service),
            release_on: if released { owner.host_arn } else { None },
        }
    }

    /// Records a target's current state when it is one of a service task's and the registry
    /// has none for it yet (see `sync.rs`); wakes nothing.
    pub fn note_health(&self, report: &TargetHealthReport) {
        let key = TargetKey {
            target_group_arn: report.target_group_arn.clone(),
            id: report.id.clone(),
            port: report.port,
        };
        let mut reg = self.lock();
        if reg.owners.contains_key(&key) && !reg.health.contains_key(&key) {
            reg.health.insert(
                key,
                (report.state, report.reason, report.description.clone()),
            );
        }
    }

    /// The task's targets' health, for the service scheduler.
    pub fn task_health(&self, task_arn: &str) -> TaskLbHealth {
        let reg = self.lock();
        let Some(entry) = reg.tasks.get(task_arn) else {
            return TaskLbHealth::default();
        };
        let mut out = TaskLbHealth {
            targets: entry.keys.len(),
            ..Default::default()
        };
        for key in &entry.keys {
            match reg.health.get(key) {
                Some((TargetState::Healthy | TargetState::Unavailable, _, _)) => out.healthy += 1,
                Some((TargetState::Unhealthy, reason, description)) if out.unhealthy.is_none() => {
                    let why = description
                        .clone()
                        .or_else(|| reason.map(|r| r.as_str().to_string()))
                        .unwrap_or_else(|| "Health checks failed".into());
                    out.unhealthy = Some((key.target_group_arn.clone(), why));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const TG: &str = "arn:tg/web";

    fn key() -> ServiceKey {
        ("default".into(), "web".into())
    }

    fn target(port: u16) -> TargetConfig {
        TargetConfig {
            id: "gantry-1".into(),
            port,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn owner(task: &str) -> TaskRef {
        TaskRef {
            task_arn: task.into(),
            service: key(),
            host_arn: Some("arn:instance/1".into()),
        }
    }

    fn contributes(items: &[(u16, &str)]) -> BTreeMap<String, Vec<(TargetConfig, TaskRef)>> {
        let mut m = BTreeMap::new();
        if !items.is_empty() {
            m.insert(
                TG.to_string(),
                items.iter().map(|(p, t)| (target(*p), owner(t))).collect(),
            );
        }
        m
    }

    fn report(port: u16, state: TargetState, reason: Option<TargetReason>) -> TargetHealthReport {
        TargetHealthReport {
            target_group_arn: TG.into(),
            id: "gantry-1".into(),
            port,
            state,
            reason,
            description: None,
        }
    }

    const DELAY: &dyn Fn(&str) -> Duration = &|_| Duration::from_secs(300);

    #[test]
    fn a_stop_is_held_until_the_data_plane_reports_the_target_gone() {
        let reg = TargetRegistry::default();
        assert_eq!(
            reg.set_service_targets(&key(), contributes(&[(40001, "t1")]), DELAY)
                .groups,
            vec![TG]
        );
        assert!(
            !reg.holds_stop("t1"),
            "not yet in the data plane: nothing to drain"
        );
        reg.mark_served(TG, &[target(40001)]);
        assert!(reg.holds_stop("t1"), "serving: held");
        assert_eq!(reg.service_targets_of(TG), vec![target(40001)]);

        let change = reg.set_service_targets(&key(), contributes(&[]), DELAY);
        assert_eq!(change.groups, vec![TG]);
        assert_eq!(change.draining_on, vec!["arn:instance/1".to_string()]);
        assert!(reg.service_targets_of(TG).is_empty());
        assert!(reg.holds_stop("t1"), "draining: held");
        let draining = reg.on_health(&report(
            40001,
            TargetState::Draining,
            Some(TargetReason::DeregistrationInProgress),
        ));
        assert_eq!(draining.release_on, None);
        assert!(reg.holds_stop("t1"));

        let gone = reg.on_health(&report(
            40001,
            TargetState::Unused,
            Some(TargetReason::NotRegistered),
        ));
        assert_eq!(gone.release_on.as_deref(), Some("arn:instance/1"));
        assert!(!reg.holds_stop("t1"));
    }

    #[test]
    fn a_hold_ends_at_the_drain_bound_even_without_a_report() {
        let reg = TargetRegistry::default();
        reg.set_service_targets(&key(), contributes(&[(40001, "t1")]), DELAY);
        reg.mark_served(TG, &[target(40001)]);
        reg.set_service_targets(&key(), contributes(&[]), &|_| Duration::ZERO);
        let deadline = reg.drain_deadline("t1").unwrap();
        assert!(deadline <= Instant::now() + DRAIN_GRACE);
        // Not yet past the grace: held.
        assert!(reg.holds_stop("t1"));
    }

    #[test]
    fn health_counts_per_task_and_names_the_unhealthy_group() {
        let reg = TargetRegistry::default();
        reg.set_service_targets(&key(), contributes(&[(1, "t1"), (2, "t2")]), DELAY);
        reg.mark_served(TG, &[target(1), target(2)]);
        assert_eq!(reg.task_health("t1").targets, 1);
        assert!(
            !reg.task_health("t1").all_healthy(),
            "initial is not healthy"
        );
        reg.on_health(&report(1, TargetState::Healthy, None));
        assert!(reg.task_health("t1").all_healthy());
        let mut bad = report(
            2,
            TargetState::Unhealthy,
            Some(TargetReason::ResponseCodeMismatch),
        );
        bad.description = Some("Health checks failed with these codes: [500]".into());
        let effect = reg.on_health(&bad);
        assert_eq!(effect.service, Some(key()));
        assert_eq!(
            reg.task_health("t2").unhealthy,
            Some((
                TG.to_string(),
                "Health checks failed with these codes: [500]".to_string()
            ))
        );
        assert_eq!(reg.task_health("unknown"), TaskLbHealth::default());
    }

    #[test]
    fn a_removed_group_releases_its_tasks_at_once() {
        let reg = TargetRegistry::default();
        reg.set_service_targets(&key(), contributes(&[(1, "t1")]), DELAY);
        reg.mark_served(TG, &[target(1)]);
        reg.set_service_targets(&key(), contributes(&[]), DELAY);
        assert!(reg.holds_stop("t1"));
        assert_eq!(reg.group_removed(TG), vec!["arn:instance/1".to_string()]);
        assert!(!reg.holds_stop("t1"));
    }

    #[test]
    fn a_target_that_changes_hands_starts_over_and_releases_the_old_task() {
        let reg = TargetRegistry::default();
        reg.set_service_targets(&key(), contributes(&[(1, "t1")]), DELAY);
        reg.mark_served(TG, &[target(1)]);
        reg.on_health(&report(1, TargetState::Healthy, None));
        assert!(reg.task_health("t1").all_healthy());
        // t1 died (no drain), t2 took the same instance and port in the same pass.
        let change = reg.set_service_targets(&key(), contributes(&[(1, "t2")]), DELAY);
        assert_eq!(change.released_on, vec!["arn:instance/1".to_string()]);
        assert!(!reg.holds_stop("t1"));
        reg.mark_served(TG, &[target(1)]);
        assert_eq!(reg.task_health("t2").targets, 1);
        assert!(
            !reg.task_health("t2").all_healthy(),
            "t1's health is not t2's"
        );
    }

    #[test]
    fn targets_never_served_are_forgotten_and_stale_puts_take_nothing_on() {
        let reg = TargetRegistry::default();
        reg.set_service_targets(&key(), contributes(&[(1, "t1")]), DELAY);
        let change = reg.set_service_targets(&key(), contributes(&[]), DELAY);
        assert!(change.draining_on.is_empty(), "nothing to drain");
        assert!(!reg.holds_stop("t1"));
        // A put compiled before t1 left lands late: t1 is not taken on again.
        reg.mark_served(TG, &[target(1)]);
        assert!(!reg.holds_stop("t1"));
        assert!(reg.serves_group(TG));
        reg.group_removed(TG);
        assert!(!reg.serves_group(TG));
    }

    #[test]
    fn a_target_that_is_contributed_again_is_not_released_by_a_late_report() {
        let reg = TargetRegistry::default();
        reg.set_service_targets(&key(), contributes(&[(1, "t1")]), DELAY);
        reg.mark_served(TG, &[target(1)]);
        let gone = reg.on_health(&report(
            1,
            TargetState::Unused,
            Some(TargetReason::NotRegistered),
        ));
        assert_eq!(gone, HealthEffect::default());
        assert!(reg.holds_stop("t1"));
    }
}
