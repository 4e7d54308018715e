//! Gantry's load balancer data plane: Application Load Balancer semantics (listeners, rules,
//! target groups, health checks, draining) served from one process, driven by the control
//! plane through [`gantry_model::elbv2::LoadBalancerDataPlane`].
//!
//! # Modules
//! - `listener`: binding, the accept loop (connection limit), each client
//!   connection's server (the `h1` path first, hyper's HTTP/1.1 + h2c server for the rest)
//!   and its watchdog (header-read and idle timeouts).
//! - `h1`: the HTTP/1.1 forwarding path for the common case (HTTP/1.1 client, forward to an
//!   HTTP/1.1 group): heads parsed in place (`httparse`) and rewritten into per-connection
//!   buffers, raw pooled keep-alive target connections, bodies passed through as framed.
//! - `routing` and `pattern`: a listener's rules compiled
//!   once per update (ELBv2 wildcards, conditions, weighted forward, redirect `Location`).
//! - `proxy`: one request: rule → fixed response, redirect, or forward with
//!   `X-Forwarded-*` and `X-Amzn-Trace-Id`, hop-by-hop headers removed, target failures as
//!   502 / 504, no target as 503, stickiness cookies.
//! - `target_group`: registered targets, the routing snapshot, selection
//!   (round robin with slow start, least outstanding requests, `AWSALB` stickiness) and
//!   draining.
//! - `health`: ELBv2's health state machine and the active check.
//! - `upstream`: connections to a target, per worker (HTTP/1.1 keep-alive pools of raw
//!   connections for `h1` and of hyper's handles for `proxy`, or h2c).
//! - `workers`: the data plane's threads, one single-threaded runtime each.
//!
//! # Threads
//! Client connections run on the data plane's own worker threads (`Limits::worker_threads`,
//! one current-thread tokio runtime each, like nginx's workers): a connection stays on one
//! worker, and each target keeps one pooled client per worker, so a request is parsed,
//! forwarded and answered without crossing threads. Health checks and drain timers run on the
//! runtime that called [`LoadBalancer::new`]. Dropping the `LoadBalancer` stops the workers.
//!
//! # How a request flows
//! The accept loop (on the first worker) takes a permit (or closes the connection when the
//! listener is full) and hands the connection to the next worker.
//!
//! The worker serves it on the `h1` path first: one task reads the client's socket into the
//! connection's buffer, parses the request head in place, loads the listener's compiled rules
//! (one atomic pointer load) and finds the first matching rule. When it forwards to an HTTP/1.1
//! group, the path picks the group (sticky `AWSALBTG`, else by weight) and the target (sticky
//! `AWSALB`, else by algorithm), marks the request in flight, writes the rewritten head with
//! the body bytes already read to a pooled raw connection of this worker (or a new one),
//! passes the rest of the body through, reads and rewrites the response head and streams the
//! body back, then returns the target connection to the pool. Each wait on either socket ends
//! after the listener's idle timeout: with a 504 before the target has answered, by cutting the
//! client connection after. Anything else — HTTP/2's preface, HTTP/1.0, `Upgrade`, `Expect`,
//! fixed responses, redirects, groups without targets, HTTP/2 groups, malformed heads — is
//! handed, with the bytes already read, to hyper's auto server for the rest of the connection.
//!
//! On hyper's path, `proxy::handle` routes each request the same way and sends forwards
//! through the target's pooled hyper client of this worker (keep-alive HTTP/1.1 or h2c). The
//! wait for the target's answer ends with a 504 when nothing (neither a request body frame
//! nor the answer) has moved for the listener's idle timeout; the request and response bodies
//! each end (the client connection is aborted) after the idle timeout without bytes. The
//! in-flight marks live in the response body, so they end when the response has been
//! streamed to the client (or abandoned).

