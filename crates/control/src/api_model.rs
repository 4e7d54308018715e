//! The AWS API models of the services Gantry speaks over awsJson1_1 (ECS, CloudWatch Logs,
//! Secrets Manager and SSM Parameter Store),
//! as the SDKs are generated from them, reduced to what a server checks: each operation's input
//! shape and error shapes, each shape's type, members, required members, enum values and
//! min/max/pattern constraints (`models/*.json`, made by `scripts/strip-aws-model.py` from
//! botocore's files).
//!
//! The dispatcher uses it for three things AWS does before any handler runs and that handlers
//! would otherwise each get slightly wrong:
//! - [`ApiModel::validate`]: enums, required members and constraints are checked at the edge,
//!   before any resource is looked up, with AWS's own wording (`1 validation error detected:
//!   Value 'X' at 'launchType' failed to satisfy constraint: Member must satisfy enum value
//!   set: [...]`), so an invalid `launchType` is an `InvalidParameterException` even when the
//!   cluster is missing too;
//! - [`ApiModel::lists_error`]: an error a handler returns must be one the operation's model
//!   lists, since an SDK can only match those by type;
//! - [`ApiModel::operation`]: operations the model has and Gantry does not implement answer
//!   "not supported" (400), not "unknown operation".

use gantry_model::EcsError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Deserialize)]
pub struct Operation {
    pub input: Option<String>,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct MemberRef {
    shape: String,
}

#[derive(Debug, Deserialize)]
struct Shape {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    members: HashMap<String, MemberRef>,
    member: Option<MemberRef>,
    value: Option<MemberRef>,
    #[serde(rename = "enum")]
    values: Option<Vec<String>>,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
    /// A secret (a secret's value, a generated password): its violations never quote it.
    #[serde(default)]
    sensitive: bool,
}

#[derive(Debug, Deserialize)]
struct RawModel {
    operations: HashMap<String, Operation>,
    shapes: HashMap<String, Shape>,
}

/// One service's model.
pub struct ApiModel {
    operations: HashMap<String, Operation>,
    shapes: HashMap<String, Shape>,
    /// Compiled `pattern`s by shape name; a pattern the regex engine cannot read is not
    /// checked (the handlers still validate what they interpret).
    patterns: HashMap<String, regex_lite::Regex>,
    /// How this service words a validation error: its error type, and whether members are
    /// quoted with a lower-case first letter (Secrets Manager's model names members
    /// `SecretId`, its errors say `'secretId'`).
    style: ValidationStyle,
}

/// How a service reports input that fails its model's constraints.
#[derive(Clone, Copy)]
struct ValidationStyle {
    code: &'static str,
    lower_first: bool,
}

/// ECS and CloudWatch Logs: `InvalidParameterException`, members as the model names them.
const PARAMETER_STYLE: ValidationStyle = ValidationStyle {
    code: "InvalidParameterException",
    lower_first: false,
};

const ECS_MODEL: &str = include_str!("../models/ecs-2014-11-13.json");
const LOGS_MODEL: &str = include_str!("../models/logs-2014-03-28.json");
const SECRETSMANAGER_MODEL: &str = include_str!("../models/secretsmanager-2017-10-17.json");
const SSM_MODEL: &str = include_str!("../models/ssm-2014-11-06.json");

/// ECS's model.
pub fn ecs() -> &'static ApiModel {
    static MODEL: OnceLock<ApiModel> = OnceLock::new();
    MODEL.get_or_init(|| ApiModel::parse(ECS_MODEL, PARAMETER_STYLE))
}

/// CloudWatch Logs' model.
pub fn logs() -> &'static ApiModel {
    static MODEL: OnceLock<ApiModel> = OnceLock::new();
    MODEL.get_or_init(|| ApiModel::parse(LOGS_MODEL, PARAMETER_STYLE))
}

