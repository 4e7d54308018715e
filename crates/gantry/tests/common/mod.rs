//! Shared harness for the integration tests: a real `gantry` process (dev, server or agent)
//! on a free port with its own data directory and cluster, a locally built busybox image (no
//! registry is reachable), the AWS SDK for Rust pointed at it, and Docker helpers.
//!
//! Docker is required: every helper fails loudly when the engine is unreachable.

#![allow(dead_code)]

/// Running the `gantry` binary for the CLI tests.
pub mod cli;
/// ECS service helpers (describe, list a service's tasks, wait for steady).
pub mod svc;

use aws_sdk_ecs::Client;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "gantry-test/busybox:latest";

pub fn gantry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gantry")
}

/// Run a command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Build `gantry-test/busybox:latest` from Debian's static busybox, once per test binary.
pub fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let docker = Command::new("docker").arg("info").output();
        match docker {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "Docker Engine is not reachable: these tests run real containers. Start dockerd (and check `docker info`)."
            ),
        }
        // Same tag and version label as the agent crate's tests, so neither rebuilds the
        // other's image.
        let version = Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{ index .Config.Labels \"dev.gantry.test-image-version\" }}",
                IMAGE,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if version == "2" {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("static busybox is missing: apt-get install busybox-static");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n").expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").expect("group");
        let applets = sh(&format!("{busybox} --list"));
        for a in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
        }
        sh(&format!(
            "tar -C {} -c . | docker import -c 'CMD [\"/bin/sh\"]' -c 'ENV PATH=/bin' -c 'LABEL dev.gantry.test-image-version=2' - {IMAGE} >/dev/null",
            root.display()
        ));
    });
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..10])
}

fn uuid_like() -> String {
    use std::time::SystemTime;
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", n, std::process::id())
        .chars()
        .rev()
        .collect()
}

/// A child `gantry` process, killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], log: PathBuf) -> Proc {
        Self::spawn_with_env(args, &[], log)
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(String, String)], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(gantry_bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("GANTRY_LOG", "info,gantry=debug")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn gantry");
        Proc { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited (it should not have).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `gantry dev` on a free port with a cluster of its own.
pub struct Dev {
    pub proc: Proc,
    pub endpoint: String,
    pub cluster: String,
    pub dir: tempfile::TempDir,
    pub client: Client,
    pub args: Vec<String>,
    /// The administrator's keys Gantry wrote on its first start.
    pub keys: Keys,
}

/// An access key pair, as Gantry writes it to `<data-dir>/credentials`.
#[derive(Debug, Clone)]
pub struct Keys {
    pub id: String,
    pub secret: String,
    pub session_token: Option<String>,
}

impl Keys {
    /// The environment variables that make the AWS CLI (and the Gantry CLI) use these keys.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("AWS_ACCESS_KEY_ID".to_string(), self.id.clone()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), self.secret.clone()),
        ];
        if let Some(t) = &self.session_token {
            v.push(("AWS_SESSION_TOKEN".to_string(), t.clone()));
        }
        v
    }
}

/// The administrator's keys from `<data_dir>/credentials` (profile `gantry`), waiting up to
/// 30 s for the file (a starting server writes it before it serves).
pub fn admin_keys(data_dir: &Path) -> Keys {
    let path = data_dir.join("credentials");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let field = |name: &str| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .find(|(k, _)| k.trim() == name)
                    .map(|(_, v)| v.trim().to_string())
            };
            if let (Some(id), Some(secret)) =
                (field("aws_access_key_id"), field("aws_secret_access_key"))
            {
                return Keys {
                    id,
                    secret,
                    session_token: None,
                };
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} was not written within 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agents' join token from `<data_dir>/agent-token`, waiting up to 30 s for it.
pub fn join_token(data_dir: &Path) -> String {
    let path = data_dir.join("agent-token");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(t) = std::fs::read_to_string(&path) {
            if !t.trim().is_empty() {
                return t.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} was not written within 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request to `url` carrying `headers` and `body`, signed (when `keys` are given) with
/// `keys` for the SigV4 `service` in `region` at `now` (unix seconds), as AWS clients sign.
#[allow(clippy::too_many_arguments)]
pub fn signed_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    keys: Option<&Keys>,
    region: &str,
    service: &str,
    now: i64,
) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let mut req = reqwest::Client::new().request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(keys) = keys {
        let creds = gantry_auth::sigv4::Credentials {
            access_key_id: keys.id.clone(),
            secret_access_key: keys.secret.clone(),
            session_token: keys.session_token.clone(),
        };
        for (k, v) in gantry_auth::client::sign_url(
            method.as_str(),
            url,
            headers,
            &body,
            &creds,
            region,
            service,
            now,
        ) {
            req = req.header(k, v);
        }
    }
    req.body(body)
}

