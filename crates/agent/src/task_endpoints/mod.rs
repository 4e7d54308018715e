//! The endpoints a task's containers call at `http://169.254.170.2`, as on ECS: the task
//! role's credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/<id>`, which
//! every AWS SDK resolves against that address) and the task metadata endpoint
//! (`ECS_CONTAINER_METADATA_URI_V4=http://169.254.170.2/v4/<id>`, and
//! `ECS_CONTAINER_METADATA_URI` with `/v3/` paths, served alike).
//!
//! # Who answers
//!
//! Only one process can listen on `169.254.170.2:80`, and one machine runs several agents
//! (`gantry dev` runs one per cluster and a Fargate host; tests run several Gantry processes
//! at once). So each agent serves its own tasks' endpoints on a loopback port of its own
//! ([`TaskEndpoints`]), and a machine-wide front ([`front`]) listens on `169.254.170.2:80` and
//! forwards each request, by the id in its path, to the agent that registered that id in the
//! machine's [`registry`]. Every agent tries to hold the front and those that cannot try again
//! every few seconds, so when the holder exits another takes over.
//!
//! The address exists on the host without any privilege beyond Docker's: the agent makes sure
//! of a Docker bridge network [`ENDPOINT_NETWORK`] (subnet `169.254.170.0/24`, gateway
//! `169.254.170.2`), and Docker puts the gateway address on the host's bridge. Containers in
//! bridge mode reach it through their own gateway (the host), awsvpc tasks through their
//! subnet's gateway (also the host), host-mode containers directly.
//!
//! # Ids
//!
//! One id per task for its credentials (only when it has a task role) and one per container
//! for its metadata: 128 bits derived from the agent's secret key ([`ids`]), so a container
//! can reach only its own task's credentials and its own metadata, and nobody can guess an id.
//! An unknown id answers as ECS's agent does (400 `InvalidIdInRequest` for credentials, 404
//! for metadata).
//!
//! # Life of a task's endpoints
//!
//! The runner opens them ([`TaskEndpoints::open`]) before it creates the task's containers
//! (also for a task adopted after an agent restart: the ids are the same), which fetches the
//! role's credentials first (a role ECS cannot assume stops the task with ECS's reason), and
//! gets the variables to add to each container's environment ([`TaskLease::environment`]).
//! Every report it makes is published to them ([`TaskLease::publish`]): the metadata shows
//! what the runner last reported. Credentials are fetched again when half of their lifetime
//! has passed; once the task has stopped they are no longer served (the control plane
//! deletes them). The endpoints close when the task is cleaned up (the lease is dropped).

pub mod credentials;
pub mod front;
pub mod http;
pub mod ids;
pub mod metadata;
pub mod registry;

use futures::StreamExt;
use gantry_model::agent_protocol::{SubmitTaskStateChange, TaskAssignment, TaskRoleCredentials};
use gantry_model::status;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

use crate::docker::DockerDriver;
use crate::spec::InjectedEnvironment;
use credentials::CredentialsSource;
use http::{Answer, MetadataDoc, Route};
use ids::IdKey;
use metadata::{DockerFacts, TaskDescription, TaskState};
use registry::Registry;

/// The address containers call, as on ECS.
pub const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
pub const ENDPOINT_PORT: u16 = 80;
/// The Docker network whose gateway puts [`ENDPOINT_IP`] on the host.
pub const ENDPOINT_NETWORK: &str = "gantry-task-endpoints";
pub const ENDPOINT_SUBNET: &str = "169.254.170.0/24";
/// The variables containers find their endpoints in.
pub const CREDENTIALS_URI_VAR: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
pub const METADATA_URI_V4_VAR: &str = "ECS_CONTAINER_METADATA_URI_V4";
pub const METADATA_URI_VAR: &str = "ECS_CONTAINER_METADATA_URI";

