//! What a secret is in the store (`secretsmanager/secrets/<name>`, one JSON record with all
//! its versions), how a client's `SecretId` finds it, the staging-label rules every write
//! follows, and the compare-and-swap write.
//!
//! A version's value is only ever held as a [`Sealed`]: sealed by the plane's vault with the
//! additional authenticated data `<secret ARN>/<version id>`, so a value copied into another
//! secret's record, or another version, does not open.

use super::errors;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::{now_epoch, EcsError, EcsResult};
use gantry_store::TxnOp;
use gantry_vault::{Plaintext, Sealed, Vault};
use serde::{Deserialize, Serialize};

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// Versions kept per secret, as Secrets Manager's quota: past it, the oldest versions that
/// carry no staging label (deprecated ones) are dropped.
pub const MAX_VERSIONS: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRecord {
    pub name: String,
    /// `arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 random alphanumerics>`;
    /// a secret made again under the same name gets another suffix.
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<SecretTag>,
    pub created_date: f64,
    pub last_changed_date: f64,
    /// When DeleteSecret was called (DescribeSecret's `DeletedDate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_date: Option<f64>,
    /// When the janitor purges it (DeleteSecret's `DeletionDate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    /// The resource policy as put (stored and returned; Gantry does not evaluate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<String>,
    /// Oldest first.
    #[serde(default)]
    pub versions: Vec<SecretVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretTag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueKind {
    String,
    Binary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    pub id: String,
    #[serde(default)]
    pub stages: Vec<String>,
    pub created_date: f64,
    pub kind: ValueKind,
    pub sealed: Sealed,
}

impl SecretRecord {
    /// Scheduled for deletion (its recovery window running).
    pub fn is_deleted(&self) -> bool {
        self.deleted_date.is_some()
    }

    /// The recovery window has passed: the secret is gone, whether or not the janitor has
    /// removed its record yet.
    pub fn is_purgeable(&self, now: f64) -> bool {
        self.deletion_date.is_some_and(|d| d <= now)
    }

    pub fn version(&self, id: &str) -> Option<&SecretVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    pub fn version_with_stage(&self, stage: &str) -> Option<&SecretVersion> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
    }

    /// Refuses anything but reads on a secret scheduled for deletion.
    pub fn writable(&self) -> EcsResult<()> {
        if self.is_deleted() {
            return Err(errors::marked_for_deletion());
        }
        Ok(())
    }

    /// Attaches `stage` to version `to` (which must exist), taking it from whichever version
    /// held it; moving `AWSCURRENT` leaves `AWSPREVIOUS` on the version it came from, as
    /// Secrets Manager does.
    pub fn move_stage(&mut self, stage: &str, to: &str) {
        let from = self.version_with_stage(stage).map(|v| v.id.clone());
        if from.as_deref() == Some(to) {
            return;
        }
        for v in &mut self.versions {
            v.stages.retain(|s| s != stage);
            if v.id == to {
                v.stages.push(stage.to_string());
            }
        }
        if stage == AWSCURRENT {
            if let Some(from) = from {
                self.move_stage(AWSPREVIOUS, &from);
            }
        }
    }

    /// Takes `stage` off version `from`.
    pub fn remove_stage(&mut self, stage: &str, from: &str) {
        if let Some(v) = self.versions.iter_mut().find(|v| v.id == from) {
            v.stages.retain(|s| s != stage);
        }
    }

    /// Adds a version and attaches `stages` to it; drops the oldest deprecated versions past
    /// [`MAX_VERSIONS`].
    pub fn add_version(&mut self, version: SecretVersion, stages: &[String]) {
        let id = version.id.clone();
        self.versions.push(version);
        for stage in stages {
            self.move_stage(stage, &id);
        }
        while self.versions.len() > MAX_VERSIONS {
            match self.versions.iter().position(|v| v.stages.is_empty()) {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }

    /// Version id → its staging labels, for the versions that have any (deprecated ones are
    /// not listed, as on AWS).
    pub fn versions_to_stages(&self) -> serde_json::Map<String, serde_json::Value> {
        self.versions
            .iter()
            .filter(|v| !v.stages.is_empty())
            .map(|v| (v.id.clone(), serde_json::json!(v.stages)))
            .collect()
    }
}

/// The additional authenticated data of a version's value: it names the record.
pub fn aad(arn: &str, version_id: &str) -> Vec<u8> {
    format!("{arn}/{version_id}").into_bytes()
}

/// Seals a new version's value.
pub fn seal(
    vault: &Vault,
    arn: &str,
    version_id: &str,
    kind: ValueKind,
    value: &[u8],
) -> EcsResult<SecretVersion> {
    let sealed = vault.seal(value, &aad(arn, version_id)).map_err(|e| {
        tracing::error!(
            secret = arn,
            version = version_id,
            "cannot seal a value: {e}"
        );
        errors::encryption_failure()
    })?;
    Ok(SecretVersion {
        id: version_id.to_string(),
        stages: Vec::new(),
        created_date: now_epoch(),
        kind,
        sealed,
    })
}

/// Opens a version's value. A failure is logged (never with any part of the value) and
/// answered as Secrets Manager's `DecryptionFailure`.
pub fn open(vault: &Vault, arn: &str, version: &SecretVersion) -> EcsResult<Plaintext> {
    vault
        .open(&version.sealed, &aad(arn, &version.id))
        .map_err(|e| {
            tracing::error!(secret = arn, version = %version.id, "cannot open a value: {e}");
            errors::decryption_failure()
        })
}

/// A secret's record and its mod revision, by name. A record whose recovery window has passed
/// counts as absent.
pub async fn by_name(plane: &ControlPlane, name: &str) -> EcsResult<Option<(SecretRecord, i64)>> {
    let found = repo::get::<SecretRecord>(&*plane.store, &repo::secret_key(name)).await?;
    Ok(found.filter(|(s, _)| !s.is_purgeable(now_epoch())))
}

/// `arn:aws:secretsmanager:<region>:<account>:secret:` of this plane.
pub fn arn_prefix(plane: &ControlPlane) -> String {
    let scope = plane.scope();
    format!(
        "arn:aws:secretsmanager:{}:{}:secret:",
        scope.region, scope.account
    )
}

/// The secret a client's `SecretId` names: a name, a full ARN, or a partial ARN (the ARN
/// without its `-xxxxxx` suffix), as Secrets Manager accepts. A full ARN must name this
/// secret's current incarnation: one deleted and made again has another suffix.
pub async fn resolve(
    plane: &ControlPlane,
    secret_id: &str,
) -> EcsResult<Option<(SecretRecord, i64)>> {
    if !secret_id.starts_with("arn:") {
        return by_name(plane, secret_id).await;
    }
    let Some(name) = secret_id.strip_prefix(&arn_prefix(plane)) else {
        return Ok(None);
    };
    if let Some(base) = strip_suffix(name) {
        if let Some((s, rev)) = by_name(plane, base).await? {
            if s.arn == secret_id {
                return Ok(Some((s, rev)));
            }
        }
    }
    // A partial ARN: everything after `secret:` is the name.
    by_name(plane, name).await
}

/// `name` without a trailing `-` and six ASCII alphanumerics, if it has them.
fn strip_suffix(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && !base.is_empty())
        .then_some(base)
}

/// [`resolve`], with Secrets Manager's error when nothing matches.
pub async fn find(plane: &ControlPlane, secret_id: &str) -> EcsResult<(SecretRecord, i64)> {
    resolve(plane, secret_id)
        .await?
        .ok_or_else(errors::not_found)
}

/// How often a read-modify-write retries when another writer got there first.
const CAS_ATTEMPTS: usize = 32;

/// Read-modify-write the secret `secret_id` names, with compare-and-swap on its record,
/// retried on conflict. `change` sees the current record each time and may refuse; what it
/// returns is handed back with the record as written.
pub async fn update<T, F>(
    plane: &ControlPlane,
    secret_id: &str,
    mut change: F,
) -> EcsResult<(SecretRecord, T)>
where
    F: FnMut(&mut SecretRecord) -> EcsResult<Change<T>>,
{
    for _ in 0..CAS_ATTEMPTS {
        let (mut secret, rev) = find(plane, secret_id).await?;
        let key = repo::secret_key(&secret.name);
        let out = match change(&mut secret)? {
            Change::Unchanged(out) => return Ok((secret, out)),
            Change::Write(out) => out,
            Change::Delete(out) => {
                if repo::commit(
                    &*plane.store,
                    vec![repo::unchanged_since(&key, rev)],
                    vec![TxnOp::Delete { key }],
                )
                .await?
                {
                    return Ok((secret, out));
                }
                continue;
            }
        };
        if repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, rev)],
            vec![repo::put_op(&key, &secret)?],
        )
        .await?
        {
            return Ok((secret, out));
        }
    }
    Err(EcsError::new(
        "InternalServiceError",
        "Too many concurrent updates to this secret; try again.",
    ))
}

