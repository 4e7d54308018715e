//! `awsvpc` task networking: one network namespace per task, at the address the control plane
//! gave it, as ECS's agent does it.
//!
//! When an assignment's task definition says `networkMode: awsvpc` and the control plane gave
//! the task a network interface ([`TaskNetworkInterface`]):
//!
//! - the subnet is a Docker bridge network named [`subnet_network_name`] with the subnet's
//!   range and gateway (the host's side of the bridge, so the host reaches every task on it),
//!   labelled [`labels::SUBNET_ID`]; [`ensure_subnet_network`] creates it when missing, and two
//!   runners (or agents) creating it at once both succeed;
//! - who holds the task's namespace is decided by [`needs_pause_container`], and nowhere else:
//!   - a task with several containers gets a pause container ([`pause_create_spec`], image
//!     [`crate::pause::PAUSE_IMAGE`]) on that network at the task's IPv4 and MAC addresses,
//!     with the task's private DNS name as its hostname, and every container of the task joins
//!     its namespace ([`join_task_namespace`]: `container:<pause id>`), so they reach each
//!     other on `localhost` and share the address;
//!   - a task with one container needs no pause container: that container itself sits on the
//!     network at the task's addresses with the task's hostname ([`own_task_namespace`]).
//!
//! Subnet networks are left in place when their last task goes: they are cheap, the next task
//! on the subnet reuses them, and removing one could race another runner about to attach to it.
//!
//! Without a network interface (an older control plane) awsvpc tasks keep running like bridge
//! tasks with their ports published on the same host ports ([`crate::spec::NetMode::AwsVpc`]).

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, HostConfigLogConfig,
    Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
};
use gantry_model::agent_protocol::{labels, subnet_network_name, TaskNetworkInterface};
use gantry_model::types::TaskDefinition;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::docker::{ContainerSnapshot, DockerDriver, NetworkInfo};
use crate::pause::PAUSE_IMAGE;
use crate::spec::{CreateSpec, TaskContext};
use crate::util::sanitize_docker_name;

/// The container-name label of a pause container (ECS's name for it).
pub const PAUSE_CONTAINER_NAME: &str = "~internal~ecs~pause";

/// Why a task stopped when its pause container died under it.
pub const REASON_PAUSE_EXITED: &str =
    "TaskNetworkError: the task's network namespace (its pause container) exited";

/// Whether an awsvpc task's network namespace is held by a pause container (`true`) or by the
/// task's one container itself (`false`). The one place that decides it.
///
/// ECS's pause container exists to hold a namespace that several containers share and that
/// outlives any one of them. A task with a single container needs neither: that container,
/// restarted in place under its `restartPolicy`, is the same Docker container (it keeps its
/// network configuration, address and MAC address), and its exit (it is essential) stops the
/// task. Without a pause container the task starts as fast as a plain `docker run` on the
/// subnet's network, instead of waiting for a second container's network setup first.
pub fn needs_pause_container(td: &TaskDefinition) -> bool {
    td.container_definitions.len() > 1
}

/// Whether `snap` is a task's pause container.
pub fn is_pause(snap: &ContainerSnapshot) -> bool {
    snap.label(labels::PAUSE) == Some("true")
}

/// `ecs-<family>-<revision>-<first 12 chars of task id>-pause`: after the task like its
/// containers, and never the name of one of them (theirs end with the task id).
pub fn pause_container_name(family: &str, revision: i64, task_id: &str) -> String {
    let short: String = task_id.chars().take(12).collect();
    sanitize_docker_name(&format!("ecs-{family}-{revision}-{short}-pause"))
}

