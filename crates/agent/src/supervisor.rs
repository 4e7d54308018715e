//! The level-triggered reconciler: it owns one runner per task, applies each Tasks message (the
//! complete desired state of the instance), routes Docker events to runners, adopts containers
//! left by an earlier run, and bounds how many stopped tasks keep their containers.
//!
//! It does no HTTP: reports leave through a channel and Tasks messages come in through
//! [`Supervisor::apply`], so tests can drive it against a real Docker engine without a control
//! plane.

use gantry_model::agent_protocol::{SubmitTaskStateChange, TaskAssignment};
use gantry_model::status;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::docker::{ContainerSnapshot, DockerDriver, DockerError, EventFeed};
use crate::logs::{LogSink, LogStreams};
use crate::pause::PauseImage;
use crate::recovery;
use crate::runner::{
    never_started_report, spawn_runner, RunnerCmd, RunnerEnv, RunnerHandle, RunnerNotice,
};
use crate::secrets::TaskSecretsSource;

/// How long a finished task is remembered, so a late Tasks message cannot start it again.
const TOMBSTONE_TTL: Duration = Duration::from_secs(6 * 3600);
const MAX_TOMBSTONES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub cleanup_wait: Duration,
    pub max_stopped_tasks: usize,
    /// Replaces every container's `restartPolicy.restartAttemptPeriod` (a test knob:
    /// `GANTRY_RESTART_ATTEMPT_PERIOD_SECS`).
    pub restart_attempt_period: Option<Duration>,
    /// Whether tasks may use the host (privileged mode, host bind mounts, host PID/IPC,
    /// added capabilities, devices). The control plane places such tasks only on instances
    /// that allow it; the agent refuses them too, should one arrive anyway.
    pub allow_host_access: bool,
    /// The pause image of awsvpc tasks, made sure of once per process (the agent starts it in
    /// the background at startup; share the same handle).
    pub pause_image: PauseImage,
    /// Where `awslogs` containers' streams are made sure of before they start; `None`
    /// (tests without a control plane): containers start without that check.
    pub log_streams: Option<Arc<dyn LogStreams>>,
    /// Where tasks' `secrets` and `repositoryCredentials` are resolved; `None` (tests without
    /// a control plane): a task that has any fails to start.
    pub task_secrets: Option<Arc<dyn TaskSecretsSource>>,
    /// Serves tasks' credentials and metadata endpoints; `None` (tests without them):
    /// containers get no endpoint variables, and a task with a role fails to start.
    pub task_endpoints: Option<crate::task_endpoints::TaskEndpoints>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            cleanup_wait: Duration::from_secs(3600),
            max_stopped_tasks: 100,
            restart_attempt_period: None,
            allow_host_access: false,
            pause_image: PauseImage::new(),
            log_streams: None,
            task_secrets: None,
            task_endpoints: None,
        }
    }
}

pub struct Supervisor {
    env: Arc<RunnerEnv>,
    config: SupervisorConfig,
    /// Every instance ARN this process has registered as; their containers are ours.
    owned: HashSet<String>,
    runners: HashMap<String, RunnerHandle>,
    /// Containers found at startup, waiting for the first Tasks message.
    recovered: HashMap<String, Vec<ContainerSnapshot>>,
    seen_first_message: bool,
    /// Stopped tasks whose containers wait for cleanup, with when they stopped.
    stopped: HashMap<String, SystemTime>,
    /// Finished tasks: when, and their last report.
    tombstones: HashMap<String, (Instant, Option<SubmitTaskStateChange>)>,
}

impl Supervisor {
    /// A supervisor for the container instance `instance_arn`. Returns the receiver of
    /// runner notices, which the caller feeds back through [`Supervisor::on_notice`].
    pub fn new(
        docker: DockerDriver,
        instance_arn: String,
        config: SupervisorConfig,
        reports: mpsc::UnboundedSender<SubmitTaskStateChange>,
        logs: Option<LogSink>,
        shutdown: watch::Receiver<bool>,
    ) -> (Supervisor, mpsc::UnboundedReceiver<RunnerNotice>) {
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let env = Arc::new(RunnerEnv {
            docker,
            instance_arn: instance_arn.clone(),
            reports,
            logs,
            notices: notices_tx,
            cleanup_wait: config.cleanup_wait,
            restart_attempt_period: config.restart_attempt_period,
            pause_image: config.pause_image.clone(),
            log_streams: config.log_streams.clone(),
            task_secrets: config.task_secrets.clone(),
            task_endpoints: config.task_endpoints.clone(),
            shutdown,
        });
        (
            Supervisor {
                env,
                config,
                owned: HashSet::from([instance_arn]),
                runners: HashMap::new(),
                recovered: HashMap::new(),
                seen_first_message: false,
                stopped: HashMap::new(),
                tombstones: HashMap::new(),
            },
            notices_rx,
        )
    }

