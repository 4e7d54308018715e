//! The service scheduler's decisions, as a pure function of the service record, its tasks and
//! the cluster's instances: which tasks to stop, how many to start for which deployment, and
//! how the record changes (counts, rollout states, the circuit breaker, events). The
//! reconciler (`reconciler.rs`) does the I/O; everything here is unit-testable.
//!
//! Level-triggered: calling `plan` again on the same observed state decides the same things
//! (bookkeeping that must happen once, such as counting a failed task, is keyed by task id).

use crate::state::service_record::{BreakerState, DeploymentInternal, RollbackInfo, ServiceRecord};
use gantry_model::services::{
    breaker_threshold, deployment_status, rollout, Deployment, ACTIVE, DAEMON, PRIMARY,
};
use gantry_model::{status, stop_code};
use std::collections::{BTreeMap, BTreeSet};

/// A service task as the planner sees it.
#[derive(Debug, Clone, Default)]
pub struct TaskView {
    pub id: String,
    /// `startedBy`: the deployment that started it.
    pub deployment: String,
    pub instance: Option<String>,
    pub last_status: String,
    pub desired_status: String,
    pub health: String,
    pub started_at: Option<f64>,
    pub created_at: f64,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    /// Task scale-in protection: until when the scheduler must not stop it to scale in,
    /// deploy or drain (see [`Pass::stop`]).
    pub protected_until: Option<f64>,
    /// Its targets in the load balancer, when its service has target groups and a data plane
    /// serves them: the task counts as healthy only when all of them are.
    pub lb: Option<crate::load_balancing::TaskLbHealth>,
}

/// Live, meant to keep running, and not among the tasks this pass has decided to stop.
pub(crate) fn staying(t: &TaskView, stopping: &BTreeSet<String>) -> bool {
    t.active() && !stopping.contains(&t.id)
}

/// Whether an old task may stop now: one that is not healthy always may; a healthy one only
/// while `allowance` (healthy tasks above the minimum) lasts, and it uses one up.
fn may_stop(healthy: bool, allowance: &mut i64) -> bool {
    if !healthy {
        return true;
    }
    if *allowance > 0 {
        *allowance -= 1;
        return true;
    }
    false
}

impl TaskView {
    pub(crate) fn live(&self) -> bool {
        self.last_status != status::STOPPED
    }
    /// Live and meant to keep running (not being stopped).
    pub(crate) fn active(&self) -> bool {
        self.live() && self.desired_status != status::STOPPED
    }
}

