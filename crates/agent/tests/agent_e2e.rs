//! The whole agent (`run_with_options`) against a small fake control plane on 127.0.0.1 and the
//! real Docker engine: registration and identity reuse, the task channel, reports that survive
//! a control plane outage, log shipping, restart adoption, and re-registration after the
//! control plane forgets the instance.

mod common;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::*;
use gantry_agent::{run_with_options, AgentConfig, AgentOptions};
use gantry_model::agent_protocol::{
    ChannelMessage, LogBatch, LogEvent, SubmitTaskStateChange, TaskAssignment, CHANNEL_PATH,
    LOGS_PATH,
};
use gantry_model::status;
use gantry_model::types::{ContainerDefinition, TaskDefinition};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

#[derive(Default)]
struct Fake {
    registrations: Mutex<Vec<Value>>,
    known: Mutex<HashSet<String>>,
    reports: Mutex<Vec<SubmitTaskStateChange>>,
    logs: Mutex<Vec<LogEvent>>,
    down: AtomicBool,
    channel_clusters: Mutex<Vec<String>>,
    desired: Mutex<Option<watch::Sender<Vec<TaskAssignment>>>>,
    /// Bumped to end every open channel stream.
    generation: Mutex<Option<watch::Sender<u64>>>,
}

type Shared = Arc<Fake>;

fn ecs_error(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"__type": code, "message": msg}))).into_response()
}

async fn api(State(f): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match target.rsplit('.').next().unwrap_or("") {
        "RegisterContainerInstance" => {
            f.registrations.lock().unwrap().push(v.clone());
            let asked = v["containerInstanceArn"].as_str().map(str::to_string);
            let mut known = f.known.lock().unwrap();
            let arn = match asked {
                Some(a) if known.contains(&a) => a,
                _ => instance_arn(),
            };
            known.insert(arn.clone());
            axum::Json(json!({"containerInstance": {"containerInstanceArn": arn}})).into_response()
        }
        "SubmitTaskStateChange" => {
            if f.down.load(Ordering::SeqCst) {
                return ecs_error(StatusCode::INTERNAL_SERVER_ERROR, "ServerException", "down");
            }
            let r: SubmitTaskStateChange = serde_json::from_value(v).unwrap();
            f.reports.lock().unwrap().push(r);
            axum::Json(json!({"acknowledgment": "ACK"})).into_response()
        }
        other => ecs_error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("unknown {other}"),
        ),
    }
}

async fn channel(State(f): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let instance = q.get("containerInstance").cloned().unwrap_or_default();
    f.channel_clusters
        .lock()
        .unwrap()
        .push(q.get("cluster").cloned().unwrap_or_default());
    if !f.known.lock().unwrap().contains(&instance) {
        return ecs_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "unknown container instance",
        );
    }
    let mut desired = f.desired.lock().unwrap().as_ref().unwrap().subscribe();
    let mut generation = f.generation.lock().unwrap().as_ref().unwrap().subscribe();
    desired.mark_changed();
    generation.borrow_and_update();
    let stream = futures::stream::unfold(
        (desired, generation),
        |(mut desired, mut generation)| async move {
            let msg = tokio::select! {
                r = desired.changed() => {
                    r.ok()?;
                    let tasks = desired.borrow_and_update().clone();
                    ChannelMessage::Tasks { tasks }
                }
                _ = generation.changed() => return None,
                _ = tokio::time::sleep(Duration::from_secs(gantry_model::agent_protocol::HEARTBEAT_SECS)) => {
                    ChannelMessage::Heartbeat { at: gantry_model::now_epoch() }
                }
            };
            let mut line = serde_json::to_vec(&msg).unwrap();
            line.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line)),
                (desired, generation),
            ))
        },
    );
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn logs(State(f): State<Shared>, axum::Json(b): axum::Json<LogBatch>) -> StatusCode {
    f.logs.lock().unwrap().extend(b.events);
    StatusCode::OK
}

