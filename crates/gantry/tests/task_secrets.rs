//! Secrets in tasks, with real containers: Secrets Manager secrets (whole, by JSON key) and
//! SSM parameters (String, SecureString) arrive in the containers' environment, read with the
//! task's execution role; a missing secret, a missing JSON key or a secret the role may not
//! read stops the task with ECS's `ResourceInitializationError`; a private registry (Debian's
//! `docker-registry` with htpasswd, on loopback) is pulled from with `repositoryCredentials`
//! only when they are right; and no secret value is found anywhere it should not be: the store
//! and log files, every API answer of the run, and Gantry's own output.

mod common;

use common::{ensure_image, free_port, signed_json, unique, Aws, Dev, IMAGE};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The AWS CLI, keeping every answer it printed (for the leak scan).
struct Recorded {
    aws: Aws,
    answers: Mutex<Vec<String>>,
}

impl Recorded {
    async fn ok(&self, args: &[&str]) -> Value {
        let out = self.aws.run(args).await;
        self.answers
            .lock()
            .unwrap()
            .push(format!("{}{}", out.stdout, out.stderr));
        assert!(
            out.status.success(),
            "`aws {}` failed:\n{}{}",
            args.join(" "),
            out.stderr,
            out.stdout
        );
        out.json
    }

    fn file(&self, name: &str, value: &Value) -> String {
        self.aws.file(name, value)
    }
}

/// A value no test data or log line could contain by chance.
fn secret_value(what: &str) -> String {
    format!("{what}-{}", unique("v").replace('-', ""))
}

async fn execution_role(aws: &Recorded, name: &str, allowed: Value) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let role = aws
        .ok(&[
            "iam",
            "create-role",
            "--role-name",
            name,
            "--assume-role-policy-document",
            &trust.to_string(),
        ])
        .await;
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameters"],
        "Resource": allowed}]});
    aws.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        name,
        "--policy-name",
        "secrets",
        "--policy-document",
        &policy.to_string(),
    ])
    .await;
    role["Role"]["Arn"].as_str().unwrap().to_string()
}

async fn register(aws: &Recorded, family: &str, role: &str, container: Value) -> String {
    let mut container = container;
    container["name"] = json!("app");
    container["memory"] = json!(64);
    container["stopTimeout"] = json!(2);
    if container.get("image").is_none() {
        container["image"] = json!(IMAGE);
    }
    if container.get("command").is_none() {
        container["command"] = json!(["sleep", "600"]);
    }
    let td = json!({"family": family, "executionRoleArn": role,
        "containerDefinitions": [container]});
    let input = aws.file(&format!("{family}.json"), &td);
    let r = aws
        .ok(&[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &input,
        ])
        .await;
    r["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn run(aws: &Recorded, cluster: &str, td: &str) -> String {
    let r = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            cluster,
            "--task-definition",
            td,
        ])
        .await;
    assert_eq!(r["failures"], json!([]), "{r:#}");
    r["tasks"][0]["taskArn"].as_str().unwrap().to_string()
}