/// Secrets Manager's model. Its constraint failures are `ValidationException` (`1 validation
/// error detected: Value null at 'secretId' failed to satisfy constraint: ...`), as AWS
/// answers them, though no operation lists that type: it is the protocol's.
pub fn secretsmanager() -> &'static ApiModel {
    static MODEL: OnceLock<ApiModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        ApiModel::parse(
            SECRETSMANAGER_MODEL,
            ValidationStyle {
                code: "ValidationException",
                lower_first: true,
            },
        )
    })
}

/// SSM's model (its input shapes only: `scripts/strip-aws-model.py --inputs-only`). Like
/// Secrets Manager, SSM answers constraint failures with `ValidationException` and quotes
/// members in lowerCamelCase (`'type'`, `'parameterFilters.1.member.key'`).
pub fn ssm() -> &'static ApiModel {
    static MODEL: OnceLock<ApiModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        ApiModel::parse(
            SSM_MODEL,
            ValidationStyle {
                code: "ValidationException",
                lower_first: true,
            },
        )
    })
}

/// Enum values AWS accepts and documents that this model version does not list yet
/// (shape, value): checking against the model alone would refuse them.
const ENUM_EXTENSIONS: &[(&str, &str)] = &[("SettingName", "dualStackIPv6")];

/// How many violations a message names at most (AWS names them all; a request with thousands
/// should not produce a megabyte of error).
const MAX_REPORTED: usize = 10;

