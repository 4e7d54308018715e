//! Simulated agents: async tasks that speak the real agent protocol over HTTP, without Docker.
//!
//! Each one registers with the body the real agent sends (`registration_body`), holds its
//! task channel open (`GET /agent/v1/channel`) reading NDJSON [`ChannelMessage`]s, and answers
//! every task it has not seen before with `SubmitTaskStateChange` RUNNING (its containers
//! RUNNING with a runtime id), one report at a time, in order, as the agent's report queue
//! does. What would take a container start on a real host takes nothing here, so the figures
//! are the control plane's.

use crate::bench::fixture::{DOCKER_API, INSTANCE_CPU, INSTANCE_MEMORY, ZONES};
use futures::StreamExt;
use gantry_agent::api_client::{
    cluster_arn_for, registration_body, AgentAuth, EcsClient, Registration,
};
use gantry_model::agent_protocol::{
    ChannelMessage, ContainerStateChange, SubmitTaskStateChange, TaskAssignment,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How many registrations are in flight at once while the fleet starts.
const REGISTER_IN_FLIGHT: usize = 32;
/// Attempts per report before the agent gives up on it (counted in `errors`).
const REPORT_ATTEMPTS: usize = 5;

/// What the agents share and what they measured.
pub struct Shared {
    pub cluster: String,
    /// Channels open.
    pub connected: AtomicUsize,
    /// RUNNING reports the control plane acknowledged.
    pub running: AtomicUsize,
    /// Wakes whoever waits for `running` or `connected` to reach a figure.
    pub progress: Notify,
    /// Round trip of each acknowledged RUNNING report.
    pub reports: Mutex<Vec<Duration>>,
    /// (task ARN, when its RUNNING report was acknowledged).
    pub acked: Mutex<Vec<(String, Instant)>>,
    /// Reports given up on, channels that failed to open or broke.
    pub errors: AtomicUsize,
    /// Treat the tasks of the first desired state as already running (an agent that restarts
    /// and adopts its containers), instead of reporting them.
    pub adopt_initial: bool,
}

pub struct Fleet {
    pub shared: Arc<Shared>,
    /// Container instance ARN of each agent.
    pub arns: Vec<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Registers `n` agents (4,096 CPU units, 16,384 MiB, zones round-robin), opens their
    /// channels and waits until every channel is open (at most `limit`).
    pub async fn register(
        endpoint: &str,
        cluster: &str,
        n: usize,
        token: &str,
        limit: Duration,
    ) -> Result<Fleet, String> {
        let registrations: Vec<_> = (0..n)
            .map(|i| {
                // Each agent its own client: it joins with the token and then signs with the
                // credentials issued to its own instance, as a real agent does.
                let client = EcsClient::new(endpoint).map_err(|e| e.to_string())?;
                client.set_auth(AgentAuth {
                    join_token: Some(token.to_string()),
                    credentials: None,
                });
                let body = registration_body(
                    &Registration {
                        cluster: cluster.to_string(),
                        cpu: INSTANCE_CPU,
                        memory: INSTANCE_MEMORY,
                        docker_version: "20.10.24".into(),
                        docker_api_version: DOCKER_API,
                        availability_zone: Some(ZONES[i % ZONES.len()].to_string()),
                        attributes: Vec::new(),
                        allow_host_access: false,
                    },
                    None,
                );
                Ok((client, body))
            })
            .collect::<Result<_, String>>()?;
        let results: Vec<Result<(String, EcsClient), String>> =
            futures::stream::iter(registrations)
                .map(|(client, body)| async move {
                    let arn = client
                        .register_container_instance(&body)
                        .await
                        .map_err(|e| format!("RegisterContainerInstance: {e}"))?;
                    Ok((arn, client))
                })
                .buffered(REGISTER_IN_FLIGHT)
                .collect()
                .await;
        let agents = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Fleet::connect(agents, cluster, false, limit).await
    }

    /// Agents for instances that are already registered (their ARNs, each with a client
    /// holding that instance's credentials), opening their channels; with `adopt_initial`,
    /// the tasks already assigned count as running.
    pub async fn connect(
        agents: Vec<(String, EcsClient)>,
        cluster: &str,
        adopt_initial: bool,
        limit: Duration,
    ) -> Result<Fleet, String> {
        let shared = Arc::new(Shared {
            cluster: cluster.to_string(),
            connected: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            progress: Notify::new(),
            reports: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
            errors: AtomicUsize::new(0),
            adopt_initial,
        });
        let (stop, stop_rx) = watch::channel(false);
        let arns: Vec<String> = agents.iter().map(|(arn, _)| arn.clone()).collect();
        let tasks = agents
            .into_iter()
            .map(|(arn, client)| {
                tokio::spawn(run_agent(shared.clone(), arn, client, stop_rx.clone()))
            })
            .collect();
        let fleet = Fleet {
            shared,
            arns,
            stop,
            tasks,
        };
        let n = fleet.arns.len();
        if !fleet
            .wait(|s| s.connected.load(Ordering::Relaxed) >= n, limit)
            .await
        {
            let open = fleet.shared.connected.load(Ordering::Relaxed);
            fleet.stop().await;
            return Err(format!(
                "only {open} of {n} agent channels opened within {limit:?}"
            ));
        }
        Ok(fleet)
    }

    /// Waits until `done` holds (checked whenever an agent makes progress), at most `limit`.
    pub async fn wait(&self, done: impl Fn(&Shared) -> bool, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.progress.notified();
            if done(&self.shared) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.shared);
            }
        }
    }

    /// Closes every channel and ends the agents.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                // An agent stuck in a report: it is aborted when the runtime ends.
            }
        }
    }
}

