//! Groups and streams made, removed and tagged on request (`CreateLogGroup`,
//! `DeleteLogStream`, `TagResource`, …), beside the implicit creation by a first event that
//! `insert_events` does. Each change is one transaction; deleting updates the running totals
//! only after it committed, as every other change does.

use super::{count, group_exists, Inner};
use crate::{LogError, LogResult, NewGroup, Volume, DEFAULT_LOG_GROUP_CLASS, MAX_TAGS};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;

pub(super) fn create_group(conn: &mut Connection, group: &NewGroup, now: i64) -> LogResult<()> {
    if group.tags.len() > MAX_TAGS {
        return Err(LogError::TooManyTags {
            group: group.name.clone(),
            count: group.tags.len(),
        });
    }
    let tx = conn.transaction()?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO log_groups (name, creation_time, class) VALUES (?1, ?2, ?3)",
        params![
            group.name,
            now,
            group.class.as_deref().unwrap_or(DEFAULT_LOG_GROUP_CLASS)
        ],
    )?;
    if inserted == 0 {
        return Err(LogError::GroupAlreadyExists(group.name.clone()));
    }
    put_tags(&tx, &group.name, &group.tags)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn create_stream(
    conn: &mut Connection,
    group: &str,
    stream: &str,
    now: i64,
) -> LogResult<()> {
    let tx = conn.transaction()?;
    if !group_exists(&tx, group)? {
        return Err(LogError::GroupNotFound(group.to_string()));
    }
    if !insert_empty_stream(&tx, group, stream, now)? {
        return Err(LogError::StreamAlreadyExists {
            group: group.to_string(),
            stream: stream.to_string(),
        });
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn ensure_stream(
    conn: &mut Connection,
    group: &str,
    stream: &str,
    create_group: bool,
    now: i64,
) -> LogResult<()> {
    let tx = conn.transaction()?;
    if !group_exists(&tx, group)? {
        if !create_group {
            return Err(LogError::GroupNotFound(group.to_string()));
        }
        tx.execute(
            "INSERT INTO log_groups (name, creation_time, class) VALUES (?1, ?2, ?3)",
            params![group, now, DEFAULT_LOG_GROUP_CLASS],
        )?;
    }
    insert_empty_stream(&tx, group, stream, now)?;
    tx.commit()?;
    Ok(())
}

/// A stream with no events; its event columns hold 0 until its first event (which
/// `list_streams` reads as "none"). Whether it was new.
fn insert_empty_stream(conn: &Connection, group: &str, stream: &str, now: i64) -> LogResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO log_streams (group_name, name, creation_time,
                first_event_timestamp, last_event_timestamp, last_ingestion_time,
                stored_events, stored_bytes)
             VALUES (?1, ?2, ?3, 0, 0, 0, 0, 0)",
        )?
        .execute(params![group, stream, now])?;
    Ok(inserted > 0)
}

/// [`LogError::GroupNotFound`] or [`LogError::StreamNotFound`] unless the stream exists.
pub(super) fn require_stream(conn: &Connection, group: &str, stream: &str) -> LogResult<()> {
    if stream_id(conn, group, stream)?.is_some() {
        return Ok(());
    }
    if group_exists(conn, group)? {
        Err(LogError::StreamNotFound {
            group: group.to_string(),
            stream: stream.to_string(),
        })
    } else {
        Err(LogError::GroupNotFound(group.to_string()))
    }
}

fn stream_id(conn: &Connection, group: &str, stream: &str) -> LogResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM log_streams WHERE group_name = ?1 AND name = ?2")?
        .query_row(params![group, stream], |r| r.get(0))
        .optional()?)
}

impl Inner {
    pub(super) fn delete_group(&mut self, name: &str) -> LogResult<Volume> {
        let tx = self.conn.transaction()?;
        if !group_exists(&tx, name)? {
            return Err(LogError::GroupNotFound(name.to_string()));
        }
        let (events, bytes): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(stored_events), 0), COALESCE(SUM(stored_bytes), 0)
             FROM log_streams WHERE group_name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM events WHERE stream_id IN
                (SELECT id FROM log_streams WHERE group_name = ?1)",
            params![name],
        )?;
        tx.execute(
            "DELETE FROM log_streams WHERE group_name = ?1",
            params![name],
        )?;
        tx.execute(
            "DELETE FROM log_group_tags WHERE group_name = ?1",
            params![name],
        )?;
        tx.execute("DELETE FROM log_groups WHERE name = ?1", params![name])?;
        tx.commit()?;
        let deleted = Volume {
            events: count(events),
            bytes: count(bytes),
        };
        self.usage.stored.remove(deleted);
        Ok(deleted)
    }

    pub(super) fn delete_stream(&mut self, group: &str, stream: &str) -> LogResult<Volume> {
        let tx = self.conn.transaction()?;
        require_stream(&tx, group, stream)?;
        let (id, events, bytes): (i64, i64, i64) = tx.query_row(
            "SELECT id, stored_events, stored_bytes FROM log_streams
             WHERE group_name = ?1 AND name = ?2",
            params![group, stream],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        tx.execute("DELETE FROM events WHERE stream_id = ?1", params![id])?;
        tx.execute("DELETE FROM log_streams WHERE id = ?1", params![id])?;
        tx.commit()?;
        let deleted = Volume {
            events: count(events),
            bytes: count(bytes),
        };
        self.usage.stored.remove(deleted);
        Ok(deleted)
    }
}

pub(super) fn tag_group(
    conn: &mut Connection,
    name: &str,
    tags: &BTreeMap<String, String>,
) -> LogResult<()> {
    let tx = conn.transaction()?;
    let mut merged = group_tags(&tx, name)?;
    merged.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    if merged.len() > MAX_TAGS {
        return Err(LogError::TooManyTags {
            group: name.to_string(),
            count: merged.len(),
        });
    }
    put_tags(&tx, name, tags)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn untag_group(conn: &mut Connection, name: &str, keys: &[String]) -> LogResult<()> {
    let tx = conn.transaction()?;
    if !group_exists(&tx, name)? {
        return Err(LogError::GroupNotFound(name.to_string()));
    }
    for key in keys {
        tx.prepare_cached("DELETE FROM log_group_tags WHERE group_name = ?1 AND key = ?2")?
            .execute(params![name, key])?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn group_tags(conn: &Connection, name: &str) -> LogResult<BTreeMap<String, String>> {
    if !group_exists(conn, name)? {
        return Err(LogError::GroupNotFound(name.to_string()));
    }
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM log_group_tags WHERE group_name = ?1")?;
    let rows = stmt.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn put_tags(conn: &Connection, name: &str, tags: &BTreeMap<String, String>) -> LogResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO log_group_tags (group_name, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (group_name, key) DO UPDATE SET value = excluded.value",
    )?;
    for (k, v) in tags {
        stmt.execute(params![name, k, v])?;
    }
    Ok(())
}
