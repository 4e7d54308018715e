//! Container output → the control plane. One follower per container reads Docker's log stream
//! (stdout and stderr, with timestamps); one shipper batches lines into [`LogBatch`]es (at most
//! 100 events, at least every 500 ms) and posts them, retrying while the server is down.
//! The timestamp of the last line shipped per container is kept in `log-positions.json`, so a
//! restarted agent resumes each adopted container where it left off.
//!
//! Before a container with an `awslogs` configuration naming its group starts, its stream is
//! made sure of ([`open_stream`]), as Docker's `awslogs` driver does when the container
//! starts: a group that does not exist, without `awslogs-create-group`, keeps the container
//! from starting.

use futures::future::BoxFuture;
use futures::StreamExt;
use gantry_model::agent_protocol::{EnsureLogStream, LogBatch, LogEvent};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::api_client::{ApiError, LogUploader};
use crate::docker::DockerDriver;
use crate::util::{now_ns, parse_rfc3339_ns, Backoff};

pub const MAX_BATCH_EVENTS: usize = 100;
pub const MAX_BATCH_DELAY: Duration = Duration::from_millis(500);
pub const POSITIONS_FILE: &str = "log-positions.json";

/// Where containers' log streams are made sure of before they start (the control plane).
/// Object-safe: the runner environment holds one as `Arc<dyn LogStreams>`.
pub trait LogStreams: Send + Sync + std::fmt::Debug + 'static {
    fn ensure(&self, stream: EnsureLogStream) -> BoxFuture<'_, Result<(), ApiError>>;
}

/// How long [`open_stream`] keeps trying while the control plane cannot answer.
pub const OPEN_STREAM_PATIENCE: Duration = Duration::from_secs(30);

