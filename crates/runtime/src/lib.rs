//! Controller runtime: the work queue every control-plane controller runs on.
//!
//! # Model
//!
//! A controller is level-triggered. Events (a store watch, an agent report, a timer) do not
//! carry work; they only name a *key* that may be out of date ("service X", "instance Y").
//! The runtime calls [`Reconciler::reconcile`] for that key, and the reconciler reads the
//! current state and moves the world one step towards the desired state. Because a run
//! always looks at the latest state, any number of events for one key can be folded into a
//! single run, and a run that fails can simply be repeated later. This is the shape of
//! kube-runtime's `Controller` and client-go's rate-limited workqueue.
//!
//! [`spawn`] starts one dispatcher task and returns a [`Handle`] (feed keys in, read
//! [`Metrics`]) and a [`Controller`] (stop it). The queue state lives behind one mutex that
//! handles and the dispatcher share: an enqueue is de-duplicated right where it happens, so a
//! storm of events for one key costs a hash lookup, not a channel slot, memory stays bounded
//! by the number of distinct keys, and [`Handle::metrics`] is an exact snapshot. Only the
//! dispatcher starts reconciles and records their outcome.
//!
//! # Guarantees
//!
//! 1. **De-duplication.** A key enqueued many times while it waits runs once.
//! 2. **One run per key at a time.** A key enqueued while it is being reconciled is marked
//!    *dirty* and runs exactly once more after the current run ends.
//! 3. **Bounded concurrency.** At most [`ControllerConfig::workers`] reconciles are in flight;
//!    different keys run in parallel up to that bound.
//! 4. **Per-key exponential back-off.** A run that returns `Err` or panics is retried after
//!    `base`, `2×base`, `4×base`, … capped at `backoff_cap`; a success resets the count. A key
//!    in back-off does not hold a worker, so it never delays other keys. An explicit enqueue
//!    does *not* cut a back-off short (nor does a dirty mark): a failing key whose events keep
//!    arriving would otherwise spin at full speed against whatever is failing. The retry reads
//!    the latest state anyway, so nothing is lost by waiting.
//! 5. **Requeue-after.** `Ok(Action::RequeueAfter(d))` runs the key again after `d`. An
//!    earlier enqueue runs it sooner and clears that timer: the new run decides again.
//! 6. **Periodic resync.** With [`ControllerConfig::resync`] set, every key returned by
//!    [`Reconciler::list`] is enqueued at start-up and then once per period, which repairs
//!    anything a missed event left behind. A `list` error is logged and the next period tries
//!    again.
//! 7. **Panic isolation.** A panicking reconcile fails only that run: it is logged, counted
//!    and retried with back-off like an error, and every other key keeps being served.
//! 8. **Metrics.** Queue depth, pending timers, in-flight runs, counters and latency
//!    percentiles over the last [`LATENCY_WINDOW`] runs.
//!
//! Timers are a `BTreeSet` of deadlines the dispatcher sleeps on with
//! [`tokio::time::sleep_until`]; nothing polls.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::{self, JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// How many recent reconciles the latency percentiles are computed over.
pub const LATENCY_WINDOW: usize = 1024;

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more to do until the key is enqueued again.
    Done,
    /// Reconcile this key again after the delay (unless something enqueues it sooner).
    RequeueAfter(Duration),
}

/// A failed reconcile: retried with per-key exponential back-off.
#[derive(Debug)]
pub struct ReconcileError(pub String);

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReconcileError {}

impl From<String> for ReconcileError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for ReconcileError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// The controller-specific part: how to bring one key up to date.
pub trait Reconciler: Send + Sync + 'static {
    /// Names one object to reconcile. `Ord` keeps the timer set ordered by (deadline, key).
    type Key: Clone + Eq + Hash + Ord + fmt::Debug + Send + Sync + 'static;

    /// Bring `key` to its desired state, reading the current state afresh.
    fn reconcile(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Action, ReconcileError>> + Send;

    /// Every key that exists now, for the periodic resync (default: none).
    fn list(&self) -> impl Future<Output = Result<Vec<Self::Key>, ReconcileError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// How a controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Used in logs and metrics.
    pub name: &'static str,
    /// Bounded concurrency; 0 is treated as 1.
    pub workers: usize,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    pub backoff_cap: Duration,
    /// Enqueue every key from [`Reconciler::list`] at start-up and then once per period.
    pub resync: Option<Duration>,
}

impl ControllerConfig {
    /// 4 workers, back-off from 50 ms up to 30 s, no resync.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            workers: 4,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(30),
            resync: None,
        }
    }
}

