//! awsQuery requests on `POST /` (form-encoded) or `GET /` (query string): the `Version`
//! parameter says which service (IAM `2010-05-08`, STS `2011-06-15`, ELBv2 `2015-12-01`,
//! handled by `crate::elbv2`); the request must be
//! signed for that service's signing name. Authenticates, asks `access.rs` what the action
//! touches, authorises, runs the handler and audits, as `dispatch.rs` does for awsJson1_1.

use super::{api, sts};
use crate::access;
use crate::auth::Protocol;
use crate::plane::ControlPlane;
use crate::query_wire::{
    error_xml, xml_response, QueryError, QueryRequest, ELBV2_NAMESPACE, IAM_NAMESPACE,
    STS_NAMESPACE,
};
use crate::request::Incoming;
use axum::response::Response;

/// The awsQuery services Gantry serves on its one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryService {
    Iam,
    Sts,
    Elbv2,
}

impl QueryService {
    fn of_version(version: &str) -> Option<QueryService> {
        match version {
            "2010-05-08" => Some(QueryService::Iam),
            "2011-06-15" => Some(QueryService::Sts),
            "2015-12-01" => Some(QueryService::Elbv2),
            _ => None,
        }
    }
    /// The SigV4 signing name.
    fn signing_name(self) -> &'static str {
        match self {
            QueryService::Iam => "iam",
            QueryService::Sts => "sts",
            QueryService::Elbv2 => "elasticloadbalancing",
        }
    }
    fn namespace(self) -> &'static str {
        match self {
            QueryService::Iam => IAM_NAMESPACE,
            QueryService::Sts => STS_NAMESPACE,
            QueryService::Elbv2 => ELBV2_NAMESPACE,
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            QueryService::Iam => "iam",
            QueryService::Sts => "sts",
            QueryService::Elbv2 => "elasticloadbalancing",
        }
    }
}

pub async fn handle(plane: &ControlPlane, incoming: Incoming) -> Response {
    let request_id = incoming.request_id.clone();
    let form = if incoming
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        &incoming.body[..]
    } else {
        &[][..]
    };
    let request = match QueryRequest::parse(&incoming.query, form) {
        Ok(r) => r,
        Err(e) => return e.to_response(IAM_NAMESPACE, &request_id),
    };
    let Some(action) = request.action().map(str::to_string) else {
        // Neither awsJson1_1 (no X-Amz-Target) nor awsQuery (no Action): say what is expected.
        let e = QueryError::missing_action();
        return e.to_response(IAM_NAMESPACE, &request_id);
    };
    let version = request.version().unwrap_or("").to_string();
    let Some(service) = QueryService::of_version(&version) else {
        let e = QueryError::invalid_action(&action, &version);
        return e.to_response(IAM_NAMESPACE, &request_id);
    };
    let ns = service.namespace();
    let action_name = format!("{}:{action}", service.prefix());
    let caller = match incoming.authenticate(plane, service.signing_name(), &action_name) {
        Ok(c) => c,
        Err(f) => {
            let w = f.wire(Protocol::Query);
            let body = error_xml(ns, w.code, &w.message, true, &request_id);
            return xml_response(w.status, body, &request_id);
        }
    };
    let access = match service {
        QueryService::Iam => access::iam(plane, &caller, &action, &request),
        QueryService::Sts => access::sts(plane, &action, &request),
        QueryService::Elbv2 => access::elbv2(plane, &action, &request),
    };
    let Some(access) = access else {
        incoming.audit(
            plane,
            Some(&caller),
            &action_name,
            &[],
            "Error",
            Some("InvalidAction"),
        );
        return QueryError::invalid_action(&action, &version).to_response(ns, &request_id);
    };
    // GetCallerIdentity needs no permission, as on AWS.
    let needs_permission = access.action != "sts:GetCallerIdentity";
    if needs_permission {
        if let Err(d) = incoming.authorize(plane, &caller, &access, Protocol::Query) {
            let w = d.wire(Protocol::Query);
            let body = error_xml(ns, w.code, &w.message, true, &request_id);
            return xml_response(w.status, body, &request_id);
        }
    }
    let result = match service {
        QueryService::Iam => api::dispatch(plane, &caller, &action, &request).await,
        QueryService::Sts => sts::dispatch(plane, &caller, &action, &request).await,
        QueryService::Elbv2 => crate::elbv2::dispatch(plane, &action, &request).await,
    };
    match result {
        Ok(writer) => {
            incoming.audit(
                plane,
                Some(&caller),
                &access.action,
                &access.resources,
                "Success",
                None,
            );
            xml_response(200, writer.finish(&request_id), &request_id)
        }
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(action = %action_name, "{e}");
            }
            incoming.audit(
                plane,
                Some(&caller),
                &access.action,
                &access.resources,
                if e.code == "AccessDenied" {
                    "AccessDenied"
                } else {
                    "Error"
                },
                Some(e.code),
            );
            e.to_response(ns, &request_id)
        }
    }
}
