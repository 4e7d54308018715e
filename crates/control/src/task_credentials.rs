//! Task roles: the temporary credentials of a task whose definition (or overrides) names a
//! `taskRoleArn`, minted for the agent that runs the task (`POST /agent/v1/task-credentials`),
//! which serves them to the task's containers at ECS's credentials endpoint.
//!
//! They are minted as STS AssumeRole mints a session (`iam::sts::new_session_key`): an
//! `ASIA…` key with a session token, the role's rights and nothing more, session name = the
//! task id, so the API sees `arn:aws:sts::<account>:assumed-role/<role>/<task id>` — after
//! checking that the role exists and that its trust policy lets `ecs-tasks.amazonaws.com`
//! assume it (with `aws:SourceAccount` and `aws:SourceArn`, the task's cluster, as ECS sets
//! them for confused-deputy conditions). Otherwise the answer is ECS's own refusal,
//! "ECS was unable to assume the role …", which the agent makes the task's stopped reason.
//!
//! A task keeps at most two keys: each new mint deletes all but the newest earlier one (an
//! SDK in the container may still hold it until it expires). [`TaskKeyRevoker`] deletes a
//! task's keys once it is STOPPED or gone; the janitor deletes expired session keys.

use crate::auth::{Access, Owned, Protocol};
use crate::iam::sts::{new_session_key, session_token};
use crate::plane::ControlPlane;
use crate::request::Incoming;
use crate::state::iam::access_key_key;
use crate::state::repo::{commit, put_op};
use crate::wire::{error_response, json_response};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use gantry_auth::policy::{trust_allows, RequestContext, TrustPrincipal};
use gantry_model::agent_protocol::{TaskCredentialsRequest, TaskRoleCredentials};
use gantry_model::arn::{cluster_of_arn, last_segment};
use gantry_model::{now_epoch, status, EcsError, EcsResult};
use gantry_runtime::{Action, ReconcileError, Reconciler};
use gantry_store::TxnOp;
use std::sync::{Arc, Weak};

/// The action the endpoint is authorised as: ECS's agent receives task credentials on its
/// ACS session, which `ecs:Poll` grants.
const ACTION: &str = "ecs:Poll";
/// The service principal a task role must trust.
pub const ECS_TASKS_PRINCIPAL: &str = "ecs-tasks.amazonaws.com";

/// ECS's words for a task role it cannot assume (the role is missing, or its trust policy
/// does not name `ecs-tasks.amazonaws.com`).
pub fn unable_to_assume(role_arn: &str) -> String {
    format!(
        "ECS was unable to assume the role '{role_arn}' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role."
    )
}

/// `POST /agent/v1/task-credentials` from agents: the credentials of a task placed on the
/// agent's own instance (`Access::owned`), with the task channel's action.
pub async fn issue(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let (incoming, caller, wanted) = match Incoming::agent_json::<TaskCredentialsRequest>(
        &plane,
        req,
        "ecs",
        ACTION,
        "task credentials request",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let Some(cluster) = cluster_of_arn(&wanted.task_arn) else {
        return error_response(&EcsError::invalid_parameter(
            "taskArn must be a task ARN (arn:aws:ecs:<region>:<account>:task/<cluster>/<id>).",
        ));
    };
    let access = Access::new(ACTION, vec![wanted.task_arn.clone()])
        .owning([Owned::Task {
            cluster: cluster.to_string(),
            task: wanted.task_arn.clone(),
        }])
        .agents_only();
    if let Err(d) = incoming.authorize(&plane, &caller, &access, Protocol::Json) {
        return error_response(&d.to_ecs());
    }
    match mint(&plane, &wanted.task_arn).await {
        Ok(creds) => {
            incoming.audit(
                &plane,
                Some(&caller),
                ACTION,
                &[wanted.task_arn.clone(), creds.role_arn.clone()],
                "Success",
                None,
            );
            match serde_json::to_string(&creds) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(e) => error_response(&EcsError::server(format!(
                    "cannot encode the credentials: {e}"
                ))),
            }
        }
        Err(e) => {
            tracing::info!(task = %wanted.task_arn, "no task role credentials: {}", e.message);
            incoming.audit(
                &plane,
                Some(&caller),
                ACTION,
                std::slice::from_ref(&wanted.task_arn),
                "Error",
                Some(e.code),
            );
            error_response(&e)
        }
    }
}

