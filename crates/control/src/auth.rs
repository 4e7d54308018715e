//! Who is calling (SigV4 against the access keys in the state cache, or the agents' join
//! token) and whether they may do what they ask (IAM policy evaluation against the ARNs an
//! operation touches). Every request passes here before any handler runs: the wire layers
//! (`dispatch.rs`, the agent channel, log ingest) call [`authenticate`] and then
//! [`authorize`] with what `access.rs` says the operation is and touches.
//!
//! Order of checks, and why: the claim is parsed and its scope and clock window are checked
//! before any key is looked up, and an unknown key costs the same HMAC work as a known one, so
//! neither an error nor its timing tells a caller more about a key than AWS itself does
//! (an unknown key is `UnrecognizedClientException`, a wrong signature for a known one
//! `InvalidSignatureException`, as on AWS).

use crate::plane::ControlPlane;
use crate::state::iam::{AccessKeyRecord, KeyOwner};
use gantry_auth::policy::{evaluate, Decision, PolicyDocument, PolicyKind, RequestContext};
use gantry_auth::sigv4::{self, AuthError, RequestParts};
use gantry_model::EcsError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// The header an agent sends its join token in (only on RegisterContainerInstance).
pub const JOIN_TOKEN_HEADER: &str = "x-gantry-agent-token";

/// A secret no key has: unknown keys are verified against it so that they cost the same.
const NO_SUCH_SECRET: &str = "gantry-no-such-key-0000000000000000000000";

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// Authentication is off (`--unauthenticated`, loopback only): every call acts as the
    /// account.
    Unauthenticated,
    User {
        name: String,
        arn: String,
        id: String,
    },
    AssumedRole {
        role_name: String,
        role_arn: String,
        session_name: String,
        /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
        arn: String,
        /// `<role id>:<session>`, as GetCallerIdentity's UserId.
        id: String,
    },
    /// A container instance's agent, with the credentials it got at registration.
    Agent {
        cluster_arn: String,
        instance_arn: String,
    },
    /// An agent that presented the join token: it may register, nothing else.
    Joining,
}

impl Principal {
    /// The ARN AWS would name in an AccessDenied message and in the audit log.
    pub fn arn(&self, plane: &ControlPlane) -> String {
        match self {
            Principal::Unauthenticated => format!("arn:aws:iam::{}:root", plane.scope().account),
            Principal::User { arn, .. } | Principal::AssumedRole { arn, .. } => arn.clone(),
            Principal::Agent { instance_arn, .. } => instance_arn.clone(),
            Principal::Joining => "gantry:agent-join-token".to_string(),
        }
    }
}

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The access key id the request was signed with (not secret; for the audit log).
    pub access_key_id: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// Whether the request came over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthFailure {
    Signature(AuthError),
    /// No such key, a deleted or inactive one, a session token that does not match.
    UnknownKey,
    /// A session's credentials past their expiration.
    ExpiredToken,
}

/// The two wire protocols shape errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson1_1 (ECS, CloudWatch Logs, Gantry's own operations).
    Json,
    /// awsQuery (IAM, STS, later ELBv2).
    Query,
}

/// An authentication or authorisation error as one protocol names it.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

