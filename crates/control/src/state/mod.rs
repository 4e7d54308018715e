//! The typed state layer between the store and everything above it: where records live
//! ([`keys`]), what they are ([`records`], [`service_record`]), compare-and-swap
//! read-modify-write ([`repo`]), and the watch-fed in-memory [`cache::Cache`] with its indexes.
//!
//! API handlers and controllers read and write through this layer and never through each
//! other. Writes go through [`StateStore`], which waits after each successful transaction
//! until the cache shows it: whoever wrote reads its own write from the cache.

pub mod account_settings;
pub mod cache;
pub mod elbv2;
pub mod fence;
pub mod iam;
pub mod keys;
pub mod lookup;
pub mod records;
pub mod repo;
pub mod service_record;

use async_trait::async_trait;
use cache::Cache;
use gantry_store::{
    BatchWatcher, Compare, KeyValue, KvStore, StoreError, StoreResult, Txn, TxnResponse, Watcher,
};
use std::sync::Arc;
use std::time::Duration;

/// How long a writer waits for the cache to show its write before going on anyway (the cache
/// applies a write within microseconds; this only bounds a stuck watch).
const READ_YOUR_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// The store as the control plane uses it: every call goes to the backend; a transaction that
/// wrote returns only once the cache shows it.
pub struct StateStore {
    backend: Arc<dyn KvStore>,
    pub cache: Arc<Cache>,
}

impl StateStore {
    /// Loads the cache from the backend and starts following its watch.
    pub async fn open(backend: Arc<dyn KvStore>) -> StoreResult<StateStore> {
        let cache = Cache::start(backend.clone()).await?;
        Ok(StateStore { backend, cache })
    }
}

#[async_trait]
impl KvStore for StateStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.backend.get(key).await
    }
    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, i64)> {
        self.backend.range(prefix).await
    }
    async fn txn(&self, mut txn: Txn) -> StoreResult<TxnResponse> {
        let (success_writes, failure_writes) = (!txn.success.is_empty(), !txn.failure.is_empty());
        let fence = fence::current();
        if let Some(token) = fence {
            if failure_writes {
                // The failure branch would also run when only the fence failed.
                return Err(StoreError::Backend(
                    "a fenced write cannot have a failure branch".into(),
                ));
            }
            txn.compare.insert(
                0,
                Compare::ModRevision {
                    key: fence::LEADER_KEY.into(),
                    rev: token,
                },
            );
        }
        let response = self.backend.txn(txn).await?;
        if let (Some(token), false) = (fence, response.succeeded) {
            let leader = self.backend.get(fence::LEADER_KEY).await?;
            if leader.map(|kv| kv.mod_revision) != Some(token) {
                return Err(StoreError::Fenced);
            }
        }
        // A branch without operations wrote nothing: its answer carries the store's current
        // revision, which on etcd may be a write outside Gantry's namespace that the cache
        // never sees.
        let wrote = if response.succeeded {
            success_writes
        } else {
            failure_writes
        };
        if wrote
            && !self
                .cache
                .wait_for(response.revision, READ_YOUR_WRITE_LIMIT)
                .await
        {
            tracing::warn!(
                revision = response.revision,
                applied = self.cache.applied(),
                "the state cache is behind the store; a reader may not see this write yet"
            );
        }
        Ok(response)
    }
    async fn watch(&self, prefix: &str, from_revision: Option<i64>) -> StoreResult<Watcher> {
        self.backend.watch(prefix, from_revision).await
    }
    async fn watch_batches(
        &self,
        prefix: &str,
        from_revision: Option<i64>,
    ) -> StoreResult<BatchWatcher> {
        self.backend.watch_batches(prefix, from_revision).await
    }
    async fn revision(&self) -> StoreResult<i64> {
        self.backend.revision().await
    }
}
