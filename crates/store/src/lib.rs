//! Durable state behind one small key-value trait shaped like etcd's: get, range by prefix,
//! transactions with compare-and-swap on revisions, and watch from a revision. The store knows
//! nothing of ECS; keys are `/`-separated strings and values opaque bytes (JSON in practice).
//!
//! Backends: [`SqliteStore`] (embedded, the default) and [`EtcdStore`] (etcd v3, for several
//! control-plane replicas). [`StoreLocation`] names one (`--store`), [`open`] opens it, and
//! `tests/conformance.rs` holds both to the same behaviour. [`testing`] starts local etcd
//! processes for tests and benchmarks.

mod etcd;
mod location;
mod session;
mod sink;
mod sqlite;
pub mod testing;

pub use etcd::{EtcdConfig, EtcdStore};
pub use location::{open, StoreLocation};
pub use session::EtcdSession;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// One stored key with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Store revision at which the key was (last) created.
    pub create_revision: i64,
    /// Store revision of the last write to this key.
    pub mod_revision: i64,
}

/// A transaction guard. `ModRevision { rev: 0 }` means "the key must not exist".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    ModRevision { key: String, rev: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// If every `compare` holds, apply `success`, else apply `failure`; atomically, durably.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged when nothing was written).
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend error: {0}")]
    Backend(String),
    /// The requested watch start revision is older than the retained history.
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    /// A write made on behalf of the controllers' leader after this replica lost the
    /// leadership (fencing): nothing was written.
    #[error("this control-plane replica no longer leads the controllers; the write was refused")]
    Fenced,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stream of changes under a prefix, in revision order. Dropping it ends the watch.
pub type Watcher = tokio::sync::mpsc::Receiver<WatchEvent>;

/// Every change under the watched prefix made by one revision (one transaction), as etcd
/// groups them in a watch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<WatchEvent>,
}

/// A stream of [`WatchBatch`]es in revision order; it ends like a [`Watcher`] (re-list and
/// watch again).
pub type BatchWatcher = tokio::sync::mpsc::Receiver<WatchBatch>;

#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;
    /// Every key starting with `prefix`, ascending by key, and the store revision they were
    /// read at.
    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, i64)>;
    async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse>;
    /// Changes under `prefix` after `from_revision` (exclusive) — or from now when `None`.
    async fn watch(&self, prefix: &str, from_revision: Option<i64>) -> StoreResult<Watcher>;
    /// The same changes grouped by revision: a consumer that applies a whole batch at a time
    /// never exposes half of a transaction (what the state cache needs for read-your-writes).
    async fn watch_batches(
        &self,
        prefix: &str,
        from_revision: Option<i64>,
    ) -> StoreResult<BatchWatcher>;
    async fn revision(&self) -> StoreResult<i64>;
}
