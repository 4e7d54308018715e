//! The service scheduler's decisions, driven through simulated task lifecycles: rollouts keep
//! their bounds and finish, the circuit breaker trips and rolls back, health and DAEMON
//! placement behave as documented in docs/SERVICES.md.

use super::rollout::{self, bounds, Actions, InstanceView, Settings, TaskView};
use crate::state::service_record::{
    DeploymentInternal, RevisionSummary, ServiceDeploymentRecord, ServiceRecord,
    ServiceRevisionRecord,
};
use gantry_model::services::{
    rollout as rollout_state, DeploymentCircuitBreaker, DeploymentConfiguration, Service, ACTIVE,
    DAEMON, REPLICA,
};
use gantry_model::{status, stop_code};

const WINDOW: f64 = 5.0;

/// A service with one deployment of `td`, as CreateService leaves it.
fn service(desired: i64, min: i64, max: i64, strategy: &str) -> ServiceRecord {
    let mut rec = ServiceRecord {
        service: Service {
            service_arn: "arn:aws:ecs:us-east-1:0:service/c/web".into(),
            service_name: "web".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            status: ACTIVE.into(),
            desired_count: desired,
            scheduling_strategy: strategy.into(),
            deployment_configuration: Some(DeploymentConfiguration {
                minimum_healthy_percent: Some(min),
                maximum_percent: Some(max),
                ..Default::default()
            }),
            ..Default::default()
        },
        internal: Default::default(),
    };
    deploy(&mut rec, "td:1", 0.0, false);
    rec
}

/// What UpdateService does for a new task definition (without the store).
fn deploy(rec: &mut ServiceRecord, td: &str, now: f64, health_check: bool) -> String {
    for d in rec.service.deployments.iter_mut() {
        d.status = ACTIVE.into();
        d.desired_count = 0;
    }
    let revision = format!("rev-{td}-{now}");
    let d = rollout::new_deployment(
        rollout::deployment_id_of_revision(&revision),
        td,
        None,
        &rec.service.extra,
        rec.service.desired_count,
        now,
    );
    let id = d.id.clone();
    let history = format!("hist-{td}-{now}");
    rec.internal.revisions.push(ServiceRevisionRecord {
        service_revision_arn: revision.clone(),
        task_definition: td.into(),
        ..Default::default()
    });
    rec.internal.history.push(ServiceDeploymentRecord {
        service_deployment_arn: history.clone(),
        target_service_revision: RevisionSummary {
            arn: revision.clone(),
            ..Default::default()
        },
        status: "IN_PROGRESS".into(),
        ..Default::default()
    });
    rec.internal.deployments.push(DeploymentInternal {
        id: id.clone(),
        revision_arn: revision,
        service_deployment_arn: history,
        has_health_check: health_check,
        ..Default::default()
    });
    rec.service.deployments.insert(0, d);
    rec.service.task_definition = Some(td.into());
    id
}

/// How simulated tasks of a task definition behave once started.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Healthy,
    /// Exits at once after starting.
    Crashes,
    /// Runs, but its health check reports UNHEALTHY.
    Unhealthy,
    /// Reaches RUNNING, then its essential container exits a moment later.
    DiesAfterStart,
}

struct Sim {
    rec: ServiceRecord,
    tasks: Vec<TaskView>,
    instances: Vec<InstanceView>,
    now: f64,
    next_id: usize,
    behaviour: fn(&str) -> Behaviour,
}

impl Sim {
    fn new(rec: ServiceRecord) -> Self {
        Sim {
            rec,
            tasks: Vec::new(),
            instances: Vec::new(),
            now: 1.0,
            next_id: 0,
            behaviour: |_| Behaviour::Healthy,
        }
    }

    fn td_of(&self, deployment: &str) -> String {
        self.rec
            .service
            .deployments
            .iter()
            .find(|d| d.id == deployment)
            .map(|d| d.task_definition.clone())
            .unwrap_or_default()
    }

    /// One reconcile, then apply its actions the way the reconciler and agent would.
    fn step(&mut self) -> Actions {
        let acts = rollout::plan(
            &mut self.rec,
            &self.tasks,
            &self.instances,
            &Settings {
                now: self.now,
                stability_window: WINDOW,
            },
        );
        for s in &acts.stops {
            let t = self
                .tasks
                .iter_mut()
                .find(|t| t.id == s.task_id)
                .expect("stopped task exists");
            t.desired_status = status::STOPPED.into();
            t.stop_code = Some(stop_code::SERVICE_SCHEDULER_INITIATED.into());
            t.stopped_reason = Some(s.reason.clone());
        }
        for l in &acts.launches {
            for _ in 0..l.count {
                self.next_id += 1;
                self.tasks.push(TaskView {
                    id: format!("t{}", self.next_id),
                    deployment: l.deployment_id.clone(),
                    instance: l.instance.clone(),
                    last_status: status::PENDING.into(),
                    desired_status: status::RUNNING.into(),
                    health: status::UNKNOWN.into(),
                    created_at: self.now,
                    ..Default::default()
                });
            }
        }
        acts
    }

