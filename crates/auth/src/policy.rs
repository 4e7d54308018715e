//! IAM policy documents: parsed as IAM accepts them, evaluated as IAM decides them.
//!
//! Users bring the policies they already run on AWS, so the grammar, the validation messages and
//! the evaluation rules follow IAM's: a statement applies when its action, resource (and, for
//! trust and resource policies, principal) match and every condition holds; an explicit `Deny`
//! anywhere wins, then any `Allow`, and otherwise the request is implicitly denied.
//!
//! Everything here is a pure function of its inputs. Evaluation runs on every API call, so
//! [`PolicyDocument::parse`] does the work once: actions are lowercased, wildcard patterns are
//! split into literal and wildcard tokens, dates, numbers and CIDRs are parsed, condition keys are
//! lowercased. Evaluation then allocates nothing on the common path (only policy variables and
//! the `...IgnoreCase` operators build a string).
//!
//! What the caller does: checking the policy size, checking that principals named in a trust
//! policy exist, and filling a [`RequestContext`] with the condition keys of the request
//! (`aws:username`, `aws:SourceIp`, `ecs:cluster`, `aws:CurrentTime`, ...).

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::{Map, Value};

/// IAM's answer to JSON it cannot read, to unknown elements and to elements of the wrong type.
const SYNTAX_ERROR: &str = "Syntax errors in policy.";
/// IAM's answer to values that pass the JSON grammar but not its older value parser
/// (`"Effect": "allow"`, dates it cannot read, resources with an empty vendor).
const LEGACY_ERROR: &str = "The policy failed legacy parsing";

fn syntax() -> String {
    SYNTAX_ERROR.to_string()
}

/// Which kind of policy a document is, because IAM validates them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user, group or role (CreatePolicy, PutUserPolicy, PutRolePolicy...): no
    /// `Principal`, `Resource` required.
    Identity,
    /// A role's trust policy (CreateRole, UpdateAssumeRolePolicy): `Principal` required,
    /// `Resource` prohibited, only STS actions.
    Trust,
    /// A resource-based policy (e.g. a secret's): `Principal` and `Resource` required.
    Resource,
}

/// The policy language version: variables (`${aws:username}`) exist only in 2012-10-17; in
/// 2008-10-17, the version IAM assumes when `Version` is absent, `${...}` is literal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVersion {
    V2008_10_17,
    V2012_10_17,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The outcome of evaluating policies for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// A principal asking to assume a role (or acting under a resource-based policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustPrincipal<'a> {
    /// An IAM identity: `arn` is a user, role or assumed-role session ARN such as
    /// `arn:aws:iam::000000000000:user/alice` or `arn:aws:sts::000000000000:assumed-role/r/s`;
    /// `account` its account id.
    Aws { arn: &'a str, account: &'a str },
    /// An AWS service principal such as `ecs-tasks.amazonaws.com`.
    Service(&'a str),
}

/// The condition keys of one request. Key names are case-insensitive, as in IAM; values keep
/// their case (operators decide how to compare them).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    // A request carries a handful of keys: a vector scanned linearly beats hashing them.
    entries: Vec<(String, Vec<String>)>,
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a single-valued key, replacing any earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.set_many(key, vec![value.into()]);
    }

    /// Sets a multivalued key (e.g. `aws:TagKeys`), replacing any earlier values. An empty list
    /// counts as an absent key, as IAM treats an empty data set.
    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        let key = key.to_lowercase();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = values,
            None => self.entries.push((key, values)),
        }
    }

    /// Removes a key; true when it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let key = key.to_lowercase();
        let before = self.entries.len();
        self.entries.retain(|(k, _)| *k != key);
        self.entries.len() != before
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        if key.chars().any(char::is_uppercase) {
            self.get_lower(&key.to_lowercase())
        } else {
            self.get_lower(key)
        }
    }

    /// Lookup by an already lowercased key: what evaluation uses, since the policy's keys were
    /// lowercased at parse time.
    fn get_lower(&self, key: &str) -> Option<&[String]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The values of a key, `None` when absent or empty (IAM treats both alike).
    fn values(&self, key: &str) -> Option<&[String]> {
        self.get_lower(key).filter(|v| !v.is_empty())
    }
}

/// A parsed, validated and pre-compiled policy document.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    version: PolicyVersion,
    id: Option<String>,
    statements: Vec<Statement>,
}

/// One statement of a [`PolicyDocument`].
#[derive(Debug, Clone)]
pub struct Statement {
    sid: Option<String>,
    effect: Effect,
    action: Target<Pattern>,
    /// Absent in trust policies, where the role itself is the resource.
    resource: Option<Target<Pattern>>,
    /// Absent in identity policies, where the principal is whoever the policy is attached to.
    principal: Option<Target<PrincipalSpec>>,
    conditions: Vec<Condition>,
}

/// `Action` / `Resource` / `Principal` or their `Not...` form: with `not`, the statement applies
/// to everything the list does not match.
#[derive(Debug, Clone)]
struct Target<T> {
    not: bool,
    items: Vec<T>,
}

impl PolicyDocument {
    /// Parses a JSON policy document as IAM accepts it. Errors are IAM's MalformedPolicyDocument
    /// messages. `kind` decides whether `Principal` is required (trust and resource policies) or
    /// forbidden (identity policies), and whether `Resource` is required or prohibited.
    pub fn parse(json: &str, kind: PolicyKind) -> Result<PolicyDocument, String> {
        let value: Value = serde_json::from_str(json).map_err(|_| syntax())?;
        let top = value.as_object().ok_or_else(syntax)?;
        if top
            .keys()
            .any(|k| !matches!(k.as_str(), "Version" | "Id" | "Statement"))
        {
            return Err(syntax());
        }
        let version = match top.get("Version") {
            None => PolicyVersion::V2008_10_17,
            Some(Value::String(v)) if v == "2012-10-17" => PolicyVersion::V2012_10_17,
            Some(Value::String(v)) if v == "2008-10-17" => PolicyVersion::V2008_10_17,
            Some(_) => return Err(syntax()),
        };
        let id = match top.get("Id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(syntax()),
        };
        let raw: Vec<&Map<String, Value>> = match top.get("Statement") {
            Some(Value::Object(one)) => vec![one],
            Some(Value::Array(many)) if !many.is_empty() => many
                .iter()
                .map(|s| s.as_object().ok_or_else(syntax))
                .collect::<Result<_, _>>()?,
            _ => return Err(syntax()),
        };
        let vars = version == PolicyVersion::V2012_10_17;
        let statements = raw
            .into_iter()
            .map(|s| parse_statement(s, kind, vars))
            .collect::<Result<Vec<_>, _>>()?;

        let mut sids: Vec<&str> = Vec::new();
        for sid in statements.iter().filter_map(|s| s.sid.as_deref()) {
            if sid.is_empty() {
                continue;
            }
            if sids.contains(&sid) {
                return Err("Statement IDs (SID) in a single policy must be unique.".to_string());
            }
            sids.push(sid);
        }
        Ok(PolicyDocument {
            version,
            id,
            statements,
        })
    }

    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }
}

impl Statement {
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether this statement applies to the request. `resource: None` skips the resource
    /// element (trust policies have none); `principal: None` means an identity evaluation, to
    /// which a statement naming principals never applies.
    fn applies(
        &self,
        action: &str,
        resource: Option<&str>,
        principal: Option<&TrustPrincipal<'_>>,
        ctx: &RequestContext,
    ) -> bool {
        let action_hit = self
            .action
            .items
            .iter()
            .any(|p| p.is_match(action, true, ctx, false));
        if action_hit == self.action.not {
            return false;
        }
        if let (Some(target), Some(resource)) = (&self.resource, resource) {
            let hit = target
                .items
                .iter()
                .any(|p| p.is_match(resource, false, ctx, false));
            if hit == target.not {
                return false;
            }
        }
        match (&self.principal, principal) {
            (None, None) => {}
            (Some(target), Some(who)) => {
                let hit = target.items.iter().any(|p| p.matches(who));
                if hit == target.not {
                    return false;
                }
            }
            _ => return false,
        }
        self.conditions.iter().all(|c| c.holds(ctx))
    }
}

