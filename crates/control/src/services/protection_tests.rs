//! Task scale-in protection in the service scheduler's decisions: which tasks a scale-in
//! stops, what a deployment and a drain wait for, and when the service looks again.

use super::rollout::{self, Actions, Settings, TaskView};
use crate::state::service_record::{DeploymentInternal, ServiceRecord};
use gantry_model::services::{
    rollout as rollout_state, DeploymentConfiguration, Service, ACTIVE, REPLICA,
};
use gantry_model::status;

const NOW: f64 = 1000.0;

fn service(desired: i64) -> ServiceRecord {
    let mut rec = ServiceRecord {
        service: Service {
            service_arn: "arn:aws:ecs:us-east-1:0:service/c/web".into(),
            service_name: "web".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            status: ACTIVE.into(),
            desired_count: desired,
            scheduling_strategy: REPLICA.into(),
            deployment_configuration: Some(DeploymentConfiguration {
                minimum_healthy_percent: Some(100),
                maximum_percent: Some(200),
                ..Default::default()
            }),
            ..Default::default()
        },
        internal: Default::default(),
    };
    deploy(&mut rec, "td:1");
    rec.service.deployments[0].rollout_state = Some(rollout_state::COMPLETED.into());
    rec
}

/// A new PRIMARY deployment of `td` (what UpdateService does, without the store).
fn deploy(rec: &mut ServiceRecord, td: &str) -> String {
    for d in rec.service.deployments.iter_mut() {
        d.status = ACTIVE.into();
    }
    let d = rollout::new_deployment(
        rollout::deployment_id_of_revision(&format!("rev-{td}")),
        td,
        None,
        &rec.service.extra,
        rec.service.desired_count,
        0.0,
    );
    let id = d.id.clone();
    rec.internal.deployments.push(DeploymentInternal {
        id: id.clone(),
        ..Default::default()
    });
    rec.service.deployments.insert(0, d);
    id
}

/// A RUNNING task of `deployment` created at `created`, protected until `until`.
fn running(id: &str, deployment: &str, created: f64, until: Option<f64>) -> TaskView {
    TaskView {
        id: id.into(),
        deployment: deployment.into(),
        last_status: status::RUNNING.into(),
        desired_status: status::RUNNING.into(),
        health: status::HEALTHY.into(),
        started_at: Some(created),
        created_at: created,
        protected_until: until,
        ..Default::default()
    }
}

/// One pass at `now`, every task having been healthy long enough to count (so the only
/// reasons to wake are the ones a test is about).
fn plan_at(rec: &mut ServiceRecord, tasks: &[TaskView], now: f64) -> Actions {
    for t in tasks {
        rec.internal
            .healthy_since
            .entry(t.id.clone())
            .or_insert(0.0);
    }
    rollout::plan(
        rec,
        tasks,
        &[],
        &Settings {
            now,
            stability_window: 0.0,
        },
    )
}

