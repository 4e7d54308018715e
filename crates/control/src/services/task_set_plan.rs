//! The service scheduler's decisions for an EXTERNAL service, as a pure function of the
//! service record and its tasks: every task set keeps `computedDesiredCount` tasks of its own
//! task definition (its `scale` share of the service's desired count, rounded up), a DRAINING
//! task set keeps none and is forgotten once its tasks are gone, and each set's counts and
//! stability status are recorded. The health, unexpected-stop and back-off phases are the
//! rolling scheduler's (`rollout.rs`); there is no rollout, circuit breaker or
//! `maximumPercent` bound: the external controller decides what runs when, by scaling its sets.

use super::rollout::{
    self, is_healthy, staying, Actions, InstanceView, LaunchAction, Pass, Settings, TaskView,
    MAX_LAUNCHES_PER_PASS,
};
use crate::state::service_record::ServiceRecord;
use gantry_model::services::{computed_desired_count, stability, TaskSet, DRAINING};
use gantry_model::status;
use std::collections::BTreeSet;

/// How many tasks `set` keeps for a service of `desired` tasks: none while it (or its
/// service, `draining`) is being deleted.
pub fn share_of(set: &TaskSet, desired: i64, draining: bool) -> i64 {
    if draining || set.status == DRAINING {
        0
    } else {
        computed_desired_count(desired, set.scale.value)
    }
}

/// Give `set` its computed desired count for a service of `desired` tasks; a change that
/// leaves work to do makes it STABILIZING at once (the scheduler says when it is steady).
pub fn refresh_computed_count(set: &mut TaskSet, desired: i64, draining: bool, now: f64) {
    let want = share_of(set, desired, draining);
    if set.computed_desired_count == want {
        return;
    }
    set.computed_desired_count = want;
    set.updated_at = now;
    let settled = set.running_count == want && set.pending_count == 0;
    if !settled && set.stability_status != stability::STABILIZING {
        set.stability_status = stability::STABILIZING.into();
        set.stability_status_at = now;
    }
}

/// One pass of the service scheduler over an EXTERNAL service.
pub fn plan(
    rec: &mut ServiceRecord,
    tasks: &[TaskView],
    instances: &[InstanceView],
    settings: &Settings,
) -> Actions {
    if rec.service.status == status::INACTIVE {
        return Actions::default();
    }
    let sets: Vec<TaskSet> = rec.service.task_sets.clone().unwrap_or_default();
    let mut pass = Pass::new(rec, tasks, instances, settings.now);
    rec.service.desired_count = pass.desired;
    // A task set is a deployment as far as the shared phases go: its tasks carry its id.
    pass.known_deployments = sets.iter().map(|s| s.id.clone()).collect();

    rollout::forget_missing_tasks(rec, tasks);
    rollout::count_unexpected_stops(rec, &mut pass);
    rollout::replace_unhealthy(rec, &mut pass);
    reset_backoff_when_settled(rec, &mut pass, settings.stability_window);

    // Tasks of task sets the service no longer has.
    let orphans: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.active() && !pass.known_deployments.contains(&t.deployment))
        .collect();
    for t in orphans {
        pass.stop(t, rollout::scaling_reason(&t.deployment));
    }
    let launch_allowed = !pass.draining && pass.now >= rec.internal.backoff.next_launch_at;
    if !pass.draining && !launch_allowed {
        pass.acts.wake(rec.internal.backoff.next_launch_at);
    }
    for set in &sets {
        keep_share(rec, &mut pass, set, launch_allowed);
    }
    if !pass.scheduler_stops.is_empty() {
        pass.events.push(format!(
            "(service {}) has stopped {} running tasks: {}.",
            pass.name,
            pass.scheduler_stops.len(),
            rollout::task_list(&pass.scheduler_stops)
        ));
    }
    rollout::note_protection(rec, &mut pass);
    record(rec, &mut pass);
    for e in std::mem::take(&mut pass.events) {
        rec.push_event(e, pass.now);
    }
    pass.acts
}

