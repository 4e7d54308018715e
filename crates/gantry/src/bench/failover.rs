//! `gantry bench failover`: how long the controllers go without a leader when the leading
//! replica dies.
//!
//! An etcd cluster on loopback ports (`gantry_store::testing::EtcdCluster`) and N `gantry
//! server --store etcd://...` replicas, child processes of this executable with one shared
//! master key, as `crates/gantry/tests/ha.rs` runs them. Per run: one simulated agent connects
//! to the leader, the leader gets SIGKILL, and the survivors are asked every 20 ms:
//!
//! - **elected**: a survivor's `GantryV1.DescribeReplicas` says it leads (`servedBy.leadership`
//!   is `LEADER`): the dead leader's lease expired, etcd deleted its key and a survivor won
//!   the race to create it;
//! - **acting**: the dead leader's agent shows `agentConnected: false` on a survivor. Nothing
//!   but the leader writes that: on taking over, the new leader's janitor marks the agents of
//!   replicas that are gone as disconnected (`mark_orphaned_agents_disconnected`), a write
//!   fenced on its leadership, read back here through a survivor's state cache. The other
//!   deciding controllers (services, lost hosts, task keys) are woken by the same transition.
//!
//! Then the killed replica is started again on its data directory and port, and the next run
//! begins once all N are registered and one leads, so every run kills one of N.

use crate::bench::agents::Fleet;
use crate::bench::stats::Latency;
use crate::client::ApiClient;
use crate::credentials::{read_profile, Credentials, CREDENTIALS_FILE, PROFILE, TOKEN_FILE};
use base64::Engine;
use clap::Args;
use gantry_store::testing::EtcdCluster;
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Goal to compare with: a new leader, and its controllers acting, in under 5 s after the leader
dies (Kubernetes' controller-manager, with its default 15 s lease, takes about 15 s; not run
here). The lease's TTL (--lease-ttl, 3 s by default) sets the floor: keep-alives go every
third of it, so a killed leader's lease runs out between 2/3 of the TTL and the TTL after
the kill, and etcd looks for expired leases every 500 ms.

Example:
  gantry bench failover --replicas 3 --runs 7";

