//! The task metadata endpoint's documents (version 4, which also answers version 3 paths), in
//! the shapes AWS documents: `${ECS_CONTAINER_METADATA_URI_V4}` (the container),
//! `${…}/task` (the task with its containers), `${…}/stats` and `${…}/task/stats` (Docker's
//! stats, with the previous sample's CPU figures and the network rates the ECS agent adds:
//! [`with_previous_sample`]).
//!
//! Pure functions of three inputs, so the shapes are unit-tested: what the task assignment
//! says ([`TaskDescription`], fixed for the task's life), what the task's runner last reported
//! ([`TaskState`]: statuses, Docker ids, exit codes, port bindings, pull times), and what
//! Docker says of each container when asked ([`DockerFacts`]: image id, timestamps, labels,
//! addresses).

use gantry_model::agent_protocol::{
    log_destination, SubmitTaskStateChange, TaskAssignment, TaskNetworkInterface,
};
use gantry_model::types::NetworkBinding;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

use crate::spec::{self, NetMode};

/// One container of the task, as its (effective) definition says.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDescription {
    pub name: String,
    pub container_arn: Option<String>,
    pub docker_name: String,
    pub image: String,
    /// CPU units (`cpu`, 0 when unset).
    pub cpu: i64,
    /// Hard memory limit, MiB.
    pub memory: Option<i64>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
}

/// What the task's assignment says, fixed for its life.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDescription {
    pub task_arn: String,
    pub cluster_arn: String,
    pub family: String,
    pub revision: i64,
    /// The task-level limits: CPU units and MiB.
    pub cpu_units: Option<i64>,
    pub memory_mib: Option<i64>,
    /// `awsvpc`, `bridge`, `host` or `none`.
    pub network_mode: String,
    pub network_interface: Option<TaskNetworkInterface>,
    pub availability_zone: Option<String>,
    /// `EC2` or `FARGATE`.
    pub launch_type: String,
    /// The task role (`taskRoleArn`, overrides first), when it has one.
    pub role_arn: Option<String>,
    pub containers: Vec<ContainerDescription>,
}

impl TaskDescription {
    /// From a task's assignment, on a host in `availability_zone` providing `launch_type`.
    pub fn from_assignment(
        a: &TaskAssignment,
        availability_zone: Option<&str>,
        launch_type: &str,
    ) -> TaskDescription {
        let td = &a.task_definition;
        let overrides = a.overrides.as_ref();
        let task_id = spec::task_id(&a.task_arn);
        let revision = td.revision.unwrap_or(0);
        let nonempty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
        let containers = td
            .container_definitions
            .iter()
            .map(|d| spec::effective_definition(d, overrides))
            .filter_map(|d| {
                let name = d.name.clone()?;
                let (log_driver, mut log_options) = match &d.log_configuration {
                    Some(l) => (
                        Some(l.log_driver.clone()),
                        l.options.clone().unwrap_or_default(),
                    ),
                    None => (None, BTreeMap::new()),
                };
                if log_driver.as_deref() == Some("awslogs") {
                    // As ECS's agent shows it: the stream the driver writes to.
                    let (_, stream) = log_destination(td, &name, task_id);
                    log_options.insert("awslogs-stream".into(), stream);
                }
                Some(ContainerDescription {
                    container_arn: a
                        .containers
                        .iter()
                        .find(|c| c.name == name)
                        .map(|c| c.container_arn.clone()),
                    docker_name: spec::container_docker_name(&td.family, revision, &name, task_id),
                    image: d.image.clone().unwrap_or_default(),
                    cpu: d.cpu.map(i64::from).unwrap_or(0),
                    memory: d.memory.map(i64::from).filter(|m| *m > 0),
                    log_driver,
                    log_options,
                    name,
                })
            })
            .collect();
        let network_mode = match NetMode::of(td) {
            NetMode::AwsVpc => "awsvpc",
            NetMode::Bridge => "bridge",
            NetMode::Host => "host",
            NetMode::None => "none",
        };
        TaskDescription {
            task_arn: a.task_arn.clone(),
            cluster_arn: a.cluster_arn.clone(),
            family: td.family.clone(),
            revision,
            cpu_units: nonempty(overrides.and_then(|o| o.cpu.as_ref()))
                .or_else(|| nonempty(td.cpu.as_ref()))
                .and_then(|c| gantry_model::requirements::parse_cpu(&c)),
            memory_mib: nonempty(overrides.and_then(|o| o.memory.as_ref()))
                .or_else(|| nonempty(td.memory.as_ref()))
                .and_then(|m| gantry_model::requirements::parse_memory(&m)),
            network_mode: network_mode.into(),
            network_interface: a
                .network_interface
                .clone()
                .filter(|_| network_mode == "awsvpc"),
            availability_zone: availability_zone.map(str::to_string),
            launch_type: launch_type.into(),
            role_arn: nonempty(overrides.and_then(|o| o.task_role_arn.as_ref()))
                .or_else(|| nonempty(td.task_role_arn.as_ref())),
            containers,
        }
    }

