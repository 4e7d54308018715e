//! Pre-filled clusters, written straight into a store as the control plane writes them.
//!
//! To be faithful without reaching into the control plane's private record types, the records
//! are copies of real ones: a throwaway in-memory control plane registers one simulated agent
//! with the real registration body, runs one task on it and receives the agent's RUNNING
//! report; its stored JSON (instance, task, cluster, task definition) is the template. Each
//! copy gets fresh ids (task, instance, container, runtime) and its own availability zone, and
//! the copies are written in large transactions.

use crate::bench::agents::Fleet;
use crate::bench::fixture::ZONES;
use crate::bench::server::{self, open_plane, Server, CLUSTER};
use gantry_model::arn::last_segment;
use gantry_store::{KeyValue, KvStore, Txn, TxnOp};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Task size of the copies: 128 CPU units, 256 MiB (32 fit on an instance).
pub const TASK_CPU: i64 = 128;
pub const TASK_MEMORY: i64 = 256;
/// Puts per store transaction while filling.
const BATCH: usize = 2_000;
/// The zone the template instance registered in (replaced in the copies).
const TEMPLATE_ZONE: &str = "us-east-1a";

/// One real instance and one real RUNNING task as the control plane stored them.
pub struct Templates {
    /// Cluster, task definition and revision counter records, written as they are.
    base: Vec<KeyValue>,
    instance_id: String,
    instance_arn: String,
    instance_json: String,
    task_id: String,
    task_arn: String,
    task_json: String,
    /// Container ids and runtime ids inside the task, each replaced per copy.
    task_inner_ids: Vec<String>,
    /// The task's container name (for reports about the copies).
    pub container_name: String,
}

/// The cluster that [`fill`] wrote: each instance's ARN and its tasks' ARNs.
pub struct Filled {
    pub instances: Vec<(String, Vec<String>)>,
    /// Bytes of keys and JSON values written.
    pub bytes: u64,
}

impl Filled {
    pub fn instance_arns(&self) -> Vec<String> {
        self.instances.iter().map(|(arn, _)| arn.clone()).collect()
    }

    pub fn task_arns(&self) -> Vec<String> {
        self.instances
            .iter()
            .flat_map(|(_, tasks)| tasks.iter().cloned())
            .collect()
    }
}

fn uuid32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Captures the templates from a throwaway control plane (in memory, on loopback).
pub async fn capture() -> Result<Templates, String> {
    let plane = open_plane(None).await?;
    let server = Server::serve(plane.clone()).await?;
    let result = capture_from(&plane, &server.endpoint).await;
    server.shutdown().await;
    result
}

async fn capture_from(
    plane: &gantry_control::ControlPlane,
    endpoint: &str,
) -> Result<Templates, String> {
    let (client, token) = server::admin_client(plane, endpoint).await?;
    server::prepare_cluster(&client, TASK_CPU, TASK_MEMORY).await?;
    let fleet = Fleet::register(endpoint, CLUSTER, 1, &token, Duration::from_secs(30)).await?;
    let (arns, _) = server::run_task(&client, 1).await?;
    let reported = fleet
        .wait(
            |s| s.running.load(Ordering::Relaxed) >= 1,
            Duration::from_secs(30),
        )
        .await;
    fleet.stop().await;
    if !reported || arns.len() != 1 {
        return Err("the template task did not reach RUNNING".into());
    }
    let (kvs, _) = plane
        .store
        .range("")
        .await
        .map_err(|e| format!("reading the template records: {e}"))?;
    let mut base = Vec::new();
    let mut instance = None;
    let mut task = None;
    for kv in kvs {
        if kv.key.starts_with("instances/") {
            instance = Some(kv);
        } else if kv.key.starts_with("tasks/") {
            task = Some(kv);
        } else if ["clusters/", "taskdefs/", "taskdef-revisions/"]
            .iter()
            .any(|p| kv.key.starts_with(p))
        {
            base.push(kv);
        }
    }
    let (Some(instance), Some(task)) = (instance, task) else {
        return Err("the template instance or task is missing from the store".into());
    };
    let instance_json = String::from_utf8(instance.value).map_err(|e| e.to_string())?;
    let task_json = String::from_utf8(task.value).map_err(|e| e.to_string())?;
    let iv: Value = serde_json::from_str(&instance_json).map_err(|e| e.to_string())?;
    let tv: Value = serde_json::from_str(&task_json).map_err(|e| e.to_string())?;
    let instance_arn = iv["containerInstanceArn"]
        .as_str()
        .ok_or("the template instance has no ARN")?
        .to_string();
    let task_arn = tv["taskArn"]
        .as_str()
        .ok_or("the template task has no ARN")?
        .to_string();
    if tv["lastStatus"] != "RUNNING" {
        return Err(format!("the template task is {}", tv["lastStatus"]));
    }
    let containers = tv["containers"].as_array().cloned().unwrap_or_default();
    let mut task_inner_ids = Vec::new();
    for c in &containers {
        if let Some(arn) = c["containerArn"].as_str() {
            task_inner_ids.push(last_segment(arn).to_string());
        }
        if let Some(id) = c["runtimeId"].as_str() {
            task_inner_ids.push(id.to_string());
        }
    }
    let container_name = containers
        .first()
        .and_then(|c| c["name"].as_str())
        .unwrap_or("app")
        .to_string();
    Ok(Templates {
        base,
        instance_id: last_segment(&instance_arn).to_string(),
        instance_arn,
        instance_json,
        task_id: last_segment(&task_arn).to_string(),
        task_arn,
        task_json,
        task_inner_ids,
        container_name,
    })
}

