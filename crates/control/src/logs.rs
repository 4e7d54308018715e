//! Container output, kept per log group and stream as the `awslogs` driver would file it, and
//! served through a subset of the CloudWatch Logs API (GetLogEvents, FilterLogEvents,
//! DescribeLogStreams, DescribeLogGroups) so `aws logs get-log-events` and `gantry logs` both
//! read it. Lives in its own SQLite file: log volume must not slow the state store.

use crate::state::ControlPlane;
use crate::wire::parse;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use gantry_model::agent_protocol::LogBatch;
use gantry_model::{EcsError, EcsResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct LogStore {
    conn: Arc<Mutex<Connection>>,
}

fn db_err(e: impl std::fmt::Display) -> EcsError {
    EcsError::server(format!("The log store failed: {e}"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub log_stream: String,
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: String,
}

impl LogStore {
    pub fn open(path: &Path) -> EcsResult<Self> {
        Self::init(Connection::open(path).map_err(db_err)?)
    }

    pub fn open_in_memory() -> EcsResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> EcsResult<Self> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS log_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                log_group TEXT NOT NULL,
                log_stream TEXT NOT NULL,
                timestamp INTEGER NOT NULL,
                ingestion_time INTEGER NOT NULL,
                message TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS log_events_stream ON log_events(log_group, log_stream, id);",
        )
        .map_err(db_err)?;
        Ok(LogStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> EcsResult<T> + Send + 'static,
    ) -> EcsResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| db_err("lock poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(db_err)?
    }

    pub async fn append(&self, batch: LogBatch) -> EcsResult<()> {
        let now = (gantry_model::now_epoch() * 1000.0) as i64;
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO log_events (log_group, log_stream, timestamp, ingestion_time, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(db_err)?;
                for e in batch.events {
                    stmt.execute(params![e.log_group, e.log_stream, e.timestamp, now, e.message])
                        .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn group_exists(&self, group: String) -> EcsResult<bool> {
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT 1 FROM log_events WHERE log_group = ?1 LIMIT 1",
                params![group],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(db_err)
        })
        .await
    }

    async fn stream_exists(&self, group: String, stream: String) -> EcsResult<bool> {
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT 1 FROM log_events WHERE log_group = ?1 AND log_stream = ?2 LIMIT 1",
                params![group, stream],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(db_err)
        })
        .await
    }

    /// Events of one stream after id `after` (ascending), or the last `limit` before id
    /// `before` when reading backwards.
    pub async fn stream_events(
        &self,
        group: &str,
        stream: &str,
        after: Option<i64>,
        before: Option<i64>,
        limit: i64,
    ) -> EcsResult<Vec<StoredEvent>> {
        let (group, stream) = (group.to_string(), stream.to_string());
        self.with_conn(move |conn| {
            let row = |r: &rusqlite::Row| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    log_stream: r.get(1)?,
                    timestamp: r.get(2)?,
                    ingestion_time: r.get(3)?,
                    message: r.get(4)?,
                })
            };
            let mut events: Vec<StoredEvent> = if let Some(after) = after {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, log_stream, timestamp, ingestion_time, message FROM log_events
                         WHERE log_group = ?1 AND log_stream = ?2 AND id > ?3 ORDER BY id ASC LIMIT ?4",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![group, stream, after, limit], row)
                    .map_err(db_err)?;
                rows.collect::<Result<_, _>>().map_err(db_err)?
            } else {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, log_stream, timestamp, ingestion_time, message FROM log_events
                         WHERE log_group = ?1 AND log_stream = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![group, stream, before.unwrap_or(i64::MAX), limit], row)
                    .map_err(db_err)?;
                rows.collect::<Result<_, _>>().map_err(db_err)?
            };
            if after.is_none() {
                events.reverse();
            }
            Ok(events)
        })
        .await
    }

    /// Events of a group, optionally restricted to stream names or a stream prefix, after id
    /// `after`.
    pub async fn group_events(
        &self,
        group: &str,
        streams: Option<Vec<String>>,
        prefix: Option<String>,
        after: i64,
        limit: i64,
    ) -> EcsResult<Vec<StoredEvent>> {
        let group = group.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, log_stream, timestamp, ingestion_time, message FROM log_events
                     WHERE log_group = ?1 AND id > ?2 ORDER BY id ASC",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![group, after], |r| {
                    Ok(StoredEvent {
                        id: r.get(0)?,
                        log_stream: r.get(1)?,
                        timestamp: r.get(2)?,
                        ingestion_time: r.get(3)?,
                        message: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for ev in rows {
                let ev = ev.map_err(db_err)?;
                let wanted = streams.as_ref().is_none_or(|s| s.contains(&ev.log_stream))
                    && prefix
                        .as_ref()
                        .is_none_or(|p| ev.log_stream.starts_with(p.as_str()));
                if wanted {
                    out.push(ev);
                    if out.len() as i64 >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn streams(&self, group: &str) -> EcsResult<Vec<(String, i64, i64)>> {
        let group = group.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT log_stream, MIN(timestamp), MAX(timestamp) FROM log_events
                     WHERE log_group = ?1 GROUP BY log_stream ORDER BY log_stream",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![group], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db_err)?;
            rows.collect::<Result<_, _>>().map_err(db_err)
        })
        .await
    }

    async fn groups(&self) -> EcsResult<Vec<String>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT log_group FROM log_events ORDER BY log_group")
                .map_err(db_err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(db_err)?;
            rows.collect::<Result<_, _>>().map_err(db_err)
        })
        .await
    }
}

