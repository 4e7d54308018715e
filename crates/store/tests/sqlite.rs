//! Behaviour of `SqliteStore` through the public `KvStore` trait.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gantry_store::{
    Compare, KeyValue, KvStore, SqliteStore, StoreError, Txn, TxnOp, TxnResponse, WatchEvent,
    Watcher,
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

fn mod_rev(key: &str, rev: i64) -> Compare {
    Compare::ModRevision {
        key: key.into(),
        rev,
    }
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

/// Asserts nothing (more) arrives for a short while.
async fn assert_quiet(watcher: &mut Watcher) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(100), watcher.recv()).await {
        panic!("unexpected watch event {event:?}");
    }
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
async fn put_get_and_missing_key() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(store.revision().await.unwrap(), 0);
    assert_eq!(store.get("a").await.unwrap(), None);

    let resp = write(&store, vec![put("a", "1")]).await;
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: true,
            revision: 1
        }
    );
    assert_eq!(
        store.get("a").await.unwrap(),
        Some(KeyValue {
            key: "a".into(),
            value: b"1".to_vec(),
            create_revision: 1,
            mod_revision: 1,
        })
    );
    assert_eq!(store.revision().await.unwrap(), 1);
}

#[tokio::test]
async fn empty_values_are_puts_not_deletes() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut watcher = store.watch("", Some(0)).await.unwrap();
    write(&store, vec![put("k", "")]).await;
    assert_eq!(value(&store, "k").await.as_deref(), Some(""));
    assert_eq!(next(&mut watcher).await, put_event("k", "", 1, 1));
    // And through the replay path, which reads the value back from the change log.
    let mut replay = store.watch("", Some(0)).await.unwrap();
    assert_eq!(next(&mut replay).await, put_event("k", "", 1, 1));
}

#[tokio::test]
async fn range_returns_only_keys_under_the_prefix_in_order() {
    let store = SqliteStore::open_in_memory().unwrap();
    // Neighbours of "a/" on both sides, LIKE wildcards, and multi-byte characters.
    for key in [
        "a/z",
        "a/b",
        "a",
        "a/",
        "ab/x",
        "a0",
        "a.",
        "a_/x",
        "a%/x",
        "a/é",
        "a/\u{10FFFF}",
        "b/1",
    ] {
        write(&store, vec![put(key, key)]).await;
    }
    assert_eq!(
        keys(&store, "a/").await,
        ["a/", "a/b", "a/z", "a/é", "a/\u{10FFFF}"]
    );
    assert_eq!(keys(&store, "a_/").await, ["a_/x"]);
    assert_eq!(keys(&store, "a%").await, ["a%/x"]);
    assert_eq!(keys(&store, "a/é").await, ["a/é"]);
    assert_eq!(keys(&store, "c").await, Vec::<String>::new());
    assert_eq!(keys(&store, "").await.len(), 12);

    let (kvs, revision) = store.range("b/").await.unwrap();
    assert_eq!(revision, 12);
    assert_eq!(kvs[0].value, b"b/1");
}

#[tokio::test]
async fn revisions_follow_etcd_bookkeeping() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(&store, vec![put("a", "1")]).await; // rev 1
    write(&store, vec![put("b", "1")]).await; // rev 2
    write(&store, vec![put("a", "2")]).await; // rev 3

    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 3));
    let b = store.get("b").await.unwrap().unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (2, 2));

    // One txn, one revision, shared by every key it writes.
    let resp = write(&store, vec![put("a", "3"), put("c", "1"), delete("b")]).await;
    assert_eq!(resp.revision, 4);
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 4));
    let c = store.get("c").await.unwrap().unwrap();
    assert_eq!((c.create_revision, c.mod_revision), (4, 4));
    assert_eq!(store.get("b").await.unwrap(), None);

    // Re-creating a deleted key starts a new life.
    write(&store, vec![put("b", "again")]).await; // rev 5
    let b = store.get("b").await.unwrap().unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (5, 5));
    assert_eq!(store.revision().await.unwrap(), 5);
}

