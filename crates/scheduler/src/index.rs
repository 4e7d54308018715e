//! [`PlacementIndex`]: the instances of a cluster kept between requests, ordered so that a
//! binpack request finds its instance without checking and ranking every instance.
//!
//! ECS's binpack is exact: the task goes to the feasible instance with the least remaining
//! memory (or CPU). An index ordered by remaining capacity gives that same answer in
//! O(log n): walk the instances from the least remaining capacity that still fits upwards and
//! stop at the first remaining-capacity value that has a feasible instance. Three things keep
//! the walk short and the answer identical to [`crate::place`]:
//!
//! - **Two-level order.** Instances are bucketed by (remaining primary resource, remaining
//!   other resource), so instances whose other resource is exhausted (CPU full, memory left)
//!   are skipped a bucket at a time, not one by one.
//! - **Partitions by `memberOf`.** A `memberOf` expression is a function of the instance alone
//!   (attributes, agent, its tasks), so the index keeps, per list of expressions that requests
//!   use, only the instances that satisfy it (built on first use, kept up to date by
//!   [`PlacementIndex::update`], the least recently used dropped beyond
//!   [`MAX_PARTITIONS`]). Instances that are not ACTIVE or whose agent is disconnected are
//!   in no partition.
//! - **The same checks and the same tie-break.** Every candidate the walk returns either
//!   passes the scan's own feasibility test ([`feasible::passes`]) or is provably feasible (no ports, no
//!   `distinctInstance`: membership and the bucket bounds are then the whole check), keys are
//!   the scan's binpack scores, and the tie-break is the scan's: one seeded draw among the
//!   tied instances in snapshot order ([`crate::select`]).
//!
//! Only requests whose strategies are all binpack use the index; any other request (spread,
//! random, none), and any request while an instance's CPU or memory figures are outside
//! `0..=2^50` (where the scan's saturating arithmetic could differ), is answered by the scan
//! on the same snapshot, so the answer never depends on which path ran.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gantry_model::requirements::TaskRequirements;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::constraint::Constraint;
use crate::feasible;
use crate::query::Expr;
use crate::select::pick_nth;
use crate::strategy::{Resource, Strategy};
use crate::view::{Added, Group, View, NOTHING_ADDED};
use crate::{
    failures, parse_rules, reason, request_failure, scan, InstanceSnapshot, Placement,
    PlacementRequest,
};

/// How many `memberOf` partitions the index keeps; beyond it the least recently used is
/// dropped (and rebuilt, in O(n log n), if a request needs it again).
pub const MAX_PARTITIONS: usize = 16;

/// CPU and memory figures the index vouches for: within this range no sum or difference the
/// scan computes can saturate, so the index's plain arithmetic matches it exactly.
const LIMIT: i64 = 1 << 50;

/// A cluster's container instances, kept between placement requests and indexed for binpack.
///
/// Build it once from the cluster's snapshots, keep it current with [`Self::update`] /
/// [`Self::upsert`] / [`Self::remove`] as tasks start and stop and instances change, and ask it
/// with [`Self::place`]. `place` on the index and [`crate::place`] on
/// [`Self::instances`] return the same [`Placement`] for the same request, seed included.
/// ARNs are expected to be unique; with duplicates, `update` and `remove` address the first.
#[derive(Debug, Default)]
pub struct PlacementIndex {
    instances: Vec<InstanceSnapshot>,
    positions: HashMap<String, usize>,
    /// Instances with CPU or memory figures outside `0..=LIMIT`; while any exist, every
    /// request is answered by the scan.
    irregular: usize,
    partitions: Vec<Partition>,
    clock: u64,
}

/// The schedulable instances that satisfy one list of `memberOf` expressions, bucketed by
/// remaining capacity both ways round.
#[derive(Debug)]
struct Partition {
    member_of: Vec<Expr>,
    /// remaining memory → remaining CPU → instance positions.
    by_memory: Buckets,
    /// remaining CPU → remaining memory → instance positions.
    by_cpu: Buckets,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Buckets(BTreeMap<i64, BTreeMap<i64, BTreeSet<usize>>>);

impl Buckets {
    fn insert(&mut self, primary: i64, secondary: i64, index: usize) {
        self.0
            .entry(primary)
            .or_default()
            .entry(secondary)
            .or_default()
            .insert(index);
    }

