//! Stage 3 of the pipeline: pick one instance among the best-ranked.
//!
//! Instances whose keys tie are chosen between uniformly at random (reservoir sampling over
//! the scan), driven by the request's seeded RNG, so the same snapshot and seed always give
//! the same placement while different seeds spread load over equivalent instances.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::Rng;

#[derive(Debug, Default)]
pub struct Best {
    index: Option<usize>,
    key: Vec<i64>,
    ties: u32,
}

impl Best {
    /// Considers instance `index` with rank `key` (smaller is better).
    pub fn offer(&mut self, index: usize, key: &[i64], rng: &mut StdRng) {
        let ordering = match self.index {
            None => Ordering::Less,
            Some(_) => key.cmp(&self.key),
        };
        match ordering {
            Ordering::Less => {
                self.index = Some(index);
                self.key.clear();
                self.key.extend_from_slice(key);
                self.ties = 1;
            }
            Ordering::Equal => {
                self.ties = self.ties.saturating_add(1);
                if rng.random_range(0..self.ties) == 0 {
                    self.index = Some(index);
                }
            }
            Ordering::Greater => {}
        }
    }

    pub fn index(&self) -> Option<usize> {
        self.index
    }
}
