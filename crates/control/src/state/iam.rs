//! IAM records (users, roles, customer managed policies, access keys, the agent join token)
//! and their in-memory index, which the state cache keeps current from the store's watch.
//!
//! Keys (values are JSON):
//! - `iam/users/<name>`            → [`UserRecord`] (inline policies and attachments included)
//! - `iam/roles/<name>`            → [`RoleRecord`]
//! - `iam/policies/<name>`         → [`PolicyRecord`] (customer managed; every version)
//! - `iam/access-keys/<key id>`    → [`AccessKeyRecord`] (users', agents' and sessions' keys)
//! - `iam/agent-join-token`        → [`JoinTokenRecord`] (a hash, never the token)
//!
//! Why in the cache: every API call authenticates and authorises, so the key, the principal
//! and its policies must be a few hash lookups away, with documents parsed once when they are
//! written, never per call. A key deleted or a policy changed through any writer shows here
//! the moment the store has it (the cache applies whole revisions), so the next call sees it.

use gantry_auth::policy::{PolicyDocument, PolicyKind};
use gantry_store::{KeyValue, WatchEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const IAM: &str = "iam/";
pub const USERS: &str = "iam/users/";
pub const ROLES: &str = "iam/roles/";
pub const POLICIES: &str = "iam/policies/";
pub const ACCESS_KEYS: &str = "iam/access-keys/";
pub const JOIN_TOKEN: &str = "iam/agent-join-token";

pub fn user_key(name: &str) -> String {
    format!("{USERS}{name}")
}
pub fn role_key(name: &str) -> String {
    format!("{ROLES}{name}")
}
pub fn policy_key(name: &str) -> String {
    format!("{POLICIES}{name}")
}
pub fn access_key_key(id: &str) -> String {
    format!("{ACCESS_KEYS}{id}")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IamTag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub user_name: String,
    pub user_id: String,
    pub arn: String,
    pub path: String,
    pub create_date: f64,
    #[serde(default)]
    pub tags: Vec<IamTag>,
    /// Inline policies by name: the documents as sent (URL-decoded JSON).
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    /// Attached managed policies, by ARN, in attachment order.
    #[serde(default)]
    pub attached_policies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRecord {
    pub role_name: String,
    pub role_id: String,
    pub arn: String,
    pub path: String,
    pub create_date: f64,
    pub assume_role_policy_document: String,
    #[serde(default)]
    pub description: Option<String>,
    pub max_session_duration: i64,
    #[serde(default)]
    pub tags: Vec<IamTag>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    #[serde(default)]
    pub attached_policies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVersion {
    pub version_id: String,
    pub document: String,
    pub create_date: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub policy_name: String,
    pub policy_id: String,
    pub arn: String,
    pub path: String,
    #[serde(default)]
    pub description: Option<String>,
    pub create_date: f64,
    pub update_date: f64,
    pub default_version_id: String,
    /// Every version, oldest first (IAM keeps at most five).
    pub versions: Vec<PolicyVersion>,
    /// The next version number to hand out (`v<N>`), so a deleted version's id is not reused.
    pub next_version: u32,
    #[serde(default)]
    pub tags: Vec<IamTag>,
}

impl PolicyRecord {
    pub fn default_version(&self) -> Option<&PolicyVersion> {
        self.versions
            .iter()
            .find(|v| v.version_id == self.default_version_id)
    }
}

/// Who an access key speaks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum KeyOwner {
    /// An IAM user's long-term key (`AKIA…`).
    #[serde(rename_all = "camelCase")]
    User { user_name: String },
    /// A container instance's agent: valid only for that instance's own channel, reports and
    /// logs.
    #[serde(rename_all = "camelCase")]
    Agent {
        cluster_arn: String,
        instance_arn: String,
    },
    /// Temporary credentials from STS AssumeRole (`ASIA…`), valid with their session token
    /// until `expiration`.
    #[serde(rename_all = "camelCase")]
    Session {
        role_name: String,
        session_name: String,
        session_token: String,
        expiration: f64,
        /// Who assumed the role (an ARN), for the audit log.
        source_arn: String,
        /// A task role's credentials: the task they were minted for (deleted when it stops).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_arn: Option<String>,
    },
}

impl KeyOwner {
    /// The task a session key was minted for (a task role's credentials).
    pub fn task_arn(&self) -> Option<&str> {
        match self {
            KeyOwner::Session { task_arn, .. } => task_arn.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `Active` or `Inactive` (IAM's UpdateAccessKey).
    pub status: String,
    pub create_date: f64,
    pub owner: KeyOwner,
}

/// The agents' join token, stored as its SHA-256 so the store never holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenRecord {
    pub sha256: String,
    pub create_date: f64,
}

/// A record with its documents parsed once.
#[derive(Debug)]
pub struct Compiled<T> {
    pub record: T,
    /// Inline policies (users, roles) or the default version (managed policies), parsed.
    pub documents: Vec<Arc<PolicyDocument>>,
    /// A role's trust policy, parsed.
    pub trust: Option<Arc<PolicyDocument>>,
}

pub type UserEntry = Arc<Compiled<UserRecord>>;
pub type RoleEntry = Arc<Compiled<RoleRecord>>;
pub type PolicyEntry = Arc<Compiled<PolicyRecord>>;

/// What the cache keeps of IAM.
#[derive(Default)]
pub struct IamIndex {
    pub keys: HashMap<String, Arc<AccessKeyRecord>>,
    pub users: HashMap<String, UserEntry>,
    pub roles: HashMap<String, RoleEntry>,
    /// Customer managed policies by ARN.
    pub policies: HashMap<String, PolicyEntry>,
    /// Name → ARN, for the policies map (the store key is the name).
    policy_arns: HashMap<String, String>,
    pub join_token: Option<JoinTokenRecord>,
    /// Task roles' session keys by task ARN, so that a stopping task's keys are found without
    /// a scan.
    pub task_keys: HashMap<String, Vec<String>>,
}

fn parse_documents<'a>(
    what: &str,
    docs: impl IntoIterator<Item = &'a String>,
) -> Vec<Arc<PolicyDocument>> {
    docs.into_iter()
        .filter_map(|d| match PolicyDocument::parse(d, PolicyKind::Identity) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                // Documents are validated when written; one that no longer parses (an older
                // Gantry accepted it) grants nothing rather than failing every call.
                tracing::warn!("{what}: a stored policy document does not parse: {e}");
                None
            }
        })
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %kv.key, "corrupt IAM record left out of the cache: {e}");
            None
        }
    }
}

