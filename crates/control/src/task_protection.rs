//! GetTaskProtection and UpdateTaskProtection: task scale-in protection. A protected task of a
//! service is not stopped by the service scheduler to scale in, to replace an older
//! deployment or to drain a deleted service until its protection expires or is turned off
//! (`services/rollout.rs` holds it and wakes the service when it expires). Only a service's
//! tasks can be protected: a standalone task is a `TASK_NOT_VALID` failure, as on ECS.
//!
//! The protection is kept in the task's record (`TaskInternal::protected_until`): expiry needs
//! no write, and turning protection off is a task change that wakes the service at once.

use crate::clusters;
use crate::plane::ControlPlane;
use crate::state::cache::service_of;
use crate::state::records::TaskRecord;
use crate::state::repo;
use crate::wire::parse;
use gantry_model::arn::{cluster_of_arn, last_segment};
use gantry_model::types::Failure;
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

/// "If you don't specify the time, then the task is automatically protected for 120 minutes."
const DEFAULT_MINUTES: i64 = 120;
/// 1 minute to 48 hours.
const MAX_MINUTES: i64 = 2880;
const MAX_UPDATE: usize = 10;
const MAX_GET: usize = 100;
const TASK_NOT_VALID: &str = "TASK_NOT_VALID";

fn invalid(message: impl Into<String>) -> EcsError {
    EcsError::invalid_parameter(message)
}

/// The protection as the API shows it: `expirationDate` only while protected.
fn protected_task(arn: &str, until: Option<f64>, now: f64) -> Value {
    match until.filter(|u| *u > now) {
        Some(until) => json!({"taskArn": arn, "protectionEnabled": true, "expirationDate": until}),
        None => json!({"taskArn": arn, "protectionEnabled": false}),
    }
}

fn not_valid(arn: &str, detail: &str) -> Failure {
    Failure {
        arn: Some(arn.to_string()),
        reason: Some(TASK_NOT_VALID.into()),
        detail: Some(detail.to_string()),
    }
}

const NOT_A_SERVICE_TASK: &str =
    "The task does not belong to an Amazon ECS service: only a service's tasks can be protected.";

/// Whether `t` was started by a service of `cluster` that still exists.
fn belongs_to_service(plane: &ControlPlane, cluster: &str, t: &TaskRecord) -> bool {
    let by_service = t
        .task
        .started_by
        .as_deref()
        .is_some_and(|s| s.starts_with("ecs-svc/"));
    by_service
        && service_of(t).is_some_and(|s| {
            plane
                .cache
                .service(cluster, s)
                .is_some_and(|e| e.value.service.status != status::INACTIVE)
        })
}

/// Why `t` cannot be protected, if it cannot: it must be a live task of a service.
fn refusal(plane: &ControlPlane, cluster: &str, t: &TaskRecord) -> Option<&'static str> {
    if !belongs_to_service(plane, cluster, t) {
        Some(NOT_A_SERVICE_TASK)
    } else if t.task.last_status.as_deref() == Some(status::STOPPED)
        || t.task.desired_status.as_deref() == Some(status::STOPPED)
    {
        Some("The task has stopped or is stopping.")
    } else {
        None
    }
}