/// A container instance as a DAEMON service sees it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub arn: String,
    /// ACTIVE and satisfying the service's placement constraints (DAEMON).
    pub eligible: bool,
    /// DRAINING: its service tasks are replaced elsewhere (REPLICA).
    pub draining: bool,
    /// Its agent is connected: a DAEMON task is placed only then (an instance that just
    /// registered gets its task as soon as its agent dials in).
    pub connected: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopAction {
    pub task_id: String,
    pub reason: String,
    /// A stop protection holds back (scale-in, deployments, drains): checked again when the
    /// stop is written, since protection may have been granted after this pass read the task.
    pub unless_protected: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchAction {
    pub deployment_id: String,
    pub task_definition: String,
    pub count: usize,
    /// DAEMON: the instance the task goes to.
    pub instance: Option<String>,
}

#[derive(Debug, Default)]
pub struct Actions {
    pub stops: Vec<StopAction>,
    pub launches: Vec<LaunchAction>,
    /// When to look again even if nothing changes (stability window, back-off, grace).
    pub wake_at: Option<f64>,
}

impl Actions {
    pub(crate) fn wake(&mut self, at: f64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

pub struct Settings {
    pub now: f64,
    /// How long a task must stay healthy before a deployment counts as COMPLETED and a
    /// healthy task resets the breaker.
    pub stability_window: f64,
}

/// How long a new task must stay healthy before it stands in for an old one (see `plan`).
const NEW_TASK_SETTLE_SECS: f64 = 1.0;
/// At most this many tasks are placed in one pass (the next pass places more).
pub(crate) const MAX_LAUNCHES_PER_PASS: i64 = 100;
/// How ECS ends the events that tell a user to go and look.
pub const TROUBLESHOOTING: &str =
    "For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.";
const IN_PROGRESS_REASON: &str = "ECS deployment in progress.";
pub const REASON_HEALTH: &str = "Task failed container health checks";

/// The stoppedReason of a task replaced because a target group found it unhealthy, as ECS
/// words it.
pub fn reason_elb_health(target_group_arn: &str) -> String {
    format!("Task failed ELB health checks in (target-group {target_group_arn})")
}

/// Whether a stop was for failed health checks, container or load balancer.
fn stopped_for_failed_health(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r == REASON_HEALTH || r.starts_with("Task failed ELB health checks in "))
}
const BACKOFF_AFTER: u32 = 3;
const BACKOFF_MAX_SECS: f64 = 300.0;

pub(crate) fn scaling_reason(deployment: &str) -> String {
    format!("Scaling activity initiated by (deployment {deployment})")
}

/// The rolling-update bounds for `desired` tasks: (most tasks alive, fewest healthy).
pub fn bounds(desired: i64, minimum_healthy_percent: i64, maximum_percent: i64) -> (i64, i64) {
    let max_total = desired.saturating_mul(maximum_percent) / 100;
    let min_healthy = desired
        .saturating_mul(minimum_healthy_percent)
        .saturating_add(99)
        / 100;
    (max_total, min_healthy)
}

/// One pass of the service scheduler, in named phases; each is a function of the record, the
/// observed tasks and what the earlier phases decided, and can be tested on its own:
///
/// 1. [`forget_missing_tasks`]: drop bookkeeping about tasks that no longer exist.
/// 2. [`count_unexpected_stops`]: what stopped without being asked (events, failures).
/// 3. [`replace_unhealthy`]: what to stop because it failed its health checks.
/// 4. [`track_health`]: who has been healthy for how long; what earns a breaker reset.
/// 5. [`check_breaker`]: what the circuit breaker says (fail, roll back).
/// 6. [`decide_stops_and_launches`]: what to stop and what to place (DAEMON or REPLICA);
///    [`note_protection`]: which tasks task protection kept running.
/// 7. [`record_counts`] and [`record_rollout`]: what to record (counts, completed or steady).
pub fn plan(
    rec: &mut ServiceRecord,
    tasks: &[TaskView],
    instances: &[InstanceView],
    settings: &Settings,
) -> Actions {
    if rec.service.deployments.is_empty() || rec.service.status == status::INACTIVE {
        return Actions::default();
    }
    let mut pass = Pass::new(rec, tasks, instances, settings.now);
    rec.service.desired_count = pass.desired;

    forget_missing_tasks(rec, tasks);
    count_unexpected_stops(rec, &mut pass);
    replace_unhealthy(rec, &mut pass);
    track_health(rec, &mut pass, settings.stability_window);
    let settle = SettleRule::new(rec, &mut pass);
    check_breaker(rec, pass.desired, pass.now, &mut pass.events);
    decide_stops_and_launches(rec, &mut pass, instances, &settle);
    note_protection(rec, &mut pass);
    record_counts(rec, &pass);
    record_rollout(rec, &mut pass, settings.stability_window);
    update_history_counts(rec);

    for e in std::mem::take(&mut pass.events) {
        rec.push_event(e, pass.now);
    }
    pass.acts
}

/// What the phases of one pass share: the observed state and what has been decided so far.
pub struct Pass<'a> {
    pub tasks: &'a [TaskView],
    pub now: f64,
    pub name: String,
    pub daemon: bool,
    /// The service is being deleted: every task goes.
    pub draining: bool,
    /// Tasks the service should run: `desiredCount`, one per eligible instance (DAEMON), or 0.
    pub desired: i64,
    /// Instances a DAEMON task belongs on.
    pub eligible: Vec<String>,
    /// DRAINING instances: REPLICA tasks on them are replaced like an older deployment's.
    pub draining_instances: BTreeSet<String>,
    pub known_deployments: BTreeSet<String>,
    pub events: Vec<String>,
    /// Tasks this pass has decided to stop, so later phases see them as stopping.
    pub stopping: BTreeSet<String>,
    /// Of those, the ones stopped to scale or replace (reported in one event).
    pub scheduler_stops: Vec<String>,
    /// Tasks this pass would have stopped but kept for their task protection.
    pub held: BTreeSet<String>,
    /// DeleteService with `force`: protection holds nothing back.
    pub force: bool,
    pub acts: Actions,
}

impl<'a> Pass<'a> {
    pub fn new(
        rec: &ServiceRecord,
        tasks: &'a [TaskView],
        instances: &[InstanceView],
        now: f64,
    ) -> Pass<'a> {
        let daemon = rec.service.scheduling_strategy == DAEMON;
        let draining = rec.service.status == status::DRAINING;
        let eligible: Vec<String> = instances
            .iter()
            .filter(|i| i.eligible)
            .map(|i| i.arn.clone())
            .collect();
        let desired = if draining {
            0
        } else if daemon {
            eligible.len() as i64
        } else {
            rec.service.desired_count
        };
        Pass {
            tasks,
            now,
            name: rec.name().to_string(),
            daemon,
            draining,
            desired,
            eligible,
            draining_instances: instances
                .iter()
                .filter(|i| i.draining)
                .map(|i| i.arn.clone())
                .collect(),
            known_deployments: rec
                .service
                .deployments
                .iter()
                .map(|d| d.id.clone())
                .collect(),
            events: Vec::new(),
            stopping: BTreeSet::new(),
            scheduler_stops: Vec::new(),
            held: BTreeSet::new(),
            force: draining && rec.internal.force_deleted,
            acts: Actions::default(),
        }
    }

    /// Whether task scale-in protection keeps `t` running now: then it is held, and the pass
    /// wakes when the protection expires (turning it off is a task change, which wakes the
    /// service anyway). A forced delete overrides protection.
    pub fn protected(&mut self, t: &TaskView) -> bool {
        if !self.is_protected(t) {
            return false;
        }
        self.held.insert(t.id.clone());
        if let Some(until) = t.protected_until {
            self.acts.wake(until);
        }
        true
    }

    /// Whether `t`'s protection holds now (without holding it).
    pub fn is_protected(&self, t: &TaskView) -> bool {
        !self.force && t.protected_until.is_some_and(|until| until > self.now)
    }

    /// In the deployment `primary` and, for REPLICA, not on a DRAINING instance.
    pub fn in_primary(&self, t: &TaskView, primary: &str) -> bool {
        t.deployment == primary
            && (self.daemon
                || !t
                    .instance
                    .as_deref()
                    .is_some_and(|i| self.draining_instances.contains(i)))
    }

    /// Stop `t` to scale or replace it (once per pass), unless its protection holds it.
    /// Every stop of a scale-in, a deployment or a drain comes here; replacing a task that
    /// failed its health checks does not (protection is against scale-in, not failure).
    pub(crate) fn stop(&mut self, t: &TaskView, reason: String) {
        if self.protected(t) {
            return;
        }
        if self.stopping.insert(t.id.clone()) {
            self.scheduler_stops.push(t.id.clone());
            self.acts.stops.push(StopAction {
                task_id: t.id.clone(),
                reason,
                unless_protected: !self.force,
            });
        }
    }
}

