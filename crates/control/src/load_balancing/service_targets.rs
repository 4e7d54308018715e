//! Which targets a service's tasks contribute to its target groups, as ECS registers them: a
//! task that is RUNNING (and meant to stay so) is a target of every target group its service's
//! `loadBalancers` name — by its own address for awsvpc tasks (`ip` groups), by the host port
//! its container is mapped to on its instance for bridge and host tasks (`instance` groups).

use crate::state::records::TaskRecord;
use gantry_model::elbv2::TargetConfig;
use gantry_model::status;
use gantry_model::types::ContainerInstance;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};

/// The container-instance attribute an agent may set to the address other hosts reach it on;
/// without it, an instance's published ports are reached on loopback (the `gantry dev` host,
/// where the load balancer and the agent share the machine).
pub const HOST_ADDRESS_ATTRIBUTE: &str = "gantry.host-address";

/// One entry of a service's `loadBalancers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLoadBalancer {
    pub target_group_arn: String,
    pub container_name: Option<String>,
    pub container_port: Option<u16>,
}

/// The service's `loadBalancers` that name a target group (classic `loadBalancerName` entries
/// have no target group and register nothing).
pub fn load_balancers_of(service: &gantry_model::services::Service) -> Vec<ServiceLoadBalancer> {
    let Some(Value::Array(entries)) = service.extra.get("loadBalancers") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            Some(ServiceLoadBalancer {
                target_group_arn: e.get("targetGroupArn")?.as_str()?.to_string(),
                container_name: e
                    .get("containerName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                container_port: e
                    .get("containerPort")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok()),
            })
        })
        .collect()
}

/// Whether the task should receive traffic: RUNNING and not asked to stop. A task asked to stop
/// leaves its target groups first (and drains) before its agent hears the stop.
pub fn serves_traffic(task: &TaskRecord) -> bool {
    task.task.last_status.as_deref() == Some(status::RUNNING)
        && task.task.desired_status.as_deref() != Some(status::STOPPED)
}

/// The address an instance's published ports are reached on.
pub fn instance_address(instance: Option<&ContainerInstance>) -> IpAddr {
    instance
        .and_then(|ci| ci.attributes.as_ref())
        .and_then(|attrs| {
            attrs
                .iter()
                .find(|a| a.name == HOST_ADDRESS_ATTRIBUTE)
                .and_then(|a| a.value.as_deref())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The targets `task` contributes, as (target group ARN, target). Empty unless the task
/// [`serves_traffic`]. `instance` is the container instance that runs it (bridge and host
/// tasks).
pub fn task_targets(
    task: &TaskRecord,
    load_balancers: &[ServiceLoadBalancer],
    instance: Option<&ContainerInstance>,
) -> Vec<(String, TargetConfig)> {
    if !serves_traffic(task) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for lb in load_balancers {
        let Some(container_port) = lb.container_port else {
            continue;
        };
        if let Some(ni) = &task.internal.network_interface {
            // awsvpc: the task's own address and the container's port.
            let Ok(ip) = ni.private_ipv4_address.parse::<IpAddr>() else {
                continue;
            };
            out.push((
                lb.target_group_arn.clone(),
                TargetConfig {
                    id: ip.to_string(),
                    port: container_port,
                    address: ip,
                },
            ));
            continue;
        }
        // bridge / host: the host port the container's port is published on.
        let host_port = task
            .task
            .containers
            .iter()
            .filter(|c| {
                lb.container_name.is_none() || c.name.as_deref() == lb.container_name.as_deref()
            })
            .flat_map(|c| c.network_bindings.iter().flatten())
            .find(|b| {
                b.container_port == Some(i32::from(container_port))
                    && b.protocol.as_deref().is_none_or(|p| p == "tcp")
            })
            .and_then(|b| b.host_port)
            .and_then(|p| u16::try_from(p).ok());
        let (Some(port), Some(ci)) = (host_port, instance) else {
            continue;
        };
        let Some(id) = ci.ec2_instance_id.clone() else {
            continue;
        };
        out.push((
            lb.target_group_arn.clone(),
            TargetConfig {
                id,
                port,
                address: instance_address(Some(ci)),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::records::TaskInternal;
    use gantry_model::agent_protocol::TaskNetworkInterface;
    use gantry_model::types::{Container, NetworkBinding, Task};

    fn lb(port: u16) -> ServiceLoadBalancer {
        ServiceLoadBalancer {
            target_group_arn: "arn:tg/web".into(),
            container_name: Some("web".into()),
            container_port: Some(port),
        }
    }

    fn bridge_task(last: &str, desired: &str) -> TaskRecord {
        TaskRecord {
            task: Task {
                last_status: Some(last.into()),
                desired_status: Some(desired.into()),
                containers: vec![
                    Container {
                        name: Some("sidecar".into()),
                        network_bindings: Some(vec![NetworkBinding {
                            container_port: Some(80),
                            host_port: Some(40000),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    },
                    Container {
                        name: Some("web".into()),
                        network_bindings: Some(vec![NetworkBinding {
                            container_port: Some(80),
                            host_port: Some(40001),
                            protocol: Some("tcp".into()),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            internal: TaskInternal::default(),
        }
    }

    fn instance() -> ContainerInstance {
        ContainerInstance {
            ec2_instance_id: Some("gantry-0123456789ab".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_bridge_task_is_its_instance_and_the_named_containers_host_port() {
        let t = bridge_task("RUNNING", "RUNNING");
        let targets = task_targets(&t, &[lb(80)], Some(&instance()));
        assert_eq!(
            targets,
            vec![(
                "arn:tg/web".to_string(),
                TargetConfig {
                    id: "gantry-0123456789ab".into(),
                    port: 40001,
                    address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                }
            )]
        );
        assert!(task_targets(&t, &[lb(81)], Some(&instance())).is_empty());
    }

    #[test]
    fn only_running_tasks_that_stay_running_are_targets() {
        for (last, desired) in [
            ("PENDING", "RUNNING"),
            ("RUNNING", "STOPPED"),
            ("STOPPED", "STOPPED"),
        ] {
            let t = bridge_task(last, desired);
            assert!(
                task_targets(&t, &[lb(80)], Some(&instance())).is_empty(),
                "{last}/{desired}"
            );
        }
    }

    #[test]
    fn an_awsvpc_task_is_its_own_address_and_the_container_port() {
        let mut t = bridge_task("RUNNING", "RUNNING");
        t.internal.network_interface = Some(TaskNetworkInterface {
            attachment_id: "eni-attachment".into(),
            subnet_id: "subnet-1".into(),
            subnet_cidr: "10.213.0.0/24".into(),
            gateway: "10.213.0.1".into(),
            private_ipv4_address: "10.213.0.7".into(),
            mac_address: "02:00:00:00:00:07".into(),
            private_dns_name: "ip-10-213-0-7".into(),
            security_groups: Vec::new(),
        });
        let targets = task_targets(&t, &[lb(8080)], None);
        assert_eq!(targets[0].1.id, "10.213.0.7");
        assert_eq!(targets[0].1.port, 8080);
    }

    #[test]
    fn the_host_address_attribute_names_where_an_instance_is_reached() {
        let mut ci = instance();
        ci.attributes = Some(vec![gantry_model::types::Attribute {
            name: HOST_ADDRESS_ATTRIBUTE.into(),
            value: Some("192.0.2.10".into()),
            ..Default::default()
        }]);
        assert_eq!(
            instance_address(Some(&ci)),
            "192.0.2.10".parse::<IpAddr>().unwrap()
        );
        assert_eq!(instance_address(None), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