    fn remove(&mut self, primary: i64, secondary: i64, index: usize) {
        let Some(inner) = self.0.get_mut(&primary) else {
            return;
        };
        if let Some(set) = inner.get_mut(&secondary) {
            set.remove(&index);
            if set.is_empty() {
                inner.remove(&secondary);
            }
        }
        if inner.is_empty() {
            self.0.remove(&primary);
        }
    }
}

fn regular(s: &InstanceSnapshot) -> bool {
    [
        s.registered_cpu,
        s.registered_memory,
        s.used_cpu,
        s.used_memory,
    ]
    .iter()
    .all(|v| (0..=LIMIT).contains(v))
}

/// ACTIVE, agent connected, figures the index vouches for: the only instances a partition
/// holds.
fn schedulable(s: &InstanceSnapshot) -> bool {
    s.status == "ACTIVE" && s.agent_connected && regular(s)
}

/// (remaining memory, remaining CPU) of the snapshot. Only called on regular instances.
fn remaining(s: &InstanceSnapshot) -> (i64, i64) {
    (
        s.registered_memory - s.used_memory,
        s.registered_cpu - s.used_cpu,
    )
}

/// Whether a schedulable instance on which the request has placed nothing satisfies every
/// expression. (The group only matters once the request has placed a task on the instance,
/// so any group gives the same answer here.)
fn satisfies(s: &InstanceSnapshot, member_of: &[Expr]) -> bool {
    if member_of.is_empty() {
        return true;
    }
    let group = Group::new(Some(""), "");
    let view = View {
        instance: s,
        added: &NOTHING_ADDED,
        group: &group,
    };
    member_of.iter().all(|e| e.eval(&view))
}

impl Partition {
    fn add(&mut self, index: usize, s: &InstanceSnapshot) {
        if schedulable(s) && satisfies(s, &self.member_of) {
            let (memory, cpu) = remaining(s);
            self.by_memory.insert(memory, cpu, index);
            self.by_cpu.insert(cpu, memory, index);
        }
    }

    fn forget(&mut self, index: usize, s: &InstanceSnapshot) {
        if schedulable(s) {
            let (memory, cpu) = remaining(s);
            self.by_memory.remove(memory, cpu, index);
            self.by_cpu.remove(cpu, memory, index);
        }
    }
}

/// What a request whose strategies are all binpack ranks by.
struct Binpack {
    /// The first strategy's resource: the walk's order.
    primary: Resource,
    /// Whether a later strategy ranks by the other resource (then only the instances with the
    /// least of it, among those with the least of the primary, tie).
    uses_secondary: bool,
    /// Each strategy's resource, in order: the key.
    resources: Vec<Resource>,
}

impl Binpack {
    fn of(strategies: &[Strategy], req: &TaskRequirements) -> Option<Binpack> {
        let resources = strategies
            .iter()
            .map(|s| match s {
                Strategy::Binpack(r) => Some(*r),
                _ => None,
            })
            .collect::<Option<Vec<Resource>>>()?;
        let primary = *resources.first()?;
        if !(0..=LIMIT).contains(&req.cpu) || !(0..=LIMIT).contains(&req.memory) {
            return None;
        }
        Some(Binpack {
            primary,
            uses_secondary: resources.iter().any(|r| *r != primary),
            resources,
        })
    }

    /// The scan's rank key for an instance with this much remaining memory and CPU (before
    /// the task).
    fn key(&self, memory: i64, cpu: i64, req: &TaskRequirements) -> Vec<i64> {
        self.resources
            .iter()
            .map(|r| match r {
                Resource::Memory => memory - req.memory,
                Resource::Cpu => cpu - req.cpu,
            })
            .collect()
    }

