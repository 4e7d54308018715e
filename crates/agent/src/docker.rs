//! A thin wrapper over bollard: connect (with API version negotiation), images, containers,
//! volumes, the event stream and log streams, returning the agent's own small types.

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, EventMessage, PortMap};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use gantry_model::agent_protocol::{labels, RegistryAuth};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::spec::{parse_image_ref, registry_of, CreateSpec};
use crate::util::{parse_rfc3339_ns, Backoff};

/// A Docker call that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Other(String),
}

impl DockerError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound(_))
    }
}

impl From<BollardError> for DockerError {
    fn from(e: BollardError) -> Self {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => DockerError::NotFound(message),
                409 => DockerError::Conflict(message),
                _ => DockerError::Other(message),
            },
            BollardError::DockerStreamError { error } => DockerError::Other(error),
            other => DockerError::Other(other.to_string()),
        }
    }
}

/// Timeout for one Docker call's response headers; `docker stop` with a long stopTimeout
/// must fit.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(600);

/// The agent's handle on the Docker engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    docker: Docker,
    endpoint: String,
    /// A plain HTTP client on the same endpoint, for the one request bollard's models cannot
    /// express (see [`DockerDriver::create_container_with_mac`]); made on first use.
    raw_http: Arc<OnceLock<Option<RawHttp>>>,
}

/// A plain HTTP client on the engine's endpoint.
#[derive(Debug, Clone)]
struct RawHttp {
    client: reqwest::Client,
    /// `http://docker` (unix socket) or `http://host:port`.
    base: String,
}

/// What the agent knows about a Docker network after `inspect`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The IPAM configuration: (subnet, gateway) pairs.
    pub subnets: Vec<(String, Option<String>)>,
    pub labels: HashMap<String, String>,
}

/// What the agent knows about a container after `inspect`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSnapshot {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// Docker's status word: created, running, exited, …
    pub status: String,
    pub running: bool,
    /// It has been started at some point.
    pub started: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    /// healthy, unhealthy or starting, when it has a health check.
    pub health: Option<String>,
    pub has_healthcheck: bool,
    pub started_at_ns: Option<i64>,
    pub finished_at_ns: Option<i64>,
    pub ports: Option<PortMap>,
    pub network_mode: Option<String>,
    /// The IPv4 address it holds on each network it is attached to, by network name (Docker
    /// gives the address back when the container stops: a stopped container holds none).
    pub ipv4_addresses: BTreeMap<String, String>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub stop_timeout: Option<i64>,
}

