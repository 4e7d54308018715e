//! The machine-wide front: the one listener on `169.254.170.2:80`, forwarding each request by
//! the id in its path to the agent that registered it (see [`super::registry`]).
//!
//! Every agent runs [`hold`]: it makes sure of the Docker network that puts the address on
//! the host, then tries to listen; while another process holds the port it tries again every
//! [`RETRY`], so when the holder exits (or is killed) another agent takes over within seconds.
//! The holder also sweeps the registry of entries whose agent is gone.

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http::{self, Answer, Route};
use super::registry::Registry;
use super::{ENDPOINT_IP, ENDPOINT_NETWORK, ENDPOINT_SUBNET};
use crate::docker::DockerDriver;

/// How often an agent that does not hold the front tries to.
pub const RETRY: Duration = Duration::from_secs(3);
/// How often the holder sweeps the registry of dead owners.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Makes sure of the Docker network whose gateway is [`ENDPOINT_IP`]. An existing network of
/// that name is taken as it is; a refusal (its range overlaps another network: ECS's own
/// agent uses the same range for its `ecs-bridge`) is returned for the caller to report.
pub async fn ensure_network(docker: &DockerDriver) -> Result<(), String> {
    if docker
        .inspect_network(ENDPOINT_NETWORK)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let req = NetworkCreateRequest {
        name: ENDPOINT_NETWORK.into(),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(ENDPOINT_SUBNET.into()),
                gateway: Some(ENDPOINT_IP.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        labels: Some(HashMap::from([(
            "dev.gantry.task-endpoints".to_string(),
            "true".to_string(),
        )])),
        ..Default::default()
    };
    match docker.create_network(req).await {
        Ok(_) => {
            tracing::info!(network = ENDPOINT_NETWORK, address = %ENDPOINT_IP, "created the Docker network that puts the task endpoints' address on this host");
            Ok(())
        }
        // Another agent on this engine made it meanwhile?
        Err(e) => match docker.inspect_network(ENDPOINT_NETWORK).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(format!(
                "Docker refused to create the network {ENDPOINT_NETWORK} ({ENDPOINT_SUBNET}, gateway {ENDPOINT_IP}): {e}"
            )),
        },
    }
}

/// Serves the front at `bind` whenever this process can hold it, until `shutdown` turns
/// true. With `docker`, the network that puts the address on the host is made sure of first
/// (and again while the address is missing).
pub async fn hold(
    bind: SocketAddr,
    registry: Registry,
    docker: Option<DockerDriver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut said_network = false;
    let mut said_bind = false;
    loop {
        match TcpListener::bind(bind).await {
            Ok(listener) => {
                tracing::info!(address = %bind, registry = %registry.dir().display(), "serving the task endpoints (credentials, metadata) for every agent on this machine");
                said_bind = false;
                serve(listener, registry.clone(), shutdown.clone()).await;
                if *shutdown.borrow() {
                    return;
                }
            }
            Err(e) => {
                let missing = e.kind() == std::io::ErrorKind::AddrNotAvailable;
                if missing {
                    if let Some(d) = &docker {
                        if let Err(why) = ensure_network(d).await {
                            if !said_network {
                                tracing::warn!(
                                    "containers cannot reach their task endpoints at {bind}: {why}"
                                );
                                said_network = true;
                            }
                        }
                    }
                }
                if !said_bind {
                    // Held by another process is the normal case on a machine with several
                    // agents; anything else the operator should hear about once.
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        tracing::debug!(address = %bind, "another process serves the task endpoints");
                    } else {
                        tracing::info!(address = %bind, "cannot serve the task endpoints yet: {e}; trying again every {}s", RETRY.as_secs());
                    }
                    said_bind = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Serves the front on `listener` (any address: the benchmark uses loopback) until
/// `shutdown` turns true.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: watch::Receiver<bool>) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot serve the task endpoints: {e}");
            return;
        }
    };
    let sweeper = tokio::spawn({
        let registry = registry.clone();
        async move {
            loop {
                let removed = registry.sweep_dead().await;
                if removed > 0 {
                    tracing::info!(
                        removed,
                        "removed task endpoint registrations of agents that are gone"
                    );
                }
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        }
    });
    http::serve(
        listener,
        move |path| forward(http.clone(), registry.clone(), path),
        shutdown,
    )
    .await;
    sweeper.abort();
}

/// One request: to the agent that registered its id, or ECS's answer for an unknown id.
async fn forward(http: reqwest::Client, registry: Registry, path: String) -> Answer {
    let route = http::route(&path);
    let id = match route {
        Route::Credentials { id } | Route::Metadata { id, .. } => id,
        Route::NotFound => return Answer::no_such_path(),
    };
    let Some(owner) = registry.lookup(id) else {
        return http::unknown(&route);
    };
    let resp = match http.get(format!("http://{owner}{path}")).send().await {
        Ok(r) => r,
        Err(e) => {
            // The owner is gone (killed before it could unregister): nobody serves the id.
            // (Without the URL: its path holds the id, a bearer secret.)
            tracing::debug!(%owner, "task endpoint owner unreachable: {}", e.without_url());
            return http::unknown(&route);
        }
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    match resp.bytes().await {
        Ok(body) => Answer {
            status,
            content_type,
            body,
        },
        Err(_) => http::unknown(&route),
    }
}
