//! Pure translation of an ECS task definition into Docker objects: container names, the
//! `ContainerCreateBody` for each container, the task's volumes, and the network bindings read
//! back from an inspected container. No I/O here, so all of it is unit-tested.

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, PortBinding, PortMap,
    ResourcesUlimits,
};
use gantry_model::agent_protocol::labels;
use gantry_model::types::{
    ContainerDefinition, ContainerOverride, KeyValuePair, NetworkBinding, TaskDefinition,
    TaskOverride,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

use crate::util::sanitize_docker_name;

/// Label put on task-scoped Docker volumes (value: the task ARN), so cleanup can find them.
pub const VOLUME_TASK_LABEL: &str = labels::TASK_ARN;

/// ECS's default `stopTimeout`, seconds.
pub const DEFAULT_STOP_TIMEOUT_SECS: i64 = 30;
/// Docker's minimum CPU shares (the ECS agent uses it for containers without `cpu`).
pub const MIN_CPU_SHARES: i64 = 2;

const MIB: i64 = 1024 * 1024;
const SEC_NS: i64 = 1_000_000_000;

/// The task id: the last `/` segment of the task ARN.
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// `ecs-<family>-<revision>-<container>-<first 12 chars of task id>`, sanitized for Docker.
pub fn container_docker_name(
    family: &str,
    revision: i64,
    container: &str,
    task_id: &str,
) -> String {
    let short: String = task_id.chars().take(12).collect();
    sanitize_docker_name(&format!("ecs-{family}-{revision}-{container}-{short}"))
}

/// The Docker name of a task-scoped volume: `ecs-<family>-<revision>-<volume>-<task id>`.
pub fn task_volume_name(family: &str, revision: i64, volume: &str, task_id: &str) -> String {
    sanitize_docker_name(&format!("ecs-{family}-{revision}-{volume}-{task_id}"))
}

/// Docker network mode for a task definition. An `awsvpc` task whose assignment carries a
/// network interface gets its own network namespace on the subnet's Docker network
/// ([`crate::awsvpc`]: [`crate::awsvpc::own_task_namespace`] or, for the containers joining a
/// pause container, [`crate::awsvpc::join_task_namespace`] rewrites what this module builds).
/// Without one it runs in bridge mode with each container port published on the same host
/// port (what awsvpc clients expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    Bridge,
    Host,
    None,
    AwsVpc,
}

impl NetMode {
    pub fn of(td: &TaskDefinition) -> NetMode {
        match td.network_mode.as_deref() {
            Some("host") => NetMode::Host,
            Some("none") => NetMode::None,
            Some("awsvpc") => NetMode::AwsVpc,
            _ => NetMode::Bridge,
        }
    }
    pub fn docker(self) -> &'static str {
        match self {
            NetMode::Bridge | NetMode::AwsVpc => "bridge",
            NetMode::Host => "host",
            NetMode::None => "none",
        }
    }
}

/// Where a task definition volume comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeSource {
    /// `host.sourcePath`: a bind mount.
    Bind { host_path: String },
    /// A named Docker volume.
    Docker {
        docker_name: String,
        /// Task-scoped volumes are created for the task and removed with it.
        task_scoped: bool,
        /// Shared volumes: create if missing.
        autoprovision: bool,
        driver: Option<String>,
        driver_opts: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedVolume {
    /// The task definition's volume name, as mount points refer to it.
    pub name: String,
    pub source: VolumeSource,
}

/// The Docker side of every volume in the task definition.
pub fn plan_volumes(td: &TaskDefinition, task_id: &str) -> Vec<PlannedVolume> {
    let revision = td.revision.unwrap_or(0);
    let mut out = Vec::new();
    for v in td.volumes.iter().flatten() {
        let Some(name) = v.name.clone() else { continue };
        let host_path = v
            .host
            .as_ref()
            .and_then(|h| h.source_path.clone())
            .filter(|p| !p.is_empty());
        let source = if let Some(host_path) = host_path {
            VolumeSource::Bind { host_path }
        } else if let Some(dvc) = &v.docker_volume_configuration {
            let shared = dvc.scope.as_deref() == Some("shared");
            VolumeSource::Docker {
                docker_name: if shared {
                    name.clone()
                } else {
                    task_volume_name(&td.family, revision, &name, task_id)
                },
                task_scoped: !shared,
                autoprovision: dvc.autoprovision.unwrap_or(false),
                driver: dvc.driver.clone(),
                driver_opts: dvc.driver_opts.clone().unwrap_or_default(),
                labels: dvc.labels.clone().unwrap_or_default(),
            }
        } else {
            // No host path and no Docker configuration: an empty volume Docker manages,
            // shared by the task's containers and removed with the task.
            VolumeSource::Docker {
                docker_name: task_volume_name(&td.family, revision, &name, task_id),
                task_scoped: true,
                autoprovision: false,
                driver: None,
                driver_opts: BTreeMap::new(),
                labels: BTreeMap::new(),
            }
        };
        out.push(PlannedVolume { name, source });
    }
    out
}

/// The container override for `name`, if any.
pub fn container_override<'a>(
    overrides: Option<&'a TaskOverride>,
    name: &str,
) -> Option<&'a ContainerOverride> {
    overrides
        .and_then(|o| o.container_overrides.as_ref())
        .and_then(|cos| cos.iter().find(|co| co.name.as_deref() == Some(name)))
}

