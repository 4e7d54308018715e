//! The agent's HTTP side: ECS API calls in the awsJson1_1 style (`RegisterContainerInstance`,
//! `SubmitTaskStateChange`), log shipping, task secrets and role credentials, and opening the
//! task channel. Every call goes to the current one of the agent's servers ([`Servers`]) and,
//! when that one cannot be reached, to the next ones in turn.

use gantry_model::agent_protocol::{
    EnsureLogStream, LogBatch, SubmitTaskStateChange, TaskCredentialsRequest, TaskRoleCredentials,
    TaskSecrets, TaskSecretsRequest, CHANNEL_PATH, LOGS_PATH, LOG_STREAMS_PATH,
    TASK_CREDENTIALS_PATH, TASK_SECRETS_PATH,
};
use gantry_model::types::{ContainerInstance, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::SavedCredentials;
use crate::servers::Servers;

/// The header a new agent presents its join token in (the control plane's
/// `JOIN_TOKEN_HEADER`).
pub const JOIN_TOKEN_HEADER: &str = "x-gantry-agent-token";

use crate::util::urlencode;

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// An HTTP call that did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {message}")]
    Transport { url: String, message: String },
    /// The server answered with an error status and (usually) an ECS error body.
    #[error("HTTP {status} {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    /// The server answered 2xx with a body the agent cannot read.
    #[error("unreadable response: {0}")]
    Decode(String),
}

