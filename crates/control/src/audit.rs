//! The audit log of the control plane: one [`AuditEvent`] per API call (time, principal,
//! action, resources, source address, outcome, request id), kept in its own SQLite file
//! (`audit.db` in the data directory, beside `logs.db`), bounded to `max_events` rows (oldest
//! deleted first) and queryable newest first.
//!
//! Recording never slows an API call: [`AuditLog::record`] is a non-blocking send into a
//! bounded channel. When the channel is full the event is dropped and counted (with a warning
//! at most once a minute) rather than making the caller wait. One writer thread owns the
//! write connection, writes whatever is queued as one transaction, then trims the table back
//! to `max_events` (the row count is tracked in memory after one `COUNT(*)` at open). Queries
//! run on a separate read connection under `spawn_blocking`; WAL mode lets them proceed while
//! the writer commits.
//!
//! **Invariant: the audit log never holds a secret.** Callers build an [`AuditEvent`] from the
//! request's metadata only: the access key *id* (public) but never the secret access key, no
//! session token, no request signature or `Authorization` header, and no request or response
//! bodies (which may carry secret values such as environment variables or secret ARNs'
//! contents). Nothing in this module looks inside the fields, so upholding this is the
//! caller's job; the struct deliberately has no field where such a value would fit.

#![allow(dead_code)]

use base64::Engine;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How many events may wait for the writer before `record` starts dropping them.
const DEFAULT_CHANNEL_CAPACITY: usize = 10_000;
/// The most commands the writer takes into one transaction.
const MAX_BATCH: usize = 2_000;
/// `user_agent` is cut to this many characters by `record`.
const MAX_USER_AGENT_CHARS: usize = 256;
const DEFAULT_MAX_RESULTS: usize = 100;
const MAX_MAX_RESULTS: usize = 1_000;
/// A dropped-event warning is logged at most this often.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(60);
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const SCHEMA_VERSION: i64 = 1;
const TOKEN_PREFIX: &str = "gantry-audit:";
const INVALID_TOKEN: &str = "The nextToken is not valid.";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_time    REAL NOT NULL,
    request_id    TEXT NOT NULL,
    principal     TEXT NOT NULL,
    access_key_id TEXT,
    action        TEXT NOT NULL,
    resources     TEXT NOT NULL,
    source_ip     TEXT NOT NULL,
    user_agent    TEXT,
    outcome       TEXT NOT NULL,
    error_code    TEXT
);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events(event_time);
CREATE INDEX IF NOT EXISTS audit_events_principal ON audit_events(principal, id);
CREATE INDEX IF NOT EXISTS audit_events_action ON audit_events(action, id);
";

const SELECT_COLUMNS: &str = "id, event_time, request_id, principal, access_key_id, action, \
                              resources, source_ip, user_agent, outcome, error_code";

/// One API call as the audit log records it. Holds no secret value and no signature (see the
/// module documentation).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Epoch seconds with milliseconds.
    pub event_time: f64,
    pub request_id: String,
    /// ARN of the caller, or "anonymous".
    pub principal: String,
    /// The access key id (not secret); `None` for unsigned calls.
    pub access_key_id: Option<String>,
    /// "ecs:RunTask", "iam:CreateRole", "gantry:AgentChannel", ...
    pub action: String,
    /// ARNs the call touched.
    pub resources: Vec<String>,
    pub source_ip: String,
    /// Truncated to 256 characters by [`AuditLog::record`].
    pub user_agent: Option<String>,
    /// "Success" | "AccessDenied" | "AuthFailure" | "Error".
    pub outcome: String,
    /// e.g. "ClusterNotFoundException".
    pub error_code: Option<String>,
}

/// A filter over the audit log. Every set field must match.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    /// Exact match.
    pub principal: Option<String>,
    /// Exact match, or a prefix when it ends with '*' ("ecs:*").
    pub action: Option<String>,
    /// Exact match.
    pub outcome: Option<String>,
    /// Substring match on any one resource.
    pub resource: Option<String>,
    /// Inclusive lower bound on `event_time`.
    pub start_time: Option<f64>,
    /// Inclusive upper bound on `event_time`.
    pub end_time: Option<f64>,
    /// Default 100; clamped to 1..=1000.
    pub max_results: Option<usize>,
    /// Opaque; from the previous page.
    pub next_token: Option<String>,
}

/// One page of events, newest first, and the token for the next page if there may be more.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_token: Option<String>,
}

