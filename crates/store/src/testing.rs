//! Local etcd clusters for tests and benchmarks: Debian's `etcd` (package `etcd-server`, which
//! `.ci/run` installs), every member on loopback ports, data under a directory the caller owns.
//! Members can be killed (`SIGKILL`) and started again on the same data, to test what the
//! control plane does when etcd loses a member or its quorum.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{EtcdConfig, EtcdStore, KvStore};

/// The etcd binary: `$GANTRY_ETCD_BIN`, else `etcd` on the `PATH`.
pub fn etcd_binary() -> String {
    std::env::var("GANTRY_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// A running etcd cluster of one or more members. Dropping it kills every member.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    max_txn_ops: u32,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A loopback port nobody listens on at the moment of asking.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

impl EtcdCluster {
    /// Starts `size` members under `dir` and waits until the cluster takes writes.
    /// Gantry's transactions can name more keys than etcd's default `--max-txn-ops` of 128:
    /// these members allow 10,000.
    pub async fn start(dir: &Path, size: usize) -> Result<EtcdCluster, String> {
        Self::start_with_max_txn_ops(dir, size, 10_000).await
    }

    /// [`EtcdCluster::start`] with etcd's `--max-txn-ops` set to `max_txn_ops` (etcd's
    /// default is 128), for what must work on an etcd configured as shipped.
    pub async fn start_with_max_txn_ops(
        dir: &Path,
        size: usize,
        max_txn_ops: u32,
    ) -> Result<EtcdCluster, String> {
        let token = format!("gantry-test-{}", std::process::id());
        let mut members = Vec::new();
        for i in 0..size.max(1) {
            let name = format!("m{i}");
            members.push(Member {
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.join(format!("{name}.etcd")),
                log: dir.join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            max_txn_ops,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let initial_cluster = self.initial_cluster.clone();
        let token = self.token.clone();
        let max_txn_ops = self.max_txn_ops.to_string();
        let m = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("cannot open {}: {e}", m.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", m.log.display()))?;
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(etcd_binary())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--max-txn-ops", &max_txn_ops])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e}. Install Debian's etcd-server package (.ci/run does), or set GANTRY_ETCD_BIN.",
                    etcd_binary()
                )
            })?;
        m.child = Some(child);
        Ok(())
    }

    /// `HOST:PORT` of every member's client listener.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The `--store` value naming this cluster (namespace `gantry/`).
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// A store configuration for this cluster under `namespace` (ending with `/`).
    pub fn config(&self, namespace: &str) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.endpoints());
        config.namespace = namespace.to_string();
        config
    }

    /// Kills member `i` at once (`SIGKILL`), as a machine loss would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)
    }

    /// What member `i` has logged (for a failing test's message).
    pub fn log(&self, i: usize) -> String {
        self.members
            .get(i)
            .and_then(|m| std::fs::read_to_string(&m.log).ok())
            .unwrap_or_default()
    }

    /// Waits until a write through every member's endpoint list commits.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            match EtcdStore::connect(&self.config("readiness/")).await {
                Ok(store) => match store
                    .txn(crate::Txn {
                        success: vec![crate::TxnOp::Put {
                            key: "probe".into(),
                            value: Vec::new(),
                        }],
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "etcd did not take writes within {limit:?}: {last}\n{}",
            (0..self.members.len())
                .map(|i| self.log(i))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