async fn start_fake() -> (Shared, String) {
    let f = Arc::new(Fake::default());
    *f.desired.lock().unwrap() = Some(watch::channel(Vec::new()).0);
    *f.generation.lock().unwrap() = Some(watch::channel(0u64).0);
    let app = Router::new()
        .route("/", post(api))
        .route(CHANNEL_PATH, get(channel))
        .route(LOGS_PATH, post(logs))
        .with_state(f.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (f, url)
}

impl Fake {
    fn set_desired(&self, tasks: Vec<TaskAssignment>) {
        let _ = self.desired.lock().unwrap().as_ref().unwrap().send(tasks);
    }
    fn drop_channels(&self) {
        self.generation
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .send_modify(|g| *g += 1);
    }
    fn reports(&self) -> Vec<SubmitTaskStateChange> {
        self.reports.lock().unwrap().clone()
    }
    async fn wait_report(
        &self,
        from: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&SubmitTaskStateChange) -> bool,
    ) -> SubmitTaskStateChange {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.reports().into_iter().skip(from).find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no report {what} within {within:?}; got:\n{}",
                self.reports()
                    .iter()
                    .map(|r| serde_json::to_string(r).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    async fn wait_registrations(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.registrations.lock().unwrap().clone();
            if r.len() >= n {
                return r;
            }
            assert!(Instant::now() < deadline, "only {} registrations", r.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct RunningAgent {
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), gantry_agent::AgentError>>,
}

fn start_agent(url: &str, data_dir: &std::path::Path) -> RunningAgent {
    let config = AgentConfig {
        server_urls: vec![url.to_string()],
        cluster: "gantry-test".into(),
        data_dir: data_dir.to_path_buf(),
        cpu: Some(2048),
        memory: Some(4096),
        availability_zone: Some("local-1a".into()),
        attributes: vec![("stack".into(), "e2e".into())],
        docker_host: None,
        ..Default::default()
    };
    let options = AgentOptions {
        cleanup_wait: Duration::from_secs(600),
        max_stopped_tasks: 100,
        resync_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let (stop, stop_rx) = oneshot::channel::<()>();
    let join = tokio::spawn(run_with_options(config, options, async move {
        let _ = stop_rx.await;
    }));
    RunningAgent { stop, join }
}

impl RunningAgent {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let r = tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .expect("agent shuts down promptly")
            .expect("agent task");
        r.expect("agent returns Ok on shutdown");
    }
}

fn app_task(task: &str) -> TaskAssignment {
    assignment(
        task,
        TaskDefinition {
            family: "gantry-test-e2e".into(),
            revision: Some(2),
            container_definitions: vec![ContainerDefinition {
                name: Some("app".into()),
                image: Some(IMAGE.into()),
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "echo e2e-hello; sleep 300".into(),
                ]),
                memory: Some(48),
                stop_timeout: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        },
        status::RUNNING,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_end_to_end_with_a_fake_control_plane() {
    let d = docker().await;
    ensure_image(&d).await;
    let (fake, url) = start_fake().await;
    let data = tempfile::tempdir().unwrap();

    // Register.
    let agent = start_agent(&url, data.path());
    let regs = fake.wait_registrations(1).await;
    let reg = &regs[0];
    assert_eq!(reg["cluster"], "gantry-test");
    assert!(reg.get("containerInstanceArn").is_none());
    assert_eq!(reg["totalResources"][0]["integerValue"], 2048);
    assert!(reg["versionInfo"]["dockerVersion"]
        .as_str()
        .unwrap()
        .starts_with("DockerVersion: "));
    let attrs = reg["attributes"].as_array().unwrap();
    assert!(attrs
        .iter()
        .any(|a| a["name"] == "stack" && a["value"] == "e2e"));
    let arn = fake.known.lock().unwrap().iter().next().unwrap().clone();
    let _guard = CleanupGuard {
        docker: d.clone(),
        instance_arn: arn.clone(),
    };
    let state: Value =
        serde_json::from_slice(&std::fs::read(data.path().join("agent-state.json")).unwrap())
            .unwrap();
    assert_eq!(state["containerInstanceArn"], arn.as_str());

    // Run a task.
    let task = task_arn();
    fake.set_desired(vec![app_task(&task)]);
    let running = fake
        .wait_report(0, Duration::from_secs(60), "RUNNING", |r| {
            r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    let app_id = container(&running, "app").runtime_id.clone().unwrap();
    let s = d.inspect_container(&app_id).await.unwrap();
    assert_eq!(s.memory, Some(48 * 1024 * 1024));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.message == "e2e-hello")
    {
        assert!(Instant::now() < deadline, "log line not shipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Restart: same identity, the container is adopted, not duplicated.
    agent.shutdown().await;
    assert!(
        d.inspect_container(&app_id).await.unwrap().running,
        "containers survive shutdown"
    );
    let mark = fake.reports().len();
    let agent = start_agent(&url, data.path());
    let regs = fake.wait_registrations(2).await;
    assert_eq!(regs[1]["containerInstanceArn"], arn.as_str());
    let adopted = fake
        .wait_report(mark, Duration::from_secs(30), "adopted RUNNING", |r| {
            r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    assert_eq!(
        container(&adopted, "app").runtime_id.as_deref(),
        Some(app_id.as_str())
    );
    assert_eq!(
        d.list_container_ids(&[format!("dev.gantry.container-instance-arn={arn}")])
            .await
            .unwrap()
            .len(),
        1
    );
    // Log following resumes where it left off: no line is shipped twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hellos = fake
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.message == "e2e-hello")
        .count();
    assert_eq!(hellos, 1, "log line shipped again after the restart");
    let cluster_param = fake.channel_clusters.lock().unwrap().last().cloned();
    assert_eq!(
        cluster_param.as_deref(),
        Some("arn:aws:ecs:us-east-1:000000000000:cluster/gantry-test")
    );

    // The control plane fails while the container dies: the report arrives once it is back.
    fake.down.store(true, Ordering::SeqCst);
    let mark = fake.reports().len();
    d.kill_container(&app_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.reports().len(), mark, "nothing accepted while down");
    fake.down.store(false, Ordering::SeqCst);
    let stopped = fake
        .wait_report(mark, Duration::from_secs(15), "STOPPED after outage", |r| {
            r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(container(&stopped, "app").exit_code, Some(137));
    fake.set_desired(Vec::new());

    // The control plane forgets the instance: the agent registers again as a new one.
    fake.known.lock().unwrap().remove(&arn);
    fake.drop_channels();
    let regs = fake.wait_registrations(3).await;
    assert!(regs[2].get("containerInstanceArn").is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: Value =
            serde_json::from_slice(&std::fs::read(data.path().join("agent-state.json")).unwrap())
                .unwrap();
        if state["containerInstanceArn"] != arn.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "new identity not saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unreachable_is_a_startup_error_that_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        server_urls: vec!["http://127.0.0.1:1".into()],
        data_dir: data.path().to_path_buf(),
        docker_host: Some("unix:///nonexistent/docker.sock".into()),
        ..Default::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        run_with_options(config, AgentOptions::default(), std::future::pending()),
    )
    .await
    .expect("fails fast")
    .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/docker.sock"), "{msg}");
    assert!(msg.contains("Docker daemon"), "{msg}");
}
