//! What a task needs from a container instance, derived from its definition and overrides
//! the way ECS computes it for the EC2 launch type.

use crate::types::{TaskDefinition, TaskOverride};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskRequirements {
    /// CPU units (1,024 per core).
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
    /// Fixed host ports (TCP) the task binds.
    pub tcp_ports: Vec<u16>,
    /// Fixed host ports (UDP) the task binds.
    pub udp_ports: Vec<u16>,
    /// Network interfaces (ECS's ENIs): 1 for an awsvpc task, which has its own address and
    /// binds no host port.
    pub network_interfaces: u32,
}

/// Task-level `cpu`/`memory` when set (overrides first), else the sum over containers of
/// `cpu` and of `memoryReservation` (or `memory` when no reservation is set). Host ports are the
/// non-zero `hostPort`s in bridge mode and the `containerPort`s in host mode.
pub fn task_requirements(
    td: &TaskDefinition,
    overrides: Option<&TaskOverride>,
) -> TaskRequirements {
    let container_override = |name: &Option<String>| {
        overrides
            .and_then(|o| o.container_overrides.as_ref())
            .and_then(|cos| cos.iter().find(|co| co.name.is_some() && co.name == *name))
    };
    let mut cpu = 0i64;
    let mut memory = 0i64;
    let mut tcp_ports = Vec::new();
    let mut udp_ports = Vec::new();
    let host_mode = td.network_mode.as_deref() == Some("host");
    let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
    for c in &td.container_definitions {
        let co = container_override(&c.name);
        cpu = cpu.saturating_add(co.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0) as i64);
        // ECS reserves memoryReservation when set, else the hard limit.
        let mem = co
            .and_then(|o| o.memory_reservation)
            .or(c.memory_reservation)
            .or(co.and_then(|o| o.memory))
            .or(c.memory)
            .unwrap_or(0);
        memory = memory.saturating_add(mem as i64);
        // An awsvpc task listens on its own address: its ports are not the host's.
        for pm in c.port_mappings.iter().flatten().filter(|_| !awsvpc) {
            let port = if host_mode {
                pm.host_port.or(pm.container_port)
            } else {
                pm.host_port
            };
            let Some(port) = port.filter(|p| *p > 0 && *p <= 65535) else {
                continue;
            };
            if pm.protocol.as_deref() == Some("udp") {
                udp_ports.push(port as u16);
            } else {
                tcp_ports.push(port as u16);
            }
        }
    }
    let task_cpu = overrides
        .and_then(|o| o.cpu.as_deref())
        .or(td.cpu.as_deref())
        .and_then(parse_cpu);
    let task_memory = overrides
        .and_then(|o| o.memory.as_deref())
        .or(td.memory.as_deref())
        .and_then(parse_memory);
    TaskRequirements {
        cpu: task_cpu.unwrap_or(cpu),
        memory: task_memory.unwrap_or(memory),
        tcp_ports,
        udp_ports,
        network_interfaces: u32::from(awsvpc),
    }
}

/// The instance attribute that caps how many awsvpc tasks an instance runs at once, as an EC2
/// instance type caps its ENIs (`gantry agent --awsvpc-task-limit`). An instance without it
/// has no cap (Fargate hosts).
pub const AWSVPC_TASK_LIMIT_ATTRIBUTE: &str = "dev.gantry.awsvpc-task-limit";

/// Task-level cpu: units (`"256"`) or vCPU (`"1 vCPU"`, `"0.5 vcpu"`).
pub fn parse_cpu(s: &str) -> Option<i64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(v) = lower.strip_suffix("vcpu") {
        let n: f64 = v.trim().parse().ok()?;
        if n.is_nan() || n <= 0.0 {
            return None;
        }
        return Some((n * 1024.0).round() as i64);
    }
    t.parse::<i64>().ok().filter(|n| *n >= 0)
}

/// Task-level memory: MiB (`"512"`) or GB (`"1 GB"`, `"0.5GB"`).
pub fn parse_memory(s: &str) -> Option<i64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if let Some(v) = lower.strip_suffix("gb") {
        let n: f64 = v.trim().parse().ok()?;
        if n.is_nan() || n <= 0.0 {
            return None;
        }
        return Some((n * 1024.0).round() as i64);
    }
    t.parse::<i64>().ok().filter(|n| *n >= 0)
}

/// The instance attribute an agent registers when it lets tasks use its host
/// (`gantry agent --allow-host-access`; `gantry dev`'s own agent always does).
pub const HOST_ACCESS_ATTRIBUTE: &str = "dev.gantry.capability.host-access";

/// The instance attribute naming the Auto Scaling group capacity provider whose capacity the
/// instance is (`gantry agent --capacity-provider NAME`); DescribeContainerInstances shows it
/// as `capacityProviderName`.
pub const CAPACITY_PROVIDER_ATTRIBUTE: &str = "dev.gantry.capacity-provider";

/// The instance attribute of `gantry dev`'s own per-cluster instances: DeleteCluster
/// deregisters them itself (nobody else would), so a cluster created on `gantry dev` can be
/// deleted again.
pub const LOCAL_CAPACITY_ATTRIBUTE: &str = "dev.gantry.local-capacity";

/// What a task definition asks of its host beyond an ordinary container: privileged mode,
/// host bind mounts, the host's PID or IPC namespace, added Linux capabilities, devices.
/// Empty when it asks for none of them. Such a task is placed only on an instance with
/// [`HOST_ACCESS_ATTRIBUTE`].
pub fn host_access_requested(td: &TaskDefinition) -> Vec<String> {
    let mut asks = Vec::new();
    for c in &td.container_definitions {
        let name = c.name.as_deref().unwrap_or("?");
        if c.privileged == Some(true) {
            asks.push(format!("privileged mode (container {name})"));
        }
        let linux = c.extra.get("linuxParameters");
        let non_empty = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty())
        };
        if non_empty(linux.and_then(|l| l.pointer("/capabilities/add"))) {
            asks.push(format!("added Linux capabilities (container {name})"));
        }
        if non_empty(linux.and_then(|l| l.get("devices"))) {
            asks.push(format!("host devices (container {name})"));
        }
    }
    for v in td.volumes.iter().flatten() {
        if v.host
            .as_ref()
            .and_then(|h| h.source_path.as_ref())
            .is_some()
        {
            asks.push(format!(
                "a host bind mount (volume {})",
                v.name.as_deref().unwrap_or("?")
            ));
        }
    }
    if td.pid_mode.as_deref() == Some("host") {
        asks.push("the host's PID namespace".to_string());
    }
    if td.ipc_mode.as_deref() == Some("host") {
        asks.push("the host's IPC namespace".to_string());
    }
    asks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContainerDefinition, PortMapping};

    #[test]
    fn sums_containers_and_prefers_task_level() {
        let mut td = TaskDefinition {
            container_definitions: vec![
                ContainerDefinition {
                    name: Some("a".into()),
                    cpu: Some(128),
                    memory: Some(64),
                    port_mappings: Some(vec![PortMapping {
                        container_port: Some(80),
                        host_port: Some(8080),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                ContainerDefinition {
                    name: Some("b".into()),
                    memory_reservation: Some(32),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = task_requirements(&td, None);
        assert_eq!(
            (r.cpu, r.memory, r.tcp_ports.clone()),
            (128, 96, vec![8080])
        );
        td.cpu = Some("1 vCPU".into());
        td.memory = Some("0.5GB".into());
        let r = task_requirements(&td, None);
        assert_eq!((r.cpu, r.memory), (1024, 512));
        assert_eq!(parse_cpu("x"), None);
        assert_eq!(parse_memory("-1"), None);
    }
}
