//! Logs with several replicas: every replica keeps a whole copy in its own `logs.db` and
//! answers reads from it; the copies are kept by *pulling* each other's journals (see
//! `gantry-logs`, "Several control-plane replicas").
//!
//! - Each replica runs one puller per live peer (the registrations under
//!   `control-plane/replicas/`): it asks the peer for the peer's own journal past what it
//!   holds, long-polling when there is nothing new, and applies what comes back. A request
//!   names how far the puller holds the peer's journal, which is its acknowledgement.
//! - An agent's log batch is answered only once a live peer has acknowledged it (or no other
//!   replica is live), so losing the replica it was shipped to loses no acknowledged line.
//!   The agent's batch id makes a batch it sends again (to this replica or, after a
//!   failover, to another) count once.
//! - Each answer also gives the peer's position in every origin's journal: a puller copies
//!   from a live peer what it lacks of a replica that is gone. A replica that was away, or
//!   is new, catches up this way when it registers.
//! - Requests between replicas are signed (HMAC-SHA256) with a secret kept in the store,
//!   made by the first replica; over TLS, each replica pins the certificate fingerprint its
//!   peer registered.

use crate::plane::ControlPlane;
use crate::state::log_copies::{
    JournalRequest, JournalResponse, LogReplication, Peer, SIGNATURE_HEADER, TIME_HEADER,
};
use crate::state::replica::{self, ReplicaRecord};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_store::{KvStore, Txn, TxnOp};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Where a replica serves its journal to the others.
pub const JOURNAL_PATH: &str = "/replica/v1/log-journal";

/// The store key of the secret replicas sign their requests to each other with.
pub const SECRET_KEY: &str = "control-plane/log-replication-secret";

/// How long a pull waits for news before answering with none.
const LONG_POLL: Duration = Duration::from_secs(5);
/// How often a waiting pull looks at the journal besides being woken by an agent's batch
/// (changes made through the API do not wake it).
const POLL_TICK: Duration = Duration::from_millis(250);
const PAGE_ENTRIES: usize = 2000;
const REFRESH_PEERS: Duration = Duration::from_secs(1);

