//! Task placement for the EC2 launch type, as a pure function.
//!
//! [`place`] takes a snapshot of the cluster's container instances and a request, and returns
//! where each task goes plus, when a task cannot be placed, why each instance refused it. No
//! I/O, locks or async: the control plane takes the snapshot under its own lock, calls this,
//! and commits the result, which keeps placement unit-testable and cheap to benchmark.
//!
//! The pipeline mirrors ECS's documented process (and Nomad's scheduler shape), once per task:
//!
//! 1. **Feasibility** (`feasible.rs`): status, agent, CPU, memory, ports, then constraints
//!    (`distinctInstance`, `memberOf` with the cluster query language in `query.rs`).
//! 2. **Ranking** (`rank.rs`): the placement strategies, in order, as successive tie-breakers.
//! 3. **Selection** (`select.rs`): the best-ranked instance; remaining ties broken by one draw
//!    of a seeded RNG among the tied instances in snapshot order.
//!
//! Tasks are placed one at a time against a local copy of each instance's usage (`view.rs`), so
//! later tasks in a request see the resources, ports and group membership of earlier ones.
//! Feasibility is a function of one instance's state only, so for a request of several tasks
//! it is computed once for all instances and then refreshed only for the instance that just
//! received a task; a request of one task allocates nothing per instance.
//!
//! [`place`] visits every instance for every task. [`PlacementIndex`] (`index.rs`) keeps the
//! instances between requests, ordered by remaining memory and CPU and partitioned by the
//! `memberOf` expressions requests use, so a binpack request finds the same instance as
//! [`place`] in O(log n) instead of O(n); other strategies fall back to the scan.

pub mod capacity;
mod constraint;
mod explain;
mod feasible;
mod index;
mod pattern;
mod query;
mod rank;
mod select;
mod strategy;
mod view;

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use gantry_model::requirements::TaskRequirements;
use gantry_model::types::{PlacementConstraint, PlacementStrategy};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use constraint::MAX_CONSTRAINTS;
pub use explain::{explain, Refusal, Verdict};
pub use index::PlacementIndex;
pub use query::MAX_EXPRESSION_LEN;
pub use strategy::MAX_STRATEGIES;

/// The `reason` strings of placement failures, as ECS reports them in `RunTask` `failures`.
pub mod reason {
    /// The instance is not `ACTIVE` (deregistered, or not yet/never registered).
    pub const INACTIVE: &str = "INACTIVE";
    /// The instance is `DRAINING`; new tasks are not placed on it.
    pub const DRAINING: &str = "DRAINING";
    /// The instance's agent is disconnected.
    pub const AGENT: &str = "AGENT";
    pub const RESOURCE_CPU: &str = "RESOURCE:CPU";
    pub const RESOURCE_MEMORY: &str = "RESOURCE:MEMORY";
    /// A requested fixed TCP host port is reserved or in use.
    pub const RESOURCE_PORTS: &str = "RESOURCE:PORTS";
    /// A requested fixed UDP host port is reserved or in use.
    pub const RESOURCE_PORTS_UDP: &str = "RESOURCE:PORTS_UDP";
    /// The instance runs as many awsvpc tasks as it has network interfaces for.
    pub const RESOURCE_ENI: &str = "RESOURCE:ENI";
    /// A `memberOf` expression does not select the instance. This is the string ECS returns
    /// (seen in RunTask `failures`); the developer guide's `ATTRIBUTE` is for attributes the
    /// task definition requires, which this scheduler does not check.
    pub const MEMBER_OF: &str = "MemberOf placement constraint unsatisfied.";
    /// `distinctInstance`: the instance already runs a task of the group (or of this request).
    /// The string ECS returns in RunTask `failures` and service events.
    pub const DISTINCT_INSTANCE: &str = "DistinctInstance placement constraint unsatisfied.";
    /// The cluster has no container instances; returned with an empty `arn` for the caller to
    /// fill in with the cluster ARN.
    pub const NO_INSTANCES: &str = "No Container Instances were found in your cluster.";
}