impl ContainerSnapshot {
    pub fn from_inspect(r: ContainerInspectResponse) -> Self {
        let state = r.state.unwrap_or_default();
        let config = r.config.unwrap_or_default();
        let host = r.host_config.unwrap_or_default();
        let status = state.status.map(|s| s.to_string()).unwrap_or_default();
        let running = state.running.unwrap_or(false)
            || matches!(
                state.status,
                Some(ContainerStateStatusEnum::RUNNING)
                    | Some(ContainerStateStatusEnum::PAUSED)
                    | Some(ContainerStateStatusEnum::RESTARTING)
            );
        let started_at_ns = state.started_at.as_deref().and_then(parse_rfc3339_ns);
        let has_healthcheck = config
            .healthcheck
            .as_ref()
            .and_then(|h| h.test.as_ref())
            .and_then(|t| t.first())
            .is_some_and(|t| t != "NONE");
        ContainerSnapshot {
            id: r.id.unwrap_or_default(),
            name: r
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image: config.image.unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
            status,
            running,
            started: running || started_at_ns.is_some(),
            exit_code: if running { None } else { state.exit_code },
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            has_healthcheck,
            started_at_ns,
            finished_at_ns: state.finished_at.as_deref().and_then(parse_rfc3339_ns),
            ipv4_addresses: r
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .map(|nets| {
                    nets.iter()
                        .filter_map(|(name, ep)| {
                            let ip = ep.ip_address.as_deref().filter(|ip| !ip.is_empty())?;
                            Some((name.clone(), ip.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ports: r.network_settings.and_then(|n| n.ports),
            network_mode: host.network_mode,
            memory: host.memory.filter(|m| *m > 0),
            memory_reservation: host.memory_reservation.filter(|m| *m > 0),
            cpu_shares: host.cpu_shares,
            stop_timeout: config.stop_timeout,
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// What a container event means to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Start,
    Die,
    Oom,
    /// `health_status: healthy|unhealthy|starting`
    Health(String),
    Destroy,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    pub kind: EventKind,
    pub task_arn: Option<String>,
    pub instance_arn: Option<String>,
    pub container_name: Option<String>,
    pub exit_code: Option<i64>,
    /// Seconds since the epoch.
    pub time: Option<i64>,
}

/// The agent's reading of a Docker event, or `None` for non-container events.
pub fn parse_event(ev: &EventMessage) -> Option<ContainerEvent> {
    let actor = ev.actor.as_ref()?;
    let id = actor.id.clone()?;
    let attrs = actor.attributes.clone().unwrap_or_default();
    let action = ev.action.clone().unwrap_or_default();
    let kind = if let Some(rest) = action.strip_prefix("health_status") {
        EventKind::Health(rest.trim_start_matches(':').trim().to_string())
    } else {
        match action.as_str() {
            "start" => EventKind::Start,
            "die" => EventKind::Die,
            "oom" => EventKind::Oom,
            "destroy" => EventKind::Destroy,
            other => EventKind::Other(other.to_string()),
        }
    };
    Some(ContainerEvent {
        id,
        kind,
        task_arn: attrs.get(labels::TASK_ARN).cloned(),
        instance_arn: attrs.get(labels::INSTANCE_ARN).cloned(),
        container_name: attrs.get(labels::CONTAINER_NAME).cloned(),
        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        time: ev.time,
    })
}

/// What the event follower hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFeed {
    Event(ContainerEvent),
    /// The event stream broke and was re-established: events may have been missed.
    Resubscribed,
}

impl DockerDriver {
    /// Connects to `host` (or bollard's local defaults), negotiates the API version and
    /// checks that the engine answers.
    pub async fn connect(host: Option<&str>) -> Result<Self, DockerError> {
        let (docker, endpoint) = match host {
            Some(h) => (Docker::connect_with_host(h), h.to_string()),
            None => (
                Docker::connect_with_defaults(),
                std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string()),
            ),
        };
        let docker = docker
            .map_err(|e| DockerError::Other(format!("{endpoint}: {e}")))?
            .with_timeout(DOCKER_TIMEOUT);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Other(format!("{endpoint}: {e}")))?;
        docker
            .ping()
            .await
            .map_err(|e| DockerError::Other(format!("{endpoint}: {e}")))?;
        Ok(DockerDriver {
            docker,
            endpoint,
            raw_http: Arc::default(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bollard client, for what this wrapper does not cover.
    pub fn raw(&self) -> &Docker {
        &self.docker
    }

    /// The engine's version string and the `(major, minor)` API version in use.
    pub async fn engine_version(&self) -> Result<(String, (u32, u32)), DockerError> {
        let v = self.docker.version().await?;
        let api = self.docker.client_version();
        let api = (api.major_version as u32, api.minor_version as u32);
        Ok((v.version.unwrap_or_else(|| "unknown".into()), api))
    }

    /// The negotiated API version, `(major, minor)`.
    pub fn api_version(&self) -> (u32, u32) {
        let v = self.docker.client_version();
        (v.major_version as u32, v.minor_version as u32)
    }

    /// The engine's CPU architecture as Docker names it (`amd64`, `arm64`, …).
    pub async fn engine_arch(&self) -> Result<String, DockerError> {
        let v = self.docker.version().await?;
        Ok(v.arch
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string()))
    }

    /// `docker import` of a root filesystem tarball as `repo:tag`, with Dockerfile-style
    /// `changes` (`CMD [...]`, `LABEL k=v`) applied to the image's configuration.
    pub async fn import_image(
        &self,
        rootfs_tar: Vec<u8>,
        repo: &str,
        tag: &str,
        changes: Vec<String>,
    ) -> Result<(), DockerError> {
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let mut stream = self.docker.create_image(
            Some(opts),
            Some(bollard::body_full(bytes::Bytes::from(rootfs_tar))),
            None,
        );
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok(())
    }

    /// Whether `image` is present locally; `Some(digest)` of its first repo digest if known.
    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        found(self.docker.inspect_image(image).await)
    }

    /// `docker pull image` (tag defaults to `latest`).
    pub async fn pull(&self, image: &str) -> Result<(), DockerError> {
        self.pull_with(image, None).await
    }

    /// Pulls `image`, authenticating to its registry with `auth` when given (a container's
    /// `repositoryCredentials`).
    pub async fn pull_with(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), DockerError> {
        let (repo, tag) = parse_image_ref(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&repo)
            .tag(&tag)
            .build();
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(registry_of(&repo)),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(opts), None, credentials);
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok(())
    }

    /// Pulls `image` only when it is not present. Returns whether it pulled.
    pub async fn ensure_image(&self, image: &str) -> Result<bool, DockerError> {
        self.ensure_image_with(image, None).await
    }

    /// [`Self::ensure_image`], pulling with `auth` when given.
    pub async fn ensure_image_with(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<bool, DockerError> {
        if self.image_present(image).await? {
            return Ok(false);
        }
        self.pull_with(image, auth).await?;
        if !self.image_present(image).await? {
            return Err(DockerError::Other(format!(
                "image {image} is still missing after the pull"
            )));
        }
        Ok(true)
    }

    pub async fn create_container(&self, spec: &CreateSpec) -> Result<String, DockerError> {
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let r = self
            .docker
            .create_container(Some(opts), spec.body.clone())
            .await?;
        Ok(r.id)
    }

    /// `docker create` of a container attached to one network with a fixed MAC address.
    /// Engines with API 1.44 or later take the address from the endpoint settings, which the
    /// spec already carries. Older ones (Docker 24 and before) read only the top-level
    /// `MacAddress` of the container configuration, which bollard's current model no longer
    /// has: for them the same body goes out as JSON with that member added, over a plain HTTP
    /// client on the same endpoint. Where that is impossible (a TLS or SSH endpoint) the
    /// container is created without it, and Docker derives the MAC from the IP address.
    pub async fn create_container_with_mac(
        &self,
        spec: &CreateSpec,
        mac: &str,
    ) -> Result<String, DockerError> {
        if self.api_version() >= (1, 44) || mac.is_empty() {
            return self.create_container(spec).await;
        }
        let Some(raw) = self.raw_http() else {
            tracing::warn!(endpoint = %self.endpoint, container = %spec.name, "this Docker engine (API < 1.44) takes a container's MAC address only through a plain HTTP request, which this endpoint does not allow; Docker chooses the MAC address");
            return self.create_container(spec).await;
        };
        let mut body = serde_json::to_value(&spec.body)
            .map_err(|e| DockerError::Other(format!("cannot encode the create request: {e}")))?;
        if let Some(o) = body.as_object_mut() {
            o.insert("MacAddress".into(), serde_json::Value::String(mac.into()));
        }
        let (major, minor) = self.api_version();
        let url = format!(
            "{}/v{major}.{minor}/containers/create?name={}",
            raw.base,
            crate::util::urlencode(&spec.name)
        );
        let resp = match raw.client.post(&url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                // Not plain HTTP after all (or gone): bollard's own connection decides.
                tracing::warn!(endpoint = %self.endpoint, container = %spec.name, "cannot send the create request with a MAC address ({e}); creating the container without it");
                return self.create_container(spec).await;
            }
        };
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| DockerError::Other(format!("{}: {e}", self.endpoint)))?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let message = json
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.trim().to_string());
        match status {
            200..=299 => json
                .get("Id")
                .and_then(|i| i.as_str())
                .map(str::to_string)
                .ok_or_else(|| DockerError::Other(format!("no Id in Docker's answer: {text}"))),
            404 => Err(DockerError::NotFound(message)),
            409 => Err(DockerError::Conflict(message)),
            _ => Err(DockerError::Other(message)),
        }
    }

    /// The plain HTTP client on the engine's endpoint, when it is a unix socket or plain TCP.
    fn raw_http(&self) -> Option<RawHttp> {
        self.raw_http
            .get_or_init(|| {
                let e = self.endpoint.trim();
                let builder = reqwest::Client::builder().timeout(Duration::from_secs(120));
                let (builder, base) = if let Some(path) = e.strip_prefix("unix://") {
                    (builder.unix_socket(path), "http://docker".to_string())
                } else if e.starts_with('/') {
                    (builder.unix_socket(e), "http://docker".to_string())
                } else if let Some(hostport) = e.strip_prefix("tcp://") {
                    if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
                        return None;
                    }
                    (
                        builder,
                        format!("http://{}", hostport.trim_end_matches('/')),
                    )
                } else if e.starts_with("http://") {
                    (builder, e.trim_end_matches('/').to_string())
                } else {
                    return None;
                };
                builder.build().ok().map(|client| RawHttp { client, base })
            })
            .clone()
    }

    /// A network by name or id; `None` when there is none.
    pub async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, DockerError> {
        match self.docker.inspect_network(name, None).await {
            Ok(n) => Ok(Some(NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
                subnets: n
                    .ipam
                    .and_then(|i| i.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| Some((c.subnet?, c.gateway.filter(|g| !g.is_empty()))))
                    .collect(),
                labels: n.labels.unwrap_or_default(),
            })),
            Err(e) => {
                let e = DockerError::from(e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `docker network create`; returns the new network's id.
    pub async fn create_network(
        &self,
        req: bollard::models::NetworkCreateRequest,
    ) -> Result<String, DockerError> {
        let r = self.docker.create_network(req).await?;
        Ok(r.id)
    }

    /// `docker network rm`.
    pub async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        Ok(self.docker.remove_network(name).await?)
    }

    /// `docker network disconnect --force`.
    pub async fn disconnect_network(&self, network: &str, id: &str) -> Result<(), DockerError> {
        let req = bollard::models::NetworkDisconnectRequest {
            container: id.to_string(),
            force: Some(true),
        };
        Ok(self.docker.disconnect_network(network, req).await?)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        Ok(self.docker.start_container(id, None).await?)
    }

    /// `docker stop -t timeout`: SIGTERM, then SIGKILL after `timeout_secs`.
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), DockerError> {
        let t = timeout_secs.clamp(0, i32::MAX as i64) as i32;
        let opts = StopContainerOptionsBuilder::default().t(t).build();
        Ok(self.docker.stop_container(id, Some(opts)).await?)
    }

    pub async fn kill_container(&self, id: &str) -> Result<(), DockerError> {
        Ok(self.docker.kill_container(id, None).await?)
    }

    /// `docker rm -f -v`.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        Ok(self.docker.remove_container(id, Some(opts)).await?)
    }

    pub async fn inspect_container(&self, id: &str) -> Result<ContainerSnapshot, DockerError> {
        let r = self.docker.inspect_container(id, None).await?;
        Ok(ContainerSnapshot::from_inspect(r))
    }

    /// Ids of all containers (running or not) carrying every `key=value` label given.
    pub async fn list_container_ids(
        &self,
        label_filters: &[String],
    ) -> Result<Vec<String>, DockerError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("label".into(), label_filters.to_vec());
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(opts)).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Every container owned by the container instance `instance_arn`, inspected.
    pub async fn instance_containers(
        &self,
        instance_arn: &str,
    ) -> Result<Vec<ContainerSnapshot>, DockerError> {
        let ids = self
            .list_container_ids(&[format!("{}={instance_arn}", labels::INSTANCE_ARN)])
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.inspect_container(&id).await {
                Ok(s) => out.push(s),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool, DockerError> {
        found(self.docker.inspect_volume(name).await)
    }

    pub async fn create_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        driver_opts: &BTreeMap<String, String>,
        labels: HashMap<String, String>,
    ) -> Result<(), DockerError> {
        let req = bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: driver.map(str::to_string),
            driver_opts: Some(driver_opts.clone().into_iter().collect()),
            labels: Some(labels),
            cluster_volume_spec: None,
        };
        self.docker.create_volume(req).await?;
        Ok(())
    }

    /// Names of the volumes labelled with `task_arn` (the task-scoped ones Gantry created).
    pub async fn task_volumes(&self, task_arn: &str) -> Result<Vec<String>, DockerError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert(
            "label".into(),
            vec![format!("{}={task_arn}", crate::spec::VOLUME_TASK_LABEL)],
        );
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let r = self.docker.list_volumes(Some(opts)).await?;
        Ok(r.volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let opts = RemoveVolumeOptionsBuilder::default().force(false).build();
        Ok(self.docker.remove_volume(name, Some(opts)).await?)
    }

    /// A container's output from `since_secs` (0: from the start), following it until it
    /// stops; each item is one line prefixed with its RFC 3339 timestamp.
    pub fn logs(
        &self,
        id: &str,
        since_secs: i64,
    ) -> impl Stream<Item = Result<LogOutput, DockerError>> + Send + use<> {
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since_secs.clamp(0, i32::MAX as i64) as i32)
            .build();
        self.docker
            .logs(id, Some(opts))
            .map(|r| r.map_err(DockerError::from))
    }

    /// Container events for containers that carry the instance label (any instance: the
    /// caller keeps those of the instance ARNs it owns, which may change on re-registration).
    pub fn container_events(
        &self,
        since_secs: Option<i64>,
    ) -> impl Stream<Item = Result<EventMessage, DockerError>> + Send + use<> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("label".into(), vec![labels::INSTANCE_ARN.to_string()]);
        let mut b = EventsOptionsBuilder::default().filters(&filters);
        let since = since_secs.map(|s| s.to_string());
        if let Some(s) = &since {
            b = b.since(s);
        }
        self.docker
            .events(Some(b.build()))
            .map(|r| r.map_err(DockerError::from))
    }
}