/// `POST /agent/v1/logs` from agents.
pub async fn ingest(
    State(plane): State<Arc<ControlPlane>>,
    Json(batch): Json<LogBatch>,
) -> StatusCode {
    match plane.logs.append(batch).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(e) => {
            tracing::warn!("cannot store logs: {e}");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

pub async fn dispatch(plane: &ControlPlane, op: &str, input: Value) -> EcsResult<Value> {
    match op {
        "GetLogEvents" => get_log_events(plane, input).await,
        "FilterLogEvents" => filter_log_events(plane, input).await,
        "DescribeLogStreams" => describe_log_streams(plane, input).await,
        "DescribeLogGroups" => describe_log_groups(plane).await,
        _ => Err(EcsError::unknown_operation(op)),
    }
}

fn group_not_found() -> EcsError {
    EcsError::resource_not_found("The specified log group does not exist.")
}

fn parse_token(t: &str, prefix: &str) -> EcsResult<i64> {
    t.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| EcsError::invalid_parameter("The specified nextToken is invalid."))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEventsInput {
    log_group_name: String,
    log_stream_name: String,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

async fn get_log_events(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: GetLogEventsInput = parse(input)?;
    let limit = req.limit.unwrap_or(10_000).clamp(1, 10_000);
    if !plane.logs.group_exists(req.log_group_name.clone()).await? {
        return Err(group_not_found());
    }
    let (after, before) = match req.next_token.as_deref() {
        Some(t) if t.starts_with("f/") => (Some(parse_token(t, "f/")?), None),
        Some(t) if t.starts_with("b/") => (None, Some(parse_token(t, "b/")?)),
        Some(_) => {
            return Err(EcsError::invalid_parameter(
                "The specified nextToken is invalid.",
            ))
        }
        None if req.start_from_head.unwrap_or(false) => (Some(0), None),
        None => (None, None),
    };
    if !plane
        .logs
        .stream_exists(req.log_group_name.clone(), req.log_stream_name.clone())
        .await?
    {
        return Err(EcsError::resource_not_found(
            "The specified log stream does not exist.",
        ));
    }
    let events = plane
        .logs
        .stream_events(
            &req.log_group_name,
            &req.log_stream_name,
            after,
            before,
            limit,
        )
        .await?;
    let first = events.first().map(|e| e.id);
    let last = events.last().map(|e| e.id);
    // With no new events the forward token stays put, so a follower polls with it again.
    let forward = last.or(after).or(before.map(|b| b - 1)).unwrap_or(0);
    let backward = first.or(before).or(after.map(|a| a + 1)).unwrap_or(0);
    Ok(json!({
        "events": events.iter().map(|e| json!({
            "timestamp": e.timestamp,
            "message": e.message,
            "ingestionTime": e.ingestion_time,
        })).collect::<Vec<_>>(),
        "nextForwardToken": format!("f/{forward}"),
        "nextBackwardToken": format!("b/{backward}"),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterInput {
    log_group_name: String,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

async fn filter_log_events(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: FilterInput = parse(input)?;
    if req.log_stream_names.is_some() && req.log_stream_name_prefix.is_some() {
        return Err(EcsError::invalid_parameter(
            "logStreamNames and logStreamNamePrefix cannot both be given.",
        ));
    }
    if !plane.logs.group_exists(req.log_group_name.clone()).await? {
        return Err(group_not_found());
    }
    let limit = req.limit.unwrap_or(10_000).clamp(1, 10_000);
    let after = match req.next_token.as_deref() {
        Some(t) => parse_token(t, "f/")?,
        None => 0,
    };
    let events = plane
        .logs
        .group_events(
            &req.log_group_name,
            req.log_stream_names.clone(),
            req.log_stream_name_prefix.clone(),
            after,
            limit,
        )
        .await?;
    let full_page = events.len() as i64 >= limit;
    let last = events.last().map(|e| e.id);
    let pattern = req
        .filter_pattern
        .as_deref()
        .map(|p| p.trim_matches('"'))
        .filter(|p| !p.is_empty());
    let kept: Vec<Value> = events
        .iter()
        .filter(|e| req.start_time.is_none_or(|s| e.timestamp >= s))
        .filter(|e| req.end_time.is_none_or(|s| e.timestamp <= s))
        .filter(|e| pattern.is_none_or(|p| e.message.contains(p)))
        .map(|e| {
            json!({
                "logStreamName": e.log_stream,
                "timestamp": e.timestamp,
                "message": e.message,
                "ingestionTime": e.ingestion_time,
                "eventId": e.id.to_string(),
            })
        })
        .collect();
    let mut out = json!({"events": kept, "searchedLogStreams": []});
    if full_page {
        if let Some(l) = last {
            out["nextToken"] = json!(format!("f/{l}"));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeStreamsInput {
    log_group_name: Option<String>,
    log_stream_name_prefix: Option<String>,
}

async fn describe_log_streams(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeStreamsInput = parse(input)?;
    let group = req
        .log_group_name
        .ok_or_else(|| EcsError::invalid_parameter("logGroupName is required."))?;
    if !plane.logs.group_exists(group.clone()).await? {
        return Err(group_not_found());
    }
    let streams: Vec<Value> = plane
        .logs
        .streams(&group)
        .await?
        .into_iter()
        .filter(|(s, _, _)| {
            req.log_stream_name_prefix
                .as_ref()
                .is_none_or(|p| s.starts_with(p.as_str()))
        })
        .map(|(s, first, last)| {
            json!({
                "logStreamName": s,
                "creationTime": first,
                "firstEventTimestamp": first,
                "lastEventTimestamp": last,
                "arn": format!("arn:aws:logs:{}:{}:log-group:{}:log-stream:{}", plane.scope().region, plane.scope().account, group, s),
            })
        })
        .collect();
    Ok(json!({"logStreams": streams}))
}

async fn describe_log_groups(plane: &ControlPlane) -> EcsResult<Value> {
    let groups: Vec<Value> = plane
        .logs
        .groups()
        .await?
        .into_iter()
        .map(|g| {
            json!({
                "logGroupName": g,
                "arn": format!("arn:aws:logs:{}:{}:log-group:{}:*", plane.scope().region, plane.scope().account, g),
            })
        })
        .collect();
    Ok(json!({"logGroups": groups}))
}