    pub fn container(&self, name: &str) -> Option<&ContainerDescription> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// One container as the runner last reported it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerState {
    pub docker_id: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    pub known_status: String,
    pub exit_code: Option<i32>,
    pub bindings: Vec<NetworkBinding>,
}

/// The task as its runner last reported it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskState {
    pub desired_status: String,
    pub known_status: String,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
    pub containers: HashMap<String, ContainerState>,
}

impl TaskState {
    /// From the runner's latest report and what it wants of the task (RUNNING, or STOPPED
    /// once it stops it).
    pub fn from_report(report: &SubmitTaskStateChange, desired_status: &str) -> TaskState {
        let containers = report
            .containers
            .iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.container_name.clone()?,
                    ContainerState {
                        docker_id: c.runtime_id.clone(),
                        known_status: c.status.clone().unwrap_or_default(),
                        exit_code: c.exit_code,
                        bindings: c.network_bindings.clone().unwrap_or_default(),
                    },
                ))
            })
            .collect();
        TaskState {
            desired_status: desired_status.to_string(),
            known_status: report.status.clone().unwrap_or_default(),
            pull_started_at: report.pull_started_at,
            pull_stopped_at: report.pull_stopped_at,
            execution_stopped_at: report.execution_stopped_at,
            containers,
        }
    }
}

/// What Docker says of a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerFacts {
    pub image_id: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Its IPv4 address on each network, by network name.
    pub addresses: BTreeMap<String, String>,
    /// `healthy`, `unhealthy` or `starting`, when it has a health check.
    pub health: Option<String>,
}

/// Docker's zero time, which it writes for "never".
fn real_time(t: Option<&String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
        .cloned()
}

