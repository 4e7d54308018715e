//! Container output filed as CloudWatch Logs files it (log groups, their streams, events of a
//! timestamp and a message), with bounded growth. This crate stores and reads; it knows no
//! HTTP and no AWS wire format: `gantry-control` serves it as the CloudWatch Logs API.
//!
//! # Bounded growth
//!
//! Two things delete events, and neither does it silently.
//!
//! - **A size cap over the whole store** ([`LogLimits::max_bytes`], 1 GiB by default). An event
//!   counts as the UTF-8 bytes of its message plus [`EVENT_OVERHEAD_BYTES`] (CloudWatch's own
//!   per-event accounting), kept as a running total rather than counted by scanning. When an
//!   append would take the total over the cap, the oldest events by ingestion order are
//!   deleted, whatever their group, until the total including the new batch is under the
//!   low-water mark ([`LogLimits::low_water_percent`], 90 %): eviction then happens once per
//!   tenth of the cap ingested, not at every append. The events being appended are never
//!   evicted to make room for themselves; a single batch larger than the whole cap keeps its
//!   newest events.
//! - **Retention per log group** ([`LogBackend::set_retention`], in days, only the values
//!   CloudWatch accepts: [`RETENTION_DAYS`]). [`LogBackend::enforce_retention`], run
//!   periodically by the caller, deletes the events of such groups whose timestamp is older
//!   than the retention. Groups without retention keep their events until the cap evicts them.
//!
//! Every eviction is added to [`LogStats`] (events and bytes, by cause, kept across restarts)
//! and logged once per eviction batch with `tracing::warn!`, naming the groups and why. Readers
//! get no marker in the stream itself: a cursor that pointed into evicted events continues at
//! the oldest event still stored, and the stats and the warning are how an operator learns
//! that output was dropped. A stream left without events is forgotten once it has received
//! nothing for an hour (with one stream per container and task, keeping them would be
//! unbounded growth again; a live task's stream stays, so a reader following it sees no
//! events rather than "not found"); a group stays, with its
//! retention and no stored bytes, as CloudWatch keeps an emptied group.
//!
//! The cap bounds what is counted, not the file: SQLite's pages and index add some tens of
//! percent on disk, and freed pages are reused rather than returned to the file system.
//!
//! # Several control-plane replicas
//!
//! An event is keyed by (group, stream, sequence); the sequence is assigned by the backend that
//! stores the event and is all a cursor holds, so the API layer never depends on where events
//! live. With several replicas each keeps a whole copy in its own backend and answers reads
//! from it; they copy each other's changes through a *journal*. A backend told its origin
//! ([`LogBackend::journal_as`], the replica's id) numbers every change it makes itself — each
//! appended event, and each group or stream made, removed, tagged or given a retention — with
//! a journal sequence of its own (contiguous, never reused) and keeps that number with the
//! change. Another replica reads an origin's changes in order past the last one it holds
//! ([`LogBackend::journal`]) and applies them ([`LogBackend::apply_journal`]), which records
//! them under the same origin and sequences: so a copy can be read on from any replica that
//! holds it, not only from its origin. Events appended with a batch id (the agent's) are stored
//! once: a batch sent again (after a failover, to this replica or to one that copied it) is
//! recognised ([`AppendReceipt::duplicate`]). The cap and retention stay per replica.

mod format;
mod sqlite;

pub use sqlite::SqliteLogBackend;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one event costs on top of its message's bytes, as CloudWatch Logs counts a batch
/// (`PutLogEvents`: the sum of the messages' UTF-8 bytes plus 26 bytes per event).
pub const EVENT_OVERHEAD_BYTES: u64 = 26;

/// The retention periods, in days, that CloudWatch Logs accepts (`PutRetentionPolicy`).
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// About how many bytes of messages a journal page holds at most.
pub const JOURNAL_PAGE_BYTES: usize = 4 << 20;

/// How long changes other than events stay in the journal for replicas that were away.
pub const JOURNAL_CHANGES_KEPT_MS: i64 = 30 * 86_400_000;

/// The most tags a log group may carry (CloudWatch's limit).
pub const MAX_TAGS: usize = 50;

/// The storage classes CloudWatch Logs names (`LogGroupClass`). Gantry stores every class
/// the same way; the class is kept so that it is described as it was created.
pub const LOG_GROUP_CLASSES: [&str; 4] =
    ["STANDARD", "INFREQUENT_ACCESS", "DELIVERY", "ESSENTIALS"];

/// The class of a group created without one, and of groups created by their first event.
pub const DEFAULT_LOG_GROUP_CLASS: &str = "STANDARD";