/// The labels of a task's pause container: those the task's containers carry, the pause
/// container name and [`labels::PAUSE`]` = true`.
pub fn pause_labels(ctx: &TaskContext<'_>) -> HashMap<String, String> {
    HashMap::from([
        (labels::TASK_ARN.to_string(), ctx.task_arn.to_string()),
        (
            labels::CONTAINER_NAME.to_string(),
            PAUSE_CONTAINER_NAME.to_string(),
        ),
        (labels::CLUSTER.to_string(), ctx.cluster_arn.to_string()),
        (
            labels::TASK_FAMILY.to_string(),
            ctx.task_definition.family.clone(),
        ),
        (
            labels::TASK_REVISION.to_string(),
            ctx.revision().to_string(),
        ),
        (
            labels::INSTANCE_ARN.to_string(),
            ctx.instance_arn.to_string(),
        ),
        (labels::PAUSE.to_string(), "true".to_string()),
    ])
}

/// The hostname for a private DNS name: the whole name when Linux takes it (at most 63
/// characters), else its first label.
fn hostname_for(dns_name: &str) -> Option<String> {
    let name = dns_name.trim().trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    if name.len() <= 63 {
        return Some(name.to_string());
    }
    name.split('.')
        .next()
        .map(|l| l.chars().take(63).collect())
        .filter(|l: &String| !l.is_empty())
}

/// Puts a create request on the subnet's network at the task's IPv4 and MAC addresses (the MAC
/// also goes to [`DockerDriver::create_container_with_mac`] for engines older than API 1.44),
/// with the task's private DNS name as hostname: what the holder of the task's namespace gets.
fn attach_to_subnet(body: &mut ContainerCreateBody, eni: &TaskNetworkInterface) {
    let network = subnet_network_name(&eni.subnet_id);
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(eni.private_ipv4_address.clone()),
            ..Default::default()
        }),
        mac_address: Some(eni.mac_address.clone()).filter(|m| !m.is_empty()),
        ..Default::default()
    };
    body.hostname = hostname_for(&eni.private_dns_name);
    body.host_config
        .get_or_insert_with(Default::default)
        .network_mode = Some(network.clone());
    body.networking_config = Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(network, endpoint)])),
    });
}

/// The `docker create` request for the task's pause container: attached to the subnet at the
/// task's addresses (`attach_to_subnet`).
pub fn pause_create_spec(ctx: &TaskContext<'_>, eni: &TaskNetworkInterface) -> CreateSpec {
    let mut body = ContainerCreateBody {
        image: Some(PAUSE_IMAGE.to_string()),
        labels: Some(pause_labels(ctx)),
        host_config: Some(HostConfig {
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "1m".to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    attach_to_subnet(&mut body, eni);
    CreateSpec {
        name: pause_container_name(&ctx.task_definition.family, ctx.revision(), ctx.task_id()),
        body,
    }
}

/// Removes from a task container's create request what the task's namespace decides, whoever
/// holds it: port bindings and exposed ports (the task is reached at its address, and reports
/// no network bindings), hostname and domain name (the task's DNS name), DNS settings, extra
/// hosts and links (Docker refuses them in `container:` mode; dropped in both modes so that
/// a task behaves the same with one container or several). Returns what was dropped, for the
/// log.
fn drop_namespace_settings(body: &mut ContainerCreateBody) -> Vec<&'static str> {
    let mut dropped = Vec::new();
    if body.hostname.take().is_some() {
        dropped.push("hostname");
    }
    if body.domainname.take().is_some() {
        dropped.push("domainname");
    }
    if body.exposed_ports.take().is_some() {
        dropped.push("exposed ports");
    }
    body.networking_config = None;
    let hc = body.host_config.get_or_insert_with(Default::default);
    if hc.port_bindings.take().is_some() {
        dropped.push("port bindings");
    }
    if hc.publish_all_ports.take().is_some_and(|p| p) {
        dropped.push("publish all ports");
    }
    if hc.dns.take().is_some() {
        dropped.push("dnsServers");
    }
    if hc.dns_search.take().is_some() {
        dropped.push("dnsSearchDomains");
    }
    if hc.dns_options.take().is_some() {
        dropped.push("dns options");
    }
    if hc.extra_hosts.take().is_some() {
        dropped.push("extraHosts");
    }
    if hc.links.take().is_some() {
        dropped.push("links");
    }
    dropped
}

/// Makes a task container's create request join the pause container's network namespace
/// (`container:<pause id>`), without what the namespace decides (`drop_namespace_settings`);
/// returns what was dropped, for the log.
pub fn join_task_namespace(spec: &mut CreateSpec, pause_id: &str) -> Vec<&'static str> {
    let dropped = drop_namespace_settings(&mut spec.body);
    spec.body
        .host_config
        .get_or_insert_with(Default::default)
        .network_mode = Some(format!("container:{pause_id}"));
    dropped
}

/// Makes the create request of a one-container task's container hold the task's namespace
/// itself (no pause container, see [`needs_pause_container`]): on the subnet's network at the
/// task's addresses with the task's hostname (`attach_to_subnet`), without what the
/// namespace decides (`drop_namespace_settings`); returns what was dropped, for the log.
pub fn own_task_namespace(spec: &mut CreateSpec, eni: &TaskNetworkInterface) -> Vec<&'static str> {
    let dropped = drop_namespace_settings(&mut spec.body);
    attach_to_subnet(&mut spec.body, eni);
    dropped
}

