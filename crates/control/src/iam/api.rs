//! The IAM API subset that the AWS CLI, boto3 and Terraform's `aws_iam_user`,
//! `aws_iam_access_key`, `aws_iam_role`, `aws_iam_role_policy`, `aws_iam_policy` and
//! `aws_iam_role_policy_attachment` need to create, read, update and destroy: users and their
//! access keys, roles, inline policies, customer managed policies with versions, attachments
//! (to customer managed and AWS managed policies), and tags. awsQuery in, XML out
//! (`query_wire.rs`); errors with IAM's codes and statuses (`NoSuchEntity` 404,
//! `EntityAlreadyExists` / `DeleteConflict` / `LimitExceeded` 409, `MalformedPolicyDocument`,
//! `ValidationError`, `InvalidInput` 400). Policy documents go out URL-encoded, as IAM sends
//! them.

use super::keys::{new_key_id, new_secret, new_unique_id};
use crate::access::iam_user_name;
use crate::auth::Caller;
use crate::plane::ControlPlane;
use crate::query_wire::{QueryError, QueryRequest, XmlWriter, IAM_NAMESPACE};
use crate::state::iam::{
    access_key_key, policy_key, role_key, user_key, AccessKeyRecord, IamTag, KeyOwner,
    PolicyRecord, PolicyVersion, RoleRecord, UserRecord,
};
use crate::state::repo::{self, commit, put_op};
use gantry_auth::managed::{self, ManagedPolicy};
use gantry_auth::policy::{PolicyDocument, PolicyKind};
use gantry_auth::sigv4::percent_encode;
use gantry_model::{now_epoch, EcsError};
use gantry_store::{Compare, TxnOp};
use serde::de::DeserializeOwned;
use serde::Serialize;

type IamResult = Result<XmlWriter, QueryError>;

pub async fn dispatch(
    plane: &ControlPlane,
    caller: &Caller,
    action: &str,
    r: &QueryRequest,
) -> IamResult {
    match action {
        "CreateUser" => create_user(plane, r).await,
        "GetUser" => get_user(plane, caller, r),
        "DeleteUser" => delete_user(plane, r).await,
        "ListUsers" => list_users(plane, r),
        "TagUser" | "UntagUser" => {
            let name = r.required("UserName")?;
            let (key, missing) = (user_key(name), Owner::User.missing(name));
            if action == "TagUser" {
                tag::<UserRecord>(plane, r, &key, missing, action).await
            } else {
                untag::<UserRecord>(plane, r, &key, missing, action).await
            }
        }
        "ListUserTags" => list_tags(action, &user(plane, r.required("UserName")?)?.tags),
        "ListGroupsForUser" => empty_list(plane, r, "ListGroupsForUser", "Groups", true),
        "ListMFADevices" => empty_list(plane, r, "ListMFADevices", "MFADevices", true),
        "ListSSHPublicKeys" => empty_list(plane, r, "ListSSHPublicKeys", "SSHPublicKeys", true),
        "ListServiceSpecificCredentials" => empty_list(
            plane,
            r,
            "ListServiceSpecificCredentials",
            "ServiceSpecificCredentials",
            true,
        ),
        "ListSigningCertificates" => {
            empty_list(plane, r, "ListSigningCertificates", "Certificates", true)
        }
        "GetLoginProfile" | "DeleteLoginProfile" => {
            // Gantry users have no console password.
            let name = r.required("UserName")?;
            user(plane, name)?;
            Err(no_such(format!(
                "Login Profile for User {name} cannot be found."
            )))
        }

        "CreateAccessKey" => create_access_key(plane, caller, r).await,
        "DeleteAccessKey" => delete_access_key(plane, caller, r).await,
        "UpdateAccessKey" => update_access_key(plane, caller, r).await,
        "ListAccessKeys" => list_access_keys(plane, caller, r),

        "PutUserPolicy" => put_inline::<UserRecord>(plane, r, Owner::User).await,
        "GetUserPolicy" => get_inline(plane, r, Owner::User),
        "DeleteUserPolicy" => delete_inline::<UserRecord>(plane, r, Owner::User).await,
        "ListUserPolicies" => list_inline(plane, r, Owner::User),
        "AttachUserPolicy" => attach::<UserRecord>(plane, r, Owner::User, true).await,
        "DetachUserPolicy" => attach::<UserRecord>(plane, r, Owner::User, false).await,
        "ListAttachedUserPolicies" => list_attached(plane, r, Owner::User),

        "CreateRole" => create_role(plane, r).await,
        "GetRole" => get_role(plane, r),
        "DeleteRole" => delete_role(plane, r).await,
        "ListRoles" => list_roles(plane, r),
        "UpdateRole" | "UpdateRoleDescription" => update_role(plane, action, r).await,
        "UpdateAssumeRolePolicy" => update_assume_role_policy(plane, r).await,
        "TagRole" | "UntagRole" => {
            let name = r.required("RoleName")?;
            let (key, missing) = (role_key(name), Owner::Role.missing(name));
            if action == "TagRole" {
                tag::<RoleRecord>(plane, r, &key, missing, action).await
            } else {
                untag::<RoleRecord>(plane, r, &key, missing, action).await
            }
        }
        "ListRoleTags" => list_tags(action, &role(plane, r.required("RoleName")?)?.tags),
        "ListInstanceProfilesForRole" => {
            role(plane, r.required("RoleName")?)?;
            empty_list(
                plane,
                r,
                "ListInstanceProfilesForRole",
                "InstanceProfiles",
                false,
            )
        }
        "PutRolePolicy" => put_inline::<RoleRecord>(plane, r, Owner::Role).await,
        "GetRolePolicy" => get_inline(plane, r, Owner::Role),
        "DeleteRolePolicy" => delete_inline::<RoleRecord>(plane, r, Owner::Role).await,
        "ListRolePolicies" => list_inline(plane, r, Owner::Role),
        "AttachRolePolicy" => attach::<RoleRecord>(plane, r, Owner::Role, true).await,
        "DetachRolePolicy" => attach::<RoleRecord>(plane, r, Owner::Role, false).await,
        "ListAttachedRolePolicies" => list_attached(plane, r, Owner::Role),

        "CreatePolicy" => create_policy(plane, r).await,
        "GetPolicy" => get_policy(plane, r),
        "DeletePolicy" => delete_policy(plane, r).await,
        "ListPolicies" => list_policies(plane, r),
        "CreatePolicyVersion" => create_policy_version(plane, r).await,
        "GetPolicyVersion" => get_policy_version(plane, r),
        "DeletePolicyVersion" => delete_policy_version(plane, r).await,
        "ListPolicyVersions" => list_policy_versions(plane, r),
        "SetDefaultPolicyVersion" => set_default_policy_version(plane, r).await,
        "ListEntitiesForPolicy" => list_entities_for_policy(plane, r),
        "TagPolicy" | "UntagPolicy" => {
            let arn = r.required("PolicyArn")?;
            let key = customer_policy_key(plane, arn)?;
            if action == "TagPolicy" {
                tag::<PolicyRecord>(plane, r, &key, policy_not_found(arn), action).await
            } else {
                untag::<PolicyRecord>(plane, r, &key, policy_not_found(arn), action).await
            }
        }
        "ListPolicyTags" => list_tags(action, &policy_tags(plane, r.required("PolicyArn")?)?),
        "GetAccountSummary" => get_account_summary(plane),
        _ => Err(QueryError::invalid_action(action, "2010-05-08")),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors, validation, encoding
// ---------------------------------------------------------------------------------------------

fn no_such(message: impl Into<String>) -> QueryError {
    QueryError::new("NoSuchEntity", message).with_status(404)
}
fn already_exists(message: impl Into<String>) -> QueryError {
    QueryError::new("EntityAlreadyExists", message).with_status(409)
}
fn delete_conflict(message: impl Into<String>) -> QueryError {
    QueryError::new("DeleteConflict", message).with_status(409)
}
fn limit_exceeded(message: impl Into<String>) -> QueryError {
    QueryError::new("LimitExceeded", message).with_status(409)
}
fn invalid_input(message: impl Into<String>) -> QueryError {
    QueryError::new("InvalidInput", message)
}

/// IAM errors raised inside a compare-and-swap closure travel as `EcsError`s with IAM's code.
fn from_ecs(e: EcsError) -> QueryError {
    match e.code {
        "ServerException" => QueryError::server(e.message),
        "NoSuchEntity" => no_such(e.message),
        "EntityAlreadyExists" => already_exists(e.message),
        "DeleteConflict" => delete_conflict(e.message),
        "LimitExceeded" => limit_exceeded(e.message),
        code => QueryError::new(code, e.message),
    }
}

/// `[\w+=,.@-]+`, 1 to `max` characters: IAM's user, role and policy names.
fn validate_name(member: &str, name: &str, max: usize) -> Result<(), QueryError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(QueryError::validation(format!(
            "1 validation error detected: Value '{name}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}"
        )))
    }
}