/// Default cap on the whole store: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Default low-water mark, in percent of the cap, that eviction brings the store down to.
pub const DEFAULT_LOW_WATER_PERCENT: u8 = 90;

/// The bytes one event counts for against the cap and in `storedBytes`.
pub fn event_bytes(message: &str) -> u64 {
    message.len() as u64 + EVENT_OVERHEAD_BYTES
}

pub type LogResult<T> = Result<T, LogError>;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log group {0} does not exist")]
    GroupNotFound(String),
    #[error("log stream {stream} does not exist in log group {group}")]
    StreamNotFound { group: String, stream: String },
    #[error("log group {0} already exists")]
    GroupAlreadyExists(String),
    #[error("log stream {stream} already exists in log group {group}")]
    StreamAlreadyExists { group: String, stream: String },
    #[error("log group {group} would have {count} tags; at most {MAX_TAGS} are allowed")]
    TooManyTags { group: String, count: usize },
    #[error(
        "{0} days is not a retention period CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, \
         120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)"
    )]
    InvalidRetention(u32),
    #[error("invalid log store limits: {0}")]
    InvalidLimits(String),
    #[error("the log store failed: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for LogError {
    fn from(e: rusqlite::Error) -> Self {
        LogError::Storage(e.to_string())
    }
}

/// How large the store may grow, and how far eviction brings it back down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// The cap over all groups, in counted bytes (see [`event_bytes`]).
    pub max_bytes: u64,
    /// Eviction deletes the oldest events until the store (with the incoming batch) is at
    /// most this percentage of `max_bytes`, so that it does not run again at the next append.
    pub low_water_percent: u8,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            low_water_percent: DEFAULT_LOW_WATER_PERCENT,
        }
    }
}

impl LogLimits {
    /// A cap of `max_bytes` with the default low-water mark.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        LogLimits {
            max_bytes,
            ..LogLimits::default()
        }
    }

    pub fn validate(&self) -> LogResult<()> {
        if self.max_bytes == 0 {
            return Err(LogError::InvalidLimits(
                "the cap must be at least one byte".into(),
            ));
        }
        if !(1..=100).contains(&self.low_water_percent) {
            return Err(LogError::InvalidLimits(format!(
                "the low-water mark must be 1 to 100 percent of the cap, not {}",
                self.low_water_percent
            )));
        }
        Ok(())
    }

    pub fn low_water_bytes(&self) -> u64 {
        let low = u128::from(self.max_bytes) * u128::from(self.low_water_percent) / 100;
        u64::try_from(low).unwrap_or(self.max_bytes)
    }
}

/// One event as a writer hands it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub group: String,
    pub stream: String,
    /// Milliseconds since the epoch, as CloudWatch Logs counts them.
    pub timestamp: i64,
    pub message: String,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in ingestion order, unique in the backend that assigned it; cursors are
    /// sequences.
    pub sequence: i64,
    pub stream: String,
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: String,
}

/// A number of events and the bytes they count for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    pub events: u64,
    pub bytes: u64,
}

impl Volume {
    pub(crate) fn add(&mut self, other: Volume) {
        self.events += other.events;
        self.bytes += other.bytes;
    }

    pub(crate) fn remove(&mut self, other: Volume) {
        self.events = self.events.saturating_sub(other.events);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }
}

/// What one eviction (by the cap, or a retention sweep) deleted, and from which groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eviction {
    pub dropped: Volume,
    /// The groups that lost events, sorted.
    pub groups: Vec<String>,
}

impl Eviction {
    pub fn is_empty(&self) -> bool {
        self.dropped.events == 0
    }
}

/// What an append stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The events and bytes stored.
    pub stored: Volume,
    /// The sequences of the first and last stored event (they are consecutive in between).
    pub first_sequence: Option<i64>,
    pub last_sequence: Option<i64>,
    /// The ingestion time given to every stored event, in milliseconds since the epoch.
    pub ingestion_time: i64,
    /// What the cap evicted to make room, including events of this batch that would not fit
    /// even into an empty store.
    pub evicted: Eviction,
    /// Where the batch's last event stands in the journal (origin, journal sequence), when the
    /// backend journals: for a duplicate batch, where its first copy stands.
    pub journal_position: Option<(String, i64)>,
    /// The batch id was already stored: nothing was appended.
    pub duplicate: bool,
}

/// One change in an origin's journal (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// The origin's journal sequence.
    pub seq: i64,
    pub change: Change,
}

