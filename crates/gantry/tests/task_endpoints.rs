//! Task roles and the task metadata endpoint with real containers on `gantry dev`: a task
//! reads its own credentials at `http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
//! from inside its container (busybox `wget`) in bridge, host and awsvpc modes; they work
//! against Gantry's API with exactly the role's rights; another task gets other credentials
//! with its own role's rights; boto3 inside a container finds them with no configuration; a
//! role ECS cannot assume stops the task with ECS's reason; credentials rotate before they
//! expire and stop working once the task stops; `${ECS_CONTAINER_METADATA_URI_V4}` answers
//! inside the container; a restarted Gantry serves its adopted tasks at the same URIs.
//!
//! Several Gantry processes may run these at once: whichever holds 169.254.170.2:80 forwards
//! every request to the agent that owns its id, so every wait below polls with a deadline.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode};
use aws_sdk_ecs::Client;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ROLE_ARN_PREFIX: &str = "arn:aws:iam::000000000000:role/";

/// A role that `service` may assume, allowed only `actions`; its ARN.
async fn create_role(aws: &Aws, name: &str, service: &str, actions: &[&str]) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]});
    aws.ok(&[
        "iam",
        "create-role",
        "--role-name",
        name,
        "--assume-role-policy-document",
        &trust.to_string(),
    ])
    .await;
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]});
    aws.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        name,
        "--policy-name",
        "task",
        "--policy-document",
        &policy.to_string(),
    ])
    .await;
    format!("{ROLE_ARN_PREFIX}{name}")
}

fn sleeper(name: &str) -> ContainerDefinition {
    busybox_container(name, &["sh", "-c", "sleep 3600"])
}

async fn register_with_role(
    client: &Client,
    family: &str,
    mode: NetworkMode,
    role: Option<&str>,
    containers: Vec<ContainerDefinition>,
) -> String {
    register_with_volumes(client, family, mode, role, containers, Vec::new()).await
}

/// [`register_with_role`] with the task definition's `volumes`.
async fn register_with_volumes(
    client: &Client,
    family: &str,
    mode: NetworkMode,
    role: Option<&str>,
    containers: Vec<ContainerDefinition>,
    volumes: Vec<aws_sdk_ecs::types::Volume>,
) -> String {
    client
        .register_task_definition()
        .family(family)
        .network_mode(mode)
        .set_task_role_arn(role.map(str::to_string))
        .set_container_definitions(Some(containers))
        .set_volumes((!volumes.is_empty()).then_some(volumes))
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("ARN")
        .to_string()
}

/// The Docker id of container `name` of task `task_arn`.
fn container_of(task_arn: &str, name: &str) -> String {
    sh(&format!(
        "docker ps -q --no-trunc --filter label=com.amazonaws.ecs.task-arn={task_arn} --filter label=com.amazonaws.ecs.container-name={name}"
    ))
}

