//! One task's life on this instance, run by one tokio task: pull images, create volumes and
//! containers, start containers as their dependencies allow, follow their deaths and health
//! (Docker events routed here by the supervisor), stop them in reverse dependency order, report
//! every change as a full `SubmitTaskStateChange`, and finally remove the containers and the
//! task-scoped volumes after the cleanup wait.
//!
//! A runner can also start from containers that already exist (an agent restart adopts
//! them): it rebuilds its state from `inspect` and carries on from there.
//!
//! A container with an enabled `restartPolicy` that exits is started again in place (the same
//! Docker container) when [`crate::restart::decide`] says so; until then it counts as running,
//! so neither the container nor the task is reported stopped.

use futures::future::join_all;
use gantry_model::agent_protocol::{
    awslogs_stream, labels, log_destination, ContainerStateChange, SubmitTaskStateChange,
    TaskAssignment, TaskNetworkInterface,
};
use gantry_model::status;
use gantry_model::types::{ContainerDefinition, NetworkBinding, TaskDefinition, TaskOverride};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::awsvpc;
use crate::deps::{self, Condition, DepOutcome, DepView};
use crate::docker::{ContainerEvent, ContainerSnapshot, DockerDriver, DockerError, EventKind};
use crate::logs::{open_stream, spawn_follower, LogFollower, LogSink, LogStreams};
use crate::pause::{PauseImage, PAUSE_IMAGE};
use crate::restart::{self, Decision, RestartPolicy};
use crate::secrets::{ResolvedSecrets, TaskSecretsSource};
use crate::spec::{
    self, build_create_spec_with, effective_definition, network_bindings, plan_volumes,
    stop_timeout_secs, InjectedEnvironment, NetMode, PlannedVolume, TaskContext, VolumeSource,
};
use crate::task_endpoints::{metadata::TaskDescription, TaskEndpoints, TaskLease};
use crate::util::{now_ns, ns_to_epoch_secs};
use gantry_model::agent_protocol::RegistryAuth;

pub const REASON_ESSENTIAL_EXITED: &str = "Essential container in task exited";
pub const REASON_OOM: &str = "OutOfMemoryError: Container killed due to memory usage";
/// How long a container killed by SIGKILL that nobody asked to stop is given for Docker to
/// mark it killed for memory (its OOM notice and the exit arrive separately).
const LATE_OOM_NOTICE: Duration = Duration::from_millis(250);

/// What every runner shares.
#[derive(Debug, Clone)]
pub struct RunnerEnv {
    pub docker: DockerDriver,
    /// The container instance ARN the runner labels new containers with.
    pub instance_arn: String,
    pub reports: mpsc::UnboundedSender<SubmitTaskStateChange>,
    pub logs: Option<LogSink>,
    pub notices: mpsc::UnboundedSender<RunnerNotice>,
    /// How long after a task stopped its containers are removed.
    pub cleanup_wait: Duration,
    /// Replaces every container's `restartAttemptPeriod` (test knob).
    pub restart_attempt_period: Option<Duration>,
    /// The pause image of awsvpc tasks.
    pub pause_image: PauseImage,
    /// Where `awslogs` containers' streams are made sure of before they start.
    pub log_streams: Option<Arc<dyn LogStreams>>,
    /// Where a task's `secrets` and `repositoryCredentials` are resolved before it pulls.
    pub task_secrets: Option<Arc<dyn TaskSecretsSource>>,
    /// Serves tasks' credentials and metadata endpoints.
    pub task_endpoints: Option<TaskEndpoints>,
    /// Turns true when the agent shuts down (log followers end).
    pub shutdown: watch::Receiver<bool>,
}

/// What the supervisor tells a runner.
#[derive(Debug, Clone)]
pub enum RunnerCmd {
    /// The task's latest assignment (from a Tasks message).
    Desired(Box<TaskAssignment>),
    /// Stop the task (it is no longer assigned here).
    Stop { reason: Option<String> },
    /// A Docker event for one of the task's containers.
    Event(ContainerEvent),
    /// Re-inspect every container (events may have been missed).
    Resync,
    /// Remove the stopped task's containers now, without waiting for the cleanup wait.
    CleanupNow,
}

/// What a runner tells the supervisor.
#[derive(Debug, Clone)]
pub enum RunnerNotice {
    /// The task is STOPPED; its containers wait for cleanup.
    Stopped { task_arn: String, at: SystemTime },
    /// The task's containers are removed and the runner has ended.
    Done {
        task_arn: String,
        final_report: Option<SubmitTaskStateChange>,
    },
}

/// A running runner.
#[derive(Debug)]
pub struct RunnerHandle {
    pub tx: mpsc::UnboundedSender<RunnerCmd>,
    pub join: tokio::task::JoinHandle<()>,
}

/// Starts a runner for `task_arn`. `assignment` is `None` for containers found on the engine
/// whose task the control plane no longer lists (they are only stopped and cleaned up);
/// `adopted` are containers that already exist for the task; `stop_reason` stops the task at
/// once.
pub fn spawn_runner(
    env: Arc<RunnerEnv>,
    task_arn: String,
    assignment: Option<TaskAssignment>,
    adopted: Vec<ContainerSnapshot>,
    stop_reason: Option<Option<String>>,
) -> RunnerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = Runner::new(env, task_arn, assignment, adopted);
    let join = tokio::spawn(runner.run(rx, stop_reason));
    RunnerHandle { tx, join }
}

/// The STOPPED report for a task that never ran here.
pub fn never_started_report(a: &TaskAssignment) -> SubmitTaskStateChange {
    let mut names: Vec<String> = a
        .task_definition
        .container_definitions
        .iter()
        .filter_map(|c| c.name.clone())
        .collect();
    if names.is_empty() {
        names = a.containers.iter().map(|c| c.name.clone()).collect();
    }
    SubmitTaskStateChange {
        cluster: Some(a.cluster_arn.clone()),
        task: Some(a.task_arn.clone()),
        status: Some(status::STOPPED.into()),
        reason: None,
        containers: Some(
            names
                .into_iter()
                .map(|n| ContainerStateChange {
                    container_name: Some(n),
                    status: Some(status::STOPPED.into()),
                    ..Default::default()
                })
                .collect(),
        ),
        pull_started_at: None,
        pull_stopped_at: None,
        execution_stopped_at: Some(gantry_model::now_epoch()),
    }
}

#[derive(Debug, Default)]
struct Ctr {
    name: String,
    /// The effective definition (overrides applied); `None` for containers adopted without an
    /// assignment.
    def: Option<ContainerDefinition>,
    docker_name: String,
    id: Option<String>,
    created: bool,
    started: bool,
    running: bool,
    /// Will not run (any more): exited, or given up before starting.
    done: bool,
    exit_code: Option<i64>,
    reason: Option<String>,
    health: Option<String>,
    healthy_seen: bool,
    has_healthcheck: bool,
    oom: bool,
    bindings: Vec<NetworkBinding>,
    essential: bool,
    stop_timeout: i64,
    start_timeout: Option<Duration>,
    started_instant: Option<Instant>,
    /// When the agent last started or restarted it: how long it ran when Docker's own
    /// timestamps cannot tell.
    last_start: Option<Instant>,
    finished_at_ns: Option<i64>,
    /// Ships its output; kept so that a restart in place can resume it exactly.
    log_follower: Option<LogFollower>,
    restart_policy: Option<RestartPolicy>,
    /// Times the agent restarted it in place (ECS's per-container restart count).
    restart_count: u32,
    /// It exited and its restart policy restarts it: still RUNNING, not done.
    restart_due: bool,
    /// Dependencies: (container index, condition).
    deps: Vec<(usize, Condition)>,
    /// A dependency that can never be met because the definition is wrong.
    dep_error: Option<String>,
    /// Everything this container must come after (deps, links, volumesFrom), for ordering.
    order_deps: Vec<usize>,
}

