//! Lost hosts: an instance whose agent stays disconnected longer than the grace period
//! (`ControlConfig::lost_host_after_secs`, 60 s by default) is declared lost. Its
//! `healthStatus.overallStatus` turns IMPAIRED with a `statusReason` saying so (it already gets
//! no placements: the scheduler refuses instances whose agent is disconnected), and every task
//! on it that is not STOPPED is stopped in the record at once — `lastStatus: STOPPED`, stop
//! code `TerminationNotice` (ECS's code for a task whose host went away), a `stoppedReason`
//! that names the instance and how long its agent has been gone. Services replace them on
//! other instances in the same pass as any other stop.
//!
//! When the agent comes back, its channel's desired state no longer lists those tasks, so the
//! agent stops their containers: a task never runs twice after the grace period.
//!
//! A controller keyed by instance: woken when an agent disconnects, it sleeps (requeue-after)
//! until the grace period ends, then acts if the agent is still gone. Idempotent: running it
//! again finds nothing left to stop.

use crate::plane::ControlPlane;
use crate::state::records::{is_lost, mark_stopped, TaskRecord, IMPAIRED};
use crate::state::repo;
use gantry_model::types::{
    ContainerInstance, ContainerInstanceHealthStatus, InstanceHealthCheckResult,
};
use gantry_model::{now_epoch, status, stop_code};
use gantry_runtime::{Action, ReconcileError, Reconciler};
use std::sync::Weak;
use std::time::Duration;

pub struct LostHostDetector {
    pub plane: Weak<ControlPlane>,
}

/// (cluster, instance id)
pub type InstanceKey = (String, String);

fn seconds(secs: f64) -> String {
    format!("{} s", secs.round() as i64)
}

impl Reconciler for LostHostDetector {
    type Key = InstanceKey;

    async fn reconcile(&self, key: &InstanceKey) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let (cluster, id) = key;
        let Some(entry) = plane.cache.instance(cluster, id) else {
            return Ok(Action::Done);
        };
        let ci = &entry.value;
        if ci.agent_connected || ci.status.as_deref() == Some(status::INACTIVE) {
            return Ok(Action::Done);
        }
        let now = now_epoch();
        let grace = plane.config.lost_host_after_secs;
        let gone_for = ci
            .agent_disconnected_at
            .map_or(0.0, |at| (now - at).max(0.0));
        if gone_for < grace {
            return Ok(Action::RequeueAfter(Duration::from_secs_f64(
                (grace - gone_for).max(0.01),
            )));
        }
        let arn = ci.container_instance_arn.clone().unwrap_or_default();
        let reason = format!(
            "Container instance {id} was lost: its agent has been disconnected for {} (longer than {}).",
            seconds(gone_for),
            seconds(grace)
        );
        if !is_lost(ci) {
            tracing::warn!(instance = %arn, "{reason} Stopping its tasks.");
            let instance_reason = format!(
                "Agent disconnected for more than {}: instance lost, its tasks stopped.",
                seconds(grace)
            );
            repo::update::<ContainerInstance, _>(
                &*plane.store,
                &repo::instance_key(cluster, id),
                |ci| {
                    if ci.agent_connected {
                        return Ok(());
                    }
                    ci.status_reason = Some(instance_reason.clone());
                    ci.health_status = Some(ContainerInstanceHealthStatus {
                        overall_status: Some(IMPAIRED.into()),
                        details: vec![InstanceHealthCheckResult {
                            kind: Some("CONTAINER_RUNTIME".into()),
                            status: Some(IMPAIRED.into()),
                            last_updated: Some(now),
                            last_status_change: Some(now),
                        }],
                    });
                    Ok(())
                },
            )
            .await
            .map_err(|e| ReconcileError(e.message))?;
        }
        // The agent may come back while this runs, to this replica or another: each stop is
        // guarded by the instance record as read now, disconnected (a reconnect through any
        // replica rewrites it), and by this replica's own open channels.
        let instance_key = repo::instance_key(cluster, id);
        let Some((fresh, instance_rev)) =
            repo::get::<ContainerInstance>(&*plane.store, &instance_key)
                .await
                .map_err(|e| ReconcileError(e.message))?
        else {
            return Ok(Action::Done);
        };
        if fresh.agent_connected {
            return Ok(Action::Done);
        }
        let reconnected = || {
            plane
                .connections
                .lock()
                .map(|c| c.contains_key(&arn))
                .unwrap_or(false)
        };
        for task in plane.cache.tasks_on_instance(&arn) {
            if !task.value.holds_resources() {
                continue;
            }
            if reconnected() {
                tracing::info!(instance = %arn, "agent back while its tasks were being stopped; leaving the rest");
                return Ok(Action::Done);
            }
            // A Fargate pool host's tasks belong to their users' clusters.
            let task_cluster = match task.value.cluster_name() {
                "" => cluster,
                c => c,
            };
            let task_key = repo::task_key(task_cluster, task.value.id());
            let Some((mut rec, task_rev)) = repo::get::<TaskRecord>(&*plane.store, &task_key)
                .await
                .map_err(|e| ReconcileError(e.message))?
            else {
                continue;
            };
            let t = &mut rec.task;
            if t.last_status.as_deref() == Some(status::STOPPED) {
                continue;
            }
            // The host's own stop reason wins over an earlier request: it is what actually
            // ended the task.
            t.stop_code = Some(stop_code::TERMINATION_NOTICE.into());
            t.stopped_reason = Some(reason.clone());
            mark_stopped(t, None, now);
            let put = repo::put_op(&task_key, &rec).map_err(|e| ReconcileError(e.message))?;
            let stopped = repo::commit(
                &*plane.store,
                vec![
                    repo::unchanged_since(&instance_key, instance_rev),
                    repo::unchanged_since(&task_key, task_rev),
                ],
                vec![put],
            )
            .await
            .map_err(|e| ReconcileError(e.message))?;
            if !stopped {
                // The instance or the task changed meanwhile (perhaps the agent is back):
                // look again from the start.
                return Ok(Action::RequeueAfter(Duration::from_millis(50)));
            }
        }
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<InstanceKey>, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Vec::new());
        };
        Ok(plane
            .cache
            .all_instances()
            .into_iter()
            .filter(|(_, i)| !i.value.agent_connected)
            .filter_map(|(c, i)| {
                let arn = i.value.container_instance_arn.as_deref()?;
                Some((c, gantry_model::arn::last_segment(arn).to_string()))
            })
            .collect())
    }
}
