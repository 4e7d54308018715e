//! `gantry lb`: the load balancers with their listeners and rules, the target groups and each
//! target's health, read through the ELBv2 API like any other client (awsQuery: form POSTs,
//! XML answers read with `roxmltree`), printed as a tree or as JSON; `--watch` redraws it.

use crate::client::{ApiClient, ApiError};
use clap::Args;
use futures::StreamExt;
use roxmltree::{Document, Node};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct LbArgs {
    /// Show only this load balancer (name or ARN) and the target groups it forwards to.
    pub name: Option<String>,
    /// Print one JSON document of the same data instead of the tree (with --watch, one
    /// document per line per view).
    #[arg(long)]
    pub json: bool,
    /// Keep the view live: redraw it every --interval seconds until Ctrl-C (or --count views).
    #[arg(long, short)]
    pub watch: bool,
    /// With --watch: seconds between views.
    #[arg(
        long,
        default_value_t = 2,
        value_name = "SECS",
        requires = "watch",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub interval: u64,
    /// With --watch: stop after this many views (default: until Ctrl-C).
    #[arg(
        long,
        value_name = "N",
        requires = "watch",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub count: Option<u64>,
    /// How many items to ask for per Describe call (ELBv2's `PageSize`, 1-400); the server's
    /// default when not given. Every page is read either way (`Marker`/`NextMarker`).
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..=400))]
    pub page_size: Option<u32>,
    /// Gantry's endpoint (ELBv2 is served on the same one as ECS).
    #[arg(long, default_value = crate::DEFAULT_ENDPOINT, env = "GANTRY_ENDPOINT")]
    pub endpoint: String,
}

pub const LB_HELP: &str = "\
Examples:
  gantry lb                  # every load balancer and target group, with each target's health
  gantry lb web              # one load balancer and the target groups it forwards to
  gantry lb --watch          # redraw every 2 seconds until Ctrl-C
  gantry lb web --watch --interval 1 --count 60
  gantry lb --json | jq '.targetGroups[].targets[] | select(.state != \"healthy\")'

What it shows, read through the ELBv2 API (DescribeLoadBalancers, DescribeListeners,
DescribeRules, DescribeTargetGroups, DescribeTargetHealth):
  LOAD BALANCER  name (state)  DNS name
    LISTENER  protocol :port
      RULE priority  conditions  -> forward group (share of the traffic) | fixed-response | redirect
  TARGET GROUP  name  target type  protocol:port  health check
    TARGET  id:port  state  reason  description
Target states are ELBv2's (initial, healthy, unhealthy, unused, draining, unavailable) with
ELBv2's reasons, e.g. Target.ResponseCodeMismatch. A target group that no listener or rule
forwards to is marked so: its targets are `unused` until one does.