/// A container definition with its overrides applied: `command` replaces, `environment` entries
/// replace same-named ones and add new ones, `cpu`/`memory`/`memoryReservation` replace.
pub fn effective_definition(
    def: &ContainerDefinition,
    overrides: Option<&TaskOverride>,
) -> ContainerDefinition {
    let mut d = def.clone();
    let Some(co) = def
        .name
        .as_deref()
        .and_then(|n| container_override(overrides, n))
    else {
        return d;
    };
    if let Some(cmd) = &co.command {
        d.command = Some(cmd.clone());
    }
    if let Some(env) = &co.environment {
        let mut merged: Vec<KeyValuePair> = d.environment.take().unwrap_or_default();
        for kv in env {
            match merged.iter_mut().find(|e| e.name == kv.name) {
                Some(e) => e.value = kv.value.clone(),
                None => merged.push(kv.clone()),
            }
        }
        d.environment = Some(merged);
    }
    if co.cpu.is_some() {
        d.cpu = co.cpu;
    }
    if co.memory.is_some() {
        d.memory = co.memory;
    }
    if co.memory_reservation.is_some() {
        d.memory_reservation = co.memory_reservation;
    }
    d
}

/// Everything about the task that building one container's create body needs.
#[derive(Debug, Clone)]
pub struct TaskContext<'a> {
    pub task_arn: &'a str,
    pub cluster_arn: &'a str,
    pub instance_arn: &'a str,
    pub task_definition: &'a TaskDefinition,
    pub overrides: Option<&'a TaskOverride>,
    pub volumes: &'a [PlannedVolume],
}

impl TaskContext<'_> {
    pub fn task_id(&self) -> &str {
        task_id(self.task_arn)
    }
    pub fn revision(&self) -> i64 {
        self.task_definition.revision.unwrap_or(0)
    }
    pub fn docker_name(&self, container: &str) -> String {
        container_docker_name(
            &self.task_definition.family,
            self.revision(),
            container,
            self.task_id(),
        )
    }
}

/// What `docker create` gets for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    pub name: String,
    pub body: ContainerCreateBody,
}

/// The labels Gantry puts on a container.
pub fn container_labels(
    ctx: &TaskContext<'_>,
    def: &ContainerDefinition,
) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = def
        .docker_labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let name = def.name.clone().unwrap_or_default();
    l.insert(labels::TASK_ARN.into(), ctx.task_arn.into());
    l.insert(labels::CONTAINER_NAME.into(), name);
    l.insert(labels::CLUSTER.into(), ctx.cluster_arn.into());
    l.insert(
        labels::TASK_FAMILY.into(),
        ctx.task_definition.family.clone(),
    );
    l.insert(labels::TASK_REVISION.into(), ctx.revision().to_string());
    l.insert(labels::INSTANCE_ARN.into(), ctx.instance_arn.into());
    l
}

/// Variables the agent adds to a container's environment besides its definition's
/// `environment` (and the overrides'), replacing same-named ones: the task endpoints' URIs
/// ([`crate::task_endpoints`]), and whatever else the agent resolves for a container when it
/// starts. Each feature sets its own variables here. Values may be secret: `Debug` prints the
/// names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InjectedEnvironment {
    vars: Vec<(String, String)>,
}

