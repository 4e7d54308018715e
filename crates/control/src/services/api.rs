//! CreateService, UpdateService, DeleteService, DescribeServices, ListServices: validate at the
//! edge, then write the service record with compare-and-swap. The reconciler does the rest.

use super::rollout;
use crate::clusters;
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::lookup;
use crate::state::records::TaskDefinitionRecord;
use crate::state::repo;
use crate::state::service_record::{
    BreakerState, DeploymentInternal, RevisionSummary, ServiceDeploymentRecord, ServiceRecord,
    ServiceRevisionRecord, REVISION_MEMBERS,
};
use crate::tags::{validate_tags, want_tags};
use crate::wire::{parse, to_output};
use gantry_model::arn::last_segment;
use gantry_model::services::{
    breaker_threshold, controller, deployment_status, rollout as rollout_state,
    DeploymentConfiguration, DeploymentController, Service, ACTIVE, DAEMON, DRAINING, REPLICA,
};
use gantry_model::types::{
    Extra, Failure, PlacementConstraint, PlacementStrategy, Tag, TaskDefinition,
};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn service_not_active() -> EcsError {
    EcsError::new("ServiceNotActiveException", "Service was not ACTIVE.")
}

/// The service as the API returns it (an EXTERNAL service with its task sets).
pub fn render(rec: &ServiceRecord, with_tags: bool) -> Service {
    let mut s = rec.service.clone();
    if with_tags {
        s.tags.get_or_insert_with(Vec::new);
    } else {
        s.tags = None;
    }
    if is_external(rec) {
        for set in s.task_sets.get_or_insert_with(Vec::new) {
            if with_tags {
                set.tags.get_or_insert_with(Vec::new);
            } else {
                set.tags = None;
            }
        }
    }
    // Lists ECS always returns, empty or not: clients (Terraform's provider among them) read
    // them without checking for absence.
    for member in ALWAYS_LISTED {
        s.extra
            .entry(member.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    // ECS reports these per deployment, not on the service (the Service shape has no such
    // members); Gantry keeps them in the service's settings for the next revision.
    for member in PER_DEPLOYMENT_ONLY {
        s.extra.remove(*member);
    }
    s.deployment_controller
        .get_or_insert_with(|| DeploymentController { kind: "ECS".into() });
    s.enable_ecs_managed_tags.get_or_insert(false);
    s.enable_execute_command.get_or_insert(false);
    s.propagate_tags.get_or_insert_with(|| "NONE".into());
    s
}

/// Service list members that DescribeServices always carries.
const ALWAYS_LISTED: &[&str] = &["loadBalancers", "serviceRegistries"];

/// CreateService members that ECS echoes in `deployments[]` only.
const PER_DEPLOYMENT_ONLY: &[&str] = &[
    "serviceConnectConfiguration",
    "volumeConfigurations",
    "vpcLatticeConfigurations",
];

/// Whether the service's tasks are managed as task sets by an external deployment controller.
pub fn is_external(rec: &ServiceRecord) -> bool {
    rec.service
        .deployment_controller
        .as_ref()
        .is_some_and(|c| c.kind == controller::EXTERNAL)
}

/// The members that define an EXTERNAL service's tasks: they belong to its task sets, and the
/// service shows those of its PRIMARY task set.
pub const TASK_SET_MEMBERS: &[&str] = &[
    "networkConfiguration",
    "loadBalancers",
    "serviceRegistries",
    "capacityProviderStrategy",
    "platformVersion",
];

/// `loadBalancers` → `LoadBalancers`, as ECS names members in its messages.
fn capitalised(member: &str) -> String {
    let mut c = member.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Whether a request member was given with content (`[]` and `null` count as absent).
fn given(extra: &Extra, member: &str) -> bool {
    match extra.get(member) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// ECS's quota of tasks per service.
const MAX_DESIRED_COUNT: i64 = 5000;

fn validate_desired_count(n: i64) -> EcsResult<()> {
    if n < 0 {
        return Err(EcsError::invalid_parameter(format!(
            "desiredCount must be 0 or greater (got {n})."
        )));
    }
    if n > MAX_DESIRED_COUNT {
        return Err(EcsError::invalid_parameter(format!(
            "desiredCount must be at most {MAX_DESIRED_COUNT} tasks per service (got {n})."
        )));
    }
    Ok(())
}

fn validate_deployment_configuration(c: &DeploymentConfiguration, strategy: &str) -> EcsResult<()> {
    if let Some(max) = c.maximum_percent {
        if strategy == REPLICA && max < 100 {
            return Err(EcsError::invalid_parameter(format!(
                "maximumPercent must be at least 100 for a REPLICA service (got {max})."
            )));
        }
        if !(0..=10_000).contains(&max) {
            return Err(EcsError::invalid_parameter(format!(
                "maximumPercent must be between 0 and 10000 (got {max})."
            )));
        }
    }
    if let Some(min) = c.minimum_healthy_percent {
        if !(0..=100).contains(&min) {
            return Err(EcsError::invalid_parameter(format!(
                "minimumHealthyPercent must be between 0 and 100 (got {min})."
            )));
        }
    }
    if let Some(t) = c
        .deployment_circuit_breaker
        .as_ref()
        .and_then(|b| b.threshold_configuration.as_ref())
    {
        if !matches!(
            t.kind.as_str(),
            "COUNT" | "BOUNDED_PERCENT" | "UNBOUNDED_PERCENT"
        ) {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid thresholdConfiguration type '{}': use COUNT, BOUNDED_PERCENT or UNBOUNDED_PERCENT.",
                t.kind
            )));
        }
        if t.value < 1 || t.value > i64::from(i32::MAX) {
            return Err(EcsError::invalid_parameter(format!(
                "thresholdConfiguration value must be between 1 and {} (got {}).",
                i32::MAX,
                t.value
            )));
        }
    }
    Ok(())
}

fn validate_placement(
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
    scheduling: &str,
) -> EcsResult<()> {
    if scheduling == DAEMON && !strategies.is_empty() {
        return Err(EcsError::invalid_parameter(
            "Placement strategies are not supported with the DAEMON scheduling strategy.",
        ));
    }
    if scheduling == DAEMON
        && constraints
            .iter()
            .any(|c| c.kind.as_deref() == Some("distinctInstance"))
    {
        return Err(EcsError::invalid_parameter(
            "The distinctInstance constraint is not supported with the DAEMON scheduling strategy.",
        ));
    }
    gantry_scheduler::validate_strategies(strategies).map_err(EcsError::invalid_parameter)?;
    gantry_scheduler::validate_constraints(constraints).map_err(EcsError::invalid_parameter)?;
    Ok(())
}

fn validate_launch_type(lt: &Option<String>) -> EcsResult<()> {
    if let Some(lt) = lt {
        if !matches!(lt.as_str(), "EC2" | "FARGATE" | "EXTERNAL") {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid launchType '{lt}': use EC2, FARGATE or EXTERNAL."
            )));
        }
    }
    Ok(())
}

