//! Starting and stopping tasks, shared by the task API and the controllers: what the
//! scheduler sees of an instance (`snapshot_of`), building a task from a definition
//! (`build_spec`), placing and persisting tasks with compare-and-swap on the instances
//! (`place_tasks`), RunTask's idempotency tokens, and asking a task to stop (`request_stop`).

use crate::awsvpc::{parse_network_configuration, Allocator, NetworkRequest};
use crate::plane::ControlPlane;
use crate::state::keys::instance_key_for;
use crate::state::lookup;
pub use crate::state::records::snapshot_of;
use crate::state::records::{
    mark_stopped, RunTokenRecord, TaskDefinitionRecord, TaskInternal, TaskRecord,
};
use crate::state::repo;
use crate::tags::validate_tags;
use gantry_model::agent_protocol::TaskNetworkInterface;
use gantry_model::arn::last_segment;
use gantry_model::requirements::{task_requirements, TaskRequirements};
use gantry_model::types::{
    Attribute, Container, ContainerInstance, ContainerOverride, Failure, PlacementConstraint,
    PlacementStrategy, Tag, Task, TaskDefinition, TaskOverride,
};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use gantry_scheduler::capacity::StrategyItem;
use gantry_scheduler::PlacementRequest;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Every task of a cluster, from the state cache (for the list and describe calls that
/// answer about the whole cluster).
pub async fn load_cluster_tasks(plane: &ControlPlane, cluster: &str) -> EcsResult<Vec<TaskRecord>> {
    Ok(plane
        .cache
        .tasks_of_cluster(cluster)
        .iter()
        .map(|e| e.value.clone())
        .collect())
}

/// Everything needed to mint tasks, shared by RunTask, StartTask and the service scheduler.
#[derive(Clone)]
pub(crate) struct TaskSpec {
    definition: TaskDefinition,
    overrides: TaskOverride,
    requirements: TaskRequirements,
    started_by: Option<String>,
    group: String,
    /// EC2 or FARGATE (for a strategy: what its providers are).
    launch_type: String,
    /// The capacity provider strategy the tasks are split over (empty: `launch_type` alone).
    strategy: Vec<StrategyItem>,
    /// The provider these tasks go to, once the strategy is split.
    capacity_provider: Option<String>,
    /// Fargate tasks: the platform version, resolved.
    platform_version: Option<String>,
    network: Option<NetworkRequest>,
    tags: Vec<Tag>,
    enable_execute_command: bool,
}

/// How a call asks for its tasks to be launched: `launchType`, `capacityProviderStrategy`,
/// `platformVersion` and `networkConfiguration`, with the cluster's providers and default
/// strategy for when it gives neither a launch type nor a strategy.
#[derive(Debug, Clone, Default)]
pub(crate) struct LaunchOptions {
    pub launch_type: Option<String>,
    pub capacity_provider_strategy: Vec<Value>,
    pub platform_version: Option<String>,
    pub network_configuration: Option<Value>,
    pub cluster_providers: Vec<String>,
    pub cluster_default_strategy: Vec<Value>,
}

impl LaunchOptions {
    /// A service's launch settings: its launch type, and the `capacityProviderStrategy`,
    /// `platformVersion` and `networkConfiguration` members found by `setting` (the
    /// request's, the service's or a deployment's).
    pub fn for_service(
        cluster: &gantry_model::types::Cluster,
        launch_type: Option<String>,
        setting: impl Fn(&str) -> Option<Value>,
    ) -> LaunchOptions {
        let setting = |member: &str| setting(member).filter(|v| !v.is_null());
        LaunchOptions {
            launch_type,
            capacity_provider_strategy: setting("capacityProviderStrategy")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default(),
            platform_version: setting("platformVersion")
                .and_then(|v| v.as_str().map(str::to_string)),
            network_configuration: setting("networkConfiguration"),
            ..LaunchOptions::for_cluster(cluster)
        }
    }

    /// The launch settings of a cluster, before the call's own are filled in.
    pub fn for_cluster(cluster: &gantry_model::types::Cluster) -> LaunchOptions {
        LaunchOptions {
            cluster_providers: cluster.capacity_providers.clone().unwrap_or_default(),
            cluster_default_strategy: cluster
                .default_capacity_provider_strategy
                .clone()
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

impl TaskSpec {
    pub fn is_fargate(&self) -> bool {
        self.launch_type == "FARGATE"
    }

    /// The Fargate platform version the tasks run on, resolved (`LATEST` → a number).
    pub fn platform_version(&self) -> Option<&str> {
        self.platform_version.as_deref()
    }

    /// Fargate places tasks itself: placement strategies and constraints are refused with it.
    pub fn check_placement(
        &self,
        strategies: &[PlacementStrategy],
        constraints: &[PlacementConstraint],
    ) -> EcsResult<()> {
        if !self.is_fargate() {
            return Ok(());
        }
        if !strategies.is_empty() {
            return Err(EcsError::invalid_parameter(
                "Placement strategies are not supported with FARGATE launch type.",
            ));
        }
        if !constraints.is_empty() {
            return Err(EcsError::invalid_parameter(
                "Placement constraints are not supported with FARGATE launch type.",
            ));
        }
        Ok(())
    }
}

pub(crate) fn is_fargate_provider(name: &str) -> bool {
    matches!(name, "FARGATE" | "FARGATE_SPOT")
}

/// The strategy a call's tasks are split over, checked against the cluster as ECS checks it.
fn resolve_strategy(launch: &LaunchOptions) -> EcsResult<Vec<StrategyItem>> {
    if launch.launch_type.is_some() {
        return Ok(Vec::new());
    }
    let (given, from_call) = if launch.capacity_provider_strategy.is_empty() {
        (&launch.cluster_default_strategy, false)
    } else {
        (&launch.capacity_provider_strategy, true)
    };
    let items = parse_strategy(given, "capacityProviderStrategy")?;
    if from_call
        && items
            .iter()
            .any(|i| !launch.cluster_providers.contains(&i.provider))
    {
        return Err(EcsError::invalid_parameter(
            "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
        ));
    }
    if !items.is_empty() {
        gantry_scheduler::capacity::check(&items)
            .map_err(|e| EcsError::invalid_parameter(e.to_string()))?;
    }
    Ok(items)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StrategyItemInput {
    capacity_provider: String,
    weight: Option<i64>,
    base: Option<i64>,
}

/// Most items a capacity provider strategy holds.
const MAX_STRATEGY_ITEMS: usize = 20;

/// A capacity provider strategy as given (a call's, or a cluster's default), checked as ECS
/// checks one wherever it appears: at most 20 items, each provider once (by name or ARN),
/// weight 0–1000, base 0–100000, at most one item with a base, Fargate providers and Auto
/// Scaling group providers not mixed. `member` names the list in errors. Which providers the
/// cluster has is the caller's to check.
pub(crate) fn parse_strategy(given: &[Value], member: &str) -> EcsResult<Vec<StrategyItem>> {
    // Parsed under the member's name, so that an error names `member[i].weight` and such.
    let items: Vec<StrategyItemInput> =
        crate::wire::parse::<BTreeMap<String, Vec<StrategyItemInput>>>(json!({ member: given }))?
            .remove(member)
            .unwrap_or_default();
    if items.len() > MAX_STRATEGY_ITEMS {
        return Err(EcsError::invalid_parameter(format!(
            "A capacity provider strategy can contain a maximum of {MAX_STRATEGY_ITEMS} capacity providers."
        )));
    }
    let mut out: Vec<StrategyItem> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let weight = in_range(
            &format!("{member}[{i}].weight"),
            item.weight.unwrap_or(0),
            0,
            1000,
        )?;
        let base = in_range(
            &format!("{member}[{i}].base"),
            item.base.unwrap_or(0),
            0,
            100_000,
        )?;
        let name = provider_name(item.capacity_provider.trim()).to_string();
        if out.iter().any(|o| o.provider == name) {
            return Err(EcsError::invalid_parameter(format!(
                "The specified capacity provider strategy contains '{name}' more than once. Specify each capacity provider once and try again."
            )));
        }
        out.push(StrategyItem::new(name, base as u32, weight as u32));
    }
    if out.iter().filter(|i| i.base > 0).count() > 1 {
        return Err(EcsError::invalid_parameter(
            "Only one capacity provider in a capacity provider strategy can have a base defined.",
        ));
    }
    let fargate = out
        .iter()
        .filter(|i| is_fargate_provider(&i.provider))
        .count();
    if fargate > 0 && fargate < out.len() {
        return Err(EcsError::invalid_parameter(
            "A capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
        ));
    }
    Ok(out)
}

/// `value` when it is within `min..=max`, else ECS's InvalidParameterException naming `member`.
pub(crate) fn in_range(member: &str, value: i64, min: i64, max: i64) -> EcsResult<i64> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(EcsError::invalid_parameter(format!(
            "Invalid value {value} for {member}: it must be between {min} and {max}."
        )))
    }
}

/// A capacity provider's name from its name or ARN (`…:capacity-provider/<name>`).
pub(crate) fn provider_name(given: &str) -> &str {
    match gantry_model::arn::arn_resource(given) {
        Some(r) => r.strip_prefix("capacity-provider/").unwrap_or(r),
        None => given,
    }
}

fn validate_overrides(td: &TaskDefinition, o: &TaskOverride) -> EcsResult<()> {
    for co in o.container_overrides.iter().flatten() {
        let name = co.name.as_deref().unwrap_or("");
        if !td
            .container_definitions
            .iter()
            .any(|c| c.name.as_deref() == Some(name))
        {
            return Err(EcsError::invalid_parameter(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        }
        if co.memory.is_some_and(|m| m < 6) || co.memory_reservation.is_some_and(|m| m < 6) {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid memory override for container {name}: at least 6 MiB."
            )));
        }
        if co.cpu.is_some_and(|c| c < 0) {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid cpu override for container {name}."
            )));
        }
    }
    if let Some(c) = &o.cpu {
        gantry_model::requirements::parse_cpu(c).ok_or_else(|| {
            EcsError::invalid_parameter(format!("Invalid task cpu override '{c}'."))
        })?;
    }
    if let Some(m) = &o.memory {
        gantry_model::requirements::parse_memory(m).ok_or_else(|| {
            EcsError::invalid_parameter(format!("Invalid task memory override '{m}'."))
        })?;
    }
    Ok(())
}

