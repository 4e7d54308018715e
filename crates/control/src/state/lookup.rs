//! Finding records by the names clients use: a task definition by `family`,
//! `family:revision` or ARN.

use super::records::TaskDefinitionRecord;
use super::repo;
use gantry_model::arn::TaskDefinitionRef;
use gantry_model::{status, EcsError, EcsResult};
use gantry_store::KvStore;

/// Resolve a reference to a stored definition: `family` means the latest ACTIVE revision.
pub async fn task_definition(
    store: &dyn KvStore,
    reference: &str,
) -> EcsResult<(TaskDefinitionRecord, i64)> {
    let not_found = || {
        EcsError::client(format!(
            "Unable to describe task definition '{reference}': it does not exist."
        ))
    };
    let r = TaskDefinitionRef::parse(reference).ok_or_else(not_found)?;
    match r.revision {
        Some(rev) => repo::get(store, &repo::taskdef_key(&r.family, rev))
            .await?
            .ok_or_else(not_found),
        None => {
            let all: Vec<(TaskDefinitionRecord, i64)> =
                repo::list(store, &repo::taskdef_prefix(&r.family)).await?;
            all.into_iter()
                .rev()
                .find(|(rec, _)| rec.task_definition.status.as_deref() == Some(status::ACTIVE))
                .ok_or_else(not_found)
        }
    }
}
