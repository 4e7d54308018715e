//! Background housekeeping: forget STOPPED tasks once they have been describable for the
//! retention period (ECS keeps them for about an hour), and RunTask client tokens as old
//! (the SDKs send a fresh token with every call, so they would otherwise pile up), and INACTIVE
//! services after the same period; deletes Secrets Manager secrets whose recovery window has
//! passed; deletes session keys (AssumeRole's, task roles') an hour after they expired (AWS
//! answers an expired token with ExpiredToken for a while, so they are kept that long); and
//! enforces log retention per log group; and, with replicas on etcd, marks the agents of a
//! replica that died as disconnected (so that their lost-host grace period starts).

use crate::plane::ControlPlane;
use crate::state::iam::{access_key_key, KeyOwner};
use crate::state::records::{RunTokenRecord, TaskRecord};
use crate::state::repo;
use crate::state::service_record::ServiceRecord;
use gantry_model::{now_epoch, status};
use gantry_runtime::{Action, ReconcileError, Reconciler};
use gantry_store::TxnOp;
use std::sync::Weak;
use std::time::Duration;

/// How long after its expiration a session key is deleted: until then a call signed with it
/// is told its token expired rather than that it is unknown.
pub const EXPIRED_KEYS_KEPT_SECS: f64 = 3600.0;

/// How often the janitor sweeps (its controller's resync period).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The janitor as a controller with a single key: the runtime's resync runs it every
/// [`SWEEP_EVERY`], and a failed sweep is retried with back-off.
pub struct Janitor {
    pub plane: Weak<ControlPlane>,
}

impl Reconciler for Janitor {
    type Key = ();

    async fn reconcile(&self, _: &()) -> Result<Action, ReconcileError> {
        let Some(plane) = self.plane.upgrade() else {
            return Ok(Action::Done);
        };
        // The sweep decides for every replica: only the leader runs it (fenced); the log
        // store below is this replica's own.
        match plane.as_leader(sweep(&plane)).await {
            Ok(Some(swept)) => swept.map_err(|e| ReconcileError(e.message))?,
            Ok(None) => {}
            Err(e) => return Err(ReconcileError(e)),
        }
        // Log retention per group rides on the same minute (a failure is logged there).
        plane.logs.enforce_retention_now().await;
        Ok(Action::Done)
    }

    async fn list(&self) -> Result<Vec<()>, ReconcileError> {
        Ok(vec![()])
    }
}

async fn sweep(plane: &ControlPlane) -> gantry_model::EcsResult<()> {
    // Agents of a replica that died still look connected through it.
    plane.mark_orphaned_agents_disconnected().await?;
    let retention = plane.config.stopped_task_retention_secs.max(3600) as f64;
    let cutoff = now_epoch() - retention;
    let (kvs, _) = plane
        .store
        .range(repo::TASKS)
        .await
        .map_err(repo::store_error)?;
    for kv in kvs {
        let Ok(t) = repo::decode::<TaskRecord>(&kv) else {
            continue;
        };
        let expired = t.task.last_status.as_deref() == Some(status::STOPPED)
            && t.task.stopped_at.is_some_and(|s| s < cutoff);
        if expired {
            forget(plane, &kv).await?;
        }
    }
    let (tokens, _) = plane
        .store
        .range(repo::RUN_TOKENS)
        .await
        .map_err(repo::store_error)?;
    for kv in tokens {
        if repo::decode::<RunTokenRecord>(&kv).is_ok_and(|t| t.created_at < cutoff) {
            forget(plane, &kv).await?;
        }
    }
    let (services, _) = plane
        .store
        .range(repo::SERVICES)
        .await
        .map_err(repo::store_error)?;
    for kv in services {
        let inactive_long_enough = repo::decode::<ServiceRecord>(&kv)
            .is_ok_and(|s| s.internal.inactive_at.is_some_and(|at| at < cutoff));
        if inactive_long_enough {
            forget(plane, &kv).await?;
        }
    }
    crate::secretsmanager::purge_expired(plane).await?;
    forget_expired_sessions(plane, now_epoch() - EXPIRED_KEYS_KEPT_SECS).await
}

/// Deletes the session keys that expired before `cutoff` (unix seconds), a few hundred per
/// transaction. A session key never changes once written, so no guard is needed.
async fn forget_expired_sessions(plane: &ControlPlane, cutoff: f64) -> gantry_model::EcsResult<()> {
    let expired: Vec<String> = plane.cache.iam(|i| {
        i.keys
            .values()
            .filter(|k| matches!(&k.owner, KeyOwner::Session { expiration, .. } if *expiration < cutoff))
            .map(|k| k.access_key_id.clone())
            .collect()
    });
    for chunk in expired.chunks(256) {
        let ops = chunk
            .iter()
            .map(|id| TxnOp::Delete {
                key: access_key_key(id),
            })
            .collect();
        repo::commit(&*plane.store, Vec::new(), ops).await?;
    }
    Ok(())
}

