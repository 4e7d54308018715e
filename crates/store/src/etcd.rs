//! The distributed backend: etcd v3, through `etcd-client`.
//!
//! Gantry's keys live under a namespace (`gantry/` unless configured), so one etcd cluster
//! can hold other data too. The trait maps onto etcd one to one: the store revision is etcd's
//! revision, `create_revision`/`mod_revision` are etcd's, a [`Txn`] is one etcd transaction
//! (compares on mod revision; a missing key has mod revision 0), and a watch is an etcd
//! watch from a start revision, so what the trait promises of revisions holds on both
//! backends. The differences are handled here:
//!
//! - A range is read in pages at one revision (etcd answers at most a few MiB per message),
//!   so a listing is still one consistent snapshot.
//! - A transaction naming a key twice is refused by etcd; the trait applies operations in
//!   order, so only the last operation on each key is sent (the same final state).
//! - Every call is bounded by the request timeout: with etcd unreachable or without quorum
//!   (`require_leader`), a call fails in seconds instead of hanging. A write that timed out
//!   may or may not have committed; it is never reported as done.
//! - A watch whose connection breaks is re-created from the revision after the last one it
//!   delivered, so consumers see no gap and no duplicate; when etcd has compacted that
//!   revision away the watch ends (the consumer re-lists), as on SQLite.
//! - etcd's revision is global: writes outside the namespace bump it too, and a watch under
//!   the namespace never sees those revisions. etcd's progress notifications could say
//!   "nothing under the prefix up to revision R", but etcd before 3.4.31 / 3.5.13 (Debian
//!   ships 3.4.23) may send one ahead of events still queued for the watch, so they are
//!   ignored; give Gantry an etcd cluster (or at least a namespace nobody else writes near)
//!   of its own.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType,
    GetOptions, Txn as EtcdTxn, TxnOp as EtcdTxnOp, WatchOptions,
};
use tokio::sync::{mpsc, watch};

use crate::sink::Sink;
use crate::{
    BatchWatcher, Compare, KeyValue, KvStore, StoreError, StoreResult, Txn, TxnOp, TxnResponse,
    WatchEvent, Watcher,
};

/// Keys read per request when listing (at one revision, so the listing stays consistent).
const RANGE_PAGE: i64 = 500;
/// Largest message accepted from etcd (a page of large records, or a watch response holding
/// a big transaction).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Events buffered per watcher before its task waits for the consumer.
const WATCH_CAPACITY: usize = 1024;

/// How to reach etcd and where Gantry's keys live in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs or `host:port`s of the members.
    pub endpoints: Vec<String>,
    /// Prefix of every key Gantry writes; ends with `/`.
    pub namespace: String,
    /// Bound on every call (and on connecting).
    pub request_timeout: Duration,
}

impl EtcdConfig {
    pub const DEFAULT_NAMESPACE: &'static str = "gantry/";
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            namespace: Self::DEFAULT_NAMESPACE.to_string(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A [`KvStore`] on an etcd v3 cluster. See the module docs.
pub struct EtcdStore {
    client: Client,
    namespace: String,
    timeout: Duration,
    /// Dropped with the store, which ends its watches.
    alive: watch::Sender<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster. Connections are made lazily by the client; the first call
    /// tells whether etcd is reachable.
    pub async fn connect(config: &EtcdConfig) -> StoreResult<EtcdStore> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoint given".into()));
        }
        if config.namespace.is_empty() || !config.namespace.ends_with('/') {
            return Err(StoreError::Backend(format!(
                "the etcd namespace must be non-empty and end with '/', not {:?}",
                config.namespace
            )));
        }
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster's leader refuses at once rather than serving
            // stale reads or holding writes.
            .with_require_leader(true);
        let client = tokio::time::timeout(
            config.request_timeout,
            Client::connect(&endpoints, Some(options)),
        )
        .await
        .map_err(|_| timeout_error(config.request_timeout))?
        .map_err(etcd_error)?;
        Ok(EtcdStore {
            client,
            namespace: config.namespace.clone(),
            timeout: config.request_timeout,
            alive: watch::channel(()).0,
        })
    }

