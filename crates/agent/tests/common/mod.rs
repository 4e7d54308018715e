//! Helpers for the tests that use the real Docker engine: the busybox test image, unique
//! instance identities, a supervisor harness without a control plane, and cleanup.
#![allow(dead_code)]

use gantry_agent::docker::{follow_events, DockerDriver};
use gantry_agent::logs::LogSink;
use gantry_agent::supervisor::{Supervisor, SupervisorConfig};
use gantry_model::agent_protocol::{labels, SubmitTaskStateChange, TaskAssignment};
use gantry_model::types::TaskDefinition;
use std::time::Duration;
use tokio::sync::{mpsc, watch, OnceCell};

pub const IMAGE: &str = "gantry-test/busybox:latest";
/// Label on everything these tests create, for cleanup.
pub const TEST_LABEL: &str = "dev.gantry.test";

/// Logs to the test output when RUST_LOG is set (e.g. `RUST_LOG=gantry_agent=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Connects to Docker, failing loudly: these tests need a real engine.
pub async fn docker() -> DockerDriver {
    init_tracing();
    match DockerDriver::connect(None).await {
        Ok(d) => d,
        Err(e) => panic!(
            "these tests need a reachable Docker engine (DOCKER_HOST or /var/run/docker.sock): {e}"
        ),
    }
}

const IMAGE_VERSION_LABEL: &str = "dev.gantry.test-image-version";
const IMAGE_VERSION: &str = "2";

static IMAGE_READY: OnceCell<()> = OnceCell::const_new();

/// Builds `gantry-test/busybox:latest` (a rootfs with Debian's static busybox) unless present.
pub async fn ensure_image(d: &DockerDriver) {
    IMAGE_READY
        .get_or_init(|| async {
            // The image carries a version label: a stale build (fewer tools) is rebuilt.
            if let Ok(img) = d.raw().inspect_image(IMAGE).await {
                let version = img
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(IMAGE_VERSION_LABEL).cloned());
                if version.as_deref() == Some(IMAGE_VERSION) {
                    return;
                }
            }
            let busybox = std::path::Path::new("/bin/busybox");
            assert!(
                busybox.exists(),
                "/bin/busybox is missing: install Debian's busybox-static package"
            );
            let dir = tempfile::tempdir().expect("tempdir");
            let bin = dir.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
            std::fs::create_dir_all(dir.path().join("etc")).unwrap();
            std::fs::write(
                dir.path().join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
            )
            .unwrap();
            std::fs::copy(busybox, bin.join("busybox")).unwrap();
            for tool in [
                "sh", "sleep", "echo", "cat", "true", "false", "ls", "env", "kill", "test",
                "touch", "mkdir", "nc", "httpd", "wget", "id", "printf", "head", "tr", "dd",
            ] {
                std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
            }
            let out = std::process::Command::new("tar")
                .arg("-C")
                .arg(dir.path())
                .args(["-cf", "-", "."])
                .output()
                .expect("run tar");
            assert!(out.status.success(), "tar failed");
            use futures::StreamExt;
            let opts = bollard::query_parameters::CreateImageOptionsBuilder::default()
                .from_src("-")
                .repo("gantry-test/busybox")
                .tag("latest")
                .changes(vec![format!("LABEL {IMAGE_VERSION_LABEL}={IMAGE_VERSION}")])
                .build();
            let mut s = d.raw().create_image(
                Some(opts),
                Some(bollard::body_full(out.stdout.into())),
                None,
            );
            while let Some(item) = s.next().await {
                item.expect("docker import of the busybox rootfs");
            }
            assert!(d.image_present(IMAGE).await.unwrap(), "image not built");
        })
        .await;
}

pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A container instance ARN nobody else uses.
pub fn instance_arn() -> String {
    format!(
        "arn:aws:ecs:us-east-1:000000000000:container-instance/gantry-test/{}",
        unique()
    )
}

pub fn task_arn() -> String {
    format!(
        "arn:aws:ecs:us-east-1:000000000000:task/gantry-test/{}",
        unique()
    )
}

pub const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/gantry-test";

pub fn assignment(task_arn: &str, td: TaskDefinition, desired: &str) -> TaskAssignment {
    TaskAssignment {
        task_arn: task_arn.to_string(),
        cluster_arn: CLUSTER_ARN.to_string(),
        desired_status: desired.to_string(),
        version: 1,
        containers: Vec::new(),
        overrides: None,
        task_definition: td,
        network_interface: None,
    }
}