/// Healthy, for the minimum-healthy bound and the stability window: RUNNING, staying, and
/// HEALTHY if its deployment has a health check (else merely not UNHEALTHY).
pub fn is_healthy(rec: &ServiceRecord, t: &TaskView, stopping: &BTreeSet<String>) -> bool {
    if !staying(t, stopping) || t.last_status != status::RUNNING {
        return false;
    }
    let checked = rec
        .internal_of(&t.deployment)
        .is_some_and(|d| d.has_health_check);
    let containers_healthy = if checked {
        t.health == status::HEALTHY
    } else {
        t.health != status::UNHEALTHY
    };
    containers_healthy && t.lb.as_ref().is_none_or(|lb| lb.all_healthy())
}

/// Phase 1: bookkeeping about tasks that no longer exist is forgotten.
pub fn forget_missing_tasks(rec: &mut ServiceRecord, tasks: &[TaskView]) {
    let ids: BTreeSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let internal = &mut rec.internal;
    internal.seen_stopped.retain(|id| ids.contains(id.as_str()));
    internal
        .healthy_since
        .retain(|id, _| ids.contains(id.as_str()));
    internal.settled.retain(|id| ids.contains(id.as_str()));
    internal
        .health_failed
        .retain(|id| ids.contains(id.as_str()));
}

/// Phase 2: stops the scheduler did not ask for are said once, and a task that failed to
/// start (or died before settling) counts as a failure of its deployment.
pub fn count_unexpected_stops(rec: &mut ServiceRecord, pass: &mut Pass) {
    let name = pass.name.clone();
    for t in pass.tasks.iter().filter(|t| !t.live()) {
        if !rec.internal.seen_stopped.insert(t.id.clone()) {
            continue;
        }
        // Tasks of an earlier service of the same name, or of deployments long gone, are
        // history: noted, not counted.
        if !pass.known_deployments.contains(&t.deployment) || t.created_at < rec.service.created_at
        {
            continue;
        }
        if t.stop_code.as_deref() == Some(stop_code::SERVICE_SCHEDULER_INITIATED)
            || rec.internal.health_failed.contains(&t.id)
        {
            continue;
        }
        let reason = t.stopped_reason.as_deref().unwrap_or("Task stopped");
        pass.events.push(format!(
            "(service {name}) (task {}) stopped unexpectedly: {}.",
            t.id,
            reason.trim_end_matches('.')
        ));
        // A task that had settled (healthy for the stability window) started fine; its later
        // death is replaced but is not a failed start for the breaker or the back-off.
        let failed = matches!(
            t.stop_code.as_deref(),
            Some(stop_code::TASK_FAILED_TO_START) | Some(stop_code::ESSENTIAL_CONTAINER_EXITED)
        ) && !rec.internal.settled.contains(&t.id);
        if failed {
            record_failure(rec, &t.deployment, false, pass.now, &mut pass.events);
        }
    }
}

/// Phase 3: tasks whose health turned UNHEALTHY after the grace period are stopped (and
/// counted as failures, once).
pub fn replace_unhealthy(rec: &mut ServiceRecord, pass: &mut Pass) {
    let grace = rec
        .service
        .health_check_grace_period_seconds
        .unwrap_or(0)
        .max(0) as f64;
    let name = pass.name.clone();
    for t in pass.tasks {
        let container_failing = t.active() && t.health == status::UNHEALTHY;
        let elb_failing =
            t.lb.as_ref()
                .filter(|_| t.active())
                .and_then(|lb| lb.unhealthy.clone());
        // A stop for failed health checks whose bookkeeping was not written (the record
        // changed under the reconciler) is counted when seen.
        let stopped_for_health = !t.active()
            && t.stop_code.as_deref() == Some(stop_code::SERVICE_SCHEDULER_INITIATED)
            && stopped_for_failed_health(t.stopped_reason.as_deref());
        if !container_failing && elb_failing.is_none() && !stopped_for_health {
            continue;
        }
        if container_failing || elb_failing.is_some() {
            let since = t.started_at.unwrap_or(t.created_at);
            if since + grace > pass.now {
                pass.acts.wake(since + grace);
                continue;
            }
            let reason = match (&elb_failing, container_failing) {
                (Some((group, _)), false) => reason_elb_health(group),
                _ => REASON_HEALTH.into(),
            };
            pass.stopping.insert(t.id.clone());
            pass.acts.stops.push(StopAction {
                task_id: t.id.clone(),
                reason,
                unless_protected: false,
            });
        }
        if rec.internal.health_failed.insert(t.id.clone()) {
            match (&elb_failing, container_failing) {
                (Some((group, why)), false) => pass.events.push(format!(
                    "(service {name}) (task {}) is unhealthy in (target-group {group}) due to (reason {why}).",
                    t.id
                )),
                _ => pass.events.push(format!(
                    "(service {name}) (task {}) failed container health checks.",
                    t.id
                )),
            }
            record_failure(rec, &t.deployment, true, pass.now, &mut pass.events);
        }
    }
}

/// Phase 4: healthy-since bookkeeping, and the reset each task earns once, when it has stayed
/// healthy for the stability window: the breaker count of its deployment and, for a task of
/// the primary deployment, the start back-off.
pub fn track_health(rec: &mut ServiceRecord, pass: &mut Pass, stability_window: f64) {
    let primary_id = rec.service.deployments[0].id.clone();
    let reset_breaker = rec
        .service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.as_ref())
        .and_then(|b| b.reset_on_healthy_task)
        .unwrap_or(true);
    for t in newly_settled(rec, pass, stability_window) {
        if t.deployment == primary_id {
            rec.internal.backoff = Default::default();
        }
        if reset_breaker {
            if let Some(d) = rec.internal_of_mut(&t.deployment) {
                d.breaker_failures = 0;
                d.health_failures = 0;
            }
        }
    }
}