/// A snapshot of a controller's queue and history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub name: &'static str,
    /// Keys waiting to run now (not counting timers).
    pub queue_depth: usize,
    /// Keys with a pending timer (requeue-after, enqueue-after or back-off).
    pub scheduled: usize,
    /// Reconciles running now.
    pub in_flight: usize,
    /// Finished reconciles, whatever their outcome.
    pub reconciles: u64,
    /// Reconciles that returned `Err`.
    pub failures: u64,
    /// Reconciles that panicked (not counted in `failures`).
    pub panics: u64,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
}

/// Cheap to clone; how the outside world feeds the controller.
pub struct Handle<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Handle<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for Handle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("controller", &self.shared.config.name)
            .finish()
    }
}

impl<K: Clone + Eq + Hash + Ord> Handle<K> {
    /// Reconcile `key` soon. De-duplicated with a waiting run; marks a running key dirty;
    /// clears a requeue timer; does not cut a back-off short.
    pub fn enqueue(&self, key: K) {
        self.shared.lock().enqueue(key);
        self.shared.wake.notify_one();
    }

    /// [`Handle::enqueue`] for each key, under one lock.
    pub fn enqueue_many(&self, keys: impl IntoIterator<Item = K>) {
        {
            let mut state = self.shared.lock();
            for key in keys {
                state.enqueue(key);
            }
        }
        self.shared.wake.notify_one();
    }

    /// Reconcile `key` after `delay`. If the key already has a timer the earlier one is kept;
    /// a key that is waiting to run now, or is in back-off, is left as it is.
    pub fn enqueue_after(&self, key: K, delay: Duration) {
        self.shared.lock().enqueue_after(key, delay, Instant::now());
        self.shared.wake.notify_one();
    }

    /// A snapshot of the queue and the recent history.
    pub fn metrics(&self) -> Metrics {
        let (mut metrics, mut latencies) = {
            let state = self.shared.lock();
            let metrics = Metrics {
                name: self.shared.config.name,
                queue_depth: state.ready.len(),
                scheduled: state.timers.len(),
                in_flight: state.processing.len(),
                reconciles: state.reconciles,
                failures: state.failures,
                panics: state.panics,
                ..Metrics::default()
            };
            (metrics, Vec::from(state.latencies.clone()))
        };
        // Sorting 1024 durations is cheap; doing it outside the lock keeps enqueues fast.
        latencies.sort_unstable();
        metrics.latency_p50 = percentile(&latencies, 50);
        metrics.latency_p99 = percentile(&latencies, 99);
        metrics.latency_max = latencies.last().copied().unwrap_or_default();
        metrics
    }
}

/// Stops the controller on [`Controller::shutdown`] or drop: the dispatcher and resync tasks
/// are aborted, and with the dispatcher its in-flight reconciles (their `JoinSet` is dropped).
/// Dropping every [`Handle`] does not stop it; a resync-only controller needs no handle.
pub struct Controller {
    name: &'static str,
    tasks: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Stop the controller (same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for Controller {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .finish()
    }
}

/// Start the controller on the current tokio runtime.
///
/// # Panics
/// When called outside a tokio runtime (as `tokio::spawn` does).
pub fn spawn<R: Reconciler>(
    config: ControllerConfig,
    reconciler: Arc<R>,
) -> (Handle<R::Key>, Controller) {
    let shared = Arc::new(Shared {
        config: config.clone(),
        state: Mutex::new(State::default()),
        wake: Notify::new(),
    });
    let handle = Handle {
        shared: Arc::clone(&shared),
    };
    let mut tasks = vec![tokio::spawn(dispatch(
        Arc::clone(&shared),
        Arc::clone(&reconciler),
    ))];
    if let Some(period) = config.resync {
        tasks.push(tokio::spawn(resync(handle.clone(), reconciler, period)));
    }
    let controller = Controller {
        name: config.name,
        tasks,
    };
    (handle, controller)
}

struct Shared<K> {
    config: ControllerConfig,
    state: Mutex<State<K>>,
    /// Wakes the dispatcher after a handle changed the queue. `notify_one` stores a permit
    /// when the dispatcher is not waiting yet, so no wake-up is lost.
    wake: Notify,
}

impl<K> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // Only a panicking `Hash`/`Eq`/`Ord`/`Clone` of a key could poison the lock; the
        // queue is still usable, and refusing every later enqueue would be worse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    /// Requeue-after or enqueue-after: an enqueue replaces it.
    Requeue,
    /// Retry after a failure: only its deadline runs the key.
    Backoff,
}

