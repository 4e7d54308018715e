//! Parameter names, the references clients use to read them (a name, an ARN, either with a
//! `:version` or `:label` selector), hierarchy paths, version labels, and where a parameter
//! lives in the store. Pure functions, no I/O.
//!
//! One parameter, two spellings: a single-level name may be written with or without its
//! leading slash (`/TestParam1` and `TestParam1` are the same parameter on AWS, with one
//! ARN). The store key and the ARN use the name without it, so both spellings find the one
//! record; the record keeps the spelling it was created with, which is what every output shows.

use super::errors;
use gantry_model::{ArnScope, EcsResult};

/// Where every parameter record lives: `ssm/parameters/<name without its leading slash>`.
pub const STORE_PREFIX: &str = "ssm/parameters/";

/// The deepest hierarchy a name may have, counting the last segment (`/L1/.../L14/name`).
pub const MAX_LEVELS: usize = 15;

/// The longest ARN a parameter may have: AWS counts the 1011 characters a name may take
/// including the `arn:aws:ssm:<region>:<account>:parameter/` before it.
pub const MAX_ARN_CHARS: usize = 1011;

/// The message AWS gives for a name with characters outside `a-zA-Z0-9_.-` or a reserved
/// `ssm` prefix: the same sentence for both.
pub const INVALID_NAME: &str = "Parameter name: can't be prefixed with \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_";

const RESERVED_SINGLE: &str =
    "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive).";

const NOT_FULLY_QUALIFIED: &str = "Parameter name must be a fully qualified name.";

/// The message AWS gives for a hierarchy path that breaks the name rules.
pub const INVALID_PATH: &str = "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\". It can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_.";

/// A name without its leading slash: what the store key and the ARN are made of.
pub fn bare(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

pub fn store_key(name: &str) -> String {
    format!("{STORE_PREFIX}{}", bare(name))
}

/// The store range holding the parameters under `path` (`/` is every parameter).
pub fn path_prefix(path: &str) -> String {
    let inner = path.trim_matches('/');
    if inner.is_empty() {
        STORE_PREFIX.to_string()
    } else {
        format!("{STORE_PREFIX}{inner}/")
    }
}

pub fn arn(scope: &ArnScope, name: &str) -> String {
    format!(
        "arn:aws:ssm:{}:{}:parameter/{}",
        scope.region,
        scope.account,
        bare(name)
    )
}

fn segment_chars_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn reserved_prefix(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    lower.starts_with("aws") || lower.starts_with("ssm")
}

/// The form every name must have, read or written: fully qualified (a name with a slash
/// inside starts with one) and made of `a-zA-Z0-9_.-` segments.
pub fn check_form(name: &str) -> EcsResult<()> {
    let rest = bare(name);
    if !name.starts_with('/') && rest.contains('/') {
        return Err(errors::validation(NOT_FULLY_QUALIFIED));
    }
    if !rest.split('/').all(segment_chars_ok) {
        return Err(errors::validation(INVALID_NAME));
    }
    Ok(())
}

/// The rules for a name PutParameter creates: its form, the reserved `aws` and `ssm`
/// prefixes, at most [`MAX_LEVELS`] levels and an ARN of at most [`MAX_ARN_CHARS`].
pub fn check_new(scope: &ArnScope, name: &str) -> EcsResult<()> {
    check_form(name)?;
    let rest = bare(name);
    let first = rest.split('/').next().unwrap_or("");
    if reserved_prefix(first) {
        if !rest.contains('/') {
            return Err(errors::validation(RESERVED_SINGLE));
        }
        if first.to_ascii_lowercase().starts_with("aws") {
            // AWS's own public parameters live under /aws.
            return Err(errors::access_denied(format!(
                "No access to reserved parameter name: {name}."
            )));
        }
        return Err(errors::validation(INVALID_NAME));
    }
    if rest.split('/').count() > MAX_LEVELS {
        return Err(errors::hierarchy_too_deep());
    }
    let arn_chars = arn(scope, name).chars().count();
    if arn_chars > MAX_ARN_CHARS {
        return Err(errors::validation(format!(
            "Parameter name: the name can have at most {MAX_ARN_CHARS} characters including the ARN before it (arn:aws:ssm:<region>:<account>:parameter/); this one has {arn_chars}."
        )));
    }
    Ok(())
}

/// A hierarchy path (GetParametersByPath, the `Path` filter): `/`, or `/` followed by
/// segments of `a-zA-Z0-9_.-`, with or without a trailing slash.
pub fn check_path(path: &str) -> EcsResult<()> {
    let Some(inner) = path.strip_prefix('/') else {
        return Err(errors::validation(INVALID_PATH));
    };
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() || inner.split('/').all(segment_chars_ok) {
        Ok(())
    } else {
        Err(errors::validation(INVALID_PATH))
    }
}

/// Whether `name` sits under `path`: directly (one level) or at any depth.
pub fn under_path(name: &str, path: &str, recursive: bool) -> bool {
    let path = path.trim_matches('/');
    let name = bare(name);
    let rest = if path.is_empty() {
        name
    } else {
        match name.strip_prefix(path).and_then(|r| r.strip_prefix('/')) {
            Some(r) => r,
            None => return false,
        }
    };
    !rest.is_empty() && (recursive || !rest.contains('/'))
}

/// Which version of a parameter a reference asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Version(i64),
    Label(String),
}

