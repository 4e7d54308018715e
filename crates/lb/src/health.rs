//! Target health: ELBv2's state machine (states, reasons and descriptions as AWS reports
//! them) and the active health check (one HTTP GET on its own connection, bounded by the
//! check's timeout).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use gantry_model::elbv2::{HealthCheckConfig, TargetProtocolVersion, TargetReason, TargetState};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub const DESCRIPTION_REGISTRATION: &str = "Target registration is in progress";
pub const DESCRIPTION_INITIAL: &str = "Initial health checks in progress";
pub const DESCRIPTION_TIMEOUT: &str = "Request timed out";
pub const DESCRIPTION_FAILED: &str = "Health checks failed";
pub const DESCRIPTION_NOT_REGISTERED: &str = "Target is not registered to the target group";
pub const DESCRIPTION_NOT_IN_USE: &str =
    "Target group is not configured to receive traffic from the load balancer";
pub const DESCRIPTION_DRAINING: &str = "Target deregistration is in progress";
pub const DESCRIPTION_DISABLED: &str = "Health checks are disabled";

/// The result of one check, or of one forwarded request (see `Health::record_passive`).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    Failure {
        reason: TargetReason,
        description: String,
    },
}

impl Outcome {
    pub fn connection_failed() -> Outcome {
        Outcome::Failure {
            reason: TargetReason::FailedHealthChecks,
            description: DESCRIPTION_FAILED.to_string(),
        }
    }

    /// A request sent whole that the target left unanswered (or a target that stopped
    /// reading it) for the listener's idle timeout: the client got a 504.
    pub fn timed_out() -> Outcome {
        Outcome::Failure {
            reason: TargetReason::Timeout,
            description: DESCRIPTION_TIMEOUT.to_string(),
        }
    }
}

/// One target's health as reported, with the counters that move it.
#[derive(Debug, Clone)]
pub struct Health {
    pub state: TargetState,
    pub reason: Option<TargetReason>,
    pub description: Option<String>,
    successes: u32,
    /// Consecutive failed active checks (only a passing check resets them).
    failures: u32,
    /// Consecutive failed requests (an answered request or a passing check resets them).
    /// Kept apart from `failures`: answered requests must not hide failing checks.
    passive_failures: u32,
    /// When the target last became healthy (the start of its slow start).
    pub healthy_since: Option<Instant>,
}

impl Health {
    pub fn new(state: TargetState, reason: TargetReason, description: &str) -> Health {
        Health {
            state,
            reason: Some(reason),
            description: Some(description.to_string()),
            successes: 0,
            failures: 0,
            passive_failures: 0,
            healthy_since: None,
        }
    }

    /// Moves to a fixed state (registration, draining, not in use, checks disabled), clearing
    /// the counters. Returns whether anything reported changed.
    pub fn set(&mut self, state: TargetState, reason: TargetReason, description: &str) -> bool {
        self.successes = 0;
        self.failures = 0;
        self.passive_failures = 0;
        if state != TargetState::Healthy {
            self.healthy_since = None;
        }
        let changed = self.state != state
            || self.reason != Some(reason)
            || self.description.as_deref() != Some(description);
        self.state = state;
        self.reason = Some(reason);
        self.description = Some(description.to_string());
        changed
    }

    /// Whether failures have been counted since the last success (passive successes then
    /// have something to reset).
    pub fn failing(&self) -> bool {
        self.passive_failures > 0
    }

    /// Counts one request's outcome on a healthy target: a request the target answered
    /// (whatever the status) ends a run of failures; a failed one counts as a failed check.
    /// Requests never move a target that is not healthy (initial or unhealthy): only active
    /// checks do, so their success counts are left alone. Returns whether anything reported
    /// changed.
    pub fn record_passive(&mut self, outcome: Outcome, unhealthy_threshold: u32) -> bool {
        if self.state != TargetState::Healthy {
            return false;
        }
        match outcome {
            Outcome::Success => {
                self.passive_failures = 0;
                false
            }
            Outcome::Failure {
                reason,
                description,
            } => {
                self.successes = 0;
                self.passive_failures = self.passive_failures.saturating_add(1);
                self.fail_if_over(reason, description, unhealthy_threshold)
            }
        }
    }

