//! `GantryV1.RotateMasterKey` and `GantryV1.DescribeMasterKeys` (`gantry keys`): the master
//! keys that wrap every secret's data key (`gantry-vault`), rotated while the API serves.
//!
//! A rotation makes a new primary key (old ones still open what they sealed), waits for the
//! secret writes already sealing under the old key to commit (they hold
//! `ControlPlane::sealing` shared; the rotation takes it exclusively for a moment), rewraps
//! every stored value's data key under the new key, and then, again exclusively, retires the
//! old keys, so that no read between loading a value and opening it sees its key go. Reads
//! never fail: every value opens under one key or the other throughout.

use crate::plane::ControlPlane;
use crate::{secretsmanager, ssm};
use gantry_model::{EcsError, EcsResult};
use serde_json::{json, Value};

fn vault_error(e: gantry_vault::VaultError) -> EcsError {
    EcsError::server(format!("Cannot rotate the master key: {e}"))
}

pub async fn rotate(plane: &ControlPlane) -> EcsResult<Value> {
    // One rotation at a time.
    let _rotation = plane.rotation.lock().await;
    let vault = plane.vault()?;
    let before = vault.status();
    if plane.config.replication.is_some() && before.source.starts_with("file:") {
        // A new key in this replica's file alone would seal what the other replicas cannot
        // open.
        return Err(EcsError::client(
            "This control plane has several replicas: rotate with GANTRY_MASTER_KEY instead of a key file. Put a new key first in GANTRY_MASTER_KEY on every replica (keeping the old one after it), restart them one by one, then run this again to rewrap every value under it (see docs/HA.md).",
        ));
    }
    let primary = vault.begin_rotation().map_err(vault_error)?;
    // Writes that sealed under the old primary before it changed commit before the pass.
    drop(plane.sealing.write().await);
    let secrets = secretsmanager::rewrap_all(plane).await?;
    let parameters = ssm::rewrap_all(plane).await?;
    // Reads hold the lock shared from reading a value to opening it: none may still hold a
    // value wrapped by a key about to be retired.
    let retired = {
        let _barrier = plane.sealing.write().await;
        vault.finish_rotation().map_err(vault_error)?
    };
    tracing::info!(
        primary = %primary,
        retired = ?retired,
        secrets,
        parameters,
        "master key rotated"
    );
    Ok(json!({
        "source": before.source,
        "primaryKey": primary,
        "retiredKeys": retired,
        "rewrappedSecretValues": secrets,
        "rewrappedParameterValues": parameters,
    }))
}

pub fn describe(plane: &ControlPlane) -> EcsResult<Value> {
    let status = plane.vault()?.status();
    Ok(json!({
        "source": status.source,
        "primaryKey": status.primary,
        "keys": status.keys,
    }))
}
