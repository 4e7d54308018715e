//! Test fixtures: real backends on loopback, a real client, configuration builders, an
//! observer that records reports, and polling with deadlines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_model::elbv2::*;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A backend: answers with its name, `/health` with the status it is told (0: hangs), `/slow?ms=N`
/// after N ms, `/hang` never, `/echo` with the request body, `/headers` with the request's
/// headers (`name: value` lines).
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub health_status: Arc<AtomicU16>,
    pub requests: Arc<AtomicUsize>,
    pub health_requests: Arc<AtomicUsize>,
    /// Requests currently being answered (for least outstanding requests and draining).
    pub active: Arc<AtomicUsize>,
    /// Client connections currently open.
    pub open_connections: Arc<AtomicUsize>,
    /// Client connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health_status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(AtomicUsize::new(0));
        let health_requests = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let open_connections = Arc::new(AtomicUsize::new(0));
        let open = open_connections.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accepted_count = accepted.clone();
        let shared = (
            name.to_string(),
            health_status.clone(),
            requests.clone(),
            health_requests.clone(),
            active.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let open = open.clone();
                open.fetch_add(1, Ordering::SeqCst);
                accepted_count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _open = ActiveGuard(open);
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (name, health, requests, health_requests, active) = shared.clone();
                        async move {
                            Ok::<_, Infallible>(
                                answer(name, health, requests, health_requests, active, request)
                                    .await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            health_status,
            requests,
            health_requests,
            active,
            open_connections,
            accepted,
            task,
        }
    }

    pub fn target(&self) -> TargetConfig {
        TargetConfig {
            id: self.addr.ip().to_string(),
            port: self.addr.port(),
            address: self.addr.ip(),
        }
    }

    pub fn set_health(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }
}

struct ActiveGuard(Arc<AtomicUsize>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(
    name: String,
    health: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
    health_requests: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if path == "/health" {
        health_requests.fetch_add(1, Ordering::SeqCst);
        let code = health.load(Ordering::SeqCst);
        if code == 0 {
            // Told to hang: the health check times out.
            std::future::pending::<()>().await;
        }
        let status = StatusCode::from_u16(code).unwrap();
        let mut response = Response::new(Full::new(Bytes::from("health")));
        *response.status_mut() = status;
        return response;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    active.fetch_add(1, Ordering::SeqCst);
    let _active = ActiveGuard(active);
    let body = match path.as_str() {
        "/slow" => {
            let ms: u64 = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            name.clone()
        }
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        echo if echo.ends_with("/echo") => {
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            String::from_utf8_lossy(&body.unwrap_or_default()).into_owned()
        }
        "/headers" => {
            let mut text = format!("version: {:?}\n", request.version());
            for (key, value) in request.headers() {
                text.push_str(&format!("{}: {}\n", key, value.to_str().unwrap_or("?")));
            }
            text
        }
        _ => name.clone(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert("x-backend", name.parse().unwrap());
    if path == "/login" {
        // An application's session cookie (for application-based stickiness), after another.
        for cookie in ["theme=dark; Path=/", "session=s-1; Path=/; HttpOnly"] {
            response
                .headers_mut()
                .append("set-cookie", cookie.parse().unwrap());
        }
    }
    response
}

/// A backend that misbehaves at the TCP level: `reset` closes each connection as soon as
/// the request arrives; `garbage` answers bytes that are not HTTP.
pub async fn broken_backend(kind: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if kind == "garbage" {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(b"this is not http\r\n\r\n").await;
                } else if kind == "hang" {
                    // Reads every request and never answers, until the peer lets go.
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                } else {
                    // Closing with unread request bytes pending makes the kernel send a reset.
                    let mut one = [0u8; 1];
                    let _ = stream.read(&mut one).await;
                }
                drop(stream);
            });
        }
    });
    (addr, task)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn health_check(interval_ms: u64) -> HealthCheckConfig {
    HealthCheckConfig {
        enabled: true,
        path: "/health".into(),
        port: None,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms.max(100)),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        matcher: "200".into(),
    }
}

pub fn group(arn: &str, targets: Vec<TargetConfig>) -> TargetGroupConfig {
    TargetGroupConfig {
        arn: arn.into(),
        name: arn.rsplit('/').next().unwrap_or(arn).into(),
        target_type: TargetType::Ip,
        protocol_version: TargetProtocolVersion::Http1,
        health_check: health_check(100),
        algorithm: Algorithm::RoundRobin,
        deregistration_delay: Duration::from_secs(5),
        slow_start: Duration::ZERO,
        stickiness: None,
        app_cookie: None,
        targets,
    }
}

pub fn forward(arn: &str) -> RuleAction {
    RuleAction::Forward {
        target_groups: vec![WeightedTargetGroup {
            arn: arn.into(),
            weight: 1,
        }],
        stickiness: None,
    }
}

pub fn rule(priority: u32, conditions: Vec<Condition>, action: RuleAction) -> RuleConfig {
    RuleConfig {
        arn: format!("rule/{priority}"),
        priority: Some(priority),
        conditions,
        action,
    }
}

pub fn default_rule(action: RuleAction) -> RuleConfig {
    RuleConfig {
        arn: "rule/default".into(),
        priority: None,
        conditions: Vec::new(),
        action,
    }
}

pub fn listener(arn: &str, port: u16, rules: Vec<RuleConfig>) -> ListenerConfig {
    ListenerConfig {
        arn: arn.into(),
        load_balancer_arn: "lb/test".into(),
        load_balancer_name: "test".into(),
        port,
        rules,
        idle_timeout: Duration::from_secs(60),
    }
}

/// Records every report the data plane sends.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<TargetHealthReport>>>);

impl Recorder {
    pub fn observer(&self) -> HealthObserver {
        let reports = self.0.clone();
        Box::new(move |report| reports.lock().unwrap().push(report.clone()))
    }

    /// The (state, reason) sequence reported for the target on `port`.
    pub fn history(&self, port: u16) -> Vec<(TargetState, Option<TargetReason>)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.port == port)
            .map(|r| (r.state, r.reason))
            .collect()
    }

    pub fn reports(&self, port: u16) -> Vec<TargetHealthReport> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.port == port)
            .cloned()
            .collect()
    }
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn state_of(
    lb: &gantry_lb::LoadBalancer,
    group_arn: &str,
    port: u16,
) -> Option<TargetHealthReport> {
    lb.target_health(group_arn)
        .into_iter()
        .find(|r| r.port == port)
}

pub async fn wait_state(
    lb: &gantry_lb::LoadBalancer,
    group_arn: &str,
    port: u16,
    state: TargetState,
) -> TargetHealthReport {
    eventually(
        Duration::from_secs(10),
        &format!("target {port} to be {}", state.as_str()),
        || async { state_of(lb, group_arn, port).filter(|r| r.state == state) },
    )
    .await
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send_body(client, addr, method, path, headers, Bytes::new()).await
}

pub async fn send_body(
    client: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .expect("request to the listener");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Answer {
    send(client, addr, "GET", path, &[]).await
}

/// Counts which backend answered `n` GETs of `path`.
pub async fn spread(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let answer = get(client, addr, path).await;
        *counts.entry(answer.body).or_insert(0) += 1;
    }
    counts
}

pub fn empty() -> Empty<Bytes> {
    Empty::new()
}