    /// (remaining memory, remaining CPU) from a bucket's (primary, secondary).
    fn unswap(&self, primary: i64, secondary: i64) -> (i64, i64) {
        match self.primary {
            Resource::Memory => (primary, secondary),
            Resource::Cpu => (secondary, primary),
        }
    }
}

/// The best-ranked candidates the walk found: either whole buckets whose members are all
/// feasible, or a list checked one by one. Both in snapshot order within each part.
enum Found<'p> {
    Buckets(Vec<&'p BTreeSet<usize>>),
    Checked(Vec<usize>),
}

impl Found<'_> {
    fn len(&self) -> usize {
        match self {
            Found::Buckets(sets) => sets.iter().map(|s| s.len()).sum(),
            Found::Checked(list) => list.len(),
        }
    }
}

/// Everything one request's placement reads, borrowed together.
struct Request<'a> {
    instances: &'a [InstanceSnapshot],
    partition: &'a Partition,
    req: &'a TaskRequirements,
    constraints: &'a [Constraint],
    group: Group<'a>,
    binpack: Binpack,
    /// No host ports and no `distinctInstance`: a partition member within the bucket bounds
    /// is feasible without further checks.
    membership_decides: bool,
}

impl Request<'_> {
    fn view<'v>(&'v self, index: usize, added: &'v Added) -> View<'v> {
        View {
            instance: &self.instances[index],
            added,
            group: &self.group,
        }
    }

    fn passes(&self, index: usize, added: &Added) -> bool {
        feasible::passes(&self.view(index, added), self.req, self.constraints)
    }

    /// The best key among the instances this request has not placed on, and those instances,
    /// walking the partition in order of remaining primary resource. Stops early when even the
    /// primary score passes `bound` (the best key's first element among the instances the
    /// request has placed on).
    fn walk(
        &self,
        added: &BTreeMap<usize, Added>,
        bound: Option<i64>,
    ) -> Option<(Vec<i64>, Found<'_>)> {
        let (buckets, need_primary, need_secondary) = match self.binpack.primary {
            Resource::Memory => (&self.partition.by_memory, self.req.memory, self.req.cpu),
            Resource::Cpu => (&self.partition.by_cpu, self.req.cpu, self.req.memory),
        };
        for (&primary, inner) in buckets.0.range(need_primary..) {
            if bound.is_some_and(|b| primary - need_primary > b) {
                return None;
            }
            let in_range = || inner.range(need_secondary..);
            // An instance the request has placed on is ranked by `best_added` instead; a
            // bucket holding one is walked member by member so that it can be skipped.
            let untouched = || {
                added.is_empty()
                    || in_range().all(|(_, set)| added.keys().all(|a| !set.contains(a)))
            };
            if self.membership_decides && untouched() {
                // Every member in range is feasible; the first set is the best when the other
                // resource ranks too, else they all tie.
                let mut sets = Vec::new();
                let mut first_secondary = None;
                for (&secondary, set) in in_range() {
                    first_secondary.get_or_insert(secondary);
                    sets.push(set);
                    if self.binpack.uses_secondary {
                        break;
                    }
                }
                if let Some(secondary) = first_secondary {
                    let (memory, cpu) = self.binpack.unswap(primary, secondary);
                    return Some((
                        self.binpack.key(memory, cpu, self.req),
                        Found::Buckets(sets),
                    ));
                }
                continue;
            }
            let mut found = Vec::new();
            let mut found_secondary = None;
            for (&secondary, set) in in_range() {
                for &index in set {
                    if !added.contains_key(&index) && self.passes(index, &NOTHING_ADDED) {
                        found.push(index);
                    }
                }
                if !found.is_empty() {
                    found_secondary.get_or_insert(secondary);
                    if self.binpack.uses_secondary {
                        break;
                    }
                }
            }
            if let Some(secondary) = found_secondary {
                found.sort_unstable();
                let (memory, cpu) = self.binpack.unswap(primary, secondary);
                return Some((
                    self.binpack.key(memory, cpu, self.req),
                    Found::Checked(found),
                ));
            }
        }
        None
    }

    /// The best key among the instances this request has placed on, and those instances in
    /// snapshot order.
    fn best_added(&self, added: &BTreeMap<usize, Added>) -> Option<(Vec<i64>, Vec<usize>)> {
        let mut best: Option<(Vec<i64>, Vec<usize>)> = None;
        for (&index, a) in added {
            if !self.passes(index, a) {
                continue;
            }
            let s = &self.instances[index];
            let key = self.binpack.key(
                s.registered_memory - s.used_memory - a.memory,
                s.registered_cpu - s.used_cpu - a.cpu,
                self.req,
            );
            match &mut best {
                Some((k, list)) if *k == key => list.push(index),
                Some((k, _)) if *k < key => {}
                _ => best = Some((key, vec![index])),
            }
        }
        best
    }

    /// Places the request's tasks one at a time, as the scan does.
    fn place(&self, count: usize, seed: u64) -> Placement {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut added: BTreeMap<usize, Added> = BTreeMap::new();
        let mut placements = Vec::with_capacity(count);
        for _ in 0..count {
            let from_added = self.best_added(&added);
            let walked = self.walk(&added, from_added.as_ref().map(|(k, _)| k[0]));
            let (walked, extra) = match (walked, from_added) {
                (None, None) => {
                    let reasons = |i: usize| {
                        let added = added.get(&i).unwrap_or(&NOTHING_ADDED);
                        feasible::check(&self.view(i, added), self.req, self.constraints).err()
                    };
                    return Placement {
                        placements,
                        failures: failures(self.instances, reasons),
                    };
                }
                (Some((_, found)), None) => (Some(found), Vec::new()),
                (None, Some((_, list))) => (None, list),
                (Some((wk, found)), Some((ak, list))) => match wk.cmp(&ak) {
                    std::cmp::Ordering::Less => (Some(found), Vec::new()),
                    std::cmp::Ordering::Equal => (Some(found), list),
                    std::cmp::Ordering::Greater => (None, list),
                },
            };
            let ties = walked.as_ref().map_or(0, Found::len) + extra.len();
            // At least one candidate exists here (the no-candidate case returned above); the
            // `else` only keeps an impossible case from panicking.
            let Some(r) = pick_nth(ties, &mut rng) else {
                break;
            };
            let chosen = match (&walked, extra.is_empty()) {
                (Some(Found::Buckets(sets)), true) if sets.len() == 1 => {
                    sets[0].iter().nth(r).copied()
                }
                (Some(Found::Checked(list)), true) => list.get(r).copied(),
                _ => {
                    let mut all: Vec<usize> = match &walked {
                        Some(Found::Buckets(sets)) => {
                            sets.iter().flat_map(|s| s.iter().copied()).collect()
                        }
                        Some(Found::Checked(list)) => list.clone(),
                        None => Vec::new(),
                    };
                    all.extend_from_slice(&extra);
                    all.sort_unstable();
                    all.get(r).copied()
                }
            };
            let Some(chosen) = chosen else {
                break;
            };
            added.entry(chosen).or_default().add(self.req);
            placements.push(self.instances[chosen].arn.clone());
        }
        Placement {
            placements,
            failures: Vec::new(),
        }
    }
}

