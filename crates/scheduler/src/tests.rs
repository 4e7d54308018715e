//! Tests of `place` and the `validate_*` functions through the public API.

use std::collections::BTreeMap;

use gantry_model::requirements::TaskRequirements;
use gantry_model::types::{PlacementConstraint, PlacementStrategy};

use crate::*;

fn inst(arn: &str, cpu: i64, memory: i64) -> InstanceSnapshot {
    InstanceSnapshot {
        arn: arn.to_string(),
        status: "ACTIVE".to_string(),
        agent_connected: true,
        registered_cpu: cpu,
        registered_memory: memory,
        ..Default::default()
    }
}

fn attr(mut i: InstanceSnapshot, name: &str, value: &str) -> InstanceSnapshot {
    i.attributes
        .insert(name.to_string(), Some(value.to_string()));
    i
}

fn az(i: InstanceSnapshot, zone: &str) -> InstanceSnapshot {
    attr(i, "ecs.availability-zone", zone)
}

/// Adds `n` running tasks of `group` / `family` to the instance.
fn running(mut i: InstanceSnapshot, group: &str, family: &str, n: usize) -> InstanceSnapshot {
    for _ in 0..n {
        i.task_groups.push(group.to_string());
        i.task_definition_families.push(family.to_string());
    }
    i
}

fn request(cpu: i64, memory: i64, count: usize) -> PlacementRequest {
    PlacementRequest {
        requirements: TaskRequirements {
            cpu,
            memory,
            ..Default::default()
        },
        count,
        family: "app".to_string(),
        seed: 7,
        ..Default::default()
    }
}

pub(crate) fn strategy(kind: &str, field: Option<&str>) -> PlacementStrategy {
    PlacementStrategy {
        kind: Some(kind.to_string()),
        field: field.map(str::to_string),
    }
}

pub(crate) fn member_of(expression: &str) -> PlacementConstraint {
    PlacementConstraint {
        kind: Some("memberOf".to_string()),
        expression: Some(expression.to_string()),
    }
}

pub(crate) fn distinct() -> PlacementConstraint {
    PlacementConstraint {
        kind: Some("distinctInstance".to_string()),
        expression: None,
    }
}

fn failure(arn: &str, reason: &str) -> PlacementFailure {
    PlacementFailure {
        arn: arn.to_string(),
        reason: reason.to_string(),
    }
}

fn count_on(p: &Placement, arn: &str) -> usize {
    p.placements.iter().filter(|a| *a == arn).count()
}

/// Tasks placed per availability zone, given the instances they were placed on.
fn per_zone(p: &Placement, instances: &[InstanceSnapshot]) -> BTreeMap<String, usize> {
    let mut zones = BTreeMap::new();
    for arn in &p.placements {
        let zone = instances
            .iter()
            .find(|i| &i.arn == arn)
            .and_then(|i| i.attributes.get("ecs.availability-zone").cloned().flatten())
            .unwrap_or_default();
        *zones.entry(zone).or_insert(0) += 1;
    }
    zones
}

// ---- feasibility reasons -------------------------------------------------------------------

#[test]
fn no_instances_is_one_cluster_level_failure() {
    let p = place(&[], &request(1, 1, 1));
    assert!(p.placements.is_empty());
    assert_eq!(p.failures, vec![failure("", reason::NO_INSTANCES)]);
}

#[test]
fn zero_count_places_nothing_and_fails_nothing() {
    assert_eq!(place(&[], &request(1, 1, 0)), Placement::default());
}

#[test]
fn non_active_instances_are_skipped_with_their_status_reason() {
    let mut inactive = inst("i-inactive", 1024, 1024);
    inactive.status = "INACTIVE".to_string();
    let mut draining = inst("i-draining", 1024, 1024);
    draining.status = "DRAINING".to_string();
    let mut registering = inst("i-registering", 1024, 1024);
    registering.status = "REGISTERING".to_string();
    let p = place(&[inactive, draining, registering], &request(1, 1, 1));
    assert!(p.placements.is_empty());
    assert_eq!(
        p.failures,
        vec![
            failure("i-inactive", reason::INACTIVE),
            failure("i-draining", reason::DRAINING),
            failure("i-registering", reason::INACTIVE),
        ]
    );
}