/// ECS returns `overrides` with one entry per container even when none were given.
fn full_overrides(td: &TaskDefinition, given: Option<TaskOverride>) -> TaskOverride {
    let mut o = given.unwrap_or_default();
    let list = o.container_overrides.get_or_insert_with(Vec::new);
    for c in &td.container_definitions {
        if !list.iter().any(|co| co.name == c.name) {
            list.push(ContainerOverride {
                name: c.name.clone(),
                ..Default::default()
            });
        }
    }
    o.extra
        .entry("inferenceAcceleratorOverrides")
        .or_insert_with(|| json!([]));
    o
}

fn mint_task(
    plane: &ControlPlane,
    cluster: &str,
    spec: &TaskSpec,
    instance: &ContainerInstance,
    network_interface: Option<TaskNetworkInterface>,
) -> TaskRecord {
    let scope = plane.scope();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let task_arn = scope.task(cluster, &id);
    let now = now_epoch();
    let containers = spec
        .definition
        .container_definitions
        .iter()
        .map(|c| {
            let co = spec
                .overrides
                .container_overrides
                .iter()
                .flatten()
                .find(|o| o.name == c.name);
            Container {
                container_arn: Some(scope.container(
                    cluster,
                    &id,
                    &uuid::Uuid::new_v4().to_string(),
                )),
                task_arn: Some(task_arn.clone()),
                name: c.name.clone(),
                image: c.image.clone(),
                last_status: Some(status::PENDING.into()),
                network_bindings: Some(Vec::new()),
                health_status: Some(status::UNKNOWN.into()),
                cpu: Some(co.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0).to_string()),
                memory: co
                    .and_then(|o| o.memory)
                    .or(c.memory)
                    .map(|m| m.to_string()),
                memory_reservation: co
                    .and_then(|o| o.memory_reservation)
                    .or(c.memory_reservation)
                    .map(|m| m.to_string()),
                network_interfaces: network_interface.as_ref().map(|ni| {
                    vec![json!({
                        "attachmentId": ni.attachment_id,
                        "privateIpv4Address": ni.private_ipv4_address,
                    })]
                }),
                ..Default::default()
            }
        })
        .collect();
    let az = instance
        .attributes
        .iter()
        .flatten()
        .find(|a| a.name == "ecs.availability-zone")
        .and_then(|a| a.value.clone());
    let arch = instance
        .attributes
        .iter()
        .flatten()
        .find(|a| a.name == "ecs.cpu-architecture")
        .and_then(|a| a.value.clone());
    let fargate = spec.launch_type == "FARGATE";
    let task = Task {
        task_arn: Some(task_arn),
        cluster_arn: Some(scope.cluster(cluster)),
        task_definition_arn: spec.definition.task_definition_arn.clone(),
        // A Fargate task runs on no instance of its cluster.
        container_instance_arn: if fargate {
            None
        } else {
            instance.container_instance_arn.clone()
        },
        availability_zone: az,
        containers,
        overrides: Some(spec.overrides.clone()),
        last_status: Some(status::PENDING.into()),
        desired_status: Some(status::RUNNING.into()),
        cpu: Some(spec.requirements.cpu.to_string()),
        memory: Some(spec.requirements.memory.to_string()),
        started_by: spec.started_by.clone(),
        group: Some(spec.group.clone()),
        launch_type: Some(spec.launch_type.clone()),
        health_status: Some(status::UNKNOWN.into()),
        created_at: Some(now),
        version: Some(1),
        enable_execute_command: Some(spec.enable_execute_command),
        tags: Some(spec.tags.clone()),
        attachments: Some(
            network_interface
                .iter()
                .map(|ni| crate::awsvpc::attachment(ni, "PRECREATED"))
                .collect(),
        ),
        capacity_provider_name: spec.capacity_provider.clone(),
        platform_version: spec.platform_version.clone(),
        platform_family: fargate.then(|| "Linux".to_string()),
        ephemeral_storage: fargate.then(
            || json!({"sizeInGiB": gantry_model::fargate::ephemeral_storage_gib(&spec.definition)}),
        ),
        attributes: arch.map(|a| {
            vec![Attribute {
                name: "ecs.cpu-architecture".into(),
                value: Some(a),
                target_type: None,
                target_id: None,
            }]
        }),
        ..Default::default()
    };
    TaskRecord {
        task,
        internal: TaskInternal {
            cpu: spec.requirements.cpu,
            memory: spec.requirements.memory,
            tcp_ports: spec.requirements.tcp_ports.clone(),
            udp_ports: spec.requirements.udp_ports.clone(),
            family: spec.definition.family.clone(),
            host: if fargate {
                instance.container_instance_arn.clone()
            } else {
                None
            },
            network_interface,
            protected_until: None,
        },
    }
}

