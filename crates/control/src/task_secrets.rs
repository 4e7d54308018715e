//! `POST /agent/v1/task-secrets`: a task's `secrets` and `repositoryCredentials`, resolved
//! for its agent just before the task pulls its images, with the rights of the task's
//! execution role — as ECS's agent fetches them with the execution role's credentials.
//!
//! A reference to a Secrets Manager secret (`arn:aws:secretsmanager:...:secret:name`, with an
//! optional `:json-key:version-stage:version-id` tail) needs `secretsmanager:GetSecretValue`
//! on the secret; an SSM parameter (a name, or `arn:aws:ssm:...:parameter/name`) needs
//! `ssm:GetParameters` on the parameter. A task that cannot have one of them is answered
//! `ResourceInitializationError` with ECS's words for the failure, naming the secret and
//! never a value; the agent stops the task with that reason (`TaskFailedToStart`).

use crate::auth::{self, Access, Caller, Owned, Principal, Protocol};
use crate::plane::ControlPlane;
use crate::request::Incoming;
use crate::wire::error_response;
use crate::{secretsmanager, ssm};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_auth::policy::{trust_allows, RequestContext, TrustPrincipal};
use gantry_model::agent_protocol::{
    ContainerSecrets, RegistryAuth, SecretVariable, TaskSecrets, TaskSecretsRequest,
    RESOURCE_INITIALIZATION_ERROR,
};
use gantry_model::types::{ContainerDefinition, TaskDefinition};
use gantry_model::EcsError;
use serde_json::Value;
use std::sync::Arc;

/// The action agents are authorised for (their own tasks only).
pub const ACTION: &str = "ecs:GetTaskSecrets";

const PREFIX: &str = "unable to pull secrets or registry auth: execution resource retrieval failed";

/// Why a task cannot have its secrets: the message after `ResourceInitializationError: `.
#[derive(Debug)]
struct Refusal(String);

impl Refusal {
    fn asm(what: impl std::fmt::Display) -> Refusal {
        Refusal(format!(
            "{PREFIX}: unable to retrieve secret from asm: service call has been retried 1 time(s): {what}"
        ))
    }
    fn ssm(what: impl std::fmt::Display) -> Refusal {
        Refusal(format!(
            "{PREFIX}: unable to retrieve secrets from ssm: service call has been retried 1 time(s): {what}"
        ))
    }
}