impl AuthFailure {
    pub fn wire(&self, protocol: Protocol) -> WireError {
        use Protocol::*;
        let (code, status) = match (self, protocol) {
            (AuthFailure::Signature(AuthError::Missing), Json) => {
                ("MissingAuthenticationTokenException", 400)
            }
            (AuthFailure::Signature(AuthError::Missing), Query) => {
                ("MissingAuthenticationToken", 403)
            }
            (AuthFailure::Signature(AuthError::Incomplete(_)), Json) => {
                ("IncompleteSignatureException", 400)
            }
            (AuthFailure::Signature(AuthError::Incomplete(_)), Query) => {
                ("IncompleteSignature", 400)
            }
            (AuthFailure::Signature(_), Json) => ("InvalidSignatureException", 400),
            (AuthFailure::Signature(_), Query) => ("SignatureDoesNotMatch", 403),
            (AuthFailure::UnknownKey, Json) => ("UnrecognizedClientException", 400),
            (AuthFailure::UnknownKey, Query) => ("InvalidClientTokenId", 403),
            (AuthFailure::ExpiredToken, Json) => ("ExpiredTokenException", 400),
            (AuthFailure::ExpiredToken, Query) => ("ExpiredToken", 403),
        };
        let message = match self {
            AuthFailure::Signature(AuthError::Missing) => match protocol {
                Json => "Missing Authentication Token".to_string(),
                Query => "Request is missing Authentication Token".to_string(),
            },
            AuthFailure::Signature(e) => e.message(),
            AuthFailure::UnknownKey => {
                "The security token included in the request is invalid.".to_string()
            }
            AuthFailure::ExpiredToken => {
                "The security token included in the request is expired".to_string()
            }
        };
        WireError {
            code,
            message,
            status,
        }
    }

    /// The error code only (for the audit log).
    pub fn code(&self) -> &'static str {
        self.wire(Protocol::Json).code
    }
}

/// A denied call, with AWS's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    pub message: String,
}

impl Denied {
    /// AWS's message: "User: <who> is not authorized to perform: <action> on resource:
    /// <resource> <why>" (AWS says "User:" for assumed roles too).
    pub fn new(who: &str, action: &str, resource: &str, why: &str) -> Denied {
        Denied {
            message: format!(
                "User: {who} is not authorized to perform: {action} on resource: {resource} {why}"
            ),
        }
    }

    pub fn wire(&self, protocol: Protocol) -> WireError {
        match protocol {
            Protocol::Json => WireError {
                code: "AccessDeniedException",
                message: self.message.clone(),
                status: 400,
            },
            Protocol::Query => WireError {
                code: "AccessDenied",
                message: self.message.clone(),
                status: 403,
            },
        }
    }

    pub fn to_ecs(&self) -> EcsError {
        EcsError::new("AccessDeniedException", self.message.clone())
    }
}

