//! The ELBv2 operations. Each write takes the plane's ELBv2 write lock, reads what it needs,
//! checks everything, and commits one store transaction: a refused call changes nothing,
//! and cross-record rules (a port used once, a priority used once per listener, a target
//! group not deleted while forwarded to) hold because no other ELBv2 write interleaves.

use super::input::{self, err, validation, AttributeSet};
use super::xml;
use crate::plane::ControlPlane;
use crate::query_wire::{QueryError, QueryRequest, XmlWriter, ELBV2_NAMESPACE};
use crate::state::elbv2::{
    self as st, ActionRecord, AvailabilityZoneRecord, ElbArn, ElbTag, HealthCheckRecord,
    ListenerRecord, LoadBalancerRecord, RuleRecord, TargetGroupRecord, TargetRecord,
};
use crate::state::repo;
use gantry_model::elbv2::{TargetReason, TargetState};
use gantry_model::{now_epoch, EcsError};
use gantry_store::TxnOp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

type Reply = Result<XmlWriter, QueryError>;

/// The VPC id shown for load balancers and target groups created without one (Gantry has no
/// VPCs; AWS's value would be the default VPC's).
pub(crate) const GANTRY_VPC_ID: &str = "vpc-gantry";
/// The most ARNs one DescribeTags / AddTags / RemoveTags call may name.
const MAX_TAG_RESOURCES: usize = 20;
/// AWS's default quotas.
const MAX_RULES_PER_LISTENER: usize = 100;
const MAX_TARGETS_PER_GROUP: usize = 1000;

pub async fn dispatch(plane: &ControlPlane, action: &str, r: &QueryRequest) -> Reply {
    match action {
        "CreateLoadBalancer" => create_load_balancer(plane, r).await,
        "DescribeLoadBalancers" => describe_load_balancers(plane, r).await,
        "DeleteLoadBalancer" => delete_load_balancer(plane, r).await,
        "DescribeLoadBalancerAttributes" => {
            let lb = load_balancer(plane, r.required("LoadBalancerArn")?).await?;
            Ok(attributes_reply(action, &lb.attributes))
        }
        "ModifyLoadBalancerAttributes" => modify_load_balancer_attributes(plane, r).await,
        "SetSecurityGroups" => set_security_groups(plane, r).await,
        "SetSubnets" => set_subnets(plane, r).await,
        "SetIpAddressType" => set_ip_address_type(plane, r).await,
        "DescribeCapacityReservation" => {
            load_balancer(plane, r.required("LoadBalancerArn")?).await?;
            let mut w = writer(action);
            w.int("DecreaseRequestsRemaining", 0)
                .empty_element("CapacityReservationState");
            Ok(w)
        }
        "ModifyCapacityReservation" => Err(err(
            "InvalidConfigurationRequest",
            "Gantry's load balancers have no reserved capacity to modify",
        )),

        "CreateTargetGroup" => create_target_group(plane, r).await,
        "DescribeTargetGroups" => describe_target_groups(plane, r).await,
        "ModifyTargetGroup" => modify_target_group(plane, r).await,
        "DeleteTargetGroup" => delete_target_group(plane, r).await,
        "DescribeTargetGroupAttributes" => {
            let tg = target_group(plane, r.required("TargetGroupArn")?).await?;
            Ok(attributes_reply(action, &tg.attributes))
        }
        "ModifyTargetGroupAttributes" => modify_target_group_attributes(plane, r).await,
        "RegisterTargets" => register_targets(plane, r).await,
        "DeregisterTargets" => deregister_targets(plane, r).await,
        "DescribeTargetHealth" => describe_target_health(plane, r).await,

        "CreateListener" => create_listener(plane, r).await,
        "DescribeListeners" => describe_listeners(plane, r).await,
        "ModifyListener" => modify_listener(plane, r).await,
        "DeleteListener" => delete_listener(plane, r).await,
        "DescribeListenerAttributes" => {
            let l = listener(plane, r.required("ListenerArn")?).await?;
            Ok(attributes_reply(action, &listener_attributes(&l)))
        }
        "ModifyListenerAttributes" => modify_listener_attributes(plane, r).await,
        "DescribeListenerCertificates" => {
            listener(plane, r.required("ListenerArn")?).await?;
            let mut w = writer(action);
            w.empty_element("Certificates");
            Ok(w)
        }
        "AddListenerCertificates" => Err(err(
            "UnsupportedProtocol",
            "Gantry's load balancer serves HTTP listeners only and holds no certificates",
        )),

        "CreateRule" => create_rule(plane, r).await,
        "DescribeRules" => describe_rules(plane, r).await,
        "ModifyRule" => modify_rule(plane, r).await,
        "DeleteRule" => delete_rule(plane, r).await,
        "SetRulePriorities" => set_rule_priorities(plane, r).await,

        "AddTags" => add_tags(plane, r).await,
        "RemoveTags" => remove_tags(plane, r).await,
        "DescribeTags" => describe_tags(plane, r).await,

        "DescribeTrustStores" => {
            let names = r.string_list("Names");
            let arns = r.string_list("TrustStoreArns");
            if let Some(first) = names.first().or(arns.first()) {
                return Err(err(
                    "TrustStoreNotFound",
                    format!("Trust store '{first}' not found: Gantry has no trust stores (its listeners are HTTP only)"),
                ));
            }
            let mut w = writer(action);
            w.empty_element("TrustStores");
            Ok(w)
        }
        "DescribeSSLPolicies" => {
            let mut w = writer(action);
            w.empty_element("SslPolicies");
            Ok(w)
        }
        "DescribeAccountLimits" => describe_account_limits(),
        _ => Err(QueryError::invalid_action(action, "2015-12-01")),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An optional member, with the empty string as absent: Terraform sends unset optional
/// enums as `Member=` (e.g. `ProtocolVersion=` for a target group without one).
fn nonempty<'a>(r: &'a QueryRequest, key: &str) -> Option<&'a str> {
    r.get(key).filter(|v| !v.is_empty())
}

fn writer(action: &str) -> XmlWriter {
    XmlWriter::response(action, ELBV2_NAMESPACE)
}

fn server(e: EcsError) -> QueryError {
    QueryError::server(e.message)
}

fn hex16() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

fn put<T: Serialize>(key: &str, value: &T) -> Result<TxnOp, QueryError> {
    repo::put_op(key, value).map_err(server)
}

fn delete(key: &str) -> TxnOp {
    TxnOp::Delete {
        key: key.to_string(),
    }
}

/// The key every ELBv2 write rewrites: its revision is the ELBv2 state's version.
const ELBV2_EPOCH_KEY: &str = "control-plane/elbv2-epoch";

/// Held by every ELBv2 write from its first read to its commit: the plane's ELBv2 lock (no
/// other ELBv2 write of this replica in between) and the ELBv2 version it read at (no other
/// replica's either: [`commit`] is guarded by it).
struct Elbv2Writes<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    /// Advanced by each commit made under it (a call may commit more than once).
    epoch: std::sync::atomic::AtomicI64,
}

async fn writes(plane: &ControlPlane) -> Result<Elbv2Writes<'_>, QueryError> {
    let lock = plane.elbv2_writes.lock().await;
    let epoch = plane
        .store
        .get(ELBV2_EPOCH_KEY)
        .await
        .map_err(|e| server(repo::store_error(e)))?
        .map_or(0, |kv| kv.mod_revision);
    Ok(Elbv2Writes {
        _lock: lock,
        epoch: std::sync::atomic::AtomicI64::new(epoch),
    })
}