    /// After re-registration: new containers get the new ARN; the old ARN's containers stay
    /// ours (their tasks are stopped, since the new identity's Tasks messages omit them).
    pub fn set_instance_arn(&mut self, arn: String) {
        self.owned.insert(arn.clone());
        let mut env = (*self.env).clone();
        env.instance_arn = arn;
        self.env = Arc::new(env);
    }

    /// Claims the containers of an earlier identity of this instance (found by
    /// [`Supervisor::recover`]); their tasks are not listed for the current identity, so they
    /// are stopped and cleaned up.
    pub fn add_owned_arn(&mut self, arn: String) {
        self.owned.insert(arn);
    }

    /// Finds the containers an earlier run left; they are adopted when the first Tasks
    /// message arrives. Returns how many tasks were found.
    pub async fn recover(&mut self) -> Result<usize, DockerError> {
        for arn in self.owned.clone() {
            for (task, snaps) in recovery::owned_containers(&self.env.docker, &arn).await? {
                tracing::info!(task = %task, containers = snaps.len(), "found containers from an earlier run");
                self.recovered.entry(task).or_default().extend(snaps);
            }
        }
        Ok(self.recovered.len())
    }

    /// Applies a Tasks message: the complete desired state of this instance.
    pub fn apply(&mut self, tasks: Vec<TaskAssignment>) {
        self.seen_first_message = true;
        let mut present = HashSet::new();
        for a in tasks {
            present.insert(a.task_arn.clone());
            if let Some(h) = self.runners.get(&a.task_arn) {
                let _ = h.tx.send(RunnerCmd::Desired(Box::new(a)));
                continue;
            }
            if let Some((_, last)) = self.tombstones.get(&a.task_arn) {
                // Already finished here: the control plane has not taken in its end yet.
                let r = last.clone().unwrap_or_else(|| never_started_report(&a));
                let _ = self.env.reports.send(r);
                continue;
            }
            let adopted = self.recovered.remove(&a.task_arn).unwrap_or_default();
            if a.desired_status != status::RUNNING && adopted.is_empty() {
                // Never ran here and is not wanted: just say it is stopped.
                let r = never_started_report(&a);
                let _ = self.env.reports.send(r.clone());
                self.tombstone(a.task_arn.clone(), Some(r));
                continue;
            }
            let asks = gantry_model::requirements::host_access_requested(&a.task_definition);
            if !self.config.allow_host_access && !asks.is_empty() && adopted.is_empty() {
                tracing::warn!(task = %a.task_arn, "refusing a task that asks for host access: {}", asks.join(", "));
                let mut r = never_started_report(&a);
                r.reason = Some(format!(
                    "CannotStartContainerError: this container instance does not allow host access (gantry agent --allow-host-access); the task asks for {}",
                    asks.join(", ")
                ));
                let _ = self.env.reports.send(r.clone());
                self.tombstone(a.task_arn.clone(), Some(r));
                continue;
            }
            let arn = a.task_arn.clone();
            let stop = (a.desired_status != status::RUNNING).then_some(None);
            tracing::info!(task = %arn, adopted = adopted.len(), desired = %a.desired_status, "new task");
            let h = spawn_runner(self.env.clone(), arn.clone(), Some(a), adopted, stop);
            self.runners.insert(arn, h);
        }
        // Tasks running here that the control plane no longer lists: stop them. One that had
        // not stopped by itself was taken away (its host declared lost while this agent was
        // cut off): the control plane already counts it STOPPED and may have replaced it, so
        // its containers are removed at once rather than kept for the cleanup wait.
        for (arn, h) in &self.runners {
            if !present.contains(arn) {
                let _ = h.tx.send(RunnerCmd::Stop {
                    reason: Some("Task is no longer assigned to this container instance".into()),
                });
                if !self.stopped.contains_key(arn) {
                    let _ = h.tx.send(RunnerCmd::CleanupNow);
                }
            }
        }
        // Containers found at startup whose task is not listed at all.
        for (arn, snaps) in std::mem::take(&mut self.recovered) {
            tracing::info!(task = %arn, "stopping containers of a task that is no longer assigned here");
            // Still running: the task was taken away (its host declared lost) and may run
            // elsewhere by now, so its containers go at once. Already exited: a task that
            // ended normally keeps its containers for the cleanup wait, for `docker logs`.
            let taken_away = snaps.iter().any(|s| s.running);
            let h = spawn_runner(
                self.env.clone(),
                arn.clone(),
                None,
                snaps,
                Some(Some(
                    "Task is no longer assigned to this container instance".into(),
                )),
            );
            if taken_away {
                let _ = h.tx.send(RunnerCmd::CleanupNow);
            }
            self.runners.insert(arn, h);
        }
    }

