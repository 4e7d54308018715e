//! The endpoints in one process: an agent's server, the front on loopback and a registry in a
//! temporary directory, with credentials from a test double (no Docker, no control plane).

use super::*;
use crate::api_client::ApiError;
use futures::future::BoxFuture;
use gantry_model::agent_protocol::{AssignedContainer, ContainerStateChange};
use gantry_model::types::{ContainerDefinition, TaskDefinition};
use std::sync::atomic::AtomicUsize;

/// Hands out numbered credentials that expire `lifetime` seconds after they are fetched.
struct Minter {
    lifetime: f64,
    fetched: AtomicUsize,
    refuse: Option<String>,
}

impl CredentialsSource for Minter {
    fn fetch(&self, task_arn: &str) -> BoxFuture<'_, Result<TaskRoleCredentials, ApiError>> {
        let n = self.fetched.fetch_add(1, Ordering::SeqCst);
        let answer = match &self.refuse {
            Some(m) => Err(ApiError::Service {
                status: 400,
                code: "ClientException".into(),
                message: m.clone(),
            }),
            None => Ok(TaskRoleCredentials {
                role_arn: "arn:aws:iam::000000000000:role/app".into(),
                access_key_id: format!("ASIA{n:016}"),
                secret_access_key: format!("secret-{task_arn}-{n}"),
                session_token: format!("token-{n}"),
                expiration: gantry_model::now_epoch() + self.lifetime,
            }),
        };
        Box::pin(async move { answer })
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    endpoints: TaskEndpoints,
    front: SocketAddr,
    http: reqwest::Client,
    _stop: watch::Sender<bool>,
}

async fn setup(source: Minter) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    let mut config = TaskEndpointsConfig::new(registry.clone(), IdKey::random());
    config.credentials = Some(Arc::new(source));
    config.availability_zone = Some("us-east-1a".into());
    config.patience = Duration::from_millis(200);
    let endpoints = TaskEndpoints::start(config).await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind front");
    let front = listener.local_addr().expect("addr");
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(front::serve(listener, registry, stopped));
    Setup {
        _dir: dir,
        endpoints,
        front,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        _stop: stop,
    }
}

impl Setup {
    /// GET through the front; status and JSON.
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("http://{}{path}", self.front))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

