//! One behaviour, two backends: every test here runs against `SqliteStore` (module `sqlite`)
//! and against `EtcdStore` on a real single-member etcd started for the test (module `etcd`;
//! Debian's `etcd-server`, which `.ci/run` installs — the etcd tests fail, never skip,
//! without it). Revisions are written relative to the store's revision when the test begins
//! (`f.r(n)`: n writing transactions later), because a fresh etcd does not start at 0.

use std::sync::Arc;
use std::time::Duration;

mod common;

use common::*;
use gantry_store::testing::EtcdCluster;
use gantry_store::{
    EtcdStore, KeyValue, KvStore, SqliteStore, StoreError, Txn, TxnOp, TxnResponse, WatchBatch,
};

enum Backend {
    Sqlite(SqliteStore),
    Etcd(Box<EtcdStore>),
}

struct Fixture {
    backend: Arc<Backend>,
    base: i64,
    _etcd: Option<EtcdCluster>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        Fixture::new(Backend::Sqlite(store), None, dir).await
    }

    async fn etcd() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cluster = EtcdCluster::start(dir.path(), 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = EtcdStore::connect(&cluster.config("gantry/"))
            .await
            .unwrap();
        Fixture::new(Backend::Etcd(Box::new(store)), Some(cluster), dir).await
    }

    async fn new(backend: Backend, etcd: Option<EtcdCluster>, dir: tempfile::TempDir) -> Fixture {
        let mut f = Fixture {
            backend: Arc::new(backend),
            base: 0,
            _etcd: etcd,
            _dir: dir,
        };
        f.base = f.store().revision().await.unwrap();
        f
    }

    fn store(&self) -> &dyn KvStore {
        match &*self.backend {
            Backend::Sqlite(s) => s,
            Backend::Etcd(s) => &**s,
        }
    }

    fn shared(&self) -> Arc<Backend> {
        self.backend.clone()
    }

    /// The revision `n` writing transactions after the test began.
    fn r(&self, n: i64) -> i64 {
        self.base + n
    }

    async fn compact(&self, revision: i64) {
        match &*self.backend {
            Backend::Sqlite(s) => s.compact(revision).await.unwrap(),
            Backend::Etcd(s) => s.compact(revision).await.unwrap(),
        }
    }
}

impl Backend {
    fn store(&self) -> &dyn KvStore {
        match self {
            Backend::Sqlite(s) => s,
            Backend::Etcd(s) => &**s,
        }
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Fixture::sqlite().await).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Fixture::etcd().await).await
                }
            )*
        }
    };
}

conformance!(
    put_get_and_missing_key,
    empty_values_are_puts_not_deletes,
    range_returns_only_keys_under_the_prefix_in_order,
    revisions_follow_etcd_bookkeeping,
    txns_that_change_nothing_do_not_bump_the_revision,
    compare_and_swap_on_mod_revision,
    failed_compare_applies_the_failure_branch,
    deletes_remove_keys_from_get_and_range,
    a_key_named_twice_in_one_txn_ends_as_the_last_operation_left_it,
    watch_streams_live_changes_under_the_prefix_in_order,
    watch_replays_from_a_revision_then_goes_live_without_gap_or_duplicate,
    watch_replay_races_concurrent_writers_without_gap_or_duplicate,
    watch_from_now_skips_history_and_from_the_future_waits,
    watch_from_a_compacted_revision_fails,
    a_lagging_watcher_catches_up,
    a_watcher_behind_compacted_history_ends_instead_of_skipping,
    dropping_the_store_ends_its_watches,
    batch_watch_delivers_each_transaction_whole_live_and_on_replay,
    concurrent_transactions_commit_as_if_one_by_one,
    a_listing_larger_than_one_page_is_one_snapshot,
);

async fn put_get_and_missing_key(f: Fixture) {
    let store = f.store();
    assert_eq!(store.get("a").await.unwrap(), None);

    let resp = write(store, vec![put("a", "1")]).await;
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: true,
            revision: f.r(1)
        }
    );
    assert_eq!(
        store.get("a").await.unwrap(),
        Some(KeyValue {
            key: "a".into(),
            value: b"1".to_vec(),
            create_revision: f.r(1),
            mod_revision: f.r(1),
        })
    );
    assert_eq!(store.revision().await.unwrap(), f.r(1));
}

