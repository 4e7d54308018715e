//! The embedded backend: one SQLite file of its own (WAL), so log volume never slows the state
//! store. Groups, streams and events are three tables; each stream row carries its running
//! event and byte counts, which is what the cap, `storedBytes` and the stats read instead of
//! scanning events. Creating, deleting and tagging groups and streams is in `lifecycle`.

mod journal;
mod lifecycle;

use crate::{
    event_bytes, format, is_valid_retention, AppendReceipt, Change, Eviction, GroupInfo,
    GroupQuery, JournalPage, LogBackend, LogError, LogLimits, LogResult, LogStats, NewEvent,
    NewGroup, PutEvent, StoredEvent, StreamCursor, StreamInfo, TimeRange, Volume,
    DEFAULT_LOG_GROUP_CLASS, EVENT_OVERHEAD_BYTES,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// Version 1 was a single `log_events` table that repeated group and stream names in every
/// row and was never pruned; opening such a file migrates it (see `migrate_v1`).
///
/// Additions that older binaries of version 2 can ignore (the `log_group_tags` table, the
/// `log_groups.class` column, streams created empty with 0 in their event columns) keep the
/// version: they are made at every open when missing (`CREATE TABLE IF NOT EXISTS`,
/// `add_missing_columns`), so an existing file opens as it is and a downgrade still reads it.
const SCHEMA_VERSION: i64 = 2;

// `events.sequence` is AUTOINCREMENT so that a sequence is never handed out twice, even after
// the newest events were deleted: a cursor a reader holds must not come to mean other events.
// Streams are rows of their own so an event row holds a stream id rather than two names, which
// keeps the file close to what the cap counts; `events.bytes` lets eviction add up sizes
// without reading messages.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_groups (
    name TEXT PRIMARY KEY,
    creation_time INTEGER NOT NULL,
    retention_days INTEGER);
CREATE TABLE IF NOT EXISTS log_streams (
    id INTEGER PRIMARY KEY,
    group_name TEXT NOT NULL,
    name TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    first_event_timestamp INTEGER NOT NULL,
    last_event_timestamp INTEGER NOT NULL,
    last_ingestion_time INTEGER NOT NULL,
    stored_events INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    UNIQUE (group_name, name));
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    ingestion_time INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_stream ON events(stream_id, sequence);
CREATE TABLE IF NOT EXISTS evictions (
    cause TEXT PRIMARY KEY,
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_group_tags (
    group_name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (group_name, key));
CREATE TABLE IF NOT EXISTS journal_origins (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS journal_changes (
    origin_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    change TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (origin_id, seq));
CREATE TABLE IF NOT EXISTS journal_batches (
    batch TEXT PRIMARY KEY,
    origin_id INTEGER,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS journal_batches_by_origin ON journal_batches(origin_id, last_seq);
CREATE TABLE IF NOT EXISTS journal_self (
    replica TEXT PRIMARY KEY,
    origin TEXT NOT NULL);
";

/// Indexes on [`ADDED_COLUMNS`], made after them.
const ADDED_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS events_by_journal ON events(origin_id, origin_seq)
    WHERE origin_id IS NOT NULL;
";

/// Columns added to tables of [`SCHEMA`] after files were written without them: (table,
/// column, declaration). Each must be nullable or have a default, as `ALTER TABLE ... ADD
/// COLUMN` requires.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // NULL (groups from before the column): the default class.
    ("log_groups", "class", "TEXT"),
    // The journal (see `journal`): NULL for events stored before, or without, one.
    ("events", "origin_id", "INTEGER"),
    ("events", "origin_seq", "INTEGER"),
];

const CAUSE_CAP: &str = "cap";
const CAUSE_RETENTION: &str = "retention";
const MS_PER_DAY: i64 = 86_400_000;

/// Log events in SQLite, under a size cap and per-group retention (see the crate docs).
#[derive(Clone)]
pub struct SqliteLogBackend {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    conn: Connection,
    limits: LogLimits,
    usage: Usage,
    /// The journal origin of this backend's own changes (`journal_origins.id` and name),
    /// once [`LogBackend::journal_as`] named it.
    origin: Option<(i64, String)>,
}

/// Running totals, loaded once at open and then kept in step with every committed change.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    stored: Volume,
    evicted_by_cap: Volume,
    evicted_by_retention: Volume,
}

impl SqliteLogBackend {
    pub fn open(path: &Path, limits: LogLimits) -> LogResult<Self> {
        limits.validate()?;
        Self::init(Connection::open(path)?, limits)
    }

    pub fn open_in_memory(limits: LogLimits) -> LogResult<Self> {
        limits.validate()?;
        Self::init(Connection::open_in_memory()?, limits)
    }

    fn init(mut conn: Connection, limits: LogLimits) -> LogResult<Self> {
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(LogError::Storage(format!(
                "the log store was written by a newer Gantry (schema {version}; this one knows up \
                 to {SCHEMA_VERSION})"
            )));
        }
        let legacy = version < SCHEMA_VERSION && table_exists(&conn, "log_events")?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        add_missing_columns(&tx)?;
        tx.execute_batch(ADDED_INDEXES)?;
        let migration_eviction = if legacy {
            Some(migrate_v1(&tx, &limits)?)
        } else {
            None
        };
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        if let Some(eviction) = &migration_eviction {
            // The legacy table is gone but its pages stay in the file until it is rebuilt;
            // once, at the upgrade, that is worth the seconds it takes.
            conn.execute_batch("VACUUM")?;
            if !eviction.is_empty() {
                warn_cap(&limits, eviction);
            }
        }
        let usage = load_usage(&conn)?;
        let mut inner = Inner {
            conn,
            limits,
            usage,
            origin: None,
        };
        // A cap lowered since the last run holds from the start, not from the next append.
        inner.enforce_cap()?;
        Ok(SqliteLogBackend {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> LogResult<T> + Send + 'static,
    ) -> LogResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot have left a half-applied change: each
            // change is one SQLite transaction (rolled back when dropped) and the totals are
            // updated only after it committed. So a poisoned lock is safe to keep using.
            let mut guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| LogError::Storage(e.to_string()))?
    }
}