    /// Time passes: pending tasks start (and behave), stopping tasks stop.
    fn progress(&mut self) {
        self.now += 1.0;
        let now = self.now;
        let behaviours: Vec<Behaviour> = self
            .tasks
            .iter()
            .map(|t| (self.behaviour)(&self.td_of(&t.deployment)))
            .collect();
        for (t, b) in self.tasks.iter_mut().zip(behaviours) {
            if t.last_status == status::STOPPED {
                continue;
            }
            if t.desired_status == status::STOPPED {
                t.last_status = status::STOPPED.into();
                continue;
            }
            if t.last_status == status::PENDING {
                match b {
                    Behaviour::Crashes => {
                        t.last_status = status::STOPPED.into();
                        t.desired_status = status::STOPPED.into();
                        t.stop_code = Some(stop_code::ESSENTIAL_CONTAINER_EXITED.into());
                        t.stopped_reason = Some("Essential container in task exited".into());
                    }
                    _ => {
                        t.last_status = status::RUNNING.into();
                        t.started_at = Some(now);
                    }
                }
            } else if t.last_status == status::RUNNING && b == Behaviour::DiesAfterStart {
                t.last_status = status::STOPPED.into();
                t.desired_status = status::STOPPED.into();
                t.stop_code = Some(stop_code::ESSENTIAL_CONTAINER_EXITED.into());
                t.stopped_reason = Some("Essential container in task exited".into());
            } else if t.last_status == status::RUNNING {
                t.health = match b {
                    Behaviour::Unhealthy => status::UNHEALTHY.into(),
                    _ => status::HEALTHY.into(),
                };
            }
        }
    }

    fn live(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.last_status != status::STOPPED)
            .count()
    }

    fn healthy(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| {
                t.last_status == status::RUNNING
                    && t.desired_status == status::RUNNING
                    && t.health != status::UNHEALTHY
            })
            .count()
    }

    fn steady(&self) -> bool {
        self.rec.service.deployments.len() == 1
            && self.rec.service.deployments[0].rollout_state.as_deref()
                == Some(rollout_state::COMPLETED)
            && self.rec.service.running_count == self.rec.service.desired_count
    }

    /// Step until steady; panics after `limit` steps.
    fn run_until_steady(&mut self, limit: usize) {
        for _ in 0..limit {
            self.step();
            if self.steady() {
                return;
            }
            self.progress();
        }
        panic!(
            "not steady after {limit} steps: deployments {:?}\nevents {:?}",
            self.rec.service.deployments,
            self.events()
        );
    }

    fn events(&self) -> Vec<String> {
        self.rec
            .service
            .events
            .iter()
            .map(|e| e.message.clone())
            .collect()
    }
}

#[test]
fn a_new_service_starts_its_tasks_and_reaches_a_steady_state_once() {
    let mut sim = Sim::new(service(3, 100, 200, REPLICA));
    let acts = sim.step();
    assert_eq!(acts.launches.len(), 1);
    assert_eq!(acts.launches[0].count, 3);
    sim.progress();
    sim.run_until_steady(20);
    let events = sim.events();
    let steady = events
        .iter()
        .filter(|e| e.contains("has reached a steady state"))
        .count();
    assert_eq!(steady, 1, "{events:?}");
    assert!(events.iter().any(|e| e.contains("deployment completed")));
    // Steady means nothing more to do, and saying nothing more.
    let before = events.len();
    let acts = sim.step();
    assert!(acts.launches.is_empty() && acts.stops.is_empty());
    assert_eq!(sim.events().len(), before);
}

#[test]
fn rolling_updates_keep_their_bounds_and_finish() {
    for (min, max) in [
        (50, 200),
        (100, 150),
        (100, 200),
        (0, 100),
        (50, 100),
        (75, 125),
    ] {
        for desired in 1..=6i64 {
            let (max_total, min_healthy) = bounds(desired, min, max);
            if max_total <= desired && min_healthy >= desired {
                continue; // neither room to add nor to remove: ECS cannot roll this either
            }
            let mut sim = Sim::new(service(desired, min, max, REPLICA));
            sim.run_until_steady(30);
            let now = sim.now;
            deploy(&mut sim.rec, "td:2", now, false);
            for step in 0..60 {
                sim.step();
                assert!(
                    sim.live() as i64 <= max_total,
                    "{min}/{max} x{desired} step {step}: {} tasks alive, max {max_total}",
                    sim.live()
                );
                assert!(
                    sim.healthy() as i64 >= min_healthy,
                    "{min}/{max} x{desired} step {step}: {} healthy, min {min_healthy}",
                    sim.healthy()
                );
                if sim.steady() {
                    break;
                }
                sim.progress();
            }
            assert!(sim.steady(), "{min}/{max} x{desired} did not finish");
            let new_id = sim.rec.service.deployments[0].id.clone();
            assert!(sim
                .tasks
                .iter()
                .filter(|t| t.last_status != status::STOPPED)
                .all(|t| t.deployment == new_id));
        }
    }
}

