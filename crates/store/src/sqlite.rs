//! The embedded backend: one SQLite file in WAL mode with three tables.
//!
//! - `kv`: the current state, one row per live key.
//! - `meta`: one row holding the global revision and the compaction point of the change log.
//! - `changes`: every write of the last N revisions, so a watcher can resume from a past
//!   revision (and a lagging watcher can catch up) without the store keeping history forever.
//!
//! Writes are group-committed ([`Inner::drain`]): transactions waiting while one commits go
//! into the next SQLite transaction together, in order, and share its fsync.
//!
//! Watchers are fed from a `broadcast` of committed transactions. It is sent while the
//! connection lock is still held, so broadcast order is revision order, and anything a watcher
//! misses in the broadcast is, by then, already readable from `changes`.
//!
//! The process that opens the file is assumed to be its only writer: writes made by another
//! process would be durable but invisible to this process's watchers. Other processes may
//! read it alongside with [`SqliteStore::open_read_only`] (`gantry backup` does).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{
    named_params, params, Connection, OpenFlags, OptionalExtension, TransactionBehavior,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use crate::sink::{ReceiverGone, Sink};
use crate::{
    BatchWatcher, Compare, KeyValue, KvStore, StoreError, StoreResult, Txn, TxnOp, TxnResponse,
    WatchEvent, Watcher,
};

/// Committed transactions buffered for watchers; a watcher further behind re-reads `changes`.
const BROADCAST_CAPACITY: usize = 1024;
/// Events buffered per watcher before its task waits for the consumer.
const WATCH_CAPACITY: usize = 1024;
/// Revisions read per query when replaying `changes`, to bound memory on a long replay.
const REPLAY_PAGE_REVISIONS: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key             TEXT PRIMARY KEY NOT NULL,
    value           BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id               INTEGER PRIMARY KEY CHECK (id = 0),
    revision         INTEGER NOT NULL,
    -- Log entries with revision <= compact_revision have been pruned.
    compact_revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision, compact_revision) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS changes (
    id              INTEGER PRIMARY KEY,
    revision        INTEGER NOT NULL,
    key             TEXT NOT NULL,
    value           BLOB,    -- NULL for a delete
    create_revision INTEGER  -- NULL for a delete
);
CREATE INDEX IF NOT EXISTS changes_by_revision ON changes (revision);
";

/// `key` starts with `:prefix`. Keys are UTF-8, which never contains the byte 0xFF, so every key
/// with the prefix sorts (bytewise, SQLite's default) in `[prefix, prefix || 0xFF)` and no
/// other key does. Unlike `LIKE`, `%` and `_` in the prefix are literal and the index is used.
const UNDER_PREFIX: &str = "key >= :prefix AND key < (:prefix || CAST(X'FF' AS TEXT))";

/// A [`KvStore`] in a single SQLite file. See the module docs for the layout.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    committed: broadcast::Sender<Arc<Committed>>,
    history_limit: AtomicI64,
    /// Transactions waiting for the next group commit.
    queue: Mutex<Vec<Pending>>,
}

/// A transaction waiting to be committed, and where its answer goes.
struct Pending {
    txn: Txn,
    reply: tokio::sync::oneshot::Sender<StoreResult<TxnResponse>>,
}

/// The effect of one writing transaction, as broadcast to watchers.
struct Committed {
    revision: i64,
    events: Vec<WatchEvent>,
}

impl SqliteStore {
    /// Revisions of change history kept for watch replay unless changed with
    /// [`SqliteStore::with_history_limit`].
    pub const DEFAULT_HISTORY_LIMIT: i64 = 10_000;

