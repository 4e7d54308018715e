//! A minimal client for the human CLI: the CLI talks to Gantry through the same APIs every
//! other client uses — awsJson1_1 for ECS, CloudWatch Logs and Gantry's own operations,
//! awsQuery (form-encoded parameters, XML answers) for ELBv2.

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
/// `GANTRY_TLS_FINGERPRINT` pins the server's certificate (what `gantry server` printed; several
/// comma-separated, any of them),
/// `AWS_CA_BUNDLE` adds CA certificates (as for the AWS CLI); else the system's roots.
fn http_client() -> reqwest::Client {
    let trust = gantry_agent::tls::TlsTrust {
        fingerprints: std::env::var("GANTRY_TLS_FINGERPRINT")
            .ok()
            .filter(|v| !v.is_empty())
            .into_iter()
            .collect(),
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

    /// A client signing with `credentials` for `region`, whatever the environment says (a
    /// benchmark talking to servers it started).
    pub fn with_credentials(
        endpoint: &str,
        credentials: crate::credentials::Credentials,
        region: &str,
    ) -> Self {
        ApiClient {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            credentials: Some(credentials),
            region: region.to_string(),
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
        let body = input.to_string();
        let service = if target.starts_with("Logs_") {
            "logs"
        } else {
            "ecs"
        };
        let response = self
            .send(
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", target),
                ],
                body,
                service,
            )
            .await?;
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
                .unwrap_or("Error")
                .rsplit('#')
                .next()
                .unwrap_or("Error");
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            Err(api_error(code, message))
        }
    }

    /// One ELBv2 action over awsQuery (`Action=<action>&Version=2015-12-01&<params>`, signed
    /// for `elasticloadbalancing`): the XML answer's text, or the `ErrorResponse`'s code and
    /// message.
    pub async fn elbv2(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, ApiError> {
        let mut body = format!("Action={}&Version=2015-12-01", form_encode(action));
        for (k, v) in params {
            body.push('&');
            body.push_str(&form_encode(k));
            body.push('=');
            body.push_str(&form_encode(v));
        }
        let response = self
            .send(
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body,
                "elasticloadbalancing",
            )
            .await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ApiError {
            code: "InvalidResponse".into(),
            message: format!("cannot read the server's answer to {action}: {e}"),
        })?;
        if status.is_success() {
            return Ok(text);
        }
        match query_error(&text) {
            Some((code, message)) => Err(api_error(&code, &message)),
            None => Err(ApiError {
                code: "InvalidResponse".into(),
                message: format!(
                    "the server answered {action} with HTTP {status} and no readable error: {}",
                    text.chars().take(200).collect::<String>()
                ),
            }),
        }
    }

    /// POST `body` to the endpoint with `headers`, signed for `service` when there are
    /// credentials.
    async fn send(
        &self,
        headers: &[(&str, &str)],
        body: String,
        service: &str,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}/", self.endpoint);
        let mut request = self.http.post(&url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(c) = &self.credentials {
            let creds = gantry_auth::sigv4::Credentials {
                access_key_id: c.access_key_id.clone(),
                secret_access_key: c.secret_access_key.clone(),
                session_token: c.session_token.clone(),
            };
            for (k, v) in gantry_auth::client::sign_url(
                "POST",
                &url,
                headers,
                body.as_bytes(),
                &creds,
                &self.region,
                service,
                gantry_auth::client::now(),
            ) {
                request = request.header(k, v);
            }
        }
        request.body(body).send().await.map_err(|e| ApiError {
            code: "ConnectionError".into(),
            message: format!(
                "cannot reach Gantry at {} ({e}). Is `gantry dev` running? Set --endpoint or GANTRY_ENDPOINT if it listens elsewhere.",
                self.endpoint
            ),
        })
    }
}

/// An error the server answered, with advice when it is about credentials (the same for
/// awsJson's and awsQuery's names of the authentication failures).
fn api_error(code: &str, message: &str) -> ApiError {
    if matches!(
        code,
        "MissingAuthenticationTokenException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
    ) {
        return ApiError {
            code: code.to_string(),
            message: format!(
                "{message}. Gantry needs credentials: run `export AWS_SHARED_CREDENTIALS_FILE=<data-dir>/credentials AWS_PROFILE=gantry` as `gantry dev` or `gantry server` printed at start (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)."
            ),
        };
    }
    ApiError {
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// The code and message of an awsQuery `<ErrorResponse><Error><Code>..</Code>
/// <Message>..</Message></Error></ErrorResponse>`.
fn query_error(xml: &str) -> Option<(String, String)> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let error = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "Error")?;
    let field = |name: &str| {
        error
            .children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .and_then(|n| n.text())
            .map(str::to_string)
    };
    Some((field("Code")?, field("Message").unwrap_or_default()))
}

/// `application/x-www-form-urlencoded` as awsQuery clients send it: every byte but the
/// unreserved `A-Za-z0-9-_.~` percent-encoded (so the signed body is exactly what is sent).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_encoded() {
        assert_eq!(form_encode("Names.member.1"), "Names.member.1");
        assert_eq!(
            form_encode("arn:aws:x/a b+c&d=é"),
            "arn%3Aaws%3Ax%2Fa%20b%2Bc%26d%3D%C3%A9"
        );
    }

    #[test]
    fn query_errors_give_their_code_and_message() {
        let xml = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>LoadBalancerNotFound</Code><Message>One or more load balancers not found</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#;
        assert_eq!(
            query_error(xml),
            Some((
                "LoadBalancerNotFound".to_string(),
                "One or more load balancers not found".to_string()
            ))
        );
        assert_eq!(query_error("<html>502</html>"), None);
        let auth = api_error("InvalidClientTokenId", "The security token is not valid");
        assert!(
            auth.message.contains("AWS_SHARED_CREDENTIALS_FILE"),
            "{}",
            auth.message
        );
    }
}