/// The tasks that have now stayed healthy for the stability window, each returned once in its
/// life; keeps every task's healthy-since time and asks to be woken when the next one settles.
pub fn newly_settled<'a>(
    rec: &mut ServiceRecord,
    pass: &mut Pass<'a>,
    stability_window: f64,
) -> Vec<&'a TaskView> {
    let now = pass.now;
    let mut settled = Vec::new();
    for t in pass.tasks {
        if !is_healthy(rec, t, &pass.stopping) {
            rec.internal.healthy_since.remove(&t.id);
            continue;
        }
        let since = *rec
            .internal
            .healthy_since
            .entry(t.id.clone())
            .or_insert(now);
        if since + stability_window > now {
            pass.acts.wake(since + stability_window);
            continue;
        }
        if rec.internal.settled.insert(t.id.clone()) {
            settled.push(t);
        }
    }
    settled
}

/// Which tasks count toward the minimum healthy: a task of a deployment still rolling out
/// lets an old task go only once it has stayed healthy for a moment, so a release that dies
/// right after starting never takes healthy old tasks down with it (ECS counts it at once).
pub struct SettleRule {
    rolling_out: BTreeSet<String>,
    now: f64,
}

impl SettleRule {
    pub fn new(rec: &ServiceRecord, pass: &mut Pass) -> SettleRule {
        let rolling_out: BTreeSet<String> = rec
            .service
            .deployments
            .iter()
            .filter(|d| d.rollout_state.as_deref() == Some(rollout::IN_PROGRESS))
            .map(|d| d.id.clone())
            .collect();
        for t in pass.tasks {
            if rolling_out.contains(&t.deployment) {
                if let Some(since) = rec.internal.healthy_since.get(&t.id) {
                    if since + NEW_TASK_SETTLE_SECS > pass.now {
                        pass.acts.wake(since + NEW_TASK_SETTLE_SECS);
                    }
                }
            }
        }
        SettleRule {
            rolling_out,
            now: pass.now,
        }
    }

    pub fn counts_toward_minimum(
        &self,
        rec: &ServiceRecord,
        t: &TaskView,
        stopping: &BTreeSet<String>,
    ) -> bool {
        is_healthy(rec, t, stopping)
            && (!self.rolling_out.contains(&t.deployment)
                || rec
                    .internal
                    .healthy_since
                    .get(&t.id)
                    .is_some_and(|s| s + NEW_TASK_SETTLE_SECS <= self.now))
    }

    /// Healthy tasks above the minimum: how many healthy old tasks may stop now.
    fn allowance(&self, rec: &ServiceRecord, pass: &Pass, min_healthy: i64) -> i64 {
        pass.tasks
            .iter()
            .filter(|t| self.counts_toward_minimum(rec, t, &pass.stopping))
            .count() as i64
            - min_healthy
    }
}

/// The primary deployment and the rolling-update bounds of this pass.
struct Rollout {
    primary_id: String,
    primary_td: String,
    primary_failed: bool,
    /// (most tasks alive, fewest healthy)
    max_total: i64,
    min_healthy: i64,
    launch_allowed: bool,
}

/// Phase 6: what to stop and what to place, within the rolling-update bounds.
pub fn decide_stops_and_launches(
    rec: &ServiceRecord,
    pass: &mut Pass,
    instances: &[InstanceView],
    settle: &SettleRule,
) {
    let primary = &rec.service.deployments[0];
    let config = rec
        .service
        .deployment_configuration
        .clone()
        .unwrap_or_default();
    let (default_min, default_max) = if pass.daemon { (0, 100) } else { (100, 200) };
    let min_pct = config.minimum_healthy_percent.unwrap_or(default_min);
    let max_pct = config.maximum_percent.unwrap_or(default_max);
    let (max_total, min_healthy) = bounds(pass.desired, min_pct, max_pct);
    let primary_failed = primary.rollout_state.as_deref() == Some(rollout::FAILED);
    let launch_allowed =
        !primary_failed && !pass.draining && pass.now >= rec.internal.backoff.next_launch_at;
    if !primary_failed && !pass.draining && !launch_allowed {
        pass.acts.wake(rec.internal.backoff.next_launch_at);
    }
    let ro = Rollout {
        primary_id: primary.id.clone(),
        primary_td: primary.task_definition.clone(),
        primary_failed,
        max_total,
        min_healthy,
        launch_allowed,
    };

    // Tasks of deployments the service no longer has.
    let tasks = pass.tasks;
    let orphans: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.active() && !pass.known_deployments.contains(&t.deployment))
        .collect();
    for t in orphans {
        pass.stop(t, scaling_reason(&t.deployment));
    }
    if pass.daemon {
        plan_daemon(rec, pass, instances, settle, &ro);
    } else {
        plan_replica(rec, pass, settle, &ro);
    }
    if !pass.scheduler_stops.is_empty() {
        pass.events.push(format!(
            "(service {}) has stopped {} running tasks: {}.",
            pass.name,
            pass.scheduler_stops.len(),
            task_list(&pass.scheduler_stops)
        ));
    }
}