/// How the endpoints are set up.
pub struct TaskEndpointsConfig {
    /// The machine's registry (see [`registry`]).
    pub registry: Registry,
    /// The key ids are derived from.
    pub key: IdKey,
    /// Where task role credentials come from; `None`: tasks with a role fail to start.
    pub credentials: Option<Arc<dyn CredentialsSource>>,
    /// For the metadata's Docker facts and stats; `None`: documents without them.
    pub docker: Option<DockerDriver>,
    pub availability_zone: Option<String>,
    /// `EC2`, or `FARGATE` on a Fargate host.
    pub launch_type: String,
    /// What containers are told to call: `http://169.254.170.2`.
    pub base_url: String,
    /// How long a credentials fetch keeps trying while the control plane cannot answer.
    pub patience: Duration,
}

impl TaskEndpointsConfig {
    /// The production setup: the system registry, [`ENDPOINT_IP`].
    pub fn new(registry: Registry, key: IdKey) -> TaskEndpointsConfig {
        TaskEndpointsConfig {
            registry,
            key,
            credentials: None,
            docker: None,
            availability_zone: None,
            launch_type: "EC2".into(),
            base_url: format!("http://{ENDPOINT_IP}"),
            patience: Duration::from_secs(30),
        }
    }
}

/// One task's endpoints: what they serve.
struct TaskEntry {
    description: TaskDescription,
    state: RwLock<TaskState>,
    credentials: RwLock<Option<TaskRoleCredentials>>,
    stopped: AtomicBool,
    /// A stats sample per Docker id: the next answer's `precpu_stats` and network rates are
    /// taken against it.
    stats_samples: Mutex<HashMap<String, serde_json::Value>>,
}

#[derive(Clone)]
enum Served {
    Credentials(Arc<TaskEntry>),
    Metadata(Arc<TaskEntry>, String),
}

impl Served {
    fn entry(&self) -> &Arc<TaskEntry> {
        match self {
            Served::Credentials(e) | Served::Metadata(e, _) => e,
        }
    }
}

struct Inner {
    config: TaskEndpointsConfig,
    /// Where this agent serves its tasks' endpoints (loopback).
    addr: SocketAddr,
    served: RwLock<HashMap<String, Served>>,
    /// Dropping it (with the last handle) stops the server.
    _stop: watch::Sender<bool>,
}

/// This agent's endpoints server. Cheap to clone.
#[derive(Clone)]
pub struct TaskEndpoints {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEndpoints")
            .field("addr", &self.inner.addr)
            .field("registry", &self.inner.config.registry.dir())
            .finish_non_exhaustive()
    }
}