#[test]
fn disconnected_agent_is_skipped_with_agent() {
    let mut down = inst("i-down", 1024, 1024);
    down.agent_connected = false;
    let up = inst("i-up", 1024, 1024);
    let p = place(&[down.clone(), up], &request(1, 1, 1));
    assert_eq!(p.placements, vec!["i-up"]);
    let p = place(&[down], &request(1, 1, 1));
    assert_eq!(p.failures, vec![failure("i-down", reason::AGENT)]);
}

#[test]
fn cpu_and_memory_must_fit_exactly_or_better() {
    let mut exact = inst("i-exact", 1024, 2048);
    exact.used_cpu = 512;
    exact.used_memory = 1024;
    assert_eq!(
        place(&[exact.clone()], &request(512, 1024, 1)).placements,
        vec!["i-exact"]
    );

    let p = place(&[exact.clone()], &request(513, 1, 1));
    assert_eq!(p.failures, vec![failure("i-exact", reason::RESOURCE_CPU)]);
    let p = place(&[exact.clone()], &request(1, 1025, 1));
    assert_eq!(
        p.failures,
        vec![failure("i-exact", reason::RESOURCE_MEMORY)]
    );
    // Both short: only the first reason is reported.
    let p = place(&[exact], &request(4096, 4096, 1));
    assert_eq!(p.failures, vec![failure("i-exact", reason::RESOURCE_CPU)]);
}

#[test]
fn reserved_or_used_host_ports_block_placement() {
    let mut reserved = inst("i-reserved", 1024, 1024);
    reserved.reserved_tcp_ports = vec![22, 80];
    let mut used = inst("i-used", 1024, 1024);
    used.used_tcp_ports = vec![80];
    let mut udp_only = inst("i-udp", 1024, 1024);
    udp_only.used_udp_ports = vec![80];
    let mut req = request(1, 1, 1);
    req.requirements.tcp_ports = vec![80];
    // A UDP binding of the same number does not conflict with TCP.
    let p = place(&[reserved.clone(), used.clone(), udp_only.clone()], &req);
    assert_eq!(p.placements, vec!["i-udp"]);

    let p = place(&[reserved, used], &req);
    assert_eq!(
        p.failures,
        vec![
            failure("i-reserved", reason::RESOURCE_PORTS),
            failure("i-used", reason::RESOURCE_PORTS)
        ]
    );

    let mut udp_req = request(1, 1, 1);
    udp_req.requirements.udp_ports = vec![80];
    let mut reserved_udp = inst("i-reserved-udp", 1024, 1024);
    reserved_udp.reserved_udp_ports = vec![80];
    let p = place(&[udp_only, reserved_udp], &udp_req);
    assert_eq!(
        p.failures,
        vec![
            failure("i-udp", reason::RESOURCE_PORTS_UDP),
            failure("i-reserved-udp", reason::RESOURCE_PORTS_UDP)
        ]
    );
}

#[test]
fn failures_list_each_instance_once_in_snapshot_order() {
    let mut a = inst("i-a", 100, 100);
    a.agent_connected = false;
    let b = inst("i-b", 100, 100);
    let mut c = inst("i-c", 1000, 100);
    c.status = "DRAINING".to_string();
    // A duplicated snapshot entry still yields one failure per (ARN, reason).
    let p = place(&[a.clone(), b, c, a], &request(500, 50, 1));
    assert_eq!(
        p.failures,
        vec![
            failure("i-a", reason::AGENT),
            failure("i-b", reason::RESOURCE_CPU),
            failure("i-c", reason::DRAINING),
        ]
    );
}

// ---- multi-task requests -------------------------------------------------------------------

#[test]
fn later_tasks_see_earlier_placements_and_stop_when_full() {
    let instances = [inst("i-a", 1024, 4096), inst("i-b", 1024, 4096)];
    let p = place(&instances, &request(512, 256, 5));
    assert_eq!(
        p.placements.len(),
        4,
        "two 512-unit tasks fit on each instance"
    );
    assert_eq!(count_on(&p, "i-a"), 2);
    assert_eq!(count_on(&p, "i-b"), 2);
    assert_eq!(
        p.failures,
        vec![
            failure("i-a", reason::RESOURCE_CPU),
            failure("i-b", reason::RESOURCE_CPU)
        ]
    );
}

