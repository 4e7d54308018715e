//! The Secrets Manager operations. Each checks its whole input, then reads the secret and
//! writes it back with compare-and-swap (`records::update`); values are sealed before they
//! reach a record and opened only for GetSecretValue.

use super::errors;
use super::input::{self, parse, PasswordInput, SecretText, TagInput};
use super::records::{self, Change, SecretRecord, SecretVersion, ValueKind, AWSCURRENT};
use crate::plane::ControlPlane;
use crate::state::repo;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use gantry_model::{now_epoch, EcsResult};
use gantry_vault::Vault;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub async fn dispatch(plane: &ControlPlane, op: &str, input: Value) -> EcsResult<Value> {
    // Every call holds the sealing lock shared: a write from its seal to its commit, so a
    // master key rotation never misses a value sealed under a key it retires; a read from
    // reading a value to opening it, so the rotation retires old keys only when no read may
    // still hold a value they wrap. (Nothing below takes the lock again.)
    let _sealing = plane.sealing.read().await;
    match op {
        "CreateSecret" => create_secret(plane, input).await,
        "GetSecretValue" => get_secret_value(plane, input).await,
        "PutSecretValue" => put_secret_value(plane, input).await,
        "UpdateSecret" => update_secret(plane, input).await,
        "UpdateSecretVersionStage" => update_secret_version_stage(plane, input).await,
        "DescribeSecret" => describe_secret(plane, input).await,
        "ListSecretVersionIds" => list_secret_version_ids(plane, input).await,
        "ListSecrets" => list_secrets(plane, input).await,
        "DeleteSecret" => delete_secret(plane, input).await,
        "RestoreSecret" => restore_secret(plane, input).await,
        "TagResource" => tag_resource(plane, input).await,
        "UntagResource" => untag_resource(plane, input).await,
        "GetRandomPassword" => get_random_password(input),
        "GetResourcePolicy" => get_resource_policy(plane, input).await,
        "PutResourcePolicy" => put_resource_policy(plane, input).await,
        "DeleteResourcePolicy" => delete_resource_policy(plane, input).await,
        _ => Err(gantry_model::EcsError::unknown_operation(op)),
    }
}

/// `{ARN, Name}`, what most writes answer.
fn arn_and_name(s: &SecretRecord) -> Value {
    json!({"ARN": s.arn, "Name": s.name})
}

