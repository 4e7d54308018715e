//! Access keys: new key material, agents' per-instance credentials, and the administrator and
//! join token a fresh control plane starts with.

use crate::plane::ControlPlane;
use crate::state::iam::{
    access_key_key, user_key, AccessKeyRecord, JoinTokenRecord, KeyOwner, UserRecord, JOIN_TOKEN,
};
use crate::state::repo::{self, commit, put_op, store_error};
use gantry_model::{now_epoch, EcsError, EcsResult};
use gantry_store::{Compare, TxnOp};
use rand::Rng;

const KEY_ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_from(chars: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| chars[rng.random_range(0..chars.len())] as char)
        .collect()
}

/// An access key id as AWS shapes them: a 4-letter kind (`AKIA` long-term, `ASIA` temporary)
/// and 16 characters.
pub fn new_key_id(kind: &str) -> String {
    format!("{kind}{}", random_from(KEY_ID_CHARS, 16))
}

/// 40 characters, as AWS secret access keys are (240 bits of randomness).
pub fn new_secret() -> String {
    random_from(SECRET_CHARS, 40)
}

/// An IAM unique id (`AIDA…` users, `AROA…` roles, `ANPA…` policies).
pub fn new_unique_id(kind: &str) -> String {
    format!("{kind}{}", random_from(KEY_ID_CHARS, 17))
}

/// A session token for temporary credentials.
pub fn new_session_token() -> String {
    format!("IQoJ{}", random_from(SECRET_CHARS, 300))
}

/// Credentials issued to an agent, returned in its registration's answer.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Issues fresh credentials bound to one container instance and revokes any earlier ones of
/// the same instance (an agent that registers again gets new credentials; the old ones stop
/// working at once).
pub async fn issue_agent_credentials(
    plane: &ControlPlane,
    cluster_arn: &str,
    instance_arn: &str,
) -> EcsResult<AgentCredentials> {
    let record = AccessKeyRecord {
        access_key_id: new_key_id("AKIA"),
        secret_access_key: new_secret(),
        status: "Active".into(),
        create_date: now_epoch(),
        owner: KeyOwner::Agent {
            cluster_arn: cluster_arn.to_string(),
            instance_arn: instance_arn.to_string(),
        },
    };
    let mut ops = revoke_ops(plane, instance_arn);
    ops.push(put_op(&access_key_key(&record.access_key_id), &record)?);
    commit(&*plane.store, Vec::new(), ops).await?;
    Ok(AgentCredentials {
        access_key_id: record.access_key_id,
        secret_access_key: record.secret_access_key,
    })
}

fn revoke_ops(plane: &ControlPlane, instance_arn: &str) -> Vec<TxnOp> {
    plane.cache.iam(|iam| {
        iam.keys
            .values()
            .filter(|k| {
                matches!(&k.owner, KeyOwner::Agent { instance_arn: i, .. } if i == instance_arn)
            })
            .map(|k| TxnOp::Delete {
                key: access_key_key(&k.access_key_id),
            })
            .collect()
    })
}

/// Deletes every credential of a container instance's agent (it was deregistered).
pub async fn revoke_agent_credentials(plane: &ControlPlane, instance_arn: &str) -> EcsResult<()> {
    let ops = revoke_ops(plane, instance_arn);
    if !ops.is_empty() {
        commit(&*plane.store, Vec::new(), ops).await?;
    }
    Ok(())
}

/// The administrator a fresh control plane starts with.
pub const ADMIN_USER: &str = "admin";