impl Selector {
    /// As GetParameter echoes it (`:3`, `:prod`).
    pub fn shown(&self) -> Option<String> {
        match self {
            Selector::Latest => None,
            Selector::Version(v) => Some(format!(":{v}")),
            Selector::Label(l) => Some(format!(":{l}")),
        }
    }
}

/// A parsed reference: the parameter's name as the reference spells it and the version it
/// selects. `local` is false for an ARN of another account or region (nothing is shared with
/// this one, so such a parameter is never found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub selector: Selector,
    pub local: bool,
}

/// `name`, `name:version`, `name:label`, or the same with the parameter's ARN instead of its
/// name. The name's form is checked (not the rules for creating one: `/aws/...` can be read).
pub fn parse_reference(scope: &ArnScope, given: &str) -> EcsResult<Reference> {
    let (name, local) = match given.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [partition, service, region, account, resource] = parts.as_slice() else {
                return Err(errors::validation(INVALID_NAME));
            };
            let Some(path) = resource.strip_prefix("parameter/") else {
                return Err(errors::validation(INVALID_NAME));
            };
            if *service != "ssm" || path.is_empty() {
                return Err(errors::validation(INVALID_NAME));
            }
            // The ARN drops a hierarchical name's leading slash; a single-level name is the
            // same parameter with or without it.
            let name = if path.contains('/') {
                format!("/{path}")
            } else {
                path.to_string()
            };
            // Only an ARN exactly as this region and account write it names a parameter
            // here: what is authorised (`arn_of_reference`) is then what is read.
            let local = *partition == "aws" && *region == scope.region && *account == scope.account;
            (name, local)
        }
        None => (given.to_string(), true),
    };
    let (name, selector) = match name.split_once(':') {
        None => (name, Selector::Latest),
        Some((n, sel)) => {
            let selector = if sel.is_empty() || sel.contains(':') {
                return Err(errors::validation(INVALID_NAME));
            } else if sel.bytes().all(|b| b.is_ascii_digit()) {
                match sel.parse::<i64>() {
                    Ok(v) => Selector::Version(v),
                    Err(_) => return Err(errors::validation(INVALID_NAME)),
                }
            } else {
                Selector::Label(sel.to_string())
            };
            (n.to_string(), selector)
        }
    };
    check_form(&name)?;
    Ok(Reference {
        name,
        selector,
        local,
    })
}

