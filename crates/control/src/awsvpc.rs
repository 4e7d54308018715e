//! awsvpc task networking: a call's `networkConfiguration` checked at the edge, subnet ids
//! mapped to address ranges, and one IPv4 address per task allocated when the task is placed.
//!
//! Gantry has no VPC API: a well-formed `subnet-…` id names a subnet that exists from its
//! first use, when it gets the next free range (a /24) of the pool (`--awsvpc-cidr`, by default
//! 10.213.0.0/16). Each host carries a subnet as a Docker network of that range (the agent
//! creates it on first use), so tasks of one subnet on one host reach each other and the host
//! reaches them. Addresses in use are derived from the tasks that are not STOPPED (the cache's
//! index), never kept beside them, so they cannot leak: an address is free again as soon as its
//! task is STOPPED (the agent removes the task's namespace before it reports STOPPED). Two
//! placements in one subnet cannot pick the same address: each allocation rewrites the subnet
//! record under a compare-and-swap guard on its revision, read after the cache has caught up
//! with it. Security groups are checked for form and recorded; they filter nothing.

use crate::plane::ControlPlane;
use crate::state::records::SubnetRecord;
use crate::state::repo;
use gantry_model::agent_protocol::TaskNetworkInterface;
use gantry_model::{now_epoch, EcsError, EcsResult};
use gantry_store::{Compare, TxnOp as Op};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Every subnet gets a /24 of the pool (or the whole pool when it is smaller).
pub const SUBNET_PREFIX: u8 = 24;

/// The smallest pool: a /30 holds one task address besides network, gateway and broadcast.
pub const MAX_POOL_PREFIX: u8 = 30;

/// A call's `networkConfiguration.awsvpcConfiguration`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
}

fn is_aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks `networkConfiguration` against the task definition's network mode, as ECS does.
pub fn parse_network_configuration(
    given: Option<&Value>,
    network_mode: &str,
    launch_type: &str,
) -> EcsResult<Option<NetworkRequest>> {
    let config = given.and_then(|v| v.get("awsvpcConfiguration"));
    if network_mode != "awsvpc" {
        if config.is_some() {
            return Err(EcsError::invalid_parameter(
                "Network Configuration is not valid for the given networkMode of this task definition.",
            ));
        }
        return Ok(None);
    }
    let Some(config) = config else {
        return Err(EcsError::invalid_parameter(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
        ));
    };
    let strings = |member: &str| -> EcsResult<Vec<String>> {
        match config.get(member) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| {
                        EcsError::invalid_parameter(format!(
                            "networkConfiguration.awsvpcConfiguration.{member} must be a list of strings."
                        ))
                    })
                })
                .collect(),
            Some(_) => Err(EcsError::invalid_parameter(format!(
                "networkConfiguration.awsvpcConfiguration.{member} must be a list of strings."
            ))),
        }
    };
    let subnets = strings("subnets")?;
    let security_groups = strings("securityGroups")?;
    if subnets.is_empty() {
        return Err(EcsError::invalid_parameter("subnets can not be empty."));
    }
    if subnets.len() > 16 {
        return Err(EcsError::invalid_parameter(
            "subnets can have at most 16 items.",
        ));
    }
    if security_groups.len() > 5 {
        return Err(EcsError::invalid_parameter(
            "securityGroups can have at most 5 items.",
        ));
    }
    for s in &subnets {
        if !is_aws_id(s, "subnet-") {
            return Err(EcsError::invalid_parameter(format!(
                "Error retrieving subnet information for [{s}]: The subnet ID '{s}' is malformed (ErrorCode: InvalidSubnetID.Malformed)"
            )));
        }
    }
    for g in &security_groups {
        if !is_aws_id(g, "sg-") {
            return Err(EcsError::invalid_parameter(format!(
                "Error retrieving security group information for [{g}]: The security group '{g}' is malformed (ErrorCode: InvalidGroupId.Malformed)"
            )));
        }
    }
    let assign_public_ip = match config.get("assignPublicIp").and_then(Value::as_str) {
        None | Some("DISABLED") => false,
        Some("ENABLED") => true,
        Some(other) => {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid assignPublicIp '{other}': use ENABLED or DISABLED."
            )))
        }
    };
    if assign_public_ip && launch_type != "FARGATE" {
        return Err(EcsError::invalid_parameter(
            "Assign public IP is not supported for this launch type.",
        ));
    }
    let mut dedup = Vec::new();
    for s in subnets {
        if !dedup.contains(&s) {
            dedup.push(s);
        }
    }
    Ok(Some(NetworkRequest {
        subnets: dedup,
        security_groups,
        assign_public_ip,
    }))
}