/// POST an awsJson1_1 call (`target` = `Prefix.Operation`) signed with `keys` for the SigV4
/// service `service`; the status and the JSON answer.
pub async fn signed_json(
    endpoint: &str,
    keys: &Keys,
    service: &str,
    target: &str,
    input: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = signed_request(
        "POST",
        &format!("{endpoint}/"),
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ],
        input.to_string().into_bytes(),
        Some(keys),
        "us-east-1",
        service,
        gantry_auth::client::now(),
    )
    .send()
    .await
    .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// An ECS client signing with `keys`.
pub async fn client_for(endpoint: &str, keys: &Keys) -> Client {
    let conf = sdk_config(endpoint, keys).await;
    Client::new(&conf)
}

/// The SDK configuration every AWS client of the tests uses: `keys`, us-east-1, `endpoint`,
/// no retries.
pub async fn sdk_config(endpoint: &str, keys: &Keys) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new(
        keys.id.clone(),
        keys.secret.clone(),
        keys.session_token.clone(),
        None,
        "test",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

impl Dev {
    pub async fn start() -> Dev {
        Self::start_with(&[]).await
    }

    /// Start with extra `gantry dev` flags (e.g. `--memory 512`).
    pub async fn start_with(extra: &[&str]) -> Dev {
        Self::start_inner(extra, true).await
    }

    /// `gantry dev` as a newcomer runs it: no `--cluster`, so the `default` cluster and every
    /// cluster created later get a local instance.
    pub async fn start_unpinned(extra: &[&str]) -> Dev {
        Self::start_inner(extra, false).await
    }

    async fn start_inner(extra: &[&str], pinned: bool) -> Dev {
        ensure_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let cluster = if pinned {
            unique("t")
        } else {
            "default".to_string()
        };
        let mut args: Vec<String> = vec![
            "dev".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ];
        if pinned {
            args.extend(["--cluster".to_string(), cluster.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path().join("gantry.log"),
        );
        let keys = admin_keys(&dir.path().join("data"));
        let client = client_for(&endpoint, &keys).await;
        let mut dev = Dev {
            proc,
            endpoint,
            cluster,
            dir,
            client,
            args,
            keys,
        };
        dev.wait_for_instances(1).await;
        dev
    }

    /// Kill -9 and start again on the same port and data directory.
    pub async fn restart_hard(&mut self) {
        self.proc.kill9();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Proc::spawn(&args, self.dir.path().join("gantry-restarted.log"));
        self.wait_for_instances(1).await;
    }

    /// Wait until `n` container instances of the cluster have their agent connected.
    pub async fn wait_for_instances(&mut self, n: usize) {
        if self.proc.exited() {
            panic!("gantry exited at start:\n{}", self.proc.output());
        }
        wait_connected(&self.client, &self.cluster, n)
            .await
            .unwrap_or_else(|e| panic!("{e}\n--- gantry output ---\n{}", self.proc.output()));
    }

    pub fn cluster_arn(&self) -> String {
        format!(
            "arn:aws:ecs:us-east-1:000000000000:cluster/{}",
            self.cluster
        )
    }

    /// Docker containers of this cluster (all states), as `docker ps` ids.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("com.amazonaws.ecs.cluster={}", self.cluster_arn()))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.proc.kill9();
        remove_containers(&format!("com.amazonaws.ecs.cluster={}", self.cluster_arn()));
    }
}

pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Remove every container with `label`. Twice: a create the killed process had in flight can
/// still complete inside the daemon just after the first sweep.
pub fn remove_containers(label: &str) {
    for round in 0..2 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let ids = containers_with_label(label);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
    }
}

/// `docker inspect` of one container, as JSON.
pub fn inspect(id: &str) -> serde_json::Value {
    let out = sh(&format!("docker inspect {id}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].clone()
}

/// Wait until at least `n` container instances of `cluster` have their agent connected.
pub async fn wait_connected(client: &Client, cluster: &str, n: usize) -> Result<(), String> {
    eventually(
        Duration::from_secs(60),
        "agents to connect",
        || async move {
            let list = client
                .list_container_instances()
                .cluster(cluster)
                .send()
                .await
                .ok()?;
            let arns = list.container_instance_arns().to_vec();
            if arns.len() < n {
                return None;
            }
            let d = client
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(arns))
                .send()
                .await
                .ok()?;
            let connected = d
                .container_instances()
                .iter()
                .filter(|ci| ci.agent_connected())
                .count();
            (connected >= n).then_some(())
        },
    )
    .await
}

/// Poll `probe` until it yields `Some`, or fail after `timeout` saying what was awaited.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until a task reaches `status` (panics with the task's state if it does not).
pub async fn wait_task(
    client: &Client,
    cluster: &str,
    task_arn: &str,
    status: &str,
    timeout: Duration,
) -> aws_sdk_ecs::types::Task {
    let mut last = None;
    let deadline = Instant::now() + timeout;
    loop {
        let d = client
            .describe_tasks()
            .cluster(cluster)
            .tasks(task_arn)
            .send()
            .await
            .expect("DescribeTasks");
        if let Some(t) = d.tasks().first() {
            if t.last_status() == Some(status) {
                return t.clone();
            }
            if t.last_status() == Some("STOPPED") && status != "STOPPED" {
                panic!("task stopped while waiting for {status}: {t:#?}");
            }
            last = Some(t.clone());
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {status}; last seen: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal container definition: busybox running `command`.
pub fn busybox_container(name: &str, command: &[&str]) -> aws_sdk_ecs::types::ContainerDefinition {
    aws_sdk_ecs::types::ContainerDefinition::builder()
        .name(name)
        .image(IMAGE)
        .memory(64)
        // `sleep` as PID 1 ignores SIGTERM: keep stops quick.
        .stop_timeout(2)
        .set_command(Some(command.iter().map(|s| s.to_string()).collect()))
        .build()
}

pub async fn register(
    client: &Client,
    family: &str,
    containers: Vec<aws_sdk_ecs::types::ContainerDefinition>,
) -> String {
    client
        .register_task_definition()
        .family(family)
        .set_container_definitions(Some(containers))
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("task definition ARN")
        .to_string()
}

pub async fn run_one(client: &Client, cluster: &str, td: &str) -> String {
    let r = client
        .run_task()
        .cluster(cluster)
        .task_definition(td)
        .send()
        .await
        .expect("RunTask");
    assert!(
        r.failures().is_empty(),
        "placement failures: {:?}",
        r.failures()
    );
    r.tasks()[0].task_arn().expect("task ARN").to_string()
}

/// `gantry server` plus any number of `gantry agent` processes on the same Docker Engine.
pub struct Split {
    pub server: Proc,
    pub agents: Vec<Proc>,
    pub endpoint: String,
    pub port: u16,
    pub cluster: String,
    pub dir: tempfile::TempDir,
    pub client: Client,
    /// The administrator's keys the server wrote on its first start.
    pub keys: Keys,
    restarts: usize,
    server_args: Vec<String>,
    server_env: Vec<(String, String)>,
}

impl Split {
    pub async fn start(agents: usize) -> Split {
        Self::start_with(agents, &[]).await
    }

    /// Like [`Split::start`], with extra `gantry server` flags.
    pub async fn start_with(agents: usize, server_args: &[&str]) -> Split {
        Self::start_with_env(agents, server_args, &[]).await
    }

    /// Like [`Split::start_with`], with extra environment variables for the server.
    pub async fn start_with_env(
        agents: usize,
        server_args: &[&str],
        server_env: &[(String, String)],
    ) -> Split {
        ensure_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let server_args: Vec<String> = server_args.iter().map(|a| a.to_string()).collect();
        let server_env = server_env.to_vec();
        let server = Self::spawn_server(dir.path(), port, "server.log", &server_args, &server_env);
        let keys = admin_keys(&dir.path().join("server"));
        let client = client_for(&endpoint, &keys).await;
        let cluster = unique("s");
        eventually(Duration::from_secs(30), "the server to answer", || {
            let client = client.clone();
            let cluster = cluster.clone();
            async move {
                client
                    .create_cluster()
                    .cluster_name(cluster)
                    .send()
                    .await
                    .ok()
            }
        })
        .await
        .expect("server up");
        let mut split = Split {
            server,
            agents: Vec::new(),
            endpoint,
            port,
            cluster,
            dir,
            client,
            keys,
            restarts: 0,
            server_args,
            server_env,
        };
        for i in 0..agents {
            split.add_agent(i).await;
        }
        split
    }

    fn spawn_server(
        dir: &Path,
        port: u16,
        log: &str,
        extra: &[String],
        env: &[(String, String)],
    ) -> Proc {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.join("server").display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        Proc::spawn_with_env(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            env,
            dir.join(log),
        )
    }

    /// Agent `i`'s data directory.
    pub fn agent_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{i}"))
    }

    fn agent_args(&self, i: usize) -> Vec<String> {
        self.agent_args_on(i, &self.endpoint)
    }

    /// Agent `i`'s arguments with `servers` as its `--server`.
    fn agent_args_on(&self, i: usize, servers: &str) -> Vec<String> {
        vec![
            "agent".into(),
            "--server".into(),
            servers.to_string(),
            "--cluster".into(),
            self.cluster.clone(),
            "--data-dir".into(),
            self.agent_dir(i).display().to_string(),
            "--cpu".into(),
            "1024".into(),
            "--memory".into(),
            "1024".into(),
            "--availability-zone".into(),
            format!("us-east-1{}", (b'a' + i as u8) as char),
            "--token".into(),
            join_token(&self.dir.path().join("server")),
        ]
    }

    /// Start one more agent with extra `gantry agent` flags (e.g. `--fargate`), without
    /// waiting for it: an agent of the Fargate pool is no instance of the test's cluster.
    pub fn spawn_agent_with(&mut self, extra: &[&str]) {
        self.restarts += 1;
        let i = self.agents.len();
        let mut args = self.agent_args(i);
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self
            .dir
            .path()
            .join(format!("agent-{i}-{}.log", self.restarts));
        self.agents.push(Proc::spawn(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            log,
        ));
    }

    /// Start one more agent with `servers` (e.g. `http://A,http://B`) as its `--server`,
    /// without waiting for it.
    pub fn spawn_agent_on(&mut self, servers: &str) {
        self.restarts += 1;
        let i = self.agents.len();
        let args = self.agent_args_on(i, servers);
        let log = self
            .dir
            .path()
            .join(format!("agent-{i}-{}.log", self.restarts));
        self.agents.push(Proc::spawn(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            log,
        ));
    }

    /// Start agent `i` (again, if it ran before: same data directory, same identity).
    pub async fn add_agent(&mut self, i: usize) {
        self.restarts += 1;
        let args = self.agent_args(i);
        let log = self
            .dir
            .path()
            .join(format!("agent-{i}-{}.log", self.restarts));
        let proc = Proc::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), log);
        if i < self.agents.len() {
            self.agents[i] = proc;
        } else {
            self.agents.push(proc);
        }
        let n = self.agents.len();
        self.wait_connected(n).await;
    }

    pub async fn restart_server(&mut self) {
        self.server.kill9();
        self.restarts += 1;
        self.server = Self::spawn_server(
            self.dir.path(),
            self.port,
            &format!("server-{}.log", self.restarts),
            &self.server_args,
            &self.server_env,
        );
    }

    /// Kill -9 the server and start another on `port` with the same data directory (the same
    /// store: one server process at a time, as SQLite has one writer); the client follows it.
    pub async fn move_server_to(&mut self, port: u16) {
        self.server.kill9();
        self.restarts += 1;
        self.server = Self::spawn_server(
            self.dir.path(),
            port,
            &format!("server-{}.log", self.restarts),
            &self.server_args,
            &self.server_env,
        );
        self.port = port;
        self.endpoint = format!("http://127.0.0.1:{port}");
        self.client = client_for(&self.endpoint, &self.keys).await;
    }

    /// Wait until `n` instances report agentConnected.
    pub async fn wait_connected(&self, n: usize) {
        let result = wait_connected(&self.client, &self.cluster, n).await;
        if let Err(e) = result {
            let mut out = format!("{e}\n--- server ---\n{}", self.server.output());
            for (i, a) in self.agents.iter().enumerate() {
                out.push_str(&format!("\n--- agent {i} ---\n{}", a.output()));
            }
            panic!("{out}");
        }
    }

    pub fn cluster_arn(&self) -> String {
        format!(
            "arn:aws:ecs:us-east-1:000000000000:cluster/{}",
            self.cluster
        )
    }

    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("com.amazonaws.ecs.cluster={}", self.cluster_arn()))
    }

    pub fn dump(&self) -> String {
        let mut out = format!("--- server ---\n{}", self.server.output());
        for (i, a) in self.agents.iter().enumerate() {
            out.push_str(&format!("\n--- agent {i} ---\n{}", a.output()));
        }
        out
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill9();
        }
        self.server.kill9();
        remove_containers(&format!("com.amazonaws.ecs.cluster={}", self.cluster_arn()));
    }
}

