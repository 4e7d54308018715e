//! Placement strategies: parsing and validation of the wire form into [`Strategy`].
//!
//! Validation follows the ECS API reference: `type` is one of the `PlacementStrategyType` enum
//! values (`random`, `spread`, `binpack`, case-sensitive as on the wire); `binpack` takes the
//! field `cpu` or `memory`; `spread` takes `instanceId` (or its alias `host`) or
//! `attribute:<name>`; `random` ignores its field, as documented. Field keywords are accepted
//! case-insensitively because that is harmless and clients are inconsistent about it.

use gantry_model::types::PlacementStrategy;

/// ECS allows at most this many strategy rules per RunTask / service.
pub const MAX_STRATEGIES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Random order among the remaining candidates.
    Random,
    /// Prefer the instance with the least remaining amount of the resource.
    Binpack(Resource),
    /// Prefer the instance running the fewest tasks of the group.
    SpreadInstance,
    /// Prefer instances whose attribute value has the fewest tasks of the group.
    SpreadAttribute(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

pub fn parse_strategy(s: &PlacementStrategy) -> Result<Strategy, String> {
    let field = s.field.as_deref().map(str::trim).filter(|f| !f.is_empty());
    match s.kind.as_deref() {
        Some("random") => Ok(Strategy::Random),
        Some("binpack") => match field {
            Some(f) if f.eq_ignore_ascii_case("cpu") => Ok(Strategy::Binpack(Resource::Cpu)),
            Some(f) if f.eq_ignore_ascii_case("memory") => Ok(Strategy::Binpack(Resource::Memory)),
            Some(f) => Err(format!(
                "Invalid field '{f}' for the binpack placement strategy; valid values are cpu and memory."
            )),
            None => Err("The binpack placement strategy requires a field: cpu or memory.".to_string()),
        },
        Some("spread") => match field {
            Some(f) if f.eq_ignore_ascii_case("instanceId") || f.eq_ignore_ascii_case("host") => {
                Ok(Strategy::SpreadInstance)
            }
            Some(f) => match f.strip_prefix("attribute:") {
                Some(name) if !name.trim().is_empty() => {
                    Ok(Strategy::SpreadAttribute(name.trim().to_string()))
                }
                _ => Err(format!(
                    "Invalid field '{f}' for the spread placement strategy; valid values are \
                     instanceId, host or attribute:<name> (e.g. attribute:ecs.availability-zone)."
                )),
            },
            None => Err(
                "The spread placement strategy requires a field: instanceId, host or attribute:<name>."
                    .to_string(),
            ),
        },
        Some(other) => Err(format!(
            "Invalid placement strategy type '{other}'; valid values are random, spread and binpack."
        )),
        None => Err("A placement strategy must have a type: random, spread or binpack.".to_string()),
    }
}

/// Parses every strategy and enforces ECS's limit on their number.
pub fn parse_strategies(strategies: &[PlacementStrategy]) -> Result<Vec<Strategy>, String> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(format!(
            "You can specify a maximum of {MAX_STRATEGIES} placement strategy rules; {} were given.",
            strategies.len()
        ));
    }
    strategies.iter().map(parse_strategy).collect()
}