/// `a.b.c.d/n` → (network address, prefix length).
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

pub fn format_cidr(network: u32, len: u8) -> String {
    format!("{}/{len}", Ipv4Addr::from(network))
}

/// The subnets a placement allocates in, read once per attempt: each subnet's record and the
/// revision that guards the commit, the addresses in use, and what this attempt has taken.
pub(crate) struct Allocator {
    subnets: BTreeMap<String, SubnetState>,
}

struct SubnetState {
    record: SubnetRecord,
    /// 0: the subnet is new (created by this placement's commit).
    revision: i64,
    in_use: BTreeSet<u32>,
    taken: usize,
}

/// Why a task got no address.
pub(crate) struct Exhausted {
    pub subnet: String,
    pub cidr: String,
}

impl Allocator {
    /// Reads (or assigns a range to) every subnet the request names.
    pub async fn load(plane: &ControlPlane, request: &NetworkRequest) -> EcsResult<Allocator> {
        let mut subnets = BTreeMap::new();
        let mut new_ranges: Vec<u32> = Vec::new();
        for id in &request.subnets {
            let key = repo::subnet_key(id);
            let (record, revision) = match repo::get::<SubnetRecord>(&*plane.store, &key).await? {
                Some(found) => found,
                None => {
                    let cidr = next_free_range(plane, &new_ranges).await?;
                    if let Some((n, _)) = parse_cidr(&cidr) {
                        new_ranges.push(n);
                    }
                    (
                        SubnetRecord {
                            subnet_id: id.clone(),
                            cidr,
                            created_at: now_epoch(),
                            allocations: 0,
                        },
                        0,
                    )
                }
            };
            // Every task that took an address in this subnet before `revision` is in the
            // cache once it has caught up with it; later ones change the revision and so
            // fail this placement's guard.
            if !plane
                .cache
                .wait_for(revision, std::time::Duration::from_secs(5))
                .await
            {
                // Reading the addresses in use from a cache that is behind would let the
                // guard pass on a stale view.
                return Err(EcsError::server(
                    "The state cache is behind the store; try again.",
                ));
            }
            let in_use = plane.cache.addresses_in_use(id);
            subnets.insert(
                id.clone(),
                SubnetState {
                    record,
                    revision,
                    in_use,
                    taken: 0,
                },
            );
        }
        Ok(Allocator { subnets })
    }