/// How tasks find their instances: through the scheduler (RunTask) or named by the caller
/// (StartTask).
pub(crate) enum Target {
    Scheduler {
        count: usize,
        strategies: Vec<PlacementStrategy>,
        constraints: Vec<PlacementConstraint>,
    },
    Instances(Vec<String>),
}

/// Place and persist tasks: snapshot the cluster, ask the scheduler, and commit the new tasks
/// guarded by the chosen instances' revisions (optimistic concurrency: a concurrent placement
/// on the same instance makes this commit fail and the loop re-plans on fresh state).
pub(crate) async fn place_tasks(
    plane: &ControlPlane,
    cluster: &str,
    spec: &TaskSpec,
    target: &Target,
    token: Option<&str>,
) -> EcsResult<(Vec<TaskRecord>, Vec<Failure>)> {
    // Fargate tasks run on the hosts of the Fargate pool, whichever cluster they belong to.
    let fargate = spec.launch_type == "FARGATE";
    let host_cluster = if fargate {
        gantry_model::FARGATE_POOL
    } else {
        cluster
    };
    for _attempt in 0..32 {
        // Addresses for awsvpc tasks, from subnets read for this attempt (their revisions
        // guard the commit like the instances' do).
        let mut allocator = match &spec.network {
            Some(n) => Some(Allocator::load(plane, n).await?),
            None => None,
        };
        // A Fargate placement guards no instance of the task's cluster, so it guards the
        // cluster itself: a DeleteCluster committed meanwhile makes it re-plan (and fail).
        let cluster_guard = if fargate {
            let key = repo::cluster_key(cluster);
            match repo::get::<gantry_model::types::Cluster>(&*plane.store, &key).await? {
                Some((c, rev)) if c.status.as_deref() == Some(status::ACTIVE) => {
                    Some(repo::unchanged_since(&key, rev))
                }
                _ => return Err(EcsError::cluster_not_found()),
            }
        } else {
            None
        };
        // The chosen instances as the decision saw them: their mod revisions guard the
        // commit, so a placement decided on stale state fails and is decided again.
        let mut by_arn: BTreeMap<String, (ContainerInstance, i64)> = BTreeMap::new();
        let mut placed_on: Vec<String> = Vec::new();
        let mut failures: Vec<Failure> = Vec::new();
        match target {
            Target::Scheduler {
                count,
                strategies,
                constraints,
            } => {
                let mut constraints = constraints.clone();
                let mut strategies = strategies.clone();
                if fargate {
                    // Fargate spreads a group's tasks over availability zones, then hosts.
                    strategies = vec![
                        PlacementStrategy {
                            kind: Some("spread".into()),
                            field: Some("attribute:ecs.availability-zone".into()),
                        },
                        PlacementStrategy {
                            kind: Some("spread".into()),
                            field: Some("instanceId".into()),
                        },
                    ];
                    constraints.clear();
                } else if let Some(provider) = &spec.capacity_provider {
                    // An Auto Scaling group provider's capacity: the agents that joined it.
                    constraints.push(PlacementConstraint {
                        kind: Some("memberOf".into()),
                        expression: Some(format!(
                            "attribute:{} == {provider}",
                            gantry_model::requirements::CAPACITY_PROVIDER_ATTRIBUTE
                        )),
                    });
                }
                if !gantry_model::requirements::host_access_requested(&spec.definition).is_empty() {
                    // Only hosts whose agent allows it (`--allow-host-access`) take tasks that
                    // ask for privileged mode, host mounts or host namespaces.
                    constraints.push(gantry_model::types::PlacementConstraint {
                        kind: Some("memberOf".into()),
                        expression: Some(format!(
                            "attribute:{} exists",
                            gantry_model::requirements::HOST_ACCESS_ATTRIBUTE
                        )),
                    });
                }
                let request = PlacementRequest {
                    requirements: spec.requirements.clone(),
                    count: *count,
                    strategies,
                    constraints,
                    group: Some(spec.group.clone()),
                    family: spec.definition.family.clone(),
                    seed: rand_seed(),
                };
                // The cluster's placement index: binpack finds its instance without scoring
                // every instance; other strategies scan the same snapshots.
                let Some((placement, chosen)) = plane.cache.place(host_cluster, &request) else {
                    if fargate {
                        return Err(EcsError::client(
                            "No Fargate capacity is available: no host provides it. Start one with `gantry agent --fargate` (`gantry dev` runs one).",
                        ));
                    }
                    return Err(EcsError::invalid_parameter(
                        "No Container Instances were found in your cluster.",
                    ));
                };
                for e in chosen {
                    if let Some(arn) = e.value.container_instance_arn.clone() {
                        by_arn.insert(arn, (e.value.clone(), e.mod_revision));
                    }
                }
                placed_on = placement.placements;
                failures = placement
                    .failures
                    .into_iter()
                    .map(|f| Failure {
                        arn: Some(if f.arn.is_empty() {
                            plane.scope().cluster(cluster)
                        } else {
                            f.arn
                        }),
                        reason: Some(f.reason),
                        detail: None,
                    })
                    .collect();
            }
            Target::Instances(given) => {
                // An instance named twice gets two tasks, placed together so the second sees
                // the first's resources.
                let mut wanted: Vec<(String, &String, usize)> = Vec::new();
                for g in given {
                    let arn = plane.scope().container_instance(cluster, last_segment(g));
                    match wanted.iter_mut().find(|(a, _, _)| *a == arn) {
                        Some(w) => w.2 += 1,
                        None => wanted.push((arn, g, 1)),
                    }
                }
                for (arn, g, count) in wanted {
                    let Some(entry) = plane.cache.instance(cluster, last_segment(&arn)) else {
                        failures.push(Failure::missing(g.clone()));
                        continue;
                    };
                    let ci = entry.value.clone();
                    let host_access_allowed = ci
                        .attributes
                        .iter()
                        .flatten()
                        .any(|a| a.name == gantry_model::requirements::HOST_ACCESS_ATTRIBUTE);
                    if !host_access_allowed
                        && !gantry_model::requirements::host_access_requested(&spec.definition)
                            .is_empty()
                    {
                        // StartTask names the instance, but the instance's own policy still
                        // decides whether a task may use its host.
                        failures.push(Failure {
                            arn: Some(arn.clone()),
                            reason: Some(
                                "MemberOf placement constraint unsatisfied.".to_string(),
                            ),
                            detail: Some(format!(
                                "the task asks for host access and the instance's agent does not allow it (gantry agent --allow-host-access): {}",
                                gantry_model::requirements::host_access_requested(&spec.definition)
                                    .join(", ")
                            )),
                        });
                        continue;
                    }
                    let on_it = plane.cache.tasks_on_instance(&arn);
                    let snap = snapshot_of(&ci, on_it.iter().map(|e| &e.value));
                    by_arn.insert(arn.clone(), (ci, entry.mod_revision));
                    let request = PlacementRequest {
                        requirements: spec.requirements.clone(),
                        count,
                        strategies: Vec::new(),
                        constraints: Vec::new(),
                        group: Some(spec.group.clone()),
                        family: spec.definition.family.clone(),
                        seed: rand_seed(),
                    };
                    let p = gantry_scheduler::place(std::slice::from_ref(&snap), &request);
                    failures.extend(p.failures.into_iter().map(|f| Failure {
                        arn: Some(arn.clone()),
                        reason: Some(f.reason),
                        detail: None,
                    }));
                    placed_on.extend(p.placements);
                }
            }
        }

        let mut records = Vec::new();
        let mut guards = Vec::new();
        let mut ops = Vec::new();
        let mut bumped: BTreeMap<String, ContainerInstance> = BTreeMap::new();
        for arn in &placed_on {
            let Some((ci, rev)) = by_arn.get(arn) else {
                continue;
            };
            let network_interface = match (&mut allocator, &spec.network) {
                (Some(a), Some(n)) => match a.allocate(n, &plane.scope().region) {
                    Ok(ni) => Some(ni),
                    Err(e) => {
                        failures.push(Failure {
                            arn: Some(plane.scope().cluster(cluster)),
                            reason: Some("InsufficientFreeAddressesInSubnet".into()),
                            detail: Some(format!(
                                "subnet {} ({}) has no free IPv4 address: stop tasks in it or name another subnet",
                                e.subnet, e.cidr
                            )),
                        });
                        continue;
                    }
                },
                _ => None,
            };
            let record = mint_task(plane, cluster, spec, ci, network_interface);
            ops.push(repo::put_op(
                &repo::task_key(cluster, record.id()),
                &record,
            )?);
            records.push(record);
            if !bumped.contains_key(arn) {
                let key = instance_key_for(host_cluster, arn);
                guards.push(repo::unchanged_since(&key, *rev));
                let mut next = ci.clone();
                next.version = Some(next.version.unwrap_or(0) + 1);
                bumped.insert(arn.clone(), next);
            }
        }
        for (arn, ci) in &bumped {
            ops.push(repo::put_op(&instance_key_for(host_cluster, arn), ci)?);
        }
        if let Some(a) = &allocator {
            a.commit_ops(&mut guards, &mut ops)?;
        }
        guards.extend(cluster_guard);
        if let Some(token) = token {
            let key = repo::run_token_key(cluster, token);
            guards.push(repo::unchanged_since(&key, 0));
            ops.push(repo::put_op(
                &key,
                &RunTokenRecord {
                    created_at: now_epoch(),
                    task_arns: records
                        .iter()
                        .filter_map(|r| r.task.task_arn.clone())
                        .collect(),
                    failures: failures.clone(),
                },
            )?);
        }
        if ops.is_empty() || repo::commit(&*plane.store, guards, ops).await? {
            return Ok((records, failures));
        }
        // Another placement got there first: let the cache catch up with it, then re-plan.
        let current = plane.store.revision().await.map_err(repo::store_error)?;
        plane
            .cache
            .wait_for(current, std::time::Duration::from_secs(5))
            .await;
        if let Some(token) = token {
            // A concurrent call with the same token may have won the race.
            if let Some(replay) = replay_token(plane, cluster, token).await? {
                return Ok(replay);
            }
        }
    }
    Err(EcsError::server(
        "Could not place the tasks: the cluster kept changing. Try again.",
    ))
}