// The AWS CLI (v1), isolated from the machine: shared by aws_cli.rs and services.rs.
//
// Every invocation runs with a private HOME and nonexistent config/credentials files, and
// without any inherited `AWS_*` variable, so nothing on the machine changes what the CLI does.

/// Upper bound for any single `aws` invocation (the task waiters poll every 6 s).
pub const CLI_LIMIT: Duration = Duration::from_secs(240);

/// What one `aws` invocation produced.
pub struct CliOut {
    pub status: std::process::ExitStatus,
    pub json: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// The AWS CLI, isolated from the machine's configuration and pointed at one `gantry dev`.
pub struct Aws {
    pub endpoint: String,
    pub home: tempfile::TempDir,
    pub keys: Keys,
    /// Extra environment for every invocation (e.g. `AWS_CA_BUNDLE`).
    pub env: Vec<(String, String)>,
}

impl Aws {
    pub fn new(dev: &Dev) -> Aws {
        Self::at(&dev.endpoint, &dev.keys)
    }

    /// The CLI pointed at any Gantry endpoint (`http://127.0.0.1:PORT`), signing with `keys`.
    pub fn at(endpoint: &str, keys: &Keys) -> Aws {
        Aws {
            endpoint: endpoint.to_string(),
            home: tempfile::tempdir().expect("tempdir"),
            keys: keys.clone(),
            env: Vec::new(),
        }
    }

