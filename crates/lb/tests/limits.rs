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
