//! "Why can't it be placed?": for every instance, whether one more task of the request fits
//! and, if not, the first feasibility check that refused it — the same checks, in the same
//! order, as [`crate::place`] — with the numbers behind it ("needs 512 MiB, 200 MiB free").

use crate::constraint::{parse_constraints, Constraint};
use crate::feasible::{check, Reason};
use crate::view::{Added, Group, View};
use crate::{InstanceSnapshot, PlacementRequest};

/// One instance's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Container instance ARN.
    pub arn: String,
    /// `None` when one more task fits.
    pub refusal: Option<Refusal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The ECS reason string, as in RunTask `failures` (`RESOURCE:MEMORY`, …).
    pub reason: String,
    /// What that means on this instance, with the numbers.
    pub detail: String,
}

/// Explains, instance by instance, whether one task of `request` could be placed now. Fails
/// only on invalid constraints (with the message placement would give).
pub fn explain(
    instances: &[InstanceSnapshot],
    request: &PlacementRequest,
) -> Result<Vec<Verdict>, String> {
    let constraints = parse_constraints(&request.constraints)?;
    let group = Group::new(request.group.as_deref(), &request.family);
    let nothing = Added::default();
    Ok(instances
        .iter()
        .map(|instance| {
            let view = View {
                instance,
                added: &nothing,
                group: &group,
            };
            let refusal = check(&view, &request.requirements, &constraints)
                .err()
                .map(|reason| Refusal {
                    reason: reason.as_str().to_string(),
                    detail: detail(reason, &view, request, &constraints),
                });
            Verdict {
                arn: instance.arn.clone(),
                refusal,
            }
        })
        .collect())
}

fn detail(
    reason: Reason,
    view: &View,
    request: &PlacementRequest,
    constraints: &[Constraint],
) -> String {
    let i = view.instance;
    let req = &request.requirements;
    match reason {
        Reason::Inactive => format!(
            "its status is {}: only ACTIVE instances take tasks",
            i.status
        ),
        Reason::Draining => "it is DRAINING: new tasks are not placed on it".to_string(),
        Reason::Agent => "its agent is disconnected".to_string(),
        Reason::Cpu => format!(
            "needs {} CPU units, {} free (of {})",
            req.cpu,
            i.registered_cpu.saturating_sub(view.used_cpu()).max(0),
            i.registered_cpu
        ),
        Reason::Memory => format!(
            "needs {} MiB, {} MiB free (of {} MiB)",
            req.memory,
            i.registered_memory
                .saturating_sub(view.used_memory())
                .max(0),
            i.registered_memory
        ),
        Reason::Ports => ports_taken("TCP", &req.tcp_ports, |p| view.tcp_port_taken(p)),
        Reason::PortsUdp => ports_taken("UDP", &req.udp_ports, |p| view.udp_port_taken(p)),
        Reason::Eni => format!(
            "runs {} awsvpc tasks, its limit (attribute {})",
            i.used_network_interfaces,
            gantry_model::requirements::AWSVPC_TASK_LIMIT_ATTRIBUTE
        ),
        Reason::MemberOf => {
            // The first memberOf expression that does not select the instance, by position in
            // the request (constraints parse one to one, in order).
            let failing =
                constraints
                    .iter()
                    .zip(&request.constraints)
                    .find_map(|(c, wire)| match c {
                        Constraint::MemberOf(expr) if !expr.eval(view) => {
                            Some((expr, wire.expression.clone().unwrap_or_default()))
                        }
                        _ => None,
                    });
            match failing {
                Some((expr, source)) => {
                    let values = expr.describe_values(view);
                    if values.is_empty() {
                        format!("memberOf({source}) does not select it")
                    } else {
                        format!(
                            "memberOf({source}) does not select it: {}",
                            values.join("; ")
                        )
                    }
                }
                None => "a memberOf constraint does not select it".to_string(),
            }
        }
        Reason::DistinctInstance => {
            let label = request
                .group
                .clone()
                .unwrap_or_else(|| format!("family:{}", request.family));
            format!(
                "distinctInstance: it already runs {} task(s) of {label}",
                view.group.existing_tasks(i)
            )
        }
    }
}