impl ApiModel {
    /// The model in `text`. The files are compiled in and checked by the tests, so an
    /// unreadable one is a build defect; it yields an empty model rather than a panic.
    fn parse(text: &str, style: ValidationStyle) -> ApiModel {
        let raw: RawModel = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("the compiled-in API model cannot be read: {e}");
                RawModel {
                    operations: HashMap::new(),
                    shapes: HashMap::new(),
                }
            }
        };
        let patterns = raw
            .shapes
            .iter()
            .filter_map(|(name, s)| {
                let p = s.pattern.as_ref()?;
                let re = regex_lite::Regex::new(&format!("^(?:{p})$")).ok()?;
                Some((name.clone(), re))
            })
            .collect();
        ApiModel {
            operations: raw.operations,
            shapes: raw.shapes,
            patterns,
            style,
        }
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }

    /// Every operation's name, sorted.
    pub fn operation_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.operations.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether `op`'s model lists the error `code` (an exception shape name).
    pub fn lists_error(&self, op: &str, code: &str) -> bool {
        self.operations
            .get(op)
            .is_some_and(|o| o.errors.iter().any(|e| e == code))
    }

    /// Check `input` against `op`'s input shape: required members present, enum values in
    /// their set, lengths, counts and ranges within the model's bounds, strings matching their
    /// patterns. Members the model does not know and values of the wrong JSON type are left to
    /// the handler's decoding, which names them.
    pub fn validate(&self, op: &str, input: &Value) -> Result<(), EcsError> {
        let Some(shape) = self.operations.get(op).and_then(|o| o.input.as_deref()) else {
            return Ok(());
        };
        let mut found = Violations::default();
        self.check(shape, input, &mut Vec::new(), &mut found);
        if found.count == 0 {
            return Ok(());
        }
        let n = found.count;
        let plural = if n == 1 { "error" } else { "errors" };
        Err(EcsError::new(
            self.style.code,
            format!(
                "{n} validation {plural} detected: {}",
                found.messages.join("; ")
            ),
        ))
    }

    /// Walk `value` as shape `shape_name`. `path` is where `value` sits, as segments: the
    /// dotted string AWS quotes is only built for a violation, so a valid request (the common
    /// case, 10,000 log events included) costs no allocation per member.
    fn check<'v>(
        &self,
        shape_name: &str,
        value: &'v Value,
        path: &mut Vec<Segment<'v>>,
        found: &mut Violations,
    ) {
        // Models are trees except for a few recursive shapes; a request nested deeper than
        // any real one is not worth walking.
        if path.len() > 64 {
            return;
        }
        let Some(shape) = self.shapes.get(shape_name) else {
            return;
        };
        match (shape.kind.as_str(), value) {
            ("structure", Value::Object(obj)) => {
                for name in &shape.required {
                    if obj.get(name).is_none_or(Value::is_null) {
                        found.add(|| {
                            format!(
                                "Value null at '{}' failed to satisfy constraint: Member must not be null",
                                render(self.style.lower_first, path, Some(name))
                            )
                        });
                    }
                }
                for (name, v) in obj {
                    if v.is_null() {
                        continue;
                    }
                    if let Some(member) = shape.members.get(name) {
                        path.push(Segment::Name(name));
                        self.check(&member.shape, v, path, found);
                        path.pop();
                    }
                }
            }
            ("list", Value::Array(items)) => {
                self.check_bounds(shape, items.len() as f64, value, path, "length", found);
                if let Some(member) = &shape.member {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Segment::Index(i + 1));
                        self.check(&member.shape, item, path, found);
                        path.pop();
                    }
                }
            }
            ("map", Value::Object(entries)) => {
                self.check_bounds(shape, entries.len() as f64, value, path, "length", found);
                if let Some(v) = &shape.value {
                    for (k, item) in entries {
                        path.push(Segment::Name(k));
                        self.check(&v.shape, item, path, found);
                        path.pop();
                    }
                }
            }
            ("string", Value::String(s)) => {
                if let Some(values) = &shape.values {
                    let extended = ENUM_EXTENSIONS
                        .iter()
                        .any(|(name, value)| *name == shape_name && value == s);
                    if !extended && !values.iter().any(|v| v == s) {
                        found.add(|| {
                            format!(
                                "Value '{}' at '{}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                                shown(s),
                                render(self.style.lower_first, path, None),
                                values.join(", ")
                            )
                        });
                        return;
                    }
                }
                if shape.min.is_some() || shape.max.is_some() {
                    let len = s.chars().count() as f64;
                    self.check_bounds(shape, len, value, path, "length", found);
                }
                if let Some(re) = self.patterns.get(shape_name) {
                    if !re.is_match(s) {
                        found.add(|| {
                            format!(
                                "{} at '{}' failed to satisfy constraint: Member must satisfy regular expression pattern: {}",
                                value_of(shape, value),
                                render(self.style.lower_first, path, None),
                                shape.pattern.as_deref().unwrap_or("")
                            )
                        });
                    }
                }
            }
            ("integer" | "long" | "double", Value::Number(n)) => {
                if let Some(x) = n.as_f64() {
                    self.check_bounds(shape, x, value, path, "value", found);
                }
            }
            _ => {}
        }
    }

    fn check_bounds(
        &self,
        shape: &Shape,
        measured: f64,
        value: &Value,
        path: &[Segment],
        what: &str,
        found: &mut Violations,
    ) {
        let describe = |bound: &str, limit: f64| {
            let shown_value = value_of(shape, value);
            let comparison = if what == "length" {
                "have length"
            } else {
                "have value"
            };
            format!(
                "{shown_value} at '{}' failed to satisfy constraint: Member must {comparison} {bound} {}",
                render(self.style.lower_first, path, None),
                number(limit)
            )
        };
        if let Some(min) = shape.min.filter(|m| measured < *m) {
            found.add(|| describe("greater than or equal to", min));
        }
        if let Some(max) = shape.max.filter(|m| measured > *m) {
            found.add(|| describe("less than or equal to", max));
        }
    }
}

/// One step of the path to a member: a member or map key, or a 1-based list position (AWS
/// writes `tags.1.member.key`).
#[derive(Clone, Copy)]
enum Segment<'v> {
    Name(&'v str),
    Index(usize),
}