/// Waits until the task is RUNNING or STOPPED; the task as DescribeTasks answers it.
async fn settle(aws: &Recorded, cluster: &str, task: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = aws
            .ok(&[
                "ecs",
                "describe-tasks",
                "--cluster",
                cluster,
                "--tasks",
                task,
            ])
            .await;
        let t = d["tasks"][0].clone();
        if matches!(t["lastStatus"].as_str(), Some("RUNNING" | "STOPPED")) {
            return t;
        }
        assert!(Instant::now() < deadline, "the task did not settle: {t:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The environment Docker holds for the task's container.
fn container_env(task_arn: &str) -> Vec<String> {
    let id = common::task_id(task_arn);
    let ids = common::sh(&format!(
        "docker ps -q --filter label=com.amazonaws.ecs.task-arn={task_arn}"
    ));
    let first = ids
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no container for task {id}"));
    let inspected = common::inspect(first);
    inspected["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn assert_stopped_to_start(task: &Value, reason_has: &[&str]) {
    assert_eq!(task["lastStatus"], "STOPPED", "{task:#}");
    assert_eq!(task["stopCode"], "TaskFailedToStart", "{task:#}");
    let reason = task["stoppedReason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with(
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        ),
        "{reason}"
    );
    for part in reason_has {
        assert!(reason.contains(part), "{reason:?} lacks {part:?}");
    }
}

/// Every file under `dir` (the store, its WAL, the log store, the audit log, the key file)
/// and `extra` texts, searched for each value.
fn assert_nowhere(values: &[&str], dir: &Path, extra: &[(&str, String)]) {
    let mut files = vec![dir.to_path_buf()];
    let mut scanned = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                files.push(e.path());
            }
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        scanned += 1;
        for v in values {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "the secret value {v:?} is in {}",
                p.display()
            );
        }
    }
    assert!(scanned >= 3, "only {scanned} files under {}", dir.display());
    for (what, text) in extra {
        for v in values {
            assert!(!text.contains(v), "the secret value {v:?} is in {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_parameters_arrive_in_the_environment_and_nowhere_else() {
    let dev = Dev::start().await;
    let aws = Recorded {
        aws: Aws::new(&dev),
        answers: Mutex::new(Vec::new()),
    };
    let plain = secret_value("plain");
    let password = secret_value("password");
    let token = secret_value("token");
    let u = unique("s");

    let plain_arn = aws
        .ok(&[
            "secretsmanager",
            "create-secret",
            "--name",
            &format!("{u}/plain"),
            "--secret-string",
            &plain,
        ])
        .await["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    let db_doc = json!({"username": "admin", "password": password}).to_string();
    let db_arn = aws
        .ok(&[
            "secretsmanager",
            "create-secret",
            "--name",
            &format!("{u}/db"),
            "--secret-string",
            &db_doc,
        ])
        .await["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    // A second version of the db secret: the first becomes AWSPREVIOUS, readable by that
    // stage and by its version id.
    let first_version = aws
        .ok(&["secretsmanager", "describe-secret", "--secret-id", &db_arn])
        .await["VersionIdsToStages"]
        .as_object()
        .and_then(|stages| stages.keys().next().cloned())
        .expect("the first version's id");
    let new_password = secret_value("password2");
    aws.ok(&[
        "secretsmanager",
        "put-secret-value",
        "--secret-id",
        &db_arn,
        "--secret-string",
        &json!({"username": "admin", "password": new_password}).to_string(),
    ])
    .await;
    let token_name = format!("/{u}/token");
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &token_name,
        "--type",
        "SecureString",
        "--value",
        &token,
    ])
    .await;
    let mode_name = format!("/{u}/mode");
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &mode_name,
        "--type",
        "String",
        "--value",
        "fast",
    ])
    .await;
    let mode_arn = format!("arn:aws:ssm:us-east-1:000000000000:parameter{mode_name}");
    let list_name = format!("/{u}/list");
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &list_name,
        "--type",
        "StringList",
        "--value",
        "a,b,c",
    ])
    .await;

    let role = execution_role(&aws, &format!("{u}-exec"), json!("*")).await;
    let td = register(
        &aws,
        &format!("{u}-ok"),
        &role,
        json!({
            "environment": [{"name": "PLAIN", "value": "overridden by the secret"}],
            "secrets": [
                {"name": "PLAIN", "valueFrom": plain_arn},
                {"name": "DB_PASSWORD", "valueFrom": format!("{db_arn}:password::")},
                {"name": "DB_USER", "valueFrom": format!("{db_arn}:username:AWSCURRENT:")},
                {"name": "OLD_PASSWORD", "valueFrom": format!("{db_arn}:password:AWSPREVIOUS:")},
                {"name": "PINNED_PASSWORD", "valueFrom": format!("{db_arn}:password::{first_version}")},
                {"name": "TOKEN", "valueFrom": token_name},
                {"name": "MODE", "valueFrom": mode_arn},
                {"name": "LIST", "valueFrom": list_name},
            ]
        }),
    )
    .await;
    let task = run(&aws, &dev.cluster, &td).await;
    let t = settle(&aws, &dev.cluster, &task).await;
    assert_eq!(t["lastStatus"], "RUNNING", "{t:#}");
    let env = container_env(&task);
    for expected in [
        format!("PLAIN={plain}"),
        format!("DB_PASSWORD={new_password}"),
        "DB_USER=admin".to_string(),
        format!("OLD_PASSWORD={password}"),
        format!("PINNED_PASSWORD={password}"),
        format!("TOKEN={token}"),
        "MODE=fast".to_string(),
        "LIST=a,b,c".to_string(),
    ] {
        assert!(env.contains(&expected), "{expected} not in the environment");
    }
    assert!(!env.iter().any(|e| e == "PLAIN=overridden by the secret"));

    // A secret that does not exist: named in the reason.
    let missing = "arn:aws:secretsmanager:us-east-1:000000000000:secret:nope-AbCdEf";
    let td = register(
        &aws,
        &format!("{u}-missing"),
        &role,
        json!({"secrets": [{"name": "X", "valueFrom": missing}]}),
    )
    .await;
    let t = settle(&aws, &dev.cluster, &run(&aws, &dev.cluster, &td).await).await;
    assert_stopped_to_start(
        &t,
        &[
            "unable to retrieve secret from asm",
            missing,
            "ResourceNotFoundException",
        ],
    );

    // A JSON key the secret does not have.
    let td = register(
        &aws,
        &format!("{u}-key"),
        &role,
        json!({"secrets": [{"name": "X", "valueFrom": format!("{db_arn}:apikey::")}]}),
    )
    .await;
    let t = settle(&aws, &dev.cluster, &run(&aws, &dev.cluster, &td).await).await;
    assert_stopped_to_start(&t, &["did not contain json key apikey"]);

    // A parameter that does not exist.
    let td = register(
        &aws,
        &format!("{u}-param"),
        &role,
        json!({"secrets": [{"name": "X", "valueFrom": format!("/{u}/absent")}]}),
    )
    .await;
    let t = settle(&aws, &dev.cluster, &run(&aws, &dev.cluster, &td).await).await;
    assert_stopped_to_start(
        &t,
        &[
            "unable to retrieve secrets from ssm",
            &format!("invalid ssm parameters: /{u}/absent"),
        ],
    );

    // An execution role that may read the plain secret only.
    let limited = execution_role(&aws, &format!("{u}-limited"), json!(plain_arn)).await;
    let td = register(
        &aws,
        &format!("{u}-denied"),
        &limited,
        json!({"secrets": [
            {"name": "PLAIN", "valueFrom": plain_arn},
            {"name": "DB", "valueFrom": db_arn},
        ]}),
    )
    .await;
    let t = settle(&aws, &dev.cluster, &run(&aws, &dev.cluster, &td).await).await;
    assert_stopped_to_start(
        &t,
        &[
            "AccessDeniedException",
            "secretsmanager:GetSecretValue",
            &db_arn,
        ],
    );

    // Describing everything a user would describe shows no value.
    aws.ok(&["secretsmanager", "describe-secret", "--secret-id", &db_arn])
        .await;
    aws.ok(&["secretsmanager", "list-secrets"]).await;
    let versions = aws
        .ok(&[
            "secretsmanager",
            "list-secret-version-ids",
            "--secret-id",
            &db_arn,
            "--include-deprecated",
        ])
        .await;
    let mut stages: Vec<String> = versions["Versions"]
        .as_array()
        .expect("Versions")
        .iter()
        .flat_map(|v| v["VersionStages"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    stages.sort();
    assert_eq!(stages, ["AWSCURRENT", "AWSPREVIOUS"], "{versions}");
    aws.ok(&["ssm", "describe-parameters"]).await;
    aws.ok(&["ssm", "get-parameter", "--name", &token_name])
        .await;
    aws.ok(&["ecs", "describe-task-definition", "--task-definition", &td])
        .await;
    aws.ok(&["ecs", "list-tasks", "--cluster", &dev.cluster])
        .await;

    let answers = aws.answers.lock().unwrap().join("\n");
    let output = dev.proc.output();
    assert_nowhere(
        &[&plain, &password, &new_password, &token],
        &dev.dir.path().join("data"),
        &[("the API's answers", answers), ("Gantry's output", output)],
    );
}

/// Debian's `docker-registry` on a loopback port, requiring `user`:`password` (htpasswd,
/// bcrypt), with `image` pushed into it as `<registry>/<name>:1` and removed locally.
struct Registry {
    proc: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd is missing: apt-get install apache2-utils");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: gantry-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let proc = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is missing: apt-get install docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            proc,
            address,
            _dir: dir,
        }
    }

    /// Pushes the test image as `<registry>/<name>:1` with a private Docker client
    /// configuration (the machine's stays untouched), then removes it locally.
    fn push(&self, name: &str, user: &str, password: &str) -> String {
        let image = format!("{}/{name}:1", self.address);
        let config = tempfile::tempdir().unwrap();
        let cfg = config.path().display().to_string();
        common::sh(&format!("docker tag {IMAGE} {image}"));
        common::sh(&format!(
            "docker --config {cfg} login -u {user} -p {password} {} >/dev/null 2>&1",
            self.address
        ));
        common::sh(&format!("docker --config {cfg} push {image} >/dev/null"));
        common::sh(&format!("docker rmi {image} >/dev/null"));
        image
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_is_pulled_from_with_the_right_credentials_only() {
    ensure_image();
    let registry = Registry::start("puller", "right-pass");
    let u = unique("r");
    let image = registry.push(&u, "puller", "right-pass");
    let dev = Dev::start().await;
    let aws = Recorded {
        aws: Aws::new(&dev),
        answers: Mutex::new(Vec::new()),
    };
    let role = execution_role(&aws, &format!("{u}-exec"), json!("*")).await;
    let wrong = aws
        .ok(&[
            "secretsmanager",
            "create-secret",
            "--name",
            &format!("{u}-wrong"),
            "--secret-string",
            &json!({"username": "puller", "password": "wrong-pass"}).to_string(),
        ])
        .await["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    let right = aws
        .ok(&[
            "secretsmanager",
            "create-secret",
            "--name",
            &format!("{u}-right"),
            "--secret-string",
            &json!({"username": "puller", "password": "right-pass"}).to_string(),
        ])
        .await["ARN"]
        .as_str()
        .unwrap()
        .to_string();

    for (what, credentials) in [("no", None), ("wrong", Some(&wrong))] {
        let mut container = json!({"image": image});
        if let Some(c) = credentials {
            container["repositoryCredentials"] = json!({"credentialsParameter": c});
        }
        let td = register(&aws, &format!("{u}-{what}"), &role, container).await;
        let t = settle(&aws, &dev.cluster, &run(&aws, &dev.cluster, &td).await).await;
        assert_eq!(t["lastStatus"], "STOPPED", "{what} credentials: {t:#}");
        assert_eq!(
            t["stopCode"], "TaskFailedToStart",
            "{what} credentials: {t:#}"
        );
        let reason = t["stoppedReason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with("CannotPullContainerError:"),
            "{what} credentials: {reason}"
        );
        assert!(!reason.contains("wrong-pass"), "{reason}");
    }

    let td = register(
        &aws,
        &format!("{u}-right"),
        &role,
        json!({"image": image, "repositoryCredentials": {"credentialsParameter": right}}),
    )
    .await;
    let task = run(&aws, &dev.cluster, &td).await;
    let t = settle(&aws, &dev.cluster, &task).await;
    assert_eq!(t["lastStatus"], "RUNNING", "{t:#}");
    aws.ok(&[
        "ecs",
        "stop-task",
        "--cluster",
        &dev.cluster,
        "--task",
        &task,
    ])
    .await;
    let answers = aws.answers.lock().unwrap().join("\n");
    assert_nowhere(
        &["right-pass", "wrong-pass"],
        &dev.dir.path().join("data"),
        &[
            ("the API's answers", answers),
            ("Gantry's output", dev.proc.output()),
        ],
    );
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_rotates_while_secrets_stay_readable() {
    let dev = Dev::start().await;
    let aws = Recorded {
        aws: Aws::new(&dev),
        answers: Mutex::new(Vec::new()),
    };
    let key_file = dev.dir.path().join("data").join("master.key");
    let keyring = |what: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap())
            .unwrap_or_else(|e| panic!("{what}: the key file is not JSON: {e}"))
    };
    let before = keyring("before");
    let old_key = before["primary"].as_str().unwrap().to_string();
    let secret = secret_value("rotated");
    let u = unique("k");
    let arn = aws
        .ok(&[
            "secretsmanager",
            "create-secret",
            "--name",
            &u,
            "--secret-string",
            &secret,
        ])
        .await["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    let parameter = format!("/{u}/p");
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &parameter,
        "--type",
        "SecureString",
        "--value",
        &secret,
    ])
    .await;

    let endpoint = dev.endpoint.clone();
    let status = common::cli::gantry_within_as(
        Duration::from_secs(30),
        &["keys", "status", "--endpoint", &endpoint],
        Some(&dev.keys),
    )
    .await;
    assert!(status.status.success(), "{}", status.text());
    assert!(status.stdout.contains(&old_key), "{}", status.text());

    // More secrets, so that the rotation takes a while, and clients that read and write
    // secrets all through it: none may fail (no downtime).
    const MORE: usize = 60;
    let (api, admin) = (dev.endpoint.clone(), dev.keys.clone());
    let call = move |target: &'static str, input: Value| {
        let (endpoint, keys) = (api.clone(), admin.clone());
        async move {
            signed_json(
                &endpoint,
                &keys,
                "secretsmanager",
                &format!("secretsmanager.{target}"),
                &input,
            )
            .await
        }
    };
    let more_value = |i: usize| format!("{secret}-{i}");
    let created = futures::future::join_all((0..MORE).map(|i| {
        call(
            "CreateSecret",
            json!({"Name": format!("{u}/more/{i}"), "SecretString": more_value(i)}),
        )
    }))
    .await;
    assert!(
        created.iter().all(|(status, _)| *status == 200),
        "{created:?}"
    );
    let rotating = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..2)
        .map(|client| {
            let rotating = rotating.clone();
            let call = call.clone();
            let u = u.clone();
            let expected: Vec<String> = (0..MORE).map(more_value).collect();
            tokio::spawn(async move {
                // (when each call began and ended, failures)
                let (mut calls, mut failures) = (Vec::new(), Vec::new());
                let mut i = client;
                while rotating.load(Ordering::SeqCst) {
                    let began = Instant::now();
                    let n = i % MORE;
                    let (status, got) = call("GetSecretValue", json!({"SecretId": format!("{u}/more/{n}")})).await;
                    if status != 200 || got["SecretString"] != expected[n].as_str() {
                        failures.push(format!("GetSecretValue {n}: {status} {got}"));
                    }
                    // Writes too: a new version of the client's own secret (same value).
                    let (status, got) = call("PutSecretValue", json!({"SecretId": format!("{u}/more/{client}"), "SecretString": expected[client]})).await;
                    if status != 200 {
                        failures.push(format!("PutSecretValue: {status} {got}"));
                    }
                    calls.push((began, Instant::now()));
                    i += 2;
                    // Room for the rotation's compare-and-swap on the secrets written here.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (calls, failures)
            })
        })
        .collect();

    let rotation_began = Instant::now();
    let rotated = common::cli::gantry_within_as(
        Duration::from_secs(60),
        &["keys", "rotate", "--endpoint", &endpoint],
        Some(&dev.keys),
    )
    .await;
    let rotation_ended = Instant::now();
    rotating.store(false, Ordering::SeqCst);
    let mut calls_within = 0;
    for client in clients {
        let (calls, failures) = client.await.expect("client");
        assert!(
            failures.is_empty(),
            "calls failed during the rotation: {failures:?}"
        );
        calls_within += calls
            .iter()
            .filter(|(began, ended)| *began >= rotation_began && *ended <= rotation_ended)
            .count();
    }
    assert!(rotated.status.success(), "{}", rotated.text());
    assert!(
        calls_within > 0,
        "no client call began and ended while `gantry keys rotate` ran"
    );
    let rewrapped: usize = rotated
        .stdout
        .split("rewrapped ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of rewrapped values: {}", rotated.text()));
    assert!(rewrapped > MORE, "{}", rotated.text());
    assert!(
        rotated
            .stdout
            .contains("secret value(s) and 1 parameter value(s)"),
        "{}",
        rotated.text()
    );
    let after = keyring("after");
    let new_key = after["primary"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    assert_eq!(
        after["keys"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec![&new_key],
        "the old key is retired"
    );
    assert!(rotated.stdout.contains(&format!("retired {old_key}")));

    // Both values still open, under the new key only.
    let got = aws
        .ok(&["secretsmanager", "get-secret-value", "--secret-id", &arn])
        .await;
    assert_eq!(got["SecretString"], secret);
    let got = aws
        .ok(&[
            "ssm",
            "get-parameter",
            "--name",
            &parameter,
            "--with-decryption",
        ])
        .await;
    assert_eq!(got["Parameter"]["Value"], secret);
    for i in 0..MORE {
        let (status, got) = call(
            "GetSecretValue",
            json!({"SecretId": format!("{u}/more/{i}")}),
        )
        .await;
        assert_eq!(
            (status, got["SecretString"].clone()),
            (200, json!(more_value(i))),
            "{got}"
        );
    }
    // And after a restart, from the key file alone.
    let mut dev = dev;
    dev.restart_hard().await;
    let got = aws
        .ok(&["secretsmanager", "get-secret-value", "--secret-id", &arn])
        .await;
    assert_eq!(got["SecretString"], secret);
}
