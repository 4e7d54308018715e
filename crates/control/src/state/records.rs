//! The records the control plane stores for tasks: the wire `Task` plus what the control
//! plane keeps to itself, and RunTask's idempotency tokens.

use gantry_model::arn::{cluster_of_arn, last_segment};
use gantry_model::types::{ContainerInstance, Failure, Tag, Task, TaskDefinition};
use gantry_model::{status, stop_code};
use gantry_scheduler::InstanceSnapshot;
use serde::{Deserialize, Serialize};

/// A task as stored: the wire `Task` plus what the control plane keeps to itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    #[serde(flatten)]
    pub task: Task,
    #[serde(default, rename = "gantryInternal")]
    pub internal: TaskInternal,
}

/// An awsvpc subnet: the address range it got on first use (`awsvpc.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetRecord {
    pub subnet_id: String,
    pub cidr: String,
    pub created_at: f64,
    /// Addresses handed out so far; every allocation rewrites the record, so its revision
    /// guards concurrent allocations in the subnet.
    #[serde(default)]
    pub allocations: u64,
}

/// Resources reserved on the instance while the task is not STOPPED.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInternal {
    pub cpu: i64,
    pub memory: i64,
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    #[serde(default)]
    pub udp_ports: Vec<u16>,
    #[serde(default)]
    pub family: String,
    /// The instance that runs the task when that is not its `containerInstanceArn`: a Fargate
    /// task has none, and runs on a host of the Fargate pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// An awsvpc task's network interface (its address is allocated at placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<gantry_model::agent_protocol::TaskNetworkInterface>,
    /// Task scale-in protection (UpdateTaskProtection): until when (epoch seconds) the
    /// service scheduler must not stop the task to scale in or to deploy. Past that time it
    /// is unprotected without anything being written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until: Option<f64>,
}