/// The violations found: all counted, the first [`MAX_REPORTED`] described.
#[derive(Default)]
struct Violations {
    count: usize,
    messages: Vec<String>,
}

impl Violations {
    fn add(&mut self, describe: impl FnOnce() -> String) {
        self.count += 1;
        if self.messages.len() < MAX_REPORTED {
            self.messages.push(describe());
        }
    }
}

/// `path` (and a last member `name`, for a missing one) as AWS quotes it; with
/// `lower_first`, each member with its first letter in lower case (`SecretId` → `secretId`).
fn render(lower_first: bool, path: &[Segment], name: Option<&str>) -> String {
    let mut out = String::new();
    let push_member = |out: &mut String, n: &str| {
        let mut chars = n.chars();
        match chars.next() {
            Some(c) if lower_first => {
                out.extend(c.to_lowercase());
                out.push_str(chars.as_str());
            }
            _ => out.push_str(n),
        }
    };
    for seg in path {
        if !out.is_empty() {
            out.push('.');
        }
        match seg {
            Segment::Name(n) => push_member(&mut out, n),
            Segment::Index(i) => {
                out.push_str(&i.to_string());
                out.push_str(".member");
            }
        }
    }
    if let Some(n) = name {
        if !out.is_empty() {
            out.push('.');
        }
        push_member(&mut out, n);
    }
    out
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// `Value '<value>'` as a violation names it, or only `Value` for a sensitive shape (AWS
/// does not quote those either).
fn value_of(shape: &Shape, value: &Value) -> String {
    match value {
        _ if shape.sensitive => "Value".to_string(),
        Value::String(s) => format!("Value '{}'", shown(s)),
        Value::Number(n) => format!("Value {n}"),
        // A list as AWS quotes it: `'[a, b]'`.
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            format!("Value '[{}]'", shown(&items.join(", ")))
        }
        _ => "Value the given value".to_string(),
    }
}

