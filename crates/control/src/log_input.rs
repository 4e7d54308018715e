//! Input of the CloudWatch Logs operations checked as the Logs model constrains it (name
//! lengths and patterns, tags, log group ARNs), with CloudWatch's error wording: every
//! failure is an `InvalidParameterException` naming the member, never ECS's `ClientException`.

use crate::logs::group_not_found;
use gantry_model::{ArnScope, EcsError, EcsResult};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

/// Deserialize a Logs operation's input: a bad member is an `InvalidParameterException`.
pub(crate) fn parse<T: DeserializeOwned>(input: Value) -> EcsResult<T> {
    crate::wire::parse(input).map_err(|e| EcsError::invalid_parameter(e.message))
}

fn constraint(value: &str, member: &str, rule: &str) -> EcsError {
    EcsError::invalid_parameter(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

fn length(value: &str, member: &str, min: usize, max: usize) -> EcsResult<()> {
    let n = value.chars().count();
    if n < min {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if n > max {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// `LogGroupName`: 1 to 512 of `[\.\-_/#A-Za-z0-9]`.
pub(crate) fn group_name(value: &str, member: &str) -> EcsResult<()> {
    length(value, member, 1, 512)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#'))
    {
        return Err(constraint(
            value,
            member,
            r"Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]+",
        ));
    }
    Ok(())
}

/// A name `CreateLogGroup` accepts: a valid name outside the `aws/` namespace AWS keeps for
/// its own services.
pub(crate) fn new_group_name(value: &str) -> EcsResult<()> {
    group_name(value, "logGroupName")?;
    if value.starts_with("aws/") {
        return Err(EcsError::invalid_parameter(
            "Log group names can't start with the string aws/ (reserved for AWS services).",
        ));
    }
    Ok(())
}

/// `LogStreamName`: 1 to 512 characters, no `:` or `*`.
pub(crate) fn stream_name(value: &str, member: &str) -> EcsResult<()> {
    length(value, member, 1, 512)?;
    if value.contains([':', '*']) {
        return Err(constraint(
            value,
            member,
            "Member must satisfy regular expression pattern: [^:*]*",
        ));
    }
    Ok(())
}

/// `[\p{L}\p{Z}\p{N}_.:/=+\-@]`: letters, separators, digits and a few signs.
fn tag_char(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || (c.is_whitespace() && !c.is_control())
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

/// A `Tags` map: 1 to 50 entries (when given), keys of 1 to 128 characters outside `aws:`,
/// values of up to 256, both of [`tag_char`]s.
pub(crate) fn tags(tags: &BTreeMap<String, String>, member: &str) -> EcsResult<()> {
    if tags.is_empty() {
        return Err(EcsError::invalid_parameter(format!(
            "1 validation error detected: Value '{{}}' at '{member}' failed to satisfy constraint: Member must have length greater than or equal to 1"
        )));
    }
    if tags.len() > gantry_logs::MAX_TAGS {
        return Err(EcsError::invalid_parameter(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must have length less than or equal to {}",
            gantry_logs::MAX_TAGS
        )));
    }
    for (k, v) in tags {
        tag_key(k, &format!("{member}.{k}.member.key"))?;
        length(v, &format!("{member}.{k}.member.value"), 0, 256)?;
        if !v.chars().all(tag_char) {
            return Err(constraint(
                v,
                &format!("{member}.{k}.member.value"),
                r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$",
            ));
        }
    }
    Ok(())
}

pub(crate) fn tag_key(k: &str, member: &str) -> EcsResult<()> {
    length(k, member, 1, 128)?;
    if !k.chars().all(tag_char) {
        return Err(constraint(
            k,
            member,
            r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]+)$",
        ));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(EcsError::invalid_parameter(format!(
            "Tag keys starting with 'aws:' are reserved for AWS use: {k}"
        )));
    }
    Ok(())
}

/// The log group an ARN names: `arn:aws:logs:<region>:<account>:log-group:<name>`, with or
/// without the `:*` that DescribeLogGroups' `arn` ends in. An ARN of another region or
/// account names a group that does not exist here.
pub(crate) fn group_of_arn(scope: &ArnScope, arn: &str) -> EcsResult<String> {
    match gantry_model::arn::log_group_of_arn(arn) {
        Some((region, account, name)) => {
            if region != scope.region || account != scope.account {
                return Err(group_not_found());
            }
            group_name(name, "resourceArn")?;
            Ok(name.to_string())
        }
        None => Err(EcsError::invalid_parameter(format!(
            "{arn} is not a log group ARN (arn:aws:logs:<region>:<account>:log-group:<name>); \
             log groups are the only CloudWatch Logs resources Gantry tags."
        ))),
    }
}

/// The group a call names by `logGroupName` or `logGroupIdentifier` (a name or an ARN);
/// exactly one of them.
pub(crate) fn group_identifier(
    scope: &ArnScope,
    name: Option<&str>,
    identifier: Option<&str>,
) -> EcsResult<String> {
    match (name, identifier) {
        (Some(_), Some(_)) => Err(EcsError::invalid_parameter(
            "LogGroup name and LogGroup identifier are mutually exclusive parameters.",
        )),
        (Some(n), None) => {
            group_name(n, "logGroupName")?;
            Ok(n.to_string())
        }
        (None, Some(id)) if id.starts_with("arn:") => group_of_arn(scope, id),
        (None, Some(id)) => {
            group_name(id, "logGroupIdentifier")?;
            Ok(id.to_string())
        }
        (None, None) => Err(EcsError::invalid_parameter(
            "Either logGroupName or logGroupIdentifier must be given.",
        )),
    }
}

/// `DescribeLimit`: 1 to 50, 50 when absent.
pub(crate) fn describe_limit(limit: Option<i64>) -> EcsResult<usize> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=50) => Ok(n as usize),
        Some(n) => Err(constraint(
            &n.to_string(),
            "limit",
            if n < 1 {
                "Member must have value greater than or equal to 1"
            } else {
                "Member must have value less than or equal to 50"
            },
        )),
    }
}

