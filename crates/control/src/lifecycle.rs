//! Starting and stopping tasks, shared by the task API and the controllers: what the
//! scheduler sees of an instance (`snapshot_of`), building a task from a definition
//! (`build_spec`), placing and persisting tasks with compare-and-swap on the instances
//! (`place_tasks`), RunTask's idempotency tokens, and asking a task to stop (`request_stop`).

use crate::plane::ControlPlane;
use crate::state::keys::instance_key_for;
use crate::state::lookup;
pub use crate::state::records::snapshot_of;
use crate::state::records::{
    mark_stopped, RunTokenRecord, TaskDefinitionRecord, TaskInternal, TaskRecord,
};
use crate::state::repo;
use crate::tags::validate_tags;
use gantry_model::arn::last_segment;
use gantry_model::requirements::{task_requirements, TaskRequirements};
use gantry_model::types::{
    Attribute, Container, ContainerInstance, ContainerOverride, Failure, PlacementConstraint,
    PlacementStrategy, Tag, Task, TaskDefinition, TaskOverride,
};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use gantry_scheduler::PlacementRequest;
use serde_json::json;
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
pub(crate) struct TaskSpec {
    definition: TaskDefinition,
    overrides: TaskOverride,
    requirements: TaskRequirements,
    started_by: Option<String>,
    group: String,
    launch_type: String,
    tags: Vec<Tag>,
    enable_execute_command: bool,
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
    let task = Task {
        task_arn: Some(task_arn),
        cluster_arn: Some(scope.cluster(cluster)),
        task_definition_arn: spec.definition.task_definition_arn.clone(),
        container_instance_arn: instance.container_instance_arn.clone(),
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
        attachments: Some(Vec::new()),
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
            host: None,
            network_interface: None,
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
    for _attempt in 0..32 {
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
                    strategies: strategies.clone(),
                    constraints,
                    group: Some(spec.group.clone()),
                    family: spec.definition.family.clone(),
                    seed: rand_seed(),
                };
                // The cluster's placement index: binpack finds its instance without scoring
                // every instance; other strategies scan the same snapshots.
                let Some((placement, chosen)) = plane.cache.place(cluster, &request) else {
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
            let record = mint_task(plane, cluster, spec, ci);
            ops.push(repo::put_op(
                &repo::task_key(cluster, record.id()),
                &record,
            )?);
            records.push(record);
            if !bumped.contains_key(arn) {
                let key = instance_key_for(cluster, arn);
                guards.push(repo::unchanged_since(&key, *rev));
                let mut next = ci.clone();
                next.version = Some(next.version.unwrap_or(0) + 1);
                bumped.insert(arn.clone(), next);
            }
        }
        for (arn, ci) in &bumped {
            ops.push(repo::put_op(&instance_key_for(cluster, arn), ci)?);
        }
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
    launch_type: Option<String>,
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
    let launch_type = launch_type.unwrap_or_else(|| "EC2".into());
    if !matches!(launch_type.as_str(), "EC2" | "FARGATE" | "EXTERNAL") {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid launchType '{launch_type}': use EC2, FARGATE or EXTERNAL."
        )));
    }
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
    let requirements = task_requirements(&definition, overrides.as_ref());
    let overrides = full_overrides(&definition, overrides);
    Ok(TaskSpec {
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
    let key = repo::task_key(cluster, last_segment(task));
    let current = repo::get::<TaskRecord>(&*plane.store, &key)
        .await?
        .ok_or_else(task_not_found)?;
    let instance_gone = match &current.0.task.container_instance_arn {
        Some(arn) => {
            match repo::get::<ContainerInstance>(&*plane.store, &instance_key_for(cluster, arn))
                .await?
            {
                Some((ci, _)) => ci.status.as_deref() == Some(status::INACTIVE),
                None => true,
            }
        }
        None => true,
    };
    repo::update::<TaskRecord, _>(&*plane.store, &key, |rec| {
        let t = &mut rec.task;
        if t.last_status.as_deref() == Some(status::STOPPED) {
            return Ok(());
        }
        let now = now_epoch();
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
