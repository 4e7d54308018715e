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
//! | `task-keys` | task ARN | a task stopping or going away; its resync lists tasks holding role keys |
//! | `lb-service-targets`, `lb-target-groups`, `lb-listeners` | see `load_balancing::controllers` | only with a data plane |
//!
//! With replicas on etcd (`replicas.rs`), `services`, `lost-hosts`, `task-keys` and the
//! janitor's sweep act only on the leading replica, their writes fenced on its leadership
//! ([`LeaderOnly`]); a replica that becomes leader gives each of them a first look at
//! everything. The agent channels and the load balancer's controllers serve this replica's
//! own connections and data plane, so they run on every replica.

use crate::agent_channel::{wakes_channel, ChannelFanout};
use crate::janitor::{self, Janitor};
use crate::load_balancing::controllers::ServiceTargets;
use crate::load_balancing::sync::{ListenerSync, TargetGroupSync};
use crate::lost_hosts::LostHostDetector;
use crate::plane::{ControlPlane, ControllerHandles};
use crate::services::reconciler::{self, ServiceScheduler};
use crate::state::cache::Change;
use crate::state::replica::Leadership;
use crate::task_credentials::TaskKeyRevoker;
use gantry_model::arn::last_segment;
use gantry_runtime::{
    spawn, Action, Controller, ControllerConfig, Handle, Metrics, ReconcileError, Reconciler,
};
use std::sync::Arc;
use std::time::Duration;

/// The running controllers; dropping it stops them.
pub struct Controllers {
    _running: Vec<Controller>,
}

/// A controller that decides, run only by the leading replica: a follower's reconcile does
/// nothing (a new leader looks at every key), a leader's runs fenced on its leadership.
pub struct LeaderOnly<R> {
    inner: Arc<R>,
    plane: std::sync::Weak<ControlPlane>,
}

impl<R> LeaderOnly<R> {
    fn new(inner: Arc<R>, plane: std::sync::Weak<ControlPlane>) -> Arc<Self> {
        Arc::new(LeaderOnly { inner, plane })
    }
}

impl<R: Reconciler> Reconciler for LeaderOnly<R> {
    type Key = R::Key;