/// The Docker network for an awsvpc subnet: a bridge with the subnet's range and gateway.
pub fn subnet_network_request(eni: &TaskNetworkInterface) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: subnet_network_name(&eni.subnet_id),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(eni.subnet_cidr.clone()),
                gateway: Some(eni.gateway.clone()).filter(|g| !g.is_empty()),
                ..Default::default()
            }]),
            options: None,
        }),
        labels: Some(HashMap::from([(
            labels::SUBNET_ID.to_string(),
            eni.subnet_id.clone(),
        )])),
        ..Default::default()
    }
}

/// `ResourceInitializationError: …` (ECS's words for network setup failures) about the subnet
/// of `eni`.
pub fn setup_failure(eni: &TaskNetworkInterface, what: &str) -> String {
    format!(
        "ResourceInitializationError: cannot set up the network of subnet {} ({}) on this host: {what}",
        eni.subnet_id, eni.subnet_cidr
    )
}

/// Whether an existing network is the one for `eni`: same range (and gateway, when both say).
fn check_network(eni: &TaskNetworkInterface, net: &NetworkInfo) -> Result<(), String> {
    let same = net.subnets.iter().any(|(subnet, gateway)| {
        subnet == &eni.subnet_cidr
            && gateway
                .as_deref()
                .is_none_or(|g| eni.gateway.is_empty() || g == eni.gateway)
    });
    if same {
        return Ok(());
    }
    let has: Vec<String> = net
        .subnets
        .iter()
        .map(|(s, g)| match g {
            Some(g) => format!("{s} (gateway {g})"),
            None => s.clone(),
        })
        .collect();
    Err(setup_failure(
        eni,
        &format!(
            "the Docker network {} already exists with {} instead of {} (gateway {}). Remove it (`docker network rm {}`) once no container uses it, and the next task recreates it",
            net.name,
            if has.is_empty() { "no IPv4 range".to_string() } else { has.join(", ") },
            eni.subnet_cidr,
            eni.gateway,
            net.name
        ),
    ))
}

/// How long a refused create waits for a network another agent is creating at the same time
/// to show up (Docker reserves the range before the network can be inspected).
const CONCURRENT_CREATE_GRACE: Duration = Duration::from_secs(3);

/// One lock per network name: runners of this process create a network one at a time.
fn creation_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(name.to_string()).or_default().clone()
}

/// How long a network found right stays trusted without another inspect. A burst of tasks in
/// one subnet then costs one inspect, not one per task taken in turn; a network removed behind
/// the agent's back is noticed within this time (a container created on it meanwhile fails to
/// start, with Docker's reason).
const VERIFIED_FOR: Duration = Duration::from_secs(10);