impl InjectedEnvironment {
    /// Sets `name` (replacing an earlier value of the same name).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    /// Everything `other` sets, set here too.
    pub fn merge(&mut self, other: InjectedEnvironment) {
        for (n, v) in other.vars {
            self.set(n, v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for InjectedEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.vars.iter().map(|(n, _)| n))
            .finish()
    }
}

/// The `docker create` request for `def` (already with overrides applied, see
/// [`effective_definition`]). Errors are reasons fit for `CannotCreateContainerError: …`.
pub fn build_create_spec(
    ctx: &TaskContext<'_>,
    def: &ContainerDefinition,
) -> Result<CreateSpec, String> {
    build_create_spec_with(ctx, def, &InjectedEnvironment::default())
}

/// [`build_create_spec`] with the variables the agent adds to the container's environment.
pub fn build_create_spec_with(
    ctx: &TaskContext<'_>,
    def: &ContainerDefinition,
    injected: &InjectedEnvironment,
) -> Result<CreateSpec, String> {
    let td = ctx.task_definition;
    let cname = def
        .name
        .clone()
        .ok_or_else(|| "container definition has no name".to_string())?;
    let image = def
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("container {cname} has no image"))?;
    let mode = NetMode::of(td);

    let mut env: Vec<String> = def
        .environment
        .iter()
        .flatten()
        .filter(|kv| !injected.iter().any(|(n, _)| Some(n) == kv.name.as_deref()))
        .filter_map(|kv| {
            kv.name
                .as_ref()
                .map(|n| format!("{n}={}", kv.value.as_deref().unwrap_or("")))
        })
        .collect();
    env.extend(injected.iter().map(|(n, v)| format!("{n}={v}")));

    // Resources.
    let cpu_shares = def
        .cpu
        .map(i64::from)
        .filter(|c| *c >= MIN_CPU_SHARES)
        .unwrap_or(MIN_CPU_SHARES);
    let task_memory = td
        .memory
        .as_deref()
        .and_then(gantry_model::requirements::parse_memory)
        .filter(|m| *m > 0);
    // A task-level limit bounds the only container directly; with several containers it
    // cannot be split, so it is left to the scheduler's accounting.
    let memory_mib = def
        .memory
        .map(i64::from)
        .filter(|m| *m > 0)
        .or(task_memory.filter(|_| td.container_definitions.len() == 1));
    let reservation_mib = def.memory_reservation.map(i64::from).filter(|m| *m > 0);

