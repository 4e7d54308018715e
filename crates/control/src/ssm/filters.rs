//! The filters of DescribeParameters (`ParameterFilters`, and the deprecated `Filters`) and
//! of GetParametersByPath (`ParameterFilters` with `Type`, `KeyId` and `Label` only): checked
//! whole before anything is read, with SSM's error codes and wording, then matched against
//! records. [`Filters::store_prefix`] and [`Filters::exact_name`] narrow the store range a
//! listing reads when a filter allows it.

use super::errors;
use super::names;
use super::record::{ParameterRecord, ParameterVersion};
use gantry_model::{EcsError, EcsResult};
use serde::Deserialize;

const TYPES: &[&str] = &["String", "StringList", "SecureString"];
const TIERS: &[&str] = &["Standard", "Advanced", "Intelligent-Tiering"];

/// `ParameterStringFilter` as the client sent it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StringFilter {
    pub key: String,
    #[serde(default)]
    pub option: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

/// `ParametersFilter` (DescribeParameters' deprecated `Filters`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LegacyFilter {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Which operation the filters belong to: each accepts its own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    Describe,
    ByPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    BeginsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    Name(Op, Vec<String>),
    Type(Op, Vec<String>),
    KeyId(Op, Vec<String>),
    Tier(Op, Vec<String>),
    DataType(Op, Vec<String>),
    Path {
        recursive: bool,
        values: Vec<String>,
    },
    Tag(String, Op, Vec<String>),
    Label(Vec<String>),
}

/// Checked filters, all of which a parameter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(Vec<Filter>);

fn invalid_key(key: &str, valid: &str) -> EcsError {
    EcsError::new(
        "InvalidFilterKey",
        format!(
            "The following filter key is not valid: {key}. Valid filter keys include: [{valid}]."
        ),
    )
}

fn invalid_option(option: &str, valid: &str) -> EcsError {
    EcsError::new(
        "InvalidFilterOption",
        format!(
            "The following filter option is not valid: {option}. Valid options include: [{valid}]."
        ),
    )
}

fn invalid_value(value: &str, valid: &[&str]) -> EcsError {
    EcsError::new(
        "InvalidFilterValue",
        format!(
            "The following filter value is not valid: {value}. Valid values include: [{}].",
            valid.join(", ")
        ),
    )
}

fn op(option: Option<&str>, allowed: &[(&str, Op)], valid: &str) -> EcsResult<Op> {
    let given = option.unwrap_or("Equals");
    allowed
        .iter()
        .find(|(name, _)| *name == given)
        .map(|(_, op)| *op)
        .ok_or_else(|| invalid_option(given, valid))
}

const EQUALS_OR_BEGINS: &[(&str, Op)] = &[("Equals", Op::Equals), ("BeginsWith", Op::BeginsWith)];

