//! Target groups: registered targets, their health, the routing snapshot requests read, target
//! selection (round robin with slow start, least outstanding requests, `AWSALB` stickiness)
//! and draining.
//!
//! Concurrency: a group's registrations and settings sit behind one mutex that only control
//! operations and health changes take. Requests read `routing`, an immutable snapshot swapped
//! atomically whenever the set of routable targets changes, and per-target atomics.
//! Lock order: group `inner`, then a target's `health`. The observer is called with a target's
//! health lock held so that its reports for one target arrive in order; it must not call back
//! into the data plane.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gantry_model::elbv2::{
    Algorithm, TargetConfig, TargetGroupConfig, TargetHealthReport, TargetProtocolVersion,
    TargetReason, TargetState,
};
use http::uri::Authority;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::health::{self, Health, Outcome};
use crate::upstream::Upstream;
use crate::{workers, Shared};

/// A target in slow start gets at least this share of a full weight.
const SLOW_START_FLOOR: f64 = 0.02;

pub struct TargetGroup {
    pub arn: String,
    /// The `AWSALBTG` cookie value naming this group.
    pub token: String,
    shared: Arc<Shared>,
    routing: ArcSwap<Routing>,
    round_robin: AtomicUsize,
    inner: Mutex<GroupInner>,
}

struct GroupInner {
    /// `None` until the group is put, and again after it is removed.
    config: Option<Arc<TargetGroupConfig>>,
    /// Whether some listener rule forwards to the group.
    in_use: bool,
    /// Registered targets, draining ones included.
    targets: Vec<Arc<Target>>,
}

/// What requests read: the targets they may be sent to now.
pub struct Routing {
    pub targets: Vec<RoutedTarget>,
    algorithm: Algorithm,
    slow_start: Duration,
    /// Until when some target is still ramping up (weighted selection until then).
    ramp_until: Option<Instant>,
    /// The `AWSALB` cookie's life, when target stickiness is on.
    pub stickiness: Option<Duration>,
    /// Application-based stickiness (`AWSALBAPP-0`), when on.
    pub app_cookie: Option<Arc<AppCookie>>,
    pub protocol: TargetProtocolVersion,
}

/// Application-based stickiness as the routing snapshot holds it.
pub struct AppCookie {
    /// The application's cookie: a response that sets it gets `AWSALBAPP-0`.
    pub name: Box<str>,
    /// The `AWSALBAPP-0` cookie's life.
    pub life: Duration,
}

impl AppCookie {
    /// Whether a `Set-Cookie` value sets the application's cookie.
    pub fn is_set_by(&self, set_cookie: &[u8]) -> bool {
        let name = self.name.as_bytes();
        set_cookie.len() > name.len()
            && set_cookie[name.len()] == b'='
            && set_cookie[..name.len()] == *name
    }
}

/// A request's application-based stickiness: the `AWSALBAPP-0` cookie naming its target, and
/// whether the request carried one.
pub struct AppStickyAnswer {
    pub app: Arc<AppCookie>,
    pub cookie: http::HeaderValue,
    pub carried: bool,
}

impl AppStickyAnswer {
    /// Whether the response gets the cookie: when it sets the application's cookie, and when
    /// the request carried one (as ALB does: the stickiness is renewed, and a client whose
    /// target is gone sticks to the one that answered instead).
    pub fn applies<'a>(&self, mut set_cookies: impl Iterator<Item = &'a [u8]>) -> bool {
        self.carried || set_cookies.any(|value| self.app.is_set_by(value))
    }
}

pub struct RoutedTarget {
    pub target: Arc<Target>,
    ramp_start: Option<Instant>,
}

