//! Errors to clients and protections against misbehaving clients, over real sockets.

mod support;

use std::time::{Duration, Instant};

use gantry_lb::{Limits, LoadBalancer};
use gantry_model::elbv2::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn broken_target(addr: std::net::SocketAddr) -> TargetConfig {
    TargetConfig {
        id: "127.0.0.1".into(),
        port: addr.port(),
        address: addr.ip(),
    }
}

/// Reads until the peer closes; `true` when it did within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Reads one response head and returns its status line.
async fn status_line(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("readable");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    text.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_targets_get_502_hanging_ones_504_and_empty_groups_503() {
    let good = Backend::start("good").await;
    let (reset, _r) = broken_backend("reset").await;
    let (garbage, _g) = broken_backend("garbage").await;
    let lb = LoadBalancer::new(LOCALHOST);
    // Health checks of the broken targets go to the good backend so they stay in rotation.
    for (arn, target) in [
        ("tg/good", good.target()),
        ("tg/reset", broken_target(reset)),
        ("tg/garbage", broken_target(garbage)),
    ] {
        let mut config = group(arn, vec![target]);
        config.health_check.port = Some(good.addr.port());
        lb.put_target_group(config);
    }
    lb.put_target_group(group("tg/empty", vec![]));
    let path = |p: &str| Condition::PathPattern(vec![p.into()]);
    let mut config = listener(
        "l/1",
        free_port(),
        vec![
            rule(1, vec![path("/reset")], forward("tg/reset")),
            rule(2, vec![path("/garbage")], forward("tg/garbage")),
            rule(3, vec![path("/empty")], forward("tg/empty")),
            rule(4, vec![path("/missing")], forward("tg/never-put")),
            default_rule(forward("tg/good")),
        ],
    );
    config.idle_timeout = Duration::from_millis(1000);
    lb.put_listener(config).unwrap();
    for (arn, port) in [
        ("tg/good", good.addr.port()),
        ("tg/reset", reset.port()),
        ("tg/garbage", garbage.port()),
    ] {
        wait_state(&lb, arn, port, TargetState::Healthy).await;
    }
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();

    assert_eq!(get(&client, addr, "/reset").await.status, 502);
    assert_eq!(get(&client, addr, "/garbage").await.status, 502);
    assert_eq!(get(&client, addr, "/empty").await.status, 503);
    assert_eq!(get(&client, addr, "/missing").await.status, 503);

    // A hanging target answers 504 after the idle timeout, and stalls nobody else.
    let hanging = tokio::spawn({
        let client = client.clone();
        async move {
            let started = Instant::now();
            (get(&client, addr, "/hang").await.status, started.elapsed())
        }
    });
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(&client, addr, "/").await.body, "good");
    }
    assert!(started.elapsed() < Duration::from_millis(900));
    let (status, took) = hanging.await.unwrap();
    assert_eq!(status, 504);
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_cut_off_but_idle_keep_alive_ones_wait_for_the_idle_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let lb = LoadBalancer::with_limits(LOCALHOST, limits);
    let mut config = listener(
        "l/1",
        free_port(),
        vec![default_rule(RuleAction::FixedResponse {
            status_code: 200,
            content_type: None,
            body: Some("ok".into()),
        })],
    );
    config.idle_timeout = Duration::from_millis(1200);
    lb.put_listener(config).unwrap();
    let addr = lb.listener_addr("l/1").unwrap();

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(
        took < Duration::from_millis(1100),
        "cut by the header timeout: {took:?}"
    );

    // A keep-alive client idle for longer than the header timeout keeps its connection...
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_line(&mut idle).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(600)).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_line(&mut idle).await, "HTTP/1.1 200 OK");
    // ...until the listener's idle timeout.
    let idle_from = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(4)).await);
    let took = idle_from.elapsed();
    assert!(took >= Duration::from_millis(1000), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let limits = Limits {
        max_header_bytes: 8192,
        ..Limits::default()
    };
    let lb = LoadBalancer::with_limits(LOCALHOST, limits);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(RuleAction::FixedResponse {
            status_code: 200,
            content_type: None,
            body: Some("ok".into()),
        })],
    ))
    .unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let big = "x".repeat(20_000);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let line = status_line(&mut stream).await;
    assert!(
        line.is_empty() || line.starts_with("HTTP/1.1 431"),
        "refused or closed, got {line:?}"
    );
    // A normal request still works on a new connection.
    assert_eq!(get(&http_client(), addr, "/").await.body, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed() {
    let limits = Limits {
        max_connections_per_listener: 2,
        ..Limits::default()
    };
    let lb = LoadBalancer::with_limits(LOCALHOST, limits);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(RuleAction::FixedResponse {
            status_code: 200,
            content_type: None,
            body: Some("ok".into()),
        })],
    ))
    .unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(request).await.unwrap();
    assert_eq!(status_line(&mut first).await, "HTTP/1.1 200 OK");
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(request).await.unwrap();
    assert_eq!(status_line(&mut second).await, "HTTP/1.1 200 OK");

    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(request).await;
    assert!(closed_within(&mut third, Duration::from_secs(3)).await);

    drop(first);
    eventually(Duration::from_secs(5), "a free connection slot", || async {
        let mut again = TcpStream::connect(addr).await.ok()?;
        again.write_all(request).await.ok()?;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(1), again.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf[..n].starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_in_use_are_refused_and_removed_listeners_close_their_socket() {
    let lb = LoadBalancer::new(LOCALHOST);
    let occupied = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let busy = occupied.local_addr().unwrap().port();
    let error = lb.check_port(busy, None).unwrap_err();
    assert_eq!(error.port, busy);
    assert!(error.message.contains("in use"), "{}", error.message);
    let fixed = || {
        vec![default_rule(RuleAction::FixedResponse {
            status_code: 200,
            content_type: None,
            body: Some("ok".into()),
        })]
    };
    let error = lb
        .put_listener(listener("l/busy", busy, fixed()))
        .unwrap_err();
    assert!(error.message.contains("in use"), "{}", error.message);
    assert_eq!(lb.listener_addr("l/busy"), None);

    let port = free_port();
    lb.check_port(port, None).unwrap();
    lb.put_listener(listener("l/1", port, fixed())).unwrap();
    lb.check_port(port, Some("l/1")).unwrap();
    assert!(lb.check_port(port, Some("l/2")).is_err());
    assert!(lb.put_listener(listener("l/2", port, fixed())).is_err());

    // Moving to another port rebinds; the old port is free again.
    let moved = free_port();
    lb.put_listener(listener("l/1", moved, fixed())).unwrap();
    assert_eq!(lb.listener_addr("l/1").unwrap().port(), moved);
    lb.check_port(port, None).unwrap();
    assert_eq!(
        get(&http_client(), lb.listener_addr("l/1").unwrap(), "/")
            .await
            .body,
        "ok"
    );

    lb.remove_listener("l/1");
    assert_eq!(lb.listener_addr("l/1"), None);
    eventually(Duration::from_secs(5), "the socket to close", || async {
        TcpStream::connect((LOCALHOST, moved))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    lb.check_port(moved, None).unwrap();
}

/// A target that answers every request with a head promising 100 bytes, sends 10, then
/// stalls with the connection open.
async fn stalling_target() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                // Held open, silent, until the load balancer gives up on it.
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_stalls_is_cut_after_the_idle_timeout_and_lets_its_target_drain() {
    let (stall_addr, _stall) = stalling_target().await;
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/1", vec![broken_target(stall_addr)]);
    config.health_check.enabled = false;
    config.deregistration_delay = Duration::from_secs(30);
    lb.put_target_group(config.clone());
    let mut listener_config = listener("l/1", free_port(), vec![default_rule(forward("tg/1"))]);
    listener_config.idle_timeout = Duration::from_millis(500);
    lb.put_listener(listener_config).unwrap();
    let addr = lb.listener_addr("l/1").unwrap();

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.ends_with(b"0123456789") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the head and the first bytes in time")
            .unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    let stalled_at = Instant::now();
    // Deregistered while its response is stuck: draining, with one request in flight.
    config.targets.clear();
    lb.put_target_group(config);
    assert_eq!(
        state_of(&lb, "tg/1", stall_addr.port()).map(|r| r.state),
        Some(TargetState::Draining)
    );
    assert!(
        closed_within(&mut client, Duration::from_secs(5)).await,
        "the client connection stayed open"
    );
    let took = stalled_at.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // The in-flight mark ended with the response: the drain ends long before its 30 s.
    eventually(
        Duration::from_secs(5),
        "the target to be drained",
        || async {
            state_of(&lb, "tg/1", stall_addr.port())
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_cut_only_when_they_stall_for_the_idle_timeout() {
    let backend = Backend::start("echo").await;
    let lb = LoadBalancer::new(LOCALHOST);
    lb.put_target_group(group("tg/1", vec![backend.target()]));
    let mut listener_config = listener("l/1", free_port(), vec![default_rule(forward("tg/1"))]);
    listener_config.idle_timeout = Duration::from_millis(1200);
    lb.put_listener(listener_config).unwrap();
    wait_state(&lb, "tg/1", backend.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();

    // Sent in pieces over more than two idle timeouts, never pausing for a sixth of one.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 60\r\n\r\n")
        .await
        .unwrap();
    for piece in 0..6u8 {
        // The pacing is what is tested: time passes while the upload keeps sending.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(&[b'a' + piece; 1]).await.unwrap();
        }
        client.write_all(&[b'a' + piece; 7]).await.unwrap();
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let expected: Vec<u8> = (0..6u8).flat_map(|p| [b'a' + p; 10]).collect();
    while !received.ends_with(&expected) {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the echo in time")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 200"), "{received:?}");

    // An upload that stops halfway gets no answer from the target and is cut.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 60\r\n\r\nhalf")
        .await
        .unwrap();
    let started = Instant::now();
    let status = status_line(&mut client).await;
    assert!(status.starts_with("HTTP/1.1 5"), "{status}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(closed_within(&mut client, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_and_frees_the_target_connection() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // A target that streams a body without end, until the load balancer lets go of it.
    let target = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let target_released = Arc::new(AtomicBool::new(false));
    let _target = tokio::spawn({
        let released = target_released.clone();
        async move {
            let Ok((mut stream, _)) = target.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return;
            }
            let chunk = [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"].concat();
            while stream.write_all(&chunk).await.is_ok() {}
            released.store(true, Ordering::SeqCst);
        }
    });
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/1", vec![broken_target(target_addr)]);
    config.health_check.enabled = false;
    lb.put_target_group(config);
    let mut listener_config = listener("l/1", free_port(), vec![default_rule(forward("tg/1"))]);
    listener_config.idle_timeout = Duration::from_millis(300);
    lb.put_listener(listener_config).unwrap();
    let addr = lb.listener_addr("l/1").unwrap();

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: every buffer on the way fills, then nothing moves.
    eventually(
        Duration::from_secs(10),
        "the target's connection to be closed",
        || async { target_released.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    assert!(closed_within(&mut client, Duration::from_secs(10)).await);
}
