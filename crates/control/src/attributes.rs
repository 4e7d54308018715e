//! PutAttributes, ListAttributes, DeleteAttributes: custom attributes on container
//! instances, the ones `memberOf` constraints and list filters match against.

use crate::clusters;
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::keys::instance_key_for as key_for;
use crate::state::repo;
use crate::wire::{parse, to_output};
use gantry_model::types::{Attribute, ContainerInstance};
use gantry_model::{EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

pub const TARGET_TYPE: &str = "container-instance";

pub fn validate_attribute(a: &Attribute) -> EcsResult<()> {
    let name_ok = !a.name.is_empty()
        && a.name.len() <= 128
        && a.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '\\' | '.'));
    if !name_ok {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid attribute name '{}': up to 128 letters, numbers, hyphens, underscores, slashes, back slashes and periods.",
            a.name
        )));
    }
    if let Some(v) = &a.value {
        let ok = !v.is_empty()
            && v.len() <= 128
            && v.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '-' | '_' | '/' | '\\' | '.' | '@' | ':' | ' ')
            });
        if !ok {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid value '{v}' for attribute '{}': up to 128 letters, numbers, hyphens, underscores, periods, at signs, slashes, back slashes, colons and spaces.",
                a.name
            )));
        }
    }
    if let Some(t) = &a.target_type {
        if t != TARGET_TYPE {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid targetType '{t}': only container-instance is supported."
            )));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeInput {
    cluster: Option<String>,
    attributes: Vec<Attribute>,
}

/// Validate every attribute and check every target exists before writing anything.
async fn prepare(plane: &ControlPlane, input: Value) -> EcsResult<(String, Vec<Attribute>)> {
    let req: ChangeInput = parse(input)?;
    if req.attributes.is_empty() || req.attributes.len() > 10 {
        return Err(EcsError::invalid_parameter(
            "Specify between 1 and 10 attributes.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    for a in &req.attributes {
        validate_attribute(a)?;
        let target = a.target_id.as_deref().ok_or_else(|| {
            EcsError::invalid_parameter(format!(
                "Attribute '{}' needs a targetId (a container instance ID or ARN).",
                a.name
            ))
        })?;
        if repo::get::<Value>(&*plane.store, &key_for(&cname, target))
            .await?
            .is_none()
        {
            return Err(EcsError::new(
                "TargetNotFoundException",
                format!("Could not find the container instance '{target}' in cluster {cname}."),
            ));
        }
    }
    Ok((cname, req.attributes))
}

pub async fn put(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let (cname, attrs) = prepare(plane, input).await?;
    for a in &attrs {
        let target = a.target_id.as_deref().unwrap_or_default();
        repo::update::<ContainerInstance, _>(&*plane.store, &key_for(&cname, target), |ci| {
            let list = ci.attributes.get_or_insert_with(Vec::new);
            match list.iter_mut().find(|e| e.name == a.name) {
                Some(e) => e.value = a.value.clone(),
                None => list.push(Attribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                    target_type: None,
                    target_id: None,
                }),
            }
            ci.version = Some(ci.version.unwrap_or(0) + 1);
            Ok(())
        })
        .await?;
    }
    Ok(json!({"attributes": to_output(&attrs)?}))
}

pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let (cname, attrs) = prepare(plane, input).await?;
    for a in &attrs {
        let target = a.target_id.as_deref().unwrap_or_default();
        repo::update::<ContainerInstance, _>(&*plane.store, &key_for(&cname, target), |ci| {
            if let Some(list) = ci.attributes.as_mut() {
                list.retain(|e| e.name != a.name);
            }
            ci.version = Some(ci.version.unwrap_or(0) + 1);
            Ok(())
        })
        .await?;
    }
    Ok(json!({"attributes": to_output(&attrs)?}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    cluster: Option<String>,
    target_type: String,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
    next_token: Option<String>,
    max_results: Option<i32>,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    if req.target_type != TARGET_TYPE {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid targetType '{}': only container-instance is supported.",
            req.target_type
        )));
    }
    if req.attribute_value.is_some() && req.attribute_name.is_none() {
        return Err(EcsError::invalid_parameter(
            "attributeValue can only be given together with attributeName.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let instances: Vec<(ContainerInstance, i64)> =
        repo::list(&*plane.store, &repo::instances_prefix(&cname)).await?;
    let mut out = Vec::new();
    for (ci, _) in instances {
        for a in ci.attributes.iter().flatten() {
            if req.attribute_name.as_ref().is_some_and(|n| *n != a.name) {
                continue;
            }
            if req.attribute_value.is_some() && req.attribute_value != a.value {
                continue;
            }
            out.push(Attribute {
                name: a.name.clone(),
                value: a.value.clone(),
                target_type: Some(TARGET_TYPE.into()),
                target_id: ci.container_instance_arn.clone(),
            });
        }
    }
    let (page, next) = pagination::page(out, req.next_token.as_deref(), req.max_results, 100)?;
    let mut body = json!({"attributes": to_output(&page)?});
    if let Some(n) = next {
        body["nextToken"] = json!(n);
    }
    Ok(body)
}
