//! The operations on named parameters: PutParameter, GetParameter, GetParameters,
//! DeleteParameter, DeleteParameters, LabelParameterVersion, UnlabelParameterVersion and
//! GetParameterHistory. Every write reads the record, checks the whole request against it and
//! commits guarded by the record's mod revision, retrying on conflict; a refused request
//! writes nothing.

use super::errors;
use super::input::{decode_token, encode_token, parse, Tag, MAX_TAGS};
use super::names::{self, Selector};
use super::record::{
    self, ParameterRecord, ParameterVersion, StoredValue, DEFAULT_KEY_ID, MAX_VERSIONS,
    SECURE_STRING,
};
use crate::auth::Caller;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::{EcsError, EcsResult};
use gantry_store::TxnOp;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// How often a write re-reads and retries when another writer changed the record first.
const CAS_ATTEMPTS: usize = 32;

const STANDARD: &str = "Standard";
const ADVANCED: &str = "Advanced";
const STANDARD_MAX_CHARS: usize = 4096;
const ADVANCED_MAX_CHARS: usize = 8192;
const MAX_LABELS: usize = 10;

pub(super) fn too_many_updates() -> EcsError {
    EcsError::new(
        "TooManyUpdates",
        "There are concurrent updates for a resource that supports one update at a time.",
    )
}

/// PutParameter's input. No `Debug`: `value` may be a SecureString's plaintext.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutParameterInput {
    name: String,
    value: String,
    #[serde(rename = "Type")]
    parameter_type: Option<String>,
    description: Option<String>,
    key_id: Option<String>,
    overwrite: Option<bool>,
    allowed_pattern: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    tier: Option<String>,
    policies: Option<String>,
    data_type: Option<String>,
}

fn compile_pattern(pattern: &str) -> EcsResult<regex_lite::Regex> {
    regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| {
        EcsError::new(
            "InvalidAllowedPatternException",
            format!("The request doesn't meet the regular expression requirement: {pattern} is not a valid regular expression."),
        )
    })
}

/// The tier a version is stored in, from the one asked for, the parameter's current one and
/// the value's size; and the size check that tier makes.
fn resolve_tier(
    requested: Option<&str>,
    current: Option<&str>,
    chars: usize,
) -> EcsResult<&'static str> {
    let advanced_now = current == Some(ADVANCED);
    let tier = match requested {
        Some(ADVANCED) => ADVANCED,
        Some(STANDARD) if advanced_now => {
            return Err(errors::validation(
                "This parameter uses the advanced-parameter tier. You can't downgrade a parameter from the advanced-parameter tier to the standard-parameter tier. If necessary, you can delete the advanced parameter and recreate it as a standard parameter.",
            ))
        }
        Some(STANDARD) => STANDARD,
        // Intelligent-Tiering: standard unless the value needs the advanced tier.
        Some(_) => {
            if advanced_now || chars > STANDARD_MAX_CHARS {
                ADVANCED
            } else {
                STANDARD
            }
        }
        None if advanced_now => ADVANCED,
        None => STANDARD,
    };
    if tier == STANDARD && chars > STANDARD_MAX_CHARS {
        return Err(errors::validation(
            "Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier. For more information, see https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html",
        ));
    }
    if tier == ADVANCED && chars > ADVANCED_MAX_CHARS {
        return Err(errors::validation(
            "1 validation error detected: Value at 'value' failed to satisfy constraint: Member must have length less than or equal to 8192",
        ));
    }
    Ok(tier)
}

/// Given `Some("")` clears, `None` keeps what the previous version had.
fn kept(given: &Option<String>, previous: Option<&String>) -> Option<String> {
    match given {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.clone()),
        None => previous.cloned(),
    }
}

fn check_tags(tags: &[Tag]) -> EcsResult<BTreeMap<String, String>> {
    let map: BTreeMap<String, String> = tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    if map.len() > MAX_TAGS {
        return Err(errors::validation(format!(
            "A parameter can have at most {MAX_TAGS} tags."
        )));
    }
    Ok(map)
}

