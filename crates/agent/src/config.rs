//! The agent's configuration, its tunables, what it registers (CPU, memory, attributes) and the
//! small state file that keeps its identity across restarts.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the `gantry agent` command line configures.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The control plane's base URLs, e.g. `http://127.0.0.1:4566`: one, or several replicas
    /// of one control plane (an entry may itself be a comma-separated list). The agent uses
    /// one at a time and fails over to the next ([`crate::servers`]).
    pub server_urls: Vec<String>,
    /// Cluster name or ARN.
    pub cluster: String,
    /// Where the agent keeps its state (its container instance ARN, log positions).
    pub data_dir: PathBuf,
    /// CPU units to register; default: cores × 1024.
    pub cpu: Option<i64>,
    /// MiB to register; default: MemTotal from /proc/meminfo.
    pub memory: Option<i64>,
    pub availability_zone: Option<String>,
    /// Extra `--attribute k=v` attributes to register.
    pub attributes: Vec<(String, String)>,
    /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://host:2375`); default: bollard's
    /// local defaults (`DOCKER_HOST`, else the local unix socket).
    pub docker_host: Option<String>,
    /// The control plane's join token (`gantry token` prints it; `<data-dir>/agent-token` on
    /// the server). Registration presents it and receives credentials bound to this instance.
    pub token: Option<String>,
    /// Whether tasks may ask this host for privileged mode, host bind mounts, host PID/IPC
    /// namespaces, added capabilities or devices. Off on `gantry agent` unless
    /// `--allow-host-access`; on for `gantry dev`'s own agent.
    pub allow_host_access: bool,
    /// What to trust when a server is `https://`.
    pub tls: crate::tls::TlsTrust,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server_urls: vec!["http://127.0.0.1:4566".into()],
            cluster: "default".into(),
            data_dir: PathBuf::from("gantry-agent"),
            cpu: None,
            memory: None,
            availability_zone: None,
            attributes: Vec::new(),
            docker_host: None,
            token: None,
            allow_host_access: false,
            tls: Default::default(),
        }
    }
}

/// Tunables that the command line does not expose; [`AgentOptions::from_env`] reads overrides
/// from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOptions {
    /// How long a stopped task's containers are kept before they are removed
    /// (`GANTRY_TASK_CLEANUP_WAIT_SECS`, default 3600).
    pub cleanup_wait: Duration,
    /// At most this many stopped tasks keep their containers; beyond it the oldest are
    /// removed early so that `docker ps -a` stays bounded (`GANTRY_MAX_STOPPED_TASKS`,
    /// default 100).
    pub max_stopped_tasks: usize,
    /// Period of the slow resync that repairs anything a Docker event missed
    /// (`GANTRY_RESYNC_SECS`, default 30).
    pub resync_interval: Duration,
    /// Replaces every container's `restartPolicy.restartAttemptPeriod`
    /// (`GANTRY_RESTART_ATTEMPT_PERIOD_SECS`, unset by default; 0 is ignored). It exists for
    /// tests: ECS's minimum period is 60 s, which would make every restart test a minute long.
    pub restart_attempt_period: Option<Duration>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            cleanup_wait: Duration::from_secs(3600),
            max_stopped_tasks: 100,
            resync_interval: Duration::from_secs(30),
            restart_attempt_period: None,
        }
    }
}

impl AgentOptions {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`AgentOptions::from_env`] with the variables read through `var`, so that the parsing is
    /// tested without touching the process environment (shared by tests running in parallel).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut o = AgentOptions::default();
        let num = |k: &str| var(k).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(v) = num("GANTRY_TASK_CLEANUP_WAIT_SECS") {
            o.cleanup_wait = Duration::from_secs(v);
        }
        if let Some(v) = num("GANTRY_MAX_STOPPED_TASKS") {
            o.max_stopped_tasks = v as usize;
        }
        if let Some(v) = num("GANTRY_RESYNC_SECS").filter(|v| *v > 0) {
            o.resync_interval = Duration::from_secs(v);
        }
        // 0 would restart a crashing container in a tight loop; it is treated as unset.
        if let Some(v) = num("GANTRY_RESTART_ATTEMPT_PERIOD_SECS").filter(|v| *v > 0) {
            o.restart_attempt_period = Some(Duration::from_secs(v));
        }
        o
    }
}

/// CPU units to register: the configured value or cores × 1024.
pub fn default_cpu_units() -> i64 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores as i64 * 1024
}

/// MiB of memory to register: MemTotal from /proc/meminfo (or 1024 if it cannot be read).
pub fn default_memory_mib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_total_mib(&s))
        .unwrap_or(1024)
}

pub fn parse_meminfo_total_mib(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line
        .trim_start_matches("MemTotal:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// `ecs.cpu-architecture` as ECS spells it.
pub fn cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "x86_64",
        other => other,
    }
}

/// What the agent keeps in `data_dir/agent-state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    /// The cluster the ARN belongs to, as configured; a different cluster means a new identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The credentials the control plane issued to this instance at registration (the file
    /// is written with mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SavedCredentials>,
}

/// An agent's own access key, bound to its container instance by the control plane.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl std::fmt::Debug for SavedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

pub const STATE_FILE: &str = "agent-state.json";

pub fn load_state(data_dir: &Path) -> AgentState {
    let path = data_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unreadable agent state: {e}");
                AgentState::default()
            }
        },
        Err(_) => AgentState::default(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // 0600: the agent's state holds its credentials.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}

pub fn save_state(data_dir: &Path, state: &AgentState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    write_atomic(&data_dir.join(STATE_FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        let s = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo_total_mib(s), Some(24000));
        assert_eq!(parse_meminfo_total_mib("nothing"), None);
    }

    #[test]
    fn options_from_environment_variables() {
        assert_eq!(AgentOptions::from_lookup(|_| None), AgentOptions::default());
        let o = AgentOptions::from_lookup(|k| match k {
            "GANTRY_TASK_CLEANUP_WAIT_SECS" => Some("5".into()),
            "GANTRY_RESTART_ATTEMPT_PERIOD_SECS" => Some(" 2 ".into()),
            _ => None,
        });
        assert_eq!(o.cleanup_wait, Duration::from_secs(5));
        assert_eq!(o.restart_attempt_period, Some(Duration::from_secs(2)));
        for bad in ["0", "x", ""] {
            let o = AgentOptions::from_lookup(|k| {
                (k == "GANTRY_RESTART_ATTEMPT_PERIOD_SECS").then(|| bad.to_string())
            });
            assert_eq!(o.restart_attempt_period, None, "{bad:?}");
        }
    }

    #[test]
    fn state_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_state(dir.path()), AgentState::default());
        let st = AgentState {
            container_instance_arn: Some("arn:x".into()),
            cluster: Some("default".into()),
            credentials: Some(SavedCredentials {
                access_key_id: "AKIA".into(),
                secret_access_key: "secret".into(),
                region: "us-east-1".into(),
            }),
        };
        save_state(dir.path(), &st).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_state(dir.path()), st);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_string()]);
    }
}