#[test]
fn a_host_port_taken_by_an_earlier_task_of_the_request_blocks_the_next() {
    let mut req = request(1, 1, 3);
    req.requirements.tcp_ports = vec![8080];
    let p = place(&[inst("i-a", 1024, 1024), inst("i-b", 1024, 1024)], &req);
    assert_eq!(p.placements.len(), 2);
    assert_eq!(count_on(&p, "i-a"), 1);
    assert_eq!(count_on(&p, "i-b"), 1);
    assert_eq!(
        p.failures,
        vec![
            failure("i-a", reason::RESOURCE_PORTS),
            failure("i-b", reason::RESOURCE_PORTS)
        ]
    );
}

// ---- strategies ----------------------------------------------------------------------------

#[test]
fn binpack_memory_fills_the_fullest_instance_first() {
    let mut a = inst("i-a", 4096, 2000);
    a.used_memory = 1000; // 1000 left
    let mut b = inst("i-b", 4096, 2000);
    b.used_memory = 1400; // 600 left
    let c = inst("i-c", 4096, 2000); // 2000 left
    let mut req = request(1, 500, 4);
    req.strategies = vec![strategy("binpack", Some("memory"))];
    let p = place(&[a, b, c], &req);
    // b (600 -> 100), then a (1000 -> 500), a again (500 -> 0), then c.
    assert_eq!(p.placements, vec!["i-b", "i-a", "i-a", "i-c"]);
}

#[test]
fn binpack_cpu_uses_cpu_not_memory() {
    let mut a = inst("i-a", 2048, 8192);
    a.used_cpu = 1024;
    a.used_memory = 0;
    let mut b = inst("i-b", 2048, 8192);
    b.used_cpu = 0;
    b.used_memory = 8000;
    let mut req = request(256, 64, 1);
    req.strategies = vec![strategy("binpack", Some("cpu"))];
    assert_eq!(place(&[a.clone(), b.clone()], &req).placements, vec!["i-a"]);
    req.strategies = vec![strategy("binpack", Some("memory"))];
    assert_eq!(place(&[a, b], &req).placements, vec!["i-b"]);
}

#[test]
fn spread_by_zone_balances_across_zones_not_instances() {
    let instances = [
        az(inst("i-a1", 4096, 4096), "us-east-1a"),
        az(inst("i-a2", 4096, 4096), "us-east-1a"),
        az(inst("i-a3", 4096, 4096), "us-east-1a"),
        az(inst("i-b1", 4096, 4096), "us-east-1b"),
        az(inst("i-b2", 4096, 4096), "us-east-1b"),
        az(inst("i-c1", 4096, 4096), "us-east-1c"),
    ];
    let mut req = request(128, 128, 6);
    req.group = Some("service:web".to_string());
    req.strategies = vec![strategy("spread", Some("attribute:ecs.availability-zone"))];
    for seed in 0..20 {
        req.seed = seed;
        let p = place(&instances, &req);
        let zones: Vec<usize> = per_zone(&p, &instances).into_values().collect();
        assert_eq!(zones, vec![2, 2, 2], "seed {seed}: {:?}", p.placements);
    }
}

#[test]
fn spread_by_zone_counts_existing_tasks_of_the_group_even_on_full_instances() {
    let mut full_a = running(
        az(inst("i-a1", 1024, 1024), "us-east-1a"),
        "service:web",
        "web",
        3,
    );
    full_a.used_cpu = 1024;
    let instances = [
        full_a,
        az(inst("i-a2", 4096, 4096), "us-east-1a"),
        // Tasks of other groups do not count.
        running(
            az(inst("i-b1", 4096, 4096), "us-east-1b"),
            "service:other",
            "web",
            5,
        ),
        az(inst("i-c1", 4096, 4096), "us-east-1c"),
    ];
    let mut req = request(128, 128, 4);
    req.group = Some("service:web".to_string());
    req.strategies = vec![strategy("spread", Some("attribute:ecs.availability-zone"))];
    let p = place(&instances, &req);
    // Zone a already has 3 tasks of the group, so the four new ones go 2 to b and 2 to c.
    assert_eq!(count_on(&p, "i-a2"), 0, "{:?}", p.placements);
    assert_eq!(count_on(&p, "i-b1"), 2);
    assert_eq!(count_on(&p, "i-c1"), 2);
}

