//! A listener's rules, compiled once per `put_listener`: conditions with their patterns parsed,
//! forward actions with their target groups resolved to shared handles (so a request never
//! looks a group up by ARN), and the evaluation of a request against them in order.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gantry_model::elbv2::{Cidr, Condition, ListenerConfig, RuleAction};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::pattern::Pattern;
use crate::target_group::TargetGroup;

/// One listener's configuration as the request path reads it.
pub struct CompiledListener {
    pub idle_timeout: Duration,
    pub rules: Vec<CompiledRule>,
}

pub struct CompiledRule {
    conditions: Vec<CompiledCondition>,
    pub action: CompiledAction,
}

enum CompiledCondition {
    Path(Vec<Pattern>),
    Host(Vec<Pattern>),
    Header {
        name: HeaderName,
        values: Vec<Pattern>,
    },
    Method(Vec<Method>),
    Query(Vec<(Option<Pattern>, Pattern)>),
    SourceIp(Vec<Cidr>),
    /// A condition that can never match (e.g. an invalid header name): the rule is skipped
    /// rather than matching everything.
    Never,
}

pub enum CompiledAction {
    Forward(ForwardAction),
    Fixed {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    Redirect(RedirectAction),
}

pub struct ForwardAction {
    /// Groups with a positive weight only: where requests go.
    pub groups: Vec<(Arc<TargetGroup>, u32)>,
    /// Every group the action names, weight 0 included: in ELBv2 a group a forward action
    /// names is in use (its targets are health-checked) whatever its weight.
    pub named: Vec<Arc<TargetGroup>>,
    total_weight: u32,
    /// Spreads requests over the groups in exact proportion to the weights.
    counter: AtomicUsize,
    /// `AWSALBTG` cookie life, when the action's group stickiness is on.
    pub stickiness: Option<Duration>,
}

impl ForwardAction {
    /// The group for a request: the sticky one when the client's `AWSALBTG` names one of the
    /// action's groups, else the next by weight.
    pub fn choose(&self, sticky_group: Option<&str>) -> Option<&Arc<TargetGroup>> {
        if let (Some(_), Some(token)) = (self.stickiness, sticky_group) {
            if let Some((group, _)) = self.groups.iter().find(|(g, _)| g.token == token) {
                return Some(group);
            }
        }
        match self.groups.as_slice() {
            [] => None,
            [(only, _)] => Some(only),
            groups => {
                let slot = (self.counter.fetch_add(1, Ordering::Relaxed)
                    % self.total_weight as usize) as u32;
                let mut cumulative = 0;
                for (group, weight) in groups {
                    cumulative += weight;
                    if slot < cumulative {
                        return Some(group);
                    }
                }
                groups.last().map(|(g, _)| g)
            }
        }
    }
}

pub struct RedirectAction {
    protocol: String,
    port: String,
    host: String,
    path: String,
    query: String,
    pub status: StatusCode,
}

/// What the conditions look at, taken from the request once.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The host without its port, when the request names one.
    pub host: Option<&'a str>,
    pub headers: RequestHeaders<'a>,
    pub client_ip: IpAddr,
    pub listener_port: u16,
}

/// A request's headers: hyper's map, or the raw lines the HTTP/1.1 forwarding path parsed.
#[derive(Clone, Copy)]
pub enum RequestHeaders<'a> {
    Map(&'a HeaderMap),
    Raw(&'a [httparse::Header<'a>]),
}

impl<'a> RequestHeaders<'a> {
    /// Whether some value of header `name` (as text; values that are not visible ASCII are
    /// skipped, as `HeaderValue::to_str` does) satisfies `test`.
    pub fn any_value(&self, name: &HeaderName, mut test: impl FnMut(&'a str) -> bool) -> bool {
        match *self {
            RequestHeaders::Map(map) => map
                .get_all(name)
                .iter()
                .any(|value| value.to_str().is_ok_and(&mut test)),
            RequestHeaders::Raw(raw) => raw
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name.as_str()))
                .any(|h| header_text(h.value).is_some_and(&mut test)),
        }
    }
}

