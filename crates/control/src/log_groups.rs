//! CloudWatch Logs groups: CreateLogGroup, DeleteLogGroup, DescribeLogGroups,
//! PutRetentionPolicy / DeleteRetentionPolicy, and tags both ways (TagResource, UntagResource,
//! ListTagsForResource on the group's ARN; the older TagLogGroup, UntagLogGroup,
//! ListTagsLogGroup by name). Storage is the log store's (`gantry-logs`); this module checks
//! input as the Logs model does and shapes the answers.

use crate::log_input::{self, parse};
use crate::logs::{group_not_found, store_error};
use crate::plane::ControlPlane;
use gantry_logs::{GroupInfo, LogError, NewGroup, LOG_GROUP_CLASSES, RETENTION_DAYS};
use gantry_model::{ArnScope, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn class(value: Option<&str>) -> EcsResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(c) if LOG_GROUP_CLASSES.contains(&c) => Ok(Some(c.to_string())),
        Some(c) => Err(EcsError::invalid_parameter(format!(
            "1 validation error detected: Value '{c}' at 'logGroupClass' failed to satisfy \
             constraint: Member must satisfy enum value set: [{}]",
            LOG_GROUP_CLASSES.join(", ")
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    log_group_name: String,
    kms_key_id: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    log_group_class: Option<String>,
    deletion_protection_enabled: Option<bool>,
}

pub(crate) async fn create(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: CreateInput = parse(input)?;
    log_input::new_group_name(&req.log_group_name)?;
    if req.kms_key_id.is_some() {
        // AWS answers a key it cannot use with InvalidParameterException; Gantry has no KMS.
        return Err(EcsError::invalid_parameter(
            "Gantry has no KMS keys: create the log group without kmsKeyId.",
        ));
    }
    if req.deletion_protection_enabled == Some(true) {
        return Err(EcsError::invalid_parameter(
            "Deletion protection is not supported by Gantry yet: create the log group without deletionProtectionEnabled.",
        ));
    }
    let tags = req.tags.unwrap_or_default();
    if !tags.is_empty() {
        log_input::tags(&tags, "tags")?;
    }
    let group = NewGroup {
        name: req.log_group_name,
        tags,
        class: class(req.log_group_class.as_deref())?,
    };
    plane
        .logs
        .backend()
        .create_group(group)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameInput {
    log_group_name: String,
}

fn named(input: Value) -> EcsResult<String> {
    let req: NameInput = parse(input)?;
    log_input::group_name(&req.log_group_name, "logGroupName")?;
    Ok(req.log_group_name)
}

pub(crate) async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let name = named(input)?;
    plane
        .logs
        .backend()
        .delete_group(&name)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetentionInput {
    log_group_name: String,
    retention_in_days: i64,
}

pub(crate) async fn put_retention(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: RetentionInput = parse(input)?;
    log_input::group_name(&req.log_group_name, "logGroupName")?;
    let days = u32::try_from(req.retention_in_days)
        .ok()
        .filter(|d| RETENTION_DAYS.contains(d))
        .ok_or_else(|| {
            let allowed: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
            EcsError::invalid_parameter(format!(
                "1 validation error detected: Value '{}' at 'retentionInDays' failed to satisfy \
                 constraint: Member must satisfy enum value set: [{}]",
                req.retention_in_days,
                allowed.join(", ")
            ))
        })?;
    plane
        .logs
        .backend()
        .set_retention(&req.log_group_name, Some(days))
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

pub(crate) async fn delete_retention(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let name = named(input)?;
    plane
        .logs
        .backend()
        .set_retention(&name, None)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    log_group_name_prefix: Option<String>,
    log_group_name_pattern: Option<String>,
    log_group_identifiers: Option<Vec<String>>,
    log_group_class: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

/// The group one page starts after: `n/<name>` (groups are in name order).
const TOKEN_PREFIX: &str = "n/";

pub(crate) async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let scope = plane.scope();
    let filters = [
        req.log_group_name_prefix.is_some(),
        req.log_group_name_pattern.is_some(),
        req.log_group_identifiers.is_some(),
    ];
    if filters.iter().filter(|f| **f).count() > 1 {
        return Err(EcsError::invalid_parameter(
            "LogGroup name prefix, LogGroup name pattern and LogGroup identifiers are mutually exclusive parameters.",
        ));
    }
    if let Some(p) = &req.log_group_name_prefix {
        log_input::group_name(p, "logGroupNamePrefix")?;
    }
    if let Some(p) = req
        .log_group_name_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        log_input::group_name(p, "logGroupNamePattern")?;
    }
    let identifiers: Option<Vec<String>> = match &req.log_group_identifiers {
        Some(ids) if ids.is_empty() || ids.len() > 50 => {
            return Err(EcsError::invalid_parameter(
                "logGroupIdentifiers must name 1 to 50 log groups.",
            ))
        }
        Some(ids) => Some(
            ids.iter()
                .map(|id| log_input::group_identifier(scope, None, Some(id)))
                .collect::<EcsResult<_>>()?,
        ),
        None => None,
    };
    let class = class(req.log_group_class.as_deref())?;
    let limit = log_input::describe_limit(req.limit)?;
    let after = match req.next_token.as_deref() {
        None => None,
        Some(t) => Some(
            t.strip_prefix(TOKEN_PREFIX)
                .ok_or_else(log_input::invalid_token)?
                .to_string(),
        ),
    };
    let groups = plane
        .logs
        .backend()
        .list_groups()
        .await
        .map_err(store_error)?;
    // The pattern is a case-sensitive substring, as the model documents it ("DataLogs"
    // matches "aws/DataLogs" but not "datalogs").
    let pattern = req.log_group_name_pattern.as_deref().unwrap_or("");
    let mut matching = groups.into_iter().filter(|g| {
        req.log_group_name_prefix
            .as_deref()
            .is_none_or(|p| g.name.starts_with(p))
            && g.name.contains(pattern)
            && identifiers.as_ref().is_none_or(|ids| ids.contains(&g.name))
            && class.as_deref().is_none_or(|c| g.class == c)
            && after.as_deref().is_none_or(|a| g.name.as_str() > a)
    });
    let page: Vec<GroupInfo> = matching.by_ref().take(limit).collect();
    // With a pattern, CloudWatch returns only the name, the ARN and the creation time.
    let brief = req.log_group_name_pattern.is_some();
    let mut out = json!({
        "logGroups": page.iter().map(|g| describe_group(scope, g, brief)).collect::<Vec<_>>(),
    });
    if matching.next().is_some() {
        if let Some(last) = page.last() {
            out["nextToken"] = json!(format!("{TOKEN_PREFIX}{}", last.name));
        }
    }
    Ok(out)
}

fn describe_group(scope: &ArnScope, g: &GroupInfo, brief: bool) -> Value {
    let arn = scope.log_group(&g.name);
    let mut group = json!({
        "logGroupName": g.name,
        "creationTime": g.creation_time,
        // CloudWatch's `arn` ends in `:*` (for IAM policies); `logGroupArn` does not.
        "arn": format!("{arn}:*"),
    });
    if brief {
        return group;
    }
    group["logGroupArn"] = json!(arn);
    group["storedBytes"] = json!(g.stored_bytes);
    group["metricFilterCount"] = json!(0);
    group["logGroupClass"] = json!(g.class);
    if let Some(days) = g.retention_days {
        group["retentionInDays"] = json!(days);
    }
    group
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagResourceInput {
    resource_arn: String,
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagResourceInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArnInput {
    resource_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagLogGroupInput {
    log_group_name: String,
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagLogGroupInput {
    log_group_name: String,
    tags: Vec<String>,
}

/// Adds tags; `too_many` is the error the operation's model has for passing 50 tags
/// (TagResource's `TooManyTagsException`, TagLogGroup's `InvalidParameterException`).
async fn add_tags(
    plane: &ControlPlane,
    group: &str,
    tags: BTreeMap<String, String>,
    too_many: fn(String) -> EcsError,
) -> EcsResult<Value> {
    log_input::tags(&tags, "tags")?;
    match plane.logs.backend().tag_group(group, tags).await {
        Ok(()) => Ok(json!({})),
        Err(e @ LogError::TooManyTags { .. }) => Err(too_many(format!(
            "A log group can have at most {} tags: {e}.",
            gantry_logs::MAX_TAGS
        ))),
        Err(e) => Err(store_error(e)),
    }
}

async fn remove_tags(plane: &ControlPlane, group: &str, keys: Vec<String>) -> EcsResult<Value> {
    if keys.len() > gantry_logs::MAX_TAGS {
        return Err(EcsError::invalid_parameter(format!(
            "At most {} tag keys can be removed at once.",
            gantry_logs::MAX_TAGS
        )));
    }
    plane
        .logs
        .backend()
        .untag_group(group, keys)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

async fn list_tags(plane: &ControlPlane, group: &str) -> EcsResult<Value> {
    let tags = plane
        .logs
        .backend()
        .group_tags(group)
        .await
        .map_err(store_error)?;
    Ok(json!({ "tags": tags }))
}

pub(crate) async fn tag_resource(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: TagResourceInput = parse(input)?;
    let group = log_input::group_of_arn(plane.scope(), &req.resource_arn)?;
    add_tags(plane, &group, req.tags, |m| {
        EcsError::new("TooManyTagsException", m)
    })
    .await
}

pub(crate) async fn untag_resource(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UntagResourceInput = parse(input)?;
    let group = log_input::group_of_arn(plane.scope(), &req.resource_arn)?;
    remove_tags(plane, &group, req.tag_keys).await
}

pub(crate) async fn list_tags_for_resource(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ArnInput = parse(input)?;
    let group = log_input::group_of_arn(plane.scope(), &req.resource_arn)?;
    list_tags(plane, &group).await
}

pub(crate) async fn tag_log_group(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: TagLogGroupInput = parse(input)?;
    log_input::group_name(&req.log_group_name, "logGroupName")?;
    add_tags(
        plane,
        &req.log_group_name,
        req.tags,
        EcsError::invalid_parameter,
    )
    .await
}

pub(crate) async fn untag_log_group(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UntagLogGroupInput = parse(input)?;
    log_input::group_name(&req.log_group_name, "logGroupName")?;
    if req.tags.is_empty() {
        return Err(EcsError::invalid_parameter(
            "1 validation error detected: Value '[]' at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    remove_tags(plane, &req.log_group_name, req.tags).await
}

pub(crate) async fn list_tags_log_group(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let name = named(input)?;
    list_tags(plane, &name).await
}

/// The group must exist (for operations that only read it).
pub(crate) async fn require(plane: &ControlPlane, name: &str) -> EcsResult<GroupInfo> {
    plane
        .logs
        .backend()
        .group(name)
        .await
        .map_err(store_error)?
        .ok_or_else(group_not_found)
}