fn validate_path(path: &str) -> Result<(), QueryError> {
    if path.starts_with('/') && path.ends_with('/') && path.len() <= 512 {
        Ok(())
    } else {
        Err(QueryError::validation(format!(
            "1 validation error detected: Value '{path}' at 'path' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)"
        )))
    }
}

/// Checks a policy document as IAM does: valid grammar, and no larger than `max` characters
/// once whitespace is left out.
fn check_document(doc: &str, kind: PolicyKind, max: usize) -> Result<(), QueryError> {
    let size = doc.chars().filter(|c| !c.is_whitespace()).count();
    if size > max {
        return Err(limit_exceeded(format!(
            "Cannot exceed quota for PolicySize: {max}"
        )));
    }
    PolicyDocument::parse(doc, kind)
        .map(|_| ())
        .map_err(|e| QueryError::new("MalformedPolicyDocument", e))
}

fn tags_of(r: &QueryRequest) -> Result<Vec<IamTag>, QueryError> {
    let tags: Vec<IamTag> = r
        .tags("Tags")
        .into_iter()
        .map(|(key, value)| IamTag { key, value })
        .collect();
    if tags.len() > 50 {
        return Err(limit_exceeded(
            "The number of tags has reached the maximum limit.",
        ));
    }
    Ok(tags)
}

fn merge_tags(existing: &mut Vec<IamTag>, new: Vec<IamTag>) -> Result<(), EcsError> {
    for t in new {
        match existing.iter_mut().find(|e| e.key == t.key) {
            Some(e) => e.value = t.value,
            None => existing.push(t),
        }
    }
    if existing.len() > 50 {
        return Err(EcsError::new(
            "LimitExceeded",
            "The number of tags has reached the maximum limit.",
        ));
    }
    Ok(())
}

