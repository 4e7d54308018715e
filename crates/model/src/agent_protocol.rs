//! What the control plane and the agent say to each other besides the ECS API.
//!
//! The agent dials out (ECS's ACS model). It registers with `RegisterContainerInstance`, then
//! holds one long-lived HTTP response open at [`CHANNEL_PATH`]: the control plane writes one
//! [`ChannelMessage`] per line (NDJSON). Each `Tasks` message is the *whole* desired state of
//! the instance, so the agent's reconciler is level-triggered: a lost message, a reconnect or
//! an agent restart all converge by applying the latest one. The agent reports back with the
//! ECS calls `SubmitTaskStateChange` / `SubmitContainerStateChange`, and ships container
//! output to [`LOGS_PATH`].

use crate::types::{NetworkBinding, TaskDefinition, TaskOverride};
use serde::{Deserialize, Serialize};

/// `GET` with query `cluster=<arn>&containerInstance=<arn>`: the task channel.
pub const CHANNEL_PATH: &str = "/agent/v1/channel";
/// `POST` a [`LogBatch`].
pub const LOGS_PATH: &str = "/agent/v1/logs";
/// `POST` an [`EnsureLogStream`] before a container with an `awslogs` configuration starts.
pub const LOG_STREAMS_PATH: &str = "/agent/v1/log-streams";
/// `POST` a [`TaskSecretsRequest`] before a task that has `secrets` or
/// `repositoryCredentials` pulls its images: answered with its [`TaskSecrets`], or an error
/// of type `ResourceInitializationError` whose message is the task's stopped reason.
pub const TASK_SECRETS_PATH: &str = "/agent/v1/task-secrets";
/// `POST` a [`TaskCredentialsRequest`]: temporary credentials for the role of a task placed
/// on the agent's instance ([`TaskRoleCredentials`]), or a `ClientException` saying why not
/// (ECS's "ECS was unable to assume the role …" when the role is missing or does not trust
/// `ecs-tasks.amazonaws.com`).
pub const TASK_CREDENTIALS_PATH: &str = "/agent/v1/task-credentials";
/// Seconds between heartbeats on the channel; an agent that hears nothing for three of these
/// reconnects.
pub const HEARTBEAT_SECS: u64 = 5;