/// What a journal entry changes. Applying a change that has already happened (a group that
/// exists, a stream already gone) is not an error: replicas converge, whatever their order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Change {
    #[serde(rename_all = "camelCase")]
    Event {
        group: String,
        stream: String,
        timestamp: i64,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    EnsureStream {
        group: String,
        stream: String,
        create_group: bool,
    },
    #[serde(rename_all = "camelCase")]
    CreateGroup {
        name: String,
        tags: BTreeMap<String, String>,
        class: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    DeleteGroup { name: String },
    #[serde(rename_all = "camelCase")]
    CreateStream { group: String, stream: String },
    #[serde(rename_all = "camelCase")]
    DeleteStream { group: String, stream: String },
    #[serde(rename_all = "camelCase")]
    SetRetention { group: String, days: Option<u32> },
    #[serde(rename_all = "camelCase")]
    TagGroup {
        group: String,
        tags: BTreeMap<String, String>,
    },
    #[serde(rename_all = "camelCase")]
    UntagGroup { group: String, keys: Vec<String> },
}

/// A page of one origin's journal as a backend holds it: whole batches only (a batch is
/// stored everywhere entirely or not at all), at most [`JOURNAL_PAGE_BYTES`] of messages
/// unless one batch alone is larger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalPage {
    pub entries: Vec<JournalEntry>,
    /// How far a reader that applied `entries` has read: the last entry's sequence, or, when
    /// the page holds everything there was, the origin's newest sequence here (past any
    /// entries deleted since).
    pub read_to: i64,
}

/// Where a stream read starts. Sequences are exclusive bounds; results always come back in
/// ascending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCursor {
    /// The first events after `after` (0: from the oldest event).
    Forward { after: i64 },
    /// The last events before `before` (`None`: up to the newest event).
    Backward { before: Option<i64> },
}

/// Event timestamps (ms) a stream read keeps: at or after `start`, before `end`, as
/// GetLogEvents counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// Which events of a group a group read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupQuery {
    /// Only these streams.
    pub stream_names: Option<Vec<String>>,
    /// Only streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Only events with a timestamp at or after this (ms).
    pub start_time: Option<i64>,
    /// Only events with a timestamp at or before this (ms).
    pub end_time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    /// When the stream was created: by `create_stream`, or by its first event.
    pub creation_time: i64,
    /// The oldest and newest stored timestamps and the last ingestion time; `None` for a
    /// stream that has never received an event (created empty).
    pub first_event_timestamp: Option<i64>,
    pub last_event_timestamp: Option<i64>,
    pub last_ingestion_time: Option<i64>,
    pub stored_events: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    /// When the group was created: by `create_group`, or by its first event.
    pub creation_time: i64,
    pub retention_days: Option<u32>,
    /// One of [`LOG_GROUP_CLASSES`].
    pub class: String,
    pub stored_events: u64,
    pub stored_bytes: u64,
}

/// A group as `create_group` makes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGroup {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// One of [`LOG_GROUP_CLASSES`]; `None`: [`DEFAULT_LOG_GROUP_CLASS`].
    pub class: Option<String>,
}

/// One event of a `put_events` batch (its group and stream are the batch's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
}

/// The store's size and what it has dropped so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub max_bytes: u64,
    pub stored_bytes: u64,
    pub stored_events: u64,
    pub evicted_by_cap: Volume,
    pub evicted_by_retention: Volume,
}

/// Storage for log events. Object-safe through `async-trait` (as `KvStore` in
/// `gantry-store`) so the control plane holds an `Arc<dyn LogBackend>`; async rather than sync
/// methods run under `spawn_blocking` because the backends that come next (a fan-out over
/// replicas, a store shared through etcd) are network round trips, which should not hold a
/// blocking thread each. A backend with blocking I/O, like [`SqliteLogBackend`], moves it to
/// `spawn_blocking` itself, so no caller ever blocks the runtime.
#[async_trait]
pub trait LogBackend: Send + Sync {
    /// Store a batch in its order, creating groups and streams on their first event (as the
    /// `awslogs` driver does with `awslogs-create-group`), evicting by the cap first if needed.
    async fn append(&self, events: Vec<NewEvent>) -> LogResult<AppendReceipt> {
        self.append_batch(events, None).await
    }

    /// Up to `limit` events of one stream from `cursor`, oldest first.
    async fn read_stream(
        &self,
        group: &str,
        stream: &str,
        cursor: StreamCursor,
        limit: usize,
    ) -> LogResult<Vec<StoredEvent>> {
        self.read_stream_in(group, stream, cursor, TimeRange::default(), limit)
            .await
    }

    /// [`LogBackend::read_stream`] restricted to events whose timestamp is in `range`
    /// (GetLogEvents' `startTime` and `endTime`): the cursor still counts in sequences, so
    /// paging is the same with or without a range.
    async fn read_stream_in(
        &self,
        group: &str,
        stream: &str,
        cursor: StreamCursor,
        range: TimeRange,
        limit: usize,
    ) -> LogResult<Vec<StoredEvent>>;

