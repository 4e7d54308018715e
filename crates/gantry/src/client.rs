//! A minimal awsJson1_1 client for the human CLI: the CLI talks to Gantry through the same
//! ECS API every other client uses.

use serde_json::Value;

pub struct ApiClient {
    endpoint: String,
    http: reqwest::Client,
    credentials: Option<crate::credentials::Credentials>,
    region: String,
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

/// An HTTP client that trusts an `https://` endpoint as the environment says:
/// `GANTRY_TLS_FINGERPRINT` pins the server's certificate (what `gantry server` printed),
/// `AWS_CA_BUNDLE` adds CA certificates (as for the AWS CLI); else the system's roots.
fn http_client() -> reqwest::Client {
    let trust = gantry_agent::tls::TlsTrust {
        fingerprint: std::env::var("GANTRY_TLS_FINGERPRINT")
            .ok()
            .filter(|v| !v.is_empty()),
        ca_file: std::env::var("AWS_CA_BUNDLE")
            .ok()
            .filter(|v| !v.is_empty())
            .map(Into::into),
    };
    match gantry_agent::tls::configure(reqwest::Client::builder(), &trust)
        .and_then(|b| b.build().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: {e}; using the system's TLS roots");
            reqwest::Client::new()
        }
    }
}

impl ApiClient {
    pub fn new(endpoint: &str) -> Self {
        ApiClient {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: http_client(),
            credentials: crate::credentials::resolve(),
            region: crate::credentials::region(),
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
        let url = format!("{}/", self.endpoint);
        let body = input.to_string();
        let content_type = "application/x-amz-json-1.1";
        let mut request = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .header("x-amz-target", target);
        if let Some(c) = &self.credentials {
            let creds = gantry_auth::sigv4::Credentials {
                access_key_id: c.access_key_id.clone(),
                secret_access_key: c.secret_access_key.clone(),
                session_token: c.session_token.clone(),
            };
            let service = if target.starts_with("Logs_") {
                "logs"
            } else {
                "ecs"
            };
            for (k, v) in gantry_auth::client::sign_url(
                "POST",
                &url,
                &[("content-type", content_type), ("x-amz-target", target)],
                body.as_bytes(),
                &creds,
                &self.region,
                service,
                gantry_auth::client::now(),
            ) {
                request = request.header(k, v);
            }
        }
        let response = request
            .body(body)
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
            let code = body
                .get("__type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .rsplit('#')
                .next()
                .unwrap_or("");
            if matches!(
                code,
                "MissingAuthenticationTokenException"
                    | "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException"
            ) {
                let message = body.get("message").and_then(Value::as_str).unwrap_or("");
                return Err(ApiError {
                    code: code.to_string(),
                    message: format!(
                        "{message}. Gantry needs credentials: run `export AWS_SHARED_CREDENTIALS_FILE=<data-dir>/credentials AWS_PROFILE=gantry` as `gantry dev` or `gantry server` printed at start (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)."
                    ),
                });
            }
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
