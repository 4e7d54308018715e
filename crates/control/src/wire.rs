//! awsJson1_1 on `POST /`: the operation comes from `X-Amz-Target`, the input is a JSON body,
//! the output a JSON object; errors are `{"__type", "message"}` with HTTP 400 (500 only for
//! `ServerException`). Every response carries `x-amzn-RequestId`.

use crate::plane::ControlPlane;
use crate::services::{api as services, history as service_deployments};
use crate::{attributes, clusters, container_instances, logs, tags, task_definitions, tasks};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gantry_model::{EcsError, EcsResult};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

pub const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
pub const LOGS_PREFIX: &str = "Logs_20140328";

/// What a handler may need to know about the request besides its body.
pub struct RequestContext {
    /// `Host` as the client sent it, to answer DiscoverPollEndpoint with an address the
    /// caller can reach.
    pub host: Option<String>,
}

pub async fn handle(
    State(plane): State<Arc<ControlPlane>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ctx = RequestContext {
        host: headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let result = match parse_body(&body) {
        Ok(input) => dispatch(&plane, &ctx, &target, input).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(output) => json_response(StatusCode::OK, output.to_string()),
        Err(e) => {
            if e.code == "ServerException" {
                tracing::error!(target = %target, "{e}");
            } else {
                tracing::debug!(target = %target, "{e}");
            }
            error_response(&e)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

/// An error as every AWS client parses it: `{"__type", "message"}` with the matching status,
/// and `x-amzn-ErrorType` equal to `__type` (the Rust SDK reads the header first).
pub fn error_response(e: &EcsError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({"__type": e.code, "message": e.message});
    let mut response = json_response(status, body.to_string());
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(e.code));
    response
}

fn parse_body(body: &[u8]) -> EcsResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EcsError::client(format!("The request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(EcsError::client("The request body must be a JSON object."));
    }
    Ok(value)
}

/// Deserialize an operation's input, naming the offending member on failure.
pub fn parse<T: DeserializeOwned>(input: Value) -> EcsResult<T> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            EcsError::client(format!("Invalid request: {inner}"))
        } else {
            EcsError::client(format!("Invalid value for {path}: {inner}"))
        }
    })
}

pub fn to_output<T: serde::Serialize>(output: &T) -> EcsResult<Value> {
    serde_json::to_value(output).map_err(|e| EcsError::server(format!("Cannot encode output: {e}")))
}

async fn dispatch(
    plane: &ControlPlane,
    ctx: &RequestContext,
    target: &str,
    input: Value,
) -> EcsResult<Value> {
    let Some((prefix, op)) = target.split_once('.') else {
        return Err(EcsError::new(
            "UnknownOperationException",
            format!("Missing or malformed X-Amz-Target header: '{target}'."),
        ));
    };
    match prefix {
        ECS_PREFIX => dispatch_ecs(plane, ctx, op, input).await,
        LOGS_PREFIX => logs::dispatch(plane, op, input).await,
        _ => Err(EcsError::unknown_operation(target)),
    }
}

async fn dispatch_ecs(
    plane: &ControlPlane,
    ctx: &RequestContext,
    op: &str,
    input: Value,
) -> EcsResult<Value> {
    match op {
        "CreateCluster" => clusters::create(plane, input).await,
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
        "SubmitTaskStateChange" => tasks::submit_task_state_change(plane, input).await,
        "SubmitContainerStateChange" => tasks::submit_container_state_change(plane, input).await,

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

        "TagResource" => tags::tag(plane, input).await,
        "UntagResource" => tags::untag(plane, input).await,
        "ListTagsForResource" => tags::list(plane, input).await,

        _ => Err(EcsError::unknown_operation(op)),
    }
}
