//! The journal that replicas copy each other's logs through (crate docs, "Several
//! control-plane replicas"): two and three backends standing for replicas.

use crate::*;

fn event(stream: &str, timestamp: i64, message: &str) -> NewEvent {
    NewEvent {
        group: "g".into(),
        stream: stream.into(),
        timestamp,
        message: message.into(),
    }
}

/// A replica's store, and the origin its changes carry.
async fn replica(id: &str) -> (SqliteLogBackend, String) {
    let store = SqliteLogBackend::open_in_memory(LogLimits::default()).expect("open in memory");
    let origin = store.journal_as(id).await.expect("journal_as");
    (store, origin)
}

async fn messages(store: &SqliteLogBackend, stream: &str) -> Vec<String> {
    store
        .read_stream("g", stream, StreamCursor::Forward { after: 0 }, 1000)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// Copy everything `from` holds of `origin` into `to`, a page of `page` at a time.
async fn copy(from: &SqliteLogBackend, to: &SqliteLogBackend, origin: &str, page: usize) {
    loop {
        let after = to
            .journal_positions()
            .await
            .expect("positions")
            .get(origin)
            .copied()
            .unwrap_or(0);
        let read = from.journal(origin, after, page).await.expect("journal");
        let done = read.entries.is_empty() && read.read_to == after;
        to.apply_journal(origin, read).await.expect("apply");
        if done {
            return;
        }
    }
}

#[tokio::test]
async fn a_copy_holds_the_events_and_changes_in_order_and_can_be_read_on_from() {
    let (a, oa) = replica("a").await;
    a.create_group(NewGroup {
        name: "g".into(),
        ..NewGroup::default()
    })
    .await
    .expect("group");
    a.set_retention("g", Some(7)).await.expect("retention");
    a.ensure_stream("g", "empty", false).await.expect("stream");
    for i in 0..5 {
        a.append_batch(vec![event("s", i, &format!("line {i}"))], None)
            .await
            .expect("append");
    }
    let receipt = a
        .append_batch(vec![event("s", 9, "last")], Some("batch-9".into()))
        .await
        .expect("append");
    // 3 changes, then 6 events: the last is the 9th entry of a's journal.
    assert_eq!(receipt.journal_position, Some((oa.clone(), 9)));

    let (b, _) = replica("b").await;
    copy(&a, &b, &oa, 2).await;
    assert_eq!(
        messages(&b, "s").await,
        ["line 0", "line 1", "line 2", "line 3", "line 4", "last"]
    );
    let group = b.group("g").await.expect("group").expect("copied group");
    assert_eq!(group.retention_days, Some(7));
    let streams: Vec<String> = b
        .list_streams("g")
        .await
        .expect("streams")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(streams, ["empty", "s"]);
    assert_eq!(b.journal_positions().await.expect("positions")[&oa], 9);

    // A third replica reads a's journal from b, which holds it under a's name.
    let (c, _) = replica("c").await;
    copy(&b, &c, &oa, 4).await;
    assert_eq!(messages(&c, "s").await, messages(&a, "s").await);
    // Copying again adds nothing; b's own changes coming back to a are skipped.
    copy(&a, &b, &oa, 100).await;
    assert_eq!(messages(&b, "s").await.len(), 6);
    let own = b.journal(&oa, 0, 100).await.expect("journal");
    assert_eq!(a.apply_journal(&oa, own).await.expect("apply"), 0);
    assert_eq!(messages(&a, "s").await.len(), 6);
}

#[tokio::test]
async fn a_batch_sent_again_is_stored_once_wherever_it_arrives() {
    let (a, oa) = replica("a").await;
    let first = a
        .append_batch(vec![event("s", 1, "once")], Some("agent-1:7".into()))
        .await
        .expect("append");
    assert!(!first.duplicate);
    let again = a
        .append_batch(vec![event("s", 1, "once")], Some("agent-1:7".into()))
        .await
        .expect("append");
    assert!(again.duplicate);
    assert_eq!(again.journal_position, first.journal_position);
    assert_eq!(messages(&a, "s").await, ["once"]);

    // The agent, without an answer from a, sends the batch to b, which had copied it...
    let (b, _) = replica("b").await;
    copy(&a, &b, &oa, 10).await;
    let on_b = b
        .append_batch(vec![event("s", 1, "once")], Some("agent-1:7".into()))
        .await
        .expect("append");
    assert!(on_b.duplicate);
    assert_eq!(on_b.journal_position, Some((oa.clone(), 1)));
    // ...or had not yet: then the copy that arrives later from a is left out.
    let (c, _) = replica("c").await;
    c.append_batch(vec![event("s", 1, "once")], Some("agent-1:7".into()))
        .await
        .expect("append");
    copy(&a, &c, &oa, 10).await;
    assert_eq!(messages(&c, "s").await, ["once"]);
    assert_eq!(c.journal_positions().await.expect("positions")[&oa], 1);
}

#[tokio::test]
async fn a_deleted_group_is_deleted_on_the_copy_and_the_reader_moves_past_it() {
    let (a, oa) = replica("a").await;
    a.append_batch(vec![event("s", 1, "x"), event("s", 2, "y")], None)
        .await
        .expect("append");
    let (b, _) = replica("b").await;
    copy(&a, &b, &oa, 10).await;
    assert_eq!(messages(&b, "s").await, ["x", "y"]);
    a.append_batch(vec![event("s", 3, "z")], None)
        .await
        .expect("append");
    a.delete_group("g").await.expect("delete");
    copy(&a, &b, &oa, 10).await;
    assert!(b.group("g").await.expect("group").is_none());
    // The deleted events are gone from a's journal; b has read past them.
    assert_eq!(b.journal_positions().await.expect("positions")[&oa], 4);
    let page = a.journal(&oa, 4, 10).await.expect("journal");
    assert!(page.entries.is_empty());
    assert_eq!(page.read_to, 4);
}

#[tokio::test]
async fn a_backend_without_a_journal_numbers_nothing() {
    let store = SqliteLogBackend::open_in_memory(LogLimits::default()).expect("open");
    let receipt = store
        .append_batch(vec![event("s", 1, "x")], Some("b1".into()))
        .await
        .expect("append");
    assert_eq!(receipt.journal_position, None);
    assert!(store
        .journal_positions()
        .await
        .expect("positions")
        .is_empty());
    // The batch id still keeps a retry from being stored twice.
    let again = store
        .append_batch(vec![event("s", 1, "x")], Some("b1".into()))
        .await
        .expect("append");
    assert!(again.duplicate);
}

#[tokio::test]
async fn a_page_never_ends_inside_a_batch() {
    let (a, oa) = replica("a").await;
    let batch = |n: i64, id: &str| {
        (
            (0..n)
                .map(|i| event("s", i, &format!("{id}-{i}")))
                .collect(),
            Some(id.to_string()),
        )
    };
    for (events, id) in [batch(3, "x"), batch(3, "y")] {
        a.append_batch(events, id).await.expect("append");
    }
    // A page of 2 entries comes with the rest of batch x; the next starts with y.
    let first = a.journal(&oa, 0, 2).await.expect("journal");
    assert_eq!(first.entries.len(), 3);
    assert_eq!(first.read_to, 3);
    let second = a.journal(&oa, first.read_to, 1).await.expect("journal");
    assert_eq!(
        second.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5, 6]
    );
}

#[tokio::test]
async fn a_new_store_of_the_same_replica_starts_a_journal_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs.db");
    let store = SqliteLogBackend::open(&path, LogLimits::default()).expect("open");
    let first = store.journal_as("r-1").await.expect("journal_as");
    drop(store);
    let reopened = SqliteLogBackend::open(&path, LogLimits::default()).expect("open");
    assert_eq!(reopened.journal_as("r-1").await.expect("journal_as"), first);
    drop(reopened);
    std::fs::remove_file(&path).expect("remove");
    let fresh = SqliteLogBackend::open(&path, LogLimits::default()).expect("open");
    let second = fresh.journal_as("r-1").await.expect("journal_as");
    assert!(
        second.starts_with("r-1.") && second != first,
        "{first} {second}"
    );
}