/// A task that has stayed healthy for the stability window started fine: the start back-off
/// is reset (once per task), as for a rolling service's primary tasks.
fn reset_backoff_when_settled(rec: &mut ServiceRecord, pass: &mut Pass, stability_window: f64) {
    if !rollout::newly_settled(rec, pass, stability_window).is_empty() {
        rec.internal.backoff = Default::default();
    }
}

/// Keep `set` at its share: stop the excess (pending first, then unhealthy, then the newest),
/// place what is missing, and replace its tasks on DRAINING instances (each is stopped once
/// the set has its healthy share elsewhere, or at once when it is not healthy itself).
fn keep_share(rec: &ServiceRecord, pass: &mut Pass, set: &TaskSet, launch_allowed: bool) {
    let want = share_of(set, pass.desired, pass.draining);
    let tasks = pass.tasks;
    let mut placed: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| staying(t, &pass.stopping) && pass.in_primary(t, &set.id))
        .collect();
    if placed.len() as i64 > want {
        let stopping = &pass.stopping;
        placed.sort_by(|a, b| {
            let key = |t: &TaskView| {
                (
                    is_healthy(rec, t, stopping),
                    t.last_status == status::RUNNING,
                )
            };
            key(a)
                .cmp(&key(b))
                .then(b.created_at.total_cmp(&a.created_at))
        });
        let excess = placed.len() - want.max(0) as usize;
        // Protected tasks are passed over for unprotected ones further down, as the rolling
        // scheduler does; too few unprotected and the protected stay above the share.
        let (protected, free): (Vec<&TaskView>, Vec<&TaskView>) =
            placed.into_iter().partition(|t| pass.is_protected(t));
        let short = excess.saturating_sub(free.len());
        for t in free.into_iter().take(excess) {
            pass.stop(t, rollout::scaling_reason(&set.id));
        }
        if short > 0 {
            for t in protected {
                pass.protected(t);
            }
        }
    }
    let kept = tasks
        .iter()
        .filter(|t| staying(t, &pass.stopping) && pass.in_primary(t, &set.id))
        .count() as i64;
    let missing = (want - kept).min(MAX_LAUNCHES_PER_PASS);
    if missing > 0 && launch_allowed {
        pass.acts.launches.push(LaunchAction {
            deployment_id: set.id.clone(),
            task_definition: set.task_definition.clone(),
            count: missing as usize,
            instance: None,
        });
    }
    let healthy_elsewhere = tasks
        .iter()
        .filter(|t| pass.in_primary(t, &set.id) && is_healthy(rec, t, &pass.stopping))
        .count() as i64;
    let on_draining: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| {
            staying(t, &pass.stopping) && t.deployment == set.id && !pass.in_primary(t, &set.id)
        })
        .collect();
    for t in on_draining {
        if want == 0 || healthy_elsewhere >= want || !is_healthy(rec, t, &pass.stopping) {
            pass.stop(t, rollout::scaling_reason(&set.id));
        }
    }
}

/// What one task set looks like after this pass.
struct Observed {
    running: i64,
    pending: i64,
    live: usize,
    steady: bool,
}