/// A raw header value as text, when it is visible ASCII (and tabs), as `HeaderValue::to_str`
/// accepts.
pub fn header_text(value: &[u8]) -> Option<&str> {
    if value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

impl CompiledListener {
    /// Compiles `config`; `group` resolves a target group's ARN to its shared handle.
    pub fn compile(
        config: &ListenerConfig,
        mut group: impl FnMut(&str) -> Arc<TargetGroup>,
    ) -> CompiledListener {
        let rules = config
            .rules
            .iter()
            .map(|rule| CompiledRule {
                conditions: rule.conditions.iter().map(compile_condition).collect(),
                action: compile_action(&rule.action, &mut group),
            })
            .collect();
        CompiledListener {
            idle_timeout: config.idle_timeout,
            rules,
        }
    }

    /// The first rule whose conditions all match.
    pub fn route(&self, facts: &RequestFacts<'_>) -> Option<&CompiledRule> {
        self.rules
            .iter()
            .find(|rule| rule.conditions.iter().all(|c| c.matches(facts)))
    }
}

fn compile_condition(condition: &Condition) -> CompiledCondition {
    match condition {
        Condition::PathPattern(values) => {
            CompiledCondition::Path(values.iter().map(|v| Pattern::new(v, false)).collect())
        }
        Condition::HostHeader(values) => {
            CompiledCondition::Host(values.iter().map(|v| Pattern::new(v, true)).collect())
        }
        Condition::HttpHeader { name, values } => match HeaderName::try_from(name.as_str()) {
            Ok(name) => CompiledCondition::Header {
                name,
                values: values.iter().map(|v| Pattern::new(v, true)).collect(),
            },
            Err(_) => CompiledCondition::Never,
        },
        Condition::HttpRequestMethod(values) => CompiledCondition::Method(
            values
                .iter()
                .filter_map(|v| Method::from_bytes(v.as_bytes()).ok())
                .collect(),
        ),
        Condition::QueryString(pairs) => CompiledCondition::Query(
            pairs
                .iter()
                .map(|pair| {
                    (
                        pair.key.as_deref().map(|k| Pattern::new(k, true)),
                        Pattern::new(&pair.value, true),
                    )
                })
                .collect(),
        ),
        Condition::SourceIp(blocks) => CompiledCondition::SourceIp(blocks.clone()),
    }
}

fn compile_action(
    action: &RuleAction,
    group: &mut impl FnMut(&str) -> Arc<TargetGroup>,
) -> CompiledAction {
    match action {
        RuleAction::Forward {
            target_groups,
            stickiness,
        } => {
            let named: Vec<Arc<TargetGroup>> =
                target_groups.iter().map(|g| group(&g.arn)).collect();
            let groups: Vec<(Arc<TargetGroup>, u32)> = target_groups
                .iter()
                .zip(&named)
                .filter(|(g, _)| g.weight > 0 || target_groups.len() == 1)
                .map(|(g, handle)| (handle.clone(), g.weight.max(1)))
                .collect();
            let total_weight = groups.iter().map(|(_, w)| *w).sum::<u32>().max(1);
            CompiledAction::Forward(ForwardAction {
                groups,
                named,
                total_weight,
                counter: AtomicUsize::new(0),
                stickiness: *stickiness,
            })
        }
        RuleAction::FixedResponse {
            status_code,
            content_type,
            body,
        } => CompiledAction::Fixed {
            status: StatusCode::from_u16(*status_code).unwrap_or(StatusCode::OK),
            content_type: content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok()),
            body: Bytes::from(body.clone().unwrap_or_default()),
        },
        RuleAction::Redirect {
            protocol,
            port,
            host,
            path,
            query,
            status_code,
        } => CompiledAction::Redirect(RedirectAction {
            protocol: protocol.clone(),
            port: port.clone(),
            host: host.clone(),
            path: path.clone(),
            query: query.clone(),
            status: if *status_code == 301 {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::FOUND
            },
        }),
    }
}

