//! A replica's presence in etcd: a lease kept alive while the process lives, and keys bound to
//! it that etcd deletes when the lease expires (a replica that dies, or is cut off from etcd,
//! disappears from the store within one TTL).
//!
//! [`EtcdSession::alive`] is conservative: it counts the TTL from when the last answered
//! keep-alive was *sent*, so it turns false before etcd can have expired the lease. A leader
//! that stops acting when it turns false has stopped before another replica can be elected.

use std::time::Duration;

use etcd_client::{Compare as EtcdCompare, CompareOp, PutOptions, Txn as EtcdTxn, TxnOp};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::etcd::{call, Retry};
use crate::{EtcdStore, StoreError, StoreResult};

/// How long before the lease's conservative end [`EtcdSession::alive`] turns false.
const SAFETY_MARGIN: Duration = Duration::from_millis(500);

/// A lease and its keep-alive loop. Dropping it stops the keep-alives (the lease then expires
/// after its TTL); [`EtcdSession::revoke`] ends it at once.
pub struct EtcdSession {
    client: etcd_client::Client,
    namespace: String,
    timeout: Duration,
    lease: i64,
    ttl: Duration,
    alive: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EtcdSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSession")
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdSession {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl EtcdSession {
    /// Grants a lease of `ttl` (whole seconds, at least etcd's minimum) and keeps it alive.
    pub async fn start(store: &EtcdStore, ttl: Duration) -> StoreResult<EtcdSession> {
        let ttl_secs = ttl.as_secs().max(2) as i64;
        let client = store.client().clone();
        let sent = Instant::now();
        let granted = call(store.timeout(), Retry::Write, || {
            let mut leases = client.lease_client();
            async move { leases.grant(ttl_secs, None).await }
        })
        .await?;
        let lease = granted.id();
        let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
        let (alive_tx, alive) = watch::channel(true);
        let keeper = tokio::spawn(keep_alive(client.clone(), lease, ttl, sent + ttl, alive_tx));
        Ok(EtcdSession {
            client,
            namespace: store.namespace().to_string(),
            timeout: store.timeout(),
            lease,
            ttl,
            alive,
            keeper,
        })
    }

    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the lease certainly still exists (see the module docs).
    pub fn alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves once the session is lost (at once if it is already).
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        let _ = alive.wait_for(|a| !*a).await;
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut k = self.namespace.as_bytes().to_vec();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Writes `key` bound to the lease; returns the revision of the write.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<i64> {
        let (client, key, lease) = (self.client.clone(), self.full_key(key), self.lease);
        let response = call(self.timeout, Retry::Write, || {
            let mut kv = client.kv_client();
            let (key, value) = (key.clone(), value.clone());
            async move {
                kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        revision_of(response.header())
    }

    /// Creates `key` bound to the lease unless it exists: `Some(revision)` of the write when
    /// this call created it, `None` when someone holds it.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<Option<i64>> {
        let (client, key, lease) = (self.client.clone(), self.full_key(key), self.lease);
        let txn = EtcdTxn::new()
            .when(vec![EtcdCompare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = call(self.timeout, Retry::Write, || {
            let mut kv = client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        if !response.succeeded() {
            return Ok(None);
        }
        revision_of(response.header()).map(Some)
    }

    /// `Some(mod revision)` when `key` exists bound to this session's lease: a create whose
    /// answer was lost (a timeout after etcd applied it) still made this session its holder.
    pub async fn held_here(&self, key: &str) -> StoreResult<Option<i64>> {
        let (client, key, lease) = (self.client.clone(), self.full_key(key), self.lease);
        let response = call(self.timeout, Retry::Read, || {
            let mut kv = client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        Ok(response
            .kvs()
            .first()
            .filter(|kv| kv.lease() == lease)
            .map(|kv| kv.mod_revision()))
    }

    /// Deletes `key` if its last write was at `revision` (giving up what this session holds).
    pub async fn delete_if(&self, key: &str, revision: i64) -> StoreResult<bool> {
        let (client, key) = (self.client.clone(), self.full_key(key));
        let txn = EtcdTxn::new()
            .when(vec![EtcdCompare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then(vec![TxnOp::delete(key, None)]);
        let response = call(self.timeout, Retry::Write, || {
            let mut kv = client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        Ok(response.succeeded())
    }

    /// Ends the lease now: every key bound to it is deleted at once (a clean shutdown hands
    /// leadership over without waiting for the TTL).
    pub async fn revoke(&self) -> StoreResult<()> {
        self.keeper.abort();
        let (client, lease) = (self.client.clone(), self.lease);
        call(self.timeout, Retry::Write, || {
            let mut leases = client.lease_client();
            async move { leases.revoke(lease).await }
        })
        .await?;
        Ok(())
    }
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> StoreResult<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd answered without a revision".into()))
}

/// Sends a keep-alive every third of the TTL and tracks how long the lease certainly lives:
/// until the send time of the last answered keep-alive plus the TTL. Once that end is near
/// without an answer, the session is lost for good (never trusted again, even if a late
/// keep-alive would still be answered).
async fn keep_alive(
    client: etcd_client::Client,
    lease: i64,
    ttl: Duration,
    mut valid_until: Instant,
    alive: watch::Sender<bool>,
) {
    let every = ttl / 3;
    let mut stream = None;
    loop {
        let deadline = valid_until
            .checked_sub(SAFETY_MARGIN)
            .unwrap_or(valid_until);
        let sent = Instant::now();
        if sent >= deadline {
            tracing::warn!(
                lease,
                "the etcd lease may have expired: this session is over"
            );
            alive.send_replace(false);
            return;
        }
        match tokio::time::timeout_at(deadline, renew(&client, lease, ttl, &mut stream)).await {
            Ok(Ok(Some(granted))) => valid_until = sent + granted,
            Ok(Ok(None)) => {
                tracing::warn!(lease, "the etcd lease has expired: this session is over");
                alive.send_replace(false);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease, "etcd lease keep-alive failed: {e}");
                stream = None;
                let retry = (sent + Duration::from_millis(200)).min(deadline);
                tokio::time::sleep_until(retry).await;
                continue;
            }
            Err(_) => continue, // The deadline: the check above ends the session.
        }
        tokio::time::sleep_until(sent + every).await;
    }
}

type KeepAlive = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// One keep-alive round trip: the lease's new TTL, or `None` when etcd no longer has it.
/// Opening the stream is itself a keep-alive (etcd-client reads its answer).
async fn renew(
    client: &etcd_client::Client,
    lease: i64,
    ttl: Duration,
    stream: &mut Option<KeepAlive>,
) -> Result<Option<Duration>, etcd_client::Error> {
    let Some((keeper, responses)) = stream.as_mut() else {
        return match client.lease_client().keep_alive(lease).await {
            Ok(pair) => {
                *stream = Some(pair);
                Ok(Some(ttl))
            }
            Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => Ok(None),
            Err(e) => Err(e),
        };
    };
    keeper.keep_alive().await?;
    match responses.message().await? {
        Some(r) if r.ttl() > 0 => Ok(Some(Duration::from_secs(r.ttl() as u64))),
        Some(_) => Ok(None),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "the keep-alive stream ended".into(),
        )),
    }
}
