//! What only `SqliteStore` does: its automatic history limit, durability across reopening
//! and `kill -9`. What both backends do is in `conformance.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gantry_store::{
    KeyValue, KvStore, SqliteStore, StoreError, Txn, TxnOp, TxnResponse, WatchEvent, Watcher,
};

fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn delete(key: &str) -> TxnOp {
    TxnOp::Delete { key: key.into() }
}

/// Applies `ops` unconditionally.
async fn write(store: &impl KvStore, ops: Vec<TxnOp>) -> TxnResponse {
    store
        .txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
        .unwrap()
}

async fn value(store: &impl KvStore, key: &str) -> Option<String> {
    let kv = store.get(key).await.unwrap()?;
    Some(String::from_utf8(kv.value).unwrap())
}

async fn keys(store: &impl KvStore, prefix: &str) -> Vec<String> {
    let (kvs, _) = store.range(prefix).await.unwrap();
    kvs.into_iter().map(|kv| kv.key).collect()
}

async fn next(watcher: &mut Watcher) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watcher.recv())
        .await
        .expect("no watch event within 5s")
        .expect("watch ended")
}

fn put_event(key: &str, value: &str, create_revision: i64, mod_revision: i64) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision,
        mod_revision,
    })
}

fn delete_event(key: &str, mod_revision: i64) -> WatchEvent {
    WatchEvent::Delete {
        key: key.into(),
        mod_revision,
    }
}

#[tokio::test]
async fn a_history_limit_compacts_as_writes_go_on() {
    let store = SqliteStore::open_in_memory().unwrap().with_history_limit(5);
    for i in 1..=20 {
        write(&store, vec![put("k", &i.to_string())]).await;
    }
    // History now covers revisions 16..=20, i.e. watches from 15 onwards.
    for rev in [0, 10, 14] {
        match store.watch("", Some(rev)).await {
            Err(StoreError::Compacted(r)) => assert_eq!(r, rev),
            other => panic!("watch from {rev}: expected Compacted, got {other:?}"),
        }
    }
    let mut watcher = store.watch("", Some(15)).await.unwrap();
    for expected in 16..=20 {
        assert_eq!(next(&mut watcher).await.revision(), expected);
    }
}

#[tokio::test]
async fn default_history_keeps_ten_thousand_revisions() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(SqliteStore::DEFAULT_HISTORY_LIMIT, 10_000);
    for i in 0..10_010 {
        write(&store, vec![put("k", &i.to_string())]).await;
    }
    assert!(matches!(
        store.watch("", Some(9)).await,
        Err(StoreError::Compacted(9))
    ));
    let mut watcher = store.watch("", Some(10)).await.unwrap();
    assert_eq!(next(&mut watcher).await.revision(), 11);
}

#[tokio::test]
async fn a_watcher_behind_the_history_limit_ends_instead_of_skipping() {
    let store = SqliteStore::open_in_memory()
        .unwrap()
        .with_history_limit(100);
    let mut watcher = store.watch("", None).await.unwrap();
    let total = 5000;
    for i in 1..=total {
        write(&store, vec![put("k", &i.to_string())]).await;
    }
    let mut expected = 1;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), watcher.recv())
        .await
        .expect("watch neither delivered nor ended")
    {
        assert_eq!(event.revision(), expected, "events must be contiguous");
        expected += 1;
    }
    assert!(expected <= total, "the watcher cannot have kept up");
}

#[tokio::test]
async fn data_and_revision_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    // `open` creates missing parent directories.
    let path = dir.path().join("nested/state.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        write(&store, vec![put("a", "1"), put("b", "1")]).await;
        write(&store, vec![put("a", "2"), delete("b")]).await;
        write(&store, vec![put("c", "1")]).await;
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 3);
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        (a.value, a.create_revision, a.mod_revision),
        (b"2".to_vec(), 1, 2)
    );
    assert_eq!(store.get("b").await.unwrap(), None);
    assert_eq!(keys(&store, "").await, ["a", "c"]);
    // History survives too, and the counter continues where it left off.
    let mut watcher = store.watch("", Some(1)).await.unwrap();
    assert_eq!(next(&mut watcher).await, put_event("a", "2", 1, 2));
    assert_eq!(next(&mut watcher).await, delete_event("b", 2));
    assert_eq!(next(&mut watcher).await, put_event("c", "1", 3, 3));
    assert_eq!(write(&store, vec![put("d", "1")]).await.revision, 4);
}

/// Set in the child process of [`acknowledged_writes_survive_sigkill`] to make it the writer.
const WRITER_DB_ENV: &str = "GANTRY_STORE_SIGKILL_WRITER_DB";
const ACK_PREFIX: &str = "ACKNOWLEDGED ";

/// Kills the child on drop, so a failing assertion does not leak a writer process.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process (this test binary, re-executed) writes keys one txn at a time and prints
/// each one once `txn` has returned; it is SIGKILLed mid-stream. Every printed key must be
/// in the reopened store.
#[test]
fn acknowledged_writes_survive_sigkill() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let Some(path) = std::env::var_os(WRITER_DB_ENV) {
        runtime.block_on(async {
            let store = SqliteStore::open(path.as_ref()).unwrap();
            for i in 0..1_000_000 {
                write(&store, vec![put(&format!("k/{i:07}"), &i.to_string())]).await;
                println!("{ACK_PREFIX}{i}");
            }
        });
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_writes_survive_sigkill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DB_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();

    let wanted = 200;
    let mut acknowledged = Vec::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(i) = line.unwrap().strip_prefix(ACK_PREFIX) {
            acknowledged.push(i.parse::<u64>().unwrap());
            if acknowledged.len() == wanted {
                break;
            }
        }
    }
    // `Child::kill` is SIGKILL on Unix: no destructors, no SQLite close, no checkpoint.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(acknowledged.len(), wanted, "writer exited early: {status}");

    runtime.block_on(async {
        let store = SqliteStore::open(&path).unwrap();
        for i in &acknowledged {
            let key = format!("k/{i:07}");
            assert_eq!(
                value(&store, &key).await.as_deref(),
                Some(i.to_string().as_str()),
                "acknowledged key {key} lost"
            );
        }
        assert!(store.revision().await.unwrap() >= wanted as i64);
    });
}