#[test]
fn a_crashing_release_trips_the_breaker_and_rolls_back_keeping_the_old_tasks() {
    let mut sim = Sim::new(with_breaker(service(3, 100, 200, REPLICA), true));
    sim.behaviour = |td| {
        if td == "td:2" {
            Behaviour::Crashes
        } else {
            Behaviour::Healthy
        }
    };
    sim.run_until_steady(20);
    let old_id = sim.rec.service.deployments[0].id.clone();
    let old_tasks: Vec<String> = sim.tasks.iter().map(|t| t.id.clone()).collect();
    let now = sim.now;
    let new_id = deploy(&mut sim.rec, "td:2", now, false);
    // The rollback finishes in the pass that trips the breaker: the old deployment's tasks
    // never stopped, so it is promoted back and already settled.
    for _ in 0..20 {
        sim.step();
        if sim.steady() {
            break;
        }
        sim.progress();
    }
    assert!(sim.rec.service.deployments.iter().all(|d| d.id != new_id));
    assert!(
        sim.steady(),
        "not back to steady: {:?}",
        sim.rec.service.deployments
    );
    assert_eq!(
        sim.rec.service.deployments[0].id, old_id,
        "old deployment promoted back"
    );
    assert_eq!(sim.rec.service.task_definition.as_deref(), Some("td:1"));
    // The old tasks were never stopped.
    for id in old_tasks {
        let t = sim.tasks.iter().find(|t| t.id == id).expect("task");
        assert_eq!(t.last_status, status::RUNNING);
    }
    let events = sim.events();
    assert!(
        events
            .iter()
            .any(|e| e.contains("deployment failed: tasks failed to start")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains(&format!("rolling back to deployment {old_id}"))),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| e.contains("stopped unexpectedly: Essential container in task exited")));
    let h = sim.rec.internal.history.last().expect("history");
    assert_eq!(h.status, "ROLLBACK_SUCCESSFUL");
    assert_eq!(h.deployment_circuit_breaker.status, "TRIGGERED");
    assert_eq!(h.deployment_circuit_breaker.threshold, 3);
}

#[test]
fn without_rollback_a_failed_deployment_stops_launching() {
    let mut sim = Sim::new(with_breaker(service(2, 100, 200, REPLICA), false));
    sim.behaviour = |td| {
        if td == "td:2" {
            Behaviour::Crashes
        } else {
            Behaviour::Healthy
        }
    };
    sim.run_until_steady(20);
    let now = sim.now;
    deploy(&mut sim.rec, "td:2", now, false);
    for _ in 0..40 {
        sim.step();
        sim.progress();
    }
    let primary = &sim.rec.service.deployments[0];
    assert_eq!(
        primary.rollout_state.as_deref(),
        Some(rollout_state::FAILED)
    );
    // Threshold 3; the back-off keeps launches from piling up before the trip.
    assert!(
        primary.failed_tasks >= 3 && primary.failed_tasks <= 4,
        "{}",
        primary.failed_tasks
    );
    assert_eq!(
        sim.rec.service.deployments.len(),
        2,
        "old deployment keeps its tasks"
    );
    assert_eq!(sim.healthy(), 2);
    assert!(sim.step().launches.is_empty());
}

#[test]
fn a_release_that_never_gets_healthy_is_rolled_back() {
    let mut sim = Sim::new(with_breaker(service(3, 100, 200, REPLICA), true));
    sim.behaviour = |td| {
        if td == "td:2" {
            Behaviour::Unhealthy
        } else {
            Behaviour::Healthy
        }
    };
    sim.run_until_steady(20);
    let now = sim.now;
    deploy(&mut sim.rec, "td:2", now, true);
    for _ in 0..30 {
        sim.step();
        if sim.steady() {
            break;
        }
        sim.progress();
    }
    assert!(sim.steady());
    assert_eq!(sim.rec.service.task_definition.as_deref(), Some("td:1"));
    let events = sim.events();
    assert!(
        events
            .iter()
            .any(|e| e.contains("failed container health checks")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("deployment failed: tasks failed health checks")),
        "{events:?}"
    );
}

