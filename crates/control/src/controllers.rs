//! Starts every controller of the control plane on the controller runtime
//! (`gantry-runtime`) and connects each to the state cache: the cache tells each controller
//! which of its keys a change concerns, and the runtime de-duplicates, bounds concurrency,
//! backs off per key and isolates panics.
//!
//! | controller | key | woken by |
//! | --- | --- | --- |
//! | `services` | (cluster, service) | its record, its tasks, freed room, instance changes |
//! | `agent-channels` | instance ARN | a change to a task on the instance the agent must hear |
//! | `lost-hosts` | (cluster, instance id) | an agent disconnecting; then its own timer |
//! | `janitor` | () | its resync, every minute |

use crate::agent_channel::{wakes_channel, ChannelFanout};
use crate::janitor::{self, Janitor};
use crate::lost_hosts::LostHostDetector;
use crate::plane::{ControlPlane, ControllerHandles};
use crate::services::reconciler::{self, ServiceScheduler};
use crate::state::cache::Change;
use gantry_model::arn::last_segment;
use gantry_runtime::{spawn, Controller, ControllerConfig, Handle, Metrics};
use std::sync::Arc;
use std::time::Duration;

/// The running controllers; dropping it stops them.
pub struct Controllers {
    _running: Vec<Controller>,
    metrics: Vec<Box<dyn Fn() -> Metrics + Send + Sync>>,
}

impl Controllers {
    /// Queue depth, reconcile counts and latency of every controller.
    pub fn metrics(&self) -> Vec<Metrics> {
        self.metrics.iter().map(|m| m()).collect()
    }
}

fn config(name: &'static str, workers: usize, resync: Option<Duration>) -> ControllerConfig {
    ControllerConfig {
        workers,
        resync,
        ..ControllerConfig::new(name)
    }
}

fn metrics_of<K: Send + Sync + Clone + Eq + std::hash::Hash + Ord + 'static>(
    handle: &Handle<K>,
) -> Box<dyn Fn() -> Metrics + Send + Sync> {
    let h = handle.clone();
    Box::new(move || h.metrics())
}

pub fn start(plane: &Arc<ControlPlane>) -> Controllers {
    let weak = Arc::downgrade(plane);

    let services = Arc::new(ServiceScheduler::new(weak.clone()));
    let (services_q, services_c) = spawn(
        config("services", 4, Some(reconciler::RESYNC)),
        services.clone(),
    );
    let (channels_q, channels_c) = spawn(
        config("agent-channels", 4, Some(Duration::from_secs(30))),
        Arc::new(ChannelFanout::new(weak.clone())),
    );
    let (lost_q, lost_c) = spawn(
        config("lost-hosts", 2, Some(Duration::from_secs(30))),
        Arc::new(LostHostDetector {
            plane: weak.clone(),
        }),
    );
    let (janitor_q, janitor_c) = spawn(
        config("janitor", 1, Some(janitor::SWEEP_EVERY)),
        Arc::new(Janitor {
            plane: weak.clone(),
        }),
    );

    let _ = plane.controllers.set(ControllerHandles {
        channels: channels_q.clone(),
    });

    {
        let (services_q, channels_q, lost_q) =
            (services_q.clone(), channels_q.clone(), lost_q.clone());
        let weak = weak.clone();
        plane.cache.listen(Box::new(move |change: &Change| {
            let Some(plane) = weak.upgrade() else { return };
            services_q.enqueue_many(services.concerned(&plane, change));
            match change {
                Change::Task { old, new, .. } => {
                    channels_q.enqueue_many(wakes_channel(
                        old.as_deref().map(|e| &e.value),
                        new.as_deref().map(|e| &e.value),
                    ));
                }
                Change::Instance {
                    cluster,
                    new: Some(new),
                    ..
                } if !new.value.agent_connected => {
                    if let Some(arn) = &new.value.container_instance_arn {
                        lost_q.enqueue((cluster.clone(), last_segment(arn).to_string()));
                    }
                }
                Change::Resynced => {
                    let connected: Vec<String> = plane
                        .connections
                        .lock()
                        .map(|c| c.keys().cloned().collect())
                        .unwrap_or_default();
                    channels_q.enqueue_many(connected);
                }
                _ => {}
            }
        }));
    }
    // Everything that exists now gets a first look; after that, changes and resyncs.
    services_q.enqueue_many(plane.cache.service_keys());
    lost_q.enqueue_many(
        plane
            .cache
            .all_instances()
            .into_iter()
            .filter(|(_, i)| !i.value.agent_connected)
            .filter_map(|(c, i)| {
                Some((
                    c,
                    last_segment(i.value.container_instance_arn.as_deref()?).to_string(),
                ))
            }),
    );
    janitor_q.enqueue(());

    Controllers {
        metrics: vec![
            metrics_of(&services_q),
            metrics_of(&channels_q),
            metrics_of(&lost_q),
            metrics_of(&janitor_q),
        ],
        _running: vec![services_c, channels_c, lost_c, janitor_c],
    }
}