/// The task a client named, within `cluster`: its store key and the ARN to answer with.
fn named(plane: &ControlPlane, cluster: &str, given: &str) -> (Option<String>, String) {
    let given = given.trim();
    let arn = if given.starts_with("arn:") {
        given.to_string()
    } else {
        plane.scope().task(cluster, given)
    };
    let key = cluster_of_arn(given)
        .is_none_or(|c| c == cluster)
        .then(|| repo::task_key(cluster, last_segment(given)));
    (key, arn)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateInput {
    cluster: String,
    tasks: Vec<String>,
    protection_enabled: bool,
    expires_in_minutes: Option<i64>,
}

/// UpdateTaskProtection: protect the tasks for `expiresInMinutes` (120 by default) from now,
/// or end their protection. Each call sets the expiry afresh.
pub async fn update(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: UpdateInput = parse(input)?;
    if req.tasks.is_empty() || req.tasks.len() > MAX_UPDATE {
        return Err(invalid(format!(
            "tasks must name between 1 and {MAX_UPDATE} tasks."
        )));
    }
    let minutes = req.expires_in_minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(invalid(format!(
            "expiresInMinutes must be between 1 and {MAX_MINUTES} (48 hours); got {minutes}."
        )));
    }
    let cluster = clusters::resolve(plane, Some(&req.cluster)).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let now = now_epoch();
    let until = req.protection_enabled.then(|| now + (minutes * 60) as f64);
    let mut protected = Vec::new();
    let mut failures = Vec::new();
    for given in &req.tasks {
        let (key, arn) = named(plane, &cname, given);
        let Some(key) = key else {
            failures.push(Failure::missing(arn));
            continue;
        };
        // A refused task is not written: the refusal ends the read-modify-write.
        let mut refused = None;
        let updated = repo::update::<TaskRecord, _>(&*plane.store, &key, |t| {
            refused = refusal(plane, &cname, t);
            match refused {
                Some(why) => Err(EcsError::client(why)),
                None => {
                    t.internal.protected_until = until;
                    Ok(())
                }
            }
        })
        .await;
        match (updated, refused) {
            (Err(_), Some(why)) => failures.push(not_valid(&arn, why)),
            (Err(e), None) => return Err(e),
            (Ok(None), _) => failures.push(Failure::missing(arn)),
            (Ok(Some(t)), _) => protected.push(protected_task(
                t.task.task_arn.as_deref().unwrap_or(&arn),
                t.internal.protected_until,
                now,
            )),
        }
    }
    Ok(json!({"protectedTasks": protected, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetInput {
    cluster: String,
    tasks: Option<Vec<String>>,
}

/// GetTaskProtection: the protection of the tasks named, or, when none are named, of every
/// task of the cluster that is protected now.
pub async fn get(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: GetInput = parse(input)?;
    let given = req.tasks.unwrap_or_default();
    if given.len() > MAX_GET {
        return Err(invalid(format!("tasks must name at most {MAX_GET} tasks.")));
    }
    let cluster = clusters::resolve(plane, Some(&req.cluster)).await?;
    let cname = clusters::name_of(&cluster).to_string();
    let now = now_epoch();
    let mut protected = Vec::new();
    let mut failures = Vec::new();
    if given.is_empty() {
        let mut all: Vec<_> = plane
            .cache
            .tasks_of_cluster(&cname)
            .into_iter()
            .filter(|e| e.value.holds_resources() && e.value.protected_at(now))
            .collect();
        all.sort_by(|a, b| a.value.task.task_arn.cmp(&b.value.task.task_arn));
        for e in all {
            let arn = e.value.task.task_arn.clone().unwrap_or_default();
            protected.push(protected_task(&arn, e.value.internal.protected_until, now));
        }
    }
    for g in &given {
        let (key, arn) = named(plane, &cname, g);
        let record = match key {
            Some(_) => plane.cache.task(&cname, last_segment(g.trim())),
            None => None,
        };
        let Some(entry) = record else {
            failures.push(Failure::missing(arn));
            continue;
        };
        let t = &entry.value;
        let arn = t.task.task_arn.clone().unwrap_or(arn);
        if !belongs_to_service(plane, &cname, t) {
            failures.push(not_valid(&arn, NOT_A_SERVICE_TASK));
            continue;
        }
        // A stopped task is protected from nothing any more.
        let until = t
            .holds_resources()
            .then_some(t.internal.protected_until)
            .flatten();
        protected.push(protected_task(&arn, until, now));
    }
    Ok(json!({"protectedTasks": protected, "failures": failures}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_shows_its_expiry_only_while_it_holds() {
        let arn = "arn:aws:ecs:us-east-1:0:task/c/abc";
        assert_eq!(
            protected_task(arn, Some(200.0), 100.0),
            json!({"taskArn": arn, "protectionEnabled": true, "expirationDate": 200.0})
        );
        assert_eq!(
            protected_task(arn, Some(100.0), 100.0),
            json!({"taskArn": arn, "protectionEnabled": false})
        );
        assert_eq!(
            protected_task(arn, None, 100.0),
            json!({"taskArn": arn, "protectionEnabled": false})
        );
    }
}
