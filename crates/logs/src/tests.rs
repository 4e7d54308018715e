use crate::*;

const DAY_MS: i64 = 86_400_000;

fn event(group: &str, stream: &str, timestamp: i64, message: &str) -> NewEvent {
    NewEvent {
        group: group.into(),
        stream: stream.into(),
        timestamp,
        message: message.into(),
    }
}

/// A message that, with the per-event overhead, counts for exactly 100 bytes.
fn line(i: u32) -> String {
    format!("line {i:0>69}")
}

fn hundred_byte_event(group: &str, stream: &str, i: u32) -> NewEvent {
    event(group, stream, 1_000 + i64::from(i), &line(i))
}

fn memory_store(limits: LogLimits) -> SqliteLogBackend {
    SqliteLogBackend::open_in_memory(limits).expect("open in memory")
}

fn messages(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

async fn assert_accounting_matches(store: &SqliteLogBackend) -> LogStats {
    let stats = store.stats().await.expect("stats");
    let counted = store.recount().expect("recount");
    assert_eq!(
        (stats.stored_events, stats.stored_bytes),
        (counted.events, counted.bytes),
        "running totals drifted from the events stored"
    );
    stats
}

#[test]
fn a_hundred_byte_event_counts_for_a_hundred_bytes() {
    assert_eq!(event_bytes(&line(7)), 100);
}

#[tokio::test]
async fn a_stream_read_keeps_the_time_range_at_or_after_start_and_before_end() {
    let store = memory_store(LogLimits::default());
    store
        .append(
            (0..6)
                .map(|i| event("g", "s", 100 + i, &format!("m{i}")))
                .collect(),
        )
        .await
        .expect("append");
    let range = TimeRange {
        start: Some(101),
        end: Some(104),
    };
    let forward = store
        .read_stream_in("g", "s", StreamCursor::Forward { after: 0 }, range, 2)
        .await
        .expect("read");
    assert_eq!(messages(&forward), vec!["m1", "m2"]);
    let rest = store
        .read_stream_in(
            "g",
            "s",
            StreamCursor::Forward {
                after: forward[1].sequence,
            },
            range,
            10,
        )
        .await
        .expect("read");
    assert_eq!(messages(&rest), vec!["m3"]);
    let newest = store
        .read_stream_in("g", "s", StreamCursor::Backward { before: None }, range, 1)
        .await
        .expect("read");
    assert_eq!(messages(&newest), vec!["m3"]);
}

#[tokio::test]
async fn append_then_read_returns_what_was_stored() {
    let store = memory_store(LogLimits::default());
    let receipt = store
        .append(vec![
            event("/ecs/web", "ecs/app/1", 10, "hello"),
            event("/ecs/web", "ecs/app/1", 11, "world"),
            event("/ecs/api", "ecs/app/2", 12, "héllo"),
        ])
        .await
        .expect("append");
    assert_eq!(receipt.stored.events, 3);
    assert_eq!(
        receipt.stored.bytes,
        event_bytes("hello") + event_bytes("world") + event_bytes("héllo")
    );
    assert!(receipt.evicted.is_empty());
    let (first, last) = (
        receipt.first_sequence.expect("first"),
        receipt.last_sequence.expect("last"),
    );
    assert_eq!(last - first, 2);

    let web = store
        .read_stream(
            "/ecs/web",
            "ecs/app/1",
            StreamCursor::Forward { after: 0 },
            100,
        )
        .await
        .expect("read");
    assert_eq!(messages(&web), vec!["hello", "world"]);
    assert_eq!(web[0].timestamp, 10);
    assert_eq!(web[0].stream, "ecs/app/1");
    assert_eq!(web[0].ingestion_time, receipt.ingestion_time);
    assert_eq!(web[0].sequence, first);

    let groups = store.list_groups().await.expect("groups");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec!["/ecs/api", "/ecs/web"]);
    assert_eq!(groups[1].stored_events, 2);
    assert_eq!(
        groups[1].stored_bytes,
        event_bytes("hello") + event_bytes("world")
    );
    assert_eq!(groups[1].retention_days, None);
    assert_eq!(groups[1].creation_time, receipt.ingestion_time);

    let streams = store.list_streams("/ecs/web").await.expect("streams");
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].name, "ecs/app/1");
    assert_eq!(
        (
            streams[0].first_event_timestamp,
            streams[0].last_event_timestamp
        ),
        (Some(10), Some(11))
    );
    assert_accounting_matches(&store).await;
}

