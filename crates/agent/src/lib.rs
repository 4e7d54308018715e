//! `gantry-agent`: runs the tasks the control plane places on this container instance, with
//! real containers through Docker, the way Amazon ECS's container agent does.
//!
//! # Flow
//!
//! 1. **Docker.** [`run`] connects to the engine (negotiating the API version) and fails at
//!    once, saying what to do, if it cannot.
//! 2. **Register.** `RegisterContainerInstance` (awsJson1_1 at `POST {server}/`) with the
//!    instance's CPU, memory, ports, Docker version and capability attributes, and the
//!    container instance ARN saved in `data_dir/agent-state.json` so that a restarted agent
//!    keeps its identity. Retried with backoff while the control plane is unreachable.
//! 3. **Adopt.** Containers labelled with this instance's ARN (left by an earlier run) are
//!    found and grouped by task ([`recovery`]), awsvpc pause containers included; the first
//!    Tasks message decides their fate: still wanted → adopted as they are (no duplicates),
//!    otherwise stopped.
//! 4. **Channel.** A long-lived `GET` ([`channel`]) streams NDJSON messages; each Tasks
//!    message is the complete desired state, applied by the level-triggered [`supervisor`].
//!    Silence for three heartbeats, a broken stream or an ended one → reconnect with backoff;
//!    a 4xx (instance unknown) → register again as a new instance.
//! 5. **Run.** One [`runner`] per task pulls missing images, creates volumes and containers
//!    ([`spec`] turns the task definition into Docker create bodies), starts containers as
//!    their `dependsOn` conditions allow, and stops them in reverse dependency order.
//! 6. **Events.** Docker's event stream ([`docker::follow_events`]) is routed to runners:
//!    a `die` is reported within milliseconds, an essential container's death stops its
//!    task (unless its restart policy restarts it), health changes are reported. A slow resync (every 30 s) repairs what events miss.
//! 7. **Report.** Every change becomes a full `SubmitTaskStateChange`, queued per task
//!    ([`reporter`]): sent in order, retried while the control plane is down, a newer report
//!    replacing an unsent older one.
//! 8. **Logs.** Each container's output is followed and shipped in batches ([`logs`]) to the
//!    control plane's log endpoint.
//! 9. **Restart policies.** A container whose definition enables `restartPolicy` is started
//!    again in place (same container) when it exits, as ECS does ([`restart`]): the task stays
//!    RUNNING, and the agent never restarts what it stops itself.
//! 10. **Cleanup.** A stopped task's containers and task-scoped volumes are removed after the
//!     cleanup wait (1 h by default), and at most 100 stopped tasks keep their containers.
//! 11. **awsvpc.** A task whose definition says `networkMode: awsvpc` and whose assignment
//!     carries a network interface (address, MAC address, subnet range and gateway, private
//!     DNS name, all decided by the control plane) gets its own network namespace ([`awsvpc`]):
//!     - the subnet is a Docker bridge network `gantry-<subnet id>` with the subnet's range
//!       and gateway (created when missing, left in place when empty), made sure of first; a
//!       range Docker refuses (it overlaps another network on the host) stops the task with a
//!       `ResourceInitializationError: …` reason that names the subnet and the range;
//!     - the namespace sits on that network at the task's address and MAC address with the
//!       task's DNS name as hostname; the host and the subnet's other tasks reach the task at
//!       its address; its containers publish no ports and report no network bindings (port
//!       bindings, hostname, DNS settings and extra hosts of the definitions are dropped);
//!     - who holds the namespace is decided in one place, [`awsvpc::needs_pause_container`]:
//!       - **one container**: that container holds it itself, created directly on the network
//!         at the task's addresses; no pause container (ECS's pause container holds a
//!         namespace that several containers share and that outlives any one of them; a lone
//!         container restarted in place is the same Docker container, with the same address
//!         and MAC address, and its exit stops the task). The task starts about as fast as
//!         `docker run` on the network; a restarted agent adopts the container as any other;
//!       - **several containers**: a pause container holds it. It runs [`pause::PAUSE_IMAGE`],
//!         a tiny static executable that sleeps forever, generated in memory and `docker
//!         import`ed once per agent process (started in the background at startup, so no
//!         registry is ever needed), labelled like the task's containers plus
//!         `dev.gantry.pause=true`. The task's containers join it (`container:<pause id>`)
//!         and reach each other on `localhost`. It is created first, then started while the
//!         task's containers are created, then those start. It outlives restarts in place; a
//!         pause container that dies stops its task; a restarted agent adopts it by its labels
//!         (same container, same address);
//!     - the address is free before STOPPED is reported, since the control plane may give it
//!       to a new task as soon as it sees STOPPED: the pause container is removed (with
//!       force: its PID 1 ignores SIGTERM) after the containers have stopped; a lone
//!       container gives its address back to Docker when it stops (checked, and disconnected
//!       from the network should it still hold it). A task that fails to start holds no
//!       address either (a container that never ran holds none; the pause container is
//!       removed).
//!
//!     Without a network interface, awsvpc tasks run as before: in bridge mode with their
//!     container ports published on the same host ports.
//! 12. **Task endpoints.** Each task's containers reach their task role's credentials and
//!     the task metadata endpoint at `http://169.254.170.2` ([`task_endpoints`]): this agent
//!     serves its tasks' on a loopback port, and whichever agent of the machine holds
//!     `169.254.170.2:80` forwards each request there by the id in its path.
//!
//! 13. **Several servers.** Given several control-plane replicas, the agent uses one at a time
//!     for everything (registration, channel, reports, logs, secrets, credentials), starting
//!     at one chosen by a hash of its host and data directory, and moves to the next when the
//!     current one cannot be reached ([`servers`]); the channel then reconnects there and
//!     resynchronises, and running tasks are left alone.
//!
//! On shutdown the agent returns and leaves containers running: the next run adopts them.
//!
//! Environment overrides (see [`AgentOptions::from_env`]): `GANTRY_TASK_CLEANUP_WAIT_SECS`,
//! `GANTRY_MAX_STOPPED_TASKS`, `GANTRY_RESYNC_SECS`, and, for tests only,
//! `GANTRY_RESTART_ATTEMPT_PERIOD_SECS` (replaces every container's `restartAttemptPeriod`,
//! whose ECS minimum of 60 s would make restart tests slow).