/// The task definition a service is to run: it must exist and be ACTIVE.
/// A service's launch settings checked as RunTask checks them (a task is built, not placed),
/// plus Fargate's refusal of placement strategies and constraints.
async fn check_launch(
    plane: &ControlPlane,
    task_definition: &str,
    launch: crate::lifecycle::LaunchOptions,
    strategies: &[gantry_model::types::PlacementStrategy],
    constraints: &[gantry_model::types::PlacementConstraint],
) -> EcsResult<()> {
    let probe = crate::lifecycle::build_spec(
        plane,
        task_definition,
        true,
        None,
        None,
        None,
        launch,
        None,
        None,
    )
    .await?;
    probe.check_placement(strategies, constraints)?;
    Ok(())
}

pub(super) async fn resolve_task_definition(
    plane: &ControlPlane,
    reference: &str,
) -> EcsResult<TaskDefinition> {
    let (record, _): (TaskDefinitionRecord, i64) = lookup::task_definition(&*plane.store, reference)
        .await
        .map_err(|_| {
            EcsError::client(format!(
                "TaskDefinition not found: '{reference}'. Register it first (aws ecs register-task-definition), or check the family and revision."
            ))
        })?;
    let td = record.task_definition;
    if td.status.as_deref() != Some(status::ACTIVE) {
        return Err(EcsError::client(format!(
            "TaskDefinition is inactive: '{}'. Deploy an ACTIVE revision.",
            td.task_definition_arn.as_deref().unwrap_or(reference)
        )));
    }
    Ok(td)
}

pub(super) fn has_health_check(td: &TaskDefinition) -> bool {
    td.container_definitions
        .iter()
        .any(|c| c.essential != Some(false) && c.health_check.is_some())
}

fn random_id(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_string()
}