async fn empty_values_are_puts_not_deletes(f: Fixture) {
    let store = f.store();
    let mut watcher = store.watch("", Some(f.r(0))).await.unwrap();
    write(store, vec![put("k", "")]).await;
    assert_eq!(value(store, "k").await.as_deref(), Some(""));
    assert_eq!(next(&mut watcher).await, put_event("k", "", f.r(1), f.r(1)));
    // And through the replay path.
    let mut replay = store.watch("", Some(f.r(0))).await.unwrap();
    assert_eq!(next(&mut replay).await, put_event("k", "", f.r(1), f.r(1)));
}

async fn range_returns_only_keys_under_the_prefix_in_order(f: Fixture) {
    let store = f.store();
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
        write(store, vec![put(key, key)]).await;
    }
    assert_eq!(
        keys(store, "a/").await,
        ["a/", "a/b", "a/z", "a/é", "a/\u{10FFFF}"]
    );
    assert_eq!(keys(store, "a_/").await, ["a_/x"]);
    assert_eq!(keys(store, "a%").await, ["a%/x"]);
    assert_eq!(keys(store, "a/é").await, ["a/é"]);
    assert_eq!(keys(store, "c").await, Vec::<String>::new());
    assert_eq!(keys(store, "").await.len(), 12);

    let (kvs, revision) = store.range("b/").await.unwrap();
    assert_eq!(revision, f.r(12));
    assert_eq!(kvs[0].value, b"b/1");
}

async fn revisions_follow_etcd_bookkeeping(f: Fixture) {
    let store = f.store();
    write(store, vec![put("a", "1")]).await; // r1
    write(store, vec![put("b", "1")]).await; // r2
    write(store, vec![put("a", "2")]).await; // r3

    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (f.r(1), f.r(3)));
    let b = store.get("b").await.unwrap().unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (f.r(2), f.r(2)));

    // One txn, one revision, shared by every key it writes.
    let resp = write(store, vec![put("a", "3"), put("c", "1"), delete("b")]).await;
    assert_eq!(resp.revision, f.r(4));
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (f.r(1), f.r(4)));
    let c = store.get("c").await.unwrap().unwrap();
    assert_eq!((c.create_revision, c.mod_revision), (f.r(4), f.r(4)));
    assert_eq!(store.get("b").await.unwrap(), None);

    // Re-creating a deleted key starts a new life.
    write(store, vec![put("b", "again")]).await; // r5
    let b = store.get("b").await.unwrap().unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (f.r(5), f.r(5)));
    assert_eq!(store.revision().await.unwrap(), f.r(5));
}

async fn txns_that_change_nothing_do_not_bump_the_revision(f: Fixture) {
    let store = f.store();
    write(store, vec![put("a", "1")]).await;

    let resp = write(store, vec![delete("missing")]).await;
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: true,
            revision: f.r(1)
        }
    );
    let resp = store.txn(Txn::default()).await.unwrap();
    assert_eq!(resp.revision, f.r(1));
    // A failed compare with no failure ops.
    let resp = store
        .txn(Txn {
            compare: vec![mod_rev("a", 99_999)],
            success: vec![put("a", "2")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: false,
            revision: f.r(1)
        }
    );
    assert_eq!(store.revision().await.unwrap(), f.r(1));
    assert_eq!(value(store, "a").await.as_deref(), Some("1"));
}