impl Ctr {
    fn status(&self) -> &'static str {
        if self.done {
            status::STOPPED
        } else if self.running || self.restart_due {
            status::RUNNING
        } else {
            status::PENDING
        }
    }

    fn dep_view(&self) -> DepView {
        DepView {
            started: self.started,
            stopped: self.done,
            exit_code: self.exit_code,
            has_healthcheck: self.has_healthcheck,
            healthy_seen: self.healthy_seen,
        }
    }
}

/// An awsvpc task's pause container: the holder of its network namespace.
#[derive(Debug, Clone)]
struct PauseCtr {
    id: String,
    running: bool,
}

struct Runner {
    env: Arc<RunnerEnv>,
    task_arn: String,
    cluster_arn: String,
    td: Option<TaskDefinition>,
    overrides: Option<TaskOverride>,
    mode: NetMode,
    /// awsvpc with a network interface from the control plane: the task gets its own network
    /// namespace at this address.
    eni: Option<TaskNetworkInterface>,
    /// Whether a pause container holds that namespace and the task's containers join it
    /// ([`awsvpc::needs_pause_container`]: several containers, or a pause container adopted);
    /// otherwise the task's one container holds it itself.
    uses_pause: bool,
    /// The task's pause container, once created (or adopted).
    pause: Option<PauseCtr>,
    ctrs: Vec<Ctr>,
    volumes: Vec<PlannedVolume>,
    /// Adopted containers of this task that match no container definition.
    extra_ids: Vec<String>,
    stopping: bool,
    stopped: bool,
    stop_reason: Option<String>,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    execution_stopped_at: Option<f64>,
    stopped_at: Option<SystemTime>,
    last_report: Option<SubmitTaskStateChange>,
    deferred: VecDeque<RunnerCmd>,
    /// Docker refused to stop a container: try again at this time.
    stop_retry_at: Option<Instant>,
    cleanup_now: bool,
    /// The task's secrets, resolved before its images are pulled (memory only).
    secrets: ResolvedSecrets,
    /// What the task's endpoints will serve of its assignment, until they are opened.
    endpoint_task: Option<TaskDescription>,
    /// The task's credentials and metadata endpoints, once opened.
    endpoints: Option<TaskLease>,
}

/// Why the runner's loop ended early.
enum Exit {
    /// The supervisor dropped the runner (agent shutdown): leave everything as it is.
    Abandoned,
}

impl Runner {
    fn new(
        env: Arc<RunnerEnv>,
        task_arn: String,
        assignment: Option<TaskAssignment>,
        adopted: Vec<ContainerSnapshot>,
    ) -> Runner {
        let task_id = spec::task_id(&task_arn).to_string();
        let mut ctrs = Vec::new();
        let endpoint_task = env
            .task_endpoints
            .as_ref()
            .zip(assignment.as_ref())
            .map(|(e, a)| e.describe(a));
        let (td, overrides, cluster_arn, eni) = match assignment {
            Some(a) => (
                Some(a.task_definition),
                a.overrides,
                a.cluster_arn,
                a.network_interface,
            ),
            None => {
                let cluster = adopted
                    .iter()
                    .find_map(|s| s.label(labels::CLUSTER).map(str::to_string))
                    .unwrap_or_default();
                (None, None, cluster, None)
            }
        };
        let mode = td.as_ref().map(NetMode::of).unwrap_or(NetMode::Bridge);
        // Without an interface an awsvpc task runs like a bridge task (see NetMode::AwsVpc).
        let eni = eni.filter(|_| mode == NetMode::AwsVpc);
        let uses_pause = eni.is_some() && td.as_ref().is_some_and(awsvpc::needs_pause_container);
        let mut volumes = Vec::new();
        if let Some(td) = &td {
            volumes = plan_volumes(td, &task_id);
            let revision = td.revision.unwrap_or(0);
            for def in &td.container_definitions {
                let def = effective_definition(def, overrides.as_ref());
                let name = def.name.clone().unwrap_or_default();
                ctrs.push(Ctr {
                    docker_name: spec::container_docker_name(&td.family, revision, &name, &task_id),
                    name,
                    essential: def.essential.unwrap_or(true),
                    stop_timeout: stop_timeout_secs(&def),
                    start_timeout: def
                        .start_timeout
                        .filter(|t| *t > 0)
                        .map(|t| Duration::from_secs(t as u64)),
                    has_healthcheck: def.health_check.is_some(),
                    restart_policy: RestartPolicy::from_definition(
                        &def,
                        env.restart_attempt_period,
                    ),
                    def: Some(def),
                    ..Default::default()
                });
            }
            // Resolve dependencies by name.
            let index: HashMap<String, usize> = ctrs
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
            for c in ctrs.iter_mut() {
                let Some(def) = &c.def else { continue };
                for d in def.depends_on.iter().flatten() {
                    let cond = Condition::parse(&d.condition);
                    match (index.get(&d.container_name), cond) {
                        (Some(&j), Some(cond)) => {
                            c.deps.push((j, cond));
                            c.order_deps.push(j);
                        }
                        (None, _) => {
                            c.dep_error = Some(format!(
                                "depends on {}, which is not in the task",
                                d.container_name
                            ))
                        }
                        (_, None) => {
                            c.dep_error = Some(format!(
                                "unknown dependency condition {} on {}",
                                d.condition, d.container_name
                            ))
                        }
                    }
                }
                if mode == NetMode::Bridge {
                    for l in def.links.iter().flatten() {
                        let target = l.split(':').next().unwrap_or(l);
                        if let Some(&j) = index.get(target) {
                            c.deps.push((j, Condition::Start));
                            c.order_deps.push(j);
                        }
                    }
                }
                for vf in def.volumes_from.iter().flatten() {
                    if let Some(&j) = vf.source_container.as_ref().and_then(|s| index.get(s)) {
                        c.order_deps.push(j);
                    }
                }
            }
        }
        let mut runner = Runner {
            env,
            task_arn,
            cluster_arn,
            td,
            overrides,
            mode,
            eni,
            uses_pause,
            pause: None,
            ctrs,
            volumes,
            extra_ids: Vec::new(),
            stopping: false,
            stopped: false,
            stop_reason: None,
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            last_report: None,
            deferred: VecDeque::new(),
            stop_retry_at: None,
            cleanup_now: false,
            secrets: ResolvedSecrets::default(),
            endpoint_task,
            endpoints: None,
        };
        runner.adopt(adopted);
        runner
    }

    /// Matches existing containers to container definitions (by the container-name label).
    fn adopt(&mut self, adopted: Vec<ContainerSnapshot>) {
        let mut adopted = adopted;
        // Prefer running containers, then the most recently started, when there are duplicates.
        adopted.sort_by_key(|s| (!s.running, std::cmp::Reverse(s.started_at_ns.unwrap_or(0))));
        for snap in adopted {
            if awsvpc::is_pause(&snap) {
                // The task's network namespace: kept, so the task keeps its address. (Also
                // for a one-container task an earlier agent version started with one.)
                self.uses_pause = true;
                if self.pause.is_none() {
                    tracing::info!(task = %self.task_arn, id = %short(&snap.id), status = %snap.status, "adopting the task's pause container");
                    self.pause = Some(PauseCtr {
                        id: snap.id.clone(),
                        running: snap.running,
                    });
                } else {
                    tracing::warn!(task = %self.task_arn, id = %short(&snap.id), "extra pause container for the task; it will be removed");
                    self.extra_ids.push(snap.id.clone());
                }
                continue;
            }
            if snap
                .network_mode
                .as_deref()
                .is_some_and(|m| m.starts_with("container:"))
                && self.eni.is_some()
            {
                // Created to join a pause container (which may be gone: then the task stops).
                self.uses_pause = true;
            }
            let name = snap.label(labels::CONTAINER_NAME).unwrap_or("").to_string();
            let idx = if self.td.is_some() {
                self.ctrs
                    .iter()
                    .position(|c| c.name == name && c.id.is_none())
            } else if self.ctrs.iter().any(|c| c.name == name) {
                None
            } else {
                self.ctrs.push(Ctr {
                    docker_name: snap.name.clone(),
                    name: name.clone(),
                    has_healthcheck: snap.has_healthcheck,
                    stop_timeout: snap.stop_timeout.unwrap_or(spec::DEFAULT_STOP_TIMEOUT_SECS),
                    ..Default::default()
                });
                Some(self.ctrs.len() - 1)
            };
            match idx {
                Some(i) => {
                    tracing::info!(task = %self.task_arn, container = %name, id = %short(&snap.id), status = %snap.status, "adopting existing container");
                    self.ctrs[i].id = Some(snap.id.clone());
                    self.ctrs[i].created = true;
                    self.apply_snapshot(i, &snap);
                }
                None => {
                    tracing::warn!(task = %self.task_arn, container = %name, id = %short(&snap.id), "extra container for the task; it will be removed");
                    self.extra_ids.push(snap.id.clone());
                }
            }
        }
    }