#[test]
fn unhealthy_tasks_wait_out_the_grace_period_then_get_replaced() {
    let mut rec = service(1, 100, 200, REPLICA);
    rec.service.health_check_grace_period_seconds = Some(10);
    let mut sim = Sim::new(rec);
    sim.run_until_steady(20);
    let t0 = sim.tasks[0].id.clone();
    let started = sim.tasks[0].started_at.expect("started");
    sim.tasks[0].health = status::UNHEALTHY.into();
    sim.now = started + 5.0;
    let acts = sim.step();
    assert!(acts.stops.is_empty(), "inside the grace period");
    assert_eq!(acts.wake_at, Some(started + 10.0));
    sim.now = started + 11.0;
    let acts = sim.step();
    assert_eq!(acts.stops.len(), 1);
    assert_eq!(acts.stops[0].task_id, t0);
    assert_eq!(acts.stops[0].reason, rollout::REASON_HEALTH);
    // A replacement starts in the same pass: the unhealthy task was not healthy anyway.
    assert_eq!(acts.launches.iter().map(|l| l.count).sum::<usize>(), 1);
}

#[test]
fn a_task_its_target_group_finds_unhealthy_is_replaced_after_the_grace_period() {
    let mut rec = service(1, 100, 200, REPLICA);
    rec.service.health_check_grace_period_seconds = Some(10);
    let mut sim = Sim::new(rec);
    sim.run_until_steady(20);
    let t0 = sim.tasks[0].id.clone();
    let started = sim.tasks[0].started_at.expect("started");
    let tg = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/0123456789abcdef";
    sim.tasks[0].lb = Some(crate::load_balancing::TaskLbHealth {
        targets: 1,
        healthy: 0,
        unhealthy: Some((
            tg.to_string(),
            "Health checks failed with these codes: [500]".into(),
        )),
    });
    sim.now = started + 5.0;
    assert!(sim.step().stops.is_empty(), "inside the grace period");
    sim.now = started + 11.0;
    let acts = sim.step();
    assert_eq!(acts.stops.len(), 1);
    assert_eq!(acts.stops[0].task_id, t0);
    assert_eq!(
        acts.stops[0].reason,
        format!("Task failed ELB health checks in (target-group {tg})")
    );
    let events = sim.events();
    assert!(
        events.iter().any(|e| e.contains(&format!(
            "is unhealthy in (target-group {tg}) due to (reason Health checks failed with these codes: [500])"
        ))),
        "{events:?}"
    );
}

#[test]
fn a_task_counts_as_healthy_only_when_all_its_targets_are() {
    let rec = service(1, 100, 200, REPLICA);
    let stopping = std::collections::BTreeSet::new();
    let mut t = TaskView {
        id: "t".into(),
        last_status: status::RUNNING.into(),
        desired_status: status::RUNNING.into(),
        health: status::UNKNOWN.into(),
        ..Default::default()
    };
    assert!(rollout::is_healthy(&rec, &t, &stopping), "no load balancer");
    t.lb = Some(crate::load_balancing::TaskLbHealth::default());
    assert!(
        !rollout::is_healthy(&rec, &t, &stopping),
        "not registered yet"
    );
    t.lb = Some(crate::load_balancing::TaskLbHealth {
        targets: 2,
        healthy: 1,
        unhealthy: None,
    });
    assert!(
        !rollout::is_healthy(&rec, &t, &stopping),
        "one target still initial"
    );
    t.lb = Some(crate::load_balancing::TaskLbHealth {
        targets: 2,
        healthy: 2,
        unhealthy: None,
    });
    assert!(rollout::is_healthy(&rec, &t, &stopping));
}

#[test]
fn a_dead_task_is_replaced_at_once_and_the_event_says_why() {
    let mut sim = Sim::new(service(3, 100, 200, REPLICA));
    sim.run_until_steady(20);
    let victim = sim.tasks[1].id.clone();
    {
        let t = &mut sim.tasks[1];
        t.last_status = status::STOPPED.into();
        t.desired_status = status::STOPPED.into();
        t.stop_code = Some(stop_code::ESSENTIAL_CONTAINER_EXITED.into());
        t.stopped_reason = Some("Essential container in task exited (exit code 137)".into());
    }
    let acts = sim.step();
    assert_eq!(acts.launches.iter().map(|l| l.count).sum::<usize>(), 1);
    // It had run healthy for the stability window: replaced, but not a failed start.
    assert_eq!(sim.rec.internal.backoff.consecutive_failures, 0);
    assert_eq!(sim.rec.service.deployments[0].failed_tasks, 0);
    assert!(sim.events().iter().any(|e| e
        == &format!("(service web) (task {victim}) stopped unexpectedly: Essential container in task exited (exit code 137).")));
    let steady_events = |sim: &Sim| {
        sim.events()
            .iter()
            .filter(|e| e.contains("steady state"))
            .count()
    };
    for _ in 0..20 {
        sim.progress();
        sim.step();
        if steady_events(&sim) == 2 {
            break;
        }
    }
    assert_eq!(steady_events(&sim), 2, "steady again after the replacement");
}

