//! The Gantry control plane: the ECS wire API (awsJson1_1 dispatched on `X-Amz-Target`),
//! one module per resource, the agent channel, and the log store.
//!
//! Desired state lives in the [`gantry_store::KvStore`]; every handler validates its input
//! first and then writes with compare-and-swap, so a rejected request changes nothing and
//! concurrent writers never lose each other's updates.

mod access;
mod account_settings;
mod agent_channel;
pub mod api_model;
mod attributes;
mod audit;
mod auth;
pub mod awsvpc;
mod capacity_providers;
mod clusters;
mod container_instances;
pub mod controllers;
mod dispatch;
mod elbv2;
mod explain;
mod iam;
mod janitor;
mod lifecycle;
pub mod load_balancing;
mod log_api;
mod log_groups;
mod log_input;
mod log_pattern;
pub mod log_replication;
mod log_streams;
pub mod logs;
mod lost_hosts;
mod master_keys;
mod pagination;
mod plane;
mod query_wire;
pub mod replicas;
mod request;
pub mod secretsmanager;
mod services;
mod signing_keys;
pub mod ssm;
mod state;
mod tags;
mod task_credentials;
mod task_definitions;
mod task_protection;
mod task_reports;
mod task_secrets;
mod tasks;
pub mod tls;
mod wire;

pub use plane::{AuditLog, ControlConfig, ControlPlane, LoadBalancerDataPlaneHandle};
/// The ELBv2 records and their read functions, for the controller that feeds the load
/// balancer's data plane.
pub use state::elbv2 as elbv2_state;

use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::sync::Arc;

/// Create cluster `name` unless it exists (what `gantry dev` does for its local agent).
pub async fn ensure_cluster(plane: &ControlPlane, name: &str) -> gantry_model::EcsResult<()> {
    clusters::ensure(plane, name).await
}

/// The ACTIVE clusters' names (the Fargate pool is not one) and the store revision they were
/// read at: with [`watch_clusters`] from that revision, what `gantry dev` follows to give
/// every cluster a local instance.
pub async fn active_clusters(plane: &ControlPlane) -> gantry_model::EcsResult<(Vec<String>, i64)> {
    let (kvs, revision) = plane
        .store
        .range(state::repo::CLUSTERS)
        .await
        .map_err(state::repo::store_error)?;
    let mut names = Vec::new();
    for kv in &kvs {
        let c: gantry_model::types::Cluster = state::repo::decode(kv)?;
        if c.status.as_deref() == Some(gantry_model::status::ACTIVE) {
            if let Some(n) = c.cluster_name.filter(|n| n != gantry_model::FARGATE_POOL) {
                names.push(n);
            }
        }
    }
    Ok((names, revision))
}

/// Changes to clusters after `from_revision`.
pub async fn watch_clusters(
    plane: &ControlPlane,
    from_revision: i64,
) -> gantry_model::EcsResult<gantry_store::Watcher> {
    plane
        .store
        .watch(state::repo::CLUSTERS, Some(from_revision))
        .await
        .map_err(state::repo::store_error)
}

/// Bootstrapping authentication on a control plane's first start (the binary writes what
/// these return to `<data-dir>/credentials` and `<data-dir>/agent-token`).
pub mod bootstrap {
    pub use crate::iam::keys::{
        ensure_join_token, issue_agent_credentials, new_admin_key, AgentCredentials, ADMIN_USER,
    };

    /// Whether an access key exists (a credentials file left from a store that was since
    /// wiped names a key that does not).
    pub fn access_key_exists(plane: &crate::ControlPlane, id: &str) -> bool {
        plane.cache.iam(|i| i.keys.contains_key(id))
    }

    /// Whether the store holds the agents' join token (another replica made it).
    pub fn join_token_exists(plane: &crate::ControlPlane) -> bool {
        plane.cache.iam(|i| i.join_token.is_some())
    }

    /// Whether `token` is the agents' join token the store holds.
    pub fn join_token_matches(plane: &crate::ControlPlane, token: &str) -> bool {
        let sha = gantry_auth::sigv4::sha256_hex(token.as_bytes());
        plane
            .cache
            .iam(|i| i.join_token.as_ref().is_some_and(|t| t.sha256 == sha))
    }

    /// Whether the administrator already has an access key (another replica made it).
    pub fn admin_has_key(plane: &crate::ControlPlane) -> bool {
        plane.cache.iam(|i| {
            i.keys
                .values()
                .any(|k| matches!(&k.owner, crate::state::iam::KeyOwner::User { user_name } if user_name == ADMIN_USER))
        })
    }
}

/// The HTTP routes: the AWS APIs on `POST /`, the agent's private endpoints, and health.
pub fn router(plane: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/", post(dispatch::handle).get(dispatch::handle))
        .route(
            gantry_model::agent_protocol::CHANNEL_PATH,
            get(agent_channel::connect),
        )
        .route(
            gantry_model::agent_protocol::LOGS_PATH,
            post(log_api::ingest),
        )
        .route(
            gantry_model::agent_protocol::LOG_STREAMS_PATH,
            post(log_api::ensure_stream),
        )
        .route(
            gantry_model::agent_protocol::TASK_SECRETS_PATH,
            post(task_secrets::endpoint),
        )
        .route(
            gantry_model::agent_protocol::TASK_CREDENTIALS_PATH,
            post(task_credentials::issue),
        )
        .route(
            log_replication::JOURNAL_PATH,
            post(log_replication::journal),
        )
        .route("/metrics", get(controllers::metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(plane)
}

/// Serve the control plane on `listener` until `shutdown` completes, running its background
/// controllers (services, agent channels, lost hosts, janitor) alongside.
pub async fn serve(
    listener: tokio::net::TcpListener,
    plane: Arc<ControlPlane>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, plane, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    plane: Arc<ControlPlane>,
    tls: Option<&tls::TlsIdentity>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    plane.mark_all_agents_disconnected().await;
    let controllers = controllers::start(&plane);
    if let Some(replication) = plane.config.replication.clone() {
        let store: Arc<dyn gantry_store::KvStore> = replication.store.clone();
        tokio::spawn(log_replication::run(Arc::downgrade(&plane), store));
        tokio::spawn(replicas::run(Arc::downgrade(&plane), replication));
    }
    let app = router(plane);
    let result = match tls {
        Some(identity) => tls::serve(listener, app, identity, shutdown).await,
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    };
    drop(controllers);
    result
}