/// What a read-modify-write decided.
pub enum Change<T> {
    /// Write the changed record.
    Write(T),
    /// Nothing to write (an idempotent retry, a restore of a live secret).
    Unchanged(T),
    /// Remove the record.
    Delete(T),
}

/// Rewraps every stored value whose data key a non-primary master key wraps, record by record
/// with compare-and-swap, over the raw store range: a secret past its recovery window but not
/// purged yet is rewrapped too, and a record that does not decode fails the whole pass (its
/// values would be lost once the old key is retired). Returns how many values were rewrapped.
pub async fn rewrap_every_record(plane: &ControlPlane, vault: &Vault) -> EcsResult<usize> {
    let (kvs, _) = plane
        .store
        .range(repo::SECRETSMANAGER_SECRETS)
        .await
        .map_err(repo::store_error)?;
    let mut rewrapped = 0;
    for kv in kvs {
        let mut current = kv;
        let mut attempts = 0;
        loop {
            let mut secret: SecretRecord = repo::decode(&current).map_err(|e| {
                EcsError::new(
                    "InternalServiceError",
                    format!(
                        "Cannot rewrap the record {}: {}. No master key was retired.",
                        current.key, e.message
                    ),
                )
            })?;
            let mut n = 0;
            for v in &mut secret.versions {
                if vault.needs_rewrap(&v.sealed) {
                    v.sealed = vault.rewrap(&v.sealed).map_err(|e| {
                        EcsError::new(
                            "InternalServiceError",
                            format!("Cannot rewrap a value of {}: {e}", secret.arn),
                        )
                    })?;
                    n += 1;
                }
            }
            if n == 0 {
                break;
            }
            if repo::commit(
                &*plane.store,
                vec![repo::unchanged_since(&current.key, current.mod_revision)],
                vec![repo::put_op(&current.key, &secret)?],
            )
            .await?
            {
                rewrapped += n;
                break;
            }
            attempts += 1;
            if attempts >= CAS_ATTEMPTS {
                return Err(EcsError::new(
                    "InternalServiceError",
                    format!(
                        "Cannot rewrap {}: it keeps changing. Try again.",
                        secret.arn
                    ),
                ));
            }
            match plane
                .store
                .get(&current.key)
                .await
                .map_err(repo::store_error)?
            {
                Some(kv) => current = kv,
                None => break,
            }
        }
    }
    Ok(rewrapped)
}

/// Every secret record, decoded, with its mod revision (records that do not decode are
/// skipped and logged: one bad record must not hide the others).
pub async fn all(plane: &ControlPlane) -> EcsResult<Vec<(SecretRecord, i64)>> {
    let (kvs, _) = plane
        .store
        .range(repo::SECRETSMANAGER_SECRETS)
        .await
        .map_err(repo::store_error)?;
    Ok(kvs
        .iter()
        .filter_map(|kv| match repo::decode::<SecretRecord>(kv) {
            Ok(s) => Some((s, kv.mod_revision)),
            Err(e) => {
                tracing::warn!("{}", e.message);
                None
            }
        })
        .collect())
}
