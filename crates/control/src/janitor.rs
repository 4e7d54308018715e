//! Background housekeeping: forget STOPPED tasks once they have been describable for the
//! retention period (ECS keeps them for about an hour).

use crate::repo;
use crate::state::ControlPlane;
use crate::tasks::TaskRecord;
use gantry_model::{now_epoch, status};
use gantry_store::TxnOp;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(plane: Arc<ControlPlane>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&plane).await {
            tracing::warn!("janitor sweep failed: {e}");
        }
    }
}

async fn sweep(plane: &ControlPlane) -> gantry_model::EcsResult<()> {
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
            repo::commit(
                &*plane.store,
                vec![repo::unchanged_since(&kv.key, kv.mod_revision)],
                vec![TxnOp::Delete {
                    key: kv.key.clone(),
                }],
            )
            .await?;
        }
    }
    Ok(())
}