#[tokio::test]
async fn missing_groups_and_streams_are_told_apart() {
    let store = memory_store(LogLimits::default());
    store
        .append(vec![event("g", "s", 1, "x")])
        .await
        .expect("append");
    let head = StreamCursor::Forward { after: 0 };
    assert!(matches!(
        store.read_stream("nope", "s", head, 10).await,
        Err(LogError::GroupNotFound(_))
    ));
    assert!(matches!(
        store.read_stream("g", "nope", head, 10).await,
        Err(LogError::StreamNotFound { .. })
    ));
    assert!(matches!(
        store
            .read_group("nope", &GroupQuery::default(), 0, 10)
            .await,
        Err(LogError::GroupNotFound(_))
    ));
    assert!(matches!(
        store.list_streams("nope").await,
        Err(LogError::GroupNotFound(_))
    ));
    assert_eq!(store.group("nope").await.expect("group"), None);
    assert!(store.append(Vec::new()).await.is_ok());
}

#[tokio::test]
async fn a_stream_reads_forwards_and_backwards_in_pages() {
    let store = memory_store(LogLimits::default());
    let batch: Vec<NewEvent> = (0..10)
        .flat_map(|i| {
            [
                event("g", "a", i, &format!("a{i}")),
                event("g", "b", i, &format!("b{i}")),
            ]
        })
        .collect();
    store.append(batch).await.expect("append");

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_stream("g", "a", StreamCursor::Forward { after }, 3)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = last.sequence;
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|e| e.message.clone()));
    }
    let expected: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    assert_eq!(seen, expected);

    let tail = store
        .read_stream("g", "a", StreamCursor::Backward { before: None }, 3)
        .await
        .expect("tail");
    assert_eq!(messages(&tail), vec!["a7", "a8", "a9"]);
    let before = tail[0].sequence;
    let earlier = store
        .read_stream(
            "g",
            "a",
            StreamCursor::Backward {
                before: Some(before),
            },
            3,
        )
        .await
        .expect("earlier");
    assert_eq!(messages(&earlier), vec!["a4", "a5", "a6"]);
    let start = store
        .read_stream(
            "g",
            "a",
            StreamCursor::Backward {
                before: Some(earlier[0].sequence),
            },
            100,
        )
        .await
        .expect("start");
    assert_eq!(messages(&start), vec!["a0", "a1", "a2", "a3"]);
}

#[tokio::test]
async fn a_group_reads_by_stream_names_prefix_and_time() {
    let store = memory_store(LogLimits::default());
    store
        .append(vec![
            event("g", "web/1", 100, "w1-early"),
            event("g", "api/1", 150, "a1"),
            event("g", "web/2", 200, "w2"),
            event("g", "web/1", 300, "w1-late"),
            event("other", "web/1", 100, "elsewhere"),
        ])
        .await
        .expect("append");

    let all = store
        .read_group("g", &GroupQuery::default(), 0, 100)
        .await
        .expect("all");
    assert_eq!(messages(&all), vec!["w1-early", "a1", "w2", "w1-late"]);
    assert_eq!(all[1].stream, "api/1");

    let by_prefix = GroupQuery {
        stream_prefix: Some("web/".into()),
        ..GroupQuery::default()
    };
    let web = store
        .read_group("g", &by_prefix, 0, 100)
        .await
        .expect("prefix");
    assert_eq!(messages(&web), vec!["w1-early", "w2", "w1-late"]);

    let by_names = GroupQuery {
        stream_names: Some(vec!["web/1".into(), "api/1".into()]),
        ..GroupQuery::default()
    };
    let named = store
        .read_group("g", &by_names, 0, 100)
        .await
        .expect("names");
    assert_eq!(messages(&named), vec!["w1-early", "a1", "w1-late"]);

    let in_time = GroupQuery {
        start_time: Some(150),
        end_time: Some(200),
        ..GroupQuery::default()
    };
    let windowed = store.read_group("g", &in_time, 0, 100).await.expect("time");
    assert_eq!(messages(&windowed), vec!["a1", "w2"]);

    let first_page = store
        .read_group("g", &by_prefix, 0, 2)
        .await
        .expect("page 1");
    assert_eq!(messages(&first_page), vec!["w1-early", "w2"]);
    let after = first_page[1].sequence;
    let second_page = store
        .read_group("g", &by_prefix, after, 2)
        .await
        .expect("page 2");
    assert_eq!(messages(&second_page), vec!["w1-late"]);

    let none = GroupQuery {
        stream_prefix: Some("db/".into()),
        ..GroupQuery::default()
    };
    assert!(store
        .read_group("g", &none, 0, 100)
        .await
        .expect("none")
        .is_empty());
}

