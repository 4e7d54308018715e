//! The HTTP/1.1 forwarding path: the common case (an HTTP/1.1 client, a rule that forwards to
//! an HTTP/1.1 target group) served by one task per client connection that reads and writes
//! both sockets itself, without hyper's server and client dispatchers, their connection tasks
//! and channels, or header maps.
//!
//! Per request: the head is parsed in place (`httparse`) from the connection's input buffer,
//! routed by the same compiled rules as hyper's path, rewritten into the connection's output
//! buffer (hop-by-hop headers removed, `X-Forwarded-*` and `X-Amzn-Trace-Id` added) and sent
//! on a pooled keep-alive connection to the picked target together with the body bytes already
//! read; the rest of the body (`Content-Length` or chunked, passed through as it came) follows.
//! The response head is parsed and rewritten the same way, the body is passed through as
//! framed, and the target connection goes back to its pool when the response was read whole.
//! The buffers live as long as the client connection.
//!
//! Anything else is handed, with the bytes already read, to hyper's server for the rest of
//! the connection (see [`Served::Handoff`]): HTTP/2's preface, HTTP/1.0, `Upgrade`,
//! `Expect`, `CONNECT`, request targets that are not origin-form, unusual framing,
//! malformed heads, rules that answer themselves (fixed responses, redirects), groups without
//! a target, and HTTP/2 target groups. hyper's path routes the request again and answers it
//! as it always has.
//!
//! Failures map as on hyper's path: a target that refuses, resets, closes early or answers
//! garbage gives a 502 and counts against its health; one that does not answer within the
//! listener's idle timeout (no bytes either way) a 504, which counts against its health
//! (`Target.Timeout`) when the whole request had reached it, and not when it was the client's
//! request body that stalled. A pooled connection that turns out to
//! be closed when a request without a streamed body is sent on it is replaced by a new one
//! and the request sent again. Error answers close the client connection. A client that
//! closes its connection while its request waits for the target's answer ends the request at
//! once (its target connection is closed and its in-flight mark ends), as on hyper's path.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use gantry_model::elbv2::{TargetProtocolVersion, GROUP_STICKINESS_COOKIE};
use http::{HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::health::Outcome;
use crate::proxy::{
    cookie, error_page, pick_target, sticky_cookie, trace_id_text, ClientConn, ConnInFlight, Picked,
};
use crate::routing::{header_text, strip_port, CompiledAction, RequestFacts, RequestHeaders};
use crate::target_group::{AppStickyAnswer, InFlight, TargetGroup};
use crate::upstream::{ForwardError, Http1Pool, Upstream};

/// How a connection left this path.
pub enum Served {
    /// Closed: by the client, after an error answer, or cut.
    Closed,
    /// To be served by hyper from here on, starting with these bytes, already read from the
    /// connection (a request this path does not handle, and whatever followed it).
    Handoff(BytesMut),
}

/// Header lines parsed per message; a message with more goes to hyper's path (which allows
/// 100).
const MAX_HEADERS: usize = 64;
/// Body bytes already read go out in the same write as the head up to this much.
const COALESCE_LIMIT: usize = 16 * 1024;
/// Room made in an input buffer before each read.
const READ_SPACE: usize = 16 * 1024;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the target closes the connection (responses only).
    UntilClose,
}

/// Where a body stands: how much of it is still to come.
enum BodyState {
    Length(u64),
    Chunked(ChunkScanner),
    UntilClose,
    Done,
}

impl BodyState {
    fn new(framing: Framing) -> BodyState {
        match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkScanner::default()),
            Framing::UntilClose => BodyState::UntilClose,
        }
    }

    fn done(&self) -> bool {
        matches!(self, BodyState::Done)
    }

    /// How many of `bytes` (which follow what was consumed before) belong to the body; the
    /// state moves on past them. `Err` for a malformed chunked body.
    fn consume(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        match self {
            BodyState::Done => Ok(0),
            BodyState::UntilClose => Ok(bytes.len()),
            BodyState::Length(left) => {
                let taken = (*left).min(bytes.len() as u64);
                *left -= taken;
                if *left == 0 {
                    *self = BodyState::Done;
                }
                Ok(taken as usize)
            }
            BodyState::Chunked(scanner) => {
                let taken = scanner.feed(bytes)?;
                if scanner.done() {
                    *self = BodyState::Done;
                }
                Ok(taken)
            }
        }
    }
}