#[test]
fn failing_starts_back_off_exponentially() {
    let mut sim = Sim::new(service(1, 100, 200, REPLICA));
    sim.behaviour = |_| Behaviour::Crashes;
    let mut launch_times = Vec::new();
    for _ in 0..40 {
        if !sim.step().launches.is_empty() {
            launch_times.push(sim.now);
        }
        sim.progress();
    }
    let gaps: Vec<f64> = launch_times.windows(2).map(|w| w[1] - w[0]).collect();
    // Three quick attempts, then waits of 1, 2, 4, 8 … seconds (plus a step to notice).
    assert!(gaps.len() >= 4, "{gaps:?}");
    assert!(gaps[gaps.len() - 1] > gaps[1], "{gaps:?}");
    assert!(sim
        .events()
        .iter()
        .any(|e| e.contains("is unable to consistently start tasks successfully")));
}

#[test]
fn scale_in_prefers_pending_then_newest_and_scale_to_zero_completes() {
    let mut sim = Sim::new(service(4, 100, 200, REPLICA));
    sim.run_until_steady(20);
    sim.rec.service.desired_count = 1;
    let acts = sim.step();
    assert_eq!(acts.stops.len(), 3);
    assert!(sim.events()[0].starts_with("(service web) has stopped 3 running tasks:"));
    sim.progress();
    sim.run_until_steady(20);
    sim.rec.service.desired_count = 0;
    sim.step();
    sim.progress();
    sim.run_until_steady(10);
    assert_eq!(sim.live(), 0);
}

#[test]
fn deleting_drains_the_service_to_inactive() {
    let mut sim = Sim::new(service(2, 100, 200, REPLICA));
    sim.run_until_steady(20);
    sim.rec.service.status = status::DRAINING.into();
    for _ in 0..10 {
        sim.step();
        sim.progress();
    }
    assert_eq!(sim.live(), 0);
    assert_eq!(sim.rec.service.status, status::INACTIVE);
    assert!(sim.rec.internal.inactive_at.is_some());
}

#[test]
fn daemon_runs_one_task_per_eligible_instance_and_follows_joins() {
    let mut sim = Sim::new(service(0, 0, 100, DAEMON));
    sim.instances = (0..3)
        .map(|i| InstanceView {
            arn: format!("ci{i}"),
            eligible: i != 1,
            draining: false,
            connected: true,
        })
        .collect();
    sim.run_until_steady(20);
    assert_eq!(sim.rec.service.desired_count, 2);
    let mut on: Vec<String> = sim
        .tasks
        .iter()
        .filter_map(|t| t.instance.clone())
        .collect();
    on.sort();
    assert_eq!(on, ["ci0", "ci2"]);
    sim.instances.push(InstanceView {
        arn: "ci3".into(),
        eligible: true,
        draining: false,
        connected: true,
    });
    let acts = sim.step();
    assert_eq!(acts.launches.len(), 1);
    assert_eq!(acts.launches[0].instance.as_deref(), Some("ci3"));
    sim.progress();
    sim.run_until_steady(20);
    assert_eq!(sim.rec.service.desired_count, 3);
    // An instance that stops qualifying loses its task.
    sim.instances[0].eligible = false;
    let acts = sim.step();
    assert_eq!(acts.stops.len(), 1);
}

#[test]
fn daemon_rollout_replaces_one_instance_at_a_time_within_min_healthy() {
    let mut sim = Sim::new(service(0, 50, 100, DAEMON));
    sim.instances = (0..4)
        .map(|i| InstanceView {
            arn: format!("ci{i}"),
            eligible: true,
            draining: false,
            connected: true,
        })
        .collect();
    sim.run_until_steady(20);
    let now = sim.now;
    deploy(&mut sim.rec, "td:2", now, false);
    for _ in 0..40 {
        sim.step();
        assert!(sim.healthy() >= 2, "min healthy 50% of 4");
        for i in &sim.instances {
            let n = sim
                .tasks
                .iter()
                .filter(|t| {
                    t.last_status != status::STOPPED
                        && t.instance.as_deref() == Some(i.arn.as_str())
                })
                .count();
            assert!(n <= 1, "two tasks on {}", i.arn);
        }
        if sim.steady() {
            break;
        }
        sim.progress();
    }
    assert!(sim.steady());
}