    /// The etcd client (for leases and elections next to the store).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace prefix of every key.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Discards history up to `revision` (etcd's compaction): watches from before it fail
    /// with [`StoreError::Compacted`].
    pub async fn compact(&self, revision: i64) -> StoreResult<()> {
        let client = self.client.clone();
        call(self.timeout, Retry::Read, || {
            let mut kv = client.kv_client();
            async move {
                kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn full_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + key.len());
        k.extend_from_slice(self.namespace.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// A range read (`Retry::Read`) with a fresh client handle per try.
    async fn read(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> StoreResult<etcd_client::GetResponse> {
        let client = self.client.clone();
        call(self.timeout, Retry::Read, || {
            let mut kv = client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await
    }

    async fn start_watch(
        &self,
        prefix: &str,
        from_revision: Option<i64>,
        out: Sink,
    ) -> StoreResult<()> {
        let after = match from_revision {
            Some(rev) => {
                self.check_not_compacted(rev).await?;
                rev
            }
            None => self.revision().await?,
        };
        let start = self.full_key(prefix);
        let task = WatchTask {
            client: self.client.clone(),
            end: prefix_end(&start),
            start,
            namespace_len: self.namespace.len(),
            timeout: self.timeout,
            last: after,
            out,
            alive: self.alive.subscribe(),
        };
        tokio::spawn(task.run());
        Ok(())
    }

    /// Fails with [`StoreError::Compacted`] when a watch could not deliver every change after
    /// `after`. etcd answers a read at a revision older than its compaction with "required
    /// revision has been compacted" and one newer than its head with "future revision" (a
    /// watch from the future simply waits).
    async fn check_not_compacted(&self, after: i64) -> StoreResult<()> {
        let options = GetOptions::new()
            .with_revision(after.max(1))
            .with_count_only();
        match self.read(self.namespace.as_bytes().to_vec(), options).await {
            Ok(_) => Ok(()),
            Err(StoreError::Backend(message)) if message.contains("compacted") => {
                Err(StoreError::Compacted(after))
            }
            Err(StoreError::Backend(message)) if message.contains("future revision") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A read: again on any unavailable member, until the deadline.
    Read,
    /// A write: again only when it certainly was not applied (no connection was made, or the
    /// member refused it for want of a leader); an outcome etcd left unknown is an error.
    Write,
}

/// Runs `request` until it succeeds, fails for good, or `timeout` has passed. The balanced
/// channel may hand a request to a member that is down; another try reaches another member.
pub(crate) async fn call<T, F, Fut>(
    timeout: Duration,
    retry: Retry,
    mut request: F,
) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let pause = Duration::from_millis(50);
    loop {
        let attempt = tokio::time::timeout_at(deadline, request()).await;
        match attempt {
            Err(_) => return Err(timeout_error(timeout)),
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e))
                if may_retry(&e, retry) && tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::debug!("etcd request failed, trying again: {e}");
                tokio::time::sleep(pause).await;
            }
            Ok(Err(e)) => return Err(etcd_error(e)),
        }
    }
}

fn may_retry(e: &etcd_client::Error, retry: Retry) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::Unavailable => {
            let detail = format!("{status:?}");
            let not_sent = detail.contains("ConnectError") || detail.contains("tcp connect error");
            let no_leader = status.message().contains("no leader");
            retry == Retry::Read || not_sent || no_leader
        }
        etcd_client::Error::TransportError(_) => retry == Retry::Read,
        _ => false,
    }
}

fn timeout_error(timeout: Duration) -> StoreError {
    StoreError::Backend(format!(
        "etcd did not answer within {} s (are a majority of its members up and reachable?)",
        timeout.as_secs_f64()
    ))
}

fn etcd_error(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    // etcd's own limits, which its flags raise: say which.
    let hint = if text.contains("too many operations in txn request") {
        " (start etcd with a larger --max-txn-ops, e.g. 1024)"
    } else if text.contains("request is too large") {
        " (start etcd with a larger --max-request-bytes)"
    } else {
        ""
    };
    StoreError::Backend(format!("etcd: {text}{hint}"))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's rule: the
/// prefix with its last byte below 0xFF incremented; all of the keyspace after it when none is).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn decode(namespace_len: usize, kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    Ok(KeyValue {
        key: strip(namespace_len, kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn strip(namespace_len: usize, key: &[u8]) -> StoreResult<String> {
    let rest = key
        .get(namespace_len..)
        .ok_or_else(|| StoreError::Backend("etcd returned a key outside the namespace".into()))?;
    String::from_utf8(rest.to_vec())
        .map_err(|_| StoreError::Backend("etcd holds a key that is not UTF-8".into()))
}

/// Only the last operation on each key, in the order the last ones came (see module docs).
fn last_op_per_key(ops: Vec<TxnOp>) -> Vec<TxnOp> {
    let mut seen = HashSet::new();
    let mut kept: Vec<TxnOp> = ops
        .into_iter()
        .rev()
        .filter(|op| {
            let key = match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => key.clone(),
            };
            seen.insert(key)
        })
        .collect();
    kept.reverse();
    kept
}

#[async_trait]
impl KvStore for EtcdStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let response = self.read(self.full_key(key), GetOptions::new()).await?;
        response
            .kvs()
            .first()
            .map(|kv| decode(self.namespace.len(), kv))
            .transpose()
    }

    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, i64)> {
        let start = self.full_key(prefix);
        let end = prefix_end(&start);
        let mut from = start;
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = self.read(from.clone(), options).await?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).ok_or_else(|| {
                    StoreError::Backend("etcd answered without a revision".into())
                })?;
            }
            for item in response.kvs() {
                out.push(decode(self.namespace.len(), item)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse> {
        let compares: Vec<EtcdCompare> = txn
            .compare
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, rev } => {
                    EtcdCompare::mod_revision(self.full_key(key), CompareOp::Equal, *rev)
                }
            })
            .collect();
        let ops = |ops: Vec<TxnOp>| -> Vec<EtcdTxnOp> {
            last_op_per_key(ops)
                .into_iter()
                .map(|op| match op {
                    TxnOp::Put { key, value } => EtcdTxnOp::put(self.full_key(&key), value, None),
                    TxnOp::Delete { key } => EtcdTxnOp::delete(self.full_key(&key), None),
                })
                .collect()
        };
        let request = EtcdTxn::new()
            .when(compares)
            .and_then(ops(txn.success))
            .or_else(ops(txn.failure));
        let client = self.client.clone();
        let response = call(self.timeout, Retry::Write, || {
            let mut kv = client.kv_client();
            let request = request.clone();
            async move { kv.txn(request).await }
        })
        .await?;
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend("etcd answered without a revision".into()))?;
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision,
        })
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
        let options = GetOptions::new().with_count_only();
        let response = self
            .read(self.namespace.as_bytes().to_vec(), options)
            .await?;
        response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend("etcd answered without a revision".into()))
    }
}