impl IamIndex {
    /// Applies one store change if it is an IAM key; returns whether it was.
    pub fn apply(&mut self, event: &WatchEvent) -> bool {
        let key = event.key();
        if !key.starts_with(IAM) {
            return false;
        }
        let put = match event {
            WatchEvent::Put(kv) => Some(kv),
            WatchEvent::Delete { .. } => None,
        };
        if let Some(id) = key.strip_prefix(ACCESS_KEYS) {
            let old = match put.and_then(decode::<AccessKeyRecord>) {
                Some(r) => {
                    if let Some(task) = r.owner.task_arn() {
                        let ids = self.task_keys.entry(task.to_string()).or_default();
                        if !ids.iter().any(|k| k == id) {
                            ids.push(id.to_string());
                        }
                    }
                    self.keys.insert(id.to_string(), Arc::new(r))
                }
                None => self.keys.remove(id),
            };
            // A deleted key (a key's owner never changes, so a put only adds).
            if put.is_none() {
                if let Some(task) = old.as_ref().and_then(|k| k.owner.task_arn()) {
                    if let Some(ids) = self.task_keys.get_mut(task) {
                        ids.retain(|k| k != id);
                        if ids.is_empty() {
                            self.task_keys.remove(task);
                        }
                    }
                }
            }
        } else if let Some(name) = key.strip_prefix(USERS) {
            match put.and_then(decode::<UserRecord>) {
                Some(r) => {
                    let documents = parse_documents(&r.arn, r.inline_policies.values());
                    self.users.insert(
                        name.to_string(),
                        Arc::new(Compiled {
                            record: r,
                            documents,
                            trust: None,
                        }),
                    )
                }
                None => self.users.remove(name),
            };
        } else if let Some(name) = key.strip_prefix(ROLES) {
            match put.and_then(decode::<RoleRecord>) {
                Some(r) => {
                    let documents = parse_documents(&r.arn, r.inline_policies.values());
                    let trust =
                        PolicyDocument::parse(&r.assume_role_policy_document, PolicyKind::Trust)
                            .map(Arc::new)
                            .map_err(|e| {
                                tracing::warn!(role = %r.arn, "stored trust policy does not parse: {e}")
                            })
                            .ok();
                    self.roles.insert(
                        name.to_string(),
                        Arc::new(Compiled {
                            record: r,
                            documents,
                            trust,
                        }),
                    )
                }
                None => self.roles.remove(name),
            };
        } else if let Some(name) = key.strip_prefix(POLICIES) {
            if let Some(arn) = self.policy_arns.remove(name) {
                self.policies.remove(&arn);
            }
            if let Some(r) = put.and_then(decode::<PolicyRecord>) {
                let documents = parse_documents(&r.arn, r.default_version().map(|v| &v.document));
                self.policy_arns.insert(name.to_string(), r.arn.clone());
                self.policies.insert(
                    r.arn.clone(),
                    Arc::new(Compiled {
                        record: r,
                        documents,
                        trust: None,
                    }),
                );
            }
        } else if key == JOIN_TOKEN {
            self.join_token = put.and_then(decode::<JoinTokenRecord>);
        }
        true
    }
}