pub mod api_client;
pub mod awsvpc;
pub mod channel;
pub mod config;
pub mod deps;
pub mod docker;
pub mod logs;
pub mod pause;
pub mod recovery;
pub mod reporter;
pub mod restart;
pub mod runner;
pub mod secrets;
pub mod servers;
pub mod spec;
pub mod supervisor;
pub mod task_endpoints;
pub mod tls;
pub mod util;

pub use config::{AgentConfig, AgentOptions};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::api_client::{
    cluster_arn_for, registration_body, AgentAuth, ApiError, EcsClient, Registration,
};
use crate::channel::{run_channel, ChannelExit};
use crate::docker::DockerDriver;
use crate::logs::{load_positions, LogSink, POSITIONS_FILE};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::util::Backoff;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot use Docker at {endpoint}: {message}. Start the Docker daemon (e.g. `sudo systemctl start docker`), \
         or point DOCKER_HOST / --docker-host at a running engine, and make sure this user may use its socket \
         (e.g. membership of the `docker` group)"
    )]
    DockerUnavailable { endpoint: String, message: String },
    #[error(
        "the control plane at {server} refused to register this container instance: {message}"
    )]
    Registration { server: String, message: String },
    #[error("cannot use the data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Runs the agent until `shutdown` completes (then returns `Ok`, leaving containers running
/// for the next run to adopt) or an unrecoverable startup error occurs.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    run_with_options(config, AgentOptions::from_env(), shutdown).await
}

