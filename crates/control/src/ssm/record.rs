//! What a parameter is in the store (`ssm/parameters/<name>`): every version Parameter Store
//! keeps (at most 100) with its labels, and the parameter's tags. A SecureString version
//! holds only the vault's [`Sealed`] envelope, its additional authenticated data being
//! `<parameter ARN>/<version>`, so a ciphertext copied to another parameter or version does
//! not open. The shapes the API answers with are rendered here too.

use super::errors;
use super::names;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::EcsResult;
use gantry_vault::{Plaintext, Sealed};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;

pub const SECURE_STRING: &str = "SecureString";
pub const DEFAULT_KEY_ID: &str = "alias/aws/ssm";
/// Parameter Store keeps this many versions; the oldest goes when one more is written.
pub const MAX_VERSIONS: usize = 100;

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterRecord {
    /// As created: with or without the leading slash of a single-level name.
    pub name: String,
    /// Oldest first; never empty.
    pub versions: Vec<ParameterVersion>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterVersion {
    pub version: i64,
    #[serde(rename = "type")]
    pub parameter_type: String,
    pub value: StoredValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
    pub tier: String,
    pub data_type: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub last_modified_date: f64,
    pub last_modified_user: String,
}

/// A version's value: String and StringList values as they are, SecureStrings sealed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StoredValue {
    Plain(String),
    Sealed(Sealed),
}

impl fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredValue::Plain(_) => f.write_str("Plain(..)"),
            StoredValue::Sealed(s) => write!(f, "{s:?}"),
        }
    }
}

impl fmt::Debug for ParameterRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParameterRecord")
            .field("name", &self.name)
            .field("versions", &self.versions.len())
            .finish()
    }
}

/// The additional authenticated data a version's value is sealed with.
pub fn aad(arn: &str, version: i64) -> String {
    format!("{arn}/{version}")
}

impl ParameterRecord {
    pub fn latest(&self) -> Option<&ParameterVersion> {
        self.versions.last()
    }

    pub fn version(&self, version: i64) -> Option<&ParameterVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    pub fn labelled(&self, label: &str) -> Option<&ParameterVersion> {
        self.versions
            .iter()
            .find(|v| v.labels.iter().any(|l| l == label))
    }

    /// The version `selector` asks for. `given` is the reference as the client wrote it, for
    /// the error.
    pub fn select(&self, selector: &names::Selector, given: &str) -> EcsResult<&ParameterVersion> {
        match selector {
            names::Selector::Latest => self.latest().ok_or_else(|| errors::not_found(given)),
            names::Selector::Version(v) => self
                .version(*v)
                .ok_or_else(|| errors::version_not_found(&self.name, *v)),
            names::Selector::Label(l) => self.labelled(l).ok_or_else(|| errors::not_found(given)),
        }
    }
}

/// The record of `name` (either spelling) and its mod revision.
pub async fn read(plane: &ControlPlane, name: &str) -> EcsResult<Option<(ParameterRecord, i64)>> {
    repo::get(&*plane.store, &names::store_key(name))
        .await
        .map_err(errors::fault)
}

/// A version's value in the clear: opened with the vault for a SecureString.
pub fn open(plane: &ControlPlane, arn: &str, v: &ParameterVersion) -> EcsResult<Plaintext> {
    match &v.value {
        StoredValue::Plain(text) => Ok(Plaintext::from(text.clone().into_bytes())),
        StoredValue::Sealed(sealed) => plane
            .vault()
            .map_err(errors::fault)?
            .open(sealed, aad(arn, v.version).as_bytes())
            .map_err(errors::vault),
    }
}

/// The value an output shows: a SecureString's ciphertext unless `decrypt` (as AWS shows its
/// KMS ciphertext to a caller who does not ask for decryption).
pub fn shown_value(
    plane: &ControlPlane,
    arn: &str,
    v: &ParameterVersion,
    decrypt: bool,
) -> EcsResult<String> {
    match &v.value {
        StoredValue::Plain(text) => Ok(text.clone()),
        StoredValue::Sealed(sealed) if !decrypt => Ok(sealed.ciphertext.clone()),
        StoredValue::Sealed(_) => {
            let plain = open(plane, arn, v)?;
            plain
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| errors::internal("A stored SecureString is not text."))
        }
    }
}

