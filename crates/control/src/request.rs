//! One request as the wire layers see it before an operation runs: its parts (for SigV4),
//! the caller's address, authentication, and the audit record. Shared by `dispatch.rs`
//! (awsJson1_1), `iam::query` (awsQuery), the agent channel and log ingest, below all of them.

use crate::audit::AuditEvent;
use crate::auth::{self, Caller};
use crate::plane::ControlPlane;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use gantry_auth::sigv4::RequestParts;
use gantry_model::EcsError;
use std::net::{IpAddr, SocketAddr};

/// The largest request body accepted (as axum's default body limit).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// What the wire layers know about a request before its operation runs.
pub struct Incoming {
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub source_ip: Option<IpAddr>,
}

impl Incoming {
    pub async fn read(req: Request) -> Result<Incoming, EcsError> {
        let (parts, body) = req.into_parts();
        let source_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            EcsError::client(format!(
                "The request body is larger than {MAX_BODY} bytes or could not be read."
            ))
        })?;
        Ok(Incoming {
            request_id: uuid::Uuid::new_v4().to_string(),
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body,
            source_ip,
        })
    }

    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An agent's JSON request to one of its private endpoints (`/agent/v1/...`): read whole,
    /// this replica caught up with every write any replica acknowledged (a task stopped or a
    /// role changed through another replica is seen here), the caller authenticated for
    /// `action`, and the body parsed (`what` names it in the error).
    pub async fn agent_json<T: serde::de::DeserializeOwned>(
        plane: &ControlPlane,
        req: Request,
        service: &str,
        action: &str,
        what: &str,
    ) -> Result<(Incoming, Caller, T), EcsError> {
        let incoming = Incoming::read(req).await?;
        plane
            .state
            .sync()
            .await
            .map_err(crate::state::repo::store_error)?;
        let caller = incoming.authenticate(plane, service, action).map_err(|f| {
            let w = f.wire(auth::Protocol::Json);
            EcsError::new(w.code, w.message)
        })?;
        let body = serde_json::from_slice(&incoming.body).map_err(|e| {
            EcsError::invalid_parameter(format!("The {what} is not valid JSON: {e}"))
        })?;
        Ok((incoming, caller, body))
    }

    /// Authenticates for `service`, recording a refusal in the audit log.
    pub fn authenticate(
        &self,
        plane: &ControlPlane,
        service: &str,
        action: &str,
    ) -> Result<Caller, auth::AuthFailure> {
        auth::authenticate(
            plane,
            &self.parts(),
            service,
            gantry_auth::client::now(),
            self.source_ip,
        )
        .inspect_err(|f| {
            self.audit(plane, None, action, &[], "AuthFailure", Some(f.code()));
        })
    }

    /// Authorises `access` for `caller`, recording a refusal in the audit log (with the
    /// error code `protocol` gives it).
    pub fn authorize(
        &self,
        plane: &ControlPlane,
        caller: &Caller,
        access: &auth::Access,
        protocol: auth::Protocol,
    ) -> Result<(), auth::Denied> {
        auth::authorize(plane, caller, access, gantry_auth::client::now()).inspect_err(|d| {
            self.audit(
                plane,
                Some(caller),
                &access.action,
                &access.resources,
                "AccessDenied",
                Some(d.wire(protocol).code),
            );
        })
    }

    /// One audit record for this request (never a secret or a signature: only the key id).
    pub fn audit(
        &self,
        plane: &ControlPlane,
        caller: Option<&Caller>,
        action: &str,
        resources: &[String],
        outcome: &str,
        error_code: Option<&str>,
    ) {
        let access_key_id = caller.and_then(|c| c.access_key_id.clone()).or_else(|| {
            // An unauthenticated attempt: the key id it claimed, if it parses.
            auth_key_id(&self.headers)
        });
        plane.audit.record(AuditEvent {
            event_time: gantry_model::now_epoch(),
            request_id: self.request_id.clone(),
            principal: caller
                .map(|c| c.principal.arn(plane))
                .unwrap_or_else(|| "anonymous".into()),
            access_key_id,
            action: action.to_string(),
            resources: resources.to_vec(),
            source_ip: self.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: self.header("user-agent").map(str::to_string),
            outcome: outcome.to_string(),
            error_code: error_code.map(str::to_string),
        });
    }
}

/// The key id named in an Authorization header, without trusting anything else in it.
fn auth_key_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let cred = v.split("Credential=").nth(1)?;
    let id = cred.split('/').next()?;
    (!id.is_empty() && id.len() <= 128).then(|| id.to_string())
}