/// Makes sure of a container's stream before it starts; on failure, the error as Docker's
/// `awslogs` driver reports it (`CannotStartContainerError: Error response from daemon:
/// failed to initialize logging driver: failed to create Cloudwatch log stream:
/// ResourceNotFoundException: The specified log group does not exist.`). An unreachable or
/// failing control plane is tried again for [`OPEN_STREAM_PATIENCE`] first.
pub async fn open_stream(streams: &dyn LogStreams, stream: EnsureLogStream) -> Result<(), String> {
    let deadline = Instant::now() + OPEN_STREAM_PATIENCE;
    let mut backoff = Backoff::standard();
    loop {
        let error = match streams.ensure(stream.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !error.is_retryable() || Instant::now() >= deadline {
            let cause = match &error {
                ApiError::Service { code, message, .. } => format!("{code}: {message}"),
                other => other.to_string(),
            };
            return Err(format!(
                "CannotStartContainerError: Error response from daemon: failed to initialize \
                 logging driver: failed to create Cloudwatch log stream: {cause}"
            ));
        }
        tracing::debug!(group = %stream.log_group_name, stream = %stream.log_stream_name, "cannot create the log stream yet: {error}");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One line of container output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub container_id: String,
    pub group: String,
    pub stream: String,
    /// Docker's timestamp, nanoseconds since the epoch.
    pub ts_ns: i64,
    pub message: String,
}

#[derive(Debug)]
pub enum LogMsg {
    Line(LogLine),
    /// The container is gone: drop its position.
    Forget(String),
}

pub type Positions = Arc<Mutex<HashMap<String, i64>>>;

/// Where followers send lines; knows how far each container has been shipped. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogMsg>,
    positions: Positions,
}

impl LogSink {
    /// A sink with the given shipped positions (container id → ns), and the receiver its
    /// shipper reads.
    pub fn new(positions: HashMap<String, i64>) -> (LogSink, mpsc::Receiver<LogMsg>) {
        let (tx, rx) = mpsc::channel(1024);
        (
            LogSink {
                tx,
                positions: Arc::new(Mutex::new(positions)),
            },
            rx,
        )
    }

    /// The timestamp (ns) of the last line shipped for `container_id`.
    pub fn position(&self, container_id: &str) -> Option<i64> {
        self.positions
            .lock()
            .ok()
            .and_then(|p| p.get(container_id).copied())
    }

    pub fn forget(&self, container_id: &str) {
        let _ = self.tx.try_send(LogMsg::Forget(container_id.to_string()));
    }

    pub async fn send(&self, line: LogLine) -> bool {
        self.tx.send(LogMsg::Line(line)).await.is_ok()
    }

    /// The shared position table, for the shipper.
    pub fn positions_handle(&self) -> Positions {
        self.positions.clone()
    }
}

/// Reads `data_dir/log-positions.json`.
pub fn load_positions(data_dir: &std::path::Path) -> HashMap<String, i64> {
    std::fs::read(data_dir.join(POSITIONS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Splits one Docker log line (`<RFC 3339 timestamp> <message>`) into its parts.
pub fn parse_log_line(line: &str) -> (Option<i64>, &str) {
    match line.split_once(' ') {
        Some((ts, msg)) => match parse_rfc3339_ns(ts) {
            Some(ns) => (Some(ns), msg),
            None => (None, line),
        },
        None => match parse_rfc3339_ns(line) {
            Some(ns) => (Some(ns), ""),
            None => (None, line),
        },
    }
}

/// A running log follower (see [`spawn_follower`]).
#[derive(Debug)]
pub struct LogFollower {
    handle: tokio::task::JoinHandle<()>,
    /// Timestamp (ns) of the last line handed to the sink; 0 while none was.
    delivered: Arc<AtomicI64>,
    since_ns: Option<i64>,
}

impl LogFollower {
    /// Ends the follower and returns where a successor must resume (exclusive; `None`: from
    /// the beginning). Needed when a container is restarted in place: the follower may already
    /// have ended with the container's first run, and two followers would ship lines twice.
    pub async fn stop(self) -> Option<i64> {
        self.handle.abort();
        // Waits for the abort to take effect, so nothing is delivered after `delivered` is read.
        let _ = self.handle.await;
        match self.delivered.load(Ordering::SeqCst) {
            0 => self.since_ns,
            ns => Some(ns),
        }
    }
}

/// Decides which lines of Docker's log stream a follower ships, so that none is shipped twice
/// and none is lost.
///
/// Docker stamps each line when its stream's copier reads it, but stdout and stderr have a
/// copier each and the log file takes lines in the order they reach it: a stderr line may
/// follow a stdout line stamped later. Timestamps are therefore not a cursor within one
/// connection — every line of it is new. They are one across connections: a reconnect asks
/// Docker for the output since a whole second (its `since` resolution) and gets again what was
/// already shipped from that second on, which the filter recognises by timestamp and text.
#[derive(Debug)]
struct LineFilter {
    /// Lines at or before it were shipped by a predecessor (exclusive start of this follower).
    floor_ns: Option<i64>,
    /// The latest timestamp shipped (or `floor_ns`).
    high_ns: i64,
    /// Lines shipped from the start of `high_ns`'s second on: what a reconnect sends again.
    recent: std::collections::HashSet<(i64, u64)>,
    /// `recent` holds nothing from before this (the start of a second).
    recent_since: i64,
}

impl LineFilter {
    fn new(since_ns: Option<i64>) -> LineFilter {
        LineFilter {
            floor_ns: since_ns,
            high_ns: since_ns.unwrap_or(0),
            recent: Default::default(),
            recent_since: 0,
        }
    }

    /// Where the next connection starts, in whole seconds (0: from the beginning).
    fn resume_secs(&self) -> i64 {
        self.high_ns / 1_000_000_000
    }

    fn high_ns(&self) -> i64 {
        self.high_ns
    }

    /// The timestamp to ship a line under, or `None` when it was shipped already.
    fn admit(&mut self, ts: Option<i64>, message: &str) -> Option<i64> {
        let Some(ts) = ts else {
            // No timestamp Docker gave: now, and never before what was shipped.
            let ts = self.high_ns.max(now_ns());
            self.high_ns = ts;
            return Some(ts);
        };
        if self.floor_ns.is_some_and(|floor| ts <= floor) {
            return None;
        }
        let key = (ts, message_hash(message));
        if !self.recent.insert(key) {
            return None;
        }
        self.high_ns = self.high_ns.max(ts);
        // Forget lines from before the second a reconnect would start at (once a second).
        let window_start = self.resume_secs() * 1_000_000_000;
        if window_start > self.recent_since {
            self.recent.retain(|(t, _)| *t >= window_start);
            self.recent_since = window_start;
        }
        Some(ts)
    }
}

fn message_hash(message: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    message.hash(&mut h);
    h.finish()
}

/// Follows `container_id`'s output from `since_ns` (exclusive; `None`: from the beginning)
/// until the container stops, `stop` turns true, or the sink closes.
pub fn spawn_follower(
    docker: DockerDriver,
    sink: LogSink,
    container_id: String,
    group: String,
    stream: String,
    since_ns: Option<i64>,
    mut stop: watch::Receiver<bool>,
) -> LogFollower {
    let delivered = Arc::new(AtomicI64::new(0));
    let progress = delivered.clone();
    let handle = tokio::spawn(async move {
        let mut filter = LineFilter::new(since_ns);
        let mut reconnects = 0u32;
        loop {
            let logs = docker.logs(&container_id, filter.resume_secs());
            futures::pin_mut!(logs);
            loop {
                let item = tokio::select! {
                    _ = stop.changed() => return,
                    item = logs.next() => item,
                };
                match item {
                    Some(Ok(out)) => {
                        let bytes: &[u8] = out.as_ref();
                        let text = String::from_utf8_lossy(bytes);
                        for raw in text.split('\n') {
                            let raw = raw.strip_suffix('\r').unwrap_or(raw);
                            if raw.is_empty() {
                                continue;
                            }
                            let (ts, msg) = parse_log_line(raw);
                            let Some(ts) = filter.admit(ts, msg) else {
                                continue;
                            };
                            let line = LogLine {
                                container_id: container_id.clone(),
                                group: group.clone(),
                                stream: stream.clone(),
                                ts_ns: ts,
                                message: msg.to_string(),
                            };
                            if !sink.send(line).await {
                                return;
                            }
                            // Only after the send: a line the sink never took is read again
                            // by a successor (see `LogFollower::stop`).
                            progress.store(filter.high_ns(), Ordering::SeqCst);
                        }
                    }
                    Some(Err(e)) => {
                        if e.is_not_found() {
                            return;
                        }
                        tracing::debug!(container = %container_id, "log stream failed: {e}");
                        break;
                    }
                    None => break,
                }
            }
            // The stream ends when the container stops; reconnect only if it still runs.
            match docker.inspect_container(&container_id).await {
                Ok(s) if s.running && reconnects < 1000 => {
                    reconnects += 1;
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                _ => return,
            }
        }
    });
    LogFollower {
        handle,
        delivered,
        since_ns,
    }
}

/// Batches lines from `rx` and uploads them until `stop` turns true (then flushes what it
/// has, briefly) or every sender is gone.
pub async fn run_shipper<U: LogUploader>(
    uploader: Arc<U>,
    positions: Positions,
    mut rx: mpsc::Receiver<LogMsg>,
    positions_path: Option<PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf: Vec<LogLine> = Vec::new();
    let mut batch_ids = BatchIds::new();
    let mut first_at: Option<Instant> = None;
    let mut backoff = Backoff::standard();
    let mut last_persist = Instant::now();
    let mut dirty = false;
    loop {
        let deadline = first_at.map(|t| t + MAX_BATCH_DELAY);
        let mut flush_now = false;
        tokio::select! {
            _ = stop.changed() => {
                while let Ok(msg) = rx.try_recv() {
                    if let LogMsg::Line(l) = msg {
                        buf.push(l);
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while !buf.is_empty() && Instant::now() < deadline {
                    let n = buf.len().min(MAX_BATCH_EVENTS);
                    let batch: Vec<LogLine> = buf.drain(..n).collect();
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let batch_id = batch_ids.next();
                    match tokio::time::timeout(remaining, uploader.upload(&to_batch(&batch, batch_id))).await {
                        Ok(Ok(())) => {
                            advance_positions(&positions, &batch);
                            dirty = true;
                        }
                        _ => break,
                    }
                }
                if dirty {
                    persist(&positions, positions_path.as_ref());
                }
                return;
            }
            msg = rx.recv() => match msg {
                Some(LogMsg::Line(l)) => {
                    buf.push(l);
                    first_at.get_or_insert_with(Instant::now);
                    flush_now = buf.len() >= MAX_BATCH_EVENTS;
                }
                Some(LogMsg::Forget(id)) => {
                    if let Ok(mut p) = positions.lock() {
                        p.remove(&id);
                    }
                    dirty = true;
                }
                None => {
                    flush_now = !buf.is_empty();
                    if !flush_now {
                        if dirty {
                            persist(&positions, positions_path.as_ref());
                        }
                        return;
                    }
                }
            },
            _ = crate::util::sleep_until_opt(deadline), if deadline.is_some() => flush_now = true,
        }
        if flush_now {
            // Retry until it is delivered (the server may be down): lines wait in Docker's
            // log files meanwhile, since the followers block on the full channel.
            while !buf.is_empty() {
                let n = buf.len().min(MAX_BATCH_EVENTS);
                // Sent again as the same batch (same id) until it is delivered or refused.
                let batch = to_batch(&buf[..n], batch_ids.current());
                match uploader.upload(&batch).await {
                    Ok(()) => {
                        batch_ids.next();
                        backoff.reset();
                        advance_positions(&positions, &buf[..n]);
                        buf.drain(..n);
                        dirty = true;
                    }
                    Err(e) if e.is_retryable() => {
                        let d = backoff.next_delay();
                        tracing::warn!("cannot ship container logs: {e}; retrying in {d:?}");
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = stop.changed() => {
                                if dirty {
                                    persist(&positions, positions_path.as_ref());
                                }
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("control plane refused {n} log events, dropping them: {e}");
                        batch_ids.next();
                        buf.drain(..n);
                    }
                }
            }
            first_at = None;
        }
        if dirty && last_persist.elapsed() >= Duration::from_secs(1) {
            persist(&positions, positions_path.as_ref());
            last_persist = Instant::now();
            dirty = false;
        }
    }
}

/// The ids of the batches one shipper sends: a random session (this agent process) and a
/// count, so that the control plane stores a batch once however often it arrives.
struct BatchIds {
    session: String,
    count: u64,
}

impl BatchIds {
    fn new() -> BatchIds {
        BatchIds {
            session: format!("{:016x}", rand::random::<u64>()),
            count: 0,
        }
    }

    /// The id of the batch being sent.
    fn current(&self) -> String {
        format!("{}-{}", self.session, self.count)
    }

    /// The id of the batch being sent, moving on to the next.
    fn next(&mut self) -> String {
        let id = self.current();
        self.count += 1;
        id
    }
}

fn to_batch(lines: &[LogLine], batch_id: String) -> LogBatch {
    LogBatch {
        batch_id: Some(batch_id),
        events: lines
            .iter()
            .map(|l| LogEvent {
                log_group: l.group.clone(),
                log_stream: l.stream.clone(),
                timestamp: l.ts_ns / 1_000_000,
                message: l.message.clone(),
            })
            .collect(),
    }
}

fn advance_positions(positions: &Positions, lines: &[LogLine]) {
    if let Ok(mut p) = positions.lock() {
        for l in lines {
            let e = p.entry(l.container_id.clone()).or_insert(0);
            *e = (*e).max(l.ts_ns);
        }
    }
}

fn persist(positions: &Positions, path: Option<&PathBuf>) {
    let Some(path) = path else { return };
    let snapshot = match positions.lock() {
        Ok(p) => p.clone(),
        Err(_) => return,
    };
    match serde_json::to_vec(&snapshot) {
        Ok(bytes) => {
            if let Err(e) = crate::config::write_atomic(path, &bytes) {
                tracing::warn!(path = %path.display(), "cannot save log positions: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot encode log positions: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_client::ApiError;
    use std::future::Future;

    /// Answers with `answers` in turn (the last one for ever), counting calls.
    #[derive(Debug)]
    struct Streams {
        answers: Mutex<Vec<Result<(), ApiError>>>,
        calls: AtomicI64,
    }

    impl LogStreams for Streams {
        fn ensure(&self, _: EnsureLogStream) -> BoxFuture<'_, Result<(), ApiError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut answers = self.answers.lock().expect("answers");
            let answer = if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            };
            Box::pin(async move { answer })
        }
    }

    fn streams(answers: Vec<Result<(), ApiError>>) -> Streams {
        Streams {
            answers: Mutex::new(answers),
            calls: AtomicI64::new(0),
        }
    }

    #[tokio::test]
    async fn a_missing_group_fails_the_start_as_dockers_awslogs_driver_says() {
        let s = streams(vec![Err(ApiError::Service {
            status: 400,
            code: "ResourceNotFoundException".into(),
            message: "The specified log group does not exist.".into(),
        })]);
        let reason = open_stream(&s, EnsureLogStream::default())
            .await
            .expect_err("missing group");
        assert_eq!(
            reason,
            "CannotStartContainerError: Error response from daemon: failed to initialize \
             logging driver: failed to create Cloudwatch log stream: ResourceNotFoundException: \
             The specified log group does not exist."
        );
        assert_eq!(
            s.calls.load(Ordering::SeqCst),
            1,
            "a refusal is not retried"
        );
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_is_tried_again() {
        let down = || {
            Err(ApiError::Transport {
                url: "http://127.0.0.1:1".into(),
                message: "connection refused".into(),
            })
        };
        let s = streams(vec![down(), down(), Ok(())]);
        open_stream(&s, EnsureLogStream::default())
            .await
            .expect("third time");
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn lines_out_of_timestamp_order_are_all_shipped_and_a_reconnect_ships_none_twice() {
        let s = 1_000_000_000i64;
        let mut f = LineFilter::new(None);
        assert_eq!(f.resume_secs(), 0);
        // stdout's line-two is stamped after stderr's line-err but reaches the file first.
        assert_eq!(f.admit(Some(5 * s + 10), "line-one"), Some(5 * s + 10));
        assert_eq!(f.admit(Some(5 * s + 30), "line-two"), Some(5 * s + 30));
        assert_eq!(f.admit(Some(5 * s + 20), "line-err"), Some(5 * s + 20));
        assert_eq!(f.high_ns(), 5 * s + 30);
        // A reconnect starts at second 5 and gets all three again, then a new line.
        assert_eq!(f.resume_secs(), 5);
        assert_eq!(f.admit(Some(5 * s + 10), "line-one"), None);
        assert_eq!(f.admit(Some(5 * s + 20), "line-err"), None);
        assert_eq!(f.admit(Some(5 * s + 30), "line-two"), None);
        assert_eq!(f.admit(Some(6 * s + 1), "line-three"), Some(6 * s + 1));
        // Lines of earlier seconds are forgotten once a reconnect could not send them again.
        assert!(f.recent.iter().all(|(t, _)| *t >= 6 * s));
        // A line without a timestamp is shipped as of now, never before what was shipped.
        let now = f.admit(None, "no stamp").expect("shipped");
        assert!(now > 6 * s);
    }

    #[test]
    fn a_successor_ships_nothing_at_or_before_where_its_predecessor_got_to() {
        let s = 1_000_000_000i64;
        let mut f = LineFilter::new(Some(7 * s + 50));
        assert_eq!(f.resume_secs(), 7);
        assert_eq!(f.admit(Some(7 * s + 40), "old"), None);
        assert_eq!(f.admit(Some(7 * s + 50), "last shipped"), None);
        assert_eq!(f.admit(Some(7 * s + 60), "new"), Some(7 * s + 60));
    }

    #[test]
    fn splits_timestamp_and_message() {
        let (ts, msg) = parse_log_line("2021-01-01T00:00:00.000000001Z hello world");
        assert_eq!(ts, Some(1_609_459_200_000_000_001));
        assert_eq!(msg, "hello world");
        assert_eq!(parse_log_line("no timestamp"), (None, "no timestamp"));
    }

    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<LogBatch>>,
        fail_first: Mutex<u32>,
    }

    impl LogUploader for Recorder {
        fn upload(&self, batch: &LogBatch) -> impl Future<Output = Result<(), ApiError>> + Send {
            let fail = {
                let mut f = self.fail_first.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    true
                } else {
                    false
                }
            };
            if !fail {
                self.batches.lock().unwrap().push(batch.clone());
            }
            async move {
                if fail {
                    Err(ApiError::Transport {
                        url: "x".into(),
                        message: "down".into(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    fn line(i: i64) -> LogLine {
        LogLine {
            container_id: "c1".into(),
            group: "/ecs/web".into(),
            stream: "ecs/app/t".into(),
            ts_ns: 1_000_000_000 * i,
            message: format!("line {i}"),
        }
    }

    #[tokio::test]
    async fn batches_by_count_and_time_and_retries() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder {
            fail_first: Mutex::new(2),
            ..Default::default()
        });
        let (sink, rx) = LogSink::new(HashMap::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let path = dir.path().join(POSITIONS_FILE);
        let shipper = {
            let rec = rec.clone();
            let positions = sink.positions_handle();
            let path = path.clone();
            tokio::spawn(async move { run_shipper(rec, positions, rx, Some(path), stop_rx).await })
        };
        for i in 1..=150 {
            assert!(sink.send(line(i)).await);
        }
        // 100 go at once (after two failed tries), the other 50 within ~500 ms.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        {
            let b = rec.batches.lock().unwrap();
            assert_eq!(
                b.len(),
                2,
                "{:?}",
                b.iter().map(|b| b.events.len()).collect::<Vec<_>>()
            );
            assert_eq!(b[0].events.len(), 100);
            assert_eq!(b[1].events.len(), 50);
            assert_eq!(b[0].events[0].timestamp, 1000);
            assert_eq!(b[0].events[0].log_group, "/ecs/web");
            assert_eq!(b[1].events[49].message, "line 150");
        }
        assert_eq!(sink.position("c1"), Some(150_000_000_000));
        stop_tx.send(true).unwrap();
        shipper.await.unwrap();
        assert_eq!(load_positions(dir.path()).get("c1"), Some(&150_000_000_000));
    }
}