/// Removes every container and volume labelled with `instance_arn`.
pub async fn cleanup(d: &DockerDriver, instance_arn: &str) {
    let ids = d
        .list_container_ids(&[format!("{}={instance_arn}", labels::INSTANCE_ARN)])
        .await
        .unwrap_or_default();
    for id in ids {
        let _ = d.remove_container(&id).await;
    }
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{}={instance_arn}", labels::INSTANCE_ARN)],
    );
    let opts = bollard::query_parameters::ListVolumesOptionsBuilder::default()
        .filters(&filters)
        .build();
    if let Ok(r) = d.raw().list_volumes(Some(opts)).await {
        for v in r.volumes.unwrap_or_default() {
            let _ = d.remove_volume(&v.name).await;
        }
    }
}

/// Removes the instance's containers when dropped, even if the test panicked.
/// Docker with the test image, a fresh instance ARN, and the guard that removes that
/// instance's containers when the test ends.
pub async fn fresh_instance() -> (DockerDriver, String, CleanupGuard) {
    let d = docker().await;
    ensure_image(&d).await;
    let arn = instance_arn();
    let guard = CleanupGuard {
        docker: d.clone(),
        instance_arn: arn.clone(),
    };
    (d, arn, guard)
}

pub struct CleanupGuard {
    pub docker: DockerDriver,
    pub instance_arn: String,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let d = self.docker.clone();
        let arn = self.instance_arn.clone();
        // A fresh runtime on a plain thread: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(cleanup(&d, &arn));
            }
        })
        .join();
    }
}

/// A supervisor driven like the agent drives it, minus the control plane: the test sends
/// Tasks messages and reads reports.
pub struct Harness {
    pub docker: DockerDriver,
    pub instance_arn: String,
    pub tasks: mpsc::Sender<Vec<TaskAssignment>>,
    pub reports: mpsc::UnboundedReceiver<SubmitTaskStateChange>,
    pub seen: Vec<SubmitTaskStateChange>,
    stop: watch::Sender<bool>,
    driver: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub async fn start(
        docker: &DockerDriver,
        instance_arn: &str,
        cleanup_wait: Duration,
        logs: Option<LogSink>,
    ) -> Harness {
        let config = SupervisorConfig {
            cleanup_wait,
            max_stopped_tasks: 100,
            // The tests use host volumes as `gantry dev` lets tasks do.
            allow_host_access: true,
            ..Default::default()
        };
        Self::start_with(docker, instance_arn, config, logs).await
    }

    pub async fn start_with(
        docker: &DockerDriver,
        instance_arn: &str,
        config: SupervisorConfig,
        logs: Option<LogSink>,
    ) -> Harness {
        let (report_tx, reports) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (mut sup, mut notices) = Supervisor::new(
            docker.clone(),
            instance_arn.to_string(),
            config,
            report_tx,
            logs,
            stop_rx.clone(),
        );
        sup.recover().await.expect("recover");
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        tokio::spawn(follow_events(docker.clone(), ev_tx, stop_rx.clone()));
        let (tasks_tx, mut tasks_rx) = mpsc::channel::<Vec<TaskAssignment>>(8);
        let driver = tokio::spawn(async move {
            loop {
                tokio::select! {
                    t = tasks_rx.recv() => match t {
                        Some(t) => sup.apply(t),
                        None => break,
                    },
                    Some(e) = ev_rx.recv() => sup.on_event(e),
                    Some(n) = notices.recv() => sup.on_notice(n),
                }
            }
        });
        Harness {
            docker: docker.clone(),
            instance_arn: instance_arn.to_string(),
            tasks: tasks_tx,
            reports,
            seen: Vec::new(),
            stop: stop_tx,
            driver,
        }
    }

    pub async fn apply(&self, tasks: Vec<TaskAssignment>) {
        self.tasks.send(tasks).await.expect("supervisor alive");
    }

    /// The next report (after those already seen) matching `pred`, within `within`.
    pub async fn wait_report(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&SubmitTaskStateChange) -> bool,
    ) -> SubmitTaskStateChange {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(r)) => {
                    self.seen.push(r.clone());
                    if pred(&r) {
                        return r;
                    }
                }
                Ok(None) => panic!("report channel closed while waiting for {what}"),
                Err(_) => panic!(
                    "no report {what} within {within:?}; reports seen:\n{}",
                    self.seen
                        .iter()
                        .map(|r| serde_json::to_string(r).unwrap())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// "Kills the agent": the supervisor and its runners end; containers stay as they are.
    pub async fn kill(self) {
        let _ = self.stop.send(true);
        drop(self.tasks);
        let _ = self.driver.await;
    }
}

pub fn container<'a>(
    r: &'a SubmitTaskStateChange,
    name: &str,
) -> &'a gantry_model::agent_protocol::ContainerStateChange {
    r.containers
        .as_ref()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.container_name.as_deref() == Some(name))
        })
        .unwrap_or_else(|| panic!("no container {name} in report {r:?}"))
}