    // Ports.
    let mut exposed = Vec::new();
    let mut port_bindings: PortMap = HashMap::new();
    for pm in def.port_mappings.iter().flatten() {
        let Some(cport) = pm.container_port.filter(|p| *p > 0) else {
            continue;
        };
        let proto = protocol_of(pm.protocol.as_deref());
        let key = format!("{cport}/{proto}");
        exposed.push(key.clone());
        let host_port = match mode {
            NetMode::Bridge => pm
                .host_port
                .filter(|p| *p > 0)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            NetMode::AwsVpc => pm.host_port.filter(|p| *p > 0).unwrap_or(cport).to_string(),
            NetMode::Host | NetMode::None => continue,
        };
        port_bindings
            .entry(key)
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                host_port: Some(host_port),
            });
    }

    // Volumes and mount points.
    let mut binds = Vec::new();
    for mp in def.mount_points.iter().flatten() {
        let (Some(src), Some(path)) = (&mp.source_volume, &mp.container_path) else {
            return Err(format!(
                "container {cname}: mount point needs sourceVolume and containerPath"
            ));
        };
        let vol = ctx.volumes.iter().find(|v| &v.name == src).ok_or_else(|| {
            format!("container {cname}: mount point refers to unknown volume {src}")
        })?;
        let source = match &vol.source {
            VolumeSource::Bind { host_path } => host_path.clone(),
            VolumeSource::Docker { docker_name, .. } => docker_name.clone(),
        };
        let ro = if mp.read_only.unwrap_or(false) {
            ":ro"
        } else {
            ""
        };
        binds.push(format!("{source}:{path}{ro}"));
    }
    let volumes_from: Vec<String> = def
        .volumes_from
        .iter()
        .flatten()
        .filter_map(|vf| {
            vf.source_container.as_ref().map(|s| {
                let ro = if vf.read_only.unwrap_or(false) {
                    ":ro"
                } else {
                    ":rw"
                };
                format!("{}{ro}", ctx.docker_name(s))
            })
        })
        .collect();
    let links: Vec<String> = if matches!(mode, NetMode::Bridge) {
        def.links
            .iter()
            .flatten()
            .map(|l| {
                let (target, alias) = l.split_once(':').unwrap_or((l.as_str(), l.as_str()));
                format!("{}:{alias}", ctx.docker_name(target))
            })
            .collect()
    } else {
        Vec::new()
    };

    let healthcheck = def.health_check.as_ref().map(|hc| HealthConfig {
        test: Some(hc.command.clone()),
        interval: Some(i64::from(hc.interval.unwrap_or(30)) * SEC_NS),
        timeout: Some(i64::from(hc.timeout.unwrap_or(5)) * SEC_NS),
        retries: Some(i64::from(hc.retries.unwrap_or(3))),
        start_period: Some(i64::from(hc.start_period.unwrap_or(0)) * SEC_NS),
        start_interval: None,
    });

    let stop_timeout = stop_timeout_secs(def);

    let extra = |k: &str| def.extra.get(k);
    let extra_hosts: Vec<String> = extra("extraHosts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|h| {
                    Some(format!(
                        "{}:{}",
                        h.get("hostname")?.as_str()?,
                        h.get("ipAddress")?.as_str()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let ulimits: Vec<ResourcesUlimits> = extra("ulimits")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|u| {
                    Some(ResourcesUlimits {
                        name: Some(u.get("name")?.as_str()?.to_string()),
                        soft: u.get("softLimit").and_then(Value::as_i64),
                        hard: u.get("hardLimit").and_then(Value::as_i64),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let strings = |k: &str| -> Option<Vec<String>> {
        extra(k).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    let linux = extra("linuxParameters");
    let caps = |k: &str| -> Option<Vec<String>> {
        linux
            .and_then(|l| l.get("capabilities"))
            .and_then(|c| c.get(k))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
    };
    let tmpfs: HashMap<String, String> = linux
        .and_then(|l| l.get("tmpfs"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    let path = t.get("containerPath")?.as_str()?.to_string();
                    let mut opts = Vec::new();
                    if let Some(size) = t.get("size").and_then(Value::as_i64) {
                        opts.push(format!("size={size}m"));
                    }
                    for o in t
                        .get("mountOptions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(o) = o.as_str() {
                            opts.push(o.to_string());
                        }
                    }
                    Some((path, opts.join(",")))
                })
                .collect()
        })
        .unwrap_or_default();
    let sysctls: HashMap<String, String> = extra("systemControls")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some((
                        s.get("namespace")?.as_str()?.to_string(),
                        s.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let host_level = |v: Option<&String>| v.filter(|m| m.as_str() == "host").cloned();

    let host_config = HostConfig {
        cpu_shares: Some(cpu_shares),
        memory: memory_mib.map(|m| m * MIB),
        memory_reservation: reservation_mib.map(|m| m * MIB),
        network_mode: Some(mode.docker().to_string()),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        binds: (!binds.is_empty()).then_some(binds),
        volumes_from: (!volumes_from.is_empty()).then_some(volumes_from),
        links: (!links.is_empty()).then_some(links),
        privileged: def.privileged.filter(|p| *p),
        readonly_rootfs: def.readonly_root_filesystem.filter(|r| *r),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        dns: strings("dnsServers").filter(|v| !v.is_empty()),
        dns_search: strings("dnsSearchDomains").filter(|v| !v.is_empty()),
        security_opt: strings("dockerSecurityOptions").filter(|v| !v.is_empty()),
        cap_add: caps("add").filter(|v| !v.is_empty()),
        cap_drop: caps("drop").filter(|v| !v.is_empty()),
        init: linux
            .and_then(|l| l.get("initProcessEnabled"))
            .and_then(Value::as_bool)
            .filter(|b| *b),
        shm_size: linux
            .and_then(|l| l.get("sharedMemorySize"))
            .and_then(Value::as_i64)
            .map(|m| m * MIB),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        sysctls: (!sysctls.is_empty()).then_some(sysctls),
        pid_mode: host_level(td.pid_mode.as_ref()),
        ipc_mode: host_level(td.ipc_mode.as_ref()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "3".to_string()),
            ])),
        }),
        ..Default::default()
    };

    let hostname = match mode {
        NetMode::Bridge | NetMode::AwsVpc | NetMode::None => def.hostname.clone(),
        NetMode::Host => None,
    };

    let body = ContainerCreateBody {
        image: Some(image),
        hostname,
        user: def.user.clone(),
        working_dir: def.working_directory.clone(),
        env: (!env.is_empty()).then_some(env),
        cmd: def.command.clone().filter(|c| !c.is_empty()),
        entrypoint: def.entry_point.clone().filter(|c| !c.is_empty()),
        labels: Some(container_labels(ctx, def)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_timeout: Some(stop_timeout),
        tty: extra("pseudoTerminal")
            .and_then(Value::as_bool)
            .filter(|b| *b),
        open_stdin: extra("interactive").and_then(Value::as_bool).filter(|b| *b),
        host_config: Some(host_config),
        ..Default::default()
    };
    Ok(CreateSpec {
        name: ctx.docker_name(&cname),
        body,
    })
}

/// `stopTimeout` in seconds (ECS default 30).
pub fn stop_timeout_secs(def: &ContainerDefinition) -> i64 {
    def.stop_timeout
        .map(i64::from)
        .filter(|t| *t >= 0)
        .unwrap_or(DEFAULT_STOP_TIMEOUT_SECS)
}

fn protocol_of(p: Option<&str>) -> &'static str {
    match p {
        Some(p) if p.eq_ignore_ascii_case("udp") => "udp",
        _ => "tcp",
    }
}

