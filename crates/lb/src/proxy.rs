//! One request through a listener: match the rules, then answer (fixed response, redirect) or
//! forward to a target with ELB's headers, mapping target failures to 502/503/504.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gantry_model::elbv2::{
    TargetProtocolVersion, APP_STICKINESS_COOKIE, GROUP_STICKINESS_COOKIE, TARGET_STICKINESS_COOKIE,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::health::Outcome;
use crate::listener::{clock, ConnActivity, ListenerCtx};
use crate::routing::{strip_port, CompiledAction, RequestFacts, RequestHeaders};
use crate::target_group::{AppStickyAnswer, InFlight, TargetGroup};
use crate::upstream::Lease;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
/// Picks per request when the picked target has just left its group.
pub(crate) const PICK_ATTEMPTS: usize = 3;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The client connection a request arrived on.
pub struct ClientConn {
    pub remote: SocketAddr,
    /// The client's IP as an `X-Forwarded-For` entry, formatted once per connection.
    pub remote_ip: HeaderValue,
    pub activity: Arc<ConnActivity>,
    /// The listener the connection came in on.
    pub listener: Arc<ListenerCtx>,
}

/// A body error: the peer's, or no bytes for the listener's idle timeout.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Ends a body that has moved no bytes for the listener's idle timeout. The timer is created
/// only when the body first has to wait, and moved on only when it fires, so a body that
/// flows costs one clock read per frame.
struct IdleTimer {
    idle_timeout: Duration,
    last_frame: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimer {
    fn new(idle_timeout: Duration) -> IdleTimer {
        IdleTimer {
            idle_timeout,
            last_frame: Instant::now(),
            sleep: None,
        }
    }

    fn frame(&mut self) {
        self.last_frame = Instant::now();
    }

    /// Called when the body is waiting: whether it has waited for the idle timeout (else the
    /// timer will wake the task).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::from_std(self.last_frame + self.idle_timeout);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        std::future::Future::poll(sleep.as_mut(), cx).is_ready()
    }
}

fn idle_error() -> BodyError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no bytes for the listener's idle timeout",
    ))
}

/// A client's request body on its way to the target: it fails after the listener's idle
/// timeout without bytes (an upload that keeps sending is never cut), and notes each frame for
/// the wait for the target's answer.
pub struct RequestBody {
    inner: Incoming,
    timer: IdleTimer,
    /// When the last frame arrived (`listener::clock`); `None` for a body that was empty.
    progress: Option<Arc<AtomicU64>>,
    /// Set once the body has been read to its end (the whole request went to the target).
    ended: Arc<AtomicBool>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.timer.poll_expired(cx) {
                    Poll::Ready(Some(Err(idle_error())))
                } else {
                    Poll::Pending
                }
            }
            Poll::Ready(frame) => {
                this.timer.frame();
                if let Some(progress) = &this.progress {
                    progress.store(clock(), Ordering::Release);
                }
                // The end: no more frames, or none with bytes to come (an HTTP/2 client may send
                // its end of stream in an empty frame the encoder of a sized body never reads).
                if frame.is_none()
                    || this.inner.is_end_stream()
                    || this.inner.size_hint().exact() == Some(0)
                {
                    this.ended.store(true, Ordering::Release);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body: a fixed one, or a target's streamed through. It holds the request's
/// in-flight marks (on the client connection and the target) until it ends or is dropped.
pub struct LbBody {
    kind: BodyKind,
    marks: Option<Marks>,
}

enum BodyKind {
    Full(Option<Bytes>),
    /// A target's body, ended (the client connection aborted) after the listener's idle
    /// timeout without bytes.
    Proxied(Incoming, IdleTimer),
}

struct Marks {
    target: Option<InFlight>,
    /// The pooled connection the response arrives on, returned when it has been read whole.
    lease: Option<Lease>,
    _connection: ConnInFlight,
}

/// Counts a request on its client connection (for the idle and header timeouts).
pub struct ConnInFlight(Arc<ConnActivity>);

impl ConnInFlight {
    pub fn new(activity: Arc<ConnActivity>) -> ConnInFlight {
        activity.request_started();
        ConnInFlight(activity)
    }
}

impl Drop for ConnInFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl LbBody {
    fn full(bytes: Bytes, connection: ConnInFlight) -> LbBody {
        LbBody {
            kind: BodyKind::Full(Some(bytes).filter(|b| !b.is_empty())),
            marks: Some(Marks {
                target: None,
                lease: None,
                _connection: connection,
            }),
        }
    }
}

impl LbBody {
    /// Ends the request's marks; a pooled connection whose response was read whole goes back
    /// to its pool (any other is closed by dropping it).
    fn finish(&mut self) {
        let Some(marks) = self.marks.take() else {
            return;
        };
        let complete = match &self.kind {
            BodyKind::Proxied(incoming, _) => incoming.is_end_stream(),
            BodyKind::Full(_) => true,
        };
        if let (true, Some(lease), Some(target)) = (complete, marks.lease, &marks.target) {
            target.target().upstream().release(lease);
        }
    }
}

impl Drop for LbBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so the end is seen here.
        self.finish();
    }
}