async fn commit(
    plane: &ControlPlane,
    writes: &Elbv2Writes<'_>,
    mut ops: Vec<TxnOp>,
) -> Result<(), QueryError> {
    if ops.is_empty() {
        return Ok(());
    }
    // The cross-record rules (one listener per port, one rule per priority, names used once)
    // were checked on what was read since `writes`: the commit holds only if no ELBv2 write,
    // through any replica, came in between. If one did, the call fails as a server fault,
    // which the SDKs retry: the retry checks again.
    ops.push(TxnOp::Put {
        key: ELBV2_EPOCH_KEY.into(),
        value: Vec::new(),
    });
    let epoch = &writes.epoch;
    let guard = repo::unchanged_since(
        ELBV2_EPOCH_KEY,
        epoch.load(std::sync::atomic::Ordering::SeqCst),
    );
    let response = plane
        .store
        .txn(gantry_store::Txn {
            compare: vec![guard],
            success: ops,
            failure: vec![],
        })
        .await
        .map_err(|e| server(repo::store_error(e)))?;
    if !response.succeeded {
        return Err(QueryError::server(
            "Another Elastic Load Balancing change was made at the same time through another control-plane replica; try again.".to_string(),
        ));
    }
    epoch.store(response.revision, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

async fn get<T: serde::de::DeserializeOwned>(
    plane: &ControlPlane,
    key: &str,
) -> Result<Option<T>, QueryError> {
    Ok(repo::get::<T>(&*plane.store, key)
        .await
        .map_err(server)?
        .map(|(v, _)| v))
}

fn attributes_reply(action: &str, attributes: &BTreeMap<String, String>) -> XmlWriter {
    let mut w = writer(action);
    xml::attributes(&mut w, attributes);
    w
}

fn arn_prefix(plane: &ControlPlane) -> String {
    let scope = plane.scope();
    format!(
        "arn:aws:elasticloadbalancing:{}:{}:",
        scope.region, scope.account
    )
}

fn invalid_arn(kind: &str, arn: &str) -> QueryError {
    validation(format!("'{arn}' is not a valid {kind} ARN"))
}

fn lb_not_found(arn: &str) -> QueryError {
    err(
        "LoadBalancerNotFound",
        format!("Load balancer '{arn}' not found"),
    )
}
fn tg_not_found(arn: &str) -> QueryError {
    err(
        "TargetGroupNotFound",
        format!("Target group '{arn}' not found"),
    )
}
fn listener_not_found(arn: &str) -> QueryError {
    err("ListenerNotFound", format!("Listener '{arn}' not found"))
}
fn rule_not_found(arn: &str) -> QueryError {
    err("RuleNotFound", format!("Rule '{arn}' not found"))
}

async fn load_balancer(plane: &ControlPlane, arn: &str) -> Result<LoadBalancerRecord, QueryError> {
    let Some(ElbArn::LoadBalancer { name, .. }) = st::parse_arn(arn) else {
        return Err(invalid_arn("load balancer", arn));
    };
    get::<LoadBalancerRecord>(plane, &st::load_balancer_key(&name))
        .await?
        .filter(|lb| lb.arn == arn)
        .ok_or_else(|| lb_not_found(arn))
}

async fn target_group(plane: &ControlPlane, arn: &str) -> Result<TargetGroupRecord, QueryError> {
    let Some(ElbArn::TargetGroup { name, .. }) = st::parse_arn(arn) else {
        return Err(invalid_arn("target group", arn));
    };
    get::<TargetGroupRecord>(plane, &st::target_group_key(&name))
        .await?
        .filter(|tg| tg.arn == arn)
        .ok_or_else(|| tg_not_found(arn))
}

async fn listener(plane: &ControlPlane, arn: &str) -> Result<ListenerRecord, QueryError> {
    let Some(ElbArn::Listener { lb_name, id, .. }) = st::parse_arn(arn) else {
        return Err(invalid_arn("listener", arn));
    };
    get::<ListenerRecord>(plane, &st::listener_key(&lb_name, &id))
        .await?
        .filter(|l| l.arn == arn)
        .ok_or_else(|| listener_not_found(arn))
}

/// A rule by ARN: a stored rule, or a listener's default rule.
enum FoundRule {
    Stored(RuleRecord),
    Default(ListenerRecord),
}

async fn rule(plane: &ControlPlane, arn: &str) -> Result<FoundRule, QueryError> {
    let Some(ElbArn::Rule {
        lb_name,
        lb_id,
        listener_id,
        id,
    }) = st::parse_arn(arn)
    else {
        return Err(invalid_arn("rule", arn));
    };
    if let Some(rule) = get::<RuleRecord>(plane, &st::rule_key(&lb_name, &listener_id, &id))
        .await?
        .filter(|r| r.arn == arn)
    {
        return Ok(FoundRule::Stored(rule));
    }
    let listener_arn = format!(
        "{}listener/app/{lb_name}/{lb_id}/{listener_id}",
        arn_prefix(plane)
    );
    match get::<ListenerRecord>(plane, &st::listener_key(&lb_name, &listener_id)).await? {
        Some(l) if l.arn == listener_arn && l.default_rule_id == id => Ok(FoundRule::Default(l)),
        _ => Err(rule_not_found(arn)),
    }
}

fn store_key_of(arn: &str) -> Option<String> {
    st::parse_arn(arn).map(|a| st::key_of_arn(&a))
}

/// Which load balancers forward to each target group ([`st::group_users`]).
async fn group_users(
    plane: &ControlPlane,
) -> Result<BTreeMap<String, BTreeSet<String>>, QueryError> {
    st::group_users(&*plane.store).await.map_err(server)
}

/// Every target group the actions forward to must exist.
async fn check_action_groups(
    plane: &ControlPlane,
    actions: &[ActionRecord],
) -> Result<(), QueryError> {
    for a in actions {
        for arn in a.target_group_arns() {
            target_group(plane, arn).await.map_err(|e| {
                if e.code == "ValidationError" {
                    tg_not_found(arn)
                } else {
                    e
                }
            })?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Load balancers
// ---------------------------------------------------------------------------------------------

fn subnets_to_zones(
    plane: &ControlPlane,
    r: &QueryRequest,
) -> Result<Vec<AvailabilityZoneRecord>, QueryError> {
    let mut subnets = r.string_list("Subnets");
    for m in r.struct_list("SubnetMappings") {
        let id = m.required("SubnetId")?.to_string();
        if m.contains("AllocationId")
            || m.contains("PrivateIPv4Address")
            || m.contains("IPv6Address")
        {
            return Err(validation(
                "Subnet mappings with addresses are for network load balancers; Gantry serves application load balancers only",
            ));
        }
        subnets.push(id);
    }
    let mut seen = BTreeSet::new();
    for s in &subnets {
        if s.is_empty() {
            return Err(validation("A subnet id cannot be empty"));
        }
        if !seen.insert(s.clone()) {
            return Err(validation(format!(
                "Subnet '{s}' is specified more than once"
            )));
        }
    }
    // Gantry has no Availability Zones: each subnet is shown in its own zone of the region,
    // in the order given (a, b, c, ...), as an ALB spans one subnet per zone.
    let region = &plane.scope().region;
    Ok(subnets
        .into_iter()
        .enumerate()
        .map(|(i, subnet_id)| AvailabilityZoneRecord {
            zone_name: format!("{region}{}", zone_letter(i)),
            subnet_id,
        })
        .collect())
}

fn zone_letter(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    s.push(letters[i % 26] as char);
    if i >= 26 {
        s.push_str(&(i / 26).to_string());
    }
    s
}

fn check_ip_address_type(value: &str) -> Result<(), QueryError> {
    match value {
        "ipv4" => Ok(()),
        "dualstack" | "dualstack-without-public-ipv4" => Err(validation(format!(
            "IpAddressType '{value}' is not supported: Gantry's load balancers serve IPv4 (ipv4) only"
        ))),
        other => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'ipAddressType' failed to satisfy constraint: Member must satisfy enum value set: [ipv4, dualstack, dualstack-without-public-ipv4]"
        ))),
    }
}

async fn create_load_balancer(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let name = r.required("Name")?.to_string();
    input::validate_name("Load balancer", &name, true)?;
    match nonempty(r, "Type").unwrap_or("application") {
        "application" => {}
        "network" | "gateway" => {
            return Err(validation(format!(
                "Load balancer type '{}' is not supported: Gantry serves application load balancers only",
                nonempty(r, "Type").unwrap_or_default()
            )))
        }
        other => {
            return Err(r.invalid_value(
                "Type",
                other,
                "Member must satisfy enum value set: [application, network, gateway]",
            ))
        }
    }
    let scheme = nonempty(r, "Scheme")
        .unwrap_or("internet-facing")
        .to_string();
    if scheme != "internet-facing" && scheme != "internal" {
        return Err(r.invalid_value(
            "Scheme",
            &scheme,
            "Member must satisfy enum value set: [internet-facing, internal]",
        ));
    }
    let ip_address_type = nonempty(r, "IpAddressType").unwrap_or("ipv4").to_string();
    check_ip_address_type(&ip_address_type)?;
    if r.contains("CustomerOwnedIpv4Pool") || r.list_present("IpamPools") {
        return Err(validation(
            "Customer-owned and IPAM address pools are not supported: Gantry's load balancers listen on the host's address",
        ));
    }
    let availability_zones = subnets_to_zones(plane, r)?;
    let security_groups = r.string_list("SecurityGroups");
    let tags = input::tags(r, "Tags")?;
    if tags.len() > input::MAX_TAGS {
        return Err(err("TooManyTags", "A resource can have at most 50 tags"));
    }

    let writes = writes(plane).await?;
    let key = st::load_balancer_key(&name);
    if let Some(existing) = get::<LoadBalancerRecord>(plane, &key).await? {
        // ELBv2's CreateLoadBalancer is idempotent: the same settings return the existing one.
        let same = existing.scheme == scheme
            && existing.availability_zones == availability_zones
            && existing.security_groups == security_groups
            && existing.ip_address_type == ip_address_type;
        if !same {
            return Err(err(
                "DuplicateLoadBalancerName",
                format!("A load balancer with the name '{name}' already exists"),
            ));
        }
        let mut w = writer("CreateLoadBalancer");
        w.list("LoadBalancers", &[existing], xml::load_balancer);
        return Ok(w);
    }
    let id = hex16();
    let arn = format!("{}loadbalancer/app/{name}/{id}", arn_prefix(plane));
    let dns_prefix = if scheme == "internal" {
        "internal-"
    } else {
        ""
    };
    let lb = LoadBalancerRecord {
        dns_name: format!(
            "{dns_prefix}{}-{id}.{}.elb.localhost",
            name.to_ascii_lowercase(),
            plane.scope().region
        ),
        arn,
        name,
        id,
        created_time: now_epoch(),
        scheme,
        vpc_id: GANTRY_VPC_ID.to_string(),
        availability_zones,
        security_groups,
        ip_address_type,
        attributes: AttributeSet::LoadBalancer.defaults(),
        tags,
    };
    commit(plane, &writes, vec![put(&key, &lb)?]).await?;
    let mut w = writer("CreateLoadBalancer");
    w.list("LoadBalancers", &[lb], xml::load_balancer);
    Ok(w)
}

async fn describe_load_balancers(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let (start, size) = input::paging(r)?;
    let names = r.string_list("Names");
    let arns = r.string_list("LoadBalancerArns");
    if !names.is_empty() && !arns.is_empty() {
        return Err(validation(
            "Load balancer names and load balancer ARNs cannot be specified at the same time",
        ));
    }
    let all = st::load_balancers(&*plane.store).await.map_err(server)?;
    let chosen: Vec<LoadBalancerRecord> = if !names.is_empty() {
        let mut out = Vec::new();
        for n in &names {
            match all.iter().find(|lb| &lb.name == n) {
                Some(lb) => out.push(lb.clone()),
                None => {
                    return Err(err(
                        "LoadBalancerNotFound",
                        format!("Load balancers '[{n}]' not found"),
                    ))
                }
            }
        }
        out
    } else if !arns.is_empty() {
        let mut out = Vec::new();
        for a in &arns {
            if st::parse_arn(a).is_none() {
                return Err(invalid_arn("load balancer", a));
            }
            match all.iter().find(|lb| &lb.arn == a) {
                Some(lb) => out.push(lb.clone()),
                None => return Err(lb_not_found(a)),
            }
        }
        out
    } else {
        all
    };
    let (items, next) = input::page(&chosen, start, size);
    let mut w = writer("DescribeLoadBalancers");
    w.list("LoadBalancers", &items, xml::load_balancer);
    w.opt_text("NextMarker", next.as_deref());
    Ok(w)
}

async fn delete_load_balancer(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("LoadBalancerArn")?;
    let writes = writes(plane).await?;
    let lb = match load_balancer(plane, arn).await {
        Ok(lb) => lb,
        // As on AWS, deleting a load balancer that does not exist succeeds.
        Err(e) if e.code == "LoadBalancerNotFound" => return Ok(writer("DeleteLoadBalancer")),
        Err(e) => return Err(e),
    };
    if lb
        .attributes
        .get("deletion_protection.enabled")
        .map(String::as_str)
        == Some("true")
    {
        return Err(err(
            "OperationNotPermitted",
            format!(
                "Load balancer '{arn}' cannot be deleted because deletion protection is enabled"
            ),
        ));
    }
    let mut ops = vec![delete(&st::load_balancer_key(&lb.name))];
    for l in st::listeners_of(&*plane.store, &lb.name)
        .await
        .map_err(server)?
    {
        ops.push(delete(&st::listener_key(&lb.name, &l.id)));
    }
    let (rules, _) = plane
        .store
        .range(&st::rules_of_load_balancer_prefix(&lb.name))
        .await
        .map_err(|e| QueryError::server(e.to_string()))?;
    ops.extend(rules.iter().map(|kv| delete(&kv.key)));
    commit(plane, &writes, ops).await?;
    Ok(writer("DeleteLoadBalancer"))
}

async fn modify_load_balancer_attributes(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("LoadBalancerArn")?;
    let writes = writes(plane).await?;
    let mut lb = load_balancer(plane, arn).await?;
    input::apply_attributes(AttributeSet::LoadBalancer, r, &mut lb.attributes)?;
    commit(
        plane,
        &writes,
        vec![put(&st::load_balancer_key(&lb.name), &lb)?],
    )
    .await?;
    Ok(attributes_reply(
        "ModifyLoadBalancerAttributes",
        &lb.attributes,
    ))
}

async fn set_security_groups(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("LoadBalancerArn")?;
    if !r.list_present("SecurityGroups") {
        r.required("SecurityGroups")?;
    }
    let groups = r.string_list("SecurityGroups");
    let writes = writes(plane).await?;
    let mut lb = load_balancer(plane, arn).await?;
    lb.security_groups = groups;
    commit(
        plane,
        &writes,
        vec![put(&st::load_balancer_key(&lb.name), &lb)?],
    )
    .await?;
    let mut w = writer("SetSecurityGroups");
    w.string_list("SecurityGroupIds", &lb.security_groups);
    Ok(w)
}

async fn set_subnets(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("LoadBalancerArn")?;
    let zones = subnets_to_zones(plane, r)?;
    if let Some(t) = nonempty(r, "IpAddressType") {
        check_ip_address_type(t)?;
    }
    let writes = writes(plane).await?;
    let mut lb = load_balancer(plane, arn).await?;
    lb.availability_zones = zones;
    commit(
        plane,
        &writes,
        vec![put(&st::load_balancer_key(&lb.name), &lb)?],
    )
    .await?;
    let mut w = writer("SetSubnets");
    w.list("AvailabilityZones", &lb.availability_zones, |w, az| {
        w.text("ZoneName", &az.zone_name)
            .text("SubnetId", &az.subnet_id)
            .empty_element("LoadBalancerAddresses");
    })
    .text("IpAddressType", &lb.ip_address_type);
    Ok(w)
}

async fn set_ip_address_type(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("LoadBalancerArn")?;
    check_ip_address_type(r.required("IpAddressType")?)?;
    load_balancer(plane, arn).await?;
    let mut w = writer("SetIpAddressType");
    w.text("IpAddressType", "ipv4");
    Ok(w)
}

fn describe_account_limits() -> Reply {
    let limits: &[(&str, &str)] = &[
        ("application-load-balancers", "50"),
        ("target-groups", "3000"),
        ("targets-per-application-load-balancer", "1000"),
        ("listeners-per-application-load-balancer", "50"),
        ("rules-per-application-load-balancer", "100"),
        ("condition-values-per-alb-rule", "5"),
        ("condition-wildcards-per-alb-rule", "5"),
        ("target-groups-per-action-on-application-load-balancer", "5"),
    ];
    let mut w = writer("DescribeAccountLimits");
    w.list("Limits", limits, |w, (name, max)| {
        w.text("Name", name).text("Max", max);
    });
    Ok(w)
}

// ---------------------------------------------------------------------------------------------
// Target groups
// ---------------------------------------------------------------------------------------------

/// `200`, `200,202`, `200-299`: codes from 200 to 499, as ELBv2 allows for HTTP.
fn check_matcher(m: &str) -> Result<(), QueryError> {
    let code_ok =
        |c: &str| c.len() == 3 && c.parse::<u16>().is_ok_and(|n| (200..=499).contains(&n));
    let ok = !m.is_empty()
        && m.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => code_ok(a) && code_ok(b) && a <= b,
            None => code_ok(part),
        });
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "Health check matcher HTTP code '{m}' must be a value between 200 and 499, a comma-separated list of such values, or a range (200-299)"
        )))
    }
}

