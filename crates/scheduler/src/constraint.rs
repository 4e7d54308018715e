//! Placement constraints: parsing and validation of the wire form into [`Constraint`].
//!
//! `distinctInstance` takes no expression (ECS rejects one); `memberOf` requires a cluster
//! query language expression (see [`crate::query`]). Types are case-sensitive, as the
//! `PlacementConstraintType` enum on the wire.

use gantry_model::types::PlacementConstraint;

use crate::query::Expr;

/// ECS allows at most this many constraints per task (task definition and request together).
pub const MAX_CONSTRAINTS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// No two tasks of the group on the same instance.
    DistinctInstance,
    /// Only instances the expression selects.
    MemberOf(Expr),
}

pub fn parse_constraint(c: &PlacementConstraint) -> Result<Constraint, String> {
    let expression = c.expression.as_deref().filter(|e| !e.trim().is_empty());
    match c.kind.as_deref() {
        Some("distinctInstance") => match expression {
            None => Ok(Constraint::DistinctInstance),
            Some(_) => Err(
                "You can't specify an expression for a distinctInstance placement constraint."
                    .to_string(),
            ),
        },
        Some("memberOf") => match expression {
            None => Err("A memberOf placement constraint requires an expression.".to_string()),
            Some(e) => Expr::parse(e)
                .map(Constraint::MemberOf)
                .map_err(|why| format!("Invalid memberOf expression '{e}': {why}.")),
        },
        Some(other) => Err(format!(
            "Invalid placement constraint type '{other}'; valid values are distinctInstance and memberOf."
        )),
        None => Err(
            "A placement constraint must have a type: distinctInstance or memberOf.".to_string(),
        ),
    }
}

/// Parses every constraint and enforces ECS's limit on their number.
pub fn parse_constraints(constraints: &[PlacementConstraint]) -> Result<Vec<Constraint>, String> {
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(format!(
            "You can specify a maximum of {MAX_CONSTRAINTS} placement constraints; {} were given.",
            constraints.len()
        ));
    }
    constraints.iter().map(parse_constraint).collect()
}