    /// `program` (an AWS CLI) with `--endpoint-url ... --region us-east-1 --output json
    /// <args>`, isolated from the machine's configuration, not started yet.
    pub fn command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let home = self.home.path();
        let mut cmd = tokio::process::Command::new(program);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args([
            "--endpoint-url",
            &self.endpoint,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-such-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-such-credentials"),
        )
        .envs(self.keys.env())
        .envs(self.env.iter().cloned())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .stdin(Stdio::null())
        .kill_on_drop(true);
        cmd
    }

    /// Run `aws --endpoint-url ... --region us-east-1 --output json <args>`.
    pub async fn run(&self, args: &[&str]) -> CliOut {
        let mut cmd = self.command("aws", args);
        let started = Instant::now();
        let out = tokio::time::timeout(CLI_LIMIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`aws {}` did not finish in {CLI_LIMIT:?}", args.join(" ")))
            .unwrap_or_else(|e| panic!("cannot run the AWS CLI (`aws`): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let json = if stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| {
                panic!(
                    "`aws {}` printed something that is not JSON ({e}):\n{stdout}",
                    args.join(" ")
                )
            })
        };
        CliOut {
            status: out.status,
            json,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }
    }

    /// Run and require success; the JSON output.
    pub async fn ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "`aws {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            out.stderr,
            out.stdout
        );
        out.json
    }

    /// Write `value` into a file of the private HOME; its `file://` URL.
    pub fn file(&self, name: &str, value: &serde_json::Value) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).expect("write JSON");
        format!("file://{}", path.display())
    }
}