/// Docker label keys Gantry puts on every container it creates.
pub mod labels {
    pub const TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
    pub const CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
    pub const CLUSTER: &str = "com.amazonaws.ecs.cluster";
    pub const TASK_FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
    pub const TASK_REVISION: &str = "com.amazonaws.ecs.task-definition-version";
    /// The container instance that owns the container; several agents may share one engine.
    pub const INSTANCE_ARN: &str = "dev.gantry.container-instance-arn";
    /// On an awsvpc task's pause container (the holder of its network namespace): `true`.
    pub const PAUSE: &str = "dev.gantry.pause";
    /// On the Docker network of an awsvpc subnet: the subnet id.
    pub const SUBNET_ID: &str = "dev.gantry.subnet-id";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ChannelMessage {
    /// Every task assigned to this instance that is not yet known to be STOPPED.
    Tasks {
        tasks: Vec<TaskAssignment>,
    },
    Heartbeat {
        at: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignment {
    pub task_arn: String,
    pub cluster_arn: String,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// Task version; the agent may skip an assignment whose version it already applied.
    pub version: i64,
    pub task_definition: TaskDefinition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    pub containers: Vec<AssignedContainer>,
    /// The task's own network interface when its network mode is `awsvpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<TaskNetworkInterface>,
}

/// The network interface of an `awsvpc` task (ECS's ENI attachment), decided by the control
/// plane when it places the task, so the address is known before anything starts and never
/// collides. The agent gives the task one network namespace (a pause container, as ECS's
/// agent does) on the Docker network of the subnet ([`subnet_network_name`]), at this address;
/// every container of the task joins that namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskNetworkInterface {
    /// The `attachments[].id` of the task's ElasticNetworkInterface attachment.
    pub attachment_id: String,
    /// `subnet-…`, as the caller named it in `networkConfiguration`.
    pub subnet_id: String,
    /// The subnet's IPv4 range, e.g. `10.213.0.0/24`; the Docker network uses it.
    pub subnet_cidr: String,
    /// The network's gateway: the first address of the range (the host's side of the bridge).
    pub gateway: String,
    pub private_ipv4_address: String,
    /// `02:…`: a locally administered unicast MAC address.
    pub mac_address: String,
    /// `ip-10-213-0-5.<region>.compute.internal`: also the task's hostname.
    pub private_dns_name: String,
    /// The security groups the call named: recorded with the task; nothing filters on them
    /// yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

/// The Docker network that carries an awsvpc subnet on every host (`gantry-subnet-0abc…`).
pub fn subnet_network_name(subnet_id: &str) -> String {
    format!("gantry-{subnet_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedContainer {
    pub name: String,
    pub container_arn: String,
}

/// ECS's `ContainerStateChange`, plus `healthStatus` (a Gantry extension: ECS's own agent
/// reports health on a private channel).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_bindings: Option<Vec<NetworkBinding>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
}

/// ECS's `SubmitTaskStateChange` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitTaskStateChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerStateChange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    pub log_group: String,
    pub log_stream: String,
    /// Milliseconds since the epoch, as CloudWatch Logs counts them.
    pub timestamp: i64,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogBatch {
    pub events: Vec<LogEvent>,
    /// The agent's id for this batch, the same each time it sends the batch again (after an
    /// error, or to another control-plane replica): a batch is stored once whatever the
    /// number of times it arrives. Unique per agent process (a random session and a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

/// A container's log stream, made sure of before the container starts (as the `awslogs`
/// driver creates its stream): answered `{}` once the stream exists, or a CloudWatch Logs
/// error (`ResourceNotFoundException` for a missing group without `create_group`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnsureLogStream {
    pub log_group_name: String,
    pub log_stream_name: String,
    /// The container's `awslogs-create-group` option: create the group when it is missing.
    #[serde(default)]
    pub create_group: bool,
}

/// What the agent asks [`TASK_CREDENTIALS_PATH`] for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCredentialsRequest {
    pub task_arn: String,
}

/// A task role's temporary credentials, as the control plane issues them to the agent that
/// runs the task (the agent serves them to the task's containers in ECS's shape). `Debug`
/// never prints the secret or the token.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRoleCredentials {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop working, in unix seconds.
    pub expiration: f64,
}

impl std::fmt::Debug for TaskRoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRoleCredentials")
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// The stream a container's output must go to before it may start, with whether its group
/// may be created: only for an `awslogs` configuration that names its `awslogs-group` (other
/// containers log to `/ecs/<family>`, created by their first event). `awslogs-create-group`
/// is read as Docker's driver reads it (Go's `ParseBool`).
pub fn awslogs_stream(
    task_definition: &TaskDefinition,
    container_name: &str,
    task_id: &str,
) -> Option<EnsureLogStream> {
    let options = task_definition
        .container_definitions
        .iter()
        .find(|c| c.name.as_deref() == Some(container_name))
        .and_then(|c| c.log_configuration.as_ref())
        .filter(|l| l.log_driver == "awslogs")
        .and_then(|l| l.options.as_ref())?;
    options.get("awslogs-group")?;
    let (group, stream) = log_destination(task_definition, container_name, task_id);
    let create_group = options
        .get("awslogs-create-group")
        .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
    Some(EnsureLogStream {
        log_group_name: group,
        log_stream_name: stream,
        create_group,
    })
}

/// Where a container's output goes, following an `awslogs` logConfiguration when there is one
/// (`awslogs-group`, `awslogs-stream-prefix` → `prefix/container/task-id`), else
/// `/ecs/<family>` and `ecs/<container>/<task-id>`.
pub fn log_destination(
    task_definition: &TaskDefinition,
    container_name: &str,
    task_id: &str,
) -> (String, String) {
    let options = task_definition
        .container_definitions
        .iter()
        .find(|c| c.name.as_deref() == Some(container_name))
        .and_then(|c| c.log_configuration.as_ref())
        .filter(|l| l.log_driver == "awslogs")
        .and_then(|l| l.options.as_ref());
    let group = options
        .and_then(|o| o.get("awslogs-group").cloned())
        .unwrap_or_else(|| format!("/ecs/{}", task_definition.family));
    let prefix = options
        .and_then(|o| o.get("awslogs-stream-prefix").cloned())
        .unwrap_or_else(|| "ecs".to_string());
    (group, format!("{prefix}/{container_name}/{task_id}"))
}

#[cfg(test)]
mod awslogs_tests {
    use super::*;
    use crate::types::{ContainerDefinition, LogConfiguration};

