//! Behaviour of the controller runtime, one test per guarantee. Most tests run on a paused
//! clock (`start_paused`): tokio jumps straight to the next timer when every task is idle, so
//! back-off and requeue delays are exact and the tests take no wall-clock time.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_runtime::{
    spawn, Action, ControllerConfig, Handle, Metrics, ReconcileError, Reconciler,
};
use tokio::time::{sleep, Instant};

type Key = &'static str;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
/// Slack for the timer wheel's 1 ms resolution on a paused clock.
const SLACK: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug)]
enum Step {
    Ok(Action),
    Err,
    Panic,
}

type Script = dyn Fn(Key, usize) -> (Duration, Step) + Send + Sync;
type ListScript = dyn Fn(usize) -> Result<Vec<Key>, ReconcileError> + Send + Sync;

/// A reconciler that follows a script (key, runs so far) -> (how long it takes, outcome) and
/// records every run.
struct Recorder {
    script: Box<Script>,
    list: Box<ListScript>,
    list_calls: AtomicUsize,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    runs: Vec<(Key, Instant)>,
    active: HashMap<Key, usize>,
    overlapped: bool,
    in_flight: usize,
    max_in_flight: usize,
}

impl Recorder {
    fn new(script: impl Fn(Key, usize) -> (Duration, Step) + Send + Sync + 'static) -> Self {
        Self {
            script: Box::new(script),
            list: Box::new(|_| Ok(Vec::new())),
            list_calls: AtomicUsize::new(0),
            log: Mutex::new(Log::default()),
        }
    }

    /// Every key succeeds at once.
    fn instant_ok() -> Self {
        Self::new(|_, _| (Duration::ZERO, Step::Ok(Action::Done)))
    }

    fn with_list(
        mut self,
        list: impl Fn(usize) -> Result<Vec<Key>, ReconcileError> + Send + Sync + 'static,
    ) -> Self {
        self.list = Box::new(list);
        self
    }

    fn runs_of(&self, key: Key) -> Vec<Instant> {
        let log = self.log.lock().unwrap();
        log.runs
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, at)| *at)
            .collect()
    }

    fn count(&self, key: Key) -> usize {
        self.runs_of(key).len()
    }

    fn in_flight(&self) -> usize {
        self.log.lock().unwrap().in_flight
    }
}

/// Marks the end of a run even when it panics or is aborted.
struct Active<'a> {
    recorder: &'a Recorder,
    key: Key,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut log = self.recorder.log.lock().unwrap();
        log.in_flight -= 1;
        *log.active.entry(self.key).or_default() -= 1;
    }
}

impl Reconciler for Recorder {
    type Key = Key;

    async fn reconcile(&self, key: &Key) -> Result<Action, ReconcileError> {
        let key = *key;
        let (duration, step) = {
            let mut log = self.log.lock().unwrap();
            let prior = log.runs.iter().filter(|(k, _)| *k == key).count();
            log.runs.push((key, Instant::now()));
            let active = log.active.entry(key).or_default();
            *active += 1;
            if *active > 1 {
                log.overlapped = true;
            }
            log.in_flight += 1;
            log.max_in_flight = log.max_in_flight.max(log.in_flight);
            (self.script)(key, prior)
        };
        let _active = Active {
            recorder: self,
            key,
        };
        sleep(duration).await;
        match step {
            Step::Ok(action) => Ok(action),
            Step::Err => Err("scripted failure".into()),
            Step::Panic => panic!("scripted panic for {key}"),
        }
    }

    async fn list(&self) -> Result<Vec<Key>, ReconcileError> {
        let call = self.list_calls.fetch_add(1, Ordering::SeqCst);
        (self.list)(call)
    }
}

fn config(name: &'static str, workers: usize) -> ControllerConfig {
    ControllerConfig {
        workers,
        ..ControllerConfig::new(name)
    }
}

/// Poll `condition` every millisecond until it holds; fail after a minute (of paused or real
/// time, whichever the test runs on).
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(MS).await;
    }
}

fn assert_between(what: &str, actual: Duration, low: Duration, high: Duration) {
    assert!(
        low <= actual && actual <= high,
        "{what}: {actual:?} not in [{low:?}, {high:?}]"
    );
}

fn gaps(runs: &[Instant]) -> Vec<Duration> {
    runs.windows(2).map(|w| w[1] - w[0]).collect()
}