impl PlacementIndex {
    /// Indexes `instances` (their order is the snapshot order ties are counted in).
    pub fn new(instances: Vec<InstanceSnapshot>) -> Self {
        let mut positions = HashMap::with_capacity(instances.len());
        for (i, s) in instances.iter().enumerate() {
            positions.entry(s.arn.clone()).or_insert(i);
        }
        let irregular = instances.iter().filter(|s| !regular(s)).count();
        PlacementIndex {
            instances,
            positions,
            irregular,
            partitions: Vec::new(),
            clock: 0,
        }
    }

    /// The instances as the index holds them, in snapshot order.
    pub fn instances(&self) -> &[InstanceSnapshot] {
        &self.instances
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn get(&self, arn: &str) -> Option<&InstanceSnapshot> {
        self.positions.get(arn).map(|&i| &self.instances[i])
    }

    /// Changes the instance `arn` (its usage after a task starts or stops, its status, agent,
    /// attributes…) and re-indexes it in O(log n) per partition. Returns whether it exists.
    pub fn update(&mut self, arn: &str, change: impl FnOnce(&mut InstanceSnapshot)) -> bool {
        let Some(&i) = self.positions.get(arn) else {
            return false;
        };
        self.unindex(i);
        change(&mut self.instances[i]);
        if self.instances[i].arn != arn {
            self.positions.remove(arn);
            let new_arn = self.instances[i].arn.clone();
            self.positions.entry(new_arn).or_insert(i);
        }
        self.reindex(i);
        true
    }

    /// Replaces the instance with the same ARN, or adds it at the end of the snapshot order.
    pub fn upsert(&mut self, snapshot: InstanceSnapshot) {
        if self.positions.contains_key(&snapshot.arn) {
            let arn = snapshot.arn.clone();
            self.update(&arn, |s| *s = snapshot);
            return;
        }
        let i = self.instances.len();
        self.positions.insert(snapshot.arn.clone(), i);
        self.instances.push(snapshot);
        self.reindex(i);
    }

    /// Removes the instance `arn`. Later instances move up one place in the snapshot order,
    /// so this re-indexes everything: O(n), for the rare deregistration.
    pub fn remove(&mut self, arn: &str) -> Option<InstanceSnapshot> {
        let i = *self.positions.get(arn)?;
        let removed = self.instances.remove(i);
        *self = PlacementIndex::new(std::mem::take(&mut self.instances));
        Some(removed)
    }

    fn unindex(&mut self, i: usize) {
        let s = &self.instances[i];
        if !regular(s) {
            self.irregular -= 1;
        }
        for p in &mut self.partitions {
            p.forget(i, s);
        }
    }

    fn reindex(&mut self, i: usize) {
        let s = &self.instances[i];
        if !regular(s) {
            self.irregular += 1;
        }
        for p in &mut self.partitions {
            p.add(i, s);
        }
    }

    /// The partition for these `memberOf` expressions, built if needed.
    fn partition(&mut self, member_of: Vec<Expr>) -> usize {
        self.clock += 1;
        if let Some(k) = self
            .partitions
            .iter()
            .position(|p| p.member_of == member_of)
        {
            self.partitions[k].last_used = self.clock;
            return k;
        }
        if self.partitions.len() >= MAX_PARTITIONS {
            if let Some(oldest) = self
                .partitions
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(k, _)| k)
            {
                self.partitions.swap_remove(oldest);
            }
        }
        let mut p = Partition {
            member_of,
            by_memory: Buckets::default(),
            by_cpu: Buckets::default(),
            last_used: self.clock,
        };
        for (i, s) in self.instances.iter().enumerate() {
            p.add(i, s);
        }
        self.partitions.push(p);
        self.partitions.len() - 1
    }