impl Body for LbBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Proxied(incoming, timer) => match Pin::new(incoming).poll_frame(cx) {
                Poll::Pending if timer.poll_expired(cx) => Poll::Ready(Some(Err(idle_error()))),
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => {
                    timer.frame();
                    Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
                }
            },
        };
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.marks = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Proxied(incoming, _) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            BodyKind::Full(None) => SizeHint::with_exact(0),
            BodyKind::Proxied(incoming, _) => incoming.size_hint(),
        }
    }
}

/// The service of a client connection.
pub async fn handle(
    client: Arc<ClientConn>,
    request: Request<Incoming>,
) -> Result<Response<LbBody>, Infallible> {
    let listener = &client.listener;
    let connection = ConnInFlight::new(client.activity.clone());
    // A guard, not a clone: no shared reference count to bounce between cores per request.
    // It is dropped before the first await.
    let config = listener.compiled.load();
    let uri = request.uri();
    let host_text = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let facts = RequestFacts {
        method: request.method(),
        path: uri.path(),
        query: uri.query(),
        host: host_text.map(strip_port),
        headers: RequestHeaders::Map(request.headers()),
        client_ip: client.remote.ip(),
        listener_port: listener.port,
    };
    let Some(rule) = config.route(&facts) else {
        // The control plane always gives a default rule; without one there is nothing to do.
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, connection));
    };
    match &rule.action {
        CompiledAction::Fixed {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(LbBody::full(body.clone(), connection));
            *response.status_mut() = *status;
            let content_type = content_type
                .clone()
                .unwrap_or_else(|| HeaderValue::from_static("text/plain; charset=utf-8"));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            response
                .headers_mut()
                .insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
            Ok(response)
        }
        CompiledAction::Redirect(redirect) => {
            let location = redirect.location(&facts);
            let mut response = Response::new(LbBody::full(Bytes::new(), connection));
            *response.status_mut() = redirect.status;
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
                .headers_mut()
                .insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
            Ok(response)
        }
        CompiledAction::Forward(forward) => {
            let sticky_group = if forward.stickiness.is_some() {
                cookie(
                    RequestHeaders::Map(request.headers()),
                    GROUP_STICKINESS_COOKIE,
                )
            } else {
                None
            };
            let Some(group) = forward.choose(sticky_group) else {
                return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, connection));
            };
            let group = group.clone();
            let group_cookie = forward
                .stickiness
                .map(|life| sticky_cookie(GROUP_STICKINESS_COOKIE, &group.token, life));
            let idle_timeout = config.idle_timeout;
            drop(config);
            forward_to_group(
                listener,
                &client,
                group,
                group_cookie,
                idle_timeout,
                request,
                connection,
            )
            .await
        }
    }
}