    async fn reconcile(&self, key: &Self::Key) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        match plane.as_leader(self.inner.reconcile(key)).await {
            Ok(Some(result)) => result,
            Ok(None) => Ok(Action::Done),
            Err(e) => Err(ReconcileError(e)),
        }
    }

    async fn list(&self) -> Result<Vec<Self::Key>, ReconcileError> {
        let following = self
            .plane
            .upgrade()
            .is_none_or(|p| p.replica.leadership() == Leadership::Following);
        if following {
            return Ok(Vec::new());
        }
        self.inner.list().await
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
        LeaderOnly::new(services.clone(), weak.clone()),
    );
    let (channels_q, channels_c) = spawn(
        config("agent-channels", 4, Some(Duration::from_secs(30))),
        Arc::new(ChannelFanout::new(weak.clone())),
    );
    let (lost_q, lost_c) = spawn(
        config("lost-hosts", 2, Some(Duration::from_secs(30))),
        LeaderOnly::new(
            Arc::new(LostHostDetector {
                plane: weak.clone(),
            }),
            weak.clone(),
        ),
    );
    let (janitor_q, janitor_c) = spawn(
        config("janitor", 1, Some(janitor::SWEEP_EVERY)),
        Arc::new(Janitor {
            plane: weak.clone(),
        }),
    );
    let (task_keys_q, task_keys_c) = spawn(
        config("task-keys", 1, Some(Duration::from_secs(60))),
        LeaderOnly::new(
            Arc::new(TaskKeyRevoker {
                plane: weak.clone(),
            }),
            weak.clone(),
        ),
    );

    // The load balancer's controllers run only where a data plane is served.
    let (groups_q, groups_c) = spawn(
        config("lb-target-groups", 2, Some(Duration::from_secs(60))),
        Arc::new(TargetGroupSync {
            plane: weak.clone(),
        }),
    );
    let (listeners_q, listeners_c) = spawn(
        config("lb-listeners", 2, Some(Duration::from_secs(60))),
        Arc::new(ListenerSync {
            plane: weak.clone(),
        }),
    );
    let (service_targets_q, service_targets_c) = spawn(
        config("lb-service-targets", 2, Some(Duration::from_secs(30))),
        Arc::new(ServiceTargets {
            plane: weak.clone(),
            groups: groups_q.clone(),
        }),
    );
    let serves_load_balancers = plane.load_balancer_data_plane().is_some();

    let _ = plane.controllers.set(ControllerHandles {
        channels: channels_q.clone(),
        services: services_q.clone(),
        metrics: vec![
            metrics_of(&services_q),
            metrics_of(&channels_q),
            metrics_of(&lost_q),
            metrics_of(&janitor_q),
            metrics_of(&task_keys_q),
            metrics_of(&groups_q),
            metrics_of(&listeners_q),
            metrics_of(&service_targets_q),
        ],
    });

    if let Some(data_plane) = plane.load_balancer_data_plane() {
        tokio::spawn(crate::load_balancing::follow::follow(
            weak.clone(),
            crate::load_balancing::follow::Queues {
                target_groups: groups_q.clone(),
                listeners: listeners_q.clone(),
            },
        ));
        // Target health: the services whose tasks' targets changed state re-plan (a target
        // turning healthy lets a rollout go on), and a stop held for draining goes ahead.
        let (services_q, channels_q) = (services_q.clone(), channels_q.clone());
        let weak = weak.clone();
        data_plane.observe_health(Box::new(move |report| {
            let Some(plane) = weak.upgrade() else { return };
            let effect = plane.targets.on_health(report);
            if let Some(service) = effect.service {
                services_q.enqueue(service);
            }
            if let Some(instance) = effect.release_on {
                channels_q.enqueue(instance);
            }
        }));
    }

    {
        let (services_q, channels_q, lost_q, service_targets_q, task_keys_q) = (
            services_q.clone(),
            channels_q.clone(),
            lost_q.clone(),
            service_targets_q.clone(),
            task_keys_q.clone(),
        );
        let weak = weak.clone();
        plane.cache.listen(Box::new(move |change: &Change| {
            let Some(plane) = weak.upgrade() else { return };
            services_q.enqueue_many(services.concerned(&plane, change));
            if serves_load_balancers {
                service_targets_q.enqueue_many(ServiceTargets::concerned(&plane, change));
            }
            match change {
                Change::Task { old, new, .. } => {
                    let (old, new) = (
                        old.as_deref().map(|e| &e.value),
                        new.as_deref().map(|e| &e.value),
                    );
                    channels_q.enqueue_many(wakes_channel(old, new));
                    if let Some(task) = TaskKeyRevoker::concerned(old, new) {
                        task_keys_q.enqueue(task);
                    }
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
                // A deregistered instance's open channel is cut off by the fan-out.
                Change::Instance {
                    old: Some(old),
                    new,
                    ..
                } if new.as_ref().is_none_or(|n| {
                    n.value.status.as_deref() == Some(gantry_model::status::INACTIVE)
                }) =>
                {
                    if let Some(arn) = &old.value.container_instance_arn {
                        channels_q.enqueue(arn.clone());
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
    // Everything that exists now gets a first look; after that, changes and resyncs. The
    // deciding controllers get it again whenever this replica becomes the leader.
    let first_look = {
        let (services_q, lost_q, janitor_q, task_keys_q) = (
            services_q.clone(),
            lost_q.clone(),
            janitor_q.clone(),
            task_keys_q.clone(),
        );
        move |plane: &ControlPlane| {
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
            task_keys_q.enqueue_many(
                plane
                    .cache
                    .iam(|i| i.task_keys.keys().cloned().collect::<Vec<_>>()),
            );
        }
    };
    first_look(plane);
    {
        let mut leadership = plane.replica.subscribe();
        let weak = weak.clone();
        tokio::spawn(async move {
            while leadership.changed().await.is_ok() {
                let now = *leadership.borrow_and_update();
                if let (Leadership::Leading { .. }, Some(plane)) = (now, weak.upgrade()) {
                    first_look(&plane);
                }
            }
        });
    }
    if serves_load_balancers {
        service_targets_q.enqueue_many(plane.cache.service_keys());
    }

    Controllers {
        _running: vec![
            services_c,
            channels_c,
            lost_c,
            janitor_c,
            task_keys_c,
            groups_c,
            listeners_c,
            service_targets_c,
        ],
    }
}

/// `GET /metrics`: the controllers' queues and latencies and the state cache's size, in
/// Prometheus' text format.
pub async fn metrics(
    axum::extract::State(plane): axum::extract::State<Arc<ControlPlane>>,
) -> impl axum::response::IntoResponse {
    use std::fmt::Write;
    let mut out = String::new();
    type Gauge = (&'static str, &'static str, fn(&Metrics) -> f64);
    let gauges: [Gauge; 9] = [
        (
            "gantry_controller_queue_depth",
            "Keys waiting to be reconciled now.",
            |m| m.queue_depth as f64,
        ),
        (
            "gantry_controller_scheduled",
            "Keys waiting on a requeue-after or back-off timer.",
            |m| m.scheduled as f64,
        ),
        ("gantry_controller_in_flight", "Reconciles running.", |m| {
            m.in_flight as f64
        }),
        (
            "gantry_controller_reconciles_total",
            "Reconciles finished.",
            |m| m.reconciles as f64,
        ),
        (
            "gantry_controller_failures_total",
            "Reconciles that returned an error.",
            |m| m.failures as f64,
        ),
        (
            "gantry_controller_panics_total",
            "Reconciles that panicked.",
            |m| m.panics as f64,
        ),
        (
            "gantry_controller_latency_p50_seconds",
            "Median reconcile latency (recent window).",
            |m| m.latency_p50.as_secs_f64(),
        ),
        (
            "gantry_controller_latency_p99_seconds",
            "99th percentile reconcile latency (recent window).",
            |m| m.latency_p99.as_secs_f64(),
        ),
        (
            "gantry_controller_latency_max_seconds",
            "Slowest reconcile (recent window).",
            |m| m.latency_max.as_secs_f64(),
        ),
    ];
    let all: Vec<Metrics> = plane
        .controllers
        .get()
        .map(|c| c.metrics.iter().map(|m| m()).collect())
        .unwrap_or_default();
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for m in &all {
            let _ = writeln!(out, "{name}{{controller=\"{}\"}} {}", m.name, get(m));
        }
    }
    let _ = writeln!(
        out,
        "# HELP gantry_state_cache_tasks Tasks held in the state cache.\n# TYPE gantry_state_cache_tasks gauge\ngantry_state_cache_tasks {}",
        plane.cache.task_count()
    );
    let _ = writeln!(
        out,
        "# HELP gantry_state_cache_revision Store revision the state cache shows.\n# TYPE gantry_state_cache_revision gauge\ngantry_state_cache_revision {}",
        plane.cache.applied()
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
