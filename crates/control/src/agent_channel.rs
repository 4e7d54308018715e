//! The agent channel: one long-lived HTTP response per connected agent, carrying NDJSON
//! [`ChannelMessage`]s. Each `tasks` message is the instance's whole desired state, sent on
//! connect and again whenever a store watch shows that the set of tasks on the instance or
//! one of their desired statuses changed — at once, not on a polling tick. Heartbeats keep
//! idle connections (and proxies) alive and let the agent notice a dead server.
//!
//! While a channel is open the instance is `agentConnected`; when it closes, it is not.

use crate::container_instances::key_for;
use crate::repo;
use crate::state::ControlPlane;
use crate::task_definitions;
use crate::tasks::{load_cluster_tasks, TaskRecord};
use crate::wire::error_response;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gantry_model::agent_protocol::{
    AssignedContainer, ChannelMessage, TaskAssignment, HEARTBEAT_SECS,
};
use gantry_model::arn::cluster_name;
use gantry_model::types::{ContainerInstance, TaskDefinition};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelQuery {
    cluster: String,
    container_instance: String,
}

pub async fn connect(
    State(plane): State<Arc<ControlPlane>>,
    Query(q): Query<ChannelQuery>,
) -> Response {
    let cluster = cluster_name(&q.cluster).to_string();
    let key = key_for(&cluster, &q.container_instance);
    let instance = match repo::get::<ContainerInstance>(&*plane.store, &key).await {
        Ok(Some((ci, _))) if ci.status.as_deref() != Some(status::INACTIVE) => ci,
        Ok(_) => {
            return error_response(&EcsError::invalid_parameter(
                "Unknown or deregistered container instance: register again.",
            ))
        }
        Err(e) => return error_response(&e),
    };
    let arn = instance.container_instance_arn.clone().unwrap_or_default();
    // Subscribe before the first snapshot so no change falls between the two.
    let watcher = match plane.store.watch(&repo::tasks_prefix(&cluster), None).await {
        Ok(w) => w,
        Err(e) => return error_response(&repo::store_error(e)),
    };
    let generation = plane.next_connection.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut conns) = plane.connections.lock() {
        conns.insert(arn.clone(), generation);
    }
    if let Err(e) = set_connected(&plane, &key, true).await {
        return error_response(&e);
    }
    tracing::info!(instance = %arn, "agent connected");

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(serve_channel(
        plane, cluster, key, arn, generation, watcher, tx,
    ));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn set_connected(plane: &ControlPlane, key: &str, connected: bool) -> EcsResult<()> {
    repo::update::<ContainerInstance, _>(&*plane.store, key, |ci| {
        ci.agent_connected = connected;
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

async fn serve_channel(
    plane: Arc<ControlPlane>,
    cluster: String,
    key: String,
    arn: String,
    generation: u64,
    mut watcher: gantry_store::Watcher,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut heartbeat = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
    heartbeat.tick().await;
    let mut last_sent: Option<Vec<(String, String)>> = None;
    let mut definitions: HashMap<String, TaskDefinition> = HashMap::new();
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            match desired_state(&plane, &cluster, &arn, &mut definitions).await {
                Ok((fingerprint, tasks)) => {
                    if last_sent.as_ref() != Some(&fingerprint) {
                        let Some(bytes) = line(&ChannelMessage::Tasks { tasks }) else {
                            break;
                        };
                        if tx.send(Ok(bytes)).await.is_err() {
                            break;
                        }
                        last_sent = Some(fingerprint);
                    }
                }
                Err(e) => tracing::warn!(instance = %arn, "cannot compute desired state: {e}"),
            }
        }
        tokio::select! {
            event = watcher.recv() => {
                let Some(event) = event else { break };
                dirty |= concerns(&event, &arn);
                // Coalesce a burst of changes into one message.
                while let Ok(more) = watcher.try_recv() {
                    dirty |= concerns(&more, &arn);
                }
            }
            _ = heartbeat.tick() => {
                let Some(bytes) = line(&ChannelMessage::Heartbeat { at: now_epoch() }) else { break };
                if tx.send(Ok(bytes)).await.is_err() {
                    break;
                }
            }
            _ = tx.closed() => break,
        }
    }
    let was_current = match plane.connections.lock() {
        Ok(mut conns) if conns.get(&arn) == Some(&generation) => {
            conns.remove(&arn);
            true
        }
        _ => false,
    };
    if was_current {
        // A newer connection may register between our removal and this write: the check
        // inside the compare-and-swap sees it (it inserts before it writes `true`).
        let result = repo::update::<ContainerInstance, _>(&*plane.store, &key, |ci| {
            let reconnected = plane
                .connections
                .lock()
                .map(|c| c.contains_key(&arn))
                .unwrap_or(false);
            if !reconnected {
                ci.agent_connected = false;
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

/// Whether a change under `tasks/` can alter what this instance should run.
fn concerns(event: &gantry_store::WatchEvent, arn: &str) -> bool {
    match event {
        gantry_store::WatchEvent::Put(kv) => serde_json::from_slice::<TaskRecord>(&kv.value)
            .map(|t| t.task.container_instance_arn.as_deref() == Some(arn))
            .unwrap_or(true),
        gantry_store::WatchEvent::Delete { .. } => false,
    }
}

/// Every task on the instance that is not yet known to be STOPPED, with its definition, and a
/// fingerprint (task, desired status) that says whether the agent needs to hear it again.
async fn desired_state(
    plane: &ControlPlane,
    cluster: &str,
    arn: &str,
    definitions: &mut HashMap<String, TaskDefinition>,
) -> EcsResult<(Vec<(String, String)>, Vec<TaskAssignment>)> {
    let tasks = load_cluster_tasks(plane, cluster).await?;
    let mut fingerprint = Vec::new();
    let mut out = Vec::new();
    for rec in tasks {
        let t = rec.task;
        if t.container_instance_arn.as_deref() != Some(arn)
            || t.last_status.as_deref() == Some(status::STOPPED)
        {
            continue;
        }
        let (Some(task_arn), Some(td_arn)) = (t.task_arn.clone(), t.task_definition_arn.clone())
        else {
            continue;
        };
        if !definitions.contains_key(&td_arn) {
            let (record, _) = task_definitions::resolve(plane, &td_arn).await?;
            definitions.insert(td_arn.clone(), record.task_definition);
        }
        let Some(definition) = definitions.get(&td_arn) else {
            continue;
        };
        let desired = t
            .desired_status
            .clone()
            .unwrap_or_else(|| status::RUNNING.into());
        fingerprint.push((task_arn.clone(), desired.clone()));
        out.push(TaskAssignment {
            task_arn,
            cluster_arn: t.cluster_arn.clone().unwrap_or_default(),
            desired_status: desired,
            version: t.version.unwrap_or(0),
            task_definition: definition.clone(),
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
        });
    }
    fingerprint.sort();
    Ok((fingerprint, out))
}