/// [`run`] with explicit tunables.
pub async fn run_with_options(
    config: AgentConfig,
    options: AgentOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let servers =
        servers::Servers::from_list(&config.server_urls, &servers::agent_seed(&config.data_dir))
            .map_err(AgentError::Config)?;
    let cluster = if config.cluster.trim().is_empty() {
        "default".to_string()
    } else {
        config.cluster.clone()
    };

    // Docker first: without it there is nothing to run.
    let endpoint_hint = config
        .docker_host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    let docker = DockerDriver::connect(config.docker_host.as_deref())
        .await
        .map_err(|e| AgentError::DockerUnavailable {
            endpoint: endpoint_hint.clone(),
            message: e.to_string(),
        })?;
    let (docker_version, api_version) =
        docker
            .engine_version()
            .await
            .map_err(|e| AgentError::DockerUnavailable {
                endpoint: endpoint_hint.clone(),
                message: e.to_string(),
            })?;
    tracing::info!(docker = %docker_version, api = ?api_version, endpoint = %docker.endpoint(), "connected to Docker");
    // The pause image of awsvpc tasks, made sure of in the background from the start so that
    // the first awsvpc task does not wait for it (runners share the outcome, or retry it).
    let pause_image = pause::PauseImage::new();
    let pause_warmup = tokio::spawn({
        let pause_image = pause_image.clone();
        let docker = docker.clone();
        async move {
            if let Err(e) = pause_image.ensure(&docker).await {
                tracing::warn!("cannot prepare the pause image {} for awsvpc tasks yet: {e}; the first awsvpc task tries again", pause::PAUSE_IMAGE);
            }
        }
    });

    std::fs::create_dir_all(&config.data_dir).map_err(|e| AgentError::DataDir {
        path: config.data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    if servers.len() > 1 {
        tracing::info!(servers = %servers.urls().join(", "), first = %servers.current().1, "control plane replicas");
    }
    let client = EcsClient::with_servers(servers, &config.tls)
        .map_err(|e| AgentError::Config(e.to_string()))?;

    let registration = Registration {
        cluster: cluster.clone(),
        cpu: config.cpu.unwrap_or_else(config::default_cpu_units),
        memory: config.memory.unwrap_or_else(config::default_memory_mib),
        docker_version,
        docker_api_version: api_version,
        availability_zone: config.availability_zone.clone(),
        attributes: config.attributes.clone(),
        allow_host_access: config.allow_host_access,
    };
    let saved = config::load_state(&config.data_dir);
    let previous_arn = saved.container_instance_arn.clone();
    let same_cluster = saved.cluster.as_deref().is_none_or(|c| c == cluster);
    let saved_arn = saved.container_instance_arn.filter(|_| same_cluster);
    client.set_auth(AgentAuth {
        join_token: config.token.clone(),
        credentials: saved.credentials.filter(|_| same_cluster),
    });
    let instance_arn = tokio::select! {
        r = register(&client, &registration, saved_arn) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    save_identity(&config, &client, &cluster, &instance_arn)?;

    let task_endpoints = start_task_endpoints(&config, &cluster, &client, &docker).await?;

    // Everything that runs until shutdown.
    let (stop_tx, stop_rx) = watch::channel(false);
    let front = tokio::spawn(task_endpoints::front::hold(
        std::net::SocketAddr::from((task_endpoints::ENDPOINT_IP, task_endpoints::ENDPOINT_PORT)),
        task_endpoints.registry().clone(),
        Some(docker.clone()),
        stop_rx.clone(),
    ));
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(reporter::run_reporter(
        Arc::new(client.clone()),
        report_rx,
        stop_rx.clone(),
    ));
    let (log_sink, log_rx) = LogSink::new(load_positions(&config.data_dir));
    let shipper = tokio::spawn(logs::run_shipper(
        Arc::new(client.clone()),
        log_sink.positions_handle(),
        log_rx,
        Some(config.data_dir.join(POSITIONS_FILE)),
        stop_rx.clone(),
    ));
    let (mut sup, mut notices) = Supervisor::new(
        docker.clone(),
        instance_arn.clone(),
        SupervisorConfig {
            cleanup_wait: options.cleanup_wait,
            max_stopped_tasks: options.max_stopped_tasks,
            restart_attempt_period: options.restart_attempt_period,
            allow_host_access: config.allow_host_access,
            pause_image,
            log_streams: Some(Arc::new(client.clone())),
            task_secrets: Some(Arc::new(client.clone())),
            task_endpoints: Some(task_endpoints.clone()),
        },
        report_tx,
        Some(log_sink),
        stop_rx.clone(),
    );
    if let Some(old) = previous_arn.filter(|a| *a != instance_arn) {
        // This data directory's earlier identity: its containers are ours to stop and clean.
        tracing::info!(previous = %old, "registered under a new identity; the earlier identity's containers will be stopped");
        sup.add_owned_arn(old);
    }
    // Never run without knowing what already runs: a task started without its existing
    // containers adopted would collide with them (duplicate names, untracked containers).
    let mut attempt = 0u32;
    loop {
        match sup.recover().await {
            Ok(0) => break,
            Ok(n) => {
                tracing::info!(tasks = n, "found containers of an earlier run; they are adopted when the control plane lists their tasks");
                break;
            }
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::warn!("cannot list existing containers: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(AgentError::DockerUnavailable {
                    endpoint: endpoint_hint.clone(),
                    message: format!("cannot list the containers this agent already runs: {e}"),
                })
            }
        }
    }
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let event_task = tokio::spawn(docker::follow_events(
        docker.clone(),
        event_tx,
        stop_rx.clone(),
    ));
    let (tasks_tx, mut tasks_rx) = mpsc::channel(16);
    let mut channel = tokio::spawn(run_channel(
        client.clone(),
        cluster_arn_for(&cluster, &instance_arn),
        instance_arn.clone(),
        tasks_tx.clone(),
    ));
    let mut resync = tokio::time::interval(options.resync_interval.max(Duration::from_secs(1)));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    tracing::info!(instance = %instance_arn, cluster = %cluster, "agent running");

    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(tasks) = tasks_rx.recv() => {
                // A runner's notices queued before this desired state count first: a task
                // that stopped here and then left the desired state (because the control plane
                // saw its STOPPED report) is a stopped task, not one taken away.
                while let Ok(n) = notices.try_recv() {
                    sup.on_notice(n);
                }
                sup.apply(tasks)
            }
            Some(ev) = events.recv() => sup.on_event(ev),
            Some(n) = notices.recv() => sup.on_notice(n),
            _ = resync.tick() => sup.resync().await,
            exit = &mut channel => {
                match exit {
                    Ok(ChannelExit::Rejected(e)) => {
                        tracing::warn!("the control plane no longer knows this instance ({e}); registering again");
                    }
                    Ok(ChannelExit::Closed) => {}
                    Err(e) => tracing::warn!("task channel ended unexpectedly: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut shutdown => break Ok(()),
                }
                let new_arn = tokio::select! {
                    r = register(&client, &registration, None) => match r {
                        Ok(a) => a,
                        Err(e) => break Err(e),
                    },
                    _ = &mut shutdown => break Ok(()),
                };
                tracing::info!(instance = %new_arn, "registered as a new container instance");
                if let Err(e) = save_identity(&config, &client, &cluster, &new_arn) {
                    tracing::warn!("{e}");
                }
                sup.set_instance_arn(new_arn.clone());
                channel = tokio::spawn(run_channel(
                    client.clone(),
                    cluster_arn_for(&cluster, &new_arn),
                    new_arn,
                    tasks_tx.clone(),
                ));
            }
        }
    };

    tracing::info!("agent shutting down; containers keep running");
    let _ = stop_tx.send(true);
    sup.shutdown();
    channel.abort();
    event_task.abort();
    pause_warmup.abort();
    front.abort();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let _ = reporter.await;
        let _ = shipper.await;
    })
    .await;
    result
}

