//! `POST /`: reads `X-Amz-Target`, parses the body, calls the operation's handler and writes
//! the answer or the error with the wire codec (`wire.rs`). The only module that knows every
//! handler; handlers know none of each other.

use crate::explain::{self, GANTRY_PREFIX};
use crate::log_api;
use crate::plane::ControlPlane;
use crate::services::{api as services, history as service_deployments};
use crate::task_reports;
use crate::wire::{
    error_response, json_response, parse_body, RequestContext, ECS_PREFIX, LOGS_PREFIX,
};
use crate::{attributes, clusters, container_instances, tags, task_definitions, tasks};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use gantry_model::{EcsError, EcsResult};
use serde_json::Value;
use std::sync::Arc;

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
        LOGS_PREFIX => log_api::dispatch(plane, op, input).await,
        GANTRY_PREFIX => explain::dispatch(plane, op, input).await,
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

        "TagResource" => tags::tag(plane, input).await,
        "UntagResource" => tags::untag(plane, input).await,
        "ListTagsForResource" => tags::list(plane, input).await,

        _ => Err(EcsError::unknown_operation(op)),
    }
}
