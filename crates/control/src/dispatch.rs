//! `POST /` (and `GET /` for awsQuery): authenticates the request (SigV4, `auth.rs`), asks
//! `access.rs` what the operation is and touches, authorises it, calls the operation's handler
//! and writes the answer or the error with the protocol's codec (`wire.rs` for awsJson1_1,
//! `iam::query` for awsQuery). Every call, refused or not, goes to the audit log. The only
//! module that knows every awsJson1_1 handler; handlers know none of each other.

use crate::access;
use crate::account_settings;
use crate::api_model;
use crate::auth::{self, Access, Caller, Principal, Protocol};
use crate::capacity_providers;
use crate::explain::{self, GANTRY_PREFIX};
use crate::iam;
use crate::log_api;
use crate::master_keys;
use crate::plane::ControlPlane;
use crate::request::Incoming;
use crate::secretsmanager;
use crate::services::{api as services, history as service_deployments, task_sets};
use crate::ssm;
use crate::state::account_settings::{CONTAINER_INSIGHTS, TAG_RESOURCE_AUTHORIZATION};
use crate::task_protection;
use crate::task_reports;
use crate::wire::{
    error_response, json_response, parse_body, RequestContext, ECS_PREFIX, LOGS_PREFIX,
    SECRETSMANAGER_PREFIX, SSM_PREFIX,
};
use crate::{attributes, clusters, container_instances, tags, task_definitions, tasks};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use gantry_model::{EcsError, EcsResult};
use serde_json::Value;
use std::sync::Arc;

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

