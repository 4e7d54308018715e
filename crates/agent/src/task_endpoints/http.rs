//! What the front and the agents' own servers share: the endpoints' paths, the answers ECS's
//! agent gives for an id it does not know, and a small HTTP/1.1 server (the endpoints are
//! `GET`s with small answers).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Connections one endpoint server keeps open at once.
const MAX_CONNECTIONS: usize = 256;

/// One answer: status, content type and body. `Debug` shows the body's length only: it may
/// be a task's credentials.
#[derive(Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Answer {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            content_type: "application/json".into(),
            body: body.into(),
        }
    }

    /// A JSON document.
    pub fn value(status: u16, value: &serde_json::Value) -> Answer {
        Answer::json(status, value.to_string())
    }

    /// A JSON string, as ECS's agent answers a metadata error.
    pub fn message(status: u16, message: &str) -> Answer {
        Answer::value(status, &serde_json::Value::String(message.to_string()))
    }

    /// Go's `404 page not found`, for a path that is no endpoint.
    pub fn no_such_path() -> Answer {
        Answer {
            status: 404,
            content_type: "text/plain; charset=utf-8".into(),
            body: Bytes::from_static(b"404 page not found\n"),
        }
    }

    pub fn method_not_allowed() -> Answer {
        Answer {
            status: 405,
            content_type: "text/plain; charset=utf-8".into(),
            body: Bytes::from_static(b"Method Not Allowed\n"),
        }
    }
}

/// Which document of a container's metadata endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataDoc {
    /// `${URI}`: the container.
    Container,
    /// `${URI}/task`: the task with its containers.
    Task,
    /// `${URI}/stats`: Docker's stats of the container.
    ContainerStats,
    /// `${URI}/task/stats`: Docker's stats of each container of the task, by Docker id.
    TaskStats,
}

/// What a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/credentials/<id>`.
    Credentials {
        id: &'a str,
    },
    /// `/v4/<id>[/task][/stats]` (and `/v3/…`, served alike).
    Metadata {
        id: &'a str,
        doc: MetadataDoc,
    },
    NotFound,
}

/// Parses a request path (without its query).
pub fn route(path: &str) -> Route<'_> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if let Some(id) = path.strip_prefix("/v2/credentials/") {
        return if id.is_empty() || id.contains('/') {
            Route::NotFound
        } else {
            Route::Credentials { id }
        };
    }
    let Some(rest) = path
        .strip_prefix("/v4/")
        .or_else(|| path.strip_prefix("/v3/"))
    else {
        return Route::NotFound;
    };
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() {
        return Route::NotFound;
    }
    let doc = match tail {
        "" => MetadataDoc::Container,
        "task" => MetadataDoc::Task,
        "stats" => MetadataDoc::ContainerStats,
        "task/stats" => MetadataDoc::TaskStats,
        _ => return Route::NotFound,
    };
    Route::Metadata { id, doc }
}

/// ECS's answer for an id nobody serves: 400 with its JSON error for credentials, 404 with a
/// JSON string for metadata.
pub fn unknown(route: &Route<'_>) -> Answer {
    match route {
        Route::Credentials { .. } => Answer::value(
            400,
            &serde_json::json!({
                "code": "InvalidIdInRequest",
                "message": "CredentialsV2Request: Credentials not found",
                "HTTPErrorCode": 400,
            }),
        ),
        Route::Metadata { id, doc } => {
            let message = match doc {
                MetadataDoc::Container => format!("V4 container metadata handler: unable to get container ID from request: unable to get docker ID from v3 endpoint ID: {id}"),
                MetadataDoc::Task => format!("V4 task metadata handler: unable to get task arn from request: unable to get task Arn from v3 endpoint ID: {id}"),
                MetadataDoc::ContainerStats => format!("V4 container stats handler: unable to get container ID from request: unable to get docker ID from v3 endpoint ID: {id}"),
                MetadataDoc::TaskStats => format!("V4 task stats handler: unable to get task arn from request: unable to get task Arn from v3 endpoint ID: {id}"),
            };
            Answer::message(404, &message)
        }
        Route::NotFound => Answer::no_such_path(),
    }
}

fn into_response(a: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(a.body));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&a.content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `handler` (given a request's path) on `listener` until `shutdown` turns true.
/// Only `GET` (and `HEAD`) are answered; anything else is 405.
pub async fn serve<H, F>(listener: TcpListener, handler: H, mut shutdown: watch::Receiver<bool>)
where
    H: Fn(String) -> F + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let handler = Arc::new(handler);
    // A container opening connections without end must not use up the process's file
    // descriptors (the front's holder may be the control plane itself): past the cap, new
    // connections are closed at once.
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::debug!("task endpoints: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!("task endpoints: {MAX_CONNECTIONS} connections open; one refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let answer = if req.method() == Method::GET || req.method() == Method::HEAD {
                        handler(req.uri().path().to_string()).await
                    } else {
                        Answer::method_not_allowed()
                    };
                    Ok::<_, Infallible>(into_response(answer))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_endpoint_and_the_document() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            route(&format!("/v2/credentials/{id}")),
            Route::Credentials { id }
        );
        for (suffix, doc) in [
            ("", MetadataDoc::Container),
            ("/", MetadataDoc::Container),
            ("/task", MetadataDoc::Task),
            ("/stats", MetadataDoc::ContainerStats),
            ("/task/stats", MetadataDoc::TaskStats),
        ] {
            for v in ["v4", "v3"] {
                assert_eq!(
                    route(&format!("/{v}/{id}{suffix}")),
                    Route::Metadata { id, doc },
                    "{v}{suffix}"
                );
            }
        }
        for bad in [
            "/",
            "/v2/credentials/",
            "/v2/credentials/a/b",
            "/v4/",
            "/v4/x/other",
            "/v1/metadata",
        ] {
            assert_eq!(route(bad), Route::NotFound, "{bad}");
        }
    }

    #[test]
    fn unknown_ids_are_answered_as_ecs_answers_them() {
        let a = unknown(&Route::Credentials { id: "x" });
        assert_eq!(a.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
        assert_eq!(v["code"], "InvalidIdInRequest");
        assert_eq!(v["message"], "CredentialsV2Request: Credentials not found");
        assert_eq!(v["HTTPErrorCode"], 400);
        let a = unknown(&Route::Metadata {
            id: "bad",
            doc: MetadataDoc::Task,
        });
        assert_eq!(a.status, 404);
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
        assert_eq!(
            v,
            "V4 task metadata handler: unable to get task arn from request: unable to get task Arn from v3 endpoint ID: bad"
        );
        assert_eq!(unknown(&Route::NotFound).status, 404);
    }
}