/// Running counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditStats {
    /// Events accepted by `record` (queued for the writer) since open.
    pub recorded: u64,
    /// Events lost since open: the queue was full, or the write failed.
    pub dropped: u64,
    /// Rows in the file now.
    pub stored: u64,
}

// Nearly every command is a `Record`; boxing it would add an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    Record(AuditEvent),
    Flush(oneshot::Sender<()>),
}

/// Counters shared by the handles and the writer thread.
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    stored: AtomicU64,
    /// Base for `last_drop_warning_ms`.
    created: Instant,
    /// Milliseconds after `created` of the last dropped-event warning; `u64::MAX` = never.
    last_drop_warning_ms: AtomicU64,
}

impl Counters {
    fn note_dropped(&self, n: u64, why: &str) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_drop_warning_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX
            || now.saturating_sub(last) >= DROP_WARNING_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_drop_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("audit events dropped ({why}); {total} dropped since start");
        }
    }
}

/// The audit log. Cheap to clone: every clone is a handle on the same writer thread, read
/// connection and counters (an `Arc` inside). When the last handle is dropped, the writer
/// writes what is still queued and stops; that drop waits for it.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only inside `Drop`, which closes the channel to stop the writer.
    tx: Option<mpsc::Sender<Command>>,
    counters: Arc<Counters>,
    reader: Arc<Mutex<Connection>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Declared last so the connections are closed before the file is removed.
    _temp: Option<TempFile>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(handle) = self.writer.take() {
            // The writer stops once the queue it drains is empty and closed; a panic in it
            // has already been reported by the panic hook.
            let _ = handle.join();
        }
    }
}

/// A database file (with its WAL and shared-memory files) removed when dropped: the storage
/// behind [`AuditLog::in_memory`].
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

impl AuditLog {
    /// Open (create) the file; `max_events` bounds the rows kept (oldest deleted first; 0 is
    /// taken as 1). A file holding more than `max_events` rows is trimmed here.
    pub fn open(path: &Path, max_events: u64) -> Result<AuditLog, String> {
        Self::open_with(path, max_events, DEFAULT_CHANNEL_CAPACITY, None, None)
    }

    /// An audit log for tests and benchmarks, backed by a temporary file that is removed when
    /// the last handle is dropped (a file rather than `:memory:` so that queries can use their
    /// own read connection, as they do in production).
    pub fn in_memory(max_events: u64) -> Result<AuditLog, String> {
        Self::in_memory_with(max_events, DEFAULT_CHANNEL_CAPACITY, None)
    }

