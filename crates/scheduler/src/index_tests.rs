//! [`PlacementIndex`] gives the same answers as [`place`]: on random clusters and requests,
//! through sequences of updates, and on the paths where it falls back to the scan.

use std::collections::HashSet;

use gantry_model::requirements::TaskRequirements;
use gantry_model::types::{PlacementConstraint, PlacementStrategy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::*;

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

// The request builders the scan's tests use.
use crate::tests::{distinct, member_of, strategy};

/// A small random instance: few distinct usage levels (so that ties are common), some not
/// ACTIVE or disconnected, some with ports in use, some running tasks of a few groups.
fn random_instance(rng: &mut StdRng, n: usize) -> InstanceSnapshot {
    let mut s = InstanceSnapshot {
        arn: format!("i-{n:04}"),
        status: match rng.random_range(0..12) {
            0 => "DRAINING",
            1 => "INACTIVE",
            _ => "ACTIVE",
        }
        .to_string(),
        agent_connected: rng.random_range(0..10) != 0,
        registered_cpu: [1024, 2048, 4096][rng.random_range(0..3)],
        registered_memory: [2048, 4096, 8192][rng.random_range(0..3)],
        ..Default::default()
    };
    s.used_cpu = 256 * rng.random_range(0..=(s.registered_cpu / 256));
    s.used_memory = 512 * rng.random_range(0..=(s.registered_memory / 512));
    s.attributes.insert(
        "ecs.availability-zone".into(),
        Some(ZONES[rng.random_range(0..3)].into()),
    );
    if rng.random_bool(0.5) {
        s.attributes
            .insert("ecs.instance-type".into(), Some("t2.small".into()));
    }
    if rng.random_bool(0.2) {
        s.used_tcp_ports.push(80);
    }
    if rng.random_bool(0.1) {
        s.reserved_udp_ports.push(53);
    }
    for _ in 0..rng.random_range(0..3) {
        let g = ["service:web", "service:db", "family:app"][rng.random_range(0..3)];
        s.task_groups.push(g.to_string());
        s.task_definition_families
            .push(g.rsplit(':').next().unwrap_or("").to_string());
    }
    s
}

fn random_strategies(rng: &mut StdRng) -> Vec<PlacementStrategy> {
    let binpacks = [
        vec![strategy("binpack", Some("memory"))],
        vec![strategy("binpack", Some("cpu"))],
        vec![
            strategy("binpack", Some("memory")),
            strategy("binpack", Some("cpu")),
        ],
        vec![
            strategy("binpack", Some("cpu")),
            strategy("binpack", Some("memory")),
        ],
        vec![
            strategy("binpack", Some("memory")),
            strategy("binpack", Some("memory")),
        ],
    ];
    match rng.random_range(0..10) {
        // Not all binpack: the index answers with the scan.
        0 => vec![strategy("spread", Some("attribute:ecs.availability-zone"))],
        1 => vec![
            strategy("binpack", Some("memory")),
            strategy("spread", Some("instanceId")),
        ],
        2 => vec![strategy("random", None)],
        3 => Vec::new(),
        _ => binpacks[rng.random_range(0..binpacks.len())].clone(),
    }
}

fn random_constraints(rng: &mut StdRng) -> Vec<PlacementConstraint> {
    let pool = [
        member_of("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"),
        member_of("attribute:ecs.availability-zone == us-east-1c"),
        member_of("attribute:ecs.instance-type exists"),
        member_of("not(task:group == service:db)"),
        member_of("runningTasksCount < 2"),
        member_of("task:group == service:web or attribute:ecs.availability-zone != us-east-1a"),
        distinct(),
    ];
    (0..rng.random_range(0..3))
        .map(|_| pool[rng.random_range(0..pool.len())].clone())
        .collect()
}

fn random_request(rng: &mut StdRng) -> PlacementRequest {
    let mut requirements = TaskRequirements {
        cpu: 128 * rng.random_range(0..=8),
        memory: 256 * rng.random_range(0..=8),
        ..Default::default()
    };
    if rng.random_bool(0.15) {
        requirements.tcp_ports.push(80);
    }
    if rng.random_bool(0.05) {
        requirements.udp_ports.push(53);
    }
    PlacementRequest {
        requirements,
        count: if rng.random_bool(0.6) {
            1
        } else {
            rng.random_range(2..=6)
        },
        strategies: random_strategies(rng),
        constraints: random_constraints(rng),
        group: if rng.random_bool(0.5) {
            Some("service:web".to_string())
        } else {
            None
        },
        family: "app".to_string(),
        seed: rng.random(),
    }
}

/// What a committed task adds to its instance's snapshot.
fn commit(s: &mut InstanceSnapshot, request: &PlacementRequest) {
    let req = &request.requirements;
    s.used_cpu += req.cpu;
    s.used_memory += req.memory;
    s.used_tcp_ports.extend(&req.tcp_ports);
    s.used_udp_ports.extend(&req.udp_ports);
    s.task_groups.push(
        request
            .group
            .clone()
            .unwrap_or_else(|| format!("family:{}", request.family)),
    );
    s.task_definition_families.push(request.family.clone());
}

#[test]
fn index_answers_like_the_scan_on_random_clusters_and_requests() {
    let mut indexed_placements = 0;
    for cluster in 0..150u64 {
        let mut rng = StdRng::seed_from_u64(cluster);
        let n = rng.random_range(1..60);
        let instances: Vec<_> = (0..n).map(|i| random_instance(&mut rng, i)).collect();
        let mut index = PlacementIndex::new(instances);
        for step in 0..40 {
            let request = random_request(&mut rng);
            let expected = place(index.instances(), &request);
            let got = index.place(&request);
            assert_eq!(
                got, expected,
                "cluster {cluster}, step {step}, request {request:?}"
            );
            if request
                .strategies
                .iter()
                .all(|s| s.kind.as_deref() == Some("binpack"))
                && !request.strategies.is_empty()
            {
                indexed_placements += got.placements.len();
            }
            // Commit what was placed, and now and then change an instance in other ways.
            for arn in &got.placements {
                assert!(index.update(arn, |s| commit(s, &request)));
            }
            if rng.random_bool(0.2) && !index.is_empty() {
                let arn = index.instances()[rng.random_range(0..index.len())]
                    .arn
                    .clone();
                let stop = rng.random_bool(0.5);
                index.update(&arn, |s| {
                    if stop && s.used_memory >= 256 && s.used_cpu >= 128 {
                        s.used_memory -= 256;
                        s.used_cpu -= 128;
                        s.task_groups.pop();
                        s.task_definition_families.pop();
                    } else {
                        s.agent_connected = !s.agent_connected;
                        s.attributes.insert(
                            "ecs.availability-zone".into(),
                            Some(ZONES[(s.used_cpu as usize / 128) % 3].into()),
                        );
                    }
                });
            }
        }
    }
    assert!(
        indexed_placements > 1000,
        "the index path should have been exercised ({indexed_placements} placements)"
    );
}

#[test]
fn index_answers_like_the_scan_on_a_large_binpack_fleet() {
    // The benchmark's shape: 4,096/16,384 instances in three zones, a third partly used, one
    // task per call, binpack memory + memberOf, until the fleet is full.
    let mut rng = StdRng::seed_from_u64(42);
    let instances: Vec<_> = (0..600)
        .map(|i| {
            let mut s = InstanceSnapshot {
                arn: format!("i-{i:05}"),
                status: "ACTIVE".into(),
                agent_connected: true,
                registered_cpu: 4096,
                registered_memory: 16384,
                ..Default::default()
            };
            s.attributes
                .insert("ecs.availability-zone".into(), Some(ZONES[i % 3].into()));
            if rng.random_bool(0.3) {
                s.used_memory = 512 * rng.random_range(1..=24);
                s.used_cpu = 256 * rng.random_range(0..=12);
            }
            s
        })
        .collect();
    let mut index = PlacementIndex::new(instances);
    let mut request = PlacementRequest {
        requirements: TaskRequirements {
            cpu: 256,
            memory: 512,
            ..Default::default()
        },
        count: 1,
        strategies: vec![strategy("binpack", Some("memory"))],
        constraints: vec![member_of(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        )],
        group: Some("family:bench".into()),
        family: "bench".into(),
        seed: 0,
    };
    let mut placed = 0;
    for call in 0..10_000u64 {
        request.seed = call;
        let expected = place(index.instances(), &request);
        let got = index.place(&request);
        assert_eq!(got, expected, "call {call}");
        let Some(arn) = got.placements.first() else {
            break;
        };
        index.update(arn, |s| commit(s, &request));
        placed += 1;
    }
    // 400 instances in zones a and b take 16 tasks each (CPU-bound), less what the partly
    // used ones already hold.
    assert!(placed > 5000, "placed {placed}");
}

#[test]
fn binpack_picks_the_least_remaining_memory_and_ties_vary_with_the_seed() {
    let mut instances: Vec<_> = (0..30)
        .map(|i| InstanceSnapshot {
            arn: format!("i-{i:02}"),
            status: "ACTIVE".into(),
            agent_connected: true,
            registered_cpu: 4096,
            registered_memory: 4096,
            ..Default::default()
        })
        .collect();
    instances[17].used_memory = 3000;
    let mut index = PlacementIndex::new(instances.clone());
    let mut req = PlacementRequest {
        requirements: TaskRequirements {
            cpu: 1,
            memory: 100,
            ..Default::default()
        },
        count: 1,
        strategies: vec![strategy("binpack", Some("memory"))],
        family: "app".into(),
        ..Default::default()
    };
    assert_eq!(index.place(&req).placements, vec!["i-17"]);
    // With i-17 too full, the other 29 tie: the seed decides, and every seed agrees with the
    // scan.
    req.requirements.memory = 2000;
    let mut chosen = HashSet::new();
    for seed in 0..60 {
        req.seed = seed;
        let p = index.place(&req);
        assert_eq!(p, place(&instances, &req));
        assert_ne!(p.placements, vec!["i-17"]);
        chosen.insert(p.placements);
    }
    assert!(chosen.len() > 10, "ties should spread: {}", chosen.len());
}

#[test]
fn cpu_exhausted_instances_are_skipped_and_failures_match_the_scan() {
    let mut instances: Vec<_> = (0..50)
        .map(|i| InstanceSnapshot {
            arn: format!("i-{i:02}"),
            status: "ACTIVE".into(),
            agent_connected: true,
            registered_cpu: 1024,
            registered_memory: 8192,
            used_cpu: 1024,
            used_memory: 1024,
            ..Default::default()
        })
        .collect();
    instances[49].used_cpu = 0;
    instances[49].used_memory = 0;
    let mut index = PlacementIndex::new(instances.clone());
    let mut req = PlacementRequest {
        requirements: TaskRequirements {
            cpu: 512,
            memory: 512,
            ..Default::default()
        },
        count: 3,
        strategies: vec![strategy("binpack", Some("memory"))],
        family: "app".into(),
        ..Default::default()
    };
    let p = index.place(&req);
    assert_eq!(p, place(&instances, &req));
    assert_eq!(p.placements, vec!["i-49", "i-49"]);
    assert_eq!(p.failures.len(), 50);
    assert!(p.failures.iter().all(|f| f.reason == reason::RESOURCE_CPU));
    req.count = 1;
    req.constraints = vec![member_of("attribute:stack exists")];
    let p = index.place(&req);
    assert_eq!(p, place(&instances, &req));
    assert!(p.placements.is_empty());
}

#[test]
fn updates_upserts_and_removals_keep_the_index_current() {
    let base = |arn: &str, used: i64| InstanceSnapshot {
        arn: arn.to_string(),
        status: "ACTIVE".into(),
        agent_connected: true,
        registered_cpu: 4096,
        registered_memory: 4096,
        used_memory: used,
        ..Default::default()
    };
    let mut index = PlacementIndex::new(vec![base("i-a", 1000), base("i-b", 2000)]);
    let req = PlacementRequest {
        requirements: TaskRequirements {
            cpu: 1,
            memory: 100,
            ..Default::default()
        },
        count: 1,
        strategies: vec![strategy("binpack", Some("memory"))],
        family: "app".into(),
        ..Default::default()
    };
    assert_eq!(index.place(&req).placements, vec!["i-b"]);
    assert!(index.update("i-a", |s| s.used_memory = 3000));
    assert_eq!(index.place(&req).placements, vec!["i-a"]);
    assert!(index.update("i-a", |s| s.status = "DRAINING".into()));
    assert_eq!(index.place(&req).placements, vec!["i-b"]);
    index.upsert(base("i-c", 3500));
    assert_eq!(index.place(&req).placements, vec!["i-c"]);
    index.upsert(base("i-c", 0));
    assert_eq!(index.place(&req).placements, vec!["i-b"]);
    assert_eq!(index.remove("i-b").map(|s| s.arn), Some("i-b".to_string()));
    assert_eq!(index.place(&req).placements, vec!["i-c"]);
    assert!(!index.update("i-b", |_| {}));
    assert_eq!(index.len(), 2);
    assert_eq!(
        index.get("i-a").map(|s| s.status.as_str()),
        Some("DRAINING")
    );
}

#[test]
fn out_of_range_figures_and_other_strategies_fall_back_to_the_scan() {
    let mut huge = InstanceSnapshot {
        arn: "i-huge".into(),
        status: "ACTIVE".into(),
        agent_connected: true,
        registered_cpu: i64::MAX,
        registered_memory: i64::MAX,
        used_memory: -5,
        ..Default::default()
    };
    let normal = InstanceSnapshot {
        registered_cpu: 1024,
        registered_memory: 1024,
        arn: "i-normal".into(),
        ..huge.clone()
    };
    let mut index = PlacementIndex::new(vec![huge.clone(), normal.clone()]);
    let mut req = PlacementRequest {
        requirements: TaskRequirements {
            cpu: 1,
            memory: i64::MAX,
            ..Default::default()
        },
        count: 2,
        strategies: vec![strategy("binpack", Some("memory"))],
        family: "app".into(),
        ..Default::default()
    };
    for seed in 0..5 {
        req.seed = seed;
        let instances = index.instances().to_vec();
        assert_eq!(index.place(&req), place(&instances, &req));
        req.requirements.memory = 10;
        assert_eq!(index.place(&req), place(&instances, &req));
        req.strategies = vec![strategy("random", None)];
        assert_eq!(index.place(&req), place(&instances, &req));
        req.strategies = vec![strategy("binpack", Some("memory"))];
        req.requirements.memory = i64::MAX;
    }
    // Once the odd instance is fixed, the index serves binpack itself again.
    huge.used_memory = 0;
    huge.registered_cpu = 4096;
    huge.registered_memory = 4096;
    index.upsert(huge);
    req.requirements.memory = 100;
    let instances = index.instances().to_vec();
    assert_eq!(index.place(&req), place(&instances, &req));
}

#[test]
fn more_constraint_lists_than_partitions_still_answer_like_the_scan() {
    let mut rng = StdRng::seed_from_u64(7);
    let instances: Vec<_> = (0..40).map(|i| random_instance(&mut rng, i)).collect();
    let mut index = PlacementIndex::new(instances);
    for round in 0..3 {
        for k in 0..(index::MAX_PARTITIONS + 4) {
            let req = PlacementRequest {
                requirements: TaskRequirements {
                    cpu: 128,
                    memory: 256,
                    ..Default::default()
                },
                count: 2,
                strategies: vec![strategy("binpack", Some("memory"))],
                constraints: vec![member_of(&format!("runningTasksCount < {}", k + 1))],
                family: "app".into(),
                seed: (round * 100 + k) as u64,
                ..Default::default()
            };
            assert_eq!(index.place(&req), place(index.instances(), &req), "{k}");
        }
    }
}

#[test]
fn empty_index_and_zero_count_and_bad_rules_answer_like_the_scan() {
    let mut empty = PlacementIndex::default();
    let mut req = PlacementRequest {
        count: 1,
        strategies: vec![strategy("binpack", Some("memory"))],
        ..Default::default()
    };
    assert_eq!(empty.place(&req), place(&[], &req));
    let mut index = PlacementIndex::new(vec![InstanceSnapshot {
        arn: "i-a".into(),
        status: "ACTIVE".into(),
        agent_connected: true,
        registered_cpu: 1,
        registered_memory: 1,
        ..Default::default()
    }]);
    req.count = 0;
    assert_eq!(index.place(&req), Placement::default());
    req.count = 1;
    req.constraints = vec![member_of("attribute:x ==")];
    assert_eq!(index.place(&req), place(index.instances(), &req));
    assert!(index.place(&req).failures[0].reason.contains("memberOf"));
}

#[test]
fn the_quick_feasibility_test_agrees_with_the_reasoned_one() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut failing = 0;
    for n in 0..5000 {
        let instance = random_instance(&mut rng, n);
        let request = random_request(&mut rng);
        let constraints: Vec<_> = request
            .constraints
            .iter()
            .filter_map(|c| crate::constraint::parse_constraint(c).ok())
            .collect();
        let group = crate::view::Group::new(request.group.as_deref(), &request.family);
        let mut added = crate::view::Added::default();
        for _ in 0..rng.random_range(0..3) {
            added.add(&request.requirements);
        }
        let v = crate::view::View {
            instance: &instance,
            added: &added,
            group: &group,
        };
        let reasoned = crate::feasible::check(&v, &request.requirements, &constraints);
        failing += usize::from(reasoned.is_err());
        assert_eq!(
            crate::feasible::passes(&v, &request.requirements, &constraints),
            reasoned.is_ok(),
            "{instance:?} {request:?} {added:?}"
        );
    }
    assert!(failing > 500 && failing < 4500, "{failing}");
}
