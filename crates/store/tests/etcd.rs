//! What only `EtcdStore` faces: members that die, come back, or lose their quorum. Real etcd
//! processes (Debian's `etcd-server`) on loopback, killed with SIGKILL.

use std::time::{Duration, Instant};

use gantry_store::testing::EtcdCluster;
use gantry_store::{EtcdStore, KvStore, Txn, TxnOp, TxnResponse, WatchEvent, Watcher};

fn put(key: &str, value: &str) -> Txn {
    Txn {
        success: vec![TxnOp::Put {
            key: key.into(),
            value: value.into(),
        }],
        ..Txn::default()
    }
}

async fn next(watcher: &mut Watcher) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), watcher.recv())
        .await
        .expect("no watch event within 20s")
        .expect("watch ended")
}

/// Retries a write until it commits (a cluster electing a leader refuses for a moment).
async fn put_eventually(store: &EtcdStore, key: &str, value: &str) -> TxnResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.txn(put(key, value)).await {
            Ok(r) => return r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("write of {key} never committed: {e}"),
        }
    }
}

async fn cluster(size: usize) -> (tempfile::TempDir, EtcdCluster) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(dir.path(), size)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_etcd_restarts_without_gap_or_duplicate() {
    let (_dir, mut etcd) = cluster(1).await;
    let store = EtcdStore::connect(&etcd.config("gantry/")).await.unwrap();
    let mut watcher = store.watch("", None).await.unwrap();
    let first = put_eventually(&store, "a", "1").await.revision;
    assert_eq!(next(&mut watcher).await.revision(), first);

    etcd.restart(0).unwrap();
    let second = put_eventually(&store, "b", "2").await.revision;
    let third = put_eventually(&store, "a", "3").await.revision;
    let got: Vec<(String, i64)> = [next(&mut watcher).await, next(&mut watcher).await]
        .iter()
        .map(|e| (e.key().to_string(), e.revision()))
        .collect();
    assert_eq!(got, [("b".to_string(), second), ("a".to_string(), third)]);
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), watcher.recv()).await {
        panic!("a duplicate or stray event after the reconnect: {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_within_the_timeout_while_etcd_is_down_and_work_when_it_is_back() {
    let (_dir, mut etcd) = cluster(1).await;
    let mut config = etcd.config("gantry/");
    config.request_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&config).await.unwrap();
    put_eventually(&store, "k", "before").await;

    etcd.kill(0);
    let started = Instant::now();
    let write = store.txn(put("k", "while down")).await;
    assert!(write.is_err(), "a write with etcd down: {write:?}");
    let read = store.get("k").await;
    assert!(read.is_err(), "a read with etcd down: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "two calls took {:?}: they must fail within the request timeout, not hang",
        started.elapsed()
    );

    etcd.restart(0).unwrap();
    put_eventually(&store, "k", "after").await;
    let kv = store.get("k").await.unwrap().unwrap();
    assert_eq!(
        kv.value, b"after",
        "the write refused while down never happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_write_through_one_loss_and_refuse_without_quorum() {
    let (_dir, mut etcd) = cluster(3).await;
    let mut config = etcd.config("gantry/");
    config.request_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&config).await.unwrap();
    put_eventually(&store, "k", "3 members").await;

    // One member gone (perhaps the leader): a new leader is elected, writes go on.
    etcd.kill(0);
    put_eventually(&store, "k", "2 members").await;
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"2 members");

    // Two gone: no quorum. Every write fails, in bounded time, and none is applied.
    etcd.kill(1);
    let started = Instant::now();
    for i in 0..3 {
        let r = store.txn(put("k", &format!("no quorum {i}"))).await;
        assert!(r.is_err(), "a write without quorum was acknowledged: {r:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refusals took {:?}",
        started.elapsed()
    );

    // Quorum back: writes commit again. A refused write was never acknowledged, but one that
    // timed out may still have been in the surviving member's log and commit now (etcd's
    // outcome for a timed-out proposal is unknown, which is why it was refused, not
    // acknowledged): the key holds the last acknowledged value or one of those.
    etcd.restart(0).unwrap();
    put_eventually(&store, "other", "x").await;
    let kv = store.get("k").await.unwrap().unwrap();
    let value = String::from_utf8(kv.value).unwrap();
    assert!(
        value == "2 members" || value.starts_with("no quorum "),
        "a value nobody wrote: {value}"
    );
    etcd.restart(1).unwrap();
    put_eventually(&store, "k", "3 members again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_may_name_many_keys() {
    // etcd refuses more than --max-txn-ops operations per transaction (128 by default);
    // Gantry's own clusters are started with room for its largest transactions.
    let (_dir, etcd) = cluster(1).await;
    let store = EtcdStore::connect(&etcd.config("gantry/")).await.unwrap();
    let ops: Vec<TxnOp> = (0..500)
        .map(|i| TxnOp::Put {
            key: format!("many/{i:04}"),
            value: b"v".to_vec(),
        })
        .collect();
    store
        .txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
        .unwrap();
    assert_eq!(store.range("many/").await.unwrap().0.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_binds_keys_to_its_lease_and_knows_what_it_holds() {
    use gantry_store::EtcdSession;
    let (_dir, etcd) = cluster(1).await;
    let store = EtcdStore::connect(&etcd.config("gantry/")).await.unwrap();
    let one = EtcdSession::start(&store, Duration::from_secs(2))
        .await
        .unwrap();
    let two = EtcdSession::start(&store, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(one.alive() && two.alive());

    let won = one.create("leader", b"one".to_vec()).await.unwrap();
    let token = won.expect("the first create wins");
    assert_eq!(two.create("leader", b"two".to_vec()).await.unwrap(), None);
    // A create whose answer was lost is recognised: the key is bound to this session.
    assert_eq!(one.held_here("leader").await.unwrap(), Some(token));
    assert_eq!(two.held_here("leader").await.unwrap(), None);
    one.put("replicas/one", b"x".to_vec()).await.unwrap();

    // Without keep-alives the lease expires and etcd deletes what it held.
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.get("leader").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the dropped session's keys outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.get("replicas/one").await.unwrap(), None);
    assert!(two
        .create("leader", b"two".to_vec())
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cut_off_from_etcd_knows_it_is_over_before_its_lease_can_expire() {
    use gantry_store::EtcdSession;
    let (_dir, mut etcd) = cluster(1).await;
    let mut config = etcd.config("gantry/");
    config.request_timeout = Duration::from_secs(1);
    let store = EtcdStore::connect(&config).await.unwrap();
    let session = EtcdSession::start(&store, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(session.alive());
    etcd.kill(0);
    let killed = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), session.lost())
        .await
        .expect("the session noticed within its TTL");
    assert!(
        killed.elapsed() <= Duration::from_secs(3),
        "alive() must turn false before the TTL has passed since the last keep-alive ({:?})",
        killed.elapsed()
    );
    // Once over, it stays over, even when etcd is back.
    etcd.restart(0).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!session.alive());
}