    /// Hands a Docker event to the runner of its task.
    pub fn on_event(&mut self, feed: EventFeed) {
        match feed {
            EventFeed::Event(ev) => {
                if !ev
                    .instance_arn
                    .as_ref()
                    .is_some_and(|a| self.owned.contains(a))
                {
                    return;
                }
                let Some(task) = &ev.task_arn else { return };
                if let Some(h) = self.runners.get(task) {
                    let _ = h.tx.send(RunnerCmd::Event(ev));
                }
            }
            EventFeed::Resubscribed => self.resync_runners(),
        }
    }

    pub fn on_notice(&mut self, notice: RunnerNotice) {
        match notice {
            RunnerNotice::Stopped { task_arn, at } => {
                self.stopped.insert(task_arn, at);
                while self.stopped.len() > self.config.max_stopped_tasks {
                    let Some(oldest) = self
                        .stopped
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    self.stopped.remove(&oldest);
                    if let Some(h) = self.runners.get(&oldest) {
                        tracing::info!(task = %oldest, "too many stopped tasks kept; cleaning up the oldest early");
                        let _ = h.tx.send(RunnerCmd::CleanupNow);
                    }
                }
            }
            RunnerNotice::Done {
                task_arn,
                final_report,
            } => {
                self.runners.remove(&task_arn);
                self.stopped.remove(&task_arn);
                self.tombstone(task_arn, final_report);
            }
        }
    }

    fn tombstone(&mut self, task_arn: String, report: Option<SubmitTaskStateChange>) {
        let now = Instant::now();
        self.tombstones
            .retain(|_, (at, _)| now.duration_since(*at) < TOMBSTONE_TTL);
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some(oldest) = self
                .tombstones
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                self.tombstones.remove(&oldest);
            }
        }
        self.tombstones.insert(task_arn, (now, report));
    }

    fn resync_runners(&self) {
        for h in self.runners.values() {
            let _ = h.tx.send(RunnerCmd::Resync);
        }
    }

    /// The slow periodic repair: runners re-inspect their containers, and owned containers
    /// that no runner knows (left over, or from a lost runner) are stopped and cleaned up.
    pub async fn resync(&mut self) {
        self.resync_runners();
        if !self.seen_first_message {
            return;
        }
        let mut orphans: HashMap<String, Vec<ContainerSnapshot>> = HashMap::new();
        for arn in self.owned.clone() {
            match recovery::owned_containers(&self.env.docker, &arn).await {
                Ok(found) => {
                    for (task, snaps) in found {
                        if !self.runners.contains_key(&task) {
                            orphans.entry(task).or_default().extend(snaps);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("resync cannot list containers: {e}");
                    return;
                }
            }
        }
        for (task, snaps) in orphans {
            tracing::info!(task = %task, containers = snaps.len(), "found containers no runner knows; stopping and cleaning them up");
            let h = spawn_runner(
                self.env.clone(),
                task.clone(),
                None,
                snaps,
                Some(Some(
                    "Task is no longer assigned to this container instance".into(),
                )),
            );
            self.runners.insert(task, h);
        }
    }

    /// Agent shutdown: end every runner where it stands, leaving containers as they are.
    pub fn shutdown(&mut self) {
        for (_, h) in self.runners.drain() {
            h.join.abort();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}
