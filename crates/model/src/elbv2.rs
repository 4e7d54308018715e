//! The contract between the control plane and the load balancer's data plane.
//!
//! The control plane owns the ELBv2 resources (load balancers, listeners, rules, target groups,
//! registered targets) and speaks their wire format. It hands the data plane (the `lb` crate)
//! one object at a time in the shapes below — compiled, validated, with addresses already
//! resolved — and reads back each target's health. The data plane keeps no state of its own
//! beyond this configuration, so a restart re-applies it from the store.
//!
//! Objects are keyed by their ARNs. Every `put_*` replaces the whole object of that ARN; a
//! target group's targets travel with it, and a target that disappears from a `put` is
//! deregistered: it drains (no new requests; in-flight ones finish, bounded by the group's
//! deregistration delay) and is reported `draining` until it is gone.

use std::net::IpAddr;
use std::time::Duration;

/// The cookie of target-group stickiness (`stickiness.type = lb_cookie`), as on AWS.
pub const TARGET_STICKINESS_COOKIE: &str = "AWSALB";
/// The cookie of a forward action's target-group stickiness, as on AWS.
pub const GROUP_STICKINESS_COOKIE: &str = "AWSALBTG";
/// The cookie of application-based stickiness (`stickiness.type = app_cookie`), as on AWS
/// (which splits a long value over `AWSALBAPP-0` to `-3`; Gantry's fits in the first).
pub const APP_STICKINESS_COOKIE: &str = "AWSALBAPP-0";

/// A listener: one port on the data plane's bind address and its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub arn: String,
    pub load_balancer_arn: String,
    /// The load balancer's name, for logs and the `X-Amzn-Trace-Id`-style diagnostics.
    pub load_balancer_name: String,
    pub port: u16,
    /// Non-default rules in ascending priority, then the default rule (`priority: None`) last.
    pub rules: Vec<RuleConfig>,
    /// The load balancer's `idle_timeout.timeout_seconds` (60 by default): an idle client
    /// connection is closed after it, and a forwarded request whose bytes stop moving (in
    /// either direction) for that long is cut.
    pub idle_timeout: Duration,
}

/// A listener rule: all conditions must match (AND); values within a condition are ORed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub arn: String,
    /// `None` for the listener's default rule.
    pub priority: Option<u32>,
    pub conditions: Vec<Condition>,
    pub action: RuleAction,
}

/// A rule condition, as ELBv2 defines them. Patterns use ELBv2's wildcards: `*` (any run of
/// characters) and `?` (one character); host and method compare case-insensitively, path,
/// header values and query strings case-sensitively except header names.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Any of the patterns matches the request path (without the query string).
    PathPattern(Vec<String>),
    /// Any of the patterns matches the `Host` header (port stripped).
    HostHeader(Vec<String>),
    /// The named header (case-insensitive) has a value matching any pattern.
    HttpHeader { name: String, values: Vec<String> },
    /// The method is one of these (exact, upper case).
    HttpRequestMethod(Vec<String>),
    /// Any of the key/value pairs matches a query parameter; a `None` key matches any key.
    QueryString(Vec<QueryStringPair>),
    /// The client's address is in any of these CIDR blocks.
    SourceIp(Vec<Cidr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStringPair {
    pub key: Option<String>,
    pub value: String,
}

/// An IPv4 or IPv6 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `2001:db8::/32`; `None` when it is not a CIDR block.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = text.split_once('/')?;
        let address: IpAddr = address.parse().ok()?;
        let prefix_len: u8 = prefix.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Cidr {
            address,
            prefix_len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen on an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// Forward to one target group, or spread over several by weight.
    Forward {
        target_groups: Vec<WeightedTargetGroup>,
        /// Target-group stickiness of the forward action (`AWSALBTG` cookie), when enabled.
        stickiness: Option<Duration>,
    },
    FixedResponse {
        status_code: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// ELBv2's redirect: each part may use `#{protocol}`, `#{host}`, `#{port}`, `#{path}`
    /// and `#{query}`; the defaults keep the request's own value.
    Redirect {
        protocol: String,
        port: String,
        host: String,
        path: String,
        query: String,
        /// 301 (`HTTP_301`) or 302 (`HTTP_302`).
        status_code: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTargetGroup {
    pub arn: String,
    /// 0..=999; a group with weight 0 gets no requests, but is still in use (its targets are
    /// health-checked), as in ELBv2.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    /// Targets are IP addresses (awsvpc tasks).
    Ip,
    /// Targets are container instances, by the host port a task's container is mapped to.
    Instance,
}

/// How the data plane talks to targets (the group's `ProtocolVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetProtocolVersion {
    Http1,
    /// HTTP/2 with prior knowledge (h2c) to the target.
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstandingRequests,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    /// The path requested with GET (`/` by default).
    pub path: String,
    /// `None`: the target's own traffic port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// ELBv2's matcher: `200`, `200,202`, `200-299`.
    pub matcher: String,
}

/// A target group's settings and its registered targets.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroupConfig {
    pub arn: String,
    pub name: String,
    pub target_type: TargetType,
    pub protocol_version: TargetProtocolVersion,
    pub health_check: HealthCheckConfig,
    pub algorithm: Algorithm,
    /// `deregistration_delay.timeout_seconds`: the upper bound of draining.
    pub deregistration_delay: Duration,
    /// `slow_start.duration_seconds`: a newly healthy target's share ramps up linearly over it
    /// (zero: off).
    pub slow_start: Duration,
    /// Target stickiness (`stickiness.enabled` with `lb_cookie`): the `AWSALB` cookie's life.
    pub stickiness: Option<Duration>,
    /// Application-based stickiness (`stickiness.enabled` with `app_cookie`).
    pub app_cookie: Option<AppCookieStickiness>,
    pub targets: Vec<TargetConfig>,
}

/// `stickiness.type = app_cookie`: when a target's response sets the application's cookie,
/// the load balancer adds an `AWSALBAPP-0` cookie naming that target, and a request that
/// carries it goes to the same target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCookieStickiness {
    /// `stickiness.app_cookie.cookie_name`.
    pub cookie_name: String,
    /// `stickiness.app_cookie.duration_seconds`: the `AWSALBAPP-0` cookie's life.
    pub duration: Duration,
}

/// One registered target, with the address the data plane connects to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetConfig {
    /// The target's `Id` as registered: an IP address, or a container instance's id.
    pub id: String,
    pub port: u16,
    /// Where to connect: the IP itself for `ip` targets; the instance's address for
    /// `instance` targets.
    pub address: IpAddr,
}

