//! Control-plane replicas on one etcd store, and the one among them that runs the controllers.
//!
//! Every replica serves the whole API: the state is in etcd and each replica's cache follows
//! it. The controllers that decide (services, lost hosts, the janitor's sweep, task keys) run
//! on one replica only, the leader: the replica whose etcd lease holds
//! [`fence::LEADER_KEY`]. Each replica keeps a lease alive ([`EtcdSession`]) and registers
//! itself under [`fence::REPLICAS_PREFIX`] with it; when the leader dies its lease expires
//! (one TTL, 3 s by default), etcd deletes its keys, and the replicas watching the leader key
//! race to create it: one wins. A leader stops acting as soon as its session can no longer
//! be sure the lease lives (`EtcdSession::alive` turns false before etcd can expire it), and
//! its writes are fenced on the leader key's revision in any case (`state::fence`), so two
//! replicas never act as leader on the same state.
//!
//! Controllers that serve this replica's own connections (the agent channels, the load
//! balancer's data plane) run on every replica. With SQLite there is one replica, which
//! always leads ([`Leadership::Sole`]) and fences nothing.

use crate::plane::ControlPlane;
use crate::state::fence;
use gantry_model::{now_epoch, EcsResult};
use gantry_store::{EtcdSession, EtcdStore, KvStore, WatchEvent};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How long a replica's lease lives without keep-alives: the longest the controllers go
/// without a leader after the leader dies.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// How this replica takes part when the store is shared (`ControlConfig::replication`).
#[derive(Clone)]
pub struct Replication {
    pub store: Arc<EtcdStore>,
    /// Stable across restarts of the same replica (kept in its data directory).
    pub replica_id: String,
    /// Where clients and agents reach this replica's API.
    pub address: String,
    pub lease_ttl: Duration,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("replica_id", &self.replica_id)
            .field("address", &self.address)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// Whether this replica runs the deciding controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// The only replica (SQLite): always leads, nothing to fence.
    Sole,
    /// Leads; its writes are fenced on the leader key's revision `token`.
    Leading { token: i64 },
    /// Another replica leads (or none does yet).
    Following,
}

/// This replica: who it is and whether it leads.
pub struct ReplicaState {
    pub id: String,
    pub address: String,
    pub started_at: f64,
    leadership: watch::Sender<Leadership>,
}

impl ReplicaState {
    pub fn new(id: String, address: String, initial: Leadership) -> ReplicaState {
        ReplicaState {
            id,
            address,
            started_at: now_epoch(),
            leadership: watch::channel(initial).0,
        }
    }

    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    fn set(&self, leadership: Leadership) {
        self.leadership.send_if_modified(|l| {
            let changed = *l != leadership;
            *l = leadership;
            changed
        });
    }

    /// Runs `f` as the leader (fenced when there are several replicas); `None` when another
    /// replica leads.
    pub async fn as_leader<F: Future>(&self, f: F) -> Option<F::Output> {
        match self.leadership() {
            Leadership::Sole => Some(f.await),
            Leadership::Leading { token } => Some(fence::scope(token, f).await),
            Leadership::Following => None,
        }
    }
}

/// What a replica writes under its registration key (`GantryV1.DescribeReplicas` reads it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    pub replica_id: String,
    pub address: String,
    pub started_at: f64,
    pub version: String,
}

/// What the leader key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    pub replica_id: String,
    pub address: String,
    pub since: f64,
}