pub struct Target {
    pub config: TargetConfig,
    pub addr: SocketAddr,
    pub authority: Authority,
    /// The `AWSALB` cookie value naming this target.
    pub token: String,
    /// One connection pool per worker, so a request uses connections of its own thread; each
    /// on its own cache lines, so that workers locking their pools do not contend for a line.
    upstreams: Vec<CacheLine<Upstream>>,
    outstanding: AtomicUsize,
    /// Mirrors `health.failing()`, so that an answered request takes no lock unless it has a
    /// run of failures to end.
    failing: AtomicBool,
    draining: AtomicBool,
    /// Set when the target has left its group (drained or removed): no request may start on
    /// it any more, even one that picked it from an older routing snapshot.
    gone: AtomicBool,
    /// Woken when a draining target's last request ends.
    idle: Notify,
    health: Mutex<Health>,
    /// The health checker or the drain timer, whichever runs.
    task: Mutex<Option<JoinHandle<()>>>,
    group_arn: String,
}

/// A value alone on its cache lines (128 bytes: adjacent-line prefetching pairs 64-byte lines).
#[repr(align(128))]
struct CacheLine<T>(T);

/// Counts a request as outstanding on its target until dropped.
pub struct InFlight {
    target: Arc<Target>,
}

impl InFlight {
    /// Marks a request in flight on `target`; `None` when the target has already left its
    /// group (its drain has finished), and the request must pick again.
    ///
    /// With `finish_drain` this is a store-then-load pair on both sides (`outstanding` here,
    /// `gone` there), sequentially consistent: either this sees `gone`, or the drain sees the
    /// request outstanding and waits for it.
    pub fn new(target: Arc<Target>) -> Option<InFlight> {
        target.outstanding.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight { target };
        if in_flight.target.gone.load(Ordering::SeqCst) {
            // Dropping it takes the mark back (and wakes a drain waiting for it).
            return None;
        }
        Some(in_flight)
    }

    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.target.outstanding.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.target.draining.load(Ordering::Acquire) {
            self.target.idle.notify_waiters();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take routing down with it: the data is still consistent
    // (every critical section leaves it so before anything that could panic).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A short stable token (FNV-1a, hex) naming a target or a group in a cookie.
fn token_of(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl Target {
    fn new(
        group_arn: &str,
        config: TargetConfig,
        protocol: TargetProtocolVersion,
        workers: usize,
    ) -> Target {
        let addr = SocketAddr::new(config.address, config.port);
        let authority = Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid"));
        let (state, reason, description) = (
            TargetState::Initial,
            TargetReason::RegistrationInProgress,
            health::DESCRIPTION_REGISTRATION,
        );
        Target {
            token: token_of(&format!("{group_arn}|{addr}")),
            addr,
            authority,
            upstreams: (0..workers.max(1))
                .map(|_| CacheLine(Upstream::new(addr, protocol)))
                .collect(),
            outstanding: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            idle: Notify::new(),
            health: Mutex::new(Health::new(state, reason, description)),
            task: Mutex::new(None),
            group_arn: group_arn.to_string(),
            config,
        }
    }

    /// The connections of the calling worker.
    pub fn upstream(&self) -> &Upstream {
        &self.upstreams[workers::current_index() % self.upstreams.len()].0
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn report(&self, health: &Health) -> TargetHealthReport {
        TargetHealthReport {
            target_group_arn: self.group_arn.clone(),
            id: self.config.id.clone(),
            port: self.config.port,
            state: health.state,
            reason: health.reason,
            description: health.description.clone(),
        }
    }

    fn stop_task(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// What makes two registrations the same target: id, port and address.
type Registration<'a> = (&'a str, u16, IpAddr);

fn registration(config: &TargetConfig) -> Registration<'_> {
    (config.id.as_str(), config.port, config.address)
}

impl TargetGroup {
    pub fn new(arn: &str, shared: Arc<Shared>) -> TargetGroup {
        TargetGroup {
            arn: arn.to_string(),
            token: token_of(arn),
            shared,
            routing: ArcSwap::from_pointee(Routing {
                targets: Vec::new(),
                algorithm: Algorithm::RoundRobin,
                slow_start: Duration::ZERO,
                ramp_until: None,
                stickiness: None,
                app_cookie: None,
                protocol: TargetProtocolVersion::Http1,
            }),
            round_robin: AtomicUsize::new(0),
            inner: Mutex::new(GroupInner {
                config: None,
                in_use: false,
                targets: Vec::new(),
            }),
        }
    }

    /// Whether the group has been put (and not removed since).
    pub fn exists(&self) -> bool {
        lock(&self.inner).config.is_some()
    }

    pub fn routing(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// The target for a request: the sticky one when `sticky` names a routable target, else
    /// by the group's algorithm. `None` when the group has no target to send to.
    pub fn pick(&self, routing: &Routing, sticky: Option<&str>) -> Option<Arc<Target>> {
        let targets = &routing.targets;
        if targets.is_empty() {
            return None;
        }
        if let Some(token) = sticky {
            if let Some(routed) = targets.iter().find(|t| t.target.token == token) {
                return Some(routed.target.clone());
            }
        }
        let n = targets.len();
        if n == 1 {
            // Nothing to choose between: no shared counter to bounce between the workers.
            return Some(targets[0].target.clone());
        }
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let chosen = match routing.algorithm {
            Algorithm::LeastOutstandingRequests => {
                let start = turn % n;
                let mut best = start;
                let mut best_load = usize::MAX;
                for i in 0..n {
                    let index = (start + i) % n;
                    let load = targets[index].target.outstanding();
                    if load < best_load {
                        best = index;
                        best_load = load;
                    }
                }
                best
            }
            Algorithm::RoundRobin => match routing.ramp_until {
                Some(until) if Instant::now() < until => weighted_pick(targets, routing.slow_start),
                _ => turn % n,
            },
        };
        Some(targets[chosen].target.clone())
    }

    /// Applies a `put_target_group`: settings, new targets, removed targets drained.
    pub fn put(self: &Arc<Self>, config: TargetGroupConfig) {
        let mut inner = lock(&self.inner);
        let protocol_changed = inner
            .config
            .as_ref()
            .is_some_and(|old| old.protocol_version != config.protocol_version);
        let config = Arc::new(config);
        inner.config = Some(config.clone());

        // Each wanted registration, to the index of its (last) entry in the config.
        let wanted: HashMap<Registration<'_>, usize> = config
            .targets
            .iter()
            .enumerate()
            .map(|(index, t)| (registration(t), index))
            .collect();
        // The wanted registrations that have a live (kept, not draining) target.
        let mut live: HashSet<usize> = HashSet::with_capacity(config.targets.len());
        let mut kept: Vec<Arc<Target>> = Vec::with_capacity(config.targets.len());
        let mut removed: Vec<Arc<Target>> = Vec::new();
        for existing in inner.targets.drain(..) {
            let wanted_index = wanted.get(&registration(&existing.config)).copied();
            let draining = existing.draining.load(Ordering::Acquire);
            match wanted_index {
                Some(index) if !draining && !protocol_changed => {
                    live.insert(index);
                    kept.push(existing);
                }
                // Still draining from an earlier put.
                None if draining => kept.push(existing),
                _ => removed.push(existing),
            }
        }
        // Registered again while draining, or moved to another protocol: the old one is
        // replaced at once by a fresh registration.
        for old in removed.iter().filter(|old| {
            old.draining.load(Ordering::Acquire) || wanted.contains_key(&registration(&old.config))
        }) {
            old.stop_task();
            // Left the group at once: a request that picked it from an older snapshot picks
            // again.
            old.gone.store(true, Ordering::SeqCst);
        }
        for wanted_target in &config.targets {
            let Some(&index) = wanted.get(&registration(wanted_target)) else {
                continue;
            };
            // Duplicates in the config share an index: one target each.
            if live.insert(index) {
                let target = Arc::new(Target::new(
                    &self.arn,
                    wanted_target.clone(),
                    config.protocol_version,
                    self.shared.workers.count(),
                ));
                // Reported now when it will be checked; otherwise `reconcile` reports its
                // first state (not in use, or checks disabled).
                if inner.in_use && config.health_check.enabled {
                    self.shared.report(&target.report(&lock(&target.health)));
                }
                kept.push(target);
            }
        }
        let to_drain: Vec<Arc<Target>> = removed
            .into_iter()
            .filter(|old| {
                !old.draining.load(Ordering::Acquire)
                    && !wanted.contains_key(&registration(&old.config))
            })
            .collect();
        for target in &to_drain {
            self.mark_draining(target);
            kept.push(target.clone());
        }
        inner.targets = kept;
        self.reconcile(&mut inner);
        // Only now that requests route without them: a drain that saw no request in flight
        // before the swap could miss one picked from the old snapshot. One with none in flight
        // (always so in a group no listener uses) leaves at once, so that the deregistration
        // is over when the control plane's next read looks.
        for target in &to_drain {
            if !self.finish_drain_locked(&mut inner, target, false) {
                self.spawn_drain(target, config.deregistration_delay);
            }
        }
    }

    /// Applies `remove_target_group`: every target stops at once.
    pub fn remove(&self) {
        let mut inner = lock(&self.inner);
        inner.config = None;
        for target in inner.targets.drain(..) {
            target.stop_task();
            target.gone.store(true, Ordering::SeqCst);
            let mut health = lock(&target.health);
            health.set(
                TargetState::Unused,
                TargetReason::NotRegistered,
                health::DESCRIPTION_NOT_REGISTERED,
            );
            self.shared.report(&target.report(&health));
        }
        self.rebuild_routing(&inner);
    }

    pub fn set_in_use(self: &Arc<Self>, in_use: bool) {
        let mut inner = lock(&self.inner);
        if inner.in_use != in_use {
            inner.in_use = in_use;
            self.reconcile(&mut inner);
        }
    }

    pub fn reports(&self) -> Vec<TargetHealthReport> {
        let inner = lock(&self.inner);
        inner
            .targets
            .iter()
            .map(|t| t.report(&lock(&t.health)))
            .collect()
    }

    /// Brings every registered, non-draining target to the mode the group's settings ask for:
    /// not in use, checks disabled, or checked (starting its checker when it has none).
    fn reconcile(self: &Arc<Self>, inner: &mut GroupInner) {
        let Some(config) = inner.config.clone() else {
            self.rebuild_routing(inner);
            return;
        };
        for target in &inner.targets {
            if target.draining.load(Ordering::Acquire) {
                continue;
            }
            let fixed = if !inner.in_use {
                Some((
                    TargetState::Unused,
                    TargetReason::NotInUse,
                    health::DESCRIPTION_NOT_IN_USE,
                ))
            } else if !config.health_check.enabled {
                Some((
                    TargetState::Unavailable,
                    TargetReason::HealthCheckDisabled,
                    health::DESCRIPTION_DISABLED,
                ))
            } else {
                None
            };
            let mut task = lock(&target.task);
            match fixed {
                Some((state, reason, description)) => {
                    if let Some(checker) = task.take() {
                        checker.abort();
                    }
                    let mut health = lock(&target.health);
                    if health.set(state, reason, description) {
                        self.shared.report(&target.report(&health));
                    }
                }
                None if task.is_none() => {
                    {
                        let mut health = lock(&target.health);
                        if health.set(
                            TargetState::Initial,
                            TargetReason::RegistrationInProgress,
                            health::DESCRIPTION_REGISTRATION,
                        ) {
                            self.shared.report(&target.report(&health));
                        }
                    }
                    let checker = run_checks(Arc::downgrade(self), target.clone());
                    *task = Some(self.shared.runtime.spawn(checker));
                }
                None => {}
            }
        }
        self.rebuild_routing(inner);
    }

    /// Swaps in a new routing snapshot from the targets' current health: the healthy ones (and
    /// those with checks disabled or not in use); when none is, every registered target that
    /// is not draining (ELBv2 fails open).
    fn rebuild_routing(&self, inner: &GroupInner) {
        let Some(config) = inner.config.as_ref() else {
            self.routing.store(Arc::new(Routing {
                targets: Vec::new(),
                algorithm: Algorithm::RoundRobin,
                slow_start: Duration::ZERO,
                ramp_until: None,
                stickiness: None,
                app_cookie: None,
                protocol: TargetProtocolVersion::Http1,
            }));
            return;
        };
        let mut routable = Vec::new();
        let mut fail_open = Vec::new();
        for target in &inner.targets {
            if target.draining.load(Ordering::Acquire) {
                continue;
            }
            let health = lock(&target.health);
            fail_open.push(RoutedTarget {
                target: target.clone(),
                ramp_start: None,
            });
            match health.state {
                TargetState::Healthy => routable.push(RoutedTarget {
                    target: target.clone(),
                    ramp_start: health.healthy_since,
                }),
                TargetState::Unavailable | TargetState::Unused => routable.push(RoutedTarget {
                    target: target.clone(),
                    ramp_start: None,
                }),
                _ => {}
            }
        }
        let targets = if routable.is_empty() {
            fail_open
        } else {
            routable
        };
        let now = Instant::now();
        let ramp_until = if config.slow_start.is_zero() || targets.len() < 2 {
            None
        } else {
            targets
                .iter()
                .filter_map(|t| t.ramp_start.map(|start| start + config.slow_start))
                .filter(|end| *end > now)
                .max()
        };
        self.routing.store(Arc::new(Routing {
            targets,
            algorithm: config.algorithm,
            slow_start: config.slow_start,
            ramp_until,
            stickiness: config.stickiness,
            app_cookie: config.app_cookie.as_ref().map(|a| {
                Arc::new(AppCookie {
                    name: a.cookie_name.trim().into(),
                    life: a.duration,
                })
            }),
            protocol: config.protocol_version,
        }));
    }

    /// Counts a request the target answered: it ends the target's run of failed requests.
    /// Lock-free unless there is such a run.
    pub fn record_answered(&self, target: &Arc<Target>) {
        if target.failing.load(Ordering::Acquire) {
            self.record(target, Outcome::Success, true);
        }
    }

    /// Counts one outcome for `target` (an active check, or a request: `passive`) and reports
    /// and re-routes when its state changes.
    pub fn record(&self, target: &Arc<Target>, outcome: Outcome, passive: bool) {
        let inner = lock(&self.inner);
        let Some(config) = inner.config.as_ref() else {
            return;
        };
        if target.draining.load(Ordering::Acquire)
            || !inner.in_use
            || !config.health_check.enabled
            || !inner.targets.iter().any(|t| Arc::ptr_eq(t, target))
        {
            // Not counted: no run of failures for answered requests to end either.
            target.failing.store(false, Ordering::Release);
            return;
        }
        let changed = {
            let mut health = lock(&target.health);
            // Requests reach initial and unhealthy targets only when the group fails open;
            // `record_passive` leaves those to the active checks.
            let changed = if passive {
                health.record_passive(outcome, config.health_check.unhealthy_threshold)
            } else {
                health.record(
                    outcome,
                    config.health_check.healthy_threshold,
                    config.health_check.unhealthy_threshold,
                )
            };
            target.failing.store(health.failing(), Ordering::Release);
            if changed {
                self.shared.report(&target.report(&health));
            }
            changed
        };
        if changed {
            self.rebuild_routing(&inner);
        }
    }

    /// Takes `target` out of rotation (the next routing snapshot leaves it out) and reports
    /// it draining.
    fn mark_draining(&self, target: &Arc<Target>) {
        target.stop_task();
        target.draining.store(true, Ordering::Release);
        {
            let mut health = lock(&target.health);
            health.set(
                TargetState::Draining,
                TargetReason::DeregistrationInProgress,
                health::DESCRIPTION_DRAINING,
            );
            self.shared.report(&target.report(&health));
        }
    }

    /// Waits for the draining target's last request (or the delay), then removes it. Called
    /// after the routing snapshot without the target is in place.
    fn spawn_drain(self: &Arc<Self>, target: &Arc<Target>, delay: Duration) {
        let group = Arc::downgrade(self);
        let draining = target.clone();
        let drain = async move {
            let deadline = tokio::time::Instant::now() + delay;
            loop {
                let idle = draining.idle.notified();
                let expired = if draining.outstanding.load(Ordering::SeqCst) == 0 {
                    false
                } else {
                    tokio::select! {
                        _ = idle => continue,
                        _ = tokio::time::sleep_until(deadline) => true,
                    }
                };
                match group.upgrade() {
                    Some(group) if !group.finish_drain(&draining, expired) => {}
                    _ => return,
                }
            }
        };
        *lock(&target.task) = Some(self.shared.runtime.spawn(drain));
    }

    /// Removes a draining target from the group unless, before the delay has `expired`, a
    /// request (from an older routing snapshot) started on it meanwhile. Returns whether the
    /// drain is over.
    fn finish_drain(&self, target: &Arc<Target>, expired: bool) -> bool {
        let mut inner = lock(&self.inner);
        self.finish_drain_locked(&mut inner, target, expired)
    }

    /// [`Self::finish_drain`] with the group's lock held.
    fn finish_drain_locked(
        &self,
        inner: &mut GroupInner,
        target: &Arc<Target>,
        expired: bool,
    ) -> bool {
        if !inner.targets.iter().any(|t| Arc::ptr_eq(t, target)) {
            return true;
        }
        target.gone.store(true, Ordering::SeqCst);
        if !expired && target.outstanding.load(Ordering::SeqCst) > 0 {
            target.gone.store(false, Ordering::SeqCst);
            return false;
        }
        inner.targets.retain(|t| !Arc::ptr_eq(t, target));
        let mut health = lock(&target.health);
        health.set(
            TargetState::Unused,
            TargetReason::NotRegistered,
            health::DESCRIPTION_NOT_REGISTERED,
        );
        self.shared.report(&target.report(&health));
        true
    }
}

/// Weighted random choice while targets ramp up: a ramping target's weight grows linearly
/// from a small floor to 1 over the slow start.
fn weighted_pick(targets: &[RoutedTarget], slow_start: Duration) -> usize {
    let now = Instant::now();
    let weight = |t: &RoutedTarget| match t.ramp_start {
        Some(start) if !slow_start.is_zero() => {
            let elapsed = now.saturating_duration_since(start).as_secs_f64();
            (elapsed / slow_start.as_secs_f64()).clamp(SLOW_START_FLOOR, 1.0)
        }
        _ => 1.0,
    };
    let total: f64 = targets.iter().map(weight).sum();
    let mut point = rand::random::<f64>() * total;
    for (index, target) in targets.iter().enumerate() {
        point -= weight(target);
        if point <= 0.0 {
            return index;
        }
    }
    targets.len() - 1
}

/// A target's health checker: checks at once, then every interval, reading the group's
/// current settings each time; ends when the group is gone (or is aborted).
async fn run_checks(group: Weak<TargetGroup>, target: Arc<Target>) {
    {
        let mut health = lock(&target.health);
        if health.set(
            TargetState::Initial,
            TargetReason::InitialHealthChecking,
            health::DESCRIPTION_INITIAL,
        ) {
            if let Some(group) = group.upgrade() {
                group.shared.report(&target.report(&health));
            }
        }
    }
    loop {
        let started = tokio::time::Instant::now();
        let Some(config) = group.upgrade().and_then(|g| lock(&g.inner).config.clone()) else {
            return;
        };
        let port = config.health_check.port.unwrap_or(target.config.port);
        let addr = SocketAddr::new(target.config.address, port);
        let outcome = health::check(addr, &config.health_check, config.protocol_version).await;
        match group.upgrade() {
            Some(group) => group.record(&target, outcome, false),
            None => return,
        }
        tokio::time::sleep_until(started + config.health_check.interval).await;
    }
}