/// Checks the request's signature (or the join token, for an agent registering) and says who
/// is calling. `service` is the signing name the endpoint expects (`ecs`, `logs`, `iam`,
/// `sts`); `now` is unix seconds.
pub fn authenticate(
    plane: &ControlPlane,
    parts: &RequestParts,
    service: &str,
    now: i64,
    source_ip: Option<IpAddr>,
) -> Result<Caller, AuthFailure> {
    let caller = |principal, access_key_id| Caller {
        principal,
        access_key_id,
        source_ip,
        secure_transport: plane.config.secure_transport,
    };
    if !plane.config.authenticate {
        return Ok(caller(Principal::Unauthenticated, None));
    }
    if parts.headers.get("authorization").is_none() {
        if let Some(token) = parts
            .headers
            .get(JOIN_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            return if join_token_matches(plane, token) {
                Ok(caller(Principal::Joining, None))
            } else {
                Err(AuthFailure::UnknownKey)
            };
        }
    }
    let claim = sigv4::parse_claim(parts).map_err(AuthFailure::Signature)?;
    sigv4::check_scope_and_time(&claim, &plane.scope().region, service, now)
        .map_err(AuthFailure::Signature)?;
    let key: Option<Arc<AccessKeyRecord>> = plane
        .cache
        .iam(|iam| iam.keys.get(&claim.access_key_id).cloned());
    let Some(key) = key.filter(|k| k.status == "Active") else {
        let _ = sigv4::verify(parts, &claim, NO_SUCH_SECRET);
        return Err(AuthFailure::UnknownKey);
    };
    // The signature first: nothing about the key's owner is told to a caller who cannot sign.
    let signing_key = plane.signing_keys.get(&key, &claim);
    sigv4::verify_with_signing_key(parts, &claim, &signing_key).map_err(AuthFailure::Signature)?;
    let principal = match &key.owner {
        KeyOwner::User { user_name } => {
            if claim.security_token.is_some() {
                return Err(AuthFailure::UnknownKey);
            }
            let user = plane.cache.iam(|iam| iam.users.get(user_name).cloned());
            let Some(user) = user else {
                return Err(AuthFailure::UnknownKey);
            };
            Principal::User {
                name: user.record.user_name.clone(),
                arn: user.record.arn.clone(),
                id: user.record.user_id.clone(),
            }
        }
        KeyOwner::Agent {
            cluster_arn,
            instance_arn,
        } => {
            if claim.security_token.is_some() {
                return Err(AuthFailure::UnknownKey);
            }
            // A deregistered instance's agent is cut off at once, whatever its key.
            let active = gantry_model::arn::cluster_of_arn(instance_arn)
                .and_then(|c| {
                    plane
                        .cache
                        .instance(c, gantry_model::arn::last_segment(instance_arn))
                })
                .is_some_and(|ci| {
                    ci.value.status.as_deref() != Some(gantry_model::status::INACTIVE)
                });
            if !active {
                return Err(AuthFailure::UnknownKey);
            }
            Principal::Agent {
                cluster_arn: cluster_arn.clone(),
                instance_arn: instance_arn.clone(),
            }
        }
        KeyOwner::Session {
            role_name,
            session_name,
            session_token,
            expiration,
            ..
        } => {
            let presented = claim.security_token.as_deref().unwrap_or("");
            if !sigv4::constant_time_eq(presented.as_bytes(), session_token.as_bytes()) {
                return Err(AuthFailure::UnknownKey);
            }
            if (now as f64) >= *expiration {
                return Err(AuthFailure::ExpiredToken);
            }
            let role = plane.cache.iam(|iam| iam.roles.get(role_name).cloned());
            let Some(role) = role else {
                return Err(AuthFailure::UnknownKey);
            };
            Principal::AssumedRole {
                role_name: role_name.clone(),
                role_arn: role.record.arn.clone(),
                session_name: session_name.clone(),
                arn: format!(
                    "arn:aws:sts::{}:assumed-role/{}/{}",
                    plane.scope().account,
                    role_name,
                    session_name
                ),
                id: format!("{}:{}", role.record.role_id, session_name),
            }
        }
    };
    Ok(caller(principal, Some(claim.access_key_id)))
}

fn join_token_matches(plane: &ControlPlane, presented: &str) -> bool {
    let stored = plane.cache.iam(|iam| iam.join_token.clone());
    let Some(stored) = stored else {
        return false;
    };
    let hash = sigv4::sha256_hex(presented.as_bytes());
    sigv4::constant_time_eq(hash.as_bytes(), stored.sha256.as_bytes())
}

/// AWS managed policies, parsed once.
fn managed_documents() -> &'static HashMap<String, Arc<PolicyDocument>> {
    static DOCS: OnceLock<HashMap<String, Arc<PolicyDocument>>> = OnceLock::new();
    DOCS.get_or_init(|| {
        gantry_auth::managed::aws_managed()
            .iter()
            .filter_map(|p| {
                PolicyDocument::parse(p.document, PolicyKind::Identity)
                    .ok()
                    .map(|d| (p.arn(), Arc::new(d)))
            })
            .collect()
    })
}

/// The identity policies that apply to a user or an assumed role: inline ones and the
/// managed ones attached (customer managed from the cache, AWS managed from the built-in set).
fn policies_of(plane: &ControlPlane, principal: &Principal) -> Vec<Arc<PolicyDocument>> {
    plane.cache.iam(|iam| {
        let (inline, attached) = match principal {
            Principal::User { name, .. } => match iam.users.get(name) {
                Some(u) => (&u.documents, &u.record.attached_policies),
                None => return Vec::new(),
            },
            Principal::AssumedRole { role_name, .. } => match iam.roles.get(role_name) {
                Some(r) => (&r.documents, &r.record.attached_policies),
                None => return Vec::new(),
            },
            _ => return Vec::new(),
        };
        let mut all = Vec::with_capacity(inline.len() + attached.len());
        all.extend(inline.iter().cloned());
        for arn in attached {
            if let Some(p) = iam.policies.get(arn) {
                all.extend(p.documents.iter().cloned());
            } else if let Some(d) = managed_documents().get(arn) {
                all.push(d.clone());
            }
        }
        all
    })
}

