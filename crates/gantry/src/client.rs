//! A minimal awsJson1_1 client for the human CLI: the CLI talks to Gantry through the same
//! ECS API every other client uses.

use serde_json::Value;

pub struct ApiClient {
    endpoint: String,
    http: reqwest::Client,
}

/// An API error as the server reported it, or a transport failure with advice.
#[derive(Debug)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ApiClient {
    pub fn new(endpoint: &str) -> Self {
        ApiClient {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn ecs(&self, op: &str, input: Value) -> Result<Value, ApiError> {
        self.call(&format!("AmazonEC2ContainerServiceV20141113.{op}"), input)
            .await
    }

    pub async fn logs(&self, op: &str, input: Value) -> Result<Value, ApiError> {
        self.call(&format!("Logs_20140328.{op}"), input).await
    }

    /// Gantry's own operations (`GantryV1.<op>`), such as ExplainPlacement.
    pub async fn gantry(&self, op: &str, input: Value) -> Result<Value, ApiError> {
        self.call(&format!("GantryV1.{op}"), input).await
    }

    async fn call(&self, target: &str, input: Value) -> Result<Value, ApiError> {
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target)
            .body(input.to_string())
            .send()
            .await
            .map_err(|e| ApiError {
                code: "ConnectionError".into(),
                message: format!(
                    "cannot reach Gantry at {} ({e}). Is `gantry dev` running? Set --endpoint or GANTRY_ENDPOINT if it listens elsewhere.",
                    self.endpoint
                ),
            })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| ApiError {
            code: "InvalidResponse".into(),
            message: format!("the server's answer was not JSON: {e}"),
        })?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ApiError {
                code: body
                    .get("__type")
                    .and_then(Value::as_str)
                    .unwrap_or("Error")
                    .rsplit('#')
                    .next()
                    .unwrap_or("Error")
                    .to_string(),
                message: body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
            })
        }
    }
}
