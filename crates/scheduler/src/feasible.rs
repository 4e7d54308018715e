//! Stage 1 of the pipeline: which instances can take the next task at all, and if not, why.
//!
//! Checks run in a fixed order and the first failure is the instance's reason, so the
//! `failures` ECS-style callers see are stable: status, agent connection, CPU, memory, TCP
//! ports, UDP ports, then the placement constraints in the order given.

use gantry_model::requirements::TaskRequirements;

use crate::constraint::Constraint;
use crate::reason;
use crate::view::View;

/// Why an instance cannot take the task. See [`crate::reason`] for the strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Inactive,
    Draining,
    Agent,
    Cpu,
    Memory,
    Ports,
    PortsUdp,
    Eni,
    MemberOf,
    DistinctInstance,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Inactive => reason::INACTIVE,
            Reason::Draining => reason::DRAINING,
            Reason::Agent => reason::AGENT,
            Reason::Cpu => reason::RESOURCE_CPU,
            Reason::Memory => reason::RESOURCE_MEMORY,
            Reason::Ports => reason::RESOURCE_PORTS,
            Reason::PortsUdp => reason::RESOURCE_PORTS_UDP,
            Reason::Eni => reason::RESOURCE_ENI,
            Reason::MemberOf => reason::MEMBER_OF,
            Reason::DistinctInstance => reason::DISTINCT_INSTANCE,
        }
    }
}

/// Whether the instance in `view` can take one more task with `req` under `constraints`.
pub fn check(
    view: &View,
    req: &TaskRequirements,
    constraints: &[Constraint],
) -> Result<(), Reason> {
    let instance = view.instance;
    match instance.status.as_str() {
        "ACTIVE" => {}
        "DRAINING" => return Err(Reason::Draining),
        // Deregistered, still registering, or failed registration: not schedulable.
        _ => return Err(Reason::Inactive),
    }
    if !instance.agent_connected {
        return Err(Reason::Agent);
    }
    if view.used_cpu().saturating_add(req.cpu) > instance.registered_cpu {
        return Err(Reason::Cpu);
    }
    if view.used_memory().saturating_add(req.memory) > instance.registered_memory {
        return Err(Reason::Memory);
    }
    if req.tcp_ports.iter().any(|p| view.tcp_port_taken(*p)) {
        return Err(Reason::Ports);
    }
    if req.udp_ports.iter().any(|p| view.udp_port_taken(*p)) {
        return Err(Reason::PortsUdp);
    }
    if view.network_interfaces_exhausted(req.network_interfaces) {
        return Err(Reason::Eni);
    }
    for constraint in constraints {
        match constraint {
            Constraint::DistinctInstance if view.hosts_group() => {
                return Err(Reason::DistinctInstance)
            }
            Constraint::MemberOf(expr) if !expr.eval(view) => return Err(Reason::MemberOf),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `check` would pass, testing the cheapest conditions first (the figures held in the
/// snapshot itself before anything behind a pointer: status, ports, attribute maps). The scan
/// uses it to skip infeasible instances quickly; `check` still names the reason when one is
/// needed.
pub fn passes(view: &View, req: &TaskRequirements, constraints: &[Constraint]) -> bool {
    let instance = view.instance;
    instance.agent_connected
        && view.used_cpu().saturating_add(req.cpu) <= instance.registered_cpu
        && view.used_memory().saturating_add(req.memory) <= instance.registered_memory
        && instance.status == "ACTIVE"
        && !req.tcp_ports.iter().any(|p| view.tcp_port_taken(*p))
        && !req.udp_ports.iter().any(|p| view.udp_port_taken(*p))
        && !view.network_interfaces_exhausted(req.network_interfaces)
        && constraints.iter().all(|constraint| match constraint {
            Constraint::DistinctInstance => !view.hosts_group(),
            Constraint::MemberOf(expr) => expr.eval(view),
        })
}