fn tag_pairs(tags: &[IamTag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

/// IAM paging: `Marker` (opaque here: the index to start at) and `MaxItems` (default 100).
fn page<T>(items: Vec<T>, r: &QueryRequest) -> Result<(Vec<T>, Option<String>), QueryError> {
    let start = match r.get("Marker") {
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| invalid_input("Invalid Marker."))?,
        None => 0,
    };
    let max = r.int("MaxItems")?.unwrap_or(100).clamp(1, 1000) as usize;
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Ok((page, next))
}

fn finish_page(w: &mut XmlWriter, next: Option<String>) {
    w.bool("IsTruncated", next.is_some());
    w.opt_text("Marker", next.as_deref());
}

fn write_user(w: &mut XmlWriter, u: &UserRecord) {
    w.text("Path", &u.path)
        .text("UserName", &u.user_name)
        .text("UserId", &u.user_id)
        .text("Arn", &u.arn)
        .timestamp("CreateDate", u.create_date);
    if !u.tags.is_empty() {
        w.tags("Tags", &tag_pairs(&u.tags));
    }
}

fn write_role(w: &mut XmlWriter, r: &RoleRecord, full: bool) {
    w.text("Path", &r.path)
        .text("RoleName", &r.role_name)
        .text("RoleId", &r.role_id)
        .text("Arn", &r.arn)
        .timestamp("CreateDate", r.create_date)
        .text(
            "AssumeRolePolicyDocument",
            &percent_encode(&r.assume_role_policy_document),
        )
        .opt_text("Description", r.description.as_deref())
        .int("MaxSessionDuration", r.max_session_duration);
    if !r.tags.is_empty() {
        w.tags("Tags", &tag_pairs(&r.tags));
    }
    if full {
        w.open("RoleLastUsed").close("RoleLastUsed");
    }
}

fn attachment_count(plane: &ControlPlane, arn: &str) -> i64 {
    plane.cache.iam(|i| {
        let users = i
            .users
            .values()
            .filter(|u| u.record.attached_policies.iter().any(|a| a == arn))
            .count();
        let roles = i
            .roles
            .values()
            .filter(|r| r.record.attached_policies.iter().any(|a| a == arn))
            .count();
        (users + roles) as i64
    })
}

fn write_policy(w: &mut XmlWriter, p: &PolicyRecord, attachments: i64) {
    w.text("PolicyName", &p.policy_name)
        .text("PolicyId", &p.policy_id)
        .text("Arn", &p.arn)
        .text("Path", &p.path)
        .text("DefaultVersionId", &p.default_version_id)
        .int("AttachmentCount", attachments)
        .int("PermissionsBoundaryUsageCount", 0)
        .bool("IsAttachable", true)
        .opt_text("Description", p.description.as_deref())
        .timestamp("CreateDate", p.create_date)
        .timestamp("UpdateDate", p.update_date);
    if !p.tags.is_empty() {
        w.tags("Tags", &tag_pairs(&p.tags));
    }
}

/// A built-in AWS managed policy, as GetPolicy shows it (fixed ids and dates).
fn write_managed(w: &mut XmlWriter, p: &ManagedPolicy, attachments: i64) {
    w.text("PolicyName", p.name)
        .text("PolicyId", &managed_id(p))
        .text("Arn", &p.arn())
        .text("Path", p.path)
        .text("DefaultVersionId", "v1")
        .int("AttachmentCount", attachments)
        .int("PermissionsBoundaryUsageCount", 0)
        .bool("IsAttachable", true)
        .text("Description", p.description)
        .timestamp("CreateDate", MANAGED_DATE)
        .timestamp("UpdateDate", MANAGED_DATE);
}

/// 2015-02-06, when AWS published most managed policies.
const MANAGED_DATE: f64 = 1_423_180_800.0;

fn managed_id(p: &ManagedPolicy) -> String {
    let hash = gantry_auth::sigv4::sha256_hex(p.name.as_bytes()).to_uppercase();
    format!("ANPA{}", &hash[..17])
}

// ---------------------------------------------------------------------------------------------
// Reads from the cache
// ---------------------------------------------------------------------------------------------

fn user(plane: &ControlPlane, name: &str) -> Result<UserRecord, QueryError> {
    plane
        .cache
        .iam(|i| i.users.get(name).map(|u| u.record.clone()))
        .ok_or_else(|| Owner::User.missing(name))
}

fn role(plane: &ControlPlane, name: &str) -> Result<RoleRecord, QueryError> {
    plane
        .cache
        .iam(|i| i.roles.get(name).map(|r| r.record.clone()))
        .ok_or_else(|| Owner::Role.missing(name))
}

fn customer_policy(plane: &ControlPlane, arn: &str) -> Option<PolicyRecord> {
    plane
        .cache
        .iam(|i| i.policies.get(arn).map(|p| p.record.clone()))
}

fn policy_not_found(arn: &str) -> QueryError {
    no_such(format!("Policy {arn} was not found."))
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

/// Creates `key` only if it does not exist.
async fn create<T: Serialize>(
    plane: &ControlPlane,
    key: &str,
    value: &T,
    exists: QueryError,
) -> Result<(), QueryError> {
    let created = commit(
        &*plane.store,
        vec![Compare::ModRevision {
            key: key.to_string(),
            rev: 0,
        }],
        vec![put_op(key, value).map_err(from_ecs)?],
    )
    .await
    .map_err(from_ecs)?;
    if created {
        Ok(())
    } else {
        Err(exists)
    }
}

/// Read-modify-write of one record; `missing` when it does not exist.
async fn update<T, F>(
    plane: &ControlPlane,
    key: &str,
    missing: QueryError,
    change: F,
) -> Result<T, QueryError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&mut T) -> Result<(), EcsError>,
{
    repo::update::<T, F>(&*plane.store, key, change)
        .await
        .map_err(from_ecs)?
        .ok_or(missing)
}

// ---------------------------------------------------------------------------------------------
// Users and access keys
// ---------------------------------------------------------------------------------------------

async fn create_user(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let name = r.required("UserName")?;
    validate_name("userName", name, 64)?;
    let path = r.get("Path").unwrap_or("/");
    validate_path(path)?;
    let user = UserRecord {
        user_name: name.to_string(),
        user_id: new_unique_id("AIDA"),
        arn: format!("arn:aws:iam::{}:user{path}{name}", plane.scope().account),
        path: path.to_string(),
        create_date: now_epoch(),
        tags: tags_of(r)?,
        inline_policies: Default::default(),
        attached_policies: Vec::new(),
    };
    create(
        plane,
        &user_key(name),
        &user,
        already_exists(format!("User with name {name} already exists.")),
    )
    .await?;
    let mut w = XmlWriter::response("CreateUser", IAM_NAMESPACE);
    w.element("User", |w| write_user(w, &user));
    Ok(w)
}

fn get_user(plane: &ControlPlane, caller: &Caller, r: &QueryRequest) -> IamResult {
    let Some(name) = iam_user_name(caller, r) else {
        return Err(QueryError::validation(
            "Must specify userName when calling with non-User credentials",
        ));
    };
    let u = user(plane, &name)?;
    let mut w = XmlWriter::response("GetUser", IAM_NAMESPACE);
    w.element("User", |w| write_user(w, &u));
    Ok(w)
}

async fn delete_user(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let name = r.required("UserName")?;
    let u = user(plane, name)?;
    let has_keys = plane.cache.iam(|i| {
        i.keys
            .values()
            .any(|k| matches!(&k.owner, KeyOwner::User { user_name } if user_name == name))
    });
    if has_keys {
        return Err(delete_conflict(
            "Cannot delete entity, must delete access keys first.",
        ));
    }
    if !u.inline_policies.is_empty() {
        return Err(delete_conflict(
            "Cannot delete entity, must delete policies first.",
        ));
    }
    if !u.attached_policies.is_empty() {
        return Err(delete_conflict(
            "Cannot delete entity, must detach all policies first.",
        ));
    }
    delete_key(plane, &user_key(name)).await?;
    Ok(XmlWriter::empty("DeleteUser", IAM_NAMESPACE))
}

async fn delete_key(plane: &ControlPlane, key: &str) -> Result<(), QueryError> {
    commit(
        &*plane.store,
        Vec::new(),
        vec![TxnOp::Delete {
            key: key.to_string(),
        }],
    )
    .await
    .map_err(from_ecs)?;
    Ok(())
}

fn list_users(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let prefix = r.get("PathPrefix").unwrap_or("/");
    let mut users: Vec<UserRecord> = plane.cache.iam(|i| {
        i.users
            .values()
            .filter(|u| u.record.path.starts_with(prefix))
            .map(|u| u.record.clone())
            .collect()
    });
    users.sort_by(|a, b| a.user_name.cmp(&b.user_name));
    let (users, next) = page(users, r)?;
    let mut w = XmlWriter::response("ListUsers", IAM_NAMESPACE);
    w.list("Users", &users, write_user);
    finish_page(&mut w, next);
    Ok(w)
}

/// Lists that Gantry never has members of (groups, MFA devices, …), answered empty so that
/// clients that always call them (Terraform deleting a user) go on.
fn empty_list(
    plane: &ControlPlane,
    r: &QueryRequest,
    action: &str,
    member: &str,
    of_user: bool,
) -> IamResult {
    if of_user {
        user(plane, r.required("UserName")?)?;
    }
    let mut w = XmlWriter::response(action, IAM_NAMESPACE);
    w.empty_element(member).bool("IsTruncated", false);
    Ok(w)
}

fn user_keys(plane: &ControlPlane, name: &str) -> Vec<AccessKeyRecord> {
    let mut keys: Vec<AccessKeyRecord> = plane.cache.iam(|i| {
        i.keys
            .values()
            .filter(|k| matches!(&k.owner, KeyOwner::User { user_name } if user_name == name))
            .map(|k| (**k).clone())
            .collect()
    });
    keys.sort_by(|a, b| a.create_date.total_cmp(&b.create_date));
    keys
}

fn caller_user(caller: &Caller, r: &QueryRequest) -> Result<String, QueryError> {
    iam_user_name(caller, r).ok_or_else(|| {
        QueryError::validation("Must specify userName when calling with non-User credentials")
    })
}

async fn create_access_key(plane: &ControlPlane, caller: &Caller, r: &QueryRequest) -> IamResult {
    let name = caller_user(caller, r)?;
    let u = user(plane, &name)?;
    if user_keys(plane, &name).len() >= 2 {
        return Err(limit_exceeded(
            "Cannot exceed quota for AccessKeysPerUser: 2",
        ));
    }
    let key = AccessKeyRecord {
        access_key_id: new_key_id("AKIA"),
        secret_access_key: new_secret(),
        status: "Active".into(),
        create_date: now_epoch(),
        owner: KeyOwner::User {
            user_name: u.user_name.clone(),
        },
    };
    // Guarded on the user: a key is never created for a user deleted at the same moment.
    let created = commit(
        &*plane.store,
        vec![repo::unchanged_since(
            &user_key(&name),
            plane
                .store
                .get(&user_key(&name))
                .await
                .map_err(|e| QueryError::server(e.to_string()))?
                .map(|kv| kv.mod_revision)
                .unwrap_or(0),
        )],
        vec![put_op(&access_key_key(&key.access_key_id), &key).map_err(from_ecs)?],
    )
    .await
    .map_err(from_ecs)?;
    if !created {
        return Err(Owner::User.missing(&name));
    }
    let mut w = XmlWriter::response("CreateAccessKey", IAM_NAMESPACE);
    w.element("AccessKey", |w| {
        w.text("UserName", &u.user_name)
            .text("AccessKeyId", &key.access_key_id)
            .text("Status", &key.status)
            .text("SecretAccessKey", &key.secret_access_key)
            .timestamp("CreateDate", key.create_date);
    });
    Ok(w)
}

fn owned_key(
    plane: &ControlPlane,
    user_name: &str,
    id: &str,
) -> Result<AccessKeyRecord, QueryError> {
    plane
        .cache
        .iam(|i| i.keys.get(id).map(|k| (**k).clone()))
        .filter(|k| matches!(&k.owner, KeyOwner::User { user_name: u } if u == user_name))
        .ok_or_else(|| no_such(format!("The Access Key with id {id} cannot be found")))
}

async fn delete_access_key(plane: &ControlPlane, caller: &Caller, r: &QueryRequest) -> IamResult {
    let name = caller_user(caller, r)?;
    let id = r.required("AccessKeyId")?;
    owned_key(plane, &name, id)?;
    delete_key(plane, &access_key_key(id)).await?;
    Ok(XmlWriter::empty("DeleteAccessKey", IAM_NAMESPACE))
}

async fn update_access_key(plane: &ControlPlane, caller: &Caller, r: &QueryRequest) -> IamResult {
    let name = caller_user(caller, r)?;
    let id = r.required("AccessKeyId")?;
    let status = r.required("Status")?.to_string();
    if status != "Active" && status != "Inactive" {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{status}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"
        )));
    }
    owned_key(plane, &name, id)?;
    update::<AccessKeyRecord, _>(
        plane,
        &access_key_key(id),
        no_such(format!("The Access Key with id {id} cannot be found")),
        |k| {
            k.status = status.clone();
            Ok(())
        },
    )
    .await?;
    Ok(XmlWriter::empty("UpdateAccessKey", IAM_NAMESPACE))
}