/// Follows a chunked body (RFC 9112 §7.1) byte by byte, without decoding it, to find where it
/// ends; chunk extensions and trailers are passed over.
#[derive(Default)]
struct ChunkScanner {
    state: ChunkState,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum ChunkState {
    /// Before the chunk size's first digit.
    #[default]
    SizeStart,
    Size {
        value: u64,
    },
    /// In a chunk extension, until the line ends.
    Extension {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

impl ChunkScanner {
    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Moves over `bytes`; returns how many belong to the body (all of them unless it ended
    /// within them).
    fn feed(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        while i < bytes.len() {
            if let ChunkState::Data(left) = self.state {
                let taken = left.min((bytes.len() - i) as u64);
                i += taken as usize;
                self.state = if taken == left {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data(left - taken)
                };
                continue;
            }
            let byte = bytes[i];
            i += 1;
            self.state = match (self.state, byte) {
                (ChunkState::Done, _) => {
                    return Ok(i - 1);
                }
                (ChunkState::SizeStart, _) => match hex_digit(byte) {
                    Some(d) => ChunkState::Size { value: d },
                    None => return Err(()),
                },
                (ChunkState::Size { value }, _) => match hex_digit(byte) {
                    Some(d) => ChunkState::Size {
                        value: value
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(d))
                            .ok_or(())?,
                    },
                    None => match byte {
                        b';' | b' ' | b'\t' => ChunkState::Extension { value },
                        b'\r' => ChunkState::SizeLf { value },
                        b'\n' => Self::size_ended(value),
                        _ => return Err(()),
                    },
                },
                (ChunkState::Extension { value }, b'\n') => Self::size_ended(value),
                (ChunkState::Extension { value }, _) => ChunkState::Extension { value },
                (ChunkState::SizeLf { value }, b'\n') => Self::size_ended(value),
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataCr, b'\n') | (ChunkState::DataLf, b'\n') => ChunkState::SizeStart,
                (ChunkState::TrailerStart, b'\r') => ChunkState::FinalLf,
                (ChunkState::TrailerStart, b'\n') | (ChunkState::FinalLf, b'\n') => {
                    ChunkState::Done
                }
                (ChunkState::TrailerStart, _) => ChunkState::TrailerLine,
                (ChunkState::TrailerLine, b'\n') => ChunkState::TrailerStart,
                (ChunkState::TrailerLine, _) => ChunkState::TrailerLine,
                _ => return Err(()),
            };
            if self.state == ChunkState::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn size_ended(value: u64) -> ChunkState {
        if value == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data(value)
        }
    }
}

fn hex_digit(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

/// A connection's buffers, reused by each of its requests.
struct Buffers {
    /// Bytes read from the client and not yet forwarded.
    client_in: BytesMut,
    /// Bytes read from the target and not yet forwarded.
    target_in: BytesMut,
    /// The rewritten head (and the first body bytes) of the message being forwarded.
    out: Vec<u8>,
}

/// A request this path forwards, routed and with its target picked.
struct Forward {
    head_len: usize,
    group: Arc<TargetGroup>,
    in_flight: InFlight,
    /// Counts the request on the client connection until dropped.
    _connection: ConnInFlight,
    /// `Set-Cookie` values for stickiness.
    cookies: [Option<HeaderValue>; 2],
    /// Application-based stickiness, when the group has it.
    app_cookie: Option<AppStickyAnswer>,
    body: Framing,
    head_request: bool,
    client_close: bool,
    idle_timeout: Duration,
}

enum Prepared {
    /// The head is not complete yet.
    Partial,
    Fallback,
    Forward(Box<Forward>),
}

/// What the request head says about its connection and framing.
#[derive(Default)]
struct RequestTraits<'a> {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    /// `Connection` values naming further hop-by-hop headers.
    connection: Vec<&'a [u8]>,
    host: Option<&'a str>,
    unusual: bool,
}

fn request_traits<'a>(headers: &[httparse::Header<'a>]) -> RequestTraits<'a> {
    let mut traits = RequestTraits::default();
    for header in headers {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (content_length(header.value), traits.content_length) {
                (Some(n), None) => traits.content_length = Some(n),
                _ => traits.unusual = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if traits.chunked || !trim(header.value).eq_ignore_ascii_case(b"chunked") {
                traits.unusual = true;
            }
            traits.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in header.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    traits.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    traits.unusual = true;
                } else if !token.is_empty() {
                    traits.connection.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            traits.unusual = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            // The first, as hyper's `HeaderMap::get` reads it.
            if traits.host.is_none() {
                traits.host = header_text(header.value);
            }
        }
    }
    if traits.chunked && traits.content_length.is_some() {
        traits.unusual = true;
    }
    traits
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6; no sign, no spaces, no list), so
/// that the length this path frames by is the one the target reads from the same bytes.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &bytes[start..end.max(start)]
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that never go on to the other side.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authorization",
        b"te",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn named_by(connection: &[&[u8]], name: &[u8]) -> bool {
    connection.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses, routes and rewrites the request head at the start of `input` into `out`.
fn prepare(input: &[u8], client: &ClientConn, out: &mut Vec<u8>) -> Prepared {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Prepared::Partial,
        Err(_) => return Prepared::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Prepared::Fallback;
    };
    let headers: &[httparse::Header<'_>] = request.headers;
    if !target.starts_with('/') {
        return Prepared::Fallback;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Prepared::Fallback;
    };
    if method == Method::CONNECT {
        return Prepared::Fallback;
    }
    let traits = request_traits(headers);
    if traits.unusual {
        return Prepared::Fallback;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let listener = &client.listener;
    let config = listener.compiled.load();
    let raw = RequestHeaders::Raw(headers);
    let facts = RequestFacts {
        method: &method,
        path,
        query,
        host: traits.host.map(strip_port),
        headers: raw,
        client_ip: client.remote.ip(),
        listener_port: listener.port,
    };
    let Some(CompiledAction::Forward(forward)) = config.route(&facts).map(|rule| &rule.action)
    else {
        return Prepared::Fallback;
    };
    let sticky_group = if forward.stickiness.is_some() {
        cookie(raw, GROUP_STICKINESS_COOKIE)
    } else {
        None
    };
    let Some(group) = forward.choose(sticky_group) else {
        return Prepared::Fallback;
    };
    let group = group.clone();
    let group_cookie = forward
        .stickiness
        .map(|life| sticky_cookie(GROUP_STICKINESS_COOKIE, &group.token, life));
    let idle_timeout = config.idle_timeout;
    drop(config);
    // HTTP/2 groups (and groups without a target, answered 503) are hyper's.
    let Some(Picked {
        in_flight,
        target_cookie,
        app_cookie,
        protocol: TargetProtocolVersion::Http1,
    }) = pick_target(&group, raw)
    else {
        return Prepared::Fallback;
    };
    if !matches!(in_flight.target().upstream(), Upstream::Http1(_)) {
        return Prepared::Fallback;
    }

    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Option<&[u8]> = None;
    let mut has_trace_id = false;
    for header in headers {
        let name = header.name.as_bytes();
        if is_hop_by_hop(name) || named_by(&traits.connection, name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for.get_or_insert(header.value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-port")
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-amzn-trace-id") {
            has_trace_id = true;
        }
        push_header(out, name, header.value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(earlier) = forwarded_for {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.remote_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    push_header(out, b"x-forwarded-port", listener.port_header.as_bytes());
    if !has_trace_id {
        push_header(out, b"x-amzn-trace-id", &trace_id_text());
    }
    if traits.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let body = if traits.chunked {
        Framing::Chunked
    } else {
        traits
            .content_length
            .map_or(Framing::Empty, Framing::Length)
    };
    Prepared::Forward(Box::new(Forward {
        head_len,
        group,
        in_flight,
        _connection: ConnInFlight::new(client.activity.clone()),
        cookies: [target_cookie, group_cookie],
        app_cookie,
        body,
        head_request: method == Method::HEAD,
        client_close: traits.close,
        idle_timeout,
    }))
}

/// Serves HTTP/1.1 requests on `stream` until the connection closes or a request needs
/// hyper's path.
pub async fn serve(stream: &mut TcpStream, client: &ClientConn) -> Served {
    let mut buffers = Buffers {
        client_in: BytesMut::with_capacity(READ_SPACE),
        target_in: BytesMut::with_capacity(READ_SPACE),
        out: Vec::with_capacity(4096),
    };
    let max_header_bytes = client.listener.limits().max_header_bytes.max(8192);
    loop {
        let forward = loop {
            if !buffers.client_in.is_empty() {
                match prepare(&buffers.client_in, client, &mut buffers.out) {
                    Prepared::Forward(forward) => break forward,
                    Prepared::Fallback => {
                        return Served::Handoff(std::mem::take(&mut buffers.client_in))
                    }
                    Prepared::Partial => {}
                }
                if buffers.client_in.len() >= max_header_bytes {
                    let _ = answer_error(
                        stream,
                        client,
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        &mut buffers.out,
                    )
                    .await;
                    return Served::Closed;
                }
            }
            // No timeout here: the connection's watchdog enforces the header-read and idle
            // timeouts.
            match read_client(stream, client, &mut buffers.client_in).await {
                Ok(0) | Err(_) => return Served::Closed,
                Ok(_) => {}
            }
        };
        match forward_request(stream, client, &mut buffers, *forward).await {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = stream.shutdown().await;
                return Served::Closed;
            }
            Next::Abort => return Served::Closed,
        }
    }
}

/// What becomes of the client connection after a request.
enum Next {
    KeepAlive,
    /// Closed in order (the response said so).
    Close,
    /// Cut at once.
    Abort,
}

async fn read_client(
    stream: &mut TcpStream,
    client: &ClientConn,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SPACE / 4 {
        buf.reserve(READ_SPACE);
    }
    let n = stream.read_buf(buf).await?;
    if n > 0 {
        client.activity.bytes_read(false);
    }
    Ok(n)
}

async fn write_client(
    stream: &mut TcpStream,
    client: &ClientConn,
    bytes: &[u8],
    idle_timeout: Duration,
) -> bool {
    let written = matches!(
        tokio::time::timeout(idle_timeout, stream.write_all(bytes)).await,
        Ok(Ok(()))
    );
    if written {
        client.activity.bytes_written();
    }
    written
}

/// Answers the load balancer's own error page and asks the client to close.
async fn answer_error(
    stream: &mut TcpStream,
    client: &ClientConn,
    status: StatusCode,
    out: &mut Vec<u8>,
) -> Next {
    let page = error_page(status);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\nserver: awselb/2.0\r\ncontent-type: text/html\r\n");
    push_header(out, b"content-length", page.len().to_string().as_bytes());
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(page.as_bytes());
    if write_client(stream, client, out, Duration::from_secs(5)).await {
        Next::Close
    } else {
        Next::Abort
    }
}

/// Why a request got no response from its target.
enum SendFailure {
    /// The target failed (502, counted against its health) or did not answer in time (504).
    Target(ForwardError),
    /// The whole request reached the target (or the target stopped reading it), and the
    /// target then sent nothing for the idle timeout: a hung target (504, counted against its
    /// health as a timeout).
    TargetSilent,
    /// The client's request body stalled for the idle timeout, or the target stopped reading
    /// an upload it had already answered (504, not counted against the target).
    Idle,
    /// The client broke off its request body: nothing to answer.
    ClientGone,
    /// The client's chunked body is malformed (400).
    BadRequestBody,
}

async fn forward_request(
    stream: &mut TcpStream,
    client: &ClientConn,
    buffers: &mut Buffers,
    forward: Forward,
) -> Next {
    let Forward {
        head_len,
        group,
        in_flight,
        _connection,
        cookies,
        app_cookie,
        body,
        head_request,
        client_close,
        idle_timeout,
    } = forward;
    let target = in_flight.target().clone();
    let Upstream::Http1(pool) = target.upstream() else {
        return answer_error(stream, client, StatusCode::BAD_GATEWAY, &mut buffers.out).await;
    };
    buffers.client_in.advance(head_len);

    let rewrite = ResponseRewrite {
        cookies,
        app_cookie,
        client_close,
    };
    let sent = send_request(stream, client, buffers, pool, body, idle_timeout, &rewrite).await;
    let (mut upstream, response) = match sent {
        Ok(sent) => sent,
        Err(failure) => {
            let status = match failure {
                SendFailure::Target(error) => {
                    tracing::debug!(target = %target.addr, error = %error.message, "target request failed");
                    if error.target_at_fault {
                        group.record(&target, Outcome::connection_failed(), true);
                    }
                    if error.timed_out {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    }
                }
                SendFailure::TargetSilent => {
                    tracing::debug!(target = %target.addr, "target did not answer within the idle timeout");
                    group.record(&target, Outcome::timed_out(), true);
                    StatusCode::GATEWAY_TIMEOUT
                }
                SendFailure::Idle => {
                    tracing::debug!(target = %target.addr, "the request body stalled for the idle timeout");
                    StatusCode::GATEWAY_TIMEOUT
                }
                SendFailure::BadRequestBody => StatusCode::BAD_REQUEST,
                SendFailure::ClientGone => return Next::Abort,
            };
            return answer_error(stream, client, status, &mut buffers.out).await;
        }
    };
    group.record_answered(&target);

    // The response head, rewritten, with the body bytes that came with it.
    let client_close = client_close || response.framing == Framing::UntilClose;
    buffers.target_in.advance(response.head_len);
    let mut state = BodyState::new(if head_request {
        Framing::Empty
    } else {
        response.framing
    });
    let Ok(taken) = state.consume(&buffers.target_in) else {
        return Next::Abort;
    };
    if taken <= COALESCE_LIMIT {
        buffers.out.extend_from_slice(&buffers.target_in[..taken]);
        buffers.target_in.advance(taken);
        if !write_client(stream, client, &buffers.out, idle_timeout).await {
            return Next::Abort;
        }
    } else {
        if !write_client(stream, client, &buffers.out, idle_timeout).await
            || !write_client(stream, client, &buffers.target_in[..taken], idle_timeout).await
        {
            return Next::Abort;
        }
        buffers.target_in.advance(taken);
    }
    // The rest of the body, as it comes.
    while !state.done() {
        match tokio::time::timeout(
            idle_timeout,
            read_into(&mut upstream, &mut buffers.target_in),
        )
        .await
        {
            Ok(Ok(0)) if matches!(state, BodyState::UntilClose) => break,
            // Closed early, failed, or silent for the idle timeout: the client's response
            // cannot be completed.
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Next::Abort,
            Ok(Ok(_)) => {}
        }
        let Ok(taken) = state.consume(&buffers.target_in) else {
            return Next::Abort;
        };
        if !write_client(stream, client, &buffers.target_in[..taken], idle_timeout).await {
            return Next::Abort;
        }
        buffers.target_in.advance(taken);
    }
    if response.reusable && buffers.target_in.is_empty() {
        pool.put_raw(upstream);
    }
    buffers.target_in.clear();
    drop(in_flight);
    if client_close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

async fn read_into(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SPACE / 4 {
        buf.reserve(READ_SPACE);
    }
    stream.read_buf(buf).await
}

/// A target's response head, parsed.
struct ResponseHead {
    head_len: usize,
    framing: Framing,
    /// Whether the target connection can carry another request after this response.
    reusable: bool,
}

/// Sends the request (its head is in `buffers.out`) and its body, and reads the response
/// head into `buffers.target_in`. Returns the target connection with the parsed head, which
/// is then rewritten for the client in `buffers.out`.
async fn send_request(
    stream: &mut TcpStream,
    client: &ClientConn,
    buffers: &mut Buffers,
    pool: &Http1Pool,
    body: Framing,
    idle_timeout: Duration,
    rewrite: &ResponseRewrite,
) -> Result<(TcpStream, ResponseHead), SendFailure> {
    // The body bytes already read go with the head when they are few.
    let mut state = BodyState::new(body);
    let taken = state
        .consume(&buffers.client_in)
        .map_err(|_| SendFailure::BadRequestBody)?;
    let coalesced = taken <= COALESCE_LIMIT;
    if coalesced {
        buffers.out.extend_from_slice(&buffers.client_in[..taken]);
        buffers.client_in.advance(taken);
    }
    // Only a request that fits in `out` whole can be sent again.
    let replayable = coalesced && state.done();
    loop {
        let (mut upstream, reused) = match pool.take_raw() {
            Some(upstream) => (upstream, true),
            None => (
                pool.connect_raw().await.map_err(SendFailure::Target)?,
                false,
            ),
        };
        buffers.target_in.clear();
        let retry = reused && replayable;
        match tokio::time::timeout(idle_timeout, upstream.write_all(&buffers.out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) if retry => continue,
            Ok(Err(error)) => return Err(target_failed(error.to_string())),
            Err(_) => return Err(stopped_reading(&upstream)),
        }
        if !coalesced {
            write_target(&mut upstream, &buffers.client_in[..taken], idle_timeout).await?;
            buffers.client_in.advance(taken);
        }
        while !state.done() {
            match tokio::time::timeout(
                idle_timeout,
                read_client(stream, client, &mut buffers.client_in),
            )
            .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(SendFailure::ClientGone),
                Ok(Ok(_)) => {}
                Err(_) => return Err(SendFailure::Idle),
            }
            let taken = state
                .consume(&buffers.client_in)
                .map_err(|_| SendFailure::BadRequestBody)?;
            write_target(&mut upstream, &buffers.client_in[..taken], idle_timeout).await?;
            buffers.client_in.advance(taken);
        }
        let mut client_side = ClientSide {
            stream: &mut *stream,
            client,
            buf: &mut buffers.client_in,
        };
        let head = read_response_head(
            &mut upstream,
            &mut buffers.target_in,
            idle_timeout,
            rewrite,
            &mut buffers.out,
            &mut client_side,
        )
        .await;
        match head {
            Ok(head) => return Ok((upstream, head)),
            // A pooled connection the target had closed: nothing was answered, so the request
            // goes again on a new connection.
            Err(HeadFailure::ClosedBeforeAnswer) if retry => continue,
            Err(HeadFailure::ClosedBeforeAnswer) => {
                return Err(target_failed(
                    "the target closed the connection without answering".into(),
                ))
            }
            Err(HeadFailure::Failed(message)) => return Err(target_failed(message)),
            // The whole request was sent (the body loop above ended): the silence is the
            // target's.
            Err(HeadFailure::Idle) => return Err(SendFailure::TargetSilent),
            Err(HeadFailure::ClientGone) => return Err(SendFailure::ClientGone),
        }
    }
}

/// The client's side while its request waits for the target's answer.
struct ClientSide<'a> {
    stream: &'a mut TcpStream,
    client: &'a ClientConn,
    /// Where pipelined bytes read meanwhile go.
    buf: &'a mut BytesMut,
}

impl ClientSide<'_> {
    /// Resolves when the client closes its connection (or it fails), as hyper's server sees
    /// it: the request is then abandoned, which frees its target connection and ends its
    /// in-flight mark (a draining target need not wait for an answer nobody reads).
    /// Pipelined bytes are kept, up to the header limit; past it the client is not watched.
    async fn closed(&mut self) {
        let limit = self.client.listener.limits().max_header_bytes.max(8192);
        while self.buf.len() < limit {
            match read_client(self.stream, self.client, self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        std::future::pending::<()>().await
    }
}

fn target_failed(message: String) -> SendFailure {
    SendFailure::Target(ForwardError {
        target_at_fault: true,
        timed_out: false,
        message,
    })
}

async fn write_target(
    upstream: &mut TcpStream,
    bytes: &[u8],
    idle_timeout: Duration,
) -> Result<(), SendFailure> {
    if bytes.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(idle_timeout, upstream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(target_failed(error.to_string())),
        Err(_) => Err(stopped_reading(upstream)),
    }
}

/// The target took none of the request bytes in hand for the idle timeout. A hung target,
/// unless it has answered already (an early answer to an upload it will not read, such as a
/// 413): then it is not counted against its health. Nothing read here is forwarded; the
/// connection is dropped with the request.
fn stopped_reading(upstream: &TcpStream) -> SendFailure {
    let mut probe = [0u8; 1];
    match upstream.try_read(&mut probe) {
        Ok(n) if n > 0 => SendFailure::Idle,
        _ => SendFailure::TargetSilent,
    }
}

enum HeadFailure {
    /// Closed or reset before a single byte of an answer.
    ClosedBeforeAnswer,
    /// Closed mid-head, or not HTTP.
    Failed(String),
    Idle,
    /// The client closed its connection meanwhile.
    ClientGone,
}

/// Reads until a final (non-1xx) response head is complete in `buf`; interim responses are
/// dropped.
async fn read_response_head(
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    idle_timeout: Duration,
    rewrite: &ResponseRewrite,
    out: &mut Vec<u8>,
    client_side: &mut ClientSide<'_>,
) -> Result<ResponseHead, HeadFailure> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            answered = true;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let code = response.code.unwrap_or(0);
                    if (100..200).contains(&code) {
                        if code == 101 {
                            return Err(HeadFailure::Failed(
                                "the target switched protocols unasked".into(),
                            ));
                        }
                        buf.advance(head_len);
                        continue;
                    }
                    let head = response_head(&response, head_len);
                    rewrite.write(&response, head.framing, out);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => {
                    return Err(HeadFailure::Failed(format!(
                        "the target's answer is not HTTP/1.1: {error}"
                    )))
                }
            }
        }
        let read = tokio::time::timeout(idle_timeout, async {
            tokio::select! {
                biased;
                read = read_into(upstream, buf) => Some(read),
                () = client_side.closed() => None,
            }
        })
        .await;
        let read = match read {
            Ok(Some(read)) => Ok(read),
            Ok(None) => return Err(HeadFailure::ClientGone),
            Err(elapsed) => Err(elapsed),
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) if !answered => return Err(HeadFailure::ClosedBeforeAnswer),
            Ok(Ok(0)) => {
                return Err(HeadFailure::Failed(
                    "the target closed the connection mid-answer".into(),
                ))
            }
            Ok(Err(error)) => return Err(HeadFailure::Failed(error.to_string())),
            Ok(Ok(_)) => {}
            Err(_) => return Err(HeadFailure::Idle),
        }
    }
}