/// `TargetHealth.State`, with ELBv2's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
        }
    }
}

/// `TargetHealth.Reason`, with ELBv2's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetReason {
    RegistrationInProgress,
    InitialHealthChecking,
    ResponseCodeMismatch,
    Timeout,
    FailedHealthChecks,
    NotRegistered,
    NotInUse,
    DeregistrationInProgress,
    InvalidState,
    HealthCheckDisabled,
    InternalError,
}

impl TargetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetReason::RegistrationInProgress => "Elb.RegistrationInProgress",
            TargetReason::InitialHealthChecking => "Elb.InitialHealthChecking",
            TargetReason::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            TargetReason::Timeout => "Target.Timeout",
            TargetReason::FailedHealthChecks => "Target.FailedHealthChecks",
            TargetReason::NotRegistered => "Target.NotRegistered",
            TargetReason::NotInUse => "Target.NotInUse",
            TargetReason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            TargetReason::InvalidState => "Target.InvalidState",
            TargetReason::HealthCheckDisabled => "Target.HealthCheckDisabled",
            TargetReason::InternalError => "Elb.InternalError",
        }
    }
}

/// One target's health as the data plane sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealthReport {
    pub target_group_arn: String,
    pub id: String,
    pub port: u16,
    pub state: TargetState,
    /// `None` when healthy.
    pub reason: Option<TargetReason>,
    /// ELBv2's human description, e.g. "Health checks failed with these codes: [500]".
    pub description: Option<String>,
}

/// A listener that could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindError {
    pub port: u16,
    /// What the operating system said, e.g. "Address already in use (os error 98)".
    pub message: String,
}

/// Called with every change of a target's state (including its disappearance after draining,
/// reported once as `unused` with `Target.NotRegistered`). Must not block.
pub type HealthObserver = Box<dyn Fn(&TargetHealthReport) + Send + Sync>;

/// The data plane as the control plane drives it. Implemented by the `lb` crate; the binary
/// wires one into the control plane.
pub trait LoadBalancerDataPlane: Send + Sync {
    /// Whether `port` could be served now: `Ok` when it is free or already served by the
    /// listener `listener_arn` itself. Called before a listener is created or moved, so that a
    /// port in use is refused by the API call rather than failing later.
    fn check_port(&self, port: u16, listener_arn: Option<&str>) -> Result<(), BindError>;
    /// Serves (or updates in place, without dropping connections) a listener. Binding happens
    /// before this returns.
    fn put_listener(&self, listener: ListenerConfig) -> Result<(), BindError>;
    fn remove_listener(&self, arn: &str);
    /// Creates or updates a target group with its targets; removed targets drain.
    fn put_target_group(&self, group: TargetGroupConfig);
    /// Removes a target group: its targets stop at once (no draining).
    fn remove_target_group(&self, arn: &str);
    /// The health of every target of the group, draining ones included.
    fn target_health(&self, target_group_arn: &str) -> Vec<TargetHealthReport>;
    /// Registers the observer of target state changes (one; a later call replaces it).
    fn observe_health(&self, observer: HealthObserver);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
    }
}