    /// Opens (creating if needed, parent directories included) the store at `path`.
    /// Every acknowledged write is fsynced before `txn` returns.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("creating directory {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still durable (rollback journal), just slower and with readers blocking writers.
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL journal mode");
        }
        // FULL fsyncs the WAL on every commit; `fullfsync` makes that real on macOS.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.pragma_update(None, "fullfsync", true)
            .map_err(db_err)?;
        Self::init(conn)
    }

    /// Opens an existing store for reading only, safely next to the process that owns it
    /// (a running `gantry server`): nothing is created or written, not even the schema, and
    /// in WAL mode readers never block the owner's writes. `range` reads one consistent
    /// snapshot; `txn` fails.
    pub fn open_read_only(path: &Path) -> StoreResult<Self> {
        if !path.is_file() {
            return Err(StoreError::Backend(format!(
                "there is no store at {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        read_meta(&conn).map_err(|e| {
            StoreError::Backend(format!(
                "{} is not a Gantry store (sqlite: {e})",
                path.display()
            ))
        })?;
        Ok(Self::wrap(conn))
    }

    /// A private, non-durable store for tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    /// Keeps change history for the last `revisions` revisions (at least 1); watches from
    /// older revisions fail with [`StoreError::Compacted`]. Applied from the next write on.
    pub fn with_history_limit(self, revisions: i64) -> Self {
        self.inner
            .history_limit
            .store(revisions.max(1), Ordering::Relaxed);
        self
    }

    /// Discards change history up to `revision` at once (as etcd's compaction does): watches
    /// from before it fail with [`StoreError::Compacted`], and a watcher still owed any of it
    /// ends.
    pub async fn compact(&self, revision: i64) -> StoreResult<()> {
        self.blocking(move |inner| {
            let conn = inner.lock()?;
            conn.execute("DELETE FROM changes WHERE revision <= ?1", [revision])
                .map_err(db_err)?;
            conn.execute(
                "UPDATE meta SET compact_revision = max(compact_revision, min(revision, ?1)) WHERE id = 0",
                [revision],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        conn.execute_batch(&format!("BEGIN; {SCHEMA} COMMIT;"))
            .map_err(db_err)?;
        Ok(Self::wrap(conn))
    }

    fn wrap(conn: Connection) -> Self {
        let (committed, _) = broadcast::channel(BROADCAST_CAPACITY);
        SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                committed,
                history_limit: AtomicI64::new(Self::DEFAULT_HISTORY_LIMIT),
                queue: Mutex::new(Vec::new()),
            }),
        }
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    {
        run_blocking(Arc::clone(&self.inner), f).await
    }
}

/// Runs SQLite work on the blocking pool: a commit waits for fsync, which must not stall the
/// async worker threads.
async fn run_blocking<T, F>(inner: Arc<Inner>, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&inner))
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

impl Inner {
    fn lock(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("sqlite connection mutex poisoned".into()))
    }

    /// Group commit: takes every waiting transaction, applies them in order in one SQLite
    /// transaction (each with its own revision, each seeing the ones before it, exactly as if
    /// committed one by one) and commits once: one fsync for the group. Each caller is
    /// answered only after that commit, so an acknowledged write is still on disk. A drainer
    /// that finds the queue empty (an earlier one took its transaction) does nothing.
    fn drain(&self) {
        let mut conn = match self.lock() {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                for p in self.take_queue() {
                    let _ = p.reply.send(Err(StoreError::Backend(message.clone())));
                }
                return;
            }
        };
        let group = self.take_queue();
        if group.is_empty() {
            return;
        }
        let history_limit = self.history_limit.load(Ordering::Relaxed);
        match apply_group(&mut conn, &group, history_limit) {
            Ok(results) => {
                for (pending, (response, committed)) in group.into_iter().zip(results) {
                    if let Some(committed) = committed {
                        // Sent before unlocking so broadcast order is commit order. An error
                        // only means nobody is watching.
                        let _ = self.committed.send(Arc::new(committed));
                    }
                    let _ = pending.reply.send(Ok(response));
                }
            }
            Err(e) => {
                // Rolled back whole: nothing of the group happened.
                let message = format!("sqlite: {e}");
                for pending in group {
                    let _ = pending
                        .reply
                        .send(Err(StoreError::Backend(message.clone())));
                }
            }
        }
    }

    fn take_queue(&self) -> Vec<Pending> {
        match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

/// One SQLite transaction for a group of store transactions; rolled back whole on any error.
fn apply_group(
    conn: &mut Connection,
    group: &[Pending],
    history_limit: i64,
) -> rusqlite::Result<Vec<(TxnResponse, Option<Committed>)>> {
    // IMMEDIATE takes the write lock up front, so compares and writes see the same state.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for pending in group {
        results.push(apply_in(&tx, &pending.txn, history_limit)?);
    }
    if results.iter().any(|(_, committed)| committed.is_some()) {
        tx.commit()?;
    }
    Ok(results)
}