    fn in_memory_with(
        max_events: u64,
        capacity: usize,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    ) -> Result<AuditLog, String> {
        let path = std::env::temp_dir().join(format!(
            "gantry-audit-{}-{}.db",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let temp = TempFile(path.clone());
        Self::open_with(&path, max_events, capacity, gate, Some(temp))
    }

    /// `gate`, when given, holds the writer back until it yields (tests use it to fill the
    /// queue deterministically).
    fn open_with(
        path: &Path,
        max_events: u64,
        capacity: usize,
        gate: Option<std::sync::mpsc::Receiver<()>>,
        temp: Option<TempFile>,
    ) -> Result<AuditLog, String> {
        let max_events = max_events.max(1);
        let fail = |what: &str, e: rusqlite::Error| {
            format!("cannot open the audit log {}: {what}: {e}", path.display())
        };
        let mut conn = Connection::open(path).map_err(|e| fail("open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail("busy timeout", e))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(|e| fail("journal mode", e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail("synchronous", e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail("schema version", e))?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "the audit log {} was written by a newer Gantry (schema {version}; this one \
                 knows up to {SCHEMA_VERSION})",
                path.display()
            ));
        }
        let tx = conn.transaction().map_err(|e| fail("schema", e))?;
        tx.execute_batch(SCHEMA).map_err(|e| fail("schema", e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| fail("schema", e))?;
        tx.commit().map_err(|e| fail("schema", e))?;

        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))
            .map_err(|e| fail("count", e))?;
        let mut stored = u64::try_from(count).unwrap_or(0);
        // A bound lowered since the last run holds from the start.
        stored -= trim(&conn, stored, max_events).map_err(|e| fail("trim", e))?;

        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| fail("open for reading", e))?;
        reader
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail("busy timeout", e))?;

        let counters = Arc::new(Counters {
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stored: AtomicU64::new(stored),
            created: Instant::now(),
            last_drop_warning_ms: AtomicU64::new(u64::MAX),
        });
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let writer = Writer {
            conn,
            max_events,
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("gantry-audit-writer".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                writer.run(rx)
            })
            .map_err(|e| format!("cannot start the audit log writer: {e}"))?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx: Some(tx),
                counters,
                reader: Arc::new(Mutex::new(reader)),
                writer: Some(handle),
                _temp: temp,
            }),
        })
    }

    /// Queue `event` for writing. Never blocks and never fails the caller: when the queue is
    /// full (or the writer is gone) the event is dropped and counted in
    /// [`AuditStats::dropped`]. `user_agent` is cut to 256 characters; a non-finite
    /// `event_time` is replaced by the current time.
    pub fn record(&self, mut event: AuditEvent) {
        if let Some(ua) = &mut event.user_agent {
            if let Some((cut, _)) = ua.char_indices().nth(MAX_USER_AGENT_CHARS) {
                ua.truncate(cut);
            }
        }
        if !event.event_time.is_finite() {
            event.event_time = gantry_model::now_epoch();
        }
        let counters = &self.inner.counters;
        let Some(tx) = &self.inner.tx else {
            counters.note_dropped(1, "the audit log is closed");
            return;
        };
        match tx.try_send(Command::Record(event)) {
            Ok(()) => {
                counters.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.note_dropped(1, "the audit queue is full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                counters.note_dropped(1, "the audit writer has stopped");
            }
        }
    }

    /// Wait until everything recorded before this call has been written (or dropped because
    /// its write failed). Returns at once if the writer has stopped.
    pub async fn flush(&self) {
        let Some(tx) = &self.inner.tx else { return };
        let (done_tx, done_rx) = oneshot::channel();
        // Unlike `record`, this waits for room in the queue: only the flushing caller waits.
        if tx.send(Command::Flush(done_tx)).await.is_err() {
            return;
        }
        let _ = done_rx.await;
    }

    /// The events matching `q`, newest first, one page at a time. Flushes first, so a caller
    /// sees its own earlier calls. Runs on the read connection under `spawn_blocking`, so it
    /// neither blocks the runtime nor the writer. An invalid `next_token` is
    /// `Err("The nextToken is not valid.")`.
    pub async fn query(&self, q: &AuditQuery) -> Result<AuditPage, String> {
        let before = match &q.next_token {
            Some(t) => Some(decode_token(t).ok_or_else(|| INVALID_TOKEN.to_string())?),
            None => None,
        };
        let limit = q
            .max_results
            .unwrap_or(DEFAULT_MAX_RESULTS)
            .clamp(1, MAX_MAX_RESULTS);
        self.flush().await;
        let reader = self.inner.reader.clone();
        let q = q.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot have left the read connection in a bad
            // state: it only ever runs SELECTs.
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            run_query(&conn, &q, before, limit)
        })
        .await
        .map_err(|e| format!("the audit query failed: {e}"))?
    }

    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        AuditStats {
            recorded: c.recorded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            stored: c.stored.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread's state: the only connection that writes.
struct Writer {
    conn: Connection,
    max_events: u64,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(cmd) = next {
                match cmd {
                    Command::Record(e) => batch.push(e),
                    Command::Flush(done) => flushes.push(done),
                }
                next = if batch.len() + flushes.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                self.write(&batch);
                batch.clear();
            }
            // Everything queued before each flush is in `batch` or was written earlier.
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Write `events` as one transaction, then trim. Failures are logged and counted as
    /// dropped; the writer carries on with the next batch.
    fn write(&mut self, events: &[AuditEvent]) {
        match self.try_write(events) {
            Ok(failed) => {
                if failed > 0 {
                    self.counters
                        .note_dropped(failed, "some audit events could not be written");
                }
            }
            Err(e) => {
                tracing::warn!("writing {} audit events failed: {e}", events.len());
                self.counters
                    .note_dropped(events.len() as u64, "the audit write failed");
            }
        }
    }

    /// How many events failed to insert; the stored count is updated only once the
    /// transaction commits.
    fn try_write(&mut self, events: &[AuditEvent]) -> rusqlite::Result<u64> {
        let stored = self.counters.stored.load(Ordering::Relaxed);
        let tx = self.conn.transaction()?;
        let (mut inserted, mut failed) = (0u64, 0u64);
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit_events (event_time, request_id, principal, access_key_id, \
                 action, resources, source_ip, user_agent, outcome, error_code) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for e in events {
                let resources =
                    serde_json::to_string(&e.resources).unwrap_or_else(|_| "[]".to_string());
                // A failed statement is rolled back on its own; the transaction goes on.
                match insert.execute(params![
                    e.event_time,
                    e.request_id,
                    e.principal,
                    e.access_key_id,
                    e.action,
                    resources,
                    e.source_ip,
                    e.user_agent,
                    e.outcome,
                    e.error_code,
                ]) {
                    Ok(_) => inserted += 1,
                    Err(err) => {
                        tracing::debug!("an audit event could not be written: {err}");
                        failed += 1;
                    }
                }
            }
        }
        let after_insert = stored + inserted;
        let trimmed = trim(&tx, after_insert, self.max_events)?;
        tx.commit()?;
        self.counters
            .stored
            .store(after_insert - trimmed, Ordering::Relaxed);
        Ok(failed)
    }
}