/// Follows Docker's container events and hands them to `tx` until `stop` turns true or `tx`
/// closes; resubscribes (from the last event's time, so nothing is lost) when the stream ends
/// or fails, announcing each resubscription with [`EventFeed::Resubscribed`].
pub async fn follow_events(
    docker: DockerDriver,
    tx: mpsc::UnboundedSender<EventFeed>,
    mut stop: watch::Receiver<bool>,
) {
    // Start from "now" (to the second): events between this call and the subscription
    // being live are replayed rather than lost.
    let mut since = crate::util::now_ns() / 1_000_000_000;
    let mut backoff = Backoff::standard();
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        if !first && tx.send(EventFeed::Resubscribed).is_err() {
            return;
        }
        first = false;
        let stream = docker.container_events(Some(since));
        futures::pin_mut!(stream);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                item = stream.next() => match item {
                    Some(Ok(ev)) => {
                        backoff.reset();
                        if let Some(t) = ev.time {
                            since = since.max(t);
                        }
                        if let Some(ce) = parse_event(&ev) {
                            if tx.send(EventFeed::Event(ce)).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("Docker event stream failed: {e}; resubscribing");
                        break;
                    }
                    None => {
                        tracing::debug!("Docker event stream ended; resubscribing");
                        break;
                    }
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// `Ok(true)` when an inspect succeeded, `Ok(false)` when Docker says there is no such object.
fn found<T>(inspected: Result<T, bollard::errors::Error>) -> Result<bool, DockerError> {
    match inspected {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = DockerError::from(e);
            if e.is_not_found() {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    #[test]
    fn parses_events() {
        let ev = EventMessage {
            action: Some("health_status: healthy".into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([
                    (labels::TASK_ARN.to_string(), "arn:t".to_string()),
                    (labels::INSTANCE_ARN.to_string(), "arn:i".to_string()),
                ])),
            }),
            time: Some(5),
            ..Default::default()
        };
        let ce = parse_event(&ev).unwrap();
        assert_eq!(ce.kind, EventKind::Health("healthy".into()));
        assert_eq!(ce.task_arn.as_deref(), Some("arn:t"));
        assert_eq!(ce.instance_arn.as_deref(), Some("arn:i"));
        let die = EventMessage {
            action: Some("die".into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([("exitCode".to_string(), "137".to_string())])),
            }),
            ..Default::default()
        };
        let ce = parse_event(&die).unwrap();
        assert_eq!((ce.kind, ce.exit_code), (EventKind::Die, Some(137)));
    }
}
