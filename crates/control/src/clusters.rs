//! CreateCluster, DescribeClusters, ListClusters, UpdateCluster, UpdateClusterSettings,
//! DeleteCluster, and the cluster lookup every other call goes through.

use crate::capacity_providers;
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::{account_settings, repo};
use crate::tags::validate_tags;
use crate::wire::{parse, to_output};
use gantry_model::arn::cluster_name;
use gantry_model::types::{Cluster, ClusterSetting, ContainerInstance, KeyValuePair, Tag, Task};
use gantry_model::{status, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

pub const DEFAULT_CLUSTER: &str = "default";

/// The cluster a call addresses: by name or ARN, `default` when omitted. Unknown or deleted
/// clusters raise `ClusterNotFoundException`, `default` included: as on ECS, the API never
/// creates it on first use (a host's registration does, see [`resolve_for_registration`]).
pub async fn resolve(plane: &ControlPlane, cluster: Option<&str>) -> EcsResult<Cluster> {
    let given = cluster.map(str::trim).filter(|c| !c.is_empty());
    let name = given.map(cluster_name).unwrap_or(DEFAULT_CLUSTER);
    if name == gantry_model::FARGATE_POOL {
        return Err(EcsError::cluster_not_found());
    }
    match repo::get::<Cluster>(&*plane.store, &repo::cluster_key(name)).await? {
        Some((cl, _)) if cl.status.as_deref() == Some(status::ACTIVE) => Ok(cl),
        _ => Err(EcsError::cluster_not_found()),
    }
}

/// The cluster a host registers into: as [`resolve`], except that a host joining `default`
/// (by naming it or no cluster) creates it when it is missing, as ECS's agent does when it
/// starts (it calls CreateCluster for `default` and no other).
pub async fn resolve_for_registration(
    plane: &ControlPlane,
    cluster: Option<&str>,
) -> EcsResult<Cluster> {
    let given = cluster.map(str::trim).filter(|c| !c.is_empty());
    if given.is_none_or(|c| cluster_name(c) == DEFAULT_CLUSTER) {
        ensure_cluster(plane, DEFAULT_CLUSTER).await
    } else {
        resolve(plane, given).await
    }
}

/// The Fargate pool's hidden cluster, created when its first host registers.
pub async fn ensure_fargate_pool(plane: &ControlPlane) -> EcsResult<Cluster> {
    ensure_cluster(plane, gantry_model::FARGATE_POOL).await
}

async fn ensure_cluster(plane: &ControlPlane, name: &str) -> EcsResult<Cluster> {
    let key = repo::cluster_key(name);
    loop {
        let existing = repo::get::<Cluster>(&*plane.store, &key).await?;
        match existing {
            Some((cl, _)) if cl.status.as_deref() == Some(status::ACTIVE) => return Ok(cl),
            other => {
                let rev = other.map(|(_, rev)| rev).unwrap_or(0);
                // Created by a call that names no cluster: the account default applies.
                let insights = account_default_insights(plane).await?;
                let cl = new_cluster(
                    plane,
                    name,
                    None,
                    Some(vec![insights_setting(insights)]),
                    None,
                    None,
                    None,
                );
                if repo::commit(
                    &*plane.store,
                    vec![repo::unchanged_since(&key, rev)],
                    vec![repo::put_op(&key, &cl)?],
                )
                .await?
                {
                    return Ok(cl);
                }
            }
        }
    }
}

pub fn name_of(cl: &Cluster) -> &str {
    cl.cluster_name.as_deref().unwrap_or(DEFAULT_CLUSTER)
}

fn new_cluster(
    plane: &ControlPlane,
    name: &str,
    tags: Option<Vec<Tag>>,
    settings: Option<Vec<ClusterSetting>>,
    configuration: Option<Value>,
    capacity_providers: Option<Vec<String>>,
    strategy: Option<Vec<Value>>,
) -> Cluster {
    Cluster {
        cluster_arn: Some(plane.scope().cluster(name)),
        cluster_name: Some(name.to_string()),
        status: Some(status::ACTIVE.into()),
        tags: Some(tags.unwrap_or_default()),
        settings,
        configuration,
        capacity_providers: Some(capacity_providers.unwrap_or_default()),
        default_capacity_provider_strategy: Some(strategy.unwrap_or_default()),
        ..Default::default()
    }
}

/// The account's default `containerInsights` (for clusters no principal asked for).
async fn account_default_insights(plane: &ControlPlane) -> EcsResult<String> {
    let account = &plane.scope().account;
    account_settings::effective_value(
        &*plane.store,
        account,
        &account_settings::root_arn(account),
        account_settings::CONTAINER_INSIGHTS,
    )
    .await
}

fn insights_setting(value: String) -> ClusterSetting {
    ClusterSetting {
        name: account_settings::CONTAINER_INSIGHTS.into(),
        value,
    }
}

fn validate_cluster_name(name: &str) -> EcsResult<()> {
    validate_resource_name("cluster", name)
}

/// Cluster and service names: up to 255 letters, numbers, hyphens and underscores.
pub fn validate_resource_name(kind: &str, name: &str) -> EcsResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(EcsError::invalid_parameter(format!(
            "Invalid {kind} name '{name}': up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )))
    }
}

fn validate_settings(settings: &[ClusterSetting]) -> EcsResult<()> {
    for s in settings {
        if s.name != "containerInsights" {
            return Err(EcsError::invalid_parameter(format!(
                "Unknown cluster setting '{}'. Valid names: containerInsights.",
                s.name
            )));
        }
        if !matches!(s.value.as_str(), "enabled" | "disabled" | "enhanced") {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid value '{}' for containerInsights: use enabled, disabled or enhanced.",
                s.value
            )));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateClusterInput {
    cluster_name: Option<String>,
    tags: Option<Vec<Tag>>,
    settings: Option<Vec<ClusterSetting>>,
    configuration: Option<Value>,
    capacity_providers: Option<Vec<String>>,
    default_capacity_provider_strategy: Option<Vec<Value>>,
    service_connect_defaults: Option<Value>,
}

/// CreateCluster. A cluster created without a `containerInsights` setting gets
/// `default_insights`, the caller's effective `containerInsights` account setting (as ECS
/// does), so DescribeClusters shows what the cluster was created with.
pub async fn create(
    plane: &ControlPlane,
    input: Value,
    default_insights: &str,
) -> EcsResult<Value> {
    let mut req: CreateClusterInput = parse(input)?;
    let name = req
        .cluster_name
        .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
    validate_cluster_name(&name)?;
    if let Some(tags) = &req.tags {
        validate_tags(tags)?;
    }
    if let Some(settings) = &req.settings {
        validate_settings(settings)?;
    }
    let settings = req.settings.get_or_insert_with(Vec::new);
    if !settings
        .iter()
        .any(|s| s.name == account_settings::CONTAINER_INSIGHTS)
    {
        settings.push(insights_setting(default_insights.to_string()));
    }
    let key = repo::cluster_key(&name);
    loop {
        // Capacity providers and the default strategy: PutClusterCapacityProviders' rules.
        let capacity = capacity_providers::for_cluster(
            plane,
            &name,
            req.capacity_providers.as_deref().unwrap_or_default(),
            req.default_capacity_provider_strategy
                .as_deref()
                .unwrap_or_default(),
        )
        .await?;
        let existing = repo::get::<Cluster>(&*plane.store, &key).await?;
        if let Some((cl, _)) = &existing {
            // CreateCluster is idempotent on an ACTIVE cluster, as on ECS.
            if cl.status.as_deref() == Some(status::ACTIVE) {
                return to_output(
                    &json!({"cluster": render(plane, cl.clone(), &Include::all()).await?}),
                );
            }
        }
        let rev = existing.map(|(_, rev)| rev).unwrap_or(0);
        let mut cl = new_cluster(
            plane,
            &name,
            req.tags.clone(),
            req.settings.clone(),
            req.configuration.clone(),
            Some(capacity.providers),
            Some(capacity.strategy),
        );
        cl.service_connect_defaults = req.service_connect_defaults.clone();
        let mut guards = vec![repo::unchanged_since(&key, rev)];
        guards.extend(capacity.guards);
        let mut ops = vec![repo::put_op(&key, &cl)?];
        ops.extend(capacity.ops);
        if repo::commit(&*plane.store, guards, ops).await? {
            return to_output(&json!({"cluster": render(plane, cl, &Include::all()).await?}));
        }
    }
}

pub struct Include {
    pub tags: bool,
    pub settings: bool,
    pub statistics: bool,
    pub configurations: bool,
}

impl Include {
    fn all() -> Self {
        Include {
            tags: true,
            settings: true,
            statistics: false,
            configurations: true,
        }
    }
    fn parse(include: &[String]) -> EcsResult<Self> {
        let mut inc = Include {
            tags: false,
            settings: false,
            statistics: false,
            configurations: false,
        };
        for i in include {
            match i.as_str() {
                "TAGS" => inc.tags = true,
                "SETTINGS" => inc.settings = true,
                "STATISTICS" => inc.statistics = true,
                "CONFIGURATIONS" => inc.configurations = true,
                "ATTACHMENTS" => {}
                other => {
                    return Err(EcsError::invalid_parameter(format!(
                        "Invalid include value '{other}': use ATTACHMENTS, CONFIGURATIONS, SETTINGS, STATISTICS or TAGS."
                    )))
                }
            }
        }
        Ok(inc)
    }
}

/// A cluster as Describe returns it: counts derived from the instances and tasks in it,
/// optional parts only when asked for.
async fn render(plane: &ControlPlane, mut cl: Cluster, include: &Include) -> EcsResult<Cluster> {
    let name = name_of(&cl).to_string();
    let mut draining_services = 0;
    let (mut running_fargate, mut pending_fargate) = (0i64, 0i64);
    if cl.status.as_deref() == Some(status::ACTIVE) {
        let instances: Vec<(ContainerInstance, i64)> =
            repo::list(&*plane.store, &repo::instances_prefix(&name)).await?;
        cl.registered_container_instances_count = instances
            .iter()
            .filter(|(ci, _)| ci.status.as_deref() != Some(status::INACTIVE))
            .count() as i64;
        let tasks: Vec<(Task, i64)> = repo::list(&*plane.store, &repo::tasks_prefix(&name)).await?;
        cl.running_tasks_count = 0;
        cl.pending_tasks_count = 0;
        for (t, _) in &tasks {
            let fargate = t.launch_type.as_deref() == Some("FARGATE");
            match t.last_status.as_deref() {
                Some(status::RUNNING) => {
                    cl.running_tasks_count += 1;
                    running_fargate += i64::from(fargate);
                }
                Some(status::PENDING) | Some(status::PROVISIONING) => {
                    cl.pending_tasks_count += 1;
                    pending_fargate += i64::from(fargate);
                }
                _ => {}
            }
        }
        cl.active_services_count = plane.cache.services_in_status(&name, status::ACTIVE) as i64;
        draining_services = plane.cache.services_in_status(&name, status::DRAINING) as i64;
    }
    if !include.tags {
        cl.tags = None;
    }
    if include.settings {
        if cl.settings.as_ref().is_none_or(|s| s.is_empty()) {
            cl.settings = Some(vec![ClusterSetting {
                name: "containerInsights".into(),
                value: "disabled".into(),
            }]);
        }
    } else {
        cl.settings = None;
    }
    if !include.configurations {
        cl.configuration = None;
    }
    if include.statistics {
        let stat = |name: &str, v: i64| KeyValuePair {
            name: Some(name.into()),
            value: Some(v.to_string()),
        };
        // Fargate services: launch type FARGATE, or a strategy of Fargate providers.
        let fargate_services = |status: &str| {
            plane
                .cache
                .services_of_cluster(&name)
                .iter()
                .filter(|s| s.value.service.status == status)
                .filter(|s| {
                    let svc = &s.value.service;
                    svc.launch_type.as_deref() == Some("FARGATE")
                        || svc
                            .extra
                            .get("capacityProviderStrategy")
                            .and_then(Value::as_array)
                            .and_then(|a| a.first())
                            .and_then(|i| i.get("capacityProvider"))
                            .and_then(Value::as_str)
                            .is_some_and(|p| matches!(p, "FARGATE" | "FARGATE_SPOT"))
                })
                .count() as i64
        };
        let (active_fargate, draining_fargate) = (
            fargate_services(status::ACTIVE),
            fargate_services(status::DRAINING),
        );
        cl.statistics = Some(vec![
            stat(
                "runningEC2TasksCount",
                cl.running_tasks_count - running_fargate,
            ),
            stat(
                "pendingEC2TasksCount",
                cl.pending_tasks_count - pending_fargate,
            ),
            stat("runningFargateTasksCount", running_fargate),
            stat("pendingFargateTasksCount", pending_fargate),
            stat(
                "activeEC2ServiceCount",
                cl.active_services_count - active_fargate,
            ),
            stat("activeFargateServiceCount", active_fargate),
            stat(
                "drainingEC2ServiceCount",
                draining_services - draining_fargate,
            ),
            stat("drainingFargateServiceCount", draining_fargate),
        ]);
    }
    Ok(cl)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeClustersInput {
    clusters: Option<Vec<String>>,
    include: Option<Vec<String>>,
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeClustersInput = parse(input)?;
    let include = Include::parse(req.include.as_deref().unwrap_or_default())?;
    let names = req
        .clusters
        .unwrap_or_else(|| vec![DEFAULT_CLUSTER.to_string()]);
    if names.len() > 100 {
        return Err(EcsError::invalid_parameter(
            "At most 100 clusters can be described at once.",
        ));
    }
    let mut clusters = Vec::new();
    let mut failures = Vec::new();
    for given in names {
        let name = cluster_name(&given);
        let found = if name == gantry_model::FARGATE_POOL {
            None
        } else {
            repo::get::<Cluster>(&*plane.store, &repo::cluster_key(name)).await?
        };
        match found {
            Some((cl, _)) => clusters.push(render(plane, cl, &include).await?),
            None => failures.push(gantry_model::types::Failure::missing(
                if given.starts_with("arn:") {
                    given.clone()
                } else {
                    plane.scope().cluster(name)
                },
            )),
        }
    }
    to_output(&json!({"clusters": clusters, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    next_token: Option<String>,
    max_results: Option<i32>,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    let clusters: Vec<(Cluster, i64)> = repo::list(&*plane.store, repo::CLUSTERS).await?;
    let arns: Vec<String> = clusters
        .into_iter()
        .filter(|(c, _)| c.status.as_deref() == Some(status::ACTIVE))
        .filter(|(c, _)| c.cluster_name.as_deref() != Some(gantry_model::FARGATE_POOL))
        .filter_map(|(c, _)| c.cluster_arn)
        .collect();
    let (page, next) = pagination::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
    let mut out = json!({"clusterArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateClusterInput {
    cluster: String,
    settings: Option<Vec<ClusterSetting>>,
    configuration: Option<Value>,
    service_connect_defaults: Option<Value>,
}

pub async fn update(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateClusterInput = parse(input)?;
    if let Some(s) = &req.settings {
        validate_settings(s)?;
    }
    let cl = resolve(plane, Some(&req.cluster)).await?;
    let updated =
        repo::update::<Cluster, _>(&*plane.store, &repo::cluster_key(name_of(&cl)), |c| {
            if let Some(s) = &req.settings {
                merge_settings(c, s);
            }
            if let Some(conf) = &req.configuration {
                c.configuration = Some(conf.clone());
            }
            if let Some(scd) = &req.service_connect_defaults {
                c.service_connect_defaults = Some(scd.clone());
            }
            Ok(())
        })
        .await?
        .ok_or_else(EcsError::cluster_not_found)?;
    to_output(&json!({"cluster": render(plane, updated, &Include::all()).await?}))
}

fn merge_settings(c: &mut Cluster, new: &[ClusterSetting]) {
    let settings = c.settings.get_or_insert_with(Vec::new);
    for s in new {
        match settings.iter_mut().find(|e| e.name == s.name) {
            Some(e) => e.value = s.value.clone(),
            None => settings.push(s.clone()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateSettingsInput {
    cluster: String,
    settings: Vec<ClusterSetting>,
}

pub async fn update_settings(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateSettingsInput = parse(input)?;
    validate_settings(&req.settings)?;
    let cl = resolve(plane, Some(&req.cluster)).await?;
    let updated =
        repo::update::<Cluster, _>(&*plane.store, &repo::cluster_key(name_of(&cl)), |c| {
            merge_settings(c, &req.settings);
            Ok(())
        })
        .await?
        .ok_or_else(EcsError::cluster_not_found)?;
    to_output(&json!({"cluster": render(plane, updated, &Include::all()).await?}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteClusterInput {
    cluster: String,
}

pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeleteClusterInput = parse(input)?;
    let cl = resolve(plane, Some(&req.cluster)).await?;
    let name = name_of(&cl).to_string();
    let (instances, _) = plane
        .store
        .range(&repo::instances_prefix(&name))
        .await
        .map_err(repo::store_error)?;
    let mut guards = Vec::new();
    let mut ops = Vec::new();
    // `gantry dev`'s own instance of the cluster goes with it (its agent stops when it sees
    // the cluster gone); any other active instance keeps the cluster.
    let mut local_instances = Vec::new();
    for kv in &instances {
        let mut ci: ContainerInstance = repo::decode(kv)?;
        if ci.status.as_deref() != Some(status::INACTIVE) {
            let local = plane.config.local_capacity
                && ci
                    .attributes
                    .iter()
                    .flatten()
                    .any(|a| a.name == gantry_model::requirements::LOCAL_CAPACITY_ATTRIBUTE);
            if !local {
                return Err(EcsError::new(
                    "ClusterContainsContainerInstancesException",
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
            ci.status = Some(status::INACTIVE.into());
            ci.version = Some(ci.version.unwrap_or(0) + 1);
            ops.push(repo::put_op(&kv.key, &ci)?);
            local_instances.extend(ci.container_instance_arn.clone());
        }
        guards.push(repo::unchanged_since(&kv.key, kv.mod_revision));
    }
    let services = plane.cache.services_in_status(&name, status::ACTIVE)
        + plane.cache.services_in_status(&name, status::DRAINING);
    if services > 0 {
        return Err(EcsError::new(
            "ClusterContainsServicesException",
            "The Cluster cannot be deleted while Services are active. Delete its services first (aws ecs delete-service --force).",
        ));
    }
    let (tasks, _) = plane
        .store
        .range(&repo::tasks_prefix(&name))
        .await
        .map_err(repo::store_error)?;
    for kv in &tasks {
        let t: Task = repo::decode(kv)?;
        if t.last_status.as_deref() != Some(status::STOPPED) {
            return Err(EcsError::new(
                "ClusterContainsTasksException",
                "The Cluster cannot be deleted while Tasks are active.",
            ));
        }
        guards.push(repo::unchanged_since(&kv.key, kv.mod_revision));
    }
    let key = repo::cluster_key(&name);
    let (mut current, rev) = repo::get::<Cluster>(&*plane.store, &key)
        .await?
        .ok_or_else(EcsError::cluster_not_found)?;
    current.status = Some(status::INACTIVE.into());
    guards.push(repo::unchanged_since(&key, rev));
    ops.push(repo::put_op(&key, &current)?);
    if !repo::commit(&*plane.store, guards, ops).await? {
        return Err(EcsError::new(
            "UpdateInProgressException",
            "The cluster changed while it was being deleted; try again.",
        ));
    }
    for arn in &local_instances {
        crate::iam::keys::revoke_agent_credentials(plane, arn).await?;
    }
    let out = render(plane, current, &Include::all()).await?;
    to_output(&json!({"cluster": out}))
}

/// Create `name` if it does not exist (or was deleted); used by `gantry dev` so its agent has
/// a cluster to join.
pub async fn ensure(plane: &ControlPlane, name: &str) -> EcsResult<()> {
    let insights = account_default_insights(plane).await?;
    create(plane, json!({"clusterName": name}), &insights).await?;
    Ok(())
}