/// A value as an error message quotes it: long values are cut, so a client's megabyte of
/// input does not come back in the error.
fn shown(s: &str) -> String {
    const MAX: usize = 256;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_compiled_in_models_are_whole() {
        assert!(ecs().operation_names().len() >= 88);
        assert!(ecs().operation("RunTask").is_some());
        assert!(logs().operation("PutLogEvents").is_some());
        assert!(ssm().operation_names().len() >= 150);
        assert!(ssm().lists_error("GetParameter", "ParameterNotFound"));
        assert!(ecs().lists_error("ListTasks", "ServiceNotFoundException"));
        assert!(!ecs().lists_error("ListTagsForResource", "ResourceNotFoundException"));
    }

    #[test]
    fn an_enum_outside_its_set_is_named_with_the_set() {
        let e = ecs()
            .validate(
                "RunTask",
                &json!({"taskDefinition": "web", "launchType": "EC3"}),
            )
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        assert!(e.message.starts_with("1 validation error detected: Value 'EC3' at 'launchType' failed to satisfy constraint: Member must satisfy enum value set: ["), "{}", e.message);
        assert!(e.message.contains("FARGATE"), "{}", e.message);
    }

    #[test]
    fn required_members_nested_enums_and_bounds_are_checked() {
        let e = ecs()
            .validate(
                "RunTask",
                &json!({
                    "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s"], "assignPublicIp": "MAYBE"}},
                    "tags": [{"key": "", "value": "v"}]
                }),
            )
            .unwrap_err();
        assert!(
            e.message.starts_with("3 validation errors detected"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("Value null at 'taskDefinition'"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("at 'networkConfiguration.awsvpcConfiguration.assignPublicIp'"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("at 'tags.1.member.key'"),
            "{}",
            e.message
        );
        ecs()
            .validate("RunTask", &json!({"taskDefinition": "web", "count": 3}))
            .unwrap();
    }

    #[test]
    fn logs_patterns_and_lengths_are_checked() {
        let e = logs()
            .validate("CreateLogGroup", &json!({"logGroupName": "bad name!"}))
            .unwrap_err();
        assert!(
            e.message.contains("regular expression pattern"),
            "{}",
            e.message
        );
        logs()
            .validate("CreateLogGroup", &json!({"logGroupName": "/ecs/web"}))
            .unwrap();
    }

    #[test]
    fn every_violation_is_counted_and_the_first_ten_described() {
        let tags: Vec<Value> = (0..25).map(|_| json!({"key": "", "value": "v"})).collect();
        let e = ecs()
            .validate("TagResource", &json!({"resourceArn": "arn", "tags": tags}))
            .unwrap_err();
        assert!(
            e.message.starts_with("25 validation errors detected: "),
            "{}",
            e.message
        );
        assert_eq!(
            e.message.matches("failed to satisfy constraint").count(),
            10
        );
        assert!(!e.message.contains("'tags.25.member.key'"));
        assert!(e.message.contains("'tags.10.member.key'"), "{}", e.message);
    }

    #[test]
    fn documented_values_the_model_lacks_are_accepted() {
        ecs()
            .validate(
                "PutAccountSetting",
                &json!({"name": "dualStackIPv6", "value": "enabled"}),
            )
            .unwrap();
    }

    #[test]
    fn secrets_manager_answers_validation_exception_with_camel_case_members() {
        let e = secretsmanager()
            .validate("GetSecretValue", &json!({}))
            .unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'secretId' failed to satisfy constraint: Member must not be null"
        );
        let e = secretsmanager()
            .validate(
                "CreateSecret",
                &json!({"Name": "n", "Tags": [{"Key": "", "Value": "v"}]}),
            )
            .unwrap_err();
        assert!(
            e.message.contains("at 'tags.1.member.key'"),
            "{}",
            e.message
        );
        assert!(secretsmanager().lists_error("GetSecretValue", "DecryptionFailure"));
        let long = "s3cr3t-".repeat(10_000);
        let e = secretsmanager()
            .validate(
                "PutSecretValue",
                &json!({"SecretId": "n", "SecretString": long}),
            )
            .unwrap_err();
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        assert!(
            e.message.contains("Value at 'secretString' failed to satisfy constraint: Member must have length less than or equal to 65536"),
            "{}",
            e.message
        );
    }

    #[test]
    fn ssm_quotes_members_in_lower_camel_case_and_lists_whole() {
        let e = ssm()
            .validate(
                "PutParameter",
                &json!({"Name": "/a", "Value": "v", "Type": "Number"}),
            )
            .unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert!(
            e.message.starts_with("1 validation error detected: Value 'Number' at 'type' failed to satisfy constraint: Member must satisfy enum value set: ["),
            "{}",
            e.message
        );
        let names: Vec<String> = (0..11).map(|i| format!("/p{i}")).collect();
        let e = ssm()
            .validate("GetParameters", &json!({ "Names": names }))
            .unwrap_err();
        assert!(
            e.message.contains("Value '[/p0, /p1, /p2, /p3, /p4, /p5, /p6, /p7, /p8, /p9, /p10]' at 'names' failed to satisfy constraint: Member must have length less than or equal to 10"),
            "{}",
            e.message
        );
        let e = ssm()
            .validate(
                "DescribeParameters",
                &json!({"ParameterFilters": [{"Key": "Colour"}]}),
            )
            .unwrap_err();
        assert!(
            e.message.contains("at 'parameterFilters.1.member.key'"),
            "{}",
            e.message
        );
        let e = ssm()
            .validate("GetParametersByPath", &json!({}))
            .unwrap_err();
        assert!(e.message.contains("Value null at 'path'"), "{}", e.message);
    }

    #[test]
    fn values_of_the_wrong_type_are_left_to_the_handler() {
        ecs()
            .validate("ListTasks", &json!({"launchType": 7, "maxResults": "x"}))
            .unwrap();
    }
}
