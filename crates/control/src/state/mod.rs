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
pub mod log_copies;
pub mod lookup;
pub mod records;
pub mod replica;
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
    /// Replicas share the backend: every write also rewrites [`fence::LAST_WRITE_KEY`], and
    /// [`StateStore::sync`] waits for the latest write anyone made.
    shared: bool,
}

impl StateStore {
    /// Loads the cache from the backend and starts following its watch.
    pub async fn open(backend: Arc<dyn KvStore>, shared: bool) -> StoreResult<StateStore> {
        let cache = Cache::start(backend.clone()).await?;
        Ok(StateStore {
            backend,
            cache,
            shared,
        })
    }

    /// Waits until the cache shows every write any replica has acknowledged (one read of the
    /// backend, then usually no wait at all): what a request reads afterwards is at least as
    /// new as what any client was told. Nothing to do with one replica, whose writes return
    /// only once its cache shows them.
    pub async fn sync(&self) -> StoreResult<()> {
        if !self.shared {
            return Ok(());
        }
        let Some(last) = self.backend.get(fence::LAST_WRITE_KEY).await? else {
            return Ok(());
        };
        if self
            .cache
            .wait_for(last.mod_revision, READ_YOUR_WRITE_LIMIT)
            .await
        {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "this replica's state cache is behind the store (at {}, the store at {})",
                self.cache.applied(),
                last.mod_revision
            )))
        }
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
        if self.shared && success_writes {
            txn.success.push(gantry_store::TxnOp::Put {
                key: fence::LAST_WRITE_KEY.into(),
                value: Vec::new(),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_store::{SqliteStore, TxnOp, WatchBatch};
    use std::time::Instant;

    /// A backend whose batch watches deliver late: a replica whose cache lags the store.
    struct LateWatch {
        inner: Arc<SqliteStore>,
        delay: Duration,
    }

    #[async_trait]
    impl KvStore for LateWatch {
        async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, i64)> {
            self.inner.range(prefix).await
        }
        async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse> {
            self.inner.txn(txn).await
        }
        async fn watch(&self, prefix: &str, from: Option<i64>) -> StoreResult<Watcher> {
            self.inner.watch(prefix, from).await
        }
        async fn watch_batches(
            &self,
            prefix: &str,
            from: Option<i64>,
        ) -> StoreResult<BatchWatcher> {
            let mut upstream = self.inner.watch_batches(prefix, from).await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<WatchBatch>(64);
            let delay = self.delay;
            tokio::spawn(async move {
                while let Some(batch) = upstream.recv().await {
                    tokio::time::sleep(delay).await;
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
            });
            Ok(rx)
        }
        async fn revision(&self) -> StoreResult<i64> {
            self.inner.revision().await
        }
    }

    fn put(key: &str) -> Txn {
        Txn {
            success: vec![TxnOp::Put {
                key: key.into(),
                value: b"{}".to_vec(),
            }],
            ..Txn::default()
        }
    }

    #[tokio::test]
    async fn sync_waits_for_what_another_replica_wrote() {
        let backend = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let writer = StateStore::open(backend.clone(), true)
            .await
            .expect("writer");
        let lagging = StateStore::open(
            Arc::new(LateWatch {
                inner: backend,
                delay: Duration::from_millis(300),
            }),
            true,
        )
        .await
        .expect("reader");

        let written = writer.txn(put("clusters/a")).await.expect("write");
        // The other replica's cache has not seen it yet...
        assert!(lagging.cache.applied() < written.revision);
        // ...but a request that syncs first does.
        let started = Instant::now();
        lagging.sync().await.expect("sync");
        assert!(lagging.cache.applied() >= written.revision);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "it had to wait"
        );

        // Nothing written since: no wait.
        let started = Instant::now();
        lagging.sync().await.expect("sync");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_single_replica_never_waits_and_writes_no_mark() {
        let backend = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let only = StateStore::open(backend.clone(), false)
            .await
            .expect("store");
        only.txn(put("clusters/a")).await.expect("write");
        only.sync().await.expect("sync");
        assert!(backend
            .get(fence::LAST_WRITE_KEY)
            .await
            .expect("get")
            .is_none());
    }
}
