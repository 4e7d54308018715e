//! ELBv2 records: application load balancers, their listeners and listener rules, target
//! groups with their attributes and registered targets. The ELBv2 API (`crate::elbv2`) writes
//! them; the controller that compiles them into the data plane's `ListenerConfig` /
//! `TargetGroupConfig` (`gantry_model::elbv2`) reads them with the functions at the end of
//! this module and follows the prefix [`ELBV2`] with a store watch.
//!
//! Keys (values are JSON; every record carries its full ARN and its tags):
//! - `elbv2/load-balancers/<name>`                       → [`LoadBalancerRecord`]
//!   (attributes: the complete ALB key list, defaults filled in at creation)
//! - `elbv2/listeners/<lb name>/<listener id>`           → [`ListenerRecord`] (its default
//!   actions: the listener's default rule is not stored apart, its ARN is
//!   [`ListenerRecord::default_rule_arn`])
//! - `elbv2/rules/<lb name>/<listener id>/<rule id>`     → [`RuleRecord`] (non-default rules)
//! - `elbv2/target-groups/<name>`                        → [`TargetGroupRecord`] (health
//!   check, the complete attribute list with defaults, registered targets)
//!
//! Names are unique per account and region for load balancers and for target groups, so the
//! name is the key and a create is a put guarded on the key's absence. Listener and rule ids
//! are the last segment of their ARNs; an ARN parses back to its key ([`key_of_arn`]).
//! Every ELBv2 write is one store transaction, so a watcher never sees a listener without
//! its load balancer or a rule forwarding to a deleted group.

use gantry_model::EcsResult;
use gantry_store::KvStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::repo;

pub const ELBV2: &str = "elbv2/";
pub const LOAD_BALANCERS: &str = "elbv2/load-balancers/";
pub const LISTENERS: &str = "elbv2/listeners/";
pub const RULES: &str = "elbv2/rules/";
pub const TARGET_GROUPS: &str = "elbv2/target-groups/";

pub fn load_balancer_key(name: &str) -> String {
    format!("{LOAD_BALANCERS}{name}")
}
pub fn listeners_prefix(lb_name: &str) -> String {
    format!("{LISTENERS}{lb_name}/")
}
pub fn listener_key(lb_name: &str, listener_id: &str) -> String {
    format!("{LISTENERS}{lb_name}/{listener_id}")
}
pub fn rules_prefix(lb_name: &str, listener_id: &str) -> String {
    format!("{RULES}{lb_name}/{listener_id}/")
}
pub fn rules_of_load_balancer_prefix(lb_name: &str) -> String {
    format!("{RULES}{lb_name}/")
}
pub fn rule_key(lb_name: &str, listener_id: &str, rule_id: &str) -> String {
    format!("{RULES}{lb_name}/{listener_id}/{rule_id}")
}
pub fn target_group_key(name: &str) -> String {
    format!("{TARGET_GROUPS}{name}")
}

/// What an ELBv2 ARN names, with the parts its store key needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElbArn {
    LoadBalancer {
        name: String,
        id: String,
    },
    TargetGroup {
        name: String,
        id: String,
    },
    Listener {
        lb_name: String,
        lb_id: String,
        id: String,
    },
    Rule {
        lb_name: String,
        lb_id: String,
        listener_id: String,
        id: String,
    },
}

/// Parses `arn:aws:elasticloadbalancing:<region>:<account>:<resource>`; `None` for anything
/// else (including network and gateway load balancers' ARNs, which Gantry never issues).
pub fn parse_arn(arn: &str) -> Option<ElbArn> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("elasticloadbalancing"), Some(_), Some(_), Some(res)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let segments: Vec<&str> = res.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let s = |i: usize| segments[i].to_string();
    match segments.as_slice() {
        ["loadbalancer", "app", _, _] => Some(ElbArn::LoadBalancer {
            name: s(2),
            id: s(3),
        }),
        ["targetgroup", _, _] => Some(ElbArn::TargetGroup {
            name: s(1),
            id: s(2),
        }),
        ["listener", "app", _, _, _] => Some(ElbArn::Listener {
            lb_name: s(2),
            lb_id: s(3),
            id: s(4),
        }),
        ["listener-rule", "app", _, _, _, _] => Some(ElbArn::Rule {
            lb_name: s(2),
            lb_id: s(3),
            listener_id: s(4),
            id: s(5),
        }),
        _ => None,
    }
}

