//! STS: GetCallerIdentity (what Terraform calls once per provider unless told to skip it) and
//! AssumeRole (temporary credentials: an `ASIA…` key, a secret and a session token that
//! expire; the role's trust policy must name the caller, and the caller's own policies must
//! allow `sts:AssumeRole` on the role — the dispatcher checked the latter).

use super::keys::{new_key_id, new_secret, new_session_token};
use crate::auth::{Caller, Principal};
use crate::plane::ControlPlane;
use crate::query_wire::{QueryError, QueryRequest, XmlWriter, STS_NAMESPACE};
use crate::state::iam::{access_key_key, AccessKeyRecord, KeyOwner};
use crate::state::repo::{commit, put_op};
use gantry_auth::policy::{trust_allows, RequestContext, TrustPrincipal};
use gantry_model::now_epoch;

pub async fn dispatch(
    plane: &ControlPlane,
    caller: &Caller,
    action: &str,
    r: &QueryRequest,
) -> Result<XmlWriter, QueryError> {
    match action {
        "GetCallerIdentity" => Ok(get_caller_identity(plane, caller)),
        "AssumeRole" => assume_role(plane, caller, r).await,
        _ => Err(QueryError::invalid_action(action, "2011-06-15")),
    }
}

fn get_caller_identity(plane: &ControlPlane, caller: &Caller) -> XmlWriter {
    let account = &plane.scope().account;
    let user_id = match &caller.principal {
        Principal::User { id, .. } | Principal::AssumedRole { id, .. } => id.clone(),
        _ => account.clone(),
    };
    let mut w = XmlWriter::response("GetCallerIdentity", STS_NAMESPACE);
    w.text("Arn", &caller.principal.arn(plane))
        .text("UserId", &user_id)
        .text("Account", account);
    w
}

/// A session's key as AssumeRole mints it: an `ASIA…` key id, a secret and a session token,
/// valid until `expiration` (unix seconds) with the rights of `role_name`. `task_arn` names the
/// task a task role's credentials were minted for (deleted when it stops).
pub(crate) fn new_session_key(
    role_name: &str,
    session_name: &str,
    now: f64,
    expiration: f64,
    source_arn: &str,
    task_arn: Option<&str>,
) -> AccessKeyRecord {
    AccessKeyRecord {
        access_key_id: new_key_id("ASIA"),
        secret_access_key: new_secret(),
        status: "Active".into(),
        create_date: now,
        owner: KeyOwner::Session {
            role_name: role_name.to_string(),
            session_name: session_name.to_string(),
            session_token: new_session_token(),
            expiration,
            source_arn: source_arn.to_string(),
            task_arn: task_arn.map(str::to_string),
        },
    }
}

/// A session key's token (empty for any other key).
pub(crate) fn session_token(key: &AccessKeyRecord) -> &str {
    match &key.owner {
        KeyOwner::Session { session_token, .. } => session_token,
        _ => "",
    }
}

fn access_denied(message: String) -> QueryError {
    QueryError::new("AccessDenied", message).with_status(403)
}

async fn assume_role(
    plane: &ControlPlane,
    caller: &Caller,
    r: &QueryRequest,
) -> Result<XmlWriter, QueryError> {
    let role_arn = r.required("RoleArn")?;
    let session_name = r.required("RoleSessionName")?.to_string();
    let session_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !session_ok {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    let who = caller.principal.arn(plane);
    let not_authorized = || {
        access_denied(format!(
            "User: {who} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        ))
    };
    let role = plane
        .cache
        .iam(|i| i.roles.values().find(|x| x.record.arn == role_arn).cloned());
    // An unknown role reads the same as a role that does not trust the caller, as on AWS.
    let Some(role) = role else {
        return Err(not_authorized());
    };
    let account = plane.scope().account.clone();
    // The trust policy names the principal behind a session by its role.
    let principal_arn = match &caller.principal {
        Principal::AssumedRole { role_arn, .. } => role_arn.clone(),
        _ => who.clone(),
    };
    let trusted = matches!(caller.principal, Principal::Unauthenticated)
        || role.trust.as_ref().is_some_and(|t| {
            trust_allows(
                t,
                &TrustPrincipal::Aws {
                    arn: &principal_arn,
                    account: &account,
                },
                &RequestContext::new(),
            )
        });
    if !trusted {
        return Err(not_authorized());
    }
    let duration = r.int("DurationSeconds")?.unwrap_or(3600);
    if duration < plane.config.min_session_secs || duration > role.record.max_session_duration {
        return Err(QueryError::validation(format!(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role. (DurationSeconds: {duration}, allowed {} to {})",
            plane.config.min_session_secs,
            role.record.max_session_duration
        )));
    }
    let now = now_epoch();
    let expiration = now + duration as f64;
    let key = new_session_key(
        &role.record.role_name,
        &session_name,
        now,
        expiration,
        &who,
        None,
    );
    let token = session_token(&key).to_string();
    commit(
        &*plane.store,
        Vec::new(),
        vec![put_op(&access_key_key(&key.access_key_id), &key)
            .map_err(|e| QueryError::server(e.message))?],
    )
    .await
    .map_err(|e| QueryError::server(e.message))?;
    let assumed_arn = format!(
        "arn:aws:sts::{account}:assumed-role/{}/{session_name}",
        role.record.role_name
    );
    let mut w = XmlWriter::response("AssumeRole", STS_NAMESPACE);
    w.element("Credentials", |w| {
        w.text("AccessKeyId", &key.access_key_id)
            .text("SecretAccessKey", &key.secret_access_key)
            .text("SessionToken", &token)
            .timestamp("Expiration", expiration);
    })
    .element("AssumedRoleUser", |w| {
        w.text(
            "AssumedRoleId",
            &format!("{}:{session_name}", role.record.role_id),
        )
        .text("Arn", &assumed_arn);
    });
    Ok(w)
}