/// Reads the health check members onto `hc` (create: over the defaults; modify: over the
/// current settings) and checks them together.
fn apply_health_check(r: &QueryRequest, hc: &mut HealthCheckRecord) -> Result<(), QueryError> {
    if let Some(p) = nonempty(r, "HealthCheckProtocol") {
        match p {
            "HTTP" => hc.protocol = p.to_string(),
            "HTTPS" => {
                return Err(validation(
                    "Health check protocol 'HTTPS' is not supported: Gantry's load balancer checks targets over HTTP",
                ))
            }
            other => {
                return Err(validation(format!(
                    "Health check protocol '{other}' is not valid for an application load balancer's target group: use HTTP"
                )))
            }
        }
    }
    if let Some(port) = nonempty(r, "HealthCheckPort") {
        if port != "traffic-port" && !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
            return Err(validation(format!(
                "Health check port '{port}' must be 'traffic-port' or a port from 1 to 65535"
            )));
        }
        hc.port = port.to_string();
    }
    if let Some(enabled) = r.bool("HealthCheckEnabled")? {
        hc.enabled = enabled;
    }
    if let Some(path) = r.get("HealthCheckPath") {
        if path.is_empty() || path.len() > 1024 || !path.starts_with('/') {
            return Err(validation(format!(
                "Health check path '{path}' must start with '/' and be at most 1024 characters"
            )));
        }
        hc.path = path.to_string();
    }
    if let Some(n) = input::int_in(r, "HealthCheckIntervalSeconds", 5, 300)? {
        hc.interval_secs = n as u32;
    }
    if let Some(n) = input::int_in(r, "HealthCheckTimeoutSeconds", 2, 120)? {
        hc.timeout_secs = n as u32;
    }
    if let Some(n) = input::int_in(r, "HealthyThresholdCount", 2, 10)? {
        hc.healthy_threshold = n as u32;
    }
    if let Some(n) = input::int_in(r, "UnhealthyThresholdCount", 2, 10)? {
        hc.unhealthy_threshold = n as u32;
    }
    if let Some(m) = r.nested("Matcher") {
        if m.contains("GrpcCode") {
            return Err(validation(
                "A gRPC matcher (GrpcCode) is not supported: Gantry's target groups use HTTP1 or HTTP2 with an HttpCode matcher",
            ));
        }
        if let Some(code) = m.get("HttpCode") {
            check_matcher(code)?;
            hc.matcher = code.to_string();
        }
    }
    if hc.timeout_secs >= hc.interval_secs {
        return Err(validation(format!(
            "Health check timeout ({} s) must be smaller than the interval ({} s)",
            hc.timeout_secs, hc.interval_secs
        )));
    }
    Ok(())
}