async fn forward_to_group(
    listener: &ListenerCtx,
    client: &ClientConn,
    group: Arc<TargetGroup>,
    group_cookie: Option<HeaderValue>,
    idle_timeout: Duration,
    request: Request<Incoming>,
    connection: ConnInFlight,
) -> Result<Response<LbBody>, Infallible> {
    let Some(Picked {
        in_flight,
        target_cookie,
        app_cookie,
        protocol,
    }) = pick_target(&group, RequestHeaders::Map(request.headers()))
    else {
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, connection));
    };
    let target = in_flight.target();
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.scheme = Some(Scheme::HTTP);
    uri_parts.authority = Some(target.authority.clone());
    uri_parts.path_and_query = Some(path_and_query);
    parts.uri = match Uri::from_parts(uri_parts) {
        Ok(uri) => uri,
        Err(_) => return Ok(error_response(StatusCode::BAD_REQUEST, connection)),
    };
    parts.version = match protocol {
        TargetProtocolVersion::Http1 => Version::HTTP_11,
        TargetProtocolVersion::Http2 => Version::HTTP_2,
    };
    let keep_te_trailers = protocol == TargetProtocolVersion::Http2;
    strip_hop_by_hop(&mut parts.headers, keep_te_trailers);
    add_forwarding_headers(&mut parts.headers, client, listener);

    let progress = (!body.is_end_stream()).then(|| Arc::new(AtomicU64::new(clock())));
    let ended = Arc::new(AtomicBool::new(progress.is_none()));
    let body = RequestBody {
        inner: body,
        timer: IdleTimer::new(idle_timeout),
        progress: progress.clone(),
        ended: ended.clone(),
    };
    let upstream = target.upstream().send(Request::from_parts(parts, body));
    let (response, lease) = match until_idle(upstream, idle_timeout, progress.as_deref()).await {
        Ok(Ok(answered)) => {
            group.record_answered(target);
            answered
        }
        Ok(Err(error)) => {
            tracing::debug!(target = %target.addr, error = %error.message, "target request failed");
            if error.target_at_fault {
                group.record(target, Outcome::connection_failed(), true);
            }
            // Not the target's doing: the client's request body failed, or stalled for the
            // idle timeout (its own timer may fire before the wait for the answer gives up).
            // A 504, as the HTTP/1.1 path answers a stalled upload.
            let status = if error.timed_out || !error.target_at_fault {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            return Ok(error_response(status, connection));
        }
        Err(_) => {
            // A hung target when it had the whole request; a stalled upload is the client's.
            if ended.load(Ordering::Acquire) {
                tracing::debug!(target = %target.addr, "target did not answer within the idle timeout");
                group.record(target, Outcome::timed_out(), true);
            } else {
                tracing::debug!(target = %target.addr, "the request body stalled for the idle timeout");
            }
            return Ok(error_response(StatusCode::GATEWAY_TIMEOUT, connection));
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    if let Some(cookie) = target_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    if let Some(app) = app_cookie {
        let set_cookies = parts.headers.get_all(header::SET_COOKIE);
        if app.applies(set_cookies.iter().map(HeaderValue::as_bytes)) {
            parts.headers.append(header::SET_COOKIE, app.cookie);
        }
    }
    if let Some(cookie) = group_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    let body = LbBody {
        kind: BodyKind::Proxied(body, IdleTimer::new(idle_timeout)),
        marks: Some(Marks {
            target: Some(in_flight),
            lease,
            _connection: connection,
        }),
    };
    Ok(Response::from_parts(parts, body))
}

/// A request's target, marked in flight.
pub(crate) struct Picked {
    pub in_flight: InFlight,
    /// The `AWSALB` cookie to set, when the group's target stickiness is on.
    pub target_cookie: Option<HeaderValue>,
    /// With application-based stickiness: the `AWSALBAPP-0` cookie, and when to set it.
    pub app_cookie: Option<AppStickyAnswer>,
    pub protocol: TargetProtocolVersion,
}

/// Picks the target for a request to `group` and marks the request in flight on it; `None`
/// when the group has no target to send to.
pub(crate) fn pick_target(group: &TargetGroup, headers: RequestHeaders<'_>) -> Option<Picked> {
    // A target picked from a snapshot that was just replaced may have finished draining;
    // it refuses the request, and the current snapshot (which no longer has it) is asked.
    let mut attempts = 0;
    loop {
        let routing = group.routing();
        let sticky_target = if routing.stickiness.is_some() {
            cookie(headers, TARGET_STICKINESS_COOKIE)
        } else if routing.app_cookie.is_some() {
            cookie(headers, APP_STICKINESS_COOKIE)
        } else {
            None
        };
        let target = group.pick(&routing, sticky_target)?;
        let target_cookie = routing
            .stickiness
            .map(|life| sticky_cookie(TARGET_STICKINESS_COOKIE, &target.token, life));
        let app_cookie = routing.app_cookie.as_ref().map(|app| AppStickyAnswer {
            app: app.clone(),
            cookie: sticky_cookie(APP_STICKINESS_COOKIE, &target.token, app.life),
            carried: sticky_target.is_some(),
        });
        let protocol = routing.protocol;
        drop(routing);
        match InFlight::new(target) {
            Some(in_flight) => {
                return Some(Picked {
                    in_flight,
                    target_cookie,
                    app_cookie,
                    protocol,
                })
            }
            None if attempts < PICK_ATTEMPTS => attempts += 1,
            None => return None,
        }
    }
}

/// Runs `send` until the target answers, or until nothing has moved for `idle_timeout`:
/// neither an answer nor a request body frame (`progress`), so an upload that keeps sending
/// is not cut. `Err` when idle.
async fn until_idle<F: std::future::Future>(
    send: F,
    idle_timeout: Duration,
    progress: Option<&AtomicU64>,
) -> Result<F::Output, ()> {
    let Some(progress) = progress else {
        return tokio::time::timeout(idle_timeout, send).await.map_err(drop);
    };
    let idle_ms = idle_timeout.as_millis() as u64;
    tokio::pin!(send);
    loop {
        let since_progress = clock().saturating_sub(progress.load(Ordering::Acquire));
        if since_progress >= idle_ms {
            return Err(());
        }
        let left = Duration::from_millis(idle_ms - since_progress);
        if let Ok(output) = tokio::time::timeout(left, &mut send).await {
            return Ok(output);
        }
    }
}

/// Removes the headers that describe one connection rather than the message (RFC 9110
/// §7.6.1), including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages carry none: one pass of cheap comparisons instead of a hashed removal per
    // name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            if name == header::TE {
                continue;
            }
            headers.remove(name);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    headers.remove(header::TRAILER);
    headers.remove(header::PROXY_AUTHORIZATION);
    if let Some(te) = headers.remove(header::TE) {
        if keep_te_trailers && te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.insert(header::TE, te);
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TRAILER
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
}

fn add_forwarding_headers(headers: &mut HeaderMap, client: &ClientConn, listener: &ListenerCtx) {
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(existing) => {
            let mut value = Vec::with_capacity(existing.len() + 2 + client.remote_ip.len());
            value.extend_from_slice(existing.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(client.remote_ip.as_bytes());
            HeaderValue::from_bytes(&value).unwrap_or_else(|_| client.remote_ip.clone())
        }
        None => client.remote_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_PORT.clone(), listener.port_header.clone());
    if !headers.contains_key(&X_AMZN_TRACE_ID) {
        headers.insert(X_AMZN_TRACE_ID.clone(), new_trace_id());
    }
}

/// A fresh `X-Amzn-Trace-Id`: `Root=1-<epoch seconds, 8 hex>-<96 random bits, 24 hex>`.
pub fn new_trace_id() -> HeaderValue {
    HeaderValue::from_bytes(&trace_id_text())
        .unwrap_or_else(|_| HeaderValue::from_static("Root=1-0-0"))
}

/// The text of a fresh `X-Amzn-Trace-Id`.
pub(crate) fn trace_id_text() -> [u8; 40] {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let random: u128 = rand::random::<u128>();
    // Hex digits written in place: `format!` of a u128 costs several times as much, per
    // request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = *b"Root=1-00000000-000000000000000000000000";
    for (i, digit) in text[7..15].iter_mut().enumerate() {
        *digit = HEX[((seconds as u32) >> (28 - 4 * i)) as usize & 0xf];
    }
    for (i, digit) in text[16..].iter_mut().enumerate() {
        *digit = HEX[(random >> (92 - 4 * i)) as usize & 0xf];
    }
    text
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: RequestHeaders<'a>, name: &str) -> Option<&'a str> {
    let mut found = None;
    headers.any_value(&header::COOKIE, |value| {
        found = value.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        });
        found.is_some()
    });
    found
}

pub(crate) fn sticky_cookie(name: &str, token: &str, life: std::time::Duration) -> HeaderValue {
    let text = format!("{name}={token}; Max-Age={}; Path=/", life.as_secs());
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The page of the load balancer's own error answers.
pub(crate) fn error_page(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("");
    let code = status.as_u16();
    format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
}

fn error_response(status: StatusCode, connection: ConnInFlight) -> Response<LbBody> {
    let page = error_page(status);
    let mut response = Response::new(LbBody::full(Bytes::from(page), connection));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; AWSALB=abc; b=2"),
        );
        let headers = RequestHeaders::Map(&headers);
        assert_eq!(cookie(headers, "AWSALB"), Some("abc"));
        assert_eq!(cookie(headers, "AWSALBTG"), None);
    }

    #[test]
    fn trace_ids_have_the_amazon_shape() {
        let id = new_trace_id();
        let text = id.to_str().unwrap();
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts[0], "Root=1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert!(parts[1..].iter().all(|p| p
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let stamped = u32::from_str_radix(parts[1], 16).unwrap();
        assert!(seconds.wrapping_sub(stamped) <= 1, "{text} vs {seconds:x}");
        assert_ne!(new_trace_id(), id, "random part repeats");
    }
}
