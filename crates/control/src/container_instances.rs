//! RegisterContainerInstance, DescribeContainerInstances, ListContainerInstances,
//! DeregisterContainerInstance, UpdateContainerInstancesState, DiscoverPollEndpoint.
//!
//! An instance stores what its agent registered; what remains free is derived from the tasks
//! placed on it whenever it is described, so the two can never disagree.

use crate::attributes::validate_attribute;
use crate::clusters;
use crate::lifecycle;
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::cache::TaskEntry;
use crate::state::keys::instance_key_for;
use crate::state::records::capacity;
use crate::state::records::TaskRecord;
use crate::state::repo;
use crate::tags::validate_tags;
use crate::wire::{parse, to_output, RequestContext};
use gantry_model::arn::cluster_of_arn;
use gantry_model::types::{
    Attribute, ContainerInstance, ContainerInstanceHealthStatus, Failure,
    InstanceHealthCheckResult, Resource, Tag, VersionInfo,
};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

/// An instance as Describe returns it: remaining resources and task counts derived from the
/// tasks on it.
pub fn render<'t>(
    mut ci: ContainerInstance,
    tasks: impl IntoIterator<Item = &'t TaskRecord>,
    with_tags: bool,
) -> ContainerInstance {
    let arn = ci.container_instance_arn.clone().unwrap_or_default();
    let cap = capacity(&ci);
    let on_it: Vec<&TaskRecord> = tasks
        .into_iter()
        .filter(|t| t.task.container_instance_arn.as_deref() == Some(arn.as_str()))
        .filter(|t| t.holds_resources())
        .collect();
    // Checked: registered resources come from the agent, task sizes from clients.
    let used =
        |f: fn(&TaskRecord) -> i64| on_it.iter().fold(0i64, |sum, t| sum.saturating_add(f(t)));
    let as_i32 = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    let cpu_left = as_i32(cap.cpu.saturating_sub(used(TaskRecord::cpu)));
    let mem_left = as_i32(cap.memory.saturating_sub(used(TaskRecord::memory)));
    let mut tcp: Vec<String> = cap.tcp_ports.iter().map(u16::to_string).collect();
    let mut udp: Vec<String> = cap.udp_ports.iter().map(u16::to_string).collect();
    for t in &on_it {
        tcp.extend(t.internal.tcp_ports.iter().map(u16::to_string));
        udp.extend(t.internal.udp_ports.iter().map(u16::to_string));
    }
    ci.remaining_resources = Some(vec![
        Resource::integer("CPU", cpu_left),
        Resource::integer("MEMORY", mem_left),
        Resource::string_set("PORTS", tcp),
        Resource::string_set("PORTS_UDP", udp),
    ]);
    ci.running_tasks_count = on_it
        .iter()
        .filter(|t| t.task.last_status.as_deref() == Some(status::RUNNING))
        .count() as i64;
    ci.pending_tasks_count = on_it
        .iter()
        .filter(|t| t.task.last_status.as_deref() == Some(status::PENDING))
        .count() as i64;
    if !with_tags {
        ci.tags = None;
    }
    ci.agent_disconnected_at = None;
    ci.agent_replica = None;
    ci
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterInput {
    cluster: Option<String>,
    total_resources: Option<Vec<Resource>>,
    version_info: Option<VersionInfo>,
    container_instance_arn: Option<String>,
    attributes: Option<Vec<Attribute>>,
    tags: Option<Vec<Tag>>,
}

pub async fn register(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: RegisterInput = parse(input)?;
    let resources = req.total_resources.unwrap_or_default();
    for name in ["CPU", "MEMORY"] {
        let ok = resources.iter().any(|r| {
            r.name.as_deref() == Some(name)
                && r.integer_value
                    .map(i64::from)
                    .or(r.long_value)
                    .unwrap_or(-1)
                    >= 0
        });
        if !ok {
            return Err(EcsError::client(format!(
                "totalResources must include {name} as a non-negative INTEGER resource."
            )));
        }
    }
    for a in req.attributes.iter().flatten() {
        validate_attribute(a)?;
    }
    if let Some(t) = &req.tags {
        validate_tags(t)?;
    }
    // A Fargate host registers in the hidden pool, which no other call can name.
    let cluster = if req.cluster.as_deref().map(gantry_model::arn::cluster_name)
        == Some(gantry_model::FARGATE_POOL)
    {
        clusters::ensure_fargate_pool(plane).await?
    } else {
        clusters::resolve_for_registration(plane, req.cluster.as_deref()).await?
    };
    let cname = clusters::name_of(&cluster).to_string();
    let mut registered = resources.clone();
    for name in ["PORTS", "PORTS_UDP"] {
        if !registered.iter().any(|r| r.name.as_deref() == Some(name)) {
            registered.push(Resource::string_set(name, Vec::new()));
        }
    }
    let attributes: Vec<Attribute> = req
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|mut a| {
            a.target_type = None;
            a.target_id = None;
            a
        })
        .collect();

    // An agent that comes back with the ARN it saved keeps its identity (and its tasks).
    if let Some(arn) = &req.container_instance_arn {
        if cluster_of_arn(arn) == Some(cname.as_str()) {
            let key = instance_key_for(&cname, arn);
            let updated = repo::update::<ContainerInstance, _>(&*plane.store, &key, |ci| {
                if ci.status.as_deref() == Some(status::INACTIVE) {
                    return Err(EcsError::client(
                        "The container instance was deregistered; register without containerInstanceArn.",
                    ));
                }
                ci.registered_resources = Some(registered.clone());
                ci.version_info = req.version_info.clone().or(ci.version_info.take());
                merge_attributes(ci, &attributes);
                ci.capacity_provider_name = capacity_provider_of(&attributes);
                ci.version = Some(ci.version.unwrap_or(0) + 1);
                Ok(())
            })
            .await;
            match updated {
                Ok(Some(ci)) => return describe_one(plane, ci, true),
                Ok(None) => {}
                Err(e) if e.code == "ClientException" => {}
                Err(e) => return Err(e),
            }
        }
    }

    let id = uuid::Uuid::new_v4().simple().to_string();
    let arn = plane.scope().container_instance(&cname, &id);
    let ci = ContainerInstance {
        container_instance_arn: Some(arn),
        ec2_instance_id: Some(format!("gantry-{}", &id[..12])),
        version: Some(1),
        version_info: req.version_info,
        registered_resources: Some(registered),
        status: Some(status::ACTIVE.into()),
        agent_connected: false,
        capacity_provider_name: capacity_provider_of(&attributes),
        attributes: Some(attributes),
        registered_at: Some(now_epoch()),
        tags: Some(req.tags.unwrap_or_default()),
        ..Default::default()
    };
    let key = repo::instance_key(&cname, &id);
    // Guarded by the cluster's revision, so a concurrent DeleteCluster cannot leave an
    // instance in an INACTIVE cluster.
    let cluster_key = repo::cluster_key(&cname);
    let cluster_rev = repo::get::<gantry_model::types::Cluster>(&*plane.store, &cluster_key)
        .await?
        .map(|(_, rev)| rev)
        .ok_or_else(EcsError::cluster_not_found)?;
    let committed = repo::commit(
        &*plane.store,
        vec![
            repo::unchanged_since(&key, 0),
            repo::unchanged_since(&cluster_key, cluster_rev),
        ],
        vec![repo::put_op(&key, &ci)?],
    )
    .await?;
    if !committed {
        return Err(EcsError::new(
            "UpdateInProgressException",
            "The cluster changed during registration; register again.",
        ));
    }
    describe_one(plane, ci, true)
}

