//! What a control-plane replica is (its identity, its leadership) and how replicas are
//! recorded in the shared store; the election itself is `crate::replicas`.

use super::fence;
use gantry_model::now_epoch;
use gantry_store::{EtcdStore, KvStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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
    /// The SHA-256 fingerprint of the certificate this replica serves, when it serves TLS:
    /// registered, so the other replicas pin it when they copy its logs.
    pub tls_fingerprint: Option<String>,
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

    pub(crate) fn set(&self, leadership: Leadership) {
        self.leadership.send_if_modified(|l| {
            let changed = *l != leadership;
            *l = leadership;
            changed
        });
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
    /// The origin its log changes carry, for the other replicas to copy
    /// (`crate::log_replication`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_origin: Option<String>,
}

/// What the leader key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    pub replica_id: String,
    pub address: String,
    pub since: f64,
}

/// The live replicas and the leader, as the store holds them.
pub async fn describe(
    store: &dyn KvStore,
) -> gantry_store::StoreResult<(Vec<ReplicaRecord>, Option<LeaderRecord>)> {
    let (kvs, _) = store.range(fence::REPLICAS_PREFIX).await?;
    // The id is the key's (a registration this version cannot read is still a live replica).
    let replicas = kvs
        .iter()
        .map(|kv| {
            let id = kv.key[fence::REPLICAS_PREFIX.len()..].to_string();
            serde_json::from_slice::<ReplicaRecord>(&kv.value)
                .map(|r| ReplicaRecord {
                    replica_id: id.clone(),
                    ..r
                })
                .unwrap_or(ReplicaRecord {
                    replica_id: id,
                    address: String::new(),
                    started_at: 0.0,
                    version: "unknown".into(),
                    tls_fingerprint: None,
                    log_origin: None,
                })
        })
        .collect();
    let leader = store
        .get(fence::LEADER_KEY)
        .await?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok());
    Ok((replicas, leader))
}