/// Networks (name, range) found right, and when.
fn verified() -> &'static Mutex<HashMap<(String, String), std::time::Instant>> {
    static VERIFIED: LazyLock<Mutex<HashMap<(String, String), std::time::Instant>>> =
        LazyLock::new(Default::default);
    &VERIFIED
}

fn recently_verified(name: &str, cidr: &str) -> bool {
    verified()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&(name.to_string(), cidr.to_string()))
        .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
}

fn mark_verified(name: &str, cidr: &str) {
    verified()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(
            (name.to_string(), cidr.to_string()),
            std::time::Instant::now(),
        );
}

/// Makes sure the subnet's Docker network exists with the subnet's range. Idempotent. Runners
/// of one agent take turns; when two agents on one engine create it at once, Docker refuses
/// one of them, which then waits briefly for the other's network to appear. Errors are task
/// stop reasons (`ResourceInitializationError: …`).
pub async fn ensure_subnet_network(
    docker: &DockerDriver,
    eni: &TaskNetworkInterface,
) -> Result<(), String> {
    let name = subnet_network_name(&eni.subnet_id);
    if recently_verified(&name, &eni.subnet_cidr) {
        return Ok(());
    }
    let lock = creation_lock(&name);
    let _turn = lock.lock().await;
    let checked = ensure_locked(docker, eni, &name).await;
    if checked.is_ok() {
        mark_verified(&name, &eni.subnet_cidr);
    }
    checked
}