/// Evaluates identity policies for one (action, resource): an explicit `Deny` in any statement
/// wins, else any `Allow`, else [`Decision::ImplicitDeny`].
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a PolicyDocument>,
    action: &str,
    resource: &str,
    ctx: &RequestContext,
) -> Decision {
    let mut allowed = false;
    for doc in policies {
        for statement in &doc.statements {
            // Once allowed, only a Deny can change the answer: skip the other Allows unevaluated.
            if allowed && statement.effect == Effect::Allow {
                continue;
            }
            if statement.applies(action, Some(resource), None, ctx) {
                match statement.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Evaluates a policy that names principals (a trust policy, or a resource-based policy) for
/// `principal` doing `action`, on `resource` when given (trust policies have no resource).
pub fn evaluate_with_principal(
    doc: &PolicyDocument,
    principal: &TrustPrincipal<'_>,
    action: &str,
    resource: Option<&str>,
    ctx: &RequestContext,
) -> Decision {
    let mut allowed = false;
    for statement in &doc.statements {
        if allowed && statement.effect == Effect::Allow {
            continue;
        }
        if statement.applies(action, resource, Some(principal), ctx) {
            match statement.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Whether a role's trust policy lets `principal` assume it (`sts:AssumeRole`): an `Allow`
/// statement whose action and principal match and whose conditions hold, and no such `Deny`.
pub fn trust_allows(
    doc: &PolicyDocument,
    principal: &TrustPrincipal<'_>,
    ctx: &RequestContext,
) -> bool {
    evaluate_with_principal(doc, principal, "sts:AssumeRole", None, ctx) == Decision::Allow
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn parse_statement(
    m: &Map<String, Value>,
    kind: PolicyKind,
    vars: bool,
) -> Result<Statement, String> {
    const ELEMENTS: [&str; 9] = [
        "Sid",
        "Effect",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Principal",
        "NotPrincipal",
        "Condition",
    ];
    if m.keys().any(|k| !ELEMENTS.contains(&k.as_str())) {
        return Err(syntax());
    }
    let both = |a: &str, b: &str| m.contains_key(a) && m.contains_key(b);
    if both("Action", "NotAction")
        || both("Resource", "NotResource")
        || both("Principal", "NotPrincipal")
    {
        return Err(syntax());
    }

    let sid = match m.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(syntax()),
    };
    let effect = match m.get("Effect") {
        None => return Err("Missing required field Effect".to_string()),
        Some(Value::String(e)) => match e.as_str() {
            "Allow" => Effect::Allow,
            "Deny" => Effect::Deny,
            // IAM's grammar accepts any case here but its value parser does not.
            e if e.eq_ignore_ascii_case("allow") || e.eq_ignore_ascii_case("deny") => {
                return Err(LEGACY_ERROR.to_string())
            }
            _ => return Err(syntax()),
        },
        Some(_) => return Err(syntax()),
    };
    let (action_not, actions) = match (string_list(m, "Action")?, string_list(m, "NotAction")?) {
        (Some(a), _) => (false, a),
        (None, Some(a)) => (true, a),
        (None, None) => (false, Vec::new()),
    };
    let (resource_not, resources) =
        match (string_list(m, "Resource")?, string_list(m, "NotResource")?) {
            (Some(r), _) => (false, Some(r)),
            (None, Some(r)) => (true, Some(r)),
            (None, None) => (false, None),
        };
    let principal = match (m.get("Principal"), m.get("NotPrincipal")) {
        (Some(p), _) => Some(Target {
            not: false,
            items: vec![parse_principal(p)?],
        }),
        (None, Some(p)) => Some(Target {
            not: true,
            items: vec![parse_principal(p)?],
        }),
        (None, None) => None,
    };
    let conditions = match m.get("Condition") {
        None => Vec::new(),
        Some(c) => parse_conditions(c, vars)?,
    };

    // Structure is sound; now the rules that depend on the kind of policy.
    if let Some(sid) = &sid {
        if kind != PolicyKind::Resource && !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(
                "Statement IDs (SID) must be alpha-numeric. Check that your input \
                        satisfies the regular expression [0-9A-Za-z]*"
                    .to_string(),
            );
        }
    }
    match kind {
        PolicyKind::Identity if principal.is_some() => {
            return Err("Policy document should not specify a principal.".to_string())
        }
        PolicyKind::Trust | PolicyKind::Resource if principal.is_none() => {
            return Err("Missing required field Principal".to_string())
        }
        _ => {}
    }
    if actions.is_empty() {
        return Err("Policy statement must contain actions.".to_string());
    }
    let resource = match (kind, resources) {
        (PolicyKind::Trust, Some(_)) => return Err("Has prohibited field Resource".to_string()),
        (PolicyKind::Trust, None) => None,
        (_, None) => return Err("Policy statement must contain resources.".to_string()),
        (_, Some(r)) if r.is_empty() => {
            return Err("Policy statement must contain resources.".to_string())
        }
        (_, Some(r)) => {
            for res in &r {
                check_resource(res)?;
            }
            Some(Target {
                not: resource_not,
                items: r
                    .iter()
                    .map(|s| Pattern::compile(s, true, vars, Case::Keep))
                    .collect(),
            })
        }
    };
    for action in &actions {
        check_action(action)?;
        if kind == PolicyKind::Trust
            && !action_not
            && *action != "*"
            && !action
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("sts:"))
        {
            return Err("AssumeRole policy may only specify STS AssumeRole actions.".to_string());
        }
    }
    let action = Target {
        not: action_not,
        items: actions
            .iter()
            .map(|a| Pattern::compile(a, true, false, Case::Ascii))
            .collect(),
    };
    Ok(Statement {
        sid,
        effect,
        action,
        resource,
        principal,
        conditions,
    })
}

/// IAM's "a string or a list of strings" elements (Action, Resource and their `Not` forms).
fn string_list<'v>(m: &'v Map<String, Value>, key: &str) -> Result<Option<Vec<&'v str>>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(syntax))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(syntax()),
    }
}

fn check_action(action: &str) -> Result<(), String> {
    if action == "*" {
        return Ok(());
    }
    let mut parts = action.split(':');
    let vendor = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => Err(
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."
                .to_string(),
        ),
        (Some(_), Some(_)) => Err("Actions/Condition can contain only one colon.".to_string()),
        (Some(_), None) => {
            let valid = vendor == "*"
                || vendor
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if valid {
                Ok(())
            } else {
                Err(format!("Vendor {vendor} is not valid"))
            }
        }
    }
}

/// The resource checks IAM makes: an ARN (or `*`) with a fully qualified vendor, no region in
/// IAM ARNs, and IAM resource types it knows.
fn check_resource(resource: &str) -> Result<(), String> {
    if resource == "*" {
        return Ok(());
    }
    let not_arn = || format!("Resource {resource} must be in ARN format or \"*\".");
    let parts: Vec<&str> = resource.splitn(6, ':').collect();
    if parts.len() < 2 || parts[0] != "arn" {
        return Err(not_arn());
    }
    let partition = parts[1];
    if partition != "*" && !partition.starts_with("aws") {
        return Err(format!(
            "Partition \"{partition}\" is not valid for resource \"{resource}\"."
        ));
    }
    let vendor = parts.get(2).copied().unwrap_or_default();
    if parts.len() < 3 || vendor.contains(['*', '?']) {
        return Err(
            "Resource vendor must be fully qualified and cannot contain regexes.".to_string(),
        );
    }
    if vendor.is_empty() {
        return Err(LEGACY_ERROR.to_string());
    }
    // "arn:aws:s3:::b" is fine; a short ARN that still has an empty field is not.
    if parts.len() < 6 && resource.contains("::") {
        return Err(LEGACY_ERROR.to_string());
    }
    if vendor == "iam" {
        if parts.get(3).is_some_and(|region| !region.is_empty()) {
            return Err(format!(
                "IAM resource {resource} cannot contain region information."
            ));
        }
        const IAM_TYPES: [&str; 13] = [
            "user/",
            "federated-user/",
            "role/",
            "group/",
            "instance-profile/",
            "mfa/",
            "server-certificate/",
            "policy/",
            "sms-mfa/",
            "saml-provider/",
            "oidc-provider/",
            "report/",
            "access-report/",
        ];
        if let Some(path) = parts.get(5) {
            if !path.starts_with('*') && !IAM_TYPES.iter().any(|t| path.starts_with(t)) {
                return Err(format!(
                    "IAM resource path must either be \"*\" or start with {}.",
                    IAM_TYPES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Principals

#[derive(Debug, Clone)]
enum PrincipalSpec {
    /// `"Principal": "*"`.
    Everyone,
    /// `Federated` (and `CanonicalUser`) entries are validated but not kept: Gantry has no
    /// identity federation, so nothing could match them.
    Listed {
        aws: Vec<AwsPrincipal>,
        service: Vec<String>,
    },
}

#[derive(Debug, Clone)]
enum AwsPrincipal {
    /// `"AWS": "*"`, which IAM documents as the same as `"Principal": "*"`.
    Any,
    /// An account id or `arn:aws:iam::<id>:root`: any principal of that account.
    Account(String),
    /// A user, role or assumed-role session ARN.
    Arn(String),
}

fn invalid_principal(kind: &str, value: &str) -> String {
    format!("Invalid principal in policy: \"{kind}\":\"{value}\"")
}

fn parse_principal(v: &Value) -> Result<PrincipalSpec, String> {
    let map = match v {
        Value::String(s) if s == "*" => return Ok(PrincipalSpec::Everyone),
        Value::Object(map) if !map.is_empty() => map,
        _ => return Err(syntax()),
    };
    let mut aws = Vec::new();
    let mut service = Vec::new();
    for (key, value) in map {
        let names: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| i.as_str().ok_or_else(syntax))
                .collect::<Result<_, _>>()?,
            _ => return Err(syntax()),
        };
        for name in names {
            match key.as_str() {
                "AWS" => aws
                    .push(parse_aws_principal(name).ok_or_else(|| invalid_principal("AWS", name))?),
                "Service" => {
                    let valid = name.contains('.')
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                    if !valid {
                        return Err(invalid_principal("SERVICE", name));
                    }
                    service.push(name.to_string());
                }
                "Federated" => {
                    if name.is_empty() {
                        return Err(invalid_principal("FEDERATED", name));
                    }
                }
                // Canonical users are S3's; nothing in Gantry is one, so they are accepted and
                // never match.
                "CanonicalUser" => {}
                _ => return Err(syntax()),
            }
        }
    }
    Ok(PrincipalSpec::Listed { aws, service })
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The six fields of an ARN, the last one keeping its colons.
fn arn_fields(arn: &str) -> Option<[&str; 6]> {
    let mut it = arn.splitn(6, ':');
    let fields = [
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    ];
    (fields[0] == "arn").then_some(fields)
}

fn parse_aws_principal(s: &str) -> Option<AwsPrincipal> {
    if s == "*" {
        return Some(AwsPrincipal::Any);
    }
    if is_account_id(s) {
        return Some(AwsPrincipal::Account(s.to_string()));
    }
    // Only the bare "*" is a wildcard principal; IAM rejects wildcards inside ARNs.
    if s.contains(['*', '?']) {
        return None;
    }
    let [_, partition, service, region, account, resource] = arn_fields(s)?;
    if partition.is_empty() || !region.is_empty() || !is_account_id(account) {
        return None;
    }
    let named = |prefix: &str| {
        resource
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.ends_with('/'))
    };
    match service {
        "iam" if resource == "root" => Some(AwsPrincipal::Account(account.to_string())),
        "iam" if named("user/") || named("role/") => Some(AwsPrincipal::Arn(s.to_string())),
        "sts" if named("assumed-role/") || named("federated-user/") => {
            Some(AwsPrincipal::Arn(s.to_string()))
        }
        _ => None,
    }
}

impl PrincipalSpec {
    fn matches(&self, who: &TrustPrincipal<'_>) -> bool {
        let (aws, service) = match self {
            PrincipalSpec::Everyone => return true,
            PrincipalSpec::Listed { aws, service } => (aws, service),
        };
        match who {
            TrustPrincipal::Service(name) => {
                service.iter().any(|s| s.eq_ignore_ascii_case(name))
                    || aws.iter().any(|p| matches!(p, AwsPrincipal::Any))
            }
            TrustPrincipal::Aws { arn, account } => aws.iter().any(|p| match p {
                AwsPrincipal::Any => true,
                AwsPrincipal::Account(id) => id == account,
                AwsPrincipal::Arn(listed) => listed == arn || role_session_of(listed, arn),
            }),
        }
    }
}

/// Whether `caller` is a session of the role `role_arn`: a trust policy naming a role also
/// trusts that role's sessions (role chaining), whose ARNs drop the role's path.
fn role_session_of(role_arn: &str, caller: &str) -> bool {
    let (Some(role), Some(session)) = (arn_fields(role_arn), arn_fields(caller)) else {
        return false;
    };
    if role[2] != "iam" || session[2] != "sts" || role[4] != session[4] {
        return false;
    }
    let (Some(role_path), Some(session_rest)) = (
        role[5].strip_prefix("role/"),
        session[5].strip_prefix("assumed-role/"),
    ) else {
        return false;
    };
    let role_name = role_path.rsplit('/').next().unwrap_or_default();
    let session_role = session_rest.split('/').next().unwrap_or_default();
    !role_name.is_empty() && role_name == session_role
}

// ---------------------------------------------------------------------------------------------
// Wildcard patterns and policy variables

/// How a pattern's literal text is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    /// Actions: ASCII-lowercased, compared ASCII-case-insensitively (action names are ASCII).
    Ascii,
    /// `...IgnoreCase` operators: Unicode-lowercased, compared against a lowercased value.
    Unicode,
}

#[derive(Debug, Clone)]
enum Tok {
    Lit(String),
    /// `*`: any run of characters, `:` and `/` included.
    Star,
    /// `?`: exactly one character.
    One,
    Var(Var),
}

/// `${key}` or `${key, 'default'}`.
#[derive(Debug, Clone)]
struct Var {
    /// Lowercased, like the context's keys.
    key: String,
    default: Option<String>,
}

#[derive(Debug, Clone)]
struct Pattern {
    toks: Vec<Tok>,
    has_vars: bool,
}

impl Pattern {
    /// Compiles `src`: with `wildcards`, `*` and `?` match; with `vars` (version 2012-10-17),
    /// `${...}` is a policy variable and `${*}`, `${?}`, `${$}` are the literal characters.
    fn compile(src: &str, wildcards: bool, vars: bool, case: Case) -> Pattern {
        let mut toks: Vec<Tok> = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(c) = rest.chars().next() {
            if vars && rest.starts_with("${") {
                if let Some(end) = rest.find('}') {
                    let inner = rest[2..end].trim();
                    rest = &rest[end + 1..];
                    match inner {
                        "*" | "?" | "$" => lit.push_str(inner),
                        _ => {
                            flush(&mut toks, &mut lit, case);
                            toks.push(Tok::Var(parse_var(inner)));
                        }
                    }
                    continue;
                }
            }
            rest = &rest[c.len_utf8()..];
            match c {
                '*' if wildcards => {
                    flush(&mut toks, &mut lit, case);
                    // Consecutive stars match what one star matches.
                    if !matches!(toks.last(), Some(Tok::Star)) {
                        toks.push(Tok::Star);
                    }
                }
                '?' if wildcards => {
                    flush(&mut toks, &mut lit, case);
                    toks.push(Tok::One);
                }
                _ => lit.push(c),
            }
        }
        flush(&mut toks, &mut lit, case);
        let has_vars = toks.iter().any(|t| matches!(t, Tok::Var(_)));
        Pattern { toks, has_vars }
    }

    /// Whether `text` matches. `ci`: ASCII-case-insensitive (actions). `lower_vars`: lowercase
    /// substituted variable values (for the `...IgnoreCase` operators).
    fn is_match(&self, text: &str, ci: bool, ctx: &RequestContext, lower_vars: bool) -> bool {
        if !self.has_vars {
            return match_toks(&self.toks, text, ci);
        }
        match self.resolve(ctx, lower_vars) {
            Some(toks) => match_toks(&toks, text, ci),
            // A variable with no value (and no default) matches nothing, as in IAM.
            None => false,
        }
    }

    /// The pattern with its variables replaced by the request's values; `None` when one has no
    /// value, or several (multivalued keys cannot be variables).
    fn resolve(&self, ctx: &RequestContext, lower: bool) -> Option<Vec<Tok>> {
        let mut out: Vec<Tok> = Vec::with_capacity(self.toks.len());
        for tok in &self.toks {
            let text: Cow<'_, str> = match tok {
                Tok::Var(var) => match (ctx.get_lower(&var.key), &var.default) {
                    (Some([one]), _) => Cow::Borrowed(one.as_str()),
                    (_, Some(default)) => Cow::Borrowed(default.as_str()),
                    _ => return None,
                },
                Tok::Lit(l) => Cow::Borrowed(l.as_str()),
                other => {
                    out.push(other.clone());
                    continue;
                }
            };
            let text = if lower && matches!(tok, Tok::Var(_)) {
                Cow::Owned(text.to_lowercase())
            } else {
                text
            };
            match out.last_mut() {
                Some(Tok::Lit(prev)) => prev.push_str(&text),
                _ => out.push(Tok::Lit(text.into_owned())),
            }
        }
        Some(out)
    }
}

fn flush(toks: &mut Vec<Tok>, lit: &mut String, case: Case) {
    if lit.is_empty() {
        return;
    }
    let text = std::mem::take(lit);
    let text = match case {
        Case::Keep => text,
        Case::Ascii => text.to_ascii_lowercase(),
        Case::Unicode => text.to_lowercase(),
    };
    toks.push(Tok::Lit(text));
}

fn parse_var(inner: &str) -> Var {
    // `${key, 'default'}`: the default is quoted, a doubled quote standing for one.
    let (key, default) = match inner.split_once(',') {
        Some((key, rest)) => {
            let rest = rest.trim();
            let default = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .map(|d| d.replace("''", "'"));
            (key.trim(), default)
        }
        None => (inner, None),
    };
    Var {
        key: key.to_lowercase(),
        default,
    }
}

fn lit_at(text: &[u8], at: usize, lit: &[u8], ci: bool) -> bool {
    match text.get(at..at + lit.len()) {
        Some(window) if ci => window.eq_ignore_ascii_case(lit),
        Some(window) => window == lit,
        None => false,
    }
}

/// Length of the UTF-8 character starting with byte `b`.
fn utf8_len(b: u8) -> usize {
    match b {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn match_toks(toks: &[Tok], text: &str, ci: bool) -> bool {
    // The shapes nearly every policy uses, without the general matcher's bookkeeping.
    match toks {
        [] => text.is_empty(),
        [Tok::Star] => true,
        [Tok::Lit(l)] => l.len() == text.len() && lit_at(text.as_bytes(), 0, l.as_bytes(), ci),
        [Tok::Lit(l), Tok::Star] => lit_at(text.as_bytes(), 0, l.as_bytes(), ci),
        _ => wild_match(toks, text.as_bytes(), ci),
    }
}

/// Glob matching with backtracking to the last `*` only, which is enough because a later star
/// can absorb anything an earlier one could: linear in practice, no allocation. Literals are
/// valid UTF-8 and compared bytewise (ASCII-folded when `ci`), so positions stay on character
/// boundaries and `?` always steps over a whole character.
fn wild_match(toks: &[Tok], text: &[u8], ci: bool) -> bool {
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        if let Some(tok) = toks.get(pi) {
            match tok {
                Tok::Star => {
                    pi += 1;
                    backtrack = Some((pi, ti));
                    continue;
                }
                Tok::One if ti < text.len() => {
                    ti += utf8_len(text[ti]);
                    pi += 1;
                    continue;
                }
                Tok::Lit(l) if lit_at(text, ti, l.as_bytes(), ci) => {
                    ti += l.len();
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        } else if ti == text.len() {
            return true;
        }
        match backtrack {
            Some((after_star, from)) if from < text.len() => {
                let next = from + utf8_len(text[from]);
                backtrack = Some((after_star, next));
                pi = after_star;
                ti = next;
            }
            _ => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    /// No prefix: the key's value (any of them, for a multivalued key) against the policy's.
    Single,
    /// `ForAnyValue:`: at least one of the request's values satisfies the operator.
    AnyValue,
    /// `ForAllValues:`: every one of the request's values does (true for none).
    AllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Cmp::Eq => request == policy,
            Cmp::Lt => request < policy,
            Cmp::Le => request <= policy,
            Cmp::Gt => request > policy,
            Cmp::Ge => request >= policy,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Str {
        ignore_case: bool,
        /// Equals operators compile without wildcards, so one matcher serves both.
        values: Vec<Pattern>,
    },
    Num {
        cmp: Cmp,
        values: Vec<f64>,
    },
    Date {
        cmp: Cmp,
        /// Milliseconds since the epoch.
        values: Vec<i64>,
    },
    Bool(Vec<String>),
    Binary(Vec<String>),
    Ip(Vec<IpNet>),
    Arn(Vec<ArnPattern>),
    /// `true` means "the key is absent".
    Null(Vec<bool>),
}

#[derive(Debug, Clone)]
struct Condition {
    set: SetOp,
    if_exists: bool,
    /// The `Not...` operators: true when the positive operator is false.
    negated: bool,
    /// Lowercased.
    key: String,
    op: Op,
}

const OPERATORS: [&str; 27] = [
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Null",
];

/// Splits `ForAnyValue:StringLikeIfExists` into its set prefix, base operator and suffix.
fn parse_operator(name: &str) -> Option<(SetOp, &str, bool)> {
    let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (SetOp::AnyValue, r)
    } else if let Some(r) = name.strip_prefix("ForAllValues:") {
        (SetOp::AllValues, r)
    } else {
        (SetOp::Single, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    // IAM allows IfExists on every operator but Null, which is itself an existence test.
    if base == "Null" && if_exists {
        return None;
    }
    OPERATORS.contains(&base).then_some((set, base, if_exists))
}

fn parse_conditions(v: &Value, vars: bool) -> Result<Vec<Condition>, String> {
    let block = v.as_object().ok_or_else(syntax)?;
    let mut out = Vec::new();
    for (operator, keys) in block {
        let keys = keys.as_object().ok_or_else(syntax)?;
        let (set, base, if_exists) = parse_operator(operator)
            .ok_or_else(|| format!("Invalid Condition type : {operator}"))?;
        for (key, values) in keys {
            let values = condition_values(values)?;
            let (negated, op) = build_op(base, &values, vars)?;
            out.push(Condition {
                set,
                if_exists,
                negated,
                key: key.to_lowercase(),
                op,
            });
        }
    }
    Ok(out)
}

/// A condition's values: strings, numbers and booleans, alone or in a list, all read as text.
fn condition_values(v: &Value) -> Result<Vec<String>, String> {
    fn scalar(v: &Value) -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(syntax()),
        }
    }
    match v {
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

fn build_op(base: &str, values: &[String], vars: bool) -> Result<(bool, Op), String> {
    let strings = |like: bool, case: Case| Op::Str {
        ignore_case: case == Case::Unicode,
        values: values
            .iter()
            .map(|v| Pattern::compile(v, like, vars, case))
            .collect(),
    };
    // Unreadable numbers never match, like values of the wrong type in IAM.
    let numbers = |cmp: Cmp| Op::Num {
        cmp,
        values: values
            .iter()
            .map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN))
            .collect(),
    };
    let dates = |cmp: Cmp| -> Result<Op, String> {
        let values = values
            .iter()
            .map(|v| parse_date_millis(v).ok_or_else(|| LEGACY_ERROR.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Op::Date { cmp, values })
    };
    let ips = || -> Result<Op, String> {
        values
            .iter()
            .map(|v| IpNet::parse(v).ok_or_else(syntax))
            .collect::<Result<_, _>>()
            .map(Op::Ip)
    };
    let arns = || {
        Op::Arn(
            values
                .iter()
                .map(|v| ArnPattern::compile(v, vars))
                .collect(),
        )
    };
    Ok(match base {
        "StringEquals" => (false, strings(false, Case::Keep)),
        "StringNotEquals" => (true, strings(false, Case::Keep)),
        "StringEqualsIgnoreCase" => (false, strings(false, Case::Unicode)),
        "StringNotEqualsIgnoreCase" => (true, strings(false, Case::Unicode)),
        "StringLike" => (false, strings(true, Case::Keep)),
        "StringNotLike" => (true, strings(true, Case::Keep)),
        "NumericEquals" => (false, numbers(Cmp::Eq)),
        "NumericNotEquals" => (true, numbers(Cmp::Eq)),
        "NumericLessThan" => (false, numbers(Cmp::Lt)),
        "NumericLessThanEquals" => (false, numbers(Cmp::Le)),
        "NumericGreaterThan" => (false, numbers(Cmp::Gt)),
        "NumericGreaterThanEquals" => (false, numbers(Cmp::Ge)),
        "DateEquals" => (false, dates(Cmp::Eq)?),
        "DateNotEquals" => (true, dates(Cmp::Eq)?),
        "DateLessThan" => (false, dates(Cmp::Lt)?),
        "DateLessThanEquals" => (false, dates(Cmp::Le)?),
        "DateGreaterThan" => (false, dates(Cmp::Gt)?),
        "DateGreaterThanEquals" => (false, dates(Cmp::Ge)?),
        "Bool" => (
            false,
            Op::Bool(values.iter().map(|v| v.to_ascii_lowercase()).collect()),
        ),
        "BinaryEquals" => (false, Op::Binary(values.to_vec())),
        "IpAddress" => (false, ips()?),
        "NotIpAddress" => (true, ips()?),
        // IAM documents ArnEquals and ArnLike as the same operator (both take wildcards).
        "ArnEquals" | "ArnLike" => (false, arns()),
        "ArnNotEquals" | "ArnNotLike" => (true, arns()),
        "Null" => (
            false,
            Op::Null(
                values
                    .iter()
                    .filter_map(|v| match v.to_ascii_lowercase().as_str() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    })
                    .collect(),
            ),
        ),
        other => return Err(format!("Invalid Condition type : {other}")),
    })
}

impl Condition {
    fn holds(&self, ctx: &RequestContext) -> bool {
        let values = ctx.values(&self.key);
        if let Op::Null(wants_absent) = &self.op {
            let absent = values.is_none();
            return wants_absent.contains(&absent);
        }
        let Some(values) = values else {
            // IAM: an absent key fails a positive operator and satisfies a negated one;
            // IfExists makes it pass; ForAllValues over nothing is true, ForAnyValue false.
            return match self.set {
                SetOp::AllValues => true,
                _ if self.if_exists => true,
                SetOp::AnyValue => false,
                SetOp::Single => self.negated,
            };
        };
        match self.set {
            SetOp::Single => values.iter().any(|v| self.op.positive(v, ctx)) != self.negated,
            SetOp::AnyValue => values
                .iter()
                .any(|v| self.op.positive(v, ctx) != self.negated),
            SetOp::AllValues => values
                .iter()
                .all(|v| self.op.positive(v, ctx) != self.negated),
        }
    }
}

impl Op {
    /// Whether one request value matches any of the policy's values under the operator's
    /// positive form (negation is the caller's).
    fn positive(&self, value: &str, ctx: &RequestContext) -> bool {
        match self {
            Op::Str {
                ignore_case: false,
                values,
            } => values.iter().any(|p| p.is_match(value, false, ctx, false)),
            Op::Str {
                ignore_case: true,
                values,
            } => {
                let lowered = value.to_lowercase();
                values
                    .iter()
                    .any(|p| p.is_match(&lowered, false, ctx, true))
            }
            Op::Num { cmp, values } => match value.trim().parse::<f64>() {
                Ok(n) => values.iter().any(|p| cmp.holds(n, *p)),
                Err(_) => false,
            },
            Op::Date { cmp, values } => match parse_date_millis(value) {
                Some(t) => values.iter().any(|p| cmp.holds(t, *p)),
                None => false,
            },
            Op::Bool(values) => values.iter().any(|p| p.eq_ignore_ascii_case(value.trim())),
            Op::Binary(values) => values.iter().any(|p| p == value),
            Op::Ip(nets) => match parse_ip(value) {
                Some(ip) => nets.iter().any(|n| n.contains(ip)),
                None => false,
            },
            Op::Arn(values) => values.iter().any(|p| p.is_match(value, ctx)),
            Op::Null(_) => false,
        }
    }
}

/// ARN operators compare the six colon-separated fields one by one, so a wildcard in one field
/// never spills into the next.
#[derive(Debug, Clone)]
enum ArnPattern {
    Fields(Vec<Pattern>),
    /// A value that is not a six-field ARN is matched as a whole.
    Whole(Pattern),
}

impl ArnPattern {
    fn compile(src: &str, vars: bool) -> ArnPattern {
        let fields = split_arn_pattern(src, vars);
        if fields.len() == 6 {
            ArnPattern::Fields(
                fields
                    .iter()
                    .map(|f| Pattern::compile(f, true, vars, Case::Keep))
                    .collect(),
            )
        } else {
            ArnPattern::Whole(Pattern::compile(src, true, vars, Case::Keep))
        }
    }

    fn is_match(&self, value: &str, ctx: &RequestContext) -> bool {
        match self {
            ArnPattern::Whole(p) => p.is_match(value, false, ctx, false),
            ArnPattern::Fields(fields) => {
                let mut parts = value.splitn(6, ':');
                fields.iter().all(|f| match parts.next() {
                    Some(part) => f.is_match(part, false, ctx, false),
                    None => false,
                })
            }
        }
    }
}

/// Splits at the first five colons, skipping those inside `${aws:...}` variables.
fn split_arn_pattern(src: &str, vars: bool) -> Vec<&str> {
    let mut out = Vec::with_capacity(6);
    let mut start = 0;
    let mut in_var = false;
    let bytes = src.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if out.len() == 5 {
            break;
        }
        match b {
            b'$' if vars && bytes.get(i + 1) == Some(&b'{') => in_var = true,
            b'}' if in_var => in_var = false,
            b':' if !in_var => {
                out.push(&src[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&src[start..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Dates, numbers, addresses

/// Milliseconds since the epoch of an ISO 8601 date (`2026-01-01`, `2026-01-01T00:00:00Z`,
/// `...T00:00:00.5+02:00`) or of epoch seconds (`1767225600`), the forms IAM accepts.
fn parse_date_millis(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if !s.contains(['-', 'T', 't', ':']) {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let secs: i64 = int.parse().ok()?;
        return secs.checked_mul(1000)?.checked_add(fraction_millis(frac));
    }
    let (date, time) = match s.find(['T', 't']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut fields = date.split('-');
    let year = fields.next().filter(|y| y.len() == 4 && all_digits(y))?;
    let month = fields.next().filter(|m| m.len() == 2 && all_digits(m))?;
    let day = fields.next().filter(|d| d.len() == 2 && all_digits(d))?;
    if fields.next().is_some() {
        return None;
    }
    let (year, month, day): (i64, u32, u32) =
        (year.parse().ok()?, month.parse().ok()?, day.parse().ok()?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut millis = days_from_civil(year, month, day).checked_mul(86_400_000)?;
    if let Some(time) = time {
        let (clock, offset_minutes) = split_zone(time)?;
        let mut parts = clock.split(':');
        let hour = two_digits(parts.next()?)?;
        let minute = two_digits(parts.next()?)?;
        let (second, frac) = match parts.next() {
            Some(sec) => {
                let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
                if !all_digits(frac) {
                    return None;
                }
                (two_digits(whole)?, fraction_millis(frac))
            }
            None => (0, 0),
        };
        if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        millis += ((hour * 60 + minute) * 60 + second) * 1000 + frac;
        millis -= offset_minutes * 60_000;
    }
    Some(millis)
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn two_digits(s: &str) -> Option<i64> {
    if s.len() == 2 && all_digits(s) {
        s.parse().ok()
    } else {
        None
    }
}

/// Up to millisecond precision; finer digits are dropped.
fn fraction_millis(frac: &str) -> i64 {
    frac.bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |acc, b| acc * 10 + i64::from(b - b'0'))
}

/// Splits `hh:mm:ssZ` / `hh:mm:ss+02:00` / `hh:mm:ss-0500` into the clock and the zone's offset
/// in minutes east of UTC. No zone means UTC.
fn split_zone(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let Some(i) = time.rfind(['+', '-']) else {
        return Some((time, 0));
    };
    let sign = if time.as_bytes()[i] == b'-' { -1 } else { 1 };
    let zone = &time[i + 1..];
    let (hours, minutes) = match zone.split_once(':') {
        Some((h, m)) => (two_digits(h)?, two_digits(m)?),
        None if zone.len() == 4 => (two_digits(&zone[..2])?, two_digits(&zone[2..])?),
        None => (two_digits(zone)?, 0),
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((&time[..i], sign * (hours * 60 + minutes)))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An IPv4 or IPv6 network; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy)]
enum IpNet {
    V4 { net: u32, prefix: u32 },
    V6 { net: u128, prefix: u32 },
}

impl IpNet {
    fn parse(s: &str) -> Option<IpNet> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, p)) if !p.is_empty() && all_digits(p) => (addr, Some(p.parse().ok()?)),
            Some(_) => return None,
            None => (s, None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let prefix = prefix.unwrap_or(32);
                (prefix <= 32).then(|| IpNet::V4 {
                    net: u32::from(a) & mask32(prefix),
                    prefix,
                })
            }
            IpAddr::V6(a) => {
                let prefix = prefix.unwrap_or(128);
                (prefix <= 128).then(|| IpNet::V6 {
                    net: u128::from(a) & mask128(prefix),
                    prefix,
                })
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpNet::V4 { net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask32(*prefix) == *net,
            (IpNet::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask128(*prefix) == *net,
            _ => false,
        }
    }
}

fn mask32(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask128(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// A request's source address. IPv4 clients of a dual-stack listener show up as IPv4-mapped
/// IPv6 addresses; they are compared as the IPv4 addresses they are.
fn parse_ip(s: &str) -> Option<IpAddr> {
    match s.trim().parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
        ),
        v4 => Some(v4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "000000000000";
    const CLUSTER: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/prod";

    fn identity(json: &str) -> PolicyDocument {
        match PolicyDocument::parse(json, PolicyKind::Identity) {
            Ok(doc) => doc,
            Err(e) => panic!("policy rejected: {e}\n{json}"),
        }
    }

    fn trust(json: &str) -> PolicyDocument {
        match PolicyDocument::parse(json, PolicyKind::Trust) {
            Ok(doc) => doc,
            Err(e) => panic!("trust policy rejected: {e}\n{json}"),
        }
    }

    fn err(json: &str, kind: PolicyKind) -> String {
        match PolicyDocument::parse(json, kind) {
            Ok(_) => panic!("policy accepted: {json}"),
            Err(e) => e,
        }
    }

    fn decide(
        doc: &PolicyDocument,
        action: &str,
        resource: &str,
        ctx: &RequestContext,
    ) -> Decision {
        evaluate([doc], action, resource, ctx)
    }

    /// An Allow of everything with one condition block, for condition tests.
    fn with_condition(condition: &str) -> PolicyDocument {
        identity(&format!(
            r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{condition}}}}}"#
        ))
    }

    fn holds(condition: &str, ctx: &RequestContext) -> bool {
        decide(&with_condition(condition), "ecs:ListClusters", "*", ctx) == Decision::Allow
    }

    fn ctx(pairs: &[(&str, &str)]) -> RequestContext {
        let mut c = RequestContext::new();
        for (k, v) in pairs {
            c.set(k, *v);
        }
        c
    }

    #[test]
    fn allow_by_action_wildcard() {
        let doc = identity(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List?asks"],"Resource":"*"}]}"#,
        );
        let c = RequestContext::new();
        assert_eq!(
            decide(&doc, "ecs:DescribeClusters", CLUSTER, &c),
            Decision::Allow
        );
        // Actions are case-insensitive, on both sides.
        assert_eq!(
            decide(&doc, "ECS:describeservices", CLUSTER, &c),
            Decision::Allow
        );
        assert_eq!(decide(&doc, "ecs:ListTasks", CLUSTER, &c), Decision::Allow);
        assert_eq!(
            decide(&doc, "ecs:ListXXTasks", CLUSTER, &c),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&doc, "ecs:RunTask", CLUSTER, &c),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&doc, "ec2:DescribeInstances", "*", &c),
            Decision::ImplicitDeny
        );

        let all = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
        );
        assert_eq!(
            decide(
                &all,
                "iam:CreateUser",
                "arn:aws:iam::000000000000:user/x",
                &c
            ),
            Decision::Allow
        );
        let service = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*"}}"#,
        );
        assert_eq!(
            decide(&service, "ecs:RunTask", CLUSTER, &c),
            Decision::Allow
        );
        assert_eq!(
            decide(&service, "ecsx:RunTask", CLUSTER, &c),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&service, "logs:PutLogEvents", "*", &c),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn resources_match_case_sensitively_and_across_separators() {
        let doc = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":["arn:aws:ecs:*:000000000000:cluster/prod*","arn:aws:ecs:us-east-1:000000000000:task/prod/????"]}}"#,
        );
        let c = RequestContext::new();
        assert_eq!(
            decide(&doc, "ecs:DescribeClusters", CLUSTER, &c),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &doc,
                "ecs:DescribeClusters",
                "arn:aws:ecs:eu-west-1:000000000000:cluster/prod-2",
                &c
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &doc,
                "ecs:DescribeClusters",
                "arn:aws:ecs:us-east-1:000000000000:cluster/Prod",
                &c
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &doc,
                "ecs:StopTask",
                "arn:aws:ecs:us-east-1:000000000000:task/prod/abcd",
                &c
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &doc,
                "ecs:StopTask",
                "arn:aws:ecs:us-east-1:000000000000:task/prod/abcde",
                &c
            ),
            Decision::ImplicitDeny
        );
        // "*" spans ':' and '/'.
        let wide = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*"}}"#,
        );
        assert_eq!(
            decide(
                &wide,
                "ecs:StopTask",
                "arn:aws:ecs:us-east-1:000000000000:task/prod/abcd",
                &c
            ),
            Decision::Allow
        );
    }

    #[test]
    fn deny_by_resource_and_explicit_deny_beats_allow() {
        let allow = identity(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*"}}"#,
        );
        let deny = identity(&format!(
            r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"{CLUSTER}"}}}}"#
        ));
        let c = RequestContext::new();
        assert_eq!(
            evaluate([&allow, &deny], "ecs:DeleteCluster", CLUSTER, &c),
            Decision::ExplicitDeny
        );
        // Order does not matter.
        assert_eq!(
            evaluate([&deny, &allow], "ecs:DeleteCluster", CLUSTER, &c),
            Decision::ExplicitDeny
        );
        let other = "arn:aws:ecs:us-east-1:000000000000:cluster/dev";
        assert_eq!(
            evaluate([&allow, &deny], "ecs:DeleteCluster", other, &c),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&deny], "ecs:DeleteCluster", CLUSTER, &c),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate([&deny], "ecs:DeleteCluster", other, &c),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(Vec::<&PolicyDocument>::new(), "ecs:ListClusters", "*", &c),
            Decision::ImplicitDeny
        );

        // Within one document too.
        let both = identity(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"*","Resource":"*"}},{{"Effect":"Deny","Action":"ecs:*","Resource":"{CLUSTER}"}}]}}"#
        ));
        assert_eq!(
            decide(&both, "ecs:RunTask", CLUSTER, &c),
            Decision::ExplicitDeny
        );
        assert_eq!(decide(&both, "ecs:RunTask", other, &c), Decision::Allow);
    }

    #[test]
    fn not_action_and_not_resource() {
        let doc = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","NotAction":["iam:*","organizations:*"],"Resource":"*"},
                {"Effect":"Deny","Action":"ecs:*","NotResource":"arn:aws:ecs:*:*:cluster/dev*"}]}"#,
        );
        let c = RequestContext::new();
        let dev = "arn:aws:ecs:us-east-1:000000000000:cluster/dev";
        assert_eq!(
            decide(&doc, "ecs:DescribeClusters", dev, &c),
            Decision::Allow
        );
        assert_eq!(
            decide(&doc, "ecs:DescribeClusters", CLUSTER, &c),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(&doc, "iam:CreateUser", "*", &c),
            Decision::ImplicitDeny
        );
        assert_eq!(decide(&doc, "logs:GetLogEvents", "*", &c), Decision::Allow);
    }

    #[test]
    fn string_operators() {
        let c = ctx(&[("aws:username", "Alice")]);
        assert!(holds(r#"{"StringEquals":{"aws:username":"Alice"}}"#, &c));
        assert!(!holds(r#"{"StringEquals":{"aws:username":"alice"}}"#, &c));
        // StringEquals takes no wildcards.
        assert!(!holds(r#"{"StringEquals":{"aws:username":"A*"}}"#, &c));
        assert!(holds(
            r#"{"StringEquals":{"aws:username":["bob","Alice"]}}"#,
            &c
        ));
        assert!(holds(r#"{"StringNotEquals":{"aws:username":"bob"}}"#, &c));
        assert!(!holds(
            r#"{"StringNotEquals":{"aws:username":["bob","Alice"]}}"#,
            &c
        ));
        assert!(holds(
            r#"{"StringEqualsIgnoreCase":{"aws:username":"ALICE"}}"#,
            &c
        ));
        assert!(!holds(
            r#"{"StringNotEqualsIgnoreCase":{"aws:username":"aLiCe"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"StringNotEqualsIgnoreCase":{"aws:username":"bob"}}"#,
            &c
        ));
        assert!(holds(r#"{"StringLike":{"aws:username":"Al*"}}"#, &c));
        assert!(holds(r#"{"StringLike":{"aws:username":"?lic?"}}"#, &c));
        assert!(!holds(r#"{"StringLike":{"aws:username":"al*"}}"#, &c));
        assert!(holds(r#"{"StringNotLike":{"aws:username":"B*"}}"#, &c));
        assert!(!holds(r#"{"StringNotLike":{"aws:username":"*ice"}}"#, &c));
        // Key names are case-insensitive, on both sides.
        assert!(holds(r#"{"StringEquals":{"AWS:UserName":"Alice"}}"#, &c));
        let mut upper = RequestContext::new();
        upper.set("AWS:USERNAME", "Alice");
        assert!(holds(
            r#"{"StringEquals":{"aws:username":"Alice"}}"#,
            &upper
        ));
        assert_eq!(upper.get("Aws:UserName"), Some(&["Alice".to_string()][..]));
    }

    #[test]
    fn numeric_operators() {
        let c = ctx(&[("s3:max-keys", "10")]);
        assert!(holds(r#"{"NumericEquals":{"s3:max-keys":"10"}}"#, &c));
        assert!(holds(r#"{"NumericEquals":{"s3:max-keys":10}}"#, &c));
        assert!(holds(r#"{"NumericEquals":{"s3:max-keys":"10.0"}}"#, &c));
        assert!(!holds(r#"{"NumericNotEquals":{"s3:max-keys":"10"}}"#, &c));
        assert!(holds(r#"{"NumericNotEquals":{"s3:max-keys":"11"}}"#, &c));
        assert!(holds(r#"{"NumericLessThan":{"s3:max-keys":"11"}}"#, &c));
        assert!(!holds(r#"{"NumericLessThan":{"s3:max-keys":"10"}}"#, &c));
        assert!(holds(
            r#"{"NumericLessThanEquals":{"s3:max-keys":"10"}}"#,
            &c
        ));
        assert!(holds(r#"{"NumericGreaterThan":{"s3:max-keys":"9.5"}}"#, &c));
        assert!(!holds(r#"{"NumericGreaterThan":{"s3:max-keys":"10"}}"#, &c));
        assert!(holds(
            r#"{"NumericGreaterThanEquals":{"s3:max-keys":"10"}}"#,
            &c
        ));
        // A value that is not a number matches nothing.
        assert!(!holds(r#"{"NumericEquals":{"s3:max-keys":"ten"}}"#, &c));
        assert!(!holds(
            r#"{"NumericEquals":{"s3:max-keys":"10"}}"#,
            &ctx(&[("s3:max-keys", "x")])
        ));
    }

    #[test]
    fn date_operators() {
        let c = ctx(&[("aws:CurrentTime", "2026-03-01T12:00:00Z")]);
        assert!(holds(
            r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateLessThan":{"aws:CurrentTime":"2027-01-01"}}"#,
            &c
        ));
        assert!(!holds(
            r#"{"DateLessThan":{"aws:CurrentTime":"2026-03-01T12:00:00Z"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateLessThanEquals":{"aws:CurrentTime":"2026-03-01T12:00:00Z"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2026-03-01T12:00:00Z"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateEquals":{"aws:CurrentTime":"2026-03-01T14:00:00+02:00"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateEquals":{"aws:CurrentTime":"2026-03-01T07:00:00.000-0500"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateNotEquals":{"aws:CurrentTime":"2026-03-01T12:00:01Z"}}"#,
            &c
        ));
        // Epoch seconds, on either side: 2026-03-01T12:00:00Z is 1772366400.
        assert!(holds(
            r#"{"DateEquals":{"aws:CurrentTime":"1772366400"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"DateEquals":{"aws:CurrentTime":1772366400}}"#,
            &c
        ));
        let epoch = ctx(&[("aws:EpochTime", "1772366400")]);
        assert!(holds(
            r#"{"DateEquals":{"aws:EpochTime":"2026-03-01T12:00:00Z"}}"#,
            &epoch
        ));
        assert_eq!(parse_date_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date_millis("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse_date_millis("2001-02-29"), None);
        assert_eq!(parse_date_millis("2026-01-01T24:00:00Z"), None);
        assert_eq!(parse_date_millis("1.5"), Some(1500));
    }

    #[test]
    fn bool_and_binary_operators() {
        let c = ctx(&[("aws:SecureTransport", "true"), ("kms:Blob", "QmluYXJ5")]);
        assert!(holds(r#"{"Bool":{"aws:SecureTransport":"true"}}"#, &c));
        assert!(holds(r#"{"Bool":{"aws:SecureTransport":true}}"#, &c));
        assert!(!holds(r#"{"Bool":{"aws:SecureTransport":"false"}}"#, &c));
        assert!(holds(
            r#"{"Bool":{"aws:SecureTransport":"false"}}"#,
            &ctx(&[("aws:SecureTransport", "False")])
        ));
        assert!(holds(r#"{"BinaryEquals":{"kms:Blob":"QmluYXJ5"}}"#, &c));
        assert!(!holds(r#"{"BinaryEquals":{"kms:Blob":"qmluyxj5"}}"#, &c));
    }

    #[test]
    fn ip_operators() {
        let v4 = ctx(&[("aws:SourceIp", "203.0.113.7")]);
        assert!(holds(
            r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#,
            &v4
        ));
        assert!(holds(
            r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","203.0.113.7"]}}"#,
            &v4
        ));
        assert!(!holds(
            r#"{"IpAddress":{"aws:SourceIp":"203.0.113.8"}}"#,
            &v4
        ));
        assert!(holds(r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#, &v4));
        assert!(holds(
            r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
            &v4
        ));
        assert!(!holds(
            r#"{"NotIpAddress":{"aws:SourceIp":"203.0.0.0/16"}}"#,
            &v4
        ));
        let v6 = ctx(&[("aws:SourceIp", "2001:db8::1234")]);
        assert!(holds(
            r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#,
            &v6
        ));
        assert!(!holds(
            r#"{"IpAddress":{"aws:SourceIp":"2001:db9::/32"}}"#,
            &v6
        ));
        assert!(holds(
            r#"{"IpAddress":{"aws:SourceIp":"2001:db8::1234"}}"#,
            &v6
        ));
        assert!(!holds(r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#, &v6));
        // An IPv4 client seen through a dual-stack socket.
        let mapped = ctx(&[("aws:SourceIp", "::ffff:203.0.113.7")]);
        assert!(holds(
            r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#,
            &mapped
        ));
        // Garbage in the request matches no network.
        assert!(!holds(
            r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#,
            &ctx(&[("aws:SourceIp", "nope")])
        ));
    }

    #[test]
    fn source_ip_deny_outside_the_office() {
        let doc = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ecs:*","Resource":"*"},
                {"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","2001:db8::/32"]}}}]}"#,
        );
        let at = |ip: &str| decide(&doc, "ecs:RunTask", CLUSTER, &ctx(&[("aws:SourceIp", ip)]));
        assert_eq!(at("192.0.2.44"), Decision::Allow);
        assert_eq!(at("2001:db8::5"), Decision::Allow);
        assert_eq!(at("198.51.100.1"), Decision::ExplicitDeny);
        // No source address at all: NotIpAddress over an absent key is true, so denied.
        assert_eq!(
            decide(&doc, "ecs:RunTask", CLUSTER, &RequestContext::new()),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn arn_operators_compare_field_by_field() {
        let c = ctx(&[(
            "aws:SourceArn",
            "arn:aws:ecs:us-east-1:000000000000:service/prod/web",
        )]);
        assert!(holds(
            r#"{"ArnLike":{"aws:SourceArn":"arn:aws:ecs:*:000000000000:service/*"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"ArnEquals":{"aws:SourceArn":"arn:aws:ecs:us-east-1:000000000000:service/prod/web"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"ArnEquals":{"aws:SourceArn":"arn:aws:ecs:us-east-?:*:service/prod/*"}}"#,
            &c
        ));
        assert!(!holds(
            r#"{"ArnLike":{"aws:SourceArn":"arn:aws:ecs:us-west-2:*:*"}}"#,
            &c
        ));
        // A '*' in the region field cannot reach into the account field.
        assert!(!holds(
            r#"{"ArnLike":{"aws:SourceArn":"arn:aws:ecs:*000000000000:*:service/prod/web"}}"#,
            &c
        ));
        assert!(holds(
            r#"{"ArnNotLike":{"aws:SourceArn":"arn:aws:ecs:*:111111111111:*"}}"#,
            &c
        ));
        assert!(!holds(
            r#"{"ArnNotEquals":{"aws:SourceArn":"arn:aws:ecs:*:*:service/*"}}"#,
            &c
        ));
        // Not an ARN in the request: no match.
        assert!(!holds(
            r#"{"ArnLike":{"aws:SourceArn":"arn:aws:ecs:*:*:*"}}"#,
            &ctx(&[("aws:SourceArn", "web")])
        ));
    }

    #[test]
    fn null_operator() {
        let present = ctx(&[("aws:TokenIssueTime", "2026-01-01T00:00:00Z")]);
        let absent = RequestContext::new();
        assert!(holds(r#"{"Null":{"aws:TokenIssueTime":"true"}}"#, &absent));
        assert!(!holds(
            r#"{"Null":{"aws:TokenIssueTime":"true"}}"#,
            &present
        ));
        assert!(holds(
            r#"{"Null":{"aws:TokenIssueTime":"false"}}"#,
            &present
        ));
        assert!(holds(r#"{"Null":{"aws:TokenIssueTime":false}}"#, &present));
        assert!(!holds(
            r#"{"Null":{"aws:TokenIssueTime":"false"}}"#,
            &absent
        ));
        let mut empty = RequestContext::new();
        empty.set_many("aws:TagKeys", Vec::new());
        assert!(holds(r#"{"Null":{"aws:TagKeys":"true"}}"#, &empty));
    }

    #[test]
    fn absent_keys_fail_positive_operators_and_satisfy_negated_ones() {
        let none = RequestContext::new();
        for positive in [
            r#"{"StringEquals":{"k:x":"a"}}"#,
            r#"{"StringLike":{"k:x":"*"}}"#,
            r#"{"StringEqualsIgnoreCase":{"k:x":"a"}}"#,
            r#"{"NumericLessThan":{"k:x":"1"}}"#,
            r#"{"DateGreaterThan":{"k:x":"2020-01-01"}}"#,
            r#"{"Bool":{"k:x":"true"}}"#,
            r#"{"BinaryEquals":{"k:x":"AA=="}}"#,
            r#"{"IpAddress":{"k:x":"0.0.0.0/0"}}"#,
            r#"{"ArnLike":{"k:x":"*"}}"#,
            r#"{"ArnEquals":{"k:x":"*"}}"#,
        ] {
            assert!(!holds(positive, &none), "{positive}");
        }
        for negated in [
            r#"{"StringNotEquals":{"k:x":"a"}}"#,
            r#"{"StringNotLike":{"k:x":"*"}}"#,
            r#"{"StringNotEqualsIgnoreCase":{"k:x":"a"}}"#,
            r#"{"NumericNotEquals":{"k:x":"1"}}"#,
            r#"{"DateNotEquals":{"k:x":"2020-01-01"}}"#,
            r#"{"NotIpAddress":{"k:x":"0.0.0.0/0"}}"#,
            r#"{"ArnNotEquals":{"k:x":"*"}}"#,
            r#"{"ArnNotLike":{"k:x":"*"}}"#,
        ] {
            assert!(holds(negated, &none), "{negated}");
        }
    }

    #[test]
    fn if_exists_passes_absent_keys_and_checks_present_ones() {
        let none = RequestContext::new();
        let dev = ctx(&[(
            "ecs:cluster",
            "arn:aws:ecs:us-east-1:000000000000:cluster/dev",
        )]);
        let prod = ctx(&[("ecs:cluster", CLUSTER)]);
        let cond = format!(r#"{{"StringEqualsIfExists":{{"ecs:cluster":"{CLUSTER}"}}}}"#);
        assert!(holds(&cond, &none));
        assert!(holds(&cond, &prod));
        assert!(!holds(&cond, &dev));
        assert!(holds(r#"{"NumericLessThanIfExists":{"k:n":"5"}}"#, &none));
        assert!(holds(
            r#"{"BoolIfExists":{"aws:MultiFactorAuthPresent":"true"}}"#,
            &none
        ));
        assert!(!holds(
            r#"{"BoolIfExists":{"aws:MultiFactorAuthPresent":"true"}}"#,
            &ctx(&[("aws:MultiFactorAuthPresent", "false")])
        ));
        assert!(holds(
            r#"{"ArnLikeIfExists":{"aws:SourceArn":"arn:aws:ecs:*:*:*"}}"#,
            &none
        ));
        assert!(holds(r#"{"StringNotLikeIfExists":{"k:x":"a*"}}"#, &none));
        assert!(!holds(
            r#"{"StringNotLikeIfExists":{"k:x":"a*"}}"#,
            &ctx(&[("k:x", "abc")])
        ));
    }

    #[test]
    fn set_operators_for_multivalued_keys() {
        let mut tags = RequestContext::new();
        tags.set_many("aws:TagKeys", vec!["team".into(), "env".into()]);
        let mut one_bad = RequestContext::new();
        one_bad.set_many("aws:TagKeys", vec!["team".into(), "secret".into()]);
        let mut empty = RequestContext::new();
        empty.set_many("aws:TagKeys", Vec::new());
        let none = RequestContext::new();

        let all = r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["team","env","owner"]}}"#;
        assert!(holds(all, &tags));
        assert!(!holds(all, &one_bad));
        assert!(holds(all, &empty), "ForAllValues over an empty set is true");
        assert!(holds(all, &none), "ForAllValues over an absent key is true");

        let any = r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["secret","owner"]}}"#;
        assert!(!holds(any, &tags));
        assert!(holds(any, &one_bad));
        assert!(!holds(any, &empty));
        assert!(!holds(any, &none));
        assert!(holds(
            r#"{"ForAnyValue:StringEqualsIfExists":{"aws:TagKeys":"x"}}"#,
            &none
        ));

        // Negated operators under a set prefix apply per value.
        let all_not = r#"{"ForAllValues:StringNotLike":{"aws:TagKeys":"sec*"}}"#;
        assert!(holds(all_not, &tags));
        assert!(!holds(all_not, &one_bad));
        assert!(holds(all_not, &none));
        let any_not = r#"{"ForAnyValue:StringNotEquals":{"aws:TagKeys":"team"}}"#;
        assert!(holds(any_not, &tags));
        let mut only_team = RequestContext::new();
        only_team.set_many("aws:TagKeys", vec!["team".into()]);
        assert!(!holds(any_not, &only_team));
        assert!(holds(
            r#"{"ForAnyValue:StringLike":{"aws:TagKeys":"e?v"}}"#,
            &tags
        ));

        // Without a prefix, a multivalued key matches when any value does.
        assert!(holds(r#"{"StringEquals":{"aws:TagKeys":"env"}}"#, &tags));
        assert!(!holds(
            r#"{"StringNotEquals":{"aws:TagKeys":"env"}}"#,
            &tags
        ));
    }

    #[test]
    fn keys_and_operators_are_anded_values_ored() {
        let cond = r#"{"StringEquals":{"aws:username":["alice","bob"],"aws:RequestedRegion":"us-east-1"},"Bool":{"aws:SecureTransport":"true"}}"#;
        let full = ctx(&[
            ("aws:username", "bob"),
            ("aws:RequestedRegion", "us-east-1"),
            ("aws:SecureTransport", "true"),
        ]);
        assert!(holds(cond, &full));
        let wrong_region = ctx(&[
            ("aws:username", "bob"),
            ("aws:RequestedRegion", "eu-west-1"),
            ("aws:SecureTransport", "true"),
        ]);
        assert!(!holds(cond, &wrong_region));
        let insecure = ctx(&[
            ("aws:username", "alice"),
            ("aws:RequestedRegion", "us-east-1"),
            ("aws:SecureTransport", "false"),
        ]);
        assert!(!holds(cond, &insecure));
        let stranger = ctx(&[
            ("aws:username", "carol"),
            ("aws:RequestedRegion", "us-east-1"),
            ("aws:SecureTransport", "true"),
        ]);
        assert!(!holds(cond, &stranger));
    }

    #[test]
    fn ecs_cluster_condition_with_an_arn() {
        let doc = identity(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["ecs:RunTask","ecs:StartTask"],"Resource":"*","Condition":{{"StringEquals":{{"ecs:cluster":"{CLUSTER}"}}}}}}]}}"#
        ));
        let task_def = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3";
        assert_eq!(
            decide(
                &doc,
                "ecs:RunTask",
                task_def,
                &ctx(&[("ecs:cluster", CLUSTER)])
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &doc,
                "ecs:RunTask",
                task_def,
                &ctx(&[(
                    "ecs:cluster",
                    "arn:aws:ecs:us-east-1:000000000000:cluster/dev"
                )])
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&doc, "ecs:RunTask", task_def, &RequestContext::new()),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn policy_variables() {
        let doc = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"iam:*AccessKey*","Resource":"arn:aws:iam::000000000000:user/${aws:username}"},
                {"Effect":"Allow","Action":"logs:*","Resource":"arn:aws:logs:*:*:log-group:/home/${aws:username}/*"},
                {"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/owner":"${aws:username}"}}}]}"#,
        );
        let alice = ctx(&[("aws:username", "alice"), ("aws:RequestTag/owner", "alice")]);
        assert_eq!(
            decide(
                &doc,
                "iam:CreateAccessKey",
                "arn:aws:iam::000000000000:user/alice",
                &alice
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &doc,
                "iam:CreateAccessKey",
                "arn:aws:iam::000000000000:user/bob",
                &alice
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &doc,
                "logs:PutLogEvents",
                "arn:aws:logs:us-east-1:000000000000:log-group:/home/alice/app",
                &alice
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(&doc, "ecs:TagResource", CLUSTER, &alice),
            Decision::Allow
        );
        let mismatch = ctx(&[("aws:username", "alice"), ("aws:RequestTag/owner", "bob")]);
        assert_eq!(
            decide(&doc, "ecs:TagResource", CLUSTER, &mismatch),
            Decision::ImplicitDeny
        );
        // No aws:username (a role session): the variable has no value and matches nothing.
        let role = ctx(&[("aws:RequestTag/owner", "${aws:username}")]);
        assert_eq!(
            decide(
                &doc,
                "iam:CreateAccessKey",
                "arn:aws:iam::000000000000:user/",
                &role
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&doc, "ecs:TagResource", CLUSTER, &role),
            Decision::ImplicitDeny
        );
        // A value's wildcard characters are literal.
        let sneaky = ctx(&[("aws:username", "*")]);
        assert_eq!(
            decide(
                &doc,
                "iam:CreateAccessKey",
                "arn:aws:iam::000000000000:user/bob",
                &sneaky
            ),
            Decision::ImplicitDeny
        );

        // Defaults, principal tags, userid and escapes.
        let more = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${aws:PrincipalTag/team, 'shared'}/*"},
                {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/${aws:userid}/${*}${?}${$}"},
                {"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"StringLikeIfExists":{"s3:prefix":"${aws:username}/*"}}}]}"#,
        );
        let team = ctx(&[
            ("aws:PrincipalTag/Team", "red"),
            ("aws:userid", "AIDA123"),
            ("aws:username", "alice"),
            ("s3:prefix", "alice/x"),
        ]);
        assert_eq!(
            decide(&more, "s3:GetObject", "arn:aws:s3:::b/red/k", &team),
            Decision::Allow
        );
        assert_eq!(
            decide(&more, "s3:GetObject", "arn:aws:s3:::b/shared/k", &team),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &more,
                "s3:GetObject",
                "arn:aws:s3:::b/shared/k",
                &RequestContext::new()
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(&more, "s3:PutObject", "arn:aws:s3:::b/AIDA123/*?$", &team),
            Decision::Allow
        );
        assert_eq!(
            decide(&more, "s3:PutObject", "arn:aws:s3:::b/AIDA123/x?$", &team),
            Decision::ImplicitDeny
        );
        assert_eq!(decide(&more, "s3:ListBucket", "*", &team), Decision::Allow);
        let other = ctx(&[("aws:username", "alice"), ("s3:prefix", "bob/x")]);
        assert_eq!(
            decide(&more, "s3:ListBucket", "*", &other),
            Decision::ImplicitDeny
        );

        // In version 2008-10-17 (and without Version) "${...}" is plain text.
        let old = identity(
            r#"{"Statement":{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::000000000000:user/${aws:username}"}}"#,
        );
        assert_eq!(old.version(), PolicyVersion::V2008_10_17);
        assert_eq!(
            decide(
                &old,
                "iam:GetUser",
                "arn:aws:iam::000000000000:user/alice",
                &alice
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &old,
                "iam:GetUser",
                "arn:aws:iam::000000000000:user/${aws:username}",
                &alice
            ),
            Decision::Allow
        );
    }

    #[test]
    fn trust_policies() {
        let alice = "arn:aws:iam::000000000000:user/alice";
        let by_user = |arn: &'static str| TrustPrincipal::Aws {
            arn,
            account: ACCOUNT,
        };
        let none = RequestContext::new();

        let root = trust(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"sts:AssumeRole"}}"#,
        );
        assert!(trust_allows(&root, &by_user(alice), &none));
        assert!(!trust_allows(
            &root,
            &TrustPrincipal::Aws {
                arn: "arn:aws:iam::111111111111:user/x",
                account: "111111111111"
            },
            &none
        ));
        assert!(!trust_allows(
            &root,
            &TrustPrincipal::Service("ecs-tasks.amazonaws.com"),
            &none
        ));
        let bare = trust(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":"sts:AssumeRole"}}"#,
        );
        assert!(trust_allows(
            &bare,
            &by_user("arn:aws:iam::000000000000:role/ci"),
            &none
        ));

        let exact = trust(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::000000000000:user/alice","arn:aws:iam::000000000000:role/team/deployer"]},"Action":["sts:AssumeRole","sts:TagSession"]}}"#,
        );
        assert!(trust_allows(&exact, &by_user(alice), &none));
        assert!(!trust_allows(
            &exact,
            &by_user("arn:aws:iam::000000000000:user/bob"),
            &none
        ));
        assert!(trust_allows(
            &exact,
            &by_user("arn:aws:iam::000000000000:role/team/deployer"),
            &none
        ));
        // A session of a trusted role is trusted (role chaining); its ARN has no path.
        assert!(trust_allows(
            &exact,
            &by_user("arn:aws:sts::000000000000:assumed-role/deployer/ci-run-1"),
            &none
        ));
        assert!(!trust_allows(
            &exact,
            &by_user("arn:aws:sts::000000000000:assumed-role/other/ci-run-1"),
            &none
        ));
        assert!(!trust_allows(
            &exact,
            &TrustPrincipal::Aws {
                arn: "arn:aws:sts::111111111111:assumed-role/deployer/s",
                account: "111111111111"
            },
            &none
        ));

        let service = trust(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"","Effect":"Allow","Principal":{"Service":["ecs-tasks.amazonaws.com"]},"Action":"sts:AssumeRole"}]}"#,
        );
        assert!(trust_allows(
            &service,
            &TrustPrincipal::Service("ecs-tasks.amazonaws.com"),
            &none
        ));
        assert!(!trust_allows(
            &service,
            &TrustPrincipal::Service("ec2.amazonaws.com"),
            &none
        ));
        assert!(!trust_allows(&service, &by_user(alice), &none));

        for everyone in [r#""*""#, r#"{"AWS":"*"}"#] {
            let doc = trust(&format!(
                r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Principal":{everyone},"Action":"sts:AssumeRole"}}}}"#
            ));
            assert!(trust_allows(&doc, &by_user(alice), &none));
            assert!(trust_allows(
                &doc,
                &TrustPrincipal::Service("ecs-tasks.amazonaws.com"),
                &none
            ));
        }

        // Conditions, Deny and other actions.
        let guarded = trust(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:ExternalId":"s3cret"}}},
                {"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/mallory"},"Action":"sts:*"}]}"#,
        );
        let with_id = ctx(&[("sts:ExternalId", "s3cret")]);
        assert!(trust_allows(&guarded, &by_user(alice), &with_id));
        assert!(!trust_allows(&guarded, &by_user(alice), &none));
        assert!(!trust_allows(
            &guarded,
            &by_user("arn:aws:iam::000000000000:user/mallory"),
            &with_id
        ));
        assert_eq!(
            evaluate_with_principal(
                &guarded,
                &by_user("arn:aws:iam::000000000000:user/mallory"),
                "sts:AssumeRole",
                None,
                &with_id
            ),
            Decision::ExplicitDeny
        );
        let web = trust(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::000000000000:oidc-provider/x"},"Action":"sts:AssumeRoleWithWebIdentity"}}"#,
        );
        assert!(!trust_allows(&web, &by_user(alice), &none));

        let not_principal = trust(
            r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":"sts:AssumeRole"},
            {"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::000000000000:user/alice"},"Action":"sts:AssumeRole"}]}"#,
        );
        assert!(trust_allows(&not_principal, &by_user(alice), &none));
        assert!(!trust_allows(
            &not_principal,
            &by_user("arn:aws:iam::000000000000:user/bob"),
            &none
        ));

        // A trust policy does not grant anything through identity evaluation.
        assert_eq!(
            evaluate([&root], "sts:AssumeRole", "*", &none),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn resource_policies_name_principals_and_resources() {
        let doc = match PolicyDocument::parse(
            r#"{"Version":"2012-10-17","Statement":{"Sid":"Read secret","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:role/app"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#,
            PolicyKind::Resource,
        ) {
            Ok(doc) => doc,
            Err(e) => panic!("{e}"),
        };
        let app = TrustPrincipal::Aws {
            arn: "arn:aws:sts::000000000000:assumed-role/app/task",
            account: ACCOUNT,
        };
        let secret = "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf";
        let none = RequestContext::new();
        assert_eq!(
            evaluate_with_principal(
                &doc,
                &app,
                "secretsmanager:GetSecretValue",
                Some(secret),
                &none
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate_with_principal(
                &doc,
                &app,
                "secretsmanager:DeleteSecret",
                Some(secret),
                &none
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            err(
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"secretsmanager:*"}}"#,
                PolicyKind::Resource
            ),
            "Policy statement must contain resources."
        );
    }

    #[test]
    fn document_shapes_and_accessors() {
        let doc = identity(
            r#"{"Version":"2012-10-17","Id":"p1","Statement":{"Sid":"One","Effect":"Deny","Action":"ecs:RunTask","Resource":"*","Condition":{"NumericGreaterThan":{"ecs:count":5}}}}"#,
        );
        assert_eq!(doc.version(), PolicyVersion::V2012_10_17);
        assert_eq!(doc.id(), Some("p1"));
        assert_eq!(doc.statements().len(), 1);
        assert_eq!(doc.statements()[0].sid(), Some("One"));
        assert_eq!(doc.statements()[0].effect(), Effect::Deny);
        assert_eq!(identity(r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#).version(), PolicyVersion::V2008_10_17);
        // Empty Sids may repeat; non-empty ones may not.
        identity(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"","Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"","Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        );
        let mut c = RequestContext::new();
        c.set("k:a", "1");
        c.set("K:A", "2");
        assert_eq!(c.get("k:a"), Some(&["2".to_string()][..]));
        assert!(c.remove("K:a"));
        assert!(c.get("k:a").is_none());
        assert!(!c.remove("k:a"));
    }

    #[test]
    fn malformed_documents_are_rejected_with_iam_messages() {
        use PolicyKind::{Identity, Trust};
        let stmt = |body: &str| format!(r#"{{"Version":"2012-10-17","Statement":[{body}]}}"#);
        let cases: Vec<(String, PolicyKind, &str)> = vec![
            ("not json".into(), Identity, "Syntax errors in policy."),
            ("[]".into(), Identity, "Syntax errors in policy."),
            (r#"{"Version":"2012-10-17"}"#.into(), Identity, "Syntax errors in policy."),
            (r#"{"Version":"2012-10-17","Statement":[]}"#.into(), Identity, "Syntax errors in policy."),
            (r#"{"Version":"2013-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#.into(), Identity, "Syntax errors in policy."),
            (r#"{"Version":"2012-10-17","Extra":1,"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#.into(), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Foo":"x"}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":"*","NotAction":"*","Resource":"*"}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":[1],"Resource":"*"}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":{"a":"b"}}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Action":"*","Resource":"*"}"#), Identity, "Missing required field Effect"),
            (stmt(r#"{"Effect":"Permit","Action":"*","Resource":"*"}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"allow","Action":"*","Resource":"*"}"#), Identity, "The policy failed legacy parsing"),
            (stmt(r#"{"Effect":"Allow","Resource":"*"}"#), Identity, "Policy statement must contain actions."),
            (stmt(r#"{"Effect":"Allow","Action":[],"Resource":"*"}"#), Identity, "Policy statement must contain actions."),
            (stmt(r#"{"Effect":"Allow","Action":"*"}"#), Identity, "Policy statement must contain resources."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":[]}"#), Identity, "Policy statement must contain resources."),
            (stmt(r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#), Identity, "Policy document should not specify a principal."),
            (stmt(r#"{"Effect":"Allow","Action":"RunTask","Resource":"*"}"#), Identity, "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."),
            (stmt(r#"{"Effect":"Allow","Action":"ecs:Run:Task","Resource":"*"}"#), Identity, "Actions/Condition can contain only one colon."),
            (stmt(r#"{"Effect":"Allow","Action":"ec s:RunTask","Resource":"*"}"#), Identity, "Vendor ec s is not valid"),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"cluster/prod"}"#), Identity, "Resource cluster/prod must be in ARN format or \"*\"."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"arn:aws"}"#), Identity, "Resource vendor must be fully qualified and cannot contain regexes."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"arn:aws:iam:us-east-1:000000000000:user/a"}"#), Identity, "IAM resource arn:aws:iam:us-east-1:000000000000:user/a cannot contain region information."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualz":{"a:b":"c"}}}"#), Identity, "Invalid Condition type : StringEqualz"),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NullIfExists":{"a:b":"true"}}}"#), Identity, "Invalid Condition type : NullIfExists"),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForSomeValues:StringEquals":{"a:b":"c"}}}"#), Identity, "Invalid Condition type : ForSomeValues:StringEquals"),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"a:b":null}}}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"a:b":{"c":"d"}}}}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":"x"}}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"next tuesday"}}}"#), Identity, "The policy failed legacy parsing"),
            (stmt(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}"#), Identity, "Syntax errors in policy."),
            (stmt(r#"{"Sid":"A","Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"*","Resource":"*"}"#), Identity, "Statement IDs (SID) in a single policy must be unique."),
            (stmt(r#"{"Sid":"has space","Effect":"Allow","Action":"*","Resource":"*"}"#), Identity, "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*"),
            (stmt(r#"{"Effect":"Allow","Action":"sts:AssumeRole"}"#), Trust, "Missing required field Principal"),
            (stmt(r#"{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":"sts:AssumeRole","Resource":"*"}"#), Trust, "Has prohibited field Resource"),
            (stmt(r#"{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":"ecs:RunTask"}"#), Trust, "AssumeRole policy may only specify STS AssumeRole actions."),
            (stmt(r#"{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"sts:AssumeRole"}"#), Trust, "Invalid principal in policy: \"AWS\":\"alice\""),
            (stmt(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::*:role/x"},"Action":"sts:AssumeRole"}"#), Trust, "Invalid principal in policy: \"AWS\":\"arn:aws:iam::*:role/x\""),
            (stmt(r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:group/devs"},"Action":"sts:AssumeRole"}"#), Trust, "Invalid principal in policy: \"AWS\":\"arn:aws:iam::000000000000:group/devs\""),
            (stmt(r#"{"Effect":"Allow","Principal":{"Service":"not a service"},"Action":"sts:AssumeRole"}"#), Trust, "Invalid principal in policy: \"SERVICE\":\"not a service\""),
            (stmt(r#"{"Effect":"Allow","Principal":{"Robot":"x"},"Action":"sts:AssumeRole"}"#), Trust, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Principal":"arn:aws:iam::000000000000:root","Action":"sts:AssumeRole"}"#), Trust, "Syntax errors in policy."),
            (stmt(r#"{"Effect":"Allow","Principal":{"AWS":[]},"Action":"sts:AssumeRole"}"#), Trust, "Syntax errors in policy."),
        ];
        for (json, kind, want) in cases {
            assert_eq!(err(&json, kind), want, "{json}");
        }
    }

    #[test]
    fn wildcard_matcher_edge_cases() {
        let m = |pat: &str, text: &str| {
            match_toks(
                &Pattern::compile(pat, true, false, Case::Keep).toks,
                text,
                false,
            )
        };
        assert!(m("*", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "acb"));
        assert!(m("*a*a*a*", "aaa"));
        assert!(!m("*a*a*a*", "aa"));
        assert!(m("**x", "abx"));
        assert!(m("?", "é"));
        assert!(!m("??", "é"));
        assert!(m("é*ü", "éabcü"));
        assert!(m("*ab", "aab"));
        assert!(m("a?c*", "abcdef"));
        let ci = Pattern::compile("EcS:DeScRiBe*", true, false, Case::Ascii);
        assert!(match_toks(&ci.toks, "ecs:describeclusters", true));
        assert!(match_toks(&ci.toks, "ECS:DESCRIBECLUSTERS", true));
    }

    /// `cargo test --release -p gantry-auth policy::tests::evaluation_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn evaluation_speed() {
        let managed = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ecs:Describe*","ecs:List*","logs:Get*","logs:Describe*"],"Resource":"*"},
                {"Effect":"Allow","Action":["ecs:RunTask","ecs:StopTask"],"Resource":"*","Condition":{"StringEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:000000000000:cluster/prod"}}},
                {"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"StringLike":{"iam:PassedToService":"ecs-tasks.amazonaws.com"}}},
                {"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","192.168.0.0/16"]}}},
                {"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"arn:aws:ecs:*:*:cluster/prod*"}]}"#,
        );
        let c = ctx(&[
            ("aws:SourceIp", "10.1.2.3"),
            ("ecs:cluster", CLUSTER),
            ("aws:username", "alice"),
        ]);
        let n = 200_000u32;
        let start = std::time::Instant::now();
        let mut allowed = 0u32;
        for _ in 0..n {
            if evaluate([&managed], "ecs:RunTask", CLUSTER, &c) == Decision::Allow {
                allowed += 1;
            }
        }
        let per = start.elapsed() / n;
        println!("evaluate: {per:?} per call");
        assert_eq!(allowed, n);
    }
}