#[tokio::test]
async fn txns_that_change_nothing_do_not_bump_the_revision() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(&store, vec![put("a", "1")]).await;

    let resp = write(&store, vec![delete("missing")]).await;
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: true,
            revision: 1
        }
    );
    let resp = store.txn(Txn::default()).await.unwrap();
    assert_eq!(resp.revision, 1);
    // A failed compare with no failure ops.
    let resp = store
        .txn(Txn {
            compare: vec![mod_rev("a", 99)],
            success: vec![put("a", "2")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: false,
            revision: 1
        }
    );
    assert_eq!(store.revision().await.unwrap(), 1);
    assert_eq!(value(&store, "a").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn compare_and_swap_on_mod_revision() {
    let store = SqliteStore::open_in_memory().unwrap();
    let create = |value: &str| Txn {
        compare: vec![mod_rev("k", 0)],
        success: vec![put("k", value)],
        failure: vec![],
    };

    // rev 0: "must not exist".
    let resp = store.txn(create("first")).await.unwrap();
    assert!(resp.succeeded);
    let resp = store.txn(create("second")).await.unwrap();
    assert!(!resp.succeeded);
    assert_eq!(value(&store, "k").await.as_deref(), Some("first"));

    write(&store, vec![put("other", "x")]).await; // rev 2, moves the global revision only

    // Swap at the current mod revision succeeds, and only once.
    let swap = Txn {
        compare: vec![mod_rev("k", 1)],
        success: vec![put("k", "swapped")],
        failure: vec![],
    };
    let resp = store.txn(swap.clone()).await.unwrap();
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: true,
            revision: 3
        }
    );
    assert!(!store.txn(swap).await.unwrap().succeeded);
    assert_eq!(value(&store, "k").await.as_deref(), Some("swapped"));

    // All compares must hold.
    let resp = store
        .txn(Txn {
            compare: vec![mod_rev("k", 3), mod_rev("other", 1)],
            success: vec![put("k", "nope")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(value(&store, "k").await.as_deref(), Some("swapped"));

    // After a delete, rev 0 holds again.
    write(&store, vec![delete("k")]).await;
    assert!(store.txn(create("reborn")).await.unwrap().succeeded);
}

#[tokio::test]
async fn failed_compare_applies_the_failure_branch() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(&store, vec![put("k", "1"), put("doomed", "x")]).await; // rev 1
    let resp = store
        .txn(Txn {
            compare: vec![mod_rev("k", 0)],
            success: vec![put("k", "success")],
            failure: vec![put("why", "exists"), delete("doomed")],
        })
        .await
        .unwrap();
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: false,
            revision: 2
        }
    );
    assert_eq!(value(&store, "k").await.as_deref(), Some("1"));
    assert_eq!(value(&store, "why").await.as_deref(), Some("exists"));
    assert_eq!(value(&store, "doomed").await, None);
}

#[tokio::test]
async fn deletes_remove_keys_from_get_and_range() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(
        &store,
        vec![put("d/1", "1"), put("d/2", "2"), put("d/3", "3")],
    )
    .await;
    let resp = write(&store, vec![delete("d/2")]).await;
    assert_eq!(resp.revision, 2);
    assert_eq!(store.get("d/2").await.unwrap(), None);
    assert_eq!(keys(&store, "d/").await, ["d/1", "d/3"]);
}

#[tokio::test]
async fn watch_streams_live_changes_under_the_prefix_in_order() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(&store, vec![put("w/before", "x")]).await; // rev 1, before the watch
    let mut watcher = store.watch("w/", None).await.unwrap();

    write(&store, vec![put("w/a", "1")]).await; // 2
    write(&store, vec![put("wx", "not mine"), put("other/a", "no")]).await; // 3
    write(&store, vec![put("w/a", "2"), put("w/b", "1")]).await; // 4
    write(&store, vec![delete("w/a"), delete("w/missing")]).await; // 5

    assert_eq!(next(&mut watcher).await, put_event("w/a", "1", 2, 2));
    assert_eq!(next(&mut watcher).await, put_event("w/a", "2", 2, 4));
    assert_eq!(next(&mut watcher).await, put_event("w/b", "1", 4, 4));
    assert_eq!(next(&mut watcher).await, delete_event("w/a", 5));
    assert_quiet(&mut watcher).await;
}