/// DAEMON: one primary task per eligible instance, replacing an old one only while enough
/// healthy tasks remain, and never two at once on an instance.
fn plan_daemon(
    rec: &ServiceRecord,
    pass: &mut Pass,
    instances: &[InstanceView],
    settle: &SettleRule,
    ro: &Rollout,
) {
    let tasks = pass.tasks;
    let eligible: BTreeSet<String> = pass.eligible.iter().cloned().collect();
    for t in tasks.iter().filter(|t| t.active()) {
        let placed_ok = t.instance.as_deref().is_some_and(|i| eligible.contains(i));
        if !placed_ok || pass.draining {
            pass.stop(t, scaling_reason(&t.deployment));
        }
    }
    let mut allowance = settle.allowance(rec, pass, ro.min_healthy);
    for inst in instances.iter().filter(|i| i.eligible) {
        let on: Vec<&TaskView> = tasks
            .iter()
            .filter(|t| t.live() && t.instance.as_deref() == Some(inst.arn.as_str()))
            .collect();
        let primaries: Vec<&TaskView> = on
            .iter()
            .copied()
            .filter(|t| staying(t, &pass.stopping) && t.deployment == ro.primary_id)
            .collect();
        for extra in primaries.iter().skip(1) {
            pass.stop(extra, scaling_reason(&ro.primary_id));
        }
        let olds: Vec<&TaskView> = on
            .iter()
            .copied()
            .filter(|t| staying(t, &pass.stopping) && t.deployment != ro.primary_id)
            .collect();
        if !primaries.is_empty() {
            for o in olds {
                pass.stop(o, scaling_reason(&ro.primary_id));
            }
            continue;
        }
        if ro.primary_failed || pass.draining {
            continue;
        }
        if !olds.is_empty() {
            for o in olds {
                if !pass.protected(o)
                    && may_stop(is_healthy(rec, o, &pass.stopping), &mut allowance)
                {
                    pass.stop(o, scaling_reason(&ro.primary_id));
                }
            }
            continue;
        }
        // One task per instance, never two at once: wait until the old one is gone.
        if on.is_empty() && ro.launch_allowed && inst.connected {
            pass.acts.launches.push(LaunchAction {
                deployment_id: ro.primary_id.clone(),
                task_definition: ro.primary_td.clone(),
                count: 1,
                instance: Some(inst.arn.clone()),
            });
        }
    }
}

/// REPLICA: scale the primary deployment to `desired` within `maximumPercent`, and shrink
/// the older ones (and move tasks off DRAINING instances) within `minimumHealthyPercent`.
fn plan_replica(rec: &ServiceRecord, pass: &mut Pass, settle: &SettleRule, ro: &Rollout) {
    let tasks = pass.tasks;
    // Scale in the primary deployment when it holds more than desired: pending tasks first,
    // then unhealthy ones, then the newest; protected tasks are passed over (they stay, above
    // the desired count, until their protection ends).
    let mut primary_active: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| staying(t, &pass.stopping) && pass.in_primary(t, &ro.primary_id))
        .collect();
    if primary_active.len() as i64 > pass.desired {
        let stopping = &pass.stopping;
        primary_active.sort_by(|a, b| {
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
        let excess = primary_active.len() - pass.desired.max(0) as usize;
        let (protected, free): (Vec<&TaskView>, Vec<&TaskView>) = primary_active
            .into_iter()
            .partition(|t| pass.is_protected(t));
        let short = excess.saturating_sub(free.len());
        for t in free.into_iter().take(excess) {
            pass.stop(t, scaling_reason(&ro.primary_id));
        }
        // Too few unprotected: the protected stay above the desired count for now.
        if short > 0 {
            for t in protected {
                pass.protected(t);
            }
        }
    }
    let primary_count = tasks
        .iter()
        .filter(|t| staying(t, &pass.stopping) && pass.in_primary(t, &ro.primary_id))
        .count() as i64;
    let live_total = tasks.iter().filter(|t| t.live()).count() as i64;
    if ro.launch_allowed {
        let want = pass.desired - primary_count;
        let room = ro.max_total - live_total;
        let n = want.min(room).min(MAX_LAUNCHES_PER_PASS);
        if n > 0 {
            pass.acts.launches.push(LaunchAction {
                deployment_id: ro.primary_id.clone(),
                task_definition: ro.primary_td.clone(),
                count: n as usize,
                instance: None,
            });
        }
    }
    // Shrink the older deployments (and move tasks off DRAINING instances): tasks that are
    // not healthy go at once, healthy ones only while enough healthy tasks remain.
    if !ro.primary_failed || pass.draining {
        let mut olds: Vec<&TaskView> = tasks
            .iter()
            .filter(|t| staying(t, &pass.stopping) && !pass.in_primary(t, &ro.primary_id))
            .collect();
        let stopping = &pass.stopping;
        olds.sort_by(|a, b| {
            is_healthy(rec, a, stopping)
                .cmp(&is_healthy(rec, b, stopping))
                .then(a.created_at.total_cmp(&b.created_at))
        });
        let mut allowance = settle.allowance(rec, pass, ro.min_healthy);
        for o in olds {
            if pass.protected(o) {
                continue;
            }
            if pass.draining || may_stop(is_healthy(rec, o, &pass.stopping), &mut allowance) {
                pass.stop(o, scaling_reason(&ro.primary_id));
            }
        }
    }
}

/// Phase 6b: say once which tasks protection keeps running (when that set changes).
pub fn note_protection(rec: &mut ServiceRecord, pass: &mut Pass) {
    if rec.internal.protection_held == pass.held {
        return;
    }
    rec.internal.protection_held = pass.held.clone();
    if pass.held.is_empty() {
        return;
    }
    let ids: Vec<String> = pass.held.iter().cloned().collect();
    pass.events.push(format!(
        "(service {}) was unable to stop {} tasks protected from scale-in: {}. They stop once their protection expires or is turned off.",
        pass.name,
        ids.len(),
        task_list(&ids)
    ));
}

/// Phase 7a: running and pending counts per deployment and for the service.
pub fn record_counts(rec: &mut ServiceRecord, pass: &Pass) {
    let mut per: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for t in pass.tasks.iter().filter(|t| staying(t, &pass.stopping)) {
        let e = per.entry(t.deployment.as_str()).or_default();
        if t.last_status == status::RUNNING {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let mut running_total = 0;
    let mut pending_total = 0;
    for (i, d) in rec.service.deployments.iter_mut().enumerate() {
        let (running, pending) = per.get(d.id.as_str()).copied().unwrap_or_default();
        running_total += running;
        pending_total += pending;
        let want = if i == 0 { pass.desired } else { 0 };
        if (d.running_count, d.pending_count, d.desired_count) != (running, pending, want) {
            d.running_count = running;
            d.pending_count = pending;
            d.desired_count = want;
            d.updated_at = pass.now;
        }
    }
    rec.service.running_count = running_total;
    rec.service.pending_count = pending_total;
}

/// Phase 7b: older deployments with nothing left go away; the service completes its rollout
/// and reaches a steady state once only healthy, settled primary tasks remain; otherwise the
/// rollout's reason says what it waits for.
pub fn record_rollout(rec: &mut ServiceRecord, pass: &mut Pass, stability_window: f64) {
    let tasks = pass.tasks;
    let now = pass.now;
    let primary_id = rec.service.deployments[0].id.clone();
    let primary_failed =
        rec.service.deployments[0].rollout_state.as_deref() == Some(rollout::FAILED);
    let live_by_deployment: BTreeMap<&str, usize> =
        tasks
            .iter()
            .filter(|t| t.live())
            .fold(BTreeMap::new(), |mut m, t| {
                *m.entry(t.deployment.as_str()).or_default() += 1;
                m
            });
    let before = rec.service.deployments.len();
    let primary_rolling_out =
        rec.service.deployments[0].rollout_state.as_deref() == Some(rollout::IN_PROGRESS);
    let keep: Vec<bool> = rec
        .service
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            // A failed deployment stays visible (rolloutState FAILED) until the service is
            // steady again, so clients watching the rollout see why it ended.
            // Drained older deployments also stay while the primary is still rolling out, so
            // `services-stable` (one deployment) cannot succeed before it is COMPLETED.
            i == 0
                || live_by_deployment.get(d.id.as_str()).copied().unwrap_or(0) > 0
                || d.rollout_state.as_deref() == Some(rollout::FAILED)
                || primary_rolling_out
        })
        .collect();
    let mut idx = 0;
    rec.service.deployments.retain(|_| {
        idx += 1;
        keep[idx - 1]
    });
    if rec.service.deployments.len() != before {
        let ids: BTreeSet<String> = rec
            .service
            .deployments
            .iter()
            .map(|d| d.id.clone())
            .collect();
        rec.internal.deployments.retain(|d| ids.contains(&d.id));
    }
    let primary_tasks: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| staying(t, &pass.stopping) && pass.in_primary(t, &primary_id))
        .collect();
    let others_live = tasks
        .iter()
        .any(|t| t.live() && (!pass.in_primary(t, &primary_id) || pass.stopping.contains(&t.id)));
    let all_settled = primary_tasks.len() as i64 == pass.desired
        && primary_tasks.iter().all(|t| {
            is_healthy(rec, t, &pass.stopping)
                && rec
                    .internal
                    .healthy_since
                    .get(&t.id)
                    .is_some_and(|s| s + stability_window <= now)
        });
    let steady = (pass.draining || !primary_failed)
        && !others_live
        && all_settled
        && pass.acts.launches.is_empty()
        && pass.acts.stops.is_empty();
    let name = pass.name.clone();
    if steady {
        rec.service.deployments.truncate(1);
        rec.internal.deployments.retain(|d| d.id == primary_id);
        if pass.draining {
            // A deleted service's last rollout did not complete: it was stopped.
            stop_history(rec, now, "The service was deleted.");
            rec.service.status = status::INACTIVE.into();
            rec.internal.inactive_at = Some(now);
        } else {
            complete_primary(rec, now, &mut pass.events);
        }
        if !pass.draining && !rec.internal.steady {
            pass.events
                .push(format!("(service {name}) has reached a steady state."));
        }
        rec.internal.steady = true;
    } else {
        rec.internal.steady = false;
        // Say why a rollout whose tasks all run is not COMPLETED yet.
        let settling = !primary_failed
            && !others_live
            && primary_tasks.len() as i64 == pass.desired
            && primary_tasks
                .iter()
                .all(|t| is_healthy(rec, t, &pass.stopping));
        let reason = if settling {
            format!(
                "ECS deployment in progress: all tasks are healthy; it completes once they have stayed healthy for {stability_window}s."
            )
        } else {
            IN_PROGRESS_REASON.to_string()
        };
        let d = &mut rec.service.deployments[0];
        if d.rollout_state.as_deref() == Some(rollout::IN_PROGRESS)
            && d.rollout_state_reason.as_deref() != Some(reason.as_str())
            && d.rollout_state_reason
                .as_deref()
                .is_none_or(|r| r.starts_with("ECS deployment in progress"))
        {
            d.rollout_state_reason = Some(reason);
        }
    }
}