    /// Places up to `request.count` tasks: the same answer as [`crate::place`] on
    /// [`Self::instances`], found without visiting every instance when the request's
    /// strategies are all binpack. The index itself is not changed: record what was placed
    /// with [`Self::update`] once it is committed.
    pub fn place(&mut self, request: &PlacementRequest) -> Placement {
        if request.count == 0 {
            return Placement::default();
        }
        if self.instances.is_empty() {
            return request_failure(reason::NO_INSTANCES.to_string());
        }
        let (strategies, constraints) = match parse_rules(request) {
            Ok(rules) => rules,
            Err(message) => return request_failure(message),
        };
        let binpack = match Binpack::of(&strategies, &request.requirements) {
            Some(b) if self.irregular == 0 => b,
            _ => return scan(&self.instances, request, &strategies, &constraints),
        };
        let member_of: Vec<Expr> = constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::MemberOf(e) => Some(e.clone()),
                Constraint::DistinctInstance => None,
            })
            .collect();
        // Host ports, network interfaces and distinctInstance depend on more than the
        // partition's resources: then every candidate is checked whole.
        let membership_decides = request.requirements.tcp_ports.is_empty()
            && request.requirements.udp_ports.is_empty()
            && request.requirements.network_interfaces == 0
            && !constraints
                .iter()
                .any(|c| matches!(c, Constraint::DistinctInstance));
        let k = self.partition(member_of);
        let r = Request {
            instances: &self.instances,
            partition: &self.partitions[k],
            req: &request.requirements,
            constraints: &constraints,
            group: Group::new(request.group.as_deref(), &request.family),
            binpack,
            membership_decides,
        };
        r.place(request.count, request.seed)
    }
}