fn assignment(id: &str, role: Option<&str>) -> TaskAssignment {
    TaskAssignment {
        task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/c/{id}"),
        cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/c".into(),
        desired_status: "RUNNING".into(),
        version: 1,
        task_definition: TaskDefinition {
            family: "app".into(),
            revision: Some(3),
            task_role_arn: role.map(str::to_string),
            container_definitions: vec![
                ContainerDefinition {
                    name: Some("main".into()),
                    image: Some("busybox".into()),
                    ..Default::default()
                },
                ContainerDefinition {
                    name: Some("side".into()),
                    image: Some("busybox".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
        overrides: None,
        containers: vec![AssignedContainer {
            name: "main".into(),
            container_arn: "arn:aws:ecs:us-east-1:000000000000:container/c/x/1".into(),
        }],
        network_interface: None,
    }
}

fn var(env: &InjectedEnvironment, name: &str) -> String {
    env.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn minter(lifetime: f64) -> Minter {
    Minter {
        lifetime,
        fetched: AtomicUsize::new(0),
        refuse: None,
    }
}

#[tokio::test]
async fn a_task_reaches_its_own_credentials_and_metadata_through_the_front() {
    let s = setup(minter(3600.0)).await;
    let a = assignment("aaaa", Some("arn:aws:iam::000000000000:role/app"));
    let lease = s
        .endpoints
        .open(s.endpoints.describe(&a))
        .await
        .expect("open");
    let main = lease.environment("main");
    let creds_uri = var(&main, CREDENTIALS_URI_VAR);
    assert!(creds_uri.starts_with("/v2/credentials/"), "{creds_uri}");
    let meta = var(&main, METADATA_URI_V4_VAR);
    let meta_path = meta
        .strip_prefix("http://169.254.170.2")
        .expect("metadata URI on the ECS address")
        .to_string();
    assert_eq!(var(&main, METADATA_URI_VAR), meta.replace("/v4/", "/v3/"));
    // The sidecar shares the credentials, not the metadata id.
    let side = lease.environment("side");
    assert_eq!(var(&side, CREDENTIALS_URI_VAR), creds_uri);
    assert_ne!(var(&side, METADATA_URI_V4_VAR), meta);

    let (status, doc) = s.get(&creds_uri).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["RoleArn"], "arn:aws:iam::000000000000:role/app");
    assert!(doc["AccessKeyId"]
        .as_str()
        .is_some_and(|k| k.starts_with("ASIA")));
    assert!(doc["Token"].is_string() && doc["SecretAccessKey"].is_string());
    assert!(doc["Expiration"].as_str().is_some_and(|e| e.ends_with('Z')));

    // Metadata before any report: PENDING; after one, what the runner said.
    let (status, doc) = s.get(&meta_path).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["Name"], "main");
    assert_eq!(doc["KnownStatus"], "PENDING");
    lease.publish(
        &SubmitTaskStateChange {
            status: Some("RUNNING".into()),
            containers: Some(vec![ContainerStateChange {
                container_name: Some("main".into()),
                runtime_id: Some("d0c4e7".into()),
                status: Some("RUNNING".into()),
                ..Default::default()
            }]),
            ..Default::default()
        },
        "RUNNING",
    );
    let (_, doc) = s.get(&meta_path).await;
    assert_eq!(doc["DockerId"], "d0c4e7");
    assert_eq!(doc["KnownStatus"], "RUNNING");
    assert_eq!(
        doc["ContainerARN"],
        "arn:aws:ecs:us-east-1:000000000000:container/c/x/1"
    );
    let (status, task) = s.get(&format!("{meta_path}/task")).await;
    assert_eq!(status, 200);
    assert_eq!(task["TaskARN"], a.task_arn);
    assert_eq!(task["AvailabilityZone"], "us-east-1a");
    assert_eq!(task["Containers"].as_array().map(Vec::len), Some(2));

    // Metadata ids are not credentials ids, and unknown ids answer as ECS does.
    let meta_id = meta_path.trim_start_matches("/v4/");
    let (status, err) = s.get(&format!("/v2/credentials/{meta_id}")).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("InvalidIdInRequest"))
    );
    let (status, _) = s
        .get("/v2/credentials/00000000000000000000000000000000")
        .await;
    assert_eq!(status, 400);
    let (status, _) = s.get("/v4/00000000000000000000000000000000/task").await;
    assert_eq!(status, 404);

    // A second task gets other credentials, and its id does not serve the first task's.
    let b = assignment("bbbb", Some("arn:aws:iam::000000000000:role/other"));
    let other = s
        .endpoints
        .open(s.endpoints.describe(&b))
        .await
        .expect("open b");
    let other_uri = var(&other.environment("main"), CREDENTIALS_URI_VAR);
    assert_ne!(other_uri, creds_uri);
    let (_, first) = s.get(&creds_uri).await;
    let (_, second) = s.get(&other_uri).await;
    assert_ne!(first["AccessKeyId"], second["AccessKeyId"]);
    assert_ne!(first["SecretAccessKey"], second["SecretAccessKey"]);

    // Stopped: its credentials are gone; closed: its registrations too.
    lease.publish(
        &SubmitTaskStateChange {
            status: Some("STOPPED".into()),
            ..Default::default()
        },
        "STOPPED",
    );
    let (status, _) = s.get(&creds_uri).await;
    assert_eq!(status, 400);
    let (status, doc) = s.get(&meta_path).await;
    assert_eq!(
        (status, doc["DesiredStatus"].as_str()),
        (200, Some("STOPPED"))
    );
    drop(lease);
    let (status, _) = s.get(&meta_path).await;
    assert_eq!(status, 404);
    let left: Vec<String> = std::fs::read_dir(s.endpoints.registry().dir())
        .expect("registry")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 3, "the second task's three ids: {left:?}");
}

#[tokio::test]
async fn credentials_are_renewed_before_they_expire() {
    let s = setup(minter(4.0)).await;
    let a = assignment("cccc", Some("arn:aws:iam::000000000000:role/app"));
    let lease = s
        .endpoints
        .open(s.endpoints.describe(&a))
        .await
        .expect("open");
    let uri = var(&lease.environment("main"), CREDENTIALS_URI_VAR);
    let (_, first) = s.get(&uri).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, now) = s.get(&uri).await;
        assert_eq!(status, 200);
        if now["AccessKeyId"] != first["AccessKeyId"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refused_role_is_the_reason_and_tasks_without_one_get_no_credentials() {
    let refusal = "ECS was unable to assume the role 'arn:aws:iam::000000000000:role/x' that was provided for this task.";
    let s = setup(Minter {
        lifetime: 60.0,
        fetched: AtomicUsize::new(0),
        refuse: Some(refusal.into()),
    })
    .await;
    let a = assignment("dddd", Some("arn:aws:iam::000000000000:role/x"));
    let err = s
        .endpoints
        .open(s.endpoints.describe(&a))
        .await
        .expect_err("refused");
    assert_eq!(err, refusal);

    let b = assignment("eeee", None);
    let lease = s
        .endpoints
        .open(s.endpoints.describe(&b))
        .await
        .expect("open");
    let env = lease.environment("main");
    assert!(env.iter().all(|(k, _)| k != CREDENTIALS_URI_VAR));
    assert!(!var(&env, METADATA_URI_V4_VAR).is_empty());
    // Nothing to serve but the two containers' metadata.
    assert_eq!(
        std::fs::read_dir(s.endpoints.registry().dir())
            .expect("registry")
            .count(),
        2
    );
}