fn capacity_provider_of(attributes: &[Attribute]) -> Option<String> {
    attributes
        .iter()
        .find(|a| a.name == gantry_model::requirements::CAPACITY_PROVIDER_ATTRIBUTE)
        .and_then(|a| a.value.clone())
}

fn merge_attributes(ci: &mut ContainerInstance, new: &[Attribute]) {
    let attrs = ci.attributes.get_or_insert_with(Vec::new);
    for a in new {
        match attrs.iter_mut().find(|e| e.name == a.name) {
            Some(e) => e.value = a.value.clone(),
            None => attrs.push(a.clone()),
        }
    }
}

/// Every task placed on the instance (STOPPED ones included), from the cache's index: only
/// the instance's own tasks are read.
fn tasks_on(plane: &ControlPlane, ci: &ContainerInstance) -> Vec<TaskEntry> {
    plane
        .cache
        .tasks_on_instance(ci.container_instance_arn.as_deref().unwrap_or_default())
}

/// The instance as Describe returns it, from its own tasks.
fn render_with_tasks(
    plane: &ControlPlane,
    ci: ContainerInstance,
    with_tags: bool,
) -> ContainerInstance {
    let on_it = tasks_on(plane, &ci);
    render(ci, on_it.iter().map(|e| &e.value), with_tags)
}

