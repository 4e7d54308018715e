//! AWS Secrets Manager (awsJson1_1, `X-Amz-Target: secretsmanager.<Operation>`, signing name
//! `secretsmanager`): secrets with versions and staging labels, deletion with a recovery
//! window, tags, a stored resource policy, and random passwords (`api.rs`); its input rules
//! (`input.rs`); its records and their compare-and-swap writes (`records.rs`); its errors
//! as Secrets Manager words them (`errors.rs`). See `docs/SECRETS.md`.
//!
//! Every value is sealed by the plane's vault (`gantry-vault`) before it reaches a record and
//! opened only to answer GetSecretValue or [`secret_value`]: the store never holds a
//! plaintext, and no log line, error, `Debug` output or audit record carries one.
//!
//! Other parts of the control plane use the functions below: task start resolves a
//! container's `secrets` with [`secret_value`] after authorising the execution role on
//! [`secret_arn`]; a master-key rotation calls [`rewrap_all`].

mod api;
mod errors;
mod input;
mod records;

use crate::access;
use crate::auth::Access;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::{now_epoch, EcsResult};
use records::ValueKind;
use serde_json::Value;

/// A secret's value as task start needs it: the secret's ARN and its string or binary value
/// (one of the two), in memory wiped on drop and never printed by `Debug`.
#[derive(Debug)]
pub struct ResolvedSecret {
    pub arn: String,
    pub string: Option<gantry_vault::Plaintext>,
    pub binary: Option<gantry_vault::Plaintext>,
}

/// The value of the secret `secret_id` names (a name, an ARN or a partial ARN): the version
/// `version_id`, else the one holding `version_stage`, `AWSCURRENT` by default. Errors are
/// Secrets Manager's, as GetSecretValue answers them: `ResourceNotFoundException` for a
/// missing secret, version or label, `InvalidRequestException` for a secret marked for
/// deletion.
pub async fn secret_value(
    plane: &ControlPlane,
    secret_id: &str,
    version_id: Option<&str>,
    version_stage: Option<&str>,
) -> EcsResult<ResolvedSecret> {
    let resolve = async {
        let (secret, _) = records::find(plane, secret_id).await?;
        secret.writable()?;
        let v = api::chosen_version(&secret, version_id, version_stage)?;
        let value = records::open(plane.vault()?, &secret.arn, v)?;
        Ok(match v.kind {
            ValueKind::String => ResolvedSecret {
                arn: secret.arn.clone(),
                string: Some(value),
                binary: None,
            },
            ValueKind::Binary => ResolvedSecret {
                arn: secret.arn.clone(),
                string: None,
                binary: Some(value),
            },
        })
    };
    resolve.await.map_err(errors::as_secrets_manager)
}

/// The ARN of the secret `secret_id` names (a name, an ARN or a partial ARN), when it exists
/// (scheduled for deletion or not): what a task's execution role must be allowed
/// `secretsmanager:GetSecretValue` on.
pub async fn secret_arn(plane: &ControlPlane, secret_id: &str) -> EcsResult<String> {
    records::find(plane, secret_id)
        .await
        .map(|(s, _)| s.arn)
        .map_err(errors::as_secrets_manager)
}

/// Step two of a master-key rotation: every stored value whose data key is wrapped by a key
/// other than the vault's primary gets its data key rewrapped by the primary (the value's
/// ciphertext is untouched; nothing is decrypted). Compare-and-swap per record, retried on
/// conflict. Returns how many values were rewrapped.
pub async fn rewrap_all(plane: &ControlPlane) -> EcsResult<usize> {
    let vault = plane.vault()?;
    records::rewrap_every_record(plane, vault)
        .await
        .map_err(errors::as_secrets_manager)
}

/// A Secrets Manager operation's handler; errors as Secrets Manager types them.
pub(crate) async fn dispatch(plane: &ControlPlane, op: &str, input: Value) -> EcsResult<Value> {
    api::dispatch(plane, op, input)
        .await
        .map_err(errors::as_secrets_manager)
}

/// What a Secrets Manager call is and touches (`access::secretsmanager`), with the ARN of the
/// secret its `SecretId` names looked up, since a policy names secrets by their full ARN.
pub(crate) async fn access(plane: &ControlPlane, op: &str, input: &Value) -> Option<Access> {
    let known = match input.get("SecretId").and_then(Value::as_str) {
        Some(id) => records::resolve(plane, id)
            .await
            .ok()
            .flatten()
            .map(|(s, _)| s.arn),
        None => None,
    };
    access::secretsmanager(plane.scope(), op, input, known.as_deref())
}

/// Removes the secrets whose recovery window has passed (the janitor's sweep). A record that
/// changed since it was read is left for the next sweep. Returns how many were removed.
pub(crate) async fn purge_expired(plane: &ControlPlane) -> EcsResult<usize> {
    let now = now_epoch();
    let mut purged = 0;
    for (secret, rev) in records::all(plane).await? {
        if !secret.is_purgeable(now) {
            continue;
        }
        let key = repo::secret_key(&secret.name);
        let deleted = repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, rev)],
            vec![gantry_store::TxnOp::Delete { key }],
        )
        .await?;
        if deleted {
            tracing::info!(secret = %secret.arn, "secret deleted at the end of its recovery window");
            purged += 1;
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests;
