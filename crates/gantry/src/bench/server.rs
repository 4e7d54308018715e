//! An in-process control plane on a loopback port, built the way `gantry server` builds it
//! (`SqliteStore::open`, `LogStore::open`, `ControlPlane::open`, `gantry_control::serve`), over
//! a temporary directory or an in-memory store, or as one replica on an etcd cluster
//! (`gantry server --store etcd://...`).

use gantry_agent::api_client::EcsClient;
use gantry_control::logs::LogStore;
use gantry_control::{ControlConfig, ControlPlane};
use gantry_store::{EtcdStore, KvStore, SqliteStore};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the control plane keeps its state during a benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A SQLite file in a temporary directory, fsynced on every write: what `gantry server`
    /// runs with.
    File,
    /// SQLite in memory: no fsync, to see what the rest of the path costs.
    Memory,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Memory => "memory",
        }
    }
}

pub const CLUSTER: &str = "bench";
pub const FAMILY: &str = "bench";

pub struct Server {
    pub endpoint: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

/// The store and log store of a control plane: `dir/state.db` and `dir/logs.db`, or in
/// memory when `dir` is `None`.
pub fn open_stores(dir: Option<&Path>) -> Result<(SqliteStore, LogStore), String> {
    Ok(match dir {
        Some(dir) => (
            SqliteStore::open(&dir.join("state.db")).map_err(|e| format!("store: {e}"))?,
            LogStore::open(&dir.join("logs.db")).map_err(|e| format!("log store: {e}"))?,
        ),
        None => (
            SqliteStore::open_in_memory().map_err(|e| format!("store: {e}"))?,
            LogStore::open_in_memory().map_err(|e| format!("log store: {e}"))?,
        ),
    })
}

/// Loads a control plane over `store` (its state cache is filled from it), without serving
/// it yet.
/// Authentication is on, as in production; `GANTRY_BENCH_AUTH=off` turns the server's checks
/// off (clients still sign, every call is still audited) to see what they cost at fleet scale.
pub async fn plane_on(store: SqliteStore, logs: LogStore) -> Result<Arc<ControlPlane>, String> {
    plane_with(store, logs, authenticate_from_env()).await
}

fn authenticate_from_env() -> bool {
    std::env::var("GANTRY_BENCH_AUTH").map_or(true, |v| v != "off")
}

/// A control plane on etcd, as one replica of `gantry server --store etcd://...`: once served
/// it registers with a lease and campaigns for the leadership ([`wait_leading`]), and
/// its controllers' writes are fenced on the leader key, as in production.
pub async fn plane_on_etcd(
    store: Arc<EtcdStore>,
    logs: LogStore,
) -> Result<Arc<ControlPlane>, String> {
    let replication = gantry_control::replicas::Replication {
        store: store.clone(),
        replica_id: "bench".into(),
        address: "in-process (gantry bench)".into(),
        tls_fingerprint: None,
        lease_ttl: gantry_control::replicas::DEFAULT_LEASE_TTL,
    };
    open_control_plane(store, logs, authenticate_from_env(), Some(replication)).await
}

/// A client of `plane` at `endpoint` signing as its administrator (a new access key), and the
/// agents' join token: the benchmarks sign every request, as every client must.
pub async fn admin_client(
    plane: &ControlPlane,
    endpoint: &str,
) -> Result<(EcsClient, String), String> {
    let (id, secret) = gantry_control::bootstrap::new_admin_key(plane)
        .await
        .map_err(|e| format!("administrator key: {e}"))?;
    let token = gantry_control::bootstrap::ensure_join_token(plane, None)
        .await
        .map_err(|e| format!("join token: {e}"))?;
    let client = EcsClient::new(endpoint).map_err(|e| e.to_string())?;
    client.set_auth(gantry_agent::api_client::AgentAuth {
        join_token: None,
        credentials: Some(gantry_agent::config::SavedCredentials {
            access_key_id: id,
            secret_access_key: secret,
            region: plane.scope().region.clone(),
        }),
    });
    Ok((client, token))
}

/// A client holding credentials issued to the already registered instance `instance_arn`
/// (instances a benchmark wrote straight into the store).
pub async fn agent_client(
    plane: &ControlPlane,
    endpoint: &str,
    instance_arn: &str,
) -> Result<EcsClient, String> {
    let cluster_arn = plane.scope().cluster(CLUSTER);
    let creds =
        gantry_control::bootstrap::issue_agent_credentials(plane, &cluster_arn, instance_arn)
            .await
            .map_err(|e| format!("agent credentials: {e}"))?;
    let client = EcsClient::new(endpoint).map_err(|e| e.to_string())?;
    client.set_auth(gantry_agent::api_client::AgentAuth {
        join_token: None,
        credentials: Some(gantry_agent::config::SavedCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            region: plane.scope().region.clone(),
        }),
    });
    Ok(client)
}