/// Mints new credentials for the role of task `task_arn`, deleting all but the newest of its
/// earlier keys in the same transaction.
pub(crate) async fn mint(plane: &ControlPlane, task_arn: &str) -> EcsResult<TaskRoleCredentials> {
    let cluster = cluster_of_arn(task_arn)
        .ok_or_else(|| EcsError::invalid_parameter("taskArn must be a task ARN."))?;
    let task_id = last_segment(task_arn);
    let Some(task) = plane.cache.task(cluster, task_id) else {
        return Err(EcsError::client(format!(
            "The task {task_arn} does not exist."
        )));
    };
    let task = &task.value.task;
    if task.last_status.as_deref() == Some(status::STOPPED) {
        return Err(EcsError::client(format!(
            "The task {task_arn} is stopped: its credentials are gone."
        )));
    }
    let overridden = task
        .overrides
        .as_ref()
        .and_then(|o| o.task_role_arn.clone())
        .filter(|r| !r.is_empty());
    let role_arn = match overridden {
        Some(r) => r,
        None => {
            let td_arn = task.task_definition_arn.as_deref().unwrap_or_default();
            plane
                .definition_by_arn(td_arn)
                .await?
                .task_role_arn
                .clone()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| EcsError::client(format!("The task {task_arn} has no task role.")))?
        }
    };
    let account = plane.scope().account.clone();
    let cluster_arn = task
        .cluster_arn
        .clone()
        .unwrap_or_else(|| plane.scope().cluster(cluster));
    let role = plane.cache.iam(|i| {
        i.roles
            .get(last_segment(&role_arn))
            .filter(|r| r.record.arn == role_arn)
            .cloned()
    });
    let mut ctx = RequestContext::new();
    ctx.set("aws:SourceAccount", account.clone());
    ctx.set("aws:SourceArn", cluster_arn);
    let trusted = role.as_ref().is_some_and(|r| {
        r.trust
            .as_ref()
            .is_some_and(|t| trust_allows(t, &TrustPrincipal::Service(ECS_TASKS_PRINCIPAL), &ctx))
    });
    let Some(role) = role.filter(|_| trusted) else {
        return Err(EcsError::client(unable_to_assume(&role_arn)));
    };
    let now = now_epoch();
    let expiration = now + plane.config.task_credentials_secs.max(1) as f64;
    let key = new_session_key(
        &role.record.role_name,
        task_id,
        now,
        expiration,
        ECS_TASKS_PRINCIPAL,
        Some(task_arn),
    );
    // Keep the newest earlier key (the container may hold it until it expires); older ones go.
    // Newest by creation time: the index's order is not that after a re-list of the store.
    let mut earlier: Vec<(f64, String)> = plane.cache.iam(|i| {
        i.task_keys
            .get(task_arn)
            .map(|ids| {
                ids.iter()
                    .map(|id| {
                        let created = i.keys.get(id).map_or(0.0, |k| k.create_date);
                        (created, id.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    earlier.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ops: Vec<TxnOp> = earlier
        .iter()
        .take(earlier.len().saturating_sub(1))
        .map(|(_, id)| TxnOp::Delete {
            key: access_key_key(id),
        })
        .collect();
    ops.push(put_op(&access_key_key(&key.access_key_id), &key)?);
    commit(&*plane.store, Vec::new(), ops).await?;
    Ok(TaskRoleCredentials {
        role_arn: role.record.arn.clone(),
        access_key_id: key.access_key_id.clone(),
        secret_access_key: key.secret_access_key.clone(),
        session_token: session_token(&key).to_string(),
        expiration,
    })
}

/// Deletes a task's role credentials once the task is STOPPED or gone. Keyed by task ARN;
/// woken when a task stops or is deleted, and its resync (every minute) lists every task that
/// holds keys, which also catches a key minted while its task was stopping.
pub struct TaskKeyRevoker {
    pub plane: Weak<ControlPlane>,
}

impl TaskKeyRevoker {
    /// Whether a task change may leave keys to delete: the task stopped, or it is gone.
    pub fn concerned(
        old: Option<&crate::state::records::TaskRecord>,
        new: Option<&crate::state::records::TaskRecord>,
    ) -> Option<String> {
        let stopped = |t: &crate::state::records::TaskRecord| {
            t.task.last_status.as_deref() == Some(status::STOPPED)
        };
        match (old, new) {
            (Some(o), None) => o.task.task_arn.clone(),
            (old, Some(n)) if stopped(n) && !old.is_some_and(stopped) => n.task.task_arn.clone(),
            _ => None,
        }
    }
}

impl Reconciler for TaskKeyRevoker {
    type Key = String;

    async fn reconcile(&self, task_arn: &String) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        let keys: Vec<String> = plane
            .cache
            .iam(|i| i.task_keys.get(task_arn).cloned())
            .unwrap_or_default();
        if keys.is_empty() {
            return Ok(Action::Done);
        }
        let live = cluster_of_arn(task_arn)
            .and_then(|c| plane.cache.task(c, last_segment(task_arn)))
            .is_some_and(|t| t.value.task.last_status.as_deref() != Some(status::STOPPED));
        if live {
            return Ok(Action::Done);
        }
        let ops = keys
            .iter()
            .map(|id| TxnOp::Delete {
                key: access_key_key(id),
            })
            .collect();
        commit(&*plane.store, Vec::new(), ops)
            .await
            .map_err(|e| ReconcileError(e.message))?;
        tracing::debug!(task = %task_arn, keys = keys.len(), "deleted a stopped task's role credentials");
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<String>, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Vec::new());
        };
        Ok(plane.cache.iam(|i| i.task_keys.keys().cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogStore;
    use crate::plane::ControlConfig;
    use crate::state::iam::{role_key, KeyOwner, RoleRecord};
    use crate::state::keys::task_key;
    use crate::state::records::TaskRecord;
    use gantry_model::types::{Task, TaskOverride};
    use gantry_store::SqliteStore;

    const ACCOUNT_ROLE: &str = "arn:aws:iam::000000000000:role/";

    async fn plane() -> Arc<ControlPlane> {
        Arc::new(
            ControlPlane::open(
                ControlConfig {
                    task_credentials_secs: 600,
                    ..ControlConfig::default()
                },
                Arc::new(SqliteStore::open_in_memory().expect("store")),
                LogStore::open_in_memory().expect("logs"),
                crate::audit::AuditLog::in_memory(100).expect("audit"),
            )
            .await
            .expect("plane"),
        )
    }

    async fn put<T: serde::Serialize>(plane: &ControlPlane, key: &str, value: &T) {
        let op = put_op(key, value).expect("encode");
        assert!(commit(&*plane.store, Vec::new(), vec![op])
            .await
            .expect("commit"));
    }

    async fn role(plane: &ControlPlane, name: &str, trusted_service: &str) {
        let trust = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": trusted_service},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": "000000000000"}}
            }]
        });
        let record = RoleRecord {
            role_name: name.into(),
            role_id: format!("AROA{name}"),
            arn: format!("{ACCOUNT_ROLE}{name}"),
            path: "/".into(),
            create_date: now_epoch(),
            assume_role_policy_document: trust.to_string(),
            description: None,
            max_session_duration: 3600,
            tags: Vec::new(),
            inline_policies: Default::default(),
            attached_policies: Vec::new(),
        };
        put(plane, &role_key(name), &record).await;
    }

    /// A task of cluster `c` whose overrides name role `role`; its ARN.
    async fn task(plane: &ControlPlane, id: &str, role: &str, last_status: &str) -> String {
        let arn = format!("arn:aws:ecs:us-east-1:000000000000:task/c/{id}");
        let record = TaskRecord {
            task: Task {
                task_arn: Some(arn.clone()),
                cluster_arn: Some("arn:aws:ecs:us-east-1:000000000000:cluster/c".into()),
                last_status: Some(last_status.into()),
                overrides: Some(TaskOverride {
                    task_role_arn: Some(format!("{ACCOUNT_ROLE}{role}")),
                    ..Default::default()
                }),
                ..Default::default()
            },
            internal: Default::default(),
        };
        put(plane, &task_key("c", id), &record).await;
        arn
    }

    fn keys_of(plane: &ControlPlane, task_arn: &str) -> Vec<String> {
        plane
            .cache
            .iam(|i| i.task_keys.get(task_arn).cloned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_role_that_trusts_ecs_tasks_gets_session_keys_named_after_the_task() {
        let plane = plane().await;
        role(&plane, "app", ECS_TASKS_PRINCIPAL).await;
        let t = task(&plane, "t1", "app", status::RUNNING).await;
        let before = now_epoch();
        let c = mint(&plane, &t).await.expect("credentials");
        assert!(c.access_key_id.starts_with("ASIA"));
        assert_eq!(c.role_arn, format!("{ACCOUNT_ROLE}app"));
        assert!(c.expiration >= before + 600.0 && c.expiration <= now_epoch() + 600.0);
        let key = plane
            .cache
            .iam(|i| i.keys.get(&c.access_key_id).cloned())
            .expect("stored");
        match &key.owner {
            KeyOwner::Session {
                role_name,
                session_name,
                session_token,
                task_arn,
                ..
            } => {
                assert_eq!(role_name, "app");
                assert_eq!(session_name, "t1");
                assert_eq!(session_token, &c.session_token);
                assert_eq!(task_arn.as_deref(), Some(t.as_str()));
            }
            other => panic!("{other:?}"),
        }
        // Each renewal keeps the one before it (a container may still hold it), no more.
        let second = mint(&plane, &t).await.expect("second");
        let third = mint(&plane, &t).await.expect("third");
        let mut held = keys_of(&plane, &t);
        held.sort();
        let mut want = vec![second.access_key_id, third.access_key_id];
        want.sort();
        assert_eq!(held, want);
    }

    #[tokio::test]
    async fn a_role_ecs_cannot_assume_is_refused_with_ecs_words() {
        let plane = plane().await;
        role(&plane, "ec2-only", "ec2.amazonaws.com").await;
        for (id, r) in [("t2", "ec2-only"), ("t3", "missing")] {
            let t = task(&plane, id, r, status::RUNNING).await;
            let e = mint(&plane, &t).await.expect_err("refused");
            assert_eq!(e.code, "ClientException");
            assert_eq!(e.message, unable_to_assume(&format!("{ACCOUNT_ROLE}{r}")));
            assert!(keys_of(&plane, &t).is_empty());
        }
        role(&plane, "app", ECS_TASKS_PRINCIPAL).await;
        let stopped = task(&plane, "t4", "app", status::STOPPED).await;
        assert!(mint(&plane, &stopped).await.is_err());
        assert!(
            mint(&plane, "arn:aws:ecs:us-east-1:000000000000:task/c/none")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_stopped_or_deleted_tasks_keys_are_revoked() {
        let plane = plane().await;
        role(&plane, "app", ECS_TASKS_PRINCIPAL).await;
        let running = task(&plane, "t5", "app", status::RUNNING).await;
        let stopping = task(&plane, "t6", "app", status::RUNNING).await;
        mint(&plane, &running).await.expect("t5");
        mint(&plane, &stopping).await.expect("t6");
        task(&plane, "t6", "app", status::STOPPED).await;
        let revoker = TaskKeyRevoker {
            plane: Arc::downgrade(&plane),
        };
        let mut listed = revoker.list().await.expect("list");
        listed.sort();
        assert_eq!(listed, vec![running.clone(), stopping.clone()]);
        for t in &listed {
            revoker.reconcile(t).await.expect("reconcile");
        }
        assert_eq!(
            keys_of(&plane, &running).len(),
            1,
            "a running task keeps its key"
        );
        assert!(keys_of(&plane, &stopping).is_empty());

        // What wakes the revoker: a task that stops, or goes.
        let rec = |s: &str| TaskRecord {
            task: Task {
                task_arn: Some(running.clone()),
                last_status: Some(s.into()),
                ..Default::default()
            },
            internal: Default::default(),
        };
        let (run, stop) = (rec(status::RUNNING), rec(status::STOPPED));
        assert_eq!(
            TaskKeyRevoker::concerned(Some(&run), Some(&stop)),
            Some(running.clone())
        );
        assert_eq!(
            TaskKeyRevoker::concerned(Some(&run), None),
            Some(running.clone())
        );
        assert_eq!(TaskKeyRevoker::concerned(Some(&stop), Some(&stop)), None);
        assert_eq!(TaskKeyRevoker::concerned(None, Some(&run)), None);
    }
}
