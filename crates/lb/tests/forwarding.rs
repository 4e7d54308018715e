//! The HTTP/1.1 forwarding path over raw sockets: keep-alive, pipelining, chunked bodies,
//! target connection reuse, and the hand-over to hyper's path for what it does not handle.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gantry_lb::{Limits, LoadBalancer};
use gantry_model::elbv2::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off a raw connection.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (framed by `Content-Length`, chunked, or until close) from `stream`,
/// keeping what follows it in `pending`.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>, head: bool) -> RawResponse {
    let mut buf = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = response.parse(pending) {
            let status = response.code.unwrap();
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            pending.drain(..n);
            let find = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let body = if head {
                Vec::new()
            } else if let Some(length) = find("content-length") {
                let length: usize = length.parse().unwrap();
                while pending.len() < length {
                    let n = read_some(stream, &mut buf).await;
                    assert!(n > 0, "closed mid-body");
                    pending.extend_from_slice(&buf[..n]);
                }
                pending.drain(..length).collect()
            } else if find("transfer-encoding").is_some() {
                let mut body = Vec::new();
                loop {
                    while !pending.windows(2).any(|w| w == b"\r\n") {
                        let n = read_some(stream, &mut buf).await;
                        assert!(n > 0, "closed mid-chunk");
                        pending.extend_from_slice(&buf[..n]);
                    }
                    let line_end = pending.windows(2).position(|w| w == b"\r\n").unwrap();
                    let size = usize::from_str_radix(
                        std::str::from_utf8(&pending[..line_end]).unwrap().trim(),
                        16,
                    )
                    .unwrap();
                    while pending.len() < line_end + 2 + size + 2 {
                        let n = read_some(stream, &mut buf).await;
                        assert!(n > 0, "closed mid-chunk");
                        pending.extend_from_slice(&buf[..n]);
                    }
                    body.extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
                    pending.drain(..line_end + 2 + size + 2);
                    if size == 0 {
                        break body;
                    }
                }
            } else {
                loop {
                    let n = read_some(stream, &mut buf).await;
                    if n == 0 {
                        break std::mem::take(pending);
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
            };
            return RawResponse {
                status,
                headers,
                body,
            };
        }
        let n = read_some(stream, &mut buf).await;
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    }
}

async fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    tokio::time::timeout(Duration::from_secs(5), stream.read(buf))
        .await
        .expect("an answer within 5 s")
        .unwrap_or(0)
}

