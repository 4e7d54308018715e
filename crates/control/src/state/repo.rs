//! Typed access to the key-value store: where each resource lives and read-modify-write with
//! compare-and-swap.
//!
//! The key layout is in [`super::keys`]; values are JSON.

use gantry_model::{EcsError, EcsResult};
use gantry_store::{Compare, KeyValue, KvStore, Txn, TxnOp};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use super::keys::*;

pub fn store_error(e: gantry_store::StoreError) -> EcsError {
    EcsError::server(format!("The store failed: {e}"))
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> EcsResult<T> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| EcsError::server(format!("Corrupt record at {}: {e}", kv.key)))
}

pub fn encode<T: Serialize>(value: &T) -> EcsResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| EcsError::server(format!("Cannot encode record: {e}")))
}

pub async fn get<T: DeserializeOwned>(
    store: &dyn KvStore,
    key: &str,
) -> EcsResult<Option<(T, i64)>> {
    match store.get(key).await.map_err(store_error)? {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// Every record under `prefix`, decoded, with its mod revision.
pub async fn list<T: DeserializeOwned>(
    store: &dyn KvStore,
    prefix: &str,
) -> EcsResult<Vec<(T, i64)>> {
    let (kvs, _) = store.range(prefix).await.map_err(store_error)?;
    kvs.iter()
        .map(|kv| Ok((decode(kv)?, kv.mod_revision)))
        .collect()
}

pub fn put_op<T: Serialize>(key: &str, value: &T) -> EcsResult<TxnOp> {
    Ok(TxnOp::Put {
        key: key.to_string(),
        value: encode(value)?,
    })
}

pub fn unchanged_since(key: &str, rev: i64) -> Compare {
    Compare::ModRevision {
        key: key.to_string(),
        rev,
    }
}

/// Apply `ops` only if every key in `guards` is still at the revision it was read at.
/// Returns whether it applied.
pub async fn commit(store: &dyn KvStore, guards: Vec<Compare>, ops: Vec<TxnOp>) -> EcsResult<bool> {
    let resp = store
        .txn(Txn {
            compare: guards,
            success: ops,
            failure: vec![],
        })
        .await
        .map_err(store_error)?;
    Ok(resp.succeeded)
}

/// How often a read-modify-write retries when another writer got there first.
const CAS_ATTEMPTS: usize = 64;

/// Read-modify-write one record with compare-and-swap, retrying on conflict. `change` may
/// refuse with an error, in which case nothing is written. Returns `None` if the key does not
/// exist.
pub async fn update<T, F>(store: &dyn KvStore, key: &str, mut change: F) -> EcsResult<Option<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&mut T) -> EcsResult<()>,
{
    for _ in 0..CAS_ATTEMPTS {
        let Some((mut value, rev)) = get::<T>(store, key).await? else {
            return Ok(None);
        };
        change(&mut value)?;
        if commit(
            store,
            vec![unchanged_since(key, rev)],
            vec![put_op(key, &value)?],
        )
        .await?
        {
            return Ok(Some(value));
        }
    }
    Err(EcsError::server(format!(
        "Too many concurrent updates to {key}; try again."
    )))
}
