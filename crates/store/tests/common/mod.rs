//! Helpers shared by the store's integration tests (`conformance.rs`, `sqlite.rs`).
#![allow(dead_code)]

use std::time::Duration;

use gantry_store::{Compare, KeyValue, KvStore, Txn, TxnOp, TxnResponse, WatchEvent, Watcher};

pub fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub fn delete(key: &str) -> TxnOp {
    TxnOp::Delete { key: key.into() }
}

pub fn mod_rev(key: &str, rev: i64) -> Compare {
    Compare::ModRevision {
        key: key.into(),
        rev,
    }
}

/// Applies `ops` unconditionally.
pub async fn write(store: &dyn KvStore, ops: Vec<TxnOp>) -> TxnResponse {
    store
        .txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
        .unwrap()
}

pub async fn value(store: &dyn KvStore, key: &str) -> Option<String> {
    let kv = store.get(key).await.unwrap()?;
    Some(String::from_utf8(kv.value).unwrap())
}

pub async fn keys(store: &dyn KvStore, prefix: &str) -> Vec<String> {
    let (kvs, _) = store.range(prefix).await.unwrap();
    kvs.into_iter().map(|kv| kv.key).collect()
}

pub async fn next(watcher: &mut Watcher) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watcher.recv())
        .await
        .expect("no watch event within 10s")
        .expect("watch ended")
}

/// Asserts nothing (more) arrives for a short while.
pub async fn assert_quiet(watcher: &mut Watcher) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), watcher.recv()).await {
        panic!("unexpected watch event {event:?}");
    }
}

pub fn put_event(key: &str, value: &str, create_revision: i64, mod_revision: i64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision,
        mod_revision,
    })
}

pub fn delete_event(key: &str, mod_revision: i64) -> WatchEvent {
    WatchEvent::Delete {
        key: key.into(),
        mod_revision,
    }
}