#[tokio::test]
async fn the_cap_evicts_the_oldest_events_first_and_counts_them() {
    // 1,000 bytes = ten 100-byte events; eviction goes down to 900.
    let store = memory_store(LogLimits::with_max_bytes(1_000));
    for i in 0..9 {
        store
            .append(vec![hundred_byte_event("/ecs/old", "s", i)])
            .await
            .expect("append");
    }
    let at_cap = store
        .append(vec![hundred_byte_event("/ecs/new", "s", 100)])
        .await
        .expect("append");
    assert!(at_cap.evicted.is_empty(), "exactly at the cap is allowed");

    let over = store
        .append(vec![hundred_byte_event("/ecs/new", "s", 101)])
        .await
        .expect("append");
    // 1,100 would pass the cap: the two oldest go, leaving 900 (the low-water mark).
    assert_eq!(
        over.evicted.dropped,
        Volume {
            events: 2,
            bytes: 200
        }
    );
    assert_eq!(over.evicted.groups, vec!["/ecs/old".to_string()]);
    let stats = assert_accounting_matches(&store).await;
    assert_eq!(stats.stored_bytes, 900);
    assert_eq!(
        stats.evicted_by_cap,
        Volume {
            events: 2,
            bytes: 200
        }
    );
    let old = store
        .read_stream("/ecs/old", "s", StreamCursor::Forward { after: 0 }, 100)
        .await
        .expect("old");
    assert_eq!(old[0].message, line(2), "the oldest went first");

    // With the headroom the low-water mark left, the next append evicts nothing.
    let next = store
        .append(vec![hundred_byte_event("/ecs/new", "s", 102)])
        .await
        .expect("append");
    assert!(next.evicted.is_empty());

    // Keep writing to the new group: the old one empties, the newest event always survives,
    // and the store never passes its cap.
    for i in 103..140 {
        let receipt = store
            .append(vec![hundred_byte_event("/ecs/new", "s", i)])
            .await
            .expect("append");
        let stats = assert_accounting_matches(&store).await;
        assert!(stats.stored_bytes <= 1_000, "{stats:?}");
        let newest = store
            .read_stream("/ecs/new", "s", StreamCursor::Backward { before: None }, 1)
            .await
            .expect("newest");
        assert_eq!(newest[0].message, line(i));
        assert_eq!(Some(newest[0].sequence), receipt.last_sequence);
    }
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        stats.evicted_by_cap.events + stats.stored_events,
        9 + 40,
        "every event is either stored or counted as evicted"
    );
    // The emptied stream stays (as in CloudWatch), with nothing stored; so does its group.
    let old_streams = store.list_streams("/ecs/old").await.expect("streams");
    assert_eq!(old_streams.len(), 1);
    assert_eq!(
        (old_streams[0].stored_events, old_streams[0].stored_bytes),
        (0, 0)
    );
    let old_group = store.group("/ecs/old").await.expect("group");
    assert_eq!(old_group.map(|g| g.stored_bytes), Some(0));
    // A reader of the emptied stream gets no events, not "stream not found".
    let read = store
        .read_stream("/ecs/old", "s", StreamCursor::Forward { after: 0 }, 1)
        .await
        .expect("an emptied stream still reads");
    assert!(read.is_empty());
}