#[tokio::test]
async fn watch_replays_from_a_revision_then_goes_live_without_gap_or_duplicate() {
    let store = SqliteStore::open_in_memory().unwrap();
    for i in 1..=5 {
        write(&store, vec![put(&format!("r/{i}"), "v"), put("noise", "n")]).await;
    }
    let mut watcher = store.watch("r/", Some(2)).await.unwrap();
    for i in 6..=8 {
        write(&store, vec![put(&format!("r/{i}"), "v")]).await;
    }

    let revisions: Vec<i64> = [
        next(&mut watcher).await,
        next(&mut watcher).await,
        next(&mut watcher).await,
        next(&mut watcher).await,
        next(&mut watcher).await,
        next(&mut watcher).await,
    ]
    .iter()
    .map(WatchEvent::revision)
    .collect();
    assert_eq!(revisions, [3, 4, 5, 6, 7, 8]);
    assert_quiet(&mut watcher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_replay_races_concurrent_writers_without_gap_or_duplicate() {
    let store = std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 1..=400 {
                write(&*store, vec![put(&format!("k/{i}"), "v")]).await;
            }
        })
    };
    // Watches started at different moments of the write stream, replaying from the start.
    let mut watchers = Vec::new();
    for _ in 0..8 {
        watchers.push(store.watch("k/", Some(0)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    for mut watcher in watchers {
        for expected in 1..=400 {
            assert_eq!(next(&mut watcher).await.revision(), expected);
        }
        assert_quiet(&mut watcher).await;
    }
}

#[tokio::test]
async fn watch_from_now_skips_history_and_from_the_future_waits() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(&store, vec![put("a", "1")]).await;
    let mut now = store.watch("", None).await.unwrap();
    let mut future = store.watch("", Some(3)).await.unwrap();
    for i in 2..=4 {
        write(&store, vec![put("a", &i.to_string())]).await;
    }
    assert_eq!(next(&mut now).await.revision(), 2);
    assert_eq!(next(&mut now).await.revision(), 3);
    assert_eq!(next(&mut now).await.revision(), 4);
    assert_eq!(next(&mut future).await.revision(), 4);
    assert_quiet(&mut future).await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_fails() {
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
async fn a_lagging_watcher_catches_up_from_the_log() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut watcher = store.watch("", None).await.unwrap();
    // Far more than the per-watch buffer plus the broadcast buffer, while nobody reads.
    let total = 5000;
    for i in 1..=total {
        write(&store, vec![put(&format!("k/{}", i % 7), "v")]).await;
    }
    for expected in 1..=total {
        assert_eq!(next(&mut watcher).await.revision(), expected);
    }
    assert_quiet(&mut watcher).await;
}

#[tokio::test]
async fn a_watcher_behind_compacted_history_ends_instead_of_skipping() {
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
async fn dropping_the_store_ends_its_watches() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut watcher = store.watch("", None).await.unwrap();
    write(&store, vec![put("k", "v")]).await;
    drop(store);
    assert_eq!(next(&mut watcher).await.revision(), 1);
    let end = tokio::time::timeout(Duration::from_secs(5), watcher.recv()).await;
    assert_eq!(end.expect("watch did not end"), None);
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

#[tokio::test]
async fn batch_watch_delivers_each_transaction_whole_live_and_on_replay() {
    let store = SqliteStore::open_in_memory().unwrap();
    write(&store, vec![put("a/1", "x")]).await;
    let mut live = store.watch_batches("a/", None).await.unwrap();
    write(
        &store,
        vec![put("a/2", "y"), put("b/1", "z"), delete("a/1")],
    )
    .await;
    write(&store, vec![put("b/2", "only outside the prefix")]).await;
    write(&store, vec![put("a/3", "w")]).await;

    let expect = [
        gantry_store::WatchBatch {
            revision: 2,
            events: vec![put_event("a/2", "y", 2, 2), delete_event("a/1", 2)],
        },
        gantry_store::WatchBatch {
            revision: 4,
            events: vec![put_event("a/3", "w", 4, 4)],
        },
    ];
    for want in &expect {
        let got = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("no batch within 5s")
            .expect("watch ended");
        assert_eq!(&got, want);
    }
    // Replayed from the change log: grouped the same way; revision 3 touched nothing under a/.
    let mut replay = store.watch_batches("a/", Some(1)).await.unwrap();
    for want in &expect {
        let got = tokio::time::timeout(Duration::from_secs(5), replay.recv())
            .await
            .expect("no batch within 5s")
            .expect("watch ended");
        assert_eq!(&got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transactions_commit_as_if_one_by_one() {
    // Many writers at once (they are committed in groups): every transaction gets its own
    // revision, compare-and-swap on one key lets exactly one of its contenders win per
    // revision, and a watcher sees every revision once, in order.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    write(&*store, vec![put("counter", "0")]).await;
    let mut watcher = store.watch("", Some(1)).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            // Each writer bumps the shared counter with compare-and-swap until it wins, and
            // writes a key of its own.
            loop {
                let kv = store.get("counter").await.unwrap().unwrap();
                let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                let resp = store
                    .txn(Txn {
                        compare: vec![mod_rev("counter", kv.mod_revision)],
                        success: vec![
                            put("counter", &(n + 1).to_string()),
                            put(&format!("own/{i}"), "x"),
                        ],
                        failure: vec![],
                    })
                    .await
                    .unwrap();
                if resp.succeeded {
                    return resp.revision;
                }
            }
        }));
    }
    let mut revisions = Vec::new();
    for h in handles {
        revisions.push(h.await.unwrap());
    }
    revisions.sort();
    assert_eq!(
        revisions,
        (2..=65).collect::<Vec<i64>>(),
        "one revision each, no gaps"
    );
    assert_eq!(value(&*store, "counter").await.as_deref(), Some("64"));
    assert_eq!(keys(&*store, "own/").await.len(), 64);
    let mut seen = Vec::new();
    while seen.len() < 128 {
        seen.push(next(&mut watcher).await.revision());
    }
    let mut expected: Vec<i64> = (2..=65).flat_map(|r| [r, r]).collect();
    expected.sort();
    assert_eq!(seen, expected, "every revision's two events, in order");
    assert_quiet(&mut watcher).await;
}