    /// Counts one check's outcome with the group's thresholds. Returns whether anything
    /// reported changed.
    pub fn record(
        &mut self,
        outcome: Outcome,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> bool {
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.passive_failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.state != TargetState::Healthy && self.successes >= healthy_threshold.max(1)
                {
                    self.state = TargetState::Healthy;
                    self.reason = None;
                    self.description = None;
                    self.healthy_since = Some(Instant::now());
                    return true;
                }
                false
            }
            Outcome::Failure {
                reason,
                description,
            } => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.fail_if_over(reason, description, unhealthy_threshold)
            }
        }
    }

    /// Unhealthy once the failed checks and the failed requests in a row reach the threshold.
    fn fail_if_over(
        &mut self,
        reason: TargetReason,
        description: String,
        unhealthy_threshold: u32,
    ) -> bool {
        let failures = self.failures.saturating_add(self.passive_failures);
        if failures < unhealthy_threshold.max(1) {
            return false;
        }
        let changed = self.state != TargetState::Unhealthy
            || self.reason != Some(reason)
            || self.description.as_deref() != Some(description.as_str());
        self.state = TargetState::Unhealthy;
        self.reason = Some(reason);
        self.description = Some(description);
        self.healthy_since = None;
        changed
    }
}

/// Whether `status` is one the matcher accepts (`200`, `200,202`, `200-299`).
pub fn matcher_accepts(matcher: &str, status: u16) -> bool {
    matcher
        .split(',')
        .map(str::trim)
        .any(|item| match item.split_once('-') {
            Some((low, high)) => match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                (Ok(low), Ok(high)) => (low..=high).contains(&status),
                _ => false,
            },
            None => item.parse::<u16>() == Ok(status),
        })
}

/// Runs one health check against `addr`.
pub async fn check(
    addr: SocketAddr,
    config: &HealthCheckConfig,
    protocol: TargetProtocolVersion,
) -> Outcome {
    match tokio::time::timeout(config.timeout, probe(addr, &config.path, protocol)).await {
        Err(_) => Outcome::Failure {
            reason: TargetReason::Timeout,
            description: DESCRIPTION_TIMEOUT.to_string(),
        },
        Ok(Err(())) => Outcome::connection_failed(),
        Ok(Ok(status)) if matcher_accepts(&config.matcher, status) => Outcome::Success,
        Ok(Ok(status)) => Outcome::Failure {
            reason: TargetReason::ResponseCodeMismatch,
            description: format!("Health checks failed with these codes: [{status}]"),
        },
    }
}

