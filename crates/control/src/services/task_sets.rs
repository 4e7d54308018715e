//! CreateTaskSet, DescribeTaskSets, UpdateTaskSet, DeleteTaskSet and
//! UpdateServicePrimaryTaskSet: the task sets of a service whose deployment controller is
//! EXTERNAL. A task set lives in its service's record (`service.taskSets`, at most five), so
//! every change is one compare-and-swap on that record; the service scheduler
//! (`task_set_plan.rs`) keeps each set at its share of the service's desired count.

use super::api::{
    has_health_check, is_external, resolve_task_definition, service_not_active, TASK_SET_MEMBERS,
};
use super::rollout::new_numeric_id;
use super::task_set_plan::refresh_computed_count;
use crate::clusters;
use crate::plane::ControlPlane;
use crate::state::repo;
use crate::state::service_record::{DeploymentInternal, ServiceRecord};
use crate::tags::{validate_tags, want_tags};
use crate::wire::{parse, to_output};
use gantry_model::arn::last_segment;
use gantry_model::services::{
    computed_desired_count, stability, Scale, TaskSet, ACTIVE, DRAINING, PERCENT, PRIMARY,
};
use gantry_model::types::{Cluster, Extra, Failure, Tag};
use gantry_model::{now_epoch, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

/// ECS's limit on the task sets of one service (its message calls them deployments).
const MAX_TASK_SETS: usize = 5;

pub fn task_set_not_found() -> EcsError {
    EcsError::new(
        "TaskSetNotFoundException",
        "The specified task set does not exist.",
    )
}

fn not_external() -> EcsError {
    EcsError::invalid_parameter(
        "Amazon ECS only supports task set management on services configured to use external deployment controllers.",
    )
}

/// A task set's id from its id or ARN (`…:task-set/<cluster>/<service>/ecs-svc/<digits>`).
fn task_set_id(given: &str) -> &str {
    match gantry_model::arn::task_set_of_arn(given) {
        Some((_, _, id)) => id,
        None => given,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleInput {
    value: Option<f64>,
    unit: Option<String>,
}

/// A scale as given, checked: a percentage from 0 to 100 (ECS's default is 0).
fn scale_of(given: Option<ScaleInput>) -> EcsResult<Scale> {
    let given = given.unwrap_or(ScaleInput {
        value: None,
        unit: None,
    });
    let unit = given.unit.unwrap_or_else(|| PERCENT.into());
    if unit != PERCENT {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid scale unit '{unit}': use PERCENT."
        )));
    }
    let value = given.value.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&value) {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid scale value {value}: a task set's scale must be between 0 and 100 percent."
        )));
    }
    Ok(Scale { value, unit })
}

/// The cluster a call names, its name, and the store key of the service it names.
async fn service_key(
    plane: &ControlPlane,
    cluster: &str,
    service: &str,
) -> EcsResult<(Cluster, String, String)> {
    let cluster = clusters::resolve(plane, Some(cluster)).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let key = repo::service_key(&cname, last_segment(service));
    Ok((cluster, cname, key))
}

/// An ACTIVE EXTERNAL service, or the error ECS gives.
fn check_service(rec: &ServiceRecord) -> EcsResult<()> {
    if rec.service.status != ACTIVE {
        return Err(service_not_active());
    }
    if !is_external(rec) {
        return Err(not_external());
    }
    Ok(())
}

fn find_mut<'a>(rec: &'a mut ServiceRecord, id: &str) -> EcsResult<&'a mut TaskSet> {
    rec.service
        .task_sets
        .iter_mut()
        .flatten()
        .find(|s| s.id == id)
        .ok_or_else(task_set_not_found)
}

/// The task set as the API returns it.
fn render(set: &TaskSet, with_tags: bool) -> TaskSet {
    let mut out = set.clone();
    if with_tags {
        out.tags.get_or_insert_with(Vec::new);
    } else {
        out.tags = None;
    }
    out
}