pub(crate) fn invalid_token() -> EcsError {
    EcsError::invalid_parameter("The specified nextToken is invalid.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_models_patterns() {
        assert!(group_name("/ecs/web-1_a.b#c", "logGroupName").is_ok());
        let bad = group_name("has space", "logGroupName").expect_err("space");
        assert_eq!(bad.code, "InvalidParameterException");
        assert!(bad.message.contains("at 'logGroupName'"), "{}", bad.message);
        assert!(group_name("", "logGroupName").is_err());
        assert!(group_name(&"a".repeat(512), "logGroupName").is_ok());
        assert!(group_name(&"a".repeat(513), "logGroupName").is_err());
        assert!(new_group_name("aws/lambda/x").is_err());
        assert!(stream_name("web/app/1", "logStreamName").is_ok());
        assert!(stream_name("a:b", "logStreamName").is_err());
        assert!(stream_name("a*", "logStreamName").is_err());
    }

    #[test]
    fn tags_follow_the_models_limits() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(tags(&one("team", "core / ops@x"), "tags").is_ok());
        assert!(tags(&one("team", ""), "tags").is_ok());
        assert!(tags(&BTreeMap::new(), "tags").is_err());
        assert!(tags(&one("aws:x", "v"), "tags").is_err());
        assert!(tags(&one("bad!", "v"), "tags").is_err());
        assert!(tags(&one(&"k".repeat(129), "v"), "tags").is_err());
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(tags(&many, "tags").is_err());
    }

    #[test]
    fn group_arns_with_or_without_the_wildcard_name_the_group() {
        let scope = ArnScope::default();
        let arn = "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web";
        assert_eq!(group_of_arn(&scope, arn).expect("arn"), "/ecs/web");
        assert_eq!(
            group_of_arn(&scope, &format!("{arn}:*")).expect("arn"),
            "/ecs/web"
        );
        let elsewhere = group_of_arn(
            &scope,
            "arn:aws:logs:eu-west-1:000000000000:log-group:/ecs/web",
        )
        .expect_err("other region");
        assert_eq!(elsewhere.code, "ResourceNotFoundException");
        let not_a_group = group_of_arn(&scope, "arn:aws:logs:us-east-1:000000000000:destination:d")
            .expect_err("destination");
        assert_eq!(not_a_group.code, "InvalidParameterException");
        assert!(group_identifier(&scope, Some("a"), Some("b")).is_err());
        assert_eq!(
            group_identifier(&scope, None, Some(arn)).expect("id"),
            "/ecs/web"
        );
    }
}