/// Whether the peer closes `stream` within a second, sending nothing more.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn serving(backend_target: TargetConfig) -> (Arc<LoadBalancer>, SocketAddr) {
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/1", vec![backend_target]);
    // No health checks: the target's connections are the forwarded requests' alone.
    config.health_check.enabled = false;
    lb.put_target_group(config);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    (lb, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_chunked_requests_share_one_client_and_one_target_connection() {
    let backend = Backend::start("b1").await;
    let (_lb, addr) = serving(backend.target()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Two requests in one write: a chunked upload with an extension and a trailer, then a
    // request whose Connection header names a private header.
    client
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n\
              GET /headers?q=1 HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x-private\r\n\
              X-Private: secret\r\nX-Forwarded-For: 10.0.0.1\r\nTE: trailers\r\n\r\n",
        )
        .await
        .unwrap();
    let mut pending = Vec::new();
    let echoed = read_response(&mut client, &mut pending, false).await;
    assert_eq!(echoed.status, 200);
    assert_eq!(String::from_utf8_lossy(&echoed.body), "hello world");
    assert_eq!(echoed.header("x-backend"), Some("b1"));
    let headers = read_response(&mut client, &mut pending, false).await;
    let text = String::from_utf8_lossy(&headers.body).to_lowercase();
    assert!(
        text.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1\n"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(
        text.contains(&format!("x-forwarded-port: {}\n", addr.port())),
        "{text}"
    );
    assert!(text.contains("x-amzn-trace-id: root=1-"), "{text}");
    assert!(!text.contains("x-private"), "{text}");
    assert!(!text.contains("\nte:"), "{text}");
    assert!(!text.contains("\nconnection:"), "{text}");

    // A HEAD answer has a length but no body; the connection goes on after it.
    client
        .write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut client, &mut pending, true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("2"));
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let last = read_response(&mut client, &mut pending, false).await;
    assert_eq!(String::from_utf8_lossy(&last.body), "b1");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(pending.is_empty());
    assert!(closes(&mut client).await, "closed after Connection: close");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        1,
        "one pooled target connection for all four"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_forwarding_path_does_not_take_continue_on_hyper() {
    let backend = Backend::start("b1").await;
    let (_lb, addr) = serving(backend.target()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut client, &mut pending, false).await;
    assert_eq!(String::from_utf8_lossy(&first.body), "b1");
    // An upload that waits for 100 Continue: hyper's path answers it, on the same
    // connection, and serves what follows.
    client
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = read_some(&mut client, &mut buf).await;
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    client.write_all(b"hi").await.unwrap();
    let echoed = read_response(&mut client, &mut pending, false).await;
    assert_eq!(String::from_utf8_lossy(&echoed.body), "hi");
    client
        .write_all(b"GET /headers HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let headers = read_response(&mut client, &mut pending, false).await;
    assert!(String::from_utf8_lossy(&headers.body).contains("x-forwarded-for: 127.0.0.1"));

    // HTTP/1.0 goes to hyper from the start.
    let mut old = TcpStream::connect(addr).await.unwrap();
    old.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let answered = read_response(&mut old, &mut pending, false).await;
    assert_eq!(answered.status, 200);
    assert_eq!(String::from_utf8_lossy(&answered.body), "b1");
}

/// A target speaking HTTP/1.1 by hand: `/until-close` answers without a length and closes;
/// anything else answers `ok` with a length and keeps the connection, which it closes after
/// 200 ms without a request. Counts connections accepted.
async fn hand_written_target() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        let read =
                            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf))
                                .await;
                        match read {
                            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    let head = String::from_utf8_lossy(&received[..end]).into_owned();
                    received.drain(..end + 4);
                    if head.starts_with("GET /until-close ") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nx-framing: close\r\n\r\nall of it")
                            .await;
                        return;
                    }
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pooled_connections_are_replaced_and_close_delimited_answers_pass_through() {
    let (target_addr, accepted, _task) = hand_written_target().await;
    let (_lb, addr) = serving(TargetConfig {
        id: "127.0.0.1".into(),
        port: target_addr.port(),
        address: target_addr.ip(),
    })
    .await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    for round in 0..3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut client, &mut pending, false).await;
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, b"ok".as_slice())
        );
        // The target closes its idle connection meanwhile; the next request takes a new one.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), round + 1);
    }
    // An answer delimited by the target's close reaches the client whole, and the client
    // connection closes after it.
    client
        .write_all(b"GET /until-close HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut client, &mut pending, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(String::from_utf8_lossy(&answer.body), "all of it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_alone_serves_when_the_forwarding_path_is_off() {
    let backend = Backend::start("b1").await;
    let limits = Limits {
        http1_forwarding: false,
        ..Limits::default()
    };
    let lb = LoadBalancer::with_limits(LOCALHOST, limits);
    lb.put_target_group(group("tg/1", vec![backend.target()]));
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    wait_state(&lb, "tg/1", backend.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let answer = get(&http_client(), addr, "/headers").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("x-forwarded-for: 127.0.0.1"),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_ends_its_request_and_the_drain_waits_no_longer() {
    let backend = Backend::start("b1").await;
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/1", vec![backend.target()]);
    config.health_check.enabled = false;
    config.deregistration_delay = Duration::from_secs(30);
    lb.put_target_group(config.clone());
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the request at the target",
        || async { (backend.active.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    config.targets.clear();
    lb.put_target_group(config);
    assert_eq!(
        state_of(&lb, "tg/1", backend.addr.port()).map(|r| r.state),
        Some(TargetState::Draining)
    );
    let left = std::time::Instant::now();
    drop(client);
    eventually(
        Duration::from_secs(10),
        "the target to be drained",
        || async {
            state_of(&lb, "tg/1", backend.addr.port())
                .is_none()
                .then_some(())
        },
    )
    .await;
    // Well before the 5 s answer: the abandoned request did not hold the drain.
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
}