impl Filters {
    /// `ParameterFilters` of `operation`, checked: keys the operation accepts, once each,
    /// their options and values.
    pub fn parse(filters: &[StringFilter], operation: For) -> EcsResult<Filters> {
        let mut out = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for f in filters {
            let key = f.key.as_str();
            let accepted = match operation {
                For::Describe => key != "Label",
                For::ByPath => matches!(key, "Type" | "KeyId" | "Label"),
            };
            if !accepted {
                return Err(match operation {
                    For::Describe => {
                        invalid_key(key, "Path, Name, Type, KeyId, Tier, DataType, tag")
                    }
                    For::ByPath => invalid_key(key, "Type, KeyId, Label"),
                });
            }
            if seen.contains(&key) {
                return Err(EcsError::new(
                    "InvalidFilterKey",
                    format!("The following filter is duplicated in the request: {key}. A request can contain only one occurrence of a specific filter."),
                ));
            }
            seen.push(key);
            if f.values.is_empty() && !key.starts_with("tag:") {
                return Err(EcsError::new(
                    "InvalidFilterValue",
                    format!("The following filter values are missing : null for filter key {key}."),
                ));
            }
            let option = f.option.as_deref();
            let values = f.values.clone();
            let filter = match key {
                "Name" => Filter::Name(
                    op(
                        option,
                        &[
                            ("Equals", Op::Equals),
                            ("BeginsWith", Op::BeginsWith),
                            ("Contains", Op::Contains),
                        ],
                        "BeginsWith, Contains, Equals",
                    )?,
                    values,
                ),
                "Type" => {
                    if let Some(bad) = values.iter().find(|v| !TYPES.contains(&v.as_str())) {
                        return Err(invalid_value(bad, TYPES));
                    }
                    Filter::Type(op(option, EQUALS_OR_BEGINS, "BeginsWith, Equals")?, values)
                }
                "Tier" => {
                    if let Some(bad) = values.iter().find(|v| !TIERS.contains(&v.as_str())) {
                        return Err(invalid_value(bad, TIERS));
                    }
                    Filter::Tier(op(option, EQUALS_OR_BEGINS, "BeginsWith, Equals")?, values)
                }
                "KeyId" => {
                    Filter::KeyId(op(option, EQUALS_OR_BEGINS, "BeginsWith, Equals")?, values)
                }
                "DataType" => {
                    Filter::DataType(op(option, EQUALS_OR_BEGINS, "BeginsWith, Equals")?, values)
                }
                "Label" => {
                    op(option, &[("Equals", Op::Equals)], "Equals")?;
                    Filter::Label(values)
                }
                "Path" => {
                    let recursive = match option.unwrap_or("OneLevel") {
                        "OneLevel" => false,
                        "Recursive" => true,
                        other => return Err(invalid_option(other, "Recursive, OneLevel")),
                    };
                    for v in &values {
                        let first = v.trim_start_matches('/').to_ascii_lowercase();
                        if first.starts_with("aws") || first.starts_with("ssm") {
                            return Err(errors::validation(
                                "Filters for common parameters can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). When using global parameters, please specify within a global namespace.",
                            ));
                        }
                        names::check_path(v)?;
                    }
                    Filter::Path { recursive, values }
                }
                tag => match tag.strip_prefix("tag:").filter(|k| !k.is_empty()) {
                    Some(k) => Filter::Tag(
                        k.to_string(),
                        op(option, EQUALS_OR_BEGINS, "BeginsWith, Equals")?,
                        values,
                    ),
                    None => {
                        return Err(invalid_key(
                            tag,
                            "Path, Name, Type, KeyId, Tier, DataType, tag",
                        ))
                    }
                },
            };
            out.push(filter);
        }
        Ok(Filters(out))
    }

    /// The deprecated `Filters` of DescribeParameters: `Name` (names beginning with a value),
    /// `Type` and `KeyId` (equal to one).
    pub fn legacy(filters: &[LegacyFilter]) -> EcsResult<Filters> {
        let mut out = Vec::new();
        for f in filters {
            let values = f.values.clone();
            out.push(match f.key.as_str() {
                "Name" => Filter::Name(Op::BeginsWith, values),
                "Type" => Filter::Type(Op::Equals, values),
                "KeyId" => Filter::KeyId(Op::Equals, values),
                other => return Err(invalid_key(other, "Name, Type, KeyId")),
            });
        }
        Ok(Filters(out))
    }

    /// The narrowest store range that holds every parameter these filters can match.
    pub fn store_prefix(&self) -> String {
        let mut best = names::STORE_PREFIX.to_string();
        for f in &self.0 {
            let candidate = match f {
                Filter::Path { values, .. } if values.len() == 1 => names::path_prefix(&values[0]),
                Filter::Name(Op::BeginsWith, values) if values.len() == 1 => {
                    format!("{}{}", names::STORE_PREFIX, names::bare(&values[0]))
                }
                _ => continue,
            };
            if candidate.len() > best.len() {
                best = candidate;
            }
        }
        best
    }

    /// The one name an `Equals` name filter with a single value allows (a lookup, not a scan).
    pub fn exact_name(&self) -> Option<&str> {
        self.0.iter().find_map(|f| match f {
            Filter::Name(Op::Equals, values) if values.len() == 1 => Some(values[0].as_str()),
            _ => None,
        })
    }

    /// The version of `record` these filters select, if they match it: the latest, or with a
    /// `Label` filter the newest version carrying one of its labels; then every other filter
    /// is matched against that version and the record.
    pub fn select<'r>(&self, record: &'r ParameterRecord) -> Option<&'r ParameterVersion> {
        let version = match self.0.iter().find_map(|f| match f {
            Filter::Label(labels) => Some(labels),
            _ => None,
        }) {
            Some(labels) => record
                .versions
                .iter()
                .rev()
                .find(|v| v.labels.iter().any(|l| labels.contains(l)))?,
            None => record.latest()?,
        };
        self.0
            .iter()
            .all(|f| matches(f, record, version))
            .then_some(version)
    }
}

