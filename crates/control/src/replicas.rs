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
pub use crate::state::replica::{
    describe, LeaderRecord, Leadership, ReplicaRecord, ReplicaState, Replication, DEFAULT_LEASE_TTL,
};
use gantry_model::{now_epoch, EcsResult};
use gantry_store::{EtcdSession, EtcdStore, KvStore, WatchEvent};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Registers this replica and takes part in the election until the plane is dropped; then
/// gives its lease back, so another replica leads at once.
pub async fn run(plane: Weak<ControlPlane>, replication: Replication) {
    let Some((state, log_origin)) = plane.upgrade().map(|p| {
        (
            p.replica.clone(),
            p.log_replication.as_ref().map(|r| r.origin.clone()),
        )
    }) else {
        return;
    };
    let registration = serde_json::to_vec(&ReplicaRecord {
        replica_id: state.id.clone(),
        address: state.address.clone(),
        started_at: state.started_at,
        version: env!("CARGO_PKG_VERSION").to_string(),
        tls_fingerprint: replication.tls_fingerprint.clone(),
        log_origin,
    })
    .unwrap_or_default();
    let replica_key = format!("{}{}", fence::REPLICAS_PREFIX, state.id);
    // Whether this replica's agent channels were closed in the current outage.
    let mut channels_cut = false;
    let cut_off = |plane: &Weak<ControlPlane>, channels_cut: &mut bool| {
        // Cut off from the store for longer than a session takes to open: its agents go to
        // a replica that has one (their reconnect here is refused with 503 meanwhile).
        if !*channels_cut {
            if let Some(p) = plane.upgrade() {
                tracing::warn!(replica = %state.id, "cannot reach etcd: closing this replica's agent channels so that the agents move to another replica");
                p.cut_off_all_channels();
            }
            *channels_cut = true;
        }
    };
    loop {
        if plane.strong_count() == 0 {
            return;
        }
        let session = match EtcdSession::start(&replication.store, replication.lease_ttl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot open a session with etcd: {e}; trying again");
                cut_off(&plane, &mut channels_cut);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Err(e) = session.put(&replica_key, registration.clone()).await {
            tracing::warn!("cannot register this replica in etcd: {e}; trying again");
            cut_off(&plane, &mut channels_cut);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        channels_cut = false;
        tracing::info!(replica = %state.id, lease = session.lease_id(), "replica registered");
        // While this replica had no session, the leader may have counted its agents as gone.
        if let Some(p) = plane.upgrade() {
            p.reassert_connections().await;
        }
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

/// Tries to lead while `session` lives: leads until the session is lost or the leader key
/// stops being the one it wrote, or waits for the leader key to go and tries again.
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
        let won = match session.create(fence::LEADER_KEY, record).await {
            Ok(Some(token)) => Some(token),
            // Someone holds it, perhaps this session itself (a create whose answer was lost).
            Ok(None) => match session.held_here(fence::LEADER_KEY).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!("cannot read the leader key: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!("cannot campaign for the leadership: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Watch the leader key from the revision it was read at: a leader steps down when
        // its key goes or is replaced; a follower campaigns again when it goes.
        let (kvs, read_at) = match store.range(fence::LEADER_KEY).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the leader key: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let current = kvs.into_iter().find(|kv| kv.key == fence::LEADER_KEY);
        let mut watcher = match store.watch(fence::LEADER_KEY, Some(read_at)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the leader key: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let token = match (won, current) {
            (Some(token), Some(kv)) if kv.mod_revision == token => {
                tracing::info!(replica = %state.id, token, "this replica now leads the controllers");
                state.set(Leadership::Leading { token });
                Some(token)
            }
            (_, None) => continue, // Gone already: campaign again.
            _ => {
                state.set(Leadership::Following);
                None
            }
        };
        loop {
            tokio::select! {
                event = watcher.recv() => match event {
                    Some(WatchEvent::Put(kv)) if kv.key == fence::LEADER_KEY
                        && token.is_some_and(|t| kv.mod_revision != t) => break,
                    Some(WatchEvent::Delete { ref key, .. }) if key == fence::LEADER_KEY => break,
                    Some(_) => {}
                    None => break,
                },
                _ = session.lost() => {
                    if token.is_some() {
                        tracing::warn!(replica = %state.id, "lost the lease: no longer leading the controllers");
                    }
                    state.set(Leadership::Following);
                    return Campaign::SessionLost;
                }
                _ = plane_check.tick() => {
                    if plane.strong_count() == 0 {
                        state.set(Leadership::Following);
                        if let Some(t) = token {
                            let _ = session.delete_if(fence::LEADER_KEY, t).await;
                        }
                        return Campaign::PlaneGone;
                    }
                }
            }
        }
        if token.is_some() {
            tracing::warn!(replica = %state.id, "the leader key changed under this replica: no longer leading");
        }
        state.set(Leadership::Following);
    }
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
    let (replicas, leader) = match describe(&*plane.store).await {
        Ok(r) => r,
        // etcd cannot be read (no quorum, or cut off): say what this replica knows.
        Err(e) => {
            return Ok(json!({
                "store": "etcd",
                "servedBy": served_by,
                "leader": null,
                "replicas": [],
                "storeError": e.to_string(),
            }))
        }
    };
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