fn response_head(response: &httparse::Response<'_, '_>, head_len: usize) -> ResponseHead {
    let code = response.code.unwrap_or(0);
    let mut content_length = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut close = response.version != Some(1);
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = self::content_length(header.value);
            if content_length.is_none() {
                close = true;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked is the last coding when it is there at all (RFC 9112 §6.1).
            let last = header.value.rsplit(|&b| b == b',').next().map(trim);
            chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
            other_coding = !chunked;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= header
                .value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"));
        }
    }
    let framing = if code == 204 || code == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else {
        match content_length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    ResponseHead {
        head_len,
        framing,
        reusable: !close && framing != Framing::UntilClose,
    }
}

/// How a response head is rewritten for the client.
struct ResponseRewrite {
    /// `Set-Cookie` values for stickiness.
    cookies: [Option<HeaderValue>; 2],
    /// Application-based stickiness: its `Set-Cookie` value, added when the target's response
    /// sets the application's cookie.
    app_cookie: Option<AppStickyAnswer>,
    /// The client asked to close after this response.
    client_close: bool,
}

impl ResponseRewrite {
    /// Writes the target's response head for the client into `out`: hop-by-hop headers
    /// removed (a chunked coding passed through stays), stickiness cookies added, and
    /// `Connection: close` when the client connection ends with it.
    fn write(&self, response: &httparse::Response<'_, '_>, framing: Framing, out: &mut Vec<u8>) {
        let code = response.code.unwrap_or(502);
        let reason = match response.reason {
            Some(reason) if !reason.is_empty() => reason,
            _ => StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
        };
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&status_digits(code));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut connection: Vec<&[u8]> = Vec::new();
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("connection") {
                connection.extend(header.value.split(|&b| b == b',').map(trim));
            }
        }
        for header in response.headers.iter() {
            let name = header.name.as_bytes();
            let passed_coding =
                framing == Framing::Chunked && name.eq_ignore_ascii_case(b"transfer-encoding");
            if (is_hop_by_hop(name) && !passed_coding) || named_by(&connection, name) {
                continue;
            }
            // A length beside chunked coding (or an invalid one) does not frame the body
            // (RFC 9112 §6.3): not passed on.
            if name.eq_ignore_ascii_case(b"content-length")
                && matches!(framing, Framing::Chunked | Framing::UntilClose)
            {
                continue;
            }
            push_header(out, name, header.value);
        }
        for cookie in self.cookies.iter().flatten() {
            push_header(out, b"set-cookie", cookie.as_bytes());
        }
        if let Some(app) = &self.app_cookie {
            let set_cookies = response
                .headers
                .iter()
                .filter(|header| header.name.eq_ignore_ascii_case("set-cookie"))
                .map(|header| header.value);
            if app.applies(set_cookies) {
                push_header(out, b"set-cookie", app.cookie.as_bytes());
            }
        }
        if self.client_close || framing == Framing::UntilClose {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A status code's three digits.
fn status_digits(code: u16) -> [u8; 3] {
    let code = code.min(999);
    [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> (Vec<usize>, bool) {
        let mut scanner = ChunkScanner::default();
        let taken = pieces.iter().map(|p| scanner.feed(p).unwrap()).collect();
        (taken, scanner.done())
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET /next";
        let (taken, done) = scan(&[body]);
        assert_eq!(taken, vec![body.len() - b"GET /next".len()]);
        assert!(done);
        // Split anywhere, with an extension and a trailer.
        let body = b"a;name=value\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            let (taken, done) = scan(&[&body[..split], &body[split..]]);
            assert_eq!(taken.iter().sum::<usize>(), body.len(), "split at {split}");
            assert!(done, "split at {split}");
        }
        let (_, done) = scan(&[b"5\r\nhel"]);
        assert!(!done);
    }

    #[test]
    fn malformed_chunk_sizes_are_refused() {
        let mut scanner = ChunkScanner::default();
        assert!(scanner.feed(b"zz\r\n").is_err());
        let mut scanner = ChunkScanner::default();
        assert!(scanner.feed(b"5\r\nhelloXX").is_err());
        let mut scanner = ChunkScanner::default();
        assert!(scanner.feed(b"fffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn bodies_by_length_take_only_their_bytes() {
        let mut state = BodyState::new(Framing::Length(3));
        assert_eq!(state.consume(b"ab").unwrap(), 2);
        assert_eq!(state.consume(b"cdef").unwrap(), 1);
        assert!(state.done());
        assert!(BodyState::new(Framing::Empty).done());
    }

    #[test]
    fn request_traits_send_unusual_requests_to_hyper() {
        let traits = |lines: &[(&'static str, &'static [u8])]| {
            let headers: Vec<httparse::Header<'static>> = lines
                .iter()
                .map(|(name, value)| httparse::Header { name, value })
                .collect();
            let t = request_traits(&headers);
            (t.unusual, t.close, t.content_length, t.chunked)
        };
        assert_eq!(
            traits(&[("Content-Length", b"12")]),
            (false, false, Some(12), false)
        );
        assert!(traits(&[("Expect", b"100-continue")]).0);
        assert!(traits(&[("Upgrade", b"websocket"), ("Connection", b"upgrade")]).0);
        assert!(traits(&[("Transfer-Encoding", b"gzip, chunked")]).0);
        assert!(traits(&[("Content-Length", b"1"), ("Content-Length", b"1")]).0);
        assert!(traits(&[("Content-Length", b"+5")]).0);
        assert!(traits(&[("Content-Length", b"5, 5")]).0);
        assert!(traits(&[("Content-Length", b"99999999999999999999999")]).0);
        assert!(traits(&[("Content-Length", b"1"), ("Transfer-Encoding", b"chunked")]).0);
        assert_eq!(
            traits(&[("Connection", b"keep-alive, close")]),
            (false, true, None, false)
        );
    }

    #[test]
    fn response_heads_keep_their_framing_and_lose_hop_by_hop_headers() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = response.parse(head) else {
            panic!("not parsed");
        };
        let parsed = response_head(&response, n);
        assert_eq!(parsed.framing, Framing::Length(2));
        assert!(parsed.reusable);
        let mut out = Vec::new();
        let rewrite = ResponseRewrite {
            cookies: [Some(HeaderValue::from_static("AWSALB=x")), None],
            app_cookie: None,
            client_close: false,
        };
        rewrite.write(&response, parsed.framing, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: yes\r\nset-cookie: AWSALB=x\r\n\r\n"
        );

        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = response.parse(head) else {
            panic!("not parsed");
        };
        let parsed = response_head(&response, n);
        assert_eq!(parsed.framing, Framing::Chunked);
        let mut out = Vec::new();
        let rewrite = ResponseRewrite {
            cookies: [None, None],
            app_cookie: None,
            client_close: true,
        };
        rewrite.write(&response, parsed.framing, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nconnection: close\r\n\r\n"
        );

        let head = b"HTTP/1.0 200 OK\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = response.parse(head) else {
            panic!("not parsed");
        };
        let parsed = response_head(&response, n);
        assert_eq!(parsed.framing, Framing::UntilClose);
        assert!(!parsed.reusable);
    }
}