/// Registers this replica and takes part in the election until the plane is dropped; then
/// gives its lease back, so another replica leads at once.
pub async fn run(plane: Weak<ControlPlane>, replication: Replication) {
    let Some(state) = plane.upgrade().map(|p| p.replica.clone()) else {
        return;
    };
    let registration = serde_json::to_vec(&ReplicaRecord {
        replica_id: state.id.clone(),
        address: state.address.clone(),
        started_at: state.started_at,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
    .unwrap_or_default();
    let replica_key = format!("{}{}", fence::REPLICAS_PREFIX, state.id);
    loop {
        if plane.strong_count() == 0 {
            return;
        }
        let session = match EtcdSession::start(&replication.store, replication.lease_ttl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot open a session with etcd: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Err(e) = session.put(&replica_key, registration.clone()).await {
            tracing::warn!("cannot register this replica in etcd: {e}; trying again");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        tracing::info!(replica = %state.id, lease = session.lease_id(), "replica registered");
        let ended = campaign(&plane, &replication.store, &state, &session).await;
        state.set(Leadership::Following);
        if ended == Campaign::PlaneGone {
            let _ = session.revoke().await;
            return;
        }
        tracing::warn!(replica = %state.id, "this replica's etcd session ended; starting a new one");
    }
}

#[derive(PartialEq, Eq)]
enum Campaign {
    SessionLost,
    PlaneGone,
}

/// Tries to lead while `session` lives: leads until the session is lost, or waits for the
/// leader key to go and tries again.
async fn campaign(
    plane: &Weak<ControlPlane>,
    store: &Arc<EtcdStore>,
    state: &Arc<ReplicaState>,
    session: &EtcdSession,
) -> Campaign {
    let mut plane_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        if plane.strong_count() == 0 {
            return Campaign::PlaneGone;
        }
        if !session.alive() {
            return Campaign::SessionLost;
        }
        let record = serde_json::to_vec(&LeaderRecord {
            replica_id: state.id.clone(),
            address: state.address.clone(),
            since: now_epoch(),
        })
        .unwrap_or_default();
        match session.create(fence::LEADER_KEY, record).await {
            Ok(Some(token)) => {
                tracing::info!(replica = %state.id, token, "this replica now leads the controllers");
                state.set(Leadership::Leading { token });
                loop {
                    tokio::select! {
                        _ = session.lost() => {
                            state.set(Leadership::Following);
                            tracing::warn!(replica = %state.id, "lost the lease: no longer leading the controllers");
                            return Campaign::SessionLost;
                        }
                        _ = plane_check.tick() => {
                            if plane.strong_count() == 0 {
                                state.set(Leadership::Following);
                                let _ = session.delete_if(fence::LEADER_KEY, token).await;
                                return Campaign::PlaneGone;
                            }
                        }
                    }
                }
            }
            Ok(None) => {
                state.set(Leadership::Following);
                // Wait for the leader key to go (its holder's lease expired or was revoked).
                let current = match store.get(fence::LEADER_KEY).await {
                    Ok(kv) => kv,
                    Err(e) => {
                        tracing::warn!("cannot read the leader key: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let Some(current) = current else { continue };
                let mut watcher = match store
                    .watch(fence::LEADER_KEY, Some(current.mod_revision))
                    .await
                {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!("cannot watch the leader key: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                loop {
                    tokio::select! {
                        event = watcher.recv() => match event {
                            Some(WatchEvent::Delete { .. }) | None => break,
                            Some(WatchEvent::Put(_)) => {}
                        },
                        _ = session.lost() => return Campaign::SessionLost,
                        _ = plane_check.tick() => {
                            if plane.strong_count() == 0 {
                                return Campaign::PlaneGone;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("cannot campaign for the leadership: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The live replicas and the leader, as the store holds them.
pub async fn describe(
    store: &dyn KvStore,
) -> gantry_store::StoreResult<(Vec<ReplicaRecord>, Option<LeaderRecord>)> {
    let (kvs, _) = store.range(fence::REPLICAS_PREFIX).await?;
    let replicas = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    let leader = store
        .get(fence::LEADER_KEY)
        .await?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok());
    Ok((replicas, leader))
}

/// `GantryV1.DescribeReplicas` (`gantry status`): the replicas, which one leads, and which
/// one answered.
pub async fn describe_replicas(plane: &ControlPlane) -> EcsResult<serde_json::Value> {
    use serde_json::json;
    let me = &plane.replica;
    let leadership = match me.leadership() {
        Leadership::Sole => "SOLE",
        Leadership::Leading { .. } => "LEADER",
        Leadership::Following => "FOLLOWER",
    };
    let served_by = json!({
        "replicaId": me.id,
        "address": me.address,
        "startedAt": me.started_at,
        "leadership": leadership,
    });
    if plane.config.replication.is_none() {
        return Ok(json!({
            "store": "sqlite",
            "servedBy": served_by,
            "leader": {"replicaId": me.id, "address": me.address, "since": me.started_at},
            "replicas": [{
                "replicaId": me.id,
                "address": me.address,
                "startedAt": me.started_at,
                "version": env!("CARGO_PKG_VERSION"),
                "leader": true,
            }],
        }));
    }
    let (replicas, leader) = describe(&*plane.store)
        .await
        .map_err(crate::state::repo::store_error)?;
    let leader_id = leader.as_ref().map(|l| l.replica_id.clone());
    let replicas: Vec<serde_json::Value> = replicas
        .into_iter()
        .map(|r| {
            json!({
                "replicaId": r.replica_id,
                "address": r.address,
                "startedAt": r.started_at,
                "version": r.version,
                "leader": leader_id.as_deref() == Some(r.replica_id.as_str()),
            })
        })
        .collect();
    Ok(json!({
        "store": "etcd",
        "servedBy": served_by,
        "leader": leader,
        "replicas": replicas,
    }))
}