/// One container instance as the control plane knows it when placement starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSnapshot {
    /// Container instance ARN.
    pub arn: String,
    /// `ACTIVE`, `DRAINING`, `INACTIVE`, ...
    pub status: String,
    pub agent_connected: bool,
    /// Instance attributes, e.g. `ecs.availability-zone` -> `Some("us-east-1a")`; attributes
    /// registered without a value map to `None`.
    pub attributes: BTreeMap<String, Option<String>>,
    pub registered_cpu: i64,
    pub registered_memory: i64,
    /// Ports the instance registered as unavailable.
    pub reserved_tcp_ports: Vec<u16>,
    pub reserved_udp_ports: Vec<u16>,
    pub used_cpu: i64,
    pub used_memory: i64,
    /// Host ports bound by tasks that are not yet `STOPPED`.
    pub used_tcp_ports: Vec<u16>,
    pub used_udp_ports: Vec<u16>,
    /// The `group` of each non-stopped task on the instance (e.g. `service:web`, `family:x`).
    pub task_groups: Vec<String>,
    /// The task definition family of each non-stopped task on the instance.
    pub task_definition_families: Vec<String>,
    /// How many awsvpc tasks the instance may run at once (its ENIs); `None`: no limit.
    pub network_interface_limit: Option<u32>,
    /// awsvpc tasks not yet `STOPPED` on the instance.
    pub used_network_interfaces: u32,
}

/// What to place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementRequest {
    pub requirements: TaskRequirements,
    /// How many tasks.
    pub count: usize,
    /// Applied in order as tie-breakers; empty means random, as ECS RunTask defaults.
    pub strategies: Vec<PlacementStrategy>,
    /// Request and task definition constraints together.
    pub constraints: Vec<PlacementConstraint>,
    /// The group the new tasks belong to; `spread` and `distinctInstance` consider the tasks
    /// of this group. When `None`, tasks of the same task definition `family` are considered.
    pub group: Option<String>,
    pub family: String,
    /// Seeds `random` and tie-breaks so placement is reproducible in tests.
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementFailure {
    /// Container instance ARN (empty when the failure is about the cluster or the request).
    pub arn: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// One container instance ARN per placed task, in placement order.
    pub placements: Vec<String>,
    /// When fewer than `count` tasks were placed: for each instance, the first reason it could
    /// not take the next task (one entry per instance and reason).
    pub failures: Vec<PlacementFailure>,
}

/// Places up to `request.count` tasks on `instances`.
///
/// Placement stops at the first task that fits nowhere; the tasks placed so far are returned
/// with the failures explaining the rest, as ECS RunTask does. With no instances at all, the
/// single failure has an empty `arn` and [`reason::NO_INSTANCES`]. Strategies and constraints
/// should have been checked with [`validate_strategies`] / [`validate_constraints`]; if they
/// were not and are invalid, nothing is placed and the single failure (empty `arn`) carries
/// the validation message, so bad input fails closed instead of being half-applied.
///
/// This checks and ranks every instance for every task. A caller that places tasks one
/// request after another on the same cluster can keep a [`PlacementIndex`] instead, which
/// gives the same answers without visiting every instance.
pub fn place(instances: &[InstanceSnapshot], request: &PlacementRequest) -> Placement {
    if request.count == 0 {
        return Placement::default();
    }
    if instances.is_empty() {
        return request_failure(reason::NO_INSTANCES.to_string());
    }
    match parse_rules(request) {
        Ok((strategies, constraints)) => scan(instances, request, &strategies, &constraints),
        Err(message) => request_failure(message),
    }
}

/// The request's strategies and constraints, parsed; the error is the first one's message.
/// Limits are the API's business (validate_*); here only the meaning of each rule matters.
fn parse_rules(
    request: &PlacementRequest,
) -> Result<(Vec<strategy::Strategy>, Vec<constraint::Constraint>), String> {
    let strategies = request
        .strategies
        .iter()
        .map(strategy::parse_strategy)
        .collect::<Result<Vec<_>, _>>()?;
    let constraints = request
        .constraints
        .iter()
        .map(constraint::parse_constraint)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((strategies, constraints))
}