#[async_trait]
impl LogBackend for SqliteLogBackend {
    async fn read_stream_in(
        &self,
        group: &str,
        stream: &str,
        cursor: StreamCursor,
        range: TimeRange,
        limit: usize,
    ) -> LogResult<Vec<StoredEvent>> {
        let (group, stream) = (group.to_string(), stream.to_string());
        self.run(move |inner| read_stream(&inner.conn, &group, &stream, cursor, range, limit))
            .await
    }

    async fn read_group(
        &self,
        group: &str,
        query: &GroupQuery,
        after: i64,
        limit: usize,
    ) -> LogResult<Vec<StoredEvent>> {
        let (group, query) = (group.to_string(), query.clone());
        self.run(move |inner| read_group(&inner.conn, &group, &query, after, limit))
            .await
    }

    async fn list_streams(&self, group: &str) -> LogResult<Vec<StreamInfo>> {
        let group = group.to_string();
        self.run(move |inner| list_streams(&inner.conn, &group))
            .await
    }

    async fn list_groups(&self) -> LogResult<Vec<GroupInfo>> {
        self.run(|inner| groups(&inner.conn, None)).await
    }

    async fn group(&self, name: &str) -> LogResult<Option<GroupInfo>> {
        let name = name.to_string();
        self.run(move |inner| Ok(groups(&inner.conn, Some(&name))?.into_iter().next()))
            .await
    }

    async fn set_retention(&self, group: &str, days: Option<u32>) -> LogResult<()> {
        if let Some(d) = days.filter(|d| !is_valid_retention(*d)) {
            return Err(LogError::InvalidRetention(d));
        }
        let group = group.to_string();
        self.run(move |inner| {
            inner.set_retention(&group, days)?;
            inner.journal_own(Change::SetRetention { group, days })
        })
        .await
    }

    async fn enforce_retention(&self, now_ms: i64) -> LogResult<Eviction> {
        self.run(move |inner| inner.enforce_retention(now_ms)).await
    }

    async fn stats(&self) -> LogResult<LogStats> {
        self.run(|inner| {
            Ok(LogStats {
                max_bytes: inner.limits.max_bytes,
                stored_bytes: inner.usage.stored.bytes,
                stored_events: inner.usage.stored.events,
                evicted_by_cap: inner.usage.evicted_by_cap,
                evicted_by_retention: inner.usage.evicted_by_retention,
            })
        })
        .await
    }

    async fn create_group(&self, group: NewGroup) -> LogResult<()> {
        self.run(move |inner| {
            lifecycle::create_group(&mut inner.conn, &group, now_ms())?;
            inner.journal_own(Change::CreateGroup {
                name: group.name,
                tags: group.tags,
                class: group.class,
            })
        })
        .await
    }

    async fn delete_group(&self, name: &str) -> LogResult<Volume> {
        let name = name.to_string();
        self.run(move |inner| {
            let deleted = inner.delete_group(&name)?;
            inner.journal_own(Change::DeleteGroup { name })?;
            Ok(deleted)
        })
        .await
    }

    async fn create_stream(&self, group: &str, stream: &str) -> LogResult<()> {
        let (group, stream) = (group.to_string(), stream.to_string());
        self.run(move |inner| {
            lifecycle::create_stream(&mut inner.conn, &group, &stream, now_ms())?;
            inner.journal_own(Change::CreateStream { group, stream })
        })
        .await
    }

    async fn delete_stream(&self, group: &str, stream: &str) -> LogResult<Volume> {
        let (group, stream) = (group.to_string(), stream.to_string());
        self.run(move |inner| {
            let deleted = inner.delete_stream(&group, &stream)?;
            inner.journal_own(Change::DeleteStream { group, stream })?;
            Ok(deleted)
        })
        .await
    }

    async fn ensure_stream(&self, group: &str, stream: &str, create_group: bool) -> LogResult<()> {
        let (group, stream) = (group.to_string(), stream.to_string());
        self.run(move |inner| {
            lifecycle::ensure_stream(&mut inner.conn, &group, &stream, create_group, now_ms())?;
            inner.journal_own(Change::EnsureStream {
                group,
                stream,
                create_group,
            })
        })
        .await
    }