/// The request context every policy condition can read.
fn base_context(plane: &ControlPlane, caller: &Caller, now: i64) -> RequestContext {
    let mut ctx = RequestContext::new();
    if let Some(ip) = caller.source_ip {
        ctx.set("aws:SourceIp", ip.to_string());
    }
    ctx.set(
        "aws:SecureTransport",
        if caller.secure_transport {
            "true"
        } else {
            "false"
        },
    );
    ctx.set("aws:RequestedRegion", plane.scope().region.clone());
    ctx.set("aws:PrincipalAccount", plane.scope().account.clone());
    ctx.set("aws:EpochTime", now.to_string());
    if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(now) {
        if let Ok(s) = t.format(&time::format_description::well_known::Rfc3339) {
            ctx.set("aws:CurrentTime", s);
        }
    }
    match &caller.principal {
        Principal::User { name, arn, id } => {
            ctx.set("aws:username", name.clone());
            ctx.set("aws:userid", id.clone());
            ctx.set("aws:PrincipalArn", arn.clone());
            ctx.set("aws:PrincipalType", "User");
        }
        Principal::AssumedRole { role_arn, id, .. } => {
            ctx.set("aws:userid", id.clone());
            ctx.set("aws:PrincipalArn", role_arn.clone());
            ctx.set("aws:PrincipalType", "AssumedRole");
        }
        _ => {}
    }
    ctx
}

/// What one call asks: the IAM action, the resources it touches (ARNs, or `*`), and
/// operation-specific condition keys (`ecs:cluster`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub action: String,
    pub resources: Vec<String>,
    pub conditions: Vec<(&'static str, String)>,
    /// Roles the call hands to ECS (task role, execution role, service role): each needs
    /// `iam:PassRole` on the role, with `iam:PassedToService`.
    pub passes_roles: Vec<String>,
    /// What an agent calling this must own: its own instance, tasks placed on it.
    pub owned: Vec<Owned>,
    /// Only agents may call this (the task channel, log shipping), whatever a user's policies.
    pub agents_only: bool,
}

/// Something an agent acts on, which must be its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    /// A container instance ARN (empty: a registration that claims none, i.e. a new one).
    Instance(String),
    /// A task (id or ARN) of a cluster (name or ARN).
    Task { cluster: String, task: String },
}

impl Owned {
    fn name(&self) -> &str {
        match self {
            Owned::Instance(arn) if arn.is_empty() => "*",
            Owned::Instance(arn) => arn,
            Owned::Task { task, .. } => task,
        }
    }
}

impl Access {
    pub fn new(action: impl Into<String>, resources: Vec<String>) -> Access {
        Access {
            action: action.into(),
            resources,
            conditions: Vec::new(),
            passes_roles: Vec::new(),
            owned: Vec::new(),
            agents_only: false,
        }
    }

    pub fn owning(mut self, owned: impl IntoIterator<Item = Owned>) -> Access {
        self.owned.extend(owned);
        self
    }

    pub fn agents_only(mut self) -> Access {
        self.agents_only = true;
        self
    }

    pub fn condition(mut self, key: &'static str, value: impl Into<String>) -> Access {
        self.conditions.push((key, value.into()));
        self
    }

    pub fn passing(mut self, roles: impl IntoIterator<Item = String>) -> Access {
        self.passes_roles.extend(roles);
        self
    }
}