#[test]
fn spread_by_instance_id_and_its_host_alias() {
    for field in ["instanceId", "host"] {
        let instances = [
            running(inst("i-a", 4096, 4096), "service:web", "web", 2),
            inst("i-b", 4096, 4096),
            inst("i-c", 4096, 4096),
        ];
        let mut req = request(1, 1, 4);
        req.group = Some("service:web".to_string());
        req.strategies = vec![strategy("spread", Some(field))];
        let p = place(&instances, &req);
        assert_eq!(count_on(&p, "i-b"), 2, "{field}: {:?}", p.placements);
        assert_eq!(count_on(&p, "i-c"), 2, "{field}: {:?}", p.placements);
    }
}

#[test]
fn spread_without_group_counts_tasks_of_the_same_family() {
    let instances = [
        running(inst("i-a", 4096, 4096), "family:app", "app", 1),
        running(inst("i-b", 4096, 4096), "family:other", "other", 3),
    ];
    let mut req = request(1, 1, 1);
    req.strategies = vec![strategy("spread", Some("instanceId"))];
    assert_eq!(place(&instances, &req).placements, vec!["i-b"]);
    // With an explicit group, only that group counts (the family's task on i-a is ignored).
    req.group = Some("family:other".to_string());
    assert_eq!(place(&instances, &req).placements, vec!["i-a"]);
}

#[test]
fn strategies_apply_in_order_as_tie_breakers() {
    let mut a_loose = az(inst("i-a-loose", 4096, 4096), "us-east-1a");
    a_loose.used_memory = 0;
    let mut a_tight = az(inst("i-a-tight", 4096, 4096), "us-east-1a");
    a_tight.used_memory = 3000;
    let mut b_tighter = running(
        az(inst("i-b-tighter", 4096, 4096), "us-east-1b"),
        "service:web",
        "web",
        1,
    );
    b_tighter.used_memory = 3500;
    let instances = [a_loose, a_tight, b_tighter];
    let mut req = request(1, 100, 1);
    req.group = Some("service:web".to_string());

    // Spread first: zone a has no tasks of the group; within it, binpack picks the tighter.
    req.strategies = vec![
        strategy("spread", Some("attribute:ecs.availability-zone")),
        strategy("binpack", Some("memory")),
    ];
    assert_eq!(place(&instances, &req).placements, vec!["i-a-tight"]);

    // Binpack first: the tightest instance overall wins regardless of zone balance.
    req.strategies = vec![
        strategy("binpack", Some("memory")),
        strategy("spread", Some("attribute:ecs.availability-zone")),
    ];
    assert_eq!(place(&instances, &req).placements, vec!["i-b-tighter"]);
}

#[test]
fn instances_without_the_spread_attribute_form_their_own_bucket() {
    let instances = [
        az(inst("i-a", 4096, 4096), "us-east-1a"),
        inst("i-none", 4096, 4096),
    ];
    let mut req = request(1, 1, 2);
    req.strategies = vec![strategy("spread", Some("attribute:ecs.availability-zone"))];
    let p = place(&instances, &req);
    assert_eq!(count_on(&p, "i-a"), 1);
    assert_eq!(count_on(&p, "i-none"), 1);
}

#[test]
fn same_seed_same_placement_and_seeds_vary_the_choice() {
    let instances: Vec<_> = (0..20)
        .map(|n| inst(&format!("i-{n:02}"), 4096, 4096))
        .collect();
    for strategies in [vec![], vec![strategy("random", None)]] {
        let mut req = request(1, 1, 5);
        req.strategies = strategies;
        let first = place(&instances, &req);
        assert_eq!(first, place(&instances, &req));
        let mut distinct_results = std::collections::HashSet::new();
        for seed in 0..10 {
            req.seed = seed;
            distinct_results.insert(place(&instances, &req).placements);
        }
        assert!(
            distinct_results.len() > 1,
            "seed should change random placement"
        );
    }
}