fn ports_taken(protocol: &str, wanted: &[u16], taken: impl Fn(u16) -> bool) -> String {
    let busy: Vec<String> = wanted
        .iter()
        .filter(|p| taken(**p))
        .map(u16::to_string)
        .collect();
    format!(
        "{protocol} host port {} already in use or reserved",
        busy.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::requirements::TaskRequirements;
    use gantry_model::types::PlacementConstraint;

    fn instance(arn: &str, zone: &str, free_memory: i64) -> InstanceSnapshot {
        InstanceSnapshot {
            arn: arn.into(),
            status: "ACTIVE".into(),
            agent_connected: true,
            attributes: [("ecs.availability-zone".to_string(), Some(zone.to_string()))]
                .into_iter()
                .collect(),
            registered_cpu: 1024,
            registered_memory: 1024,
            used_memory: 1024 - free_memory,
            used_tcp_ports: vec![8080],
            ..Default::default()
        }
    }

    fn request(memory: i64, ports: Vec<u16>, zone: Option<&str>) -> PlacementRequest {
        PlacementRequest {
            requirements: TaskRequirements {
                cpu: 0,
                memory,
                tcp_ports: ports,
                udp_ports: vec![],
                network_interfaces: 0,
            },
            count: 1,
            constraints: zone
                .map(|z| {
                    vec![PlacementConstraint {
                        kind: Some("memberOf".into()),
                        expression: Some(format!("attribute:ecs.availability-zone == {z}")),
                    }]
                })
                .unwrap_or_default(),
            family: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn says_how_much_memory_is_missing() {
        let v = explain(
            &[instance("i-3", "us-east-1a", 200)],
            &request(512, vec![], None),
        )
        .expect("explain");
        let r = v[0].refusal.clone().expect("refused");
        assert_eq!(r.reason, "RESOURCE:MEMORY");
        assert_eq!(r.detail, "needs 512 MiB, 200 MiB free (of 1024 MiB)");
    }

    #[test]
    fn names_the_attribute_a_member_of_constraint_wanted() {
        let v = explain(
            &[
                instance("i-7", "us-east-1b", 1024),
                instance("i-8", "us-east-1a", 1024),
            ],
            &request(128, vec![], Some("us-east-1a")),
        )
        .expect("explain");
        let r = v[0].refusal.clone().expect("refused");
        assert_eq!(r.reason, crate::reason::MEMBER_OF);
        assert_eq!(
            r.detail,
            "memberOf(attribute:ecs.availability-zone == us-east-1a) does not select it: attribute:ecs.availability-zone is us-east-1b"
        );
        assert_eq!(v[1].refusal, None, "the other zone fits");
    }

    #[test]
    fn names_the_busy_port_and_keeps_the_scheduler_s_order_of_checks() {
        let mut disconnected = instance("i-9", "us-east-1a", 0);
        disconnected.agent_connected = false;
        let v = explain(
            &[instance("i-1", "us-east-1a", 1024), disconnected],
            &request(512, vec![8080, 9090], None),
        )
        .expect("explain");
        assert_eq!(
            v[0].refusal.as_ref().map(|r| r.detail.as_str()),
            Some("TCP host port 8080 already in use or reserved")
        );
        // Memory is short there too, but the agent check comes first, as in `place`.
        assert_eq!(
            v[1].refusal.as_ref().map(|r| r.reason.as_str()),
            Some(crate::reason::AGENT)
        );
    }

    #[test]
    fn agrees_with_place_about_who_fits() {
        let instances = vec![
            instance("a", "us-east-1a", 100),
            instance("b", "us-east-1b", 900),
            instance("c", "us-east-1a", 900),
        ];
        let req = request(512, vec![], Some("us-east-1a"));
        let v = explain(&instances, &req).expect("explain");
        let fits: Vec<&str> = v
            .iter()
            .filter(|v| v.refusal.is_none())
            .map(|v| v.arn.as_str())
            .collect();
        assert_eq!(fits, vec!["c"]);
        assert_eq!(
            crate::place(&instances, &req).placements,
            vec!["c".to_string()]
        );
    }

    #[test]
    fn an_invalid_constraint_is_an_error() {
        let mut req = request(1, vec![], None);
        req.constraints = vec![PlacementConstraint {
            kind: Some("memberOf".into()),
            expression: Some("attribute:x ==".into()),
        }];
        assert!(explain(&[instance("a", "z", 10)], &req).is_err());
    }
}