/// Whether `caller` may do `access`. A user or an assumed role: every resource must be
/// allowed by its policies (an explicit Deny on any wins), and every role passed needs
/// `iam:PassRole`. An agent: only the agent calls, and only on what it owns (its instance,
/// the tasks placed on it). A joining agent: only the registration of a new instance.
pub fn authorize(
    plane: &ControlPlane,
    caller: &Caller,
    access: &Access,
    now: i64,
) -> Result<(), Denied> {
    let who = caller.principal.arn(plane);
    let first = || access.resources.first().map(String::as_str).unwrap_or("*");
    let deny = |action: &str, resource: &str, decision: Decision| {
        let why = if decision == Decision::ExplicitDeny {
            "with an explicit deny in an identity-based policy".to_string()
        } else {
            format!("because no identity-based policy allows the {action} action")
        };
        Denied::new(&who, action, resource, &why)
    };
    match &caller.principal {
        Principal::Unauthenticated => return Ok(()),
        Principal::Joining => {
            let claims_nothing = access
                .owned
                .iter()
                .all(|o| matches!(o, Owned::Instance(a) if a.is_empty()));
            return if access.action == "ecs:RegisterContainerInstance" && claims_nothing {
                Ok(())
            } else {
                Err(Denied::new(
                    &who,
                    &access.action,
                    access.owned.first().map(Owned::name).unwrap_or_else(first),
                    "because a join token registers new container instances only; an instance re-registers with its own credentials",
                ))
            };
        }
        Principal::Agent { .. } => {
            if !AGENT_ACTIONS.contains(&access.action.as_str()) {
                return Err(deny(&access.action, first(), Decision::ImplicitDeny));
            }
            if let Some(o) = access.owned.iter().find(|o| !agent_owns(plane, caller, o)) {
                return Err(Denied::new(
                    &who,
                    &access.action,
                    o.name(),
                    "because it is not this container instance's own",
                ));
            }
            return Ok(());
        }
        Principal::User { .. } | Principal::AssumedRole { .. } if access.agents_only => {
            return Err(Denied::new(
                &who,
                &access.action,
                first(),
                "because only the container instance's own agent may call it",
            ));
        }
        Principal::User { .. } | Principal::AssumedRole { .. } => {}
    }
    let policies = policies_of(plane, &caller.principal);
    let mut ctx = base_context(plane, caller, now);
    for (k, v) in &access.conditions {
        ctx.set(k, v.clone());
    }
    for resource in &access.resources {
        match evaluate(
            policies.iter().map(|p| &**p),
            &access.action,
            resource,
            &ctx,
        ) {
            Decision::Allow => {}
            d => return Err(deny(&access.action, resource, d)),
        }
    }
    if !access.passes_roles.is_empty() {
        ctx.set("iam:PassedToService", "ecs-tasks.amazonaws.com");
        for role in &access.passes_roles {
            match evaluate(policies.iter().map(|p| &**p), "iam:PassRole", role, &ctx) {
                Decision::Allow => {}
                d => return Err(deny("iam:PassRole", role, d)),
            }
        }
    }
    Ok(())
}

/// What an agent's own credentials allow (each on what it owns only: [`Access::owned`]).
const AGENT_ACTIONS: &[&str] = &[
    "ecs:RegisterContainerInstance",
    "ecs:SubmitTaskStateChange",
    "ecs:SubmitContainerStateChange",
    "ecs:DiscoverPollEndpoint",
    "ecs:Poll",
    "logs:PutLogEvents",
    "logs:CreateLogStream",
    // Its tasks' secrets, just before they start (`task_secrets.rs`).
    "ecs:GetTaskSecrets",
];