#[test]
fn binpack_ties_are_broken_by_seed() {
    let instances: Vec<_> = (0..10)
        .map(|n| inst(&format!("i-{n}"), 4096, 4096))
        .collect();
    let mut req = request(1, 1, 1);
    req.strategies = vec![strategy("binpack", Some("memory"))];
    let chosen: std::collections::HashSet<_> = (0..30)
        .map(|seed| {
            req.seed = seed;
            place(&instances, &req).placements
        })
        .collect();
    assert!(chosen.len() > 1);
}

// ---- constraints ---------------------------------------------------------------------------

#[test]
fn distinct_instance_places_each_task_of_the_request_on_its_own_instance() {
    let instances = [
        inst("i-a", 4096, 4096),
        inst("i-b", 4096, 4096),
        inst("i-c", 4096, 4096),
    ];
    let mut req = request(1, 1, 5);
    req.group = Some("service:web".to_string());
    req.constraints = vec![distinct()];
    let p = place(&instances, &req);
    let mut placed = p.placements.clone();
    placed.sort();
    assert_eq!(placed, vec!["i-a", "i-b", "i-c"]);
    assert_eq!(
        p.failures,
        vec![
            failure("i-a", reason::DISTINCT_INSTANCE),
            failure("i-b", reason::DISTINCT_INSTANCE),
            failure("i-c", reason::DISTINCT_INSTANCE)
        ]
    );
}

#[test]
fn distinct_instance_avoids_instances_already_running_the_group() {
    let instances = [
        running(inst("i-a", 4096, 4096), "service:web", "web", 1),
        running(inst("i-b", 4096, 4096), "service:api", "web", 1),
    ];
    let mut req = request(1, 1, 1);
    req.group = Some("service:web".to_string());
    req.constraints = vec![distinct()];
    assert_eq!(place(&instances, &req).placements, vec!["i-b"]);

    // Without a group, the task definition family decides.
    req.group = None;
    req.family = "web".to_string();
    let p = place(&instances, &req);
    assert!(p.placements.is_empty());
    assert_eq!(p.failures.len(), 2);
}

#[test]
fn member_of_filters_by_attribute_expressions() {
    let instances = [
        attr(
            az(inst("i-t2a", 4096, 4096), "us-east-1a"),
            "ecs.instance-type",
            "t2.small",
        ),
        attr(
            az(inst("i-t2d", 4096, 4096), "us-east-1d"),
            "ecs.instance-type",
            "t2.small",
        ),
        attr(
            az(inst("i-m5a", 4096, 4096), "us-east-1a"),
            "ecs.instance-type",
            "m5.large",
        ),
        attr(
            az(inst("i-g2b", 4096, 4096), "us-east-1b"),
            "ecs.instance-type",
            "g2.2xlarge",
        ),
    ];
    let cases: [(&[&str], &[&str]); 6] = [
        (&["attribute:ecs.instance-type == t2.small"], &["i-t2a", "i-t2d"]),
        (
            &["attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d"],
            &["i-t2a"],
        ),
        (
            &["attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"],
            &["i-g2b", "i-m5a", "i-t2a"],
        ),
        (
            &["attribute:ecs.instance-type == g2.2xlarge or attribute:ecs.instance-type == m5.large"],
            &["i-g2b", "i-m5a"],
        ),
        // Several constraints must all hold.
        (
            &[
                "attribute:ecs.availability-zone == us-east-1a",
                "not(attribute:ecs.instance-type =~ t2.*)",
            ],
            &["i-m5a"],
        ),
        (&["attribute:stack exists"], &[]),
    ];
    for (expressions, expected) in cases {
        let mut req = request(1, 1, 4);
        // Spread so that every eligible instance receives a task.
        req.strategies = vec![strategy("spread", Some("instanceId"))];
        req.constraints = expressions.iter().map(|e| member_of(e)).collect();
        let p = place(&instances, &req);
        let mut hosts = p.placements.clone();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts, expected, "{expressions:?}");
        for f in &p.failures {
            let eligible = expected.contains(&f.arn.as_str());
            assert!(
                eligible || f.reason == reason::MEMBER_OF,
                "{expressions:?}: {f:?}"
            );
        }
    }
}