/// The queue. Invariants: `queued` holds exactly the keys in `ready`; a key is never both in
/// `ready` and `processing`; `dirty` ⊆ `processing`; `timers` and `deadlines` hold the same
/// keys.
struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    timers: HashMap<K, (Instant, TimerKind)>,
    deadlines: BTreeSet<(Instant, K)>,
    /// Consecutive failures (errors or panics) per key; removed on success.
    attempts: HashMap<K, u32>,
    reconciles: u64,
    failures: u64,
    panics: u64,
    latencies: VecDeque<Duration>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            timers: HashMap::new(),
            deadlines: BTreeSet::new(),
            attempts: HashMap::new(),
            reconciles: 0,
            failures: 0,
            panics: 0,
            latencies: VecDeque::with_capacity(LATENCY_WINDOW),
        }
    }
}

/// How one reconcile ended.
enum Outcome {
    Ok(Action),
    Err(ReconcileError),
    Panic(String),
}

impl<K: Clone + Eq + Hash + Ord> State<K> {
    fn enqueue(&mut self, key: K) {
        match self.timers.get(&key) {
            Some((_, TimerKind::Backoff)) => return,
            Some(_) => self.cancel_timer(&key),
            None => {}
        }
        if self.processing.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn enqueue_after(&mut self, key: K, delay: Duration, now: Instant) {
        if delay.is_zero() {
            return self.enqueue(key);
        }
        if self.queued.contains(&key) {
            return; // runs now anyway, and that run decides again
        }
        // A deadline past the end of time is no timer at all.
        let Some(at) = now.checked_add(delay) else {
            return;
        };
        match self.timers.get(&key) {
            Some(&(_, TimerKind::Backoff)) => return,
            Some(&(earlier, _)) if earlier <= at => return,
            Some(_) => self.cancel_timer(&key),
            None => {}
        }
        self.set_timer(key, at, TimerKind::Requeue);
    }

    fn set_timer(&mut self, key: K, at: Instant, kind: TimerKind) {
        self.deadlines.insert((at, key.clone()));
        self.timers.insert(key, (at, kind));
    }

    fn cancel_timer(&mut self, key: &K) {
        if let Some((at, _)) = self.timers.remove(key) {
            self.deadlines.remove(&(at, key.clone()));
        }
    }

    /// Move every key whose deadline has passed into the ready queue.
    fn fire_due_timers(&mut self, now: Instant) {
        while let Some((at, _)) = self.deadlines.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.deadlines.pop_first() {
                // Remove the timer first, so a back-off timer lets its own key through.
                self.timers.remove(&key);
                self.enqueue(key);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    fn start_next(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    /// Record the end of a run and decide what happens to the key next. Returns the back-off
    /// delay when the run failed.
    fn finish(
        &mut self,
        key: K,
        outcome: &Outcome,
        elapsed: Duration,
        config: &ControllerConfig,
    ) -> Option<Duration> {
        self.processing.remove(&key);
        let dirty = self.dirty.remove(&key);
        self.reconciles += 1;
        if self.latencies.len() == LATENCY_WINDOW {
            self.latencies.pop_front();
        }
        self.latencies.push_back(elapsed);
        let now = Instant::now();
        match outcome {
            Outcome::Ok(action) => {
                self.attempts.remove(&key);
                if dirty {
                    self.enqueue(key);
                } else if let Action::RequeueAfter(delay) = action {
                    self.enqueue_after(key, *delay, now);
                }
                None
            }
            Outcome::Err(_) | Outcome::Panic(_) => {
                if matches!(outcome, Outcome::Panic(_)) {
                    self.panics += 1;
                } else {
                    self.failures += 1;
                }
                let attempts = self.attempts.entry(key.clone()).or_insert(0);
                *attempts = attempts.saturating_add(1);
                let delay = backoff_delay(config.backoff_base, config.backoff_cap, *attempts);
                // The back-off replaces any requeue timer and swallows the dirty mark.
                self.cancel_timer(&key);
                if let Some(at) = now.checked_add(delay) {
                    self.set_timer(key, at, TimerKind::Backoff);
                }
                Some(delay)
            }
        }
    }
}

/// The delay before retry number `attempt` (1-based): `base × 2^(attempt-1)`, at most `cap`.
pub fn backoff_delay(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1);
    2u32.checked_pow(exponent)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(cap, |delay| delay.min(cap))
}

/// Nearest-rank percentile of sorted samples; zero when there are none.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The dispatcher: the only task that starts reconciles and records their outcome.
///
/// Each reconcile is its own tokio task in a `JoinSet` rather than a future polled inside
/// this task (e.g. `catch_unwind` over a `FuturesUnordered`): separate tasks run in parallel
/// on a multi-threaded runtime, tokio contains a panic to its task and reports it as
/// `JoinError::is_panic` without asserting unwind safety, and dropping the `JoinSet` (when
/// this task is aborted) aborts every in-flight reconcile.
async fn dispatch<R: Reconciler>(shared: Arc<Shared<R::Key>>, reconciler: Arc<R>) {
    let config = &shared.config;
    let workers = config.workers.max(1);
    let mut tasks: JoinSet<Result<Action, ReconcileError>> = JoinSet::new();
    let mut running: HashMap<task::Id, (R::Key, Instant)> = HashMap::new();
    loop {
        let next_deadline = {
            let mut state = shared.lock();
            state.fire_due_timers(Instant::now());
            while tasks.len() < workers {
                let Some(key) = state.start_next() else { break };
                let reconciler = Arc::clone(&reconciler);
                let run_key = key.clone();
                let task = tasks.spawn(async move { reconciler.reconcile(&run_key).await });
                running.insert(task.id(), (key, Instant::now()));
            }
            state.next_deadline()
        };

        tokio::select! {
            () = shared.wake.notified() => {}
            () = sleep_until_or_forever(next_deadline) => {}
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, outcome) = match joined {
                    Ok((id, Ok(action))) => (id, Outcome::Ok(action)),
                    Ok((id, Err(error))) => (id, Outcome::Err(error)),
                    Err(error) => (error.id(), Outcome::Panic(join_error_message(error))),
                };
                let Some((key, started)) = running.remove(&id) else { continue };
                let retry_in = shared.lock().finish(key.clone(), &outcome, started.elapsed(), config);
                let controller = config.name;
                match (&outcome, retry_in) {
                    (Outcome::Err(error), Some(retry_in)) => tracing::warn!(
                        controller, key = ?key, %error, ?retry_in, "reconcile failed"
                    ),
                    (Outcome::Panic(panic), Some(retry_in)) => tracing::error!(
                        controller, key = ?key, %panic, ?retry_in, "reconcile panicked"
                    ),
                    _ => {}
                }
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn join_error_message(error: JoinError) -> String {
    if !error.is_panic() {
        return error.to_string(); // cancelled: only possible while shutting down
    }
    panic_message(&*error.into_panic())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Enqueue every listed key at start-up and then once per period.
async fn resync<R: Reconciler>(handle: Handle<R::Key>, reconciler: Arc<R>, period: Duration) {
    let controller = handle.shared.config.name;
    let mut ticks = tokio::time::interval(period.max(Duration::from_millis(1)));
    // A slow `list` delays the next pass instead of causing a burst of catch-up passes.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // `list` is user code: a panic must not end the resync loop for good.
        match AssertUnwindSafe(reconciler.list()).catch_unwind().await {
            Ok(Ok(keys)) => handle.enqueue_many(keys),
            Ok(Err(error)) => tracing::warn!(controller, %error, "resync list failed"),
            Err(payload) => {
                let panic = panic_message(&*payload);
                tracing::error!(controller, %panic, "resync list panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_and_stops_at_cap() {
        let base = Duration::from_millis(50);
        let cap = Duration::from_secs(30);
        let delays: Vec<_> = (1..=5).map(|n| backoff_delay(base, cap, n)).collect();
        let expected: Vec<_> = [50, 100, 200, 400, 800]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(delays, expected);
        assert_eq!(backoff_delay(base, cap, 11), cap); // 51.2 s
        assert_eq!(backoff_delay(base, cap, 40), cap); // 2^39 overflows u32
        assert_eq!(backoff_delay(base, cap, u32::MAX), cap);
        assert_eq!(backoff_delay(Duration::from_secs(60), cap, 1), cap);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let samples: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn state_keeps_its_invariants_through_a_run() {
        let config = ControllerConfig::new("unit");
        let mut state = State::<u32>::default();
        let now = Instant::now();
        state.enqueue(1);
        state.enqueue(1);
        assert_eq!(state.ready.len(), 1);
        assert_eq!(state.start_next(), Some(1));
        state.enqueue(1);
        state.enqueue(1);
        assert!(state.dirty.contains(&1) && state.ready.is_empty());
        state.enqueue_after(2, Duration::from_secs(5), now);
        state.enqueue_after(2, Duration::from_secs(3), now);
        state.enqueue_after(2, Duration::from_secs(9), now);
        assert_eq!(state.next_deadline(), Some(now + Duration::from_secs(3)));
        assert_eq!(state.timers.len(), state.deadlines.len());
        // Failing with a dirty mark: back-off wins, the dirty mark is dropped.
        let retry = state.finish(1, &Outcome::Err("x".into()), Duration::ZERO, &config);
        assert_eq!(retry, Some(config.backoff_base));
        assert!(state.dirty.is_empty() && state.processing.is_empty());
        state.enqueue(1);
        assert!(state.ready.is_empty(), "enqueue must not skip back-off");
        assert_eq!(state.timers.len(), 2);
        assert_eq!(state.timers.len(), state.deadlines.len());
    }
}
