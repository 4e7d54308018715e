//! What the benchmarks share: the container command, the `docker run -d` and Docker Swarm
//! peers and the figures they print. Figures only: a benchmark never asserts on time.

#![allow(dead_code)]

use crate::common::svc::wait_for_every;
use crate::common::{containers_with_label, run_one, sh, wait_task, Dev, IMAGE};
use std::process::Command;
use std::time::{Duration, Instant};

/// The same process for Gantry's tasks and the peer: a shell that exits on SIGTERM, so stops
/// are prompt.
pub const COMMAND: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// RunTask of `td` until the task is RUNNING, in ms; the task is stopped (and waited for)
/// afterwards.
pub async fn run_task_sample(dev: &Dev, td: &str) -> f64 {
    let started = Instant::now();
    let arn = run_one(&dev.client, &dev.cluster, td).await;

    loop {
        let d = dev
            .client
            .describe_tasks()
            .cluster(&dev.cluster)
            .tasks(&arn)
            .send()
            .await
            .expect("DescribeTasks");
        match d.tasks().first().and_then(|t| t.last_status()) {
            Some("RUNNING") => break,
            Some("STOPPED") => panic!("benchmark task stopped: {d:?}"),
            _ if started.elapsed() > Duration::from_secs(60) => panic!(
                "benchmark task not RUNNING after 60 s: {d:?}\n{}",
                dev.proc.output()
            ),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    dev.client
        .stop_task()
        .cluster(&dev.cluster)
        .task(&arn)
        .send()
        .await
        .expect("StopTask");
    wait_task(
        &dev.client,
        &dev.cluster,
        &arn,
        "STOPPED",
        Duration::from_secs(60),
    )
    .await;
    elapsed
}

/// `docker run -d` of the busybox image until it returns (the container is running then),
/// in ms; the container is removed afterwards.
pub fn docker_sample(label: &str) -> f64 {
    let started = Instant::now();
    let id = sh(&format!(
        "docker run -d --label {label} -m 64m --cpu-shares 2 {IMAGE} sh -c \"{COMMAND}\""
    ));
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    sh(&format!("docker rm -f {id} >/dev/null"));
    elapsed
}

/// `  <what>  median … ms  (min …, max …)` and the samples in run order.
pub fn report(what: &str, samples: &[f64]) {
    println!(
        "  {what:<28} median {:9.1} ms  (min {:.1}, max {:.1})",
        median(samples.to_vec()),
        samples.iter().copied().fold(f64::MAX, f64::min),
        samples.iter().copied().fold(0.0, f64::max)
    );
    let list: Vec<String> = samples.iter().map(|s| format!("{s:.1}")).collect();
    println!("  {:<28} samples (ms): {}", "", list.join(", "));
}

/// The sample count: `GANTRY_BENCH_SAMPLES`, else `default`.
pub fn samples(default: usize) -> usize {
    std::env::var("GANTRY_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Run a command; its trimmed stdout, or what it printed when it failed.
pub fn try_sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{cmd}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// This engine as a single-node Docker Swarm manager, for the `docker service` peer. A swarm
/// that was already active is used as it is; one this benchmark initialised is left (with the
/// `docker_gwbridge` network `swarm init` created) when the guard drops, on panic too.
pub struct Swarm {
    initialised: bool,
    created_gwbridge: bool,
}

impl Swarm {
    /// Join or initialise the swarm; `Err` says why the peer is skipped:
    /// `GANTRY_BENCH_NO_SWARM=1`, or a swarm that cannot be used or initialised.
    pub fn start() -> Result<Swarm, String> {
        if std::env::var("GANTRY_BENCH_NO_SWARM").is_ok_and(|v| v == "1") {
            return Err("GANTRY_BENCH_NO_SWARM=1".into());
        }
        let state = try_sh("docker info --format '{{.Swarm.LocalNodeState}}'")?;
        match state.as_str() {
            "active" => {
                let manager = try_sh("docker info --format '{{.Swarm.ControlAvailable}}'")?;
                if manager != "true" {
                    return Err("this node is in a swarm but is not a manager".into());
                }
                Ok(Swarm {
                    initialised: false,
                    created_gwbridge: false,
                })
            }
            "inactive" => {
                let had_gwbridge = try_sh("docker network inspect docker_gwbridge").is_ok();
                try_sh("docker swarm init --advertise-addr 127.0.0.1")?;
                Ok(Swarm {
                    initialised: true,
                    created_gwbridge: !had_gwbridge,
                })
            }
            other => Err(format!(
                "the swarm is `{other}`, neither active nor inactive"
            )),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.initialised {
            let _ = try_sh("docker swarm leave --force");
            if self.created_gwbridge {
                let _ = try_sh("docker network rm docker_gwbridge");
            }
        }
    }
}

/// A task of a Swarm service that is meant to run (desired state `running`).
pub struct SwarmTask {
    pub id: String,
    /// `new`, …, `starting`, `running`, `failed`, …
    pub state: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
}

impl SwarmTask {
    /// Whether the task's environment has `NAME=value` exactly.
    pub fn has_env(&self, pair: &str) -> bool {
        self.env.iter().any(|e| e == pair)
    }
}

/// A replicated `docker service` of [`IMAGE`] running [`COMMAND`]; removed when dropped, and
/// waited for until its containers are gone, so the next sample starts on a quiet engine.
pub struct SwarmService {
    pub name: String,
}

impl SwarmService {
    /// `docker service create --detach` of `replicas` tasks with `REVISION=<revision>` in the
    /// environment and the service flags `flags`; returns at once, before any task runs.
    /// `--no-resolve-image`: the image is local, no registry is reachable.
    pub fn create(name: &str, replicas: usize, revision: &str, flags: &str) -> SwarmService {
        sh(&format!(
            "docker service create --detach --no-resolve-image --name {name} --replicas {replicas} \
             --env REVISION={revision} {flags} {IMAGE} sh -c \"{COMMAND}\" >/dev/null"
        ));
        SwarmService {
            name: name.to_string(),
        }
    }

    /// `docker service update --detach <flags>`: returns once the new spec is stored.
    pub fn update(&self, flags: &str) {
        sh(&format!(
            "docker service update --detach {flags} {} >/dev/null",
            self.name
        ));
    }

    /// Panic with `e` and the service's task history.
    pub fn fail(&self, e: String) -> ! {
        let history =
            try_sh(&format!("docker service ps --no-trunc {}", self.name)).unwrap_or_else(|e| e);
        panic!("{e}\n--- docker service ps ---\n{history}")
    }

    /// `.UpdateStatus.State`: `updating`, `completed`, `rollback_started`,
    /// `rollback_completed`, …; empty before the first update.
    pub fn update_state(&self) -> Result<String, String> {
        let format = "'{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}'";
        try_sh(&format!(
            "docker service inspect --format {format} {}",
            self.name
        ))
    }

    /// The tasks meant to run (`docker service ps --filter desired-state=running`), inspected.
    pub fn tasks(&self) -> Result<Vec<SwarmTask>, String> {
        let ids = try_sh(&format!(
            "docker service ps -q --no-trunc --filter desired-state=running {}",
            self.name
        ))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.split_whitespace().collect::<Vec<_>>().join(" ");
        let json = try_sh(&format!("docker inspect --type task {ids}"))?;
        let tasks: Vec<serde_json::Value> =
            serde_json::from_str(&json).map_err(|e| format!("task JSON: {e}"))?;
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        Ok(tasks
            .iter()
            .map(|t| SwarmTask {
                id: t["ID"].as_str().unwrap_or("").to_string(),
                state: t["Status"]["State"].as_str().unwrap_or("").to_string(),
                args: strings(&t["Spec"]["ContainerSpec"]["Args"]),
                env: strings(&t["Spec"]["ContainerSpec"]["Env"]),
            })
            .collect())
    }

    /// Wait until `.UpdateStatus.State` is `state` (`None`: no update has run) and the tasks
    /// meant to run are exactly `n`, all running, all `on` the wanted spec. Polls every
    /// `every`, the update state first and the tasks only once it matches.
    pub async fn wait(
        &self,
        state: Option<&str>,
        n: usize,
        on: &dyn Fn(&SwarmTask) -> bool,
        every: Duration,
        timeout: Duration,
    ) -> Result<(), String> {
        let what = format!(
            "swarm service {} at update state {state:?} with {n} tasks running on the wanted spec",
            self.name
        );
        wait_for_every(every, timeout, &what, || async move {
            let current = self.update_state()?;
            if current != state.unwrap_or("") {
                return Err(format!("update state `{current}`"));
            }
            let tasks = self.tasks()?;
            if tasks.len() == n && tasks.iter().all(|t| t.state == "running" && on(t)) {
                Ok(())
            } else {
                let lines: Vec<String> = tasks
                    .iter()
                    .map(|t| format!("  {} {} {:?} {:?}", t.id, t.state, t.args, t.env))
                    .collect();
                Err(format!("update state `{current}`\n{}", lines.join("\n")))
            }
        })
        .await
    }
}

impl Drop for SwarmService {
    fn drop(&mut self) {
        let _ = try_sh(&format!("docker service rm {}", self.name));
        let label = format!("com.docker.swarm.service.name={}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !containers_with_label(&label).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