/// (revision, compact_revision)
fn read_meta(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT revision, compact_revision FROM meta WHERE id = 0",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

fn row_to_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

/// Applies one transaction inside the open SQLite transaction `tx` (which may hold others of
/// the same group before it): compares, writes, change log, revision. Writes nothing when the
/// chosen branch changes nothing.
fn apply_in(
    tx: &rusqlite::Transaction<'_>,
    txn: &Txn,
    history_limit: i64,
) -> rusqlite::Result<(TxnResponse, Option<Committed>)> {
    let (current, compact_revision) = read_meta(tx)?;

    let mut succeeded = true;
    for compare in &txn.compare {
        match compare {
            Compare::ModRevision { key, rev } => {
                let actual: Option<i64> = tx
                    .query_row("SELECT mod_revision FROM kv WHERE key = ?1", [key], |row| {
                        row.get(0)
                    })
                    .optional()?;
                // Real revisions start at 1, so 0 can only match a missing key.
                succeeded &= actual.unwrap_or(0) == *rev;
            }
        }
    }

    let revision = current + 1;
    let mut events = Vec::new();
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for op in ops {
        match op {
            TxnOp::Put { key, value } => {
                let create_revision: i64 = tx.query_row(
                    "INSERT INTO kv (key, value, create_revision, mod_revision)
                     VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT (key) DO UPDATE
                         SET value = excluded.value, mod_revision = excluded.mod_revision
                     RETURNING create_revision",
                    params![key, value, revision],
                    |row| row.get(0),
                )?;
                events.push(WatchEvent::Put(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                }));
            }
            TxnOp::Delete { key } => {
                if tx.execute("DELETE FROM kv WHERE key = ?1", [key])? > 0 {
                    events.push(WatchEvent::Delete {
                        key: key.clone(),
                        mod_revision: revision,
                    });
                }
            }
        }
    }

    if events.is_empty() {
        // Nothing changed (a put always changes something, so nothing was written): no
        // revision is spent.
        return Ok((
            TxnResponse {
                succeeded,
                revision: current,
            },
            None,
        ));
    }

    {
        let mut log = tx.prepare_cached(
            "INSERT INTO changes (revision, key, value, create_revision) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for event in &events {
            match event {
                WatchEvent::Put(kv) => {
                    log.execute(params![revision, kv.key, kv.value, kv.create_revision])?
                }
                WatchEvent::Delete { key, .. } => {
                    log.execute(params![revision, key, None::<Vec<u8>>, None::<i64>])?
                }
            };
        }
    }
    let horizon = revision - history_limit;
    if horizon > compact_revision {
        tx.execute("DELETE FROM changes WHERE revision <= ?1", [horizon])?;
    }
    tx.execute(
        "UPDATE meta SET revision = ?1, compact_revision = max(compact_revision, ?2) WHERE id = 0",
        params![revision, horizon],
    )?;

    Ok((
        TxnResponse {
            succeeded,
            revision,
        },
        Some(Committed { revision, events }),
    ))
}

/// A slice of the change log, read in one transaction.
struct Page {
    events: Vec<WatchEvent>,
    /// Every logged change under the prefix with revision <= `upto` has been read.
    upto: i64,
    /// The store revision at the time of the read.
    current: i64,
}

/// Logged changes under `prefix` with revision in `(after, after + page]`.
fn read_changes(conn: &mut Connection, prefix: &str, after: i64) -> StoreResult<Page> {
    let tx = conn.transaction().map_err(db_err)?;
    let (current, compact_revision) = read_meta(&tx).map_err(db_err)?;
    if after < compact_revision {
        return Err(StoreError::Compacted(after));
    }
    let upto = current.min(after.saturating_add(REPLAY_PAGE_REVISIONS));
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT revision, key, value, create_revision FROM changes
             WHERE revision > :after AND revision <= :upto AND {UNDER_PREFIX}
             ORDER BY revision, id"
        ))
        .map_err(db_err)?;
    let events = stmt
        .query_map(
            named_params! {":after": after, ":upto": upto, ":prefix": prefix},
            |row| {
                let revision: i64 = row.get(0)?;
                let key: String = row.get(1)?;
                let value: Option<Vec<u8>> = row.get(2)?;
                let create_revision: Option<i64> = row.get(3)?;
                Ok(match (value, create_revision) {
                    (Some(value), Some(create_revision)) => WatchEvent::Put(KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: revision,
                    }),
                    _ => WatchEvent::Delete {
                        key,
                        mod_revision: revision,
                    },
                })
            },
        )
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    Ok(Page {
        events,
        upto,
        current,
    })
}