/// `(task a) (task b)`, as ECS lists tasks in events.
pub fn task_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A task of `deployment` failed: count it for the deployment, the circuit breaker (while the
/// deployment is rolling out) and the start back-off.
fn record_failure(
    rec: &mut ServiceRecord,
    deployment: &str,
    health: bool,
    now: f64,
    events: &mut Vec<String>,
) {
    let name = rec.name().to_string();
    if let Some(d) = rec
        .service
        .deployments
        .iter_mut()
        .find(|d| d.id == deployment)
    {
        d.failed_tasks += 1;
        d.updated_at = now;
        if d.rollout_state.as_deref() == Some(rollout::IN_PROGRESS) {
            if let Some(di) = rec.internal_of_mut(deployment) {
                di.breaker_failures += 1;
                if health {
                    di.health_failures += 1;
                }
            }
        }
    }
    let b = &mut rec.internal.backoff;
    b.consecutive_failures += 1;
    if b.consecutive_failures >= BACKOFF_AFTER {
        let exp = (b.consecutive_failures - BACKOFF_AFTER).min(16);
        let delay = (2f64.powi(exp as i32)).min(BACKOFF_MAX_SECS);
        b.next_launch_at = now + delay;
        if b.consecutive_failures == BACKOFF_AFTER || b.consecutive_failures.is_multiple_of(10) {
            events.push(format!(
                "(service {name}) is unable to consistently start tasks successfully. {TROUBLESHOOTING}"
            ));
        }
    }
}

fn check_breaker(rec: &mut ServiceRecord, desired: i64, now: f64, events: &mut Vec<String>) {
    let Some(breaker) = rec
        .service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.clone())
    else {
        return;
    };
    let name = rec.name().to_string();
    let primary = rec.service.deployments[0].clone();
    let Some(pi) = rec.internal_of(&primary.id).cloned() else {
        return;
    };
    let threshold = breaker_threshold(&breaker, desired);
    if let Some(h) = rec.history_mut(&pi.service_deployment_arn) {
        let state = BreakerState {
            status: if !breaker.enable {
                "DISABLED".into()
            } else if primary.rollout_state.as_deref() == Some(rollout::IN_PROGRESS) {
                "MONITORING".into()
            } else {
                h.deployment_circuit_breaker.status.clone()
            },
            failure_count: pi.breaker_failures,
            threshold,
        };
        if h.deployment_circuit_breaker.status != "TRIGGERED"
            && h.deployment_circuit_breaker != state
        {
            h.deployment_circuit_breaker = state;
            h.updated_at = now;
        }
    }
    if !breaker.enable
        || primary.rollout_state.as_deref() != Some(rollout::IN_PROGRESS)
        || pi.breaker_failures < threshold
    {
        return;
    }
    let what = if pi.health_failures * 2 > pi.breaker_failures {
        "tasks failed health checks"
    } else {
        "tasks failed to start"
    };
    {
        let d = &mut rec.service.deployments[0];
        d.rollout_state = Some(rollout::FAILED.into());
        d.rollout_state_reason = Some(format!("ECS deployment circuit breaker: {what}."));
        d.updated_at = now;
    }
    events.push(format!(
        "(service {name}) (deployment {}) deployment failed: {what}.",
        primary.id
    ));
    let target = rec
        .internal
        .last_completed_revision
        .clone()
        .filter(|r| *r != pi.revision_arn && breaker.rollback && !pi.is_rollback);
    if let Some(h) = rec.history_mut(&pi.service_deployment_arn) {
        h.deployment_circuit_breaker.status = "TRIGGERED".into();
        h.deployment_circuit_breaker.failure_count = pi.breaker_failures;
        h.updated_at = now;
        h.status_reason = Some(format!("ECS deployment circuit breaker: {what}."));
        if pi.is_rollback {
            h.status = deployment_status::ROLLBACK_FAILED.into();
            h.finished_at = Some(now);
        } else if target.is_some() {
            h.status = deployment_status::ROLLBACK_IN_PROGRESS.into();
        } else {
            h.status = deployment_status::STOPPED.into();
            h.stopped_at = Some(now);
        }
    }
    if let Some(target) = target {
        rollback_to(
            rec,
            &target,
            &pi.service_deployment_arn,
            "Circuit breaker triggered",
            now,
            events,
        );
    }
}