pub async fn endpoint(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let (incoming, caller, wanted) = match Incoming::agent_json::<TaskSecretsRequest>(
        &plane,
        req,
        "ecs",
        ACTION,
        "task secrets request",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let task_id = gantry_model::arn::last_segment(&wanted.task_arn).to_string();
    let cluster = match &caller.principal {
        Principal::Agent { cluster_arn, .. } => cluster_arn.clone(),
        _ => String::new(),
    };
    let access = Access::new(ACTION, vec![wanted.task_arn.clone()])
        .owning([Owned::Task {
            cluster,
            task: task_id.clone(),
        }])
        .agents_only();
    if let Err(d) = incoming.authorize(&plane, &caller, &access, Protocol::Json) {
        return error_response(&d.to_ecs());
    }
    match resolve(&plane, &caller, &wanted.task_arn, &task_id).await {
        Ok(Ok(secrets)) => match serde_json::to_vec(&secrets) {
            Ok(body) => {
                (StatusCode::OK, [("content-type", "application/json")], body).into_response()
            }
            // (The error could quote a value: it is not repeated.)
            Err(_) => error_response(&EcsError::server("cannot encode the task's secrets")),
        },
        Ok(Err(refusal)) => {
            tracing::info!(task = %task_id, "the task cannot have its secrets: {}", refusal.0);
            error_response(&EcsError::new(RESOURCE_INITIALIZATION_ERROR, refusal.0))
        }
        Err(e) => error_response(&e),
    }
}

/// The task's secrets, or why it cannot have them (`Ok(Err(_))`); `Err` for faults the agent
/// should retry (the store).
async fn resolve(
    plane: &ControlPlane,
    caller: &Caller,
    task_arn: &str,
    task_id: &str,
) -> Result<Result<TaskSecrets, Refusal>, EcsError> {
    let task = match &caller.principal {
        Principal::Agent { instance_arn, .. } => plane
            .cache
            .tasks_on_instance(instance_arn)
            .into_iter()
            .find(|t| t.value.id() == task_id)
            .map(|t| t.value.clone()),
        // Unauthenticated (loopback development): the task its ARN names.
        _ => gantry_model::arn::cluster_of_arn(task_arn)
            .and_then(|cluster| plane.cache.task(cluster, task_id))
            .map(|t| t.value.clone()),
    };
    let Some(task) = task else {
        return Err(EcsError::new(
            "InvalidParameterException",
            format!("The task {task_id} is not placed on this container instance."),
        ));
    };
    let Some(td_arn) = task.task.task_definition_arn.as_deref() else {
        return Err(EcsError::server("The task has no task definition."));
    };
    let td = plane.definition_by_arn(td_arn).await?;
    let execution_role = task
        .task
        .overrides
        .as_ref()
        .and_then(|o| o.execution_role_arn.clone())
        .or_else(|| td.execution_role_arn.clone())
        .filter(|r| !r.is_empty());
    let role = match execution_role_caller(plane, execution_role.as_deref(), &task) {
        Ok(r) => r,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Held while values are read and opened: a master key rotation retires its old keys only
    // when no read that may hold a value wrapped by them is under way.
    let _sealing = plane.sealing.read().await;
    Ok(containers(plane, &role, &td).await)
}

/// Who the secrets are read as: the execution role, in a session named after the task (ECS's
/// agent reads them with the execution role's credentials). `None` when authentication is
/// off (every caller acts as the account).
fn execution_role_caller(
    plane: &ControlPlane,
    role_arn: Option<&str>,
    task: &crate::state::records::TaskRecord,
) -> Result<Option<Caller>, Refusal> {
    let task_id = task.id();
    if !plane.config.authenticate {
        return Ok(None);
    }
    let Some(role_arn) = role_arn else {
        return Err(Refusal(format!(
            "{PREFIX}: the task definition has no executionRoleArn to retrieve secrets with"
        )));
    };
    let role = plane
        .cache
        .iam(|i| i.roles.values().find(|r| r.record.arn == role_arn).cloned());
    // What ECS tells STS when it assumes the role for a task, so that trust policies guarding
    // against the confused deputy (`aws:SourceAccount`, `aws:SourceArn`) hold as on AWS.
    let mut context = RequestContext::new();
    context.set("aws:SourceAccount", plane.scope().account.clone());
    if let Some(arn) = task.task.task_arn.clone() {
        context.set("aws:SourceArn", arn);
    }
    let trusted = role.as_ref().is_some_and(|r| {
        r.trust.as_ref().is_some_and(|t| {
            trust_allows(
                t,
                &TrustPrincipal::Service("ecs-tasks.amazonaws.com"),
                &context,
            )
        })
    });
    let Some(role) = role.filter(|_| trusted) else {
        return Err(Refusal(format!(
            "{PREFIX}: ECS was unable to assume the role '{role_arn}' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role."
        )));
    };
    let account = &plane.scope().account;
    let role_name = role.record.role_name.clone();
    Ok(Some(Caller {
        principal: Principal::AssumedRole {
            arn: format!("arn:aws:sts::{account}:assumed-role/{role_name}/{task_id}"),
            id: format!("{}:{task_id}", role.record.role_id),
            role_name,
            role_arn: role_arn.to_string(),
            session_name: task_id.to_string(),
        },
        access_key_id: None,
        source_ip: None,
        secure_transport: true,
    }))
}

/// Whether the execution role may `action` on `resource`; the AccessDenied message if not.
fn allowed(
    plane: &ControlPlane,
    role: &Option<Caller>,
    action: &str,
    resource: &str,
) -> Result<(), String> {
    let Some(role) = role else { return Ok(()) };
    let access = Access::new(action, vec![resource.to_string()]);
    auth::authorize(plane, role, &access, gantry_auth::client::now())
        .map_err(|d| format!("AccessDeniedException: {}", d.message))
}

async fn containers(
    plane: &ControlPlane,
    role: &Option<Caller>,
    td: &TaskDefinition,
) -> Result<TaskSecrets, Refusal> {
    let mut out = TaskSecrets::default();
    for def in &td.container_definitions {
        let name = def.name.clone().unwrap_or_default();
        let mut container = ContainerSecrets {
            container_name: name,
            ..Default::default()
        };
        for (variable, value_from) in secrets_of(def) {
            let value = resolve_reference(plane, role, &value_from).await?;
            container.environment.push(SecretVariable {
                name: variable,
                value,
            });
        }
        if let Some(parameter) = def
            .extra
            .get("repositoryCredentials")
            .and_then(|r| r.get("credentialsParameter"))
            .and_then(Value::as_str)
        {
            container.registry_auth = Some(registry_auth(plane, role, parameter).await?);
        }
        if !container.environment.is_empty() || container.registry_auth.is_some() {
            out.containers.push(container);
        }
    }
    Ok(out)
}

/// A container's `secrets` as (variable name, `valueFrom`).
fn secrets_of(def: &ContainerDefinition) -> Vec<(String, String)> {
    def.extra
        .get("secrets")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| {
                    let name = s.get("name")?.as_str()?;
                    let from = s.get("valueFrom")?.as_str()?;
                    Some((name.to_string(), from.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Secrets Manager reference split as ECS reads `valueFrom`:
/// `arn:aws:secretsmanager:region:account:secret:name[:json-key[:version-stage[:version-id]]]`.
#[derive(Debug, PartialEq)]
struct SecretReference<'a> {
    secret: &'a str,
    json_key: Option<&'a str>,
    version_stage: Option<&'a str>,
    version_id: Option<&'a str>,
}

fn parse_secret_reference(value_from: &str) -> SecretReference<'_> {
    // The secret's own ARN is the first seven colon-separated fields.
    let mut cut = value_from.len();
    let mut colons = 0;
    for (i, c) in value_from.char_indices() {
        if c == ':' {
            colons += 1;
            if colons == 7 {
                cut = i;
                break;
            }
        }
    }
    let secret = &value_from[..cut];
    let mut rest = value_from
        .get(cut + 1..)
        .unwrap_or("")
        .split(':')
        .map(|s| Some(s).filter(|s| !s.is_empty()));
    SecretReference {
        secret,
        json_key: rest.next().flatten(),
        version_stage: rest.next().flatten(),
        version_id: rest.next().flatten(),
    }
}

fn is_secrets_manager(value_from: &str) -> bool {
    value_from.starts_with("arn:") && value_from.split(':').nth(2) == Some("secretsmanager")
}

async fn resolve_reference(
    plane: &ControlPlane,
    role: &Option<Caller>,
    value_from: &str,
) -> Result<String, Refusal> {
    if is_secrets_manager(value_from) {
        let reference = parse_secret_reference(value_from);
        let text = secret_text(plane, role, &reference).await?;
        return match reference.json_key {
            None => Ok(text),
            Some(key) => json_field(&text, key, reference.secret),
        };
    }
    let arn = ssm::parameter_arn(plane, value_from);
    allowed(plane, role, "ssm:GetParameters", &arn).map_err(Refusal::ssm)?;
    match ssm::parameter_value(plane, value_from).await {
        Ok(p) => p
            .value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Refusal::ssm(format!("parameter {value_from} is not text"))),
        Err(e) if e.code == "ParameterNotFound" || e.code == "ParameterVersionNotFound" => Err(
            Refusal::ssm(format!("invalid ssm parameters: {value_from}")),
        ),
        Err(e) => Err(Refusal::ssm(format!("{}: {}", e.code, e.message))),
    }
}

/// The secret's string, read as the execution role.
async fn secret_text(
    plane: &ControlPlane,
    role: &Option<Caller>,
    reference: &SecretReference<'_>,
) -> Result<String, Refusal> {
    let secret = reference.secret;
    let fetch_failed = |cause: String| {
        Refusal::asm(format!(
            "failed to fetch secret {secret} from secrets manager: {cause}"
        ))
    };
    let arn = match secretsmanager::secret_arn(plane, secret).await {
        Ok(a) => a,
        Err(e) => return Err(fetch_failed(format!("{}: {}", e.code, e.message))),
    };
    allowed(plane, role, "secretsmanager:GetSecretValue", &arn).map_err(fetch_failed)?;
    let value =
        secretsmanager::secret_value(plane, secret, reference.version_id, reference.version_stage)
            .await
            .map_err(|e| fetch_failed(format!("{}: {}", e.code, e.message)))?;
    // Found again by name: a secret deleted and created anew in between is not the one the
    // role was authorised for.
    if value.arn != arn {
        return Err(fetch_failed(
            "ResourceNotFoundException: Secrets Manager can't find the specified secret."
                .to_string(),
        ));
    }
    match value.string.as_ref().and_then(|s| s.as_str()) {
        Some(text) => Ok(text.to_string()),
        None => Err(fetch_failed(
            "the secret has no SecretString (a binary secret cannot be an environment variable)"
                .to_string(),
        )),
    }
}

/// One top-level field of a JSON secret, as text (a string as it is, anything else as JSON).
fn json_field(text: &str, key: &str, secret: &str) -> Result<String, Refusal> {
    // A parse error would quote the value: only its position is reported.
    let doc: serde_json::Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Refusal::asm(format!(
            "secret {secret} is not a JSON object (error at line {} column {}), so it has no json key {key}",
            e.line(),
            e.column()
        ))
    })?;
    match doc.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(Refusal::asm(format!(
            "retrieved secret from Secrets Manager did not contain json key {key}"
        ))),
    }
}