fn list_access_keys(plane: &ControlPlane, caller: &Caller, r: &QueryRequest) -> IamResult {
    let name = caller_user(caller, r)?;
    user(plane, &name)?;
    let keys = user_keys(plane, &name);
    let mut w = XmlWriter::response("ListAccessKeys", IAM_NAMESPACE);
    w.list("AccessKeyMetadata", &keys, |w, k| {
        w.text("UserName", &name)
            .text("AccessKeyId", &k.access_key_id)
            .text("Status", &k.status)
            .timestamp("CreateDate", k.create_date);
    })
    .bool("IsTruncated", false);
    Ok(w)
}

// ---------------------------------------------------------------------------------------------
// Inline policies and attachments, for users and roles alike
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Owner {
    User,
    Role,
}

/// What users and roles share: inline policies and attached managed policies.
trait PolicyHolder: Serialize + DeserializeOwned {
    fn inline(&mut self) -> &mut std::collections::BTreeMap<String, String>;
    fn attached(&mut self) -> &mut Vec<String>;
}
impl PolicyHolder for UserRecord {
    fn inline(&mut self) -> &mut std::collections::BTreeMap<String, String> {
        &mut self.inline_policies
    }
    fn attached(&mut self) -> &mut Vec<String> {
        &mut self.attached_policies
    }
}
impl PolicyHolder for RoleRecord {
    fn inline(&mut self) -> &mut std::collections::BTreeMap<String, String> {
        &mut self.inline_policies
    }
    fn attached(&mut self) -> &mut Vec<String> {
        &mut self.attached_policies
    }
}