/// `POST /replica/v1/log-journal`: a page of one origin's journal, for another replica.
pub async fn journal(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let Some(replication) = plane.log_replication.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    if let Err(why) = replication.verify(&parts.headers, &body) {
        tracing::warn!("refused a log journal request: {why}");
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let request: JournalRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let own = request.origin == replication.origin;
    if own {
        replication.acknowledge(&request.follower, request.after);
    }
    let backend = plane.logs.backend().clone();
    let deadline = Instant::now() + Duration::from_millis(request.wait_ms).min(LONG_POLL);
    let page = loop {
        let written = replication.written.notified();
        tokio::pin!(written);
        written.as_mut().enable();
        let page = match backend
            .journal(&request.origin, request.after, PAGE_ENTRIES)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot read the log journal: {e}");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        };
        if !page.entries.is_empty() || !own || Instant::now() >= deadline {
            break page;
        }
        let tick = (Instant::now() + POLL_TICK).min(deadline);
        let _ = tokio::time::timeout_at(tick, written).await;
    };
    let positions = match backend.journal_positions().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot read the log journal: {e}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    axum::Json(JournalResponse { page, positions }).into_response()
}

/// Keeps this replica's logs a copy of every other's until the plane is dropped: reads the
/// shared secret, then runs a puller per live peer.
pub async fn run(plane: Weak<ControlPlane>, store: Arc<dyn KvStore>) {
    let Some(replication) = plane.upgrade().and_then(|p| p.log_replication.clone()) else {
        return;
    };
    loop {
        if plane.strong_count() == 0 {
            return;
        }
        match load_or_make_secret(&*store).await {
            Ok(secret) => {
                let _ = replication.secret.set(secret);
                break;
            }
            Err(e) => {
                tracing::warn!("cannot read the log replication secret: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let mut pullers: HashMap<String, (Peer, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut refresh = tokio::time::interval(REFRESH_PEERS);
    loop {
        refresh.tick().await;
        if plane.strong_count() == 0 {
            break;
        }
        let records = match replica::describe(&*store).await {
            Ok((records, _)) => records,
            // Unknown for now: keep the peers and pullers as they are.
            Err(_) => continue,
        };
        let peers: Vec<Peer> = records
            .into_iter()
            .filter(|r| r.replica_id != replication.me && !r.address.is_empty())
            .map(|r: ReplicaRecord| Peer {
                id: r.replica_id,
                address: r.address,
                tls_fingerprint: r.tls_fingerprint,
                log_origin: r.log_origin,
            })
            .collect();
        replication.set_peers(peers.clone());
        pullers.retain(|id, (peer, handle)| {
            let keep = peers.contains(peer) && !handle.is_finished();
            if !keep {
                tracing::info!(peer = %id, "stopped copying logs from a replica that is gone");
                handle.abort();
            }
            keep
        });
        for peer in peers.into_iter().filter(|p| p.log_origin.is_some()) {
            if !pullers.contains_key(&peer.id) {
                let handle = tokio::spawn(pull(plane.clone(), replication.clone(), peer.clone()));
                pullers.insert(peer.id.clone(), (peer, handle));
            }
        }
    }
    for (_, (_, handle)) in pullers {
        handle.abort();
    }
}

async fn load_or_make_secret(store: &dyn KvStore) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let decode = |value: &[u8]| {
        engine
            .decode(value)
            .map_err(|e| format!("the stored secret is not base64: {e}"))
    };
    if let Some(kv) = store.get(SECRET_KEY).await.map_err(|e| e.to_string())? {
        return decode(&kv.value);
    }
    let fresh: [u8; 32] = rand::random();
    // Made once, by whichever replica gets there first.
    store
        .txn(Txn {
            compare: vec![crate::state::repo::unchanged_since(SECRET_KEY, 0)],
            success: vec![TxnOp::Put {
                key: SECRET_KEY.into(),
                value: engine.encode(fresh).into_bytes(),
            }],
            failure: vec![],
        })
        .await
        .map_err(|e| e.to_string())?;
    match store.get(SECRET_KEY).await.map_err(|e| e.to_string())? {
        Some(kv) => decode(&kv.value),
        None => Err("the secret was written but cannot be read".into()),
    }
}

/// Copies `peer`'s journal, and what it holds of replicas that are gone, until aborted.
async fn pull(plane: Weak<ControlPlane>, replication: Arc<LogReplication>, peer: Peer) {
    let Some(origin) = peer.log_origin.clone() else {
        return;
    };
    let client = match client_for(&peer) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(peer = %peer.id, "cannot copy logs from this replica: {e}");
            return;
        }
    };
    let url = format!("{}{JOURNAL_PATH}", peer.address.trim_end_matches('/'));
    // Copies of gone replicas' journals run beside the peer's own, so that the peer's
    // acknowledgements (and its agents' answers) never wait for them; ended with this pull.
    let mut catch_up: Option<AbortOnDrop> = None;
    loop {
        let Some(backend) = plane.upgrade().map(|p| p.logs.backend().clone()) else {
            return;
        };
        let result = async {
            let held = backend
                .journal_positions()
                .await
                .map_err(|e| e.to_string())?;
            let after = held.get(&origin).copied().unwrap_or(0);
            let answer = fetch(&client, &url, &replication, &origin, after, LONG_POLL).await?;
            let idle = answer.page.entries.is_empty() && answer.page.read_to <= after;
            backend
                .apply_journal(&origin, answer.page)
                .await
                .map_err(|e| e.to_string())?;
            let behind: Vec<(String, i64)> = answer
                .positions
                .into_iter()
                .filter(|(o, position)| {
                    !replication.is_live(o) && held.get(o).copied().unwrap_or(0) < *position
                })
                .collect();
            if !behind.is_empty() && catch_up.as_ref().is_none_or(|h| h.0.is_finished()) {
                let (client, url, replication) = (client.clone(), url.clone(), replication.clone());
                let backend = backend.clone();
                catch_up = Some(AbortOnDrop(tokio::spawn(async move {
                    for (gone, position) in behind {
                        if let Err(e) =
                            copy_gone(&client, &url, &replication, &*backend, &gone, position).await
                        {
                            tracing::debug!(origin = %gone, "copying a gone replica's logs: {e}");
                        }
                    }
                })));
            }
            if idle {
                // Nothing new (a long poll that timed out, or a peer whose registration names
                // an origin it no longer has, which answers at once): do not spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(peer = %peer.id, "copying logs: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies from a live peer (at `url`) what it holds of `origin`, a replica that is gone, up
/// to `position`.
async fn copy_gone(
    client: &reqwest::Client,
    url: &str,
    replication: &LogReplication,
    backend: &dyn gantry_logs::LogBackend,
    origin: &str,
    position: i64,
) -> Result<(), String> {
    let mut after = 0;
    loop {
        // What is held may have grown meanwhile (another puller copies the same journal).
        let held = backend
            .journal_positions()
            .await
            .map_err(|e| e.to_string())?;
        after = after.max(held.get(origin).copied().unwrap_or(0));
        if after >= position {
            return Ok(());
        }
        let answer = fetch(client, url, replication, origin, after, Duration::ZERO).await?;
        let read_to = answer.page.read_to;
        backend
            .apply_journal(origin, answer.page)
            .await
            .map_err(|e| e.to_string())?;
        if read_to <= after {
            return Ok(());
        }
        after = read_to;
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    replication: &LogReplication,
    origin: &str,
    after: i64,
    wait: Duration,
) -> Result<JournalResponse, String> {
    let body = serde_json::to_vec(&JournalRequest {
        follower: replication.me.clone(),
        origin: origin.to_string(),
        after,
        wait_ms: wait.as_millis() as u64,
    })
    .map_err(|e| e.to_string())?;
    let time = gantry_auth::client::now();
    let signature = replication
        .sign(time, &body)
        .ok_or("no replication secret yet")?;
    let response = client
        .post(url)
        .header(TIME_HEADER, time.to_string())
        .header(SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

fn client_for(peer: &Peer) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(LONG_POLL + Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3));
    if let Some(fingerprint) = &peer.tls_fingerprint {
        let pin = gantry_auth::pinning::normalise_fingerprint(fingerprint)
            .ok_or_else(|| format!("'{fingerprint}' is not a SHA-256 fingerprint"))?;
        builder = builder.use_preconfigured_tls(gantry_auth::pinning::client_config(vec![pin])?);
    }
    builder.build().map_err(|e| e.to_string())
}