async fn ensure_locked(
    docker: &DockerDriver,
    eni: &TaskNetworkInterface,
    name: &str,
) -> Result<(), String> {
    if recently_verified(name, &eni.subnet_cidr) {
        return Ok(());
    }
    let name = name.to_string();
    match docker.inspect_network(&name).await {
        Ok(Some(net)) => {
            let checked = check_network(eni, &net);
            // A network of Gantry's with another range is left from another control plane
            // (or an earlier store): when no running container uses it, Docker removes it and
            // it is made again with this subnet's range; otherwise the reason says what to do.
            let stale = checked.is_err() && net.labels.contains_key(labels::SUBNET_ID);
            if !stale || docker.remove_network(&net.id).await.is_err() {
                return checked;
            }
            tracing::info!(network = %name, range = %eni.subnet_cidr, "replacing a stale subnet network that had another range");
        }
        Ok(None) => {}
        Err(e) => {
            return Err(setup_failure(
                eni,
                &format!("cannot inspect the Docker network {name}: {e}"),
            ))
        }
    }
    let refused = match docker.create_network(subnet_network_request(eni)).await {
        Ok(id) => {
            tracing::info!(network = %name, id = %id.get(..12).unwrap_or(&id), subnet = %eni.subnet_id, range = %eni.subnet_cidr, "created the subnet's Docker network");
            return Ok(());
        }
        Err(e) => e,
    };
    // Created meanwhile by another agent on this engine? Then all is well. (Its range is
    // reserved a moment before its network can be inspected.)
    let deadline = tokio::time::Instant::now() + CONCURRENT_CREATE_GRACE;
    loop {
        if let Ok(Some(net)) = docker.inspect_network(&name).await {
            return check_network(eni, &net);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(setup_failure(
        eni,
        &format!(
            "Docker refused to create the network {name} with range {} and gateway {}: {refused}. \
             The range probably overlaps a network this host already uses (see `docker network ls` and `ip route`): \
             remove that network, or run the task in a subnet whose range this host does not use",
            eni.subnet_cidr, eni.gateway
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortBinding;
    use gantry_model::types::{ContainerDefinition, PortMapping, TaskDefinition};

    const TASK: &str = "arn:aws:ecs:us-east-1:000000000000:task/prod/0123456789abcdef0123";

    fn eni() -> TaskNetworkInterface {
        TaskNetworkInterface {
            attachment_id: "att-1".into(),
            subnet_id: "subnet-0abc".into(),
            subnet_cidr: "10.213.0.0/24".into(),
            gateway: "10.213.0.1".into(),
            private_ipv4_address: "10.213.0.5".into(),
            mac_address: "02:6a:00:00:00:05".into(),
            private_dns_name: "ip-10-213-0-5.us-east-1.compute.internal".into(),
            security_groups: Vec::new(),
        }
    }

    fn td() -> TaskDefinition {
        TaskDefinition {
            family: "web".into(),
            revision: Some(3),
            network_mode: Some("awsvpc".into()),
            container_definitions: vec![ContainerDefinition {
                name: Some("app".into()),
                image: Some("busybox".into()),
                hostname: Some("app1".into()),
                port_mappings: Some(vec![PortMapping {
                    container_port: Some(80),
                    ..Default::default()
                }]),
                extra: serde_json::from_value(serde_json::json!({
                    "dnsServers": ["10.0.0.2"],
                    "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.3"}]
                }))
                .unwrap(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn ctx(td: &TaskDefinition) -> TaskContext<'_> {
        TaskContext {
            task_arn: TASK,
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/prod",
            instance_arn: "arn:ci",
            task_definition: td,
            overrides: None,
            volumes: &[],
        }
    }

    #[test]
    fn pause_container_sits_on_the_subnet_at_the_task_address() {
        let t = td();
        let s = pause_create_spec(&ctx(&t), &eni());
        assert_eq!(s.name, "ecs-web-3-0123456789ab-pause");
        let b = &s.body;
        assert_eq!(b.image.as_deref(), Some(PAUSE_IMAGE));
        assert_eq!(
            b.hostname.as_deref(),
            Some("ip-10-213-0-5.us-east-1.compute.internal")
        );
        let hc = b.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("gantry-subnet-0abc"));
        assert!(hc.port_bindings.is_none());
        let ep = &b
            .networking_config
            .as_ref()
            .unwrap()
            .endpoints_config
            .as_ref()
            .unwrap()["gantry-subnet-0abc"];
        assert_eq!(
            ep.ipam_config.as_ref().unwrap().ipv4_address.as_deref(),
            Some("10.213.0.5")
        );
        assert_eq!(ep.mac_address.as_deref(), Some("02:6a:00:00:00:05"));
        let l = b.labels.as_ref().unwrap();
        assert_eq!(l[labels::PAUSE], "true");
        assert_eq!(l[labels::TASK_ARN], TASK);
        assert_eq!(l[labels::INSTANCE_ARN], "arn:ci");
        assert_eq!(
            l[labels::CLUSTER],
            "arn:aws:ecs:us-east-1:000000000000:cluster/prod"
        );
        assert_eq!(l[labels::TASK_FAMILY], "web");
        assert_eq!(l[labels::TASK_REVISION], "3");
        assert_eq!(l[labels::CONTAINER_NAME], PAUSE_CONTAINER_NAME);
        // Never a task container's name.
        assert_ne!(s.name, ctx(&t).docker_name("pause"));
    }

    #[test]
    fn long_dns_names_give_their_first_label_as_hostname() {
        let long = format!("ip-10-213-0-5.{}.compute.internal", "x".repeat(60));
        assert_eq!(hostname_for(&long).as_deref(), Some("ip-10-213-0-5"));
        assert_eq!(hostname_for(""), None);
    }

    #[test]
    fn task_containers_join_the_namespace_without_what_docker_refuses() {
        let t = td();
        let mut s = crate::spec::build_create_spec(&ctx(&t), &t.container_definitions[0]).unwrap();
        // (Without an interface, awsvpc publishes the container port on the same host port.)
        assert_eq!(
            s.body
                .host_config
                .as_ref()
                .unwrap()
                .port_bindings
                .as_ref()
                .unwrap()["80/tcp"],
            Some(vec![PortBinding {
                host_ip: None,
                host_port: Some("80".into())
            }])
        );
        let dropped = join_task_namespace(&mut s, "abc123");
        let hc = s.body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:abc123"));
        assert!(hc.port_bindings.is_none());
        assert!(hc.dns.is_none());
        assert!(hc.extra_hosts.is_none());
        assert!(s.body.hostname.is_none());
        assert!(s.body.exposed_ports.is_none());
        for d in [
            "hostname",
            "port bindings",
            "exposed ports",
            "dnsServers",
            "extraHosts",
        ] {
            assert!(dropped.contains(&d), "{d} not in {dropped:?}");
        }
        // Everything else stays.
        assert_eq!(s.body.image.as_deref(), Some("busybox"));
        assert_eq!(
            s.body.labels.as_ref().unwrap()[labels::CONTAINER_NAME],
            "app"
        );
    }

    #[test]
    fn only_tasks_with_several_containers_need_a_pause_container() {
        let mut t = td();
        assert!(!needs_pause_container(&t));
        t.container_definitions.push(ContainerDefinition {
            name: Some("sidecar".into()),
            image: Some("busybox".into()),
            ..Default::default()
        });
        assert!(needs_pause_container(&t));
    }

    #[test]
    fn a_lone_container_holds_the_task_namespace_itself() {
        let t = td();
        let mut s = crate::spec::build_create_spec(&ctx(&t), &t.container_definitions[0]).unwrap();
        let dropped = own_task_namespace(&mut s, &eni());
        let b = &s.body;
        // The pause container's network settings, on the task's own container.
        let pause = pause_create_spec(&ctx(&t), &eni()).body;
        assert_eq!(b.networking_config, pause.networking_config);
        assert_eq!(
            b.hostname.as_deref(),
            Some("ip-10-213-0-5.us-east-1.compute.internal")
        );
        let hc = b.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("gantry-subnet-0abc"));
        // No port published, the definition's hostname, DNS servers and extra hosts dropped as
        // when containers join a pause container.
        assert!(hc.port_bindings.is_none());
        assert!(b.exposed_ports.is_none());
        assert!(hc.dns.is_none());
        assert!(hc.extra_hosts.is_none());
        for d in [
            "hostname",
            "port bindings",
            "exposed ports",
            "dnsServers",
            "extraHosts",
        ] {
            assert!(dropped.contains(&d), "{d} not in {dropped:?}");
        }
        // Everything else stays.
        assert_eq!(b.image.as_deref(), Some("busybox"));
        assert_eq!(b.labels.as_ref().unwrap()[labels::CONTAINER_NAME], "app");
        assert!(b.labels.as_ref().unwrap().get(labels::PAUSE).is_none());
        assert_eq!(s.name, ctx(&t).docker_name("app"));
    }

    #[test]
    fn subnet_network_has_the_range_gateway_and_label() {
        let r = subnet_network_request(&eni());
        assert_eq!(r.name, "gantry-subnet-0abc");
        assert_eq!(r.driver.as_deref(), Some("bridge"));
        let c = &r.ipam.as_ref().unwrap().config.as_ref().unwrap()[0];
        assert_eq!(c.subnet.as_deref(), Some("10.213.0.0/24"));
        assert_eq!(c.gateway.as_deref(), Some("10.213.0.1"));
        assert_eq!(r.labels.as_ref().unwrap()[labels::SUBNET_ID], "subnet-0abc");
    }

    #[test]
    fn an_existing_network_must_have_the_subnet_range() {
        let e = eni();
        let mut net = NetworkInfo {
            name: "gantry-subnet-0abc".into(),
            subnets: vec![("10.213.0.0/24".into(), Some("10.213.0.1".into()))],
            ..Default::default()
        };
        assert!(check_network(&e, &net).is_ok());
        net.subnets = vec![("10.99.0.0/24".into(), None)];
        let err = check_network(&e, &net).unwrap_err();
        assert!(err.starts_with("ResourceInitializationError: "), "{err}");
        assert!(
            err.contains("subnet-0abc")
                && err.contains("10.213.0.0/24")
                && err.contains("10.99.0.0/24"),
            "{err}"
        );
        assert!(
            err.contains("docker network rm gantry-subnet-0abc"),
            "{err}"
        );
    }
}