async fn create_target_group(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let name = r.required("Name")?.to_string();
    input::validate_name("Target group", &name, false)?;
    let target_type = nonempty(r, "TargetType").unwrap_or("instance").to_string();
    match target_type.as_str() {
        "instance" | "ip" => {}
        "lambda" | "alb" => {
            return Err(validation(format!(
                "Target type '{target_type}' is not supported: Gantry's target groups hold instances (container instances) or IP addresses"
            )))
        }
        other => {
            return Err(r.invalid_value(
                "TargetType",
                other,
                "Member must satisfy enum value set: [instance, ip, lambda, alb]",
            ))
        }
    }
    let protocol = nonempty(r, "Protocol").ok_or_else(|| {
        validation("A protocol must be specified for a target group of type instance or ip")
    })?;
    match protocol {
        "HTTP" => {}
        "HTTPS" => {
            return Err(validation(
                "Target group protocol 'HTTPS' is not supported: Gantry's load balancer speaks HTTP to targets",
            ))
        }
        other => {
            return Err(validation(format!(
                "Target group protocol '{other}' is for network or gateway load balancers; Gantry serves application load balancers only (HTTP)"
            )))
        }
    }
    let protocol_version = nonempty(r, "ProtocolVersion")
        .unwrap_or("HTTP1")
        .to_string();
    match protocol_version.as_str() {
        "HTTP1" | "HTTP2" => {}
        "GRPC" => {
            return Err(validation(
                "Protocol version 'GRPC' is not supported: use HTTP1 or HTTP2",
            ))
        }
        other => {
            return Err(validation(format!(
                "Protocol version '{other}' is not valid: use HTTP1 or HTTP2"
            )))
        }
    }
    let port = input::int_in(r, "Port", 1, 65535)?.ok_or_else(|| {
        validation("A port must be specified for a target group of type instance or ip")
    })? as u16;
    let ip_address_type = nonempty(r, "IpAddressType").unwrap_or("ipv4").to_string();
    match ip_address_type.as_str() {
        "ipv4" => {}
        "ipv6" if target_type == "ip" => {}
        "ipv6" => {
            return Err(validation(
                "IpAddressType 'ipv6' is only valid for target groups of type ip",
            ))
        }
        other => {
            return Err(r.invalid_value(
                "IpAddressType",
                other,
                "Member must satisfy enum value set: [ipv4, ipv6]",
            ))
        }
    }
    if r.contains("TargetControlPort") {
        return Err(validation("TargetControlPort is not supported by Gantry"));
    }
    let vpc_id = r
        .get("VpcId")
        .filter(|v| !v.is_empty())
        .unwrap_or(GANTRY_VPC_ID)
        .to_string();
    let mut health_check = HealthCheckRecord {
        enabled: true,
        protocol: "HTTP".into(),
        port: "traffic-port".into(),
        path: "/".into(),
        interval_secs: 30,
        timeout_secs: 5,
        healthy_threshold: 5,
        unhealthy_threshold: 2,
        matcher: "200".into(),
    };
    apply_health_check(r, &mut health_check)?;
    let tags = input::tags(r, "Tags")?;
    if tags.len() > input::MAX_TAGS {
        return Err(err("TooManyTags", "A resource can have at most 50 tags"));
    }

    let writes = writes(plane).await?;
    let key = st::target_group_key(&name);
    if let Some(existing) = get::<TargetGroupRecord>(plane, &key).await? {
        let same = existing.protocol == protocol
            && existing.protocol_version == protocol_version
            && existing.port == port
            && existing.vpc_id == vpc_id
            && existing.target_type == target_type
            && existing.health_check == health_check;
        if !same {
            return Err(err(
                "DuplicateTargetGroupName",
                format!("A target group with the same name '{name}' exists, but with different settings"),
            ));
        }
        let users = group_users(plane).await?;
        return Ok(target_groups_reply(
            "CreateTargetGroup",
            &[existing],
            &users,
        ));
    }
    let id = hex16();
    let tg = TargetGroupRecord {
        arn: format!("{}targetgroup/{name}/{id}", arn_prefix(plane)),
        name,
        id,
        protocol: protocol.to_string(),
        protocol_version,
        port,
        vpc_id,
        target_type,
        ip_address_type,
        health_check,
        attributes: AttributeSet::TargetGroup.defaults(),
        targets: Vec::new(),
        created_time: now_epoch(),
        tags,
    };
    commit(plane, &writes, vec![put(&key, &tg)?]).await?;
    Ok(target_groups_reply(
        "CreateTargetGroup",
        &[tg],
        &BTreeMap::new(),
    ))
}

fn target_groups_reply(
    action: &str,
    groups: &[TargetGroupRecord],
    users: &BTreeMap<String, BTreeSet<String>>,
) -> XmlWriter {
    let mut w = writer(action);
    w.list("TargetGroups", groups, |w, tg| {
        let lbs: Vec<String> = users
            .get(&tg.arn)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        xml::target_group(w, tg, &lbs);
    });
    w
}

async fn describe_target_groups(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let (start, size) = input::paging(r)?;
    let names = r.string_list("Names");
    let arns = r.string_list("TargetGroupArns");
    let lb_arn = r.get("LoadBalancerArn");
    let filters = [!names.is_empty(), !arns.is_empty(), lb_arn.is_some()];
    if filters.iter().filter(|f| **f).count() > 1 {
        return Err(validation(
            "Specify at most one of LoadBalancerArn, TargetGroupArns and Names",
        ));
    }
    let all = st::target_groups(&*plane.store).await.map_err(server)?;
    let users = group_users(plane).await?;
    let chosen: Vec<TargetGroupRecord> = if !names.is_empty() {
        let mut out = Vec::new();
        for n in &names {
            match all.iter().find(|tg| &tg.name == n) {
                Some(tg) => out.push(tg.clone()),
                None => {
                    return Err(err(
                        "TargetGroupNotFound",
                        format!("Target groups '[{n}]' not found"),
                    ))
                }
            }
        }
        out
    } else if !arns.is_empty() {
        let mut out = Vec::new();
        for a in &arns {
            if st::parse_arn(a).is_none() {
                return Err(invalid_arn("target group", a));
            }
            match all.iter().find(|tg| &tg.arn == a) {
                Some(tg) => out.push(tg.clone()),
                None => return Err(tg_not_found(a)),
            }
        }
        out
    } else if let Some(lb_arn) = lb_arn {
        load_balancer(plane, lb_arn).await?;
        all.into_iter()
            .filter(|tg| users.get(&tg.arn).is_some_and(|lbs| lbs.contains(lb_arn)))
            .collect()
    } else {
        all
    };
    let (items, next) = input::page(&chosen, start, size);
    let mut w = target_groups_reply("DescribeTargetGroups", &items, &users);
    w.opt_text("NextMarker", next.as_deref());
    Ok(w)
}

async fn modify_target_group(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("TargetGroupArn")?;
    let writes = writes(plane).await?;
    let mut tg = target_group(plane, arn).await?;
    apply_health_check(r, &mut tg.health_check)?;
    commit(
        plane,
        &writes,
        vec![put(&st::target_group_key(&tg.name), &tg)?],
    )
    .await?;
    let users = group_users(plane).await?;
    Ok(target_groups_reply("ModifyTargetGroup", &[tg], &users))
}

async fn delete_target_group(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("TargetGroupArn")?;
    let writes = writes(plane).await?;
    let tg = target_group(plane, arn).await?;
    let users = group_users(plane).await?;
    if let Some(lbs) = users.get(&tg.arn).filter(|s| !s.is_empty()) {
        let lbs: Vec<&str> = lbs.iter().map(String::as_str).collect();
        return Err(err(
            "ResourceInUse",
            format!(
                "Target group '{arn}' is currently in use by a listener or a rule of {}",
                lbs.join(", ")
            ),
        ));
    }
    commit(
        plane,
        &writes,
        vec![delete(&st::target_group_key(&tg.name))],
    )
    .await?;
    Ok(writer("DeleteTargetGroup"))
}

async fn modify_target_group_attributes(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("TargetGroupArn")?;
    let writes = writes(plane).await?;
    let mut tg = target_group(plane, arn).await?;
    input::apply_attributes(AttributeSet::TargetGroup, r, &mut tg.attributes)?;
    commit(
        plane,
        &writes,
        vec![put(&st::target_group_key(&tg.name), &tg)?],
    )
    .await?;
    Ok(attributes_reply(
        "ModifyTargetGroupAttributes",
        &tg.attributes,
    ))
}

/// A target as sent: `Id`, optional `Port`, optional `AvailabilityZone`.
struct GivenTarget {
    id: String,
    port: Option<u16>,
    availability_zone: Option<String>,
}