#[test]
fn a_release_dying_right_after_start_never_takes_old_tasks_down() {
    let mut sim = Sim::new(with_breaker(service(2, 100, 200, REPLICA), true));
    sim.behaviour = |td| {
        if td == "td:2" {
            Behaviour::DiesAfterStart
        } else {
            Behaviour::Healthy
        }
    };
    sim.run_until_steady(20);
    let old: Vec<String> = sim.tasks.iter().map(|t| t.id.clone()).collect();
    let now = sim.now;
    deploy(&mut sim.rec, "td:2", now, false);
    for _ in 0..30 {
        let acts = sim.step();
        assert!(
            acts.stops.iter().all(|s| !old.contains(&s.task_id)),
            "an old task was stopped for a new one that then died"
        );
        if sim.steady() {
            break;
        }
        sim.progress();
    }
    assert!(sim.steady());
    assert_eq!(sim.rec.service.task_definition.as_deref(), Some("td:1"));
    assert!(old.iter().all(|id| sim
        .tasks
        .iter()
        .any(|t| &t.id == id && t.last_status == status::RUNNING)));
}

fn with_breaker(mut rec: ServiceRecord, rollback: bool) -> ServiceRecord {
    rec.service
        .deployment_configuration
        .as_mut()
        .expect("config")
        .deployment_circuit_breaker = Some(DeploymentCircuitBreaker {
        enable: true,
        rollback,
        ..Default::default()
    });
    rec
}

#[test]
fn healthy_tasks_do_not_hide_failing_ones_from_the_breaker() {
    // Half of the new tasks land where they work, half crash: the healthy ones reset the
    // count once each, not on every pass, so the crashes still trip the breaker.
    let mut sim = Sim::new(with_breaker(service(4, 50, 200, REPLICA), true));
    sim.run_until_steady(20);
    let now = sim.now;
    let new_id = deploy(&mut sim.rec, "td:2", now, false);
    let mut flip = false;
    for _ in 0..60 {
        sim.step();
        // Alternate the new tasks' fate as they are launched.
        for t in sim
            .tasks
            .iter_mut()
            .filter(|t| t.deployment == new_id && t.last_status == status::PENDING)
        {
            flip = !flip;
            if flip {
                t.last_status = status::STOPPED.into();
                t.desired_status = status::STOPPED.into();
                t.stop_code = Some(stop_code::TASK_FAILED_TO_START.into());
                t.stopped_reason = Some("CannotPullContainerError: wrong platform".into());
            }
        }
        if sim.events().iter().any(|e| e.contains("deployment failed")) {
            return;
        }
        sim.progress();
    }
    panic!("breaker never tripped: {:?}", sim.events());
}

#[test]
fn deleting_a_service_whose_rollout_failed_still_ends_inactive() {
    let mut sim = Sim::new(with_breaker(service(2, 100, 200, REPLICA), false));
    sim.behaviour = |_| Behaviour::Crashes;
    for _ in 0..20 {
        sim.step();
        sim.progress();
    }
    assert_eq!(
        sim.rec.service.deployments[0].rollout_state.as_deref(),
        Some(rollout_state::FAILED)
    );
    sim.rec.service.status = status::DRAINING.into();
    for _ in 0..5 {
        sim.step();
        sim.progress();
    }
    assert_eq!(sim.rec.service.status, status::INACTIVE);
    let h = sim.rec.internal.history.last().expect("history");
    assert_ne!(h.status, "SUCCESSFUL");
}

#[test]
fn stopped_tasks_of_an_earlier_service_of_the_same_name_are_not_counted() {
    let mut rec = service(1, 100, 200, REPLICA);
    rec.service.created_at = 100.0;
    let mut sim = Sim::new(rec);
    sim.now = 101.0;
    for i in 0..5 {
        sim.tasks.push(TaskView {
            id: format!("old{i}"),
            deployment: "ecs-svc/1".into(),
            last_status: status::STOPPED.into(),
            desired_status: status::STOPPED.into(),
            stop_code: Some(stop_code::ESSENTIAL_CONTAINER_EXITED.into()),
            created_at: 50.0,
            ..Default::default()
        });
    }
    let acts = sim.step();
    assert_eq!(acts.launches.iter().map(|l| l.count).sum::<usize>(), 1);
    assert!(sim
        .events()
        .iter()
        .all(|e| !e.contains("stopped unexpectedly")));
    assert_eq!(sim.rec.internal.backoff.consecutive_failures, 0);
}