#[test]
fn member_of_task_group_affinity_and_anti_affinity() {
    let instances = [
        running(inst("i-db", 4096, 4096), "database", "db", 1),
        inst("i-empty", 4096, 4096),
    ];
    let mut req = request(1, 1, 1);
    req.constraints = vec![member_of("task:group == database")];
    assert_eq!(place(&instances, &req).placements, vec!["i-db"]);
    req.constraints = vec![member_of("not(task:group == database)")];
    assert_eq!(place(&instances, &req).placements, vec!["i-empty"]);
}

#[test]
fn member_of_sees_tasks_placed_earlier_in_the_request() {
    let instances = [inst("i-a", 4096, 4096), inst("i-b", 4096, 4096)];
    let mut req = request(1, 1, 3);
    req.group = Some("service:web".to_string());
    req.constraints = vec![member_of("not(task:group == service:web)")];
    let p = place(&instances, &req);
    assert_eq!(p.placements.len(), 2);
    assert_ne!(p.placements[0], p.placements[1]);
    assert_eq!(p.failures.len(), 2);
    assert!(p.failures.iter().all(|f| f.reason == reason::MEMBER_OF));

    // runningTasksCount also counts this request's tasks; without a group the new tasks
    // carry `family:<family>`.
    let mut req = request(1, 1, 4);
    req.constraints = vec![member_of("runningTasksCount < 2")];
    let p = place(&instances, &req);
    assert_eq!(count_on(&p, "i-a"), 2);
    assert_eq!(count_on(&p, "i-b"), 2);
    let mut req = request(1, 1, 2);
    req.constraints = vec![member_of("not(task:group == family:app)")];
    assert_eq!(place(&instances, &req).placements.len(), 2);
}

#[test]
fn constraints_are_checked_after_resources() {
    let mut small = attr(inst("i-small", 100, 100), "stack", "dev");
    small.used_cpu = 100;
    let mut req = request(50, 10, 1);
    req.constraints = vec![member_of("attribute:stack == prod")];
    let p = place(&[small], &req);
    assert_eq!(p.failures, vec![failure("i-small", reason::RESOURCE_CPU)]);
}

#[test]
fn invalid_rules_given_to_place_fail_closed() {
    let mut req = request(1, 1, 1);
    req.constraints = vec![member_of("attribute:x ==")];
    let p = place(&[inst("i-a", 1024, 1024)], &req);
    assert!(p.placements.is_empty());
    assert_eq!(p.failures.len(), 1);
    assert_eq!(p.failures[0].arn, "");
    assert!(p.failures[0].reason.contains("memberOf"));

    let mut req = request(1, 1, 1);
    req.strategies = vec![strategy("pack", None)];
    let p = place(&[inst("i-a", 1024, 1024)], &req);
    assert!(p.placements.is_empty());
    assert!(p.failures[0].reason.contains("pack"));
}

#[test]
fn ten_thousand_instances_with_every_stage() {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let instances: Vec<_> = (0..10_000)
        .map(|n| {
            let mut i = attr(
                az(inst(&format!("i-{n:05}"), 2048, 4096), zones[n % 3]),
                "ecs.instance-type",
                if n % 2 == 0 { "t2.small" } else { "m5.large" },
            );
            i.used_memory = (n as i64 * 37) % 4000;
            if n % 7 == 0 {
                i.task_groups.push("service:web".to_string());
            }
            i
        })
        .collect();
    let mut req = request(256, 512, 10);
    req.group = Some("service:web".to_string());
    req.strategies = vec![
        strategy("spread", Some("attribute:ecs.availability-zone")),
        strategy("binpack", Some("memory")),
    ];
    req.constraints = vec![distinct(), member_of("attribute:ecs.instance-type =~ t2.*")];
    let p = place(&instances, &req);
    assert_eq!(p.placements.len(), 10);
    assert!(p.failures.is_empty());
    // Spread balances the group's tasks per zone, existing (477/476/476) plus new.
    let existing = [477, 476, 476];
    let totals: Vec<usize> = per_zone(&p, &instances)
        .into_values()
        .zip(existing)
        .map(|(new, old)| new + old)
        .collect();
    assert_eq!(totals.len(), 3);
    assert!(totals.iter().max().unwrap_or(&0) - totals.iter().min().unwrap_or(&0) <= 1);
    for arn in &p.placements {
        let n: usize = arn[2..].parse().unwrap();
        assert!(
            n.is_multiple_of(2) && !n.is_multiple_of(7),
            "{arn} breaks memberOf or distinctInstance"
        );
    }
}