pub async fn put(plane: &ControlPlane, caller: &Caller, input: Value) -> EcsResult<Value> {
    let input: PutParameterInput = parse(input)?;
    let scope = plane.scope();
    let overwrite = input.overwrite.unwrap_or(false);
    if overwrite && !input.tags.is_empty() {
        return Err(errors::validation(
            "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.",
        ));
    }
    names::check_new(scope, &input.name)?;
    if input.value.is_empty() {
        return Err(errors::validation(
            "1 validation error detected: Value '' at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    if input
        .policies
        .as_deref()
        .is_some_and(|p| !matches!(p.trim(), "" | "[]"))
    {
        return Err(errors::validation(
            "Gantry does not support parameter policies (Expiration, ExpirationNotification, NoChangeNotification) yet.",
        ));
    }
    if let Some(dt) = input.data_type.as_deref().filter(|d| *d != "text") {
        return Err(errors::validation(format!(
            "The following data type is not supported: {dt} (Gantry supports the text data type only.)"
        )));
    }
    if let Some(p) = input.allowed_pattern.as_deref().filter(|p| !p.is_empty()) {
        compile_pattern(p)?;
    }
    let tags = check_tags(&input.tags)?;
    let chars = input.value.chars().count();
    let user = caller.principal.arn(plane);
    let key = names::store_key(&input.name);
    let arn = names::arn(scope, &input.name);
    for _ in 0..CAS_ATTEMPTS {
        let current = repo::get::<ParameterRecord>(&*plane.store, &key)
            .await
            .map_err(errors::fault)?;
        let (mut record, rev) = match current {
            Some(_) if !overwrite => return Err(errors::already_exists()),
            Some(found) => found,
            None => (
                ParameterRecord {
                    name: input.name.clone(),
                    versions: Vec::new(),
                    tags: tags.clone(),
                },
                0,
            ),
        };
        let previous = record.latest().cloned();
        let prev = previous.as_ref();
        let parameter_type = match (&input.parameter_type, prev) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.parameter_type.clone(),
            (None, None) => {
                return Err(errors::validation(
                    "A parameter type is required when you create a parameter.",
                ))
            }
        };
        let secure = parameter_type == SECURE_STRING;
        if !secure && input.key_id.is_some() {
            return Err(errors::validation(
                "KeyId is valid only for SecureString parameters.",
            ));
        }
        let key_id = secure.then(|| {
            input
                .key_id
                .clone()
                .or_else(|| prev.and_then(|p| p.key_id.clone()))
                .unwrap_or_else(|| DEFAULT_KEY_ID.to_string())
        });
        let allowed_pattern = kept(
            &input.allowed_pattern,
            prev.and_then(|p| p.allowed_pattern.as_ref()),
        );
        if let Some(p) = &allowed_pattern {
            if !compile_pattern(p)?.is_match(&input.value) {
                return Err(EcsError::new(
                    "ParameterPatternMismatchException",
                    format!("Parameter value, cannot be validated against allowedPattern: {p}"),
                ));
            }
        }
        let tier = resolve_tier(input.tier.as_deref(), prev.map(|p| p.tier.as_str()), chars)?;
        let version = prev.map_or(1, |p| p.version + 1);
        if record.versions.len() >= MAX_VERSIONS {
            if let Some(oldest) = record.versions.first().filter(|o| !o.labels.is_empty()) {
                return Err(EcsError::new(
                    "ParameterMaxVersionLimitExceeded",
                    format!(
                        "You attempted to create a new version of {} by calling the PutParameter API with the overwrite flag. Version {}, the oldest version, can't be deleted because it has a label associated with it. Move the label to another version of the parameter, and try again.",
                        record.name, oldest.version
                    ),
                ));
            }
            record.versions.remove(0);
        }
        // Held from the seal to the commit: a master key rotation waits for it, so no value
        // sealed under a retiring key lands after its rewrap pass (`master_keys.rs`).
        let _sealing = match secure {
            true => Some(plane.sealing.read().await),
            false => None,
        };
        let value = if secure {
            let sealed = plane
                .vault()
                .map_err(errors::fault)?
                .seal(
                    input.value.as_bytes(),
                    record::aad(&arn, version).as_bytes(),
                )
                .map_err(errors::vault)?;
            StoredValue::Sealed(sealed)
        } else {
            StoredValue::Plain(input.value.clone())
        };
        record.versions.push(ParameterVersion {
            version,
            parameter_type,
            value,
            key_id,
            description: kept(
                &input.description,
                prev.and_then(|p| p.description.as_ref()),
            ),
            allowed_pattern,
            tier: tier.to_string(),
            data_type: input
                .data_type
                .clone()
                .or_else(|| prev.map(|p| p.data_type.clone()))
                .unwrap_or_else(|| "text".to_string()),
            labels: Vec::new(),
            last_modified_date: gantry_model::now_epoch(),
            last_modified_user: user.clone(),
        });
        let committed = repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, rev)],
            vec![repo::put_op(&key, &record)?],
        )
        .await
        .map_err(errors::fault)?;
        if committed {
            return Ok(json!({"Version": version, "Tier": tier}));
        }
    }
    Err(too_many_updates())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameterInput {
    name: String,
    with_decryption: Option<bool>,
}