/// Every group a forward action names, weight 0 included (for "is this group in use").
pub fn forwarded_groups(listener: &CompiledListener) -> impl Iterator<Item = &Arc<TargetGroup>> {
    listener.rules.iter().flat_map(|rule| match &rule.action {
        CompiledAction::Forward(forward) => forward.named.iter().collect(),
        _ => Vec::new(),
    })
}

impl CompiledCondition {
    fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        match self {
            CompiledCondition::Path(patterns) => patterns.iter().any(|p| p.matches(facts.path)),
            CompiledCondition::Host(patterns) => match facts.host {
                Some(host) => patterns.iter().any(|p| p.matches(host)),
                None => false,
            },
            CompiledCondition::Header { name, values } => facts
                .headers
                .any_value(name, |value| values.iter().any(|p| p.matches(value))),
            CompiledCondition::Method(methods) => methods.iter().any(|m| m == facts.method),
            CompiledCondition::Query(pairs) => {
                let Some(query) = facts.query else {
                    return false;
                };
                query_pairs(query).any(|(key, value)| {
                    pairs.iter().any(|(want_key, want_value)| {
                        want_key.as_ref().is_none_or(|k| k.matches(&key))
                            && want_value.matches(&value)
                    })
                })
            }
            CompiledCondition::SourceIp(blocks) => {
                blocks.iter().any(|block| block.contains(facts.client_ip))
            }
            CompiledCondition::Never => false,
        }
    }
}

/// The query string's `key=value` pairs, percent-decoded (`+` as a space).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key), percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The host of a `Host` header or an authority, without its port (`[::1]:80` → `[::1]`).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl RedirectAction {
    /// The `Location` of the redirect: each part with ELBv2's `#{…}` keywords replaced by the
    /// request's values; the port is left out when it is the protocol's default.
    pub fn location(&self, facts: &RequestFacts<'_>) -> String {
        let path_without_slash = facts.path.strip_prefix('/').unwrap_or(facts.path);
        let port = facts.listener_port.to_string();
        let substitute = |template: &str| {
            template
                .replace("#{protocol}", "http")
                .replace("#{host}", facts.host.unwrap_or(""))
                .replace("#{port}", &port)
                .replace("#{path}", path_without_slash)
                .replace("#{query}", facts.query.unwrap_or(""))
        };
        let protocol = substitute(&self.protocol).to_ascii_lowercase();
        let host = substitute(&self.host);
        let port = substitute(&self.port);
        let mut path = substitute(&self.path);
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let query = substitute(&self.query);
        let default_port = match protocol.as_str() {
            "https" => "443",
            _ => "80",
        };
        let mut location = format!("{protocol}://{host}");
        if !port.is_empty() && port != default_port {
            location.push(':');
            location.push_str(&port);
        }
        location.push_str(&path);
        if !query.is_empty() {
            location.push('?');
            location.push_str(&query);
        }
        location
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn query_pairs_are_decoded() {
        let pairs: Vec<_> = query_pairs("a=1&b=x%20y&c&d=p+q&e=%zz").collect();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "p q".into()),
                ("e".into(), "%zz".into()),
            ]
        );
    }

    #[test]
    fn redirects_substitute_keywords_and_drop_default_ports() {
        let headers = HeaderMap::new();
        let facts = RequestFacts {
            method: &Method::GET,
            path: "/a/b",
            query: Some("x=1"),
            host: Some("example.com"),
            headers: RequestHeaders::Map(&headers),
            client_ip: "127.0.0.1".parse().unwrap(),
            listener_port: 8080,
        };
        let redirect = RedirectAction {
            protocol: "HTTPS".into(),
            port: "443".into(),
            host: "#{host}".into(),
            path: "/new/#{path}".into(),
            query: "#{query}&y=2".into(),
            status: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            redirect.location(&facts),
            "https://example.com/new/a/b?x=1&y=2"
        );
        let same = RedirectAction {
            protocol: "#{protocol}".into(),
            port: "#{port}".into(),
            host: "#{host}".into(),
            path: "/#{path}".into(),
            query: "#{query}".into(),
            status: StatusCode::FOUND,
        };
        assert_eq!(same.location(&facts), "http://example.com:8080/a/b?x=1");
    }
}