impl Owner {
    fn member(self) -> &'static str {
        match self {
            Owner::User => "UserName",
            Owner::Role => "RoleName",
        }
    }
    fn key(self, name: &str) -> String {
        match self {
            Owner::User => user_key(name),
            Owner::Role => role_key(name),
        }
    }
    fn missing(self, name: &str) -> QueryError {
        match self {
            Owner::User => no_such(format!("The user with name {name} cannot be found.")),
            Owner::Role => no_such(format!("The role with name {name} cannot be found.")),
        }
    }
    /// (inline policies, attached ARNs) as the cache has them.
    fn read(
        self,
        plane: &ControlPlane,
        name: &str,
    ) -> Result<(std::collections::BTreeMap<String, String>, Vec<String>), QueryError> {
        match self {
            Owner::User => user(plane, name).map(|u| (u.inline_policies, u.attached_policies)),
            Owner::Role => role(plane, name).map(|r| (r.inline_policies, r.attached_policies)),
        }
    }
    /// Inline policy size limits: 2,048 for users, 10,240 for roles.
    fn inline_limit(self) -> usize {
        match self {
            Owner::User => 2048,
            Owner::Role => 10240,
        }
    }
    fn action(self, verb: &str) -> String {
        match self {
            Owner::User => format!("{verb}UserPolicy"),
            Owner::Role => format!("{verb}RolePolicy"),
        }
    }
}

async fn put_inline<T: PolicyHolder>(
    plane: &ControlPlane,
    r: &QueryRequest,
    o: Owner,
) -> IamResult {
    let name = r.required(o.member())?;
    let policy_name = r.required("PolicyName")?.to_string();
    validate_name("policyName", &policy_name, 128)?;
    let doc = r.required("PolicyDocument")?.to_string();
    check_document(&doc, PolicyKind::Identity, o.inline_limit())?;
    update::<T, _>(plane, &o.key(name), o.missing(name), |h| {
        h.inline().insert(policy_name.clone(), doc.clone());
        Ok(())
    })
    .await?;
    Ok(XmlWriter::empty(&o.action("Put"), IAM_NAMESPACE))
}

fn get_inline(plane: &ControlPlane, r: &QueryRequest, o: Owner) -> IamResult {
    let name = r.required(o.member())?;
    let policy_name = r.required("PolicyName")?;
    let (inline, _) = o.read(plane, name)?;
    let doc = inline.get(policy_name).ok_or_else(|| {
        no_such(format!(
            "The {} policy with name {policy_name} cannot be found.",
            match o {
                Owner::User => "user",
                Owner::Role => "role",
            }
        ))
    })?;
    let mut w = XmlWriter::response(&o.action("Get"), IAM_NAMESPACE);
    w.text(o.member(), name)
        .text("PolicyName", policy_name)
        .text("PolicyDocument", &percent_encode(doc));
    Ok(w)
}