/// Start a new deployment of `td` on `rec`: a new revision, a PRIMARY deployment (the former
/// primary becomes ACTIVE and drains as the new one comes up) and a history entry.
fn start_deployment(plane: &ControlPlane, rec: &mut ServiceRecord, td: &TaskDefinition, now: f64) {
    let cluster = gantry_model::arn::cluster_name(&rec.service.cluster_arn).to_string();
    let name = rec.service.service_name.clone();
    let scope = plane.scope();
    let td_arn = td.task_definition_arn.clone().unwrap_or_default();

    let mut revision_extra = Extra::new();
    for member in REVISION_MEMBERS {
        if let Some(v) = rec.service.extra.get(*member) {
            revision_extra.insert(member.to_string(), v.clone());
        }
    }
    let revision_id = rollout::new_numeric_id();
    let revision = ServiceRevisionRecord {
        service_revision_arn: scope.service_revision(&cluster, &name, &revision_id),
        service_arn: rec.service.service_arn.clone(),
        cluster_arn: rec.service.cluster_arn.clone(),
        task_definition: td_arn.clone(),
        launch_type: rec.service.launch_type.clone(),
        container_images: td
            .container_definitions
            .iter()
            .map(|c| json!({"containerName": c.name, "image": c.image}))
            .collect(),
        created_at: now,
        extra: revision_extra,
    };

    // The deployment being replaced stops where it is.
    let sources: Vec<RevisionSummary> = rec
        .service
        .deployments
        .iter()
        .filter_map(|d| {
            let di = rec.internal_of(&d.id)?;
            Some(RevisionSummary {
                arn: di.revision_arn.clone(),
                requested_task_count: d.desired_count,
                running_task_count: d.running_count,
                pending_task_count: d.pending_count,
            })
        })
        .collect();
    if let Some(old) = rec.service.deployments.first().cloned() {
        if let Some(arn) = rec
            .internal_of(&old.id)
            .map(|d| d.service_deployment_arn.clone())
        {
            if let Some(h) = rec.history_mut(&arn) {
                if rollout::is_open(&h.status) {
                    h.status = deployment_status::STOPPED.into();
                    h.status_reason = Some("Superseded by a newer deployment.".into());
                    h.stopped_at = Some(now);
                    h.updated_at = now;
                }
            }
        }
    }
    for d in rec.service.deployments.iter_mut() {
        d.status = ACTIVE.into();
        d.desired_count = 0;
        d.updated_at = now;
    }

    let deployment = rollout::new_deployment(
        rollout::deployment_id_of_revision(&revision.service_revision_arn),
        &td_arn,
        rec.service.launch_type.clone(),
        &rec.service.extra,
        rec.service.desired_count,
        now,
    );
    let history_arn = scope.service_deployment(&cluster, &name, &random_id(20));
    let config = rec.service.deployment_configuration.clone();
    let breaker = config
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.clone())
        .unwrap_or_default();
    rec.internal.history.push(ServiceDeploymentRecord {
        service_deployment_arn: history_arn.clone(),
        service_arn: rec.service.service_arn.clone(),
        cluster_arn: rec.service.cluster_arn.clone(),
        created_at: now,
        started_at: Some(now),
        finished_at: None,
        stopped_at: None,
        updated_at: now,
        source_service_revisions: sources,
        target_service_revision: RevisionSummary {
            arn: revision.service_revision_arn.clone(),
            requested_task_count: rec.service.desired_count,
            running_task_count: 0,
            pending_task_count: 0,
        },
        status: deployment_status::IN_PROGRESS.into(),
        status_reason: None,
        deployment_configuration: config,
        rollback: None,
        deployment_circuit_breaker: BreakerState {
            status: if breaker.enable {
                "MONITORING"
            } else {
                "DISABLED"
            }
            .into(),
            failure_count: 0,
            threshold: breaker_threshold(&breaker, rec.service.desired_count),
        },
    });
    rec.internal.deployments.push(DeploymentInternal {
        id: deployment.id.clone(),
        revision_arn: revision.service_revision_arn.clone(),
        service_deployment_arn: history_arn.clone(),
        has_health_check: has_health_check(td),
        ..Default::default()
    });
    if has_health_check(td) {
        rec.internal
            .health_checked_revisions
            .insert(revision.service_revision_arn.clone());
    }
    rec.internal.revisions.push(revision);
    rec.service.deployments.insert(0, deployment);
    rec.service.task_definition = Some(td_arn);
    rec.service.current_service_deployment = Some(history_arn);
    rec.internal.steady = false;
    rec.internal.backoff = Default::default();
    rec.prune_revisions();
}