--json prints {\"loadBalancers\": [...], \"targetGroups\": [...]}: the same data, each load
balancer with its listeners and their rules (the default rule last), each target group with
its health check and targets.

Load balancers are created with the AWS CLI (or any ELBv2 client) against the same endpoint:
  aws --endpoint-url http://127.0.0.1:7420 elbv2 create-load-balancer --name web
See docs/ELBV2.md.";

/// Everything `gantry lb` shows.
#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LbView {
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub name: String,
    pub arn: String,
    pub dns_name: String,
    pub state: String,
    pub scheme: String,
    pub listeners: Vec<Listener>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub arn: String,
    pub protocol: String,
    pub port: u16,
    /// In priority order, the default rule last.
    pub rules: Vec<Rule>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub arn: String,
    /// A number, or `default` for the listener's default rule.
    pub priority: String,
    pub is_default: bool,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub field: String,
    /// For `http-header`: the header's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// For `query-string`: `key=value`, or `value` for a pair without a key.
    pub values: Vec<String>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// `forward`, `fixed-response` or `redirect`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `forward`: the groups with their weights.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_groups: Vec<WeightedGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_response: Option<FixedResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedGroup {
    pub name: String,
    pub arn: String,
    pub weight: u32,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FixedResponse {
    pub status_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    pub status_code: String,
    pub protocol: String,
    pub host: String,
    pub port: String,
    pub path: String,
    pub query: String,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroup {
    pub name: String,
    pub arn: String,
    pub target_type: String,
    pub protocol: String,
    pub port: u16,
    pub health_check: HealthCheck,
    /// The load balancers whose listeners or rules forward to this group; empty when none does.
    pub load_balancer_arns: Vec<String>,
    pub targets: Vec<Target>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: String,
    /// A port number or `traffic-port` (each target's own port).
    pub port: String,
    pub path: String,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// The HTTP codes that count as healthy (`200`, `200-299`, `200,202`).
    pub matcher: String,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

// ---- Reading the XML answers ----

/// The element child `name` of `node`.
fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The text of the element child `name` (`""` for an empty element), `None` when absent.
fn text(node: Node, name: &str) -> Option<String> {
    child(node, name).map(|c| c.text().unwrap_or("").trim().to_string())
}

/// The text of the element child `name`, `None` when absent or empty.
fn opt_text(node: Node, name: &str) -> Option<String> {
    text(node, name).filter(|t| !t.is_empty())
}

/// A number in the element child `name`, `default` when absent; an error when not a number.
fn number<T: std::str::FromStr>(node: Node, name: &str, default: T) -> Result<T, String> {
    match opt_text(node, name) {
        None => Ok(default),
        Some(t) => t
            .parse()
            .map_err(|_| format!("the server sent {name} `{t}`, which is not a number")),
    }
}

/// The `member`s of the awsQuery list element `list` (none when the list is absent).
fn members<'a, 'i>(node: Node<'a, 'i>, list: &str) -> Vec<Node<'a, 'i>> {
    child(node, list)
        .map(|l| {
            l.children()
                .filter(|c| c.is_element() && c.tag_name().name() == "member")
                .collect()
        })
        .unwrap_or_default()
}

fn strings(node: Node, list: &str) -> Vec<String> {
    members(node, list)
        .iter()
        .map(|m| m.text().unwrap_or("").trim().to_string())
        .collect()
}

/// Parses `xml` and hands `read` its `<{action}Result>` element.
fn read_result<T>(
    xml: &str,
    action: &str,
    read: impl FnOnce(Node) -> Result<T, String>,
) -> Result<T, String> {
    let doc = Document::parse(xml)
        .map_err(|e| format!("the server's answer to {action} is not XML: {e}"))?;
    let root = doc.root_element();
    let result = (root.tag_name().name() == format!("{action}Response"))
        .then(|| child(root, &format!("{action}Result")))
        .flatten()
        .ok_or_else(|| {
            format!(
                "the server's answer to {action} has no <{action}Result> (it begins <{}>)",
                root.tag_name().name()
            )
        })?;
    read(result)
}

/// One page of a Describe call: its items and the marker of the next page, if any.
type Page<T> = (Vec<T>, Option<String>);

pub fn parse_load_balancers(xml: &str) -> Result<Page<LoadBalancer>, String> {
    read_result(xml, "DescribeLoadBalancers", |r| {
        let items = members(r, "LoadBalancers")
            .into_iter()
            .map(|m| LoadBalancer {
                name: text(m, "LoadBalancerName").unwrap_or_default(),
                arn: text(m, "LoadBalancerArn").unwrap_or_default(),
                dns_name: text(m, "DNSName").unwrap_or_default(),
                state: child(m, "State")
                    .and_then(|s| text(s, "Code"))
                    .unwrap_or_default(),
                scheme: text(m, "Scheme").unwrap_or_default(),
                listeners: Vec::new(),
            })
            .collect();
        Ok((items, opt_text(r, "NextMarker")))
    })
}

pub fn parse_listeners(xml: &str) -> Result<Page<Listener>, String> {
    read_result(xml, "DescribeListeners", |r| {
        let items = members(r, "Listeners")
            .into_iter()
            .map(|m| {
                Ok(Listener {
                    arn: text(m, "ListenerArn").unwrap_or_default(),
                    protocol: text(m, "Protocol").unwrap_or_default(),
                    port: number(m, "Port", 0)?,
                    rules: Vec::new(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok((items, opt_text(r, "NextMarker")))
    })
}

pub fn parse_rules(xml: &str) -> Result<Page<Rule>, String> {
    read_result(xml, "DescribeRules", |r| {
        let items = members(r, "Rules")
            .into_iter()
            .map(|m| {
                let mut actions: Vec<(i64, Action)> = members(m, "Actions")
                    .into_iter()
                    .map(|a| Ok((number(a, "Order", i64::MAX)?, action(a)?)))
                    .collect::<Result<_, String>>()?;
                // Actions run in `Order`; the listing need not be in that order.
                actions.sort_by_key(|(order, _)| *order);
                Ok(Rule {
                    arn: text(m, "RuleArn").unwrap_or_default(),
                    priority: text(m, "Priority").unwrap_or_default(),
                    is_default: text(m, "IsDefault").as_deref() == Some("true"),
                    conditions: members(m, "Conditions")
                        .into_iter()
                        .map(condition)
                        .collect(),
                    actions: actions.into_iter().map(|(_, a)| a).collect(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok((items, opt_text(r, "NextMarker")))
    })
}

/// A rule condition from its `*Config` member (what every condition has), else from the
/// legacy `Values`.
fn condition(m: Node) -> Condition {
    let field = text(m, "Field").unwrap_or_default();
    let mut header_name = None;
    let values = match field.as_str() {
        "query-string" => child(m, "QueryStringConfig")
            .map(|c| {
                members(c, "Values")
                    .iter()
                    .map(|p| match opt_text(*p, "Key") {
                        Some(k) => format!("{k}={}", text(*p, "Value").unwrap_or_default()),
                        None => text(*p, "Value").unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "http-header" => {
            let config = child(m, "HttpHeaderConfig");
            header_name = config.and_then(|c| opt_text(c, "HttpHeaderName"));
            config.map(|c| strings(c, "Values")).unwrap_or_default()
        }
        _ => {
            let config = m.children().find(|c| {
                c.is_element()
                    && c.tag_name().name().ends_with("Config")
                    && child(*c, "Values").is_some()
            });
            config.map(|c| strings(c, "Values")).unwrap_or_default()
        }
    };
    let values = if values.is_empty() {
        strings(m, "Values")
    } else {
        values
    };
    Condition {
        field,
        header_name,
        values,
    }
}

fn action(a: Node) -> Result<Action, String> {
    let kind = text(a, "Type").unwrap_or_default();
    let mut target_groups: Vec<WeightedGroup> = child(a, "ForwardConfig")
        .map(|f| {
            members(f, "TargetGroups")
                .into_iter()
                .map(|g| {
                    let arn = text(g, "TargetGroupArn").unwrap_or_default();
                    Ok(WeightedGroup {
                        name: target_group_name(&arn),
                        weight: number(g, "Weight", 1)?,
                        arn,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?
        .unwrap_or_default();
    if target_groups.is_empty() {
        if let Some(arn) = opt_text(a, "TargetGroupArn") {
            target_groups.push(WeightedGroup {
                name: target_group_name(&arn),
                arn,
                weight: 1,
            });
        }
    }
    let fixed_response = child(a, "FixedResponseConfig").map(|f| FixedResponse {
        status_code: text(f, "StatusCode").unwrap_or_default(),
        content_type: opt_text(f, "ContentType"),
        message_body: opt_text(f, "MessageBody"),
    });
    let redirect = child(a, "RedirectConfig").map(|r| Redirect {
        status_code: text(r, "StatusCode").unwrap_or_default(),
        protocol: text(r, "Protocol").unwrap_or_else(|| "#{protocol}".into()),
        host: text(r, "Host").unwrap_or_else(|| "#{host}".into()),
        port: text(r, "Port").unwrap_or_else(|| "#{port}".into()),
        path: text(r, "Path").unwrap_or_else(|| "/#{path}".into()),
        query: text(r, "Query").unwrap_or_else(|| "#{query}".into()),
    });
    Ok(Action {
        kind,
        target_groups,
        fixed_response,
        redirect,
    })
}

pub fn parse_target_groups(xml: &str) -> Result<Page<TargetGroup>, String> {
    read_result(xml, "DescribeTargetGroups", |r| {
        let items = members(r, "TargetGroups")
            .into_iter()
            .map(|m| {
                Ok(TargetGroup {
                    name: text(m, "TargetGroupName").unwrap_or_default(),
                    arn: text(m, "TargetGroupArn").unwrap_or_default(),
                    target_type: text(m, "TargetType").unwrap_or_default(),
                    protocol: text(m, "Protocol").unwrap_or_default(),
                    port: number(m, "Port", 0)?,
                    health_check: HealthCheck {
                        enabled: text(m, "HealthCheckEnabled").as_deref() != Some("false"),
                        protocol: text(m, "HealthCheckProtocol").unwrap_or_default(),
                        port: text(m, "HealthCheckPort").unwrap_or_default(),
                        path: text(m, "HealthCheckPath").unwrap_or_default(),
                        interval_seconds: number(m, "HealthCheckIntervalSeconds", 0)?,
                        timeout_seconds: number(m, "HealthCheckTimeoutSeconds", 0)?,
                        healthy_threshold: number(m, "HealthyThresholdCount", 0)?,
                        unhealthy_threshold: number(m, "UnhealthyThresholdCount", 0)?,
                        matcher: child(m, "Matcher")
                            .and_then(|x| text(x, "HttpCode"))
                            .unwrap_or_default(),
                    },
                    load_balancer_arns: strings(m, "LoadBalancerArns"),
                    targets: Vec::new(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok((items, opt_text(r, "NextMarker")))
    })
}

/// DescribeTargetHealth's `TargetHealthDescriptions` (the call is not paged).
pub fn parse_target_health(xml: &str) -> Result<Vec<Target>, String> {
    read_result(xml, "DescribeTargetHealth", |r| {
        members(r, "TargetHealthDescriptions")
            .into_iter()
            .map(|m| {
                let target = child(m, "Target");
                let health = child(m, "TargetHealth");
                Ok(Target {
                    id: target.and_then(|t| text(t, "Id")).unwrap_or_default(),
                    port: match target {
                        Some(t) => number(t, "Port", 0)?,
                        None => 0,
                    },
                    availability_zone: target.and_then(|t| opt_text(t, "AvailabilityZone")),
                    state: health.and_then(|h| text(h, "State")).unwrap_or_default(),
                    reason: health.and_then(|h| opt_text(h, "Reason")),
                    description: health.and_then(|h| opt_text(h, "Description")),
                })
            })
            .collect()
    })
}

/// `name` of `arn:…:targetgroup/<name>/<id>`; the ARN itself if it is not one.
fn target_group_name(arn: &str) -> String {
    arn.split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(arn)
        .to_string()
}

/// `name` of `arn:…:loadbalancer/app/<name>/<id>`; the ARN itself if it is not one.
fn load_balancer_name(arn: &str) -> String {
    arn.split_once(":loadbalancer/")
        .and_then(|(_, rest)| rest.split('/').nth(1))
        .unwrap_or(arn)
        .to_string()
}

// ---- Calling the API ----

/// How many pages one listing may take before the CLI stops asking (a server that keeps
/// answering with new markers would otherwise keep it going forever).
const MAX_PAGES: usize = 1000;

fn invalid(e: String) -> ApiError {
    ApiError {
        code: "InvalidResponse".into(),
        message: e,
    }
}

/// Every page of a paged Describe call.
async fn paged<T>(
    api: &ApiClient,
    action: &str,
    params: &[(String, String)],
    page_size: Option<u32>,
    parse: fn(&str) -> Result<Page<T>, String>,
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut call = params.to_vec();
        if let Some(n) = page_size {
            call.push(("PageSize".into(), n.to_string()));
        }
        if let Some(m) = &marker {
            call.push(("Marker".into(), m.clone()));
        }
        let xml = api.elbv2(action, &call).await?;
        let (items, next) = parse(&xml).map_err(invalid)?;
        out.extend(items);
        match next {
            None => return Ok(out),
            Some(next) if marker.as_ref() == Some(&next) => {
                return Err(invalid(format!(
                    "the server answered {action} with the same NextMarker twice"
                )))
            }
            Some(next) => marker = Some(next),
        }
    }
    Err(invalid(format!(
        "{action} went on for more than {MAX_PAGES} pages"
    )))
}

/// How many DescribeTargetHealth calls one view keeps in flight.
const HEALTH_CALLS_AT_ONCE: usize = 8;

/// An API error as the CLI says it, with what to do about a refused authorisation.
fn advise(e: ApiError) -> String {
    if e.code == "AccessDenied" {
        format!(
            "{e}. `gantry lb` needs elasticloadbalancing:DescribeLoadBalancers, DescribeListeners, DescribeRules, DescribeTargetGroups and DescribeTargetHealth (`elasticloadbalancing:Describe*` on `*`) for the access key it signs with."
        )
    } else {
        e.to_string()
    }
}

fn param(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// Read everything `gantry lb` shows (only `only`, a load balancer's name or ARN, and the
/// groups it forwards to, when given).
pub async fn gather(
    api: &ApiClient,
    only: Option<&str>,
    page_size: Option<u32>,
) -> Result<LbView, String> {
    let filter: Vec<(String, String)> = match only {
        Some(arn) if arn.starts_with("arn:") => vec![param("LoadBalancerArns.member.1", arn)],
        Some(name) => vec![param("Names.member.1", name)],
        None => Vec::new(),
    };
    let mut load_balancers = paged(
        api,
        "DescribeLoadBalancers",
        &filter,
        page_size,
        parse_load_balancers,
    )
    .await
    .map_err(|e| match (only, e.code.as_str()) {
        (Some(name), "LoadBalancerNotFound") => format!(
            "load balancer {name} not found ({}); `gantry lb` lists them all.",
            e.message
        ),
        _ => advise(e),
    })?;
    load_balancers.sort_by(|a, b| a.name.cmp(&b.name));
    // Resources deleted between one call and the next are left out, not an error: the view
    // is as of the calls that found them.
    for lb in &mut load_balancers {
        let listeners = paged(
            api,
            "DescribeListeners",
            &[param("LoadBalancerArn", &lb.arn)],
            page_size,
            parse_listeners,
        )
        .await;
        lb.listeners = match listeners {
            Ok(l) => l,
            Err(e) if e.code == "LoadBalancerNotFound" => Vec::new(),
            Err(e) => return Err(advise(e)),
        };
        lb.listeners.sort_by_key(|l| l.port);
        for listener in &mut lb.listeners {
            let rules = paged(
                api,
                "DescribeRules",
                &[param("ListenerArn", &listener.arn)],
                page_size,
                parse_rules,
            )
            .await;
            listener.rules = match rules {
                Ok(r) => r,
                Err(e) if e.code == "ListenerNotFound" => Vec::new(),
                Err(e) => return Err(advise(e)),
            };
            listener
                .rules
                .sort_by_key(|r| (r.is_default, r.priority.parse::<u32>().unwrap_or(u32::MAX)));
        }
    }
    let group_filter = match (only, load_balancers.first()) {
        (Some(_), Some(lb)) => vec![param("LoadBalancerArn", &lb.arn)],
        _ => Vec::new(),
    };
    let mut target_groups = match paged(
        api,
        "DescribeTargetGroups",
        &group_filter,
        page_size,
        parse_target_groups,
    )
    .await
    {
        Ok(g) => g,
        Err(e) if e.code == "LoadBalancerNotFound" => Vec::new(),
        Err(e) => return Err(advise(e)),
    };
    target_groups.sort_by(|a, b| a.name.cmp(&b.name));
    // One DescribeTargetHealth per group, a few at a time (a redraw of many groups should
    // not take one round trip per group in a row), answers kept in the groups' order.
    let answers: Vec<Result<String, ApiError>> =
        futures::stream::iter(target_groups.iter().map(|g| async move {
            api.elbv2("DescribeTargetHealth", &[param("TargetGroupArn", &g.arn)])
                .await
        }))
        .buffered(HEALTH_CALLS_AT_ONCE)
        .collect()
        .await;
    let mut kept = Vec::with_capacity(target_groups.len());
    for (mut group, answer) in target_groups.into_iter().zip(answers) {
        match answer {
            Ok(xml) => {
                group.targets = parse_target_health(&xml)?;
                kept.push(group);
            }
            Err(e) if e.code == "TargetGroupNotFound" => {}
            Err(e) => return Err(advise(e)),
        }
    }
    Ok(LbView {
        load_balancers,
        target_groups: kept,
    })
}

// ---- Printing ----

/// `cells` left-aligned in columns `widths` wide, two spaces apart, without trailing blanks.
fn columns(cells: &[&str], widths: &[usize]) -> String {
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    line.join("  ").trim_end().to_string()
}

fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect()
}

fn condition_text(c: &Condition) -> String {
    match &c.header_name {
        Some(h) => format!("{} {h}={}", c.field, c.values.join(",")),
        None => format!("{} {}", c.field, c.values.join(",")),
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn action_text(a: &Action) -> String {
    match a.kind.as_str() {
        "forward" => {
            let total: u64 = a.target_groups.iter().map(|g| u64::from(g.weight)).sum();
            let groups: Vec<String> = a
                .target_groups
                .iter()
                .map(|g| {
                    if total == 0 {
                        format!("{} (weight 0)", g.name)
                    } else {
                        let share = u64::from(g.weight) as f64 * 100.0 / total as f64;
                        if a.target_groups.len() > 1 {
                            format!("{} ({share:.0}%, weight {})", g.name, g.weight)
                        } else {
                            format!("{} ({share:.0}%)", g.name)
                        }
                    }
                })
                .collect();
            format!("forward {}", groups.join(", "))
        }
        "fixed-response" => match &a.fixed_response {
            Some(f) => {
                let mut s = format!("fixed-response {}", f.status_code);
                if let Some(t) = &f.content_type {
                    s.push_str(&format!(" {t}"));
                }
                if let Some(b) = &f.message_body {
                    s.push_str(&format!(" {:?}", clip(b, 40)));
                }
                s
            }
            None => "fixed-response".into(),
        },
        "redirect" => match &a.redirect {
            Some(r) => format!(
                "redirect {} {}://{}:{}{}?{}",
                r.status_code.trim_start_matches("HTTP_"),
                r.protocol,
                r.host,
                r.port,
                r.path,
                r.query
            ),
            None => "redirect".into(),
        },
        other => other.to_string(),
    }
}

fn health_check_text(h: &HealthCheck) -> String {
    if !h.enabled {
        return "health checks off".into();
    }
    let port = if h.port == "traffic-port" || h.port.is_empty() {
        String::new()
    } else {
        format!(":{}", h.port)
    };
    let method =
        if h.protocol.eq_ignore_ascii_case("HTTP") || h.protocol.eq_ignore_ascii_case("HTTPS") {
            "GET".to_string()
        } else {
            h.protocol.clone()
        };
    format!(
        "health {method} {port}{} every {}s (timeout {}s, healthy after {}, unhealthy after {}, codes {})",
        h.path, h.interval_seconds, h.timeout_seconds, h.healthy_threshold, h.unhealthy_threshold, h.matcher
    )
}

/// The view as text: each load balancer with its listeners and rules, then each target group
/// with its targets. `endpoint` goes into the advice when there is nothing to show.
pub fn render(view: &LbView, endpoint: &str) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    if view.load_balancers.is_empty() {
        line(format!(
            "(no load balancers yet: create one with `aws --endpoint-url {endpoint} elbv2 create-load-balancer --name NAME`, then a listener with `aws elbv2 create-listener`; docs/ELBV2.md shows how)"
        ));
    }
    for lb in &view.load_balancers {
        let scheme = if lb.scheme == "internal" {
            "  internal"
        } else {
            ""
        };
        line(format!(
            "LOAD BALANCER  {} ({})  {}{scheme}",
            lb.name, lb.state, lb.dns_name
        ));
        if lb.listeners.is_empty() {
            line(format!(
                "  (no listeners: add one with `aws elbv2 create-listener --load-balancer-arn {} --port PORT --default-actions Type=forward,TargetGroupArn=GROUP_ARN`)",
                lb.arn
            ));
        }
        for l in &lb.listeners {
            line(format!("  LISTENER  {} :{}", l.protocol, l.port));
            let rows: Vec<Vec<String>> = l
                .rules
                .iter()
                .map(|r| {
                    let conditions: Vec<String> = r.conditions.iter().map(condition_text).collect();
                    let actions: Vec<String> = r.actions.iter().map(action_text).collect();
                    vec![
                        format!("RULE {}", r.priority),
                        conditions.join(" and "),
                        format!("→ {}", actions.join(", then ")),
                    ]
                })
                .collect();
            let w = widths(&rows);
            for r in &rows {
                let cells: Vec<&str> = r.iter().map(String::as_str).collect();
                line(format!("    {}", columns(&cells, &w)));
            }
        }
    }
    line(String::new());
    if view.target_groups.is_empty() {
        line(format!(
            "(no target groups: create one with `aws --endpoint-url {endpoint} elbv2 create-target-group --name NAME --protocol HTTP --port 80 --target-type ip`)"
        ));
    }
    for g in &view.target_groups {
        line(format!(
            "TARGET GROUP  {}  {} {}:{}  {}",
            g.name,
            g.target_type,
            g.protocol,
            g.port,
            health_check_text(&g.health_check)
        ));
        if g.load_balancer_arns.is_empty() {
            line("  (no listener or rule forwards to it)".into());
        } else if view.load_balancers.len() != 1 || g.load_balancer_arns.len() > 1 {
            let names: Vec<String> = g
                .load_balancer_arns
                .iter()
                .map(|a| load_balancer_name(a))
                .collect();
            line(format!("  (used by {})", names.join(", ")));
        }
        if g.targets.is_empty() {
            line(format!(
                "  (no targets: register some with `aws elbv2 register-targets --target-group-arn {} --targets Id=ID,Port=PORT`, or give a service this group in its loadBalancers)",
                g.arn
            ));
        }
        let rows: Vec<Vec<String>> = g
            .targets
            .iter()
            .map(|t| {
                vec![
                    "TARGET".to_string(),
                    format!("{}:{}", t.id, t.port),
                    t.state.clone(),
                    t.reason.clone().unwrap_or_default(),
                    t.description.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let w = widths(&rows);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(format!("  {}", columns(&cells, &w)));
        }
    }
    out
}

// ---- The command ----

pub async fn lb(args: LbArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.endpoint);
    let only = args.name.as_deref();
    if !args.watch {
        let view = gather(&api, only, args.page_size).await?;
        if args.json {
            let text = serde_json::to_string_pretty(&view)
                .map_err(|e| format!("cannot write the view as JSON: {e}"))?;
            println!("{text}");
        } else {
            print!("{}", render(&view, &args.endpoint));
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Listening for Ctrl-C replaces the default handler (which would end the process at
    // once): one listener for the whole watch, so a Ctrl-C during a call is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let terminal = std::io::stdout().is_terminal();
    let interval = Duration::from_secs(args.interval);
    let mut shown: u64 = 0;
    loop {
        let view = tokio::select! {
            v = gather(&api, only, args.page_size) => v,
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
        };
        let now = crate::services::local_time(gantry_auth::client::now() as f64);
        let frame = if args.json {
            match view {
                Ok(v) => serde_json::to_string(&v)
                    .map(|t| format!("{t}\n"))
                    .map_err(|e| format!("cannot write the view as JSON: {e}"))?,
                // A JSON stream carries views only; the error goes to stderr.
                Err(e) => {
                    eprintln!("{now}  error: {e} (trying again in {}s)", args.interval);
                    String::new()
                }
            }
        } else {
            let body = match view {
                Ok(v) => render(&v, &args.endpoint),
                // Keep watching through a restart of the server, saying so.
                Err(e) => format!("error: {e}\n(trying again in {}s)\n", args.interval),
            };
            let header = format!(
                "gantry lb{}  {}  every {}s, Ctrl-C stops  {now}\n\n",
                only.map(|n| format!(" {n}")).unwrap_or_default(),
                args.endpoint,
                args.interval
            );
            if terminal {
                // Home the cursor and clear the screen, then draw the view in one write.
                format!("\x1b[H\x1b[2J{header}{body}")
            } else if shown == 0 {
                format!("{header}{body}")
            } else {
                format!("\n{header}{body}")
            }
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`gantry lb --watch | head`) ends the watch.
        if stdout
            .write_all(frame.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(ExitCode::SUCCESS);
        }
        drop(stdout);
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

    #[test]
    fn target_health_is_read_from_describe_target_health() {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeTargetHealthResponse xmlns="{NS}">
  <DescribeTargetHealthResult>
    <TargetHealthDescriptions>
      <member>
        <Target><Id>10.0.0.7</Id><Port>8080</Port><AvailabilityZone>us-east-1a</AvailabilityZone></Target>
        <HealthCheckPort>8080</HealthCheckPort>
        <TargetHealth><State>healthy</State></TargetHealth>
      </member>
      <member>
        <Target><Id>gantry-0123456789ab</Id><Port>32769</Port></Target>
        <HealthCheckPort>32769</HealthCheckPort>
        <TargetHealth>
          <State>unhealthy</State>
          <Reason>Target.ResponseCodeMismatch</Reason>
          <Description>Health checks failed with these codes: [500]</Description>
        </TargetHealth>
      </member>
    </TargetHealthDescriptions>
  </DescribeTargetHealthResult>
  <ResponseMetadata><RequestId>6f1c</RequestId></ResponseMetadata>
</DescribeTargetHealthResponse>"#
        );
        let targets = parse_target_health(&xml).expect("parses");
        assert_eq!(
            targets,
            vec![
                Target {
                    id: "10.0.0.7".into(),
                    port: 8080,
                    availability_zone: Some("us-east-1a".into()),
                    state: "healthy".into(),
                    reason: None,
                    description: None,
                },
                Target {
                    id: "gantry-0123456789ab".into(),
                    port: 32769,
                    availability_zone: None,
                    state: "unhealthy".into(),
                    reason: Some("Target.ResponseCodeMismatch".into()),
                    description: Some("Health checks failed with these codes: [500]".into()),
                },
            ]
        );
        // No targets: an empty list, not an error.
        let empty = format!(
            r#"<DescribeTargetHealthResponse xmlns="{NS}"><DescribeTargetHealthResult><TargetHealthDescriptions/></DescribeTargetHealthResult></DescribeTargetHealthResponse>"#
        );
        assert_eq!(parse_target_health(&empty), Ok(Vec::new()));
    }

    #[test]
    fn answers_of_the_wrong_shape_are_errors() {
        let other = format!(
            r#"<DescribeRulesResponse xmlns="{NS}"><DescribeRulesResult/></DescribeRulesResponse>"#
        );
        let e = parse_target_health(&other).expect_err("wrong action");
        assert!(e.contains("DescribeTargetHealthResult"), "{e}");
        assert!(parse_target_health("not xml").is_err());
        let bad_port = format!(
            r#"<DescribeTargetHealthResponse xmlns="{NS}"><DescribeTargetHealthResult><TargetHealthDescriptions><member><Target><Id>a</Id><Port>x</Port></Target></member></TargetHealthDescriptions></DescribeTargetHealthResult></DescribeTargetHealthResponse>"#
        );
        let e = parse_target_health(&bad_port).expect_err("bad port");
        assert!(e.contains("Port"), "{e}");
    }

    #[test]
    fn rules_read_conditions_and_every_kind_of_action() {
        let tg = |n: &str| {
            format!("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{n}/0123456789abcdef")
        };
        let xml = format!(
            r#"<DescribeRulesResponse xmlns="{NS}"><DescribeRulesResult><Rules>
<member><RuleArn>r1</RuleArn><Priority>10</Priority>
  <Conditions><member><Field>path-pattern</Field><PathPatternConfig><Values><member>/api/*</member></Values></PathPatternConfig></member>
    <member><Field>http-header</Field><HttpHeaderConfig><HttpHeaderName>X-Env</HttpHeaderName><Values><member>a</member><member>b</member></Values></HttpHeaderConfig></member></Conditions>
  <Actions><member><Type>forward</Type><ForwardConfig><TargetGroups>
    <member><TargetGroupArn>{a}</TargetGroupArn><Weight>3</Weight></member>
    <member><TargetGroupArn>{b}</TargetGroupArn><Weight>1</Weight></member>
  </TargetGroups><TargetGroupStickinessConfig><Enabled>false</Enabled></TargetGroupStickinessConfig></ForwardConfig></member></Actions>
  <IsDefault>false</IsDefault></member>
<member><RuleArn>r2</RuleArn><Priority>20</Priority>
  <Conditions><member><Field>query-string</Field><QueryStringConfig><Values><member><Key>v</Key><Value>2</Value></member><member><Value>x</Value></member></Values></QueryStringConfig></member></Conditions>
  <Actions><member><Type>fixed-response</Type><FixedResponseConfig><MessageBody>gone</MessageBody><StatusCode>410</StatusCode><ContentType>text/plain</ContentType></FixedResponseConfig></member></Actions>
  <IsDefault>false</IsDefault></member>
<member><RuleArn>r3</RuleArn><Priority>30</Priority>
  <Conditions><member><Field>host-header</Field><Values><member>old.example</member></Values><HostHeaderConfig><Values><member>old.example</member></Values></HostHeaderConfig></member></Conditions>
  <Actions><member><Type>redirect</Type><RedirectConfig><Protocol>HTTPS</Protocol><Port>443</Port><Host>#{{host}}</Host><Path>/#{{path}}</Path><Query>#{{query}}</Query><StatusCode>HTTP_301</StatusCode></RedirectConfig></member></Actions>
  <IsDefault>false</IsDefault></member>
<member><RuleArn>rd</RuleArn><Priority>default</Priority><Conditions/>
  <Actions><member><Type>forward</Type><TargetGroupArn>{b}</TargetGroupArn></member></Actions>
  <IsDefault>true</IsDefault></member>
</Rules><NextMarker>m2</NextMarker></DescribeRulesResult></DescribeRulesResponse>"#,
            a = tg("api"),
            b = tg("web")
        );
        let (rules, next) = parse_rules(&xml).expect("parses");
        assert_eq!(next.as_deref(), Some("m2"));
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[0].conditions[0].values, ["/api/*"]);
        assert_eq!(rules[0].conditions[1].header_name.as_deref(), Some("X-Env"));
        assert_eq!(
            action_text(&rules[0].actions[0]),
            "forward api (75%, weight 3), web (25%, weight 1)"
        );
        assert_eq!(rules[1].conditions[0].values, ["v=2", "x"]);
        assert_eq!(
            action_text(&rules[1].actions[0]),
            "fixed-response 410 text/plain \"gone\""
        );
        assert_eq!(rules[2].conditions[0].values, ["old.example"]);
        assert_eq!(
            action_text(&rules[2].actions[0]),
            "redirect 301 HTTPS://#{host}:443/#{path}?#{query}"
        );
        assert!(rules[3].is_default);
        assert_eq!(action_text(&rules[3].actions[0]), "forward web (100%)");

        let view = LbView {
            load_balancers: vec![LoadBalancer {
                name: "web".into(),
                state: "active".into(),
                dns_name: "web-1.us-east-1.elb.localhost".into(),
                listeners: vec![Listener {
                    protocol: "HTTP".into(),
                    port: 8080,
                    rules,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            target_groups: vec![TargetGroup {
                name: "spare".into(),
                target_type: "ip".into(),
                protocol: "HTTP".into(),
                port: 80,
                health_check: HealthCheck {
                    enabled: true,
                    protocol: "HTTP".into(),
                    port: "traffic-port".into(),
                    path: "/".into(),
                    interval_seconds: 30,
                    timeout_seconds: 5,
                    healthy_threshold: 5,
                    unhealthy_threshold: 2,
                    matcher: "200".into(),
                },
                ..Default::default()
            }],
        };
        let text = render(&view, "http://127.0.0.1:7420");
        assert!(
            text.contains("LOAD BALANCER  web (active)  web-1.us-east-1.elb.localhost"),
            "{text}"
        );
        assert!(text.contains("  LISTENER  HTTP :8080"), "{text}");
        assert!(
            text.contains("RULE 10       path-pattern /api/* and http-header X-Env=a,b  → forward api (75%, weight 3)"),
            "{text}"
        );
        assert!(text.contains("RULE default"), "{text}");
        assert!(
            text.contains("TARGET GROUP  spare  ip HTTP:80  health GET / every 30s (timeout 5s, healthy after 5, unhealthy after 2, codes 200)"),
            "{text}"
        );
        assert!(
            text.contains("(no listener or rule forwards to it)"),
            "{text}"
        );
        assert!(text.contains("(no targets: register some"), "{text}");
    }

    #[test]
    fn arns_give_their_names() {
        assert_eq!(
            target_group_name("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web/0123"),
            "web"
        );
        assert_eq!(
            load_balancer_name(
                "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/front/0123"
            ),
            "front"
        );
        assert_eq!(target_group_name("odd"), "odd");
    }
}