#[tokio::test]
async fn a_batch_larger_than_the_cap_keeps_its_newest_events() {
    let store = memory_store(LogLimits::with_max_bytes(1_000));
    store
        .append(vec![hundred_byte_event("g", "earlier", 0)])
        .await
        .expect("append");
    let batch: Vec<NewEvent> = (1..=15).map(|i| hundred_byte_event("g", "s", i)).collect();
    let receipt = store.append(batch).await.expect("append");
    assert_eq!(receipt.stored.events, 10);
    assert_eq!(
        receipt.evicted.dropped,
        Volume {
            events: 6,
            bytes: 600
        },
        "five of the batch and the one event stored before"
    );
    let kept = store
        .read_stream("g", "s", StreamCursor::Forward { after: 0 }, 100)
        .await
        .expect("read");
    let expected: Vec<String> = (6..=15).map(line).collect();
    assert_eq!(
        kept.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        expected
    );
    let stats = assert_accounting_matches(&store).await;
    assert!(stats.stored_bytes <= 1_000);
    assert_eq!(stats.evicted_by_cap.events, 6);
}

#[tokio::test]
async fn sequences_are_never_reused_after_the_newest_events_are_evicted() {
    let store = memory_store(LogLimits::with_max_bytes(1_000));
    let first = store
        .append((0..10).map(|i| hundred_byte_event("g", "s", i)).collect())
        .await
        .expect("append");
    // A batch of the cap's size evicts everything stored, the newest events included.
    let second = store
        .append((10..20).map(|i| hundred_byte_event("g", "s", i)).collect())
        .await
        .expect("append");
    assert!(second.first_sequence > first.last_sequence);
}

#[tokio::test]
async fn retention_drops_only_older_events_of_groups_that_have_it() {
    let store = memory_store(LogLimits::default());
    let now = 100 * DAY_MS;
    let two_days_ago = now - 2 * DAY_MS;
    let an_hour_ago = now - 3_600_000;
    store
        .append(vec![
            event("/daily", "s", two_days_ago, "daily-old"),
            event("/daily", "s", an_hour_ago, "daily-new"),
            event("/daily", "only-old", two_days_ago, "gone"),
            event("/weekly", "s", two_days_ago, "weekly-old"),
            event("/forever", "s", 0, "ancient"),
        ])
        .await
        .expect("append");
    store.set_retention("/daily", Some(1)).await.expect("daily");
    store
        .set_retention("/weekly", Some(7))
        .await
        .expect("weekly");

    let swept = store.enforce_retention(now).await.expect("sweep");
    assert_eq!(swept.dropped.events, 2);
    assert_eq!(
        swept.dropped.bytes,
        event_bytes("daily-old") + event_bytes("gone")
    );
    assert_eq!(swept.groups, vec!["/daily".to_string()]);

    let daily = store
        .read_group("/daily", &GroupQuery::default(), 0, 100)
        .await
        .expect("daily");
    assert_eq!(messages(&daily), vec!["daily-new"]);
    let streams = store.list_streams("/daily").await.expect("streams");
    assert_eq!(streams.len(), 2, "the emptied stream stays, empty");
    let kept: Vec<_> = streams.iter().filter(|s| s.stored_events > 0).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].first_event_timestamp, Some(an_hour_ago));
    assert!(streams
        .iter()
        .any(|s| s.stored_events == 0 && s.stored_bytes == 0));
    for (group, message) in [("/weekly", "weekly-old"), ("/forever", "ancient")] {
        let kept = store
            .read_group(group, &GroupQuery::default(), 0, 100)
            .await
            .expect("kept");
        assert_eq!(messages(&kept), vec![message]);
    }
    let stats = assert_accounting_matches(&store).await;
    assert_eq!(stats.evicted_by_retention, swept.dropped);
    assert_eq!(stats.evicted_by_cap, Volume::default());

    assert!(store
        .enforce_retention(now)
        .await
        .expect("again")
        .is_empty());
    store.set_retention("/weekly", None).await.expect("clear");
    assert!(store
        .enforce_retention(now + 30 * DAY_MS)
        .await
        .expect("cleared")
        .groups
        .iter()
        .all(|g| g != "/weekly"));
}