/// One watch: re-created from `last + 1` whenever its stream breaks.
struct WatchTask {
    client: Client,
    start: Vec<u8>,
    end: Vec<u8>,
    namespace_len: usize,
    timeout: Duration,
    /// Every change up to this revision has been delivered.
    last: i64,
    out: Sink,
    alive: watch::Receiver<()>,
}

/// Why one watch stream stopped.
enum Ended {
    /// The consumer or the store is gone, or etcd compacted what is still owed: stop.
    Finished,
    /// The connection broke: watch again from `last + 1`.
    Broken(String),
}

impl WatchTask {
    async fn run(mut self) {
        let mut delay = Duration::from_millis(100);
        loop {
            let before = self.last;
            let ended = self.stream_once().await;
            if self.last > before {
                // That stream worked for a while: the next break starts the back-off afresh.
                delay = Duration::from_millis(100);
            }
            match ended {
                Ended::Finished => return,
                Ended::Broken(reason) => {
                    tracing::warn!(
                        revision = self.last,
                        "etcd watch broke ({reason}); watching again from the next revision"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.out.closed() => return,
                _ = self.alive.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
            if self.out.is_closed() {
                return;
            }
        }
    }

    async fn stream_once(&mut self) -> Ended {
        let mut watch_client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let options = WatchOptions::new()
            .with_range(self.end.clone())
            .with_start_revision(self.last + 1);
        let mut stream = match tokio::time::timeout(
            self.timeout,
            watch_client.watch(self.start.clone(), Some(options)),
        )
        .await
        .map_err(|_| timeout_error(self.timeout))
        .and_then(|r| r.map_err(etcd_error))
        {
            Ok(stream) => stream,
            Err(e) => return Ended::Broken(e.to_string()),
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = self.out.closed() => return Ended::Finished,
                _ = self.alive.changed() => return Ended::Finished,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Broken("the stream ended".into()),
                Err(e) => return Ended::Broken(e.to_string()),
            };
            if response.compact_revision() > 0 {
                tracing::info!(
                    revision = self.last,
                    compacted = response.compact_revision(),
                    "etcd compacted revisions this watch still owed; it ends (its consumer re-lists)"
                );
                return Ended::Finished;
            }
            if response.canceled() {
                return Ended::Broken(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                ));
            }
            if response.created() {
                continue;
            }
            if response.events().is_empty() {
                continue; // A progress notification (see the module docs).
            }
            match self.deliver(response.events()).await {
                Ok(()) => {}
                Err(Some(e)) => {
                    tracing::error!("etcd watch cannot decode an event: {e}; the watch ends");
                    return Ended::Finished;
                }
                Err(None) => return Ended::Finished,
            }
        }
    }

    /// Delivers one response's events, one revision at a time. `Err(None)`: the consumer is
    /// gone.
    async fn deliver(&mut self, events: &[etcd_client::Event]) -> Result<(), Option<StoreError>> {
        let mut batch: Vec<WatchEvent> = Vec::new();
        let mut revision = 0;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let event_revision = kv.mod_revision();
            if event_revision <= self.last {
                continue; // Already delivered before a reconnect.
            }
            if event_revision != revision && !batch.is_empty() {
                self.out
                    .send(revision, std::mem::take(&mut batch))
                    .await
                    .map_err(|_| None)?;
                self.last = revision;
            }
            revision = event_revision;
            let key = strip(self.namespace_len, kv.key()).map_err(Some)?;
            batch.push(match event.event_type() {
                EventType::Put => WatchEvent::Put(KeyValue {
                    key,
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: event_revision,
                }),
                EventType::Delete => WatchEvent::Delete {
                    key,
                    mod_revision: event_revision,
                },
            });
        }
        if !batch.is_empty() {
            self.out.send(revision, batch).await.map_err(|_| None)?;
            self.last = revision;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcds_rule() {
        assert_eq!(prefix_end(b"gantry/"), b"gantry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn only_the_last_operation_on_a_key_is_sent() {
        let put = |k: &str, v: &str| TxnOp::Put {
            key: k.into(),
            value: v.into(),
        };
        let ops = vec![
            put("a", "1"),
            put("b", "1"),
            TxnOp::Delete { key: "a".into() },
            put("c", "1"),
            put("b", "2"),
        ];
        assert_eq!(
            last_op_per_key(ops),
            vec![
                TxnOp::Delete { key: "a".into() },
                put("c", "1"),
                put("b", "2")
            ]
        );
    }
}
