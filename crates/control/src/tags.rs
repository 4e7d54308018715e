//! TagResource, UntagResource, ListTagsForResource for every taggable resource, and tag
//! validation shared by the Create/Register calls. Every record keeps its tags in a top-level
//! `tags` member, so tagging works on the stored JSON without knowing the record's type.

use crate::plane::ControlPlane;
use crate::state::repo;
use crate::wire::parse;
use gantry_model::arn::{arn_resource, TaskDefinitionRef};
use gantry_model::types::Tag;
use gantry_model::{EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn validate_tags(tags: &[Tag]) -> EcsResult<()> {
    if tags.len() > 50 {
        return Err(EcsError::invalid_parameter(
            "A resource can have at most 50 tags.",
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 {
            return Err(EcsError::invalid_parameter(format!(
                "Tag key '{}' must be 1 to 128 characters long.",
                t.key
            )));
        }
        if t.value.chars().count() > 256 {
            return Err(EcsError::invalid_parameter(format!(
                "The value of tag '{}' must be at most 256 characters long.",
                t.key
            )));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(EcsError::invalid_parameter(
                "Tag keys beginning with 'aws:' are reserved.",
            ));
        }
    }
    Ok(())
}

/// `include` lists where the only value that matters here is `TAGS`.
pub fn want_tags(include: &Option<Vec<String>>) -> EcsResult<bool> {
    let mut tags = false;
    for i in include.iter().flatten() {
        match i.as_str() {
            "TAGS" => tags = true,
            other => {
                return Err(EcsError::invalid_parameter(format!(
                    "Invalid include value '{other}': only TAGS is supported here."
                )))
            }
        }
    }
    Ok(tags)
}

/// Merge `new` into `existing`: same key → new value.
pub fn merge(existing: &mut Vec<Tag>, new: &[Tag]) {
    for t in new {
        match existing.iter_mut().find(|e| e.key == t.key) {
            Some(e) => e.value = t.value.clone(),
            None => existing.push(t.clone()),
        }
    }
}

/// Where a resource's tags live: its record's key, and for a task set (kept inside its
/// service's record) the set's id.
struct Tagged {
    key: String,
    task_set: Option<String>,
}

fn tagged(arn: &str) -> EcsResult<Tagged> {
    if let Some((cluster, service, id)) = gantry_model::arn::task_set_of_arn(arn) {
        // The id is `ecs-svc/<digits>`; bare digits are taken for it too.
        let id = if id.starts_with("ecs-svc/") {
            id.to_string()
        } else {
            format!("ecs-svc/{id}")
        };
        return Ok(Tagged {
            key: repo::service_key(cluster, service),
            task_set: Some(id),
        });
    }
    Ok(Tagged {
        key: record_key(arn)?,
        task_set: None,
    })
}

/// The object holding the tags in `record`: the record itself, or one of its task sets.
fn holder<'a>(record: &'a mut Value, task_set: Option<&str>) -> Option<&'a mut Value> {
    match task_set {
        None => Some(record),
        Some(id) => record
            .get_mut("taskSets")?
            .as_array_mut()?
            .iter_mut()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id)),
    }
}

/// The store key of the record a resource ARN names.
fn record_key(arn: &str) -> EcsResult<String> {
    let invalid = || EcsError::invalid_parameter(format!("Invalid resource ARN '{arn}'."));
    let resource = arn_resource(arn).ok_or_else(invalid)?;
    let (kind, rest) = resource.split_once('/').ok_or_else(invalid)?;
    match kind {
        // The Fargate pool's hidden cluster is no resource of anyone's.
        "cluster" if rest == gantry_model::FARGATE_POOL => Err(invalid()),
        "cluster" => Ok(repo::cluster_key(rest)),
        // FARGATE and FARGATE_SPOT have no record: they answer as a missing resource.
        "capacity-provider" => Ok(repo::capacity_provider_key(rest)),
        "task-definition" => {
            let r = TaskDefinitionRef::parse(arn).ok_or_else(invalid)?;
            Ok(repo::taskdef_key(
                &r.family,
                r.revision.ok_or_else(invalid)?,
            ))
        }
        "task" | "container-instance" | "service" => {
            let (cluster, id) = rest.split_once('/').ok_or_else(invalid)?;
            Ok(match kind {
                "task" => repo::task_key(cluster, id),
                "service" => repo::service_key(cluster, id),
                _ => repo::instance_key(cluster, id),
            })
        }
        _ => Err(EcsError::invalid_parameter(format!(
            "Tagging is not supported for '{arn}'."
        ))),
    }
}

fn not_found() -> EcsError {
    EcsError::resource_not_found("The specified resource could not be found.")
}

fn tags_of(record: &Value) -> EcsResult<Vec<Tag>> {
    match record.get("tags") {
        Some(t) if !t.is_null() => serde_json::from_value(t.clone())
            .map_err(|e| EcsError::server(format!("Corrupt tags: {e}"))),
        _ => Ok(Vec::new()),
    }
}

async fn change_tags(
    plane: &ControlPlane,
    arn: &str,
    change: impl Fn(&mut Vec<Tag>),
) -> EcsResult<()> {
    let target = tagged(arn)?;
    repo::update::<Value, _>(&*plane.store, &target.key, |record| {
        let holder = holder(record, target.task_set.as_deref()).ok_or_else(not_found)?;
        let mut tags = tags_of(holder)?;
        change(&mut tags);
        validate_tags(&tags)?;
        holder["tags"] = serde_json::to_value(&tags)
            .map_err(|e| EcsError::server(format!("Cannot encode tags: {e}")))?;
        Ok(())
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagInput {
    resource_arn: String,
    tags: Vec<Tag>,
}

pub async fn tag(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: TagInput = parse(input)?;
    validate_tags(&req.tags)?;
    change_tags(plane, &req.resource_arn, |tags| merge(tags, &req.tags)).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

pub async fn untag(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UntagInput = parse(input)?;
    change_tags(plane, &req.resource_arn, |tags| {
        tags.retain(|t| !req.tag_keys.contains(&t.key))
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    resource_arn: String,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    let target = tagged(&req.resource_arn)?;
    // ECS's ListTagsForResource has no ResourceNotFoundException (TagResource and
    // UntagResource do): a missing cluster is ClusterNotFoundException, anything else an
    // invalid parameter.
    let missing = || {
        if gantry_model::arn::arn_resource(&req.resource_arn)
            .is_some_and(|r| r.starts_with("cluster/"))
        {
            EcsError::cluster_not_found()
        } else {
            EcsError::invalid_parameter("The specified resource could not be found.")
        }
    };
    let (mut record, _) = repo::get::<Value>(&*plane.store, &target.key)
        .await?
        .ok_or_else(missing)?;
    let holder = holder(&mut record, target.task_set.as_deref()).ok_or_else(missing)?;
    Ok(json!({"tags": tags_of(holder)?}))
}