fn given_targets(r: &QueryRequest, required: bool) -> Result<Vec<GivenTarget>, QueryError> {
    let list = r.struct_list("Targets");
    if list.is_empty() && required {
        return Err(validation(
            "1 validation error detected: Value null at 'targets' failed to satisfy constraint: Member must not be null",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let id = t.required("Id")?.to_string();
        let port = input::int_in(&t, "Port", 1, 65535)?.map(|p| p as u16);
        out.push(GivenTarget {
            id,
            port,
            availability_zone: t.get("AvailabilityZone").map(str::to_string),
        });
    }
    Ok(out)
}

/// The target's canonical id and its container instance ARN: for `ip` groups the address
/// itself (of the group's family); for `instance` groups a Gantry container instance named
/// by its `ec2InstanceId`, its id or its ARN.
fn resolve_target(
    plane: &ControlPlane,
    tg: &TargetGroupRecord,
    id: &str,
) -> Result<(String, Option<String>), String> {
    if tg.target_type == "ip" {
        let Ok(ip) = id.parse::<std::net::IpAddr>() else {
            return Err(format!("'{id}' is not an IP address"));
        };
        let family_ok = match tg.ip_address_type.as_str() {
            "ipv6" => ip.is_ipv6(),
            _ => ip.is_ipv4(),
        };
        if !family_ok {
            return Err(format!(
                "'{id}' is not an {} address, as the target group's IpAddressType asks",
                if tg.ip_address_type == "ipv6" {
                    "IPv6"
                } else {
                    "IPv4"
                }
            ));
        }
        return Ok((ip.to_string(), None));
    }
    let wanted = gantry_model::arn::last_segment(id);
    for (_cluster, entry) in plane.cache.all_instances() {
        let ci = &entry.value;
        let arn = ci.container_instance_arn.as_deref().unwrap_or_default();
        let ec2 = ci.ec2_instance_id.as_deref();
        let matches =
            ec2 == Some(id) || arn == id || gantry_model::arn::last_segment(arn) == wanted;
        if matches && !arn.is_empty() {
            if ci.status.as_deref() == Some("INACTIVE") {
                return Err(format!(
                    "'{id}' is a deregistered (INACTIVE) container instance"
                ));
            }
            let canonical = ec2
                .map(str::to_string)
                .unwrap_or_else(|| gantry_model::arn::last_segment(arn).to_string());
            return Ok((canonical, Some(arn.to_string())));
        }
    }
    Err(format!(
        "'{id}' is not a Gantry container instance (give its ec2InstanceId, container instance id or ARN)"
    ))
}

async fn register_targets(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("TargetGroupArn")?;
    let given = given_targets(r, true)?;
    let writes = writes(plane).await?;
    let mut tg = target_group(plane, arn).await?;
    let mut invalid = Vec::new();
    let mut resolved = Vec::new();
    for t in given {
        match resolve_target(plane, &tg, &t.id) {
            Ok((id, ci)) => resolved.push((id, t.port.unwrap_or(tg.port), t.availability_zone, ci)),
            Err(why) => invalid.push(why),
        }
    }
    if !invalid.is_empty() {
        return Err(err(
            "InvalidTarget",
            format!(
                "The following targets are not valid: {}",
                invalid.join("; ")
            ),
        ));
    }
    for (id, port, availability_zone, container_instance_arn) in resolved {
        if let Some(zone) = &availability_zone {
            if tg.target_type == "instance" {
                return Err(validation(format!(
                    "An Availability Zone ('{zone}') can only be given for targets of ip target groups"
                )));
            }
        }
        match tg.targets.iter_mut().find(|x| x.id == id && x.port == port) {
            // Registering a registered target again changes nothing (but its zone).
            Some(existing) => {
                if availability_zone.is_some() {
                    existing.availability_zone = availability_zone;
                }
            }
            None => tg.targets.push(TargetRecord {
                id,
                port,
                availability_zone,
                container_instance_arn,
            }),
        }
    }
    if tg.targets.len() > MAX_TARGETS_PER_GROUP {
        return Err(err(
            "TooManyTargets",
            format!("A target group can have at most {MAX_TARGETS_PER_GROUP} targets"),
        ));
    }
    commit(
        plane,
        &writes,
        vec![put(&st::target_group_key(&tg.name), &tg)?],
    )
    .await?;
    Ok(writer("RegisterTargets"))
}

async fn deregister_targets(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("TargetGroupArn")?;
    let given = given_targets(r, true)?;
    let writes = writes(plane).await?;
    let mut tg = target_group(plane, arn).await?;
    for t in given {
        // An instance that is gone can still be deregistered by the id it was stored under.
        let id = match resolve_target(plane, &tg, &t.id) {
            Ok((id, _)) => id,
            Err(why) => {
                if tg.targets.iter().any(|x| x.id == t.id) {
                    t.id.clone()
                } else {
                    return Err(err(
                        "InvalidTarget",
                        format!("The following targets are not valid: {why}"),
                    ));
                }
            }
        };
        tg.targets
            .retain(|x| !(x.id == id && t.port.is_none_or(|p| p == x.port)));
    }
    commit(
        plane,
        &writes,
        vec![put(&st::target_group_key(&tg.name), &tg)?],
    )
    .await?;
    Ok(writer("DeregisterTargets"))
}

async fn describe_target_health(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("TargetGroupArn")?;
    let tg = target_group(plane, arn).await?;
    let filter = given_targets(r, false)?;
    let in_use = group_users(plane)
        .await?
        .get(&tg.arn)
        .is_some_and(|s| !s.is_empty());
    let reports = plane
        .load_balancer_data_plane()
        .map(|dp| dp.target_health(&tg.arn))
        .unwrap_or_default();

    struct Row {
        id: String,
        port: u16,
        zone: Option<String>,
        state: String,
        reason: Option<String>,
        description: Option<String>,
    }
    let health_of =
        |id: &str, port: u16, registered: bool| -> (String, Option<String>, Option<String>) {
            if let Some(rep) = reports.iter().find(|h| h.id == id && h.port == port) {
                return (
                    rep.state.as_str().to_string(),
                    rep.reason.map(|x| x.as_str().to_string()),
                    rep.description.clone(),
                );
            }
            if !registered {
                return (
                    TargetState::Unused.as_str().into(),
                    Some(TargetReason::NotRegistered.as_str().into()),
                    Some("Target is not registered to the target group".into()),
                );
            }
            if !in_use {
                return (
                    TargetState::Unused.as_str().into(),
                    Some(TargetReason::NotInUse.as_str().into()),
                    Some(
                        "Target group is not configured to receive traffic from the load balancer"
                            .into(),
                    ),
                );
            }
            (
                TargetState::Initial.as_str().into(),
                Some(TargetReason::RegistrationInProgress.as_str().into()),
                Some("Target registration is in progress".into()),
            )
        };
    let mut rows: Vec<Row> = Vec::new();
    if filter.is_empty() {
        for t in &tg.targets {
            let (state, reason, description) = health_of(&t.id, t.port, true);
            rows.push(Row {
                id: t.id.clone(),
                port: t.port,
                zone: t.availability_zone.clone(),
                state,
                reason,
                description,
            });
        }
        // Service tasks' targets (registered by their services, not in the group's record),
        // and targets the data plane still drains after their deregistration; not the data
        // plane's last word on a target it has not yet heard was deregistered.
        let service_targets = plane.targets.service_targets_of(&tg.arn);
        for rep in &reports {
            let listed = rep.state == TargetState::Draining
                || service_targets
                    .iter()
                    .any(|t| t.id == rep.id && t.port == rep.port);
            if listed
                && !tg
                    .targets
                    .iter()
                    .any(|t| t.id == rep.id && t.port == rep.port)
            {
                rows.push(Row {
                    id: rep.id.clone(),
                    port: rep.port,
                    zone: None,
                    state: rep.state.as_str().into(),
                    reason: rep.reason.map(|x| x.as_str().to_string()),
                    description: rep.description.clone(),
                });
            }
        }
    } else {
        for t in &filter {
            let id = resolve_target(plane, &tg, &t.id)
                .map(|(id, _)| id)
                .unwrap_or_else(|_| t.id.clone());
            let ports: Vec<u16> = match t.port {
                Some(p) => vec![p],
                None => {
                    let registered: Vec<u16> = tg
                        .targets
                        .iter()
                        .filter(|x| x.id == id)
                        .map(|x| x.port)
                        .collect();
                    if registered.is_empty() {
                        vec![tg.port]
                    } else {
                        registered
                    }
                }
            };
            for port in ports {
                let stored = tg.targets.iter().find(|x| x.id == id && x.port == port);
                let (state, reason, description) = health_of(&id, port, stored.is_some());
                rows.push(Row {
                    id: id.clone(),
                    port,
                    zone: stored.and_then(|s| s.availability_zone.clone()),
                    state,
                    reason,
                    description,
                });
            }
        }
    }
    let mut w = writer("DescribeTargetHealth");
    let hc_port = &tg.health_check.port;
    w.list("TargetHealthDescriptions", &rows, |w, row| {
        w.element("Target", |w| {
            w.text("Id", &row.id)
                .int("Port", i64::from(row.port))
                .opt_text("AvailabilityZone", row.zone.as_deref());
        });
        let port = if hc_port == "traffic-port" {
            row.port.to_string()
        } else {
            hc_port.clone()
        };
        w.text("HealthCheckPort", &port);
        w.element("TargetHealth", |w| {
            w.text("State", &row.state)
                .opt_text("Reason", row.reason.as_deref())
                .opt_text("Description", row.description.as_deref());
        });
    });
    Ok(w)
}

// ---------------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------------

fn check_listener_protocol(protocol: &str) -> Result<(), QueryError> {
    match protocol {
        "HTTP" => Ok(()),
        "HTTPS" => Err(err(
            "UnsupportedProtocol",
            "Listener protocol 'HTTPS' is not supported: Gantry's load balancer holds no certificates and serves HTTP listeners only",
        )),
        "TCP" | "TLS" | "UDP" | "TCP_UDP" | "GENEVE" | "QUIC" | "TCP_QUIC" => Err(err(
            "UnsupportedProtocol",
            format!("Listener protocol '{protocol}' is for network or gateway load balancers; Gantry serves application load balancers with HTTP listeners only"),
        )),
        other => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'protocol' failed to satisfy constraint: Member must satisfy enum value set: [HTTP, HTTPS, TCP, TLS, UDP, TCP_UDP, GENEVE, QUIC, TCP_QUIC]"
        ))),
    }
}