/// Runs `script` with `sh -c` inside the container; (success, stdout + stderr).
async fn exec(container: &str, script: &str) -> (bool, String) {
    let out = tokio::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .await
        .expect("docker exec");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The JSON document `script` prints inside the container, polled until it answers (the
/// front may be changing hands between Gantry processes).
async fn json_from(container: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = exec(container, script).await;
        if let Some(v) = serde_json::from_str::<Value>(out.trim())
            .ok()
            .filter(|_| ok)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "`{script}` gave no JSON within 30 s; last output: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const CREDENTIALS: &str =
    r#"wget -q -O - "http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI""#;

fn session_of(doc: &Value) -> Keys {
    let field = |k: &str| {
        doc[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {doc}"))
            .to_string()
    };
    Keys {
        id: field("AccessKeyId"),
        secret: field("SecretAccessKey"),
        session_token: Some(field("Token")),
    }
}

fn expiration_of(doc: &Value) -> i64 {
    let e = doc["Expiration"].as_str().unwrap_or_default();
    assert!(
        e.len() == 20 && e.ends_with('Z') && e.as_bytes()[10] == b'T',
        "Expiration is RFC 3339 UTC: {doc}"
    );
    sh(&format!("date -u -d '{}' +%s", e.replace(['T', 'Z'], " ")))
        .parse()
        .expect("epoch")
}

async fn run_in(dev: &Dev, td: &str, network: Option<&Subnet>) -> String {
    let r = dev
        .client
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(td)
        .set_network_configuration(network.map(Subnet::network))
        .send()
        .await
        .expect("RunTask");
    assert!(r.failures().is_empty(), "{:?}", r.failures());
    let arn = r.tasks()[0].task_arn().expect("ARN").to_string();
    wait_task(
        &dev.client,
        &dev.cluster,
        &arn,
        "RUNNING",
        Duration::from_secs(60),
    )
    .await;
    arn
}

#[tokio::test]
async fn a_task_role_reaches_its_containers_in_every_network_mode_with_exactly_its_rights() {
    let pool = awsvpc_pool();
    let dev = Dev::start_with(&["--awsvpc-cidr", &pool]).await;
    let aws = Aws::new(&dev);
    let subnet = Subnet::new();
    // "10.A.B.0/20": the task's address starts with "10.A.".
    let pool_prefix = format!("{}.", pool.split('.').take(2).collect::<Vec<_>>().join("."));
    let lister = create_role(
        &aws,
        &unique("lister"),
        "ecs-tasks.amazonaws.com",
        &["ecs:ListClusters"],
    )
    .await;
    let mut seen_keys = Vec::new();
    let mut bridge_session = None;
    for (mode, network) in [
        (NetworkMode::Bridge, None),
        (NetworkMode::Host, None),
        (NetworkMode::Awsvpc, Some(&subnet)),
    ] {
        let td = register_with_role(
            &dev.client,
            &unique("role"),
            mode.clone(),
            Some(&lister),
            vec![sleeper("app")],
        )
        .await;
        let task = run_in(&dev, &td, network).await;
        let doc = json_from(&container_of(&task, "app"), CREDENTIALS).await;
        assert_eq!(doc["RoleArn"], lister.as_str(), "{mode:?}: {doc}");
        let keys = session_of(&doc);
        assert!(keys.id.starts_with("ASIA"), "{doc}");
        let expires = expiration_of(&doc);
        let now = gantry_auth::client::now();
        assert!(
            expires > now + 3600 && expires <= now + 6 * 3600 + 60,
            "about six hours: {doc}"
        );
        seen_keys.push(keys.id.clone());
        // The metadata endpoint answers in every mode too, with the task's network.
        let meta = json_from(
            &container_of(&task, "app"),
            r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4""#,
        )
        .await;
        assert_eq!(
            meta["Networks"][0]["NetworkMode"],
            mode.as_str(),
            "{meta:#}"
        );
        if mode == NetworkMode::Awsvpc {
            assert!(
                meta["Networks"][0]["IPv4Addresses"][0]
                    .as_str()
                    .is_some_and(|ip| ip.starts_with(&pool_prefix)),
                "{meta:#}"
            );
        }
        if mode == NetworkMode::Bridge {
            bridge_session = Some(keys);
        }
    }
    seen_keys.sort();
    seen_keys.dedup();
    assert_eq!(seen_keys.len(), 3, "each task its own keys: {seen_keys:?}");

    // Gantry's API honours them with the role's rights, and nothing more.
    let session = bridge_session.expect("bridge task's credentials");
    let as_task = client_for(&dev.endpoint, &session).await;
    let listed = as_task.list_clusters().send().await.expect("ListClusters");
    assert!(!listed.cluster_arns().is_empty());
    for denied in [
        as_task
            .create_cluster()
            .cluster_name("nope")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.into_service_error().code().map(str::to_string)),
        as_task
            .describe_clusters()
            .clusters(&dev.cluster)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.into_service_error().code().map(str::to_string)),
    ] {
        assert_eq!(denied, Err(Some("AccessDeniedException".to_string())));
    }
    let tokenless = Keys {
        session_token: None,
        ..session.clone()
    };
    let refused = client_for(&dev.endpoint, &tokenless)
        .await
        .list_clusters()
        .send()
        .await
        .map_err(|e| e.into_service_error().code().map(str::to_string));
    assert_eq!(
        refused.err(),
        Some(Some("UnrecognizedClientException".to_string()))
    );

    // Another task with another role gets other credentials; an id it was not given serves
    // nothing.
    let other_role = create_role(
        &aws,
        &unique("other"),
        "ecs-tasks.amazonaws.com",
        &["ecs:DescribeClusters"],
    )
    .await;
    let td = register_with_role(
        &dev.client,
        &unique("other"),
        NetworkMode::Bridge,
        Some(&other_role),
        vec![sleeper("app")],
    )
    .await;
    let other_task = run_in(&dev, &td, None).await;
    let other_container = container_of(&other_task, "app");
    let doc = json_from(&other_container, CREDENTIALS).await;
    assert_eq!(doc["RoleArn"], other_role.as_str());
    assert!(!seen_keys.contains(&session_of(&doc).id));
    // Each task's credentials carry its own role's rights, not the other's.
    let as_other = client_for(&dev.endpoint, &session_of(&doc)).await;
    as_other
        .describe_clusters()
        .clusters(&dev.cluster)
        .send()
        .await
        .expect("DescribeClusters with the other role");
    let refused = as_other
        .list_clusters()
        .send()
        .await
        .map_err(|e| e.into_service_error().code().map(str::to_string));
    assert_eq!(
        refused.err(),
        Some(Some("AccessDeniedException".to_string()))
    );
    let (ok, out) = exec(
        &other_container,
        "wget -q -O - http://169.254.170.2/v2/credentials/00000000000000000000000000000000",
    )
    .await;
    assert!(!ok && out.contains("400"), "an unknown id: {out}");
    // Its metadata id is no credentials id either.
    let (ok, out) = exec(
        &other_container,
        r#"wget -q -O - "http://169.254.170.2/v2/credentials/${ECS_CONTAINER_METADATA_URI_V4##*/}""#,
    )
    .await;
    assert!(!ok && out.contains("400"), "a metadata id: {out}");

    // The credentials never reach Gantry's own output (the in-process agent logs at debug).
    let output = dev.proc.output();
    let token = session.session_token.as_deref().expect("a session token");
    for (what, value) in [
        ("secret key", session.secret.as_str()),
        ("session token", token),
    ] {
        assert!(!output.contains(value), "the {what} is in Gantry's output");
    }
}

/// What boto3 prints from inside the container: which provider found credentials, the
/// clusters it listed and what CreateCluster answered. It is given only the endpoint and the
/// Region; the credentials it finds alone (the SDKs' container provider reads
/// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`).
const BOTO3_IN_THE_CONTAINER: &str = r#"
import json, sys
import boto3
from botocore.exceptions import ClientError
session = boto3.session.Session()
found = session.get_credentials()
out = {"provider": found.method if found else None}
ecs = session.client("ecs", region_name="us-east-1", endpoint_url=sys.argv[1])
out["clusters"] = ecs.list_clusters()["clusterArns"]
try:
    ecs.create_cluster(clusterName="made-from-a-task")
    out["create"] = "allowed"
except ClientError as e:
    out["create"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;

/// The host's Python with boto3 (the test suite's own, `pip install boto3`): its
/// interpreter and the directories it needs that are not under `/usr` (a pyenv or venv
/// prefix, the user's site-packages), each of which exists.
fn host_python_with_boto3() -> (String, Vec<String>) {
    let out = sh(
        "python3 -c 'import sys, site, boto3; print(sys.executable); print(sys.base_prefix); print(sys.prefix); print(site.getusersitepackages())'",
    );
    let mut lines = out.lines().map(str::trim);
    let executable = lines
        .next()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| panic!("python3 with boto3 is needed (pip install boto3): {out}"))
        .to_string();
    let mut dirs: Vec<String> = Vec::new();
    for dir in lines.filter(|l| !l.is_empty() && std::path::Path::new(l).is_dir()) {
        if dir != "/usr"
            && !dir.starts_with("/usr/")
            && !dirs.iter().any(|d| dir.starts_with(d.as_str()))
        {
            dirs.push(dir.to_string());
        }
    }
    (executable, dirs)
}

#[tokio::test]
async fn an_aws_sdk_inside_the_container_finds_its_credentials_with_no_configuration() {
    use aws_sdk_ecs::types::{HostVolumeProperties, MountPoint, Volume};
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let lister = create_role(
        &aws,
        &unique("sdk"),
        "ecs-tasks.amazonaws.com",
        &["ecs:ListClusters"],
    )
    .await;
    // The busybox image holds no Python: the host's runtime is bind-mounted read-only
    // (`/usr`, the loader's `/lib` and `/lib64`, and the Python prefix), and the task runs in
    // host mode so that it reaches Gantry's API on loopback. The credentials come from the
    // endpoint at 169.254.170.2 as in every mode.
    let (python, python_dirs) = host_python_with_boto3();
    let mut mounts: Vec<(String, String)> = vec![("/usr".into(), "/usr".into())];
    for system_dir in ["/lib", "/lib64"] {
        if let Ok(real) = std::fs::canonicalize(system_dir) {
            mounts.push((real.display().to_string(), system_dir.to_string()));
        }
    }
    mounts.extend(python_dirs.into_iter().map(|d| (d.clone(), d)));
    let volumes: Vec<Volume> = mounts
        .iter()
        .enumerate()
        .map(|(i, (host, _))| {
            Volume::builder()
                .name(format!("host{i}"))
                .host(HostVolumeProperties::builder().source_path(host).build())
                .build()
        })
        .collect();
    let mount_points: Vec<MountPoint> = mounts
        .iter()
        .enumerate()
        .map(|(i, (_, inside))| {
            MountPoint::builder()
                .source_volume(format!("host{i}"))
                .container_path(inside)
                .read_only(true)
                .build()
        })
        .collect();
    let app = ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        // boto3 loads its service models: more than the 64 MiB the sleepers get.
        .memory(512)
        .stop_timeout(2)
        .set_command(Some(vec!["sh".into(), "-c".into(), "sleep 3600".into()]))
        .set_mount_points(Some(mount_points))
        .build();
    let td = register_with_volumes(
        &dev.client,
        &unique("sdk"),
        NetworkMode::Host,
        Some(&lister),
        vec![app],
        volumes,
    )
    .await;
    let task = run_in(&dev, &td, None).await;
    let container = container_of(&task, "app");

    // Nothing in the container's environment configures credentials: only the URI the
    // agent injects.
    let (ok, env) = exec(&container, "env").await;
    assert!(ok, "{env}");
    assert!(
        env.contains("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="),
        "{env}"
    );
    for configured in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
    ] {
        assert!(!env.contains(configured), "{configured} in {env}");
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let out = tokio::process::Command::new("docker")
            .args([
                "exec",
                "-e",
                "HOME=/tmp",
                &container,
                &python,
                "-c",
                BOTO3_IN_THE_CONTAINER,
                &dev.endpoint,
            ])
            .output()
            .await
            .expect("docker exec");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(v) = serde_json::from_str::<Value>(text.trim())
            .ok()
            .filter(|_| out.status.success())
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "boto3 in the container gave no answer within 60 s: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer["provider"], "container-role", "{answer}");
    let cluster_arn = format!("arn:aws:ecs:us-east-1:000000000000:cluster/{}", dev.cluster);
    assert!(
        answer["clusters"]
            .as_array()
            .is_some_and(|c| c.iter().any(|a| a == cluster_arn.as_str())),
        "{answer}"
    );
    assert_eq!(answer["create"], "AccessDeniedException", "{answer}");
}

#[tokio::test]
async fn a_role_ecs_cannot_assume_stops_the_task_with_ecs_reason() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let ec2_only = create_role(
        &aws,
        &unique("ec2only"),
        "ec2.amazonaws.com",
        &["ecs:ListClusters"],
    )
    .await;
    let missing = format!("{ROLE_ARN_PREFIX}{}", unique("missing"));
    for role in [ec2_only, missing] {
        let td = register_with_role(
            &dev.client,
            &unique("refused"),
            NetworkMode::Bridge,
            Some(&role),
            vec![sleeper("app")],
        )
        .await;
        let task = run_one(&dev.client, &dev.cluster, &td).await;
        let stopped = wait_task(
            &dev.client,
            &dev.cluster,
            &task,
            "STOPPED",
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            stopped.stopped_reason(),
            Some(
                format!(
                    "ECS was unable to assume the role '{role}' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role."
                )
                .as_str()
            ),
            "{stopped:#?}"
        );
        assert_eq!(
            stopped.stop_code(),
            Some(&aws_sdk_ecs::types::TaskStopCode::TaskFailedToStart)
        );
        assert!(
            container_of(&task, "app").is_empty(),
            "no container was created"
        );
    }
}

#[tokio::test]
async fn credentials_rotate_before_they_expire_and_stop_working_when_the_task_stops() {
    let dev = Dev::start_with(&["--task-credentials-duration", "20"]).await;
    let aws = Aws::new(&dev);
    let role = create_role(
        &aws,
        &unique("rotating"),
        "ecs-tasks.amazonaws.com",
        &["ecs:ListClusters"],
    )
    .await;
    let td = register_with_role(
        &dev.client,
        &unique("rotating"),
        NetworkMode::Bridge,
        Some(&role),
        vec![sleeper("app")],
    )
    .await;
    let task = run_in(&dev, &td, None).await;
    let container = container_of(&task, "app");
    let first = json_from(&container, CREDENTIALS).await;
    let first_expires = expiration_of(&first);
    let started = Instant::now();
    let second = eventually(Duration::from_secs(30), "new credentials", || async {
        let (ok, out) = exec(&container, CREDENTIALS).await;
        let doc: Value = serde_json::from_str(out.trim()).ok().filter(|_| ok)?;
        (doc["AccessKeyId"] != first["AccessKeyId"]).then_some(doc)
    })
    .await
    .expect("rotation");
    assert!(
        gantry_auth::client::now() < first_expires,
        "rotated {:?} after the first read, before the first ones expired ({first} / {second})",
        started.elapsed()
    );
    assert!(expiration_of(&second) > first_expires);
    // Both work until they expire.
    for doc in [&first, &second] {
        let c = client_for(&dev.endpoint, &session_of(doc)).await;
        c.list_clusters().send().await.expect("ListClusters");
    }

    // Stopped: its keys are deleted, and the endpoint no longer serves them.
    dev.client
        .stop_task()
        .cluster(&dev.cluster)
        .task(&task)
        .send()
        .await
        .expect("StopTask");
    wait_task(
        &dev.client,
        &dev.cluster,
        &task,
        "STOPPED",
        Duration::from_secs(30),
    )
    .await;
    let c = client_for(&dev.endpoint, &session_of(&second)).await;
    let code = eventually(Duration::from_secs(15), "the keys to be deleted", || {
        let c = c.clone();
        async move {
            let code = c
                .list_clusters()
                .send()
                .await
                .err()?
                .into_service_error()
                .code()?
                .to_string();
            Some(code)
        }
    })
    .await
    .expect("refused");
    assert_eq!(code, "UnrecognizedClientException");
}

#[tokio::test]
async fn the_metadata_endpoint_answers_inside_the_container() {
    let dev = Dev::start().await;
    let td = register_with_role(
        &dev.client,
        &unique("meta"),
        NetworkMode::Bridge,
        None,
        vec![sleeper("app"), sleeper("sidecar")],
    )
    .await;
    let task = run_in(&dev, &td, None).await;
    let app = container_of(&task, "app");
    let sidecar = container_of(&task, "sidecar");

    let (_, env) = exec(&app, "env").await;
    assert!(
        env.contains("ECS_CONTAINER_METADATA_URI_V4=http://169.254.170.2/v4/"),
        "{env}"
    );
    assert!(
        env.contains("ECS_CONTAINER_METADATA_URI=http://169.254.170.2/v3/"),
        "{env}"
    );
    assert!(
        !env.contains("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        "no role, no credentials: {env}"
    );

    let doc = json_from(&app, r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4""#).await;
    assert_eq!(doc["Name"], "app", "{doc:#}");
    assert_eq!(doc["DockerId"], app.as_str());
    assert_eq!(doc["Image"], IMAGE);
    assert_eq!(doc["KnownStatus"], "RUNNING");
    assert_eq!(doc["DesiredStatus"], "RUNNING");
    assert_eq!(doc["Type"], "NORMAL");
    assert!(
        doc["ImageID"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{doc:#}"
    );
    assert!(
        doc["StartedAt"].is_string() && doc["CreatedAt"].is_string(),
        "{doc:#}"
    );
    assert_eq!(doc["Labels"]["com.amazonaws.ecs.task-arn"], task.as_str());
    assert_eq!(doc["Networks"][0]["NetworkMode"], "bridge", "{doc:#}");
    assert!(
        doc["Networks"][0]["IPv4Addresses"][0].is_string(),
        "{doc:#}"
    );

    let t = json_from(
        &app,
        r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task""#,
    )
    .await;
    assert_eq!(t["TaskARN"], task.as_str(), "{t:#}");
    assert_eq!(t["Cluster"], dev.cluster_arn());
    assert_eq!(t["KnownStatus"], "RUNNING");
    assert_eq!(t["LaunchType"], "EC2");
    assert!(t["PullStartedAt"].is_string(), "{t:#}");
    let mut names: Vec<&str> = t["Containers"]
        .as_array()
        .expect("Containers")
        .iter()
        .filter_map(|c| c["Name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["app", "sidecar"]);

    let stats = json_from(
        &app,
        r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/stats""#,
    )
    .await;
    assert!(stats["memory_stats"].is_object(), "{stats:#}");
    assert!(stats["cpu_stats"].is_object(), "{stats:#}");
    // Even the first answer carries a previous CPU sample, so that one answer gives CPU use.
    assert!(
        stats["precpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "{stats:#}"
    );
    assert!(
        stats["preread"]
            .as_str()
            .is_some_and(|t| !t.starts_with("0001-")),
        "{stats:#}"
    );
    // The next one is taken against the one before: its CPU figures and the network rates
    // the ECS agent adds.
    let again = json_from(
        &app,
        r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/stats""#,
    )
    .await;
    assert_eq!(again["preread"], stats["read"], "{again:#}");
    assert_eq!(again["precpu_stats"], stats["cpu_stats"], "{again:#}");
    for rate in ["rx_bytes_per_sec", "tx_bytes_per_sec"] {
        assert!(
            again["network_rate_stats"][rate]
                .as_f64()
                .is_some_and(|r| r >= 0.0),
            "{again:#}"
        );
    }
    let all = json_from(
        &app,
        r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task/stats""#,
    )
    .await;
    assert!(
        all[&app].is_object() && all[&sidecar].is_object(),
        "{all:#}"
    );

    // The sidecar's own endpoint describes the sidecar.
    let doc = json_from(&sidecar, r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4""#).await;
    assert_eq!(doc["Name"], "sidecar");
    assert_eq!(doc["DockerId"], sidecar.as_str());
}

#[tokio::test]
async fn a_restarted_gantry_serves_its_adopted_tasks_at_the_same_uris() {
    let mut dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let role = create_role(
        &aws,
        &unique("adopted"),
        "ecs-tasks.amazonaws.com",
        &["ecs:ListClusters"],
    )
    .await;
    let td = register_with_role(
        &dev.client,
        &unique("adopted"),
        NetworkMode::Bridge,
        Some(&role),
        vec![sleeper("app")],
    )
    .await;
    let task = run_in(&dev, &td, None).await;
    let container = container_of(&task, "app");
    json_from(&container, CREDENTIALS).await;
    let meta = r#"wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task""#;
    json_from(&container, meta).await;

    dev.restart_hard().await;
    assert_eq!(
        container_of(&task, "app"),
        container,
        "the container was adopted, not replaced"
    );
    // The URIs in the container's environment lead to the new agent process.
    let after = json_from(&container, CREDENTIALS).await;
    assert_eq!(after["RoleArn"], role.as_str());
    let c = client_for(&dev.endpoint, &session_of(&after)).await;
    c.list_clusters().send().await.expect("ListClusters");
    let t = json_from(&container, meta).await;
    assert_eq!(t["TaskARN"], task.as_str());
    assert_eq!(t["KnownStatus"], "RUNNING", "{t:#}");
}
