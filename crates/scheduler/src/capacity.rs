//! How ECS splits tasks over a capacity provider strategy: which provider each new task of a
//! group (a service, or one RunTask call) goes to. Pure: no I/O, no clock, no randomness.
//!
//! ECS's rules (`CapacityProviderStrategyItem` in the API reference):
//! - `base` is how many tasks, at a minimum, run on that provider; only one item of a strategy
//!   may have one (the API refuses more), and it is satisfied before any weight counts.
//! - `weight` is the provider's relative share of the tasks beyond the bases: weights 1 and 4
//!   mean one task on the first for every four on the second; weights 1 and 1 split evenly. A
//!   provider with weight 0 gets tasks only for its base.
//! - A strategy of several providers whose weights are all 0 places nothing: "any RunTask or
//!   CreateService actions using the capacity provider strategy will fail." A strategy of one
//!   provider gets every task whatever its weight (a cluster default of
//!   `[{capacityProvider: FARGATE}]`, weight omitted, is the common case and works on AWS).
//!
//! The algorithm, task by task, counting the tasks of the group already running on each
//! provider (`running`) plus those assigned so far in this call:
//! 1. Base: the first item (in strategy order) whose provider runs fewer tasks than its base
//!    gets the task.
//! 2. Weight: among the items with a weight above 0, the task goes to the one that stays
//!    furthest below its share once it has the task, i.e. the smallest
//!    `(excess + 1) / weight`, where `excess` is its count beyond its base. This is the
//!    D'Hondt highest-averages rule: after any number of tasks every provider's excess is its
//!    weight's share rounded, and after `k * sum(weights)` tasks it is exactly
//!    `k * weight`. Ties go to the item that comes first in the strategy.
//!
//! Because the counts include what already runs, a group whose tasks are unevenly spread
//! (a provider was added, tasks stopped) is evened out by its new tasks; nothing running is
//! moved. The worked examples of ECS's documentation are the tests below.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// One item of a capacity provider strategy (the API checks `base <= 100000` and
/// `weight <= 1000`; any `u32` is handled here without overflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyItem {
    pub provider: String,
    pub base: u32,
    pub weight: u32,
}

impl StrategyItem {
    pub fn new(provider: impl Into<String>, base: u32, weight: u32) -> Self {
        StrategyItem {
            provider: provider.into(),
            base,
            weight,
        }
    }
}

/// Why a strategy places no task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyError {
    /// The strategy names no provider.
    Empty,
    /// Several providers, every weight 0.
    AllWeightsZero,
}

impl fmt::Display for StrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrategyError::Empty => write!(f, "The capacity provider strategy is empty."),
            StrategyError::AllWeightsZero => write!(
                f,
                "At least one capacity provider in a capacity provider strategy must have a weight greater than zero."
            ),
        }
    }
}

impl std::error::Error for StrategyError {}

/// Whether `strategy` can place tasks at all (see the module documentation).
pub fn check(strategy: &[StrategyItem]) -> Result<(), StrategyError> {
    match strategy {
        [] => Err(StrategyError::Empty),
        [_] => Ok(()),
        items if items.iter().all(|i| i.weight == 0) => Err(StrategyError::AllWeightsZero),
        _ => Ok(()),
    }
}

/// For each of `count` new tasks, in order, the provider it goes to, given how many tasks of
/// the same group already run on each provider (providers absent from `running` run none;
/// providers absent from the strategy are ignored). Either `count` names, or none when
/// [`check`] refuses the strategy. Items are expected to name distinct providers (the API
/// refuses duplicates); a repeated provider is counted once, under its first item.
pub fn split(
    strategy: &[StrategyItem],
    running: &BTreeMap<String, usize>,
    count: usize,
) -> Vec<String> {
    if check(strategy).is_err() {
        return Vec::new();
    }
    let items: Vec<&StrategyItem> = strategy
        .iter()
        .enumerate()
        .filter(|(i, item)| {
            !strategy[..*i]
                .iter()
                .any(|earlier| earlier.provider == item.provider)
        })
        .map(|(_, item)| item)
        .collect();
    let single = items.len() == 1;
    let mut counts: Vec<u64> = items
        .iter()
        .map(|i| running.get(&i.provider).copied().unwrap_or(0) as u64)
        .collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let chosen = pick(&items, &counts, single);
        counts[chosen] = counts[chosen].saturating_add(1);
        out.push(items[chosen].provider.clone());
    }
    out
}

