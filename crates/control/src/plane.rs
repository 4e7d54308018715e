//! The control plane's shared state: configuration, the state layer (store + cache), the log
//! store, the agents currently connected on the channel, and the handles that feed the
//! controllers.

pub use crate::audit::AuditLog;
use crate::logs::LogStore;
use crate::state::cache::Cache;
use crate::state::records::set_agent_connected;
use crate::state::repo;
use crate::state::StateStore;
use gantry_model::elbv2::LoadBalancerDataPlane;
use gantry_model::types::{ContainerInstance, TaskDefinition};
use gantry_model::ArnScope;
use gantry_model::{EcsError, EcsResult};
use gantry_store::KvStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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
    /// How long an instance's agent may stay disconnected before the instance is declared
    /// lost and its tasks STOPPED (services then replace them elsewhere).
    pub lost_host_after_secs: f64,
    /// Whether requests must be signed (SigV4) and authorised by IAM policies. Off only when
    /// asked for explicitly, and then only on a loopback address (the binary checks).
    pub authenticate: bool,
    /// Whether the API is served over TLS (`aws:SecureTransport` in policy conditions).
    pub secure_transport: bool,
    /// The shortest session STS AssumeRole grants (AWS: 900 s; tests shorten it to see a
    /// session expire).
    pub min_session_secs: i64,
    /// How long a task role's credentials are valid (ECS: about six hours). The agent asks
    /// for new ones when half of that has passed; tests shorten it to see a rotation.
    pub task_credentials_secs: i64,
    /// The pool awsvpc subnets get their ranges from, a /24 each (`--awsvpc-cidr`).
    pub awsvpc_cidr: String,
    /// `gantry dev`: DeleteCluster deregisters the cluster's local instances (those with
    /// `LOCAL_CAPACITY_ATTRIBUTE`). Off for `gantry server`, where the attribute means nothing.
    pub local_capacity: bool,
    /// The load balancer's data plane, when this process serves one: the ELBv2 API asks it
    /// whether a listener's port is free and how targets are doing. Without one, ELBv2
    /// resources are still created and described (target health is then `initial` or
    /// `unused`).
    pub load_balancer_data_plane: Option<LoadBalancerDataPlaneHandle>,
    /// The master keys that seal secret values and SecureStrings (`gantry-vault`): a key file
    /// beside the store, or `GANTRY_MASTER_KEY`. Without one, Secrets Manager and SecureString
    /// calls fail with a message that says so; nothing is ever stored in the clear.
    pub vault: Option<Arc<gantry_vault::Vault>>,
    /// Set when the store is shared by several replicas (etcd): this replica's identity and
    /// the store its lease and the leader election use (`replicas.rs`). `None`: the only
    /// replica, always leading.
    pub replication: Option<crate::state::replica::Replication>,
}

/// A shared [`LoadBalancerDataPlane`] in the plane's configuration (which is `Debug`).
#[derive(Clone)]
pub struct LoadBalancerDataPlaneHandle(pub Arc<dyn LoadBalancerDataPlane>);

impl std::fmt::Debug for LoadBalancerDataPlaneHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadBalancerDataPlane")
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            scope: ArnScope::default(),
            stopped_task_retention_secs: 3600,
            service_stability_window_secs: 5.0,
            lost_host_after_secs: 60.0,
            authenticate: true,
            secure_transport: false,
            min_session_secs: 900,
            task_credentials_secs: 6 * 3600,
            awsvpc_cidr: "10.213.0.0/16".into(),
            local_capacity: false,
            load_balancer_data_plane: None,
            vault: None,
            replication: None,
        }
    }
}