pub async fn handle(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let incoming = match Incoming::read(req).await {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    // With replicas, this one first catches up with every write any of them acknowledged:
    // a key revoked or a resource created through another replica is seen here at once.
    // `gantry status` is answered even when the store cannot be read (it says so).
    let status_only = incoming.header("x-amz-target") == Some("GantryV1.DescribeReplicas");
    if !status_only {
        if let Err(e) = plane.state.sync().await {
            return error_response(&crate::state::repo::store_error(e));
        }
    }
    if incoming.headers.get("x-amz-target").is_none() {
        return iam::query::handle(&plane, incoming).await;
    }
    let request_id = incoming.request_id.clone();
    with_request_id(handle_json(&plane, incoming).await, &request_id)
}

/// An awsJson1_1 request: ECS, CloudWatch Logs, Secrets Manager, SSM, or Gantry's own
/// operations.
async fn handle_json(plane: &ControlPlane, incoming: Incoming) -> Response {
    let target = incoming.header("x-amz-target").unwrap_or("").to_string();
    let (prefix, op) = target.split_once('.').unwrap_or(("", target.as_str()));
    let service = match prefix {
        LOGS_PREFIX => "logs",
        SECRETSMANAGER_PREFIX => "secretsmanager",
        SSM_PREFIX => "ssm",
        _ => "ecs",
    };
    let action_name = match prefix {
        ECS_PREFIX => format!("ecs:{op}"),
        LOGS_PREFIX => format!("logs:{op}"),
        SECRETSMANAGER_PREFIX => format!("secretsmanager:{op}"),
        SSM_PREFIX => format!("ssm:{op}"),
        GANTRY_PREFIX => format!("gantry:{op}"),
        _ => target.clone(),
    };
    let caller = match incoming.authenticate(plane, service, &action_name) {
        Ok(c) => c,
        Err(f) => {
            let w = f.wire(Protocol::Json);
            return error_response(&EcsError::new(w.code, w.message));
        }
    };
    let ctx = RequestContext {
        host: incoming.header("host").map(str::to_string),
    };
    let result = match parse_body(&incoming.body) {
        Ok(input) => authorize_and_run(plane, &incoming, &caller, &ctx, prefix, op, input).await,
        // CloudWatch Logs has no ClientException: a body it cannot read is a bad parameter.
        Err(e) if prefix == LOGS_PREFIX => Err((EcsError::invalid_parameter(e.message), None)),
        // Secrets Manager answers a body it cannot read as the protocol does.
        Err(e) if prefix == SECRETSMANAGER_PREFIX || prefix == SSM_PREFIX => {
            Err((EcsError::new("SerializationException", e.message), None))
        }
        Err(e) => Err((e, None)),
    };
    match result {
        Ok((output, access)) => {
            incoming.audit(
                plane,
                Some(&caller),
                &access.action,
                &access.resources,
                "Success",
                None,
            );
            json_response(StatusCode::OK, output.to_string())
        }
        Err((e, access)) => {
            if e.http_status() >= 500 {
                tracing::error!(target = %target, "{e}");
            } else {
                tracing::debug!(target = %target, "{e}");
            }
            let outcome = if e.code == "AccessDeniedException" {
                "AccessDenied"
            } else {
                "Error"
            };
            let (action, resources) = match &access {
                Some(a) => (a.action.as_str(), a.resources.as_slice()),
                None => (action_name.as_str(), &[][..]),
            };
            incoming.audit(
                plane,
                Some(&caller),
                action,
                resources,
                outcome,
                Some(e.code),
            );
            error_response(&e)
        }
    }
}

type Outcome = Result<(Value, Access), (EcsError, Option<Access>)>;

async fn authorize_and_run(
    plane: &ControlPlane,
    incoming: &Incoming,
    caller: &Caller,
    ctx: &RequestContext,
    prefix: &str,
    op: &str,
    input: Value,
) -> Outcome {
    let scope = plane.scope();
    let access = match prefix {
        ECS_PREFIX => access::ecs(scope, op, &input),
        LOGS_PREFIX => access::logs(scope, op, &input),
        GANTRY_PREFIX => access::gantry(scope, op, &input),
        SECRETSMANAGER_PREFIX => secretsmanager::access(plane, op, &input).await,
        SSM_PREFIX => access::ssm(scope, op, &input),
        _ => None,
    };
    let model = match prefix {
        ECS_PREFIX => Some(api_model::ecs()),
        LOGS_PREFIX => Some(api_model::logs()),
        SECRETSMANAGER_PREFIX => Some(api_model::secretsmanager()),
        SSM_PREFIX => Some(api_model::ssm()),
        _ => None,
    };
    let Some(access) = access else {
        let target = incoming.header("x-amz-target").unwrap_or("");
        let e = if let Some(m) = model.filter(|m| m.operation(op).is_some()) {
            not_supported(m, prefix, op)
        } else if prefix.is_empty() {
            EcsError::new(
                "UnknownOperationException",
                format!("Missing or malformed X-Amz-Target header: '{target}'."),
            )
        } else {
            EcsError::unknown_operation(op)
        };
        return Err((e, None));
    };
    let now = gantry_auth::client::now();
    if let Err(d) = auth::authorize(plane, caller, &access, now) {
        return Err((d.to_ecs(), Some(access)));
    }
    if let Some(m) = model {
        if let Err(e) = m.validate(op, &input) {
            return Err((as_listed(m, prefix, op, e), Some(access)));
        }
    }
    if prefix == ECS_PREFIX {
        if let Err(e) = authorize_tagging(plane, caller, op, &input, now).await {
            return Err((e, Some(access)));
        }
    }
    if prefix == LOGS_PREFIX {
        if let Err(e) = authorize_log_group_tags(plane, caller, op, &input, now) {
            return Err((e, Some(access)));
        }
    }
    let tag_on_create = match prefix {
        SECRETSMANAGER_PREFIX => access::secretsmanager_tag_on_create(scope, op, &input),
        SSM_PREFIX => access::ssm_tag_on_create(scope, op, &input),
        _ => None,
    };
    if let Some(tagging) = tag_on_create {
        if let Err(d) = auth::authorize(plane, caller, &tagging, now) {
            return Err((d.to_ecs(), Some(access)));
        }
    }
    let result = match (prefix, op) {
        (ECS_PREFIX, _) => dispatch_ecs(plane, caller, ctx, op, input).await,
        (LOGS_PREFIX, _) => log_api::dispatch(plane, op, input).await,
        (SECRETSMANAGER_PREFIX, _) => secretsmanager::dispatch(plane, op, input).await,
        (SSM_PREFIX, _) => ssm::dispatch(plane, caller, op, input).await,
        (_, "ListAuditEvents") => list_audit_events(plane, input).await,
        (_, "InterruptSpotTask") => tasks::interrupt_spot(plane, input).await,
        (_, "RotateMasterKey") => master_keys::rotate(plane).await,
        (_, "DescribeMasterKeys") => master_keys::describe(plane),
        (_, "DescribeReplicas") => crate::replicas::describe_replicas(plane).await,
        _ => explain::dispatch(plane, op, input).await,
    };
    let mut output = match result {
        Ok(o) => o,
        Err(e) => {
            let e = match model {
                Some(m) => as_listed(m, prefix, op, e),
                None => e,
            };
            return Err((e, Some(access)));
        }
    };
    if op == "RegisterContainerInstance" && prefix == ECS_PREFIX {
        if let Err(e) = after_registration(plane, caller, &mut output).await {
            return Err((e, Some(access)));
        }
    }
    Ok((output, access))
}

/// An operation of the model that Gantry has no capability for yet: a client error (never a
/// 5xx, which every SDK retries) that names it, typed as the operation's model allows.
fn not_supported(model: &api_model::ApiModel, prefix: &str, op: &str) -> EcsError {
    let message = format!(
        "Gantry does not support {op} yet. See docs/API.md for the operations it implements."
    );
    let code = if prefix == LOGS_PREFIX {
        // Logs has no "unsupported" error; the nearest one the operation lists.
        [
            "InvalidOperationException",
            "ValidationException",
            "InvalidParameterException",
            "ResourceNotFoundException",
        ]
        .into_iter()
        .find(|c| model.lists_error(op, c))
        .unwrap_or("InvalidOperationException")
    } else if prefix == SSM_PREFIX {
        // SSM answers any operation's bad request with ValidationException, listed or not
        // (botocore leaves SSM's common errors out of the operations); its only other
        // candidate, InternalServerError, is a 5xx that clients retry.
        "ValidationException"
    } else if prefix == SECRETSMANAGER_PREFIX {
        // Nor has Secrets Manager.
        ["InvalidRequestException", "InvalidParameterException"]
            .into_iter()
            .find(|c| model.lists_error(op, c))
            .unwrap_or("InvalidRequestException")
    } else if model.lists_error(op, "UnsupportedFeatureException") {
        "UnsupportedFeatureException"
    } else {
        "ClientException"
    };
    EcsError::new(code, message)
}

/// The error as `op`'s model allows it. Handlers are written to return only listed errors; one
/// that slips through would reach an SDK as an error type it cannot match, so it is answered
/// as the service's generic error instead, and logged as the defect it is. Protocol errors
/// (authentication, throttling, unknown operation) are the same for every operation and pass.
fn as_listed(model: &api_model::ApiModel, prefix: &str, op: &str, e: EcsError) -> EcsError {
    const PROTOCOL: &[&str] = &[
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "ThrottlingException",
        "SerializationException",
        "UnknownOperationException",
    ];
    // Secrets Manager's and SSM's model validation answers `ValidationException`, which
    // (nearly) no operation lists: for them that type is the protocol's.
    let protocol_for_service = (prefix == SECRETSMANAGER_PREFIX || prefix == SSM_PREFIX)
        && e.code == "ValidationException";
    if model.lists_error(op, e.code) || PROTOCOL.contains(&e.code) || protocol_for_service {
        return e;
    }
    let fault = e.http_status() >= 500;
    let generic = match (prefix, fault) {
        (LOGS_PREFIX, true) => "ServiceUnavailableException",
        // Some newer Logs operations name their input errors ValidationException.
        (LOGS_PREFIX, false) => ["InvalidParameterException", "ValidationException"]
            .into_iter()
            .find(|c| model.lists_error(op, c))
            .unwrap_or("InvalidParameterException"),
        (SSM_PREFIX, true) => "InternalServerError",
        (SSM_PREFIX, false) => "ValidationException",
        (SECRETSMANAGER_PREFIX, true) => "InternalServiceError",
        (SECRETSMANAGER_PREFIX, false) => ["InvalidRequestException", "InvalidParameterException"]
            .into_iter()
            .find(|c| model.lists_error(op, c))
            .unwrap_or("InvalidParameterException"),
        (_, true) => "ServerException",
        (_, false) => "ClientException",
    };
    if e.code == "InvalidParameterException" && generic == "ValidationException" {
        // The same error under the name this operation uses: not a defect.
        return EcsError::new(generic, e.message);
    }
    if e.code == generic {
        // The operation lists no input error at all (the deprecated Logs tag calls): invalid
        // input still gets the service's own, as AWS answers it.
        return e;
    }
    tracing::warn!(
        operation = op,
        "{} is not an error {op} may return: answered as {generic}",
        e.code
    );
    EcsError::new(generic, e.message)
}

/// A create that tags what it creates also needs `ecs:TagResource` on it while the caller's
/// `tagResourceAuthorization` account setting is `on` (ECS's tag-on-create authorisation).
/// Agents and unauthenticated calls have no policies to consult.
async fn authorize_tagging(
    plane: &ControlPlane,
    caller: &Caller,
    op: &str,
    input: &Value,
    now: i64,
) -> EcsResult<()> {
    if !matches!(
        caller.principal,
        Principal::User { .. } | Principal::AssumedRole { .. }
    ) {
        return Ok(());
    }
    let Some(tagging) = access::tag_on_create(plane.scope(), op, input) else {
        return Ok(());
    };
    if account_settings::effective_for(plane, caller, TAG_RESOURCE_AUTHORIZATION).await? != "on" {
        return Ok(());
    }
    auth::authorize(plane, caller, &tagging, now).map_err(|d| d.to_ecs())
}

/// CreateLogGroup with `tags` also needs `logs:TagResource` (or the older
/// `logs:TagLogGroup`) on the group, as the Logs model documents.
fn authorize_log_group_tags(
    plane: &ControlPlane,
    caller: &Caller,
    op: &str,
    input: &Value,
    now: i64,
) -> EcsResult<()> {
    let tagged = input
        .get("tags")
        .and_then(Value::as_object)
        .is_some_and(|t| !t.is_empty());
    if op != "CreateLogGroup" || !tagged {
        return Ok(());
    }
    let group = input
        .get("logGroupName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let arn = plane.scope().log_group(group);
    let tag_resource = Access::new("logs:TagResource", vec![arn.clone()]);
    match auth::authorize(plane, caller, &tag_resource, now) {
        Ok(()) => Ok(()),
        Err(denied) => auth::authorize(
            plane,
            caller,
            &Access::new("logs:TagLogGroup", vec![arn]),
            now,
        )
        .map_err(|_| denied.to_ecs()),
    }
}

/// `GantryV1.ListAuditEvents`: the audit log, newest first, filtered and paged. Waits for
/// what is queued to be written, so a caller sees its own earlier calls.
async fn list_audit_events(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let query: crate::audit::AuditQuery = crate::wire::parse(input)?;
    plane.audit.flush().await;
    let page = plane
        .audit
        .query(&query)
        .await
        .map_err(EcsError::invalid_parameter)?;
    Ok(serde_json::json!({
        "events": page.events,
        "nextToken": page.next_token,
    }))
}

/// An agent that registered with the join token gets credentials bound to its new instance
/// (in `gantryAgentCredentials`, which AWS clients ignore).
async fn after_registration(
    plane: &ControlPlane,
    caller: &Caller,
    output: &mut Value,
) -> EcsResult<()> {
    if caller.principal != Principal::Joining {
        return Ok(());
    }
    let ci = output.get("containerInstance");
    let instance_arn = ci
        .and_then(|c| c.get("containerInstanceArn"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let cluster_arn = gantry_model::arn::cluster_of_arn(&instance_arn)
        .map(|c| plane.scope().cluster(c))
        .unwrap_or_default();
    let creds = iam::keys::issue_agent_credentials(plane, &cluster_arn, &instance_arn).await?;
    if let Some(obj) = output.as_object_mut() {
        obj.insert(
            "gantryAgentCredentials".into(),
            serde_json::to_value(creds)
                .map_err(|e| EcsError::server(format!("Cannot encode credentials: {e}")))?,
        );
        obj.insert(
            "gantryRegion".into(),
            Value::String(plane.scope().region.clone()),
        );
    }
    Ok(())
}

/// PutClusterCapacityProviders: the change (`capacity_providers::put`), then the cluster as
/// DescribeClusters renders it, so that both answer with one renderer's cluster.
async fn put_cluster_capacity_providers(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let name = capacity_providers::put(plane, input).await?;
    let described = clusters::describe(
        plane,
        serde_json::json!({"clusters": [name], "include": ["TAGS", "SETTINGS", "CONFIGURATIONS"]}),
    )
    .await?;
    let cluster = described
        .get("clusters")
        .and_then(|c| c.get(0))
        .cloned()
        .ok_or_else(EcsError::cluster_not_found)?;
    Ok(serde_json::json!({ "cluster": cluster }))
}

async fn dispatch_ecs(
    plane: &ControlPlane,
    caller: &Caller,
    ctx: &RequestContext,
    op: &str,
    input: Value,
) -> EcsResult<Value> {
    match op {
        "CreateCluster" => {
            let insights =
                account_settings::effective_for(plane, caller, CONTAINER_INSIGHTS).await?;
            clusters::create(plane, input, &insights).await
        }
        "DescribeClusters" => clusters::describe(plane, input).await,
        "ListClusters" => clusters::list(plane, input).await,
        "UpdateCluster" => clusters::update(plane, input).await,
        "UpdateClusterSettings" => clusters::update_settings(plane, input).await,
        "DeleteCluster" => clusters::delete(plane, input).await,

        "RegisterTaskDefinition" => task_definitions::register(plane, input).await,
        "DescribeTaskDefinition" => task_definitions::describe(plane, input).await,
        "ListTaskDefinitions" => task_definitions::list(plane, input).await,
        "ListTaskDefinitionFamilies" => task_definitions::list_families(plane, input).await,
        "DeregisterTaskDefinition" => task_definitions::deregister(plane, input).await,
        "DeleteTaskDefinitions" => task_definitions::delete(plane, input).await,

        "RegisterContainerInstance" => container_instances::register(plane, input).await,
        "DescribeContainerInstances" => container_instances::describe(plane, input).await,
        "ListContainerInstances" => container_instances::list(plane, input).await,
        "DeregisterContainerInstance" => container_instances::deregister(plane, input).await,
        "UpdateContainerInstancesState" => container_instances::update_state(plane, input).await,
        "DiscoverPollEndpoint" => {
            container_instances::discover_poll_endpoint(plane, ctx, input).await
        }

        "PutAttributes" => attributes::put(plane, input).await,
        "ListAttributes" => attributes::list(plane, input).await,
        "DeleteAttributes" => attributes::delete(plane, input).await,

        "RunTask" => tasks::run(plane, input).await,
        "StartTask" => tasks::start(plane, input).await,
        "StopTask" => tasks::stop(plane, input).await,
        "DescribeTasks" => tasks::describe(plane, input).await,
        "ListTasks" => tasks::list(plane, input).await,
        "SubmitTaskStateChange" => task_reports::submit_task_state_change(plane, input).await,
        "SubmitContainerStateChange" => {
            task_reports::submit_container_state_change(plane, input).await
        }

        "CreateService" => services::create(plane, input).await,
        "UpdateService" => services::update(plane, input).await,
        "DeleteService" => services::delete(plane, input).await,
        "DescribeServices" => services::describe(plane, input).await,
        "ListServices" => services::list(plane, input).await,
        "ListServicesByNamespace" => services::list_by_namespace(plane, input).await,
        "ListServiceDeployments" => service_deployments::list(plane, input).await,
        "DescribeServiceDeployments" => service_deployments::describe(plane, input).await,
        "StopServiceDeployment" => service_deployments::stop(plane, input).await,
        "DescribeServiceRevisions" => service_deployments::describe_revisions(plane, input).await,

        "CreateTaskSet" => task_sets::create(plane, input).await,
        "DescribeTaskSets" => task_sets::describe(plane, input).await,
        "UpdateTaskSet" => task_sets::update(plane, input).await,
        "DeleteTaskSet" => task_sets::delete(plane, input).await,
        "UpdateServicePrimaryTaskSet" => task_sets::update_primary(plane, input).await,

        "CreateCapacityProvider" => capacity_providers::create(plane, input).await,
        "DescribeCapacityProviders" => capacity_providers::describe(plane, input).await,
        "UpdateCapacityProvider" => capacity_providers::update(plane, input).await,
        "DeleteCapacityProvider" => capacity_providers::delete(plane, input).await,
        "PutClusterCapacityProviders" => put_cluster_capacity_providers(plane, input).await,

        "PutAccountSetting" => account_settings::put(plane, caller, input).await,
        "PutAccountSettingDefault" => account_settings::put_default(plane, input).await,
        "DeleteAccountSetting" => account_settings::delete(plane, caller, input).await,
        "ListAccountSettings" => account_settings::list(plane, caller, input).await,

        "UpdateTaskProtection" => task_protection::update(plane, input).await,
        "GetTaskProtection" => task_protection::get(plane, input).await,

        "TagResource" => tags::tag(plane, input).await,
        "UntagResource" => tags::untag(plane, input).await,
        "ListTagsForResource" => tags::list(plane, input).await,

        _ => Err(EcsError::unknown_operation(op)),
    }
}
