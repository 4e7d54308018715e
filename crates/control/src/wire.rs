//! awsJson1_1 on `POST /`: the operation comes from `X-Amz-Target`, the input is a JSON body,
//! the output a JSON object; errors are `{"__type", "message"}` with HTTP 400 (500 only for
//! `ServerException`). Every response carries `x-amzn-RequestId`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gantry_model::{EcsError, EcsResult};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
pub const LOGS_PREFIX: &str = "Logs_20140328";
pub const SECRETSMANAGER_PREFIX: &str = "secretsmanager";
pub const SSM_PREFIX: &str = "AmazonSSM";

/// What a handler may need to know about the request besides its body.
pub struct RequestContext {
    /// `Host` as the client sent it, to answer DiscoverPollEndpoint with an address the
    /// caller can reach.
    pub host: Option<String>,
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
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

pub(crate) fn parse_body(body: &[u8]) -> EcsResult<Value> {
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