    /// Up to `limit` events of a group with a sequence above `after`, in sequence order.
    async fn read_group(
        &self,
        group: &str,
        query: &GroupQuery,
        after: i64,
        limit: usize,
    ) -> LogResult<Vec<StoredEvent>>;

    /// The group's streams, by name.
    async fn list_streams(&self, group: &str) -> LogResult<Vec<StreamInfo>>;

    /// All groups, by name.
    async fn list_groups(&self) -> LogResult<Vec<GroupInfo>>;

    /// One group, if it exists.
    async fn group(&self, name: &str) -> LogResult<Option<GroupInfo>>;

    /// Set (`Some`, one of [`RETENTION_DAYS`]) or clear (`None`) a group's retention.
    async fn set_retention(&self, group: &str, days: Option<u32>) -> LogResult<()>;

    /// Delete the events older than their group's retention at `now_ms`.
    async fn enforce_retention(&self, now_ms: i64) -> LogResult<Eviction>;

    async fn stats(&self) -> LogResult<LogStats>;

    /// Create an empty group ([`LogError::GroupAlreadyExists`] if it exists).
    async fn create_group(&self, group: NewGroup) -> LogResult<()>;

    /// Delete a group with its streams, events and tags; what it held. Deleted events are
    /// not evictions: they leave the stored totals without entering [`LogStats`]' counts.
    async fn delete_group(&self, name: &str) -> LogResult<Volume>;

    /// Create an empty stream in an existing group ([`LogError::GroupNotFound`],
    /// [`LogError::StreamAlreadyExists`]).
    async fn create_stream(&self, group: &str, stream: &str) -> LogResult<()>;

    /// Delete a stream and its events; what it held.
    async fn delete_stream(&self, group: &str, stream: &str) -> LogResult<Volume>;

    /// Make sure a stream exists before a writer starts, as the `awslogs` driver does when a
    /// container starts: the stream is created if missing; a missing group is created only
    /// with `create_group` (`awslogs-create-group`), else [`LogError::GroupNotFound`].
    async fn ensure_stream(&self, group: &str, stream: &str, create_group: bool) -> LogResult<()>;

    /// Append a batch to one stream that must exist (`PutLogEvents`): unlike [`append`],
    /// nothing is created; [`LogError::GroupNotFound`] or [`LogError::StreamNotFound`].
    ///
    /// [`append`]: LogBackend::append
    async fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: Vec<PutEvent>,
    ) -> LogResult<AppendReceipt>;

    /// Add tags to a group, replacing the values of keys it already has
    /// ([`LogError::TooManyTags`] past [`MAX_TAGS`], changing nothing).
    async fn tag_group(&self, name: &str, tags: BTreeMap<String, String>) -> LogResult<()>;

    /// Remove tags from a group (keys it does not have are ignored).
    async fn untag_group(&self, name: &str, keys: Vec<String>) -> LogResult<()>;

    /// A group's tags.
    async fn group_tags(&self, name: &str) -> LogResult<BTreeMap<String, String>>;

    /// [`append`](LogBackend::append) of a batch with the writer's id for it: a batch whose
    /// id is already stored (under any origin) is not stored again
    /// ([`AppendReceipt::duplicate`]).
    async fn append_batch(
        &self,
        events: Vec<NewEvent>,
        batch: Option<String>,
    ) -> LogResult<AppendReceipt>;

    /// Journal every change made from now on as `replica`'s; the origin name this backend's
    /// changes carry: the replica's id and a suffix chosen when this store was made, so that a
    /// replica whose store is new (lost, replaced) starts a journal no one holds any of.
    async fn journal_as(&self, replica: &str) -> LogResult<String>;

    /// Up to `limit` of `origin`'s journal entries after sequence `after`, in order.
    async fn journal(&self, origin: &str, after: i64, limit: usize) -> LogResult<JournalPage>;

    /// Apply a page of `origin`'s journal read from another replica: entries at or before what
    /// is already held from `origin` are skipped; the rest are stored under `origin` with their
    /// sequences. How many were applied.
    async fn apply_journal(&self, origin: &str, page: JournalPage) -> LogResult<usize>;

    /// Per origin, the newest journal sequence held here.
    async fn journal_positions(&self) -> LogResult<BTreeMap<String, i64>>;
}

/// Whether CloudWatch Logs accepts `days` as a retention period.
pub fn is_valid_retention(days: u32) -> bool {
    RETENTION_DAYS.contains(&days)
}

#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod tests;