/// Record each set's counts and stability, forget DRAINING sets whose tasks are all gone,
/// finish a deleted service, and say when the service reached a steady state.
fn record(rec: &mut ServiceRecord, pass: &mut Pass) {
    let now = pass.now;
    let tasks = pass.tasks;
    let launching: BTreeSet<&str> = pass
        .acts
        .launches
        .iter()
        .map(|l| l.deployment_id.as_str())
        .collect();
    let sets = rec.service.task_sets.clone().unwrap_or_default();
    let observed: Vec<Observed> = sets
        .iter()
        .map(|set| {
            let mine: Vec<&TaskView> = tasks.iter().filter(|t| t.deployment == set.id).collect();
            let staying_tasks = || mine.iter().filter(|t| staying(t, &pass.stopping));
            let running = staying_tasks()
                .filter(|t| t.last_status == status::RUNNING)
                .count() as i64;
            let pending = staying_tasks().count() as i64 - running;
            let want = share_of(set, pass.desired, pass.draining);
            // ECS's STEADY_STATE: running == computedDesiredCount, nothing pending, nothing on
            // a DRAINING instance, every task healthy (and none still being stopped).
            let steady = running == want
                && pending == 0
                && !launching.contains(set.id.as_str())
                && mine.iter().filter(|t| t.live()).all(|t| {
                    staying(t, &pass.stopping)
                        && pass.in_primary(t, &set.id)
                        && is_healthy(rec, t, &pass.stopping)
                });
            Observed {
                running,
                pending,
                live: mine.iter().filter(|t| t.live()).count(),
                steady,
            }
        })
        .collect();

    let desired = pass.desired;
    let draining = pass.draining;
    let mut gone: Vec<String> = Vec::new();
    if let Some(list) = rec.service.task_sets.as_mut() {
        for (set, seen) in list.iter_mut().zip(&observed) {
            refresh_computed_count(set, desired, draining, now);
            if (set.running_count, set.pending_count) != (seen.running, seen.pending) {
                set.running_count = seen.running;
                set.pending_count = seen.pending;
                set.updated_at = now;
            }
            let state = if seen.steady {
                stability::STEADY_STATE
            } else {
                stability::STABILIZING
            };
            if set.stability_status != state {
                set.stability_status = state.into();
                set.stability_status_at = now;
            }
            if set.status == DRAINING && seen.live == 0 {
                gone.push(set.id.clone());
            }
        }
        list.retain(|s| !gone.contains(&s.id));
    }
    rec.internal.deployments.retain(|d| !gone.contains(&d.id));
    rec.service.running_count = observed.iter().map(|o| o.running).sum();
    rec.service.pending_count = observed.iter().map(|o| o.pending).sum();

    let known: BTreeSet<&str> = sets.iter().map(|s| s.id.as_str()).collect();
    let orphans_live = tasks
        .iter()
        .any(|t| t.live() && !known.contains(t.deployment.as_str()));
    if draining {
        if !orphans_live && observed.iter().all(|o| o.live == 0) {
            rec.service.status = status::INACTIVE.into();
            rec.service.task_sets = Some(Vec::new());
            rec.internal.deployments.clear();
            rec.internal.inactive_at = Some(now);
        }
        rec.internal.steady = false;
        return;
    }
    let steady = !orphans_live
        && observed.iter().all(|o| o.steady)
        && pass.acts.stops.is_empty()
        && pass.acts.launches.is_empty();
    if steady && !rec.internal.steady {
        pass.events.push(format!(
            "(service {}) has reached a steady state.",
            pass.name
        ));
    }
    rec.internal.steady = steady;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::service_record::DeploymentInternal;
    use gantry_model::services::{controller, DeploymentController, Scale, Service, ACTIVE};

    const WINDOW: f64 = 5.0;

    fn set(id: &str, scale: f64, status: &str) -> TaskSet {
        TaskSet {
            id: id.into(),
            status: status.into(),
            task_definition: format!("td-{id}"),
            scale: Scale {
                value: scale,
                unit: "PERCENT".into(),
            },
            stability_status: stability::STABILIZING.into(),
            ..Default::default()
        }
    }

    fn service(desired: i64, sets: Vec<TaskSet>) -> ServiceRecord {
        let internal = sets
            .iter()
            .map(|s| DeploymentInternal {
                id: s.id.clone(),
                ..Default::default()
            })
            .collect();
        let mut rec = ServiceRecord {
            service: Service {
                service_name: "web".into(),
                status: ACTIVE.into(),
                desired_count: desired,
                scheduling_strategy: "REPLICA".into(),
                deployment_controller: Some(DeploymentController {
                    kind: controller::EXTERNAL.into(),
                }),
                task_sets: Some(sets),
                ..Default::default()
            },
            internal: Default::default(),
        };
        rec.internal.deployments = internal;
        rec
    }

    fn running(id: &str, set: &str, at: f64) -> TaskView {
        TaskView {
            id: id.into(),
            deployment: set.into(),
            instance: Some("i-1".into()),
            last_status: status::RUNNING.into(),
            desired_status: status::RUNNING.into(),
            health: status::UNKNOWN.into(),
            started_at: Some(at),
            created_at: at,
            ..Default::default()
        }
    }

    fn pass(rec: &mut ServiceRecord, tasks: &[TaskView], now: f64) -> Actions {
        let settings = Settings {
            now,
            stability_window: WINDOW,
        };
        plan(rec, tasks, &[], &settings)
    }

    fn launches(a: &Actions) -> Vec<(String, usize)> {
        a.launches
            .iter()
            .map(|l| (l.deployment_id.clone(), l.count))
            .collect()
    }

    fn the_set<'a>(rec: &'a ServiceRecord, id: &str) -> &'a TaskSet {
        rec.service
            .task_sets
            .iter()
            .flatten()
            .find(|s| s.id == id)
            .expect("task set")
    }

    #[test]
    fn each_set_keeps_its_share_and_is_steady_once_it_runs_it() {
        let mut rec = service(4, vec![set("a", 100.0, ACTIVE), set("b", 0.0, ACTIVE)]);
        let a = pass(&mut rec, &[], 10.0);
        assert_eq!(launches(&a), vec![("a".to_string(), 4)]);
        assert_eq!(a.launches[0].task_definition, "td-a");
        assert_eq!(the_set(&rec, "a").computed_desired_count, 4);
        assert_eq!(the_set(&rec, "a").stability_status, stability::STABILIZING);
        // Scale 0%: nothing to run, and nothing running: steady at once.
        assert_eq!(the_set(&rec, "b").computed_desired_count, 0);
        assert_eq!(the_set(&rec, "b").stability_status, stability::STEADY_STATE);

        let tasks: Vec<TaskView> = (0..4)
            .map(|i| running(&format!("a{i}"), "a", 11.0))
            .collect();
        let a = pass(&mut rec, &tasks, 12.0);
        assert!(a.launches.is_empty() && a.stops.is_empty());
        let s = the_set(&rec, "a");
        assert_eq!((s.running_count, s.pending_count), (4, 0));
        assert_eq!(s.stability_status, stability::STEADY_STATE);
        assert_eq!(s.stability_status_at, 12.0);
        assert_eq!(rec.service.running_count, 4);
        assert!(rec.internal.steady);
        assert!(rec.service.events[0]
            .message
            .contains("has reached a steady state"));

        // Shift: b to 50% (two tasks), a to 50% (two of its four stop).
        for s in rec.service.task_sets.iter_mut().flatten() {
            s.scale.value = 50.0;
        }
        let a = pass(&mut rec, &tasks, 13.0);
        assert_eq!(launches(&a), vec![("b".to_string(), 2)]);
        assert_eq!(a.stops.len(), 2);
        assert!(a.stops.iter().all(|s| s.task_id.starts_with('a')));
        assert_eq!(the_set(&rec, "a").computed_desired_count, 2);
        assert_eq!(the_set(&rec, "a").stability_status, stability::STABILIZING);
        assert_eq!(the_set(&rec, "b").computed_desired_count, 2);
        assert!(!rec.internal.steady);
    }

    #[test]
    fn the_service_desired_count_moves_every_share() {
        let mut rec = service(3, vec![set("a", 50.0, ACTIVE)]);
        let a = pass(&mut rec, &[], 1.0);
        // 1.5 tasks are 2.
        assert_eq!(launches(&a), vec![("a".to_string(), 2)]);
        rec.service.desired_count = 10;
        let a = pass(&mut rec, &[], 2.0);
        assert_eq!(launches(&a), vec![("a".to_string(), 5)]);
        assert_eq!(the_set(&rec, "a").computed_desired_count, 5);
    }

    #[test]
    fn a_draining_set_stops_its_tasks_and_is_forgotten_once_they_are_gone() {
        let mut rec = service(2, vec![set("a", 100.0, ACTIVE), set("b", 100.0, DRAINING)]);
        let tasks = vec![
            running("a0", "a", 1.0),
            running("a1", "a", 1.0),
            running("b0", "b", 1.0),
        ];
        let a = pass(&mut rec, &tasks, 2.0);
        assert!(a.launches.is_empty());
        assert_eq!(a.stops.len(), 1);
        assert_eq!(a.stops[0].task_id, "b0");
        assert_eq!(the_set(&rec, "b").computed_desired_count, 0);

        let mut stopped = tasks.clone();
        stopped[2].desired_status = status::STOPPED.into();
        stopped[2].last_status = status::STOPPED.into();
        stopped[2].stop_code = Some(gantry_model::stop_code::SERVICE_SCHEDULER_INITIATED.into());
        pass(&mut rec, &stopped, 3.0);
        let ids: Vec<&str> = rec
            .service
            .task_sets
            .iter()
            .flatten()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, vec!["a"]);
        assert!(rec.internal.deployments.iter().all(|d| d.id != "b"));
        // A task whose set is gone is stopped.
        let orphan = vec![running("x0", "ecs-svc/gone", 1.0)];
        let a = pass(&mut rec, &orphan, 4.0);
        assert_eq!(a.stops.len(), 1);
        assert_eq!(a.stops[0].task_id, "x0");
    }

    #[test]
    fn a_deleted_service_stops_everything_then_goes_inactive() {
        let mut rec = service(2, vec![set("a", 100.0, DRAINING)]);
        rec.service.status = status::DRAINING.into();
        let tasks = vec![running("a0", "a", 1.0)];
        let a = pass(&mut rec, &tasks, 2.0);
        assert_eq!(a.stops.len(), 1);
        assert_eq!(rec.service.status, status::DRAINING);
        let a = pass(&mut rec, &[], 3.0);
        assert!(a.launches.is_empty() && a.stops.is_empty());
        assert_eq!(rec.service.status, status::INACTIVE);
        assert_eq!(rec.service.task_sets.as_deref(), Some(&[][..]));
    }

    #[test]
    fn a_task_on_a_draining_instance_is_replaced_before_it_stops() {
        let mut rec = service(1, vec![set("a", 100.0, ACTIVE)]);
        let tasks = vec![running("a0", "a", 1.0)];
        let instances = vec![InstanceView {
            arn: "i-1".into(),
            eligible: false,
            draining: true,
            connected: true,
        }];
        let settings = Settings {
            now: 10.0,
            stability_window: WINDOW,
        };
        let a = plan(&mut rec, &tasks, &instances, &settings);
        assert_eq!(launches(&a), vec![("a".to_string(), 1)]);
        assert!(a.stops.is_empty(), "the only healthy task keeps serving");
        let mut more = tasks.clone();
        let mut new = running("a1", "a", 11.0);
        new.instance = Some("i-2".into());
        more.push(new);
        let settings = Settings {
            now: 12.0,
            stability_window: WINDOW,
        };
        let a = plan(&mut rec, &more, &instances, &settings);
        assert!(a.launches.is_empty());
        assert_eq!(a.stops.len(), 1);
        assert_eq!(a.stops[0].task_id, "a0");
    }

    #[test]
    fn refreshing_a_share_says_stabilizing_only_when_there_is_work() {
        let mut s = set("a", 50.0, ACTIVE);
        s.stability_status = stability::STEADY_STATE.into();
        refresh_computed_count(&mut s, 0, false, 1.0);
        assert_eq!(s.stability_status, stability::STEADY_STATE);
        refresh_computed_count(&mut s, 4, false, 2.0);
        assert_eq!(s.computed_desired_count, 2);
        assert_eq!(s.stability_status, stability::STABILIZING);
        assert_eq!((s.updated_at, s.stability_status_at), (2.0, 2.0));
    }
}