fn put_opt(out: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
        out.insert(key.into(), Value::String(v.to_string()));
    }
}

/// `Parameter` (GetParameter, GetParameters, GetParametersByPath).
pub fn parameter_output(
    plane: &ControlPlane,
    record: &ParameterRecord,
    v: &ParameterVersion,
    selector: Option<String>,
    decrypt: bool,
) -> EcsResult<Value> {
    let arn = names::arn(plane.scope(), &record.name);
    let mut out = Map::new();
    out.insert("Name".into(), json!(record.name));
    out.insert("Type".into(), json!(v.parameter_type));
    out.insert("Value".into(), json!(shown_value(plane, &arn, v, decrypt)?));
    out.insert("Version".into(), json!(v.version));
    if let Some(s) = selector {
        out.insert("Selector".into(), json!(s));
    }
    out.insert("LastModifiedDate".into(), json!(v.last_modified_date));
    out.insert("ARN".into(), json!(arn));
    out.insert("DataType".into(), json!(v.data_type));
    Ok(Value::Object(out))
}

/// `ParameterMetadata` (DescribeParameters): the latest version, no value.
pub fn metadata_output(
    plane: &ControlPlane,
    record: &ParameterRecord,
    v: &ParameterVersion,
) -> Value {
    let mut out = Map::new();
    out.insert("Name".into(), json!(record.name));
    out.insert("ARN".into(), json!(names::arn(plane.scope(), &record.name)));
    out.insert("Type".into(), json!(v.parameter_type));
    put_opt(&mut out, "KeyId", &v.key_id);
    out.insert("LastModifiedDate".into(), json!(v.last_modified_date));
    out.insert("LastModifiedUser".into(), json!(v.last_modified_user));
    put_opt(&mut out, "Description", &v.description);
    put_opt(&mut out, "AllowedPattern", &v.allowed_pattern);
    out.insert("Version".into(), json!(v.version));
    out.insert("Tier".into(), json!(v.tier));
    out.insert("Policies".into(), json!([]));
    out.insert("DataType".into(), json!(v.data_type));
    Value::Object(out)
}

/// `ParameterHistory` (GetParameterHistory): one version with its value and labels.
pub fn history_output(
    plane: &ControlPlane,
    record: &ParameterRecord,
    v: &ParameterVersion,
    decrypt: bool,
) -> EcsResult<Value> {
    let arn = names::arn(plane.scope(), &record.name);
    let mut out = Map::new();
    out.insert("Name".into(), json!(record.name));
    out.insert("Type".into(), json!(v.parameter_type));
    put_opt(&mut out, "KeyId", &v.key_id);
    out.insert("LastModifiedDate".into(), json!(v.last_modified_date));
    out.insert("LastModifiedUser".into(), json!(v.last_modified_user));
    put_opt(&mut out, "Description", &v.description);
    out.insert("Value".into(), json!(shown_value(plane, &arn, v, decrypt)?));
    put_opt(&mut out, "AllowedPattern", &v.allowed_pattern);
    out.insert("Version".into(), json!(v.version));
    out.insert("Labels".into(), json!(v.labels));
    out.insert("Tier".into(), json!(v.tier));
    out.insert("Policies".into(), json!([]));
    out.insert("DataType".into(), json!(v.data_type));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_value() {
        let v = ParameterVersion {
            version: 1,
            parameter_type: "String".into(),
            value: StoredValue::Plain("visible-only-through-the-api".into()),
            key_id: None,
            description: None,
            allowed_pattern: None,
            tier: "Standard".into(),
            data_type: "text".into(),
            labels: vec![],
            last_modified_date: 0.0,
            last_modified_user: "u".into(),
        };
        let record = ParameterRecord {
            name: "/a".into(),
            versions: vec![v.clone()],
            tags: Default::default(),
        };
        for shown in [format!("{v:?}"), format!("{record:?}")] {
            assert!(!shown.contains("visible-only"), "{shown}");
        }
    }

    #[test]
    fn the_stored_shape_is_tagged_by_kind() {
        let v = serde_json::to_value(StoredValue::Plain("x".into())).unwrap();
        assert_eq!(v, json!({"plain": "x"}));
    }
}