//! # Invariants
//! - The request path takes no lock: rules and routing snapshots are swapped atomically
//!   (`ArcSwap`) by control operations and health changes; counters are atomics.
//! - Routing snapshots hold only non-draining targets: healthy ones (and those whose checks
//!   are disabled), or all registered ones when none is healthy (ELBv2 fails open).
//! - A target's state changes only under its group's lock, and every change is reported to the
//!   observer, in order, once. The observer is called with that lock held: it must not call
//!   back into the data plane.
//! - A draining target leaves its group when its last in-flight request ends or the
//!   deregistration delay passes, whichever is first; its pooled connections close with its
//!   clients when the last reference goes.
//! - Groups named by no listener rule's forward action (whatever its weight) are not
//!   health-checked (`unused`).
//! - A client connection is closed when an HTTP/1 request head takes longer than the
//!   header-read timeout, when it has had no request in flight and moved no bytes for the
//!   listener's idle timeout, or when with requests in flight it has moved no bytes for twice
//!   the idle timeout (a client that stopped reading).
//! - A draining target's drain starts only after the routing snapshot without it is in place,
//!   and ends only when, under the group's lock, no request is in flight on it (or the delay
//!   has passed); a target that has left its group refuses new requests, which pick again.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use gantry_model::elbv2::{
    BindError, HealthObserver, ListenerConfig, LoadBalancerDataPlane, TargetGroupConfig,
    TargetHealthReport,
};

mod h1;
mod health;
mod listener;
mod pattern;
mod proxy;
mod routing;
mod target_group;
mod upstream;
mod workers;

use listener::Listener;
use routing::CompiledListener;
use target_group::TargetGroup;

/// Protections of the listeners against misbehaving clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client must send a request's headers within this (10 s by default).
    pub header_read_timeout: Duration,
    /// The most header bytes of one request (64 KiB by default, as ALB); HTTP/1 requests over
    /// it are answered 431. Not less than 8 KiB.
    pub max_header_bytes: usize,
    /// Open client connections per listener; more are closed at once.
    pub max_connections_per_listener: usize,
    /// Concurrent streams per HTTP/2 client connection.
    pub max_concurrent_streams: u32,
    /// Threads serving connections, each with its own event loop (the machine's cores by
    /// default).
    pub worker_threads: usize,
    /// Whether HTTP/1.1 requests forwarded to HTTP/1.1 targets take the purpose-built
    /// forwarding path (`h1`) rather than hyper's server and client (on by default; off
    /// only to compare the two).
    pub http1_forwarding: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections_per_listener: 10_000,
            max_concurrent_streams: 128,
            worker_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            http1_forwarding: true,
        }
    }
}

/// What groups and their tasks share with the load balancer.
pub(crate) struct Shared {
    observer: ArcSwapOption<HealthObserver>,
    /// The caller's runtime: health checks and drain timers run there.
    runtime: tokio::runtime::Handle,
    /// Client connections and the requests on them run on the workers.
    workers: Arc<workers::Workers>,
}

impl Shared {
    pub(crate) fn report(&self, report: &TargetHealthReport) {
        if let Some(observer) = self.observer.load().as_ref() {
            observer(report);
        }
    }
}

/// The data plane: every listener of every load balancer, on one bind address.
pub struct LoadBalancer {
    bind_ip: IpAddr,
    limits: Limits,
    shared: Arc<Shared>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    listeners: HashMap<String, Listener>,
    /// Every group put or referenced by a listener; handles stay stable per ARN so compiled
    /// rules keep pointing at the live group.
    groups: HashMap<String, Arc<TargetGroup>>,
    /// The groups some listener's forward action names; recomputed when a listener changes.
    used: HashSet<String>,
}

impl LoadBalancer {
    /// A data plane serving on `bind_ip` with the default limits. Must be called within a
    /// tokio runtime, which runs its listeners and health checks.
    pub fn new(bind_ip: IpAddr) -> Arc<LoadBalancer> {
        LoadBalancer::with_limits(bind_ip, Limits::default())
    }

    pub fn with_limits(bind_ip: IpAddr, limits: Limits) -> Arc<LoadBalancer> {
        let runtime = tokio::runtime::Handle::current();
        let workers = Arc::new(workers::Workers::start(limits.worker_threads, &runtime));
        Arc::new(LoadBalancer {
            bind_ip,
            limits,
            shared: Arc::new(Shared {
                observer: ArcSwapOption::empty(),
                runtime,
                workers,
            }),
            state: Mutex::new(State::default()),
        })
    }

