//! The deployment history ECS added in 2024: ListServiceDeployments,
//! DescribeServiceDeployments, StopServiceDeployment, DescribeServiceRevisions. Every
//! deployment of a service is a *service deployment* from one set of *service revisions* to
//! another; both live inside the service record.

use super::api::rolling_out;
use super::rollout;
use crate::clusters;
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::repo;
use crate::state::service_record::ServiceRecord;
use crate::wire::{parse, to_output};
use gantry_model::arn::{last_segment, service_child_of_arn};
use gantry_model::services::{deployment_status, rollout as rollout_state};
use gantry_model::types::Failure;
use gantry_model::{now_epoch, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedAt {
    before: Option<f64>,
    after: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    service: String,
    cluster: Option<String>,
    status: Option<Vec<String>>,
    created_at: Option<CreatedAt>,
    next_token: Option<String>,
    max_results: Option<i32>,
}

const STATUSES: &[&str] = &[
    deployment_status::PENDING,
    deployment_status::SUCCESSFUL,
    deployment_status::STOPPED,
    deployment_status::STOP_REQUESTED,
    deployment_status::IN_PROGRESS,
    deployment_status::ROLLBACK_REQUESTED,
    deployment_status::ROLLBACK_IN_PROGRESS,
    deployment_status::ROLLBACK_SUCCESSFUL,
    deployment_status::ROLLBACK_FAILED,
];

pub async fn list(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    for s in req.status.iter().flatten() {
        if !STATUSES.contains(&s.as_str()) {
            return Err(EcsError::invalid_parameter(format!(
                "Invalid service deployment status '{s}'."
            )));
        }
    }
    let cluster = clusters::resolve(plane, req.cluster.as_deref()).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let (rec, _) = repo::get::<ServiceRecord>(
        &*plane.store,
        &repo::service_key(&cname, last_segment(&req.service)),
    )
    .await?
    .ok_or_else(EcsError::service_not_found)?;
    let briefs: Vec<Value> = rec
        .internal
        .history
        .iter()
        .rev()
        .filter(|h| req.status.as_ref().is_none_or(|s| s.contains(&h.status)))
        .filter(|h| {
            req.created_at.as_ref().is_none_or(|c| {
                c.before.is_none_or(|b| h.created_at < b)
                    && c.after.is_none_or(|a| h.created_at > a)
            })
        })
        .map(|h| {
            let mut b = json!({
                "serviceDeploymentArn": h.service_deployment_arn,
                "serviceArn": h.service_arn,
                "clusterArn": h.cluster_arn,
                "createdAt": h.created_at,
                "targetServiceRevisionArn": h.target_service_revision.arn,
                "status": h.status,
            });
            if let Some(s) = h.started_at {
                b["startedAt"] = json!(s);
            }
            if let Some(f) = h.finished_at.or(h.stopped_at) {
                b["finishedAt"] = json!(f);
            }
            if let Some(r) = &h.status_reason {
                b["statusReason"] = json!(r);
            }
            b
        })
        .collect();
    let (page, next) = pagination::page(briefs, req.next_token.as_deref(), req.max_results, 100)?;
    let mut out = json!({"serviceDeployments": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    service_deployment_arns: Vec<String>,
}

async fn record_for(
    plane: &ControlPlane,
    arn: &str,
    kind: &str,
) -> EcsResult<Option<(ServiceRecord, i64)>> {
    let Some((cluster, service, _)) = service_child_of_arn(arn, kind) else {
        return Ok(None);
    };
    repo::get::<ServiceRecord>(&*plane.store, &repo::service_key(cluster, service)).await
}

pub async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let (found, failures) = describe_children(
        plane,
        &req.service_deployment_arns,
        "service-deployment",
        |r, arn| {
            r.internal
                .history
                .iter()
                .find(|h| h.service_deployment_arn == arn)
                .map(to_output)
                .transpose()
        },
    )
    .await?;
    Ok(json!({"serviceDeployments": found, "failures": failures}))
}

/// Look up at most 20 ARNs of a service's children (`kind`: `service-deployment` or
/// `service-revision`) in their service records; the unknown ones become MISSING failures.
async fn describe_children(
    plane: &ControlPlane,
    arns: &[String],
    kind: &str,
    pick: impl Fn(&ServiceRecord, &str) -> EcsResult<Option<Value>>,
) -> EcsResult<(Vec<Value>, Vec<Failure>)> {
    if arns.is_empty() || arns.len() > 20 {
        let member = if kind == "service-deployment" {
            "serviceDeploymentArns"
        } else {
            "serviceRevisionArns"
        };
        return Err(EcsError::invalid_parameter(format!(
            "{member} must name between 1 and 20 {kind}s."
        )));
    }
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for arn in arns {
        match record_for(plane, arn, kind).await? {
            Some((r, _)) => match pick(&r, arn)? {
                Some(v) => found.push(v),
                None => failures.push(Failure::missing(arn.clone())),
            },
            None => failures.push(Failure::missing(arn.clone())),
        }
    }
    Ok((found, failures))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopInput {
    service_deployment_arn: String,
    stop_type: Option<String>,
}

pub async fn stop(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: StopInput = parse(input)?;
    let stop_type = req.stop_type.clone().unwrap_or_else(|| "ROLLBACK".into());
    if stop_type != "ROLLBACK" && stop_type != "ABORT" {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid stopType '{stop_type}': use ROLLBACK or ABORT."
        )));
    }
    let not_found = || {
        EcsError::new(
            "ServiceDeploymentNotFoundException",
            format!(
                "The service deployment {} does not exist.",
                req.service_deployment_arn
            ),
        )
    };
    let (cluster, service, _) =
        service_child_of_arn(&req.service_deployment_arn, "service-deployment")
            .ok_or_else(not_found)?;
    let key = repo::service_key(cluster, service);
    let arn = req.service_deployment_arn.clone();
    repo::update::<ServiceRecord, _>(&*plane.store, &key, |rec| {
        let known = rec
            .internal
            .history
            .iter()
            .any(|h| h.service_deployment_arn == arn);
        if !known {
            return Err(not_found());
        }
        if rec.service.status != gantry_model::services::ACTIVE {
            return Err(EcsError::new(
                "ServiceNotActiveException",
                "Service was not ACTIVE.",
            ));
        }
        let current = rec
            .primary()
            .and_then(|d| rec.internal_of(&d.id))
            .map(|d| d.service_deployment_arn.clone());
        if current.as_deref() != Some(arn.as_str()) || !rolling_out(rec) {
            return Err(EcsError::new(
                "ConflictException",
                "The service deployment is not in progress, so it cannot be stopped.",
            ));
        }
        let now = now_epoch();
        let name = rec.name().to_string();
        let primary_id = rec.service.deployments[0].id.clone();
        let reason = format!("Stopped by StopServiceDeployment ({stop_type}).");
        {
            let d = &mut rec.service.deployments[0];
            d.rollout_state = Some(rollout_state::FAILED.into());
            d.rollout_state_reason = Some(reason.clone());
            d.updated_at = now;
        }
        let target = rec.internal.last_completed_revision.clone().filter(|r| {
            rec.internal_of(&primary_id)
                .is_some_and(|d| d.revision_arn != *r)
        });
        let mut events = vec![format!(
            "(service {name}) (deployment {primary_id}) deployment stopped: {reason}"
        )];
        match (stop_type.as_str(), target) {
            ("ROLLBACK", Some(target)) => {
                if let Some(h) = rec.history_mut(&arn) {
                    h.status = deployment_status::ROLLBACK_REQUESTED.into();
                    h.status_reason = Some(reason.clone());
                    h.updated_at = now;
                }
                rollout::rollback_to(
                    rec,
                    &target,
                    &arn,
                    "StopServiceDeployment",
                    now,
                    &mut events,
                );
            }
            ("ROLLBACK", None) => {
                return Err(EcsError::invalid_parameter(
                    "There is no completed deployment to roll back to; use stopType ABORT.",
                ))
            }
            _ => {
                if let Some(h) = rec.history_mut(&arn) {
                    h.status = deployment_status::STOPPED.into();
                    h.status_reason = Some(reason.clone());
                    h.stopped_at = Some(now);
                    h.updated_at = now;
                }
            }
        }
        for e in events {
            rec.push_event(e, now);
        }
        Ok(())
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(json!({"serviceDeploymentArn": req.service_deployment_arn}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevisionsInput {
    service_revision_arns: Vec<String>,
}

pub async fn describe_revisions(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: RevisionsInput = parse(input)?;
    let (found, failures) = describe_children(
        plane,
        &req.service_revision_arns,
        "service-revision",
        |r, arn| r.revision(arn).map(to_output).transpose(),
    )
    .await?;
    Ok(json!({"serviceRevisions": found, "failures": failures}))
}