fn refuse_tls_members(r: &QueryRequest) -> Result<(), QueryError> {
    if r.contains("SslPolicy") || r.list_present("Certificates") || r.list_present("AlpnPolicy") {
        return Err(validation(
            "SslPolicy, Certificates and AlpnPolicy are for HTTPS listeners; Gantry serves HTTP listeners only",
        ));
    }
    if r.nested("MutualAuthentication")
        .is_some_and(|m| m.get("Mode").is_some_and(|mode| mode != "off"))
    {
        return Err(validation(
            "Mutual TLS authentication is for HTTPS listeners; Gantry serves HTTP listeners only",
        ));
    }
    Ok(())
}

/// The port must not be another listener's (this load balancer's or any other's: every
/// Gantry load balancer is served on the one bind address) nor, when a data plane runs,
/// held by anything else on the machine.
async fn check_port_free(
    plane: &ControlPlane,
    port: u16,
    this_listener: Option<&str>,
) -> Result<(), QueryError> {
    let listeners = st::all_listeners(&*plane.store).await.map_err(server)?;
    if let Some(other) = listeners
        .iter()
        .find(|l| l.port == port && Some(l.arn.as_str()) != this_listener)
    {
        return Err(err(
            "DuplicateListener",
            format!(
                "Port {port} is already used by listener '{}' of load balancer '{}': every Gantry load balancer listens on the same host address",
                other.arn, other.load_balancer_name
            ),
        ));
    }
    if let Some(dp) = plane.load_balancer_data_plane() {
        if let Err(e) = dp.check_port(port, this_listener) {
            return Err(err(
                "InvalidConfigurationRequest",
                format!(
                    "Port {} cannot be served on this host: {} (pick another port)",
                    e.port, e.message
                ),
            ));
        }
    }
    Ok(())
}

fn listener_attributes(l: &ListenerRecord) -> BTreeMap<String, String> {
    let mut all = AttributeSet::Listener.defaults();
    all.extend(l.attributes.clone());
    all
}

async fn create_listener(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let lb_arn = r.required("LoadBalancerArn")?;
    let protocol = nonempty(r, "Protocol").unwrap_or("HTTP").to_string();
    check_listener_protocol(&protocol)?;
    refuse_tls_members(r)?;
    let port = input::int_in(r, "Port", 1, 65535)?
        .ok_or_else(|| validation("A listener port must be specified"))? as u16;
    let default_actions = input::actions(r, "DefaultActions")?;
    let tags = input::tags(r, "Tags")?;
    if tags.len() > input::MAX_TAGS {
        return Err(err("TooManyTags", "A resource can have at most 50 tags"));
    }

    let writes = writes(plane).await?;
    let lb = load_balancer(plane, lb_arn).await?;
    check_action_groups(plane, &default_actions).await?;
    let existing = st::listeners_of(&*plane.store, &lb.name)
        .await
        .map_err(server)?;
    if let Some(same_port) = existing.iter().find(|l| l.port == port) {
        // Idempotent, as on AWS: the same listener again returns it.
        if same_port.protocol == protocol && same_port.default_actions == default_actions {
            let mut w = writer("CreateListener");
            w.list("Listeners", std::slice::from_ref(same_port), xml::listener);
            return Ok(w);
        }
        return Err(err(
            "DuplicateListener",
            format!("A listener already exists on port {port} of load balancer '{lb_arn}'"),
        ));
    }
    check_port_free(plane, port, None).await?;
    let id = hex16();
    let l = ListenerRecord {
        arn: format!(
            "{}listener/app/{}/{}/{id}",
            arn_prefix(plane),
            lb.name,
            lb.id
        ),
        id,
        load_balancer_arn: lb.arn.clone(),
        load_balancer_name: lb.name.clone(),
        port,
        protocol,
        default_actions,
        default_rule_id: hex16(),
        attributes: BTreeMap::new(),
        tags,
    };
    commit(
        plane,
        &writes,
        vec![put(&st::listener_key(&lb.name, &l.id), &l)?],
    )
    .await?;
    let mut w = writer("CreateListener");
    w.list("Listeners", &[l], xml::listener);
    Ok(w)
}

async fn describe_listeners(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let (start, size) = input::paging(r)?;
    let arns = r.string_list("ListenerArns");
    let lb_arn = r.get("LoadBalancerArn");
    let chosen: Vec<ListenerRecord> = match (lb_arn, arns.is_empty()) {
        (Some(_), false) => {
            return Err(validation(
                "Listener ARNs and a load balancer ARN cannot be specified at the same time",
            ))
        }
        (None, true) => {
            return Err(validation(
                "You must specify either listener ARNs or a load balancer ARN",
            ))
        }
        (Some(lb_arn), true) => {
            let lb = load_balancer(plane, lb_arn).await?;
            st::listeners_of(&*plane.store, &lb.name)
                .await
                .map_err(server)?
        }
        (None, false) => {
            let mut out = Vec::new();
            for a in &arns {
                out.push(listener(plane, a).await?);
            }
            out
        }
    };
    let (items, next) = input::page(&chosen, start, size);
    let mut w = writer("DescribeListeners");
    w.list("Listeners", &items, xml::listener);
    w.opt_text("NextMarker", next.as_deref());
    Ok(w)
}

async fn modify_listener(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("ListenerArn")?;
    if let Some(p) = nonempty(r, "Protocol") {
        check_listener_protocol(p)?;
    }
    refuse_tls_members(r)?;
    let port = input::int_in(r, "Port", 1, 65535)?.map(|p| p as u16);
    let actions = if r.list_present("DefaultActions") {
        Some(input::actions(r, "DefaultActions")?)
    } else {
        None
    };
    let writes = writes(plane).await?;
    let mut l = listener(plane, arn).await?;
    if let Some(actions) = actions {
        check_action_groups(plane, &actions).await?;
        l.default_actions = actions;
    }
    if let Some(port) = port.filter(|p| *p != l.port) {
        check_port_free(plane, port, Some(&l.arn)).await?;
        l.port = port;
    }
    commit(
        plane,
        &writes,
        vec![put(&st::listener_key(&l.load_balancer_name, &l.id), &l)?],
    )
    .await?;
    let mut w = writer("ModifyListener");
    w.list("Listeners", &[l], xml::listener);
    Ok(w)
}

async fn delete_listener(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("ListenerArn")?;
    let writes = writes(plane).await?;
    let l = listener(plane, arn).await?;
    let mut ops = vec![delete(&st::listener_key(&l.load_balancer_name, &l.id))];
    for rule in st::rules_of(&*plane.store, &l.load_balancer_name, &l.id)
        .await
        .map_err(server)?
    {
        ops.push(delete(&st::rule_key(
            &l.load_balancer_name,
            &l.id,
            &rule.id,
        )));
    }
    commit(plane, &writes, ops).await?;
    Ok(writer("DeleteListener"))
}