async fn compare_and_swap_on_mod_revision(f: Fixture) {
    let store = f.store();
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
    assert_eq!(value(store, "k").await.as_deref(), Some("first"));

    write(store, vec![put("other", "x")]).await; // r2, moves the global revision only

    // Swap at the current mod revision succeeds, and only once.
    let swap = Txn {
        compare: vec![mod_rev("k", f.r(1))],
        success: vec![put("k", "swapped")],
        failure: vec![],
    };
    let resp = store.txn(swap.clone()).await.unwrap();
    assert_eq!(
        resp,
        TxnResponse {
            succeeded: true,
            revision: f.r(3)
        }
    );
    assert!(!store.txn(swap).await.unwrap().succeeded);
    assert_eq!(value(store, "k").await.as_deref(), Some("swapped"));

    // All compares must hold.
    let resp = store
        .txn(Txn {
            compare: vec![mod_rev("k", f.r(3)), mod_rev("other", f.r(1))],
            success: vec![put("k", "nope")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(value(store, "k").await.as_deref(), Some("swapped"));

    // After a delete, rev 0 holds again.
    write(store, vec![delete("k")]).await;
    assert!(store.txn(create("reborn")).await.unwrap().succeeded);
}

async fn failed_compare_applies_the_failure_branch(f: Fixture) {
    let store = f.store();
    write(store, vec![put("k", "1"), put("doomed", "x")]).await; // r1
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
            revision: f.r(2)
        }
    );
    assert_eq!(value(store, "k").await.as_deref(), Some("1"));
    assert_eq!(value(store, "why").await.as_deref(), Some("exists"));
    assert_eq!(value(store, "doomed").await, None);
}

async fn deletes_remove_keys_from_get_and_range(f: Fixture) {
    let store = f.store();
    write(
        store,
        vec![put("d/1", "1"), put("d/2", "2"), put("d/3", "3")],
    )
    .await;
    let resp = write(store, vec![delete("d/2")]).await;
    assert_eq!(resp.revision, f.r(2));
    assert_eq!(store.get("d/2").await.unwrap(), None);
    assert_eq!(keys(store, "d/").await, ["d/1", "d/3"]);
}

async fn a_key_named_twice_in_one_txn_ends_as_the_last_operation_left_it(f: Fixture) {
    let store = f.store();
    write(store, vec![put("x", "0")]).await;
    let resp = write(
        store,
        vec![put("k", "1"), put("x", "1"), put("k", "2"), delete("x")],
    )
    .await;
    assert_eq!(resp.revision, f.r(2));
    assert_eq!(value(store, "k").await.as_deref(), Some("2"));
    assert_eq!(value(store, "x").await, None);
}

async fn watch_streams_live_changes_under_the_prefix_in_order(f: Fixture) {
    let store = f.store();
    write(store, vec![put("w/before", "x")]).await; // r1, before the watch
    let mut watcher = store.watch("w/", None).await.unwrap();

    write(store, vec![put("w/a", "1")]).await; // r2
    write(store, vec![put("wx", "not mine"), put("other/a", "no")]).await; // r3
    write(store, vec![put("w/a", "2"), put("w/b", "1")]).await; // r4
    write(store, vec![delete("w/a"), delete("w/missing")]).await; // r5

    assert_eq!(
        next(&mut watcher).await,
        put_event("w/a", "1", f.r(2), f.r(2))
    );
    assert_eq!(
        next(&mut watcher).await,
        put_event("w/a", "2", f.r(2), f.r(4))
    );
    assert_eq!(
        next(&mut watcher).await,
        put_event("w/b", "1", f.r(4), f.r(4))
    );
    assert_eq!(next(&mut watcher).await, delete_event("w/a", f.r(5)));
    assert_quiet(&mut watcher).await;
}

async fn watch_replays_from_a_revision_then_goes_live_without_gap_or_duplicate(f: Fixture) {
    let store = f.store();
    for i in 1..=5 {
        write(store, vec![put(&format!("r/{i}"), "v"), put("noise", "n")]).await;
    }
    let mut watcher = store.watch("r/", Some(f.r(2))).await.unwrap();
    for i in 6..=8 {
        write(store, vec![put(&format!("r/{i}"), "v")]).await;
    }
    let mut revisions = Vec::new();
    for _ in 0..6 {
        revisions.push(next(&mut watcher).await.revision());
    }
    assert_eq!(revisions, (3..=8).map(|n| f.r(n)).collect::<Vec<_>>());
    assert_quiet(&mut watcher).await;
}

async fn watch_replay_races_concurrent_writers_without_gap_or_duplicate(f: Fixture) {
    let backend = f.shared();
    let writer = tokio::spawn(async move {
        for i in 1..=400 {
            write(backend.store(), vec![put(&format!("k/{i}"), "v")]).await;
        }
    });
    // Watches started at different moments of the write stream, replaying from the start.
    let mut watchers = Vec::new();
    for _ in 0..8 {
        watchers.push(f.store().watch("k/", Some(f.r(0))).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    for mut watcher in watchers {
        for expected in 1..=400 {
            assert_eq!(next(&mut watcher).await.revision(), f.r(expected));
        }
        assert_quiet(&mut watcher).await;
    }
}

async fn watch_from_now_skips_history_and_from_the_future_waits(f: Fixture) {
    let store = f.store();
    write(store, vec![put("a", "1")]).await;
    let mut now = store.watch("", None).await.unwrap();
    let mut future = store.watch("", Some(f.r(3))).await.unwrap();
    for i in 2..=4 {
        write(store, vec![put("a", &i.to_string())]).await;
    }
    assert_eq!(next(&mut now).await.revision(), f.r(2));
    assert_eq!(next(&mut now).await.revision(), f.r(3));
    assert_eq!(next(&mut now).await.revision(), f.r(4));
    assert_eq!(next(&mut future).await.revision(), f.r(4));
    assert_quiet(&mut future).await;
}

async fn watch_from_a_compacted_revision_fails(f: Fixture) {
    let store = f.store();
    for i in 1..=20 {
        write(store, vec![put("k", &i.to_string())]).await;
    }
    f.compact(f.r(15)).await;
    // History now holds what came after r15.
    for rev in [f.r(0), f.r(10), f.r(14)] {
        match store.watch("", Some(rev)).await {
            Err(StoreError::Compacted(r)) => assert_eq!(r, rev),
            other => panic!("watch from {rev}: expected Compacted, got {other:?}"),
        }
    }
    let mut watcher = store.watch("", Some(f.r(15))).await.unwrap();
    for expected in 16..=20 {
        assert_eq!(next(&mut watcher).await.revision(), f.r(expected));
    }
}

/// Writes `total` transactions from `writers` concurrent writers (each its own keys).
async fn write_many(f: &Fixture, writers: usize, total: usize) {
    let mut handles = Vec::new();
    for w in 0..writers {
        let backend = f.shared();
        let count = total / writers + usize::from(w < total % writers);
        handles.push(tokio::spawn(async move {
            for i in 0..count {
                write(backend.store(), vec![put(&format!("k/{w}/{}", i % 7), "v")]).await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

async fn a_lagging_watcher_catches_up(f: Fixture) {
    let mut watcher = f.store().watch("", None).await.unwrap();
    // Far more than the per-watch buffer (and SQLite's broadcast buffer), while nobody reads.
    let total = 3000;
    write_many(&f, 8, total).await;
    for expected in 1..=total as i64 {
        assert_eq!(next(&mut watcher).await.revision(), f.r(expected));
    }
    assert_quiet(&mut watcher).await;
}

async fn a_watcher_behind_compacted_history_ends_instead_of_skipping(f: Fixture) {
    // Whether an unread watcher falls behind depends on the backend's buffers (SQLite's are
    // bounded, so it does; etcd's server may hold all of it); either way it never skips: what
    // it delivers is contiguous, and it then either has everything or ends (its consumer
    // re-lists).
    let mut watcher = f.store().watch("", None).await.unwrap();
    let total = 3000;
    write_many(&f, 8, total).await;
    f.compact(f.r(total as i64)).await;
    let mut expected = 1;
    while expected <= total as i64 {
        let Some(event) = tokio::time::timeout(Duration::from_secs(10), watcher.recv())
            .await
            .unwrap_or_else(|_| panic!("watch neither delivered nor ended after {expected}"))
        else {
            break;
        };
        assert_eq!(event.revision(), f.r(expected), "events must be contiguous");
        expected += 1;
    }
    if expected > total as i64 {
        assert_quiet(&mut watcher).await;
    }
}

async fn dropping_the_store_ends_its_watches(f: Fixture) {
    let mut watcher = f.store().watch("", None).await.unwrap();
    write(f.store(), vec![put("k", "v")]).await;
    let first = f.r(1);
    // Received before the drop: etcd delivers it asynchronously, and a drop may end the
    // watch before an event still in flight arrives.
    assert_eq!(next(&mut watcher).await.revision(), first);
    let Fixture {
        backend,
        _etcd,
        _dir,
        ..
    } = f;
    drop(backend);
    let end = tokio::time::timeout(Duration::from_secs(10), watcher.recv()).await;
    assert_eq!(end.expect("watch did not end"), None);
}

async fn batch_watch_delivers_each_transaction_whole_live_and_on_replay(f: Fixture) {
    let store = f.store();
    write(store, vec![put("a/1", "x")]).await;
    let mut live = store.watch_batches("a/", None).await.unwrap();
    write(store, vec![put("a/2", "y"), put("b/1", "z"), delete("a/1")]).await;
    write(store, vec![put("b/2", "only outside the prefix")]).await;
    write(store, vec![put("a/3", "w")]).await;

    let expect = [
        WatchBatch {
            revision: f.r(2),
            events: vec![
                put_event("a/2", "y", f.r(2), f.r(2)),
                delete_event("a/1", f.r(2)),
            ],
        },
        WatchBatch {
            revision: f.r(4),
            events: vec![put_event("a/3", "w", f.r(4), f.r(4))],
        },
    ];
    for want in &expect {
        let got = recv(&mut live).await;
        assert_eq!(&sorted(got), &sorted(want.clone()));
    }
    // Replayed: grouped the same way; r3 touched nothing under a/.
    let mut replay = store.watch_batches("a/", Some(f.r(1))).await.unwrap();
    for want in &expect {
        let got = recv(&mut replay).await;
        assert_eq!(&sorted(got), &sorted(want.clone()));
    }
}

async fn recv(w: &mut gantry_store::BatchWatcher) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("no batch within 10s")
        .expect("watch ended")
}

/// A batch with its events in key order (etcd reports one transaction's events by key, SQLite
/// in the order the transaction named them; both are one revision, applied whole).
fn sorted(mut batch: WatchBatch) -> WatchBatch {
    batch.events.sort_by(|a, b| a.key().cmp(b.key()));
    batch
}

async fn concurrent_transactions_commit_as_if_one_by_one(f: Fixture) {
    // Many writers at once: every transaction gets its own revision, compare-and-swap on one
    // key lets exactly one of its contenders win per revision, and a watcher sees every
    // revision once, in order.
    write(f.store(), vec![put("counter", "0")]).await;
    let mut watcher = f.store().watch("", Some(f.r(1))).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..64 {
        let backend = f.shared();
        handles.push(tokio::spawn(async move {
            let store = backend.store();
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
        (2..=65).map(|n| f.r(n)).collect::<Vec<i64>>(),
        "one revision each, no gaps"
    );
    assert_eq!(value(f.store(), "counter").await.as_deref(), Some("64"));
    assert_eq!(keys(f.store(), "own/").await.len(), 64);
    let mut seen = Vec::new();
    while seen.len() < 128 {
        seen.push(next(&mut watcher).await.revision());
    }
    let expected: Vec<i64> = (2..=65).flat_map(|n| [f.r(n), f.r(n)]).collect();
    assert_eq!(seen, expected, "every revision's two events, in order");
    assert_quiet(&mut watcher).await;
}

async fn a_listing_larger_than_one_page_is_one_snapshot(f: Fixture) {
    // More keys than etcd is asked for per page, with a writer changing them meanwhile: the
    // listing holds every key exactly as it stood at the revision it reports.
    let store = f.store();
    let ops: Vec<TxnOp> = (0..1200).map(|i| put(&format!("p/{i:05}"), "0")).collect();
    for chunk in ops.chunks(100) {
        write(store, chunk.to_vec()).await;
    }
    let backend = f.shared();
    let writer = tokio::spawn(async move {
        for i in 0..50 {
            write(
                backend.store(),
                vec![
                    put(&format!("p/{:05}", i * 20), "1"),
                    delete(&format!("p/{:05}", i * 20 + 1)),
                ],
            )
            .await;
        }
    });
    let (kvs, revision) = store.range("p/").await.unwrap();
    writer.await.unwrap();
    let written_at = |i: i64| f.r(12 + i + 1);
    let changes_seen = (0..50).filter(|i| written_at(*i) <= revision).count();
    assert_eq!(
        kvs.len(),
        1200 - changes_seen,
        "deletes as of the listing's revision"
    );
    for kv in &kvs {
        assert!(
            kv.mod_revision <= revision,
            "{} from after the listing",
            kv.key
        );
    }
    let mut sorted_keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    sorted_keys.dedup();
    assert_eq!(sorted_keys.len(), kvs.len(), "no key twice");
}