async fn wait_reconciles<K: Clone + Eq + std::hash::Hash + Ord>(handle: &Handle<K>, n: u64) {
    wait_until(&format!("{n} reconciles"), || {
        handle.metrics().reconciles >= n
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_key_enqueued_many_times_while_waiting_runs_once() {
    let recorder = Arc::new(Recorder::new(|key, _| match key {
        "blocker" => (SEC, Step::Ok(Action::Done)),
        _ => (Duration::ZERO, Step::Ok(Action::Done)),
    }));
    let (handle, _controller) = spawn(config("dedup", 1), recorder.clone());

    handle.enqueue("blocker");
    wait_until("blocker running", || handle.metrics().in_flight == 1).await;
    for _ in 0..100 {
        handle.enqueue("a");
    }
    handle.enqueue_many(["a"; 50]);
    assert_eq!(handle.metrics().queue_depth, 1);

    wait_reconciles(&handle, 2).await;
    sleep(10 * SEC).await;
    assert_eq!(recorder.count("a"), 1);
    assert_eq!(handle.metrics().reconciles, 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_enqueued_while_running_runs_exactly_once_more_and_never_concurrently() {
    let recorder = Arc::new(Recorder::new(|_, _| (SEC, Step::Ok(Action::Done))));
    let (handle, _controller) = spawn(config("dirty", 4), recorder.clone());

    handle.enqueue("a");
    wait_until("first run", || recorder.count("a") == 1).await;
    for _ in 0..20 {
        handle.enqueue("a");
    }
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.queue_depth, metrics.in_flight),
        (0, 1),
        "dirty, not queued"
    );

    wait_until("second run", || recorder.count("a") == 2).await;
    sleep(10 * SEC).await;
    let runs = recorder.runs_of("a");
    assert_eq!(runs.len(), 2, "exactly one more run");
    assert!(
        runs[1] - runs[0] >= SEC,
        "second run started before the first ended"
    );
    assert!(!recorder.log.lock().unwrap().overlapped);
}

#[tokio::test(start_paused = true)]
async fn at_most_workers_reconciles_run_at_once() {
    const KEYS: [Key; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let recorder = Arc::new(Recorder::new(|_, _| (100 * MS, Step::Ok(Action::Done))));
    let (handle, _controller) = spawn(config("bounded", 3), recorder.clone());

    let start = Instant::now();
    handle.enqueue_many(KEYS);
    wait_reconciles(&handle, 12).await;
    assert_eq!(recorder.log.lock().unwrap().max_in_flight, 3);
    // Twelve 100 ms runs, three at a time, take four rounds.
    assert_between("total", start.elapsed(), 400 * MS, 400 * MS + SLACK);
    for key in KEYS {
        assert_eq!(recorder.count(key), 1, "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_key_does_not_hold_up_the_others() {
    const FAST: [Key; 5] = ["a", "b", "c", "d", "e"];
    let recorder = Arc::new(Recorder::new(|key, _| match key {
        "slow" => (Duration::from_secs(3600), Step::Ok(Action::Done)),
        _ => (10 * MS, Step::Ok(Action::Done)),
    }));
    let (handle, _controller) = spawn(config("parallel", 2), recorder.clone());

    let start = Instant::now();
    handle.enqueue("slow");
    handle.enqueue_many(FAST);
    wait_reconciles(&handle, 5).await;
    assert_between("fast keys", start.elapsed(), 50 * MS, 50 * MS + SLACK);
    assert_eq!(handle.metrics().in_flight, 1, "slow key still running");
    assert_eq!(recorder.count("slow"), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_up_to_the_cap_and_reset_after_a_success() {
    // Runs 0-5 fail, 6 succeeds, 7 fails, 8 succeeds.
    let recorder = Arc::new(Recorder::new(|_, run| match run {
        0..=5 | 7 => (Duration::ZERO, Step::Err),
        _ => (Duration::ZERO, Step::Ok(Action::Done)),
    }));
    let config = ControllerConfig {
        backoff_base: 100 * MS,
        backoff_cap: SEC,
        ..config("backoff", 2)
    };
    let (handle, _controller) = spawn(config, recorder.clone());

    handle.enqueue("a");
    wait_until("seven runs", || recorder.count("a") == 7).await;
    let expected = [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis);
    for (n, (gap, want)) in gaps(&recorder.runs_of("a"))
        .into_iter()
        .zip(expected)
        .enumerate()
    {
        assert_between(&format!("retry {}", n + 1), gap, want, want + SLACK);
    }
    assert_eq!(handle.metrics().scheduled, 0, "no retry after the success");

    handle.enqueue("a");
    wait_until("nine runs", || recorder.count("a") == 9).await;
    let runs = recorder.runs_of("a");
    assert_between(
        "retry after reset",
        runs[8] - runs[7],
        100 * MS,
        100 * MS + SLACK,
    );
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.reconciles, metrics.failures, metrics.panics),
        (9, 7, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn an_enqueue_does_not_cut_a_back_off_short() {
    let recorder = Arc::new(Recorder::new(|_, _| (Duration::ZERO, Step::Err)));
    let config = ControllerConfig {
        backoff_base: 10 * SEC,
        ..config("no-spin", 2)
    };
    let (handle, _controller) = spawn(config, recorder.clone());

    handle.enqueue("a");
    wait_until("back-off armed", || handle.metrics().scheduled == 1).await;
    sleep(SEC).await;
    for _ in 0..10 {
        handle.enqueue("a");
    }
    handle.enqueue_after("a", MS);
    let metrics = handle.metrics();
    assert_eq!((metrics.queue_depth, metrics.scheduled), (0, 1));

    wait_until("retry", || recorder.count("a") == 2).await;
    let runs = recorder.runs_of("a");
    assert_between("retry", runs[1] - runs[0], 10 * SEC, 10 * SEC + SLACK);
}

#[tokio::test(start_paused = true)]
async fn a_key_in_back_off_does_not_delay_other_keys() {
    let recorder = Arc::new(Recorder::new(|key, _| match key {
        "bad" => (Duration::ZERO, Step::Err),
        _ => (Duration::ZERO, Step::Ok(Action::Done)),
    }));
    let config = ControllerConfig {
        backoff_base: Duration::from_secs(3600),
        ..config("isolated-backoff", 1)
    };
    let (handle, _controller) = spawn(config, recorder.clone());

    handle.enqueue("bad");
    wait_until("bad failed", || handle.metrics().failures == 1).await;
    let enqueued = Instant::now();
    handle.enqueue("good");
    wait_until("good ran", || recorder.count("good") == 1).await;
    assert_between(
        "good",
        recorder.runs_of("good")[0] - enqueued,
        Duration::ZERO,
        SLACK,
    );
    assert_eq!(
        handle.metrics().scheduled,
        1,
        "bad still waiting out its back-off"
    );
}

#[tokio::test(start_paused = true)]
async fn requeue_after_runs_the_key_again_after_the_delay() {
    let recorder = Arc::new(Recorder::new(|_, run| match run {
        0 => (Duration::ZERO, Step::Ok(Action::RequeueAfter(10 * SEC))),
        _ => (Duration::ZERO, Step::Ok(Action::Done)),
    }));
    let (handle, _controller) = spawn(config("requeue", 2), recorder.clone());

    handle.enqueue("a");
    wait_until("timer set", || handle.metrics().scheduled == 1).await;
    wait_until("second run", || recorder.count("a") == 2).await;
    let runs = recorder.runs_of("a");
    assert_between("requeue", runs[1] - runs[0], 10 * SEC, 10 * SEC + SLACK);
    sleep(60 * SEC).await;
    assert_eq!(recorder.count("a"), 2);
    assert_eq!(handle.metrics().scheduled, 0);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_enqueue_beats_requeue_after_and_clears_its_timer() {
    let recorder = Arc::new(Recorder::new(|_, run| match run {
        0 => (Duration::ZERO, Step::Ok(Action::RequeueAfter(10 * SEC))),
        _ => (Duration::ZERO, Step::Ok(Action::Done)),
    }));
    let (handle, _controller) = spawn(config("requeue-early", 2), recorder.clone());

    handle.enqueue("a");
    wait_until("timer set", || handle.metrics().scheduled == 1).await;
    sleep(2 * SEC).await;
    handle.enqueue("a");
    assert_eq!(
        handle.metrics().scheduled,
        0,
        "enqueue clears the requeue timer"
    );
    wait_until("second run", || recorder.count("a") == 2).await;
    let runs = recorder.runs_of("a");
    assert_between("early run", runs[1] - runs[0], 2 * SEC, 2 * SEC + SLACK);
    sleep(60 * SEC).await;
    assert_eq!(recorder.count("a"), 2, "the old timer must not fire");
}

#[tokio::test(start_paused = true)]
async fn enqueue_after_keeps_the_earliest_timer() {
    let recorder = Arc::new(Recorder::instant_ok());
    let (handle, _controller) = spawn(config("enqueue-after", 2), recorder.clone());

    let start = Instant::now();
    handle.enqueue_after("a", 5 * SEC);
    handle.enqueue_after("a", 2 * SEC);
    handle.enqueue_after("a", 8 * SEC);
    let metrics = handle.metrics();
    assert_eq!((metrics.queue_depth, metrics.scheduled), (0, 1));
    wait_until("run", || recorder.count("a") == 1).await;
    assert_between(
        "timer",
        recorder.runs_of("a")[0] - start,
        2 * SEC,
        2 * SEC + SLACK,
    );
    sleep(60 * SEC).await;
    assert_eq!(recorder.count("a"), 1);
}

#[tokio::test(start_paused = true)]
async fn resync_enqueues_every_listed_key_each_period_and_survives_list_failures() {
    let recorder = Arc::new(Recorder::instant_ok().with_list(|call| match call {
        0 => Ok(vec!["a", "b", "c"]),
        1 => Err("store unavailable".into()),
        2 => panic!("list panicked"),
        _ => Ok(vec!["a", "b"]),
    }));
    let config = ControllerConfig {
        resync: Some(10 * SEC),
        ..config("resync", 2)
    };
    let start = Instant::now();
    let (handle, _controller) = spawn(config, recorder.clone());

    wait_until("initial pass", || handle.metrics().reconciles == 3).await;
    wait_until("fourth list", || recorder.count("b") == 2).await;
    wait_until("a again", || recorder.count("a") == 2).await;
    assert_eq!(recorder.count("c"), 1);
    assert_between(
        "first pass",
        recorder.runs_of("a")[0] - start,
        Duration::ZERO,
        SLACK,
    );
    assert_between(
        "fourth pass",
        recorder.runs_of("a")[1] - start,
        30 * SEC,
        30 * SEC + SLACK,
    );
    assert_eq!(recorder.list_calls.load(Ordering::SeqCst), 4);
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

/// The process-wide subscriber, installed once, writing into one buffer: a thread-local one
/// (`set_default`) loses events when other test threads register the same callsites at the same
/// moment (tracing caches each callsite's interest globally), which made this test flaky
/// under load. Tests filter the buffer by their controller's name.
fn global_log_capture() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test installs a global subscriber");
        logs
    })
    .clone()
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_logged_counted_retried_and_isolated_to_its_key() {
    let logs = global_log_capture();
    let recorder = Arc::new(Recorder::new(|key, run| match (key, run) {
        ("boom", 0 | 1) => (Duration::ZERO, Step::Panic),
        _ => (Duration::ZERO, Step::Ok(Action::Done)),
    }));
    let config = ControllerConfig {
        backoff_base: SEC,
        ..config("panicky", 1)
    };
    let (handle, _controller) = spawn(config, recorder.clone());

    handle.enqueue_many(["boom", "a", "b"]);
    wait_until("boom recovered", || recorder.count("boom") == 3).await;
    assert_eq!((recorder.count("a"), recorder.count("b")), (1, 1));
    let boom = recorder.runs_of("boom");
    assert_between("first retry", boom[1] - boom[0], SEC, SEC + SLACK);
    assert_between("second retry", boom[2] - boom[1], 2 * SEC, 2 * SEC + SLACK);
    wait_reconciles(&handle, 5).await;

    handle.enqueue("c");
    wait_until("c served after the panics", || recorder.count("c") == 1).await;
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.reconciles, metrics.failures, metrics.panics),
        (6, 0, 2)
    );
    assert_eq!(metrics.in_flight, 0);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let panics: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("reconcile panicked") && l.contains("panicky"))
        .collect();
    assert_eq!(panics.len(), 2, "{logs}");
    for line in panics {
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("panicky"), "controller name missing: {line}");
        assert!(line.contains("key=\"boom\""), "key missing: {line}");
        assert!(
            line.contains("scripted panic for boom"),
            "panic message missing: {line}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_report_queue_timers_in_flight_counters_and_latency() {
    let recorder = Arc::new(Recorder::new(|key, _| match key {
        "slow" => (SEC, Step::Ok(Action::Done)),
        "bad" => (Duration::ZERO, Step::Err),
        _ => (100 * MS, Step::Ok(Action::Done)),
    }));
    let config = ControllerConfig {
        backoff_base: Duration::from_secs(3600),
        ..config("metered", 1)
    };
    let (handle, _controller) = spawn(config, recorder.clone());
    assert_eq!(
        handle.metrics(),
        Metrics {
            name: "metered",
            ..Metrics::default()
        }
    );

    handle.enqueue("slow");
    wait_until("slow running", || handle.metrics().in_flight == 1).await;
    handle.enqueue_many(["x", "y", "z"]);
    handle.enqueue_after("later", Duration::from_secs(3600));
    let expected = Metrics {
        name: "metered",
        queue_depth: 3,
        scheduled: 1,
        in_flight: 1,
        ..Metrics::default()
    };
    assert_eq!(handle.metrics(), expected);

    wait_reconciles(&handle, 4).await;
    handle.enqueue("bad");
    wait_until("bad failed", || handle.metrics().failures == 1).await;
    let metrics = handle.metrics();
    assert_eq!(
        (metrics.queue_depth, metrics.scheduled, metrics.in_flight),
        (0, 2, 0),
        "later's timer and bad's back-off"
    );
    assert_eq!(
        (metrics.reconciles, metrics.failures, metrics.panics),
        (5, 1, 0)
    );
    // Latencies: 0 (bad), 100, 100, 100 ms (x, y, z), 1 s (slow).
    assert_between("p50", metrics.latency_p50, 100 * MS, 100 * MS + SLACK);
    assert_between("p99", metrics.latency_p99, SEC, SEC + SLACK);
    assert_eq!(metrics.latency_max, metrics.latency_p99);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_does_not_stop_the_controller() {
    let recorder = Arc::new(Recorder::instant_ok().with_list(|_| Ok(vec!["a"])));
    let config = ControllerConfig {
        resync: Some(SEC),
        ..config("handle-less", 1)
    };
    let (handle, _controller) = spawn(config, recorder.clone());
    drop(handle);
    wait_until("three resync passes", || recorder.count("a") == 3).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_controller_and_aborts_in_flight_reconciles() {
    let recorder = Arc::new(
        Recorder::new(|key, _| match key {
            "long" => (Duration::from_secs(3600), Step::Ok(Action::Done)),
            _ => (Duration::ZERO, Step::Ok(Action::Done)),
        })
        .with_list(|_| Ok(Vec::new())),
    );
    let config = ControllerConfig {
        resync: Some(SEC),
        ..config("stoppable", 2)
    };
    let (handle, controller) = spawn(config, recorder.clone());
    handle.enqueue("long");
    wait_until("long running", || recorder.in_flight() == 1).await;

    controller.shutdown();
    wait_until("long aborted", || recorder.in_flight() == 0).await;
    let lists = recorder.list_calls.load(Ordering::SeqCst);
    handle.enqueue("a");
    sleep(60 * SEC).await;
    assert_eq!(recorder.count("a"), 0, "no reconcile after shutdown");
    assert_eq!(
        recorder.list_calls.load(Ordering::SeqCst),
        lists,
        "no resync after shutdown"
    );
}

/// The same machinery on real threads and a real clock: keys run in parallel and a panic on a
/// worker thread is still contained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_keys_in_parallel_on_a_multi_threaded_runtime() {
    const KEYS: [Key; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let recorder = Arc::new(Recorder::new(|key, run| match (key, run) {
        ("boom", 0) => (Duration::ZERO, Step::Panic),
        _ => (50 * MS, Step::Ok(Action::Done)),
    }));
    let config = ControllerConfig {
        backoff_base: 10 * MS,
        ..config("threaded", 4)
    };
    let (handle, _controller) = spawn(config, recorder.clone());

    handle.enqueue("boom");
    handle.enqueue_many(KEYS);
    wait_until("every key done", || {
        KEYS.iter().all(|k| recorder.count(k) == 1) && recorder.count("boom") == 2
    })
    .await;
    wait_reconciles(&handle, 10).await;
    let log = recorder.log.lock().unwrap();
    assert!(
        log.max_in_flight > 1 && log.max_in_flight <= 4,
        "{}",
        log.max_in_flight
    );
    assert!(!log.overlapped);
    assert_eq!(handle.metrics().panics, 1);
}