/// The service shows the settings of its PRIMARY task set (none when it has none).
fn show_primary(rec: &mut ServiceRecord) {
    let primary = rec
        .service
        .task_sets
        .iter()
        .flatten()
        .find(|s| s.status == PRIMARY)
        .cloned();
    for member in TASK_SET_MEMBERS {
        let value = match (*member, primary.as_ref()) {
            (_, None) => None,
            ("platformVersion", Some(p)) => p.platform_version.clone().map(Value::String),
            (_, Some(p)) => p.extra.get(*member).cloned(),
        };
        match value {
            Some(v) => {
                rec.service.extra.insert(member.to_string(), v);
            }
            None => {
                rec.service.extra.remove(*member);
            }
        }
    }
    rec.service.task_definition = primary.as_ref().map(|p| p.task_definition.clone());
    if let Some(p) = primary {
        rec.service.launch_type = p.launch_type;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateTaskSetInput {
    service: String,
    cluster: String,
    external_id: Option<String>,
    task_definition: String,
    network_configuration: Option<Value>,
    load_balancers: Option<Vec<Value>>,
    service_registries: Option<Vec<Value>>,
    launch_type: Option<String>,
    capacity_provider_strategy: Option<Vec<Value>>,
    platform_version: Option<String>,
    scale: Option<ScaleInput>,
    client_token: Option<String>,
    tags: Option<Vec<Tag>>,
}

fn validate_client_token(token: &Option<String>) -> EcsResult<()> {
    if let Some(t) = token {
        if t.is_empty() || t.len() > 36 || !t.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(EcsError::invalid_parameter(
                "clientToken must be 1 to 36 ASCII characters from '!' to '~'.",
            ));
        }
    }
    Ok(())
}

pub async fn create(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: CreateTaskSetInput = parse(input)?;
    let scale = scale_of(req.scale)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate_tags(&tags)?;
    validate_client_token(&req.client_token)?;
    if let Some(lt) = &req.launch_type {
        if !matches!(lt.as_str(), "EC2" | "FARGATE" | "EXTERNAL") {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid launchType '{lt}': use EC2, FARGATE or EXTERNAL."
            )));
        }
    }
    if req.external_id.as_ref().is_some_and(|e| e.len() > 255) {
        return Err(EcsError::invalid_parameter(
            "externalId can be at most 255 characters.",
        ));
    }
    let (cluster, cname, key) = service_key(plane, &req.cluster, &req.service).await?;
    let (current, _) = repo::get::<ServiceRecord>(&*plane.store, &key)
        .await?
        .ok_or_else(EcsError::service_not_found)?;
    check_service(&current)?;
    if let Some(id) = req
        .client_token
        .as_ref()
        .and_then(|t| current.internal.task_set_tokens.get(t))
    {
        if let Some(set) = current
            .service
            .task_sets
            .iter()
            .flatten()
            .find(|s| &s.id == id)
        {
            return to_output(&json!({"taskSet": render(set, true)}));
        }
    }

    // The task definition and launch settings are checked as RunTask checks them.
    let td = resolve_task_definition(plane, &req.task_definition).await?;
    let td_arn = td.task_definition_arn.clone().unwrap_or_default();
    let strategy: Vec<Value> = req.capacity_provider_strategy.clone().unwrap_or_default();
    let launch = crate::lifecycle::LaunchOptions {
        launch_type: req.launch_type.clone(),
        capacity_provider_strategy: strategy.clone(),
        platform_version: req.platform_version.clone(),
        network_configuration: req.network_configuration.clone(),
        ..crate::lifecycle::LaunchOptions::for_cluster(&cluster)
    };
    // Neither a launch type nor a strategy: the cluster's default strategy, if it has one,
    // becomes the set's (as for a service); else EC2.
    let default_strategy = (req.launch_type.is_none() && strategy.is_empty())
        .then(|| launch.cluster_default_strategy.clone())
        .filter(|s| !s.is_empty());
    let probe =
        crate::lifecycle::build_spec(plane, &td_arn, false, None, None, None, launch, None, None)
            .await?;
    probe.check_placement(
        &current.service.placement_strategy,
        &current.service.placement_constraints,
    )?;

    let now = now_epoch();
    // `ecs-svc/` and 19 digits, as ECS numbers task sets (their tasks carry it as `startedBy`).
    let id = format!("ecs-svc/{}", new_numeric_id());
    let mut extra = Extra::new();
    extra.insert(
        "loadBalancers".into(),
        json!(req.load_balancers.clone().unwrap_or_default()),
    );
    extra.insert(
        "serviceRegistries".into(),
        json!(req.service_registries.clone().unwrap_or_default()),
    );
    if let Some(n) = &req.network_configuration {
        extra.insert("networkConfiguration".into(), n.clone());
    }
    let chosen_strategy = if strategy.is_empty() {
        default_strategy
    } else {
        Some(strategy)
    };
    let launch_type = match &chosen_strategy {
        Some(s) => {
            extra.insert("capacityProviderStrategy".into(), json!(s));
            None
        }
        None => Some(req.launch_type.clone().unwrap_or_else(|| "EC2".into())),
    };
    // ECS shows a Fargate set's version resolved (LATEST → a number); its tasks run on it.
    let platform_version = probe.platform_version().map(str::to_string);
    let set = TaskSet {
        id: id.clone(),
        task_set_arn: plane
            .scope()
            .task_set(&cname, last_segment(&req.service), &id),
        service_arn: current.service.service_arn.clone(),
        cluster_arn: current.service.cluster_arn.clone(),
        started_by: None,
        external_id: req.external_id.clone(),
        status: ACTIVE.into(),
        task_definition: td_arn,
        computed_desired_count: 0,
        pending_count: 0,
        running_count: 0,
        created_at: now,
        updated_at: now,
        launch_type,
        platform_family: platform_version.as_ref().map(|_| "Linux".to_string()),
        platform_version,
        scale,
        stability_status: stability::STABILIZING.into(),
        stability_status_at: now,
        tags: Some(tags),
        extra,
    };
    let health_checked = has_health_check(&td);

    let mut out: Option<TaskSet> = None;
    repo::update::<ServiceRecord, _>(&*plane.store, &key, |rec| {
        check_service(rec)?;
        // A retry that raced its first attempt gets what the first attempt created.
        if let Some(id) = req
            .client_token
            .as_ref()
            .and_then(|t| rec.internal.task_set_tokens.get(t))
        {
            if let Some(s) = rec.service.task_sets.iter().flatten().find(|s| &s.id == id) {
                out = Some(s.clone());
                return Ok(());
            }
        }
        let sets = rec.service.task_sets.get_or_insert_with(Vec::new);
        if sets.len() >= MAX_TASK_SETS {
            return Err(EcsError::invalid_parameter(format!(
                "{} deployments exist on the service. Unable to create new TaskSet since this exceeds the maximum limit.",
                sets.len()
            )));
        }
        let mut new = set.clone();
        new.computed_desired_count =
            computed_desired_count(rec.service.desired_count, new.scale.value);
        sets.push(new.clone());
        rec.internal.deployments.push(DeploymentInternal {
            id: new.id.clone(),
            has_health_check: health_checked,
            ..Default::default()
        });
        if let Some(t) = &req.client_token {
            // Tokens of task sets that are gone are forgotten.
            let ids: Vec<String> = sets.iter().map(|s| s.id.clone()).collect();
            rec.internal
                .task_set_tokens
                .retain(|_, id| ids.contains(id));
            rec.internal
                .task_set_tokens
                .insert(t.clone(), new.id.clone());
        }
        rec.internal.steady = false;
        out = Some(new);
        Ok(())
    })
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    let created = out.unwrap_or(set);
    to_output(&json!({"taskSet": render(&created, true)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTaskSetsInput {
    cluster: String,
    service: String,
    task_sets: Option<Vec<String>>,
    include: Option<Vec<String>>,
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeTaskSetsInput = parse(input)?;
    let with_tags = want_tags(&req.include)?;
    let (_, cname, key) = service_key(plane, &req.cluster, &req.service).await?;
    let (rec, _) = repo::get::<ServiceRecord>(&*plane.store, &key)
        .await?
        .ok_or_else(EcsError::service_not_found)?;
    if rec.service.status == gantry_model::status::INACTIVE {
        return Err(service_not_active());
    }
    if !is_external(&rec) {
        return Err(not_external());
    }
    let sets: Vec<&TaskSet> = rec.service.task_sets.iter().flatten().collect();
    let mut found = Vec::new();
    let mut failures = Vec::new();
    match &req.task_sets {
        Some(wanted) if !wanted.is_empty() => {
            for given in wanted {
                let id = task_set_id(given);
                match sets.iter().find(|s| s.id == id) {
                    Some(s) => found.push(render(s, with_tags)),
                    None => failures.push(Failure {
                        arn: Some(if given.starts_with("arn:") {
                            given.clone()
                        } else {
                            plane
                                .scope()
                                .task_set(&cname, &rec.service.service_name, id)
                        }),
                        reason: Some("MISSING".into()),
                        detail: None,
                    }),
                }
            }
        }
        _ => found.extend(sets.iter().map(|s| render(s, with_tags))),
    }
    to_output(&json!({"taskSets": found, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateTaskSetInput {
    cluster: String,
    service: String,
    task_set: String,
    scale: ScaleInput,
}

pub async fn update(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateTaskSetInput = parse(input)?;
    let scale = scale_of(Some(req.scale))?;
    let (_, _, key) = service_key(plane, &req.cluster, &req.service).await?;
    let id = task_set_id(&req.task_set);
    let mut out = None;
    repo::update::<ServiceRecord, _>(&*plane.store, &key, |rec| {
        check_service(rec)?;
        let desired = rec.service.desired_count;
        let now = now_epoch();
        let set = find_mut(rec, id)?;
        if set.status == DRAINING {
            return Err(EcsError::invalid_parameter(
                "The task set is being deleted (DRAINING): its scale can no longer change.",
            ));
        }
        if set.scale != scale {
            set.scale = scale.clone();
            set.updated_at = now;
            refresh_computed_count(set, desired, false, now);
        }
        out = Some(render(set, false));
        rec.internal.steady = false;
        Ok(())
    })
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    to_output(&json!({ "taskSet": out }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteTaskSetInput {
    cluster: String,
    service: String,
    task_set: String,
    force: Option<bool>,
}

pub async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DeleteTaskSetInput = parse(input)?;
    let force = req.force.unwrap_or(false);
    let (_, _, key) = service_key(plane, &req.cluster, &req.service).await?;
    let id = task_set_id(&req.task_set);
    let mut out = None;
    repo::update::<ServiceRecord, _>(&*plane.store, &key, |rec| {
        check_service(rec)?;
        let now = now_epoch();
        let set = find_mut(rec, id)?;
        if set.status == DRAINING {
            out = Some(render(set, false));
            return Ok(());
        }
        if !force && set.status == PRIMARY {
            return Err(EcsError::invalid_parameter(
                "Primary TaskSet cannot be deleted. Make another task set primary first (UpdateServicePrimaryTaskSet), or delete it with force.",
            ));
        }
        let holds_tasks =
            set.computed_desired_count > 0 || set.running_count > 0 || set.pending_count > 0;
        if !force && holds_tasks {
            return Err(EcsError::invalid_parameter(
                "The task set cannot be deleted while it is scaled above 0. Update its scale to 0 first (UpdateTaskSet), or delete it with force.",
            ));
        }
        let was_primary = set.status == PRIMARY;
        set.status = DRAINING.into();
        set.updated_at = now;
        refresh_computed_count(set, 0, true, now);
        out = Some(render(set, false));
        if was_primary {
            show_primary(rec);
        }
        rec.internal.steady = false;
        Ok(())
    })
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    to_output(&json!({ "taskSet": out }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdatePrimaryInput {
    cluster: String,
    service: String,
    primary_task_set: String,
}

pub async fn update_primary(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdatePrimaryInput = parse(input)?;
    let (_, _, key) = service_key(plane, &req.cluster, &req.service).await?;
    let id = task_set_id(&req.primary_task_set);
    let mut out = None;
    repo::update::<ServiceRecord, _>(&*plane.store, &key, |rec| {
        check_service(rec)?;
        let now = now_epoch();
        let target = find_mut(rec, id)?;
        if target.status == DRAINING {
            return Err(EcsError::invalid_parameter(
                "The task set is being deleted (DRAINING) and cannot become the primary task set.",
            ));
        }
        if target.status == PRIMARY {
            out = Some(render(target, false));
            return Ok(());
        }
        // The former primary keeps its tasks and its scale: it is merely not serving as
        // the service's any more.
        for set in rec.service.task_sets.iter_mut().flatten() {
            let status = if set.id == id {
                PRIMARY
            } else if set.status == PRIMARY {
                ACTIVE
            } else {
                continue;
            };
            set.status = status.into();
            set.updated_at = now;
        }
        show_primary(rec);
        out = rec
            .service
            .task_sets
            .iter()
            .flatten()
            .find(|s| s.id == id)
            .map(|s| render(s, false));
        Ok(())
    })
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    to_output(&json!({ "taskSet": out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_set_is_named_by_its_id_or_its_arn() {
        let arn = gantry_model::ArnScope::default().task_set(
            "prod",
            "web",
            "ecs-svc/1234567890123456789",
        );
        assert_eq!(
            arn,
            "arn:aws:ecs:us-east-1:000000000000:task-set/prod/web/ecs-svc/1234567890123456789"
        );
        assert_eq!(task_set_id(&arn), "ecs-svc/1234567890123456789");
        assert_eq!(
            task_set_id("ecs-svc/1234567890123456789"),
            "ecs-svc/1234567890123456789"
        );
    }

    #[test]
    fn a_scale_is_a_percentage_from_0_to_100() {
        let s = |value, unit: Option<&str>| {
            scale_of(Some(ScaleInput {
                value,
                unit: unit.map(str::to_string),
            }))
        };
        assert_eq!(s(Some(50.0), None).map(|s| s.value), Ok(50.0));
        assert_eq!(s(None, Some("PERCENT")).map(|s| s.value), Ok(0.0));
        assert_eq!(scale_of(None).map(|s| s.unit), Ok("PERCENT".to_string()));
        for bad in [
            s(Some(100.5), None),
            s(Some(-1.0), None),
            s(Some(5.0), Some("COUNT")),
        ] {
            assert_eq!(bad.map_err(|e| e.code), Err("InvalidParameterException"));
        }
    }
}