/// [`plane_on`], with authentication on or off.
pub async fn plane_with(
    store: SqliteStore,
    logs: LogStore,
    authenticate: bool,
) -> Result<Arc<ControlPlane>, String> {
    open_control_plane(Arc::new(store), logs, authenticate, None).await
}

async fn open_control_plane(
    store: Arc<dyn KvStore>,
    logs: LogStore,
    authenticate: bool,
    replication: Option<gantry_control::replicas::Replication>,
) -> Result<Arc<ControlPlane>, String> {
    let config = ControlConfig {
        // Simulated agents never go away during a benchmark; a long grace period keeps the
        // lost-host detector out of the figures if one is slow to reconnect.
        lost_host_after_secs: 3600.0,
        authenticate,
        replication,
        ..ControlConfig::default()
    };
    let audit = gantry_control::AuditLog::in_memory(100_000)
        .map_err(|e| format!("cannot open the audit log: {e}"))?;
    Ok(Arc::new(
        ControlPlane::open(config, store, logs, audit)
            .await
            .map_err(|e| format!("cannot load the control plane: {e}"))?,
    ))
}

/// [`open_stores`] then [`plane_on`].
pub async fn open_plane(dir: Option<&Path>) -> Result<Arc<ControlPlane>, String> {
    let (store, logs) = open_stores(dir)?;
    plane_on(store, logs).await
}

/// Waits until `plane` (served by [`Server::serve`]) runs the controllers: at once on SQLite, after its
/// election on etcd.
pub async fn wait_leading(plane: &ControlPlane, limit: Duration) -> Result<(), String> {
    let mut leadership = plane.replica.subscribe();
    let leading = leadership.wait_for(|l| *l != gantry_control::replicas::Leadership::Following);
    let led = matches!(tokio::time::timeout(limit, leading).await, Ok(Ok(_)));
    if led {
        Ok(())
    } else {
        Err(format!(
            "the control plane did not become the leader within {limit:?}: is etcd healthy?"
        ))
    }
}

impl Server {
    /// Serves `plane` on a free loopback port.
    pub async fn serve(plane: Arc<ControlPlane>) -> Result<Server, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on loopback: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("no local address: {e}"))?;
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(gantry_control::serve(listener, plane, async move {
            let _ = stop_rx.changed().await;
        }));
        Ok(Server {
            endpoint: format!("http://{addr}"),
            stop,
            task,
        })
    }

    /// Stops serving; open agent channels are cut after a short grace period.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Creates the benchmark cluster and registers the benchmark task definition: one busybox
/// container reserving `cpu` units and `memory` MiB.
pub async fn prepare_cluster(client: &EcsClient, cpu: i64, memory: i64) -> Result<(), String> {
    let _: Value = client
        .call("CreateCluster", &json!({ "clusterName": CLUSTER }))
        .await
        .map_err(|e| format!("CreateCluster: {e}"))?;
    let _: Value = client
        .call(
            "RegisterTaskDefinition",
            &json!({
                "family": FAMILY,
                "containerDefinitions": [{
                    "name": "app",
                    "image": "busybox:1.36",
                    "cpu": cpu,
                    "memory": memory,
                    "essential": true,
                    "command": ["sh", "-c", "sleep 3600"],
                }],
            }),
        )
        .await
        .map_err(|e| format!("RegisterTaskDefinition: {e}"))?;
    Ok(())
}

/// `RunTask` of the benchmark family; the ARNs of the tasks placed and the number of failures.
pub async fn run_task(client: &EcsClient, count: usize) -> Result<(Vec<String>, usize), String> {
    let v: Value = client
        .call(
            "RunTask",
            &json!({ "cluster": CLUSTER, "taskDefinition": FAMILY, "count": count }),
        )
        .await
        .map_err(|e| format!("RunTask: {e}"))?;
    let arns = v["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let failures = v["failures"].as_array().map_or(0, |f| f.len());
    Ok((arns, failures))
}

/// How many tasks of the benchmark cluster the control plane's state cache shows RUNNING.
pub fn running_in_cache(plane: &ControlPlane) -> usize {
    plane
        .cache
        .tasks_of_cluster(CLUSTER)
        .iter()
        .filter(|e| e.value.task.last_status.as_deref() == Some("RUNNING"))
        .count()
}
