//! Compiling ELBv2 records into the data plane's configuration, one object at a time, and the
//! controllers that put them there.

use super::service_targets::instance_address;
use crate::plane::ControlPlane;
use crate::state::elbv2::{
    self, ActionRecord, ConditionRecord, ElbArn, ListenerRecord, TargetGroupRecord,
};
use crate::state::repo;
use gantry_model::elbv2::{
    Algorithm, AppCookieStickiness, Cidr, Condition, HealthCheckConfig, ListenerConfig,
    QueryStringPair, RuleAction, RuleConfig, TargetConfig, TargetGroupConfig,
    TargetProtocolVersion, TargetType, WeightedTargetGroup,
};
use gantry_model::EcsResult;
use gantry_runtime::{Action, ReconcileError, Reconciler};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Weak;
use std::time::Duration;

/// A target group's `deregistration_delay.timeout_seconds`, when the group exists.
pub async fn deregistration_delay(
    plane: &ControlPlane,
    target_group_arn: &str,
) -> Option<Duration> {
    let group = elbv2::target_group(&*plane.store, target_group_arn)
        .await
        .ok()??;
    Some(secs_attribute(
        &group.attributes,
        "deregistration_delay.timeout_seconds",
        300,
    ))
}

fn secs_attribute(attributes: &BTreeMap<String, String>, name: &str, default: u64) -> Duration {
    Duration::from_secs(
        attributes
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The group as the data plane serves it: its settings, the targets registered through the
/// API and those its services' tasks contribute. `None` when the group does not exist.
pub async fn compile_target_group(
    plane: &ControlPlane,
    target_group_arn: &str,
) -> EcsResult<Option<TargetGroupConfig>> {
    let Some(group) = elbv2::target_group(&*plane.store, target_group_arn).await? else {
        return Ok(None);
    };
    Ok(Some(target_group_config(plane, &group)))
}

fn target_group_config(plane: &ControlPlane, group: &TargetGroupRecord) -> TargetGroupConfig {
    let attrs = &group.attributes;
    let hc = &group.health_check;
    let mut targets: Vec<TargetConfig> = Vec::new();
    let mut seen: BTreeSet<(String, u16)> = BTreeSet::new();
    for t in &group.targets {
        let address = if group.target_type == "ip" {
            t.id.parse::<IpAddr>().ok()
        } else {
            // An instance target is reached where its container instance publishes ports.
            let instance = t.container_instance_arn.as_deref().and_then(|arn| {
                let cluster = gantry_model::arn::cluster_of_arn(arn)?;
                plane
                    .cache
                    .instance(cluster, gantry_model::arn::last_segment(arn))
            });
            Some(instance_address(instance.as_ref().map(|i| &i.value)))
        };
        let Some(address) = address else { continue };
        if seen.insert((t.id.clone(), t.port)) {
            targets.push(TargetConfig {
                id: t.id.clone(),
                port: t.port,
                address,
            });
        }
    }
    for t in plane.targets.service_targets_of(&group.arn) {
        if seen.insert((t.id.clone(), t.port)) {
            targets.push(t);
        }
    }
    let sticky = attrs.get("stickiness.enabled").map(String::as_str) == Some("true");
    let app_cookie_type = attrs.get("stickiness.type").map(String::as_str) == Some("app_cookie");
    let stickiness = (sticky && !app_cookie_type)
        .then(|| secs_attribute(attrs, "stickiness.lb_cookie.duration_seconds", 86_400));
    let app_cookie = attrs
        .get("stickiness.app_cookie.cookie_name")
        .map(|name| name.trim())
        .filter(|name| sticky && app_cookie_type && !name.is_empty())
        .map(|name| AppCookieStickiness {
            cookie_name: name.to_string(),
            duration: secs_attribute(attrs, "stickiness.app_cookie.duration_seconds", 86_400),
        });
    TargetGroupConfig {
        arn: group.arn.clone(),
        name: group.name.clone(),
        target_type: if group.target_type == "ip" {
            TargetType::Ip
        } else {
            TargetType::Instance
        },
        protocol_version: if group.protocol_version == "HTTP2" {
            TargetProtocolVersion::Http2
        } else {
            TargetProtocolVersion::Http1
        },
        health_check: HealthCheckConfig {
            enabled: hc.enabled,
            path: hc.path.clone(),
            port: hc.port.parse().ok(),
            interval: Duration::from_secs(hc.interval_secs.into()),
            timeout: Duration::from_secs(hc.timeout_secs.into()),
            healthy_threshold: hc.healthy_threshold,
            unhealthy_threshold: hc.unhealthy_threshold,
            matcher: hc.matcher.clone(),
        },
        algorithm: match attrs
            .get("load_balancing.algorithm.type")
            .map(String::as_str)
        {
            Some("least_outstanding_requests") => Algorithm::LeastOutstandingRequests,
            _ => Algorithm::RoundRobin,
        },
        deregistration_delay: secs_attribute(attrs, "deregistration_delay.timeout_seconds", 300),
        slow_start: secs_attribute(attrs, "slow_start.duration_seconds", 0),
        stickiness,
        app_cookie,
        targets,
    }
}

/// The listener as the data plane serves it, rules compiled. `None` when it does not exist.
pub async fn compile_listener(
    plane: &ControlPlane,
    listener_arn: &str,
) -> EcsResult<Option<ListenerConfig>> {
    let Some(ElbArn::Listener { lb_name, id, .. }) = elbv2::parse_arn(listener_arn) else {
        return Ok(None);
    };
    let Some((listener, _)) =
        repo::get::<ListenerRecord>(&*plane.store, &elbv2::listener_key(&lb_name, &id)).await?
    else {
        return Ok(None);
    };
    if listener.arn != listener_arn {
        return Ok(None);
    }
    let idle = elbv2::load_balancer(&*plane.store, &lb_name)
        .await?
        .map_or(60, |lb| lb.idle_timeout_secs());
    let mut rules = Vec::new();
    for rule in elbv2::rules_of(&*plane.store, &lb_name, &id).await? {
        let Some(action) = compile_actions(&rule.actions) else {
            continue;
        };
        rules.push(RuleConfig {
            arn: rule.arn.clone(),
            priority: Some(rule.priority),
            conditions: rule
                .conditions
                .iter()
                .filter_map(compile_condition)
                .collect(),
            action,
        });
    }
    if let Some(action) = compile_actions(&listener.default_actions) {
        rules.push(RuleConfig {
            arn: listener.default_rule_arn(),
            priority: None,
            conditions: Vec::new(),
            action,
        });
    }
    Ok(Some(ListenerConfig {
        arn: listener.arn.clone(),
        load_balancer_arn: listener.load_balancer_arn.clone(),
        load_balancer_name: listener.load_balancer_name.clone(),
        port: listener.port,
        rules,
        idle_timeout: Duration::from_secs(idle),
    }))
}

/// A rule's last action decides (Gantry has no authenticate actions to run before it).
fn compile_actions(actions: &[ActionRecord]) -> Option<RuleAction> {
    let mut ordered: Vec<&ActionRecord> = actions.iter().collect();
    ordered.sort_by_key(|a| a.order.unwrap_or(i64::MAX));
    let action = ordered.last()?;
    match action.kind.as_str() {
        "forward" => {
            let (groups, stickiness) = match &action.forward {
                Some(f) => (
                    f.target_groups
                        .iter()
                        .map(|g| WeightedTargetGroup {
                            arn: g.target_group_arn.clone(),
                            weight: g.weight.unwrap_or(1),
                        })
                        .collect(),
                    f.stickiness_enabled.then(|| {
                        Duration::from_secs(f.stickiness_duration_secs.unwrap_or(3600).into())
                    }),
                ),
                None => (
                    action
                        .target_group_arn
                        .iter()
                        .map(|arn| WeightedTargetGroup {
                            arn: arn.clone(),
                            weight: 1,
                        })
                        .collect(),
                    None,
                ),
            };
            Some(RuleAction::Forward {
                target_groups: groups,
                stickiness,
            })
        }
        "fixed-response" => {
            let f = action.fixed_response.as_ref()?;
            Some(RuleAction::FixedResponse {
                status_code: f.status_code.parse().ok()?,
                content_type: f.content_type.clone(),
                body: f.message_body.clone(),
            })
        }
        "redirect" => {
            let r = action.redirect.as_ref()?;
            Some(RuleAction::Redirect {
                protocol: r.protocol.clone(),
                port: r.port.clone(),
                host: r.host.clone(),
                path: r.path.clone(),
                query: r.query.clone(),
                status_code: if r.status_code == "HTTP_301" {
                    301
                } else {
                    302
                },
            })
        }
        _ => None,
    }
}

fn compile_condition(c: &ConditionRecord) -> Option<Condition> {
    Some(match c.field.as_str() {
        "path-pattern" => Condition::PathPattern(c.values.clone()),
        "host-header" => Condition::HostHeader(c.values.clone()),
        "http-header" => Condition::HttpHeader {
            name: c.http_header_name.clone()?,
            values: c.values.clone(),
        },
        "http-request-method" => Condition::HttpRequestMethod(c.values.clone()),
        "query-string" => Condition::QueryString(
            c.query_pairs
                .iter()
                .map(|p| QueryStringPair {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect(),
        ),
        "source-ip" => {
            Condition::SourceIp(c.values.iter().filter_map(|v| Cidr::parse(v)).collect())
        }
        _ => return None,
    })
}

/// Puts one target group (settings and targets) into the data plane, or removes it.
pub struct TargetGroupSync {
    pub plane: Weak<ControlPlane>,
}

impl Reconciler for TargetGroupSync {
    type Key = String;

    async fn reconcile(&self, arn: &String) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let Some(data_plane) = plane.load_balancer_data_plane() else {
            return Ok(Action::Done);
        };
        let compiled = compile_target_group(&plane, arn)
            .await
            .map_err(|e| ReconcileError(e.message))?;
        match compiled {
            Some(group) => {
                let targets = group.targets.clone();
                data_plane.put_target_group(group);
                let newly_gated = plane.targets.mark_served(arn, &targets);
                if let Some(handles) = plane.controllers.get() {
                    handles.services.enqueue_many(newly_gated);
                }
                // The data plane reports changes only: a target it already knew (the same
                // address taken over by a new task) keeps its state without a report, so the
                // registry reads the group's current health once after each put.
                for report in data_plane.target_health(arn) {
                    plane.targets.note_health(&report);
                }
            }
            None => {
                data_plane.remove_target_group(arn);
                if let Some(handles) = plane.controllers.get() {
                    handles
                        .channels
                        .enqueue_many(plane.targets.group_removed(arn));
                }
            }
        }
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<String>, ReconcileError> {
        Ok(Vec::new())
    }
}

/// Puts one listener (port and rules) into the data plane, or removes it.
pub struct ListenerSync {
    pub plane: Weak<ControlPlane>,
}

impl Reconciler for ListenerSync {
    type Key = String;

    async fn reconcile(&self, arn: &String) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let Some(data_plane) = plane.load_balancer_data_plane() else {
            return Ok(Action::Done);
        };
        let compiled = compile_listener(&plane, arn)
            .await
            .map_err(|e| ReconcileError(e.message))?;
        match compiled {
            Some(listener) => {
                if let Err(e) = data_plane.put_listener(listener) {
                    // The port was free when the listener was created; something else took
                    // it since. Try again later rather than give the port up for good.
                    return Err(ReconcileError(format!(
                        "listener {arn} cannot serve port {}: {}",
                        e.port, e.message
                    )));
                }
            }
            None => data_plane.remove_listener(arn),
        }
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<String>, ReconcileError> {
        Ok(Vec::new())
    }
}