async fn delete_inline<T: PolicyHolder>(
    plane: &ControlPlane,
    r: &QueryRequest,
    o: Owner,
) -> IamResult {
    let name = r.required(o.member())?;
    let policy_name = r.required("PolicyName")?.to_string();
    update::<T, _>(plane, &o.key(name), o.missing(name), |h| {
        if h.inline().remove(&policy_name).is_none() {
            return Err(EcsError::new(
                "NoSuchEntity",
                format!("The policy with name {policy_name} cannot be found."),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(XmlWriter::empty(&o.action("Delete"), IAM_NAMESPACE))
}

fn list_inline(plane: &ControlPlane, r: &QueryRequest, o: Owner) -> IamResult {
    let name = r.required(o.member())?;
    let (inline, _) = o.read(plane, name)?;
    let names: Vec<String> = inline.keys().cloned().collect();
    let (names, next) = page(names, r)?;
    let action = match o {
        Owner::User => "ListUserPolicies",
        Owner::Role => "ListRolePolicies",
    };
    let mut w = XmlWriter::response(action, IAM_NAMESPACE);
    w.string_list("PolicyNames", &names);
    finish_page(&mut w, next);
    Ok(w)
}

/// The name of a managed policy (customer or AWS) by ARN, if it exists.
fn managed_policy_name(plane: &ControlPlane, arn: &str) -> Option<String> {
    customer_policy(plane, arn)
        .map(|p| p.policy_name)
        .or_else(|| managed::find(arn).map(|p| p.name.to_string()))
}

async fn attach<T: PolicyHolder>(
    plane: &ControlPlane,
    r: &QueryRequest,
    o: Owner,
    attach: bool,
) -> IamResult {
    let name = r.required(o.member())?;
    let arn = r.required("PolicyArn")?.to_string();
    if attach && managed_policy_name(plane, &arn).is_none() {
        return Err(no_such(format!(
            "Policy {arn} does not exist or is not attachable."
        )));
    }
    update::<T, _>(plane, &o.key(name), o.missing(name), |h| {
        let list = h.attached();
        if attach {
            if !list.contains(&arn) {
                if list.len() >= 10 {
                    return Err(EcsError::new(
                        "LimitExceeded",
                        "Cannot exceed quota for PoliciesPerRole: 10",
                    ));
                }
                list.push(arn.clone());
            }
        } else {
            if !list.contains(&arn) {
                return Err(EcsError::new(
                    "NoSuchEntity",
                    format!("Policy {arn} was not found."),
                ));
            }
            list.retain(|a| a != &arn);
        }
        Ok(())
    })
    .await?;
    let verb = if attach { "Attach" } else { "Detach" };
    Ok(XmlWriter::empty(&o.action(verb), IAM_NAMESPACE))
}

fn list_attached(plane: &ControlPlane, r: &QueryRequest, o: Owner) -> IamResult {
    let name = r.required(o.member())?;
    let (_, attached) = o.read(plane, name)?;
    let pairs: Vec<(String, String)> = attached
        .iter()
        .filter_map(|arn| managed_policy_name(plane, arn).map(|n| (n, arn.clone())))
        .collect();
    let (pairs, next) = page(pairs, r)?;
    let action = match o {
        Owner::User => "ListAttachedUserPolicies",
        Owner::Role => "ListAttachedRolePolicies",
    };
    let mut w = XmlWriter::response(action, IAM_NAMESPACE);
    w.list("AttachedPolicies", &pairs, |w, (n, arn)| {
        w.text("PolicyName", n).text("PolicyArn", arn);
    });
    finish_page(&mut w, next);
    Ok(w)
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

fn max_session(r: &QueryRequest) -> Result<i64, QueryError> {
    let v = r.int("MaxSessionDuration")?.unwrap_or(3600);
    if !(3600..=43200).contains(&v) {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{v}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value greater than or equal to 3600 and less than or equal to 43200"
        )));
    }
    Ok(v)
}

async fn create_role(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let name = r.required("RoleName")?;
    validate_name("roleName", name, 64)?;
    let path = r.get("Path").unwrap_or("/");
    validate_path(path)?;
    let doc = r.required("AssumeRolePolicyDocument")?;
    check_document(doc, PolicyKind::Trust, 2048)?;
    let role = RoleRecord {
        role_name: name.to_string(),
        role_id: new_unique_id("AROA"),
        arn: format!("arn:aws:iam::{}:role{path}{name}", plane.scope().account),
        path: path.to_string(),
        create_date: now_epoch(),
        assume_role_policy_document: doc.to_string(),
        description: r.get("Description").map(str::to_string),
        max_session_duration: max_session(r)?,
        tags: tags_of(r)?,
        inline_policies: Default::default(),
        attached_policies: Vec::new(),
    };
    create(
        plane,
        &role_key(name),
        &role,
        already_exists(format!("Role with name {name} already exists.")),
    )
    .await?;
    let mut w = XmlWriter::response("CreateRole", IAM_NAMESPACE);
    w.element("Role", |w| write_role(w, &role, false));
    Ok(w)
}

fn get_role(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let role = role(plane, r.required("RoleName")?)?;
    let mut w = XmlWriter::response("GetRole", IAM_NAMESPACE);
    w.element("Role", |w| write_role(w, &role, true));
    Ok(w)
}

async fn delete_role(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let name = r.required("RoleName")?;
    let role = role(plane, name)?;
    if !role.inline_policies.is_empty() {
        return Err(delete_conflict(
            "Cannot delete entity, must delete policies first.",
        ));
    }
    if !role.attached_policies.is_empty() {
        return Err(delete_conflict(
            "Cannot delete entity, must detach all policies first.",
        ));
    }
    // Sessions of a deleted role stop working with it (authentication finds no role).
    let sessions: Vec<String> = plane.cache.iam(|i| {
        i.keys
            .values()
            .filter(
                |k| matches!(&k.owner, KeyOwner::Session { role_name, .. } if role_name == name),
            )
            .map(|k| access_key_key(&k.access_key_id))
            .collect()
    });
    let mut ops = vec![TxnOp::Delete {
        key: role_key(name),
    }];
    ops.extend(sessions.into_iter().map(|key| TxnOp::Delete { key }));
    commit(&*plane.store, Vec::new(), ops)
        .await
        .map_err(from_ecs)?;
    Ok(XmlWriter::empty("DeleteRole", IAM_NAMESPACE))
}

fn list_roles(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let prefix = r.get("PathPrefix").unwrap_or("/");
    let mut roles: Vec<RoleRecord> = plane.cache.iam(|i| {
        i.roles
            .values()
            .filter(|x| x.record.path.starts_with(prefix))
            .map(|x| x.record.clone())
            .collect()
    });
    roles.sort_by(|a, b| a.role_name.cmp(&b.role_name));
    let (roles, next) = page(roles, r)?;
    let mut w = XmlWriter::response("ListRoles", IAM_NAMESPACE);
    w.list("Roles", &roles, |w, x| write_role(w, x, false));
    finish_page(&mut w, next);
    Ok(w)
}

async fn update_role(plane: &ControlPlane, action: &str, r: &QueryRequest) -> IamResult {
    let name = r.required("RoleName")?;
    let description = r.get("Description").map(str::to_string);
    let max = if r.contains("MaxSessionDuration") {
        Some(max_session(r)?)
    } else {
        None
    };
    let role = update::<RoleRecord, _>(plane, &role_key(name), Owner::Role.missing(name), |x| {
        if description.is_some() {
            x.description = description.clone();
        }
        if let Some(m) = max {
            x.max_session_duration = m;
        }
        Ok(())
    })
    .await?;
    if action == "UpdateRoleDescription" {
        let mut w = XmlWriter::response(action, IAM_NAMESPACE);
        w.element("Role", |w| write_role(w, &role, false));
        return Ok(w);
    }
    Ok(XmlWriter::response(action, IAM_NAMESPACE))
}

async fn update_assume_role_policy(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let name = r.required("RoleName")?;
    let doc = r.required("PolicyDocument")?.to_string();
    check_document(&doc, PolicyKind::Trust, 2048)?;
    update::<RoleRecord, _>(plane, &role_key(name), Owner::Role.missing(name), |x| {
        x.assume_role_policy_document = doc.clone();
        Ok(())
    })
    .await?;
    Ok(XmlWriter::empty("UpdateAssumeRolePolicy", IAM_NAMESPACE))
}

// ---------------------------------------------------------------------------------------------
// Customer managed policies
// ---------------------------------------------------------------------------------------------

/// The customer policy's store key from its ARN (`arn:aws:iam::<acct>:policy<path><name>`).
fn customer_policy_key(plane: &ControlPlane, arn: &str) -> Result<String, QueryError> {
    let p = customer_policy(plane, arn).ok_or_else(|| policy_not_found(arn))?;
    Ok(policy_key(&p.policy_name))
}

async fn create_policy(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let name = r.required("PolicyName")?;
    validate_name("policyName", name, 128)?;
    let path = r.get("Path").unwrap_or("/");
    validate_path(path)?;
    let doc = r.required("PolicyDocument")?;
    check_document(doc, PolicyKind::Identity, 6144)?;
    let now = now_epoch();
    let policy = PolicyRecord {
        policy_name: name.to_string(),
        policy_id: new_unique_id("ANPA"),
        arn: format!("arn:aws:iam::{}:policy{path}{name}", plane.scope().account),
        path: path.to_string(),
        description: r.get("Description").map(str::to_string),
        create_date: now,
        update_date: now,
        default_version_id: "v1".into(),
        versions: vec![PolicyVersion {
            version_id: "v1".into(),
            document: doc.to_string(),
            create_date: now,
        }],
        next_version: 2,
        tags: tags_of(r)?,
    };
    create(
        plane,
        &policy_key(name),
        &policy,
        already_exists(format!(
            "A policy called {name} already exists. Duplicate names are not allowed."
        )),
    )
    .await?;
    let mut w = XmlWriter::response("CreatePolicy", IAM_NAMESPACE);
    w.element("Policy", |w| write_policy(w, &policy, 0));
    Ok(w)
}

fn get_policy(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let count = attachment_count(plane, arn);
    let mut w = XmlWriter::response("GetPolicy", IAM_NAMESPACE);
    if let Some(p) = customer_policy(plane, arn) {
        w.element("Policy", |w| write_policy(w, &p, count));
    } else if let Some(m) = managed::find(arn) {
        w.element("Policy", |w| write_managed(w, m, count));
    } else {
        return Err(policy_not_found(arn));
    }
    Ok(w)
}

async fn delete_policy(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let p = customer_policy(plane, arn).ok_or_else(|| policy_not_found(arn))?;
    if attachment_count(plane, arn) > 0 {
        return Err(delete_conflict(
            "Cannot delete a policy attached to entities.",
        ));
    }
    if p.versions.len() > 1 {
        return Err(delete_conflict(
            "Cannot delete a policy with versions other than the default version.",
        ));
    }
    delete_key(plane, &policy_key(&p.policy_name)).await?;
    Ok(XmlWriter::empty("DeletePolicy", IAM_NAMESPACE))
}

fn list_policies(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let scope = r.get("Scope").unwrap_or("All");
    let only_attached = r.bool("OnlyAttached")?.unwrap_or(false);
    let prefix = r.get("PathPrefix").unwrap_or("/");
    enum Item {
        Customer(Box<PolicyRecord>),
        Aws(&'static ManagedPolicy),
    }
    let mut items: Vec<(String, Item, i64)> = Vec::new();
    if scope == "All" || scope == "Local" {
        let customer: Vec<PolicyRecord> = plane
            .cache
            .iam(|i| i.policies.values().map(|p| p.record.clone()).collect());
        for p in customer {
            let n = attachment_count(plane, &p.arn);
            items.push((p.policy_name.clone(), Item::Customer(Box::new(p)), n));
        }
    }
    if scope == "All" || scope == "AWS" {
        for m in managed::aws_managed() {
            let n = attachment_count(plane, &m.arn());
            items.push((m.name.to_string(), Item::Aws(m), n));
        }
    }
    items.retain(|(_, item, n)| {
        let path = match item {
            Item::Customer(p) => p.path.as_str(),
            Item::Aws(m) => m.path,
        };
        path.starts_with(prefix) && (!only_attached || *n > 0)
    });
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let (items, next) = page(items, r)?;
    let mut w = XmlWriter::response("ListPolicies", IAM_NAMESPACE);
    w.list("Policies", &items, |w, (_, item, n)| match item {
        Item::Customer(p) => write_policy(w, p, *n),
        Item::Aws(m) => write_managed(w, m, *n),
    });
    finish_page(&mut w, next);
    Ok(w)
}

async fn create_policy_version(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let doc = r.required("PolicyDocument")?.to_string();
    check_document(&doc, PolicyKind::Identity, 6144)?;
    let set_default = r.bool("SetAsDefault")?.unwrap_or(false);
    let key = customer_policy_key(plane, arn)?;
    let mut created = None;
    update::<PolicyRecord, _>(plane, &key, policy_not_found(arn), |p| {
        if p.versions.len() >= 5 {
            return Err(EcsError::new(
                "LimitExceeded",
                "A managed policy can have up to 5 versions. Before you create a new version, you must delete an existing version.",
            ));
        }
        let now = now_epoch();
        let v = PolicyVersion {
            version_id: format!("v{}", p.next_version),
            document: doc.clone(),
            create_date: now,
        };
        p.next_version += 1;
        if set_default {
            p.default_version_id = v.version_id.clone();
        }
        p.update_date = now;
        created = Some(v.clone());
        p.versions.push(v);
        Ok(())
    })
    .await?;
    let v = created.ok_or_else(|| QueryError::server("The policy version was not created."))?;
    let mut w = XmlWriter::response("CreatePolicyVersion", IAM_NAMESPACE);
    w.element("PolicyVersion", |w| {
        w.text("VersionId", &v.version_id)
            .bool("IsDefaultVersion", set_default)
            .timestamp("CreateDate", v.create_date);
    });
    Ok(w)
}

fn get_policy_version(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let id = r.required("VersionId")?;
    let (doc, default, created) = if let Some(p) = customer_policy(plane, arn) {
        let v = p
            .versions
            .iter()
            .find(|v| v.version_id == id)
            .ok_or_else(|| no_such(format!("Policy {arn} version {id} does not exist.")))?;
        (
            v.document.clone(),
            p.default_version_id == id,
            v.create_date,
        )
    } else if let Some(m) = managed::find(arn).filter(|_| id == "v1") {
        (m.document.to_string(), true, MANAGED_DATE)
    } else {
        return Err(no_such(format!(
            "Policy {arn} version {id} does not exist."
        )));
    };
    let mut w = XmlWriter::response("GetPolicyVersion", IAM_NAMESPACE);
    w.element("PolicyVersion", |w| {
        w.text("Document", &percent_encode(&doc))
            .text("VersionId", id)
            .bool("IsDefaultVersion", default)
            .timestamp("CreateDate", created);
    });
    Ok(w)
}

async fn delete_policy_version(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let id = r.required("VersionId")?.to_string();
    let key = customer_policy_key(plane, arn)?;
    update::<PolicyRecord, _>(plane, &key, policy_not_found(arn), |p| {
        if p.default_version_id == id {
            return Err(EcsError::new(
                "DeleteConflict",
                "Cannot delete the default version of a policy.",
            ));
        }
        let before = p.versions.len();
        p.versions.retain(|v| v.version_id != id);
        if p.versions.len() == before {
            return Err(EcsError::new(
                "NoSuchEntity",
                format!("Policy {} version {id} does not exist.", p.arn),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(XmlWriter::empty("DeletePolicyVersion", IAM_NAMESPACE))
}

fn list_policy_versions(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let versions: Vec<(String, bool, f64)> = if let Some(p) = customer_policy(plane, arn) {
        p.versions
            .iter()
            .rev()
            .map(|v| {
                (
                    v.version_id.clone(),
                    v.version_id == p.default_version_id,
                    v.create_date,
                )
            })
            .collect()
    } else if managed::find(arn).is_some() {
        vec![("v1".to_string(), true, MANAGED_DATE)]
    } else {
        return Err(policy_not_found(arn));
    };
    let mut w = XmlWriter::response("ListPolicyVersions", IAM_NAMESPACE);
    w.list("Versions", &versions, |w, (id, default, created)| {
        w.text("VersionId", id)
            .bool("IsDefaultVersion", *default)
            .timestamp("CreateDate", *created);
    })
    .bool("IsTruncated", false);
    Ok(w)
}

async fn set_default_policy_version(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    let id = r.required("VersionId")?.to_string();
    let key = customer_policy_key(plane, arn)?;
    update::<PolicyRecord, _>(plane, &key, policy_not_found(arn), |p| {
        if !p.versions.iter().any(|v| v.version_id == id) {
            return Err(EcsError::new(
                "NoSuchEntity",
                format!("Policy {} version {id} does not exist.", p.arn),
            ));
        }
        p.default_version_id = id.clone();
        p.update_date = now_epoch();
        Ok(())
    })
    .await?;
    Ok(XmlWriter::empty("SetDefaultPolicyVersion", IAM_NAMESPACE))
}

fn list_entities_for_policy(plane: &ControlPlane, r: &QueryRequest) -> IamResult {
    let arn = r.required("PolicyArn")?;
    if managed_policy_name(plane, arn).is_none() {
        return Err(policy_not_found(arn));
    }
    type Named = Vec<(String, String)>;
    let (users, roles): (Named, Named) = plane.cache.iam(|i| {
        let users = i
            .users
            .values()
            .filter(|u| u.record.attached_policies.iter().any(|a| a == arn))
            .map(|u| (u.record.user_name.clone(), u.record.user_id.clone()))
            .collect();
        let roles = i
            .roles
            .values()
            .filter(|x| x.record.attached_policies.iter().any(|a| a == arn))
            .map(|x| (x.record.role_name.clone(), x.record.role_id.clone()))
            .collect();
        (users, roles)
    });
    let mut w = XmlWriter::response("ListEntitiesForPolicy", IAM_NAMESPACE);
    w.empty_element("PolicyGroups")
        .list("PolicyUsers", &users, |w, (n, id)| {
            w.text("UserName", n).text("UserId", id);
        })
        .list("PolicyRoles", &roles, |w, (n, id)| {
            w.text("RoleName", n).text("RoleId", id);
        })
        .bool("IsTruncated", false);
    Ok(w)
}

/// Records that carry IAM tags: users, roles, customer managed policies.
trait Tagged: Serialize + DeserializeOwned {
    fn tags_mut(&mut self) -> &mut Vec<IamTag>;
}
impl Tagged for UserRecord {
    fn tags_mut(&mut self) -> &mut Vec<IamTag> {
        &mut self.tags
    }
}
impl Tagged for RoleRecord {
    fn tags_mut(&mut self) -> &mut Vec<IamTag> {
        &mut self.tags
    }
}
impl Tagged for PolicyRecord {
    fn tags_mut(&mut self) -> &mut Vec<IamTag> {
        &mut self.tags
    }
}

/// TagUser, TagRole, TagPolicy: the request's `Tags` merged into the record at `key`.
async fn tag<T: Tagged>(
    plane: &ControlPlane,
    r: &QueryRequest,
    key: &str,
    missing: QueryError,
    action: &str,
) -> IamResult {
    let tags = tags_of(r)?;
    update::<T, _>(plane, key, missing, |x| {
        merge_tags(x.tags_mut(), tags.clone())
    })
    .await?;
    Ok(XmlWriter::empty(action, IAM_NAMESPACE))
}

/// UntagUser, UntagRole, UntagPolicy: the request's `TagKeys` removed from the record.
async fn untag<T: Tagged>(
    plane: &ControlPlane,
    r: &QueryRequest,
    key: &str,
    missing: QueryError,
    action: &str,
) -> IamResult {
    let keys = r.string_list("TagKeys");
    update::<T, _>(plane, key, missing, |x| {
        x.tags_mut().retain(|t| !keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(XmlWriter::empty(action, IAM_NAMESPACE))
}

/// ListUserTags, ListRoleTags, ListPolicyTags (never truncated: at most 50 tags).
fn list_tags(action: &str, tags: &[IamTag]) -> IamResult {
    let mut w = XmlWriter::response(action, IAM_NAMESPACE);
    w.tags("Tags", &tag_pairs(tags)).bool("IsTruncated", false);
    Ok(w)
}

fn policy_tags(plane: &ControlPlane, arn: &str) -> Result<Vec<IamTag>, QueryError> {
    match customer_policy(plane, arn) {
        Some(p) => Ok(p.tags),
        None if managed::find(arn).is_some() => Ok(Vec::new()),
        None => Err(policy_not_found(arn)),
    }
}

fn get_account_summary(plane: &ControlPlane) -> IamResult {
    let (users, roles, policies) = plane
        .cache
        .iam(|i| (i.users.len(), i.roles.len(), i.policies.len()));
    let entries = vec![
        ("Users".to_string(), users.to_string()),
        ("Roles".to_string(), roles.to_string()),
        ("Policies".to_string(), policies.to_string()),
        ("AccessKeysPerUserQuota".to_string(), "2".to_string()),
    ];
    let mut w = XmlWriter::response("GetAccountSummary", IAM_NAMESPACE);
    w.map("SummaryMap", &entries, "key", "value");
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_percent_encoded_as_iam_returns_them() {
        assert_eq!(
            percent_encode(r#"{"Version": "2012-10-17"}"#),
            "%7B%22Version%22%3A%20%222012-10-17%22%7D"
        );
    }

    #[test]
    fn names_follow_iams_pattern() {
        assert!(validate_name("roleName", "ecs-task_exec.role+=,@", 64).is_ok());
        assert!(validate_name("roleName", "", 64).is_err());
        assert!(validate_name("roleName", "has space", 64).is_err());
        assert!(validate_name("roleName", &"a".repeat(65), 64).is_err());
        assert!(validate_path("/").is_ok());
        assert!(validate_path("/service-role/").is_ok());
        assert!(validate_path("service-role").is_err());
    }

    #[test]
    fn compare_and_swap_errors_keep_iams_codes() {
        let e = from_ecs(EcsError::new("LimitExceeded", "x"));
        assert_eq!((e.code, e.status), ("LimitExceeded", 409));
        let e = from_ecs(EcsError::new("NoSuchEntity", "x"));
        assert_eq!((e.code, e.status), ("NoSuchEntity", 404));
    }
}
