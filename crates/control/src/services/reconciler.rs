//! The service scheduler's loop: wake on store changes (a task's report, a service update, an
//! instance joining), reconcile the affected services, and act on the plan — stop tasks,
//! place new ones through the scheduler — then write the service record back with
//! compare-and-swap. Level-triggered: every run starts from what the store says now.
//!
//! It runs on the controller runtime, keyed by service: a service is never reconciled twice at
//! once, different services proceed in parallel, a failing or panicking pass is retried with
//! back-off for that service alone. The state cache tells it which services a change concerns
//! ([`ServiceScheduler::concerned`]); timers (stability window, back-off, grace periods) are
//! requeue-afters, and a slow periodic resync only repairs what an event could not announce.

use super::rollout::{self, InstanceView, LaunchAction, Settings, TaskView};
use super::task_set_plan;
use crate::lifecycle::{self, Target};
use crate::plane::ControlPlane;
use crate::state::cache::{service_of, Change};
use crate::state::records::TaskRecord;
use crate::state::repo;
use crate::state::service_record::ServiceRecord;
use gantry_model::arn::last_segment;
use gantry_model::services::DAEMON;
use gantry_model::types::{ContainerInstance, Failure, Tag};
use gantry_model::{now_epoch, status, stop_code, EcsResult};
use gantry_runtime::{Action, ReconcileError, Reconciler};
use gantry_scheduler::{reason, InstanceFilter};
use gantry_store::TxnOp;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Mutex, Weak};
use std::time::Duration;

/// A full pass over every service, in case an event was missed.
pub const RESYNC: Duration = Duration::from_secs(15);
/// How soon a service whose tasks could not be placed tries again (instance and task changes
/// also wake it at once).
const PLACEMENT_RETRY_SECS: f64 = 5.0;
/// How often the same "unable to place" event may repeat.
const PLACEMENT_EVENT_EVERY_SECS: f64 = 60.0;

type ServiceKey = (String, String);

/// The service scheduler on the controller runtime, keyed by (cluster, service name).
pub struct ServiceScheduler {
    pub plane: Weak<ControlPlane>,
    /// Services whose last pass left tasks unplaced: a task that stops or an instance that
    /// changes in their cluster may make room, so those events wake them (and only them).
    waiting: Mutex<HashSet<ServiceKey>>,
}

impl ServiceScheduler {
    pub fn new(plane: Weak<ControlPlane>) -> Self {
        ServiceScheduler {
            plane,
            waiting: Mutex::new(HashSet::new()),
        }
    }

