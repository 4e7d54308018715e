//! The control plane on etcd (`gantry server --store etcd://...`): real etcd members started
//! by the test on loopback, real `gantry server` and `gantry agent` processes, real
//! containers, the AWS SDK as the client.

mod common;

use common::*;
use gantry_store::testing::EtcdCluster;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// One master key for every replica (replicas on etcd must share it).
fn master_key_env() -> Vec<(String, String)> {
    use base64::Engine;
    let key: [u8; 32] = rand::random();
    vec![(
        "GANTRY_MASTER_KEY".to_string(),
        base64::engine::general_purpose::STANDARD.encode(key),
    )]
}

/// A task definition whose one container sleeps for an hour.
async fn sleeper(c: &aws_sdk_ecs::Client, prefix: &str) -> String {
    register(
        c,
        &unique(prefix),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await
}

/// When Docker last started `container`.
fn started_at(container: &str) -> String {
    sh(&format!(
        "docker inspect -f '{{{{.State.StartedAt}}}}' {container}"
    ))
}

async fn etcd(members: usize) -> (tempfile::TempDir, EtcdCluster) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = EtcdCluster::start(dir.path(), members)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, cluster)
}

#[tokio::test]
async fn a_server_on_etcd_runs_tasks_and_keeps_them_across_a_restart() {
    let (etcd_dir, etcd) = etcd(1).await;
    let url = etcd.store_url();
    let mut split = Split::start_with_env(1, &["--store", &url], &master_key_env()).await;
    let c = split.client.clone();
    let td = sleeper(&c, "etcd").await;
    let arn = run_one(&c, &split.cluster, &td).await;
    wait_task(&c, &split.cluster, &arn, "RUNNING", T).await;

    // kill -9 of the server: everything it acknowledged is in etcd, and the restarted server
    // (same store) knows the task, the agent reconnects, the container was never touched.
    let before = split.containers();
    split.restart_server().await;
    split.wait_connected(1).await;
    let tasks = eventually(T, "the task after the restart", || {
        let c = c.clone();
        let cluster = split.cluster.clone();
        let arn = arn.clone();
        async move {
            let out = c
                .describe_tasks()
                .cluster(cluster)
                .tasks(arn)
                .send()
                .await
                .ok()?;
            (out.tasks().first()?.last_status() == Some("RUNNING")).then(|| out.tasks().to_vec())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    assert_eq!(tasks.len(), 1);
    assert_eq!(split.containers(), before, "the container was left alone");

    // The keys live in etcd under the namespace, not in a state.db.
    assert!(
        !split.dir.path().join("server/state.db").exists(),
        "an etcd-backed server wrote a state.db"
    );
    let store = gantry_store::EtcdStore::connect(&etcd.config("gantry/"))
        .await
        .expect("etcd");
    let (keys, _) = gantry_store::KvStore::range(&store, "tasks/")
        .await
        .expect("range");
    assert!(
        keys.iter()
            .any(|kv| arn.ends_with(kv.key.rsplit('/').next().unwrap_or("-"))),
        "the task's record is in etcd"
    );

    // Secrets and SecureStrings reach etcd sealed: neither its keys nor its files on disk
    // (its database and write-ahead log) hold the plaintext.
    let plaintext = format!("etcd-plaintext-{}", unique("v").replace('-', ""));
    // A name is stored as it is: found in etcd's files, it shows the scan reaches where
    // etcd keeps what it is given.
    let secret_name = unique("sealed");
    for (service, target, input) in [
        (
            "secretsmanager",
            "secretsmanager.CreateSecret",
            serde_json::json!({"Name": secret_name, "SecretString": plaintext}),
        ),
        (
            "ssm",
            "AmazonSSM.PutParameter",
            serde_json::json!({"Name": format!("/{}", unique("sealed")), "Type": "SecureString", "Value": plaintext}),
        ),
    ] {
        let (status, answer) =
            signed_json(&split.endpoint, &split.keys, service, target, &input).await;
        assert_eq!(status, 200, "{target}: {answer}");
    }
    let (everything, _) = gantry_store::KvStore::range(&store, "")
        .await
        .expect("range");
    assert!(
        everything
            .iter()
            .any(|kv| kv.key.starts_with("secretsmanager/")),
        "no secret in etcd"
    );
    assert!(
        !everything
            .iter()
            .any(|kv| String::from_utf8_lossy(&kv.value).contains(&plaintext)),
        "a plaintext value in etcd's keys"
    );
    let contains =
        |bytes: &[u8], text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
    let mut files = vec![etcd_dir.path().to_path_buf()];
    let mut name_found = false;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("etcd dir")
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let Ok(bytes) = std::fs::read(&path) {
            name_found |= contains(&bytes, &secret_name);
            assert!(
                !contains(&bytes, &plaintext),
                "the plaintext is in {}",
                path.display()
            );
        }
    }
    assert!(
        name_found,
        "the scan found not even the secret's name in etcd's files"
    );
}

#[tokio::test]
async fn a_server_on_etcd_without_a_shared_master_key_refuses_to_start() {
    let (_etcd_dir, etcd) = etcd(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let out = std::process::Command::new(gantry_bin())
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            &etcd.store_url(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("GANTRY_MASTER_KEY")
        .output()
        .expect("gantry server");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("GANTRY_MASTER_KEY") && text.contains("same master key"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_whose_etcd_is_unreachable_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let dead = free_port();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(gantry_bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", &format!("etcd://127.0.0.1:{dead}")])
        .arg("--data-dir")
        .arg(dir.path())
        .envs(master_key_env())
        .output()
        .expect("gantry server");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot reach the store"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// Three `gantry server` replicas on one etcd cluster, and agents connected to them.
struct Replicas {
    servers: Vec<Proc>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    store_url: String,
    keys: Keys,
    agents: Vec<Proc>,
    cluster: String,
    restarts: usize,
    lost_host_after: u64,
}

impl Replicas {
    async fn start(etcd: &EtcdCluster, n: usize) -> Replicas {
        Self::start_with(etcd, n, 600).await
    }

    async fn start_with(etcd: &EtcdCluster, n: usize, lost_host_after: u64) -> Replicas {
        ensure_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Replicas {
            servers: Vec::new(),
            ports: (0..n).map(|_| free_port()).collect(),
            dir,
            env: master_key_env(),
            store_url: etcd.store_url(),
            keys: Keys {
                id: String::new(),
                secret: String::new(),
                session_token: None,
            },
            agents: Vec::new(),
            cluster: unique("ha"),
            restarts: 0,
            lost_host_after,
        };
        // The first replica creates the administrator and writes its keys; the others find
        // it in the store.
        let first = r.spawn(0);
        r.servers.push(first);
        r.keys = admin_keys(&r.dir.path().join("r0"));
        for i in 1..n {
            let p = r.spawn(i);
            r.servers.push(p);
        }
        for i in 0..n {
            let c = r.client(i).await;
            let cluster = r.cluster.clone();
            eventually(T, "every replica to answer", || {
                let c = c.clone();
                let cluster = cluster.clone();
                async move { c.create_cluster().cluster_name(cluster).send().await.ok() }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
        }
        r
    }

    fn spawn(&mut self, i: usize) -> Proc {
        self.restarts += 1;
        let args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.ports[i]),
            "--store".into(),
            self.store_url.clone(),
            "--data-dir".into(),
            self.dir.path().join(format!("r{i}")).display().to_string(),
            "--lost-host-after".into(),
            self.lost_host_after.to_string(),
        ];
        Proc::spawn_with_env(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &self.env,
            self.dir.path().join(format!("r{i}-{}.log", self.restarts)),
        )
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    async fn client(&self, i: usize) -> aws_sdk_ecs::Client {
        client_for(&self.endpoint(i), &self.keys).await
    }

    /// An agent connected to replica `i`.
    async fn add_agent(&mut self, i: usize) {
        let server = self.endpoint(i);
        self.add_agent_with_servers(&server, i).await;
    }

    /// An agent given `servers` (`--server`), waited for through replica `ask`.
    async fn add_agent_with_servers(&mut self, servers: &str, ask: usize) {
        let i = ask;
        let n = self.agents.len();
        let args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            servers.to_string(),
            "--cluster".into(),
            self.cluster.clone(),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("agent-{n}"))
                .display()
                .to_string(),
            "--cpu".into(),
            "4096".into(),
            "--memory".into(),
            "4096".into(),
            "--token".into(),
            join_token(&self.dir.path().join("r0")),
        ];
        self.agents.push(Proc::spawn(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            self.dir.path().join(format!("agent-{n}.log")),
        ));
        let c = self.client(i).await;
        wait_connected(&c, &self.cluster, self.agents.len())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.dump()));
    }

    /// `gantry status --json` asked of replica `i`.
    async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = tokio::process::Command::new(gantry_bin())
            .args(["status", "--json", "--endpoint", &self.endpoint(i)])
            .envs(self.keys.env())
            .output()
            .await
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Which replica (index) leads, once every live replica agrees on a leader.
    async fn leader(&self, live: &[usize]) -> Option<usize> {
        let mut seen = None;
        for &i in live {
            let s = self.status(i).await?;
            let address = s["leader"]["address"].as_str()?.to_string();
            let idx = self
                .ports
                .iter()
                .position(|p| address.ends_with(&format!(":{p}")))?;
            if seen.is_some_and(|s| s != idx) {
                return None;
            }
            seen = Some(idx);
        }
        seen
    }

    fn containers(&self) -> Vec<String> {
        containers_with_label(&format!(
            "com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{}",
            self.cluster
        ))
    }

    fn dump(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                out.push_str(&format!("\n--- {} ---\n", path.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill9();
        }
        for s in &mut self.servers {
            s.kill9();
        }
        remove_containers(&format!(
            "com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{}",
            self.cluster
        ));
    }
}

#[tokio::test]
async fn replicas_elect_one_leader_and_a_rollout_completes_after_the_leader_is_killed() {
    use aws_sdk_ecs::types::DeploymentConfiguration;
    let (_etcd_dir, etcd) = etcd(3).await;
    let mut r = Replicas::start(&etcd, 3).await;
    let leader = eventually(T, "one leader that every replica names", || {
        r.leader(&[0, 1, 2])
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let status = r.status(leader).await.expect("status");
    assert_eq!(
        status["replicas"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(status["servedBy"]["leadership"], "LEADER", "{status}");
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let other = (0..3)
        .find(|i| *i != leader && *i != follower)
        .expect("another");

    // The agent talks to a follower, which serves the API as well as the leader does.
    r.add_agent(follower).await;
    let c = r.client(follower).await;
    let service = unique("web");
    let v1 = sleeper(&c, "ha-v1").await;
    c.create_service()
        .cluster(&r.cluster)
        .service_name(&service)
        .task_definition(&v1)
        .desired_count(3)
        .send()
        .await
        .expect("CreateService");
    common::svc::wait_steady(&c, &r.cluster, &service, 3, &v1, T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));

    // A rolling deployment, and the leader killed while it runs.
    let v2 = register(
        &c,
        &unique("ha-v2"),
        vec![busybox_container("app", &["sleep", "3601"])],
    )
    .await;
    c.update_service()
        .cluster(&r.cluster)
        .service(&service)
        .task_definition(&v2)
        .deployment_configuration(
            DeploymentConfiguration::builder()
                .minimum_healthy_percent(100)
                .maximum_percent(134)
                .build(),
        )
        .send()
        .await
        .expect("UpdateService");
    let killed_at = std::time::Instant::now();
    r.servers[leader].kill9();

    // Another replica leads within a few seconds (the lease's TTL is 3 s).
    let survivors = [follower, other];
    let new_leader = eventually(T, "a new leader", || async {
        r.leader(&survivors).await.filter(|l| *l != leader)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );

    // The rollout completes under the new leader, on the write the old one acknowledged.
    let (_, tasks) =
        common::svc::wait_steady(&c, &r.cluster, &service, 3, &v2, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    assert_eq!(tasks.len(), 3);

    // No task was started twice: each task of the service has one container, and the
    // containers running are exactly the running tasks' containers.
    let all = common::svc::service_tasks(&c, &r.cluster, &service).await;
    let mut runtime_ids: Vec<String> = all
        .iter()
        .flat_map(|t| {
            t.containers()
                .iter()
                .filter_map(|c| c.runtime_id().map(String::from))
        })
        .collect();
    let before = runtime_ids.len();
    runtime_ids.sort();
    runtime_ids.dedup();
    assert_eq!(before, runtime_ids.len(), "a container shared by two tasks");
    let running: Vec<String> = tasks.iter().map(common::svc::first_runtime_id).collect();
    let live = r.containers();
    for id in &running {
        assert!(
            live.iter()
                .any(|l| id.starts_with(l.as_str()) || l.starts_with(id.as_str())),
            "running task's container {id} is not on the engine: {live:?}"
        );
    }
    let running_containers = live
        .iter()
        .filter(|l| sh(&format!("docker inspect -f '{{{{.State.Running}}}}' {l}")).trim() == "true")
        .count();
    assert_eq!(
        running_containers,
        3,
        "exactly the three tasks' containers run\n{}",
        r.dump()
    );
}

#[tokio::test]
async fn what_one_replica_acknowledged_every_replica_reads_at_once_including_a_revoked_key() {
    let (_etcd_dir, etcd) = etcd(1).await;
    let r = Replicas::start(&etcd, 2).await;
    let (a, b) = (r.client(0).await, r.client(1).await);
    // Written through one replica, read through the other right after the answer: never
    // missing (each request first catches up with the latest acknowledged write), also
    // while other writers keep the other replica's cache busy.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut noise = Vec::new();
    for w in 0..4 {
        let (a, stop) = (a.clone(), stop.clone());
        noise.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                let family = unique(&format!("noise{w}"));
                register(&a, &family, vec![busybox_container("app", &["true"])]).await;
                n += 1;
            }
        }));
    }
    for i in 0..60 {
        let family = unique(&format!("ryw{i}"));
        register(&a, &family, vec![busybox_container("app", &["true"])]).await;
        b.describe_task_definition()
            .task_definition(&family)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("round {i}: the other replica does not see {family}: {e:?}")
            });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for n in noise {
        n.await.expect("writer");
    }

    // An IAM key made on one replica works on the other at once, and once deleted on the
    // first it is refused by the second at once.
    let aws_a = Aws::at(&r.endpoint(0), &r.keys);
    aws_a
        .ok(&["iam", "create-user", "--user-name", "ops"])
        .await;
    aws_a
        .ok(&[
            "iam",
            "attach-user-policy",
            "--user-name",
            "ops",
            "--policy-arn",
            "arn:aws:iam::aws:policy/AdministratorAccess",
        ])
        .await;
    let key = aws_a
        .ok(&["iam", "create-access-key", "--user-name", "ops"])
        .await;
    let ops = Keys {
        id: key["AccessKey"]["AccessKeyId"]
            .as_str()
            .expect("id")
            .to_string(),
        secret: key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .expect("secret")
            .to_string(),
        session_token: None,
    };
    let as_ops_on_b = client_for(&r.endpoint(1), &ops).await;
    as_ops_on_b
        .list_clusters()
        .send()
        .await
        .expect("a key made on replica 0 works on replica 1");
    aws_a
        .ok(&[
            "iam",
            "delete-access-key",
            "--user-name",
            "ops",
            "--access-key-id",
            &ops.id,
        ])
        .await;
    let refused = as_ops_on_b.list_clusters().send().await;
    let err = refused.expect_err("a key deleted on replica 0 is refused by replica 1 at once");
    let code = aws_sdk_ecs::error::ProvideErrorMetadata::code(&err).unwrap_or("");
    assert!(
        code == "UnrecognizedClientException" || code == "InvalidClientTokenId",
        "refused as an unknown key, not {code}: {err:?}"
    );
}

#[tokio::test]
async fn an_agent_on_a_killed_replica_moves_to_another_and_its_task_runs_on_untouched() {
    let (_etcd_dir, etcd) = etcd(1).await;
    let mut r = Replicas::start(&etcd, 2).await;
    let leader = eventually(T, "a leader", || r.leader(&[0, 1]))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let other = 1 - leader;
    // The agent knows both replicas and starts on the leader (its first choice is a hash of
    // its host and data directory: the list is ordered so that it lands on the leader).
    let data_dir = r.dir.path().join("agent-0");
    let first =
        gantry_agent::servers::start_index(&gantry_agent::servers::agent_seed(&data_dir), 2);
    let mut servers = [r.endpoint(other), r.endpoint(other)];
    servers[first] = r.endpoint(leader);
    servers[1 - first] = r.endpoint(other);
    r.add_agent_with_servers(&servers.join(","), other).await;

    let c = r.client(other).await;
    let td = sleeper(&c, "move").await;
    let arn = run_one(&c, &r.cluster, &td).await;
    wait_task(&c, &r.cluster, &arn, "RUNNING", T).await;
    let before = r.containers();
    assert_eq!(before.len(), 1);
    let first_start = started_at(&before[0]);

    r.servers[leader].kill9();
    // The other replica leads, the agent is connected through it, the task never stopped.
    eventually(T, "the survivor to lead", || async {
        r.leader(&[other]).await.filter(|l| *l == other)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    wait_connected(&c, &r.cluster, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let task = &svc::describe_task_arns(&c, &r.cluster, std::slice::from_ref(&arn)).await[0];
    assert_eq!(task.last_status(), Some("RUNNING"));
    assert_eq!(r.containers(), before, "the container was left alone");
    assert_eq!(
        started_at(&before[0]),
        first_start,
        "the container was not restarted"
    );
    // The leader's sweep of the dead replica's agents does not count this one as gone: it
    // stays connected, and new work reaches it.
    let second = run_one(&c, &r.cluster, &td).await;
    wait_task(&c, &r.cluster, &second, "RUNNING", T).await;
    let instances = c
        .describe_container_instances()
        .cluster(&r.cluster)
        .container_instances(
            c.list_container_instances()
                .cluster(&r.cluster)
                .send()
                .await
                .expect("list")
                .container_instance_arns()[0]
                .clone(),
        )
        .send()
        .await
        .expect("describe");
    assert!(instances.container_instances()[0].agent_connected());
}

#[tokio::test]
async fn etcd_losing_a_member_changes_nothing_and_losing_quorum_refuses_writes_until_it_returns() {
    let (_etcd_dir, mut etcd) = etcd(3).await;
    let mut r = Replicas::start(&etcd, 1).await;
    r.add_agent(0).await;
    let c = r.client(0).await;
    let td = sleeper(&c, "quorum").await;

    // One member of three gone: the API and the controllers go on.
    etcd.kill(0);
    let arn = run_one(&c, &r.cluster, &td).await;
    wait_task(&c, &r.cluster, &arn, "RUNNING", T).await;

    // Two gone: no quorum. Calls answer ServerException (HTTP 500, which SDKs retry) within
    // seconds; none hangs, none is acknowledged.
    etcd.kill(1);
    let started = std::time::Instant::now();
    let refused = c.create_cluster().cluster_name(unique("nope")).send().await;
    let err = refused.expect_err("a write without quorum was acknowledged");
    assert_eq!(
        aws_sdk_ecs::error::ProvideErrorMetadata::code(&err),
        Some("ServerException"),
        "{err:?}"
    );
    let raw = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(raw, Some(500), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the refusal took {:?}",
        started.elapsed()
    );

    // `gantry status` still answers, and says the store cannot be read.
    let status = r
        .status(0)
        .await
        .expect("gantry status answers without quorum");
    assert!(status["leader"].is_null(), "{status}");
    assert!(
        status["storeError"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}"
    );

    // Quorum back: writes are accepted again and the task was never touched.
    etcd.restart(0).expect("restart etcd member");
    etcd.restart(1).expect("restart etcd member");
    let cluster = unique("back");
    eventually(T, "writes to be accepted again", || {
        let c = c.clone();
        let cluster = cluster.clone();
        async move { c.create_cluster().cluster_name(cluster).send().await.ok() }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    // Without the store the replica closed its agent channels (agents knowing other replicas
    // would have moved there); this agent knows only this one and comes back to it.
    wait_connected(&c, &r.cluster, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let second = run_one(&c, &r.cluster, &td).await;
    wait_task(&c, &r.cluster, &second, "RUNNING", T).await;
    let first = &svc::describe_task_arns(&c, &r.cluster, std::slice::from_ref(&arn)).await[0];
    assert_eq!(first.last_status(), Some("RUNNING"));
    r.servers[0].kill9();
}

#[tokio::test]
async fn a_replica_whose_lease_lapses_keeps_its_agents_and_their_tasks() {
    // The leader is frozen (SIGSTOP) past its lease: the other replica leads and counts the
    // frozen one's agents as gone. When it thaws it learns it lost its session, and its
    // agents are connected again before the lost-host grace period ends: no task stops.
    let (_etcd_dir, etcd) = etcd(1).await;
    let mut r = Replicas::start_with(&etcd, 2, 10).await;
    let leader = eventually(T, "a leader", || r.leader(&[0, 1]))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let other = 1 - leader;
    r.add_agent(leader).await;
    let c = r.client(other).await;
    let td = sleeper(&c, "frozen").await;
    let arn = run_one(&c, &r.cluster, &td).await;
    wait_task(&c, &r.cluster, &arn, "RUNNING", T).await;

    let pid = r.servers[leader].child.id().to_string();
    sh(&format!("kill -STOP {pid}"));
    eventually(T, "the other replica to lead", || async {
        r.leader(&[other]).await.filter(|l| *l == other)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    // Long enough for the new leader's first sweep.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sh(&format!("kill -CONT {pid}"));

    // Past the grace period (10 s) the task still runs and the agent counts as connected.
    let until = std::time::Instant::now() + Duration::from_secs(16);
    while std::time::Instant::now() < until {
        let t = c
            .describe_tasks()
            .cluster(&r.cluster)
            .tasks(&arn)
            .send()
            .await
            .expect("DescribeTasks");
        assert_eq!(
            t.tasks()[0].last_status(),
            Some("RUNNING"),
            "the task of a live agent was stopped\n{}",
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_connected(&c, &r.cluster, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
}

/// Every message of a stream, read through replica `endpoint` (GetLogEvents, page by page).
async fn stream_messages(endpoint: &str, keys: &Keys, group: &str, stream: &str) -> Vec<String> {
    let mut messages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = serde_json::json!({
            "logGroupName": group, "logStreamName": stream, "startFromHead": true, "limit": 500,
        });
        if let Some(t) = &token {
            input["nextToken"] = t.clone().into();
        }
        let (status, page) =
            signed_json(endpoint, keys, "logs", "Logs_20140328.GetLogEvents", &input).await;
        if status != 200 {
            return messages;
        }
        let events = page["events"].as_array().cloned().unwrap_or_default();
        messages.extend(
            events
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string)),
        );
        let next = page["nextForwardToken"].as_str().map(str::to_string);
        if events.is_empty() || next == token {
            return messages;
        }
        token = next;
    }
}

#[tokio::test]
async fn every_replica_reads_every_task_log_and_losing_the_replica_that_took_them_loses_no_line() {
    use aws_sdk_ecs::types::{LogConfiguration, LogDriver};
    const LINES: usize = 800;
    let (_etcd_dir, etcd) = etcd(1).await;
    let mut r = Replicas::start(&etcd, 3).await;
    // The agent ships to replica 0 first (its first choice is a hash of its host and data
    // directory: the list is ordered so that it lands there), and fails over to replica 1.
    let data_dir = r.dir.path().join("agent-0");
    let first =
        gantry_agent::servers::start_index(&gantry_agent::servers::agent_seed(&data_dir), 2);
    let mut servers = [r.endpoint(1), r.endpoint(1)];
    servers[first] = r.endpoint(0);
    r.add_agent_with_servers(&servers.join(","), 1).await;

    let c = r.client(1).await;
    let group = format!("/ecs/{}", unique("ha-logs"));
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do echo line-$i; i=$((i+1)); usleep 10000; done; sleep 3600"
    );
    let mut container = busybox_container("app", &["sh", "-c", &script]);
    container.log_configuration = Some(
        LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", &group)
            .options("awslogs-stream-prefix", "ha")
            .options("awslogs-create-group", "true")
            .build()
            .expect("log configuration"),
    );
    let td = register(&c, &unique("ha-logs"), vec![container]).await;
    let arn = run_one(&c, &r.cluster, &td).await;
    wait_task(&c, &r.cluster, &arn, "RUNNING", T).await;
    let stream = format!("ha/app/{}", task_id(&arn));

    // The lines the agent ships to replica 0 are read through the two others.
    for i in [1, 2] {
        let endpoint = r.endpoint(i);
        eventually(T, "the first lines on every replica", || async {
            let got = stream_messages(&endpoint, &r.keys, &group, &stream).await;
            (got.len() >= 50).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    }
    // Replica 0 dies while the container is still writing: the agent goes on with replica 1,
    // sending again what replica 0 never acknowledged.
    r.servers[0].kill9();
    let expected: Vec<String> = (0..LINES).map(|i| format!("line-{i}")).collect();
    let keys = r.keys.clone();
    let whole = |endpoint: String| {
        let (keys, group, stream) = (keys.clone(), group.clone(), stream.clone());
        let expected = expected.clone();
        async move {
            let got = stream_messages(&endpoint, &keys, &group, &stream).await;
            if got.len() < LINES {
                return None;
            }
            // Each line once: nothing lost, nothing stored twice.
            let mut sorted = got.clone();
            sorted.sort_by_key(|l| l[5..].parse::<usize>().unwrap_or(usize::MAX));
            Some((sorted == expected, got.len()))
        }
    };
    for i in [1, 2] {
        let (exact, n) = eventually(T, "every line on the surviving replicas", || {
            whole(r.endpoint(i))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
        assert!(
            exact,
            "replica {i} holds {n} lines, not each of {LINES} once"
        );
    }
    // FilterLogEvents answers from any replica too.
    let (status, found) = signed_json(
        &r.endpoint(2),
        &r.keys,
        "logs",
        "Logs_20140328.FilterLogEvents",
        &serde_json::json!({"logGroupName": group, "filterPattern": "\"line-799\""}),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let events = found["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{found}");
    assert_eq!(events[0]["logStreamName"], stream.as_str());

    // Replica 0 comes back and catches up with what it missed.
    let restarted = r.spawn(0);
    r.servers[0] = restarted;
    let c0 = r.client(0).await;
    eventually(T, "replica 0 to answer again", || {
        let c0 = c0.clone();
        async move { c0.list_clusters().send().await.ok() }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    let (exact, n) = eventually(T, "the restarted replica to catch up", || {
        whole(r.endpoint(0))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
    assert!(exact, "replica 0 holds {n} lines, not each of {LINES} once");
}