    async fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: Vec<PutEvent>,
    ) -> LogResult<AppendReceipt> {
        let (group, stream) = (group.to_string(), stream.to_string());
        self.run(move |inner| {
            let events: Vec<NewEvent> = events
                .into_iter()
                .map(|e| NewEvent {
                    group: group.clone(),
                    stream: stream.clone(),
                    timestamp: e.timestamp,
                    message: e.message,
                })
                .collect();
            inner.append(
                &events,
                now_ms(),
                Some((&group, &stream)),
                Marking::Own { batch: None },
            )
        })
        .await
    }

    async fn tag_group(&self, name: &str, tags: BTreeMap<String, String>) -> LogResult<()> {
        let name = name.to_string();
        self.run(move |inner| {
            lifecycle::tag_group(&mut inner.conn, &name, &tags)?;
            inner.journal_own(Change::TagGroup { group: name, tags })
        })
        .await
    }

    async fn untag_group(&self, name: &str, keys: Vec<String>) -> LogResult<()> {
        let name = name.to_string();
        self.run(move |inner| {
            lifecycle::untag_group(&mut inner.conn, &name, &keys)?;
            inner.journal_own(Change::UntagGroup { group: name, keys })
        })
        .await
    }

    async fn group_tags(&self, name: &str) -> LogResult<BTreeMap<String, String>> {
        let name = name.to_string();
        self.run(move |inner| lifecycle::group_tags(&inner.conn, &name))
            .await
    }

    async fn append_batch(
        &self,
        events: Vec<NewEvent>,
        batch: Option<String>,
    ) -> LogResult<AppendReceipt> {
        self.run(move |inner| {
            inner.append(
                &events,
                now_ms(),
                None,
                Marking::Own {
                    batch: batch.as_deref(),
                },
            )
        })
        .await
    }

    async fn journal_as(&self, replica: &str) -> LogResult<String> {
        let replica = replica.to_string();
        self.run(move |inner| inner.journal_as(&replica)).await
    }

    async fn journal(&self, origin: &str, after: i64, limit: usize) -> LogResult<JournalPage> {
        let origin = origin.to_string();
        self.run(move |inner| inner.journal(&origin, after, limit))
            .await
    }

    async fn apply_journal(&self, origin: &str, page: JournalPage) -> LogResult<usize> {
        let origin = origin.to_string();
        self.run(move |inner| inner.apply_journal(&origin, page))
            .await
    }

    async fn journal_positions(&self) -> LogResult<BTreeMap<String, i64>> {
        self.run(|inner| inner.journal_positions()).await
    }
}

impl Inner {
    fn set_retention(&mut self, group: &str, days: Option<u32>) -> LogResult<()> {
        if let Some(d) = days.filter(|d| !is_valid_retention(*d)) {
            return Err(LogError::InvalidRetention(d));
        }
        let changed = self.conn.execute(
            "UPDATE log_groups SET retention_days = ?2 WHERE name = ?1",
            params![group, days],
        )?;
        if changed == 0 {
            return Err(LogError::GroupNotFound(group.to_string()));
        }
        Ok(())
    }

    /// Store `events`; with `must_exist` (group, stream), only into that existing stream.
    fn append(
        &mut self,
        events: &[NewEvent],
        now: i64,
        must_exist: Option<(&str, &str)>,
        marking: Marking,
    ) -> LogResult<AppendReceipt> {
        let mut receipt = AppendReceipt {
            ingestion_time: now,
            ..AppendReceipt::default()
        };
        if let Marking::Own { batch: Some(batch) } = marking {
            if let Some(position) = journal::stored_batch(&self.conn, batch, None)? {
                receipt.duplicate = true;
                receipt.journal_position = position;
                return Ok(receipt);
            }
        }
        if events.is_empty() {
            if let Some((group, stream)) = must_exist {
                lifecycle::require_stream(&self.conn, group, stream)?;
            }
            return Ok(receipt);
        }
        // A batch larger than the whole cap keeps its newest events, as it would have had its
        // events arrived one by one.
        let mut kept = events;
        let mut incoming: u64 = events.iter().map(|e| event_bytes(&e.message)).sum();
        let mut too_big = Volume::default();
        let mut too_big_groups = BTreeSet::new();
        while incoming > self.limits.max_bytes {
            let Some((oldest, rest)) = kept.split_first() else {
                break;
            };
            let bytes = event_bytes(&oldest.message);
            incoming -= bytes;
            too_big.add(Volume { events: 1, bytes });
            too_big_groups.insert(oldest.group.clone());
            kept = rest;
        }
        let skipped = events.len() - kept.len();

        let tx = self.conn.transaction()?;
        if let Some((group, stream)) = must_exist {
            lifecycle::require_stream(&tx, group, stream)?;
        }
        // Each kept event's place in the journal (origin, sequence), and the origin's newest
        // sequence after it.
        let (marks, journal_end): (Vec<JournalPlace>, JournalPlace) = match marking {
            Marking::Own { batch } => {
                let (marks, end) = match &self.origin {
                    Some((origin, _)) => {
                        let last = journal::last_seq(&tx, *origin)?;
                        let marks = (1..=kept.len() as i64)
                            .map(|i| Some((*origin, last + i)))
                            .collect();
                        (marks, Some((*origin, last + kept.len() as i64)))
                    }
                    None => (vec![None; kept.len()], None),
                };
                if let Some(batch) = batch {
                    let first = marks.first().copied().flatten();
                    journal::record_batch(
                        &tx,
                        batch,
                        first.map(|(origin, _)| origin),
                        first.map_or(0, |(_, seq)| seq),
                        end.map_or(0, |(_, seq)| seq),
                        now,
                    )?;
                }
                (marks, end)
            }
            Marking::Copied { origin, marks } => {
                journal::record_copied_batches(&tx, origin, marks, now)?;
                let end = marks.last().map(|(seq, _)| (origin, *seq));
                let marks = marks[skipped..]
                    .iter()
                    .map(|(seq, _)| Some((origin, *seq)))
                    .collect();
                (marks, end)
            }
        };
        let from_store = make_room(&tx, &self.limits, self.usage.stored.bytes, incoming)?;
        let (stored, first, last) = insert_events(&tx, kept, &marks, now)?;
        if let Some((origin, seq)) = journal_end {
            journal::advance(&tx, origin, seq)?;
        }
        let mut evicted = from_store.clone();
        evicted.dropped.add(too_big);
        if !too_big_groups.is_empty() {
            let mut groups: BTreeSet<String> = evicted.groups.into_iter().collect();
            groups.extend(too_big_groups);
            evicted.groups = groups.into_iter().collect();
        }
        add_evictions(&tx, CAUSE_CAP, evicted.dropped)?;
        tx.commit()?;

        self.usage.stored.remove(from_store.dropped);
        self.usage.stored.add(stored);
        self.usage.evicted_by_cap.add(evicted.dropped);
        if !evicted.is_empty() {
            warn_cap(&self.limits, &evicted);
        }
        receipt.stored = stored;
        receipt.first_sequence = first;
        receipt.last_sequence = last;
        receipt.evicted = evicted;
        if let (Marking::Own { .. }, Some((_, seq)), Some((_, name))) =
            (marking, journal_end, &self.origin)
        {
            receipt.journal_position = Some((name.clone(), seq));
        }
        Ok(receipt)
    }