async fn run_agent(
    shared: Arc<Shared>,
    arn: String,
    client: EcsClient,
    mut stop: watch::Receiver<bool>,
) {
    let channel_cluster = cluster_arn_for(&shared.cluster, &arn);
    let response = tokio::select! {
        r = client.open_channel(&channel_cluster, &arn) => r,
        _ = stop.changed() => return,
    };
    let response = match response {
        Ok(open) => open.response,
        Err(e) => {
            tracing::error!(instance = %arn, "channel: {e}");
            shared.errors.fetch_add(1, Ordering::Relaxed);
            shared.progress.notify_waiters();
            return;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    shared.progress.notify_waiters();
    let mut stream = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = stop.changed() => return,
        };
        let bytes = match chunk {
            Some(Ok(b)) => b,
            Some(Err(_)) | None => {
                if !*stop.borrow() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        buffer.extend_from_slice(&bytes);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(ChannelMessage::Tasks { tasks }) = serde_json::from_slice(&line) else {
                continue;
            };
            let adopt = first && shared.adopt_initial;
            first = false;
            for task in tasks {
                if task.desired_status != "RUNNING" || !known.insert(task.task_arn.clone()) {
                    continue;
                }
                if adopt {
                    continue;
                }
                report_running(&shared, &client, &task).await;
            }
        }
    }
}

/// The RUNNING report the real agent sends once a task's containers have started.
pub fn running_report(task: &TaskAssignment) -> SubmitTaskStateChange {
    let now = gantry_model::now_epoch();
    SubmitTaskStateChange {
        cluster: Some(task.cluster_arn.clone()),
        task: Some(task.task_arn.clone()),
        status: Some("RUNNING".into()),
        containers: Some(
            task.containers
                .iter()
                .map(|c| ContainerStateChange {
                    container_name: Some(c.name.clone()),
                    runtime_id: Some(format!(
                        "{}{}",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    )),
                    status: Some("RUNNING".into()),
                    network_bindings: Some(Vec::new()),
                    ..Default::default()
                })
                .collect(),
        ),
        pull_started_at: Some(now),
        pull_stopped_at: Some(now),
        ..Default::default()
    }
}

async fn report_running(shared: &Shared, client: &EcsClient, task: &TaskAssignment) {
    let change = running_report(task);
    for attempt in 0..REPORT_ATTEMPTS {
        let started = Instant::now();
        match client.submit_task_state_change(&change).await {
            Ok(()) => {
                let took = started.elapsed();
                let now = Instant::now();
                if let Ok(mut r) = shared.reports.lock() {
                    r.push(took);
                }
                if let Ok(mut a) = shared.acked.lock() {
                    a.push((task.task_arn.clone(), now));
                }
                shared.running.fetch_add(1, Ordering::Relaxed);
                shared.progress.notify_waiters();
                return;
            }
            Err(e) if e.is_retryable() && attempt + 1 < REPORT_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(task = %task.task_arn, "report: {e}");
                break;
            }
        }
    }
    shared.errors.fetch_add(1, Ordering::Relaxed);
    shared.progress.notify_waiters();
}