fn describe_one(plane: &ControlPlane, ci: ContainerInstance, with_tags: bool) -> EcsResult<Value> {
    Ok(json!({"containerInstance": to_output(&render_with_tasks(plane, ci, with_tags))?}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    cluster: Option<String>,
    container_instances: Vec<String>,
    include: Option<Vec<String>>,
}

/// What DescribeContainerInstances' `include` asks for besides the instances.
fn parse_include(include: &[String]) -> EcsResult<(bool, bool)> {
    let mut tags = false;
    let mut health = false;
    for i in include {
        match i.as_str() {
            "TAGS" => tags = true,
            "CONTAINER_INSTANCE_HEALTH" => health = true,
            other => {
                return Err(EcsError::invalid_parameter(format!(
                    "Invalid include value '{other}': use TAGS or CONTAINER_INSTANCE_HEALTH."
                )))
            }
        }
    }
    Ok((tags, health))
}

/// An instance's `healthStatus`, as `include: CONTAINER_INSTANCE_HEALTH` reports it: what the
/// lost-host handling recorded (IMPAIRED) while the agent stays away, else the state of the
/// agent's channel, which is how Gantry sees the container runtime on the host.
fn health_of(ci: &ContainerInstance, now: f64) -> ContainerInstanceHealthStatus {
    if !ci.agent_connected {
        if let Some(recorded) = &ci.health_status {
            return recorded.clone();
        }
    }
    let overall = if ci.agent_connected {
        "OK"
    } else {
        "INSUFFICIENT_DATA"
    };
    let since = ci.agent_disconnected_at.or(ci.registered_at).unwrap_or(now);
    ContainerInstanceHealthStatus {
        overall_status: Some(overall.into()),
        details: vec![InstanceHealthCheckResult {
            kind: Some("CONTAINER_RUNTIME".into()),
            status: Some(overall.into()),
            last_updated: Some(now),
            last_status_change: Some(since),
        }],
    }
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let (with_tags, with_health) = parse_include(req.include.as_deref().unwrap_or_default())?;
    if req.container_instances.len() > 100 {
        return Err(EcsError::invalid_parameter(
            "At most 100 container instances can be described at once.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for given in &req.container_instances {
        match repo::get::<ContainerInstance>(&*plane.store, &instance_key_for(&cname, given))
            .await?
        {
            Some((ci, _)) => {
                let health = with_health.then(|| health_of(&ci, now_epoch()));
                let mut rendered = render_with_tasks(plane, ci, with_tags);
                rendered.health_status = health;
                found.push(rendered);
            }
            None => failures.push(Failure::missing(if given.starts_with("arn:") {
                given.clone()
            } else {
                plane.scope().container_instance(&cname, given)
            })),
        }
    }
    Ok(json!({"containerInstances": to_output(&found)?, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    cluster: Option<String>,
    filter: Option<String>,
    status: Option<String>,
    next_token: Option<String>,
    max_results: Option<i32>,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    if let Some(s) = &req.status {
        if !matches!(
            s.as_str(),
            "ACTIVE" | "DRAINING" | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED"
        ) {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid status '{s}': use ACTIVE, DRAINING, REGISTERING, DEREGISTERING or REGISTRATION_FAILED."
            )));
        }
    }
    let filter = match &req.filter {
        Some(f) if !f.trim().is_empty() => Some(
            gantry_scheduler::InstanceFilter::parse(f)
                .map_err(|e| EcsError::invalid_parameter(format!("Invalid filter '{f}': {e}")))?,
        ),
        _ => None,
    };
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let instances: Vec<(ContainerInstance, i64)> =
        repo::list(&*plane.store, &repo::instances_prefix(&cname)).await?;
    let mut arns = Vec::new();
    for (ci, _) in instances {
        let st = ci.status.as_deref().unwrap_or("");
        let keep = match &req.status {
            Some(s) => st == s,
            None => st != status::INACTIVE,
        };
        if !keep {
            continue;
        }
        if let Some(expr) = &filter {
            let on_it = tasks_on(plane, &ci);
            let snap = lifecycle::snapshot_of(&ci, on_it.iter().map(|e| &e.value));
            if !expr.matches(&snap) {
                continue;
            }
        }
        if let Some(arn) = ci.container_instance_arn {
            arns.push(arn);
        }
    }
    let (page, next) = pagination::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
    let mut out = json!({"containerInstanceArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeregisterInput {
    cluster: Option<String>,
    container_instance: String,
    force: Option<bool>,
}

pub async fn deregister(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeregisterInput = parse(input)?;
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let key = instance_key_for(&cname, &req.container_instance);
    let (ci, _) = repo::get::<ContainerInstance>(&*plane.store, &key)
        .await?
        .ok_or_else(|| {
            EcsError::invalid_parameter(format!(
                "Container instance '{}' not found in cluster {cname}.",
                req.container_instance
            ))
        })?;
    let on_it = tasks_on(plane, &ci);
    let active: Vec<&TaskRecord> = on_it
        .iter()
        .map(|e| &e.value)
        .filter(|t| t.task.last_status.as_deref() != Some(status::STOPPED))
        .collect();
    if !active.is_empty() && !req.force.unwrap_or(false) {
        return Err(EcsError::invalid_parameter(format!(
            "Found {} running tasks on the instance. Stop them first or pass force=true.",
            active.len()
        )));
    }
    // INACTIVE first: no placement can land on it after this commit (placements are guarded
    // by the instance's revision), and stopping its tasks then marks them STOPPED at once,
    // since no agent will report for an INACTIVE instance.
    let updated = repo::update::<ContainerInstance, _>(&*plane.store, &key, |ci| {
        ci.status = Some(status::INACTIVE.into());
        ci.version = Some(ci.version.unwrap_or(0) + 1);
        Ok(())
    })
    .await?
    .ok_or_else(|| EcsError::invalid_parameter("Container instance not found."))?;
    for entry in tasks_on(plane, &updated) {
        let t = &entry.value;
        if t.task.last_status.as_deref() == Some(status::STOPPED) {
            continue;
        }
        if let Some(task_arn) = &t.task.task_arn {
            // A Fargate pool host's tasks belong to their users' clusters.
            lifecycle::request_stop(
                plane,
                t.cluster_name(),
                task_arn,
                gantry_model::stop_code::USER_INITIATED,
                "Container instance deregistered",
            )
            .await?;
        }
    }
    // Its agent is cut off: its credentials go with the instance.
    if let Some(arn) = &updated.container_instance_arn {
        crate::iam::keys::revoke_agent_credentials(plane, arn).await?;
    }
    describe_one(plane, updated, true)
}

/// Internal error code: UpdateContainerInstancesState turns it into a per-instance failure.
const INACTIVE_INSTANCE: &str = "GantryInactiveInstance";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateStateInput {
    cluster: Option<String>,
    container_instances: Vec<String>,
    status: String,
}

pub async fn update_state(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateStateInput = parse(input)?;
    if !matches!(req.status.as_str(), "ACTIVE" | "DRAINING") {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid status '{}': container instances can be set to ACTIVE or DRAINING.",
            req.status
        )));
    }
    if req.container_instances.len() > 10 {
        return Err(EcsError::invalid_parameter(
            "At most 10 container instances can be updated at once.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let mut updated = Vec::new();
    let mut failures = Vec::new();
    for given in &req.container_instances {
        let key = instance_key_for(&cname, given);
        let result = repo::update::<ContainerInstance, _>(&*plane.store, &key, |ci| {
            if ci.status.as_deref() == Some(status::INACTIVE) {
                return Err(EcsError::new(
                    INACTIVE_INSTANCE,
                    "The container instance is INACTIVE.",
                ));
            }
            if ci.status.as_deref() != Some(req.status.as_str()) {
                ci.status = Some(req.status.clone());
                ci.version = Some(ci.version.unwrap_or(0) + 1);
            }
            Ok(())
        })
        .await;
        match result {
            Ok(Some(ci)) => updated.push(render_with_tasks(plane, ci, false)),
            Ok(None) => failures.push(Failure::missing(given.clone())),
            Err(e) if e.code == INACTIVE_INSTANCE => failures.push(Failure {
                arn: Some(given.clone()),
                reason: Some("INACTIVE".into()),
                detail: None,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(json!({"containerInstances": to_output(&updated)?, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscoverInput {
    #[allow(dead_code)]
    container_instance: Option<String>,
    #[allow(dead_code)]
    cluster: Option<String>,
}

pub async fn discover_poll_endpoint(
    _plane: &ControlPlane,
    ctx: &RequestContext,
    input: Value,
) -> EcsResult<Value> {
    let _req: DiscoverInput = parse(input)?;
    let host = ctx.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let endpoint = format!("http://{host}/");
    Ok(json!({
        "endpoint": endpoint,
        "telemetryEndpoint": endpoint,
        "serviceConnectEndpoint": endpoint,
    }))
}
