//! SSM Parameter Store (awsJson1_1, `X-Amz-Target: AmazonSSM.<Operation>`, signing name
//! `ssm`): String, StringList and SecureString parameters with versions, labels, tiers,
//! hierarchies and tags, and the reads other parts of Gantry make (a task's `secrets`, a
//! master-key rotation).
//!
//! - `names.rs`: name rules, references (`name`, ARN, `:version`, `:label`), paths, labels,
//!   where a parameter lives in the store;
//! - `record.rs`: the stored record (every version, the tags) and the shapes answered;
//! - `filters.rs`: DescribeParameters' and GetParametersByPath's filters;
//! - `api.rs`: the operations on one named parameter; `listing.rs`: the listings;
//!   `tags.rs`: the tagging calls; `input.rs`: decoding and paging tokens;
//!   `errors.rs`: SSM's error codes and wording.
//!
//! A SecureString's value is sealed with the plane's vault before it is written (additional
//! authenticated data `<ARN>/<version>`): the store never holds its plaintext, and no error,
//! log line, `Debug` output or audit record carries a value. Only GetParameter,
//! GetParameters, GetParametersByPath and GetParameterHistory with `WithDecryption` (and
//! [`parameter_value`]) open one; without it they show the ciphertext, as AWS shows its KMS
//! ciphertext.

mod api;
mod errors;
mod filters;
mod input;
mod listing;
mod names;
mod record;
mod tags;

use crate::auth::Caller;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::{EcsError, EcsResult};
use serde_json::Value;

pub use names::{arn_of_reference, STORE_PREFIX};

/// A parameter's value as [`parameter_value`] resolves it, always decrypted.
#[derive(Debug)]
pub struct ResolvedParameter {
    pub arn: String,
    /// As the parameter was created (with or without a single-level name's leading slash).
    pub name: String,
    pub parameter_type: String,
    pub value: gantry_vault::Plaintext,
}

/// The value `reference` names: a name (with or without the leading slash of a single-level
/// one), an ARN, or either with a `:version` or `:label` selector; SecureStrings decrypted.
/// Errors are SSM's: `ParameterNotFound` (no such parameter or label, or an ARN of another
/// account or region), `ParameterVersionNotFound`, `ValidationException` for a malformed
/// reference; their messages name the reference, never a value.
pub async fn parameter_value(
    plane: &ControlPlane,
    reference: &str,
) -> EcsResult<ResolvedParameter> {
    let given = reference.trim();
    let parsed = names::parse_reference(plane.scope(), given)?;
    if !parsed.local {
        return Err(errors::not_found(given));
    }
    let (record, _) = record::read(plane, &parsed.name)
        .await?
        .ok_or_else(|| errors::not_found(given))?;
    let version = record.select(&parsed.selector, given)?;
    let arn = names::arn(plane.scope(), &record.name);
    let value = record::open(plane, &arn, version)?;
    Ok(ResolvedParameter {
        arn,
        name: record.name.clone(),
        parameter_type: version.parameter_type.clone(),
        value,
    })
}

/// The ARN `reference` names (to authorise a task's execution role on it), whether or not the
/// parameter exists: the canonical `arn:aws:ssm:<region>:<account>:parameter/<name without
/// its leading slash>` for a name, an ARN as given; selectors dropped.
pub fn parameter_arn(plane: &ControlPlane, reference: &str) -> String {
    names::arn_of_reference(plane.scope(), reference)
}

/// Rewraps the data key of every SecureString version still wrapped by a master key other
/// than the primary (step two of a rotation, see `gantry-vault`): the ciphertexts stay as
/// they are and no plaintext is produced. Each record is rewritten with compare-and-swap.
/// Returns how many values were rewrapped.
pub async fn rewrap_all(plane: &ControlPlane) -> EcsResult<usize> {
    let vault = plane.vault().map_err(errors::fault)?;
    let (kvs, _) = plane
        .store
        .range(STORE_PREFIX)
        .await
        .map_err(repo::store_error)
        .map_err(errors::fault)?;
    let mut total = 0;
    for kv in &kvs {
        let parameter: record::ParameterRecord = repo::decode(kv).map_err(errors::fault)?;
        let stale = |p: &record::ParameterRecord| {
            p.versions.iter().any(
                |v| matches!(&v.value, record::StoredValue::Sealed(s) if vault.needs_rewrap(s)),
            )
        };
        if !stale(&parameter) {
            continue;
        }
        let mut rewrapped = 0;
        let updated = repo::update::<record::ParameterRecord, _>(&*plane.store, &kv.key, |p| {
            rewrapped = 0;
            for v in &mut p.versions {
                if let record::StoredValue::Sealed(s) = &mut v.value {
                    if vault.needs_rewrap(s) {
                        *s = vault.rewrap(s).map_err(errors::vault)?;
                        rewrapped += 1;
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(errors::fault)?;
        if updated.is_some() {
            total += rewrapped;
        }
    }
    Ok(total)
}

/// One SSM operation. Faults come back as SSM's `InternalServerError`.
pub(crate) async fn dispatch(
    plane: &ControlPlane,
    caller: &Caller,
    op: &str,
    input: Value,
) -> EcsResult<Value> {
    let result = match op {
        "PutParameter" => api::put(plane, caller, input).await,
        "GetParameter" => api::get(plane, input).await,
        "GetParameters" => api::get_many(plane, input).await,
        "DeleteParameter" => api::delete(plane, input).await,
        "DeleteParameters" => api::delete_many(plane, input).await,
        "LabelParameterVersion" => api::label(plane, input).await,
        "UnlabelParameterVersion" => api::unlabel(plane, input).await,
        "GetParameterHistory" => api::history(plane, input).await,
        "GetParametersByPath" => listing::by_path(plane, input).await,
        "DescribeParameters" => listing::describe(plane, input).await,
        "ListTagsForResource" => tags::list(plane, input).await,
        "AddTagsToResource" => tags::add(plane, input).await,
        "RemoveTagsFromResource" => tags::remove(plane, input).await,
        _ => Err(EcsError::unknown_operation(op)),
    };
    result.map_err(errors::fault)
}

/// The operations [`dispatch`] serves (what `access.rs` gives an IAM action).
pub const OPERATIONS: &[&str] = &[
    "PutParameter",
    "GetParameter",
    "GetParameters",
    "DeleteParameter",
    "DeleteParameters",
    "LabelParameterVersion",
    "UnlabelParameterVersion",
    "GetParameterHistory",
    "GetParametersByPath",
    "DescribeParameters",
    "ListTagsForResource",
    "AddTagsToResource",
    "RemoveTagsFromResource",
];