fn stopped(acts: &Actions) -> Vec<&str> {
    let mut ids: Vec<&str> = acts.stops.iter().map(|s| s.task_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn a_scale_in_stops_unprotected_tasks_and_passes_over_protected_ones() {
    let mut rec = service(1);
    let d = rec.service.deployments[0].id.clone();
    // The newest task would go first; it is protected, so the two others go.
    let tasks = [
        running("old", &d, 10.0, None),
        running("mid", &d, 20.0, None),
        running("new", &d, 30.0, Some(NOW + 60.0)),
    ];
    let acts = plan_at(&mut rec, &tasks, NOW);
    assert_eq!(stopped(&acts), vec!["mid", "old"]);
    assert!(acts.launches.is_empty());
    // The scale-in reached its count: nothing was held back, nothing to say or wake for.
    assert!(rec.internal.protection_held.is_empty());
    assert!(!rec
        .service
        .events
        .iter()
        .any(|e| e.message.contains("protected")));
}

#[test]
fn too_few_unprotected_tasks_leave_the_protected_running_until_their_protection_ends() {
    let mut rec = service(1);
    let d = rec.service.deployments[0].id.clone();
    let tasks = vec![
        running("a", &d, 10.0, Some(NOW + 90.0)),
        running("b", &d, 20.0, Some(NOW + 30.0)),
        running("c", &d, 30.0, None),
    ];
    let acts = plan_at(&mut rec, &tasks, NOW);
    // Two must go: `c`, and no other may yet; the service looks again when `b`'s ends.
    assert_eq!(stopped(&acts), vec!["c"]);
    assert_eq!(acts.wake_at, Some(NOW + 30.0));
    assert_eq!(
        rec.internal.protection_held.iter().collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let said = rec
        .service
        .events
        .iter()
        .filter(|e| e.message.contains("protected from scale-in"))
        .count();
    assert_eq!(said, 1);

    // `c` has stopped; at `b`'s expiry, `b` goes (the newest unprotected) and `a` stays.
    let mut later = tasks.clone();
    later[2].desired_status = status::STOPPED.into();
    later[2].last_status = status::STOPPED.into();
    let acts = plan_at(&mut rec, &later, NOW + 30.0);
    assert_eq!(stopped(&acts), vec!["b"]);
    assert_eq!(acts.wake_at, None, "one task left for one desired");
    assert!(rec.internal.protection_held.is_empty());
}

#[test]
fn turning_protection_off_lets_the_scale_in_finish_at_once() {
    let mut rec = service(0);
    let d = rec.service.deployments[0].id.clone();
    let mut tasks = vec![running("a", &d, 10.0, Some(NOW + 600.0))];
    let acts = plan_at(&mut rec, &tasks, NOW);
    assert!(acts.stops.is_empty());
    assert_eq!(acts.wake_at, Some(NOW + 600.0));
    tasks[0].protected_until = None;
    let acts = plan_at(&mut rec, &tasks, NOW + 1.0);
    assert_eq!(stopped(&acts), vec!["a"]);
}

#[test]
fn a_deployment_waits_for_the_protection_of_an_old_task() {
    let mut rec = service(2);
    let old = rec.service.deployments[0].id.clone();
    let new = deploy(&mut rec, "td:2");
    let mut tasks = vec![
        running("old-1", &old, 10.0, Some(NOW + 120.0)),
        running("old-2", &old, 11.0, None),
        running("new-1", &new, 500.0, None),
        running("new-2", &new, 501.0, None),
    ];
    let acts = plan_at(&mut rec, &tasks, NOW);
    assert_eq!(stopped(&acts), vec!["old-2"]);
    assert_eq!(acts.wake_at, Some(NOW + 120.0));
    assert_eq!(rec.service.deployments.len(), 2, "the rollout is not done");
    assert_eq!(
        rec.service.deployments[0].rollout_state.as_deref(),
        Some("IN_PROGRESS")
    );

    tasks[1].desired_status = status::STOPPED.into();
    tasks[1].last_status = status::STOPPED.into();
    let acts = plan_at(&mut rec, &tasks, NOW + 120.0);
    assert_eq!(stopped(&acts), vec!["old-1"]);
}

#[test]
fn expired_protection_protects_nothing() {
    let mut rec = service(1);
    let d = rec.service.deployments[0].id.clone();
    let tasks = [
        running("a", &d, 10.0, Some(NOW - 1.0)),
        running("b", &d, 5.0, None),
    ];
    let acts = plan_at(&mut rec, &tasks, NOW);
    assert_eq!(
        stopped(&acts),
        vec!["a"],
        "the newest goes, as without protection"
    );
}

#[test]
fn a_drain_waits_for_protection_unless_the_delete_was_forced() {
    for force in [false, true] {
        let mut rec = service(0);
        rec.service.status = status::DRAINING.into();
        rec.internal.force_deleted = force;
        let d = rec.service.deployments[0].id.clone();
        let tasks = [
            running("p", &d, 10.0, Some(NOW + 60.0)),
            running("u", &d, 20.0, None),
        ];
        let acts = plan_at(&mut rec, &tasks, NOW);
        if force {
            assert_eq!(stopped(&acts), vec!["p", "u"]);
        } else {
            assert_eq!(stopped(&acts), vec!["u"]);
            assert_eq!(acts.wake_at, Some(NOW + 60.0));
            assert_eq!(rec.service.status, status::DRAINING);
        }
    }
}

#[test]
fn a_protected_task_that_fails_its_health_checks_is_still_replaced() {
    let mut rec = service(1);
    let d = rec.service.deployments[0].id.clone();
    let mut sick = running("sick", &d, 10.0, Some(NOW + 600.0));
    sick.health = status::UNHEALTHY.into();
    let acts = plan_at(&mut rec, &[sick], NOW);
    assert_eq!(stopped(&acts), vec!["sick"]);
    assert_eq!(acts.launches.iter().map(|l| l.count).sum::<usize>(), 1);
}