/// The network bindings of a started container: in bridge mode what Docker actually bound
/// (`NetworkSettings.Ports`, IPv4 preferred over the duplicate IPv6 entry), in host mode each
/// port mapping's container port on the same host port.
pub fn network_bindings(
    mode: NetMode,
    def: Option<&ContainerDefinition>,
    ports: Option<&PortMap>,
) -> Vec<NetworkBinding> {
    let mut out: Vec<NetworkBinding> = Vec::new();
    if mode == NetMode::Host {
        for pm in def
            .and_then(|d| d.port_mappings.as_ref())
            .into_iter()
            .flatten()
        {
            let Some(cport) = pm.container_port.filter(|p| *p > 0) else {
                continue;
            };
            out.push(NetworkBinding {
                bind_ip: Some("0.0.0.0".into()),
                container_port: Some(cport),
                host_port: Some(cport),
                protocol: Some(protocol_of(pm.protocol.as_deref()).into()),
            });
        }
        return out;
    }
    let Some(ports) = ports else { return out };
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort();
    for key in keys {
        let Some(Some(list)) = ports.get(key) else {
            continue;
        };
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<i32>() else {
            continue;
        };
        let v4: Vec<&PortBinding> = list
            .iter()
            .filter(|b| !b.host_ip.as_deref().unwrap_or("").contains(':'))
            .collect();
        let chosen: Vec<&PortBinding> = if v4.is_empty() {
            list.iter().collect()
        } else {
            v4
        };
        for b in chosen {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let ip = match b.host_ip.as_deref() {
                None | Some("") => "0.0.0.0".to_string(),
                Some(ip) => ip.to_string(),
            };
            let nb = NetworkBinding {
                bind_ip: Some(ip),
                container_port: Some(container_port),
                host_port: Some(host_port),
                protocol: Some(proto.to_string()),
            };
            if !out.contains(&nb) {
                out.push(nb);
            }
        }
    }
    out
}

/// Splits an image reference into what `docker pull` (`fromImage`, `tag`) wants; the tag
/// defaults to `latest`, and a digest reference keeps its digest as the tag.
pub fn parse_image_ref(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

/// The registry a repository lives in, as Docker decides it: the first path component when it
/// looks like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(repository: &str) -> String {
    match repository.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "https://index.docker.io/v1/".to_string(),
    }
}

