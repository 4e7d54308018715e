//! The control plane's shared state: configuration, the store, the log store, and the set of
//! agents currently connected on the channel.

use crate::logs::LogStore;
use crate::repo;
use gantry_model::types::ContainerInstance;
use gantry_model::ArnScope;
use gantry_store::KvStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub scope: ArnScope,
    /// How long STOPPED tasks (and INACTIVE services) stay describable (ECS keeps them for at
    /// least an hour).
    pub stopped_task_retention_secs: u64,
    /// How long a service task must stay healthy before its deployment counts as COMPLETED
    /// (and a healthy task resets the circuit breaker). It is what catches a release that
    /// starts and then crashes a few seconds later.
    pub service_stability_window_secs: f64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            scope: ArnScope::default(),
            stopped_task_retention_secs: 3600,
            service_stability_window_secs: 5.0,
        }
    }
}

pub struct ControlPlane {
    pub config: ControlConfig,
    pub store: Arc<dyn KvStore>,
    pub logs: LogStore,
    /// Channel connections by container instance ARN, with a generation number so that a
    /// stale connection closing does not mark a newer one disconnected.
    pub(crate) connections: Mutex<HashMap<String, u64>>,
    pub(crate) next_connection: std::sync::atomic::AtomicU64,
}

impl ControlPlane {
    pub fn new(config: ControlConfig, store: Arc<dyn KvStore>, logs: LogStore) -> Self {
        ControlPlane {
            config,
            store,
            logs,
            connections: Mutex::new(HashMap::new()),
            next_connection: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub fn scope(&self) -> &ArnScope {
        &self.config.scope
    }

    /// After a restart no channel is open yet: every agent counts as disconnected until it
    /// dials back in.
    pub(crate) async fn mark_all_agents_disconnected(&self) {
        let Ok((kvs, _)) = self.store.range(repo::INSTANCES).await else {
            return;
        };
        for kv in kvs {
            let _ = repo::update::<ContainerInstance, _>(&*self.store, &kv.key, |ci| {
                ci.agent_connected = false;
                Ok(())
            })
            .await;
        }
    }
}

impl ControlPlane {
    /// Create `name` if it does not exist (or was deleted); used by `gantry dev` so its agent
    /// has a cluster to join.
    pub async fn ensure_cluster(&self, name: &str) -> gantry_model::EcsResult<()> {
        crate::clusters::create(self, serde_json::json!({"clusterName": name})).await?;
        Ok(())
    }
}