#[test]
fn replica_tasks_move_off_a_draining_instance_within_the_bounds() {
    let mut sim = Sim::new(service(2, 100, 200, REPLICA));
    sim.run_until_steady(20);
    for (i, t) in sim.tasks.iter_mut().enumerate() {
        t.instance = Some(format!("ci{i}"));
    }
    sim.instances = vec![
        InstanceView {
            arn: "ci0".into(),
            eligible: false,
            draining: true,
            connected: true,
        },
        InstanceView {
            arn: "ci1".into(),
            eligible: false,
            draining: false,
            connected: true,
        },
    ];
    let acts = sim.step();
    // The replacement starts first; the drained task stays until it is healthy (min 100%).
    assert_eq!(acts.launches.iter().map(|l| l.count).sum::<usize>(), 1);
    assert!(acts.stops.is_empty());
    for _ in 0..10 {
        sim.progress();
        sim.step();
        assert!(sim.healthy() >= 2);
    }
    let on_drained = sim
        .tasks
        .iter()
        .find(|t| t.instance.as_deref() == Some("ci0"))
        .expect("task");
    assert_eq!(on_drained.last_status, status::STOPPED);
}

// ---- The phases of `plan`, one by one ----

mod phases {
    use super::*;
    use crate::services::rollout::{
        count_unexpected_stops, decide_stops_and_launches, forget_missing_tasks, record_counts,
        replace_unhealthy, track_health, Pass, SettleRule,
    };

    fn task(id: &str, deployment: &str, last: &str, health: &str) -> TaskView {
        TaskView {
            id: id.into(),
            deployment: deployment.into(),
            last_status: last.into(),
            desired_status: if last == status::STOPPED {
                status::STOPPED.into()
            } else {
                status::RUNNING.into()
            },
            health: health.into(),
            created_at: 1.0,
            started_at: Some(1.0),
            ..Default::default()
        }
    }

    fn primary(rec: &ServiceRecord) -> String {
        rec.service.deployments[0].id.clone()
    }

    #[test]
    fn forget_missing_tasks_drops_bookkeeping_of_vanished_tasks_only() {
        let mut rec = service(1, 100, 200, REPLICA);
        rec.internal.seen_stopped.insert("gone".into());
        rec.internal.seen_stopped.insert("here".into());
        rec.internal.healthy_since.insert("gone".into(), 1.0);
        let tasks = vec![task(
            "here",
            &primary(&rec),
            status::STOPPED,
            status::UNKNOWN,
        )];
        forget_missing_tasks(&mut rec, &tasks);
        assert_eq!(
            rec.internal.seen_stopped.iter().collect::<Vec<_>>(),
            vec!["here"]
        );
        assert!(rec.internal.healthy_since.is_empty());
    }

    #[test]
    fn an_unexpected_stop_is_said_once_and_counted_as_a_failure_once() {
        let mut rec = service(1, 100, 200, REPLICA);
        let mut dead = task("t1", &primary(&rec), status::STOPPED, status::UNKNOWN);
        dead.stop_code = Some(stop_code::ESSENTIAL_CONTAINER_EXITED.into());
        dead.stopped_reason = Some("Essential container in task exited".into());
        let tasks = vec![dead];
        for round in 0..2 {
            let mut pass = Pass::new(&rec, &tasks, &[], 10.0);
            count_unexpected_stops(&mut rec, &mut pass);
            let expected = if round == 0 { 1 } else { 0 };
            assert_eq!(pass.events.len(), expected, "{:?}", pass.events);
        }
        assert_eq!(rec.service.deployments[0].failed_tasks, 1);
        assert_eq!(rec.internal.backoff.consecutive_failures, 1);
    }

    #[test]
    fn a_stop_the_scheduler_asked_for_is_not_a_failure() {
        let mut rec = service(1, 100, 200, REPLICA);
        let mut stopped = task("t1", &primary(&rec), status::STOPPED, status::UNKNOWN);
        stopped.stop_code = Some(stop_code::SERVICE_SCHEDULER_INITIATED.into());
        let tasks = vec![stopped];
        let mut pass = Pass::new(&rec, &tasks, &[], 10.0);
        count_unexpected_stops(&mut rec, &mut pass);
        assert!(pass.events.is_empty());
        assert_eq!(rec.service.deployments[0].failed_tasks, 0);
    }

    #[test]
    fn an_unhealthy_task_is_stopped_only_after_the_grace_period() {
        let mut rec = service(1, 100, 200, REPLICA);
        rec.service.health_check_grace_period_seconds = Some(30);
        let tasks = vec![task(
            "t1",
            &primary(&rec),
            status::RUNNING,
            status::UNHEALTHY,
        )];
        let mut pass = Pass::new(&rec, &tasks, &[], 10.0);
        replace_unhealthy(&mut rec, &mut pass);
        assert!(pass.acts.stops.is_empty(), "inside the grace period");
        assert_eq!(pass.acts.wake_at, Some(31.0), "looks again when it ends");

        let mut pass = Pass::new(&rec, &tasks, &[], 40.0);
        replace_unhealthy(&mut rec, &mut pass);
        assert_eq!(pass.acts.stops.len(), 1);
        assert!(pass.stopping.contains("t1"));
        assert_eq!(rec.service.deployments[0].failed_tasks, 1);
    }