impl ApiError {
    /// Worth retrying later: the server is down or failing (5xx, 429), not refusing.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Service { status, .. } => *status >= 500 || *status == 429,
            ApiError::Decode(_) => false,
        }
    }

    /// The server could not be reached or gave no answer of its own: refused, reset, timed
    /// out, a TLS failure, or a proxy's 502/503/504. Another control-plane replica may answer.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Service { status, .. } => matches!(status, 502..=504),
            ApiError::Decode(_) => false,
        }
    }

    /// Why the server is considered unreachable, for the failover line.
    fn unreachable_reason(&self) -> String {
        match self {
            ApiError::Transport { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// A 4xx answer: the server understood and refused.
    pub fn is_client_error(&self) -> bool {
        matches!(self, ApiError::Service { status, .. } if (400..500).contains(status) && *status != 429)
    }
}

/// Somewhere task state changes can be submitted (the control plane, or a test double).
pub trait StateSink: Send + Sync + 'static {
    fn submit(
        &self,
        change: &SubmitTaskStateChange,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// Somewhere log batches can be shipped (the control plane, or a test double).
pub trait LogUploader: Send + Sync + 'static {
    fn upload(&self, batch: &LogBatch) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// How the agent proves who it is: the join token until it has registered, then the
/// credentials the control plane issued to its container instance.
#[derive(Debug, Clone, Default)]
pub struct AgentAuth {
    pub join_token: Option<String>,
    pub credentials: Option<SavedCredentials>,
}

/// How long the task channel may take to answer its request (its body then streams for as
/// long as the connection lives).
const CHANNEL_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Client for the control plane: one server at a time out of the agent's list, shared by
/// every clone.
#[derive(Debug, Clone)]
pub struct EcsClient {
    http: reqwest::Client,
    servers: Arc<Servers>,
    auth: Arc<RwLock<AgentAuth>>,
}

/// An open task channel, and the server that holds it (to report it if the stream breaks).
#[derive(Debug)]
pub struct OpenChannel {
    pub response: reqwest::Response,
    pub server: usize,
    pub server_url: String,
}

impl EcsClient {
    pub fn new(server_url: &str) -> Result<Self, ApiError> {
        Self::with_tls(server_url, &crate::tls::TlsTrust::default())
    }

    /// A client of one server that trusts an `https://` server as `trust` says.
    pub fn with_tls(server_url: &str, trust: &crate::tls::TlsTrust) -> Result<Self, ApiError> {
        let servers = Servers::new(vec![server_url.trim_end_matches('/').to_string()], 0).map_err(
            |message| ApiError::Transport {
                url: server_url.to_string(),
                message,
            },
        )?;
        Self::with_servers(servers, trust)
    }

    /// A client of several control-plane replicas, failing over between them.
    pub fn with_servers(servers: Servers, trust: &crate::tls::TlsTrust) -> Result<Self, ApiError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let http = crate::tls::configure(builder, trust)
            .and_then(|b| b.build().map_err(|e| e.to_string()))
            .map_err(|e| ApiError::Transport {
                url: servers.urls().join(","),
                message: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(EcsClient {
            http,
            servers: Arc::new(servers),
            auth: Arc::new(RwLock::new(AgentAuth::default())),
        })
    }

    /// Runs `attempt` against the current server (its index and URL); while the server it tried cannot be
    /// reached, moves on to the next and runs it there, each server once. An answer, even an
    /// error, ends it: the server's word is not second-guessed on another replica.
    async fn on_servers<T, F, Fut>(&self, attempt: F) -> Result<T, ApiError>
    where
        F: Fn(usize, String) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut tried = 0;
        loop {
            let (index, base) = self.servers.current();
            let result = attempt(index, base).await;
            match &result {
                Err(e) if e.is_unreachable() => {
                    self.servers.unreachable(index, &e.unreachable_reason());
                    tried += 1;
                    if tried < self.servers.len() {
                        continue;
                    }
                }
                _ => {
                    if let Some(failover) = self.servers.answered(index) {
                        tracing::warn!("{failover}");
                    }
                }
            }
            return result;
        }
    }

    /// The task channel that `server` held broke or went silent: later calls go to the next
    /// server (a no-op if another call has already moved on).
    pub fn channel_lost(&self, server: usize, reason: &str) {
        self.servers.unreachable(server, reason);
    }

    /// Sets the join token and any credentials saved from an earlier registration.
    pub fn set_auth(&self, auth: AgentAuth) {
        if let Ok(mut a) = self.auth.write() {
            *a = auth;
        }
    }

    /// The instance's credentials, once registered (to save beside its identity).
    pub fn credentials(&self) -> Option<SavedCredentials> {
        self.auth.read().ok().and_then(|a| a.credentials.clone())
    }

    /// Adds SigV4 headers with the instance's credentials (none before the first
    /// registration: a control plane with authentication off accepts that).
    fn signed(
        &self,
        builder: reqwest::RequestBuilder,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        service: &str,
    ) -> reqwest::RequestBuilder {
        let Some(creds) = self.credentials() else {
            return builder;
        };
        let signing = gantry_auth::sigv4::Credentials {
            access_key_id: creds.access_key_id,
            secret_access_key: creds.secret_access_key,
            session_token: None,
        };
        let added = gantry_auth::client::sign_url(
            method,
            url,
            headers,
            body,
            &signing,
            &creds.region,
            service,
            gantry_auth::client::now(),
        );
        added.into_iter().fold(builder, |b, (k, v)| b.header(k, v))
    }

    /// The server in use now.
    pub fn base_url(&self) -> String {
        self.servers.current().1
    }

    /// Every server, as the operator gave them, for messages.
    pub fn server_list(&self) -> String {
        self.servers.urls().join(", ")
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> ApiError {
        ApiError::Transport {
            url: url.to_string(),
            message: error_chain(&e),
        }
    }

    /// One ECS API call: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<op>`.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        body: &Req,
    ) -> Result<Resp, ApiError> {
        self.call_as(operation, body, false).await
    }

    /// One call, signed with the instance's credentials, or (`with_token`) carrying the join
    /// token instead.
    async fn call_as<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        body: &Req,
        with_token: bool,
    ) -> Result<Resp, ApiError> {
        let payload = serde_json::to_vec(body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let target = format!("{TARGET_PREFIX}.{operation}");
        let bytes = self
            .on_servers(|_, base| self.call_at(base, &target, &payload, with_token))
            .await?;
        let bytes = if bytes.is_empty() {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(format!("{operation}: {e}")))
    }

    /// One API call to the server at `base`: the body of its 2xx answer.
    async fn call_at(
        &self,
        base: String,
        target: &str,
        payload: &[u8],
        with_token: bool,
    ) -> Result<bytes::Bytes, ApiError> {
        let url = format!("{base}/");
        let mut builder = self
            .http
            .post(&url)
            .header("Content-Type", CONTENT_TYPE)
            .header("X-Amz-Target", target)
            .timeout(Duration::from_secs(30));
        let token = self.auth.read().ok().and_then(|a| a.join_token.clone());
        match token.filter(|_| with_token) {
            Some(t) => builder = builder.header(JOIN_TOKEN_HEADER, t),
            None => {
                builder = self.signed(
                    builder,
                    "POST",
                    &url,
                    &[("content-type", CONTENT_TYPE), ("x-amz-target", target)],
                    payload,
                    "ecs",
                )
            }
        }
        let resp = builder
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport(&url, e))?;
        if !(200..300).contains(&status) {
            return Err(service_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// `RegisterContainerInstance`; returns the container instance ARN. A new instance
    /// registers with the join token and keeps the credentials the answer carries; an existing
    /// one (`body` names its ARN) re-registers with its own credentials when it has them.
    pub async fn register_container_instance(&self, body: &Value) -> Result<String, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Resp {
            container_instance: Option<ContainerInstance>,
            gantry_agent_credentials: Option<IssuedCredentials>,
            gantry_region: Option<String>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct IssuedCredentials {
            access_key_id: String,
            secret_access_key: String,
        }
        let existing = body.get("containerInstanceArn").is_some();
        let with_token = !existing || self.credentials().is_none();
        let r: Resp = self
            .call_as("RegisterContainerInstance", body, with_token)
            .await?;
        if let (Some(c), Ok(mut auth)) = (r.gantry_agent_credentials, self.auth.write()) {
            auth.credentials = Some(SavedCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                region: r.gantry_region.unwrap_or_else(|| "us-east-1".into()),
            });
        }
        r.container_instance
            .and_then(|c| c.container_instance_arn)
            .ok_or_else(|| {
                ApiError::Decode("RegisterContainerInstance: no containerInstanceArn".into())
            })
    }

    pub async fn submit_task_state_change(
        &self,
        change: &SubmitTaskStateChange,
    ) -> Result<(), ApiError> {
        let _: Value = self.call("SubmitTaskStateChange", change).await?;
        Ok(())
    }

    pub async fn put_logs(&self, batch: &LogBatch) -> Result<(), ApiError> {
        self.post_logs_endpoint(LOGS_PATH, batch).await
    }

    /// Makes sure a container's log stream exists (and its group, with `create_group`).
    pub async fn ensure_log_stream(&self, stream: &EnsureLogStream) -> Result<(), ApiError> {
        self.post_logs_endpoint(LOG_STREAMS_PATH, stream).await
    }

    /// The task's secrets and registry credentials, resolved by the control plane with the
    /// task's execution role. A task that may not have them gets a 4xx
    /// `ResourceInitializationError` whose message is its stopped reason.
    pub async fn task_secrets(&self, task_arn: &str) -> Result<TaskSecrets, ApiError> {
        let request = TaskSecretsRequest {
            task_arn: task_arn.to_string(),
        };
        let bytes = self
            .post_agent_endpoint(TASK_SECRETS_PATH, &request, "ecs")
            .await?;
        // The body holds secret values: a decoding error must not quote it.
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Decode(format!(
                "task secrets: {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// The temporary credentials of a task's role (the task must be placed on this instance).
    pub async fn task_credentials(&self, task_arn: &str) -> Result<TaskRoleCredentials, ApiError> {
        let body = TaskCredentialsRequest {
            task_arn: task_arn.to_string(),
        };
        let bytes = self
            .post_agent_endpoint(TASK_CREDENTIALS_PATH, &body, "ecs")
            .await?;
        serde_json::from_slice(&bytes)
            // The body holds the secret key and token: a decoding error must not quote it.
            .map_err(|e| {
                ApiError::Decode(format!(
                    "task credentials: {:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })
    }

    /// POST `body` as JSON to one of the control plane's agent log endpoints, signed for the
    /// `logs` service.
    async fn post_logs_endpoint<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(), ApiError> {
        self.post_agent_endpoint(path, body, "logs").await?;
        Ok(())
    }

    /// POST `body` as JSON to one of the control plane's agent endpoints, signed for
    /// `service`; the body of the answer when it succeeded.
    async fn post_agent_endpoint<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        service: &str,
    ) -> Result<bytes::Bytes, ApiError> {
        let payload = serde_json::to_vec(body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let payload = &payload;
        self.on_servers(|_, base| async move {
            let url = format!("{base}{path}");
            let builder = self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .timeout(Duration::from_secs(30));
            let builder = self.signed(
                builder,
                "POST",
                &url,
                &[("content-type", "application/json")],
                payload,
                service,
            );
            let resp = builder
                .body(payload.clone())
                .send()
                .await
                .map_err(|e| self.transport(&url, e))?;
            let resp = ensure_success(resp).await?;
            resp.bytes().await.map_err(|e| self.transport(&url, e))
        })
        .await
    }

    /// Opens the task channel on the current server, or the next that can be reached; the
    /// response body is the NDJSON stream.
    pub async fn open_channel(
        &self,
        cluster: &str,
        container_instance_arn: &str,
    ) -> Result<OpenChannel, ApiError> {
        self.on_servers(|server, base| async move {
            let url = channel_url(&base, cluster, container_instance_arn);
            let builder = self.http.get(&url).header("Accept", "application/x-ndjson");
            let send = self.signed(builder, "GET", &url, &[], &[], "ecs").send();
            // No whole-request timeout: the body lasts as long as the channel. A server that
            // accepts the connection but never answers is unreachable all the same.
            let resp = tokio::time::timeout(CHANNEL_ANSWER_TIMEOUT, send)
                .await
                .map_err(|_| ApiError::Transport {
                    url: url.clone(),
                    message: format!(
                        "no answer to the task channel request within {}s",
                        CHANNEL_ANSWER_TIMEOUT.as_secs()
                    ),
                })?
                .map_err(|e| self.transport(&url, e))?;
            Ok(OpenChannel {
                response: ensure_success(resp).await?,
                server,
                server_url: base,
            })
        })
        .await
    }
}

/// The task channel's URL on the server at `base` for this instance.
pub fn channel_url(base: &str, cluster: &str, container_instance_arn: &str) -> String {
    format!(
        "{}{}?cluster={}&containerInstance={}",
        base.trim_end_matches('/'),
        CHANNEL_PATH,
        urlencode(cluster),
        urlencode(container_instance_arn)
    )
}

impl StateSink for EcsClient {
    fn submit(
        &self,
        change: &SubmitTaskStateChange,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.submit_task_state_change(change)
    }
}

impl crate::logs::LogStreams for EcsClient {
    fn ensure(
        &self,
        stream: EnsureLogStream,
    ) -> futures::future::BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move { self.ensure_log_stream(&stream).await })
    }
}

impl crate::secrets::TaskSecretsSource for EcsClient {
    fn fetch<'a>(
        &'a self,
        task_arn: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<TaskSecrets, ApiError>> {
        Box::pin(self.task_secrets(task_arn))
    }
}

impl crate::task_endpoints::credentials::CredentialsSource for EcsClient {
    fn fetch(
        &self,
        task_arn: &str,
    ) -> futures::future::BoxFuture<'_, Result<TaskRoleCredentials, ApiError>> {
        let task_arn = task_arn.to_string();
        Box::pin(async move { self.task_credentials(&task_arn).await })
    }
}

impl LogUploader for EcsClient {
    fn upload(&self, batch: &LogBatch) -> impl Future<Output = Result<(), ApiError>> + Send {
        self.put_logs(batch)
    }
}

/// The error an HTTP status and ECS error body (`{"__type": ..., "message": ...}`) describe.
pub fn service_error(status: u16, body: &[u8]) -> ApiError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k).or_else(|| v.get(k.to_ascii_uppercase())))
            .and_then(|x| x.as_str())
            .map(str::to_string)
    };
    let code = field("__type")
        .map(|t| t.rsplit('#').next().unwrap_or(&t).to_string())
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = field("message")
        .or_else(|| field("Message"))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect());
    ApiError::Service {
        status,
        code,
        message,
    }
}

/// `e` and its sources, joined: reqwest's top-level message alone hides the cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Everything `RegisterContainerInstance` needs besides the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub cluster: String,
    pub cpu: i64,
    pub memory: i64,
    pub docker_version: String,
    /// `major.minor` Docker API version the engine speaks, for the capability attributes.
    pub docker_api_version: (u32, u32),
    pub availability_zone: Option<String>,
    pub attributes: Vec<(String, String)>,
    /// Whether tasks may use the host (privileged, host mounts, host namespaces, …).
    pub allow_host_access: bool,
}

/// The capability attributes the agent registers for what it supports.
pub fn capability_attributes(api: (u32, u32)) -> Vec<String> {
    let mut caps = vec![
        "com.amazonaws.ecs.capability.privileged-container".to_string(),
        "com.amazonaws.ecs.capability.logging-driver.json-file".to_string(),
        "com.amazonaws.ecs.capability.logging-driver.awslogs".to_string(),
        "com.amazonaws.ecs.capability.logging-driver.none".to_string(),
        "com.amazonaws.ecs.capability.docker-plugin.local".to_string(),
        "ecs.capability.container-health-check".to_string(),
        "ecs.capability.container-ordering".to_string(),
        "ecs.capability.task-cpu-mem-limit".to_string(),
        "ecs.capability.docker-plugin.local".to_string(),
        "ecs.capability.execution-role-awslogs".to_string(),
    ];
    // Every Docker remote API version from 1.17 up to the engine's, as the ECS agent does.
    if api.0 == 1 {
        for minor in 17..=api.1 {
            caps.push(format!(
                "com.amazonaws.ecs.capability.docker-remote-api.1.{minor}"
            ));
        }
    }
    caps
}

/// The `RegisterContainerInstance` request body.
pub fn registration_body(reg: &Registration, existing_arn: Option<&str>) -> Value {
    let ports = ["22", "2375", "2376", "51678", "51679"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let resources = vec![
        Resource::integer("CPU", clamp_i32(reg.cpu)),
        Resource::integer("MEMORY", clamp_i32(reg.memory)),
        Resource::string_set("PORTS", ports),
        Resource::string_set("PORTS_UDP", Vec::new()),
    ];
    let mut attributes = vec![
        json!({"name": "ecs.os-type", "value": "linux"}),
        json!({"name": "ecs.os-family", "value": "LINUX"}),
        json!({"name": "ecs.cpu-architecture", "value": crate::config::cpu_architecture()}),
    ];
    if let Some(az) = &reg.availability_zone {
        attributes.push(json!({"name": "ecs.availability-zone", "value": az}));
    }
    for cap in capability_attributes(reg.docker_api_version) {
        // Privileged containers only where the host allows it (the ECS agent likewise drops
        // this capability under ECS_DISABLE_PRIVILEGED).
        if cap.ends_with("privileged-container") && !reg.allow_host_access {
            continue;
        }
        attributes.push(json!({ "name": cap }));
    }
    if reg.allow_host_access {
        attributes.push(json!({ "name": gantry_model::requirements::HOST_ACCESS_ATTRIBUTE }));
    }
    for (k, v) in &reg.attributes {
        attributes.push(json!({"name": k, "value": v}));
    }
    let mut body = json!({
        "cluster": reg.cluster,
        "totalResources": resources,
        "versionInfo": {
            "agentVersion": env!("CARGO_PKG_VERSION"),
            "agentHash": option_env!("GANTRY_GIT_HASH").unwrap_or("unknown"),
            "dockerVersion": format!("DockerVersion: {}", reg.docker_version),
        },
        "attributes": attributes,
    });
    if let (Some(arn), Some(obj)) = (existing_arn, body.as_object_mut()) {
        obj.insert(
            "containerInstanceArn".into(),
            Value::String(arn.to_string()),
        );
    }
    body
}

/// The cluster ARN to name on the task channel: `cluster` itself when it is an ARN, else
/// derived from the long-format container instance ARN the control plane minted
/// (`…:container-instance/<cluster>/<id>` → `…:cluster/<cluster>`), else the name as given.
pub fn cluster_arn_for(cluster: &str, instance_arn: &str) -> String {
    use gantry_model::arn::{arn_resource, cluster_of_arn};
    if arn_resource(cluster).is_some() {
        return cluster.to_string();
    }
    if let (Some(resource), Some(name)) = (arn_resource(instance_arn), cluster_of_arn(instance_arn))
    {
        if name == cluster {
            let prefix = &instance_arn[..instance_arn.len() - resource.len()];
            return format!("{prefix}cluster/{name}");
        }
    }
    cluster.to_string()
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i32::MAX as i64) as i32
}

/// The response itself when it succeeded, else the service error its body describes.
async fn ensure_success(resp: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    Err(service_error(status, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_body_has_resources_attributes_and_identity() {
        let reg = Registration {
            cluster: "prod".into(),
            cpu: 2048,
            memory: 3000,
            docker_version: "20.10.24".into(),
            docker_api_version: (1, 41),
            availability_zone: Some("us-east-1a".into()),
            attributes: vec![("stack".into(), "blue".into())],
            allow_host_access: false,
        };
        let b = registration_body(&reg, Some("arn:old"));
        assert_eq!(b["cluster"], "prod");
        assert_eq!(b["containerInstanceArn"], "arn:old");
        assert_eq!(b["totalResources"][0]["name"], "CPU");
        assert_eq!(b["totalResources"][0]["integerValue"], 2048);
        assert_eq!(b["totalResources"][1]["integerValue"], 3000);
        assert_eq!(b["totalResources"][2]["type"], "STRINGSET");
        assert_eq!(
            b["totalResources"][2]["stringSetValue"],
            json!(["22", "2375", "2376", "51678", "51679"])
        );
        assert_eq!(b["totalResources"][3]["name"], "PORTS_UDP");
        assert_eq!(b["versionInfo"]["dockerVersion"], "DockerVersion: 20.10.24");
        let attrs = b["attributes"].as_array().unwrap();
        let has = |n: &str, v: Option<&str>| {
            attrs
                .iter()
                .any(|a| a["name"] == n && v.is_none_or(|v| a["value"] == v))
        };
        assert!(has("ecs.os-type", Some("linux")));
        assert!(has("ecs.availability-zone", Some("us-east-1a")));
        assert!(has("stack", Some("blue")));
        assert!(has(
            "com.amazonaws.ecs.capability.docker-remote-api.1.41",
            None
        ));
        assert!(!has(
            "com.amazonaws.ecs.capability.docker-remote-api.1.42",
            None
        ));
        assert!(has("ecs.capability.container-health-check", None));
        assert!(has("ecs.capability.container-ordering", None));
        assert!(has(
            "com.amazonaws.ecs.capability.logging-driver.awslogs",
            None
        ));
        assert!(registration_body(&reg, None)
            .get("containerInstanceArn")
            .is_none());
    }

    #[test]
    fn service_errors_are_read_from_ecs_bodies() {
        let e = service_error(
            400,
            br#"{"__type":"ClusterNotFoundException","message":"Cluster not found."}"#,
        );
        assert_eq!(
            e,
            ApiError::Service {
                status: 400,
                code: "ClusterNotFoundException".into(),
                message: "Cluster not found.".into()
            }
        );
        assert!(!e.is_retryable());
        assert!(e.is_client_error());
        let e = service_error(502, b"bad gateway");
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "HTTP 502 HTTP502: bad gateway");
    }

    #[test]
    fn cluster_arn_from_name_and_instance_arn() {
        let inst = "arn:aws:ecs:us-east-1:000000000000:container-instance/prod/abc";
        assert_eq!(
            cluster_arn_for("prod", inst),
            "arn:aws:ecs:us-east-1:000000000000:cluster/prod"
        );
        assert_eq!(
            cluster_arn_for("arn:aws:ecs:r:1:cluster/x", inst),
            "arn:aws:ecs:r:1:cluster/x"
        );
        assert_eq!(cluster_arn_for("other", inst), "other");
        assert_eq!(cluster_arn_for("prod", "short-id"), "prod");
    }

    /// A local server that answers every request with `status` and an ECS error body (or `{}`
    /// with 200), counting the requests it saw.
    async fn answering(status: u16) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::response::IntoResponse;
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                let body = if status.is_success() {
                    json!({})
                } else {
                    json!({"__type": "ClusterNotFoundException", "message": "answered"})
                };
                (status, axum::Json(body)).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// A URL nothing listens on (connections are refused).
    fn refusing() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn client_of(urls: &[&String], start: usize) -> EcsClient {
        let urls = urls.iter().map(|u| u.to_string()).collect();
        EcsClient::with_servers(Servers::new(urls, start).unwrap(), &Default::default()).unwrap()
    }

    #[tokio::test]
    async fn unreachable_servers_are_skipped_and_the_next_one_stays_in_use() {
        let dead = refusing();
        let (unavailable, unavailable_seen) = answering(503).await;
        let (ok, ok_seen) = answering(200).await;
        let client = client_of(&[&dead, &unavailable, &ok], 0);
        let _: Value = client.call("ListClusters", &json!({})).await.unwrap();
        assert_eq!(client.base_url(), ok, "moved past the refusing and the 503");
        assert_eq!(
            unavailable_seen.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        // Every later call, of any kind, goes to the server that answered.
        let _: Value = client.call("ListClusters", &json!({})).await.unwrap();
        client.put_logs(&LogBatch::default()).await.unwrap();
        assert_eq!(ok_seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(
            unavailable_seen.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[tokio::test]
    async fn an_answer_is_not_retried_elsewhere() {
        let (refusing_cluster, refused_seen) = answering(400).await;
        let (ok, ok_seen) = answering(200).await;
        let client = client_of(&[&refusing_cluster, &ok], 0);
        let e = client
            .call::<_, Value>("DescribeClusters", &json!({}))
            .await
            .expect_err("the 400 is the answer");
        assert!(e.is_client_error() && !e.is_unreachable(), "{e}");
        assert_eq!(client.base_url(), refusing_cluster);
        assert_eq!(refused_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(ok_seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn with_every_server_down_a_call_fails_after_trying_each_once() {
        let (a, b) = (refusing(), refusing());
        let client = client_of(&[&a, &b], 1);
        let e = client
            .call::<_, Value>("ListClusters", &json!({}))
            .await
            .expect_err("nobody answers");
        assert!(e.is_unreachable(), "{e}");
        assert_eq!(client.base_url(), b, "tried b, then a, and moved on to b");
    }

    #[tokio::test]
    async fn a_lost_channel_moves_every_call_to_the_next_server() {
        let (a, _) = answering(200).await;
        let (b, b_seen) = answering(200).await;
        let client = client_of(&[&a, &b], 0);
        let open = client.open_channel("c", "i").await.unwrap();
        assert_eq!((open.server, open.server_url.as_str()), (0, a.as_str()));
        client.channel_lost(open.server, "broke");
        client.put_logs(&LogBatch::default()).await.unwrap();
        assert_eq!(b_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A second report of the same lost channel does not move on again.
        client.channel_lost(open.server, "broke");
        assert_eq!(client.base_url(), b);
    }

    #[test]
    fn unreachable_is_transport_and_gateway_errors_only() {
        let transport = ApiError::Transport {
            url: "u".into(),
            message: "connection refused".into(),
        };
        assert!(transport.is_unreachable());
        for status in [502, 503, 504] {
            assert!(service_error(status, b"").is_unreachable(), "{status}");
        }
        for status in [400, 403, 404, 429, 500] {
            assert!(!service_error(status, b"").is_unreachable(), "{status}");
        }
        assert!(!ApiError::Decode("x".into()).is_unreachable());
    }

    #[test]
    fn channel_url_encodes_arns() {
        assert_eq!(
            channel_url("http://127.0.0.1:4566/", "arn:aws:ecs:r:1:cluster/a", "arn:x/y"),
            "http://127.0.0.1:4566/agent/v1/channel?cluster=arn%3Aaws%3Aecs%3Ar%3A1%3Acluster%2Fa&containerInstance=arn%3Ax%2Fy"
        );
    }
}