/// Delete a record unless it changed since it was read.
async fn forget(plane: &ControlPlane, kv: &gantry_store::KeyValue) -> gantry_model::EcsResult<()> {
    repo::commit(
        &*plane.store,
        vec![repo::unchanged_since(&kv.key, kv.mod_revision)],
        vec![TxnOp::Delete {
            key: kv.key.clone(),
        }],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogStore;
    use crate::plane::ControlConfig;
    use gantry_model::types::Task;
    use gantry_store::SqliteStore;
    use std::sync::Arc;

    fn task(last_status: &str, stopped_at: Option<f64>) -> TaskRecord {
        TaskRecord {
            task: Task {
                last_status: Some(last_status.into()),
                stopped_at,
                ..Default::default()
            },
            internal: Default::default(),
        }
    }

    #[tokio::test]
    async fn forgets_old_stopped_tasks_and_tokens_only() {
        let store = SqliteStore::open_in_memory().expect("store");
        let plane = ControlPlane::open(
            ControlConfig::default(),
            Arc::new(store),
            LogStore::open_in_memory().expect("logs"),
            crate::audit::AuditLog::in_memory(100).expect("audit"),
        )
        .await
        .expect("plane");
        let old = now_epoch() - 7200.0;
        let records = [
            ("tasks/c/old", task(status::STOPPED, Some(old))),
            ("tasks/c/recent", task(status::STOPPED, Some(now_epoch()))),
            ("tasks/c/running", task(status::RUNNING, None)),
        ];
        let mut ops = Vec::new();
        for (k, t) in &records {
            ops.push(repo::put_op(k, t).expect("encode"));
        }
        ops.push(TxnOp::Put {
            key: repo::run_token_key("c", "old"),
            value: br#"{"taskArns":[],"failures":[],"createdAt":1.0}"#.to_vec(),
        });
        ops.push(TxnOp::Put {
            key: repo::run_token_key("c", "new"),
            value: format!(
                r#"{{"taskArns":[],"failures":[],"createdAt":{}}}"#,
                now_epoch()
            )
            .into_bytes(),
        });
        assert!(repo::commit(&*plane.store, vec![], ops)
            .await
            .expect("commit"));

        sweep(&plane).await.expect("sweep");

        let (left, _) = plane.store.range("").await.expect("range");
        let keys: Vec<&str> = left.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["run-tokens/c/new", "tasks/c/recent", "tasks/c/running"]
        );
    }

    #[tokio::test]
    async fn the_only_replica_keeps_its_connected_agents_connected() {
        let plane = ControlPlane::open(
            ControlConfig::default(),
            Arc::new(SqliteStore::open_in_memory().expect("store")),
            LogStore::open_in_memory().expect("logs"),
            crate::audit::AuditLog::in_memory(100).expect("audit"),
        )
        .await
        .expect("plane");
        let instance = gantry_model::types::ContainerInstance {
            container_instance_arn: Some(
                "arn:aws:ecs:us-east-1:000000000000:container-instance/c/i1".into(),
            ),
            agent_connected: true,
            agent_replica: Some(plane.replica.id.clone()),
            ..Default::default()
        };
        let key = crate::state::keys::instance_key("c", "i1");
        assert!(repo::commit(
            &*plane.store,
            vec![],
            vec![repo::put_op(&key, &instance).expect("encode")]
        )
        .await
        .expect("commit"));
        sweep(&plane).await.expect("sweep");
        let (after, _) = repo::get::<gantry_model::types::ContainerInstance>(&*plane.store, &key)
            .await
            .expect("get")
            .expect("instance");
        assert!(after.agent_connected, "swept as if its replica were gone");
    }

    #[tokio::test]
    async fn forgets_session_keys_an_hour_after_they_expired() {
        let store = SqliteStore::open_in_memory().expect("store");
        let plane = ControlPlane::open(
            ControlConfig::default(),
            Arc::new(store),
            LogStore::open_in_memory().expect("logs"),
            crate::audit::AuditLog::in_memory(100).expect("audit"),
        )
        .await
        .expect("plane");
        let now = now_epoch();
        let keys = [
            ("ASIALONGEXPIRED", now - EXPIRED_KEYS_KEPT_SECS - 10.0),
            ("ASIAJUSTEXPIRED", now - 10.0),
            ("ASIAVALID", now + 600.0),
        ]
        .map(|(id, expiration)| {
            let mut k = crate::iam::sts::new_session_key("r", "s", now, expiration, "x", None);
            k.access_key_id = id.to_string();
            k
        });
        let ops = keys
            .iter()
            .map(|k| repo::put_op(&access_key_key(&k.access_key_id), k).expect("encode"))
            .collect();
        assert!(repo::commit(&*plane.store, vec![], ops)
            .await
            .expect("commit"));
        sweep(&plane).await.expect("sweep");
        let mut left: Vec<String> = plane.cache.iam(|i| i.keys.keys().cloned().collect());
        left.sort();
        assert_eq!(left, vec!["ASIAJUSTEXPIRED", "ASIAVALID"]);
    }
}