    fn definition(options: &[(&str, &str)]) -> TaskDefinition {
        TaskDefinition {
            family: "web".into(),
            container_definitions: vec![ContainerDefinition {
                name: Some("app".into()),
                log_configuration: Some(LogConfiguration {
                    log_driver: "awslogs".into(),
                    options: Some(
                        options
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    secret_options: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_an_awslogs_group_is_checked_and_create_group_reads_as_docker_does() {
        let td = definition(&[("awslogs-group", "/g"), ("awslogs-stream-prefix", "p")]);
        let s = awslogs_stream(&td, "app", "t1").expect("awslogs with a group");
        assert_eq!(
            (
                s.log_group_name.as_str(),
                s.log_stream_name.as_str(),
                s.create_group
            ),
            ("/g", "p/app/t1", false)
        );
        for yes in ["true", "True", "1", "t"] {
            let td = definition(&[("awslogs-group", "/g"), ("awslogs-create-group", yes)]);
            assert!(awslogs_stream(&td, "app", "t1").is_some_and(|s| s.create_group));
        }
        let td = definition(&[("awslogs-group", "/g"), ("awslogs-create-group", "yes")]);
        assert!(awslogs_stream(&td, "app", "t1").is_some_and(|s| !s.create_group));
        assert_eq!(awslogs_stream(&definition(&[]), "app", "t1"), None);
        assert_eq!(awslogs_stream(&td, "other", "t1"), None);
    }
}

/// Which task's secrets an agent asks for (it must be placed on the agent's instance).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSecretsRequest {
    pub task_arn: String,
}

/// The task's secrets, resolved with its execution role's permissions: what each container
/// gets in its environment and the credentials its image is pulled with. `Debug` shows names
/// only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSecrets {
    pub containers: Vec<ContainerSecrets>,
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecrets {
    pub container_name: String,
    /// The container's `secrets`, by variable name.
    #[serde(default)]
    pub environment: Vec<SecretVariable>,
    /// From the container's `repositoryCredentials` (a secret holding `username` and
    /// `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVariable {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

/// The error type the task-secrets endpoint answers a task that cannot get its secrets with.
pub const RESOURCE_INITIALIZATION_ERROR: &str = "ResourceInitializationError";

impl std::fmt::Debug for TaskSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.containers).finish()
    }
}

impl std::fmt::Debug for ContainerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.environment.iter().map(|v| v.name.as_str()).collect();
        f.debug_struct("ContainerSecrets")
            .field("container_name", &self.container_name)
            .field("environment", &names)
            .field("registry_auth", &self.registry_auth.is_some())
            .finish()
    }
}

impl std::fmt::Debug for SecretVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretVariable({}=<redacted>)", self.name)
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({}:<redacted>)", self.username)
    }
}

/// Whether a task needs its secrets resolved before it starts: a container with `secrets` or
/// `repositoryCredentials`.
pub fn needs_secrets(task_definition: &TaskDefinition) -> bool {
    task_definition.container_definitions.iter().any(|c| {
        c.extra
            .get("secrets")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|s| !s.is_empty())
            || c.extra.get("repositoryCredentials").is_some()
    })
}