impl SqliteStore {
    async fn start_watch(
        &self,
        prefix: &str,
        from_revision: Option<i64>,
        out: Sink,
    ) -> StoreResult<()> {
        // Subscribed before the task first reads the log, so whatever commits from here on is
        // in the log by then or arrives live, possibly both (duplicates are skipped by rev).
        let live = self.inner.committed.subscribe();
        let (current, compact_revision) = self
            .blocking(|inner| read_meta(&*inner.lock()?).map_err(db_err))
            .await?;
        let after = match from_revision {
            Some(rev) if rev < compact_revision => return Err(StoreError::Compacted(rev)),
            Some(rev) => rev,
            None => current,
        };
        // A weak handle: watchers must not keep a dropped store (and its file) open.
        let task = WatchTask {
            store: Arc::downgrade(&self.inner),
            prefix: prefix.to_owned(),
            last: after,
            out,
        };
        tokio::spawn(task.run(live, Arc::clone(&self.inner)));
        Ok(())
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            inner
                .lock()?
                .query_row(
                    "SELECT key, value, create_revision, mod_revision FROM kv WHERE key = ?1",
                    [key],
                    row_to_kv,
                )
                .optional()
                .map_err(db_err)
        })
        .await
    }

    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, i64)> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            let mut conn = inner.lock()?;
            let tx = conn.transaction().map_err(db_err)?;
            let (revision, _) = read_meta(&tx).map_err(db_err)?;
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT key, value, create_revision, mod_revision FROM kv
                     WHERE {UNDER_PREFIX} ORDER BY key"
                ))
                .map_err(db_err)?;
            let kvs = stmt
                .query_map(named_params! {":prefix": prefix}, row_to_kv)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            Ok((kvs, revision))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.inner.queue.lock() {
            Ok(mut q) => q.push(Pending { txn, reply }),
            Err(poisoned) => poisoned.into_inner().push(Pending { txn, reply }),
        }
        // Every caller starts a drainer; whichever runs first commits everything queued by
        // then (see `Inner::drain`), the rest find nothing to do.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.drain());
        answer
            .await
            .map_err(|_| StoreError::Backend("the store dropped a transaction".into()))?
    }

    async fn watch(&self, prefix: &str, from_revision: Option<i64>) -> StoreResult<Watcher> {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        self.start_watch(prefix, from_revision, Sink::Events(tx))
            .await?;
        Ok(rx)
    }

    async fn watch_batches(
        &self,
        prefix: &str,
        from_revision: Option<i64>,
    ) -> StoreResult<BatchWatcher> {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        self.start_watch(prefix, from_revision, Sink::Batches(tx))
            .await?;
        Ok(rx)
    }

    async fn revision(&self) -> StoreResult<i64> {
        self.blocking(|inner| {
            read_meta(&*inner.lock()?)
                .map(|(rev, _)| rev)
                .map_err(db_err)
        })
        .await
    }
}

/// Forwards one watch's events: replays the log up to the present, then follows the
/// broadcast, and goes back to the log whenever the broadcast has dropped events for it.
struct WatchTask {
    store: Weak<Inner>,
    prefix: String,
    /// Every event with revision <= `last` has been forwarded (or was before the watch).
    last: i64,
    out: Sink,
}

impl From<ReceiverGone> for Stop {
    fn from(_: ReceiverGone) -> Stop {
        Stop::ReceiverDropped
    }
}

enum Stop {
    ReceiverDropped,
    StoreDropped,
    Failed(StoreError),
}

impl WatchTask {
    /// `store` is held for the first log read only, so that a store dropped right after
    /// `watch` returned still delivers what it committed before.
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Committed>>, store: Arc<Inner>) {
        match self.pump(&mut live, store).await {
            Stop::ReceiverDropped | Stop::StoreDropped => {}
            // Ending the stream is the only way to say "you missed events"; the consumer has
            // to re-list and watch again, exactly as after an etcd compaction.
            Stop::Failed(error) => {
                tracing::warn!(prefix = %self.prefix, last = self.last, %error, "watch ended")
            }
        }
    }

    async fn pump(
        &mut self,
        live: &mut broadcast::Receiver<Arc<Committed>>,
        store: Arc<Inner>,
    ) -> Stop {
        let mut store = Some(store);
        loop {
            if let Err(stop) = self.replay(store.take()).await {
                return stop;
            }
            loop {
                let received = tokio::select! {
                    _ = self.out.closed() => return Stop::ReceiverDropped,
                    received = live.recv() => received,
                };
                match received {
                    Ok(committed) if committed.revision <= self.last => {}
                    Ok(committed) => {
                        let events = committed
                            .events
                            .iter()
                            .filter(|e| e.key().starts_with(&self.prefix))
                            .cloned()
                            .collect();
                        if self.out.send(committed.revision, events).await.is_err() {
                            return Stop::ReceiverDropped;
                        }
                        self.last = committed.revision;
                    }
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Stop::StoreDropped,
                }
            }
        }
    }

    /// Forwards logged changes after `last` until caught up with the store's revision.
    async fn replay(&mut self, mut store: Option<Arc<Inner>>) -> Result<(), Stop> {
        loop {
            let inner = match store.take() {
                Some(inner) => inner,
                None => self.store.upgrade().ok_or(Stop::StoreDropped)?,
            };
            let (prefix, after) = (self.prefix.clone(), self.last);
            let page = run_blocking(inner, move |inner| {
                read_changes(&mut *inner.lock()?, &prefix, after)
            })
            .await
            .map_err(Stop::Failed)?;
            let mut events = page.events.into_iter().peekable();
            while let Some(first) = events.next() {
                let revision = first.revision();
                let mut batch = vec![first];
                while let Some(more) = events.next_if(|e| e.revision() == revision) {
                    batch.push(more);
                }
                self.out.send(revision, batch).await?;
            }
            self.last = self.last.max(page.upto);
            if page.upto >= page.current {
                return Ok(());
            }
        }
    }
}