    /// Evict by the cap on its own, outside an append (at open).
    fn enforce_cap(&mut self) -> LogResult<()> {
        let tx = self.conn.transaction()?;
        let evicted = make_room(&tx, &self.limits, self.usage.stored.bytes, 0)?;
        add_evictions(&tx, CAUSE_CAP, evicted.dropped)?;
        tx.commit()?;
        self.usage.stored.remove(evicted.dropped);
        self.usage.evicted_by_cap.add(evicted.dropped);
        if !evicted.is_empty() {
            warn_cap(&self.limits, &evicted);
        }
        Ok(())
    }

    fn enforce_retention(&mut self, now: i64) -> LogResult<Eviction> {
        self.prune_journal(now)?;
        let tx = self.conn.transaction()?;
        let policies: Vec<(String, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT name, retention_days FROM log_groups
                 WHERE retention_days IS NOT NULL ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut per_stream: HashMap<i64, Volume> = HashMap::new();
        let mut expired_groups = Vec::new();
        for (group, days) in policies {
            let cutoff = now.saturating_sub(days.saturating_mul(MS_PER_DAY));
            // `first_event_timestamp` is each stream's exact oldest timestamp, so only streams
            // that really hold expired events are searched.
            let streams: Vec<i64> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM log_streams
                     WHERE group_name = ?1 AND first_event_timestamp < ?2",
                )?;
                let rows = stmt.query_map(params![group, cutoff], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut group_lost = false;
            for stream in streams {
                let (events, bytes): (i64, i64) = tx.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events
                     WHERE stream_id = ?1 AND timestamp < ?2",
                    params![stream, cutoff],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if events == 0 {
                    continue;
                }
                tx.execute(
                    "DELETE FROM events WHERE stream_id = ?1 AND timestamp < ?2",
                    params![stream, cutoff],
                )?;
                per_stream.insert(
                    stream,
                    Volume {
                        events: count(events),
                        bytes: count(bytes),
                    },
                );
                group_lost = true;
            }
            if group_lost {
                let unit = if days == 1 { "day" } else { "days" };
                expired_groups.push(format!("{group} ({days} {unit})"));
            }
        }
        let groups = shrink_streams(&tx, &per_stream)?;
        let mut dropped = Volume::default();
        for v in per_stream.values() {
            dropped.add(*v);
        }
        add_evictions(&tx, CAUSE_RETENTION, dropped)?;
        tx.commit()?;

        self.usage.stored.remove(dropped);
        self.usage.evicted_by_retention.add(dropped);
        if dropped.events > 0 {
            tracing::warn!("{}", retention_warning(dropped, &expired_groups));
        }
        Ok(Eviction { dropped, groups })
    }
}

/// If `stored + incoming` would pass the cap, delete the oldest events until it is at most the
/// low-water mark (or nothing is left to delete).
fn make_room(
    tx: &Transaction,
    limits: &LogLimits,
    stored: u64,
    incoming: u64,
) -> LogResult<Eviction> {
    let total = stored.saturating_add(incoming);
    if total <= limits.max_bytes {
        return Ok(Eviction::default());
    }
    evict_oldest(tx, total - limits.low_water_bytes().min(total))
}

/// Delete events in ingestion order until at least `need` bytes are freed.
fn evict_oldest(tx: &Transaction, need: u64) -> LogResult<Eviction> {
    let mut per_stream: HashMap<i64, Volume> = HashMap::new();
    let mut freed = Volume::default();
    let mut last_sequence = None;
    {
        let mut stmt =
            tx.prepare_cached("SELECT sequence, stream_id, bytes FROM events ORDER BY sequence")?;
        let mut rows = stmt.query([])?;
        while freed.bytes < need {
            let Some(row) = rows.next()? else {
                break;
            };
            let (sequence, stream, bytes): (i64, i64, i64) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            let one = Volume {
                events: 1,
                bytes: count(bytes),
            };
            freed.add(one);
            per_stream.entry(stream).or_default().add(one);
            last_sequence = Some(sequence);
        }
    }
    let Some(last_sequence) = last_sequence else {
        return Ok(Eviction::default());
    };
    tx.execute(
        "DELETE FROM events WHERE sequence <= ?1",
        params![last_sequence],
    )?;
    let groups = shrink_streams(tx, &per_stream)?;
    Ok(Eviction {
        dropped: freed,
        groups,
    })
}

/// How long an emptied stream must have received nothing before it is forgotten.
const QUIET_STREAM_MS: i64 = 3_600_000;

/// Take deleted events off their streams' counts; forget streams left empty (and quiet for an
/// hour) and recompute the
/// first and last timestamps of the others. Returns the groups concerned, sorted.
fn shrink_streams(tx: &Transaction, per_stream: &HashMap<i64, Volume>) -> LogResult<Vec<String>> {
    let mut groups = BTreeSet::new();
    for (stream, lost) in per_stream {
        tx.execute(
            "UPDATE log_streams SET stored_events = stored_events - ?2,
                stored_bytes = stored_bytes - ?3 WHERE id = ?1",
            params![stream, sql_int(lost.events), sql_int(lost.bytes)],
        )?;
        let (group, left): (String, i64) = tx.query_row(
            "SELECT group_name, stored_events FROM log_streams WHERE id = ?1",
            params![stream],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if left <= 0 {
            // An emptied stream that still receives output (a live task's) stays, so a reader
            // following it gets no events rather than "not found"; one quiet for an hour is
            // forgotten (one stream per container and task: keeping them all would be
            // unbounded growth again).
            tx.execute(
                "DELETE FROM log_streams WHERE id = ?1 AND last_ingestion_time < ?2",
                params![stream, now_ms().saturating_sub(QUIET_STREAM_MS)],
            )?;
        } else {
            tx.execute(
                "UPDATE log_streams SET
                    first_event_timestamp = (SELECT MIN(timestamp) FROM events WHERE stream_id = ?1),
                    last_event_timestamp = (SELECT MAX(timestamp) FROM events WHERE stream_id = ?1)
                 WHERE id = ?1",
                params![stream],
            )?;
        }
        groups.insert(group);
    }
    Ok(groups.into_iter().collect())
}

/// Running sums of changes to one stream within a batch, written once per stream.
struct StreamDelta {
    id: i64,
    added: Volume,
    first_timestamp: i64,
    last_timestamp: i64,
}

/// How an append marks its events for the journal.
#[derive(Clone, Copy)]
enum Marking<'a> {
    /// This backend's own events, numbered in its origin's journal when it journals, with the
    /// writer's batch id (a batch already stored is not stored again).
    Own { batch: Option<&'a str> },
    /// Events copied from `origin`'s journal: each one's sequence and batch id, in order.
    Copied {
        origin: i64,
        marks: &'a [(i64, Option<String>)],
    },
}

/// Where an event stands in the journal: (origin id, sequence); `None` when not journaled.
type JournalPlace = Option<(i64, i64)>;

/// Insert `events` (each with the journal origin and sequence of the same index) into their
/// streams.
fn insert_events(
    tx: &Transaction,
    events: &[NewEvent],
    marks: &[JournalPlace],
    now: i64,
) -> LogResult<(Volume, Option<i64>, Option<i64>)> {
    let mut deltas: HashMap<(&str, &str), StreamDelta> = HashMap::new();
    let mut stored = Volume::default();
    let (mut first, mut last) = (None, None);
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (stream_id, timestamp, ingestion_time, bytes, message, origin_id,
            origin_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (e, mark) in events.iter().zip(marks) {
        let key = (e.group.as_str(), e.stream.as_str());
        let delta = match deltas.get_mut(&key) {
            Some(d) => d,
            None => {
                let id = stream_for_append(tx, &e.group, &e.stream, e.timestamp, now)?;
                deltas.entry(key).or_insert(StreamDelta {
                    id,
                    added: Volume::default(),
                    first_timestamp: e.timestamp,
                    last_timestamp: e.timestamp,
                })
            }
        };
        let bytes = event_bytes(&e.message);
        insert.execute(params![
            delta.id,
            e.timestamp,
            now,
            sql_int(bytes),
            e.message,
            mark.map(|(origin, _)| origin),
            mark.map(|(_, seq)| seq)
        ])?;
        let sequence = tx.last_insert_rowid();
        first = first.or(Some(sequence));
        last = Some(sequence);
        let one = Volume { events: 1, bytes };
        delta.added.add(one);
        delta.first_timestamp = delta.first_timestamp.min(e.timestamp);
        delta.last_timestamp = delta.last_timestamp.max(e.timestamp);
        stored.add(one);
    }
    // A stream without events (created empty, or emptied) takes the batch's timestamps
    // rather than comparing with the placeholders it holds.
    let mut update = tx.prepare_cached(
        "UPDATE log_streams SET
            stored_events = stored_events + ?2,
            stored_bytes = stored_bytes + ?3,
            first_event_timestamp = CASE WHEN stored_events = 0 THEN ?4
                ELSE MIN(first_event_timestamp, ?4) END,
            last_event_timestamp = CASE WHEN stored_events = 0 THEN ?5
                ELSE MAX(last_event_timestamp, ?5) END,
            last_ingestion_time = ?6
         WHERE id = ?1",
    )?;
    for d in deltas.values() {
        update.execute(params![
            d.id,
            sql_int(d.added.events),
            sql_int(d.added.bytes),
            d.first_timestamp,
            d.last_timestamp,
            now
        ])?;
    }
    Ok((stored, first, last))
}

/// The stream's id, creating the stream (and its group, on the group's first event) if needed.
fn stream_for_append(
    tx: &Transaction,
    group: &str,
    stream: &str,
    timestamp: i64,
    now: i64,
) -> LogResult<i64> {
    let existing = tx
        .prepare_cached("SELECT id FROM log_streams WHERE group_name = ?1 AND name = ?2")?
        .query_row(params![group, stream], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    tx.prepare_cached("INSERT OR IGNORE INTO log_groups (name, creation_time) VALUES (?1, ?2)")?
        .execute(params![group, now])?;
    tx.prepare_cached(
        "INSERT INTO log_streams (group_name, name, creation_time, first_event_timestamp,
            last_event_timestamp, last_ingestion_time, stored_events, stored_bytes)
         VALUES (?1, ?2, ?3, ?4, ?4, ?3, 0, 0)",
    )?
    .execute(params![group, stream, now, timestamp])?;
    Ok(tx.last_insert_rowid())
}

fn add_evictions(tx: &Transaction, cause: &str, dropped: Volume) -> LogResult<()> {
    if dropped.events == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO evictions (cause, events, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (cause) DO UPDATE SET
            events = events + excluded.events, bytes = bytes + excluded.bytes",
        params![cause, sql_int(dropped.events), sql_int(dropped.bytes)],
    )?;
    Ok(())
}

fn warn_cap(limits: &LogLimits, evicted: &Eviction) {
    tracing::warn!("{}", cap_warning(limits.max_bytes, evicted));
}

fn cap_warning(max_bytes: u64, evicted: &Eviction) -> String {
    format!(
        "log store over its {} cap: dropped the oldest {} events ({}) from {}",
        format::bytes(max_bytes),
        format::count(evicted.dropped.events),
        format::bytes(evicted.dropped.bytes),
        format::names(&evicted.groups),
    )
}

/// `groups` name each group with its retention, e.g. `/ecs/web (7 days)`.
fn retention_warning(dropped: Volume, groups: &[String]) -> String {
    format!(
        "log retention: dropped {} events ({}) older than their group's retention from {}",
        format::count(dropped.events),
        format::bytes(dropped.bytes),
        format::names(groups),
    )
}

fn load_usage(conn: &Connection) -> LogResult<Usage> {
    let (events, bytes): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(stored_events), 0), COALESCE(SUM(stored_bytes), 0) FROM log_streams",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut usage = Usage {
        stored: Volume {
            events: count(events),
            bytes: count(bytes),
        },
        ..Usage::default()
    };
    let mut stmt = conn.prepare("SELECT cause, events, bytes FROM evictions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (cause, events, bytes) = row?;
        let volume = Volume {
            events: count(events),
            bytes: count(bytes),
        };
        match cause.as_str() {
            CAUSE_CAP => usage.evicted_by_cap = volume,
            CAUSE_RETENTION => usage.evicted_by_retention = volume,
            _ => {}
        }
    }
    Ok(usage)
}

/// Add the columns of [`ADDED_COLUMNS`] that a file written before them lacks.
fn add_missing_columns(tx: &Transaction) -> LogResult<()> {
    for (table, column, declaration) in ADDED_COLUMNS {
        let present = tx
            .prepare(&format!("PRAGMA table_info({table})"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .any(|c| c == column);
        if !present {
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
            ))?;
        }
    }
    Ok(())
}

fn table_exists(conn: &Connection, name: &str) -> LogResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            params![name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Move a version-1 store (one `log_events` table) into the current schema, keeping the
/// newest events that fit under the low-water mark: that table grew without bound, and
/// copying all of it first would need as much disk again. Event ids become sequences, so the
/// tokens readers hold stay valid.
fn migrate_v1(tx: &Transaction, limits: &LogLimits) -> LogResult<Eviction> {
    let overhead = sql_int(EVENT_OVERHEAD_BYTES);
    let first_kept: Option<i64> = tx.query_row(
        "SELECT MIN(id) FROM (
            SELECT id, SUM(length(CAST(message AS BLOB)) + ?1) OVER (ORDER BY id DESC) AS newer
            FROM log_events)
         WHERE newer <= ?2",
        params![overhead, sql_int(limits.low_water_bytes())],
        |r| r.get(0),
    )?;
    let first_kept = first_kept.unwrap_or(i64::MAX);
    let (dropped_events, dropped_bytes): (i64, i64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(CAST(message AS BLOB)) + ?1), 0)
         FROM log_events WHERE id < ?2",
        params![overhead, first_kept],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let dropped_groups: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT DISTINCT log_group FROM log_events WHERE id < ?1 ORDER BY log_group",
        )?;
        let rows = stmt.query_map(params![first_kept], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let legacy_sequence: i64 = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'log_events'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    tx.execute(
        "INSERT OR IGNORE INTO log_groups (name, creation_time)
         SELECT log_group, MIN(ingestion_time) FROM log_events GROUP BY log_group",
        [],
    )?;
    tx.execute(
        "INSERT INTO log_streams (group_name, name, creation_time, first_event_timestamp,
            last_event_timestamp, last_ingestion_time, stored_events, stored_bytes)
         SELECT log_group, log_stream, MIN(ingestion_time), MIN(timestamp), MAX(timestamp),
            MAX(ingestion_time), COUNT(*), SUM(length(CAST(message AS BLOB)) + ?1)
         FROM log_events WHERE id >= ?2 GROUP BY log_group, log_stream",
        params![overhead, first_kept],
    )?;
    tx.execute(
        "INSERT INTO events (sequence, stream_id, timestamp, ingestion_time, bytes, message)
         SELECT e.id, s.id, e.timestamp, e.ingestion_time,
            length(CAST(e.message AS BLOB)) + ?1, e.message
         FROM log_events e JOIN log_streams s
            ON s.group_name = e.log_group AND s.name = e.log_stream
         WHERE e.id >= ?2 ORDER BY e.id",
        params![overhead, first_kept],
    )?;
    // Even if no legacy event was kept, new sequences must continue after the legacy ids.
    let kept_sequence: i64 =
        tx.query_row("SELECT COALESCE(MAX(sequence), 0) FROM events", [], |r| {
            r.get(0)
        })?;
    tx.execute("DELETE FROM sqlite_sequence WHERE name = 'events'", [])?;
    tx.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?1)",
        params![legacy_sequence.max(kept_sequence)],
    )?;
    tx.execute_batch("DROP TABLE log_events;")?;
    let dropped = Volume {
        events: count(dropped_events),
        bytes: count(dropped_bytes),
    };
    add_evictions(tx, CAUSE_CAP, dropped)?;
    Ok(Eviction {
        dropped,
        groups: dropped_groups,
    })
}