/// [`place`] once the rules are parsed: every instance is checked and ranked for every task.
fn scan(
    instances: &[InstanceSnapshot],
    request: &PlacementRequest,
    strategies: &[strategy::Strategy],
    constraints: &[constraint::Constraint],
) -> Placement {
    let req = &request.requirements;
    let group = view::Group::new(request.group.as_deref(), &request.family);
    let several = request.count > 1;
    // What this request has placed on each instance, and each instance's feasibility, kept
    // across the tasks of one request (feasibility is refreshed only for the instance that
    // just received a task). A single task needs neither: nothing is allocated per instance.
    let mut added: Vec<view::Added> = if several {
        vec![view::Added::default(); instances.len()]
    } else {
        Vec::new()
    };
    let passes = |index: usize, added: &[view::Added]| {
        let v = view::View {
            instance: &instances[index],
            added: added.get(index).unwrap_or(&view::NOTHING_ADDED),
            group: &group,
        };
        feasible::passes(&v, req, constraints)
    };
    let mut feasibility: Vec<bool> = if several {
        (0..instances.len()).map(|i| passes(i, &added)).collect()
    } else {
        Vec::new()
    };
    let mut ranker = rank::Ranker::new(strategies, instances, &group);
    let mut rng = StdRng::seed_from_u64(request.seed);
    let mut key = Vec::with_capacity(strategies.len());
    let mut best = select::Best::default();
    let mut placements = Vec::with_capacity(request.count);

    for _ in 0..request.count {
        best.clear();
        for (index, instance) in instances.iter().enumerate() {
            let feasible = match feasibility.get(index) {
                Some(f) => *f,
                None => passes(index, &added),
            };
            if !feasible {
                continue;
            }
            let v = view::View {
                instance,
                added: added.get(index).unwrap_or(&view::NOTHING_ADDED),
                group: &group,
            };
            ranker.key(index, &v, req, &mut rng, &mut key);
            best.offer(index, &key);
        }
        let Some(chosen) = best.pick(&mut rng) else {
            let reasons = |i: usize| {
                let v = view::View {
                    instance: &instances[i],
                    added: added.get(i).unwrap_or(&view::NOTHING_ADDED),
                    group: &group,
                };
                feasible::check(&v, req, constraints).err()
            };
            return Placement {
                placements,
                failures: failures(instances, reasons),
            };
        };
        if let Some(a) = added.get_mut(chosen) {
            a.add(req);
        }
        ranker.record(chosen);
        if let Some(f) = feasibility.get_mut(chosen) {
            *f = passes(chosen, &added);
        }
        placements.push(instances[chosen].arn.clone());
    }
    Placement {
        placements,
        failures: Vec::new(),
    }
}

/// Checks placement strategies as ECS does for RunTask / CreateService; the error is the
/// message for an `InvalidParameterException`.
pub fn validate_strategies(s: &[PlacementStrategy]) -> Result<(), String> {
    strategy::parse_strategies(s).map(|_| ())
}

/// Checks placement constraints (types, expressions, at most [`MAX_CONSTRAINTS`]); the error
/// is the message for an `InvalidParameterException`.
pub fn validate_constraints(c: &[PlacementConstraint]) -> Result<(), String> {
    constraint::parse_constraints(c).map(|_| ())
}

fn request_failure(reason: String) -> Placement {
    Placement {
        placements: Vec::new(),
        failures: vec![PlacementFailure {
            arn: String::new(),
            reason,
        }],
    }
}

/// Each infeasible instance's reason, in snapshot order, once per (ARN, reason).
fn failures(
    instances: &[InstanceSnapshot],
    reason_of: impl Fn(usize) -> Option<feasible::Reason>,
) -> Vec<PlacementFailure> {
    let mut seen = HashSet::new();
    instances
        .iter()
        .enumerate()
        .filter_map(|(i, instance)| reason_of(i).map(|r| (instance.arn.as_str(), r.as_str())))
        .filter(|pair| seen.insert(*pair))
        .map(|(arn, reason)| PlacementFailure {
            arn: arn.to_string(),
            reason: reason.to_string(),
        })
        .collect()
}

/// A parsed cluster-query-language expression, evaluated against instances as they stand
/// (for `ListContainerInstances` `filter`).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceFilter(query::Expr);

impl InstanceFilter {
    pub fn parse(expression: &str) -> Result<Self, String> {
        query::Expr::parse(expression).map(InstanceFilter)
    }

    pub fn matches(&self, instance: &InstanceSnapshot) -> bool {
        let added = view::Added::default();
        let group = view::Group::new(None, "");
        self.0.eval(&view::View {
            instance,
            added: &added,
            group: &group,
        })
    }
}
