//! `gantry dev`'s capacity: one in-process agent per cluster, so that a cluster created with
//! `aws ecs create-cluster` (or Terraform) runs EC2-launch-type tasks at once, and one agent
//! that provides Fargate capacity to every cluster.
//!
//! The per-cluster agents follow the store's cluster records: a cluster that becomes ACTIVE
//! gets an agent (its instance carries `LOCAL_CAPACITY_ATTRIBUTE`, so DeleteCluster
//! deregisters it itself); a cluster that goes away has its agent stopped and its identity
//! forgotten. They all register the whole host: they share one machine's CPU and memory.

use crate::daemon::AgentArgs;
use gantry_control::ControlPlane;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct RunningAgent {
    stop: watch::Sender<bool>,
    handle: JoinHandle<Result<(), String>>,
    data_dir: PathBuf,
}

/// What the supervisor needs: the agent template (server, token, TLS trust, resources) and
/// where agents keep their state.
pub struct DevCapacity {
    pub template: AgentArgs,
    pub data_dir: PathBuf,
    /// `gantry dev --cluster NAME`: only that cluster gets an instance.
    pub pinned: Option<String>,
}

impl DevCapacity {
    fn agent_args(&self, cluster: &str, data_dir: PathBuf) -> AgentArgs {
        let mut args = self.template.clone();
        args.cluster = cluster.to_string();
        args.data_dir = data_dir;
        args.attributes.push((
            gantry_model::requirements::LOCAL_CAPACITY_ATTRIBUTE.to_string(),
            "true".to_string(),
        ));
        args
    }

    /// The first cluster keeps the data directory `gantry dev` always used (`agent/`), so an
    /// upgrade adopts its containers; the others get `agents/<cluster>/`.
    fn dir_for(&self, cluster: &str, first: &str) -> PathBuf {
        if cluster == first {
            self.data_dir.join("agent")
        } else {
            self.data_dir.join("agents").join(cluster)
        }
    }

    fn fargate_args(&self) -> AgentArgs {
        let mut args = self.template.clone();
        args.cluster = gantry_model::FARGATE_POOL.to_string();
        args.data_dir = self.data_dir.join("agent-fargate");
        // Fargate tasks cannot ask for the host (their definitions are refused).
        args.allow_host_access = false;
        args
    }

    fn start(&self, args: AgentArgs) -> RunningAgent {
        let (stop, mut rx) = watch::channel(false);
        let data_dir = args.data_dir.clone();
        let config = crate::daemon::agent_config(&args);
        let handle = tokio::spawn(async move {
            gantry_agent::run(config, async move {
                let _ = rx.changed().await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        RunningAgent {
            stop,
            handle,
            data_dir,
        }
    }

    /// Removes the containers of the instance whose identity `data_dir` keeps.
    async fn remove_containers_of(&self, data_dir: &std::path::Path) {
        let Some(arn) = gantry_agent::config::load_state(data_dir).container_instance_arn else {
            return;
        };
        let docker =
            match gantry_agent::docker::DockerDriver::connect(self.template.docker_host.as_deref())
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("cannot remove the containers of {arn}: {e}");
                    return;
                }
            };
        let label = format!(
            "{}={arn}",
            gantry_model::agent_protocol::labels::INSTANCE_ARN
        );
        for id in docker
            .list_container_ids(&[label])
            .await
            .unwrap_or_default()
        {
            if let Err(e) = docker.remove_container(&id).await {
                tracing::warn!(container = %id, "cannot remove a deleted cluster's container: {e}");
            }
        }
    }

    /// Runs until `shutdown` fires; an agent that fails on its own is started again after a
    /// pause (and said so), the others run on. Then stops every agent.
    pub async fn run(
        self,
        plane: Arc<ControlPlane>,
        first_cluster: String,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut agents: BTreeMap<String, RunningAgent> = BTreeMap::new();
        agents.insert(String::new(), self.start(self.fargate_args()));
        let result = self
            .follow(&plane, &first_cluster, &mut agents, &mut shutdown)
            .await;
        for agent in agents.values() {
            let _ = agent.stop.send(true);
        }
        for (_, agent) in agents {
            let _ = agent.handle.await;
        }
        result
    }

    async fn follow(
        &self,
        plane: &ControlPlane,
        first: &str,
        agents: &mut BTreeMap<String, RunningAgent>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        loop {
            let (names, revision) = gantry_control::active_clusters(plane)
                .await
                .map_err(|e| format!("cannot list clusters: {e}"))?;
            let wanted: Vec<String> = names
                .into_iter()
                .filter(|n| self.pinned.as_deref().is_none_or(|p| p == n))
                .collect();
            let gone: Vec<String> = agents
                .keys()
                .filter(|c| !c.is_empty() && !wanted.contains(c))
                .cloned()
                .collect();
            for cluster in gone {
                if let Some(agent) = agents.remove(&cluster) {
                    let _ = agent.stop.send(true);
                    let _ = agent.handle.await;
                    // Its tasks are all STOPPED (DeleteCluster saw to it), but their exited
                    // containers would wait for a cleanup that no agent will run any more.
                    self.remove_containers_of(&agent.data_dir).await;
                    // Its instance was deregistered with the cluster: a cluster created again
                    // under the name gets a new one.
                    let _ = std::fs::remove_dir_all(&agent.data_dir);
                    tracing::info!(%cluster, "cluster deleted: its local agent stopped");
                }
            }
            for cluster in wanted {
                if let std::collections::btree_map::Entry::Vacant(slot) = agents.entry(cluster) {
                    let cluster = slot.key().clone();
                    let args = self.agent_args(&cluster, self.dir_for(&cluster, first));
                    tracing::info!(%cluster, "local agent joining cluster");
                    slot.insert(self.start(args));
                }
            }
            let mut changes = gantry_control::watch_clusters(plane, revision)
                .await
                .map_err(|e| format!("cannot watch clusters: {e}"))?;
            loop {
                let failed = agents
                    .iter()
                    .find(|(_, a)| a.handle.is_finished())
                    .map(|(c, _)| c.clone());
                if let Some(cluster) = failed {
                    let name = if cluster.is_empty() {
                        "the Fargate agent".to_string()
                    } else {
                        format!("the local agent of cluster {cluster}")
                    };
                    let Some(agent) = agents.remove(&cluster) else {
                        continue;
                    };
                    let why = match agent.handle.await {
                        Ok(Ok(())) => "stopped".to_string(),
                        Ok(Err(e)) => format!("stopped: {e}"),
                        Err(e) => format!("crashed: {e}"),
                    };
                    tracing::error!("{name} {why}; starting it again in 5 s");
                    tokio::select! {
                        _ = shutdown.changed() => return Ok(()),
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                    if cluster.is_empty() {
                        agents.insert(String::new(), self.start(self.fargate_args()));
                        continue;
                    }
                    // Re-list: the cluster may be gone by now.
                    break;
                }
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    change = changes.recv() => match change {
                        // A cluster changed: compare the whole list again.
                        Some(_) => break,
                        // The watch fell behind: re-list.
                        None => break,
                    },
                    // Notice an agent that fails on its own.
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