impl TaskEndpoints {
    /// Starts serving on a loopback port of its own; it stops when the last handle is dropped.
    pub async fn start(config: TaskEndpointsConfig) -> std::io::Result<TaskEndpoints> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            addr,
            served: RwLock::new(HashMap::new()),
            _stop: stop,
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(http::serve(
            listener,
            move |path| answer(weak.clone(), path),
            stopped,
        ));
        tracing::debug!(%addr, registry = %inner.config.registry.dir().display(), "serving this agent's task endpoints");
        Ok(TaskEndpoints { inner })
    }

    /// Where this agent serves (loopback).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.config.registry
    }

    /// What a task's endpoints serve of its assignment.
    pub fn describe(&self, a: &TaskAssignment) -> TaskDescription {
        let c = &self.inner.config;
        TaskDescription::from_assignment(a, c.availability_zone.as_deref(), &c.launch_type)
    }

    /// Opens a task's endpoints: fetches its role's credentials first (when it has a role;
    /// the error is the task's stop reason), then serves and registers its ids.
    pub async fn open(&self, task: TaskDescription) -> Result<TaskLease, String> {
        let config = &self.inner.config;
        let mut creds = None;
        if task.role_arn.is_some() {
            let Some(source) = config.credentials.clone() else {
                return Err("ResourceInitializationError: this agent cannot get task role credentials (it has no control plane)".into());
            };
            creds = Some(
                credentials::fetch_patiently(source.as_ref(), &task.task_arn, config.patience)
                    .await?,
            );
        }
        let credentials_id = creds
            .is_some()
            .then(|| config.key.credentials_id(&task.task_arn));
        let metadata_ids: Vec<(String, String)> = task
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    config.key.metadata_id(&task.task_arn, &c.name),
                )
            })
            .collect();
        let entry = Arc::new(TaskEntry {
            state: RwLock::new(TaskState {
                desired_status: status::RUNNING.into(),
                known_status: status::PENDING.into(),
                ..Default::default()
            }),
            credentials: RwLock::new(creds),
            stopped: AtomicBool::new(false),
            stats_samples: Mutex::new(HashMap::new()),
            description: task,
        });
        let mut ids = Vec::new();
        if let Ok(mut served) = self.inner.served.write() {
            if let Some(id) = &credentials_id {
                served.insert(id.clone(), Served::Credentials(entry.clone()));
                ids.push(id.clone());
            }
            for (name, id) in &metadata_ids {
                served.insert(id.clone(), Served::Metadata(entry.clone(), name.clone()));
                ids.push(id.clone());
            }
        }
        for id in &ids {
            if let Err(e) = config.registry.register(id, self.inner.addr) {
                tracing::warn!(task = %entry.description.task_arn, registry = %config.registry.dir().display(), "cannot register a task endpoint, so its containers cannot reach it: {e}");
            }
        }
        let refresher = match (&credentials_id, config.credentials.clone()) {
            (Some(_), Some(source)) => Some(tokio::spawn(refresh(entry.clone(), source))),
            _ => None,
        };
        Ok(TaskLease {
            endpoints: self.clone(),
            entry,
            ids,
            credentials_id,
            metadata_ids: metadata_ids.into_iter().collect(),
            refresher: Mutex::new(refresher),
        })
    }

    /// Forgets the registrations of a task whose endpoints this agent no longer serves (a task
    /// left by an earlier run and only cleaned up by this one).
    pub fn forget(&self, task_arn: &str, containers: &[String]) {
        let key = &self.inner.config.key;
        let mut ids = vec![key.credentials_id(task_arn)];
        ids.extend(containers.iter().map(|c| key.metadata_id(task_arn, c)));
        let served = self
            .inner
            .served
            .read()
            .map(|s| ids.iter().map(|id| s.contains_key(id)).collect::<Vec<_>>())
            .unwrap_or_default();
        for (i, id) in ids.iter().enumerate() {
            if !served.get(i).copied().unwrap_or(false) {
                self.inner.config.registry.unregister(id);
            }
        }
    }
}

/// Fetches a task's credentials again each time half of their lifetime has passed, until the
/// task stops. A failed fetch keeps the current ones (they stay valid until they expire) and
/// is tried again, less and less often.
async fn refresh(entry: Arc<TaskEntry>, source: Arc<dyn CredentialsSource>) {
    let mut floor = Duration::from_secs(1);
    loop {
        let delay = match entry.credentials.read().ok().and_then(|c| c.clone()) {
            Some(c) => credentials::refresh_delay(&c, gantry_model::now_epoch(), floor),
            None => floor,
        };
        tokio::time::sleep(delay).await;
        if entry.stopped.load(Ordering::SeqCst) {
            return;
        }
        let task = &entry.description.task_arn;
        match source.fetch(task).await {
            Ok(c) => {
                tracing::debug!(task = %task, key = %c.access_key_id, "rotated the task role's credentials");
                if let Ok(mut slot) = entry.credentials.write() {
                    *slot = Some(c);
                }
                floor = Duration::from_secs(1);
            }
            Err(e) => {
                // Tried again after 5 s, 10 s, … up to 5 minutes (a deleted role would otherwise
                // be asked for, and logged, every few seconds for the rest of the task's life).
                floor = (floor * 2).clamp(Duration::from_secs(5), Duration::from_secs(300));
                tracing::warn!(task = %task, "cannot renew the task role's credentials: {e}; the current ones are served until they expire; trying again in {}s at the earliest", floor.as_secs());
            }
        }
    }
}

