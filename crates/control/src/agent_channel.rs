//! The agent channel: one long-lived HTTP response per connected agent, carrying NDJSON
//! [`ChannelMessage`]s. Each `tasks` message is the instance's whole desired state, sent on
//! connect and again whenever the set of tasks on the instance or one of their desired
//! statuses changes — at once, not on a polling tick. The [`ChannelFanout`] controller
//! computes it from the state cache (only the instance's own tasks); the connection's writer
//! sends the latest. Heartbeats keep idle connections (and proxies) alive and let the agent
//! notice a dead server.
//!
//! While a channel is open the instance is `agentConnected`; when it closes, it is not.

use crate::auth::{Access, Owned, Protocol};
use crate::plane::{AgentConnection, ControlPlane};
use crate::request::Incoming;
use crate::state::keys::instance_key_for;
use crate::state::records::{set_agent_connected, TaskRecord};
use crate::state::repo;
use crate::wire::error_response;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gantry_model::agent_protocol::{
    AssignedContainer, ChannelMessage, TaskAssignment, HEARTBEAT_SECS,
};
use gantry_model::arn::{cluster_name, last_segment};
use gantry_model::types::ContainerInstance;
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use gantry_runtime::{Action, ReconcileError, Reconciler};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The channel's query string, decoded.
fn serde_urlencoded_query(query: &str) -> Option<ChannelQuery> {
    let request = crate::query_wire::QueryRequest::parse(query, &[]).ok()?;
    Some(ChannelQuery {
        cluster: request.get("cluster")?.to_string(),
        container_instance: request.get("containerInstance")?.to_string(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelQuery {
    cluster: String,
    container_instance: String,
}

pub async fn connect(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let incoming = match Incoming::read(req).await {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    let q: ChannelQuery = match serde_urlencoded_query(&incoming.query) {
        Some(q) => q,
        None => {
            return error_response(&EcsError::invalid_parameter(
                "The channel needs cluster and containerInstance query parameters.",
            ))
        }
    };
    let caller = match incoming.authenticate(&plane, "ecs", "ecs:Poll") {
        Ok(c) => c,
        Err(f) => {
            let w = f.wire(Protocol::Json);
            return error_response(&EcsError::new(w.code, w.message));
        }
    };
    let cluster = cluster_name(&q.cluster).to_string();
    let key = instance_key_for(&cluster, &q.container_instance);
    let instance = match repo::get::<ContainerInstance>(&*plane.store, &key).await {
        Ok(Some((ci, _))) if ci.status.as_deref() != Some(status::INACTIVE) => ci,
        Ok(_) => {
            return error_response(&EcsError::invalid_parameter(
                "Unknown or deregistered container instance: register again.",
            ))
        }
        Err(e) => return error_response(&e),
    };
    let instance_arn = instance.container_instance_arn.clone().unwrap_or_default();
    let access = Access::new("ecs:Poll", vec![instance_arn.clone()])
        .owning([Owned::Instance(instance_arn.clone())])
        .agents_only();
    if let Err(d) = incoming.authorize(&plane, &caller, &access, Protocol::Json) {
        return error_response(&d.to_ecs());
    }
    incoming.audit(
        &plane,
        Some(&caller),
        "ecs:Poll",
        &[instance_arn],
        "Success",
        None,
    );
    let arn = instance.container_instance_arn.clone().unwrap_or_default();
    let (desired, desired_rx) = watch::channel(None);
    let conn = Arc::new(AgentConnection {
        generation: plane.next_connection.fetch_add(1, Ordering::Relaxed),
        desired,
        last_sent: Mutex::new(None),
        cut_off: tokio::sync::Notify::new(),
        instance_key: key.clone(),
    });
    if let Ok(mut conns) = plane.connections.lock() {
        conns.insert(arn.clone(), conn.clone());
    }
    if let Err(e) = set_connected(&plane, &key, true).await {
        if let Ok(mut conns) = plane.connections.lock() {
            if conns
                .get(&arn)
                .is_some_and(|c| c.generation == conn.generation)
            {
                conns.remove(&arn);
            }
        }
        // The store cannot be written from here: 503, so that an agent that knows other
        // replicas goes to one of them.
        let mut response = error_response(&e);
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    // The fan-out controller computes the first desired state like every later one.
    if let Some(c) = plane.controllers.get() {
        c.channels.enqueue(arn.clone());
    }
    tracing::info!(instance = %arn, "agent connected");

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(serve_channel(plane, key, arn, conn, desired_rx, tx));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn set_connected(plane: &ControlPlane, key: &str, connected: bool) -> EcsResult<()> {
    let now = now_epoch();
    repo::update::<ContainerInstance, _>(&*plane.store, key, |ci| {
        set_agent_connected(ci, connected, now);
        if connected {
            ci.agent_replica = Some(plane.replica.id.clone());
            crate::state::records::clear_lost(ci);
        }
        Ok(())
    })
    .await?;
    Ok(())
}

fn line(msg: &ChannelMessage) -> Option<Bytes> {
    let mut v = serde_json::to_vec(msg).ok()?;
    v.push(b'\n');
    Some(Bytes::from(v))
}

/// Writes the connection's latest desired state whenever it changes, and heartbeats.
async fn serve_channel(
    plane: Arc<ControlPlane>,
    key: String,
    arn: String,
    conn: Arc<AgentConnection>,
    mut desired: watch::Receiver<Option<Bytes>>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut heartbeat = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
    heartbeat.tick().await;
    loop {
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    break;
                }
                let latest = desired.borrow_and_update().clone();
                if let Some(bytes) = latest {
                    if tx.send(Ok(bytes)).await.is_err() {
                        break;
                    }
                }
            }
            _ = heartbeat.tick() => {
                let Some(bytes) = line(&ChannelMessage::Heartbeat { at: now_epoch() }) else { break };
                if tx.send(Ok(bytes)).await.is_err() {
                    break;
                }
            }
            _ = tx.closed() => break,
            _ = conn.cut_off.notified() => {
                tracing::info!(instance = %arn, "agent channel closed by the control plane (instance deregistered, or this replica lost the store)");
                break;
            }
        }
    }
    let was_current = match plane.connections.lock() {
        Ok(mut conns)
            if conns
                .get(&arn)
                .is_some_and(|c| c.generation == conn.generation) =>
        {
            conns.remove(&arn);
            true
        }
        _ => false,
    };
    if was_current {
        // A newer connection may register between our removal and this write: the check
        // inside the compare-and-swap sees it (it inserts before it writes `true`).
        let now = now_epoch();
        let result = repo::update::<ContainerInstance, _>(&*plane.store, &key, |ci| {
            let reconnected = plane
                .connections
                .lock()
                .map(|c| c.contains_key(&arn))
                .unwrap_or(false);
            // An agent that has moved on to another replica is that replica's to mark.
            let elsewhere = ci
                .agent_replica
                .as_ref()
                .is_some_and(|r| *r != plane.replica.id);
            if !reconnected && !elsewhere {
                set_agent_connected(ci, false, now);
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(instance = %arn, "cannot mark agent disconnected: {e}");
        }
        tracing::info!(instance = %arn, "agent disconnected");
    }
}

/// The agent-channel fan-out: for one container instance, compute its desired state from the
/// cache's tasks-by-instance index and hand it to the instance's open channel. Keyed by
/// instance ARN; woken by the cache when a task on the instance changes in a way the agent
/// must hear (see [`wakes_channel`]). A failure is an `Err`, retried with back-off by the
/// runtime, so a change is never lost to an error.
pub struct ChannelFanout {
    pub plane: Weak<ControlPlane>,
}

impl ChannelFanout {
    pub fn new(plane: Weak<ControlPlane>) -> Self {
        ChannelFanout { plane }
    }
}

impl Reconciler for ChannelFanout {
    type Key = String;

    async fn reconcile(&self, arn: &String) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let conn = plane
            .connections
            .lock()
            .ok()
            .and_then(|c| c.get(arn).cloned());
        let Some(conn) = conn else {
            return Ok(Action::Done);
        };
        let deregistered = gantry_model::arn::cluster_of_arn(arn)
            .and_then(|cluster| plane.cache.instance(cluster, last_segment(arn)))
            .is_none_or(|ci| ci.value.status.as_deref() == Some(status::INACTIVE));
        if deregistered {
            // `notify_one` keeps the permit if the writer is not waiting at this moment.
            conn.cut_off.notify_one();
            return Ok(Action::Done);
        }
        let (fingerprint, tasks, held_until) = self
            .desired_state(&plane, arn)
            .await
            .map_err(|e| ReconcileError(e.message))?;
        let mut last = conn
            .last_sent
            .lock()
            .map_err(|_| ReconcileError::from("connection state poisoned"))?;
        if last.as_ref() != Some(&fingerprint) {
            let bytes = line(&ChannelMessage::Tasks { tasks })
                .ok_or_else(|| ReconcileError::from("cannot encode the desired state"))?;
            conn.desired.send_replace(Some(bytes));
            *last = Some(fingerprint);
        }
        // A stop held for draining is looked at again when its bound is over, should the data
        // plane's report that ends it early never come.
        Ok(match held_until {
            Some(at) => Action::RequeueAfter(
                at.saturating_duration_since(std::time::Instant::now())
                    + std::time::Duration::from_millis(10),
            ),
            None => Action::Done,
        })
    }

    async fn list(&self) -> Result<Vec<String>, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Vec::new());
        };
        let arns = plane
            .connections
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        Ok(arns)
    }
}

impl ChannelFanout {
    /// Every task on the instance that is not yet known to be STOPPED, with its definition,
    /// and a fingerprint (task, desired status) that says whether the agent needs to hear it
    /// again. Reads only the instance's own tasks.
    async fn desired_state(
        &self,
        plane: &ControlPlane,
        arn: &str,
    ) -> EcsResult<(
        Vec<(String, String)>,
        Vec<TaskAssignment>,
        Option<std::time::Instant>,
    )> {
        let mut fingerprint = Vec::new();
        let mut out = Vec::new();
        let mut held_until: Option<std::time::Instant> = None;
        for entry in plane.cache.tasks_on_instance(arn) {
            let t = &entry.value.task;
            if t.last_status.as_deref() == Some(status::STOPPED) {
                continue;
            }
            let (Some(task_arn), Some(td_arn)) =
                (t.task_arn.clone(), t.task_definition_arn.as_deref())
            else {
                continue;
            };
            let definition = plane.definition_by_arn(td_arn).await?;
            let mut desired = t
                .desired_status
                .clone()
                .unwrap_or_else(|| status::RUNNING.into());
            // A service task leaves its target groups before its agent hears the stop: while
            // the load balancer drains it, the agent keeps it running.
            if desired == status::STOPPED && plane.targets.holds_stop(&task_arn) {
                desired = status::RUNNING.into();
                let deadline = plane.targets.drain_deadline(&task_arn);
                held_until = match (held_until, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            fingerprint.push((task_arn.clone(), desired.clone()));
            out.push(TaskAssignment {
                task_arn,
                cluster_arn: t.cluster_arn.clone().unwrap_or_default(),
                desired_status: desired,
                version: t.version.unwrap_or(0),
                task_definition: (*definition).clone(),
                overrides: t.overrides.clone(),
                containers: t
                    .containers
                    .iter()
                    .filter_map(|c| {
                        Some(AssignedContainer {
                            name: c.name.clone()?,
                            container_arn: c.container_arn.clone()?,
                        })
                    })
                    .collect(),
                network_interface: entry.value.internal.network_interface.clone(),
            });
        }
        fingerprint.sort();
        Ok((fingerprint, out, held_until))
    }
}

/// The instances whose agents must hear about a task change: where it was and where it is,
/// when it appeared, went, changed its desired status or reached STOPPED (it then leaves
/// the desired state).
pub fn wakes_channel(old: Option<&TaskRecord>, new: Option<&TaskRecord>) -> Vec<String> {
    let view = |t: Option<&TaskRecord>| {
        t.map(|t| {
            (
                t.host_arn().map(str::to_string),
                t.task.desired_status.clone(),
                t.task.last_status.as_deref() == Some(status::STOPPED),
            )
        })
    };
    let (before, after) = (view(old), view(new));
    if before == after {
        return Vec::new();
    }
    let mut arns: Vec<String> = [before, after]
        .into_iter()
        .flatten()
        .filter_map(|(arn, _, _)| arn)
        .collect();
    arns.dedup();
    arns
}
