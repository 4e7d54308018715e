//! The error type every API call returns, carrying an ECS error code.
//!
//! On the wire an error is `{"__type": "<code>", "message": "..."}` with HTTP 400, or 500 for
//! `ServerException` only: every AWS client retries 5xx for minutes, so anything a client can
//! cause must be a 4xx.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsError {
    /// The ECS exception name, e.g. `ClusterNotFoundException`.
    pub code: &'static str,
    pub message: String,
}

pub type EcsResult<T> = Result<T, EcsError>;

impl EcsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        EcsError {
            code,
            message: message.into(),
        }
    }
    pub fn client(message: impl Into<String>) -> Self {
        Self::new("ClientException", message)
    }
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", message)
    }
    pub fn server(message: impl Into<String>) -> Self {
        Self::new("ServerException", message)
    }
    pub fn cluster_not_found() -> Self {
        Self::new("ClusterNotFoundException", "Cluster not found.")
    }
    pub fn service_not_found() -> Self {
        Self::new("ServiceNotFoundException", "Service not found.")
    }
    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }
    pub fn unknown_operation(op: &str) -> Self {
        Self::new(
            "UnknownOperationException",
            format!("Operation {op} is not supported by Gantry yet."),
        )
    }
    /// HTTP status for this error: 500 only for server faults (Secrets Manager names its
    /// own `InternalServiceError`, SSM its `InternalServerError`).
    pub fn http_status(&self) -> u16 {
        if matches!(
            self.code,
            "ServerException"
                | "ServiceUnavailableException"
                | "InternalServiceError"
                | "InternalServerError"
        ) {
            500
        } else {
            400
        }
    }
}

impl fmt::Display for EcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for EcsError {}