pub struct ControlPlane {
    pub config: ControlConfig,
    /// The store through the state layer: a write returns once the cache shows it.
    pub store: Arc<dyn KvStore>,
    /// The watch-fed, indexed copy of tasks, instances and services.
    pub cache: Arc<Cache>,
    pub logs: LogStore,
    /// Every API call, refused or not (`audit.rs`).
    pub audit: AuditLog,
    /// SigV4 signing keys derived today, by access key (`auth.rs`).
    pub(crate) signing_keys: crate::signing_keys::SigningKeys,
    /// Open agent channels by container instance ARN.
    pub(crate) connections: Mutex<HashMap<String, Arc<AgentConnection>>>,
    pub(crate) next_connection: std::sync::atomic::AtomicU64,
    /// How to wake the controllers; set once they run (`crate::controllers::start`).
    pub(crate) controllers: OnceLock<ControllerHandles>,
    /// Task definitions by ARN, as read once: a revision's definition never changes after
    /// registration (only its status does, which no reader of this memo looks at).
    definitions: Mutex<HashMap<String, Arc<TaskDefinition>>>,
    /// The load balancer's data plane (from `ControlConfig::load_balancer_data_plane`).
    load_balancer_data_plane: Option<Arc<dyn LoadBalancerDataPlane>>,
    /// Held by every ELBv2 write from its first read to its commit: the rules that span
    /// records (one listener per port, one rule per priority, no deleting a target group
    /// that is forwarded to) are checked and written without another ELBv2 write between.
    pub(crate) elbv2_writes: tokio::sync::Mutex<()>,
    /// Service tasks' targets, their health and the stops held while they drain.
    pub(crate) targets: crate::load_balancing::TargetRegistry,
    /// Held shared by every write that seals a secret value, from the seal to its commit; a
    /// master key rotation takes it exclusively once its new key is primary, so no value
    /// sealed under an old key can land after the rewrap pass (`master_keys.rs`).
    pub(crate) sealing: tokio::sync::RwLock<()>,
    /// One master key rotation at a time.
    pub(crate) rotation: tokio::sync::Mutex<()>,
    /// This replica, and whether it runs the deciding controllers (`replicas.rs`).
    pub replica: Arc<crate::state::replica::ReplicaState>,
    /// The state layer itself (`store` is it behind the trait), for `sync`.
    pub(crate) state: Arc<StateStore>,
    /// How this replica's logs are copied to and from the others (`state/log_copies.rs`, run by `log_replication.rs`);
    /// `None` for the only replica.
    pub log_replication: Option<Arc<crate::state::log_copies::LogReplication>>,
}

/// One open agent channel. The fan-out controller puts the instance's latest desired state in
/// `desired`; the channel's writer sends whatever is latest (older states it never got to are
/// superseded: the agent is level-triggered).
pub(crate) struct AgentConnection {
    /// Tells a newer connection of the same instance from a stale one that is closing.
    pub generation: u64,
    pub desired: tokio::sync::watch::Sender<Option<bytes::Bytes>>,
    /// (task ARN, desired status) of what was last put in `desired`.
    pub last_sent: Mutex<Option<Vec<(String, String)>>>,
    /// Ends the channel at once: the instance was deregistered (its agent is cut off), or
    /// this replica lost its session with the shared store (its agent goes elsewhere).
    pub cut_off: tokio::sync::Notify,
    /// The instance's store key.
    pub instance_key: String,
}

/// The work queues of the controllers that other parts of the plane wake directly, and each
/// controller's metrics.
pub(crate) struct ControllerHandles {
    pub channels: gantry_runtime::Handle<String>,
    pub services: gantry_runtime::Handle<(String, String)>,
    pub metrics: Vec<Box<dyn Fn() -> gantry_runtime::Metrics + Send + Sync>>,
}