/// Places tasks as the spec's capacity provider strategy splits them (ECS's base-then-weight
/// split, given how many tasks of the group already run on each provider), or by its launch
/// type alone. Each provider's share is placed on its own capacity: FARGATE and FARGATE_SPOT
/// on the Fargate pool, an Auto Scaling group provider on the instances that joined it.
pub(crate) async fn place(
    plane: &ControlPlane,
    cluster: &str,
    spec: &TaskSpec,
    target: &Target,
    token: Option<&str>,
    running: &BTreeMap<String, usize>,
) -> EcsResult<(Vec<TaskRecord>, Vec<Failure>)> {
    let (count, strategies, constraints) = match target {
        Target::Scheduler {
            count,
            strategies,
            constraints,
        } if !spec.strategy.is_empty() => (*count, strategies, constraints),
        _ => return place_tasks(plane, cluster, spec, target, token).await,
    };
    let mut shares: Vec<(String, usize)> = Vec::new();
    for provider in gantry_scheduler::capacity::split(&spec.strategy, running, count) {
        match shares.iter_mut().find(|(p, _)| *p == provider) {
            Some(share) => share.1 += 1,
            None => shares.push((provider, 1)),
        }
    }
    // One share: the token is written with it, as without a strategy. Several shares are
    // several commits: the token is written once all are placed, naming them all, so a
    // retried call (RunTask looks the token up first) gets the same tasks.
    let (share_token, union_token) = if shares.len() == 1 {
        (token, None)
    } else {
        (None, token)
    };
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    let mut first_error = None;
    for (provider, n) in shares {
        let mut share = spec.clone();
        share.launch_type = if is_fargate_provider(&provider) {
            "FARGATE".into()
        } else {
            "EC2".into()
        };
        share.capacity_provider = Some(provider);
        let target = Target::Scheduler {
            count: n,
            strategies: strategies.clone(),
            constraints: constraints.clone(),
        };
        match place_tasks(plane, cluster, &share, &target, share_token).await {
            Ok((t, f)) => {
                tasks.extend(t);
                failures.extend(f);
            }
            Err(e) => {
                failures.push(Failure {
                    arn: Some(plane.scope().cluster(cluster)),
                    reason: Some(e.message.clone()),
                    detail: None,
                });
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(token) = union_token {
        let key = repo::run_token_key(cluster, token);
        let record = RunTokenRecord {
            created_at: now_epoch(),
            task_arns: tasks
                .iter()
                .filter_map(|r| r.task.task_arn.clone())
                .collect(),
            failures: failures.clone(),
        };
        // Create-only: a concurrent call with the same token that wrote first keeps its own.
        repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, 0)],
            vec![repo::put_op(&key, &record)?],
        )
        .await?;
    }
    match first_error {
        Some(e) if tasks.is_empty() => Err(e),
        _ => Ok((tasks, failures)),
    }
}