fn read_stream(
    conn: &Connection,
    group: &str,
    stream: &str,
    cursor: StreamCursor,
    range: TimeRange,
    limit: usize,
) -> LogResult<Vec<StoredEvent>> {
    let (start, end) = (
        range.start.unwrap_or(i64::MIN),
        range.end.unwrap_or(i64::MAX),
    );
    let stream_id: i64 = match conn
        .prepare_cached("SELECT id FROM log_streams WHERE group_name = ?1 AND name = ?2")?
        .query_row(params![group, stream], |r| r.get(0))
        .optional()?
    {
        Some(id) => id,
        None if group_exists(conn, group)? => {
            return Err(LogError::StreamNotFound {
                group: group.to_string(),
                stream: stream.to_string(),
            })
        }
        None => return Err(LogError::GroupNotFound(group.to_string())),
    };
    let limit = sql_int(limit as u64);
    let row = |r: &rusqlite::Row| {
        Ok(StoredEvent {
            sequence: r.get(0)?,
            stream: stream.to_string(),
            timestamp: r.get(1)?,
            ingestion_time: r.get(2)?,
            message: r.get(3)?,
        })
    };
    match cursor {
        StreamCursor::Forward { after } => {
            let mut stmt = conn.prepare_cached(
                "SELECT sequence, timestamp, ingestion_time, message FROM events
                 WHERE stream_id = ?1 AND sequence > ?2 AND timestamp >= ?4 AND timestamp < ?5
                 ORDER BY sequence LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![stream_id, after, limit, start, end], row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        }
        StreamCursor::Backward { before } => {
            let mut stmt = conn.prepare_cached(
                "SELECT sequence, timestamp, ingestion_time, message FROM events
                 WHERE stream_id = ?1 AND sequence < ?2 AND timestamp >= ?4 AND timestamp < ?5
                 ORDER BY sequence DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![stream_id, before.unwrap_or(i64::MAX), limit, start, end],
                row,
            )?;
            let mut events: Vec<StoredEvent> = rows.collect::<Result<_, _>>()?;
            events.reverse();
            Ok(events)
        }
    }
}

fn read_group(
    conn: &Connection,
    group: &str,
    query: &GroupQuery,
    after: i64,
    limit: usize,
) -> LogResult<Vec<StoredEvent>> {
    if !group_exists(conn, group)? {
        return Err(LogError::GroupNotFound(group.to_string()));
    }
    let streams: Vec<(i64, String)> = {
        let mut stmt =
            conn.prepare_cached("SELECT id, name FROM log_streams WHERE group_name = ?1")?;
        let rows = stmt.query_map(params![group], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let names: HashMap<i64, String> = streams
        .into_iter()
        .filter(|(_, name)| {
            query.stream_names.as_ref().is_none_or(|n| n.contains(name))
                && query
                    .stream_prefix
                    .as_ref()
                    .is_none_or(|p| name.starts_with(p.as_str()))
        })
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // The stream ids go in as one JSON array (integers only, so formatting it is safe): a
    // group can have more streams than SQLite takes parameters.
    let ids = format!(
        "[{}]",
        names
            .keys()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut stmt = conn.prepare_cached(
        "SELECT sequence, stream_id, timestamp, ingestion_time, message FROM events
         WHERE stream_id IN (SELECT value FROM json_each(?1)) AND sequence > ?2
            AND timestamp >= ?3 AND timestamp <= ?4
         ORDER BY sequence LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            ids,
            after,
            query.start_time.unwrap_or(i64::MIN),
            query.end_time.unwrap_or(i64::MAX),
            sql_int(limit as u64)
        ],
        |r| {
            let stream_id: i64 = r.get(1)?;
            Ok(StoredEvent {
                sequence: r.get(0)?,
                stream: names.get(&stream_id).cloned().unwrap_or_default(),
                timestamp: r.get(2)?,
                ingestion_time: r.get(3)?,
                message: r.get(4)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn list_streams(conn: &Connection, group: &str) -> LogResult<Vec<StreamInfo>> {
    if !group_exists(conn, group)? {
        return Err(LogError::GroupNotFound(group.to_string()));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT name, creation_time, first_event_timestamp, last_event_timestamp,
            last_ingestion_time, stored_events, stored_bytes
         FROM log_streams WHERE group_name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map(params![group], |r| {
        // A stream created empty has never ingested anything: its event columns hold 0.
        let last_ingestion: i64 = r.get(4)?;
        let ingested = |v: i64| (last_ingestion > 0).then_some(v);
        Ok(StreamInfo {
            name: r.get(0)?,
            creation_time: r.get(1)?,
            first_event_timestamp: ingested(r.get(2)?),
            last_event_timestamp: ingested(r.get(3)?),
            last_ingestion_time: ingested(last_ingestion),
            stored_events: count(r.get(5)?),
            stored_bytes: count(r.get(6)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// All groups, or the one named.
fn groups(conn: &Connection, only: Option<&str>) -> LogResult<Vec<GroupInfo>> {
    // Two statements rather than `?1 IS NULL OR g.name = ?1`, which SQLite plans as a scan of
    // every group: one group's lookup (every PutLogEvents makes one) uses the primary key.
    const SELECT: &str = "SELECT g.name, g.creation_time, g.retention_days,
            COALESCE(SUM(s.stored_events), 0), COALESCE(SUM(s.stored_bytes), 0), g.class
         FROM log_groups g LEFT JOIN log_streams s ON s.group_name = g.name";
    let mut stmt = match only {
        Some(_) => conn.prepare_cached(&format!("{SELECT} WHERE g.name = ?1 GROUP BY g.name"))?,
        None => conn.prepare_cached(&format!("{SELECT} GROUP BY g.name ORDER BY g.name"))?,
    };
    let args: Vec<&dyn rusqlite::ToSql> = match &only {
        Some(name) => vec![name],
        None => vec![],
    };
    let rows = stmt.query_map(args.as_slice(), |r| {
        Ok(GroupInfo {
            name: r.get(0)?,
            creation_time: r.get(1)?,
            retention_days: r
                .get::<_, Option<i64>>(2)?
                .and_then(|d| u32::try_from(d).ok()),
            class: r
                .get::<_, Option<String>>(5)?
                .unwrap_or_else(|| DEFAULT_LOG_GROUP_CLASS.to_string()),
            stored_events: count(r.get(3)?),
            stored_bytes: count(r.get(4)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn group_exists(conn: &Connection, group: &str) -> LogResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM log_groups WHERE name = ?1")?
        .query_row(params![group], |_| Ok(()))
        .optional()?
        .is_some())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A count or size as SQLite stores it (a signed 64-bit integer).
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count or size read back from SQLite; never negative by construction.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
impl SqliteLogBackend {
    /// What the running totals should be, counted the slow way.
    pub(crate) fn recount(&self) -> LogResult<Volume> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (events, bytes): (i64, i64) = inner.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(message AS BLOB)) + ?1), 0) FROM events",
            params![sql_int(EVENT_OVERHEAD_BYTES)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Volume {
            events: count(events),
            bytes: count(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_announced_with_what_why_and_where() {
        let evicted = Eviction {
            dropped: Volume {
                events: 12_345,
                bytes: 10_276_045,
            },
            groups: vec!["/ecs/api".into(), "/ecs/web".into()],
        };
        assert_eq!(
            cap_warning(1 << 30, &evicted),
            "log store over its 1 GiB cap: dropped the oldest 12,345 events (9.8 MiB) from \
             /ecs/api, /ecs/web"
        );
        assert_eq!(
            retention_warning(
                Volume {
                    events: 3,
                    bytes: 300
                },
                &["/ecs/web (7 days)".into()]
            ),
            "log retention: dropped 3 events (300 B) older than their group's retention from \
             /ecs/web (7 days)"
        );
    }
}