fn compare(op: Op, have: &str, values: &[String]) -> bool {
    values.iter().any(|v| match op {
        Op::Equals => have == v,
        Op::BeginsWith => have.starts_with(v.as_str()),
        Op::Contains => have.contains(v.as_str()),
    })
}

fn matches(f: &Filter, record: &ParameterRecord, v: &ParameterVersion) -> bool {
    match f {
        Filter::Name(op @ (Op::Equals | Op::BeginsWith), values) => {
            // `db` and `/db` are one parameter: compare both sides with a leading slash.
            let have = format!("/{}", names::bare(&record.name));
            let values: Vec<String> = values
                .iter()
                .map(|s| format!("/{}", names::bare(s)))
                .collect();
            compare(*op, &have, &values)
        }
        Filter::Name(op, values) => compare(*op, &record.name, values),
        Filter::Type(op, values) => compare(*op, &v.parameter_type, values),
        Filter::KeyId(op, values) => v.key_id.as_deref().is_some_and(|k| compare(*op, k, values)),
        Filter::Tier(op, values) => compare(*op, &v.tier, values),
        Filter::DataType(op, values) => compare(*op, &v.data_type, values),
        Filter::Path { recursive, values } => values
            .iter()
            .any(|p| names::under_path(&record.name, p, *recursive)),
        Filter::Tag(key, op, values) => match record.tags.get(key) {
            None => false,
            Some(_) if values.is_empty() => true,
            Some(have) => compare(*op, have, values),
        },
        Filter::Label(labels) => v.labels.iter().any(|l| labels.contains(l)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::record::StoredValue;

    fn version(n: i64, ty: &str, labels: &[&str]) -> ParameterVersion {
        ParameterVersion {
            version: n,
            parameter_type: ty.into(),
            value: StoredValue::Plain(String::new()),
            key_id: (ty == "SecureString").then(|| "alias/aws/ssm".to_string()),
            description: None,
            allowed_pattern: None,
            tier: "Standard".into(),
            data_type: "text".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            last_modified_date: 0.0,
            last_modified_user: String::new(),
        }
    }

    fn record(name: &str, versions: Vec<ParameterVersion>) -> ParameterRecord {
        ParameterRecord {
            name: name.into(),
            versions,
            tags: [("team".to_string(), "core".to_string())].into(),
        }
    }

    fn f(key: &str, option: Option<&str>, values: &[&str]) -> StringFilter {
        StringFilter {
            key: key.into(),
            option: option.map(str::to_string),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn code(filters: &[StringFilter], operation: For) -> &'static str {
        match Filters::parse(filters, operation) {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn each_operation_accepts_its_own_keys_and_options() {
        assert_eq!(
            code(&[f("Label", None, &["x"])], For::Describe),
            "InvalidFilterKey"
        );
        assert_eq!(
            code(&[f("Name", None, &["x"])], For::ByPath),
            "InvalidFilterKey"
        );
        assert_eq!(
            code(&[f("Path", None, &["/x"])], For::ByPath),
            "InvalidFilterKey"
        );
        assert_eq!(
            code(&[f("tag:team", None, &[])], For::ByPath),
            "InvalidFilterKey"
        );
        assert_eq!(code(&[f("Label", None, &["x"])], For::ByPath), "ok");
        assert_eq!(
            code(&[f("Label", Some("BeginsWith"), &["x"])], For::ByPath),
            "InvalidFilterOption"
        );
        assert_eq!(
            code(&[f("Name", Some("Contains"), &["x"])], For::Describe),
            "ok"
        );
        assert_eq!(
            code(&[f("Type", Some("Contains"), &["String"])], For::Describe),
            "InvalidFilterOption"
        );
        assert_eq!(
            code(&[f("Path", Some("Equals"), &["/x"])], For::Describe),
            "InvalidFilterOption"
        );
        assert_eq!(
            code(&[f("Type", None, &["Strung"])], For::Describe),
            "InvalidFilterValue"
        );
        assert_eq!(
            code(&[f("Name", None, &[])], For::Describe),
            "InvalidFilterValue"
        );
        assert_eq!(code(&[f("tag:team", None, &[])], For::Describe), "ok");
        assert_eq!(
            code(
                &[f("Name", None, &["a"]), f("Name", None, &["b"])],
                For::Describe
            ),
            "InvalidFilterKey"
        );
        assert_eq!(
            code(&[f("Path", None, &["/aws/x"])], For::Describe),
            "ValidationException"
        );
        assert_eq!(
            code(&[f("Path", None, &["no-slash"])], For::Describe),
            "ValidationException"
        );
    }

    #[test]
    fn names_match_with_either_spelling() {
        let r = record("db", vec![version(1, "String", &[])]);
        for (option, value, want) in [
            ("Equals", "/db", true),
            ("Equals", "db", true),
            ("Equals", "d", false),
            ("BeginsWith", "/d", true),
            ("Contains", "b", true),
            ("Contains", "x", false),
        ] {
            let fs = Filters::parse(&[f("Name", Some(option), &[value])], For::Describe).unwrap();
            assert_eq!(fs.select(&r).is_some(), want, "{option} {value}");
        }
    }

    #[test]
    fn paths_types_keys_and_tags_filter() {
        let secure = record("/app/db/password", vec![version(1, "SecureString", &[])]);
        let plain = record("/app/url", vec![version(1, "String", &[])]);
        let check = |filters: &[StringFilter], r: &ParameterRecord| {
            Filters::parse(filters, For::Describe)
                .unwrap()
                .select(r)
                .is_some()
        };
        assert!(check(&[f("Path", None, &["/app"])], &plain));
        assert!(!check(&[f("Path", None, &["/app"])], &secure));
        assert!(check(&[f("Path", Some("Recursive"), &["/app"])], &secure));
        assert!(check(&[f("Type", None, &["SecureString"])], &secure));
        assert!(!check(&[f("Type", None, &["SecureString"])], &plain));
        assert!(check(&[f("KeyId", None, &["alias/aws/ssm"])], &secure));
        assert!(!check(&[f("KeyId", None, &["alias/aws/ssm"])], &plain));
        assert!(check(&[f("tag:team", None, &[])], &plain));
        assert!(check(&[f("tag:team", Some("BeginsWith"), &["co"])], &plain));
        assert!(!check(&[f("tag:team", None, &["other"])], &plain));
        assert!(!check(&[f("tag:owner", None, &[])], &plain));
        assert!(check(
            &[
                f("Tier", None, &["Standard"]),
                f("DataType", None, &["text"])
            ],
            &plain
        ));
    }

    #[test]
    fn a_label_filter_selects_the_labelled_version() {
        let r = record(
            "/app/db",
            vec![
                version(1, "String", &["old"]),
                version(2, "String", &["prod"]),
                version(3, "String", &[]),
            ],
        );
        let by_label = Filters::parse(&[f("Label", None, &["prod", "old"])], For::ByPath).unwrap();
        assert_eq!(by_label.select(&r).map(|v| v.version), Some(2));
        let none = Filters::parse(&[f("Label", None, &["qa"])], For::ByPath).unwrap();
        assert!(none.select(&r).is_none());
        assert_eq!(Filters::default().select(&r).map(|v| v.version), Some(3));
    }

    #[test]
    fn listings_read_the_narrowest_range_a_filter_allows() {
        let parse = |fs: &[StringFilter]| Filters::parse(fs, For::Describe).unwrap();
        assert_eq!(parse(&[]).store_prefix(), "ssm/parameters/");
        assert_eq!(
            parse(&[f("Path", Some("Recursive"), &["/app/"])]).store_prefix(),
            "ssm/parameters/app/"
        );
        assert_eq!(
            parse(&[
                f("Path", None, &["/app"]),
                f("Name", Some("BeginsWith"), &["/app/db"])
            ])
            .store_prefix(),
            "ssm/parameters/app/db"
        );
        assert_eq!(
            parse(&[f("Path", None, &["/a", "/b"])]).store_prefix(),
            "ssm/parameters/"
        );
        assert_eq!(
            parse(&[f("Name", None, &["/x/y"])]).exact_name(),
            Some("/x/y")
        );
        assert_eq!(parse(&[f("Name", None, &["a", "b"])]).exact_name(), None);
    }

    #[test]
    fn deprecated_filters_still_work() {
        let r = record("/app/db", vec![version(1, "SecureString", &[])]);
        let fs = Filters::legacy(&[LegacyFilter {
            key: "Name".into(),
            values: vec!["/app".into()],
        }])
        .unwrap();
        assert!(fs.select(&r).is_some());
        let fs = Filters::legacy(&[LegacyFilter {
            key: "Type".into(),
            values: vec!["String".into()],
        }])
        .unwrap();
        assert!(fs.select(&r).is_none());
    }
}
