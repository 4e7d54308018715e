//! Synthetic fleets for the placement benchmark: instances shaped like what the agent
//! registers.

use gantry_scheduler::InstanceSnapshot;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

pub const INSTANCE_CPU: i64 = 4096;
pub const INSTANCE_MEMORY: i64 = 16384;
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
/// The Docker remote API version the simulated engines speak (for capability attributes).
pub const DOCKER_API: (u32, u32) = (1, 44);

/// The attributes the agent registers, for an instance in `zone`.
pub fn agent_attributes(zone: &str) -> BTreeMap<String, Option<String>> {
    let mut a: BTreeMap<String, Option<String>> = [
        ("ecs.os-type", "linux"),
        ("ecs.os-family", "LINUX"),
        ("ecs.cpu-architecture", "x86_64"),
        ("ecs.availability-zone", zone),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
    .collect();
    for cap in gantry_agent::api_client::capability_attributes(DOCKER_API) {
        a.insert(cap, None);
    }
    a
}

/// `n` ACTIVE, connected instances of 4,096 CPU units and 16,384 MiB spread round-robin over
/// three zones; a `partly_used` fraction of them (chosen by `seed`) already run a few tasks of
/// other groups, with independent CPU and memory use.
pub fn fleet(n: usize, partly_used: f64, seed: u64) -> Vec<InstanceSnapshot> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let zone = ZONES[i % ZONES.len()];
            let mut s = InstanceSnapshot {
                arn: format!(
                    "arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{:032x}",
                    rng.random::<u128>()
                ),
                status: "ACTIVE".into(),
                agent_connected: true,
                attributes: agent_attributes(zone),
                registered_cpu: INSTANCE_CPU,
                registered_memory: INSTANCE_MEMORY,
                reserved_tcp_ports: vec![22, 2375, 2376, 51678, 51679],
                ..Default::default()
            };
            if rng.random_bool(partly_used) {
                let tasks = rng.random_range(1..=12usize);
                s.used_memory = 512 * rng.random_range(1..=24i64);
                s.used_cpu = 256 * rng.random_range(0..=12i64);
                for t in 0..tasks {
                    let j = (i + t) % 20;
                    s.task_groups.push(format!("service:other-{j}"));
                    s.task_definition_families.push(format!("other-{j}"));
                }
            }
            s
        })
        .collect()
}