#[tokio::test]
async fn only_cloudwatch_retention_periods_are_accepted() {
    let store = memory_store(LogLimits::default());
    store
        .append(vec![event("g", "s", 1, "x")])
        .await
        .expect("append");
    for bad in [0, 2, 8, 366, 3654] {
        assert!(
            matches!(
                store.set_retention("g", Some(bad)).await,
                Err(LogError::InvalidRetention(d)) if d == bad
            ),
            "{bad} days accepted"
        );
    }
    assert_eq!(
        store
            .group("g")
            .await
            .expect("group")
            .and_then(|g| g.retention_days),
        None,
        "a rejected value changes nothing"
    );
    for good in RETENTION_DAYS {
        store.set_retention("g", Some(good)).await.expect("valid");
    }
    assert_eq!(
        store
            .group("g")
            .await
            .expect("group")
            .and_then(|g| g.retention_days),
        Some(3653)
    );
    assert!(matches!(
        store.set_retention("missing", Some(7)).await,
        Err(LogError::GroupNotFound(_))
    ));
}

#[test]
fn limits_are_checked() {
    assert!(LogLimits::with_max_bytes(0).validate().is_err());
    let bad_mark = LogLimits {
        max_bytes: 100,
        low_water_percent: 101,
    };
    assert!(SqliteLogBackend::open_in_memory(bad_mark).is_err());
    assert_eq!(LogLimits::default().max_bytes, 1 << 30);
    assert_eq!(LogLimits::with_max_bytes(1_000).low_water_bytes(), 900);
}

#[tokio::test]
async fn reopening_keeps_events_and_byte_accounting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs.db");
    let limits = LogLimits::with_max_bytes(1_000);
    let (before, last) = {
        let store = SqliteLogBackend::open(&path, limits).expect("open");
        let mut last = None;
        for i in 0..14 {
            last = store
                .append(vec![hundred_byte_event("g", "s", i)])
                .await
                .expect("append")
                .last_sequence;
        }
        store.set_retention("g", Some(30)).await.expect("retention");
        (assert_accounting_matches(&store).await, last)
    };
    assert!(before.evicted_by_cap.events > 0);

    let store = SqliteLogBackend::open(&path, limits).expect("reopen");
    let after = assert_accounting_matches(&store).await;
    assert_eq!(after, before);
    assert_eq!(
        store
            .group("g")
            .await
            .expect("group")
            .map(|g| g.retention_days),
        Some(Some(30))
    );
    let tail = store
        .read_stream("g", "s", StreamCursor::Backward { before: None }, 1)
        .await
        .expect("tail");
    assert_eq!(Some(tail[0].sequence), last);
    let next = store
        .append(vec![hundred_byte_event("g", "s", 99)])
        .await
        .expect("append");
    assert!(next.first_sequence > last);
    drop(store);

    // A lower cap holds from the moment the store opens.
    let store = SqliteLogBackend::open(&path, LogLimits::with_max_bytes(500)).expect("reopen");
    let shrunk = assert_accounting_matches(&store).await;
    assert!(shrunk.stored_bytes <= 450, "{shrunk:?}");
    assert!(shrunk.evicted_by_cap.events > before.evicted_by_cap.events);
}