/// Six random ASCII letters and digits: the suffix of a secret's ARN.
fn arn_suffix() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn new_version_id(token: Option<String>) -> String {
    token.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Whether version `v` already holds exactly `value` (a retried call with the same
/// `ClientRequestToken`). Opening it is the only way to know: the store holds no plaintext
/// nor anything derived from it that could be compared instead.
fn same_value(
    vault: &Vault,
    arn: &str,
    v: &SecretVersion,
    value: &input::NewValue,
) -> EcsResult<bool> {
    if v.kind != value.kind {
        return Ok(false);
    }
    let stored = records::open(vault, arn, v)?;
    Ok(stored.as_bytes() == value.bytes.as_slice())
}

/// What a write that carries a value does with it, inside a read-modify-write: a new version
/// holding `stages`, or, for a `ClientRequestToken` already used, nothing when the value is
/// the same and `ResourceExistsException` when it is not. Returns the version's id and
/// whether it was added.
fn put_version(
    vault: &Vault,
    secret: &mut SecretRecord,
    version_id: &str,
    value: &input::NewValue,
    stages: &[String],
) -> EcsResult<bool> {
    if let Some(existing) = secret.version(version_id) {
        return if same_value(vault, &secret.arn, existing, value)? {
            Ok(false)
        } else {
            Err(errors::version_exists())
        };
    }
    let version = records::seal(vault, &secret.arn, version_id, value.kind, &value.bytes)?;
    secret.add_version(version, stages);
    secret.last_changed_date = now_epoch();
    Ok(true)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateSecretInput {
    name: String,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    secret_string: Option<SecretText>,
    secret_binary: Option<SecretText>,
    tags: Option<Vec<TagInput>>,
    add_replica_regions: Option<Vec<Value>>,
    #[serde(rename = "Type")]
    secret_type: Option<String>,
    #[serde(rename = "CrossAccountPrimaryARN")]
    cross_account_primary_arn: Option<String>,
}

async fn create_secret(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: CreateSecretInput = parse(input)?;
    input::check_name(&req.name)?;
    if req
        .add_replica_regions
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return Err(errors::invalid_request(
            "Gantry does not replicate secrets to other Regions.",
        ));
    }
    if req.secret_type.is_some() || req.cross_account_primary_arn.is_some() {
        return Err(errors::invalid_request(
            "Gantry does not support managed external secrets or cross-account secrets.",
        ));
    }
    let tags = input::tags(req.tags.unwrap_or_default())?;
    input::check_tag_count(&tags)?;
    let value = input::value(req.secret_string, req.secret_binary)?;
    let vault = plane.vault()?;
    let version_id = new_version_id(req.client_request_token);
    let key = repo::secret_key(&req.name);
    for _ in 0..8 {
        let existing = repo::get::<SecretRecord>(&*plane.store, &key).await?;
        let guard_rev = match &existing {
            Some((s, _)) if s.is_purgeable(now_epoch()) => existing.as_ref().map(|(_, r)| *r),
            Some((s, _)) if s.is_deleted() => return Err(errors::scheduled_for_deletion()),
            Some((s, _)) => {
                // A retried create (same token, same value) answers as the first did.
                let retried = match (&value, s.version(&version_id)) {
                    (Some(v), Some(existing)) => same_value(vault, &s.arn, existing, v)?,
                    _ => false,
                };
                if retried {
                    return Ok(json!({"ARN": s.arn, "Name": s.name, "VersionId": version_id}));
                }
                return Err(errors::already_exists(&req.name));
            }
            None => None,
        };
        let now = now_epoch();
        let mut secret = SecretRecord {
            name: req.name.clone(),
            arn: format!(
                "{}{}-{}",
                records::arn_prefix(plane),
                req.name,
                arn_suffix()
            ),
            description: req.description.clone(),
            kms_key_id: req.kms_key_id.clone().filter(|k| !k.is_empty()),
            tags: tags.clone(),
            created_date: now,
            last_changed_date: now,
            deleted_date: None,
            deletion_date: None,
            resource_policy: None,
            versions: Vec::new(),
        };
        if let Some(v) = &value {
            put_version(
                vault,
                &mut secret,
                &version_id,
                v,
                &[AWSCURRENT.to_string()],
            )?;
        }
        let written = repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, guard_rev.unwrap_or(0))],
            vec![repo::put_op(&key, &secret)?],
        )
        .await?;
        if written {
            let mut out = arn_and_name(&secret);
            if value.is_some() {
                out["VersionId"] = json!(version_id);
            }
            return Ok(out);
        }
    }
    Err(errors::invalid_request(
        "Another request is creating this secret; try again.",
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetSecretValueInput {
    secret_id: String,
    version_id: Option<String>,
    version_stage: Option<String>,
}

/// The version a read names: `VersionId` (which must then carry `VersionStage`, if given),
/// else the version holding `VersionStage`, `AWSCURRENT` by default.
pub(super) fn chosen_version<'s>(
    secret: &'s SecretRecord,
    version_id: Option<&str>,
    version_stage: Option<&str>,
) -> EcsResult<&'s SecretVersion> {
    match version_id {
        Some(id) => {
            let v = secret
                .version(id)
                .ok_or_else(|| errors::no_value_for_version(id))?;
            if let Some(stage) = version_stage {
                if !v.stages.iter().any(|s| s == stage) {
                    return Err(errors::invalid_request(
                        "You provided a VersionStage that is not associated to the provided VersionId.",
                    ));
                }
            }
            Ok(v)
        }
        None => {
            let stage = version_stage.unwrap_or(AWSCURRENT);
            secret
                .version_with_stage(stage)
                .ok_or_else(|| errors::no_value_for_stage(stage))
        }
    }
}