    #[test]
    fn a_task_healthy_for_the_window_resets_the_breaker_once() {
        let mut rec = service(1, 100, 200, REPLICA);
        let id = primary(&rec);
        rec.internal.deployments[0].breaker_failures = 2;
        let tasks = vec![task("t1", &id, status::RUNNING, status::UNKNOWN)];
        let mut pass = Pass::new(&rec, &tasks, &[], 10.0);
        track_health(&mut rec, &mut pass, WINDOW);
        assert_eq!(rec.internal.deployments[0].breaker_failures, 2, "not yet");
        assert_eq!(pass.acts.wake_at, Some(10.0 + WINDOW));

        let mut pass = Pass::new(&rec, &tasks, &[], 10.0 + WINDOW);
        track_health(&mut rec, &mut pass, WINDOW);
        assert_eq!(rec.internal.deployments[0].breaker_failures, 0);
        assert!(rec.internal.settled.contains("t1"));
    }

    #[test]
    fn decide_places_the_missing_tasks_within_maximum_percent() {
        let mut rec = service(4, 100, 150, REPLICA);
        let old = primary(&rec);
        deploy(&mut rec, "td:2", 1.0, false);
        let tasks: Vec<TaskView> = (0..4)
            .map(|i| task(&format!("o{i}"), &old, status::RUNNING, status::UNKNOWN))
            .collect();
        let mut pass = Pass::new(&rec, &tasks, &[], 2.0);
        let settle = SettleRule::new(&rec, &mut pass);
        decide_stops_and_launches(&rec, &mut pass, &[], &settle);
        // 4 desired at 150%: 6 alive at most, 4 already are → 2 new ones; 100% minimum
        // healthy → no old task may go before a new one is healthy.
        assert_eq!(pass.acts.launches.len(), 1);
        assert_eq!(pass.acts.launches[0].count, 2);
        assert!(pass.acts.stops.is_empty(), "{:?}", pass.acts.stops);
    }

    #[test]
    fn decide_gives_a_daemon_task_to_each_connected_eligible_instance() {
        let rec = service(0, 0, 100, DAEMON);
        let instances = vec![
            InstanceView {
                arn: "i-1".into(),
                eligible: true,
                draining: false,
                connected: true,
            },
            InstanceView {
                arn: "i-2".into(),
                eligible: true,
                draining: false,
                connected: false,
            },
            InstanceView {
                arn: "i-3".into(),
                eligible: false,
                draining: false,
                connected: true,
            },
        ];
        let tasks: Vec<TaskView> = Vec::new();
        let mut pass = Pass::new(&rec, &tasks, &instances, 2.0);
        assert_eq!(pass.desired, 2, "one per eligible instance");
        let settle = SettleRule::new(&rec, &mut pass);
        decide_stops_and_launches(&rec, &mut pass, &instances, &settle);
        let targets: Vec<Option<String>> = pass
            .acts
            .launches
            .iter()
            .map(|l| l.instance.clone())
            .collect();
        assert_eq!(targets, vec![Some("i-1".to_string())]);
    }

    #[test]
    fn record_counts_counts_running_and_pending_per_deployment() {
        let mut rec = service(3, 100, 200, REPLICA);
        let id = primary(&rec);
        let tasks = vec![
            task("a", &id, status::RUNNING, status::UNKNOWN),
            task("b", &id, status::PENDING, status::UNKNOWN),
            task("c", &id, status::STOPPED, status::UNKNOWN),
        ];
        let pass = Pass::new(&rec, &tasks, &[], 2.0);
        record_counts(&mut rec, &pass);
        let d = &rec.service.deployments[0];
        assert_eq!(
            (d.running_count, d.pending_count, d.desired_count),
            (1, 1, 3)
        );
        assert_eq!(
            (rec.service.running_count, rec.service.pending_count),
            (1, 1)
        );
    }

    #[test]
    fn the_whole_pass_is_the_phases_in_order() {
        // `plan` on a fresh service: one launch of `desired` tasks, nothing else.
        let mut rec = service(2, 100, 200, REPLICA);
        let actions: Actions = rollout::plan(
            &mut rec,
            &[],
            &[],
            &Settings {
                now: 1.0,
                stability_window: WINDOW,
            },
        );
        assert_eq!(actions.launches.len(), 1);
        assert_eq!(actions.launches[0].count, 2);
        assert_eq!(
            rec.service.deployments[0].rollout_state.as_deref(),
            Some(rollout_state::IN_PROGRESS)
        );
    }
}