#[tokio::test]
async fn a_store_from_before_the_cap_is_migrated_keeping_event_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("legacy");
        conn.execute_batch(
            "CREATE TABLE log_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                log_group TEXT NOT NULL,
                log_stream TEXT NOT NULL,
                timestamp INTEGER NOT NULL,
                ingestion_time INTEGER NOT NULL,
                message TEXT NOT NULL);
             CREATE INDEX log_events_stream ON log_events(log_group, log_stream, id);",
        )
        .expect("legacy schema");
        for i in 1..=10u32 {
            let group = if i <= 3 { "/ecs/old" } else { "/ecs/web" };
            conn.execute(
                "INSERT INTO log_events (log_group, log_stream, timestamp, ingestion_time, message)
                 VALUES (?1, 's', ?2, ?3, ?4)",
                rusqlite::params![group, i64::from(i), 5_000 + i64::from(i), line(i)],
            )
            .expect("legacy row");
        }
    }
    // 500 bytes, low-water 450: the four newest legacy events fit.
    let store = SqliteLogBackend::open(&path, LogLimits::with_max_bytes(500)).expect("open");
    let stats = assert_accounting_matches(&store).await;
    assert_eq!(stats.stored_events, 4);
    assert_eq!(
        stats.evicted_by_cap,
        Volume {
            events: 6,
            bytes: 600
        }
    );
    let web = store
        .read_stream("/ecs/web", "s", StreamCursor::Forward { after: 0 }, 100)
        .await
        .expect("web");
    let ids: Vec<i64> = web.iter().map(|e| e.sequence).collect();
    assert_eq!(ids, vec![7, 8, 9, 10], "event ids became sequences");
    assert_eq!(web[0].ingestion_time, 5_007);
    let groups = store.list_groups().await.expect("groups");
    let old = groups.iter().find(|g| g.name == "/ecs/old");
    assert_eq!(old.map(|g| g.stored_bytes), Some(0), "the group is kept");
    assert_eq!(old.map(|g| g.creation_time), Some(5_001));
    let next = store
        .append(vec![hundred_byte_event("/ecs/web", "s", 11)])
        .await
        .expect("append");
    assert_eq!(next.first_sequence, Some(11));
    drop(store);

    // Opening again finds the current schema and migrates nothing twice.
    let store = SqliteLogBackend::open(&path, LogLimits::with_max_bytes(500)).expect("reopen");
    let again = assert_accounting_matches(&store).await;
    assert_eq!(again.evicted_by_cap, stats.evicted_by_cap);
}

fn tags(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn put(timestamp: i64, message: &str) -> PutEvent {
    PutEvent {
        timestamp,
        message: message.into(),
    }
}

#[tokio::test]
async fn groups_are_created_once_with_their_class_and_tags() {
    let store = memory_store(LogLimits::default());
    store
        .create_group(NewGroup {
            name: "/app/web".into(),
            tags: tags(&[("team", "core")]),
            class: Some("INFREQUENT_ACCESS".into()),
        })
        .await
        .expect("create");
    let again = store
        .create_group(NewGroup {
            name: "/app/web".into(),
            ..NewGroup::default()
        })
        .await;
    assert!(matches!(again, Err(LogError::GroupAlreadyExists(_))));
    let g = store
        .group("/app/web")
        .await
        .expect("group")
        .expect("exists");
    assert_eq!(g.class, "INFREQUENT_ACCESS");
    assert_eq!((g.stored_events, g.retention_days), (0, None));
    assert!(g.creation_time > 0);
    assert_eq!(
        store.group_tags("/app/web").await.expect("tags"),
        tags(&[("team", "core")])
    );
    // Groups created by their first event have the default class.
    store
        .append(vec![event("/ecs/implicit", "s", 1, "x")])
        .await
        .expect("append");
    let implicit = store.group("/ecs/implicit").await.expect("group");
    assert_eq!(implicit.map(|g| g.class), Some("STANDARD".to_string()));
    assert!(store
        .list_streams("/app/web")
        .await
        .expect("streams")
        .is_empty());
}

#[tokio::test]
async fn streams_are_created_empty_and_take_their_first_events_timestamps() {
    let store = memory_store(LogLimits::default());
    assert!(matches!(
        store.create_stream("nope", "s").await,
        Err(LogError::GroupNotFound(_))
    ));
    store
        .create_group(NewGroup {
            name: "g".into(),
            ..NewGroup::default()
        })
        .await
        .expect("group");
    store.create_stream("g", "s").await.expect("stream");
    assert!(matches!(
        store.create_stream("g", "s").await,
        Err(LogError::StreamAlreadyExists { .. })
    ));
    let empty = &store.list_streams("g").await.expect("streams")[0];
    assert_eq!(empty.name, "s");
    assert!(empty.creation_time > 0);
    assert_eq!(
        (
            empty.first_event_timestamp,
            empty.last_event_timestamp,
            empty.last_ingestion_time
        ),
        (None, None, None)
    );
    store
        .put_events("g", "s", vec![put(500, "a"), put(700, "b")])
        .await
        .expect("put");
    let s = &store.list_streams("g").await.expect("streams")[0];
    assert_eq!(s.first_event_timestamp, Some(500));
    assert_eq!(s.last_event_timestamp, Some(700));
    assert!(s.last_ingestion_time.is_some_and(|t| t > 0));
    assert_eq!(s.stored_events, 2);
    assert_accounting_matches(&store).await;
}

#[tokio::test]
async fn put_events_creates_nothing() {
    let store = memory_store(LogLimits::default());
    assert!(matches!(
        store.put_events("g", "s", vec![put(1, "x")]).await,
        Err(LogError::GroupNotFound(_))
    ));
    assert!(matches!(
        store.put_events("g", "s", Vec::new()).await,
        Err(LogError::GroupNotFound(_))
    ));
    assert_eq!(store.group("g").await.expect("group"), None);
    store
        .create_group(NewGroup {
            name: "g".into(),
            ..NewGroup::default()
        })
        .await
        .expect("group");
    assert!(matches!(
        store.put_events("g", "s", vec![put(1, "x")]).await,
        Err(LogError::StreamNotFound { .. })
    ));
    assert!(store.list_streams("g").await.expect("streams").is_empty());
    assert_eq!(assert_accounting_matches(&store).await.stored_events, 0);
}

#[tokio::test]
async fn ensure_stream_creates_the_group_only_when_asked() {
    let store = memory_store(LogLimits::default());
    assert!(matches!(
        store.ensure_stream("g", "s", false).await,
        Err(LogError::GroupNotFound(_))
    ));
    assert_eq!(store.group("g").await.expect("group"), None);
    store.ensure_stream("g", "s", true).await.expect("create");
    store
        .ensure_stream("g", "s", false)
        .await
        .expect("exists now: nothing to do");
    store.ensure_stream("g", "t", false).await.expect("stream");
    let names: Vec<String> = store
        .list_streams("g")
        .await
        .expect("streams")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["s", "t"]);
}