/// CreateService members Gantry stores without interpreting them, and echoes.
const CREATE_ECHOED_MEMBERS: &[&str] = &[
    "availabilityZoneRebalancing",
    "loadBalancers",
    "serviceRegistries",
    "capacityProviderStrategy",
    "platformVersion",
    "networkConfiguration",
    "serviceConnectConfiguration",
    "volumeConfigurations",
    "vpcLatticeConfigurations",
    "gatewayConnectors",
    "monitoring",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateServiceInput {
    cluster: Option<String>,
    service_name: String,
    task_definition: Option<String>,
    desired_count: Option<i64>,
    client_token: Option<String>,
    launch_type: Option<String>,
    deployment_configuration: Option<DeploymentConfiguration>,
    placement_constraints: Option<Vec<PlacementConstraint>>,
    placement_strategy: Option<Vec<PlacementStrategy>>,
    health_check_grace_period_seconds: Option<i64>,
    scheduling_strategy: Option<String>,
    deployment_controller: Option<DeploymentController>,
    tags: Option<Vec<Tag>>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    enable_execute_command: Option<bool>,
    role: Option<String>,
    /// loadBalancers, networkConfiguration, serviceRegistries, …: stored and echoed.
    #[serde(flatten)]
    extra: Extra,
}

fn validate_controller(c: &DeploymentController) -> EcsResult<()> {
    if c.kind == controller::ECS || c.kind == controller::EXTERNAL {
        return Ok(());
    }
    Err(EcsError::invalid_parameter(format!(
        "Deployment controller type {} is not supported by Gantry yet: use ECS (rolling updates) or EXTERNAL (task sets).",
        c.kind
    )))
}

/// What ECS refuses in CreateService for an EXTERNAL service: the task definition and the
/// launch settings belong to its task sets.
fn validate_external_create(req: &CreateServiceInput, scheduling: &str) -> EcsResult<()> {
    if scheduling == DAEMON {
        // Text not confirmed against AWS.
        return Err(EcsError::invalid_parameter(
            "The DAEMON scheduling strategy is not supported with the EXTERNAL deployment controller: use REPLICA.",
        ));
    }
    if req.task_definition.is_some() {
        return Err(EcsError::invalid_parameter("TaskDefinition must be blank."));
    }
    let mut refused: Vec<&str> = TASK_SET_MEMBERS.to_vec();
    refused.extend([
        "serviceConnectConfiguration",
        "volumeConfigurations",
        "vpcLatticeConfigurations",
    ]);
    // ECS's text for networkConfiguration; the others are worded alike.
    match refused.into_iter().find(|m| given(&req.extra, m)) {
        Some(member) => Err(EcsError::invalid_parameter(format!(
            "{} must be null.",
            capitalised(member)
        ))),
        None => Ok(()),
    }
}

fn validate_propagate_tags(p: &Option<String>) -> EcsResult<()> {
    match p.as_deref() {
        None | Some("TASK_DEFINITION") | Some("SERVICE") | Some("NONE") => Ok(()),
        Some(other) => Err(EcsError::invalid_parameter(format!(
            "Invalid propagateTags '{other}': use TASK_DEFINITION, SERVICE or NONE."
        ))),
    }
}

fn validate_grace(g: Option<i64>) -> EcsResult<()> {
    if let Some(g) = g {
        if !(0..=2_147_483_647).contains(&g) {
            return Err(EcsError::invalid_parameter(format!(
                "healthCheckGracePeriodSeconds must be between 0 and 2147483647 (got {g})."
            )));
        }
    }
    Ok(())
}

pub async fn create(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: CreateServiceInput = parse(input)?;
    clusters::validate_resource_name("service", &req.service_name)?;
    let scheduling = req
        .scheduling_strategy
        .clone()
        .unwrap_or_else(|| REPLICA.into());
    if scheduling != REPLICA && scheduling != DAEMON {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid schedulingStrategy '{scheduling}': use REPLICA or DAEMON."
        )));
    }
    if scheduling == DAEMON && req.desired_count.is_some() {
        return Err(EcsError::invalid_parameter(
            "The daemon scheduling strategy does not support a desired count for services.",
        ));
    }
    let desired = req.desired_count.unwrap_or(0);
    validate_desired_count(desired)?;
    let controller = req
        .deployment_controller
        .clone()
        .unwrap_or(DeploymentController { kind: "ECS".into() });
    validate_controller(&controller)?;
    let external = controller.kind == controller::EXTERNAL;
    if external {
        validate_external_create(&req, &scheduling)?;
    }
    let config = req.deployment_configuration.clone().unwrap_or_default();
    validate_deployment_configuration(&config, &scheduling)?;
    let strategies = req.placement_strategy.clone().unwrap_or_default();
    let constraints = req.placement_constraints.clone().unwrap_or_default();
    validate_placement(&strategies, &constraints, &scheduling)?;
    validate_launch_type(&req.launch_type)?;
    if req.launch_type.is_some()
        && req
            .extra
            .get("capacityProviderStrategy")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    {
        return Err(EcsError::invalid_parameter(
            "Specifying both a launchType and capacityProviderStrategy is not supported.",
        ));
    }
    validate_propagate_tags(&req.propagate_tags)?;
    validate_grace(req.health_check_grace_period_seconds)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate_tags(&tags)?;
    if let Some(t) = &req.client_token {
        if t.is_empty() || t.len() > 36 {
            return Err(EcsError::invalid_parameter(
                "clientToken must be 1 to 36 characters.",
            ));
        }
    }
    if !external && req.task_definition.is_none() {
        return Err(EcsError::invalid_parameter(
            "taskDefinition must be specified.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    // The launch settings are checked as RunTask checks them, before anything is written.
    let launch =
        crate::lifecycle::LaunchOptions::for_service(&cluster, req.launch_type.clone(), |member| {
            req.extra.get(member).cloned()
        });
    // An EXTERNAL service has no task definition of its own: its task sets bring theirs.
    let td = match req.task_definition.as_deref() {
        Some(td_ref) if !external => {
            let td = resolve_task_definition(plane, td_ref).await?;
            check_launch(
                plane,
                td.task_definition_arn.as_deref().unwrap_or(td_ref),
                launch.clone(),
                &strategies,
                &constraints,
            )
            .await?;
            Some(td)
        }
        _ => None,
    };
    crate::load_balancing::validate::check(plane, req.extra.get("loadBalancers"), td.as_ref())
        .await?;
    if scheduling == DAEMON {
        // A cluster's default strategy counts too: ECS asks for `launchType` EC2 then.
        if launch.launch_type.is_none()
            && (!launch.capacity_provider_strategy.is_empty()
                || !launch.cluster_default_strategy.is_empty())
        {
            return Err(EcsError::invalid_parameter(
                "Specifying a capacity provider strategy is not supported when you create a service using the DAEMON scheduling strategy.",
            ));
        }
        if launch.launch_type.as_deref() == Some("FARGATE") {
            // Text not confirmed against AWS.
            return Err(EcsError::invalid_parameter(
                "Tasks using the Fargate launch type do not support the DAEMON scheduling strategy.",
            ));
        }
    }
    // Neither a launch type nor a strategy: the cluster's default strategy, when it has one,
    // becomes the service's (ECS shows it so).
    let default_strategy =
        (!external && req.launch_type.is_none() && launch.capacity_provider_strategy.is_empty())
            .then_some(launch.cluster_default_strategy)
            .filter(|s| !s.is_empty());

    let key = repo::service_key(&cname, &req.service_name);
    let existing = repo::get::<ServiceRecord>(&*plane.store, &key).await?;
    let rev = match &existing {
        Some((rec, rev)) => match rec.service.status.as_str() {
            status::INACTIVE => *rev,
            status::DRAINING => {
                return Err(EcsError::invalid_parameter(
                    "Unable to Start a service that is still Draining.",
                ))
            }
            _ => {
                if req.client_token.is_some() && rec.internal.client_token == req.client_token {
                    return to_output(&json!({"service": render(rec, true)}));
                }
                return Err(EcsError::invalid_parameter(
                    "Creation of service was not idempotent.",
                ));
            }
        },
        None => 0,
    };

    let now = now_epoch();
    // Only CreateService members are kept (a stray "status" would corrupt the record).
    let mut extra: Extra = req
        .extra
        .iter()
        .filter(|(k, _)| CREATE_ECHOED_MEMBERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(role) = &req.role {
        extra.insert("roleArn".into(), json!(role));
    }
    if let Some(strategy) = &default_strategy {
        extra.insert("capacityProviderStrategy".into(), json!(strategy));
    }
    let config = DeploymentConfiguration {
        deployment_circuit_breaker: Some(
            config
                .deployment_circuit_breaker
                .clone()
                .unwrap_or_default(),
        ),
        maximum_percent: Some(config.maximum_percent.unwrap_or(if scheduling == DAEMON {
            100
        } else {
            200
        })),
        minimum_healthy_percent: Some(
            config
                .minimum_healthy_percent
                .unwrap_or(if scheduling == DAEMON { 0 } else { 100 }),
        ),
        extra: config.extra.clone(),
    };
    let launch_type = if extra.contains_key("capacityProviderStrategy") {
        req.launch_type.clone()
    } else {
        Some(req.launch_type.clone().unwrap_or_else(|| "EC2".into()))
    };
    let service = Service {
        service_arn: plane.scope().service(&cname, &req.service_name),
        service_name: req.service_name.clone(),
        cluster_arn: plane.scope().cluster(&cname),
        status: ACTIVE.into(),
        desired_count: desired,
        running_count: 0,
        pending_count: 0,
        launch_type,
        task_definition: None,
        deployment_configuration: Some(config),
        deployments: Vec::new(),
        events: Vec::new(),
        created_at: now,
        placement_constraints: constraints,
        placement_strategy: strategies,
        health_check_grace_period_seconds: req.health_check_grace_period_seconds,
        scheduling_strategy: scheduling,
        deployment_controller: Some(controller),
        tags: Some(tags),
        enable_ecs_managed_tags: Some(req.enable_ecs_managed_tags.unwrap_or(false)),
        propagate_tags: Some(req.propagate_tags.clone().unwrap_or_else(|| "NONE".into())),
        enable_execute_command: Some(req.enable_execute_command.unwrap_or(false)),
        current_service_deployment: None,
        task_sets: external.then(Vec::new),
        extra,
    };
    let mut rec = ServiceRecord {
        service,
        internal: Default::default(),
    };
    rec.internal.client_token = req.client_token.clone();
    // An EXTERNAL service starts with no deployment: CreateTaskSet adds its tasks.
    if let Some(td) = &td {
        start_deployment(plane, &mut rec, td, now);
    }
    if !repo::commit(
        &*plane.store,
        vec![repo::unchanged_since(&key, rev)],
        vec![repo::put_op(&key, &rec)?],
    )
    .await?
    {
        return Err(EcsError::invalid_parameter(
            "Creation of service was not idempotent.",
        ));
    }
    to_output(&json!({"service": render(&rec, true)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServiceInput {
    cluster: Option<String>,
    service: String,
    desired_count: Option<i64>,
    task_definition: Option<String>,
    deployment_configuration: Option<DeploymentConfiguration>,
    placement_constraints: Option<Vec<PlacementConstraint>>,
    placement_strategy: Option<Vec<PlacementStrategy>>,
    force_new_deployment: Option<bool>,
    health_check_grace_period_seconds: Option<i64>,
    deployment_controller: Option<DeploymentController>,
    enable_execute_command: Option<bool>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

/// What an update leaves of the settings every service controller shares, checked: the
/// deployment configuration ([`merged_config`]) and the placement strategies and constraints
/// (the request's, else the service's).
fn merged_settings(
    rec: &ServiceRecord,
    req: &UpdateServiceInput,
) -> EcsResult<(
    DeploymentConfiguration,
    Vec<PlacementStrategy>,
    Vec<PlacementConstraint>,
)> {
    let scheduling = &rec.service.scheduling_strategy;
    let config = merged_config(rec, req);
    validate_deployment_configuration(&config, scheduling)?;
    let strategies = req
        .placement_strategy
        .clone()
        .unwrap_or_else(|| rec.service.placement_strategy.clone());
    let constraints = req
        .placement_constraints
        .clone()
        .unwrap_or_else(|| rec.service.placement_constraints.clone());
    validate_placement(&strategies, &constraints, scheduling)?;
    Ok((config, strategies, constraints))
}

/// The deployment configuration an update leaves: the service's, with the members the
/// request gives replaced.
fn merged_config(rec: &ServiceRecord, req: &UpdateServiceInput) -> DeploymentConfiguration {
    let mut config = rec
        .service
        .deployment_configuration
        .clone()
        .unwrap_or_default();
    if let Some(c) = &req.deployment_configuration {
        if c.deployment_circuit_breaker.is_some() {
            config.deployment_circuit_breaker = c.deployment_circuit_breaker.clone();
        }
        if c.maximum_percent.is_some() {
            config.maximum_percent = c.maximum_percent;
        }
        if c.minimum_healthy_percent.is_some() {
            config.minimum_healthy_percent = c.minimum_healthy_percent;
        }
        for (k, v) in &c.extra {
            config.extra.insert(k.clone(), v.clone());
        }
    }
    config
}

/// A service's deployment controller is fixed when it is created.
fn refuse_controller_change(rec: &ServiceRecord, req: &UpdateServiceInput) -> EcsResult<()> {
    let current = rec
        .service
        .deployment_controller
        .as_ref()
        .map_or(controller::ECS, |c| c.kind.as_str());
    match &req.deployment_controller {
        Some(c) if c.kind != current => Err(EcsError::invalid_parameter(format!(
            "Updating the deployment controller of a service from {current} to {} is not supported by Gantry: create a new service with the deployment controller you want.",
            c.kind
        ))),
        _ => Ok(()),
    }
}

/// UpdateService on an EXTERNAL service: ECS updates only the desired count, placement,
/// health check grace period, tags options and deployment configuration; whatever defines the
/// tasks is changed by creating a task set.
async fn update_external(
    plane: &ControlPlane,
    key: &str,
    req: &UpdateServiceInput,
) -> EcsResult<Value> {
    let refused = |what: &str| {
        EcsError::invalid_parameter(format!(
            "Unable to update {what} on services with a EXTERNAL deployment controller. Create a new task set (CreateTaskSet) instead."
        ))
    };
    if req.task_definition.is_some() {
        return Err(refused("task definition"));
    }
    if req.force_new_deployment == Some(true) {
        return Err(EcsError::invalid_parameter(
            "Unable to force a new deployment on services with a EXTERNAL deployment controller. Create a new task set (CreateTaskSet) instead.",
        ));
    }
    for member in REVISION_MEMBERS {
        if given(&req.extra, member) {
            return Err(refused(member));
        }
    }
    let mut out = None;
    repo::update::<ServiceRecord, _>(&*plane.store, key, |rec| {
        if rec.service.status != ACTIVE {
            return Err(service_not_active());
        }
        refuse_controller_change(rec, req)?;
        if !is_external(rec) {
            // Deleted and created again with the ECS controller since the caller's look.
            return Err(EcsError::client(
                "The service changed while it was being updated; retry the call.",
            ));
        }
        let (config, strategies, constraints) = merged_settings(rec, req)?;
        let now = now_epoch();
        rec.service.deployment_configuration = Some(config);
        rec.service.placement_strategy = strategies;
        rec.service.placement_constraints = constraints;
        for member in [
            "availabilityZoneRebalancing",
            "monitoring",
            "gatewayConnectors",
        ] {
            if let Some(v) = req.extra.get(member) {
                rec.service.extra.insert(member.to_string(), v.clone());
            }
        }
        if req.health_check_grace_period_seconds.is_some() {
            rec.service.health_check_grace_period_seconds = req.health_check_grace_period_seconds;
        }
        if req.enable_execute_command.is_some() {
            rec.service.enable_execute_command = req.enable_execute_command;
        }
        if req.enable_ecs_managed_tags.is_some() {
            rec.service.enable_ecs_managed_tags = req.enable_ecs_managed_tags;
        }
        if req.propagate_tags.is_some() {
            rec.service.propagate_tags = req.propagate_tags.clone();
        }
        if let Some(n) = req.desired_count {
            if rec.service.desired_count != n {
                rec.service.desired_count = n;
                rec.internal.steady = false;
            }
            // The task sets' shares follow at once (the scheduler acts on them).
            for set in rec.service.task_sets.iter_mut().flatten() {
                super::task_set_plan::refresh_computed_count(set, n, false, now);
            }
        }
        out = Some(render(rec, false));
        Ok(())
    })
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    to_output(&json!({ "service": out }))
}

pub async fn update(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateServiceInput = parse(input)?;
    if let Some(n) = req.desired_count {
        validate_desired_count(n)?;
    }
    validate_propagate_tags(&req.propagate_tags)?;
    validate_grace(req.health_check_grace_period_seconds)?;
    if let Some(c) = &req.deployment_controller {
        validate_controller(c)?;
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let key = repo::service_key(&cname, last_segment(&req.service));
    // A service's controller never changes, so one look decides which update this is.
    if let Some((rec, _)) = repo::get::<ServiceRecord>(&*plane.store, &key).await? {
        if is_external(&rec) {
            return update_external(plane, &key, &req).await;
        }
    }
    let td = match &req.task_definition {
        Some(r) => Some(resolve_task_definition(plane, r).await?),
        None => None,
    };
    // New load balancers, or a new definition behind the service's: checked as on create.
    if req.extra.get("loadBalancers").is_some() || td.is_some() {
        if let Some((rec, _)) = repo::get::<ServiceRecord>(&*plane.store, &key).await? {
            let definition = match (&td, rec.service.task_definition.as_deref()) {
                (Some(td), _) => Some(td.clone()),
                (None, Some(arn)) => resolve_task_definition(plane, arn).await.ok(),
                (None, None) => None,
            };
            let load_balancers = req
                .extra
                .get("loadBalancers")
                .or(rec.service.extra.get("loadBalancers"));
            crate::load_balancing::validate::check(plane, load_balancers, definition.as_ref())
                .await?;
        }
    }
    for _ in 0..64 {
        let (mut rec, rev) = repo::get::<ServiceRecord>(&*plane.store, &key)
            .await?
            .ok_or_else(EcsError::service_not_found)?;
        if rec.service.status != ACTIVE {
            return Err(service_not_active());
        }
        if is_external(&rec) {
            // Created again with the EXTERNAL controller since the first look.
            return update_external(plane, &key, &req).await;
        }
        refuse_controller_change(&rec, &req)?;
        let scheduling = rec.service.scheduling_strategy.clone();
        if scheduling == DAEMON && req.desired_count.is_some() {
            return Err(EcsError::invalid_parameter(
                "The daemon scheduling strategy does not support a desired count for services.",
            ));
        }
        let (config, strategies, constraints) = merged_settings(&rec, &req)?;

        let now = now_epoch();
        let mut redeploy = req.force_new_deployment.unwrap_or(false);
        if strategies != rec.service.placement_strategy
            || constraints != rec.service.placement_constraints
        {
            redeploy = true;
        }
        for member in REVISION_MEMBERS {
            if let Some(v) = req.extra.get(*member) {
                if rec.service.extra.get(*member) != Some(v) {
                    redeploy = true;
                    rec.service.extra.insert(member.to_string(), v.clone());
                }
            }
        }
        // A strategy replaces the launch type; an empty one goes back to a launch type (the
        // strategy's kind: FARGATE for Fargate providers, else EC2), as ECS lets an update do.
        if let Some(v) = req.extra.get("capacityProviderStrategy") {
            match v.as_array().filter(|a| !a.is_empty()) {
                Some(_) => rec.service.launch_type = None,
                None => {
                    rec.service.extra.remove("capacityProviderStrategy");
                    if rec.service.launch_type.is_none() {
                        let fargate = rec.service.deployments.first().is_some_and(|d| {
                            d.extra
                                .get("capacityProviderStrategy")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .any(|i| {
                                    i.get("capacityProvider")
                                        .and_then(Value::as_str)
                                        .is_some_and(crate::lifecycle::is_fargate_provider)
                                })
                        });
                        rec.service.launch_type =
                            Some(if fargate { "FARGATE" } else { "EC2" }.to_string());
                        redeploy = true;
                    }
                }
            }
        }
        for member in [
            "availabilityZoneRebalancing",
            "monitoring",
            "gatewayConnectors",
        ] {
            if let Some(v) = req.extra.get(member) {
                rec.service.extra.insert(member.to_string(), v.clone());
            }
        }
        let current_td = rec.service.task_definition.clone().unwrap_or_default();
        let target_td: Option<TaskDefinition> = match &td {
            Some(t) if t.task_definition_arn.as_deref() != Some(current_td.as_str()) => {
                redeploy = true;
                Some(t.clone())
            }
            _ => None,
        };
        if redeploy {
            // The new deployment's launch settings are checked before it is written.
            let td_arn = target_td
                .as_ref()
                .and_then(|t| t.task_definition_arn.clone())
                .unwrap_or_else(|| current_td.clone());
            let launch = crate::lifecycle::LaunchOptions::for_service(
                &cluster,
                rec.service.launch_type.clone(),
                |member| rec.service.extra.get(member).cloned(),
            );
            check_launch(plane, &td_arn, launch, &strategies, &constraints).await?;
        }
        rec.service.deployment_configuration = Some(config);
        rec.service.placement_strategy = strategies;
        rec.service.placement_constraints = constraints;
        if let Some(n) = req.desired_count {
            rec.service.desired_count = n;
            if let Some(d) = rec.service.deployments.first_mut() {
                if d.desired_count != n {
                    d.desired_count = n;
                    d.updated_at = now;
                }
            }
            rec.internal.steady = rec.internal.steady && rec.service.running_count == n;
        }
        if req.health_check_grace_period_seconds.is_some() {
            rec.service.health_check_grace_period_seconds = req.health_check_grace_period_seconds;
        }
        if req.enable_execute_command.is_some() {
            rec.service.enable_execute_command = req.enable_execute_command;
        }
        if req.enable_ecs_managed_tags.is_some() {
            rec.service.enable_ecs_managed_tags = req.enable_ecs_managed_tags;
        }
        if req.propagate_tags.is_some() {
            rec.service.propagate_tags = req.propagate_tags.clone();
        }
        if redeploy {
            let definition = match &target_td {
                Some(t) => t.clone(),
                None => {
                    let (r, _) = lookup::task_definition(&*plane.store, &current_td).await?;
                    r.task_definition
                }
            };
            start_deployment(plane, &mut rec, &definition, now);
        }
        if repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, rev)],
            vec![repo::put_op(&key, &rec)?],
        )
        .await?
        {
            return to_output(&json!({"service": render(&rec, false)}));
        }
    }
    Err(EcsError::server(
        "The service kept changing while it was being updated; try again.",
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteServiceInput {
    cluster: Option<String>,
    service: String,
    force: Option<bool>,
}

pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeleteServiceInput = parse(input)?;
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let key = repo::service_key(&cname, last_segment(&req.service));
    let force = req.force.unwrap_or(false);
    let mut result = None;
    repo::update::<ServiceRecord, _>(&*plane.store, &key, |rec| {
        match rec.service.status.as_str() {
            status::INACTIVE => return Err(EcsError::service_not_found()),
            status::DRAINING => {
                // A second, forced delete stops what protection still holds.
                rec.internal.force_deleted |= force;
                result = Some(render(rec, false));
                return Ok(());
            }
            _ => {}
        }
        if !force && rec.service.scheduling_strategy == REPLICA && rec.service.desired_count > 0 {
            return Err(EcsError::invalid_parameter(
                "The service cannot be stopped while it is scaled above 0. Set desiredCount to 0 first, or delete with force.",
            ));
        }
        let now = now_epoch();
        rec.service.status = status::DRAINING.into();
        rec.internal.force_deleted = force;
        rec.service.desired_count = 0;
        if let Some(d) = rec.service.deployments.first_mut() {
            d.desired_count = 0;
            d.updated_at = now;
        }
        // An EXTERNAL service's task sets go with it (their tasks are stopped).
        for set in rec.service.task_sets.iter_mut().flatten() {
            if set.status != DRAINING {
                set.status = DRAINING.into();
                set.updated_at = now;
            }
            super::task_set_plan::refresh_computed_count(set, 0, true, now);
        }
        rec.internal.steady = false;
        result = Some(render(rec, false));
        Ok(())
    })
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    to_output(&json!({"service": result}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeServicesInput {
    cluster: Option<String>,
    services: Vec<String>,
    include: Option<Vec<String>>,
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeServicesInput = parse(input)?;
    let with_tags = want_tags(&req.include)?;
    if req.services.is_empty() || req.services.len() > 10 {
        return Err(EcsError::invalid_parameter(
            "services must name between 1 and 10 services.",
        ));
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for s in &req.services {
        let name = last_segment(s);
        match repo::get::<ServiceRecord>(&*plane.store, &repo::service_key(&cname, name)).await? {
            Some((rec, _)) => services.push(render(&rec, with_tags)),
            None => failures.push(Failure {
                arn: Some(plane.scope().service(&cname, name)),
                reason: Some("MISSING".into()),
                detail: None,
            }),
        }
    }
    to_output(&json!({"services": services, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListServicesInput {
    cluster: Option<String>,
    next_token: Option<String>,
    max_results: Option<i32>,
    launch_type: Option<String>,
    scheduling_strategy: Option<String>,
}

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListServicesInput = parse(input)?;
    validate_launch_type(&req.launch_type)?;
    if let Some(s) = &req.scheduling_strategy {
        if s != REPLICA && s != DAEMON {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid schedulingStrategy '{s}': use REPLICA or DAEMON."
            )));
        }
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let all: Vec<(ServiceRecord, i64)> =
        repo::list(&*plane.store, &repo::services_prefix(&cname)).await?;
    let arns: Vec<String> = all
        .into_iter()
        .map(|(r, _)| r.service)
        .filter(|s| s.status != status::INACTIVE)
        .filter(|s| {
            req.launch_type
                .as_ref()
                .is_none_or(|lt| s.launch_type.as_deref().unwrap_or("EC2") == lt)
        })
        .filter(|s| {
            req.scheduling_strategy
                .as_ref()
                .is_none_or(|st| s.scheduling_strategy == *st)
        })
        .map(|s| s.service_arn)
        .collect();
    let max = Some(req.max_results.unwrap_or(10));
    let (page, next) = pagination::page(arns, req.next_token.as_deref(), max, 100)?;
    let mut out = json!({"serviceArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

/// Whether `rec`'s PRIMARY deployment is still rolling out (for StopServiceDeployment).
pub fn rolling_out(rec: &ServiceRecord) -> bool {
    rec.primary()
        .is_some_and(|d| d.rollout_state.as_deref() == Some(rollout_state::IN_PROGRESS))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListByNamespaceInput {
    namespace: String,
}

/// ListServicesByNamespace: Gantry has no Cloud Map namespaces yet (service discovery comes
/// later), so every namespace is unknown, as ECS says of one that does not exist.
pub async fn list_by_namespace(_plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListByNamespaceInput = parse(input)?;
    Err(EcsError::new(
        "NamespaceNotFoundException",
        format!(
            "The specified namespace '{}' wasn't found: Gantry does not manage Cloud Map namespaces yet.",
            req.namespace
        ),
    ))
}