/// Run an AWS CLI call that must fail with the error `code`; its stderr.
pub async fn fails_with(aws: &Aws, args: &[&str], code: &str) -> String {
    let out = aws.run(args).await;
    assert!(
        !out.status.success(),
        "`aws {}` succeeded, expected {code}:\n{}",
        args.join(" "),
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!("({code})")),
        "`aws {}` failed without {code}:\n{}",
        args.join(" "),
        out.stderr
    );
    out.stderr
}

/// An AWS CLI version 2, for what version 1 lacks (`aws logs tail`): `$GANTRY_AWS_CLI_V2`,
/// else Debian's `awscli` package (`/usr/bin/aws`, version 2 on Debian 12). The `aws` on
/// the PATH stays version 1 (pip's), which the other tests were written against.
pub fn aws_cli_v2() -> String {
    let candidates: Vec<String> = std::env::var("GANTRY_AWS_CLI_V2")
        .into_iter()
        .chain(["/usr/bin/aws".to_string(), "aws".to_string()])
        .collect();
    for c in &candidates {
        let version = Command::new(c)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        if version.starts_with("aws-cli/2.") {
            return c.clone();
        }
    }
    panic!(
        "no AWS CLI version 2 found (tried {candidates:?}): `aws logs tail` exists only in \
         version 2. Install Debian's package (`apt-get install awscli`, which leaves pip's \
         version 1 first on the PATH) or set GANTRY_AWS_CLI_V2 to one."
    )
}