/// The ARN a reference names, whether or not the parameter exists; an ARN (of any account) is
/// kept as given, without its selector. What a policy on the parameter would name.
pub fn arn_of_reference(scope: &ArnScope, given: &str) -> String {
    // A reference to a parameter here is authorised under the ARN of the parameter it reads,
    // however it was written.
    if let Ok(reference) = parse_reference(scope, given) {
        if reference.local {
            return arn(scope, &reference.name);
        }
    }
    let given = given.trim();
    if given.starts_with("arn:") {
        // The selector follows the last ':' only when the resource has one after `parameter/`.
        if let Some(at) = given.find(":parameter/") {
            let (head, resource) = given.split_at(at + ":parameter/".len());
            let resource = resource.split(':').next().unwrap_or(resource);
            return format!("{head}{resource}");
        }
        return given.to_string();
    }
    let name = given.split(':').next().unwrap_or(given);
    arn(scope, name)
}

/// Whether AWS accepts `label` as a version label: 1 to 100 of `a-zA-Z0-9_.-`, not starting
/// with a digit, `aws` or `ssm` (any case). Others come back in `InvalidLabels`.
pub fn label_is_valid(label: &str) -> bool {
    let len = label.chars().count();
    (1..=100).contains(&len)
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !label.starts_with(|c: char| c.is_ascii_digit())
        && !reserved_prefix(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> ArnScope {
        ArnScope::default()
    }

    fn code(r: EcsResult<()>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn new_names_follow_aws_rules() {
        for ok in [
            "plain",
            "/plain",
            "/Dev/Production/East/Project-ABC/MyParameter",
            "a.b_c-d",
            "/x/awsy",
            "/x/ssm",
        ] {
            assert_eq!(code(check_new(&scope(), ok)), "ok", "{ok}");
        }
        let e = check_new(&scope(), "dev/db").unwrap_err();
        assert_eq!(e.message, "Parameter name must be a fully qualified name.");
        for bad in [
            "has space",
            "/a//b",
            "/a/b/",
            "semi;colon",
            "/a/b@c",
            "/",
            "x:1",
        ] {
            let e = check_new(&scope(), bad).unwrap_err();
            assert_eq!(e.code, "ValidationException", "{bad}");
            assert_eq!(e.message, INVALID_NAME, "{bad}");
        }
        for reserved in ["awsTestParameter", "SSM-testparameter", "/Ssmx"] {
            let e = check_new(&scope(), reserved).unwrap_err();
            assert_eq!(e.code, "ValidationException", "{reserved}");
            assert!(e.message.contains("\"aws\" or \"ssm\""), "{}", e.message);
        }
        let e = check_new(&scope(), "/ssm/x").unwrap_err();
        assert_eq!(e.message, INVALID_NAME);
        let e = check_new(&scope(), "/aws/testparam1").unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
    }

    #[test]
    fn hierarchies_have_at_most_fifteen_levels() {
        let levels = |n: usize| {
            let mut s = String::new();
            for i in 0..n {
                s.push_str(&format!("/L{i}"));
            }
            s
        };
        assert_eq!(code(check_new(&scope(), &levels(15))), "ok");
        assert_eq!(
            code(check_new(&scope(), &levels(16))),
            "HierarchyLevelLimitExceededException"
        );
    }

    #[test]
    fn names_count_the_arn_toward_1011_characters() {
        let prefix = arn(&scope(), "");
        let fits = "a".repeat(MAX_ARN_CHARS - prefix.len());
        assert_eq!(code(check_new(&scope(), &fits)), "ok");
        assert_eq!(code(check_new(&scope(), &format!("/{fits}"))), "ok");
        let e = check_new(&scope(), &format!("{fits}a")).unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert!(e.message.contains("1011"), "{}", e.message);
    }

    #[test]
    fn both_spellings_of_a_single_level_name_are_one_parameter() {
        assert_eq!(store_key("/db"), store_key("db"));
        assert_eq!(arn(&scope(), "/db"), arn(&scope(), "db"));
        assert_eq!(
            arn(&scope(), "/a/b"),
            "arn:aws:ssm:us-east-1:000000000000:parameter/a/b"
        );
        assert_ne!(store_key("/a/b"), store_key("/a"));
    }

    #[test]
    fn references_carry_names_arns_versions_and_labels() {
        let r = parse_reference(&scope(), "/app/db:3").unwrap();
        assert_eq!(r.name, "/app/db");
        assert_eq!(r.selector, Selector::Version(3));
        assert!(r.local);
        let r = parse_reference(&scope(), "plain:prod").unwrap();
        assert_eq!(
            (r.name.as_str(), r.selector),
            ("plain", Selector::Label("prod".into()))
        );
        let r = parse_reference(
            &scope(),
            "arn:aws:ssm:us-east-1:000000000000:parameter/app/db:prod",
        )
        .unwrap();
        assert_eq!(r.name, "/app/db");
        assert_eq!(r.selector, Selector::Label("prod".into()));
        let r =
            parse_reference(&scope(), "arn:aws:ssm:us-east-1:000000000000:parameter/top").unwrap();
        assert_eq!((r.name.as_str(), &r.selector), ("top", &Selector::Latest));
        let foreign =
            parse_reference(&scope(), "arn:aws:ssm:eu-west-1:111111111111:parameter/x").unwrap();
        assert!(!foreign.local);
        for bad in [
            "/a:",
            "/a:1:2",
            "arn:aws:s3:::bucket",
            "/a b",
            "arn:aws:ssm:r:a:document/x",
        ] {
            assert!(parse_reference(&scope(), bad).is_err(), "{bad}");
        }
        // Reading is not creating: AWS's public /aws parameters can be asked for.
        assert!(parse_reference(&scope(), "/aws/service/x").is_ok());
    }

    #[test]
    fn the_arn_of_a_reference_drops_the_selector() {
        let want = "arn:aws:ssm:us-east-1:000000000000:parameter/app/db";
        for given in [
            "/app/db",
            "/app/db:2",
            "/app/db:prod",
            want,
            "arn:aws:ssm:us-east-1:000000000000:parameter/app/db:7",
        ] {
            assert_eq!(arn_of_reference(&scope(), given), want, "{given}");
        }
        assert_eq!(
            arn_of_reference(&scope(), "top"),
            "arn:aws:ssm:us-east-1:000000000000:parameter/top"
        );
    }

    #[test]
    fn an_arn_in_another_spelling_is_not_read_here_under_another_arn() {
        // A partition that is not `aws` (even one that hides `:parameter/` before the real
        // resource) names no parameter here, so what is authorised is never what is read.
        for given in [
            "arn:parameter/x:ssm:us-east-1:000000000000:parameter/prod/db",
            "arn:aws-x:ssm:us-east-1:000000000000:parameter/prod/db",
        ] {
            if let Ok(r) = parse_reference(&scope(), given) {
                assert!(!r.local, "{given}");
            }
            assert_ne!(
                arn_of_reference(&scope(), given),
                "arn:aws:ssm:us-east-1:000000000000:parameter/prod/db"
            );
        }
    }

    #[test]
    fn paths_and_what_sits_under_them() {
        for ok in ["/", "/a", "/a/", "/a/b.c-d_e"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "", "/a//b", "/a b"] {
            assert_eq!(check_path(bad).unwrap_err().message, INVALID_PATH, "{bad}");
        }
        assert!(under_path("/a/b", "/a", false));
        assert!(!under_path("/a/b/c", "/a", false));
        assert!(under_path("/a/b/c", "/a/", true));
        assert!(!under_path("/ab/c", "/a", true));
        assert!(!under_path("/a", "/a", true));
        assert!(under_path("top", "/", false));
        assert!(under_path("/top", "/", false));
        assert!(!under_path("/a/b", "/", false));
        assert_eq!(path_prefix("/"), "ssm/parameters/");
        assert_eq!(path_prefix("/a/b/"), "ssm/parameters/a/b/");
    }

    #[test]
    fn labels_follow_aws_rules() {
        for ok in ["prod", "Prod-Ready", "v1.2_x", &"l".repeat(100)] {
            assert!(label_is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "1st",
            "awsLabel",
            "SSMx",
            "has space",
            "a/b",
            &"l".repeat(101),
        ] {
            assert!(!label_is_valid(bad), "{bad}");
        }
    }
}