#[tokio::test]
async fn deleting_a_group_deletes_its_streams_events_and_tags() {
    let store = memory_store(LogLimits::default());
    store
        .create_group(NewGroup {
            name: "g".into(),
            tags: tags(&[("k", "v")]),
            class: None,
        })
        .await
        .expect("group");
    store
        .append(vec![
            event("g", "a", 1, "one"),
            event("g", "b", 2, "two"),
            event("other", "c", 3, "kept"),
        ])
        .await
        .expect("append");
    let deleted = store.delete_group("g").await.expect("delete");
    assert_eq!(
        deleted,
        Volume {
            events: 2,
            bytes: event_bytes("one") + event_bytes("two")
        }
    );
    assert_eq!(store.group("g").await.expect("group"), None);
    assert!(matches!(
        store.delete_group("g").await,
        Err(LogError::GroupNotFound(_))
    ));
    assert!(matches!(
        store.group_tags("g").await,
        Err(LogError::GroupNotFound(_))
    ));
    let stats = assert_accounting_matches(&store).await;
    assert_eq!(stats.stored_events, 1);
    assert_eq!(stats.evicted_by_cap, Volume::default(), "not an eviction");
    // Created again, the group is empty and untagged.
    store
        .create_group(NewGroup {
            name: "g".into(),
            ..NewGroup::default()
        })
        .await
        .expect("again");
    assert!(store.group_tags("g").await.expect("tags").is_empty());
    assert!(store.list_streams("g").await.expect("streams").is_empty());
}

#[tokio::test]
async fn deleting_a_stream_deletes_its_events_only() {
    let store = memory_store(LogLimits::default());
    store
        .append(vec![event("g", "a", 1, "one"), event("g", "b", 2, "two")])
        .await
        .expect("append");
    assert!(matches!(
        store.delete_stream("g", "nope").await,
        Err(LogError::StreamNotFound { .. })
    ));
    assert!(matches!(
        store.delete_stream("nope", "a").await,
        Err(LogError::GroupNotFound(_))
    ));
    let deleted = store.delete_stream("g", "a").await.expect("delete");
    assert_eq!(deleted.events, 1);
    let left = store
        .read_group("g", &GroupQuery::default(), 0, 10)
        .await
        .expect("read");
    assert_eq!(messages(&left), vec!["two"]);
    assert_eq!(assert_accounting_matches(&store).await.stored_events, 1);
}