/// A task's open endpoints; dropping it closes them.
pub struct TaskLease {
    endpoints: TaskEndpoints,
    entry: Arc<TaskEntry>,
    ids: Vec<String>,
    credentials_id: Option<String>,
    metadata_ids: HashMap<String, String>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for TaskLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskLease")
            .field("task", &self.entry.description.task_arn)
            .finish_non_exhaustive()
    }
}

impl TaskLease {
    /// The variables container `name` gets: its metadata URIs, and the credentials' relative
    /// URI when the task has a role.
    pub fn environment(&self, name: &str) -> InjectedEnvironment {
        let base = &self.endpoints.inner.config.base_url;
        let mut env = InjectedEnvironment::default();
        if let Some(id) = self.metadata_ids.get(name) {
            env.set(METADATA_URI_V4_VAR, format!("{base}/v4/{id}"));
            env.set(METADATA_URI_VAR, format!("{base}/v3/{id}"));
        }
        if let Some(id) = &self.credentials_id {
            env.set(CREDENTIALS_URI_VAR, format!("/v2/credentials/{id}"));
        }
        env
    }

    /// The runner's latest report (and whether it wants the task RUNNING or STOPPED). Once the
    /// task is STOPPED its credentials are no longer served or renewed.
    pub fn publish(&self, report: &SubmitTaskStateChange, desired_status: &str) {
        let state = TaskState::from_report(report, desired_status);
        let stopped = state.known_status == status::STOPPED;
        if let Ok(mut s) = self.entry.state.write() {
            *s = state;
        }
        if stopped && !self.entry.stopped.swap(true, Ordering::SeqCst) {
            if let Ok(mut c) = self.entry.credentials.write() {
                *c = None;
            }
            if let Some(h) = self.refresher.lock().ok().and_then(|mut r| r.take()) {
                h.abort();
            }
        }
    }
}

impl Drop for TaskLease {
    fn drop(&mut self) {
        if let Some(h) = self.refresher.lock().ok().and_then(|mut r| r.take()) {
            h.abort();
        }
        let inner = &self.endpoints.inner;
        if let Ok(mut served) = inner.served.write() {
            for id in &self.ids {
                if served
                    .get(id)
                    .is_some_and(|s| Arc::ptr_eq(s.entry(), &self.entry))
                {
                    served.remove(id);
                }
            }
        }
        for id in &self.ids {
            // Not if a newer owner (a restarted agent of the same identity) took it over.
            if inner.config.registry.lookup(id) == Some(inner.addr) {
                inner.config.registry.unregister(id);
            }
        }
    }
}

/// This agent's answer to `path`.
async fn answer(inner: Weak<Inner>, path: String) -> Answer {
    let route = http::route(&path);
    let Some(inner) = inner.upgrade() else {
        return http::unknown(&route);
    };
    let id = match route {
        Route::Credentials { id } | Route::Metadata { id, .. } => id,
        Route::NotFound => return Answer::no_such_path(),
    };
    let served = inner.served.read().ok().and_then(|s| s.get(id).cloned());
    match (route, served) {
        (Route::Credentials { .. }, Some(Served::Credentials(entry))) => {
            match entry.credentials.read().ok().and_then(|c| c.clone()) {
                Some(c) if !entry.stopped.load(Ordering::SeqCst) => {
                    Answer::json(200, credentials::document(&c))
                }
                _ => http::unknown(&route),
            }
        }
        (Route::Metadata { doc, .. }, Some(Served::Metadata(entry, name))) => {
            metadata(&inner, &entry, &name, doc).await
        }
        _ => http::unknown(&route),
    }
}

async fn inspect(docker: &DockerDriver, id: &str) -> Option<DockerFacts> {
    match docker.raw().inspect_container(id, None).await {
        Ok(r) => Some(DockerFacts::from_inspect(&r)),
        Err(e) => {
            tracing::debug!(container = %id, "metadata: cannot inspect: {e}");
            None
        }
    }
}

