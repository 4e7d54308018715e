//! Stage 2 of the pipeline: order the feasible instances by the placement strategies.
//!
//! Each strategy contributes one number to an instance's key; keys compare lexicographically
//! and smaller is better, so later strategies only break ties left by earlier ones, as ECS
//! applies strategies in order (e.g. spread over zones, then binpack memory within a zone).
//!
//! Spread counts the tasks of the group across *all* instances in the snapshot, not just the
//! feasible ones: a zone whose instances are full still holds its tasks, and ignoring them
//! would pile new tasks into the other zones' first free instance. Instances without the
//! spread attribute form one bucket of their own.

use std::collections::HashMap;

use gantry_model::requirements::TaskRequirements;
use rand::rngs::StdRng;
use rand::Rng;

use crate::strategy::{Resource, Strategy};
use crate::view::{Group, View};
use crate::InstanceSnapshot;

pub struct Ranker<'a> {
    strategies: &'a [Strategy],
    /// Tasks of the group per instance in the snapshot (this request's are in `View::added`).
    group_tasks: Vec<usize>,
    /// For each strategy, the attribute buckets when it is `spread` by attribute.
    buckets: Vec<Option<Buckets>>,
}

/// Instances grouped by the value of one attribute, with the group's task count per value.
struct Buckets {
    of_instance: Vec<usize>,
    tasks: Vec<usize>,
}

impl<'a> Ranker<'a> {
    pub fn new(strategies: &'a [Strategy], instances: &[InstanceSnapshot], group: &Group) -> Self {
        let group_tasks: Vec<usize> = if strategies.iter().any(is_spread) {
            instances.iter().map(|i| group.existing_tasks(i)).collect()
        } else {
            Vec::new()
        };
        let buckets = strategies
            .iter()
            .map(|s| match s {
                Strategy::SpreadAttribute(name) => {
                    Some(Buckets::new(name, instances, &group_tasks))
                }
                _ => None,
            })
            .collect();
        Ranker {
            strategies,
            group_tasks,
            buckets,
        }
    }

    /// Writes the rank key of instance `index` (smaller is better) into `key`.
    pub fn key(
        &self,
        index: usize,
        view: &View,
        req: &TaskRequirements,
        rng: &mut StdRng,
        key: &mut Vec<i64>,
    ) {
        key.clear();
        for (strategy, buckets) in self.strategies.iter().zip(&self.buckets) {
            let score = match strategy {
                Strategy::Random => rng.random::<i64>(),
                Strategy::Binpack(Resource::Cpu) => view
                    .instance
                    .registered_cpu
                    .saturating_sub(view.used_cpu())
                    .saturating_sub(req.cpu),
                Strategy::Binpack(Resource::Memory) => view
                    .instance
                    .registered_memory
                    .saturating_sub(view.used_memory())
                    .saturating_sub(req.memory),
                Strategy::SpreadInstance => count(self.group_tasks[index] + view.added.tasks),
                Strategy::SpreadAttribute(_) => match buckets {
                    Some(b) => count(b.tasks[b.of_instance[index]]),
                    None => 0,
                },
            };
            key.push(score);
        }
    }

    /// Records that a task of the group was placed on instance `index`.
    pub fn record(&mut self, index: usize) {
        for b in self.buckets.iter_mut().flatten() {
            b.tasks[b.of_instance[index]] += 1;
        }
    }
}

impl Buckets {
    fn new(attribute: &str, instances: &[InstanceSnapshot], group_tasks: &[usize]) -> Self {
        let mut index_of: HashMap<Option<&str>, usize> = HashMap::new();
        let mut tasks = Vec::new();
        let mut of_instance = Vec::with_capacity(instances.len());
        for (instance, n) in instances.iter().zip(group_tasks) {
            let value = instance
                .attributes
                .get(attribute)
                .and_then(|v| v.as_deref());
            let bucket = *index_of.entry(value).or_insert_with(|| {
                tasks.push(0);
                tasks.len() - 1
            });
            tasks[bucket] += n;
            of_instance.push(bucket);
        }
        Buckets { of_instance, tasks }
    }
}

fn is_spread(s: &Strategy) -> bool {
    matches!(s, Strategy::SpreadInstance | Strategy::SpreadAttribute(_))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
