//! This replica's side of copying logs between replicas (`crate::log_replication` runs it):
//! who the live peers are, how far each holds this replica's journal, and the secret their
//! requests are signed with. Below the plane, which holds one.

use axum::http::HeaderMap;
use gantry_auth::client::now;
use gantry_auth::sigv4::{constant_time_eq, hex_lower, hmac_sha256};
use gantry_logs::JournalPage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

pub const TIME_HEADER: &str = "x-gantry-replica-time";
pub const SIGNATURE_HEADER: &str = "x-gantry-replica-signature";
/// How far a signed request's time may be from the receiver's clock.
const MAX_SKEW_SECS: u64 = 300;

/// How long an agent's batch waits for a peer to hold it before the agent is told to send
/// it again (503): a puller's long poll returns at once when there is something new.
const COPY_WAIT: Duration = Duration::from_secs(3);

/// What a puller asks a peer for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalRequest {
    /// The replica asking (its acknowledgement is `after`, when `origin` is the peer's own).
    pub follower: String,
    pub origin: String,
    pub after: i64,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalResponse {
    pub page: JournalPage,
    /// The answering replica's position in every origin's journal.
    pub positions: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub address: String,
    pub tls_fingerprint: Option<String>,
    /// The origin its log changes carry (`None`: a version that does not copy logs).
    pub log_origin: Option<String>,
}

/// This replica's side of log replication (`ControlPlane::log_replication`).
pub struct LogReplication {
    /// This replica's id (what it names itself as when it asks a peer).
    pub me: String,
    /// The origin this replica's log changes carry (`LogBackend::journal_as`).
    pub origin: String,
    pub(crate) secret: OnceLock<Vec<u8>>,
    /// The live replicas other than this one, as last read from the store; `None` until
    /// first read (a batch is not answered before it is known who should copy it).
    peers: Mutex<Option<Vec<Peer>>>,
    /// Per follower, how far it holds this replica's journal.
    acks: Mutex<HashMap<String, i64>>,
    acked: Notify,
    /// Woken when this replica's journal grows by an agent's batch.
    pub(crate) written: Notify,
}

impl LogReplication {
    pub fn new(me: String, origin: String) -> LogReplication {
        LogReplication {
            me,
            origin,
            secret: OnceLock::new(),
            peers: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            acked: Notify::new(),
            written: Notify::new(),
        }
    }

    pub fn set_peers(&self, peers: Vec<Peer>) {
        if let Ok(mut p) = self.peers.lock() {
            *p = Some(peers);
        }
        self.acked.notify_waiters();
    }

    /// Waits until a live peer holds this replica's journal up to `seq`, or no other replica
    /// is live; `false` when [`COPY_WAIT`] passed first.
    pub async fn wait_for_copy(&self, seq: i64) -> bool {
        self.written.notify_waiters();
        let deadline = Instant::now() + COPY_WAIT;
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            if self.copied(seq) {
                return true;
            }
            if tokio::time::timeout_at(deadline, acked).await.is_err() {
                return self.copied(seq);
            }
        }
    }

    fn copied(&self, seq: i64) -> bool {
        let peers = match self.peers.lock().map(|p| p.clone()) {
            Ok(Some(p)) => p,
            _ => return false,
        };
        if !peers.iter().any(|p| p.log_origin.is_some()) {
            // No other replica that copies logs is live: nothing more to wait for.
            return true;
        }
        let Ok(acks) = self.acks.lock() else {
            return false;
        };
        peers
            .iter()
            .any(|p| acks.get(&p.id).is_some_and(|held| *held >= seq))
    }

    /// What `follower` says it holds of this replica's journal now (a follower whose store
    /// was lost holds less than before).
    pub fn acknowledge(&self, follower: &str, held: i64) {
        if let Ok(mut acks) = self.acks.lock() {
            acks.insert(follower.to_string(), held);
        }
        self.acked.notify_waiters();
    }

    /// Whether `origin` is the journal of a live replica (this one included).
    pub fn is_live(&self, origin: &str) -> bool {
        origin == self.origin
            || self.peers.lock().is_ok_and(|p| {
                p.iter()
                    .flatten()
                    .any(|peer| peer.log_origin.as_deref() == Some(origin))
            })
    }

    pub fn sign(&self, time: i64, body: &[u8]) -> Option<String> {
        let secret = self.secret.get()?;
        let mac = hmac_sha256(secret, &[time.to_string().as_bytes(), b"\n", body]);
        Some(hex_lower(&mac))
    }

    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let time: i64 = header(TIME_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or("no signature time")?;
        if time.abs_diff(now()) > MAX_SKEW_SECS {
            return Err("the signature time is too far from this replica's clock");
        }
        let given = header(SIGNATURE_HEADER).ok_or("no signature")?;
        let expected = self
            .sign(time, body)
            .ok_or("this replica has not read the replication secret yet")?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err("the signature does not match")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn replication_with_secret() -> LogReplication {
        let r = LogReplication::new("r-a".into(), "r-a.0001".into());
        let _ = r.secret.set(b"shared secret".to_vec());
        r
    }

    fn signed(r: &LogReplication, time: i64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TIME_HEADER, time.to_string().parse().expect("header"));
        headers.insert(
            SIGNATURE_HEADER,
            r.sign(time, body).expect("sign").parse().expect("header"),
        );
        headers
    }

    #[test]
    fn only_a_fresh_request_signed_with_the_secret_is_accepted() {
        let r = replication_with_secret();
        let body = br#"{"follower":"r-b","origin":"r-a","after":0}"#;
        assert!(r.verify(&signed(&r, now(), body), body).is_ok());
        assert!(r.verify(&signed(&r, now(), body), b"{}").is_err());
        assert!(r.verify(&signed(&r, now() - 305, body), body).is_err());
        assert!(r.verify(&signed(&r, i64::MIN, body), body).is_err());
        let other = LogReplication::new("r-b".into(), "r-b.0001".into());
        let _ = other.secret.set(b"another secret".to_vec());
        assert!(r.verify(&signed(&other, now(), body), body).is_err());
        let unsigned = LogReplication::new("r-c".into(), "r-c.0001".into());
        assert!(unsigned.verify(&signed(&r, now(), body), body).is_err());
    }

    #[tokio::test]
    async fn a_batch_is_answered_once_a_live_peer_holds_it() {
        let r = Arc::new(replication_with_secret());
        // Not yet known who the peers are: not copied.
        assert!(!r.copied(5));
        // Alone: nothing more to wait for.
        r.set_peers(Vec::new());
        assert!(r.wait_for_copy(5).await);
        r.set_peers(vec![Peer {
            id: "r-b".into(),
            address: "http://127.0.0.1:1".into(),
            tls_fingerprint: None,
            log_origin: Some("r-b.0002".into()),
        }]);
        // An acknowledgement from a replica that is not live does not count.
        r.acknowledge("r-gone", 9);
        assert!(!r.copied(5));
        r.acknowledge("r-b", 4);
        assert!(!r.copied(5), "held up to 4 only");
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.wait_for_copy(5).await }
        });
        r.acknowledge("r-b", 5);
        assert!(waiting.await.expect("join"));
        // Nobody acknowledges 6: the wait gives up.
        assert!(!r.wait_for_copy(6).await);
    }
}