/// Makes sure the `admin` user exists with AdministratorAccess attached, and gives it a new
/// access key (called when the credentials file is missing: on first start, or after someone
/// deleted it). IAM allows two keys per user: the oldest goes if there are already two.
pub async fn new_admin_key(plane: &ControlPlane) -> EcsResult<(String, String)> {
    let scope = plane.scope().clone();
    let key = user_key(ADMIN_USER);
    let mut ops = Vec::new();
    let mut guards = Vec::new();
    match repo::get::<UserRecord>(&*plane.store, &key).await? {
        Some((_, rev)) => guards.push(repo::unchanged_since(&key, rev)),
        None => {
            let user = UserRecord {
                user_name: ADMIN_USER.into(),
                user_id: new_unique_id("AIDA"),
                arn: format!("arn:aws:iam::{}:user/{ADMIN_USER}", scope.account),
                path: "/".into(),
                create_date: now_epoch(),
                tags: Vec::new(),
                inline_policies: Default::default(),
                attached_policies: vec!["arn:aws:iam::aws:policy/AdministratorAccess".into()],
            };
            guards.push(Compare::ModRevision {
                key: key.clone(),
                rev: 0,
            });
            ops.push(put_op(&key, &user)?);
        }
    }
    let mut existing: Vec<(f64, String)> = plane.cache.iam(|iam| {
        iam.keys
            .values()
            .filter(|k| matches!(&k.owner, KeyOwner::User { user_name } if user_name == ADMIN_USER))
            .map(|k| (k.create_date, k.access_key_id.clone()))
            .collect()
    });
    existing.sort_by(|a, b| a.0.total_cmp(&b.0));
    while existing.len() >= 2 {
        let (_, id) = existing.remove(0);
        ops.push(TxnOp::Delete {
            key: access_key_key(&id),
        });
    }
    let record = AccessKeyRecord {
        access_key_id: new_key_id("AKIA"),
        secret_access_key: new_secret(),
        status: "Active".into(),
        create_date: now_epoch(),
        owner: KeyOwner::User {
            user_name: ADMIN_USER.into(),
        },
    };
    ops.push(put_op(&access_key_key(&record.access_key_id), &record)?);
    if !commit(&*plane.store, guards, ops).await? {
        return Err(EcsError::server(
            "Another writer changed the admin user while it was being set up; start again.",
        ));
    }
    Ok((record.access_key_id, record.secret_access_key))
}

/// The agents' join token: `existing` (read from `<data-dir>/agent-token`) if the store
/// holds its hash, or `existing` stored anew if the store holds none; otherwise a new token.
/// The store keeps only the hash.
pub async fn ensure_join_token(plane: &ControlPlane, existing: Option<&str>) -> EcsResult<String> {
    let stored = plane.cache.iam(|iam| iam.join_token.clone());
    let token = match (existing, &stored) {
        (Some(t), Some(s)) if gantry_auth::sigv4::sha256_hex(t.as_bytes()) == s.sha256 => {
            return Ok(t.to_string())
        }
        (Some(t), None) => t.to_string(),
        _ => format!("GANTRY{}", random_from(KEY_ID_CHARS, 40)),
    };
    let record = JoinTokenRecord {
        sha256: gantry_auth::sigv4::sha256_hex(token.as_bytes()),
        create_date: now_epoch(),
    };
    // Guarded by the record as read: two replicas starting on one empty store cannot both
    // set a token (the second would turn the first's invalid).
    let seen = plane
        .store
        .get(JOIN_TOKEN)
        .await
        .map_err(store_error)?
        .map(|kv| kv.mod_revision);
    if stored.is_none() && seen.is_some() {
        return Err(EcsError::server(
            "another control-plane replica has just set the agents' join token: start this one again to use it",
        ));
    }
    let written = plane
        .store
        .txn(gantry_store::Txn {
            compare: vec![Compare::ModRevision {
                key: JOIN_TOKEN.into(),
                rev: seen.unwrap_or(0),
            }],
            success: vec![put_op(JOIN_TOKEN, &record)?],
            failure: Vec::new(),
        })
        .await
        .map_err(store_error)?;
    if !written.succeeded {
        return Err(EcsError::server(
            "another control-plane replica has just set the agents' join token: start this one again to use it",
        ));
    }
    Ok(token)
}