// ---- validation ----------------------------------------------------------------------------

#[test]
fn validate_strategies_accepts_documented_forms() {
    let ok = [
        strategy("random", None),
        strategy("random", Some("ignored")),
        strategy("binpack", Some("cpu")),
        strategy("binpack", Some("memory")),
        strategy("spread", Some("instanceId")),
        strategy("spread", Some("host")),
    ];
    assert_eq!(validate_strategies(&ok[..5]), Ok(()));
    assert_eq!(validate_strategies(&ok[5..]), Ok(()));
    assert_eq!(
        validate_strategies(&[strategy("spread", Some("attribute:ecs.availability-zone"))]),
        Ok(())
    );
    assert_eq!(validate_strategies(&[]), Ok(()));
    let six = vec![strategy("random", None); MAX_STRATEGIES + 1];
    assert!(validate_strategies(&six)
        .unwrap_err()
        .contains("maximum of 5"));
}

#[test]
fn validate_strategies_rejects_bad_types_and_fields() {
    for (s, hint) in [
        (strategy("pack", None), "type 'pack'"),
        (PlacementStrategy::default(), "must have a type"),
        (strategy("Random", None), "type 'Random'"),
        (strategy("binpack", None), "requires a field"),
        (strategy("binpack", Some("disk")), "'disk'"),
        (strategy("spread", None), "requires a field"),
        (
            strategy("spread", Some("ecs.availability-zone")),
            "attribute:<name>",
        ),
        (strategy("spread", Some("attribute:")), "attribute:<name>"),
    ] {
        let err = validate_strategies(std::slice::from_ref(&s)).expect_err(&format!("{s:?}"));
        assert!(err.contains(hint), "{s:?}: {err}");
    }
}

#[test]
fn validate_constraints_checks_types_expressions_and_limit() {
    assert_eq!(
        validate_constraints(&[distinct(), member_of("attribute:ecs.os-type == linux")]),
        Ok(())
    );
    let with_expression = PlacementConstraint {
        kind: Some("distinctInstance".to_string()),
        expression: Some("attribute:x == y".to_string()),
    };
    let no_expression = PlacementConstraint {
        kind: Some("memberOf".to_string()),
        expression: None,
    };
    let bad_type = PlacementConstraint {
        kind: Some("spread".to_string()),
        expression: None,
    };
    for (c, hint) in [
        (with_expression, "can't specify an expression"),
        (no_expression, "requires an expression"),
        (bad_type, "type 'spread'"),
        (PlacementConstraint::default(), "must have a type"),
        (
            member_of("attribute:x in [a, b"),
            "Invalid memberOf expression",
        ),
        (member_of("ami == x"), "unknown subject 'ami'"),
    ] {
        let err = validate_constraints(std::slice::from_ref(&c)).expect_err(&format!("{c:?}"));
        assert!(err.contains(hint), "{c:?}: {err}");
    }
    let eleven = vec![distinct(); MAX_CONSTRAINTS + 1];
    assert!(validate_constraints(&eleven)
        .unwrap_err()
        .contains("maximum of 10"));
    assert_eq!(
        validate_constraints(&vec![distinct(); MAX_CONSTRAINTS]),
        Ok(())
    );
}

#[test]
fn awsvpc_tasks_stop_at_the_network_interface_limit() {
    let mut limited = inst("a", 4096, 8192);
    limited.network_interface_limit = Some(2);
    limited.used_network_interfaces = 1;
    let mut req = request(10, 10, 3);
    req.requirements.network_interfaces = 1;
    let p = place(&[limited.clone()], &req);
    // One more fits; the other two find the limit, whatever the strategy.
    assert_eq!(count_on(&p, "a"), 1);
    assert!(p
        .failures
        .iter()
        .all(|f| f.reason == crate::reason::RESOURCE_ENI));
    req.strategies = vec![strategy("binpack", Some("memory"))];
    let mut index = crate::PlacementIndex::new(vec![limited.clone()]);
    assert_eq!(count_on(&index.place(&req), "a"), 1);
    // Tasks without their own interface do not count against it.
    req.requirements.network_interfaces = 0;
    assert_eq!(count_on(&place(&[limited], &req), "a"), 3);
}
