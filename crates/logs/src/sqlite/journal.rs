//! The journal in SQLite (see the crate docs): `journal_origins` names each origin and holds
//! the newest sequence held from it (for this backend's own origin, the last one handed out);
//! events carry their origin and sequence in their own row (`events.origin_id`,
//! `events.origin_seq`), so the journal costs no second copy of the log volume; the other
//! changes (groups and streams made, removed, tagged) are rows of `journal_changes`, and each
//! writer's batch is a row of `journal_batches` (its id, origin and range of sequences: one row
//! per batch rather than an id on every event), both kept for [`JOURNAL_CHANGES_KEPT_MS`].
//! `journal_self` names this store's own origin.

use super::{lifecycle, now_ms, Inner, Marking};
use crate::{
    Change, JournalEntry, JournalPage, LogError, LogResult, NewEvent, NewGroup,
    JOURNAL_CHANGES_KEPT_MS, JOURNAL_PAGE_BYTES,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

/// The id of origin `name`, made if `create`.
fn origin_id(conn: &Connection, name: &str, create: bool) -> LogResult<Option<i64>> {
    if create {
        conn.prepare_cached("INSERT OR IGNORE INTO journal_origins (name) VALUES (?1)")?
            .execute(params![name])?;
    }
    Ok(conn
        .prepare_cached("SELECT id FROM journal_origins WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?)
}

pub(super) fn last_seq(conn: &Connection, origin: i64) -> LogResult<i64> {
    Ok(conn
        .prepare_cached("SELECT last_seq FROM journal_origins WHERE id = ?1")?
        .query_row(params![origin], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Record that `origin`'s journal is held up to `seq` (never moving back).
pub(super) fn advance(conn: &Connection, origin: i64, seq: i64) -> LogResult<()> {
    conn.prepare_cached("UPDATE journal_origins SET last_seq = MAX(last_seq, ?2) WHERE id = ?1")?
        .execute(params![origin, seq])?;
    Ok(())
}

/// Whether batch `batch` is stored under another origin than `except` (any, with `None`):
/// `Some` of where its last event stands in the journal (`None` inside for a batch stored
/// without a journal).
pub(super) fn stored_batch(
    conn: &Connection,
    batch: &str,
    except: Option<i64>,
) -> LogResult<Option<Option<(String, i64)>>> {
    let found: Option<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT o.name, b.last_seq FROM journal_batches b
             LEFT JOIN journal_origins o ON o.id = b.origin_id
             WHERE b.batch = ?1 AND (?2 IS NULL OR b.origin_id IS NOT ?2)",
        )?
        .query_row(params![batch, except], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.map(|(origin, seq)| origin.map(|o| (o, seq))))
}

/// Records a writer's batch: its id, and its origin and sequences when journaled.
pub(super) fn record_batch(
    conn: &Connection,
    batch: &str,
    origin: Option<i64>,
    first_seq: i64,
    last_seq: i64,
    now: i64,
) -> LogResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO journal_batches (batch, origin_id, first_seq, last_seq, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![batch, origin, first_seq, last_seq, now])?;
    Ok(())
}

/// Records the batches of copied events (`marks`: each event's sequence and batch id).
pub(super) fn record_copied_batches(
    conn: &Connection,
    origin: i64,
    marks: &[(i64, Option<String>)],
    now: i64,
) -> LogResult<()> {
    let mut i = 0;
    while i < marks.len() {
        let Some(batch) = &marks[i].1 else {
            i += 1;
            continue;
        };
        let first = marks[i].0;
        let mut last = first;
        while i < marks.len() && marks[i].1.as_ref() == Some(batch) {
            last = marks[i].0;
            i += 1;
        }
        record_batch(conn, batch, Some(origin), first, last, now)?;
    }
    Ok(())
}

/// The batches of `origin` that overlap its sequences `from..=to`: (first, last, id).
fn batches_between(
    conn: &Connection,
    origin: i64,
    from: i64,
    to: i64,
) -> LogResult<Vec<(i64, i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, last_seq, batch FROM journal_batches
         WHERE origin_id = ?1 AND last_seq >= ?2 AND first_seq <= ?3",
    )?;
    let rows = stmt.query_map(params![origin, from, to], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Gives each event entry the id of the batch it belongs to.
fn name_batches(conn: &Connection, origin: i64, entries: &mut [JournalEntry]) -> LogResult<()> {
    let (Some(from), Some(to)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let batches = batches_between(conn, origin, from.seq, to.seq)?;
    if batches.is_empty() {
        return Ok(());
    }
    for entry in entries {
        if let Change::Event { batch, .. } = &mut entry.change {
            *batch = batches
                .iter()
                .find(|(first, last, _)| (*first..=*last).contains(&entry.seq))
                .map(|(_, _, id)| id.clone());
        }
    }
    Ok(())
}

/// Up to `limit` of `origin`'s events with sequences in `(after, to]`, as journal entries
/// (without their batch ids).
fn events_between(
    conn: &Connection,
    origin: i64,
    after: i64,
    to: i64,
    limit: i64,
) -> LogResult<Vec<JournalEntry>> {
    let mut events = conn.prepare_cached(
        "SELECT e.origin_seq, s.group_name, s.name, e.timestamp, e.message
         FROM events e JOIN log_streams s ON s.id = e.stream_id
         WHERE e.origin_id = ?1 AND e.origin_seq > ?2 AND e.origin_seq <= ?3
         ORDER BY e.origin_seq LIMIT ?4",
    )?;
    let rows = events.query_map(params![origin, after, to, limit], |r| {
        Ok(JournalEntry {
            seq: r.get(0)?,
            change: Change::Event {
                group: r.get(1)?,
                stream: r.get(2)?,
                timestamp: r.get(3)?,
                message: r.get(4)?,
                batch: None,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn store_change(conn: &Connection, origin: i64, seq: i64, change: &Change) -> LogResult<()> {
    let json = serde_json::to_string(change).map_err(|e| LogError::Storage(e.to_string()))?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO journal_changes (origin_id, seq, change, at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![origin, seq, json, now_ms()])?;
    Ok(())
}

/// Eight random hex digits (the standard library's hasher keys are random per process).
fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", hasher.finish() as u32)
}

impl Inner {
    pub(super) fn journal_as(&mut self, replica: &str) -> LogResult<String> {
        let existing: Option<String> = self
            .conn
            .query_row(
                "SELECT origin FROM journal_self WHERE replica = ?1",
                params![replica],
                |r| r.get(0),
            )
            .optional()?;
        let name = match existing {
            Some(name) => name,
            None => {
                let name = format!("{replica}.{}", random_suffix());
                self.conn.execute(
                    "INSERT INTO journal_self (replica, origin) VALUES (?1, ?2)",
                    params![replica, name],
                )?;
                name
            }
        };
        let id = origin_id(&self.conn, &name, true)?
            .ok_or_else(|| LogError::Storage(format!("journal origin {name} was not made")))?;
        self.origin = Some((id, name.clone()));
        Ok(name)
    }

    /// Number one of this backend's own changes (not an event: those are numbered as they
    /// are appended) in its journal, if it journals. Called once the change is made; a crash
    /// in between loses the entry, not the change.
    pub(super) fn journal_own(&mut self, change: Change) -> LogResult<()> {
        let Some((origin, _)) = &self.origin else {
            return Ok(());
        };
        let origin = *origin;
        let tx = self.conn.transaction()?;
        let seq = last_seq(&tx, origin)? + 1;
        store_change(&tx, origin, seq, &change)?;
        advance(&tx, origin, seq)?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn journal(&self, name: &str, after: i64, limit: usize) -> LogResult<JournalPage> {
        let Some(origin) = origin_id(&self.conn, name, false)? else {
            return Ok(JournalPage {
                entries: Vec::new(),
                read_to: after,
            });
        };
        let limit = limit.max(1);
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut entries = events_between(&self.conn, origin, after, i64::MAX, sql_limit)?;
        let events_full = entries.len() == limit;
        let mut changes = self.conn.prepare_cached(
            "SELECT seq, change FROM journal_changes
             WHERE origin_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows: Vec<(i64, String)> = changes
            .query_map(params![origin, after, sql_limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let changes_full = rows.len() == limit;
        for (seq, json) in rows {
            let change = serde_json::from_str(&json).map_err(|e| {
                LogError::Storage(format!("journal entry {seq} of {name} is unreadable: {e}"))
            })?;
            entries.push(JournalEntry { seq, change });
        }
        entries.sort_by_key(|e| e.seq);
        let mut whole = !events_full && !changes_full && entries.len() <= limit;
        entries.truncate(limit);
        // At most about JOURNAL_PAGE_BYTES of messages (at least one entry).
        let mut bytes = 0;
        if let Some(cut) = entries.iter().position(|e| {
            if let Change::Event { message, .. } = &e.change {
                bytes += message.len();
            }
            bytes > JOURNAL_PAGE_BYTES
        }) {
            entries.truncate(cut.max(1));
            whole = false;
        }
        // Whole batches: the rest of a batch the page cut into comes with it, so that a
        // replica never holds part of a batch (which would count as the batch stored).
        if !whole {
            if let Some(last) = entries.last().map(|e| e.seq) {
                let cut_into = batches_between(&self.conn, origin, last, last)?
                    .into_iter()
                    .map(|(_, end, _)| end)
                    .find(|end| *end > last);
                if let Some(end) = cut_into {
                    entries.extend(events_between(&self.conn, origin, last, end, i64::MAX)?);
                }
            }
        }
        name_batches(&self.conn, origin, &mut entries)?;
        let read_to = if whole {
            last_seq(&self.conn, origin)?.max(after)
        } else {
            entries.last().map_or(after, |e| e.seq)
        };
        Ok(JournalPage { entries, read_to })
    }

    pub(super) fn apply_journal(&mut self, name: &str, page: JournalPage) -> LogResult<usize> {
        if self.origin.as_ref().is_some_and(|(_, own)| own == name) {
            // Our own changes coming back (from a replica that copied them): held already.
            return Ok(0);
        }
        let origin = origin_id(&self.conn, name, true)?
            .ok_or_else(|| LogError::Storage(format!("journal origin {name} was not made")))?;
        let held = last_seq(&self.conn, origin)?;
        let mut applied = 0;
        let mut run: Vec<NewEvent> = Vec::new();
        let mut marks: Vec<(i64, Option<String>)> = Vec::new();
        for entry in page.entries.into_iter().filter(|e| e.seq > held) {
            match entry.change {
                Change::Event {
                    group,
                    stream,
                    timestamp,
                    message,
                    batch,
                } => {
                    run.push(NewEvent {
                        group,
                        stream,
                        timestamp,
                        message,
                    });
                    marks.push((entry.seq, batch));
                }
                change => {
                    applied += self.apply_events(origin, &mut run, &mut marks)?;
                    self.apply_change(&change)?;
                    let tx = self.conn.transaction()?;
                    store_change(&tx, origin, entry.seq, &change)?;
                    advance(&tx, origin, entry.seq)?;
                    tx.commit()?;
                    applied += 1;
                }
            }
        }
        applied += self.apply_events(origin, &mut run, &mut marks)?;
        advance(&self.conn, origin, page.read_to)?;
        Ok(applied)
    }

    /// Append a run of copied events, leaving out batches already stored under another origin
    /// (an agent's batch sent again to another replica after a failover).
    fn apply_events(
        &mut self,
        origin: i64,
        run: &mut Vec<NewEvent>,
        marks: &mut Vec<(i64, Option<String>)>,
    ) -> LogResult<usize> {
        if run.is_empty() {
            return Ok(0);
        }
        let mut known: BTreeMap<String, bool> = BTreeMap::new();
        let mut events = Vec::with_capacity(run.len());
        let mut kept_marks = Vec::with_capacity(run.len());
        let mut skipped_to = None;
        for (event, mark) in run.drain(..).zip(marks.drain(..)) {
            if let Some(batch) = &mark.1 {
                let stored_elsewhere = match known.get(batch) {
                    Some(s) => *s,
                    None => {
                        let s = stored_batch(&self.conn, batch, Some(origin))?.is_some();
                        known.insert(batch.clone(), s);
                        s
                    }
                };
                if stored_elsewhere {
                    skipped_to = Some(mark.0);
                    continue;
                }
            }
            events.push(event);
            kept_marks.push(mark);
        }
        let n = events.len();
        if n > 0 {
            self.append(
                &events,
                now_ms(),
                None,
                Marking::Copied {
                    origin,
                    marks: &kept_marks,
                },
            )?;
        }
        if let Some(seq) = skipped_to {
            advance(&self.conn, origin, seq)?;
        }
        Ok(n)
    }

    /// Make a copied change here, where it may have happened already.
    fn apply_change(&mut self, change: &Change) -> LogResult<()> {
        let now = now_ms();
        let result = match change {
            Change::Event { .. } => Ok(()),
            Change::EnsureStream {
                group,
                stream,
                create_group,
            } => lifecycle::ensure_stream(&mut self.conn, group, stream, *create_group, now),
            Change::CreateGroup { name, tags, class } => lifecycle::create_group(
                &mut self.conn,
                &NewGroup {
                    name: name.clone(),
                    tags: tags.clone(),
                    class: class.clone(),
                },
                now,
            ),
            Change::DeleteGroup { name } => self.delete_group(name).map(drop),
            Change::CreateStream { group, stream } => {
                lifecycle::create_stream(&mut self.conn, group, stream, now)
            }
            Change::DeleteStream { group, stream } => self.delete_stream(group, stream).map(drop),
            Change::SetRetention { group, days } => self.set_retention(group, *days),
            Change::TagGroup { group, tags } => lifecycle::tag_group(&mut self.conn, group, tags),
            Change::UntagGroup { group, keys } => {
                lifecycle::untag_group(&mut self.conn, group, keys)
            }
        };
        match result {
            Ok(())
            | Err(LogError::GroupNotFound(_))
            | Err(LogError::StreamNotFound { .. })
            | Err(LogError::GroupAlreadyExists(_))
            | Err(LogError::StreamAlreadyExists { .. })
            | Err(LogError::TooManyTags { .. })
            | Err(LogError::InvalidRetention(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn journal_positions(&self) -> LogResult<BTreeMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, last_seq FROM journal_origins")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forget changes (not events) that every replica should have copied long ago.
    pub(super) fn prune_journal(&self, now: i64) -> LogResult<()> {
        let before = now.saturating_sub(JOURNAL_CHANGES_KEPT_MS);
        self.conn
            .execute("DELETE FROM journal_changes WHERE at < ?1", params![before])?;
        self.conn
            .execute("DELETE FROM journal_batches WHERE at < ?1", params![before])?;
        Ok(())
    }
}