/// Delete the oldest rows so that at most `max_events` remain of the `stored` there are;
/// returns how many were deleted.
fn trim(conn: &Connection, stored: u64, max_events: u64) -> rusqlite::Result<u64> {
    if stored <= max_events {
        return Ok(0);
    }
    let excess = i64::try_from(stored - max_events).unwrap_or(i64::MAX);
    let deleted = conn.execute(
        "DELETE FROM audit_events WHERE id IN \
         (SELECT id FROM audit_events ORDER BY id ASC LIMIT ?1)",
        params![excess],
    )?;
    Ok((deleted as u64).min(stored))
}

fn run_query(
    conn: &Connection,
    q: &AuditQuery,
    before: Option<i64>,
    limit: usize,
) -> Result<AuditPage, String> {
    let mut sql = format!("SELECT {SELECT_COLUMNS} FROM audit_events WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(id) = before {
        sql.push_str(" AND id < ?");
        args.push(Value::Integer(id));
    }
    if let Some(p) = &q.principal {
        sql.push_str(" AND principal = ?");
        args.push(Value::Text(p.clone()));
    }
    if let Some(a) = &q.action {
        match a.strip_suffix('*') {
            Some(prefix) => {
                // Case-sensitive, unlike LIKE, and no wildcard characters to escape.
                sql.push_str(" AND substr(action, 1, length(?)) = ?");
                args.push(Value::Text(prefix.to_string()));
                args.push(Value::Text(prefix.to_string()));
            }
            None => {
                sql.push_str(" AND action = ?");
                args.push(Value::Text(a.clone()));
            }
        }
    }
    if let Some(o) = &q.outcome {
        sql.push_str(" AND outcome = ?");
        args.push(Value::Text(o.clone()));
    }
    if let Some(r) = &q.resource {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(audit_events.resources) \
             WHERE instr(json_each.value, ?) > 0)",
        );
        args.push(Value::Text(r.clone()));
    }
    if let Some(t) = q.start_time {
        sql.push_str(" AND event_time >= ?");
        args.push(Value::Real(t));
    }
    if let Some(t) = q.end_time {
        sql.push_str(" AND event_time <= ?");
        args.push(Value::Real(t));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    // One more than a page, to learn whether there is a next one.
    args.push(Value::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));

    let fail = |e: rusqlite::Error| format!("the audit query failed: {e}");
    let mut stmt = conn.prepare(&sql).map_err(fail)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(fail)?;
    let mut events = Vec::with_capacity(limit.min(64));
    let mut last_id = None;
    let mut more = false;
    while let Some(row) = rows.next().map_err(fail)? {
        if events.len() == limit {
            more = true;
            break;
        }
        let id: i64 = row.get(0).map_err(fail)?;
        let resources: String = row.get(6).map_err(fail)?;
        let resources: Vec<String> = serde_json::from_str(&resources)
            .map_err(|e| format!("audit event {id} has unreadable resources: {e}"))?;
        events.push(AuditEvent {
            event_time: row.get(1).map_err(fail)?,
            request_id: row.get(2).map_err(fail)?,
            principal: row.get(3).map_err(fail)?,
            access_key_id: row.get(4).map_err(fail)?,
            action: row.get(5).map_err(fail)?,
            resources,
            source_ip: row.get(7).map_err(fail)?,
            user_agent: row.get(8).map_err(fail)?,
            outcome: row.get(9).map_err(fail)?,
            error_code: row.get(10).map_err(fail)?,
        });
        last_id = Some(id);
    }
    let next_token = if more {
        last_id.map(encode_token)
    } else {
        None
    };
    Ok(AuditPage { events, next_token })
}

fn encode_token(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{id}"))
}