impl TaskRecord {
    pub fn holds_resources(&self) -> bool {
        self.task.last_status.as_deref() != Some(status::STOPPED)
    }
    pub fn cpu(&self) -> i64 {
        self.internal.cpu
    }
    pub fn memory(&self) -> i64 {
        self.internal.memory
    }
    /// The instance that runs the task: its container instance, or for a Fargate task the
    /// Fargate pool host it was placed on.
    pub fn host_arn(&self) -> Option<&str> {
        self.internal
            .host
            .as_deref()
            .or(self.task.container_instance_arn.as_deref())
    }
    /// The cluster the task belongs to (from its ARN), which for a Fargate task is not the
    /// cluster of the host that runs it.
    pub fn cluster_name(&self) -> &str {
        self.task
            .task_arn
            .as_deref()
            .and_then(cluster_of_arn)
            .unwrap_or("")
    }
    pub fn id(&self) -> &str {
        last_segment(self.task.task_arn.as_deref().unwrap_or(""))
    }
    /// Whether task scale-in protection holds at `now`.
    pub fn protected_at(&self, now: f64) -> bool {
        self.internal
            .protected_until
            .is_some_and(|until| until > now)
    }
    /// The task as the API returns it.
    pub fn render(&self, with_tags: bool) -> Task {
        let mut t = self.task.clone();
        if !with_tags {
            t.tags = None;
        }
        t
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTokenRecord {
    pub task_arns: Vec<String>,
    pub failures: Vec<Failure>,
    /// When the token was first used; the janitor forgets tokens after the retention period.
    #[serde(default)]
    pub created_at: f64,
}

/// Records an agent's channel opening or closing. A disconnection keeps the time it began
/// (the lost-host grace period counts from there), so a repeated "disconnected" (after a
/// control-plane restart, say) does not restart the clock.
pub fn set_agent_connected(ci: &mut ContainerInstance, connected: bool, now: f64) {
    if connected {
        ci.agent_disconnected_at = None;
    } else if ci.agent_connected || ci.agent_disconnected_at.is_none() {
        ci.agent_disconnected_at = Some(now);
    }
    ci.agent_connected = connected;
}

/// The final transition: the task and every container in it STOPPED.
/// Sets the status of the task's ElasticNetworkInterface attachment (PRECREATED when placed,
/// ATTACHED once the task runs, DELETED once it has stopped).
pub fn set_attachment_status(attachments: &mut Option<Vec<serde_json::Value>>, status: &str) {
    for a in attachments.iter_mut().flatten() {
        if a.get("type").and_then(serde_json::Value::as_str) == Some("ElasticNetworkInterface") {
            a["status"] = serde_json::json!(status);
        }
    }
}

pub fn mark_stopped(t: &mut Task, execution_stopped_at: Option<f64>, now: f64) {
    t.last_status = Some(status::STOPPED.into());
    set_attachment_status(&mut t.attachments, "DELETED");
    t.desired_status = Some(status::STOPPED.into());
    t.stopping_at.get_or_insert(now);
    t.execution_stopped_at = Some(execution_stopped_at.unwrap_or(now));
    t.stopped_at = Some(now);
    if t.stop_code.is_none() {
        // A container that exited ran, even if the agent's RUNNING report was superseded by
        // its STOPPED one; a task none of whose containers ran failed to start.
        let ran = t.started_at.is_some() || t.containers.iter().any(|c| c.exit_code.is_some());
        t.stop_code = Some(if ran {
            stop_code::ESSENTIAL_CONTAINER_EXITED.into()
        } else {
            stop_code::TASK_FAILED_TO_START.into()
        });
    }
    if t.stopped_reason.is_none() {
        t.stopped_reason = Some(
            if t.stop_code.as_deref() == Some(stop_code::TASK_FAILED_TO_START) {
                "Task failed to start"
            } else {
                "Essential container in task exited"
            }
            .into(),
        );
    }
    for c in &mut t.containers {
        c.last_status = Some(status::STOPPED.into());
    }
    t.connectivity = None;
    t.version = Some(t.version.unwrap_or(0) + 1);
}

/// Registered CPU, memory and reserved ports of an instance.
pub struct Capacity {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
}

pub fn capacity(ci: &ContainerInstance) -> Capacity {
    let resources = ci.registered_resources.as_deref().unwrap_or_default();
    let int = |name: &str| {
        resources
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
            .and_then(|r| r.integer_value.map(i64::from).or(r.long_value))
            .unwrap_or(0)
    };
    let ports = |name: &str| -> Vec<u16> {
        resources
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
            .and_then(|r| r.string_set_value.as_ref())
            .map(|v| v.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    };
    Capacity {
        cpu: int("CPU"),
        memory: int("MEMORY"),
        tcp_ports: ports("PORTS"),
        udp_ports: ports("PORTS_UDP"),
    }
}

/// How a task definition is stored: the definition as Describe returns it, and its tags
/// (which ECS returns beside the definition, not inside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionRecord {
    pub task_definition: TaskDefinition,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// `healthStatus.overallStatus` of an instance declared lost.
pub const IMPAIRED: &str = "IMPAIRED";

/// Clears the lost marks when the agent is back (its tasks stay STOPPED).
pub fn clear_lost(ci: &mut ContainerInstance) {
    if ci
        .health_status
        .as_ref()
        .is_some_and(|h| h.overall_status.as_deref() == Some(IMPAIRED))
    {
        ci.health_status = None;
        ci.status_reason = None;
    }
}

pub fn is_lost(ci: &ContainerInstance) -> bool {
    ci.health_status
        .as_ref()
        .is_some_and(|h| h.overall_status.as_deref() == Some(IMPAIRED))
}

/// What the scheduler needs to know about one instance; `tasks` may hold more than the
/// instance's own (only those placed on it count).
pub fn snapshot_of<'t>(
    ci: &ContainerInstance,
    tasks: impl IntoIterator<Item = &'t TaskRecord>,
) -> InstanceSnapshot {
    let arn = ci.container_instance_arn.clone().unwrap_or_default();
    let cap = capacity(ci);
    let mut snap = InstanceSnapshot {
        arn: arn.clone(),
        status: ci.status.clone().unwrap_or_default(),
        agent_connected: ci.agent_connected,
        attributes: ci
            .attributes
            .iter()
            .flatten()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect(),
        registered_cpu: cap.cpu,
        registered_memory: cap.memory,
        reserved_tcp_ports: cap.tcp_ports,
        reserved_udp_ports: cap.udp_ports,
        used_cpu: 0,
        used_memory: 0,
        used_tcp_ports: Vec::new(),
        used_udp_ports: Vec::new(),
        task_groups: Vec::new(),
        task_definition_families: Vec::new(),
        network_interface_limit: ci
            .attributes
            .iter()
            .flatten()
            .find(|a| a.name == gantry_model::requirements::AWSVPC_TASK_LIMIT_ATTRIBUTE)
            .and_then(|a| a.value.as_deref()?.parse().ok()),
        used_network_interfaces: 0,
    };
    if let Some(id) = &ci.ec2_instance_id {
        snap.attributes
            .entry("ecs.instance-id".into())
            .or_insert(Some(id.clone()));
    }
    for t in tasks
        .into_iter()
        .filter(|t| t.host_arn() == Some(arn.as_str()))
        .filter(|t| t.holds_resources())
    {
        snap.used_cpu = snap.used_cpu.saturating_add(t.internal.cpu);
        snap.used_memory = snap.used_memory.saturating_add(t.internal.memory);
        snap.used_tcp_ports.extend(&t.internal.tcp_ports);
        snap.used_udp_ports.extend(&t.internal.udp_ports);
        if t.internal.network_interface.is_some() {
            snap.used_network_interfaces += 1;
        }
        if let Some(g) = &t.task.group {
            snap.task_groups.push(g.clone());
        }
        snap.task_definition_families
            .push(t.internal.family.clone());
    }
    snap
}