    /// Takes in what `inspect` says about container `i`.
    fn apply_snapshot(&mut self, i: usize, snap: &ContainerSnapshot) {
        let mode = self.mode;
        let stopping = self.stopping;
        // In the task's own namespace (awsvpc) a container publishes no ports: the task is
        // reached at its address, which the control plane reports.
        let own_namespace = self.eni.is_some()
            || snap
                .network_mode
                .as_deref()
                .is_some_and(|m| m.starts_with("container:"));
        let c = &mut self.ctrs[i];
        c.has_healthcheck = c.has_healthcheck || snap.has_healthcheck;
        if let Some(h) = &snap.health {
            c.healthy_seen |= h == "healthy";
            c.health = Some(h.clone());
        }
        if snap.oom_killed {
            c.oom = true;
        }
        if snap.started && !c.started {
            c.started = true;
            c.started_instant = Some(Instant::now());
            c.last_start.get_or_insert_with(Instant::now);
        }
        if snap.running {
            c.running = true;
            let nb = if own_namespace {
                Vec::new()
            } else {
                network_bindings(mode, c.def.as_ref(), snap.ports.as_ref())
            };
            if !nb.is_empty() {
                c.bindings = nb;
            }
        } else if c.running || (snap.started && !c.done) {
            // It ran and is not running any more: it exited.
            c.running = false;
            if !c.done && !c.restart_due {
                c.exit_code = snap.exit_code;
                c.finished_at_ns = snap.finished_at_ns;
                // Docker's timestamps measure the run that ended even for a container adopted
                // from an earlier agent run; the agent's own clock is the fallback.
                let ran_for = run_duration(snap).or_else(|| c.last_start.map(|t| t.elapsed()));
                let decision =
                    restart::decide(c.restart_policy.as_ref(), snap.exit_code, ran_for, stopping);
                match decision {
                    Decision::Restart => {
                        c.restart_due = true;
                        tracing::info!(task = %self.task_arn, container = %c.name, exit_code = ?c.exit_code, ran_for = ?ran_for, restart_count = c.restart_count, "container exited; restarting it in place (restartPolicy)");
                    }
                    Decision::Keep(why) => {
                        c.done = true;
                        if c.oom {
                            c.reason.get_or_insert_with(|| REASON_OOM.to_string());
                        } else if let Some(err) = &snap.error {
                            c.reason.get_or_insert_with(|| err.clone());
                        }
                        if c.restart_policy.as_ref().is_some_and(|p| p.enabled) {
                            tracing::info!(task = %self.task_arn, container = %c.name, exit_code = ?c.exit_code, ran_for = ?ran_for, restart_count = c.restart_count, why = why.as_str(), "container exited; not restarted");
                        } else {
                            tracing::info!(task = %self.task_arn, container = %c.name, exit_code = ?c.exit_code, "container exited");
                        }
                    }
                }
            }
        }
    }