/// The reference to inspect locally: `image` with `:latest` added when it has no tag.
pub fn normalized_image(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let (repo, tag) = parse_image_ref(image);
    format!("{repo}:{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::types::{
        ContainerOverride, DockerVolumeConfiguration, HealthCheck, HostVolumeProperties,
        MountPoint, PortMapping, Volume, VolumeFrom,
    };
    use serde_json::json;

    const TASK: &str = "arn:aws:ecs:us-east-1:000000000000:task/prod/0123456789abcdef0123";

    fn td() -> TaskDefinition {
        TaskDefinition {
            family: "web".into(),
            revision: Some(3),
            container_definitions: vec![
                ContainerDefinition {
                    name: Some("app".into()),
                    image: Some("nginx:1.25".into()),
                    cpu: Some(256),
                    memory: Some(128),
                    memory_reservation: Some(64),
                    command: Some(vec!["serve".into()]),
                    entry_point: Some(vec!["/entry".into()]),
                    environment: Some(vec![
                        KeyValuePair {
                            name: Some("A".into()),
                            value: Some("1".into()),
                        },
                        KeyValuePair {
                            name: Some("B".into()),
                            value: Some("2".into()),
                        },
                    ]),
                    port_mappings: Some(vec![
                        PortMapping {
                            container_port: Some(80),
                            host_port: Some(0),
                            ..Default::default()
                        },
                        PortMapping {
                            container_port: Some(53),
                            host_port: Some(5353),
                            protocol: Some("udp".into()),
                            ..Default::default()
                        },
                    ]),
                    mount_points: Some(vec![
                        MountPoint {
                            source_volume: Some("data".into()),
                            container_path: Some("/data".into()),
                            read_only: Some(true),
                        },
                        MountPoint {
                            source_volume: Some("scratch".into()),
                            container_path: Some("/scratch".into()),
                            read_only: None,
                        },
                        MountPoint {
                            source_volume: Some("cache".into()),
                            container_path: Some("/cache".into()),
                            read_only: None,
                        },
                    ]),
                    health_check: Some(HealthCheck {
                        command: vec!["CMD-SHELL".into(), "true".into()],
                        interval: Some(10),
                        timeout: None,
                        retries: None,
                        start_period: Some(2),
                    }),
                    docker_labels: Some(BTreeMap::from([
                        ("team".to_string(), "a".to_string()),
                        (labels::TASK_ARN.to_string(), "spoofed".to_string()),
                    ])),
                    stop_timeout: Some(5),
                    user: Some("nobody".into()),
                    working_directory: Some("/srv".into()),
                    hostname: Some("web1".into()),
                    privileged: Some(true),
                    readonly_root_filesystem: Some(true),
                    extra: serde_json::from_value(json!({
                        "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.2"}],
                        "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
                        "linuxParameters": {"initProcessEnabled": true, "capabilities": {"add": ["NET_ADMIN"]}}
                    }))
                    .unwrap(),
                    ..Default::default()
                },
                ContainerDefinition {
                    name: Some("sidecar".into()),
                    image: Some("busybox".into()),
                    volumes_from: Some(vec![VolumeFrom {
                        source_container: Some("app".into()),
                        read_only: Some(true),
                    }]),
                    links: Some(vec!["app:web".into()]),
                    ..Default::default()
                },
            ],
            volumes: Some(vec![
                Volume {
                    name: Some("data".into()),
                    host: Some(HostVolumeProperties {
                        source_path: Some("/srv/data".into()),
                    }),
                    ..Default::default()
                },
                Volume {
                    name: Some("scratch".into()),
                    ..Default::default()
                },
                Volume {
                    name: Some("cache".into()),
                    docker_volume_configuration: Some(DockerVolumeConfiguration {
                        scope: Some("shared".into()),
                        autoprovision: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    fn spec_for(td: &TaskDefinition, overrides: Option<&TaskOverride>, idx: usize) -> CreateSpec {
        let volumes = plan_volumes(td, task_id(TASK));
        let ctx = TaskContext {
            task_arn: TASK,
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/prod",
            instance_arn: "arn:ci",
            task_definition: td,
            overrides,
            volumes: &volumes,
        };
        let def = effective_definition(&td.container_definitions[idx], overrides);
        build_create_spec(&ctx, &def).unwrap()
    }

    #[test]
    fn names_follow_ecs_pattern_and_are_sanitized() {
        assert_eq!(task_id(TASK), "0123456789abcdef0123");
        assert_eq!(
            container_docker_name("web", 3, "app", "0123456789abcdef0123"),
            "ecs-web-3-app-0123456789ab"
        );
        assert_eq!(
            container_docker_name("my fam", 1, "a/b", "xyz"),
            "ecs-my-fam-1-a-b-xyz"
        );
        let s = spec_for(&td(), None, 0);
        assert_eq!(s.name, "ecs-web-3-app-0123456789ab");
    }

    #[test]
    fn create_spec_translates_the_definition() {
        let s = spec_for(&td(), None, 0);
        let b = &s.body;
        let hc = b.host_config.as_ref().unwrap();
        assert_eq!(b.image.as_deref(), Some("nginx:1.25"));
        assert_eq!(b.env, Some(vec!["A=1".to_string(), "B=2".to_string()]));
        assert_eq!(b.cmd, Some(vec!["serve".to_string()]));
        assert_eq!(b.entrypoint, Some(vec!["/entry".to_string()]));
        assert_eq!(b.user.as_deref(), Some("nobody"));
        assert_eq!(b.working_dir.as_deref(), Some("/srv"));
        assert_eq!(b.hostname.as_deref(), Some("web1"));
        assert_eq!(b.stop_timeout, Some(5));
        assert_eq!(hc.cpu_shares, Some(256));
        assert_eq!(hc.memory, Some(128 * 1024 * 1024));
        assert_eq!(hc.memory_reservation, Some(64 * 1024 * 1024));
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));
        assert_eq!(hc.privileged, Some(true));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.extra_hosts, Some(vec!["db:10.0.0.2".to_string()]));
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        let ul = &hc.ulimits.as_ref().unwrap()[0];
        assert_eq!((ul.soft, ul.hard), (Some(1024), Some(2048)));
        assert_eq!(
            hc.log_config.as_ref().and_then(|l| l.typ.as_deref()),
            Some("json-file")
        );

        // Ports: dynamic host port is an empty string; udp keeps its protocol.
        let pb = hc.port_bindings.as_ref().unwrap();
        assert_eq!(
            pb["80/tcp"],
            Some(vec![PortBinding {
                host_ip: None,
                host_port: Some(String::new())
            }])
        );
        assert_eq!(
            pb["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5353")
        );
        let mut exposed = b.exposed_ports.clone().unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_string(), "80/tcp".to_string()]);

        // Volumes: bind, task-scoped empty volume, shared named volume.
        assert_eq!(
            hc.binds,
            Some(vec![
                "/srv/data:/data:ro".to_string(),
                "ecs-web-3-scratch-0123456789abcdef0123:/scratch".to_string(),
                "cache:/cache".to_string(),
            ])
        );

        // Health check: seconds → nanoseconds with ECS defaults.
        let h = b.healthcheck.as_ref().unwrap();
        assert_eq!(
            h.test,
            Some(vec!["CMD-SHELL".to_string(), "true".to_string()])
        );
        assert_eq!(h.interval, Some(10_000_000_000));
        assert_eq!(h.timeout, Some(5_000_000_000));
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.start_period, Some(2_000_000_000));

        // Labels: Gantry's win over dockerLabels; dockerLabels kept.
        let l = b.labels.as_ref().unwrap();
        assert_eq!(l[labels::TASK_ARN], TASK);
        assert_eq!(l[labels::CONTAINER_NAME], "app");
        assert_eq!(
            l[labels::CLUSTER],
            "arn:aws:ecs:us-east-1:000000000000:cluster/prod"
        );
        assert_eq!(l[labels::TASK_FAMILY], "web");
        assert_eq!(l[labels::TASK_REVISION], "3");
        assert_eq!(l[labels::INSTANCE_ARN], "arn:ci");
        assert_eq!(l["team"], "a");
    }

    #[test]
    fn defaults_links_volumes_from_and_task_memory() {
        let mut t = td();
        let s = spec_for(&t, None, 1);
        let hc = s.body.host_config.as_ref().unwrap();
        assert_eq!(hc.cpu_shares, Some(2));
        assert_eq!(hc.memory, None, "two containers: task memory is not split");
        assert_eq!(s.body.stop_timeout, Some(30));
        assert_eq!(
            hc.volumes_from,
            Some(vec!["ecs-web-3-app-0123456789ab:ro".to_string()])
        );
        assert_eq!(
            hc.links,
            Some(vec!["ecs-web-3-app-0123456789ab:web".to_string()])
        );
        assert_eq!(s.body.cmd, None);
        assert!(s.body.healthcheck.is_none());

        // One container without memory: the task's memory becomes its hard limit.
        t.container_definitions.remove(0);
        t.container_definitions[0].volumes_from = None;
        t.container_definitions[0].links = None;
        t.memory = Some("0.5 GB".into());
        let s = spec_for(&t, None, 0);
        assert_eq!(
            s.body.host_config.as_ref().unwrap().memory,
            Some(512 * 1024 * 1024)
        );
    }

    #[test]
    fn registries_are_found_as_docker_finds_them() {
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("registry.example/team/app"), "registry.example");
        assert_eq!(registry_of("team/app"), "https://index.docker.io/v1/");
        assert_eq!(registry_of("busybox"), "https://index.docker.io/v1/");
    }

    #[test]
    fn overrides_replace_command_env_and_resources() {
        let t = td();
        let ov = TaskOverride {
            container_overrides: Some(vec![ContainerOverride {
                name: Some("app".into()),
                command: Some(vec!["other".into()]),
                environment: Some(vec![
                    KeyValuePair {
                        name: Some("B".into()),
                        value: Some("20".into()),
                    },
                    KeyValuePair {
                        name: Some("C".into()),
                        value: Some("3".into()),
                    },
                ]),
                cpu: Some(0),
                memory: Some(256),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let s = spec_for(&t, Some(&ov), 0);
        assert_eq!(s.body.cmd, Some(vec!["other".to_string()]));
        assert_eq!(
            s.body.env,
            Some(vec![
                "A=1".to_string(),
                "B=20".to_string(),
                "C=3".to_string()
            ])
        );
        let hc = s.body.host_config.as_ref().unwrap();
        assert_eq!(hc.cpu_shares, Some(2), "cpu 0 → Docker's minimum");
        assert_eq!(hc.memory, Some(256 * 1024 * 1024));
    }

    #[test]
    fn injected_variables_join_and_win_over_the_definitions() {
        let t = td();
        let volumes = plan_volumes(&t, task_id(TASK));
        let ctx = TaskContext {
            task_arn: TASK,
            cluster_arn: "c",
            instance_arn: "i",
            task_definition: &t,
            overrides: None,
            volumes: &volumes,
        };
        let mut injected = InjectedEnvironment::default();
        injected.set("B", "from-agent");
        injected.set("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/x");
        injected.set("B", "from-agent-again");
        let s = build_create_spec_with(&ctx, &t.container_definitions[0], &injected).unwrap();
        assert_eq!(
            s.body.env,
            Some(vec![
                "A=1".to_string(),
                "B=from-agent-again".to_string(),
                "ECS_CONTAINER_METADATA_URI_V4=http://169.254.170.2/v4/x".to_string(),
            ])
        );
        // Names only in Debug: values may be secrets.
        assert_eq!(
            format!("{injected:?}"),
            r#"["B", "ECS_CONTAINER_METADATA_URI_V4"]"#
        );
    }

    #[test]
    fn host_and_awsvpc_modes() {
        let mut t = td();
        t.network_mode = Some("host".into());
        let s = spec_for(&t, None, 0);
        let hc = s.body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert!(hc.port_bindings.is_none());
        assert!(s.body.hostname.is_none());
        let nb = network_bindings(NetMode::Host, Some(&t.container_definitions[0]), None);
        assert_eq!(nb.len(), 2);
        assert_eq!(
            (nb[0].container_port, nb[0].host_port),
            (Some(80), Some(80))
        );
        assert_eq!(nb[1].protocol.as_deref(), Some("udp"));

        t.network_mode = Some("awsvpc".into());
        let s = spec_for(&t, None, 0);
        let hc = s.body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));
        assert_eq!(
            hc.port_bindings.as_ref().unwrap()["80/tcp"]
                .as_ref()
                .unwrap()[0]
                .host_port
                .as_deref(),
            Some("80")
        );
    }

    #[test]
    fn errors_for_unknown_volume_and_missing_image() {
        let mut t = td();
        t.volumes = None;
        let volumes = plan_volumes(&t, "x");
        let ctx = TaskContext {
            task_arn: TASK,
            cluster_arn: "c",
            instance_arn: "i",
            task_definition: &t,
            overrides: None,
            volumes: &volumes,
        };
        let err = build_create_spec(&ctx, &t.container_definitions[0]).unwrap_err();
        assert!(err.contains("unknown volume data"), "{err}");
        let mut d = t.container_definitions[1].clone();
        d.image = None;
        assert!(build_create_spec(&ctx, &d)
            .unwrap_err()
            .contains("no image"));
    }

    #[test]
    fn plans_volumes() {
        let v = plan_volumes(&td(), "tid");
        assert_eq!(
            v[0].source,
            VolumeSource::Bind {
                host_path: "/srv/data".into()
            }
        );
        match &v[1].source {
            VolumeSource::Docker {
                docker_name,
                task_scoped,
                ..
            } => {
                assert_eq!(docker_name, "ecs-web-3-scratch-tid");
                assert!(task_scoped);
            }
            other => panic!("{other:?}"),
        }
        match &v[2].source {
            VolumeSource::Docker {
                docker_name,
                task_scoped,
                autoprovision,
                ..
            } => {
                assert_eq!(docker_name, "cache");
                assert!(!task_scoped);
                assert!(autoprovision);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_bindings_from_docker_ports() {
        let ports: PortMap = HashMap::from([
            (
                "80/tcp".to_string(),
                Some(vec![
                    PortBinding {
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some("49153".into()),
                    },
                    PortBinding {
                        host_ip: Some("::".into()),
                        host_port: Some("49153".into()),
                    },
                ]),
            ),
            ("8080/tcp".to_string(), None),
        ]);
        let nb = network_bindings(NetMode::Bridge, None, Some(&ports));
        assert_eq!(
            nb,
            vec![NetworkBinding {
                bind_ip: Some("0.0.0.0".into()),
                container_port: Some(80),
                host_port: Some(49153),
                protocol: Some("tcp".into()),
            }]
        );
    }

    #[test]
    fn image_references() {
        assert_eq!(
            parse_image_ref("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            parse_image_ref("nginx:1.25"),
            ("nginx".into(), "1.25".into())
        );
        assert_eq!(
            parse_image_ref("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            parse_image_ref("localhost:5000/a/b:v2"),
            ("localhost:5000/a/b".into(), "v2".into())
        );
        assert_eq!(
            parse_image_ref("x@sha256:abc"),
            ("x".into(), "sha256:abc".into())
        );
        assert_eq!(normalized_image("busybox"), "busybox:latest");
        assert_eq!(normalized_image("x@sha256:abc"), "x@sha256:abc");
    }
}