/// Make the service run `revision` again, as the PRIMARY deployment: an older deployment of
/// that revision still holding tasks is promoted back (its tasks stay), otherwise a new
/// deployment starts. The rollback is recorded on `history_arn`.
pub fn rollback_to(
    rec: &mut ServiceRecord,
    revision: &str,
    history_arn: &str,
    reason: &str,
    now: f64,
    events: &mut Vec<String>,
) {
    let name = rec.name().to_string();
    let Some(rev) = rec.revision(revision).cloned() else {
        return;
    };
    let desired = rec.service.desired_count;
    let existing = rec
        .service
        .deployments
        .iter()
        .skip(1)
        .position(|d| {
            rec.internal_of(&d.id)
                .is_some_and(|di| di.revision_arn == revision)
        })
        .map(|p| p + 1);
    let id = match existing {
        Some(pos) => {
            let mut d = rec.service.deployments.remove(pos);
            d.rollout_state = Some(rollout::IN_PROGRESS.into());
            d.rollout_state_reason = Some("ECS deployment circuit breaker: rolling back.".into());
            d.updated_at = now;
            let id = d.id.clone();
            rec.service.deployments.insert(0, d);
            if let Some(di) = rec.internal_of_mut(&id) {
                di.service_deployment_arn = history_arn.to_string();
                di.is_rollback = true;
                di.breaker_failures = 0;
                di.health_failures = 0;
            }
            id
        }
        None => {
            let has_health_check = rec.internal.health_checked_revisions.contains(revision);
            let d = new_deployment(
                deployment_id_of_revision(revision),
                &rev.task_definition,
                rev.launch_type.clone(),
                &rev.extra,
                rec.service.desired_count,
                now,
            );
            let id = d.id.clone();
            rec.service.deployments.insert(0, d);
            rec.internal.deployments.push(DeploymentInternal {
                id: id.clone(),
                revision_arn: revision.to_string(),
                service_deployment_arn: history_arn.to_string(),
                has_health_check,
                is_rollback: true,
                ..Default::default()
            });
            id
        }
    };
    for d in rec.service.deployments.iter_mut().skip(1) {
        if d.status != ACTIVE {
            d.status = ACTIVE.into();
            d.updated_at = now;
        }
    }
    {
        let d = &mut rec.service.deployments[0];
        d.status = PRIMARY.into();
        d.desired_count = desired;
    }
    rec.service.task_definition = Some(rev.task_definition.clone());
    for member in crate::state::service_record::REVISION_MEMBERS {
        match rev.extra.get(*member) {
            Some(v) => {
                rec.service.extra.insert(member.to_string(), v.clone());
            }
            None => {
                rec.service.extra.remove(*member);
            }
        }
    }
    rec.internal.steady = false;
    rec.internal.backoff = Default::default();
    if let Some(h) = rec.history_mut(history_arn) {
        h.rollback = Some(RollbackInfo {
            reason: reason.to_string(),
            started_at: now,
            service_revision_arn: revision.to_string(),
        });
        h.status = deployment_status::ROLLBACK_IN_PROGRESS.into();
        h.updated_at = now;
    }
    events.push(format!("(service {name}) rolling back to deployment {id}."));
}

