//! What only `SqliteStore` does: its automatic history limit, durability across reopening
//! and `kill -9`. What both backends do is in `conformance.rs`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::*;
use gantry_store::{KvStore, SqliteStore, StoreError, Txn};

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
    let (mut child, mut acks) = spawn_writer(&path);

    let wanted = 200;
    let acknowledged: Vec<u64> = acks.by_ref().take(wanted).collect();
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

/// This test binary re-executed as [`acknowledged_writes_survive_sigkill`]'s writer on `path`,
/// and the keys it acknowledges (`k/{i:07}` at revision i + 1), as they come.
fn spawn_writer(path: &Path) -> (KillOnDrop, impl Iterator<Item = u64>) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_writes_survive_sigkill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DB_ENV, path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let acks = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix(ACK_PREFIX)?.parse().ok());
    (child, acks)
}

/// What `gantry backup` relies on: another process reads a store while its owner keeps
/// writing, each read one consistent snapshot, without the owner's writes failing, and
/// without writing anything itself.
#[test]
fn a_read_only_store_reads_snapshots_next_to_a_live_writer() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (mut writer, acks) = spawn_writer(&path);
    // Drained all along, so the writer never waits on a full pipe.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let reader = {
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for i in acks {
                acknowledged.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let wait_for_acks = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acknowledged.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the writer stopped writing");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_acks(50);

    runtime.block_on(async {
        // Until the reads have seen the writer move on a few times.
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 5 {
            assert!(Instant::now() < deadline, "saw only revisions {seen:?}");
            let store = SqliteStore::open_read_only(&path).unwrap();
            let (kvs, revision) = store.range("").await.unwrap();
            // The writer puts one new key per revision: a snapshot holds exactly the first
            // `revision` of them.
            assert_eq!(kvs.len() as i64, revision, "not one snapshot");
            for (i, kv) in kvs.iter().enumerate() {
                assert_eq!(kv.key, format!("k/{i:07}"));
                assert_eq!(kv.mod_revision, i as i64 + 1);
            }
            let refused = store.txn(Txn {
                success: vec![put("mine", "x")],
                ..Txn::default()
            });
            assert!(refused.await.is_err(), "a read-only store took a write");
            seen.insert(revision);
        }
    });
    // The writer went on writing all along, and still does.
    wait_for_acks(acknowledged.load(Ordering::SeqCst) + 50);
    assert!(writer.0.try_wait().unwrap().is_none(), "the writer failed");
    writer.0.kill().unwrap();
    writer.0.wait().unwrap();
    reader.join().unwrap();

    runtime.block_on(async {
        // Killed mid-write, its WAL left behind.
        let store = SqliteStore::open_read_only(&path).unwrap();
        let (kvs, revision) = store.range("").await.unwrap();
        assert!(revision > 0);
        assert_eq!(kvs.len() as i64, revision);

        // Closed cleanly: the last connection folded the WAL back in and removed it.
        let closed = dir.path().join("closed.db");
        {
            let owner = SqliteStore::open(&closed).unwrap();
            write(&owner, vec![put("last", "1")]).await;
        }
        let wal = dir.path().join("closed.db-wal");
        // The connection closes once the store's last blocking task lets go of it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.exists() {
            assert!(Instant::now() < deadline, "the WAL outlived its store");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let store = SqliteStore::open_read_only(&closed).unwrap();
        assert_eq!(value(&store, "last").await.as_deref(), Some("1"));
        assert_eq!(store.revision().await.unwrap(), 1);
    });

    // Nothing is created where there is no store, and a foreign database is named as such.
    let missing = dir.path().join("missing.db");
    let err = SqliteStore::open_read_only(&missing).err().unwrap();
    assert!(err.to_string().contains("there is no store"), "{err}");
    assert!(!missing.exists());
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE other (x INTEGER)")
        .unwrap();
    let err = SqliteStore::open_read_only(&foreign).err().unwrap();
    assert!(err.to_string().contains("is not a Gantry store"), "{err}");
}