/// `repositoryCredentials.credentialsParameter`: a secret holding `username` and `password`.
async fn registry_auth(
    plane: &ControlPlane,
    role: &Option<Caller>,
    parameter: &str,
) -> Result<RegistryAuth, Refusal> {
    let reference = SecretReference {
        secret: parameter,
        json_key: None,
        version_stage: None,
        version_id: None,
    };
    let text = secret_text(plane, role, &reference).await?;
    Ok(RegistryAuth {
        username: json_field(&text, "username", parameter)?,
        password: json_field(&text, "password", parameter)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_split_as_ecs_reads_them() {
        let arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf";
        assert_eq!(
            parse_secret_reference(arn),
            SecretReference {
                secret: arn,
                json_key: None,
                version_stage: None,
                version_id: None
            }
        );
        assert_eq!(
            parse_secret_reference(&format!("{arn}:password::")),
            SecretReference {
                secret: arn,
                json_key: Some("password"),
                version_stage: None,
                version_id: None
            }
        );
        assert_eq!(
            parse_secret_reference(&format!("{arn}::AWSPREVIOUS:")),
            SecretReference {
                secret: arn,
                json_key: None,
                version_stage: Some("AWSPREVIOUS"),
                version_id: None
            }
        );
        assert_eq!(
            parse_secret_reference(&format!("{arn}:user::v-1")),
            SecretReference {
                secret: arn,
                json_key: Some("user"),
                version_stage: None,
                version_id: Some("v-1")
            }
        );
        assert!(is_secrets_manager(arn));
        assert!(!is_secrets_manager(
            "arn:aws:ssm:us-east-1:000000000000:parameter/x"
        ));
        assert!(!is_secrets_manager("/app/db/password"));
    }

    #[test]
    fn json_keys_are_read_and_a_missing_one_is_named_without_the_value() {
        let doc = r#"{"username":"admin","password":"hunter2","port":5432}"#;
        assert_eq!(json_field(doc, "password", "s").unwrap(), "hunter2");
        assert_eq!(json_field(doc, "port", "s").unwrap(), "5432");
        let missing = json_field(doc, "token", "s").unwrap_err().0;
        assert!(
            missing.ends_with("did not contain json key token"),
            "{missing}"
        );
        assert!(!missing.contains("hunter2"));
        let not_json = json_field("hunter2", "password", "s").unwrap_err().0;
        assert!(!not_json.contains("hunter2"), "{not_json}");
    }
}
