//! ELBv2's input rules, as pure functions: names, tags, attributes with their defaults and
//! ranges, health checks, actions and rule conditions (both the legacy `Field`+`Values` form
//! and the `*Config` forms). Each returns the record the state layer stores, or the error
//! ELBv2 answers.

use crate::query_wire::{QueryError, QueryRequest};
use crate::state::elbv2::{
    ActionRecord, ConditionRecord, ElbTag, FixedResponseRecord, ForwardRecord, QueryPairRecord,
    RedirectRecord, WeightedGroupRecord,
};
use std::collections::BTreeMap;

pub(crate) fn validation(message: impl Into<String>) -> QueryError {
    QueryError::validation(message)
}
pub(crate) fn err(code: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::new(code, message)
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// ELBv2's rules for a load balancer's or target group's name: 1 to 32 characters,
/// alphanumerics and hyphens, not beginning or ending with a hyphen (and, for a load
/// balancer, not beginning with `internal-`, which AWS reserves for internal load balancers'
/// DNS names).
pub(crate) fn validate_name(kind: &str, name: &str, load_balancer: bool) -> Result<(), QueryError> {
    if name.is_empty() || name.len() > 32 {
        return Err(validation(format!(
            "{kind} name '{name}' must be between 1 and 32 characters long"
        )));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(validation(format!(
            "{kind} name '{name}' can only contain characters that are alphanumeric characters or hyphens(-)"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(validation(format!(
            "{kind} name '{name}' cannot begin or end with a hyphen(-)"
        )));
    }
    if load_balancer && name.to_ascii_lowercase().starts_with("internal-") {
        return Err(validation(format!(
            "{kind} name '{name}' cannot begin with 'internal-'"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

pub(crate) const MAX_TAGS: usize = 50;

fn tag_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// `Prefix.member.N.Key/Value`, validated as the model says (key 1–128, value 0–256, the
/// characters `[\p{L}\p{Z}\p{N}_.:/=+\-@]`, no `aws:` prefix); a key twice is
/// `DuplicateTagKeys`.
pub(crate) fn tags(r: &QueryRequest, prefix: &str) -> Result<Vec<ElbTag>, QueryError> {
    let pairs = r.tags_strict(prefix, false)?;
    let mut out: Vec<ElbTag> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key.is_empty() || key.chars().count() > 128 || !tag_chars_ok(&key) {
            return Err(validation(format!(
                "Tag key '{key}' must be 1 to 128 characters of letters, numbers, spaces and _.:/=+-@"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(validation(format!(
                "Tag key '{key}' cannot start with 'aws:': that prefix is reserved for AWS"
            )));
        }
        if value.chars().count() > 256 || !tag_chars_ok(&value) {
            return Err(validation(format!(
                "Tag value '{value}' of key '{key}' must be at most 256 characters of letters, numbers, spaces and _.:/=+-@"
            )));
        }
        if out.iter().any(|t| t.key == key) {
            return Err(err(
                "DuplicateTagKeys",
                format!("Tag key '{key}' is specified more than once"),
            ));
        }
        out.push(ElbTag { key, value });
    }
    Ok(out)
}

/// Adds (or overwrites) `new` into `existing`; more than 50 tags is `TooManyTags`.
pub(crate) fn merge_tags(existing: &mut Vec<ElbTag>, new: &[ElbTag]) -> Result<(), QueryError> {
    for tag in new {
        match existing.iter_mut().find(|t| t.key == tag.key) {
            Some(slot) => slot.value = tag.value.clone(),
            None => existing.push(tag.clone()),
        }
    }
    if existing.len() > MAX_TAGS {
        return Err(err(
            "TooManyTags",
            format!("A resource can have at most {MAX_TAGS} tags"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------------

/// How one attribute's value is checked.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    /// An integer in the inclusive range.
    Int(i64, i64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// Any string up to this many characters.
    Text(usize),
    /// `off` or an integer in the range.
    OffOrInt(i64, i64),
}

/// ALB attributes with AWS's defaults.
const LOAD_BALANCER_ATTRIBUTES: &[(&str, &str, Kind)] = &[
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text(255)),
    ("access_logs.s3.prefix", "", Kind::Text(1024)),
    ("client_keep_alive.seconds", "3600", Kind::Int(60, 604_800)),
    ("connection_logs.s3.enabled", "false", Kind::Bool),
    ("connection_logs.s3.bucket", "", Kind::Text(255)),
    ("connection_logs.s3.prefix", "", Kind::Text(1024)),
    ("deletion_protection.enabled", "false", Kind::Bool),
    ("health_check_logs.s3.enabled", "false", Kind::Bool),
    ("health_check_logs.s3.bucket", "", Kind::Text(255)),
    ("health_check_logs.s3.prefix", "", Kind::Text(1024)),
    ("idle_timeout.timeout_seconds", "60", Kind::Int(1, 4000)),
    (
        "load_balancing.cross_zone.enabled",
        "true",
        Kind::OneOf(&["true"]),
    ),
    (
        "routing.http.desync_mitigation_mode",
        "defensive",
        Kind::OneOf(&["monitor", "defensive", "strictest"]),
    ),
    (
        "routing.http.drop_invalid_header_fields.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.preserve_host_header.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
        Kind::Bool,
    ),
    ("routing.http.xff_client_port.enabled", "false", Kind::Bool),
    (
        "routing.http.xff_header_processing.mode",
        "append",
        Kind::OneOf(&["append", "preserve", "remove"]),
    ),
    ("routing.http2.enabled", "true", Kind::Bool),
    ("waf.fail_open.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

/// HTTP target group attributes with AWS's defaults. `target_health_state.*` is Network
/// Load Balancer only on AWS and so absent here, as AWS lists ALB target groups.
const TARGET_GROUP_ATTRIBUTES: &[(&str, &str, Kind)] = &[
    (
        "deregistration_delay.timeout_seconds",
        "300",
        Kind::Int(0, 3600),
    ),
    (
        "load_balancing.algorithm.anomaly_mitigation",
        "off",
        Kind::OneOf(&["off"]),
    ),
    (
        "load_balancing.algorithm.type",
        "round_robin",
        Kind::OneOf(&["round_robin", "least_outstanding_requests"]),
    ),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
        Kind::OneOf(&["true", "false", "use_load_balancer_configuration"]),
    ),
    ("slow_start.duration_seconds", "0", Kind::Int(0, 900)),
    ("stickiness.app_cookie.cookie_name", "", Kind::Text(256)),
    (
        "stickiness.app_cookie.duration_seconds",
        "86400",
        Kind::Int(1, 604_800),
    ),
    ("stickiness.enabled", "false", Kind::Bool),
    (
        "stickiness.lb_cookie.duration_seconds",
        "86400",
        Kind::Int(1, 604_800),
    ),
    (
        "stickiness.type",
        "lb_cookie",
        Kind::OneOf(&["lb_cookie", "app_cookie"]),
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
        Kind::OffOrInt(1, 1_000_000),
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
        Kind::OffOrInt(1, 100),
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
        Kind::Int(1, 1_000_000),
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
        Kind::OffOrInt(1, 100),
    ),
];

/// HTTP listener attributes (the response headers an ALB can add) with AWS's defaults.
const LISTENER_ATTRIBUTES: &[(&str, &str, Kind)] = &[
    ("routing.http.response.server.enabled", "true", Kind::Bool),
    (
        "routing.http.response.strict_transport_security.header_value",
        "",
        Kind::Text(1024),
    ),
    (
        "routing.http.response.access_control_allow_origin.header_value",
        "",
        Kind::Text(1024),
    ),
    (
        "routing.http.response.access_control_allow_methods.header_value",
        "",
        Kind::Text(1024),
    ),
    (
        "routing.http.response.access_control_allow_headers.header_value",
        "",
        Kind::Text(1024),
    ),
    (
        "routing.http.response.access_control_allow_credentials.header_value",
        "",
        Kind::OneOf(&["", "true"]),
    ),
    (
        "routing.http.response.access_control_expose_headers.header_value",
        "",
        Kind::Text(1024),
    ),
    (
        "routing.http.response.access_control_max_age.header_value",
        "",
        Kind::Text(16),
    ),
    (
        "routing.http.response.content_security_policy.header_value",
        "",
        Kind::Text(1024),
    ),
    (
        "routing.http.response.x_content_type_options.header_value",
        "",
        Kind::OneOf(&["", "nosniff"]),
    ),
    (
        "routing.http.response.x_frame_options.header_value",
        "",
        Kind::OneOf(&["", "DENY", "SAMEORIGIN", "ALLOW-FROM"]),
    ),
];

/// Which attribute table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AttributeSet {
    LoadBalancer,
    TargetGroup,
    Listener,
}

impl AttributeSet {
    fn table(self) -> &'static [(&'static str, &'static str, Kind)] {
        match self {
            AttributeSet::LoadBalancer => LOAD_BALANCER_ATTRIBUTES,
            AttributeSet::TargetGroup => TARGET_GROUP_ATTRIBUTES,
            AttributeSet::Listener => LISTENER_ATTRIBUTES,
        }
    }
    /// Every key with its default.
    pub fn defaults(self) -> BTreeMap<String, String> {
        self.table()
            .iter()
            .map(|(k, v, _)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn check_value(key: &str, value: &str, kind: Kind) -> Result<(), QueryError> {
    let bad = |what: String| {
        validation(format!(
            "The value of attribute '{key}' must be {what}; '{value}' is not valid"
        ))
    };
    match kind {
        Kind::Bool => {
            if value != "true" && value != "false" {
                return Err(bad("'true' or 'false'".into()));
            }
        }
        Kind::Int(min, max) => match value.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => {}
            _ => return Err(bad(format!("an integer from {min} to {max}"))),
        },
        Kind::OffOrInt(min, max) => {
            if value != "off" {
                match value.parse::<i64>() {
                    Ok(n) if (min..=max).contains(&n) => {}
                    _ => return Err(bad(format!("'off' or an integer from {min} to {max}"))),
                }
            }
        }
        Kind::OneOf(options) => {
            if !options.contains(&value) {
                let shown: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
                return Err(bad(format!("one of {}", shown.join(", "))));
            }
        }
        Kind::Text(max) => {
            if value.chars().count() > max {
                return Err(bad(format!("at most {max} characters")));
            }
        }
    }
    Ok(())
}

/// Applies `Attributes.member.N.Key/Value` onto `current` (which holds every key): an unknown
/// key or a bad value refuses the whole change. Returns the keys changed, as sent.
pub(crate) fn apply_attributes(
    set: AttributeSet,
    r: &QueryRequest,
    current: &mut BTreeMap<String, String>,
) -> Result<(), QueryError> {
    let given = r.struct_list("Attributes");
    if given.is_empty() {
        return Err(validation(
            "1 validation error detected: Value null at 'attributes' failed to satisfy constraint: Member must not be null",
        ));
    }
    let mut next = current.clone();
    for attribute in given {
        let key = attribute.required("Key")?;
        let value = attribute.get("Value").unwrap_or("");
        let Some((_, _, kind)) = set.table().iter().find(|(k, _, _)| *k == key) else {
            return Err(validation(format!(
                "Attribute '{key}' is not recognized for this resource"
            )));
        };
        if key == "load_balancing.algorithm.type" && value == "weighted_random" {
            return Err(validation(
                "Gantry's load balancer supports the algorithms 'round_robin' and 'least_outstanding_requests'; 'weighted_random' (with anomaly mitigation) is not implemented",
            ));
        }
        check_value(key, value, *kind)?;
        next.insert(key.to_string(), value.to_string());
    }
    // Cross-attribute rules AWS applies.
    if set == AttributeSet::TargetGroup {
        let slow_start = next
            .get("slow_start.duration_seconds")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if slow_start != 0 && !(30..=900).contains(&slow_start) {
            return Err(validation(
                "The value of attribute 'slow_start.duration_seconds' must be 0 (off) or from 30 to 900",
            ));
        }
        let app_cookie = next
            .get("stickiness.app_cookie.cookie_name")
            .map(String::as_str)
            .unwrap_or("");
        if next.get("stickiness.enabled").map(String::as_str) == Some("true")
            && next.get("stickiness.type").map(String::as_str) == Some("app_cookie")
            && app_cookie.is_empty()
        {
            return Err(validation(
                "'stickiness.app_cookie.cookie_name' must be set when app_cookie stickiness is enabled",
            ));
        }
        let reserved = ["AWSALB", "AWSALBAPP", "AWSALBTG"];
        if reserved.iter().any(|p| app_cookie.starts_with(p)) {
            return Err(validation(format!(
                "The application cookie name '{app_cookie}' cannot start with AWSALB, AWSALBAPP or AWSALBTG: they are reserved for the load balancer"
            )));
        }
    }
    if set == AttributeSet::LoadBalancer {
        for logs in ["access_logs", "connection_logs", "health_check_logs"] {
            let enabled = next.get(&format!("{logs}.s3.enabled")).map(String::as_str);
            let bucket = next.get(&format!("{logs}.s3.bucket")).map(String::as_str);
            if enabled == Some("true") && bucket.unwrap_or("").is_empty() {
                return Err(err(
                    "InvalidConfigurationRequest",
                    format!(
                        "The value of '{logs}.s3.bucket' cannot be empty when {logs} are enabled"
                    ),
                ));
            }
        }
    }
    *current = next;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

/// An optional integer in `min..=max`, with the model's message.
pub(crate) fn int_in(
    r: &QueryRequest,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, QueryError> {
    match r.int(key)? {
        Some(n) if n < min || n > max => Err(r.invalid_value(
            key,
            &n.to_string(),
            &format!("Member must have value {}", range_text(min, max)),
        )),
        other => Ok(other),
    }
}

fn range_text(min: i64, max: i64) -> String {
    format!("greater than or equal to {min} and less than or equal to {max}")
}

/// `Marker` (an offset this API handed out) and `PageSize` (1–400).
pub(crate) fn paging(r: &QueryRequest) -> Result<(usize, Option<usize>), QueryError> {
    let start = match r.get("Marker") {
        None | Some("") => 0,
        Some(m) => m.parse::<usize>().map_err(|_| {
            validation(format!(
                "The marker '{m}' is not valid: pass a NextMarker this API returned"
            ))
        })?,
    };
    let size = int_in(r, "PageSize", 1, 400)?.map(|n| n as usize);
    Ok((start, size))
}

/// One page of `items` and the next marker.
pub(crate) fn page<T: Clone>(
    items: &[T],
    start: usize,
    size: Option<usize>,
) -> (Vec<T>, Option<String>) {
    let start = start.min(items.len());
    let end = match size {
        Some(n) => (start + n).min(items.len()),
        None => items.len(),
    };
    let next = (end < items.len()).then(|| end.to_string());
    (items[start..end].to_vec(), next)
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

/// The content types a fixed response may carry (AWS's list).
const FIXED_RESPONSE_CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

/// `Prefix.member.N` actions. Target group ARNs are returned for the caller to check
/// existence (`TargetGroupNotFound`).
pub(crate) fn actions(r: &QueryRequest, prefix: &str) -> Result<Vec<ActionRecord>, QueryError> {
    let list = r.struct_list(prefix);
    if list.is_empty() {
        return Err(validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            r.member_path(prefix)
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for a in &list {
        out.push(action(a)?);
    }
    // Orders: all given or none; distinct; the terminal action last.
    let given: Vec<i64> = out.iter().filter_map(|a| a.order).collect();
    if !given.is_empty() && given.len() != out.len() {
        return Err(validation(
            "Either all actions or none of them must have an Order",
        ));
    }
    let mut sorted = given.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != given.len() {
        return Err(validation("Action orders must be unique"));
    }
    if out.len() > 1 {
        return Err(err(
            "TooManyActions",
            "Only one action (forward, fixed-response or redirect) is allowed: authentication actions, which precede them on AWS, are not supported by Gantry",
        ));
    }
    Ok(out)
}

fn action(a: &QueryRequest) -> Result<ActionRecord, QueryError> {
    let kind = a.required("Type")?;
    let order = match a.int("Order")? {
        Some(n) if !(1..=50000).contains(&n) => {
            return Err(a.invalid_value(
                "Order",
                &n.to_string(),
                &format!("Member must have value {}", range_text(1, 50000)),
            ))
        }
        other => other,
    };
    let mut record = ActionRecord {
        kind: kind.to_string(),
        order,
        target_group_arn: None,
        forward: None,
        fixed_response: None,
        redirect: None,
    };
    match kind {
        "forward" => {
            let single = a.get("TargetGroupArn").filter(|s| !s.is_empty());
            let config = a.nested("ForwardConfig");
            let mut groups: Vec<WeightedGroupRecord> = Vec::new();
            let mut stickiness_enabled = false;
            let mut stickiness_duration_secs = None;
            if let Some(config) = &config {
                for g in config.struct_list("TargetGroups") {
                    let arn = g.required("TargetGroupArn")?.to_string();
                    let weight = match g.int("Weight")? {
                        Some(w) if !(0..=999).contains(&w) => {
                            return Err(g.invalid_value(
                                "Weight",
                                &w.to_string(),
                                &format!("Member must have value {}", range_text(0, 999)),
                            ))
                        }
                        w => w.map(|w| w as u32),
                    };
                    if groups.iter().any(|x| x.target_group_arn == arn) {
                        return Err(validation(format!(
                            "Target group '{arn}' is specified more than once in the forward action"
                        )));
                    }
                    groups.push(WeightedGroupRecord {
                        target_group_arn: arn,
                        weight,
                    });
                }
                if let Some(s) = config.nested("TargetGroupStickinessConfig") {
                    stickiness_enabled = s.bool("Enabled")?.unwrap_or(false);
                    stickiness_duration_secs = match s.int("DurationSeconds")? {
                        Some(d) if !(1..=604_800).contains(&d) => {
                            return Err(s.invalid_value(
                                "DurationSeconds",
                                &d.to_string(),
                                &format!("Member must have value {}", range_text(1, 604_800)),
                            ))
                        }
                        d => d.map(|d| d as u32),
                    };
                    if stickiness_enabled && stickiness_duration_secs.is_none() {
                        return Err(validation(
                            "A duration must be specified when target group stickiness is enabled",
                        ));
                    }
                }
            }
            match (single, groups.len()) {
                (None, 0) => {
                    return Err(validation(
                        "A forward action needs a TargetGroupArn or a ForwardConfig with at least one target group",
                    ))
                }
                (Some(arn), 0) => groups.push(WeightedGroupRecord {
                    target_group_arn: arn.to_string(),
                    weight: None,
                }),
                (Some(arn), 1) if groups[0].target_group_arn == arn => {}
                (Some(_), _) => {
                    return Err(validation(
                        "You cannot specify both a TargetGroupArn and a ForwardConfig naming other target groups",
                    ))
                }
                (None, _) => {}
            }
            if groups.len() > 5 {
                return Err(validation(
                    "A forward action can name at most 5 target groups",
                ));
            }
            if groups.len() == 1 {
                record.target_group_arn = Some(groups[0].target_group_arn.clone());
            }
            record.forward = Some(ForwardRecord {
                target_groups: groups,
                stickiness_enabled,
                stickiness_duration_secs,
            });
        }
        "fixed-response" => {
            let Some(c) = a.nested("FixedResponseConfig") else {
                return Err(validation(
                    "A fixed-response action needs a FixedResponseConfig",
                ));
            };
            let status = c.required("StatusCode")?;
            let ok = status.len() == 3
                && status.bytes().all(|b| b.is_ascii_digit())
                && matches!(status.as_bytes()[0], b'2' | b'4' | b'5');
            if !ok {
                return Err(c.invalid_value(
                    "StatusCode",
                    status,
                    "Member must satisfy regular expression pattern: ^(2|4|5)\\d\\d$",
                ));
            }
            let content_type = c.get("ContentType").map(str::to_string);
            if let Some(t) = &content_type {
                if !FIXED_RESPONSE_CONTENT_TYPES.contains(&t.as_str()) {
                    return Err(validation(format!(
                        "The content type '{t}' is not valid: use one of {}",
                        FIXED_RESPONSE_CONTENT_TYPES.join(", ")
                    )));
                }
            }
            let body = c.get("MessageBody").map(str::to_string);
            if body.as_ref().is_some_and(|b| b.len() > 1024) {
                return Err(validation(
                    "The message body of a fixed response can be at most 1024 bytes",
                ));
            }
            record.fixed_response = Some(FixedResponseRecord {
                status_code: status.to_string(),
                content_type,
                message_body: body,
            });
        }
        "redirect" => {
            let Some(c) = a.nested("RedirectConfig") else {
                return Err(validation("A redirect action needs a RedirectConfig"));
            };
            let status = c.required("StatusCode")?;
            if status != "HTTP_301" && status != "HTTP_302" {
                return Err(c.invalid_value(
                    "StatusCode",
                    status,
                    "Member must satisfy enum value set: [HTTP_301, HTTP_302]",
                ));
            }
            let part = |k: &str, default: &str| c.get(k).unwrap_or(default).to_string();
            let redirect = RedirectRecord {
                protocol: part("Protocol", "#{protocol}"),
                port: part("Port", "#{port}"),
                host: part("Host", "#{host}"),
                path: part("Path", "/#{path}"),
                query: part("Query", "#{query}"),
                status_code: status.to_string(),
            };
            if !matches!(redirect.protocol.as_str(), "HTTP" | "HTTPS" | "#{protocol}") {
                return Err(c.invalid_value(
                    "Protocol",
                    &redirect.protocol,
                    "Member must satisfy regular expression pattern: ^(HTTPS?|#\\{protocol\\})$",
                ));
            }
            if redirect.port != "#{port}" {
                match redirect.port.parse::<u32>() {
                    Ok(p) if (1..=65535).contains(&p) => {}
                    _ => {
                        return Err(validation(format!(
                            "The redirect port '{}' must be #{{port}} or from 1 to 65535",
                            redirect.port
                        )))
                    }
                }
            }
            if !redirect.path.starts_with('/') {
                return Err(validation(format!(
                    "The redirect path '{}' must start with '/'",
                    redirect.path
                )));
            }
            if redirect.host.is_empty() || redirect.host.len() > 128 {
                return Err(validation("The redirect host must be 1 to 128 characters"));
            }
            let unchanged = redirect.protocol == "#{protocol}"
                && redirect.port == "#{port}"
                && redirect.host == "#{host}"
                && redirect.path == "/#{path}"
                && redirect.query == "#{query}";
            if unchanged {
                return Err(err(
                    "InvalidLoadBalancerAction",
                    "The redirect must change at least one of protocol, port, host, path or query: otherwise it would redirect to itself",
                ));
            }
            record.redirect = Some(redirect);
        }
        "authenticate-oidc" | "authenticate-cognito" | "jwt-validation" => {
            return Err(err(
                "InvalidLoadBalancerAction",
                format!("Action type '{kind}' is not supported by Gantry: its load balancer serves plain HTTP listeners without authentication; use forward, fixed-response or redirect"),
            ))
        }
        other => {
            return Err(a.invalid_value(
                "Type",
                other,
                "Member must satisfy enum value set: [forward, authenticate-oidc, authenticate-cognito, redirect, fixed-response, jwt-validation]",
            ))
        }
    }
    Ok(record)
}

// ---------------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------------

const FIELDS: &[&str] = &[
    "path-pattern",
    "host-header",
    "http-header",
    "http-request-method",
    "query-string",
    "source-ip",
];

fn config_key(field: &str) -> &'static str {
    match field {
        "path-pattern" => "PathPatternConfig",
        "host-header" => "HostHeaderConfig",
        "http-header" => "HttpHeaderConfig",
        "http-request-method" => "HttpRequestMethodConfig",
        "query-string" => "QueryStringConfig",
        _ => "SourceIpConfig",
    }
}

/// `Conditions.member.N`, in either form, validated as ELBv2 does: a known field; values
/// present; 128-character patterns of the allowed characters; methods `A-Z_-`; CIDR blocks;
/// at most 5 condition values in all (wildcards count as ELBv2 counts values).
pub(crate) fn conditions(
    r: &QueryRequest,
    required: bool,
) -> Result<Vec<ConditionRecord>, QueryError> {
    let list = r.struct_list("Conditions");
    if list.is_empty() && required && !r.list_present("Conditions") {
        return Err(validation(
            "1 validation error detected: Value null at 'conditions' failed to satisfy constraint: Member must not be null",
        ));
    }
    let mut out: Vec<ConditionRecord> = Vec::with_capacity(list.len());
    for c in &list {
        out.push(condition(c)?);
    }
    let total: usize = out
        .iter()
        .map(|c| c.values.len().max(c.query_pairs.len()))
        .sum();
    if total > 5 {
        return Err(validation(
            "A rule can have at most 5 condition values in all",
        ));
    }
    for field in [
        "path-pattern",
        "host-header",
        "http-request-method",
        "source-ip",
    ] {
        if out.iter().filter(|c| c.field == field).count() > 1 {
            return Err(validation(format!(
                "A rule can have at most one '{field}' condition"
            )));
        }
    }
    Ok(out)
}

fn condition(c: &QueryRequest) -> Result<ConditionRecord, QueryError> {
    let legacy_values = c.string_list("Values");
    let field = match c.get("Field") {
        Some(f) => f.to_string(),
        None => {
            // Infer from the one *Config sent.
            let sent: Vec<&str> = FIELDS
                .iter()
                .copied()
                .filter(|f| c.nested(config_key(f)).is_some())
                .collect();
            match sent.as_slice() {
                [one] => one.to_string(),
                _ => {
                    return Err(validation(
                        "A condition needs a Field (path-pattern, host-header, http-header, http-request-method, query-string or source-ip)",
                    ))
                }
            }
        }
    };
    if !FIELDS.contains(&field.as_str()) {
        return Err(validation(format!(
            "Condition field '{field}' is not valid: use one of {}",
            FIELDS.join(", ")
        )));
    }
    if c.list_present("RegexValues")
        || c.nested(config_key(&field))
            .is_some_and(|n| n.list_present("RegexValues"))
    {
        return Err(validation(
            "Regular-expression conditions (RegexValues) are not supported by Gantry: use wildcard Values",
        ));
    }
    for other in FIELDS.iter().filter(|f| **f != field) {
        if c.nested(config_key(other)).is_some() {
            return Err(validation(format!(
                "A '{field}' condition cannot carry a {}",
                config_key(other)
            )));
        }
    }
    let config = c.nested(config_key(&field));
    let mut record = ConditionRecord {
        field: field.clone(),
        values: Vec::new(),
        http_header_name: None,
        query_pairs: Vec::new(),
        legacy: !legacy_values.is_empty(),
    };
    match field.as_str() {
        "path-pattern" | "host-header" => {
            let config_values = config
                .as_ref()
                .map(|n| n.string_list("Values"))
                .unwrap_or_default();
            record.values = pick_values(&field, legacy_values, config_values)?;
            for v in &record.values {
                let allowed = if field == "path-pattern" {
                    "_-.$/~\"'@:+&()!,;=*?%"
                } else {
                    "-.*?"
                };
                check_pattern(&field, v, allowed)?;
            }
        }
        "http-request-method" => {
            if !legacy_values.is_empty() {
                return Err(validation(
                    "An 'http-request-method' condition takes HttpRequestMethodConfig, not Values",
                ));
            }
            record.values = config.map(|n| n.string_list("Values")).unwrap_or_default();
            need_values(&field, &record.values)?;
            for m in &record.values {
                if m.is_empty()
                    || m.len() > 40
                    || !m
                        .chars()
                        .all(|ch| ch.is_ascii_uppercase() || ch == '_' || ch == '-')
                {
                    return Err(validation(format!(
                        "HTTP request method '{m}' is not valid: use upper-case letters, '_' and '-' (e.g. GET)"
                    )));
                }
            }
        }
        "http-header" => {
            if !legacy_values.is_empty() {
                return Err(validation(
                    "An 'http-header' condition takes HttpHeaderConfig, not Values",
                ));
            }
            let Some(config) = config else {
                return Err(validation(
                    "An 'http-header' condition needs HttpHeaderConfig",
                ));
            };
            let name = config.required("HttpHeaderName")?.to_string();
            let name_ok = !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch));
            if !name_ok {
                return Err(validation(format!(
                    "HTTP header name '{name}' is not valid: 1 to 40 token characters"
                )));
            }
            record.values = config.string_list("Values");
            need_values(&field, &record.values)?;
            for v in &record.values {
                if v.is_empty() || v.len() > 128 {
                    return Err(validation(format!(
                        "HTTP header value pattern '{v}' must be 1 to 128 characters"
                    )));
                }
            }
            record.http_header_name = Some(name);
        }
        "query-string" => {
            if !legacy_values.is_empty() {
                return Err(validation(
                    "A 'query-string' condition takes QueryStringConfig, not Values",
                ));
            }
            let pairs = config.map(|n| n.struct_list("Values")).unwrap_or_default();
            for p in pairs {
                let key = p.get("Key").map(str::to_string);
                let value = p.get("Value").unwrap_or("").to_string();
                if value.is_empty() || value.len() > 128 {
                    return Err(validation(
                        "Each query-string value must be 1 to 128 characters (the key is optional)",
                    ));
                }
                if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 128) {
                    return Err(validation("A query-string key must be 1 to 128 characters"));
                }
                record.query_pairs.push(QueryPairRecord { key, value });
            }
            if record.query_pairs.is_empty() {
                return Err(validation(
                    "A 'query-string' condition needs at least one key/value pair",
                ));
            }
        }
        _ => {
            // source-ip
            let config_values = config.map(|n| n.string_list("Values")).unwrap_or_default();
            record.values = pick_values(&field, legacy_values, config_values)?;
            for v in &record.values {
                if gantry_model::elbv2::Cidr::parse(v).is_none() {
                    return Err(validation(format!(
                        "'{v}' is not a valid CIDR block for a source-ip condition"
                    )));
                }
            }
        }
    }
    Ok(record)
}

fn need_values(field: &str, values: &[String]) -> Result<(), QueryError> {
    if values.is_empty() {
        return Err(validation(format!(
            "A '{field}' condition needs at least one value"
        )));
    }
    Ok(())
}

/// Values from the legacy form or the config form (both: they must agree).
fn pick_values(
    field: &str,
    legacy: Vec<String>,
    config: Vec<String>,
) -> Result<Vec<String>, QueryError> {
    let values = match (legacy.is_empty(), config.is_empty()) {
        (false, false) if legacy != config => {
            return Err(validation(format!(
                "A '{field}' condition cannot have different Values and {}.Values",
                config_key(field)
            )))
        }
        (false, _) => legacy,
        (true, _) => config,
    };
    need_values(field, &values)?;
    Ok(values)
}

fn check_pattern(field: &str, value: &str, extra: &str) -> Result<(), QueryError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "Condition value '{value}' is not valid for '{field}': 1 to 128 characters of A-Z, a-z, 0-9 and {extra}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> QueryRequest {
        QueryRequest::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn names_follow_elbv2_rules() {
        assert!(validate_name("Load balancer", "web-1", true).is_ok());
        assert!(validate_name("Load balancer", &"a".repeat(32), true).is_ok());
        for bad in ["", "-web", "web-", "web_1", "internal-web", &"a".repeat(33)] {
            let e = validate_name("Load balancer", bad, true).unwrap_err();
            assert_eq!(e.code, "ValidationError", "{bad}");
        }
        assert!(validate_name("Target group", "internal-web", false).is_ok());
    }

    #[test]
    fn attributes_are_checked_against_the_table() {
        let mut current = AttributeSet::TargetGroup.defaults();
        assert_eq!(current["deregistration_delay.timeout_seconds"], "300");
        let ok = req(&[
            ("Attributes.member.1.Key", "slow_start.duration_seconds"),
            ("Attributes.member.1.Value", "30"),
            ("Attributes.member.2.Key", "load_balancing.algorithm.type"),
            ("Attributes.member.2.Value", "least_outstanding_requests"),
        ]);
        apply_attributes(AttributeSet::TargetGroup, &ok, &mut current).unwrap();
        assert_eq!(current["slow_start.duration_seconds"], "30");
        for (key, value) in [
            ("slow_start.duration_seconds", "10"),
            ("deregistration_delay.timeout_seconds", "3601"),
            ("stickiness.enabled", "yes"),
            ("load_balancing.algorithm.type", "weighted_random"),
            ("no.such.key", "1"),
        ] {
            let bad = req(&[
                ("Attributes.member.1.Key", key),
                ("Attributes.member.1.Value", value),
            ]);
            let before = current.clone();
            let e = apply_attributes(AttributeSet::TargetGroup, &bad, &mut current).unwrap_err();
            assert_eq!(e.code, "ValidationError", "{key}={value}");
            assert_eq!(current, before, "a refused change changes nothing");
        }
        let mut lb = AttributeSet::LoadBalancer.defaults();
        assert_eq!(lb["idle_timeout.timeout_seconds"], "60");
        assert_eq!(lb["routing.http.desync_mitigation_mode"], "defensive");
        let logs = req(&[
            ("Attributes.member.1.Key", "access_logs.s3.enabled"),
            ("Attributes.member.1.Value", "true"),
        ]);
        let e = apply_attributes(AttributeSet::LoadBalancer, &logs, &mut lb).unwrap_err();
        assert_eq!(e.code, "InvalidConfigurationRequest");
    }

    #[test]
    fn conditions_in_both_forms() {
        let legacy = req(&[
            ("Conditions.member.1.Field", "path-pattern"),
            ("Conditions.member.1.Values.member.1", "/api/*"),
        ]);
        let c = conditions(&legacy, true).unwrap();
        assert_eq!(c[0].values, ["/api/*"]);
        assert!(c[0].legacy);
        let config = req(&[
            ("Conditions.member.1.Field", "http-header"),
            (
                "Conditions.member.1.HttpHeaderConfig.HttpHeaderName",
                "X-Env",
            ),
            (
                "Conditions.member.1.HttpHeaderConfig.Values.member.1",
                "prod*",
            ),
            (
                "Conditions.member.2.QueryStringConfig.Values.member.1.Key",
                "v",
            ),
            (
                "Conditions.member.2.QueryStringConfig.Values.member.1.Value",
                "2",
            ),
            (
                "Conditions.member.3.SourceIpConfig.Values.member.1",
                "10.0.0.0/8",
            ),
        ]);
        let c = conditions(&config, true).unwrap();
        assert_eq!(c[0].http_header_name.as_deref(), Some("X-Env"));
        assert_eq!(c[1].field, "query-string");
        assert_eq!(c[1].query_pairs[0].key.as_deref(), Some("v"));
        assert_eq!(c[2].field, "source-ip");
        for bad in [
            vec![
                ("Conditions.member.1.Field", "cookie"),
                ("Conditions.member.1.Values.member.1", "x"),
            ],
            vec![("Conditions.member.1.Field", "path-pattern")],
            vec![
                ("Conditions.member.1.Field", "source-ip"),
                ("Conditions.member.1.Values.member.1", "10.0.0.300/8"),
            ],
            vec![
                ("Conditions.member.1.Field", "host-header"),
                ("Conditions.member.1.Values.member.1", "a b"),
            ],
            vec![(
                "Conditions.member.1.HttpRequestMethodConfig.Values.member.1",
                "get",
            )],
        ] {
            assert_eq!(
                conditions(&req(&bad), true).unwrap_err().code,
                "ValidationError",
                "{bad:?}"
            );
        }
        let six: Vec<(String, String)> = (1..=6)
            .map(|i| {
                (
                    format!("Conditions.member.1.Values.member.{i}"),
                    format!("/p{i}"),
                )
            })
            .chain([(
                "Conditions.member.1.Field".to_string(),
                "path-pattern".to_string(),
            )])
            .collect();
        let six = QueryRequest::from_pairs(six);
        assert_eq!(conditions(&six, true).unwrap_err().code, "ValidationError");
    }

    #[test]
    fn actions_are_validated() {
        let fwd = req(&[
            ("A.member.1.Type", "forward"),
            (
                "A.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                "tg1",
            ),
            (
                "A.member.1.ForwardConfig.TargetGroups.member.1.Weight",
                "10",
            ),
            (
                "A.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn",
                "tg2",
            ),
            (
                "A.member.1.ForwardConfig.TargetGroupStickinessConfig.Enabled",
                "true",
            ),
            (
                "A.member.1.ForwardConfig.TargetGroupStickinessConfig.DurationSeconds",
                "60",
            ),
        ]);
        let a = actions(&fwd, "A").unwrap();
        assert_eq!(a[0].target_group_arns(), ["tg1", "tg2"]);
        assert_eq!(a[0].target_group_arn, None);
        let redirect = req(&[
            ("A.member.1.Type", "redirect"),
            ("A.member.1.RedirectConfig.StatusCode", "HTTP_301"),
            ("A.member.1.RedirectConfig.Protocol", "HTTPS"),
        ]);
        let a = actions(&redirect, "A").unwrap();
        assert_eq!(a[0].redirect.as_ref().unwrap().path, "/#{path}");
        for (bad, code) in [
            (
                vec![
                    ("A.member.1.Type", "forward"),
                    (
                        "A.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                        "x",
                    ),
                    (
                        "A.member.1.ForwardConfig.TargetGroups.member.1.Weight",
                        "1000",
                    ),
                ],
                "ValidationError",
            ),
            (
                vec![
                    ("A.member.1.Type", "fixed-response"),
                    ("A.member.1.FixedResponseConfig.StatusCode", "302"),
                ],
                "ValidationError",
            ),
            (
                vec![
                    ("A.member.1.Type", "fixed-response"),
                    ("A.member.1.FixedResponseConfig.StatusCode", "200"),
                    ("A.member.1.FixedResponseConfig.ContentType", "image/png"),
                ],
                "ValidationError",
            ),
            (
                vec![
                    ("A.member.1.Type", "redirect"),
                    ("A.member.1.RedirectConfig.StatusCode", "HTTP_301"),
                ],
                "InvalidLoadBalancerAction",
            ),
            (
                vec![("A.member.1.Type", "authenticate-oidc")],
                "InvalidLoadBalancerAction",
            ),
        ] {
            assert_eq!(actions(&req(&bad), "A").unwrap_err().code, code, "{bad:?}");
        }
    }

    #[test]
    fn tags_are_checked() {
        let t = req(&[
            ("Tags.member.1.Key", "env"),
            ("Tags.member.1.Value", "prod"),
        ]);
        assert_eq!(tags(&t, "Tags").unwrap().len(), 1);
        let dup = req(&[("Tags.member.1.Key", "a"), ("Tags.member.2.Key", "a")]);
        assert_eq!(tags(&dup, "Tags").unwrap_err().code, "DuplicateTagKeys");
        let reserved = req(&[("Tags.member.1.Key", "aws:x")]);
        assert_eq!(tags(&reserved, "Tags").unwrap_err().code, "ValidationError");
        let mut existing: Vec<ElbTag> = (0..50)
            .map(|i| ElbTag {
                key: format!("k{i}"),
                value: String::new(),
            })
            .collect();
        let more = [ElbTag {
            key: "one-more".into(),
            value: String::new(),
        }];
        assert_eq!(
            merge_tags(&mut existing, &more).unwrap_err().code,
            "TooManyTags"
        );
    }
}