/// The last segment of an ARN: a task's id, a service's name.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// A subnet id of our own (and the Docker network the hosts create for it, removed at the end).
pub struct Subnet(pub String);

impl Subnet {
    pub fn new() -> Subnet {
        use std::hash::BuildHasher;
        let hash = std::collections::hash_map::RandomState::new().hash_one(unique("s"));
        let bits = (u128::from(hash) << 4) | u128::from(std::process::id() & 0xf);
        Subnet(format!("subnet-{:017x}", bits & ((1u128 << 68) - 1)))
    }
    pub fn network(&self) -> aws_sdk_ecs::types::NetworkConfiguration {
        aws_sdk_ecs::types::NetworkConfiguration::builder()
            .awsvpc_configuration(
                aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                    .subnets(&self.0)
                    .security_groups("sg-0123456789abcdef0")
                    .build()
                    .expect("awsvpc configuration"),
            )
            .build()
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        // Its containers first (the test's own: the subnet id is unique), then the network.
        let name = format!("gantry-{}", self.0);
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter network={name} | xargs -r docker rm -f >/dev/null 2>&1; docker network rm {name} >/dev/null 2>&1"
            ))
            .output();
    }
}

/// A pool of addresses unlikely to collide with another test's (each `gantry dev` of a test
/// creates Docker networks in it).
pub fn awsvpc_pool() -> String {
    let n = free_port() as u32;
    format!("10.{}.{}.0/20", 100 + (n / 16) % 150, (n % 16) * 16)
}