    /// The services waiting to place in `cluster`; for the Fargate pool, in every cluster
    /// (its hosts serve them all).
    fn waiting_in(&self, cluster: &str) -> Vec<ServiceKey> {
        let any = cluster == gantry_model::FARGATE_POOL;
        self.waiting
            .lock()
            .map(|w| {
                w.iter()
                    .filter(|(c, _)| any || c == cluster)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Which services a change of the state concerns. Cheap: it reads only the changed
    /// records and, for an instance change, the cluster's service list.
    pub fn concerned(&self, plane: &ControlPlane, change: &Change) -> Vec<ServiceKey> {
        match change {
            Change::Service { cluster, name, .. } => vec![(cluster.clone(), name.clone())],
            Change::Task { cluster, old, new } => {
                let mut keys: Vec<ServiceKey> = [old, new]
                    .into_iter()
                    .flatten()
                    .filter_map(|t| service_of(&t.value))
                    .map(|s| (cluster.clone(), s.to_string()))
                    .collect();
                keys.dedup();
                // Room freed, or a task placed (a `memberOf task:group …` constraint may now
                // hold): the services waiting to place look again.
                let freed = old.as_ref().is_some_and(|o| o.value.holds_resources())
                    && new.as_ref().is_none_or(|n| !n.value.holds_resources());
                let appeared = old.is_none() && new.is_some();
                if freed || appeared {
                    keys.extend(self.waiting_in(cluster));
                    // Room on a Fargate host is room for every cluster's Fargate tasks.
                    let on_pool = [old, new].into_iter().flatten().any(|t| {
                        t.value
                            .host_arn()
                            .and_then(gantry_model::arn::cluster_of_arn)
                            == Some(gantry_model::FARGATE_POOL)
                    });
                    if on_pool {
                        keys.extend(self.waiting_in(gantry_model::FARGATE_POOL));
                    }
                }
                keys
            }
            Change::Instance { cluster, old, new } => {
                if !instance_changed(
                    old.as_deref().map(|e| &e.value),
                    new.as_deref().map(|e| &e.value),
                ) {
                    return Vec::new();
                }
                let mut keys = self.waiting_in(cluster);
                keys.extend(
                    plane
                        .cache
                        .services_of_cluster(cluster)
                        .iter()
                        .filter(|s| s.value.service.scheduling_strategy == DAEMON)
                        .map(|s| (cluster.clone(), s.value.service.service_name.clone())),
                );
                // Tasks on an instance that turns DRAINING must move.
                for e in [old, new].into_iter().flatten() {
                    if let Some(arn) = &e.value.container_instance_arn {
                        // A Fargate host's tasks belong to their own clusters.
                        keys.extend(plane.cache.tasks_on_instance(arn).iter().filter_map(|t| {
                            service_of(&t.value)
                                .map(|s| (t.value.cluster_name().to_string(), s.to_string()))
                        }));
                    }
                }
                keys.sort();
                keys.dedup();
                keys
            }
            Change::Resynced => plane.cache.service_keys(),
        }
    }
}

/// Whether an instance change can matter to a service: anything but the `version` bump that
/// every placement makes.
fn instance_changed(old: Option<&ContainerInstance>, new: Option<&ContainerInstance>) -> bool {
    match (old, new) {
        (Some(o), Some(n)) => {
            let mut o = o.clone();
            o.version = n.version;
            o != *n
        }
        (None, None) => false,
        _ => true,
    }
}

impl Reconciler for ServiceScheduler {
    type Key = ServiceKey;

    async fn reconcile(&self, key: &ServiceKey) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        // Waiting until the pass shows it placed everything: room freed while the pass runs
        // then re-runs it (the runtime marks a running key dirty) instead of going unnoticed.
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(key.clone());
        }
        let outcome = reconcile(&plane, &key.0, &key.1)
            .await
            .map_err(|e| ReconcileError(e.message))?;
        if let Ok(mut w) = self.waiting.lock() {
            if outcome.unplaced {
                w.insert(key.clone());
            } else {
                w.remove(key);
            }
        }
        Ok(match outcome.wake_at {
            Some(at) => Action::RequeueAfter(Duration::from_secs_f64((at - now_epoch()).max(0.0))),
            None => Action::Done,
        })
    }

    async fn list(&self) -> Result<Vec<ServiceKey>, ReconcileError> {
        Ok(self
            .plane
            .upgrade()
            .map(|p| p.cache.service_keys())
            .unwrap_or_default())
    }
}

/// What one pass left to do.
struct Outcome {
    /// When to look again if nothing else changes.
    wake_at: Option<f64>,
    /// Whether some tasks found no instance.
    unplaced: bool,
}

/// `lb_gated`: the service has target groups and a data plane serves them, so the task's
/// targets' health counts.
fn task_view(plane: &ControlPlane, t: &TaskRecord, lb_gated: bool) -> TaskView {
    let task = &t.task;
    TaskView {
        id: t.id().to_string(),
        deployment: task.started_by.clone().unwrap_or_default(),
        instance: task.container_instance_arn.clone(),
        last_status: task.last_status.clone().unwrap_or_default(),
        desired_status: task.desired_status.clone().unwrap_or_default(),
        health: task
            .health_status
            .clone()
            .unwrap_or_else(|| status::UNKNOWN.into()),
        started_at: task.started_at,
        created_at: task.created_at.unwrap_or(0.0),
        stop_code: task.stop_code.clone(),
        stopped_reason: stop_reason_with_exit(task),
        protected_until: t.internal.protected_until,
        lb: match (lb_gated, task.task_arn.as_deref()) {
            (true, Some(arn)) => Some(plane.targets.task_health(arn)),
            _ => None,
        },
    }
}

/// The stopped reason, with the exit code of the essential container that ended the task.
fn stop_reason_with_exit(task: &gantry_model::types::Task) -> Option<String> {
    let reason = task.stopped_reason.clone()?;
    if task.stop_code.as_deref() != Some(stop_code::ESSENTIAL_CONTAINER_EXITED) {
        return Some(reason);
    }
    match task.containers.iter().find_map(|c| c.exit_code) {
        Some(code) => Some(format!(
            "{} (exit code {code})",
            reason.trim_end_matches('.')
        )),
        None => Some(reason),
    }
}

/// Reconcile one service: read its record and its own tasks (the cache's service index, not
/// the cluster), plan, act, write back.
async fn reconcile(plane: &ControlPlane, cluster: &str, name: &str) -> EcsResult<Outcome> {
    let done = Outcome {
        wake_at: None,
        unplaced: false,
    };
    let key = repo::service_key(cluster, name);
    let Some((mut rec, rev)) = repo::get::<ServiceRecord>(&*plane.store, &key).await? else {
        return Ok(done);
    };
    if rec.service.status == status::INACTIVE {
        return Ok(done);
    }
    // Targets' health counts for the deployment when every target group of the service is
    // served by the data plane (a deleted group, or one not put yet, does not hold the
    // service's deployments up for ever).
    let load_balancers = crate::load_balancing::service_targets::load_balancers_of(&rec.service);
    let lb_gated = plane.load_balancer_data_plane().is_some()
        && !load_balancers.is_empty()
        && load_balancers
            .iter()
            .all(|lb| plane.targets.serves_group(&lb.target_group_arn));
    let views: Vec<TaskView> = plane
        .cache
        .tasks_of_service(cluster, name)
        .iter()
        .map(|e| &e.value)
        .filter(|t| {
            t.task
                .started_by
                .as_deref()
                .is_some_and(|s| s.starts_with("ecs-svc/"))
        })
        .map(|t| task_view(plane, t, lb_gated))
        .collect();
    let instances = instance_views(plane, cluster, &rec, &views);
    let before = repo::encode(&rec)?;
    let now = now_epoch();
    let settings = Settings {
        now,
        stability_window: plane.config.service_stability_window_secs,
    };
    // An EXTERNAL service's tasks belong to its task sets; the others roll deployments.
    let mut actions = if super::api::is_external(&rec) {
        task_set_plan::plan(&mut rec, &views, &instances, &settings)
    } else {
        rollout::plan(&mut rec, &views, &instances, &settings)
    };

    for s in &actions.stops {
        let code = stop_code::SERVICE_SCHEDULER_INITIATED;
        let stopped = if s.unless_protected {
            lifecycle::request_stop_unless_protected(plane, cluster, &s.task_id, code, &s.reason)
                .await
        } else {
            lifecycle::request_stop(plane, cluster, &s.task_id, code, &s.reason).await
        };
        if let Err(e) = stopped {
            tracing::warn!(task = %s.task_id, "could not stop a service task: {e}");
        }
    }
    let mut started: Vec<String> = Vec::new();
    let mut placement_failures: Vec<Failure> = Vec::new();
    let mut launch_errors: Vec<String> = Vec::new();
    for launch in &actions.launches {
        match launch_tasks(plane, cluster, &rec, launch).await {
            Ok((records, failures)) => {
                started.extend(records.iter().map(|r| r.id().to_string()));
                placement_failures.extend(failures);
            }
            Err(e) => launch_errors.push(e.message),
        }
    }
    let mut later_events: Vec<String> = Vec::new();
    if !started.is_empty() {
        later_events.push(format!(
            "(service {name}) has started {} tasks: {}.",
            started.len(),
            rollout::task_list(&started)
        ));
    }
    let unplaced = actions
        .launches
        .iter()
        .map(|l| l.count)
        .sum::<usize>()
        .saturating_sub(started.len());
    if unplaced > 0 {
        let message = unable_to_place(name, &placement_failures, launch_errors.first());
        let repeat = rec
            .internal
            .last_placement_event
            .as_ref()
            .is_some_and(|(m, at)| *m == message && now - at < PLACEMENT_EVENT_EVERY_SECS);
        if !repeat {
            rec.internal.last_placement_event = Some((message.clone(), now));
            later_events.push(message);
        }
        let retry = now + PLACEMENT_RETRY_SECS;
        actions.wake_at = Some(actions.wake_at.map_or(retry, |w| w.min(retry)));
    } else if !started.is_empty() {
        rec.internal.last_placement_event = None;
    }
    for e in &later_events {
        rec.push_event(e.clone(), now);
    }
    rec.prune_revisions();

    let after = repo::encode(&rec)?;
    if after != before {
        let ops = vec![TxnOp::Put {
            key: key.clone(),
            value: after,
        }];
        if !repo::commit(&*plane.store, vec![repo::unchanged_since(&key, rev)], ops).await? {
            // Someone (UpdateService) changed the service meanwhile: keep the events that
            // report what was done, and look again at once.
            if !later_events.is_empty() {
                repo::update::<ServiceRecord, _>(&*plane.store, &key, |r| {
                    for e in &later_events {
                        r.push_event(e.clone(), now);
                    }
                    Ok(())
                })
                .await?;
            }
            return Ok(Outcome {
                wake_at: Some(now),
                unplaced: unplaced > 0,
            });
        }
    }
    Ok(Outcome {
        wake_at: actions.wake_at,
        unplaced: unplaced > 0,
    })
}

/// Start `launch.count` tasks of a deployment, through the scheduler (REPLICA) or on the one
/// instance a DAEMON task belongs on.
async fn launch_tasks(
    plane: &ControlPlane,
    cluster: &str,
    rec: &ServiceRecord,
    launch: &LaunchAction,
) -> EcsResult<(Vec<TaskRecord>, Vec<Failure>)> {
    let service = &rec.service;
    let tags: Option<Vec<Tag>> = match service.propagate_tags.as_deref() {
        Some("SERVICE") => service.tags.clone(),
        Some("TASK_DEFINITION") => {
            let (td, _) =
                crate::state::lookup::task_definition(&*plane.store, &launch.task_definition)
                    .await?;
            Some(td.tags)
        }
        _ => None,
    };
    let deployment = service
        .deployments
        .iter()
        .find(|d| d.id == launch.deployment_id);
    let task_set = service
        .task_sets
        .iter()
        .flatten()
        .find(|s| s.id == launch.deployment_id);
    let launch_type = deployment
        .and_then(|d| d.launch_type.clone())
        .or_else(|| service.launch_type.clone());
    let cluster_record =
        repo::get::<gantry_model::types::Cluster>(&*plane.store, &repo::cluster_key(cluster))
            .await?
            .map(|(c, _)| c)
            .unwrap_or_default();
    let options = match task_set {
        // A task set's own launch settings, and nothing of the service's.
        Some(set) => {
            lifecycle::LaunchOptions::for_service(&cluster_record, set.launch_type.clone(), |m| {
                match m {
                    "platformVersion" => set.platform_version.clone().map(Value::String),
                    _ => set.extra.get(m).cloned(),
                }
            })
        }
        // The deployment's launch settings (as the service had them when it began), else the
        // service's.
        None => lifecycle::LaunchOptions::for_service(&cluster_record, launch_type, |member| {
            deployment
                .and_then(|d| d.extra.get(member))
                .or_else(|| service.extra.get(member))
                .cloned()
        }),
    };
    let spec = lifecycle::build_spec(
        plane,
        &launch.task_definition,
        true,
        None,
        Some(launch.deployment_id.clone()),
        Some(format!("service:{}", service.service_name)),
        options,
        tags,
        service.enable_execute_command,
    )
    .await?;
    // How many of the deployment's tasks run on each capacity provider: the strategy's split
    // counts them (each deployment has its own strategy, so another's tasks do not count).
    let mut running: std::collections::BTreeMap<String, usize> = Default::default();
    for t in plane.cache.tasks_of_service(cluster, &service.service_name) {
        if t.value.task.started_by.as_deref() != Some(launch.deployment_id.as_str()) {
            continue;
        }
        if let (true, Some(p)) = (
            t.value.holds_resources(),
            t.value.task.capacity_provider_name.as_ref(),
        ) {
            *running.entry(p.clone()).or_default() += 1;
        }
    }
    let target = match &launch.instance {
        Some(arn) => Target::Instances(vec![arn.clone()]),
        None => Target::Scheduler {
            count: launch.count,
            strategies: service.placement_strategy.clone(),
            constraints: service.placement_constraints.clone(),
        },
    };
    lifecycle::place(plane, cluster, &spec, &target, None, &running).await
}

/// The ECS event for tasks that found no instance, naming the closest one and why.
/// An error that kept the placement from running at all (no instances) is the reason.
fn unable_to_place(service: &str, failures: &[Failure], error: Option<&String>) -> String {
    // Later checks in the scheduler's order mean the instance got further.
    let rank = |r: &str| match r {
        reason::RESOURCE_PORTS | reason::RESOURCE_PORTS_UDP => 5,
        reason::RESOURCE_MEMORY => 4,
        reason::RESOURCE_CPU => 3,
        reason::MEMBER_OF | reason::DISTINCT_INSTANCE => 6,
        reason::AGENT => 2,
        reason::DRAINING => 1,
        _ => 0,
    };
    let closest = failures
        .iter()
        .filter(|f| {
            f.arn
                .as_deref()
                .is_some_and(|a| a.contains(":container-instance/"))
        })
        .max_by_key(|f| rank(f.reason.as_deref().unwrap_or("")));
    let tail = rollout::TROUBLESHOOTING;
    match closest.filter(|_| error.is_none()) {
        Some(f) => {
            let id = last_segment(f.arn.as_deref().unwrap_or(""));
            let why = match f.reason.as_deref().unwrap_or("") {
                reason::RESOURCE_MEMORY => "has insufficient memory available.".to_string(),
                reason::RESOURCE_CPU => "has insufficient CPU units available.".to_string(),
                reason::RESOURCE_PORTS | reason::RESOURCE_PORTS_UDP => {
                    "is already using a port required by your task.".to_string()
                }
                reason::AGENT => "has its agent disconnected.".to_string(),
                reason::DRAINING => "is DRAINING.".to_string(),
                other => format!("encountered error \"{}\".", other.trim_end_matches('.')),
            };
            format!(
                "(service {service}) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance {id}) {why} {tail}"
            )
        }
        None => {
            let why = error
                .cloned()
                .or_else(|| failures.iter().find_map(|f| f.reason.clone()))
                .unwrap_or_else(|| reason::NO_INSTANCES.to_string());
            format!(
                "(service {service}) was unable to place a task because no container instance met all of its requirements. Reason: {} {tail}",
                why.trim_end_matches('.').to_string() + "."
            )
        }
    }
}

/// The cluster's instances as the service sees them: which a DAEMON service runs on (ACTIVE
/// ones matching its memberOf constraints) and which are DRAINING.
/// The instances the service needs to see: for DAEMON, every instance of the cluster (which
/// it runs on: ACTIVE ones matching its memberOf constraints); for REPLICA, only those its own
/// tasks are on (which of them are DRAINING), so a pass reads no more than the service's own
/// share of the cluster.
fn instance_views(
    plane: &ControlPlane,
    cluster: &str,
    rec: &ServiceRecord,
    tasks: &[TaskView],
) -> Vec<InstanceView> {
    let daemon = rec.service.scheduling_strategy == DAEMON;
    let instances: Vec<_> = if daemon {
        plane.cache.instances_of_cluster(cluster)
    } else {
        let mut arns: Vec<&str> = tasks.iter().filter_map(|t| t.instance.as_deref()).collect();
        arns.sort_unstable();
        arns.dedup();
        arns.into_iter()
            .filter_map(|arn| plane.cache.instance(cluster, last_segment(arn)))
            .collect()
    };
    let filters: Vec<InstanceFilter> = rec
        .service
        .placement_constraints
        .iter()
        .filter(|c| c.kind.as_deref() == Some("memberOf"))
        .filter_map(|c| InstanceFilter::parse(c.expression.as_deref().unwrap_or("")).ok())
        .collect();
    instances
        .iter()
        .map(|e| &e.value)
        .filter_map(|ci| {
            let arn = ci.container_instance_arn.clone()?;
            let eligible = daemon
                && ci.status.as_deref() == Some(status::ACTIVE)
                && (filters.is_empty() || {
                    let on_it = plane.cache.tasks_on_instance(&arn);
                    let snap = lifecycle::snapshot_of(ci, on_it.iter().map(|e| &e.value));
                    filters.iter().all(|f| f.matches(&snap))
                });
            let draining = ci.status.as_deref() == Some(status::DRAINING);
            Some(InstanceView {
                arn,
                eligible,
                draining,
                connected: ci.agent_connected,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(arn: &str, reason: &str) -> Failure {
        Failure {
            arn: Some(arn.into()),
            reason: Some(reason.into()),
            detail: None,
        }
    }

    #[test]
    fn the_placement_event_names_the_closest_instance_and_why() {
        let ci = "arn:aws:ecs:us-east-1:0:container-instance/c/5e6f";
        let other = "arn:aws:ecs:us-east-1:0:container-instance/c/0a0a";
        let msg = unable_to_place(
            "web",
            &[
                failure(other, reason::AGENT),
                failure(ci, reason::RESOURCE_MEMORY),
            ],
            None,
        );
        assert_eq!(
            msg,
            "(service web) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance 5e6f) has insufficient memory available. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
        );
        let msg = unable_to_place("web", &[failure(ci, reason::MEMBER_OF)], None);
        assert!(msg.contains("(container-instance 5e6f) encountered error \"MemberOf placement constraint unsatisfied\"."), "{msg}");
        let msg = unable_to_place("web", &[], None);
        assert!(
            msg.contains("Reason: No Container Instances were found in your cluster."),
            "{msg}"
        );
    }
}
