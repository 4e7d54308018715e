//! The listings: GetParametersByPath and DescribeParameters. Both read one store range, the
//! narrowest their input allows (the path's subtree; a `Path` or `Name` filter's; a single
//! record for a `Name` `Equals` filter), skip by key what cannot match before decoding
//! anything (a one-level listing never decodes the levels below), and page by store key: the
//! token is the key of the last parameter returned.

use super::errors;
use super::filters::{Filters, For, LegacyFilter, StringFilter};
use super::input::{decode_token, encode_token, parse};
use super::names;
use super::record::{self, ParameterRecord, ParameterVersion};
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::EcsResult;
use serde::Deserialize;
use serde_json::{json, Value};

/// One page of matches from the store range `prefix`, after the key `after`: each with its
/// record and the version the filters selected, and the key to continue after when more match.
async fn scan(
    plane: &ControlPlane,
    prefix: &str,
    one_level: bool,
    filters: &Filters,
    after: Option<&str>,
    size: usize,
) -> EcsResult<(Vec<(ParameterRecord, i64)>, Option<String>)> {
    let (kvs, _) = plane
        .store
        .range(prefix)
        .await
        .map_err(repo::store_error)
        .map_err(errors::fault)?;
    let mut page: Vec<(ParameterRecord, i64)> = Vec::new();
    let mut last_key = None;
    for kv in &kvs {
        if after.is_some_and(|a| kv.key.as_str() <= a) {
            continue;
        }
        if one_level && kv.key[prefix.len()..].contains('/') {
            continue;
        }
        let record: ParameterRecord = repo::decode(kv).map_err(errors::fault)?;
        let Some(version) = filters.select(&record).map(|v| v.version) else {
            continue;
        };
        if page.len() == size {
            // One more matches: the client gets a token to continue after this page.
            return Ok((page, last_key));
        }
        last_key = Some(kv.key.clone());
        page.push((record, version));
    }
    Ok((page, None))
}

fn version_of(record: &ParameterRecord, version: i64) -> EcsResult<&ParameterVersion> {
    record
        .version(version)
        .ok_or_else(|| errors::internal("A parameter version vanished while listing."))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ByPathInput {
    path: String,
    recursive: Option<bool>,
    #[serde(default)]
    parameter_filters: Vec<StringFilter>,
    with_decryption: Option<bool>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

pub async fn by_path(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: ByPathInput = parse(input)?;
    names::check_path(&input.path)?;
    let filters = Filters::parse(&input.parameter_filters, For::ByPath)?;
    let after = decode_token(input.next_token.as_deref())?;
    let size = input.max_results.unwrap_or(10).clamp(1, 10);
    let decrypt = input.with_decryption.unwrap_or(false);
    let prefix = names::path_prefix(&input.path);
    let (page, next) = scan(
        plane,
        &prefix,
        !input.recursive.unwrap_or(false),
        &filters,
        after.as_deref(),
        size,
    )
    .await?;
    let mut parameters = Vec::new();
    for (record, version) in &page {
        let v = version_of(record, *version)?;
        parameters.push(record::parameter_output(plane, record, v, None, decrypt)?);
    }
    let mut answer = json!({ "Parameters": parameters });
    if let Some(key) = next {
        answer["NextToken"] = json!(encode_token(&key));
    }
    Ok(answer)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInput {
    #[serde(default)]
    filters: Vec<LegacyFilter>,
    #[serde(default)]
    parameter_filters: Vec<StringFilter>,
    max_results: Option<usize>,
    next_token: Option<String>,
    shared: Option<bool>,
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let input: DescribeInput = parse(input)?;
    if !input.filters.is_empty() && !input.parameter_filters.is_empty() {
        return Err(errors::validation(
            "You can use either Filters or ParameterFilters in a single request.",
        ));
    }
    let filters = if input.filters.is_empty() {
        Filters::parse(&input.parameter_filters, For::Describe)?
    } else {
        Filters::legacy(&input.filters)?
    };
    let after = decode_token(input.next_token.as_deref())?;
    let size = input.max_results.unwrap_or(10).clamp(1, 50);
    if input.shared == Some(true) {
        // Nothing is shared with this account from another.
        return Ok(json!({ "Parameters": [] }));
    }
    let (page, next) = match filters.exact_name() {
        // Terraform reads a parameter's metadata this way: one record, no scan.
        Some(name) => {
            let key = names::store_key(name);
            let found = match record::read(plane, name).await? {
                Some((record, _)) if after.as_deref().is_none_or(|a| key.as_str() > a) => {
                    filters.select(&record).map(|v| (v.version, record.clone()))
                }
                _ => None,
            };
            (found.map(|(v, r)| vec![(r, v)]).unwrap_or_default(), None)
        }
        None => {
            scan(
                plane,
                &filters.store_prefix(),
                false,
                &filters,
                after.as_deref(),
                size,
            )
            .await?
        }
    };
    let mut parameters = Vec::new();
    for (record, version) in &page {
        parameters.push(record::metadata_output(
            plane,
            record,
            version_of(record, *version)?,
        ));
    }
    let mut answer = json!({ "Parameters": parameters });
    if let Some(key) = next {
        answer["NextToken"] = json!(encode_token(&key));
    }
    Ok(answer)
}