    /// One address for one task: in the subnet with the most free addresses (so a service's
    /// tasks spread over its subnets), the next free address after the last one the subnet
    /// gave (its allocation count is the cursor). Next-fit rather than lowest-free: a task
    /// the control plane marks STOPPED without its agent (a lost host, a deregistered
    /// instance) may still hold its address on a host for a while, so a freed address is
    /// given again only after the others.
    pub fn allocate(
        &mut self,
        request: &NetworkRequest,
        region: &str,
    ) -> Result<TaskNetworkInterface, Exhausted> {
        let mut best: Option<(&String, usize)> = None;
        for id in &request.subnets {
            let Some(s) = self.subnets.get(id) else {
                continue;
            };
            let free = capacity(&s.record.cidr).saturating_sub(s.in_use.len());
            if best.is_none_or(|(_, f)| free > f) {
                best = Some((id, free));
            }
        }
        let first = request.subnets.first().cloned().unwrap_or_default();
        let (id, _) = best.ok_or_else(|| Exhausted {
            subnet: first.clone(),
            cidr: String::new(),
        })?;
        let id = id.clone();
        let Some(s) = self.subnets.get_mut(&id) else {
            return Err(Exhausted {
                subnet: id,
                cidr: String::new(),
            });
        };
        let exhausted = || Exhausted {
            subnet: id.clone(),
            cidr: s.record.cidr.clone(),
        };
        let (network, len) = parse_cidr(&s.record.cidr).ok_or_else(exhausted)?;
        let size = 1u64 << (32 - len);
        // .0 is the network, .1 the gateway (the host's side of the bridge), the last the
        // broadcast address.
        let usable = size.saturating_sub(3);
        if usable == 0 {
            return Err(exhausted());
        }
        let cursor = s.record.allocations.saturating_add(s.taken as u64) % usable;
        let address = (0..usable)
            .map(|i| network + (2 + (cursor + i) % usable) as u32)
            .find(|a| !s.in_use.contains(a))
            .ok_or_else(exhausted)?;
        s.in_use.insert(address);
        s.taken += 1;
        let id_bytes = *uuid::Uuid::new_v4().as_bytes();
        let ip = Ipv4Addr::from(address);
        let o = ip.octets();
        let dns_domain = if region == "us-east-1" {
            "ec2.internal".to_string()
        } else {
            format!("{region}.compute.internal")
        };
        Ok(TaskNetworkInterface {
            attachment_id: uuid::Uuid::from_bytes(id_bytes).to_string(),
            subnet_id: id.clone(),
            subnet_cidr: s.record.cidr.clone(),
            gateway: Ipv4Addr::from(network + 1).to_string(),
            private_ipv4_address: ip.to_string(),
            // Locally administered, unicast.
            mac_address: format!(
                "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                id_bytes[0], o[0], o[1], o[2], o[3]
            ),
            private_dns_name: format!("ip-{}-{}-{}-{}.{dns_domain}", o[0], o[1], o[2], o[3]),
            security_groups: request.security_groups.clone(),
        })
    }

    /// The guards and writes that make this attempt's allocations safe: each subnet that
    /// gave an address is rewritten if unchanged since it was read (created if new, with its
    /// range claimed so two new subnets cannot share one).
    pub fn commit_ops(&self, guards: &mut Vec<Compare>, ops: &mut Vec<Op>) -> EcsResult<()> {
        for (id, s) in &self.subnets {
            if s.taken == 0 {
                continue;
            }
            let key = repo::subnet_key(id);
            guards.push(repo::unchanged_since(&key, s.revision));
            let mut record = s.record.clone();
            record.allocations = record.allocations.saturating_add(s.taken as u64);
            ops.push(repo::put_op(&key, &record)?);
            if s.revision == 0 {
                let range = repo::subnet_range_key(&s.record.cidr);
                guards.push(repo::unchanged_since(&range, 0));
                ops.push(repo::put_op(&range, &json!({ "subnetId": id }))?);
            }
        }
        Ok(())
    }
}

fn capacity(cidr: &str) -> usize {
    parse_cidr(cidr)
        .map(|(_, len)| (1usize << (32 - len)).saturating_sub(3))
        .unwrap_or(0)
}

/// The first /24 of the pool that no subnet holds (nor one being created in this attempt).
async fn next_free_range(plane: &ControlPlane, also_taken: &[u32]) -> EcsResult<String> {
    let pool = &plane.config.awsvpc_cidr;
    let (base, len) = parse_cidr(pool).ok_or_else(|| {
        EcsError::server(format!(
            "The awsvpc address pool '{pool}' is not a CIDR block."
        ))
    })?;
    let taken: BTreeSet<u32> = repo::list::<SubnetRecord>(&*plane.store, repo::SUBNETS)
        .await?
        .into_iter()
        .filter_map(|(s, _)| parse_cidr(&s.cidr).map(|(n, _)| n))
        .chain(also_taken.iter().copied())
        .collect();
    let prefix = SUBNET_PREFIX.max(len);
    let count = 1u64 << prefix.saturating_sub(len);
    (0..count)
        .map(|i| base + ((i as u32) << (32 - prefix)))
        .find(|n| !taken.contains(n))
        .map(|n| format_cidr(n, prefix))
        .ok_or_else(|| {
            EcsError::invalid_parameter(format!(
                "Every /{prefix} range of the awsvpc address pool {pool} belongs to a subnet: give the control plane a larger pool (--awsvpc-cidr) or reuse subnet ids."
            ))
        })
}

