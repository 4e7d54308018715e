//! The service scheduler's loop: wake on store changes (a task's report, a service update, an
//! instance joining), reconcile the affected services, and act on the plan — stop tasks,
//! place new ones through the scheduler — then write the service record back with
//! compare-and-swap. Level-triggered: every run starts from what the store says now.
//!
//! One worker serves the whole control plane, so a service is never reconciled twice at once.
//! Timers (stability window, back-off, grace periods) and a slow periodic resync only repair
//! what an event could not announce; reactions to a dying task are immediate.

use super::record::ServiceRecord;
use super::rollout::{self, InstanceView, LaunchAction, Settings, TaskView};
use crate::repo;
use crate::state::ControlPlane;
use crate::tasks::{self, Target, TaskRecord};
use gantry_model::arn::last_segment;
use gantry_model::services::DAEMON;
use gantry_model::types::{ContainerInstance, Failure, Tag};
use gantry_model::{now_epoch, status, stop_code, EcsResult};
use gantry_scheduler::{reason, InstanceFilter};
use gantry_store::{TxnOp, WatchEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// A full pass over every service, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(15);
/// How soon a service whose tasks could not be placed tries again (instance and task changes
/// also wake it at once).
const PLACEMENT_RETRY_SECS: f64 = 5.0;
/// How often the same "unable to place" event may repeat.
const PLACEMENT_EVENT_EVERY_SECS: f64 = 60.0;

type ServiceKey = (String, String);

pub async fn run(plane: Arc<ControlPlane>) {
    loop {
        if let Err(e) = watch_and_reconcile(&plane).await {
            tracing::warn!("service scheduler restarting after an error: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn watch_and_reconcile(plane: &ControlPlane) -> EcsResult<()> {
    let rev = plane.store.revision().await.map_err(repo::store_error)?;
    let mut watcher = plane
        .store
        .watch("", Some(rev + 1))
        .await
        .map_err(repo::store_error)?;
    let mut dirty: BTreeSet<ServiceKey> = all_services(plane).await?;
    let mut timers: BTreeMap<ServiceKey, f64> = BTreeMap::new();
    let mut next_resync = tokio::time::Instant::now() + RESYNC;
    loop {
        while let Some(key) = dirty.pop_first() {
            timers.remove(&key);
            match reconcile(plane, &key.0, &key.1).await {
                Ok(Some(at)) => {
                    timers.insert(key, at);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(cluster = %key.0, service = %key.1, "reconcile failed: {e}");
                    timers.insert(key, now_epoch() + 1.0);
                }
            }
            // Take in whatever happened meanwhile before the next service.
            while let Ok(event) = watcher.try_recv() {
                note(plane, &event, &mut dirty).await;
            }
        }
        let next_timer = timers.values().copied().fold(f64::INFINITY, f64::min);
        let timer_sleep = if next_timer.is_finite() {
            Duration::from_secs_f64((next_timer - now_epoch()).max(0.0))
        } else {
            RESYNC
        };
        tokio::select! {
            event = watcher.recv() => {
                let Some(event) = event else {
                    // The watcher fell behind: start over from a full listing.
                    return Ok(());
                };
                note(plane, &event, &mut dirty).await;
                while let Ok(event) = watcher.try_recv() {
                    note(plane, &event, &mut dirty).await;
                }
            }
            _ = tokio::time::sleep(timer_sleep) => {
                let now = now_epoch();
                let due: Vec<ServiceKey> = timers
                    .iter()
                    .filter(|(_, at)| **at <= now + 0.001)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    timers.remove(&k);
                    dirty.insert(k);
                }
            }
            _ = tokio::time::sleep_until(next_resync) => {
                next_resync = tokio::time::Instant::now() + RESYNC;
                dirty.extend(all_services(plane).await?);
            }
        }
    }
}

async fn all_services(plane: &ControlPlane) -> EcsResult<BTreeSet<ServiceKey>> {
    service_keys_under(plane, repo::SERVICES).await
}

fn service_key_of(key: &str) -> Option<ServiceKey> {
    let rest = key.strip_prefix(repo::SERVICES)?;
    let (cluster, name) = rest.split_once('/')?;
    Some((cluster.to_string(), name.to_string()))
}

/// Which services a store change concerns.
async fn note(plane: &ControlPlane, event: &WatchEvent, dirty: &mut BTreeSet<ServiceKey>) {
    let key = event.key();
    if let Some(k) = service_key_of(key) {
        dirty.insert(k);
    } else if let Some(rest) = key.strip_prefix(repo::TASKS) {
        let Some((cluster, _)) = rest.split_once('/') else {
            return;
        };
        if let WatchEvent::Put(kv) = event {
            if let Ok(t) = repo::decode::<TaskRecord>(kv) {
                if let Some(name) = t
                    .task
                    .group
                    .as_deref()
                    .and_then(|g| g.strip_prefix("service:"))
                {
                    dirty.insert((cluster.to_string(), name.to_string()));
                }
                // A task that stops frees room other services may be waiting for.
                if t.task.last_status.as_deref() == Some(status::STOPPED) {
                    if let Ok(all) = services_of_cluster(plane, cluster).await {
                        dirty.extend(all);
                    }
                }
            }
        }
    } else if let Some(rest) = key.strip_prefix(repo::INSTANCES) {
        let Some((cluster, _)) = rest.split_once('/') else {
            return;
        };
        if let Ok(all) = services_of_cluster(plane, cluster).await {
            dirty.extend(all);
        }
    }
}

async fn services_of_cluster(
    plane: &ControlPlane,
    cluster: &str,
) -> EcsResult<BTreeSet<ServiceKey>> {
    service_keys_under(plane, &repo::services_prefix(cluster)).await
}

async fn service_keys_under(plane: &ControlPlane, prefix: &str) -> EcsResult<BTreeSet<ServiceKey>> {
    let (kvs, _) = plane.store.range(prefix).await.map_err(repo::store_error)?;
    Ok(kvs
        .iter()
        .filter_map(|kv| service_key_of(&kv.key))
        .collect())
}

fn task_view(t: &TaskRecord) -> TaskView {
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

/// Reconcile one service; returns when to look at it again if nothing else changes.
async fn reconcile(plane: &ControlPlane, cluster: &str, name: &str) -> EcsResult<Option<f64>> {
    let key = repo::service_key(cluster, name);
    let Some((mut rec, rev)) = repo::get::<ServiceRecord>(&*plane.store, &key).await? else {
        return Ok(None);
    };
    if rec.service.status == status::INACTIVE {
        return Ok(None);
    }
    let group = format!("service:{name}");
    let all_tasks = tasks::load_cluster_tasks(plane, cluster).await?;
    let views: Vec<TaskView> = all_tasks
        .iter()
        .filter(|t| t.task.group.as_deref() == Some(group.as_str()))
        .filter(|t| {
            t.task
                .started_by
                .as_deref()
                .is_some_and(|s| s.starts_with("ecs-svc/"))
        })
        .map(task_view)
        .collect();
    let instances = instance_views(plane, cluster, &rec, &all_tasks).await?;
    let before = repo::encode(&rec)?;
    let now = now_epoch();
    let settings = Settings {
        now,
        stability_window: plane.config.service_stability_window_secs,
    };
    let mut actions = rollout::plan(&mut rec, &views, &instances, &settings);

    for s in &actions.stops {
        let code = stop_code::SERVICE_SCHEDULER_INITIATED;
        if let Err(e) = tasks::request_stop(plane, cluster, &s.task_id, code, &s.reason).await {
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
            return Ok(Some(now));
        }
    }
    Ok(actions.wake_at)
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
            let (td, _) = crate::task_definitions::resolve(plane, &launch.task_definition).await?;
            Some(td.tags)
        }
        _ => None,
    };
    let launch_type = service
        .deployments
        .iter()
        .find(|d| d.id == launch.deployment_id)
        .and_then(|d| d.launch_type.clone())
        .or_else(|| service.launch_type.clone());
    let spec = tasks::build_spec(
        plane,
        &launch.task_definition,
        true,
        None,
        Some(launch.deployment_id.clone()),
        Some(format!("service:{}", service.service_name)),
        launch_type,
        tags,
        service.enable_execute_command,
    )
    .await?;
    let target = match &launch.instance {
        Some(arn) => Target::Instances(vec![arn.clone()]),
        None => Target::Scheduler {
            count: launch.count,
            strategies: service.placement_strategy.clone(),
            constraints: service.placement_constraints.clone(),
        },
    };
    tasks::place_tasks(plane, cluster, &spec, &target, None).await
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
async fn instance_views(
    plane: &ControlPlane,
    cluster: &str,
    rec: &ServiceRecord,
    all_tasks: &[TaskRecord],
) -> EcsResult<Vec<InstanceView>> {
    let filters: Vec<InstanceFilter> = rec
        .service
        .placement_constraints
        .iter()
        .filter(|c| c.kind.as_deref() == Some("memberOf"))
        .filter_map(|c| InstanceFilter::parse(c.expression.as_deref().unwrap_or("")).ok())
        .collect();
    let instances: Vec<(ContainerInstance, i64)> =
        repo::list(&*plane.store, &repo::instances_prefix(cluster)).await?;
    Ok(instances
        .iter()
        .filter_map(|(ci, _)| {
            let arn = ci.container_instance_arn.clone()?;
            let daemon = rec.service.scheduling_strategy == DAEMON;
            let eligible = daemon
                && ci.status.as_deref() == Some(status::ACTIVE)
                && (filters.is_empty() || {
                    let snap = tasks::snapshot_of(ci, all_tasks);
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
        .collect())
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