/// This agent's task endpoints (credentials and metadata, see [`task_endpoints`]): the
/// machine's registry, the id key kept in the data directory, credentials from the control
/// plane.
async fn start_task_endpoints(
    config: &AgentConfig,
    cluster: &str,
    client: &EcsClient,
    docker: &DockerDriver,
) -> Result<task_endpoints::TaskEndpoints, AgentError> {
    let registry = task_endpoints::registry::Registry::system().map_err(|e| {
        AgentError::Config(format!(
            "cannot set up the task endpoints' registry (tried {}, $XDG_RUNTIME_DIR and the temporary directory): {e}",
            task_endpoints::registry::SYSTEM_DIR
        ))
    })?;
    let key = task_endpoints::ids::IdKey::load_or_create(&config.data_dir).map_err(|e| {
        AgentError::DataDir {
            path: config.data_dir.display().to_string(),
            message: format!("cannot keep {}: {e}", task_endpoints::ids::KEY_FILE),
        }
    })?;
    let mut c = task_endpoints::TaskEndpointsConfig::new(registry, key);
    c.credentials = Some(Arc::new(client.clone()));
    c.docker = Some(docker.clone());
    c.availability_zone = config.availability_zone.clone();
    if cluster == gantry_model::FARGATE_POOL {
        c.launch_type = "FARGATE".into();
    }
    task_endpoints::TaskEndpoints::start(c).await.map_err(|e| {
        AgentError::Config(format!("cannot serve the task endpoints on loopback: {e}"))
    })
}