/// Whether the agent calling owns `owned`: it is the agent's own instance, or a task placed
/// on it.
fn agent_owns(plane: &ControlPlane, caller: &Caller, owned: &Owned) -> bool {
    let Principal::Agent { instance_arn, .. } = &caller.principal else {
        return false;
    };
    match owned {
        Owned::Instance(arn) => arn == instance_arn,
        Owned::Task { cluster, task } => {
            let id = gantry_model::arn::last_segment(task);
            match plane
                .cache
                .task(gantry_model::arn::cluster_name(cluster), id)
            {
                Some(t) => t.value.host_arn() == Some(instance_arn),
                // A Fargate host's tasks belong to other clusters than its own (log shipping
                // names only the task id): look among the tasks placed on the instance.
                None => plane
                    .cache
                    .tasks_on_instance(instance_arn)
                    .iter()
                    .any(|t| t.value.id() == id),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plane::ControlConfig;
    use gantry_store::SqliteStore;

    async fn plane() -> ControlPlane {
        ControlPlane::open(
            ControlConfig::default(),
            Arc::new(SqliteStore::open_in_memory().expect("store")),
            crate::logs::LogStore::open_in_memory().expect("logs"),
            crate::audit::AuditLog::in_memory(100).expect("audit"),
        )
        .await
        .expect("plane")
    }

    /// A DescribeTasks request signed at `now` with `id`/`secret`.
    fn signed(id: &str, secret: &str, now: i64) -> (axum::http::HeaderMap, Vec<u8>) {
        let body = br#"{"cluster":"default","tasks":["a","b","c"]}"#.to_vec();
        let headers = vec![
            ("host".to_string(), "127.0.0.1:7420".to_string()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                "x-amz-target".to_string(),
                "AmazonEC2ContainerServiceV20141113.DescribeTasks".to_string(),
            ),
        ];
        let creds = sigv4::Credentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: None,
        };
        let added = sigv4::sign(
            "POST",
            "/",
            "",
            &headers,
            &body,
            &creds,
            "us-east-1",
            "ecs",
            now,
        );
        let mut map = axum::http::HeaderMap::new();
        for (k, v) in headers.into_iter().chain(added) {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                axum::http::HeaderValue::from_str(&v),
            ) {
                map.append(k, v);
            }
        }
        (map, body)
    }

    fn describe_access() -> Access {
        Access::new(
            "ecs:DescribeTasks",
            (0..3)
                .map(|i| format!("arn:aws:ecs:us-east-1:000000000000:task/default/{i}"))
                .collect(),
        )
        .condition(
            "ecs:cluster",
            "arn:aws:ecs:us-east-1:000000000000:cluster/default",
        )
    }

    #[tokio::test]
    async fn the_administrator_is_authenticated_and_allowed_and_a_stranger_is_not() {
        let plane = plane().await;
        let (id, secret) = crate::iam::keys::new_admin_key(&plane)
            .await
            .expect("admin");
        let now = gantry_auth::client::now();
        let (headers, body) = signed(&id, &secret, now);
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: &body,
        };
        let caller = authenticate(&plane, &parts, "ecs", now, None).expect("authenticated");
        assert!(matches!(caller.principal, Principal::User { ref name, .. } if name == "admin"));
        assert!(authorize(&plane, &caller, &describe_access(), now).is_ok());
        let (headers, body) = signed("AKIANOSUCHKEY0000000", &secret, now);
        let parts = RequestParts {
            headers: &headers,
            body: &body,
            ..parts
        };
        assert_eq!(
            authenticate(&plane, &parts, "ecs", now, None).err(),
            Some(AuthFailure::UnknownKey)
        );
    }

    /// CPU cost of authenticating and authorising one call (`cargo test --release -p
    /// gantry-control auth::tests::cost -- --ignored --nocapture`): a figure, not a test.
    #[tokio::test]
    #[ignore]
    async fn cost() {
        let plane = plane().await;
        let (id, secret) = crate::iam::keys::new_admin_key(&plane)
            .await
            .expect("admin");
        let now = gantry_auth::client::now();
        let (headers, body) = signed(&id, &secret, now);
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: &body,
        };
        let access = describe_access();
        let n = 20_000;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let started = std::time::Instant::now();
            let caller = authenticate(&plane, &parts, "ecs", now, None).expect("authenticated");
            let allowed = authorize(&plane, &caller, &access, now).is_ok();
            samples.push(started.elapsed());
            assert!(allowed);
        }
        samples.sort();
        println!(
            "authenticate + authorize: p50 {:?}, p99 {:?} per call ({n} calls)",
            samples[n / 2],
            samples[n * 99 / 100]
        );
    }
}