/// The record a reference names and the version it selects, or the error GetParameter gives.
async fn resolve(
    plane: &ControlPlane,
    given: &str,
) -> EcsResult<(ParameterRecord, names::Reference)> {
    let reference = names::parse_reference(plane.scope(), given)?;
    if !reference.local {
        return Err(errors::not_found(given));
    }
    let (record, _) = record::read(plane, &reference.name)
        .await?
        .ok_or_else(|| errors::not_found(given))?;
    Ok((record, reference))
}

pub async fn get(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: GetParameterInput = parse(input)?;
    let (record, reference) = resolve(plane, &input.name).await?;
    let version = record.select(&reference.selector, &input.name)?;
    let parameter = record::parameter_output(
        plane,
        &record,
        version,
        reference.selector.shown(),
        input.with_decryption.unwrap_or(false),
    )?;
    Ok(json!({ "Parameter": parameter }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersInput {
    names: Vec<String>,
    with_decryption: Option<bool>,
}

pub async fn get_many(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: GetParametersInput = parse(input)?;
    let decrypt = input.with_decryption.unwrap_or(false);
    let mut references = Vec::new();
    for given in &input.names {
        if references.iter().any(|(g, _)| g == given) {
            continue;
        }
        references.push((given.clone(), names::parse_reference(plane.scope(), given)?));
    }
    let mut records: HashMap<String, Option<ParameterRecord>> = HashMap::new();
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    for (given, reference) in references {
        let key = names::store_key(&reference.name);
        if !records.contains_key(&key) {
            let record = match reference.local {
                true => record::read(plane, &reference.name).await?.map(|(r, _)| r),
                false => None,
            };
            records.insert(key.clone(), record);
        }
        let Some(Some(record)) = records.get(&key) else {
            invalid.push(given);
            continue;
        };
        match record.select(&reference.selector, &given) {
            Ok(v) => found.push(record::parameter_output(
                plane,
                record,
                v,
                reference.selector.shown(),
                decrypt,
            )?),
            Err(e) if e.code == "ParameterNotFound" || e.code == "ParameterVersionNotFound" => {
                invalid.push(given)
            }
            Err(e) => return Err(e),
        }
    }
    // AWS lists the parameters in alphabetical order.
    found.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["Name"].as_str().unwrap_or("").to_string(),
                v["Version"].as_i64(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(json!({"Parameters": found, "InvalidParameters": invalid}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameInput {
    name: String,
}

pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: NameInput = parse(input)?;
    names::check_form(&input.name)?;
    let key = names::store_key(&input.name);
    for _ in 0..CAS_ATTEMPTS {
        let Some(kv) = plane
            .store
            .get(&key)
            .await
            .map_err(repo::store_error)
            .map_err(errors::fault)?
        else {
            return Err(errors::not_found(&input.name));
        };
        let deleted = repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, kv.mod_revision)],
            vec![TxnOp::Delete { key: key.clone() }],
        )
        .await
        .map_err(errors::fault)?;
        if deleted {
            return Ok(json!({}));
        }
    }
    Err(too_many_updates())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamesInput {
    names: Vec<String>,
}

pub async fn delete_many(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: NamesInput = parse(input)?;
    for _ in 0..CAS_ATTEMPTS {
        let mut guards = Vec::new();
        let mut ops = Vec::new();
        let mut deleted = Vec::new();
        let mut invalid = Vec::new();
        for name in &input.names {
            let key = names::store_key(name);
            if names::check_form(name).is_err()
                || ops
                    .iter()
                    .any(|op| matches!(op, TxnOp::Delete { key: k } if *k == key))
            {
                invalid.push(name.clone());
                continue;
            }
            match plane
                .store
                .get(&key)
                .await
                .map_err(repo::store_error)
                .map_err(errors::fault)?
            {
                Some(kv) => {
                    guards.push(repo::unchanged_since(&key, kv.mod_revision));
                    ops.push(TxnOp::Delete { key });
                    deleted.push(name.clone());
                }
                None => invalid.push(name.clone()),
            }
        }
        if ops.is_empty()
            || repo::commit(&*plane.store, guards, ops)
                .await
                .map_err(errors::fault)?
        {
            return Ok(json!({"DeletedParameters": deleted, "InvalidParameters": invalid}));
        }
    }
    Err(too_many_updates())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LabelInput {
    name: String,
    parameter_version: Option<i64>,
    labels: Vec<String>,
}

/// Read-modify-write the record of `name` with `change`, guarded by its mod revision.
async fn update<T>(
    plane: &ControlPlane,
    name: &str,
    not_found: impl Fn() -> EcsError,
    mut change: impl FnMut(&mut ParameterRecord) -> EcsResult<T>,
) -> EcsResult<T> {
    let key = names::store_key(name);
    for _ in 0..CAS_ATTEMPTS {
        let (mut record, rev) = repo::get::<ParameterRecord>(&*plane.store, &key)
            .await
            .map_err(errors::fault)?
            .ok_or_else(&not_found)?;
        let out = change(&mut record)?;
        if repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, rev)],
            vec![repo::put_op(&key, &record)?],
        )
        .await
        .map_err(errors::fault)?
        {
            return Ok(out);
        }
    }
    Err(too_many_updates())
}

fn target_version(record: &ParameterRecord, asked: Option<i64>) -> EcsResult<i64> {
    match asked {
        Some(v) if record.version(v).is_some() => Ok(v),
        Some(v) => Err(errors::version_not_found(&record.name, v)),
        None => record
            .latest()
            .map(|v| v.version)
            .ok_or_else(|| errors::not_found(&record.name)),
    }
}

pub async fn label(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: LabelInput = parse(input)?;
    names::check_form(&input.name)?;
    let (valid, invalid): (Vec<String>, Vec<String>) = input
        .labels
        .iter()
        .cloned()
        .partition(|l| names::label_is_valid(l));
    let version = update(plane, &input.name, || errors::not_found(&input.name), |record| {
        let target = target_version(record, input.parameter_version)?;
        for v in &mut record.versions {
            if v.version == target {
                for l in &valid {
                    if !v.labels.contains(l) {
                        v.labels.push(l.clone());
                    }
                }
                if v.labels.len() > MAX_LABELS {
                    return Err(EcsError::new(
                        "ParameterVersionLabelLimitExceeded",
                        "A parameter version can have maximum 10 labels. Move one or more labels to another version and try again.",
                    ));
                }
            } else {
                // A label names one version: attaching it here moves it.
                v.labels.retain(|l| !valid.contains(l));
            }
        }
        Ok(target)
    })
    .await?;
    Ok(json!({"InvalidLabels": invalid, "ParameterVersion": version}))
}

pub async fn unlabel(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: LabelInput = parse(input)?;
    names::check_form(&input.name)?;
    let Some(asked) = input.parameter_version else {
        return Err(errors::validation(
            "1 validation error detected: Value null at 'parameterVersion' failed to satisfy constraint: Member must not be null",
        ));
    };
    let (removed, invalid) = update(
        plane,
        &input.name,
        || errors::not_found(&input.name),
        |record| {
            let target = target_version(record, Some(asked))?;
            let mut removed = Vec::new();
            let mut invalid = Vec::new();
            for v in record.versions.iter_mut().filter(|v| v.version == target) {
                for l in &input.labels {
                    if v.labels.contains(l) {
                        v.labels.retain(|have| have != l);
                        removed.push(l.clone());
                    } else {
                        invalid.push(l.clone());
                    }
                }
            }
            Ok((removed, invalid))
        },
    )
    .await?;
    Ok(json!({"RemovedLabels": removed, "InvalidLabels": invalid}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HistoryInput {
    name: String,
    with_decryption: Option<bool>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

pub async fn history(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: HistoryInput = parse(input)?;
    let (record, reference) = resolve(plane, &input.name).await?;
    if reference.selector != Selector::Latest {
        return Err(errors::validation(names::INVALID_NAME));
    }
    let after: Option<i64> = match decode_token(input.next_token.as_deref())? {
        Some(t) => Some(t.parse().map_err(|_| errors::invalid_next_token())?),
        None => None,
    };
    let size = input.max_results.unwrap_or(50).clamp(1, 50);
    let decrypt = input.with_decryption.unwrap_or(false);
    let remaining: Vec<&ParameterVersion> = record
        .versions
        .iter()
        .filter(|v| after.is_none_or(|a| v.version > a))
        .collect();
    let mut out = Vec::new();
    for v in remaining.iter().take(size) {
        out.push(record::history_output(plane, &record, v, decrypt)?);
    }
    let mut answer = json!({ "Parameters": out });
    if remaining.len() > size {
        if let Some(last) = remaining.get(size - 1) {
            answer["NextToken"] = json!(encode_token(&last.version.to_string()));
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_size_and_never_go_down() {
        assert_eq!(resolve_tier(None, None, 10).unwrap(), STANDARD);
        assert_eq!(resolve_tier(None, Some(ADVANCED), 10).unwrap(), ADVANCED);
        assert_eq!(
            resolve_tier(Some("Intelligent-Tiering"), None, 4096).unwrap(),
            STANDARD
        );
        assert_eq!(
            resolve_tier(Some("Intelligent-Tiering"), None, 4097).unwrap(),
            ADVANCED
        );
        assert_eq!(resolve_tier(Some(ADVANCED), None, 8192).unwrap(), ADVANCED);
        let big = resolve_tier(Some(STANDARD), None, 4097).unwrap_err();
        assert!(big.message.starts_with(
            "Standard tier parameters support a maximum parameter value of 4096 characters."
        ));
        let huge = resolve_tier(Some(ADVANCED), None, 8193).unwrap_err();
        assert_eq!(huge.code, "ValidationException");
        let unquoted = huge.message.replace("'value'", "");
        assert!(
            !unquoted.contains('\''),
            "a value is quoted: {}",
            huge.message
        );
        let down = resolve_tier(Some(STANDARD), Some(ADVANCED), 1).unwrap_err();
        assert!(down.message.contains("can't downgrade"), "{}", down.message);
    }

    #[test]
    fn allowed_patterns_match_the_whole_value() {
        let re = compile_pattern(r"\d{1,4}").unwrap();
        assert!(re.is_match("1000"));
        assert!(!re.is_match("10,000"));
        assert_eq!(
            compile_pattern("(").unwrap_err().code,
            "InvalidAllowedPatternException"
        );
    }

    #[test]
    fn an_empty_member_clears_and_an_absent_one_keeps() {
        let prev = "old".to_string();
        assert_eq!(kept(&None, Some(&prev)), Some(prev.clone()));
        assert_eq!(kept(&Some(String::new()), Some(&prev)), None);
        assert_eq!(
            kept(&Some("new".into()), Some(&prev)).as_deref(),
            Some("new")
        );
    }
}