/// A fresh deployment entry `id` (PRIMARY, IN_PROGRESS) for `task_definition`, carrying the
/// launch settings found in `settings` (the service's members, or a revision's): those a task
/// is launched with, and those ECS reports per deployment rather than per service (Terraform's
/// provider reads `serviceConnectConfiguration`, `volumeConfigurations` and
/// `vpcLatticeConfigurations` from the primary deployment).
pub fn new_deployment(
    id: String,
    task_definition: &str,
    launch_type: Option<String>,
    settings: &gantry_model::types::Extra,
    desired_count: i64,
    now: f64,
) -> Deployment {
    let mut extra = gantry_model::types::Extra::new();
    for member in [
        "capacityProviderStrategy",
        "platformVersion",
        "networkConfiguration",
        "serviceConnectConfiguration",
        "volumeConfigurations",
        "vpcLatticeConfigurations",
    ] {
        if let Some(v) = settings.get(member) {
            extra.insert(member.to_string(), v.clone());
        }
    }
    Deployment {
        id,
        status: PRIMARY.into(),
        task_definition: task_definition.to_string(),
        desired_count,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        created_at: now,
        updated_at: now,
        launch_type,
        rollout_state: Some(rollout::IN_PROGRESS.into()),
        rollout_state_reason: Some(IN_PROGRESS_REASON.into()),
        extra,
    }
}

/// The id of the deployment of service revision `revision_arn`: `ecs-svc/` and the revision's
/// own 19-digit number, as on AWS, where the two share it (Terraform's provider v6 finds the
/// service deployment to wait for by that number). Tasks carry it as `startedBy`.
pub fn deployment_id_of_revision(revision_arn: &str) -> String {
    format!("ecs-svc/{}", gantry_model::arn::last_segment(revision_arn))
}

/// A random 19-digit number, the shape of ECS's deployment and service revision ids.
pub fn new_numeric_id() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 9_000_000_000_000_000_000;
    (1_000_000_000_000_000_000u128 + n).to_string()
}

fn complete_primary(rec: &mut ServiceRecord, now: f64, events: &mut Vec<String>) {
    let name = rec.name().to_string();
    let d = &mut rec.service.deployments[0];
    if d.rollout_state.as_deref() != Some(rollout::IN_PROGRESS) {
        return;
    }
    d.rollout_state = Some(rollout::COMPLETED.into());
    d.rollout_state_reason = Some(format!("ECS deployment {} completed.", d.id));
    d.updated_at = now;
    let id = d.id.clone();
    events.push(format!(
        "(service {name}) (deployment {id}) deployment completed."
    ));
    let Some(di) = rec.internal_of(&id).cloned() else {
        return;
    };
    rec.internal.last_completed_revision = Some(di.revision_arn.clone());
    if let Some(h) = rec.history_mut(&di.service_deployment_arn) {
        h.status = if di.is_rollback {
            deployment_status::ROLLBACK_SUCCESSFUL.into()
        } else {
            deployment_status::SUCCESSFUL.into()
        };
        h.finished_at = Some(now);
        h.updated_at = now;
        if h.deployment_circuit_breaker.status == "MONITORING" {
            h.deployment_circuit_breaker.status = "MONITORING_COMPLETE".into();
        }
    }
}

/// Close the current deployment's history entry as STOPPED if it is still open.
fn stop_history(rec: &mut ServiceRecord, now: f64, reason: &str) {
    let Some(arn) = rec
        .primary()
        .and_then(|d| rec.internal_of(&d.id))
        .map(|d| d.service_deployment_arn.clone())
    else {
        return;
    };
    if let Some(h) = rec.history_mut(&arn) {
        if is_open(&h.status) {
            h.status = deployment_status::STOPPED.into();
            h.status_reason = Some(reason.to_string());
            h.stopped_at = Some(now);
            h.updated_at = now;
        }
    }
}

/// Whether a service deployment has not finished yet.
pub fn is_open(status: &str) -> bool {
    matches!(
        status,
        deployment_status::PENDING
            | deployment_status::IN_PROGRESS
            | deployment_status::ROLLBACK_REQUESTED
            | deployment_status::ROLLBACK_IN_PROGRESS
            | deployment_status::STOP_REQUESTED
    )
}

/// Keep the history entry of the current deployment's task counts current.
fn update_history_counts(rec: &mut ServiceRecord) {
    let Some(primary) = rec.service.deployments.first().cloned() else {
        return;
    };
    let Some(di) = rec.internal_of(&primary.id).cloned() else {
        return;
    };
    rec.service.current_service_deployment = Some(di.service_deployment_arn.clone());
    let sources: Vec<(String, i64, i64)> = rec
        .service
        .deployments
        .iter()
        .skip(1)
        .filter_map(|d| {
            let r = rec.internal_of(&d.id)?;
            Some((r.revision_arn.clone(), d.running_count, d.pending_count))
        })
        .collect();
    if let Some(h) = rec.history_mut(&di.service_deployment_arn) {
        // A rollback shares the failed deployment's entry, whose target stays the revision
        // that failed; only a deployment's own target gets its counts.
        let t = &mut h.target_service_revision;
        if t.arn != di.revision_arn {
            return;
        }
        t.requested_task_count = primary.desired_count;
        t.running_task_count = primary.running_count;
        t.pending_task_count = primary.pending_count;
        for s in h.source_service_revisions.iter_mut() {
            let (running, pending) = sources
                .iter()
                .find(|(arn, _, _)| *arn == s.arn)
                .map(|(_, r, p)| (*r, *p))
                .unwrap_or((0, 0));
            s.requested_task_count = 0;
            s.running_task_count = running;
            s.pending_task_count = pending;
        }
    }
}