impl DockerFacts {
    pub fn from_inspect(r: &bollard::models::ContainerInspectResponse) -> DockerFacts {
        let state = r.state.as_ref();
        let running = state.and_then(|s| s.running).unwrap_or(false);
        let created_at = serde_json::to_value(&r.created)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        DockerFacts {
            image_id: r.image.clone(),
            created_at: real_time(created_at.as_ref()),
            started_at: real_time(state.and_then(|s| s.started_at.as_ref())),
            finished_at: if running {
                None
            } else {
                real_time(state.and_then(|s| s.finished_at.as_ref()))
            },
            labels: r
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default()
                .into_iter()
                // Gantry's own bookkeeping labels are not the task's business.
                .filter(|(k, _)| !k.starts_with("dev.gantry."))
                .collect(),
            addresses: r
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .map(|nets| {
                    nets.iter()
                        .filter_map(|(name, ep)| {
                            let ip = ep.ip_address.clone().filter(|ip| !ip.is_empty())?;
                            Some((name.clone(), ip))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            health: state
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
        }
    }
}

/// RFC 3339 with nanoseconds, UTC, for unix seconds `t` (Go's `time.Time` in JSON).
pub fn rfc3339(t: f64) -> Option<String> {
    let nanos = (t * 1e9).round() as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

/// The `Networks` of a container: the task's interface in awsvpc mode, else the container's
/// address on its Docker network.
fn networks(task: &TaskDescription, facts: Option<&DockerFacts>) -> Value {
    if let Some(eni) = &task.network_interface {
        let prefix = eni
            .subnet_cidr
            .split_once('/')
            .map(|(_, p)| p)
            .unwrap_or("24");
        return json!([{
            "NetworkMode": "awsvpc",
            "IPv4Addresses": [eni.private_ipv4_address],
            "AttachmentIndex": 0,
            "MACAddress": eni.mac_address,
            "IPv4SubnetCIDRBlock": eni.subnet_cidr,
            "PrivateDNSName": eni.private_dns_name,
            "SubnetGatewayIpv4Address": format!("{}/{prefix}", eni.gateway),
        }]);
    }
    let mode = match task.network_mode.as_str() {
        // Without an interface an awsvpc task runs on the default bridge.
        "awsvpc" => "bridge",
        m => m,
    };
    let mut n = Map::new();
    n.insert("NetworkMode".into(), json!(mode));
    let addresses: Vec<&String> = facts
        .map(|f| f.addresses.values().collect())
        .unwrap_or_default();
    if !addresses.is_empty() && mode != "host" {
        n.insert("IPv4Addresses".into(), json!(addresses));
    }
    Value::Array(vec![Value::Object(n)])
}

/// `${ECS_CONTAINER_METADATA_URI_V4}`: one container.
pub fn container_document(
    task: &TaskDescription,
    state: &TaskState,
    c: &ContainerDescription,
    facts: Option<&DockerFacts>,
) -> Value {
    let s = state.containers.get(&c.name).cloned().unwrap_or_default();
    let mut m = Map::new();
    m.insert(
        "DockerId".into(),
        json!(s.docker_id.clone().unwrap_or_default()),
    );
    m.insert("Name".into(), json!(c.name));
    m.insert("DockerName".into(), json!(c.docker_name));
    m.insert("Image".into(), json!(c.image));
    m.insert(
        "ImageID".into(),
        json!(facts.and_then(|f| f.image_id.clone()).unwrap_or_default()),
    );
    if !s.bindings.is_empty() {
        let ports: Vec<Value> = s
            .bindings
            .iter()
            .map(|b| {
                let mut p = Map::new();
                put(&mut p, "ContainerPort", b.container_port.map(|x| json!(x)));
                p.insert(
                    "Protocol".into(),
                    json!(b.protocol.clone().unwrap_or_else(|| "tcp".into())),
                );
                put(&mut p, "HostPort", b.host_port.map(|x| json!(x)));
                put(&mut p, "HostIp", b.bind_ip.clone().map(Value::String));
                Value::Object(p)
            })
            .collect();
        m.insert("Ports".into(), Value::Array(ports));
    }
    if let Some(f) = facts.filter(|f| !f.labels.is_empty()) {
        m.insert("Labels".into(), json!(f.labels));
    }
    m.insert("DesiredStatus".into(), json!(state.desired_status));
    m.insert(
        "KnownStatus".into(),
        json!(if s.known_status.is_empty() {
            "PENDING".to_string()
        } else {
            s.known_status.clone()
        }),
    );
    put(&mut m, "ExitCode", s.exit_code.map(|x| json!(x)));
    let mut limits = Map::new();
    limits.insert("CPU".into(), json!(c.cpu));
    put(&mut limits, "Memory", c.memory.map(|x| json!(x)));
    m.insert("Limits".into(), Value::Object(limits));
    if let Some(f) = facts {
        put(&mut m, "CreatedAt", f.created_at.clone().map(Value::String));
        put(&mut m, "StartedAt", f.started_at.clone().map(Value::String));
        put(
            &mut m,
            "FinishedAt",
            f.finished_at.clone().map(Value::String),
        );
        if let Some(h) = &f.health {
            m.insert("Health".into(), json!({"status": h.to_ascii_uppercase()}));
        }
    }
    m.insert("Type".into(), json!("NORMAL"));
    if let Some(driver) = &c.log_driver {
        m.insert("LogDriver".into(), json!(driver));
        m.insert("LogOptions".into(), json!(c.log_options));
    }
    put(
        &mut m,
        "ContainerARN",
        c.container_arn.clone().map(Value::String),
    );
    m.insert("Networks".into(), networks(task, facts));
    Value::Object(m)
}

/// `${ECS_CONTAINER_METADATA_URI_V4}/task`: the task and every container.
pub fn task_document(
    task: &TaskDescription,
    state: &TaskState,
    facts: &HashMap<String, DockerFacts>,
) -> Value {
    let mut m = Map::new();
    m.insert("Cluster".into(), json!(task.cluster_arn));
    m.insert("TaskARN".into(), json!(task.task_arn));
    m.insert("Family".into(), json!(task.family));
    m.insert("Revision".into(), json!(task.revision.to_string()));
    m.insert("DesiredStatus".into(), json!(state.desired_status));
    m.insert(
        "KnownStatus".into(),
        json!(if state.known_status.is_empty() {
            "PENDING"
        } else {
            state.known_status.as_str()
        }),
    );
    if task.cpu_units.is_some() || task.memory_mib.is_some() {
        let mut limits = Map::new();
        // Task-level CPU in vCPUs, as ECS shows it (256 units → 0.25).
        put(
            &mut limits,
            "CPU",
            task.cpu_units.map(|u| json!(u as f64 / 1024.0)),
        );
        put(&mut limits, "Memory", task.memory_mib.map(|x| json!(x)));
        m.insert("Limits".into(), Value::Object(limits));
    }
    put(
        &mut m,
        "PullStartedAt",
        state.pull_started_at.and_then(rfc3339).map(Value::String),
    );
    put(
        &mut m,
        "PullStoppedAt",
        state.pull_stopped_at.and_then(rfc3339).map(Value::String),
    );
    put(
        &mut m,
        "ExecutionStoppedAt",
        state
            .execution_stopped_at
            .and_then(rfc3339)
            .map(Value::String),
    );
    put(
        &mut m,
        "AvailabilityZone",
        task.availability_zone.clone().map(Value::String),
    );
    m.insert("LaunchType".into(), json!(task.launch_type));
    let containers: Vec<Value> = task
        .containers
        .iter()
        .map(|c| container_document(task, state, c, facts.get(&c.name)))
        .collect();
    m.insert("Containers".into(), Value::Array(containers));
    Value::Object(m)
}

/// A container's stats as the ECS agent serves them: Docker's sample, with `precpu_stats`
/// and `preread` from an earlier sample (`previous`) so that a sidecar can compute CPU use
/// from one answer, and `network_rate_stats` (`rx_bytes_per_sec`, `tx_bytes_per_sec` over
/// every interface, over the time between the two samples' `read`) when both have
/// `networks`. Served as Docker gave it without an earlier sample, or when `previous` is not
/// older; Docker's own `precpu_stats` are kept when the CPU counter went back (the
/// container restarted), so that no consumer computes a negative use.
pub fn with_previous_sample(mut current: Value, previous: Option<&Value>) -> Value {
    let Some(previous) = previous else {
        return current;
    };
    let elapsed_secs = match (sample_time(&current), sample_time(previous)) {
        (Some(now), Some(before)) if now > before => now - before,
        _ => return current,
    };
    let total = |sample: &Value, counter: &str| -> Option<f64> {
        let networks = sample.get("networks")?.as_object()?;
        Some(
            networks
                .values()
                .filter_map(|n| n.get(counter).and_then(Value::as_f64))
                .sum(),
        )
    };
    let rate = |counter: &str| -> Option<f64> {
        let delta = total(&current, counter)? - total(previous, counter)?;
        // Counters restart with the container's network namespace: no negative rates.
        Some((delta / elapsed_secs).max(0.0))
    };
    let rates = rate("rx_bytes").zip(rate("tx_bytes"));
    let cpu_total = |sample: &Value| {
        sample
            .pointer("/cpu_stats/cpu_usage/total_usage")
            .and_then(Value::as_u64)
    };
    let cpu_went_back = matches!(
        (cpu_total(&current), cpu_total(previous)),
        (Some(now), Some(before)) if now < before
    );
    let Some(out) = current.as_object_mut() else {
        return current;
    };
    if !cpu_went_back {
        if let (Some(cpu), Some(read)) = (previous.get("cpu_stats"), previous.get("read")) {
            out.insert("precpu_stats".into(), cpu.clone());
            out.insert("preread".into(), read.clone());
        }
    }
    if let Some((rx, tx)) = rates {
        out.insert(
            "network_rate_stats".into(),
            json!({"rx_bytes_per_sec": rx, "tx_bytes_per_sec": tx}),
        );
    }
    current
}

/// When Docker took a stats sample (its `read`, RFC 3339 in UTC with up to nanoseconds), in
/// seconds since the epoch; `None` for Docker's zero time or anything else.
pub fn sample_time(sample: &Value) -> Option<f64> {
    let read = sample.get("read")?.as_str()?;
    let (date, clock) = read.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(str::parse::<i32>);
    let (year, month, day) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':').map(str::parse::<u8>);
    let (hour, minute, second) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    let nanos: u32 = if fraction.is_empty() {
        0
    } else if fraction.len() <= 9 && fraction.bytes().all(|b| b.is_ascii_digit()) {
        format!("{fraction:0<9}").parse().ok()?
    } else {
        return None;
    };
    let date = time::Date::from_calendar_date(
        year,
        time::Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    if year < 1970 {
        return None;
    }
    let at = time::PrimitiveDateTime::new(date, clock).assume_utc();
    Some(at.unix_timestamp() as f64 + f64::from(at.nanosecond()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::agent_protocol::{AssignedContainer, ContainerStateChange};
    use gantry_model::types::{
        ContainerDefinition, LogConfiguration, TaskDefinition, TaskOverride,
    };

    const TASK: &str =
        "arn:aws:ecs:us-east-1:000000000000:task/prod/8f03e41243824aea923aca126495f665";

    fn assignment(network_mode: &str) -> TaskAssignment {
        TaskAssignment {
            task_arn: TASK.into(),
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/prod".into(),
            desired_status: "RUNNING".into(),
            version: 1,
            task_definition: TaskDefinition {
                family: "web".into(),
                revision: Some(24),
                cpu: Some("512".into()),
                memory: Some("1024".into()),
                network_mode: Some(network_mode.into()),
                task_role_arn: Some("arn:aws:iam::000000000000:role/from-definition".into()),
                container_definitions: vec![
                    ContainerDefinition {
                        name: Some("app".into()),
                        image: Some("nginx:1.25".into()),
                        cpu: Some(10),
                        memory: Some(128),
                        log_configuration: Some(LogConfiguration {
                            log_driver: "awslogs".into(),
                            options: Some(BTreeMap::from([
                                ("awslogs-group".to_string(), "/ecs/web".to_string()),
                                ("awslogs-stream-prefix".to_string(), "ecs".to_string()),
                            ])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ContainerDefinition {
                        name: Some("sidecar".into()),
                        image: Some("busybox".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            overrides: Some(TaskOverride {
                task_role_arn: Some("arn:aws:iam::000000000000:role/override".into()),
                ..Default::default()
            }),
            containers: vec![AssignedContainer {
                name: "app".into(),
                container_arn: "arn:aws:ecs:us-east-1:000000000000:container/prod/8f03/1".into(),
            }],
            network_interface: Some(TaskNetworkInterface {
                attachment_id: "a".into(),
                subnet_id: "subnet-1".into(),
                subnet_cidr: "10.213.0.0/24".into(),
                gateway: "10.213.0.1".into(),
                private_ipv4_address: "10.213.0.5".into(),
                mac_address: "02:42:0a:d5:00:05".into(),
                private_dns_name: "ip-10-213-0-5.us-east-1.compute.internal".into(),
                security_groups: Vec::new(),
            }),
        }
    }

    fn state() -> TaskState {
        TaskState::from_report(
            &SubmitTaskStateChange {
                status: Some("RUNNING".into()),
                pull_started_at: Some(1_601_597_707.5),
                pull_stopped_at: Some(1_601_597_708.0),
                containers: Some(vec![
                    ContainerStateChange {
                        container_name: Some("app".into()),
                        runtime_id: Some("ea32192c8553".into()),
                        status: Some("RUNNING".into()),
                        network_bindings: Some(vec![NetworkBinding {
                            bind_ip: Some("0.0.0.0".into()),
                            container_port: Some(80),
                            host_port: Some(49153),
                            protocol: Some("tcp".into()),
                        }]),
                        ..Default::default()
                    },
                    ContainerStateChange {
                        container_name: Some("sidecar".into()),
                        runtime_id: Some("ff00".into()),
                        status: Some("STOPPED".into()),
                        exit_code: Some(0),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            "RUNNING",
        )
    }

    fn facts() -> DockerFacts {
        DockerFacts {
            image_id: Some("sha256:d691691e".into()),
            created_at: Some("2020-10-02T00:15:07.620912337Z".into()),
            started_at: Some("2020-10-02T00:15:08.062559351Z".into()),
            finished_at: None,
            labels: BTreeMap::from([("com.amazonaws.ecs.task-arn".to_string(), TASK.to_string())]),
            addresses: BTreeMap::from([("bridge".to_string(), "172.17.0.3".to_string())]),
            health: None,
        }
    }

    #[test]
    fn the_description_follows_the_assignment_and_its_overrides() {
        let d = TaskDescription::from_assignment(&assignment("awsvpc"), Some("us-east-1a"), "EC2");
        assert_eq!(
            d.role_arn.as_deref(),
            Some("arn:aws:iam::000000000000:role/override")
        );
        assert_eq!((d.cpu_units, d.memory_mib), (Some(512), Some(1024)));
        assert_eq!(d.containers.len(), 2);
        let app = d.container("app").expect("app");
        assert_eq!(app.docker_name, "ecs-web-24-app-8f03e4124382");
        assert_eq!(
            app.log_options.get("awslogs-stream").map(String::as_str),
            Some("ecs/app/8f03e41243824aea923aca126495f665")
        );
        assert_eq!(
            d.container("sidecar").and_then(|c| c.container_arn.clone()),
            None
        );
        let bridge = TaskDescription::from_assignment(&assignment("bridge"), None, "EC2");
        assert!(bridge.network_interface.is_none());
    }

    #[test]
    fn the_container_document_has_the_documented_shape() {
        let d = TaskDescription::from_assignment(&assignment("bridge"), Some("us-east-1a"), "EC2");
        let app = d.container("app").expect("app");
        let v = container_document(&d, &state(), app, Some(&facts()));
        assert_eq!(v["DockerId"], "ea32192c8553");
        assert_eq!(v["Name"], "app");
        assert_eq!(v["DockerName"], "ecs-web-24-app-8f03e4124382");
        assert_eq!(v["Image"], "nginx:1.25");
        assert_eq!(v["ImageID"], "sha256:d691691e");
        assert_eq!(v["Labels"]["com.amazonaws.ecs.task-arn"], TASK);
        assert_eq!(v["DesiredStatus"], "RUNNING");
        assert_eq!(v["KnownStatus"], "RUNNING");
        assert_eq!(v["Limits"], json!({"CPU": 10, "Memory": 128}));
        assert_eq!(v["CreatedAt"], "2020-10-02T00:15:07.620912337Z");
        assert_eq!(v["StartedAt"], "2020-10-02T00:15:08.062559351Z");
        assert!(v.get("FinishedAt").is_none());
        assert!(v.get("ExitCode").is_none());
        assert_eq!(v["Type"], "NORMAL");
        assert_eq!(v["LogDriver"], "awslogs");
        assert_eq!(v["LogOptions"]["awslogs-group"], "/ecs/web");
        assert_eq!(
            v["ContainerARN"],
            "arn:aws:ecs:us-east-1:000000000000:container/prod/8f03/1"
        );
        assert_eq!(
            v["Ports"],
            json!([{"ContainerPort": 80, "Protocol": "tcp", "HostPort": 49153, "HostIp": "0.0.0.0"}])
        );
        assert_eq!(
            v["Networks"],
            json!([{"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.3"]}])
        );
        let sidecar = d.container("sidecar").expect("sidecar");
        let v = container_document(&d, &state(), sidecar, None);
        assert_eq!(v["KnownStatus"], "STOPPED");
        assert_eq!(v["ExitCode"], 0);
        assert_eq!(v["Limits"], json!({"CPU": 0}));
        assert!(v.get("LogDriver").is_none() && v.get("Labels").is_none());
    }

    #[test]
    fn awsvpc_containers_show_the_task_interface() {
        let d = TaskDescription::from_assignment(&assignment("awsvpc"), None, "FARGATE");
        let v = container_document(&d, &state(), &d.containers[0], Some(&facts()));
        assert_eq!(
            v["Networks"],
            json!([{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": ["10.213.0.5"],
                "AttachmentIndex": 0,
                "MACAddress": "02:42:0a:d5:00:05",
                "IPv4SubnetCIDRBlock": "10.213.0.0/24",
                "PrivateDNSName": "ip-10-213-0-5.us-east-1.compute.internal",
                "SubnetGatewayIpv4Address": "10.213.0.1/24",
            }])
        );
    }

    #[test]
    fn the_task_document_has_the_documented_shape() {
        let d = TaskDescription::from_assignment(&assignment("bridge"), Some("us-east-1a"), "EC2");
        let facts = HashMap::from([("app".to_string(), facts())]);
        let v = task_document(&d, &state(), &facts);
        assert_eq!(
            v["Cluster"],
            "arn:aws:ecs:us-east-1:000000000000:cluster/prod"
        );
        assert_eq!(v["TaskARN"], TASK);
        assert_eq!(v["Family"], "web");
        assert_eq!(v["Revision"], "24");
        assert_eq!(v["DesiredStatus"], "RUNNING");
        assert_eq!(v["KnownStatus"], "RUNNING");
        assert_eq!(v["Limits"], json!({"CPU": 0.5, "Memory": 1024}));
        assert_eq!(v["PullStartedAt"], "2020-10-02T00:15:07.5Z");
        assert_eq!(v["PullStoppedAt"], "2020-10-02T00:15:08Z");
        assert_eq!(v["AvailabilityZone"], "us-east-1a");
        assert_eq!(v["LaunchType"], "EC2");
        let names: Vec<&str> = v["Containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["Name"].as_str())
            .collect();
        assert_eq!(names, ["app", "sidecar"]);
        assert_eq!(v["Containers"][0]["ImageID"], "sha256:d691691e");
    }

    #[test]
    fn docker_facts_leave_out_gantrys_labels_and_zero_times() {
        let r: bollard::models::ContainerInspectResponse = serde_json::from_value(json!({
            "Id": "abc",
            "Created": "2020-10-02T00:15:07.620912337Z",
            "Image": "sha256:d691691e",
            "State": {"Running": false, "StartedAt": "2020-10-02T00:15:08Z", "FinishedAt": "0001-01-01T00:00:00Z"},
            "Config": {"Labels": {"dev.gantry.container-instance-arn": "x", "com.amazonaws.ecs.container-name": "app"}},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.9"}, "none": {"IPAddress": ""}}}
        }))
        .expect("inspect");
        let f = DockerFacts::from_inspect(&r);
        assert_eq!(f.image_id.as_deref(), Some("sha256:d691691e"));
        assert_eq!(
            f.created_at.as_deref(),
            Some("2020-10-02T00:15:07.620912337Z")
        );
        assert_eq!(f.finished_at, None);
        assert_eq!(
            f.labels.keys().collect::<Vec<_>>(),
            ["com.amazonaws.ecs.container-name"]
        );
        assert_eq!(
            f.addresses,
            BTreeMap::from([("bridge".to_string(), "172.17.0.9".to_string())])
        );
    }

    #[test]
    fn stats_carry_the_previous_sample_and_network_rates() {
        let first = json!({"read": "2026-11-30T15:04:05.5Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 100}},
            "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 500},
                         "eth1": {"rx_bytes": 0, "tx_bytes": 0}}});
        let second = json!({"read": "2026-11-30T15:04:07.500000000Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 300}},
            "precpu_stats": {}, "networks": {"eth0": {"rx_bytes": 3000, "tx_bytes": 1500},
                         "eth1": {"rx_bytes": 1000, "tx_bytes": 0}}});
        // The first answer is Docker's sample as it is.
        assert_eq!(with_previous_sample(first.clone(), None), first);
        let served = with_previous_sample(second.clone(), Some(&first));
        assert_eq!(served["precpu_stats"], first["cpu_stats"]);
        assert_eq!(served["preread"], first["read"]);
        assert_eq!(served["cpu_stats"]["cpu_usage"]["total_usage"], 300);
        // 2,000 + 1,000 bytes received and 1,000 sent over the 2 s between the reads.
        assert_eq!(
            served["network_rate_stats"],
            json!({"rx_bytes_per_sec": 1500.0, "tx_bytes_per_sec": 500.0})
        );
        // An earlier sample that is not older changes nothing.
        assert_eq!(with_previous_sample(first.clone(), Some(&second)), first);
        // Host mode: no networks, no rates.
        let host = with_previous_sample(
            json!({"read": "2026-11-30T15:04:06Z", "cpu_stats": {}}),
            Some(&first),
        );
        assert!(host.get("network_rate_stats").is_none(), "{host}");
        // A restarted container: counters went back; no negative rates, Docker's own CPU.
        let restarted = with_previous_sample(
            json!({"read": "2026-11-30T15:04:06.5Z",
                   "cpu_stats": {"cpu_usage": {"total_usage": 5}}, "precpu_stats": {"x": 1},
                   "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 10}}}),
            Some(&first),
        );
        assert_eq!(
            restarted["network_rate_stats"],
            json!({"rx_bytes_per_sec": 0.0, "tx_bytes_per_sec": 0.0})
        );
        assert_eq!(restarted["precpu_stats"], json!({"x": 1}));
    }

    #[test]
    fn docker_read_times_parse_to_epoch_seconds() {
        let at = |read: &str| sample_time(&json!({ "read": read }));
        assert_eq!(at("1970-01-01T00:00:01Z"), Some(1.0));
        assert_eq!(at("2026-11-30T15:04:05.25Z"), Some(1_796_051_045.25));
        let nanos = at("2026-11-30T15:04:05.123456789Z").expect("nanoseconds");
        assert!((nanos - 1_796_051_045.123_456_8).abs() < 1e-6, "{nanos}");
        for not_a_time in [
            "0001-01-01T00:00:00Z",
            "2026-11-30 15:04:05",
            "2026-13-01T00:00:00Z",
            "2026-11-30T15:04:05.1234567890Z",
            "",
        ] {
            assert_eq!(at(not_a_time), None, "{not_a_time}");
        }
    }
}