async fn get_secret_value(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: GetSecretValueInput = parse(input)?;
    let (secret, _) = records::find(plane, &req.secret_id).await?;
    secret.writable()?;
    let v = chosen_version(
        &secret,
        req.version_id.as_deref(),
        req.version_stage.as_deref(),
    )?;
    let plaintext = records::open(plane.vault()?, &secret.arn, v)?;
    let mut out = json!({
        "ARN": secret.arn,
        "Name": secret.name,
        "VersionId": v.id,
        "VersionStages": v.stages,
        "CreatedDate": v.created_date,
    });
    match v.kind {
        ValueKind::String => {
            let text = plaintext.as_str().ok_or_else(errors::decryption_failure)?;
            out["SecretString"] = json!(text);
        }
        ValueKind::Binary => out["SecretBinary"] = json!(B64.encode(plaintext.as_bytes())),
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutSecretValueInput {
    secret_id: String,
    client_request_token: Option<String>,
    secret_string: Option<SecretText>,
    secret_binary: Option<SecretText>,
    version_stages: Option<Vec<String>>,
    rotation_token: Option<SecretText>,
}

async fn put_secret_value(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: PutSecretValueInput = parse(input)?;
    if req.rotation_token.is_some() {
        return Err(errors::invalid_request(
            "Gantry does not rotate secrets: RotationToken is not accepted.",
        ));
    }
    let value = input::value(req.secret_string, req.secret_binary)?.ok_or_else(|| {
        errors::invalid_request("You must provide either SecretString or SecretBinary.")
    })?;
    let stages = req
        .version_stages
        .unwrap_or_else(|| vec![AWSCURRENT.to_string()]);
    let vault = plane.vault()?;
    let version_id = new_version_id(req.client_request_token);
    let (secret, ()) = records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        Ok(if put_version(vault, s, &version_id, &value, &stages)? {
            Change::Write(())
        } else {
            Change::Unchanged(())
        })
    })
    .await?;
    let stages = secret
        .version(&version_id)
        .map(|v| v.stages.clone())
        .unwrap_or_default();
    Ok(json!({
        "ARN": secret.arn,
        "Name": secret.name,
        "VersionId": version_id,
        "VersionStages": stages,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateSecretInput {
    secret_id: String,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    secret_string: Option<SecretText>,
    secret_binary: Option<SecretText>,
    #[serde(rename = "Type")]
    secret_type: Option<String>,
}

async fn update_secret(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateSecretInput = parse(input)?;
    if req.secret_type.is_some() {
        return Err(errors::invalid_request(
            "Gantry does not support managed external secrets.",
        ));
    }
    let value = input::value(req.secret_string, req.secret_binary)?;
    let vault = plane.vault()?;
    let version_id = new_version_id(req.client_request_token);
    let (secret, with_version) = records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        let mut changed = false;
        if let Some(d) = &req.description {
            changed |= s.description.as_ref() != Some(d);
            s.description = Some(d.clone());
        }
        if let Some(k) = &req.kms_key_id {
            let k = Some(k.clone()).filter(|k| !k.is_empty());
            changed |= s.kms_key_id != k;
            s.kms_key_id = k;
        }
        let mut added = false;
        if let Some(v) = &value {
            added = put_version(vault, s, &version_id, v, &[AWSCURRENT.to_string()])?;
        }
        if changed {
            s.last_changed_date = now_epoch();
        }
        Ok(if changed || added {
            Change::Write(value.is_some())
        } else {
            Change::Unchanged(value.is_some())
        })
    })
    .await?;
    let mut out = arn_and_name(&secret);
    if with_version {
        out["VersionId"] = json!(version_id);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateSecretVersionStageInput {
    secret_id: String,
    version_stage: String,
    remove_from_version_id: Option<String>,
    move_to_version_id: Option<String>,
}

async fn update_secret_version_stage(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateSecretVersionStageInput = parse(input)?;
    let stage = req.version_stage.as_str();
    let (secret, ()) = records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        for id in [&req.remove_from_version_id, &req.move_to_version_id]
            .into_iter()
            .flatten()
        {
            if s.version(id).is_none() {
                return Err(errors::invalid_parameter(format!(
                    "Secrets Manager can't find the specified secret version: {id}"
                )));
            }
        }
        let holder = s.version_with_stage(stage).map(|v| v.id.clone());
        if let Some(from) = &req.remove_from_version_id {
            if holder.as_ref() != Some(from) {
                return Err(errors::invalid_parameter(format!(
                    "The staging label {stage} is not attached to version {from}."
                )));
            }
        } else if let Some(holder) = holder.as_ref().filter(|h| {
            req.move_to_version_id.as_ref() != Some(*h)
        }) {
            return Err(errors::invalid_parameter(format!(
                "The parameter RemoveFromVersionId can't be empty. Staging label {stage} is currently attached to version {holder}, so you must explicitly reference that version in RemoveFromVersionId."
            )));
        }
        match &req.move_to_version_id {
            Some(to) => s.move_stage(stage, to),
            None if stage == AWSCURRENT => {
                return Err(errors::invalid_parameter(
                    "You can only move staging label AWSCURRENT to a different secret version. It can't be completely removed.",
                ))
            }
            None => {
                if let Some(from) = &req.remove_from_version_id {
                    s.remove_stage(stage, from);
                }
            }
        }
        s.last_changed_date = now_epoch();
        Ok(Change::Write(()))
    })
    .await?;
    Ok(arn_and_name(&secret))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretIdInput {
    secret_id: String,
}

/// The members DescribeSecret and ListSecrets share.
fn described(s: &SecretRecord, versions_member: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("ARN".into(), json!(s.arn));
    out.insert("Name".into(), json!(s.name));
    if let Some(d) = &s.description {
        out.insert("Description".into(), json!(d));
    }
    if let Some(k) = &s.kms_key_id {
        out.insert("KmsKeyId".into(), json!(k));
    }
    out.insert("LastChangedDate".into(), json!(s.last_changed_date));
    if let Some(d) = s.deleted_date {
        out.insert("DeletedDate".into(), json!(d));
    }
    if !s.tags.is_empty() {
        out.insert("Tags".into(), json!(s.tags));
    }
    let stages = s.versions_to_stages();
    if !stages.is_empty() {
        out.insert(versions_member.into(), Value::Object(stages));
    }
    out.insert("CreatedDate".into(), json!(s.created_date));
    out
}

async fn describe_secret(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: SecretIdInput = parse(input)?;
    let (secret, _) = records::find(plane, &req.secret_id).await?;
    Ok(Value::Object(described(&secret, "VersionIdsToStages")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListSecretVersionIdsInput {
    secret_id: String,
    max_results: Option<i64>,
    next_token: Option<String>,
    include_deprecated: Option<bool>,
}

/// The secret's versions, newest first; those without a staging label (deprecated) only
/// with `IncludeDeprecated`, as Secrets Manager lists them. Terraform's
/// `aws_secretsmanager_secret_version` reads this when it moves `AWSCURRENT` onto a version.
async fn list_secret_version_ids(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListSecretVersionIdsInput = parse(input)?;
    let size = req.max_results.unwrap_or(100).clamp(1, 100) as usize;
    let start = match req.next_token.as_deref() {
        Some(t) => input::token_offset(t)?,
        None => 0,
    };
    let (secret, _) = records::find(plane, &req.secret_id).await?;
    let include_deprecated = req.include_deprecated.unwrap_or(false);
    // Newest first: versions are kept in the order they were made, which also orders those
    // made in the same millisecond (the sort is stable).
    let mut versions: Vec<&SecretVersion> = secret
        .versions
        .iter()
        .rev()
        .filter(|v| include_deprecated || !v.stages.is_empty())
        .collect();
    versions.sort_by(|a, b| b.created_date.total_cmp(&a.created_date));
    let total = versions.len();
    let page: Vec<Value> = versions
        .iter()
        .skip(start)
        .take(size)
        .map(|v| {
            let mut entry = json!({"VersionId": v.id, "CreatedDate": v.created_date});
            // A deprecated version has no labels: the member is left out (the model allows
            // no empty list).
            if !v.stages.is_empty() {
                entry["VersionStages"] = json!(v.stages);
            }
            if let Some(key) = &secret.kms_key_id {
                entry["KmsKeyIds"] = json!([key]);
            }
            entry
        })
        .collect();
    let end = start.saturating_add(page.len());
    let mut out = json!({ "Versions": page, "ARN": secret.arn, "Name": secret.name });
    if end < total {
        out["NextToken"] = json!(input::next_token(end));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListSecretsInput {
    include_planned_deletion: Option<bool>,
    max_results: Option<i64>,
    next_token: Option<String>,
    filters: Option<Vec<input::FilterInput>>,
    sort_order: Option<String>,
    sort_by: Option<String>,
}

async fn list_secrets(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListSecretsInput = parse(input)?;
    let filters = input::filters(req.filters.unwrap_or_default())?;
    let size = req.max_results.unwrap_or(100).clamp(1, 100) as usize;
    let start = match req.next_token.as_deref() {
        Some(t) => input::token_offset(t)?,
        None => 0,
    };
    let include_deleted = req.include_planned_deletion.unwrap_or(false);
    let now = now_epoch();
    let mut secrets: Vec<SecretRecord> = records::all(plane)
        .await?
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| !s.is_purgeable(now) && (include_deleted || !s.is_deleted()))
        .filter(|s| {
            let view = input::Searchable {
                name: &s.name,
                description: s.description.as_deref(),
                tags: &s.tags,
            };
            filters.iter().all(|f| f.matches(&view))
        })
        .collect();
    let by = req.sort_by.as_deref().unwrap_or("created-date");
    secrets.sort_by(|a, b| {
        let primary = match by {
            "name" => a.name.cmp(&b.name),
            "last-changed-date" => a.last_changed_date.total_cmp(&b.last_changed_date),
            // Gantry keeps no last-accessed date: created-date stands in.
            _ => a.created_date.total_cmp(&b.created_date),
        };
        primary.then_with(|| a.name.cmp(&b.name))
    });
    if req.sort_order.as_deref() != Some("asc") {
        secrets.reverse();
    }
    let total = secrets.len();
    let page: Vec<Value> = secrets
        .iter()
        .skip(start)
        .take(size)
        .map(|s| Value::Object(described(s, "SecretVersionsToStages")))
        .collect();
    let end = start.saturating_add(page.len());
    let mut out = json!({ "SecretList": page });
    if end < total {
        out["NextToken"] = json!(input::next_token(end));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteSecretInput {
    secret_id: String,
    recovery_window_in_days: Option<i64>,
    force_delete_without_recovery: Option<bool>,
}

const DAY: f64 = 86_400.0;

async fn delete_secret(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeleteSecretInput = parse(input)?;
    if let Some(days) = req.recovery_window_in_days {
        if !(7..=30).contains(&days) {
            return Err(errors::invalid_parameter(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
            ));
        }
    }
    let force = req.force_delete_without_recovery.unwrap_or(false);
    if force && req.recovery_window_in_days.is_some() {
        return Err(errors::invalid_parameter(
            "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
        ));
    }
    let days = req.recovery_window_in_days.unwrap_or(30) as f64;
    let (secret, deletion_date) = records::update(plane, &req.secret_id, |s| {
        let now = now_epoch();
        if force {
            // Also for a secret already scheduled for deletion: AWS purges it at once.
            return Ok(Change::Delete(now));
        }
        s.writable()?;
        s.deleted_date = Some(now);
        s.deletion_date = Some(now + days * DAY);
        s.last_changed_date = now;
        Ok(Change::Write(now + days * DAY))
    })
    .await?;
    Ok(json!({"ARN": secret.arn, "Name": secret.name, "DeletionDate": deletion_date}))
}

async fn restore_secret(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: SecretIdInput = parse(input)?;
    let (secret, ()) = records::update(plane, &req.secret_id, |s| {
        if !s.is_deleted() {
            return Ok(Change::Unchanged(()));
        }
        s.deleted_date = None;
        s.deletion_date = None;
        s.last_changed_date = now_epoch();
        Ok(Change::Write(()))
    })
    .await?;
    Ok(arn_and_name(&secret))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceInput {
    secret_id: String,
    tags: Vec<TagInput>,
}

async fn tag_resource(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: TagResourceInput = parse(input)?;
    let tags = input::tags(req.tags)?;
    records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        for t in &tags {
            input::merge_tag(&mut s.tags, t.clone());
        }
        input::check_tag_count(&s.tags)?;
        s.last_changed_date = now_epoch();
        Ok(Change::Write(()))
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagResourceInput {
    secret_id: String,
    tag_keys: Vec<String>,
}

async fn untag_resource(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UntagResourceInput = parse(input)?;
    records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        let before = s.tags.len();
        s.tags.retain(|t| !req.tag_keys.contains(&t.key));
        Ok(if s.tags.len() == before {
            Change::Unchanged(())
        } else {
            s.last_changed_date = now_epoch();
            Change::Write(())
        })
    })
    .await?;
    Ok(json!({}))
}

fn get_random_password(input: Value) -> EcsResult<Value> {
    let req: PasswordInput = parse(input)?;
    let password = input::random_password(&req)?;
    Ok(json!({ "RandomPassword": password.as_str() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourcePolicyInput {
    secret_id: String,
    resource_policy: Option<String>,
    policy_name: Option<String>,
}

fn no_policy_names(req: &ResourcePolicyInput) -> EcsResult<()> {
    if req.policy_name.is_some() {
        return Err(errors::invalid_parameter(
            "Gantry keeps one resource policy per secret: PolicyName is not accepted.",
        ));
    }
    Ok(())
}

async fn get_resource_policy(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ResourcePolicyInput = parse(input)?;
    no_policy_names(&req)?;
    let (secret, _) = records::find(plane, &req.secret_id).await?;
    let mut out = arn_and_name(&secret);
    if let Some(p) = &secret.resource_policy {
        out["ResourcePolicy"] = json!(p);
    }
    Ok(out)
}

async fn put_resource_policy(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ResourcePolicyInput = parse(input)?;
    no_policy_names(&req)?;
    let policy = req.resource_policy.clone().unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(&policy).ok();
    if !parsed.as_ref().is_some_and(Value::is_object) {
        return Err(gantry_model::EcsError::new(
            "MalformedPolicyDocumentException",
            "This resource policy contains a syntax error.",
        ));
    }
    let (secret, ()) = records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        s.resource_policy = Some(policy.clone());
        s.last_changed_date = now_epoch();
        Ok(Change::Write(()))
    })
    .await?;
    Ok(arn_and_name(&secret))
}

async fn delete_resource_policy(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ResourcePolicyInput = parse(input)?;
    no_policy_names(&req)?;
    let (secret, ()) = records::update(plane, &req.secret_id, |s| {
        s.writable()?;
        Ok(if s.resource_policy.take().is_some() {
            s.last_changed_date = now_epoch();
            Change::Write(())
        } else {
            Change::Unchanged(())
        })
    })
    .await?;
    Ok(arn_and_name(&secret))
}