/// The task's `attachments[]` entry for its interface (ECS's ElasticNetworkInterface).
pub fn attachment(ni: &TaskNetworkInterface, status: &str) -> Value {
    let eni: String = ni
        .attachment_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(17)
        .collect();
    json!({
        "id": ni.attachment_id,
        "type": "ElasticNetworkInterface",
        "status": status,
        "details": [
            {"name": "subnetId", "value": ni.subnet_id},
            {"name": "networkInterfaceId", "value": format!("eni-{eni}")},
            {"name": "macAddress", "value": ni.mac_address},
            {"name": "privateDnsName", "value": ni.private_dns_name},
            {"name": "privateIPv4Address", "value": ni.private_ipv4_address},
        ],
    })
}

/// An address as the cache indexes it.
pub fn address_of(ni: &TaskNetworkInterface) -> Option<u32> {
    ni.private_ipv4_address
        .parse::<Ipv4Addr>()
        .ok()
        .map(u32::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: Value) -> Option<Value> {
        Some(json!({ "awsvpcConfiguration": v }))
    }

    #[test]
    fn network_configuration_is_checked_as_ecs_checks_it() {
        let ok = parse_network_configuration(
            config(json!({"subnets": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef0"], "securityGroups": ["sg-12345678"], "assignPublicIp": "ENABLED"})).as_ref(),
            "awsvpc",
            "FARGATE",
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.subnets, vec!["subnet-0123456789abcdef0"]);
        assert!(ok.assign_public_ip);
        let err = |v: Option<Value>, mode: &str, lt: &str| {
            parse_network_configuration(v.as_ref(), mode, lt)
                .unwrap_err()
                .message
        };
        assert!(err(None, "awsvpc", "EC2").contains("must be provided"));
        assert!(err(
            config(json!({"subnets": ["subnet-12345678"]})),
            "bridge",
            "EC2"
        )
        .contains("not valid for the given networkMode"));
        assert!(err(config(json!({"subnets": []})), "awsvpc", "EC2").contains("can not be empty"));
        assert!(
            err(config(json!({"subnets": ["subnet-xyz"]})), "awsvpc", "EC2")
                .contains("InvalidSubnetID.Malformed")
        );
        assert!(err(
            config(json!({"subnets": ["subnet-12345678"], "securityGroups": ["default"]})),
            "awsvpc",
            "EC2"
        )
        .contains("InvalidGroupId.Malformed"));
        assert!(err(
            config(json!({"subnets": ["subnet-12345678"], "assignPublicIp": "ENABLED"})),
            "awsvpc",
            "EC2"
        )
        .contains("Assign public IP"));
        assert_eq!(
            parse_network_configuration(None, "bridge", "EC2").unwrap(),
            None
        );
    }

    #[test]
    fn cidrs_parse_to_their_network() {
        assert_eq!(
            parse_cidr("10.213.7.9/24"),
            Some((u32::from(Ipv4Addr::new(10, 213, 7, 0)), 24))
        );
        assert_eq!(parse_cidr("10.213.0.0/33"), None);
        assert_eq!(parse_cidr("nope/8"), None);
        assert_eq!(capacity("10.0.0.0/24"), 253);
        assert_eq!(
            format_cidr(u32::from(Ipv4Addr::new(10, 1, 2, 0)), 24),
            "10.1.2.0/24"
        );
    }

    #[test]
    fn allocation_takes_the_next_free_address_of_the_emptiest_subnet() {
        let state = |cidr: &str, used: &[u8]| SubnetState {
            record: SubnetRecord {
                subnet_id: String::new(),
                cidr: cidr.into(),
                created_at: 0.0,
                allocations: 0,
            },
            revision: 3,
            in_use: used
                .iter()
                .map(|o| u32::from(Ipv4Addr::new(10, 0, 0, *o)))
                .collect(),
            taken: 0,
        };
        let mut a = Allocator {
            subnets: BTreeMap::from([
                (
                    "subnet-aaaaaaaa".to_string(),
                    state("10.0.0.0/24", &[2, 3, 5]),
                ),
                ("subnet-bbbbbbbb".to_string(), state("10.0.1.0/24", &[])),
            ]),
        };
        let req = NetworkRequest {
            subnets: vec!["subnet-aaaaaaaa".into(), "subnet-bbbbbbbb".into()],
            security_groups: vec![],
            assign_public_ip: false,
        };
        let first = a.allocate(&req, "us-east-1").ok().unwrap();
        assert_eq!(first.subnet_id, "subnet-bbbbbbbb");
        assert_eq!(first.private_ipv4_address, "10.0.1.2");
        assert_eq!(first.gateway, "10.0.1.1");
        assert_eq!(first.private_dns_name, "ip-10-0-1-2.ec2.internal");
        assert!(first.mac_address.starts_with("02:"));
        let only_a = NetworkRequest {
            subnets: vec!["subnet-aaaaaaaa".into()],
            ..req.clone()
        };
        assert_eq!(
            a.allocate(&only_a, "eu-west-1")
                .ok()
                .unwrap()
                .private_ipv4_address,
            "10.0.0.4"
        );
        assert_eq!(
            a.allocate(&only_a, "eu-west-1")
                .ok()
                .unwrap()
                .private_ipv4_address,
            "10.0.0.6"
        );
        let mut guards = Vec::new();
        let mut ops = Vec::new();
        a.commit_ops(&mut guards, &mut ops).unwrap();
        assert_eq!(guards.len(), 2, "one guard per subnet that gave an address");
        // A full subnet says so.
        let mut full = Allocator {
            subnets: BTreeMap::from([("subnet-aaaaaaaa".to_string(), state("10.0.0.0/30", &[2]))]),
        };
        let err = full.allocate(&only_a, "us-east-1").err().unwrap();
        assert_eq!(err.cidr, "10.0.0.0/30");
        // Next-fit: after three allocations the cursor is past .2–.4, so a freed .3 waits
        // until the range wraps (.5, .6, then .3).
        let mut cursor = Allocator {
            subnets: BTreeMap::from([("subnet-aaaaaaaa".to_string(), {
                let mut s = state("10.0.0.0/29", &[2, 4]);
                s.record.allocations = 3;
                s
            })]),
        };
        let next = |a: &mut Allocator| {
            a.allocate(&only_a, "us-east-1")
                .ok()
                .unwrap()
                .private_ipv4_address
        };
        assert_eq!(next(&mut cursor), "10.0.0.5");
        assert_eq!(next(&mut cursor), "10.0.0.6");
        assert_eq!(next(&mut cursor), "10.0.0.3");
        assert!(cursor.allocate(&only_a, "us-east-1").is_err());
    }

    #[test]
    fn the_attachment_names_the_interface_as_ecs_does() {
        let ni = TaskNetworkInterface {
            attachment_id: "0d3b2a1c-1111-2222-3333-444455556666".into(),
            subnet_id: "subnet-12345678".into(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            private_ipv4_address: "10.0.0.2".into(),
            mac_address: "02:00:0a:00:00:02".into(),
            private_dns_name: "ip-10-0-0-2.ec2.internal".into(),
            security_groups: Vec::new(),
        };
        let mut attachments = Some(vec![attachment(&ni, "PRECREATED")]);
        crate::state::records::set_attachment_status(&mut attachments, "ATTACHED");
        let a = &attachments.unwrap()[0];
        assert_eq!(a["type"], "ElasticNetworkInterface");
        assert_eq!(a["status"], "ATTACHED");
        let eni = a["details"][1]["value"].as_str().unwrap();
        assert!(eni.starts_with("eni-") && eni.len() == 21, "{eni}");
        assert_eq!(a["details"][4]["name"], "privateIPv4Address");
    }
}
