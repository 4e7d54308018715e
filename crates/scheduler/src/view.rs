//! One container instance as the scheduler sees it part-way through a request: the snapshot
//! plus whatever this request has already placed there.
//!
//! Placing tasks one at a time against this view (instead of the raw snapshot) is what lets
//! the second task of a request see the CPU, memory, ports and group membership the first one
//! took, so a multi-task request cannot overcommit an instance or defeat `distinctInstance`.

use gantry_model::requirements::TaskRequirements;

use crate::query::Target;
use crate::InstanceSnapshot;

/// What this request has added to one instance so far. All zero until a task lands there.
#[derive(Debug, Clone, Default)]
pub struct Added {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// Tasks of this request placed on the instance.
    pub tasks: usize,
    pub network_interfaces: u32,
}

/// What a request that has placed nothing on an instance has added to it.
pub static NOTHING_ADDED: Added = Added {
    cpu: 0,
    memory: 0,
    tcp_ports: Vec::new(),
    udp_ports: Vec::new(),
    tasks: 0,
    network_interfaces: 0,
};

impl Added {
    /// One more task of `req` on the instance.
    pub fn add(&mut self, req: &TaskRequirements) {
        self.cpu = self.cpu.saturating_add(req.cpu);
        self.memory = self.memory.saturating_add(req.memory);
        self.tcp_ports.extend_from_slice(&req.tcp_ports);
        self.udp_ports.extend_from_slice(&req.udp_ports);
        self.tasks += 1;
        self.network_interfaces = self
            .network_interfaces
            .saturating_add(req.network_interfaces);
    }
}

/// Which existing tasks count as "the same group" as the tasks being placed.
///
/// ECS spreads and separates (`distinctInstance`) tasks of the same task group. A service's
/// tasks share the group `service:<name>`; standalone tasks default to `family:<family>`. With
/// no explicit group, tasks are matched by task definition family.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    explicit: Option<&'a str>,
    family: &'a str,
    /// The `task:group` value the new tasks carry (for `memberOf` expressions).
    label: String,
}

impl<'a> Group<'a> {
    pub fn new(explicit: Option<&'a str>, family: &'a str) -> Self {
        let label = match explicit {
            Some(g) => g.to_string(),
            None => format!("family:{family}"),
        };
        Group {
            explicit,
            family,
            label,
        }
    }

    /// Tasks of this group in the snapshot of `instance` (not counting this request's).
    pub fn existing_tasks(&self, instance: &InstanceSnapshot) -> usize {
        match self.explicit {
            Some(g) => instance.task_groups.iter().filter(|t| *t == g).count(),
            None => instance
                .task_definition_families
                .iter()
                .filter(|f| *f == self.family)
                .count(),
        }
    }
}

/// Snapshot + this request's additions, for feasibility checks and query evaluation.
pub struct View<'a> {
    pub instance: &'a InstanceSnapshot,
    pub added: &'a Added,
    pub group: &'a Group<'a>,
}

impl View<'_> {
    pub fn used_cpu(&self) -> i64 {
        self.instance.used_cpu.saturating_add(self.added.cpu)
    }

    pub fn used_memory(&self) -> i64 {
        self.instance.used_memory.saturating_add(self.added.memory)
    }

    /// Whether one more task needing `wanted` network interfaces exceeds the instance's limit.
    pub fn network_interfaces_exhausted(&self, wanted: u32) -> bool {
        wanted > 0
            && self.instance.network_interface_limit.is_some_and(|limit| {
                self.instance
                    .used_network_interfaces
                    .saturating_add(self.added.network_interfaces)
                    .saturating_add(wanted)
                    > limit
            })
    }

    /// Whether the TCP host port is reserved at registration or bound by a task.
    pub fn tcp_port_taken(&self, port: u16) -> bool {
        self.instance.reserved_tcp_ports.contains(&port)
            || self.instance.used_tcp_ports.contains(&port)
            || self.added.tcp_ports.contains(&port)
    }

    pub fn udp_port_taken(&self, port: u16) -> bool {
        self.instance.reserved_udp_ports.contains(&port)
            || self.instance.used_udp_ports.contains(&port)
            || self.added.udp_ports.contains(&port)
    }

    /// Whether a task of the group (existing, or placed by this request) runs here.
    pub fn hosts_group(&self) -> bool {
        self.added.tasks > 0 || self.group.existing_tasks(self.instance) > 0
    }
}

impl Target for View<'_> {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.instance.attributes.get(name).map(|v| v.as_deref())
    }

    fn agent_connected(&self) -> bool {
        self.instance.agent_connected
    }

    fn running_tasks_count(&self) -> usize {
        self.instance.task_groups.len() + self.added.tasks
    }

    fn any_task_group(&self, test: &mut dyn FnMut(&str) -> bool) -> bool {
        self.instance.task_groups.iter().any(|g| test(g))
            || (self.added.tasks > 0 && test(&self.group.label))
    }
}
