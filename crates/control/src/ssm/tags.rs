//! ListTagsForResource, AddTagsToResource and RemoveTagsFromResource for `ResourceType`
//! `Parameter` (the id is the parameter's name, or its ARN). Gantry has no other SSM
//! resource, so any other type's id is `InvalidResourceId`, as an unknown id is.

use super::api::too_many_updates;
use super::errors;
use super::input::{parse, Tag, MAX_TAGS};
use super::names::{self, Selector};
use super::record::ParameterRecord;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::{EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

const CAS_ATTEMPTS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagsInput {
    resource_type: String,
    resource_id: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

/// The store key of the parameter a tagging call names.
fn parameter_key(plane: &ControlPlane, input: &TagsInput) -> EcsResult<String> {
    if input.resource_type != "Parameter" {
        return Err(errors::invalid_resource_id());
    }
    match names::parse_reference(plane.scope(), &input.resource_id) {
        Ok(r) if r.local && r.selector == Selector::Latest => Ok(names::store_key(&r.name)),
        _ => Err(errors::invalid_resource_id()),
    }
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: TagsInput = parse(input)?;
    let key = parameter_key(plane, &input)?;
    let (record, _) = repo::get::<ParameterRecord>(&*plane.store, &key)
        .await
        .map_err(errors::fault)?
        .ok_or_else(errors::invalid_resource_id)?;
    let tags: Vec<Value> = record
        .tags
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    Ok(json!({ "TagList": tags }))
}

async fn change(
    plane: &ControlPlane,
    key: &str,
    apply: impl Fn(&mut ParameterRecord) -> EcsResult<()>,
) -> EcsResult<Value> {
    for _ in 0..CAS_ATTEMPTS {
        let (mut record, rev) = repo::get::<ParameterRecord>(&*plane.store, key)
            .await
            .map_err(errors::fault)?
            .ok_or_else(errors::invalid_resource_id)?;
        apply(&mut record)?;
        if repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(key, rev)],
            vec![repo::put_op(key, &record)?],
        )
        .await
        .map_err(errors::fault)?
        {
            return Ok(json!({}));
        }
    }
    Err(too_many_updates())
}

pub async fn add(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: TagsInput = parse(input)?;
    let key = parameter_key(plane, &input)?;
    change(plane, &key, |record| {
        for t in &input.tags {
            record.tags.insert(t.key.clone(), t.value.clone());
        }
        if record.tags.len() > MAX_TAGS {
            return Err(EcsError::new(
                "TooManyTagsError",
                format!("A parameter can have at most {MAX_TAGS} tags. Remove one or more tags and try the command again."),
            ));
        }
        Ok(())
    })
    .await
}

pub async fn remove(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: TagsInput = parse(input)?;
    let key = parameter_key(plane, &input)?;
    change(plane, &key, |record| {
        for k in &input.tag_keys {
            record.tags.remove(k);
        }
        Ok(())
    })
    .await
}
