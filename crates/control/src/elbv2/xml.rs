//! ELBv2 records as the model's XML shapes (`LoadBalancer`, `TargetGroup`, `Listener`,
//! `Rule`, `Action`, `RuleCondition`, attributes, tags).

use crate::query_wire::XmlWriter;
use crate::state::elbv2::{
    ActionRecord, ConditionRecord, ElbTag, ListenerRecord, LoadBalancerRecord, RuleRecord,
    TargetGroupRecord,
};
use std::collections::BTreeMap;

/// Gantry's one hosted zone id for every load balancer's DNS name (`*.elb.localhost` is
/// not a Route 53 zone; the value only has AWS's shape).
pub(crate) const CANONICAL_HOSTED_ZONE_ID: &str = "Z0GANTRYELBLOCAL";

pub(crate) fn load_balancer(w: &mut XmlWriter, lb: &LoadBalancerRecord) {
    w.text("LoadBalancerArn", &lb.arn)
        .text("DNSName", &lb.dns_name)
        .text("CanonicalHostedZoneId", CANONICAL_HOSTED_ZONE_ID)
        .timestamp("CreatedTime", lb.created_time)
        .text("LoadBalancerName", &lb.name)
        .text("Scheme", &lb.scheme)
        .text("VpcId", &lb.vpc_id)
        .element("State", |w| {
            w.text("Code", "active");
        })
        .text("Type", "application")
        .list("AvailabilityZones", &lb.availability_zones, |w, az| {
            w.text("ZoneName", &az.zone_name)
                .text("SubnetId", &az.subnet_id)
                .empty_element("LoadBalancerAddresses");
        })
        .string_list("SecurityGroups", &lb.security_groups)
        .text("IpAddressType", &lb.ip_address_type);
}

pub(crate) fn target_group(w: &mut XmlWriter, tg: &TargetGroupRecord, lb_arns: &[String]) {
    let hc = &tg.health_check;
    w.text("TargetGroupArn", &tg.arn)
        .text("TargetGroupName", &tg.name)
        .text("Protocol", &tg.protocol)
        .int("Port", i64::from(tg.port))
        .text("VpcId", &tg.vpc_id)
        .text("HealthCheckProtocol", &hc.protocol)
        .text("HealthCheckPort", &hc.port)
        .bool("HealthCheckEnabled", hc.enabled)
        .int("HealthCheckIntervalSeconds", i64::from(hc.interval_secs))
        .int("HealthCheckTimeoutSeconds", i64::from(hc.timeout_secs))
        .int("HealthyThresholdCount", i64::from(hc.healthy_threshold))
        .int("UnhealthyThresholdCount", i64::from(hc.unhealthy_threshold))
        .text("HealthCheckPath", &hc.path)
        .element("Matcher", |w| {
            w.text("HttpCode", &hc.matcher);
        })
        .string_list("LoadBalancerArns", lb_arns)
        .text("TargetType", &tg.target_type)
        .text("ProtocolVersion", &tg.protocol_version)
        .text("IpAddressType", &tg.ip_address_type);
}

pub(crate) fn actions(w: &mut XmlWriter, name: &str, actions: &[ActionRecord]) {
    w.list(name, actions, action);
}

fn action(w: &mut XmlWriter, a: &ActionRecord) {
    w.text("Type", &a.kind);
    w.opt_text("TargetGroupArn", a.target_group_arn.as_deref());
    w.opt_int("Order", a.order);
    if let Some(f) = &a.forward {
        w.element("ForwardConfig", |w| {
            w.list("TargetGroups", &f.target_groups, |w, g| {
                w.text("TargetGroupArn", &g.target_group_arn)
                    .int("Weight", i64::from(g.weight.unwrap_or(1)));
            });
            w.element("TargetGroupStickinessConfig", |w| {
                w.bool("Enabled", f.stickiness_enabled);
                w.opt_int("DurationSeconds", f.stickiness_duration_secs.map(i64::from));
            });
        });
    }
    if let Some(f) = &a.fixed_response {
        w.element("FixedResponseConfig", |w| {
            w.opt_text("MessageBody", f.message_body.as_deref())
                .text("StatusCode", &f.status_code)
                .opt_text("ContentType", f.content_type.as_deref());
        });
    }
    if let Some(r) = &a.redirect {
        w.element("RedirectConfig", |w| {
            w.text("Protocol", &r.protocol)
                .text("Port", &r.port)
                .text("Host", &r.host)
                .text("Path", &r.path)
                .text("Query", &r.query)
                .text("StatusCode", &r.status_code);
        });
    }
}

fn condition(w: &mut XmlWriter, c: &ConditionRecord) {
    w.text("Field", &c.field);
    if c.legacy {
        w.string_list("Values", &c.values);
    }
    match c.field.as_str() {
        "path-pattern" => {
            w.element("PathPatternConfig", |w| {
                w.string_list("Values", &c.values);
            });
        }
        "host-header" => {
            w.element("HostHeaderConfig", |w| {
                w.string_list("Values", &c.values);
            });
        }
        "http-header" => {
            w.element("HttpHeaderConfig", |w| {
                w.opt_text("HttpHeaderName", c.http_header_name.as_deref())
                    .string_list("Values", &c.values);
            });
        }
        "http-request-method" => {
            w.element("HttpRequestMethodConfig", |w| {
                w.string_list("Values", &c.values);
            });
        }
        "query-string" => {
            w.element("QueryStringConfig", |w| {
                w.list("Values", &c.query_pairs, |w, p| {
                    w.opt_text("Key", p.key.as_deref()).text("Value", &p.value);
                });
            });
        }
        _ => {
            w.element("SourceIpConfig", |w| {
                w.string_list("Values", &c.values);
            });
        }
    }
}

pub(crate) fn listener(w: &mut XmlWriter, l: &ListenerRecord) {
    w.text("ListenerArn", &l.arn)
        .text("LoadBalancerArn", &l.load_balancer_arn)
        .int("Port", i64::from(l.port))
        .text("Protocol", &l.protocol);
    actions(w, "DefaultActions", &l.default_actions);
}

pub(crate) fn rule(w: &mut XmlWriter, r: &RuleRecord) {
    w.text("RuleArn", &r.arn)
        .text("Priority", &r.priority.to_string())
        .list("Conditions", &r.conditions, condition);
    actions(w, "Actions", &r.actions);
    w.bool("IsDefault", false);
}

/// A listener's default rule: its default actions, no conditions, priority `default`.
pub(crate) fn default_rule(w: &mut XmlWriter, l: &ListenerRecord) {
    w.text("RuleArn", &l.default_rule_arn())
        .text("Priority", "default")
        .empty_element("Conditions");
    actions(w, "Actions", &l.default_actions);
    w.bool("IsDefault", true);
}

pub(crate) fn attributes(w: &mut XmlWriter, attributes: &BTreeMap<String, String>) {
    let list: Vec<(&String, &String)> = attributes.iter().collect();
    w.list("Attributes", &list, |w, (k, v)| {
        w.text("Key", k).text("Value", v);
    });
}

pub(crate) fn tags(w: &mut XmlWriter, tags: &[ElbTag]) {
    w.list("Tags", tags, |w, t| {
        w.text("Key", &t.key).text("Value", &t.value);
    });
}