    /// Where the listener `arn` accepts connections.
    pub fn listener_addr(&self, arn: &str) -> Option<SocketAddr> {
        self.lock().listeners.get(arn).map(|l| l.local_addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After a listener changed: tells every group whether a listener forwards to it, and
    /// forgets removed groups no listener names any more.
    fn refresh_group_use(state: &mut State) {
        let mut used: HashSet<String> = HashSet::new();
        for listener in state.listeners.values() {
            let compiled = listener.ctx.compiled.load();
            used.extend(routing::forwarded_groups(&compiled).map(|g| g.arn.clone()));
        }
        state
            .groups
            .retain(|arn, group| used.contains(arn) || group.exists());
        for (arn, group) in &state.groups {
            group.set_in_use(used.contains(arn));
        }
        state.used = used;
    }

    fn port_taken_by_other(state: &State, port: u16, arn: Option<&str>) -> bool {
        state
            .listeners
            .iter()
            .any(|(other, l)| l.port == port && Some(other.as_str()) != arn)
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.shared.workers.stop();
    }
}

fn group_handle(
    groups: &mut HashMap<String, Arc<TargetGroup>>,
    shared: &Arc<Shared>,
    arn: &str,
) -> Arc<TargetGroup> {
    groups
        .entry(arn.to_string())
        .or_insert_with(|| Arc::new(TargetGroup::new(arn, shared.clone())))
        .clone()
}

fn in_use_error(port: u16) -> BindError {
    BindError {
        port,
        message: std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string(),
    }
}

impl LoadBalancerDataPlane for LoadBalancer {
    fn check_port(&self, port: u16, listener_arn: Option<&str>) -> Result<(), BindError> {
        let state = self.lock();
        if let Some(arn) = listener_arn {
            if state.listeners.get(arn).is_some_and(|l| l.port == port) {
                return Ok(());
            }
        }
        if Self::port_taken_by_other(&state, port, listener_arn) {
            return Err(in_use_error(port));
        }
        listener::bind(self.bind_ip, port).map(drop)
    }

    fn put_listener(&self, config: ListenerConfig) -> Result<(), BindError> {
        let mut state = self.lock();
        if Self::port_taken_by_other(&state, config.port, Some(&config.arn)) {
            return Err(in_use_error(config.port));
        }
        let compiled = {
            let groups = &mut state.groups;
            CompiledListener::compile(&config, |arn| group_handle(groups, &self.shared, arn))
        };
        let result = match state.listeners.get(&config.arn) {
            Some(existing) if existing.port == config.port => {
                existing.ctx.compiled.store(Arc::new(compiled));
                Ok(())
            }
            _ => listener::bind(self.bind_ip, config.port)
                .and_then(|bound| {
                    listener::start(
                        bound,
                        config.port,
                        compiled,
                        self.limits.clone(),
                        &self.shared.workers,
                    )
                })
                .map(|served| {
                    // Replaces (and so stops) the listener's previous port, if any.
                    state.listeners.insert(config.arn.clone(), served);
                }),
        };
        Self::refresh_group_use(&mut state);
        result
    }

    fn remove_listener(&self, arn: &str) {
        let mut state = self.lock();
        if state.listeners.remove(arn).is_some() {
            Self::refresh_group_use(&mut state);
        }
    }

    fn put_target_group(&self, group: TargetGroupConfig) {
        let mut state = self.lock();
        let handle = group_handle(&mut state.groups, &self.shared, &group.arn);
        let in_use = state.used.contains(&group.arn);
        handle.put(group);
        // Listeners did not change: only this group's use is looked up (a no-op unless its
        // handle is new, which only an unused group's can be).
        handle.set_in_use(in_use);
    }

    fn remove_target_group(&self, arn: &str) {
        let mut state = self.lock();
        if let Some(group) = state.groups.get(arn).cloned() {
            group.remove();
            // A handle a listener still names stays, for the group's return.
            if !state.used.contains(arn) {
                state.groups.remove(arn);
            }
        }
    }

    fn target_health(&self, target_group_arn: &str) -> Vec<TargetHealthReport> {
        let group = self.lock().groups.get(target_group_arn).cloned();
        group.map(|g| g.reports()).unwrap_or_default()
    }

    fn observe_health(&self, observer: HealthObserver) {
        self.shared.observer.store(Some(Arc::new(observer)));
    }
}