const CLUSTER: &str = "failover";
/// Region the replicas run in and requests are signed for.
const REGION: &str = "us-east-1";
/// How often the survivors are asked.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Bound on one call to a replica (a killed one refuses at once; a live one answers in ms).
const CALL_LIMIT: Duration = Duration::from_secs(1);
/// The goal a failover is compared with.
const GOAL: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct FailoverArgs {
    /// `gantry server` replicas to run (one is killed per run and started again after it).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(2..=9))]
    pub replicas: u64,
    /// Leader kills to measure.
    #[arg(long, value_name = "RUNS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub runs: u64,
    /// Each replica's etcd lease TTL in seconds (`gantry server --lease-ttl`).
    #[arg(long, value_name = "SECONDS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(2..=60))]
    pub lease_ttl: u64,
    /// Members of the etcd cluster started on loopback for the run.
    #[arg(long, value_name = "MEMBERS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=7))]
    pub etcd_members: u64,
    /// Give up on a run (or on the replicas starting) after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One failover: which replica was killed, which took over, and when (from the kill).
struct Run {
    killed: usize,
    new_leader: usize,
    elected: Duration,
    acting: Duration,
}

pub async fn run(args: FailoverArgs) -> Result<ExitCode, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let runs = match measure(&args, dir.path()).await {
        Ok(runs) => runs,
        Err(e) => {
            // Kept for a look at what the replicas and etcd logged.
            let kept = dir.keep();
            return Err(format!(
                "{e}; the replicas' and etcd's logs are in {}",
                kept.display()
            ));
        }
    };
    let elected = Latency::of(&runs.iter().map(|r| r.elected).collect::<Vec<_>>());
    let acting = Latency::of(&runs.iter().map(|r| r.acting).collect::<Vec<_>>());
    let min = |f: fn(&Run) -> Duration| runs.iter().map(f).min().unwrap_or_default();
    let (elected_min, acting_min) = (min(|r| r.elected), min(|r| r.acting));
    let secs = |us: f64| (us / 1e4).round() / 100.0;
    let verdict = |us: f64| {
        if us < GOAL.as_secs_f64() * 1e6 {
            "met"
        } else {
            "missed"
        }
    };
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "failover",
                "replicas": args.replicas,
                "etcd_members": args.etcd_members,
                "lease_ttl_secs": args.lease_ttl,
                "runs": runs.len(),
                "elected_secs": runs.iter().map(|r| (r.elected.as_secs_f64() * 100.0).round() / 100.0).collect::<Vec<_>>(),
                "acting_secs": runs.iter().map(|r| (r.acting.as_secs_f64() * 100.0).round() / 100.0).collect::<Vec<_>>(),
                "elected_median_secs": secs(elected.p50_us),
                "elected_min_secs": secs(elected_min.as_secs_f64() * 1e6),
                "elected_max_secs": secs(elected.max_us),
                "acting_median_secs": secs(acting.p50_us),
                "acting_min_secs": secs(acting_min.as_secs_f64() * 1e6),
                "acting_max_secs": secs(acting.max_us),
                "goal_secs": GOAL.as_secs(),
            })
        );
    } else {
        println!(
            "new leader:          median {:.2} s (min {:.2}, max {:.2}) over {} runs; goal < {} s: {}",
            secs(elected.p50_us),
            elected_min.as_secs_f64(),
            secs(elected.max_us),
            runs.len(),
            GOAL.as_secs(),
            verdict(elected.p50_us)
        );
        println!(
            "controllers acting:  median {:.2} s (min {:.2}, max {:.2}); goal < {} s: {}",
            secs(acting.p50_us),
            acting_min.as_secs_f64(),
            secs(acting.max_us),
            GOAL.as_secs(),
            verdict(acting.p50_us)
        );
        println!(
            "  (Kubernetes' controller-manager: about 15 s with its default lease; not run here)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts etcd and the replicas under `dir` and measures `args.runs` failovers; everything
/// it started is killed when it returns.
async fn measure(args: &FailoverArgs, dir: &Path) -> Result<Vec<Run>, String> {
    let etcd_dir = dir.join("etcd");
    std::fs::create_dir(&etcd_dir).map_err(|e| format!("{}: {e}", etcd_dir.display()))?;
    let etcd = EtcdCluster::start(&etcd_dir, args.etcd_members as usize).await?;
    let limit = Duration::from_secs(args.timeout);
    let mut replicas = Replicas::start(args, dir, &etcd.store_url(), limit).await?;
    if !args.json {
        println!(
            "{} replicas on a {}-member etcd (lease TTL {} s); {} runs, the leader killed \
             (SIGKILL) in each…",
            args.replicas, args.etcd_members, args.lease_ttl, args.runs
        );
    }
    let mut runs = Vec::new();
    for n in 1..=args.runs {
        let run = replicas
            .failover(limit)
            .await
            .map_err(|e| format!("run {n}: {e}"))?;
        if !args.json {
            println!(
                "run {n}: killed r{}; r{} leads after {:.2} s; its controllers acted after {:.2} s",
                run.killed,
                run.new_leader,
                run.elected.as_secs_f64(),
                run.acting.as_secs_f64()
            );
        }
        runs.push(run);
    }
    // The replicas before etcd, so none of them logs etcd going away.
    drop(replicas);
    drop(etcd);
    Ok(runs)
}

/// One `gantry server` child process slot: its port and data directory stay across restarts.
struct Replica {
    port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// The replicas, killed (SIGKILL) when dropped.
struct Replicas {
    replicas: Vec<Replica>,
    /// A client of each replica, signing as the administrator.
    clients: Vec<ApiClient>,
    dir: PathBuf,
    exe: PathBuf,
    store_url: String,
    lease_ttl: u64,
    master_key: String,
    token: String,
    starts: usize,
}

impl Replicas {
    /// Starts the first replica, waits for the administrator's keys and the join token it
    /// writes, then starts the others (which find both in the store), and creates the
    /// benchmark's cluster.
    async fn start(
        args: &FailoverArgs,
        dir: &Path,
        store_url: &str,
        limit: Duration,
    ) -> Result<Replicas, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this executable to start replicas: {e}"))?;
        let replicas = (0..args.replicas as usize)
            .map(|i| {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
                Ok(Replica {
                    port,
                    data_dir: dir.join(format!("r{i}")),
                    child: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut r = Replicas {
            replicas,
            clients: Vec::new(),
            dir: dir.to_path_buf(),
            exe,
            store_url: store_url.to_string(),
            lease_ttl: args.lease_ttl,
            master_key: base64::engine::general_purpose::STANDARD
                .encode(rand::random::<[u8; 32]>()),
            token: String::new(),
            starts: 0,
        };
        let deadline = Instant::now() + limit;
        r.spawn(0)?;
        let (credentials, token) = first_start_files(&r.replicas[0].data_dir, deadline).await?;
        r.token = token;
        r.clients = r
            .replicas
            .iter()
            .map(|replica| {
                ApiClient::with_credentials(
                    &format!("http://127.0.0.1:{}", replica.port),
                    credentials.clone(),
                    REGION,
                )
            })
            .collect();
        for i in 1..r.replicas.len() {
            r.spawn(i)?;
        }
        r.steady_leader(deadline).await?;
        let created = tokio::time::timeout(
            CALL_LIMIT * 5,
            r.clients[0].ecs("CreateCluster", json!({ "clusterName": CLUSTER })),
        )
        .await;
        match created {
            Ok(Ok(_)) => Ok(r),
            Ok(Err(e)) => Err(format!("CreateCluster: {e}")),
            Err(_) => Err("CreateCluster did not answer within 5 s".into()),
        }
    }

    /// Starts replica `i` (again): `gantry server` on its port, data directory and the store.
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        self.starts += 1;
        let log_path = self.dir.join(format!("r{i}-{}.log", self.starts));
        let log = File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let replica = &mut self.replicas[i];
        let child = Command::new(&self.exe)
            .args(["server", "--listen", &format!("127.0.0.1:{}", replica.port)])
            .args(["--store", &self.store_url])
            .args(["--lease-ttl", &self.lease_ttl.to_string()])
            .args(["--region", REGION])
            .arg("--data-dir")
            .arg(&replica.data_dir)
            .env(gantry_vault::MASTER_KEY_ENV, &self.master_key)
            .env_remove("GANTRY_ADVERTISE_URL")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        replica.child = Some(child);
        Ok(())
    }

    /// SIGKILL to replica `i`, as a machine loss would.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every replica answers, sees all N registered, and exactly one leads;
    /// returns that one.
    async fn steady_leader(&self, deadline: Instant) -> Result<usize, String> {
        let n = self.replicas.len();
        loop {
            let answers = futures::future::join_all(self.clients.iter().map(describe)).await;
            let all_registered = answers.iter().all(|a| {
                a.as_ref()
                    .and_then(|v| v["replicas"].as_array())
                    .is_some_and(|r| r.len() == n)
            });
            let leaders: Vec<usize> = (0..n)
                .filter(|i| leadership(answers[*i].as_ref()) == Some("LEADER"))
                .collect();
            if all_registered && leaders.len() == 1 {
                return Ok(leaders[0]);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the {n} replicas did not all register under one leader in time (leaders: {leaders:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One measured failover, then the killed replica started again.
    async fn failover(&mut self, limit: Duration) -> Result<Run, String> {
        let deadline = Instant::now() + limit;
        let leader = self.steady_leader(deadline).await?;
        let survivors: Vec<usize> = (0..self.replicas.len()).filter(|i| *i != leader).collect();
        let endpoint = format!("http://127.0.0.1:{}", self.replicas[leader].port);
        let fleet = Fleet::register(&endpoint, CLUSTER, 1, &self.token, limit).await?;
        let instance = fleet.arns.first().cloned().unwrap_or_default();
        // Before the kill, a survivor sees the agent connected through the leader.
        loop {
            if agent_connected(&self.clients[survivors[0]], &instance).await == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                return Err("the agent never showed as connected on a follower".into());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }

        let killed_at = Instant::now();
        self.kill(leader);
        let (mut elected, mut acting) = (None, None);
        while elected.is_none() || acting.is_none() {
            let tick = Instant::now();
            if tick > deadline {
                fleet.stop().await;
                return Err(format!(
                    "{:.0} s after the leader was killed: new leader {}, controllers acting {}",
                    killed_at.elapsed().as_secs_f64(),
                    if elected.is_some() { "yes" } else { "no" },
                    if acting.is_some() { "yes" } else { "no" },
                ));
            }
            if elected.is_none() {
                let answers = futures::future::join_all(
                    survivors.iter().map(|i| describe(&self.clients[*i])),
                )
                .await;
                if let Some(pos) = answers
                    .iter()
                    .position(|a| leadership(a.as_ref()) == Some("LEADER"))
                {
                    elected = Some((survivors[pos], killed_at.elapsed()));
                }
            }
            if acting.is_none() {
                let answers = futures::future::join_all(
                    survivors
                        .iter()
                        .map(|i| agent_connected(&self.clients[*i], &instance)),
                )
                .await;
                if answers.contains(&Some(false)) {
                    acting = Some(killed_at.elapsed());
                }
            }
            tokio::time::sleep_until((tick + POLL_EVERY).into()).await;
        }
        fleet.stop().await;
        self.spawn(leader)?;
        let (new_leader, elected) = elected.unwrap_or((leader, Duration::ZERO));
        Ok(Run {
            killed: leader,
            new_leader,
            elected,
            acting: acting.unwrap_or_default(),
        })
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
    }
}

/// The administrator's keys and the agents' join token the first replica writes to its data
/// directory on first start.
async fn first_start_files(
    data_dir: &Path,
    deadline: Instant,
) -> Result<(Credentials, String), String> {
    loop {
        let credentials = read_profile(&data_dir.join(CREDENTIALS_FILE), PROFILE);
        let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let (Some(credentials), Some(token)) = (credentials, token) {
            return Ok((credentials, token));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the first replica did not write {} and {} in {} in time",
                CREDENTIALS_FILE,
                TOKEN_FILE,
                data_dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GantryV1.DescribeReplicas` asked of one replica; `None` when it does not answer in time.
async fn describe(client: &ApiClient) -> Option<Value> {
    tokio::time::timeout(CALL_LIMIT, client.gantry("DescribeReplicas", json!({})))
        .await
        .ok()?
        .ok()
}

/// What the replica that answered says of itself: `LEADER`, `FOLLOWER` (or `SOLE`).
fn leadership(answer: Option<&Value>) -> Option<&str> {
    answer?["servedBy"]["leadership"].as_str()
}

/// `agentConnected` of `instance` as one replica's state shows it.
async fn agent_connected(client: &ApiClient, instance: &str) -> Option<bool> {
    let v = tokio::time::timeout(
        CALL_LIMIT,
        client.ecs(
            "DescribeContainerInstances",
            json!({ "cluster": CLUSTER, "containerInstances": [instance] }),
        ),
    )
    .await
    .ok()?
    .ok()?;
    v["containerInstances"][0]["agentConnected"].as_bool()
}