/// The least time between the two samples a stats answer compares (about Docker's own
/// sampling interval): a kept sample is replaced only by one at least this much newer.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// A poisoned lock's data is still good here (a map of samples): take it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Container `id`'s stats, as the ECS agent serves them (`metadata::with_previous_sample`).
/// The first time, Docker itself takes two samples (about a second apart) so that even the
/// first answer has `precpu_stats`; after that one sample, against the sample kept for the
/// container. The kept sample moves on only to one at least [`STATS_INTERVAL`] newer, so that
/// pollers that ask often (or several sidecars at once) still get figures over a useful span,
/// and never back to an older one (answers may arrive out of order).
async fn stats(
    docker: &DockerDriver,
    entry: &TaskEntry,
    id: &str,
) -> Result<serde_json::Value, String> {
    let previous = lock(&entry.stats_samples).get(id).cloned();
    let options = bollard::query_parameters::StatsOptions {
        stream: false,
        one_shot: previous.is_some(),
    };
    let mut s = docker.raw().stats(id, Some(options));
    let sample = match s.next().await {
        Some(Ok(r)) => serde_json::to_value(r).map_err(|e| e.to_string())?,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("Docker gave no stats".into()),
    };
    {
        let mut kept = lock(&entry.stats_samples);
        let newer_by = |kept: &serde_json::Value| {
            metadata::sample_time(&sample)
                .zip(metadata::sample_time(kept))
                .map(|(now, before)| now - before)
        };
        let replace = match kept.get(id) {
            None => true,
            Some(k) => newer_by(k).is_some_and(|d| d >= STATS_INTERVAL.as_secs_f64()),
        };
        if replace {
            kept.insert(id.to_string(), sample.clone());
        }
    }
    Ok(metadata::with_previous_sample(sample, previous.as_ref()))
}

async fn metadata(inner: &Inner, entry: &TaskEntry, name: &str, doc: MetadataDoc) -> Answer {
    let task = &entry.description;
    let state = entry.state.read().map(|s| s.clone()).unwrap_or_default();
    let docker = inner.config.docker.as_ref();
    let docker_id = |n: &str| state.containers.get(n).and_then(|c| c.docker_id.clone());
    match doc {
        MetadataDoc::Container => {
            let Some(c) = task.container(name) else {
                return Answer::message(404, "V4 container metadata handler: no such container");
            };
            let facts = match (docker, docker_id(name)) {
                (Some(d), Some(id)) => inspect(d, &id).await,
                _ => None,
            };
            Answer::value(
                200,
                &metadata::container_document(task, &state, c, facts.as_ref()),
            )
        }
        MetadataDoc::Task => {
            let mut facts = HashMap::new();
            if let Some(d) = docker {
                let lookups = task.containers.iter().filter_map(|c| {
                    let id = docker_id(&c.name)?;
                    Some(async move { (c.name.clone(), inspect(d, &id).await) })
                });
                for (n, f) in futures::future::join_all(lookups).await {
                    if let Some(f) = f {
                        facts.insert(n, f);
                    }
                }
            }
            Answer::value(200, &metadata::task_document(task, &state, &facts))
        }
        MetadataDoc::ContainerStats => {
            let (Some(d), Some(id)) = (docker, docker_id(name)) else {
                return Answer::message(
                    404,
                    "V4 container stats handler: the container has not been created yet",
                );
            };
            match stats(d, entry, &id).await {
                Ok(v) => Answer::value(200, &v),
                Err(e) => Answer::message(
                    500,
                    &format!(
                        "V4 container stats handler: unable to get stats for container {id}: {e}"
                    ),
                ),
            }
        }
        MetadataDoc::TaskStats => {
            let mut out = serde_json::Map::new();
            if let Some(d) = docker {
                let lookups = task.containers.iter().filter_map(|c| {
                    let id = docker_id(&c.name)?;
                    Some(async move {
                        let s = stats(d, entry, &id)
                            .await
                            .unwrap_or(serde_json::Value::Null);
                        (id, s)
                    })
                });
                for (id, s) in futures::future::join_all(lookups).await {
                    out.insert(id, s);
                }
            }
            Answer::value(200, &serde_json::Value::Object(out))
        }
    }
}

#[cfg(test)]
mod tests;
