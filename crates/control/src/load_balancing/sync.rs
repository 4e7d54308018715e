//! Compiling ELBv2 records into the data plane's configuration, one object at a time, and the
//! controllers that put them there.

use crate::plane::ControlPlane;
use gantry_model::elbv2::{ListenerConfig, TargetGroupConfig};
use gantry_runtime::{Action, ReconcileError, Reconciler};
use std::sync::Weak;
use std::time::Duration;

/// A target group's `deregistration_delay.timeout_seconds`, when the group exists.
pub fn deregistration_delay(plane: &ControlPlane, target_group_arn: &str) -> Option<Duration> {
    compile_target_group(plane, target_group_arn).map(|g| g.deregistration_delay)
}

/// The group as the data plane serves it: its settings, the targets registered through the
/// API and those its services' tasks contribute. `None` when the group does not exist.
pub fn compile_target_group(
    plane: &ControlPlane,
    target_group_arn: &str,
) -> Option<TargetGroupConfig> {
    let _ = (plane, target_group_arn);
    None
}

/// The listener as the data plane serves it, rules compiled. `None` when it does not exist.
pub fn compile_listener(plane: &ControlPlane, listener_arn: &str) -> Option<ListenerConfig> {
    let _ = (plane, listener_arn);
    None
}

/// Puts one target group (settings and targets) into the data plane, or removes it.
pub struct TargetGroupSync {
    pub plane: Weak<ControlPlane>,
}

impl Reconciler for TargetGroupSync {
    type Key = String;

    async fn reconcile(&self, arn: &String) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let Some(data_plane) = plane.load_balancer_data_plane() else {
            return Ok(Action::Done);
        };
        match compile_target_group(&plane, arn) {
            Some(group) => {
                let targets = group.targets.clone();
                data_plane.put_target_group(group);
                plane.targets.mark_served(arn, &targets);
            }
            None => {
                data_plane.remove_target_group(arn);
                if let Some(handles) = plane.controllers.get() {
                    handles
                        .channels
                        .enqueue_many(plane.targets.group_removed(arn));
                }
            }
        }
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<String>, ReconcileError> {
        Ok(Vec::new())
    }
}

/// Puts one listener (port and rules) into the data plane, or removes it.
pub struct ListenerSync {
    pub plane: Weak<ControlPlane>,
}

impl Reconciler for ListenerSync {
    type Key = String;

    async fn reconcile(&self, arn: &String) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let Some(data_plane) = plane.load_balancer_data_plane() else {
            return Ok(Action::Done);
        };
        match compile_listener(&plane, arn) {
            Some(listener) => {
                if let Err(e) = data_plane.put_listener(listener) {
                    // The port was free when the listener was created; something else took
                    // it since. Try again later rather than give the port up for good.
                    return Err(ReconcileError(format!(
                        "listener {arn} cannot serve port {}: {}",
                        e.port, e.message
                    )));
                }
            }
            None => data_plane.remove_listener(arn),
        }
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<String>, ReconcileError> {
        Ok(Vec::new())
    }
}