impl ControlPlane {
    /// Opens the state layer over `backend` (loading the cache) and builds the plane.
    pub async fn open(
        config: ControlConfig,
        backend: Arc<dyn KvStore>,
        logs: LogStore,
        audit: AuditLog,
    ) -> Result<Self, gantry_store::StoreError> {
        let state = StateStore::open(backend, config.replication.is_some()).await?;
        let cache = state.cache.clone();
        let load_balancer_data_plane = config.load_balancer_data_plane.clone().map(|h| h.0);
        let replica = Arc::new(match &config.replication {
            Some(r) => crate::state::replica::ReplicaState::new(
                r.replica_id.clone(),
                r.address.clone(),
                crate::state::replica::Leadership::Following,
            ),
            None => crate::state::replica::ReplicaState::new(
                "local".into(),
                String::new(),
                crate::state::replica::Leadership::Sole,
            ),
        });
        let state = Arc::new(state);
        let log_replication = match &config.replication {
            Some(r) => {
                // Every change to this replica's logs is numbered for the others to copy.
                let origin = logs
                    .backend()
                    .journal_as(&r.replica_id)
                    .await
                    .map_err(|e| {
                        gantry_store::StoreError::Backend(format!("the log store: {e}"))
                    })?;
                Some(Arc::new(crate::state::log_copies::LogReplication::new(
                    r.replica_id.clone(),
                    origin,
                )))
            }
            None => None,
        };
        Ok(ControlPlane {
            config,
            store: state.clone(),
            state,
            cache,
            logs,
            audit,
            signing_keys: Default::default(),
            connections: Mutex::new(HashMap::new()),
            next_connection: std::sync::atomic::AtomicU64::new(1),
            controllers: OnceLock::new(),
            definitions: Mutex::new(HashMap::new()),
            load_balancer_data_plane,
            elbv2_writes: tokio::sync::Mutex::new(()),
            targets: Default::default(),
            sealing: tokio::sync::RwLock::new(()),
            rotation: tokio::sync::Mutex::new(()),
            replica,
            log_replication,
        })
    }

    /// The master keys, or the error every secret operation answers without them.
    pub fn vault(&self) -> EcsResult<&gantry_vault::Vault> {
        self.config.vault.as_deref().ok_or_else(|| {
            EcsError::server(
                "This Gantry has no master key, so it cannot keep secrets: start it with a data directory (the key file is created there) or set GANTRY_MASTER_KEY.",
            )
        })
    }

    /// The load balancer's data plane, when one is installed.
    pub fn load_balancer_data_plane(&self) -> Option<&Arc<dyn LoadBalancerDataPlane>> {
        self.load_balancer_data_plane.as_ref()
    }

    pub fn scope(&self) -> &ArnScope {
        &self.config.scope
    }

    /// The definition a task runs (by its full task definition ARN), read from the store
    /// once and then from memory: agent reports and channel messages need it on every event.
    pub(crate) async fn definition_by_arn(&self, arn: &str) -> EcsResult<Arc<TaskDefinition>> {
        if let Some(d) = self
            .definitions
            .lock()
            .ok()
            .and_then(|d| d.get(arn).cloned())
        {
            return Ok(d);
        }
        let (record, _) = crate::state::lookup::task_definition(&*self.store, arn).await?;
        let d = Arc::new(record.task_definition);
        if let Ok(mut defs) = self.definitions.lock() {
            defs.insert(arn.to_string(), d.clone());
        }
        Ok(d)
    }

    /// Runs `f` as the leader: fenced on the leadership when there are several replicas, and
    /// only once this replica's cache shows everything up to the moment it took the lead (so
    /// it decides on every write the previous leader made). `Ok(None)` when another replica
    /// leads.
    pub(crate) async fn as_leader<F: std::future::Future>(
        &self,
        f: F,
    ) -> Result<Option<F::Output>, String> {
        use crate::state::replica::Leadership;
        match self.replica.leadership() {
            Leadership::Sole => Ok(Some(f.await)),
            Leadership::Leading { token } => {
                if !self
                    .cache
                    .wait_for(token, std::time::Duration::from_secs(5))
                    .await
                {
                    return Err(format!(
                        "this replica's state cache has not caught up with its leadership (at {}, leading from {token})",
                        self.cache.applied()
                    ));
                }
                Ok(Some(crate::state::fence::scope(token, f).await))
            }
            Leadership::Following => Ok(None),
        }
    }