#[tokio::test]
async fn tags_merge_replace_and_stop_at_fifty() {
    let store = memory_store(LogLimits::default());
    assert!(matches!(
        store.tag_group("g", tags(&[("a", "1")])).await,
        Err(LogError::GroupNotFound(_))
    ));
    store
        .create_group(NewGroup {
            name: "g".into(),
            tags: tags(&[("a", "1"), ("b", "2")]),
            class: None,
        })
        .await
        .expect("group");
    store
        .tag_group("g", tags(&[("b", "20"), ("c", "3")]))
        .await
        .expect("tag");
    store
        .untag_group("g", vec!["a".into(), "missing".into()])
        .await
        .expect("untag");
    assert_eq!(
        store.group_tags("g").await.expect("tags"),
        tags(&[("b", "20"), ("c", "3")])
    );
    let many: std::collections::BTreeMap<String, String> = (0..49)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert!(matches!(
        store.tag_group("g", many).await,
        Err(LogError::TooManyTags { count: 51, .. })
    ));
    assert_eq!(
        store.group_tags("g").await.expect("tags").len(),
        2,
        "unchanged"
    );
}

#[tokio::test]
async fn a_version_2_file_without_tags_or_classes_opens_and_gains_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs.db");
    {
        // The schema as version 2 first shipped it.
        let conn = rusqlite::Connection::open(&path).expect("v2 file");
        conn.execute_batch(
            "CREATE TABLE log_groups (name TEXT PRIMARY KEY, creation_time INTEGER NOT NULL,
                retention_days INTEGER);
             CREATE TABLE log_streams (id INTEGER PRIMARY KEY, group_name TEXT NOT NULL,
                name TEXT NOT NULL, creation_time INTEGER NOT NULL,
                first_event_timestamp INTEGER NOT NULL, last_event_timestamp INTEGER NOT NULL,
                last_ingestion_time INTEGER NOT NULL, stored_events INTEGER NOT NULL,
                stored_bytes INTEGER NOT NULL, UNIQUE (group_name, name));
             CREATE TABLE events (sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                stream_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                ingestion_time INTEGER NOT NULL, bytes INTEGER NOT NULL, message TEXT NOT NULL);
             CREATE INDEX events_by_stream ON events(stream_id, sequence);
             CREATE TABLE evictions (cause TEXT PRIMARY KEY, events INTEGER NOT NULL,
                bytes INTEGER NOT NULL);
             INSERT INTO log_groups VALUES ('/ecs/web', 100, 7);
             INSERT INTO log_streams VALUES (1, '/ecs/web', 's', 100, 10, 10, 100, 1, 31);
             INSERT INTO events VALUES (1, 1, 10, 100, 31, 'hello');
             PRAGMA user_version = 2;",
        )
        .expect("v2 schema");
    }
    let store = SqliteLogBackend::open(&path, LogLimits::default()).expect("open");
    let g = store.group("/ecs/web").await.expect("group").expect("kept");
    assert_eq!(
        (g.class.as_str(), g.retention_days, g.stored_bytes),
        ("STANDARD", Some(7), 31)
    );
    store
        .tag_group("/ecs/web", tags(&[("k", "v")]))
        .await
        .expect("tags work on an old file");
    let events = store
        .read_stream("/ecs/web", "s", StreamCursor::Forward { after: 0 }, 10)
        .await
        .expect("read");
    assert_eq!(messages(&events), vec!["hello"]);
    drop(store);
    let store = SqliteLogBackend::open(&path, LogLimits::default()).expect("reopen");
    assert_eq!(
        store.group_tags("/ecs/web").await.expect("tags"),
        tags(&[("k", "v")])
    );
    assert_accounting_matches(&store).await;
}