/// Writes the base records, `instances` instances (zones round-robin) and `tasks` RUNNING
/// tasks spread round-robin over them into `store`.
pub async fn fill(
    store: &dyn KvStore,
    t: &Templates,
    instances: usize,
    tasks: usize,
) -> Result<Filled, String> {
    let mut ops: Vec<TxnOp> = t
        .base
        .iter()
        .map(|kv| TxnOp::Put {
            key: kv.key.clone(),
            value: kv.value.clone(),
        })
        .collect();
    let quoted_zone = format!("\"{TEMPLATE_ZONE}\"");
    let mut filled = Filled {
        instances: Vec::with_capacity(instances),
        bytes: 0,
    };
    for i in 0..instances {
        let id = uuid32();
        let zone = format!("\"{}\"", ZONES[i % ZONES.len()]);
        let json = t
            .instance_json
            .replace(&t.instance_id, &id)
            .replace(&quoted_zone, &zone);
        ops.push(TxnOp::Put {
            key: format!("instances/{CLUSTER}/{id}"),
            value: json.into_bytes(),
        });
        filled
            .instances
            .push((t.instance_arn.replace(&t.instance_id, &id), Vec::new()));
        flush_if_full(store, &mut ops, &mut filled.bytes).await?;
    }
    for j in 0..tasks {
        let i = j % instances.max(1);
        let Some((instance_arn, task_arns)) = filled.instances.get_mut(i) else {
            break;
        };
        let instance_id = last_segment(instance_arn).to_string();
        let id = uuid32();
        let zone = format!("\"{}\"", ZONES[i % ZONES.len()]);
        let mut json = t
            .task_json
            .replace(&t.task_id, &id)
            .replace(&t.instance_id, &instance_id)
            .replace(&quoted_zone, &zone);
        for inner in &t.task_inner_ids {
            json = json.replace(inner, &uuid32());
        }
        ops.push(TxnOp::Put {
            key: format!("tasks/{CLUSTER}/{id}"),
            value: json.into_bytes(),
        });
        task_arns.push(t.task_arn.replace(&t.task_id, &id));
        flush_if_full(store, &mut ops, &mut filled.bytes).await?;
    }
    flush(store, &mut ops, &mut filled.bytes).await?;
    Ok(filled)
}

async fn flush_if_full(
    store: &dyn KvStore,
    ops: &mut Vec<TxnOp>,
    bytes: &mut u64,
) -> Result<(), String> {
    if ops.len() >= BATCH {
        flush(store, ops, bytes).await?;
    }
    Ok(())
}

async fn flush(store: &dyn KvStore, ops: &mut Vec<TxnOp>, bytes: &mut u64) -> Result<(), String> {
    if ops.is_empty() {
        return Ok(());
    }
    for op in ops.iter() {
        if let TxnOp::Put { key, value } = op {
            *bytes += (key.len() + value.len()) as u64;
        }
    }
    store
        .txn(Txn {
            success: std::mem::take(ops),
            ..Txn::default()
        })
        .await
        .map_err(|e| format!("writing the records: {e}"))?;
    Ok(())
}