fn rand_seed() -> u64 {
    let n = uuid::Uuid::new_v4().as_u128();
    (n >> 64) as u64 ^ n as u64
}

pub(crate) async fn replay_token(
    plane: &ControlPlane,
    cluster: &str,
    token: &str,
) -> EcsResult<Option<(Vec<TaskRecord>, Vec<Failure>)>> {
    let Some((rec, _)) =
        repo::get::<RunTokenRecord>(&*plane.store, &repo::run_token_key(cluster, token)).await?
    else {
        return Ok(None);
    };
    let mut tasks = Vec::new();
    for arn in &rec.task_arns {
        if let Some((t, _)) =
            repo::get::<TaskRecord>(&*plane.store, &repo::task_key(cluster, last_segment(arn)))
                .await?
        {
            tasks.push(t);
        }
    }
    Ok(Some((tasks, rec.failures)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn build_spec(
    plane: &ControlPlane,
    task_definition: &str,
    // Services keep running a revision that was deregistered after they started using it,
    // as ECS does; RunTask and StartTask refuse it.
    allow_inactive: bool,
    overrides: Option<TaskOverride>,
    started_by: Option<String>,
    group: Option<String>,
    launch: LaunchOptions,
    tags: Option<Vec<Tag>>,
    enable_execute_command: Option<bool>,
) -> EcsResult<TaskSpec> {
    if let Some(s) = &started_by {
        if s.len() > 128 {
            return Err(EcsError::invalid_parameter(
                "startedBy can be at most 128 characters.",
            ));
        }
    }
    if let Some(g) = &group {
        if g.is_empty() || g.len() > 255 {
            return Err(EcsError::invalid_parameter(
                "group must be 1 to 255 characters.",
            ));
        }
    }
    if launch.launch_type.is_some() && !launch.capacity_provider_strategy.is_empty() {
        return Err(EcsError::invalid_parameter(
            "Specifying both a launchType and capacityProviderStrategy is not supported.",
        ));
    }
    let strategy = resolve_strategy(&launch)?;
    let launch_type = match strategy.first() {
        Some(item) if is_fargate_provider(&item.provider) => "FARGATE".to_string(),
        Some(_) => "EC2".to_string(),
        None => launch.launch_type.clone().unwrap_or_else(|| "EC2".into()),
    };
    if !matches!(launch_type.as_str(), "EC2" | "FARGATE" | "EXTERNAL") {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid launchType '{launch_type}': use EC2, FARGATE or EXTERNAL."
        )));
    }
    let platform_version = if launch_type == "FARGATE" {
        Some(
            gantry_model::fargate::resolve_platform_version(launch.platform_version.as_deref())
                .map_err(|m| EcsError::new("PlatformUnknownException", m))?,
        )
    } else if launch.platform_version.is_some() {
        return Err(EcsError::invalid_parameter(
            "The platform version must be null when specifying an EC2 launch type.",
        ));
    } else {
        None
    };
    let tags = tags.unwrap_or_default();
    validate_tags(&tags)?;
    let (record, _): (TaskDefinitionRecord, i64) =
        lookup::task_definition(&*plane.store, task_definition).await?;
    let definition = record.task_definition;
    if !allow_inactive && definition.status.as_deref() != Some(status::ACTIVE) {
        return Err(EcsError::client(format!(
            "TaskDefinition is inactive: '{}' cannot run new tasks.",
            definition
                .task_definition_arn
                .as_deref()
                .unwrap_or(task_definition)
        )));
    }
    if let Some(o) = &overrides {
        validate_overrides(&definition, o)?;
    }
    if launch_type == "FARGATE" {
        let mut effective = definition.clone();
        if let Some(o) = &overrides {
            effective.cpu = o.cpu.clone().or(effective.cpu);
            effective.memory = o.memory.clone().or(effective.memory);
        }
        if let Some(why) = gantry_model::fargate::fargate_incompatibility(&effective) {
            return Err(EcsError::invalid_parameter(format!(
                "Task definition does not support launch_type FARGATE. {why}"
            )));
        }
    }
    let network = parse_network_configuration(
        launch.network_configuration.as_ref(),
        definition.network_mode.as_deref().unwrap_or("bridge"),
        &launch_type,
    )?;
    let requirements = task_requirements(&definition, overrides.as_ref());
    let overrides = full_overrides(&definition, overrides);
    Ok(TaskSpec {
        strategy,
        capacity_provider: None,
        platform_version,
        network,
        group: group.unwrap_or_else(|| format!("family:{}", definition.family)),
        definition,
        overrides,
        requirements,
        started_by,
        launch_type,
        tags,
        enable_execute_command: enable_execute_command.unwrap_or(false),
    })
}