/// One GET on a fresh connection; the connection is driven here (not spawned), so returning
/// or a timeout that drops this future closes it.
async fn probe(addr: SocketAddr, path: &str, protocol: TargetProtocolVersion) -> Result<u16, ()> {
    let stream = TcpStream::connect(addr).await.map_err(|_| ())?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let path = if path.starts_with('/') { path } else { "/" };
    let request = http::Request::get(path)
        .header(http::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .header(http::header::HOST, addr.to_string());
    match protocol {
        TargetProtocolVersion::Http1 => {
            let request = request.body(Empty::<Bytes>::new()).map_err(|_| ())?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|_| ())?;
            tokio::pin!(connection);
            let send = sender.send_request(request);
            tokio::pin!(send);
            // A server that answers and closes at once (HTTP/1.0 style, e.g. busybox httpd)
            // ends the connection in the same poll that delivers the response: the answer is
            // still waiting in `send` then.
            tokio::select! {
                biased;
                response = &mut send => response.map(|r| r.status().as_u16()).map_err(|_| ()),
                _ = &mut connection => (&mut send).await.map(|r| r.status().as_u16()).map_err(|_| ()),
            }
        }
        TargetProtocolVersion::Http2 => {
            let uri = format!("http://{addr}{path}");
            let request = http::Request::get(uri)
                .header(http::header::USER_AGENT, "ELB-HealthChecker/2.0")
                .body(Empty::<Bytes>::new())
                .map_err(|_| ())?;
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|_| ())?;
            tokio::pin!(connection);
            let send = sender.send_request(request);
            tokio::pin!(send);
            // A server that answers and closes at once (HTTP/1.0 style, e.g. busybox httpd)
            // ends the connection in the same poll that delivers the response: the answer is
            // still waiting in `send` then.
            tokio::select! {
                biased;
                response = &mut send => response.map(|r| r.status().as_u16()).map_err(|_| ()),
                _ = &mut connection => (&mut send).await.map(|r| r.status().as_u16()).map_err(|_| ()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_accept_lists_and_ranges() {
        assert!(matcher_accepts("200", 200));
        assert!(!matcher_accepts("200", 201));
        assert!(matcher_accepts("200,202", 202));
        assert!(matcher_accepts("200-299", 250));
        assert!(!matcher_accepts("200-299", 300));
        assert!(matcher_accepts("200, 300-302", 301));
        assert!(!matcher_accepts("garbage", 200));
    }

    #[test]
    fn thresholds_move_states() {
        let mut h = Health::new(
            TargetState::Initial,
            TargetReason::InitialHealthChecking,
            DESCRIPTION_INITIAL,
        );
        assert!(!h.record(Outcome::Success, 2, 2));
        assert!(h.record(Outcome::Success, 2, 2));
        assert_eq!(h.state, TargetState::Healthy);
        let fail = Outcome::Failure {
            reason: TargetReason::ResponseCodeMismatch,
            description: "Health checks failed with these codes: [500]".into(),
        };
        assert!(!h.record(fail.clone(), 2, 2));
        assert!(h.record(fail.clone(), 2, 2));
        assert_eq!(h.state, TargetState::Unhealthy);
        assert!(!h.record(fail, 2, 2));
        assert!(h.record(Outcome::connection_failed(), 2, 2));
        assert_eq!(h.reason, Some(TargetReason::FailedHealthChecks));
    }

    #[test]
    fn requests_reset_failure_runs_and_never_move_targets_that_are_not_healthy() {
        let mut h = Health::new(
            TargetState::Initial,
            TargetReason::InitialHealthChecking,
            DESCRIPTION_INITIAL,
        );
        h.record(Outcome::Success, 2, 2);
        h.record(Outcome::Success, 2, 2);
        assert_eq!(h.state, TargetState::Healthy);
        // Failure, answered request, failure: no two failures in a row.
        assert!(!h.record_passive(Outcome::connection_failed(), 2));
        assert!(h.failing());
        assert!(!h.record_passive(Outcome::Success, 2));
        assert!(!h.failing());
        assert!(!h.record_passive(Outcome::connection_failed(), 2));
        assert_eq!(h.state, TargetState::Healthy);
        assert!(h.record_passive(Outcome::connection_failed(), 2));
        assert_eq!(h.state, TargetState::Unhealthy);
        // Unhealthy: one passing check so far; failed requests do not undo it, answered ones
        // do not make the target healthy.
        h.record(Outcome::Success, 2, 2);
        assert!(!h.record_passive(Outcome::connection_failed(), 2));
        assert!(!h.record_passive(Outcome::Success, 2));
        assert_eq!(h.state, TargetState::Unhealthy);
        assert!(h.record(Outcome::Success, 2, 2));
        assert_eq!(h.state, TargetState::Healthy);
    }

    #[test]
    fn answered_requests_do_not_hide_failing_checks() {
        let mut h = Health::new(
            TargetState::Initial,
            TargetReason::InitialHealthChecking,
            DESCRIPTION_INITIAL,
        );
        h.record(Outcome::Success, 2, 2);
        h.record(Outcome::Success, 2, 2);
        let mismatch = || Outcome::Failure {
            reason: TargetReason::ResponseCodeMismatch,
            description: "Health checks failed with these codes: [503]".into(),
        };
        // Check fails, traffic flows (answered), check fails again: unhealthy.
        assert!(!h.record(mismatch(), 2, 2));
        for _ in 0..10 {
            assert!(!h.record_passive(Outcome::Success, 2));
        }
        assert!(h.record(mismatch(), 2, 2));
        assert_eq!(h.state, TargetState::Unhealthy);
        assert_eq!(h.reason, Some(TargetReason::ResponseCodeMismatch));
    }
}