async fn modify_listener_attributes(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("ListenerArn")?;
    let writes = writes(plane).await?;
    let mut l = listener(plane, arn).await?;
    let mut all = listener_attributes(&l);
    input::apply_attributes(AttributeSet::Listener, r, &mut all)?;
    let defaults = AttributeSet::Listener.defaults();
    l.attributes = all
        .iter()
        .filter(|(k, v)| defaults.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    commit(
        plane,
        &writes,
        vec![put(&st::listener_key(&l.load_balancer_name, &l.id), &l)?],
    )
    .await?;
    Ok(attributes_reply("ModifyListenerAttributes", &all))
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

fn priority_in_use(priority: u32) -> QueryError {
    err(
        "PriorityInUse",
        format!("Priority '{priority}' is currently in use"),
    )
}

fn refuse_transforms(r: &QueryRequest) -> Result<(), QueryError> {
    if r.list_present("Transforms") {
        return Err(validation(
            "Rule transforms (host-header-rewrite, url-rewrite) are not supported by Gantry",
        ));
    }
    Ok(())
}

async fn create_rule(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let listener_arn = r.required("ListenerArn")?;
    let priority = input::int_in(r, "Priority", 1, 50000)?
        .ok_or_else(|| {
            validation("1 validation error detected: Value null at 'priority' failed to satisfy constraint: Member must not be null")
        })? as u32;
    let conditions = input::conditions(r, true)?;
    if conditions.is_empty() {
        return Err(validation("A rule must have at least one condition"));
    }
    let actions = input::actions(r, "Actions")?;
    refuse_transforms(r)?;
    let tags = input::tags(r, "Tags")?;
    if tags.len() > input::MAX_TAGS {
        return Err(err("TooManyTags", "A resource can have at most 50 tags"));
    }
    let writes = writes(plane).await?;
    let l = listener(plane, listener_arn).await?;
    check_action_groups(plane, &actions).await?;
    let rules = st::rules_of(&*plane.store, &l.load_balancer_name, &l.id)
        .await
        .map_err(server)?;
    if rules.iter().any(|x| x.priority == priority) {
        return Err(priority_in_use(priority));
    }
    if rules.len() >= MAX_RULES_PER_LISTENER {
        return Err(err(
            "TooManyRules",
            format!("A listener can have at most {MAX_RULES_PER_LISTENER} rules"),
        ));
    }
    let id = hex16();
    let rule_base = l.arn.replacen(":listener/", ":listener-rule/", 1);
    let rule = RuleRecord {
        arn: format!("{rule_base}/{id}"),
        id,
        listener_arn: l.arn.clone(),
        priority,
        conditions,
        actions,
        tags,
    };
    commit(
        plane,
        &writes,
        vec![put(
            &st::rule_key(&l.load_balancer_name, &l.id, &rule.id),
            &rule,
        )?],
    )
    .await?;
    let mut w = writer("CreateRule");
    w.list("Rules", &[rule], xml::rule);
    Ok(w)
}

/// A rule or a default rule, for output.
enum RuleView {
    Stored(RuleRecord),
    Default(ListenerRecord),
}

fn rules_reply(action: &str, rules: &[RuleView], next: Option<String>) -> XmlWriter {
    let mut w = writer(action);
    w.list("Rules", rules, |w, rv| match rv {
        RuleView::Stored(rule) => xml::rule(w, rule),
        RuleView::Default(l) => xml::default_rule(w, l),
    });
    w.opt_text("NextMarker", next.as_deref());
    w
}

async fn describe_rules(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let (start, size) = input::paging(r)?;
    let arns = r.string_list("RuleArns");
    let listener_arn = r.get("ListenerArn");
    let chosen: Vec<RuleView> = match (listener_arn, arns.is_empty()) {
        (Some(_), false) => {
            return Err(validation(
                "Rule ARNs and a listener ARN cannot be specified at the same time",
            ))
        }
        (None, true) => {
            return Err(validation(
                "You must specify either rule ARNs or a listener ARN",
            ))
        }
        (Some(arn), true) => {
            let l = listener(plane, arn).await?;
            let mut out: Vec<RuleView> = st::rules_of(&*plane.store, &l.load_balancer_name, &l.id)
                .await
                .map_err(server)?
                .into_iter()
                .map(RuleView::Stored)
                .collect();
            out.push(RuleView::Default(l));
            out
        }
        (None, false) => {
            let mut out = Vec::new();
            for a in &arns {
                out.push(match rule(plane, a).await? {
                    FoundRule::Stored(x) => RuleView::Stored(x),
                    FoundRule::Default(l) => RuleView::Default(l),
                });
            }
            out
        }
    };
    let start = start.min(chosen.len());
    let end = size.map_or(chosen.len(), |n| (start + n).min(chosen.len()));
    let next = (end < chosen.len()).then(|| end.to_string());
    let page: Vec<RuleView> = chosen.into_iter().skip(start).take(end - start).collect();
    Ok(rules_reply("DescribeRules", &page, next))
}

async fn modify_rule(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("RuleArn")?;
    refuse_transforms(r)?;
    let conditions = if r.list_present("Conditions") {
        Some(input::conditions(r, false)?)
    } else {
        None
    };
    let actions = if r.list_present("Actions") {
        Some(input::actions(r, "Actions")?)
    } else {
        None
    };
    let writes = writes(plane).await?;
    if let Some(actions) = &actions {
        check_action_groups(plane, actions).await?;
    }
    match rule(plane, arn).await? {
        FoundRule::Stored(mut rule) => {
            if let Some(c) = conditions {
                if c.is_empty() {
                    return Err(validation("A rule must have at least one condition"));
                }
                rule.conditions = c;
            }
            if let Some(a) = actions {
                rule.actions = a;
            }
            let Some(key) = store_key_of(&rule.arn) else {
                return Err(invalid_arn("rule", arn));
            };
            commit(plane, &writes, vec![put(&key, &rule)?]).await?;
            Ok(rules_reply("ModifyRule", &[RuleView::Stored(rule)], None))
        }
        FoundRule::Default(mut l) => {
            if conditions.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(err(
                    "OperationNotPermitted",
                    "The default rule of a listener cannot have conditions",
                ));
            }
            if let Some(a) = actions {
                l.default_actions = a;
            }
            commit(
                plane,
                &writes,
                vec![put(&st::listener_key(&l.load_balancer_name, &l.id), &l)?],
            )
            .await?;
            Ok(rules_reply("ModifyRule", &[RuleView::Default(l)], None))
        }
    }
}

async fn delete_rule(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arn = r.required("RuleArn")?;
    let writes = writes(plane).await?;
    match rule(plane, arn).await? {
        FoundRule::Stored(rule) => {
            let Some(key) = store_key_of(&rule.arn) else {
                return Err(invalid_arn("rule", arn));
            };
            commit(plane, &writes, vec![delete(&key)]).await?;
            Ok(writer("DeleteRule"))
        }
        FoundRule::Default(_) => Err(err(
            "OperationNotPermitted",
            format!("Rule '{arn}' is the listener's default rule and cannot be deleted; delete the listener instead"),
        )),
    }
}

async fn set_rule_priorities(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let pairs = r.struct_list("RulePriorities");
    if pairs.is_empty() {
        r.required("RulePriorities")?;
    }
    let mut wanted: Vec<(String, u32)> = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let arn = p.required("RuleArn")?.to_string();
        let priority = input::int_in(p, "Priority", 1, 50000)?
            .ok_or_else(|| validation("Each rule priority pair needs a Priority"))?
            as u32;
        if wanted.iter().any(|(a, _)| *a == arn) {
            return Err(validation(format!(
                "Rule '{arn}' is specified more than once"
            )));
        }
        wanted.push((arn, priority));
    }
    let writes = writes(plane).await?;
    let mut changed: Vec<RuleRecord> = Vec::new();
    for (arn, priority) in &wanted {
        match rule(plane, arn).await? {
            FoundRule::Stored(mut rule) => {
                rule.priority = *priority;
                changed.push(rule);
            }
            FoundRule::Default(_) => {
                return Err(err(
                    "OperationNotPermitted",
                    format!("The priority of the default rule '{arn}' cannot be changed"),
                ))
            }
        }
    }
    // The result must have distinct priorities within each listener.
    let listeners: BTreeSet<String> = changed.iter().map(|x| x.listener_arn.clone()).collect();
    for listener_arn in &listeners {
        let Some(ElbArn::Listener { lb_name, id, .. }) = st::parse_arn(listener_arn) else {
            continue;
        };
        let mut after: BTreeMap<String, u32> = st::rules_of(&*plane.store, &lb_name, &id)
            .await
            .map_err(server)?
            .into_iter()
            .map(|x| (x.arn, x.priority))
            .collect();
        for c in changed.iter().filter(|c| &c.listener_arn == listener_arn) {
            after.insert(c.arn.clone(), c.priority);
        }
        let mut seen = BTreeSet::new();
        for p in after.values() {
            if !seen.insert(*p) {
                return Err(priority_in_use(*p));
            }
        }
    }
    let mut ops = Vec::new();
    for rule in &changed {
        let Some(key) = store_key_of(&rule.arn) else {
            continue;
        };
        ops.push(put(&key, rule)?);
    }
    commit(plane, &writes, ops).await?;
    changed.sort_by_key(|x| x.priority);
    let views: Vec<RuleView> = changed.into_iter().map(RuleView::Stored).collect();
    Ok(rules_reply("SetRulePriorities", &views, None))
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

fn resource_arns(r: &QueryRequest) -> Result<Vec<String>, QueryError> {
    let arns = r.string_list("ResourceArns");
    if arns.is_empty() {
        return Err(validation(
            "1 validation error detected: Value null at 'resourceArns' failed to satisfy constraint: Member must not be null",
        ));
    }
    if arns.len() > MAX_TAG_RESOURCES {
        return Err(validation(format!(
            "At most {MAX_TAG_RESOURCES} resource ARNs can be given in one call"
        )));
    }
    Ok(arns)
}

/// A taggable record, read and written generically.
enum Taggable {
    LoadBalancer(LoadBalancerRecord),
    TargetGroup(TargetGroupRecord),
    Listener(ListenerRecord),
    Rule(RuleRecord),
}

impl Taggable {
    fn tags_mut(&mut self) -> &mut Vec<ElbTag> {
        match self {
            Taggable::LoadBalancer(x) => &mut x.tags,
            Taggable::TargetGroup(x) => &mut x.tags,
            Taggable::Listener(x) => &mut x.tags,
            Taggable::Rule(x) => &mut x.tags,
        }
    }
    fn tags(&self) -> &[ElbTag] {
        match self {
            Taggable::LoadBalancer(x) => &x.tags,
            Taggable::TargetGroup(x) => &x.tags,
            Taggable::Listener(x) => &x.tags,
            Taggable::Rule(x) => &x.tags,
        }
    }
    fn put_op(&self, arn: &str) -> Result<TxnOp, QueryError> {
        let key = store_key_of(arn).ok_or_else(|| invalid_arn("resource", arn))?;
        match self {
            Taggable::LoadBalancer(x) => put(&key, x),
            Taggable::TargetGroup(x) => put(&key, x),
            Taggable::Listener(x) => put(&key, x),
            Taggable::Rule(x) => put(&key, x),
        }
    }
}

async fn taggable(plane: &ControlPlane, arn: &str) -> Result<Taggable, QueryError> {
    match st::parse_arn(arn) {
        Some(ElbArn::LoadBalancer { .. }) => {
            Ok(Taggable::LoadBalancer(load_balancer(plane, arn).await?))
        }
        Some(ElbArn::TargetGroup { .. }) => {
            Ok(Taggable::TargetGroup(target_group(plane, arn).await?))
        }
        Some(ElbArn::Listener { .. }) => Ok(Taggable::Listener(listener(plane, arn).await?)),
        Some(ElbArn::Rule { .. }) => match rule(plane, arn).await? {
            FoundRule::Stored(x) => Ok(Taggable::Rule(x)),
            FoundRule::Default(_) => Err(err(
                "OperationNotPermitted",
                "A listener's default rule cannot be tagged",
            )),
        },
        None => Err(validation(format!(
            "'{arn}' is not a valid load balancer, target group, listener or rule ARN"
        ))),
    }
}

async fn add_tags(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arns = resource_arns(r)?;
    let tags = input::tags(r, "Tags")?;
    if tags.is_empty() {
        return Err(validation(
            "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null",
        ));
    }
    let writes = writes(plane).await?;
    let mut ops = Vec::new();
    for arn in &arns {
        let mut t = taggable(plane, arn).await?;
        input::merge_tags(t.tags_mut(), &tags)?;
        ops.push(t.put_op(arn)?);
    }
    commit(plane, &writes, ops).await?;
    Ok(writer("AddTags"))
}

async fn remove_tags(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arns = resource_arns(r)?;
    let keys = r.string_list("TagKeys");
    if keys.is_empty() {
        return Err(validation(
            "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
        ));
    }
    let writes = writes(plane).await?;
    let mut ops = Vec::new();
    for arn in &arns {
        let mut t = taggable(plane, arn).await?;
        t.tags_mut().retain(|tag| !keys.contains(&tag.key));
        ops.push(t.put_op(arn)?);
    }
    commit(plane, &writes, ops).await?;
    Ok(writer("RemoveTags"))
}

async fn describe_tags(plane: &ControlPlane, r: &QueryRequest) -> Reply {
    let arns = resource_arns(r)?;
    let mut found = Vec::with_capacity(arns.len());
    for arn in &arns {
        found.push((arn.clone(), taggable(plane, arn).await?));
    }
    let mut w = writer("DescribeTags");
    w.list("TagDescriptions", &found, |w, (arn, t)| {
        w.text("ResourceArn", arn);
        xml::tags(w, t.tags());
    });
    Ok(w)
}

#[cfg(test)]
mod tests {
    //! The control plane's side of the data-plane contract, against a stand-in data plane
    //! (the real one is the `lb` crate, which this crate must not depend on): a port the
    //! machine holds is refused, and target health comes from the data plane when it has it.
    use super::*;
    use crate::logs::LogStore;
    use crate::plane::{ControlConfig, LoadBalancerDataPlaneHandle};
    use gantry_model::elbv2::{
        BindError, HealthObserver, ListenerConfig, LoadBalancerDataPlane, TargetGroupConfig,
        TargetHealthReport,
    };
    use gantry_store::SqliteStore;
    use std::sync::{Arc, Mutex};

    /// Holds `busy` as if another program listened there; reports `health` as is.
    struct StandIn {
        busy: u16,
        health: Mutex<Vec<TargetHealthReport>>,
        checked: Mutex<Vec<(u16, Option<String>)>>,
    }

    impl LoadBalancerDataPlane for StandIn {
        fn check_port(&self, port: u16, listener_arn: Option<&str>) -> Result<(), BindError> {
            if let Ok(mut c) = self.checked.lock() {
                c.push((port, listener_arn.map(str::to_string)));
            }
            if port == self.busy {
                return Err(BindError {
                    port,
                    message: "Address already in use (os error 98)".into(),
                });
            }
            Ok(())
        }
        fn put_listener(&self, _: ListenerConfig) -> Result<(), BindError> {
            Ok(())
        }
        fn remove_listener(&self, _: &str) {}
        fn put_target_group(&self, _: TargetGroupConfig) {}
        fn remove_target_group(&self, _: &str) {}
        fn target_health(&self, arn: &str) -> Vec<TargetHealthReport> {
            self.health
                .lock()
                .map(|h| {
                    h.iter()
                        .filter(|r| r.target_group_arn == arn)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }
        fn observe_health(&self, _: HealthObserver) {}
    }

    #[tokio::test]
    async fn an_elbv2_write_made_meanwhile_through_another_replica_fails_the_commit() {
        // Two planes on one store, as two replicas: each has its own ELBv2 lock, and only the
        // store's ELBv2 version keeps their cross-record checks apart.
        let store: Arc<dyn gantry_store::KvStore> =
            Arc::new(SqliteStore::open_in_memory().expect("store"));
        let open = |store: Arc<dyn gantry_store::KvStore>| async move {
            ControlPlane::open(
                ControlConfig::default(),
                store,
                LogStore::open_in_memory().expect("logs"),
                crate::audit::AuditLog::in_memory(10).expect("audit"),
            )
            .await
            .expect("plane")
        };
        let (a, b) = (open(store.clone()).await, open(store.clone()).await);
        let op = |k: &str| TxnOp::Put {
            key: format!("elbv2/target-groups/{k}"),
            value: b"{}".to_vec(),
        };
        let in_a = writes(&a).await.expect("a");
        let in_b = writes(&b).await.expect("b");
        commit(&b, &in_b, vec![op("from-b")])
            .await
            .expect("b commits first");
        assert!(
            commit(&a, &in_a, vec![op("from-a")]).await.is_err(),
            "a decided on state older than b's write"
        );
        assert!(store
            .get("elbv2/target-groups/from-a")
            .await
            .expect("get")
            .is_none());
        // One call may commit more than once under its writes.
        commit(&b, &in_b, vec![op("again-b")])
            .await
            .expect("b's second commit");
        drop((in_a, in_b));
        let fresh = writes(&a).await.expect("a again");
        commit(&a, &fresh, vec![op("from-a")])
            .await
            .expect("a, having read anew");
    }

    async fn plane(dp: Arc<StandIn>) -> ControlPlane {
        let store = SqliteStore::open_in_memory().expect("store");
        let audit = crate::audit::AuditLog::in_memory(100).expect("audit");
        let logs = LogStore::open_in_memory().expect("logs");
        let config = ControlConfig {
            load_balancer_data_plane: Some(LoadBalancerDataPlaneHandle(dp)),
            ..ControlConfig::default()
        };
        ControlPlane::open(config, Arc::new(store), logs, audit)
            .await
            .expect("plane")
    }

    async fn call(plane: &ControlPlane, pairs: &[(&str, &str)]) -> Result<String, QueryError> {
        let r = QueryRequest::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)));
        let action = r.action().unwrap_or_default().to_string();
        dispatch(plane, &action, &r).await.map(|w| w.finish("req"))
    }

    fn between<'a>(body: &'a str, open: &str, close: &str) -> &'a str {
        let start = body.find(open).map(|i| i + open.len()).unwrap_or(0);
        let end = body[start..]
            .find(close)
            .map(|i| start + i)
            .unwrap_or(body.len());
        &body[start..end]
    }

    #[tokio::test]
    async fn ports_and_health_come_from_the_data_plane() {
        let dp = Arc::new(StandIn {
            busy: 18500,
            health: Mutex::new(Vec::new()),
            checked: Mutex::new(Vec::new()),
        });
        let plane = plane(dp.clone()).await;
        let lb = call(&plane, &[("Action", "CreateLoadBalancer"), ("Name", "web")])
            .await
            .expect("lb");
        let lb_arn = between(&lb, "<LoadBalancerArn>", "<").to_string();
        let tg = call(
            &plane,
            &[
                ("Action", "CreateTargetGroup"),
                ("Name", "api"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("TargetType", "ip"),
            ],
        )
        .await
        .expect("tg");
        let tg_arn = between(&tg, "<TargetGroupArn>", "<").to_string();
        let forward = [
            ("Action", "CreateListener"),
            ("LoadBalancerArn", lb_arn.as_str()),
            ("Port", "18500"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", tg_arn.as_str()),
        ];
        let refused = call(&plane, &forward).await.expect_err("busy port");
        assert_eq!(refused.code, "InvalidConfigurationRequest");
        assert!(
            refused.message.contains("Port 18500") && refused.message.contains("in use"),
            "{}",
            refused.message
        );
        let mut free = forward;
        free[2] = ("Port", "18501");
        let l = call(&plane, &free).await.expect("listener");
        let listener_arn = between(&l, "<ListenerArn>", "<").to_string();
        // Moving the listener asks about the new port on the listener's behalf.
        let moved = call(
            &plane,
            &[
                ("Action", "ModifyListener"),
                ("ListenerArn", listener_arn.as_str()),
                ("Port", "18500"),
            ],
        )
        .await
        .expect_err("busy port");
        assert_eq!(moved.code, "InvalidConfigurationRequest");
        let checked = dp.checked.lock().unwrap().clone();
        assert_eq!(
            checked,
            [
                (18500, None),
                (18501, None),
                (18500, Some(listener_arn.clone()))
            ]
        );

        call(
            &plane,
            &[
                ("Action", "RegisterTargets"),
                ("TargetGroupArn", tg_arn.as_str()),
                ("Targets.member.1.Id", "10.0.0.1"),
                ("Targets.member.2.Id", "10.0.0.2"),
            ],
        )
        .await
        .expect("register");
        dp.health.lock().unwrap().push(TargetHealthReport {
            target_group_arn: tg_arn.clone(),
            id: "10.0.0.1".into(),
            port: 80,
            state: TargetState::Unhealthy,
            reason: Some(TargetReason::ResponseCodeMismatch),
            description: Some("Health checks failed with these codes: [500]".into()),
        });
        let health = call(
            &plane,
            &[
                ("Action", "DescribeTargetHealth"),
                ("TargetGroupArn", tg_arn.as_str()),
            ],
        )
        .await
        .expect("health");
        assert!(
            health.contains("<State>unhealthy</State><Reason>Target.ResponseCodeMismatch</Reason><Description>Health checks failed with these codes: [500]</Description>"),
            "{health}"
        );
        // A target the data plane has not reported yet is still being registered.
        assert!(
            health.contains("<Id>10.0.0.2</Id><Port>80</Port></Target><HealthCheckPort>80</HealthCheckPort><TargetHealth><State>initial</State><Reason>Elb.RegistrationInProgress</Reason>"),
            "{health}"
        );
    }
}