    /// Marks the instances of this replica's open channels connected through it again (after
    /// it registered anew: while it was away from the store, the leader may have counted its
    /// agents as gone).
    pub(crate) async fn reassert_connections(&self) {
        let open: Vec<(String, String)> = self
            .connections
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(arn, conn)| (arn.clone(), conn.instance_key.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let now = gantry_model::now_epoch();
        let me = self.replica.id.clone();
        for (arn, key) in open {
            let result = repo::update::<ContainerInstance, _>(&*self.store, &key, |ci| {
                let still_open = self
                    .connections
                    .lock()
                    .map(|c| c.contains_key(&arn))
                    .unwrap_or(false);
                if still_open && (!ci.agent_connected || ci.agent_replica.as_ref() != Some(&me)) {
                    set_agent_connected(ci, true, now);
                    ci.agent_replica = Some(me.clone());
                }
                Ok(())
            })
            .await;
            if let Err(e) = result {
                tracing::warn!(instance = %arn, "cannot mark the agent connected again: {e}");
            }
        }
    }

    /// Ends every agent channel open on this replica: it lost its session with the shared
    /// store, so its agents should go to a replica that has one.
    pub(crate) fn cut_off_all_channels(&self) {
        if let Ok(conns) = self.connections.lock() {
            for conn in conns.values() {
                conn.cut_off.notify_one();
            }
        }
    }

    /// After a restart no channel of this replica is open yet: every agent that was connected
    /// to it counts as disconnected until it dials back in (to this replica or another).
    /// Agents connected to other replicas are theirs to mark (or, when a replica dies, the
    /// leader's: [`ControlPlane::mark_orphaned_agents_disconnected`]).
    pub(crate) async fn mark_all_agents_disconnected(&self) {
        let Ok((kvs, _)) = self.store.range(repo::INSTANCES).await else {
            return;
        };
        let now = gantry_model::now_epoch();
        let me = self.replica.id.clone();
        let mine = |ci: &ContainerInstance| {
            ci.agent_connected && ci.agent_replica.as_deref().is_none_or(|r| r == me)
        };
        for kv in kvs {
            // Only records that change are written (each write is a quorum write on etcd).
            if !repo::decode::<ContainerInstance>(&kv).is_ok_and(|ci| mine(&ci)) {
                continue;
            }
            let _ = repo::update::<ContainerInstance, _>(&*self.store, &kv.key, |ci| {
                if mine(ci) {
                    set_agent_connected(ci, false, now);
                }
                Ok(())
            })
            .await;
        }
    }

    /// The leader's part when a replica dies: its agents' instances still say connected
    /// (through it); they count as disconnected from now, unless they have reconnected to a
    /// live replica in the meantime, so that the lost-host grace period starts.
    pub(crate) async fn mark_orphaned_agents_disconnected(&self) -> EcsResult<()> {
        if self.config.replication.is_none() {
            return Ok(()); // The only replica: its agents are its own.
        }
        let (replicas, _) = crate::state::replica::describe(&*self.store)
            .await
            .map_err(repo::store_error)?;
        let mut live: std::collections::HashSet<String> =
            replicas.into_iter().map(|r| r.replica_id).collect();
        live.insert(self.replica.id.clone());
        let orphaned: Vec<String> = self
            .cache
            .all_instances()
            .into_iter()
            .filter(|(_, i)| {
                i.value.agent_connected
                    && i.value
                        .agent_replica
                        .as_ref()
                        .is_some_and(|r| !live.contains(r))
            })
            .filter_map(|(cluster, i)| {
                let id =
                    gantry_model::arn::last_segment(i.value.container_instance_arn.as_deref()?);
                Some(crate::state::keys::instance_key(&cluster, id))
            })
            .collect();
        let now = gantry_model::now_epoch();
        for key in orphaned {
            repo::update::<ContainerInstance, _>(&*self.store, &key, |ci| {
                if ci.agent_replica.as_ref().is_some_and(|r| !live.contains(r)) {
                    tracing::info!(
                        instance = ?ci.container_instance_arn,
                        replica = ?ci.agent_replica,
                        "the replica this agent was connected to is gone: agent counts as disconnected"
                    );
                    set_agent_connected(ci, false, now);
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}
