//! CreateCapacityProvider, DescribeCapacityProviders, UpdateCapacityProvider,
//! DeleteCapacityProvider and PutClusterCapacityProviders, and the check of a cluster's
//! capacity providers and default strategy that CreateCluster shares ([`for_cluster`]).
//!
//! - `FARGATE` and `FARGATE_SPOT` always exist and have no record: always ACTIVE, listed by
//!   DescribeCapacityProviders, never created, updated or deleted.
//! - Auto Scaling group providers live at `capacity-providers/<name>`. Managed scaling,
//!   managed termination protection and managed draining are validated and recorded with the
//!   defaults AWS fills in (scaling DISABLED, target 100, steps 1 and 10000, warm-up 300 s;
//!   termination protection DISABLED; draining ENABLED), and not acted on: Gantry has no Auto
//!   Scaling groups. An Auto Scaling group serves one ACTIVE provider at a time, kept by the
//!   index key `capacity-provider-asgs/<group name>`.
//! - Association is derived, not duplicated: a provider is associated with the ACTIVE
//!   clusters whose `capacityProviders` name it (clusters are few and read from the store). A
//!   transaction that associates an Auto Scaling group provider with a cluster rewrites the
//!   provider's record guarded by its revision, and a delete is guarded by the same revision,
//!   so two clusters cannot take one provider at once and a provider cannot be deleted while
//!   it is being associated. A deleted cluster (INACTIVE) frees its providers: AWS raises
//!   `ClusterContainsCapacityProviderException` only for cluster-scoped (Managed Instances)
//!   providers ("The Cluster cannot be deleted while Cluster Scoped Capacity Providers are
//!   attached to the cluster."), which Gantry does not offer.
//! - DeleteCapacityProvider on a provider associated with a cluster (or named by a service's
//!   strategy) is not an error, as on AWS: the answer is 200 with status ACTIVE, updateStatus
//!   DELETE_FAILED and the reason AWS gives, and Describe shows the same. Otherwise the
//!   provider becomes INACTIVE with DELETE_COMPLETE at once (there is nothing to
//!   deprovision). INACTIVE providers stay describable by name or ARN (what AWS does "for a
//!   while", and what Terraform's delete waiter reads as gone), are left out of listings, and
//!   free their name and Auto Scaling group for reuse; Gantry keeps the record until the name
//!   is reused (a few hundred bytes each).
//! - Updates take effect at once: updateStatus UPDATE_COMPLETE (Terraform waits for it).

use crate::lifecycle::{
    in_range, is_fargate_provider as is_fargate, parse_strategy, provider_name,
};
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::repo;
use crate::tags::{validate_tags, want_tags};
use crate::wire::{parse, to_output};
use gantry_model::arn::cluster_name;
use gantry_model::types::{Cluster, Extra, Failure, Tag};
use gantry_model::{status, EcsError, EcsResult};
use gantry_store::{Compare, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub const FARGATE: &str = "FARGATE";
pub const FARGATE_SPOT: &str = "FARGATE_SPOT";
/// ECS's quota of capacity providers per cluster.
const MAX_PER_CLUSTER: usize = 20;
const MAX_DESCRIBE: usize = 100;
/// DescribeCapacityProviders pages: "This value can be between 1 and 10", 10 by default.
const PAGE_LIMIT: i32 = 10;
const CAS_ATTEMPTS: usize = 64;

const UPDATE_COMPLETE: &str = "UPDATE_COMPLETE";
const DELETE_COMPLETE: &str = "DELETE_COMPLETE";
const DELETE_FAILED: &str = "DELETE_FAILED";
const CREATE_COMPLETE: &str = "CREATE_COMPLETE";
const ENABLED: &str = "ENABLED";
const DISABLED: &str = "DISABLED";

/// An Auto Scaling group capacity provider as stored: the wire `CapacityProvider` (tags
/// included, as every record keeps them) and Gantry's own bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProviderRecord {
    pub capacity_provider_arn: String,
    pub name: String,
    pub status: String,
    pub auto_scaling_group_provider: AutoScalingGroupProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status_reason: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(rename = "type", default = "ec2_autoscaling")]
    pub kind: String,
    #[serde(default, rename = "gantryInternal")]
    pub internal: RecordInternal,
}