    fn find_by_id(&self, id: &str) -> Option<usize> {
        self.ctrs.iter().position(|c| c.id.as_deref() == Some(id))
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<RunnerCmd>,
        initial_stop: Option<Option<String>>,
    ) {
        if let Some(reason) = initial_stop {
            self.begin_stop(reason);
        }
        // Adopted containers: their snapshots may predate events that went nowhere before
        // this runner existed. From here on, events reach the runner, so inspect afresh.
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].created {
                self.refresh(i).await;
            }
        }
        self.refresh_pause().await;
        for i in 0..self.ctrs.len() {
            self.follow_logs(i, true);
        }
        self.open_task_endpoints().await;
        if !self.stopping && self.ctrs.iter().any(|c| !c.created && !c.done) {
            // Reports PENDING with pullStartedAt first thing.
            if let Err(Exit::Abandoned) = self.prepare(&mut rx).await {
                return;
            }
        } else {
            // Adopted (or stopping at once): report the state found.
            self.report();
        }
        if let Err(Exit::Abandoned) = self.main_loop(&mut rx).await {
            return;
        }
        if let Err(Exit::Abandoned) = self.wait_for_cleanup(&mut rx).await {
            return;
        }
        self.cleanup().await;
        let _ = self.env.notices.send(RunnerNotice::Done {
            task_arn: self.task_arn.clone(),
            final_report: self.last_report.clone(),
        });
    }

    /// Opens the task's credentials and metadata endpoints before any container is created
    /// (for a task adopted from an earlier run too: its ids are the same). A role ECS cannot
    /// assume stops a new task with ECS's reason.
    async fn open_task_endpoints(&mut self) {
        let (Some(endpoints), Some(task)) =
            (self.env.task_endpoints.clone(), self.endpoint_task.take())
        else {
            return;
        };
        if self.stopping {
            return;
        }
        match endpoints.open(task).await {
            Ok(lease) => self.endpoints = Some(lease),
            Err(reason) if self.ctrs.iter().any(|c| c.created) => {
                tracing::warn!(task = %self.task_arn, "cannot serve the adopted task's endpoints: {reason}");
            }
            Err(reason) => {
                tracing::warn!(task = %self.task_arn, "{reason}");
                self.fail_pending(&reason);
                self.begin_stop(Some(reason));
            }
        }
    }

    /// What the agent adds to container `name`'s environment.
    fn injected_environment(&self, name: &str) -> InjectedEnvironment {
        let mut env = InjectedEnvironment::default();
        if let Some(lease) = &self.endpoints {
            env.merge(lease.environment(name));
        }
        // The container's secrets last: a secret named like an endpoint variable is the
        // user's choice.
        for secret in self.secrets.environment(name) {
            env.set(secret.name.as_str(), secret.value.as_str());
        }
        env
    }

    /// Pull images, create volumes, create containers.
    async fn prepare(&mut self, rx: &mut mpsc::UnboundedReceiver<RunnerCmd>) -> Result<(), Exit> {
        self.pull_started_at = Some(gantry_model::now_epoch());
        self.report();
        if let Err(reason) = self.resolve_secrets(rx).await? {
            tracing::warn!(task = %self.task_arn, "{reason}");
            self.pull_stopped_at = Some(gantry_model::now_epoch());
            self.fail_pending(&reason);
            self.begin_stop(Some(reason));
            return Ok(());
        }
        if self.stopping {
            return Ok(());
        }
        // Each image once, with the registry credentials of the first container that names
        // it.
        let mut images: Vec<(String, Option<RegistryAuth>)> = Vec::new();
        for c in self.ctrs.iter().filter(|c| !c.created && !c.done) {
            if let Some(img) = c.def.as_ref().and_then(|d| d.image.clone()) {
                if !images.iter().any(|(i, _)| *i == img) {
                    let auth = self.secrets.registry_auth(&c.name).cloned();
                    images.push((img, auth));
                }
            }
        }
        let docker = self.env.docker.clone();
        let task = self.task_arn.clone();
        let pull = async move {
            for (img, auth) in images {
                match docker.ensure_image_with(&img, auth.as_ref()).await {
                    Ok(true) => tracing::info!(task = %task, image = %img, "pulled image"),
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        // awsvpc: the subnet's network (and the pause image, when the task uses a pause
        // container), while the images are pulled.
        let net_setup = {
            let docker = self.env.docker.clone();
            let pause_image = self.uses_pause.then(|| self.env.pause_image.clone());
            let eni = self.eni.clone();
            async move {
                let Some(eni) = eni else { return Ok(()) };
                let image = async {
                    match &pause_image {
                        Some(p) => p.ensure(&docker).await,
                        None => Ok(()),
                    }
                };
                let (image, network) =
                    tokio::join!(image, awsvpc::ensure_subnet_network(&docker, &eni));
                image.map_err(|e| {
                    awsvpc::setup_failure(
                        &eni,
                        &format!("cannot prepare the pause image {PAUSE_IMAGE}: {e}"),
                    )
                })?;
                network
            }
        };
        let work = async { tokio::join!(pull, net_setup) };
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break Some(r),
                cmd = rx.recv() => match cmd {
                    None => return Err(Exit::Abandoned),
                    Some(cmd) if is_stop(&cmd) => {
                        self.handle(cmd).await;
                        break None;
                    }
                    Some(cmd) => self.deferred.push_back(cmd),
                }
            }
        };
        self.pull_stopped_at = Some(gantry_model::now_epoch());
        match result {
            None => return Ok(()),
            Some((Err(e), _)) => {
                let reason = format!("CannotPullContainerError: {e}");
                tracing::warn!(task = %self.task_arn, "{reason}");
                self.fail_pending(&reason);
                self.begin_stop(Some(reason));
                return Ok(());
            }
            Some((Ok(()), Err(reason))) => {
                tracing::warn!(task = %self.task_arn, "{reason}");
                self.fail_pending(&reason);
                self.begin_stop(Some(reason));
                return Ok(());
            }
            Some((Ok(()), Ok(()))) => {}
        }
        self.report();
        if let Err(reason) = self.create_volumes().await {
            tracing::warn!(task = %self.task_arn, "{reason}");
            self.fail_pending(&reason);
            self.begin_stop(Some(reason));
            return Ok(());
        }
        if self.uses_pause {
            if let Err(reason) = self.create_pause().await {
                tracing::warn!(task = %self.task_arn, "{reason}");
                self.fail_pending(&reason);
                self.begin_stop(Some(reason));
                return Ok(());
            }
            // Start the pause container while the task's containers are created: they need
            // it to exist when created (it is their network mode) and to run when started.
            let to_start = self
                .pause
                .as_ref()
                .filter(|p| !p.running)
                .map(|p| p.id.clone());
            let docker = self.env.docker.clone();
            let start_pause = async move {
                match to_start {
                    Some(id) => docker.start_container(&id).await.map(|()| true),
                    None => Ok(false),
                }
            };
            let (started, ()) = tokio::join!(start_pause, self.create_containers());
            match started {
                Ok(true) => {
                    if let Some(p) = &mut self.pause {
                        p.running = true;
                        tracing::info!(task = %self.task_arn, id = %short(&p.id), "started the task's pause container");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    let reason = self.pause_failure("start", &e.to_string());
                    tracing::warn!(task = %self.task_arn, "{reason}");
                    self.fail_unstarted(&reason);
                    self.begin_stop(Some(reason));
                }
            }
        } else {
            self.create_containers().await;
        }
        self.report();
        Ok(())
    }

    /// Resolves the task's secrets when it has any (`Ok(Err(reason))`: the task cannot
    /// start). A stop that arrives meanwhile is handled and ends the wait.
    async fn resolve_secrets(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<RunnerCmd>,
    ) -> Result<Result<(), String>, Exit> {
        let needed = self
            .td
            .as_ref()
            .is_some_and(gantry_model::agent_protocol::needs_secrets);
        if !needed {
            return Ok(Ok(()));
        }
        let Some(source) = self.env.task_secrets.clone() else {
            return Ok(Err(format!(
                "{}: unable to pull secrets or registry auth: this agent has no control plane to resolve secrets with",
                gantry_model::agent_protocol::RESOURCE_INITIALIZATION_ERROR
            )));
        };
        let task = self.task_arn.clone();
        let work = async move { crate::secrets::resolve(&*source, &task).await };
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => {
                    return Ok(r.map(|resolved| self.secrets = resolved));
                }
                cmd = rx.recv() => match cmd {
                    None => return Err(Exit::Abandoned),
                    Some(cmd) if is_stop(&cmd) => {
                        self.handle(cmd).await;
                        return Ok(Ok(()));
                    }
                    Some(cmd) => self.deferred.push_back(cmd),
                }
            }
        }
    }

    /// A stop reason for a pause container Docker refused to `what` (create, start).
    fn pause_failure(&self, what: &str, error: &str) -> String {
        match &self.eni {
            Some(eni) => awsvpc::setup_failure(
                eni,
                &format!(
                    "cannot {what} the task's network namespace (its pause container) at {}: {error}",
                    eni.private_ipv4_address
                ),
            ),
            None => format!("ResourceInitializationError: cannot {what} the task's pause container: {error}"),
        }
    }

    /// Creates the task's pause container on the subnet's network at the task's address,
    /// unless it already has one (adopted, or left by an earlier attempt).
    async fn create_pause(&mut self) -> Result<(), String> {
        if self.pause.is_some() {
            return Ok(());
        }
        let (Some(td), Some(eni)) = (&self.td, &self.eni) else {
            return Ok(());
        };
        let ctx = TaskContext {
            task_arn: &self.task_arn,
            cluster_arn: &self.cluster_arn,
            instance_arn: &self.env.instance_arn,
            task_definition: td,
            overrides: self.overrides.as_ref(),
            volumes: &self.volumes,
        };
        let spec = awsvpc::pause_create_spec(&ctx, eni);
        let docker = &self.env.docker;
        let pause = match docker
            .create_container_with_mac(&spec, &eni.mac_address)
            .await
        {
            Ok(id) => PauseCtr { id, running: false },
            Err(DockerError::Conflict(msg)) => match docker.inspect_container(&spec.name).await {
                // Left by an earlier attempt for this same task: use it.
                Ok(existing)
                    if existing.label(labels::TASK_ARN) == Some(self.task_arn.as_str())
                        && awsvpc::is_pause(&existing) =>
                {
                    PauseCtr {
                        id: existing.id,
                        running: existing.running,
                    }
                }
                _ => return Err(self.pause_failure("create", &msg)),
            },
            Err(e) => return Err(self.pause_failure("create", &e.to_string())),
        };
        tracing::info!(task = %self.task_arn, id = %short(&pause.id), name = %spec.name, ip = %eni.private_ipv4_address, network = %gantry_model::agent_protocol::subnet_network_name(&eni.subnet_id), "created the task's pause container");
        self.pause = Some(pause);
        Ok(())
    }

    /// Re-inspects the pause container.
    async fn refresh_pause(&mut self) {
        let Some(id) = self.pause.as_ref().map(|p| p.id.clone()) else {
            return;
        };
        let running = match self.env.docker.inspect_container(&id).await {
            Ok(snap) => snap.running,
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                tracing::warn!(task = %self.task_arn, id = %short(&id), "cannot inspect the pause container: {e}");
                return;
            }
        };
        if let Some(p) = &mut self.pause {
            if p.running && !running && !self.stopping {
                tracing::warn!(task = %self.task_arn, id = %short(&id), "the task's pause container is not running any more");
            }
            p.running = running;
        }
    }

    /// Starts the pause container if it is not running.
    async fn ensure_pause_running(&mut self) -> Result<(), String> {
        let Some(id) = self
            .pause
            .as_ref()
            .filter(|p| !p.running)
            .map(|p| p.id.clone())
        else {
            return Ok(());
        };
        let docker = &self.env.docker;
        if let Err(e) = docker.start_container(&id).await {
            // (Already running after all is fine.)
            if !docker.inspect_container(&id).await.is_ok_and(|s| s.running) {
                return Err(self.pause_failure("start", &e.to_string()));
            }
        }
        tracing::info!(task = %self.task_arn, id = %short(&id), "started the task's pause container");
        if let Some(p) = &mut self.pause {
            p.running = true;
        }
        Ok(())
    }

    /// An awsvpc task whose containers run without their network namespace holder.
    fn pause_lost(&self) -> bool {
        if !self.uses_pause {
            return false;
        }
        let live = self
            .ctrs
            .iter()
            .any(|c| (c.started && !c.done) || c.restart_due);
        live && !self.pause.as_ref().is_some_and(|p| p.running)
    }

    /// Frees the task's address once its containers have stopped: by removing its pause
    /// container, or, when its one container holds the address itself, by making sure that
    /// container gave it back.
    async fn release_task_address(&mut self) -> Result<(), DockerError> {
        if self.uses_pause {
            return self.remove_pause().await;
        }
        let Some(eni) = &self.eni else { return Ok(()) };
        // Docker gives a container's address back when it stops (its endpoint leaves the
        // network; the stopped container keeps only its configuration, and a new container
        // may take the address while it exists, as checked on Docker 20.10). Checked anyway,
        // since the control plane reuses the address at once: one that still holds it (say, a
        // start Docker reported as failed that went through) is disconnected.
        let network = gantry_model::agent_protocol::subnet_network_name(&eni.subnet_id);
        let docker = self.env.docker.clone();
        for id in self.ctrs.iter().filter_map(|c| c.id.as_deref()) {
            let holds = match docker.inspect_container(id).await {
                Ok(snap) => snap.ipv4_addresses.contains_key(&network),
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(e),
            };
            if holds {
                match docker.disconnect_network(&network, id).await {
                    Ok(()) => {
                        tracing::info!(task = %self.task_arn, id = %short(id), network = %network, "disconnected the task's container from its subnet; its address is free")
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Removes the task's pause container (force: its PID 1 ignores SIGTERM), and any other
    /// pause container labelled with the task, so that the task's address is free.
    async fn remove_pause(&mut self) -> Result<(), DockerError> {
        let docker = self.env.docker.clone();
        let mut ids: Vec<String> = self.pause.iter().map(|p| p.id.clone()).collect();
        if self.eni.is_some() {
            // One whose create answer was lost would hold the address too.
            let found = docker
                .list_container_ids(&[
                    format!("{}={}", labels::TASK_ARN, self.task_arn),
                    format!("{}=true", labels::PAUSE),
                ])
                .await?;
            for id in found {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        for id in &ids {
            match docker.remove_container(id).await {
                Ok(()) => {
                    tracing::info!(task = %self.task_arn, id = %short(id), "removed the task's pause container; its address is free")
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.pause = None;
        Ok(())
    }

    /// Marks every container not created yet as given up, with `reason`.
    fn fail_pending(&mut self, reason: &str) {
        for c in self.ctrs.iter_mut().filter(|c| !c.created && !c.done) {
            c.done = true;
            c.reason = Some(reason.to_string());
        }
    }

    /// Marks every container not started yet as given up, with `reason`.
    fn fail_unstarted(&mut self, reason: &str) {
        for c in self.ctrs.iter_mut().filter(|c| !c.started && !c.done) {
            c.done = true;
            c.reason = Some(reason.to_string());
        }
    }

    async fn create_volumes(&mut self) -> Result<(), String> {
        let docker = &self.env.docker;
        for v in &self.volumes {
            let VolumeSource::Docker {
                docker_name,
                task_scoped,
                autoprovision,
                driver,
                driver_opts,
                labels: user_labels,
            } = &v.source
            else {
                continue;
            };
            let exists = docker
                .volume_exists(docker_name)
                .await
                .map_err(|e| format!("CannotCreateContainerError: volume {docker_name}: {e}"))?;
            if exists {
                continue;
            }
            if !*task_scoped && !*autoprovision {
                return Err(format!(
                    "CannotCreateContainerError: shared volume {docker_name} does not exist and autoprovision is off"
                ));
            }
            let mut vl: HashMap<String, String> = user_labels.clone().into_iter().collect();
            if *task_scoped {
                vl.insert(spec::VOLUME_TASK_LABEL.into(), self.task_arn.clone());
                vl.insert(labels::INSTANCE_ARN.into(), self.env.instance_arn.clone());
            }
            docker
                .create_volume(docker_name, driver.as_deref(), driver_opts, vl)
                .await
                .map_err(|e| format!("CannotCreateContainerError: volume {docker_name}: {e}"))?;
            tracing::info!(task = %self.task_arn, volume = %docker_name, "created volume");
        }
        Ok(())
    }

    async fn create_containers(&mut self) {
        let Some(td) = self.td.clone() else { return };
        let order_deps: Vec<Vec<usize>> = self.ctrs.iter().map(|c| c.order_deps.clone()).collect();
        for i in deps::creation_order(&order_deps) {
            if self.ctrs[i].created || self.ctrs[i].done {
                continue;
            }
            let Some(def) = self.ctrs[i].def.clone() else {
                continue;
            };
            let ctx = TaskContext {
                task_arn: &self.task_arn,
                cluster_arn: &self.cluster_arn,
                instance_arn: &self.env.instance_arn,
                task_definition: &td,
                overrides: self.overrides.as_ref(),
                volumes: &self.volumes,
            };
            let injected = self.injected_environment(&self.ctrs[i].name);
            let spec = build_create_spec_with(&ctx, &def, &injected).map(|mut s| {
                let dropped = match (&self.eni, &self.pause) {
                    (None, _) => Vec::new(),
                    (Some(eni), _) if !self.uses_pause => awsvpc::own_task_namespace(&mut s, eni),
                    (Some(_), Some(p)) => awsvpc::join_task_namespace(&mut s, &p.id),
                    // (Not reached: the pause container is created before the containers.)
                    (Some(_), None) => Vec::new(),
                };
                if !dropped.is_empty() {
                    tracing::info!(task = %self.task_arn, container = %self.ctrs[i].name, "awsvpc: the task's network namespace decides these; ignored: {}", dropped.join(", "));
                }
                s
            });
            // The container that holds the task's namespace itself needs its MAC address set
            // the way the pause container's is.
            let mac = match &self.eni {
                Some(eni) if !self.uses_pause => eni.mac_address.as_str(),
                _ => "",
            };
            let result = match spec {
                Ok(s) => self.create_one(&s, mac).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(id) => {
                    tracing::info!(task = %self.task_arn, container = %self.ctrs[i].name, docker_name = %self.ctrs[i].docker_name, id = %short(&id), "created container");
                    self.ctrs[i].id = Some(id);
                    self.ctrs[i].created = true;
                }
                Err(e) => {
                    let reason = format!("CannotCreateContainerError: {e}");
                    tracing::warn!(task = %self.task_arn, container = %self.ctrs[i].name, "{reason}");
                    self.ctrs[i].done = true;
                    self.ctrs[i].reason = Some(reason.clone());
                    self.begin_stop(Some(reason));
                    return;
                }
            }
        }
    }

    /// `docker create` (with `mac` as its MAC address, unless empty); a name conflict with a
    /// container of this same task (left by an earlier attempt) reuses that container.
    async fn create_one(&self, s: &spec::CreateSpec, mac: &str) -> Result<String, String> {
        let docker = &self.env.docker;
        match docker.create_container_with_mac(s, mac).await {
            Ok(id) => Ok(id),
            Err(DockerError::Conflict(msg)) => match docker.inspect_container(&s.name).await {
                Ok(existing)
                    if existing.label(labels::TASK_ARN) == Some(self.task_arn.as_str())
                        && !existing.started =>
                {
                    Ok(existing.id)
                }
                _ => Err(msg),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    async fn main_loop(&mut self, rx: &mut mpsc::UnboundedReceiver<RunnerCmd>) -> Result<(), Exit> {
        loop {
            while let Some(cmd) = self.deferred.pop_front() {
                self.handle(cmd).await;
            }
            self.advance().await;
            if self.stopped {
                return Ok(());
            }
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return Err(Exit::Abandoned),
                    Some(cmd) => self.handle(cmd).await,
                },
                _ = crate::util::sleep_until_opt(deadline), if deadline.is_some() => {}
            }
        }
    }

    async fn handle(&mut self, cmd: RunnerCmd) {
        match cmd {
            RunnerCmd::Desired(a) => {
                if a.desired_status == status::STOPPED {
                    self.begin_stop(None);
                } else if self.stopped {
                    // The control plane still expects it to run: it has not taken in our
                    // STOPPED report yet. Say it again.
                    self.resend_report();
                }
            }
            RunnerCmd::Stop { reason } => self.begin_stop(reason),
            RunnerCmd::Event(ev) => self.on_event(ev).await,
            RunnerCmd::Resync => self.resync().await,
            RunnerCmd::CleanupNow => self.cleanup_now = true,
        }
    }

    async fn on_event(&mut self, ev: ContainerEvent) {
        if self.pause.as_ref().is_some_and(|p| p.id == ev.id) {
            if matches!(
                ev.kind,
                EventKind::Die | EventKind::Start | EventKind::Destroy
            ) {
                self.refresh_pause().await;
            }
            return;
        }
        let Some(i) = self.find_by_id(&ev.id) else {
            return;
        };
        match ev.kind {
            EventKind::Die | EventKind::Start => self.refresh(i).await,
            EventKind::Oom => {
                // Docker's own record decides: an event that arrives late may belong to a run
                // that has since been restarted in place (a new run starts with the mark
                // cleared).
                let oom_killed = match self.ctrs[i].id.clone() {
                    Some(id) => self
                        .env
                        .docker
                        .inspect_container(&id)
                        .await
                        .map_or(true, |snap| snap.oom_killed),
                    None => true,
                };
                let c = &mut self.ctrs[i];
                if oom_killed {
                    c.oom = true;
                    // The notice came after the exit was handled: the reason, if none yet.
                    if c.done && c.reason.is_none() {
                        c.reason = Some(REASON_OOM.to_string());
                    }
                }
            }
            EventKind::Health(h) => {
                let c = &mut self.ctrs[i];
                c.healthy_seen |= h == "healthy";
                c.health = Some(h);
            }
            EventKind::Destroy => {
                let c = &mut self.ctrs[i];
                if !c.done {
                    c.done = true;
                    c.running = false;
                    c.reason.get_or_insert_with(|| "Container removed".into());
                }
            }
            EventKind::Other(_) => {}
        }
    }

    /// Re-inspects container `i` and takes in its state.
    async fn refresh(&mut self, i: usize) {
        let Some(id) = self.ctrs[i].id.clone() else {
            return;
        };
        match self.env.docker.inspect_container(&id).await {
            Ok(snap) => {
                let was_done = self.ctrs[i].done;
                self.apply_snapshot(i, &snap);
                let c = &self.ctrs[i];
                // Docker marks a container killed for memory when it handles the kernel's OOM
                // notice, which may come just after the exit: a container that died of
                // SIGKILL (137) the agent did not send is asked again, once, before its
                // reason is final.
                // Only for an exit just now (not one found when adopting old containers).
                let just_now = snap.finished_at_ns.is_some_and(|ns| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64);
                    now.saturating_sub(ns) < 5_000_000_000
                });
                let unexplained_kill = !was_done
                    && c.done
                    && !c.oom
                    && c.reason.is_none()
                    && snap.exit_code == Some(137)
                    && just_now
                    && !self.stopping;
                if unexplained_kill {
                    tokio::time::sleep(LATE_OOM_NOTICE).await;
                    if let Ok(again) = self.env.docker.inspect_container(&id).await {
                        if again.oom_killed {
                            let c = &mut self.ctrs[i];
                            c.oom = true;
                            c.reason = Some(REASON_OOM.to_string());
                        }
                    }
                }
            }
            Err(e) if e.is_not_found() => {
                let c = &mut self.ctrs[i];
                if !c.done {
                    c.done = true;
                    c.running = false;
                    c.reason.get_or_insert_with(|| "Container removed".into());
                }
            }
            Err(e) => {
                tracing::warn!(task = %self.task_arn, container = %self.ctrs[i].name, "cannot inspect container: {e}")
            }
        }
    }

    async fn resync(&mut self) {
        if self.stopped {
            return;
        }
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].created && !self.ctrs[i].done {
                self.refresh(i).await;
            }
        }
        self.refresh_pause().await;
    }

    fn begin_stop(&mut self, reason: Option<String>) {
        if self.stopped {
            return;
        }
        if !self.stopping {
            tracing::info!(task = %self.task_arn, reason = ?reason, "stopping task");
            self.stopping = true;
        }
        if self.stop_reason.is_none() {
            self.stop_reason = reason;
        }
    }

    /// Moves the task forward as far as it can go now.
    async fn advance(&mut self) {
        loop {
            if self.stopping {
                self.do_stop().await;
                break;
            }
            if self.pause_lost() {
                tracing::warn!(task = %self.task_arn, "{}", awsvpc::REASON_PAUSE_EXITED);
                self.begin_stop(Some(awsvpc::REASON_PAUSE_EXITED.into()));
                continue;
            }
            if let Some(c) = self.ctrs.iter().find(|c| c.essential && c.done) {
                let reason = if c.started {
                    REASON_ESSENTIAL_EXITED.to_string()
                } else {
                    c.reason
                        .clone()
                        .unwrap_or_else(|| REASON_ESSENTIAL_EXITED.to_string())
                };
                self.begin_stop(Some(reason));
                continue;
            }
            // After the essential check: a container due for a restart is not restarted only
            // to be stopped with its task at once.
            if self.ctrs.iter().any(|c| c.restart_due) {
                self.restart_exited().await;
                continue;
            }
            let mut ready = Vec::new();
            let mut failure = None;
            for i in 0..self.ctrs.len() {
                let c = &self.ctrs[i];
                if !c.created || c.started || c.done {
                    continue;
                }
                match self.dependency_outcome(i) {
                    DepOutcome::Satisfied => ready.push(i),
                    DepOutcome::Waiting => {}
                    DepOutcome::Failed(why) => {
                        failure = Some((i, why));
                        break;
                    }
                }
            }
            if let Some((i, why)) = failure {
                let name = self.ctrs[i].name.clone();
                let reason = format!("DependencyError: container {name} cannot start: {why}");
                tracing::warn!(task = %self.task_arn, "{reason}");
                self.ctrs[i].done = true;
                self.ctrs[i].reason = Some(reason.clone());
                self.begin_stop(Some(reason));
                continue;
            }
            if ready.is_empty() {
                if !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.done) {
                    self.begin_stop(Some("All containers in task exited".into()));
                    continue;
                }
                break;
            }
            self.start_containers(ready).await;
        }
        self.report();
    }

    fn dependency_outcome(&self, i: usize) -> DepOutcome {
        let c = &self.ctrs[i];
        if let Some(e) = &c.dep_error {
            return DepOutcome::Failed(e.clone());
        }
        let mut waiting = false;
        for &(j, cond) in &c.deps {
            let d = &self.ctrs[j];
            match deps::evaluate(cond, &d.name, &d.dep_view()) {
                DepOutcome::Satisfied => {}
                DepOutcome::Failed(why) => {
                    return DepOutcome::Failed(format!(
                        "dependency {} ({}): {why}",
                        d.name,
                        cond.as_str()
                    ))
                }
                DepOutcome::Waiting => {
                    if let (Some(t), Some(since)) = (d.start_timeout, d.started_instant) {
                        if since.elapsed() >= t {
                            return DepOutcome::Failed(format!(
                                "dependency {} did not reach {} within its startTimeout of {}s",
                                d.name,
                                cond.as_str(),
                                t.as_secs()
                            ));
                        }
                    }
                    waiting = true;
                }
            }
        }
        if waiting {
            DepOutcome::Waiting
        } else {
            DepOutcome::Satisfied
        }
    }

    /// When the loop must wake up without a command: a dependency's startTimeout, or a retry
    /// of a failed stop.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.stop_retry_at;
        for c in &self.ctrs {
            if !c.created || c.started || c.done {
                continue;
            }
            for &(j, cond) in &c.deps {
                let d = &self.ctrs[j];
                // A satisfied dependency's timeout no longer matters; counting it would wake
                // the loop continuously once it has passed.
                if !matches!(
                    deps::evaluate(cond, &d.name, &d.dep_view()),
                    DepOutcome::Waiting
                ) {
                    continue;
                }
                if let Some(at) = d
                    .start_timeout
                    .zip(d.started_instant)
                    .and_then(|(t, since)| since.checked_add(t))
                {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        next
    }

    /// Starts the given containers concurrently.
    async fn start_containers(&mut self, ready: Vec<usize>) {
        // Joined containers start only in a running namespace (an adopted task may have been
        // left with its pause container created but not started).
        if let Err(reason) = self.ensure_pause_running().await {
            tracing::warn!(task = %self.task_arn, "{reason}");
            self.fail_unstarted(&reason);
            self.begin_stop(Some(reason));
            self.report();
            return;
        }
        let docker = self.env.docker.clone();
        let task_id = spec::task_id(&self.task_arn).to_string();
        let jobs = ready.iter().map(|&i| {
            let id = self.ctrs[i].id.clone().unwrap_or_default();
            let docker = docker.clone();
            // The awslogs driver's stream, as Docker would create it when the container starts.
            let stream = match (&self.env.log_streams, &self.td) {
                (Some(streams), Some(td)) => {
                    awslogs_stream(td, &self.ctrs[i].name, &task_id).map(|s| (streams.clone(), s))
                }
                _ => None,
            };
            async move {
                if let Some((streams, stream)) = stream {
                    if let Err(reason) = open_stream(streams.as_ref(), stream).await {
                        return (i, Err(reason));
                    }
                }
                let r = async {
                    docker.start_container(&id).await?;
                    docker.inspect_container(&id).await
                }
                .await
                .map_err(|e| format!("CannotStartContainerError: {e}"));
                (i, r)
            }
        });
        let results = join_all(jobs).await;
        for (i, r) in results {
            match r {
                Ok(snap) => {
                    {
                        let c = &mut self.ctrs[i];
                        c.started = true;
                        c.started_instant = Some(Instant::now());
                        c.last_start = Some(Instant::now());
                        tracing::info!(task = %self.task_arn, container = %c.name, id = %short(&snap.id), "started container");
                    }
                    self.apply_snapshot(i, &snap);
                    // A container that exits before inspect still gets a state.
                    let c = &mut self.ctrs[i];
                    if !snap.running && !c.done && !c.restart_due {
                        c.done = true;
                        c.exit_code = snap.exit_code;
                        c.finished_at_ns = snap.finished_at_ns;
                    }
                    self.follow_logs(i, false);
                }
                Err(reason) => {
                    tracing::warn!(task = %self.task_arn, container = %self.ctrs[i].name, "{reason}");
                    let c = &mut self.ctrs[i];
                    c.done = true;
                    c.reason = Some(reason.clone());
                    if c.essential {
                        self.begin_stop(Some(reason));
                    }
                }
            }
        }
        self.report();
    }

    /// Starts again, in place, the containers whose restart policy asked for it.
    async fn restart_exited(&mut self) {
        let due: Vec<usize> = (0..self.ctrs.len())
            .filter(|&i| self.ctrs[i].restart_due)
            .collect();
        for i in due {
            self.ctrs[i].restart_due = false;
            let id = self.ctrs[i].id.clone().unwrap_or_default();
            let docker = self.env.docker.clone();
            let r = async {
                docker.start_container(&id).await?;
                docker.inspect_container(&id).await
            }
            .await;
            match r {
                Ok(snap) => {
                    let c = &mut self.ctrs[i];
                    c.restart_count += 1;
                    c.last_start = Some(Instant::now());
                    // What described the run that ended must not describe the new one.
                    c.exit_code = None;
                    c.finished_at_ns = None;
                    c.reason = None;
                    c.oom = false;
                    tracing::info!(task = %self.task_arn, container = %c.name, id = %short(&id), restart_count = c.restart_count, "restarted container in place (restartPolicy)");
                    self.apply_snapshot(i, &snap);
                    self.refollow_logs(i, snap.started_at_ns).await;
                }
                Err(e) => {
                    // The exit stands, with the reason it could not be undone.
                    let reason = format!("CannotStartContainerError: {e}");
                    tracing::warn!(task = %self.task_arn, container = %self.ctrs[i].name, restart_count = self.ctrs[i].restart_count, "cannot restart container: {reason}");
                    let c = &mut self.ctrs[i];
                    c.done = true;
                    c.reason = Some(reason);
                }
            }
        }
        self.report();
    }

    /// Stops running containers in reverse dependency order (each with its stopTimeout);
    /// marks the task STOPPED once none runs.
    async fn do_stop(&mut self) {
        for c in self.ctrs.iter_mut() {
            if !c.started && !c.done {
                c.done = true;
            }
            // Exited and waiting for its restart: the task is stopping, so it stays down (its
            // exit code is already recorded).
            if c.restart_due {
                c.restart_due = false;
                c.done = true;
            }
        }
        self.report();
        if let Some(at) = self.stop_retry_at {
            if Instant::now() < at {
                return;
            }
            self.stop_retry_at = None;
        }
        let order_deps: Vec<Vec<usize>> = self.ctrs.iter().map(|c| c.order_deps.clone()).collect();
        let alive: Vec<bool> = self.ctrs.iter().map(|c| c.running && !c.done).collect();
        let mut failed = false;
        for wave in deps::stop_waves(&order_deps, &alive) {
            let docker = self.env.docker.clone();
            let jobs = wave.iter().map(|&i| {
                let id = self.ctrs[i].id.clone().unwrap_or_default();
                let timeout = self.ctrs[i].stop_timeout;
                let docker = docker.clone();
                async move {
                    let stop = docker.stop_container(&id, timeout).await;
                    (i, stop, docker.inspect_container(&id).await)
                }
            });
            for (i, stop, snap) in join_all(jobs).await {
                match snap {
                    Ok(snap) => {
                        self.apply_snapshot(i, &snap);
                        if snap.running {
                            failed = true;
                            if let Err(e) = stop {
                                tracing::warn!(task = %self.task_arn, container = %self.ctrs[i].name, "cannot stop container: {e}");
                            }
                        }
                    }
                    Err(e) if e.is_not_found() => {
                        let c = &mut self.ctrs[i];
                        c.running = false;
                        c.done = true;
                        c.reason.get_or_insert_with(|| "Container removed".into());
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(task = %self.task_arn, container = %self.ctrs[i].name, "cannot stop container: {e}");
                    }
                }
            }
            self.report();
        }
        if failed {
            self.stop_retry_at = Some(Instant::now() + Duration::from_secs(5));
            return;
        }
        if self.ctrs.iter().all(|c| c.done) {
            // The address goes before the STOPPED report: the control plane frees the task's
            // address as soon as it sees STOPPED and may give it to a new task at once.
            if let Err(e) = self.release_task_address().await {
                tracing::warn!(task = %self.task_arn, "cannot free the task's address: {e}; retrying");
                self.stop_retry_at = Some(Instant::now() + Duration::from_secs(5));
                return;
            }
            let finished = self.ctrs.iter().filter_map(|c| c.finished_at_ns).max();
            let at_ns = finished.unwrap_or_else(now_ns);
            self.stopped = true;
            self.execution_stopped_at = Some(ns_to_epoch_secs(at_ns));
            self.stopped_at = Some(UNIX_EPOCH + Duration::from_nanos(at_ns.max(0) as u64));
            // Before the STOPPED report goes out: the supervisor must know the task stopped
            // here by the time the control plane drops it from the desired state.
            let _ = self.env.notices.send(RunnerNotice::Stopped {
                task_arn: self.task_arn.clone(),
                at: self.stopped_at.unwrap_or_else(SystemTime::now),
            });
            tracing::info!(task = %self.task_arn, reason = ?self.stop_reason, "task stopped");
        }
    }

    async fn wait_for_cleanup(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<RunnerCmd>,
    ) -> Result<(), Exit> {
        let stopped_at = self.stopped_at.unwrap_or_else(SystemTime::now);
        let _ = self.env.notices.send(RunnerNotice::Stopped {
            task_arn: self.task_arn.clone(),
            at: stopped_at,
        });
        // A cleanup wait too large to represent means "never".
        let deadline = stopped_at
            .checked_add(self.env.cleanup_wait)
            .map(|at| {
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
            .and_then(|wait| Instant::now().checked_add(wait));
        if self.cleanup_now {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = crate::util::sleep_until_opt(deadline) => break,
                cmd = rx.recv() => match cmd {
                    None => return Err(Exit::Abandoned),
                    Some(RunnerCmd::CleanupNow) => break,
                    Some(RunnerCmd::Desired(_)) => self.resend_report(),
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Removes the task's containers and task-scoped volumes, and closes its endpoints.
    async fn cleanup(&mut self) {
        if self.endpoints.take().is_none() {
            if let Some(e) = &self.env.task_endpoints {
                let names: Vec<String> = self.ctrs.iter().map(|c| c.name.clone()).collect();
                e.forget(&self.task_arn, &names);
            }
        }
        let docker = self.env.docker.clone();
        let mut ids: Vec<String> = self.ctrs.iter().filter_map(|c| c.id.clone()).collect();
        ids.extend(self.pause.take().map(|p| p.id));
        ids.append(&mut self.extra_ids);
        for id in &ids {
            match docker.remove_container(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(task = %self.task_arn, id = %short(id), "cannot remove container: {e}")
                }
            }
            if let Some(l) = &self.env.logs {
                l.forget(id);
            }
        }
        // Task-scoped volumes: the ones planned from the definition, plus any labelled with
        // this task (covers tasks adopted without a definition).
        let mut vols: Vec<String> = self
            .volumes
            .iter()
            .filter_map(|v| match &v.source {
                VolumeSource::Docker {
                    docker_name,
                    task_scoped: true,
                    ..
                } => Some(docker_name.clone()),
                _ => None,
            })
            .collect();
        match docker.task_volumes(&self.task_arn).await {
            Ok(found) => {
                for v in found {
                    if !vols.contains(&v) {
                        vols.push(v);
                    }
                }
            }
            Err(e) => tracing::debug!(task = %self.task_arn, "cannot list task volumes: {e}"),
        }
        for v in vols {
            match docker.remove_volume(&v).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(task = %self.task_arn, volume = %v, "cannot remove volume: {e}")
                }
            }
        }
        tracing::info!(task = %self.task_arn, containers = ids.len(), "cleaned up stopped task");
    }

    /// Starts following container `i`'s output if it should be and is not already.
    fn follow_logs(&mut self, i: usize, adopted: bool) {
        let Some(sink) = self.env.logs.clone() else {
            return;
        };
        let c = &self.ctrs[i];
        if c.log_follower.is_some() || !c.started {
            return;
        }
        let Some(id) = c.id.as_deref() else { return };
        let since = match (adopted, sink.position(id)) {
            (_, Some(p)) => Some(p),
            // Adopted without a known position: from now on (what came before may be shipped).
            (true, None) if c.running => Some(now_ns()),
            (true, None) => return,
            (false, None) => None,
        };
        self.spawn_log_follower(i, since);
    }

    /// After a restart in place: the follower of the earlier run may have ended with it, so a
    /// new one takes over exactly where the old one got to.
    async fn refollow_logs(&mut self, i: usize, started_at_ns: Option<i64>) {
        let since = match self.ctrs[i].log_follower.take() {
            Some(old) => old.stop().await,
            None => {
                // Never followed (adopted after it exited): only the new run's output.
                let Some(sink) = &self.env.logs else { return };
                let Some(id) = self.ctrs[i].id.as_deref() else {
                    return;
                };
                sink.position(id)
                    .or_else(|| started_at_ns.map(|t| t.saturating_sub(1)))
            }
        };
        self.spawn_log_follower(i, since);
    }

    /// Follows container `i`'s output from `since` (exclusive; `None`: from the beginning),
    /// unless it logs nowhere.
    fn spawn_log_follower(&mut self, i: usize, since: Option<i64>) {
        let Some(sink) = self.env.logs.clone() else {
            return;
        };
        let Some(td) = &self.td else { return };
        let c = &self.ctrs[i];
        let Some(id) = c.id.clone() else { return };
        let driver = c
            .def
            .as_ref()
            .and_then(|d| d.log_configuration.as_ref())
            .map(|l| l.log_driver.as_str());
        if driver == Some("none") {
            return;
        }
        let (group, stream) = log_destination(td, &c.name, spec::task_id(&self.task_arn));
        let follower = spawn_follower(
            self.env.docker.clone(),
            sink,
            id,
            group,
            stream,
            since,
            self.env.shutdown.clone(),
        );
        self.ctrs[i].log_follower = Some(follower);
    }

    fn build_report(&self) -> SubmitTaskStateChange {
        let task_status = if self.stopped {
            status::STOPPED
        } else if self.ctrs.iter().any(|c| c.started)
            && self.ctrs.iter().all(|c| c.started || c.done)
        {
            status::RUNNING
        } else {
            status::PENDING
        };
        let containers = self
            .ctrs
            .iter()
            .map(|c| ContainerStateChange {
                container_name: Some(c.name.clone()),
                image_digest: None,
                runtime_id: c.id.clone(),
                exit_code: if c.done {
                    c.exit_code.map(|x| x as i32)
                } else {
                    None
                },
                network_bindings: (!c.bindings.is_empty()).then(|| c.bindings.clone()),
                reason: c.reason.clone(),
                status: Some(c.status().into()),
                health_status: c.has_healthcheck.then(|| {
                    match c.health.as_deref() {
                        Some("healthy") => status::HEALTHY,
                        Some("unhealthy") => status::UNHEALTHY,
                        _ => status::UNKNOWN,
                    }
                    .to_string()
                }),
            })
            .collect();
        SubmitTaskStateChange {
            cluster: Some(self.cluster_arn.clone()).filter(|c| !c.is_empty()),
            task: Some(self.task_arn.clone()),
            status: Some(task_status.into()),
            reason: if self.stopped {
                self.stop_reason.clone()
            } else {
                None
            },
            containers: Some(containers),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            execution_stopped_at: self.execution_stopped_at,
        }
    }

    /// Queues a report if anything changed since the last one.
    fn report(&mut self) {
        let r = self.build_report();
        if self.last_report.as_ref() != Some(&r) {
            tracing::debug!(task = %self.task_arn, status = ?r.status, "task state changed");
            if let Some(lease) = &self.endpoints {
                let desired = if self.stopping {
                    status::STOPPED
                } else {
                    status::RUNNING
                };
                lease.publish(&r, desired);
            }
            let _ = self.env.reports.send(r.clone());
            self.last_report = Some(r);
        }
    }

    fn resend_report(&self) {
        if let Some(r) = &self.last_report {
            let _ = self.env.reports.send(r.clone());
        }
    }
}

fn is_stop(cmd: &RunnerCmd) -> bool {
    match cmd {
        RunnerCmd::Stop { .. } => true,
        RunnerCmd::Desired(a) => a.desired_status == status::STOPPED,
        _ => false,
    }
}

/// How long the run that a snapshot of an exited container describes lasted, by Docker's
/// clock (`FinishedAt - StartedAt` of its last start).
fn run_duration(snap: &ContainerSnapshot) -> Option<Duration> {
    let (start, end) = (snap.started_at_ns?, snap.finished_at_ns?);
    (end >= start).then(|| Duration::from_nanos((end - start) as u64))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