pub(crate) fn task_not_found() -> EcsError {
    EcsError::invalid_parameter("The referenced task was not found.")
}

/// Ask for a task to stop: desiredStatus STOPPED with a stop code and reason; the agent does
/// the rest. A task whose instance is gone can never be stopped by an agent, so it is marked
/// STOPPED here.
pub async fn request_stop(
    plane: &ControlPlane,
    cluster: &str,
    task: &str,
    code: &str,
    reason: &str,
) -> EcsResult<TaskRecord> {
    stop_task(plane, cluster, task, code, reason, false).await
}

/// [`request_stop`] for the service scheduler's scale-in, deployment and drain stops: a task
/// whose scale-in protection holds when the stop is written is left running (the scheduler
/// decided on what it read before; an UpdateTaskProtection may have landed since).
pub async fn request_stop_unless_protected(
    plane: &ControlPlane,
    cluster: &str,
    task: &str,
    code: &str,
    reason: &str,
) -> EcsResult<TaskRecord> {
    stop_task(plane, cluster, task, code, reason, true).await
}

async fn stop_task(
    plane: &ControlPlane,
    cluster: &str,
    task: &str,
    code: &str,
    reason: &str,
    unless_protected: bool,
) -> EcsResult<TaskRecord> {
    // An ARN naming another cluster than the call's is no task of this cluster.
    if gantry_model::arn::cluster_of_arn(task.trim()).is_some_and(|c| c != cluster) {
        return Err(task_not_found());
    }
    let key = repo::task_key(cluster, last_segment(task.trim()));
    let current = repo::get::<TaskRecord>(&*plane.store, &key)
        .await?
        .ok_or_else(task_not_found)?;
    let instance_gone = match current.0.host_arn() {
        Some(arn) => {
            let host_cluster = gantry_model::arn::cluster_of_arn(arn).unwrap_or(cluster);
            match repo::get::<ContainerInstance>(
                &*plane.store,
                &instance_key_for(host_cluster, arn),
            )
            .await?
            {
                Some((ci, _)) => ci.status.as_deref() == Some(status::INACTIVE),
                None => true,
            }
        }
        None => true,
    };
    repo::update::<TaskRecord, _>(&*plane.store, &key, |rec| {
        let now = now_epoch();
        if unless_protected
            && rec
                .internal
                .protected_until
                .is_some_and(|until| until > now)
        {
            return Ok(());
        }
        let t = &mut rec.task;
        if t.last_status.as_deref() == Some(status::STOPPED) {
            return Ok(());
        }
        if t.desired_status.as_deref() != Some(status::STOPPED) {
            t.desired_status = Some(status::STOPPED.into());
            t.stopping_at = Some(now);
            t.stop_code.get_or_insert_with(|| code.to_string());
            t.stopped_reason.get_or_insert_with(|| reason.to_string());
            t.version = Some(t.version.unwrap_or(0) + 1);
        }
        if instance_gone {
            mark_stopped(t, None, now);
        }
        Ok(())
    })
    .await?
    .ok_or_else(task_not_found)
}