fn ec2_autoscaling() -> String {
    "EC2_AUTOSCALING".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordInternal {
    /// The key of the Auto Scaling group index this provider holds.
    #[serde(default)]
    pub asg_key: String,
    /// When the provider was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_at: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingGroupProvider {
    pub auto_scaling_group_arn: String,
    pub managed_scaling: ManagedScaling,
    pub managed_termination_protection: String,
    pub managed_draining: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedScaling {
    pub status: String,
    pub target_capacity: i64,
    pub minimum_scaling_step_size: i64,
    pub maximum_scaling_step_size: i64,
    pub instance_warmup_period: i64,
}

impl Default for ManagedScaling {
    /// What AWS answers for a provider created without `managedScaling`.
    fn default() -> Self {
        ManagedScaling {
            status: DISABLED.into(),
            target_capacity: 100,
            minimum_scaling_step_size: 1,
            maximum_scaling_step_size: 10000,
            instance_warmup_period: 300,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedScalingInput {
    status: Option<String>,
    target_capacity: Option<i64>,
    minimum_scaling_step_size: Option<i64>,
    maximum_scaling_step_size: Option<i64>,
    instance_warmup_period: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AsgProviderInput {
    auto_scaling_group_arn: Option<String>,
    managed_scaling: Option<ManagedScalingInput>,
    managed_termination_protection: Option<String>,
    managed_draining: Option<String>,
}

fn invalid(message: impl Into<String>) -> EcsError {
    EcsError::invalid_parameter(message)
}

fn does_not_exist() -> EcsError {
    EcsError::client(
        "The specified capacity provider does not exist. Specify a valid name or ARN and try again.",
    )
}

fn reserved(verb: &str) -> EcsError {
    EcsError::client(format!(
        "The FARGATE and FARGATE_SPOT capacity providers are reserved and can't be {verb}."
    ))
}

fn enabled_or_disabled(member: &str, value: &str) -> EcsResult<String> {
    match value {
        ENABLED | DISABLED => Ok(value.to_string()),
        other => Err(invalid(format!(
            "Invalid value '{other}' for {member}: use ENABLED or DISABLED."
        ))),
    }
}

/// `current` with what `input` sets, every member checked against the model's ranges.
fn managed_scaling(
    current: &ManagedScaling,
    input: &ManagedScalingInput,
) -> EcsResult<ManagedScaling> {
    const P: &str = "autoScalingGroupProvider.managedScaling";
    let mut out = current.clone();
    if let Some(s) = &input.status {
        out.status = enabled_or_disabled(&format!("{P}.status"), s)?;
    }
    if let Some(v) = input.target_capacity {
        out.target_capacity = in_range(&format!("{P}.targetCapacity"), v, 1, 100)?;
    }
    if let Some(v) = input.minimum_scaling_step_size {
        out.minimum_scaling_step_size =
            in_range(&format!("{P}.minimumScalingStepSize"), v, 1, 10000)?;
    }
    if let Some(v) = input.maximum_scaling_step_size {
        out.maximum_scaling_step_size =
            in_range(&format!("{P}.maximumScalingStepSize"), v, 1, 10000)?;
    }
    if let Some(v) = input.instance_warmup_period {
        out.instance_warmup_period = in_range(&format!("{P}.instanceWarmupPeriod"), v, 0, 10000)?;
    }
    if out.minimum_scaling_step_size > out.maximum_scaling_step_size {
        return Err(invalid(format!(
            "{P}.minimumScalingStepSize ({}) cannot be greater than maximumScalingStepSize ({}).",
            out.minimum_scaling_step_size, out.maximum_scaling_step_size
        )));
    }
    Ok(out)
}

/// The managed settings of `current` changed by `input` (defaults for a new provider).
fn apply_settings(
    current: &AutoScalingGroupProvider,
    input: &AsgProviderInput,
) -> EcsResult<AutoScalingGroupProvider> {
    let mut out = current.clone();
    if let Some(ms) = &input.managed_scaling {
        out.managed_scaling = managed_scaling(&current.managed_scaling, ms)?;
    }
    if let Some(v) = &input.managed_termination_protection {
        out.managed_termination_protection =
            enabled_or_disabled("autoScalingGroupProvider.managedTerminationProtection", v)?;
    }
    if let Some(v) = &input.managed_draining {
        out.managed_draining = enabled_or_disabled("autoScalingGroupProvider.managedDraining", v)?;
    }
    Ok(out)
}

/// Capacity provider names: 1–255 letters, numbers, underscores and hyphens, not starting
/// with `aws`, `ecs` or `fargate` in any case (so `FARGATE` cannot be created either).
fn validate_name(name: &str) -> EcsResult<()> {
    let lower = name.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !["aws", "ecs", "fargate"]
            .iter()
            .any(|p| lower.starts_with(p));
    if ok {
        Ok(())
    } else {
        Err(EcsError::client(
            "The specified capacity provider name is invalid. Up to 255 characters are allowed, including letters (upper and lowercase), numbers, underscores, and hyphens. The name cannot be prefixed with \"aws\", \"ecs\", or \"fargate\". Specify a valid name and try again.",
        ))
    }
}

/// The Auto Scaling group's name from its ARN (`…:autoScalingGroupName/<name>`) or name: an
/// ARN and a bare name of the same group are the same group.
fn asg_name(given: &str) -> &str {
    match given.split_once(":autoScalingGroupName/") {
        Some((_, name)) => name,
        None => given,
    }
}

fn unsupported_managed_instances() -> EcsError {
    EcsError::new(
        "UnsupportedFeatureException",
        "Amazon ECS Managed Instances capacity providers are not supported by Gantry; use an autoScalingGroupProvider.",
    )
}

/// The wire form: without Gantry's bookkeeping, tags only when asked for.
fn render(record: &CapacityProviderRecord, tags: bool) -> EcsResult<Value> {
    let mut v = to_output(record)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("gantryInternal");
        if !tags {
            o.remove("tags");
        }
    }
    Ok(v)
}

fn render_fargate(plane: &ControlPlane, name: &str, tags: bool) -> Value {
    let mut v = json!({
        "capacityProviderArn": plane.scope().capacity_provider(name),
        "name": name,
        "status": status::ACTIVE,
        "type": name,
    });
    if tags {
        v["tags"] = json!([]);
    }
    v
}

async fn get_record(
    plane: &ControlPlane,
    name: &str,
) -> EcsResult<Option<(CapacityProviderRecord, i64)>> {
    repo::get(&*plane.store, &repo::capacity_provider_key(name)).await
}

fn is_active(record: &CapacityProviderRecord) -> bool {
    record.status == status::ACTIVE
}

/// Every ACTIVE cluster.
async fn active_clusters(plane: &ControlPlane) -> EcsResult<Vec<Cluster>> {
    let all: Vec<(Cluster, i64)> = repo::list(&*plane.store, repo::CLUSTERS).await?;
    Ok(all
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| c.status.as_deref() == Some(status::ACTIVE))
        .collect())
}

fn cluster_label(c: &Cluster) -> &str {
    c.cluster_name.as_deref().unwrap_or("default")
}

fn names_provider(c: &Cluster, provider: &str) -> bool {
    c.capacity_providers
        .iter()
        .flatten()
        .any(|p| provider_name(p) == provider)
}

/// An ACTIVE cluster by name or ARN, or `ClusterNotFoundException`.
async fn resolve_cluster(plane: &ControlPlane, given: &str) -> EcsResult<(Cluster, i64)> {
    let name = cluster_name(given.trim());
    let api_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !api_name {
        return Err(EcsError::cluster_not_found());
    }
    match repo::get::<Cluster>(&*plane.store, &repo::cluster_key(name)).await? {
        Some((c, rev)) if c.status.as_deref() == Some(status::ACTIVE) => Ok((c, rev)),
        _ => Err(EcsError::cluster_not_found()),
    }
}

/// The providers a strategy in a service's `extra` names.
fn strategy_names(extra: &Extra) -> Vec<String> {
    extra
        .get("capacityProviderStrategy")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("capacityProvider").and_then(Value::as_str))
        .map(|p| provider_name(p).to_string())
        .collect()
}

/// The first service of `cluster` (not INACTIVE) whose strategy, or one of whose
/// deployments' strategies, names `provider`.
fn service_using(plane: &ControlPlane, cluster: &str, provider: &str) -> Option<String> {
    plane
        .cache
        .services_of_cluster(cluster)
        .into_iter()
        .filter(|s| s.value.service.status != status::INACTIVE)
        .find(|s| {
            let svc = &s.value.service;
            strategy_names(&svc.extra).iter().any(|p| p == provider)
                || svc
                    .deployments
                    .iter()
                    .any(|d| strategy_names(&d.extra).iter().any(|p| p == provider))
        })
        .map(|s| s.value.service.service_name.clone())
}

// ---------------------------------------------------------------------------------------
// The check shared by CreateCluster and PutClusterCapacityProviders.

/// A cluster's capacity providers and default strategy, checked, with what the cluster's
/// write must carry along.
pub struct ClusterCapacity {
    /// Provider names, in the order given.
    pub providers: Vec<String>,
    /// `{capacityProvider, weight, base}` per item, weight and base filled in (AWS echoes
    /// `base: 0`).
    pub strategy: Vec<Value>,
    /// Guards for the cluster's transaction: each associated Auto Scaling group provider's
    /// record as read.
    pub guards: Vec<Compare>,
    /// Writes for the cluster's transaction: those records rewritten, so that two
    /// transactions associating the same provider conflict.
    pub ops: Vec<TxnOp>,
}

/// Check `providers` and `strategy` for cluster `cluster` (its name) with ECS's rules and
/// errors: every provider exists (FARGATE, FARGATE_SPOT or an ACTIVE Auto Scaling group
/// provider); an Auto Scaling group provider belongs to no other ACTIVE cluster; every
/// strategy item names a provider of the list, with weight 0–1000 and base 0–100000; at most
/// one item has a base; FARGATE providers and Auto Scaling group providers are not mixed in
/// the strategy. Reads nothing when both lists are empty.
pub async fn for_cluster(
    plane: &ControlPlane,
    cluster: &str,
    providers: &[String],
    strategy: &[Value],
) -> EcsResult<ClusterCapacity> {
    if providers.len() > MAX_PER_CLUSTER {
        return Err(invalid(
            "The maximum number of capacity providers per cluster has been exceeded.",
        ));
    }
    let items = parse_strategy(strategy, "defaultCapacityProviderStrategy")?;
    // Weight and base filled in (AWS echoes `base: 0`).
    let strategy_out: Vec<Value> = items
        .iter()
        .map(|i| json!({"capacityProvider": i.provider, "weight": i.weight, "base": i.base}))
        .collect();
    let item_names: Vec<String> = items.iter().map(|i| i.provider.clone()).collect();

    let mut names: Vec<String> = Vec::new();
    for given in providers {
        let name = provider_name(given.trim()).to_string();
        if names.contains(&name) {
            return Err(invalid(format!(
                "The specified capacity providers contain '{name}' more than once. Specify each capacity provider once and try again."
            )));
        }
        names.push(name);
    }

    // Every provider exists; the Auto Scaling group ones as read, for the guards.
    let mut asg: Vec<(CapacityProviderRecord, i64)> = Vec::new();
    for name in &names {
        if is_fargate(name) {
            continue;
        }
        match get_record(plane, name).await? {
            Some((rec, rev)) if is_active(&rec) => asg.push((rec, rev)),
            _ => {
                return Err(invalid(
                    "The specified capacity provider was not found. Specify a valid capacity provider and try again.",
                ))
            }
        }
    }
    if !asg.is_empty() {
        let clusters = active_clusters(plane).await?;
        for (rec, _) in &asg {
            if let Some(other) = clusters
                .iter()
                .find(|c| cluster_label(c) != cluster && names_provider(c, &rec.name))
            {
                return Err(invalid(format!(
                    "The specified capacity provider '{}' is already associated with cluster '{}'. An Auto Scaling group capacity provider can be associated with one cluster only; remove it from that cluster and try again.",
                    rec.name,
                    cluster_label(other)
                )));
            }
        }
    }

    let associated: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    if item_names.iter().any(|n| !associated.contains(n.as_str())) {
        return Err(invalid(
            "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
        ));
    }

    let mut guards = Vec::new();
    let mut ops = Vec::new();
    for (rec, rev) in &asg {
        let key = repo::capacity_provider_key(&rec.name);
        guards.push(repo::unchanged_since(&key, *rev));
        ops.push(repo::put_op(&key, rec)?);
    }
    Ok(ClusterCapacity {
        providers: names,
        strategy: strategy_out,
        guards,
        ops,
    })
}

// ---------------------------------------------------------------------------------------
// PutClusterCapacityProviders

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutInput {
    cluster: String,
    capacity_providers: Vec<String>,
    default_capacity_provider_strategy: Vec<Value>,
}

/// PutClusterCapacityProviders: replaces the cluster's providers and default strategy.
/// Removing a provider that a service of the cluster uses raises `ResourceInUseException`.
/// Returns the cluster's name; the dispatcher answers with the cluster as DescribeClusters
/// renders it.
pub async fn put(plane: &ControlPlane, input: Value) -> EcsResult<String> {
    let req: PutInput = parse(input)?;
    for _ in 0..CAS_ATTEMPTS {
        let (cl, rev) = resolve_cluster(plane, &req.cluster).await?;
        let name = cluster_label(&cl).to_string();
        let capacity = for_cluster(
            plane,
            &name,
            &req.capacity_providers,
            &req.default_capacity_provider_strategy,
        )
        .await?;
        for old in cl.capacity_providers.iter().flatten() {
            let old = provider_name(old);
            if capacity.providers.iter().any(|p| p == old) {
                continue;
            }
            if service_using(plane, &name, old).is_some() {
                return Err(EcsError::new(
                    "ResourceInUseException",
                    "The specified capacity provider is in use and cannot be removed.",
                ));
            }
        }
        let key = repo::cluster_key(&name);
        let mut updated = cl;
        updated.capacity_providers = Some(capacity.providers);
        updated.default_capacity_provider_strategy = Some(capacity.strategy);
        let mut guards = vec![repo::unchanged_since(&key, rev)];
        guards.extend(capacity.guards);
        let mut ops = vec![repo::put_op(&key, &updated)?];
        ops.extend(capacity.ops);
        if repo::commit(&*plane.store, guards, ops).await? {
            return Ok(name);
        }
    }
    Err(EcsError::new(
        "UpdateInProgressException",
        "The specified cluster is in a busy state. Wait and try again.",
    ))
}

// ---------------------------------------------------------------------------------------
// CreateCapacityProvider

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    name: String,
    cluster: Option<String>,
    auto_scaling_group_provider: Option<AsgProviderInput>,
    managed_instances_provider: Option<Value>,
    tags: Option<Vec<Tag>>,
}

pub async fn create(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: CreateInput = parse(input)?;
    validate_name(&req.name)?;
    if req.managed_instances_provider.is_some() {
        return Err(unsupported_managed_instances());
    }
    let Some(asg_input) = &req.auto_scaling_group_provider else {
        return Err(invalid(
            "autoScalingGroupProvider is required: specify the Auto Scaling group of the capacity provider.",
        ));
    };
    if req.cluster.is_some() {
        return Err(invalid(
            "The cluster parameter applies only to Amazon ECS Managed Instances capacity providers; an Auto Scaling group capacity provider is associated with a cluster with PutClusterCapacityProviders.",
        ));
    }
    let asg_arn = asg_input
        .auto_scaling_group_arn
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("autoScalingGroupProvider.autoScalingGroupArn is required."))?;
    let defaults = AutoScalingGroupProvider {
        auto_scaling_group_arn: asg_arn.to_string(),
        managed_scaling: ManagedScaling::default(),
        managed_termination_protection: DISABLED.into(),
        managed_draining: ENABLED.into(),
    };
    let provider = apply_settings(&defaults, asg_input)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate_tags(&tags)?;

    let key = repo::capacity_provider_key(&req.name);
    let asg_key = repo::capacity_provider_asg_key(asg_name(asg_arn));
    for _ in 0..CAS_ATTEMPTS {
        let existing = get_record(plane, &req.name).await?;
        if existing.as_ref().is_some_and(|(r, _)| is_active(r)) {
            return Err(EcsError::client(
                "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
            ));
        }
        let (holder, asg_rev) = match repo::get::<String>(&*plane.store, &asg_key).await? {
            Some((holder, rev)) => (Some(holder), rev),
            None => (None, 0),
        };
        if let Some(holder) = holder {
            if let Some((other, _)) = get_record(plane, &holder).await? {
                if is_active(&other) {
                    return Err(EcsError::client(
                        "The specified Auto Scaling group ARN is already being used by another capacity provider. Specify a unique Auto Scaling group ARN and try again.",
                    ));
                }
            }
        }
        let record = CapacityProviderRecord {
            capacity_provider_arn: plane.scope().capacity_provider(&req.name),
            name: req.name.clone(),
            status: status::ACTIVE.into(),
            auto_scaling_group_provider: provider.clone(),
            update_status: Some(CREATE_COMPLETE.into()),
            update_status_reason: None,
            tags: tags.clone(),
            kind: ec2_autoscaling(),
            internal: RecordInternal {
                asg_key: asg_key.clone(),
                inactive_at: None,
            },
        };
        let rev = existing.map(|(_, rev)| rev).unwrap_or(0);
        if repo::commit(
            &*plane.store,
            vec![
                repo::unchanged_since(&key, rev),
                repo::unchanged_since(&asg_key, asg_rev),
            ],
            vec![
                repo::put_op(&key, &record)?,
                repo::put_op(&asg_key, &req.name)?,
            ],
        )
        .await?
        {
            return Ok(json!({"capacityProvider": render(&record, true)?}));
        }
    }
    Err(EcsError::server(format!(
        "Too many concurrent updates to {key}; try again."
    )))
}

// ---------------------------------------------------------------------------------------
// DescribeCapacityProviders

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    capacity_providers: Option<Vec<String>>,
    cluster: Option<String>,
    include: Option<Vec<String>>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

/// DescribeCapacityProviders: the named providers (unknown ones in `failures` as MISSING,
/// INACTIVE ones as they are), or every ACTIVE provider, FARGATE and FARGATE_SPOT last,
/// paged by `maxResults` (1–10, 10 by default) and `nextToken`. With `cluster`, only the
/// providers associated with that cluster.
pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let tags = want_tags(&req.include)?;
    let in_cluster: Option<Vec<String>> = match req.cluster.as_deref() {
        Some(c) => {
            let (cl, _) = resolve_cluster(plane, c).await?;
            Some(
                cl.capacity_providers
                    .iter()
                    .flatten()
                    .map(|p| provider_name(p).to_string())
                    .collect(),
            )
        }
        None => None,
    };
    let allowed = |name: &str| {
        in_cluster
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p == name))
    };

    match req.capacity_providers.filter(|n| !n.is_empty()) {
        Some(given) => {
            if given.len() > MAX_DESCRIBE {
                return Err(invalid(format!(
                    "At most {MAX_DESCRIBE} capacity providers can be described at once."
                )));
            }
            if let Some(n) = req.max_results {
                if !(1..=PAGE_LIMIT).contains(&n) {
                    return Err(invalid(format!(
                        "maxResults must be between 1 and {PAGE_LIMIT}."
                    )));
                }
            }
            let mut found = Vec::new();
            let mut failures = Vec::new();
            for g in &given {
                let name = provider_name(g.trim());
                let missing = || {
                    Failure::missing(if g.starts_with("arn:") {
                        g.clone()
                    } else {
                        plane.scope().capacity_provider(name)
                    })
                };
                if !allowed(name) {
                    failures.push(missing());
                } else if is_fargate(name) {
                    found.push(render_fargate(plane, name, tags));
                } else {
                    match get_record(plane, name).await? {
                        Some((rec, _)) => found.push(render(&rec, tags)?),
                        None => failures.push(missing()),
                    }
                }
            }
            to_output(&json!({"capacityProviders": found, "failures": failures}))
        }
        None => {
            let records: Vec<(CapacityProviderRecord, i64)> =
                repo::list(&*plane.store, repo::CAPACITY_PROVIDERS).await?;
            let mut all = Vec::new();
            for (rec, _) in records.iter().filter(|(r, _)| is_active(r)) {
                if allowed(&rec.name) {
                    all.push(render(rec, tags)?);
                }
            }
            for name in [FARGATE, FARGATE_SPOT] {
                if allowed(name) {
                    all.push(render_fargate(plane, name, tags));
                }
            }
            let (page, next) =
                pagination::page(all, req.next_token.as_deref(), req.max_results, PAGE_LIMIT)?;
            let mut out = json!({"capacityProviders": page, "failures": []});
            if let Some(n) = next {
                out["nextToken"] = json!(n);
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------
// UpdateCapacityProvider

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateInput {
    name: String,
    auto_scaling_group_provider: Option<AsgProviderInput>,
    managed_instances_provider: Option<Value>,
}

/// UpdateCapacityProvider: the managed settings given replace the current ones (members of
/// `managedScaling` left out keep their values). Takes effect at once: UPDATE_COMPLETE.
pub async fn update(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateInput = parse(input)?;
    let name = provider_name(req.name.trim()).to_string();
    if is_fargate(&name) {
        return Err(reserved("updated"));
    }
    if req.managed_instances_provider.is_some() {
        return Err(unsupported_managed_instances());
    }
    let change = req.auto_scaling_group_provider.unwrap_or_default();
    if change.auto_scaling_group_arn.is_some() {
        return Err(invalid(
            "The Auto Scaling group of a capacity provider cannot be changed; create a new capacity provider instead.",
        ));
    }
    let updated = repo::update::<CapacityProviderRecord, _>(
        &*plane.store,
        &repo::capacity_provider_key(&name),
        |rec| {
            if !is_active(rec) {
                return Err(does_not_exist());
            }
            rec.auto_scaling_group_provider =
                apply_settings(&rec.auto_scaling_group_provider, &change)?;
            rec.update_status = Some(UPDATE_COMPLETE.into());
            rec.update_status_reason = None;
            Ok(())
        },
    )
    .await?
    .ok_or_else(does_not_exist)?;
    Ok(json!({"capacityProvider": render(&updated, true)?}))
}

// ---------------------------------------------------------------------------------------
// DeleteCapacityProvider

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteInput {
    capacity_provider: String,
}

/// Which cluster keeps `provider` from being deleted: one whose capacity providers name it,
/// or one with a service whose strategy names it.
async fn holding_cluster(plane: &ControlPlane, provider: &str) -> EcsResult<Option<String>> {
    let clusters = active_clusters(plane).await?;
    if let Some(c) = clusters.iter().find(|c| names_provider(c, provider)) {
        return Ok(Some(cluster_label(c).to_string()));
    }
    Ok(clusters
        .iter()
        .map(cluster_label)
        .find(|c| service_using(plane, c, provider).is_some())
        .map(str::to_string))
}

/// DeleteCapacityProvider. As on AWS, a provider still associated with a cluster is not an
/// error: the answer (and later Describe calls) say DELETE_FAILED and why.
pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeleteInput = parse(input)?;
    let name = provider_name(req.capacity_provider.trim()).to_string();
    if is_fargate(&name) {
        return Err(reserved("deleted"));
    }
    let key = repo::capacity_provider_key(&name);
    for _ in 0..CAS_ATTEMPTS {
        let (mut rec, rev) = match get_record(plane, &name).await? {
            Some((rec, rev)) if is_active(&rec) => (rec, rev),
            _ => return Err(does_not_exist()),
        };
        let mut guards = vec![repo::unchanged_since(&key, rev)];
        let mut ops = Vec::new();
        match holding_cluster(plane, &name).await? {
            Some(cluster) => {
                rec.update_status = Some(DELETE_FAILED.into());
                rec.update_status_reason = Some(format!(
                    "The capacity provider cannot be deleted because it is associated with cluster: {cluster}. Remove the capacity provider from the cluster and try again."
                ));
            }
            None => {
                rec.status = status::INACTIVE.into();
                rec.update_status = Some(DELETE_COMPLETE.into());
                rec.update_status_reason = None;
                rec.internal.inactive_at = Some(gantry_model::now_epoch());
                // Free the Auto Scaling group, if this provider still holds it.
                let asg_key = rec.internal.asg_key.clone();
                if !asg_key.is_empty() {
                    if let Some((holder, asg_rev)) =
                        repo::get::<String>(&*plane.store, &asg_key).await?
                    {
                        if holder == name {
                            guards.push(repo::unchanged_since(&asg_key, asg_rev));
                            ops.push(TxnOp::Delete { key: asg_key });
                        }
                    }
                }
            }
        }
        ops.push(repo::put_op(&key, &rec)?);
        if repo::commit(&*plane.store, guards, ops).await? {
            return Ok(json!({"capacityProvider": render(&rec, true)?}));
        }
    }
    Err(EcsError::server(format!(
        "Too many concurrent updates to {key}; try again."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ecs_rules() {
        assert!(validate_name("my-provider_1").is_ok());
        assert!(validate_name(&"a".repeat(255)).is_ok());
        for bad in [
            "",
            "has space",
            "slash/no",
            "awsy",
            "ECS-prov",
            "Fargate2",
            "FARGATE",
            "FARGATE_SPOT",
        ] {
            let e = validate_name(bad).expect_err(bad);
            assert_eq!(e.code, "ClientException");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn names_and_arns_and_groups() {
        assert_eq!(
            provider_name("arn:aws:ecs:us-east-1:000000000000:capacity-provider/cp1"),
            "cp1"
        );
        assert_eq!(provider_name("cp1"), "cp1");
        assert_eq!(
            asg_name(
                "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:uuid:autoScalingGroupName/my-asg"
            ),
            "my-asg"
        );
        assert_eq!(asg_name("my-asg"), "my-asg");
    }

    #[test]
    fn managed_scaling_defaults_and_ranges() {
        let filled = managed_scaling(
            &ManagedScaling::default(),
            &ManagedScalingInput {
                status: Some("ENABLED".into()),
                minimum_scaling_step_size: Some(2),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(
            filled,
            ManagedScaling {
                status: "ENABLED".into(),
                target_capacity: 100,
                minimum_scaling_step_size: 2,
                maximum_scaling_step_size: 10000,
                instance_warmup_period: 300,
            }
        );
        for bad in [
            ManagedScalingInput {
                target_capacity: Some(0),
                ..Default::default()
            },
            ManagedScalingInput {
                target_capacity: Some(101),
                ..Default::default()
            },
            ManagedScalingInput {
                instance_warmup_period: Some(10001),
                ..Default::default()
            },
            ManagedScalingInput {
                status: Some("on".into()),
                ..Default::default()
            },
            ManagedScalingInput {
                minimum_scaling_step_size: Some(20),
                maximum_scaling_step_size: Some(10),
                ..Default::default()
            },
        ] {
            let e = managed_scaling(&ManagedScaling::default(), &bad).expect_err("invalid");
            assert_eq!(e.code, "InvalidParameterException");
        }
    }
}