/// The index of the item the next task goes to.
fn pick(items: &[&StrategyItem], counts: &[u64], single: bool) -> usize {
    if single {
        return 0;
    }
    if let Some(i) = (0..items.len()).find(|&i| counts[i] < u64::from(items[i].base)) {
        return i;
    }
    let mut best: Option<usize> = None;
    for i in (0..items.len()).filter(|&i| items[i].weight > 0) {
        best = match best {
            None => Some(i),
            Some(b)
                if share_after(items[i], counts[i]).cmp_with(&share_after(items[b], counts[b]))
                    == Ordering::Less =>
            {
                Some(i)
            }
            keep => keep,
        };
    }
    // `check` guarantees a positive weight when there are several items.
    best.unwrap_or(0)
}

/// `(excess + 1) / weight` as an exact fraction.
struct Fraction {
    num: u128,
    den: u128,
}

impl Fraction {
    fn cmp_with(&self, other: &Fraction) -> Ordering {
        (self.num * other.den).cmp(&(other.num * self.den))
    }
}

fn share_after(item: &StrategyItem, count: u64) -> Fraction {
    let excess = count.saturating_sub(u64::from(item.base));
    Fraction {
        num: u128::from(excess) + 1,
        den: u128::from(item.weight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeMap<String, usize> {
        BTreeMap::new()
    }

    fn tally(placed: &[String]) -> BTreeMap<String, usize> {
        let mut t = BTreeMap::new();
        for p in placed {
            *t.entry(p.clone()).or_insert(0) += 1;
        }
        t
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    }

    /// AWS's ECS workshop ("ECS first places 2 tasks (since base=2) to CP-OD and then splits
    /// the remaining tasks between CP-OD and CP-SPOT in 1:3 ratio"): ten tasks are 2 on A for
    /// the base, then 2 more on A and 6 on B.
    #[test]
    fn base_first_then_weights_one_to_three() {
        let s = [StrategyItem::new("A", 2, 1), StrategyItem::new("B", 0, 3)];
        let placed = split(&s, &none(), 10);
        assert_eq!(placed.len(), 10);
        assert_eq!(placed[..2], ["A", "A"]);
        assert_eq!(tally(&placed[2..]), counts(&[("A", 2), ("B", 6)]));
        assert_eq!(tally(&placed), counts(&[("A", 4), ("B", 6)]));
    }

    /// "If you specify a weight of 1 for capacityProviderA and a weight of 4 for
    /// capacityProviderB, then for every one task that's run using capacityProviderA, four
    /// tasks would use capacityProviderB."
    #[test]
    fn weights_one_to_four() {
        let s = [StrategyItem::new("A", 0, 1), StrategyItem::new("B", 0, 4)];
        assert_eq!(tally(&split(&s, &none(), 5)), counts(&[("A", 1), ("B", 4)]));
        assert_eq!(
            tally(&split(&s, &none(), 10)),
            counts(&[("A", 2), ("B", 8)])
        );
        // Every prefix stays as close to 1:4 as whole tasks allow.
        let placed = split(&s, &none(), 50);
        for k in 1..=50 {
            let a = placed[..k].iter().filter(|p| *p == "A").count() as f64;
            assert!(
                (a - k as f64 / 5.0).abs() <= 1.0,
                "after {k} tasks: {a} on A"
            );
        }
    }

    /// "A strategy that contains two capacity providers and both have a weight of 1, then
    /// when the base is satisfied, the tasks will be split evenly."
    #[test]
    fn equal_weights_split_evenly_after_the_base() {
        let s = [StrategyItem::new("A", 0, 1), StrategyItem::new("B", 0, 1)];
        assert_eq!(split(&s, &none(), 4), ["A", "B", "A", "B"]);
        let based = [StrategyItem::new("A", 3, 1), StrategyItem::new("B", 0, 1)];
        assert_eq!(
            tally(&split(&based, &none(), 9)),
            counts(&[("A", 6), ("B", 3)])
        );
    }

    /// The Fargate strategy of AWS's ECS workshop (`FARGATE` base 1 weight 1, `FARGATE_SPOT`
    /// weight 4): the first task on FARGATE, then one in five on FARGATE.
    #[test]
    fn fargate_base_one_and_spot_weight_four() {
        let s = [
            StrategyItem::new("FARGATE", 1, 1),
            StrategyItem::new("FARGATE_SPOT", 0, 4),
        ];
        let placed = split(&s, &none(), 11);
        assert_eq!(placed[0], "FARGATE");
        assert_eq!(
            tally(&placed),
            counts(&[("FARGATE", 3), ("FARGATE_SPOT", 8)])
        );
    }

    #[test]
    fn running_tasks_count_towards_base_and_shares() {
        let s = [StrategyItem::new("A", 2, 1), StrategyItem::new("B", 0, 3)];
        // The base is already met: straight to the weights.
        let placed = split(&s, &counts(&[("A", 2)]), 4);
        assert_eq!(tally(&placed), counts(&[("A", 1), ("B", 3)]));
        // Scaling 10 → 20 after the first ten gives what 20 at once would.
        let first = split(&s, &none(), 10);
        let more = split(&s, &tally(&first), 10);
        let mut all = first.clone();
        all.extend(more);
        assert_eq!(tally(&all), tally(&split(&s, &none(), 20)));
        // A lopsided group is evened out by its new tasks; providers outside the strategy
        // are ignored.
        let placed = split(&s, &counts(&[("A", 6), ("OLD", 9)]), 4);
        assert_eq!(placed, ["B", "B", "B", "B"]);
    }

    #[test]
    fn weight_zero_gets_only_its_base() {
        let s = [StrategyItem::new("A", 2, 0), StrategyItem::new("B", 0, 1)];
        assert_eq!(split(&s, &none(), 5), ["A", "A", "B", "B", "B"]);
        let later = [StrategyItem::new("A", 0, 1), StrategyItem::new("B", 0, 0)];
        assert_eq!(split(&later, &none(), 3), ["A", "A", "A"]);
    }

    #[test]
    fn a_single_provider_takes_everything_whatever_its_weight() {
        let s = [StrategyItem::new("FARGATE", 0, 0)];
        assert_eq!(check(&s), Ok(()));
        assert_eq!(split(&s, &none(), 3), ["FARGATE"; 3]);
        let based = [StrategyItem::new("A", 5, 0)];
        assert_eq!(split(&based, &counts(&[("A", 7)]), 2), ["A", "A"]);
    }

    /// "If you specify multiple capacity providers in a strategy that all have a weight of 0,
    /// any RunTask or CreateService actions using the capacity provider strategy will fail."
    #[test]
    fn several_providers_all_weight_zero_place_nothing() {
        let s = [StrategyItem::new("A", 1, 0), StrategyItem::new("B", 0, 0)];
        assert_eq!(check(&s), Err(StrategyError::AllWeightsZero));
        assert!(split(&s, &none(), 3).is_empty());
        assert_eq!(check(&[]), Err(StrategyError::Empty));
        assert!(split(&[], &none(), 3).is_empty());
        assert!(split(&[StrategyItem::new("A", 0, 1)], &none(), 0).is_empty());
    }

    #[test]
    fn ties_go_to_the_earlier_item_and_big_numbers_do_not_overflow() {
        let s = [StrategyItem::new("B", 0, 2), StrategyItem::new("A", 0, 2)];
        assert_eq!(split(&s, &none(), 2), ["B", "A"]);
        let huge = [
            StrategyItem::new("A", u32::MAX, u32::MAX),
            StrategyItem::new("B", 0, u32::MAX),
        ];
        let placed = split(&huge, &counts(&[("A", usize::MAX)]), 3);
        assert_eq!(placed, ["B", "B", "B"]);
    }

    #[test]
    fn a_repeated_provider_counts_once() {
        let s = [
            StrategyItem::new("A", 0, 1),
            StrategyItem::new("B", 0, 1),
            StrategyItem::new("A", 0, 5),
        ];
        assert_eq!(tally(&split(&s, &none(), 4)), counts(&[("A", 2), ("B", 2)]));
    }
}
