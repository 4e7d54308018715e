//! Stage 3 of the pipeline: pick one instance among the best-ranked.
//!
//! The scan collects every instance whose key ties with the best; then one draw from the
//! request's seeded RNG, `r` in `0..ties`, picks the `r`-th of them in snapshot order (no draw
//! when only one instance is best). Every best-ranked instance is equally likely, the same
//! snapshot and seed always give the same placement, and the choice depends only on the set of
//! best-ranked instances, not on the order in which worse ones were met, which is what lets
//! [`crate::PlacementIndex`] find the same instance without visiting the others.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::Rng;

#[derive(Debug, Default)]
pub struct Best {
    key: Vec<i64>,
    /// Indices of the instances tied at `key`, in the order offered (snapshot order).
    ties: Vec<usize>,
}

impl Best {
    /// Forgets the previous task's candidates (keeps the buffers).
    pub fn clear(&mut self) {
        self.key.clear();
        self.ties.clear();
    }

    /// Considers instance `index` with rank `key` (smaller is better). Instances must be offered
    /// in snapshot order.
    pub fn offer(&mut self, index: usize, key: &[i64]) {
        let ordering = if self.ties.is_empty() {
            Ordering::Less
        } else {
            key.cmp(&self.key)
        };
        match ordering {
            Ordering::Less => {
                self.key.clear();
                self.key.extend_from_slice(key);
                self.ties.clear();
                self.ties.push(index);
            }
            Ordering::Equal => self.ties.push(index),
            Ordering::Greater => {}
        }
    }

    /// The chosen instance, if any was offered.
    pub fn pick(&self, rng: &mut StdRng) -> Option<usize> {
        pick_nth(self.ties.len(), rng).and_then(|r| self.ties.get(r).copied())
    }
}

/// Which of `ties` equally good candidates (in snapshot order) to take: none of none, the only
/// one without a draw, else one seeded draw.
pub fn pick_nth(ties: usize, rng: &mut StdRng) -> Option<usize> {
    match ties {
        0 => None,
        1 => Some(0),
        n => Some(rng.random_range(0..n)),
    }
}