/// The store key of the record an ARN names (a default rule's ARN names its listener's key's
/// rule slot, where nothing is stored).
pub fn key_of_arn(arn: &ElbArn) -> String {
    match arn {
        ElbArn::LoadBalancer { name, .. } => load_balancer_key(name),
        ElbArn::TargetGroup { name, .. } => target_group_key(name),
        ElbArn::Listener { lb_name, id, .. } => listener_key(lb_name, id),
        ElbArn::Rule {
            lb_name,
            listener_id,
            id,
            ..
        } => rule_key(lb_name, listener_id, id),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ElbTag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilityZoneRecord {
    pub zone_name: String,
    pub subnet_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerRecord {
    pub arn: String,
    pub name: String,
    /// The 16 hex digits ending the ARN.
    pub id: String,
    /// `<name>-<id>.<region>.elb.localhost`: every load balancer is served on the data
    /// plane's one bind address, so the name only identifies it.
    pub dns_name: String,
    pub created_time: f64,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    pub vpc_id: String,
    pub availability_zones: Vec<AvailabilityZoneRecord>,
    pub security_groups: Vec<String>,
    pub ip_address_type: String,
    /// Every ALB attribute, defaults included.
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<ElbTag>,
}

impl LoadBalancerRecord {
    /// `idle_timeout.timeout_seconds` (60 when unreadable).
    pub fn idle_timeout_secs(&self) -> u64 {
        self.attributes
            .get("idle_timeout.timeout_seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60)
    }
}

/// A forward action's target group and weight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedGroupRecord {
    pub target_group_arn: String,
    /// `None` when the client sent none (AWS then shows none; it counts as 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ForwardRecord {
    pub target_groups: Vec<WeightedGroupRecord>,
    pub stickiness_enabled: bool,
    #[serde(default)]
    pub stickiness_duration_secs: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FixedResponseRecord {
    /// `200`..`599` as sent (`2XX`, `4XX`, `5XX`).
    pub status_code: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub message_body: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RedirectRecord {
    pub protocol: String,
    pub port: String,
    pub host: String,
    pub path: String,
    pub query: String,
    /// `HTTP_301` or `HTTP_302`.
    pub status_code: String,
}

/// One action of a rule or a listener's default actions. For `forward`, `forward` always
/// holds the groups (a bare `TargetGroupArn` becomes one group of weight 1, as on AWS) and
/// `target_group_arn` is set when exactly one group is forwarded to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// `forward`, `fixed-response` or `redirect`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub order: Option<i64>,
    #[serde(default)]
    pub target_group_arn: Option<String>,
    #[serde(default)]
    pub forward: Option<ForwardRecord>,
    #[serde(default)]
    pub fixed_response: Option<FixedResponseRecord>,
    #[serde(default)]
    pub redirect: Option<RedirectRecord>,
}

impl ActionRecord {
    /// The target groups this action forwards to.
    pub fn target_group_arns(&self) -> Vec<&str> {
        match &self.forward {
            Some(f) => f
                .target_groups
                .iter()
                .map(|g| g.target_group_arn.as_str())
                .collect(),
            None => self.target_group_arn.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueryPairRecord {
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
}

/// A rule condition, normalised: `field` is one of `path-pattern`, `host-header`,
/// `http-header`, `http-request-method`, `query-string`, `source-ip`; `values` holds the
/// patterns / methods / CIDR blocks, `http_header_name` the header of `http-header`,
/// `query_pairs` the pairs of `query-string`. `legacy` remembers that the client sent the
/// `Field`+`Values` form (AWS then echoes `Values` beside the `*Config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRecord {
    pub field: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub query_pairs: Vec<QueryPairRecord>,
    #[serde(default)]
    pub legacy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerRecord {
    pub arn: String,
    pub id: String,
    pub load_balancer_arn: String,
    pub load_balancer_name: String,
    pub port: u16,
    /// Always `HTTP`.
    pub protocol: String,
    pub default_actions: Vec<ActionRecord>,
    /// The default rule's id (its ARN is [`ListenerRecord::default_rule_arn`]).
    pub default_rule_id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<ElbTag>,
}

impl ListenerRecord {
    /// `listener-rule/app/<lb>/<lb id>/<listener id>/<default rule id>`.
    pub fn default_rule_arn(&self) -> String {
        let rule_base = self.arn.replacen(":listener/", ":listener-rule/", 1);
        format!("{rule_base}/{}", self.default_rule_id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuleRecord {
    pub arn: String,
    pub id: String,
    pub listener_arn: String,
    /// 1..=50000, unique within the listener.
    pub priority: u32,
    pub conditions: Vec<ConditionRecord>,
    pub actions: Vec<ActionRecord>,
    #[serde(default)]
    pub tags: Vec<ElbTag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckRecord {
    pub enabled: bool,
    /// `HTTP`.
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub path: String,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// The `HttpCode` matcher (`200`, `200,202`, `200-299`).
    pub matcher: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    /// An IP address (`ip` groups) or a container instance's `ec2InstanceId` (`instance`
    /// groups; an instance registered by its container instance id or ARN is stored under
    /// its `ec2InstanceId`, so the same instance is one target however it was named).
    pub id: String,
    pub port: u16,
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// For `instance` targets: the container instance's ARN (the integrator resolves the
    /// instance's address from it).
    #[serde(default)]
    pub container_instance_arn: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupRecord {
    pub arn: String,
    pub name: String,
    pub id: String,
    /// Always `HTTP`.
    pub protocol: String,
    /// `HTTP1` or `HTTP2`.
    pub protocol_version: String,
    pub port: u16,
    pub vpc_id: String,
    /// `instance` or `ip`.
    pub target_type: String,
    pub ip_address_type: String,
    pub health_check: HealthCheckRecord,
    /// Every target group attribute, defaults included.
    pub attributes: BTreeMap<String, String>,
    pub targets: Vec<TargetRecord>,
    pub created_time: f64,
    #[serde(default)]
    pub tags: Vec<ElbTag>,
}

// ---------------------------------------------------------------------------------------------
// Reads (for the API and the data plane's controller)
// ---------------------------------------------------------------------------------------------

/// Every load balancer, by name.
pub async fn load_balancers(store: &dyn KvStore) -> EcsResult<Vec<LoadBalancerRecord>> {
    Ok(repo::list(store, LOAD_BALANCERS)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// One load balancer by name.
pub async fn load_balancer(
    store: &dyn KvStore,
    name: &str,
) -> EcsResult<Option<LoadBalancerRecord>> {
    Ok(repo::get(store, &load_balancer_key(name))
        .await?
        .map(|(r, _)| r))
}

/// The listeners of the load balancer `lb_name`, by port.
pub async fn listeners_of(store: &dyn KvStore, lb_name: &str) -> EcsResult<Vec<ListenerRecord>> {
    let mut listeners: Vec<ListenerRecord> = repo::list(store, &listeners_prefix(lb_name))
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    listeners.sort_by_key(|l| l.port);
    Ok(listeners)
}

/// Every listener of every load balancer.
pub async fn all_listeners(store: &dyn KvStore) -> EcsResult<Vec<ListenerRecord>> {
    Ok(repo::list(store, LISTENERS)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// The non-default rules of one listener in ascending priority (the default rule is the
/// listener's `default_actions`, evaluated last).
pub async fn rules_of(
    store: &dyn KvStore,
    lb_name: &str,
    listener_id: &str,
) -> EcsResult<Vec<RuleRecord>> {
    let mut rules: Vec<RuleRecord> = repo::list(store, &rules_prefix(lb_name, listener_id))
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    rules.sort_by_key(|r| r.priority);
    Ok(rules)
}

/// Every non-default rule of every listener.
pub async fn all_rules(store: &dyn KvStore) -> EcsResult<Vec<RuleRecord>> {
    Ok(repo::list(store, RULES)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// Every target group (with its attributes and registered targets), by name.
pub async fn target_groups(store: &dyn KvStore) -> EcsResult<Vec<TargetGroupRecord>> {
    Ok(repo::list(store, TARGET_GROUPS)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// One target group by ARN (`None` when it does not exist or the ARN's id is another
/// group's of the same name).
pub async fn target_group(store: &dyn KvStore, arn: &str) -> EcsResult<Option<TargetGroupRecord>> {
    let Some(ElbArn::TargetGroup { name, .. }) = parse_arn(arn) else {
        return Ok(None);
    };
    Ok(
        repo::get::<TargetGroupRecord>(store, &target_group_key(&name))
            .await?
            .map(|(r, _)| r)
            .filter(|r| r.arn == arn),
    )
}

/// Which load balancers forward to each target group (through a listener's default actions
/// or a rule), from every listener and rule: the groups in use are its keys.
pub async fn group_users(
    store: &dyn KvStore,
) -> EcsResult<BTreeMap<String, std::collections::BTreeSet<String>>> {
    let listeners = all_listeners(store).await?;
    let rules = all_rules(store).await?;
    let lb_of_listener: BTreeMap<&str, &str> = listeners
        .iter()
        .map(|l| (l.arn.as_str(), l.load_balancer_arn.as_str()))
        .collect();
    let mut users: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut note = |actions: &[ActionRecord], lb: &str| {
        for a in actions {
            for tg in a.target_group_arns() {
                users
                    .entry(tg.to_string())
                    .or_default()
                    .insert(lb.to_string());
            }
        }
    };
    for l in &listeners {
        note(&l.default_actions, &l.load_balancer_arn);
    }
    for rule in &rules {
        if let Some(lb) = lb_of_listener.get(rule.listener_arn.as_str()) {
            note(&rule.actions, lb);
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_parse_back_to_their_keys() {
        let lb = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/0123456789abcdef";
        assert_eq!(
            key_of_arn(&parse_arn(lb).unwrap()),
            "elbv2/load-balancers/web"
        );
        let l = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/web/0123456789abcdef/aaaaaaaaaaaaaaaa";
        assert_eq!(
            key_of_arn(&parse_arn(l).unwrap()),
            "elbv2/listeners/web/aaaaaaaaaaaaaaaa"
        );
        let r = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener-rule/app/web/0123456789abcdef/aaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbb";
        assert_eq!(
            key_of_arn(&parse_arn(r).unwrap()),
            "elbv2/rules/web/aaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbb"
        );
        let tg =
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/api/0123456789abcdef";
        assert_eq!(
            key_of_arn(&parse_arn(tg).unwrap()),
            "elbv2/target-groups/api"
        );
        for bad in [
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/net/x/0123",
            "arn:aws:ecs:us-east-1:000000000000:cluster/x",
            "not-an-arn",
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup//x",
        ] {
            assert_eq!(parse_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_rule_arn_sits_under_its_listener() {
        let l = ListenerRecord {
            arn: "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/00/11".into(),
            id: "11".into(),
            load_balancer_arn: String::new(),
            load_balancer_name: "web".into(),
            port: 80,
            protocol: "HTTP".into(),
            default_actions: vec![],
            default_rule_id: "22".into(),
            attributes: BTreeMap::new(),
            tags: vec![],
        };
        assert_eq!(
            l.default_rule_arn(),
            "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/web/00/11/22"
        );
    }
}