fn decode_token(token: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id: i64 = text.strip_prefix(TOKEN_PREFIX)?.parse().ok()?;
    (id > 0).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32, principal: &str, action: &str, outcome: &str) -> AuditEvent {
        AuditEvent {
            event_time: 1_700_000_000.0 + f64::from(n),
            request_id: format!("req-{n}"),
            principal: principal.to_string(),
            access_key_id: Some("AKIDEXAMPLE".to_string()),
            action: action.to_string(),
            resources: vec![format!(
                "arn:aws:ecs:us-east-1:000000000000:cluster/c{}",
                n % 3
            )],
            source_ip: "127.0.0.1".to_string(),
            user_agent: Some("aws-cli/2".to_string()),
            outcome: outcome.to_string(),
            error_code: None,
        }
    }

    fn ids(page: &AuditPage) -> Vec<String> {
        page.events.iter().map(|e| e.request_id.clone()).collect()
    }

    const ALICE: &str = "arn:aws:iam::000000000000:user/alice";
    const BOB: &str = "arn:aws:iam::000000000000:user/bob";

    /// Ten events: even ones by alice (ecs:RunTask, Success), odd ones by bob
    /// (iam:CreateRole, AccessDenied); event n touches cluster c{n % 3}.
    async fn sample() -> AuditLog {
        let log = AuditLog::in_memory(1_000).unwrap();
        for n in 0..10 {
            log.record(if n % 2 == 0 {
                event(n, ALICE, "ecs:RunTask", "Success")
            } else {
                event(n, BOB, "iam:CreateRole", "AccessDenied")
            });
        }
        log.flush().await;
        log
    }

    #[tokio::test]
    async fn record_flush_query_newest_first() {
        let log = sample().await;
        let page = log.query(&AuditQuery::default()).await.unwrap();
        let expected: Vec<String> = (0..10).rev().map(|n| format!("req-{n}")).collect();
        assert_eq!(ids(&page), expected);
        assert_eq!(page.next_token, None);
        assert_eq!(page.events[9], event(0, ALICE, "ecs:RunTask", "Success"));
        let stats = log.stats();
        assert_eq!(
            stats,
            AuditStats {
                recorded: 10,
                dropped: 0,
                stored: 10
            }
        );
    }

    #[tokio::test]
    async fn user_agent_is_truncated_and_bad_time_replaced() {
        let log = AuditLog::in_memory(10).unwrap();
        let mut e = event(1, ALICE, "ecs:ListClusters", "Success");
        e.user_agent = Some("é".repeat(300));
        e.event_time = f64::NAN;
        e.resources = vec!["weird \"quoted\" % _ resource".to_string()];
        log.record(e);
        let page = log.query(&AuditQuery::default()).await.unwrap();
        let got = &page.events[0];
        assert_eq!(got.user_agent.as_ref().unwrap().chars().count(), 256);
        assert!(got.event_time.is_finite() && got.event_time > 1_600_000_000.0);
        let q = AuditQuery {
            resource: Some("\"quoted\" %".into()),
            ..Default::default()
        };
        assert_eq!(log.query(&q).await.unwrap().events.len(), 1);
    }

    #[tokio::test]
    async fn filters() {
        let log = sample().await;
        let by = |q: AuditQuery| {
            let log = log.clone();
            async move { ids(&log.query(&q).await.unwrap()) }
        };
        let r = |ns: &[u32]| ns.iter().map(|n| format!("req-{n}")).collect::<Vec<_>>();

        let q = AuditQuery {
            principal: Some(BOB.into()),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[9, 7, 5, 3, 1]));

        let q = AuditQuery {
            action: Some("ecs:*".into()),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[8, 6, 4, 2, 0]));
        let q = AuditQuery {
            action: Some("iam:CreateRole".into()),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[9, 7, 5, 3, 1]));
        let q = AuditQuery {
            action: Some("ecs:Run".into()),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[]));
        let q = AuditQuery {
            action: Some("*".into()),
            ..Default::default()
        };
        assert_eq!(by(q).await.len(), 10);

        let q = AuditQuery {
            outcome: Some("AccessDenied".into()),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[9, 7, 5, 3, 1]));

        let q = AuditQuery {
            resource: Some("cluster/c1".into()),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[7, 4, 1]));

        let q = AuditQuery {
            start_time: Some(1_700_000_003.0),
            end_time: Some(1_700_000_006.0),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[6, 5, 4, 3]));

        let q = AuditQuery {
            principal: Some(ALICE.into()),
            resource: Some("cluster/c0".into()),
            start_time: Some(1_700_000_001.0),
            ..Default::default()
        };
        assert_eq!(by(q).await, r(&[6]));
    }

    #[tokio::test]
    async fn paging_covers_every_event_once() {
        let log = AuditLog::in_memory(1_000).unwrap();
        for n in 0..23 {
            log.record(event(n, ALICE, "ecs:RunTask", "Success"));
        }
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let q = AuditQuery {
                max_results: Some(5),
                next_token: token.clone(),
                ..Default::default()
            };
            let page = log.query(&q).await.unwrap();
            assert!(page.events.len() <= 5);
            seen.extend(ids(&page));
            pages += 1;
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(pages, 5);
        let expected: Vec<String> = (0..23).rev().map(|n| format!("req-{n}")).collect();
        assert_eq!(seen, expected);

        // A page that ends exactly at the last event has no next token.
        let q = AuditQuery {
            max_results: Some(23),
            ..Default::default()
        };
        assert_eq!(log.query(&q).await.unwrap().next_token, None);
        // maxResults is clamped, not rejected.
        let q = AuditQuery {
            max_results: Some(0),
            ..Default::default()
        };
        assert_eq!(log.query(&q).await.unwrap().events.len(), 1);
    }

    #[tokio::test]
    async fn trimming_keeps_only_the_newest() {
        let log = AuditLog::in_memory(5).unwrap();
        for n in 0..12 {
            log.record(event(n, ALICE, "ecs:RunTask", "Success"));
            if n % 4 == 0 {
                log.flush().await;
            }
        }
        let page = log.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(ids(&page), ["req-11", "req-10", "req-9", "req-8", "req-7"]);
        assert_eq!(log.stats().stored, 5);
        assert_eq!(log.stats().recorded, 12);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        let (release, gate) = std::sync::mpsc::channel();
        let log = AuditLog::in_memory_with(1_000, 4, Some(gate)).unwrap();
        let started = Instant::now();
        for n in 0..10 {
            log.record(event(n, ALICE, "ecs:RunTask", "Success"));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let stats = log.stats();
        assert_eq!((stats.recorded, stats.dropped), (4, 6));
        release.send(()).unwrap();
        let page = log.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(ids(&page), ["req-3", "req-2", "req-1", "req-0"]);
        assert_eq!(
            log.stats(),
            AuditStats {
                recorded: 4,
                dropped: 6,
                stored: 4
            }
        );
    }

    #[tokio::test]
    async fn reopening_the_file_keeps_events() {
        let dir = std::env::temp_dir().join(format!("gantry-audit-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.db");
        {
            let log = AuditLog::open(&path, 100).unwrap();
            for n in 0..6 {
                log.record(event(n, ALICE, "ecs:RunTask", "Success"));
            }
            // No flush: dropping the last handle writes what is queued.
        }
        {
            let log = AuditLog::open(&path, 100).unwrap();
            assert_eq!(log.stats().stored, 6);
            log.record(event(6, BOB, "ecs:StopTask", "Success"));
            let page = log.query(&AuditQuery::default()).await.unwrap();
            assert_eq!(page.events.len(), 7);
            assert_eq!(page.events[0].request_id, "req-6");
        }
        {
            // A smaller bound trims at open.
            let log = AuditLog::open(&path, 3).unwrap();
            assert_eq!(log.stats().stored, 3);
            let page = log.query(&AuditQuery::default()).await.unwrap();
            assert_eq!(ids(&page), ["req-6", "req-5", "req-4"]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn invalid_token_is_rejected() {
        let log = sample().await;
        for bad in ["garbage", "", "!!!", &encode_token(0), "Z2FudHJ5OjU"] {
            let q = AuditQuery {
                next_token: Some(bad.to_string()),
                ..Default::default()
            };
            assert_eq!(log.query(&q).await.unwrap_err(), INVALID_TOKEN, "{bad}");
        }
        let q = AuditQuery {
            next_token: Some(encode_token(5)),
            ..Default::default()
        };
        assert_eq!(log.query(&q).await.unwrap().events.len(), 4);
    }

    #[tokio::test]
    async fn in_memory_removes_its_file() {
        let log = AuditLog::in_memory(10).unwrap();
        let path = log.inner._temp.as_ref().unwrap().0.clone();
        log.record(event(1, ALICE, "ecs:RunTask", "Success"));
        log.flush().await;
        assert!(path.exists());
        drop(log);
        assert!(!path.exists());
    }
}