fn save_identity(
    config: &AgentConfig,
    client: &EcsClient,
    cluster: &str,
    arn: &str,
) -> Result<(), AgentError> {
    config::save_state(
        &config.data_dir,
        &config::AgentState {
            container_instance_arn: Some(arn.to_string()),
            cluster: Some(cluster.to_string()),
            credentials: client.credentials(),
        },
    )
    .map_err(|e| AgentError::DataDir {
        path: config.data_dir.display().to_string(),
        message: format!("cannot save {}: {e}", config::STATE_FILE),
    })
}

/// Registers, retrying while the control plane is unreachable or failing. A saved identity
/// the control plane refuses is dropped in favour of a new registration.
async fn register(
    client: &EcsClient,
    reg: &Registration,
    saved_arn: Option<String>,
) -> Result<String, AgentError> {
    let mut arn = saved_arn;
    let mut backoff = Backoff::standard();
    loop {
        let body = registration_body(reg, arn.as_deref());
        match client.register_container_instance(&body).await {
            Ok(new_arn) => {
                tracing::info!(instance = %new_arn, cluster = %reg.cluster, reused = arn.as_deref() == Some(new_arn.as_str()), "registered container instance");
                return Ok(new_arn);
            }
            Err(e) if e.is_retryable() => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "cannot register with the control plane at {}: {e}. Check that the Gantry server is running and that the server URL is right; retrying in {d:?}",
                    client.server_list()
                );
                tokio::time::sleep(d).await;
            }
            Err(e @ ApiError::Service { .. }) if arn.is_some() => {
                tracing::warn!(
                    "the control plane refused the saved identity {}: {e}; registering as a new container instance",
                    arn.as_deref().unwrap_or("")
                );
                arn = None;
            }
            Err(e) => {
                let hint = match &e {
                    ApiError::Service { code, .. }
                        if code.contains("AuthenticationToken") || code.contains("Unrecognized") =>
                    {
                        ". The agent needs the control plane's join token: pass --token (or set GANTRY_TOKEN) with what `gantry token` prints on the server"
                    }
                    ApiError::Service { code, .. } if code == "ClusterNotFoundException" => {
                        ". Create the cluster first (`aws ecs create-cluster --cluster-name <name>`), or join `default`, which a registering host creates"
                    }
                    _ => "",
                };
                return Err(AgentError::Registration {
                    server: client.base_url(),
                    message: format!("{e}{hint}"),
                });
            }
        }
    }
}
